"""Error types a user can act on.

Every error raised on bad input carries the offending path (when there is one), what was
expected and what was found. The CLI catches :class:`Lift3dError` and prints one line.
"""

from __future__ import annotations

from pathlib import Path


class Lift3dError(Exception):
    """Base class of every error lift3d raises on purpose."""


class InputError(Lift3dError):
    """Bad input: a file or folder that is missing, unreadable or malformed.

    Args:
        path: the file or folder at fault (may be None when the input is an array).
        problem: what is wrong, phrased so the user can fix it.
    """

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class NotInstalledError(Lift3dError):
    """An optional backend is missing; the message says how to install it."""


class CheckpointError(Lift3dError):
    """A checkpoint is missing, corrupt, or does not fit the model it was loaded into."""
