"""Superpoints: the FH kernel against its reference, mesh / k-NN superpoints on the synthetic scan."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lift3d.errors import InputError
from lift3d.recon.superpoints import (
    SuperpointConfig,
    _segment_graph_reference,
    compute_superpoints,
    find_segments_file,
    read_segments,
    scannet_mesh_graph,
    scene_superpoints,
    segment_graph,
)


def _mesh(scene_dir):
    from lift3d.recon.scene_points import read_mesh_faces, read_mesh_vertices

    path = scene_dir / f"{scene_dir.name}_vh_clean_2.ply"
    xyz, rgb = read_mesh_vertices(path)
    return path, xyz, rgb, read_mesh_faces(path)


def _gt_segments(scene_dir, n):
    """The synthetic scan's GT pieces: each object (two mesh segments), the floor, each wall."""
    from lift3d.recon.scannet.gt import read_vertex_objects

    seg = read_segments(scene_dir / f"{scene_dir.name}_vh_clean_2.0.010000.segs.json", n).index
    obj = read_vertex_objects(scene_dir)
    return np.unique(np.where(obj > 0, obj, 1000 + seg), return_inverse=True)[1]


@pytest.mark.parametrize("n", [1, 7, 60, 400])
@pytest.mark.parametrize("min_size", [1, 4])
def test_segment_graph_matches_reference(n, min_size):
    rng = np.random.default_rng(n + min_size)
    edges = rng.integers(0, n, (3 * n, 2))
    weights = rng.random(3 * n).round(2)  # ties too
    size = rng.uniform(0.5, 2.0, n)
    fast = segment_graph(n, edges, weights, threshold=0.7, min_size=min_size, node_size=size)
    ref = _segment_graph_reference(
        n, edges, weights, threshold=0.7, min_size=min_size, node_size=size
    )
    np.testing.assert_array_equal(fast, ref)


def test_segment_graph_joins_cheap_edges_only():
    # two triangles joined by one expensive edge
    edges = np.array([[0, 1], [1, 2], [0, 2], [3, 4], [4, 5], [3, 5], [2, 3]])
    w = np.array([0.01] * 6 + [5.0])
    assert segment_graph(6, edges, w, threshold=1.0).tolist() == [0, 0, 0, 1, 1, 1]


def test_mesh_superpoints_never_straddle_objects(synthetic_scene_dir):
    _, xyz, rgb, faces = _mesh(synthetic_scene_dir)
    gt = _gt_segments(
        synthetic_scene_dir, len(xyz)
    )  # the synthetic scan's segments are its objects and walls
    sp = compute_superpoints(xyz, faces=faces, colors=rgb)
    assert sp.count >= gt.max() + 1
    for s in range(sp.count):
        assert len(np.unique(gt[sp.index == s])) == 1, f"superpoint {s} straddles two objects"


def test_superpoint_sizes_follow_threshold(synthetic_scene_dir):
    _, xyz, rgb, faces = _mesh(synthetic_scene_dir)
    counts = [
        compute_superpoints(
            xyz, faces=faces, config=SuperpointConfig(threshold=t, min_points=1)
        ).count
        for t in (1e-4, 1e-2, 1.0)
    ]
    assert counts[0] > counts[1] > counts[2]
    sp = compute_superpoints(xyz, faces=faces, config=SuperpointConfig(min_points=50))
    assert sp.sizes().min() >= 50


def test_knn_superpoints_on_points(synthetic_scene_dir):
    _, xyz, rgb, _ = _mesh(synthetic_scene_dir)
    gt = _gt_segments(synthetic_scene_dir, len(xyz))
    sp = compute_superpoints(xyz, colors=rgb)
    assert sp.source == "k-NN graph"
    purity = [np.bincount(gt[sp.index == s]).max() / (sp.index == s).sum() for s in range(sp.count)]
    assert np.mean(purity) > 0.95


def test_scene_superpoints_prefers_segs_json(synthetic_scene_dir):
    path, xyz, rgb, faces = _mesh(synthetic_scene_dir)
    assert find_segments_file(path) is not None
    assert scene_superpoints(xyz, faces=faces, mesh_path=path).source.endswith(".segs.json")
    computed = scene_superpoints(
        xyz, faces=faces, mesh_path=path, config=SuperpointConfig(source="compute")
    )
    assert computed.source == "mesh graph"


