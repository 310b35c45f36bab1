"""Cameras and pointmaps: resizing, colour-to-depth alignment, back-projection, projection,
pointmaps resampled to another resolution.

Pixel convention: integer pixel centres, so pixel (u, v) covers [u - 0.5, u + 0.5). Resizing an
image by s maps u to (u + 0.5) * s - 0.5, and the intrinsics follow the same rule.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from lift3d.errors import InputError
from lift3d.recon.scene import Frame, RawFrame


def scale_intrinsics(
    K: np.ndarray,  # [3, 3]
    from_size: tuple[int, int],  # (W, H)
    to_size: tuple[int, int],  # (W, H)
) -> np.ndarray:  # [3, 3] float32
    """Intrinsics of an image resized from `from_size` to `to_size` (half-pixel convention)."""
    sx = to_size[0] / from_size[0]
    sy = to_size[1] / from_size[1]
    K2 = np.asarray(K, dtype=np.float64).copy()
    K2[0, 0] *= sx
    K2[0, 1] *= sx
    K2[1, 1] *= sy
    K2[0, 2] = (K2[0, 2] + 0.5) * sx - 0.5
    K2[1, 2] = (K2[1, 2] + 0.5) * sy - 0.5
    return K2.astype(np.float32)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H0, W0, 3] uint8 -> [H, W, 3] uint8 at size (W, H), area-filtered when shrinking."""
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize(tuple(size), Image.Resampling.BILINEAR))


def pixel_grid(size: tuple[int, int]) -> np.ndarray:
    """[H, W, 2] float32 (u, v) pixel centres for an image of size (W, H)."""
    W, H = size
    u, v = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    return np.stack([u, v], axis=-1)


def align_depth(
    depth: np.ndarray,  # [h, w] metres
    K_depth: np.ndarray,  # [3, 3]
    K: np.ndarray,  # [3, 3] target intrinsics
    size: tuple[int, int],  # (W, H) target
) -> np.ndarray:  # [H, W] float32
    """Depth resampled (nearest neighbour) onto another camera with the same optical centre.

    ScanNet's colour and depth images have different sizes and principal points but share the
    camera centre (their extrinsic is identity in the SensReader export), so each target pixel's
    ray is mapped into the depth image through the two intrinsics. Nearest neighbour keeps depth
    edges sharp: averaging across an edge invents points floating between objects.
    """
    W, H = size
    h, w = depth.shape
    grid = pixel_grid(size).reshape(-1, 2).astype(np.float64)
    K = np.asarray(K, np.float64)
    Kd = np.asarray(K_depth, np.float64)
    # normalised ray of each target pixel, then its pixel in the depth image
    x = (grid[:, 0] - K[0, 2] - K[0, 1] * (grid[:, 1] - K[1, 2]) / K[1, 1]) / K[0, 0]
    y = (grid[:, 1] - K[1, 2]) / K[1, 1]
    ud = np.rint(Kd[0, 0] * x + Kd[0, 1] * y + Kd[0, 2]).astype(np.int64)
    vd = np.rint(Kd[1, 1] * y + Kd[1, 2]).astype(np.int64)
    inside = (ud >= 0) & (ud < w) & (vd >= 0) & (vd < h)
    out = np.zeros(H * W, np.float32)
    out[inside] = depth[vd[inside], ud[inside]]
    return out.reshape(H, W)


def backproject(
    depth: np.ndarray,  # [H, W] metres, 0 = missing
    K: np.ndarray,  # [3, 3]
    T_world_camera: np.ndarray,  # [4, 4]
) -> tuple[np.ndarray, np.ndarray]:
    """World-frame pointmap of a depth image.

    Returns:
        pointmap: [H, W, 3] float32 world points (0 where invalid).
        valid: [H, W] bool, finite positive depth.
    """
    H, W = depth.shape
    valid = np.isfinite(depth) & (depth > 0)
    grid = pixel_grid((W, H))
    K = np.asarray(K, np.float32)
    z = np.where(valid, depth, 0).astype(np.float32)
    y = (grid[..., 1] - K[1, 2]) / K[1, 1]
    x = (grid[..., 0] - K[0, 2] - K[0, 1] * y) / K[0, 0]
    points_cam = np.stack([x * z, y * z, z], axis=-1)
    T = np.asarray(T_world_camera, np.float32)
    points_world = points_cam @ T[:3, :3].T + T[:3, 3]
    points_world[~valid] = 0
    return points_world.astype(np.float32), valid


