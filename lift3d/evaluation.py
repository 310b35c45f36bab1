"""The evaluation harness: every method on DAVIS (2D) and on a ScanNet scan (3D), like for like.

Methods (`METHODS`), all from one segmenter so that only the association differs:

- `framewise`: the segmenter frame by frame, IDs independent per frame (`segment_framewise`);
- `sam3d`: the framewise masks associated by SAM3D's bidirectional hierarchical merging
  (`lift3d.consistency.baselines`): in 3D on ScanNet, through consecutive-frame optical flow on
  DAVIS (no depth);
- `mastsam-no-unmasked`: MastSAM with unmasked-region initialization off (`TrackerConfig
  .unmasked_init=False`, the paper's Table II ablation);
- `mastsam`: MastSAM.

`run_davis_eval` (`lift3d eval davis`): per sequence and method, label maps written as 16-bit PNGs
at the annotations' size under `out/<method>/<seq>/`, then read back and scored by
`evaluate_davis_sequence`: the MastSAM paper's protocol (best-IoU mask per frame), the sequence
protocol (one ID per sequence) with DAVIS J and F, and the consecutive-frame consistency H
through optical-flow correspondences (DAVIS has no depth: OpenCV DIS flow, forward-backward
checked, is the documented 2D fallback of the correspondence provider).

`run_scannet_eval`: per method, label maps of a frame subset of a ScanNet scan, voted onto the
mesh vertices as `lift3d segment` does (`lift_to_points`), exported in the ScanNet benchmark
format, read back and scored class-agnostic (AP, AP50, AP25; `lift3d.instance_eval`), with the
metric H on the views' pointmaps when `lift3d.consistency.metric` is available.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lift3d.errors import InputError

if TYPE_CHECKING:
    from lift3d.config import SegmenterConfig
    from lift3d.consistency.segmenter import Segmenter
    from lift3d.recon.scene import Scene

logger = logging.getLogger(__name__)

METHODS = ("framewise", "sam3d", "mastsam-no-unmasked", "mastsam", "byocl")

#: the 3D evaluation's methods: those of `METHODS`, MaskClustering's view consensus (needs 3D),
#: MastSAM with the multi-view merging of its instances (`lift3d.consistency.merging`, when that
#: module is present) and the oracle association (the framewise masks with GT-consistent IDs: the
#: reference line of perfect association, needs per-view GT)
SCANNET_METHODS = (
    "framewise",
    "sam3d",
    "maskclustering",
    "mastsam-no-unmasked",
    "mastsam",
    "mastsam-merged",
    "byocl",
    "oracle",
)


def merging_available() -> bool:
    """Whether `lift3d.consistency.merging` (multi-view merging of MastSAM's IDs) is installed."""
    import importlib.util

    return importlib.util.find_spec("lift3d.consistency.merging") is not None


def default_scannet_methods() -> tuple[str, ...]:
    """Every 3D method that can run in this build (`mastsam-merged` only with its module)."""
    return tuple(m for m in SCANNET_METHODS if m != "mastsam-merged" or merging_available())


_PAPER_KEYS = ("iou", "f1", "precision", "recall")
_SEQUENCE_KEYS = ("J", "J_recall", "J_decay", "F", "F_recall", "F_decay", "JF")


def check_methods(methods: Sequence[str], allowed: Sequence[str] = METHODS) -> list[str]:
    """The methods asked for, in `allowed` order; an error naming an unknown one."""
    unknown = [m for m in methods if m not in allowed]
    if unknown:
        raise InputError(
            None, f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(allowed)}"
        )
    if not methods:
        raise InputError(None, "no method to evaluate")
    return [m for m in allowed if m in methods]


