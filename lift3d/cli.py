"""The `lift3d` command line, derived from dataclasses with tyro.

Each subcommand is a dataclass with a `main()`; heavy packages load inside `main()`, so
`lift3d --help` stays fast. Errors of type `Lift3dError` print as one line and exit 2.
Options of every command: `--version`, `-q` / `--quiet` (errors and warnings only), `-v` /
`--verbose` (also every part's settings).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

from lift3d.config import InputConfig, LiftingConfig, OutputConfig, SegmentConfig, SegmenterConfig
from lift3d.consistency.metric import MetricConfig
from lift3d.errors import Lift3dError


@dataclass
class Segment(SegmentConfig):
    """Segment a scene consistently across views and lift the masks onto points and splats."""

    # OmitArgPrefixes: each flat group is a section of the help, its flags unprefixed (`--scene`).
    # Only here: in `lift3d batch` tyro would strip the `--segment.` prefix too

    input: tyro.conf.OmitArgPrefixes[InputConfig]
    lifting: tyro.conf.OmitArgPrefixes[LiftingConfig] = field(default_factory=LiftingConfig)
    output: tyro.conf.OmitArgPrefixes[OutputConfig] = field(default_factory=OutputConfig)
    config: Path | None = None
    """Rerun a recorded run: take every value from this run.json (or a JSON of SegmentConfig values); flags given beside it override them."""

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
    features: Path | None = None
    """Folder of per-frame feature maps <frame>.npy [H, W, C] (instead of label one-hots)."""
    out: Path | None = None
    """JSON file to write (default: <masks>/../metric.json)."""
    frames: str | None = None
    """Frame subset START:STOP:STEP, as for `segment` (default: the frames of the run whose masks/ folder --masks is, from its run.json; else every frame)."""
    max_frames: int | None = None
    """Keep at most this many frames (evenly spaced) after --frames, as for `segment`."""
    metric: Annotated[MetricConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=MetricConfig)
    """The metric's settings: those of `segment`'s --metric.*, here without the prefix (--eps, --max-points, --no-pairwise ...)."""

    def main(self) -> None:
        from lift3d.console import PhasedProgress
        from lift3d.metric_run import run_metric
        from lift3d.run_folder import metric_frame_names

        out = self.out or Path(self.masks).parent / "metric.json"
        names = metric_frame_names(
            self.scene, self.masks, frames=self.frames, max_frames=self.max_frames
        )
        with PhasedProgress("metric") as bar:
            result = run_metric(
                self.scene,
                self.masks,
                config=self.metric,
                features_dir=self.features,
                out_json=out,
                frame_names=names,
                progress=bar,
            )
        pairwise = result.get("pairwise")
        print(
            f"H = {result['H']:.4f}   pairwise = {'n/a' if pairwise is None else f'{pairwise:.4f}'}"
            f"   eps = {result['eps']} m   pixels = {result['pixels']:,}   -> {out}"
        )


@dataclass
class Synth:
    """Write a synthetic RGB-D scan with exact instance ground truth (ScanNet layout)."""

    out: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="OUT")]
    """Scan folder to write; its name is the scene name (`--out OUT` also works)."""
    frames: int = 24
    """Number of views."""
    size: tuple[int, int] = (320, 240)
    """Depth resolution W H (colour is twice as large, as in ScanNet)."""
    seed: int = 0
    """Texture noise seed."""

    def main(self) -> None:
        from lift3d.errors import InputError
        from lift3d.recon.synthetic import make_synthetic_scene

        if self.out.exists() and not self.out.is_dir():
            raise InputError(self.out, "--out: cannot be a scan folder, it is a file")

        path = make_synthetic_scene(self.out, n_frames=self.frames, size=self.size, seed=self.seed)
        print(f"wrote a {self.frames}-view synthetic scan to {path}")


@dataclass
class View:
    """Explore a lift3d output in the browser (viser): points, splats, cameras, instances."""

    out: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="OUT")]
    """Output folder of `lift3d segment` (`--out OUT` also works)."""
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
    methods: tuple[
        Literal["framewise", "sam3d", "mastsam-no-unmasked", "mastsam", "byocl"], ...
    ] = (
        "framewise",
        "mastsam",
    )
    """Methods to run; `byocl`: BYOCL's clustering of the segmenter's encoder features (SAM / SAM 2), or of a documented stand-in feature with the classical segmenter."""
    segmenter: SegmenterConfig = field(default_factory=lambda: SegmenterConfig(name="classical"))
    """The segmenter of every method, as for `lift3d segment`: classical (weight-free, the default), sam or sam2 (need their checkpoint); DAVIS has no depth and no 3D ground truth for geometric or simulated."""
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
    """Score this prediction folder in the ScanNet benchmark format (<scene>.txt + pred_mask/), e.g. OUT/scannet of `lift3d segment`. Without it, --methods are run and scored."""
    methods: tuple[
        Literal[
            "framewise",
            "sam3d",
            "maskclustering",
            "mastsam-no-unmasked",
            "mastsam",
            "mastsam-merged",
            "byocl",
            "oracle",
        ],
        ...,
    ] = (
        "framewise",
        "sam3d",
        "maskclustering",
        "mastsam-no-unmasked",
        "mastsam",
        "byocl",
        "oracle",
    )
    """Methods to run (without --pred): label maps, lifting, export, AP, ARI and H for each. `oracle`: the framewise masks with GT-consistent IDs (the reference of perfect association); `mastsam-merged`: MastSAM + multi-view merging of its IDs (needs lift3d.consistency.merging)."""
    segmenter: SegmenterConfig = field(default_factory=lambda: SegmenterConfig(name="classical"))
    """The segmenter of the methods, as for `lift3d segment` (default: classical); geometric: the object candidates of its default on scans with depth; simulated: masks simulated from the scan's ground truth with SAM-like granularity changes (not SAM; --segmenter.simulated.noise 0 / 0.15 / 0.3 ...)."""
    frames: str | None = None
    """Frame subset START:STOP:STEP of the methods' runs (default: every frame)."""
    max_frames: int | None = None
    """At most this many frames, evenly spaced over the subset, first and last kept (as `lift3d segment --max-frames`)."""
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

        run_scannet_eval(
            scene,
            out=self.out,
            methods=self.methods,
            segmenter=self.segmenter,
            frames=self.frames,
            max_frames=self.max_frames,
        )


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
    segment: SegmentConfig = field(
        default_factory=lambda: SegmentConfig(input=InputConfig(scene=Path(".")))
    )
    """Options passed to every scene's `lift3d segment` (its --scene/--out are set per scene)."""
    force: bool = False
    """Rerun every scene, even those whose folder holds a complete run with these options."""

    def main(self) -> None:
        from lift3d.batch import run_batch

        records = run_batch(self)["scenes"]
        failed = sorted(n for n, r in records.items() if r["status"] == "failed")
        if failed:
            raise Lift3dError(
                f"{len(failed)} of {len(records)} scenes failed ({', '.join(failed[:5])}"
                f"{' ...' if len(failed) > 5 else ''}): see {Path(self.out) / 'batch.json'}"
            )


