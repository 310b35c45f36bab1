"""The metric by its definition, by brute force over all pairs: what `consistency_score` is held to.

Tiny inputs only (memory grows with the square of the labeled pixels). It shares no code with the
fast path but the input checks of `ArrayFrames`.
"""

from __future__ import annotations

import numpy as np

from lift3d.consistency.metric.config import MetricConfig, MetricResult
from lift3d.consistency.metric.frames import ArrayFrames
from lift3d.errors import InputError


def consistency_score_reference(
    pointmaps: np.ndarray,  # [N, H, W, 3] float world metres
    valid: np.ndarray,  # [N, H, W] bool
    labels: np.ndarray | None = None,  # [N, H, W] int, 0 = unlabeled
    *,
    features: np.ndarray | None = None,  # [N, H, W, C] float, all-zero = unlabeled
    eps: float = 0.02,
    per_pixel: bool = False,
) -> MetricResult:
    """H, per-frame h and (labels) pairwise from every pair of pixels and of correspondences.

    Raises:
        InputError: as `consistency_score` for these arrays.
    """
    MetricConfig(eps=eps).check()
    src = ArrayFrames(pointmaps, valid, labels, features=features)
    N, H, W = src.valid.shape
    pm = src.pointmaps.astype(np.float32)
    if not np.isfinite(pm[src.valid]).all():
        raise InputError(None, "pointmaps: valid pixels have non-finite points")
    if features is None:
        lab = np.asarray(labels).reshape(-1)
        if lab.size and lab.min() < 0:
            raise InputError(None, "labels are negative (0 = unlabeled, 1.. = IDs)")
        sel = src.valid.reshape(-1) & (lab > 0)
    else:
        F = np.asarray(features).reshape(N * H * W, -1)
        sel = src.valid.reshape(-1) & (F != 0).any(axis=1)
    if not sel.any():
        raise InputError(None, "no pixel is both valid and labeled: nothing to measure")
    idx = np.flatnonzero(sel)
    X = pm.reshape(-1, 3)[idx].astype(np.float64)
    dx, dy, dz = (X[None, :, i] - X[:, None, i] for i in range(3))
    E = dx * dx + dy * dy + dz * dz <= eps * eps  # same expression as the kernels
    if features is None:
        lab = lab[idx]
        sim = (lab[:, None] == lab[None, :]).astype(np.float64)
    else:
        Fs = F[idx].astype(np.float64)
        Fs /= np.linalg.norm(Fs, axis=1, keepdims=True)
        sim = Fs @ Fs.T
    h = (E * sim).sum(1) / E.sum(1)
    frame = idx // (H * W)
    per_frame = [
        float(h[frame == i].mean()) if (frame == i).any() else float("nan") for i in range(N)
    ]
    pairwise = None
    if features is None:
        agree = total = 0
        for a in range(N):
            for b in range(a + 1, N):
                ii, jj = np.nonzero(E[np.ix_(frame == a, frame == b)])
                la = lab[frame == a][ii]
                lb = lab[frame == b][jj]
                s, t = np.triu_indices(len(la), k=1)
                agree += int(((la[s] == la[t]) == (lb[s] == lb[t])).sum())
                total += len(s)
        pairwise = agree / total if total else None
    out_map = None
    if per_pixel:
        out_map = np.full(N * H * W, np.nan, np.float32)
        out_map[idx] = h
        out_map = out_map.reshape(N, H, W)
    return MetricResult(
        H=float(h.mean()),
        pairwise=pairwise,
        eps=float(eps),
        pixels=len(idx),
        per_pixel=out_map,
        per_frame=per_frame,
    )
