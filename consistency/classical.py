"""A weight-free segmenter: superpixels merged into object-level regions (the embedded default).

Four deterministic steps, each a function below:

1. `_superpixels`: SLIC over a per-pixel feature of CIELAB colour and, when a world pointmap is
   given, camera-facing surface normals and world coordinates, so superpixels follow creases and
   depth discontinuities as well as colour edges (a grey object on a grey floor still gets its
   own superpixels).
2. `_adjacency`: the region adjacency graph of the superpixels. A boundary is a *barrier* where
   the 3D points jump (an occlusion edge) or where the two surfaces meet in a concave crease (an
   object standing on the floor, a wall meeting the floor). Convex creases (a box's edge, a
   cylinder's side) are not barriers, after LCCP (Stein et al., "Object Partitioning using Local
   Convexity", CVPR 2014).
3. `_merge`: greedy merging of adjacent regions, cheapest first, never across a boundary that is
   mostly barrier. The cost mixes the distance of the regions' mean colours with the colour step
   along their common boundary, discounted across convex creases; a pair merges while its cost
   is within Felzenszwalb & Huttenlocher's adaptive slack (IJCV 2004): each region's internal
   variation plus a margin that shrinks as the region grows.
4. `_absorb_small`: regions below a minimum area join their most similar neighbour.

`predict` grows each prompt set's mask from the merged regions under its positive points; a
region that also holds a negative point is split at the superpixel level between the positive
and negative seeds (nearest seed along the superpixel graph by colour).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from lift3d.checks import check_array
from lift3d.consistency.segmenter import Masks
from lift3d.errors import InputError


@dataclass
class ClassicalConfig:
    """Parameters of the classical segmenter. Lengths in pixels are at the input resolution."""

    superpixel_area: float = 48.0
    """Target area (pixels) of one SLIC superpixel; their number follows the image size."""
    max_superpixels: int = 1200
    """Cap on the number of superpixels (keeps large images fast)."""
    compactness: float = 10.0
    """SLIC compactness: higher gives squarer superpixels, lower follows edges more closely."""
    lightness_weight: float = 0.5
    """Weight of CIELAB L against a and b in colour distances: shading mostly changes lightness, so a lit and a shaded face of one object stay close."""
    merge_threshold: float = 20.0
    """Merge margin (weighted CIELAB units) of a single superpixel: the main knob between over- and under-segmentation."""
    size_exponent: float = 0.5
    """A region of n superpixels accepts merges up to its internal variation plus merge_threshold / n ** size_exponent (0: a fixed threshold)."""
    boundary_weight: float = 0.5
    """Share of the merge cost given to the colour step across the common boundary; the rest is the distance of the two regions' mean colours."""
    normal_weight: float = 20.0
    """Weight of the unit normals in the SLIC feature (a 90 degree crease ~ 28 colour units)."""
    coord_weight: float = 60.0
    """Weight per metre of the world coordinates in the SLIC feature."""
    jump_ratio: float = 4.0
    """A neighbouring pixel pair is a depth jump when its 3D gap is this many times larger than the smallest gap near it along the same row or column ..."""
    min_jump: float = 0.03
    """... and larger than this (metres)."""
    normal_scale: float = 96.0
    """Normals are measured over a baseline of min(H, W) / normal_scale pixels (1 at 96 rows)."""
    crease_angle: float = 25.0
    """Two superpixels meeting in a concave crease sharper than this (degrees) are a barrier; in a convex one (two faces of one object), their colour cost is discounted."""
    convex_discount: float = 0.5
    """Colour cost factor across a convex crease (1: no discount)."""
    barrier_fraction: float = 0.5
    """Regions never merge while more than this share of their common boundary is barrier."""
    min_region_fraction: float = 0.002
    """Regions smaller than this share of the image join their most similar neighbour and are not returned by `generate`."""

    def setup(self) -> ClassicalSegmenter:
        """The segmenter these parameters describe."""
        return ClassicalSegmenter(self)


