"""Labeled point PLY and the ScanNet benchmark instance format: round trips, atomicity, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from lift3d.errors import InputError
from lift3d.export import read_scannet_instances, write_points_ply, write_scannet_instances


def _cloud(n: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    label = rng.integers(0, 4, n).astype(np.int32)
    conf = rng.random(n).astype(np.float32)
    return xyz, rgb, label, conf


def test_points_ply_round_trip_with_plyfile(tmp_path):
    from plyfile import PlyData

    xyz, rgb, label, conf = _cloud()
    write_points_ply(tmp_path / "points.ply", xyz, rgb, label, conf)
    ply = PlyData.read(str(tmp_path / "points.ply"))
    assert ply.text is False
    v = ply["vertex"].data
    assert [(p.name, p.val_dtype) for p in ply["vertex"].properties] == [
        ("x", "f4"),
        ("y", "f4"),
        ("z", "f4"),
        ("red", "u1"),
        ("green", "u1"),
        ("blue", "u1"),
        ("label", "i4"),
        ("confidence", "f4"),
    ]
    np.testing.assert_array_equal(np.stack([v["x"], v["y"], v["z"]], 1), xyz)
    np.testing.assert_array_equal(np.stack([v["red"], v["green"], v["blue"]], 1), rgb)
    np.testing.assert_array_equal(v["label"], label)
    np.testing.assert_array_equal(v["confidence"], conf)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points.ply"]  # no temporary left


def test_points_ply_bad_shapes(tmp_path):
    xyz, rgb, label, conf = _cloud()
    with pytest.raises(InputError, match=r"\[P, 3\]"):
        write_points_ply(tmp_path / "p.ply", xyz[:, :2], rgb, label, conf)
    with pytest.raises(InputError, match="rgb"):
        write_points_ply(tmp_path / "p.ply", xyz, rgb[:3], label, conf)
    with pytest.raises(InputError, match="label"):
        write_points_ply(tmp_path / "p.ply", xyz, rgb, label[:, None], conf)
    with pytest.raises(InputError, match="confidence"):
        write_points_ply(tmp_path / "p.ply", xyz, rgb, label, conf[1:])
    assert not any(tmp_path.iterdir())


LABEL = np.array([0, 4, 4, 2, 0, 2, 2, 9, 4], np.int32)
CONF = np.array([0, 0.5, 1.0, 0.2, 0, 0.4, 0.6, 1.0, 0.9], np.float32)


def test_scannet_instances_layout_and_round_trip(tmp_path):
    ids = write_scannet_instances(tmp_path, "scene0000_00", LABEL, CONF, min_points=2)
    assert ids == [2, 4]  # instance 9 holds one vertex
    index = (tmp_path / "scene0000_00.txt").read_text().splitlines()
    assert index == [
        "pred_mask/scene0000_00_000.txt 1 0.400000",
        "pred_mask/scene0000_00_001.txt 1 0.800000",
    ]
    assert (
        tmp_path / "pred_mask/scene0000_00_000.txt"
    ).read_text() == "0\n0\n0\n1\n0\n1\n1\n0\n0\n"
    masks, conf = read_scannet_instances(tmp_path, "scene0000_00", len(LABEL))
    assert masks.dtype == bool and masks.shape == (2, 9) and conf.dtype == np.float32
    np.testing.assert_array_equal(masks, np.stack([LABEL == 2, LABEL == 4]))
    np.testing.assert_allclose(conf, [0.4, 0.8], rtol=1e-6)
    # the official evaluation reads masks with np.loadtxt
    np.testing.assert_array_equal(
        np.loadtxt(tmp_path / "pred_mask/scene0000_00_001.txt"), LABEL == 4
    )


def test_scannet_rewrite_removes_stale_masks_of_that_scene_only(tmp_path):
    write_scannet_instances(tmp_path, "scene0000_00", LABEL, CONF)
    write_scannet_instances(tmp_path, "scene0001_00", LABEL, CONF)
    assert len(list((tmp_path / "pred_mask").iterdir())) == 6
    write_scannet_instances(tmp_path, "scene0000_00", np.where(LABEL == 4, 1, 0), CONF)
    names = sorted(p.name for p in (tmp_path / "pred_mask").iterdir())
    assert names == [
        "scene0000_00_000.txt",
        "scene0001_00_000.txt",
        "scene0001_00_001.txt",
        "scene0001_00_002.txt",
    ]
    masks, _ = read_scannet_instances(tmp_path, "scene0000_00", len(LABEL))
    np.testing.assert_array_equal(masks, [LABEL == 4])


def test_scannet_no_instances_writes_an_empty_index(tmp_path):
    assert (
        write_scannet_instances(tmp_path, "scene0002_00", np.zeros(5, np.int32), np.zeros(5)) == []
    )
    masks, conf = read_scannet_instances(tmp_path, "scene0002_00", 5)
    assert masks.shape == (0, 5) and conf.shape == (0,)


def test_scannet_interrupted_write_keeps_the_previous_index(tmp_path, monkeypatch):
    import lift3d.export as export

    write_scannet_instances(tmp_path, "scene0000_00", LABEL, CONF)
    before = (tmp_path / "scene0000_00.txt").read_text()
    calls = []

    def failing(mask):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return b"1\n" * len(mask)

    monkeypatch.setattr(export, "_mask_bytes", failing)
    with pytest.raises(KeyboardInterrupt):
        write_scannet_instances(tmp_path, "scene0000_00", LABEL, CONF)
    assert (tmp_path / "scene0000_00.txt").read_text() == before
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_scannet_write_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="confidence"):
        write_scannet_instances(tmp_path, "scene0000_00", LABEL, CONF[:3])
    with pytest.raises(InputError, match=">= 0"):
        write_scannet_instances(tmp_path, "scene0000_00", LABEL - 5, CONF)
    with pytest.raises(InputError, match="cannot name a file"):
        write_scannet_instances(tmp_path, "../evil", LABEL, CONF)


def test_scannet_read_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="not found") as err:
        read_scannet_instances(tmp_path, "scene0000_00", 9)
    assert err.value.path == tmp_path / "scene0000_00.txt"
    write_scannet_instances(tmp_path, "scene0000_00", LABEL, CONF)
    with pytest.raises(InputError, match="has 9 values, the mesh has 10 vertices") as err:
        read_scannet_instances(tmp_path, "scene0000_00", 10)
    assert err.value.path.name == "scene0000_00_000.txt"
    (tmp_path / "pred_mask/scene0000_00_001.txt").write_text("0\n2\n" + "0\n" * 7)
    with pytest.raises(InputError, match="0 or 1"):
        read_scannet_instances(tmp_path, "scene0000_00", 9)
    (tmp_path / "pred_mask/scene0000_00_001.txt").unlink()
    with pytest.raises(InputError, match="listed on line 2"):
        read_scannet_instances(tmp_path, "scene0000_00", 9)
    (tmp_path / "scene0000_00.txt").write_text("pred_mask/scene0000_00_000.txt 1\n")
    with pytest.raises(InputError, match="line 1"):
        read_scannet_instances(tmp_path, "scene0000_00", 9)
    (tmp_path / "scene0000_00.txt").write_text("pred_mask/scene0000_00_000.txt one 0.5\n")
    with pytest.raises(InputError, match="class id must be an integer"):
        read_scannet_instances(tmp_path, "scene0000_00", 9)


def test_labeled_mesh_keeps_faces_and_colours_vertices_by_instance(tmp_path):
    from plyfile import PlyData

    from lift3d.export import write_labeled_mesh
    from lift3d.viewers.palette import UNLABELED_GREY, label_colors

    xyz = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], np.float32)
    faces = np.array([[0, 1, 2], [1, 3, 2]])
    label = np.array([0, 4, 4, 7], np.int32)
    write_labeled_mesh(
        tmp_path / "mesh.ply", xyz, faces, label, np.array([0, 0.5, 0.5, 1], np.float32)
    )
    ply = PlyData.read(str(tmp_path / "mesh.ply"))
    np.testing.assert_array_equal(np.vstack(ply["face"]["vertex_indices"]), faces)
    v = ply["vertex"]
    np.testing.assert_array_equal(
        np.stack([v["red"], v["green"], v["blue"]], 1),
        label_colors(label, unlabeled=UNLABELED_GREY),
    )
    np.testing.assert_array_equal(v["label"], label)
    with pytest.raises(InputError, match=r"faces index vertices 0..3, found 0..4"):
        write_labeled_mesh(
            tmp_path / "bad.ply", xyz, np.array([[0, 1, 4]]), label, np.zeros(4, np.float32)
        )
    with pytest.raises(InputError, match=r"faces must have shape \[F, 3\]"):
        write_labeled_mesh(
            tmp_path / "bad.ply", xyz, np.array([0, 1, 2]), label, np.zeros(4, np.float32)
        )
    assert not (tmp_path / "bad.ply").exists()
