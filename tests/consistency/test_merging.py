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


def _two_objects_views(tracked):
    """Views of a flat strip: columns 0-19 see object A, 20-39 object B (the same points in
    every view); tracked[v] = (ID on A, ID on B) in view v."""
    H, W = 4, 40
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    pm = np.stack([u * 0.025, v * 0.025, np.zeros_like(u, float)], axis=-1).astype(np.float32)
    out = []
    for a, b in tracked:
        lab = np.where(u < 20, a, b).astype(np.int32)
        out.append((pm, np.ones((H, W), bool), lab))
    return out


def test_view_clustering_splits_a_track_that_drifted_onto_another_object():
    from lift3d.consistency.merging import cluster_views

    # ID 1 follows A in views 0-2, then drifts onto B (and ID 2 onto A) in views 3-5: no global
    # ID mapping can repair this, the (view, ID) masks must be clustered
    views = _two_objects_views([(1, 2)] * 3 + [(2, 1)] * 3)
    clusters = cluster_views(views)
    maps = [clusters.apply(i, lab) for i, (_, _, lab) in enumerate(views)]
    a = {int(m[0, 0]) for m in maps}
    b = {int(m[0, 39]) for m in maps}
    assert len(a) == 1 and len(b) == 1 and a != b and 0 not in a | b
    assert clusters.sources[a.pop()] == [1, 2] and clusters.sources[b.pop()] == [1, 2]


def test_view_clustering_keeps_consistent_tracks_and_drops_unseen_ids():
    from lift3d.consistency.merging import cluster_views

    views = _two_objects_views([(1, 2)] * 4)
    clusters = cluster_views(views)
    maps = np.stack([clusters.apply(i, lab) for i, (_, _, lab) in enumerate(views)])
    assert len(np.unique(maps[:, :, :20])) == 1 and len(np.unique(maps[:, :, 20:])) == 1
    assert maps[0, 0, 0] != maps[0, 0, 39]
    # an ID the clustering never saw (no valid point) is unlabeled, as is a view past the end
    assert clusters.apply(0, np.full((2, 2), 9)).max() == 0
    assert clusters.apply(7, views[0][2]).max() == 0


def test_under_segmented_masks_follow_the_keep_dropped_rule():
    """A mask of A and B as one, where four views split them, is under-segmented: `unlabel`
    leaves it out, `keep` gives it its tracked ID; a mask no other view observes (C, seen once)
    is a cluster of its own either way."""
    from lift3d.consistency.merging import cluster_views

    views = _two_objects_views([(1, 2)] * 4 + [(3, 3)])
    pm, ok, _ = views[0]
    views.append((pm + np.float32(10.0), ok, np.full(ok.shape, 5, np.int32)))  # C, far away
    got = {}
    for rule in ("unlabel", "keep"):
        clusters = cluster_views(views, config=MergeConfig(keep_dropped=rule))
        maps = [clusters.apply(i, lab) for i, (_, _, lab) in enumerate(views)]
        got[rule] = (int(maps[4].max()), int(maps[5].max()), {int(m[0, 0]) for m in maps[:4]})
    assert got["unlabel"][0] == 0 and got["keep"][0] > 0
    assert got["unlabel"][1] > 0 and got["keep"][1] > 0
    for rule in got:  # the under-segmented mask is not A's cluster, whatever the rule
        assert len(got[rule][2]) == 1 and got[rule][0] not in got[rule][2]
    # auto: the per-image classical segmenter's fragments keep their ID, object-level masks not
    assert MergeConfig().resolve("classical").keep_dropped == "keep"
    assert MergeConfig().resolve("sam").keep_dropped == "unlabel"
    assert MergeConfig(keep_dropped="unlabel").resolve("classical").keep_dropped == "unlabel"


