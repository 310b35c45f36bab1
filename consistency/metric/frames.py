"""The metric's input, one view at a time (`FrameSource`), and its first pass: the spill file.

`consistency_score` reads every view once, in order, checks it and appends its labeled points
to one spill file; nothing of a view stays in memory but its label set and point count. In-memory
arrays are one more source (`ArrayFrames`), checked whole at the edge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from lift3d.errors import InputError


class FrameSource(Protocol):
    """Views of one scene, read one at a time.

    `frames[i]` -> (pointmap [H, W, 3] float world metres, valid [H, W] bool, values), where
    values are labels [H, W] non-negative int (0 = unlabeled, IDs shared across views) or
    features [H, W, C] float (an all-zero vector = unlabeled), the same kind and size for every
    view. Invalid pixels may hold anything. Each view is read once, in order.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


class ArrayFrames:
    """A `FrameSource` over arrays already in memory.

    Args:
        pointmaps: [N, H, W, 3] world points of every view, metres; float (rounded to float32,
            the precision geometry has everywhere).
        valid: [N, H, W] bool, pixels whose point is known.
        labels: [N, H, W] non-negative integer IDs shared across views (0 = unlabeled); give
            exactly one of `labels` and `features`.
        features: [N, H, W, C] float per-pixel vectors (soft masks, CLIP/DINO-style features),
            compared by cosine; an all-zero vector marks the pixel unlabeled.

    Raises:
        InputError: shapes or dtypes disagree, or both or neither of labels and features.
    """

    def __init__(
        self,
        pointmaps: np.ndarray,
        valid: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        features: np.ndarray | None = None,
    ):
        pointmaps, valid = np.asarray(pointmaps), np.asarray(valid)
        if (
            pointmaps.ndim != 4
            or pointmaps.shape[-1] != 3
            or not np.issubdtype(pointmaps.dtype, np.floating)
        ):
            raise InputError(
                None,
                f"pointmaps must be float [N, H, W, 3], got {pointmaps.dtype} {pointmaps.shape}",
            )
        if valid.shape != pointmaps.shape[:3] or valid.dtype != bool:
            raise InputError(
                None,
                f"valid must be a bool [N, H, W] = {pointmaps.shape[:3]} array, got {valid.dtype} {valid.shape}",
            )
        if (labels is None) == (features is None):
            raise InputError(None, "give exactly one of labels and features")
        if labels is not None:
            values = np.asarray(labels)
            if values.shape != valid.shape or not np.issubdtype(values.dtype, np.integer):
                raise InputError(
                    None,
                    f"labels must be integer [N, H, W] = {valid.shape}, got {values.dtype} {values.shape}",
                )
        else:
            values = np.asarray(features)
            if (
                values.ndim != 4
                or values.shape[:3] != valid.shape
                or not np.issubdtype(values.dtype, np.floating)
            ):
                raise InputError(
                    None,
                    f"features must be float [N, H, W, C] with [N, H, W] = {valid.shape}, "
                    f"got {values.dtype} {values.shape}",
                )
        self.pointmaps, self.valid, self.values = pointmaps, valid, values

    def __len__(self) -> int:
        return len(self.valid)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.pointmaps[i], self.valid[i], self.values[i]


def point_dtype(channels: int) -> np.dtype:
    """One spilled point: world xyz (float32), flat pixel index frame * H * W + v * W + u, and its
    label (int64), or its unit feature vector ([C] float32) when channels > 0."""
    if channels:
        return np.dtype([("p", np.float32, 3), ("i", np.int64), ("f", np.float32, (channels,))])
    return np.dtype([("p", np.float32, 3), ("i", np.int64), ("l", np.int64)])


@dataclass
class Spilled:
    """What the pass over the views found (their points are in the spill file).

    Attributes:
        shape: (H, W) of every view.
        lo, hi: [3] float64 bounds of the labeled points.
        labels_of: per view, its sorted labels ([L_i] int64); None for features.
        counts: per view, its labeled points.
        channels: C of the features; 0 for labels.
    """

    shape: tuple[int, int]
    lo: np.ndarray
    hi: np.ndarray
    labels_of: list[np.ndarray] | None
    counts: list[int]
    channels: int

    @property
    def dtype(self) -> np.dtype:
        return point_dtype(self.channels)


