"""Type aliases shared by every module."""

from typing import Any

import jax

Array = jax.Array
Dtype = Any  # a numpy / jax dtype such as jnp.float32 or jnp.bfloat16
Shape = tuple[int, ...]
