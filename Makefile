# Quick start: `make demo`, `make test`. Both bootstrap .venv with pinned versions.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEPS := $(VENV)/.deps-stamp
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: build demo test lint rust-test py-test stubtest bench clean

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

stubtest: build
	$(BIN)/python -m mypy.stubtest ndshm._native

rust-test:
	cargo test --quiet -p ndshm

py-test: build
	$(BIN)/python -m pytest -q tests

test: lint stubtest rust-test py-test

bench: build
	$(BIN)/python -m pip install -q --disable-pip-version-check -r benchmarks/requirements.txt
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) target
