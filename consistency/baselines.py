"""SAM3D-style association of per-frame masks: bidirectional merging in a binary hierarchy.

SAM3D (Yang et al., "SAM3D: Segment Anything in 3D Scenes", 2023; Pointcept/SegmentAnything3D)
gives per-frame SAM masks global IDs without any tracking: every frame's masks become a voxelized
point cloud whose points carry their mask's group ID, and neighbouring clouds are merged pairwise,
bottom-up (frames 0+1, 2+3, ...; then (0+1)+(2+3), ...) until one cloud is left. Merging two
clouds A and B ("bidirectional merging", its `cal_2_scenes` / `cal_group`):

1. B's group IDs are shifted past A's. Every point of B takes its nearest point of A within
   `1.5 * voxel`; for each group i of B, the group j of A holding most of its matched points wins,
   and i becomes j when `overlap(i, j) / min(|i|, |j|) >= ratio` (group sizes in points of the
   whole clouds). A point of B without a group takes the group of its match.
2. The same the other way round, with B's updated IDs as the reference: A's IDs are shifted past
   B's, each group of A takes B's best group when the same ratio test passes, else keeps its
   fresh ID. So a group of A that pass 1 did not absorb can still join, and two groups of A that
   overlap one group of B end in one.
3. The two clouds are concatenated, IDs renumbered 1..K, and the result voxelized again (one point
   per voxel, A's first; SAM3D picks a random one).

`sam3d_merge` is that on world pointmaps. `sam3d_merge_2d` is the same hierarchy for video with no
depth (DAVIS): a node is a run of consecutive frames, and two adjacent runs overlap only across the
boundary pair of frames (t, t + 1), through the pixel correspondences of that pair (optical flow;
the same forward-backward-checked pairs serve both directions, where SAM3D queries nearest
neighbours each way); group sizes are counted on the correspondence grid of the two boundary frames.

Both return the per-frame label maps with the merged IDs, so the result is lifted, scored and
compared exactly like the other methods. Departures from SAM3D, stated: voxels keep their first
(labeled) point instead of a random one; a point that adopts its match's group (step 1) changes
the cloud used by later merges, not the label maps; small groups are not removed (the ScanNet
evaluation drops instances under 100 vertices anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lift3d.errors import InputError


def pairwise_indices(n: int) -> list[list[int]]:
    """SAM3D's pairing of one hierarchy level: [[0, 1], [2, 3], ..., [n - 1]]."""
    return [[i, i + 1] if i + 1 < n else [i] for i in range(0, n, 2)]


def match_groups(
    g_ref: np.ndarray,  # [M] int group of each pair's reference point, 0 = none
    g_new: np.ndarray,  # [M] int group of each pair's new point, 0 = none
    size_ref: np.ndarray,  # [K_ref + 1] points per reference group (index = ID)
    size_new: np.ndarray,  # [K_new + 1] points per new group
    *,
    ratio: float = 0.5,
) -> dict[int, int]:
    """SAM3D's `cal_group` decision: which new groups join which reference group.

    For every new group with matched points, the reference group holding most of them (ties:
    the smallest ID) wins; the new group joins it when `overlap / min(size_new, size_ref) >= ratio`.

    Returns:
        {new ID: reference ID} for the groups that join.
    """
    g_ref = np.asarray(g_ref, np.int64)
    g_new = np.asarray(g_new, np.int64)
    both = (g_ref > 0) & (g_new > 0)
    if not both.any():
        return {}
    pairs, count = np.unique(
        np.stack([g_new[both], g_ref[both]], axis=1), axis=0, return_counts=True
    )
    order = np.lexsort((pairs[:, 1], -count, pairs[:, 0]))
    first = order[np.unique(pairs[order, 0], return_index=True)[1]]
    out = {}
    for (new, ref), c in zip(pairs[first], count[first]):
        denom = min(int(size_new[new]), int(size_ref[ref]))
        if denom > 0 and c / denom >= ratio:
            out[int(new)] = int(ref)
    return out


def _relabel(values: np.ndarray, mapping: dict[int, int], shift: int = 0) -> np.ndarray:
    """IDs > 0 shifted by `shift`, then those in `mapping` (keys after the shift) replaced."""
    values = np.asarray(values, np.int64)
    out = np.where(values > 0, values + shift, 0)
    if mapping:
        lut = np.arange(max(int(out.max(initial=0)), max(mapping)) + 1, dtype=np.int64)
        lut[np.fromiter(mapping, np.int64, len(mapping))] = np.fromiter(
            mapping.values(), np.int64, len(mapping)
        )
        out = lut[out]
    return out


