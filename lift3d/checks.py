"""One checker for the arrays and numbers that come in at the public entries.

Modelled on kornia's `KORNIA_CHECK_SHAPE(x, ["*", "H", "W"])`: a shape is written as a list with
one entry per axis, and a mismatch raises `InputError` saying what was expected and what was
found. Public functions and readers check their inputs with these; internals trust them.

```python
image = check_array(image, ["H", "W", 3], dtype=np.uint8, name="image")
points = check_array(points, ["*", 3], dtype="f", name="points_world")
eps = check_positive_finite(eps, "eps", unit="metres")
```
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lift3d.errors import InputError

#: dtype kinds `check_array` accepts by letter, as numpy's `dtype.kind` spells them
_KINDS = {
    "f": "float",
    "i": "signed integer",
    "u": "unsigned integer",
    "iu": "integer",
    "b": "bool",
}


def check_array(
    x,
    shape: Sequence[int | str],
    *,
    dtype: np.dtype | type | str | None = None,
    name: str = "array",
    path: str | Path | None = None,
) -> np.ndarray:
    """`x` as an array of the given shape (and dtype), else an `InputError` that says both.

    Args:
        x: the input (an array, or anything `np.asarray` takes).
        shape: one entry per axis: an int (exactly that size), a name such as `"H"` (any size,
            the same size wherever the name recurs in `shape`), or `"*"` as the first entry (any
            number of leading axes, none included).
        dtype: `None` (any), a numpy dtype the array must have exactly (`np.uint8`), or dtype
            kinds as numpy's `dtype.kind` letters (`"f"` floating, `"iu"` integer, `"b"` bool).
        name: the argument's name, for the message.
        path: the file the array was read from, when there is one (named by the error).

    Returns:
        `np.asarray(x)`: no copy, no conversion.

    Raises:
        InputError: `"{name} must be [H, W, 3] uint8, got [480, 640] float32"`.
    """
    arr = np.asarray(x)
    if not _shape_fits(arr.shape, shape) or not _dtype_fits(arr.dtype, dtype):
        want = _format_shape(shape) + ("" if dtype is None else f" {_format_dtype(dtype)}")
        raise InputError(path, f"{name} must be {want}, got {list(arr.shape)} {arr.dtype}")
    return arr


def check_positive_finite(
    value,
    name: str,
    *,
    unit: str | None = None,
    allow_zero: bool = False,
    path: str | Path | None = None,
) -> float:
    """A finite real number > 0 (>= 0 with `allow_zero`), else an `InputError`.

    Booleans are refused (True is no radius); numpy scalars are numbers.

    Args:
        value: the input.
        name: the argument's (or the CLI flag's) name, for the message.
        unit: what the number counts (`"metres"`), for the message.
        allow_zero: accept 0 (a radius of 0 turns something off).
        path: the file the number was read from, when there is one.

    Returns:
        `value`, unchanged.

    Raises:
        InputError: `"eps must be a positive finite number of metres, got nan"`.
    """
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool | np.bool_)
        and math.isfinite(value)
    )
    if ok and (value >= 0 if allow_zero else value > 0):
        return value
    of = f" of {unit}" if unit else ""
    want = f"a finite number{of} >= 0" if allow_zero else f"a positive finite number{of}"
    raise InputError(path, f"{name} must be {want}, got {value!r}")


def _shape_fits(found: tuple[int, ...], shape: Sequence[int | str]) -> bool:
    shape = list(shape)
    if shape[:1] == ["*"]:
        shape = shape[1:]
        if len(found) < len(shape):
            return False
        found = found[len(found) - len(shape) :]
    elif len(found) != len(shape):
        return False
    sizes: dict[str, int] = {}
    for want, got in zip(shape, found):
        if isinstance(want, str):
            if sizes.setdefault(want, got) != got:
                return False
        elif want != got:
            return False
    return True


def _dtype_fits(found: np.dtype, dtype) -> bool:
    if dtype is None:
        return True
    if isinstance(dtype, str) and dtype in _KINDS:
        return found.kind in dtype
    return found == np.dtype(dtype)


def _format_shape(shape: Sequence[int | str]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _format_dtype(dtype) -> str:
    if isinstance(dtype, str) and dtype in _KINDS:
        return _KINDS[dtype]
    return str(np.dtype(dtype))
