"""Offscreen renders of the labeled point cloud: a numpy z-buffer point splatter.

No window, no GPU, no OpenGL context (open3d's `OffscreenRenderer` needs EGL, which headless CI
machines lack): each point is projected with the pinhole model and drawn as a small square of
pixels; the nearest point wins each pixel. `write_point_renders` draws the cloud, coloured by
label with the stable palette, from a few of the scene's own cameras and from a bird's-eye view
above the scene looking down:

```
OUT/preview/renders/view_<frame>.png   the cloud seen from that frame's camera
OUT/preview/renders/birdseye.png       from above, the whole scene in view
```
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lift3d.errors import InputError
from lift3d.io import write_image
from lift3d.viewers.outputs import read_cameras, read_labeled_points
from lift3d.viewers.palette import UNLABELED_GREY, label_colors

logger = logging.getLogger(__name__)

_NEAR = 1e-3  # metres: points closer to (or behind) the camera centre are not drawn


def _project(
    xyz: np.ndarray, K: np.ndarray, T_world_camera: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel column, row (rounded to the nearest pixel centre) and depth of every point."""
    T_camera_world = np.linalg.inv(np.asarray(T_world_camera, np.float64))
    p = xyz.astype(np.float64) @ T_camera_world[:3, :3].T + T_camera_world[:3, 3]
    z = p[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[0, 0] * p[:, 0] / z + K[0, 1] * p[:, 1] / z + K[0, 2]
        v = K[1, 1] * p[:, 1] / z + K[1, 2]
    return np.round(u), np.round(v), z


def _check_inputs(xyz, colors, K, T_world_camera, size):
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise InputError(None, f"xyz must be [N, 3], got shape {list(xyz.shape)}")
    colors = np.asarray(colors)
    if colors.shape != xyz.shape or colors.dtype != np.uint8:
        raise InputError(
            None, f"colors must be [{len(xyz)}, 3] uint8, got {list(colors.shape)} {colors.dtype}"
        )
    K = np.asarray(K, np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(
            None, f"K must be a 3x3 intrinsics matrix with positive focal lengths, got {K.tolist()}"
        )
    T = np.asarray(T_world_camera, np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise InputError(
            None, f"T_world_camera must be a finite 4x4 matrix, got shape {list(T.shape)}"
        )
    w, h = (int(s) for s in size)
    if w <= 0 or h <= 0:
        raise InputError(None, f"size must be positive (W, H), got {tuple(size)}")
    return xyz, colors, K, T, (w, h)


def render_points(
    xyz: np.ndarray,  # [N, 3] float metres, world frame
    colors: np.ndarray,  # [N, 3] uint8 RGB
    K: np.ndarray,  # [3, 3] intrinsics of the rendered image
    T_world_camera: np.ndarray,  # [4, 4] cam2world, OpenCV (x right, y down, z forward)
    size: tuple[int, int],  # (W, H) pixels
    *,
    point_radius_px: int = 1,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:  # [H, W, 3] uint8
    """Draw points as (2r+1)-pixel squares, nearest point first, on a plain background.

    Args:
        xyz: points in the world frame.
        colors: one colour per point.
        K: pinhole intrinsics (pixel centres at integer coordinates).
        T_world_camera: camera pose, camera to world.
        size: output (W, H).
        point_radius_px: half-width of each point's square; 0 draws single pixels.
        background: colour of pixels no point covers.

    Returns:
        The render, RGB.
    """
    xyz, colors, K, T, (w, h) = _check_inputs(xyz, colors, K, T_world_camera, size)
    if point_radius_px < 0:
        raise InputError(None, f"point_radius_px must be >= 0, got {point_radius_px}")
    image = np.empty((h, w, 3), np.uint8)
    image[:] = np.asarray(background, np.uint8)
    u, v, z = _project(xyz, K, T)
    r = int(point_radius_px)
    keep = np.isfinite(u) & np.isfinite(v) & (z > _NEAR)
    keep &= (u >= -r) & (u < w + r) & (v >= -r) & (v < h + r)
    if not keep.any():
        return image
    # Drawing (2r+1)-pixel squares with a depth test equals, pixel by pixel, taking the nearest
    # of the points whose centre pixel lies within r: so find the nearest point per centre pixel
    # (one sort of N points), then a min-filter over the (padded) depth image (H*W work per
    # offset, not N).
    wp, hp = w + 2 * r, h + 2 * r
    pix = (v[keep].astype(np.int64) + r) * wp + (u[keep].astype(np.int64) + r)
    src, zk = np.nonzero(keep)[0], z[keep]
    order = np.lexsort((zk, pix))
    pix, src, zk = pix[order], src[order], zk[order]
    first = np.ones(len(pix), bool)
    first[1:] = pix[1:] != pix[:-1]
    depth = np.full(hp * wp, np.inf)
    owner = np.full(hp * wp, -1, np.int64)
    depth[pix[first]] = zk[first]
    owner[pix[first]] = src[first]
    depth, owner = depth.reshape(hp, wp), owner.reshape(hp, wp)
    best_z = np.full((h, w), np.inf)
    best = np.full((h, w), -1, np.int64)
    for dv in range(2 * r + 1):
        for du in range(2 * r + 1):
            zz = depth[dv : dv + h, du : du + w]
            closer = zz < best_z
            best_z[closer] = zz[closer]
            best[closer] = owner[dv : dv + h, du : du + w][closer]
    hit = best >= 0
    image[hit] = colors[best[hit]]
    return image


def _render_points_reference(
    xyz, colors, K, T_world_camera, size, *, point_radius_px=1, background=(255, 255, 255)
):
    """`render_points` point by point with an explicit depth buffer (the test reference)."""
    w, h = size
    image = np.empty((h, w, 3), np.uint8)
    image[:] = background
    zbuf = np.full((h, w), np.inf)
    T_camera_world = np.linalg.inv(np.asarray(T_world_camera, np.float64))
    r = point_radius_px
    for p, c in zip(np.asarray(xyz, np.float64), colors):
        x, y, z = T_camera_world[:3, :3] @ p + T_camera_world[:3, 3]
        if not z > _NEAR:
            continue
        u = round(K[0, 0] * x / z + K[0, 1] * y / z + K[0, 2])
        v = round(K[1, 1] * y / z + K[1, 2])
        for dv in range(-r, r + 1):
            for du in range(-r, r + 1):
                uu, vv = u + du, v + dv
                if 0 <= uu < w and 0 <= vv < h and z < zbuf[vv, uu]:
                    zbuf[vv, uu] = z
                    image[vv, uu] = c
    return image


def up_direction(poses: list[np.ndarray]) -> np.ndarray:  # [3] unit vector, world frame
    """The world's up, from camera poses [4, 4] (cam2world, OpenCV).

    People hold cameras without roll, so each camera's x axis is horizontal and up is the
    direction most orthogonal to all of them; the mean of the cameras' up axes (-y) would lean
    towards the scene, as cameras pitch down to film it. When the x axes do not span a plane
    (one camera, or all facing one way) the mean up axis is the answer.
    """
    if not poses:
        return np.array([0.0, 0.0, 1.0])
    R = np.stack([np.asarray(T, np.float64)[:3, :3] for T in poses])
    mean_up = -R[:, :, 1].mean(0)
    x = R[:, :, 0]
    w, v = np.linalg.eigh(x.T @ x)  # ascending eigenvalues
    if len(poses) >= 2 and w[1] > 1e-2 * w[2]:
        up = v[:, 0] * (1.0 if v[:, 0] @ mean_up >= 0 else -1.0)
    else:
        up = mean_up
    norm = np.linalg.norm(up)
    return up / norm if norm > 1e-6 else np.array([0.0, 0.0, 1.0])


def birdseye_camera(
    xyz: np.ndarray,  # [N, 3] world points
    up: np.ndarray,  # [3] unit up vector
    size: tuple[int, int],  # (W, H)
    *,
    forward_hint: np.ndarray | None = None,  # [3] direction that should point up in the image
    fov_deg: float = 50.0,
) -> tuple[np.ndarray, np.ndarray]:  # K [3, 3], T_world_camera [4, 4]
    """A camera above the scene looking straight down at it, far enough to see all of it.

    The extent is taken between the 2nd and 98th percentiles, so a few stray points do not
    shrink the scene to a dot.
    """
    w, h = size
    up = np.asarray(up, np.float64)
    lo, hi = np.percentile(xyz, [2, 98], axis=0)
    centre = (lo + hi) / 2
    fwd = np.asarray(forward_hint if forward_hint is not None else [1.0, 0.0, 0.0], np.float64)
    fwd = fwd - up * (fwd @ up)
    if np.linalg.norm(fwd) < 1e-6:
        fwd = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    fwd /= np.linalg.norm(fwd)
    z_axis = -up  # looking down
    y_axis = -fwd  # image rows grow away from `fwd`, so `fwd` points to the top of the image
    x_axis = np.cross(y_axis, z_axis)
    R = np.stack([x_axis, y_axis, z_axis], 1)
    rel = np.asarray(xyz, np.float64) - centre
    horiz = np.percentile(np.abs(rel @ R[:, :2]), 98, axis=0)  # half-extent along image x, y
    height = np.percentile(rel @ up, 98)
    f = 0.5 * h / np.tan(np.radians(fov_deg) / 2)
    dist = max(horiz[0] * f / (0.5 * w), horiz[1] * f / (0.5 * h)) * 1.1 + max(height, 0.0)
    dist = max(dist, 1e-3)
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = centre + up * dist
    K = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]])
    return K, T


def write_point_renders(
    out_dir: str | Path,
    points_ply: str | Path,
    cameras_json: str | Path,
    *,
    n_views: int = 4,
    point_radius_px: int | None = None,
) -> list[Path]:
    """Render the labeled cloud from `n_views` evenly spaced scene cameras and from above.

    Args:
        out_dir: folder of the PNGs (`OUT/preview/renders`).
        points_ply: the run's `points.ply`.
        cameras_json: the run's `cameras.json`.
        n_views: scene cameras to render from (those with a pose, evenly spaced).
        point_radius_px: half-width of each point's square (default: 1 below 400 pixels of
            width, 2 above, so a mesh-vertex cloud renders without holes).

    Returns:
        The files written (`view_<frame>.png`..., `birdseye.png`).
    """
    from lift3d.viewers.overlay import evenly_spaced

    out_dir = Path(out_dir)
    size, frames = read_cameras(cameras_json)
    pts = read_labeled_points(points_ply)
    if not len(pts["xyz"]):
        raise InputError(points_ply, "the point cloud is empty: nothing to render")
    colors = label_colors(pts["label"], unlabeled=UNLABELED_GREY)
    posed = [
        f
        for f in frames
        if f["T_world_camera"] is not None and np.all(np.isfinite(f["T_world_camera"]))
    ]
    radius = point_radius_px if point_radius_px is not None else (1 if size[0] < 400 else 2)
    written = []
    for i in evenly_spaced(len(posed), n_views):
        f = posed[i]
        image = render_points(
            pts["xyz"], colors, f["K"], f["T_world_camera"], size, point_radius_px=radius
        )
        written.append(write_image(out_dir / f"view_{f['name']}.png", image))
    poses = [f["T_world_camera"] for f in posed]
    up = up_direction(poses)
    hint = np.mean([T[:3, 2] for T in poses], axis=0) if poses else None
    # frame the labeled objects when there are some: a room's floor would shrink them to dots
    labeled = pts["xyz"][pts["label"] > 0]
    K, T = birdseye_camera(
        labeled if len(labeled) >= 10 else pts["xyz"], up, size, forward_hint=hint
    )
    image = render_points(pts["xyz"], colors, K, T, size, point_radius_px=radius)
    written.append(write_image(out_dir / "birdseye.png", image))
    logger.info("point renders: %d views + bird's-eye -> %s", len(written) - 1, out_dir)
    return written