@dataclass
class _Node:
    """A run of frames merged so far: each frame's local mask IDs -> the node's group IDs."""

    frames: list[int]
    luts: dict[int, np.ndarray]  # frame -> [K_f + 1] int64, lut[0] = 0
    xyz: np.ndarray | None = None  # [P, 3] voxelized cloud (3D only)
    keys: np.ndarray | None = None  # [P] int64 voxel keys
    group: np.ndarray | None = None  # [P] int64 group per point, 0 = none

    def max_id(self) -> int:
        m = max((int(lut.max(initial=0)) for lut in self.luts.values()), default=0)
        if self.group is not None and len(self.group):
            m = max(m, int(self.group.max()))
        return m

    def apply(self, mapping: dict[int, int], shift: int = 0) -> None:
        self.luts = {f: _relabel(lut, mapping, shift) for f, lut in self.luts.items()}
        if self.group is not None:
            self.group = _relabel(self.group, mapping, shift)


def _renumber(left: _Node, right: _Node) -> None:
    """IDs of the two nodes (about to become one) renumbered 1..K in order of value."""
    parts = [*left.luts.values(), *right.luts.values()]
    if left.group is not None:
        parts += [left.group, right.group]
    ids = np.unique(np.concatenate([p.ravel() for p in parts]))
    ids = ids[ids > 0]
    mapping = {int(v): k for k, v in enumerate(ids, start=1)}
    left.apply(mapping)
    right.apply(mapping)


def _local_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([H, W] local IDs 1..K, [K + 1] original ID of each local ID) of one frame."""
    ids, inverse = np.unique(labels, return_inverse=True)
    if len(ids) and ids[0] == 0:
        return inverse.reshape(labels.shape), ids
    return (inverse + 1).reshape(labels.shape), np.r_[0, ids]


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.dtype.kind not in "iu":
        raise InputError(
            None, f"labels must be integer [N, H, W], got {labels.dtype} {list(labels.shape)}"
        )
    if labels.size and labels.min() < 0:
        raise InputError(None, "labels must be >= 0 (0 = unlabeled)")
    return labels


def _hierarchy(nodes: list[_Node], merge) -> _Node:
    """Merge nodes pairwise, level by level (SAM3D's `while len(pcd_list) != 1`)."""
    while len(nodes) > 1:
        nodes = [
            merge(nodes[p[0]], nodes[p[1]]) if len(p) == 2 else nodes[p[0]]
            for p in pairwise_indices(len(nodes))
        ]
    return nodes[0]


def _bidirectional(left: _Node, right: _Node, pass_new_to_ref, ratio: float) -> None:
    """Steps 1 and 2 of the module docstring, in place on both nodes.

    `pass_new_to_ref(ref, new)` returns (g_ref [M], g_new [M], size_ref, size_new, adopt) for the
    pairs matching the new node's points to the reference's, `adopt(new, g_ref)` or None.
    """
    right.apply({}, shift=left.max_id())
    g_ref, g_new, size_ref, size_new, adopt = pass_new_to_ref(left, right)
    right.apply(match_groups(g_ref, g_new, size_ref, size_new, ratio=ratio))
    if adopt is not None:
        adopt(right)
    left.apply({}, shift=right.max_id())
    g_ref, g_new, size_ref, size_new, adopt = pass_new_to_ref(right, left)
    left.apply(match_groups(g_ref, g_new, size_ref, size_new, ratio=ratio))
    if adopt is not None:
        adopt(left)
    _renumber(left, right)


def _final_labels(local: list[np.ndarray], root: _Node) -> np.ndarray:
    return np.stack([root.luts[f][local[f]] for f in range(len(local))]).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# 2D: consecutive frames through correspondences


def sam3d_merge_2d(
    labels: np.ndarray,  # [N, H, W] int, per-frame IDs (0 = unlabeled)
    matches: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],  # N - 1 sets, frame t -> t + 1
    *,
    ratio: float = 0.5,
    stride: int = 4,
) -> np.ndarray:  # [N, H, W] int32
    """SAM3D's bidirectional hierarchical merging for video without depth.

    Args:
        labels: per-frame label maps whose IDs mean nothing across frames (e.g. the framewise
            baseline).
        matches: `matches[t] = (uv_t [M, 2], uv_t1 [M, 2], conf [M])` pixel correspondences
            (u, v) from frame t to t + 1, e.g. `lift3d.recon.flow.flow_matches`.
        ratio: SAM3D's merge ratio (overlap over the smaller group).
        stride: the correspondences' sampling grid (every `stride`-th pixel in u and v, as
            `flow_matches` samples): group sizes of the boundary frames are counted on it, so
            that they are in the same units as the overlaps.

    Returns:
        Label maps with IDs shared by all frames, 1..K.

    Raises:
        InputError: labels not [N, H, W] integers, or `len(matches) != N - 1`.
    """
    labels = _check_labels(labels)
    N, H, W = labels.shape
    if len(matches) != max(N - 1, 0):
        raise InputError(
            None, f"expected {max(N - 1, 0)} match sets (frames t, t+1), got {len(matches)}"
        )
    if stride < 1:
        raise InputError(None, f"stride must be >= 1, got {stride}")
    if N == 0:
        return np.zeros((0, H, W), np.int32)
    local = []
    nodes = []
    for f in range(N):
        loc, ids = _local_labels(labels[f])
        local.append(loc)
        nodes.append(_Node(frames=[f], luts={f: np.arange(len(ids), dtype=np.int64)}))

    def grid_sizes(node: _Node, f: int) -> np.ndarray:
        g = node.luts[f][local[f][::stride, ::stride]]
        return np.bincount(g.ravel(), minlength=node.max_id() + 1)

    def pairs(ref: _Node, new: _Node):
        # the two nodes are adjacent runs: their boundary frames are consecutive
        a, b = (ref, new) if ref.frames[-1] < new.frames[0] else (new, ref)
        t = a.frames[-1]
        uv_t, uv_t1 = (
            np.rint(np.asarray(x, np.float64).reshape(-1, 2)).astype(np.int64)
            for x in matches[t][:2]
        )
        ok = (uv_t[:, 0] >= 0) & (uv_t[:, 0] < W) & (uv_t[:, 1] >= 0) & (uv_t[:, 1] < H)
        ok &= (uv_t1[:, 0] >= 0) & (uv_t1[:, 0] < W) & (uv_t1[:, 1] >= 0) & (uv_t1[:, 1] < H)
        ga = a.luts[t][local[t][uv_t[ok, 1], uv_t[ok, 0]]]
        gb = b.luts[t + 1][local[t + 1][uv_t1[ok, 1], uv_t1[ok, 0]]]
        sa, sb = grid_sizes(a, t), grid_sizes(b, t + 1)
        if ref is a:
            return ga, gb, sa, sb, None
        return gb, ga, sb, sa, None

    def merge(left: _Node, right: _Node) -> _Node:
        _bidirectional(left, right, pairs, ratio)
        return _Node(frames=left.frames + right.frames, luts={**left.luts, **right.luts})

    return _final_labels(local, _hierarchy(nodes, merge))