def spill_frames(
    frames: FrameSource, path: Path, progress: Callable[[str, int, int], None] | None = None
) -> Spilled:
    """Read every view once, check it and append its labeled points to `path`.

    Raises:
        InputError: a view of another size or kind, a valid pixel with a non-finite point or
            feature, negative labels, or no pixel both valid and labeled.
    """
    N = len(frames)
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    shape = None
    channels = None
    labels_of, counts = [], []
    with open(path, "wb") as fh:
        for i in range(N):
            pm, valid, values = (np.asarray(a) for a in frames[i])
            if progress is not None:
                progress("frames", i + 1, N)
            if pm.ndim != 3 or pm.shape[-1] != 3 or not np.issubdtype(pm.dtype, np.floating):
                raise InputError(
                    None,
                    f"pointmap of frame {i} must be float [H, W, 3], got {pm.dtype} {pm.shape}",
                )
            if shape is None:
                shape = pm.shape[:2]
                channels = values.shape[-1] if values.ndim == 3 else 0
            if pm.shape[:2] != shape:
                raise InputError(
                    None,
                    f"pointmap of frame {i} is {pm.shape[:2]}, frame 0's {shape}: all frames one size",
                )
            if valid.shape != shape or valid.dtype != bool:
                raise InputError(
                    None,
                    f"valid of frame {i} must be a bool {shape} array, got {valid.dtype} {valid.shape}",
                )
            if channels == 0 and (
                values.shape != shape or not np.issubdtype(values.dtype, np.integer)
            ):
                raise InputError(
                    None,
                    f"labels of frame {i} must be integer {shape}, got {values.dtype} {values.shape}",
                )
            if channels and (
                values.shape != (*shape, channels) or not np.issubdtype(values.dtype, np.floating)
            ):
                raise InputError(
                    None,
                    f"features of frame {i} must be float {(*shape, channels)} like frame 0's, "
                    f"got {values.dtype} {values.shape}",
                )
            pts = pm.reshape(-1, 3).astype(np.float32, copy=False)
            v = valid.reshape(-1)
            bad = v & ~np.isfinite(pts).all(axis=1)
            if bad.any():
                j = int(np.flatnonzero(bad)[0])
                raise InputError(
                    None,
                    f"pointmaps: {int(bad.sum())} valid pixel(s) of frame {i} have non-finite "
                    f"points, e.g. pixel (u={j % shape[1]}, v={j // shape[1]})",
                )
            if channels:
                f = values.reshape(v.size, channels)
                if not np.isfinite(f[v]).all():
                    raise InputError(
                        None, f"features of frame {i} hold non-finite values in valid pixels"
                    )
                sel = np.flatnonzero(v & (f != 0).any(axis=1))
            else:
                lab = values.reshape(-1)
                if lab.size and lab.min() < 0:
                    raise InputError(
                        None, f"labels of frame {i} are negative (0 = unlabeled, 1.. = IDs)"
                    )
                sel = np.flatnonzero(v & (lab > 0))
            rec = np.empty(len(sel), point_dtype(channels))
            rec["p"] = pts[sel]
            rec["i"] = sel + i * v.size
            if channels:
                rec["f"] = _unit(f[sel])
            else:
                rec["l"] = lab[sel]
                labels_of.append(np.unique(lab[sel]).astype(np.int64))
            rec.tofile(fh)
            counts.append(len(sel))
            if len(sel):
                p = rec["p"].astype(np.float64)
                lo = np.minimum(lo, p.min(axis=0))
                hi = np.maximum(hi, p.max(axis=0))
    if not sum(counts):
        raise InputError(None, "no pixel is both valid and labeled: nothing to measure")
    return Spilled(
        shape=tuple(shape),
        lo=lo,
        hi=hi,
        labels_of=None if channels else labels_of,
        counts=counts,
        channels=channels,
    )


def _unit(f: np.ndarray) -> np.ndarray:
    """[n, C] float32 unit vectors of [n, C] nonzero vectors (normalised in float64, then rounded)."""
    out = np.empty(f.shape, np.float32)
    step = 1 << 20
    for i in range(0, len(f), step):
        g = f[i : i + step].astype(np.float64)
        out[i : i + step] = g / np.linalg.norm(g, axis=1, keepdims=True)
    return out
