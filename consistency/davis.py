"""The DAVIS protocols: the MastSAM paper's per-frame best mask, the sequence-level variant, DAVIS J & F.

Three ways to score predicted label maps (`[N, H, W]` int, 0 = unlabeled, 1..K = object IDs)
against DAVIS-2016 single-object ground truth (`[N, H, W]` bool):

- `paper_protocol` (MastSAM, Sec. IV): the ground truth of each frame is compared with every
  predicted ID of that frame and the best-IoU one is kept; IoU, F1, precision and recall of the
  kept masks are averaged over frames. IDs may change from frame to frame, so this scores mask
  quality, not tracking.
- `sequence_protocol`: one ID for the whole sequence (the one with the highest mean IoU, or mean
  (J + F) / 2 as the DAVIS unsupervised benchmark assigns proposals), then the DAVIS region
  similarity J and boundary F-measure, with DAVIS' mean / recall / decay statistics.
- `consecutive_consistency`: the paper's consistency column for video without depth: do
  corresponding pixels of consecutive frames carry the same ID.

`davis_j` and `davis_f` follow the official davis2017-evaluation code (`db_eval_iou`,
`f_measure`, `_seg2bmap`, `db_statistics`) without void pixels (DAVIS-2016 has none).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lift3d.errors import InputError

logger = logging.getLogger(__name__)


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.ndim != 2 or pred.shape != gt.shape:
        raise InputError(
            None,
            f"pred and gt must be [H, W] masks of one shape, got {list(pred.shape)} and {list(gt.shape)}",
        )
    return pred.astype(bool), gt.astype(bool)


def _check_sequence(pred_labels: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred_labels = np.asarray(pred_labels)
    gt = np.asarray(gt)
    if pred_labels.ndim != 3 or pred_labels.shape != gt.shape:
        raise InputError(
            None,
            f"pred_labels and gt must be [N, H, W] of one shape, got {list(pred_labels.shape)} and {list(gt.shape)}",
        )
    if pred_labels.dtype.kind not in "ui":
        raise InputError(None, f"pred_labels must be integer IDs, got {pred_labels.dtype}")
    if pred_labels.size and pred_labels.min() < 0:
        raise InputError(None, "pred_labels must be >= 0 (0 = unlabeled)")
    return pred_labels.astype(np.int64), gt.astype(bool)


def davis_j(pred: np.ndarray, gt: np.ndarray) -> float:
    """Region similarity J: the IoU of two [H, W] masks; 1 when both are empty (as DAVIS)."""
    pred, gt = _check_pair(pred, gt)
    union = np.count_nonzero(pred | gt)
    return 1.0 if union == 0 else np.count_nonzero(pred & gt) / union


def _seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel boundaries of a mask, offset half a pixel towards the origin (DAVIS' `_seg2bmap`)."""
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _disk(radius: int) -> np.ndarray:
    from skimage.morphology import disk

    return disk(radius).astype(np.uint8)


