"""Reading the files scenes are made of (images, depth PNGs, matrices), with errors that name them.

Every reader goes through these, so a corrupt JPEG, a pose that is not 4x4 or an intrinsics file
of zeros is reported as one line with the file and the problem, never as a traceback from PIL or
numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from lift3d.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path: Path) -> np.ndarray:
    """[H, W, 3] uint8 RGB image."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise InputError(path, "image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(path, f"cannot decode image ({e.__class__.__name__}: {e})") from None


def read_depth_png(path: Path, *, scale: float = 1000.0) -> np.ndarray:
    """[h, w] float32 metres from a 16-bit depth PNG in units of 1/scale metres (0 = missing)."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except FileNotFoundError:
        raise InputError(path, "depth file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(path, f"cannot decode depth image ({e.__class__.__name__}: {e})") from None
    if arr.ndim != 2:
        raise InputError(path, f"depth image must have one channel, found shape {arr.shape}")
    if arr.dtype.kind not in "ui":
        raise InputError(
            path, f"depth image must be integer (16-bit millimetres), found {arr.dtype}"
        )
    return arr.astype(np.float32) / scale


def read_matrix(path: Path, shape: tuple[int, int] = (4, 4)) -> np.ndarray:
    """A whitespace-separated matrix text file of the given shape, as float64."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read ({e})") from None
    try:
        values = [float(x) for x in text.split()]
    except ValueError:
        raise InputError(path, f"expected a {shape[0]}x{shape[1]} matrix of numbers") from None
    if len(values) != shape[0] * shape[1]:
        raise InputError(
            path,
            f"expected a {shape[0]}x{shape[1]} matrix ({shape[0] * shape[1]} numbers), found {len(values)} numbers",
        )
    return np.array(values, dtype=np.float64).reshape(shape)


def check_intrinsics(K: np.ndarray, path: Path) -> np.ndarray:
    """[3, 3] intrinsics with positive focal lengths, else an error naming the file."""
    K = np.asarray(K, np.float64)[:3, :3]
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(
            path, f"intrinsics need finite positive focal lengths, found fx={K[0, 0]} fy={K[1, 1]}"
        )
    return K


def pose_problem(T_world_camera: np.ndarray, *, tol: float = 1e-3) -> str | None:
    """Why a [4, 4] cam2world is not a usable camera pose (None: it is one).

    A rotation part that is not orthonormal with det +1 (all zeros, a scale, a mirror) would put
    every point of the frame in the wrong place without any other sign, so such frames are
    dropped like the non-finite poses of lost tracking. `tol` bounds |R^T R - I| and |det R - 1|
    (text files round to ~6 digits).
    """
    T = np.asarray(T_world_camera, np.float64)
    if not np.all(np.isfinite(T)):
        return "non-finite pose (tracking lost)"
    R = T[:3, :3]
    if np.abs(R.T @ R - np.eye(3)).max() > tol or abs(np.linalg.det(R) - 1) > tol:
        return "pose is not rigid (its rotation part is not orthonormal with det +1)"
    if np.abs(T[3] - (0, 0, 0, 1)).max() > tol:
        return "pose's last row is not 0 0 0 1"
    return None


def image_size(path: Path) -> tuple[int, int]:
    """(W, H) of an image file, from its header only."""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(path, f"cannot decode image ({e.__class__.__name__}: {e})") from None


def numeric_sort_key(name: str) -> tuple:
    """Sort `2.jpg` before `10.jpg`, and non-numeric names after, alphabetically."""
    stem = Path(name).stem
    digits = "".join(c for c in stem if c.isdigit())
    return (0, int(digits), stem) if digits and stem.lstrip("frame_-").isdigit() else (1, 0, stem)


def list_images(folder: Path) -> list[Path]:
    """Image files in a folder, sorted numerically when their names are numbers."""
    # hidden files are not frames (a killed write leaves `.NAME.tmp.png`; macOS leaves `._NAME`)
    files = [
        p
        for p in Path(folder).iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(files, key=lambda p: numeric_sort_key(p.name))
