"""A segmenter simulated from ground truth: SAM-like masks with SAM's granularity changes, from a
scan's annotated objects. Not SAM, and never to be reported as SAM.

No SAM checkpoint can be had here, yet what decides MastSAM against its baselines is how it copes
with SAM's masks, whose failure is not bad boundaries but *changing granularity*: a chair is one
mask in one view, seat and back in the next, chair + table in a third. That is simulated exactly
from a scan's instance GT (ScanNet layout: `<scene>.aggregation.json` + `*.segs.json` + the mesh,
read by `lift3d.recon.scannet.gt`; the synthetic scene has the same files). Walls and floor are
objects like any other; pixels on vertices of no object get no mask.

Each view finds its GT through its world pointmap (`geometry`): every pixel takes the object and
the mesh segment of the nearest mesh vertex of the nearest triangle (open3d's closest-point query;
nearest vertex by KD-tree when the mesh has no faces), within `max_dist` metres. Then, per view,
seeded by `seed` and a hash of the view's pointmap (one view always gives the same masks), with
the random draws made in a fixed order so that a higher probability only adds events:

- an object whose visible area is under `min_object_px` is missed with probability `p_miss`;
- an object is merged with an image neighbour (a touching object, chosen by shared boundary)
  with probability `p_merge`: the two are one mask at both granularities in this view;
- an object is split with probability `p_split` into 2 or 3 pieces along its mesh segments (seed
  segments drawn by area, every visible segment joins the nearest seed in the image): the pieces
  are its fine-granularity masks, the whole its coarse one;
- every mask's boundary moves by up to `jitter_px` pixels (a random dilation or erosion).

`generate` returns the coarse masks (objects, merged groups) and the fine ones (pieces), the same
mask once, with scores in SAM's predicted-IoU range: overlapping masks at two granularities, as
SAM's automatic generator gives them. `predict` returns, per prompt set, the object under the
positive points: for one point SAM's ambiguity (the piece or the whole, seeded by the point), for
several the object (merged group) covering them, the union where they fall on several; a piece
under a negative point is taken out.

`noise` sets the probabilities at once (p_split = noise, p_merge = noise / 2, p_miss = noise,
jitter_px = round(10 * noise)); a probability given explicitly wins.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lift3d.consistency.segmenter import Masks
from lift3d.errors import InputError

#: the name used in every table, report and run.json: a simulation, not SAM
DESCRIPTION = "simulated from ground truth (GT objects with SAM-like granularity changes; not SAM)"


@dataclass
class SimulatedConfig:
    """Parameters of the GT-derived simulated segmenter (recorded in run.json)."""

    noise: float = 0.15
    """One knob for all: p_split = noise, p_merge = noise / 2, p_miss = noise, jitter_px = round(10 noise)."""
    p_split: float | None = None
    """Probability that an object is split into 2-3 pieces along its mesh segments in a view (default: noise)."""
    p_merge: float | None = None
    """Probability that an object is merged with a touching object in a view (default: noise / 2)."""
    p_miss: float | None = None
    """Probability that an object smaller than min_object_px in a view gets no mask (default: noise)."""
    jitter_px: int | None = None
    """Mask boundaries move by up to this many pixels (default: round(10 * noise))."""
    min_object_px: int = 400
    """Objects with fewer visible pixels than this count as small (p_miss)."""
    max_dist: float = 0.05
    """A pixel takes the GT of the mesh within this many metres of its 3D point, else none."""
    seed: int = 0
    """Seed; with the view's hash it decides every split, merge, miss and jitter."""

    def resolved(self) -> dict:
        """The effective probabilities, after `noise` filled in the ones not given."""
        n = float(self.noise)
        return {
            "p_split": n if self.p_split is None else float(self.p_split),
            "p_merge": n / 2 if self.p_merge is None else float(self.p_merge),
            "p_miss": n if self.p_miss is None else float(self.p_miss),
            "jitter_px": int(round(10 * n)) if self.jitter_px is None else int(self.jitter_px),
        }

    def check(self) -> None:
        r = self.resolved()
        for k in ("p_split", "p_merge", "p_miss"):
            if not 0.0 <= r[k] <= 1.0:
                raise InputError(None, f"simulated segmenter: {k} must be in [0, 1], got {r[k]}")
        if r["jitter_px"] < 0 or self.min_object_px < 0 or self.max_dist <= 0:
            raise InputError(
                None, "simulated segmenter: jitter_px and min_object_px must be >= 0, max_dist > 0"
            )

    def setup(self, scene_dir: str | Path) -> SimulatedSegmenter:
        """The simulation over the instance GT of the scan at `scene_dir` (a ScanNet-layout folder, or its .sens)."""
        return SimulatedSegmenter.from_scan(scene_dir, config=self)


