# One target per habit. Everything runs in ./.venv, built from scratch when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BENCH_ARGS ?= --patterns 100000 --queries 20

.PHONY: venv dev wheel test test-rust test-python bench lint stubs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "maturin>=1.5,<2" "numpy>=1.21" "pytest>=7" "hypothesis>=6" "rapidfuzz>=3" "mongomock>=4" prometheus_client fastapi httpx uvicorn nvidia-cuda-nvrtc-cu12 nvidia-cuda-nvcc-cu12

venv: $(PY)

# Editable build for development: Python sources are used in place.
dev: $(PY)
	$(VENV)/bin/maturin develop --release -q

# The release wheel (abi3, one per platform) into dist/.
wheel: $(PY)
	$(VENV)/bin/maturin build --release --out dist -q

test-rust:
	cargo test --release --features kernel-emulation

# Builds the wheel, installs it into the venv (not the source tree) and runs the Python tests.
test-python: wheel
	$(PY) -m pip install -q --force-reinstall --no-deps dist/kato_gpu-*.whl
	cd tests && ../$(PY) -c "import kato_gpu; print('testing the installed kato_gpu', kato_gpu.__version__, 'at', kato_gpu.__file__)"
	cd tests && ../$(PY) -m pytest -q -p no:cacheprovider python

test: test-rust test-python

bench: wheel
	$(PY) -m pip install -q --force-reinstall --no-deps dist/kato_gpu-*.whl
	$(VENV)/bin/kato-gpu bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) dist target