def test_segs_json_of_another_mesh_is_refused(tmp_path):
    p = tmp_path / "x_vh_clean_2.0.010000.segs.json"
    p.write_text(json.dumps({"segIndices": [0, 0, 1]}))
    with pytest.raises(InputError, match="3 segment ids, the mesh has 5 vertices") as e:
        read_segments(p, 5)
    assert str(p) in str(e.value)
    p.write_text("{not json")
    with pytest.raises(InputError, match="cannot read"):
        read_segments(p, 3)


def test_segs_required_but_missing(tmp_path):
    with pytest.raises(InputError, match="no \\*.segs.json"):
        scene_superpoints(
            np.zeros((3, 3)), mesh_path=tmp_path / "m.ply", config=SuperpointConfig(source="segs")
        )


def test_bad_faces_are_refused():
    with pytest.raises(InputError, match="faces must be"):
        compute_superpoints(np.zeros((3, 3)), faces=np.array([[0, 1, 7]]))


def test_connected_components_are_numbered_by_first_node():
    from lift3d.recon.superpoints import connected_components

    assert connected_components(6, np.array([[4, 5], [1, 3], [3, 0]])).tolist() == [
        0,
        0,
        1,
        0,
        2,
        2,
    ]
    assert connected_components(3, np.zeros((0, 2), np.int64)).tolist() == [0, 1, 2]


def _fold(height):
    """Two triangles sharing the edge (0, 1) along y; the far vertices at +-x lifted by `height`
    (height < 0: a ridge, convex; > 0: a valley, concave). Faces wound so normals point up (+z)."""
    xyz = np.array([[0, 0, 0], [0, 1, 0], [1, 0.5, height], [-1, 0.5, height]], np.float32)
    faces = np.array([[0, 2, 1], [0, 1, 3]])
    return xyz, faces


def test_scannet_graph_squares_convex_edges_only():
    # the segmentator's rule: 1 - n_a.n_b over the mean (not renormalised) face normals, squared
    # where the edge runs along the end vertex's normal
    for height, convex in ((-0.5, True), (0.5, False)):
        xyz, faces = _fold(height)
        edges, w = scannet_mesh_graph(xyz, faces)
        assert len(edges) == 3 * len(faces)  # three directed edges per face, duplicates kept
        fn = np.cross(xyz[faces[:, 1]] - xyz[faces[:, 0]], xyz[faces[:, 2]] - xyz[faces[:, 0]])
        fn /= np.linalg.norm(fn, axis=1, keepdims=True)
        vn = np.stack([fn.mean(0), fn.mean(0), fn[0], fn[1]])  # 0, 1 lie on both faces
        for (a, b), wi in zip(edges, w):
            d = xyz[b] - xyz[a]
            raw = 1.0 - float(vn[a] @ vn[b])
            expect = raw * raw if float(vn[b] @ d) > 0 else raw
            assert wi == pytest.approx(expect, abs=1e-6)
        # the shared vertices' normals are shorter than 1: their edge to a far vertex weighs more
        # than the fold alone would on a ridge, and a valley edge is never squared
        shared_to_far = [wi for (a, b), wi in zip(edges, w) if {int(a), int(b)} == {0, 2}]
        assert shared_to_far and all(x > 0 for x in shared_to_far)
        squared = [wi < 1.0 - float(vn[a] @ vn[b]) - 1e-9 for (a, b), wi in zip(edges, w)]
        assert any(squared) == convex


def test_scannet_graph_skips_degenerate_faces():
    xyz, faces = _fold(-0.5)
    faces = np.concatenate([faces, [[0, 0, 1], [2, 2, 2]]])  # a repeated vertex, a point
    edges, w = scannet_mesh_graph(xyz, faces)
    assert (edges[:, 0] != edges[:, 1]).all() and np.isfinite(w).all()
    clean_edges, clean_w = scannet_mesh_graph(*_fold(-0.5))
    # the degenerate faces add edges but leave the proper faces' normals as they were: the
    # vertices 0 and 1 average in a zero normal, so only their length changes, not direction
    assert len(edges) == len(clean_edges) + 2


def test_computed_superpoints_reproduce_scannet_segmentator(shared_data):
    """On a real scan, computing the superpoints gives what ScanNet ships (its segs.json)."""
    from sklearn.metrics import adjusted_rand_score

    root = shared_data / "scannet" / "scene0000_00"
    path, xyz, rgb, faces = _mesh(root)
    shipped = read_segments(root / "scene0000_00_vh_clean_2.0.010000.segs.json", len(xyz))
    ours = compute_superpoints(xyz, faces=faces, config=SuperpointConfig(source="compute"))
    assert abs(ours.count - shipped.count) <= 0.02 * shipped.count
    assert adjusted_rand_score(shipped.index, ours.index) > 0.99
