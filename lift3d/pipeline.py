"""`run_segment`: the whole flow of `lift3d segment` on one scene.

read scene -> geometry -> consistent masks (MastSAM) -> lifting (points, splats) -> export
-> metrics.json (H) -> previews + report. Each stage streams frames from disk; each output file is
written to a temporary name and renamed, so an interrupted run leaves only whole files, and
`--resume` picks up at the first frame without a label map.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from lift3d.config import SegmentConfig
from lift3d.consistency.labelmaps import read_label_map, write_label_map
from lift3d.errors import InputError
from lift3d.recon.files import atomic_path, scratch_dir
from lift3d.recon.scene import Scene, parse_frame_range

logger = logging.getLogger(__name__)


def _progress(iterable, *, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="frame", leave=False, disable=None)


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (numpy scalars and paths converted)."""

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


def select_frames(scene: Scene, *, frames: str | None, max_frames: int | None) -> Scene:
    """The frame subset of `--frames START:STOP:STEP` then `--max-frames` (evenly spaced)."""
    idx = list(range(len(scene)))
    if frames:
        idx = parse_frame_range(frames, len(scene))
    if max_frames is not None:
        if max_frames <= 0:
            raise InputError(None, f"--max-frames must be positive, got {max_frames}")
        if len(idx) > max_frames:
            # first and last kept; halves round up (not numpy's round-half-to-even)
            pick = np.floor(np.linspace(0, len(idx) - 1, max_frames) + 0.5).astype(int)
            idx = [idx[k] for k in pick]
    if not idx:
        raise InputError(scene.root, "the frame selection is empty")
    return scene if idx == list(range(len(scene))) else scene.subset(idx)


def prepare_scene(cfg: SegmentConfig) -> tuple[Scene, dict]:
    """Load the scene, select frames, attach geometry and correspondences; say which backends."""
    from lift3d.recon import load_scene

    if cfg.recon == "mast3r" or cfg.matches == "mast3r":
        from lift3d.recon.mast3r import require_mast3r

        require_mast3r()  # fail at once, before reading anything
    scene = load_scene(cfg.scene, format=cfg.format, size=cfg.size)
    scene = select_frames(scene, frames=cfg.frames, max_frames=cfg.max_frames)
    backends: dict = {}
    recon = cfg.recon
    if recon == "auto":
        recon = "depth" if scene.has_geometry else "mast3r"
    if recon == "depth":
        if not scene.has_geometry:
            raise InputError(
                scene.root,
                f"this {scene.kind} scene has no depth + poses; use --recon mast3r "
                "(needs MASt3R and --mast3r-checkpoint)",
            )
        backends["geometry"] = "depth+poses"
    else:
        from lift3d.recon.mast3r import mast3r_scene, require_mast3r

        require_mast3r()
        if cfg.mast3r_checkpoint is None:
            raise InputError(None, "--recon mast3r needs --mast3r-checkpoint PATH")
        scene = mast3r_scene(
            scene, checkpoint=cfg.mast3r_checkpoint, cache_dir=_out_dir(cfg, scene) / "mast3r_cache",
            device=resolve_device(cfg.device), options=cfg.mast3r,
        )
        backends["geometry"] = "mast3r"
    matches = cfg.matches
    if matches == "auto":
        matches = "mast3r" if recon == "mast3r" else "reprojection"
    if matches == "mast3r" and recon != "mast3r":
        from lift3d.recon.mast3r import attach_mast3r_matches

        if cfg.mast3r_checkpoint is None:
            raise InputError(None, "--matches mast3r needs --mast3r-checkpoint PATH")
        scene = attach_mast3r_matches(scene, checkpoint=cfg.mast3r_checkpoint, device=resolve_device(cfg.device), size=cfg.mast3r.size)
    if matches == "reprojection" and recon != "depth":
        raise InputError(None, "--matches reprojection needs sensor depth + poses (--recon depth)")
    backends["matches"] = matches
    return scene, backends


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_segmenter(cfg: SegmentConfig):
    """The 2D segmenter of the run, and its description for run.json."""
    if cfg.segmenter == "classical":
        from lift3d.consistency.classical import ClassicalSegmenter

        seg = ClassicalSegmenter()
        return seg, seg.describe()
    if cfg.segmenter == "simulated":
        from lift3d.consistency.simulated import SimulatedSegmenter
        from lift3d.recon.detect import resolve_scene_path

        seg = SimulatedSegmenter.from_scan(resolve_scene_path(cfg.scene), config=cfg.simulated)
        return seg, seg.describe()
    if cfg.sam_checkpoint is None:
        raise InputError(None, f"--segmenter {cfg.segmenter} needs --sam-checkpoint PATH (weights cannot be downloaded by lift3d)")
    if cfg.segmenter == "sam2":
        from lift3d.consistency.sam2 import Sam2Segmenter

        seg = Sam2Segmenter(cfg.sam_checkpoint, model=cfg.sam2_model, device=resolve_device(cfg.device))
        return seg, seg.describe()
    from lift3d.consistency.sam import SamSegmenter

    seg = SamSegmenter(cfg.sam_checkpoint, model=cfg.sam_model, device=resolve_device(cfg.device))
    return seg, seg.describe()


