"""Every method on the shared DAVIS sequences and on ScanNet scene0000_00, in one command.

Runs `lift3d.evaluation.run_davis_eval` (all four methods on the six DAVIS-2016 sequences) and
`run_scannet_eval` (all four on a frame subset of scene0000_00), then writes `EVAL.md` at the
repository root with the tables, one matplotlib plot per table under `docs/eval/`, the backends
and settings behind every number, and the date. Label maps, ScanNet exports and the two
`results.json` go under `--out`.

    .venv/bin/python scripts/eval_all.py [--davis ../shared/data/davis] [--davis-size 427x240] \
        [--davis-max-frames N] [--scannet ../shared/data/scannet/scene0000_00] \
        [--scannet-frames ::10] [--out outputs/eval] [--date 2026-12-01]

Defaults (34 minutes on the project's 2-core CPU machine, shared, load average 2 to 4): DAVIS frames at 427x240 (half
the 854x480 annotations; scored at 854x480), every frame of every sequence; ScanNet every 10th of
the 300 shared frames (30 frames) at the depth size, 640x480.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS_ALL = ("framewise", "sam3d", "mastsam-no-unmasked", "mastsam")
DATA = REPO / ".." / "shared" / "data"
METHOD_NOTES = {
    "framewise": "the segmenter frame by frame, IDs independent per frame (a seeded random order)",
    "sam3d": "the framewise masks merged SAM3D-style: bidirectional merging of neighbouring frames in a binary hierarchy",
    "mastsam-no-unmasked": "MastSAM with unmasked-region initialization off (`unmasked_init=False`, the paper's Table II ablation)",
    "mastsam": "MastSAM, default `TrackerConfig`",
}


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def bar_plot(path: Path, groups: list[str], series: dict[str, list[float]], *, title: str, ylabel: str) -> None:
    """Grouped bars: one group per entry of `groups`, one bar per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(groups) + 2), 3.8), dpi=110)
    n = len(series)
    width = 0.8 / max(n, 1)
    x = np.arange(len(groups))
    for k, (name, vals) in enumerate(series.items()):
        vals = [np.nan if v is None else v for v in vals]
        ax.bar(x + (k - (n - 1) / 2) * width, vals, width, label=name)
    ax.set_xticks(x, groups, rotation=15 if len(groups) > 5 else 0)
    ax.set_ylim(0, 1.22)  # room above 1 for the legend
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(n, 4), loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def davis_section(res: dict, plots: Path, *, size: tuple[int, int], seconds: float) -> str:
    methods, seqs = res["methods"], res["sequences"]
    mean = res["mean"]
    rows = []
    for m in methods:
        r = mean[m]
        p, s = r["paper"], r["sequence"]
        rows.append([f"`{m}`", fmt(p["iou"]), fmt(p["f1"]), fmt(p["precision"]), fmt(p["recall"]), fmt(r["H"]),
                     fmt(s["J"]), fmt(s["F"]), fmt(s["JF"]), fmt(r["masks_per_frame"], 1), fmt(r["seconds"], 0)])
    t1 = md_table(["method", "IoU", "F1", "precision", "recall", "H (consecutive)", "J", "F", "J&F", "masks/frame", "s"], rows)
    keys = [("paper IoU", lambda r: r["paper"]["iou"]), ("paper F1", lambda r: r["paper"]["f1"]),
            ("H", lambda r: r["H"]), ("seq. J", lambda r: r["sequence"]["J"]), ("seq. F", lambda r: r["sequence"]["F"]),
            ("seq. J&F", lambda r: r["sequence"]["JF"])]
    bar_plot(plots / "davis_mean.png", [k for k, _ in keys], {m: [f(mean[m]) for _, f in keys] for m in methods},
             title=f"DAVIS-2016 val, {len(seqs)} sequences: mean over sequences (classical segmenter)", ylabel="score")

    per = res["per_sequence"]

    def per_seq_table(name: str, get, plot: str, title: str) -> str:
        rows = [[s] + [fmt(get(per[m][s])) for m in methods] for s in seqs]
        rows.append(["**mean**"] + [fmt(get(mean[m])) for m in methods])
        bar_plot(plots / plot, seqs, {m: [get(per[m][s]) for s in seqs] for m in methods}, title=title, ylabel=name)
        return md_table(["sequence"] + [f"`{m}`" for m in methods], rows)

    t2 = per_seq_table("J&F", lambda r: r["sequence"]["JF"], "davis_sequence_jf.png",
                       "DAVIS: sequence protocol J&F (one predicted ID per sequence)")
    t3 = per_seq_table("IoU", lambda r: r["paper"]["iou"], "davis_paper_iou.png",
                       "DAVIS: paper protocol IoU (best-IoU mask per frame)")
    t4 = per_seq_table("H", lambda r: r["H"], "davis_consistency.png",
                       "DAVIS: consecutive-frame consistency H (flow correspondences)")
    fw, ms, nu, s3 = (mean.get(m) for m in ("framewise", "mastsam", "mastsam-no-unmasked", "sam3d"))
    reading = ""
    if fw and ms and nu and s3:
        reading = f"""
Reading the means (this run's numbers, no claim beyond them):

- IDs across frames: sequence-protocol J&F is {fmt(fw['sequence']['JF'])} frame by frame, {fmt(s3['sequence']['JF'])}
  with SAM3D merging and {fmt(ms['sequence']['JF'])} with MastSAM, while the paper protocol, which lets the ID
  change every frame, gives {fmt(fw['paper']['iou'])} / {fmt(s3['paper']['iou'])} / {fmt(ms['paper']['iou'])} IoU: the paper protocol
  measures mask quality, the sequence protocol tracking.
- Unmasked-region initialization off: {fmt(nu['masks_per_frame'], 1)} masks per frame instead of {fmt(ms['masks_per_frame'], 1)}, paper
  IoU {fmt(nu['paper']['iou'])} instead of {fmt(ms['paper']['iou'])}, H {fmt(nu['H'])} instead of {fmt(ms['H'])}: fewer, larger masks agree
  more often across frames, which H alone rewards (DESIGN.md's degeneration problem).
"""
    frames = {s: v["frames"] for s, v in res["settings"]["per_sequence"].items()}
    flow_s = sum(v["flow_seconds"] for v in res["settings"]["per_sequence"].values())
    return f"""## DAVIS-2016 (2D video, no depth)

Data: `../shared/data/davis`, the six shared DAVIS-2016 val sequences ({', '.join(f'{s} {n}' for s, n in frames.items())}
frames; {sum(frames.values())} in all{'' if res['settings']['max_frames'] is None else f", the first {res['settings']['max_frames']} of each"}),
one annotated object per frame. Segmenter and tracker work at {size[0]}x{size[1]}; label maps are
upsampled (nearest pixel) to the annotations' 854x480 and scored there. Correspondences:
{res['backends']['matches']} (the documented 2D fallback; no MASt3R weights here), computed once per
sequence ({flow_s:.0f} s in all) and shared by MastSAM, SAM3D and H. Segmenter: {res['backends']['segmenter']}.
Seed {res['settings']['seed']}. Run time of the DAVIS part: {seconds / 60:.1f} min.

Columns: the **paper protocol** (MastSAM, Sec. IV: per frame the predicted mask of highest IoU
with the ground truth, pixel IoU / F1 / precision / recall averaged over frames; IDs may change
from frame to frame), **H (consecutive)**: the share of flow correspondences between consecutive
frames whose two pixels carry the same ID, both labeled (`consecutive_consistency`, the paper's
consistency column for video without depth); the **sequence protocol**: one predicted ID for the
whole sequence (highest mean J), scored with DAVIS region J and boundary F (`davis_j`,
`davis_f`, official definitions) and J&F = (J + F) / 2. `masks/frame`: mean number of IDs per
frame; `s`: seconds of the method summed over the sequences (SAM3D's time excludes the framewise
masks it starts from).

Mean over the six sequences ([plot](docs/eval/davis_mean.png)):

{t1}

![DAVIS means](docs/eval/davis_mean.png)

Sequence protocol J&F per sequence ([plot](docs/eval/davis_sequence_jf.png)):

{t2}

![DAVIS J&F per sequence](docs/eval/davis_sequence_jf.png)

Paper protocol IoU per sequence ([plot](docs/eval/davis_paper_iou.png)):

{t3}

![DAVIS paper IoU per sequence](docs/eval/davis_paper_iou.png)

Consecutive-frame consistency H per sequence ([plot](docs/eval/davis_consistency.png)):

{t4}

![DAVIS H per sequence](docs/eval/davis_consistency.png)
{reading}"""


