"""Where a model is inconsistent: the per-pixel h of the metric H drawn as heat-maps.

`write_heatmaps` writes one PNG per frame (what `lift3d segment` leaves in
`OUT/preview/heatmaps/<frame>.png`); `write_heatmap_sheet` writes a contact sheet of evenly
spaced frames with the colour bar as legend. The scale is fixed, never stretched to a frame's
own range, so one colour means one value in every frame and every run: h = 0 (no 3D neighbour
shares the pixel's label) red, 0.5 pale yellow, 1 (every neighbour agrees) green, after
ColorBrewer's RdYlGn; pixels left out of H (no depth, unlabeled) are grey.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lift3d.io import write_image
from lift3d.viewers.overlay import contact_sheet, evenly_spaced, thumbnail

logger = logging.getLogger(__name__)

#: colour of pixels left out of H (NaN in the per-pixel map)
EXCLUDED_RGB = (128, 128, 128)
#: ColorBrewer RdYlGn, 11 classes, red (0) to green (1); interpolated linearly between them
_RAMP = np.array(
    [
        [165, 0, 38],
        [215, 48, 39],
        [244, 109, 67],
        [253, 174, 97],
        [254, 224, 139],
        [255, 255, 191],
        [217, 239, 139],
        [166, 217, 106],
        [102, 189, 99],
        [26, 152, 80],
        [0, 104, 55],
    ],
    np.float64,
)
_TEXT_H = 14  # pixels of a line of PIL's default font (~11 px high)
_BAR_H = 14  # pixels of the colour bar's ramp


def heatmap_rgb(
    h: np.ndarray,  # [...] float, NaN = excluded
    *,
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> np.ndarray:  # [..., 3] uint8
    """Colours of per-pixel h values on the fixed red-yellow-green scale.

    Args:
        h: values of any shape (an [H, W] map of h(p)); NaN where the pixel was left out.
        vmin: value drawn red (values below are clipped to it); 0 for label maps, -1 suits
            feature input, whose cosines can be negative.
        vmax: value drawn green (values above are clipped to it).

    Returns:
        [..., 3] uint8 RGB; NaN is `EXCLUDED_RGB`.
    """
    _check_range(vmin, vmax)
    h = np.asarray(h, np.float64)
    x = np.clip((np.nan_to_num(h, nan=vmin) - vmin) / (vmax - vmin), 0.0, 1.0) * (len(_RAMP) - 1)
    lo = np.minimum(np.floor(x).astype(np.int64), len(_RAMP) - 2)
    f = (x - lo)[..., None]
    rgb = np.round(_RAMP[lo] * (1 - f) + _RAMP[lo + 1] * f).astype(np.uint8)
    rgb[np.isnan(h)] = EXCLUDED_RGB
    return rgb


def colour_bar(
    width: int,
    *,
    vmin: float = 0.0,
    vmax: float = 1.0,
    title: str = "h(p): share of the pixel's 3D neighbours (within eps) with its label",
) -> np.ndarray:  # [bar height, width, 3] uint8
    """The legend: a title, the ramp with ticks at vmin, the middle and vmax, the grey swatch."""
    _check_range(vmin, vmax)
    pad = 6
    ramp_w = max(16, int(width) - 2 * pad)
    im = Image.new("RGB", (ramp_w + 2 * pad, 3 * _TEXT_H + _BAR_H + 2 * pad + 4), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    draw.text((pad, pad), title, fill=(30, 30, 30))
    y0 = pad + _TEXT_H
    im.paste(
        Image.fromarray(
            heatmap_rgb(
                np.linspace(vmin, vmax, ramp_w)[None].repeat(_BAR_H, 0), vmin=vmin, vmax=vmax
            )
        ),
        (pad, y0),
    )
    for frac, anchor in ((0.0, "la"), (0.5, "ma"), (1.0, "ra")):
        x = pad + round(frac * (ramp_w - 1))
        draw.line((x, y0 + _BAR_H, x, y0 + _BAR_H + 3), fill=(30, 30, 30))
        draw.text(
            (x, y0 + _BAR_H + 4),
            f"{vmin + frac * (vmax - vmin):g}",
            fill=(30, 30, 30),
            anchor=anchor,
        )
    y1 = y0 + _BAR_H + _TEXT_H + 6
    draw.rectangle((pad, y1 + 1, pad + 10, y1 + 11), fill=EXCLUDED_RGB)
    draw.text((pad + 15, y1 + 1), "left out of H: no depth, or unlabeled", fill=(30, 30, 30))
    return np.asarray(im)


def write_heatmaps(
    out_dir: str | Path,
    per_pixel: np.ndarray,  # [N, H, W] float, NaN = excluded
    frame_names: list[str],
    *,
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> list[Path]:
    """Write one heat-map PNG per frame, `out_dir/<frame>.png`, each atomically.

    Args:
        out_dir: the folder (created if needed).
        per_pixel: [N, H, W] h(p) of every frame (`MetricResult.per_pixel`), NaN where excluded.
        frame_names: the N frame names, in order.
        vmin: value drawn red; vmax: value drawn green (see `heatmap_rgb`).

    Returns:
        The N files, in frame order.

    Raises:
        ValueError: per_pixel is not a float [N, H, W] array, or the names do not match it.
    """
    per_pixel, names = _check_maps(per_pixel, frame_names)
    return write_heatmap_frames(out_dir, per_pixel, names, vmin=vmin, vmax=vmax)


def write_heatmap_frames(
    out_dir: str | Path,
    per_pixel: Iterable[np.ndarray],  # N x [H, W] float, NaN = excluded
    frame_names: list[str],
    *,
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> list[Path]:
    """`write_heatmaps` from maps given one frame at a time (an iterator: a long scan's h never
    needs to sit in memory at once).

    Args:
        out_dir: the folder (created if needed).
        per_pixel: one [H, W] h(p) map per frame, in the order of frame_names.
        frame_names: the N frame names (distinct).

    Raises:
        ValueError: a map is not a float [H, W] array, or the iterator's length differs from N.
    """
    names = [str(n) for n in frame_names]
    if len(set(names)) != len(names):
        raise ValueError("frame names must be distinct: each names a file")
    out_dir = Path(out_dir)
    written = []
    for h in per_pixel:
        h = np.asarray(h)
        if h.ndim != 2 or not np.issubdtype(h.dtype, np.floating):
            raise ValueError(
                f"each map must be a float [H, W] array, got {h.dtype} {list(h.shape)}"
            )
        if len(written) == len(names):
            raise ValueError(f"more maps than the {len(names)} frame names")
        written.append(
            write_image(
                out_dir / f"{names[len(written)]}.png", heatmap_rgb(h, vmin=vmin, vmax=vmax)
            )
        )
    if len(written) != len(names):
        raise ValueError(f"{len(written)} maps for {len(names)} frame names")
    logger.info("heat-maps: %d frames -> %s", len(names), out_dir)
    return written


def write_heatmap_sheet(
    path: str | Path,
    per_pixel: np.ndarray,  # [N, H, W] float, NaN = excluded
    frame_names: list[str],
    *,
    vmin: float = 0.0,
    vmax: float = 1.0,
    max_frames: int = 12,
    thumb_width: int = 320,
) -> Path:
    """Write a contact sheet of up to `max_frames` evenly spaced heat-maps, each captioned with
    its frame name and mean h, above the colour bar (PNG, atomically).

    Args:
        path: the PNG to write.
        per_pixel: [N, H, W] h(p) of every frame, NaN where excluded.
        frame_names: the N frame names, in order.
        vmin: value drawn red; vmax: value drawn green.
        max_frames: most frames on the sheet (first and last included).
        thumb_width: width the cells are shrunk to (wider frames only).
    """
    per_pixel, names = _check_maps(per_pixel, frame_names)
    if not names:
        raise ValueError("no frames to draw")
    tiles, captions = [], []
    for i in evenly_spaced(len(names), max_frames):
        tiles.append(thumbnail(heatmap_rgb(per_pixel[i], vmin=vmin, vmax=vmax), thumb_width))
        finite = per_pixel[i][np.isfinite(per_pixel[i])]
        captions.append(
            f"{names[i]}  mean h {finite.mean():.3f}" if finite.size else f"{names[i]}  no pixels"
        )
    grid = contact_sheet(tiles, cols=min(4, len(tiles)), labels=captions)
    bar = colour_bar(max(min(grid.shape[1], 480), 300), vmin=vmin, vmax=vmax)
    sheet = np.full(
        (grid.shape[0] + bar.shape[0], max(grid.shape[1], bar.shape[1]), 3), 255, np.uint8
    )
    sheet[: grid.shape[0], : grid.shape[1]] = grid
    sheet[grid.shape[0] :, : bar.shape[1]] = bar
    return write_image(Path(path), sheet)


def _check_maps(per_pixel, frame_names) -> tuple[np.ndarray, list[str]]:
    if per_pixel is None:
        raise ValueError("no per-pixel h to draw: compute the metric with per_pixel=True")
    per_pixel = np.asarray(per_pixel)
    if per_pixel.ndim != 3 or not np.issubdtype(per_pixel.dtype, np.floating):
        raise ValueError(
            f"per_pixel must be a float [N, H, W] array, got {per_pixel.dtype} {list(per_pixel.shape)}"
        )
    names = [str(n) for n in frame_names]
    if len(names) != len(per_pixel):
        raise ValueError(
            f"per_pixel holds N = {len(per_pixel)} frames, frame_names N = {len(names)} frames"
        )
    if len(set(names)) != len(names):
        raise ValueError("frame names must be distinct: each names a file")
    return per_pixel, names


def _check_range(vmin: float, vmax: float) -> None:
    if not (math.isfinite(vmin) and math.isfinite(vmax) and vmin < vmax):
        raise ValueError(f"need finite vmin < vmax, got vmin={vmin}, vmax={vmax}")
