"""BYOCL's two-level clustering of encoder features."""

from __future__ import annotations

import numpy as np
import pytest

from lift3d.consistency.byocl import STAND_IN, byocl_cluster, encoder_features, stand_in_features
from lift3d.errors import InputError


def _features(n: int, rng) -> tuple[list[np.ndarray], np.ndarray]:
    """n frames of an 8x8 grid: three regions whose features differ a lot, the same in every frame
    up to noise; the left/right boundary moves one cell per frame."""
    gt = np.zeros((n, 8, 8), np.int64)
    feats = []
    centres = rng.normal(size=(3, 16)) * 10
    for t in range(n):
        gt[t, :, : 2 + t % 4] = 0
        gt[t, :, 2 + t % 4 :] = 1
        gt[t, 6:] = 2
        feats.append((centres[gt[t]] + rng.normal(size=(8, 8, 16)) * 0.1).astype(np.float32))
    return feats, gt


def test_labels_are_consistent_across_batches():
    feats, gt = _features(10, np.random.default_rng(0))
    out = byocl_cluster(feats, batch=4, k=3, global_clusters=3)
    assert out.shape == gt.shape and out.min() >= 1
    # one global label per region, in every frame of every batch
    for g in range(3):
        assert len(np.unique(out[gt == g])) == 1
    assert len(np.unique(out)) == 3


def test_same_seed_same_labels_and_bad_input():
    feats, _ = _features(6, np.random.default_rng(1))
    np.testing.assert_array_equal(byocl_cluster(feats, seed=3), byocl_cluster(feats, seed=3))
    with pytest.raises(InputError, match="one shape"):
        byocl_cluster([feats[0], feats[1][:4]])
    with pytest.raises(InputError, match="at least one"):
        byocl_cluster([])


def test_without_an_encoder_the_stand_in_is_used_and_named():
    from lift3d.consistency.classical import ClassicalSegmenter

    image = np.zeros((48, 64, 3), np.uint8)
    f, name = encoder_features(ClassicalSegmenter(), image)
    assert name == STAND_IN and "not SAM" in name
    assert f.shape == stand_in_features(image).shape == (48, 64, 5)
