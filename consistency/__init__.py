"""Segmenters, the MastSAM tracker, multi-view merging, the consistency metric H, 2D evaluation.

- The `Segmenter` protocol (`segmenter.py`) and its backends: `GeometricSegmenter` (object
  candidates from depth + poses, the weight-free default on scans), `ClassicalSegmenter`
  (weight-free 2D), `SamSegmenter`, `Sam2Segmenter` (checkpoints), `SimulatedSegmenter` (SAM-like
  masks simulated from a scan's instance GT; never SAM).
- `MastSAM`: one ID per object in every view (`track_scene` runs it over a scene).
- `merge_instances`: the tracked IDs merged into 3D instances by view consensus.
- `consistency_score` with `MetricConfig`: the metric H (one streamed, tiled path; `metric/`).

Nothing heavy is imported here: each name loads its module on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lift3d.consistency.classical import ClassicalConfig, ClassicalSegmenter
    from lift3d.consistency.consecutive import consecutive_score
    from lift3d.consistency.geometric import GeometricConfig, GeometricSegmenter
    from lift3d.consistency.merging import MergeConfig, MergeResult, merge_instances
    from lift3d.consistency.metric import ArrayFrames, MetricConfig, MetricResult, consistency_score
    from lift3d.consistency.rand_index import cross_view_ari
    from lift3d.consistency.sam import SamSegmenter
    from lift3d.consistency.sam2 import Sam2Segmenter
    from lift3d.consistency.segmenter import Masks, Segmenter
    from lift3d.consistency.simulated import SimulatedConfig, SimulatedSegmenter
    from lift3d.consistency.tracker import MastSAM, TrackerConfig, segment_framewise, track_scene

_LAZY = {
    "ClassicalConfig": "classical",
    "ClassicalSegmenter": "classical",
    "consecutive_score": "consecutive",
    "GeometricConfig": "geometric",
    "GeometricSegmenter": "geometric",
    "MergeConfig": "merging",
    "MergeResult": "merging",
    "merge_instances": "merging",
    "ArrayFrames": "metric",
    "MetricConfig": "metric",
    "MetricResult": "metric",
    "consistency_score": "metric",
    "cross_view_ari": "rand_index",
    "SamSegmenter": "sam",
    "Sam2Segmenter": "sam2",
    "Masks": "segmenter",
    "Segmenter": "segmenter",
    "SimulatedConfig": "simulated",
    "SimulatedSegmenter": "simulated",
    "MastSAM": "tracker",
    "TrackerConfig": "tracker",
    "segment_framewise": "tracker",
    "track_scene": "tracker",
}

__all__ = [
    "ArrayFrames",
    "ClassicalConfig",
    "ClassicalSegmenter",
    "GeometricConfig",
    "GeometricSegmenter",
    "Masks",
    "MastSAM",
    "MergeConfig",
    "MergeResult",
    "MetricConfig",
    "MetricResult",
    "Sam2Segmenter",
    "SamSegmenter",
    "Segmenter",
    "SimulatedConfig",
    "SimulatedSegmenter",
    "TrackerConfig",
    "consecutive_score",
    "consistency_score",
    "cross_view_ari",
    "merge_instances",
    "segment_framewise",
    "track_scene",
]


def __getattr__(name: str):
    # no name here is also a submodule's name, so importing the module cannot shadow the name
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
