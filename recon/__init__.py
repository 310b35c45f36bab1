"""Scenes in; cameras, per-view pointmaps, correspondences and the points to label out.

Entry point: :func:`lift3d.recon.load_scene` (every format, detected from the folder). The
points a run labels, with their superpoints: :func:`lift3d.recon.scene_points`. Readers of one
format live in their modules (`lift3d.recon.scannet`, `colmap`, `nerfstudio`, `redwood`,
`images`), the MASt3R backend in `lift3d.recon.mast3r`, depth rendered from splats in
`lift3d.recon.splat_depth`.

Every name below is light to import (numpy, PIL): scipy, open3d and torch load where used.
"""

from lift3d.recon.detect import load_scene
from lift3d.recon.scene import Frame, Scene, select_frames
from lift3d.recon.scene_points import (
    ScenePoints,
    fuse_pointmaps,
    read_mesh_faces,
    read_mesh_vertices,
    scene_points,
)
from lift3d.recon.splats import Splats, read_splats
from lift3d.recon.superpoints import SuperpointConfig, Superpoints, scene_superpoints
from lift3d.recon.synthetic import make_synthetic_scene

__all__ = [
    "Frame",
    "Scene",
    "ScenePoints",
    "Splats",
    "SuperpointConfig",
    "Superpoints",
    "fuse_pointmaps",
    "load_scene",
    "make_synthetic_scene",
    "read_mesh_faces",
    "read_mesh_vertices",
    "read_splats",
    "scene_points",
    "scene_superpoints",
    "select_frames",
]
