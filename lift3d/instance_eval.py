"""Class-agnostic 3D instance AP on ScanNet mesh vertices, with the benchmark's own semantics.

This follows ScanNet's `BenchmarkScripts/3d_evaluation/evaluate_semantic_instance.py` (itself
adapted from the Cityscapes evaluation), run with a single class:

- Ground truth: each object of `<scene>.aggregation.json` is the set of vertices whose segment
  (`*_vh_clean_2.0.010000.segs.json`) it lists; its class is the majority NYU40 `label` of those
  vertices in `*_vh_clean_2.labels.ply`, or, where that file holds raw category ids instead of
  NYU40 (ScanNet v1 style, as the shared scene0000_00), the object's aggregation label mapped
  through ScanNet's `scannetv2-labels.combined.tsv` as the official export does. Objects whose
  class is one of the benchmark's 18 are instances; every other vertex is void (the script's
  `gt_ids // 1000 not in VALID_CLASS_IDS`). A later object overwrites an earlier one on a shared
  segment, as the official export does. It is read by `lift3d.recon.scannet.load_scannet_gt`,
  beside the other ScanNet readers.
- Predictions with fewer than `min_region_size` (100) vertices are dropped; so are ground-truth
  instances, which then count neither as hits nor as misses.
- Matching, per IoU threshold, is GT-centric and greedy, in the script's order (ground truth by
  instance id, predictions in file order): a prediction counts for a ground truth when their IoU
  is strictly above the threshold and it has not already been taken by an earlier ground truth;
  of several predictions of one ground truth the most confident is the true positive and the
  others are false positives. A prediction matching no ground truth is a false positive unless
  more than the threshold of it lies on void vertices or on dropped (small) ground truth.
- AP: the script's precision-recall curve over unique confidences with an artificial (recall 0,
  precision 1) end point, integrated with central-difference step widths
  (`np.convolve(recall, [-0.5, 0, 0.5])`). AP is the mean over IoU 0.5:0.95:0.05 (0.5 ... 0.9),
  AP50 and AP25 the values at 0.5 and 0.25.

Deviations, both for cases where the script itself breaks: when ground truth and predictions
exist but every prediction is ignored, the script indexes an empty array; here AP is 0 (nothing
found). Without any ground-truth instance AP is NaN, as in the script.

The fast path computes all prediction x ground-truth intersections with one `bincount` per
prediction; `_evaluate_reference` is a line-by-line port of the script's dictionaries and loops,
kept to test against.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lift3d.errors import InputError
from lift3d.recon.scannet.gt import VALID_CLASS_IDS, GroundTruth, load_scannet_gt


def _check_predictions(
    gt: GroundTruth, pred_masks: np.ndarray, pred_conf: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    pred_masks = np.asarray(pred_masks)
    pred_conf = np.asarray(pred_conf, np.float64)
    if pred_masks.ndim != 2 or pred_masks.shape[1] != gt.num_vertices:
        raise InputError(
            None, f"pred_masks must have shape [K, {gt.num_vertices}], got {list(pred_masks.shape)}"
        )
    if pred_conf.shape != (len(pred_masks),):
        raise InputError(
            None, f"pred_conf must have shape [{len(pred_masks)}], got {list(pred_conf.shape)}"
        )
    if not np.all(np.isfinite(pred_conf)):
        raise InputError(None, "pred_conf must be finite")
    return pred_masks != 0, pred_conf


def _average_precision(y_true: np.ndarray, y_score: np.ndarray, hard_false_negatives: int) -> float:
    """The script's PR curve and its integration, for one class and one IoU threshold."""
    if len(y_true) == 0:
        return 0.0  # the script crashes here; nothing was found
    arg = np.argsort(y_score)
    y_score_sorted = y_score[arg]
    y_true_sorted = y_true[arg]
    cumsum = np.cumsum(y_true_sorted)
    _, unique_indices = np.unique(y_score_sorted, return_index=True)
    num_prec_recall = len(unique_indices) + 1
    num_examples = len(y_score_sorted)
    num_true_examples = cumsum[-1]
    precision = np.zeros(num_prec_recall)
    recall = np.zeros(num_prec_recall)
    # index -1 of the padded cumsum is the 0 before the first example
    cumsum = np.append(cumsum, 0)
    for idx_res, idx_scores in enumerate(unique_indices):
        below = cumsum[idx_scores - 1]
        tp = num_true_examples - below
        fp = num_examples - idx_scores - tp
        fn = below + hard_false_negatives
        precision[idx_res] = float(tp) / (tp + fp)
        recall[idx_res] = float(tp) / (tp + fn)
    precision[-1] = 1.0
    recall[-1] = 0.0
    recall_for_conv = np.append(np.append(recall[0], recall), 0.0)
    step_widths = np.convolve(recall_for_conv, [-0.5, 0, 0.5], "valid")
    return float(np.dot(precision, step_widths))


