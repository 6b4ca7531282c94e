"""Pytest plugin registering the fixtures of :mod:`napari_async_slicing.testing`."""

from ._fixtures import *  # noqa: F403 - the fixtures are this plugin's content
from ._fixtures import __all__  # noqa: F401
