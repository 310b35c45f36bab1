"""The evaluation harness and the SAM3D baseline, on a tiny fake DAVIS folder and the synthetic scan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lift3d.cli import EvalDavis
from lift3d.consistency.baselines import match_groups, pairwise_indices, sam3d_merge, sam3d_merge_2d
from lift3d.errors import InputError
from lift3d.evaluation import METHODS, evaluate_davis_sequence, run_davis_eval, run_scannet_eval
from lift3d.io import read_label_map, write_label_map

H, W = 48, 64


def _fake_frame(t: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """A grey textured frame with a red square moving right 2 px per frame (the object) and a
    static blue bar; returns (image, object mask)."""
    img = np.full((H, W, 3), 120, np.int16) + rng.integers(-4, 5, (H, W, 1))
    mask = np.zeros((H, W), bool)
    mask[14:30, 8 + 2 * t : 24 + 2 * t] = True
    img[mask] = (210, 30, 30)
    img[36:44, 30:60] = (30, 40, 200)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def _write_fake_davis(root: Path, seq: str = "square", n: int = 5) -> np.ndarray:
    rng = np.random.default_rng(0)
    masks = []
    for t in range(n):
        img, mask = _fake_frame(t, rng)
        for sub, arr in (("JPEGImages", img), ("Annotations", mask.astype(np.uint8) * 255)):
            d = root / sub / "480p" / seq
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(
                d / f"{t:05d}.{'jpg' if sub == 'JPEGImages' else 'png'}", quality=100, subsampling=0
            )
        masks.append(mask)
    return np.stack(masks)


@pytest.fixture(scope="module")
def davis_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("davis")
    gt = _write_fake_davis(root)
    out = root / "eval"
    results = run_davis_eval(EvalDavis(root=root, out=out, methods=METHODS), verbose=False)
    return root, out, gt, results


# ---------------------------------------------------------------------------------------------
# DAVIS harness


def test_davis_eval_runs_every_method_and_writes_label_maps(davis_run):
    root, out, gt, results = davis_run
    assert json.loads((out / "results.json").read_text())["methods"] == list(METHODS)
    for m in METHODS:
        files = sorted((out / m / "square").glob("*.png"))
        assert [f.stem for f in files] == [f"{t:05d}" for t in range(len(gt))]
        maps = np.stack([read_label_map(f) for f in files])
        assert maps.shape == gt.shape  # written at the annotations' size
        r = results["per_sequence"][m]["square"]
        assert r["frames"] == len(gt)
        for v in (*r["paper"].values(), *(r["sequence"][k] for k in ("J", "F", "JF"))):
            assert 0.0 <= v <= 1.0
        # the mean over one sequence is that sequence
        assert results["mean"][m]["sequence"]["JF"] == pytest.approx(r["sequence"]["JF"])


def test_davis_eval_finds_the_clean_square(davis_run):
    _, _, _, results = davis_run
    # a flat red square on grey: every method's best mask per frame is the square itself
    for m in METHODS:
        assert results["per_sequence"][m]["square"]["paper"]["iou"] > 0.9, m
    # tracking keeps one ID on it; framewise IDs are a random permutation per frame
    for m in ("sam3d", "mastsam", "mastsam-no-unmasked"):
        assert results["per_sequence"][m]["square"]["sequence"]["J"] > 0.9, m
        assert results["per_sequence"][m]["square"]["H"] > 0.95, m


def test_davis_scores_are_those_of_the_written_maps(davis_run):
    from lift3d.consistency.davis import paper_protocol

    root, out, gt, results = davis_run
    maps = np.stack([read_label_map(f) for f in sorted((out / "mastsam" / "square").glob("*.png"))])
    assert paper_protocol(maps, gt)["iou"] == pytest.approx(
        results["per_sequence"]["mastsam"]["square"]["paper"]["iou"]
    )


def test_davis_prediction_folder_bad_input(davis_run, tmp_path):
    root, out, gt, _ = davis_run
    pred = tmp_path / "pred"
    for t in range(len(gt)):
        write_label_map(pred / f"{t:05d}.png", gt[t].astype(np.int32))
    r = evaluate_davis_sequence(root, "square", pred)
    assert r["paper"]["iou"] == 1.0 and r["sequence"]["JF"] == 1.0 and r["H"] == 1.0
    (pred / "00003.png").unlink()
    with pytest.raises(InputError, match="00003.png") as e:
        evaluate_davis_sequence(root, "square", pred)
    assert e.value.path == pred / "00003.png"
    write_label_map(pred / "00003.png", np.zeros((H, W + 1), np.int32))
    with pytest.raises(InputError, match="65x48, the annotation is 64x48") as e:
        evaluate_davis_sequence(root, "square", pred)
    assert e.value.path == pred / "00003.png"
    with pytest.raises(InputError, match="not found"):
        evaluate_davis_sequence(root, "square", tmp_path / "nothing")


def test_unknown_method_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="unknown method"):
        run_davis_eval(
            EvalDavis(root=tmp_path, out=tmp_path / "o", methods=("sam4d",)), verbose=False
        )


# ---------------------------------------------------------------------------------------------
# SAM3D merging


def test_pairwise_indices_is_sam3ds():
    assert pairwise_indices(5) == [[0, 1], [2, 3], [4]]
    assert pairwise_indices(1) == [[0]]


def test_match_groups_ratio_against_the_smaller_group():
    # new group 7: 6 pairs on ref 1, 2 on ref 2 -> ref 1 wins; 6 / min(10, 8) >= 0.5
    g_ref = np.array([1] * 6 + [2] * 2 + [2] * 3)
    g_new = np.array([7] * 8 + [8] * 3)
    size_ref = np.zeros(3, np.int64)
    size_ref[[1, 2]] = (10, 40)
    size_new = np.zeros(9, np.int64)
    size_new[[7, 8]] = (8, 7)
    # new group 8: 3 pairs on ref 2, 3 / min(7, 40) < 0.5 -> stays apart
    assert match_groups(g_ref, g_new, size_ref, size_new) == {7: 1}
    assert match_groups(g_ref, g_new, size_ref, size_new, ratio=0.4) == {7: 1, 8: 2}


def test_sam3d_2d_merges_masks_through_correspondences():
    f0 = np.zeros((8, 12), np.int32)
    f0[:, :4], f0[:, 4:8] = 1, 2
    f1 = np.zeros_like(f0)
    f1[:, :4], f1[:, 4:8], f1[:, 8:] = 5, 3, 9  # same objects, other IDs, plus a new one
    f2 = np.zeros_like(f0)
    f2[:, 1:5], f2[:, 5:9], f2[:, 9:] = 2, 1, 4  # everything moved right by one pixel
    vs, us = np.mgrid[0:8, 0:12]
    uv = np.stack([us.ravel(), vs.ravel()], 1).astype(np.float32)
    still = (uv, uv, np.ones(len(uv), np.float32))
    moved = (
        uv[uv[:, 0] < 11],
        uv[uv[:, 0] < 11] + [1, 0],
        np.ones(int((uv[:, 0] < 11).sum()), np.float32),
    )
    out = sam3d_merge_2d(np.stack([f0, f1, f2]), [still, moved], stride=1)
    assert out.shape == (3, 8, 12) and out.dtype == np.int32
    a, b = out[0, 0, 0], out[0, 0, 5]
    assert a != b and a > 0 and b > 0
    assert (out[1, :, :4] == a).all() and (out[1, :, 4:8] == b).all()
    assert (out[2, :, 1:5] == a).all() and (out[2, :, 5:9] == b).all()
    new = out[1, 0, 9]
    assert new not in (a, b) and (out[2, :, 9:] == new).all()
    assert (out[0, :, 8:] == 0).all()


def test_sam3d_2d_keeps_unrelated_masks_apart():
    f0 = np.zeros((6, 6), np.int32)
    f0[:3] = 1
    f1 = np.zeros_like(f0)
    f1[3:] = 1  # ID 1 again, but on the other half: not the same object
    vs, us = np.mgrid[0:6, 0:6]
    uv = np.stack([us.ravel(), vs.ravel()], 1).astype(np.float32)
    out = sam3d_merge_2d(np.stack([f0, f1]), [(uv, uv, np.ones(len(uv), np.float32))], stride=1)
    assert out[0, 0, 0] != out[1, 5, 0]


def test_sam3d_bad_input():
    with pytest.raises(InputError, match="match sets"):
        sam3d_merge_2d(np.zeros((3, 4, 4), np.int32), [])
    with pytest.raises(InputError, match="must agree"):
        sam3d_merge(
            np.zeros((2, 4, 4), np.int32),
            np.zeros((2, 4, 5, 3), np.float32),
            np.zeros((2, 4, 4), bool),
        )
    with pytest.raises(InputError, match="integer"):
        sam3d_merge_2d(np.zeros((2, 4, 4), np.float32), [()])


def test_sam3d_merges_one_object_seen_in_two_views_into_one_id(synthetic_scene_dir, synthetic_gt):
    """Exact: the GT instance maps of two views, with the IDs of each view shuffled, come out
    with one ID per object shared by both views and distinct IDs for distinct objects."""
    from lift3d.recon import load_scene

    scene = load_scene(synthetic_scene_dir)
    frames = [scene[0], scene[1]]
    pointmaps = np.stack([np.nan_to_num(f.pointmap) for f in frames])
    valid = np.stack([f.valid for f in frames])
    gt = synthetic_gt[:2]
    rng = np.random.default_rng(3)
    shuffled = np.stack([np.where(g > 0, (rng.permutation(50) + 1)[g], 0) for g in gt]).astype(
        np.int32
    )
    out = sam3d_merge(shuffled, pointmaps, valid)
    assert out.shape == gt.shape
    assert (out[gt == 0] == 0).all()
    ids = {}
    for g in np.unique(gt[gt > 0]):
        got = np.unique(out[gt == g])
        assert len(got) == 1, (g, got)
        ids[int(g)] = int(got[0])
    both = set(np.unique(gt[0])) & set(np.unique(gt[1])) - {0}
    assert len(both) >= 2  # the test would be empty otherwise
    assert len(set(ids.values())) == len(ids)
    # without merging, the shuffled IDs of the two views disagree on some shared object
    assert any(
        np.unique(shuffled[0][gt[0] == g])[0] != np.unique(shuffled[1][gt[1] == g])[0] for g in both
    )


# ---------------------------------------------------------------------------------------------
# ScanNet harness


def test_scannet_eval_on_the_synthetic_scan(synthetic_scene_dir, synthetic_gt, tmp_path):
    results = run_scannet_eval(synthetic_scene_dir, out=tmp_path, frames=None, verbose=False)
    assert json.loads((tmp_path / "results.json").read_text())["scene"] == synthetic_scene_dir.name
    n = len(synthetic_gt)
    for m in METHODS:
        r = results["per_method"][m]
        masks = sorted((tmp_path / m / "masks").glob("*.png"))
        assert len(masks) == n
        assert read_label_map(masks[0]).shape == synthetic_gt.shape[1:]
        assert (tmp_path / m / "scannet" / f"{synthetic_scene_dir.name}.txt").is_file()
        assert r["num_gt"] == 5  # the synthetic scan's five objects are all benchmark classes
        for k in ("AP", "AP50", "AP25"):
            assert 0.0 <= r[k] <= 1.0
        assert r["H"] is None or 0.0 <= r["H"] <= 1.0
    # association is what the 3D benchmark rewards: IDs independent per view cannot be lifted
    assert results["per_method"]["mastsam"]["AP50"] > results["per_method"]["framewise"]["AP50"]
    assert results["per_method"]["sam3d"]["AP50"] > results["per_method"]["framewise"]["AP50"]


def test_eval_davis_command_end_to_end(davis_run, tmp_path, capsys):
    from lift3d.cli import entrypoint

    root = davis_run[0]
    out = tmp_path / "cli"
    argv = [
        "eval",
        "davis",
        "--root",
        str(root),
        "--methods",
        "framewise",
        "mastsam",
        "--max-frames",
        "3",
        "--out",
        str(out),
    ]
    assert entrypoint(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["methods"] == ["framewise", "mastsam"]
    assert results["per_sequence"]["mastsam"]["square"]["frames"] == 3
    assert len(list((out / "mastsam" / "square").glob("*.png"))) == 3
    assert "mastsam" in capsys.readouterr().out
    # bad input is one line and exit code 2
    assert entrypoint(["eval", "davis", "--root", str(tmp_path / "none"), "--out", str(out)]) == 2


def test_eval_scannet_command_runs_methods_or_scores_a_prediction(
    synthetic_scene_dir, tmp_path, capsys
):
    from lift3d.cli import entrypoint

    out = tmp_path / "eval"
    argv = [
        "eval",
        "scannet",
        "--scene",
        str(synthetic_scene_dir),
        "--methods",
        "framewise",
        "mastsam",
        "--frames",
        "::4",
        "--out",
        str(out),
    ]
    assert entrypoint(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["per_method"]) == ["framewise", "mastsam"]
    n = len(list((synthetic_scene_dir / "color").glob("*.jpg")))
    assert len(list((out / "mastsam" / "masks").glob("*.png"))) == len(range(0, n, 4))
    capsys.readouterr()
    # a prediction folder is scored as it is, and gives the AP the run recorded
    assert (
        entrypoint(
            [
                "eval",
                "scannet",
                "--scene",
                str(synthetic_scene_dir),
                "--pred",
                str(out / "mastsam" / "scannet"),
            ]
        )
        == 0
    )
    scored = json.loads(capsys.readouterr().out)
    assert scored["AP50"] == results["per_method"]["mastsam"]["AP50"]
    assert (
        entrypoint(["eval", "scannet", "--scene", str(tmp_path / "none"), "--out", str(out)]) == 2
    )


def test_scannet_eval_with_the_geometric_default(synthetic_scene_dir, tmp_path):
    from lift3d.config import SegmenterConfig
    from lift3d.evaluation import run_scannet_eval

    res = run_scannet_eval(
        synthetic_scene_dir,
        out=tmp_path,
        methods=("mastsam", "mastsam-merged"),
        segmenter=SegmenterConfig(name="geometric"),
        verbose=False,
        pairwise=False,
    )
    assert res["backends"]["segmenter"] == "geometric"
    for m in ("mastsam", "mastsam-merged"):
        assert res["per_method"][m]["AP50"] > 0.9, (m, res["per_method"][m])


def test_scannet_eval_max_frames_spreads_the_views_as_segment_does(synthetic_scene_dir, tmp_path):
    from lift3d.evaluation import run_scannet_eval
    from lift3d.recon import load_scene
    from lift3d.recon.scene import select_frames

    res = run_scannet_eval(
        synthetic_scene_dir,
        out=tmp_path,
        methods=("framewise",),
        frames="1:",
        max_frames=3,
        verbose=False,
        pairwise=False,
    )
    expected = select_frames(load_scene(synthetic_scene_dir), frames="1:", max_frames=3)
    assert res["settings"]["frame_names"] == expected.frame_names
    assert res["settings"]["frames_used"] == 3 and res["settings"]["max_frames"] == 3
    names = load_scene(synthetic_scene_dir).frame_names
    assert expected.frame_names[0] == names[1] and expected.frame_names[-1] == names[-1]
