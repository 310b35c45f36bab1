"""The exact metric H in bounded memory: frames streamed, space cut into tiles.

`consistency_score` holds every pointmap and label map of a scene at once (~30 bytes per labeled
point plus the inputs: 4.2 GiB for 300 frames at 640x480), so a 5,000-frame scan cannot fit.
`consistency_score_stream` reads one frame at a time and gives the same numbers, to the bit:

1. pass over the frames: check them, find the global bounds of the labeled points and each
   frame's label set (for the global (label, view) group numbering), and spill every labeled
   point (x, y, z, flat pixel index, label: 28 bytes) to one file under a temporary folder;
2. count the spilled points per occupied block of the global grid (blocks are eps wide: their
   number grows with the surface the scan covers, not with its frames);
3. cut the blocks into boxes, tiles, by k-d splits until each tile's points plus those of the
   blocks around it (its halo: a block's neighbours all lie in the 26 blocks around it, see
   `metric_kernels.py`) number at most `max_points`, or the tile is one block. Slabs along one
   axis would not do: a wall across that axis is one layer holding every view's points of it;
4. distribute the points into one file per tile: its own blocks and its halo;
5. per tile: build the grid with the GLOBAL origin and dims, so every key is the key of the
   global computation, and run the kernels on the tile's own blocks only (runs of consecutive
   blocks in key order; the halo is read, never counted). Point coordinates keep their x, y, z
   order, so every distance is computed with the very operations of the global computation;
6. the pairwise variant's contingency entries ((label, view a), (label, view b)) -> count of
   each tile are counted in passes over ranges of views a (their number of distinct keys
   grows with the square of the number of views that see one spot, so one pass over all
   views would not be bounded: `_view_passes`), folded in tables of at most max_points / 8
   entries and appended to a spill file; at the end they are cut by view a into groups of
   at most max_points / 8 entries (whole views), and each group is summed and reduced to its view
   pairs' Rand terms on its own (`metric._pairwise_terms`).

Per-point counts are integers, hence equal to the global ones; per-frame sums of h are exact
(`metric_kernels.frame_sums_exact`, order-free); pairwise contingency entries are integer sums
over tiles, and every view pair's Rand terms are exact integers in float64, summed with one
`math.fsum`. Peak memory is one tile's arrays (~100 bytes a point) or one group of entries
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
    _chunks,
    _EntryTable,
    _grid_dims,
    _label_groups,
    _label_work,
    _limbs_to_float,
    _pairwise_terms,
    _pairwise_total,
    _run,
)
from lift3d.errors import InputError

logger = logging.getLogger(__name__)

#: one spilled point: world xyz (float32), flat pixel index frame * H * W + v * W + u, label
_POINT = np.dtype([("p", np.float32, 3), ("i", np.int64), ("l", np.int64)])
#: points a tile loads by default: ~100 bytes each at the peak of a tile (0.5 GiB measured on
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
    progress: Callable[[str, int, int], None] | None = None,
) -> MetricResult:
    """`consistency_score` for labels, one frame in memory at a time and one tile of space.

    Args:
        load_frame: `load_frame(i)` -> (pointmap [H, W, 3] float world metres, valid [H, W]
            bool, labels [H, W] non-negative int, 0 = unlabeled) of view i; called twice per
            frame at most (once, in fact), in order.
        num_frames: N, the number of views.
        eps: neighbourhood radius in metres (> 0).
        max_points: most labeled points a tile loads (its own and its halo's; a single block
            holding more is a tile of its own), and most contingency entries reduced at once by
            the pairwise variant: the knob of peak memory (~100 bytes a point).
        per_pixel_dir: when given, h(p) is written to `per_pixel_dir/h.npy`, an [N, H, W]
            float32 array (NaN where excluded), and `MetricResult.per_pixel` is a read-only
            memory map of it; read it a frame at a time (`read_h_frame`).
        work_dir: where the temporary spill folder goes (default: the system's temp folder);
            it is removed at the end, also on error.
        workers: threads for the kernels; the result does not depend on it.
        pairwise: also compute the ID-free pairwise variant.
        progress: called as `progress(phase, done, total)` after each frame read (phase
            `frames`) and each tile counted (phase `tiles`), for a progress bar.

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
    if progress is not None:
        read = load_frame

        def load_frame(i):
            frame = read(i)
            progress("frames", i + 1, num_frames)
            return frame

    try:
        spill = tmp / "points.bin"
        shape, lo, hi, frame_labels = _spill_frames(load_frame, num_frames, spill)
        N = num_frames
        H, W = shape
        n = sum(int(c) for c in frame_labels[1])
        _, vl_label, vl_view = _label_groups(frame_labels[0])
        G = len(vl_label)
        uniq = np.unique(np.concatenate(frame_labels[0]))
        group_key = vl_label.astype(np.int64) * N + vl_view  # increasing with the group id
        s, dims = _grid_dims(lo, hi, eps, G)  # as metric._build_grid: the global grid
        axis = int(np.argmax(dims))
        perm = [axis] + [d for d in range(3) if d != axis]
        dp = dims[perm]
        # reads of the spill hold a fraction of what a tile does
        count = max(1 << 16, min(_READ, int(max_points) // 4))
        blocks, block_n = _block_histogram(spill, lo, s, perm, dp, count)
        tile_of, boxes = _plan_tiles(blocks, block_n, dp, max_points)
        halo = _halo_lists(blocks, tile_of, boxes, dp)
        tile_files = _distribute(spill, tmp, lo, s, perm, dp, blocks, tile_of, halo, len(boxes), count)
        spill.unlink()
        h_path = None
        if per_pixel_dir is not None:
            h_path = Path(per_pixel_dir) / "h.npy"
            _init_h(h_path, (N, H, W))
        limbs = np.zeros((N, 3), np.int64)
        frame_n = np.zeros(N, np.int64)
        pair_spill = tmp / "pairs.bin"  # every tile's contingency entries, reduced at the end
        vl_view64 = vl_view.astype(np.int64)
        do_pairwise = bool(pairwise)
        grid = (lo, s, dims, perm)
        groups = (uniq, group_key, N, H * W, G, vl_label, vl_view64)
        for k, path in enumerate(tile_files):
            if progress is not None:
                progress("tiles", k, len(tile_files))
            if path is None:
                continue
            # handed over, not kept: _tile drops the records once it has sorted them
            entries = _EntrySpill(pair_spill, max_points) if do_pairwise else None
            res = _tile(np.fromfile(path, _POINT), boxes[k], grid, groups, eps * eps, workers, entries)
            path.unlink()
            if res is None:
                continue
            idx, n_same, n_all = res
            mk.frame_sums_exact(n_same, n_all, idx, H * W, limbs, frame_n)
            if h_path is not None:
                _write_h(h_path, idx, n_same, n_all)
            del idx, n_same, n_all
        if progress is not None:
            progress("tiles", len(tile_files), len(tile_files))
        if int(frame_n.sum()) != n:
            raise RuntimeError(f"tiles counted {int(frame_n.sum())} points of {n}")  # a bug, never input
        frame_sum = _limbs_to_float(limbs)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_frame = (frame_sum / frame_n).tolist()
        pw = _pairwise_stream(pair_spill, tmp, vl_view64, G, N, _entry_limit(max_points)) if do_pairwise else None
        per_pixel = None if h_path is None else np.load(h_path, mmap_mode="r")
        logger.debug("metric (stream): %d points, %d frames, %d tiles, %.1f s", n, N, len(boxes),
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


def _chunks_of(path, count, dtype=_POINT):
    """The records of a spill file, `count` at a time (plain reads: a memory map would keep every
    page it touched resident, i.e. the whole file)."""
    with open(path, "rb") as fh:
        while True:
            rec = np.fromfile(fh, dtype, count=count)
            if not len(rec):
                return
            yield rec


def _cell_coords(p, lo, s, perm):
    """Cell coordinates along the axes `perm` of points [n, 3]: those of
    `metric_kernels.grid_keys`, with the same float64 operations."""
    inv_s = 1.0 / s
    return [np.floor((p[:, d].astype(np.float64) - lo[d]) * inv_s).astype(np.int64) for d in perm]


def _block_coords(p, lo, s, perm):
    """Block coordinates (a, b, c) along the axes `perm` of points [n, 3], 1-based as in the grid."""
    return [c // _M + 1 for c in _cell_coords(p, lo, s, perm)]


def _block_key(a, b, c, dp):
    return (a * dp[1] + b) * dp[2] + c


def _decode(keys, dp):
    """(a, b, c) block coordinates of block keys."""
    return keys // (dp[1] * dp[2]), (keys // dp[2]) % dp[1], keys % dp[2]


def _block_histogram(spill, lo, s, perm, dp, count):
    """(sorted occupied block keys [B], points per block [B]): memory grows with the surface the
    scan covers (blocks are eps wide), not with its number of frames."""
    keys = np.zeros(0, np.int64)
    counts = np.zeros(0, np.int64)
    for rec in _chunks_of(spill, count):
        heads, run = _runs(_block_key(*_block_coords(rec["p"], lo, s, perm), dp))
        k, inv = np.unique(heads, return_inverse=True)
        c = np.bincount(inv, weights=run, minlength=len(k))
        keys, inv = np.unique(np.concatenate([keys, k]), return_inverse=True)
        counts = np.bincount(inv, weights=np.concatenate([counts, c]), minlength=len(keys)).astype(np.int64)
    return keys, counts


def _runs(keys):
    """(first key of each run of equal consecutive keys, run lengths): a frame's pixels come in
    rows, and neighbouring pixels mostly share a block, so this shortens the sorts that follow."""
    first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[first], np.diff(np.r_[first, len(keys)])


def _plan_tiles(blocks, block_n, dp, max_points):
    """Cut the occupied blocks into boxes (tiles) whose points plus those of the blocks around
    them (the one-block halo the kernels read) number at most `max_points`, unless the box is
    a single block: a k-d split along the box's longest side at the weighted median.

    A plain cut into slabs along one axis cannot bound memory: a wall perpendicular to that
    axis puts every view's points of it into one layer, which grows with the scan.

    Returns:
        tile_of [B] the tile owning each block; boxes [T] of (lo [3], hi [3]) block coordinates
        (half-open) of each tile's own blocks, all occupied blocks inside a box being its own.
    """
    coords = np.stack(_decode(blocks, dp), axis=1)
    tile_of = np.full(len(blocks), -1, np.int64)
    boxes: list[tuple[np.ndarray, np.ndarray]] = []
    everything = np.arange(len(blocks))
    todo = [(everything, everything)]  # (own blocks, blocks that may lie in the expanded box)
    while todo:
        own, near = todo.pop()
        if not len(own):
            continue
        lo = coords[own].min(axis=0)
        hi = coords[own].max(axis=0) + 1
        cn = coords[near]
        near = near[((cn >= lo - 1) & (cn < hi + 1)).all(axis=1)]
        ext = hi - lo
        if int(block_n[near].sum()) <= max_points or (ext == 1).all():
            tile_of[own] = len(boxes)
            boxes.append((lo, hi))
            continue
        ax = int(np.argmax(ext))
        x = coords[own, ax]
        order = np.argsort(x, kind="stable")
        xs = np.unique(x)
        # points below each distinct coordinate; cut where that is nearest half (weighted median)
        below = np.r_[0, np.cumsum(block_n[own][order])][np.searchsorted(x[order], xs, side="left")]
        cut = int(xs[np.argmin(np.abs(below - block_n[own].sum() / 2))])
        cut = min(max(cut, int(lo[ax]) + 1), int(hi[ax]) - 1)  # both sides non-empty
        left = x < cut
        todo.append((own[~left], near))
        todo.append((own[left], near))
    return tile_of, boxes


def _halo_lists(blocks, tile_of, boxes, dp):
    """For each block, the other tiles that read its points (tiles owning one of its 26
    neighbours), as CSR: (start [B + 1], tiles [E]). Only blocks on their own box's surface can
    have such neighbours."""
    coords = np.stack(_decode(blocks, dp), axis=1)
    blo = np.array([b[0] for b in boxes]).reshape(-1, 3)[tile_of]
    bhi = np.array([b[1] for b in boxes]).reshape(-1, 3)[tile_of]
    edge = np.flatnonzero(((coords == blo) | (coords == bhi - 1)).any(axis=1))
    src, dst = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for da in (-1, 0, 1):
        for db in (-1, 0, 1):
            for dc in (-1, 0, 1):
                if da == db == dc == 0:
                    continue
                nk = blocks[edge] + (da * dp[1] + db) * dp[2] + dc  # coordinates stay in 0..dims-1
                pos = np.minimum(np.searchsorted(blocks, nk), len(blocks) - 1)
                hit = blocks[pos] == nk
                t = tile_of[pos[hit]]
                other = t != tile_of[edge[hit]]
                src.append(edge[hit][other])
                dst.append(t[other])
    pair = np.unique(np.concatenate(src) * len(boxes) + np.concatenate(dst))
    i, t = pair // len(boxes), pair % len(boxes)
    return np.searchsorted(i, np.arange(len(blocks) + 1)), t


def _plan_runs(hist: np.ndarray, max_points: int) -> np.ndarray:
    """Edges [S + 1] cutting a histogram into runs of whole bins, greedily, each run holding at most
    max_points points unless one bin alone holds more."""
    edges = [0]
    own = 0
    for layer, c in enumerate(hist.tolist()):
        if own and own + c > max_points:
            edges.append(layer)
            own = 0
        own += c
    edges.append(len(hist))
    return np.asarray(edges, np.int64)


def _distribute(spill, tmp, lo, s, perm, dp, blocks, tile_of, halo, T, count):
    """Each tile's own points and those of the blocks around it (its halo) into
    `tmp/tile<k>.bin` (None for a tile that receives no point). Returns the T paths."""
    start, extra = halo
    paths = [tmp / f"tile{k}.bin" for k in range(T)]
    used = [False] * T
    small = np.uint16 if T < 2**16 else np.int64  # numpy's stable sort is a radix sort for 16 bits
    for rec in _chunks_of(spill, count):
        heads, run = _runs(_block_key(*_block_coords(rec["p"], lo, s, perm), dp))
        pos = np.repeat(np.searchsorted(blocks, heads), run)
        ne = start[pos + 1] - start[pos]
        has = np.flatnonzero(ne)
        reps = ne[has]
        first = np.repeat(start[pos[has]] - (np.cumsum(reps) - reps), reps)  # extra index - running index
        src = np.concatenate([np.arange(len(rec)), np.repeat(has, reps)])
        dst = np.concatenate([tile_of[pos], extra[first + np.arange(int(reps.sum()))]]).astype(small)
        for j in _append_by_destination(rec, src, dst, paths):
            used[j] = True
    return [p if u else None for p, u in zip(paths, used)]


def _append_by_destination(rec, src, dst, paths):
    """Append record `rec[src[i]]` to the file `paths[dst[i]]` for every i, one write per file
    (a stable sort by destination keeps each file's records in order). Returns the files
    written to."""
    order = np.argsort(dst, kind="stable")
    src, dst = src[order], dst[order]
    cuts = np.flatnonzero(np.r_[True, dst[1:] != dst[:-1], True])
    for a, b in zip(cuts[:-1], cuts[1:]):
        with open(paths[int(dst[a])], "ab") as fh:
            rec[src[a:b]].tofile(fh)
    return [int(dst[a]) for a in cuts[:-1]]


def _tile(pts, box, grid, groups, eps2, workers, entries):
    """Counts of the points of one tile's own blocks (those inside `box`).

    Args:
        entries: an `_EntrySpill` that takes the pairwise contingency entries piece by piece
            (from the counting threads, under a lock), or None (no pairwise variant). They are
            counted in passes over ranges of views a (`_view_passes`), the first of which also
            counts H.

    Returns:
        None when the tile owns no point; else (idx [n] flat pixel indices, n_same [n], n_all
        [n]) of its own points.
    """
    from lift3d.consistency import metric_kernels as mk

    lo, s, dims, perm = grid
    uniq, group_key, N, HW, G, vl_label, vl_view64 = groups
    n = len(pts)
    p = pts["p"]
    dp = dims[perm]
    c = _cell_coords(p, lo, s, perm)
    block = _block_key(c[0] // _M + 1, c[1] // _M + 1, c[2] // _M + 1, dp)
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
    bc = np.stack(_decode(block_keys, dp), axis=1)
    own = ((bc >= box[0]) & (bc < box[1])).all(axis=1)
    del bc
    if not own.any():
        return None
    # runs of consecutive own blocks (in key order a box is rows of contiguous blocks)
    edge = np.flatnonzero(np.diff(np.r_[0, own.astype(np.int8), 0]))
    runs = list(zip(edge[0::2].tolist(), edge[1::2].tolist()))
    pairwise = entries is not None
    chunks = _chunks(cell_start, block_cell_start, workers, runs)
    lab = vl_label.astype(np.int32)[vl]
    n_all = np.zeros(n, np.int32)
    n_same = np.zeros(n, np.int32)
    args = (block_keys, block_cell_start, cell_key, cell_start, cell_bbox, cell_run_start, run_start, run_vl,
            cell_lrun_start, lrun_start, lrun_label, x, y, z, lab, vl, vl_view64, G, eps2, _K, _M,
            int(dp[1]), int(dp[2]), pairwise, n_all, n_same)
    if pairwise:
        passes = _view_passes(run_vl, cell_run_start, block_cell_start, runs, vl_view64, N, entries.limit)
        for i, views in enumerate(passes):
            _run(_label_work(args, entries.limit, entries.add, views, count_h=i == 0), chunks, workers)
            entries.flush()  # the next pass's keys are other ones (another range of views a)
    else:
        _run(_label_work(args, 1, None, (0, 0)), chunks, workers)
    pstart = cell_start[block_cell_start]
    sel = np.concatenate([np.arange(pstart[b0], pstart[b1]) for b0, b1 in runs])
    return idx[sel], n_same[sel], n_all[sel]


def _view_passes(run_vl, cell_run_start, block_cell_start, runs, vl_view, N: int, max_entries: int):
    """Ranges [va_lo, va_hi) of views a, one counting pass each, whose pairwise keys in this tile
    number at most max_entries (unless one view alone may have more).

    A key (vl_a, vl_b) pairs a group of an own block (a row) with a group of a view b > a of the
    tile, so view a has at most rows(a) * (groups of later views) keys. The bound is loose (not
    every such pair meets within eps), but exact to compute, and it keeps every pass's table
    small whatever the number of views that see this part of the scene. Views without rows here
    get no pass; the first pass also counts H, so there is always one.
    """
    own_runs = np.concatenate([np.arange(cell_run_start[block_cell_start[b0]], cell_run_start[block_cell_start[b1]])
                               for b0, b1 in runs])
    rows = np.bincount(vl_view[np.unique(run_vl[own_runs])], minlength=N)
    groups = np.bincount(vl_view[np.unique(run_vl)], minlength=N)
    later = groups.sum() - np.cumsum(groups)  # groups of views b > a
    bound = rows * later
    edges = _plan_runs(bound, max_entries)
    passes = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if bound[a:b].any()]
    return passes or [(0, 0)]


_ENTRY = np.dtype([("k", np.int64), ("c", np.int64)])  # (vl_a * G + vl_b, count)


def _entry_limit(max_points: int) -> int:
    """Pairwise entries held at once (16 bytes each, a few copies while merging): a pass's keys,
    a folded table, a group reduced at the end. An eighth of the points a tile may hold, so
    the entries never cost more than the tile."""
    return max(1, int(max_points) // 8)


class _EntrySpill(_EntryTable):
    """An `_EntryTable` appended to the spill file and emptied whenever it grows past its bound
    (a key may then be spilled more than once: the final reduction sums them). Memory: about
    `limit` entries, whatever the tile's size. `limit` is also the bound of each counting pass's
    keys (`_view_passes`) and of the kernel's table, so a pass's pieces fold into one table and
    are spilled about once."""

    def __init__(self, path: Path, max_points: int):
        super().__init__(_entry_limit(max_points))
        self.path = path

    def flush(self) -> None:
        self._fold(final=True)

    def _fold(self, final: bool = False) -> None:
        super()._fold()
        if len(self.table[0]) >= self.limit or (final and len(self.table[0])):
            _append_entries(self.path, *self.table)
            self.table = (np.zeros(0, np.int64), np.zeros(0, np.int64))


def _append_entries(path: Path, keys: np.ndarray, counts: np.ndarray) -> None:
    rec = np.empty(len(keys), _ENTRY)
    rec["k"], rec["c"] = keys, counts
    with open(path, "ab") as fh:
        rec.tofile(fh)


def _pairwise_stream(path: Path, tmp: Path, vl_view: np.ndarray, G: int, N: int, max_entries: int) -> float | None:
    """`metric._pairwise_from_entries` over the spilled entries, one group of views a at a time.

    All entries of a view pair share view a (the smaller view), so a group of whole views a
    holds every entry of its pairs; the per-pair terms are exact, the final sums one fsum each.
    """
    if not path.is_file():
        return None
    count = max(1 << 16, min(_READ, int(max_entries)))
    hist = np.zeros(N, np.int64)
    for rec in _chunks_of(path, count, _ENTRY):
        hist += np.bincount(vl_view[rec["k"] // G], minlength=N)
    edges = _plan_runs(hist, max_entries)  # whole views a, at most max_entries entries each
    S = len(edges) - 1
    group_of_view = np.repeat(np.arange(S), np.diff(edges))
    paths = [tmp / f"pairs{k}.bin" for k in range(S)]
    for rec in _chunks_of(path, count, _ENTRY):
        _append_by_destination(rec, np.arange(len(rec)), group_of_view[vl_view[rec["k"] // G]], paths)
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
    """`path` = an [N, H, W] float32 .npy of NaN, written a frame at a time with plain writes (a
    memory map would keep every page it wrote resident: the whole file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)  # the header
    offset = h.offset
    del h
    nan = np.full(shape[1] * shape[2], np.nan, np.float32).tobytes()
    with open(path, "r+b") as fh:
        fh.seek(offset)
        for _ in range(shape[0]):
            fh.write(nan)


def _write_h(path: Path, idx, n_same, n_all):
    """h = n_same / n_all of a tile's points into the .npy at their pixels, in pixel order,
    through small windows mapped one at a time: the pages written leave the process's memory
    with each window (at most `step` pages resident, whatever the file's size)."""
    offset = np.load(path, mmap_mode="r").offset
    order = np.argsort(idx, kind="stable")  # pixel order: sequential pages
    step = 1 << 15
    for a in range(0, len(order), step):
        o = order[a:a + step]
        first, last = int(idx[o[0]]), int(idx[o[-1]])
        window = np.memmap(path, np.float32, "r+", offset=offset + 4 * first, shape=(last - first + 1,))
        window[idx[o] - first] = n_same[o] / n_all[o]
        window.flush()
        del window