def method_labels(
    method: str,
    scene: Scene,
    segmenter: Segmenter,
    *,
    merge,
    framewise: np.ndarray | None = None,  # [N, H, W] already computed
    mastsam: np.ndarray | None = None,  # [N, H, W] already computed
    cluster=None,
    merge_views=None,
    gt_views: np.ndarray | None = None,  # [N, H, W] GT object per pixel, 0 = none
    tracker=None,
    seed: int = 0,
) -> np.ndarray:  # [N, H, W] int32
    """Label maps of every frame of `scene` by one method.

    Args:
        method: one of `SCANNET_METHODS` (`METHODS` in 2D).
        scene: the scene (with a correspondence provider for the MastSAM methods).
        segmenter: the 2D segmenter.
        merge: `labels -> labels`, SAM3D's merging of the framewise maps for this scene (3D or
            through flow).
        framewise: the framewise maps when already computed (`sam3d`, `maskclustering` and
            `oracle` start from them).
        mastsam: MastSAM's maps when already computed (`mastsam-merged` starts from them).
        cluster: `labels -> labels`, MaskClustering's view consensus for this scene (3D only).
        merge_views: `labels -> labels`, the multi-view merging of MastSAM's IDs for
            `mastsam-merged` (the hook of `lift3d.consistency.merging`).
        gt_views: per-view GT objects, for `oracle`.
        tracker: base `TrackerConfig` (default: the defaults).
        seed: K-Means and ID-permutation seed.
    """
    from lift3d.consistency.tracker import TrackerConfig, segment_framewise, track_scene

    if method in ("framewise", "sam3d", "maskclustering", "oracle"):
        if framewise is None:
            framewise = np.stack([lab for _, lab in segment_framewise(scene, segmenter, seed=seed)])
        if method == "framewise":
            return framewise
        if method == "sam3d":
            return merge(framewise)
        if method == "maskclustering":
            if cluster is None:
                raise InputError(
                    None, "maskclustering needs 3D (depth + poses): not available here"
                )
            return cluster(framewise)
        if gt_views is None:
            raise InputError(
                None, "the oracle association needs per-view instance GT (a ScanNet-layout scan)"
            )
        from lift3d.consistency.baselines import oracle_association

        return oracle_association(framewise, gt_views)
    if method == "byocl":
        from lift3d.consistency.byocl import byocl_labels

        return byocl_labels(scene, segmenter, seed=seed)[0]
    if method == "mastsam-merged":
        if merge_views is None:
            raise InputError(
                None,
                "mastsam-merged needs lift3d.consistency.merging (multi-view merging of "
                "MastSAM's IDs), which this build does not have",
            )
        if mastsam is None:
            mastsam = method_labels(
                "mastsam", scene, segmenter, merge=merge, tracker=tracker, seed=seed
            )
        return merge_views(mastsam)
    if method in ("mastsam", "mastsam-no-unmasked"):
        cfg = replace(tracker or TrackerConfig(), unmasked_init=method == "mastsam")
        return np.stack([lab for _, lab in track_scene(scene, segmenter, cfg, seed=seed)])
    raise InputError(None, f"unknown method {method!r}; choose from {', '.join(SCANNET_METHODS)}")


def byocl_feature_name(segmenter: Segmenter) -> str:
    """The feature BYOCL clusters with this segmenter: its image encoder, or the stand-in."""
    from lift3d.consistency.byocl import STAND_IN

    if callable(getattr(segmenter, "image_features", None)):
        return f"image encoder of {getattr(segmenter, 'name', 'the segmenter')}"
    return STAND_IN


def _mean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def _resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[N, h, w] label maps to (W, H) by nearest pixel centre (half-pixel convention)."""
    W, H = size
    h, w = labels.shape[1:]
    if (w, h) == (W, H):
        return labels
    rows = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
    return labels[:, rows[:, None], cols[None, :]]


def _scale_matches(
    matches, src: tuple[int, int], dst: tuple[int, int]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Correspondences from pixels of a (W, H) `src` image to the same points of a `dst` image."""
    sx, sy = dst[0] / src[0], dst[1] / src[1]
    scale = np.array([sx, sy], np.float32)

    def f(uv):
        return ((np.asarray(uv, np.float32) + 0.5) * scale - 0.5).astype(np.float32)

    return [(f(a), f(b), c) for a, b, c in matches]


# ---------------------------------------------------------------------------------------------
# DAVIS


