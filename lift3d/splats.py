"""Label maps voted onto trained 3D Gaussian splats, and the splats written back with the votes.

The splats are read by `lift3d.recon.splats` (`read_splats`: the 3DGS PLY as a `Splats`, the
file's vertex array kept whole); `write_splats` writes them back with every property, its order
and dtype, bit for bit, and only adds (or replaces) `label` and `confidence`.

Voting weights. Rendered front to back, splat i covers pixel p with weight
`w_ip = alpha_ip * T_ip`, `alpha_ip = min(0.999, o_i exp(-0.5 d^T S_i^-1 d))` (skipped below 1/255),
`T_ip = prod_{j before i} (1 - alpha_jp)`, stopping once T would fall to 1e-4 (gsplat's kernel:
`RasterizeToPixels3DGSFwd.cu`; the original 3DGS clamps alpha at 0.99). A view's vote for splat i
and label l is `W[i, l] = sum of w_ip over pixels p labeled l`. The gradient trick computes W with
one render: give every splat zero colours with one channel per label, render, and sum each
pixel's channel of its own label; the rendered value is linear in the colours with coefficient
`w_ip`, so `d loss / d colours[i, l] = W[i, l]`. On CUDA gsplat's rasterizer does the forward and
backward pass; `_splat_label_weights_reference` is the loop that defines W and the tests hold
both the CPU compositor and gsplat to it.

Pixel convention: lift3d puts pixel centres at integer (u, v); gsplat samples pixel (j, i) at
(j + 0.5, i + 0.5), so its intrinsics get the principal point shifted by half a pixel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from lift3d.devices import resolve_device
from lift3d.errors import InputError, NotInstalledError
from lift3d.points import PointLabels, labeled_views, lift_to_points
from lift3d.recon.splat_depth import (
    ALPHA_MAX,
    ALPHA_MIN,
    T_MIN,
    project_splats_torch,
)
from lift3d.recon.splats import Splats

if TYPE_CHECKING:
    import torch

    from lift3d.recon.scene import Frame

logger = logging.getLogger(__name__)


def write_splats(
    path: str | Path,
    splats: Splats,
    label: np.ndarray,  # [N] int32, 0 = unlabeled
    confidence: np.ndarray,  # [N] float32
) -> None:
    """Write splats back with every original property unchanged plus `label` and `confidence`.

    Binary little-endian, written to a temporary name and renamed. Existing `label` and
    `confidence` properties are replaced (a relabeled file keeps one of each, at the end).

    Raises:
        InputError: label or confidence not one value per splat.
    """
    from lift3d.io import write_ply

    n = len(splats)
    label = np.asarray(label)
    confidence = np.asarray(confidence)
    for name, arr in (("label", label), ("confidence", confidence)):
        if arr.shape != (n,):
            raise InputError(
                path, f"{name} must have one value per splat, shape [{n}], got {list(arr.shape)}"
            )
    kept = [
        (name, splats.vertex.dtype.fields[name][0])
        for name in splats.vertex.dtype.names
        if name not in ("label", "confidence")
    ]
    out = np.empty(n, dtype=[*kept, ("label", "<i4"), ("confidence", "<f4")])
    for name, _ in kept:
        out[name] = splats.vertex[name]
    out["label"] = label
    out["confidence"] = confidence
    write_ply(path, out, comments=splats.comments)


# --- splat weights -----------------------------------------------------------------------------


def _tensors(*arrays, device="cpu", dtype=None) -> tuple[torch.Tensor, ...]:
    """Arrays or tensors as tensors of one dtype (default float32) on one device."""
    import torch

    return tuple(
        torch.as_tensor(a if isinstance(a, torch.Tensor) else np.asarray(a)).to(
            device=device, dtype=dtype or torch.float32
        )
        for a in arrays
    )


def _gsplat_camera(
    K: torch.Tensor, T_world_camera: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(viewmat = world-to-camera, K with gsplat's half-pixel principal point) of one view."""
    import torch

    Kg = K.clone()
    Kg[0, 2] += 0.5
    Kg[1, 2] += 0.5
    return torch.linalg.inv(T_world_camera), Kg


def _project(
    means, quats, scales, K, T_world_camera, size, *, eps2d: float = 0.3, near_plane: float = 0.01
):
    """gsplat's pure-torch EWA projection of every splat into one view (gsplat pixel convention).

    Returns:
        keep: [M] long indices of the splats in front of the camera and near the image.
        means2d: [M, 2], conics: [M, 3] (a, b, c of the inverse 2D covariance), depths: [M].
    """
    viewmat, Kg = _gsplat_camera(K, T_world_camera)
    radii, means2d, depths, conics = project_splats_torch(
        means, quats, scales, viewmat, Kg, size, eps2d=eps2d, near_plane=near_plane
    )
    keep = (radii > 0).all(-1).nonzero().squeeze(-1)
    return keep, means2d[keep], conics[keep], depths[keep]