# ---------------------------------------------------------------------------------------------
# 3D: voxelized point clouds


def _voxelize(
    xyz: np.ndarray, keys: np.ndarray, group: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One point per voxel: the first labeled one, else the first (stable in input order)."""
    if len(keys) == 0:
        return xyz, keys, group
    order = np.lexsort((np.arange(len(keys)), group == 0, keys))
    first = order[np.unique(keys[order], return_index=True)[1]]
    first.sort()
    return xyz[first], keys[first], group[first]


def sam3d_merge(
    labels: np.ndarray,  # [N, H, W] int, per-frame IDs (0 = unlabeled)
    pointmaps: np.ndarray,  # [N, H, W, 3] float32 world metres
    valid: np.ndarray,  # [N, H, W] bool
    *,
    voxel: float = 0.05,
    ratio: float = 0.5,
    match_radius: float = 1.5,
) -> np.ndarray:  # [N, H, W] int32
    """SAM3D's bidirectional hierarchical merging of per-frame masks in 3D.

    Args:
        labels: per-frame label maps (IDs independent per frame).
        pointmaps, valid: each frame's world points (metres) and where they are known.
        voxel: voxel edge in metres (SAM3D: 0.05).
        ratio: merge ratio (overlap over the smaller group; SAM3D: 0.5).
        match_radius: a point's match is its nearest point of the other cloud within
            `match_radius * voxel` (SAM3D: 1.5).

    Returns:
        Label maps with IDs shared by all frames, 1..K; pixels with no 3D point keep their mask's
        ID too (the mask is merged through its other pixels).

    Raises:
        InputError: arrays of mismatched shapes, or a non-positive voxel.
    """
    from scipy.spatial import cKDTree

    from lift3d.consistency.tracker import voxel_keys

    labels = _check_labels(labels)
    pointmaps = np.asarray(pointmaps)
    valid = np.asarray(valid, bool)
    if pointmaps.shape != labels.shape + (3,) or valid.shape != labels.shape:
        raise InputError(
            None,
            f"labels [N, H, W], pointmaps [N, H, W, 3] and valid [N, H, W] must agree; got "
            f"{list(labels.shape)}, {list(pointmaps.shape)}, {list(valid.shape)}",
        )
    if not voxel > 0:
        raise InputError(None, f"voxel must be positive (metres), got {voxel}")
    N = len(labels)
    if N == 0:
        return np.zeros(labels.shape, np.int32)
    radius = match_radius * voxel
    local = []
    nodes = []
    for f in range(N):
        loc, ids = _local_labels(labels[f])
        local.append(loc)
        ok = valid[f] & np.isfinite(pointmaps[f]).all(axis=-1)
        xyz = pointmaps[f][ok].astype(np.float32)
        xyz, keys, group = _voxelize(xyz, voxel_keys(xyz, voxel), loc[ok].astype(np.int64))
        nodes.append(
            _Node(
                frames=[f],
                luts={f: np.arange(len(ids), dtype=np.int64)},
                xyz=xyz,
                keys=keys,
                group=group,
            )
        )

    def pairs(ref: _Node, new: _Node):
        size_ref = np.bincount(ref.group, minlength=ref.max_id() + 1)
        size_new = np.bincount(new.group, minlength=new.max_id() + 1)
        empty = np.zeros(0, np.int64)
        if len(ref.xyz) == 0 or len(new.xyz) == 0:
            return empty, empty, size_ref, size_new, None
        dist, idx = cKDTree(ref.xyz).query(new.xyz, k=1, distance_upper_bound=radius)
        hit = np.isfinite(dist)
        g_ref = ref.group[idx[hit]]
        g_new = new.group[hit]

        def adopt(node: _Node) -> None:
            # SAM3D: a new point without a group takes its match's group
            take = np.flatnonzero(hit)[(g_new == 0) & (g_ref > 0)]
            node.group = node.group.copy()
            node.group[take] = g_ref[(g_new == 0) & (g_ref > 0)]

        return g_ref, g_new, size_ref, size_new, adopt

    def merge(left: _Node, right: _Node) -> _Node:
        _bidirectional(left, right, pairs, ratio)
        xyz, keys, group = _voxelize(
            np.concatenate([left.xyz, right.xyz]),
            np.concatenate([left.keys, right.keys]),
            np.concatenate([left.group, right.group]),
        )
        return _Node(
            frames=left.frames + right.frames,
            luts={**left.luts, **right.luts},
            xyz=xyz,
            keys=keys,
            group=group,
        )

    return _final_labels(local, _hierarchy(nodes, merge))


# ---------------------------------------------------------------------------------------------
# The reference line: perfect association of the same masks


def oracle_association(
    labels: np.ndarray,  # [N, H, W] int, per-frame IDs (0 = unlabeled)
    gt: np.ndarray,  # [N, H, W] int GT object per pixel (0 = none)
) -> np.ndarray:  # [N, H, W] int32
    """The same masks with GT-consistent IDs: each mask takes the GT object covering most of it.

    The upper bound of any association of these masks: what is lost against it is the
    association's fault, what is lost with it the masks'. Two masks of one object in a view (a
    split) get the object's one ID; a mask lying mostly on pixels of no GT object keeps an ID of
    its own (GT IDs first, then one fresh ID per such mask).

    Raises:
        InputError: labels and gt of different shapes, or not integer.
    """
    labels = _check_labels(labels)
    gt = np.asarray(gt)
    if gt.shape != labels.shape or gt.dtype.kind not in "iu":
        raise InputError(
            None, f"gt must be integer {list(labels.shape)}, got {gt.dtype} {list(gt.shape)}"
        )
    out = np.zeros(labels.shape, np.int32)
    fresh = int(gt.max(initial=0))
    for f in range(len(labels)):
        lab, g = labels[f].astype(np.int64), gt[f].astype(np.int64)
        on = lab > 0
        if not on.any():
            continue
        pairs, count = np.unique(np.stack([lab[on], g[on]], axis=1), axis=0, return_counts=True)
        order = np.lexsort(
            (pairs[:, 1], -count, pairs[:, 0])
        )  # per mask: most pixels, then smallest GT ID
        first = order[np.unique(pairs[order, 0], return_index=True)[1]]
        lut = np.zeros(int(lab.max()) + 1, np.int64)
        for k, obj in pairs[first]:
            if obj == 0:
                fresh += 1
                obj = fresh
            lut[k] = obj
        out[f] = lut[lab]
    return out
