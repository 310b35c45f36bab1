"""Benchmark computing a scan's superpoints against reading the ones it ships (`segs.json`).

On a ScanNet scan the default reads `*_vh_clean_2.0.010000.segs.json`; without one (or with
`--superpoints.source compute`) `lift3d.recon.superpoints.compute_superpoints` segments the mesh
graph as ScanNet's segmentator does. Times both in the same process (best of `--repeat`, the
numba kernel compiled before the first timing) and says how close the computed pieces are to
the shipped ones (adjusted Rand index, piece counts).

    .venv/bin/python scripts/bench_superpoints.py [--scene ../shared/data/scannet/scene0000_00]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    from sklearn.metrics import adjusted_rand_score

    from lift3d.recon.scene_points import read_mesh_faces, read_mesh_vertices
    from lift3d.recon.superpoints import (
        SuperpointConfig,
        compute_superpoints,
        find_segments_file,
        read_segments,
    )

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--scene", type=Path, default=REPO / ".." / "shared" / "data" / "scannet" / "scene0000_00"
    )
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    mesh = args.scene / f"{args.scene.name}_vh_clean_2.ply"
    xyz, _ = read_mesh_vertices(mesh)
    faces = read_mesh_faces(mesh)
    segs = find_segments_file(mesh)
    if segs is None:
        raise SystemExit(f"{mesh}: no segs.json beside it to compare with")
    cfg = SuperpointConfig(source="compute")
    compute_superpoints(xyz[:100], faces=faces[(faces < 100).all(1)], config=cfg)  # compile

    def best(fn):
        times, out = [], None
        for _ in range(args.repeat):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        return min(times), out

    t_read, shipped = best(lambda: read_segments(segs, len(xyz)))
    t_comp, ours = best(lambda: compute_superpoints(xyz, faces=faces, config=cfg))
    ari = adjusted_rand_score(shipped.index, ours.index)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{args.scene.name}: {len(xyz)} vertices, {len(faces)} faces")
    print(f"read segs.json:      {t_read:.3f} s, {shipped.count} pieces")
    print(f"compute (mesh graph): {t_comp:.3f} s, {ours.count} pieces, ARI {ari:.4f}")
    print(f"compute / read: {t_comp / t_read:.1f}x; peak RSS {peak:.2f} GiB")


if __name__ == "__main__":
    main()
