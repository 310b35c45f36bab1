"""Consistent per-view label maps voted onto a scene's 3D points.

The points are the scan's own mesh vertices when it has them (ScanNet `*_vh_clean_2.ply`, what
the ScanNet benchmark scores), else the fused pointmaps of all views on a voxel grid.

Voting: every view projects every point; a point inside the image whose depth agrees with the
view's depth map at its pixel (`|z - depth[v, u]| <= depth_tol + depth_tol_rel * depth[v, u]`) is
seen by that view and receives the view's label at that pixel. Occluded points (behind the depth
surface), points out of the image and points over missing depth get no vote.

A pixel with label 0 casts no vote. Label 0 means the segmenter put no mask there (gaps between
SAM masks, pixels the tracker left unassigned), not that the pixel shows "no object": counting it
as a vote for "nothing" would let the gaps of some views erase an object that other views
segment well. The price: a point seen labeled in one view and unlabeled in many others still gets
that label, with the confidence of its labeled votes alone (`votes` says how many views voted).

Per point: the label with the most votes (ties: the smallest ID), its share of the votes as
confidence, and the number of views that voted. Votes are accumulated sparsely as (point, label)
keys merged every few views, so memory grows with the distinct (point, label) pairs, never with
the number of views.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from lift3d.errors import InputError
from lift3d.recon.geometry import project
from lift3d.recon.scene import Frame

logger = logging.getLogger(__name__)

# (point, label) vote keys pack the point index above the label bits; labels are int32 >= 0
_LABEL_BITS = 31


@dataclass
class PointLabels:
    """The outcome of voting label maps onto P points (or splats)."""

    label: np.ndarray
    """[P] int32 winning instance ID, 0 = unlabeled (no view voted)."""
    confidence: np.ndarray
    """[P] float32 share of the votes (or weights) won by `label`, 0 where unlabeled."""
    votes: np.ndarray
    """[P] int32 number of views that voted for the point (any label)."""

    def __len__(self) -> int:
        return len(self.label)


def _frame_depth(frame: Frame) -> np.ndarray:
    """[H, W] depth along the optical axis: the frame's depth, else its pointmap's camera z."""
    if frame.depth is not None:
        return frame.depth
    if frame.pointmap is not None and frame.valid is not None:
        T = np.asarray(frame.T_world_camera, np.float64)
        z = (frame.pointmap.astype(np.float64) - T[:3, 3]) @ T[:3, 2]
        return np.where(frame.valid, z, 0).astype(np.float32)
    raise InputError(
        None, f"frame {frame.name} has neither depth nor a pointmap: visibility cannot be tested"
    )


def _check_view(
    frame: Frame, label_map: np.ndarray, *, need_depth: bool = True
) -> tuple[np.ndarray | None, np.ndarray]:
    """(depth [H, W] or None, label map [H, W] int64) of one view, checked against each other."""
    _check_pose(frame)
    depth = _frame_depth(frame) if need_depth else None
    expected = depth.shape if depth is not None else (frame.size[1], frame.size[0])
    return depth, _check_label_map(label_map, expected, f"frame {frame.name}")


def _check_pose(frame: Frame) -> None:
    if frame.T_world_camera is None:
        raise InputError(
            None, f"frame {frame.name} has no camera pose: points cannot be projected into it"
        )


def _check_label_map(label_map: np.ndarray, expected: tuple[int, int], view: str) -> np.ndarray:
    """The label map of `view` as int64, checked: shape (H, W) = expected, integer, 0..2^31-1."""
    label_map = np.asarray(label_map)
    if label_map.shape != tuple(expected):
        raise InputError(
            None,
            f"label map of {view} is {list(label_map.shape)} (H, W), the frame is {list(expected)}: they must match",
        )
    if label_map.dtype.kind not in "iu":
        raise InputError(None, f"label map of {view} must be integer, got {label_map.dtype}")
    if label_map.size and (label_map.min() < 0 or label_map.max() >= 1 << _LABEL_BITS):
        raise InputError(None, f"label map of {view} holds IDs outside 0..2^31-1")
    return label_map.astype(np.int64, copy=False)


def labeled_views(
    frames: Iterable[Frame], label_maps: Iterable[np.ndarray], *, need_depth: bool = True
) -> Iterator[tuple[Frame, np.ndarray | None, np.ndarray]]:
    """The views that lifting votes with, checked: (frame, depth, label map) per view.

    Args:
        frames: posed views (streamed: one is read at a time).
        label_maps: one [H, W] integer map per frame, at the frame's size (or its depth's).
        need_depth: also give each view's depth along the optical axis [H, W] (its depth map,
            else its pointmap's camera z); False gives None.

    Yields:
        (frame, depth [H, W] or None, label map [H, W] int64).

    Raises:
        InputError: the two sequences differ in length, a frame has no pose (or no depth when
            it is needed), or a label map of another size, not integer or outside 0..2^31-1.
    """
    frames_it, maps_it = iter(frames), iter(label_maps)
    n = 0
    end = object()
    while True:
        frame, label_map = next(frames_it, end), next(maps_it, end)
        if frame is end and label_map is end:
            return
        if frame is end or label_map is end:
            more = "label maps" if frame is end else "frames"
            raise InputError(
                None, f"frames and label maps differ in number: more {more} than the first {n}"
            )
        n += 1
        depth, labels = _check_view(frame, label_map, need_depth=need_depth)
        yield frame, depth, labels


def _check_points(points_world: np.ndarray) -> np.ndarray:
    points_world = np.asarray(points_world)
    if points_world.ndim != 2 or points_world.shape[1] != 3:
        raise InputError(
            None, f"points_world must have shape [P, 3], got {list(points_world.shape)}"
        )
    return points_world


def _view_votes(
    points_world: np.ndarray,  # [P, 3]
    finite: np.ndarray,  # [P] bool
    frame: Frame,
    depth: np.ndarray,  # [H, W]
    labels: np.ndarray,  # [H, W] int64
    depth_tol: float,
    depth_tol_rel: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(point index [M] int64, label [M] int64) of the points this view sees on labeled pixels."""
    idx, lab = _view_visibility(
        points_world, finite, frame, depth, labels, depth_tol, depth_tol_rel
    )
    return idx[lab > 0], lab[lab > 0]


