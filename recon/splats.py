"""Trained 3D Gaussian splats as a 3DGS PLY holds them: the `Splats` type and its reader.

PLY: the standard 3DGS layout (`x y z nx ny nz f_dc_* f_rest_* opacity scale_* rot_*`, opacity
as a logit, scales as logs, `rot_0..3` a wxyz quaternion). `Splats` keeps the file's vertex array
whole, so writing it back (`lift3d.splats.write_splats`) keeps every property, its order and
dtype, bit for bit. A scene's splats are read here, like its mesh: depth is rendered from them
(`recon.splat_depth`), their centres are the points a run labels (`recon.scene_points`), and
label maps are voted onto them (`lift3d.splats`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lift3d.io import ply_vertex_fields, read_ply

logger = logging.getLogger(__name__)

REQUIRED_FIELDS = (
    "x",
    "y",
    "z",
    "opacity",
    "scale_0",
    "scale_1",
    "scale_2",
    "rot_0",
    "rot_1",
    "rot_2",
    "rot_3",
)
#: zeroth-order spherical-harmonic constant: colour = 0.5 + SH_C0 * f_dc
SH_C0 = 0.28209479177387814


@dataclass
class Splats:
    """3D Gaussian splats as read from a 3DGS PLY.

    The arrays below are views computed from `vertex`, which holds the file's properties
    unchanged; activations (exp, sigmoid, normalisation) are applied on access.
    """

    vertex: np.ndarray
    """[N] structured array: the PLY's vertex element, every property in file order and dtype."""
    path: Path | None = None
    """The file read, for messages."""
    comments: list[str] = field(default_factory=list)
    """The PLY header's comments, written back."""

    def __len__(self) -> int:
        return len(self.vertex)

    @property
    def means(self) -> np.ndarray:
        """[N, 3] float32 centres, world frame."""
        return np.stack([self.vertex[k] for k in ("x", "y", "z")], axis=-1).astype(np.float32)

    @property
    def quats(self) -> np.ndarray:
        """[N, 4] float32 unit quaternions, wxyz (rot_0 is w); zero quaternions become identity."""
        q = np.stack([self.vertex[f"rot_{k}"] for k in range(4)], axis=-1).astype(np.float64)
        norm = np.linalg.norm(q, axis=-1, keepdims=True)
        q = np.where(norm > 0, q / np.where(norm > 0, norm, 1), np.array([1.0, 0, 0, 0]))
        return q.astype(np.float32)

    @property
    def scales(self) -> np.ndarray:
        """[N, 3] float32 standard deviations in metres (exp of the stored log scales)."""
        return np.exp(
            np.stack([self.vertex[f"scale_{k}"] for k in range(3)], axis=-1).astype(np.float64)
        ).astype(np.float32)

    @property
    def opacities(self) -> np.ndarray:
        """[N] float32 opacities in (0, 1) (sigmoid of the stored logits)."""
        logit = self.vertex["opacity"].astype(np.float64)
        return (0.5 * (1 + np.tanh(0.5 * logit))).astype(np.float32)  # sigmoid without overflow

    @property
    def sh0(self) -> np.ndarray | None:
        """[N, 3] float32 zeroth-order SH coefficients (f_dc_0..2), or None when absent."""
        if not all(f"f_dc_{k}" in self.vertex.dtype.names for k in range(3)):
            return None
        return np.stack([self.vertex[f"f_dc_{k}"] for k in range(3)], axis=-1).astype(np.float32)

    @property
    def colors(self) -> np.ndarray | None:
        """[N, 3] float32 view-independent RGB in [0, 1] from `sh0`, or None."""
        sh0 = self.sh0
        return None if sh0 is None else np.clip(0.5 + SH_C0 * sh0, 0, 1).astype(np.float32)


def read_splats(path: str | Path) -> Splats:
    """Read a 3D Gaussian Splatting PLY.

    Args:
        path: a PLY whose vertices hold at least x y z opacity scale_0-2 rot_0-3 (standard files
            also hold normals and f_dc / f_rest colour coefficients, kept as they are).

    Raises:
        InputError: the file is missing or not a PLY, or required properties are missing (the
            message names the file and them).
    """
    path = Path(path)
    ply = read_ply(path)
    vertex = ply_vertex_fields(ply, path, REQUIRED_FIELDS, "not a 3D Gaussian Splatting PLY")
    if len(ply.elements) > 1:
        logger.warning(
            "%s: elements other than 'vertex' are not kept: %s",
            path,
            [e.name for e in ply.elements[1:]],
        )
    return Splats(vertex=np.asarray(vertex), path=path, comments=list(ply.comments))


def splat_points(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The splat centres of a 3DGS PLY as a point cloud: xyz [N, 3] float32, rgb [N, 3] uint8.

    Colours from the zeroth-order SH coefficients, grey when the file has none.
    """
    splats = read_splats(path)
    colors = splats.colors
    rgb = (
        np.full((len(splats), 3), 128, np.uint8)
        if colors is None
        else np.round(colors * 255).astype(np.uint8)
    )
    return splats.means, rgb