def scannet_section(res: dict, plots: Path, *, seconds: float) -> str:
    methods = res["methods"]
    per = res["per_method"]
    rows = [[f"`{m}`", fmt(per[m]["AP"]), fmt(per[m]["AP50"]), fmt(per[m]["AP25"]), str(per[m]["num_pred"]),
             fmt(per[m]["H"]), fmt(per[m]["pairwise"]), str(per[m]["ids"]), fmt(per[m]["masks_per_frame"], 1),
             fmt(per[m]["seconds"], 0)] for m in methods]
    num_gt = per[methods[0]]["num_gt"]
    reading = ""
    if all(m in per for m in METHODS_ALL):
        fw, s3, nu, ms = (per[m] for m in METHODS_ALL)
        reading = f"""
Reading (this run's numbers): IDs independent per view cannot be lifted (framewise AP25
{fmt(fw['AP25'])}); associated across views, AP25 is {fmt(s3['AP25'])} with SAM3D merging and {fmt(ms['AP25'])} with MastSAM.
Without unmasked-region initialization MastSAM keeps {fmt(nu['masks_per_frame'], 1)} mask(s) per view (MastSAM:
{fmt(ms['masks_per_frame'], 1)}), with H {fmt(nu['H'])} (MastSAM: {fmt(ms['H'])}) and AP25 {fmt(nu['AP25'])}: the degeneration
that H alone cannot see. The best AP50 of any method is {fmt(max(per[m]['AP50'] for m in METHODS_ALL))}: few
of the classical segmenter's lifted regions overlap a GT object by more than half (its cross-view
ARI on this scan is in `docs/benchmarks/tracker.md`).
"""
    t = md_table(["method", "AP", "AP50", "AP25", "predictions >= 100 vertices", "H", "pairwise", "IDs", "masks/frame", "s"], rows)
    keys = [("AP", "AP"), ("AP50", "AP50"), ("AP25", "AP25"), ("H", "H"), ("pairwise", "pairwise")]
    bar_plot(plots / "scannet.png", [k for k, _ in keys], {m: [per[m][k] for _, k in keys] for m in methods},
             title=f"ScanNet {res['scene']}, {res['settings']['frames_used']} frames (classical segmenter)", ylabel="score")
    st = res["settings"]
    fn = st["frame_names"]
    names = ", ".join(fn) if len(fn) <= 5 else f"{', '.join(fn[:3])}, ..., {fn[-1]}"
    h_line = res.get("H_note") or (
        f"H: the metric H of DESIGN.md (exact, eps = {st['eps']} m, one-hot labels) over the "
        f"{st['frames_used']} views' depth pointmaps at {st['size'][0]}x{st['size'][1]}; `pairwise`: its ID-free "
        "variant (Rand index of the label partitions over pixel pairs within eps in two views)."
    )
    return f"""## ScanNet scene0000_00 (3D instances on the mesh vertices)

Data: `../shared/data/scannet/scene0000_00`, frames `{st['frames']}` (START:STOP:STEP) of the
{st['frames_in_scan']} shared frames: {st['frames_used']} frames ({names}), at {st['size'][0]}x{st['size'][1]}
(the depth size). Geometry: {res['backends']['geometry']}; MastSAM's correspondences:
{res['backends']['matches']}. Segmenter: {res['backends']['segmenter']}. SAM3D voxel
{st['sam3d_voxel']} m, merge ratio 0.5, match radius 1.5 voxels (SAM3D's values). Seed {st['seed']}.
Run time of the ScanNet part: {seconds / 60:.1f} min.

Every method's per-view label maps are voted onto the {res['backends']['points']} exactly as
`lift3d segment` does (`lift_to_points`: visibility by depth, majority vote, vote share as
confidence), exported in the ScanNet benchmark format, read back and scored class-agnostic with
`lift3d.instance_eval` (ScanNet's `evaluate_semantic_instance.py` semantics: AP over IoU
0.5:0.95, AP50, AP25; predictions under 100 vertices dropped). Ground truth: {num_gt} instances of
the 18 benchmark classes (of the 55 annotated objects; the shared `labels.ply` holds raw category
ids, so classes come from the aggregation labels through ScanNet's label table). {h_line}
H counts same-view neighbours too and rewards a few large masks (DESIGN.md's degeneration
problem), so it is read beside AP and the mask counts, never alone.

{t}

![ScanNet](docs/eval/scannet.png)
{reading}"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--davis", type=Path, default=DATA / "davis")
    ap.add_argument("--davis-size", type=parse_size, default=(427, 240))
    ap.add_argument("--davis-max-frames", type=int, default=None)
    ap.add_argument("--scannet", type=Path, default=DATA / "scannet" / "scene0000_00")
    ap.add_argument("--scannet-frames", default="::10")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "eval")
    ap.add_argument("--eval-md", type=Path, default=REPO / "EVAL.md")
    ap.add_argument("--plots", type=Path, default=REPO / "docs" / "eval")
    ap.add_argument("--date", default=date.today().isoformat())
    ap.add_argument("--reuse", action="store_true", help="rebuild EVAL.md from the results.json files in --out")
    args = ap.parse_args()

    import logging

    from lift3d.cli import EvalDavis
    from lift3d.evaluation import METHODS, run_davis_eval, run_scannet_eval

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("numba").setLevel(logging.WARNING)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    davis_out, scannet_out = args.out / "davis", args.out / "scannet"
    timing_path = args.out / "eval_all.json"
    if args.reuse:
        davis = json.loads((davis_out / "results.json").read_text())
        scannet = json.loads((scannet_out / "results.json").read_text())
        timing = json.loads(timing_path.read_text())
    else:
        davis = run_davis_eval(
            EvalDavis(root=args.davis, out=davis_out, methods=METHODS, max_frames=args.davis_max_frames),
            size=args.davis_size,
        )
        t_davis = time.perf_counter() - t0
        scannet = run_scannet_eval(args.scannet, out=scannet_out, methods=METHODS, frames=args.scannet_frames)
        timing = {"davis_s": t_davis, "scannet_s": time.perf_counter() - t0 - t_davis, "total_s": time.perf_counter() - t0,
                  "load_start": load0, "load_end": os.getloadavg()[0]}
        timing_path.write_text(json.dumps(timing, indent=1))
    t_davis, t_scannet, total = timing["davis_s"], timing["scannet_s"], timing["total_s"]
    load0, load1 = timing["load_start"], timing["load_end"]

    methods = "\n".join(f"- `{m}`: {METHOD_NOTES[m]}." for m in METHODS)
    text = f"""# Evaluation: MastSAM beside its baselines, on DAVIS and ScanNet

