"""Depth rendered from trained 3D Gaussian splats at a scene's cameras.

A COLMAP (or transforms.json) scene has poses and no depth; the 3DGS trained on it holds the
geometry. `render_depth` renders, for one camera, the *expected depth* of the splats: with
`w_i = alpha_i * T_i` the front-to-back compositing weights of gsplat,
`ED = sum_i w_i z_i / sum_i w_i` (gsplat's `rasterization(render_mode="ED")`), and the
accumulated alpha `sum_i w_i = 1 - T`. Pixels whose alpha is below `min_alpha` (holes, the sky,
the edge of the trained region) have no depth (0).

The rules are gsplat 1.5.3's, so the two backends agree:
- projection (`ProjectionEWA3DGSFused.cu`): EWA, the Jacobian's x/z and y/z clamped at 1.3 times
  the half field of view, a 0.3 px^2 blur added to the 2D covariance, splats nearer than 0.01
  culled; the extent is `ceil(e * sigma)` per image axis with `e = min(3.33,
  sqrt(2 ln(opacity * 255)))` (no pixel beyond it can reach alpha 1/255) and splats of opacity
  below 1/255 are dropped;
- tiles of 16x16 pixels: a splat is composited on every pixel of every tile its extent touches;
- compositing (`RasterizeToPixels3DGSFwd.cu`): `alpha = min(0.999, o exp(-0.5 d^T S^-1 d))`,
  skipped below 1/255 (or for a negative exponent), front to back in depth order, a pixel stops
  before the splat that would take T to 1e-4;
- pixels: lift3d's pixel (u, v) is centred at integer (u, v), gsplat's at (u + 0.5, v + 0.5), so
  the principal point moves by half a pixel on the way in.

Backends: "numba" (CPU, tiles in parallel) and "gsplat" (CUDA). `_render_depth_reference` is the
plain definition (float64, one splat at a time over all pixels, projected by gsplat's own
pure-torch projection) the tests hold the CPU renderer to.

`splat_frame_fit` checks that splats and cameras share one world frame before anything is
rendered; `attach_splat_depth` turns a posed image-only scene into a depth scene whose frames
carry the rendered depth (and so pointmaps and reprojection matches).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Literal

import numpy as np

from lift3d.errors import InputError
from lift3d.recon.scene import Frame, Scene

logger = logging.getLogger(__name__)

ALPHA_MAX = 0.999
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
TILE_SIZE = 16
EPS2D = 0.3
NEAR_PLANE = 0.01
FAR_PLANE = 1e10
EXTEND = 3.33  # gsplat's sigma multiple for the splat's extent
DEFAULT_MIN_ALPHA = 0.5


def _check_splats(means, quats, scales, opacities) -> tuple[np.ndarray, ...]:
    means = np.asarray(means, np.float64)
    quats = np.asarray(quats, np.float64)
    scales = np.asarray(scales, np.float64)
    opacities = np.asarray(opacities, np.float64)
    n = len(means)
    for name, a, shape in (
        ("means", means, (n, 3)),
        ("quats", quats, (n, 4)),
        ("scales", scales, (n, 3)),
        ("opacities", opacities, (n,)),
    ):
        if a.shape != shape:
            raise InputError(None, f"splat {name} must be {list(shape)}, got {list(a.shape)}")
    return means, quats, scales, opacities


def _gsplat_camera(K, T_world_camera) -> tuple[np.ndarray, np.ndarray]:
    """(world-to-camera [4, 4], K with gsplat's half-pixel principal point) of one view."""
    Kg = np.asarray(K, np.float64).copy()
    Kg[0, 2] += 0.5
    Kg[1, 2] += 0.5
    return np.linalg.inv(np.asarray(T_world_camera, np.float64)), Kg


def _covariances(quats, scales) -> np.ndarray:  # [N, 4] wxyz, [N, 3] -> [N, 3, 3]
    q = quats / np.maximum(np.linalg.norm(quats, axis=-1, keepdims=True), 1e-12)
    w, x, y, z = q.T
    R = np.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    ).reshape(-1, 3, 3)
    M = R * scales[:, None, :]
    return M @ M.transpose(0, 2, 1)


