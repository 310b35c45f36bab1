"""Peak memory of `lift3d segment` against the number of frames (issue 7: it must stay flat).

For N frames of a synthetic scan (`lift3d synth --frames N --size W H`), each case runs in its own
process under `/usr/bin/time`, whose "maximum resident set size" is the peak RSS:

- `segment --no-preview`: the whole flow of `lift3d segment`, with `--resume` over label maps
  written beforehand (the GT instances + 1, so every valid pixel is labeled): MastSAM with the
  classical segmenter costs ~2.8 s a frame on the 2-core machine, which would make 1,000 frames
  take most of an hour, and it streams frames already; reading the maps back is what `--resume`
  does. Lifting, the metric (streamed from disk: `metric_run.score_scene`) and the outputs all run.
- `segment, no pairwise`: the same with `--no-metric-pairwise` (H only).
- `segment (previews)`: the same plus overlays, heat-maps, renders and the report.
- `metric, in memory (old)`: the metric stage over arrays in memory, as the pipeline ran it before
  the views streamed: all label maps (`read_label_maps`), all pointmaps (`scene_pointmaps`),
  `consistency_score(ArrayFrames(...))` (tiled since there is one path, so only the inputs grow).
- `metric, streamed, max_points 1M`: `consistency_score` over `MaskFrames` (a view read at a time)
  with tiles of at most 1M points (the pipeline's default is 2M: `--metric.max-points`).

Usage: .venv/bin/python scripts/bench_memory.py [--frames 100 300 1000] [--size 160 120]
Writes docs/benchmarks/memory.md and docs/benchmarks/memory.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
LIFT3D = str(Path(PY).parent / "lift3d")
CASES = [
    "segment --no-preview",
    "segment, no pairwise",
    "metric, streamed, max_points 1M",
    "metric, in memory (old)",
    "segment (previews)",
]


def _case_metric(kind: str, scene_dir: str, masks: str, eps: float) -> None:
    """Run one metric-stage case in this process (called in a child by `_measure`)."""
    from lift3d.recon import load_scene

    scene = load_scene(scene_dir)
    t0 = time.perf_counter()
    if kind == "inmemory":
        from lift3d.consistency.metric import ArrayFrames, MetricConfig, consistency_score
        from lift3d.io import read_label_maps
        from lift3d.recon.geometry import scene_pointmaps

        labels = read_label_maps(masks, scene.frame_names)
        pointmaps, valid = scene_pointmaps(scene, scene.size)
        r = consistency_score(ArrayFrames(pointmaps, valid, labels), config=MetricConfig(eps=eps))
    else:
        from lift3d.consistency.metric import MetricConfig, consistency_score
        from lift3d.metric_run import MaskFrames

        r = consistency_score(
            MaskFrames(scene, masks, scene.size), config=MetricConfig(eps=eps, max_points=1_000_000)
        )
    print(
        json.dumps(
            {
                "H": r.H,
                "pairwise": r.pairwise,
                "pixels": r.pixels,
                "seconds": time.perf_counter() - t0,
            }
        )
    )


def _measure(cmd: list[str], log: Path) -> dict:
    """Peak RSS (GNU time's %M, KiB) and wall time of one command, run in its own process."""
    tfile = log.with_suffix(".time")
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", str(tfile), *cmd],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        ).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (rc {rc}), see {log}")
    kib = int(tfile.read_text().strip().splitlines()[-1])
    return {"peak_gib": kib / 2**20, "seconds": wall}


def _write_masks(scene_dir: Path, masks: Path) -> int:
    """GT instances + 1 as label maps (every valid pixel labeled); returns the frame count."""
    from PIL import Image

    from lift3d.io import write_label_map

    masks.mkdir(parents=True, exist_ok=True)
    files = sorted((scene_dir / "instance").glob("*.png"))
    for f in files:
        if not (masks / f.name).is_file():
            write_label_map(masks / f.name, np.asarray(Image.open(f)).astype(np.int32) + 1)
    return len(files)


