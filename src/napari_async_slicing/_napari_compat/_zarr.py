"""zarr's private names."""

from __future__ import annotations

from typing import Any


def zarr_event_loop() -> Any:
    """The asyncio loop zarr's synchronous API runs its coroutines on."""
    from zarr.core.sync import _get_loop

    return _get_loop()