def _project(means, quats, scales, opacities, K, T_world_camera, size):
    """gsplat's fused EWA projection of the splats into one view (numpy, float64).

    Returns:
        keep: [M] indices of the splats drawn; means2d [M, 2] (gsplat pixel frame), conics
        [M, 3], depths [M] (camera z), radii [M, 2] int64 (extent in pixels along u and v).
    """
    W, H = size
    viewmat, Kg = _gsplat_camera(K, T_world_camera)
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    means_c = means @ R.T + t
    covars_c = R @ _covariances(quats, scales) @ R.T
    fx, fy, cx, cy = Kg[0, 0], Kg[1, 1], Kg[0, 2], Kg[1, 2]
    tx, ty, tz = means_c.T
    with np.errstate(divide="ignore", invalid="ignore"):
        tan_x, tan_y = 0.5 * W / fx, 0.5 * H / fy
        # the Jacobian is taken at the point clamped to 1.3x the field of view (gsplat, 3DGS)
        cx_ = tz * np.clip(tx / tz, -(cx / fx + 0.3 * tan_x), (W - cx) / fx + 0.3 * tan_x)
        cy_ = tz * np.clip(ty / tz, -(cy / fy + 0.3 * tan_y), (H - cy) / fy + 0.3 * tan_y)
        J = np.zeros((len(means), 2, 3))
        J[:, 0, 0] = fx / tz
        J[:, 0, 2] = -fx * cx_ / (tz * tz)
        J[:, 1, 1] = fy / tz
        J[:, 1, 2] = -fy * cy_ / (tz * tz)
        cov2d = J @ covars_c @ J.transpose(0, 2, 1)
        means2d = np.stack([fx * tx / tz + cx, fy * ty / tz + cy], axis=-1)
    cov2d[:, 0, 0] += EPS2D
    cov2d[:, 1, 1] += EPS2D
    det = cov2d[:, 0, 0] * cov2d[:, 1, 1] - cov2d[:, 0, 1] * cov2d[:, 1, 0]
    ok = (tz > NEAR_PLANE) & (tz < FAR_PLANE) & (det > 0) & (opacities >= ALPHA_MIN)
    with np.errstate(divide="ignore", invalid="ignore"):
        conics = np.stack(
            [
                cov2d[:, 1, 1] / det,
                -(cov2d[:, 0, 1] + cov2d[:, 1, 0]) / 2 / det,
                cov2d[:, 0, 0] / det,
            ],
            axis=-1,
        )
        extend = np.minimum(
            EXTEND, np.sqrt(2 * np.log(np.maximum(opacities, ALPHA_MIN) / ALPHA_MIN))
        )
        radii = np.ceil(
            extend[:, None] * np.sqrt(np.stack([cov2d[:, 0, 0], cov2d[:, 1, 1]], axis=-1))
        )
    ok &= np.isfinite(radii).all(-1) & np.isfinite(means2d).all(-1)
    radii = np.where(ok[:, None], radii, 0)
    ok &= (radii > 0).all(-1)
    ok &= (means2d[:, 0] + radii[:, 0] > 0) & (means2d[:, 0] - radii[:, 0] < W)
    ok &= (means2d[:, 1] + radii[:, 1] > 0) & (means2d[:, 1] - radii[:, 1] < H)
    keep = np.nonzero(ok)[0]
    return keep, means2d[keep], conics[keep], tz[keep], radii[keep].astype(np.int64)


