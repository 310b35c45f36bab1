"""The metric H before and after a change of its code, in one run: the same H and pairwise, to the bit?

Measures two implementations on the same label maps: the code of a base commit (default: where
this branch left main, `git merge-base HEAD main`), exported with `git archive` into a temporary
folder and imported from there, and the working tree's. Each case runs in its own process, which
imports `lift3d`, `lift3d.consistency`, `lift3d.recon` and `lift3d.viewers` from the tree it is
given (a path finder in place of the editable install's, mapping them as it does). A first
process runs the case on two frames, so numba compiles and caches the kernels in that tree; the
measured process does the same (loading them), resets its peak RSS (`/proc/self/clear_refs`)
and runs the call:

- `cli`: what `lift3d metric --scene S --masks M` runs (`run_metric`: views streamed from disk,
  H and pairwise, 2M-point tiles);
- `arrays`: `consistency_score` of the pointmaps and label maps held in memory (H and pairwise).

Labels: each valid depth pixel takes the ScanNet GT instance of the nearest mesh vertex within
5 cm, as `bench_metric.py` makes them, on the first --max-frames frames.

    .venv/bin/python scripts/bench_metric_paths.py --scene ../shared/data/scannet/scene0000_00 \\
        --max-frames 20 [--base REV] [--cases cli arrays] [--repeat 1] [--json out.json]

Prints, per run: H and pairwise (repr, every bit), wall seconds and peak RSS of the measured call
(the process's imports included); then whether H, pairwise and the per-frame means of every run
are identical, and the ratios new/base of the fastest run and of the highest peak (with
--repeat R, each case runs R times per tree, interleaved in alternating order).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SCENE = ROOT / ".." / "shared" / "data" / "scannet" / "scene0000_00"

# The child: import lift3d from TREE, run the case on two frames (`warm`: only that, so numba
# caches the kernels in TREE), then reset the peak RSS and run the case, measured.
_CHILD = r'''
import importlib.machinery, importlib.util, json, sys, time
from pathlib import Path

tree, case, scene, masks, eps, names_file, out_file, warm = sys.argv[1:9]
eps = float(eps)
MAPPING = {"lift3d": "lift3d", "lift3d.consistency": "consistency", "lift3d.recon": "recon",
           "lift3d.viewers": "viewers"}


class TreeFinder:
    """`lift3d` and its three stage packages from `tree`, as the editable install maps them."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname in MAPPING:
            init = Path(tree) / MAPPING[fullname] / "__init__.py"
            return importlib.util.spec_from_file_location(fullname, init,
                                                          submodule_search_locations=[str(init.parent)])
        parent = fullname.rpartition(".")[0]
        if parent == "lift3d" or parent.startswith("lift3d."):
            # below a package of the tree
            return importlib.machinery.PathFinder.find_spec(fullname, sys.modules[parent].__path__)
        return None


# the tree alone provides lift3d: the editable install's finder (the checkout's) is taken out
sys.meta_path[:] = [TreeFinder] + [f for f in sys.meta_path
                                    if not getattr(f, "__module__", "").startswith("__editable__")]
import numpy as np
import lift3d

assert Path(lift3d.__file__).resolve().is_relative_to(Path(tree).resolve()), lift3d.__file__
new = (Path(tree) / "lift3d" / "metric_run.py").is_file()  # the API after the metric became one path
names = json.loads(Path(names_file).read_text())


def arrays_of(scene_path, masks_dir):
    try:  # label maps moved to lift3d.io with the shared I/O module
        from lift3d.io import read_label_map
    except ImportError:
        from lift3d.consistency.labelmaps import read_label_map
    from lift3d.recon import load_scene

    sc = load_scene(scene_path)
    sc = sc.subset([sc.frame_names.index(n) for n in names])
    pm = np.stack([f.pointmap for f in sc])
    valid = np.stack([f.valid for f in sc])
    labels = np.stack([read_label_map(Path(masks_dir) / f"{n}.png") for n in names])
    return pm, valid, labels


def score_arrays(pm, valid, labels, eps):
    if new:
        from lift3d.consistency.metric import ArrayFrames, MetricConfig, consistency_score

        r = consistency_score(ArrayFrames(pm, valid, labels), config=MetricConfig(eps=eps))
    else:
        from lift3d.consistency.metric import consistency_score

        r = consistency_score(pm, valid, labels, eps=eps)
    return r.to_json()


def run_cli(eps):
    if new:
        from lift3d.consistency.metric import MetricConfig
        from lift3d.metric_run import run_metric

        return run_metric(scene, masks, config=MetricConfig(eps=eps), frame_names=names, out_json=out_file)
    from lift3d.consistency.metric import run_metric

    return run_metric(scene, masks, eps=eps, frame_names=names, out_json=out_file)


# the same case on two frames: in the first process numba compiles (and caches) every kernel it
# uses; in the measured one it loads them, outside the measurement
all_names, names = names, names[:2]
if case == "arrays":
    score_arrays(*arrays_of(scene, masks), eps)
