"""`OUT/report.html`: one page with a run's metrics, previews, instances and settings.

The page is one file, self-contained apart from the preview images, which it links relatively
(open it from the output folder, or copy the folder whole): inline CSS, no script (long tables
fold with HTML's own `<details>`), nothing fetched from the network. Per-frame images appear in
the run's frame order (`0, 33, 66, 100`, not the file names' `0, 100, 33, 66`). It is rebuilt from the files of the output alone, so `write_report(OUT)` can be run
again on any finished output.
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
from pathlib import Path
from urllib.parse import quote

import numpy as np

from lift3d.io import atomic_path, read_json
from lift3d.recon.files import IMAGE_SUFFIXES
from lift3d.viewers.outputs import check_output, read_instances
from lift3d.viewers.palette import label_colors

logger = logging.getLogger(__name__)

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #1d1d1f; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.sub { color: #666; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; margin: 1em 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.5em 1em; min-width: 7em; }
.card b { display: block; font-size: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border-bottom: 1px solid #eee; padding: 0.2em 0.8em 0.2em 0; text-align: left; vertical-align: top; }
th { font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.swatch { display: inline-block; width: 1em; height: 1em; border-radius: 2px; vertical-align: middle; }
figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
figcaption { color: #666; font-size: 0.9em; }
img { max-width: 100%; border: 1px solid #eee; }
.grid img { max-width: 320px; }
details { margin: 0.6em 0; } summary { cursor: pointer; font-weight: 600; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 12px; }
.missing { color: #a33; }
"""
_MAX_LIST = 12  # longer lists in metrics.json are summarised (min, mean, max) and drawn as bars
_MAX_ROWS = 20  # longer tables are folded (<details>), their first rows on show


def _esc(x) -> str:
    return html.escape(str(x))


def format_value(v) -> str:
    """A metric value as text: ints with thousands separators, floats below 1 to 4 decimals,
    larger ones to at most 2, lists summarised (min, mean, max) when long."""
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v == 0 or 1e-3 <= abs(v) < 1:
            return f"{v:.4f}"  # scores and ε: always four decimals, so columns line up
        if 1 <= abs(v) < 1e6:
            return f"{v:.2f}".rstrip("0").rstrip(".")  # seconds, counts, means
        return f"{v:.4g}"
    if isinstance(v, list):
        if len(v) <= _MAX_LIST:
            return "[" + ", ".join(format_value(x) for x in v) + "]"
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            a = np.asarray(v, np.float64)
            lo, hi = (
                (int(a.min()), int(a.max()))
                if all(isinstance(x, int) for x in v)
                else (float(a.min()), float(a.max()))
            )
            return f"{len(v)} values: min {format_value(lo)}, mean {format_value(float(a.mean()))}, max {format_value(hi)}"
        return f"{len(v)} values"
    return str(v)


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            rows.extend(_flatten(v, key + "."))
        else:
            rows.append((key, v))
    return rows


def _bars_svg(values: list[float], *, width: int = 360, height: int = 40) -> str:
    """A tiny inline SVG bar chart of a numeric list (e.g. masks per frame)."""
    a = np.asarray(values, np.float64)
    top = a.max() if len(a) and a.max() > 0 else 1.0
    bw = width / len(a)
    bars = "".join(
        f'<rect x="{i * bw:.2f}" y="{height - h:.2f}" width="{max(bw - 0.5, 0.5):.2f}" height="{h:.2f}"/>'
        for i, h in enumerate(a / top * height)
    )
    return f'<svg width="{width}" height="{height}" fill="#4a78c2" role="img">{bars}</svg>'


def _metrics_table(metrics: dict) -> str:
    rows = []
    for key, v in _flatten(metrics):
        cell = _esc(format_value(v))
        if (
            isinstance(v, list)
            and len(v) > _MAX_LIST
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        ):
            cell += "<br>" + _bars_svg(v)
        rows.append(f"<tr><th>{_esc(key)}</th><td>{cell}</td></tr>")
    return _fold(rows, "", "metrics")


def _cards(metrics: dict) -> str:
    picks = [
        ("H", "H"),
        ("pairwise", "pairwise"),
        ("eps", "ε (m)"),
        ("pixels", "pixels"),
        ("frames", "frames"),
        ("ids", "IDs"),
    ]
    cards = [
        f'<div class="card">{_esc(title)}<b>{_esc(format_value(metrics[key]))}</b></div>'
        for key, title in picks
        if key in metrics
    ]
    return '<div class="cards">' + "".join(cards) + "</div>" if cards else ""


