"""The streamed consecutive-frame H equals the DAVIS evaluation's, pair by pair and pooled."""

from __future__ import annotations

import numpy as np

from lift3d.consistency.consecutive import consecutive_score
from lift3d.consistency.davis import consecutive_consistency


def _case(seed: int, n: int = 5, shape=(12, 17), m: int = 60):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=(n, *shape)).astype(np.int32)
    H, W = shape
    matches = []
    for _ in range(n - 1):
        uv_i = np.c_[rng.integers(0, W, m), rng.integers(0, H, m)].astype(np.float32)
        uv_j = (uv_i + rng.normal(0, 1.5, uv_i.shape)).astype(np.float32)  # some land outside
        matches.append((uv_i, uv_j, np.ones(m, np.float32)))
    return labels, matches


def test_streamed_score_equals_the_davis_metric():
    for seed in range(4):
        labels, matches = _case(seed)
        score = consecutive_score(iter(labels), matches.__getitem__)
        assert score.H == consecutive_consistency(labels, matches)
        assert len(score.per_pair) == len(labels) - 1
        for t, share in enumerate(score.per_pair):
            want = consecutive_consistency(labels[t : t + 2], matches[t : t + 1])
            assert share == want or (share is None and np.isnan(want))


def test_identical_maps_along_identity_matches_score_one_and_unlabeled_is_undefined():
    labels = np.tile(np.arange(1, 13, dtype=np.int32).reshape(3, 4), (3, 1, 1))
    uv = np.stack(np.meshgrid(np.arange(4), np.arange(3)), -1).reshape(-1, 2).astype(np.float32)
    same = consecutive_score(iter(labels), lambda t: (uv, uv, np.ones(len(uv))))
    assert same.H == 1.0 and same.matches == 2 * 12
    empty = consecutive_score(iter(np.zeros_like(labels)), lambda t: (uv, uv, np.ones(len(uv))))
    assert np.isnan(empty.H) and empty.to_json()["H"] is None and empty.per_pair == [None, None]
