"""The exact metric H in bounded memory: frames streamed, space cut into slabs.

`consistency_score` holds every pointmap and label map of a scene at once (~30 bytes per labeled
point plus the inputs: 4.2 GiB for 300 frames at 640x480), so a 5,000-frame scan cannot fit.
`consistency_score_stream` reads one frame at a time and gives the same numbers, to the bit:

1. pass over the frames: check them, find the global bounds of the labeled points and each
   frame's label set (for the global (label, view) group numbering), and spill every labeled
   point (x, y, z, flat pixel index, label: 28 bytes) to one file under a temporary folder;
2. histogram the spilled points over the block layers of the longest axis and cut the layers
   into slabs of whole layers holding at most `max_points` points each (a single layer that
   holds more is a slab on its own);
3. distribute the points into one file per slab: its own layers plus one layer of halo on each
   side (a block's neighbours all lie in the 26 blocks around it, see `metric_kernels.py`);
4. per slab: build the grid with the GLOBAL origin and dims, so every key is the key of the
   global computation; the slab axis is made the first key component, so the slab's own blocks
   are one contiguous range, and the kernels run on those blocks only (the halo is read, never
   counted). Point coordinates keep their x, y, z order, so every distance is computed with
   the very operations of the global computation.

5. the pairwise variant's contingency entries ((label, view a), (label, view b)) -> count of
   each slab are appended to a spill file; at the end they are cut by view a into groups of
   at most `max_points` entries (whole views, as slabs are whole layers), and each group is
   summed and reduced to its view pairs' Rand terms on its own (`metric._pairwise_terms`).

Per-point counts are integers, hence equal to the global ones; per-frame sums of h are exact
(`metric_kernels.frame_sums_exact`, order-free); pairwise contingency entries are integer sums
over slabs, and every view pair's Rand terms are exact integers in float64, summed with one
`math.fsum`. Peak memory is one slab's arrays (~100 bytes a point) or one group of entries
(~80 bytes an entry) plus per-frame and per-label bookkeeping, whatever the number of frames
(the entries of one view a with all later views are the one thing that grows with the scan:
a few per label pair that touches in 3D). The spill files take ~2 x 28 bytes a labeled point
of disk, briefly, and 16 bytes per entry.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lift3d.consistency.metric import (
    _K,
    _M,
    MetricResult,
    _cells_and_blocks,
    _check_eps,
    _label_groups,
    _limbs_to_float,
    _pairwise_terms,
    _pairwise_total,
    _run,
)
from lift3d.errors import InputError

logger = logging.getLogger(__name__)

#: one spilled point: world xyz (float32), flat pixel index frame * H * W + v * W + u, label
_POINT = np.dtype([("p", np.float32, 3), ("i", np.int64), ("l", np.int64)])
#: own points per slab by default: ~100 bytes each at the peak of a slab (0.5 GiB measured on
#: scene0000_00, and no slower than 10M: docs/benchmarks/memory.md)
DEFAULT_MAX_POINTS = 2_000_000
_READ = 1 << 22  # points per read of a spill file


def consistency_score_stream(
    load_frame: Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]],
    num_frames: int,
    *,
    eps: float = 0.02,
    max_points: int = DEFAULT_MAX_POINTS,
    per_pixel_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    workers: int = 2,
    pairwise: bool = True,
) -> MetricResult:
    """`consistency_score` for labels, one frame in memory at a time and one slab of space.

    Args:
        load_frame: `load_frame(i)` -> (pointmap [H, W, 3] float world metres, valid [H, W]
            bool, labels [H, W] non-negative int, 0 = unlabeled) of view i; called twice per
            frame at most (once, in fact), in order.
        num_frames: N, the number of views.
        eps: neighbourhood radius in metres (> 0).
        max_points: most labeled points a slab owns (its halo adds the two layers around it),
            and most contingency entries reduced at once by the pairwise variant: the knob of
            peak memory (~100 bytes a point).
        per_pixel_dir: when given, h(p) is written to `per_pixel_dir/h.npy`, an [N, H, W]
            float32 array (NaN where excluded), and `MetricResult.per_pixel` is a read-only
            memory map of it; read it a frame at a time (`read_h_frame`).
        work_dir: where the temporary spill folder goes (default: the system's temp folder);
            it is removed at the end, also on error.
        workers: threads for the kernels; the result does not depend on it.
        pairwise: also compute the ID-free pairwise variant.

    Returns:
        A `MetricResult` equal to `consistency_score(...)` on the stacked frames (H, per_frame,
        pairwise and per-pixel h identical).

    Raises:
        InputError: as `consistency_score`: bad eps, shapes, non-finite valid points, negative
            labels, or no pixel both valid and labeled.
    """
    from lift3d.consistency import metric_kernels as mk

    _check_eps(eps)
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 1:
        raise InputError(None, f"max_points must be a positive integer, got {max_points!r}")
    if num_frames < 1:
        raise InputError(None, "no frames: nothing to measure")
    eps = float(eps)
    t0 = time.perf_counter()
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="metric-", dir=work_dir))
    try:
        spill = tmp / "points.bin"
        shape, lo, hi, frame_labels = _spill_frames(load_frame, num_frames, spill)
        N = num_frames
        H, W = shape
        n = sum(int(c) for c in frame_labels[1])
        vl_of, vl_label, vl_view = _label_groups(frame_labels[0])
        G = len(vl_label)
        uniq = np.unique(np.concatenate(frame_labels[0]))
        group_key = vl_label.astype(np.int64) * N + vl_view  # increasing with the group id
        s = eps / _K * (1 + 1e-6)  # as metric._build_grid
        dims = np.floor((hi - lo) / s).astype(np.int64) // _M + 3
        if int(np.prod(dims.astype(object))) * _M**3 * G >= 2**62:
            raise InputError(None, f"the scene spans {np.round(hi - lo, 2).tolist()} m: too large for eps = {eps} m "
                                   f"({G} label groups); raise eps or split the scene")
        axis = int(np.argmax(dims))
        perm = [axis] + [d for d in range(3) if d != axis]
        # reads of the spill never hold more than a slab would
        count = max(1 << 16, min(_READ, int(max_points)))
        hist = _layer_histogram(spill, lo, s, axis, int(dims[axis]), count)
        edges = _plan_slabs(hist, max_points)
        slab_files = _distribute(spill, tmp, lo, s, axis, edges, count)
        spill.unlink()
        h_path = None
        if per_pixel_dir is not None:
            h_path = Path(per_pixel_dir) / "h.npy"
            _init_h(h_path, (N, H, W))
        limbs = np.zeros((N, 3), np.int64)
        frame_n = np.zeros(N, np.int64)
        pair_spill = tmp / "pairs.bin"  # every slab's contingency entries, reduced at the end
        vl_view64 = vl_view.astype(np.int64)
        do_pairwise = bool(pairwise)
        grid = (lo, s, dims, perm)
        groups = (uniq, group_key, N, H * W, G, vl_label, vl_view64)
        for k, path in enumerate(slab_files):
            if path is None:
                continue
            # handed over, not kept: _slab drops the records once it has sorted them
            res = _slab(np.fromfile(path, _POINT), (edges[k], edges[k + 1]), grid, groups, eps * eps, workers,
                        do_pairwise)
            path.unlink()
            if res is None:
                continue
            idx, n_same, n_all, part = res
            mk.frame_sums_exact(n_same, n_all, idx, H * W, limbs, frame_n)
            if h_path is not None:
                _write_h(h_path, idx, n_same, n_all)
            if do_pairwise and len(part[0]):
                _append_entries(pair_spill, *part)
            del idx, n_same, n_all, part
        if int(frame_n.sum()) != n:
            raise RuntimeError(f"slabs counted {int(frame_n.sum())} points of {n}")  # a bug, never input
        frame_sum = _limbs_to_float(limbs)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_frame = (frame_sum / frame_n).tolist()
        pw = _pairwise_stream(pair_spill, tmp, vl_view64, G, N, max_points) if do_pairwise else None
        per_pixel = None if h_path is None else np.load(h_path, mmap_mode="r")
        logger.debug("metric (stream): %d points, %d frames, %d slabs, %.1f s", n, N, len(edges) - 1,
                     time.perf_counter() - t0)
        return MetricResult(H=math.fsum(frame_sum) / n, pairwise=pw, eps=eps, pixels=n, per_pixel=per_pixel,
                            per_frame=per_frame)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def label_frame_loader(scene, masks_dir: str | Path, size: tuple[int, int]):
    """`load_frame` over a scene's frames and their label maps `masks_dir/<frame>.png`.

    Args:
        scene: a `lift3d.recon.scene.Scene` with geometry (read lazily, a frame at a time).
        masks_dir: the label maps, one per frame, each (W, H) = size.
        size: (W, H) of the label maps; pointmaps are resampled to it (`frame_pointmap`).

    Returns:
        (load_frame, seconds): seconds[0] accumulates the time spent reading.

    Raises:
        InputError: the folder lacks a frame's map (checked at once), or a map has another size
            (when its frame is read).
    """
    from lift3d.consistency.labelmaps import read_label_map
    from lift3d.consistency.metric import frame_pointmap

    masks_dir = Path(masks_dir)
    names = list(scene.frame_names)
    missing = [n for n in names if not (masks_dir / f"{n}.png").is_file()]
    if missing:
        raise InputError(masks_dir, f"{len(missing)} of {len(names)} frames have no label map, e.g. "
                                    + ", ".join(f"{n}.png" for n in missing[:5]))
    W, H = int(size[0]), int(size[1])
    seconds = [0.0]

    def load(i: int):
        t = time.perf_counter()
        path = masks_dir / f"{names[i]}.png"
        lab = read_label_map(path)
        if lab.shape != (H, W):
            raise InputError(path, f"label map is {lab.shape[1]}x{lab.shape[0]}, expected {W}x{H}")
        pm, valid = frame_pointmap(scene, scene[i], (W, H))
        seconds[0] += time.perf_counter() - t
        return pm, valid, lab

    return load, seconds


def read_h_frame(per_pixel_dir: str | Path, i: int) -> np.ndarray:
    """[H, W] float32 h(p) of frame i from `per_pixel_dir/h.npy` (a copy; only its pages read)."""
    h = np.load(Path(per_pixel_dir) / "h.npy", mmap_mode="r")
    out = np.array(h[i])
    del h
    return out


def _spill_frames(load_frame, N, spill):
    """Pass 1: check each frame, append its labeled points to `spill`.

    Returns:
        (H, W); lo, hi [3] float64 bounds of the labeled points; (per-frame sorted labels,
        per-frame labeled point counts).
    """
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    shape = None
    labels_of, counts = [], []
    with open(spill, "wb") as fh:
        for i in range(N):
            pm, valid, lab = load_frame(i)
            pm, valid, lab = np.asarray(pm), np.asarray(valid), np.asarray(lab)
            if pm.ndim != 3 or pm.shape[-1] != 3 or not np.issubdtype(pm.dtype, np.floating):
                raise InputError(None, f"pointmap of frame {i} must be float [H, W, 3], got {pm.dtype} {pm.shape}")
            if shape is None:
                shape = pm.shape[:2]
            if pm.shape[:2] != shape:
                raise InputError(None, f"pointmap of frame {i} is {pm.shape[:2]}, frame 0's {shape}: all frames one size")
            if valid.shape != shape or valid.dtype != bool:
                raise InputError(None, f"valid of frame {i} must be a bool {shape} array, got {valid.dtype} {valid.shape}")
            if lab.shape != shape or not np.issubdtype(lab.dtype, np.integer):
                raise InputError(None, f"labels of frame {i} must be integer {shape}, got {lab.dtype} {lab.shape}")
            pts = pm.reshape(-1, 3).astype(np.float32, copy=False)
            v = valid.reshape(-1)
            bad = v & ~np.isfinite(pts).all(axis=1)
            if bad.any():
                j = int(np.flatnonzero(bad)[0])
                raise InputError(None, f"pointmaps: {int(bad.sum())} valid pixel(s) of frame {i} have non-finite "
                                       f"points, e.g. pixel (u={j % shape[1]}, v={j // shape[1]})")
            lab = lab.reshape(-1)
            if lab.size and lab.min() < 0:
                raise InputError(None, f"labels of frame {i} are negative (0 = unlabeled, 1.. = IDs)")
            sel = np.flatnonzero(v & (lab > 0))
            rec = np.empty(len(sel), _POINT)
            rec["p"] = pts[sel]
            rec["i"] = sel + i * v.size
            rec["l"] = lab[sel]
            rec.tofile(fh)
            labels_of.append(np.unique(lab[sel]).astype(np.int64))
            counts.append(len(sel))
            if len(sel):
                p = rec["p"].astype(np.float64)
                lo = np.minimum(lo, p.min(axis=0))
                hi = np.maximum(hi, p.max(axis=0))
    if not sum(counts):
        raise InputError(None, "no pixel is both valid and labeled: nothing to measure")
    return shape, lo, hi, (labels_of, counts)


def _chunks_of(path, count):
    """The points of a spill file, `count` at a time (plain reads: a memory map would keep every
    page it touched resident, i.e. the whole file)."""
    with open(path, "rb") as fh:
        while True:
            rec = np.fromfile(fh, _POINT, count=count)
            if not len(rec):
                return
            yield rec


def _layers(p, lo, s, axis):
    """Block layer (block coordinate along the axis, 1-based as in the grid) of points [n, 3]."""
    c = np.floor((p[:, axis].astype(np.float64) - lo[axis]) * (1.0 / s)).astype(np.int64)
    return c // _M + 1


def _layer_histogram(spill, lo, s, axis, n_layers, count):
    hist = np.zeros(n_layers, np.int64)
    for rec in _chunks_of(spill, count):
        hist += np.bincount(_layers(rec["p"], lo, s, axis), minlength=n_layers)
    return hist


def _plan_slabs(hist: np.ndarray, max_points: int) -> np.ndarray:
    """Slab edges [S + 1] over the layers: whole layers, greedily, each slab owning at most
    max_points points unless one layer alone holds more."""
    edges = [0]
    own = 0
    for layer, c in enumerate(hist.tolist()):
        if own and own + c > max_points:
            edges.append(layer)
            own = 0
        own += c
    edges.append(len(hist))
    return np.asarray(edges, np.int64)


def _distribute(spill, tmp, lo, s, axis, edges, count):
    """Pass 3: each slab's own points and one halo layer on each side into `tmp/slab<k>.bin`
    (None for a slab that receives no point). Returns the S paths.

    A point of layer L owned by slab k also goes to slab k - 1 when L is k's first layer and
    to slab k + 1 when L is k's last (the halo of a slab is its neighbours' edge layers).
    """
    S = len(edges) - 1
    paths = [tmp / f"slab{k}.bin" for k in range(S)]
    used = [False] * S
    slab_of = np.repeat(np.arange(S), np.diff(edges))  # layer -> owning slab
    first = np.zeros(len(slab_of), bool)
    last = np.zeros(len(slab_of), bool)
    first[edges[1:-1]] = True  # first layers of slabs 1.. (halo of the slab before)
    last[edges[1:-1] - 1] = True  # last layers of slabs ..S-2 (halo of the slab after)
    for rec in _chunks_of(spill, count):
        layer = _layers(rec["p"], lo, s, axis)
        k = slab_of[layer]
        lo_halo = np.flatnonzero(first[layer])
        hi_halo = np.flatnonzero(last[layer])
        src = np.concatenate([np.arange(len(rec)), lo_halo, hi_halo])
        dst = np.concatenate([k, k[lo_halo] - 1, k[hi_halo] + 1])
        order = np.argsort(dst, kind="stable")
        src, dst = src[order], dst[order]
        cuts = np.flatnonzero(np.r_[True, dst[1:] != dst[:-1], True])
        for a, b in zip(cuts[:-1], cuts[1:]):
            j = int(dst[a])
            with open(paths[j], "ab") as fh:
                rec[src[a:b]].tofile(fh)
            used[j] = True
    return [p if u else None for p, u in zip(paths, used)]


def _slab(pts, own_layers, grid, groups, eps2, workers, pairwise):
    """Counts of the points of one slab's own layers.

    Returns:
        None when the slab owns no point; else (idx [n] flat pixel indices, n_same [n], n_all
        [n], pairwise entries (keys, counts)) of its own points.
    """
    from lift3d.consistency import metric_kernels as mk

    lo, s, dims, perm = grid
    uniq, group_key, N, HW, G, vl_label, vl_view64 = groups
    n = len(pts)
    p = pts["p"]
    # the cell coordinates of metric_kernels.grid_keys (same float64 operations)
    inv_s = 1.0 / s
    c = [np.floor((p[:, d].astype(np.float64) - lo[d]) * inv_s).astype(np.int64) for d in range(3)]
    c = [c[d] for d in perm]
    dp = dims[perm]
    block = ((c[0] // _M + 1) * dp[1] + c[1] // _M + 1) * dp[2] + c[2] // _M + 1
    keys = block * _M**3 + ((c[0] % _M) * _M + c[1] % _M) * _M + c[2] % _M
    del c, block
    view = pts["i"] // HW
    rank = np.searchsorted(uniq, pts["l"])
    vl = np.searchsorted(group_key, rank * N + view)
    del rank, view
    keys = keys * G + vl
    del vl
    keys, order = mk.radix_sort_pairs(keys, np.arange(n, dtype=np.int64))
    x = np.ascontiguousarray(p[order, 0])
    y = np.ascontiguousarray(p[order, 1])
    z = np.ascontiguousarray(p[order, 2])
    idx = pts["i"][order]
    del order, p, pts
    (cell_key, cell_start, cell_bbox, cell_run_start, run_start, run_vl,
     cell_lrun_start, lrun_start, lrun_label), block_keys, block_cell_start = _cells_and_blocks(keys, G, x, y, z, vl_label)
    vl = (keys % G).astype(np.int32)
    del keys
    plane = int(dp[1]) * int(dp[2])
    b0 = int(np.searchsorted(block_keys, own_layers[0] * plane))
    b1 = int(np.searchsorted(block_keys, own_layers[1] * plane))
    if b1 == b0:
        return None
    p0, p1 = int(cell_start[block_cell_start[b0]]), int(cell_start[block_cell_start[b1]])
    chunks = _own_chunks(cell_start, block_cell_start, b0, b1, workers)
    lab = vl_label.astype(np.int32)[vl]
    n_all = np.zeros(n, np.int32)
    n_same = np.zeros(n, np.int32)
    args = (block_keys, block_cell_start, cell_key, cell_start, cell_bbox, cell_run_start, run_start, run_vl,
            cell_lrun_start, lrun_start, lrun_label, x, y, z, lab, vl, vl_view64, G, eps2, _K, _M,
            int(dp[1]), int(dp[2]), pairwise, n_all, n_same)
    parts = _run(lambda rng: mk.label_chunk(rng[0], rng[1], *args), chunks, workers)
    part = _merge_entries(parts) if pairwise else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    return idx[p0:p1].copy(), n_same[p0:p1].copy(), n_all[p0:p1].copy(), part


def _own_chunks(cell_start, block_cell_start, b0, b1, workers):
    """Contiguous ranges of the blocks [b0, b1) of about equal point counts (as metric._chunks)."""
    pts = cell_start[block_cell_start[b0:b1 + 1]]
    n = int(pts[-1] - pts[0])
    nb = b1 - b0
    n_chunks = int(min(nb, max(8 * workers, n // 200_000)))
    cuts = np.searchsorted(pts - pts[0], np.linspace(0, n, n_chunks + 1)[1:-1])
    edges = np.unique(np.r_[0, cuts, nb]) + b0
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _merge_entries(parts):
    """One (keys, counts) with each key once, its counts summed (exact integers)."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts])
    order = np.argsort(keys, kind="stable")
    keys, counts = keys[order], counts[order]
    first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[first], np.add.reduceat(counts, first)


