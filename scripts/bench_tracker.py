"""Benchmark the MastSAM tracker: frames/s against the same segmenter run frame by frame.

For each input, the frames are loaded once into memory first (loading is reported apart), then
timed in the same run: `track_scene` (MastSAM) and `segment_framewise` (the baseline: automatic
masks per view, independent IDs), on the same frames with the same segmenter. The tracker's
time is split into its parts by timing wrappers around the segmenter and the correspondence
provider: `generate` (automatic masks), `predict` (re-prompts), `match` (correspondences) and
the rest (K-Means, point tracking, overlap filtering, re-identification).

Inputs:
- the synthetic scene (`make_synthetic_scene`, written to a temporary folder) at `--synthetic-size`,
  with the cross-view ARI of both runs against its exact GT;
- ScanNet scene0000_00's first `--frames` frames at `--scannet-size`, with the cross-view ARI
  against GT instance maps projected from the scan's annotated mesh (`scannet_gt_maps`);
- with CUDA: a random-weight SAM ViT-H (speed only, masks are meaningless; the automatic mask
  generator's score thresholds are set to 0 so that random weights still give masks) on the
  ScanNet frames. Skipped without CUDA or without `segment_anything`.

    .venv/bin/python scripts/bench_tracker.py [--frames 30] [--synthetic-size 320x240] \
        [--scannet ../shared/data/scannet/scene0000_00] [--scannet-size 640x480] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

DEFAULT_SCANNET = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "scannet" / "scene0000_00"
)


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


class Timed:
    """A segmenter wrapped so that the time spent in `generate` and `predict` is summed."""

    def __init__(self, inner, sync=None):
        self.inner, self.name, self.sync = inner, inner.name, sync or (lambda: None)
        self.seconds = {"generate": 0.0, "predict": 0.0}
        self.calls = {"generate": 0, "predict": 0}

    def _timed(self, what, fn, *args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        self.sync()
        self.seconds[what] += time.perf_counter() - t
        self.calls[what] += 1
        return out

    def generate(self, image, *, geometry=None):
        return self._timed("generate", self.inner.generate, image, geometry=geometry)

    def predict(self, image, points, point_labels, *, geometry=None):
        return self._timed(
            "predict", self.inner.predict, image, points, point_labels, geometry=geometry
        )


def in_memory(scene, n: int):
    """The scene's first n frames, loaded once (load time returned); matches timed."""
    t = time.perf_counter()
    frames = [scene[i] for i in range(min(n, len(scene)))]
    t_load = time.perf_counter() - t
    match_s = [0.0]
    inner = scene.match_fn

    def match(fi, fj):
        t0 = time.perf_counter()
        out = inner(fi, fj)
        match_s[0] += time.perf_counter() - t0
        return out

    sub = replace(
        scene,
        frame_names=scene.frame_names[: len(frames)],
        load_frame=lambda i: frames[i],
        match_fn=match,
    )
    return sub, t_load, match_s


def run_pair(scene, segmenter, n: int, *, sync=None, gt: np.ndarray | None = None) -> dict:
    from lift3d.consistency.rand_index import cross_view_ari
    from lift3d.consistency.tracker import segment_framewise, track_scene

    sub, t_load, match_s = in_memory(scene, n)
    N = len(sub)
    seg = Timed(segmenter, sync)
    t = time.perf_counter()
    tracked = [lab for _, lab in track_scene(sub, seg)]
    t_track = time.perf_counter() - t
    parts = {
        "generate_s": seg.seconds["generate"],
        "predict_s": seg.seconds["predict"],
        "match_s": match_s[0],
    }
    parts["tracker_own_s"] = t_track - sum(parts.values())
    base = Timed(segmenter, sync)
    t = time.perf_counter()
    framewise = [lab for _, lab in segment_framewise(sub, base)]
    t_base = time.perf_counter() - t
    out = {
        "frames": N,
        "size": list(sub.size),
        "load_s": round(t_load, 3),
        "tracker_s": round(t_track, 3),
        "tracker_fps": round(N / t_track, 3),
        "tracker_parts_s": {k: round(v, 3) for k, v in parts.items()},
        "predict_calls": seg.calls["predict"],
        "framewise_s": round(t_base, 3),
        "framewise_fps": round(N / t_base, 3),
        "tracker_over_framewise_time": round(t_track / t_base, 3),
        "masks_per_frame_tracker": round(
            float(np.mean([len(np.unique(x[x > 0])) for x in tracked])), 2
        ),
        "masks_per_frame_framewise": round(
            float(np.mean([len(np.unique(x[x > 0])) for x in framewise])), 2
        ),
        "ids_total": int(max(int(x.max()) for x in tracked)),
    }
    if gt is not None:
        out["ari_tracker"] = round(cross_view_ari(gt[:N], np.stack(tracked)), 4)
        out["ari_framewise"] = round(cross_view_ari(gt[:N], np.stack(framewise)), 4)
        # each view alone: what the segmenter reaches before any cross-view association
        per_view = [cross_view_ari(g, p) for g, p in zip(gt[:N], framewise) if (g > 0).any()]
        out["ari_framewise_per_view_mean"] = round(float(np.mean(per_view)), 4)
    return out


