"""The per-vertex ground truth of a ScanNet scan: annotated object and mesh segment of every vertex.

ScanNet annotates a scan in two files beside its mesh `<scene>_vh_clean_2.ply`:
`<scene>_vh_clean_2.0.010000.segs.json` (`segIndices`: one over-segmentation segment per mesh
vertex) and `<scene>.aggregation.json` (`segGroups`: each object, `objectId` and `label`, as a
list of segments). Every object counts here, walls and floor included; vertices of no object are
0. The synthetic scene of `recon.synthetic` writes the same files.

`read_vertex_objects` is the class-agnostic object per vertex; `load_scan_gt` adds the mesh and
the segments, as the GT-derived simulated segmenter (`consistency.simulated`) needs them. The
ScanNet benchmark's class filtering lives with the 3D evaluation (`lift3d.instance_eval`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lift3d.errors import InputError
from lift3d.io import read_json


def gt_paths(scene_dir: str | Path, scene_name: str | None = None) -> tuple[Path, Path, Path]:
    """(segs.json, aggregation.json, mesh) of a ScanNet scan folder."""
    scene_dir = Path(scene_dir)
    name = scene_name or scene_dir.name
    return (scene_dir / f"{name}_vh_clean_2.0.010000.segs.json", scene_dir / f"{name}.aggregation.json",
            scene_dir / f"{name}_vh_clean_2.ply")


def read_vertex_segments(segs_path: str | Path) -> np.ndarray:  # [V] int64
    """ScanNet's over-segmentation: the segment id of every mesh vertex (`segIndices`)."""
    segs_path = Path(segs_path)
    segs = read_json(segs_path, "ScanNet over-segmentation (segs.json)")
    if not isinstance(segs.get("segIndices"), list):
        raise InputError(segs_path, "expected a 'segIndices' list (one segment id per vertex)")
    return np.asarray(segs["segIndices"], np.int64)


def vertex_objects(segs_path: Path, agg_path: Path) -> tuple[np.ndarray, dict[int, str], int]:
    """(instance [V] objectId + 1 per vertex (0 = none), object -> aggregation label, number of
    objects) from ScanNet's over-segmentation and aggregation files."""
    seg_of_vertex = read_vertex_segments(segs_path)
    agg = read_json(agg_path, "ScanNet aggregation")
    groups = agg.get("segGroups")
    if not isinstance(groups, list):
        raise InputError(agg_path, "expected a 'segGroups' list")
    # segment id -> vertices, via a sort (segment ids are sparse and large)
    order = np.argsort(seg_of_vertex, kind="stable")
    seg_sorted = seg_of_vertex[order]
    instance = np.zeros(len(seg_of_vertex), np.int64)
    group_label: dict[int, str] = {}
    for k, group in enumerate(groups):
        try:
            object_id = int(group["objectId"]) + 1  # 1-based, as the official export
            seg_ids = np.asarray(group["segments"], np.int64).reshape(-1)
            group_label[object_id] = str(group.get("label", ""))
        except (KeyError, TypeError, ValueError):
            raise InputError(agg_path, f"segGroups[{k}] needs 'objectId' and a 'segments' list") from None
        lo = np.searchsorted(seg_sorted, seg_ids, side="left")
        hi = np.searchsorted(seg_sorted, seg_ids, side="right")
        verts = np.concatenate([order[a:b] for a, b in zip(lo, hi)]) if len(seg_ids) else order[:0]
        # a later object overwrites an earlier one on a shared segment, as the official export
        instance[verts] = object_id
    return instance, group_label, len(groups)


def read_vertex_objects(
    scene_dir: str | Path,
    scene_name: str | None = None,
    *,
    exclude: tuple[str, ...] = (),
) -> np.ndarray:
    """[V] int64 annotated object per mesh vertex of a ScanNet scan: objectId + 1, 0 = none.

    Every object of the aggregation counts, whatever its class (unlike
    `lift3d.instance_eval.load_scannet_gt`, which keeps the 18 benchmark classes): the ground
    truth of class-agnostic checks such as "does a lifted instance cover one object".

    Args:
        scene_dir: the scan folder holding `<scene>.aggregation.json` and
            `<scene>_vh_clean_2.0.010000.segs.json`.
        scene_name: the scan's name (default: the folder's name).
        exclude: aggregation labels whose objects count as none (e.g. ("floor", "wall")).

    Raises:
        InputError: a missing or malformed file.
    """
    segs_path, agg_path, _ = gt_paths(scene_dir, scene_name)
    instance, group_label, _ = vertex_objects(segs_path, agg_path)
    if exclude:
        drop = [k for k, lab in group_label.items() if lab in set(exclude)]
        instance[np.isin(instance, drop)] = 0
    return instance


def has_instance_gt(scene_dir: str | Path, scene_name: str | None = None) -> bool:
    """Whether the folder holds a ScanNet scan's instance GT (segs.json, aggregation.json, mesh)."""
    return all(p.is_file() for p in gt_paths(scene_dir, scene_name))


@dataclass
class ScanGT:
    """A scan's mesh with the annotated object and the over-segmentation segment of each vertex.

    Attributes:
        vertices: [V, 3] float32 metres, world frame.
        faces: [F, 3] int64 vertex indices (may be [0, 3]).
        object: [V] int64 objectId + 1 per vertex, 0 = no object.
        segment: [V] int64 ScanNet segment id per vertex.
        labels: {object: aggregation label}.
        source: the scan folder.
    """

    vertices: np.ndarray
    faces: np.ndarray
    object: np.ndarray
    segment: np.ndarray
    labels: dict[int, str] = field(default_factory=dict)
    source: Path | None = None


def load_scan_gt(scene_dir: str | Path, scene_name: str | None = None) -> ScanGT:
    """The mesh, per-vertex objects and per-vertex segments of a ScanNet-layout scan.

    Raises:
        InputError: a missing or malformed file, or files that disagree on the vertex count.
    """
    from plyfile import PlyData, PlyParseError

    segs_path, agg_path, mesh_path = gt_paths(scene_dir, scene_name)
    for p, what in ((segs_path, "segs.json"), (agg_path, "aggregation.json"), (mesh_path, "mesh")):
        if not p.is_file():
            raise InputError(p, f"instance ground truth missing ({what} not found)")
    obj, labels, _ = vertex_objects(segs_path, agg_path)
    seg = read_vertex_segments(segs_path)
    try:
        with open(mesh_path, "rb") as f:
            ply = PlyData.read(f)
    except (PlyParseError, ValueError, EOFError) as e:
        raise InputError(mesh_path, f"not a readable PLY file ({e})") from None
    if "vertex" not in [e.name for e in ply.elements]:
        raise InputError(mesh_path, "PLY has no 'vertex' element")
    v = ply["vertex"].data
    xyz = np.stack([v["x"], v["y"], v["z"]], axis=-1).astype(np.float32)
    faces = np.zeros((0, 3), np.int64)
    if "face" in [e.name for e in ply.elements] and len(ply["face"].data):
        key = ply["face"].data.dtype.names[0]
        faces = np.vstack(ply["face"].data[key]).astype(np.int64)[:, :3]
    if len(xyz) != len(obj):
        raise InputError(mesh_path, f"mesh has {len(xyz)} vertices, {segs_path.name} has {len(obj)}")
    return ScanGT(vertices=xyz, faces=faces, object=obj, segment=seg, labels=labels, source=Path(scene_dir))
