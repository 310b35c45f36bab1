"""The sparse grid of a tile's points, as the kernels take it (named tuples), and its threads.

Every tile builds its grid with the GLOBAL origin, cell edge and dims (`grid_dims`), so every
key is the key of one global computation; (label, view) groups are numbered over the whole scan
(`label_groups`). Keys are `cell * G + group`, cell = block * m^3 + cell within the block.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from lift3d.errors import InputError


class CellGrid(NamedTuple):
    """A tile's points sorted by key, their cells and blocks (`kernels.build_cells`)."""

    block_keys: np.ndarray  # [nb] int64, sorted block keys
    block_cell_start: np.ndarray  # [nb + 1] int64, each block's range of cells
    cell_key: np.ndarray  # [nc] int64, block * m^3 + cell within the block
    cell_start: np.ndarray  # [nc + 1] int64, each cell's range of points
    cell_bbox: np.ndarray  # [nc, 6] float32, lo xyz, hi xyz of each cell's points
    x: np.ndarray  # [n] float32 world metres, sorted order
    y: np.ndarray  # [n] float32
    z: np.ndarray  # [n] float32
    nby: int  # blocks along the key's 2nd axis
    nbz: int  # blocks along the key's 3rd axis
    k: int  # cells per eps
    m: int  # cells per block edge
    eps2: float  # eps^2, metres^2


class LabelRuns(NamedTuple):
    """Per-cell runs of equal (label, view) group and of equal label, and the groups' views."""

    cell_run_start: np.ndarray  # [nc + 1] int64, each cell's range of group runs
    run_start: np.ndarray  # [nr + 1] int64, each group run's range of points
    run_vl: np.ndarray  # [nr] int32, group of each run
    cell_lrun_start: np.ndarray  # [nc + 1] int64, each cell's range of label runs
    lrun_start: np.ndarray  # [nl + 1] int64, each label run's range of points
    lrun_label: np.ndarray  # [nl] int32, label rank of each run
    lab: np.ndarray  # [n] int32, label rank of each point, sorted order
    vl_view: np.ndarray  # [G] int64, view of each group
    G: int  # number of (label, view) groups


class CountPass(NamedTuple):
    """What one call of `kernels.label_chunk` counts."""

    count_h: bool  # write n_all / n_same (the first pass of a tile)
    pairwise: bool  # gather contingency entries
    va_lo: int  # entries of views a in [va_lo, va_hi) only
    va_hi: int
    max_entries: int  # hand the table over once it holds this many keys


def grid_dims(lo, hi, eps: float, G: int, k: int, m: int):
    """(cell edge s, blocks along x, y, z) of the grid over the bounds [lo, hi] of the points.

    Raises:
        InputError: the keys (blocks x cells x G label groups) would not fit in int64.
    """
    # a hair over eps / k so that float rounding can never put a neighbour k + 1 cells away
    s = eps / k * (1 + 1e-6)
    dims = (
        np.floor((hi - lo) / s).astype(np.int64) // m + 3
    )  # offset by one: neighbour keys stay >= 0
    if int(np.prod(dims.astype(object))) * m**3 * G >= 2**62:
        raise InputError(
            None,
            f"the scene spans {np.round(hi - lo, 2).tolist()} m: too large for eps = {eps} m "
            f"({G} label groups); raise eps or split the scene",
        )
    return s, dims


def label_groups(per_frame_labels: list[np.ndarray]):
    """(label, view) groups numbered in (label, view) order, from each frame's sorted labels.

    Returns:
        vl_label: [G] int32 rank of each group's label among all labels (only equality of labels
            matters, and ranks fit int32 whatever the IDs).
        vl_view: [G] int64 view of each group.
    """
    lab_all = np.concatenate(per_frame_labels)
    view_all = np.concatenate(
        [np.full(len(u), i, np.int64) for i, u in enumerate(per_frame_labels)]
    )
    order = np.lexsort((view_all, lab_all))
    rank = np.unique(lab_all, return_inverse=True)[1].reshape(-1)
    return rank[order].astype(np.int32), view_all[order]


