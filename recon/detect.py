"""`load_scene`: the one entry point that turns a path into a `Scene`, whatever its format.

The format is detected from the folder's content:

| content                                         | reader                 |
|-------------------------------------------------|------------------------|
| `color/ depth/ pose/ intrinsic/`                | ScanNet SensReader export |
| a `*.sens` file (or a folder holding one)       | ScanNet raw `.sens`    |
| `transforms.json`                               | nerfstudio / instant-ngp |
| `sparse/` (or `sparse/0/`) + `images/`, or a   | COLMAP model           |
| model folder (`cameras.bin`/`cameras.txt`)      |                        |
| `*.log` trajectory + `image/` + `depth/`        | Redwood RGB-D          |
| a video file (`.mp4`, `.avi`, `.mov`, ...)      | video frames           |
| a folder of images                              | image folder           |

ScanNet users name scans by scene number: `scannet/scene0000` resolves to `scannet/scene0000_00`
when that is the only scan of scene 0000 there. Relative paths are looked up from the working
directory, then under `$LIFT3D_DATA` when it is set.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lift3d.errors import InputError
from lift3d.recon.files import IMAGE_SUFFIXES
from lift3d.recon.scene import Scene

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
SCENE_FORMATS = ("auto", "scannet", "sens", "nerfstudio", "colmap", "redwood", "video", "images")


def resolve_scene_path(path: str | Path) -> Path:
    """The scene folder or file a user means by `path` (see the module docstring)."""
    path = Path(path).expanduser()
    candidates = [path]
    if not path.is_absolute() and os.environ.get("LIFT3D_DATA"):
        candidates.append(Path(os.environ["LIFT3D_DATA"]) / path)
    for p in candidates:
        if p.exists():
            return p
    # ScanNet scan-number shorthand: scene0000 -> the only scene0000_XX beside it
    for p in candidates:
        if re.fullmatch(r"scene\d{4}", p.name) and p.parent.is_dir():
            scans = sorted(q for q in p.parent.glob(f"{p.name}_*") if q.is_dir())
            if len(scans) == 1:
                return scans[0]
            if len(scans) > 1:
                raise InputError(
                    p, "ambiguous scene name; candidates: " + ", ".join(q.name for q in scans)
                )
    parent = candidates[-1].parent
    hint = ""
    if parent.is_dir():
        near = sorted(q.name for q in parent.iterdir() if not q.name.startswith("."))[:20]
        hint = f"; {parent} holds: " + ", ".join(near) if near else f"; {parent} is empty"
    raise InputError(path, "scene not found" + hint)


def detect_format(path: Path) -> str:
    """The reader name for a scene path, from its content."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() == ".sens":
            return "sens"
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return "video"
        if path.name == "transforms.json":
            return "nerfstudio"
        raise InputError(path, "not a scene: expected a folder, a .sens file or a video file")
    if (path / "color").is_dir() and (path / "pose").is_dir():
        return "scannet"
    if list(path.glob("*.sens")):
        return "sens"
    if (path / "transforms.json").is_file():
        return "nerfstudio"
    if (path / "sparse").is_dir() or any(
        (path / f"cameras{ext}").is_file() for ext in (".bin", ".txt")
    ):
        return "colmap"
    if (
        (path / "image").is_dir()
        and (path / "depth").is_dir()
        and (list(path.glob("*.log")) or list(path.glob("*/trajectory.log")))
    ):
        return "redwood"
    videos = [p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES]
    if len(videos) == 1:
        return "video"
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
        return "images"
    if (path / "images").is_dir():
        return "images"
    raise InputError(
        path,
        "cannot tell the scene format: expected a ScanNet export (color/ depth/ pose/ intrinsic/), "
        "a .sens file, transforms.json, a COLMAP sparse/ model, a Redwood .log + image/ + depth/, "
        "a video, or a folder of images",
    )


def load_scene(
    path: str | Path,
    *,
    format: str = "auto",
    size: tuple[int, int] | None = None,
) -> Scene:
    """Read a scene from disk.

    Args:
        path: scene folder or file (see the module docstring for what is recognised).
        format: one of `SCENE_FORMATS`; `auto` detects it from the content.
        size: working resolution (W, H); default: the depth size for RGB-D scenes, else the
            image size capped at 640 pixels on the long side.
    """
    path = resolve_scene_path(path)
    if format not in SCENE_FORMATS:
        raise InputError(
            None, f"unknown scene format {format!r}; choose from {', '.join(SCENE_FORMATS)}"
        )
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "scannet":
        from lift3d.recon.scannet import read_scannet_export

        return read_scannet_export(path, size=size)
    if fmt == "sens":
        from lift3d.recon.scannet.sens import read_sens

        if path.is_dir():
            files = sorted(path.glob("*.sens"))
            if len(files) != 1:
                raise InputError(path, f"expected one .sens file, found {len(files)}")
            path = files[0]
        return read_sens(path, size=size)
    if fmt == "nerfstudio":
        from lift3d.recon.nerfstudio import read_transforms_json

        return read_transforms_json(path, size=size)
    if fmt == "colmap":
        from lift3d.recon.colmap import read_colmap

        return read_colmap(path, size=size)
    if fmt == "redwood":
        from lift3d.recon.redwood import read_redwood

        return read_redwood(path, size=size)
    if fmt == "video":
        from lift3d.recon.images import read_video

        if path.is_dir():
            path = next(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        return read_video(path, size=size)
    from lift3d.recon.images import read_image_folder

    return read_image_folder(path, size=size)
