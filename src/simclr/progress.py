"""Progress that reads well in both places it is seen: a tqdm bar on a terminal, and plain periodic
lines when output goes to a Snakemake or DVC log (no carriage returns, no bar fragments)."""
from __future__ import annotations

import sys
import time
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int, desc: str, log: Callable[[str], None] = print,
             every_s: float = 30.0, enabled: bool = True, stream=None) -> Iterator[T]:
    """Yield `items`; show a bar when `stream` (stderr) is a terminal, else log `desc: i/total` at most
    once every `every_s` seconds. `enabled=False` (e.g. DDP ranks other than 0) shows nothing."""
    stream = stream or sys.stderr
    if not enabled:
        yield from items
        return
    if stream.isatty():
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=desc, leave=False, file=stream, dynamic_ncols=True)
        return
    start = last = time.monotonic()
    for i, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= every_s and i < total:
            log(f"{desc}: {i}/{total} ({i / (now - start):.2f}/s)")
            last = now
