# The two commands of the README: `make demo` and `make test`. Both set up everything they need
# on a fresh machine (Debian packages, the virtual environment, the project) and nothing else.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lift3d-installed
DEMO := outputs/demo

.PHONY: demo test lint sysdeps clean

# open3d needs libusb to import; the viewer's browser test needs chromium.
sysdeps:
	@if ! ldconfig -p | grep -q libusb-1.0 || ! command -v chromium >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 chromium >/dev/null; \
		else \
			echo "please install the Debian packages libusb-1.0-0 and chromium (sudo apt-get install libusb-1.0-0 chromium)"; \
		fi; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	SAM2_BUILD_CUDA=0 $(PY) -m pip install -q -e '.[dev,sam2]'
	@touch $(STAMP)

demo: sysdeps $(STAMP)
	$(VENV)/bin/lift3d synth --out $(DEMO)/scene
	$(VENV)/bin/lift3d segment --scene $(DEMO)/scene --out $(DEMO)/result
	@echo "demo output: $(DEMO)/result (open $(DEMO)/result/report.html, or: $(VENV)/bin/lift3d view $(DEMO)/result)"

test: sysdeps $(STAMP) lint
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(DEMO) .pytest_cache
