"""Files lift3d writes for other tools: labeled PLY point clouds and meshes, the ScanNet instance format.

`points.ply` keeps the scan's colours beside `label`; plain viewers (MeshLab, CloudCompare,
open3d's legacy reader) show only red/green/blue, so `points_by_instance.ply` and `mesh.ply` carry
each instance's viewer colour (`lift3d.viewers.palette.label_colors`) in red/green/blue instead.

Every file appears whole or not at all: it is written under a temporary name beside its final
path and renamed (`lift3d.io.atomic_path`). The ScanNet benchmark format shares one
`pred_mask/` folder between all scenes of a submission, so its files are renamed one by one and
the scene's index file, the only one the evaluator starts from, is renamed last: an interrupted
run leaves either the previous index or the new one, never an index naming a missing mask.

ScanNet instance format (class-agnostic, as lift3d predicts instances without classes):

```
<out>/<scene>.txt                 one line per instance: `pred_mask/<scene>_<k:03d>.txt 1 <confidence>`
<out>/pred_mask/<scene>_<k>.txt   one `0` or `1` per mesh vertex, in vertex order
```
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lift3d.errors import InputError
from lift3d.io import atomic_path, write_ply

if TYPE_CHECKING:
    from lift3d.recon.scene import Scene

logger = logging.getLogger(__name__)

#: class id written for every instance: lift3d's instances are class-agnostic
AGNOSTIC_CLASS_ID = 1


def _check_per_point(name: str, array: np.ndarray, n: int) -> np.ndarray:
    array = np.asarray(array)
    if array.shape != (n,):
        raise InputError(
            None, f"{name} must have shape [{n}] (one value per point), got {list(array.shape)}"
        )
    return array


def write_points_ply(
    path: str | Path,
    xyz: np.ndarray,  # [P, 3] float32 metres, world frame
    rgb: np.ndarray,  # [P, 3] uint8
    label: np.ndarray,  # [P] int32, 0 = unlabeled
    confidence: np.ndarray,  # [P] float32 in [0, 1]
    *,
    superpoint: np.ndarray | None = None,  # [P] int32 superpoint of each point
) -> None:
    """Write a labeled point cloud: binary PLY with x y z red green blue label confidence
    (+ superpoint when given).

    Args:
        path: output file (`points.ply`); written to a temporary name and renamed.
        xyz: [P, 3] point positions in metres (world frame), stored as float32.
        rgb: [P, 3] uint8 colours.
        label: [P] instance IDs (0 = unlabeled), stored as int32.
        confidence: [P] winning share of the votes, stored as float32.
        superpoint: [P] the superpoint each point belongs to (the pieces votes were pooled
            over), stored as int32.

    Raises:
        InputError: arrays of mismatched shapes.
    """
    vertex = _vertex_array(xyz, rgb, label, confidence, superpoint)
    write_ply(path, vertex, comments=["lift3d labeled points: label 0 = unlabeled"])


def _instance_vertex(xyz: np.ndarray, label: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """x y z red green blue label confidence, coloured by instance (unlabeled grey)."""
    from lift3d.viewers.palette import UNLABELED_GREY, label_colors

    colours = label_colors(label, unlabeled=UNLABELED_GREY)
    return _vertex_array(xyz, colours, label, confidence)


def _vertex_array(xyz, rgb, label, confidence, superpoint=None) -> np.ndarray:
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise InputError(None, f"xyz must have shape [P, 3], got {list(xyz.shape)}")
    n = len(xyz)
    rgb = np.asarray(rgb)
    if rgb.shape != (n, 3):
        raise InputError(None, f"rgb must have shape [{n}, 3], got {list(rgb.shape)}")
    label = _check_per_point("label", label, n)
    confidence = _check_per_point("confidence", confidence, n)
    fields = [
        ("x", "<f4"),
        ("y", "<f4"),
        ("z", "<f4"),
        ("red", "u1"),
        ("green", "u1"),
        ("blue", "u1"),
        ("label", "<i4"),
        ("confidence", "<f4"),
    ]
    if superpoint is not None:
        superpoint = _check_per_point("superpoint", superpoint, n)
        fields.append(("superpoint", "<i4"))
    vertex = np.empty(n, dtype=fields)
    if superpoint is not None:
        vertex["superpoint"] = superpoint
    for k, axis in enumerate("xyz"):
        vertex[axis] = xyz[:, k]
    for k, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = rgb[:, k]
    vertex["label"] = label
    vertex["confidence"] = confidence
    return vertex


def write_instance_points_ply(
    path: str | Path,
    xyz: np.ndarray,  # [P, 3] float32 metres, world frame
    label: np.ndarray,  # [P] int32, 0 = unlabeled
    confidence: np.ndarray,  # [P] float32 in [0, 1]
) -> None:
    """Write the labeled points coloured by instance (`points_by_instance.ply`), for plain viewers.

    Same fields as `write_points_ply`, but red/green/blue hold each instance's viewer colour
    (unlabeled points grey) instead of the scan's colours.

    Raises:
        InputError: arrays of mismatched shapes.
    """
    write_ply(
        path,
        _instance_vertex(xyz, label, confidence),
        comments=["lift3d labeled points coloured by instance: label 0 = unlabeled (grey)"],
    )


def write_labeled_mesh(
    path: str | Path,
    xyz: np.ndarray,  # [P, 3] float32 metres, world frame: the mesh's vertices
    faces: np.ndarray,  # [F, 3] int vertex indices
    label: np.ndarray,  # [P] int32, 0 = unlabeled
    confidence: np.ndarray,  # [P] float32 in [0, 1]
) -> None:
    """Write the scan's mesh with its vertices labeled (`mesh.ply`): faces kept, vertex colours
    are the instances' viewer colours (unlabeled grey), plus `label` and `confidence` per vertex.

    Raises:
        InputError: arrays of mismatched shapes, or faces naming a vertex the mesh lacks.
    """
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise InputError(None, f"faces must have shape [F, 3], got {list(faces.shape)}")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(xyz)):
        raise InputError(
            None, f"faces index vertices 0..{len(xyz) - 1}, found {faces.min()}..{faces.max()}"
        )
    write_ply(
        path,
        _instance_vertex(xyz, label, confidence),
        faces=faces,
        comments=[
            "lift3d labeled mesh: vertex colour = instance colour, label 0 = unlabeled (grey)"
        ],
    )


#: scene kinds whose mesh is a ScanNet mesh, the one the ScanNet benchmark's masks index
SCANNET_KINDS = ("scannet", "sens")


def write_mesh_outputs(
    out: Path,
    scene: Scene,
    mesh_path: Path | None,
    xyz: np.ndarray,  # [P, 3] the labeled points (the mesh's vertices when mesh_path is given)
    faces: np.ndarray | None,  # [F, 3] the mesh's triangles, or None
    label: np.ndarray,  # [P] int
    confidence: np.ndarray,  # [P] float
) -> list[str]:
    """`mesh.ply` when the points are a mesh's vertices, and the ScanNet export (`scannet/`) when
    that mesh is a ScanNet scan's; one warning when the export is skipped. Returns what it wrote."""
    written = []
    if mesh_path is not None and faces is not None and len(faces):
        write_labeled_mesh(out / "mesh.ply", xyz, faces, label, confidence)
        written.append("mesh.ply")
    if mesh_path is not None and scene.kind in SCANNET_KINDS:
        write_scannet_instances(out / "scannet", scene.name, label, confidence)
        written.append("scannet")
    elif mesh_path is None:
        logger.warning(
            "ScanNet export skipped: the points are fused pointmaps, not a ScanNet mesh's vertices "
            "(give the scan's *_vh_clean_2.ply with --mesh PATH)"
        )
    else:
        logger.warning(
            "ScanNet export skipped: %s is not a ScanNet scan's mesh (the scene is %s)",
            mesh_path.name,
            scene.kind,
        )
    return written


