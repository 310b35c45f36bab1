"""numba kernels of the CPU splat depth renderer (`lift3d.recon.splat_depth`).

Imported only when a depth is rendered on the CPU: numba compiles on first use (cached on disk).
The rules are gsplat 1.5.3's (`IntersectTile.cu`, `RasterizeToPixels3DGSFwd.cu`): splats binned
into 16x16 tiles by their rectangular extent, each tile's list in depth order, every pixel of a
tile composites its list front to back and stops before the splat that would take T to 1e-4.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(nogil=True, cache=True)
def bin_tiles(tile_rect, tiles_x, tiles_y):  # [M, 4] int64 (x0, y0, x1, y1), x1/y1 exclusive
    """CSR lists of the splats on each tile, in the order of `tile_rect` (depth order).

    Returns:
        offsets: [tiles + 1] int64; ids: [sum of tiles touched] int64 rows of `tile_rect`.
    """
    n_tiles = tiles_x * tiles_y
    counts = np.zeros(n_tiles + 1, np.int64)
    for k in range(tile_rect.shape[0]):
        for ty in range(tile_rect[k, 1], tile_rect[k, 3]):
            for tx in range(tile_rect[k, 0], tile_rect[k, 2]):
                counts[ty * tiles_x + tx + 1] += 1
    offsets = np.cumsum(counts)
    fill = offsets[:-1].copy()
    ids = np.empty(offsets[-1], np.int64)
    for k in range(tile_rect.shape[0]):
        for ty in range(tile_rect[k, 1], tile_rect[k, 3]):
            for tx in range(tile_rect[k, 0], tile_rect[k, 2]):
                t = ty * tiles_x + tx
                ids[fill[t]] = k
                fill[t] += 1
    return offsets, ids


@njit(nogil=True, cache=True, parallel=True)
def composite_depth(
    means2d,  # [M, 2] float64, gsplat pixel frame (pixel (j, i) sampled at (j + 0.5, i + 0.5))
    conics,  # [M, 3] float64 (a, b, c) of the inverse 2D covariance
    opacities,  # [M] float64
    depths,  # [M] float64 camera z
    offsets,  # [tiles + 1] int64
    ids,  # [...] int64
    width,
    height,
    tile_size,
    alpha_max,
    alpha_min,
    t_min,
):
    """Accumulated depth sum(w z) and alpha 1 - T of every pixel, w = alpha * T (front to back)."""
    tiles_x = (width + tile_size - 1) // tile_size
    tiles_y = (height + tile_size - 1) // tile_size
    acc = np.zeros((height, width), np.float64)
    alpha_out = np.zeros((height, width), np.float64)
    for t in prange(tiles_x * tiles_y):
        ty, tx = t // tiles_x, t % tiles_x
        start, stop = offsets[t], offsets[t + 1]
        for i in range(ty * tile_size, min((ty + 1) * tile_size, height)):
            for j in range(tx * tile_size, min((tx + 1) * tile_size, width)):
                px, py = j + 0.5, i + 0.5
                T = 1.0
                d = 0.0
                for s in range(start, stop):
                    k = ids[s]
                    dx = means2d[k, 0] - px
                    dy = means2d[k, 1] - py
                    sigma = (
                        0.5 * (conics[k, 0] * dx * dx + conics[k, 2] * dy * dy)
                        + conics[k, 1] * dx * dy
                    )
                    if sigma < 0.0:
                        continue
                    alpha = min(alpha_max, opacities[k] * np.exp(-sigma))
                    if alpha < alpha_min:
                        continue
                    next_t = T * (1.0 - alpha)
                    if next_t <= t_min:
                        break
                    d += alpha * T * depths[k]
                    T = next_t
                acc[i, j] = d
                alpha_out[i, j] = 1.0 - T
    return acc, alpha_out
