"""Redwood-style RGB-D sequences: `image/`, `depth/` and a `.log` camera trajectory.

The layout of the Redwood datasets and of Open3D's reconstruction system (e.g. the augmented
ICL-NUIM scenes): colour in `image/`, 16-bit depth in millimetres in `depth/`, paired by name
(or, when the names differ, by sorted order as Open3D pairs them), and a trajectory `.log`
made of one block per frame:

```
<frame id> <frame id> <frame id + 1>      three integers; the first is the frame's index
r00 r01 r02 t0                            4x4 cam2world, OpenCV camera axes, metres
r10 r11 r12 t1
r20 r21 r22 t2
0   0   0   1
```
The `.log` is looked for at the root (`*.log`, `trajectory.log` first) and then in a subfolder
(`*/trajectory.log`, as Open3D's reconstruction system writes `scene/trajectory.log`).
Intrinsics are the PrimeSense defaults (fx = fy = 525, cx = 319.5, cy = 239.5 at 640x480, in
integer-pixel-centre convention like ours) unless a `camera_intrinsic.json` (Open3D's
`PinholeCameraIntrinsic`: `width`, `height`, column-major `intrinsic_matrix`) lies at the root.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from lift3d.errors import InputError
from lift3d.recon.correspondence import reprojection_match_fn
from lift3d.recon.files import (
    check_intrinsics,
    list_images,
    pose_problem,
    read_depth_png,
    read_image,
)
from lift3d.recon.geometry import make_frame, scale_intrinsics
from lift3d.recon.images import log_dropped_frames
from lift3d.recon.scene import Frame, RawFrame, Scene

logger = logging.getLogger(__name__)

# PrimeSense / Kinect v1 defaults, Open3D's PinholeCameraIntrinsicParameters.PrimeSenseDefault
PRIMESENSE_K = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])
PRIMESENSE_SIZE = (640, 480)


def read_log_trajectory(path: str | Path) -> dict[int, np.ndarray]:
    """Poses of a Redwood `.log` trajectory.

    Returns:
        {frame id: [4, 4] float64 cam2world}, in file order.
    """
    path = Path(path)
    try:
        lines = [ln.split() for ln in path.read_text().splitlines()]
    except FileNotFoundError:
        raise InputError(path, "trajectory file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read ({e})") from None
    numbered = [(k + 1, ln) for k, ln in enumerate(lines) if ln]
    if len(numbered) % 5:
        raise InputError(
            path, f"a .log trajectory has 5 lines per frame; found {len(numbered)} non-empty lines"
        )
    poses: dict[int, np.ndarray] = {}
    for b in range(0, len(numbered), 5):
        line_no, head = numbered[b]
        try:
            ids = [int(x) for x in head]
            rows = [[float(x) for x in ln] for _, ln in numbered[b + 1 : b + 5]]
        except ValueError:
            raise InputError(
                path, f"line {line_no}: expected `i j k` then 4 lines of 4 numbers"
            ) from None
        if len(ids) != 3 or any(len(r) != 4 for r in rows):
            raise InputError(
                path, f"line {line_no}: expected `i j k` then a 4x4 matrix (4 lines of 4 numbers)"
            )
        if ids[0] in poses:
            raise InputError(
                path, f"line {line_no}: frame id {ids[0]} repeats (not a camera trajectory)"
            )
        poses[ids[0]] = np.array(rows, np.float64)
    if not poses:
        raise InputError(path, "the trajectory holds no pose")
    return poses


def find_trajectory(root: Path) -> Path:
    """The `.log` trajectory of a Redwood scene folder (see the module docstring)."""
    logs = sorted(root.glob("*.log"))
    if len(logs) > 1:
        named = [p for p in logs if p.name == "trajectory.log"]
        if not named:
            raise InputError(
                root,
                "several .log files; keep one or name it trajectory.log: "
                + ", ".join(p.name for p in logs),
            )
        logs = named
    if not logs:
        logs = sorted(root.glob("*/trajectory.log"))
        if len(logs) > 1:
            raise InputError(
                root,
                "several */trajectory.log files: "
                + ", ".join(str(p.relative_to(root)) for p in logs),
            )
    if not logs:
        raise InputError(root, "no .log trajectory (expected *.log or */trajectory.log)")
    return logs[0]


def read_open3d_intrinsics(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """[3, 3] intrinsics and (W, H) from an Open3D `PinholeCameraIntrinsic` JSON."""
    try:
        data = json.loads(Path(path).read_text())
        W, H = int(data["width"]), int(data["height"])
        # Open3D writes the matrix column-major
        K = np.array(data["intrinsic_matrix"], np.float64).reshape(3, 3).T
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(path, f"cannot read camera intrinsics ({e})") from None
    except (KeyError, TypeError, ValueError):
        raise InputError(
            path, "expected `width`, `height` and a 9-number `intrinsic_matrix`"
        ) from None
    return check_intrinsics(K, path), (W, H)


def _pair_depth(root: Path, colors: list[Path]) -> list[Path]:
    depths = list_images(root / "depth")
    by_stem = {p.stem: p for p in depths}
    if all(c.stem in by_stem for c in colors):
        return [by_stem[c.stem] for c in colors]
    if len(depths) == len(colors):
        # Redwood captures name colour and depth by their own timestamps: pair by order
        return depths
    c = next(c for c in colors if c.stem not in by_stem)
    raise InputError(
        root / "depth" / f"{c.stem}.png", f"frame {c.stem} has colour ({c.name}) but no depth"
    )


def read_redwood(
    path: str | Path,
    *,
    size: tuple[int, int] | None = None,
    trajectory: str | Path | None = None,
    depth_scale: float = 1000.0,
) -> Scene:
    """Read a Redwood-style RGB-D sequence.

    Frame k of the sorted `image/` files takes the pose whose id is k. Images without a pose
    and poses without an image are reported in one warning each; frames with a non-finite
    pose are dropped with one warning.

    Args:
        path: the scene folder (holding `image/`, `depth/` and the `.log`).
        size: working resolution (W, H); default: the depth images' size.
        trajectory: the `.log` file; default: found as the module docstring says.
        depth_scale: depth PNG units per metre (1000: millimetres).
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(root, "scene folder not found")
    for sub in ("image", "depth"):
        if not (root / sub).is_dir():
            raise InputError(root / sub, f"missing: a Redwood scene needs {sub}/")
    colors = list_images(root / "image")
    if not colors:
        raise InputError(root / "image", "no colour images found")
    depths = _pair_depth(root, colors)
    log_path = Path(trajectory) if trajectory is not None else find_trajectory(root)
    poses = read_log_trajectory(log_path)

    intr_path = root / "camera_intrinsic.json"
    if intr_path.is_file():
        K, K_size = read_open3d_intrinsics(intr_path)
    else:
        K, K_size = PRIMESENSE_K, PRIMESENSE_SIZE

    keep: list[int] = []
    unposed: list[str] = []
    nonfinite: list[str] = []
    for k, c in enumerate(colors):
        if k not in poses:
            unposed.append(c.stem)
        elif pose_problem(poses[k]) is not None:
            nonfinite.append(c.stem)
        else:
            keep.append(k)
    extra = sorted(i for i in poses if not 0 <= i < len(colors))
    log_dropped_frames(
        root, unposed, f"with no pose in {log_path.name} ({len(poses)} poses, {len(colors)} images)"
    )
    log_dropped_frames(root, nonfinite, "with a non-finite or non-rigid pose")
    if extra:
        logger.warning(
            "%s: %d pose(s) have no image (ids %s); %d images in image/",
            log_path,
            len(extra),
            ", ".join(map(str, extra[:20])) + (" ..." if len(extra) > 20 else ""),
            len(colors),
        )
    if not keep:
        raise InputError(
            log_path, f"no frame id of the trajectory matches an image of {root / 'image'}"
        )
    names = [colors[k].stem for k in keep]
    if size is None:
        d0 = read_depth_png(depths[keep[0]], scale=depth_scale)
        size = (int(d0.shape[1]), int(d0.shape[0]))

    def load(i: int) -> Frame:
        k = keep[i]
        image = read_image(colors[k])
        depth = read_depth_png(depths[k], scale=depth_scale)
        img_size = (image.shape[1], image.shape[0])
        K_img = K if img_size == K_size else scale_intrinsics(K, K_size, img_size)
        K_depth_size = (depth.shape[1], depth.shape[0])
        K_depth = K if K_depth_size == K_size else scale_intrinsics(K, K_size, K_depth_size)
        raw = RawFrame(
            name=names[i],
            image=image,
            K=K_img,
            T_world_camera=poses[k],
            depth=depth,
            K_depth=K_depth,
        )
        frame = make_frame(raw, i, size)
        if not frame.valid.any():
            logger.warning("%s: frame %s has no valid depth", root, names[i])
        return frame

    return Scene(
        name=root.name,
        root=root,
        frame_names=names,
        size=tuple(size),
        load_frame=load,
        kind="redwood",
        has_depth=True,
        has_poses=True,
        match_fn=reprojection_match_fn,
        meta={
            "trajectory": str(log_path),
            "intrinsics": str(intr_path) if intr_path.is_file() else "PrimeSense default",
            "dropped_frames": unposed + nonfinite,
            "depth_scale": depth_scale,
        },
    )
