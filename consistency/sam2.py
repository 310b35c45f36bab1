"""The SAM 2 backend of the `Segmenter` protocol, on Meta's `sam2` package (optional).

`pip install sam2` (an sdist; set `SAM2_BUILD_CUDA=0` where no CUDA toolkit is installed, the
image predictor does not need the extension). Models are SAM 2's own hydra configs
(`SAM2_ARCHS`), optionally with hydra overrides, so a test can build a tiny random model through
the same path as a user's Hiera-L. Checkpoints (`{"model": state_dict}` as Meta releases them)
are read with `torch.load(..., map_location="cpu", weights_only=True)` and checked against the
model before loading; bad files raise `CheckpointError` as the SAM backend does.

Only the image predictor and the automatic mask generator are used: MastSAM does the tracking,
not SAM 2's video memory.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
import tyro

from lift3d.checkpoints import load_failure, state_dict_mismatch, state_dict_of
from lift3d.checks import check_array
from lift3d.consistency.prompts import check_decoding_options, decode_grouped, prompt_sets
from lift3d.consistency.sam import SamAutoConfig
from lift3d.consistency.segmenter import Masks
from lift3d.devices import resolve_device
from lift3d.errors import CheckpointError, InputError, NotInstalledError

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sam2Arch:
    """A SAM 2 model: one of the `sam2` package's hydra configs, plus overrides."""

    config: str
    """Config inside the sam2 package, e.g. `configs/sam2.1/sam2.1_hiera_l.yaml`."""
    overrides: tuple[str, ...] = ()
    """Hydra overrides (`++model.image_size=256`, ...); empty for the released models."""


SAM2_ARCHS: MappingProxyType[str, Sam2Arch] = MappingProxyType(
    {
        f"{version}_hiera_{size}": Sam2Arch(f"configs/{version}/{version}_hiera_{size}.yaml")
        for version in ("sam2.1", "sam2")
        for size in ("t", "s", "b+", "l")
    }
)
"""The released SAM 2 and SAM 2.1 checkpoints' models."""

# trunk width and block count of the released Hiera sizes, to name a checkpoint of another size
_HIERA_SIZES = {(96, 12): "t", (96, 16): "s", (112, 24): "b+", (144, 48): "l"}

# what `sam2.build_sam.build_sam2(apply_postprocessing=True)` adds (no effect on the weights)
_POSTPROCESSING = (
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
)


@dataclass
class Sam2AutoConfig(SamAutoConfig):
    """Parameters of SAM 2's automatic mask generator (`SAM2AutomaticMaskGenerator`)."""

    pred_iou_thresh: float = 0.8
    """Drop masks whose predicted IoU is below this (SAM 2's default)."""
    use_m2m: bool = False
    """Refine each mask once more with its own low-resolution logits as a mask prompt."""


@dataclass
class Sam2Config:
    """SAM 2 as the run's segmenter: its checkpoint, model and decoding (`Sam2Segmenter`)."""

    checkpoint: Path | None = None
    """The SAM 2 checkpoint (sam2.1_hiera_large.pt, ...); weights are never downloaded."""
    # `--sam2-model`: the flag's name before the segmenter settings were nested (users' scripts)
    model: Annotated[
        Literal[
            "sam2.1_hiera_t",
            "sam2.1_hiera_s",
            "sam2.1_hiera_b+",
            "sam2.1_hiera_l",
            "sam2_hiera_t",
            "sam2_hiera_s",
            "sam2_hiera_b+",
            "sam2_hiera_l",
        ],
        tyro.conf.arg(aliases=("--sam2-model",), metavar="MODEL"),
    ] = "sam2.1_hiera_l"
    """SAM 2 model of the checkpoint: sam2.1_hiera_t, _s, _b+ or _l, or the same sizes of sam2_hiera."""
    amg: Sam2AutoConfig = field(default_factory=Sam2AutoConfig)
    """SAM 2's automatic mask generator (the masks of a view, before any prompt)."""
    multimask_max_points: int = 1
    """Prompt sets of at most this many points keep the best of SAM 2's 3 masks, larger ones get its single mask (0: never multimask)."""
    max_batch: int = 64
    """Prompt sets decoded at once (bounds GPU memory)."""

    def setup(self, *, device: str = "auto") -> Sam2Segmenter:
        """The SAM 2 segmenter of these settings on `device` (`auto`: CUDA when available).

        Raises:
            InputError: no checkpoint given. NotInstalledError: no `sam2` package.
            CheckpointError: the checkpoint does not hold this model.
        """
        if self.checkpoint is None:
            raise InputError(
                None,
                "--segmenter sam2 needs --segmenter.sam2.checkpoint PATH (weights cannot be downloaded by lift3d)",
            )
        return Sam2Segmenter(
            self.checkpoint,
            model=self.model,
            device=device,
            amg=self.amg,
            multimask_max_points=self.multimask_max_points,
            max_batch=self.max_batch,
        )


