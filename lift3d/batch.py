"""`lift3d batch`: many scenes, each a task running the same pipeline as `lift3d segment`.

Engines:
- `ray` (default): Ray started locally, or a running cluster by `--address`. A pool of actors,
  each holding one segmenter (models load once per worker, not once per scene), pulls scenes as
  they finish. Resources per scene: `--cpus-per-scene`, `--gpus-per-scene`.
- `local`: sequential in this process, one segmenter; the same outputs.

Resumable and idempotent: a scene whose folder holds a complete run made with these options (its
sealed fingerprint, `lift3d.run_folder`) is skipped, one made with other options is redone, and
`--force` redoes every scene; a failure is recorded with its error in `OUT/batch.json` and the
other scenes go on; a rerun retries only what is not done. `lift3d batch` exits non-zero when a
scene failed. Outputs are written atomically by the pipeline, so an interrupted batch leaves no
half-written file.
"""

from __future__ import annotations

import glob
import logging
import os
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from lift3d.config import SegmentConfig
from lift3d.errors import InputError, Lift3dError

if TYPE_CHECKING:
    from lift3d.consistency.segmenter import Segmenter

logger = logging.getLogger(__name__)

#: files whose presence marks a scene's output complete (the pipeline removes run.json and
#: metrics.json first and writes them last but the report); the fingerprint in run.json says
#: with which options
COMPLETE_MARKERS = ("metrics.json", "run.json", "points.ply")


def expand_scenes(pattern: str) -> list[Path]:
    """Scene folders matching a glob, looked up from the working directory then `$LIFT3D_DATA`."""
    roots = [Path(".")]
    if os.environ.get("LIFT3D_DATA") and not Path(pattern).is_absolute():
        roots.append(Path(os.environ["LIFT3D_DATA"]))
    for root in roots:
        hits = sorted(Path(p) for p in glob.glob(str(root / pattern)))
        hits = [
            p for p in hits if p.is_dir() or p.suffix.lower() in (".sens", ".mp4", ".avi", ".mov")
        ]
        if hits:
            return hits
    raise InputError(Path(pattern), "no scene matches this pattern")


def is_complete(out: Path) -> bool:
    return all((out / m).is_file() for m in COMPLETE_MARKERS)


def is_done(cfg: SegmentConfig) -> bool:
    """Whether `cfg.output.out` holds a complete run of `cfg` (its sealed fingerprint is cfg's)."""
    from lift3d.recon import load_scene
    from lift3d.recon.scene import select_frames
    from lift3d.run_folder import fingerprint, fingerprint_diff, sealed_fingerprint

    out = Path(cfg.output.out)
    sealed = sealed_fingerprint(out) if is_complete(out) else None
    if sealed is None:
        return False
    inp = cfg.input
    try:
        scene = select_frames(
            load_scene(inp.scene, format=inp.format, size=inp.size),
            frames=inp.frames,
            max_frames=inp.max_frames,
        )
        expected = fingerprint(cfg, scene.frame_names)
    except (Lift3dError, OSError):
        return False  # the run says why
    diffs = fingerprint_diff(sealed, expected)
    if diffs:
        logger.info("%s: made with other options (%s): redone", out, "; ".join(diffs[:4]))
    return not diffs


def _scene_summary(out: Path) -> dict:
    import json

    try:
        m = json.loads((out / "metrics.json").read_text())
        return {
            "H": m.get("H"),
            "mean_masks_per_frame": m.get("mean_masks_per_frame"),
            "frames": m.get("frames"),
        }
    except (OSError, ValueError):
        return {}


def run_scene(cfg: SegmentConfig, segmenter: Segmenter | None = None) -> dict:
    """One scene, never raising: returns its batch.json record."""
    from lift3d.pipeline import run_segment

    t0 = time.perf_counter()
    try:
        out = run_segment(cfg, segmenter=segmenter)
        return {
            "status": "done",
            "error": None,
            "seconds": round(time.perf_counter() - t0, 2),
            **_scene_summary(out),
        }
    except Lift3dError as e:
        return {"status": "failed", "error": str(e), "seconds": round(time.perf_counter() - t0, 2)}
    except Exception as e:  # a bug or an environment failure: keep the batch going, keep the trace
        logger.error("scene %s failed:\n%s", cfg.input.scene, traceback.format_exc())
        return {
            "status": "failed",
            "error": f"{type(e).__name__}: {e}",
            "seconds": round(time.perf_counter() - t0, 2),
        }


def _shared_segmenter(cfg: SegmentConfig):
    """The segmenter every scene of a batch can share (loaded once per worker), or None: the
    geometric and simulated segmenters read each scan (its points, its GT), so `run_segment`
    builds them per scene, and `auto` chooses by each scene."""
    return None if cfg.segmenter.per_scene else cfg.segmenter.setup(device=cfg.device)


def _make_actor_class(ray):
    class SceneWorker:
        """Holds one segmenter for its lifetime; runs scenes one after another."""

        def __init__(self, cfg: SegmentConfig):
            import logging as _logging

            _logging.basicConfig(level=_logging.WARNING)
            self.segmenter = _shared_segmenter(cfg)

        def run(self, name: str, cfg: SegmentConfig) -> tuple[str, dict]:
            return name, run_scene(cfg, self.segmenter)

    return ray.remote(SceneWorker)


