"""The `lift3d` command line, derived from dataclasses with tyro.

Each subcommand is a dataclass with a `main()`; heavy packages load inside `main()`, so
`lift3d --help` stays fast. Errors of type `Lift3dError` print as one line and exit 2.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

from lift3d.config import SegmentConfig
from lift3d.consistency.metric_stream import DEFAULT_MAX_POINTS
from lift3d.consistency.simulated import SimulatedConfig
from lift3d.errors import Lift3dError


@dataclass
class Segment(SegmentConfig):
    """Segment a scene consistently across views and lift the masks onto points and splats."""

    def main(self) -> None:
        from lift3d.pipeline import run_segment

        run_segment(self)


@dataclass
class Metric:
    """The multi-view consistency metric H (exact) and its ID-free pairwise variant."""

    scene: Path
    """Scene folder (with depth + poses, or a MASt3R reconstruction)."""
    masks: Path
    """Folder of 16-bit label maps named like the scene's frames."""
    eps: float = 0.02
    """Neighbourhood radius in metres."""
    features: Path | None = None
    """Folder of per-frame feature maps <frame>.npy [H, W, C] (instead of label one-hots)."""
    out: Path | None = None
    """JSON file to write (default: <masks>/../metric.json)."""
    max_points: int = DEFAULT_MAX_POINTS
    """Labeled points held at once (one tile of space with its halo, ~100 bytes each): the memory bound."""
    pairwise: bool = True
    """Also compute the ID-free pairwise variant (its time and temporary disk grow with the square of
    the number of views that see one spot; its memory stays within the max_points bound)."""

    def main(self) -> None:
        from lift3d.consistency.metric import run_metric

        out = self.out or Path(self.masks).parent / "metric.json"
        result = run_metric(self.scene, self.masks, eps=self.eps, features_dir=self.features, out_json=out,
                            max_points=self.max_points, pairwise=self.pairwise)
        pairwise = result.get("pairwise")
        print(
            f"H = {result['H']:.4f}   pairwise = {'n/a' if pairwise is None else f'{pairwise:.4f}'}"
            f"   eps = {result['eps']} m   pixels = {result['pixels']:,}   -> {out}"
        )


@dataclass
class Synth:
    """Write a synthetic RGB-D scan with exact instance ground truth (ScanNet layout)."""

    out: Path
    """Scan folder to write; its name is the scene name."""
    frames: int = 24
    """Number of views."""
    size: tuple[int, int] = (320, 240)
    """Depth resolution W H (colour is twice as large, as in ScanNet)."""
    seed: int = 0
    """Texture noise seed."""

    def main(self) -> None:
        from lift3d.recon.synthetic import make_synthetic_scene

        path = make_synthetic_scene(self.out, n_frames=self.frames, size=self.size, seed=self.seed)
        print(f"wrote a {self.frames}-view synthetic scan to {path}")


@dataclass
class View:
    """Explore a lift3d output in the browser (viser): points, splats, cameras, instances."""

    out: Path
    """Output folder of `lift3d segment`."""
    port: int = 8080
    """Port to serve on."""
    host: str = "127.0.0.1"
    """Interface to bind (0.0.0.0 to reach it from another machine)."""

    def main(self) -> None:
        from lift3d.viewers.web import serve

        serve(self.out, host=self.host, port=self.port, block=True)


@dataclass
class EvalDavis:
    """The MastSAM paper's DAVIS protocol, DAVIS J&F and the sequence-level variant."""

    root: Path
    """DAVIS root holding JPEGImages/480p and Annotations/480p."""
    sequences: tuple[str, ...] = ()
    """Sequences to evaluate (default: all found)."""
    methods: tuple[Literal["framewise", "sam3d", "mastsam-no-unmasked", "mastsam", "byocl"], ...] = (
        "framewise",
        "mastsam",
    )
    """Methods to run; `byocl`: BYOCL's clustering of the segmenter's encoder features (SAM / SAM 2), or of a
    documented stand-in feature with the classical segmenter."""
    segmenter: Literal["classical", "sam", "sam2"] = "classical"
    """2D segmenter: classical (weight-free), SAM or SAM 2 (need --sam-checkpoint)."""
    sam_checkpoint: Path | None = None
    sam_model: Literal["vit_h", "vit_l", "vit_b"] = "vit_h"
    sam2_model: str = "sam2.1_hiera_l"
    """SAM 2 architecture of the checkpoint (--segmenter sam2)."""
    max_frames: int | None = None
    """Use at most this many frames per sequence."""
    out: Path = Path("outputs/eval_davis")
    """Folder for the label maps and results.json."""

    def main(self) -> None:
        from lift3d.evaluation import run_davis_eval

        run_davis_eval(self)


