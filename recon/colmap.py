"""COLMAP models (`sparse/` or `sparse/0/` with `images/`), read with pycolmap.

A COLMAP model gives every registered image a pose and a camera, and a sparse point cloud, but
no dense depth: the scene has poses and no pointmaps (MASt3R or a depth source supplies those),
and the sparse points are available through :func:`read_colmap_points` (in the same world
frame as the poses).

Conventions converted here:
- COLMAP stores `cam_from_world` (world-to-camera); we keep `T_world_camera`, its inverse.
  Both use OpenCV camera axes (x right, y down, z forward), so no axis flip is needed.
- COLMAP puts the centre of the upper-left pixel at (0.5, 0.5); we put it at (0, 0) (integer
  pixel centres, DESIGN.md), so the principal point moves by half a pixel: `c_ours = c - 0.5`.
- Only the pinhole part of the camera model is kept (focal lengths, principal point). Models
  with distortion parameters (SIMPLE_RADIAL, OPENCV, ...) get one warning that distortion is
  ignored: for geometry at pixel accuracy, undistort first (`colmap image_undistorter`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lift3d.errors import InputError
from lift3d.recon.files import check_intrinsics, numeric_sort_key, read_image
from lift3d.recon.geometry import make_frame, scale_intrinsics
from lift3d.recon.images import capped_size, log_dropped_frames
from lift3d.recon.scene import Frame, RawFrame, Scene

logger = logging.getLogger(__name__)

_MODEL_FILES = ("cameras.bin", "cameras.txt")


def _is_model_dir(p: Path) -> bool:
    return any((p / f).is_file() for f in _MODEL_FILES)


def find_colmap_model(path: str | Path) -> tuple[Path, Path]:
    """The model folder and the image folder of a COLMAP scene.

    `path` may be the scene folder (holding `sparse/0/` or `sparse/`, and `images/`) or the
    model folder itself (`.../sparse/0`, `.../sparse`), whose images are looked for in
    `images/` beside `sparse/`.

    Returns:
        model_dir: the folder holding cameras/images/points3D (.bin or .txt).
        image_dir: the folder the model's image names are relative to.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, "COLMAP scene folder not found")
    if _is_model_dir(path):
        model_dir = path
        candidates = [path.parent / "images", path.parent.parent / "images"]
    else:
        sparse = path / "sparse"
        if _is_model_dir(sparse / "0"):
            model_dir = sparse / "0"
            others = sorted(
                p.name
                for p in sparse.iterdir()
                if p.is_dir() and p.name != "0" and _is_model_dir(p)
            )
            if others:
                logger.warning(
                    "%s: several COLMAP models (0, %s); reading model 0", sparse, ", ".join(others)
                )
        elif _is_model_dir(sparse):
            model_dir = sparse
        else:
            raise InputError(
                path, "no COLMAP model: expected sparse/0/ or sparse/ holding cameras.bin (or .txt)"
            )
        candidates = [path / "images"]
    for c in candidates:
        if c.is_dir():
            return model_dir, c
    raise InputError(candidates[0], "image folder of the COLMAP model not found")


def _read_reconstruction(model_dir: Path):
    from lift3d.errors import NotInstalledError

    try:
        import pycolmap
    except ImportError:
        raise NotInstalledError(
            "reading COLMAP models needs pycolmap: pip install pycolmap"
        ) from None
    try:
        return pycolmap.Reconstruction(str(model_dir))
    except Exception as e:  # pycolmap raises ValueError, IndexError, RuntimeError from C++
        raise InputError(
            model_dir,
            f"pycolmap cannot read this COLMAP model ({e.__class__.__name__}: {e}); "
            "its cameras, images and points3D files may be inconsistent or corrupt",
        ) from None


def colmap_intrinsics(camera) -> np.ndarray:
    """[3, 3] float64 pinhole intrinsics of a pycolmap camera, in our pixel convention."""
    K = np.array(camera.calibration_matrix(), np.float64)
    K[0, 2] -= 0.5
    K[1, 2] -= 0.5
    return K


def _distortion(camera) -> np.ndarray:
    params = np.asarray(camera.params, np.float64)
    return params[list(camera.extra_params_idxs())]


