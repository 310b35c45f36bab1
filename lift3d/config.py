"""The configuration of a `lift3d segment` run: a dataclass, from which the CLI is derived.

Light on purpose (no torch, no open3d): `lift3d --help` imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lift3d.consistency.geometric import GeometricConfig
from lift3d.consistency.merging import MergeConfig
from lift3d.consistency.metric_stream import DEFAULT_MAX_POINTS
from lift3d.consistency.simulated import SimulatedConfig
from lift3d.consistency.tracker import TrackerConfig
from lift3d.recon.mast3r import Mast3rOptions
from lift3d.recon.superpoints import SuperpointConfig


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
    segmenter: Literal["auto", "geometric", "classical-2d", "classical", "sam", "sam2", "simulated"] = "auto"
    """Segmenter. auto: `geometric` when the scene has depth + poses (object candidates from the scan's 3D structure, weight-free), else `classical-2d` (weight-free per-image superpixels; `classical` is its old name); sam / sam2 need --sam-checkpoint; `simulated`: masks simulated from the scan's ground truth (not SAM; scans with instance GT only)."""
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
    recon: Literal["auto", "depth", "mast3r", "splats"] = "auto"
    """Geometry: sensor depth + poses, MASt3R for image-only scenes, or depth rendered from --splats at the scene's cameras (COLMAP, transforms.json); auto picks depth, then splats, then MASt3R (with --mast3r-checkpoint), else none: a video or image folder is tracked by flow, 2D outputs only."""
    matches: Literal["auto", "reprojection", "mast3r", "flow"] = "auto"
    """Correspondences for tracking: exact reprojection (needs depth + poses), MASt3R, or forward-backward checked optical flow between consecutive frames (the default without geometry)."""
    mast3r_checkpoint: Path | None = None
    """MASt3R checkpoint for --recon/--matches mast3r."""
    splats: Path | None = None
    """A trained 3DGS PLY in the scene's world frame: written back labeled as splats.ply; on a posed scene without depth (COLMAP, transforms.json) the depth of every view is rendered from it."""
    splat_min_alpha: float = 0.5
    """Depth rendered from --splats: pixels whose accumulated opacity is below this have no depth."""
    splat_min_fit: float = 0.5
    """Refuse --splats when fewer than this share of splat centres lie inside some camera's view (splats and cameras in different world frames)."""
    mesh: Path | None = None
    """The scan's mesh PLY (world frame), for a scan whose folder lacks it: its vertices are labeled (points.ply, mesh.ply) instead of fused pointmaps, and the ScanNet export is written."""
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
    """Mesh vertices no view saw take the label of the nearest labeled vertex along the mesh surface, up to this many metres (0 disables); they keep confidence 0."""
    vote: Literal["superpoints", "points"] = "superpoints"
    """Lifting: each superpoint takes the majority of its points' votes and every point of it (unseen ones included) its label; `points`: every point votes alone."""
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
    superpoints: SuperpointConfig = field(default_factory=SuperpointConfig)
    """Superpoints of the scene's points (a ScanNet scan's segs.json, or a graph segmentation)."""
    geometric: GeometricConfig = field(default_factory=GeometricConfig)
    """The geometric segmenter's object candidates (convexity + colour over superpoints)."""
    merge: MergeConfig = field(default_factory=MergeConfig)
    """Multi-view merging of MastSAM's IDs into 3D instances by view consensus (--merge.no-enabled: off)."""
    mast3r: Mast3rOptions = field(default_factory=Mast3rOptions)
    """MASt3R settings for --recon mast3r (network size, pair graph, alignment iterations)."""
