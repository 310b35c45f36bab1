"""The cross-view adjusted Rand index: one number for splitting, merging and ID drift across views.

The pixels of all views are pooled into one clustering problem: a pixel's true cluster is its GT
instance ID, its predicted cluster its predicted ID. Only GT-labeled pixels (GT > 0) count, so the
background may be labeled anyhow; a predicted 0 on a GT-labeled pixel is a cluster of its own (the
"unlabeled" cluster). Because the pooling ignores which view a pixel came from, an object whose ID
changes from one view to the next is split, exactly as if it were split inside one view.

The fast path accumulates the contingency table view by view (memory: the number of distinct
(GT, predicted) pairs, never the number of pixels); `_cross_view_ari_reference` hands the pooled
pixels to scikit-learn.
"""

from __future__ import annotations

import numpy as np

from lift3d.errors import InputError


def cross_view_ari(
    gt: np.ndarray,  # [N, H, W] int GT instance IDs, 0 = not labeled
    pred: np.ndarray,  # [N, H, W] int predicted IDs, 0 = unlabeled
) -> float:
    """Adjusted Rand index between GT and predicted IDs over the GT-labeled pixels of all views.

    Args:
        gt: [N, H, W] (or [H, W] for one view) non-negative integer GT instance IDs; 0 pixels
            are left out.
        pred: predicted IDs of the same shape; IDs are shared across views.

    Returns:
        The ARI in [-0.5, 1]: 1 for a perfect match up to renaming, about 0 for chance, 1 when
        the pooled pixels hold a single GT object and a single predicted ID (scikit-learn's
        convention for full agreement).

    Raises:
        InputError: shapes differ, arrays are not integer, or no pixel is GT-labeled.
    """
    gt, pred = _check(gt, pred)
    pairs, counts = [], []
    for g, p in zip(gt, pred):
        keep = g > 0
        if not keep.any():
            continue
        # unique (gt, pred) rows of one view: bounded by the objects, not the pixels
        rows, n = np.unique(
            np.stack([g[keep], p[keep]], axis=1).astype(np.int64), axis=0, return_counts=True
        )
        pairs.append(rows)
        counts.append(n)
    if not pairs:
        raise InputError(None, "cross_view_ari: the GT has no labeled pixel (all zeros)")
    rows, inverse = np.unique(np.concatenate(pairs), axis=0, return_inverse=True)
    n_ij = np.bincount(inverse.ravel(), weights=np.concatenate(counts), minlength=len(rows)).astype(
        np.int64
    )
    _, gi = np.unique(rows[:, 0], return_inverse=True)
    _, pj = np.unique(rows[:, 1], return_inverse=True)
    a = np.bincount(gi.ravel(), weights=n_ij).astype(np.int64)  # GT cluster sizes
    b = np.bincount(pj.ravel(), weights=n_ij).astype(np.int64)  # predicted cluster sizes
    return _ari_from_contingency(n_ij, a[gi.ravel()], b[pj.ravel()], int(n_ij.sum()))


def _ari_from_contingency(n_ij: np.ndarray, a_of: np.ndarray, b_of: np.ndarray, n: int) -> float:
    """ARI from the non-zero contingency cells, as scikit-learn computes it (pair confusion).

    Args:
        n_ij: [C] counts of the non-zero cells.
        a_of: [C] size of each cell's GT cluster.
        b_of: [C] size of each cell's predicted cluster.
        n: number of pixels.
    """
    # Python ints: tp * tn reaches ~n^4, far past int64 for a 300-view scan
    sum_sq = int((n_ij.astype(object) ** 2).sum())
    tp = sum_sq - n
    fp = int((n_ij.astype(object) * b_of.astype(object)).sum()) - sum_sq
    fn = int((n_ij.astype(object) * a_of.astype(object)).sum()) - sum_sq
    tn = n * n - fp - fn - sum_sq
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def _cross_view_ari_reference(gt: np.ndarray, pred: np.ndarray) -> float:
    """The definition: scikit-learn's ARI of the pooled GT-labeled pixels."""
    from sklearn.metrics import adjusted_rand_score

    gt, pred = _check(gt, pred)
    keep = gt > 0
    return float(adjusted_rand_score(gt[keep], pred[keep]))


def _check(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape or gt.ndim not in (2, 3):
        raise InputError(
            None,
            f"cross_view_ari: gt and pred must both be [N, H, W]; got {gt.shape} and {pred.shape}",
        )
    for name, a in (("gt", gt), ("pred", pred)):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise InputError(None, f"cross_view_ari: {name} must hold integer IDs; got {a.dtype}")
    if gt.ndim == 2:
        gt, pred = gt[None], pred[None]
    return gt, pred
