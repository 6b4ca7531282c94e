#!/usr/bin/env bash
# The whole test suite: our tests, then napari 0.9's own async-slicing tests with our slicer enabled.
# Each pytest run gets a fresh napari settings file and runs under Xvfb (see scripts/run-gui.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HEADLESS=1
bash scripts/run-gui.sh "$PY" -m pytest tests -m "not slow" -p no:cacheprovider "$@"
bash scripts/run-gui.sh "$PY" -m pytest -p napari_async_slicing._pytest_napari -p no:cacheprovider \
  --pyargs napari._qt._tests.test_async_slicing napari.components._tests.test_layer_slicer
