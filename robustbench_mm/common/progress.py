"""Progress bars that suit where stderr goes: a live tqdm bar on a terminal, one line per stage in a log.

In a log file tqdm's carriage-return redraws pile up into unreadable noise, so there each stage
writes a single line when it ends: what it was, how far it got, how long it took.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm.auto import tqdm


class LogLine:
    """The part of tqdm's interface the stages use, printing one summary line at `close`."""

    def __init__(self, total: int, desc: str, unit: str, disable: bool):
        self.total, self.desc, self.unit, self.disable = total, desc, unit, disable
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.started = time.perf_counter()
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def close(self) -> None:
        if self.closed or self.disable:
            return
        self.closed = True
        details = "".join(f", {k} {v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}s in {time.perf_counter() - self.started:.1f} s{details}",
              file=sys.stderr, flush=True)

    def __enter__(self) -> "LogLine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: int, desc: str, unit: str = "step", disable: bool = False, leave: bool = True,
                 **tqdm_options: Any) -> tqdm | LogLine:
    """A tqdm bar on stderr when it is a terminal, else a `LogLine`."""
    if not sys.stderr.isatty():
        return LogLine(total, desc, unit, disable)
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, leave=leave, file=sys.stderr, dynamic_ncols=True,
                **tqdm_options)
