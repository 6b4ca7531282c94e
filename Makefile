# Two commands for a fresh Debian machine (see README):
#   make demo   - set everything up, then run the demo (headless under Xvfb when there is no display)
#   make test   - set everything up, lint and type-check src/ (ruff, mypy), then run the whole test
#                 suite twice: Python 3.11 + PyQt5 (.venv),
#                 then the newest Python 3.12/3.13 found, zarr 3.x and numpy, under PyQt6, with the
#                 tensorstore read engine (.venv-pyqt6): the first run reads with zarr-python
PYTHON ?= python3
VENV   ?= .venv
EXTRAS ?= test
STAMP  := $(VENV)/.installed-$(EXTRAS)
# The second venv: the first of Python 3.12, 3.13 found on PATH or in pyenv (scripts/find-python.sh),
# the newest zarr 3.x and numpy pip resolves for it, PyQt6 selected with QT_API (PyQt5 is installed too:
# napari[pyqt5] is a dependency).
PYTHON2 ?= $(shell bash scripts/find-python.sh 3.12 3.13)
VENV2   ?= .venv-pyqt6
STAMP2  := $(VENV2)/.installed-test-pyqt6-tensorstore

.PHONY: setup setup2 system test test1 test2 demo bench clean

system:
	bash scripts/install-system-deps.sh

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

$(STAMP2): pyproject.toml
	@test -n "$(PYTHON2)" || { echo "no Python 3.12 or 3.13 found (PATH, pyenv): set PYTHON2=/path/to/python3.12" >&2; exit 1; }
	test -x $(VENV2)/bin/python || $(PYTHON2) -m venv $(VENV2)
	$(VENV2)/bin/python -m pip install -q --upgrade pip
	$(VENV2)/bin/python -m pip install -q --upgrade -e ".[test,pyqt6,tensorstore]" "zarr>=3,<4"
	touch $@

setup: system $(STAMP)

setup2: system $(STAMP2)

test: test1 test2

test1: setup
	$(VENV)/bin/python scripts/versions.py
	bash scripts/lint.sh
	bash scripts/run-tests.sh

test2: setup2
	QT_API=pyqt6 $(VENV2)/bin/python scripts/versions.py
	QT_API=pyqt6 PY=$(VENV2)/bin/python bash scripts/run-tests.sh

demo: setup
	bash scripts/run-gui.sh $(VENV)/bin/napari-async-slicing demo $(DEMO_ARGS)

bench:
	$(MAKE) setup EXTRAS=test,bench
	bash scripts/run-gui.sh $(VENV)/bin/napari-async-slicing bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VENV2) build *.egg-info src/*.egg-info .pytest_cache
