"""Stateful fuzzing on a real viewer: random interleavings of what users do, checked against
napari's own synchronous slicing after every settle.

Invariant after each settle: every visible layer shows exactly what napari's synchronous slicing
of the same layer state and dims shows (layer slice and, in 2D, the array handed to vispy); no
layer is left loading; no error was reported. CI runs a bounded number of steps; the ``slow``
marker runs a long fuzz (``pytest -m slow tests/test_fuzz.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from napari_async_slicing._napari_compat import displayed_slice, reference_slice

from .conftest import SHAPE, vispy_data

STATS = {'steps': 0, 'settles': 0, 'checks': 0}


def _memory(seed: int, shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32) * 100


def _machine(viewer, remote_volume, qtbot, errors):
    class ViewerMachine(RuleBasedStateMachine):
        @initialize()
        def start(self) -> None:
            viewer.layers.clear()
            viewer.dims.ndisplay = 2
            viewer.dims.order = tuple(range(len(SHAPE)))
            viewer.add_image(remote_volume, name='remote', contrast_limits=(0, 1000))
            viewer.add_image(_memory(0), name='memory0', contrast_limits=(0, 100))
            errors.clear()

        # --- what users do ---------------------------------------------------------------

        @rule(z=st.integers(0, SHAPE[0] - 1))
        def step(self, z: int) -> None:
            viewer.dims.set_current_step(0, z)

        @rule(zs=st.lists(st.integers(0, SHAPE[0] - 1), min_size=2, max_size=6))
        def scrub(self, zs: list[int]) -> None:
            for z in zs:
                viewer.dims.set_current_step(0, z)

        @rule(axis=st.integers(0, 2), z=st.integers(0, 11))
        def step_other_axis(self, axis: int, z: int) -> None:
            viewer.dims.set_current_step(axis, z)

        @rule()
        def transpose(self) -> None:
            viewer.dims.transpose()

        @rule()
        def roll(self) -> None:
            viewer.dims.roll()

        @rule(n=st.sampled_from([2, 3]))
        def ndisplay(self, n: int) -> None:
            viewer.dims.ndisplay = n

        @rule(seed=st.integers(1, 1000), labels=st.booleans())
        def add_layer(self, seed: int, labels: bool) -> None:
            if len(viewer.layers) >= 5:
                return
            if labels:
                viewer.add_labels((_memory(seed) // 20).astype(np.int32), name=f'labels{seed}')
            else:
                viewer.add_image(_memory(seed), name=f'memory{seed}', contrast_limits=(0, 100))

        @rule(i=st.integers(0, 4))
        def remove_layer(self, i: int) -> None:
            if len(viewer.layers) > 1:
                viewer.layers.pop(i % len(viewer.layers))

        @rule(i=st.integers(0, 4), j=st.integers(0, 4))
        def reorder(self, i: int, j: int) -> None:
            n = len(viewer.layers)
            viewer.layers.move(i % n, j % n)

        @rule(i=st.integers(0, 4), seed=st.integers(1, 1000), smaller=st.booleans())
        def replace_data(self, i: int, seed: int, smaller: bool) -> None:
            layer = viewer.layers[i % len(viewer.layers)]
            if layer.name == 'remote':
                return
            shape = (SHAPE[0], 32, 48) if smaller else SHAPE
            data = _memory(seed, shape)
            layer.data = (data // 20).astype(np.int32) if layer.name.startswith('labels') else data

        @rule(i=st.integers(0, 4))
        def toggle_visibility(self, i: int) -> None:
            layer = viewer.layers[i % len(viewer.layers)]
            layer.visible = not layer.visible

        @rule(i=st.integers(0, 4), s=st.sampled_from([0.5, 1.0, 2.0]), t=st.sampled_from([0.0, 3.0, -5.0]))
        def scale_translate(self, i: int, s: float, t: float) -> None:
            layer = viewer.layers[i % len(viewer.layers)]
            layer.scale = (s, 1.0, s)
            layer.translate = (t, 0.0, -t)

        @rule(z=st.integers(0, SHAPE[0] - 1))
        def screenshot_in_sync_slicing(self, z: int) -> None:
            with viewer.sync_slicing():
                viewer.dims.set_current_step(0, z)
                image = viewer.screenshot(canvas_only=True)
                assert image.ndim == 3
                self._check_all()  # inside sync_slicing: already applied, no waiting

        # --- the invariant ----------------------------------------------------------------

        @invariant()
        def shows_what_napari_sync_shows(self) -> None:
            STATS['steps'] += 1
            viewer._layer_slicer.wait_until_idle(timeout=20)
            qtbot.waitUntil(lambda: all(layer.loaded for layer in viewer.layers), timeout=20000)
            STATS['settles'] += 1
            self._check_all()
            assert errors == []

        def _check_all(self) -> None:
            for layer in viewer.layers:
                assert layer.loaded, layer.name
                if not layer.visible:
                    continue
                ours = np.asarray(displayed_slice(layer))
                ref = np.asarray(displayed_slice(reference_slice(layer, viewer.dims)))
                np.testing.assert_array_equal(ours, ref, err_msg=f'{layer.name} at {viewer.dims.current_step}')
                if viewer.dims.ndisplay == 2 and ours.ndim == 2:
                    shown = np.asarray(vispy_data(viewer, layer), dtype=np.float64)
                    np.testing.assert_allclose(shown, ours.astype(np.float64), err_msg=layer.name)
                STATS['checks'] += 1

    return ViewerMachine


def _run(viewer, server, remote_volume, qtbot, errors, examples: int, steps: int) -> None:
    server.configure(latency=0.01, jitter=0.02)
    machine = _machine(viewer, remote_volume, qtbot, errors)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            derandomize=examples <= 10,  # CI: the same sequences every run
            suppress_health_check=list(HealthCheck),
        ),
    )


def test_fuzz_viewer_matches_napari_sync(viewer, server, remote_volume, qtbot, errors):
    STATS.update(steps=0, settles=0, checks=0)
    _run(viewer, server, remote_volume, qtbot, errors, examples=4, steps=12)
    print(f'fuzz: {STATS}')
    assert STATS['checks'] > 0


@pytest.mark.slow
def test_fuzz_viewer_matches_napari_sync_long(viewer, volume_path, qtbot, errors):
    from napari_async_slicing.testing import ZarrHTTPServer, open_remote_array

    STATS.update(steps=0, settles=0, checks=0)
    with ZarrHTTPServer(volume_path.parent, max_seconds=3600) as server:  # outlives a long run
        remote = open_remote_array(server.url_for('volume.zarr'))
        _run(viewer, server, remote, qtbot, errors, examples=40, steps=40)
    print(f'fuzz: {STATS}')