@dataclass
class _Element:
    """One mask of a view before jitter: a group of objects (coarse) or a piece (fine)."""

    key: tuple
    mask: np.ndarray  # [H, W] bool
    score: float


@dataclass
class _View:
    """A view's GT and its seeded decomposition."""

    hash: int
    obj: np.ndarray  # [H, W] int64 object (0 = none)
    coarse: list[_Element]
    fine: list[_Element]
    piece_of: np.ndarray  # [H, W] int64 index into fine, -1 = none
    group_of: np.ndarray  # [H, W] int64 index into coarse, -1 = none


class SimulatedSegmenter:
    """The `Segmenter` protocol, simulated from a scan's instance GT (module docstring).

    Args:
        gt: the scan's mesh with per-vertex objects and segments (`lift3d.recon.scannet.ScanGT`).
        config: the simulation's parameters.
    """

    name = "simulated"

    def __init__(self, gt, config: SimulatedConfig | None = None):
        self.gt = gt
        self.config = config or SimulatedConfig()
        self.config.check()
        self._p = self.config.resolved()
        self._lookup = None
        self._views: OrderedDict[int, _View] = OrderedDict()
        # the GT lookup (the costly part: a closest-point query per pixel) of recent views, kept
        # across the passes an evaluation makes over the same frames; bounded in bytes
        self._vertices: OrderedDict[int, np.ndarray] = OrderedDict()
        self._vertices_bytes = 0

    @classmethod
    def from_scan(
        cls,
        scene_dir: str | Path,
        scene_name: str | None = None,
        config: SimulatedConfig | None = None,
    ):
        """From a ScanNet-layout scan folder; an error naming the folder when it has no instance GT."""
        from lift3d.recon.scannet.gt import gt_paths, load_scan_gt

        scene_dir = Path(scene_dir)
        if scene_dir.is_file():  # a .sens beside its GT files
            scene_name = scene_name or scene_dir.stem
            scene_dir = scene_dir.parent
        if scene_name is None:
            aggs = sorted(scene_dir.glob("*.aggregation.json"))
            scene_name = (
                aggs[0].name[: -len(".aggregation.json")] if len(aggs) == 1 else scene_dir.name
            )
        segs, agg, mesh = gt_paths(scene_dir, scene_name)
        missing = [p.name for p in (segs, agg, mesh) if not p.is_file()]
        if missing:
            raise InputError(
                scene_dir,
                "--segmenter simulated needs the scan's instance ground truth "
                f"(ScanNet layout); missing: {', '.join(missing)}",
            )
        return cls(load_scan_gt(scene_dir, scene_name), config)

    def describe(self) -> dict:
        """What made the masks, for run.json: a simulation from ground truth, with its parameters."""
        return {
            "segmenter": DESCRIPTION,
            "kind": "simulated",
            "config": asdict(self.config),
            "effective": self._p,
            "ground_truth": str(self.gt.source) if self.gt.source else None,
        }

    # -- per-view GT -------------------------------------------------------------------------

    def _vertex_of(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vertex index [N], distance [N] metres) of the mesh's nearest vertex per point."""
        gt = self.gt
        if self._lookup is None:
            if len(gt.faces):
                import open3d as o3d

                rc = o3d.t.geometry.RaycastingScene()
                rc.add_triangles(
                    o3d.core.Tensor(gt.vertices.astype(np.float32)),
                    o3d.core.Tensor(gt.faces.astype(np.uint32)),
                )
                self._lookup = ("mesh", rc)
            else:
                from scipy.spatial import cKDTree

                self._lookup = ("kdtree", cKDTree(gt.vertices))
        kind, index = self._lookup
        if kind == "kdtree":
            dist, vert = index.query(pts, k=1)
            return vert.astype(np.int64), dist
        import open3d as o3d

        ans = index.compute_closest_points(o3d.core.Tensor(pts.astype(np.float32)))
        closest = ans["points"].numpy()
        face = ans["primitive_ids"].numpy().astype(np.int64)
        dist = np.linalg.norm(closest - pts, axis=1)
        tri = gt.faces[np.clip(face, 0, len(gt.faces) - 1)]  # [N, 3]
        d3 = np.linalg.norm(gt.vertices[tri] - pts[:, None, :], axis=2)
        vert = tri[np.arange(len(tri)), np.argmin(d3, axis=1)]
        return vert, dist

    def _view(self, image: np.ndarray, geometry: np.ndarray | None) -> _View:
        if geometry is None:
            raise InputError(
                None,
                "the simulated segmenter needs each view's world pointmap (geometry): a scan with depth + poses",
            )
        geometry = np.asarray(geometry)
        H, W = image.shape[:2]
        if geometry.shape != (H, W, 3):
            raise InputError(
                None,
                f"simulated segmenter: geometry is {list(geometry.shape)}, expected [{H}, {W}, 3]",
            )
        h = zlib.crc32(np.ascontiguousarray(geometry, np.float32).tobytes())
        if h in self._views:
            self._views.move_to_end(h)
            return self._views[h]
        vert = self._pixel_vertices(geometry, h)
        obj = np.zeros(H * W, np.int64)
        seg = np.full(H * W, -1, np.int64)
        idx = np.flatnonzero(vert >= 0)
        obj[idx] = self.gt.object[vert[idx]]
        seg[idx] = np.where(obj[idx] > 0, self.gt.segment[vert[idx]], -1)
        view = _decompose(obj.reshape(H, W), seg.reshape(H, W), self._p, self.config, h)
        self._views[h] = view
        while len(self._views) > 4:  # the tracker revisits only the current frame
            self._views.popitem(last=False)
        return view

    def _pixel_vertices(
        self, geometry: np.ndarray, h: int
    ) -> np.ndarray:  # [H * W] int32, -1 = none
        """The mesh vertex of each pixel within max_dist, cached per view hash (LRU, 512 MiB)."""
        if h in self._vertices:
            self._vertices.move_to_end(h)
            return self._vertices[h]
        pts = geometry.reshape(-1, 3).astype(np.float32)
        ok = np.isfinite(pts).all(axis=1) & (np.abs(pts).sum(axis=1) > 0)
        out = np.full(len(pts), -1, np.int32)
        if ok.any():
            vert, dist = self._vertex_of(pts[ok])
            near = dist <= self.config.max_dist
            out[np.flatnonzero(ok)[near]] = vert[near]
        self._vertices[h] = out
        self._vertices_bytes += out.nbytes
        while self._vertices_bytes > 512 * 2**20 and len(self._vertices) > 1:
            self._vertices_bytes -= self._vertices.popitem(last=False)[1].nbytes
        return out

    def view_objects(
        self, image: np.ndarray, *, geometry: np.ndarray
    ) -> np.ndarray:  # [H, W] int64
        """The GT object of each pixel of a view (0 = none): what the simulation starts from."""
        return self._view(image, geometry).obj

    # -- the Segmenter protocol ---------------------------------------------------------------

    def generate(self, image: np.ndarray, *, geometry: np.ndarray | None = None) -> Masks:
        """Coarse and fine masks of the view (each distinct mask once), with scores."""
        view = self._view(image, geometry)
        seen = set()
        masks, scores = [], []
        for el in view.coarse + view.fine:
            if el.key in seen:
                continue
            seen.add(el.key)
            m = self._jitter(el.mask, view, el.key)
            if m.any():
                masks.append(m)
                scores.append(el.score)
        H, W = image.shape[:2]
        if not masks:
            return Masks.empty((W, H))
        return Masks(np.stack(masks), np.asarray(scores, np.float32))

    def predict(
        self,
        image: np.ndarray,  # [H, W, 3] uint8
        points: np.ndarray,  # [B, P, 2] float (u, v) pixels
        point_labels: np.ndarray,  # [B, P] int: 1 foreground, 0 background, -1 padding
        *,
        geometry: np.ndarray | None = None,
    ) -> Masks:
        """Per prompt set, the piece or object under its positive points (module docstring)."""
        view = self._view(image, geometry)
        H, W = image.shape[:2]
        points = np.asarray(points, np.float64).reshape(
            -1, np.shape(points)[-2] if np.ndim(points) == 3 else 1, 2
        )
        point_labels = np.asarray(point_labels).reshape(points.shape[:2])
        out = np.zeros((len(points), H, W), bool)
        scores = np.zeros(len(points), np.float32)
        for b in range(len(points)):
            uv = np.rint(points[b]).astype(np.int64)
            u, v = np.clip(uv[:, 0], 0, W - 1), np.clip(uv[:, 1], 0, H - 1)
            pos, neg = point_labels[b] == 1, point_labels[b] == 0
            pieces = view.piece_of[v[pos], u[pos]]
            groups = view.group_of[v[pos], u[pos]]
            pieces, groups = pieces[pieces >= 0], groups[groups >= 0]
            if len(groups) == 0:
                continue
            if pos.sum() == 1:
                # SAM's single-point ambiguity: part or whole, seeded by the view and the point
                rng = np.random.default_rng(
                    [self.config.seed, view.hash, int(u[pos][0]), int(v[pos][0])]
                )
                el = view.fine[pieces[0]] if rng.random() < 0.5 else view.coarse[groups[0]]
                m = self._jitter(el.mask, view, el.key)
                scores[b] = el.score * (0.9 if el.key != view.coarse[groups[0]].key else 1.0)
            else:
                chosen = [view.coarse[g] for g in np.unique(groups)]
                m = np.zeros((H, W), bool)
                for el in chosen:
                    m |= self._jitter(el.mask, view, el.key)
                scores[b] = float(np.mean([el.score for el in chosen])) * (
                    1.0 if len(chosen) == 1 else 0.8
                )
            neg_pieces = set(view.piece_of[v[neg], u[neg]].tolist()) - set(pieces.tolist()) - {-1}
            for p in neg_pieces:
                m &= ~view.fine[p].mask
            out[b] = m
        return Masks(out, scores)

    def _jitter(self, mask: np.ndarray, view: _View, key: tuple) -> np.ndarray:
        r_max = self._p["jitter_px"]
        if r_max == 0:
            return mask
        rng = np.random.default_rng([self.config.seed, view.hash, zlib.crc32(repr(key).encode())])
        r = int(rng.integers(-r_max, r_max + 1))
        if r == 0:
            return mask
        from scipy import ndimage

        if r > 0:
            return ndimage.binary_dilation(mask, iterations=r)
        eroded = ndimage.binary_erosion(mask, iterations=-r)
        return eroded if eroded.any() else mask


