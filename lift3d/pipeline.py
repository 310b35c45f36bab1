"""`run_segment`: the whole flow of `lift3d segment` on one scene.

read scene -> geometry -> consistent masks (MastSAM) -> lifting (points, splats) -> export
-> metrics.json (H) -> previews + report. Each stage streams frames from disk; each output file is
written to a temporary name and renamed, so an interrupted run leaves only whole files, and
`--resume` picks up at the first frame without a label map.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lift3d.config import SegmentConfig, config_to_json
from lift3d.devices import resolve_device
from lift3d.errors import InputError
from lift3d.geometry_source import check_splats_fit, choose_geometry, splat_depth_scene
from lift3d.io import read_label_map, scratch_dir, write_json, write_label_map
from lift3d.recon.scene import Scene, select_frames
from lift3d.recon.scene_points import ScenePoints, scene_points

if TYPE_CHECKING:
    from lift3d.consistency.segmenter import Segmenter

logger = logging.getLogger(__name__)


def _progress(iterable, *, total: int, desc: str):
    from lift3d.console import progress

    return progress(iterable, total=total, desc=desc)


def prepare_scene(cfg: SegmentConfig) -> tuple[Scene, dict]:
    """Load the scene, select frames, attach geometry and correspondences; say which backends."""
    from lift3d.recon import load_scene

    inp = cfg.input
    if inp.recon == "mast3r" or inp.matches == "mast3r":
        from lift3d.recon.mast3r import require_mast3r

        require_mast3r()  # fail at once, before reading anything
    scene = load_scene(inp.scene, format=inp.format, size=inp.size)
    scene = select_frames(scene, frames=inp.frames, max_frames=inp.max_frames)
    backends: dict = {}
    recon = choose_geometry(
        scene,
        recon=inp.recon,
        matches=inp.matches,
        splats=inp.splats,
        mast3r_checkpoint=inp.mast3r_checkpoint,
    )
    if inp.splats is not None:
        # before anything is tracked: splats from another scene would label almost nothing
        check_splats_fit(scene, inp.splats, min_fit=inp.splat_min_fit)
    if recon == "depth":
        backends["geometry"] = "depth+poses"
    elif recon == "splats":
        scene, backends["geometry"] = splat_depth_scene(
            scene, inp.splats, min_alpha=inp.splat_min_alpha, device=cfg.device
        )
    elif recon == "none":
        backends["geometry"] = "none (no depth, poses + splats or MASt3R): 2D label maps only"
    else:
        from lift3d.recon.mast3r import mast3r_scene, require_mast3r

        require_mast3r()
        if inp.mast3r_checkpoint is None:
            raise InputError(None, "--recon mast3r needs --mast3r-checkpoint PATH")
        scene = mast3r_scene(
            scene,
            checkpoint=inp.mast3r_checkpoint,
            cache_dir=_out_dir(cfg, scene) / "mast3r_cache",
            device=resolve_device(cfg.device),
            options=cfg.mast3r,
        )
        backends["geometry"] = "mast3r"
    matches = inp.matches
    if matches == "auto":
        matches = {"mast3r": "mast3r", "none": "flow"}.get(recon, "reprojection")
    if matches == "mast3r" and recon != "mast3r":
        from lift3d.recon.mast3r import attach_mast3r_matches

        if inp.mast3r_checkpoint is None:
            raise InputError(None, "--matches mast3r needs --mast3r-checkpoint PATH")
        scene = attach_mast3r_matches(
            scene,
            checkpoint=inp.mast3r_checkpoint,
            device=resolve_device(cfg.device),
            size=cfg.mast3r.size,
        )
    if matches == "reprojection" and recon not in ("depth", "splats"):
        raise InputError(
            None,
            "--matches reprojection needs depth + poses (sensor depth, or --splats on a posed scene)",
        )
    if matches == "flow":
        import dataclasses

        from lift3d.recon.flow import CachedFlowMatches

        scene = dataclasses.replace(scene, match_fn=CachedFlowMatches())
        matches = "flow (OpenCV DIS, forward-backward checked < 1 px, every 4th pixel)"
    backends["matches"] = matches
    return scene, backends


def _out_dir(cfg: SegmentConfig, scene: Scene) -> Path:
    return Path(cfg.output.out) if cfg.output.out is not None else Path("outputs") / scene.name


def run_tracking(scene: Scene, segmenter: Segmenter, cfg: SegmentConfig, masks_dir: Path) -> dict:
    """MastSAM over all frames, label maps written as they come; resumable."""
    from lift3d.consistency.tracker import MastSAM

    tracker = MastSAM(segmenter, cfg.tracker, seed=cfg.seed)
    resumed = 0
    counts = []
    for i in _progress(range(len(scene)), total=len(scene), desc="tracking"):
        frame = scene[i]
        path = masks_dir / f"{frame.name}.png"
        if cfg.output.resume and path.is_file():
            labels = read_label_map(path)
            if labels.shape != frame.image.shape[:2]:
                raise InputError(
                    path,
                    f"existing label map is {labels.shape[::-1]}, the scene's frames are {frame.size}: rerun without --resume",
                )
            tracker.warm_start(frame, labels)
            resumed += 1
        else:
            labels = tracker.step(frame, scene=scene)
            write_label_map(path, labels)
        counts.append(int(len(np.unique(labels[labels > 0]))))
    return {"resumed_frames": resumed, "masks_per_frame": counts, "ids": int(tracker.num_ids)}


def run_baseline(scene: Scene, segmenter: Segmenter, cfg: SegmentConfig, masks_dir: Path) -> None:
    """The segmenter frame by frame with independent IDs (for the side-by-side preview)."""
    from lift3d.consistency.tracker import segment_framewise

    for i, labels in _progress(
        segment_framewise(scene, segmenter, seed=cfg.seed), total=len(scene), desc="frame-by-frame"
    ):
        write_label_map(masks_dir / f"{scene.frame_names[i]}.png", labels)


def _lift(
    scene: Scene,
    masks_dir: Path,
    cfg: SegmentConfig,
    out: Path,
    points: ScenePoints,
    segmenter: Segmenter | None = None,
) -> dict:
    """Merge the IDs into 3D instances, vote them onto the scene's points (via superpoints, or
    point by point) and optional splats, export."""
    from lift3d.export import write_instance_points_ply, write_mesh_outputs, write_points_ply
    from lift3d.points import (
        complete_labels,
        lift_to_points,
        lift_to_superpoints,
        superpoint_view_table,
        vote_superpoints,
    )

    if points is None:
        from lift3d.video import NO_3D_NOTE

        logger.info("%s: %s", scene.name, NO_3D_NOTE)
        return {
            "outputs_3d": False,
            "note": NO_3D_NOTE,
            "_labels": np.zeros(0, np.int32),
            "_confidence": np.zeros(0, np.float32),
            "_merged": {},
        }

    xyz, rgb = points.xyz, points.rgb
    info: dict = {"points": points.source, "vote": cfg.lifting.vote}
    merged: dict[int, list[int]] = {}
    sources = None  # cluster ID -> tracked IDs, when the view clustering ran
    if cfg.merge.enabled and cfg.merge.view_clustering and len(scene) >= 2:
        sources = _cluster_views(scene, masks_dir, cfg)
        info["view_clusters"] = len(sources)
    if cfg.lifting.vote == "superpoints" or cfg.merge.enabled:
        sp = points.superpoints
        frames = (scene[i] for i in range(len(scene)))
        label_maps = (read_label_map(masks_dir / f"{n}.png") for n in scene.frame_names)
        table = superpoint_view_table(
            xyz, sp.index, _progress(frames, total=len(scene), desc="superpoint votes"), label_maps
        )
        mapping = None
        info["superpoints"] = {"count": sp.count, "source": sp.source}
        if cfg.merge.enabled and len(scene) < 2:
            logger.warning(
                "%s: a single view: multi-view merging has nothing to compare, IDs are kept as tracked",
                scene.root,
            )
        elif cfg.merge.enabled:
            from lift3d.consistency.merging import merge_instances

            result = merge_instances(table, sp.sizes(), points.adjacency, config=cfg.merge)
            merged = result.groups
            if merged:
                mapping = result.mapping
                _rewrite_label_maps(scene, masks_dir, lambda i, lab: result.apply(lab))
            info["merged_ids"] = int(sum(len(v) - 1 for v in merged.values()))
            if sources is not None:  # say which tracked IDs each final ID holds
                final: dict[int, set[int]] = {}
                finals = result.apply(np.fromiter(sources, np.int64)).tolist()
                for k, tracked in zip(finals, sources.values()):
                    final.setdefault(k, set()).update(tracked)
                merged = {k: sorted(v) for k, v in sorted(final.items())}
        if cfg.lifting.vote == "superpoints":
            votes = vote_superpoints(
                table,
                sp.count,
                mapping=mapping,
                max_unlabeled_share=cfg.lifting.unlabeled_share,
                mask_size_weight=cfg.lifting.mask_size_weight,
            )
            lifted = lift_to_superpoints(
                sp.index, votes, min_instance_points=cfg.lifting.min_instance_points
            )
            info["seen_superpoints"] = int((votes.views > 0).sum())
    if cfg.lifting.vote == "points":
        frames = (scene[i] for i in range(len(scene)))
        label_maps = (read_label_map(masks_dir / f"{n}.png") for n in scene.frame_names)
        lifted = lift_to_points(
            xyz,
            _progress(frames, total=len(scene), desc="lift to points"),
            label_maps,
            min_instance_points=cfg.lifting.min_instance_points,
        )
    candidates = first_id = None
    if cfg.lifting.unseen_objects:
        candidates = lambda: cfg.segmenter.object_candidates(scene, points, segmenter)  # noqa: E731
        # above every ID of the label maps, also those the vote left without points
        first_id = 1 + max(
            (int(read_label_map(masks_dir / f"{n}.png").max()) for n in scene.frame_names),
            default=0,
        )
    lifted, done = complete_labels(
        lifted,
        xyz,
        points.faces,
        fill_radius=cfg.lifting.fill_radius,
        candidates=candidates,
        first_id=first_id,
    )
    info.update(done)
    write_points_ply(
        out / "points.ply",
        xyz,
        rgb,
        lifted.label,
        lifted.confidence,
        superpoint=points.superpoints.index,
    )
    write_instance_points_ply(out / "points_by_instance.ply", xyz, lifted.label, lifted.confidence)
    info["exports"] = write_mesh_outputs(
        out, scene, points.mesh_path, xyz, points.faces, lifted.label, lifted.confidence
    )
    info["num_points"] = int(len(xyz))
    info["labeled_points"] = int((lifted.label > 0).sum())
    info["instances"] = int(len(np.unique(lifted.label[lifted.label > 0])))
    if cfg.input.splats is not None:
        from lift3d.recon.splats import read_splats
        from lift3d.splats import lift_to_splats, write_splats

        splats = read_splats(cfg.input.splats)
        frames = (scene[i] for i in range(len(scene)))
        label_maps = (read_label_map(masks_dir / f"{n}.png") for n in scene.frame_names)
        sl = lift_to_splats(
            splats,
            _progress(frames, total=len(scene), desc="lift to splats"),
            label_maps,
            device=resolve_device(cfg.device),
        )
        write_splats(out / "splats.ply", splats, sl.label, sl.confidence)
        info["splats"] = {
            "file": str(cfg.input.splats),
            "count": int(len(sl.label)),
            "labeled": int((sl.label > 0).sum()),
        }
    info["_labels"] = lifted.label
    info["_confidence"] = lifted.confidence
    info["_merged"] = merged
    return info


def _cluster_views(scene: Scene, masks_dir: Path, cfg: SegmentConfig) -> dict[int, list[int]]:
    """MaskClustering's view consensus over the tracked masks (`MergeConfig.view_clustering`):
    rewrites every label map with cluster IDs; returns cluster ID -> the tracked IDs it holds."""
    from lift3d.consistency.merging import cluster_views

    def views():
        for i in range(len(scene)):
            f = scene[i]
            yield f.pointmap, f.valid, read_label_map(masks_dir / f"{f.name}.png")

    clusters = cluster_views(
        _progress(views(), total=len(scene), desc="view clustering"), config=cfg.merge
    )
    _rewrite_label_maps(scene, masks_dir, clusters.apply)
    return clusters.sources


def _rewrite_label_maps(scene: Scene, masks_dir: Path, relabel) -> None:
    """`relabel(view index, labels) -> labels` applied to every label map, rewriting only those
    that change."""
    for i, n in enumerate(scene.frame_names):
        path = masks_dir / f"{n}.png"
        lab = read_label_map(path)
        new = relabel(i, lab)
        if not np.array_equal(new, lab):
            write_label_map(path, new)


def write_cameras_and_instances(
    scene: Scene,
    masks_dir: Path,
    out: Path,
    point_labels: np.ndarray,
    point_conf: np.ndarray,
    merged: dict[int, list[int]] | None = None,
) -> None:
    """cameras.json (what the viewer draws) and instances.json (which views saw each ID)."""
    cams = []
    seen: dict[int, list[str]] = {}
    for i in range(len(scene)):
        f = scene[i]
        entry = {
            "name": f.name,
            "K": f.K.tolist(),
            "image": str(_frame_image_path(scene, f.name) or ""),
        }
        entry["T_world_camera"] = None if f.T_world_camera is None else f.T_world_camera.tolist()
        cams.append(entry)
        lab = read_label_map(masks_dir / f"{f.name}.png")
        for k in np.unique(lab[lab > 0]).tolist():
            seen.setdefault(int(k), []).append(f.name)
    write_json(out / "cameras.json", {"size": list(scene.size), "frames": cams})
    instances = []
    for k in sorted(set(seen) | set(np.unique(point_labels[point_labels > 0]).tolist())):
        sel = point_labels == k
        instances.append(
            {
                "id": int(k),
                "points": int(sel.sum()),
                "confidence": float(point_conf[sel].mean()) if sel.any() else 0.0,
                "frames": seen.get(int(k), []),
                "merged_from": (merged or {}).get(int(k), [int(k)]),
            }
        )
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
    for pkg in (
        "lift3d",
        "numpy",
        "scipy",
        "torch",
        "open3d",
        "segment-anything",
        "gsplat",
        "plyfile",
        "scikit-learn",
        "scikit-image",
    ):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _checkpoint_record(path: Path | None) -> dict | None:
    """A checkpoint's path, size and SHA-256 of its first 16 MiB (`run_folder.checkpoint_id`)."""
    from lift3d.run_folder import checkpoint_id

    if path is None:
        return None
    return {"path": str(Path(path).resolve()), **checkpoint_id(path)}