class _PairMatches:
    """`Scene.match_fn` serving precomputed consecutive-frame flow, computing any other pair."""

    def __init__(self, matches: list, stride: int):
        self._pairs = {(t, t + 1): m for t, m in enumerate(matches)}
        self.stride = stride

    def __call__(self, frame_i, frame_j):
        from lift3d.recon.flow import flow_matches

        m = self._pairs.get((frame_i.index, frame_j.index))
        return (
            m if m is not None else flow_matches(frame_i.image, frame_j.image, stride=self.stride)
        )


def _video_scene(name: str, frames: list[Path], size: tuple[int, int] | None):
    """An image-only scene of the given frame files, decoded once and held in memory."""
    from lift3d.recon.files import read_image
    from lift3d.recon.geometry import make_frame
    from lift3d.recon.images import capped_size, placeholder_intrinsics
    from lift3d.recon.scene import RawFrame, Scene

    images = [read_image(p) for p in frames]
    H0, W0 = images[0].shape[:2]
    for p, im in zip(frames, images):
        if im.shape[:2] != (H0, W0):
            raise InputError(
                p, f"frame is {im.shape[1]}x{im.shape[0]}, the first frame is {W0}x{H0}"
            )
    size = tuple(size) if size is not None else capped_size((W0, H0))
    K = placeholder_intrinsics((W0, H0))
    loaded = [
        make_frame(RawFrame(name=p.stem, image=im, K=K), i, size)
        for i, (p, im) in enumerate(zip(frames, images))
    ]
    return Scene(
        name=name,
        root=frames[0].parent,
        frame_names=[p.stem for p in frames],
        size=size,
        load_frame=lambda i: loaded[i],
        kind="images",
        meta={"intrinsics": "placeholder"},
    )


def davis_flow_matches(images: Sequence[np.ndarray], *, stride: int = 4) -> list:
    """Consecutive-frame correspondences (t -> t + 1) of a video by forward-backward-checked DIS flow."""
    from lift3d.recon.flow import flow_matches

    return [flow_matches(images[t], images[t + 1], stride=stride) for t in range(len(images) - 1)]


def read_davis_predictions(
    pred_dir: str | Path, names: Sequence[str], size: tuple[int, int]
) -> np.ndarray:
    """[N, H, W] int32 predicted label maps `pred_dir/<name>.png`, one per annotated frame.

    Raises:
        InputError: the folder or a frame's label map is missing, unreadable, or not (W, H) =
            `size` (the annotations' size); the message names the file.
    """
    from lift3d.io import read_label_map

    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError(pred_dir, "prediction folder not found")
    W, H = size
    maps = []
    for name in names:
        path = pred_dir / f"{name}.png"
        if not path.is_file():
            raise InputError(path, f"no predicted label map for annotated frame {name}")
        m = read_label_map(path)
        if m.shape != (H, W):
            raise InputError(
                path, f"label map is {m.shape[1]}x{m.shape[0]}, the annotation is {W}x{H}"
            )
        maps.append(m)
    return np.stack(maps)