def _adjacency(obj: np.ndarray) -> dict[tuple[int, int], int]:
    """{(a, b), a < b: shared boundary length in pixels} of touching objects (4-neighbours)."""
    pairs = []
    for a, b in ((obj[:, :-1], obj[:, 1:]), (obj[:-1, :], obj[1:, :])):
        d = (a != b) & (a > 0) & (b > 0)
        pairs.append(np.stack([np.minimum(a[d], b[d]), np.maximum(a[d], b[d])], axis=1))
    pairs = np.concatenate(pairs)
    if not len(pairs):
        return {}
    keys, counts = np.unique(pairs, axis=0, return_counts=True)
    return {(int(k[0]), int(k[1])): int(c) for k, c in zip(keys, counts)}


def _decompose(obj: np.ndarray, seg: np.ndarray, p: dict, cfg: SimulatedConfig, h: int) -> _View:
    """The view's coarse groups and fine pieces, seeded by (seed, view hash)."""
    H, W = obj.shape
    rng = np.random.default_rng([cfg.seed, h])
    ids, areas = np.unique(obj[obj > 0], return_counts=True)
    # fixed-order draws: raising a probability only adds events, the rest stays as it was
    draws = {int(o): rng.random(4) for o in ids}  # miss, merge, merge partner, split
    missed = {
        int(o)
        for o, a in zip(ids, areas)
        if a < cfg.min_object_px and draws[int(o)][0] < p["p_miss"]
    }
    adj = _adjacency(obj)
    partner: dict[int, int] = {}
    for o in (int(x) for x in ids):
        if o in missed or o in partner or draws[o][1] >= p["p_merge"]:
            continue
        nbrs = [(b if a == o else a, n) for (a, b), n in adj.items() if o in (a, b)]
        nbrs = [(q, n) for q, n in nbrs if q not in missed and q not in partner]
        if not nbrs:
            continue
        w = np.array([n for _, n in nbrs], np.float64)
        q = nbrs[
            int(
                np.searchsorted(np.cumsum(w) / w.sum(), draws[o][2], side="right").clip(
                    0, len(nbrs) - 1
                )
            )
        ][0]
        partner[o], partner[q] = q, o

    coarse: list[_Element] = []
    fine: list[_Element] = []
    group_of = np.full((H, W), -1, np.int64)
    piece_of = np.full((H, W), -1, np.int64)
    done = set()
    for o in (int(x) for x in ids):
        if o in missed or o in done:
            continue
        members = tuple(sorted({o, partner.get(o, o)}))
        done.update(members)
        m = np.isin(obj, members)
        gi = len(coarse)
        coarse.append(_Element(("group", members), m, 0.9 + 0.09 * float(draws[o][3])))
        group_of[m] = gi
        if len(members) > 1:  # merged: the boundary is not seen at either granularity
            fine.append(coarse[-1])
            piece_of[m] = len(fine) - 1
            continue
        for k, piece in enumerate(
            _split(obj == o, seg, draws[o][3] < p["p_split"], rng_seed=(cfg.seed, h, o))
        ):
            key = ("group", members) if piece is None else ("piece", o, k)
            pm = m if piece is None else piece
            fine.append(
                coarse[-1] if piece is None else _Element(key, pm, 0.85 + 0.1 * float(draws[o][3]))
            )
            piece_of[pm] = len(fine) - 1
    return _View(hash=h, obj=obj, coarse=coarse, fine=fine, piece_of=piece_of, group_of=group_of)


