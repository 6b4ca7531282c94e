"""The plugin's dock widget (Plugins -> napari-async-slicing -> Async slicing).

- "Use async slicing in this viewer" swaps the running viewer's slicer between napari's own and
  ours, live (see ``_live.swap_slicer``).
- The options of ``SlicingOptions`` (cache budget, worker threads, heavy slots, prefetch radius,
  read engine, latency log): "Apply" rebuilds the viewer's slicer with them; "Use as defaults for this
  session" also makes them the defaults of ``enable()`` / ``enable_in()`` (environment variables
  of this process; nothing is written to disk).
- "Open URL": a zarr / OME-Zarr path or URL opened with our reader.
- A live readout per layer (``LatencyWidget``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_async_slicing._options import READ_ENGINES, GiB, MiB, SlicingOptions
from napari_async_slicing._qt._latency_widget import LatencyWidget

if TYPE_CHECKING:
    import napari


def _spin(low: int, high: int, tip: str) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setToolTip(tip)
    return box


def _engine_combo() -> QComboBox:
    """``SlicingOptions.read_engine``: what each choice reads with here, in its label."""
    from napari_async_slicing._reading._tensorstore import available, uses_tensorstore

    labels = {
        'auto': f'auto ({"tensorstore" if uses_tensorstore("auto") else "zarr-python"})',
        'tensorstore': 'tensorstore' if available() else 'tensorstore (not installed: zarr-python)',
        'zarr': 'zarr-python',
    }
    box = QComboBox()
    for engine in READ_ENGINES:
        box.addItem(labels[engine], engine)
    box.setToolTip(
        'What reads zarr arrays. tensorstore (pip install "napari-async-slicing[tensorstore]") '
        'reads stores it can map (local, HTTP, S3, GCS); anything else is read by zarr-python. '
        'auto: whichever the benchmarks found faster.'
    )
    return box


class AsyncSlicingWidget(QWidget):
    """Turn async slicing on/off in this viewer, set its options, and watch what it does."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, interval_ms: int = 250) -> None:
        super().__init__()
        from napari_async_slicing._live import default_options, uses_our_slicer
        from napari_async_slicing._napari_compat import layer_slicer, unwrap_viewer

        self._viewer = unwrap_viewer(napari_viewer)

        self.use_async = QCheckBox('Use async slicing in this viewer')
        self.use_async.setToolTip(
            "Swap this viewer's slicer between napari's own and napari-async-slicing, now."
        )
        self.use_async.setChecked(uses_our_slicer(self._viewer))
        self.use_async.toggled.connect(self._on_toggled)

        self.cache_mib = _spin(0, GiB // MiB, 'Byte budget of the decoded chunk cache (0: off)')
        self.cache_mib.setSuffix(' MiB')
        self.workers = _spin(1, 64, 'Threads reading visible 2D planes (reads are I/O-bound)')
        self.heavy_slots = _spin(1, 16, 'Threads for 3D volumes and prefetch')
        self.prefetch_radius = _spin(0, 64, 'Neighbour planes prefetched in the scrub direction')
        self.read_engine = _engine_combo()
        self.log_file = QLineEdit()
        self.log_file.setPlaceholderText('no latency log')
        self.log_file.setToolTip('JSON-lines latency log, one line per slice request')
        browse = QToolButton()
        browse.setText('…')
        browse.clicked.connect(self._browse_log)
        log_row = QHBoxLayout()
        log_row.setContentsMargins(0, 0, 0, 0)
        log_row.addWidget(self.log_file)
        log_row.addWidget(browse)
        self.make_default = QCheckBox('Use as defaults for this session')
        self.make_default.setToolTip(
            'Also use these options for viewers and slicers created later in this session'
        )
        self.apply_button = QPushButton('Apply')
        self.apply_button.clicked.connect(self.apply)

        options_box = QGroupBox('Options')
        form = QFormLayout(options_box)
        form.addRow('Chunk cache', self.cache_mib)
        form.addRow('Worker threads', self.workers)
        form.addRow('Heavy slots', self.heavy_slots)
        form.addRow('Prefetch radius', self.prefetch_radius)
        form.addRow('Read engine', self.read_engine)
        form.addRow('Latency log', log_row)
        form.addRow(self.make_default)
        form.addRow(self.apply_button)

        self.url = QLineEdit()
        self.url.setPlaceholderText('https://…/image.ome.zarr')
        self.url.returnPressed.connect(self.open_url)
        open_button = QPushButton('Open')
        open_button.clicked.connect(self.open_url)
        url_row = QHBoxLayout()
        url_row.addWidget(self.url)
        url_row.addWidget(open_button)
        url_box = QGroupBox('Open URL (zarr / OME-Zarr)')
        url_box.setLayout(url_row)

        self.readout = LatencyWidget(self._viewer, interval_ms=interval_ms)
        self.readout._timer.timeout.connect(self._sync_toggle)  # e.g. the reader turned it on
        readout_box = QGroupBox('Per layer')
        readout_layout = QVBoxLayout(readout_box)
        readout_layout.addWidget(self.readout)

        layout = QVBoxLayout(self)
        layout.addWidget(self.use_async)
        layout.addWidget(options_box)
        layout.addWidget(url_box)
        layout.addWidget(readout_box)
        layout.addStretch(1)

        slicer = layer_slicer(self._viewer)
        self.set_options(getattr(slicer, 'options', None) or default_options())

    # --- options <-> controls -----------------------------------------------------------------

    def options(self) -> SlicingOptions:
        """The options the controls show (other fields from the defaults)."""
        from napari_async_slicing._live import default_options

        return dataclasses.replace(
            default_options(),
            cache_bytes=self.cache_mib.value() * MiB,
            workers=self.workers.value(),
            heavy_slots=self.heavy_slots.value(),
            prefetch_radius=self.prefetch_radius.value(),
            read_engine=self.read_engine.currentData(),
            log=self.log_file.text().strip() or None,
        )

    def set_options(self, options: SlicingOptions) -> None:
        self.cache_mib.setValue(options.cache_bytes // MiB)
        self.workers.setValue(options.workers)
        self.heavy_slots.setValue(options.heavy_slots)
        self.prefetch_radius.setValue(options.prefetch_radius)
        self.read_engine.setCurrentIndex(max(0, self.read_engine.findData(options.read_engine)))
        self.log_file.setText(options.log or '')

    # --- actions ---------------------------------------------------------------------------------

    def apply(self) -> None:
        """Rebuild the viewer's slicer with the options shown (if async slicing is on)."""
        from napari_async_slicing._live import enable_in, make_default

        options = self.options()
        if self.make_default.isChecked():
            make_default(options)
        if self.use_async.isChecked():
            self._guarded(enable_in, self._viewer, options)
        self._sync_toggle()

    def _on_toggled(self, on: bool) -> None:
        from napari_async_slicing._live import disable_in, enable_in

        if on:
            self._guarded(enable_in, self._viewer, self.options())
        else:
            self._guarded(disable_in, self._viewer)
        self._sync_toggle()

    def open_url(self) -> None:
        url = self.url.text().strip()
        if url:
            self._guarded(self._viewer.open, url, plugin='napari-async-slicing')
            self._sync_toggle()  # the reader turns async slicing on

    def _sync_toggle(self) -> None:
        """Show whether the viewer really uses our slicer (an action may have failed)."""
        from napari_async_slicing._live import uses_our_slicer

        on = uses_our_slicer(self._viewer)
        if self.use_async.isChecked() != on:
            self.use_async.blockSignals(True)
            self.use_async.setChecked(on)
            self.use_async.blockSignals(False)

    def _browse_log(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, 'Latency log file', self.log_file.text(), 'JSON lines (*.jsonl);;All files (*)'
        )
        if path:
            self.log_file.setText(path)

    def _guarded(self, action: Any, *args: Any, **kwargs: Any) -> None:
        """Run an action; a failure (bad log path, unreadable URL) becomes a napari notification."""
        from napari.utils.notifications import show_error

        try:
            action(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            show_error(f'napari-async-slicing: {type(exc).__name__}: {exc}')
