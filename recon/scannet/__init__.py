"""ScanNet: a scan as SensReader exports it or as its raw `.sens` file, and its ground truth.

- `export`: the SensReader export, `color/ depth/ pose/ intrinsic/` (`read_scannet_export`).
- `sens`: the raw `.sens` file, read lazily frame by frame (`read_sens`).
- `gt`: the annotated object and segment of each mesh vertex, and the 3D instance benchmark's
  ground truth (`read_vertex_objects`, `load_scan_gt`, `load_scannet_gt`).

`lift3d.recon.load_scene` picks the reader; these are for reading one of them directly.
"""

from lift3d.recon.scannet.export import find_mesh, is_scannet_export, read_scannet_export
from lift3d.recon.scannet.gt import (
    VALID_CLASS_IDS,
    GroundTruth,
    ScanGT,
    gt_paths,
    has_instance_gt,
    load_scan_gt,
    load_scannet_gt,
    read_label_table,
    read_vertex_objects,
    read_vertex_segments,
    vertex_objects,
)
from lift3d.recon.scannet.sens import SensFile, read_sens

__all__ = [
    "VALID_CLASS_IDS",
    "GroundTruth",
    "ScanGT",
    "SensFile",
    "find_mesh",
    "gt_paths",
    "has_instance_gt",
    "is_scannet_export",
    "load_scan_gt",
    "load_scannet_gt",
    "read_label_table",
    "read_scannet_export",
    "read_sens",
    "read_vertex_objects",
    "read_vertex_segments",
    "vertex_objects",
]