def test_a_mask_holding_a_small_object_besides_its_wall_counts_as_split():
    """A strip: a wall (columns 0-35) and a small object (36-39, a tenth of it). View 0 shows
    both apart; view 1 merges them into one mask; view 2 sees only the wall, view 3 only the
    object. MaskClustering's rule finds the merged mask 90% inside view 0's wall, so it is not
    split there and becomes the wall's, painting the object with the wall's ID in view 1.
    Holding all of view 0's object mask besides the wall, it is split there: under-segmented."""
    from lift3d.consistency.merging import cluster_views

    H, W = 4, 40
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    pm = np.stack([u * 0.05 + 0.025, v * 0.05 + 0.025, np.zeros_like(u, float)], -1).astype(
        np.float32
    )
    obj = u >= 36

    def view(o, w, sees_o=True, sees_w=True):
        ok = np.where(obj, sees_o, sees_w)
        return pm, ok, np.where(ok, np.where(obj, o, w), 0).astype(np.int32)

    views = [view(1, 2), view(3, 3), view(0, 5, sees_o=False), view(6, 0, sees_w=False)]
    old = cluster_views(views, config=MergeConfig(swallow_share=0.0))
    new = cluster_views(views, config=MergeConfig())
    maps = {
        name: [c.apply(i, lab) for i, (_, _, lab) in enumerate(views)]
        for name, c in (("old", old), ("new", new))
    }
    wall, thing = int(maps["new"][0][0, 0]), int(maps["new"][0][0, 39])
    assert 0 < wall != thing > 0 and int(maps["new"][3][0, 39]) == thing
    assert (maps["new"][1] == 0).all()  # the merged mask: under-segmented, unlabeled
    assert (maps["old"][1] == int(maps["old"][0][0, 0])).all()  # the wall's, object included
    # None: on after object-level segmenters, off after the per-image classical one's fragments
    assert MergeConfig().resolve("sam").swallow_share == 0.5
    assert MergeConfig().resolve("classical-2d").swallow_share == 0.0
    assert MergeConfig(swallow_share=0.2).resolve("classical").swallow_share == 0.2


def test_a_mask_joining_two_masks_of_a_view_that_sees_little_of_it_counts_as_split():
    """A strip: a wall (columns 0-35) and a small object (36-39). View 0 merges them into one
    mask; view 1 sees only the object and the wall's near end (32-35), as two masks: a fifth of
    view 0's mask, under MaskClustering's 30%, so view 1 does not count as seeing it; view 2
    sees the wall alone; ten more views see one far object each, once (so that MaskClustering's
    observer thresholds fall to one view, as on a scan where most objects are seen once). By
    MaskClustering's rule alone the merged mask is observed by view 2 only, as the wall, and
    joins the wall's cluster: view 0 paints the object with the wall's ID. Containing two masks
    of view 1, it is split there: under-segmented, unlabeled, and view 1's two masks stay two."""
    from lift3d.consistency.merging import cluster_views

    H, W = 4, 40
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    pm = np.stack([u * 0.05 + 0.025, v * 0.05 + 0.025, np.zeros_like(u, float)], -1).astype(
        np.float32
    )
    obj = u >= 36
    everything = np.ones((H, W), bool)
    near = u >= 32
    views = [
        (pm, everything, np.ones((H, W), np.int32)),  # object + wall, one mask
        (pm, near, np.where(near, np.where(obj, 1, 2), 0).astype(np.int32)),
        (pm, ~obj, np.where(~obj, 1, 0).astype(np.int32)),  # the wall alone
    ]
    views += [(pm + np.float32(100 + 10 * k), everything, views[0][2]) for k in range(10)]
    maps = {
        name: [c.apply(i, lab) for i, (_, _, lab) in enumerate(views)]
        for name, c in (
            ("old", cluster_views(views, config=MergeConfig(swallow_share=0.0))),
            ("new", cluster_views(views, config=MergeConfig())),
        )
    }
    old, new = maps["old"], maps["new"]
    thing, wall = int(old[1][0, 39]), int(old[2][0, 0])
    assert 0 < thing != wall > 0 and int(old[1][0, 33]) == wall
    assert (old[0] == wall).all()  # the merged mask is the wall's, object included
    assert (new[0] == 0).all()  # the merged mask: under-segmented, unlabeled
    thing, piece, wall = int(new[1][0, 39]), int(new[1][0, 33]), int(new[2][0, 0])
    assert thing > 0 and piece == wall > 0 and thing != wall
    # MaskClustering's own association (the baseline) keeps its rule alone
    from lift3d.consistency.maskclustering import maskclustering_merge

    labels = np.stack([lab for _, _, lab in views])
    pms = np.stack([p for p, _, _ in views])
    oks = np.stack([o for _, o, _ in views])
    assert (maskclustering_merge(labels, pms, oks)[0] > 0).all()