def _mask_name(scene_name: str, k: int) -> str:
    return f"{scene_name}_{k:03d}.txt"


def _mask_bytes(mask: np.ndarray) -> bytes:
    """One `0`/`1` per line, as ScanNet's evaluation reads them (np.loadtxt-compatible)."""
    out = np.empty((len(mask), 2), np.uint8)
    out[:, 0] = np.where(mask, ord("1"), ord("0"))
    out[:, 1] = ord("\n")
    return out.tobytes()


def write_scannet_instances(
    out_dir: str | Path,
    scene_name: str,
    label: np.ndarray,  # [P] int, one per mesh vertex, 0 = unlabeled
    confidence: np.ndarray,  # [P] float in [0, 1]
    *,
    min_points: int = 0,
) -> list[int]:
    """Write one scene's instances in the ScanNet benchmark format (class-agnostic).

    Each instance ID > 0 becomes one mask file; its confidence is the mean confidence of its
    points. Mask files of an earlier run of the same scene that the new index no longer lists are
    removed after the new index is in place.

    Args:
        out_dir: the submission folder (shared by all scenes).
        scene_name: e.g. `scene0000_00`; names the index file and prefixes the mask files.
        label: [P] instance ID per mesh vertex (0 = unlabeled).
        confidence: [P] per-vertex confidence.
        min_points: instances with fewer vertices are not written.

    Returns:
        The instance IDs written, in file order (mask k holds the k-th).

    Raises:
        InputError: mismatched shapes, negative labels or a scene name that is not a file name.
    """
    if not scene_name or not re.fullmatch(r"[A-Za-z0-9_.-]+", scene_name):
        raise InputError(
            None, f"scene name {scene_name!r} cannot name a file: use letters, digits, _ . -"
        )
    label = np.asarray(label)
    if label.ndim != 1:
        raise InputError(None, f"label must have shape [P], got {list(label.shape)}")
    confidence = _check_per_point("confidence", confidence, len(label)).astype(np.float64)
    if (label < 0).any():
        raise InputError(None, "label must be >= 0 (0 = unlabeled)")
    out_dir = Path(out_dir)
    mask_dir = out_dir / "pred_mask"
    mask_dir.mkdir(parents=True, exist_ok=True)

    ids, counts = np.unique(label[label > 0], return_counts=True)
    ids = [int(i) for i, c in zip(ids, counts) if c >= max(min_points, 1)]
    lines = []
    for k, inst in enumerate(ids):
        mask = label == inst
        name = _mask_name(scene_name, k)
        with atomic_path(mask_dir / name) as tmp:
            tmp.write_bytes(_mask_bytes(mask))
        lines.append(f"pred_mask/{name} {AGNOSTIC_CLASS_ID} {confidence[mask].mean():.6f}\n")
    with atomic_path(out_dir / f"{scene_name}.txt") as tmp:
        tmp.write_text("".join(lines))

    kept = {_mask_name(scene_name, k) for k in range(len(ids))}
    pattern = re.compile(re.escape(scene_name) + r"_\d{3,}\.txt")
    for old in mask_dir.iterdir():
        if pattern.fullmatch(old.name) and old.name not in kept:
            old.unlink()
    logger.info("%s: %d instances written to %s", scene_name, len(ids), out_dir)
    return ids


