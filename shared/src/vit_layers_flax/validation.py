"""Input and configuration checks with one message format.

Every model validates its input once, at the top of ``__call__``, with
:func:`check_images`. The checks read only static shapes, so they raise at trace
time (under ``jax.jit``, ``jax.eval_shape`` or ``init``) and cost nothing at run time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def pair(value: T | tuple[T, T]) -> tuple[T, T]:
    """``7 -> (7, 7)``; a 2-tuple is returned unchanged (vit-pytorch's ``pair``)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"expected an int or a pair of ints, received {value!r}")
        return tuple(value)  # type: ignore[return-value]
    return (value, value)


def cast_tuple(value: T | Sequence[T], length: int) -> tuple[T, ...]:
    """Broadcast a scalar to a tuple of ``length``; a sequence must already have it."""
    if isinstance(value, (tuple, list)):
        if len(value) != length:
            raise ValueError(f"expected {length} values, received {len(value)}: {value!r}")
        return tuple(value)
    return (value,) * length


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0) -> int:
    """The output length of a convolution (or unfold, or pooling) along one axis, as torch's:
    ``(size + 2 * padding - kernel_size) // stride + 1``."""
    return (size + 2 * padding - kernel_size) // stride + 1


@dataclasses.dataclass(frozen=True)
class InputSizes:
    """Image heights a model configuration accepts: ``minimum``, ``minimum + step``,
    ``minimum + 2 * step`` ... (``step == 0``: ``minimum`` only); ``width`` the widths, where
    they differ (``None``: as the heights). Every listed size is accepted; a model whose
    strided convolutions round may accept a few sizes more.

    Every model's ``input_sizes()`` returns one; ``smallest_shape`` is a valid ``(height,
    width)`` for shape-only work (conversion, ``jax.eval_shape``): no parameter depends on it.
    """

    minimum: int
    step: int = 0
    width: InputSizes | None = None

    @classmethod
    def fixed(cls, image_size: int | tuple[int, int]) -> InputSizes:
        """Exactly ``image_size`` (an int or ``(height, width)``)."""
        height, width = pair(image_size)
        return cls(height, 0, None if width == height else cls(width))

    def _accepts(self, size: object) -> bool:
        if not isinstance(size, int) or size < self.minimum:
            return False
        return size == self.minimum if self.step == 0 else (size - self.minimum) % self.step == 0

    def accepts(self, height: int, width: int) -> bool:
        return self._accepts(height) and (self.width or self)._accepts(width)

    def __contains__(self, size: object) -> bool:
        """``side in sizes`` for square images, ``(height, width) in sizes`` for any."""
        return self.accepts(*size) if isinstance(size, tuple) else self.accepts(size, size)

    @property
    def smallest(self) -> int:
        """The smallest height (and side, for models whose heights and widths agree)."""
        return self.minimum

    @property
    def smallest_shape(self) -> tuple[int, int]:
        return (self.minimum, (self.width or self).minimum)


def check_config(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` for an invalid model configuration."""
    if not condition:
        raise ValueError(message)


def _fmt(dims: Sequence[object]) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"


def check_images(
    images,
    *,
    channels: int,
    image_size: tuple[int, int] | None = None,
    multiple_of: tuple[int, int] | None = None,
    name: str = "model",
) -> tuple[int, int, int, int]:
    """Check that ``images`` (an array or ``jax.ShapeDtypeStruct``) is an NHWC batch this
    model can take, and return its shape.

    ``channels`` is the configured last axis; ``image_size`` the ``(height, width)`` the model
    is fixed to (``None``: any size); ``multiple_of`` what height and width must divide by;
    ``name`` the model's, for the ``ValueError`` naming the expected and the received shape.
    """
    shape = tuple(images.shape)
    height, width = image_size if image_size is not None else ("height", "width")
    expected = _fmt(("batch", height, width, channels))

    def fail(reason: str) -> None:
        raise ValueError(
            f"{name}: expected images of shape {expected} (NHWC), received shape {shape}: {reason}"
        )

    if len(shape) != 4:
        fail(f"rank {len(shape)} instead of 4 (a batch axis is required)")
    if shape[-1] != channels:
        hint = ""
        if shape[1] == channels:
            hint = "; this looks channels-first (NCHW), transpose it with x.transpose(0, 2, 3, 1)"
        fail(f"{shape[-1]} channels on the last axis instead of {channels}{hint}")
    if image_size is not None and tuple(shape[1:3]) != tuple(image_size):
        fail(f"spatial size {_fmt(shape[1:3])} instead of the configured {_fmt(image_size)}")
    if multiple_of is not None and (shape[1] % multiple_of[0] or shape[2] % multiple_of[1]):
        fail(f"spatial size {_fmt(shape[1:3])} is not divisible by {_fmt(multiple_of)}")
    return shape  # type: ignore[return-value]


def check_stage_size(
    images,
    *,
    stage: int,
    size: tuple[int, int],
    window: int | tuple[int, int],
    what: str = "window",
    name: str = "model",
) -> None:
    """Check, at trace time, that a stage's ``size = (height, width)`` feature map splits into
    whole ``window`` tiles (windows, strides, patches: ``what`` names it in the message).

    ``images`` (the model's input, for the message), ``stage`` (1-based) and ``name`` (the
    model's) make the ``ValueError`` say which input gave which stage which map.
    """
    wh, ww = pair(window)
    h, w = size
    if h % wh or w % ww:
        raise ValueError(
            f"{name}: images of shape {tuple(images.shape)} give stage {stage} a {h}x{w} feature map, "
            f"but its {what} is {wh}x{ww}: expected a feature map whose height is a multiple of {wh} "
            f"and width a multiple of {ww}"
        )
