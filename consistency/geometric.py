"""The weight-free default for scans with geometry: object candidates from the scene's 3D structure.

Per-image segmentation without a learned model sees surfaces and parts (a chair as seat, back
and legs). With depth + poses the information is in 3D, over the whole scan at once, so the
default segments there and lets every view see the candidates through its pointmap:

1. **Object candidates** (`object_candidates`): the scene's superpoints (`recon.superpoints`)
   are merged over their adjacency graph by a Felzenszwalb-Huttenlocher pass whose edge weight
   is the junction's *concavity* plus its colour difference (CIELAB, lightness discounted). Convex junctions cost nothing and
   join (a chair's seat and back), concave ones separate (the chair from the floor, a box from the
   table it stands on): the local-convexity criterion of LCCP / CPC (Stein et al. CVPR 2014,
   Schoeler et al. CVPR 2015), with FH's size-adaptive threshold instead of a fixed one so that
   small pieces merge more readily than large objects. Support structure (the floor: large,
   horizontal, planar pieces at the bottom of the scene; walls: vertical planar pieces taller than
   `wall_min_height`) is held out of object merging and grouped plane by plane.
2. **A segmenter over the candidates** (`GeometricSegmenter`): `generate` returns the candidates
   a view sees (each valid pixel takes the candidate of the nearest scene point within
   `max_distance` of its 3D point), `predict` the candidate(s) under the prompt points. MastSAM
   then tracks object-level proposals that agree from view to view.

"Up" is +z of the world frame (ScanNet's and the synthetic scan's convention), configurable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from lift3d.consistency.segmenter import Masks
from lift3d.errors import InputError
from lift3d.recon.superpoints import (
    Superpoints,
    connected_components,
    segment_graph,
    superpoint_adjacency,
)

logger = logging.getLogger(__name__)


@dataclass
class GeometricConfig:
    """Object candidates from superpoints (convexity + colour) and the per-view segmenter over them."""

    threshold: float = 0.125
    """Felzenszwalb-Huttenlocher constant over superpoint areas (m^2): larger -> bigger objects."""
    concavity_weight: float = 1.0
    """Weight of a junction's concavity, (n_b - n_a) . d in [0, 2] for concave junctions, 0 for convex ones."""
    color_weight: float = 0.3
    """Weight of the mean-colour difference of two superpoints (CIELAB distance / 40, lightness scaled by `lightness_weight`)."""
    lightness_weight: float = 0.25
    """Weight of the CIELAB lightness difference beside the chroma (a*, b*) ones: shading and exposure change a surface's lightness, rarely its hue (scene0000_00 candidates, AP50 / AP25 / ARI of 30 views: 0.326 / 0.725 / 0.655 with RGB distance at weight 0.25, 0.377 / 0.813 / 0.797 with this)."""
    floor_height: float = 0.1
    """Horizontal planar pieces within this many metres of the scene's floor level are floor."""
    wall_min_height: float = 1.0
    """Vertical planar pieces spanning at least this many metres in height are wall."""
    planarity: float = 0.8
    """A piece is planar when |sum of its area-weighted normals| / its area is at least this."""
    up: tuple[float, float, float] | None = None
    """The world's up direction; default: estimated from the cameras (the mean of their up vectors, -y in OpenCV, snapped to the nearest world axis within 30 degrees: +z for ScanNet)."""
    max_distance: float = 0.05
    """A pixel sees a candidate when its 3D point lies within this many metres of the candidate's point."""
    min_area: int = 32
    """Candidate masks smaller than this (pixels) in a view are not returned."""
    pixel_stride: int = 1
    """Look up every n-th pixel in each direction and give the others their block's label (n^2 fewer closest-point queries; views narrower than 320 px are looked up whole). 2 is 2.4x faster a view but its 1-pixel boundary errors cost AP (scene0000_00: AP25 0.627 at 1, 0.569 at 2)."""
    structure: bool = True
    """Hold floor and walls out of object merging (False: everything merges by convexity and colour)."""

    def resolved(self, T_world_cameras: list[np.ndarray]) -> GeometricConfig:
        """These settings with `up` estimated from camera poses ([4, 4] each) when it is not given."""
        if self.up is not None or not len(T_world_cameras):
            return self
        return replace(self, up=estimate_up(T_world_cameras))

    def setup(
        self,
        xyz: np.ndarray,  # [P, 3] float32 metres, world frame
        rgb: np.ndarray,  # [P, 3] uint8
        superpoints: Superpoints,
        *,
        faces: np.ndarray | None = None,  # [F, 3] int64 when the points are a mesh's vertices
        adjacency: np.ndarray | None = None,  # [E, 2] adjacent superpoints
        info: dict | None = None,
    ) -> GeometricSegmenter:
        """The segmenter over the object candidates of these points (`object_candidates`).

        Args:
            info: what `describe()` adds for run.json (where the points came from).
        """
        cand = object_candidates(
            xyz, rgb, superpoints, faces=faces, adjacency=adjacency, config=self
        )
        info = {
            **(info or {}),
            "superpoints": superpoints.count,
            "structure_candidates": int(cand.structure.sum()),
            "up": list(self.up) if self.up is not None else None,
        }
        seg = GeometricSegmenter(xyz, cand.label, faces=faces, config=self, info=info)
        seg.candidates = cand
        return seg