def _tile_rects(means2d, radii, size, tile_size: int = TILE_SIZE) -> np.ndarray:  # -> [M, 4] int64
    """(x0, y0, x1, y1) tile range of each splat, x1/y1 exclusive (gsplat's `IntersectTile.cu`)."""
    W, H = size
    tw, th = -(-W // tile_size), -(-H // tile_size)
    c = means2d / tile_size
    r = radii / tile_size
    lo = np.floor(c - r)
    hi = np.ceil(c + r)
    return np.stack(
        [
            np.clip(lo[:, 0], 0, tw),
            np.clip(lo[:, 1], 0, th),
            np.clip(hi[:, 0], 0, tw),
            np.clip(hi[:, 1], 0, th),
        ],
        axis=-1,
    ).astype(np.int64)


def _render_depth_numba(
    means, quats, scales, opacities, K, T_world_camera, size
) -> tuple[np.ndarray, np.ndarray]:
    import warnings

    from lift3d.recon import splat_depth_kernels as kern

    W, H = size
    keep, means2d, conics, depths, radii = _project(
        means, quats, scales, opacities, K, T_world_camera, size
    )
    order = np.argsort(depths, kind="stable")
    rects = _tile_rects(means2d[order], radii[order], size)
    with warnings.catch_warnings():
        # numba says on its first parallel launch that the installed TBB is too old and then uses
        # its own thread pool: nothing for the user to act on
        warnings.filterwarnings("ignore", message=".*TBB.*")
        offsets, ids = kern.bin_tiles(rects, -(-W // TILE_SIZE), -(-H // TILE_SIZE))
        acc, alpha = kern.composite_depth(
            np.ascontiguousarray(means2d[order]),
            np.ascontiguousarray(conics[order]),
            np.ascontiguousarray(opacities[keep][order]),
            np.ascontiguousarray(depths[order]),
            offsets,
            ids,
            W,
            H,
            TILE_SIZE,
            ALPHA_MAX,
            ALPHA_MIN,
            T_MIN,
        )
    return acc / np.maximum(alpha, 1e-10), alpha


def _render_depth_gsplat(
    means, quats, scales, opacities, K, T_world_camera, size, *, device: str
) -> tuple[np.ndarray, np.ndarray]:
    import torch

    try:
        from gsplat import rasterization
    except ImportError:
        from lift3d.errors import NotInstalledError

        raise NotInstalledError(
            "depth from splats on CUDA needs gsplat: pip install gsplat"
        ) from None
    W, H = size
    viewmat, Kg = _gsplat_camera(K, T_world_camera)

    def t(a):
        return torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)

    with torch.no_grad():
        rendered, alphas, _ = rasterization(
            t(means),
            t(quats),
            t(scales),
            t(opacities),
            t(np.zeros((len(means), 1))),
            t(viewmat)[None],
            t(Kg)[None],
            W,
            H,
            near_plane=NEAR_PLANE,
            far_plane=FAR_PLANE,
            eps2d=EPS2D,
            sh_degree=None,
            packed=False,
            rasterize_mode="classic",
            render_mode="ED",
        )
    return rendered[0, ..., 0].double().cpu().numpy(), alphas[0, ..., 0].double().cpu().numpy()


def project_splats_torch(
    means,  # [N, 3] tensor, world frame
    quats,  # [N, 4] tensor, wxyz
    scales,  # [N, 3] tensor, metres (activated)
    viewmat,  # [4, 4] tensor, world-to-camera
    Kg,  # [3, 3] tensor, gsplat's pixel convention (principal point + 0.5)
    size: tuple[int, int],  # (W, H)
    *,
    eps2d: float = EPS2D,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
):
    """gsplat's own pure-torch EWA projection of the splats into one view, on any device.

    The one place lift3d calls `gsplat.cuda._torch_impl`: gsplat 1.5.3 (pinned) has no public
    projection off CUDA, and this is the reference its CUDA kernel is tested against. Used by
    `_render_depth_reference` here and by the CPU compositor of the splat votes (`lift3d.splats`).

    Returns:
        radii [N, 2] (0 for splats not drawn), means2d [N, 2], depths [N] (camera z),
        conics [N, 3] (a, b, c of the inverse 2D covariance).
    """
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    W, H = size
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        means,
        covars,
        viewmat[None],
        Kg[None],
        W,
        H,
        eps2d=eps2d,
        near_plane=near_plane,
        far_plane=far_plane,
    )
    return radii[0], means2d[0], depths[0], conics[0]


def _render_depth_reference(
    means, quats, scales, opacities, K, T_world_camera, size
) -> tuple[np.ndarray, np.ndarray]:
    """(ED [H, W], alpha [H, W]) by definition: float64, one splat at a time over all pixels.

    Projection by gsplat's pure-torch projection (`project_splats_torch`); a splat reaches the pixels of the
    16x16 tiles its extent touches (gsplat's binning); compositing as in the module docstring.
    """
    import torch

    W, H = size
    means, quats, scales, opacities = (
        torch.as_tensor(np.asarray(a, np.float64)) for a in (means, quats, scales, opacities)
    )
    viewmat, Kg = (torch.as_tensor(a) for a in _gsplat_camera(K, T_world_camera))
    radii, means2d, depths, conics = project_splats_torch(means, quats, scales, viewmat, Kg, size)
    means2d, depths, conics = means2d.numpy(), depths.numpy(), conics.numpy()
    drawn = (radii > 0).all(-1).numpy() & (opacities.numpy() >= ALPHA_MIN)
    # gsplat's CUDA kernel shrinks the extent to where alpha can still reach 1/255
    a, b, c = conics.T
    det = a * c - b * b
    sd = np.sqrt(np.stack([c / det, a / det], axis=-1))  # sqrt of the 2D covariance's diagonal
    extend = np.minimum(
        EXTEND, np.sqrt(2 * np.log(np.maximum(opacities.numpy(), ALPHA_MIN) / ALPHA_MIN))
    )
    rad = np.ceil(extend[:, None] * sd)
    drawn &= (rad > 0).all(-1) & (means2d[:, 0] + rad[:, 0] > 0) & (means2d[:, 0] - rad[:, 0] < W)
    drawn &= (means2d[:, 1] + rad[:, 1] > 0) & (means2d[:, 1] - rad[:, 1] < H)
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    px, py = u + 0.5, v + 0.5
    T = np.ones((H, W))
    acc = np.zeros((H, W))
    done = np.zeros((H, W), bool)
    idx = np.nonzero(drawn)[0]
    rects = _tile_rects(means2d[idx], rad[idx], size)
    for k in np.argsort(depths[idx], kind="stable"):
        i = idx[k]
        x0, y0, x1, y1 = rects[k]
        in_tiles = (
            (u >= x0 * TILE_SIZE)
            & (u < x1 * TILE_SIZE)
            & (v >= y0 * TILE_SIZE)
            & (v < y1 * TILE_SIZE)
        )
        dx, dy = means2d[i, 0] - px, means2d[i, 1] - py
        sigma = 0.5 * (a[i] * dx * dx + c[i] * dy * dy) + b[i] * dx * dy
        alpha = np.minimum(ALPHA_MAX, opacities[i].item() * np.exp(-sigma))
        hit = in_tiles & ~done & (sigma >= 0) & (alpha >= ALPHA_MIN)
        next_t = T * (1 - alpha)
        stop = hit & (next_t <= T_MIN)
        done |= stop
        hit &= ~stop
        acc += np.where(hit, alpha * T * depths[i], 0)
        T = np.where(hit, next_t, T)
    alpha_img = 1 - T
    return acc / np.maximum(alpha_img, 1e-10), alpha_img


def render_depth(
    means,  # [N, 3] world frame
    quats,  # [N, 4] wxyz
    scales,  # [N, 3] standard deviations (activated), scene units
    opacities,  # [N] in [0, 1] (activated)
    K,  # [3, 3] lift3d convention (integer pixel centres)
    T_world_camera,  # [4, 4] cam2world, OpenCV axes
    size: tuple[int, int],  # (W, H)
    *,
    min_alpha: float = DEFAULT_MIN_ALPHA,
    backend: Literal["auto", "numba", "gsplat"] = "auto",
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The splats' expected depth and accumulated opacity seen from one camera.

    Args:
        means, quats, scales, opacities: the splats, activated values (`lift3d.recon.splats.Splats`).
        K: [3, 3] intrinsics at `size`; T_world_camera: [4, 4] cam2world of the view.
        size: (W, H) of the view.
        min_alpha: pixels whose accumulated alpha is below this have no depth (0).
        backend: "numba" (CPU), "gsplat" (CUDA) or "auto" (gsplat when CUDA is available).
        device: torch device of the gsplat backend (default "cuda").

    Returns:
        depth: [H, W] float32 expected camera z (scene units), 0 where alpha < min_alpha.
        alpha: [H, W] float32 accumulated opacity 1 - T in [0, 1].

    Raises:
        InputError: splat arrays of the wrong shapes, a bad min_alpha or backend, or "gsplat"
            without CUDA.
    """
    means, quats, scales, opacities = _check_splats(means, quats, scales, opacities)
    if not 0 <= min_alpha <= 1:
        raise InputError(None, f"min_alpha must be in [0, 1], got {min_alpha}")
    if backend not in ("auto", "numba", "gsplat"):
        raise InputError(None, f"backend must be auto, numba or gsplat, got {backend!r}")
    size = (int(size[0]), int(size[1]))
    if backend in ("auto", "gsplat"):
        import torch

        cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
        if backend == "gsplat" and not cuda:
            raise InputError(
                None, "backend 'gsplat' needs a CUDA device; use backend 'numba' on CPU"
            )
        backend = "gsplat" if cuda else "numba"
    if backend == "gsplat":
        depth, alpha = _render_depth_gsplat(
            means, quats, scales, opacities, K, T_world_camera, size, device=device or "cuda"
        )
    else:
        depth, alpha = _render_depth_numba(means, quats, scales, opacities, K, T_world_camera, size)
    depth = np.where((alpha >= min_alpha) & np.isfinite(depth) & (depth > 0), depth, 0)
    return depth.astype(np.float32), alpha.astype(np.float32)


def splat_frame_fit(means, frames: Iterable[Frame]) -> float:
    """Share of splat centres that some camera sees: inside its image, beyond the near plane.

    A 3DGS trained on a COLMAP model lives in that model's world frame, so nearly all its splats
    were seen by some camera; splats from another scene (or another run of COLMAP) mostly are not.
    """
    from lift3d.recon.geometry import project

    means = np.asarray(means, np.float64)
    seen = np.zeros(len(means), bool)
    for f in frames:
        W, H = f.size
        uv, z = project(means, f.K, f.T_world_camera)
        with np.errstate(invalid="ignore"):
            seen |= (
                (z > NEAR_PLANE)
                & (uv[:, 0] >= -0.5)
                & (uv[:, 0] < W - 0.5)
                & (uv[:, 1] >= -0.5)
                & (uv[:, 1] < H - 0.5)
            )
    return float(seen.mean()) if len(means) else 0.0


def attach_splat_depth(
    scene: Scene,
    means,  # [N, 3]
    quats,  # [N, 4] wxyz
    scales,  # [N, 3]
    opacities,  # [N]
    *,
    min_alpha: float = DEFAULT_MIN_ALPHA,
    backend: Literal["auto", "numba", "gsplat"] = "auto",
    device: str | None = None,
) -> Scene:
    """A posed scene whose frames carry depth rendered from the splats (pointmaps, reprojection).

    Each frame's depth is rendered the first time it is loaded and kept (8 bytes a pixel, 2.5 MB a
    640x480 view) since every stage of the flow reads the frames again. `conf` is the rendered
    alpha.

    Raises:
        InputError: the scene has no poses.
    """
    from lift3d.recon.correspondence import reprojection_match_fn
    from lift3d.recon.geometry import backproject

    if not scene.has_poses:
        raise InputError(
            scene.root, "depth from splats needs camera poses (a COLMAP model or transforms.json)"
        )
    splats = _check_splats(means, quats, scales, opacities)
    parent = scene.load_frame
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def load(i: int) -> Frame:
        frame = parent(i)
        if i not in cache:
            cache[i] = render_depth(
                *splats,
                frame.K,
                frame.T_world_camera,
                frame.size,
                min_alpha=min_alpha,
                backend=backend,
                device=device,
            )
        depth, alpha = cache[i]
        frame.depth = depth
        frame.pointmap, frame.valid = backproject(depth, frame.K, frame.T_world_camera)
        frame.conf = np.where(frame.valid, alpha, 0).astype(np.float32)
        return frame

    meta = {
        **scene.meta,
        "depth_source": "splats",
        "depth": f"rendered from {len(splats[0])} splats (expected depth, alpha >= {min_alpha})",
    }
    return dataclasses.replace(
        scene, load_frame=load, has_depth=True, match_fn=reprojection_match_fn, meta=meta
    )
