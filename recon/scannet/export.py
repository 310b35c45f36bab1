"""ScanNet SensReader export: `color/N.jpg`, `depth/N.png`, `pose/N.txt`, `intrinsic/*.txt`.

Colour (1296x968) and depth (640x480) differ in size and principal point; both intrinsics are
read and depth is aligned to the working resolution (by default the depth's own size, where
every depth pixel is a measurement). Real exports contain frames whose pose is `-inf`
(tracking lost): they are dropped with one warning that names them, as are frames whose pose is
finite but not rigid and frames whose depth image has another size than the scan's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lift3d.errors import InputError
from lift3d.recon.correspondence import reprojection_match_fn
from lift3d.recon.files import (
    check_intrinsics,
    image_size,
    list_images,
    pose_problem,
    read_depth_png,
    read_image,
    read_matrix,
)
from lift3d.recon.geometry import make_frame
from lift3d.recon.scene import Frame, RawFrame, Scene

logger = logging.getLogger(__name__)


def is_scannet_export(root: Path) -> bool:
    root = Path(root)
    return (root / "color").is_dir() and (root / "pose").is_dir() and (root / "intrinsic").is_dir()


def find_mesh(root: Path, name: str) -> Path | None:
    """The scan's own mesh, `<scene>_vh_clean_2.ply`, which the ScanNet benchmark scores."""
    p = Path(root) / f"{name}_vh_clean_2.ply"
    try:
        return p if p.is_file() else None
    except OSError:  # a scene name too long to name its mesh has none
        return None


def read_scannet_export(
    root: str | Path,
    *,
    size: tuple[int, int] | None = None,
    depth_scale: float = 1000.0,
) -> Scene:
    """Read a ScanNet SensReader export.

    Args:
        root: the scan folder (`.../scene0000_00`).
        size: working resolution (W, H); default: the depth images' size.
        depth_scale: depth PNG units per metre (ScanNet: 1000).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "scene folder not found")
    for sub in ("color", "depth", "pose", "intrinsic"):
        if not (root / sub).is_dir():
            raise InputError(root / sub, f"missing: a ScanNet export needs {sub}/ beside color/")
    K_color = check_intrinsics(
        read_matrix(root / "intrinsic/intrinsic_color.txt"), root / "intrinsic/intrinsic_color.txt"
    )
    K_depth = check_intrinsics(
        read_matrix(root / "intrinsic/intrinsic_depth.txt"), root / "intrinsic/intrinsic_depth.txt"
    )

    colors = list_images(root / "color")
    if not colors:
        raise InputError(root / "color", "no colour images found")
    names: list[str] = []
    poses: list[np.ndarray] = []
    dropped: list[str] = []
    why: dict[str, list[str]] = {}  # reason -> frames dropped for it
    depth_size = None
    for c in colors:
        name = c.stem
        depth_path = root / "depth" / f"{name}.png"
        if not depth_path.is_file():
            raise InputError(depth_path, f"frame {name} has colour ({c.name}) but no depth")
        pose = read_matrix(root / "pose" / f"{name}.txt")
        problem = pose_problem(pose)
        if problem is None:
            # one depth size per scan: a frame of another size would be stretched onto the others
            wh = image_size(depth_path)
            depth_size = depth_size or wh
            if wh != depth_size:
                problem = (
                    f"depth image of another size than the scan's {depth_size[0]}x{depth_size[1]}"
                )
        if problem is not None:
            dropped.append(name)
            why.setdefault(problem, []).append(name)
            continue
        names.append(name)
        poses.append(pose)
    for problem, frames in why.items():
        logger.warning(
            "%s: dropped %d frame(s), %s: %s",
            root,
            len(frames),
            problem,
            ", ".join(frames[:20]) + (" ..." if len(frames) > 20 else ""),
        )
    no_colour = sorted({p.stem for p in list_images(root / "depth")} - {c.stem for c in colors})
    if no_colour:
        logger.warning(
            "%s: %d depth frame(s) have no colour image and are not used: %s",
            root,
            len(no_colour),
            ", ".join(no_colour[:20]) + (" ..." if len(no_colour) > 20 else ""),
        )
    if not names:
        raise InputError(root / "pose", "no frame has a usable pose and depth: nothing to use")

    color_suffix = {c.stem: c.suffix for c in colors}
    if size is None:
        first_depth = read_depth_png(root / "depth" / f"{names[0]}.png", scale=depth_scale)
        size = (int(first_depth.shape[1]), int(first_depth.shape[0]))

    def load(i: int) -> Frame:
        name = names[i]
        raw = RawFrame(
            name=name,
            image=read_image(root / "color" / f"{name}{color_suffix[name]}"),
            K=K_color,
            T_world_camera=poses[i],
            depth=read_depth_png(root / "depth" / f"{name}.png", scale=depth_scale),
            K_depth=K_depth,
        )
        frame = make_frame(raw, i, size)
        if not frame.valid.any():
            logger.warning("%s: frame %s has no valid depth", root, name)
        return frame

    return Scene(
        name=root.name,
        root=root,
        frame_names=names,
        size=tuple(size),
        load_frame=load,
        kind="scannet",
        has_depth=True,
        has_poses=True,
        mesh_path=find_mesh(root, root.name),
        match_fn=reprojection_match_fn,
        meta={"dropped_frames": dropped, "depth_scale": depth_scale},
    )
