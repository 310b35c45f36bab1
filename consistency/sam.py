"""The SAM backend of the `Segmenter` protocol, on Meta's `segment-anything` package.

Architectures are plain dataclasses (`SamArch`, presets `SAM_ARCHS`) so a test can build a tiny
random model through the same code a user's ViT-H goes through. Checkpoints are read with
`torch.load(..., map_location="cpu", weights_only=True)` and checked against the architecture
before loading (never `segment_anything.build_sam`'s own unchecked `torch.load`): a missing,
corrupt or wrong-size file raises `CheckpointError` naming the file, what was expected and, for
a SAM of another size, which architecture it looks like.

The image embedding is computed once per frame, keyed on the image array object, and reused by
`generate` (the automatic mask generator) and every `predict`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
import tyro

from lift3d.checkpoints import load_failure, state_dict_mismatch, state_dict_of
from lift3d.checks import check_array
from lift3d.consistency.prompts import check_decoding_options, decode_grouped, prompt_sets
from lift3d.consistency.segmenter import Masks
from lift3d.devices import resolve_device
from lift3d.errors import CheckpointError, InputError

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamArch:
    """A SAM architecture: `segment_anything.build_sam._build_sam`'s constants made explicit."""

    encoder_embed_dim: int
    """ViT width."""
    encoder_depth: int
    """Number of ViT blocks."""
    encoder_num_heads: int
    """Attention heads of each ViT block."""
    encoder_global_attn_indexes: tuple[int, ...]
    """Blocks with global attention; the others attend within windows."""
    image_size: int = 1024
    """Side of the square model input (the longest image side is resized to it)."""
    prompt_embed_dim: int = 256
    """Channels of the image embedding, the prompt embeddings and the mask decoder."""
    vit_patch_size: int = 16
    """ViT patch size; the embedding grid is image_size / vit_patch_size on a side."""
    encoder_window_size: int = 14
    """Window of the windowed-attention blocks."""
    encoder_mlp_ratio: float = 4.0
    """MLP width of each ViT block relative to its embedding."""
    mask_in_chans: int = 16
    """Hidden channels of the prompt encoder's mask downscaling."""
    decoder_depth: int = 2
    """Two-way transformer blocks in the mask decoder."""
    decoder_mlp_dim: int = 2048
    """MLP width of the mask decoder's transformer."""
    decoder_num_heads: int = 8
    """Attention heads of the mask decoder's transformer."""
    iou_head_depth: int = 3
    """Layers of the IoU prediction head."""
    iou_head_hidden_dim: int = 256
    """Width of the IoU prediction head."""
    num_multimask_outputs: int = 3
    """Masks per prompt in multimask mode."""


SAM_ARCHS: MappingProxyType[str, SamArch] = MappingProxyType(
    {
        "vit_h": SamArch(1280, 32, 16, (7, 15, 23, 31)),
        "vit_l": SamArch(1024, 24, 16, (5, 11, 17, 23)),
        "vit_b": SamArch(768, 12, 12, (2, 5, 8, 11)),
    }
)
"""The three released SAM checkpoints' architectures (as `segment_anything.build_sam`)."""


@dataclass
class SamAutoConfig:
    """Parameters of SAM's automatic mask generator (`SamAutomaticMaskGenerator`)."""

    points_per_side: int = 32
    """The prompt grid has points_per_side**2 points over the image."""
    points_per_batch: int = 64
    """Grid points decoded at once (more is faster and uses more memory)."""
    pred_iou_thresh: float = 0.88
    """Drop masks whose predicted IoU is below this."""
    stability_score_thresh: float = 0.95
    """Drop masks whose stability under a shifted binarisation cutoff is below this."""
    stability_score_offset: float = 1.0
    """The cutoff shift (logits) used for the stability score."""
    box_nms_thresh: float = 0.7
    """Box IoU above which duplicate masks are suppressed."""
    crop_n_layers: int = 0
    """Also run on 2**i x 2**i crops for i = 1..crop_n_layers (slower, finds small objects)."""
    crop_nms_thresh: float = 0.7
    """Box IoU for suppressing duplicates between crops."""
    crop_overlap_ratio: float = 512 / 1500
    """Overlap of neighbouring crops, as a fraction of the image side."""
    crop_n_points_downscale_factor: int = 1
    """Points per side in crop layer i are divided by this to the power i."""
    min_mask_region_area: int = 0
    """Remove islands and holes smaller than this (pixels) from each mask (0: off)."""


