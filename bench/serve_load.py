"""Load test for `vlmforge serve`: N concurrent clients on loopback, dynamic batching vs none.

    python bench/serve_load.py                      # a random LLaVA of the lab's size, 20 s per scenario
    python bench/serve_load.py --model runs/lab/bunny --duration 30 --max-tokens 32
    python bench/serve_load.py --profile --scenarios 16:batch --json out.json   # where a request's time goes
    python bench/serve_load.py --rounds 2 --scenarios 16:batch:continuous,16:1:continuous,16:batch:dynamic,16:1:dynamic
    python bench/serve_load.py --mixed-lengths --scenarios 16:batch:dynamic:inf,16:batch:dynamic:2   # --max-length-ratio

Each scenario starts its own server (a subprocess on 127.0.0.1), runs the clients for --duration seconds and
reports throughput, p50/p99 latency and errors. The default scenarios answer two questions: how much does
batching buy at 16 clients (vs --max-batch-size 1), and does the server stay error-free at 64? A scenario may name
the server's --batching mode (continuous or dynamic) to compare the two in one run, and then its --max-length-ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image

from vlmforge.serve.runner import free_port

HOST = "127.0.0.1"  # loopback only: this tool never loads anything but its own server


@dataclass
class Result:
    clients: int
    max_batch_size: int
    requests: int
    tokens: int
    errors: int
    seconds: float
    latencies: list[float]
    timings: dict | None = None  # the server's GET /timings (with --profile)
    client_cpu: float = 0.0  # CPU seconds the clients (this process) used: they share the cores with the server
    batching: str = "default"  # the server's --batching, or its default
    length_ratio: str = ""  # the server's --max-length-ratio, or its default
    short_latencies: list[float] = field(default_factory=list)  # of the requests with the smallest max_tokens

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    @property
    def label(self) -> str:
        return self.batching + (f" R={self.length_ratio}" if self.length_ratio else "")

    def percentile(self, q: float, short: bool = False) -> float:
        ordered = sorted(self.short_latencies if short else self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")

    def summary(self, timings: bool = True) -> dict:
        return {
            "clients": self.clients,
            "max_batch_size": self.max_batch_size,
            "batching": self.batching,
            **({"max_length_ratio": self.length_ratio} if self.length_ratio else {}),
            "req_per_s": round(self.throughput, 2),
            "p50_ms": round(self.percentile(0.5), 1),
            "p99_ms": round(self.percentile(0.99), 1),
            **(
                {
                    "short_p50_ms": round(self.percentile(0.5, True), 1),
                    "short_p99_ms": round(self.percentile(0.99, True), 1),
                }
                if self.short_latencies
                else {}
            ),
            "errors": self.errors,
            "completion_tokens_per_request": round(self.tokens / max(self.requests, 1), 2),
            "client_cpu_ms_per_request": round(self.client_cpu * 1000 / max(self.requests, 1), 3),
            **({"timings": self.timings} if self.timings and timings else {}),
        }


def _image_url(i: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def start_server(
    model: str,
    port: int,
    max_batch_size: int,
    max_queue: int,
    threads: int,
    profile: bool = False,
    batching: str = "",
    window_ms: float | None = None,
    length_ratio: str = "",
) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "vlmforge.cli",
        "serve",
        "--model",
        model,
        "--host",
        HOST,
        "--port",
        str(port),
        "--max-batch-size",
        str(max_batch_size),
        "--max-queue",
        str(max_queue),
        "--no-ui",
    ]
    command += ["--threads", str(threads)] if threads else []
    command += ["--profile"] if profile else []
    command += ["--batching", batching] if batching and batching != "default" else []
    command += ["--batch-window-ms", str(window_ms)] if window_ms is not None else []
    command += ["--max-length-ratio", length_ratio] if length_ratio else []
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://{HOST}:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not become healthy in 120 s")


def client_max_tokens(i: int, max_tokens: int, mixed: bool) -> int:
    """Client ``i``'s max_tokens: all the same, or (``mixed``) half, one, one and a half and two times it in turn."""
    return max(1, max_tokens * (i % 4 + 1) // 2) if mixed else max_tokens


async def run_clients(url: str, model: str, clients: int, duration: float, max_tokens: int, mixed: bool = False):
    """(requests, completion tokens, errors, latencies, CPU seconds of this process, latencies of the requests with
    the smallest max_tokens (with ``mixed``)) of ``clients`` loops posting for ``duration`` s.

    The clients use aiohttp, whose HTTP parser is compiled: the load generator shares the machine's cores with the
    server, and a lighter one leaves more of them to what is measured."""
    import aiohttp

    images = [_image_url(i) for i in range(clients)]
    latencies: list[float] = []
    short: list[float] = []
    shortest = min(client_max_tokens(i, max_tokens, mixed) for i in range(clients))
    errors = tokens = 0
    stop_at = time.monotonic() + duration

    async def client(i: int, http: aiohttp.ClientSession) -> None:
        nonlocal errors, tokens
        body = json.dumps(
            {
                "model": model,
                "temperature": 0,
                "max_tokens": client_max_tokens(i, max_tokens, mixed),
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": images[i]}},
                            {"type": "text", "text": f"what is shape {i}?"},
                        ],
                    }
                ],
            }
        )
        headers = {"Content-Type": "application/json"}
        while time.monotonic() < stop_at:
            start = time.monotonic()
            try:
                async with http.post(f"{url}/v1/chat/completions", data=body, headers=headers) as response:
                    answer = await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, asyncio.TimeoutError):
                ok = False
            if ok:
                latencies.append(time.monotonic() - start)
                if mixed and client_max_tokens(i, max_tokens, mixed) == shortest:
                    short.append(latencies[-1])
                tokens += json.loads(answer)["usage"]["completion_tokens"]
            else:
                errors += 1
                await asyncio.sleep(0.05)  # a refused request (503) is retried after a pause, as clients do

    connector = aiohttp.TCPConnector(limit=clients)
    cpu = time.process_time()
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    return len(latencies), tokens, errors, latencies, time.process_time() - cpu, short


