"""The exact metric H: fast kernels == brute-force reference, its invariants, bad input, the tiles."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lift3d.consistency.metric import ArrayFrames, MetricConfig, consistency_score
from lift3d.consistency.metric.reference import consistency_score_reference
from lift3d.errors import InputError

# eps and lattice step are exact binary fractions, so lattice points at exactly eps apart (axis
# steps of 5, and 3-4-5 triangles) give squared distances exactly equal to eps^2: the `<=` ties
EPS = 5 / 16
STEP = 1 / 16


def random_scene(
    seed: int,
    *,
    n_views: int = 4,
    size: tuple[int, int] = (8, 6),
    n_labels: int = 4,
    spread: float = 4.0,
    dense: bool = False,
):
    """Pointmaps mixing Gaussian clusters (many pairs within eps, many straddling the sphere),
    lattice points (pairs at exactly eps), duplicated points, invalid and unlabeled pixels."""
    rng = np.random.default_rng(seed)
    W, H = size
    n = n_views * H * W
    centres = rng.uniform(0, spread * EPS, (3, 3))
    sigma = 0.15 * EPS if dense else 0.8 * EPS
    pts = centres[rng.integers(0, 3, n)] + rng.normal(0, sigma, (n, 3))
    lattice = rng.random(n) < 0.4
    pts[lattice] = rng.integers(0, 8, (lattice.sum(), 3)) * STEP + centres[0] // STEP * STEP
    dup = rng.random(n) < 0.15
    pts[dup] = pts[rng.integers(0, n, dup.sum())]
    pointmaps = pts.astype(np.float32).reshape(n_views, H, W, 3)
    valid = rng.random((n_views, H, W)) < 0.9
    pointmaps[~valid] = np.nan  # invalid pixels may hold anything
    labels = rng.integers(0, n_labels + 1, (n_views, H, W))
    return pointmaps, valid, labels


def score(pointmaps, valid, labels=None, *, features=None, per_pixel=False, **settings):
    """`consistency_score` of arrays in memory, its `MetricConfig` settings by name."""
    frames = ArrayFrames(pointmaps, valid, labels, features=features)
    return consistency_score(frames, config=MetricConfig(**settings), per_pixel=per_pixel)


def assert_same_result(fast, ref, *, rtol: float):
    assert fast.pixels == ref.pixels
    assert fast.eps == ref.eps
    assert fast.H == pytest.approx(ref.H, rel=rtol, abs=rtol)
    np.testing.assert_array_equal(np.isnan(fast.per_pixel), np.isnan(ref.per_pixel))
    np.testing.assert_allclose(fast.per_pixel, ref.per_pixel, rtol=rtol, atol=rtol, equal_nan=True)
    np.testing.assert_allclose(fast.per_frame, ref.per_frame, rtol=rtol, atol=rtol, equal_nan=True)
    if ref.pairwise is None:
        assert fast.pairwise is None
    else:
        assert fast.pairwise == pytest.approx(ref.pairwise, rel=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_fast_equals_reference_for_labels(seed):
    pointmaps, valid, labels = random_scene(seed)
    fast = score(pointmaps, valid, labels, eps=EPS, per_pixel=True)
    ref = consistency_score_reference(pointmaps, valid, labels, eps=EPS, per_pixel=True)
    # counts are integers: h agrees to the last bit
    assert_same_result(fast, ref, rtol=1e-15)
    assert 0 < ref.H < 1 and 0 < ref.pairwise < 1


def test_reference_sees_the_ties_and_the_shell():
    """The test scenes are only worth as much as the cases they hold: pairs at exactly eps, and
    pairs just inside and just outside it."""
    pointmaps, valid, labels = random_scene(0)
    sel = valid & (labels > 0)
    X = pointmaps[sel].astype(np.float64)
    d2 = ((X[:, None] - X[None]) ** 2).sum(-1)
    assert (d2 == EPS**2).sum() > 40
    assert ((d2 > 0.8 * EPS**2) & (d2 < EPS**2)).sum() > 100
    assert ((d2 > EPS**2) & (d2 < 1.25 * EPS**2)).sum() > 100
    assert ((d2 == 0) & ~np.eye(len(X), dtype=bool)).sum() > 10  # duplicated points


@pytest.mark.parametrize("seed", [10, 11])
def test_fast_equals_reference_on_a_dense_many_label_cluster(seed):
    # dozens of (view, label) groups per fine cell and thousands of contingency entries: the
    # kernels' per-cell and per-chunk tables must grow past their initial sizes
    pointmaps, valid, labels = random_scene(
        seed, n_views=5, size=(9, 7), n_labels=40, spread=0.5, dense=True
    )
    fast = score(pointmaps, valid, labels, eps=EPS, per_pixel=True)
    ref = consistency_score_reference(pointmaps, valid, labels, eps=EPS, per_pixel=True)
    assert_same_result(fast, ref, rtol=1e-15)


@pytest.mark.parametrize("eps", [0.01, 0.1, 10.0])
def test_fast_equals_reference_across_eps(eps):
    # from nearly every point alone in its ball to one ball holding the whole scene
    pointmaps, valid, labels = random_scene(3)
    fast = score(pointmaps, valid, labels, eps=eps, per_pixel=True)
    ref = consistency_score_reference(pointmaps, valid, labels, eps=eps, per_pixel=True)
    assert_same_result(fast, ref, rtol=1e-15)


def test_fast_equals_reference_for_pairs_a_rounding_error_from_eps():
    # points on spheres of radius eps (1 +- 1e-7) around a few centres: float32 cannot tell
    # inside from outside, so the kernels must fall back to the reference's float64 test
    rng = np.random.default_rng(9)
    n_views, H, W = 3, 6, 8
    n = n_views * H * W
    centres = rng.uniform(0, 2 * EPS, (4, 3))
    u = rng.normal(size=(n, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    radius = EPS * (1 + rng.choice([-1e-7, -1e-9, 0, 1e-9, 1e-7], n))
    pts = centres[rng.integers(0, 4, n)] + radius[:, None] * u
    pts[::7] = centres[rng.integers(0, 4, len(pts[::7]))]  # the centres themselves
    pointmaps = pts.astype(np.float32).reshape(n_views, H, W, 3)
    valid = np.ones((n_views, H, W), bool)
    labels = rng.integers(1, 4, (n_views, H, W))
    fast = score(pointmaps, valid, labels, eps=EPS, per_pixel=True)
    ref = consistency_score_reference(pointmaps, valid, labels, eps=EPS, per_pixel=True)
    assert_same_result(fast, ref, rtol=1e-15)
    X = pointmaps.reshape(-1, 3).astype(np.float64)
    d2 = ((X[:, None] - X[None]) ** 2).sum(-1)
    near = np.abs(d2 / EPS**2 - 1) < 4e-6
    assert (
        near.sum() > 100
        and (near & (d2 <= EPS**2)).sum() > 20
        and (near & (d2 > EPS**2)).sum() > 20
    )


def test_fast_equals_reference_when_eps_is_beyond_float32():
    # eps^2 above float32's range: every pair is tested in float64 only
    pointmaps, valid, labels = random_scene(2)
    fast = score(pointmaps, valid, labels, eps=1e16, per_pixel=True)
    ref = consistency_score_reference(pointmaps, valid, labels, eps=1e16, per_pixel=True)
    assert_same_result(fast, ref, rtol=1e-15)


@pytest.mark.parametrize("k,m", [(2, 2), (3, 3), (2, 3)])
def test_finer_cells_give_the_same_result(k, m):
    # the kernels also run with cells of eps / k in blocks of m^3 (slower on real scans, see
    # docs/benchmarks/metric.md): the wholesale cell-to-cell counting is only exercised there
    pointmaps, valid, labels = random_scene(4, n_views=4, size=(10, 8), spread=6.0)
    ref = consistency_score_reference(pointmaps, valid, labels, eps=EPS, per_pixel=True)
    cells = dict(cells_per_eps=k, cells_per_block=m)
    assert_same_result(
        score(pointmaps, valid, labels, eps=EPS, per_pixel=True, **cells), ref, rtol=1e-15
    )
    # and cut into tiles of blocks of m^3 cells, their halos one such block wide
    tiled = score(pointmaps, valid, labels, eps=EPS, per_pixel=True, max_points=30, **cells)
    assert_same_result(tiled, ref, rtol=1e-15)
    features = np.eye(labels.max() + 1, dtype=np.float32)[labels][..., 1:]
    by_features = score(pointmaps, valid, features=features, eps=EPS, per_pixel=True, **cells)
    np.testing.assert_allclose(by_features.per_pixel, ref.per_pixel, atol=1e-12)


def test_float64_pointmaps_are_measured_as_float32():
    pointmaps, valid, labels = random_scene(5)
    as64 = score(pointmaps.astype(np.float64), valid, labels, eps=EPS, per_pixel=True)
    as32 = score(pointmaps, valid, labels, eps=EPS, per_pixel=True)
    np.testing.assert_array_equal(as64.per_pixel, as32.per_pixel)


@pytest.mark.parametrize("seed", range(4))
def test_fast_equals_reference_for_features(seed):
    pointmaps, valid, _ = random_scene(seed)
    rng = np.random.default_rng(100 + seed)
    features = rng.normal(size=(*valid.shape, 6)).astype(np.float32)
    features[rng.random(valid.shape) < 0.1] = 0  # all-zero vector: unlabeled
    fast = score(pointmaps, valid, features=features, eps=EPS, per_pixel=True)
    ref = consistency_score_reference(pointmaps, valid, features=features, eps=EPS, per_pixel=True)
    assert ref.pairwise is None
    assert_same_result(fast, ref, rtol=1e-6)
    assert fast.pixels == int((valid & (features != 0).any(-1)).sum())


def test_one_hot_features_give_the_label_result():
    pointmaps, valid, labels = random_scene(5)
    one_hot = np.eye(labels.max() + 1, dtype=np.float32)[labels][..., 1:]  # label 0 -> all zero
    by_labels = score(pointmaps, valid, labels, eps=EPS, per_pixel=True)
    by_features = score(pointmaps, valid, features=one_hot, eps=EPS, per_pixel=True)
    assert by_features.pixels == by_labels.pixels
    assert by_features.H == pytest.approx(by_labels.H, abs=1e-12)
    np.testing.assert_allclose(by_features.per_pixel, by_labels.per_pixel, atol=1e-12)


def test_one_label_everywhere_gives_exactly_one():
    pointmaps, valid, labels = random_scene(1)
    labels = np.where(labels > 0, 7, 0)
    result = score(pointmaps, valid, labels, eps=EPS, per_pixel=True)
    assert result.H == 1.0
    assert result.pairwise == 1.0
    sel = valid & (labels > 0)
    assert result.pixels == int(sel.sum())
    assert np.all(result.per_pixel[sel] == 1.0) and np.all(np.isnan(result.per_pixel[~sel]))


def test_pairwise_is_unchanged_by_any_relabelling_within_a_view():
    pointmaps, valid, labels = random_scene(2, n_labels=6)
    before = score(pointmaps, valid, labels, eps=EPS)
    rng = np.random.default_rng(0)
    relabelled = labels.copy()
    for i in range(len(labels)):
        # a different bijection of the IDs in every view, onto IDs far apart (0 stays 0)
        ids = np.r_[0, rng.permutation(1000)[: labels.max()] + 1]
        relabelled[i] = ids[labels[i]]
    after = score(pointmaps, valid, relabelled, eps=EPS)
    assert after.pairwise == pytest.approx(before.pairwise, rel=1e-12)
    assert after.pixels == before.pixels
    # H is not ID-free: the new IDs no longer agree across views
    assert after.H < before.H - 0.05


def test_ids_beyond_32_bits_are_only_compared():
    pointmaps, valid, labels = random_scene(3)
    small = score(pointmaps, valid, labels, eps=EPS, per_pixel=True)
    big = score(pointmaps, valid, labels.astype(np.int64) << 40, eps=EPS, per_pixel=True)
    np.testing.assert_array_equal(big.per_pixel, small.per_pixel)
    assert big.pairwise == small.pairwise


def test_h_rewards_consistent_ids():
    # labels from the geometry (which third of the scene a point lies in) are consistent across
    # views; the same partition with the IDs of one view swapped is not
    pointmaps, valid, _ = random_scene(4, spread=8.0)
    x = np.nan_to_num(pointmaps[..., 0])
    labels = 1 + np.digitize(x, np.quantile(x[valid], [1 / 3, 2 / 3]))
    consistent = score(pointmaps, valid, labels, eps=EPS)
    swapped = labels.copy()
    swapped[0] = np.array([0, 2, 3, 1])[labels[0]]
    inconsistent = score(pointmaps, valid, swapped, eps=EPS)
    assert inconsistent.H < consistent.H
    assert inconsistent.pairwise == pytest.approx(consistent.pairwise, rel=1e-12)


def test_one_and_two_workers_agree():
    pointmaps, valid, labels = random_scene(6, n_views=6, size=(40, 30), spread=12.0)
    one = score(pointmaps, valid, labels, eps=EPS, per_pixel=True, workers=1)
    two = score(pointmaps, valid, labels, eps=EPS, per_pixel=True, workers=2)
    np.testing.assert_array_equal(one.per_pixel, two.per_pixel)
    assert one.H == two.H and one.pairwise == pytest.approx(two.pairwise, rel=1e-14)


def test_pairwise_entries_handed_over_in_small_pieces_give_the_same_result(monkeypatch):
    # the counting kernel stops once its table holds max_entries keys and is resumed at the next
    # block: every block's counts are complete in themselves, so the result is the same to the bit
    from lift3d.consistency.metric import kernels as mk

    pointmaps, valid, labels = random_scene(8, n_views=6, size=(12, 9), spread=6.0, n_labels=6)
    whole = score(pointmaps, valid, labels, eps=EPS, per_pixel=True, workers=1)
    calls = []
    kernel = mk.label_chunk

    def spy(b0, b1, cells, runs, job, *out):
        keys, counts, b_next = kernel(b0, b1, cells, runs, job, *out)
        calls.append((job.va_lo, b0, b1, b_next, len(keys)))
        return keys, counts, b_next

    monkeypatch.setattr(mk, "label_chunk", spy)
    pieces = score(pointmaps, valid, labels, eps=EPS, per_pixel=True, workers=2, pairwise_entries=1)
    assert whole.pairwise is not None and pieces.pairwise == whole.pairwise
    assert pieces.H == whole.H
    np.testing.assert_array_equal(pieces.per_pixel, whole.per_pixel)
    resumed = [c for c in calls if c[3] < c[2]]
    assert len(resumed) > 10  # the kernel did stop early, many times
    # each resumed call starts where the previous one stopped, and each chunk is covered once
    # in each counting pass (a pass per range of views a)
    by_end = {}
    for va_lo, b0, b1, b_next, _ in calls:
        by_end.setdefault((va_lo, b1), []).append((b0, b_next))
    for (_, b1), spans in by_end.items():
        spans.sort()
        assert spans[-1][1] == b1
        assert all(prev[1] == cur[0] for prev, cur in zip(spans, spans[1:]))


def test_pairwise_can_be_skipped_and_h_is_the_same():
    pointmaps, valid, labels = random_scene(7)
    with_pw = score(pointmaps, valid, labels, eps=EPS, per_pixel=True)
    without = score(pointmaps, valid, labels, eps=EPS, per_pixel=True, pairwise=False)
    assert without.pairwise is None
    np.testing.assert_array_equal(with_pw.per_pixel, without.per_pixel)


def test_frame_without_labeled_pixels_has_nan_mean_and_json_null():
    pointmaps, valid, labels = random_scene(8)
    labels[1] = 0
    result = score(pointmaps, valid, labels, eps=EPS)
    assert math.isnan(result.per_frame[1]) and all(
        math.isfinite(v) for i, v in enumerate(result.per_frame) if i != 1
    )
    out = result.to_json()
    assert out["per_frame"][1] is None
    assert {"H", "pairwise", "eps", "pixels"} <= set(out)
    json.dumps(out, allow_nan=False)


def test_pixels_alone_in_their_ball_count_themselves():
    # far apart points: every h is 1 (a pixel always neighbours itself); no correspondences
    pointmaps = (np.arange(2 * 3 * 3 * 3, dtype=np.float32) * 10).reshape(2, 3, 3, 3)
    valid = np.ones((2, 3, 3), bool)
    labels = np.arange(1, 19).reshape(2, 3, 3)
    result = score(pointmaps, valid, labels, eps=0.5)
    assert result.H == 1.0 and result.pairwise is None and result.pixels == 18


# ---------------------------------------------------------------------------------- bad input


def _bad_input_cases():
    pm, valid, labels = random_scene(0)
    nan_pm = pm.copy()
    i, v, u = np.argwhere(valid)[3]
    nan_pm[i, v, u, 1] = np.nan
    neg = labels.copy()
    neg[1, 2, 3] = -4
    return [
        ("valid shape", dict(pointmaps=pm, valid=valid[:, :-1], labels=labels), "valid must be"),
        ("labels shape", dict(pointmaps=pm, valid=valid, labels=labels[:-1]), "labels must be"),
        (
            "pointmap channels",
            dict(pointmaps=pm[..., :2], valid=valid, labels=labels),
            r"\[N, H, W, 3\]",
        ),
        ("float labels", dict(pointmaps=pm, valid=valid, labels=labels.astype(float)), "integer"),
        (
            "eps zero",
            dict(pointmaps=pm, valid=valid, labels=labels, eps=0.0),
            "eps must be a positive",
        ),
        (
            "eps negative",
            dict(pointmaps=pm, valid=valid, labels=labels, eps=-0.02),
            "eps must be a positive",
        ),
        (
            "eps nan",
            dict(pointmaps=pm, valid=valid, labels=labels, eps=float("nan")),
            "eps must be a positive",
        ),
        (
            "nan point",
            dict(pointmaps=nan_pm, valid=valid, labels=labels),
            rf"frame {i} have non-finite points, e.g. pixel \(u={u}, v={v}\)",
        ),
        (
            "negative label",
            dict(pointmaps=pm, valid=valid, labels=neg),
            "labels of frame 1 are negative",
        ),
        (
            "no labels",
            dict(pointmaps=pm, valid=valid, labels=np.zeros_like(labels)),
            "no pixel is both valid and labeled",
        ),
        (
            "both inputs",
            dict(
                pointmaps=pm,
                valid=valid,
                labels=labels,
                features=np.ones((*valid.shape, 2), np.float32),
            ),
            "exactly one of labels and features",
        ),
        (
            "features shape",
            dict(pointmaps=pm, valid=valid, features=np.ones((*valid.shape[:2], 2), np.float32)),
            "features must be",
        ),
    ]


@pytest.mark.parametrize(
    "name,kwargs,match", _bad_input_cases(), ids=[c[0] for c in _bad_input_cases()]
)
def test_bad_input_is_an_input_error_saying_what_is_wrong(name, kwargs, match):
    with pytest.raises(InputError, match=match):
        score(**kwargs)


def test_nan_features_in_a_valid_pixel_are_an_input_error():
    pm, valid, _ = random_scene(0)
    features = np.ones((*valid.shape, 3), np.float32)
    features[2][valid[2]] = np.inf
    with pytest.raises(InputError, match="features of frame 2 hold non-finite values"):
        score(pm, valid, features=features)


def test_nan_points_in_invalid_pixels_are_ignored():
    pm, valid, labels = random_scene(0)
    assert np.isnan(pm[~valid]).all()
    assert score(pm, valid, labels, eps=EPS).pixels == int((valid & (labels > 0)).sum())


# --- tiles of space: the same numbers in bounded memory, whatever the tiling ---------------------


class Frames:
    """A `FrameSource` over per-view (pointmap, valid, values), recording the order it is read in."""

    def __init__(self, *per_view):
        self.views = list(zip(*per_view))
        self.calls = []

    def __len__(self):
        return len(self.views)

    def __getitem__(self, i):
        self.calls.append(i)
        return self.views[i]


def _stream(pointmaps, valid, labels, *, per_pixel=False, **settings):
    """`consistency_score` over the views one at a time, checking it reads each once, in order."""
    frames = Frames(pointmaps, valid, labels)
    out = consistency_score(frames, config=MetricConfig(**settings), per_pixel=per_pixel)
    assert frames.calls == list(range(len(pointmaps)))  # one pass over the frames, in order
    return out


def assert_identical(stream, ref):
    """Bit for bit: per-point counts are integers, per-frame sums exact, pairwise from integers."""
    assert stream.pixels == ref.pixels and stream.eps == ref.eps
    assert stream.H == ref.H
    assert stream.pairwise == ref.pairwise
    np.testing.assert_array_equal(stream.per_frame, ref.per_frame)
    if ref.per_pixel is not None:
        np.testing.assert_array_equal(np.asarray(stream.per_pixel), ref.per_pixel)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_points", [1, 23, 10**9])
def test_any_tiling_gives_the_one_tile_result_bit_for_bit(tmp_path, seed, max_points):
    # spread over ~12 eps: a dozen layers along the longest axis, so max_points 1 and 23 cut
    # the scene into many tiles, and one tile (10**9, as the default for this size) is the plain case
    from lift3d.consistency.metric import read_h_frame

    pointmaps, valid, labels = random_scene(seed, n_views=5, size=(9, 7), spread=12.0, n_labels=5)
    ref = score(pointmaps, valid, labels, eps=EPS, per_pixel=True)
    out = _stream(
        pointmaps, valid, labels, eps=EPS, max_points=max_points, per_pixel=tmp_path / "h"
    )
    assert_identical(out, ref)
    np.testing.assert_array_equal(read_h_frame(tmp_path / "h", 3), ref.per_pixel[3])
    # and one tile equals the brute-force reference (so every tiling does too)
    assert_same_result(
        ref,
        consistency_score_reference(pointmaps, valid, labels, eps=EPS, per_pixel=True),
        rtol=1e-12,
    )


def test_stream_counts_pairwise_in_passes_over_ranges_of_views(tmp_path, monkeypatch):
    # a tile's pairwise keys (vl_a, vl_b) are counted in passes over disjoint ranges of view a,
    # so no pass's table outgrows the bound, whatever the number of views seeing a spot
    from lift3d.consistency.metric import kernels as mk
    from lift3d.consistency.metric import score as score_module

    pointmaps, valid, labels = random_scene(9, n_views=8, size=(9, 7), spread=3.0, n_labels=5)
    ref = score(pointmaps, valid, labels, eps=EPS, per_pixel=True)
    plans, calls = [], []
    plan, kernel = score_module.view_passes, mk.label_chunk

    def spy_plan(*args):
        out = plan(*args)
        plans.append(out)
        return out

    def spy_kernel(b0, b1, cells, runs, job, *out):
        keys, counts, b_next = kernel(b0, b1, cells, runs, job, *out)
        view_a = runs.vl_view[keys // runs.G]
        assert ((view_a >= job.va_lo) & (view_a < job.va_hi)).all()  # only the pass's views a
        calls.append((job.va_lo, job.va_hi, job.count_h))
        return keys, counts, b_next

    monkeypatch.setattr(score_module, "view_passes", spy_plan)
    monkeypatch.setattr(mk, "label_chunk", spy_kernel)
    out = _stream(pointmaps, valid, labels, eps=EPS, max_points=200, per_pixel=tmp_path / "h")
    assert_identical(out, ref)
    assert max(len(p) for p in plans) > 1  # some tile took several passes
    for passes in plans:
        assert all(a < b for a, b in passes) and all(
            p[1] <= q[0] for p, q in zip(passes, passes[1:])
        )
    # H is counted in the first pass only
    assert {c[2] for c in calls} == {True, False}


def _spy_tiles(monkeypatch):
    """Record, per tile counted: (blocks in its box, points loaded, own points, points counted,
    its box, the grid); and check that it loads only its box and the one block around it."""
    from lift3d.consistency.metric import score as score_module
    from lift3d.consistency.metric.tiles import block_coords

    seen = []
    tile = score_module.count_tile

    def spy(pts, box, grid, groups, *args):
        lo, s, dp, perm, k, m = grid
        bc = np.stack(block_coords(pts["p"], lo, s, perm, m), axis=1)
        assert ((bc >= box[0] - 1) & (bc < box[1] + 1)).all()
        own = int(((bc >= box[0]) & (bc < box[1])).all(axis=1).sum())
        loaded = len(pts)
        res = tile(pts, box, grid, groups, *args)
        seen.append(
            (
                int(np.prod(box[1] - box[0])),
                loaded,
                own,
                0 if res is None else len(res[0]),
                box,
                grid,
            )
        )
        return res

    monkeypatch.setattr(score_module, "count_tile", spy)
    return seen


@pytest.mark.parametrize("wall", [False, True])
def test_stream_tiles_bound_the_points_they_load_and_count_each_once(monkeypatch, wall):
    pointmaps, valid, labels = random_scene(5, n_views=6, size=(9, 7), spread=12.0)
    if wall:  # nearly every point on one plane across the longest axis: one layer of slabs
        far = np.random.default_rng(1).random(pointmaps.shape[:3]) < 0.05
        pointmaps[..., 0] = np.where(far, 0.25 + 30 * EPS, 0.25)
    ref = score(pointmaps, valid, labels, eps=EPS)
    seen = _spy_tiles(monkeypatch)
    max_points = 20
    assert_identical(_stream(pointmaps, valid, labels, eps=EPS, max_points=max_points), ref)
    assert len(seen) > 5
    assert all(own == counted for _, _, own, counted, _, _ in seen)
    assert sum(own for _, _, own, _, _, _ in seen) == ref.pixels
    # a tile loads (own + halo) at most max_points points, unless it is a single block
    assert all(loaded <= max_points or n_blocks == 1 for n_blocks, loaded, _, _, _, _ in seen)


@pytest.mark.parametrize(
    "hist, max_points, expected",
    [
        ([3, 0, 4, 9, 1, 1, 0, 0], 5, [0, 2, 3, 4, 8]),
        ([0, 0, 0], 1, [0, 3]),
        ([7], 1, [0, 1]),
        ([1, 1, 1, 1], 2, [0, 2, 4]),
    ],
)
def test_runs_are_whole_bins_of_at_most_max_points(hist, max_points, expected):
    from lift3d.consistency.metric.tiles import plan_runs

    assert plan_runs(np.array(hist), max_points).tolist() == expected


def test_stream_with_one_block_tiles_and_pairs_at_exactly_eps_across_tile_edges(
    monkeypatch, tmp_path
):
    from lift3d.consistency.metric.tiles import block_coords

    # planes x = k * eps (k = 0, 1, 2, 7, 8): neighbours across each block edge at exactly eps
    # (the `<=` ties), and layers 3..6 empty; with one tile per occupied block (max_points 1:
    # any box of two blocks holds two points) every pair of neighbours crosses a tile edge
    rng = np.random.default_rng(0)
    ks = np.array([0, 1, 2, 7, 8])
    n_views, H, W = 3, 6, 10
    x = ks[rng.integers(0, len(ks), (n_views, H, W))] * EPS
    yz = rng.integers(0, 3, (n_views, H, W, 2)) * STEP
    pointmaps = np.concatenate([x[..., None], yz], axis=-1).astype(np.float32)
    valid = np.ones((n_views, H, W), bool)
    labels = rng.integers(1, 4, (n_views, H, W))
    ref = score(pointmaps, valid, labels, eps=EPS, per_pixel=True)
    seen = _spy_tiles(monkeypatch)
    out = _stream(pointmaps, valid, labels, eps=EPS, per_pixel=tmp_path, max_points=1)
    assert_identical(out, ref)
    lo, s, dp, perm, k, m = seen[0][5]
    blocks = np.unique(
        np.stack(block_coords(pointmaps.reshape(-1, 3), lo, s, perm, m), axis=1), axis=0
    )
    assert len(seen) == len(blocks) and all(n_blocks == 1 for n_blocks, *_ in seen)
    # x is the longest axis (first block coordinate); cells are a hair over eps: x = 0 and
    # x = eps share layer 1; 2, 7 and 8 eps sit in layers 2, 7, 8
    assert np.unique([box[0][0] for *_, box, _ in seen]).tolist() == [1, 2, 7, 8]
    assert_same_result(
        ref,
        consistency_score_reference(pointmaps, valid, labels, eps=EPS, per_pixel=True),
        rtol=1e-12,
    )


def test_tiles_split_a_dense_wall_and_its_neighbours():
    from lift3d.consistency.metric.tiles import block_key, halo_lists, plan_tiles

    # a 1 x 10 x 10 block wall of 100 points a block at a = 5, a sparse layer beside it at a = 6
    dp = np.array([9, 12, 12])
    a, b, c = np.meshgrid([5, 6], np.arange(1, 11), np.arange(1, 11), indexing="ij")
    blocks = block_key(a.ravel(), b.ravel(), c.ravel(), dp)
    n = np.where(a.ravel() == 5, 100, 1)
    order = np.argsort(blocks)
    blocks, n = blocks[order], n[order]
    tile_of, boxes = plan_tiles(blocks, n, dp, max_points=2_000)
    assert (tile_of >= 0).all() and len(boxes) > 5
    start, extra = halo_lists(blocks, tile_of, boxes, dp)
    for t, (lo, hi) in enumerate(boxes):
        own = tile_of == t
        reads = own | np.isin(
            np.arange(len(blocks)),
            np.flatnonzero([t in extra[start[i] : start[i + 1]] for i in range(len(blocks))]),
        )
        assert n[reads].sum() <= 2_000 or (hi - lo == 1).all()
    assert plan_tiles(blocks, n, dp, max_points=10**9)[0].tolist() == [0] * len(blocks)  # one tile


def test_stream_bad_input_is_an_input_error_and_leaves_no_spill(tmp_path):
    pointmaps, valid, labels = random_scene(0)
    work = tmp_path / "work"
    work.mkdir()

    def run(pm=pointmaps, v=valid, lab=labels, **settings):
        return consistency_score(Frames(pm, v, lab), config=MetricConfig(work_dir=work, **settings))

    with pytest.raises(InputError, match="eps must be a positive"):
        run(eps=0)
    with pytest.raises(InputError, match="max_points must be a positive"):
        run(max_points=0)
    with pytest.raises(InputError, match="labels of frame 2 are negative"):
        run(lab=np.where(np.arange(4)[:, None, None] == 2, -1, labels))
    with pytest.raises(InputError, match="no pixel is both valid and labeled"):
        run(lab=np.zeros_like(labels))
    with pytest.raises(InputError, match=r"3 valid pixel\(s\) of frame 0 have non-finite points"):
        run(v=np.ones_like(valid))
    bad = [pointmaps[0], pointmaps[1][:, :-1]]
    with pytest.raises(InputError, match="all frames one size"):
        consistency_score(Frames(bad, valid[:2], labels[:2]), config=MetricConfig(work_dir=work))
    with pytest.raises(InputError, match="features of frame 1 must be float"):
        run(
            lab=[np.ones((*valid.shape[1:], 2), np.float32)]
            + [np.ones((*valid.shape[1:], 3), np.float32)] * 3
        )
    assert not list(work.iterdir())


@pytest.mark.parametrize(
    "settings, match",
    [
        (dict(workers=0), "workers must be a positive integer"),
        (dict(max_points=2.5), "max_points must be a positive integer"),
        (dict(pairwise_entries=0), "pairwise_entries must be a positive integer"),
        (
            dict(cells_per_eps=2, cells_per_block=1),
            r"cells_per_block \(1\) must be at least cells_per_eps \(2\)",
        ),
    ],
)
def test_settings_out_of_range_are_input_errors(settings, match):
    pointmaps, valid, labels = random_scene(0)
    with pytest.raises(InputError, match=match):
        score(pointmaps, valid, labels, **settings)
    with pytest.raises(InputError, match="--metric." + match.split(" ")[0].replace("_", "-")):
        MetricConfig(**settings).check(prefix="--metric.")


def test_features_give_the_same_h_to_the_bit_in_any_tiling(tmp_path):
    # per-pixel sums of cosines follow the cells (the same in every tile); only the per-frame
    # float sums follow the tiles, so H agrees to rounding and h to the bit
    pointmaps, valid, _ = random_scene(3, n_views=5, size=(9, 7), spread=12.0)
    features = np.random.default_rng(7).normal(size=(*valid.shape, 4)).astype(np.float32)
    one = score(pointmaps, valid, features=features, eps=EPS, per_pixel=True)
    tiled = consistency_score(
        Frames(pointmaps, valid, features),
        config=MetricConfig(eps=EPS, max_points=23),
        per_pixel=tmp_path,
    )
    np.testing.assert_array_equal(np.asarray(tiled.per_pixel), one.per_pixel)
    assert tiled.pixels == one.pixels and tiled.pairwise is None
    assert tiled.H == pytest.approx(one.H, rel=1e-14)
    np.testing.assert_allclose(tiled.per_frame, one.per_frame, rtol=1e-14)


def test_exact_frame_sums_do_not_depend_on_the_order():
    from lift3d.consistency.metric import kernels as mk
    from lift3d.consistency.metric.grid import limbs_to_float

    rng = np.random.default_rng(0)
    n_all = rng.integers(1, 2**31 - 1, 5000).astype(np.int32)
    n_all[:10] = 2**31 - 1  # the smallest h, 2^-31: its last bit is worth 2^-84
    n_same = np.minimum(rng.integers(1, 2**31 - 1, 5000), n_all).astype(np.int32)
    n_same[:10] = 1
    idx = rng.integers(0, 3 * 7, 5000)
    sums = []
    for order in (np.arange(5000), rng.permutation(5000)):
        limbs, counts = np.zeros((3, 3), np.int64), np.zeros(3, np.int64)
        mk.frame_sums_exact(n_same[order], n_all[order], idx[order], 7, limbs, counts)
        sums.append(limbs_to_float(limbs))
    np.testing.assert_array_equal(sums[0], sums[1])
    h = n_same / n_all
    for f in range(3):
        assert sums[0][f] == math.fsum(h[idx // 7 == f])  # the correctly rounded sum


@pytest.mark.parametrize("max_entries", [1, 7, 10**9])
def test_pairwise_reduced_in_groups_of_whole_views_equals_all_at_once(
    tmp_path, monkeypatch, max_entries
):
    from lift3d.consistency.metric import pairwise as pw

    # random contingency entries over 9 views x 4 labels, keys repeated across "tiles"
    rng = np.random.default_rng(3)
    N, L = 9, 4
    vl_view = np.repeat(np.arange(N), L).astype(np.int64)  # group g = view * L + label
    G = len(vl_view)
    va = rng.integers(0, G, 400)
    vb = rng.integers(0, G, 400)
    keep = vl_view[va] < vl_view[vb]
    keys, counts = va[keep] * G + vb[keep], rng.integers(1, 50, int(keep.sum()))
    path = tmp_path / "pairs.bin"
    for part in np.array_split(np.arange(len(keys)), 5):  # appended tile by tile
        pw.append_entries(path, keys[part], counts[part])
    all_at_once = pw.pairwise_total(*([t] for t in pw.pairwise_terms(keys, counts, vl_view, G)))
    groups = []
    terms = pw.pairwise_terms

    def spy(k, c, *args):
        views = np.unique(vl_view[k // G])
        groups.append((len(k), views))
        return terms(k, c, *args)

    monkeypatch.setattr(pw, "pairwise_terms", spy)
    got = pw.pairwise_stream(path, tmp_path, vl_view, G, N, max_entries)
    assert got == all_at_once  # to the bit
    assert not list(tmp_path.glob("pairs*.bin"))  # spill files removed
    seen = np.concatenate([v for _, v in groups])
    assert len(seen) == len(np.unique(seen))  # each view a in exactly one group
    assert sum(n for n, _ in groups) == len(keys)
    if max_entries < 10**9:
        assert len(groups) > 1
        assert all(n <= max_entries or len(v) == 1 for n, v in groups)
    else:
        assert len(groups) == 1
