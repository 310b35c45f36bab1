"""Scenes in, cameras, per-view pointmaps and correspondences out.

Entry point: :func:`lift3d.recon.load_scene`.
"""

from lift3d.recon.detect import load_scene
from lift3d.recon.scene import Frame, Scene

__all__ = ["Frame", "Scene", "load_scene"]