def davis_f(pred: np.ndarray, gt: np.ndarray, *, bound_th: float = 0.008) -> float:
    """Boundary F-measure of two [H, W] masks, as DAVIS defines it.

    Boundary pixels (`_seg2bmap`) of each mask count as matched when a boundary pixel of the
    other lies within `bound_pix = ceil(bound_th * image diagonal)` pixels (dilation with a
    disk of that radius); precision and recall are the matched shares, F their harmonic mean.
    No boundary in either: F = 1; in only one: F = 0.

    Args:
        pred, gt: [H, W] masks.
        bound_th: tolerance as a fraction of the diagonal (< 1), or in pixels (>= 1).
    """
    import cv2

    pred, gt = _check_pair(pred, gt)
    bound_pix = bound_th if bound_th >= 1 else math.ceil(bound_th * np.linalg.norm(pred.shape))
    fg_boundary = _seg2bmap(pred)
    gt_boundary = _seg2bmap(gt)
    n_fg = int(fg_boundary.sum())
    n_gt = int(gt_boundary.sum())
    if n_fg == 0 or n_gt == 0:
        # DAVIS: precision 1 / recall 0 (or the reverse) gives F = 0; both empty gives F = 1
        return 1.0 if n_fg == n_gt else 0.0
    kernel = _disk(int(bound_pix))
    fg_dil = cv2.dilate(fg_boundary.astype(np.uint8), kernel).astype(bool)
    gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), kernel).astype(bool)
    precision = np.count_nonzero(fg_boundary & gt_dil) / n_fg
    recall = np.count_nonzero(gt_boundary & fg_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _davis_f_reference(pred: np.ndarray, gt: np.ndarray, *, bound_th: float = 0.008) -> float:
    """`davis_f` by brute force: a boundary pixel matches when one of the other's lies in the disk."""
    pred, gt = _check_pair(pred, gt)
    r = bound_th if bound_th >= 1 else math.ceil(bound_th * np.linalg.norm(pred.shape))
    pb = np.argwhere(_seg2bmap(pred))
    gb = np.argwhere(_seg2bmap(gt))
    if len(pb) == 0 or len(gb) == 0:
        return 1.0 if len(pb) == len(gb) else 0.0
    # skimage's disk(r) holds the offsets with dy^2 + dx^2 <= r^2
    d2 = ((pb[:, None, :] - gb[None, :, :]) ** 2).sum(-1)
    precision = (d2.min(axis=1) <= r * r).mean()
    recall = (d2.min(axis=0) <= r * r).mean()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def db_statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """DAVIS' mean, recall (share of frames above 0.5) and decay (first quarter minus last)."""
    per_frame = np.asarray(per_frame, np.float64)
    if per_frame.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(np.nanmean(per_frame))
    recall = float(np.nanmean(per_frame > 0.5))
    # the official code casts these bin edges to uint8, which wraps past 255 frames
    ids = (np.round(np.linspace(1, len(per_frame), 5) + 1e-10) - 1).astype(np.int64)
    bins = [per_frame[ids[i] : ids[i + 1] + 1] for i in range(4)]
    decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


def _frame_ious(
    labels: np.ndarray, gt: np.ndarray, num_ids: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersection, predicted area and IoU of every ID 0..num_ids-1 with one frame's GT."""
    flat = labels.ravel()
    inter = np.bincount(flat[gt.ravel()], minlength=num_ids)
    area = np.bincount(flat, minlength=num_ids)
    union = area + np.count_nonzero(gt) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return inter, area, iou


def _region_scores(inter: int, area: int, gt_area: int) -> dict[str, float]:
    """IoU, precision, recall, F1 of one mask; a score over two empty sets is 1, over one empty set 0."""
    if area == 0 and gt_area == 0:
        return {"iou": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    precision = inter / area if area else 0.0
    recall = inter / gt_area if gt_area else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "iou": inter / (area + gt_area - inter),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def paper_protocol(
    pred_labels: np.ndarray,  # [N, H, W] int, 0 = unlabeled
    gt: np.ndarray,  # [N, H, W] bool
) -> dict:
    """The MastSAM paper's DAVIS protocol: the best-IoU predicted mask of each frame.

    Per frame, the ground truth is compared with the mask of every predicted ID present in the
    frame and the one of highest IoU is kept (the lowest ID on ties); a frame without any
    predicted ID keeps the empty mask. Pixel IoU, precision, recall and F1 (= Dice) of the kept
    masks are averaged over frames. Over empty sets: both empty scores 1, one empty 0.

    Returns:
        `iou`, `f1`, `precision`, `recall` (frame means), `per_frame_iou` [N] list, and
        `ids` [N] list: the ID kept per frame (0 = none).

    Raises:
        InputError: arrays of mismatched shapes or non-integer / negative IDs.
    """
    pred_labels, gt = _check_sequence(pred_labels, gt)
    num_ids = int(pred_labels.max()) + 1 if pred_labels.size else 1
    rows, ids = [], []
    for labels, g in zip(pred_labels, gt):
        inter, area, iou = _frame_ious(labels, g, num_ids)
        present = np.nonzero(area[1:])[0] + 1
        best = int(present[np.argmax(iou[present])]) if len(present) else 0
        a = int(area[best]) if best else 0
        rows.append(_region_scores(int(inter[best]) if best else 0, a, int(g.sum())))
        ids.append(best)
    out = {
        k: float(np.mean([r[k] for r in rows])) if rows else float("nan")
        for k in ("iou", "f1", "precision", "recall")
    }
    out["per_frame_iou"] = [r["iou"] for r in rows]
    out["ids"] = ids
    return out


def _paper_protocol_reference(pred_labels: np.ndarray, gt: np.ndarray) -> dict:
    """`paper_protocol` with one boolean mask per ID (slow, obviously right)."""
    pred_labels, gt = _check_sequence(pred_labels, gt)
    rows = []
    for labels, g in zip(pred_labels, gt):
        best, best_iou = np.zeros_like(g), -1.0
        for i in np.unique(labels[labels > 0]):
            m = labels == i
            iou = davis_j(m, g)
            if iou > best_iou:
                best, best_iou = m, iou
        rows.append(_region_scores(int((best & g).sum()), int(best.sum()), int(g.sum())))
    return {k: float(np.mean([r[k] for r in rows])) for k in ("iou", "f1", "precision", "recall")}


def sequence_protocol(
    pred_labels: np.ndarray,  # [N, H, W] int, 0 = unlabeled
    gt: np.ndarray,  # [N, H, W] bool
    *,
    select: str = "J",
    bound_th: float = 0.008,
) -> dict:
    """DAVIS J and F of the single predicted ID that best tracks the object through the sequence.

    Args:
        pred_labels: [N, H, W] predicted IDs.
        gt: [N, H, W] ground-truth object masks.
        select: `J` picks the ID of highest mean IoU over all frames (a frame where the ID is
            absent scores 0, or 1 if the GT is empty too); `JF` the highest mean (J + F) / 2,
            as the DAVIS unsupervised benchmark assigns proposals to objects (slower: F for
            every ID on every frame). Ties go to the lowest ID; no ID at all gives ID 0 (empty).
        bound_th: `davis_f`'s boundary tolerance.

    Returns:
        `id`, `J` / `J_recall` / `J_decay`, `F` / `F_recall` / `F_decay` (DAVIS' statistics
        over frames), `JF` = (J + F) / 2, and `per_frame_J` / `per_frame_F` lists.

    Raises:
        InputError: arrays of mismatched shapes, non-integer IDs, or an unknown `select`.
    """
    if select not in ("J", "JF"):
        raise InputError(None, f"select must be 'J' or 'JF', got {select!r}")
    pred_labels, gt = _check_sequence(pred_labels, gt)
    num_ids = int(pred_labels.max()) + 1 if pred_labels.size else 1
    ids = np.unique(pred_labels[pred_labels > 0])
    chosen = 0
    if len(ids):
        j_all = np.stack(
            [_frame_ious(labels, g, num_ids)[2] for labels, g in zip(pred_labels, gt)]
        )  # [N, num_ids]
        score = j_all[:, ids].mean(axis=0)
        if select == "JF":
            f_all = np.array(
                [
                    [davis_f(labels == i, g, bound_th=bound_th) for i in ids]
                    for labels, g in zip(pred_labels, gt)
                ]
            )
            score = (score + f_all.mean(axis=0)) / 2
        chosen = int(ids[np.argmax(score)])
    masks = pred_labels == chosen if chosen else np.zeros_like(gt)
    per_j = np.array([davis_j(m, g) for m, g in zip(masks, gt)])
    per_f = np.array([davis_f(m, g, bound_th=bound_th) for m, g in zip(masks, gt)])
    jm, jr, jd = db_statistics(per_j)
    fm, fr, fd = db_statistics(per_f)
    return {
        "id": chosen,
        "J": jm,
        "J_recall": jr,
        "J_decay": jd,
        "F": fm,
        "F_recall": fr,
        "F_decay": fd,
        "JF": (jm + fm) / 2,
        "per_frame_J": per_j.tolist(),
        "per_frame_F": per_f.tolist(),
    }


def consecutive_consistency(
    pred_labels: np.ndarray,  # [N, H, W] int, 0 = unlabeled
    matches: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> float:
    """The paper's consistency column for video without depth: same ID across a correspondence.

    `matches[t] = (uv_t [M, 2], uv_t1 [M, 2], conf [M])` are pixel correspondences (u = column,
    v = row, rounded to the nearest pixel centre) from frame t to frame t + 1, e.g.
    `Scene.matches(t, t + 1)` or `lift3d.recon.flow.flow_matches`. The score is the share of
    correspondences (p, q), pooled over all consecutive pairs, with `label_t(p) == label_t+1(q)`,
    among those where both pixels are labeled and inside their frames.

    This is the metric H (DESIGN.md) for one-hot outputs with the epsilon-ball of p replaced by
    its single correspondence q in the next frame: `cos(onehot(a), onehot(b)) = [a == b]`, and
    unlabeled pixels are excluded as in H. Unlike H it has no same-view neighbours (which always
    agree), so it only measures agreement across frames, and it does not weight by `conf`.

    Returns:
        The share in [0, 1]; NaN when no correspondence joins two labeled pixels.

    Raises:
        InputError: `len(matches) != N - 1` or a malformed entry.
    """
    pred_labels = np.asarray(pred_labels)
    if pred_labels.ndim != 3:
        raise InputError(None, f"pred_labels must be [N, H, W], got {list(pred_labels.shape)}")
    n, H, W = pred_labels.shape
    if len(matches) != max(n - 1, 0):
        raise InputError(
            None, f"expected {max(n - 1, 0)} match sets (frames t, t+1), got {len(matches)}"
        )
    same = total = 0
    for t, entry in enumerate(matches):
        if len(entry) != 3:
            raise InputError(None, f"matches[{t}] must be (uv_i, uv_j, conf)")
        uv_i, uv_j = (np.asarray(a, np.float64).reshape(-1, 2) for a in entry[:2])
        if len(uv_i) != len(uv_j):
            raise InputError(
                None, f"matches[{t}]: {len(uv_i)} points in frame {t}, {len(uv_j)} in frame {t + 1}"
            )
        ui, vi = np.rint(uv_i[:, 0]).astype(np.int64), np.rint(uv_i[:, 1]).astype(np.int64)
        uj, vj = np.rint(uv_j[:, 0]).astype(np.int64), np.rint(uv_j[:, 1]).astype(np.int64)
        inside = (
            (ui >= 0)
            & (ui < W)
            & (vi >= 0)
            & (vi < H)
            & (uj >= 0)
            & (uj < W)
            & (vj >= 0)
            & (vj < H)
        )
        a = pred_labels[t][vi[inside], ui[inside]]
        b = pred_labels[t + 1][vj[inside], uj[inside]]
        both = (a > 0) & (b > 0)
        same += int(np.count_nonzero(a[both] == b[both]))
        total += int(np.count_nonzero(both))
    return same / total if total else float("nan")


def read_davis_sequence(root: str | Path, seq: str) -> tuple[list[Path], np.ndarray]:
    """Frame paths and ground-truth masks of one DAVIS sequence.

    Reads `root/Annotations/480p/<seq>/NNNNN.png` (0/255 or palette PNG; any value > 0 is the
    object) and pairs each with `root/JPEGImages/480p/<seq>/NNNNN.jpg`.

    Returns:
        frames: [N] paths of the colour frames, in annotation order.
        gt: [N, H, W] bool object masks.

    Raises:
        InputError: a missing folder or frame, an unreadable annotation, or annotations of
            different sizes (the message names the file).
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "DAVIS root not found")
    ann_dir = root / "Annotations" / "480p" / seq
    img_dir = root / "JPEGImages" / "480p" / seq
    if not ann_dir.is_dir():
        raise InputError(
            ann_dir, f"no annotations for sequence {seq!r} (expected Annotations/480p/{seq}/)"
        )
    if not img_dir.is_dir():
        raise InputError(
            img_dir, f"no frames for sequence {seq!r} (expected JPEGImages/480p/{seq}/)"
        )
    ann_paths = sorted(ann_dir.glob("*.png"))
    if not ann_paths:
        raise InputError(ann_dir, "no annotation PNGs")
    frames, masks = [], []
    for p in ann_paths:
        frame = img_dir / f"{p.stem}.jpg"
        if not frame.is_file():
            raise InputError(frame, f"frame of annotation {p.name} not found")
        try:
            with Image.open(p) as im:
                arr = np.asarray(im)  # palette PNGs give indices, 0 = background
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise InputError(p, f"cannot decode annotation ({e})") from None
        mask = arr.any(axis=-1) if arr.ndim == 3 else arr > 0
        if masks and mask.shape != masks[0].shape:
            raise InputError(
                p,
                f"annotation is {mask.shape[1]}x{mask.shape[0]}, the first is {masks[0].shape[1]}x{masks[0].shape[0]}",
            )
        frames.append(frame)
        masks.append(mask)
    return frames, np.stack(masks)


def list_davis_sequences(root: str | Path) -> list[str]:
    """Names of the sequences under `root/Annotations/480p`, sorted."""
    ann = Path(root) / "Annotations" / "480p"
    if not ann.is_dir():
        raise InputError(ann, "DAVIS annotations folder not found (expected Annotations/480p/)")
    return sorted(p.name for p in ann.iterdir() if p.is_dir())