def _split(
    mask: np.ndarray, seg: np.ndarray, split: bool, *, rng_seed: tuple
) -> list[np.ndarray | None]:
    """The object's pieces along its mesh segments ([None]: whole). 2-3 seed segments drawn by
    area; every visible segment joins the seed whose pixel centroid is nearest its own."""
    if not split:
        return [None]
    segs, inv, area = np.unique(seg[mask], return_inverse=True, return_counts=True)
    if len(segs) < 2:
        return [None]
    rng = np.random.default_rng(list(rng_seed))
    k = min(int(rng.integers(2, 4)), len(segs))
    seeds = rng.choice(len(segs), size=k, replace=False, p=area / area.sum())
    vv, uu = np.nonzero(mask)
    cu = np.bincount(inv, uu, len(segs)) / area
    cv = np.bincount(inv, vv, len(segs)) / area
    d = (cu[:, None] - cu[seeds][None]) ** 2 + (cv[:, None] - cv[seeds][None]) ** 2  # [S, k]
    owner = np.argmin(d, axis=1)
    owner[seeds] = np.arange(k)  # a seed owns itself, so every piece is non-empty
    pix_owner = owner[inv]
    pieces = []
    for j in range(k):
        pm = np.zeros_like(mask)
        pm[vv[pix_owner == j], uu[pix_owner == j]] = True
        pieces.append(pm)
    return pieces
