"""Per-pixel consistency h(p) as heat-map PNGs: where a model is inconsistent across views.

Each frame's h map (from `consistency_score(..., per_pixel=True)`) is coloured with a fixed
0..1 scale (red = inconsistent, green = consistent), pixels left out of the metric (no depth,
unlabeled) in grey, so heat-maps of different runs and frames compare by eye.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

EXCLUDED_RGB = (96, 96, 96)
"""Colour of pixels left out of the metric (no valid point, or unlabeled)."""


def heatmap_rgb(h: np.ndarray, *, cmap: str = "RdYlGn") -> np.ndarray:  # [H, W] float -> [H, W, 3] uint8
    """Colour one h map: values in [0, 1] through `cmap`, NaN (excluded) in grey."""
    from matplotlib import colormaps

    h = np.asarray(h, np.float32)
    if h.ndim != 2:
        raise ValueError(f"h must be an [H, W] map, got shape {h.shape}")
    ok = np.isfinite(h)
    lut = (colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)
    idx = np.clip(np.nan_to_num(h, nan=0.0) * 255 + 0.5, 0, 255).astype(np.intp)
    out = lut[idx]
    out[~ok] = EXCLUDED_RGB
    return out


def write_heatmaps(
    out_dir: str | Path,
    per_pixel: np.ndarray,  # [N, H, W] float32 h(p), NaN = excluded
    frame_names: Sequence[str],
    *,
    cmap: str = "RdYlGn",
) -> list[Path]:
    """Write `<out_dir>/<frame>.png` for every frame (atomically); returns the paths.

    Args:
        out_dir: folder to write (created).
        per_pixel: [N, H, W] h(p) in [0, 1], NaN where the pixel is not part of the metric.
        frame_names: N names, one per frame.
        cmap: matplotlib colour map (low = inconsistent).
    """
    from PIL import Image

    from lift3d.recon.files import atomic_path

    per_pixel = np.asarray(per_pixel)
    if per_pixel.ndim != 3 or per_pixel.shape[0] != len(frame_names):
        raise ValueError(f"per_pixel must be [N, H, W] with N = {len(frame_names)} frames, got {per_pixel.shape}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, h in zip(frame_names, per_pixel, strict=True):
        path = out_dir / f"{name}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(heatmap_rgb(h, cmap=cmap)).save(tmp, format="PNG")
        paths.append(path)
    return paths