def run_batch(cmd) -> dict:
    """Run every scene of `cmd.scenes` (see the module docstring); returns batch.json's content."""
    from tqdm.auto import tqdm

    from lift3d.io import write_json
    from lift3d.run_folder import check_options

    check_options(cmd.segment)  # once, before any scene: every scene would fail the same way
    out_root = Path(cmd.out)
    out_root.mkdir(parents=True, exist_ok=True)
    scenes = expand_scenes(cmd.scenes)
    names = [p.stem if p.is_file() else p.name for p in scenes]
    if len(set(names)) != len(names):
        raise InputError(
            Path(cmd.scenes), "two matched scenes share a name; their outputs would collide"
        )
    record_path = out_root / "batch.json"
    records: dict[str, dict] = {}
    todo: list[tuple[str, SegmentConfig]] = []
    for name, path in zip(names, scenes):
        out = out_root / name
        cfg = replace(
            cmd.segment,
            input=replace(cmd.segment.input, scene=path),
            output=replace(cmd.segment.output, out=out),
        )
        if not getattr(cmd, "force", False) and is_done(cfg):
            records[name] = {
                "status": "skipped",
                "error": None,
                "seconds": 0.0,
                **_scene_summary(out),
            }
        else:
            todo.append((name, cfg))

    def save():
        write_json(record_path, {"scenes": {n: records[n] for n in names if n in records}})

    save()
    bar = tqdm(total=len(todo), desc="scenes", unit="scene", disable=None)
    if cmd.engine == "local" or not todo:
        segmenter = _shared_segmenter(cmd.segment) if todo else None
        for name, cfg in todo:
            records[name] = run_scene(cfg, segmenter)
            save()
            bar.update()
    else:
        import ray
        from ray.util import ActorPool

        started_here = not ray.is_initialized()
        sigterm = _sigterm_handler() if started_here else None
        terminated = []
        try:
            if started_here:
                try:
                    ray.init(
                        address=cmd.address,
                        ignore_reinit_error=True,
                        include_dashboard=False,
                        log_to_driver=False,
                    )
                    # ray.init replaces the SIGTERM handler (with one that exits, or aborts with a
                    # native dump once the workers run). Ray's blocking calls let only
                    # KeyboardInterrupt through cleanly (any other exception from a handler comes
                    # out as a SystemError), so SIGTERM raises that here and is handed to the
                    # CLI's own handler once Ray is shut down
                    _set_sigterm(
                        lambda signum, frame: (terminated.append(signum), _raise_interrupt())
                    )
                except SystemExit as e:  # SIGTERM while ray.init ran, after it took the signal
                    if e.code != _SIGTERM:
                        raise
                    terminated.append(_SIGTERM)
                    raise KeyboardInterrupt from None
            cpus = ray.cluster_resources().get("CPU", 1)
            n_workers = max(1, min(len(todo), int(cpus // max(cmd.cpus_per_scene, 1e-3)) or 1))
            if cmd.gpus_per_scene > 0:
                gpus = ray.cluster_resources().get("GPU", 0)
                n_workers = max(1, min(n_workers, int(gpus // cmd.gpus_per_scene)))
            Worker = _make_actor_class(ray).options(
                num_cpus=cmd.cpus_per_scene, num_gpus=cmd.gpus_per_scene
            )
            pool = ActorPool([Worker.remote(cmd.segment) for _ in range(n_workers)])
            for name, rec in pool.map_unordered(lambda a, job: a.run.remote(*job), todo):
                records[name] = rec
                save()
                bar.update()
        finally:
            if started_here:
                ray.shutdown()  # ends the Ray processes this batch started, the actors with them
                _set_sigterm(sigterm)
                if terminated and callable(sigterm):
                    sigterm(terminated[0], None)  # the CLI's: raises its own "terminated" exception
    bar.close()
    save()
    print(summary_table(records))
    return {"scenes": records}


def _sigterm_handler():
    import signal
    import threading

    return (
        signal.getsignal(signal.SIGTERM)
        if threading.current_thread() is threading.main_thread()
        else None
    )


_SIGTERM = 15  #: signal.SIGTERM on every POSIX system (Ray's handler exits with it)


def _set_sigterm(handler) -> None:
    import signal

    if handler is not None:
        signal.signal(signal.SIGTERM, handler)


def _raise_interrupt():
    raise KeyboardInterrupt


def summary_table(records: dict[str, dict]) -> str:
    """A plain-text table: one row per scene, then the counts."""
    rows = [f"{'scene':<24} {'status':<8} {'seconds':>8} {'H':>7} {'masks/frame':>11}  error"]
    for name, r in sorted(records.items()):
        h = r.get("H")
        m = r.get("mean_masks_per_frame")
        rows.append(
            f"{name:<24} {r['status']:<8} {r.get('seconds', 0):>8.1f} "
            f"{'' if h is None else f'{h:.3f}':>7} {'' if m is None else f'{m:.1f}':>11}  {r.get('error') or ''}"
        )
    counts = {
        s: sum(r["status"] == s for r in records.values()) for s in ("done", "failed", "skipped")
    }
    rows.append(f"done {counts['done']}, failed {counts['failed']}, skipped {counts['skipped']}")
    return "\n".join(rows)