@dataclass
class ObjectCandidates:
    """Object candidates over the scene's points.

    Attributes:
        label: [P] int32 candidate per point, 1..K (every point has one).
        structure: [K + 1] bool, True for floor / wall candidates (index 0 unused).
        superpoint_label: [S] int32 candidate of each superpoint.
    """

    label: np.ndarray
    structure: np.ndarray
    superpoint_label: np.ndarray = field(repr=False)

    @property
    def count(self) -> int:
        return int(len(self.structure) - 1)


def _superpoint_stats(xyz, normals, area, colors, index, S):
    """Per superpoint: area, area-weighted centroid, mean unit normal, planarity, mean colour, z range."""
    area_s = np.bincount(index, area, minlength=S)
    safe = np.maximum(area_s, 1e-12)[:, None]
    centroid = (
        np.stack([np.bincount(index, xyz[:, k] * area, minlength=S) for k in range(3)], 1) / safe
    )
    nsum = np.stack([np.bincount(index, normals[:, k] * area, minlength=S) for k in range(3)], 1)
    nlen = np.linalg.norm(nsum, axis=1)
    normal = nsum / np.maximum(nlen, 1e-12)[:, None]
    planarity = nlen / safe[:, 0]
    cnt = np.maximum(np.bincount(index, minlength=S), 1)[:, None]
    color = (
        np.stack(
            [np.bincount(index, colors[:, k].astype(np.float64), minlength=S) for k in range(3)], 1
        )
        / cnt
    )
    zlo = np.full(S, np.inf)
    zhi = np.full(S, -np.inf)
    np.minimum.at(zlo, index, xyz[:, 2])
    np.maximum.at(zhi, index, xyz[:, 2])
    return area_s, centroid, normal, planarity, color, zlo, zhi


def _weighted_lab(
    rgb: np.ndarray, lightness_weight: float
) -> np.ndarray:  # [S, 3] 0..255 -> [S, 3]
    """CIELAB of mean colours (sRGB, D65) with L* scaled by `lightness_weight`."""
    from skimage.color import rgb2lab

    lab = rgb2lab(np.clip(np.asarray(rgb, np.float64) / 255.0, 0.0, 1.0)[None])[0]
    lab[:, 0] *= lightness_weight
    return lab


def _orient_per_superpoint(
    normals: np.ndarray, area: np.ndarray, index: np.ndarray, S: int
) -> np.ndarray:
    """Unsigned (PCA) normals flipped to agree with their superpoint's principal normal direction,
    so that a planar piece's normals add up (its planarity) whatever their arbitrary signs."""
    M = np.zeros((S, 3, 3))
    for i in range(3):
        for j in range(i, 3):
            M[:, i, j] = M[:, j, i] = np.bincount(
                index, area * normals[:, i] * normals[:, j], minlength=S
            )
    _, vecs = np.linalg.eigh(M)
    axis = vecs[:, :, 2]  # [S, 3] largest eigenvector
    sign = np.sign(np.einsum("pi,pi->p", normals, axis[index]))
    return normals * np.where(sign == 0, 1.0, sign)[:, None]


def _point_areas(xyz: np.ndarray, faces: np.ndarray | None, k: int = 8):
    """(area [P] m^2 of each point's share of the surface, unit normals [P, 3], oriented?, edges
    [E, 2] of the k-NN graph the normals came from, or None on a mesh)."""
    from lift3d.recon.superpoints import knn_graph, vertex_normals

    xyz = xyz.astype(np.float64)
    if faces is not None and len(faces):
        fa = 0.5 * np.linalg.norm(
            np.cross(xyz[faces[:, 1]] - xyz[faces[:, 0]], xyz[faces[:, 2]] - xyz[faces[:, 0]]),
            axis=1,
        )
        area = np.zeros(len(xyz))
        for j in range(3):
            np.add.at(area, faces[:, j], fa / 3)
        return area, vertex_normals(xyz, faces).astype(np.float64), True, None
    from scipy.spatial import cKDTree

    d, _ = cKDTree(xyz).query(xyz, k=min(k + 1, len(xyz)), workers=-1)
    spacing = (
        np.median(d[:, 1:], axis=1) if d.ndim == 2 and d.shape[1] > 1 else np.full(len(xyz), 0.01)
    )
    edges, normals = knn_graph(xyz.astype(np.float32), k)
    return spacing**2, normals.astype(np.float64), False, edges


