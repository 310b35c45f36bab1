"""Every method on the shared DAVIS sequences, on ScanNet scene0000_00 and on the synthetic scan.

Runs `lift3d.evaluation.run_davis_eval` (the 2D methods on the six DAVIS-2016 sequences) and
`run_scannet_eval` (every 3D method, the oracle association included) on scene0000_00 and on the
synthetic scan of `lift3d synth`, each with the classical segmenter and with masks *simulated from
ground truth* at noise 0, 0.15 and 0.3 (`lift3d.consistency.simulated`: SAM-like granularity
changes, not SAM). Then writes `EVAL.md` at the repository root with the tables, plots under
`docs/eval/` (AP50 against noise per method among them), the backends and settings behind every
number, and the date. Label maps, ScanNet exports and every `results.json` go under `--out`.

    .venv/bin/python scripts/eval_all.py [--davis ../shared/data/davis] [--davis-size 427x240] \
        [--davis-max-frames N] [--skip-davis] [--scannet ../shared/data/scannet/scene0000_00] \
        [--scannet-frames START:STOP:STEP] [--settings classical,sim-0,sim-0.15,sim-0.3] \
        [--no-synthetic] [--out outputs/eval] [--date 2026-12-01] [--reuse]

Defaults: DAVIS frames at 427x240 (half the 854x480 annotations; scored at 854x480), every frame
of every sequence; ScanNet every one of the 300 shared frames at the depth size, 640x480; the
synthetic scan with 24 views at 320x240. `--skip-davis` keeps the DAVIS results already in
`--out` (and leaves the section out when there are none).
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
#: segmenter settings of the 3D evaluation: (segmenter, noise of the simulation)
SETTINGS = {
    "geometric": ("geometric", None),
    "classical": ("classical", None),
    "sim-0": ("simulated", 0.0),
    "sim-0.15": ("simulated", 0.15),
    "sim-0.3": ("simulated", 0.3),
}
#: the settings run unless --settings says otherwise: the weight-free default on scans (geometric)
#: and the three simulations; `classical` (the per-image segmenter, the default without geometry)
#: is there on request
DEFAULT_SETTINGS = ("geometric", "sim-0", "sim-0.15", "sim-0.3")
#: the 3D methods run unless --scannet-methods says otherwise: all but the unmasked-init ablation,
#: which DAVIS keeps (the paper's Table II) and which would cost a second tracking per setting
SCANNET_SKIP = ("mastsam-no-unmasked",)
DATA = REPO / ".." / "shared" / "data"
METHOD_NOTES = {
    "framewise": "the segmenter frame by frame, IDs independent per frame (a seeded random order)",
    "sam3d": "the framewise masks merged SAM3D-style: bidirectional merging of neighbouring frames in a binary hierarchy",
    "mastsam-no-unmasked": "MastSAM with unmasked-region initialization off (`unmasked_init=False`, the paper's Table II ablation)",
    "mastsam": "MastSAM, default `TrackerConfig`",
    "maskclustering": "the framewise masks clustered MaskClustering-style (Yan et al., CVPR 2024): a graph over all masks of all views, "
    "edges where most views that observe two masks put them in one mask, clustered with a falling observer threshold",
    "byocl": "BYOCL (Dai et al., arXiv 2410.15060, the MastSAM paper's Table I baseline): PCA + K-Means of the segmenter's "
    "image-encoder features in batches of 4 frames, then K-Means of all batches' prototypes; without SAM weights on a "
    "documented stand-in feature (Lab colour + position per cell), not SAM's latent",
    "mastsam-merged": "MastSAM with the multi-view merging of its IDs (`lift3d.consistency.merging`)",
    "oracle": "**reference line, not a method**: the framewise masks with GT-consistent IDs (each mask takes the GT object "
    "covering most of it): perfect association of the same masks",
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


def _save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure atomically (temporary name + rename) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def bar_plot(
    path: Path, groups: list[str], series: dict[str, list[float]], *, title: str, ylabel: str
) -> None:
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
    _save_figure(fig, path)


def davis_section(res: dict, plots: Path, *, size: tuple[int, int], seconds: float) -> str:
    methods, seqs = res["methods"], res["sequences"]
    mean = res["mean"]
    rows = []
    for m in methods:
        r = mean[m]
        p, s = r["paper"], r["sequence"]
        rows.append(
            [
                f"`{m}`",
                fmt(p["iou"]),
                fmt(p["f1"]),
                fmt(p["precision"]),
                fmt(p["recall"]),
                fmt(r["H"]),
                fmt(s["J"]),
                fmt(s["F"]),
                fmt(s["JF"]),
                fmt(r["masks_per_frame"], 1),
                fmt(r["seconds"], 0),
            ]
        )
    t1 = md_table(
        [
            "method",
            "IoU",
            "F1",
            "precision",
            "recall",
            "H (consecutive)",
            "J",
            "F",
            "J&F",
            "masks/frame",
            "s",
        ],
        rows,
    )
    keys = [
        ("paper IoU", lambda r: r["paper"]["iou"]),
        ("paper F1", lambda r: r["paper"]["f1"]),
        ("H", lambda r: r["H"]),
        ("seq. J", lambda r: r["sequence"]["J"]),
        ("seq. F", lambda r: r["sequence"]["F"]),
        ("seq. J&F", lambda r: r["sequence"]["JF"]),
    ]
    bar_plot(
        plots / "davis_mean.png",
        [k for k, _ in keys],
        {m: [f(mean[m]) for _, f in keys] for m in methods},
        title=f"DAVIS-2016 val, {len(seqs)} sequences: mean over sequences (classical segmenter)",
        ylabel="score",
    )

    per = res["per_sequence"]

    def per_seq_table(name: str, get, plot: str, title: str) -> str:
        rows = [[s] + [fmt(get(per[m][s])) for m in methods] for s in seqs]
        rows.append(["**mean**"] + [fmt(get(mean[m])) for m in methods])
        bar_plot(
            plots / plot,
            seqs,
            {m: [get(per[m][s]) for s in seqs] for m in methods},
            title=title,
            ylabel=name,
        )
        return md_table(["sequence"] + [f"`{m}`" for m in methods], rows)

    t2 = per_seq_table(
        "J&F",
        lambda r: r["sequence"]["JF"],
        "davis_sequence_jf.png",
        "DAVIS: sequence protocol J&F (one predicted ID per sequence)",
    )
    t3 = per_seq_table(
        "IoU",
        lambda r: r["paper"]["iou"],
        "davis_paper_iou.png",
        "DAVIS: paper protocol IoU (best-IoU mask per frame)",
    )
    t4 = per_seq_table(
        "H",
        lambda r: r["H"],
        "davis_consistency.png",
        "DAVIS: consecutive-frame consistency H (flow correspondences)",
    )
    fw, ms, nu, s3 = (mean.get(m) for m in ("framewise", "mastsam", "mastsam-no-unmasked", "sam3d"))
    reading = ""
    if fw and ms and nu and s3:
        reading = f"""
