"""What the metric is asked (`MetricConfig`) and what it answers (`MetricResult`).

Light on purpose (no numba): `lift3d --help` imports it through the CLI's configs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lift3d.errors import InputError

#: points a tile loads by default: ~100 bytes each at the peak of a tile (0.5 GiB measured on
#: scene0000_00, and no slower than 10M: docs/benchmarks/memory.md)
DEFAULT_MAX_POINTS = 2_000_000


@dataclass
class MetricConfig:
    """Settings of the metric H; none of them changes a result, but `eps` (and `pairwise`)."""

    eps: float = 0.02
    """Neighbourhood radius in metres."""
    pairwise: bool = True
    """Also compute the ID-free pairwise variant (labels only). Its table has an entry per pair of (mask, view) that meet within eps: their number grows with the square of how many views see one spot. Memory stays within `max_points` (the table is counted in passes and spilled to disk), but time grows with it (12x the metric's time at 1,000 orbiting views), so switch it off for captures where hundreds of views look at the same surface."""
    max_points: int = DEFAULT_MAX_POINTS
    """Labeled points held at once (one tile of space with its halo, ~100 bytes each for labels, more for features): the memory bound, whatever the scan's length. Larger is a little faster."""
    workers: int = 2
    """Threads of the counting kernels (they run without the GIL)."""
    work_dir: Path | None = None
    """Folder for the temporary spill files (~60 bytes a labeled pixel, removed at the end); default: the output folder's `.lift3d-tmp/` in `lift3d segment` and `lift3d metric`, else the system's."""
    pairwise_entries: int | None = None
    """Pairwise contingency entries held at once (16 bytes each); default max_points // 8, so that they never cost more than a tile."""
    cells_per_eps: int = 1
    """Grid cells of edge eps / cells_per_eps. Finer cells test fewer pairs one by one, but on scene0000_00 classifying 125 or 343 neighbour cells cost more than that saved (docs/benchmarks/metric.md)."""
    cells_per_block: int = 1
    """Cells along each edge of a block (>= cells_per_eps: a cell's neighbours must lie in the 27 blocks around its own); tiles and their halos are made of blocks."""

    def check(self, prefix: str | None = None) -> None:
        """Raises InputError naming the first setting out of range: by its field name, or as the
        flag `prefix + name` (`check("--metric.")` names `--metric.max-points`)."""

        def name(field: str) -> str:
            return field if prefix is None else prefix + field.replace("_", "-")

        eps = self.eps
        if isinstance(eps, bool) or not (
            isinstance(eps, (int, float, np.floating, np.integer))
            and math.isfinite(eps)
            and eps > 0
        ):
            raise InputError(
                None, f"{name('eps')} must be a positive number of metres, got {eps!r}"
            )
        for field in ("max_points", "workers", "cells_per_eps", "cells_per_block"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(None, f"{name(field)} must be a positive integer, got {value!r}")
        e = self.pairwise_entries
        if e is not None and (isinstance(e, bool) or not isinstance(e, (int, np.integer)) or e < 1):
            raise InputError(
                None, f"{name('pairwise_entries')} must be a positive integer or None, got {e!r}"
            )
        if self.cells_per_block < self.cells_per_eps:
            raise InputError(
                None,
                f"{name('cells_per_block')} ({self.cells_per_block}) must be at least "
                f"{name('cells_per_eps')} ({self.cells_per_eps})",
            )

    @property
    def entry_limit(self) -> int:
        """Pairwise entries held at once: a pass's keys, a folded table, a group reduced at the end."""
        return (
            int(self.pairwise_entries)
            if self.pairwise_entries is not None
            else max(1, int(self.max_points) // 8)
        )


@dataclass
class MetricResult:
    """What `consistency_score` measured.

    Attributes:
        H: mean of h(p) over all valid labeled pixels, in [0, 1] for labels.
        pairwise: the ID-free pairwise agreement in [0, 1]; None for feature input, when not
            asked for, or when no view pair shares two correspondences.
        eps: neighbourhood radius in metres.
        pixels: number of valid labeled pixels used.
        per_pixel: [N, H, W] float32 h(p), NaN where excluded (an array, or a read-only memory
            map of `<folder>/h.npy`); None unless asked for.
        per_frame: mean h of each frame (NaN for a frame without labeled pixels).
    """

    H: float
    pairwise: float | None
    eps: float
    pixels: int
    per_pixel: np.ndarray | None
    per_frame: list[float]

    def to_json(self) -> dict:
        """Plain JSON values (NaN written as null)."""
        return {
            "H": self.H,
            "pairwise": self.pairwise,
            "eps": self.eps,
            "pixels": self.pixels,
            "per_frame": [None if not math.isfinite(v) else v for v in self.per_frame],
        }
