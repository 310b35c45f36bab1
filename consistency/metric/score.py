"""`consistency_score`: the exact metric H in bounded memory, one path for every input.

1. pass over the views (`frames.spill_frames`): check them, find the bounds of the labeled
   points and each view's label set (for the global (label, view) group numbering), and spill
   every labeled point (x, y, z, flat pixel index, label or unit feature vector) to one file;
2. count the spilled points per occupied block of the global grid (`tiles.block_histogram`);
3. cut the blocks into k-d boxes, tiles, of at most `max_points` points with their one-block
   halo (`tiles.plan_tiles`); a scan that fits is one tile;
4. distribute the points into one file per tile: its own blocks and its halo (one tile reads
   the spill file as it is);
5. per tile: build the grid with the GLOBAL origin and dims, so every key is the key of the
   global computation, and run the kernels on the tile's own blocks only (the halo is read,
   never counted). Coordinates keep their x, y, z order, so every distance is computed with
   the very operations of one global computation;
6. the pairwise entries of each tile are counted in passes over ranges of views a, spilled and
   reduced a group of views at a time (`pairwise.py`).

Per-point counts are integers, hence equal whatever the tiling; per-frame sums of h are exact
(`kernels.frame_sums_exact`, order-free); pairwise terms are exact integers summed with one
`math.fsum`: H, pairwise and per-pixel h of labels are the same to the bit for any max_points
and workers. For features, per-pixel h is too, and H is up to the rounding of the per-frame
float sums, which follow the tiles (one tile: the points' key order). Peak memory is one tile's
arrays (~100 bytes a point for labels) or one group of entries (~80 bytes an entry) plus
per-frame and per-label bookkeeping, whatever the number of frames. The spill files take ~2 x
28 bytes a labeled point of disk, briefly, and 16 bytes per entry.
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

from lift3d.consistency.metric import tiles
from lift3d.consistency.metric.config import MetricConfig, MetricResult
from lift3d.consistency.metric.frames import FrameSource, Spilled, spill_frames
from lift3d.consistency.metric.grid import (
    CountPass,
    LabelRuns,
    cells_and_blocks,
    chunks,
    grid_dims,
    label_groups,
    label_work,
    limbs_to_float,
    run_threads,
    tile_keys,
)
from lift3d.consistency.metric.pairwise import EntrySpill, pairwise_stream, view_passes
from lift3d.errors import InputError

logger = logging.getLogger(__name__)


def consistency_score(
    frames: FrameSource,
    *,
    config: MetricConfig | None = None,
    per_pixel: bool | str | Path = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> MetricResult:
    """The exact consistency metric H, and the ID-free pairwise variant for labels.

    Args:
        frames: the views, read once each, in order: a `FrameSource` (`frames[i]` -> pointmap
            [H, W, 3] float world metres, valid [H, W] bool, labels [H, W] int or features
            [H, W, C] float), e.g. `ArrayFrames(pointmaps, valid, labels)` for arrays in memory.
        config: eps, the memory bound, threads, where temporary files go (`MetricConfig`).
        per_pixel: also return h(p), [N, H, W] float32 (NaN where excluded): True for an array
            in memory; a folder to write it to `<folder>/h.npy` and get a read-only memory map
            of it (read it a frame at a time: `read_h_frame`).
        progress: called as `progress(phase, done, total)` after each view read (phase
            `frames`) and each tile counted (phase `tiles`), for a progress bar.

    Returns:
        A `MetricResult`; the same, to the bit, whatever `max_points` and `workers`.

    Raises:
        InputError: a setting out of range, views of another size or kind, a valid pixel with a
            non-finite point or feature, negative labels, or no pixel both valid and labeled.
    """
    config = MetricConfig() if config is None else config
    config.check()
    N = len(frames)
    if N < 1:
        raise InputError(None, "no frames: nothing to measure")
    eps = float(config.eps)
    t0 = time.perf_counter()
    if config.work_dir is not None:
        Path(config.work_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="metric-", dir=config.work_dir))
    try:
        spill = tmp / "points.bin"
        info = spill_frames(frames, spill, progress)
        return _score(spill, info, N, eps, config, tmp, per_pixel, progress, t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_h_frame(per_pixel_dir: str | Path, i: int) -> np.ndarray:
    """[H, W] float32 h(p) of frame i from `per_pixel_dir/h.npy` (a copy; only its pages read)."""
    h = np.load(Path(per_pixel_dir) / "h.npy", mmap_mode="r")
    out = np.array(h[i])
    del h
    return out


def _score(
    spill: Path,
    info: Spilled,
    N: int,
    eps: float,
    config: MetricConfig,
    tmp: Path,
    per_pixel,
    progress,
    t0,
):
    from lift3d.consistency.metric import kernels as mk

    H, W = info.shape
    n = sum(int(c) for c in info.counts)
    k, m = int(config.cells_per_eps), int(config.cells_per_block)
    labels = info.labels_of is not None
    if labels:
        vl_label, vl_view = label_groups(info.labels_of)
        G = len(vl_label)
        uniq = np.unique(np.concatenate(info.labels_of))
        group_key = vl_label.astype(np.int64) * N + vl_view  # increasing with the group id
        groups = (uniq, group_key, vl_label, vl_view.astype(np.int64))
    else:
        G, groups = 1, None
    s, dims = grid_dims(info.lo, info.hi, eps, G, k, m)
    # labels: the longest axis first (a box is then long rows of blocks in key order); features
    # keep x, y, z, the order in which their float sums of cosines have always been taken
    axis = int(np.argmax(dims))
    perm = [axis] + [d for d in range(3) if d != axis] if labels else [0, 1, 2]
    dp = dims[perm]
    grid = (info.lo, s, dp, perm, k, m)
    # reads of the spill hold a fraction of what a tile does
    count = max(1 << 16, min(tiles.READ, int(config.max_points) // 4))
    blocks, block_n = tiles.block_histogram(spill, info.dtype, info.lo, s, perm, dp, m, count)
    tile_of, boxes = tiles.plan_tiles(blocks, block_n, dp, config.max_points)
    if len(boxes) == 1:
        tile_files = [spill]  # one tile: its points are the spill's, in the same order
    else:
        halo = tiles.halo_lists(blocks, tile_of, boxes, dp)
        tile_files = tiles.distribute(
            spill,
            info.dtype,
            tmp,
            info.lo,
            s,
            perm,
            dp,
            m,
            blocks,
            tile_of,
            halo,
            len(boxes),
            count,
        )
        spill.unlink()
    h_out = _PerPixel(per_pixel, (N, H, W))
    limbs = np.zeros((N, 3), np.int64)  # labels: exact per-frame sums
    frame_sum = np.zeros(N, np.float64)  # features
    frame_n = np.zeros(N, np.int64)
    pair_spill = tmp / "pairs.bin"  # every tile's contingency entries, reduced at the end
    do_pairwise = bool(config.pairwise) and labels
    for t, path in enumerate(tile_files):
        if progress is not None:
            progress("tiles", t, len(tile_files))
        if path is None:
            continue
        # the records are handed over, not kept: the tile drops them once it has sorted them
        if labels:
            entries = EntrySpill(pair_spill, config.entry_limit) if do_pairwise else None
            res = count_tile(
                np.fromfile(path, info.dtype),
                boxes[t],
                grid,
                groups,
                N,
                H * W,
                eps * eps,
                config.workers,
                entries,
            )
        else:
            res = feature_tile(
                np.fromfile(path, info.dtype), boxes[t], grid, eps * eps, config.workers
            )
        path.unlink()
        if res is None:
            continue
        idx, num, n_all = res
        if labels:
            mk.frame_sums_exact(num, n_all, idx, H * W, limbs, frame_n)
        else:
            sums, cnt = mk.frame_sums(num, n_all, idx, H * W, N)
            frame_sum += sums
            frame_n += cnt
        h_out.write(idx, num, n_all)
        del idx, num, n_all
    if progress is not None:
        progress("tiles", len(tile_files), len(tile_files))
    if int(frame_n.sum()) != n:
        raise RuntimeError(
            f"tiles counted {int(frame_n.sum())} points of {n}"
        )  # a bug, never input
    if labels:
        frame_sum = limbs_to_float(limbs)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_frame = (frame_sum / frame_n).tolist()
    pw = (
        pairwise_stream(pair_spill, tmp, groups[3], G, N, config.entry_limit)
        if do_pairwise
        else None
    )
    logger.debug(
        "metric: %d points, %d frames, %d tiles, %.1f s", n, N, len(boxes), time.perf_counter() - t0
    )
    return MetricResult(
        H=math.fsum(frame_sum) / n,
        pairwise=pw,
        eps=eps,
        pixels=n,
        per_pixel=h_out.result(),
        per_frame=per_frame,
    )


def _sort(keys, pts):
    """(keys, x, y, z, idx, order): the keys sorted, and the points' coordinates and pixels in
    that order (float32 x, y, z kept as they are: the kernels' distances are the reference's)."""
    from lift3d.consistency.metric import kernels as mk

    keys, order = mk.radix_sort_pairs(keys, np.arange(len(pts), dtype=np.int64))
    p = pts["p"]
    return (
        keys,
        np.ascontiguousarray(p[order, 0]),
        np.ascontiguousarray(p[order, 1]),
        np.ascontiguousarray(p[order, 2]),
        pts["i"][order],
        order,
    )


def _own_runs(cells, box, dp):
    """Runs [(b0, b1)] of consecutive blocks of the tile's own box (in key order a box is rows of
    contiguous blocks); None when the tile owns no point."""
    bc = np.stack(tiles.decode(cells.block_keys, dp), axis=1)
    own = ((bc >= box[0]) & (bc < box[1])).all(axis=1)
    if not own.any():
        return None
    edge = np.flatnonzero(np.diff(np.r_[0, own.astype(np.int8), 0]))
    return list(zip(edge[0::2].tolist(), edge[1::2].tolist()))


def _own_points(cells, runs):
    pstart = cells.cell_start[cells.block_cell_start]
    return np.concatenate([np.arange(pstart[b0], pstart[b1]) for b0, b1 in runs])


def count_tile(
    pts, box, grid, groups, N: int, HW: int, eps2: float, workers: int, entries: EntrySpill | None
):
    """Counts of the labeled points of one tile's own blocks (those inside `box`).

    Args:
        pts: the tile's spilled records (own and halo), dropped once sorted.
        entries: takes the pairwise contingency entries piece by piece (from the counting
            threads, under a lock), or None (no pairwise variant). They are counted in passes
            over ranges of views a (`view_passes`), the first of which also counts H.

    Returns:
        None when the tile owns no point; else (idx [n] flat pixel indices, n_same [n], n_all
        [n]) of its own points.
    """
    uniq, group_key, vl_label, vl_view = groups
    G = len(vl_label)
    lo, s, dp, perm, k, m = grid
    keys = tile_keys(pts["p"], lo, s, perm, dp, m)
    rank = np.searchsorted(uniq, pts["l"])
    vl = np.searchsorted(group_key, rank * N + pts["i"] // HW)
    del rank
    keys = keys * G + vl
    del vl
    keys, x, y, z, idx, order = _sort(keys, pts)
    del order, pts
    cells, (cell_run_start, run_start, run_vl, cell_lrun_start, lrun_start, lrun_label) = (
        cells_and_blocks(keys, G, x, y, z, vl_label, dp, k, m, eps2)
    )
    lab = vl_label.astype(np.int32)[(keys % G).astype(np.int32)]
    del keys
    own = _own_runs(cells, box, dp)
    if own is None:
        return None
    runs = LabelRuns(
        cell_run_start=cell_run_start,
        run_start=run_start,
        run_vl=run_vl,
        cell_lrun_start=cell_lrun_start,
        lrun_start=lrun_start,
        lrun_label=lrun_label,
        lab=lab,
        vl_view=vl_view,
        G=G,
    )
    chunk_list = chunks(cells.cell_start, cells.block_cell_start, workers, own)
    n = len(x)
    n_all = np.zeros(n, np.int32)
    n_same = np.zeros(n, np.int32)
    if entries is not None:
        passes = view_passes(
            run_vl, cell_run_start, cells.block_cell_start, own, vl_view, N, entries.limit
        )
        for i, (va_lo, va_hi) in enumerate(passes):
            job = CountPass(
                count_h=i == 0, pairwise=True, va_lo=va_lo, va_hi=va_hi, max_entries=entries.limit
            )
            run_threads(
                label_work(cells, runs, job, n_all, n_same, entries.add), chunk_list, workers
            )
            entries.flush()  # the next pass's keys are other ones (another range of views a)
    else:
        job = CountPass(count_h=True, pairwise=False, va_lo=0, va_hi=0, max_entries=1)
        run_threads(label_work(cells, runs, job, n_all, n_same, None), chunk_list, workers)
    sel = _own_points(cells, own)
    return idx[sel], n_same[sel], n_all[sel]


def feature_tile(pts, box, grid, eps2: float, workers: int):
    """(idx [n], sums of cosines [n] float64, n_all [n]) of the points of one tile's own blocks,
    or None when it owns none."""
    from lift3d.consistency.metric import kernels as mk

    lo, s, dp, perm, k, m = grid
    keys, x, y, z, idx, order = _sort(tile_keys(pts["p"], lo, s, perm, dp, m), pts)
    f = pts["f"][order]
    del order, pts
    cells, _ = cells_and_blocks(keys, 1, x, y, z, np.zeros(1, np.int32), dp, k, m, eps2)
    del keys
    own = _own_runs(cells, box, dp)
    if own is None:
        return None
    cell_sum = mk.cell_feature_sums(cells.cell_start, f)
    n_all = np.zeros(len(x), np.int32)
    dot = np.zeros(len(x), np.float64)
    run_threads(
        lambda rng: mk.feature_chunk(rng[0], rng[1], cells, f, cell_sum, n_all, dot),
        chunks(cells.cell_start, cells.block_cell_start, workers, own),
        workers,
    )
    sel = _own_points(cells, own)
    return idx[sel], dot[sel], n_all[sel]


class _PerPixel:
    """Where h(p) goes: nowhere, an [N, H, W] array, or `<folder>/h.npy` written a tile at a time."""

    def __init__(self, target, shape):
        self.shape = shape
        self.array = self.path = None
        if isinstance(target, (str, Path)):
            self.path = Path(target) / "h.npy"
            _init_h(self.path, shape)
        elif target:
            self.array = np.full(int(np.prod(shape)), np.nan, np.float32)

    def write(self, idx, num, n_all) -> None:
        if self.array is not None:
            step = 1 << 22  # h in float64 a slice at a time
            for i in range(0, len(idx), step):
                self.array[idx[i : i + step]] = num[i : i + step] / n_all[i : i + step]
        elif self.path is not None:
            _write_h(self.path, idx, num, n_all)

    def result(self):
        if self.array is not None:
            return self.array.reshape(self.shape)
        return None if self.path is None else np.load(self.path, mmap_mode="r")


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


def _write_h(path: Path, idx, num, n_all):
    """h = num / n_all of a tile's points into the .npy at their pixels, in pixel order,
    through small windows mapped one at a time: the pages written leave the process's memory
    with each window (at most `step` pages resident, whatever the file's size)."""
    offset = np.load(path, mmap_mode="r").offset
    order = np.argsort(idx, kind="stable")  # pixel order: sequential pages
    step = 1 << 15
    for a in range(0, len(order), step):
        o = order[a : a + step]
        first, last = int(idx[o[0]]), int(idx[o[-1]])
        window = np.memmap(
            path, np.float32, "r+", offset=offset + 4 * first, shape=(last - first + 1,)
        )
        window[idx[o] - first] = num[o] / n_all[o]
        window.flush()
        del window
