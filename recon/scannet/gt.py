"""The ground truth of a ScanNet scan: annotated object and mesh segment of every vertex.

ScanNet annotates a scan in two files beside its mesh `<scene>_vh_clean_2.ply`:
`<scene>_vh_clean_2.0.010000.segs.json` (`segIndices`: one over-segmentation segment per mesh
vertex) and `<scene>.aggregation.json` (`segGroups`: each object, `objectId` and `label`, as a
list of segments). Every object counts here, walls and floor included; vertices of no object are
0. The synthetic scene of `recon.synthetic` writes the same files.

- `read_vertex_objects`: the class-agnostic object per vertex.
- `load_scan_gt`: that plus the mesh and the segments, as the GT-derived simulated segmenter
  (`consistency.simulated`) needs them.
- `load_scannet_gt`: the instances of the 3D instance benchmark (its 18 classes, the rest void),
  each object's NYU40 class from `*_vh_clean_2.labels.ply` or, where that file holds raw
  category ids (ScanNet v1 style, as the shared scene0000_00), from its aggregation label mapped
  through ScanNet's `scannetv2-labels.combined.tsv` (`read_label_table`), as the official export
  does. The AP computed over them is `lift3d.instance_eval`.

A later object overwrites an earlier one on a shared segment, as the official export does.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lift3d.errors import InputError
from lift3d.io import ply_vertex_fields, read_json, read_ply

logger = logging.getLogger(__name__)


def gt_paths(scene_dir: str | Path, scene_name: str | None = None) -> tuple[Path, Path, Path]:
    """(segs.json, aggregation.json, mesh) of a ScanNet scan folder."""
    scene_dir = Path(scene_dir)
    name = scene_name or scene_dir.name
    return (
        scene_dir / f"{name}_vh_clean_2.0.010000.segs.json",
        scene_dir / f"{name}.aggregation.json",
        scene_dir / f"{name}_vh_clean_2.ply",
    )


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
            raise InputError(
                agg_path, f"segGroups[{k}] needs 'objectId' and a 'segments' list"
            ) from None
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
    `load_scannet_gt`, which keeps the 18 benchmark classes): the ground
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
    segs_path, agg_path, mesh_path = gt_paths(scene_dir, scene_name)
    for p, what in ((segs_path, "segs.json"), (agg_path, "aggregation.json"), (mesh_path, "mesh")):
        if not p.is_file():
            raise InputError(p, f"instance ground truth missing ({what} not found)")
    obj, labels, _ = vertex_objects(segs_path, agg_path)
    seg = read_vertex_segments(segs_path)
    ply = read_ply(mesh_path)
    v = ply_vertex_fields(ply, mesh_path, ("x", "y", "z"), "mesh vertices need x, y, z")
    xyz = np.stack([v["x"], v["y"], v["z"]], axis=-1).astype(np.float32)
    faces = np.zeros((0, 3), np.int64)
    if "face" in [e.name for e in ply.elements] and len(ply["face"].data):
        key = ply["face"].data.dtype.names[0]
        faces = np.vstack(ply["face"].data[key]).astype(np.int64)[:, :3]
    if len(xyz) != len(obj):
        raise InputError(
            mesh_path, f"mesh has {len(xyz)} vertices, {segs_path.name} has {len(obj)}"
        )
    return ScanGT(
        vertices=xyz, faces=faces, object=obj, segment=seg, labels=labels, source=Path(scene_dir)
    )


# ------------------------------------------------------- the 3D instance benchmark's ground truth

#: NYU40 ids of ScanNet's 18 instance benchmark classes (the script's VALID_CLASS_IDS)
VALID_CLASS_IDS = (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)


@dataclass
class GroundTruth:
    """Per-vertex instance ground truth of one scan.

    Attributes:
        instance: [V] int64 instance id per mesh vertex (`objectId + 1`), 0 = no instance.
        void: [V] bool, vertices in no benchmark-class instance (ignored when they fall under an
            unmatched prediction).
        num_vertices: V, the mesh's vertex count every prediction mask must have.
        labels: {instance id: NYU40 label} of the instances kept.
    """

    instance: np.ndarray
    void: np.ndarray
    num_vertices: int
    labels: dict[int, int] = field(default_factory=dict)


def _norm(name: str) -> str:
    # ScanNet v1 aggregations spell some categories without spaces ("trashcan", "dishrack")
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _bundled_label_map() -> Path | None:
    """open3d ships ScanNet's `scannetv2-labels.combined.tsv`; find it without importing open3d."""
    spec = importlib.util.find_spec("open3d")
    if spec is None or spec.origin is None:
        return None
    path = (
        Path(spec.origin).parent
        / "_ml3d"
        / "datasets"
        / "_resources"
        / "scannet"
        / "scannetv2-labels.combined.tsv"
    )
    return path if path.is_file() else None