def run(frames: list[int], size: tuple[int, int], work: Path, eps: float, on_row=None) -> dict:
    rows = {}
    for n in frames:
        scene = work / f"n{n}" / "scene0990_00"
        if not (scene / "objects.json").is_file():
            subprocess.run(
                [
                    LIFT3D,
                    "synth",
                    "--out",
                    str(scene),
                    "--frames",
                    str(n),
                    "--size",
                    str(size[0]),
                    str(size[1]),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        row = {}
        for case in CASES:
            sub = (
                "preview"
                if "previews" in case
                else "nopairwise"
                if "no pairwise" in case
                else "plain"
            )
            out = work / f"n{n}" / case.split(",")[0].split(" ")[0] / sub
            if case.startswith("metric"):
                out = work / f"n{n}" / ("inmemory" if "old" in case else "stream1m")
            out.mkdir(parents=True, exist_ok=True)
            masks = work / f"n{n}" / "gt_masks"
            _write_masks(scene, masks)
            if case.startswith("segment"):
                import shutil

                shutil.rmtree(out / "masks", ignore_errors=True)
                shutil.copytree(masks, out / "masks")
                cmd = [
                    LIFT3D,
                    "segment",
                    "--scene",
                    str(scene),
                    "--out",
                    str(out),
                    "--resume",
                    "--metric.eps",
                    str(eps),
                ]
                if "previews" not in case:
                    cmd.append("--no-preview")
                if "no pairwise" in case:
                    cmd.append("--metric.no-pairwise")
            else:
                kind = "inmemory" if "old" in case else "stream"
                cmd = [PY, __file__, "--case", kind, str(scene), str(masks), str(eps)]
            r = _measure(cmd, out.parent / f"{out.name}.log")
            if case.startswith("segment"):
                m = json.loads((out / "metrics.json").read_text())
                r.update(H=m["H"], pixels=m["pixels"], metric_seconds=m["timings"]["metric"])
            else:
                m = json.loads(
                    (out.parent / f"{out.name}.log").read_text().strip().splitlines()[-1]
                )
                r.update(H=m["H"], pixels=m["pixels"], metric_seconds=m["seconds"])
            print(
                f"N={n:5d}  {case:34s} peak {r['peak_gib']:.2f} GiB  {r['seconds']:.0f} s  H={r['H']:.6f}",
                flush=True,
            )
            row[case] = r
        rows[n] = row
        if on_row is not None:
            on_row(rows)
    return rows


def write_report(rows: dict, size, eps, md: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = sorted(rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for case in CASES:
        have = [n for n in frames if case in rows[n]]
        ax.plot(have, [rows[n][case]["peak_gib"] for n in have], marker="o", label=case)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(frames, [str(n) for n in frames])
    ax.set_xlabel(f"frames (synthetic scan, {size[0]}x{size[1]})")
    ax.set_ylabel("peak RSS (GiB)")
    ax.set_title("Peak memory against scan length (2-core CPU, 2026-12-01)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    lines = [
        "# Peak memory against frame count (issue 7)",
        "",
        f"Date: 2026-12-01. Machine: 2-core shared CPU, no GPU. Command: `.venv/bin/python scripts/bench_memory.py "
        f"--frames {' '.join(map(str, frames))} --size {size[0]} {size[1]}`. Synthetic scans from `lift3d synth` at "
        f"{size[0]}x{size[1]} depth, eps = {eps} m; label maps = GT instances + 1 (every valid pixel labeled, so the "
        "metric sees the most points). Each case is its own process; peak = GNU time's maximum resident set size.",
        "",
        "`segment` runs use `--resume` over the pre-written label maps: MastSAM with the classical segmenter costs "
        "~2.8 s a frame here (281 s for 100 frames), so tracking 1,000 frames would take ~47 min; the tracker holds "
        "one frame plus its 3D memory either way. Everything after tracking (lifting, the streamed metric, outputs; "
        "previews in the last column) runs as in a normal run.",
        "",
        "| frames | labeled points | " + " | ".join(f"{c}: peak GiB (s)" for c in CASES) + " |",
        "|---:|---:|" + "---:|" * len(CASES),
    ]
    for n in frames:
        cells = [
            f"{rows[n][c]['peak_gib']:.2f} ({rows[n][c]['seconds']:.0f})"
            if c in rows[n]
            else "not run"
            for c in CASES
        ]
        lines.append(f"| {n} | {rows[n][CASES[0]]['pixels']:,} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Ratios of peak RSS against the 100-frame run of the same case (the baseline of this run):",
        "",
        "| frames | " + " | ".join(CASES) + " |",
        "|---:|" + "---:|" * len(CASES),
    ]
    for n in frames:
        lines.append(
            f"| {n} | "
            + " | ".join(
                f"{rows[n][c]['peak_gib'] / rows[frames[0]][c]['peak_gib']:.2f}x"
                if c in rows[n]
                else "-"
                for c in CASES
            )
            + " |"
        )
    same = all(
        len({round(rows[n][c]["H"], 12) for c in CASES if c in rows[n]}) == 1 for n in frames
    )
    lines += [
        "",
        f"H agrees across the cases for every N: {same} (the streamed metric equals the in-memory one to the bit; "
        "tests/consistency/test_metric.py checks it on many tile layouts).",
        "",
        "Reading it: the in-memory metric holds every pointmap and label map (~17 bytes a pixel) plus ~30 bytes a "
        "labeled point, so it grows linearly with the scan. The streamed metric (in `segment`, and the `max_points "
        "1M` column) holds one frame, one tile of space and a bounded batch of pairwise entries. Tiles are k-d boxes "
        "over the eps-wide blocks of the grid, cut until a tile's points plus its one-block halo number at most "
        "max_points (2M in `segment`); the pairwise contingency entries are spilled to disk and reduced a group of "
        "views at a time. With H alone (`segment, no pairwise`) the peak stays put whatever the number of frames.",
        "",
        "The pairwise variant's distinct contingency keys ((mask, view a), (mask, view b)) grow with the square "
        "of the number of views that see one spot; here the camera orbits the room and every view sees every "
        "wall, so that number is N (~6M distinct keys at 1,000 frames). Each tile therefore counts them in "
        "passes over ranges of views a, planned from an exact upper bound so that no pass holds more than "
        "max_points / 8 keys; the kernel's table, the folded table and the groups reduced at the end share that "
        "bound. Its cost is a constant on top of H (the tables fill up once a tile's views have more keys than "
        "the bound): +0.04 GiB at 300 frames, +0.06 GiB at 1,000. `--no-metric-pairwise` also saves its time.",
        "",
        "Peak at "
        + f"{frames[-1]} frames over peak at {frames[0]} frames: "
        + ", ".join(
            f"{c} {rows[frames[-1]][c]['peak_gib'] / rows[frames[0]][c]['peak_gib']:.2f}x"
            for c in CASES
            if c in rows[frames[-1]]
        )
        + ".",
        "",
        "Earlier versions (same day): slabs along the longest axis instead of k-d tiles, with the pairwise "
        "entries in memory, grew `segment` 0.33 -> 0.51 GiB from 100 to 300 frames (a wall across the slab axis "
        "is one layer holding every view's points of it). k-d tiles with every pairwise key of a chunk in one "
        "table gave `segment` 0.32 / 0.38 / 0.67 GiB at 100 / 300 / 1,000 frames (H alone 0.31 / 0.35 / 0.33). "
        "One intermediate version of the in-memory metric kept every piece of the kernel's table until the end "
        "(11.96 GiB at 1,000 frames); it folds them as they come now, and its 1,000-frame cell above was "
        "measured again, alone, after that fix.",
        "",
        "![peak memory](memory.png)",
        "",
    ]
    md.write_text("\n".join(lines))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--report-only":  # redraw from WORK/results.json
        work = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("/tmp/lift3d-bench-memory")
        rows = {int(k): v for k, v in json.loads((work / "results.json").read_text()).items()}
        md = ROOT / "docs" / "benchmarks" / "memory.md"
        write_report(rows, (160, 120), 0.02, md, md.with_suffix(".png"))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--case":
        _case_metric(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--size", type=int, nargs=2, default=[160, 120])
    ap.add_argument("--eps", type=float, default=0.02)
    ap.add_argument("--work", type=Path, default=Path("/tmp/lift3d-bench-memory"))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "memory.md")
    args = ap.parse_args()

    def on_row(rows):  # the report so far after each frame count
        (args.work / "results.json").write_text(json.dumps(rows, indent=1))
        write_report(rows, tuple(args.size), args.eps, args.out, args.out.with_suffix(".png"))

    run(args.frames, tuple(args.size), args.work, args.eps, on_row)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