def _ap_at(
    overlap_th: float,
    inter: np.ndarray,  # [K, G] int vertices in both
    pred_count: np.ndarray,  # [K]
    gt_count: np.ndarray,  # [G]
    void_inter: np.ndarray,  # [K]
    conf: np.ndarray,  # [K]
    min_region_size: int,
) -> float:
    """One threshold of the script's `evaluate_matches`, on precomputed intersections."""
    K, G = inter.shape
    big = gt_count >= min_region_size
    if not big.any():
        return float("nan")
    if K == 0:
        return 0.0
    union = gt_count[None, :] + pred_count[:, None] - inter
    iou = np.where(inter > 0, inter / np.maximum(union, 1), 0.0)
    hit = iou > overlap_th

    visited = np.zeros(K, bool)
    y_true: list[float] = []
    y_score: list[float] = []
    hard_false_negatives = 0
    for g in np.nonzero(big)[0]:
        score = -np.inf
        matched = False
        for k in np.nonzero(inter[:, g] > 0)[0]:
            if visited[k] or not hit[k, g]:
                continue
            if matched:
                # the less confident of two predictions of one GT is a false positive; the
                # second one is deliberately not marked visited (as in the script)
                y_true.append(0.0)
                y_score.append(min(score, conf[k]))
                score = max(score, conf[k])
            else:
                matched = True
                score = conf[k]
                visited[k] = True
        if matched:
            y_true.append(1.0)
            y_score.append(score)
        else:
            hard_false_negatives += 1

    found_gt = hit.any(axis=1)
    small_inter = inter[:, ~big].sum(axis=1)
    ignored = (void_inter + small_inter) / pred_count > overlap_th
    for k in np.nonzero(~found_gt & ~ignored)[0]:
        y_true.append(0.0)
        y_score.append(conf[k])
    return _average_precision(np.asarray(y_true), np.asarray(y_score), hard_false_negatives)


def _summary(thresholds: list[float], aps: list[float], overlaps: np.ndarray) -> dict:
    by_th = dict(zip(thresholds, aps))
    main = [by_th[float(t)] for t in overlaps]
    with np.errstate(invalid="ignore"):
        ap = float(np.nanmean(main)) if not np.all(np.isnan(main)) else float("nan")
    return {
        "AP": ap,
        "AP50": by_th[0.5],
        "AP25": by_th[0.25],
        "per_overlap": {f"{t:.2f}": by_th[t] for t in sorted(by_th)},
    }


def evaluate_instances(
    gt: GroundTruth,
    pred_masks: np.ndarray,  # [K, V] bool, one row per predicted instance
    pred_conf: np.ndarray,  # [K] float, higher ranks first
    *,
    min_region_size: int = 100,
    overlaps: np.ndarray = np.arange(0.5, 0.95, 0.05),
) -> dict:
    """Class-agnostic instance AP of predicted vertex masks against ScanNet ground truth.

    Args:
        gt: the scan's ground truth (`load_scannet_gt`).
        pred_masks: [K, V] predicted instances over the mesh vertices (non-zero = inside), in
            file order (the order breaks ties of the greedy matching, as in the script).
        pred_conf: [K] confidences; only their order matters.
        min_region_size: predictions and ground-truth instances with fewer vertices are dropped.
        overlaps: IoU thresholds averaged into AP (the script's 0.5:0.95:0.05).

    Returns:
        `AP` (mean over `overlaps`), `AP50`, `AP25`, `per_overlap` {"0.50": AP, ...}, and
        `num_gt` / `num_pred`: the instances of at least `min_region_size` vertices.

    Raises:
        InputError: masks or confidences of the wrong shape.
    """
    masks, conf = _check_predictions(gt, pred_masks, pred_conf)
    pred_count = masks.sum(axis=1)
    keep = pred_count >= min_region_size
    masks, conf, pred_count = masks[keep], conf[keep], pred_count[keep]

    gt_ids = np.unique(gt.instance[gt.instance > 0])
    # dense 1..G index per vertex (0 = none) so that one bincount gives a prediction's row
    dense = np.searchsorted(gt_ids, gt.instance) + 1
    dense[gt.instance <= 0] = 0
    G = len(gt_ids)
    gt_count = np.bincount(dense, minlength=G + 1)[1:]
    inter = (
        np.stack([np.bincount(dense[m], minlength=G + 1)[1:] for m in masks])
        if len(masks)
        else np.zeros((0, G), np.int64)
    )
    void_inter = (masks & gt.void[None, :]).sum(axis=1)

    thresholds = sorted({float(t) for t in overlaps} | {0.5, 0.25})
    aps = [
        _ap_at(t, inter, pred_count, gt_count, void_inter, conf, min_region_size)
        for t in thresholds
    ]
    result = _summary(thresholds, aps, overlaps)
    result["num_gt"] = int((gt_count >= min_region_size).sum())
    result["num_pred"] = len(masks)
    return result