def read_scannet_instances(
    out_dir: str | Path,
    scene_name: str,
    num_vertices: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Read one scene's predicted instances in the ScanNet benchmark format.

    Mask paths in the index are relative to the index file's folder, as in ScanNet's own
    evaluation script. The class id of each line is checked to be an integer and otherwise ignored.

    Args:
        out_dir: the folder holding `<scene_name>.txt` and `pred_mask/`.
        scene_name: the scene whose index to read.
        num_vertices: vertices of the scene's mesh: every mask must have exactly this many values.

    Returns:
        masks: [K, P] bool, one row per index line.
        confidences: [K] float32.

    Raises:
        InputError: a missing index or mask file, a malformed line, a mask of the wrong length
            or holding values other than 0 and 1 (the message names the file).
    """
    out_dir = Path(out_dir)
    index = out_dir / f"{scene_name}.txt"
    if not index.is_file():
        raise InputError(index, f"ScanNet instance index of {scene_name} not found")
    masks, confidences = [], []
    for n, line in enumerate(index.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            raise InputError(
                index, f"line {n}: expected '<mask file> <class id> <confidence>', found {line!r}"
            )
        rel, class_id, conf = parts
        try:
            int(class_id)
            conf_value = float(conf)
        except ValueError:
            raise InputError(
                index,
                f"line {n}: class id must be an integer and confidence a number, found {line!r}",
            ) from None
        mask_path = out_dir / rel
        if not mask_path.is_file():
            raise InputError(mask_path, f"mask file listed on line {n} of {index.name} not found")
        try:
            values = np.array(mask_path.read_bytes().split(), dtype=np.int64)
        except ValueError:
            raise InputError(
                mask_path, "mask file must hold one integer (0 or 1) per line"
            ) from None
        if len(values) != num_vertices:
            raise InputError(
                mask_path, f"mask has {len(values)} values, the mesh has {num_vertices} vertices"
            )
        if not np.isin(values, (0, 1)).all():
            raise InputError(mask_path, "mask values must be 0 or 1")
        masks.append(values.astype(bool))
        confidences.append(conf_value)
    masks_arr = np.stack(masks) if masks else np.zeros((0, num_vertices), bool)
    return masks_arr, np.asarray(confidences, np.float32)
