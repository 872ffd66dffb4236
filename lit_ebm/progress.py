"""Progress of the long loops of the command-line tools (sampling, MCMC, metrics).

On a terminal it is a tqdm bar. Where stderr is not a terminal (a log file, a batch job, a
pipe) a bar would be invisible or a mess of carriage returns, so one plain line is written to
stderr instead every ``every`` seconds, and one at the end of a loop that wrote any: what, how
far, how long so far and about how long is left. A loop shorter than ``every`` stays silent.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

from tqdm import tqdm


class Progress:
    """Counts ``total`` units of work named ``desc``; use as a context manager, call
    :meth:`update` with each finished amount."""

    def __init__(self, total: int, desc: str, unit: str = "img", every: float = 30.0,
                 stream: TextIO | None = None) -> None:
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.stream = sys.stderr if stream is None else stream
        self.done = 0
        self.start = self.last = time.perf_counter()
        terminal = getattr(self.stream, "isatty", lambda: False)()
        self.bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream) if terminal else None

    def update(self, amount: int) -> None:
        self.done += amount
        if self.bar is not None:
            self.bar.update(amount)
            return
        now = time.perf_counter()
        if now - self.last >= self.every or (self.done >= self.total and self.last > self.start):
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = now - self.start
        left = elapsed * (self.total - self.done) / self.done if self.done else float("nan")
        print(f"{self.desc}: {self.done}/{self.total} {self.unit} "
              f"({100 * self.done / max(self.total, 1):.0f}%), {elapsed:.0f} s so far, "
              f"about {left:.0f} s left", file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.bar is not None:
            self.bar.close()