def evaluate_scannet_export(
    scene_dir: str | Path, pred_dir: str | Path, scene_name: str | None = None
) -> dict:
    """AP of a prediction in the ScanNet benchmark format against a scan's ground truth.

    Args:
        scene_dir: the scan folder with its GT files (see `load_scannet_gt`).
        pred_dir: the folder holding `<scene>.txt` (lines `pred_mask/<file>.txt <class> <conf>`)
            and the mask files, one 0/1 per line per mesh vertex. Class ids are ignored.
        scene_name: the scan's name (default: `scene_dir`'s name).

    Returns:
        `evaluate_instances`' dictionary, plus `scene` and `num_vertices`.

    Raises:
        InputError: a missing GT or prediction file, or a mask whose vertex count differs from
            the mesh's (the message names the file).
    """
    from lift3d.export import read_scannet_instances

    scene_dir = Path(scene_dir)
    name = scene_name or scene_dir.name
    gt = load_scannet_gt(scene_dir, name)
    masks, conf = read_scannet_instances(pred_dir, name, gt.num_vertices)
    result = evaluate_instances(gt, masks, conf)
    result["scene"] = name
    result["num_vertices"] = gt.num_vertices
    return result


def _evaluate_reference(
    gt: GroundTruth,
    pred_masks: np.ndarray,
    pred_conf: np.ndarray,
    *,
    min_region_size: int = 100,
    overlaps: np.ndarray = np.arange(0.5, 0.95, 0.05),
) -> dict:
    """The script's dictionaries and loops, one class, ported line by line (slow)."""
    label = VALID_CLASS_IDS[0]  # every instance in one class
    gt_ids = np.where(gt.instance > 0, label * 1000 + gt.instance, 0)
    bool_void = gt.void  # the script's `not in1d(gt_ids // 1000, VALID_CLASS_IDS)`
    gt_instances = []
    for inst_id in np.unique(gt_ids):
        if inst_id == 0:
            continue
        if inst_id // 1000 in VALID_CLASS_IDS:
            gt_instances.append(
                {
                    "instance_id": int(inst_id),
                    "vert_count": int((gt_ids == inst_id).sum()),
                    "matched_pred": [],
                }
            )
    preds = []
    for k, (mask, conf) in enumerate(zip(np.asarray(pred_masks) != 0, pred_conf)):
        num = int(np.count_nonzero(mask))
        if num < min_region_size:
            continue
        pred = {
            "filename": k,
            "vert_count": num,
            "confidence": float(conf),
            "void_intersection": int(np.count_nonzero(bool_void & mask)),
            "matched_gt": [],
        }
        for gt_inst in gt_instances:
            intersection = int(np.count_nonzero((gt_ids == gt_inst["instance_id"]) & mask))
            if intersection > 0:
                pred["matched_gt"].append(dict(gt_inst, intersection=intersection))
                gt_inst["matched_pred"].append(dict(pred, intersection=intersection))
        preds.append(pred)

    thresholds = sorted({float(t) for t in overlaps} | {0.5, 0.25})
    aps = []
    for overlap_th in thresholds:
        pred_visited = {p["filename"]: False for p in preds}
        kept_gt = [
            g
            for g in gt_instances
            if g["instance_id"] >= 1000 and g["vert_count"] >= min_region_size
        ]
        cur_true = np.ones(len(kept_gt))
        cur_score = np.ones(len(kept_gt)) * (-float("inf"))
        cur_match = np.zeros(len(kept_gt), dtype=bool)
        hard_false_negatives = 0
        for gti, g in enumerate(kept_gt):
            found_match = False
            for pred in g["matched_pred"]:
                if pred_visited[pred["filename"]]:
                    continue
                overlap = float(pred["intersection"]) / (
                    g["vert_count"] + pred["vert_count"] - pred["intersection"]
                )
                if overlap > overlap_th:
                    confidence = pred["confidence"]
                    if cur_match[gti]:
                        max_score = max(cur_score[gti], confidence)
                        min_score = min(cur_score[gti], confidence)
                        cur_score[gti] = max_score
                        cur_true = np.append(cur_true, 0)
                        cur_score = np.append(cur_score, min_score)
                        cur_match = np.append(cur_match, True)
                    else:
                        found_match = True
                        cur_match[gti] = True
                        cur_score[gti] = confidence
                        pred_visited[pred["filename"]] = True
            if not found_match:
                hard_false_negatives += 1
        cur_true = cur_true[cur_match]
        cur_score = cur_score[cur_match]
        for pred in preds:
            found_gt = False
            for g in pred["matched_gt"]:
                overlap = float(g["intersection"]) / (
                    g["vert_count"] + pred["vert_count"] - g["intersection"]
                )
                if overlap > overlap_th:
                    found_gt = True
                    break
            if not found_gt:
                num_ignore = pred["void_intersection"]
                for g in pred["matched_gt"]:
                    if g["instance_id"] < 1000:
                        num_ignore += g["intersection"]
                    if g["vert_count"] < min_region_size:
                        num_ignore += g["intersection"]
                if float(num_ignore) / pred["vert_count"] <= overlap_th:
                    cur_true = np.append(cur_true, 0)
                    cur_score = np.append(cur_score, pred["confidence"])
        if kept_gt and preds:
            aps.append(_average_precision(cur_true, cur_score, hard_false_negatives))
        else:
            aps.append(0.0 if kept_gt else float("nan"))
    return _summary(thresholds, aps, overlaps)
