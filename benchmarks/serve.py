"""Serving benchmark: latency at a fixed request rate, and throughput at saturation.

Trains (or takes) a model store on MovieLens latest-small, starts ``hybridrec serve`` on a
free loopback port, measures ``/health`` at saturation (the ceiling of the HTTP stack on this
machine), and for each strategy (every one by default, reasons on):

1. **fixed rate** (open loop): requests for random known users are *scheduled* at exactly
   ``--rate`` per second for ``--seconds``; latency runs from the scheduled send time, so a
   stalled server shows up as latency instead of silently slowing the generator down
   (no coordinated omission). At most ``--max-connections`` requests are in flight; a
   request that finds them all busy waits, and the wait counts.
2. **saturation** (closed loop): ``--concurrency`` connections send back to back for
   ``--sat-seconds``; throughput is completed requests per second.

Then each strategy's saturation throughput is printed as a ratio of ``/health``'s, measured
at saturation right before that strategy (the machine's speed drifts over minutes), and
``/health`` and ``POST /events`` are probed at a slow fixed rate while ``hybrid`` requests
saturate the server (their p99 shows whether recommendations block the event loop); the
probes run in a process of their own, so that their latency is the server's, not the time
they would wait behind the saturating connections in the client's event loop.

The generator is a minimal HTTP/1.1 keep-alive client on asyncio (uvloop when installed),
so that on a small machine it takes as little CPU from the server as possible.

    python benchmarks/serve.py                     # trains into a temp store first
    python benchmarks/serve.py --model-dir models --seconds 20 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
from rich.console import Console
from rich.table import Table

BIN = Path(sys.executable).parent
console = Console(width=max(140, Console().width))


# ---- a tiny HTTP/1.1 client -------------------------------------------------------------------


class Conn:
    """One keep-alive connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Conn:
        reader, writer = await asyncio.open_connection(host, port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def get(self, host: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        if body is None:
            self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        else:
            self.writer.write(
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


@dataclass
class Result:
    strategy: str
    mode: str
    target: float | None
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    retried: int = 0
    versions: set[str] = field(default_factory=set)

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    @property
    def done(self) -> int:
        return len(self.latencies)

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")


class Pool:
    """At most ``size`` connections; requests wait for a free one."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port, self.size = host, port, size
        self.free: list[Conn] = []
        self.opened = 0
        self.cond = asyncio.Condition()

    async def acquire(self) -> Conn:
        async with self.cond:
            while not self.free and self.opened >= self.size:
                await self.cond.wait()
            if self.free:
                return self.free.pop()
            self.opened += 1
        try:
            return await Conn.open(self.host, self.port)
        except OSError:
            async with self.cond:
                self.opened -= 1
                self.cond.notify()
            raise

    async def release(self, conn: Conn | None) -> None:
        async with self.cond:
            if conn is None:
                self.opened -= 1
            else:
                self.free.append(conn)
            self.cond.notify()

    def close(self) -> None:
        for conn in self.free:
            conn.close()


async def _one(pool: Pool, path: str, scheduled: float, out: Result) -> None:
    conn: Conn | None = None
    try:
        for attempt in range(2):
            conn = await pool.acquire()
            try:
                status, body = await conn.get(pool.host, path)
                break
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                # A keep-alive connection the server closed while it sat idle in the pool
                # (uvicorn's keep-alive timeout): retry once on a new one, as clients do.
                conn.close()
                await pool.release(None)
                conn = None
                if attempt or getattr(exc, "partial", b""):
                    raise
                out.retried += 1
        if status != 200:
            out.error(f"HTTP {status}")
        elif len(out.versions) < 8 and b"model_version" in body:
            out.versions.add(json.loads(body)["model_version"])
        out.latencies.append(time.perf_counter() - scheduled)
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        out.error(type(exc).__name__)
        if conn is not None:
            conn.close()
            await pool.release(None)
            conn = None
    finally:
        if conn is not None:
            await pool.release(conn)


def _path(strategy: str, user: object, k: int) -> str:
    if strategy == "health":
        return "/health"
    return f"/recommend/user/{quote(str(user), safe='')}?k={k}&strategy={strategy}"


async def fixed_rate(
    host: str,
    port: int,
    strategy: str,
    users: list[str],
    rate: float,
    seconds: float,
    args: argparse.Namespace,
) -> Result:
    out = Result(strategy, "fixed rate", rate, seconds)
    pool = Pool(host, port, args.max_connections)
    rng = random.Random(args.seed)
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + 0.05
    n = int(rate * seconds)
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(
            _one(pool, _path(strategy, rng.choice(users), args.k), scheduled, out)
        )
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks)
    out.seconds = time.perf_counter() - start
    pool.close()
    return out


async def saturate(
    host: str, port: int, strategy: str, users: list[str], seconds: float, args: argparse.Namespace
) -> Result:
    out = Result(strategy, "saturation", None, seconds)
    rng = random.Random(args.seed + 1)
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        conn = await Conn.open(host, port)
        try:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                status, _body = await conn.get(host, _path(strategy, rng.choice(users), args.k))
                if status == 200 and out.done == 1 and strategy != "health":
                    _check_reasons(_body, strategy)
                out.latencies.append(time.perf_counter() - t)
                if status != 200:
                    out.error(f"HTTP {status}")
        finally:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    out.seconds = time.perf_counter() - start
    return out


def _check_reasons(body: bytes, strategy: str) -> None:
    """The benchmark measures answers with reasons: fail loudly if they are missing."""
    items = json.loads(body)["items"]
    if not items or not all(i["reasons"] for i in items):
        raise SystemExit(f"{strategy}: an answer without reasons: {items[:2]}")


async def probe(
    host: str, port: int, path: str, body: bytes | None, rate: float, seconds: float
) -> Result:
    """One connection, ``rate`` requests per second of ``path``; latency of each."""
    out = Result(path if body is None else f"POST {path}", "probe", rate, seconds)
    conn = await Conn.open(host, port)
    try:
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t = time.perf_counter()
            status, _ = await conn.get(host, path, body)
            out.latencies.append(time.perf_counter() - t)
            if status not in (200, 201):
                out.error(f"HTTP {status}")
    finally:
        conn.close()
    return out


PROBES = (("/health", None, 20.0), ("/health/ready", None, 10.0), ("/events", "event", 10.0))


async def run_probes(host: str, port: int, seconds: float) -> list[Result]:
    """``/health``, ``/health/ready`` and ``POST /events`` at slow fixed rates, together."""
    event = json.dumps({"user_id": "bench-probe", "item_id": 1, "event_type": "view"}).encode()
    return list(
        await asyncio.gather(
            *(
                probe(host, port, path, event if body else None, rate, seconds)
                for path, body, rate in PROBES
            )
        )
    )


async def under_load(
    host: str, port: int, strategy: str, users: list[str], args: argparse.Namespace
) -> list[Result]:
    """``/health`` and ``POST /events`` probed while ``strategy`` saturates the server.

    The probes run in a process of their own, as a liveness probe or an event producer
    would: sharing the saturating client's event loop, their latency would include the time
    they wait behind its connections in this process, not only in the server.
    """
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--probe-port",
            str(port),
            "--sat-seconds",
            str(args.sat_seconds),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        load = await saturate(host, port, strategy, users, args.sat_seconds, args)
        stdout, _ = await asyncio.to_thread(child.communicate, timeout=args.sat_seconds + 60)
    finally:
        if child.poll() is None:
            child.kill()
    if child.returncode != 0:
        raise SystemExit(f"the probe process failed (exit {child.returncode})")
    probes = []
    for row in json.loads(stdout):
        res = Result(row["path"], "probe", row["rate"], row["seconds"], row["latencies"])
        for kind in row["errors"]:
            res.error(kind)
        probes.append(res)
    return [load, *probes]


def probe_main(port: int, seconds: float) -> None:
    """The probe process: `run_probes` while the parent saturates; JSON on stdout."""
    time.sleep(0.5)  # let the saturating connections start first
    results = asyncio.run(run_probes("127.0.0.1", port, seconds - 1.5))
    rows = [
        {
            "path": r.strategy,
            "rate": r.target,
            "seconds": r.seconds,
            "latencies": r.latencies,
            "errors": [k for k, n in r.error_kinds.items() for _ in range(n)],
        }
        for r in results
    ]
    sys.stdout.write(json.dumps(rows))


# ---- set-up ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_config(dest: Path) -> Path:
    """``configs/default.toml`` with the two-stage ranker on, so ``ranked`` is its own model."""
    text = Path("configs/default.toml").read_text(encoding="utf-8")
    off = 'model = "ranker"\nenabled = false'
    assert off in text, "configs/default.toml: the [models.ranked] block moved"
    dest.write_text(text.replace(off, 'model = "ranker"\nenabled = true'), encoding="utf-8")
    return dest


def train(model_dir: Path) -> None:
    console.print(f"training MovieLens latest-small (default config, ranker on) into {model_dir}")
    config = bench_config(model_dir.parent / "bench-serve.toml")
    subprocess.run(
        [
            str(BIN / "hybridrec"),
            "train",
            "--config",
            str(config),
            "--model-dir",
            str(model_dir),
            "--no-evaluate",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def known_users(model_dir: Path) -> list[str]:
    """The served version's users, as their ids appear in a URL (any id type)."""
    from hybridrec.bundle import open_bundle

    users = open_bundle(model_dir).model().users_
    assert users is not None
    return [str(u) for u in users.to_list()]


def check_answers(port: int, strategies: list[str], users: list[str]) -> None:
    """Each strategy answers a known user with items, and says which model answered."""
    import httpx

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        for strategy in strategies:
            r = c.get(f"/recommend/user/{users[0]}", params={"k": 10, "strategy": strategy})
            r.raise_for_status()
            body = r.json()
            assert body["items"], f"{strategy}: empty answer"
            console.print(f"{strategy}: answered by {body['method_used']}")
            if strategy == "ranked":
                assert body["method_used"] == "ranked", "ranked fell back: no ranker served"


def start_server(
    model_dir: Path, port: int, workers: int, data_dir: Path
) -> subprocess.Popen[bytes]:
    env = dict(os.environ, HYBRIDREC_DATA_DIR=str(data_dir), OPENBLAS_NUM_THREADS="1")
    env.pop("HYBRIDREC_DATABASE_URL", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hybridrec.serving",
            "serve",
            "--model-dir",
            str(model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
                if b" 200 " in s.recv(4096):
                    return proc
        except OSError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("server did not become ready in 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-dir", type=Path, help="A trained store (default: train one into a temp dir)."
    )
    parser.add_argument(
        "--strategies", default="als,hybrid,auto,content,two_tower,ranked,popular,mixed"
    )
    parser.add_argument("--rate", type=float, default=100.0, help="Fixed request rate (req/s).")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="Length of each fixed-rate run (0: none)."
    )
    parser.add_argument(
        "--sat-seconds", type=float, default=10.0, help="Length of each saturation run."
    )
    parser.add_argument("--concurrency", type=int, default=16, help="Connections at saturation.")
    parser.add_argument("--max-connections", type=int, default=64, help="In flight at fixed rate.")
    parser.add_argument("--workers", type=int, default=1, help="Server processes.")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="Seconds of warm-up per strategy."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    if args.probe_port is not None:
        probe_main(args.probe_port, args.sat_seconds)
        return

    with tempfile.TemporaryDirectory(prefix="hybridrec-bench-serve-") as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            model_dir = Path(tmp) / "models"
            train(model_dir)
        users = known_users(model_dir)
        port = free_port()
        proc = start_server(model_dir, port, args.workers, Path(tmp) / "data")
        check_answers(port, args.strategies.split(","), users)
        results: list[Result] = []
        loaded: list[Result] = []
        paired: dict[str, float] = {}
        try:
            for strategy in ["health", *args.strategies.split(",")]:
                asyncio.run(saturate("127.0.0.1", port, strategy, users, args.warmup, args))
                if args.seconds > 0:
                    res = asyncio.run(
                        fixed_rate(
                            "127.0.0.1", port, strategy, users, args.rate, args.seconds, args
                        )
                    )
                    results.append(res)
                    _row_print(res)
                if strategy != "health":
                    # /health again right before: the machine's speed drifts over minutes
                    # (other tenants), so each ratio compares runs a few seconds apart.
                    base = asyncio.run(
                        saturate("127.0.0.1", port, "health", users, args.sat_seconds, args)
                    )
                    paired[strategy] = base.done / base.seconds
                    _row_print(base)
                res = asyncio.run(
                    saturate("127.0.0.1", port, strategy, users, args.sat_seconds, args)
                )
                results.append(res)
                _row_print(res)
            loaded = asyncio.run(under_load("127.0.0.1", port, "hybrid", users, args))
            for res in loaded:
                _row_print(res)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    table = Table(
        title=f"hybridrec serve: {len(users)} known users, k={args.k}, {args.workers} worker(s), "
        f"{os.cpu_count()} CPUs, loopback"
    )
    for col in (
        "strategy",
        "mode",
        "target req/s",
        "achieved req/s",
        "requests",
        "errors",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
    ):
        table.add_column(col, justify="right" if col not in ("strategy", "mode") else "left")
    for r in results:
        table.add_row(
            r.strategy,
            r.mode + ("" if r.target is None else f" {r.seconds:.0f}s"),
            "-" if r.target is None else f"{r.target:.0f}",
            f"{r.done / r.seconds:.0f}",
            str(r.done),
            str(r.errors),
            f"{r.pct(50):.2f}",
            f"{r.pct(95):.2f}",
            f"{r.pct(99):.2f}",
            f"{max(r.latencies) * 1000:.1f}" if r.latencies else "-",
        )
    console.print(table)
    _ratio_table(results, loaded, paired, args)


def _ratio_table(
    results: list[Result],
    loaded: list[Result],
    paired: dict[str, float],
    args: argparse.Namespace,
) -> None:
    sat = {r.strategy: r.done / r.seconds for r in results if r.mode == "saturation"}
    health = sat.get("health", float("nan"))
    floors = {"als": 0.5, "hybrid": 0.25, "auto": 0.25, "ranked": 0.15}
    table = Table(
        title="saturation throughput as a ratio of /health measured right before it, "
        f"{args.workers} worker(s), {os.cpu_count()} CPUs, reasons on"
    )
    for col in ("strategy", "req/s", "/health req/s", "ratio", "floor", "p99 ms"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for r in results:
        if r.mode != "saturation":
            continue
        base = paired.get(r.strategy, health)
        ratio = sat[r.strategy] / base
        floor = floors.get(r.strategy)
        mark = (
            "" if floor is None else (f"{floor:.2f} ok" if ratio >= floor else f"{floor:.2f} MISS")
        )
        table.add_row(
            r.strategy,
            f"{sat[r.strategy]:.0f}",
            f"{base:.0f}",
            f"{ratio:.3f}",
            mark,
            f"{r.pct(99):.1f}",
        )
    console.print(table)
    if loaded:
        table = Table(title="while hybrid saturates the server (floor: /health p99 <= 50 ms)")
        for col in ("probe", "req/s", "p50 ms", "p99 ms", "max ms", "errors"):
            table.add_column(col, justify="left" if col == "probe" else "right")
        for r in loaded:
            name = r.strategy if r.mode == "probe" else f"{r.strategy} (load)"
            table.add_row(
                name,
                f"{r.done / r.seconds:.0f}",
                f"{r.pct(50):.2f}",
                f"{r.pct(99):.2f}",
                f"{max(r.latencies) * 1000:.1f}" if r.latencies else "-",
                str(r.errors),
            )
        console.print(table)


def _row_print(r: Result) -> None:
    console.print(
        f"{r.strategy:8s} {r.mode:11s} {r.done / r.seconds:8.0f} req/s  p50 {r.pct(50):6.2f} ms  "
        f"p99 {r.pct(99):6.2f} ms  errors {r.errors} {r.error_kinds or ''}  "
        f"stale connections retried {r.retried}"
    )


if __name__ == "__main__":
    main()