@dataclass
class SamConfig:
    """SAM as the run's segmenter: its checkpoint, architecture and decoding (`SamSegmenter`)."""

    # `--sam-checkpoint` / `--sam-model`: the flags' names before the segmenter settings were
    # nested under `--segmenter.sam.`; users' scripts still pass them
    checkpoint: Annotated[Path | None, tyro.conf.arg(aliases=("--sam-checkpoint",))] = None
    """The SAM checkpoint (.pth); weights are never downloaded."""
    model: Annotated[
        Literal["vit_h", "vit_l", "vit_b"], tyro.conf.arg(aliases=("--sam-model",))
    ] = "vit_h"
    """SAM architecture of the checkpoint."""
    amg: SamAutoConfig = field(default_factory=SamAutoConfig)
    """SAM's automatic mask generator (the masks of a view, before any prompt)."""
    multimask_max_points: int = 1
    """Prompt sets of at most this many points keep the best of SAM's 3 masks, larger ones get its single mask (0: never multimask)."""
    max_batch: int = 64
    """Prompt sets decoded at once (bounds GPU memory)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """fp32 (as SAM was released and evaluated) or bf16 autocast on CUDA (faster; masks near a logit of 0 may flip)."""

    def setup(self, *, device: str = "auto") -> SamSegmenter:
        """The SAM segmenter of these settings on `device` (`auto`: CUDA when available).

        Raises:
            InputError: no checkpoint given. CheckpointError: it does not hold this architecture.
        """
        if self.checkpoint is None:
            raise InputError(
                None,
                "--segmenter sam needs --segmenter.sam.checkpoint PATH (weights cannot be downloaded by lift3d)",
            )
        return SamSegmenter(
            self.checkpoint,
            model=self.model,
            device=device,
            amg=self.amg,
            multimask_max_points=self.multimask_max_points,
            max_batch=self.max_batch,
            precision=self.precision,
        )


def sam_version() -> str:
    """The installed segment-anything version (for run.json), or 'not installed'."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("segment-anything")
    except PackageNotFoundError:
        return "not installed"


def _resolve_arch(arch: str | SamArch) -> tuple[str, SamArch]:
    if isinstance(arch, SamArch):
        name = next((k for k, v in SAM_ARCHS.items() if v == arch), "custom")
        return name, arch
    if arch not in SAM_ARCHS:
        raise InputError(
            None, f"unknown SAM model {arch!r}; expected one of {', '.join(SAM_ARCHS)}"
        )
    return arch, SAM_ARCHS[arch]


