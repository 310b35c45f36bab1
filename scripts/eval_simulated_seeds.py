"""MastSAM + merging against MaskClustering and the oracle association on few views, over seeds.

Thirty views of a 300-frame scan leave most objects to two or three views, where one simulated
split or merge decides an object: a single seed's AP moves by 0.1 AP50 between frame choices
and seeds. This runs `lift3d eval scannet` (`run_scannet_eval`) with masks simulated from the
scan's ground truth (`--segmenter simulated`, not SAM) for every frame choice x noise x seed
and prints each cell's mean AP / AP50 / AP25 per method.

    python scripts/eval_simulated_seeds.py --scene ../shared/data/scannet/scene0000_00

About 2 minutes per run (three methods) on 2 cores; the defaults make 12 runs. `--frames`
also takes any START:STOP:STEP slice (`1::10`, `2::10`, ...): the ten offsets of `::10` are
ten different 30-view subsets of one scan, whose mean says more than one lucky or unlucky
choice (`--frames offsets` runs all ten; 30 runs per noise level).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

FRAME_CHOICES = {"::10": {"frames": "::10"}, "max-frames 30": {"max_frames": 30}}
OFFSETS = [f"{k}::10" for k in range(10)]


def frame_choice(choice: str) -> dict:
    """`run_scannet_eval`'s frame arguments for a named choice or a START:STOP:STEP slice."""
    if choice in FRAME_CHOICES:
        return FRAME_CHOICES[choice]
    if choice.count(":") != 2:
        raise SystemExit(
            f"--frames: {choice!r} is neither {list(FRAME_CHOICES)} nor START:STOP:STEP"
        )
    return {"frames": choice}


def main() -> None:
    from lift3d.config import SegmenterConfig
    from lift3d.consistency.simulated import SimulatedConfig
    from lift3d.evaluation import run_scannet_eval

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("outputs/eval_simulated_seeds"))
    ap.add_argument("--noise", type=float, nargs="+", default=[0.15, 0.3])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--frames",
        nargs="+",
        default=list(FRAME_CHOICES),
        help=f"{list(FRAME_CHOICES)}, START:STOP:STEP slices, or `offsets` ({OFFSETS[0]} .. {OFFSETS[-1]})",
    )
    ap.add_argument("--methods", nargs="+", default=["maskclustering", "mastsam-merged", "oracle"])
    args = ap.parse_args()
    args.frames = [c for f in args.frames for c in (OFFSETS if f == "offsets" else [f])]
    for choice in args.frames:
        frame_choice(choice)  # a bad choice fails before the first run

    rows = []
    for choice in args.frames:
        for noise in args.noise:
            for seed in args.seeds:
                seg = SegmenterConfig(
                    name="simulated", simulated=SimulatedConfig(noise=noise, seed=seed)
                )
                out = args.out / f"{choice.replace(' ', '_').replace(':', '_')}_n{noise}_s{seed}"
                res = run_scannet_eval(
                    args.scene,
                    out=out,
                    methods=args.methods,
                    segmenter=seg,
                    pairwise=False,
                    verbose=False,
                    **frame_choice(choice),
                )
                for m in args.methods:
                    r = res["per_method"][m]
                    rows.append(
                        {"frames": choice, "noise": noise, "seed": seed, "method": m}
                        | {k: r[k] for k in ("AP", "AP50", "AP25")}
                    )
                    print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1))
    print(f"\nmeans over seeds {args.seeds} (masks simulated from GT, not SAM): AP / AP50 / AP25")
    for choice in args.frames:
        for noise in args.noise:
            print(
                f"{choice}, noise {noise}: "
                + _means(rows, args.methods, frames=choice, noise=noise)
            )
    if len(args.frames) > 1:
        for noise in args.noise:
            print(
                f"all {len(args.frames)} frame choices, noise {noise}: "
                + _means(rows, args.methods, noise=noise)
            )


def _means(rows: list[dict], methods: list[str], **match) -> str:
    """Per method, the mean AP / AP50 / AP25 of the rows whose fields equal `match`."""
    cells = []
    for m in methods:
        v = np.array(
            [
                [r["AP"], r["AP50"], r["AP25"]]
                for r in rows
                if r["method"] == m and all(r[k] == x for k, x in match.items())
            ]
        )
        cells.append(f"{m} {v[:, 0].mean():.3f} / {v[:, 1].mean():.3f} / {v[:, 2].mean():.3f}")
    return "; ".join(cells)


if __name__ == "__main__":
    main()