def _pixel_centres(size: tuple[int, int], dtype, device):
    import torch

    W, H = size
    v, u = torch.meshgrid(
        torch.arange(H, dtype=dtype, device=device),
        torch.arange(W, dtype=dtype, device=device),
        indexing="ij",
    )
    return u + 0.5, v + 0.5  # gsplat samples pixel (j, i) at (j + 0.5, i + 0.5)


def _splat_label_weights_reference(
    means,  # [N, 3] world frame
    quats,  # [N, 4] wxyz
    scales,  # [N, 3] metres (activated)
    opacities,  # [N] in [0, 1] (activated)
    K,  # [3, 3] lift3d convention (integer pixel centres)
    T_world_camera,  # [4, 4] cam2world
    size: tuple[int, int],  # (W, H)
    label_map,  # [H, W] int in [0, num_labels)
    num_labels: int,
) -> torch.Tensor:  # [N, num_labels] float64
    """W[i, l] = sum over pixels labeled l of alpha_i * T_i, splat by splat, front to back.

    float64, one splat at a time over all pixels; column 0 collects the unlabeled pixels.
    """
    import torch

    means, quats, scales, opacities, K, T = _tensors(
        means, quats, scales, opacities, K, T_world_camera, dtype=torch.float64
    )
    labels = torch.as_tensor(np.asarray(label_map)).long()
    keep, means2d, conics, depths = _project(means, quats, scales, K, T, size)
    u, v = _pixel_centres(size, torch.float64, "cpu")
    weights = torch.zeros(len(means), num_labels, dtype=torch.float64)
    transmittance = torch.ones_like(u)
    done = torch.zeros_like(u, dtype=torch.bool)
    for k in torch.argsort(depths, stable=True).tolist():
        i = int(keep[k])
        dx, dy = means2d[k, 0] - u, means2d[k, 1] - v
        a, b, c = conics[k]
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = torch.clamp(opacities[i] * torch.exp(-sigma), max=ALPHA_MAX)
        hit = ~done & (sigma >= 0) & (alpha >= ALPHA_MIN)
        next_t = transmittance * (1 - alpha)
        stop = hit & (next_t <= T_MIN)  # gsplat: this splat and all behind it are left out
        done |= stop
        hit &= ~stop
        w = torch.where(hit, alpha * transmittance, 0.0)
        transmittance = torch.where(hit, next_t, transmittance)
        for label in range(num_labels):
            weights[i, label] = w[labels == label].sum()
    return weights


