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
# The release wheel's toolchain: zig (from PyPI) links against glibc 2.17 for manylinux2014;
# auditwheel checks the result.
ZIGLANG_VERSION := 0.14.1
AUDITWHEEL_VERSION := 6.8.2
RELEASE_DIR := dist/release

.PHONY: venv dev wheel install test test-rust test-python test-kato bench lint lint-fmt lint-clippy \
	lint-clippy-python lint-ruff stubs docs clean kato-deps test-kato-service kato-suite \
	release-wheel sdist test-docs gpu-check

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "maturin>=1.5,<2" "numpy>=1.21" "pytest>=7" "hypothesis>=6" "rapidfuzz>=3" "mongomock>=4" prometheus_client fastapi httpx uvicorn nvidia-cuda-nvrtc-cu12 nvidia-cuda-nvcc-cu12 $(PLOT_PIP_DEPS)
	$(PY) -m pip install -q "ruff==$(RUFF_VERSION)" "mypy==$(MYPY_VERSION)"

venv: $(PY)

# matplotlib for `kato-gpu bench --plot` and its test (the `plot` extra); a stamp, so that a venv
# made before it was needed gets it too.
PLOT_PIP_DEPS := "matplotlib>=3.5"
PLOT_DEPS_STAMP := $(VENV)/.plot-deps
$(PLOT_DEPS_STAMP): $(PY) Makefile
	$(PY) -m pip install -q $(PLOT_PIP_DEPS)
	touch $@

# Ray for kato_gpu.distributed and its tests (the `distributed` extra), pinned, no extras (no
# dashboard). Ray 2.60 needs Python >= 3.10: on 3.9 nothing is installed and those tests skip,
# saying why. A stamp, so that an existing venv gets it too.
RAY_PIP_DEPS := "ray==2.60.0; python_version >= '3.10'"
RAY_DEPS_STAMP := $(VENV)/.ray-deps
$(RAY_DEPS_STAMP): $(PY) Makefile
	$(PY) -m pip install -q $(RAY_PIP_DEPS)
	touch $@

# What serving unmodified KATO needs (kato_gpu.kato_host): KATO's own dependencies at the versions
# of its requirements.lock (fastapi 0.118 and qdrant-client 1.15.1 are what KATO 3.10.1 runs on;
# aioredis is left out: KATO's serving path does not import it, and it does not import on Python
# 3.11), chdb in place of a ClickHouse server, and Debian's redis-server (apt only when missing).
# Then what KATO's own service tests import (make kato-suite): pytest and pytest-asyncio at KATO's
# locked versions, requests, websocket-client and pytest-timeout (KATO's test requirements; a hung test ends). The
# docker package is left out on purpose: without it KATO's fixtures use the service on port 8000.
# The stamps are remade whenever this Makefile changes, so that a changed pin reaches an existing venv.
KATO_DEPS_STAMP := $(VENV)/.kato-deps
KATO_PIP_DEPS := "fastapi==0.118.3" "starlette==0.48.0" "pydantic==2.11.9" "pydantic-settings==2.11.0" \
	"uvicorn==0.37.0" "websockets==15.0.1" "python-multipart==0.0.20" "pyyaml==6.0.3" "redis==6.4.0" \
	"clickhouse-connect==0.9.2" "qdrant-client==1.15.1" "protobuf==6.32.1" "grpcio==1.75.1" \
	"datasketch==1.7.0" "xxhash>=3" "rapidfuzz==3.14.1" "psutil==7.1.0" "httpx>=0.24" "chdb==4.4.0" \
	"pytest==8.4.2" "pytest-asyncio==1.2.0" "requests==2.34.2" "pytest-timeout==2.4.0" "websocket-client==1.9.2"
