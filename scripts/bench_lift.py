"""Benchmark the lifting: label maps voted onto ScanNet mesh vertices (CPU) and onto splats (CUDA).

Points: every frame of scene0000_00 (300) onto its 81,369 mesh vertices, with label maps made
from the ScanNet instance ground truth (each valid depth pixel takes the instance of the nearest
GT vertex within 5 cm), so the result can also be checked against the GT. Reported separately:
loading the frames (JPEG/PNG decoding, depth alignment), preparing the label maps (not part of
lifting), the voting itself, and the pure-Python reference on a few frames, extrapolated to all
frames, for the speed-up.

Splats (CUDA only): one view's splat-label weights (gradient trick: one gsplat forward and
backward pass) for 1M random splats at 640x480 with 32 labels present.

    .venv/bin/python scripts/bench_lift.py [--scene ../shared/data/scannet/scene0000_00] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

DEFAULT_SCENE = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "scannet" / "scene0000_00"
)


def gt_vertex_instances(scene_dir: Path, n_vertices: int) -> np.ndarray:
    """[P] int32 ScanNet GT object per mesh vertex (objectId + 1, 0 = unannotated)."""
    from lift3d.recon.scannet.gt import read_vertex_objects

    out = read_vertex_objects(scene_dir).astype(np.int32)
    if len(out) != n_vertices:
        raise SystemExit(
            f"{scene_dir.name}: segs.json has {len(out)} vertices, the mesh {n_vertices}"
        )
    return out


def slim(frame):
    """The frame with only what voting reads (K, pose, depth): 300 full frames would not fit."""
    from lift3d.recon.scene import Frame

    H, W = frame.depth.shape
    return Frame(
        name=frame.name,
        index=frame.index,
        image=np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (H, W, 3)),
        K=frame.K,
        T_world_camera=frame.T_world_camera,
        depth=frame.depth,
    )


def bench_points(scene_dir: Path, n_frames: int | None, ref_frames: int) -> dict:
    from scipy.spatial import cKDTree

    from lift3d.points import _lift_to_points_reference, lift_to_points
    from lift3d.recon import load_scene
    from lift3d.recon.scene_points import read_mesh_vertices

    t = time.perf_counter()
    scene = load_scene(scene_dir)
    xyz, _ = read_mesh_vertices(scene.mesh_path)
    t_mesh = time.perf_counter() - t
    n = len(scene) if n_frames is None else min(n_frames, len(scene))
    gt = gt_vertex_instances(scene_dir, len(xyz))

    t = time.perf_counter()
    frames, valids = [], []
    for i in range(n):
        frame = scene[i]
        frames.append(slim(frame))
        valids.append((frame.pointmap, frame.valid))
        del frame
    t_load = time.perf_counter() - t

    t = time.perf_counter()
    tree = cKDTree(xyz)
    maps = []
    for pointmap, valid in valids:
        dist, nearest = tree.query(pointmap[valid], distance_upper_bound=0.05, workers=-1)
        lab = np.zeros(valid.shape, np.uint16)
        hit = np.isfinite(dist)
        vals = np.zeros(len(hit), np.uint16)
        vals[hit] = gt[nearest[hit]]
        lab[valid] = vals
        maps.append(lab)
    del valids
    t_maps = time.perf_counter() - t

    t = time.perf_counter()
    out = lift_to_points(xyz, frames, maps)
    t_vote = time.perf_counter() - t

    pick = np.linspace(0, n - 1, ref_frames).round().astype(int)
    t = time.perf_counter()
    ref = _lift_to_points_reference(xyz, [frames[i] for i in pick], [maps[i] for i in pick])
    t_ref = time.perf_counter() - t
    same = lift_to_points(xyz, [frames[i] for i in pick], [maps[i] for i in pick])
    agree = bool((same.label == ref.label).all() and (same.votes == ref.votes).all())

    seen = (out.votes > 0) & (gt > 0)
    return {
        "scene": scene.name,
        "frames": n,
        "size": list(scene.size),
        "vertices": len(xyz),
        "read_mesh_s": round(t_mesh, 3),
        "load_frames_s": round(t_load, 2),
        "label_maps_s (GT nearest vertex, not lifting)": round(t_maps, 2),
        "vote_s": round(t_vote, 3),
        "vote_ms_per_frame": round(1000 * t_vote / n, 2),
        "reference_frames": len(pick),
        "reference_s": round(t_ref, 2),
        "reference_extrapolated_s": round(t_ref * n / len(pick), 1),
        "speedup_vs_reference": round(t_ref * n / len(pick) / t_vote, 1),
        "fast_equals_reference_on_those_frames": agree,
        "labeled_vertices": int((out.label > 0).sum()),
        "gt_object_vertices_seen": int(seen.sum()),
        "gt_object_vertices": int((gt > 0).sum()),
        "accuracy_on_seen_gt_vertices": round(float((out.label[seen] == gt[seen]).mean()), 4),
    }


def bench_splats(n_splats: int, size: tuple[int, int], n_labels: int, repeats: int) -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device: gsplat voting not measured"}
    from lift3d.splats import splat_label_weights

    rng = np.random.default_rng(0)
    W, H = size
    means = np.c_[rng.uniform(-2, 2, (n_splats, 2)), rng.uniform(2, 6, n_splats)].astype(np.float32)
    quats = rng.normal(size=(n_splats, 4)).astype(np.float32)
    scales = np.exp(rng.normal(np.log(0.01), 0.5, (n_splats, 3))).astype(np.float32)
    opac = rng.uniform(0.05, 1.0, n_splats).astype(np.float32)
    K = np.array([[525.0, 0, (W - 1) / 2], [0, 525.0, (H - 1) / 2], [0, 0, 1]], np.float32)
    # blocky label map: n_labels rectangles, as segments look
    labels = (
        (np.arange(H)[:, None] * 4 // H) * (n_labels // 4)
        + np.arange(W)[None, :] * (n_labels // 4) // W
        + 1
    )
    dev = "cuda"
    tensors = [torch.as_tensor(a, device=dev) for a in (means, quats, scales, opac)]
    args = (*tensors, K, np.eye(4, dtype=np.float32), size, labels, int(labels.max()) + 1)
    t = time.perf_counter()
    splat_label_weights(*args, backend="gsplat")  # first call may JIT-compile gsplat's kernels
    torch.cuda.synchronize()
    t_first = time.perf_counter() - t
    for _ in range(3):
        splat_label_weights(*args, backend="gsplat")
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        w = splat_label_weights(*args, backend="gsplat")
    torch.cuda.synchronize()
    per_view = (time.perf_counter() - t) / repeats
    return {
        "device": torch.cuda.get_device_name(),
        "splats": n_splats,
        "size": list(size),
        "labels": int(labels.max()),
        "first_call_s": round(t_first, 2),
        "ms_per_view": round(1000 * per_view, 2),
        "splats_with_weight": int((w.sum(1) > 0).sum()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scene", type=Path, default=DEFAULT_SCENE)
    p.add_argument("--frames", type=int, default=None, help="first N frames (default: all)")
    p.add_argument(
        "--ref-frames", type=int, default=3, help="frames the reference votes (extrapolated)"
    )
    p.add_argument("--splats", type=int, default=1_000_000)
    p.add_argument("--labels", type=int, default=32)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    if not args.scene.is_dir():
        raise SystemExit(f"{args.scene}: scene not found")
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        },
        "points": bench_points(args.scene, args.frames, args.ref_frames),
        "splats": bench_splats(args.splats, (640, 480), args.labels, args.repeats),
    }
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