_ENTRY = np.dtype([("k", np.int64), ("c", np.int64)])  # (vl_a * G + vl_b, count)


def _append_entries(path: Path, keys: np.ndarray, counts: np.ndarray) -> None:
    rec = np.empty(len(keys), _ENTRY)
    rec["k"], rec["c"] = keys, counts
    with open(path, "ab") as fh:
        rec.tofile(fh)


def _entry_chunks(path: Path, count: int):
    with open(path, "rb") as fh:
        while True:
            rec = np.fromfile(fh, _ENTRY, count=count)
            if not len(rec):
                return
            yield rec


def _pairwise_stream(path: Path, tmp: Path, vl_view: np.ndarray, G: int, N: int, max_entries: int) -> float | None:
    """`metric._pairwise_from_entries` over the spilled entries, one group of views a at a time.

    All entries of a view pair share view a (the smaller view), so a group of whole views a
    holds every entry of its pairs; the per-pair terms are exact, the final sums one fsum each.
    """
    if not path.is_file():
        return None
    count = max(1 << 16, min(_READ, int(max_entries)))
    hist = np.zeros(N, np.int64)
    for rec in _entry_chunks(path, count):
        hist += np.bincount(vl_view[rec["k"] // G], minlength=N)
    edges = _plan_slabs(hist, max_entries)  # whole views a, at most max_entries entries each
    S = len(edges) - 1
    group_of_view = np.repeat(np.arange(S), np.diff(edges))
    paths = [tmp / f"pairs{k}.bin" for k in range(S)]
    for rec in _entry_chunks(path, count):
        g = group_of_view[vl_view[rec["k"] // G]]
        order = np.argsort(g, kind="stable")
        rec, g = rec[order], g[order]
        cuts = np.flatnonzero(np.r_[True, g[1:] != g[:-1], True])
        for a, b in zip(cuts[:-1], cuts[1:]):
            with open(paths[int(g[a])], "ab") as fh:
                rec[a:b].tofile(fh)
    path.unlink()
    T_parts, D_parts = [], []
    for q in paths:
        if not q.is_file():
            continue
        rec = np.fromfile(q, _ENTRY)
        q.unlink()
        T, D = _pairwise_terms(rec["k"], rec["c"], vl_view, G)
        del rec
        T_parts.append(T)
        D_parts.append(D)
    return _pairwise_total(T_parts, D_parts)


def _init_h(path: Path, shape):
    """`path` = an [N, H, W] float32 .npy of NaN, written a frame at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    for i in range(shape[0]):
        h[i] = np.nan
        if i % 64 == 63:
            h.flush()
    h.flush()
    del h


def _write_h(path: Path, idx, n_same, n_all):
    """h = n_same / n_all of a slab's points into the .npy at their pixels (mapped only while
    writing, so the written pages leave the process's memory with the map)."""
    h = np.load(path, mmap_mode="r+")
    flat = h.reshape(-1)
    order = np.argsort(idx, kind="stable")  # pixel order: sequential pages
    step = 1 << 22
    for a in range(0, len(order), step):
        o = order[a:a + step]
        flat[idx[o]] = n_same[o] / n_all[o]
    h.flush()
    del flat, h
