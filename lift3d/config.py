"""The configuration of a `lift3d segment` run: dataclasses all the way down, from which the CLI is derived.

`SegmentConfig` holds one group per stage, as `lift3d segment --help` shows them: input,
segmenter, tracker, lifting (with superpoints and merging), metric (`--metric.*`, the
`MetricConfig` that `lift3d metric` takes too), output. The segmenter is a
`SegmenterConfig`: `--segmenter NAME` picks one, each backend keeps its own settings
(`--segmenter.classical.merge-threshold 15`, `--segmenter.sam.checkpoint PATH`), and `setup()`
builds it, as nerfstudio's `InstantiateConfig.setup()` builds what a config describes.

The input, lifting and output groups keep the flat option names they had before they were
groups (`--scene`, `--vote`, `--out`; `--segment.max-frames` in `lift3d batch`): `FLAT_GROUPS`.
`to_options()` and `from_options()` convert between the groups and those flat names; run.json
records the config in that form, so it reads like the command line that made it.

Light on purpose (no torch, no open3d): `lift3d --help` imports it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import tyro

from lift3d.consistency.classical import ClassicalConfig
from lift3d.consistency.geometric import GeometricConfig
from lift3d.consistency.merging import MergeConfig
from lift3d.consistency.metric import MetricConfig
from lift3d.consistency.sam import SamConfig
from lift3d.consistency.sam2 import Sam2Config
from lift3d.consistency.simulated import SimulatedConfig
from lift3d.consistency.tracker import TrackerConfig
from lift3d.errors import InputError
from lift3d.recon.mast3r import Mast3rOptions
from lift3d.recon.superpoints import SuperpointConfig

if TYPE_CHECKING:
    from lift3d.consistency.segmenter import Segmenter
    from lift3d.pipeline import ScenePoints
    from lift3d.recon.scene import Scene

#: a group whose options keep flat names: `--scene`, not `--input.scene` (`lift3d segment` gives
#: it its own help section, `cli.Segment`)
_FLAT = tyro.conf.arg(name="")

SegmenterName = Literal[
    "auto", "geometric", "classical-2d", "classical", "sam", "sam2", "simulated"
]

#: segmenter name -> the `SegmenterConfig` field holding its settings
_SETTINGS_OF = {
    "geometric": "geometric",
    "classical-2d": "classical",
    "classical": "classical",
    "sam": "sam",
    "sam2": "sam2",
    "simulated": "simulated",
}


@dataclass
class SegmenterConfig:
    """The segmenter of each view's masks: `--segmenter NAME` picks it; each one keeps its own settings below."""

    name: Annotated[SegmenterName, tyro.conf.arg(aliases=("--segmenter",), metavar="NAME")] = "auto"
    """auto, geometric, classical-2d, sam, sam2 or simulated. auto: `geometric` on scans with sensor depth + poses, else `classical-2d`. geometric: object candidates from the scan's 3D structure (weight-free). classical-2d: weight-free per-image superpixels (`classical` is its old name). sam / sam2: need their checkpoint. simulated: masks simulated from the scan's instance ground truth (not SAM)."""
    geometric: GeometricConfig = field(default_factory=GeometricConfig)
    """--segmenter geometric: object candidates over the scan's superpoints (convexity + colour)."""
    classical: ClassicalConfig = field(default_factory=ClassicalConfig)
    """--segmenter classical-2d: superpixels merged by colour, depth jumps and surface convexity."""
    sam: SamConfig = field(default_factory=SamConfig)
    """--segmenter sam: Segment Anything."""
    sam2: Sam2Config = field(default_factory=Sam2Config)
    """--segmenter sam2: SAM 2 (pip install 'lift3d[sam2]')."""
    simulated: SimulatedConfig = field(default_factory=SimulatedConfig)
    """--segmenter simulated: SAM-like granularity changes simulated from ground truth (noise, p-split ...)."""

    def __post_init__(self):
        # `--segmenter sam2 --sam-checkpoint PATH` (the spelling before the settings were nested,
        # still in users' scripts) names SAM 2's checkpoint; the old flag is now SAM's alias
        if self.name == "sam2" and self.sam2.checkpoint is None and self.sam.checkpoint is not None:
            self.sam2 = replace(self.sam2, checkpoint=self.sam.checkpoint)
            self.sam = replace(self.sam, checkpoint=None)

    @property
    def per_scene(self) -> bool:
        """Whether the segmenter is built from each scene (its 3D candidates, its GT, or `auto`'s
        choice between them), so a batch worker cannot build one for all scenes."""
        return self.name in ("auto", "geometric", "simulated")

    @property
    def selected(self):
        """The settings of the segmenter `name` names (None for an unresolved `auto`)."""
        return getattr(self, _SETTINGS_OF[self.name]) if self.name in _SETTINGS_OF else None

    @property
    def checkpoint(self) -> Path | None:
        """The SAM / SAM 2 checkpoint the named segmenter loads (None for the weight-free ones)."""
        return self.selected.checkpoint if self.name in ("sam", "sam2") else None

    def resolve(self, scene: Scene | None = None) -> SegmenterConfig:
        """This config as it applies to `scene`: `auto` picks `geometric` for sensor depth + poses,
        else (or without a scene) `classical-2d`; `classical` is named `classical-2d`; the
        geometric segmenter's `up` is estimated from the scene's cameras when not given."""
        name = self.name
        if name == "auto":
            # depth rendered from splats is smoothed and biased towards the camera, and splat
            # centres are too sparse for k-NN superpoints: per-image masks do better there
            sensor = (
                scene is not None
                and scene.has_geometry
                and scene.meta.get("depth_source") != "splats"
            )
            name = "geometric" if sensor else "classical-2d"
        name = "classical-2d" if name == "classical" else name
        geometric = self.geometric
        if (
            name == "geometric"
            and geometric.up is None
            and scene is not None
            and scene.has_geometry
        ):
            import numpy as np

            pick = np.unique(
                np.linspace(0, len(scene) - 1, min(len(scene), 24)).round().astype(int)
            )
            geometric = geometric.resolved([scene[int(i)].T_world_camera for i in pick])
        return replace(self, name=name, geometric=geometric)

    def setup(
        self, *, scene: Scene | None = None, points: ScenePoints | None = None, device: str = "auto"
    ) -> Segmenter:
        """Build the segmenter this config names, resolved on `scene` (`resolve`).

        Args:
            scene: the scene it segments: `auto` chooses by it, `simulated` reads its GT.
            points: the scene's points and superpoints (`pipeline.scene_points`), for `geometric`.
            device: torch device of SAM / SAM 2 (`auto`: CUDA when available).

        Raises:
            InputError: the segmenter needs what is not given (geometry, GT, a checkpoint).
        """
        cfg = self.resolve(scene)
        if cfg.name == "geometric":
            if points is None:
                raise InputError(
                    scene.root if scene is not None else None,
                    "--segmenter geometric needs a scene with depth + poses",
                )
            return cfg.geometric.setup(
                points.xyz,
                points.rgb,
                points.superpoints,
                faces=points.faces,
                adjacency=points.adjacency,
                info={"points": points.source},
            )
        if cfg.name == "simulated":
            if scene is None:
                raise InputError(
                    None, "--segmenter simulated needs a scan with instance ground truth"
                )
            return cfg.simulated.setup(scene.root)
        if cfg.name == "classical-2d":
            return cfg.classical.setup()
        return cfg.selected.setup(device=device)

    def object_candidates(self, scene: Scene, points: ScenePoints, segmenter=None):
        """The scene's 3D object candidates (`ObjectCandidates`): the geometric segmenter's own
        when `segmenter` is one, else made with this config's geometric settings (`up` resolved
        on `scene`). What the lifting completes unseen objects with, whatever the segmenter."""
        from lift3d.consistency.geometric import scene_candidates

        geometric = replace(self, name="geometric").resolve(scene).geometric
        return scene_candidates(points, segmenter, config=geometric)

    def settings(self) -> dict:
        """The name and, as JSON values, the settings that can make the masks: the named
        segmenter's (both candidates' for an unresolved `auto`). What run.json records of a
        resolved config, and what the run's fingerprint compares."""
        names = ("geometric", "classical-2d") if self.name == "auto" else (self.name,)
        return {
            "name": self.name,
            **{_SETTINGS_OF[n]: _json(asdict(getattr(self, _SETTINGS_OF[n]))) for n in names},
        }