def _torch_rasterizer(
    means, quats, scales, opacities, K, T_world_camera, size
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A differentiable pure-torch compositor `colors [N, C] -> rendered [H, W, C]` for one view.

    All splats against all pixels at once ([M, H*W] memory): for small scenes and tests. Same
    rules as the reference (and gsplat's kernel), written as a cumulative product instead.
    """
    import torch

    keep, means2d, conics, depths = _project(means, quats, scales, K, T_world_camera, size)
    order = torch.argsort(depths, stable=True)
    keep, means2d, conics = keep[order], means2d[order], conics[order]
    u, v = _pixel_centres(size, means.dtype, means.device)
    dx = means2d[:, 0:1] - u.reshape(1, -1)
    dy = means2d[:, 1:2] - v.reshape(1, -1)
    sigma = 0.5 * (conics[:, 0:1] * dx * dx + conics[:, 2:3] * dy * dy) + conics[:, 1:2] * dx * dy
    alpha = torch.clamp(opacities[keep, None] * torch.exp(-sigma), max=ALPHA_MAX)
    alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_MIN), alpha, 0.0)
    t_after = torch.cumprod(1 - alpha, dim=0)
    t_before = torch.cat([torch.ones_like(t_after[:1]), t_after[:-1]])
    # a pixel stops at the first splat that would take T to T_MIN; T never grows, so that splat
    # and every one behind it are exactly those with t_after <= T_MIN
    weights = alpha * t_before * (t_after > T_MIN)  # [M, H*W]
    W, H = size

    def rasterize(colors: torch.Tensor) -> torch.Tensor:
        return (weights.T @ colors[keep]).reshape(H, W, -1)

    return rasterize


def _gsplat_rasterizer(
    means, quats, scales, opacities, K, T_world_camera, size
) -> Callable[[torch.Tensor], torch.Tensor]:
    """gsplat's CUDA rasterizer as `colors [N, C] -> rendered [H, W, C]` for one view."""
    try:
        from gsplat import rasterization
    except ImportError:
        raise NotInstalledError("splat voting on CUDA needs gsplat: pip install gsplat") from None
    viewmat, Kg = _gsplat_camera(K, T_world_camera)
    W, H = size

    def rasterize(colors):
        rendered, _, _ = rasterization(
            means,
            quats,
            scales,
            opacities,
            colors,
            viewmat[None],
            Kg[None],
            W,
            H,
            sh_degree=None,  # colours are raw per-label channels, not SH coefficients
            packed=False,  # one view: the dense layout needs no index gather of the colours
            rasterize_mode="classic",  # "antialiased" would rescale opacities by the EWA compensation
            render_mode="RGB",
        )
        return rendered[0]

    return rasterize


def _weights_by_gradient(
    rasterize: Callable[[torch.Tensor], torch.Tensor],
    num_splats: int,
    channel_map,  # [H, W] long: the channel of each pixel's label
    pixel_mask,  # [H, W] bool: pixels that count
    num_channels: int,
    *,
    device,
) -> torch.Tensor:  # [N, num_channels]
    """The gradient trick: d/d colours of the rendered value of each pixel's own channel."""
    import torch

    colors = torch.zeros(num_splats, num_channels, device=device, requires_grad=True)
    rendered = rasterize(colors)  # [H, W, C]
    picked = rendered.gather(-1, channel_map[..., None]).squeeze(-1)
    loss = (picked * pixel_mask).sum()
    (grad,) = torch.autograd.grad(loss, colors)
    return grad


def splat_label_weights(
    means,  # [N, 3] world frame
    quats,  # [N, 4] wxyz
    scales,  # [N, 3] metres (activated)
    opacities,  # [N] in [0, 1] (activated)
    K,  # [3, 3] lift3d convention (integer pixel centres)
    T_world_camera,  # [4, 4] cam2world
    size: tuple[int, int],  # (W, H)
    label_map,  # [H, W] int in [0, num_labels)
    num_labels: int,
    *,
    backend: Literal["torch", "gsplat"] = "torch",
    device: str | None = None,
) -> torch.Tensor:  # [N, num_labels] float32
    """Each splat's alpha-times-transmittance weight on the pixels of each label in one view.

    One forward and one backward render (the gradient trick, see the module docstring). Column 0
    collects the unlabeled pixels.

    Args:
        means, quats, scales, opacities: the splats (arrays or tensors), activated values.
        K: [3, 3] intrinsics at `size`; T_world_camera: [4, 4] cam2world (OpenCV axes).
        size: (W, H) of the view and the label map.
        label_map: [H, W] integer labels in [0, num_labels).
        num_labels: columns of the result.
        backend: "torch" (pure-torch compositor, CPU or GPU, memory [N, H*W]: small scenes) or
            "gsplat" (gsplat's CUDA kernels, needs a CUDA device).
        device: torch device; default "cuda" for gsplat, "cpu" for torch.

    Returns:
        [N, num_labels] float32 weights on `device`.

    Raises:
        InputError: a label map of the wrong size or with labels outside [0, num_labels), or
            backend "gsplat" without CUDA.
    """
    import torch

    if backend not in ("torch", "gsplat"):
        raise InputError(None, f"backend must be 'torch' or 'gsplat', got {backend!r}")
    device = device or ("cuda" if backend == "gsplat" else "cpu")
    if backend == "gsplat" and not (str(device).startswith("cuda") and torch.cuda.is_available()):
        raise InputError(None, "backend 'gsplat' needs a CUDA device; use backend 'torch' on CPU")
    labels = torch.as_tensor(np.asarray(label_map)).long().to(device)
    if tuple(labels.shape) != (size[1], size[0]):
        raise InputError(
            None, f"label map is {list(labels.shape)}, the view is {size[1]}x{size[0]} (H x W)"
        )
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_labels):
        raise InputError(None, f"label map holds IDs outside [0, {num_labels})")
    tensors = _tensors(means, quats, scales, opacities, K, T_world_camera, device=device)
    make = _gsplat_rasterizer if backend == "gsplat" else _torch_rasterizer
    rasterize = make(*tensors, size)
    mask = torch.ones_like(labels, dtype=torch.bool)
    return _weights_by_gradient(rasterize, len(tensors[0]), labels, mask, num_labels, device=device)


# --- voting onto splats ----------------------------------------------------------------------------


def lift_to_splats(
    splats: Splats,
    frames: Iterable[Frame],
    label_maps: Iterable[np.ndarray],  # each [H, W] int, 0 = unlabeled
    *,
    method: Literal["auto", "centers", "gsplat", "torch"] = "auto",
    device: str = "auto",
    depth_tol: float = 0.05,
    depth_tol_rel: float = 0.01,
) -> PointLabels:
    """Vote each view's labels onto the splats, in the frames' world frame.

    Methods:
        - "gsplat" (CUDA): per view, each splat's weight `alpha * T` on the pixels of each label
          (the gradient trick); label = the largest weight summed over views, confidence = its
          share of the splat's total weight, votes = views where the splat covered a labeled pixel.
        - "torch": the same weights from the pure-torch compositor: exact, on any device, but
          memory grows as splats x pixels: small scenes only.
        - "centers" (CPU approximation): each splat is its centre, voted on like a point
          (`lift_to_points`, with its depth visibility test); ignores the splat's extent and
          opacity, so large or faint splats are labeled by whatever their centre sees.
        - "auto": "gsplat" on CUDA, else "centers".

    Unlabeled pixels (0) cast no vote, as for points. The weight methods render only the labels
    present in each view (channels cost time in both passes) and keep the summed weights as a
    dense [N, largest ID + 1] float32 tensor on the device (1M splats, 200 IDs: 0.8 GB).

    Args:
        splats: splats in the world frame of the frames' poses.
        frames: views with K and T_world_camera (and depth for "centers").
        label_maps: one [H, W] map per frame at the frame's size.
        method: see above.
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
        depth_tol, depth_tol_rel: visibility tolerances of the "centers" method (metres, fraction).

    Raises:
        InputError: an unknown method, "gsplat" without CUDA, mismatched frames and label maps.
    """
    import torch

    if method not in ("auto", "centers", "gsplat", "torch"):
        raise InputError(None, f"method must be auto, centers, gsplat or torch, got {method!r}")
    device = resolve_device(device)
    if method == "auto":
        method = "gsplat" if str(device).startswith("cuda") else "centers"
    if method == "centers":
        logger.info(
            "splat voting on CPU: splat centres with the points' visibility test (an approximation)"
        )
        return lift_to_points(
            splats.means, frames, label_maps, depth_tol=depth_tol, depth_tol_rel=depth_tol_rel
        )
    if method == "gsplat" and not (str(device).startswith("cuda") and torch.cuda.is_available()):
        raise InputError(
            None, "splat voting with gsplat needs a CUDA device; use method='centers' on CPU"
        )
    return _lift_by_weights(splats, frames, label_maps, backend=method, device=device)


def _lift_by_weights(
    splats: Splats, frames, label_maps, *, backend: str, device: str
) -> PointLabels:
    """Sum each view's splat-label weights (gradient trick) and take the largest per splat."""
    import torch

    means, quats, scales, opacities = _tensors(
        splats.means, splats.quats, splats.scales, splats.opacities, device=device
    )
    N = len(splats)
    total = torch.zeros(N, 1, device=device)  # column l: label l, grown as larger IDs appear
    votes = torch.zeros(N, dtype=torch.int32, device=device)
    make = _gsplat_rasterizer if backend == "gsplat" else _torch_rasterizer
    for frame, _depth, labels in labeled_views(frames, label_maps, need_depth=False):
        present = np.unique(labels[labels > 0])
        if not len(present):
            continue
        # only the labels in this view get a channel: channels cost time in both passes
        lut = np.zeros(int(present[-1]) + 1, np.int64)
        lut[present] = np.arange(len(present))
        channel_map = torch.as_tensor(lut[labels]).to(device)
        mask = torch.as_tensor(labels > 0).to(device)
        K = torch.as_tensor(frame.K, dtype=torch.float32, device=device)
        T = torch.as_tensor(frame.T_world_camera, dtype=torch.float32, device=device)
        rasterize = make(means, quats, scales, opacities, K, T, tuple(frame.size))
        w = _weights_by_gradient(rasterize, N, channel_map, mask, len(present), device=device)
        if present[-1] >= total.shape[1]:
            total = torch.cat(
                [total, torch.zeros(N, int(present[-1]) + 1 - total.shape[1], device=device)], dim=1
            )
        total[:, torch.as_tensor(present, device=device)] += w
        votes += (w.sum(1) > 0).int()
    best, label = total.max(dim=1)
    mass = total.sum(dim=1)
    labeled = mass > 0
    label = torch.where(labeled, label, 0)
    confidence = torch.where(labeled, best / torch.where(labeled, mass, 1), 0)
    return PointLabels(
        label=label.cpu().numpy().astype(np.int32),
        confidence=confidence.cpu().numpy().astype(np.float32),
        votes=votes.cpu().numpy(),
    )
