"""Intermediate planes (already stepped past) take at most about half the main thread."""

from __future__ import annotations

import pytest

from napari_async_slicing.components._plane_budget import FRAME_TIMEOUT_S, PlaneBudget


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock()


def test_the_next_intermediate_plane_waits_for_the_frame_and_as_long_again(clock):
    budget = PlaneBudget(clock)
    assert budget.allows()
    budget.shown()
    clock.t += 0.030
    assert not budget.allows()  # its frame is not on screen yet
    budget.frame_shown()  # showing it cost 30 ms
    clock.t += 0.029
    assert not budget.allows()
    clock.t += 0.002
    assert budget.allows()


def test_frames_without_an_intermediate_plane_change_nothing(clock):
    budget = PlaneBudget(clock)
    budget.frame_shown()
    assert budget.allows()


def test_a_frame_that_never_comes_is_not_waited_for_long(clock):
    budget = PlaneBudget(clock)
    budget.shown()
    clock.t += FRAME_TIMEOUT_S / 2
    assert not budget.allows()
    clock.t += FRAME_TIMEOUT_S
    assert budget.allows()  # a hidden window: no frames