def evaluate_davis_sequence(
    root: str | Path,
    seq: str,
    pred_dir: str | Path,
    *,
    matches: Sequence | None = None,
    max_frames: int | None = None,
    stride: int = 4,
) -> dict:
    """Score one sequence's predicted label maps with every DAVIS protocol.

    Args:
        root: the DAVIS root (`JPEGImages/480p`, `Annotations/480p`).
        seq: the sequence.
        pred_dir: its label maps, `<frame>.png` at the annotations' size.
        matches: consecutive-frame correspondences at the annotations' size for H; default:
            flow computed here on the frames (`davis_flow_matches`).
        max_frames: score the first this many frames only.
        stride: flow sampling when `matches` is not given.

    Returns:
        `frames`, `paper` (iou, f1, precision, recall), `sequence` (id, J, J_recall, J_decay, F,
        F_recall, F_decay, JF), `H` (consecutive-frame consistency, None when undefined), `ids`
        (distinct IDs) and `masks_per_frame` (mean).

    Raises:
        InputError: a missing or malformed prediction (the message names the file).
    """
    from lift3d.consistency.davis import (
        consecutive_consistency,
        paper_protocol,
        read_davis_sequence,
        sequence_protocol,
    )

    frames, gt = read_davis_sequence(root, seq)
    if max_frames is not None:
        frames, gt = frames[:max_frames], gt[:max_frames]
    size = (gt.shape[2], gt.shape[1])
    pred = read_davis_predictions(pred_dir, [f.stem for f in frames], size)
    if matches is None:
        from lift3d.recon.files import read_image

        matches = davis_flow_matches([read_image(f) for f in frames], stride=stride)
    paper = paper_protocol(pred, gt)
    seqp = sequence_protocol(pred, gt)
    h = consecutive_consistency(pred, matches)
    counts = [len(np.unique(p[p > 0])) for p in pred]
    return {
        "frames": len(frames),
        "paper": {k: paper[k] for k in _PAPER_KEYS},
        "sequence": {"id": seqp["id"], **{k: seqp[k] for k in _SEQUENCE_KEYS}},
        "H": None if not math.isfinite(h) else h,
        "ids": int(len(np.unique(pred[pred > 0]))),
        "masks_per_frame": float(np.mean(counts)) if counts else 0.0,
    }


def _davis_means(per_seq: dict[str, dict]) -> dict:
    rows = list(per_seq.values())
    return {
        "sequences": len(rows),
        "frames": int(sum(r["frames"] for r in rows)),
        "paper": {k: _mean([r["paper"][k] for r in rows]) for k in _PAPER_KEYS},
        "sequence": {k: _mean([r["sequence"][k] for r in rows]) for k in _SEQUENCE_KEYS},
        "H": _mean([r["H"] for r in rows]),
        "masks_per_frame": _mean([r["masks_per_frame"] for r in rows]),
        "seconds": float(sum(r.get("seconds", 0.0) for r in rows)),
    }


