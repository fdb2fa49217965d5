"""Helpers shared by benchmarks: timing, peak memory in a fresh process, a cache folder."""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CACHE = Path(__file__).resolve().parent / "results"


def cache_dir() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB.

    Reads VmHWM from /proc (reset at exec, so a spawned child reports its own
    peak; ru_maxrss would carry the parent's over exec). Falls back to ru_maxrss.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(fn: Callable[..., Any], args: tuple, queue: mp.Queue) -> None:
    start = time.perf_counter()
    result = fn(*args)
    queue.put((time.perf_counter() - start, peak_rss_mb(), result))


def timed_in_fresh_process(fn: Callable[..., Any], *args: Any) -> tuple[float, float, Any]:
    """Run fn(*args) in a spawned process; return (seconds, peak RSS MiB of that process, result)."""
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out