@dataclass
class EvalScannet:
    """Class-agnostic ScanNet instance AP (AP, AP50, AP25): of a prediction, or of each method run here."""

    scene: Path
    """ScanNet scan folder with its GT (aggregation.json, segs.json, labels.ply)."""
    pred: Path | None = None
    """Score this prediction folder in the ScanNet benchmark format (<scene>.txt + pred_mask/),
    e.g. OUT/scannet of `lift3d segment`. Without it, --methods are run and scored."""
    methods: tuple[Literal["framewise", "sam3d", "maskclustering", "mastsam-no-unmasked", "mastsam", "mastsam-merged", "byocl",
                           "oracle"], ...] = (
        "framewise",
        "sam3d",
        "maskclustering",
        "mastsam-no-unmasked",
        "mastsam",
        "byocl",
        "oracle",
    )
    """Methods to run (without --pred): label maps, lifting, export, AP, ARI and H for each. `oracle`:
    the framewise masks with GT-consistent IDs (the reference of perfect association);
    `mastsam-merged`: MastSAM + multi-view merging of its IDs (needs lift3d.consistency.merging)."""
    segmenter: Literal["classical", "sam", "sam2", "simulated"] = "classical"
    """2D segmenter of the methods; `simulated`: masks simulated from the scan's ground truth with SAM-like
    granularity changes (not SAM; --simulated.noise 0 / 0.15 / 0.3 ...)."""
    simulated: SimulatedConfig = field(default_factory=SimulatedConfig)
    """--segmenter simulated: its parameters."""
    sam_checkpoint: Path | None = None
    sam_model: Literal["vit_h", "vit_l", "vit_b"] = "vit_h"
    sam2_model: str = "sam2.1_hiera_l"
    """SAM 2 architecture of the checkpoint (--segmenter sam2)."""
    frames: str | None = None
    """Frame subset START:STOP:STEP of the methods' runs (default: every frame)."""
    out: Path = Path("outputs/eval_scannet")
    """Folder for each method's masks/, scannet/ and results.json (without --pred)."""

    def main(self) -> None:
        import json

        from lift3d.recon.detect import resolve_scene_path

        scene = resolve_scene_path(self.scene)
        if self.pred is not None:
            from lift3d.instance_eval import evaluate_scannet_export

            print(json.dumps(evaluate_scannet_export(scene, self.pred), indent=1))
            return
        from lift3d.evaluation import run_scannet_eval

        run_scannet_eval(scene, out=self.out, methods=self.methods, segmenter=self.segmenter, simulated=self.simulated,
                         sam_checkpoint=self.sam_checkpoint, sam_model=self.sam_model, sam2_model=self.sam2_model,
                         frames=self.frames)


@dataclass
class Batch:
    """Run `lift3d segment` on many scenes as Ray tasks (local Ray, or a cluster by address)."""

    scenes: str
    """Glob of scene folders, e.g. 'data/scannet/scene*'."""
    out: Path
    """Output root: one folder per scene, plus batch.json."""
    engine: Literal["ray", "local"] = "ray"
    """ray: one task per scene; local: sequential in this process (same outputs)."""
    address: str | None = None
    """Ray cluster address (auto, ray://HOST:PORT); default: start Ray locally."""
    gpus_per_scene: float = 0.0
    """GPUs reserved per scene task."""
    cpus_per_scene: float = 2.0
    """CPUs reserved per scene task."""
    segment: SegmentConfig = field(default_factory=lambda: SegmentConfig(scene=Path(".")))
    """Options passed to every scene's `lift3d segment` (its --scene/--out are set per scene)."""

    def main(self) -> None:
        from lift3d.batch import run_batch

        run_batch(self)


Command = (
    Annotated[Segment, tyro.conf.subcommand("segment")]
    | Annotated[Metric, tyro.conf.subcommand("metric")]
    | Annotated[Synth, tyro.conf.subcommand("synth")]
    | Annotated[View, tyro.conf.subcommand("view")]
    | Annotated[EvalDavis, tyro.conf.subcommand("eval-davis")]
    | Annotated[EvalScannet, tyro.conf.subcommand("eval-scannet")]
    | Annotated[Batch, tyro.conf.subcommand("batch")]
)


def entrypoint(argv: list[str] | None = None) -> int:
    """`lift3d` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # `lift3d eval davis` / `lift3d eval scannet` read better than the hyphenated names
    if len(argv) >= 2 and argv[0] == "eval" and argv[1] in ("davis", "scannet"):
        argv = [f"eval-{argv[1]}"] + argv[2:]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cmd = tyro.cli(Command, args=argv, prog="lift3d", description=__doc__.splitlines()[0])
    # SIGTERM (kill, a scheduler's time limit) unwinds like Ctrl-C: temporary files and
    # folders are removed by the `finally` blocks that own them
    old = _on_sigterm(_Terminated)
    try:
        cmd.main()
    except Lift3dError as e:
        print(f"lift3d: error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, _Terminated) as e:
        print("lift3d: interrupted; finished files are complete, unfinished ones were not written", file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130
    finally:
        _on_sigterm(old)
    return 0


class _Terminated(BaseException):
    """Raised in the main thread on SIGTERM (a BaseException, like KeyboardInterrupt)."""


def _on_sigterm(handler):
    """Install `handler` for SIGTERM (an exception class is raised); returns the previous one.
    A no-op outside the main thread, where signals cannot be handled."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    if isinstance(handler, type) and issubclass(handler, BaseException):
        exc = handler

        def raise_exc(signum, frame):
            raise exc()

        handler = raise_exc
    return signal.signal(signal.SIGTERM, handler if handler is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(entrypoint())
