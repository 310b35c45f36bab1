"""Voting label maps onto 3D points: exact small cases, the reference twin, the synthetic scan."""

from __future__ import annotations

import numpy as np
import pytest

from lift3d.errors import InputError
from lift3d.points import PointLabels, _lift_to_points_reference, lift_to_points
from lift3d.recon.geometry import backproject
from lift3d.recon.scene import Frame
from lift3d.recon.scene_points import read_mesh_vertices

K5 = np.array([[5.0, 0, 2], [0, 5.0, 2], [0, 0, 1]], np.float32)
# camera B sits at z = 6 looking back down -z (180 degrees about y)
T_A = np.eye(4, dtype=np.float32)
T_B = np.array([[-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, 6], [0, 0, 0, 1]], np.float32)

# p0 on A's wall, p1 behind it (B's wall), p2 on A's wall off-centre, p3 outside A, p4 behind A
POINTS = np.array([[0, 0, 2], [0, 0, 4], [0.8, 0, 2], [5, 0, 2], [0, 0, -1]], np.float32)


def _frame(T: np.ndarray, depth: float = 2.0, name: str = "f") -> Frame:
    return Frame(
        name=name,
        index=0,
        image=np.zeros((5, 5, 3), np.uint8),
        K=K5,
        T_world_camera=T,
        depth=np.full((5, 5), depth, np.float32),
    )


def _labels(fill: int, **pixels: int) -> np.ndarray:
    """A 5x5 label map filled with `fill`, with `u{u}v{v}=label` overrides."""
    lab = np.full((5, 5), fill, np.int32)
    for key, value in pixels.items():
        u, v = key[1:].split("v")
        lab[int(v), int(u)] = value
    return lab


def _two_views():
    return [_frame(T_A), _frame(T_B)], [_labels(1, u4v2=2), _labels(3)]


def test_occluded_point_gets_no_vote_from_the_view_hiding_it():
    frames, maps = _two_views()
    out = lift_to_points(POINTS, frames, maps)
    assert isinstance(out, PointLabels) and len(out) == 5
    # p0: seen by A only (B's wall hides it); p1: seen by B only; p2: A only; p3, p4: nobody
    assert out.label.tolist() == [1, 3, 2, 0, 0]
    assert out.votes.tolist() == [1, 1, 1, 0, 0]
    assert out.confidence.tolist() == [1, 1, 1, 0, 0]
    assert (
        out.label.dtype == np.int32
        and out.confidence.dtype == np.float32
        and out.votes.dtype == np.int32
    )


def test_shares_ties_and_unlabeled_pixels():
    frames = [_frame(T_A, name=str(i)) for i in range(5)]
    # p0 sits on pixel (2, 2): votes 1, 5, 5, and an unlabeled pixel that casts no vote
    maps = [
        _labels(1),
        _labels(1, u2v2=5),
        _labels(1, u2v2=5),
        _labels(1, u2v2=0),
        _labels(9, u2v2=0),
    ]
    out = lift_to_points(POINTS[:1], frames, maps)
    assert out.label[0] == 5 and out.votes[0] == 3
    np.testing.assert_allclose(out.confidence[0], 2 / 3, rtol=1e-6)
    tie = lift_to_points(POINTS[:1], frames[:2], maps[:2])
    assert tie.label[0] == 1 and tie.confidence[0] == 0.5  # ties go to the smallest ID


def test_depth_tolerance_absolute_and_relative():
    frame = _frame(T_A, depth=2.0)
    # default tolerance at 2 m: 0.05 + 0.01 * 2 = 0.07 m
    near = np.array([[0, 0, 2.06], [0, 0, 2.09], [0, 0, 1.91]], np.float32)
    assert lift_to_points(near, [frame], [_labels(1)]).label.tolist() == [1, 0, 0]
    assert lift_to_points(near, [frame], [_labels(1)], depth_tol_rel=0.03).label.tolist() == [
        1,
        1,
        1,
    ]
    assert lift_to_points(
        near, [frame], [_labels(1)], depth_tol=0.0, depth_tol_rel=0.0
    ).label.tolist() == [0, 0, 0]


def test_missing_depth_casts_no_vote_and_pointmap_stands_in_for_depth():
    frame = _frame(T_A)
    frame.depth[2, 2] = 0
    assert lift_to_points(POINTS[:1], [frame], [_labels(4)]).label[0] == 0
    # a MASt3R-style frame: no depth, a pointmap instead
    depth = np.full((5, 5), 2.0, np.float32)
    pointmap, valid = backproject(depth, K5, T_B)
    frame = Frame(
        name="m",
        index=0,
        image=np.zeros((5, 5, 3), np.uint8),
        K=K5,
        T_world_camera=T_B,
        pointmap=pointmap,
        valid=valid,
    )
    assert lift_to_points(POINTS[:2], [frame], [_labels(7)]).label.tolist() == [0, 7]


