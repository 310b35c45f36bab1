"""MaskClustering-style association of per-frame masks: view consensus on a mask graph.

MaskClustering (Yan et al., "MaskClustering: View Consensus based Mask Graph Clustering for
Open-Vocabulary 3D Instance Segmentation", CVPR 2024; PKU-EPIC/MaskClustering, `graph/`) gives
every frame's masks global IDs by clustering a graph over *all* masks of all views at once,
where SAM3D merges neighbouring frames pairwise. Written here after reading its
`graph/construction.py` and `graph/iterative_clustering.py`:

1. Scene points: here the voxels (edge `voxel`) of all views' pointmaps. A mask's points are the
   voxels its pixels fall in. A voxel holding pixels of two masks of one view is a boundary point
   and is left out of every mask (the paper's `boundary_points`).
2. For each mask m and each other frame f: the share of m's points that lie in some mask of f.
   Below `visible_threshold` (0.3) m counts as not seen in f. Otherwise, when one mask m' of f
   holds more than `contained_threshold` (0.8) of those points, f *sees* m (visible[m, f]) and m'
   *contains* m (contained[m, m']); else m is split in f. A mask split in more than
   `undersegment_threshold` (0.3) of the frames that see it (or seen by none) is
   under-segmented: it is dropped, and its frame neither sees nor contains any mask through it.
3. View consensus of two nodes i, j: supporters / observers, where observers = frames that see
   both (visible_i . visible_j) and supporters = masks that contain both (contained_i .
   contained_j). An edge joins i and j when the consensus is at least `consensus` (0.9) and the
   observers reach the iteration's threshold.
4. Iterative clustering: the observer thresholds are the 95th, 90th, ..., 0th percentiles of the
   positive observer counts of mask pairs (values <= 1 become 1 above the median and end the
   list below it); at each threshold the graph's connected components become the new nodes,
   whose visible and contained vectors are the OR of their members'.

The result is the per-frame label maps with one ID per final node (under-segmented masks
unlabeled), lifted, scored and compared exactly like the other methods. Departures, stated:
scene points are pointmap voxels instead of the mesh's points found by back-projection; the
visibility test has no absolute floor (MaskClustering also keeps a mask seen when 500 of its
points are, a count for its dense point clouds, not for voxels); the post-processing
(DBSCAN splitting, point filtering, open-vocabulary features) is not part of the association and
is left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from lift3d.errors import InputError


def observer_thresholds(observers: np.ndarray) -> list[float]:  # observers: positive pair counts
    """MaskClustering's falling observer thresholds (`get_observer_num_thresholds`)."""
    out: list[float] = []
    if len(observers) == 0:
        return [1.0]
    for pct in range(95, -5, -5):
        t = float(np.percentile(observers, pct))
        if t <= 1:
            if pct < 50:
                break
            t = 1.0
        out.append(t)
    return out


def _view_pairs(pointmap, valid, labels, voxel):  # -> [E, 4] int64 (voxel x, y, z, local ID)
    """One view's distinct (voxel, local ID) pairs."""
    ok = valid & (labels > 0) & np.isfinite(pointmap).all(axis=-1)
    keys = np.floor(pointmap[ok] / voxel).astype(np.int64)
    lab = labels[ok].astype(np.int64)
    packed = _pack(keys)
    if packed is None:  # beyond 2^20 voxels from the origin: the plain row-wise unique
        return np.unique(np.concatenate([keys, lab[:, None]], axis=1), axis=0)
    order = np.lexsort((lab, packed))  # the order of np.unique(axis=0): x, y, z, then label
    packed, lab, keys = packed[order], lab[order], keys[order]
    first = np.r_[True, (packed[1:] != packed[:-1]) | (lab[1:] != lab[:-1])]
    return np.concatenate([keys[first], lab[first][:, None]], axis=1)


_BITS = 21  # per coordinate: three fit in an int64, in the order of their significance