def scenario(
    args: argparse.Namespace, model: str, clients: int, max_batch_size: int, batching: str, ratio: str = ""
) -> Result:
    port = free_port(HOST)
    server = start_server(
        model, port, max_batch_size, max(64, 2 * clients), args.threads, args.profile, batching, args.window_ms, ratio
    )
    try:
        url = f"http://{HOST}:{port}"
        name = httpx.get(f"{url}/v1/models").json()["data"][0]["id"]
        asyncio.run(run_clients(url, name, min(clients, 4), 2.0, args.max_tokens))  # warm-up, not counted
        if args.profile:
            httpx.delete(f"{url}/timings")
        # the clients' process holds torch and transformers too: a full collection there would pause every client
        gc.collect()
        gc.freeze()
        start = time.monotonic()
        requests, tokens, errors, latencies, cpu, short = asyncio.run(
            run_clients(url, name, clients, args.duration, args.max_tokens, args.mixed_lengths)
        )
        seconds = time.monotonic() - start
        timings = httpx.get(f"{url}/timings").json() if args.profile else None
        return Result(
            clients, max_batch_size, requests, tokens, errors, seconds, latencies, timings, cpu, batching, ratio, short
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


def merge(rounds: list[Result]) -> Result:
    """One scenario's rounds as one result: requests and seconds summed, latencies pooled."""
    first = rounds[0]
    timings = [r.timings for r in rounds if r.timings]
    return Result(
        first.clients,
        first.max_batch_size,
        sum(r.requests for r in rounds),
        sum(r.tokens for r in rounds),
        sum(r.errors for r in rounds),
        sum(r.seconds for r in rounds),
        [x for r in rounds for x in r.latencies],
        timings[-1] if timings else None,
        sum(r.client_cpu for r in rounds),
        first.batching,
        first.length_ratio,
        [x for r in rounds for x in r.short_latencies],
    )


def print_timings(r: Result) -> None:
    t = r.timings or {}
    print(
        f"\nwhere the time goes (last round): {r.clients} clients, max batch {r.max_batch_size}, {r.batching} batching "
        f"({t.get('requests')} requests, "
        f"mean batch {t.get('mean_batch_size', 0):.1f}, {t.get('decode_steps_per_batch', 0):.1f} decode steps)"
    )
    print(f"{'stage':<16} {'wall ms/request':>15} {'busy ms/request':>15}  what")
    for stage, v in t.get("stages", {}).items():
        busy = "" if v["busy_ms"] is None else f"{v['busy_ms']:.2f}"
        print(f"{stage:<16} {v['wall_ms']:>15.2f} {busy:>15}  {t['descriptions'][stage]}")


def speedup(results: list[Result], batching: str | None = None) -> float | None:
    """16-client throughput with batching over 16-client throughput with --max-batch-size 1, both with the
    ``batching`` mode (default: the first scenario's)."""
    batching = batching or (results[0].batching if results else None)
    same = [r for r in results if r.batching == batching]
    batched = next((r for r in same if r.clients == 16 and r.max_batch_size > 1), None)
    single = next((r for r in same if r.clients == 16 and r.max_batch_size == 1), None)
    return round(batched.throughput / single.throughput, 2) if batched and single and single.throughput else None


def report(args: argparse.Namespace, results: list[Result]) -> dict:
    print(
        f"\nmodel: {args.model or 'random LLaVA of the lab size'}   max_tokens: {args.max_tokens}"
        f"{' (mixed: 0.5x to 2x)' if args.mixed_lengths else ''}   "
        f"duration: {args.duration:.0f} s x {args.rounds} rounds   server threads: {args.threads or 'default'}\n"
    )
    short = f" {'short p50':>9} {'short p99':>9}" if args.mixed_lengths else ""
    print(
        f"{'clients':>7} {'max batch':>9} {'batching':>16} {'requests':>8} {'req/s':>7} {'tok/s':>7} {'p50 ms':>8} "
        f"{'p99 ms':>8}{short} {'errors':>6}"
    )
    for r in results:
        short = f" {r.percentile(0.5, True):>9.0f} {r.percentile(0.99, True):>9.0f}" if args.mixed_lengths else ""
        print(
            f"{r.clients:>7} {r.max_batch_size:>9} {r.label:>16} {r.requests:>8} {r.throughput:>7.1f} "
            f"{r.tokens / r.seconds:>7.0f} {r.percentile(0.5):>8.0f} {r.percentile(0.99):>8.0f}{short} {r.errors:>6}"
        )
    by_mode = {mode: speedup(results, mode) for mode in dict.fromkeys(r.batching for r in results)}
    for mode, ratio in by_mode.items():
        if ratio is not None:
            print(f"\n{mode} batching at 16 clients: {ratio:.1f}x the throughput of --max-batch-size 1")
    for r in results:
        if r.timings:
            print_timings(r)
    return {
        "scenarios": [r.summary() for r in results],
        "batching_speedup": speedup(results),
        "batching_speedup_by_mode": by_mode,
        "max_tokens": args.max_tokens,
        "mixed_lengths": args.mixed_lengths,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint folder (default: build a random LLaVA of the lab's size)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per scenario (default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens per answer (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=16, help="--max-batch-size when batching (default: %(default)s)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="server's torch CPU threads, 0 = torch's default (default: %(default)s: on a small shared "
        "machine more threads spin-wait on each other)",
    )
    parser.add_argument(
        "--scenarios",
        default="16:batch,16:1,64:batch",
        help="CLIENTS:MAX_BATCH[:continuous|dynamic[:R]], 'batch' = --batch; without a mode the server's default, "
        "R the server's --max-length-ratio (default: %(default)s)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the scenarios this many times, interleaved, and pool each one's rounds (default: %(default)s)",
    )
    parser.add_argument(
        "--mixed-lengths",
        action="store_true",
        help="clients ask for 0.5x, 1x, 1.5x and 2x --max-tokens in turn (answers of different lengths in one batch); "
        "also reports p50/p99 of the 0.5x requests",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random model's weights, without --model (default: %(default)s)"
    )
    parser.add_argument("--window-ms", type=float, help="the server's --batch-window-ms (default: its default)")
    parser.add_argument("--profile", action="store_true", help="print where a request's time goes, per stage")
    parser.add_argument("--json", metavar="OUT", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    specs = [spec.split(":") for spec in args.scenarios.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            import torch

            from vlmforge.testing.tiny import save_lab_size_llava

            # the same random weights in every run, so that answers (and where one ends early) are comparable
            torch.manual_seed(args.seed)
            model = str(save_lab_size_llava(Path(tmp) / "lab-size-llava"))
        rounds: list[list[Result]] = [[] for _ in specs]
        for _ in range(args.rounds):
            for runs, (clients, batch, *mode) in zip(rounds, specs, strict=True):
                size = args.batch if batch == "batch" else int(batch)
                mode, ratio = (mode + [""])[:2] if mode else ("default", "")
                runs.append(scenario(args, model, int(clients), size, mode, ratio))
                r = runs[-1]
                print(
                    f"  {r.clients} clients, batch {r.max_batch_size}, {r.label}: {r.throughput:.1f} req/s, "
                    f"p50 {r.percentile(0.5):.0f} ms, p99 {r.percentile(0.99):.0f} ms, {r.errors} errors",
                    file=sys.stderr,
                )
    out = report(args, [merge(runs) for runs in rounds])
    out["rounds"] = [
        {
            "scenarios": [r.summary(timings=False) for r in one],
            "batching_speedup": speedup(list(one)),
            "batching_speedup_by_mode": {
                mode: speedup(list(one), mode) for mode in dict.fromkeys(r.batching for r in one)
            },
        }
        for one in zip(*rounds, strict=True)
    ]
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