def bench_synthetic(n: int, size: tuple[int, int]) -> dict:
    from PIL import Image

    from lift3d.consistency.classical import ClassicalSegmenter
    from lift3d.recon import load_scene
    from lift3d.recon.synthetic import make_synthetic_scene

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        d = make_synthetic_scene(Path(tmp) / "scene0999_00", n_frames=n, size=size)
        t_make = time.perf_counter() - t
        scene = load_scene(d)
        gt = np.stack(
            [
                np.asarray(Image.open(d / "instance" / f"{k}.png")).astype(np.int32)
                for k in scene.frame_names
            ]
        )
        out = run_pair(scene, ClassicalSegmenter(), n, gt=gt)
    out["render_s"] = round(t_make, 2)
    return out


def scannet_gt_maps(scene, n: int) -> np.ndarray:
    """[n, H, W] GT instance maps of a ScanNet scan from its mesh annotation: each valid pixel
    takes the instance (objectId + 1) of the nearest annotated-or-not mesh vertex within 5 cm,
    0 where that vertex is unannotated or none is that close (as `bench_lift.py` does)."""
    from scipy.spatial import cKDTree

    from lift3d.recon.scannet.gt import read_vertex_objects
    from lift3d.recon.scene_points import read_mesh_vertices

    xyz, _ = read_mesh_vertices(scene.mesh_path)
    inst = read_vertex_objects(scene.root).astype(np.int32)
    tree = cKDTree(xyz)
    maps = []
    for i in range(n):
        f = scene[i]
        lab = np.zeros(f.valid.shape, np.int32)
        dist, nearest = tree.query(f.pointmap[f.valid], distance_upper_bound=0.05, workers=-1)
        hit = np.isfinite(dist)
        vals = np.zeros(len(dist), np.int32)
        vals[hit] = inst[nearest[hit]]
        lab[f.valid] = vals
        maps.append(lab)
    return np.stack(maps)


def bench_scannet(path: Path, n: int, size: tuple[int, int]) -> dict:
    from lift3d.consistency.classical import ClassicalSegmenter
    from lift3d.recon import load_scene

    scene = load_scene(path, size=size)
    gt = scannet_gt_maps(scene, min(n, len(scene))) if scene.mesh_path is not None else None
    return run_pair(scene, ClassicalSegmenter(), n, gt=gt)


def bench_sam_cuda(path: Path, n: int, size: tuple[int, int]) -> dict | str:
    try:
        import segment_anything  # noqa: F401
        import torch
    except ImportError as e:
        return f"skipped: {e}"
    if not torch.cuda.is_available():
        return "skipped: no CUDA device"
    from lift3d.consistency.sam import SamAutoConfig, SamSegmenter, build_sam
    from lift3d.recon import load_scene

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "vit_h_random.pth"
        torch.manual_seed(0)
        torch.save(build_sam("vit_h").state_dict(), ckpt)
        amg = SamAutoConfig(pred_iou_thresh=0.0, stability_score_thresh=0.0)
        seg = SamSegmenter(ckpt, model="vit_h", device="cuda", amg=amg)
        out = run_pair(load_scene(path, size=size), seg, n, sync=torch.cuda.synchronize)
    out["device"] = torch.cuda.get_device_name(0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--synthetic-size", type=parse_size, default=(320, 240))
    ap.add_argument("--scannet", type=Path, default=DEFAULT_SCANNET)
    ap.add_argument("--scannet-size", type=parse_size, default=(640, 480))
    ap.add_argument("--skip", nargs="*", default=[], choices=["synthetic", "scannet", "sam"])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    result: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible",
        "load_average_at_start": list(os.getloadavg()),
    }
    if "synthetic" not in args.skip:
        result["synthetic_classical"] = bench_synthetic(args.frames, args.synthetic_size)
        print("synthetic:", json.dumps(result["synthetic_classical"]), flush=True)
    if "scannet" not in args.skip:
        if args.scannet.is_dir():
            result["scannet_classical"] = bench_scannet(
                args.scannet, args.frames, args.scannet_size
            )
        else:
            result["scannet_classical"] = f"skipped: {args.scannet} not found"
        print("scannet:", json.dumps(result["scannet_classical"]), flush=True)
    if "sam" not in args.skip and args.scannet.is_dir():
        result["scannet_sam_vit_h_cuda"] = bench_sam_cuda(
            args.scannet, args.frames, args.scannet_size
        )
        print("sam:", json.dumps(result["scannet_sam_vit_h_cuda"]), flush=True)
    result["load_average_at_end"] = list(os.getloadavg())
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
