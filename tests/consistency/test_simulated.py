"""The segmenter simulated from ground truth: exact at noise 0, splits along segments, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import read_gt_instances


def _sim(scene_dir, **kw):
    from lift3d.consistency.simulated import SimulatedConfig, SimulatedSegmenter

    return SimulatedSegmenter.from_scan(scene_dir, config=SimulatedConfig(**kw))


def _labels(masks):
    from lift3d.consistency.tracker import paint_masks

    return paint_masks(masks.masks, np.arange(1, len(masks) + 1))


def test_noise_zero_reproduces_the_gt_instances_of_every_view(synthetic_scene_dir):
    from lift3d.consistency.rand_index import cross_view_ari
    from lift3d.recon import load_scene

    sc = load_scene(synthetic_scene_dir)
    gt = read_gt_instances(synthetic_scene_dir, sc.frame_names)  # the renderer's own instance maps
    seg = _sim(synthetic_scene_dir, noise=0.0)
    for i in range(len(sc)):
        f = sc[i]
        out = seg.generate(f.image, geometry=f.pointmap)
        assert out.masks.dtype == bool and out.masks.shape[1:] == f.image.shape[:2]
        assert not (out.masks.sum(axis=0) > 1).any()  # one granularity: the objects, disjoint
        # exact against the GT the view finds through its pointmap (walls, floor, objects) ...
        assert cross_view_ari(seg.view_objects(f.image, geometry=f.pointmap), _labels(out)) == 1.0
        # ... and against the renderer's own instance map, up to mm depth rounding at contacts
        assert cross_view_ari(gt[i], _labels(out)) > 0.999
        # and every object pixel is covered (walls carry no aggregation object in this scene)
        assert (_labels(out)[gt[i] > 0] > 0).all()


def test_p_split_one_splits_every_object_with_two_or_more_segments(synthetic_scene_dir):
    from lift3d.recon import load_scene

    sc = load_scene(synthetic_scene_dir)
    seg = _sim(synthetic_scene_dir, noise=0.0, p_split=1.0)
    split_seen = 0
    for i in range(len(sc)):
        f = sc[i]
        obj = seg.view_objects(f.image, geometry=f.pointmap)
        segs = seg._view(f.image, f.pointmap)
        out = seg.generate(f.image, geometry=f.pointmap)
        fine = _labels(out)  # smaller masks win: the pieces
        for o in np.unique(obj[obj > 0]):
            on = obj == o
            n_segments = len(np.unique(seg.gt.segment[np.isin(seg.gt.object, [o])]))
            visible = len(np.unique(segs.piece_of[on]))
            pieces = len(np.unique(fine[on]))
            vis_segments = _visible_segments(seg, f, o)
            if vis_segments >= 2:
                assert pieces >= 2 and visible >= 2, (
                    f"view {i}: object {o} with {vis_segments} visible segments not split"
                )
                split_seen += 1
            else:
                assert pieces == 1
            assert n_segments >= vis_segments
    assert split_seen > 0
    # the whole object is still offered at the coarse granularity
    f = sc[0]
    out = seg.generate(f.image, geometry=f.pointmap)
    obj = seg.view_objects(f.image, geometry=f.pointmap)
    o = int(np.bincount(obj[obj > 0]).argmax())
    assert any((m == (obj == o)).all() for m in out.masks)


def _visible_segments(seg, f, o) -> int:
    """Segments of object o seen in the view, through the same GT lookup."""
    pts = f.pointmap.reshape(-1, 3)
    ok = np.isfinite(pts).all(axis=1)
    vert, dist = seg._vertex_of(pts[ok].astype(np.float32))
    near = dist <= seg.config.max_dist
    on = seg.gt.object[vert[near]] == o
    return len(np.unique(seg.gt.segment[vert[near]][on]))


def test_same_seed_same_masks_other_seed_other_masks(synthetic_scene_dir):
    from lift3d.recon import load_scene

    f = load_scene(synthetic_scene_dir)[3]
    a = _sim(synthetic_scene_dir, noise=0.3, seed=1).generate(f.image, geometry=f.pointmap)
    b = _sim(synthetic_scene_dir, noise=0.3, seed=1).generate(f.image, geometry=f.pointmap.copy())
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.scores, b.scores)
    outs = [
        _sim(synthetic_scene_dir, noise=0.3, seed=s).generate(f.image, geometry=f.pointmap)
        for s in range(2, 8)
    ]
    assert any(o.masks.shape != a.masks.shape or not (o.masks == a.masks).all() for o in outs)


def test_predict_with_points_on_one_object_returns_it(synthetic_scene_dir):
    from lift3d.recon import load_scene

    sc = load_scene(synthetic_scene_dir)
    f = sc[2]
    seg = _sim(synthetic_scene_dir, noise=0.0, p_split=1.0)
    obj = seg.view_objects(f.image, geometry=f.pointmap)
    ids = [int(o) for o in np.unique(obj[obj > 0])]
    rng = np.random.default_rng(0)
    pts = np.zeros((len(ids) + 1, 3, 2), np.float32)
    lab = np.ones((len(ids) + 1, 3), np.int64)
    for b, o in enumerate(ids):
        v, u = np.nonzero(obj == o)
        k = rng.choice(len(v), 3, replace=False)
        pts[b] = np.stack([u[k], v[k]], axis=1)
    lab[-1] = -1  # a set of padding only: nothing asked, nothing returned
    out = seg.predict(f.image, pts, lab, geometry=f.pointmap)
    assert out.masks.shape == (len(ids) + 1, *f.image.shape[:2])
    for b, o in enumerate(ids):
        np.testing.assert_array_equal(out.masks[b], obj == o)  # several points: the whole object
        assert 0 < out.scores[b] <= 1
    assert not out.masks[-1].any()
    # one point: SAM's ambiguity, the piece under it or the whole object, always containing it
    o = ids[0]
    v, u = np.nonzero(obj == o)
    one = seg.predict(
        f.image, np.array([[[u[0], v[0]]]], np.float32), np.ones((1, 1)), geometry=f.pointmap
    )
    assert one.masks[0, v[0], u[0]] and not (one.masks[0] & (obj != o)).any()


def test_describe_says_simulated_from_ground_truth_never_sam(synthetic_scene_dir):
    d = _sim(synthetic_scene_dir, noise=0.15).describe()
    assert "simulated from ground truth" in d["segmenter"] and "not SAM" in d["segmenter"]
    assert d["config"]["noise"] == 0.15 and d["effective"]["p_merge"] == pytest.approx(0.075)


def test_bad_input(tmp_path, synthetic_scene_dir):
    from lift3d.consistency.simulated import SimulatedConfig, SimulatedSegmenter
    from lift3d.errors import InputError
    from lift3d.recon import load_scene

    (tmp_path / "scan").mkdir()
    with pytest.raises(InputError, match="instance ground truth"):
        SimulatedSegmenter.from_scan(tmp_path / "scan")
    with pytest.raises(InputError, match="p_split"):
        SimulatedSegmenter.from_scan(synthetic_scene_dir, config=SimulatedConfig(p_split=1.5))
    f = load_scene(synthetic_scene_dir)[0]
    with pytest.raises(InputError, match="pointmap"):
        _sim(synthetic_scene_dir).generate(f.image)
