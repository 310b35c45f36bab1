"""Where a run's geometry comes from: sensor depth, depth rendered from the user's splats, MASt3R,
or none (video and photo sequences, tracked through optical flow, 2D outputs only).

`choose_geometry` decides from the scene and the options, and says what is possible when nothing
fits; `check_splats_fit` refuses splats that do not share the cameras' world frame before
anything is tracked; `splat_depth_scene` attaches the depth rendered from them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from lift3d.errors import InputError

if TYPE_CHECKING:
    from lift3d.recon.scene import Scene

logger = logging.getLogger(__name__)

#: below this share of splat centres seen by some camera, splats and cameras are not one scene
DEFAULT_MIN_FIT = 0.5


def choose_geometry(
    scene: Scene, *, recon: str, matches: str, splats: Path | None, mast3r_checkpoint: Path | None
) -> str:
    """ "depth", "splats", "mast3r" or "none" for `--recon` (auto or explicit) on this scene.

    Raises:
        InputError: the choice cannot run on this scene; the message says what would.
    """
    if recon == "auto":
        if scene.has_geometry:
            return "depth"
        if splats is not None and scene.has_poses:
            return "splats"
        if mast3r_checkpoint is not None or matches == "mast3r":
            return "mast3r"
        if matches == "flow" or (matches == "auto" and not scene.has_poses):
            if splats is not None:
                raise InputError(
                    splats,
                    f"--splats needs camera poses, and this {scene.kind} scene has none "
                    "(give a COLMAP model or transforms.json of the images the splats were trained on)",
                )
            return "none"
        raise InputError(scene.root, _no_geometry_message(scene))
    if recon == "depth" and not scene.has_geometry:
        raise InputError(scene.root, _no_geometry_message(scene))
    if recon == "splats":
        if splats is None:
            raise InputError(
                None, "--recon splats needs --splats PLY (a 3DGS trained on this scene's cameras)"
            )
        if not scene.has_poses:
            raise InputError(
                scene.root,
                f"--recon splats needs camera poses, and this {scene.kind} scene has none",
            )
    return recon


def _no_geometry_message(scene) -> str:
    if scene.has_poses:
        return (
            f"this {scene.kind} scene has camera poses but no depth. Add --splats PLY (a 3DGS trained on "
            "these cameras: depth is rendered from it), or install MASt3R and give --mast3r-checkpoint "
            "(--recon mast3r), or --matches flow for 2D label maps only"
        )
    return (
        f"this {scene.kind} scene has no depth and no poses. Use --matches flow (2D label maps through "
        "optical flow), or install MASt3R and give --mast3r-checkpoint (--recon mast3r)"
    )


def check_splats_fit(scene: Scene, splats_path: Path, *, min_fit: float = DEFAULT_MIN_FIT) -> float:
    """The share of splat centres some camera sees; an error when it is below `min_fit`.

    Raises:
        InputError: the scene has no poses, or the splats do not share its world frame (the
            message names the file and the share found).
    """
    from lift3d.recon.splat_depth import splat_frame_fit
    from lift3d.recon.splats import read_splats

    if not scene.has_poses:
        raise InputError(
            splats_path, f"--splats needs camera poses, and this {scene.kind} scene has none"
        )
    splats = read_splats(splats_path)
    fit = splat_frame_fit(splats.means, (scene[i] for i in range(len(scene))))
    logger.info(
        "%s: %.1f%% of %d splat centres are seen by the %d cameras",
        splats_path,
        100 * fit,
        len(splats),
        len(scene),
    )
    if fit < min_fit:
        raise InputError(
            splats_path,
            f"only {100 * fit:.1f}% of its {len(splats)} splat centres lie inside any of the {len(scene)} camera views "
            f"of {scene.root} (in front of the camera, within the image; at least {100 * min_fit:.0f}% expected): "
            "the splats and the cameras are not in one world frame. Give the 3DGS trained on these cameras "
            "(its point_cloud.ply), or lower --splat-min-fit",
        )
    return fit


def splat_depth_scene(scene: Scene, splats_path: Path, *, min_alpha: float, device: str = "auto"):
    """The scene with depth rendered from the splats at its cameras, and the backend's description."""
    from lift3d.recon.splat_depth import attach_splat_depth
    from lift3d.recon.splats import read_splats

    splats = read_splats(splats_path)
    backend = "auto"
    if device == "cpu":
        backend = "numba"
    elif device != "auto":
        backend = "gsplat"
    scene = attach_splat_depth(
        scene,
        splats.means,
        splats.quats,
        splats.scales,
        splats.opacities,
        min_alpha=min_alpha,
        backend=backend,
        device=None if device == "auto" else device,
    )
    if backend == "auto":
        import torch

        backend = "gsplat" if torch.cuda.is_available() else "numba"
    return (
        scene,
        f"depth rendered from {len(splats)} splats of {Path(splats_path).name} ({backend}, expected depth, alpha >= {min_alpha})",
    )