def run_davis_eval(
    cfg,
    *,
    size: tuple[int, int] | None = None,
    seed: int = 0,
    stride: int = 4,
    verbose: bool = True,
) -> dict:
    """`lift3d eval davis`: every method on every sequence, label maps, scores, results.json.

    Args:
        cfg: the `EvalDavis` options: root, sequences (empty: all), methods, segmenter (a
            `SegmenterConfig`), max_frames (the first this many frames of each sequence), out.
        size: working resolution (W, H) of the segmenter and the tracker; default: the frames'
            size with the long side capped at 640. Label maps are written and scored at the
            annotations' size (nearest-pixel upsampling).
        seed: K-Means and ID-permutation seed.
        stride: flow correspondences every `stride`-th pixel.
        verbose: print the table.

    Returns:
        The results written to `out/results.json`: `per_sequence[method][seq]`,
        `mean[method]` over sequences, `settings`, `backends`, `date`.
    """
    from lift3d.consistency.baselines import sam3d_merge_2d
    from lift3d.consistency.davis import list_davis_sequences, read_davis_sequence
    from lift3d.io import write_json, write_label_map

    root = Path(cfg.root)
    methods = check_methods(cfg.methods)
    seqs = list(cfg.sequences) or list_davis_sequences(root)
    if cfg.max_frames is not None and cfg.max_frames < 2:
        raise InputError(
            None, f"--max-frames must be at least 2 (consecutive pairs), got {cfg.max_frames}"
        )
    if cfg.segmenter.name == "simulated":
        raise InputError(
            None,
            "--segmenter simulated needs a scan's 3D ground truth; DAVIS has none (use it with eval scannet)",
        )
    segmenter = cfg.segmenter.setup()  # no scene: `auto` is classical-2d, as for a video
    seg_name = segmenter.describe()["segmenter"]
    out = Path(cfg.out)
    per_seq: dict[str, dict[str, dict]] = {m: {} for m in methods}
    sizes = {}
    for seq in seqs:
        frames, gt = read_davis_sequence(root, seq)
        if cfg.max_frames is not None:
            frames, gt = frames[: cfg.max_frames], gt[: cfg.max_frames]
        gt_size = (gt.shape[2], gt.shape[1])
        t0 = time.perf_counter()
        scene = _video_scene(seq, frames, size)
        images = [scene[i].image for i in range(len(scene))]
        matches = davis_flow_matches(images, stride=stride)
        scene.match_fn = _PairMatches(matches, stride)
        matches_gt = _scale_matches(matches, scene.size, gt_size)
        flow_s = time.perf_counter() - t0
        sizes[seq] = {
            "frames": len(frames),
            "working_size": list(scene.size),
            "annotation_size": list(gt_size),
            "flow_seconds": round(flow_s, 2),
        }
        framewise = None
        for method in methods:
            t = time.perf_counter()
            labels = method_labels(
                method,
                scene,
                segmenter,
                framewise=framewise,
                seed=seed,
                merge=partial(sam3d_merge_2d, matches=matches, stride=stride),
            )
            if method == "framewise":
                framewise = labels
            seconds = time.perf_counter() - t
            pred_dir = out / method / seq
            for name, lab in zip(scene.frame_names, _resize_labels(labels, gt_size)):
                write_label_map(pred_dir / f"{name}.png", lab)
            res = evaluate_davis_sequence(
                root, seq, pred_dir, matches=matches_gt, max_frames=cfg.max_frames
            )
            res["seconds"] = round(seconds, 2)
            per_seq[method][seq] = res
            logger.info(
                "%s %s: paper IoU %.3f, J&F %.3f, H %s (%.1f s)",
                seq,
                method,
                res["paper"]["iou"],
                res["sequence"]["JF"],
                "n/a" if res["H"] is None else f"{res['H']:.3f}",
                seconds,
            )
    results = {
        "date": datetime.now(UTC).date().isoformat(),
        "root": str(root.resolve()),
        "methods": methods,
        "sequences": seqs,
        "settings": {
            "max_frames": cfg.max_frames,
            "size": list(size) if size else "long side capped at 640",
            "seed": seed,
            "flow_stride": stride,
            "per_sequence": sizes,
        },
        "backends": {
            "segmenter": seg_name,
            "matches": f"optical flow (OpenCV DIS 'medium', forward-backward checked < 1 px, every {stride}th pixel)",
            "geometry": "none (DAVIS has no depth)",
            "byocl_features": byocl_feature_name(segmenter),
        },
        "per_sequence": per_seq,
        "mean": {m: _davis_means(per_seq[m]) for m in methods},
    }
    write_json(out / "results.json", results)
    if verbose:
        print(format_davis_table(results))
        print(f"-> {out / 'results.json'}")
    return results


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"