def read_label_table(path: str | Path) -> dict[str, int]:
    """{category name: NYU40 id} from ScanNet's `scannetv2-labels.combined.tsv`.

    Keys are the exact `raw_category` names, plus every `raw_category` and `category` with case,
    spaces and punctuation removed (the first row of a normalised name wins).

    Raises:
        InputError: a missing file, or one without `raw_category` and `nyu40id` columns.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "ScanNet label map (scannetv2-labels.combined.tsv) not found")
    rows = list(csv.DictReader(path.read_text().splitlines(), delimiter="\t"))
    if not rows or not {"raw_category", "category", "nyu40id"} <= set(rows[0]):
        raise InputError(path, "expected tab-separated columns raw_category, category and nyu40id")
    parsed = [(row["raw_category"] or "", row["category"] or "", row["nyu40id"]) for row in rows]
    parsed = [(raw, cat, int(nyu)) for raw, cat, nyu in parsed if nyu and nyu.strip().isdigit()]
    mapping = {raw: nyu for raw, _, nyu in reversed(parsed)}  # reversed: the first row wins
    for raw, cat, nyu in parsed:
        mapping.setdefault(_norm(raw), nyu)
        mapping.setdefault(_norm(cat), nyu)
    return mapping


def load_scannet_gt(
    scene_dir: str | Path,
    scene_name: str | None = None,
    *,
    label_source: str = "auto",
    label_map: str | Path | None = None,
) -> GroundTruth:
    """Instance ground truth of a ScanNet scan, as the benchmark defines it.

    Each instance's NYU40 class comes from one of two sources:

    - `labels_ply`: the majority `label` of its vertices in `<scene>_vh_clean_2.labels.ply`,
      which in ScanNet v2 holds NYU40 ids.
    - `aggregation`: its `label` in the aggregation, mapped through ScanNet's label table
      (`raw_category` -> `nyu40id`) as the official export does. This is needed for ScanNet v1
      style files whose `labels.ply` holds raw category ids, not NYU40 (scene0000_00 in the
      shared data: wall 1, floor 3, values up to 230).
    - `auto`: `labels_ply` when every value of that file lies in 0..40, else `aggregation`.

    Args:
        scene_dir: the scan folder holding `<scene>.aggregation.json`,
            `<scene>_vh_clean_2.0.010000.segs.json` and `<scene>_vh_clean_2.labels.ply`.
        scene_name: the scan's name (default: the folder's name).
        label_source: `auto`, `labels_ply` or `aggregation` (above).
        label_map: `scannetv2-labels.combined.tsv` (default: the copy open3d ships).

    Returns:
        The per-vertex instances of the 18 benchmark classes and the void mask.

    Raises:
        InputError: a missing or malformed file, files that disagree on the vertex count, or a
            `labels.ply` that does not hold NYU40 ids when `label_source="labels_ply"`.
    """

    if label_source not in ("auto", "labels_ply", "aggregation"):
        raise InputError(
            None, f"label_source must be auto, labels_ply or aggregation, got {label_source!r}"
        )
    scene_dir = Path(scene_dir)
    name = scene_name or scene_dir.name
    agg_path = scene_dir / f"{name}.aggregation.json"
    segs_path = scene_dir / f"{name}_vh_clean_2.0.010000.segs.json"
    labels_path = scene_dir / f"{name}_vh_clean_2.labels.ply"

    instance, group_label, n_groups = vertex_objects(segs_path, agg_path)
    num_vertices = len(instance)

    nyu = None
    if label_source != "aggregation":
        vertex = ply_vertex_fields(
            read_ply(labels_path), labels_path, ("label",), "NYU40 label per vertex"
        )
        nyu = np.asarray(vertex["label"], np.int64)
        if len(nyu) != num_vertices:
            raise InputError(
                labels_path, f"has {len(nyu)} vertices, {segs_path.name} has {num_vertices}"
            )
        if nyu.size and (nyu.min() < 0 or nyu.max() > 40):
            if label_source == "labels_ply":
                raise InputError(
                    labels_path,
                    f"labels span {nyu.min()}..{nyu.max()}: not NYU40 ids (0..40); use label_source='aggregation'",
                )
            logger.info(
                "%s holds labels up to %d, not NYU40: classes from the aggregation instead",
                labels_path.name,
                nyu.max(),
            )
            nyu = None
    names = None
    if nyu is None:
        map_path = Path(label_map) if label_map is not None else _bundled_label_map()
        if map_path is None:
            raise InputError(
                None,
                "no NYU40 labels: pass label_map=scannetv2-labels.combined.tsv (ScanNet's label table)",
            )
        names = read_label_table(map_path)

    labels: dict[int, int] = {}
    unknown = set()
    for inst in np.unique(instance[instance > 0]):
        on = instance == inst
        if nyu is not None:
            values, counts = np.unique(nyu[on], return_counts=True)
            label = int(values[np.argmax(counts)])
        else:
            raw = group_label[int(inst)]
            label = names.get(raw, names.get(_norm(raw), 0))
            if label == 0:
                unknown.add(raw)
        if label in VALID_CLASS_IDS:
            labels[int(inst)] = label
        else:
            instance[on] = 0
    if unknown:
        logger.warning(
            "%s: categories not in the label table, treated as void: %s",
            agg_path.name,
            ", ".join(sorted(unknown)),
        )
    void = instance == 0
    logger.info(
        "%s: %d of %d annotated objects are benchmark-class instances", name, len(labels), n_groups
    )
    return GroundTruth(instance=instance, void=void, num_vertices=num_vertices, labels=labels)