def _pack(keys):  # [n, 3] int64 -> [n] int64 ordered as the rows lexicographically, or None
    """Voxel coordinates as one int64 whose order is the rows' lexicographic order (x, y, z)."""
    off = 1 << (_BITS - 1)
    if len(keys) and (keys.min() < -off or keys.max() >= off):
        return None
    k = keys + off
    return (k[:, 0] << (2 * _BITS)) | (k[:, 1] << _BITS) | k[:, 2]


def _memberships(per_view):
    """(mask frame [M], mask local ID [M], pairs (mask, point) [E, 2] without boundary points,
    number of points) from each view's distinct (voxel, local ID) pairs."""
    frame_of, local_of, rows = [], [], []
    all_keys = (
        np.concatenate([p[:, :3] for p in per_view]) if per_view else np.zeros((0, 3), np.int64)
    )
    packed = _pack(all_keys)
    _, point_id = (
        np.unique(all_keys, axis=0, return_inverse=True)
        if packed is None
        else np.unique(packed, return_inverse=True)
    )
    point_id = point_id.ravel()
    del all_keys
    boundary = np.zeros(int(point_id.max(initial=-1)) + 1, bool)
    start = 0
    for f, pairs in enumerate(per_view):
        pid = point_id[start : start + len(pairs)]
        start += len(pairs)
        u, c = np.unique(pid, return_counts=True)
        boundary[u[c > 1]] = True  # pixels of two masks of this view in one voxel
        ids, mask_of_pair = np.unique(pairs[:, 3], return_inverse=True)
        first = len(frame_of)
        frame_of.extend([f] * len(ids))
        local_of.extend(ids.tolist())
        if len(pairs):
            rows.append(np.stack([first + mask_of_pair.ravel(), pid], axis=1))
    pairs = np.concatenate(rows) if rows else np.zeros((0, 2), np.int64)
    pairs = pairs[~boundary[pairs[:, 1]]] if len(pairs) else pairs
    return np.asarray(frame_of, np.int64), np.asarray(local_of, np.int64), pairs, int(len(boundary))


def maskclustering_merge(
    labels: np.ndarray,  # [N, H, W] int, per-frame IDs (0 = unlabeled)
    pointmaps: np.ndarray,  # [N, H, W, 3] float32 world metres
    valid: np.ndarray,  # [N, H, W] bool
    *,
    voxel: float = 0.05,
    visible_threshold: float = 0.3,
    contained_threshold: float = 0.8,
    undersegment_threshold: float = 0.3,
    consensus: float = 0.9,
) -> np.ndarray:  # [N, H, W] int32
    """MaskClustering's view-consensus clustering of per-frame masks (module docstring).

    Args:
        labels: per-frame label maps whose IDs mean nothing across frames (the framewise masks).
        pointmaps, valid: each frame's world points (metres) and where they are known.
        voxel: edge of the voxels that stand for scene points (metres).
        visible_threshold, contained_threshold, undersegment_threshold, consensus:
            MaskClustering's `mask_visible_threshold` (0.3), `contained_threshold` (0.8),
            `undersegment_filter_threshold` (0.3) and `view_consensus_threshold` (0.9).

    Returns:
        Label maps with IDs shared by all frames, 1..K; masks found under-segmented are 0.

    Raises:
        InputError: arrays of mismatched shapes, or a non-positive voxel.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.dtype.kind not in "iu":
        raise InputError(
            None, f"labels must be integer [N, H, W], got {labels.dtype} {list(labels.shape)}"
        )
    if pointmaps.shape != (*labels.shape, 3) or valid.shape != labels.shape:
        raise InputError(
            None,
            f"pointmaps {list(pointmaps.shape)} / valid {list(valid.shape)} do not fit labels {list(labels.shape)}",
        )
    N = len(labels)
    views = ((pointmaps[f], valid[f], labels[f]) for f in range(N))
    frame_of, local_of, ids = cluster_view_masks(
        views,
        voxel=voxel,
        visible_threshold=visible_threshold,
        contained_threshold=contained_threshold,
        undersegment_threshold=undersegment_threshold,
        consensus=consensus,
    )
    luts = view_luts(frame_of, local_of, ids)
    out = np.zeros(labels.shape, np.int32)
    for f in range(min(N, len(luts))):
        out[f] = relabel(luts[f], labels[f])
    return out


def view_luts(frame_of, local_of, ids) -> list[np.ndarray]:
    """Per view v (up to the last with a mask), [L] int64 local ID -> cluster ID (0 elsewhere)."""
    luts = []
    for v in range(int(frame_of.max(initial=-1)) + 1):
        sel = frame_of == v
        lut = np.zeros(int(local_of[sel].max(initial=0)) + 1, np.int64)
        lut[local_of[sel]] = ids[sel]
        luts.append(lut)
    return luts


def relabel(lut: np.ndarray, labels: np.ndarray) -> np.ndarray:  # [H, W] int -> int32
    """A label map through a lookup table; IDs past its end become 0."""
    labels = np.asarray(labels)
    big = int(labels.max(initial=0)) + 1
    if big > len(lut):
        lut = np.concatenate([lut, np.zeros(big - len(lut), lut.dtype)])
    return lut[labels].astype(np.int32)


class MaskClusters(NamedTuple):
    """`cluster_view_masks`' result, one entry per mask (view, ID) with a valid point."""

    frame: np.ndarray  # [M] int64 view of the mask
    local: np.ndarray  # [M] int64 its ID in that view
    cluster: np.ndarray  # [M] int64 cluster 1..K, 0 = found under-segmented


