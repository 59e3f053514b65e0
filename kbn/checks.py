"""Argument checks shared by kbn and its study.

Each check returns the value, converted (`int`, `float`), or raises with the
house message: what was wrong, what was expected, and the received value,

    Invalid value for argument momentum. Expected a float in [0, 1].
    Received: momentum=1.5

`TypeError` when the value has the wrong type, `ValueError` when it has the
right type and is out of range. Booleans are not numbers here.

It must not import Keras (the checks run before anything is built).
"""

import math
import numbers


def is_int(value):
    """Whether `value` is an integer (a `bool` is not)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value):
    """Whether `value` is a real number (a `bool` is not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def fail(name, value, expected, error=ValueError):
    """Raises `error` with the house message for argument `name`."""
    raise error(
        f"Invalid value for argument {name}. Expected {expected}. "
        f"Received: {name}={value!r}"
    )


def check_int(value, name, minimum=1, maximum=None):
    """An int in `[minimum, maximum]` (`minimum=None`: no lower bound)."""
    expected = _range_text("an int", minimum, maximum)
    if not is_int(value):
        fail(name, value, expected, TypeError)
    if (minimum is not None and value < minimum) or (
        maximum is not None and value > maximum
    ):
        fail(name, value, expected)
    return int(value)


def check_optional_int(value, name, minimum=1, maximum=None):
    """`None`, or an int as `check_int`."""
    if value is None:
        return None
    return check_int(value, name, minimum, maximum)


def check_float(value, name, minimum=None, maximum=None, positive=False):
    """A finite real number, converted to `float`.

    Args:
        value: The value to check.
        name: The argument's name, for the message.
        minimum, maximum: Optional inclusive bounds.
        positive: Require `value > 0`.
    """
    if positive:
        expected = "a positive float"
    else:
        expected = _range_text("a float", minimum, maximum)
    if not is_real(value):
        fail(name, value, expected, TypeError)
    if not math.isfinite(value) or (positive and not value > 0):
        fail(name, value, expected)
    if (minimum is not None and value < minimum) or (
        maximum is not None and value > maximum
    ):
        fail(name, value, expected)
    return float(value)


def check_choice(value, name, choices):
    """One of `choices`."""
    if value not in choices:
        fail(name, value, f"one of {sorted(choices)}")
    return value


def _range_text(kind, minimum, maximum):
    if minimum == 1 and maximum is None and kind == "an int":
        return "a positive int"
    if minimum == 0 and maximum is None and kind == "an int":
        return "a non-negative int"
    if minimum is not None and maximum is not None:
        return f"{kind} in [{minimum}, {maximum}]"
    if minimum is not None:
        return f"{kind} >= {minimum}"
    if maximum is not None:
        return f"{kind} <= {maximum}"
    return kind
