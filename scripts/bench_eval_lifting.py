"""The evaluation's lifting of many methods on one scan: every method reading the frames again
(`superpoint_view_table(frames, ...)`) against one `view_visibility` pass shared by all.

    python scripts/bench_eval_lifting.py --scene ../shared/data/scannet/scene0000_00 --size 320x240 --methods 7

Both paths build the same tables (checked here, and in tests/lift3d/test_points.py); the label
maps are the scan's GT objects with a per-method ID shift, so every "method" has real masks.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", type=Path, required=True)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--methods", type=int, default=7)
    args = ap.parse_args()
    from lift3d.consistency.simulated import SimulatedConfig, SimulatedSegmenter
    from lift3d.points import superpoint_view_table, view_visibility
    from lift3d.recon import load_scene
    from lift3d.recon.scene_points import scene_points

    w, h = (int(v) for v in args.size.split("x"))
    sc = load_scene(args.scene, size=(w, h))
    points = scene_points(sc)
    sim = SimulatedSegmenter.from_scan(args.scene, sc.name, SimulatedConfig(noise=0.0))
    gt = np.stack([sim.view_objects(f.image, geometry=f.pointmap) for f in sc]).astype(np.int32)
    sp = points.superpoints.index
    t = time.perf_counter()
    ref = [
        superpoint_view_table(points.xyz, sp, (sc[i] for i in range(len(sc))), iter(gt + m))
        for m in range(args.methods)
    ]
    t_frames = time.perf_counter() - t
    t = time.perf_counter()
    vis = view_visibility(points.xyz, (sc[i] for i in range(len(sc))))
    got = [
        superpoint_view_table(points.xyz, sp, None, iter(gt + m), visibility=vis)
        for m in range(args.methods)
    ]
    t_vis = time.perf_counter() - t
    same = all(np.array_equal(a[k], b[k]) for a, b in zip(ref, got) for k in a)
    print(
        f"{sc.name}, {len(sc)} frames at {w}x{h}, {args.methods} methods: reading the frames per "
        f"method {t_frames:.1f} s, one visibility pass {t_vis:.1f} s ({t_frames / t_vis:.1f}x), "
        f"tables identical: {same}"
    )


if __name__ == "__main__":
    main()