def test_min_instance_points_drops_small_instances():
    frames, maps = _two_views()
    out = lift_to_points(POINTS[:3], frames, maps, min_instance_points=2)
    assert out.label.tolist() == [0, 0, 0]  # three instances of one point each
    both = lift_to_points(POINTS[[0, 2]], [frames[0]], [_labels(1)], min_instance_points=2)
    assert both.label.tolist() == [1, 1]


@pytest.mark.parametrize("chunk_views", [1, 3, 32])
def test_fast_matches_reference_on_random_views(chunk_views):
    rng = np.random.default_rng(chunk_views)
    points = rng.uniform([-1, -1, 1], [1, 1, 4], (300, 3)).astype(np.float32)
    points[:5] = np.nan
    frames, maps = [], []
    for i in range(6):
        T = np.eye(4, dtype=np.float32)
        T[:3, 3] = rng.uniform(-0.2, 0.2, 3)
        # depth maps built from a subset of the points, so some points are seen and others hidden
        depth = rng.uniform(1.5, 3.5, (5, 5)).astype(np.float32)
        depth[rng.random((5, 5)) < 0.1] = 0
        frames.append(_frame(T, name=str(i)))
        frames[-1].depth = depth
        maps.append(rng.integers(0, 4, (5, 5)).astype(np.int32))
    kwargs = dict(depth_tol=0.4, depth_tol_rel=0.1, min_instance_points=3)
    fast = lift_to_points(points, frames, maps, chunk_views=chunk_views, **kwargs)
    ref = _lift_to_points_reference(points, frames, maps, **kwargs)
    assert fast.votes.sum() > 50  # the case exercises voting, occlusion and ties
    np.testing.assert_array_equal(fast.label, ref.label)
    np.testing.assert_array_equal(fast.votes, ref.votes)
    np.testing.assert_allclose(fast.confidence, ref.confidence, rtol=1e-6)


def _gt_vertex_instances(scene_dir) -> np.ndarray:
    """Synthetic scan GT per vertex: object k of the instance maps is objectId k - 1 (0 = floor, walls)."""
    from lift3d.recon.scannet.gt import read_vertex_objects

    return read_vertex_objects(scene_dir, exclude=("floor",))


def test_gt_label_maps_lift_onto_the_gt_mesh_instances(synthetic_scene_dir, synthetic_gt):
    from lift3d.recon import load_scene

    scene = load_scene(synthetic_scene_dir)
    xyz, rgb = read_mesh_vertices(scene.mesh_path)
    frames = list(scene)
    out = lift_to_points(xyz, frames, list(synthetic_gt))
    gt = _gt_vertex_instances(synthetic_scene_dir)
    seen = (out.votes > 0) & (gt > 0)
    assert seen.sum() > 0.6 * (gt > 0).sum()
    assert (out.label[seen] == gt[seen]).mean() > 0.99
    assert (out.label[gt == 0] > 0).mean() < 0.02  # floor and walls stay (almost) unlabeled
    ref = _lift_to_points_reference(xyz, frames[:3], list(synthetic_gt[:3]))
    fast = lift_to_points(xyz, frames[:3], list(synthetic_gt[:3]))
    np.testing.assert_array_equal(fast.label, ref.label)
    np.testing.assert_array_equal(fast.votes, ref.votes)


def test_bad_inputs_raise_input_errors():
    frames, maps = _two_views()
    with pytest.raises(InputError, match=r"\[P, 3\]"):
        lift_to_points(POINTS[:, :2], frames, maps)
    with pytest.raises(InputError, match="differ in number"):
        lift_to_points(POINTS, frames, maps[:1])
    with pytest.raises(InputError, match="differ in number"):
        lift_to_points(POINTS, frames[:1], maps)
    with pytest.raises(InputError, match="must match"):
        lift_to_points(POINTS, frames, [np.zeros((4, 5), np.int32)] * 2)
    with pytest.raises(InputError, match="integer"):
        lift_to_points(POINTS, frames, [m.astype(np.float32) for m in maps])
    with pytest.raises(InputError, match="outside"):
        lift_to_points(POINTS, frames, [m - 2 for m in maps])
    no_pose = _frame(T_A)
    no_pose.T_world_camera = None
    with pytest.raises(InputError, match="no camera pose"):
        lift_to_points(POINTS, [no_pose], maps[:1])
    no_depth = _frame(T_A)
    no_depth.depth = None
    with pytest.raises(InputError, match="neither depth nor a pointmap"):
        lift_to_points(POINTS, [no_depth], maps[:1])


