"""The consecutive-frame consistency H of a run without geometry, streamed frame by frame.

Video and photo sequences tracked through optical flow have no 3D points, so the exact metric H
(epsilon-balls in world space) has nothing to measure; their H is the DAVIS evaluation's
(`lift3d.consistency.davis.consecutive_consistency`): the share of correspondences (p, q) from
frame t to frame t + 1, both pixels labeled, with the same ID. Here it holds two label maps at a
time, whatever the length of the video.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ConsecutiveScore:
    """H over consecutive frames, and what it was computed from."""

    H: float
    """Share of labeled-to-labeled correspondences with the same ID (NaN when there is none)."""
    matches: int
    """Correspondences joining two labeled pixels, pooled over all pairs."""
    per_pair: list[float | None] = field(default_factory=list)
    """The share of each pair (t, t + 1), None where no correspondence joins two labeled pixels."""

    def to_json(self) -> dict:
        return {
            "H": None if not np.isfinite(self.H) else self.H,
            "metric": "consecutive-frame consistency: share of optical-flow correspondences (t -> t+1) "
            "between labeled pixels that keep their ID (no geometry: no epsilon-ball H)",
            "matches": self.matches,
            "H_per_pair": self.per_pair,
        }


def _agreement(
    a_map: np.ndarray, b_map: np.ndarray, uv_i: np.ndarray, uv_j: np.ndarray
) -> tuple[int, int]:
    H, W = a_map.shape
    uv_i = np.asarray(uv_i, np.float64).reshape(-1, 2)
    uv_j = np.asarray(uv_j, np.float64).reshape(-1, 2)
    ui, vi = np.rint(uv_i[:, 0]).astype(np.int64), np.rint(uv_i[:, 1]).astype(np.int64)
    uj, vj = np.rint(uv_j[:, 0]).astype(np.int64), np.rint(uv_j[:, 1]).astype(np.int64)
    inside = (
        (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H) & (uj >= 0) & (uj < W) & (vj >= 0) & (vj < H)
    )
    a = a_map[vi[inside], ui[inside]]
    b = b_map[vj[inside], uj[inside]]
    both = (a > 0) & (b > 0)
    return int(np.count_nonzero(a[both] == b[both])), int(np.count_nonzero(both))


def consecutive_score(
    label_maps: Iterable[np.ndarray],  # each [H, W] int, 0 = unlabeled, in frame order
    matches: Callable[
        [int], tuple[np.ndarray, np.ndarray, np.ndarray]
    ],  # t -> (uv_t, uv_t+1, conf)
) -> ConsecutiveScore:
    """The consecutive-frame H of a sequence of label maps, two maps in memory at a time.

    Args:
        label_maps: the run's label maps in frame order.
        matches: correspondences from frame t to frame t + 1 (pixels (u, v), rounded to the
            nearest pixel centre), e.g. the flow provider the tracker used.
    """
    same = total = 0
    per_pair: list[float | None] = []
    prev = None
    for t, lab in enumerate(label_maps):
        lab = np.asarray(lab)
        if prev is not None:
            uv_i, uv_j, _ = matches(t - 1)
            s, n = _agreement(prev, lab, uv_i, uv_j)
            same += s
            total += n
            per_pair.append(s / n if n else None)
        prev = lab
    return ConsecutiveScore(
        H=same / total if total else float("nan"), matches=total, per_pair=per_pair
    )
