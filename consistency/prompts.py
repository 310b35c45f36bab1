"""Point prompts of the SAM-family backends (SAM, SAM 2): checked, grouped, decoded.

Both backends take prompt sets `[B, P, 2]` with labels `[B, P]` (1 foreground, 0 background, -1
padding) and decode them against one cached image embedding; only the network call differs.
`prompt_sets` checks the sets and turns points outside the image into padding, `decode_grouped`
decodes them in groups of equal real-point count through a backend's `decode` function, and
`check_decoding_options` checks the two options that steer it.
"""

from __future__ import annotations

import numpy as np

from lift3d.checks import check_array
from lift3d.consistency.segmenter import Masks
from lift3d.errors import InputError


def prompt_sets(
    image: np.ndarray,  # [H, W, 3] uint8
    points,  # [B, P, 2] (u, v) pixels
    point_labels,  # [B, P] int
) -> tuple[np.ndarray, np.ndarray]:
    """Checked prompt sets: points [B, P, 2] float64 and labels [B, P] int64, where a point
    outside the image, not finite, or with a label other than 0/1 becomes padding (label -1,
    point 0)."""
    image = check_array(image, ["H", "W", 3], dtype=np.uint8, name="image")
    points = np.asarray(points, dtype=np.float64)
    labels = np.asarray(point_labels).astype(np.int64)
    if points.ndim != 3 or points.shape[2] != 2 or labels.shape != points.shape[:2]:
        raise InputError(
            None,
            f"prompts must be points [B, P, 2] and labels [B, P]; got {points.shape} and {labels.shape}",
        )
    H, W = image.shape[:2]
    inside = np.isfinite(points).all(-1)
    inside &= (
        (points[..., 0] >= -0.5)
        & (points[..., 0] < W - 0.5)
        & (points[..., 1] >= -0.5)
        & (points[..., 1] < H - 0.5)
    )
    labels = np.where(inside & np.isin(labels, (0, 1)), labels, -1)
    points = np.where(inside[..., None], points, 0.0)
    return points, labels


def decode_grouped(
    points: np.ndarray,  # [B, P, 2] float64 (u, v) pixels, from prompt_sets
    labels: np.ndarray,  # [B, P] int64: 1, 0, or -1 padding
    hw: tuple[int, int],
    decode,
    *,
    max_batch: int,
    multimask_max_points: int,
) -> Masks:
    """Decode prompt sets in groups of equal real-point count, each set on its real points only.

    SAM's prompt encoder does not mask padding out: a label -1 point adds the "not a point"
    embedding and changes the mask (on the tests' random-weight SAM, a 1-point set padded to 5
    points differs from itself alone in 6-24% of the pixels). So each set keeps only its real points, in order, and is decoded
    with the sets of the same count, exactly as `SamPredictor.predict` decodes it alone (which
    appends its own single padding point, as here). Multimask is asked for sets of at most
    `multimask_max_points` real points, and the best of the candidates by predicted IoU is kept.

    Args:
        decode: `(points [b, k, 2], labels [b, k], multimask) -> (masks [b, M, H, W] bool,
            iou [b, M])` on the model's device.

    Returns:
        Masks [B, H, W] bool and scores [B] float32 (predicted IoU clipped to [0, 1]); sets
        without a real point get an empty mask and score 0.
    """
    import torch

    B = labels.shape[0]
    masks = np.zeros((B, *hw), bool)
    scores = np.zeros((B,), np.float32)
    real = labels >= 0
    counts = real.sum(axis=1)
    for k in np.unique(counts[counts > 0]):
        rows = np.flatnonzero(counts == k)
        # boolean indexing keeps row-major order: each row contributes its k real points in order
        pts = points[rows][real[rows]].reshape(len(rows), int(k), 2)
        lab = labels[rows][real[rows]].reshape(len(rows), int(k))
        for s in range(0, len(rows), max_batch):
            m, iou = decode(
                pts[s : s + max_batch], lab[s : s + max_batch], bool(k <= multimask_max_points)
            )
            best = iou.argmax(dim=1)
            r = torch.arange(len(best), device=best.device)
            masks[rows[s : s + max_batch]] = m[r, best].cpu().numpy()
            scores[rows[s : s + max_batch]] = iou[r, best].clamp(0, 1).cpu().numpy()
    return Masks(masks, scores)


def check_decoding_options(multimask_max_points: int, max_batch: int) -> None:
    if not isinstance(multimask_max_points, int) or multimask_max_points < 0:
        raise InputError(
            None, f"multimask_max_points must be an integer >= 0, got {multimask_max_points!r}"
        )
    if not isinstance(max_batch, int) or max_batch < 1:
        raise InputError(None, f"max_batch must be an integer >= 1, got {max_batch!r}")
