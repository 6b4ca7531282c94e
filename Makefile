# Two commands for a fresh Debian machine (see README):
#   make demo   - set everything up, then run the demo (headless under Xvfb when there is no display)
#   make test   - set everything up, then run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
EXTRAS ?= test
STAMP  := $(VENV)/.installed-$(EXTRAS)

.PHONY: setup system test demo bench clean

system:
	bash scripts/install-system-deps.sh

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

setup: system $(STAMP)

test: setup
	bash scripts/run-tests.sh

demo: setup
	bash scripts/run-gui.sh $(VENV)/bin/napari-async-slicing demo $(DEMO_ARGS)

bench:
	$(MAKE) setup EXTRAS=test,bench
	bash scripts/run-gui.sh $(VENV)/bin/napari-async-slicing bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
