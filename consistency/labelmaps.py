"""Label maps on disk: one 16-bit indexed PNG per frame, named like the input frame.

`0` is unlabeled, `1..K` are object IDs shared by all views (DESIGN.md). 16 bits hold 65,535
IDs; a run that would exceed that is an error, never a silent wrap-around.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from lift3d.errors import InputError
from lift3d.recon.files import atomic_path


def write_label_map(path: str | Path, labels: np.ndarray) -> None:
    """Write a [H, W] integer label map as a 16-bit PNG, atomically."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"label map must be [H, W], got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise ValueError(f"label IDs must lie in 0..65535, got {labels.min()}..{labels.max()}")
    with atomic_path(path) as tmp:
        Image.fromarray(labels.astype(np.uint16)).save(tmp, format="PNG")


def read_label_map(path: str | Path) -> np.ndarray:
    """[H, W] int32 label map from a PNG written by `write_label_map` (or any 8/16-bit PNG)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except FileNotFoundError:
        raise InputError(path, "label map not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(path, f"cannot decode label map ({e})") from None
    if arr.ndim != 2:
        raise InputError(path, f"label map must have one channel, found shape {arr.shape}")
    return arr.astype(np.int32)


def read_label_maps(
    folder: str | Path,
    frame_names: list[str],
    *,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """[N, H, W] int32 label maps of the named frames from `folder/<name>.png`.

    Args:
        folder: the masks folder.
        frame_names: the frames wanted, in order (the scene's).
        size: expected (W, H); every map must have it (default: the first map's size).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "masks folder not found")
    missing = [n for n in frame_names if not (folder / f"{n}.png").is_file()]
    if missing:
        raise InputError(
            folder,
            f"{len(missing)} of {len(frame_names)} frames have no label map, e.g. "
            + ", ".join(f"{n}.png" for n in missing[:5]),
        )
    maps = []
    for n in frame_names:
        m = read_label_map(folder / f"{n}.png")
        if size is None:
            size = (m.shape[1], m.shape[0])
        if (m.shape[1], m.shape[0]) != tuple(size):
            raise InputError(
                folder / f"{n}.png", f"label map is {m.shape[1]}x{m.shape[0]}, expected {size[0]}x{size[1]}"
            )
        maps.append(m)
    return np.stack(maps) if maps else np.zeros((0, 0, 0), np.int32)
