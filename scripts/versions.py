"""Print the versions a test run uses (Python, zarr, numpy, napari, vispy, the Qt binding) and
fail if the Qt binding is not the one ``QT_API`` asks for (qtpy would otherwise fall back)."""

from __future__ import annotations

import os
import sys

wanted = os.environ.get('QT_API')  # before qtpy's import sets it

import napari  # noqa: E402
import numpy  # noqa: E402
import qtpy  # noqa: E402
import vispy  # noqa: E402
import zarr  # noqa: E402

print(f'versions: python {sys.version.split()[0]}, zarr {zarr.__version__}, numpy {numpy.__version__}, '
      f'napari {napari.__version__}, vispy {vispy.__version__}, '
      f'Qt binding {qtpy.API_NAME} {qtpy.PYQT_VERSION or qtpy.PYSIDE_VERSION} (Qt {qtpy.QT_VERSION}), '
      f'QT_API={wanted or "unset"}', flush=True)
if wanted and qtpy.API_NAME.lower() != wanted.lower():
    sys.exit(f'QT_API={wanted} but qtpy uses {qtpy.API_NAME}')
