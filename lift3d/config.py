"""The configuration of a `lift3d segment` run: a dataclass, from which the CLI is derived.

Light on purpose (no torch, no open3d): `lift3d --help` imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lift3d.consistency.metric_stream import DEFAULT_MAX_POINTS
from lift3d.consistency.simulated import SimulatedConfig
from lift3d.consistency.tracker import TrackerConfig
from lift3d.recon.mast3r import Mast3rOptions


@dataclass
class SegmentConfig:
    """Run the whole flow on one scene: geometry, consistent masks, lifting, export, metric, previews."""

    scene: Path
    """Scene folder or file: ScanNet export, .sens, image folder, video, COLMAP, transforms.json, Redwood."""
    out: Path | None = None
    """Output folder; default: outputs/<scene name>."""
    format: Literal["auto", "scannet", "sens", "nerfstudio", "colmap", "redwood", "video", "images"] = "auto"
    """Scene format; `auto` detects it from the folder's content."""
    size: tuple[int, int] | None = None
    """Working resolution W H; default: the depth size for RGB-D scans, else the image size capped at 640."""
    frames: str | None = None
    """Frame subset as START:STOP:STEP (Python slice over the scene's frames)."""
    max_frames: int | None = None
    """Keep at most this many frames (evenly spaced) after --frames."""
    segmenter: Literal["classical", "sam", "sam2", "simulated"] = "classical"
    """2D segmenter: the weight-free classical one (default), SAM or SAM 2 (need --sam-checkpoint), or
    `simulated`: masks simulated from the scan's ground truth (not SAM; scans with instance GT only)."""
    simulated: SimulatedConfig = field(default_factory=SimulatedConfig)
    """--segmenter simulated: SAM-like granularity changes simulated from ground truth (noise, p-split ...)."""
    sam_checkpoint: Path | None = None
    """SAM / SAM 2 checkpoint (.pth) for --segmenter sam|sam2."""
    sam_model: Literal["vit_h", "vit_l", "vit_b"] = "vit_h"
    """SAM architecture of the checkpoint."""
    sam2_model: Literal[
        "sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l",
        "sam2_hiera_t", "sam2_hiera_s", "sam2_hiera_b+", "sam2_hiera_l",
    ] = "sam2.1_hiera_l"
    """SAM 2 architecture of the checkpoint (pip install 'lift3d[sam2]')."""
    recon: Literal["auto", "depth", "mast3r"] = "auto"
    """Geometry: sensor depth + poses, or MASt3R for image-only scenes; auto picks depth when present."""
    matches: Literal["auto", "reprojection", "mast3r"] = "auto"
    """Correspondences for tracking: exact reprojection (needs depth + poses) or MASt3R."""
    mast3r_checkpoint: Path | None = None
    """MASt3R checkpoint for --recon/--matches mast3r."""
    splats: Path | None = None
    """A trained 3DGS PLY in the scene's world frame: written back labeled as splats.ply."""
    device: str = "auto"
    """Torch device for the models: auto, cpu, cuda, cuda:1 ..."""
    eps: float = 0.02
    """Radius (metres) of the metric H's neighbourhoods."""
    metric_pairwise: bool = True
    """Also compute the ID-free pairwise variant. Its table has an entry per pair of (mask, view)
    that meet within eps: their number grows with the square of how many views see one spot. Memory
    stays within `metric_max_points` (the table is counted in passes and spilled to disk), but time
    grows with it (12x the metric's time at 1,000 orbiting views), so switch it off for captures
    where hundreds of views look at the same surface."""
    metric_max_points: int = DEFAULT_MAX_POINTS
    """Labeled points the metric holds at once (one tile of space with its halo; ~100 bytes each): its peak
    memory, whatever the scan's length. Larger is a little faster; the result is the same."""
    voxel_size: float = 0.02
    """Voxel size (metres) of the fused point cloud when the scene has no mesh."""
    fill_radius: float = 0.1
    """Mesh vertices no view saw take the label of the nearest labeled vertex along the mesh
    surface, up to this many metres (0 disables); they keep confidence 0."""
    min_instance_points: int = 0
    """Drop lifted instances with fewer points than this (0 keeps all)."""
    baseline: bool = False
    """Also run the segmenter frame by frame (no tracking) for the side-by-side preview."""
    preview: bool = True
    """Write overlays, contact sheet, heat-maps and the HTML report."""
    resume: bool = False
    """Skip frames whose label maps already exist in OUT/masks."""
    seed: int = 0
    """Random seed (K-Means, sampling): the same input and seed give the same output."""
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    """MastSAM tracker settings."""
    mast3r: Mast3rOptions = field(default_factory=Mast3rOptions)
    """MASt3R settings for --recon mast3r (network size, pair graph, alignment iterations)."""
