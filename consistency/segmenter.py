"""The `Segmenter` protocol: what MastSAM needs from a 2D segmentation model.

Two capabilities, as SAM has them: automatic masks for a whole image, and masks from point
prompts. Backends: `SamSegmenter` (segment-anything checkpoints, `consistency/sam.py`) and
`ClassicalSegmenter` (weight-free, the embedded default, `consistency/classical.py`).

Embedding reuse: a backend computes the image embedding once per frame and reuses it for every
prompt of that frame. The cache is keyed on the image array object, so callers pass the same
array to `generate` and to every `predict` of one frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

#: segmenters (their `name`, or the config's name) whose masks are per-image fragments, not
#: objects: the rules that read a mask as one object (the tracker's snapping to automatic masks,
#: the view clustering's under-segmentation) are decided off for them
FRAGMENT_SEGMENTERS = frozenset({"classical", "classical-2d"})


def makes_fragments(segmenter_name: str | None) -> bool:
    """Whether the segmenter named makes per-image fragments (`FRAGMENT_SEGMENTERS`)."""
    return segmenter_name in FRAGMENT_SEGMENTERS


@dataclass
class Masks:
    """A set of masks of one image.

    Attributes:
        masks: [K, H, W] bool.
        scores: [K] float32 quality estimate in [0, 1] (SAM's predicted IoU; classical: a
            region-homogeneity score). K may be 0.
    """

    masks: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @staticmethod
    def empty(size: tuple[int, int]) -> Masks:
        W, H = size
        return Masks(np.zeros((0, H, W), bool), np.zeros((0,), np.float32))

    @staticmethod
    def from_records(records: list[dict], size: tuple[int, int]) -> Masks:
        """The records of SAM's (or SAM 2's) automatic mask generator as Masks.

        Args:
            records: one dict per mask with `segmentation` [H, W] bool and `predicted_iou`.
            size: (W, H) of the image, for the empty set when there are no records.

        Returns:
            Masks with scores the predicted IoU clipped to [0, 1].
        """
        if not records:
            return Masks.empty(size)
        masks = np.stack([np.asarray(r["segmentation"], bool) for r in records])
        scores = np.clip([r["predicted_iou"] for r in records], 0, 1).astype(np.float32)
        return Masks(masks, scores)


@runtime_checkable
class Segmenter(Protocol):
    """A promptable 2D segmenter.

    `geometry` is an optional [H, W, 3] world pointmap with NaN/0 where unknown; backends that do
    not use geometry (SAM) ignore it, the classical one uses it to split by depth and normals.
    """

    name: str

    def generate(self, image: np.ndarray, *, geometry: np.ndarray | None = None) -> Masks:
        """Automatic masks of a [H, W, 3] uint8 image (SAM's automatic mask generator)."""
        ...

    def predict(
        self,
        image: np.ndarray,  # [H, W, 3] uint8
        points: np.ndarray,  # [B, P, 2] float (u, v) pixels
        point_labels: np.ndarray,  # [B, P] int: 1 foreground, 0 background, -1 padding
        *,
        geometry: np.ndarray | None = None,
    ) -> Masks:
        """One mask per prompt set: B sets of P points -> masks [B, H, W], scores [B].

        Prompt sets are batched; sets with fewer points pad with label -1.
        """
        ...