@dataclass
class InputConfig:
    """The scene, and where its geometry and correspondences come from."""

    scene: Path
    """Scene folder or file: ScanNet export, .sens, image folder, video, COLMAP, transforms.json, Redwood."""
    format: Literal[
        "auto", "scannet", "sens", "nerfstudio", "colmap", "redwood", "video", "images"
    ] = "auto"
    """Scene format; `auto` detects it from the folder's content."""
    size: tuple[int, int] | None = None
    """Working resolution W H; default: the depth size for RGB-D scans, else the image size capped at 640."""
    frames: str | None = None
    """Frame subset as START:STOP:STEP (Python slice over the scene's frames), or one index I."""
    max_frames: int | None = None
    """Keep at most this many frames (evenly spaced) after --frames."""
    recon: Literal["auto", "depth", "mast3r", "splats"] = "auto"
    """Geometry: sensor depth + poses, MASt3R for image-only scenes, or depth rendered from --splats at the scene's cameras (COLMAP, transforms.json); auto picks depth, then splats, then MASt3R (with --mast3r-checkpoint), else none: a video or image folder is tracked by flow, 2D outputs only."""
    matches: Literal["auto", "reprojection", "mast3r", "flow"] = "auto"
    """Correspondences for tracking: exact reprojection (needs depth + poses), MASt3R, or forward-backward checked optical flow between consecutive frames (the default without geometry)."""
    mast3r_checkpoint: Path | None = None
    """MASt3R checkpoint for --recon/--matches mast3r."""
    splats: Path | None = None
    """A trained 3DGS PLY in the scene's world frame: written back labeled as splats.ply; on a posed scene without depth (COLMAP, transforms.json) the depth of every view is rendered from it."""
    splat_min_alpha: float = 0.5
    """Depth rendered from --splats: pixels whose accumulated opacity is below this have no depth."""
    splat_min_fit: float = 0.5
    """Refuse --splats when fewer than this share of splat centres lie inside some camera's view (splats and cameras in different world frames)."""
    mesh: Path | None = None
    """The scan's mesh PLY (world frame), for a scan whose folder lacks it: its vertices are labeled (points.ply, mesh.ply) instead of fused pointmaps, and the ScanNet export is written."""