else:
    run_cli(eps)
if warm == "warm":
    sys.exit(0)
names = all_names
if case == "arrays":
    inputs = arrays_of(scene, masks)
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # VmHWM := VmRSS: the peak of what follows
t = time.perf_counter()
out = score_arrays(*inputs, eps) if case == "arrays" else run_cli(eps)
wall = time.perf_counter() - t
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
kib = lambda k: int(status[k].split()[0])
res = {"H": out["H"], "pairwise": out["pairwise"], "per_frame": out["per_frame"], "pixels": out["pixels"],
       "wall_s": wall, "peak_rss_gib": kib("VmHWM") / 2**20}
print("RESULT " + json.dumps(res))
'''


def make_masks(scene_dir: Path, n_frames: int, masks: Path) -> list[str]:
    """GT-instance label maps of the first n_frames frames (`bench_metric.load_with_gt_labels`)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_metric import load_with_gt_labels, write_masks

    scene, _, _, labels, _ = load_with_gt_labels(scene_dir, n_frames)
    names = list(scene.frame_names[: len(labels)])
    write_masks(masks, names, labels)
    return names


def export(rev: str, dest: Path) -> Path:
    """`git archive REV` of this repository, unpacked into dest."""
    dest.mkdir(parents=True)
    archive = dest.with_suffix(".tar")
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), rev], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    archive.unlink()
    return dest


def run_case(
    tree: Path, case: str, scene: Path, masks: Path, eps: float, names_file: Path, work: Path
) -> dict:
    args = [
        sys.executable,
        "-c",
        _CHILD,
        str(tree),
        case,
        str(scene),
        str(masks),
        str(eps),
        str(names_file),
        str(work / f"{tree.name}-{case}.json"),
    ]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    warm = subprocess.run(args + ["warm"], capture_output=True, text=True, env=env)
    if warm.returncode:
        raise SystemExit(f"{tree.name} {case}: warm-up failed\n{warm.stderr[-3000:]}")
    proc = subprocess.run(args + ["measure"], capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{tree.name} {case} failed ({proc.returncode})\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", type=Path, default=DEFAULT_SCENE)
    ap.add_argument("--max-frames", type=int, default=20, help="the first N frames (default 20)")
    ap.add_argument("--eps", type=float, default=0.02)
    ap.add_argument(
        "--base", default=None, help="base revision (default: git merge-base HEAD main)"
    )
    ap.add_argument("--cases", nargs="+", choices=("cli", "arrays"), default=["cli", "arrays"])
    ap.add_argument(
        "--repeat", type=int, default=1, help="runs of each case and tree, interleaved (default 1)"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    base = (
        args.base
        or subprocess.run(
            ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    rows: dict = {
        "base": base,
        "scene": str(args.scene),
        "frames": args.max_frames,
        "eps": args.eps,
        "cases": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-metric-paths-") as tmp:
        tmp = Path(tmp)
        masks = tmp / "masks"
        names = make_masks(args.scene.resolve(), args.max_frames, masks)
        names_file = tmp / "names.json"
        names_file.write_text(json.dumps(names))
        trees = {"base": export(base, tmp / "base"), "new": ROOT}
        print(
            f"{len(names)} frames of {args.scene.name}, eps {args.eps} m; base {base[:10]} vs the working tree",
            flush=True,
        )
        for case in args.cases:
            runs = {"base": [], "new": []}
            for k in range(
                args.repeat
            ):  # interleaved, the order alternating: a shared machine's load
                for which in ("base", "new") if k % 2 == 0 else ("new", "base"):
                    r = run_case(
                        trees[which], case, args.scene.resolve(), masks, args.eps, names_file, tmp
                    )
                    runs[which].append(r)
                    print(
                        f"{case:6s} {which:4s}  H = {r['H']!r}  pairwise = {r['pairwise']!r}  pixels {r['pixels']:,}  "
                        f"{r['wall_s']:.2f} s  peak RSS {r['peak_rss_gib']:.3f} GiB",
                        flush=True,
                    )
            got = {
                w: {
                    **rs[0],
                    "wall_s": min(r["wall_s"] for r in rs),
                    "peak_rss_gib": max(r["peak_rss_gib"] for r in rs),
                    "runs": [
                        {"wall_s": r["wall_s"], "peak_rss_gib": r["peak_rss_gib"]} for r in rs
                    ],
                }
                for w, rs in runs.items()
            }
            a, b = got["base"], got["new"]
            same = all(
                r[k] == a[k]
                for rs in runs.values()
                for r in rs
                for k in ("H", "pairwise", "per_frame")
            )
            print(
                f"{case:6s} bit-identical (H, pairwise, per-frame means): {same}; fastest new/base "
                f"{b['wall_s'] / a['wall_s']:.2f}x, highest peak RSS new/base {b['peak_rss_gib'] / a['peak_rss_gib']:.2f}x",
                flush=True,
            )
            rows["cases"][case] = {"base": a, "new": b, "identical": same}
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if not all(c["identical"] for c in rows["cases"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
