"""A test helper that writes ScanNet `.sens` files, for the reader's round-trip tests.

lift3d reads `.sens` files (`lift3d.recon.scannet.sens`) and never writes them; this writer, the
reader's inverse, lives with the tests that need a `.sens` file made from known frames.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np

from lift3d.errors import InputError
from lift3d.io import atomic_path
from lift3d.recon.scannet.sens import SENS_VERSION


def _as_4x4(K: np.ndarray) -> np.ndarray:
    K = np.asarray(K, np.float32)
    out = np.eye(4, dtype=np.float32)
    out[: K.shape[0], : K.shape[1]] = K[:4, :4]
    return out


def write_sens(
    path: str | Path,
    frames: list[
        tuple[np.ndarray, np.ndarray, np.ndarray]
    ],  # (image [H, W, 3] uint8, depth_mm [h, w] uint16, T_world_camera [4, 4])
    K_color: np.ndarray,  # [3, 3] or [4, 4]
    K_depth: np.ndarray,  # [3, 3] or [4, 4]
    *,
    sensor_name: str = "lift3d",
    depth_shift: float = 1000.0,
    jpeg_quality: int = 95,
) -> Path:
    """Write frames as a ScanNet `.sens` file (JPEG colour, zlib depth), atomically.

    Args:
        path: the file to write.
        frames: per frame the RGB image, the depth in units of 1/depth_shift metres, and the
            cam2world pose; every image (and every depth) must have the same size.
        K_color, K_depth: intrinsics of the colour and depth images.
        sensor_name: recorded in the header.
        depth_shift: depth units per metre.
        jpeg_quality: PIL JPEG quality of the colour frames.
    """
    from PIL import Image

    if not frames:
        raise InputError(None, "write_sens needs at least one frame")
    ch, cw = frames[0][0].shape[:2]
    dh, dw = frames[0][1].shape[:2]
    for k, (image, depth, T) in enumerate(frames):
        if image.dtype != np.uint8 or image.shape != (ch, cw, 3):
            raise InputError(
                None,
                f"frame {k}: image must be [{ch}, {cw}, 3] uint8, got {image.shape} {image.dtype}",
            )
        if depth.dtype != np.uint16 or depth.shape != (dh, dw):
            raise InputError(
                None,
                f"frame {k}: depth must be [{dh}, {dw}] uint16, got {depth.shape} {depth.dtype}",
            )
        if np.shape(T) != (4, 4):
            raise InputError(None, f"frame {k}: pose must be 4x4, got {np.shape(T)}")
    name = sensor_name.encode("utf-8")
    eye = np.eye(4, dtype=np.float32)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<IQ", SENS_VERSION, len(name)) + name)
        for M in (_as_4x4(K_color), eye, _as_4x4(K_depth), eye):
            f.write(M.astype("<f4").tobytes())
        f.write(struct.pack("<ii4IfQ", 2, 1, cw, ch, dw, dh, depth_shift, len(frames)))
        for image, depth, T in frames:
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format="JPEG", quality=jpeg_quality)
            color = buf.getvalue()
            depth_z = zlib.compress(np.ascontiguousarray(depth, "<u2").tobytes())
            f.write(np.asarray(T, "<f4").tobytes())
            f.write(struct.pack("<4Q", 0, 0, len(color), len(depth_z)))
            f.write(color)
            f.write(depth_z)
        f.write(struct.pack("<Q", 0))  # no IMU frames
    return Path(path)
