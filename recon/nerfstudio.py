"""nerfstudio and instant-ngp `transforms.json` scenes.

The file lists frames with a `file_path` (relative to the file's folder) and a 4x4
`transform_matrix` (cam2world), with intrinsics at the top level or per frame:
`fl_x, fl_y, cx, cy, w, h` (nerfstudio, instant-ngp), or `camera_angle_x` (and optionally
`camera_angle_y`), the horizontal field of view in radians (Blender / original NeRF).
An optional per-frame `depth_file_path` (16-bit PNG or `.npy`) makes it an RGB-D scene.

Conventions converted here:
- `transform_matrix` uses OpenGL/Blender camera axes (x right, y up, z backwards); OpenCV's y
  and z point the other way, so `T_opencv = T_opengl @ diag(1, -1, -1, 1)`.
- `cx, cy` put the upper-left pixel's centre at (0.5, 0.5) (nerfstudio casts rays through
  `pixel + 0.5`; COLMAP, whose numbers ns-process-data copies, does the same); ours is at (0, 0),
  so `c_ours = c - 0.5`. Without `cx`/`cy`, the principal point is the image centre.
- Depth PNGs are in units of `depth_unit_scale_factor` metres (nerfstudio's default 1e-3, i.e.
  millimetres; nerfstudio takes it from its data-parser config, not from the file, so it is
  an argument here, and a top-level key of that name in the file is honoured too).
- Distortion coefficients (`k1, k2, k3, k4, p1, p2`) are ignored with one warning.
Frames are sorted by file name (numerically where names are numbers), as nerfstudio sorts them.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from lift3d.errors import InputError
from lift3d.recon.correspondence import reprojection_match_fn
from lift3d.recon.files import check_intrinsics, numeric_sort_key, read_depth_png, read_image
from lift3d.recon.geometry import make_frame, scale_intrinsics
from lift3d.recon.images import capped_size, image_file_size, log_dropped_frames
from lift3d.recon.scene import Frame, RawFrame, Scene

logger = logging.getLogger(__name__)

# OpenGL (x right, y up, z back) -> OpenCV (x right, y down, z forward) camera axes
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])
_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
_UNSUPPORTED_MODELS = ("EQUIRECTANGULAR",)
_IMAGE_GUESS_SUFFIXES = (".png", ".jpg", ".jpeg", ".JPG", ".PNG")


def opengl_to_opencv(T_world_camera_gl: np.ndarray) -> np.ndarray:
    """[4, 4] cam2world with OpenGL camera axes -> the same camera with OpenCV axes (and back)."""
    return np.asarray(T_world_camera_gl, np.float64) @ GL_TO_CV


def _resolve(base: Path, rel: str, json_path: Path, what: str) -> Path:
    p = base / rel
    if p.is_file():
        return p
    if not p.suffix:
        # Blender / original NeRF files omit the extension (`./train/r_0`)
        for suf in _IMAGE_GUESS_SUFFIXES:
            if p.with_suffix(suf).is_file():
                return p.with_suffix(suf)
    raise InputError(p, f"{what} listed in {json_path.name} not found")


def _camera(
    meta: dict, frame: dict, json_path: Path, where: str, image_file: Path
) -> tuple[np.ndarray, tuple[int, int]]:
    """[3, 3] intrinsics (our pixel convention) and the (W, H) they belong to."""

    def get(key: str):
        return frame[key] if key in frame else meta.get(key)

    try:
        w, h = get("w"), get("h")
        if w is None or h is None:
            w, h = image_file_size(image_file)
        w, h = int(w), int(h)
        fx, fy = get("fl_x"), get("fl_y")
        if fx is None:
            angle_x = get("camera_angle_x")
            if angle_x is None:
                raise InputError(json_path, f"{where}: no intrinsics (fl_x/fl_y or camera_angle_x)")
            fx = 0.5 * w / math.tan(0.5 * float(angle_x))
        if fy is None:
            angle_y = get("camera_angle_y")
            fy = fx if angle_y is None else 0.5 * h / math.tan(0.5 * float(angle_y))
        cx = get("cx")
        cy = get("cy")
        cx = w / 2 if cx is None else float(cx)
        cy = h / 2 if cy is None else float(cy)
        K = np.array([[float(fx), 0.0, cx - 0.5], [0.0, float(fy), cy - 0.5], [0.0, 0.0, 1.0]])
    except (TypeError, ValueError) as e:
        raise InputError(json_path, f"{where}: intrinsics are not numbers ({e})") from None
    return check_intrinsics(K, json_path), (w, h)


def _read_depth(path: Path, unit: float) -> np.ndarray:
    """[h, w] float32 metres from a 16-bit PNG or a `.npy` array in units of `unit` metres."""
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path)
        except (OSError, ValueError) as e:
            raise InputError(path, f"cannot read depth array ({e})") from None
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise InputError(path, f"depth array must be [h, w], found shape {arr.shape}")
        return arr.astype(np.float32) * np.float32(unit)
    return read_depth_png(path, scale=1.0 / unit)


def read_transforms_json(
    path: str | Path,
    *,
    size: tuple[int, int] | None = None,
    depth_unit_scale_factor: float | None = None,
) -> Scene:
    """Read a nerfstudio / instant-ngp `transforms.json` scene.

    With `depth_file_path` on every frame the scene is RGB-D (pointmaps, reprojection matches);
    otherwise it has poses and no depth. Frames with a non-finite pose are dropped with one
    warning that names them.

    Args:
        path: the `transforms.json` file, or the folder holding it.
        size: working resolution (W, H); default: the first depth image's size for RGB-D
            scenes, else the first image's size with the long side capped at 640.
        depth_unit_scale_factor: metres per depth unit; default: the file's
            `depth_unit_scale_factor` key if present, else 1e-3 (millimetre PNGs).
    """
    path = Path(path)
    json_path = path / "transforms.json" if path.is_dir() else path
    if not json_path.is_file():
        raise InputError(json_path, "transforms.json not found")
    base = json_path.parent
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(json_path, f"cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise InputError(json_path, f"malformed JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise InputError(json_path, "expected an object with a non-empty `frames` list")
    model = str(meta.get("camera_model", "OPENCV")).upper()
    if model in _UNSUPPORTED_MODELS:
        raise InputError(json_path, f"camera_model {model} is not a perspective camera")
    if depth_unit_scale_factor is None:
        depth_unit_scale_factor = float(meta.get("depth_unit_scale_factor", 1e-3))
    if not depth_unit_scale_factor > 0:
        raise InputError(
            json_path, f"depth_unit_scale_factor must be > 0, found {depth_unit_scale_factor}"
        )

    frames_meta = meta["frames"]
    for k, fr in enumerate(frames_meta):
        if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
            raise InputError(json_path, f"frame {k}: needs `file_path` and `transform_matrix`")
    order = sorted(
        range(len(frames_meta)),
        key=lambda k: numeric_sort_key(Path(frames_meta[k]["file_path"]).name),
    )
    has_depth = [("depth_file_path" in frames_meta[k]) for k in order]
    if any(has_depth) and not all(has_depth):
        missing = [
            Path(frames_meta[k]["file_path"]).name
            for k, d in zip(order, has_depth, strict=True)
            if not d
        ]
        raise InputError(
            json_path,
            f"depth_file_path is given for some frames only; missing for {', '.join(missing[:10])}",
        )
    rgbd = all(has_depth)

    stems = [Path(frames_meta[k]["file_path"]).stem for k in order]
    unique = len(set(stems)) == len(stems)
    entries: list[dict] = []
    dropped: list[str] = []
    distorted = any(float(meta.get(key, 0) or 0) != 0 for key in _DISTORTION_KEYS)
    for k, stem in zip(order, stems, strict=True):
        fr = frames_meta[k]
        rel = Path(fr["file_path"])
        name = stem if unique else f"{rel.parent.name}_{stem}"
        where = f"frame {k} ({fr['file_path']})"
        try:
            T = np.array(fr["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(
                json_path, f"{where}: transform_matrix is not a matrix of numbers"
            ) from None
        if T.shape != (4, 4):
            raise InputError(
                json_path, f"{where}: transform_matrix must be 4x4, found shape {T.shape}"
            )
        if not np.all(np.isfinite(T)):
            dropped.append(name)
            continue
        image_file = _resolve(base, fr["file_path"], json_path, "image")
        K, cam_size = _camera(meta, fr, json_path, where, image_file)
        distorted |= any(float(fr.get(key, 0) or 0) != 0 for key in _DISTORTION_KEYS)
        entry = {
            "name": name,
            "image": image_file,
            "K": K,
            "cam_size": cam_size,
            "T": opengl_to_opencv(T),
        }
        if rgbd:
            entry["depth"] = _resolve(base, fr["depth_file_path"], json_path, "depth file")
        entries.append(entry)
    log_dropped_frames(json_path, dropped, "with a non-finite transform_matrix")
    if distorted:
        logger.warning("%s: distortion coefficients are ignored (pinhole part only)", json_path)
    if not entries:
        raise InputError(json_path, "every frame has a non-finite transform_matrix: nothing to use")

    if size is None:
        if rgbd:
            size = _read_depth(entries[0]["depth"], depth_unit_scale_factor).shape[::-1]
        else:
            size = capped_size(entries[0]["cam_size"])
    size = (int(size[0]), int(size[1]))

    def load(i: int) -> Frame:
        e = entries[i]
        image = read_image(e["image"])
        K = e["K"]
        img_size = (image.shape[1], image.shape[0])
        if img_size != e["cam_size"]:
            # images stored at another resolution than `w, h` (e.g. nerfstudio's images_2/)
            K = scale_intrinsics(K, e["cam_size"], img_size)
        raw = RawFrame(name=e["name"], image=image, K=K, T_world_camera=e["T"])
        if rgbd:
            raw.depth = _read_depth(e["depth"], depth_unit_scale_factor)
        frame = make_frame(raw, i, size)
        if rgbd and not frame.valid.any():
            logger.warning("%s: frame %s has no valid depth", json_path, e["name"])
        return frame

    scene_meta = {"dropped_frames": dropped, "camera_model": model}
    if rgbd:
        scene_meta["depth_unit_scale_factor"] = depth_unit_scale_factor
    for key in ("applied_transform", "applied_scale"):
        # the transform nerfstudio's converters already applied to the poses (e.g. from COLMAP's frame)
        if key in meta:
            scene_meta[key] = meta[key]
    return Scene(
        name=base.name,
        root=json_path,
        frame_names=[e["name"] for e in entries],
        size=size,
        load_frame=load,
        kind="nerfstudio",
        has_depth=rgbd,
        has_poses=True,
        match_fn=reprojection_match_fn if rgbd else None,
        meta=scene_meta,
    )
