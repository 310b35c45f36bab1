"""The MastSAM points tracker: one mask ID per object across all views.

(Being implemented: see issue 8. The config below is the contract.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrackerConfig:
    """Parameters of every MastSAM step; each step can be switched off."""

    points_per_mask: int = 5
    """K of the K-Means representative selection: prompt points per mask."""
    kmeans_use_3d: bool = True
    """Cluster pixels on (u, v) and their 3D points (scaled), not on (u, v) alone."""
    min_match_conf: float = 0.3
    """Representative points whose correspondence confidence is below this are dropped."""
    min_tracked_points: int = 1
    """A mask is re-prompted in the next view only if at least this many of its points landed."""
    overlap_filtering: bool = True
    """Resolve overlapping masks so that each pixel belongs to at most one ID."""
    overlap_iou: float = 0.5
    """Two masks overlapping above this IoU (or containment) are the same: keep the better."""
    unmasked_init: bool = True
    """Seed new IDs from automatic masks in regions left unmasked (the paper's Table II ablation
    switches this off)."""
    min_new_area: float = 0.002
    """A new mask must cover at least this fraction of the image in unmasked pixels."""
    min_new_fraction: float = 0.7
    """...and at least this fraction of it must be unmasked."""
    reidentify: bool = True
    """Give a vanished ID back when its object reappears (3D overlap with earlier views)."""
    reid_min_overlap: float = 0.5
    """Share of a new mask's 3D points lying in an old ID's voxels needed to re-identify it."""
    reid_voxel: float = 0.05
    """Voxel size (metres) of the per-ID 3D memory used for re-identification."""
    min_mask_area: int = 32
    """Masks smaller than this (pixels) are dropped."""
