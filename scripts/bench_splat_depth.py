"""Benchmark the depth rendered from splats: the numba CPU renderer, and gsplat's ED on CUDA.

Random splats in front of one 640x480 camera (sizes like a trained 3DGS: 0.5 to 3 cm at 2 to 8 m),
N = 100k and 200k, timed per view after a warm-up (numba compiles once, cached on disk). With
CUDA: the same views through gsplat, and the agreement of the two depths, median |dz| over
pixels both cover (issue 20's bar: under 1 mm).

    .venv/bin/python scripts/bench_splat_depth.py [--sizes 100000 200000] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime

import numpy as np


def random_splats(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = rng.uniform(2.0, 8.0, n)
    xy = rng.uniform(-0.7, 0.7, (n, 2)) * z[:, None]  # inside the field of view
    return (
        np.c_[xy, z],
        rng.normal(size=(n, 4)),
        rng.uniform(0.005, 0.03, (n, 3)),
        rng.uniform(0.05, 1.0, n),
    )


def timed(fn, repeat: int) -> tuple[float, tuple]:
    out = fn()
    t = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    return (time.perf_counter() - t) / repeat, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 200_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    from lift3d.recon.splat_depth import render_depth

    K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    T = np.eye(4)
    cuda = torch.cuda.is_available()
    rows = []
    for n in args.sizes:
        splats = random_splats(n)
        cpu_s, (d_cpu, a_cpu) = timed(
            lambda s=splats: render_depth(*s, K, T, (640, 480), backend="numba"), args.repeat
        )
        row = {"splats": n, "cpu_s_per_view": round(cpu_s, 4), "covered": float((d_cpu > 0).mean())}
        if cuda:
            gpu_s, (d_gpu, a_gpu) = timed(
                lambda s=splats: render_depth(*s, K, T, (640, 480), backend="gsplat"), args.repeat
            )
            both = (d_cpu > 0) & (d_gpu > 0)
            row.update(
                {
                    "gpu_ms_per_view": round(gpu_s * 1e3, 2),
                    "median_abs_dz_m": float(np.median(np.abs(d_cpu - d_gpu)[both])),
                    "max_abs_dalpha": float(np.abs(a_cpu - a_gpu).max()),
                }
            )
        rows.append(row)
        print(row)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.get_device_name() if cuda else None,
        "size": [640, 480],
        "rows": rows,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
