"""The project's errors, and the small argument checks that models share.

Models and networks raise :class:`InvalidArgument` naming the constructor argument they reject;
only the builder (:mod:`lit_ebm.build`) knows which config key the value came from. Anything a
user must fix in the settings or the files they point to is a :class:`ConfigError`, which the
command lines print as one line and exit with :data:`EXIT_USAGE`.
"""

from __future__ import annotations

from collections.abc import Sequence

EXIT_USAGE = 2
EXIT_TRAINING_FAILED = 1


class ConfigError(ValueError):
    """Something the user must fix in the configuration (or in files it points to)."""


class InvalidArgument(ValueError):
    """A constructor argument that a model rejects; ``argument`` is the parameter's name."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; training stops before the bad update is applied."""


class NonFiniteSamplesError(NonFiniteLossError):
    """A generator drew samples holding NaN or infinite values."""


def require(condition: bool, argument: str, message: str) -> None:
    """Raise :class:`InvalidArgument` for ``argument`` with ``message`` unless ``condition``."""
    if not condition:
        raise InvalidArgument(argument, message)


def require_positive_int(argument: str, value: object, example: str | None = None) -> None:
    """Refuse anything but a positive ``int`` (``bool`` included) for ``argument``."""
    require(not isinstance(value, bool) and isinstance(value, int) and value >= 1, argument,
            f"{argument} must be a positive integer, got {value!r}; pass e.g. "
            f"{example or argument + '=2'}")


def require_image_shape(image_shape: Sequence[int], model: str) -> tuple[int, int, int]:
    """``image_shape`` as ``(C, H, W)`` of positive ints, or :class:`InvalidArgument`."""
    shape = tuple(image_shape)
    require(len(shape) == 3, "image_shape", f"image_shape must be (C, H, W), got {shape!r}: "
            f"{model} models images; pass e.g. image_shape=(1, 28, 28)")
    for size in shape:
        require_positive_int("image_shape", size, "image_shape=(1, 28, 28)")
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(err)
    return text.splitlines()[0] if text else type(err).__name__


def describe_error(err: BaseException) -> str:
    """``Type: first line`` of an exception, for messages about files that cannot be read."""
    text = str(err)
    return f"{type(err).__name__}: {text.splitlines()[0] if text else 'no details'}"
