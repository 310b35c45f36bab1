"""What a run shows on the terminal: the logging level (`-q` / `-v`) and one progress bar per stage.

On a terminal each long stage (tracking, lifting, the metric, the previews) draws a tqdm bar; on
anything else (a batch log, a pipe, a CI job) a bar would be one unreadable line of carriage
returns, so the stage logs a line every `every` of its work instead, at most one per
`min_interval_s` (a stage of a few seconds logs nothing). Both go through the
`lift3d.progress` logger: below INFO (`-q`) a run shows neither, and a clean run prints nothing.

Light on purpose: the CLI imports it before parsing its arguments.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator

#: verbosity (-q: -1, default: 0, -v: 1) -> logging level
_LEVELS = {-2: logging.ERROR, -1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}
_FORMAT = "%(levelname)s %(name)s: %(message)s"

logger = logging.getLogger("lift3d.progress")


def setup_logging(verbosity: int = 0) -> int:
    """Configure the root logger for a command-line run; returns the level set.

    Args:
        verbosity: -1 (`-q`: warnings and errors only), 0 (progress and results), 1 (`-v`: also
            the settings of every part, e.g. the segmenter's). Values beyond are clamped.
    """
    level = _LEVELS[max(-2, min(1, int(verbosity)))]
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(handler)
    root.setLevel(level)
    # viser's websocket server logs every connection at INFO: that is -v's detail, not a run's
    logging.getLogger("websockets").setLevel(
        level if verbosity > 0 else max(level, logging.WARNING)
    )
    return level


def _on_terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class StageProgress:
    """Progress of one stage: a tqdm bar on a terminal, else a log line every `every` of `total`.

    Args:
        desc: the stage's name, e.g. `tracking`.
        total: units of work (frames, tiles); 0 or less shows nothing.
        unit: what a unit is, for the bar and the lines.
        every: share of the total between two log lines off a terminal (0.1: every 10%).
        min_interval_s: off a terminal, seconds at least between two lines (and before the first).
    """

    def __init__(
        self,
        desc: str,
        total: int,
        *,
        unit: str = "frame",
        every: float = 0.1,
        min_interval_s: float = 5.0,
    ):
        self.desc, self.total, self.unit = desc, int(total), unit
        self.min_interval_s = float(min_interval_s)
        self.done = 0
        self._every = max(1, int(round(self.total * every))) if self.total > 0 else 1
        self._next = self._every
        self._t0 = self._last = time.perf_counter()
        self._bar = None
        self._silent = self.total <= 0 or not logger.isEnabledFor(logging.INFO)
        if not self._silent and _on_terminal():
            from tqdm.std import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit, leave=False, file=sys.stderr)

    def update(self, n: int = 1) -> None:
        """Count `n` more units done."""
        self.done += n
        if self._silent:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        if self.done >= self._next or self.done >= self.total:
            while self._next <= self.done:
                self._next += self._every
            now = time.perf_counter()
            if now - self._last < self.min_interval_s:
                return
            self._last = now
            seconds = now - self._t0
            logger.info(
                "%s: %d/%d %ss (%d%%, %.0f s)",
                self.desc,
                min(self.done, self.total),
                self.total,
                self.unit,
                round(100 * min(self.done, self.total) / self.total),
                seconds,
            )

    def set(self, done: int, total: int | None = None) -> None:
        """Set the units done (and the total, when it becomes known late): a callback's form."""
        if total is not None and total != self.total:
            self.close()  # restart the count with the new total
            self.__init__(self.desc, total, unit=self.unit, min_interval_s=self.min_interval_s)
        self.update(done - self.done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(iterable: Iterable, *, total: int, desc: str, unit: str = "frame") -> Iterator:
    """Iterate `iterable` showing the stage's progress (`StageProgress`); each item counts once it
    has been processed, i.e. when the next one is asked for."""
    with StageProgress(desc, total, unit=unit) as bar:
        for item in iterable:
            yield item
            bar.update()


class PhasedProgress:
    """A `progress(phase, done, total)` callback (the metric's): one `StageProgress` per phase,
    named `desc (phase)`, the previous phase's closed when the next begins."""

    def __init__(self, desc: str):
        self.desc = desc
        self.bars: dict[str, StageProgress] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        bar = self.bars.get(phase)
        if bar is None:
            self.close()
            bar = self.bars[phase] = StageProgress(
                f"{self.desc} ({phase})", total, unit=phase.removesuffix("s")
            )
        bar.set(done, total)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()

    def __enter__(self) -> PhasedProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
