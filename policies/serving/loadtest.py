"""Bounded load tests of the decision service (loopback only; every run stops by itself).

`run_load` sends `n_calls` POST /v1/decide calls with `concurrency` keep-alive
connections from a small asyncio HTTP/1.1 client (lighter than a general
client, so the numbers measure the server more than the client), stopping at
`n_calls` or `time_limit_s`, whichever comes first. It reports throughput,
p50/p90/p99 latency and the error count (`load_table` renders results as an
aligned text table). `ServerProcess` runs `serve` in a child
process so its memory (RSS) can be sampled, as the soak test does.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from pushrl.policies.artifact import Manifest

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class LoadResult:
    """Outcome of one bounded load run; latencies in milliseconds, per call (p90_ms: None if not measured)."""

    calls: int
    decisions: int
    errors: int
    concurrency: int
    batch_size: int
    elapsed_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    first_error: str | None = None
    p90_ms: float | None = None

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def decisions_per_s(self) -> float:
        return self.decisions / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        return (f"batch {self.batch_size:>4} x concurrency {self.concurrency:>3}: {self.calls} calls, "
                f"{self.calls_per_s:,.0f} calls/s, {self.decisions_per_s:,.0f} decisions/s, "
                f"p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms, errors {self.errors}")


_TABLE_COLUMNS: tuple[tuple[str, Callable[[LoadResult], str]], ...] = (
    ("calls", lambda r: f"{r.calls:,}"),
    ("errors", lambda r: f"{r.errors:,}"),
    ("calls/s", lambda r: f"{r.calls_per_s:,.0f}"),
    ("decisions/s", lambda r: f"{r.decisions_per_s:,.0f}"),
    ("p50 ms", lambda r: f"{r.p50_ms:.2f}"),
    ("p90 ms", lambda r: "-" if r.p90_ms is None else f"{r.p90_ms:.2f}"),
    ("p99 ms", lambda r: f"{r.p99_ms:.2f}"),
    ("max ms", lambda r: f"{r.max_ms:.2f}"),
    ("concurrency", lambda r: str(r.concurrency)),
    ("batch size", lambda r: str(r.batch_size)),
    ("seconds", lambda r: f"{r.elapsed_s:.2f}"),
)


def load_table(results: LoadResult | Sequence[LoadResult]) -> str:
    """Load results as an aligned text table: a header line, then one right-aligned line per result;
    the first error of each result that had errors follows the table."""
    rows = [results] if isinstance(results, LoadResult) else list(results)
    if not rows:
        raise ValueError("load_table needs at least one LoadResult, got none")
    cells = [[name for name, _ in _TABLE_COLUMNS]] + [[show(r) for _, show in _TABLE_COLUMNS] for r in rows]
    widths = [max(len(line[j]) for line in cells) for j in range(len(_TABLE_COLUMNS))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)) for line in cells]
    lines += [f"first error (row {i + 1}): {r.first_error}" for i, r in enumerate(rows) if r.first_error]
    return "\n".join(lines)


def random_requests(manifest: Manifest, n: int, seed: int = 0, prefix: str = "r") -> list[dict[str, Any]]:
    """`n` valid raw requests: numbers ~ N(mean, std), categories drawn from the vocabularies."""
    rng = np.random.default_rng(seed)
    enc = manifest.encoder
    nums = rng.standard_normal((n, len(enc.numeric))) * np.asarray(enc.stds) + np.asarray(enc.means)
    out = []
    for i in range(n):
        ctx: dict[str, Any] = {f: float(nums[i, j]) for j, f in enumerate(enc.numeric)}
        for c in enc.categorical:
            vocab = enc.vocabularies[c]
            ctx[c] = vocab[int(rng.integers(len(vocab)))] if vocab else "x"
        out.append({"request_id": f"{prefix}-{i}", "context": ctx})
    return out


def _check_loopback(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK:
        raise ValueError(f"load tests run against loopback only (http://127.0.0.1:PORT), got {base_url!r}")
    return parts.hostname, parts.port or 80


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes) -> tuple[int, bytes]:
    writer.write(head + body)
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split()[1])
    length, close = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "connection" and value.strip().lower() == "close":
            close = True
    data = await reader.readexactly(length)
    if close:
        raise ConnectionResetError("the server asked to close the connection")
    return status, data


async def _load(host: str, port: int, bodies: Sequence[bytes], n_calls: int, concurrency: int,
                time_limit_s: float, batch_size: int) -> LoadResult:
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(n_calls))
    run = os.urandom(4).hex().encode()  # request ids are unique per call and per run: the server refuses reuse
    start = time.perf_counter()
    deadline = start + time_limit_s

    async def worker() -> None:
        conn = None
        for i in counter:
            if time.perf_counter() > deadline:
                break
            body = bodies[i % len(bodies)].replace(b'"request_id": "', b'"request_id": "%s-%d-' % (run, i))
            head = (f"POST /v1/decide HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            t0 = time.perf_counter()
            try:
                if conn is None:
                    conn = await asyncio.open_connection(host, port)
                status, data = await asyncio.wait_for(_post(*conn, head, body), timeout=30)
                if status != 200:
                    errors.append(f"HTTP {status}: {data[:200]!r}")
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                if conn is not None:
                    conn[1].close()
                conn = None
            latencies.append(time.perf_counter() - t0)
        if conn is not None:
            conn[1].close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    lat = np.asarray(latencies) * 1e3 if latencies else np.zeros(1)
    calls = len(latencies)
    return LoadResult(calls, (calls - len(errors)) * batch_size, len(errors), concurrency, batch_size, elapsed,
                      float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), float(lat.max()),
                      errors[0] if errors else None, float(np.percentile(lat, 90)))


def run_load(
    base_url: str,
    requests: Sequence[dict[str, Any]],
    *,
    n_calls: int,
    concurrency: int = 1,
    batch_size: int = 1,
    time_limit_s: float = 60.0,
) -> LoadResult:
    """POST `n_calls` decide calls of `batch_size` requests each (cycling through `requests`)."""
    host, port = _check_loopback(base_url)
    if n_calls < 1 or concurrency < 1 or batch_size < 1 or time_limit_s <= 0:
        raise ValueError(f"n_calls, concurrency, batch_size must be >= 1 and time_limit_s > 0; got "
                         f"{n_calls}, {concurrency}, {batch_size}, {time_limit_s}")
    if len(requests) < batch_size:
        raise ValueError(f"need at least batch_size={batch_size} requests, got {len(requests)}")
    n_bodies = max(1, min(64, len(requests) // batch_size))
    bodies = [json.dumps({"requests": list(requests[i * batch_size:(i + 1) * batch_size])}).encode()
              for i in range(n_bodies)]
    return asyncio.run(_load(host, port, bodies, n_calls, concurrency, time_limit_s, batch_size))


@dataclass(frozen=True)
class MaxLoad:
    """What `find_max_load` measured: every step, and the highest-throughput one that kept zero errors and
    p99 within the bound (None when even the first step broke it)."""

    steps: list[LoadResult]
    best: LoadResult | None
    p99_bound_ms: float
    stopped: str  # why the search ended

    def summary(self) -> str:
        if self.best is None:
            return f"no load kept zero errors and p99 <= {self.p99_bound_ms:g} ms ({self.stopped})"
        b = self.best
        return (f"highest zero-error load with p99 <= {self.p99_bound_ms:g} ms: concurrency {b.concurrency}, "
                f"batch {b.batch_size}: {b.calls_per_s:,.0f} calls/s, {b.decisions_per_s:,.0f} decisions/s, "
                f"p99 {b.p99_ms:.2f} ms ({self.stopped})")


def find_max_load(
    base_url: str,
    requests: Sequence[dict[str, Any]],
    *,
    p99_ms: float = 5.0,
    concurrencies: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
    batch_size: int = 1,
    calls_per_step: int = 20_000,
    step_s: float = 5.0,
    on_step: Callable[[LoadResult], None] | None = None,
) -> MaxLoad:
    """Step the concurrency up (closed loop: each connection sends its next call when the last is answered)
    until a step has an error or its p99 exceeds `p99_ms`, or throughput stops rising (two steps in a row
    under the best so far); each step is bounded by `calls_per_step` and `step_s`."""
    if p99_ms <= 0 or not concurrencies or min(concurrencies) < 1:
        raise ValueError(f"p99_ms must be > 0 and concurrencies >= 1, got {p99_ms}, {list(concurrencies)}")
    steps: list[LoadResult] = []
    best: LoadResult | None = None
    stopped, flat = f"stepped up to concurrency {concurrencies[-1]}", 0
    for conc in concurrencies:
        res = run_load(base_url, requests, n_calls=calls_per_step, concurrency=conc, batch_size=batch_size,
                       time_limit_s=step_s)
        steps.append(res)
        if on_step is not None:
            on_step(res)
        if res.errors:
            stopped = f"concurrency {conc} had {res.errors} error(s)"
            break
        if res.p99_ms > p99_ms:
            stopped = f"concurrency {conc} broke the p99 bound ({res.p99_ms:.2f} ms)"
            break
        if best is None or res.decisions_per_s > best.decisions_per_s:
            best, flat = res, 0
        else:
            flat += 1
            if flat >= 2:
                stopped = f"throughput stopped rising by concurrency {conc}"
                break
    return MaxLoad(steps, best, p99_ms, stopped)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_CHILD = "import json, sys; from pushrl.policies.serving.http import serve; serve(sys.argv[1], port=int(sys.argv[2]), **json.loads(sys.argv[3]))"


class ServerProcess:
    """`serve(artifact)` in a child Python process on a free loopback port; a context manager.

    options: keyword arguments of `create_app` that JSON can carry (seed, decision_log as a path, ...).
    """

    def __init__(self, artifact: str | os.PathLike[str], *, start_timeout_s: float = 60.0, **options: Any) -> None:
        self.artifact, self.timeout = str(artifact), start_timeout_s
        self.options = json.dumps(options)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        self._proc = subprocess.Popen([sys.executable, "-c", _CHILD, self.artifact, str(self.port), self.options])
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            code = self._proc.poll()
            if code is not None or time.monotonic() > deadline:
                self.__exit__()
                why = f"exited with code {code}" if code is not None else f"did not answer within {self.timeout} s"
                raise RuntimeError(f"the server process {why} (GET {self.url}/healthz)")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()  # uvicorn shuts down gracefully on SIGTERM (the decision log is closed)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the server process is not running")
        return self._proc.pid

    def rss_mb(self) -> float:
        """Current resident memory of the server process, MiB (Linux /proc)."""
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("VmRSS not found")


def soak(
    server: ServerProcess, requests: Sequence[dict[str, Any]], *, duration_s: float, concurrency: int = 4,
    batch_size: int = 1, sample_every_s: float = 5.0, on_sample: Callable[[float, float], None] | None = None,
) -> tuple[list[tuple[float, float]], list[LoadResult]]:
    """Load `server` for `duration_s` in slices, sampling its RSS after each; returns (samples, results)."""
    samples: list[tuple[float, float]] = []
    results: list[LoadResult] = []
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < duration_s:
        res = run_load(server.url, requests, n_calls=10**9, concurrency=concurrency, batch_size=batch_size,
                       time_limit_s=min(sample_every_s, duration_s - elapsed))
        results.append(res)
        rss = server.rss_mb()
        samples.append((time.monotonic() - start, rss))
        if on_sample is not None:
            on_sample(samples[-1][0], rss)
    return samples, results
