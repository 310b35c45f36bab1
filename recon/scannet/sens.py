"""ScanNet raw `.sens` files: read lazily, frame by frame, with no separate export step.

The binary layout (little-endian; ScanNet's `SensReader/python/SensorData.py` and
`c++/src/sensorData.h`):

```
uint32 version (= 4)
uint64 n, char[n] sensor name
float32[16] intrinsic_color, extrinsic_color, intrinsic_depth, extrinsic_depth   (4x4, row-major)
int32 color compression (0 raw, 1 png, 2 jpeg), int32 depth compression (0 raw_ushort, 1 zlib_ushort)
uint32 color width, color height, depth width, depth height
float32 depth shift (depth units per metre, 1000 for millimetres)
uint64 frame count, then per frame:
    float32[16] camera_to_world, uint64 timestamp_color, uint64 timestamp_depth,
    uint64 color bytes, uint64 depth bytes, the colour payload, the depth payload
(IMU frames follow; they are not read)
```
Opening a file reads the header and walks the frame headers once, seeking over the payloads,
so a 5,000-frame scan is indexed in a fraction of a second; a frame's bytes are read only when
it is loaded. Frames are named by their index in the file, as ScanNet's exporter names them,
so label maps line up with an export of the same scan.
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lift3d.errors import InputError
from lift3d.recon.correspondence import reprojection_match_fn
from lift3d.recon.files import check_intrinsics, pose_problem
from lift3d.recon.geometry import make_frame
from lift3d.recon.images import log_dropped_frames
from lift3d.recon.scene import Frame, RawFrame, Scene

logger = logging.getLogger(__name__)

SENS_VERSION = 4
COLOR_COMPRESSION = {0: "raw", 1: "png", 2: "jpeg"}
DEPTH_COMPRESSION = {0: "raw_ushort", 1: "zlib_ushort", 2: "occi_ushort"}
_FRAME_HEADER = struct.Struct("<16f4Q")  # camera_to_world, two timestamps, two payload sizes
_MAX_NAME = 1 << 16


@dataclass
class SensFrameIndex:
    """Where one frame's data lies in the file."""

    T_world_camera: np.ndarray  # [4, 4] float32 cam2world as stored
    color_offset: int
    color_bytes: int
    depth_offset: int
    depth_bytes: int
    timestamp_color: int = 0
    timestamp_depth: int = 0


