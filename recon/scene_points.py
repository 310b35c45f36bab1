"""The 3D points a run labels, and their superpoints: mesh vertices, splat centres or fused pointmaps.

A scan with a mesh (ScanNet `*_vh_clean_2.ply`, what the ScanNet benchmark scores, or `--mesh`)
gives its vertices and faces; a scene whose depth was rendered from 3DGS splats gives the splat
centres; any other scene with geometry gives the views' pointmaps fused on a voxel grid
(`fuse_pointmaps`). `scene_points` picks one and computes the superpoints over it
(`lift3d.recon.superpoints`), which the geometric segmenter, the votes and the multi-view merging
all share (`ScenePoints.adjacency`, computed once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from lift3d.checks import check_positive_finite
from lift3d.errors import InputError
from lift3d.io import ply_vertex_fields, read_ply
from lift3d.recon.scene import Frame, Scene
from lift3d.recon.splats import splat_points
from lift3d.recon.superpoints import (
    SuperpointConfig,
    Superpoints,
    knn_graph,
    mesh_edges,
    scene_superpoints,
    superpoint_adjacency,
)

logger = logging.getLogger(__name__)


@dataclass
class ScenePoints:
    """The scene's 3D points (mesh vertices, splat centres or fused pointmaps) with their superpoints."""

    xyz: np.ndarray  # [P, 3] float32 metres, world frame
    rgb: np.ndarray  # [P, 3] uint8
    faces: np.ndarray | None  # [F, 3] int64 when the points are a mesh's vertices
    superpoints: Superpoints
    source: str
    mesh_path: Path | None = None

    @cached_property
    def adjacency(
        self,
    ) -> np.ndarray:  # [E, 2] adjacent superpoints (mesh edges, else k-NN), computed once
        P = len(self.xyz)
        edges = (
            mesh_edges(self.faces, P)
            if self.faces is not None and len(self.faces)
            else knn_graph(self.xyz, 8)[0]
        )
        return superpoint_adjacency(self.superpoints.index, edges, self.superpoints.count)[0]


def scene_points(
    scene: Scene,
    *,
    mesh: Path | None = None,
    splats: Path | None = None,
    voxel_size: float = 0.02,
    superpoints: SuperpointConfig = SuperpointConfig(),
    progress: Callable[[Iterable[Frame]], Iterable[Frame]] | None = None,
) -> ScenePoints:
    """The points a run labels, with their superpoints: mesh vertices (with faces) when the scan
    has a mesh (or `mesh` gives one), splat centres when its depth was rendered from `splats`,
    else the views' fused pointmaps on a `voxel_size` grid.

    Args:
        scene: the scene, with geometry (depth + poses, or depth rendered from `splats`).
        mesh: a mesh PLY to label instead of the scan's own (`scene.mesh_path`).
        splats: the 3DGS PLY the scene's depth was rendered from.
        voxel_size: voxel edge of the fused pointmaps, metres.
        superpoints: how superpoints are made when the scan has no `segs.json`.
        progress: wraps the frames while they are fused (the pipeline's progress bar).
    """
    faces = None
    mesh_path = Path(mesh) if mesh is not None else scene.mesh_path
    if mesh_path is not None:
        xyz, rgb = read_mesh_vertices(mesh_path)
        faces = read_mesh_faces(mesh_path)
        if len(faces) == 0:
            logger.warning(
                "%s has no faces: superpoints over a k-NN graph of its vertices", mesh_path
            )
            faces = None
        source = f"mesh vertices of {mesh_path.name}"
    elif scene.meta.get("depth_source") == "splats":
        xyz, rgb = splat_points(splats)
        source = f"splat centres of {Path(splats).name}"
    else:
        frames = iter(scene)
        xyz, rgb = fuse_pointmaps(
            frames if progress is None else progress(frames), voxel_size=voxel_size
        )
        source = f"fused pointmaps, voxel {voxel_size} m"
    if faces is not None:
        areas = np.linalg.norm(
            np.cross(xyz[faces[:, 1]] - xyz[faces[:, 0]], xyz[faces[:, 2]] - xyz[faces[:, 0]]),
            axis=1,
        )
        bad = int((areas <= 0).sum())
        if bad:
            logger.warning(
                "%s: %d of %d faces are degenerate (zero area); they are ignored",
                mesh_path,
                bad,
                len(faces),
            )
            faces = faces[areas > 0]
    sp = scene_superpoints(xyz, faces=faces, colors=rgb, mesh_path=mesh_path, config=superpoints)
    return ScenePoints(
        xyz=xyz, rgb=rgb, faces=faces, superpoints=sp, source=source, mesh_path=mesh_path
    )


