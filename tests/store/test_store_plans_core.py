"""Items in waves that may each be applied at once (`listener/store/_plans/core.py`)."""

from __future__ import annotations

from listener.store._plans import in_step_waves


def test_items_sharing_a_key_go_in_later_waves_in_order() -> None:
    keys = [("a", "x"), ("b", "y"), ("a", "z"), ("c", "y"), ("d", "w"), ("a", "w")]
    assert in_step_waves(keys) == [[0, 1, 4], [2, 3], [5]]


def test_items_with_no_shared_key_all_go_in_one_wave() -> None:
    assert in_step_waves([("a",), ("b",), ("c",)]) == [[0, 1, 2]]
    assert in_step_waves([]) == []
