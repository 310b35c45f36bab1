"""A run owns its output folder: options checked up front, a lock, a fingerprint and a seal.

`lift3d segment --out O` must never leave a stale or mixed result that looks complete:

- `check_options(cfg)`: every input file and option is checked before the first frame (a bad
  `--splats` or `--eps` found after the whole tracking leaves a folder that looks like a result).
- `claim(out, ...)`: the run's hold on `O`, for its whole length. It takes an exclusive lock
  (`O/.lift3d.lock`, `fcntl.flock`: a second run into `O` fails at once; the kernel drops the
  lock when a process dies, however it dies), removes the hidden temporary files of a killed
  run, removes the seal (`run.json`, `metrics.json`) of the previous run first, removes every
  label map that is not part of this run, and records the run's fingerprint
  (`O/.lift3d-fingerprint.json`) before the first label map is written.
- The fingerprint holds what determines the label maps (scene, frames, size, segmenter and
  checkpoint, geometry and matches, tracker settings, seed): `--resume` is refused when it
  differs (the message says what differs), and `lift3d batch` skips a scene only when its sealed
  fingerprint is the one it would make.
- The pipeline writes `metrics.json` then `run.json` last: a folder holding `run.json` holds a
  complete run, and the `run.json` it holds says which.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lift3d.checks import check_positive_finite
from lift3d.errors import InputError

if TYPE_CHECKING:
    from lift3d.recon.scene import Scene

LOCK = ".lift3d.lock"
FINGERPRINT = ".lift3d-fingerprint.json"
#: the seal of a complete run, removed first by a new run and written last (run.json last of all)
SEAL = ("run.json", "metrics.json")
#: what a previous run may have left that this run would not overwrite (removed on a fresh run)
OUTPUTS = (
    "points.ply",
    "splats.ply",
    "scannet",
    "cameras.json",
    "instances.json",
    "preview",
    "report.html",
    "baseline",
    "metric.json",
)
#: the temporary names of `lift3d.io.atomic_path`: `.<name>.<random>.tmp<suffix>`
TMP_NAME = re.compile(r"\..+\.tmp(\.[A-Za-z0-9]+)?")
#: what the ScanNet benchmark format accepts as a scene name (it names `<scene>.txt`)
SCENE_NAME = re.compile(r"[A-Za-z0-9_.-]+")

#: SegmentConfig options (`to_options()` names) that do not change the label maps (everything
#: else is fingerprinted, so an option added later counts until it is listed here).
#: `frames`/`max_frames`/`format` are replaced by the frame names they select; `segmenter` by the
#: settings of the segmenter it names, `mast3r_checkpoint` by the checkpoint's identity.
_NOT_FINGERPRINTED = {
    "out",
    "resume",
    "preview",
    "baseline",
    "metric",
    "voxel_size",
    "fill_radius",
    "unlabeled_share",
    "mask_size_weight",
    "unseen_objects",
    "min_instance_points",
    "splats",
    "device",
    "frames",
    "max_frames",
    "format",
    "mast3r_checkpoint",
    "vote",
}


# ---------------------------------------------------------------------------------- options


def check_options(cfg) -> None:
    """Check every option and input file of a `SegmentConfig` that can be checked without the scene.

    Raises:
        InputError: naming the CLI flag (and the file) and what is wrong.
    """
    inp, lifting = cfg.input, cfg.lifting
    cfg.metric.check(prefix="--metric.")
    check_positive_finite(lifting.voxel_size, "--voxel-size", unit="metres")
    check_positive_finite(lifting.fill_radius, "--fill-radius", unit="metres", allow_zero=True)
    if not 0.0 < lifting.unlabeled_share <= 1.0:
        raise InputError(
            None, f"--unlabeled-share must be in (0, 1], got {lifting.unlabeled_share}"
        )
    check_positive_finite(lifting.mask_size_weight, "--mask-size-weight", allow_zero=True)
    if lifting.min_instance_points < 0:
        raise InputError(
            None, f"--min-instance-points must be >= 0, got {lifting.min_instance_points}"
        )
    if inp.max_frames is not None and inp.max_frames <= 0:
        raise InputError(None, f"--max-frames must be positive, got {inp.max_frames}")
    if inp.size is not None and (len(inp.size) != 2 or min(inp.size) <= 0):
        raise InputError(None, f"--size must be two positive numbers W H, got {inp.size}")
    for flag, path in (
        ("--segmenter.sam.checkpoint", cfg.segmenter.sam.checkpoint),
        ("--segmenter.sam2.checkpoint", cfg.segmenter.sam2.checkpoint),
        ("--mast3r-checkpoint", inp.mast3r_checkpoint),
    ):
        if path is not None and not Path(path).is_file():
            raise InputError(path, f"{flag}: checkpoint file not found")
    if inp.mesh is not None and not Path(inp.mesh).is_file():
        raise InputError(inp.mesh, "--mesh: mesh PLY not found")
    if inp.splats is not None:
        check_splats_header(Path(inp.splats))
    check_device(cfg.device)


def check_splats_header(path: Path) -> None:
    """`--splats`: a PLY whose header declares the 3DGS vertex properties (the body is read later)."""
    from lift3d.recon.splats import REQUIRED_FIELDS

    if not path.is_file():
        raise InputError(
            path, "--splats: file not found" if not path.exists() else "--splats: not a file"
        )
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError as e:
        raise InputError(path, f"--splats: cannot read ({e.strerror})") from None
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise InputError(path, "--splats: not a PLY file (no 'ply' ... 'end_header' header)")
    props = [
        line.split()[-1]
        for line in head[:end].decode("ascii", "replace").splitlines()
        if line.startswith("property")
    ]
    missing = [p for p in REQUIRED_FIELDS if p not in props]
    if missing:
        raise InputError(
            path,
            f"--splats: not a 3D Gaussian Splatting PLY, vertex properties missing: {', '.join(missing)}",
        )


def check_device(device: str) -> None:
    """`--device`: auto, cpu, or cuda[:N] with CUDA present and N in range."""
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if device in ("auto", "cpu"):
        return
    if m is None:
        raise InputError(None, f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    import torch

    if not torch.cuda.is_available():
        raise InputError(
            None,
            f"--device {device}: CUDA is not available here (torch {torch.__version__}); use --device cpu or auto",
        )
    if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        raise InputError(
            None, f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )


def check_scene_name(scene: Scene) -> None:
    """The scene's name names the ScanNet export's `<scene>.txt`: it must be a plain file name."""
    if not SCENE_NAME.fullmatch(scene.name):
        raise InputError(
            scene.root,
            f"--scene: the name {scene.name!r} cannot name a ScanNet export file "
            "(letters, digits, _ . - only); rename the scene folder",
        )


# ------------------------------------------------------------------------------ fingerprint


def checkpoint_id(path) -> dict | None:
    """A checkpoint by size and the SHA-256 of its first 16 MiB (hashing GBs is slow)."""
    import hashlib

    if path is None:
        return None
    p = Path(path)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        h.update(f.read(16 << 20))
    return {"bytes": p.stat().st_size, "sha256_first_16MiB": h.hexdigest()}


def fingerprint(cfg, frame_names: list[str]) -> dict:
    """What determines a run's label maps, as plain JSON values (compared key by key)."""
    from lift3d.config import config_to_json

    fp = {k: v for k, v in config_to_json(cfg).items() if k not in _NOT_FINGERPRINTED}
    fp["scene"] = str(Path(cfg.input.scene).resolve())
    fp["frames"] = list(frame_names)
    # the settings of the segmenter it names, not those of every backend (unresolved: `auto`
    # is the same choice wherever the scene is read)
    fp["segmenter"] = cfg.segmenter.settings()
    for name in ("sam", "sam2"):
        if name in fp["segmenter"]:
            fp["segmenter"][name]["checkpoint"] = checkpoint_id(
                getattr(cfg.segmenter, name).checkpoint
            )
    uses_mast3r = cfg.input.recon == "mast3r" or cfg.input.matches == "mast3r"
    fp["mast3r_checkpoint"] = checkpoint_id(cfg.input.mast3r_checkpoint) if uses_mast3r else None
    if not uses_mast3r:
        fp.pop("mast3r", None)
    return fp


