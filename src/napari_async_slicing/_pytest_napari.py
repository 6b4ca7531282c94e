"""pytest plugin: run napari's own slicing and viewer tests with our slicer in place of napari's.

    pytest -p napari_async_slicing._pytest_napari --pyargs \
        napari._qt._tests.test_async_slicing napari.components._tests.test_layer_slicer \
        napari.components._tests.test_viewer_model napari._qt._tests.test_qt_viewer

``enable()`` puts our slicer into every viewer, and every test fails if a viewer it created used
another slicer; napari's ``test_layer_slicer`` builds ``_LayerSlicer()`` itself, so that module's
name is pointed at ours. Tests that assert a napari implementation detail rather than behaviour
are skipped here, each with its reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

#: napari test name -> why it does not apply to our slicer (its behaviour is covered in tests/).
SKIPPED: dict[str, str] = {
    'test_submit_exception_subthread_on_result': (
        'asserts the raw exception type handed to notification_manager; we wrap it in a '
        'SliceError whose message names the layer and step (tests/test_slicer.py covers '
        'loaded-after-failure and one notification)'
    ),
    'test_submit_multiple_calls_cancels_pending': (
        'submits identical requests; we coalesce a request identical to the one already on its '
        'way (napari submits every step twice). The same behaviour with distinct requests is '
        'tests/test_layer_slicer_api.py::test_newer_request_supersedes_older_ones'
    ),
}


#: The slicer type of every viewer created during the running test.
_viewer_slicers: list[type] = []


def pytest_configure(config: pytest.Config) -> None:
    import functools

    from napari.components import ViewerModel

    import napari_async_slicing

    napari_async_slicing.enable()
    original = ViewerModel.__init__

    @functools.wraps(original)
    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        _viewer_slicers.append(type(self._layer_slicer))

    ViewerModel.__init__ = init


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from napari.components._layer_slicer import _LayerSlicer

    from napari_async_slicing.components._layer_slicer import AsyncLayerSlicer

    # pytest may import napari's test file under another name (e.g. plain ``test_layer_slicer``),
    # so patch the module each collected test actually belongs to.
    modules = {getattr(item, 'module', None) for item in items}
    for module in modules:
        if module is not None and getattr(module, '_LayerSlicer', None) is _LayerSlicer:
            module._LayerSlicer = AsyncLayerSlicer
    for item in items:
        reason = SKIPPED.get(item.originalname if hasattr(item, 'originalname') else item.name)
        if reason:
            item.add_marker(pytest.mark.skip(reason=f'napari-async-slicing: {reason}'))


@pytest.fixture(autouse=True)
def _our_slicer_is_under_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail loudly if a napari slicer test would run against napari's slicer instead of ours."""
    from napari_async_slicing.components._layer_slicer import AsyncLayerSlicer

    module = getattr(request, 'module', None)
    if module is not None and hasattr(module, '_LayerSlicer'):
        assert module._LayerSlicer is AsyncLayerSlicer
    _viewer_slicers.clear()
    yield
    others = [t.__name__ for t in _viewer_slicers if not issubclass(t, AsyncLayerSlicer)]
    _viewer_slicers.clear()
    assert not others, f'viewers of this test used {others}, not our slicer'
