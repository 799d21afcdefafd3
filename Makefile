# Quick start: `make demo`, `make test`. Both bootstrap .venv with pinned versions.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEPS := $(VENV)/.deps-stamp
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: build demo test lint rust-test py-test stubtest bench clean wheel test-pythons wheel-freethreaded check-freethreaded bench-pythons

$(DEPS): requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

build: $(DEPS)
	$(BIN)/maturin develop --release --quiet
	$(BIN)/python -c "import ndshm._native"
	cargo build --release --quiet -p ndshm --example peer

demo: build
	$(BIN)/python -m ndshm.demo

lint: build
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	$(BIN)/ruff check python tests benchmarks
	$(BIN)/ruff format --check python tests benchmarks
	$(BIN)/mypy

stubtest: build
	$(BIN)/python -m mypy.stubtest ndshm._native

rust-test:
	cargo test --quiet -p ndshm

py-test: build
	$(BIN)/python -m pytest -q tests

test: lint stubtest rust-test py-test

# The abi3 wheel users install (CPython 3.11 and later), in target/wheels.
wheel: $(DEPS)
	rm -f target/wheels/ndshm-*.whl
	$(BIN)/maturin build --release --quiet --out target/wheels

# The whole test suite against the installed wheel on the host's Python and
# the newer CPythons of Debian chroots (see ci/test-pythons.sh; needs root).
test-pythons: wheel
	cargo build --release --quiet -p ndshm --example peer
	ci/test-pythons.sh target/wheels/ndshm-*.whl target/release/examples/peer

# The headline benchmarks on the installed wheel, host and chroot Pythons
# side by side (NDSHM_PYTHONS picks them; tables in benchmarks/out/).
BENCH_PYTHONS ?= handoff overhead seed
bench-pythons: wheel
	cargo build --release --quiet -p ndshm --example peer
	ci/test-pythons.sh --bench "$(BENCH_PYTHONS)" target/wheels/ndshm-*.whl target/release/examples/peer

# Free-threaded CPython (not supported yet, see docs/ENGINE.md): a
# version-specific wheel for FT_PYTHON (PyO3 drops abi3 there by itself), and
# a compile check of the bindings for free-threaded 3.14 with no interpreter.
FT_PYTHON ?= python3.14t
wheel-freethreaded: $(DEPS)
	$(BIN)/maturin build --release --quiet --out target/wheels -i $(FT_PYTHON)

check-freethreaded:
	PYO3_CONFIG_FILE=$(abspath ci/pyo3-cpython-3.14t.cfg) cargo check --release --quiet \
		-p ndshm-python --features extension-module --target-dir target/freethreaded

bench: build
	$(BIN)/python -m pip install -q --disable-pip-version-check -r benchmarks/requirements.txt
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) target
