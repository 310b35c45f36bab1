"""The Python entry of the whole flow: `lift3d.segment(scene, out=..., segmenter=...)`.

It is `lift3d segment` without the command line: the same `SegmentConfig` (its options by the
command line's names, `SegmentConfig.from_options`), the same `run_segment`, the same output
folder; it hands back where the files are and the metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lift3d.config import SegmentConfig, SegmenterConfig
from lift3d.errors import InputError

if TYPE_CHECKING:
    from lift3d.consistency.segmenter import Segmenter


@dataclass(frozen=True)
class SegmentResult:
    """What a run wrote.

    Attributes:
        out: the output folder.
        masks: folder of the per-view label maps (`<frame>.png`, 16-bit, 0 = unlabeled).
        points: `points.ply` (x y z red green blue label confidence).
        mesh: `mesh.ply` (the scan's mesh labeled), None when the scene has no mesh.
        splats: `splats.ply`, None without `splats=`.
        scannet: the ScanNet benchmark export folder, None when not written.
        report: `report.html`, None with `preview=False`.
        metrics: `metrics.json` as a dict (`H`, `pairwise`, `pixels`, `masks_per_frame`, ...).
    """

    out: Path
    masks: Path
    points: Path
    mesh: Path | None
    splats: Path | None
    scannet: Path | None
    report: Path | None
    metrics: dict

    @property
    def H(self) -> float:
        """The multi-view consistency H of the run."""
        return float(self.metrics["H"])


def segment(
    scene: str | Path,
    *,
    out: str | Path | None = None,
    segmenter: str | Segmenter = "classical",
    **options,
) -> SegmentResult:
    """Run the whole flow on one scene (what `lift3d segment` runs) and return its outputs.

    Args:
        scene: scene folder or file (ScanNet export, .sens, image folder, video, COLMAP,
            transforms.json, Redwood).
        out: output folder (default: `outputs/<scene name>`).
        segmenter: a name as for `--segmenter` (`classical`, weight-free, the default; `auto`,
            `geometric`, `sam`, `sam2`, `simulated`), a `SegmenterConfig` (its settings, e.g.
            `SegmenterConfig(name="sam", sam=SamConfig(checkpoint=...))`), or a segmenter
            object already built (`generate` / `predict`).
        **options: any other `lift3d segment` option by name (`max_frames=10`, `eps=0.03`,
            `preview=False`, `tracker=TrackerConfig(...)` ...).

    Returns:
        A `SegmentResult`: the files' paths and the metrics.

    Raises:
        InputError: an option `lift3d segment` does not have, or any input error of the run.
    """
    from lift3d.pipeline import run_segment

    names = set(SegmentConfig.from_options(scene=Path(scene)).to_options())
    unknown = sorted(set(options) - names - {"segmenter"})
    if unknown:
        raise InputError(
            None,
            f"lift3d.segment: unknown option(s) {', '.join(unknown)}; "
            f"options are those of lift3d segment: {', '.join(sorted(names - {'scene', 'out', 'segmenter'}))}",
        )
    built = None
    if isinstance(segmenter, str):
        options["segmenter"] = SegmenterConfig(name=segmenter)
    elif isinstance(segmenter, SegmenterConfig):
        options["segmenter"] = segmenter
    else:
        built = segmenter
    cfg = SegmentConfig.from_options(
        scene=Path(scene), out=None if out is None else Path(out), **options
    )
    folder = run_segment(cfg, segmenter=built, segmenter_from_config=built is None)

    def present(name: str) -> Path | None:
        return folder / name if (folder / name).exists() else None

    return SegmentResult(
        out=folder,
        masks=folder / "masks",
        points=folder / "points.ply",
        mesh=present("mesh.ply"),
        splats=present("splats.ply"),
        scannet=present("scannet"),
        report=present("report.html"),
        metrics=json.loads((folder / "metrics.json").read_text()),
    )