def _up_basis(up) -> np.ndarray:  # -> [3, 3] orthonormal rows (e1, e2, up)
    u = np.asarray((0.0, 0.0, 1.0) if up is None else up, np.float64)
    u = u / max(np.linalg.norm(u), 1e-12)
    a = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(a, u)
    e1 /= np.linalg.norm(e1)
    return np.stack([e1, np.cross(u, e1), u])


def estimate_up(
    T_world_cameras: list[np.ndarray], *, snap_degrees: float = 30.0
) -> tuple[float, float, float]:
    """The world's up direction from camera poses: the mean of the cameras' up vectors (-y of an
    OpenCV camera, in the world), snapped to the nearest signed world axis when within
    `snap_degrees` (handheld scans hold the camera roughly upright; tilt averages out)."""
    ups = [
        -np.asarray(T, np.float64)[:3, 1]
        for T in T_world_cameras
        if T is not None and np.isfinite(T).all()
    ]
    if not ups:
        return (0.0, 0.0, 1.0)
    m = np.mean(ups, axis=0)
    if np.linalg.norm(m) < 1e-6:
        return (0.0, 0.0, 1.0)
    m /= np.linalg.norm(m)
    k = int(np.argmax(np.abs(m)))
    axis = np.zeros(3)
    axis[k] = np.sign(m[k])
    if np.degrees(np.arccos(np.clip(abs(m[k]), -1, 1))) <= snap_degrees:
        m = axis
    return (float(m[0]), float(m[1]), float(m[2]))