def test_empty_inputs_give_unlabeled_points():
    out = lift_to_points(POINTS, [], [])
    assert out.label.tolist() == [0] * 5 and out.votes.tolist() == [0] * 5
    assert len(lift_to_points(np.zeros((0, 3), np.float32), *_two_views())) == 0


def _random_mesh(seed: int, n: int = 60):
    from scipy.spatial import Delaunay

    rng = np.random.default_rng(seed)
    uv = rng.random((n, 2))
    faces = Delaunay(uv).simplices.astype(np.int64)
    xyz = np.c_[uv, 0.05 * rng.random(n)].astype(np.float32)
    return xyz, faces, rng


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fill_unseen_matches_the_reference(seed):
    from lift3d.points import PointLabels, _fill_unseen_reference, fill_unseen

    xyz, faces, rng = _random_mesh(seed)
    label = np.where(rng.random(len(xyz)) < 0.3, rng.integers(1, 4, len(xyz)), 0).astype(np.int32)
    conf = (label > 0).astype(np.float32)
    res = PointLabels(label=label, confidence=conf, votes=(label > 0).astype(np.int32))
    for radius in (0.05, 0.2, 10.0):
        filled, n = fill_unseen(res, xyz, faces, radius=radius)
        ref = _fill_unseen_reference(res, xyz, faces, radius=radius)
        assert (filled.label == ref).all()
        assert n == int(((label == 0) & (ref > 0)).sum())
        assert (filled.confidence == conf).all(), "filled vertices keep confidence 0"
    # the whole mesh is one component: a large radius labels every vertex
    assert (fill_unseen(res, xyz, faces, radius=10.0)[0].label > 0).all()


def test_fill_unseen_does_not_cross_gaps_between_parts():
    """Two triangles 1 cm apart but not connected: labels never jump across."""
    from lift3d.points import PointLabels, fill_unseen

    xyz = np.array(
        [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0.01], [1, 0, 0.01], [0, 1, 0.01]], np.float32
    )
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    label = np.array([7, 0, 0, 0, 0, 0], np.int32)
    res = PointLabels(label=label, confidence=np.zeros(6, np.float32), votes=np.zeros(6, np.int32))
    filled, n = fill_unseen(res, xyz, faces, radius=5.0)
    assert filled.label.tolist() == [7, 7, 7, 0, 0, 0] and n == 2
    assert fill_unseen(res, xyz, faces, radius=0.0)[0] is res


def test_visibility_computed_once_gives_the_same_superpoint_table():
    """`view_visibility` then `superpoint_view_table(visibility=...)` (what the evaluation does
    for its many methods) gives the very table of reading the frames, for any label maps."""
    from lift3d.points import superpoint_view_table, view_visibility

    rng = np.random.default_rng(7)
    points = rng.uniform([-1, -1, 1], [1, 1, 4], (300, 3)).astype(np.float32)
    points[:3] = np.nan
    superpoint = rng.integers(0, 20, 300)
    frames = []
    for i in range(5):
        T = np.eye(4, dtype=np.float32)
        T[:3, 3] = rng.uniform(-0.2, 0.2, 3)
        frames.append(_frame(T, name=str(i)))
        frames[-1].depth = rng.uniform(1.5, 3.5, (5, 5)).astype(np.float32)
    vis = view_visibility(points, frames, depth_tol=0.4, depth_tol_rel=0.1)
    assert sum(len(p) for p in vis.point) > 30  # the case sees points, and hides others
    for seed in range(3):  # several methods' label maps on the same visibility
        maps = [np.random.default_rng(seed + i).integers(0, 4, (5, 5)) for i in range(5)]
        ref = superpoint_view_table(
            points, superpoint, frames, maps, depth_tol=0.4, depth_tol_rel=0.1
        )
        got = superpoint_view_table(points, superpoint, None, maps, visibility=vis)
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k])
    with pytest.raises(InputError, match="label maps for 5 views"):
        superpoint_view_table(points, superpoint, None, maps[:4], visibility=vis)
    with pytest.raises(InputError, match="label map of view 1 is"):
        superpoint_view_table(
            points, superpoint, None, [maps[0], np.zeros((4, 5), int)] + maps[2:], visibility=vis
        )


