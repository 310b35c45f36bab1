"""Space cut into tiles: the blocks of the global grid, k-d boxes over them, and each box's points.

A block is m^3 cells (about eps wide); the kernels read a block's 26 neighbours, so a tile is a
box of blocks plus a one-block halo. Tiles are cut by k-d splits until each one's points with
its halo number at most max_points, or it is one block. Slabs along one axis would not do: a
wall across that axis is one layer holding every view's points of it, which grows with the scan.
Block coordinates are taken along the axes `perm` (the longest first): a box is then rows of
blocks that follow each other in key order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

READ = 1 << 22  # records per read of a spill file


def read_chunks(path: Path, count: int, dtype: np.dtype):
    """The records of a spill file, `count` at a time (plain reads: a memory map would keep every
    page it touched resident, i.e. the whole file)."""
    with open(path, "rb") as fh:
        while True:
            rec = np.fromfile(fh, dtype, count=count)
            if not len(rec):
                return
            yield rec


def cell_coords(p: np.ndarray, lo: np.ndarray, s: float, perm) -> list[np.ndarray]:
    """Cell coordinates along the axes `perm` of points [n, 3] float32: floor((p - lo) / s) with
    the float64 operations every tile repeats, so every tile agrees on every point's cell."""
    inv_s = 1.0 / s
    return [np.floor((p[:, d].astype(np.float64) - lo[d]) * inv_s).astype(np.int64) for d in perm]


def block_coords(p: np.ndarray, lo: np.ndarray, s: float, perm, m: int) -> list[np.ndarray]:
    """Block coordinates (a, b, c) along the axes `perm` of points [n, 3], 1-based (a block of
    empty grid on every side keeps neighbour keys non-negative)."""
    return [c // m + 1 for c in cell_coords(p, lo, s, perm)]


def block_key(a, b, c, dp):
    """Key of the block at (a, b, c) in a grid of dp [3] blocks."""
    return (a * dp[1] + b) * dp[2] + c


def decode(keys, dp):
    """(a, b, c) block coordinates of block keys."""
    return keys // (dp[1] * dp[2]), (keys // dp[2]) % dp[1], keys % dp[2]


def block_histogram(spill: Path, dtype, lo, s, perm, dp, m: int, count: int):
    """(sorted occupied block keys [B], points per block [B]): memory grows with the surface the
    scan covers (blocks are eps wide), not with its number of frames."""
    keys = np.zeros(0, np.int64)
    counts = np.zeros(0, np.int64)
    for rec in read_chunks(spill, count, dtype):
        heads, run = _runs(block_key(*block_coords(rec["p"], lo, s, perm, m), dp))
        k, inv = np.unique(heads, return_inverse=True)
        c = np.bincount(inv, weights=run, minlength=len(k))
        keys, inv = np.unique(np.concatenate([keys, k]), return_inverse=True)
        counts = np.bincount(inv, weights=np.concatenate([counts, c]), minlength=len(keys)).astype(
            np.int64
        )
    return keys, counts


def _runs(keys):
    """(first key of each run of equal consecutive keys, run lengths): a frame's pixels come in
    rows, and neighbouring pixels mostly share a block, so this shortens the sorts that follow."""
    first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[first], np.diff(np.r_[first, len(keys)])


def plan_tiles(blocks, block_n, dp, max_points: int):
    """Cut the occupied blocks into boxes (tiles) whose points plus those of the blocks around
    them (the one-block halo the kernels read) number at most `max_points`, unless the box is
    a single block: a k-d split along the box's longest side at the weighted median.

    Returns:
        tile_of [B] the tile owning each block; boxes [T] of (lo [3], hi [3]) block coordinates
        (half-open) of each tile's own blocks, all occupied blocks inside a box being its own.
    """
    coords = np.stack(decode(blocks, dp), axis=1)
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


def halo_lists(blocks, tile_of, boxes, dp):
    """For each block, the other tiles that read its points (tiles owning one of its 26
    neighbours), as CSR: (start [B + 1], tiles [E]). Only blocks on their own box's surface can
    have such neighbours."""
    coords = np.stack(decode(blocks, dp), axis=1)
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


def plan_runs(hist: np.ndarray, max_points: int) -> np.ndarray:
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


def distribute(
    spill: Path,
    dtype,
    tmp: Path,
    lo,
    s,
    perm,
    dp,
    m: int,
    blocks,
    tile_of,
    halo,
    T: int,
    count: int,
):
    """Each tile's own points and those of the blocks around it (its halo) into
    `tmp/tile<k>.bin`, in spill order (None for a tile that receives no point). Returns the T paths."""
    start, extra = halo
    paths = [tmp / f"tile{k}.bin" for k in range(T)]
    used = [False] * T
    small = np.uint16 if T < 2**16 else np.int64  # numpy's stable sort is a radix sort for 16 bits
    for rec in read_chunks(spill, count, dtype):
        heads, run = _runs(block_key(*block_coords(rec["p"], lo, s, perm, m), dp))
        pos = np.repeat(np.searchsorted(blocks, heads), run)
        ne = start[pos + 1] - start[pos]
        has = np.flatnonzero(ne)
        reps = ne[has]
        first = np.repeat(
            start[pos[has]] - (np.cumsum(reps) - reps), reps
        )  # extra index - running index
        src = np.concatenate([np.arange(len(rec)), np.repeat(has, reps)])
        dst = np.concatenate([tile_of[pos], extra[first + np.arange(int(reps.sum()))]]).astype(
            small
        )
        for j in append_by_destination(rec, src, dst, paths):
            used[j] = True
    return [p if u else None for p, u in zip(paths, used)]


def append_by_destination(rec, src, dst, paths):
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