def build_sam(arch: str | SamArch) -> Sam:
    """A randomly initialised SAM of `arch` (a preset name or a `SamArch`), in eval mode, on CPU."""
    from functools import partial

    import torch
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    _, a = _resolve_arch(arch)
    grid = a.image_size // a.vit_patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=a.encoder_depth,
            embed_dim=a.encoder_embed_dim,
            img_size=a.image_size,
            mlp_ratio=a.encoder_mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=a.encoder_num_heads,
            patch_size=a.vit_patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(a.encoder_global_attn_indexes),
            window_size=a.encoder_window_size,
            out_chans=a.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=a.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(a.image_size, a.image_size),
            mask_in_chans=a.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=a.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=a.decoder_depth,
                embedding_dim=a.prompt_embed_dim,
                mlp_dim=a.decoder_mlp_dim,
                num_heads=a.decoder_num_heads,
            ),
            transformer_dim=a.prompt_embed_dim,
            iou_head_depth=a.iou_head_depth,
            iou_head_hidden_dim=a.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def load_sam(checkpoint: str | Path, arch: str | SamArch, *, device: str = "cpu") -> Sam:
    """SAM of `arch` with the weights of a state-dict checkpoint, in eval mode on `device`.

    Args:
        checkpoint: a `.pth` state dict as Meta releases them (`sam_vit_h_4b8939.pth`, ...).
        arch: preset name (`vit_h`, `vit_l`, `vit_b`) or a `SamArch`.
        device: torch device.

    Raises:
        CheckpointError: the file is missing, not a readable torch file, not a state dict, or a
            state dict of another model (the message says which architecture it looks like).
    """
    import torch

    name, a = _resolve_arch(arch)
    path = Path(checkpoint)
    expected = f"a SAM {'' if name == 'custom' else name + ' '}state dict ({_describe(a)})"
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "not found"
        raise CheckpointError(f"{path}: SAM checkpoint {what}; expected {expected}")
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
    # built on the meta device: no random init and no second copy of the weights (ViT-H is
    # 2.5 GB); the loaded tensors become the parameters
    with torch.device("meta"):
        sam = build_sam(a)
    expected_state = sam.state_dict()
    problem = state_dict_mismatch(state, expected_state)
    if problem:
        found = _arch_from_state_dict(state)
        if found is None:
            looks = "it does not look like a SAM image encoder at all"
        else:
            preset = next((k for k, v in SAM_ARCHS.items() if _same_shapes(v, found)), None)
            looks = f"it looks like SAM {preset}" if preset else "it looks like a SAM"
            looks += f" ({_describe(found)})"
            if preset:
                looks += f": pass --sam-model {preset}"
        raise CheckpointError(f"{path}: does not fit {expected}: {problem}; {looks}")
    state = {k: v.to(expected_state[k].dtype) for k, v in state.items()}
    sam.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in [*sam.named_parameters(), *sam.named_buffers()] if t.is_meta]
    if left:  # a segment-anything version with buffers we do not know how to fill
        raise CheckpointError(f"{path}: loaded, but {left[0]} was not in the checkpoint")
    return sam.to(device).eval()