def sam2_version() -> str:
    """The installed sam2 version (for run.json), or 'not installed'."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sam2")
    except PackageNotFoundError:
        return "not installed"


def _import_sam2():
    try:
        import sam2  # noqa: F401  (initialises hydra's config search path)
    except ImportError as e:
        raise NotInstalledError(
            "SAM 2 is not installed: SAM2_BUILD_CUDA=0 pip install sam2 (or pip install 'lift3d[sam2]')"
        ) from e


def _resolve_arch(arch: str | Sam2Arch) -> tuple[str, Sam2Arch]:
    if isinstance(arch, Sam2Arch):
        return next((k for k, v in SAM2_ARCHS.items() if v == arch), "custom"), arch
    if arch not in SAM2_ARCHS:
        raise InputError(
            None, f"unknown SAM 2 model {arch!r}; expected one of {', '.join(SAM2_ARCHS)}"
        )
    return arch, SAM2_ARCHS[arch]


def build_sam2(arch: str | Sam2Arch) -> SAM2Base:
    """A randomly initialised SAM 2 of `arch` (a preset name or a `Sam2Arch`), in eval mode, on CPU."""
    _import_sam2()
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    _, a = _resolve_arch(arch)
    cfg = compose(config_name=a.config, overrides=[*_POSTPROCESSING, *a.overrides])
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True).eval()


def load_sam2(checkpoint: str | Path, arch: str | Sam2Arch, *, device: str = "cpu") -> SAM2Base:
    """SAM 2 of `arch` with the weights of a checkpoint, in eval mode on `device`.

    Raises:
        CheckpointError: the file is missing, not a readable torch file, not a state dict, or a
            state dict of another model (the message names the Hiera size it looks like).
    """
    import torch

    name, a = _resolve_arch(arch)
    path = Path(checkpoint)
    expected = f"a SAM 2 {'' if name == 'custom' else name + ' '}checkpoint"
    if not path.is_file():
        raise CheckpointError(
            f"{path}: SAM 2 checkpoint {'is a folder' if path.is_dir() else 'not found'}; expected {expected}"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ... on bad files
        # torch's own text is not chained on: it advises weights_only=False
        raise CheckpointError(f"{path}: {load_failure(path, e)}; expected {expected}") from None
    state = state_dict_of(obj)
    if state is None:
        raise CheckpointError(
            f"{path}: holds a {type(obj).__name__}, not a state dict of tensors; expected {expected}"
        )
    # built on CPU, not the meta device: SAM 2's RoPE attention keeps plain tensors outside the
    # state dict that a meta build would leave empty
    model = build_sam2(a)
    reference = model.state_dict()
    problem = state_dict_mismatch(state, reference)
    if problem:
        raise CheckpointError(
            f"{path}: does not fit {expected} ({_describe(reference)}): {problem}; {_looks_like(state)}"
        )
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def _hiera(state: dict) -> tuple[int, int] | None:
    """(trunk width, trunk blocks) of a SAM 2 state dict, None if it has no Hiera trunk."""
    w = state.get("image_encoder.trunk.patch_embed.proj.weight")
    blocks = {int(k.split(".")[3]) for k in state if k.startswith("image_encoder.trunk.blocks.")}
    return (int(w.shape[0]), len(blocks)) if w is not None and blocks else None


def _describe(state: dict) -> str:
    h = _hiera(state)
    return "no Hiera trunk" if h is None else f"Hiera width {h[0]}, {h[1]} blocks"


def _looks_like(state: dict) -> str:
    h = _hiera(state)
    if h is None:
        return "it does not look like a SAM 2 image encoder at all"
    size = _HIERA_SIZES.get(h)
    if size is None:
        return f"it looks like a SAM 2 ({_describe(state)})"
    return f"it looks like SAM 2 hiera_{size} ({_describe(state)}): pass the matching sam2.1_hiera_{size} or sam2_hiera_{size} model"


class Sam2Segmenter:
    """SAM 2 (image predictor + automatic generator) behind the `Segmenter` protocol.

    Args:
        checkpoint: the checkpoint (`sam2.1_hiera_large.pt`, ...).
        model: preset name (`sam2.1_hiera_l`, ...) or a `Sam2Arch`, matching the checkpoint.
        device: torch device; `auto` picks CUDA when available, where the networks run under
            bfloat16 autocast.
        amg: automatic mask generator parameters for `generate`.
        multimask_max_points: `predict` keeps the best (by predicted IoU) of SAM 2's 3 masks only
            for prompt sets of at most this many real points (SAM 2's own `multimask_max_pt_num:
            1`); the others get SAM 2's single mask, with its fallback to the best of the 3 when
            that one is unstable (`dynamic_multimask_via_stability`). 0: never multimask.
        max_batch: `predict` decodes at most this many prompt sets at once.
    """

    name = "sam2"

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        model: str | Sam2Arch = "sam2.1_hiera_l",
        device: str = "auto",
        amg: Sam2AutoConfig | None = None,
        multimask_max_points: int = 1,
        max_batch: int = 64,
    ):
        check_decoding_options(multimask_max_points, max_batch)
        self.device = resolve_device(device)
        self.arch_name, self.arch = _resolve_arch(model)
        self.checkpoint = Path(checkpoint)
        self.model = load_sam2(checkpoint, self.arch, device=self.device)
        self.amg = amg or Sam2AutoConfig()
        self.multimask_max_points = multimask_max_points
        self.max_batch = max_batch
        self.predictor = _make_predictor(self.model, autocast=self.device.startswith("cuda"))

    def describe(self) -> dict:
        """What made the masks, for run.json."""
        return {
            "segmenter": f"sam2 {self.arch_name}",
            "checkpoint": str(self.checkpoint),
            "sam2": sam2_version(),
            "device": self.device,
            "amg": asdict(self.amg),
            "multimask_max_points": self.multimask_max_points,
        }

    def image_features(self, image: np.ndarray) -> np.ndarray:  # [h, w, C] float32
        """SAM 2's image embedding of the frame (the cached one; SAM 2 resizes the frame to its
        square input, so every cell covers the frame). BYOCL's latent."""
        image = check_array(image, ["H", "W", 3], dtype=np.uint8, name="image")
        self.predictor.embed(image)
        f = self.predictor._features["image_embed"][0].float().permute(1, 2, 0).cpu().numpy()
        return np.ascontiguousarray(f, np.float32)

    def generate(self, image: np.ndarray, *, geometry: np.ndarray | None = None) -> Masks:
        """Automatic masks (SAM 2's grid-prompted generator); `geometry` is ignored.

        Returns:
            Masks with masks [K, H, W] bool and scores [K] float32 (predicted IoU); K may be 0.
        """
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        image = check_array(image, ["H", "W", 3], dtype=np.uint8, name="image")
        self.predictor.embed(image)
        generator = SAM2AutomaticMaskGenerator(self.model, **asdict(self.amg))
        # our predictor reuses the cached embedding of the frame; it borrows the transforms of
        # the generator's own one, which fill holes and remove sprinkles up to
        # min_mask_region_area (`predict` keeps SAM2ImagePredictor's default: no clean-up)
        with self.predictor.transforms_of(generator.predictor):
            generator.predictor = self.predictor
            return Masks.from_records(generator.generate(image), (image.shape[1], image.shape[0]))

    def predict(
        self,
        image: np.ndarray,  # [H, W, 3] uint8
        points: np.ndarray,  # [B, P, 2] float (u, v) pixels
        point_labels: np.ndarray,  # [B, P] int: 1 foreground, 0 background, -1 padding
        *,
        geometry: np.ndarray | None = None,
    ) -> Masks:
        """One mask per prompt set, decoded against the cached embedding.

        Points outside the image are padding; a set without any real point gives an empty mask.
        Each set's mask is the one `SAM2ImagePredictor.predict` gives for its real points alone
        (sets are decoded in groups of equal point count, see `prompts.decode_grouped`).

        Returns:
            Masks with masks [B, H, W] bool at the image size and scores [B] float32.
        """
        points, labels = prompt_sets(image, points, point_labels)
        if not (labels >= 0).any():  # nothing to decode: no embedding needed
            return decode_grouped(
                points, labels, image.shape[:2], None, max_batch=1, multimask_max_points=0
            )
        self.predictor.embed(image)

        def decode(pts: np.ndarray, lab: np.ndarray, multimask: bool):
            _, coords, lt, _ = self.predictor._prep_prompts(pts, lab, None, None, True)
            m, iou, _ = self.predictor._predict(coords, lt, multimask_output=multimask)
            return m, iou

        return decode_grouped(
            points,
            labels,
            image.shape[:2],
            decode,
            max_batch=self.max_batch,
            multimask_max_points=self.multimask_max_points,
        )


def _make_predictor(model: SAM2Base, *, autocast: bool):
    """A `SAM2ImagePredictor` that caches one frame's embedding, works at the model's input size
    (SAM 2 hard-codes the feature sizes of 1024) and runs under bf16 autocast on CUDA."""
    import contextlib

    import torch
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    def amp():
        return (
            torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        )

    class _FramePredictor(SAM2ImagePredictor):
        def __init__(self, sam: SAM2Base):
            self._frame: np.ndarray | None = None
            self._key: tuple | None = None
            self._state: tuple | None = None
            super().__init__(sam)
            s = sam.image_size
            self._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]

        def embed(self, image: np.ndarray) -> None:
            key = (id(image), image.shape)
            if self._key == key and self._frame is image:
                self._restore()
                return
            with amp():
                super().set_image(image)
            # keep the array so its id cannot be reused by another frame while cached
            self._frame, self._key = image, key
            self._state = (self._features, self._orig_hw)

        def set_image(self, image) -> None:
            f = self._frame
            same = (
                isinstance(image, np.ndarray)
                and f is not None
                and image.shape == f.shape
                and image.strides == f.strides
                and image.__array_interface__["data"][0] == f.__array_interface__["data"][0]
            )
            if same:
                self._restore()
            else:
                with amp():
                    super().set_image(image)

        def _restore(self) -> None:
            self._features, self._orig_hw = self._state
            self._is_image_set, self._is_batch = True, False

        @contextlib.contextmanager
        def transforms_of(self, other: SAM2ImagePredictor):
            """Post-process masks as `other` does (its mask threshold, hole and sprinkle areas)."""
            own = self._transforms, self.mask_threshold
            self._transforms, self.mask_threshold = other._transforms, other.mask_threshold
            try:
                yield
            finally:
                self._transforms, self.mask_threshold = own

        @torch.no_grad()
        def _predict(self, *args, **kwargs):
            with amp():
                masks, iou, low = super()._predict(*args, **kwargs)
            if masks.dtype != torch.bool:
                masks = masks.float()
            return masks, iou.float(), low.float()

    return _FramePredictor(model)