@dataclass
class _Segmentation:
    """The cached segmentation of one frame."""

    superpixels: np.ndarray  # [H, W] int32 superpixel id, 0..S-1
    region_of: np.ndarray  # [S] int32 region id of each superpixel, 0..R-1
    regions: np.ndarray  # [H, W] int32 region id
    scores: np.ndarray  # [R] float32
    areas: np.ndarray  # [R] int64 pixels
    edges: np.ndarray  # [E, 2] int32 adjacent superpixel pairs (a < b)
    edge_cost: np.ndarray  # [E] float32 colour distance of the pair's mean colours


class ClassicalSegmenter:
    """Superpixels merged by colour, depth discontinuities and surface convexity.

    Implements the `Segmenter` protocol. The segmentation of the last frame is cached on the
    image (and geometry) array objects, so `generate` and every `predict` of one frame segment it
    once.

    Args:
        config: parameters; defaults suit 128x96 to 640x480 indoor frames.
    """

    name = "classical"

    def __init__(self, config: ClassicalConfig | None = None):
        self.config = config or ClassicalConfig()
        # (id(image), shape, id(geometry)) -> segmentation; the arrays are kept so ids stay unique
        self._cache: tuple[tuple, np.ndarray, np.ndarray | None, _Segmentation] | None = None

    def describe(self) -> dict:
        """What made the masks, for run.json."""
        from dataclasses import asdict

        return {"segmenter": "classical-2d", "config": asdict(self.config)}

    def _segmentation(self, image: np.ndarray, geometry: np.ndarray | None) -> _Segmentation:
        """The over-segmentation and merged regions of one frame, computed once per frame."""
        image = check_array(image, ["H", "W", 3], dtype=np.uint8, name="image")
        if geometry is not None:
            geometry = check_array(geometry, [*image.shape[:2], 3], name="geometry")
        key = (id(image), image.shape, None if geometry is None else (id(geometry), geometry.shape))
        if self._cache is not None and self._cache[0] == key:
            return self._cache[3]
        seg = _segment(image, geometry, self.config)
        self._cache = (key, image, geometry, seg)
        return seg

    def generate(self, image: np.ndarray, *, geometry: np.ndarray | None = None) -> Masks:
        """Object-level masks of a [H, W, 3] uint8 image, largest first.

        Args:
            image: [H, W, 3] uint8 RGB.
            geometry: optional [H, W, 3] world pointmap (metres), zeros or NaN where unknown.

        Returns:
            Masks with masks [K, H, W] bool (disjoint) and scores [K] float32 in [0, 1].
        """
        seg = self._segmentation(image, geometry)
        min_area = self.config.min_region_fraction * image.shape[0] * image.shape[1]
        keep = np.flatnonzero(seg.areas >= min_area)
        keep = keep[np.argsort(-seg.areas[keep], kind="stable")]
        if len(keep) == 0:
            return Masks.empty((image.shape[1], image.shape[0]))
        masks = seg.regions[None] == keep[:, None, None]
        return Masks(masks, seg.scores[keep].astype(np.float32))

    def predict(
        self,
        image: np.ndarray,  # [H, W, 3] uint8
        points: np.ndarray,  # [B, P, 2] float (u, v) pixels
        point_labels: np.ndarray,  # [B, P] int: 1 foreground, 0 background, -1 padding
        *,
        geometry: np.ndarray | None = None,
    ) -> Masks:
        """One mask per prompt set: the merged regions under its positive points.

        A region holding both positive and negative points of one set is split between them at
        the superpixel level, so a mask never contains a negative point. Points outside the image
        are ignored; a set with no positive point inside gives an empty mask with score 0.

        Returns:
            Masks with masks [B, H, W] bool and scores [B] float32.
        """
        points = np.asarray(points, dtype=np.float64)
        point_labels = np.asarray(point_labels)
        if points.ndim != 3 or points.shape[2] != 2 or point_labels.shape != points.shape[:2]:
            raise InputError(
                None,
                f"prompts must be points [B, P, 2] and labels [B, P]; got {points.shape} and {point_labels.shape}",
            )
        seg = self._segmentation(image, geometry)
        H, W = seg.regions.shape
        B = points.shape[0]
        masks = np.zeros((B, H, W), bool)
        scores = np.zeros((B,), np.float32)
        uv = np.rint(points).astype(np.int64)
        inside = (uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & (uv[..., 1] < H)
        inside &= np.isfinite(points).all(-1)
        for b in range(B):
            pos = inside[b] & (point_labels[b] == 1)
            neg = inside[b] & (point_labels[b] == 0)
            sp_pos = np.unique(seg.superpixels[uv[b, pos, 1], uv[b, pos, 0]])
            sp_neg = np.unique(seg.superpixels[uv[b, neg, 1], uv[b, neg, 0]])
            keep_sp = _grow(seg, sp_pos, sp_neg)
            if len(keep_sp) == 0:
                continue
            sel = np.zeros(len(seg.region_of), bool)
            sel[keep_sp] = True
            masks[b] = sel[seg.superpixels]
            regions = np.unique(seg.region_of[keep_sp])
            scores[b] = float(np.average(seg.scores[regions], weights=seg.areas[regions]))
        return Masks(masks, scores)


def _grow(seg: _Segmentation, sp_pos: np.ndarray, sp_neg: np.ndarray) -> np.ndarray:
    """Superpixels of the mask grown from positive seed superpixels, avoiding negative ones."""
    sp_pos = np.setdiff1d(sp_pos, sp_neg)
    if len(sp_pos) == 0:
        return sp_pos
    regions = np.unique(seg.region_of[sp_pos])
    neg_regions = np.unique(seg.region_of[sp_neg])
    whole = np.setdiff1d(regions, neg_regions)
    keep = [np.flatnonzero(np.isin(seg.region_of, whole))]
    for r in np.intersect1d(regions, neg_regions):
        members = np.flatnonzero(seg.region_of == r)
        seeds_pos = sp_pos[seg.region_of[sp_pos] == r]
        seeds_neg = sp_neg[seg.region_of[sp_neg] == r]
        keep.append(_split_region(seg, members, seeds_pos, seeds_neg))
    return np.concatenate(keep)


def _split_region(
    seg: _Segmentation, members: np.ndarray, seeds_pos: np.ndarray, seeds_neg: np.ndarray
) -> np.ndarray:
    """Members of a region nearer (colour geodesic) to a positive seed than to any negative one."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    local = -np.ones(len(seg.region_of), np.int64)
    local[members] = np.arange(len(members))
    inner = (local[seg.edges[:, 0]] >= 0) & (local[seg.edges[:, 1]] >= 0)
    a, b = local[seg.edges[inner, 0]], local[seg.edges[inner, 1]]
    # a small constant keeps zero-cost edges as edges and prefers fewer hops on ties
    w = seg.edge_cost[inner].astype(np.float64) + 1e-3
    n = len(members)
    graph = coo_matrix(
        (np.concatenate([w, w]), (np.concatenate([a, b]), np.concatenate([b, a]))), shape=(n, n)
    ).tocsr()
    seeds = np.concatenate([local[seeds_pos], local[seeds_neg]])
    _, _, source = dijkstra(graph, indices=seeds, min_only=True, return_predecessors=True)
    positive = np.isin(source, local[seeds_pos])
    return members[positive]


def _segment(image: np.ndarray, geometry: np.ndarray | None, cfg: ClassicalConfig) -> _Segmentation:
    from scipy.ndimage import gaussian_filter
    from skimage.color import rgb2lab

    lab = rgb2lab(image).astype(np.float32)
    lab_w = lab * np.array([cfg.lightness_weight, 1.0, 1.0], np.float32)
    geo = _Geometry.of(geometry, cfg) if geometry is not None else None
    if geo is not None and not geo.valid.any():
        geo = None
    sp = _superpixels(lab, geo, cfg)
    smooth = np.stack([gaussian_filter(lab_w[..., c], 1.0) for c in range(3)], -1)
    edges, stats = _adjacency(sp, smooth, geo, cfg)
    S = int(sp.max()) + 1
    area = np.bincount(sp.ravel(), minlength=S).astype(np.float64)
    lab_sum = np.stack(
        [np.bincount(sp.ravel(), weights=lab_w[..., c].ravel(), minlength=S) for c in range(3)], 1
    )
    sq_sum = np.bincount(sp.ravel(), weights=(lab_w**2).sum(-1).ravel(), minlength=S)
    mean = lab_sum / area[:, None]
    edge_cost = np.linalg.norm(mean[edges[:, 0]] - mean[edges[:, 1]], axis=1).astype(np.float32)
    root = _merge(
        area,
        lab_sum,
        edges,
        stats,
        threshold=cfg.merge_threshold,
        barrier_fraction=cfg.barrier_fraction,
        boundary_weight=cfg.boundary_weight,
        size_exponent=cfg.size_exponent,
        convex_discount=cfg.convex_discount,
    )
    min_area = cfg.min_region_fraction * sp.size
    root = _absorb_small(root, area, lab_sum, edges, min_area=min_area)
    _, region_of = np.unique(root, return_inverse=True)
    region_of = region_of.astype(np.int32)
    R = int(region_of.max()) + 1
    r_area = np.bincount(region_of, weights=area, minlength=R)
    r_sum = np.stack(
        [np.bincount(region_of, weights=lab_sum[:, c], minlength=R) for c in range(3)], 1
    )
    r_sq = np.bincount(region_of, weights=sq_sum, minlength=R)
    scores = _region_scores(
        region_of,
        r_area,
        r_sum,
        r_sq,
        edges,
        stats[:, 0],
        stats[:, 1],
        edge_floor=2 * cfg.merge_threshold,
    )
    return _Segmentation(
        superpixels=sp,
        region_of=region_of,
        regions=region_of[sp],
        scores=scores,
        areas=r_area.astype(np.int64),
        edges=edges.astype(np.int32),
        edge_cost=edge_cost,
    )


@dataclass
class _Geometry:
    """Per-pixel geometry derived from a world pointmap."""

    points: np.ndarray  # [H, W, 3] float32, invalid pixels filled from the nearest valid one
    valid: np.ndarray  # [H, W] bool, the point is known
    normals: np.ndarray  # [H, W, 3] float32 unit, towards the camera (filled like points)
    normal_valid: np.ndarray  # [H, W] bool, the normal was measured (not filled, not at a jump)
    jump_x: np.ndarray  # [H, W-1] bool, depth jump between (v, u) and (v, u+1)
    jump_y: np.ndarray  # [H-1, W] bool, depth jump between (v, u) and (v+1, u)

    @staticmethod
    def of(pointmap: np.ndarray, cfg: ClassicalConfig) -> _Geometry:
        from scipy.ndimage import distance_transform_edt, maximum_filter, uniform_filter

        P = np.asarray(pointmap, dtype=np.float32)
        valid = np.isfinite(P).all(-1) & (np.abs(P).sum(-1) > 0)
        P = np.where(valid[..., None], P, 0.0).astype(np.float32)
        H, W = valid.shape
        k = max(1, round(min(H, W) / cfg.normal_scale))
        jump_x = _jumps(P, valid, axis=1, ratio=cfg.jump_ratio, min_jump=cfg.min_jump, window=k + 2)
        jump_y = _jumps(P, valid, axis=0, ratio=cfg.jump_ratio, min_jump=cfg.min_jump, window=k + 2)
        # normals over a baseline that grows with the image, so sensor noise averages out the
        # same way at 128x96 and at 640x480
        size = 2 * k + 1
        wsum = uniform_filter(valid.astype(np.float32), size)
        Ps = (
            np.stack([uniform_filter(P[..., c], size) for c in range(3)], -1)
            / np.maximum(wsum, 1e-6)[..., None]
        )
        normals = np.zeros_like(P)
        nvalid = np.zeros_like(valid)
        if H > 2 * k and W > 2 * k:
            dx = Ps[k:-k, 2 * k :] - Ps[k:-k, : -2 * k]
            dy = Ps[2 * k :, k:-k] - Ps[: -2 * k, k:-k]
            # u right and v down span the image plane; their cross product points away from the
            # camera whatever the world frame, so the negation faces the camera
            n = -np.cross(dx, dy)
            norm = np.linalg.norm(n, axis=-1, keepdims=True)
            near_jump = maximum_filter(_pad_to(jump_x, (H, W)) | _pad_to(jump_y, (H, W)), size + 2)
            near_hole = uniform_filter((~valid).astype(np.float32), size + 2) > 0
            ok = ~(near_jump | near_hole)[k:-k, k:-k] & (norm[..., 0] > 0)
            normals[k:-k, k:-k] = np.where(ok[..., None], n / np.maximum(norm, 1e-12), 0)
            nvalid[k:-k, k:-k] = ok
        # holes take their nearest known value, so SLIC sees no false edge around them
        if valid.any() and not valid.all():
            idx = distance_transform_edt(~valid, return_distances=False, return_indices=True)
            P = P[idx[0], idx[1]]
        if nvalid.any() and not nvalid.all():
            idx = distance_transform_edt(~nvalid, return_distances=False, return_indices=True)
            normals = normals[idx[0], idx[1]]
        return _Geometry(P, valid, normals.astype(np.float32), nvalid, jump_x, jump_y)


def _pad_to(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Zero-pad a pair array ([H, W-1] or [H-1, W]) at its end to [H, W]."""
    return np.pad(a, [(0, shape[0] - a.shape[0]), (0, shape[1] - a.shape[1])])


def _jumps(
    P: np.ndarray, valid: np.ndarray, *, axis: int, ratio: float, min_jump: float, window: int
) -> np.ndarray:
    """Depth jumps between neighbours along `axis`: a 3D gap much larger than the smallest gap
    within `window` pixels along the same line (the local pixel spacing). A window rather than the
    adjacent gaps alone, because sensor depth ramps across an occlusion edge over a few pixels."""
    from scipy.ndimage import minimum_filter1d

    gap = np.linalg.norm(np.diff(P, axis=axis), axis=-1)
    ok = valid[:-1] & valid[1:] if axis == 0 else valid[:, :-1] & valid[:, 1:]
    spacing = minimum_filter1d(np.where(ok, gap, np.inf), 2 * window + 1, axis=axis, mode="nearest")
    return ok & (gap > min_jump) & (gap > ratio * spacing)


def _jumps_reference(
    P: np.ndarray, valid: np.ndarray, *, axis: int, ratio: float, min_jump: float, window: int
) -> np.ndarray:
    """Slow twin of `_jumps`, pixel pair by pixel pair."""
    Q, V = (P, valid) if axis == 0 else (P.transpose(1, 0, 2), valid.T)
    out = np.zeros((Q.shape[0] - 1, Q.shape[1]), bool)
    for j in range(Q.shape[1]):
        gaps = [
            np.linalg.norm(Q[i + 1, j] - Q[i, j]) if V[i, j] and V[i + 1, j] else np.inf
            for i in range(Q.shape[0] - 1)
        ]
        for i, g in enumerate(gaps):
            near = gaps[max(0, i - window) : i + window + 1]
            out[i, j] = bool(np.isfinite(g) and g > min_jump and g > ratio * min(near))
    return out if axis == 0 else out.T


def _superpixels(lab: np.ndarray, geo: _Geometry | None, cfg: ClassicalConfig) -> np.ndarray:
    """[H, W] int32 SLIC superpixel ids 0..S-1 over colour (+ normals and coordinates)."""
    from skimage.segmentation import slic

    H, W = lab.shape[:2]
    feats = [lab]
    if geo is not None:
        feats += [geo.normals * cfg.normal_weight, geo.points * cfg.coord_weight]
    feat = np.concatenate(feats, -1) if len(feats) > 1 else lab
    n = int(np.clip(H * W / cfg.superpixel_area, 1, cfg.max_superpixels))
    # slic rescales its input to [0, 1]; dividing compactness by the same range keeps it in
    # colour units whatever the channels hold
    span = float(feat.max() - feat.min()) or 1.0
    sp = slic(
        feat,
        n_segments=n,
        compactness=cfg.compactness / span,
        channel_axis=-1,
        convert2lab=False,
        start_label=0,
    )
    _, sp = np.unique(sp, return_inverse=True)
    return sp.reshape(H, W).astype(np.int32)


def _adjacency(
    sp: np.ndarray,  # [H, W] superpixel ids
    lab: np.ndarray,  # [H, W, 3] weighted CIELAB, lightly smoothed
    geo: _Geometry | None,
    cfg: ClassicalConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Superpixel adjacency: edges [E, 2] (a < b) and per edge [E, 4] float64 statistics: boundary
    length, barrier length, length of convex crease, summed colour step across the boundary
    (weighted CIELAB units). Statistics add up when regions merge."""
    S = int(sp.max()) + 1
    pairs = [
        (sp[:, :-1], sp[:, 1:], lab[:, :-1], lab[:, 1:]),
        (sp[:-1, :], sp[1:, :], lab[:-1, :], lab[1:, :]),
    ]
    jumps = [geo.jump_x, geo.jump_y] if geo is not None else [None, None]
    keys, jumped, step = [], [], []
    for (a, b, la, lb), j in zip(pairs, jumps):
        diff = a != b
        lo, hi = np.minimum(a[diff], b[diff]), np.maximum(a[diff], b[diff])
        keys.append(lo.astype(np.int64) * S + hi)
        jumped.append(j[diff] if j is not None else np.zeros(len(lo), bool))
        step.append(np.linalg.norm(la[diff] - lb[diff], axis=-1))
    keys, jumped, step = np.concatenate(keys), np.concatenate(jumped), np.concatenate(step)
    uniq, inv = np.unique(keys, return_inverse=True)
    edges = np.stack([uniq // S, uniq % S], 1)
    length = np.bincount(inv, minlength=len(uniq)).astype(np.float64)
    n_jump = np.bincount(inv, weights=jumped, minlength=len(uniq))
    contrast = np.bincount(inv, weights=step, minlength=len(uniq))
    barrier_len = np.where(n_jump > 0.5 * length, length, 0.0)
    convex_len = np.zeros_like(length)
    if geo is not None:
        concave, convex = _creases(sp, edges, geo, cfg)
        barrier_len = np.where(concave, length, barrier_len)
        convex_len = np.where(convex & (barrier_len == 0), length, 0.0)
    return edges, np.stack([length, barrier_len, convex_len, contrast], 1)


def _creases(
    sp: np.ndarray, edges: np.ndarray, geo: _Geometry, cfg: ClassicalConfig
) -> tuple[np.ndarray, np.ndarray]:
    """[E] bool each: the two superpixels meet in a concave / a convex crease sharper than
    `crease_angle`.

    LCCP's test on patch centroids x and camera-facing normals n: the connection is convex when
    (n_a - n_b) . (x_a - x_b) > 0 and concave otherwise.
    """
    S = int(sp.max()) + 1
    flat = sp.ravel()
    w = geo.normal_valid.ravel().astype(np.float64)
    count = np.bincount(flat, weights=w, minlength=S)
    cen = np.stack(
        [np.bincount(flat, weights=w * geo.points[..., c].ravel(), minlength=S) for c in range(3)],
        1,
    )
    nrm = np.stack(
        [np.bincount(flat, weights=w * geo.normals[..., c].ravel(), minlength=S) for c in range(3)],
        1,
    )
    has = count >= 3
    cen /= np.maximum(count, 1)[:, None]
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    a, b = edges[:, 0], edges[:, 1]
    cos = np.clip((nrm[a] * nrm[b]).sum(1), -1, 1)
    sharp = has[a] & has[b] & (cos < np.cos(np.deg2rad(cfg.crease_angle)))
    convexity = ((nrm[a] - nrm[b]) * (cen[a] - cen[b])).sum(1)
    return sharp & (convexity < 0), sharp & (convexity > 0)


def _merge(
    area: np.ndarray,  # [S]
    lab_sum: np.ndarray,  # [S, 3]
    edges: np.ndarray,  # [E, 2]
    stats: np.ndarray,  # [E, 4] length, barrier length, convex length, colour step sum
    *,
    threshold: float,
    barrier_fraction: float,
    boundary_weight: float,
    size_exponent: float,
    convex_discount: float,
) -> np.ndarray:  # [S] root superpixel of each superpixel's region
    """Greedy merging of adjacent regions, cheapest first, never across barriers.

    The cost of a pair mixes the distance of the two regions' mean colours (average linkage:
    no chaining through slow gradients) with the mean colour step across their common boundary
    (a visible edge keeps two similar regions apart; shading without an edge does not).
    """
    S = len(area)
    area = area.astype(np.float64).copy()
    lab_sum = lab_sum.astype(np.float64).copy()
    # nbrs[a][b] = the pair's boundary statistics (see `_adjacency`), one list shared by a and b
    nbrs: list[dict[int, list[float]]] = [{} for _ in range(S)]
    for (a, b), st in zip(edges.tolist(), stats.tolist()):
        nbrs[a][b] = nbrs[b][a] = st
    parent = np.arange(S)
    version = [0] * S
    count = [1] * S  # superpixels per region
    internal = [0.0] * S  # largest merge cost inside each region (Felzenszwalb's Int)
    heap: list[tuple[float, int, int, int, int]] = []

    def cost(a: int, b: int) -> float:
        ln, br, cv, ct = nbrs[a][b]
        if br > barrier_fraction * ln:
            return np.inf
        mean_dist = float(np.linalg.norm(lab_sum[a] / area[a] - lab_sum[b] / area[b]))
        discount = 1 - (1 - convex_discount) * cv / ln
        return discount * ((1 - boundary_weight) * mean_dist + boundary_weight * ct / ln)

    def allowed(a: int, b: int, c: float) -> bool:
        # Felzenszwalb & Huttenlocher's adaptive test: a region tolerates its own internal
        # variation plus a slack that shrinks as it grows, so textured floors merge while a
        # smooth table next to them stays apart
        return c < min(
            internal[a] + threshold / count[a] ** size_exponent,
            internal[b] + threshold / count[b] ** size_exponent,
        )

    for a in range(S):
        for b in nbrs[a]:
            if a < b:
                c = cost(a, b)
                if allowed(a, b, c):
                    heap.append((c, a, b, 0, 0))
    heapq.heapify(heap)
    while heap:
        c, a, b, va, vb = heapq.heappop(heap)
        if version[a] != va or version[b] != vb:
            continue
        # a absorbs b (a < b keeps the outcome independent of dict order)
        parent[b] = a
        area[a] += area[b]
        lab_sum[a] += lab_sum[b]
        count[a] += count[b]
        internal[a] = max(internal[a], internal[b], c)
        version[b] = -1
        version[a] += 1
        del nbrs[a][b]
        for n, st in nbrs[b].items():
            if n == a:
                continue
            del nbrs[n][b]
            if n in nbrs[a]:
                for i in range(4):
                    nbrs[a][n][i] += st[i]
            else:
                nbrs[a][n] = st
            nbrs[n][a] = nbrs[a][n]
        nbrs[b] = {}
        for n in nbrs[a]:
            c = cost(a, n)
            if allowed(a, n, c):
                lo, hi = (a, n) if a < n else (n, a)
                heapq.heappush(heap, (c, lo, hi, version[lo], version[hi]))
    return _find_roots(parent)


def _merge_reference(
    area: np.ndarray,  # [S]
    lab_sum: np.ndarray,  # [S, 3]
    edges: np.ndarray,  # [E, 2]
    stats: np.ndarray,  # [E, 4]
    *,
    threshold: float,
    barrier_fraction: float,
    boundary_weight: float,
    size_exponent: float,
    convex_discount: float,
) -> np.ndarray:  # [S] root (smallest superpixel id) of each superpixel's region
    """Slow twin of `_merge`: after every merge, recompute every adjacent pair from scratch and
    merge the cheapest allowed one (ties: smallest ids)."""
    root = np.arange(len(area))
    internal = np.zeros(len(area))
    while True:
        best = None
        regions = np.unique(root)
        for i, r in enumerate(regions):
            for q in regions[i + 1 :]:
                between = ((root[edges[:, 0]] == r) & (root[edges[:, 1]] == q)) | (
                    (root[edges[:, 0]] == q) & (root[edges[:, 1]] == r)
                )
                if not between.any():
                    continue
                ln, br, cv, ct = stats[between].sum(0)
                if br > barrier_fraction * ln:
                    continue
                mr, mq = (
                    lab_sum[root == r].sum(0) / area[root == r].sum(),
                    lab_sum[root == q].sum(0) / area[root == q].sum(),
                )
                c = (1 - (1 - convex_discount) * cv / ln) * (
                    (1 - boundary_weight) * float(np.linalg.norm(mr - mq))
                    + boundary_weight * ct / ln
                )
                slack = min(
                    internal[r] + threshold / (root == r).sum() ** size_exponent,
                    internal[q] + threshold / (root == q).sum() ** size_exponent,
                )
                if c < slack and (best is None or (c, r, q) < best):
                    best = (c, r, q)
        if best is None:
            return root
        c, r, q = best
        internal[r] = max(internal[r], internal[q], c)
        root[root == q] = r


def _find_roots(parent: np.ndarray) -> np.ndarray:
    root = parent.copy()
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            return root
        root = nxt


def _absorb_small(
    root: np.ndarray,  # [S] region root per superpixel
    area: np.ndarray,  # [S]
    lab_sum: np.ndarray,  # [S, 3]
    edges: np.ndarray,  # [E, 2]
    *,
    min_area: float,
) -> np.ndarray:  # [S] region root per superpixel
    """Regions below `min_area` join their most similar neighbour, smallest first.

    Barriers are ignored here: a tiny region is most often a sliver along a boundary.
    """
    root = root.copy()
    while True:
        _, reg = np.unique(root, return_inverse=True)
        R = int(reg.max()) + 1
        r_area = np.bincount(reg, weights=area, minlength=R)
        small = np.flatnonzero(r_area < min_area)
        if len(small) == 0 or R == 1:
            return root
        r_mean = (
            np.stack([np.bincount(reg, weights=lab_sum[:, c], minlength=R) for c in range(3)], 1)
            / r_area[:, None]
        )
        ra, rb = reg[edges[:, 0]], reg[edges[:, 1]]
        between = ra != rb
        ra, rb = ra[between], rb[between]
        cost = np.linalg.norm(r_mean[ra] - r_mean[rb], axis=1)
        target = {}
        for r in small[np.argsort(r_area[small], kind="stable")].tolist():
            cand = np.concatenate([rb[ra == r], ra[rb == r]])
            cc = np.concatenate([cost[ra == r], cost[rb == r]])
            if len(cand) == 0:
                continue
            target[r] = int(cand[np.argmin(cc)])
        if not target:
            return root
        _, rep = np.unique(reg, return_index=True)  # a superpixel of each region
        changed = False
        for r, t in target.items():
            if target.get(t) == r and t < r:  # two small regions choosing each other: merge once
                continue
            root[root == root[rep[r]]] = root[rep[t]]
            changed = True
        if not changed:
            return root


def _region_scores(
    region_of: np.ndarray,  # [S]
    r_area: np.ndarray,  # [R]
    r_sum: np.ndarray,  # [R, 3]
    r_sq: np.ndarray,  # [R]
    edges: np.ndarray,  # [E, 2]
    length: np.ndarray,  # [E]
    barrier: np.ndarray,  # [E]
    *,
    edge_floor: float,
) -> np.ndarray:  # [R] float32 in [0, 1]
    """Homogeneity score: contrast / (contrast + spread).

    spread is the region's colour standard deviation; contrast is its mean colour distance to its
    neighbours weighted by shared boundary length, a barrier boundary counting at least
    `edge_floor` (a depth edge separates as well as a strong colour edge). A region with no
    neighbour (the whole image) has contrast 0.
    """
    R = len(r_area)
    mean = r_sum / r_area[:, None]
    spread = np.sqrt(np.maximum(r_sq / r_area - (mean**2).sum(1), 0))
    ra, rb = region_of[edges[:, 0]], region_of[edges[:, 1]]
    between = ra != rb
    ra, rb, ln, br = ra[between], rb[between], length[between], barrier[between]
    dist = np.linalg.norm(mean[ra] - mean[rb], axis=1)
    dist = np.where(br > 0.5 * ln, np.maximum(dist, edge_floor), dist)
    w = np.bincount(ra, weights=ln, minlength=R) + np.bincount(rb, weights=ln, minlength=R)
    c = np.bincount(ra, weights=ln * dist, minlength=R) + np.bincount(
        rb, weights=ln * dist, minlength=R
    )
    contrast = c / np.maximum(w, 1e-12)
    return (contrast / np.maximum(contrast + spread, 1e-12)).astype(np.float32)
