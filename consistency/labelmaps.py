"""Label maps on disk live in `lift3d.io` (`read_label_map`, `read_label_maps`, `write_label_map`).

This module only re-exports them for `consistency.metric` and `consistency.metric_stream`, which
still import them from here; remove it once they import from `lift3d.io`.
"""

from lift3d.io import read_label_map, read_label_maps, write_label_map

__all__ = ["read_label_map", "read_label_maps", "write_label_map"]
