# One target per habit. Everything runs in ./.venv, built from scratch when missing.
# docs/DEVELOPMENT.md says what each target does and when to use it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BENCH_ARGS ?= --patterns 100000 --queries 20
# Linters and doc tools are pinned: a new release must not turn a green tree red.
RUFF_VERSION := 0.14.14
MYPY_VERSION := 1.20.2
PDOC_VERSION := 16.0.0

.PHONY: venv dev wheel install test test-rust test-python test-kato bench lint lint-fmt lint-clippy \
	lint-clippy-python lint-ruff stubs docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "maturin>=1.5,<2" "numpy>=1.21" "pytest>=7" "hypothesis>=6" "rapidfuzz>=3" "mongomock>=4" prometheus_client fastapi httpx uvicorn nvidia-cuda-nvrtc-cu12 nvidia-cuda-nvcc-cu12
	$(PY) -m pip install -q "ruff==$(RUFF_VERSION)" "mypy==$(MYPY_VERSION)"

venv: $(PY)

# Editable build for development: Python sources are used in place.
dev: $(PY)
	$(VENV)/bin/maturin develop --release -q

# The release wheel (abi3, one per platform) into dist/.
wheel: $(PY)
	$(VENV)/bin/maturin build --release --out dist -q

# The wheel installed into the venv (not the source tree): what the Python tests and stubtest see.
install: wheel
	$(PY) -m pip install -q --force-reinstall --no-deps dist/kato_gpu-*.whl

# Every check runs (-k) even after one fails, so one run lists every finding; any failure fails lint.
lint:
	@$(MAKE) --no-print-directory -k lint-fmt lint-clippy lint-clippy-python lint-ruff stubs

lint-fmt:
	cargo fmt --check

lint-clippy:
	cargo clippy --release --all-targets --features kernel-emulation -- -D warnings

# The bindings need a Python interpreter to build against: the venv's.
lint-clippy-python: $(PY)
	PYO3_PYTHON=$(abspath $(PY)) cargo clippy --release --all-targets --features python -- -D warnings

lint-ruff: $(PY)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The stubs (python/kato_gpu/_native.pyi) against the compiled module of the installed wheel. Run
# from tests/ so that the source tree's python/ is not what mypy finds.
stubs: install
	cd tests && ../$(PY) -m mypy.stubtest kato_gpu._native --allowlist stubtest-allowlist.txt

test-rust:
	cargo test --release --features kernel-emulation

# Runs the Python tests against the installed wheel, then KATO's own encoder tests.
test-python: install
	cd tests && ../$(PY) -c "import kato_gpu; print('testing the installed kato_gpu', kato_gpu.__version__, 'at', kato_gpu.__file__)"
	cd tests && ../$(PY) -m pytest -q -p no:cacheprovider python
	$(KATO_SUITE)

# KATO's unmodified tests/tests/gpu/test_encoder.py against kato_gpu.SymbolVocabularyEncoder
# ($$KATO_SRC, default ../shared/kato; skipped with a message where there is no KATO checkout).
# KATO's directory is read-only: nothing may write bytecode there.
KATO_SUITE = PYTHONDONTWRITEBYTECODE=1 $(PY) tests/kato_suite/run.py
test-kato: install
	$(KATO_SUITE)

test: lint
	$(MAKE) --no-print-directory test-rust test-python

bench: install
	$(VENV)/bin/kato-gpu bench $(BENCH_ARGS)

# API reference from the docstrings and stubs into docs/api/ (git-ignored); pdoc only here. The
# package's __all__ names no submodule, so every public module is named (the compiled one too).
PDOC_SOURCES = $(filter-out python/kato_gpu/_% %/__init__.py,$(wildcard python/kato_gpu/*.py python/kato_gpu/bench/*.py))
PDOC_MODULES = kato_gpu kato_gpu._native kato_gpu.bench $(subst /,.,$(patsubst python/%.py,%,$(PDOC_SOURCES)))
docs: install
	$(PY) -m pip install -q "pdoc==$(PDOC_VERSION)"
	rm -rf docs/api
	cd tests && ../$(PY) -m pdoc --docformat restructuredtext -o ../docs/api $(PDOC_MODULES)

clean:
	rm -rf $(VENV) dist target docs/api
