"""Reading PyTorch checkpoints safely, and saying what is wrong with one in words.

Checkpoints are read with `torch.load(path, map_location="cpu", weights_only=True)` (STYLE.md:
no pickled code is run, CPU users are not broken by a CUDA map location). When that fails, or the
file holds something other than the model's state dict, the backends (SAM, SAM 2, MASt3R) raise
`CheckpointError` with these words: what the file is, what was expected, never torch's own advice
to pass `weights_only=False`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def refused_unpickle(e: BaseException) -> str | None:
    """The words for a `torch.load(weights_only=True)` that refused the file's contents (a
    function, class or object other than tensors: code a pickle would run), else None.

    torch words it "Unsupported global: GLOBAL x" (an object it does not know, e.g. a numpy array)
    or, since 2.6, "Trying to load unsupported GLOBAL x whose module y is blocked" (`os`,
    `subprocess`, ...: a file built to run code), or refuses a call or a build of an object.
    """
    import pickle
    import re

    text = str(e)
    if not (isinstance(e, pickle.UnpicklingError) and text.startswith("Weights only load failed")):
        return None
    m = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", text)
    if m:
        what = f" ({m.group(1)})"
    elif any(
        w in text for w in ("Trying to call reduce", "Can only build", "Can only create new object")
    ):
        what = ""
    else:  # e.g. "Unsupported operand": not pickle data at all
        return None
    return f"the file contains code or objects{what} that lift3d refuses to unpickle (only tensors are read)"


def load_failure(path: Path, e: Exception) -> str:
    """What a failed `torch.load(weights_only=True)` means, in words. torch's own message
    suggests `weights_only=False`, which would run whatever the file holds: it is never quoted."""
    import pickle

    text = str(e)
    if path.stat().st_size == 0:
        return "empty file"
    refused = refused_unpickle(e)
    if refused is not None:
        return refused
    with open(path, "rb") as f:
        if f.read(4) == b"PK\x03\x04":  # a zip archive, the format torch.save writes
            return (
                f"corrupt or truncated PyTorch checkpoint ({type(e).__name__}: {_first_line(text)})"
            )
    if isinstance(e, pickle.UnpicklingError):
        return "not a PyTorch checkpoint (unreadable pickle data)"
    if isinstance(e, EOFError):
        return "corrupt or truncated PyTorch checkpoint"
    return f"not a readable PyTorch checkpoint ({type(e).__name__}: {_first_line(text)})"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:160] if text.strip() else ""


def state_dict_of(obj: Any) -> dict | None:
    """The tensor dict in a loaded checkpoint (bare, or under 'model' / 'state_dict')."""
    import torch

    for candidate in (obj, *(obj.get(k) for k in ("model", "state_dict") if isinstance(obj, dict))):
        if (
            isinstance(candidate, dict)
            and candidate
            and all(isinstance(v, torch.Tensor) for v in candidate.values())
        ):
            return candidate
    return None


def state_dict_mismatch(state: dict, expected: dict) -> str:
    """'' when `state` has exactly the keys and shapes of `expected`, else a short description."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or wrong):
        return ""
    parts = []
    if wrong:
        k = wrong[0]
        parts.append(
            f"{len(wrong)} tensors of another shape (e.g. {k} is {list(state[k].shape)}, expected {list(expected[k].shape)})"
        )
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    return ", ".join(parts)
