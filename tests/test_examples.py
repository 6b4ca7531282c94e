"""Every example runs headless (a few steps under ``viewer.sync_slicing()``, a screenshot) and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(
    p.name for p in (ROOT / 'examples').glob('*.py') if not p.name.startswith('_') and p.name != 'remote_zarr.py'
)


@pytest.mark.skipif(not os.environ.get('DISPLAY'), reason='needs a display (run under xvfb-run)')
@pytest.mark.parametrize('example', EXAMPLES)
def test_example_runs_headless(example, tmp_path):
    shot = tmp_path / 'shot.png'
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(ROOT / 'src'), env.get('PYTHONPATH', '')])
    env['NAPARI_ASYNC_SLICING_EXAMPLE_SCREENSHOT'] = str(shot)
    env['EXAMPLE_SAMPLE_SIZE'] = 'tiny'  # remote examples: the small cached samples
    env['EXAMPLE_SHAPES'] = '1000'  # shapes_many.py: keep napari's (slow) layer construction short
    env.setdefault('QT_QPA_PLATFORM', 'xcb')
    env['NAPARI_CONFIG'] = str(tmp_path / 'napari.yaml')
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'examples' / example)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    from imageio.v3 import imread

    image = np.asarray(imread(shot))
    rgb = image[..., :3].reshape(-1, 3)
    assert len(np.unique(rgb, axis=0)) > 1, f'{example}: blank screenshot'
