"""Label maps drawn on their images: overlays, contact sheets and the baseline-vs-MastSAM strip.

`write_previews` writes what every `lift3d segment` run leaves in `OUT/preview/`:

```
OUT/preview/overlays/<frame>.jpg     every frame, masks blended in their stable ID colours
OUT/preview/contact_sheet.png        up to `max_sheet` evenly spaced overlays, captioned
OUT/preview/baseline_vs_mastsam.png  frame-by-frame segmenter | MastSAM, same frames (if run)
```
An object keeps its colour in every view (`palette.label_colors`), so a glance at the contact
sheet shows whether IDs stayed consistent; the frame-by-frame baseline changes colour per view.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from lift3d.checks import check_array
from lift3d.errors import InputError
from lift3d.io import read_label_map, write_image
from lift3d.viewers.palette import label_colors

if TYPE_CHECKING:
    from lift3d.recon.scene import Scene

logger = logging.getLogger(__name__)

#: colour of mask boundaries: white reads on the dark and the saturated mask colours alike
_EDGE = np.array([255, 255, 255], np.uint8)
_CAPTION_H = 14  # pixels of caption text under a contact-sheet cell (PIL default font: ~11 px)


def mask_edges(labels: np.ndarray) -> np.ndarray:  # [H, W] bool
    """Pixels of a labeled region whose right or lower neighbour has another label.

    Args:
        labels: [H, W] integer label map (0 = unlabeled).

    Returns:
        [H, W] bool, True on a one-pixel boundary along every change of label that touches a
        labeled pixel (both sides of two touching objects, the inside of an object's border).
    """
    labels = np.asarray(labels)
    edge = np.zeros(labels.shape, bool)
    dx = labels[:, 1:] != labels[:, :-1]
    dy = labels[1:, :] != labels[:-1, :]
    # mark the labeled side(s) of each change, so an object's outline lies on the object
    edge[:, :-1] |= dx & (labels[:, :-1] > 0)
    edge[:, 1:] |= dx & (labels[:, 1:] > 0)
    edge[:-1, :] |= dy & (labels[:-1, :] > 0)
    edge[1:, :] |= dy & (labels[1:, :] > 0)
    return edge


def _mask_edges_reference(labels: np.ndarray) -> np.ndarray:
    """`mask_edges` pixel by pixel: labeled and some 4-neighbour holds another label."""
    h, w = labels.shape
    edge = np.zeros((h, w), bool)
    for v in range(h):
        for u in range(w):
            if labels[v, u] == 0:
                continue
            for dv, du in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                if 0 <= v + dv < h and 0 <= u + du < w and labels[v + dv, u + du] != labels[v, u]:
                    edge[v, u] = True
    return edge


def _label_anchors(labels: np.ndarray) -> dict[int, tuple[int, int]]:
    """(u, v) inside each ID's region where its number is written: the pixel nearest the centroid."""
    anchors = {}
    for k in np.unique(labels[labels > 0]).tolist():
        v, u = np.nonzero(labels == k)
        i = int(np.argmin((u - u.mean()) ** 2 + (v - v.mean()) ** 2))
        anchors[int(k)] = (int(u[i]), int(v[i]))
    return anchors


def overlay(
    image: np.ndarray,  # [H, W, 3] uint8 RGB
    labels: np.ndarray,  # [H, W] int, 0 = unlabeled
    *,
    alpha: float = 0.5,
    edges: bool = True,
    ids: bool = False,
) -> np.ndarray:  # [H, W, 3] uint8
    """Blend each ID's stable colour over its pixels, outline the masks, optionally number them.

    Args:
        image: the frame, RGB.
        labels: its label map, same height and width.
        alpha: weight of the mask colour (0 shows the image only, 1 the colours only).
        edges: draw a one-pixel white boundary where the label changes.
        ids: write each ID's number at the pixel of its region nearest the region's centroid.

    Returns:
        A new [H, W, 3] uint8 image; unlabeled pixels keep the image's colour.
    """
    image = check_array(image, ["H", "W", 3], dtype=np.uint8, name="RGB image")
    labels = np.asarray(labels)
    if labels.shape != image.shape[:2]:
        raise InputError(
            None,
            f"labels must be [H, W] = {list(image.shape[:2])} like the image, got {list(labels.shape)}",
        )
    if not 0.0 <= alpha <= 1.0:
        raise InputError(None, f"alpha must lie in [0, 1], got {alpha}")
    out = image.copy()
    fg = labels > 0
    blended = (1.0 - alpha) * image[fg].astype(np.float32) + alpha * label_colors(
        labels[fg]
    ).astype(np.float32)
    out[fg] = np.round(blended).astype(np.uint8)
    if edges:
        out[mask_edges(labels)] = _EDGE
    if ids:
        pil = Image.fromarray(out)
        draw = ImageDraw.Draw(pil)
        for k, (u, v) in _label_anchors(labels).items():
            text = str(k)
            x0, y0, x1, y1 = draw.textbbox((u, v), text, anchor="mm")
            draw.rectangle((x0 - 1, y0 - 1, x1 + 1, y1 + 1), fill=(0, 0, 0))
            draw.text((u, v), text, fill=(255, 255, 255), anchor="mm")
        out = np.asarray(pil)
    return out


def _draw_caption(canvas: Image.Image, xy: tuple[int, int], text: str, width: int) -> None:
    draw = ImageDraw.Draw(canvas)
    x, y = xy
    while text and draw.textlength(text) > width:
        text = text[:-1]
    draw.text((x, y + 1), text, fill=(30, 30, 30))


def contact_sheet(
    images: list[np.ndarray],  # each [H_i, W_i, 3] uint8
    *,
    cols: int,
    labels: list[str] | None = None,
    pad: int = 4,
) -> np.ndarray:  # [H', W', 3] uint8
    """Tile images on a white grid, row by row, each captioned when `labels` are given.

    Args:
        images: the tiles; cells take the largest height and width among them.
        cols: tiles per row.
        labels: one caption per image (e.g. the frame name), or None.
        pad: white pixels between and around the cells.

    Returns:
        The sheet, RGB.
    """
    if not images:
        raise InputError(None, "contact_sheet needs at least one image")
    images = [
        check_array(im, ["H", "W", 3], dtype=np.uint8, name=f"RGB images[{i}]")
        for i, im in enumerate(images)
    ]
    if cols < 1:
        raise InputError(None, f"cols must be at least 1, got {cols}")
    if labels is not None and len(labels) != len(images):
        raise InputError(None, f"got {len(labels)} labels for {len(images)} images")
    ch = max(im.shape[0] for im in images)
    cw = max(im.shape[1] for im in images)
    cap = _CAPTION_H if labels is not None else 0
    cols = min(cols, len(images))
    rows = -(-len(images) // cols)
    sheet = Image.new(
        "RGB", (pad + cols * (cw + pad), pad + rows * (ch + cap + pad)), (255, 255, 255)
    )
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        x, y = pad + c * (cw + pad), pad + r * (ch + cap + pad)
        sheet.paste(Image.fromarray(im), (x, y))
        if labels is not None:
            _draw_caption(sheet, (x, y + ch), str(labels[i]), cw)
    return np.asarray(sheet)


def side_by_side(
    left_images: list[np.ndarray],  # each [H, W, 3] uint8
    right_images: list[np.ndarray],  # each [H, W, 3] uint8
    *,
    titles: tuple[str, str] = ("frame-by-frame", "MastSAM"),
    labels: list[str] | None = None,
    pad: int = 4,
) -> np.ndarray:  # [H', W', 3] uint8
    """A two-column strip, one row per frame: left image | right image, a title over each column.

    Args:
        left_images: e.g. overlays of the frame-by-frame baseline.
        right_images: e.g. overlays of MastSAM, same frames in the same order.
        titles: the two column titles.
        labels: one caption per row (the frame name), or None.
        pad: white pixels between and around the cells.
    """
    if len(left_images) != len(right_images):
        raise InputError(
            None,
            f"side_by_side needs as many left as right images, got {len(left_images)} and {len(right_images)}",
        )
    if not left_images:
        raise InputError(None, "side_by_side needs at least one pair of images")
    tiles = [im for pair in zip(left_images, right_images) for im in pair]
    captions = None if labels is None else [c for name in labels for c in (str(name), str(name))]
    if labels is not None and len(labels) != len(left_images):
        raise InputError(None, f"got {len(labels)} labels for {len(left_images)} rows")
    grid = Image.fromarray(contact_sheet(tiles, cols=2, labels=captions, pad=pad))
    cw = max(im.shape[1] for im in tiles)
    out = Image.new("RGB", (grid.width, grid.height + _CAPTION_H + pad), (255, 255, 255))
    out.paste(grid, (0, _CAPTION_H + pad))
    draw = ImageDraw.Draw(out)
    for c, title in enumerate(titles):
        x = pad + c * (cw + pad) + cw // 2
        draw.text((x, pad + _CAPTION_H // 2), title, fill=(0, 0, 0), anchor="mm")
    return np.asarray(out)


def thumbnail(image: np.ndarray, max_width: int) -> np.ndarray:  # [H, W, 3] -> [h, w, 3] uint8
    """The image shrunk to at most `max_width` pixels wide (Lanczos), aspect kept; unchanged if narrower."""
    if image.shape[1] <= max_width:
        return image
    h = round(image.shape[0] * max_width / image.shape[1])
    return np.asarray(Image.fromarray(image).resize((max_width, h), Image.Resampling.LANCZOS))


def evenly_spaced(n: int, k: int) -> list[int]:
    """At most `k` indices of `range(n)`, evenly spaced, first and last included."""
    if n <= 0 or k <= 0:
        return []
    return sorted(set(np.linspace(0, n - 1, min(n, k)).round().astype(int).tolist()))


def write_previews(
    out_dir: str | Path,
    scene: Scene,  # lift3d.recon.scene.Scene
    label_maps_dir: str | Path,
    *,
    baseline_dir: str | Path | None = None,
    max_sheet: int = 12,
    max_strip: int = 6,
    thumb_width: int = 320,
    ids: bool = True,
    progress=None,
) -> list[Path]:
    """Write the overlays, the contact sheet and (when the baseline ran) the side-by-side strip.

    Args:
        out_dir: the run's output folder; files go to `out_dir/preview/`.
        scene: the run's `Scene` (frames at the working resolution of the label maps).
        label_maps_dir: MastSAM's label maps, `<frame>.png` per frame.
        baseline_dir: the frame-by-frame segmenter's label maps (`OUT/baseline/masks`), or None.
        max_sheet: most frames on the contact sheet (evenly spaced).
        max_strip: most rows of the side-by-side strip (evenly spaced).
        thumb_width: width the sheet and strip cells are shrunk to (wider frames only).
        ids: write the ID numbers on the overlays.
        progress: wraps the iteration over the frames (e.g. a progress bar), or None.

    Returns:
        The files written.

    Raises:
        InputError: a frame's label map is missing, unreadable, or not the frame's size.
    """
    preview = Path(out_dir) / "preview"
    label_maps_dir = Path(label_maps_dir)
    names = list(scene.frame_names)
    sheet_idx = set(evenly_spaced(len(names), max_sheet))
    strip_idx = set(evenly_spaced(len(names), max_strip))
    baseline = None
    if baseline_dir is not None:
        baseline = Path(baseline_dir)
        if not baseline.is_dir():
            logger.warning("%s: no baseline label maps, skipping baseline_vs_mastsam.png", baseline)
            baseline = None
    written: list[Path] = []
    sheet, sheet_names, left, right, strip_names = [], [], [], [], []
    for i, name in (progress or iter)(enumerate(names)):
        frame = scene[i]
        path = label_maps_dir / f"{name}.png"
        labels = read_label_map(path)
        if labels.shape != frame.image.shape[:2]:
            raise InputError(
                path,
                f"label map is {labels.shape[1]}x{labels.shape[0]}, frame {name} is {frame.size[0]}x{frame.size[1]}",
            )
        ov = overlay(frame.image, labels, ids=ids)
        written.append(write_image(preview / "overlays" / f"{name}.jpg", ov))
        if i in sheet_idx:
            sheet.append(thumbnail(ov, thumb_width))
            sheet_names.append(name)
        if baseline is not None and i in strip_idx:
            bpath = baseline / f"{name}.png"
            if not bpath.is_file():
                logger.warning("%s: baseline label map missing, frame left out of the strip", bpath)
                continue
            blabels = read_label_map(bpath)
            if blabels.shape != labels.shape:
                raise InputError(
                    bpath,
                    f"baseline label map is {blabels.shape[1]}x{blabels.shape[0]}, frame {name} is {frame.size[0]}x{frame.size[1]}",
                )
            left.append(thumbnail(overlay(frame.image, blabels, ids=ids), thumb_width))
            right.append(thumbnail(ov, thumb_width))
            strip_names.append(name)
    if sheet:
        cols = min(4, len(sheet))
        written.append(
            write_image(
                preview / "contact_sheet.png", contact_sheet(sheet, cols=cols, labels=sheet_names)
            )
        )
    if left:
        strip = side_by_side(left, right, labels=strip_names)
        written.append(write_image(preview / "baseline_vs_mastsam.png", strip))
    logger.info(
        "previews: %d overlays, contact sheet of %d frames -> %s", len(names), len(sheet), preview
    )
    return written