@dataclass
class SensFile:
    """The header of a `.sens` file and the byte ranges of its frames.

    Attributes:
        path: the file.
        sensor_name: the capture device as recorded.
        K_color: [4, 4] float32 colour intrinsics as stored.
        K_depth: [4, 4] float32 depth intrinsics as stored.
        T_color, T_depth: [4, 4] float32 extrinsics as stored (identity in ScanNet).
        color_compression, depth_compression: names from `COLOR_COMPRESSION`, `DEPTH_COMPRESSION`.
        color_size, depth_size: (W, H) of the colour and depth images.
        depth_shift: depth units per metre.
        frames: one `SensFrameIndex` per frame, in file order.
    """

    path: Path
    sensor_name: str
    K_color: np.ndarray
    T_color: np.ndarray
    K_depth: np.ndarray
    T_depth: np.ndarray
    color_compression: str
    depth_compression: str
    color_size: tuple[int, int]
    depth_size: tuple[int, int]
    depth_shift: float
    frames: list[SensFrameIndex] = field(default_factory=list)

    @classmethod
    def open(cls, path: str | Path) -> SensFile:
        """Read the header and index every frame (no payload is read)."""
        path = Path(path)
        if not path.is_file():
            raise InputError(path, ".sens file not found")
        file_size = path.stat().st_size
        with open(path, "rb") as f:

            def take(fmt: str, what: str):
                s = struct.Struct("<" + fmt)
                buf = f.read(s.size)
                if len(buf) != s.size:
                    raise InputError(
                        path, f"truncated .sens file: it ends inside the header ({what})"
                    )
                return s.unpack(buf)

            (version,) = take("I", "version")
            if version != SENS_VERSION:
                raise InputError(
                    path,
                    f"not a ScanNet .sens file of version {SENS_VERSION} (found version {version})",
                )
            (name_len,) = take("Q", "sensor name length")
            if name_len > _MAX_NAME:
                raise InputError(
                    path, f"not a ScanNet .sens file (sensor name of {name_len} bytes)"
                )
            name = f.read(name_len)
            if len(name) != name_len:
                raise InputError(
                    path, "truncated .sens file: it ends inside the header (sensor name)"
                )
            mats = [
                np.array(take("16f", "calibration"), np.float32).reshape(4, 4) for _ in range(4)
            ]
            c_comp, d_comp = take("ii", "compression types")
            cw, ch, dw, dh = take("4I", "image sizes")
            (depth_shift,) = take("f", "depth shift")
            (n_frames,) = take("Q", "frame count")
            if c_comp not in COLOR_COMPRESSION or d_comp not in DEPTH_COMPRESSION:
                raise InputError(
                    path, f"unknown compression types (colour {c_comp}, depth {d_comp})"
                )
            if min(cw, ch, dw, dh) == 0 or not depth_shift > 0:
                raise InputError(
                    path,
                    f"header has colour {cw}x{ch}, depth {dw}x{dh}, depth shift {depth_shift}: all must be > 0",
                )
            sens = cls(
                path=path,
                sensor_name=name.decode("utf-8", "replace"),
                K_color=mats[0],
                T_color=mats[1],
                K_depth=mats[2],
                T_depth=mats[3],
                color_compression=COLOR_COMPRESSION[c_comp],
                depth_compression=DEPTH_COMPRESSION[d_comp],
                color_size=(cw, ch),
                depth_size=(dw, dh),
                depth_shift=float(depth_shift),
            )
            pos = f.tell()
            for i in range(n_frames):
                f.seek(pos)
                buf = f.read(_FRAME_HEADER.size)
                if len(buf) != _FRAME_HEADER.size:
                    raise InputError(
                        path,
                        f"truncated .sens file: the header announces {n_frames} frames, it holds {i} complete",
                    )
                values = _FRAME_HEADER.unpack(buf)
                ts_c, ts_d, n_color, n_depth = values[16:]
                color_offset = pos + _FRAME_HEADER.size
                pos = color_offset + n_color + n_depth
                if pos > file_size:
                    raise InputError(
                        path,
                        f"truncated .sens file: the header announces {n_frames} frames, it holds {i} complete",
                    )
                sens.frames.append(
                    SensFrameIndex(
                        T_world_camera=np.array(values[:16], np.float32).reshape(4, 4),
                        color_offset=color_offset,
                        color_bytes=n_color,
                        depth_offset=color_offset + n_color,
                        depth_bytes=n_depth,
                        timestamp_color=ts_c,
                        timestamp_depth=ts_d,
                    )
                )
        return sens

    def _read(self, offset: int, n: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read(n)
        if len(data) != n:
            raise InputError(
                self.path, f"cannot read {n} bytes at offset {offset} (file changed or truncated)"
            )
        return data

    def read_color(self, i: int) -> np.ndarray:
        """[H, W, 3] uint8 RGB colour of frame i."""
        fr = self.frames[i]
        data = self._read(fr.color_offset, fr.color_bytes)
        W, H = self.color_size
        if self.color_compression == "raw":
            if len(data) != W * H * 3:
                raise InputError(
                    self.path, f"frame {i}: raw colour of {len(data)} bytes, expected {W * H * 3}"
                )
            return np.frombuffer(data, np.uint8).reshape(H, W, 3).copy()
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as im:
                image = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise InputError(
                self.path, f"frame {i}: cannot decode {self.color_compression} colour ({e})"
            ) from None
        if image.shape[:2] != (H, W):
            raise InputError(
                self.path,
                f"frame {i}: colour is {image.shape[1]}x{image.shape[0]}, the header says {W}x{H}",
            )
        return image

    def read_depth_raw(self, i: int) -> np.ndarray:
        """[h, w] uint16 depth of frame i in units of 1/depth_shift metres (0 = missing)."""
        fr = self.frames[i]
        data = self._read(fr.depth_offset, fr.depth_bytes)
        if self.depth_compression == "zlib_ushort":
            try:
                data = zlib.decompress(data)
            except zlib.error as e:
                raise InputError(self.path, f"frame {i}: corrupt zlib depth ({e})") from None
        elif self.depth_compression != "raw_ushort":
            raise InputError(
                self.path, f"depth compression {self.depth_compression} is not supported"
            )
        w, h = self.depth_size
        if len(data) != w * h * 2:
            raise InputError(
                self.path, f"frame {i}: depth of {len(data)} bytes, expected {w}x{h} uint16"
            )
        return np.frombuffer(data, "<u2").reshape(h, w).copy()

    def raw_frame(self, i: int, name: str | None = None) -> RawFrame:
        """Frame i at its stored sizes (colour and depth differ in ScanNet)."""
        return RawFrame(
            name=str(i) if name is None else name,
            image=self.read_color(i),
            K=self.K_color[:3, :3].astype(np.float64),
            T_world_camera=self.frames[i].T_world_camera,
            depth=self.read_depth_raw(i).astype(np.float32) / self.depth_shift,
            K_depth=self.K_depth[:3, :3].astype(np.float64),
        )


def read_sens(path: str | Path, *, size: tuple[int, int] | None = None) -> Scene:
    """Read a ScanNet `.sens` file as an RGB-D scene.

    Frames with a non-finite pose (ScanNet marks lost tracking with `-inf`) are dropped with one
    warning that names them.

    Args:
        path: the `.sens` file.
        size: working resolution (W, H); default: the depth images' size.
    """
    sens = SensFile.open(path)
    path = sens.path
    check_intrinsics(sens.K_color, path)
    check_intrinsics(sens.K_depth, path)
    for what, T in (("colour", sens.T_color), ("depth", sens.T_depth)):
        # the depth is aligned to colour assuming one optical centre, as in ScanNet's exports
        if np.all(np.isfinite(T)) and not np.allclose(T, np.eye(4), atol=1e-6):
            logger.warning("%s: the %s extrinsic is not identity; it is ignored", path, what)
    if not sens.frames:
        raise InputError(path, "the .sens file holds no frame")
    problems = [pose_problem(fr.T_world_camera) for fr in sens.frames]
    keep = [i for i, pr in enumerate(problems) if pr is None]
    dropped = [
        str(i) for i, fr in enumerate(sens.frames) if not np.all(np.isfinite(fr.T_world_camera))
    ]
    log_dropped_frames(path, dropped, "with a non-finite pose (tracking lost)")
    nonrigid = [str(i) for i, pr in enumerate(problems) if pr is not None and str(i) not in dropped]
    log_dropped_frames(
        path, nonrigid, "whose pose is not rigid (rotation part not orthonormal with det +1)"
    )
    if not keep:
        raise InputError(path, "no frame has a usable pose: nothing to use")
    names = [str(i) for i in keep]
    if size is None:
        size = sens.depth_size

    def load(k: int) -> Frame:
        frame = make_frame(sens.raw_frame(keep[k]), k, size)
        if not frame.valid.any():
            logger.warning("%s: frame %s has no valid depth", path, names[k])
        return frame

    return Scene(
        name=path.stem,
        root=path,
        frame_names=names,
        size=tuple(size),
        load_frame=load,
        kind="sens",
        has_depth=True,
        has_poses=True,
        match_fn=reprojection_match_fn,
        meta={
            "dropped_frames": dropped,
            "depth_shift": sens.depth_shift,
            "sensor_name": sens.sensor_name,
            "color_size": list(sens.color_size),
            "depth_size": list(sens.depth_size),
        },
    )