def format_davis_table(results: dict) -> str:
    """A plain-text table of `run_davis_eval`'s results, one row per method and sequence."""
    head = f"{'method':<20} {'sequence':<14} {'IoU':>6} {'F1':>6} {'prec':>6} {'rec':>6} | {'J':>6} {'F':>6} {'J&F':>6} | {'H':>6}"
    lines = [head, "-" * len(head)]
    for m in results["methods"]:
        rows = [*results["per_sequence"][m].items(), ("mean", results["mean"][m])]
        for seq, r in rows:
            p, s = r["paper"], r["sequence"]
            lines.append(
                f"{m:<20} {seq:<14} {_fmt(p['iou']):>6} {_fmt(p['f1']):>6} {_fmt(p['precision']):>6} {_fmt(p['recall']):>6} | "
                f"{_fmt(s['J']):>6} {_fmt(s['F']):>6} {_fmt(s['JF']):>6} | {_fmt(r['H']):>6}"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# ScanNet


def _consistency_fn():
    """`consistency_score`, or None with the reason when the metric module cannot be imported."""
    try:
        from lift3d.consistency.metric import ArrayFrames, MetricConfig, consistency_score
    except ImportError as e:
        return None, f"H not computed: lift3d.consistency.metric could not be imported ({e})"

    def score(pointmaps, valid, labels, *, eps, pairwise):
        return consistency_score(
            ArrayFrames(pointmaps, valid, labels), config=MetricConfig(eps=eps, pairwise=pairwise)
        )

    return score, None


def run_scannet_eval(
    scene: str | Path,
    *,
    out: str | Path,
    methods: Sequence[str] | None = None,
    segmenter: SegmenterConfig | None = None,
    frames: str | None = None,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
    eps: float = 0.02,
    voxel: float = 0.05,
    seed: int = 0,
    pairwise: bool = True,
    verbose: bool = True,
) -> dict:
    """Every method on one ScanNet scan: label maps, lifting, ScanNet export, AP, H.

    Args:
        scene: the ScanNet scan folder (SensReader export with the GT files beside it).
        out: output folder: `<method>/masks/`, `<method>/scannet/`, `results.json`.
        methods: a subset of `SCANNET_METHODS` (default: `default_scannet_methods()`).
        segmenter: the segmenter of every method, as for `lift3d segment` (default: classical);
            `SegmenterConfig(name="simulated")` simulates masks from the scan's ground truth
            (not SAM), `geometric` gives the object candidates of its default.
        frames: the frame subset as START:STOP:STEP (default: every frame).
        max_frames: at most this many frames, evenly spaced over the subset (`select_frames`).
        size: working resolution (W, H); default: the depth size.
        eps: the metric H's radius (metres).
        voxel: SAM3D's voxel (metres).
        seed: K-Means and ID-permutation seed.
        pairwise: also compute H's pairwise variant (its time grows with the square of the views
            that see one spot: off saves most of the metric's time on long scans).
        verbose: print the table.

    Returns:
        The results written to `out/results.json`: per method AP, AP50, AP25, num_gt,
        num_pred, H and pairwise (None with `H_note` when the metric is unavailable), ARI
        (cross-view adjusted Rand index against the per-view GT objects, walls and floor
        included), ids, masks_per_frame, seconds; plus settings, backends, date.
    """
    from lift3d.consistency.baselines import sam3d_merge
    from lift3d.consistency.maskclustering import maskclustering_merge
    from lift3d.consistency.rand_index import cross_view_ari
    from lift3d.export import read_scannet_instances, write_scannet_instances
    from lift3d.instance_eval import evaluate_instances
    from lift3d.io import write_json, write_label_map
    from lift3d.recon import load_scene
    from lift3d.recon.detect import resolve_scene_path
    from lift3d.recon.scannet.gt import has_instance_gt, load_scannet_gt
    from lift3d.recon.scene import select_frames

    if segmenter is None:
        from lift3d.config import SegmenterConfig

        segmenter = SegmenterConfig(name="classical")
    methods = check_methods(
        default_scannet_methods() if methods is None else methods, SCANNET_METHODS
    )
    scene_dir = resolve_scene_path(scene)
    sc = load_scene(scene_dir, size=size)
    n_all = len(sc)
    sc = select_frames(sc, frames=frames, max_frames=max_frames)
    if not sc.has_geometry:
        raise InputError(scene_dir, "the 3D evaluation needs a scan with depth + poses")
    if sc.mesh_path is None:
        raise InputError(
            scene_dir,
            f"no mesh {sc.name}_vh_clean_2.ply: the ScanNet benchmark scores its vertices",
        )
    out = Path(out)
    from lift3d.recon.scene_points import scene_points

    points = scene_points(sc)  # the mesh's vertices and the scan's own superpoints (segs.json)
    segm = segmenter.setup(scene=sc, points=points)  # as `lift3d segment` builds it on this scan
    seg_name = segm.describe()["segmenter"]
    gt = load_scannet_gt(scene_dir, sc.name)
    xyz = points.xyz
    if len(xyz) != gt.num_vertices:
        raise InputError(
            sc.mesh_path, f"mesh has {len(xyz)} vertices, the GT files {gt.num_vertices}"
        )
    W, H = sc.size
    pointmaps = np.zeros((len(sc), H, W, 3), np.float32)
    valid = np.zeros((len(sc), H, W), bool)
    for i, f in enumerate(sc):
        pointmaps[i], valid[i] = np.nan_to_num(f.pointmap), f.valid
    from lift3d.points import view_visibility

    vis = view_visibility(xyz, (sc[i] for i in range(len(sc))))  # read once, for every method
    candidates = functools.cache(lambda: segmenter.object_candidates(sc, points, segm))
    score_fn, h_note = _consistency_fn()
    gt_views = _gt_views(sc, scene_dir, segm) if has_instance_gt(scene_dir, sc.name) else None

    per_method: dict[str, dict] = {}
    done: dict[str, np.ndarray] = {}
    for method in methods:
        t = time.perf_counter()
        labels = method_labels(
            method,
            sc,
            segm,
            framewise=done.get("framewise"),
            mastsam=done.get("mastsam"),
            seed=seed,
            merge=partial(sam3d_merge, pointmaps=pointmaps, valid=valid, voxel=voxel),
            cluster=partial(maskclustering_merge, pointmaps=pointmaps, valid=valid, voxel=voxel),
            merge_views=_merging_hook(points, vis, pointmaps, valid, getattr(segm, "name", None)),
            gt_views=gt_views,
        )
        if method in ("framewise", "mastsam"):
            done[method] = labels
        seconds = time.perf_counter() - t
        mdir = out / method
        for name, lab in zip(sc.frame_names, labels):
            write_label_map(mdir / "masks" / f"{name}.png", lab)
        t_lift = time.perf_counter()
        lifted = _lift_superpoints(points, vis, labels, candidates)  # as `lift3d segment` lifts
        lift_seconds = time.perf_counter() - t_lift
        written = write_scannet_instances(
            mdir / "scannet", sc.name, lifted.label, lifted.confidence
        )
        masks, conf = read_scannet_instances(mdir / "scannet", sc.name, gt.num_vertices)
        ap = evaluate_instances(gt, masks, conf)
        res = {k: ap[k] for k in ("AP", "AP50", "AP25", "num_gt", "num_pred")}
        res["instances_written"] = len(written)
        res["H"] = res["pairwise"] = None
        res["lift_seconds"] = round(lift_seconds, 2)
        t_metric = time.perf_counter()
        if score_fn is not None:
            metric = score_fn(pointmaps, valid, labels, eps=eps, pairwise=pairwise)
            res["H"], res["pairwise"], res["pixels"] = metric.H, metric.pairwise, metric.pixels
        res["metric_seconds"] = round(time.perf_counter() - t_metric, 2)
        res["ARI"] = None if gt_views is None else cross_view_ari(gt_views, labels)
        res["ids"] = int(len(np.unique(labels[labels > 0])))
        res["masks_per_frame"] = float(np.mean([len(np.unique(lab[lab > 0])) for lab in labels]))
        res["seconds"] = round(seconds, 2)
        per_method[method] = res
        logger.info(
            "%s %s: AP %.3f AP50 %.3f AP25 %.3f H %s (%.1f s)",
            sc.name,
            method,
            res["AP"],
            res["AP50"],
            res["AP25"],
            "n/a" if res["H"] is None else f"{res['H']:.3f}",
            seconds,
        )
    results = {
        "date": datetime.now(UTC).date().isoformat(),
        "scene": sc.name,
        "root": str(scene_dir.resolve()),
        "methods": methods,
        "settings": {
            "frames": frames,
            "max_frames": max_frames,
            "frames_used": len(sc),
            "frames_in_scan": n_all,
            "size": list(sc.size),
            "eps": eps,
            "sam3d_voxel": voxel,
            "seed": seed,
            "frame_names": sc.frame_names,
        },
        "segmenter": segmenter.name,
        "simulated": segm.describe() if segmenter.name == "simulated" else None,
        "backends": {
            "segmenter": seg_name,
            "geometry": "depth+poses",
            "matches": "reprojection (depth + poses)",
            "points": f"mesh vertices of {sc.mesh_path.name} ({len(xyz)})",
            "byocl_features": byocl_feature_name(segm),
        },
        "per_method": per_method,
    }
    if h_note:
        results["H_note"] = h_note
    write_json(out / "results.json", results)
    if verbose:
        print(format_scannet_table(results))
        print(f"-> {out / 'results.json'}")
    return results


def _gt_views(scene, scene_dir: Path, segmenter) -> np.ndarray:  # [N, H, W] int32
    """The GT object of every pixel of every view (walls, floor included), through the views'
    pointmaps: the simulated segmenter's own lookup (cross-view ARI, the oracle association)."""
    from lift3d.consistency.simulated import SimulatedConfig, SimulatedSegmenter

    sim = (
        segmenter
        if isinstance(segmenter, SimulatedSegmenter)
        else SimulatedSegmenter.from_scan(scene_dir, scene.name, SimulatedConfig(noise=0.0))
    )
    return np.stack([sim.view_objects(f.image, geometry=f.pointmap) for f in scene]).astype(
        np.int32
    )


def _lift_superpoints(points, vis, labels: np.ndarray, candidates):
    """Votes of [N, H, W] label maps pooled per superpoint, unseen vertices filled along the mesh,
    unseen object candidates added, as `lift3d segment` lifts with its defaults (`--vote
    superpoints`); `vis` is the views' `view_visibility` and `candidates` the scan's object
    candidates (a callable), both made once for every method."""
    from lift3d.config import LiftingConfig
    from lift3d.points import (
        complete_labels,
        lift_to_superpoints,
        superpoint_view_table,
        vote_superpoints,
    )

    config = LiftingConfig()
    table = superpoint_view_table(
        points.xyz, points.superpoints.index, None, iter(labels), visibility=vis
    )
    votes = vote_superpoints(
        table,
        points.superpoints.count,
        max_unlabeled_share=config.unlabeled_share,
        mask_size_weight=config.mask_size_weight,
    )
    lifted = lift_to_superpoints(points.superpoints.index, votes)
    lifted, _ = complete_labels(
        lifted,
        points.xyz,
        points.faces,
        fill_radius=config.fill_radius,
        candidates=candidates if config.unseen_objects else None,
        first_id=1 + int(np.max(labels, initial=0)),
    )
    return lifted


def _merging_hook(points, vis, pointmaps: np.ndarray, valid: np.ndarray, segmenter_name):
    """`labels [N, H, W] -> labels` for `mastsam-merged`: `lift3d.consistency.merging`'s view
    consensus over the scan's superpoints, as `lift3d segment` merges (its default)."""
    if not merging_available():
        return None
    from lift3d.consistency.merging import MergeConfig, cluster_views, merge_instances
    from lift3d.points import superpoint_view_table

    config = MergeConfig().resolve(segmenter_name)  # as `lift3d segment` resolves it

    def merge(labels: np.ndarray) -> np.ndarray:
        if config.view_clustering and len(labels) >= 2:
            clusters = cluster_views(zip(pointmaps, valid, labels), config=config)
            labels = np.stack([clusters.apply(i, lab) for i, lab in enumerate(labels)])
        table = superpoint_view_table(
            points.xyz, points.superpoints.index, None, iter(labels), visibility=vis
        )
        return merge_instances(
            table, points.superpoints.sizes(), points.adjacency, config=config
        ).apply(labels)

    return merge


def format_scannet_table(results: dict) -> str:
    """A plain-text table of `run_scannet_eval`'s results."""
    head = f"{'method':<20} {'AP':>6} {'AP50':>6} {'AP25':>6} {'pred':>5} | {'ARI':>6} {'H':>6} {'pairw.':>6} {'IDs':>5}"
    lines = [f"segmenter: {results['backends']['segmenter']}", head, "-" * len(head)]
    for m in results["methods"]:
        r = results["per_method"][m]
        lines.append(
            f"{m:<20} {_fmt(r['AP']):>6} {_fmt(r['AP50']):>6} {_fmt(r['AP25']):>6} {r['num_pred']:>5} | "
            f"{_fmt(r.get('ARI')):>6} {_fmt(r['H']):>6} {_fmt(r['pairwise']):>6} {r['ids']:>5}"
        )
    if results.get("H_note"):
        lines.append(results["H_note"])
    return "\n".join(lines)
