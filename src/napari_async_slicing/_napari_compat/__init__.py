"""Every use of a napari (and zarr) private name lives in this package.

napari 0.9 has no public slicing API, so installing our slicer means touching a few private seams.
Keeping them here means a napari upgrade touches one package. Each function says which seam it
uses; the modules follow napari's subsystems (viewers and Qt, layers and dims, scalar fields,
Shapes and Tracks, zarr) and ``_patches`` lists the attributes we replace.

Seams (napari 0.9.2):
- ``ViewerModel._layer_slicer``: a pydantic private attribute whose default factory is napari's
  ``_LayerSlicer``; we swap the factory so every new viewer gets our slicer.
- ``QtViewer.__init__`` connects ``_layer_slicer.events.ready`` to ``QtViewer._on_slice_ready``
  (which applies responses); for our slicer we disconnect it and apply on the main thread ourselves.
- ``Layer._slicing_state``: ``_make_slice_request``, ``_update_slice_response``,
  ``_set_unloaded_slice_id``, ``_update_loaded_slice_id``, ``loaded_data``; ``Layer._slice_dims``,
  ``Layer._refresh_sync``.
- ``QtViewer._screenshot`` calls ``wait_until_idle``; ``Window._screenshot`` does not wait.
- zarr: ``zarr.core.sync._get_loop`` (the event loop zarr's sync API runs on).
- ``VispyCanvas._clean_and_update_scenegraph`` (layer removal): wrapped to make the canvas's GL
  context current first (a napari 0.9.2 crash; see ``canvas_current_on_layer_removal``, issue 8).
- ``QtLayerListModel.data`` / ``LoadedRole``: the layer list's delayed loading cue.
"""

from napari_async_slicing._napari_compat._layers import *  # noqa: F403
from napari_async_slicing._napari_compat._patches import Patch, install, installed, seams, undo  # noqa: F401
from napari_async_slicing._napari_compat._scalar_field import *  # noqa: F403
from napari_async_slicing._napari_compat._shapes_tracks import *  # noqa: F403
from napari_async_slicing._napari_compat._viewer import *  # noqa: F403
from napari_async_slicing._napari_compat._zarr import *  # noqa: F403