def fingerprint_diff(old: dict, new: dict) -> list[str]:
    """`key: old -> new` for every differing entry (nested dicts flattened with dots)."""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict) and not k.endswith("checkpoint"):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    a, b = flat(old), flat(new)
    diffs = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            if k == "frames" and isinstance(a.get(k), list) and isinstance(b.get(k), list):
                diffs.append(
                    f"frames: {len(a[k])} frames -> {len(b[k])} frames"
                    if len(a[k]) != len(b[k])
                    else "frames: other frames"
                )
            elif k.endswith("checkpoint"):
                diffs.append(f"{k}: another checkpoint")
            else:
                diffs.append(f"{k}: {_short(a.get(k))} -> {_short(b.get(k))}")
    return diffs


def _short(v) -> str:
    s = json.dumps(v)
    return s if len(s) <= 40 else s[:37] + "..."


def read_json_or_none(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def sealed_fingerprint(out: Path) -> dict | None:
    """The fingerprint of the complete run sealed in `out` (None: no complete run there)."""
    out = Path(out)
    if not all((out / s).is_file() for s in SEAL):
        return None
    run = read_json_or_none(out / "run.json")
    return None if run is None else run.get("fingerprint")


# ----------------------------------------------------------------------------------- claim


@dataclass
class RunFolder:
    """The output folder a run holds (see `claim`)."""

    out: Path
    masks: Path
    fingerprint: dict


@contextmanager
def claim(out: Path, fp: dict, *, resume: bool) -> Iterator[RunFolder]:
    """Hold `out` for one run: lock, clean, check `--resume`, invalidate the old seal, record `fp`.

    Raises:
        InputError: `out` cannot be a folder or cannot be written, another run holds it, or
            `--resume` finds label maps made with other settings.
    """
    out = Path(out)
    _make_folder(out)
    with _lock(out):
        recorded = read_json_or_none(out / FINGERPRINT)
        masks = out / "masks"
        existing = _label_maps(masks)
        if resume and existing:
            if recorded is None:
                raise InputError(
                    out,
                    "--resume: the label maps here have no record of the run that made them; "
                    "rerun without --resume",
                )
            diffs = fingerprint_diff(recorded, fp)
            if diffs:
                raise InputError(
                    out,
                    "--resume: the label maps here were made with other settings ("
                    + "; ".join(diffs[:6])
                    + "); rerun without --resume or use another --out",
                )
        # only what a lift3d run left is removed: --out may name a folder of the user's own
        ours = recorded is not None or any((out / name).is_file() for name in SEAL)
        if existing and not ours:
            raise InputError(
                masks,
                f"holds {len(existing)} PNG file(s) that no recorded lift3d run made; "
                "remove them or give another --out",
            )
        # from here on the folder holds no complete result until this run seals it
        for name in SEAL:
            _remove(out / name)
        _remove(out / FINGERPRINT)
        remove_tmp_leftovers(out)
        keep = set(fp["frames"]) if resume and existing else set()
        for p in existing:
            if p.stem not in keep:
                p.unlink()
        if ours:
            for (
                name
            ) in OUTPUTS:  # only label maps resume; a stale splats.ply must not outlive its run
                _remove(out / name)
        _write_fingerprint(out / FINGERPRINT, fp)
        try:
            masks.mkdir(exist_ok=True)
        except OSError as e:
            raise InputError(masks, f"cannot create the masks folder ({e.strerror})") from None
        yield RunFolder(out=out, masks=masks, fingerprint=fp)


def _make_folder(out: Path) -> None:
    for p in (out, *out.parents):
        if p.exists() and not p.is_dir():
            raise InputError(
                out,
                "--out: cannot be a folder, " + ("it is a file" if p == out else f"{p} is a file"),
            )
        if p.is_dir():
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(out, f"--out: cannot create the folder ({e.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InputError(out, "--out: the folder is not writable")


@contextmanager
def _lock(out: Path) -> Iterator[None]:
    """An exclusive `flock` on `out/.lift3d.lock` for the block; another holder fails at once."""
    import fcntl

    path = out / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise InputError(out, f"--out: cannot write here ({e.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise InputError(
                out,
                f"another lift3d run{who} is writing to this folder; wait for it to end "
                "or give another --out",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the lock (the file stays: removing it would race a waiter)


def remove_tmp_leftovers(out: Path) -> list[Path]:
    """Remove the hidden temporary files of writes a hard kill cut short (the lock is held)."""
    from lift3d.io import SCRATCH

    removed = []
    for root, dirs, files in os.walk(out):
        dirs[:] = [d for d in dirs if d != SCRATCH]  # scratch_dir cleans its own, by pid
        for f in files:
            if TMP_NAME.fullmatch(f):
                p = Path(root) / f
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def _label_maps(masks: Path) -> list[Path]:
    if not masks.is_dir():
        return []
    return sorted(
        p
        for p in masks.iterdir()
        if p.suffix == ".png" and not p.name.startswith(".") and p.is_file()
    )


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _write_fingerprint(path: Path, fp: dict) -> None:
    from lift3d.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(fp, indent=1))


# ------------------------------------------------------------------------------ metric frames


def metric_frame_names(
    scene_path: Path, masks: Path, *, frames: str | None, max_frames: int | None
) -> list[str] | None:
    """The frames `lift3d metric` scores: `--frames`/`--max-frames` as `segment` selects them,
    else those of the run whose `masks/` folder `masks` is (its run.json); None: all frames."""
    from lift3d.recon import load_scene

    if frames is not None or max_frames is not None:
        from lift3d.recon.scene import select_frames

        return list(
            select_frames(load_scene(scene_path), frames=frames, max_frames=max_frames).frame_names
        )
    run = read_json_or_none(Path(masks).parent / "run.json")
    if run is not None and Path(masks).name == "masks":
        names = (run.get("scene") or {}).get("frames")
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return names
    return None