$(KATO_DEPS_STAMP): $(PY) Makefile
	$(PY) -m pip install -q $(KATO_PIP_DEPS)
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing redis-server (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	touch $@

kato-deps: $(KATO_DEPS_STAMP)

# Editable build for development: Python sources are used in place.
dev: $(PY)
	$(VENV)/bin/maturin develop --release -q

# The release wheel (abi3, one per platform) into dist/.
wheel: $(PY)
	$(VENV)/bin/maturin build --release --out dist -q

# The wheel to publish: manylinux2014 (glibc >= 2.17: RHEL/Rocky 8, Ubuntu 20.04, Debian 11 and
# newer), x86_64, abi3, linked by zig against glibc 2.17 headers, then checked by auditwheel: the
# target fails unless auditwheel places the wheel in manylinux2014 (no library beyond that
# policy's list; CUDA is loaded at run time by cudarc, never linked). `make wheel` stays the quick
# native build (tagged for this machine's glibc). .github/workflows/release.yml builds the same
# wheel for x86_64 and aarch64 on a tag.
release-wheel: $(PY)
	$(PY) -m pip install -q "ziglang==$(ZIGLANG_VERSION)" "auditwheel==$(AUDITWHEEL_VERSION)"
	rm -rf $(RELEASE_DIR)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/maturin build --release --zig \
		--compatibility manylinux2014 --target x86_64-unknown-linux-gnu --out $(RELEASE_DIR)
	$(VENV)/bin/auditwheel show $(RELEASE_DIR)/kato_gpu-*.whl | tee $(RELEASE_DIR)/auditwheel.txt
	@tr '\n' ' ' < $(RELEASE_DIR)/auditwheel.txt | grep -q '"manylinux_2_17_x86_64"' || \
		{ echo "release-wheel: auditwheel does not place the wheel in manylinux2014 (manylinux_2_17)"; exit 1; }
	@ls $(RELEASE_DIR)/kato_gpu-*-cp39-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl

# The source distribution (needs a Rust toolchain to install) into dist/.
sdist: $(PY)
	$(VENV)/bin/maturin sdist --out dist

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

# The documentation's own test: every fenced block of README.md and docs/*.md is closed and every
# ```python block runs (tests/python/test_docs.py, against the installed wheel).
test-docs: install
	cd tests && ../$(PY) -m pytest -q -p no:cacheprovider python/test_docs.py

# NVRTC from the venv's nvidia-cuda-nvrtc-cu12 wheel, so that the Rust tests that compile the
# kernels (PTX and cubins) run here instead of returning early without NVRTC.
NVRTC_LIB = $(firstword $(wildcard $(VENV)/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib))

test-rust: $(PY)
	LD_LIBRARY_PATH=$(abspath $(NVRTC_LIB))$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH} cargo test --release --features kernel-emulation

# Runs the Python tests against the installed wheel, then KATO's own encoder tests.
test-python: install $(PLOT_DEPS_STAMP) $(RAY_DEPS_STAMP)
	cd tests && ../$(PY) -c "import kato_gpu; print('testing the installed kato_gpu', kato_gpu.__version__, 'at', kato_gpu.__file__)"
	cd tests && ../$(PY) -m pytest -q -p no:cacheprovider python
	$(KATO_SUITE)

# KATO's unmodified tests/tests/gpu/test_encoder.py against kato_gpu.SymbolVocabularyEncoder
# ($$KATO_SRC, default ../shared/kato; skipped with a message where there is no KATO checkout).
# KATO's directory is read-only: nothing may write bytecode there.
KATO_SUITE = PYTHONDONTWRITEBYTECODE=1 $(PY) tests/kato_suite/run.py
test-kato: install
	$(KATO_SUITE)

# KATO served for real (uvicorn, redis-server, chdb) by kato_gpu.kato_host, unmodified and on
# kato_gpu, against the installed wheel: the served-KATO checks, the glue's guarantees and the
# end-to-end equality through KATO's REST API ($$KATO_SRC, default ../shared/kato; skipped with a
# message without it). About 6 minutes.
test-kato-service: install kato-deps
	cd tests && ../$(PY) -m pytest -q -p no:cacheprovider kato_service

# KATO's own service tests (its tests/tests/unit, integration, api: ~440) against KATO served on
# port 8000 unmodified, then with KATO_GPU_ACCELERATE=1; exits non-zero on any difference. Slow
# (minutes per run), so not part of `make test`. KATO_SUITE_ARGS: e.g. --out DIR, or -- -k NAME.
KATO_SUITE_ARGS ?=
kato-suite: install kato-deps
	PYTHONDONTWRITEBYTECODE=1 $(PY) tests/kato_suite_served/run.py $(KATO_SUITE_ARGS)

test: lint
	$(MAKE) --no-print-directory test-rust test-python test-kato-service

bench: install
	$(VENV)/bin/kato-gpu bench $(BENCH_ARGS)

# What only a machine with a CUDA GPU can check (scripts/gpu_check.py; docs/GPU.md): pytest -m gpu,
# compute-sanitizer memcheck over it when installed, and kato-gpu bench --patterns 10000000 --device
# gpu, in under five minutes after the build, recorded in gpu-check.json (logs in gpu-check-logs/).
# Without a usable GPU it stops at once: "no CUDA device: <reason>", exit status 3.
GPU_CHECK_ARGS ?=
gpu-check: install
	$(PY) scripts/gpu_check.py --json gpu-check.json $(GPU_CHECK_ARGS)

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
