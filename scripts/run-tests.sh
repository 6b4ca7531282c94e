#!/usr/bin/env bash
# The whole test suite: our tests, then napari 0.9's own slicing and viewer tests with our slicer in
# every viewer they create (their pop-up window tests too, as napari runs them on CI).
# Each pytest run gets a fresh napari settings file and runs under Xvfb (see scripts/run-gui.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HEADLESS=1
bash scripts/run-gui.sh "$PY" -m pytest tests -m "not slow" -p no:cacheprovider "$@"
NAPARI_POPUP_TESTS=1 bash scripts/run-gui.sh "$PY" -m pytest -p napari_async_slicing._pytest_napari -p no:cacheprovider \
  --pyargs napari._qt._tests.test_async_slicing napari.components._tests.test_layer_slicer \
  napari.components._tests.test_viewer_model napari._qt._tests.test_qt_viewer
