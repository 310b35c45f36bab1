"""The geometric default: object candidates from superpoints, and the segmenter over them."""

from __future__ import annotations

import numpy as np
import pytest

from lift3d.consistency.geometric import GeometricConfig, GeometricSegmenter, object_candidates
from lift3d.errors import InputError
from lift3d.recon.superpoints import SuperpointConfig, compute_superpoints, read_segments


@pytest.fixture(scope="module")
def mesh(synthetic_scene_dir):
    from lift3d.recon.scene_points import read_mesh_faces, read_mesh_vertices

    path = synthetic_scene_dir / f"{synthetic_scene_dir.name}_vh_clean_2.ply"
    xyz, rgb = read_mesh_vertices(path)
    faces = read_mesh_faces(path)
    from lift3d.recon.scannet.gt import read_vertex_objects

    # GT pieces: each object (two mesh segments since the simulator splits along them), the
    # floor and each wall
    seg = read_segments(
        synthetic_scene_dir / f"{synthetic_scene_dir.name}_vh_clean_2.0.010000.segs.json", len(xyz)
    ).index
    obj = read_vertex_objects(synthetic_scene_dir)
    gt = np.unique(np.where(obj > 0, obj, 1000 + seg), return_inverse=True)[1]
    return xyz, rgb, faces, gt


def test_objects_come_out_whole_and_apart_from_the_floor(mesh):
    xyz, rgb, faces, gt = mesh
    # computed superpoints (not the scan's own segments, which are already the objects here)
    sp = compute_superpoints(xyz, faces=faces, colors=rgb, config=SuperpointConfig(threshold=0.005))
    assert sp.count > gt.max() + 1
    cand = object_candidates(xyz, rgb, sp, faces=faces)
    for g in range(gt.max() + 1):
        share = np.bincount(cand.label[gt == g]).max() / (gt == g).sum()
        assert share > 0.98, f"GT piece {g} is split: {share:.2f}"
    for c in range(1, cand.count + 1):
        assert len(np.unique(gt[cand.label == c])) == 1, f"candidate {c} merges two GT pieces"
    assert cand.structure.sum() == 3  # the floor and two walls


def test_without_structure_the_floor_may_join(mesh):
    xyz, rgb, faces, gt = mesh
    sp = compute_superpoints(xyz, faces=faces, colors=rgb, config=SuperpointConfig(threshold=0.005))
    cand = object_candidates(xyz, rgb, sp, faces=faces, config=GeometricConfig(structure=False))
    assert not cand.structure.any()


def test_segmenter_sees_candidates_through_the_pointmap(synthetic_scene_dir, synthetic_gt, mesh):
    from lift3d.recon import load_scene

    xyz, rgb, faces, gt = mesh
    scene = load_scene(synthetic_scene_dir)
    frame = scene[0]
    seg = GeometricSegmenter(xyz, gt + 1, faces=faces)
    out = seg.generate(frame.image, geometry=frame.pointmap)
    assert len(out) >= 2
    inst = synthetic_gt[0]
    for k in np.unique(inst[inst > 0]):
        obj = inst == k
        ious = [(m & obj).sum() / (m | obj).sum() for m in out.masks]
        assert max(ious) > 0.9
        v, u = np.argwhere(obj)[len(np.argwhere(obj)) // 2]
        pts = np.array([[[u, v], [u, v]]], float)
        pred = seg.predict(frame.image, pts, np.array([[1, -1]]), geometry=frame.pointmap)
        assert (pred.masks[0] & obj).sum() / (pred.masks[0] | obj).sum() > 0.9


def test_segmenter_needs_geometry(mesh):
    xyz, _, _, gt = mesh
    seg = GeometricSegmenter(xyz, gt + 1)
    with pytest.raises(InputError, match="pointmap"):
        seg.generate(np.zeros((4, 4, 3), np.uint8), geometry=None)
    with pytest.raises(InputError):
        GeometricSegmenter(xyz, gt[:-1])


def test_up_is_estimated_from_the_cameras_and_any_up_gives_the_same_objects(
    synthetic_scene_dir, mesh
):
    from lift3d.consistency.geometric import estimate_up
    from lift3d.recon import load_scene

    scene = load_scene(synthetic_scene_dir)
    assert estimate_up([f.T_world_camera for f in scene]) == (0.0, 0.0, 1.0)
    # a world whose up is -y (as ICL-NUIM / Redwood trajectories): rotate the scan and its cameras
    R = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # z -> -y
    T = np.eye(4)
    T[:3, :3] = R
    assert estimate_up([T @ f.T_world_camera for f in scene]) == (0.0, -1.0, 0.0)
    xyz, rgb, faces, gt = mesh
    sp = compute_superpoints(xyz, faces=faces, colors=rgb, config=SuperpointConfig(threshold=0.005))
    upright = object_candidates(xyz, rgb, sp, faces=faces, config=GeometricConfig(up=(0, 0, 1)))
    turned = object_candidates(
        xyz @ R.T, rgb, sp, faces=faces, config=GeometricConfig(up=(0, -1, 0))
    )
    np.testing.assert_array_equal(upright.label, turned.label)
    assert turned.structure.sum() == 3
    # with the wrong up, the floor is not found as structure
    wrong = object_candidates(xyz @ R.T, rgb, sp, faces=faces, config=GeometricConfig(up=(0, 0, 1)))
    assert wrong.structure.sum() < 3
