"""Argument checks shared by the public API."""

from __future__ import annotations

import math


def positive_finite(name: str, value: object, accepted: str = "a number") -> float:
    """Return ``value`` as a float if it is a finite number > 0.

    Raises:
        TypeError: if ``value`` is not a number (``accepted`` says what is).
        ValueError: if it is not finite or not > 0.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {accepted}, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value
