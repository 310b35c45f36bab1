"""Colours: one stable colour per object ID, and a colour ramp for scalars (confidence, H).

The colour of an ID depends on the ID alone, never on which IDs a frame or a run happens to
hold, so the same object has the same colour in every overlay, render, report and viewer, in
every run (the paper's figures rely on this). Consecutive IDs are spread round the hue circle by
the golden-ratio sequence, whose consecutive terms are as far apart as any sequence allows, and
lightness/saturation alternate so that IDs whose hues come back close still differ.
"""

from __future__ import annotations

import numpy as np

#: the golden-ratio conjugate: hue step between consecutive IDs
_PHI = 0.6180339887498949
#: (saturation, value) cycled by ID so that IDs with near hues differ in brightness
_SAT_VAL = np.array([[0.90, 0.60], [0.80, 0.95], [0.55, 1.00], [0.95, 0.75]], np.float64)
#: hue of ID 0 and IDs per (saturation, value) step: chosen to maximise the smallest RGB
#: distance between any two of IDs 1..20 (46 of 441) and 1..40 (33)
_HUE0, _SV_STEP = 0.5, 2
#: control points of the scalar ramp (viridis at 0, 1/4, 1/2, 3/4, 1)
_RAMP = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float64
)
#: colour of unlabeled points in renders and the web viewer
UNLABELED_GREY = (150, 150, 150)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """[..., 3] float RGB in [0, 1] from hue, saturation, value in [0, 1]."""
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack(
        [
            np.stack(c, -1)
            for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
        ],
        0,
    )  # [6, ..., 3]
    return np.take_along_axis(table, i[None, ..., None], 0)[0]


def label_colors(
    labels: np.ndarray,  # [...] integer IDs, 0 = unlabeled
    *,
    unlabeled: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:  # [..., 3] uint8
    """A stable RGB colour per object ID.

    Args:
        labels: integer IDs of any shape; 0 means unlabeled.
        unlabeled: colour returned for ID 0 (callers that blend, like `overlay`, leave those
            pixels untouched instead).

    Returns:
        [..., 3] uint8 colours; equal IDs always get equal colours, in every call and run.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        if labels.size and not np.all(np.mod(labels, 1) == 0):
            raise ValueError(
                f"label IDs must be integers, got dtype {labels.dtype} with fractional values"
            )
        labels = labels.astype(np.int64)
    ids = labels.astype(np.int64)
    hue = np.mod(_HUE0 + ids * _PHI, 1.0)
    sv = _SAT_VAL[np.mod(ids // _SV_STEP, len(_SAT_VAL))]
    rgb = np.round(_hsv_to_rgb(hue, sv[..., 0], sv[..., 1]) * 255).astype(np.uint8)
    rgb[ids == 0] = np.asarray(unlabeled, np.uint8)
    return rgb


def _label_color_reference(label: int) -> tuple[int, int, int]:
    """One ID's colour with the standard library's colorsys (the reference for `label_colors`)."""
    import colorsys

    if label == 0:
        return (0, 0, 0)
    s, v = _SAT_VAL[(label // _SV_STEP) % len(_SAT_VAL)]
    r, g, b = colorsys.hsv_to_rgb((_HUE0 + label * _PHI) % 1.0, s, v)
    return (round(r * 255), round(g * 255), round(b * 255))


def scalar_colors(
    values: np.ndarray,  # [...] float
    *,
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> np.ndarray:  # [..., 3] uint8
    """Viridis-like colours for scalars (confidence, per-pixel H); NaN maps to grey.

    Args:
        values: scalars of any shape.
        vmin: value mapped to the dark end.
        vmax: value mapped to the bright end.
    """
    values = np.asarray(values, np.float64)
    span = vmax - vmin if vmax > vmin else 1.0
    x = np.clip((values - vmin) / span, 0.0, 1.0) * (len(_RAMP) - 1)
    x = np.nan_to_num(x, nan=0.0)
    lo = np.minimum(np.floor(x).astype(np.int64), len(_RAMP) - 2)
    f = (x - lo)[..., None]
    rgb = np.round(_RAMP[lo] * (1 - f) + _RAMP[lo + 1] * f).astype(np.uint8)
    rgb[np.isnan(values)] = np.asarray(UNLABELED_GREY, np.uint8)
    return rgb