def _merge_votes(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum `counts` over equal `keys`; returns sorted unique keys and their totals."""
    uniq, inverse = np.unique(keys, return_inverse=True)
    return uniq, np.bincount(inverse, weights=counts, minlength=len(uniq)).astype(np.int64)


def _decide(num_points: int, keys: np.ndarray, counts: np.ndarray) -> PointLabels:
    """Per point: the label with the most votes (ties: smallest), its share, and the vote count."""
    points = keys >> _LABEL_BITS
    labels = keys & ((1 << _LABEL_BITS) - 1)
    order = np.lexsort((labels, -counts, points))
    first = order[np.unique(points[order], return_index=True)[1]]
    total = np.bincount(points, weights=counts, minlength=num_points)
    label = np.zeros(num_points, np.int32)
    confidence = np.zeros(num_points, np.float32)
    label[points[first]] = labels[first]
    confidence[points[first]] = counts[first] / total[points[first]]
    return PointLabels(label=label, confidence=confidence, votes=total.astype(np.int32))


def drop_small_instances(result: PointLabels, min_instance_points: int) -> PointLabels:
    """Unlabel (label 0, confidence 0) the points of instances holding fewer than `min_instance_points`."""
    if min_instance_points <= 1:
        return result
    sizes = np.bincount(result.label)
    small = sizes[result.label] < min_instance_points
    small &= result.label > 0
    label = np.where(small, 0, result.label).astype(np.int32)
    confidence = np.where(small, 0, result.confidence).astype(np.float32)
    return PointLabels(label=label, confidence=confidence, votes=result.votes)


def lift_to_points(
    points_world: np.ndarray,  # [P, 3] float32 metres, world frame
    frames: Iterable[Frame],
    label_maps: Iterable[np.ndarray],  # each [H, W] int, 0 = unlabeled
    *,
    depth_tol: float = 0.05,
    depth_tol_rel: float = 0.01,
    min_instance_points: int = 0,
    chunk_views: int = 32,
) -> PointLabels:
    """Vote each view's labels onto the points it sees (see the module docstring).

    Args:
        points_world: [P, 3] points in the world frame of the frames' poses.
        frames: views with `K`, `T_world_camera` and `depth` (or a pointmap, whose camera z is
            used as depth) at the label maps' size. Consumed once, in step with `label_maps`.
        label_maps: one [H, W] integer map per frame, 0 = unlabeled (casts no vote).
        depth_tol: absolute visibility tolerance in metres.
        depth_tol_rel: tolerance growing with depth (fraction of the view's depth), for sensor
            noise that grows with distance.
        min_instance_points: instances won by fewer points are unlabeled (0: keep all).
        chunk_views: views whose votes are merged together (memory vs. merge count).

    Returns:
        PointLabels with label, confidence and votes per point.

    Raises:
        InputError: points not [P, 3], frames and label maps of different counts or sizes, a
            frame without pose or depth, negative label IDs.
    """
    points_world = _check_points(points_world)
    finite = np.isfinite(points_world).all(axis=1)
    P = len(points_world)
    if P >= 1 << (63 - _LABEL_BITS):
        raise InputError(None, f"too many points ({P}) for one call; split them")
    keys = np.zeros(0, np.int64)
    counts = np.zeros(0, np.int64)
    pending: list[np.ndarray] = []
    for n, (frame, depth, labels) in enumerate(labeled_views(frames, label_maps), start=1):
        idx, lab = _view_votes(points_world, finite, frame, depth, labels, depth_tol, depth_tol_rel)
        pending.append((idx << _LABEL_BITS) | lab)
        if n % chunk_views == 0:
            keys, counts = _merge_votes(
                np.concatenate([keys, *pending]),
                np.concatenate([counts, *(np.ones(len(k), np.int64) for k in pending)]),
            )
            pending.clear()
    if pending:
        keys, counts = _merge_votes(
            np.concatenate([keys, *pending]),
            np.concatenate([counts, *(np.ones(len(k), np.int64) for k in pending)]),
        )
    result = _decide(P, keys, counts)
    return drop_small_instances(result, min_instance_points)


def _lift_to_points_reference(
    points_world: np.ndarray,  # [P, 3]
    frames: Iterable[Frame],
    label_maps: Iterable[np.ndarray],
    *,
    depth_tol: float = 0.05,
    depth_tol_rel: float = 0.01,
    min_instance_points: int = 0,
) -> PointLabels:
    """Pure-Python twin of `lift_to_points`: one point at a time, votes counted in dicts."""
    P = len(points_world)
    votes: list[dict[int, int]] = [{} for _ in range(P)]
    for frame, label_map in zip(frames, label_maps, strict=True):
        depth = _frame_depth(frame)
        H, W = depth.shape
        K = np.asarray(frame.K, np.float64)
        T = np.asarray(frame.T_world_camera, np.float64)
        R_cw, t_wc = T[:3, :3].T, T[:3, 3]
        for i in range(P):
            p = np.asarray(points_world[i], np.float64)
            if not np.isfinite(p).all():
                continue
            x, y, z = R_cw @ (p - t_wc)
            if z <= 1e-9:
                continue
            # rounded from float32 as `project` returns pixels, so both agree at half-pixel ties
            xn, yn = x / z, y / z
            u = round(float(np.float32(K[0, 0] * xn + K[0, 1] * yn + K[0, 2])))
            v = round(float(np.float32(K[1, 1] * yn + K[1, 2])))
            if not (0 <= u < W and 0 <= v < H):
                continue
            d = float(depth[v, u])
            lab = int(label_map[v, u])
            # float32 z, as `project` returns it, so both agree on points exactly at the tolerance
            if d > 0 and lab > 0 and abs(float(np.float32(z)) - d) <= depth_tol + depth_tol_rel * d:
                votes[i][lab] = votes[i].get(lab, 0) + 1
    label = np.zeros(P, np.int32)
    confidence = np.zeros(P, np.float32)
    total = np.zeros(P, np.int32)
    for i, counts in enumerate(votes):
        if counts:
            best = min(counts, key=lambda k: (-counts[k], k))
            total[i] = sum(counts.values())
            label[i] = best
            confidence[i] = counts[best] / total[i]
    return drop_small_instances(
        PointLabels(label=label, confidence=confidence, votes=total), min_instance_points
    )


def _mesh_graph(xyz: np.ndarray, faces: np.ndarray):
    """Sparse [P, P] matrix of mesh edge lengths (metres)."""
    from scipy.sparse import coo_matrix

    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    w = np.linalg.norm(xyz[e[:, 0]].astype(np.float64) - xyz[e[:, 1]], axis=1)
    # a zero-length edge would read as "no edge" in a sparse matrix
    w = np.maximum(w, 1e-9)
    n = len(xyz)
    return coo_matrix((w, (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()


def fill_unseen(
    result: PointLabels,
    xyz: np.ndarray,  # [P, 3] mesh vertices, metres
    faces: np.ndarray,  # [F, 3] triangles
    *,
    radius: float = 0.1,
) -> tuple[PointLabels, int]:
    """Label the vertices no view saw from the nearest labeled vertex *along the mesh surface*.

    Vertices under furniture or on backs of objects are never seen by a scan's cameras; they
    take the label of the labeled vertex nearest along mesh edges (geodesic path length, not
    straight-line distance, so labels do not jump across gaps between objects), up to `radius`
    metres. Filled vertices keep confidence 0 and votes 0, so they can be told apart.

    Returns:
        The completed labels, and how many vertices were filled.
    """
    from scipy.sparse.csgraph import dijkstra

    if radius <= 0 or len(faces) == 0:
        return result, 0
    have = np.flatnonzero(result.label > 0)
    if not len(have) or len(have) == len(result.label):
        return result, 0
    dist, _, src = dijkstra(
        _mesh_graph(xyz, faces),
        directed=False,
        indices=have,
        limit=radius,
        min_only=True,
        return_predecessors=True,
    )
    fill = (result.label == 0) & np.isfinite(dist) & (src >= 0)
    label = result.label.copy()
    label[fill] = result.label[src[fill]]
    return PointLabels(label=label, confidence=result.confidence, votes=result.votes), int(
        fill.sum()
    )


#: the fewest unlabeled points an unseen object candidate must have to become an instance
#: (ScanNet's benchmark ignores instances under 100 vertices)
UNSEEN_MIN_POINTS = 100


def complete_labels(
    result: PointLabels,
    xyz: np.ndarray,  # [P, 3] the scene's points
    faces: np.ndarray | None,  # [F, 3] when the points are a mesh's vertices
    *,
    fill_radius: float,
    candidates=None,
    first_id: int | None = None,
) -> tuple[PointLabels, dict]:
    """What every lifting does after the vote: mesh vertices no view saw filled along the surface
    (`fill_unseen`, up to `fill_radius`), then unseen object candidates made instances of what
    is still unlabeled (`add_unseen_candidates`, judging how much of a candidate the views saw
    by the vote's labels, before the fill).

    `candidates`: a callable returning the scene's `ObjectCandidates`, called only when enough
    points are unlabeled (None: that step is skipped). `first_id`: the first ID
    the new instances may take (above every ID of the label maps, so an ID the views hold but the
    vote left without points is never reused; default: above the points' labels).

    Returns:
        The labels, and {"filled_unseen_points", "unseen_objects"} for the run's record (0 when
        that step is off).
    """
    info: dict = {"filled_unseen_points": 0, "unseen_objects": 0}
    seen = result.label
    if faces is not None and fill_radius > 0:
        result, info["filled_unseen_points"] = fill_unseen(result, xyz, faces, radius=fill_radius)
    if candidates is not None and (result.label == 0).sum() >= UNSEEN_MIN_POINTS:
        cand = candidates()
        # the share of a candidate the views labeled counts their votes only: the fill creeps
        # into an unseen object from its labeled neighbours (a window from its wall)
        result, new = add_unseen_candidates(
            result,
            cand.label,
            cand.structure,
            min_points=UNSEEN_MIN_POINTS,
            first_id=first_id,
            seen_label=seen,
        )
        info["unseen_objects"] = len(new)
    return result, info


def add_unseen_candidates(
    result: PointLabels,
    candidates: np.ndarray,  # [P] int object candidate per point, 0 = none
    structure: np.ndarray | None = None,  # [K + 1] bool, candidates that are floor / wall
    *,
    max_labeled_share: float = 0.2,
    min_points: int = UNSEEN_MIN_POINTS,
    first_id: int | None = None,
    seen_label: np.ndarray | None = None,  # [P] the labels the views voted (default: result's)
) -> tuple[PointLabels, list[int]]:
    """Give the scene's 3D object candidates that no view labeled instances of their own.

    A view labels only what it sees, and a subsample of a scan leaves whole objects unseen (30
    of scene0000_00's 300 frames see 22 of its 25 benchmark objects). Where the scene's geometry
    already separates them (`lift3d.consistency.geometric.object_candidates`: convexity and
    colour over the superpoints), such an object needs no view: each candidate (structure left
    out) of which at most `max_labeled_share` of the points are labeled gives its unlabeled points
    a new ID, when they are at least `min_points`. They keep confidence 0 and votes 0 (no view
    saw them), so they rank after every instance a view saw, and can be told apart. New IDs count
    up from `first_id` (default: one above the largest label; never below it). The labeled share
    is measured on `seen_label` when given (the vote before the surface fill), and the new IDs
    take only points that `result` leaves unlabeled.

    Returns:
        The labels with the new instances, and the new IDs (in candidate order).
    """
    candidates = np.asarray(candidates)
    if candidates.shape != result.label.shape:
        raise InputError(
            None,
            f"unseen candidates: {len(candidates)} candidate ids for {len(result.label)} points",
        )
    K = int(candidates.max(initial=0))
    if K == 0:
        return result, []
    seen_label = result.label if seen_label is None else np.asarray(seen_label)
    total = np.bincount(candidates, minlength=K + 1)
    unseen = np.bincount(candidates[seen_label == 0], minlength=K + 1)
    unlabeled = np.bincount(candidates[result.label == 0], minlength=K + 1)
    share = 1.0 - unseen / np.maximum(total, 1)
    pick = (share <= max_labeled_share) & (unlabeled >= min_points)
    pick[0] = False
    if structure is not None:
        pick[: len(structure)] &= ~np.asarray(structure, bool)[: K + 1]
    ks = np.flatnonzero(pick)
    if not len(ks):
        return result, []
    new_id = np.zeros(K + 1, np.int64)
    first = max(int(result.label.max(initial=0)) + 1, first_id or 0)
    new_id[ks] = np.arange(first, first + len(ks))
    label = result.label.copy()
    take = (label == 0) & (new_id[candidates] > 0)
    label[take] = new_id[candidates[take]]
    out = PointLabels(
        label=label.astype(np.int32), confidence=result.confidence, votes=result.votes
    )
    return out, new_id[ks].tolist()


def _fill_unseen_reference(
    result: PointLabels, xyz: np.ndarray, faces: np.ndarray, *, radius: float = 0.1
) -> np.ndarray:
    """Plain Dijkstra from every labeled vertex (heap, dict adjacency): the label of the nearest."""
    import heapq

    adj: dict[int, list[tuple[int, float]]] = {}
    for a, b, c in faces.tolist():
        for u, v in ((a, b), (b, c), (c, a)):
            w = max(float(np.linalg.norm(xyz[u].astype(np.float64) - xyz[v])), 1e-9)
            adj.setdefault(u, []).append((v, w))
            adj.setdefault(v, []).append((u, w))
    best = {int(i): (0.0, int(result.label[i])) for i in np.flatnonzero(result.label > 0)}
    heap = [(0.0, i, lab) for i, (_, lab) in best.items()]
    heapq.heapify(heap)
    while heap:
        d, u, lab = heapq.heappop(heap)
        if best.get(u, (np.inf,))[0] < d:
            continue
        for v, w in adj.get(u, []):
            nd = d + w
            if nd <= radius and nd < best.get(v, (np.inf,))[0]:
                best[v] = (nd, lab)
                heapq.heappush(heap, (nd, v, lab))
    out = result.label.copy()
    for v, (_, lab) in best.items():
        out[v] = lab
    return out


# ---------------------------------------------------------------------------------------------
# votes onto superpoints


def _visible_pixels(
    points_world: np.ndarray,
    finite: np.ndarray,
    frame: Frame,
    depth: np.ndarray,
    depth_tol: float,
    depth_tol_rel: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(point index [M], flat pixel v * W + u [M]) of every point the view sees."""
    H, W = depth.shape
    uv, z = project(points_world, frame.K, frame.T_world_camera)
    with np.errstate(invalid="ignore"):
        u = np.rint(uv[:, 0])
        v = np.rint(uv[:, 1])
        inside = finite & (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    idx = np.flatnonzero(inside)
    pix = v[idx].astype(np.int64) * W + u[idx].astype(np.int64)
    d = depth.reshape(-1)[pix]
    seen = (d > 0) & (np.abs(z[idx] - d) <= depth_tol + depth_tol_rel * d)
    return idx[seen], pix[seen]


def _view_visibility(
    points_world: np.ndarray,
    finite: np.ndarray,
    frame: Frame,
    depth: np.ndarray,
    labels: np.ndarray,
    depth_tol: float,
    depth_tol_rel: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(point index [M], label [M] incl. 0) of every point the view sees, labeled pixel or not."""
    idx, pix = _visible_pixels(points_world, finite, frame, depth, depth_tol, depth_tol_rel)
    return idx, labels.reshape(-1)[pix]


@dataclass(frozen=True)
class ViewVisibility:
    """Which points each view sees, and on which pixel: geometry alone, no labels.

    One pass over the views (`view_visibility`) then serves the label maps of any number of
    methods on the same views (`superpoint_view_table(..., visibility=...)`), without reading
    a frame again: what an evaluation of many methods on one scan needs. It holds every view's
    visible points (16 bytes each), so the streaming pipeline does not keep one.
    """

    point: list[np.ndarray]
    """Per view, [M_i] int64 index of each point it sees."""
    pixel: list[np.ndarray]
    """Per view, [M_i] int64 flat pixel (v * W + u) where it sees it."""
    shape: list[tuple[int, int]]
    """Per view, the (H, W) its label maps must have."""

    def __len__(self) -> int:
        return len(self.point)

    def labeled(self, label_maps: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(point index [M], label [M] incl. 0) per view, as `_view_visibility` gives them.

        Raises:
            InputError: more or fewer label maps than views, or one of another size, not
                integer or outside 0..2^31-1.
        """
        n = 0
        for n, label_map in enumerate(label_maps, 1):
            if n > len(self):
                raise InputError(
                    None, f"more label maps than the {len(self)} views whose visibility is known"
                )
            lab = _check_label_map(label_map, self.shape[n - 1], f"view {n - 1}")
            yield self.point[n - 1], lab.reshape(-1)[self.pixel[n - 1]]
        if n != len(self):
            raise InputError(None, f"{n} label maps for {len(self)} views")


def view_visibility(
    points_world: np.ndarray,  # [P, 3] float32 metres, world frame
    frames: Iterable[Frame],
    *,
    depth_tol: float = 0.05,
    depth_tol_rel: float = 0.01,
) -> ViewVisibility:
    """Which of the points every view sees, and where (the test of the module docstring)."""
    points_world = _check_points(points_world)
    finite = np.isfinite(points_world).all(axis=1)
    point, pixel, shape = [], [], []
    for frame in frames:
        _check_pose(frame)
        depth = _frame_depth(frame)
        idx, pix = _visible_pixels(points_world, finite, frame, depth, depth_tol, depth_tol_rel)
        point.append(idx)
        pixel.append(pix)
        shape.append(tuple(depth.shape))
    return ViewVisibility(point=point, pixel=pixel, shape=shape)


def superpoint_view_table(
    points_world: np.ndarray,  # [P, 3] float32 metres, world frame
    superpoint: np.ndarray,  # [P] int superpoint of each point, 0..S-1
    frames: Iterable[Frame] | None,
    label_maps: Iterable[np.ndarray],  # each [H, W] int, 0 = unlabeled
    *,
    depth_tol: float = 0.05,
    depth_tol_rel: float = 0.01,
    visibility: ViewVisibility | None = None,
) -> dict[str, np.ndarray]:
    """What every view sees of every superpoint: rows (view, superpoint, label, points).

    One row per (view, superpoint, label) with the number of the superpoint's points the view
    sees on pixels of that label; label 0 rows count the points it sees unlabeled. This table is
    all that superpoint voting and multi-view merging need, so views are read once.

    Args:
        visibility: `view_visibility(points_world, frames)` computed before: the frames are
            then not read (pass None) and the table is the same.

    Returns:
        {"view", "superpoint", "label", "count"}: [M] int64 arrays.
    """
    points_world = _check_points(points_world)
    superpoint = np.asarray(superpoint, np.int64)
    if superpoint.shape != (len(points_world),):
        raise InputError(
            None,
            f"superpoint ids must be [P] = [{len(points_world)}], got {list(superpoint.shape)}",
        )
    S = int(superpoint.max(initial=-1)) + 1
    if visibility is not None:
        views = visibility.labeled(label_maps)
    else:
        if frames is None:
            raise InputError(None, "superpoint_view_table needs the frames or their visibility")
        finite = np.isfinite(points_world).all(axis=1)
        views = (
            _view_visibility(points_world, finite, frame, depth, labels, depth_tol, depth_tol_rel)
            for frame, depth, labels in labeled_views(frames, label_maps)
        )
    rows: list[tuple[np.ndarray, ...]] = []
    for n, (idx, lab) in enumerate(views):
        key, cnt = np.unique(lab * S + superpoint[idx], return_counts=True)
        rows.append(
            (
                np.full(len(key), n, np.int64),
                key % max(S, 1),
                key // max(S, 1),
                cnt.astype(np.int64),
            )
        )
    if not rows:
        z = np.zeros(0, np.int64)
        return {"view": z, "superpoint": z, "label": z, "count": z}
    return {
        k: np.concatenate([r[j] for r in rows])
        for j, k in enumerate(("view", "superpoint", "label", "count"))
    }


@dataclass
class SuperpointLabels:
    """The outcome of voting onto superpoints."""

    label: np.ndarray
    """[S] int32 winning ID per superpoint, 0 = no labeled view saw it."""
    share: np.ndarray
    """[S] float32 share of the superpoint's labeled votes won by `label`."""
    views: np.ndarray
    """[S] int32 number of views that saw the superpoint (labeled or not)."""


def vote_superpoints(
    table: dict[str, np.ndarray],
    num_superpoints: int,
    *,
    mapping: np.ndarray | None = None,
    max_unlabeled_share: float = 1.0,
    mask_size_weight: float = 0.0,
) -> SuperpointLabels:
    """Per superpoint: the ID with the most point votes over all views (ties: the smallest).

    Args:
        table: `superpoint_view_table`'s rows.
        num_superpoints: S.
        mapping: optional [L] int array, old ID -> new ID (merged instances), applied first.
        max_unlabeled_share: a superpoint of which more than this share of the seen points lay
            on unlabeled pixels stays unlabeled (share 0), so that a mask spilling over its
            boundary in a few views does not paint what most views leave unmasked; 1 (the
            default here) lets any labeled vote win.
        mask_size_weight: each view's votes for an ID are divided by (the points that view sees
            of that ID's mask) ** this, so that where two masks of different granularity cover
            a superpoint (an object alone in one view, merged with its wall in another) the
            more specific one wins; 0 (the default here) counts every point alike.
    """
    sp, lab, cnt = table["superpoint"], table["label"], table["count"]
    if mapping is not None:
        lab = np.asarray(mapping)[lab]
    views = np.zeros(num_superpoints, np.int32)
    vs = np.unique(table["view"] * num_superpoints + sp)
    np.add.at(views, vs % num_superpoints, 1)
    on = lab > 0
    weight = cnt.astype(np.float64)
    if mask_size_weight > 0:
        _, mask = np.unique(table["view"] * (1 << _LABEL_BITS) + lab, return_inverse=True)
        weight /= np.bincount(mask, weights=weight)[mask] ** mask_size_weight
    key, inv = np.unique(sp[on] * (1 << _LABEL_BITS) + lab[on], return_inverse=True)
    tot = np.bincount(inv, weights=weight[on])
    result = _decide(num_superpoints, key, tot)
    label, share = result.label, result.confidence
    if max_unlabeled_share < 1.0:
        seen = np.bincount(sp, weights=cnt, minlength=num_superpoints)
        unlabeled = np.bincount(sp[~on], weights=cnt[~on], minlength=num_superpoints)
        off = unlabeled > max_unlabeled_share * seen
        label = np.where(off, 0, label).astype(np.int32)
        share = np.where(off, 0.0, share).astype(np.float32)
    return SuperpointLabels(label=label, share=share, views=views)


def lift_to_superpoints(
    superpoint: np.ndarray,  # [P] int superpoint per point
    votes: SuperpointLabels,
    *,
    min_instance_points: int = 0,
) -> PointLabels:
    """Every point takes its superpoint's label (points no view saw included) and its vote share.

    `votes` of PointLabels is the number of views that saw the point's superpoint.
    """
    superpoint = np.asarray(superpoint, np.int64)
    result = PointLabels(
        label=votes.label[superpoint].astype(np.int32),
        confidence=votes.share[superpoint].astype(np.float32),
        votes=votes.views[superpoint].astype(np.int32),
    )
    return drop_small_instances(result, min_instance_points)


def _vote_superpoints_reference(table: dict[str, np.ndarray], num_superpoints: int) -> np.ndarray:
    """Plain dictionaries: the winning label per superpoint."""
    acc: dict[int, dict[int, int]] = {}
    for s, lab, c in zip(
        table["superpoint"].tolist(), table["label"].tolist(), table["count"].tolist()
    ):
        if lab > 0:
            acc.setdefault(s, {}).setdefault(lab, 0)
            acc[s][lab] += c
    out = np.zeros(num_superpoints, np.int32)
    for s, counts in acc.items():
        out[s] = min(counts, key=lambda k: (-counts[k], k))
    return out
