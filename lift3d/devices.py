"""Which torch device a run uses: `--device auto` resolved once, the same way everywhere."""

from __future__ import annotations


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; anything else unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