def _arch_from_state_dict(state: dict) -> SamArch | None:
    """The architecture a SAM state dict was saved from, read off its tensor shapes (None if the
    image encoder's tensors are not there). Attention head counts of the mask decoder leave no
    trace in the weights and keep their defaults."""
    try:
        _, grid, _, dim = state["image_encoder.pos_embed"].shape
        patch = state["image_encoder.patch_embed.proj.weight"].shape[-1]
        blocks = sorted(
            {int(k.split(".")[2]) for k in state if k.startswith("image_encoder.blocks.")}
        )
        rel = [state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape for i in blocks]
        head_dim = rel[0][1]
        # global blocks attend over the whole grid: 2 * grid - 1 relative positions
        global_idx = tuple(i for i, r in zip(blocks, rel) if r[0] == 2 * grid - 1)
        windowed = [r[0] for i, r in zip(blocks, rel) if i not in global_idx]
        layers = {
            int(k.split(".")[3]) for k in state if k.startswith("mask_decoder.transformer.layers.")
        }
        iou_layers = {
            int(k.split(".")[3])
            for k in state
            if k.startswith("mask_decoder.iou_prediction_head.layers.")
        }
        return SamArch(
            encoder_embed_dim=int(dim),
            encoder_depth=len(blocks),
            encoder_num_heads=int(dim // head_dim),
            encoder_global_attn_indexes=global_idx,
            image_size=int(grid * patch),
            prompt_embed_dim=int(state["image_encoder.neck.0.weight"].shape[0]),
            vit_patch_size=int(patch),
            encoder_window_size=int((windowed[0] + 1) // 2) if windowed else 14,
            encoder_mlp_ratio=state["image_encoder.blocks.0.mlp.lin1.weight"].shape[0] / dim,
            mask_in_chans=int(state["prompt_encoder.mask_downscaling.3.weight"].shape[0]),
            decoder_depth=len(layers),
            decoder_mlp_dim=int(
                state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]
            ),
            iou_head_depth=len(iou_layers),
            iou_head_hidden_dim=int(
                state["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0]
            ),
            num_multimask_outputs=int(state["mask_decoder.mask_tokens.weight"].shape[0] - 1),
        )
    except (KeyError, IndexError, ValueError, AttributeError):
        return None


def _same_shapes(a: SamArch, b: SamArch) -> bool:
    """Equal up to the fields weights cannot reveal (decoder heads)."""
    return replace(a, decoder_num_heads=0) == replace(b, decoder_num_heads=0)


def _describe(a: SamArch) -> str:
    return (
        f"image {a.image_size}, ViT width {a.encoder_embed_dim}, {a.encoder_depth} blocks, "
        f"{a.encoder_num_heads} heads, embedding {a.prompt_embed_dim}"
    )


class SamSegmenter:
    """SAM (ViT-H/L/B or a custom `SamArch`) behind the `Segmenter` protocol.

    Args:
        checkpoint: the state-dict checkpoint (`.pth`).
        model: preset name (`vit_h`, `vit_l`, `vit_b`) or a `SamArch`, matching the checkpoint.
        device: torch device; `auto` picks CUDA when available.
        amg: automatic mask generator parameters for `generate`.
        multimask_max_points: `predict` asks for SAM's 3 candidate masks (and keeps the one with
            the highest predicted IoU) only for prompt sets of at most this many real points; the
            others get SAM's single mask. SAM's predictor advises multimask for one ambiguous
            point and a single mask for several, and SAM 2 does the same (`multimask_max_pt_num:
            1`): the best-scored of 3 part-level masks is often a part of the object. 0: never.
        max_batch: `predict` decodes at most this many prompt sets at once (bounds GPU memory).
        precision: `fp32` (default: SAM 1 was released and evaluated in float32) or `bf16`
            (bfloat16 autocast on CUDA, faster; masks near a logit of 0 may flip). CPU always
            runs in float32.
    """

    name = "sam"

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        model: str | SamArch = "vit_h",
        device: str = "auto",
        amg: SamAutoConfig | None = None,
        multimask_max_points: int = 1,
        max_batch: int = 64,
        precision: str = "fp32",
    ):
        check_decoding_options(multimask_max_points, max_batch)
        if precision not in ("fp32", "bf16"):
            raise InputError(None, f"SAM precision must be fp32 or bf16, got {precision!r}")
        self.device = resolve_device(device)
        self.arch_name, self.arch = _resolve_arch(model)
        self.checkpoint = Path(checkpoint)
        self.model = load_sam(checkpoint, self.arch, device=self.device)
        self.amg = amg or SamAutoConfig()
        self.multimask_max_points = multimask_max_points
        self.max_batch = max_batch
        self.precision = precision
        self.autocast = _use_bf16(self.device, precision)
        self.predictor = _make_predictor(self.model, autocast=self.autocast)

    def describe(self) -> dict:
        """What made the masks, for run.json."""
        return {
            "segmenter": f"sam {self.arch_name}",
            "checkpoint": str(self.checkpoint),
            "segment_anything": sam_version(),
            "device": self.device,
            "amg": asdict(self.amg),
            "multimask_max_points": self.multimask_max_points,
            "precision": "bf16" if self.autocast else "fp32",
        }

    def image_features(self, image: np.ndarray) -> np.ndarray:  # [h, w, C] float32
        """SAM's image embedding of the frame (the cached one), over the frame's own area: the
        cells of the padded square that the resized frame covers. BYOCL's latent."""
        image = check_array(image, ["H", "W", 3], dtype=np.uint8, name="image")
        self.predictor.embed(image)
        f = self.predictor.features[0].float().permute(1, 2, 0).cpu().numpy()
        ih, iw = self.predictor.input_size
        patch = self.model.image_encoder.img_size // f.shape[0]
        return np.ascontiguousarray(f[: -(-ih // patch), : -(-iw // patch)], np.float32)

    def generate(self, image: np.ndarray, *, geometry: np.ndarray | None = None) -> Masks:
        """Automatic masks (SAM's grid-prompted generator); `geometry` is ignored.

        Args:
            image: [H, W, 3] uint8 RGB.

        Returns:
            Masks with masks [K, H, W] bool and scores [K] float32 (predicted IoU); K may be 0.
        """
        from segment_anything import SamAutomaticMaskGenerator

        image = check_array(image, ["H", "W", 3], dtype=np.uint8, name="image")
        self.predictor.embed(image)
        generator = SamAutomaticMaskGenerator(self.model, **asdict(self.amg))
        # the generator's own predictor would embed the frame again; ours reuses the cached one
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

        Points outside the image (or not finite) are treated as padding; a set without any real
        point gives an empty mask with score 0. Each set's mask is the one
        `SamPredictor.predict` gives for its real points alone (see `prompts.decode_grouped`).

        Returns:
            Masks with masks [B, H, W] bool at the image size and scores [B] float32.
        """
        import torch

        points, labels = prompt_sets(image, points, point_labels)
        if not (labels >= 0).any():  # nothing to decode: no embedding needed
            return decode_grouped(
                points, labels, image.shape[:2], None, max_batch=1, multimask_max_points=0
            )
        self.predictor.embed(image)

        def decode(pts: np.ndarray, lab: np.ndarray, multimask: bool):
            coords = self.predictor.transform.apply_coords(pts, image.shape[:2])
            c = torch.as_tensor(coords, dtype=torch.float32, device=self.device)
            lt = torch.as_tensor(lab, dtype=torch.int64, device=self.device)
            m, iou, _ = self.predictor.predict_torch(c, lt, multimask_output=multimask)
            return m, iou

        return decode_grouped(
            points,
            labels,
            image.shape[:2],
            decode,
            max_batch=self.max_batch,
            multimask_max_points=self.multimask_max_points,
        )


def _use_bf16(device: str, precision: str) -> bool:
    """Whether the networks run under bfloat16 autocast: only on CUDA, only when asked."""
    return precision == "bf16" and device.startswith("cuda")


def _make_predictor(model: Sam, *, autocast: bool):
    """A `SamPredictor` that caches one frame's embedding and runs under bf16 autocast if asked."""
    import contextlib

    import torch
    from segment_anything import SamPredictor

    def amp():
        if autocast:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    class _FramePredictor(SamPredictor):
        """Embeds each frame once. `embed(image)` computes or restores the frame's embedding; the
        automatic generator's `set_image(crop)` restores it too when the crop is the whole frame
        (the same memory), and `reset_image` keeps the cache."""

        def __init__(self, sam: Sam):
            self._frame: np.ndarray | None = None
            self._key: tuple | None = None
            self._state: tuple | None = None
            super().__init__(sam)

        def embed(self, image: np.ndarray) -> None:
            key = (id(image), image.shape)
            if self._key == key and self._frame is image:
                self._restore()
                return
            super().set_image(image)
            # keep the array so its id cannot be reused by another frame while cached
            self._frame, self._key = image, key
            self._state = (self.features, self.original_size, self.input_size)

        def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
            f = self._frame
            same = (
                f is not None
                and image.shape == f.shape
                and image.strides == f.strides
                and image.__array_interface__["data"][0] == f.__array_interface__["data"][0]
            )
            if same and image_format == self.model.image_format:
                self._restore()
            else:
                super().set_image(image, image_format)

        def _restore(self) -> None:
            self.features, self.original_size, self.input_size = self._state
            self.is_image_set = True

        @torch.no_grad()
        def set_torch_image(
            self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]
        ) -> None:
            with amp():
                super().set_torch_image(transformed_image, original_image_size)

        @torch.no_grad()
        def predict_torch(self, *args, **kwargs):
            with amp():
                masks, iou, low = super().predict_torch(*args, **kwargs)
            # the generator's filtering and NMS run in float32 outside autocast
            if masks.dtype != torch.bool:
                masks = masks.float()
            return masks, iou.float(), low.float()

    return _FramePredictor(model)