def _bridged_frames(container, inner, frame_of, N):  # -> [K] int64 keys container * N + frame
    """(container mask, frame) keys where the container contains two or more masks of that
    frame, another frame than its own."""
    key, n = np.unique(container * N + frame_of[inner], return_counts=True)
    key = key[n >= 2]
    return key[key % N != frame_of[key // N]]


def cluster_view_masks(
    views: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    voxel: float = 0.05,
    visible_threshold: float = 0.3,
    contained_threshold: float = 0.8,
    undersegment_threshold: float = 0.3,
    consensus: float = 0.9,
    swallow_share: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MaskClustering's view consensus over the masks of views read one at a time.

    Args:
        views: per view (pointmap [H, W, 3] float world metres, valid [H, W] bool, labels
            [H, W] int, 0 = unlabeled); only each view's distinct (voxel, ID) pairs are kept.
        voxel, visible_threshold, contained_threshold, undersegment_threshold, consensus: as
            for `maskclustering_merge`.
        swallow_share: > 0 adds two tests of under-segmentation to MaskClustering's (0: its
            rule alone, as `maskclustering_merge` runs it): mask m is also split in frame f
            when it holds at least this share of a whole mask of f besides the one it lies in,
            and when it contains two or more masks of f (each over `contained_threshold` inside
            m as m's frame sees it) while f sees less than `visible_threshold` of m.

    Returns:
        `MaskClusters`: frame [M], local ID [M], cluster ID [M] of every mask (view, ID) with a
        valid point: cluster IDs 1..K shared by all views, 0 for masks found under-segmented (a
        mask no other view observes is a cluster of its own).
    """
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    if voxel <= 0:
        raise InputError(None, f"voxel must be positive, got {voxel}")
    per_view = [_view_pairs(pm, ok, lab, voxel) for pm, ok, lab in views]
    N = len(per_view)
    frame_of, local_of, pairs, P = _memberships(per_view)
    del per_view
    M = len(frame_of)
    if M == 0:
        return MaskClusters(frame_of, local_of, np.zeros(0, np.int64))
    A = sparse.csr_matrix(
        (np.ones(len(pairs), np.float64), (pairs[:, 0], pairs[:, 1])), shape=(M, max(P, 1))
    )
    size = np.asarray(A.sum(axis=1)).ravel()  # points per mask
    # C[m, m'] = points of m in mask m'; grouped by the frame of m'
    C = (A @ A.T).tocoo()
    m, m2, c = C.row.astype(np.int64), C.col.astype(np.int64), C.data
    f2 = frame_of[m2]
    order = np.lexsort((-c, f2, m))
    m, m2, c, f2 = m[order], m2[order], c[order], f2[order]
    key = m * N + f2
    first = np.r_[True, key[1:] != key[:-1]]
    grp = np.cumsum(first) - 1
    total = np.bincount(grp, weights=c)  # points of m in any mask of f2
    top_m, top_c, top_mask = m[first], c[first], m2[first]
    top_f = f2[first]
    seen = total / np.maximum(size[top_m], 1) >= visible_threshold
    contained = seen & (top_c / np.maximum(total, 1) > contained_threshold)
    if swallow_share > 0:
        # m holds most of a whole mask of f2 besides its top one: a union of two masks there
        other = ~first & (f2 != frame_of[m]) & (c >= swallow_share * size[m2])
        contained &= np.bincount(grp[other], minlength=len(top_m)) == 0
    visible_num = np.bincount(top_m[seen], minlength=M)
    split_num = np.bincount(top_m[seen & ~contained], minlength=M)
    if swallow_share > 0:
        # m contains two or more masks of another frame f that sees under visible_threshold of
        # m (a wall mask's far end): f keeps apart what m joins, so m is split there too
        bridged = _bridged_frames(top_mask[contained], top_m[contained], frame_of, N)
        bridged = bridged[~np.isin(bridged, top_m[seen] * N + top_f[seen])]
        extra = np.bincount(bridged // N, minlength=M)
        visible_num, split_num = visible_num + extra, split_num + extra
    under = (visible_num == 0) | (split_num > undersegment_threshold * visible_num)

    vis_r, vis_c = top_m[contained], top_f[contained]
    con_r, con_c = top_m[contained], top_mask[contained]
    # undo what an under-segmented mask observed: it contains nothing, its frame sees nothing through it
    undo = under[con_c]
    keep = ~undo
    vis_r, vis_c, con_r, con_c = vis_r[keep], vis_c[keep], con_r[keep], con_c[keep]
    Vis = sparse.csr_matrix((np.ones(len(vis_r)), (vis_r, vis_c)), shape=(M, N))
    Vis.data[:] = 1.0
    Con = sparse.csr_matrix((np.ones(len(con_r)), (con_r, con_c)), shape=(M, M))
    Con.data[:] = 1.0
    obs_all = (Vis @ Vis.T).data
    thresholds = observer_thresholds(obs_all[obs_all > 0])

    nodes = np.flatnonzero(~under)  # node -> its masks, via `member`
    member = np.full(M, -1, np.int64)
    member[nodes] = np.arange(len(nodes))
    V, K = Vis[nodes], Con[nodes]
    for t in thresholds:
        n = V.shape[0]
        if n <= 1:
            break
        obs = (V @ V.T).tocoo()
        sup = (K @ K.T).tocsr()
        r, q, o = obs.row, obs.col, obs.data
        s = np.asarray(sup[r, q]).ravel()
        edge = (r != q) & (o >= t) & (s / (o + 1e-7) >= consensus)
        G = sparse.csr_matrix((np.ones(int(edge.sum())), (r[edge], q[edge])), shape=(n, n))
        n_comp, comp = connected_components(G, directed=False)
        if n_comp == n:
            continue
        Pm = sparse.csr_matrix((np.ones(n), (comp, np.arange(n))), shape=(n_comp, n))
        V, K = Pm @ V, Pm @ K
        V.data[:] = 1.0
        K.data[:] = 1.0
        member[member >= 0] = comp[member[member >= 0]]

    # node IDs 1..K in order of first appearance
    ids = np.zeros(M, np.int64)
    alive = member >= 0
    _, first_idx, inv = np.unique(member[alive], return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first_idx))
    ids[alive] = rank[inv.ravel()] + 1
    return MaskClusters(frame_of, local_of, ids)
