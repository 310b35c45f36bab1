"""The pairwise variant's contingency entries: counted in passes, spilled, reduced to Rand terms.

An entry is ((label, view a) group, (label, view b) group) -> pairs within eps, view a < view b,
keyed `vl_a * G + vl_b`. Their number grows with the square of the number of views that see one
spot, so each tile counts them in passes over ranges of views a (`view_passes`), folds them in
tables of at most `MetricConfig.entry_limit` keys and appends them to a spill file; at the end
they are cut by view a into groups of whole views and each group is reduced to its view pairs'
Rand terms on its own (`pairwise_stream`). Every term is an exact integer in float64, and the
totals are one `math.fsum` each, so the result does not depend on the tiling.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lift3d.consistency.metric.tiles import append_by_destination, plan_runs, read_chunks

ENTRY = np.dtype([("k", np.int64), ("c", np.int64)])  # (vl_a * G + vl_b, count)


def view_passes(run_vl, cell_run_start, block_cell_start, runs, vl_view, N: int, max_entries: int):
    """Ranges [va_lo, va_hi) of views a, one counting pass each, whose pairwise keys in this tile
    number at most max_entries (unless one view alone may have more).

    A key (vl_a, vl_b) pairs a group of an own block (a row) with a group of a view b > a of the
    tile, so view a has at most rows(a) * (groups of later views) keys. The bound is loose (not
    every such pair meets within eps), but exact to compute, and it keeps every pass's table
    small whatever the number of views that see this part of the scene. Views without rows here
    get no pass; the first pass also counts H, so there is always one.
    """
    own_runs = np.concatenate(
        [
            np.arange(cell_run_start[block_cell_start[b0]], cell_run_start[block_cell_start[b1]])
            for b0, b1 in runs
        ]
    )
    rows = np.bincount(vl_view[np.unique(run_vl[own_runs])], minlength=N)
    groups = np.bincount(vl_view[np.unique(run_vl)], minlength=N)
    later = groups.sum() - np.cumsum(groups)  # groups of views b > a
    bound = rows * later
    edges = plan_runs(bound, max_entries)
    passes = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if bound[a:b].any()]
    return passes or [(0, 0)]


def merge_entries(parts):
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


class EntrySpill:
    """Contingency entries folded as they come and appended to the spill file `path`.

    Pieces are buffered and merged into one table (each key once) whenever the buffer outgrows
    both `limit` and the table, so memory stays a small multiple of the distinct keys however
    often pieces repeat them; the table is appended to the file and emptied whenever it grows
    past `limit` (a key may then be spilled more than once: the final reduction sums them).
    `limit` is also the bound of each counting pass's keys (`view_passes`) and of the kernel's
    table, so a pass's pieces fold into one table and are spilled about once.
    """

    def __init__(self, path: Path, limit: int):
        self.path = path
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

    def flush(self) -> None:
        """Everything held to the file (at the end of a pass: the next one has other keys)."""
        self._fold(final=True)

    def _fold(self, final: bool = False) -> None:
        self.table = merge_entries([self.table] + self.buffer)
        self.buffer, self.buffered = [], 0
        if len(self.table[0]) >= self.limit or (final and len(self.table[0])):
            append_entries(self.path, *self.table)
            self.table = (np.zeros(0, np.int64), np.zeros(0, np.int64))


def append_entries(path: Path, keys: np.ndarray, counts: np.ndarray) -> None:
    rec = np.empty(len(keys), ENTRY)
    rec["k"], rec["c"] = keys, counts
    with open(path, "ab") as fh:
        rec.tofile(fh)


def pairwise_stream(
    path: Path, tmp: Path, vl_view: np.ndarray, G: int, N: int, max_entries: int
) -> float | None:
    """The pooled Rand agreement of the spilled entries, one group of views a at a time.

    All entries of a view pair share view a (the smaller view), so a group of whole views a
    holds every entry of its pairs; the per-pair terms are exact, the final sums one fsum each.
    None when there is no entry or no view pair has two correspondences.
    """
    if not path.is_file():
        return None
    count = max(1 << 16, min(1 << 22, int(max_entries)))
    hist = np.zeros(N, np.int64)
    for rec in read_chunks(path, count, ENTRY):
        hist += np.bincount(vl_view[rec["k"] // G], minlength=N)
    edges = plan_runs(hist, max_entries)  # whole views a, at most max_entries entries each
    S = len(edges) - 1
    group_of_view = np.repeat(np.arange(S), np.diff(edges))
    paths = [tmp / f"pairs{k}.bin" for k in range(S)]
    for rec in read_chunks(path, count, ENTRY):
        append_by_destination(
            rec, np.arange(len(rec)), group_of_view[vl_view[rec["k"] // G]], paths
        )
    path.unlink()
    T_parts, D_parts = [], []
    for q in paths:
        if not q.is_file():
            continue
        rec = np.fromfile(q, ENTRY)
        q.unlink()
        T, D = pairwise_terms(rec["k"], rec["c"], vl_view, G)
        del rec
        T_parts.append(T)
        D_parts.append(D)
    return pairwise_total(T_parts, D_parts)


def pairwise_total(T_parts, D_parts) -> float | None:
    """sum(D) / sum(T) over view pairs, each sum correctly rounded (`math.fsum`), so the result
    does not depend on how the pairs were split into parts."""
    if not T_parts:
        return None
    total = math.fsum(np.concatenate(T_parts))  # one fsum over all: fsum of fsums would round twice
    if total == 0:
        return None
    return math.fsum(np.concatenate(D_parts)) / total


def pairwise_terms(keys, counts, vl_view, G):
    """Per view pair (a, b): T = C(N_ab, 2) pixel pairs and D = T + 2 S - X - Y agreeing pairs
    (the Rand index's numerator), from the entries of those pairs (all entries of a view pair
    must be present; a key may repeat, its counts are summed).

    Every term is an integer below 2**53, so exact in float64: the values do not depend on the
    entries' order or on which other pairs are computed alongside.
    """
    keys, n = merge_entries([(keys, counts)])
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