Command = (
    Annotated[Segment, tyro.conf.subcommand("segment")]
    | Annotated[Metric, tyro.conf.subcommand("metric")]
    | Annotated[Synth, tyro.conf.subcommand("synth")]
    | Annotated[View, tyro.conf.subcommand("view")]
    | Annotated[
        tyro.conf.OmitSubcommandPrefixes[
            Annotated[EvalDavis, tyro.conf.subcommand("davis")]
            | Annotated[EvalScannet, tyro.conf.subcommand("scannet")]
        ],
        tyro.conf.subcommand(
            "eval",
            description="Evaluate every method on a benchmark: DAVIS (2D) or a ScanNet scan (3D).",
        ),
    ]
    | Annotated[Batch, tyro.conf.subcommand("batch")]
)


#: commands whose one path is positional; `--out PATH` is still accepted for them
_POSITIONAL_OUT = ("view", "synth")
#: `segment`'s metric flags from before they were one `MetricConfig` (`--metric.*`), still accepted
_METRIC_FLAGS = {
    "--eps": "--metric.eps",
    "--metric-max-points": "--metric.max-points",
    "--metric-pairwise": "--metric.pairwise",
    "--no-metric-pairwise": "--metric.no-pairwise",
}


def parse(argv: list[str]) -> tuple[object, int]:
    """The command an argument list asks for, and its verbosity (-1 quiet, 0, 1 verbose).

    Raises:
        SystemExit: as argparse does, for --help and unparseable arguments.
        Lift3dError: `--config` names an unreadable or malformed file.
    """
    argv = list(argv)
    verbosity = 0
    rest = []
    for a in argv:
        if a in ("-q", "--quiet"):
            verbosity -= 1
        elif a in ("-v", "--verbose"):
            verbosity += 1
        elif a in ("-qq", "-vv"):
            verbosity += 2 if a == "-vv" else -2
        else:
            rest.append(a)
    argv = rest
    if argv and argv[0] in _POSITIONAL_OUT:
        argv = [argv[0], *_out_as_positional(argv[1:])]
    if argv and argv[0] in ("segment", "batch"):
        argv = [argv[0], *_renamed(argv[1:], "" if argv[0] == "segment" else "--segment.")]
    if argv and argv[0] == "segment":
        config = _option_value(argv[1:], "--config")
        if config is not None:
            from lift3d.runfile import read_run_config

            default = Segment(**vars(read_run_config(Path(config))), config=Path(config))
            return tyro.cli(
                Segment, args=argv[1:], default=default, prog="lift3d segment"
            ), verbosity
    return tyro.cli(
        Command, args=argv, prog="lift3d", description=__doc__.splitlines()[0]
    ), verbosity


