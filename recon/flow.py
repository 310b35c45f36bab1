"""2D correspondences from dense optical flow: the fallback provider for video without geometry.

DAVIS-style video has no depth and no poses, so reprojection cannot match its frames; MASt3R
can, when its weights are given. Without it, consecutive frames are matched by OpenCV's DIS
optical flow (Kroeger et al., ECCV 2016), computed both ways: a pixel p of frame i goes to
q = p + F_ij(p), and the match is kept when the backward flow brings q back near p,
|F_ij(p) + F_ji(q)| < `fb_thresh` pixels (forward-backward check: it drops occluded pixels,
pixels leaving the image and most flow failures). Flow is only meaningful between nearby frames;
it says nothing about wide-baseline pairs.
"""

from __future__ import annotations

import numpy as np

from lift3d.errors import InputError
from lift3d.recon.scene import Frame

_PRESETS = ("ultrafast", "fast", "medium")


def _gray(image: np.ndarray, name: str) -> np.ndarray:
    import cv2

    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InputError(None, f"{name} must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.ndim == 2:
        return image
    raise InputError(None, f"{name} must be [H, W, 3] RGB or [H, W] gray, got {list(image.shape)}")


def dense_flow(gray_a: np.ndarray, gray_b: np.ndarray, *, preset: str = "medium") -> np.ndarray:
    """[H, W, 2] float32 DIS flow (du, dv) from gray image a to gray image b, in pixels."""
    import cv2

    if preset not in _PRESETS:
        raise InputError(None, f"preset must be one of {', '.join(_PRESETS)}, got {preset!r}")
    dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}"))
    return dis.calc(gray_a, gray_b, None)


def _bilinear(field: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """[M, C] values of an [H, W, C] field at float pixels (u, v), clamped at the border."""
    H, W = field.shape[:2]
    u = np.clip(u, 0, W - 1)
    v = np.clip(v, 0, H - 1)
    u0 = np.minimum(np.floor(u).astype(np.int64), W - 2) if W > 1 else np.zeros(len(u), np.int64)
    v0 = np.minimum(np.floor(v).astype(np.int64), H - 2) if H > 1 else np.zeros(len(v), np.int64)
    du = (u - u0)[:, None]
    dv = (v - v0)[:, None]
    u1 = np.minimum(u0 + 1, W - 1)
    v1 = np.minimum(v0 + 1, H - 1)
    top = field[v0, u0] * (1 - du) + field[v0, u1] * du
    bottom = field[v1, u0] * (1 - du) + field[v1, u1] * du
    return top * (1 - dv) + bottom * dv


def flow_matches(
    image_i: np.ndarray,  # [H, W, 3] uint8 RGB
    image_j: np.ndarray,  # [H, W, 3] uint8 RGB
    *,
    stride: int = 4,
    fb_thresh: float = 1.0,
    preset: str = "medium",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel correspondences from image i to image j by forward-backward-checked optical flow.

    Args:
        image_i, image_j: two frames of one size (RGB uint8, or gray [H, W]).
        stride: match every `stride`-th pixel of image i in u and v.
        fb_thresh: largest forward-backward error kept, in pixels.
        preset: DIS preset, `ultrafast`, `fast` or `medium` (slower, more accurate).

    Returns:
        uv_i: [M, 2] float32 integer pixel centres (u, v) in image i.
        uv_j: [M, 2] float32 sub-pixel positions (u, v) in image j, inside the image.
        conf: [M] float32 in (0, 1]: 1 - fb_error / fb_thresh (floored at 1e-3).

    Raises:
        InputError: images of different sizes or types, or a bad stride / threshold.
    """
    if stride < 1:
        raise InputError(None, f"stride must be >= 1, got {stride}")
    if not fb_thresh > 0:
        raise InputError(None, f"fb_thresh must be > 0, got {fb_thresh}")
    gray_i = _gray(image_i, "image_i")
    gray_j = _gray(image_j, "image_j")
    if gray_i.shape != gray_j.shape:
        raise InputError(
            None, f"images differ in size: {gray_i.shape[::-1]} vs {gray_j.shape[::-1]} (W, H)"
        )
    H, W = gray_i.shape
    forward = dense_flow(gray_i, gray_j, preset=preset)
    backward = dense_flow(gray_j, gray_i, preset=preset)

    vs, us = np.mgrid[0:H:stride, 0:W:stride]
    us = us.ravel()
    vs = vs.ravel()
    f = forward[vs, us].astype(np.float64)
    uj = us + f[:, 0]
    vj = vs + f[:, 1]
    inside = (uj >= 0) & (uj <= W - 1) & (vj >= 0) & (vj <= H - 1)
    b = _bilinear(backward.astype(np.float64), uj, vj)
    err = np.hypot(f[:, 0] + b[:, 0], f[:, 1] + b[:, 1])
    keep = inside & (err < fb_thresh)
    uv_i = np.stack([us[keep], vs[keep]], axis=-1).astype(np.float32)
    uv_j = np.stack([uj[keep], vj[keep]], axis=-1).astype(np.float32)
    conf = np.clip(1.0 - err[keep] / fb_thresh, 1e-3, 1.0).astype(np.float32)
    return uv_i, uv_j, conf


def flow_match_fn(frame_i: Frame, frame_j: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`Scene.match_fn` for video without depth: `flow_matches` on the two frames' images."""
    return flow_matches(frame_i.image, frame_j.image)


class CachedFlowMatches:
    """`Scene.match_fn` by `flow_matches`, each ordered frame pair computed once and kept.

    The tracker asks for (t - 1, t) and the consecutive-frame metric for the same pairs again;
    matches at stride 4 are ~50 KB a 640x360 pair, so a video's worth stays in memory.
    """

    def __init__(self, *, stride: int = 4):
        self.stride = stride
        self._pairs: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def __call__(self, frame_i: Frame, frame_j: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        key = (frame_i.index, frame_j.index)
        if key not in self._pairs:
            self._pairs[key] = flow_matches(frame_i.image, frame_j.image, stride=self.stride)
        return self._pairs[key]