def object_candidates(
    xyz: np.ndarray,  # [P, 3] float metres, world frame
    colors: np.ndarray,  # [P, 3] uint8
    superpoints: Superpoints,
    *,
    faces: np.ndarray | None = None,  # [F, 3] when the points are a mesh's vertices
    adjacency: np.ndarray | None = None,  # [E, 2] adjacent superpoints, when already known
    config: GeometricConfig = GeometricConfig(),
) -> ObjectCandidates:
    """Merge superpoints into object candidates by convexity and colour, structure held out.

    On a mesh the normals are oriented (face winding) and a junction is concave when the
    normals turn towards each other; on a point cloud (no faces) normals have no sign and the
    junction cost is 1 - |n_a . n_b| instead.

    Raises:
        InputError: arrays of mismatched length.
    """
    from lift3d.recon.superpoints import mesh_edges

    xyz = np.asarray(xyz, np.float64)
    P = len(xyz)
    if len(superpoints.index) != P or np.asarray(colors).shape != (P, 3):
        raise InputError(
            None,
            f"object candidates: {P} points, {len(superpoints.index)} superpoint ids, colours {np.shape(colors)}",
        )
    S = superpoints.count
    if P == 0 or S == 0:
        return ObjectCandidates(np.zeros(P, np.int32), np.zeros(1, bool), np.zeros(S, np.int32))
    area, normals, oriented, knn_edges = _point_areas(xyz, faces)
    # work in a frame whose third axis is "up": heights, floor level and wall spans read along it
    # (convexity only needs normals and centroids in one frame, which a rotation keeps)
    basis = _up_basis(config.up)  # [3, 3] rows e1, e2, up
    xyz_up = xyz @ basis.T
    normals_up = normals @ basis.T
    h = xyz_up[:, 2]
    if not oriented:
        normals_up = _orient_per_superpoint(normals_up, area, superpoints.index, S)
    area_s, centroid, normal, planarity, color, zlo, zhi = _superpoint_stats(
        xyz_up, normals_up, area, np.asarray(colors), superpoints.index, S
    )
    hs = centroid[:, 2]
    lab = _weighted_lab(color, config.lightness_weight)
    if adjacency is not None:
        pairs = np.asarray(adjacency, np.int64).reshape(-1, 2)
    else:
        edges = mesh_edges(np.asarray(faces), P) if oriented else knn_edges
        pairs = superpoint_adjacency(superpoints.index, edges, S)[0]

    nz = normal[:, 2]
    floor_level = np.percentile(h, 1)
    planar = planarity >= config.planarity
    if oriented:
        floor = planar & (nz > 0.9) & (hs < floor_level + config.floor_height)
        wall = planar & (np.abs(nz) < 0.15) & (zhi - zlo >= config.wall_min_height)
    else:
        floor = planar & (np.abs(nz) > 0.9) & (hs < floor_level + config.floor_height)
        wall = planar & (np.abs(nz) < 0.15) & (zhi - zlo >= config.wall_min_height)
    structure = (floor | wall) if config.structure else np.zeros(S, bool)

    pa, pb = pairs[:, 0], pairs[:, 1]
    d = centroid[pa] - centroid[pb]
    d /= np.maximum(np.linalg.norm(d, axis=1), 1e-12)[:, None]
    if oriented:
        # (n_a - n_b) . (c_a - c_b) > 0: the normals open away from each other (convex)
        concavity = np.maximum(0.0, -np.einsum("ij,ij->i", normal[pa] - normal[pb], d))
    else:
        concavity = 1.0 - np.abs(np.einsum("ij,ij->i", normal[pa], normal[pb]))
    dcol = np.linalg.norm(lab[pa] - lab[pb], axis=1) / 40.0
    w = config.concavity_weight * concavity + config.color_weight * dcol
    # objects merge among objects; structure merges with structure of one plane (angle < ~15 deg)
    both_obj = ~structure[pa] & ~structure[pb]
    both_struct = (
        structure[pa] & structure[pb] & (np.einsum("ij,ij->i", normal[pa], normal[pb]) > 0.97)
    )
    w_obj = np.where(both_obj, w, np.inf)
    keep = np.isfinite(w_obj)
    sp_obj = segment_graph(
        S, pairs[keep], w_obj[keep], threshold=config.threshold, node_size=np.maximum(area_s, 1e-6)
    )
    # structure planes: connected components of coplanar structure neighbours
    sp_struct = connected_components(S, pairs[both_struct])
    group = np.where(structure, S + sp_struct, sp_obj)
    _, first, inv = np.unique(group, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    sp_label = (rank[inv] + 1).astype(np.int32)
    is_struct = np.zeros(len(first) + 1, bool)
    is_struct[sp_label[structure]] = True
    label = sp_label[superpoints.index]
    logger.info(
        "object candidates: %d (%d structure) from %d superpoints",
        len(first),
        int(is_struct.sum()),
        S,
    )
    return ObjectCandidates(label=label, structure=is_struct, superpoint_label=sp_label)


def scene_candidates(
    points, segmenter=None, *, config: GeometricConfig = GeometricConfig()
) -> ObjectCandidates:
    """The object candidates of a scene's points (`lift3d.recon.scene_points.ScenePoints`): the
    geometric segmenter's own when `segmenter` is one, else made with `config` (its `up`
    resolved by the caller)."""
    cand = getattr(segmenter, "candidates", None)
    if cand is not None:
        return cand
    return object_candidates(
        points.xyz,
        points.rgb,
        points.superpoints,
        faces=points.faces,
        adjacency=points.adjacency,
        config=config,
    )


class GeometricSegmenter:
    """A `Segmenter` whose masks are the 3D object candidates each view sees.

    A pixel takes the candidate of the scene surface nearest its 3D point: on a mesh the
    closest point on its triangles (open3d's `RaycastingScene`, CPU) and there the triangle's
    vertex of largest barycentric weight, so coarse meshes label every pixel near them; on a
    point cloud the nearest point (k-d tree).

    Args:
        points: [P, 3] the scene points the candidates label (world frame, metres).
        labels: [P] int candidate per point (1..K, 0 = none).
        faces: [F, 3] triangles when the points are a mesh's vertices.
        config: `max_distance` and `min_area` are used here.
    """

    name = "geometric"

    def __init__(
        self,
        points: np.ndarray,
        labels: np.ndarray,
        *,
        faces: np.ndarray | None = None,
        config: GeometricConfig = GeometricConfig(),
        info: dict | None = None,
    ):
        from scipy.spatial import cKDTree

        points = np.asarray(points, np.float64)
        labels = np.asarray(labels)
        if points.ndim != 2 or points.shape[1] != 3 or labels.shape != (len(points),):
            raise InputError(
                None,
                f"GeometricSegmenter: points [P, 3] and labels [P], got {list(points.shape)} and {list(labels.shape)}",
            )
        self.config = config
        self._labels = labels.astype(np.int32)
        self._faces = None if faces is None or not len(faces) else np.asarray(faces, np.int64)
        if self._faces is not None:
            import open3d as o3d

            self._rc = o3d.t.geometry.RaycastingScene()
            self._rc.add_triangles(
                o3d.core.Tensor(points.astype(np.float32)),
                o3d.core.Tensor(self._faces.astype(np.uint32)),
            )
        else:
            self._tree = cKDTree(points)
        self._info = dict(info or {})
        self._cache: tuple[int, np.ndarray] | None = None
        #: the `ObjectCandidates` the labels came from, when `GeometricConfig.setup` made them
        self.candidates: ObjectCandidates | None = None

    def describe(self) -> dict:
        return {
            "segmenter": self.name,
            "candidates": int(len(np.unique(self._labels[self._labels > 0]))),
            **self._info,
        }

    def view_labels(
        self, geometry: np.ndarray | None, hw: tuple[int, int]
    ) -> np.ndarray:  # -> [H, W] int32
        """The candidate each pixel sees (0 where no scene point lies within max_distance)."""
        H, W = hw
        if geometry is None:
            raise InputError(
                None,
                "the geometric segmenter needs each view's pointmap (a scene with depth + poses)",
            )
        if self._cache is not None and self._cache[0] == id(geometry):
            return self._cache[1]
        n = max(int(self.config.pixel_stride), 1) if W >= 320 else 1
        full = np.asarray(geometry, np.float64)
        pm = full[::n, ::n].reshape(-1, 3)
        ok = np.isfinite(pm).all(axis=1)
        h, w = full[::n, ::n].shape[:2]
        out = np.zeros(h * w, np.int32)
        if ok.any():
            q = pm[ok]
            if self._faces is not None:
                import open3d as o3d

                r = self._rc.compute_closest_points(o3d.core.Tensor(q.astype(np.float32)))
                closest = r["points"].numpy().astype(np.float64)
                tri = r["primitive_ids"].numpy().astype(np.int64)
                uv = r["primitive_uvs"].numpy().astype(np.float64)
                bary = np.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], axis=1)
                vert = self._faces[tri, np.argmax(bary, axis=1)]
                hit = np.linalg.norm(closest - q, axis=1) <= self.config.max_distance
                j = vert
            else:
                d, j = self._tree.query(
                    q, k=1, distance_upper_bound=self.config.max_distance, workers=-1
                )
                hit = np.isfinite(d)
            vals = np.zeros(len(q), np.int32)
            vals[hit] = self._labels[j[hit]]
            out[ok] = vals
        out = out.reshape(h, w)
        if n > 1:  # each block takes its looked-up pixel's label; pixels without geometry stay 0
            out = np.repeat(np.repeat(out, n, axis=0), n, axis=1)[:H, :W]
            out[~np.isfinite(full).all(axis=-1)] = 0
        self._cache = (id(geometry), out)
        return out

    def generate(self, image: np.ndarray, *, geometry: np.ndarray | None = None) -> Masks:
        H, W = image.shape[:2]
        lab = self.view_labels(geometry, (H, W))
        ids, counts = np.unique(lab[lab > 0], return_counts=True)
        ids = ids[counts >= self.config.min_area]
        if not len(ids):
            return Masks.empty((W, H))
        masks = lab[None] == ids[:, None, None]
        return Masks(masks, np.ones(len(ids), np.float32))

    def predict(
        self,
        image: np.ndarray,
        points: np.ndarray,
        point_labels: np.ndarray,
        *,
        geometry: np.ndarray | None = None,
    ) -> Masks:
        H, W = image.shape[:2]
        lab = self.view_labels(geometry, (H, W))
        points = np.asarray(points, np.float64).reshape(
            -1, np.shape(points)[-2] if np.ndim(points) == 3 else 1, 2
        )
        point_labels = np.asarray(point_labels).reshape(points.shape[:2])
        B = len(points)
        masks = np.zeros((B, H, W), bool)
        scores = np.zeros(B, np.float32)
        for b in range(B):
            pos = points[b][point_labels[b] == 1]
            if not len(pos):
                continue
            u = np.clip(np.rint(pos[:, 0]).astype(int), 0, W - 1)
            v = np.clip(np.rint(pos[:, 1]).astype(int), 0, H - 1)
            under = lab[v, u]
            under = under[under > 0]
            if not len(under):
                continue
            vals, cnt = np.unique(under, return_counts=True)
            k = vals[np.argmax(cnt)]  # the candidate covering most of the points
            masks[b] = lab == k
            scores[b] = cnt.max() / len(pos)
        return Masks(masks, scores)
