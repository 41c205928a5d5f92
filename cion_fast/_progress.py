"""The one progress bar of the package: rendering, extraction, the denoising levels, training steps.

On a terminal it is tqdm's bar, redrawn in place. When stderr is not a terminal (a log file, a pipe,
a batch job) a redrawn bar would write one ``\\r`` update after another into the file, so a plain
line is printed at each quarter of the work instead: at most four lines. Without tqdm the plain
lines are printed on a terminal too.

Use it as a context manager: an error then closes the bar first, so its message starts a line of
its own instead of being glued to the bar.

Example:
    >>> with progress_bar(8, "work", "item", enabled=False) as bar:
    ...     bar.update(8)
    >>> bar.n
    8
"""

from __future__ import annotations

import sys
from typing import Any


class _Lines:
    """The plain bar: ``desc:  p%| done/total unit`` (tqdm's text, less the bar) at each quarter;
    no output when ``quiet``."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0, quiet: bool = False):
        self.total, self.desc, self.unit, self.n, self.quiet = total, desc, unit, initial, quiet
        self.postfix = ""
        self._shown = self._quarter()

    def _quarter(self) -> int:
        return 4 * self.n // max(self.total, 1)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._quarter() > self._shown:
            self._shown = self._quarter()
            if not self.quiet:
                percent = 100 * self.n // max(self.total, 1)
                print(f"{self.desc}: {percent:3d}%| {self.n}/{self.total} {self.unit}{self.postfix}", file=sys.stderr, flush=True)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = f", {text}" if text else ""

    def set_postfix(self, **values: Any) -> None:
        self.set_postfix_str(", ".join(f"{key}={value}" for key, value in values.items()))

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Lines":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True, initial: int = 0) -> Any:
    """A bar over ``total`` units with tqdm's ``update`` / ``set_postfix`` / ``set_postfix_str`` /
    ``close`` and ``n``: tqdm's on a terminal, plain lines elsewhere, silent when not ``enabled``."""
    if enabled and sys.stderr.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)
    return _Lines(total, desc, unit, initial, quiet=not enabled)
