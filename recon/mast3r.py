"""The MASt3R backend: geometry and correspondences for scenes that have only images.

For photo sets and video (no depth, no poses), MASt3R (Leroy et al., ECCV 2024) predicts a
pointmap and dense descriptors for pairs of images; its sparse global alignment joins the pairs
into one world frame with cameras. This module runs that on a lift3d `Scene` and returns the scene
with geometry (K, cam2world, pointmap, depth, conf, valid at the working resolution) and MASt3R's
matches as its correspondence provider.

    images -> pairs (recon.mast3r_pairs) -> pairwise inference -> sparse global alignment
           -> per-frame depth + confidence, cameras (cached on disk) -> frames at the working size
              (recon.mast3r_geometry)

MASt3R stays the user's own install (`require_mast3r`); nothing of it is copied here.

Inputs: an image-folder scene gives MASt3R the original photos (JPEG/PNG without an EXIF
rotation), so it sees every photo at its true aspect ratio whatever the working size; any other
frame (video, other formats, rotated photos) is written once as a PNG at the working size into
the cache and read from there.

Cache (`cache_dir`, in the output folder): `ga-<key>/` holds MASt3R's own cache (pairwise
predictions, matches, canonical views) for one model, network size, image set and pair graph;
`ga-<key>/result-<key>/` the alignment result (cameras.npz and one depth + confidence file per
frame), keyed also by the optimisation settings. A rerun with the same inputs loads the result
without loading the model. The pairwise pointmaps (`forward/`, about 6 MB per pair at 512 px,
so gigabytes for long sequences) are deleted after the alignment unless `keep_pair_predictions`;
kept, a new optimisation setting reuses them instead of running the network again. Images are
identified by path and content digest, the checkpoint by path, size and modification time.

Cost: inference grows with the number of pairs (see `recon.mast3r_pairs`: `auto` keeps it
linear beyond 12 frames); the alignment holds all frames in memory at the network resolution;
`clean_depth` compares every frame with every other (N² projections), so it can be turned off for
long sequences.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lift3d.errors import CheckpointError, InputError
from lift3d.io import atomic_path
from lift3d.recon.files import list_images, read_image
from lift3d.recon.geometry import make_frame
from lift3d.recon.mast3r_geometry import (
    DEFAULT_MIN_CONF,
    Mast3rCrop,
    filter_matches,
    frame_from_alignment,
    intrinsics_matrix,
    mast3r_crop,
    mast3r_to_working,
)
from lift3d.recon.mast3r_model import load_mast3r, require_mast3r
from lift3d.recon.mast3r_pairs import GRAPH_KINDS, make_pair_graph, resolve_graph_kind
from lift3d.recon.scene import Frame, RawFrame, Scene

logger = logging.getLogger(__name__)

__all__ = [
    "Mast3rMatcher",
    "Mast3rOptions",
    "attach_mast3r_matches",
    "load_mast3r",
    "make_pair_graph",
    "mast3r_match_fn",
    "mast3r_scene",
    "reconstruct_mast3r",
    "require_mast3r",
]

# load_images reads only these (HEIC too when pillow-heif is installed); others go through PNG
_LOAD_IMAGES_SUFFIXES = (".jpg", ".jpeg", ".png")
# MASt3R's own scripts (visloc.py, kapture_mast3r_mapping.py) keep matches above this
DEFAULT_MATCH_MIN_CONF = 1.001


@dataclass
class Mast3rOptions:
    """Settings of a MASt3R reconstruction (defaults: MASt3R's demo and `sparse_global_alignment`)."""

    size: int = 512
    """Network input: the long side every image is resized to (512 for the released checkpoint)."""
    graph: str = "auto"
    """Pair graph: auto, complete, swin, logwin or keyframe (see lift3d.recon.mast3r_pairs)."""
    window: int | None = None
    """k of the pair graph (swin window, logwin offsets, keyframe stride); None: its default."""
    cyclic: bool = False
    """Let swin/logwin wrap around (loop closure for captures that return to their start)."""
    subsample: int = 8
    """Pixel stride of the matches the alignment uses, and of the depth anchors of its dense depth."""
    lr1: float = 0.07
    """Learning rate of the coarse alignment (3D matching)."""
    niter1: int = 300
    """Iterations of the coarse alignment."""
    lr2: float = 0.01
    """Learning rate of the refinement (2D reprojection)."""
    niter2: int = 300
    """Iterations of the refinement (0: coarse only)."""
    matching_conf_thr: float = 5.0
    """Pairs whose best match confidence is below this fall back to pointmap regression."""
    shared_intrinsics: bool = False
    """One focal length and principal point for all frames (one camera, fixed zoom)."""
    clean_depth: bool = True
    """Lower the confidence of points seen in front of other views' surfaces (N² projections)."""
    min_conf: float = DEFAULT_MIN_CONF
    """Points with MASt3R confidence at or below this are invalid (MASt3R's units, its demo's default)."""
    match_min_conf: float = DEFAULT_MATCH_MIN_CONF
    """Matches need this descriptor confidence on both sides (MASt3R's units); a match there has confidence 0 on lift3d's scale (see `filter_matches`)."""
    match_border: int = 3
    """Matches closer than this to the network input's border are dropped (pixels)."""
    keep_pair_predictions: bool = False
    """Keep MASt3R's per-pair pointmaps (about 6 MB per pair at 512 px) after the alignment, so that a rerun with other optimisation settings skips the inference; off, only the result, the matches and the canonical views stay in the cache."""

    def check(self) -> None:
        if not isinstance(self.size, int) or self.size < 32:
            raise InputError(None, f"MASt3R size must be an integer >= 32, got {self.size!r}")
        if self.graph not in GRAPH_KINDS:
            raise InputError(
                None, f"unknown pair graph {self.graph!r}; expected one of {', '.join(GRAPH_KINDS)}"
            )
        if self.subsample < 1 or self.niter1 < 0 or self.niter2 < 0:
            raise InputError(None, "subsample must be >= 1 and niter1, niter2 >= 0")

    def optimisation(self) -> dict:
        """The settings the alignment result depends on beyond the pairwise inference."""
        keys = (
            "lr1",
            "niter1",
            "lr2",
            "niter2",
            "matching_conf_thr",
            "shared_intrinsics",
            "clean_depth",
        )
        return {k: getattr(self, k) for k in keys}


@dataclass(frozen=True)
class _Source:
    """One frame as MASt3R reads it: the file given to `load_images` and its cache identity."""

    name: str
    path: Path
    identity: str
    size: tuple[int, int]  # (W0, H0) of the file


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _stat_identity(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _loadable_as_is(path: Path) -> bool:
    """Whether load_images reads this file exactly as lift3d does (format, no EXIF rotation)."""
    from PIL import Image

    if path.suffix.lower() not in _LOAD_IMAGES_SUFFIXES:
        return False
    try:
        with Image.open(path) as im:
            return im.getexif().get(0x0112, 1) == 1  # load_images applies exif_transpose
    except OSError:
        return False


def _source_files(scene: Scene) -> dict[str, Path]:
    """Original image files of the scene's frames, by frame name, where the reader says."""
    files = scene.meta.get("image_files")
    if isinstance(files, dict):
        return {str(k): Path(v) for k, v in files.items()}
    image_dir = scene.meta.get("image_dir")
    if scene.kind == "images" and image_dir and Path(image_dir).is_dir():
        return {p.stem: p for p in list_images(Path(image_dir))}
    return {}


def _frame_sources(scene: Scene, cache_dir: Path) -> list[_Source]:
    """What MASt3R reads for each frame: the original photo, or a PNG of the frame in the cache."""
    from PIL import Image

    from lift3d.recon.images import image_file_size

    files = _source_files(scene)
    root_id = _stat_identity(Path(scene.root)) if Path(scene.root).exists() else str(scene.root)
    frames_dir = cache_dir / "frames" / _digest([root_id, scene.kind, list(scene.size)])[:12]
    sources = []
    for i, name in enumerate(scene.frame_names):
        path = files.get(name)
        if path is None or not _loadable_as_is(path):
            path = frames_dir / f"{name}.png"
            if not path.is_file():
                with atomic_path(path) as tmp:
                    Image.fromarray(scene[i].image).save(tmp)
        sources.append(
            _Source(name, path, f"{path.resolve()}#{_file_digest(path)}", image_file_size(path))
        )
    return sources


def _checkpoint_identity(checkpoint: Path) -> str:
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: MASt3R checkpoint not found")
    return _stat_identity(checkpoint)


@contextlib.contextmanager
def _quiet_stdout(what: str):
    """MASt3R prints its progress notes; keep them in the debug log, off the CLI's stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        yield
    if out.getvalue().strip():
        logger.debug("%s: %s", what, out.getvalue().strip()[-2000:])


def _run_alignment(
    sources: list[_Source],
    pairs: list[tuple[int, int]],
    *,
    model,
    ga_dir: Path,
    result_dir: Path,
    opts: Mast3rOptions,
    device: str,
) -> None:
    """Pairwise inference + sparse global alignment; writes the result files into result_dir."""
    import torch
    from dust3r.utils.image import load_images
    from mast3r.cloud_opt.sparse_ga import sparse_global_alignment

    with _quiet_stdout("load_images"):
        imgs = load_images([str(s.path) for s in sources], size=opts.size, verbose=False)
    if len(imgs) != len(sources):
        raise InputError(ga_dir, f"MASt3R's load_images read {len(imgs)} of {len(sources)} images")
    crops = [mast3r_crop(s.size, size=opts.size) for s in sources]
    for s, im, crop in zip(sources, imgs, crops, strict=True):
        H2, W2 = (int(x) for x in im["true_shape"][0])
        if (W2, H2) != crop.size:  # our crop model must match theirs, or every pixel is misplaced
            raise RuntimeError(
                f"{s.path}: load_images gave {W2}x{H2}, expected {crop.size[0]}x{crop.size[1]}"
            )
    identities = [s.identity for s in sources]
    t0 = time.perf_counter()
    with _quiet_stdout("sparse_global_alignment"):
        ga = sparse_global_alignment(
            identities,
            [(imgs[i], imgs[j]) for i, j in pairs],
            str(ga_dir),
            model,
            subsample=opts.subsample,
            device=device,
            lr1=opts.lr1,
            niter1=opts.niter1,
            lr2=opts.lr2,
            niter2=opts.niter2,
            matching_conf_thr=opts.matching_conf_thr,
            shared_intrinsics=opts.shared_intrinsics,
        )
        # the anchors of the dense depth must be on the grid the alignment used (upstream's
        # default is 8: another subsample crashes or reads depth at the wrong pixels)
        pts3d, depthmaps, confs = ga.get_dense_pts3d(
            clean_depth=opts.clean_depth, subsample=opts.subsample
        )
    logger.info(
        "MASt3R: %d frames, %d pairs aligned in %.1f s",
        len(sources),
        len(pairs) // 2,
        time.perf_counter() - t0,
    )
    focals = ga.get_focals().detach().cpu().numpy().astype(np.float64)
    pps = ga.get_principal_points().detach().cpu().numpy().astype(np.float64)
    poses = ga.get_im_poses().detach().cpu().numpy().astype(np.float64)
    for i, crop in enumerate(crops):
        W2, H2 = crop.size
        depth = depthmaps[i].detach().cpu().numpy().reshape(H2, W2).astype(np.float32)
        conf = confs[i].detach().cpu().numpy().reshape(H2, W2).astype(np.float32)
        with atomic_path(result_dir / "frames" / f"{i:06d}.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, depth=depth, conf=conf)
    del pts3d
    if not (np.all(np.isfinite(focals)) and np.all(np.isfinite(poses))):
        raise RuntimeError("MASt3R's alignment diverged (non-finite cameras)")
    with (
        atomic_path(result_dir / "cameras.npz") as tmp,
        open(tmp, "wb") as f,
    ):  # written last: marks completion
        np.savez(
            f,
            focals=focals,
            pps=pps,
            poses=poses,
            crops=np.stack([c.as_array() for c in crops]),
            names=np.array([s.name for s in sources]),
        )
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def mast3r_scene(
    scene: Scene,
    *,
    checkpoint: str | Path,
    cache_dir: str | Path,
    device: str = "cpu",
    graph: str | None = None,
    options: Mast3rOptions | None = None,
) -> Scene:
    """The scene with MASt3R geometry and MASt3R matches (the entry of `--recon mast3r`).

    Args:
        scene: an image-only scene (recon.images), at its working resolution.
        checkpoint: MASt3R checkpoint file (loaded only when the cache lacks the result).
        cache_dir: where MASt3R's cache and the alignment result live (the run's output folder).
        device: torch device (`cpu` must be given explicitly on machines without CUDA).
        graph: pair graph, overriding `options.graph` (see recon.mast3r_pairs).
        options: the remaining settings.

    Returns:
        the same frames, loaded lazily with K [3, 3], T_world_camera [4, 4] (cam2world), depth,
        pointmap (world), conf in [0, 1) and valid at the working resolution (see
        recon.mast3r_geometry), and `match_fn` giving MASt3R matches (cached pairs reused).
    """
    opts = dataclasses.replace(options or Mast3rOptions())
    if graph is not None:
        opts.graph = graph
    opts.check()
    checkpoint = Path(checkpoint)
    model_id = _checkpoint_identity(checkpoint)
    require_mast3r()
    if len(scene) < 2:
        raise InputError(scene.root, f"MASt3R needs at least 2 frames, the scene has {len(scene)}")
    cache_dir = Path(cache_dir)
    sources = _frame_sources(scene, cache_dir)
    pairs = make_pair_graph(len(sources), kind=opts.graph, k=opts.window, cyclic=opts.cyclic)
    key = _digest(
        {
            "model": model_id,
            "size": opts.size,
            "subsample": opts.subsample,
            "images": [s.identity for s in sources],
            "pairs": pairs,
        }
    )
    ga_dir = cache_dir / f"ga-{key[:16]}"
    result_dir = ga_dir / f"result-{_digest([key, opts.optimisation()])[:12]}"
    graph_kind = resolve_graph_kind(len(sources)) if opts.graph == "auto" else opts.graph
    if (result_dir / "cameras.npz").is_file():
        logger.info("MASt3R: reusing the alignment in %s", result_dir)
    else:
        logger.info(
            "MASt3R: %d frames, %s graph, %d pairs, network size %d, device %s",
            len(sources),
            graph_kind,
            len(pairs) // 2,
            opts.size,
            device,
        )
        model = load_mast3r(checkpoint, device=device)
        _run_alignment(
            sources,
            pairs,
            model=model,
            ga_dir=ga_dir,
            result_dir=result_dir,
            opts=opts,
            device=device,
        )
        del model
        if not opts.keep_pair_predictions:
            shutil.rmtree(ga_dir / "forward", ignore_errors=True)
    with np.load(result_dir / "cameras.npz") as cams:
        names, focals, pps, poses, crop_rows = (
            cams[k] for k in ("names", "focals", "pps", "poses", "crops")
        )
    if [str(x) for x in names] != list(scene.frame_names):
        raise InputError(
            result_dir, "the cached MASt3R result belongs to other frames; delete the cache folder"
        )
    Ks = [intrinsics_matrix(f, pp) for f, pp in zip(focals, pps, strict=True)]
    crops = [Mast3rCrop.from_array(c) for c in crop_rows]
    base_load = scene.load_frame

    def load(i: int) -> Frame:
        base = base_load(i)
        try:
            with np.load(result_dir / "frames" / f"{i:06d}.npz") as data:
                depth, conf = data["depth"], data["conf"]
        except (OSError, KeyError, ValueError) as e:
            raise InputError(
                result_dir,
                f"cannot read the MASt3R result of frame {base.name} ({e}); delete the cache folder",
            ) from None
        return frame_from_alignment(
            base.image,
            Ks[i],
            poses[i],
            depth,
            conf,
            crop=crops[i],
            name=base.name,
            index=base.index,
            min_conf=opts.min_conf,
        )

    matcher = Mast3rMatcher(
        checkpoint=checkpoint,
        device=device,
        size=opts.size,
        subsample=opts.subsample,
        min_conf=opts.match_min_conf,
        border=opts.match_border,
        sources={s.name: s for s in sources},
        corres_dir=ga_dir / f"corres_conf=desc_conf_subsample={opts.subsample}",
    )
    meta = dict(scene.meta)
    meta.update(
        geometry="mast3r",
        intrinsics="mast3r",
        matches="mast3r",
        mast3r={
            "checkpoint": str(checkpoint),
            "graph": graph_kind,
            "pairs": len(pairs) // 2,
            "cache": str(result_dir),
            **dataclasses.asdict(opts),
        },
    )
    return dataclasses.replace(
        scene, load_frame=load, has_depth=True, has_poses=True, match_fn=matcher, meta=meta
    )


def _image_list_scene(image_paths, working_size: tuple[int, int] | None) -> Scene:
    """An image-only scene over a list of image files (named by their stems)."""
    from lift3d.recon.images import capped_size, image_file_size, placeholder_intrinsics

    paths = [Path(p) for p in image_paths]
    if not paths:
        raise InputError(None, "no images given")
    for p in paths:
        if not p.is_file():
            raise InputError(p, "image file not found")
    names = [p.stem for p in paths]
    if len(set(names)) != len(names):
        raise InputError(paths[0].parent, "several images share a name (frames are named by it)")
    size = (
        tuple(working_size) if working_size is not None else capped_size(image_file_size(paths[0]))
    )

    def load(i: int) -> Frame:
        image = read_image(paths[i])
        K = placeholder_intrinsics((image.shape[1], image.shape[0]))
        return make_frame(RawFrame(name=names[i], image=image, K=K), i, size)

    return Scene(
        name=paths[0].parent.name,
        root=paths[0].parent,
        frame_names=names,
        size=size,
        load_frame=load,
        kind="images",
        meta={
            "intrinsics": "placeholder",
            "image_files": {n: str(p) for n, p in zip(names, paths, strict=True)},
        },
    )


def reconstruct_mast3r(
    image_paths: Sequence[str | Path],
    *,
    checkpoint: str | Path,
    cache_dir: str | Path,
    device: str = "cpu",
    size: int = 512,
    graph: str = "auto",
    niter1: int = 300,
    niter2: int = 300,
    working_size: tuple[int, int] | None = None,
    options: Mast3rOptions | None = None,
) -> Scene:
    """A `Scene` reconstructed by MASt3R from a list of image files.

    Args:
        image_paths: the images (JPEG/PNG read as they are; other formats through a PNG copy).
        checkpoint, cache_dir, device: as `mast3r_scene`.
        size: network input long side (512 for the released checkpoint).
        graph: pair graph (see recon.mast3r_pairs).
        niter1, niter2: iterations of the coarse alignment and of the refinement.
        working_size: (W, H) of the scene's frames; default: the first image's size with its long
            side capped at 640, as the image-folder reader does.
        options: the remaining settings (its size, graph, niter1, niter2 are overridden).
    """
    opts = dataclasses.replace(
        options or Mast3rOptions(), size=size, graph=graph, niter1=niter1, niter2=niter2
    )
    scene = _image_list_scene(image_paths, working_size)
    return mast3r_scene(
        scene, checkpoint=checkpoint, cache_dir=cache_dir, device=device, options=opts
    )


@dataclass
class Mast3rMatcher:
    """MASt3R correspondences between two frames, usable as `Scene.match_fn`.

    For a pair whose matches MASt3R's cache already holds (the pairs of the alignment), they are
    read from it; otherwise the model (loaded on first use) predicts descriptors for the pair and
    `fast_reciprocal_NNs` matches them from a grid of every `subsample`-th pixel. Matches are
    filtered by descriptor confidence and border (`filter_matches`) and mapped to the frames'
    working resolution. The matcher holds its model and a few prepared images; nothing global.

    Attributes:
        checkpoint: MASt3R checkpoint, loaded on the first pair not in the cache.
        model: an already loaded model (instead of `checkpoint`).
        device: torch device.
        size: network input long side.
        subsample: grid stride of the match seeds.
        min_conf: minimum descriptor confidence on each side (MASt3R's units).
        border: pixels dropped along the network input's border.
        sources: the files MASt3R read for each frame name (from `mast3r_scene`); frames not in it
            are taken from their working-resolution image.
        corres_dir: MASt3R's cached matches for the alignment's pairs.
    """

    checkpoint: Path | None = None
    model: object = field(default=None, repr=False)
    device: str = "cpu"
    size: int = 512
    subsample: int = 8
    min_conf: float = DEFAULT_MATCH_MIN_CONF
    border: int = 3
    sources: dict = field(default_factory=dict)
    corres_dir: Path | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _inputs: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)

    def __post_init__(self):
        if self.model is None and self.checkpoint is None:
            raise InputError(None, "MASt3R matches need a checkpoint or a loaded model")

    def __call__(self, frame_i: Frame, frame_j: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(uv_i [M, 2], uv_j [M, 2] float32 working-resolution pixels, conf [M] in [0, 1): 0 at
        `min_conf`, see `filter_matches`)."""
        found = self._cached(frame_i.name, frame_j.name)
        if found is None:
            found = self._infer(frame_i, frame_j)
        xy_i, xy_j, c_i, c_j, crop_i, crop_j = found
        uv_i, uv_j, conf = filter_matches(
            xy_i,
            xy_j,
            c_i,
            c_j,
            min_conf=self.min_conf,
            size_i=crop_i.size,
            size_j=crop_j.size,
            border=self.border,
        )
        uv_i = _clip(mast3r_to_working(uv_i, crop_i, frame_i.size), frame_i.size)
        uv_j = _clip(mast3r_to_working(uv_j, crop_j, frame_j.size), frame_j.size)
        return uv_i, uv_j, conf

    def _crop(self, name: str) -> Mast3rCrop:
        return mast3r_crop(self.sources[name].size, size=self.size)

    def _cached(self, name_i: str, name_j: str):
        """The alignment's matches of this pair from MASt3R's cache, or None."""
        if self.corres_dir is None or name_i not in self.sources or name_j not in self.sources:
            return None
        import torch
        from mast3r.utils.misc import hash_md5

        hi, hj = hash_md5(self.sources[name_i].identity), hash_md5(self.sources[name_j].identity)
        for path, swap in (
            (self.corres_dir / f"{hi}-{hj}.pth", False),
            (self.corres_dir / f"{hj}-{hi}.pth", True),
        ):
            if path.is_file():
                _, (xy1, xy2, conf) = torch.load(path, map_location="cpu", weights_only=True)
                xy1, xy2, conf = (
                    np.asarray(x.cpu().numpy() if hasattr(x, "cpu") else x)
                    for x in (xy1, xy2, conf)
                )
                if swap:
                    xy1, xy2 = xy2, xy1
                # MASt3R keeps only the pair's confidence (the geometric mean of both sides)
                return xy1, xy2, conf, conf, self._crop(name_i), self._crop(name_j)
        return None

    def _get_model(self):
        with self._lock:
            if self.model is None:
                self.model = load_mast3r(self.checkpoint, device=self.device)
            return self.model

    def _input(self, frame: Frame):
        """(image tensor [1, 3, H2, W2] in [-1, 1], crop) of a frame, a few kept for reuse."""
        key = (frame.name, frame.size)
        with self._lock:
            if key in self._inputs:
                self._inputs.move_to_end(key)
                return self._inputs[key]
        if frame.name in self.sources:
            from dust3r.utils.image import load_images

            with _quiet_stdout("load_images"):
                tensor = load_images(
                    [str(self.sources[frame.name].path)], size=self.size, verbose=False
                )[0]["img"]
            crop = self._crop(frame.name)
        else:
            tensor, crop = prepare_image(frame.image, size=self.size)
        with self._lock:
            self._inputs[key] = (tensor, crop)
            while len(self._inputs) > 4:
                self._inputs.popitem(last=False)
        return tensor, crop

    def _infer(self, frame_i: Frame, frame_j: Frame):
        import torch
        from mast3r.fast_nn import fast_reciprocal_NNs

        model = self._get_model()
        (ti, crop_i), (tj, crop_j) = self._input(frame_i), self._input(frame_j)
        views = [
            {
                "img": t.to(self.device),
                "true_shape": torch.tensor([[c.size[1], c.size[0]]]),
                "instance": [n],
            }
            for t, c, n in ((ti, crop_i, frame_i.name), (tj, crop_j, frame_j.name))
        ]
        with torch.no_grad():
            res_i, res_j = model(views[0], views[1])
            desc_i, desc_j = res_i["desc"][0], res_j["desc"][0]
            xy_i, xy_j = fast_reciprocal_NNs(
                desc_i,
                desc_j,
                subsample_or_initxy1=self.subsample,
                ret_xy=True,
                device=self.device,
                dist="dot",
                block_size=2**13,
            )
        q_i = res_i["desc_conf"][0].cpu().numpy()
        q_j = res_j["desc_conf"][0].cpu().numpy()
        xy_i, xy_j = np.asarray(xy_i), np.asarray(xy_j)
        return xy_i, xy_j, q_i[xy_i[:, 1], xy_i[:, 0]], q_j[xy_j[:, 1], xy_j[:, 0]], crop_i, crop_j


def _clip(uv: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    W, H = size
    return np.stack([np.clip(uv[:, 0], 0, W - 1), np.clip(uv[:, 1], 0, H - 1)], axis=-1).astype(
        np.float32
    )


def prepare_image(image: np.ndarray, *, size: int = 512):
    """MASt3R's network input for an in-memory image, as `load_images` would make it from a file.

    Args:
        image: [H, W, 3] uint8 RGB.

    Returns:
        tensor: [1, 3, H2, W2] float32 in [-1, 1]; crop: the `Mast3rCrop` applied.
    """
    import torch
    from PIL import Image

    H, W = image.shape[:2]
    crop = mast3r_crop((W, H), size=size)
    # load_images resizes with LANCZOS when shrinking, BICUBIC otherwise
    resample = (
        Image.Resampling.LANCZOS if max(W, H) > max(crop.resized) else Image.Resampling.BICUBIC
    )
    im = Image.fromarray(np.asarray(image, np.uint8)).resize(crop.resized, resample)
    x0, y0 = crop.offset
    im = im.crop((x0, y0, x0 + crop.size[0], y0 + crop.size[1]))
    arr = np.asarray(im, np.float32) / 255.0
    tensor = torch.from_numpy((arr - 0.5) / 0.5).permute(2, 0, 1)[None].contiguous()
    return tensor, crop


def mast3r_match_fn(
    *,
    checkpoint: str | Path | None = None,
    model=None,
    device: str = "cpu",
    size: int = 512,
    min_conf: float = DEFAULT_MATCH_MIN_CONF,
    subsample: int = 8,
    border: int = 3,
) -> Mast3rMatcher:
    """A `Scene.match_fn` giving MASt3R matches between any two frames (model run per pair)."""
    if checkpoint is not None:
        _checkpoint_identity(Path(checkpoint))
    return Mast3rMatcher(
        checkpoint=None if checkpoint is None else Path(checkpoint),
        model=model,
        device=device,
        size=size,
        subsample=subsample,
        min_conf=min_conf,
        border=border,
    )


def attach_mast3r_matches(
    scene: Scene,
    *,
    checkpoint: str | Path,
    device: str = "cpu",
    size: int = 512,
    min_conf: float = DEFAULT_MATCH_MIN_CONF,
) -> Scene:
    """The scene with MASt3R matches as its correspondence provider (`--matches mast3r`).

    For scenes that keep their own geometry (RGB-D scans) or have none (video for tracking):
    frames are matched from their working-resolution images. The model is loaded here, so a bad
    checkpoint fails before the run starts.
    """
    model = load_mast3r(checkpoint, device=device)
    matcher = mast3r_match_fn(model=model, device=device, size=size, min_conf=min_conf)
    meta = dict(scene.meta)
    meta.update(
        matches="mast3r",
        mast3r_matches={"checkpoint": str(checkpoint), "size": size, "min_conf": min_conf},
    )
    return dataclasses.replace(scene, match_fn=matcher, meta=meta)