@dataclass
class LiftingConfig:
    """The label maps voted onto the scene's points (mesh vertices, else fused pointmaps) and splats."""

    vote: Literal["superpoints", "points"] = "superpoints"
    """Lifting: each superpoint takes the majority of its points' votes and every point of it (unseen ones included) its label; `points`: every point votes alone."""
    unlabeled_share: float = 0.7
    """A superpoint stays unlabeled when more than this share of its seen points fell on unlabeled pixels (a mask spilling over its edge in a few views does not paint it; 1 disables). 30 frames of scene0000_00, masks simulated from GT at noise 0.15: AP50 / AP25 0.694 / 0.819 at 1, 0.810 / 0.857 at 0.7."""
    mask_size_weight: float = 0.0
    """Superpoint votes: each view's votes for an ID are divided by (the points it sees of that mask) ** this, so the more specific of two masks over a superpoint wins (0: every point counts alike). scene0000_00, masks simulated at noise 0.15, AP50 / AP25 at 0 / 0.5: 30 frames (::10) 0.777 / 0.881 vs 0.863 / 0.901, all 300 frames (320x240) 0.863 / 0.920 vs 0.791 / 0.901; the geometric default's 30 frames 0.312 / 0.668 vs 0.272 / 0.620. It helps when few views see an object, and costs on the full scan."""
    voxel_size: float = 0.02
    """Voxel size (metres) of the fused point cloud when the scene has no mesh."""
    fill_radius: float = 0.1
    """Mesh vertices no view saw take the label of the nearest labeled vertex along the mesh surface, up to this many metres (0 disables); they keep confidence 0."""
    min_instance_points: int = 0
    """Drop lifted instances with fewer points than this (0 keeps all)."""
    unseen_objects: bool = True
    """3D object candidates (the geometric segmenter's, convexity + colour) of which the views labeled at most a fifth (before the surface fill) become instances of their own with confidence 0 (a frame subset leaves whole objects unseen); instances.json lists them with no frames."""