def test_unseen_candidates_become_instances_with_confidence_zero():
    """A candidate no view labeled gets a new ID on its unlabeled points; one mostly labeled,
    structure, and one too small are left alone; labeled points never change."""
    from lift3d.points import PointLabels, add_unseen_candidates

    cand = np.repeat([1, 2, 3, 4, 5], [200, 200, 200, 50, 200])
    label = np.zeros(850, np.int32)
    label[:200] = 7  # candidate 1 seen whole
    label[200:230] = 3  # candidate 2: 15% labeled -> its other 170 points a new instance
    label[400:500] = 3  # candidate 3: half labeled -> left alone
    conf = (label > 0).astype(np.float32) * 0.9
    res = PointLabels(label=label, confidence=conf, votes=(label > 0).astype(np.int32))
    structure = np.array([False, False, False, False, False, True])  # candidate 5: a wall
    out, new = add_unseen_candidates(res, cand, structure, min_points=100)
    assert new == [8]
    assert (out.label[200:230] == 3).all() and (out.label[230:400] == 8).all()
    assert (out.label[500:600] == 0).all(), "a half-seen candidate is the views' business"
    assert (out.label[600:] == 0).all(), "too small (50 points) and structure stay unlabeled"
    assert (out.label[label > 0] == label[label > 0]).all()
    assert (out.confidence == conf).all() and (out.votes == res.votes).all()
    # without structure flags the wall is an object too; a stricter share leaves candidate 2
    assert add_unseen_candidates(res, cand, None, min_points=100)[1] == [8, 9]
    assert add_unseen_candidates(res, cand, structure, max_labeled_share=0.1)[1] == []
    with pytest.raises(InputError):
        add_unseen_candidates(res, cand[:-1], structure)


def test_unseen_candidates_judge_what_the_views_saw_not_the_fill():
    """A candidate the surface fill crept into (a window from its wall) is still unseen: its share
    is measured on the vote's labels, and the new ID takes only what the fill left; new IDs start
    at `first_id` when that is above the points' labels."""
    from lift3d.points import PointLabels, add_unseen_candidates

    cand = np.repeat([1, 2], [200, 300])
    seen = np.zeros(500, np.int32)
    seen[:200] = 4  # the wall, seen
    filled = seen.copy()
    filled[200:290] = 4  # the fill painted 30% of the window
    res = PointLabels(label=filled, confidence=(seen > 0) * 0.8, votes=(seen > 0).astype(int))
    assert add_unseen_candidates(res, cand, None, min_points=100)[1] == []  # fill counted as seen
    out, new = add_unseen_candidates(res, cand, None, min_points=100, seen_label=seen, first_id=9)
    assert new == [9] and (out.label[290:] == 9).all() and (out.label[:290] == 4).all()
    assert add_unseen_candidates(res, cand, None, seen_label=seen, first_id=2)[1] == [5]


def test_superpoint_mostly_on_unlabeled_pixels_stays_unlabeled():
    """`max_unlabeled_share`: superpoint 0 is labeled in 2 of 10 views' points (a mask spilling
    over), superpoint 1 in 8 of 10: at 0.7 the first stays unlabeled, the second keeps its ID;
    at 1 (the default) any labeled vote wins."""
    from lift3d.points import vote_superpoints

    table = {
        "view": np.array([0, 1, 0, 1, 2], np.int64),
        "superpoint": np.array([0, 0, 1, 1, 1], np.int64),
        "label": np.array([4, 0, 6, 0, 6], np.int64),
        "count": np.array([20, 80, 50, 20, 30], np.int64),
    }
    loose = vote_superpoints(table, 3)
    assert loose.label.tolist() == [4, 6, 0] and loose.share[0] == 1.0
    strict = vote_superpoints(table, 3, max_unlabeled_share=0.7)
    assert strict.label.tolist() == [0, 6, 0]
    assert strict.share[0] == 0.0 and strict.share[1] == loose.share[1]
    assert strict.views.tolist() == [2, 3, 0], "views that saw it count either way"
    edge = vote_superpoints(table, 3, max_unlabeled_share=0.8)  # 80 of 100: not more than 0.8
    assert edge.label.tolist() == [4, 6, 0]


def test_the_more_specific_mask_wins_a_superpoint_with_mask_size_weight():
    """Superpoint 0 (a cabinet) is ID 5 alone in view 0 (40 points) and inside ID 6, merged with
    its wall (superpoint 1, 900 points), in view 1 (60 points): counted alike 6 wins it; weighed
    by mask size 5 does, and the wall stays 6."""
    from lift3d.points import vote_superpoints

    table = {
        "view": np.array([0, 1, 1]),
        "superpoint": np.array([0, 0, 1]),
        "label": np.array([5, 6, 6]),
        "count": np.array([40, 60, 900]),
    }
    assert vote_superpoints(table, 2).label.tolist() == [6, 6]
    weighed = vote_superpoints(table, 2, mask_size_weight=0.5)
    assert weighed.label.tolist() == [5, 6]
    # shares stay vote shares: 40 / sqrt(40) against 60 / sqrt(960)
    a, b = 40 / np.sqrt(40), 60 / np.sqrt(960)
    np.testing.assert_allclose(weighed.share, [a / (a + b), 1.0], rtol=1e-6)
