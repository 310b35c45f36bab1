"""What a person looks at: mask overlays, heat-maps, point renders, the report and the web viewer.

The viewers only read results (a `lift3d segment` output folder, or arrays):

- `overlay`, `contact_sheet`, `write_previews`: label maps drawn on their images.
- `heatmap_rgb`, `write_heatmaps`: the per-pixel h of the metric.
- `render_points`, `write_point_renders`: the labeled points seen from the cameras.
- `write_report`: `report.html`; `serve`: the web viewer (`lift3d view`).
- `label_colors`: every object's stable colour.

Nothing heavy is imported here (viser, matplotlib load where used).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# `overlay` is also the name of its module: imported here, the function keeps the name
from lift3d.viewers.overlay import contact_sheet, overlay, write_previews

if TYPE_CHECKING:
    from lift3d.viewers.heatmap import heatmap_rgb, write_heatmaps
    from lift3d.viewers.palette import label_colors
    from lift3d.viewers.render import render_points, write_point_renders
    from lift3d.viewers.report import write_report
    from lift3d.viewers.web import serve

_LAZY = {
    "heatmap_rgb": "heatmap",
    "write_heatmaps": "heatmap",
    "label_colors": "palette",
    "render_points": "render",
    "write_point_renders": "render",
    "write_report": "report",
    "serve": "web",
}

__all__ = [
    "contact_sheet",
    "heatmap_rgb",
    "label_colors",
    "overlay",
    "render_points",
    "serve",
    "write_heatmaps",
    "write_point_renders",
    "write_previews",
    "write_report",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
