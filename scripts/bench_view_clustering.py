"""Benchmark the view clustering of tracked masks (`lift3d.consistency.merging.cluster_views`).

Times `cluster_views` over every view of a scan with the label maps of a finished run (its
`masks/`), twice in the same process: with the packed int64 (voxel, ID) keys (the code's path)
and with the plain row-wise `np.unique(axis=0)` it replaced (the reference), and checks that
both give the same clusters; and a third time without the bridging test of under-segmentation
(`_bridged_frames`, a mask containing two masks of another view), to give that rule's cost.

    .venv/bin/python scripts/bench_view_clustering.py --masks OUT/masks \
        [--scene ../shared/data/scannet/scene0000_00]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    from lift3d.consistency import maskclustering as mc
    from lift3d.consistency.merging import cluster_views
    from lift3d.io import read_label_map
    from lift3d.recon import load_scene

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--scene", type=Path, default=REPO / ".." / "shared" / "data" / "scannet" / "scene0000_00"
    )
    ap.add_argument("--masks", type=Path, required=True, help="a run's masks/ folder")
    args = ap.parse_args()
    sc = load_scene(args.scene)
    masks = [read_label_map(args.masks / f"{n}.png") for n in sc.frame_names]

    def views():
        for i in range(len(sc)):
            f = sc[i]
            yield f.pointmap, f.valid, masks[i]

    t = time.perf_counter()
    fast = cluster_views(views())
    t_fast = time.perf_counter() - t
    packed = mc._pack
    mc._pack = lambda keys: None  # the plain row-wise unique
    try:
        t = time.perf_counter()
        plain = cluster_views(views())
        t_plain = time.perf_counter() - t
    finally:
        mc._pack = packed
    bridged = mc._bridged_frames
    mc._bridged_frames = lambda container, *_: np.zeros(0, np.int64)  # the rule off
    try:
        t = time.perf_counter()
        unbridged = cluster_views(views())
        t_unbridged = time.perf_counter() - t
    finally:
        mc._bridged_frames = bridged
    same = fast.sources == plain.sources and all(
        np.array_equal(a, b) for a, b in zip(fast.luts, plain.luts)
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"{len(sc)} frames: packed keys {t_fast:.1f} s, row-wise unique {t_plain:.1f} s "
        f"({t_plain / t_fast:.2f}x), identical {same}, {len(fast.sources)} clusters, "
        f"peak RSS {peak:.2f} GiB"
    )
    print(
        f"without the bridging rule {t_unbridged:.1f} s (with it {t_fast / t_unbridged:.2f}x the "
        f"time), {len(unbridged.sources)} clusters"
    )


if __name__ == "__main__":
    main()
