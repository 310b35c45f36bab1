"""The weight-free classical segmenter: object-level masks, prompts, caching, its slow twins."""

from __future__ import annotations

import numpy as np
import pytest

from lift3d.consistency import classical
from lift3d.consistency.classical import ClassicalConfig, ClassicalSegmenter
from lift3d.consistency.segmenter import Masks, Segmenter
from lift3d.errors import InputError


def _box_on_floor(W: int = 96, H: int = 72, *, box_color=(128, 128, 128), seed: int = 0):
    """A grey floor with a box standing on it, ray-cast analytically.

    Returns image [H, W, 3] uint8 (floor grey 128, box `box_color`, mild noise), the world
    pointmap [H, W, 3] (z up, metres) and the box's pixels [H, W] bool.
    """
    f = 0.9 * W
    u, v = np.meshgrid(np.arange(W) - (W - 1) / 2, np.arange(H) - (H - 1) / 2)
    eye = np.array([0.0, -2.0, 1.4])
    z = -eye / np.linalg.norm(eye)  # looking at the origin
    x = np.cross(z, [0, 0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    d = (u[..., None] * x + v[..., None] * y + f * z) / f
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(d[..., 2] < 0, -eye[2] / d[..., 2], np.inf)
        lo, hi = np.array([-0.3, -0.3, 0.0]), np.array([0.3, 0.3, 0.5])
        t1, t2 = (lo - eye) / d, (hi - eye) / d
    t_near = np.minimum(t1, t2).max(-1)
    t_far = np.maximum(t1, t2).min(-1)
    hit_box = (t_near <= t_far) & (t_near > 0) & (t_near < t_floor)
    t = np.where(hit_box, t_near, t_floor)
    valid = np.isfinite(t)
    points = np.where(valid[..., None], eye + np.where(valid, t, 0)[..., None] * d, 0).astype(
        np.float32
    )
    rng = np.random.default_rng(seed)
    image = np.where(hit_box[..., None], np.array(box_color), 128) + rng.normal(0, 2, (H, W, 3))
    return np.clip(image, 0, 255).astype(np.uint8), points, hit_box


def _best_iou(masks: Masks, target: np.ndarray) -> float:
    inter = (masks.masks & target).sum((1, 2))
    union = (masks.masks | target).sum((1, 2))
    return float((inter / np.maximum(union, 1)).max()) if len(masks) else 0.0


def test_implements_the_segmenter_protocol():
    assert isinstance(ClassicalSegmenter(), Segmenter)


def test_generate_shapes_and_disjoint_masks():
    image, points, _ = _box_on_floor(box_color=(200, 40, 40))
    m = ClassicalSegmenter().generate(image, geometry=points)
    assert m.masks.dtype == bool and m.masks.shape[1:] == (72, 96) and len(m) >= 2
    assert m.scores.shape == (len(m),) and m.scores.dtype == np.float32
    assert (m.scores >= 0).all() and (m.scores <= 1).all()
    assert m.masks.sum(0).max() == 1  # disjoint and, as every region is kept, covering
    assert (m.masks.sum((1, 2))[:-1] >= m.masks.sum((1, 2))[1:]).all()  # largest first


def test_same_colour_object_splits_from_the_floor_by_geometry():
    image, points, box = _box_on_floor(box_color=(128, 128, 128))
    seg = ClassicalSegmenter()
    assert _best_iou(seg.generate(image, geometry=points), box) > 0.85
    # colour alone cannot see it: the box drowns in the floor
    assert _best_iou(seg.generate(image), box) < 0.5


def test_different_colours_split_without_geometry():
    image = np.full((60, 80, 3), 128, np.uint8)
    image[15:45, 10:40] = (200, 40, 40)
    image[15:45, 40:70] = (40, 60, 200)  # touching the red one
    m = ClassicalSegmenter().generate(image)
    for sl in (np.s_[15:45, 10:40], np.s_[15:45, 40:70]):
        target = np.zeros((60, 80), bool)
        target[sl] = True
        assert _best_iou(m, target) > 0.9


def test_synthetic_scene_objects_are_found(synthetic_scene_dir, synthetic_gt):
    from lift3d.recon import load_scene

    scene = load_scene(synthetic_scene_dir)
    seg = ClassicalSegmenter()
    ious = {}
    for i, frame in enumerate(scene):
        m = seg.generate(frame.image, geometry=frame.pointmap)
        for obj in np.unique(synthetic_gt[i][synthetic_gt[i] > 0]):
            ious.setdefault(int(obj), []).append(_best_iou(m, synthetic_gt[i] == obj))
    assert len(ious) == 5
    for obj, values in ious.items():
        assert np.mean(np.array(values) >= 0.7) > 0.5, (obj, np.round(values, 2))


def test_scannet_frame_gives_object_level_masks(shared_data):
    from lift3d.recon import load_scene

    root = shared_data / "scannet" / "scene0000_00"
    if not root.is_dir():
        pytest.skip("scene0000_00 not in shared data")
    frame = load_scene(root)[0]
    m = ClassicalSegmenter().generate(frame.image, geometry=frame.pointmap)
    H, W = frame.image.shape[:2]
    assert 5 <= len(m) <= 80
    assert m.masks.sum() / (H * W) > 0.95
    assert m.masks.sum((1, 2)).max() < 0.8 * H * W  # not one giant mask


def test_predict_grows_the_region_under_the_points():
    image, points, box = _box_on_floor(box_color=(200, 40, 40))
    seg = ClassicalSegmenter()
    auto = seg.generate(image, geometry=points)
    box_mask = auto.masks[np.argmax((auto.masks & box).sum((1, 2)))]
    floor_pt = (5.0, 68.0)
    floor_mask = auto.masks[np.argmax(auto.masks[:, 68, 5])]
    vs, us = np.nonzero(box_mask)
    box_pt = (float(us[len(us) // 2]), float(vs[len(vs) // 2]))
    pts = np.array([[box_pt, box_pt], [box_pt, floor_pt], [box_pt, (500.0, 500.0)]])
    labels = np.array([[1, -1], [1, 1], [1, 1]])
    out = seg.predict(image, pts, labels, geometry=points)
    assert out.masks.shape == (3, 72, 96) and out.masks.dtype == bool and out.scores.shape == (3,)
    np.testing.assert_array_equal(out.masks[0], box_mask)
    np.testing.assert_array_equal(out.masks[1], box_mask | floor_mask)
    np.testing.assert_array_equal(out.masks[2], box_mask)  # the point outside is ignored
    assert (out.scores > 0).all()


def test_predict_never_contains_a_negative_point():
    image, points, _ = _box_on_floor(box_color=(200, 40, 40))
    seg = ClassicalSegmenter()
    pos, neg = (10.0, 66.0), (85.0, 66.0)  # both on the floor
    out = seg.predict(image, np.array([[pos, neg]]), np.array([[1, 0]]), geometry=points)
    m = out.masks[0]
    assert m[66, 10] and not m[66, 85]
    whole = seg.predict(image, np.array([[pos]]), np.array([[1]]), geometry=points).masks[0]
    assert whole[66, 85] and (m <= whole).all()  # a split of the floor region, nothing else


def test_predict_without_positive_points_is_empty():
    image, points, _ = _box_on_floor()
    out = ClassicalSegmenter().predict(
        image, np.array([[[5.0, 5.0], [0, 0]], [[5.0, 5.0], [9, 9]]]), np.array([[-1, -1], [0, 0]])
    )
    assert out.masks.shape == (2, 72, 96) and not out.masks.any() and (out.scores == 0).all()


def test_bad_input_raises_input_error():
    seg = ClassicalSegmenter()
    image, points, _ = _box_on_floor()
    with pytest.raises(InputError, match="uint8"):
        seg.generate(image.astype(np.float32))
    with pytest.raises(InputError, match="geometry"):
        seg.generate(image, geometry=points[:10])
    with pytest.raises(InputError, match="prompts"):
        seg.predict(image, np.zeros((2, 2)), np.ones((2,)))


def test_one_segmentation_per_frame(monkeypatch):
    calls = []
    real = classical._segment
    monkeypatch.setattr(classical, "_segment", lambda *a: calls.append(1) or real(*a))
    image, points, _ = _box_on_floor()
    seg = ClassicalSegmenter()
    seg.generate(image, geometry=points)
    seg.predict(image, np.array([[[5.0, 60.0]]]), np.array([[1]]), geometry=points)
    seg.predict(image, np.array([[[50.0, 30.0]]]), np.array([[1]]), geometry=points)
    assert len(calls) == 1
    seg.generate(image.copy(), geometry=points)  # another frame (array), same pixels
    assert len(calls) == 2
    seg.generate(image)  # same frame without geometry is another segmentation
    assert len(calls) == 3


def test_deterministic():
    image, points, _ = _box_on_floor(box_color=(40, 160, 60))
    a = ClassicalSegmenter().generate(image, geometry=points)
    b = ClassicalSegmenter().generate(image.copy(), geometry=points.copy())
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_empty_geometry_falls_back_to_colour():
    image, _, _ = _box_on_floor(box_color=(200, 40, 40))
    nan = np.full(image.shape, np.nan, np.float32)
    np.testing.assert_array_equal(
        ClassicalSegmenter().generate(image, geometry=nan).masks,
        ClassicalSegmenter().generate(image).masks,
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_merge_matches_reference(seed):
    rng = np.random.default_rng(seed)
    # a 6x8 grid of superpixels with integer statistics, so both orders of summation are exact
    S, cols = 48, 8
    edges = np.array(
        [(i, i + 1) for i in range(S) if (i + 1) % cols] + [(i, i + cols) for i in range(S - cols)]
    )
    area = rng.integers(20, 60, S).astype(np.float64)
    lab_sum = area[:, None] * rng.integers(0, 4, (S, 1)) * 10 + rng.integers(-40, 40, (S, 3))
    stats = np.stack(
        [
            np.full(len(edges), 6.0),
            np.where(rng.random(len(edges)) < 0.15, 6.0, 0.0),
            np.where(rng.random(len(edges)) < 0.2, 6.0, 0.0),
            rng.integers(0, 120, len(edges)).astype(np.float64),
        ],
        1,
    )
    kw = dict(
        threshold=12.0,
        barrier_fraction=0.5,
        boundary_weight=0.5,
        size_exponent=0.5,
        convex_discount=0.5,
    )
    fast = classical._merge(area, lab_sum, edges, stats, **kw)
    slow = classical._merge_reference(area, lab_sum, edges, stats, **kw)
    np.testing.assert_array_equal(fast, slow)
    assert 1 < len(np.unique(fast)) < S  # the case merges something and not everything


@pytest.mark.parametrize("axis", [0, 1])
def test_jumps_match_reference(axis):
    rng = np.random.default_rng(axis)
    steps = rng.uniform(0.005, 0.01, (16, 12, 3))
    # depth edges ramping over 1 to 3 pixels down the columns, as sensor depth does across an
    # occlusion; a window of 2 pixels is needed to see the 3-pixel ramp
    steps[4, :4] += 0.2
    steps[8:10, 4:8] += 0.1
    steps[12:15, 8:] += 0.1
    P = np.cumsum(steps, axis=0).astype(np.float32)
    valid = rng.random((16, 12)) > 0.05
    if axis == 1:
        P, valid = P.transpose(1, 0, 2), valid.T
    kw = dict(axis=axis, ratio=4.0, min_jump=0.03, window=2)
    fast = classical._jumps(P, valid, **kw)
    np.testing.assert_array_equal(fast, classical._jumps_reference(P, valid, **kw))
    lines = fast if axis == 0 else fast.T
    assert lines[11:14, 8:].any()  # the widest ramp is found


def test_config_fields_are_documented():
    import inspect

    src = inspect.getsource(ClassicalConfig)
    for name in ClassicalConfig.__dataclass_fields__:
        after = src.split(f"    {name}:")[1].split("\n")[1].strip()
        assert after.startswith('"""'), name