def read_colmap(path: str | Path, *, size: tuple[int, int] | None = None) -> Scene:
    """Read a COLMAP model as a posed, image-only scene.

    Frames are the model's registered images, sorted by name (numerically where names are
    numbers) and named by their file stem (with `/` as `_` when names are in subfolders).
    Images missing on disk are dropped with one warning naming them.

    Args:
        path: the scene folder (with `sparse/` or `sparse/0/` and `images/`) or the model folder.
        size: working resolution (W, H); default: the first image's camera size, long side
            capped at 640.
    """
    model_dir, image_dir = find_colmap_model(path)
    rec = _read_reconstruction(model_dir)
    images = sorted(rec.images.values(), key=lambda im: numeric_sort_key(im.name))
    if not images:
        raise InputError(model_dir, "the COLMAP model holds no image")

    stems = [Path(im.name).stem for im in images]
    unique = len(set(stems)) == len(stems)
    entries: list[tuple[str, Path, np.ndarray, np.ndarray, tuple[int, int]]] = []
    missing: list[str] = []
    unposed: list[str] = []
    dropped: list[str] = []
    distorted: dict[str, np.ndarray] = {}
    for im, stem in zip(images, stems, strict=True):
        name = (
            stem
            if unique
            else str(Path(im.name).with_suffix("")).replace("/", "_").replace("\\", "_")
        )
        if not im.has_pose:
            unposed.append(im.name)
            continue
        file = image_dir / im.name
        if not file.is_file():
            missing.append(im.name)
            continue
        cam = rec.cameras[im.camera_id]
        if cam.is_spherical():
            raise InputError(
                model_dir, f"camera {im.camera_id} ({cam.model_name}) is not a perspective camera"
            )
        K = check_intrinsics(colmap_intrinsics(cam), model_dir / f"cameras (camera {im.camera_id})")
        dist = _distortion(cam)
        if np.any(dist != 0):
            distorted[cam.model_name] = dist
        T_camera_world = np.eye(4)
        T_camera_world[:3] = np.asarray(im.cam_from_world().matrix(), np.float64)
        T = np.linalg.inv(T_camera_world)
        if not np.all(np.isfinite(T)):
            dropped.append(name)
            continue
        entries.append((name, file, K, T, (int(cam.width), int(cam.height))))
    log_dropped_frames(model_dir, unposed, "that are not registered (no pose)")
    log_dropped_frames(image_dir, missing, "whose image file is missing")
    log_dropped_frames(model_dir, dropped, "with a non-finite pose")
    if distorted:
        logger.warning(
            "%s: camera model(s) %s have distortion parameters; they are ignored (pinhole part only). "
            "Undistort the images (colmap image_undistorter) for pixel-accurate geometry",
            model_dir,
            ", ".join(sorted(distorted)),
        )
    if not entries:
        raise InputError(model_dir, "no registered image of the model is usable (see the warnings)")
    if size is None:
        size = capped_size(entries[0][4])

    def load(i: int) -> Frame:
        name, file, K, T, cam_size = entries[i]
        image = read_image(file)
        img_size = (image.shape[1], image.shape[0])
        if img_size != cam_size:
            # images stored at another resolution than calibrated (e.g. downscaled copies)
            K = scale_intrinsics(K, cam_size, img_size)
        return make_frame(RawFrame(name=name, image=image, K=K, T_world_camera=T), i, size)

    return Scene(
        name=Path(path).name if Path(path).name not in ("sparse", "0") else image_dir.parent.name,
        root=Path(path),
        frame_names=[e[0] for e in entries],
        size=tuple(size),
        load_frame=load,
        kind="colmap",
        has_poses=True,
        meta={
            "model_dir": str(model_dir),
            "image_dir": str(image_dir),
            "num_points3D": int(rec.num_points3D()),
            "distortion_ignored": sorted(distorted),
        },
    )


def read_colmap_points(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The sparse 3D points of a COLMAP model, in the world frame of `read_colmap`'s poses.

    Args:
        path: as for `read_colmap`.

    Returns:
        xyz: [N, 3] float32 world points (COLMAP's units; metres only if the model was scaled).
        rgb: [N, 3] uint8 colours.
    """
    model_dir, _ = find_colmap_model(path)
    rec = _read_reconstruction(model_dir)
    points = list(rec.points3D.values())
    xyz = np.array([p.xyz for p in points], np.float32).reshape(-1, 3)
    rgb = np.array([p.color for p in points], np.uint8).reshape(-1, 3)
    return xyz, rgb
