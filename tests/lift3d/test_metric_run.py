"""`lift3d metric` and the metric stage of `lift3d segment`: H of label maps (or features) on
disk, streamed a frame at a time, equal to `consistency_score` of the same arrays in memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lift3d.consistency.metric import ArrayFrames, MetricConfig, consistency_score
from lift3d.errors import InputError
from lift3d.metric_run import MaskFrames, run_metric
from lift3d.recon.geometry import scene_pointmaps


def score(pointmaps, valid, labels, *, per_pixel=False, **settings):
    """`consistency_score` of arrays in memory, its `MetricConfig` settings by name."""
    return consistency_score(
        ArrayFrames(pointmaps, valid, labels), config=MetricConfig(**settings), per_pixel=per_pixel
    )


@pytest.fixture(scope="module")
def scene_and_gt(synthetic_scene_dir, synthetic_gt):
    """The scene and its GT instances + 1 (floor and walls become one more object, which touches
    every other: H < 1 where objects meet the floor)."""
    from lift3d.recon import load_scene

    return load_scene(synthetic_scene_dir), synthetic_gt + 1


def write_masks(folder: Path, names: list[str], maps: np.ndarray) -> Path:
    from lift3d.io import write_label_map

    folder.mkdir(parents=True, exist_ok=True)
    for name, m in zip(names, maps):
        write_label_map(folder / f"{name}.png", m)
    return folder


def test_run_metric_equals_consistency_score_on_the_scene(
    tmp_path, synthetic_scene_dir, scene_and_gt
):
    scene, gt = scene_and_gt
    masks = write_masks(tmp_path / "masks", scene.frame_names, gt)
    out = run_metric(
        synthetic_scene_dir, masks, config=MetricConfig(eps=0.03), out_json=tmp_path / "metric.json"
    )
    pointmaps, valid = scene_pointmaps(scene, scene.size)
    direct = score(pointmaps, valid, gt, eps=0.03)
    assert out["H"] == direct.H and out["pairwise"] == direct.pairwise
    assert out["pixels"] == int((valid & (gt > 0)).sum()) > 1000
    assert out["eps"] == 0.03 and out["frames"] == len(scene) and out["size"] == list(scene.size)
    assert json.loads((tmp_path / "metric.json").read_text()) == out
    # GT instances are consistent across views: only object borders disagree
    assert 0.9 < out["H"] < 1 and 0.9 < out["pairwise"] < 1


def test_run_metric_resamples_the_scene_to_the_masks_size(
    tmp_path, synthetic_scene_dir, scene_and_gt
):
    scene, gt = scene_and_gt
    W, H = scene.size
    _, valid = scene_pointmaps(scene, scene.size)
    # label maps at twice the depth size: every label-map pixel takes its nearest depth pixel
    # (half-pixel convention: pixel u of the 2x map sits at u / 2 - 0.25, nearest u // 2)
    one = write_masks(
        tmp_path / "one", scene.frame_names, np.ones((len(scene), 2 * H, 2 * W), np.int32)
    )
    out = run_metric(synthetic_scene_dir, one, config=MetricConfig(eps=0.03))
    assert out["size"] == [2 * W, 2 * H]
    assert out["pixels"] == 4 * int(valid.sum())
    assert out["H"] == 1.0
    up = write_masks(tmp_path / "up", scene.frame_names, gt.repeat(2, axis=1).repeat(2, axis=2))
    at_2x = run_metric(synthetic_scene_dir, up, config=MetricConfig(eps=0.03))
    assert at_2x["pixels"] == 4 * int((valid & (gt > 0)).sum())
    at_1x = run_metric(
        synthetic_scene_dir,
        write_masks(tmp_path / "gt", scene.frame_names, gt),
        config=MetricConfig(eps=0.03),
    )
    # the same labels on the same surfaces, sampled 4x denser: about the same H
    assert at_2x["H"] == pytest.approx(at_1x["H"], abs=0.02)


def test_run_metric_on_features(tmp_path, synthetic_scene_dir, scene_and_gt):
    scene, gt = scene_and_gt
    folder = tmp_path / "features"
    folder.mkdir()
    one_hot = np.eye(gt.max() + 1, dtype=np.float32)[gt][..., 1:]
    for name, f in zip(scene.frame_names, one_hot):
        np.save(folder / f"{name}.npy", f)
    by_features = run_metric(
        synthetic_scene_dir, None, features_dir=folder, config=MetricConfig(eps=0.03)
    )
    by_labels = run_metric(
        synthetic_scene_dir,
        write_masks(tmp_path / "m", scene.frame_names, gt),
        config=MetricConfig(eps=0.03),
    )
    assert by_features["input"] == "features" and by_features["pairwise"] is None
    assert by_features["pixels"] == by_labels["pixels"]
    assert by_features["H"] == pytest.approx(by_labels["H"], abs=1e-9)
    (folder / f"{scene.frame_names[2]}.npy").unlink()
    with pytest.raises(InputError, match=f"{scene.frame_names[2]}.npy"):
        run_metric(synthetic_scene_dir, None, features_dir=folder)


def test_masks_folder_missing_a_frame(tmp_path, synthetic_scene_dir, scene_and_gt):
    scene, gt = scene_and_gt
    masks = write_masks(tmp_path / "masks", scene.frame_names, gt)
    (masks / f"{scene.frame_names[3]}.png").unlink()
    with pytest.raises(
        InputError,
        match=rf"1 of {len(scene)} frames have no label map, e.g. {scene.frame_names[3]}\.png",
    ):
        run_metric(synthetic_scene_dir, masks)


def test_masks_folder_with_an_extra_frame(tmp_path, synthetic_scene_dir, scene_and_gt):
    scene, gt = scene_and_gt
    masks = write_masks(tmp_path / "masks", scene.frame_names, gt)
    Image.fromarray(gt[0].astype(np.uint16)).save(masks / "999999.png")
    with pytest.raises(InputError, match=r"match no frame of the scene .* 999999\.png"):
        run_metric(synthetic_scene_dir, masks)


def test_masks_of_different_sizes(tmp_path, synthetic_scene_dir, scene_and_gt):
    scene, gt = scene_and_gt
    masks = write_masks(tmp_path / "masks", scene.frame_names, gt)
    Image.fromarray(gt[4, :-1].astype(np.uint16)).save(masks / f"{scene.frame_names[4]}.png")
    with pytest.raises(InputError, match=rf"{scene.frame_names[4]}\.png: label map is"):
        run_metric(synthetic_scene_dir, masks)


def test_run_metric_rejects_bad_eps_before_reading(tmp_path):
    with pytest.raises(InputError, match="--eps must be a positive"):
        run_metric(tmp_path / "no-scene", tmp_path / "no-masks", config=MetricConfig(eps=0))


def test_cli_metric_prints_and_writes_json(tmp_path, capsys, synthetic_scene_dir, scene_and_gt):
    from lift3d.cli import entrypoint

    scene, gt = scene_and_gt
    masks = write_masks(tmp_path / "run" / "masks", scene.frame_names, gt)
    assert (
        entrypoint(
            ["metric", "--scene", str(synthetic_scene_dir), "--masks", str(masks), "--eps", "0.03"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    out = json.loads((tmp_path / "run" / "metric.json").read_text())
    assert {"H", "pairwise", "eps", "pixels"} <= set(out)
    assert f"H = {out['H']:.4f}" in printed and f"pixels = {out['pixels']:,}" in printed
    (masks / f"{scene.frame_names[0]}.png").unlink()
    assert entrypoint(["metric", "--scene", str(synthetic_scene_dir), "--masks", str(masks)]) == 2
    assert f"{scene.frame_names[0]}.png" in capsys.readouterr().err


def test_stream_on_the_synthetic_scene_equals_the_in_memory_metric(
    tmp_path, synthetic_scene_dir, scene_and_gt
):
    scene, gt = scene_and_gt
    masks = write_masks(tmp_path / "masks", scene.frame_names, gt)
    pointmaps, valid = scene_pointmaps(scene, scene.size)
    ref = score(pointmaps, valid, gt, eps=0.03, per_pixel=True)
    frames = MaskFrames(scene, masks, scene.size)
    out = consistency_score(
        frames,
        config=MetricConfig(eps=0.03, max_points=5_000, work_dir=tmp_path / "work"),
        per_pixel=tmp_path / "h",
    )
    assert out.pixels == ref.pixels and out.H == ref.H and out.pairwise == ref.pairwise
    np.testing.assert_array_equal(out.per_frame, ref.per_frame)
    np.testing.assert_array_equal(np.asarray(out.per_pixel), ref.per_pixel)
    assert frames.seconds > 0
    assert not list((tmp_path / "work").iterdir())  # spill files removed
