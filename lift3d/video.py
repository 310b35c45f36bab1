"""Runs without geometry: video and photo sequences tracked through optical flow.

A video or an image folder with no depth, no poses + splats and no MASt3R has no 3D points:
`lift3d segment` still tracks it (MastSAM through forward-backward-checked flow between
consecutive frames, `lift3d.recon.flow`) and writes the label maps, overlays and the report, but
no points.ply, splats.ply or ScanNet export. Its H is the consecutive-frame one of the DAVIS
evaluation (`lift3d.consistency.consecutive`), computed on the flow the tracker used.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lift3d.recon.scene import Scene

logger = logging.getLogger(__name__)

NO_3D_NOTE = (
    "no geometry (no depth, no poses + --splats, no MASt3R): label maps, overlays and the report only; "
    "no points.ply, splats.ply or scannet/, and H is the consecutive-frame consistency through optical flow"
)


def metrics_without_geometry(
    scene: Scene, masks_dir: Path, out: Path, output, *, track: dict, lifting: dict, backends: dict
) -> dict:
    """metrics.json of a run without geometry (consecutive-frame H), and its previews.

    Args:
        scene: the run's scene, its `match_fn` the flow provider the tracker used (pairs cached).
        masks_dir: the label maps, `<frame>.png`.
        out: the output folder (previews go to `out/preview/`).
        output: the run's `OutputConfig` (`preview`, `baseline`).
        track, lifting, backends: what the tracker, the (skipped) lifting and the backends report.
    """
    from lift3d.consistency.consecutive import consecutive_score
    from lift3d.io import read_label_map

    label_maps = (read_label_map(masks_dir / f"{n}.png") for n in scene.frame_names)
    score = consecutive_score(label_maps, lambda t: scene.match_frames(scene[t], scene[t + 1]))
    metrics = score.to_json()
    metrics.update(
        {
            "pairwise": None,
            "eps": None,
            "masks_per_frame": track["masks_per_frame"],
            "mean_masks_per_frame": float(np.mean(track["masks_per_frame"]))
            if track["masks_per_frame"]
            else 0.0,
            "ids": track["ids"],
            "frames": len(scene),
            "size": list(scene.size),
            "lifting": lifting,
            "backends": backends,
        }
    )
    if output.preview:
        from lift3d.viewers.overlay import write_previews

        write_previews(
            out,
            scene,
            masks_dir,
            baseline_dir=out / "baseline" / "masks" if output.baseline else None,
        )
    return metrics
