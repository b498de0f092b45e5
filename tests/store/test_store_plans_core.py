"""Driving plans: one at a time, and several in step (`listener/store/_plans/core.py`)."""

from __future__ import annotations

from typing import Any

import pytest

from listener.store._plans import Plan, Stmt, drive, drive_together, in_step_waves


def test_items_sharing_a_key_go_in_later_waves_in_order() -> None:
    keys = [("a", "x"), ("b", "y"), ("a", "z"), ("c", "y"), ("d", "w"), ("a", "w")]
    assert in_step_waves(keys) == [[0, 1, 4], [2, 3], [5]]


def test_items_with_no_shared_key_all_go_in_one_wave() -> None:
    assert in_step_waves([("a",), ("b",), ("c",)]) == [[0, 1, 2]]
    assert in_step_waves([]) == []


def counter_plan(name: str, steps: int) -> Plan[list[Any]]:
    """Yields `steps` statements and returns the rows it was sent for each."""
    seen: list[Any] = []
    for step in range(steps):
        rows = yield (f"{name}-{step}", [name, step])
        seen.append(rows)
    return seen


def test_plans_in_step_get_their_own_rows_and_values() -> None:
    rounds: list[list[Stmt]] = []

    def run_all(stmts: list[Stmt]) -> list[list[Any]]:
        rounds.append(stmts)
        return [[{"sql": sql}] for sql, _ in stmts]

    values = drive_together(
        [counter_plan("a", 3), counter_plan("b", 1), counter_plan("c", 0)], run_all
    )
    # One round per step of the longest plan; each round holds the plans still going.
    assert [[sql for sql, _ in stmts] for stmts in rounds] == [["a-0", "b-0"], ["a-1"], ["a-2"]]
    assert values == [
        [[{"sql": "a-0"}], [{"sql": "a-1"}], [{"sql": "a-2"}]],
        [[{"sql": "b-0"}]],
        [],
    ]


def test_plans_in_step_return_what_each_would_alone() -> None:
    def run(sql: str, params: list[Any]) -> list[Any]:
        return [{"sql": sql, "params": params}]

    def run_all(stmts: list[Stmt]) -> list[list[Any]]:
        return [run(*stmt) for stmt in stmts]

    alone = [drive(counter_plan(name, n), run) for name, n in (("a", 2), ("b", 4))]
    assert drive_together([counter_plan("a", 2), counter_plan("b", 4)], run_all) == alone


def test_a_failing_statement_stops_the_plans_in_step() -> None:
    def run_all(stmts: list[Stmt]) -> list[list[Any]]:
        if any(sql == "b-1" for sql, _ in stmts):
            raise RuntimeError("constraint")
        return [[] for _ in stmts]

    with pytest.raises(RuntimeError, match="constraint"):
        drive_together([counter_plan("a", 3), counter_plan("b", 3)], run_all)