def project(
    points_world: np.ndarray,  # [..., 3]
    K: np.ndarray,  # [3, 3]
    T_world_camera: np.ndarray,  # [4, 4]
) -> tuple[np.ndarray, np.ndarray]:
    """Project world points into a camera.

    Returns:
        uv: [..., 2] float32 continuous pixel coordinates (round to get the pixel index).
        z: [...] float32 depth along the optical axis (<= 0 means behind the camera).
    """
    T = np.asarray(T_world_camera, np.float64)
    R, t = T[:3, :3], T[:3, 3]
    points_cam = (np.asarray(points_world, np.float64) - t) @ R  # R^T (p - t)
    z = points_cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        zs = np.where(z > 1e-9, z, np.nan)
        x = points_cam[..., 0] / zs
        y = points_cam[..., 1] / zs
    K = np.asarray(K, np.float64)
    u = K[0, 0] * x + K[0, 1] * y + K[0, 2]
    v = K[1, 1] * y + K[1, 2]
    return np.stack([u, v], axis=-1).astype(np.float32), z.astype(np.float32)


def make_frame(raw: RawFrame, index: int, size: tuple[int, int]) -> Frame:
    """A reader's raw frame at the working resolution, with its pointmap when it has geometry."""
    H0, W0 = raw.image.shape[:2]
    image = resize_image(raw.image, size)
    K = scale_intrinsics(raw.K, (W0, H0), size)
    frame = Frame(name=raw.name, index=index, image=image, K=K)
    if raw.T_world_camera is not None:
        frame.T_world_camera = np.asarray(raw.T_world_camera, np.float32)
    if raw.depth is not None:
        K_depth = (
            raw.K_depth
            if raw.K_depth is not None
            else scale_intrinsics(raw.K, (W0, H0), (raw.depth.shape[1], raw.depth.shape[0]))
        )
        frame.depth = align_depth(raw.depth, K_depth, K, size)
        if frame.T_world_camera is not None:
            frame.pointmap, frame.valid = backproject(frame.depth, K, frame.T_world_camera)
            frame.conf = frame.valid.astype(np.float32)
    return frame


def frame_pointmap(scene, frame: Frame, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One frame's world pointmap at another resolution: ([H, W, 3] float32 metres, [H, W] bool valid).

    Depth is resampled by nearest neighbour onto the target camera (`align_depth` with scaled
    intrinsics) and back-projected, so label maps of any size have their own points (one masks
    folder has one metric H whatever the scene's working size). A frame without depth but with
    a pointmap (MASt3R) has its pointmap resampled the same way.

    Args:
        scene: the frame's `Scene` (named in errors).
        frame: a frame with geometry.
        size: (W, H) of the target.

    Raises:
        InputError: the frame has no 3D points.
    """
    W, H = int(size[0]), int(size[1])
    if frame.pointmap is None or frame.valid is None:
        raise InputError(
            scene.root,
            f"frame {frame.name} has no 3D points (needs depth + poses or a MASt3R reconstruction)",
        )
    if frame.size == (W, H):
        return np.asarray(frame.pointmap, np.float32), np.asarray(frame.valid, bool)
    K = scale_intrinsics(frame.K, frame.size, (W, H))
    if frame.depth is not None and frame.T_world_camera is not None:
        depth = align_depth(frame.depth, frame.K, K, (W, H))
        pm, v = backproject(depth, K, frame.T_world_camera)
        return np.asarray(pm, np.float32), np.asarray(v, bool)
    # nearest source pixel of each target pixel centre (half-pixel convention)
    uv = pixel_grid((W, H))
    u = np.clip(np.floor((uv[..., 0] + 0.5) * frame.size[0] / W).astype(int), 0, frame.size[0] - 1)
    v = np.clip(np.floor((uv[..., 1] + 0.5) * frame.size[1] / H).astype(int), 0, frame.size[1] - 1)
    return np.asarray(frame.pointmap[v, u], np.float32), np.asarray(frame.valid[v, u], bool)


def scene_pointmaps(scene, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Every frame's `frame_pointmap` at size (W, H), stacked: ([N, H, W, 3] float32 world metres,
    0 where invalid; [N, H, W] bool valid). Holds the whole scan: for small scenes and tests."""
    W, H = int(size[0]), int(size[1])
    pointmaps = np.zeros((len(scene), H, W, 3), np.float32)
    valid = np.zeros((len(scene), H, W), bool)
    for i, frame in enumerate(scene):
        pointmaps[i], valid[i] = frame_pointmap(scene, frame, (W, H))
    return pointmaps, valid


def look_at(
    eye,  # [3] camera centre, world frame, metres
    target,  # [3] the point the optical axis goes through
    up=(0.0, 0.0, 1.0),  # [3] world up; must not be parallel to target - eye
) -> np.ndarray:  # [4, 4] float64 T_world_camera
    """The OpenCV cam2world (x right, y down, z forward) of a camera at `eye` looking at `target`."""
    eye, target, up = (np.asarray(a, np.float64) for a in (eye, target, up))
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T
