"""lift3d: multi-view consistent segmentation (MastSAM) lifted onto 3D points and Gaussian splats.

The four stages of the flow install as subpackages of this one namespace:
`lift3d.recon` (scenes, cameras, pointmaps, correspondences), `lift3d.consistency` (segmenters,
the MastSAM tracker, the metric H, 2D evaluation), `lift3d.viewers` (previews, report, web viewer)
and this package itself (CLI, pipeline, lifting, export, 3D evaluation).

Nothing heavy is imported here: `import lift3d` stays light (tests/test_imports.py checks it).
"""

__version__ = "0.1.0"

__all__ = ["SegmentResult", "__version__", "segment"]


def __getattr__(name: str):
    # `lift3d.segment` loads the flow on first use, so that `import lift3d` stays light
    if name in ("segment", "SegmentResult"):
        from lift3d import api

        return getattr(api, name)
    raise AttributeError(f"module 'lift3d' has no attribute {name!r}")
