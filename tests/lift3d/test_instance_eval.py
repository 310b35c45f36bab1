"""Class-agnostic ScanNet instance AP: hand-computed cases, the script's port, GT loading, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lift3d.errors import InputError
from lift3d.instance_eval import _evaluate_reference, evaluate_instances, evaluate_scannet_export
from lift3d.recon.scannet.gt import GroundTruth, load_scannet_gt

SCENE0000 = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "scannet" / "scene0000_00"
)
THRESHOLDS = ["0.25", "0.50", "0.55", "0.60", "0.65", "0.70", "0.75", "0.80", "0.85", "0.90"]


def _gt(sizes: list[int], n_void: int) -> GroundTruth:
    """Instances 1..len(sizes) of the given vertex counts, laid out in order, then void vertices."""
    instance = np.concatenate(
        [np.full(s, i + 1) for i, s in enumerate(sizes)] + [np.zeros(n_void, int)]
    )
    return GroundTruth(
        instance=instance,
        void=instance == 0,
        num_vertices=len(instance),
        labels={i + 1: 3 for i in range(len(sizes))},
    )


def _mask(gt: GroundTruth, *parts: tuple[int, int]) -> np.ndarray:
    """Union of the first `count` vertices of instance `inst` (0 = void) for each (inst, count)."""
    m = np.zeros(gt.num_vertices, bool)
    for inst, count in parts:
        m[np.nonzero(gt.instance == inst)[0][:count]] = True
    return m


def _all(result: dict, value: float) -> None:
    assert result["per_overlap"] == pytest.approx({t: value for t in THRESHOLDS})
    assert (
        result["AP"] == pytest.approx(value)
        and result["AP50"] == pytest.approx(value)
        and result["AP25"] == pytest.approx(value)
    )


def test_perfect_prediction_scores_one_everywhere():
    gt = _gt([200, 300], 500)
    masks = np.stack([gt.instance == 1, gt.instance == 2])
    result = evaluate_instances(gt, masks, np.array([0.3, 0.9]))
    _all(result, 1.0)
    assert result["num_gt"] == 2 and result["num_pred"] == 2


def test_missing_instance_halves_ap():
    # 2 GT, 1 perfect prediction: PR points (r 0.5, p 1) and the artificial (0, 1);
    # step widths (0.5 - 0) / 2 each -> AP = 1 * 0.25 + 1 * 0.25 = 0.5
    gt = _gt([200, 300], 500)
    _all(evaluate_instances(gt, (gt.instance == 1)[None], np.array([0.7])), 0.5)


def test_confident_false_positive_lowers_ap_by_the_scripts_integration():
    # one GT of 200 vertices; T = the GT (conf 0.5); F = 60 GT vertices + 40 void (conf 0.9):
    # IoU(F) = 60 / 240 = 0.25, void share 0.4. For thresholds >= 0.5, F is a false positive:
    # ascending scores [0.5 T, 0.9 F]: (p, r) = (0.5, 1), (0, 0), artificial (1, 0);
    # step widths = 0.5 * (r_prev - r_next) with r padded [1, 1, 0, 0, 0] -> [0.5, 0.5, 0]:
    # AP = 0.5 * 0.5 + 0 * 0.5 + 1 * 0 = 0.25.
    # At 0.25, F is unmatched (0.25 is not > 0.25) and ignored (void share 0.4 > 0.25): AP25 = 1.
    gt = _gt([200], 500)
    masks = np.stack([gt.instance == 1, _mask(gt, (1, 60), (0, 40))])
    result = evaluate_instances(gt, masks, np.array([0.5, 0.9]))
    assert result["AP25"] == pytest.approx(1.0)
    assert all(result["per_overlap"][t] == pytest.approx(0.25) for t in THRESHOLDS[1:])
    assert result["AP"] == pytest.approx(0.25)
    # the same false positive ranked below the true positive leaves AP at 1
    assert evaluate_instances(gt, masks, np.array([0.9, 0.5]))["AP"] == pytest.approx(1.0)


def test_false_positive_with_a_missed_instance():
    # GT A (200), B (400); T = A (conf 0.5); F = 100 vertices of B (IoU 0.25, no void) -> FP at every
    # threshold, B a hard false negative. F above T: (p, r) = (0.5, 0.5), (0, 0), (1, 0) with widths
    # [0.25, 0.25, 0] -> 0.125. F below T: (0.5, 0.5), (1, 0.5), (1, 0), widths [0, 0.25, 0.25] -> 0.5.
    gt = _gt([200, 400], 400)
    masks = np.stack([gt.instance == 1, _mask(gt, (2, 100))])
    _all(evaluate_instances(gt, masks, np.array([0.5, 0.9])), 0.125)
    _all(evaluate_instances(gt, masks, np.array([0.5, 0.1])), 0.5)


def test_duplicate_prediction_of_one_gt():
    # two predictions of one GT: the more confident is the TP, the other a FP at its (lower) score
    gt = _gt([200], 300)
    masks = np.stack([gt.instance == 1, _mask(gt, (1, 190))])
    _all(evaluate_instances(gt, masks, np.array([0.4, 0.8])), 1.0)
    # equal confidences share one threshold: (p, r) = (0.5, 1), (1, 0): widths [0.5, 0.5] -> 0.75
    _all(evaluate_instances(gt, masks, np.array([0.5, 0.5])), 0.75)


def test_prediction_mostly_on_void_is_ignored():
    # N: 28 vertices of B + 72 void (void share 0.72), most confident. Ignored while the threshold
    # is below 0.72 (AP as without it: 0.5), a false positive above (AP 0.125, as computed above).
    gt = _gt([200, 400], 400)
    masks = np.stack([gt.instance == 1, _mask(gt, (2, 28), (0, 72))])
    result = evaluate_instances(gt, masks, np.array([0.5, 0.9]))
    for t in THRESHOLDS:
        assert result["per_overlap"][t] == pytest.approx(0.5 if float(t) < 0.72 else 0.125), t
    assert result["AP"] == pytest.approx((5 * 0.5 + 4 * 0.125) / 9)


def test_small_predictions_are_dropped():
    gt = _gt([200, 400], 400)
    masks = np.stack([gt.instance == 1, gt.instance == 2, _mask(gt, (2, 99))])
    conf = np.array([0.5, 0.5, 0.9])
    _all(evaluate_instances(gt, masks, conf), 1.0)
    result = evaluate_instances(gt, masks, conf, min_region_size=50)
    assert result["num_pred"] == 3 and result["AP"] < 1.0


def test_small_gt_counts_neither_as_hit_nor_miss():
    gt = _gt([200, 80], 300)
    masks = (gt.instance == 1)[None]
    result = evaluate_instances(gt, masks, np.array([0.5]))
    assert result["num_gt"] == 1
    _all(result, 1.0)


def test_no_gt_gives_nan_and_no_prediction_zero():
    gt = _gt([200], 300)
    assert evaluate_instances(gt, np.zeros((0, gt.num_vertices), bool), np.zeros(0))["AP"] == 0.0
    empty = GroundTruth(np.zeros(500, int), np.ones(500, bool), 500, {})
    assert np.isnan(evaluate_instances(empty, np.ones((1, 500), bool), np.ones(1))["AP"])


@pytest.mark.parametrize("seed", range(6))
def test_matches_the_scripts_port_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(40, 400, rng.integers(1, 7)).tolist()
    gt = _gt(sizes, int(rng.integers(0, 600)))
    masks = []
    for _ in range(rng.integers(1, 14)):
        g = rng.integers(0, len(sizes) + 1)
        m = (gt.instance == g) & (rng.random(gt.num_vertices) < rng.uniform(0.3, 1.0))
        masks.append(m | (rng.random(gt.num_vertices) < rng.uniform(0.0, 0.15)))
    masks = np.stack(masks)
    conf = rng.choice([0.1, 0.3, 0.5, 0.9], len(masks))  # repeated scores on purpose
    fast = evaluate_instances(gt, masks, conf)
    ref = _evaluate_reference(gt, masks, conf)
    for key in ("AP", "AP50", "AP25"):
        assert fast[key] == pytest.approx(ref[key], nan_ok=True)
    assert fast["per_overlap"] == pytest.approx(ref["per_overlap"], nan_ok=True)


def test_bad_prediction_shapes():
    gt = _gt([200], 300)
    with pytest.raises(InputError, match=r"\[K, 500\]"):
        evaluate_instances(gt, np.ones((2, 499), bool), np.ones(2))
    with pytest.raises(InputError, match="pred_conf"):
        evaluate_instances(gt, np.ones((2, 500), bool), np.ones(3))


# ---------------------------------------------------------------- GT files and the export format


def _write_scan(
    folder: Path, name: str, *, ply_labels: np.ndarray, seg: np.ndarray, groups: list[dict]
) -> Path:
    from lift3d.io import write_ply

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}_vh_clean_2.0.010000.segs.json").write_text(
        json.dumps({"segIndices": seg.tolist()})
    )
    (folder / f"{name}.aggregation.json").write_text(json.dumps({"segGroups": groups}))
    vertex = np.zeros(
        len(ply_labels), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("label", "u2")]
    )
    vertex["label"] = ply_labels
    write_ply(folder / f"{name}_vh_clean_2.labels.ply", vertex)
    return folder


def _tiny_scan(tmp_path: Path, ply_labels_by_seg: dict[int, int]) -> Path:
    # segments 10 (150 v), 20 (120 v), 30 (130 v), 40 (100 v); objects: chair {10}, floor {20},
    # cabinet {30, 40}, and a later "lamp" group re-using segment 40 (overwrites it)
    seg = np.repeat([10, 20, 30, 40], [150, 120, 130, 100])
    groups = [
        {"objectId": 0, "segments": [10], "label": "chair"},
        {"objectId": 1, "segments": [20], "label": "floor"},
        {"objectId": 2, "segments": [30, 40], "label": "cabinet"},
        {"objectId": 3, "segments": [40], "label": "lamp"},
    ]
    ply = np.array([ply_labels_by_seg[s] for s in seg])
    return _write_scan(
        tmp_path / "scene0001_00", "scene0001_00", ply_labels=ply, seg=seg, groups=groups
    )


def test_load_gt_from_nyu40_labels_ply(tmp_path):
    scan = _tiny_scan(tmp_path, {10: 5, 20: 2, 30: 3, 40: 35})
    gt = load_scannet_gt(scan)
    assert gt.num_vertices == 500 and gt.labels == {1: 5, 3: 3}
    np.testing.assert_array_equal(gt.instance, np.repeat([1, 0, 3, 0], [150, 120, 130, 100]))
    np.testing.assert_array_equal(gt.void, gt.instance == 0)


def test_load_gt_from_aggregation_when_labels_ply_is_not_nyu40(tmp_path):
    # raw category ids as in ScanNet v1 files (values above 40): classes come from the aggregation
    scan = _tiny_scan(tmp_path, {10: 2, 20: 3, 30: 7, 40: 128})
    tsv = tmp_path / "labels.tsv"
    tsv.write_text(
        "id\traw_category\tcategory\tnyu40id\n2\tchair\tchair\t5\n3\tfloor\tfloor\t2\n7\tcabinet\tcabinet\t3\n9\tlamp\tlamp\t35\n"
    )
    gt = load_scannet_gt(scan, label_map=tsv)
    assert gt.labels == {1: 5, 3: 3}
    with pytest.raises(InputError, match="not NYU40"):
        load_scannet_gt(scan, label_source="labels_ply")
    bundled = load_scannet_gt(scan)  # ScanNet's own table, as open3d ships it
    assert bundled.labels == {1: 5, 3: 3}


def test_vertex_objects_keep_every_class_and_drop_excluded_labels(tmp_path):
    from lift3d.recon.scannet.gt import read_vertex_objects

    scan = _tiny_scan(tmp_path, {10: 5, 20: 2, 30: 3, 40: 35})
    # all four objects, the later lamp over segment 40; no class filter, no labels.ply read
    (scan / "scene0001_00_vh_clean_2.labels.ply").unlink()
    np.testing.assert_array_equal(
        read_vertex_objects(scan), np.repeat([1, 2, 3, 4], [150, 120, 130, 100])
    )
    np.testing.assert_array_equal(
        read_vertex_objects(scan, exclude=("floor", "lamp")),
        np.repeat([1, 0, 3, 0], [150, 120, 130, 100]),
    )
    (scan / "scene0001_00.aggregation.json").write_text('{"segGroups": [{"label": "x"}]}')
    with pytest.raises(InputError, match=r"segGroups\[0\] needs 'objectId'"):
        read_vertex_objects(scan)


def test_load_gt_bad_input(tmp_path):
    scan = _tiny_scan(tmp_path, {10: 5, 20: 2, 30: 3, 40: 35})
    (scan / "scene0001_00.aggregation.json").unlink()
    with pytest.raises(InputError, match="aggregation.json"):
        load_scannet_gt(scan)
    scan2 = _write_scan(
        tmp_path / "s2", "s2", ply_labels=np.ones(9), seg=np.zeros(10, int), groups=[]
    )
    with pytest.raises(InputError, match="9 vertices"):
        load_scannet_gt(scan2)


def test_export_round_trip_and_bad_masks(tmp_path):
    from lift3d.export import write_scannet_instances

    scan = _tiny_scan(tmp_path, {10: 5, 20: 2, 30: 3, 40: 35})
    gt = load_scannet_gt(scan)
    pred = tmp_path / "pred"
    write_scannet_instances(pred, "scene0001_00", gt.instance, np.ones(gt.num_vertices))
    result = evaluate_scannet_export(scan, pred)
    assert result["AP"] == pytest.approx(1.0) and result["num_vertices"] == 500

    mask_file = next((pred / "pred_mask").glob("*.txt"))
    mask_file.write_text("0\n" * 499)
    with pytest.raises(InputError, match="499 values") as err:
        evaluate_scannet_export(scan, pred)
    assert err.value.path == mask_file
    mask_file.unlink()
    with pytest.raises(InputError, match="not found"):
        evaluate_scannet_export(scan, pred)
    with pytest.raises(InputError, match="index"):
        evaluate_scannet_export(scan, tmp_path / "nothing")


def test_scene0000_ground_truth_and_self_evaluation(tmp_path):
    if not SCENE0000.is_dir():
        pytest.skip(f"shared data not found at {SCENE0000}")
    from lift3d.export import write_scannet_instances

    gt = load_scannet_gt(SCENE0000)
    # 55 annotated objects; 25 of them in the 18 benchmark classes (walls, floor, stools, tv,
    # pillow, nightstands, shower and small props are void)
    assert gt.num_vertices == 81369 and len(gt.labels) == 25
    assert sorted(set(gt.labels.values())) == [3, 4, 6, 7, 8, 9, 10, 12, 14, 16, 24, 33, 34, 39]
    write_scannet_instances(tmp_path, "scene0000_00", gt.instance, np.ones(gt.num_vertices))
    _all(evaluate_scannet_export(SCENE0000, tmp_path), 1.0)