def tile_keys(p, lo, s, perm, dp, m: int) -> np.ndarray:
    """[n] int64 cell keys (block * m^3 + cell within the block) of points [n, 3]."""
    from lift3d.consistency.metric.tiles import block_key, cell_coords

    c = cell_coords(p, lo, s, perm)
    block = block_key(c[0] // m + 1, c[1] // m + 1, c[2] // m + 1, dp)
    return block * m**3 + ((c[0] % m) * m + c[1] % m) * m + c[2] % m


def cells_and_blocks(keys, G: int, x, y, z, vl_label, dp, k: int, m: int, eps2: float):
    """The `CellGrid` of sorted keys `cell * G + group` and points x, y, z, and the cells' runs
    (a `LabelRuns` without lab, vl_view and G: the caller's)."""
    from lift3d.consistency.metric import kernels as mk

    (
        cell_key,
        cell_start,
        cell_bbox,
        cell_run_start,
        run_start,
        run_vl,
        cell_lrun_start,
        lrun_start,
        lrun_label,
    ) = mk.build_cells(keys, G, x, y, z, vl_label)
    block_of_cell = cell_key // m**3
    block_first = np.flatnonzero(np.r_[True, block_of_cell[1:] != block_of_cell[:-1]])
    cells = CellGrid(
        block_keys=block_of_cell[block_first],
        block_cell_start=np.r_[block_first, len(cell_key)].astype(np.int64),
        cell_key=cell_key,
        cell_start=cell_start,
        cell_bbox=cell_bbox,
        x=x,
        y=y,
        z=z,
        nby=int(dp[1]),
        nbz=int(dp[2]),
        k=int(k),
        m=int(m),
        eps2=float(eps2),
    )
    return cells, (cell_run_start, run_start, run_vl, cell_lrun_start, lrun_start, lrun_label)


def chunks(cell_start, block_cell_start, workers: int, runs=None) -> list[tuple[int, int]]:
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
        cuts = np.searchsorted(pts[b0 : b1 + 1] - pts[b0], np.linspace(0, n, k + 1)[1:-1])
        e = np.unique(np.r_[0, cuts, b1 - b0]) + b0
        out += [(int(a), int(b)) for a, b in zip(e[:-1], e[1:]) if b > a]
    return out


def run_threads(work, chunk_list, workers: int) -> list:
    """Run `work` over the chunks on `workers` threads (the kernels release the GIL)."""
    if workers <= 1 or len(chunk_list) == 1:
        return [work(c) for c in chunk_list]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(work, chunk_list))


def label_work(cells: CellGrid, runs: LabelRuns, job: CountPass, n_all, n_same, sink):
    """The work of one chunk (b0, b1) of `kernels.label_chunk` for `run_threads`: counts written in
    place (when job.count_h), the pairwise entries handed to `sink(keys, counts)` a piece at a
    time (each at most job.max_entries distinct keys plus one block's), under a lock, so no
    thread holds more than one piece whatever the chunk's size."""
    from lift3d.consistency.metric import kernels as mk

    lock = threading.Lock()

    def work(rng):
        b, b1 = rng
        while True:
            keys, counts, b = mk.label_chunk(b, b1, cells, runs, job, n_all, n_same)
            if len(keys):
                with lock:
                    sink(keys, counts)
            del keys, counts
            if b >= b1:
                return None

    return work


def limbs_to_float(limbs: np.ndarray) -> np.ndarray:
    """[N] float64 of the exact per-frame sums in [N, 3] 28-bit limbs (`kernels.frame_sums_exact`)."""
    return np.array(
        [((int(a) << 56) + (int(b) << 28) + int(c)) / (1 << 84) for a, b, c in limbs.tolist()],
        np.float64,
    )
