"""Correspondences between two views by exact reprojection with an occlusion test.

A pixel of view i with a known 3D point is projected into view j; the match is kept when it
lands inside view j and the point's depth in view j agrees with view j's own depth at that
pixel (within `abs_tol + rel_tol * depth`): a larger measured depth means the point is hidden
behind something else in view j, a smaller one that it was occluded in view i.
"""

from __future__ import annotations

import numpy as np

from lift3d.recon.geometry import project
from lift3d.recon.scene import Frame


def reprojection_matches(
    frame_i: Frame,
    frame_j: Frame,
    *,
    stride: int = 1,
    abs_tol: float = 0.02,
    rel_tol: float = 0.02,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel correspondences from view i to view j.

    Args:
        frame_i, frame_j: frames with pointmaps and depth at the same working resolution.
        stride: take every `stride`-th pixel of view i in u and v.
        abs_tol, rel_tol: depth agreement tolerance in metres, `abs_tol + rel_tol * depth`.

    Returns:
        uv_i: [M, 2] float32 integer pixel centres (u, v) in view i.
        uv_j: [M, 2] float32 integer pixel centres (u, v) in view j.
        conf: [M] float32 in (0, 1]: 1 for perfect depth agreement, falling linearly to 0 at
            the tolerance.
    """
    if not (frame_i.has_geometry and frame_j.has_geometry and frame_j.depth is not None):
        raise ValueError("reprojection needs pointmaps and depth in both frames")
    W, H = frame_j.size
    pm = frame_i.pointmap[::stride, ::stride]
    valid = frame_i.valid[::stride, ::stride]
    vs, us = np.nonzero(valid)
    uv_i = np.stack([us * stride, vs * stride], axis=-1).astype(np.float32)
    uv, z = project(pm[vs, us], frame_j.K, frame_j.T_world_camera)
    with np.errstate(invalid="ignore"):
        uj = np.rint(uv[:, 0])
        vj = np.rint(uv[:, 1])
        inside = (z > 0) & (uj >= 0) & (uj < W) & (vj >= 0) & (vj < H)
    uj = uj[inside].astype(np.int64)
    vj = vj[inside].astype(np.int64)
    z = z[inside]
    uv_i = uv_i[inside]
    d_j = frame_j.depth[vj, uj]
    tol = abs_tol + rel_tol * z
    err = np.abs(d_j - z)
    keep = (d_j > 0) & (err < tol)
    if frame_j.valid is not None:
        keep &= frame_j.valid[vj, uj]
    conf = (1.0 - err[keep] / tol[keep]).astype(np.float32)
    uv_j = np.stack([uj[keep], vj[keep]], axis=-1).astype(np.float32)
    return uv_i[keep], uv_j, np.clip(conf, 1e-3, 1.0)


def reprojection_match_fn(frame_i: Frame, frame_j: Frame):
    """The default correspondence provider of scenes with depth and poses."""
    return reprojection_matches(frame_i, frame_j)
