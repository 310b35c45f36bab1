"""The files every stage reads and writes: atomic writes, PLY, label maps, JSON, images.

One module of its own, below every stage (it needs only `lift3d.errors`), so that `recon`,
`consistency`, `lift3d` and `viewers` share one way of writing a file whole and one way of
reading a PLY, a label map or a JSON file with errors that name the file:

- `atomic_path`: write under a temporary name beside the final path, rename on success; every
  output file is written through it (DESIGN.md: "files appear whole or not at all").
- `scratch_dir`: a run's private temporary folder inside its output folder.
- `read_ply`, `ply_vertex_fields`, `write_ply`: PLY files through `plyfile`, binary
  little-endian on writing.
- `read_label_map`, `read_label_maps`, `write_label_map`: label maps as 16-bit PNGs, `0` =
  unlabeled, `1..K` = object IDs shared by all views; 16 bits hold 65,535 IDs, and a map that
  would exceed that is an error, never a silent wrap-around.
- `read_json`, `write_json`: JSON objects (numpy scalars, arrays and paths converted on writing).
- `write_image`: a preview image (JPEG for `.jpg`, PNG otherwise).

What a scene is made of (colour frames, depth PNGs, pose matrices) is read by
`lift3d.recon.files`; the files lift3d writes for other tools (labeled point clouds and meshes,
the ScanNet benchmark format) by `lift3d.export`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from lift3d.errors import InputError

__all__ = [
    "SCRATCH",
    "atomic_path",
    "ply_vertex_fields",
    "read_json",
    "read_label_map",
    "read_label_maps",
    "read_ply",
    "scratch_dir",
    "write_image",
    "write_json",
    "write_label_map",
    "write_ply",
]

# ------------------------------------------------------------------------------ atomic writes


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A file therefore appears whole or not at all, even when the run is interrupted.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the temporary name is hidden and ~20 characters longer than the final one: cut the
        # name part so that a final name the file system takes gives a temporary name it takes
        suffix = ".tmp" + path.suffix
        stem = path.name[: max(1, _NAME_MAX - len(suffix) - 10)]
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=suffix, dir=path.parent)
    except OSError as e:
        raise InputError(path, f"cannot write ({e.strerror})") from None
    # mkstemp creates 0600; a result file gets what the umask gives a plain open() (0644 under
    # 022), so others on a shared machine, or a web server, can read it
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise InputError(path, f"cannot write ({e.strerror})") from None
    finally:
        if tmp.exists():
            tmp.unlink()


_NAME_MAX = 255  #: longest file name of ext4, xfs, btrfs, tmpfs


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (/proc, since 4.7)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and put back (a moment's race with other threads)
    os.umask(mask)
    return mask


SCRATCH = ".lift3d-tmp"  #: the folder of a run's temporary files inside its output folder


@contextmanager
def scratch_dir(out: str | Path) -> Iterator[Path]:
    """A private temporary folder `out/.lift3d-tmp/<pid>-<random>`, removed when the block ends.

    Large temporary files (the metric's spill files: ~60 bytes a labeled point) go beside the
    outputs rather than into the system's temp folder, which is often a small RAM disk. A run
    killed outright (SIGKILL, out of memory) cannot clean up after itself, so on entry the
    folders of processes that no longer exist are removed: the next run into the same output
    folder takes the litter away. Folders of live processes (a concurrent run) are left alone.
    """
    root = Path(out) / SCRATCH
    root.mkdir(parents=True, exist_ok=True)
    for d in root.iterdir():
        pid = d.name.split("-", 1)[0]
        if d.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            root.rmdir()  # only when empty: another run's folder stays
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


# ------------------------------------------------------------------------------------- PLY


def read_ply(path: str | Path):
    """A PLY file as a `plyfile.PlyData`, with errors that name the file.

    Raises:
        InputError: the file is missing, is not a PLY, or is truncated.
    """
    from plyfile import PlyData, PlyParseError

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "PLY file not found")
    try:
        with open(path, "rb") as f:
            return PlyData.read(f)
    except PlyParseError as e:
        raise InputError(path, f"not a readable PLY file ({e})") from None
    except (ValueError, UnicodeDecodeError, EOFError) as e:
        raise InputError(path, f"not a readable PLY file ({e.__class__.__name__}: {e})") from None


def ply_vertex_fields(ply, path: Path, required: tuple[str, ...], what: str) -> np.ndarray:
    """The `vertex` element's structured array, after checking it holds `required` properties."""
    names = [e.name for e in ply.elements]
    if "vertex" not in names:
        raise InputError(
            path,
            f"PLY has no 'vertex' element (elements: {', '.join(names) or 'none'}); expected {what}",
        )
    data = ply["vertex"].data
    missing = [name for name in required if name not in (data.dtype.names or ())]
    if missing:
        raise InputError(path, f"{what}: vertex properties missing: {', '.join(missing)}")
    return data


def write_ply(
    path: str | Path,
    vertex: np.ndarray,
    *,
    comments: list[str] | None = None,
    faces: np.ndarray | None = None,
) -> None:
    """Write a structured array as the `vertex` element of a binary little-endian PLY, atomically.

    Args:
        faces: [F, 3] vertex indices of triangles, written as the `face` element (uchar count,
            int32 `vertex_indices`, as ScanNet's meshes and open3d's reader have them).
    """
    from plyfile import PlyData, PlyElement

    elements = [PlyElement.describe(vertex, "vertex")]
    if faces is not None:
        face = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
        face["vertex_indices"] = np.asarray(faces, np.int32)
        elements.append(PlyElement.describe(face, "face", len_types={"vertex_indices": "u1"}))
    ply = PlyData(elements, text=False, byte_order="<", comments=list(comments or []))
    with atomic_path(path) as tmp:
        ply.write(str(tmp))


# ------------------------------------------------------------------------------ label maps


def write_label_map(path: str | Path, labels: np.ndarray) -> None:
    """Write a [H, W] integer label map as a 16-bit PNG, atomically."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"label map must be [H, W], got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise ValueError(f"label IDs must lie in 0..65535, got {labels.min()}..{labels.max()}")
    with atomic_path(path) as tmp:
        Image.fromarray(labels.astype(np.uint16)).save(tmp, format="PNG")


def read_label_map(path: str | Path) -> np.ndarray:
    """[H, W] int32 label map from a PNG written by `write_label_map` (or any 8/16-bit PNG)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except FileNotFoundError:
        raise InputError(path, "label map not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(path, f"cannot decode label map ({e})") from None
    if arr.ndim != 2:
        raise InputError(path, f"label map must have one channel, found shape {arr.shape}")
    return arr.astype(np.int32)


def read_label_maps(
    folder: str | Path,
    frame_names: list[str],
    *,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """[N, H, W] int32 label maps of the named frames from `folder/<name>.png`.

    Args:
        folder: the masks folder.
        frame_names: the frames wanted, in order (the scene's).
        size: expected (W, H); every map must have it (default: the first map's size).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "masks folder not found")
    missing = [n for n in frame_names if not (folder / f"{n}.png").is_file()]
    if missing:
        raise InputError(
            folder,
            f"{len(missing)} of {len(frame_names)} frames have no label map, e.g. "
            + ", ".join(f"{n}.png" for n in missing[:5]),
        )
    maps = []
    for n in frame_names:
        m = read_label_map(folder / f"{n}.png")
        if size is None:
            size = (m.shape[1], m.shape[0])
        if (m.shape[1], m.shape[0]) != tuple(size):
            raise InputError(
                folder / f"{n}.png",
                f"label map is {m.shape[1]}x{m.shape[0]}, expected {size[0]}x{size[1]}",
            )
        maps.append(m)
    return np.stack(maps) if maps else np.zeros((0, 0, 0), np.int32)


# ------------------------------------------------------------------------------------ JSON


def read_json(path: str | Path, what: str) -> dict:
    """A JSON object from `path`, with errors that name the file and say what it should be.

    Raises:
        InputError: `{what} not found`, not valid JSON, or JSON that is not an object.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(path, f"{what} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise InputError(path, f"{what} must hold a JSON object, found {type(data).__name__}")
    return data


def write_json(path: str | Path, obj) -> None:
    """Write JSON atomically (numpy scalars and arrays, and paths, converted)."""

    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, default=default))


# ---------------------------------------------------------------------------------- images


def write_image(path: str | Path, image: np.ndarray) -> Path:  # image: [H, W, 3] uint8 RGB
    """Write an image atomically: JPEG (quality 90) for `.jpg`/`.jpeg`, optimised PNG otherwise."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() in (".jpg", ".jpeg"):
            Image.fromarray(image).save(tmp, format="JPEG", quality=90)
        else:
            Image.fromarray(image).save(tmp, format="PNG", optimize=True)
    return path
