"""Checks shared by the settings classes: each error names the field and the value."""

from __future__ import annotations

__all__ = ["at_least", "flag", "positive", "whole"]


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return value


def positive(name: str, value: object) -> None:
    """`value` is a number above zero (NaN is not)."""
    if not _number(name, value) > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")


def at_least(name: str, value: object, low: float) -> None:
    """`value` is a number of at least `low` (NaN is not)."""
    if not _number(name, value) >= low:
        raise ValueError(f"{name} must be at least {low:g}, got {value!r}")


def whole(name: str, value: object, low: int = 1) -> None:
    """`value` is a whole number (not a bool) of at least `low`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be at least {low}, got {value!r}")


def flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