def _out_dir(cfg: SegmentConfig, scene: Scene) -> Path:
    return Path(cfg.out) if cfg.out is not None else Path("outputs") / scene.name


def run_tracking(scene: Scene, segmenter, cfg: SegmentConfig, masks_dir: Path) -> dict:
    """MastSAM over all frames, label maps written as they come; resumable."""
    from lift3d.consistency.tracker import MastSAM

    tracker = MastSAM(segmenter, cfg.tracker, seed=cfg.seed)
    resumed = 0
    counts = []
    for i in _progress(range(len(scene)), total=len(scene), desc="MastSAM"):
        frame = scene[i]
        path = masks_dir / f"{frame.name}.png"
        if cfg.resume and path.is_file():
            labels = read_label_map(path)
            if labels.shape != frame.image.shape[:2]:
                raise InputError(path, f"existing label map is {labels.shape[::-1]}, the scene's frames are {frame.size}: rerun without --resume")
            tracker.warm_start(frame, labels)
            resumed += 1
        else:
            labels = tracker.step(frame, scene=scene)
            write_label_map(path, labels)
        counts.append(int(len(np.unique(labels[labels > 0]))))
    return {"resumed_frames": resumed, "masks_per_frame": counts, "ids": int(tracker.num_ids)}


def run_baseline(scene: Scene, segmenter, cfg: SegmentConfig, masks_dir: Path) -> None:
    """The segmenter frame by frame with independent IDs (for the side-by-side preview)."""
    from lift3d.consistency.tracker import segment_framewise

    for i, labels in _progress(segment_framewise(scene, segmenter, seed=cfg.seed), total=len(scene), desc="frame-by-frame"):
        write_label_map(masks_dir / f"{scene.frame_names[i]}.png", labels)


def _lift(scene: Scene, masks_dir: Path, cfg: SegmentConfig, out: Path) -> dict:
    """Vote the label maps onto the scene's points (mesh or fused) and optional splats."""
    from lift3d.export import write_points_ply, write_scannet_instances
    from lift3d.points import fuse_pointmaps, lift_to_points, read_mesh_vertices

    info: dict = {}
    if scene.mesh_path is not None:
        xyz, rgb = read_mesh_vertices(scene.mesh_path)
        info["points"] = f"mesh vertices of {scene.mesh_path.name}"
    else:
        xyz, rgb = fuse_pointmaps(_progress(iter(scene), total=len(scene), desc="fuse points"), voxel_size=cfg.voxel_size)
        info["points"] = f"fused pointmaps, voxel {cfg.voxel_size} m"
    frames = (scene[i] for i in range(len(scene)))
    label_maps = (read_label_map(masks_dir / f"{n}.png") for n in scene.frame_names)
    lifted = lift_to_points(
        xyz, _progress(frames, total=len(scene), desc="lift to points"), label_maps,
        min_instance_points=cfg.min_instance_points,
    )
    if scene.mesh_path is not None and cfg.fill_radius > 0:
        from lift3d.points import fill_unseen, read_mesh_faces

        lifted, info["filled_unseen_points"] = fill_unseen(lifted, xyz, read_mesh_faces(scene.mesh_path), radius=cfg.fill_radius)
    write_points_ply(out / "points.ply", xyz, rgb, lifted.label, lifted.confidence)
    write_scannet_instances(out / "scannet", scene.name, lifted.label, lifted.confidence)
    info["num_points"] = int(len(xyz))
    info["labeled_points"] = int((lifted.label > 0).sum())
    info["instances"] = int(len(np.unique(lifted.label[lifted.label > 0])))
    if cfg.splats is not None:
        from lift3d.splats import lift_to_splats, read_splats, write_splats

        splats = read_splats(cfg.splats)
        frames = (scene[i] for i in range(len(scene)))
        label_maps = (read_label_map(masks_dir / f"{n}.png") for n in scene.frame_names)
        sl = lift_to_splats(splats, _progress(frames, total=len(scene), desc="lift to splats"), label_maps, device=resolve_device(cfg.device))
        write_splats(out / "splats.ply", splats, sl.label, sl.confidence)
        info["splats"] = {"file": str(cfg.splats), "count": int(len(sl.label)), "labeled": int((sl.label > 0).sum())}
    info["_labels"] = lifted.label
    info["_confidence"] = lifted.confidence
    return info


