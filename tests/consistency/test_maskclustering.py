"""The MaskClustering-style view-consensus baseline and the oracle association."""

from __future__ import annotations

import numpy as np
import pytest

from lift3d.consistency.baselines import oracle_association
from lift3d.consistency.maskclustering import maskclustering_merge, observer_thresholds
from lift3d.errors import InputError


def _plane(n_views: int, H: int = 4, W: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Every view sees the same strip: pixel (u, v) at (0.1 u, 0.1 v, 0), one voxel per pixel."""
    v, u = np.mgrid[0:H, 0:W]
    pm = np.stack([0.1 * u + 0.01, 0.1 * v + 0.01, np.zeros_like(u, float)], axis=-1).astype(
        np.float32
    )
    return np.repeat(pm[None], n_views, axis=0), np.ones((n_views, H, W), bool)


def test_observer_thresholds_fall_from_the_95th_percentile_like_maskclustering():
    t = observer_thresholds(np.arange(1, 101, dtype=float))
    assert t[0] == pytest.approx(np.percentile(np.arange(1, 101), 95))
    assert all(a >= b for a, b in zip(t, t[1:]))
    assert observer_thresholds(np.ones(10)) == [1.0] * 10  # <= 1 above the median -> 1, stops below


def test_undersegmented_mask_is_dropped_and_the_parts_join_across_views():
    pm, valid = _plane(3)
    labels = np.zeros((3, 4, 20), np.int32)
    labels[0] = 1  # view 0: A and B as one mask
    labels[1, :, :10], labels[1, :, 10:] = 1, 2
    labels[2, :, :10], labels[2, :, 10:] = 2, 1  # IDs swapped: only the association can match them
    out = maskclustering_merge(labels, pm, valid, voxel=0.05)
    assert (out[0] == 0).all()  # split in every other view that sees it: under-segmented
    a, b = out[1, 0, 0], out[1, 0, 15]
    assert a > 0 and b > 0 and a != b
    assert out[2, 0, 0] == a and out[2, 0, 15] == b


def test_maskclustering_on_exact_masks_of_the_synthetic_scan(synthetic_scene_dir):
    from lift3d.consistency.rand_index import cross_view_ari
    from lift3d.consistency.simulated import SimulatedConfig, SimulatedSegmenter
    from lift3d.consistency.tracker import segment_framewise
    from lift3d.recon import load_scene

    sc = load_scene(synthetic_scene_dir)
    seg = SimulatedSegmenter.from_scan(synthetic_scene_dir, config=SimulatedConfig(noise=0.0))
    gt = np.stack([seg.view_objects(f.image, geometry=f.pointmap) for f in sc])
    fw = np.stack([lab for _, lab in segment_framewise(sc, seg)])
    pm = np.stack([np.nan_to_num(f.pointmap) for f in sc])
    valid = np.stack([f.valid for f in sc])
    out = maskclustering_merge(fw, pm, valid)
    assert cross_view_ari(gt, fw) < 0.5  # IDs independent per view
    assert cross_view_ari(gt, out) == pytest.approx(1.0)


def test_maskclustering_bad_input():
    pm, valid = _plane(2)
    with pytest.raises(InputError, match="labels"):
        maskclustering_merge(np.zeros((2, 4, 20), float), pm, valid)
    with pytest.raises(InputError, match="do not fit"):
        maskclustering_merge(np.zeros((2, 4, 19), np.int32), pm, valid)
    with pytest.raises(InputError, match="voxel"):
        maskclustering_merge(np.zeros((2, 4, 20), np.int32), pm, valid, voxel=0)


def test_oracle_gives_each_mask_the_gt_object_covering_most_of_it():
    gt = np.zeros((2, 2, 6), np.int32)
    gt[:, :, :3], gt[:, :, 3:] = 4, 7
    labels = np.zeros((2, 2, 6), np.int32)
    labels[0, :, :2], labels[0, :, 2:] = 5, 9  # mask 9 covers 1 column of object 4, 3 of object 7
    labels[1, :, :1], labels[1, :, 1:3], labels[1, :, 3:] = 1, 2, 3  # object 4 split in two
    out = oracle_association(labels, gt)
    assert (out[0, :, :2] == 4).all() and (out[0, :, 2:] == 7).all()
    assert (out[1, :, :3] == 4).all() and (out[1, :, 3:] == 7).all()
    off = np.zeros((1, 2, 6), np.int32)
    lab = np.ones((1, 2, 6), np.int32)
    assert (
        oracle_association(lab, off) == 1
    ).all()  # a mask on no GT object keeps an ID of its own
    with pytest.raises(InputError, match="gt must be"):
        oracle_association(labels, gt[:1])


def test_view_pairs_packed_equal_the_plain_row_unique():
    from lift3d.consistency.maskclustering import _view_pairs

    rng = np.random.default_rng(3)
    for scale in (2.0, 1e6):  # 1e6 m: beyond the packed range, the plain path
        pm = (rng.normal(size=(30, 40, 3)) * scale).astype(np.float32)
        pm[0, :5] = np.nan
        valid = rng.random((30, 40)) > 0.1
        lab = rng.integers(0, 5, (30, 40))
        ok = valid & (lab > 0) & np.isfinite(pm).all(axis=-1)
        keys = np.floor(pm[ok] / 0.05).astype(np.int64)
        ref = np.unique(np.concatenate([keys, lab[ok][:, None]], axis=1), axis=0)
        np.testing.assert_array_equal(_view_pairs(pm, valid, lab, 0.05), ref)
