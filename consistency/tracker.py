"""The MastSAM points tracker: one mask ID per object across all views.

MastSAM (the paper's Sec. III) carries each mask from one view to the next through a few prompt
points and re-prompts the segmenter there, so the mask keeps its ID. Every step is a function of
its own below, with its parameters in `TrackerConfig`; `MastSAM.step` strings them together:

1. first view: automatic masks (`Segmenter.generate`), overlap-filtered, one new ID each;
2. `select_representatives`: K-Means over a mask's pixels (u, v) and their 3D points, the
   pixels nearest the centroids are its prompt points;
3. `track_points`: each point follows its correspondence into the next view (`Scene.match_frames`),
   points without a match or with a match confidence below `min_match_conf` are dropped (the
   paper's confidence filtering);
4. `reprompt`: one batched `Segmenter.predict` for all tracked masks, each keeping its ID;
5. `filter_overlaps` + `paint_masks`: duplicates (IoU or containment) keep the better mask, a
   mask that reached another through a stray prompt point is trimmed, the rest is painted so
   that each pixel belongs to at most one ID;
6. `snap_to_auto` (our addition, `snap_iou`): each re-prompted mask takes the shape of the view's
   own automatic mask that matches it best (one to one, IoU >= 0.5). Prompt points spread over
   a mask that merged two objects fall on both in the next view, and the prompted mask is their
   union again, so without it one view's merge rides along the whole track; the view's own
   automatic masks carry that view's errors only. The object a snapped mask gives up is seeded
   in the next step;
7. `select_unmasked`: automatic masks that mostly cover unmasked pixels become new IDs, so the
   mask count stays in equilibrium instead of collapsing into a few growing masks (switched off
   by `unmasked_init=False`, the paper's Table II ablation);
8. `reidentify`: before a new mask gets a new ID, its 3D points are tested against the 3D memory
   (voxel sets) of the IDs absent from the view: an object that reappears gets its old ID back.

`segment_framewise` is the baseline: the same segmenter frame by frame, IDs independent per frame.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from lift3d.consistency.segmenter import Masks, makes_fragments
from lift3d.errors import InputError
from lift3d.recon.scene import Frame, Scene

if TYPE_CHECKING:
    from lift3d.consistency.segmenter import Segmenter

logger = logging.getLogger(__name__)


@dataclass
class TrackerConfig:
    """Parameters of every MastSAM step; each step can be switched off: `kmeans_use_3d`,
    `min_match_conf=0` (confidence filtering), `match_radius=0`, `overlap_filtering`,
    `min_point_support=0` (stray-point trimming: plain NMS), `unmasked_init`, `reidentify`,
    `min_mask_area=0`."""

    points_per_mask: int = 5
    """K of the K-Means representative selection: prompt points per mask."""
    kmeans_use_3d: bool = True
    """Cluster pixels on (u, v) and their 3D points (scaled), not on (u, v) alone."""
    kmeans_n_init: int = 1
    """K-Means restarts (scikit-learn's n_init); the best inertia wins."""
    kmeans_max_pixels: int = 2048
    """K-Means runs on a seeded random subsample of at most this many pixels of a mask (a wall at 640x480 has 10^5), and the prompt points are the sampled pixels nearest the centroids."""
    point_margin: int = 2
    """Prompt points are chosen at least this many pixels inside the mask's border when the eroded mask still has pixels: a border point lands on the neighbour after a 1-pixel error."""
    min_match_conf: float = 0.3
    """Representative points whose correspondence confidence is below this are dropped. Every correspondence provider gives confidence on one scale: 1 for a perfect match, falling to 0 at the provider's own acceptance limit (reprojection: the depth tolerance; optical flow: the forward-backward threshold; MASt3R: its descriptor-confidence threshold `match_min_conf`), so 0.3 keeps the matches at least 30% of the way from that limit to perfect (depth error or flow inconsistency under 70% of the tolerance; MASt3R confidence c with (c - m) / (1 + c) >= 0.3, c >= 1.86 for m = 1.001). 0 keeps every match the provider gives."""
    match_radius: float = 8.0
    """A point whose own pixel has no correspondence takes the nearest one of the same mask within this many pixels (sparse providers: MASt3R seeds every 8th pixel, flow every 4th); 0 keeps exact lookups only."""
    min_tracked_points: int = 1
    """A mask is re-prompted in the next view only if at least this many of its points landed."""
    overlap_filtering: bool = True
    """Resolve overlapping masks so that each pixel belongs to at most one ID. Off: no duplicate removal, and masks are painted in ID order (newer IDs over older)."""
    overlap_iou: float = 0.5
    """Two masks overlapping above this IoU (or containment) are the same: keep the better."""
    min_point_support: float = 0.5
    """Of two overlapping re-prompted masks, one whose prompt points lie mostly (share below this) outside the other reached it through a stray point: it is trimmed, not dropped."""
    unmasked_init: bool = True
    """Seed new IDs from automatic masks in regions left unmasked (the paper's Table II ablation switches this off)."""
    min_new_area: float = 0.002
    """A new mask must cover at least this fraction of the image in unmasked pixels."""
    min_new_fraction: float = 0.7
    """...and at least this fraction of it must be unmasked."""
    reidentify: bool = True
    """Give a vanished ID back when its object reappears (3D overlap with earlier views)."""
    reid_min_overlap: float = 0.5
    """Share of a new mask's voxels lying in an old ID's voxel memory needed to re-identify it."""
    reid_voxel: float = 0.05
    """Voxel size (metres) of the per-ID 3D memory used for re-identification."""
    min_mask_area: int = 32
    """Masks smaller than this (pixels) are dropped."""
    snap_iou: float | None = None
    """A re-prompted mask takes the shape of the view's own automatic mask that matches it best (one each) when their IoU reaches this, so a merge that multi-point prompts carried over from the previous view (the prompted mask covers two objects the view's automatic masks show apart) stops there, and the released object is seeded as new; 0 keeps the prompted shapes (the paper's tracker). None: 0.5 after object-level segmenters (SAM, SAM 2, simulated; the geometric one's prompted masks are its automatic masks already), 0 after the per-image classical one, whose automatic masks are fragments (snapping to them drops the colmap splat scene's matched IoU 0.75+ to 0.69)."""

    def resolve(self, segmenter_name: str | None) -> TrackerConfig:
        """This config with `snap_iou` decided for the segmenter named (None's rule)."""
        if self.snap_iou is not None:
            return self
        snap = 0.0 if makes_fragments(segmenter_name) else 0.5
        return replace(self, snap_iou=snap)


# ---------------------------------------------------------------------------------------------
# representative selection


def select_representatives(
    mask: np.ndarray,  # [H, W] bool
    pointmap: np.ndarray | None = None,  # [H, W, 3] float32 world metres
    valid: np.ndarray | None = None,  # [H, W] bool
    *,
    k: int = 5,
    use_3d: bool = True,
    margin: int = 2,
    max_pixels: int = 2048,
    n_init: int = 1,
    seed: int = 0,
) -> np.ndarray:  # [k', 2] int64 (u, v), k' <= k
    """Prompt points of one mask: the pixels nearest the K-Means centroids of its pixels.

    The features are (u, v) and, with `use_3d` and a pointmap, the world points scaled so that
    their total variance equals that of (u, v) (pixel-comparable units): points spread over the
    object's surface, not only over its image.

    Args:
        mask: the mask.
        pointmap, valid: world points of the view; pixels not valid are clustered on (u, v) only
            when fewer than k valid ones remain, else left out.
        k: number of clusters (the config's `points_per_mask`).
        use_3d: cluster on 3D points too.
        margin: choose among pixels at least this far inside the border when any remain.
        max_pixels: K-Means fits a seeded subsample of at most this many pixels, among which the
            points are chosen.
        n_init: K-Means restarts.
        seed: K-Means and subsampling seed.

    Returns:
        Distinct pixels of the mask, (u, v); fewer than k when the mask has fewer pixels.
    """
    vs, us = _candidate_pixels(mask, margin, k)
    if len(us) == 0:
        return np.zeros((0, 2), np.int64)
    feat = np.stack([us, vs], axis=1).astype(np.float64)
    if use_3d and pointmap is not None:
        ok = np.isfinite(pointmap[vs, us]).all(axis=1)
        if valid is not None:
            ok &= valid[vs, us]
        if ok.sum() >= k:
            us, vs, feat = us[ok], vs[ok], feat[ok]
            xyz = pointmap[vs, us].astype(np.float64)
            var_xyz = xyz.var(axis=0).sum()
            if var_xyz > 0:
                scale = np.sqrt(feat.var(axis=0).sum() / var_xyz)
                feat = np.concatenate([feat, xyz * scale], axis=1)
    if len(us) <= k:
        return np.stack([us, vs], axis=1).astype(np.int64)
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    if len(feat) > max_pixels:
        sample = np.sort(rng.choice(len(feat), max_pixels, replace=False))
        us, vs, feat = us[sample], vs[sample], feat[sample]
    # one thread: at ~2k pixels OpenMP's start-up costs 20x the clustering itself (0.4 s vs
    # 0.02 s a mask on 2 busy cores), and masks are many
    with threadpool_limits(1):
        km = KMeans(n_clusters=k, n_init=n_init, random_state=int(rng.integers(2**31 - 1))).fit(
            feat
        )
    # nearest pixel of the mask to each centroid: always inside, unlike the centroid itself
    d2 = ((feat[None, :, :] - km.cluster_centers_[:, None, :]) ** 2).sum(axis=2)
    pick = np.unique(d2.argmin(axis=1))
    return np.stack([us[pick], vs[pick]], axis=1).astype(np.int64)


def _candidate_pixels(mask: np.ndarray, margin: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(v, u) of the mask's pixels at least `margin` inside its border, or all of them."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return rows, cols
    v0, v1, u0, u1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    vs, us = np.nonzero(mask[v0:v1, u0:u1])
    vs, us = vs + v0, us + u0
    if margin <= 0:
        return vs, us
    from scipy.ndimage import binary_erosion

    crop = np.pad(mask[v0:v1, u0:u1], 1)  # the image border is a border too
    inner = binary_erosion(crop, iterations=margin)[1:-1, 1:-1]
    if inner.sum() < k:
        return vs, us
    iv, iu = np.nonzero(inner)
    return iv + v0, iu + u0


# ---------------------------------------------------------------------------------------------
# points tracking


@dataclass
class MatchTable:
    """Correspondences of one view pair indexed by the source pixel.

    Attributes:
        index: [H, W] int32 match index of each source pixel, -1 where it has none.
        uv_j: [M, 2] float32 target pixels (u, v).
        conf: [M] float32 confidence.
    """

    index: np.ndarray
    uv_j: np.ndarray
    conf: np.ndarray

    @staticmethod
    def build(
        uv_i: np.ndarray, uv_j: np.ndarray, conf: np.ndarray, size: tuple[int, int]
    ) -> MatchTable:
        """Index `Scene.match_frames` output ([M, 2], [M, 2], [M]) on a (W, H) source view."""
        W, H = size
        index = np.full((H, W), -1, np.int32)
        uv = np.rint(np.asarray(uv_i, np.float64)).astype(np.int64).reshape(-1, 2)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
        ids = np.flatnonzero(inside)
        index[uv[ids, 1], uv[ids, 0]] = ids
        return MatchTable(
            index, np.asarray(uv_j, np.float32).reshape(-1, 2), np.asarray(conf, np.float32).ravel()
        )


def track_points(
    points: np.ndarray,  # [P, 2] int (u, v) in the source view
    mask: np.ndarray,  # [H, W] bool, the mask the points belong to (source view)
    table: MatchTable,
    *,
    size: tuple[int, int],
    min_conf: float = 0.3,
    radius: float = 8.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Carry a mask's prompt points into the next view through its correspondences.

    A point takes its own pixel's match, or else the match of the nearest pixel of the same mask
    within `radius` that has one, taken as it is: shifting it by the offset between the two
    source pixels would put a point hidden in the next view onto its occluder. It is dropped when no
    match is found, when the match confidence is below `min_conf`, or when it lands outside the
    (W, H) target view.

    Returns:
        uv: [P', 2] float32 tracked points (u, v) in the target view.
        conf: [P'] float32 their match confidence.
    """
    W, H = size
    points = np.asarray(points, np.int64).reshape(-1, 2)
    if len(points) == 0:
        return np.zeros((0, 2), np.float32), np.zeros((0,), np.float32)
    idx = table.index[points[:, 1], points[:, 0]].astype(np.int64)
    missing = np.flatnonzero(idx < 0)
    if len(missing) and radius > 0:
        mv, mu = np.nonzero(mask & (table.index >= 0))
        if len(mv):
            d2 = (mu[None, :] - points[missing, 0:1]) ** 2 + (
                mv[None, :] - points[missing, 1:2]
            ) ** 2
            near = d2.argmin(axis=1)
            ok = d2[np.arange(len(missing)), near] <= radius * radius
            hit = missing[ok]
            idx[hit] = table.index[mv[near[ok]], mu[near[ok]]]
    found = idx >= 0
    uv = np.zeros((len(points), 2), np.float32)
    conf = np.zeros(len(points), np.float32)
    uv[found] = table.uv_j[idx[found]]
    conf[found] = table.conf[idx[found]]
    keep = found & (conf >= min_conf)
    keep &= (uv[:, 0] > -0.5) & (uv[:, 0] < W - 0.5) & (uv[:, 1] > -0.5) & (uv[:, 1] < H - 0.5)
    return uv[keep], conf[keep]


# ---------------------------------------------------------------------------------------------
# re-prompting, overlaps


def reprompt(
    segmenter: Segmenter,
    image: np.ndarray,  # [H, W, 3] uint8
    prompts: dict[int, np.ndarray],  # ID -> [P_i, 2] float (u, v)
    *,
    geometry: np.ndarray | None = None,  # [H, W, 3] world pointmap
) -> tuple[np.ndarray, Masks]:
    """One batched `Segmenter.predict` for every tracked mask (positive points, padded with -1).

    Returns:
        ids: [B] int64 the IDs, in the order of `masks`.
        masks: B masks [B, H, W] and scores [B].
    """
    H, W = image.shape[:2]
    ids = np.fromiter(prompts, np.int64, count=len(prompts))
    if len(ids) == 0:
        return ids, Masks.empty((W, H))
    P = max(len(p) for p in prompts.values())
    points = np.zeros((len(ids), P, 2), np.float32)
    labels = np.full((len(ids), P), -1, np.int64)
    for b, p in enumerate(prompts.values()):
        points[b, : len(p)] = p
        labels[b, : len(p)] = 1
    out = segmenter.predict(image, points, labels, geometry=geometry)
    _check_masks(segmenter, out, len(ids), (H, W))
    return ids, out


def _pairwise_intersections(masks: np.ndarray) -> np.ndarray:  # [K, H, W] bool -> [K, K] int64
    """Pixel counts of every pair's intersection, over the pixels covered twice or more only."""
    flat = masks.reshape(len(masks), masks.shape[1] * masks.shape[2])
    multi = flat.sum(axis=0, dtype=np.int32) >= 2
    sub = flat[:, multi].astype(np.float32)
    # float32 sums of 0/1 are exact up to 2^24 pixels
    inter = np.rint(sub @ sub.T).astype(np.int64)
    np.fill_diagonal(inter, flat.sum(axis=1))
    return inter


def _pairwise_intersections_reference(masks: np.ndarray) -> np.ndarray:
    K = len(masks)
    return np.array(
        [[int((masks[a] & masks[b]).sum()) for b in range(K)] for a in range(K)], np.int64
    ).reshape(K, K)


def filter_overlaps(
    masks: np.ndarray,  # [K, H, W] bool
    scores: np.ndarray,  # [K] float
    ids: np.ndarray,  # [K] int, lower = older
    *,
    iou: float = 0.5,
    points: Sequence[np.ndarray] | None = None,  # K x [P_k, 2] (u, v) prompt points
    min_support: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resolve masks that are the same object: IoU or containment (intersection over the smaller
    mask) above `iou`.

    Masks are visited best first (higher score, then older ID), as in non-maximum suppression;
    a mask that duplicates one already kept is dropped, and the kept mask takes the older of the
    two IDs: the better mask, the ID with the longer history (a newer ID that found the same
    object must not take it over for a higher score in one view).

    With the prompt points of each mask, a pair is first asked who owns the overlap: a mask whose
    own points mostly (share below `min_support`) lie outside the other reached it through a
    stray point (one that crossed an occlusion edge, or a segmenter that merged two objects in
    this view). It is no duplicate but keeps only its pixels outside the other mask.

    Returns:
        keep: [K] bool, masks kept.
        masks: [K, H, W] the masks after trimming (a copy when any was trimmed).
        ids: [K] the IDs after duplicates handed their older ID to the mask kept.
    """
    K = len(masks)
    keep = np.zeros(K, bool)
    new_ids = np.array(ids, copy=True)
    if K == 0:
        return keep, masks, new_ids
    touching = _pairwise_intersections(masks) > 0
    pts = None
    if points is not None:
        H, W = masks.shape[1:]
        pts = [
            np.clip(
                np.rint(np.asarray(p, np.float64)).astype(np.int64).reshape(-1, 2),
                0,
                [W - 1, H - 1],
            )
            for p in points
        ]
    out = masks
    for a in np.lexsort((np.asarray(ids), -np.asarray(scores, np.float64))):
        dup_of, trims = -1, []
        for b in np.flatnonzero(keep & touching[a]):
            n = int((out[a] & out[b]).sum())
            area_a, area_b = int(out[a].sum()), int(out[b].sum())
            if n == 0 or not (
                n / max(area_a + area_b - n, 1) > iou or n / max(min(area_a, area_b), 1) > iou
            ):
                continue
            sup_a = sup_b = 1.0
            if pts is not None and len(pts[a]) and len(pts[b]):
                sup_a = float(out[b][pts[a][:, 1], pts[a][:, 0]].mean())  # a's points inside b
                sup_b = float(out[a][pts[b][:, 1], pts[b][:, 0]].mean())
            if sup_a >= min_support and sup_b >= min_support:
                dup_of = b
                break
            trims.append((a, b) if sup_a < sup_b else (b, a))  # (trimmed, owner)
        if dup_of >= 0:
            new_ids[dup_of] = min(new_ids[dup_of], new_ids[a])
            continue
        keep[a] = True
        for loser, owner in trims:
            if out is masks:
                out = masks.copy()
            out[loser] &= ~out[owner]
    return keep, out, new_ids


def _filter_overlaps_reference(
    masks: np.ndarray, scores: np.ndarray, ids: np.ndarray, *, iou: float = 0.5
) -> np.ndarray:
    """Point-free `filter_overlaps` by the definition: plain NMS on IoU or containment."""
    keep: list[int] = []
    for a in sorted(range(len(masks)), key=lambda k: (-float(scores[k]), int(ids[k]))):
        dup = False
        for b in keep:
            n = (masks[a] & masks[b]).sum()
            sa, sb = masks[a].sum(), masks[b].sum()
            dup |= bool(n and (n / (sa + sb - n) > iou or n / min(sa, sb) > iou))
        if not dup:
            keep.append(a)
    return np.isin(np.arange(len(masks)), keep)


def paint_masks(
    masks: np.ndarray,  # [K, H, W] bool
    ids: np.ndarray,  # [K] int > 0
    *,
    smaller_wins: bool = True,
) -> np.ndarray:  # [H, W] int32
    """A label map from masks. A pixel claimed by several masks goes to the smallest one (SAM's
    automatic generator paints the same way): a prompt mask that leaked over a neighbour loses
    those pixels to the neighbour's own mask, and a part inside a whole stays visible. With
    `smaller_wins=False` the masks are painted in the order given, later over earlier."""
    K = len(masks)
    H, W = masks.shape[1:] if masks.ndim == 3 else (0, 0)
    labels = np.zeros((H, W), np.int32)
    order = np.argsort(-masks.sum(axis=(1, 2)), kind="stable") if smaller_wins else np.arange(K)
    for k in order:
        labels[masks[k]] = ids[k]
    return labels


def drop_small(labels: np.ndarray, min_area: int) -> np.ndarray:  # [H, W] int -> [H, W] int32
    """Unlabel the IDs with fewer than `min_area` pixels."""
    labels = np.asarray(labels, np.int32)
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    small = ids[counts < min_area]
    if len(small):
        labels = np.where(np.isin(labels, small), 0, labels).astype(np.int32)
    return labels


def disjoint_masks(
    auto: Masks, *, min_area: int = 32, iou: float = 0.5, filtering: bool = True
) -> Masks:
    """Automatic masks made disjoint (the first view's masks, and the frame-by-frame baseline):
    masks below `min_area` dropped, duplicates filtered (`filter_overlaps`), contested pixels to
    the smaller mask (`paint_masks`), masks left below `min_area` dropped. Order is kept."""
    H, W = auto.masks.shape[1:]
    keep = np.flatnonzero(auto.masks.sum(axis=(1, 2)) >= min_area)
    m, s = auto.masks[keep], auto.scores[keep]
    if filtering and len(m):
        keep, m, _ = filter_overlaps(m, s, np.arange(len(m)), iou=iou)
        m, s = m[keep], s[keep]
    order = np.arange(1, len(m) + 1)
    painted = drop_small(paint_masks(m, order, smaller_wins=filtering), min_area)
    alive = np.isin(order, painted)
    if not alive.any():
        return Masks.empty((W, H))
    return Masks(painted[None] == order[alive, None, None], s[alive].astype(np.float32))


# ---------------------------------------------------------------------------------------------
# unmasked region initialization, re-identification


def snap_to_auto(
    labels: np.ndarray,  # [H, W] int, tracked IDs (0 = none)
    auto: Masks,
    *,
    min_iou: float = 0.5,
) -> np.ndarray:  # [H, W] int32
    """Each tracked mask replaced by the automatic mask that matches it best, one to one.

    Pairs (ID, automatic mask) are taken by IoU, highest first, while it is at least `min_iou`;
    an automatic mask or ID already taken is skipped. Snapped masks are painted in that order
    onto pixels not yet painted, then the IDs left unmatched keep their own free pixels. Pixels
    a snapped ID gave up stay unlabeled (the tracker seeds new masks there).
    """
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, np.int32)
    if len(auto) == 0 or not labels.any():
        return labels.astype(np.int32)
    L = int(labels.max()) + 1
    area = np.bincount(labels.ravel(), minlength=L)
    J = len(auto)
    inter = np.zeros((J, L), np.int64)
    for j in range(J):
        inter[j] = np.bincount(labels[auto.masks[j]], minlength=L)[:L]
    inter[:, 0] = 0
    a_area = auto.masks.reshape(J, -1).sum(axis=1)
    iou = inter / np.maximum(a_area[:, None] + area[None, :] - inter, 1)
    jj, ii = np.nonzero(iou >= min_iou)
    order = np.lexsort((ii, jj, -iou[jj, ii]))
    used_j, used_i = set(), set()
    for k in order:
        j, i = int(jj[k]), int(ii[k])
        if j in used_j or i in used_i:
            continue
        used_j.add(j)
        used_i.add(i)
        free = auto.masks[j] & (out == 0)
        out[free] = i
    rest = (out == 0) & (labels > 0) & ~np.isin(labels, list(used_i))
    out[rest] = labels[rest]
    return out


def select_unmasked(
    auto: Masks,
    covered: np.ndarray,  # [H, W] bool, pixels already holding an ID
    *,
    min_new_area: float = 0.002,
    min_new_fraction: float = 0.7,
    min_area: int = 0,
) -> Masks:
    """Automatic masks admitted as new objects, restricted to the unmasked pixels.

    A mask is admitted when its unmasked part covers at least `min_new_area` of the image (and
    `min_area` pixels) and at least `min_new_fraction` of the mask. Masks are taken largest
    unmasked part first and each admitted one covers its pixels, so the result is disjoint.

    Returns:
        The admitted masks [K', H, W] (unmasked pixels only) and their scores.
    """
    H, W = covered.shape
    if len(auto) == 0:
        return Masks.empty((W, H))
    taken = covered.copy()
    free = (auto.masks & ~covered[None]).sum(axis=(1, 2))
    need = max(min_new_area * H * W, min_area)
    out, scores = [], []
    for k in np.argsort(-free, kind="stable"):
        new = auto.masks[k] & ~taken
        n = int(new.sum())
        if n >= need and n >= min_new_fraction * auto.masks[k].sum():
            out.append(new)
            scores.append(auto.scores[k])
            taken |= new
    if not out:
        return Masks.empty((W, H))
    return Masks(np.stack(out), np.asarray(scores, np.float32))


def voxel_keys(points: np.ndarray, voxel: float) -> np.ndarray:  # [M, 3] metres -> [M] int64
    """One int64 key per voxel of edge `voxel` (21 bits per axis: +-10^6 voxels)."""
    q = np.floor(np.asarray(points, np.float64) / voxel).astype(np.int64) + (1 << 20)
    q = np.clip(q, 0, (1 << 21) - 1)
    return (q[:, 0] << 42) | (q[:, 1] << 21) | q[:, 2]


def reidentify(
    keys: np.ndarray,  # [U] int64 unique voxel keys of the new mask
    memory: dict[int, np.ndarray],  # ID -> sorted unique voxel keys seen
    candidates: Iterable[int],
    *,
    min_overlap: float = 0.5,
) -> int:
    """The candidate ID whose memory holds the largest share (>= `min_overlap`) of the new mask's
    voxels, or 0 when none does."""
    if len(keys) == 0:
        return 0
    best, best_share = 0, min_overlap
    for i in candidates:
        mem = memory.get(int(i))
        if mem is None or len(mem) == 0:
            continue
        share = np.isin(keys, mem, assume_unique=True).mean()
        if share >= best_share and (best == 0 or share > best_share):
            best, best_share = int(i), share
    return best


def _ids_voxels(
    labels: np.ndarray, pointmap: np.ndarray, valid: np.ndarray | None, voxel: float
) -> dict[int, np.ndarray]:
    """ID -> unique voxel keys of its valid pixels in one view."""
    ok = labels > 0
    ok &= np.isfinite(pointmap).all(axis=-1)
    if valid is not None:
        ok &= valid
    if not ok.any():
        return {}
    lab = labels[ok]
    keys = voxel_keys(pointmap[ok], voxel)
    # grouping by ID, then 1-D uniques: a 2-column np.unique(axis=0) is ~10x slower
    order = np.argsort(lab, kind="stable")
    lab, keys = lab[order], keys[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    ends = np.r_[starts[1:], len(lab)]
    return {int(lab[a]): np.unique(keys[a:b]) for a, b in zip(starts, ends)}


def _ids_voxels_reference(
    labels: np.ndarray, pointmap: np.ndarray, valid: np.ndarray, voxel: float
) -> dict[int, np.ndarray]:
    ok = (labels > 0) & np.isfinite(pointmap).all(axis=-1) & valid
    return {
        int(i): np.unique(voxel_keys(pointmap[ok & (labels == i)], voxel))
        for i in np.unique(labels[ok])
    }


# ---------------------------------------------------------------------------------------------
# the tracker


class MastSAM:
    """The MastSAM points tracker over a sequence of views, one `step` per view.

    State (the previous view and its label map, the per-ID 3D memory and the next
    free ID) lives on the instance; `warm_start` rebuilds it from label maps already written.

    Args:
        segmenter: a `Segmenter` (`ClassicalSegmenter`, `SamSegmenter`, ...).
        config: the tracker's parameters.
        seed: K-Means seed; the same input and seed give the same IDs.
    """

    def __init__(
        self, segmenter: Segmenter, config: TrackerConfig = TrackerConfig(), *, seed: int = 0
    ):
        self.segmenter = segmenter
        self.config = config.resolve(getattr(segmenter, "name", None))
        self.seed = int(seed)
        self._prev: Frame | None = None
        self._labels: np.ndarray | None = None  # [H, W] int32 of the previous view
        self._memory: dict[int, np.ndarray] = {}
        self._next_id = 1

    @property
    def num_ids(self) -> int:
        """How many IDs were handed out so far (IDs are 1..num_ids)."""
        return self._next_id - 1

    def step(self, frame: Frame, *, scene: Scene) -> np.ndarray:  # [H, W] int32
        """Label one view: the first call initialises, later ones track from the previous view.

        Args:
            frame: the next view (with a pointmap for 3D K-Means and re-identification).
            scene: its scene, for `Scene.match_frames(previous, frame)`.

        Returns:
            [H, W] int32 label map, 0 = unlabeled; all zeros when nothing was segmented.
        """
        cfg = self.config
        self._check_frame(frame)
        H, W = frame.image.shape[:2]
        ids = np.zeros(0, np.int64)
        masks = Masks.empty((W, H))
        prompts: dict[int, np.ndarray] = {}
        if self._prev is not None and self._labels is not None and self._labels.any():
            prompts = self._prompts(frame, scene)
            ids, masks = reprompt(self.segmenter, frame.image, prompts, geometry=frame.pointmap)
        labels = self._compose(ids, masks, prompts)
        new = Masks.empty((W, H))
        auto = None
        if self._prev is not None and cfg.snap_iou > 0 and labels.any():
            auto = self._generate(frame)
            labels = drop_small(snap_to_auto(labels, auto, min_iou=cfg.snap_iou), cfg.min_mask_area)
        if self._prev is None:
            new = disjoint_masks(
                self._generate(frame),
                min_area=cfg.min_mask_area,
                iou=cfg.overlap_iou,
                filtering=cfg.overlap_filtering,
            )
        elif cfg.unmasked_init:
            new = select_unmasked(
                self._generate(frame) if auto is None else auto,
                labels > 0,
                min_new_area=cfg.min_new_area,
                min_new_fraction=cfg.min_new_fraction,
                min_area=cfg.min_mask_area,
            )
        labels = self._admit(frame, labels, new)
        self._remember(frame, labels)
        self._prev, self._labels = frame, labels
        return labels

    def warm_start(self, frame: Frame, labels: np.ndarray) -> None:
        """Resume from a label map already written for `frame` (as if `step` had produced it).

        Fed all previous views in order, it rebuilds the 3D memory and the next free ID too.
        """
        labels = np.asarray(labels)
        if labels.shape != frame.image.shape[:2] or not np.issubdtype(labels.dtype, np.integer):
            raise InputError(
                None,
                f"warm_start: labels must be integer [H, W] = {frame.image.shape[:2]}; got {labels.dtype} {labels.shape}",
            )
        if labels.size and labels.min() < 0:
            raise InputError(None, "warm_start: label IDs must be >= 0")
        labels = labels.astype(np.int32)
        self._check_frame(frame)
        self._remember(frame, labels)
        self._next_id = max(self._next_id, int(labels.max(initial=0)) + 1)
        self._prev, self._labels = frame, labels

    # -- steps ------------------------------------------------------------------------------

    def _remember(self, frame: Frame, labels: np.ndarray) -> None:
        """Add the view's 3D points of every ID to that ID's voxel memory."""
        if not self.config.reidentify or frame.pointmap is None:
            return
        for i, keys in _ids_voxels(
            labels, frame.pointmap, frame.valid, self.config.reid_voxel
        ).items():
            old = self._memory.get(i)
            self._memory[i] = keys if old is None else np.union1d(old, keys)

    def _check_frame(self, frame: Frame) -> None:
        img = frame.image
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
            raise InputError(
                None,
                f"frame {frame.name}: image must be [H, W, 3]; got {getattr(img, 'shape', None)}",
            )
        if self._prev is not None and self._prev.image.shape != img.shape:
            raise InputError(
                None,
                f"frame {frame.name} is {img.shape[1]}x{img.shape[0]}, the previous one {self._prev.size[0]}x{self._prev.size[1]}: one working resolution per scene",
            )

    def _generate(self, frame: Frame) -> Masks:
        H, W = frame.image.shape[:2]
        out = self.segmenter.generate(frame.image, geometry=frame.pointmap)
        _check_masks(self.segmenter, out, None, (H, W))
        return out

    def _prompts(self, frame: Frame, scene: Scene) -> dict[int, np.ndarray]:
        """Representative points of every mask of the previous view, tracked into `frame`."""
        from scipy.ndimage import find_objects

        cfg, prev, labels = self.config, self._prev, self._labels
        uv_i, uv_j, conf = scene.match_frames(prev, frame)
        table = MatchTable.build(uv_i, uv_j, conf, prev.size)
        prompts: dict[int, np.ndarray] = {}
        for i, box in enumerate(find_objects(labels), start=1):
            if box is None:
                continue
            mask = np.zeros(labels.shape, bool)
            mask[box] = labels[box] == i
            if mask.sum() < cfg.min_mask_area:
                continue
            reps = select_representatives(
                mask,
                prev.pointmap,
                prev.valid,
                k=cfg.points_per_mask,
                use_3d=cfg.kmeans_use_3d,
                margin=cfg.point_margin,
                max_pixels=cfg.kmeans_max_pixels,
                n_init=cfg.kmeans_n_init,
                seed=int(np.random.SeedSequence([self.seed, prev.index, i]).generate_state(1)[0]),
            )
            uv, _ = track_points(
                reps,
                mask,
                table,
                size=frame.size,
                min_conf=cfg.min_match_conf,
                radius=cfg.match_radius,
            )
            if len(uv) >= max(cfg.min_tracked_points, 1):
                prompts[i] = uv
        return prompts

    def _compose(self, ids: np.ndarray, masks: Masks, prompts: dict[int, np.ndarray]) -> np.ndarray:
        """Label map of the re-prompted masks: small ones dropped, overlaps resolved."""
        cfg = self.config
        H, W = masks.masks.shape[1:]
        if len(ids) == 0:
            return np.zeros((H, W), np.int32)
        area = masks.masks.sum(axis=(1, 2))
        keep = area >= cfg.min_mask_area
        ids, m, s = ids[keep], masks.masks[keep], masks.scores[keep]
        if cfg.overlap_filtering:
            pts = [prompts[int(i)] for i in ids]
            keep, m, ids = filter_overlaps(
                m, s, ids, iou=cfg.overlap_iou, points=pts, min_support=cfg.min_point_support
            )
            ids, m, s = ids[keep], m[keep], s[keep]
            labels = paint_masks(m, ids, smaller_wins=True)
        else:
            order = np.argsort(ids, kind="stable")
            labels = paint_masks(m[order], ids[order], smaller_wins=False)
        return drop_small(labels, cfg.min_mask_area)

    def _admit(self, frame: Frame, labels: np.ndarray, new: Masks) -> np.ndarray:
        """Paint new masks onto unlabeled pixels, each with a re-identified or a new ID."""
        cfg = self.config
        if len(new) == 0:
            return labels
        labels = labels.copy()
        present = set(np.unique(labels[labels > 0]).tolist())
        use_reid = cfg.reidentify and frame.pointmap is not None and bool(self._memory)
        ok3d = None
        if use_reid:
            ok3d = np.isfinite(frame.pointmap).all(axis=-1)
            if frame.valid is not None:
                ok3d &= frame.valid
        order = np.argsort(-new.masks.sum(axis=(1, 2)), kind="stable")
        for k in order:
            m = new.masks[k] & (labels == 0)
            if m.sum() < cfg.min_mask_area:
                continue
            i = 0
            if use_reid:
                keys = np.unique(voxel_keys(frame.pointmap[m & ok3d], cfg.reid_voxel))
                absent = [j for j in self._memory if j not in present]
                i = reidentify(keys, self._memory, absent, min_overlap=cfg.reid_min_overlap)
                if i:
                    logger.debug("frame %s: ID %d re-identified", frame.name, i)
            if i == 0:
                i = self._next_id
                self._next_id += 1
            labels[m] = i
            present.add(i)
        return labels


def _check_masks(segmenter, out: Masks, count: int | None, hw: tuple[int, int]) -> None:
    """Fail loudly when a segmenter breaks the protocol (wrong mask count or size)."""
    m = out.masks
    if (
        m.ndim != 3
        or tuple(m.shape[1:]) != hw
        or (count is not None and len(m) != count)
        or len(out.scores) != len(m)
    ):
        want = f"[{count if count is not None else 'K'}, {hw[0]}, {hw[1]}]"
        raise ValueError(
            f"segmenter {getattr(segmenter, 'name', segmenter)!r} returned masks {m.shape} and scores {np.shape(out.scores)}; expected {want} and [K]"
        )


def track_scene(
    scene: Scene,
    segmenter: Segmenter,
    config: TrackerConfig = TrackerConfig(),
    *,
    seed: int = 0,
    frames: Sequence[int] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """MastSAM over a scene's views in order, each view loaded once.

    Args:
        scene: the scene (needs a correspondence provider for more than one view).
        segmenter: a `Segmenter`.
        config: tracker parameters.
        seed: K-Means seed.
        frames: indices of the views to track, in order (default: all).

    Yields:
        (frame index, [H, W] int32 label map), IDs shared by all views.
    """
    indices = list(range(len(scene))) if frames is None else [int(i) for i in frames]
    for i in indices:
        if not 0 <= i < len(scene):
            raise InputError(scene.root, f"frame index {i} out of range (0..{len(scene) - 1})")
    tracker = MastSAM(segmenter, config, seed=seed)
    for i in indices:
        yield i, tracker.step(scene[i], scene=scene)


def segment_framewise(
    scene: Scene,
    segmenter: Segmenter,
    *,
    min_mask_area: int = TrackerConfig.min_mask_area,
    overlap_iou: float = TrackerConfig.overlap_iou,
    seed: int = 0,
    frames: Sequence[int] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """The baseline: automatic masks per view, overlap-resolved, IDs independent per view.

    The IDs 1..K of each view are a seeded random permutation: ordering them by area would
    already carry an accidental cross-view association, which this baseline must not have.

    Yields:
        (frame index, [H, W] int32 label map with IDs 1..K of that view only).
    """
    indices = list(range(len(scene))) if frames is None else [int(i) for i in frames]
    for i in indices:
        if not 0 <= i < len(scene):
            raise InputError(scene.root, f"frame index {i} out of range (0..{len(scene) - 1})")
    for i in indices:
        frame = scene[i]
        H, W = frame.image.shape[:2]
        out = segmenter.generate(frame.image, geometry=frame.pointmap)
        _check_masks(segmenter, out, None, (H, W))
        m = disjoint_masks(out, min_area=min_mask_area, iou=overlap_iou).masks
        labels = paint_masks(m, np.arange(1, len(m) + 1))
        present = np.unique(labels[labels > 0])
        lut = np.zeros(int(labels.max(initial=0)) + 1, np.int32)
        lut[present] = np.random.default_rng([seed, i]).permutation(len(present)) + 1
        yield i, lut[labels]