Reading the means (this run's numbers, no claim beyond them):

- IDs across frames: sequence-protocol J&F is {fmt(fw["sequence"]["JF"])} frame by frame, {fmt(s3["sequence"]["JF"])}
  with SAM3D merging and {fmt(ms["sequence"]["JF"])} with MastSAM, while the paper protocol, which lets the ID
  change every frame, gives {fmt(fw["paper"]["iou"])} / {fmt(s3["paper"]["iou"])} / {fmt(ms["paper"]["iou"])} IoU: the paper protocol
  measures mask quality, the sequence protocol tracking.
- Unmasked-region initialization off: {fmt(nu["masks_per_frame"], 1)} masks per frame instead of {fmt(ms["masks_per_frame"], 1)}, paper
  IoU {fmt(nu["paper"]["iou"])} instead of {fmt(ms["paper"]["iou"])}, H {fmt(nu["H"])} instead of {fmt(ms["H"])}: fewer, larger masks agree
  more often across frames, which H alone rewards (DESIGN.md's degeneration problem).
"""
    frames = {s: v["frames"] for s, v in res["settings"]["per_sequence"].items()}
    flow_s = sum(v["flow_seconds"] for v in res["settings"]["per_sequence"].values())
    return f"""## DAVIS-2016 (2D video, no depth)

Data: `../shared/data/davis`, the six shared DAVIS-2016 val sequences ({", ".join(f"{s} {n}" for s, n in frames.items())}
frames; {sum(frames.values())} in all{"" if res["settings"]["max_frames"] is None else f", the first {res['settings']['max_frames']} of each"}),
one annotated object per frame. Segmenter and tracker work at {size[0]}x{size[1]}; label maps are
upsampled (nearest pixel) to the annotations' 854x480 and scored there. Correspondences:
{res["backends"]["matches"]} (the documented 2D fallback; no MASt3R weights here), computed once per
sequence ({flow_s:.0f} s in all) and shared by MastSAM, SAM3D and H. Segmenter: {res["backends"]["segmenter"]}.
Seed {res["settings"]["seed"]}. Run time of the DAVIS part: {seconds / 60:.1f} min.

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


def setting_name(key: str) -> str:
    seg, noise = SETTINGS[key]
    if seg == "geometric":
        return "geometric segmenter (3D object candidates, the default on RGB-D scans)"
    return (
        "classical segmenter"
        if seg == "classical"
        else f"simulated from ground truth, noise {noise}"
    )


def line_plot(
    path: Path,
    xs: list[float],
    series: dict[str, list[float]],
    *,
    title: str,
    ylabel: str,
    xlabel: str,
) -> None:
    """One line per series over xs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    for name, vals in series.items():
        ax.plot(
            xs,
            [np.nan if v is None else v for v in vals],
            marker="o",
            label=name,
            linestyle="--" if name == "oracle" else "-",
            color="black" if name == "oracle" else None,
        )
    ax.set_xticks(xs)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=2)
    _save_figure(fig, path)


def method_table(res: dict) -> str:
    per = res["per_method"]
    rows = [
        [
            f"`{m}`" if m != "oracle" else "*oracle association (reference)*",
            fmt(per[m]["AP"]),
            fmt(per[m]["AP50"]),
            fmt(per[m]["AP25"]),
            str(per[m]["num_pred"]),
            fmt(per[m].get("ARI")),
            fmt(per[m]["H"]),
            fmt(per[m]["pairwise"]),
            str(per[m]["ids"]),
            fmt(per[m]["masks_per_frame"], 1),
            fmt(per[m]["seconds"], 0),
        ]
        for m in res["methods"]
    ]
    return md_table(
        [
            "method",
            "AP",
            "AP50",
            "AP25",
            "predictions >= 100 vertices",
            "cross-view ARI",
            "H",
            "pairwise",
            "IDs",
            "masks/frame",
            "s",
        ],
        rows,
    )


def scannet_section(
    title: str, runs: dict[str, dict], plots: Path, *, slug: str, seconds: float
) -> str:
    """One scan: the AP50 matrix methods x settings, the AP50-against-noise plot, one full table per setting."""
    keys = list(runs)
    first = runs[keys[0]]
    methods = first["methods"]
    st = first["settings"]
    fn = st["frame_names"]
    names = ", ".join(fn) if len(fn) <= 5 else f"{', '.join(fn[:3])}, ..., {fn[-1]}"
    matrix = md_table(
        ["method"] + [setting_name(k) for k in keys],
        [
            [f"`{m}`" if m != "oracle" else "*oracle association (reference)*"]
            + [fmt(runs[k]["per_method"][m]["AP50"]) for k in keys]
            for m in methods
        ],
    )
    sim = [k for k in keys if SETTINGS[k][0] == "simulated"]
    plot = ""
    if len(sim) >= 2:
        xs = [SETTINGS[k][1] for k in sim]
        line_plot(
            plots / f"{slug}_ap50_noise.png",
            xs,
            {m: [runs[k]["per_method"][m]["AP50"] for k in sim] for m in methods},
            title=f"{title.split(' (')[0]}: AP50 against noise (masks simulated from GT, not SAM)",
            ylabel="AP50",
            xlabel="noise of the simulated segmenter (p_split = noise, p_merge = noise/2, ...)",
        )
        plot = f"\n![AP50 against noise, {title}](docs/eval/{slug}_ap50_noise.png)\n"
    tables = []
    for k in keys:
        r = runs[k]
        sim_note = ""
        if r.get("simulated"):
            e = r["simulated"]["effective"]
            c = r["simulated"]["config"]
            sim_note = (
                f" **Simulated from ground truth, not SAM**: p_split {e['p_split']}, p_merge {e['p_merge']}, "
                f"p_miss {e['p_miss']} (objects under {c['min_object_px']} px), jitter {e['jitter_px']} px, seed {c['seed']}."
            )
        tables.append(
            f"### {title}, {setting_name(k)}\n\nSegmenter: {r['backends']['segmenter']}.{sim_note}\n\n{method_table(r)}\n"
        )
    gt_note = f"Ground truth: {first['per_method'][methods[0]]['num_gt']} instances of the 18 benchmark classes. "
    size_note = (
        "The working size is half ScanNet's 640x480 depth size (`--scannet-size`): the metric H "
        "costs 5.6x less there, which is what lets every method and setting run on all frames in "
        "one command; `lift3d segment` works at 640x480 (its default run's figures are in "
        "BENCHMARKS.md).\n"
        if tuple(st["size"]) == (320, 240) and slug != "synthetic"
        else ""
    )
    skipped = [m for m in SCANNET_SKIP if m not in methods]
    skipped_note = (
        f"Not run on this scan: {', '.join(f'`{m}`' for m in skipped)} (the unmasked-init "
        "ablation; DAVIS has it, and on a scan it would cost a second tracking per setting).\n"
        if skipped
        else ""
    )
    byocl_note = ""
    if "byocl" in methods:
        rows = {
            json.dumps({k2: runs[k]["per_method"]["byocl"][k2] for k2 in ("AP", "AP25", "H")})
            for k in keys
        }
        if len(rows) == 1 and len(keys) > 1:
            byocl_note = (
                "`byocl`'s rows are the same in every setting: without SAM weights its stand-in "
                "feature (colour + position) does not depend on the segmenter's masks.\n"
            )
    best = []
    for k in keys:
        per = runs[k]["per_method"]
        cand = [m for m in methods if m != "oracle"]
        top = max(per[m]["AP50"] for m in cand)
        best.append(
            f"{setting_name(k).split(' (')[0]}: "
            + " / ".join(f"`{m}`" for m in cand if per[m]["AP50"] == top)
            + f" {fmt(top)}"
            + (f" (oracle {fmt(per['oracle']['AP50'])})" if "oracle" in per else "")
        )
    best_note = "Best AP50 per setting, oracle aside: " + "; ".join(best) + "."
    return f"""## {title} (3D instances on the mesh vertices)

Data: `{first["root"]}`, {"every frame" if st["frames"] is None else f"frames `{st['frames']}`"} of the
{st["frames_in_scan"]} frames: {st["frames_used"]} frames ({names}), at {st["size"][0]}x{st["size"][1]}.
Geometry: {first["backends"]["geometry"]}; MastSAM's correspondences: {first["backends"]["matches"]}.
SAM3D and MaskClustering voxel {st["sam3d_voxel"]} m. Seed {st["seed"]}. Run time of this scan, all settings: {seconds / 60:.1f} min.
{size_note}{skipped_note}{byocl_note}
{gt_note}Every method's label maps are voted onto the {first["backends"]["points"]} as `lift3d segment`
does, exported in the ScanNet benchmark format, read back and scored class-agnostic (AP over IoU
0.5:0.95, AP50, AP25). Cross-view ARI: the adjusted Rand index of the predicted IDs against the
per-view GT objects (walls and floor included) over all views' pixels pooled, so an ID that
changes between views counts as a split. H and pairwise: DESIGN.md's metric (eps {st["eps"]} m).
The *oracle association* row is the same framewise masks with GT-consistent IDs: the distance of
a method to it is what its association loses.

AP50, methods x segmenter settings (the columns marked *simulated from ground truth* are
simulations, not SAM):

{matrix}

{best_note}
{plot}
""" + "\n".join(tables)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--davis", type=Path, default=DATA / "davis")
    ap.add_argument("--davis-size", type=parse_size, default=(427, 240))
    ap.add_argument("--davis-max-frames", type=int, default=None)
    ap.add_argument(
        "--skip-davis", action="store_true", help="keep the DAVIS results already in --out"
    )
    ap.add_argument("--scannet", type=Path, default=DATA / "scannet" / "scene0000_00")
    ap.add_argument(
        "--scannet-frames",
        default=None,
        help="START:STOP:STEP of scene0000_00 (default: every frame)",
    )
    ap.add_argument(
        "--settings",
        default=",".join(DEFAULT_SETTINGS),
        help=f"comma-separated subset of {', '.join(SETTINGS)} (default: {', '.join(DEFAULT_SETTINGS)})",
    )
    ap.add_argument(
        "--scannet-size",
        type=parse_size,
        default=(320, 240),
        help="working size WxH of the scans (default 320x240, half ScanNet's depth size: the "
        "metric H takes 5.6x less time than at 640x480 on scene0000_00's 300 frames)",
    )
    ap.add_argument(
        "--scannet-methods",
        default=None,
        help="comma-separated 3D methods (default: every one but " + ", ".join(SCANNET_SKIP) + ")",
    )
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument(
        "--no-pairwise",
        action="store_true",
        help="skip H's pairwise variant (most of the metric's time)",
    )
    ap.add_argument("--no-scannet", action="store_true", help="the synthetic scan only")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "eval")
    ap.add_argument("--eval-md", type=Path, default=REPO / "EVAL.md")
    ap.add_argument("--plots", type=Path, default=REPO / "docs" / "eval")
    ap.add_argument("--date", default=date.today().isoformat())
    ap.add_argument(
        "--reuse", action="store_true", help="rebuild EVAL.md from the results.json files in --out"
    )
    args = ap.parse_args()
    settings = [k.strip() for k in args.settings.split(",") if k.strip()]
    bad = [k for k in settings if k not in SETTINGS]
    if bad:
        ap.error(f"--settings: unknown {', '.join(bad)}; choose from {', '.join(SETTINGS)}")

    import logging

    from lift3d.cli import EvalDavis
    from lift3d.config import SegmenterConfig
    from lift3d.consistency.simulated import SimulatedConfig
    from lift3d.evaluation import METHODS, default_scannet_methods, run_davis_eval, run_scannet_eval

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("numba").setLevel(logging.WARNING)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    davis_out = args.out / "davis"
    timing_path = args.out / "eval_all.json"
    scans: dict[str, Path] = {}
    if not args.no_scannet:
        scans["scene0000_00"] = args.scannet
    if not args.no_synthetic:
        scans["synthetic"] = args.out / "synthetic" / "scene0999_00"
    scannet: dict[str, dict[str, dict]] = {}
    if args.reuse:
        timing = json.loads(timing_path.read_text())
        for scan in timing["scans"]:
            scannet[scan] = {
                k: json.loads((args.out / "scannet" / scan / k / "results.json").read_text())
                for k in timing["settings"]
            }
    else:
        timing = {"scans": list(scans), "settings": settings, "scan_s": {}}
        scan_methods = (
            [m for m in default_scannet_methods() if m not in SCANNET_SKIP]
            if args.scannet_methods is None
            else [m.strip() for m in args.scannet_methods.split(",") if m.strip()]
        )
        if not args.skip_davis:
            run_davis_eval(
                EvalDavis(
                    root=args.davis,
                    out=davis_out,
                    methods=METHODS,
                    max_frames=args.davis_max_frames,
                ),
                size=args.davis_size,
            )
            timing["davis_s"] = time.perf_counter() - t0
        for scan, path in scans.items():
            t = time.perf_counter()
            if scan == "synthetic" and not (path / "scene0999_00.aggregation.json").is_file():
                from lift3d.recon.synthetic import make_synthetic_scene

                make_synthetic_scene(path, n_frames=24, size=(320, 240))
            scannet[scan] = {}
            for k in settings:
                seg, noise = SETTINGS[k]
                scannet[scan][k] = run_scannet_eval(
                    path,
                    out=args.out / "scannet" / scan / k,
                    methods=scan_methods,
                    segmenter=SegmenterConfig(name=seg)
                    if noise is None
                    else SegmenterConfig(name=seg, simulated=SimulatedConfig(noise=noise)),
                    frames=args.scannet_frames if scan == "scene0000_00" else None,
                    size=args.scannet_size if scan == "scene0000_00" else None,
                    pairwise=not args.no_pairwise,
                )
            timing["scan_s"][scan] = time.perf_counter() - t
        timing.update(
            total_s=time.perf_counter() - t0, load_start=load0, load_end=os.getloadavg()[0]
        )
        args.out.mkdir(parents=True, exist_ok=True)
        timing_path.write_text(json.dumps(timing, indent=1))
    davis = (
        json.loads((davis_out / "results.json").read_text())
        if (davis_out / "results.json").is_file()
        else None
    )
    total, load0, load1 = timing["total_s"], timing["load_start"], timing["load_end"]
    scan_methods = next(iter(next(iter(scannet.values())).values()))["methods"] if scannet else []
    methods = "\n".join(
        f"- `{m}`: {METHOD_NOTES[m]}." for m in dict.fromkeys([*METHODS, *scan_methods])
    )
    davis_text = (
        ""
        if davis is None
        else davis_section(
            davis,
            args.plots,
            size=tuple(davis["settings"]["size"])
            if isinstance(davis["settings"]["size"], list)
            else tuple(args.davis_size),
            seconds=timing.get("davis_s", 0.0),
        )
    )
    titles = {
        "scene0000_00": "ScanNet scene0000_00",
        "synthetic": "Synthetic scan (`lift3d synth`, 24 views, exact GT)",
    }
    scan_text = "\n".join(
        scannet_section(titles[s], runs, args.plots, slug=s, seconds=timing["scan_s"].get(s, 0.0))
        for s, runs in scannet.items()
    )
    parts = ", ".join(
        [
            *(f"{titles[s].split(' (')[0]} {timing['scan_s'][s] / 60:.1f} min" for s in scannet),
            *([f"DAVIS {timing['davis_s'] / 60:.1f} min"] if "davis_s" in timing else []),
        ]
    )
    text = f"""# Evaluation: MastSAM beside its baselines, on DAVIS, ScanNet and the synthetic scan

Date: {args.date}. Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), no GPU,
Python {platform.python_version()}; shared with other work (1-minute load average {load0:.2f} at the
start, {load1:.2f} at the end). One command, {total / 60:.0f} min ({parts}){"" if not args.reuse else "; this text was regenerated from its saved results with `--reuse`"}:

```
.venv/bin/python scripts/eval_all.py --date {args.date}
```

**No number below is SAM's.** No SAM checkpoint was available on this machine. Three segmenters
made the masks, and every table says which:

- the weight-free **classical segmenter** (`lift3d.consistency.classical`, DAVIS): superpixels
  merged by colour, per image: the default of `lift3d segment` on video and photos without geometry;
- the weight-free **geometric segmenter** (`lift3d.consistency.geometric`, the scans): 3D object
  candidates, the scan's superpoints merged across convex junctions and by colour with floor and
  walls held out, each view's masks the candidates it sees: the default of `lift3d segment` on
  RGB-D scans;
- masks **simulated from ground truth** (`--segmenter simulated`, `lift3d.consistency.simulated`),
  on the scans with instance GT only: each view's GT objects (walls and floor included), found
  through its pointmap, with SAM's failure simulated, *changing granularity*: per view and seeded,
  an object is split into 2-3 pieces along its mesh segments (p_split = noise), merged with a
  touching object (p_merge = noise / 2), missed when small (p_miss = noise), its boundary moved by
  up to round(10 noise) px. At noise 0 the masks are the GT objects. These rows are simulations,
  not SAM, and say how each association copes with SAM-like masks, not what SAM would score.

What the tables compare is the *association* of one segmenter's masks: every method starts from
the same masks on the same frames, and the *oracle association* line gives the same masks
GT-consistent IDs, so each method's distance to perfect association reads directly.

Methods (`lift3d.evaluation.SCANNET_METHODS` on the scans; DAVIS, without depth, has those of
`lift3d.evaluation.METHODS`):

{methods}

SAM3D and MaskClustering here are our reimplementations of their association steps
(`lift3d.consistency.baselines`, `lift3d.consistency.maskclustering`). Outputs (label maps, ScanNet
exports, `results.json`) are under `{args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}`.

{davis_text}
{scan_text}
## Not measured here

- SAM (any size) as the segmenter: no checkpoint on this machine. MASt3R correspondences for
  DAVIS: no weights either; optical flow stands in. BYOCL therefore clusters its documented
  stand-in feature, not SAM's encoder latent: its rows are not the paper's BYOCL numbers.
"""
    tmp = args.eval_md.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, args.eval_md)
    print(f"wrote {args.eval_md} and the plots in {args.plots} ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