def _rel(out: Path, path: Path) -> str:
    return quote(path.relative_to(out).as_posix())


def _natural_key(name: str) -> tuple:
    """`frame10` after `frame9`: digit runs compare as numbers."""
    return tuple(
        (0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t
    )


def _images(folder: Path, order: dict[str, int] | None = None) -> list[Path]:
    """The images of a folder, in the run's frame order (`order`: frame name -> index; a file
    named `<frame>.png` or `view_<frame>.png` is that frame's), the others after in natural order."""
    if not folder.is_dir():
        return []
    order = order or {}

    def key(p: Path):
        stem = p.stem.removeprefix("view_")
        return (order.get(stem, len(order)), _natural_key(p.stem))

    return sorted(
        (
            p
            for p in folder.iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        ),
        key=key,
    )


def _frame_order(out: Path, run: dict | None) -> dict[str, int]:
    """Frame name -> position in the run (run.json's scene frames, else cameras.json's)."""
    names = ((run or {}).get("scene") or {}).get("frames")
    if not isinstance(names, list) and (out / "cameras.json").is_file():
        try:
            names = [
                f.get("name")
                for f in read_json(out / "cameras.json", "cameras.json").get("frames", [])
            ]
        except Exception:  # the report shows what it can; the viewer reports a broken cameras.json
            names = None
    return {str(n): i for i, n in enumerate(names)} if isinstance(names, list) else {}


def _fold(table_rows: list[str], head: str, what: str) -> str:
    """A table; past _MAX_ROWS rows, its first rows on show and the rest folded under a summary."""
    if len(table_rows) <= _MAX_ROWS:
        return "<table>" + head + "".join(table_rows) + "</table>"
    shown, rest = table_rows[:_MAX_ROWS], table_rows[_MAX_ROWS:]
    return (
        "<table>" + head + "".join(shown) + "</table>"
        f"<details><summary>{len(rest)} more {_esc(what)}</summary><table>{head}{''.join(rest)}</table></details>"
    )


def _figure(out: Path, path: Path, caption: str, *, lazy: bool = False) -> str:
    loading = ' loading="lazy"' if lazy else ""
    return (
        f'<figure><a href="{_rel(out, path)}"><img src="{_rel(out, path)}" alt="{_esc(caption)}"{loading}></a>'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


def _previews(out: Path, order: dict[str, int]) -> str:
    from lift3d.viewers.overlay import evenly_spaced

    preview = out / "preview"
    parts = []
    for name, caption in (
        ("contact_sheet.png", "contact sheet: MastSAM label maps, evenly spaced frames"),
        ("baseline_vs_mastsam.png", "frame-by-frame segmenter | MastSAM"),
        ("heatmap_sheet.png", "per-pixel consistency h(p), evenly spaced frames"),
    ):
        if (preview / name).is_file():
            parts.append(_figure(out, preview / name, caption))
    for sub, title, limit in (
        ("renders", "Labeled point cloud", 8),
        ("heatmaps", "Per-pixel consistency h(p)", 12),
    ):
        images = _images(preview / sub, order)
        if images:
            # evenly spaced over the scan, in frame order: the start, the middle and the end
            figs = "".join(
                _figure(out, images[i], images[i].stem, lazy=True)
                for i in evenly_spaced(len(images), limit)
            )
            more = (
                f"<p>{len(images) - limit} more in <code>preview/{sub}/</code></p>"
                if len(images) > limit
                else ""
            )
            parts.append(f'<h3>{_esc(title)}</h3><div class="grid">{figs}</div>{more}')
    overlays = _images(preview / "overlays", order)
    if overlays:
        figs = "".join(_figure(out, p, p.stem, lazy=True) for p in overlays)
        parts.append(
            f'<details><summary>All {len(overlays)} overlays</summary><div class="grid">{figs}</div></details>'
        )
    if not parts:
        return '<p class="missing">No previews in <code>preview/</code> (run without <code>--no-preview</code>).</p>'
    return "".join(parts)


def _instances_table(instances: list[dict], n_frames: int | None) -> str:
    if not instances:
        return "<p>No instances.</p>"
    colours = label_colors(np.array([e["id"] for e in instances]))
    rows = []
    for e, (r, g, b) in zip(instances, colours.tolist()):
        frames = e["frames"]
        listed = ", ".join(frames[:12]) + (
            f", ... (+{len(frames) - 12})" if len(frames) > 12 else ""
        )
        of = f" of {n_frames}" if n_frames else ""
        rows.append(
            f'<tr><td><span class="swatch" style="background:rgb({r},{g},{b})"></span></td>'
            f'<td class="num">{e["id"]}</td><td class="num">{e["points"]:,}</td>'
            f'<td class="num">{_esc(format_value(e["confidence"]))}</td>'
            f'<td class="num">{len(frames)}{of}</td><td>{_esc(listed)}</td></tr>'
        )
    head = "<tr><th></th><th>ID</th><th>points</th><th>confidence</th><th>views</th><th>seen in</th></tr>"
    return _fold(rows, head, "instances")


def _kv_table(d: dict) -> str:
    """Settings as rows `name | value`, nested settings as dotted names (`tracker.overlap_iou`)."""
    rows = [
        f"<tr><th>{_esc(k)}</th><td>{_esc(json.dumps(v) if isinstance(v, (list, dict)) else format_value(v))}</td></tr>"
        for k, v in _flatten(d)
    ]
    return _fold(rows, "", "settings")


def _settings(run: dict | None) -> str:
    if run is None:
        return '<p class="missing">run.json not found.</p>'
    parts = []
    if run.get("command"):
        parts.append(f"<p><code>{_esc(run['command'])}</code></p>")
    for key, title, open_ in (
        ("config", "Configuration", True),
        ("backends", "Backends", True),
        ("checkpoints", "Checkpoints", False),
        ("scene", "Scene", False),
        ("versions", "Versions", False),
    ):
        value = run.get(key)
        if isinstance(value, dict) and value:
            if key == "scene" and isinstance(value.get("frames"), list):
                value = {**value, "frames": format_value(value["frames"])}
            parts.append(
                f"<details{' open' if open_ else ''}><summary>{title}</summary>{_kv_table(value)}</details>"
            )
    parts.append(
        f"<details><summary>run.json</summary><pre>{_esc(json.dumps(run, indent=1))}</pre></details>"
    )
    return "".join(parts)


def write_report(out_dir: str | Path) -> Path:
    """Write `out_dir/report.html` from the output's metrics, run settings, instances and previews.

    Args:
        out_dir: output folder of `lift3d segment` (needs metrics.json; run.json, instances.json
            and preview/ are shown when present).

    Returns:
        The path of the report.

    Raises:
        InputError: the folder is missing or holds no metrics.json (not a lift3d output), or a
            JSON file in it is malformed.
    """
    out = check_output(out_dir, ("metrics.json",))
    metrics = read_json(out / "metrics.json", "metrics.json")
    run = read_json(out / "run.json", "run.json") if (out / "run.json").is_file() else None
    instances = read_instances(out)
    name = ((run or {}).get("scene") or {}).get("name") or out.resolve().name
    n_frames = metrics.get("frames") if isinstance(metrics.get("frames"), int) else None
    # the backends' plain names only: their nested settings (a segmenter's 16) are the Settings table's
    backends = ", ".join(
        f"{k}: {v}"
        for k, v in ((run or {}).get("backends") or {}).items()
        if not isinstance(v, dict | list)
    )
    subtitle = " · ".join(_esc(x) for x in ((run or {}).get("date"), backends) if x)
    body = [
        f"<h1>lift3d: {_esc(name)}</h1>",
        f'<p class="sub">{subtitle}</p>' if subtitle else "",
        _cards(metrics),
        "<h2>Metrics</h2>",
        "<p>H: mean over labeled pixels of the agreement of each pixel's label with every pixel of every view "
        "within ε of its 3D point; report it beside the pairwise (ID-free) variant and a segmentation-quality "
        "number, as one giant mask also scores well on H.</p>",
        _metrics_table(metrics),
        "<h2>Previews</h2>",
        _previews(out, _frame_order(out, run)),
        f"<h2>Instances ({len(instances)})</h2>",
        _instances_table(instances, n_frames),
        "<h2>Settings</h2>",
        _settings(run),
        f'<p class="sub">Explore in 3D: <code>lift3d view {_esc(out)}</code></p>',
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>lift3d: {_esc(name)}</title>'
        f"<style>{_CSS}</style></head><body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body></html>\n"
    )
    path = out / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    logger.info("report -> %s", path)
    return path