@dataclass
class OutputConfig:
    """The output folder and what is written there besides the label maps and the 3D outputs."""

    out: Path | None = None
    """Output folder; default: outputs/<scene name>."""
    preview: bool = True
    """Write overlays, contact sheet, heat-maps and the HTML report."""
    baseline: bool = False
    """Also run the segmenter frame by frame (no tracking) for the side-by-side preview."""
    resume: bool = False
    """Skip frames whose label maps already exist in OUT/masks."""


#: the groups whose options keep flat names, on the command line and in run.json
FLAT_GROUPS = {"input": InputConfig, "lifting": LiftingConfig, "output": OutputConfig}


@dataclass
class SegmentConfig:
    """Run the whole flow on one scene: geometry, consistent masks, lifting, export, metric, previews."""

    input: Annotated[InputConfig, _FLAT]
    """The scene, and where its geometry and correspondences come from."""
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    """The segmenter of each view's masks: `--segmenter NAME` picks it; each one keeps its own settings below."""
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    """MastSAM tracker settings."""
    lifting: Annotated[LiftingConfig, _FLAT] = field(default_factory=LiftingConfig)
    """The label maps voted onto the scene's points (mesh vertices, else fused pointmaps) and splats."""
    superpoints: SuperpointConfig = field(default_factory=SuperpointConfig)
    """Superpoints of the scene's points (a ScanNet scan's segs.json, or a graph segmentation)."""
    merge: MergeConfig = field(default_factory=MergeConfig)
    """Multi-view merging of MastSAM's IDs into 3D instances by view consensus (--merge.no-enabled: off)."""
    metric: MetricConfig = field(default_factory=MetricConfig)
    """The metric H of the label maps (--metric.eps radius, --metric.no-pairwise, --metric.max-points memory bound ...; --eps, --no-metric-pairwise and --metric-max-points still work)."""
    output: Annotated[OutputConfig, _FLAT] = field(default_factory=OutputConfig)
    """The output folder and what is written there besides the label maps and the 3D outputs."""
    mast3r: Mast3rOptions = field(default_factory=Mast3rOptions)
    """MASt3R settings for --recon mast3r (network size, pair graph, alignment iterations)."""
    device: str = "auto"
    """Torch device for the models: auto, cpu, cuda, cuda:1 ..."""
    seed: int = 0
    """Random seed (K-Means, sampling): the same input and seed give the same output."""

    @classmethod
    def from_options(cls, **options) -> SegmentConfig:
        """A config from `lift3d segment`'s option names, flat where its flags are:
        `SegmentConfig.from_options(scene=p, max_frames=2, preview=False, tracker=TrackerConfig(...))`.
        `segmenter` may be a name (`"classical-2d"`, as `--segmenter classical-2d`).

        Raises:
            TypeError: a name the config does not have.
        """
        owner = {f.name: g for g, c in FLAT_GROUPS.items() for f in dataclasses.fields(c)}
        grouped: dict[str, dict] = {g: {} for g in FLAT_GROUPS}
        rest = {}
        for k, v in options.items():
            if k in owner:
                grouped[owner[k]][k] = v
            else:
                rest[k] = v
        if isinstance(rest.get("segmenter"), str):
            rest["segmenter"] = SegmenterConfig(name=rest["segmenter"])
        return cls(**{g: c(**grouped[g]) for g, c in FLAT_GROUPS.items()}, **rest)

    def to_options(self) -> dict:
        """The config by `lift3d segment`'s option names: the flat groups' fields at the top level,
        every other field (`tracker`, `segmenter`, ...) as it is."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in FLAT_GROUPS:
                out.update({g.name: getattr(value, g.name) for g in dataclasses.fields(value)})
            else:
                out[f.name] = value
        return out


def config_to_json(cfg: SegmentConfig) -> dict:
    """The config as plain values by option name (never pickled classes: renaming a class must not
    break old runs); `runfile.read_run_config` reads it back."""
    return _json(
        {k: asdict(v) if dataclasses.is_dataclass(v) else v for k, v in cfg.to_options().items()}
    )


def _json(obj):
    """Plain JSON values (paths as strings, tuples as lists)."""
    return json.loads(json.dumps(obj, default=str))
