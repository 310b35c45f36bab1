"""The synthetic scene: readable as ScanNet, and its reprojection matches land on the same object."""

from __future__ import annotations

import json

import numpy as np

from lift3d.recon import load_scene
from lift3d.recon.correspondence import reprojection_matches


def test_synthetic_scene_loads_as_scannet(synthetic_scene_dir):
    scene = load_scene(synthetic_scene_dir)
    assert scene.kind == "scannet" and len(scene) == 8 and scene.size == (128, 96)
    f = scene[0]
    assert f.image.shape == (96, 128, 3) and f.valid.mean() > 0.8
    name = synthetic_scene_dir.name
    for suffix in (
        "_vh_clean_2.ply",
        "_vh_clean_2.labels.ply",
        "_vh_clean_2.0.010000.segs.json",
        ".aggregation.json",
    ):
        assert (synthetic_scene_dir / f"{name}{suffix}").is_file()
    agg = json.loads((synthetic_scene_dir / f"{name}.aggregation.json").read_text())
    segs = json.loads((synthetic_scene_dir / f"{name}_vh_clean_2.0.010000.segs.json").read_text())
    assert len(agg["segGroups"]) == 6 and len(segs["segIndices"]) > 1000


def test_reprojection_matches_land_on_the_same_gt_instance(synthetic_scene_dir, synthetic_gt):
    scene = load_scene(synthetic_scene_dir)
    total = same = 0
    for i, j in [(0, 1), (1, 3), (3, 7), (6, 2)]:
        uv_i, uv_j, conf = reprojection_matches(scene[i], scene[j])
        assert uv_i.shape == uv_j.shape and conf.shape == (len(uv_i),) and len(uv_i) > 1000
        assert conf.min() > 0 and conf.max() <= 1
        gi = synthetic_gt[i][uv_i[:, 1].astype(int), uv_i[:, 0].astype(int)]
        gj = synthetic_gt[j][uv_j[:, 1].astype(int), uv_j[:, 0].astype(int)]
        total += len(gi)
        same += int((gi == gj).sum())
    assert same / total >= 0.99, same / total


def test_occluded_points_are_not_matched(synthetic_scene_dir):
    """A view's matches never point at a pixel whose depth is nearer than the reprojected point."""
    scene = load_scene(synthetic_scene_dir)
    fi, fj = scene[0], scene[7]
    uv_i, uv_j, _ = reprojection_matches(fi, fj)
    from lift3d.recon.geometry import project

    p = fi.pointmap[uv_i[:, 1].astype(int), uv_i[:, 0].astype(int)]
    _, z = project(p, fj.K, fj.T_world_camera)
    d = fj.depth[uv_j[:, 1].astype(int), uv_j[:, 0].astype(int)]
    assert np.all(np.abs(z - d) < 0.02 + 0.02 * z)
    # and the same pair without the occlusion test would have had more candidates
    assert len(uv_i) < fi.valid.sum()