def read_mesh_vertices(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The vertices of a mesh PLY (ScanNet `*_vh_clean_2.ply`) and their colours.

    Args:
        path: a PLY file with a `vertex` element holding x, y, z (and usually red, green, blue).

    Returns:
        xyz: [P, 3] float32 metres, in the mesh's frame (ScanNet: the scan's world frame).
        rgb: [P, 3] uint8 colours; mid grey when the file has none.

    Raises:
        InputError: the file is missing, not a PLY, or its vertices lack x, y or z.
    """
    path = Path(path)
    data = ply_vertex_fields(read_ply(path), path, ("x", "y", "z"), "mesh vertices need x, y, z")
    xyz = np.stack([data["x"], data["y"], data["z"]], axis=-1).astype(np.float32)
    names = data.dtype.names
    if all(c in names for c in ("red", "green", "blue")):
        rgb = np.stack([data["red"], data["green"], data["blue"]], axis=-1)
        if rgb.dtype != np.uint8:
            # float colours in [0, 1] are the other convention found in the wild
            rgb = np.clip(rgb * 255.0 if rgb.dtype.kind == "f" else rgb, 0, 255).round()
        rgb = rgb.astype(np.uint8)
    else:
        logger.info("%s: vertices have no colours; using grey", path)
        rgb = np.full((len(xyz), 3), 128, np.uint8)
    return xyz, rgb


def read_mesh_faces(path: str | Path) -> np.ndarray:  # -> [F, 3] int64 vertex indices
    """The triangles of a mesh PLY (`face` element, `vertex_indices`); [0, 3] when it has none."""
    path = Path(path)
    ply = read_ply(path)
    if "face" not in [e.name for e in ply.elements]:
        return np.zeros((0, 3), np.int64)
    face = ply["face"]
    key = (
        "vertex_indices" if "vertex_indices" in face.data.dtype.names else face.data.dtype.names[0]
    )
    rows = face.data[key]
    try:
        faces = np.vstack(rows).astype(np.int64) if len(rows) else np.zeros((0, 3), np.int64)
    except ValueError:
        raise InputError(path, "mesh faces are not all triangles") from None
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise InputError(
            path, f"mesh faces must be triangles, found {faces.shape[1]} indices per face"
        )
    return faces


def _voxel_keys(xyz: np.ndarray, voxel_size: float) -> np.ndarray:
    """[M] int64 key of each point's voxel on the fixed grid with a corner at the origin."""
    ijk = np.floor(xyz / voxel_size).astype(np.int64) + (1 << 20)
    if (ijk < 0).any() or (ijk >= 1 << 21).any():
        raise InputError(
            None,
            f"points lie more than {(1 << 20) * voxel_size:.0f} m from the origin for voxel {voxel_size}",
        )
    return (ijk[:, 0] << 42) | (ijk[:, 1] << 21) | ijk[:, 2]


def _merge_voxels(
    keys: np.ndarray, sums: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum the rows of `sums` [M, 6] and `counts` [M] that share a voxel key."""
    uniq, inverse = np.unique(keys, return_inverse=True)
    out = np.stack(
        [
            np.bincount(inverse, weights=sums[:, c], minlength=len(uniq))
            for c in range(sums.shape[1])
        ],
        axis=1,
    )
    return uniq, out, np.bincount(inverse, weights=counts, minlength=len(uniq))


def fuse_pointmaps(
    frames: Iterable[Frame],
    *,
    voxel_size: float = 0.02,
    chunk_frames: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """The scene's point set when it has no mesh: every valid pointmap point, on a voxel grid.

    Each voxel of the fixed grid (a corner at the world origin, edge `voxel_size`) holding at least
    one point becomes one point at the mean position and colour of its points. Frames are
    reduced a chunk at a time into per-voxel sums and counts, so memory is bounded by the number
    of occupied voxels, and the result is exactly that of downsampling all points at once, in
    whatever order or chunks the frames come (open3d's `voxel_down_sample` places its grid at
    each cloud's own minimum corner, so downsampling chunks with it and then again is not).

    Args:
        frames: views with `pointmap`, `valid` and `image` at the same size.
        voxel_size: voxel edge in metres.
        chunk_frames: frames reduced together (more: fewer merges, more memory).

    Returns:
        xyz: [P, 3] float32 world points, sorted by voxel.
        rgb: [P, 3] uint8 mean colours.

    Raises:
        InputError: a non-positive voxel size, a frame without a pointmap, or no valid point.
    """
    check_positive_finite(voxel_size, "voxel_size", unit="metres")
    keys = np.zeros(0, np.int64)
    sums = np.zeros((0, 6), np.float64)
    counts = np.zeros(0, np.float64)
    pending: list[np.ndarray] = []

    def flush() -> None:
        nonlocal keys, sums, counts
        if not pending:
            return
        block = np.concatenate(pending)
        pending.clear()
        keys, sums, counts = _merge_voxels(
            np.concatenate([keys, _voxel_keys(block[:, :3], voxel_size)]),
            np.concatenate([sums, block]),
            np.concatenate([counts, np.ones(len(block))]),
        )

    for n, frame in enumerate(frames, start=1):
        if frame.pointmap is None or frame.valid is None:
            raise InputError(
                None,
                f"frame {frame.name} has no pointmap: fusing points needs geometry (depth + poses or MASt3R)",
            )
        valid = frame.valid & np.isfinite(frame.pointmap).all(axis=-1)
        pending.append(
            np.concatenate([frame.pointmap[valid], frame.image[valid]], axis=1).astype(np.float64)
        )
        if n % chunk_frames == 0:
            flush()
    flush()
    if not len(keys):
        raise InputError(None, "no valid pointmap point in any frame: nothing to fuse")
    mean = sums / counts[:, None]
    return mean[:, :3].astype(np.float32), np.clip(mean[:, 3:].round(), 0, 255).astype(np.uint8)


def _fuse_pointmaps_reference(
    frames: Iterable[Frame], *, voxel_size: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """Pure-Python twin of `fuse_pointmaps`: a dict from voxel index to point and colour sums."""
    cells: dict[tuple[int, int, int], list[float]] = {}
    for frame in frames:
        for p, c in zip(frame.pointmap[frame.valid], frame.image[frame.valid]):
            cell = cells.setdefault(
                tuple(int(k) for k in np.floor(p.astype(np.float64) / voxel_size)), [0.0] * 7
            )
            for k in range(3):
                cell[k] += float(p[k])
                cell[3 + k] += float(c[k])
            cell[6] += 1
    order = sorted(cells)
    acc = np.array([cells[k] for k in order], np.float64).reshape(-1, 7)
    mean = acc[:, :6] / acc[:, 6:]
    return mean[:, :3].astype(np.float32), np.clip(mean[:, 3:].round(), 0, 255).astype(np.uint8)
