"""The multi-view consistency metric H, exact, and its ID-free pairwise variant.

For a pixel p of view w with 3D point f(p) and output vector M(p) (the one-hot of its label, or
a dense feature vector), `h(p) = mean over q in E(p) of cos(M(q), M(p))`, where E(p) is every
valid labeled pixel of every view (w and p itself included) whose 3D point lies within eps of
f(p); `H = mean of h(p)` over all valid labeled pixels. Unlabeled pixels (label 0, or an
all-zero feature vector) are left out everywhere. Nothing is sampled: every pair within eps
counts (see `metric_kernels.py` for how that stays fast).

Pairwise variant (labels only; it measures raw per-view masks, whose IDs mean nothing across
views, and relabelling cannot game it). For each unordered view pair {a, b}, a != b, the
correspondences C_ab are all pixel pairs (p in a, q in b), both labeled, with
|f(p) - f(q)| <= eps. Two correspondences (p, q) and (p', q') *agree* when
`[label(p) == label(p')] == [label(q) == label(q')]`: the Rand index between the two views'
partitions of their shared 3D points. `pairwise = sum_ab agreeing pairs of correspondences /
sum_ab pairs of correspondences`. Counting each ordered pair (a, b) and (b, a) instead doubles
both sums and gives the same number. It is computed from the contingency counts
n[a, la, b, lb] (never by enumerating pairs of pairs) as in the Rand index:
`agree_ab = C(N,2) + 2 sum C(n,2) - sum_la C(n_la.,2) - sum_lb C(n_.lb,2)`, which is invariant
to any permutation of the IDs within a view. None when no view pair has two correspondences.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lift3d.errors import InputError

logger = logging.getLogger(__name__)

# Cell edge = a hair over eps / _K; a block holds _M^3 cells (_M >= _K keeps every neighbour of
# a block's cells inside its 26 neighbouring blocks). On scene0000_00 (docs/benchmarks/metric.md)
# cells of eps (K = 1) beat eps/2 and eps/3: finer cells test fewer pairs one by one, but the
# per-cell work (125 or 343 neighbour cells to classify) costs more than the vectorised tests save.
_K = 1
_M = 1
# Distinct pairwise entries a counting thread gathers before handing them on (16 bytes each, in
# a hash table at most half full): the in-memory metric keeps every entry anyway, so this only
# sets how often they are handed over; the streamed one uses its own bound (max_points / 8).
_MAX_ENTRIES = 1 << 20


@dataclass
class MetricResult:
    """What `consistency_score` measured.

    Attributes:
        H: mean of h(p) over all valid labeled pixels, in [0, 1] for labels.
        pairwise: the ID-free pairwise agreement in [0, 1]; None for feature input or when no
            view pair shares two correspondences.
        eps: neighbourhood radius in metres.
        pixels: number of valid labeled pixels used.
        per_pixel: [N, H, W] float32 h(p), NaN where excluded; None unless asked for.
        per_frame: mean h of each frame (NaN for a frame without labeled pixels).
    """

    H: float
    pairwise: float | None
    eps: float
    pixels: int
    per_pixel: np.ndarray | None
    per_frame: list[float]

    def to_json(self) -> dict:
        """Plain JSON values (NaN written as null)."""
        return {
            "H": self.H,
            "pairwise": self.pairwise,
            "eps": self.eps,
            "pixels": self.pixels,
            "per_frame": [None if not math.isfinite(v) else v for v in self.per_frame],
        }


def consistency_score(
    pointmaps: np.ndarray,  # [N, H, W, 3] float32 world metres
    valid: np.ndarray,  # [N, H, W] bool
    labels: np.ndarray | None = None,  # [N, H, W] int, 0 = unlabeled
    *,
    features: np.ndarray | None = None,  # [N, H, W, C] float, all-zero = excluded
    eps: float = 0.02,
    per_pixel: bool = False,
    workers: int = 2,
    pairwise: bool = True,
) -> MetricResult:
    """The exact consistency metric H (and the pairwise variant for labels).

    Args:
        pointmaps: [N, H, W, 3] world points of every view, metres; float32 (other float
            types are rounded to float32 first, the precision geometry has everywhere).
        valid: [N, H, W] pixels whose point is known; other pixels may hold anything.
        labels: [N, H, W] non-negative integer IDs shared across views (0 = unlabeled); give
            exactly one of `labels` and `features`.
        features: [N, H, W, C] per-pixel vectors (soft masks, CLIP/DINO-style features);
            cosine similarity; an all-zero vector marks the pixel unlabeled.
        eps: neighbourhood radius in metres (> 0).
        per_pixel: also return h(p) as an [N, H, W] float32 map.
        workers: threads (each runs compiled code without the GIL); the result does not
            depend on it.
        pairwise: also compute the pairwise variant (labels only; it needs per-view counts,
            about doubling the time).

    Returns:
        A `MetricResult`.

    Raises:
        InputError: shapes disagree, eps <= 0, a valid pixel has a non-finite point or feature,
            or no pixel is both valid and labeled.
    """
    pointmaps, sel, vl_of, vl_label, vl_view = _prepare(pointmaps, valid, labels, features, eps)
    from lift3d.consistency import metric_kernels as mk

    labels = None if labels is None else np.asarray(labels)
    features = None if features is None else np.asarray(features)

    t0, c0 = time.perf_counter(), time.process_time()
    N, H, W = valid.shape
    n = int(sel.sum())
    eps = float(eps)
    eps2 = eps * eps
    G = 1 if features is not None else len(vl_label)
    idx, keys, dims = _build_grid(pointmaps, labels, sel, vl_of, G, eps)
    del sel
    x, y, z = (np.empty(n, np.float32) for _ in range(3))
    mk.gather_points(pointmaps, idx, x, y, z)
    (cell_key, cell_start, cell_bbox, cell_run_start, run_start, run_vl,
     cell_lrun_start, lrun_start, lrun_label), block_keys, block_cell_start = _cells_and_blocks(keys, G, x, y, z, vl_label)
    vl = (keys % G).astype(np.int32)
    del keys
    chunks = _chunks(cell_start, block_cell_start, workers)
    grid = (block_keys, block_cell_start, cell_key, cell_start, cell_bbox)
    n_cells, n_blocks = len(cell_key), len(block_keys)
    del block_keys, block_cell_start, cell_key, cell_bbox
    t1, c1 = time.perf_counter(), time.process_time()
    n_all = np.zeros(n, np.int32)
    do_pairwise = pairwise and features is None
    pairwise = None
    if features is None:
        lab = vl_label.astype(np.int32)[vl]
        num = np.zeros(n, np.int32)  # n_same
        vl_view64 = vl_view.astype(np.int64)
        args = (*grid, cell_run_start, run_start, run_vl, cell_lrun_start, lrun_start, lrun_label,
                x, y, z, lab, vl, vl_view64, G, eps2, _K, _M, dims[1], dims[2], do_pairwise, n_all, num)
        del cell_run_start, run_start, run_vl, cell_lrun_start, lrun_start, lrun_label, lab, vl
        table = _EntryTable(_MAX_ENTRIES)
        _run(_label_work(args, _MAX_ENTRIES, table.add), chunks, workers)
        del args
        if do_pairwise:
            pairwise = _pairwise_from_entries(*table.entries(), vl_view64, G)
        del table
    else:
        f = _unit_features(features, idx)
        num = np.zeros(n, np.float64)  # sum of cosines
        args = (*grid, x, y, z, f, mk.cell_feature_sums(cell_start, f), eps2, _K, _M, dims[1], dims[2], n_all, num)
        del f
        _run(lambda rng: mk.feature_chunk(rng[0], rng[1], *args), chunks, workers)
        del args
    del grid, x, y, z, cell_start
    t2, c2 = time.perf_counter(), time.process_time()
    logger.debug("metric: %d points, %d cells, %d blocks; grid %.1f s (CPU %.1f s), counting %.1f s (CPU %.1f s)",
                 n, n_cells, n_blocks, t1 - t0, c1 - c0, t2 - t1, c2 - c1)
    if features is None:
        # exact sums: the same numbers to the bit whatever the order (`consistency_score_stream`)
        limbs, frame_n = np.zeros((N, 3), np.int64), np.zeros(N, np.int64)
        mk.frame_sums_exact(num, n_all, idx, H * W, limbs, frame_n)
        frame_sum = _limbs_to_float(limbs)
    else:
        frame_sum, frame_n = mk.frame_sums(num, n_all, idx, H * W, N)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_frame = (frame_sum / frame_n).tolist()
    out_map = None
    if per_pixel:
        out_map = np.full(N * H * W, np.nan, np.float32)
        step = 1 << 22  # h in float64 a slice at a time: a full [n] float64 would be ~0.6 GB
        for i in range(0, n, step):
            out_map[idx[i:i + step]] = num[i:i + step] / n_all[i:i + step]
        out_map = out_map.reshape(N, H, W)
    return MetricResult(H=math.fsum(frame_sum) / n, pairwise=pairwise, eps=eps, pixels=n,
                        per_pixel=out_map, per_frame=per_frame)


def _limbs_to_float(limbs: np.ndarray) -> np.ndarray:
    """[N] float64 of the exact per-frame sums in [N, 3] 28-bit limbs (`frame_sums_exact`)."""
    return np.array([((int(a) << 56) + (int(b) << 28) + int(c)) / (1 << 84) for a, b, c in limbs.tolist()],
                    np.float64)


def _cells_and_blocks(keys, G, x, y, z, vl_label):
    """Cells and runs of the sorted keys (`metric_kernels.build_cells`), and the blocks of cells:
    block_keys [nb] and block_cell_start [nb + 1] (cell ranges)."""
    from lift3d.consistency import metric_kernels as mk

    cells = mk.build_cells(keys, G, x, y, z, vl_label)
    cell_key = cells[0]
    block_of_cell = cell_key // _M**3
    block_first = np.flatnonzero(np.r_[True, block_of_cell[1:] != block_of_cell[:-1]])
    block_keys = block_of_cell[block_first]
    block_cell_start = np.r_[block_first, len(cell_key)].astype(np.int64)
    return cells, block_keys, block_cell_start


def _unit_features(features: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """[n, C] float32 unit vectors of the selected pixels (in float64, then rounded)."""
    flat = features.reshape(-1, features.shape[-1])
    out = np.empty((len(idx), flat.shape[1]), np.float32)
    step = 1 << 20
    for i in range(0, len(idx), step):
        f = flat[idx[i:i + step]].astype(np.float64)
        out[i:i + step] = f / np.linalg.norm(f, axis=1, keepdims=True)
    return out


def _consistency_score_reference(
    pointmaps: np.ndarray,  # [N, H, W, 3]
    valid: np.ndarray,  # [N, H, W] bool
    labels: np.ndarray | None = None,  # [N, H, W] int
    *,
    features: np.ndarray | None = None,  # [N, H, W, C]
    eps: float = 0.02,
    per_pixel: bool = False,
    workers: int = 2,
) -> MetricResult:
    """Brute force over all pairs of pixels and all pairs of correspondences (tiny inputs only)."""
    pointmaps, sel, _, _, _ = _prepare(pointmaps, valid, labels, features, eps)
    N, H, W = valid.shape
    idx = np.flatnonzero(sel)
    X = pointmaps.reshape(-1, 3)[idx].astype(np.float64)
    dx, dy, dz = (X[None, :, i] - X[:, None, i] for i in range(3))
    E = dx * dx + dy * dy + dz * dz <= eps * eps  # same expression as the kernels
    if features is None:
        lab = np.asarray(labels).reshape(-1)[idx]
        sim = (lab[:, None] == lab[None, :]).astype(np.float64)
    else:
        F = np.asarray(features).reshape(-1, np.shape(features)[-1])[idx].astype(np.float64)
        F /= np.linalg.norm(F, axis=1, keepdims=True)
        sim = F @ F.T
    h = (E * sim).sum(1) / E.sum(1)
    frame = idx // (H * W)
    per_frame = [float(h[frame == i].mean()) if (frame == i).any() else float("nan") for i in range(N)]
    pairwise = None
    if features is None:
        agree = total = 0
        for a in range(N):
            for b in range(a + 1, N):
                ii, jj = np.nonzero(E[np.ix_(frame == a, frame == b)])
                la = lab[frame == a][ii]
                lb = lab[frame == b][jj]
                s, t = np.triu_indices(len(la), k=1)
                agree += int(((la[s] == la[t]) == (lb[s] == lb[t])).sum())
                total += len(s)
        pairwise = agree / total if total else None
    out_map = None
    if per_pixel:
        out_map = np.full(N * H * W, np.nan, np.float32)
        out_map[idx] = h
        out_map = out_map.reshape(N, H, W)
    return MetricResult(H=float(h.mean()), pairwise=pairwise, eps=float(eps), pixels=len(idx),
                        per_pixel=out_map, per_frame=per_frame)


def _prepare(pointmaps, valid, labels, features, eps):
    """Check the input.

    Returns:
        pointmaps: [N, H, W, 3] float32 (the input unless it had another dtype).
        sel: [N*H*W] bool, valid labeled pixels.
        vl_of: per frame (its sorted labels, their (label, view) group ids); None for features.
        vl_label: [G] int32 rank of each group's label among all labels (only equality of
            labels matters, and ranks fit int32 whatever the IDs).
        vl_view: [G] int64 view of each group.
    """
    _check_eps(eps)
    pointmaps = np.asarray(pointmaps)
    valid = np.asarray(valid)
    if pointmaps.ndim != 4 or pointmaps.shape[-1] != 3 or not np.issubdtype(pointmaps.dtype, np.floating):
        raise InputError(None, f"pointmaps must be float [N, H, W, 3], got {pointmaps.dtype} {pointmaps.shape}")
    pointmaps = pointmaps.astype(np.float32, copy=False)
    if valid.shape != pointmaps.shape[:3] or valid.dtype != bool:
        raise InputError(None, f"valid must be a bool [N, H, W] = {pointmaps.shape[:3]} array, got {valid.dtype} {valid.shape}")
    if (labels is None) == (features is None):
        raise InputError(None, "give exactly one of labels and features")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != valid.shape or not np.issubdtype(labels.dtype, np.integer):
            raise InputError(None, f"labels must be integer [N, H, W] = {valid.shape}, got {labels.dtype} {labels.shape}")
    else:
        features = np.asarray(features)
        if features.ndim != 4 or features.shape[:3] != valid.shape or not np.issubdtype(features.dtype, np.floating):
            raise InputError(None, f"features must be float [N, H, W, C] with [N, H, W] = {valid.shape}, got {features.dtype} {features.shape}")
    N = valid.shape[0]
    sel = np.empty(valid.size, bool)
    HW = valid[0].size if N else 0
    per_frame_labels = []
    for i in range(N):
        v = valid[i].reshape(-1)
        pts = pointmaps[i].reshape(-1, 3)
        bad = v & ~np.isfinite(pts).all(axis=1)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise InputError(None, f"pointmaps: {int(bad.sum())} valid pixel(s) of frame {i} have non-finite "
                                   f"points, e.g. pixel (u={j % valid.shape[2]}, v={j // valid.shape[2]})")
        if labels is not None:
            lab = labels[i].reshape(-1)
            if lab.size and lab.min() < 0:
                raise InputError(None, f"labels of frame {i} are negative (0 = unlabeled, 1.. = IDs)")
            s = v & (lab > 0)
            per_frame_labels.append(np.unique(lab[s]))
        else:
            f = features[i].reshape(v.size, -1)
            if not np.isfinite(f[v]).all():
                raise InputError(None, f"features of frame {i} hold non-finite values in valid pixels")
            s = v & (f != 0).any(axis=1)
        sel[i * HW:(i + 1) * HW] = s
    if not sel.any():
        raise InputError(None, "no pixel is both valid and labeled: nothing to measure")
    if labels is None:
        return pointmaps, sel, None, np.zeros(1, np.int32), np.zeros(1, np.int64)
    return (pointmaps, sel, *_label_groups(per_frame_labels))


def _check_eps(eps) -> None:
    if isinstance(eps, bool) or not (isinstance(eps, (int, float, np.floating, np.integer)) and math.isfinite(eps) and eps > 0):
        raise InputError(None, f"eps must be a positive number of metres, got {eps!r}")


def _label_groups(per_frame_labels: list[np.ndarray]):
    """(vl_of, vl_label, vl_view) of `_prepare` from each frame's sorted labels: (label, view)
    groups numbered in (label, view) order."""
    N = len(per_frame_labels)
    lab_all = np.concatenate(per_frame_labels)
    view_all = np.concatenate([np.full(len(u), i, np.int64) for i, u in enumerate(per_frame_labels)])
    order = np.lexsort((view_all, lab_all))
    vl_id = np.empty(len(order), np.int64)
    vl_id[order] = np.arange(len(order))
    starts = np.cumsum([0] + [len(u) for u in per_frame_labels])
    vl_of = [(per_frame_labels[i], vl_id[starts[i]:starts[i + 1]]) for i in range(N)]
    rank = np.unique(lab_all, return_inverse=True)[1].reshape(-1)
    return vl_of, rank[order].astype(np.int32), view_all[order]


def _build_grid(pointmaps, labels, sel, vl_of, G, eps):
    """Sort the selected pixels by (block, fine cell, (label, view) group).

    Returns:
        idx: [n] flat pixel indices in sorted order (int32 when N*H*W allows, else int64).
        keys: [n] int64 sorted keys `cell * G + vl`, cell = block * M^3 + cell within block.
        dims: blocks along x, y, z.
    """
    from lift3d.consistency import metric_kernels as mk

    lo, hi = mk.selected_bounds(pointmaps, sel)
    s, dims = _grid_dims(lo, hi, eps, G)
    n = int(sel.sum())
    keys = np.empty(n, np.int64)
    idx = np.empty(n, np.int32 if sel.size < 2**31 else np.int64)
    if vl_of is None:
        labs = np.zeros(0, np.int64)
        ids = np.zeros(0, np.int64)
        start = np.zeros(pointmaps.shape[0] + 1, np.int64)
        labels = np.zeros((1, 1, 1), np.int64)
    else:
        labs = np.concatenate([v[0] for v in vl_of]).astype(labels.dtype)
        ids = np.concatenate([v[1] for v in vl_of]).astype(np.int64)
        start = np.cumsum([0] + [len(v[0]) for v in vl_of]).astype(np.int64)
    mk.grid_keys(pointmaps, sel, labels, lo, s, dims, _M, G, labs, ids, start, keys, idx)
    keys, idx = mk.radix_sort_pairs(keys, idx)
    return idx, keys, dims


def _grid_dims(lo, hi, eps, G):
    """(cell edge s, blocks along x, y, z) of the grid over the bounds [lo, hi] of the points.

    Raises:
        InputError: the keys (blocks x cells x G label groups) would not fit in int64.
    """
    # a hair over eps / K so that float rounding can never put a neighbour K + 1 cells away
    s = eps / _K * (1 + 1e-6)
    dims = np.floor((hi - lo) / s).astype(np.int64) // _M + 3  # offset by one: neighbour keys stay >= 0
    if int(np.prod(dims.astype(object))) * _M**3 * G >= 2**62:
        raise InputError(None, f"the scene spans {np.round(hi - lo, 2).tolist()} m: too large for eps = {eps} m "
                               f"({G} label groups); raise eps or split the scene")
    return s, dims


def _chunks(cell_start, block_cell_start, workers, runs=None):
    """Block ranges [b0, b1) of about equal point counts, several per worker (load balance),
    covering `runs` of consecutive blocks (default: all blocks)."""
    pts = cell_start[block_cell_start]  # first point of each block, then n
    if runs is None:
        runs = [(0, len(block_cell_start) - 1)]
    total = int(sum(pts[b1] - pts[b0] for b0, b1 in runs))
    n_chunks = max(1, min(sum(b1 - b0 for b0, b1 in runs), max(8 * workers, total // 200_000)))
    target = max(1.0, total / n_chunks)  # points per chunk
    out = []
    for b0, b1 in runs:
        n = int(pts[b1] - pts[b0])
        k = max(1, min(b1 - b0, round(n / target)))
        cuts = np.searchsorted(pts[b0:b1 + 1] - pts[b0], np.linspace(0, n, k + 1)[1:-1])
        e = np.unique(np.r_[0, cuts, b1 - b0]) + b0
        out += [(int(a), int(b)) for a, b in zip(e[:-1], e[1:]) if b > a]
    return out


def _label_work(args, max_entries: int, sink, views=(0, 2**62), count_h: bool = True):
    """The work of one chunk [b0, b1) of `mk.label_chunk` for `_run`: counts written in place
    (when count_h), the pairwise entries whose view a is in [views[0], views[1]) handed to
    `sink(keys, counts)` a piece at a time (each at most max_entries distinct keys plus one
    block's), under a lock, so no thread holds more than one piece whatever the chunk's size."""
    from lift3d.consistency import metric_kernels as mk

    lock = threading.Lock()

    def work(rng):
        b, b1 = rng
        while True:
            keys, counts, b = mk.label_chunk(b, b1, *args, max_entries, views[0], views[1], count_h)
            if len(keys):
                with lock:
                    sink(keys, counts)
            del keys, counts
            if b >= b1:
                return None

    return work


def _run(work, chunks, workers):
    """Run `work` over the chunks on `workers` threads (the kernels release the GIL)."""
    if workers <= 1 or len(chunks) == 1:
        return [work(c) for c in chunks]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(work, chunks))


def _pairwise_from_entries(keys, counts, vl_view, G) -> float | None:
    """The pooled Rand agreement from contingency entries (vl_a * G + vl_b, count), view_a < view_b
    (a key may repeat: `_pairwise_terms` sums them)."""
    if not len(keys):
        return None
    T, D = _pairwise_terms(keys, counts, vl_view, G)
    return _pairwise_total([T], [D])


class _EntryTable:
    """Contingency entries (vl_a * G + vl_b, count) folded as they come: pieces are buffered and
    merged into one table (each key once) whenever the buffer outgrows both `limit` and the
    table, so memory stays a small multiple of the distinct keys however often pieces repeat
    them (the kernel hands its table over every `limit` keys)."""

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self.table = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        self.buffer: list[tuple[np.ndarray, np.ndarray]] = []
        self.buffered = 0

    def add(self, keys: np.ndarray, counts: np.ndarray) -> None:
        if not len(keys):
            return
        self.buffer.append((keys, counts))
        self.buffered += len(keys)
        if self.buffered >= max(self.limit, len(self.table[0])):
            self._fold()

    def entries(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, counts), each key once."""
        self._fold()
        return self.table

    def _fold(self) -> None:
        self.table = _merge_entries([self.table] + self.buffer)
        self.buffer, self.buffered = [], 0


def _merge_entries(parts):
    """One (keys, counts) with each key once, its counts summed (exact integers): a (vl_a, vl_b)
    entry may come from several chunks."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts])
    order = np.argsort(keys, kind="stable")
    keys, counts = keys[order], counts[order]
    first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[first], np.add.reduceat(counts, first)


def _pairwise_total(T_parts, D_parts) -> float | None:
    """sum(D) / sum(T) over view pairs, each sum correctly rounded (`math.fsum`), so the result
    does not depend on how the pairs were split into parts."""
    if not T_parts:
        return None
    total = math.fsum(np.concatenate(T_parts))  # one fsum over all: fsum of fsums would round twice
    if total == 0:
        return None
    return math.fsum(np.concatenate(D_parts)) / total


def _pairwise_terms(keys, counts, vl_view, G):
    """Per view pair (a, b): T = C(N_ab, 2) pixel pairs and D = T + 2 S - X - Y agreeing pairs
    (the Rand index's numerator), from the entries of those pairs (all entries of a view pair
    must be present; a key may repeat, its counts are summed).

    Every term is an integer below 2**53, so exact in float64: the values do not depend on the
    entries' order or on which other pairs are computed alongside.
    """
    keys, n = _merge_entries([(keys, counts)])
    va, vb = keys // G, keys % G
    pair = vl_view[va] * (int(vl_view.max()) + 1) + vl_view[vb]

    def c2_sum(group, x):
        """C(sum of x in g, 2) for each group g (float64), and each entry's group."""
        _, inv = np.unique(group, return_inverse=True)
        tot = np.bincount(inv, weights=x.astype(np.float64))
        return tot * (tot - 1) / 2, inv

    nf = n.astype(np.float64)
    _, pinv = np.unique(pair, return_inverse=True)
    N_ab = np.bincount(pinv, weights=nf)
    T = N_ab * (N_ab - 1) / 2
    S = np.bincount(pinv, weights=nf * (nf - 1) / 2)
    row_c2, row_inv = c2_sum(pair * G + va, n)
    col_c2, col_inv = c2_sum(pair * G + vb, n)
    row_pair = np.zeros(len(row_c2), np.int64)
    row_pair[row_inv] = pinv
    col_pair = np.zeros(len(col_c2), np.int64)
    col_pair[col_inv] = pinv
    X = np.bincount(row_pair, weights=row_c2, minlength=len(T))
    Y = np.bincount(col_pair, weights=col_c2, minlength=len(T))
    return T, T + 2 * S - X - Y


def scene_pointmaps(scene, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The scene's world pointmaps at the label maps' resolution, streaming its frames.

    Depth is resampled by nearest neighbour onto the target camera (`align_depth` with scaled
    intrinsics) and back-projected, so one masks folder has one H whatever the scene's working
    size. Frames without depth but with a pointmap (MASt3R) have the pointmap resampled the same way.

    Args:
        scene: a `lift3d.recon.scene.Scene` with geometry.
        size: (W, H) of the label maps.

    Returns:
        pointmaps: [N, H, W, 3] float32 world metres (0 where invalid).
        valid: [N, H, W] bool.
    """
    W, H = int(size[0]), int(size[1])
    pointmaps = np.zeros((len(scene), H, W, 3), np.float32)
    valid = np.zeros((len(scene), H, W), bool)
    for i, frame in enumerate(scene):
        pointmaps[i], valid[i] = frame_pointmap(scene, frame, (W, H))
    return pointmaps, valid


def frame_pointmap(scene, frame, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One frame's ([H, W, 3] float32 world points, [H, W] bool valid) at size (W, H), as in
    `scene_pointmaps` (which stacks them; this streams)."""
    from lift3d.recon.geometry import align_depth, backproject, pixel_grid, scale_intrinsics

    W, H = int(size[0]), int(size[1])
    if frame.pointmap is None or frame.valid is None:
        raise InputError(scene.root, f"frame {frame.name} has no 3D points (the metric needs depth + poses "
                                     "or a MASt3R reconstruction)")
    if frame.size == (W, H):
        return np.asarray(frame.pointmap, np.float32), np.asarray(frame.valid, bool)
    K = scale_intrinsics(frame.K, frame.size, (W, H))
    if frame.depth is not None and frame.T_world_camera is not None:
        depth = align_depth(frame.depth, frame.K, K, (W, H))
        pm, v = backproject(depth, K, frame.T_world_camera)
        return np.asarray(pm, np.float32), np.asarray(v, bool)
    # nearest source pixel of each target pixel centre (half-pixel convention)
    uv = pixel_grid((W, H))
    u = np.clip(np.floor((uv[..., 0] + 0.5) * frame.size[0] / W).astype(int), 0, frame.size[0] - 1)
    v = np.clip(np.floor((uv[..., 1] + 0.5) * frame.size[1] / H).astype(int), 0, frame.size[1] - 1)
    return np.asarray(frame.pointmap[v, u], np.float32), np.asarray(frame.valid[v, u], bool)


def run_metric(
    scene_path: str | Path,
    masks_dir: str | Path | None,
    *,
    eps: float = 0.02,
    features_dir: str | Path | None = None,
    out_json: str | Path | None = None,
    max_points: int | None = None,
    pairwise: bool = True,
    frame_names: list[str] | None = None,
    progress=None,
) -> dict:
    """`lift3d metric`: H (and pairwise) of a masks folder, or of per-frame features, on a scene.

    Args:
        scene_path: scene folder or file (any format `load_scene` reads) with geometry.
        masks_dir: folder of label maps `<frame>.png`, one per scene frame, all one size.
        eps: neighbourhood radius in metres.
        features_dir: folder of `<frame>.npy` [H, W, C] float vectors; when given, H is computed
            on them (cosine similarity) and `masks_dir` is not read.
        out_json: where to write the result (atomically); None writes nothing.
        max_points: labeled points held at once by the streamed metric (its memory bound);
            default `metric_stream.DEFAULT_MAX_POINTS`. Not used for features.
        pairwise: also compute the pairwise variant (labels only).
        frame_names: score only these frames of the scene (a subset run); default all.
        progress: `progress(phase, done, total)` callback of the streamed metric (labels only).

    Returns:
        The JSON dict: H, pairwise, eps, pixels, per_frame, frames, size, input, seconds (in all;
        seconds_reading: scene and masks; seconds_metric: `consistency_score`).
    """
    from lift3d.consistency.labelmaps import read_label_map
    from lift3d.recon import load_scene

    t0 = time.perf_counter()
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise InputError(None, f"--eps must be a positive number of metres, got {eps!r}")
    scene = load_scene(scene_path)
    all_names = set(scene.frame_names)
    scene = _frame_subset(scene, frame_names)
    names = list(scene.frame_names)
    labels = features = None
    if features_dir is not None:
        features = _read_features(Path(features_dir), names)
        size = (features.shape[2], features.shape[1])
    else:
        if masks_dir is None:
            raise InputError(None, "give a masks folder or a features folder")
        masks_dir = Path(masks_dir)
        if masks_dir.is_dir():
            # hidden files are no label maps (a killed write leaves `.NAME.tmp.png`)
            extra = sorted({p.stem for p in masks_dir.glob("*.png") if not p.name.startswith(".")} - all_names)
            if extra:
                raise InputError(masks_dir, f"{len(extra)} label map(s) match no frame of the scene "
                                            f"({len(all_names)} frames), e.g. {', '.join(e + '.png' for e in extra[:5])}")
        if not masks_dir.is_dir():
            raise InputError(masks_dir, "masks folder not found")
        missing = [n for n in names if not (masks_dir / f"{n}.png").is_file()]
        if missing:
            hint = " (a subset run? give its --frames / --max-frames)" if frame_names is None else ""
            raise InputError(masks_dir, f"{len(missing)} of {len(names)} frames have no label map, e.g. "
                             + ", ".join(f"{n}.png" for n in missing[:5]) + hint)
        first = masks_dir / f"{names[0]}.png"
        m0 = read_label_map(first)
        size = (m0.shape[1], m0.shape[0])
        del m0
    if tuple(scene.size) != size:
        # read depth straight at the labels' size: one nearest-neighbour resampling, not two
        scene = _frame_subset(load_scene(scene_path, size=size), frame_names)
    if features is not None:
        pointmaps, valid = scene_pointmaps(scene, size)
        t1 = time.perf_counter()
        result = consistency_score(pointmaps, valid, labels, features=features, eps=eps)
    else:
        # labels stream a frame at a time (bounded memory whatever the number of frames)
        from lift3d.consistency.metric_stream import (
            DEFAULT_MAX_POINTS,
            consistency_score_stream,
            label_frame_loader,
        )
        from lift3d.recon.files import scratch_dir

        load, seconds = label_frame_loader(scene, masks_dir, size)
        t1 = time.perf_counter()
        # spill files beside the output (or the masks), not in a possibly small system temp
        with scratch_dir(Path(out_json).parent if out_json is not None else masks_dir.parent) as scratch:
            result = consistency_score_stream(load, len(names), eps=eps, work_dir=scratch,
                                              max_points=DEFAULT_MAX_POINTS if max_points is None else max_points,
                                              pairwise=pairwise, progress=progress)
        t1 = t0 + (t1 - t0) + seconds[0]  # reading happens inside the streaming metric
    t2 = time.perf_counter()
    out = result.to_json()
    out.update({"frames": len(names), "size": list(size), "input": "features" if features is not None else "labels",
                "seconds": round(time.perf_counter() - t0, 2), "seconds_reading": round(t1 - t0, 2),
                "seconds_metric": round(t2 - t1, 2)})
    if out_json is not None:
        from lift3d.recon.files import atomic_path

        with atomic_path(out_json) as tmp:
            tmp.write_text(json.dumps(out, indent=1))
    return out


def _frame_subset(scene, frame_names: list[str] | None):
    """The scene's frames named in `frame_names`, in that order (None: the scene as it is)."""
    if frame_names is None:
        return scene
    index = {n: i for i, n in enumerate(scene.frame_names)}
    unknown = [n for n in frame_names if n not in index]
    if unknown:
        raise InputError(scene.root, f"{len(unknown)} selected frame(s) are not in the scene, e.g. {', '.join(unknown[:5])}")
    if not frame_names:
        raise InputError(scene.root, "the frame selection is empty")
    return scene.subset([index[n] for n in frame_names])


def _read_features(folder: Path, names: list[str]) -> np.ndarray:
    """[N, H, W, C] float32 from `<folder>/<frame>.npy`, every file the same shape."""
    if not folder.is_dir():
        raise InputError(folder, "features folder not found")
    missing = [n for n in names if not (folder / f"{n}.npy").is_file()]
    if missing:
        raise InputError(folder, f"{len(missing)} of {len(names)} frames have no features, e.g. "
                                 + ", ".join(f"{n}.npy" for n in missing[:5]))
    out = None
    for i, n in enumerate(names):
        path = folder / f"{n}.npy"
        try:
            f = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(path, f"cannot read features ({e})") from None
        if f.ndim != 3 or not np.issubdtype(f.dtype, np.number):
            raise InputError(path, f"features must be a numeric [H, W, C] array, found {f.dtype} {f.shape}")
        if out is None:
            out = np.empty((len(names), *f.shape), np.float32)
        elif f.shape != out.shape[1:]:
            raise InputError(path, f"features are {f.shape}, expected {out.shape[1:]} like {names[0]}.npy")
        out[i] = f
    return out
