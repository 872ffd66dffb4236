"""Rules that config values must obey, declared beside their keys as field metadata.

A schema field is declared with :func:`setting`, naming the checks its value must pass; one walk,
:func:`check_settings`, applies them to any settings dataclass (a run's config, the evaluation
settings) and names the offending key in a :class:`~lit_ebm.errors.ConfigError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import field, fields, is_dataclass
from typing import Any

from lit_ebm.errors import ConfigError

Check = Callable[[Any], "str | None"]
"""A rule: ``None`` when the value is fine, else what was expected (e.g. "a positive number")."""


def setting(default: Any, *checks: Check) -> Any:
    """A dataclass field with its ``checks`` (a list default is copied for each instance)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"checks": checks})
    return field(default=default, metadata={"checks": checks})


def invalid(key: str, value: Any, expected: str) -> ConfigError:
    """The error for ``value`` at ``key``, saying what was expected."""
    return ConfigError(f"invalid value {value!r} for '{key}': expected {expected}")


def positive(value: Any) -> str | None:
    return None if value > 0 else "a positive number"


def non_negative(value: Any) -> str | None:
    return None if value >= 0 else "a number >= 0"


def at_least_two(value: Any) -> str | None:
    return None if value >= 2 else "a whole number >= 2"


def unit_interval(value: Any) -> str | None:
    return None if 0.0 <= value <= 1.0 else "a number in [0, 1]"


def decay(value: Any) -> str | None:
    """A moving average's decay: strictly between 0 (no memory) and 1 (never moves)."""
    return None if 0.0 < value < 1.0 else "a decay in (0, 1) such as 0.999, or null (off)"


def one_of(*options: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in options else f"one of {', '.join(options)}"
    return check


def optional(check: Check) -> Check:
    """``check``, with ``None`` allowed (the setting turned off, or left to its default)."""
    def checked(value: Any) -> str | None:
        return None if value is None else check(value)
    return checked


def betas(value: Any) -> str | None:
    ok = len(value) == 2 and all(0.0 <= b < 1.0 for b in value)
    return None if ok else "two numbers in [0, 1)"


def positive_numbers(value: Any) -> str | None:
    return None if all(v > 0 for v in value) else "positive numbers"


def batch_limit(smallest: int) -> Check:
    """A number of batches (int, at least ``smallest``) or a fraction of them (float)."""
    def check(value: Any) -> str | None:
        if isinstance(value, float):
            valid = 0.0 < value <= 1.0 or (smallest == 0 and value == 0.0)
            return None if valid else f"a fraction in {'[0' if smallest == 0 else '(0'}, 1]"
        return None if value >= smallest else f"a number of batches >= {smallest}"
    return check


def devices(value: Any) -> str | None:
    """Lightning's ``devices``: a count, -1 (all), 'auto' or a list of indices."""
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)
    listed = isinstance(value, list) and value and all(is_int(d) and d >= 0 for d in value)
    counted = is_int(value) and (value >= 1 or value == -1)
    if value == "auto" or counted or listed:
        return None
    return ("a positive number of devices, -1 (all), 'auto', or a list of device indices such "
            "as [0, 1]")


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any, tuple[Check, ...]]]:
    """Every leaf of a settings dataclass as (dotted key, value, checks)."""
    for item in fields(node):
        key, value = f"{prefix}{item.name}", getattr(node, item.name)
        if is_dataclass(value):
            yield from _leaves(value, f"{key}.")
        else:
            yield key, value, item.metadata.get("checks", ())


def _finite(value: Any) -> bool:
    numbers = value if isinstance(value, list) else [value]
    return all(math.isfinite(v) for v in numbers if isinstance(v, float))


def check_settings(settings: Any, name_of: Callable[[str], str] = str) -> None:
    """Apply every field's checks, and refuse nan and inf anywhere; ``name_of`` turns a dotted
    key into what the user typed (a config key, or a command-line flag)."""
    for key, value, checks in _leaves(settings):
        if not _finite(value):
            raise invalid(name_of(key), value, "a finite number (nan and inf are not settings; "
                          "use null where the key allows turning it off)")
        for check in checks:
            if (expected := check(value)) is not None:
                raise invalid(name_of(key), value, expected)