def run_segment(
    cfg: SegmentConfig, *, segmenter: Segmenter | None = None, segmenter_from_config: bool = True
) -> Path:
    """Run the whole flow; returns the output folder.

    The run holds its output folder from before the first frame to the end (`lift3d.run_folder`:
    lock, fingerprint, the old seal removed first); `run.json` is written last but the report.

    Args:
        cfg: the run's configuration.
        segmenter: a segmenter already built from `cfg.segmenter` (batch workers keep one loaded
            across scenes); default: built here (`SegmenterConfig.setup`).
        segmenter_from_config: False when `segmenter` is the caller's own object
            (`lift3d.segment(segmenter=...)`): run.json then records its type, not `cfg.segmenter`.
    """
    with ExitStack() as hold:
        return _run_segment(cfg, segmenter, segmenter_from_config, hold)


def _run_segment(cfg: SegmentConfig, segmenter, from_config: bool, hold: ExitStack) -> Path:
    from lift3d.run_folder import check_options, check_scene_name, claim, fingerprint

    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        t = time.perf_counter()
        timings[name] = round(t - t0, 3)
        return t

    check_options(cfg)  # every option and input file, before the scene is read
    t = time.perf_counter()
    scene, backends = prepare_scene(cfg)
    check_scene_name(scene)
    out = _out_dir(cfg, scene)
    run_folder = hold.enter_context(
        claim(out, fingerprint(cfg, scene.frame_names), resume=cfg.output.resume)
    )
    masks_dir = run_folder.masks
    t = lap("scene", t)
    points = (
        scene_points(
            scene,
            mesh=cfg.input.mesh,
            splats=cfg.input.splats,
            voxel_size=cfg.lifting.voxel_size,
            superpoints=cfg.superpoints,
            progress=lambda it: _progress(it, total=len(scene), desc="fuse points"),
        )
        if scene.has_geometry
        else None
    )
    t = lap("points", t)
    if from_config or segmenter is None:
        seg_cfg = cfg.segmenter.resolve(
            scene
        )  # what `auto` picks here, with the settings it runs with
        if segmenter is None:
            segmenter = seg_cfg.setup(scene=scene, points=points, device=cfg.device)
        seg_record, sam_checkpoint = seg_cfg.settings(), seg_cfg.checkpoint
    else:
        seg_record, sam_checkpoint = {"name": "given", "type": type(segmenter).__name__}, None
    # which masks the view clustering may unlabel, and whether re-prompted masks snap to the
    # automatic ones, depend on what kind of masks they are
    name = getattr(segmenter, "name", None)
    cfg = replace(cfg, merge=cfg.merge.resolve(name), tracker=cfg.tracker.resolve(name))
    describe = getattr(segmenter, "describe", None)
    backends.update(
        describe()
        if callable(describe)
        else {"segmenter": getattr(segmenter, "name", type(segmenter).__name__)}
    )
    # a backend's own settings (the classical segmenter has 16) belong in run.json, not the log
    logger.info(
        "%s: %d frames at %dx%d, %s",
        scene.name,
        len(scene),
        *scene.size,
        ", ".join(f"{k}={v}" for k, v in backends.items() if not isinstance(v, dict | list)),
    )
    logger.debug("backends: %s", backends)
    track = run_tracking(scene, segmenter, cfg, masks_dir)
    t = lap("tracking", t)
    if cfg.output.baseline:
        run_baseline(scene, segmenter, cfg, out / "baseline" / "masks")
        t = lap("baseline", t)
    lifted = _lift(scene, masks_dir, cfg, out, points, segmenter)
    point_labels, point_conf, merged = (
        lifted.pop("_labels"),
        lifted.pop("_confidence"),
        lifted.pop("_merged"),
    )
    write_cameras_and_instances(scene, masks_dir, out, point_labels, point_conf, merged)
    t = lap("lifting", t)

    if not scene.has_geometry:
        from lift3d.video import metrics_without_geometry

        metrics = metrics_without_geometry(
            scene, masks_dir, out, cfg.output, track=track, lifting=lifted, backends=backends
        )
        t = lap("metric", t)
    else:
        # streamed: one frame and one tile of space in memory at a time, whatever the frame count;
        # its spill files and h.npy live in a private scratch folder, removed on exit (and by the
        # next run if this one is killed outright)
        from lift3d.console import PhasedProgress
        from lift3d.metric_run import score_scene

        with scratch_dir(out) as scratch:
            h_dir = scratch / "h"
            with PhasedProgress("metric") as bar:
                metric, _ = score_scene(
                    scene,
                    masks_dir,
                    config=cfg.metric,
                    scratch=scratch,
                    per_pixel=h_dir if cfg.output.preview else False,
                    progress=bar,
                )
            t = lap("metric", t)
            metrics = metric.to_json()
            metrics.update(
                {
                    "masks_per_frame": track["masks_per_frame"],
                    "mean_masks_per_frame": float(np.mean(track["masks_per_frame"]))
                    if track["masks_per_frame"]
                    else 0.0,
                    "ids": track["ids"],
                    "frames": len(scene),
                    "size": list(scene.size),
                    "lifting": lifted,
                    "backends": backends,
                }
            )
            if cfg.output.preview:
                from lift3d.consistency.metric import read_h_frame
                from lift3d.viewers.heatmap import write_heatmap_frames, write_heatmap_sheet
                from lift3d.viewers.overlay import write_previews

                h_frames = (read_h_frame(h_dir, i) for i in range(len(scene)))
                h_frames = _progress(h_frames, total=len(scene), desc="heat-maps")
                write_heatmap_frames(out / "preview" / "heatmaps", h_frames, scene.frame_names)
                write_heatmap_sheet(
                    out / "preview" / "heatmap_sheet.png", metric.per_pixel, scene.frame_names
                )
                write_previews(
                    out,
                    scene,
                    masks_dir,
                    baseline_dir=out / "baseline" / "masks" if cfg.output.baseline else None,
                    progress=lambda it: _progress(it, total=len(scene), desc="overlays"),
                )
                from lift3d.viewers.render import write_point_renders

                write_point_renders(
                    out / "preview" / "renders", out / "points.ply", out / "cameras.json"
                )
                t = lap("previews", t)
            metric.per_pixel = None  # unmap h.npy before its folder is removed
    timings["total"] = round(time.perf_counter() - t_start, 3)
    metrics["timings"] = timings
    write_json(out / "metrics.json", metrics)
    write_json(
        out / "run.json",
        {
            "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": config_to_json(cfg),
            "segmenter": seg_record,
            "scene": {
                "name": scene.name,
                "root": str(scene.root.resolve()),
                "kind": scene.kind,
                "frames": scene.frame_names,
                "meta": scene.meta,
            },
            "backends": backends,
            **({} if scene.has_geometry else {"outputs_3d": False, "note": lifted["note"]}),
            "checkpoints": {
                "sam": _checkpoint_record(sam_checkpoint),
                "mast3r": _checkpoint_record(cfg.input.mast3r_checkpoint),
            },
            "versions": _versions(),
            "seed": cfg.seed,
            "host": {"cpus": os.cpu_count()},
            "fingerprint": run_folder.fingerprint,
        },
    )
    if cfg.output.preview:
        from lift3d.viewers.report import write_report

        write_report(out)
    over = (
        f"{metrics['pixels']} pixels"
        if "pixels" in metrics
        else f"{metrics['matches']} consecutive-frame flow matches"
    )
    h = "n/a" if metrics["H"] is None else f"{metrics['H']:.4f}"
    logger.info("%s: H = %s over %s, %d IDs -> %s", scene.name, h, over, track["ids"], out)
    return out