def write_cameras_and_instances(scene: Scene, masks_dir: Path, out: Path, point_labels: np.ndarray, point_conf: np.ndarray) -> None:
    """cameras.json (what the viewer draws) and instances.json (which views saw each ID)."""
    cams = []
    seen: dict[int, list[str]] = {}
    for i in range(len(scene)):
        f = scene[i]
        entry = {"name": f.name, "K": f.K.tolist(), "image": str(_frame_image_path(scene, f.name) or "")}
        entry["T_world_camera"] = None if f.T_world_camera is None else f.T_world_camera.tolist()
        cams.append(entry)
        lab = read_label_map(masks_dir / f"{f.name}.png")
        for k in np.unique(lab[lab > 0]).tolist():
            seen.setdefault(int(k), []).append(f.name)
    write_json(out / "cameras.json", {"size": list(scene.size), "frames": cams})
    instances = []
    for k in sorted(set(seen) | set(np.unique(point_labels[point_labels > 0]).tolist())):
        sel = point_labels == k
        instances.append({
            "id": int(k),
            "points": int(sel.sum()),
            "confidence": float(point_conf[sel].mean()) if sel.any() else 0.0,
            "frames": seen.get(int(k), []),
        })
    write_json(out / "instances.json", {"instances": instances})


def _frame_image_path(scene: Scene, name: str) -> Path | None:
    for sub in ("color", "image", "images", ""):
        for suffix in (".jpg", ".png", ".jpeg"):
            p = scene.root / sub / f"{name}{suffix}" if sub else scene.root / f"{name}{suffix}"
            if p.is_file():
                return p.resolve()
    return None


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("lift3d", "numpy", "scipy", "torch", "open3d", "segment-anything", "gsplat", "plyfile", "scikit-learn", "scikit-image"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _checkpoint_record(path: Path | None) -> dict | None:
    """Identify a checkpoint by size and the SHA-256 of its first 16 MiB (hashing GBs is slow)."""
    if path is None:
        return None
    p = Path(path)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        h.update(f.read(16 << 20))
    return {"path": str(p.resolve()), "bytes": p.stat().st_size, "sha256_first_16MiB": h.hexdigest()}


def config_to_json(cfg: SegmentConfig) -> dict:
    """The config as plain values (never pickled classes: renaming a class must not break runs)."""
    return json.loads(json.dumps(asdict(cfg), default=str))


def run_segment(cfg: SegmentConfig, *, segmenter=None) -> Path:
    """Run the whole flow; returns the output folder.

    Args:
        cfg: the run's configuration.
        segmenter: a segmenter already built from `cfg` (batch workers keep one loaded across
            scenes); default: built here.
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        t = time.perf_counter()
        timings[name] = round(t - t0, 3)
        return t

    if cfg.eps <= 0:
        raise InputError(None, f"--eps must be positive (metres), got {cfg.eps}")
    t = time.perf_counter()
    scene, backends = prepare_scene(cfg)
    out = _out_dir(cfg, scene)
    out.mkdir(parents=True, exist_ok=True)
    masks_dir = out / "masks"
    masks_dir.mkdir(exist_ok=True)
    t = lap("scene", t)
    if segmenter is None:
        segmenter, seg_info = build_segmenter(cfg)
    else:
        describe = getattr(segmenter, "describe", None)
        seg_info = describe() if callable(describe) else {"segmenter": getattr(segmenter, "name", type(segmenter).__name__)}
    backends.update(seg_info)
    logger.info("%s: %d frames at %dx%d, %s", scene.name, len(scene), *scene.size, ", ".join(f"{k}={v}" for k, v in backends.items()))
    track = run_tracking(scene, segmenter, cfg, masks_dir)
    t = lap("tracking", t)
    if cfg.baseline:
        run_baseline(scene, segmenter, cfg, out / "baseline" / "masks")
        t = lap("baseline", t)
    lifted = _lift(scene, masks_dir, cfg, out)
    point_labels, point_conf = lifted.pop("_labels"), lifted.pop("_confidence")
    write_cameras_and_instances(scene, masks_dir, out, point_labels, point_conf)
    t = lap("lifting", t)

    # streamed: one frame and one tile of space in memory at a time, whatever the frame count;
    # its spill files and h.npy live in a private scratch folder, removed on exit (and by the
    # next run if this one is killed outright)
    from lift3d.consistency.metric_stream import consistency_score_stream, label_frame_loader

    with scratch_dir(out) as scratch:
        h_dir = scratch / "h"
        load, _ = label_frame_loader(scene, masks_dir, scene.size)
        metric = consistency_score_stream(load, len(scene), eps=cfg.eps, per_pixel_dir=h_dir if cfg.preview else None,
                                          work_dir=scratch, max_points=cfg.metric_max_points,
                                          pairwise=cfg.metric_pairwise)
        t = lap("metric", t)
        metrics = metric.to_json()
        metrics.update({
            "masks_per_frame": track["masks_per_frame"],
            "mean_masks_per_frame": float(np.mean(track["masks_per_frame"])) if track["masks_per_frame"] else 0.0,
            "ids": track["ids"],
            "frames": len(scene),
            "size": list(scene.size),
            "lifting": lifted,
            "backends": backends,
        })
        if cfg.preview:
            from lift3d.consistency.metric_stream import read_h_frame
            from lift3d.viewers.heatmap import write_heatmap_frames, write_heatmap_sheet
            from lift3d.viewers.overlay import write_previews

            h_frames = (read_h_frame(h_dir, i) for i in range(len(scene)))
            write_heatmap_frames(out / "preview" / "heatmaps", h_frames, scene.frame_names)
            write_heatmap_sheet(out / "preview" / "heatmap_sheet.png", metric.per_pixel, scene.frame_names)
            write_previews(out, scene, masks_dir, baseline_dir=out / "baseline" / "masks" if cfg.baseline else None)
            from lift3d.viewers.render import write_point_renders

            write_point_renders(out / "preview" / "renders", out / "points.ply", out / "cameras.json")
            t = lap("previews", t)
        metric.per_pixel = None  # unmap h.npy before its folder is removed
    timings["total"] = round(time.perf_counter() - t_start, 3)
    metrics["timings"] = timings
    write_json(out / "metrics.json", metrics)
    write_json(out / "run.json", {
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config_to_json(cfg),
        "scene": {"name": scene.name, "root": str(scene.root.resolve()), "kind": scene.kind, "frames": scene.frame_names, "meta": scene.meta},
        "backends": backends,
        "checkpoints": {"sam": _checkpoint_record(cfg.sam_checkpoint), "mast3r": _checkpoint_record(cfg.mast3r_checkpoint)},
        "versions": _versions(),
        "seed": cfg.seed,
        "host": {"cpus": os.cpu_count()},
    })
    if cfg.preview:
        from lift3d.viewers.report import write_report

        write_report(out)
    logger.info("%s: H = %.4f over %d pixels, %d IDs -> %s", scene.name, metrics["H"], metrics["pixels"], track["ids"], out)
    return out
