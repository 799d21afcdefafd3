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
	RUSTDOCFLAGS="-D warnings" cargo doc --quiet -p ndshm --no-deps
	$(BIN)/ruff check python tests benchmarks
	$(BIN)/ruff format --check python tests benchmarks
	$(BIN)/mypy
	@! git grep -nE '^(<{7}|>{7}) ' || (echo "merge conflict markers left in the files above"; false)

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

# Fuzzing (fuzz/, docs in README "Fuzzing"). libFuzzer targets built by the
# stable compiler with the coverage passes cargo-fuzz adds (no nightly, no
# cargo-fuzz): libfuzzer-sys, pinned in fuzz/Cargo.toml, compiles libFuzzer.
# `make test` runs each target briefly; `make fuzz` for FUZZ_SECONDS each,
# then the mutation run over pickled handles. The working corpora grow in
# target/fuzz/corpus/ (the checked-in seeds in fuzz/seeds/ are only read).
# A target in FUZZ_XFAIL has a known finding whose fix is pending: its
# seeds hold the failing input, and the brief run requires it still fails.
.PHONY: fuzz fuzz-build fuzz-smoke fuzz-lint
FUZZ_TARGETS := header control view
FUZZ_XFAIL ?=
FUZZ_SECONDS ?= 300
FUZZ_SMOKE_SECONDS ?= 4
FUZZ_HANDLES ?= 50000
FUZZ_DIR := target/fuzz
FUZZ_TRIPLE := $(shell rustc -vV | sed -n 's/^host: //p')
FUZZ_BIN := $(FUZZ_DIR)/$(FUZZ_TRIPLE)/release
FUZZ_RUSTFLAGS := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
	-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
	--cfg fuzzing -Cdebug-assertions -Coverflow-checks
FUZZ_RUN = $(FUZZ_BIN)/$(1) -print_final_stats=1 -max_len=8192 -artifact_prefix=$(FUZZ_DIR)/$(1)- \
	$(FUZZ_DIR)/corpus/$(1) fuzz/seeds/$(1)

fuzz-build:
	cd fuzz && CARGO_TARGET_DIR=../$(FUZZ_DIR) RUSTFLAGS="$(FUZZ_RUSTFLAGS)" \
		cargo build --locked --quiet --release --target $(FUZZ_TRIPLE) --bins

fuzz-lint:
	cargo fmt --manifest-path fuzz/Cargo.toml --check
	CARGO_TARGET_DIR=target cargo clippy --locked --quiet --manifest-path fuzz/Cargo.toml --no-default-features --all-targets -- -D warnings

fuzz-smoke: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do mkdir -p $(FUZZ_DIR)/corpus/$$t; \
	  if [[ " $(FUZZ_XFAIL) " == *" $$t "* ]]; then \
	    if $(FUZZ_BIN)/$$t -runs=0 -artifact_prefix=$(FUZZ_DIR)/$$t- fuzz/seeds/$$t >$(FUZZ_DIR)/$$t-smoke.log 2>&1; then \
	      echo "fuzz $$t: its known finding no longer fails; take it out of FUZZ_XFAIL"; exit 1; fi; \
	    echo "fuzz $$t: known finding still fails (FUZZ_XFAIL)"; \
	  else \
	    $(call FUZZ_RUN,$$t) -max_total_time=$(FUZZ_SMOKE_SECONDS) >$(FUZZ_DIR)/$$t-smoke.log 2>&1 \
	      || { tail -40 $(FUZZ_DIR)/$$t-smoke.log; exit 1; }; \
	    grep -h 'stat::number_of_executed_units\|stat::average_exec_per_sec' $(FUZZ_DIR)/$$t-smoke.log | tr '\n' ' ' | sed "s/^/fuzz $$t: /"; echo; \
	  fi; done

fuzz: fuzz-build build
	@set -e; for t in $(filter-out $(FUZZ_XFAIL),$(FUZZ_TARGETS)); do mkdir -p $(FUZZ_DIR)/corpus/$$t; \
	  echo "fuzz $$t: $(FUZZ_SECONDS) s"; \
	  $(call FUZZ_RUN,$$t) -max_total_time=$(FUZZ_SECONDS) >$(FUZZ_DIR)/$$t.log 2>&1 || { tail -40 $(FUZZ_DIR)/$$t.log; exit 1; }; \
	  grep -h 'stat::' $(FUZZ_DIR)/$$t.log; done
	@for t in $(FUZZ_XFAIL); do echo "fuzz $$t: skipped, known finding (FUZZ_XFAIL)"; done
	$(BIN)/python tests/helpers/fuzz_handles.py --mutate $(FUZZ_HANDLES)

test: fuzz-smoke
lint: fuzz-lint
