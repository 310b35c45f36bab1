"""From MASt3R's network resolution back to the scene's working resolution: cameras, pointmaps, matches.

MASt3R never sees an image at the size it was given. dust3r's `load_images(paths, size)` resizes
each image so that its long side is `size` (512 for the released checkpoint), giving the
*resized* size (W1, H1), then crops its centre to multiples of the patch size (16), giving the
network input of size (W2, H2) whose top-left corner sits at the *offset* (x0, y0) of the resized
image. A square image is also cropped to 4:3 (`square_ok=False`). Everything MASt3R returns
(focal length, principal point, pointmaps, confidences, matches) lives in that cropped frame.

This module maps it back to the scene's working resolution (W, H) (pixel centres at integers,
as everywhere in lift3d): a working pixel u sits at `u2 = (u + 0.5) * W1 / W - 0.5 - x0` in the
network input, and a network pixel at `u = (u2 + x0 + 0.5) * W / W1 - 0.5` in the working image
(likewise for v with H1 / H and y0). The scale may differ along x and y (the working image may
have another aspect ratio than the photo MASt3R read), so the intrinsics at the working size may
have fx != fy. Working pixels outside the crop get no geometry (`valid` False, depth 0).

The pointmap of a frame is rebuilt from MASt3R's depth (nearest network pixel) back-projected
with the frame's own K and cam2world, so that pointmap, depth, K and pose agree exactly, which
the lifting's visibility test relies on.

Confidences: the alignment's dense confidence of a pixel is MASt3R's canonical-view confidence,
a weighted mean over the pairs of `conf - 0.999` where the network's point confidence is
`conf = 1 + exp(x)`, so about `exp(x)` in (0, inf) (0 where `clean_depth` removed the point); the
descriptor confidence of a match is `exp(x)` too. Thresholds are given in MASt3R's own units,
as in its demo (`min_conf_thr=1.5` for points) and scripts (1.001 for matches). Frames carry the
point confidence mapped to [0, 1) by `c / (1 + c)` (the sigmoid of the network's logit).

Matches carry the correspondence scale every provider of `Scene.match_fn` shares, so that the
tracker's `min_match_conf` means the same for all of them: 1 for a perfect match, falling to 0 at
the provider's own acceptance limit (reprojection: the depth tolerance; optical flow: the
forward-backward threshold; MASt3R: `min_conf`). For MASt3R that is `(c - m) / (1 + c)` for a
geometric-mean confidence c kept at threshold m, which is the sigmoid above rescaled so that its
value at m becomes 0: `(s(c) - s(m)) / (1 - s(m))`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lift3d.errors import InputError
from lift3d.recon.geometry import backproject, scale_intrinsics
from lift3d.recon.scene import Frame, Scene

# MASt3R's demo keeps points above this confidence (its `min_conf_thr` slider default)
DEFAULT_MIN_CONF = 1.5


@dataclass(frozen=True)
class Mast3rCrop:
    """How `load_images` turned one image into MASt3R's network input.

    Attributes:
        resized: (W1, H1) of the image after resizing its long side to the network size.
        offset: (x0, y0) of the crop's top-left corner in the resized image, pixels.
        size: (W2, H2) of the network input (multiples of the patch size).
    """

    resized: tuple[int, int]
    offset: tuple[int, int]
    size: tuple[int, int]

    def as_array(self) -> np.ndarray:
        """[6] int64 (W1, H1, x0, y0, W2, H2), for storage."""
        return np.array([*self.resized, *self.offset, *self.size], np.int64)

    @classmethod
    def from_array(cls, a: Sequence[int]) -> Mast3rCrop:
        a = [int(x) for x in a]
        return cls(resized=(a[0], a[1]), offset=(a[2], a[3]), size=(a[4], a[5]))


def mast3r_crop(
    image_size: tuple[int, int],  # (W0, H0) of the image given to load_images
    *,
    size: int = 512,
    patch_size: int = 16,
    square_ok: bool = False,
) -> Mast3rCrop:
    """The resize and centre crop that dust3r's `load_images(..., size)` applies to an image.

    Follows `dust3r/utils/image.py` at naver/dust3r 3cc8c88: for size 224 the short side is
    resized to 224 and a centred square is cut; otherwise the long side is resized to `size`
    (`round` of each side) and the centre is cropped to multiples of `patch_size`, a square
    image to 4:3 unless `square_ok`.
    """
    W0, H0 = int(image_size[0]), int(image_size[1])
    if W0 <= 0 or H0 <= 0:
        raise InputError(None, f"image size must be positive, got {W0}x{H0}")
    if size == 224:
        long_edge = round(size * max(W0 / H0, H0 / W0))
    else:
        long_edge = size
    S = max(W0, H0)
    W1, H1 = int(round(W0 * long_edge / S)), int(round(H0 * long_edge / S))
    cx, cy = W1 // 2, H1 // 2
    if size == 224:
        halfw = halfh = min(cx, cy)
    else:
        halfw = ((2 * cx) // patch_size) * patch_size / 2
        halfh = ((2 * cy) // patch_size) * patch_size / 2
        if not square_ok and W1 == H1:
            halfh = 3 * halfw / 4
    # PIL's crop rounds the box the same way
    x0, y0 = int(round(cx - halfw)), int(round(cy - halfh))
    x1, y1 = int(round(cx + halfw)), int(round(cy + halfh))
    return Mast3rCrop(resized=(W1, H1), offset=(x0, y0), size=(x1 - x0, y1 - y0))


def mast3r_to_working(
    uv: np.ndarray,  # [M, 2] pixels (u, v) in the network input
    crop: Mast3rCrop,
    working_size: tuple[int, int],  # (W, H)
) -> np.ndarray:  # [M, 2] float32 pixels in the working image
    """Network-input pixel coordinates to working-image pixel coordinates (half-pixel rule)."""
    uv = np.asarray(uv, np.float64).reshape(-1, 2)
    s = np.array(working_size, np.float64) / np.array(crop.resized, np.float64)
    return ((uv + np.array(crop.offset) + 0.5) * s - 0.5).astype(np.float32)


def working_to_mast3r(
    uv: np.ndarray,  # [M, 2] pixels (u, v) in the working image
    crop: Mast3rCrop,
    working_size: tuple[int, int],  # (W, H)
) -> np.ndarray:  # [M, 2] float64 pixels in the network input
    """Working-image pixel coordinates to network-input pixel coordinates (inverse of the above)."""
    uv = np.asarray(uv, np.float64).reshape(-1, 2)
    s = np.array(crop.resized, np.float64) / np.array(working_size, np.float64)
    return (uv + 0.5) * s - 0.5 - np.array(crop.offset)


def intrinsics_to_working(
    K_mast3r: np.ndarray,  # [3, 3] in the network input
    crop: Mast3rCrop,
    working_size: tuple[int, int],  # (W, H)
) -> np.ndarray:  # [3, 3] float32
    """Intrinsics of the network input expressed for the working image (uncrop, then rescale)."""
    K = np.asarray(K_mast3r, np.float64).copy()
    K[0, 2] += crop.offset[0]
    K[1, 2] += crop.offset[1]
    return scale_intrinsics(K, crop.resized, working_size)


def unit_confidence(conf: np.ndarray) -> np.ndarray:
    """A MASt3R confidence (about exp(x) >= 0, see the module docstring) mapped to [0, 1): c / (1 + c)."""
    conf = np.nan_to_num(np.maximum(np.asarray(conf, np.float64), 0), nan=0.0)
    return (conf / (1 + conf)).astype(np.float32)


def frame_from_alignment(
    image: np.ndarray,  # [H, W, 3] uint8 at the working resolution
    K_mast3r: np.ndarray,  # [3, 3] intrinsics of the network input
    T_world_camera: np.ndarray,  # [4, 4] cam2world
    depth_mast3r: np.ndarray,  # [H2, W2] metres (MASt3R's scale), z along the optical axis
    conf_mast3r: np.ndarray,  # [H2, W2] MASt3R point confidence
    *,
    crop: Mast3rCrop,
    name: str,
    index: int,
    min_conf: float = DEFAULT_MIN_CONF,
) -> Frame:
    """One frame of a MASt3R reconstruction at the working resolution.

    Every working pixel takes the depth and confidence of the nearest network pixel; the pointmap
    is that depth back-projected with the working K and the pose, so it is exactly consistent
    with them. Pixels outside the crop, with confidence <= `min_conf` (MASt3R's units) or
    non-positive depth are invalid, with depth 0 and pointmap 0.

    Returns:
        a Frame with image, K [3, 3] (fx may differ from fy), T_world_camera [4, 4], depth [H, W],
        pointmap [H, W, 3] (world), conf [H, W] in [0, 1) (see `unit_confidence`) and valid.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(None, f"frame {name}: image must be [H, W, 3], got {list(image.shape)}")
    H, W = image.shape[:2]
    W2, H2 = crop.size
    depth_mast3r = np.asarray(depth_mast3r, np.float32)
    conf_mast3r = np.asarray(conf_mast3r, np.float32)
    if depth_mast3r.shape != (H2, W2) or conf_mast3r.shape != (H2, W2):
        raise InputError(
            None,
            f"frame {name}: MASt3R depth {list(depth_mast3r.shape)} and conf {list(conf_mast3r.shape)} "
            f"must match the network input size {H2}x{W2} (H x W)",
        )
    T = np.asarray(T_world_camera, np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise InputError(None, f"frame {name}: the MASt3R pose must be a finite 4x4 matrix")
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    uv2 = working_to_mast3r(np.stack([u.ravel(), v.ravel()], axis=-1), crop, (W, H))
    x2 = np.rint(uv2[:, 0]).astype(np.int64)
    y2 = np.rint(uv2[:, 1]).astype(np.int64)
    inside = (x2 >= 0) & (x2 < W2) & (y2 >= 0) & (y2 < H2)
    d = np.zeros(H * W, np.float32)
    c = np.zeros(H * W, np.float32)
    d[inside] = depth_mast3r[y2[inside], x2[inside]]
    c[inside] = conf_mast3r[y2[inside], x2[inside]]
    with np.errstate(invalid="ignore"):
        keep = inside & np.isfinite(d) & (d > 0) & (c > min_conf)
    depth = np.where(keep, d, 0).astype(np.float32).reshape(H, W)
    K = intrinsics_to_working(K_mast3r, crop, (W, H))
    pointmap, valid = backproject(depth, K, T)
    return Frame(
        name=name,
        index=index,
        image=image,
        K=K,
        T_world_camera=T.astype(np.float32),
        depth=depth,
        pointmap=pointmap,
        conf=unit_confidence(c).reshape(H, W),
        valid=valid,
    )


def intrinsics_matrix(focal: float, pp: Sequence[float]) -> np.ndarray:
    """[3, 3] pinhole intrinsics of MASt3R's alignment (one focal length, square pixels)."""
    return np.array([[focal, 0.0, pp[0]], [0.0, focal, pp[1]], [0.0, 0.0, 1.0]])


def camera_depth(
    points_world: np.ndarray,  # [..., 3]
    T_world_camera: np.ndarray,  # [4, 4]
) -> np.ndarray:  # [...] float32
    """z of world points in the camera frame."""
    T = np.asarray(T_world_camera, np.float64)
    return ((np.asarray(points_world, np.float64) - T[:3, 3]) @ T[:3, :3])[..., 2].astype(
        np.float32
    )


def scene_from_alignment(
    images: Sequence[np.ndarray],  # N x [H, W, 3] uint8 at the working resolution
    focals: Sequence[float],  # [N] pixels, at the network input
    pps: Sequence[Sequence[float]],  # [N, 2] principal points (u, v) at the network input
    poses: Sequence[np.ndarray],  # [N, 4, 4] cam2world
    pts3d: Sequence[np.ndarray],  # N x [H2 * W2, 3] or [H2, W2, 3] world points (dense)
    confs: Sequence[np.ndarray],  # N x [H2, W2] MASt3R point confidences
    *,
    crops: Sequence[Mast3rCrop],
    names: Sequence[str] | None = None,
    min_conf: float = DEFAULT_MIN_CONF,
    scene_name: str = "mast3r",
    root: str | Path = ".",
) -> Scene:
    """A `Scene` from the outputs of MASt3R's sparse global alignment, held in memory.

    The arrays are what `SparseGA` gives: `get_focals()`, `get_principal_points()`,
    `get_im_poses()` and `get_dense_pts3d()` (points and confidences), at the network input of
    each image (`crops`). Frames come out at the images' working resolution (see
    `frame_from_alignment`). For long sequences, `lift3d.recon.mast3r` stores the same data per
    frame on disk and builds frames lazily with `frame_from_alignment`.
    """
    n = len(images)
    lengths = {
        "focals": len(focals),
        "pps": len(pps),
        "poses": len(poses),
        "pts3d": len(pts3d),
        "confs": len(confs),
        "crops": len(crops),
    }
    if names is not None:
        lengths["names"] = len(names)
    bad = {k: v for k, v in lengths.items() if v != n}
    if bad:
        raise InputError(None, f"{n} images but " + ", ".join(f"{v} {k}" for k, v in bad.items()))
    if n == 0:
        raise InputError(None, "no frames: MASt3R's alignment gave nothing to build a scene from")
    sizes = {(int(im.shape[1]), int(im.shape[0])) for im in images}
    if len(sizes) != 1:
        raise InputError(None, f"all images must share one working size, found {sorted(sizes)}")
    names = [f"{i:06d}" for i in range(n)] if names is None else [str(x) for x in names]
    depths = []
    for i in range(n):
        W2, H2 = crops[i].size
        p = np.asarray(pts3d[i], np.float32)
        if p.size != H2 * W2 * 3:
            raise InputError(
                None,
                f"frame {names[i]}: pts3d {list(p.shape)} does not fit the network input {H2}x{W2}",
            )
        depths.append(camera_depth(p.reshape(H2, W2, 3), poses[i]))
    Ks = [intrinsics_matrix(float(focals[i]), pps[i]) for i in range(n)]

    def load(i: int) -> Frame:
        return frame_from_alignment(
            images[i],
            Ks[i],
            poses[i],
            depths[i],
            confs[i],
            crop=crops[i],
            name=names[i],
            index=i,
            min_conf=min_conf,
        )

    return Scene(
        name=scene_name,
        root=Path(root),
        frame_names=names,
        size=sizes.pop(),
        load_frame=load,
        kind="mast3r",
        has_depth=True,
        has_poses=True,
        meta={"geometry": "mast3r"},
    )


def filter_matches(
    uv_i: np.ndarray,  # [M, 2] pixels (u, v) in image i
    uv_j: np.ndarray,  # [M, 2] pixels (u, v) in image j
    conf_i: np.ndarray,  # [M] MASt3R descriptor confidence at uv_i
    conf_j: np.ndarray,  # [M] MASt3R descriptor confidence at uv_j
    *,
    min_conf: float,
    size_i: tuple[int, int],  # (W, H) of image i
    size_j: tuple[int, int],  # (W, H) of image j
    border: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the reciprocal matches that are confident on both sides and inside both images.

    A match is kept when both descriptor confidences are at least `min_conf` (MASt3R's units;
    its own scripts use 1.001) and both pixels lie at least `border` pixels inside their image
    (MASt3R's README drops a 3-pixel border, where descriptors are least reliable).

    Returns:
        uv_i: [K, 2] float32, uv_j: [K, 2] float32, conf: [K] float32 in [0, 1) on the shared
        correspondence scale (module docstring): `(c - min_conf) / (1 + c)` for the geometric
        mean c of the two confidences, 0 for a match at the threshold, towards 1 far above it.
    """
    uv_i = np.asarray(uv_i, np.float64)
    uv_j = np.asarray(uv_j, np.float64)
    conf_i = np.asarray(conf_i, np.float64).reshape(-1)
    conf_j = np.asarray(conf_j, np.float64).reshape(-1)
    m = len(uv_i)
    if uv_i.ndim != 2 or uv_i.shape[1] != 2 or uv_j.shape != uv_i.shape:
        raise InputError(
            None,
            f"uv_i and uv_j must both be [M, 2], got {list(uv_i.shape)} and {list(uv_j.shape)}",
        )
    if len(conf_i) != m or len(conf_j) != m:
        raise InputError(None, f"{m} matches but {len(conf_i)} and {len(conf_j)} confidences")
    if not np.isfinite(min_conf) or min_conf < 0:
        raise InputError(None, f"min_conf must be finite and >= 0, got {min_conf}")
    if border < 0:
        raise InputError(None, f"border must be >= 0, got {border}")

    def inside(uv: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        W, H = size
        with np.errstate(invalid="ignore"):
            return (
                np.isfinite(uv).all(axis=1)
                & (uv[:, 0] >= border)
                & (uv[:, 0] <= W - 1 - border)
                & (uv[:, 1] >= border)
                & (uv[:, 1] <= H - 1 - border)
            )

    with np.errstate(invalid="ignore"):
        keep = (
            (conf_i >= min_conf)
            & (conf_j >= min_conf)
            & inside(uv_i, size_i)
            & inside(uv_j, size_j)
        )
    c = np.sqrt(conf_i[keep] * conf_j[keep])
    # >= 0: both sides are >= min_conf, so is their geometric mean
    conf = np.clip((c - min_conf) / (1 + c), 0, 1).astype(np.float32)
    return uv_i[keep].astype(np.float32), uv_j[keep].astype(np.float32), conf
