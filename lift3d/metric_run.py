"""The metric H of label maps (or features) on disk: `lift3d metric`, and the metric stage of
`lift3d segment` (`score_scene`, which both use).

The views stream from disk a frame at a time (`MaskFrames`, `FeatureFrames`: the scene's
pointmaps resampled to the label maps' size, `recon.geometry.frame_pointmap`), into
`consistency_score`; its temporary files go to the output folder's scratch unless
`MetricConfig.work_dir` says otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from lift3d.consistency.metric import MetricConfig, MetricResult, consistency_score
from lift3d.errors import InputError


class MaskFrames:
    """A `FrameSource` over a scene's frames and their label maps `masks_dir/<frame>.png`.

    Args:
        scene: a `Scene` with geometry (read lazily, a frame at a time).
        masks_dir: the label maps, one per frame, each (W, H) = size.
        size: (W, H) of the label maps; pointmaps are resampled to it.

    Attributes:
        seconds: time spent reading so far.

    Raises:
        InputError: the folder lacks a frame's map (checked at once), or a map has another size
            (when its frame is read).
    """

    def __init__(self, scene, masks_dir: str | Path, size: tuple[int, int]):
        self.scene, self.dir = scene, Path(masks_dir)
        self.names = list(scene.frame_names)
        self.size = (int(size[0]), int(size[1]))
        self.seconds = 0.0
        missing = [n for n in self.names if not (self.dir / f"{n}.png").is_file()]
        if missing:
            raise InputError(
                self.dir,
                f"{len(missing)} of {len(self.names)} frames have no label map, e.g. "
                + ", ".join(f"{n}.png" for n in missing[:5]),
            )

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int):
        from lift3d.io import read_label_map
        from lift3d.recon.geometry import frame_pointmap

        t = time.perf_counter()
        W, H = self.size
        path = self.dir / f"{self.names[i]}.png"
        lab = read_label_map(path)
        if lab.shape != (H, W):
            raise InputError(path, f"label map is {lab.shape[1]}x{lab.shape[0]}, expected {W}x{H}")
        pm, valid = frame_pointmap(self.scene, self.scene[i], self.size)
        self.seconds += time.perf_counter() - t
        return pm, valid, lab


class FeatureFrames:
    """A `FrameSource` over a scene's frames and their features `features_dir/<frame>.npy`
    ([H, W, C] numeric, every file one shape); `seconds` as for `MaskFrames`."""

    def __init__(self, scene, features_dir: str | Path):
        self.scene, self.dir = scene, Path(features_dir)
        self.names = list(scene.frame_names)
        self.seconds = 0.0
        if not self.dir.is_dir():
            raise InputError(self.dir, "features folder not found")
        missing = [n for n in self.names if not (self.dir / f"{n}.npy").is_file()]
        if missing:
            raise InputError(
                self.dir,
                f"{len(missing)} of {len(self.names)} frames have no features, e.g. "
                + ", ".join(f"{n}.npy" for n in missing[:5]),
            )
        self.shape = self._read(0).shape

    @property
    def size(self) -> tuple[int, int]:
        return self.shape[1], self.shape[0]

    def _read(self, i: int) -> np.ndarray:
        path = self.dir / f"{self.names[i]}.npy"
        try:
            f = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(path, f"cannot read features ({e})") from None
        if f.ndim != 3 or not np.issubdtype(f.dtype, np.number):
            raise InputError(
                path, f"features must be a numeric [H, W, C] array, found {f.dtype} {f.shape}"
            )
        if i and f.shape != self.shape:
            raise InputError(
                path, f"features are {f.shape}, expected {self.shape} like {self.names[0]}.npy"
            )
        return f

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int):
        from lift3d.recon.geometry import frame_pointmap

        t = time.perf_counter()
        f = np.asarray(self._read(i), np.float32)
        pm, valid = frame_pointmap(self.scene, self.scene[i], self.size)
        self.seconds += time.perf_counter() - t
        return pm, valid, f


def score_scene(
    scene,
    masks_dir: str | Path | None,
    *,
    config: MetricConfig,
    scratch: Path,
    features_dir: str | Path | None = None,
    per_pixel: bool | Path = False,
    progress=None,
) -> tuple[MetricResult, float]:
    """H (and pairwise) of a loaded scene's label maps, or of its features, views streamed.

    Args:
        scene: the `Scene`, at the label maps' (or features') size.
        masks_dir: folder of `<frame>.png` label maps (not read when features_dir is given).
        config: the metric's settings; its temporary files go to `config.work_dir`, else to
            `scratch`.
        scratch: the run's scratch folder (`lift3d.io.scratch_dir`).
        features_dir: folder of `<frame>.npy` [H, W, C] vectors: H is computed on them (cosine).
        per_pixel, progress: as `consistency_score`.

    Returns:
        (the `MetricResult`, seconds spent reading label maps and geometry).
    """
    if features_dir is not None:
        frames = FeatureFrames(scene, features_dir)
    else:
        frames = MaskFrames(scene, masks_dir, scene.size)
    if config.work_dir is None:
        config = dataclasses.replace(config, work_dir=scratch)
    result = consistency_score(frames, config=config, per_pixel=per_pixel, progress=progress)
    return result, frames.seconds


def run_metric(
    scene_path: str | Path,
    masks_dir: str | Path | None,
    *,
    config: MetricConfig | None = None,
    features_dir: str | Path | None = None,
    out_json: str | Path | None = None,
    frame_names: list[str] | None = None,
    progress=None,
) -> dict:
    """`lift3d metric`: H (and pairwise) of a masks folder, or of per-frame features, on a scene.

    Args:
        scene_path: scene folder or file (any format `load_scene` reads) with geometry.
        masks_dir: folder of label maps `<frame>.png`, one per scene frame, all one size.
        config: the metric's settings (eps, memory bound, pairwise ...).
        features_dir: folder of `<frame>.npy` [H, W, C] float vectors; when given, H is computed
            on them (cosine similarity) and `masks_dir` is not read.
        out_json: where to write the result (atomically); None writes nothing.
        frame_names: score only these frames of the scene (a subset run); default all.
        progress: `progress(phase, done, total)` callback of the metric.

    Returns:
        The JSON dict: H, pairwise, eps, pixels, per_frame, frames, size, input, seconds (in all;
        seconds_reading: scene and masks; seconds_metric: `consistency_score`).
    """
    from lift3d.io import atomic_path, scratch_dir
    from lift3d.recon import load_scene

    t0 = time.perf_counter()
    config = MetricConfig() if config is None else config
    config.check(
        prefix="--"
    )  # before reading anything; `lift3d metric` has the settings as --eps ...
    scene = load_scene(scene_path)
    all_names = set(scene.frame_names)
    scene = _frame_subset(scene, frame_names)
    names = list(scene.frame_names)
    if features_dir is not None:
        size = FeatureFrames(scene, features_dir).size
        scratch_parent = Path(features_dir).parent
    else:
        if masks_dir is None:
            raise InputError(None, "give a masks folder or a features folder")
        masks_dir = Path(masks_dir)
        size = _masks_size(masks_dir, names, all_names, subset=frame_names is not None)
        scratch_parent = masks_dir.parent
    if tuple(scene.size) != size:
        # read depth straight at the labels' size: one nearest-neighbour resampling, not two
        scene = _frame_subset(load_scene(scene_path, size=size), frame_names)
    t1 = time.perf_counter()
    # spill files beside the output (or the masks), not in a possibly small system temp
    with scratch_dir(Path(out_json).parent if out_json is not None else scratch_parent) as scratch:
        result, reading = score_scene(
            scene,
            masks_dir,
            config=config,
            scratch=scratch,
            features_dir=features_dir,
            progress=progress,
        )
    t1 += reading  # reading happens inside the streaming metric
    t2 = time.perf_counter()
    out = result.to_json()
    out.update(
        {
            "frames": len(names),
            "size": list(size),
            "input": "features" if features_dir is not None else "labels",
            "seconds": round(time.perf_counter() - t0, 2),
            "seconds_reading": round(t1 - t0, 2),
            "seconds_metric": round(t2 - t1, 2),
        }
    )
    if out_json is not None:
        with atomic_path(out_json) as tmp:
            tmp.write_text(json.dumps(out, indent=1))
    return out


def _masks_size(
    masks_dir: Path, names: list[str], all_names: set[str], *, subset: bool
) -> tuple[int, int]:
    """(W, H) of the label maps of `names` in masks_dir, after checking that each frame has one
    and that no map is of a frame the scene lacks."""
    from lift3d.io import read_label_map

    if masks_dir.is_dir():
        # hidden files are no label maps (a killed write leaves `.NAME.tmp.png`)
        extra = sorted(
            {p.stem for p in masks_dir.glob("*.png") if not p.name.startswith(".")} - all_names
        )
        if extra:
            raise InputError(
                masks_dir,
                f"{len(extra)} label map(s) match no frame of the scene "
                f"({len(all_names)} frames), e.g. {', '.join(e + '.png' for e in extra[:5])}",
            )
    if not masks_dir.is_dir():
        raise InputError(masks_dir, "masks folder not found")
    missing = [n for n in names if not (masks_dir / f"{n}.png").is_file()]
    if missing:
        hint = " (a subset run? give its --frames / --max-frames)" if not subset else ""
        raise InputError(
            masks_dir,
            f"{len(missing)} of {len(names)} frames have no label map, e.g. "
            + ", ".join(f"{n}.png" for n in missing[:5])
            + hint,
        )
    m0 = read_label_map(masks_dir / f"{names[0]}.png")
    return m0.shape[1], m0.shape[0]


def _frame_subset(scene, frame_names: list[str] | None):
    """The scene's frames named in `frame_names`, in that order (None: the scene as it is)."""
    if frame_names is None:
        return scene
    index = {n: i for i, n in enumerate(scene.frame_names)}
    unknown = [n for n in frame_names if n not in index]
    if unknown:
        raise InputError(
            scene.root,
            f"{len(unknown)} selected frame(s) are not in the scene, e.g. {', '.join(unknown[:5])}",
        )
    if not frame_names:
        raise InputError(scene.root, "the frame selection is empty")
    return scene.subset([index[n] for n in frame_names])