def _option_value(args: list[str], flag: str) -> str | None:
    """The value of `flag VALUE` or `flag=VALUE` in args (the last one given), else None."""
    value = None
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(flag + "="):
            value = a[len(flag) + 1 :]
    return value


def _renamed(args: list[str], prefix: str) -> list[str]:
    """`_METRIC_FLAGS` spelled the new way (`--eps 0.03` -> `--metric.eps 0.03`; batch: under
    `--segment.`)."""
    out = []
    for a in args:
        name, eq, value = a.partition("=")
        for old, new in _METRIC_FLAGS.items():
            old = old if not prefix else prefix + old[2:]
            if name == old:
                a = (new if not prefix else prefix + new[2:]) + eq + value
        out.append(a)
    return out


def _out_as_positional(args: list[str]) -> list[str]:
    """`--out PATH` (the spelling before OUT became positional) moved to the front as PATH."""
    for i, a in enumerate(args):
        if a == "--out" and i + 1 < len(args):
            return [args[i + 1], *args[:i], *args[i + 2 :]]
        if a.startswith("--out="):
            return [a[len("--out=") :], *args[:i], *args[i + 1 :]]
    return args


def entrypoint(argv: list[str] | None = None) -> int:
    """`lift3d` console script."""
    from lift3d.console import setup_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-V"]):
        from lift3d import __version__

        print(f"lift3d {__version__}")
        return 0
    try:
        cmd, verbosity = parse(argv)
    except Lift3dError as e:
        print(f"lift3d: error: {e}", file=sys.stderr)
        return 2
    setup_logging(verbosity)
    # SIGTERM (kill, a scheduler's time limit) unwinds like Ctrl-C: temporary files and
    # folders are removed by the `finally` blocks that own them
    old = _on_sigterm(_Terminated)
    try:
        cmd.main()
    except Lift3dError as e:
        print(f"lift3d: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system said no (full disk, permissions): one line, not a trace
        where = f"{e.filename}: " if e.filename else ""
        print(f"lift3d: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, _Terminated) as e:
        print(
            "lift3d: interrupted; finished files are complete, unfinished ones were not written",
            file=sys.stderr,
        )
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
