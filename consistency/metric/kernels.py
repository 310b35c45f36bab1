"""Compiled kernels of the exact consistency metric (numba); `consistency_score` is the public side.

The points of a tile sit in one sparse grid of cells (edge a hair over `eps / k`; k =
`MetricConfig.cells_per_eps`, 1 by default), grouped in blocks of `m^3` cells (m =
`MetricConfig.cells_per_block` >= k, so every neighbour of a block's cell lies in the 27 blocks
around it), sorted by (block, cell, label, view). The kernels take their arrays as named tuples
(`grid.CellGrid`, `grid.LabelRuns`, `grid.CountPass`), which numba compiles like plain arguments. A block and
its 26 neighbours are written into a small dense local grid; each query cell A of the block then
visits the cells C within k cells of it whose index offset can hold a pair within eps, and
compares tight bounding boxes:

- box-to-box min distance > eps: no pair, skipped;
- box-to-box max distance <= eps: every point of C lies in the ball of every point of A, so C's
  per-label counts (and, for the pairwise variant, its per-(label, view) counts) are added once
  for the whole of A;
- otherwise C may straddle some sphere: its points are copied into one contiguous buffer, which
  each point of A tests in a loop the compiler vectorises (float32, 8 lanes).

Exactness: the reference decides `dx*dx + dy*dy + dz*dz <= eps*eps` in float64 of the float32
coordinates. Box bounds are coordinates of actual points (so float32 holds them exactly) and
IEEE rounding is monotone, so a bound computed with the same float64 operations bounds every
pair's computed distance: a wholesale decision never disagrees with the per-pair test, ties at
exactly eps included. The float32 pass rounds each of its five operations by at most 2^-24, so
its squared distance is within 3e-7 (relative) of the exact one; only pairs within 4e-6 of
eps^2 are undecided, and a point with any such pair is recounted in float64.

The pairwise (ID-free) variant needs pair counts per (label, view) group x (label, view) group;
a block accumulates them in a small dense matrix (rows: the block's groups, columns: its
neighbourhood's) and flushes the nonzero entries with view_row < view_col into a hash table.
Their distinct keys grow with the square of the number of views that see one spot, so the rows
can be restricted to a range of views (each tile covers all views in passes) and the
kernel hands its table over, resumably, once it holds `max_entries` keys.

Measured on scene0000_00 (docs/benchmarks/metric.md): cells of eps beat eps/2 and eps/3 (the
per-cell classification of 125 or 343 neighbour cells cost more than the pair tests it saved);
neighbour blocks are found by nine forward-moving pointers (a binary search per neighbour block
cost more than all the counting); the float32 pass vectorises only as a separate fastmath
function whose loop starts at 0.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_EMPTY = -1


@njit(nogil=True, cache=True)
def radix_sort_pairs(keys, idx):  # pragma: no cover - compiled
    """(keys, idx) sorted by keys (non-negative int64), stably: LSD radix, 11 bits a pass.

    Sorts the pairs themselves rather than an argsort (no random gathers afterwards, and the
    only extra memory is one more copy of each array). The inputs are reused as buffers.
    """
    n = keys.shape[0]
    if n == 0:
        return keys, idx
    kmax = keys.max()
    n_pass = 0
    while (kmax >> (11 * n_pass)) > 0:
        n_pass += 1
    count = np.zeros((max(n_pass, 1), 2049), np.int64)
    for i in range(n):
        kk = keys[i]
        for d in range(n_pass):
            count[d, ((kk >> (11 * d)) & 2047) + 1] += 1
    k2 = np.empty_like(keys)
    i2 = np.empty_like(idx)
    for d in range(n_pass):
        pos = count[d]
        for b in range(2048):
            pos[b + 1] += pos[b]
        shift = 11 * d
        for i in range(n):
            kk = keys[i]
            b = (kk >> shift) & 2047
            j = pos[b]
            k2[j] = kk
            i2[j] = idx[i]
            pos[b] = j + 1
        keys, k2 = k2, keys
        idx, i2 = i2, idx
    return keys, idx


@njit(nogil=True, cache=True)
def build_cells(keys, G, x, y, z, vl_label):  # pragma: no cover - compiled
    """Cells and runs of sorted keys `cell * G + vl` (vl: (label, view) group, numbered in
    (label, view) order, so equal labels are contiguous inside a cell).

    Returns:
        cell_key [nc] int64, cell_start [nc+1] int64 (point ranges), cell_bbox [nc, 6] float32
        (lo xyz, hi xyz: coordinates of points, so float32 is exact),
        cell_run_start [nc+1], run_start [nr+1], run_vl [nr] int32: runs of equal (label, view);
        cell_lrun_start [nc+1], lrun_start [nl+1], lrun_label [nl] int32: runs of equal label.
    """
    n = keys.shape[0]
    nc = 0
    nr = 0
    nl = 0
    prev_c = -1
    prev_k = -1
    prev_l = -1
    for i in range(n):
        k = keys[i]
        c = k // G
        lab = vl_label[k % G]
        if c != prev_c:
            nc += 1
            nl += 1
        elif lab != prev_l:
            nl += 1
        if k != prev_k:
            nr += 1
        prev_c = c
        prev_k = k
        prev_l = lab
    cell_key = np.empty(nc, np.int64)
    cell_start = np.empty(nc + 1, np.int64)
    cell_bbox = np.empty((nc, 6), np.float32)
    cell_run_start = np.empty(nc + 1, np.int64)
    run_start = np.empty(nr + 1, np.int64)
    run_vl = np.empty(nr, np.int32)
    cell_lrun_start = np.empty(nc + 1, np.int64)
    lrun_start = np.empty(nl + 1, np.int64)
    lrun_label = np.empty(nl, np.int32)
    ci = -1
    ri = -1
    li = -1
    prev_c = -1
    prev_k = -1
    prev_l = -1
    for i in range(n):
        k = keys[i]
        c = k // G
        lab = vl_label[k % G]
        new_cell = c != prev_c
        if new_cell:
            ci += 1
            cell_key[ci] = c
            cell_start[ci] = i
            cell_run_start[ci] = ri + 1
            cell_lrun_start[ci] = li + 1
            cell_bbox[ci, 0] = x[i]
            cell_bbox[ci, 1] = y[i]
            cell_bbox[ci, 2] = z[i]
            cell_bbox[ci, 3] = x[i]
            cell_bbox[ci, 4] = y[i]
            cell_bbox[ci, 5] = z[i]
        else:
            cell_bbox[ci, 0] = min(cell_bbox[ci, 0], x[i])
            cell_bbox[ci, 1] = min(cell_bbox[ci, 1], y[i])
            cell_bbox[ci, 2] = min(cell_bbox[ci, 2], z[i])
            cell_bbox[ci, 3] = max(cell_bbox[ci, 3], x[i])
            cell_bbox[ci, 4] = max(cell_bbox[ci, 4], y[i])
            cell_bbox[ci, 5] = max(cell_bbox[ci, 5], z[i])
        if k != prev_k:
            ri += 1
            run_start[ri] = i
            run_vl[ri] = k % G
        if new_cell or lab != prev_l:
            li += 1
            lrun_start[li] = i
            lrun_label[li] = lab
        prev_c = c
        prev_k = k
        prev_l = lab
    cell_start[nc] = n
    cell_run_start[nc] = nr
    run_start[nr] = n
    cell_lrun_start[nc] = nl
    lrun_start[nl] = n
    return (
        cell_key,
        cell_start,
        cell_bbox,
        cell_run_start,
        run_start,
        run_vl,
        cell_lrun_start,
        lrun_start,
        lrun_label,
    )


@njit(inline="always")
def _box_box(bb, a, c):  # pragma: no cover - compiled
    """(min, max) squared distance between the boxes of cells a and c, in float64."""
    mn = 0.0
    mx = 0.0
    for d in range(3):
        lo_a = np.float64(bb[a, d])
        hi_a = np.float64(bb[a, d + 3])
        lo_c = np.float64(bb[c, d])
        hi_c = np.float64(bb[c, d + 3])
        g = max(0.0, max(lo_c - hi_a, lo_a - hi_c))
        f = max(hi_c - lo_a, hi_a - lo_c)
        mn += g * g
        mx += f * f
    return mn, mx


@njit(inline="always")
def _point_box(bb, c, px, py, pz):  # pragma: no cover - compiled
    """(min, max) squared distance from point p (float64) to the box of cell c."""
    lx = np.float64(bb[c, 0])
    ly = np.float64(bb[c, 1])
    lz = np.float64(bb[c, 2])
    hx = np.float64(bb[c, 3])
    hy = np.float64(bb[c, 4])
    hz = np.float64(bb[c, 5])
    gx = max(0.0, max(lx - px, px - hx))
    gy = max(0.0, max(ly - py, py - hy))
    gz = max(0.0, max(lz - pz, pz - hz))
    fx = max(px - lx, hx - px)
    fy = max(py - ly, hy - py)
    fz = max(pz - lz, hz - pz)
    return gx * gx + gy * gy + gz * gz, fx * fx + fy * fy + fz * fz


@njit(inline="always")
def _offsets(k, m):  # pragma: no cover - compiled
    """Local-grid slot deltas of the cell offsets (dx, dy, dz) in [-k, k]^3 whose cells can hold
    a pair within eps: the gap between two cells d apart is (|d| - 1) cell edges per axis, and
    the edge is a hair over eps / k, so sum max(0, |d| - 1)^2 >= k^2 means no pair."""
    L = 3 * m
    out = np.empty((2 * k + 1) ** 3, np.int64)
    n = 0
    for dx in range(-k, k + 1):
        for dy in range(-k, k + 1):
            for dz in range(-k, k + 1):
                gx = max(0, abs(dx) - 1)
                gy = max(0, abs(dy) - 1)
                gz = max(0, abs(dz) - 1)
                if gx * gx + gy * gy + gz * gz < k * k:
                    out[n] = (dx * L + dy) * L + dz
                    n += 1
    return out[:n]


@njit(inline="always")
def _neighbour_blocks(b, block_keys, nby, nbz, ptr, nbr):  # pragma: no cover - compiled
    """nbr[27] <- index of each neighbour block of block b (itself included), or -1.

    Blocks are visited in key order, so the key of each neighbour row (dx, dy) only grows:
    ptr[9] keeps, per row, the first block not below it, and moves forward only.
    """
    nb = block_keys.shape[0]
    key = block_keys[b]
    r = 0
    for dx in range(-1, 2):
        for dy in range(-1, 2):
            base = key + (dx * nby + dy) * nbz
            j = ptr[r]
            while j < nb and block_keys[j] < base - 1:
                j += 1
            ptr[r] = j
            for dz in range(-1, 2):
                slot = r * 3 + dz + 1
                nbr[slot] = -1
                while j < nb and block_keys[j] < base + dz:
                    j += 1
                if j < nb and block_keys[j] == base + dz:
                    nbr[slot] = j
            r += 1


@njit(inline="always")
def _init_pointers(b0, block_keys, nby, nbz, ptr):  # pragma: no cover - compiled
    key = block_keys[b0]
    r = 0
    for dx in range(-1, 2):
        for dy in range(-1, 2):
            ptr[r] = np.searchsorted(block_keys, key + (dx * nby + dy) * nbz - 1)
            r += 1


@njit(inline="always")
def _fill_grid(nbr, block_cell_start, cell_key, m, grid, used):  # pragma: no cover - compiled
    """Write the cells of the 27 blocks nbr into the (3m)^3 local grid; returns slots used."""
    L = 3 * m
    m3 = m * m * m
    nused = 0
    for s in range(27):
        j = nbr[s]
        if j < 0:
            continue
        ox = (s // 9) * m
        oy = ((s // 3) % 3) * m
        oz = (s % 3) * m
        for c in range(block_cell_start[j], block_cell_start[j + 1]):
            loc = cell_key[c] % m3
            g = ((ox + loc // (m * m)) * L + oy + (loc // m) % m) * L + oz + loc % m
            grid[g] = c
            used[nused] = g
            nused += 1
    return nused


@njit(inline="always")
def _candidates(a, cell_key, cell_bbox, m, eps2, grid, offs, cand_all, cand_pt):  # pragma: no cover
    """Split the cells near cell a into wholly-in-reach-of-all-of-a and straddling ones."""
    L = 3 * m
    m3 = m * m * m
    loc = cell_key[a] % m3
    centre = ((m + loc // (m * m)) * L + m + (loc // m) % m) * L + m + loc % m
    n_all = 0
    n_pt = 0
    for o in range(offs.shape[0]):
        c = grid[centre + offs[o]]
        if c == _EMPTY:
            continue
        mn, mx = _box_box(cell_bbox, a, c)
        if mn > eps2:
            continue
        if mx <= eps2:
            cand_all[n_all] = c
            n_all += 1
        else:
            cand_pt[n_pt] = c
            n_pt += 1
    return n_all, n_pt


@njit(inline="always")
def _hash_slot(hk, key):  # pragma: no cover - compiled
    """Open-addressing slot of key (int64 >= 0) in the power-of-two table hk."""
    mask = hk.shape[0] - 1
    h = key * 0x5851F42D4C957F2D  # wraps around in int64: a multiplicative hash
    s = (h ^ (h >> 31)) & mask
    while hk[s] != _EMPTY and hk[s] != key:
        s = (s + 1) & mask
    return s


@njit(nogil=True, cache=True)
def _hash_grow(hk, hv):  # pragma: no cover - compiled
    nk = np.full(hk.shape[0] * 2, _EMPTY, np.int64)
    nv = np.zeros(hk.shape[0] * 2, np.int64)
    for i in range(hk.shape[0]):
        if hk[i] != _EMPTY:
            s = _hash_slot(nk, hk[i])
            nk[s] = hk[i]
            nv[s] = hv[i]
    return nk, nv


# The float32 passes may be reordered by the compiler (fastmath reassoc, so that the counts
# vectorise in 8 lanes): any order of summing three rounded squares stays inside the uncertain
# band, and the counts are float32 sums of 0/1 below 2^24, hence exact.
_CHUNK32 = 1 << 22


@njit(nogil=True, cache=True, fastmath={"reassoc", "nsz"})
def _pass32(bx, by, bz, bl, n, px, py, pz, lp, lo32, hi32):  # pragma: no cover - compiled
    """float32 counts of buffer points [0, n) against p: (surely inside, maybe inside, surely
    inside with label lp). (A loop from 0 vectorises; one from a variable start did not.)"""
    n_sure = np.float32(0)
    n_maybe = np.float32(0)
    s_sure = np.float32(0)
    for j in range(n):
        dx = bx[j] - px
        dy = by[j] - py
        dz = bz[j] - pz
        d2 = dx * dx + dy * dy + dz * dz
        sure = d2 < lo32
        n_sure += np.float32(sure)
        n_maybe += np.float32(d2 <= hi32)
        s_sure += np.float32(sure & (bl[j] == lp))
    return n_sure, n_maybe, s_sure


@njit(nogil=True, cache=True, fastmath={"reassoc", "nsz"})
def _pass32_pairs(bx, by, bz, bl, n, px, py, pz, lp, lo32, hi32, cnt, flag):  # pragma: no cover
    """`_pass32`, also adding each buffer point's surely-inside flag to cnt (and keeping it in
    flag, so that an exact recount can replace it)."""
    n_sure = np.float32(0)
    n_maybe = np.float32(0)
    s_sure = np.float32(0)
    for j in range(n):
        dx = bx[j] - px
        dy = by[j] - py
        dz = bz[j] - pz
        d2 = dx * dx + dy * dy + dz * dz
        sure = np.float32(d2 < lo32)
        n_sure += sure
        n_maybe += np.float32(d2 <= hi32)
        s_sure += np.float32((d2 < lo32) & (bl[j] == lp))
        cnt[j] += sure
        flag[j] = sure
    return n_sure, n_maybe, s_sure


@njit(inline="always")
def _count_point(
    p, x, y, z, lab, nbuf, bx, by, bz, bl, cnt, flag, use32, lo32, hi32, eps2, pairwise
):  # pragma: no cover
    """(neighbours, neighbours with p's label) of point p in the buffer; with pairwise, adds
    p's inside flags to cnt. float32 first; float64 (the reference's arithmetic) when a pair
    falls in the uncertain band or eps^2 is too large for float32."""
    lp = lab[p]
    if use32:
        px32 = x[p]
        py32 = y[p]
        pz32 = z[p]
        n_sure = 0
        n_maybe = 0
        s_sure = 0
        for j0 in range(0, nbuf, _CHUNK32):
            j1 = min(nbuf, j0 + _CHUNK32)
            if pairwise:
                a, b_, c = _pass32_pairs(
                    bx[j0:j1],
                    by[j0:j1],
                    bz[j0:j1],
                    bl[j0:j1],
                    j1 - j0,
                    px32,
                    py32,
                    pz32,
                    lp,
                    lo32,
                    hi32,
                    cnt[j0:j1],
                    flag[j0:j1],
                )
            else:
                a, b_, c = _pass32(
                    bx[j0:j1],
                    by[j0:j1],
                    bz[j0:j1],
                    bl[j0:j1],
                    j1 - j0,
                    px32,
                    py32,
                    pz32,
                    lp,
                    lo32,
                    hi32,
                )
            n_sure += np.int64(a)
            n_maybe += np.int64(b_)
            s_sure += np.int64(c)
        if n_sure == n_maybe:
            return n_sure, s_sure
    px = np.float64(x[p])
    py = np.float64(y[p])
    pz = np.float64(z[p])
    tot = 0
    same = 0
    for j in range(nbuf):
        dx = np.float64(bx[j]) - px
        dy = np.float64(by[j]) - py
        dz = np.float64(bz[j]) - pz
        inside = dx * dx + dy * dy + dz * dz <= eps2
        tot += inside
        same += inside & (bl[j] == lp)
        if pairwise:
            cnt[j] += np.float32(inside) - (flag[j] if use32 else np.float32(0))
    return tot, same


@njit(nogil=True, cache=True)
def label_chunk(b0, b1, cells, runs, job, n_all, n_same):  # pragma: no cover - compiled
    """Neighbour counts for the points of blocks [b0, b_next), written into n_all / n_same
    when count_h (else left alone).

    Returns (keys, counts, b_next): the pairwise contingency entries of blocks [b0, b_next) as
    keys vl_a * G + vl_b with their counts, only for view(vl_a) < view(vl_b) (the other half is
    its transpose; empty when not pairwise) and view(vl_a) in [va_lo, va_hi), and the first
    block not counted. Restricting view a bounds the distinct keys (a caller covers all views
    in passes; points of other views cost nothing in a pass without count_h). The kernel stops
    after the block whose entries take its table past `max_entries` distinct keys (so the table
    holds at most max_entries plus one block's entries); the caller resumes at b_next. Each
    block's counts are complete in themselves, so the pieces add up to the same exact integers.

    The straddling buffer is tested in float32 (8 lanes): a pair is surely inside when its
    float32 squared distance is below eps^2 (1 - 4e-6) and surely outside above eps^2 (1 + 4e-6)
    (float32 rounding moves a sum of three squares by under 3e-7 of itself); a point with any
    pair in between is recounted in float64, the reference's arithmetic. Runs of A's points
    with one (label, view) add their pairs per buffer point into cnt (float32: exact below
    2^24 points), flushed per run of equal column.

    Args:
        b0, b1: the block range [b0, b1) of this call (a caller resumes at b_next).
        cells: a `grid.CellGrid` (the sorted points, their cells and blocks).
        runs: a `grid.LabelRuns` (per-cell runs of equal (label, view) and of equal label).
        job: a `grid.CountPass` (what this pass counts: H, which views a of the pairwise).
        n_all, n_same: [n] int32, written for the points of the blocks counted when job.count_h.
    """
    block_keys, block_cell_start, cell_key = (
        cells.block_keys,
        cells.block_cell_start,
        cells.cell_key,
    )
    cell_start, cell_bbox, x, y, z = cells.cell_start, cells.cell_bbox, cells.x, cells.y, cells.z
    nby, nbz, k, m, eps2 = cells.nby, cells.nbz, cells.k, cells.m, cells.eps2
    cell_run_start, run_start, run_vl = runs.cell_run_start, runs.run_start, runs.run_vl
    cell_lrun_start, lrun_start, lrun_label = runs.cell_lrun_start, runs.lrun_start, runs.lrun_label
    lab, vl_view, G = runs.lab, runs.vl_view, runs.G
    pairwise, count_h, va_lo, va_hi, max_entries = (
        job.pairwise,
        job.count_h,
        job.va_lo,
        job.va_hi,
        job.max_entries,
    )
    L = 3 * m
    grid = np.full(L * L * L, _EMPTY, np.int64)
    used = np.empty(L * L * L, np.int64)
    offs = _offsets(k, m)
    ptr = np.empty(9, np.int64)
    nbr = np.empty(27, np.int64)
    cand_all = np.empty(offs.shape[0], np.int64)
    cand_pt = np.empty(offs.shape[0], np.int64)
    acc_same = np.zeros(16, np.int64)  # per label run of the current cell
    rowmap = np.full(G if pairwise else 1, _EMPTY, np.int64)
    colmap = np.full(G if pairwise else 1, _EMPTY, np.int64)
    rows = np.empty(16, np.int64)
    cols = np.empty(16, np.int64)
    mat = np.zeros(16, np.int64)
    hk = np.full(1024, _EMPTY, np.int64)
    hv = np.zeros(1024, np.int64)
    hn = 0
    # float32 thresholds, or always float64 when eps^2 is beyond float32's normal range
    use32 = 1e-30 < eps2 < 1e30
    lo32 = np.float32(eps2 * (1 - 4e-6)) if use32 else np.float32(0)
    hi32 = np.float32(eps2 * (1 + 4e-6)) if use32 else np.float32(0)
    cap = 1024  # buffer of the straddling cells' points
    bx = np.empty(cap, np.float32)
    by = np.empty(cap, np.float32)
    bz = np.empty(cap, np.float32)
    bl = np.empty(cap, np.int32)
    cnt = np.zeros(cap, np.float32)  # per buffer point: pairs with the current run of A
    flag = np.zeros(cap, np.float32)  # per buffer point: surely inside the current point's ball
    seg_start = np.empty(cap + 1, np.int64)  # runs of equal column in the buffer
    seg_col = np.empty(cap, np.int64)
    if b1 > b0:
        _init_pointers(b0, block_keys, nby, nbz, ptr)
    for b in range(b0, b1):
        nrow = 0
        ncol = 0
        if pairwise:
            # rows: this block's (label, view) groups of views in range
            r0 = cell_run_start[block_cell_start[b]]
            r1 = cell_run_start[block_cell_start[b + 1]]
            if rows.shape[0] < r1 - r0:
                rows = np.empty(2 * (r1 - r0), np.int64)
            for r in range(r0, r1):
                g = run_vl[r]
                if rowmap[g] == _EMPTY and va_lo <= vl_view[g] < va_hi:
                    rowmap[g] = nrow
                    rows[nrow] = g
                    nrow += 1
        if not count_h and nrow == 0:
            continue  # nothing of this block to count in this pass
        _neighbour_blocks(b, block_keys, nby, nbz, ptr, nbr)
        nused = _fill_grid(nbr, block_cell_start, cell_key, m, grid, used)
        if pairwise:
            # dense pair counts of this block: its rows x its neighbourhood's groups (columns)
            nrun = 0
            for u in range(nused):
                c = grid[used[u]]
                nrun += cell_run_start[c + 1] - cell_run_start[c]
            if cols.shape[0] < nrun:
                cols = np.empty(2 * nrun, np.int64)
            for u in range(nused):
                c = grid[used[u]]
                for r in range(cell_run_start[c], cell_run_start[c + 1]):
                    g = run_vl[r]
                    if colmap[g] == _EMPTY:
                        colmap[g] = ncol
                        cols[ncol] = g
                        ncol += 1
            if mat.shape[0] < nrow * ncol:
                mat = np.zeros(nrow * ncol, np.int64)  # exact: it grows as (views seeing a block)^2
        for a in range(block_cell_start[b], block_cell_start[b + 1]):
            if not count_h:
                has_row = False
                for ra in range(cell_run_start[a], cell_run_start[a + 1]):
                    if rowmap[run_vl[ra]] != _EMPTY:
                        has_row = True
                        break
                if not has_row:
                    continue
            n_wa, n_pt = _candidates(a, cell_key, cell_bbox, m, eps2, grid, offs, cand_all, cand_pt)
            l0 = cell_lrun_start[a]
            l1 = cell_lrun_start[a + 1]
            if acc_same.shape[0] < l1 - l0:
                acc_same = np.zeros(2 * (l1 - l0), np.int64)
            acc_all = 0
            # cells within reach of every point of A: counted once for the whole of A
            for ci in range(n_wa):
                c = cand_all[ci]
                acc_all += cell_start[c + 1] - cell_start[c]
                if count_h:
                    for la in range(l0, l1):
                        for lc in range(cell_lrun_start[c], cell_lrun_start[c + 1]):
                            if lrun_label[lc] == lrun_label[la]:
                                acc_same[la - l0] += lrun_start[lc + 1] - lrun_start[lc]
                if pairwise:
                    for ra in range(cell_run_start[a], cell_run_start[a + 1]):
                        if rowmap[run_vl[ra]] == _EMPTY:
                            continue  # a view outside this pass's range
                        na = run_start[ra + 1] - run_start[ra]
                        row = rowmap[run_vl[ra]] * ncol
                        for rc in range(cell_run_start[c], cell_run_start[c + 1]):
                            mat[row + colmap[run_vl[rc]]] += na * (
                                run_start[rc + 1] - run_start[rc]
                            )
            # straddling cells: their points in one buffer, tested by every point of A
            nbuf = 0
            for ci in range(n_pt):
                c = cand_pt[ci]
                nbuf += cell_start[c + 1] - cell_start[c]
            if nbuf > cap:
                cap = 2 * nbuf
                bx = np.empty(cap, np.float32)
                by = np.empty(cap, np.float32)
                bz = np.empty(cap, np.float32)
                bl = np.empty(cap, np.int32)
                cnt = np.zeros(cap, np.float32)
                flag = np.zeros(cap, np.float32)
                seg_start = np.empty(cap + 1, np.int64)
                seg_col = np.empty(cap, np.int64)
            j = 0
            nseg = 0
            for ci in range(n_pt):
                c = cand_pt[ci]
                for q in range(cell_start[c], cell_start[c + 1]):
                    bx[j] = x[q]
                    by[j] = y[q]
                    bz[j] = z[q]
                    bl[j] = lab[q]
                    j += 1
                if pairwise:
                    for rc in range(cell_run_start[c], cell_run_start[c + 1]):
                        col = colmap[run_vl[rc]]
                        if nseg > 0 and seg_col[nseg - 1] == col:
                            continue
                        seg_start[nseg] = (
                            run_start[rc]
                            - cell_start[c]
                            + (j - (cell_start[c + 1] - cell_start[c]))
                        )
                        seg_col[nseg] = col
                        nseg += 1
            seg_start[nseg] = nbuf
            for ra in range(cell_run_start[a], cell_run_start[a + 1]):
                row_pw = pairwise and rowmap[run_vl[ra]] != _EMPTY
                if not (count_h or row_pw):
                    continue
                if row_pw:
                    cnt[:nbuf] = 0
                for p in range(run_start[ra], run_start[ra + 1]):
                    t, s_ = _count_point(
                        p,
                        x,
                        y,
                        z,
                        lab,
                        nbuf,
                        bx,
                        by,
                        bz,
                        bl,
                        cnt,
                        flag,
                        use32,
                        lo32,
                        hi32,
                        eps2,
                        row_pw,
                    )
                    if count_h:
                        lp = lab[p]
                        same = 0
                        for la in range(l0, l1):
                            if lrun_label[la] == lp:
                                same = acc_same[la - l0]
                        n_all[p] = acc_all + t
                        n_same[p] = same + s_
                if row_pw:
                    row = rowmap[run_vl[ra]] * ncol
                    for sg in range(nseg):
                        t = 0
                        for j in range(seg_start[sg], seg_start[sg + 1]):
                            t += np.int64(cnt[j])
                        mat[row + seg_col[sg]] += t
            for i in range(l1 - l0):
                acc_same[i] = 0
        if pairwise:
            for i in range(nrow):
                va = vl_view[rows[i]]
                for j in range(ncol):
                    v = mat[i * ncol + j]
                    if v == 0:
                        continue
                    mat[i * ncol + j] = 0
                    if va >= vl_view[cols[j]]:
                        continue
                    if 2 * (hn + 1) > hk.shape[0]:
                        hk, hv = _hash_grow(hk, hv)
                    key = rows[i] * G + cols[j]
                    s = _hash_slot(hk, key)
                    if hk[s] == _EMPTY:
                        hk[s] = key
                        hn += 1
                    hv[s] += v
            for i in range(nrow):
                rowmap[rows[i]] = _EMPTY
            for j in range(ncol):
                colmap[cols[j]] = _EMPTY
        for u in range(nused):
            grid[used[u]] = _EMPTY
        if hn >= max_entries and b + 1 < b1:
            keep = hk != _EMPTY
            return hk[keep], hv[keep], b + 1
    keep = hk != _EMPTY
    return hk[keep], hv[keep], b1


@njit(nogil=True, cache=True)
def feature_chunk(b0, b1, cells, feat, cell_sum, n_all, dot):  # pragma: no cover - compiled
    """Neighbour counts and sums of cosines for the points of blocks [b0, b1).

    `feat` [n, C] holds unit vectors and `cell_sum` [cells, C] their per-cell sums, since
    sum_q cos(M(q), M(p)) = M^(p) . sum_q M^(q). Feature vectors are long, so here each point
    of A tests each straddling cell's box first: a cell wholly inside its ball adds its sum.
    `cells` is a `grid.CellGrid`; n_all [n] int32 and dot [n] float64 are written for the
    points of blocks [b0, b1).
    """
    block_keys, block_cell_start, cell_key = (
        cells.block_keys,
        cells.block_cell_start,
        cells.cell_key,
    )
    cell_start, cell_bbox, x, y, z = cells.cell_start, cells.cell_bbox, cells.x, cells.y, cells.z
    nby, nbz, k, m, eps2 = cells.nby, cells.nbz, cells.k, cells.m, cells.eps2
    L = 3 * m
    C = feat.shape[1]
    grid = np.full(L * L * L, _EMPTY, np.int64)
    used = np.empty(L * L * L, np.int64)
    offs = _offsets(k, m)
    ptr = np.empty(9, np.int64)
    nbr = np.empty(27, np.int64)
    cand_all = np.empty(offs.shape[0], np.int64)
    cand_pt = np.empty(offs.shape[0], np.int64)
    acc = np.zeros(C, np.float64)
    if b1 > b0:
        _init_pointers(b0, block_keys, nby, nbz, ptr)
    for b in range(b0, b1):
        _neighbour_blocks(b, block_keys, nby, nbz, ptr, nbr)
        nused = _fill_grid(nbr, block_cell_start, cell_key, m, grid, used)
        for a in range(block_cell_start[b], block_cell_start[b + 1]):
            n_wa, n_pt = _candidates(a, cell_key, cell_bbox, m, eps2, grid, offs, cand_all, cand_pt)
            acc[:] = 0.0
            acc_all = 0
            for ci in range(n_wa):
                c = cand_all[ci]
                acc_all += cell_start[c + 1] - cell_start[c]
                for j in range(C):
                    acc[j] += cell_sum[c, j]
            for p in range(cell_start[a], cell_start[a + 1]):
                px = np.float64(x[p])
                py = np.float64(y[p])
                pz = np.float64(z[p])
                tot = acc_all
                s = 0.0
                for j in range(C):
                    s += feat[p, j] * acc[j]
                for ci in range(n_pt):
                    c = cand_pt[ci]
                    mn, mx = _point_box(cell_bbox, c, px, py, pz)
                    if mn > eps2:
                        continue
                    if mx <= eps2:
                        tot += cell_start[c + 1] - cell_start[c]
                        for j in range(C):
                            s += feat[p, j] * cell_sum[c, j]
                        continue
                    for q in range(cell_start[c], cell_start[c + 1]):
                        dx = np.float64(x[q]) - px
                        dy = np.float64(y[q]) - py
                        dz = np.float64(z[q]) - pz
                        if dx * dx + dy * dy + dz * dz <= eps2:
                            tot += 1
                            for j in range(C):
                                s += np.float64(feat[p, j]) * feat[q, j]
                n_all[p] = tot
                dot[p] = s
        for u in range(nused):
            grid[used[u]] = _EMPTY
    return 0


@njit(nogil=True, cache=True)
def cell_feature_sums(cell_start, feat):  # pragma: no cover - compiled
    """[cells, C] float64 sums of the unit feature vectors of each cell."""
    nc = cell_start.shape[0] - 1
    out = np.zeros((nc, feat.shape[1]), np.float64)
    for c in range(nc):
        for p in range(cell_start[c], cell_start[c + 1]):
            for j in range(feat.shape[1]):
                out[c, j] += feat[p, j]
    return out


@njit(nogil=True, cache=True)
def frame_sums(n_same, n_all, idx, HW, n_frames):  # pragma: no cover - compiled
    """(sum of h, per-frame sums of h [N] float64, per-frame counts [N]) for h = n_same / n_all."""
    sums = np.zeros(n_frames, np.float64)
    counts = np.zeros(n_frames, np.int64)
    for i in range(idx.shape[0]):
        f = idx[i] // HW
        sums[f] += n_same[i] / n_all[i]
        counts[f] += 1
    return sums, counts


@njit(nogil=True, cache=True)
def frame_sums_exact(n_same, n_all, idx, HW, limbs, counts):  # pragma: no cover - compiled
    """Add h = n_same / n_all of each point to its frame's exact sum, in place.

    Float sums depend on their order; these do not, so a metric computed in spatial tiles (any
    order of points) gives per-frame sums identical to the bit. h is a float64 in (0, 1] with
    h >= 1 / n_all >= 2^-31, so its last bit is worth >= 2^-84 and h * 2^84 is an integer, split
    into three 28-bit limbs (h * 2^28, then the fraction's next 28 bits, then the rest: each
    extraction is exact). Below 2^31 points per frame no limb sum overflows int64; the caller
    forms (l2 * 2^56 + l1 * 2^28 + l0) / 2^84 with Python integers (one correct rounding).

    Args:
        n_same, n_all: [n] counts (n_all >= n_same >= 1); idx: [n] flat pixel indices.
        HW: pixels per frame; limbs: [N, 3] int64 (added to); counts: [N] int64 (added to).
    """
    two28 = 268435456.0
    for i in range(idx.shape[0]):
        f = idx[i] // HW
        t = (n_same[i] / n_all[i]) * two28
        a = np.floor(t)
        t = (t - a) * two28
        b = np.floor(t)
        c = (t - b) * two28
        limbs[f, 0] += np.int64(a)
        limbs[f, 1] += np.int64(b)
        limbs[f, 2] += np.int64(c)
        counts[f] += 1
