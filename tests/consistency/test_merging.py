"""View-consensus merging of tracked IDs on a hand-made superpoint table."""

from __future__ import annotations

import numpy as np

from lift3d.consistency.merging import MergeConfig, merge_instances


def _table(views):
    """views: list of {superpoint: label}; every superpoint has 100 points, all seen."""
    rows = [(v, s, lab, 100) for v, seen in enumerate(views) for s, lab in seen.items()]
    view, sp, label, count = (np.array(c, np.int64) for c in zip(*rows))
    return {"view": view, "superpoint": sp, "label": label, "count": count}


SIZES = np.full(3, 100)
ADJ = np.array([[0, 1], [1, 2]])


def test_ids_held_in_one_mask_by_most_views_merge():
    # superpoints 0, 1 are one object: split (IDs 1, 2) in three views, whole (ID 1) in two;
    # superpoint 2 (ID 3) is always apart
    # (the split views are the majority, so the vote alone gives superpoint 1 to ID 2)
    views = [{0: 1, 1: 2, 2: 3}] * 3 + [{0: 1, 1: 1, 2: 3}] * 2
    r = merge_instances(_table(views), SIZES, ADJ, config=MergeConfig(stop=0.4))
    assert r.mapping[2] == 1 and r.mapping[3] == 3 and r.mapping[1] == 1
    assert r.groups == {1: [1, 2]}


def test_no_merge_below_the_threshold_or_when_disabled():
    views = [{0: 1, 1: 2, 2: 3}] * 4 + [{0: 1, 1: 1, 2: 3}]  # consensus 1/5
    r = merge_instances(_table(views), SIZES, ADJ)
    assert r.mapping.tolist() == [0, 1, 2, 3] and r.groups == {}
    views = [{0: 1, 1: 2, 2: 3}] * 3 + [{0: 1, 1: 1, 2: 3}] * 2
    off = merge_instances(_table(views), SIZES, ADJ, config=MergeConfig(enabled=False))
    assert off.mapping.tolist() == [0, 1, 2, 3]


def test_pairs_seen_together_too_rarely_stay_apart():
    views = [{0: 1, 1: 2, 2: 3}, {0: 1, 1: 1}]  # two views observe superpoints 0 and 1, one agrees
    r = merge_instances(_table(views), SIZES, ADJ, config=MergeConfig(min_views=3, stop=0.1))
    assert r.groups == {}


def test_apply_rewrites_label_maps_with_merged_ids():
    views = [{0: 1, 1: 2, 2: 3}] * 3 + [{0: 1, 1: 1, 2: 3}] * 2
    r = merge_instances(_table(views), SIZES, ADJ, config=MergeConfig(stop=0.4))
    maps = np.array([[[0, 1, 2], [3, 2, 7]]])  # 7: an ID the table never saw keeps its value
    np.testing.assert_array_equal(r.apply(maps), [[[0, 1, 1], [3, 1, 7]]])
