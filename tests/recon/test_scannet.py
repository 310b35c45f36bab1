"""The ScanNet export reader, on the shared scene0000_00 / scene0707_00 and on bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lift3d.errors import InputError
from lift3d.recon import load_scene
from lift3d.recon.detect import resolve_scene_path


def test_scene0000_backprojected_depth_lies_on_the_gt_mesh(shared_data):
    """Depth + intrinsics + poses land within a median of 3.5 cm of the GT mesh vertices."""
    from plyfile import PlyData
    from scipy.spatial import cKDTree

    scene = load_scene(shared_data / "scannet" / "scene0000_00")
    assert len(scene) == 300 and scene.size == (640, 480) and scene.has_geometry
    assert scene.mesh_path is not None and scene.mesh_path.name == "scene0000_00_vh_clean_2.ply"
    v = PlyData.read(str(scene.mesh_path))["vertex"]
    tree = cKDTree(np.stack([v["x"], v["y"], v["z"]], -1))
    dists = []
    for i in (0, 100, 200, 299):
        f = scene[i]
        assert f.image.shape == (480, 640, 3) and f.pointmap.shape == (480, 640, 3)
        pts = f.pointmap[f.valid][::50]
        dists.append(tree.query(pts)[0])
    median = float(np.median(np.concatenate(dists)))
    assert median < 0.035, median


def test_scene0707_colour_and_depth_sizes_differ(shared_data):
    scene = load_scene(shared_data / "scannet" / "scene0707_00")
    f = scene[0]
    assert scene.size == (640, 480)
    assert f.image.shape == (480, 640, 3) and f.depth.shape == (480, 640)
    assert f.valid.mean() > 0.5


def test_scannet_scene_number_resolves_to_the_only_scan(tmp_path):
    (tmp_path / "scannet" / "scene0000_00").mkdir(parents=True)
    assert (
        resolve_scene_path(tmp_path / "scannet" / "scene0000")
        == tmp_path / "scannet" / "scene0000_00"
    )
    (tmp_path / "scannet" / "scene0000_01").mkdir()
    with pytest.raises(InputError, match="scene0000_00, scene0000_01"):
        resolve_scene_path(tmp_path / "scannet" / "scene0000")
    with pytest.raises(InputError, match="scene not found.*scene0000_00"):
        resolve_scene_path(tmp_path / "scannet" / "scene0042_00")


@pytest.fixture
def scan_copy(synthetic_scene_dir, tmp_path) -> Path:
    dst = tmp_path / "scene0999_00"
    shutil.copytree(synthetic_scene_dir, dst)
    return dst


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(InputError, match="scene not found"):
        load_scene(tmp_path / "nope")


def test_colour_without_depth_is_named(scan_copy):
    (scan_copy / "depth" / "3.png").unlink()
    with pytest.raises(InputError, match=r"3\.png.*colour .* but no depth"):
        load_scene(scan_copy)


def test_pose_that_is_not_4x4_is_named(scan_copy):
    (scan_copy / "pose" / "2.txt").write_text("1 0 0\n0 1 0\n0 0 1\n")
    with pytest.raises(InputError, match=r"2\.txt.*4x4"):
        load_scene(scan_copy)


def test_intrinsics_with_zeros_are_named(scan_copy):
    (scan_copy / "intrinsic" / "intrinsic_depth.txt").write_text(" ".join(["0"] * 16))
    with pytest.raises(InputError, match="intrinsic_depth.txt.*focal"):
        load_scene(scan_copy)


def test_unreadable_image_is_named_when_loaded(scan_copy):
    (scan_copy / "color" / "1.jpg").write_bytes(b"not a jpeg")
    scene = load_scene(scan_copy)
    with pytest.raises(InputError, match=r"1\.jpg.*cannot decode"):
        scene[1]


def test_non_finite_pose_frames_are_dropped_with_one_warning(scan_copy, caplog):
    for i in (2, 5):
        (scan_copy / "pose" / f"{i}.txt").write_text("\n".join(["-inf -inf -inf -inf"] * 4))
    scene = load_scene(scan_copy)
    assert scene.frame_names == ["0", "1", "3", "4", "6", "7"]
    warnings = [r for r in caplog.records if "non-finite pose" in r.getMessage()]
    assert len(warnings) == 1 and "2, 5" in warnings[0].getMessage()
