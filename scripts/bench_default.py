"""The whole default `lift3d segment` run on a scan, against the previous default, in one session.

Each configuration runs in its own process (its peak RSS is that process's), one after the other
(never two at once on a 2-core machine), and is scored with the ScanNet instance evaluation when
the scan has GT. Per-stage times come from each run's metrics.json.

    python scripts/bench_default.py --scene ../shared/data/scannet/scene0000_00 --out outputs/bench_default
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {
    # today's default: object candidates from 3D structure, superpoint votes, multi-view merging
    "geometric (default)": [],
    # the default before: per-image classical masks, per-vertex votes, no merging
    "classical-2d, per-point vote": [
        "--segmenter",
        "classical-2d",
        "--vote",
        "points",
        "--merge.no-enabled",
    ],
}

_CHILD = """
import resource, sys, json
from lift3d.cli import entrypoint
rc = entrypoint(sys.argv[1:])
print(json.dumps({"rc": rc, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("outputs/bench_default"))
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--only", nargs="*", default=None, help="names of CONFIGS to run")
    args = ap.parse_args()
    rows = {}
    for name, extra in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        out = args.out / name.split()[0].rstrip(",")
        argv = ["segment", "-q", "--scene", str(args.scene), "--out", str(out), *extra]
        if args.max_frames:
            argv += ["--max-frames", str(args.max_frames)]
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _CHILD, *argv], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-2000:]}")
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        metrics = json.loads((out / "metrics.json").read_text())
        row = {
            "wall_s": round(wall, 1),
            "peak_rss_gib": round(child["peak_rss_gib"], 2),
            "stages_s": metrics["timings"],
            "H": metrics["H"],
            "pairwise": metrics.get("pairwise"),
            "ids": metrics.get("ids"),
        }
        if (out / "scannet").is_dir():
            from lift3d.instance_eval import evaluate_scannet_export

            try:
                r = evaluate_scannet_export(args.scene, out / "scannet")
                row.update({k: round(r[k], 4) for k in ("AP", "AP50", "AP25")})
            except Exception as e:  # a scan without GT: no AP
                row["AP_note"] = str(e)
        rows[name] = row
        print(name, json.dumps(row), flush=True)
    (args.out / "bench_default.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