Date: {args.date}. Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), no GPU,
Python {platform.python_version()}; shared with other work (1-minute load average {load0:.2f} at the
start, {load1:.2f} at the end). One command, {total / 60:.0f} min{'' if not args.reuse else ' (this text was regenerated from its saved results with `--reuse`)'}:

```
.venv/bin/python scripts/eval_all.py --date {args.date}
```

**Every number below was made with the weight-free classical segmenter
(`lift3d.consistency.classical`), not with SAM.** No SAM checkpoint was available on this machine,
so these are not the MastSAM paper's numbers and must not be compared with them: the classical
segmenter merges superpixels by colour (and, on ScanNet, by depth and surface convexity), and on
outdoor DAVIS video without depth it often merges the object with similar-coloured background.
What the tables compare is the *association* of one segmenter's masks: all four methods start
from the same segmenter, with the same settings, on the same frames. With SAM weights, the same
command with `lift3d eval davis --segmenter sam --sam-checkpoint ...` (and `run_scannet_eval(...,
segmenter="sam", sam_checkpoint=...)`) produces the comparable numbers.

Methods (`lift3d.evaluation.METHODS`):

{methods}

SAM3D here is our reimplementation of SAM3D's merging (`lift3d.consistency.baselines`, after
Pointcept/SegmentAnything3D's `cal_2_scenes`), fed with the classical segmenter's masks instead of
SAM's; on DAVIS, which has no depth, two runs of frames overlap through the flow correspondences
of their boundary frames instead of 3D points. Outputs (label maps, ScanNet exports,
`results.json`) are written under `{args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}`.

{davis_section(davis, args.plots, size=tuple(args.davis_size), seconds=t_davis)}
{scannet_section(scannet, args.plots, seconds=t_scannet)}
## Not measured here

- SAM (any size) as the segmenter: no checkpoint on this machine. MASt3R correspondences for
  DAVIS: no weights either; optical flow stands in.
- ScanNet on all {scannet['settings']['frames_in_scan']} shared frames and on other scans: one scan, frames
  `{scannet['settings']['frames']}`, to keep the whole command well under an hour on 2 CPU cores.
"""
    tmp = args.eval_md.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, args.eval_md)
    print(f"wrote {args.eval_md} and the plots in {args.plots} ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
