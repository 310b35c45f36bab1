"""`lift3d.checks`: the one checker of the public entries, and the error it raises."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lift3d.checks import check_array, check_positive_finite
from lift3d.errors import InputError


def test_check_array_returns_the_array_itself():
    image = np.zeros((4, 5, 3), np.uint8)
    assert check_array(image, ["H", "W", 3], dtype=np.uint8, name="image") is image
    assert isinstance(check_array([[1, 2], [3, 4]], [2, 2]), np.ndarray)


@pytest.mark.parametrize(
    "shape, found",
    [
        (["H", "W", 3], (4, 5, 3)),
        (["N", 2, "N"], (3, 2, 3)),
        (["*", 3], (3,)),
        (["*", 3], (2, 7, 3)),
        (["*", "H", "W"], (6, 6)),
        ([], ()),
    ],
)
def test_shapes_that_fit(shape, found):
    check_array(np.zeros(found), shape)


@pytest.mark.parametrize(
    "shape, found",
    [
        (["H", "W", 3], (4, 5)),  # an axis missing
        (["H", "W", 3], (4, 5, 4)),  # a wrong size
        (["H", "W", 3], (1, 4, 5, 3)),  # an axis too many
        (["N", 2, "N"], (3, 2, 4)),  # a name bound to two sizes
        (["*", 2, 3], (3,)),  # fewer axes than the fixed ones
    ],
)
def test_shapes_that_do_not_fit_name_expected_and_found(shape, found):
    with pytest.raises(InputError) as e:
        check_array(np.zeros(found, np.float32), shape, name="points")
    msg = str(e.value)
    assert msg.startswith("points must be [") and f"got {list(found)} float32" in msg
    assert "[" + ", ".join(str(s) for s in shape) + "]" in msg


def test_dtypes_exact_and_by_kind():
    check_array(np.zeros(3, np.uint16), ["N"], dtype="iu")
    check_array(np.zeros(3, np.float64), ["N"], dtype="f")
    check_array(np.zeros(3, bool), ["N"], dtype=bool)
    with pytest.raises(
        InputError, match=r"image must be \[H, W, 3\] uint8, got \[2, 2, 3\] float32"
    ):
        check_array(np.zeros((2, 2, 3), np.float32), ["H", "W", 3], dtype=np.uint8, name="image")
    with pytest.raises(InputError, match=r"labels must be \[N\] integer, got \[3\] float64"):
        check_array(np.zeros(3), ["N"], dtype="iu", name="labels")


def test_check_array_names_the_file():
    with pytest.raises(InputError) as e:
        check_array(np.zeros(2), [3], name="K", path="intrinsic.txt")
    assert str(e.value.path) == "intrinsic.txt"
    assert str(e.value).startswith("intrinsic.txt: K must be [3]")


@pytest.mark.parametrize("value", [0.02, 1, np.float32(0.5), np.int64(3)])
def test_positive_finite_numbers_pass(value):
    assert check_positive_finite(value, "eps") == value


@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, -math.inf, True, "0.02", None])
def test_not_positive_finite(value):
    with pytest.raises(
        InputError, match=r"^--eps must be a positive finite number of metres, got "
    ):
        check_positive_finite(value, "--eps", unit="metres")


def test_zero_allowed_when_asked():
    assert check_positive_finite(0.0, "--fill-radius", allow_zero=True) == 0.0
    with pytest.raises(
        InputError, match=r"--fill-radius must be a finite number of metres >= 0, got -0.1"
    ):
        check_positive_finite(-0.1, "--fill-radius", unit="metres", allow_zero=True)
