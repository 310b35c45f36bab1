"""BYOCL, the MastSAM paper's own baseline: consistent labels from clustered encoder features.

BYOCL (Dai et al., "BYOCL: Build Your Own Consistent Latent with Hierarchical Representative
Latent Clustering", arXiv 2410.15060; code cyt1202/BYOCL, `clustering_features.py` and
`stable_processing/analysis.py`, read for this) makes a video's labels consistent without any
prompting or tracking, in two levels of clustering of the segmenter's image-encoder features:

1. Intra-batch: the frames are cut into batches of `batch` (4) consecutive frames. A batch's
   features ([b, h, w, C], SAM's 64x64x256 embedding) are reduced by PCA to `n_components` (20),
   fitted on that batch, and clustered by K-Means into `k` (10) clusters: every feature cell of
   the batch's frames gets a batch-local label. Each cluster's *prototype* is the mean of its
   cells' full features (before PCA).
2. Inter-batch: the prototypes of all batches are clustered together by K-Means into
   `global_clusters` (30); each batch-local label takes its prototype's global cluster.

The labels live on the feature grid (BYOCL's "rough result", 64x64) and are upsampled to the
frame by nearest cell here. With a SAM or SAM 2 checkpoint the features are the segmenter's own
image embedding (`encoder_features`), as in the paper. Without weights there is no encoder: the
documented stand-in (`stand_in_features`) is each grid cell's mean CIE-Lab colour and its
position, which is not SAM's latent and is named as such wherever it is used. Departures: K-Means
and PCA run on the CPU (scikit-learn, seeded) instead of cuML; the grid covers the frame itself,
not SAM's zero-padded square.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from lift3d.errors import InputError

if TYPE_CHECKING:
    from lift3d.consistency.segmenter import Segmenter
    from lift3d.recon.scene import Scene

#: how the stand-in feature is named in results (never as SAM's latent)
STAND_IN = "stand-in feature (CIE-Lab colour + position on a 64-cell grid; no encoder weights, not SAM's latent)"


def stand_in_features(image: np.ndarray, *, grid: int = 64) -> np.ndarray:  # [h, w, 5] float32
    """Mean Lab colour (scaled to ~unit range) and position of each cell of a grid of `grid`
    cells on the long side (SAM's 64x64 embedding grid)."""
    from skimage.color import rgb2lab

    H, W = image.shape[:2]
    cell = max(1, -(-max(H, W) // grid))
    h, w = max(1, H // cell), max(1, W // cell)
    lab = rgb2lab(image[: h * cell, : w * cell]).astype(np.float32)
    lab = lab.reshape(h, cell, w, cell, 3).mean(axis=(1, 3)) / np.array([100, 128, 128], np.float32)
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    pos = np.stack([u / max(w, h), v / max(w, h)], axis=-1) * 0.5
    return np.concatenate([lab, pos], axis=-1).astype(np.float32)


def encoder_features(segmenter: Segmenter, image: np.ndarray) -> tuple[np.ndarray, str]:
    """([h, w, C] float32 features of the frame, their name): the segmenter's image embedding
    when it has one (`image_features`, SAM and SAM 2), else the stand-in."""
    fn = getattr(segmenter, "image_features", None)
    if callable(fn):
        return np.asarray(
            fn(image), np.float32
        ), f"image encoder of {getattr(segmenter, 'name', 'the segmenter')}"
    return stand_in_features(image), STAND_IN


def _pca(x: np.ndarray, n: int) -> np.ndarray:
    """[M, C] -> [M, min(n, C)] principal components (centred SVD)."""
    x = x - x.mean(axis=0, keepdims=True)
    n = min(n, x.shape[1], x.shape[0])
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:n].T


def byocl_cluster(
    features: Sequence[np.ndarray],  # N x [h, w, C] float
    *,
    batch: int = 4,
    k: int = 10,
    n_components: int = 20,
    global_clusters: int = 30,
    seed: int = 0,
) -> np.ndarray:  # [N, h, w] int32, 1..global_clusters
    """BYOCL's two-level clustering of per-frame feature grids (module docstring).

    Raises:
        InputError: no frames, grids of different shapes, or a non-positive parameter.
    """
    from sklearn.cluster import KMeans

    if not len(features):
        raise InputError(None, "BYOCL needs at least one frame")
    feats = (
        np.stack([np.asarray(f, np.float32) for f in features])
        if len({np.shape(f) for f in features}) == 1
        else None
    )
    if feats is None or feats.ndim != 4:
        raise InputError(None, "BYOCL: every frame's features must be [h, w, C] of one shape")
    if min(batch, k, n_components, global_clusters) < 1:
        raise InputError(None, "BYOCL: batch, k, n_components and global_clusters must be positive")
    N, h, w, C = feats.shape
    local = np.zeros((N, h, w), np.int64)
    protos, owner = [], []
    for b, s in enumerate(range(0, N, batch)):
        x = feats[s : s + batch].reshape(-1, C)
        kk = min(k, len(x))
        lab = KMeans(kk, n_init=1, random_state=seed).fit_predict(_pca(x, n_components))
        local[s : s + batch] = lab.reshape(-1, h, w)
        for j in range(kk):
            on = lab == j
            if on.any():
                protos.append(x[on].mean(axis=0))
                owner.append((b, j))
    protos = np.stack(protos)
    g = KMeans(min(global_clusters, len(protos)), n_init=1, random_state=seed).fit_predict(protos)
    lut = np.zeros((len(range(0, N, batch)), k), np.int64)
    for (b, j), c in zip(owner, g):
        lut[b, j] = c + 1
    out = np.empty((N, h, w), np.int32)
    for b, s in enumerate(range(0, N, batch)):
        out[s : s + batch] = lut[b][local[s : s + batch]]
    return out


def byocl_labels(
    scene: Scene, segmenter: Segmenter, *, seed: int = 0, **kwargs
) -> tuple[np.ndarray, str]:
    """BYOCL on every frame of `scene`: ([N, H, W] int32 label maps at the frames' size, the
    feature used). Keyword arguments go to `byocl_cluster`."""
    feats, name = [], ""
    sizes = []
    for i in range(len(scene)):
        image = scene[i].image
        f, name = encoder_features(segmenter, image)
        feats.append(f)
        sizes.append(image.shape[:2])
    grid = byocl_cluster(feats, seed=seed, **kwargs)
    H, W = sizes[0]
    h, w = grid.shape[1:]
    rows = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
    return grid[:, rows[:, None], cols[None, :]], name
