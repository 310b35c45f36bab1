"""lift3d: multi-view consistent segmentation (MastSAM) lifted onto 3D points and Gaussian splats.

The four stages of the flow install as subpackages of this one namespace:
`lift3d.recon` (scenes, cameras, pointmaps, correspondences, the points to label),
`lift3d.consistency` (segmenters, the MastSAM tracker, the metric H, 2D evaluation),
`lift3d.viewers` (previews, report, web viewer) and this package itself: the whole flow in one
call (`segment`), the votes onto points and splats (`lift_to_points`, `lift_to_superpoints`,
`lift_to_splats`), the exports (`lift3d.export`), the 3D evaluation (`lift3d.instance_eval`), the
CLI. Shared by every stage: `lift3d.errors`, `lift3d.checks` (the input checker), `lift3d.io`
(atomic writes, PLY, label maps, JSON).

Nothing heavy is imported here: `import lift3d` stays light (tests/test_imports.py checks it).
"""

from lift3d.errors import CheckpointError, InputError, Lift3dError, NotInstalledError

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "InputError",
    "Lift3dError",
    "NotInstalledError",
    "PointLabels",
    "SegmentResult",
    "__version__",
    "lift_to_points",
    "lift_to_splats",
    "lift_to_superpoints",
    "segment",
]

# each name loads its module on first use, so that `import lift3d` stays light
_LAZY = {
    "segment": "api",
    "SegmentResult": "api",
    "PointLabels": "points",
    "lift_to_points": "points",
    "lift_to_superpoints": "points",
    "lift_to_splats": "splats",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'lift3d' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"lift3d.{_LAZY[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
