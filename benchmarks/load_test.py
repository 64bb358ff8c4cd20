"""Bounded load test of ``specexit serve`` on the loopback interface.

N concurrent clients each send M chat completions (greedy, a few rotating prompts), then stop; a global
timeout ends the run even if the server stalls.  Reports requests/s, generated tokens/s, latency
percentiles (and time to first token with --stream), errors by kind, and the server's resident memory
before and after (from its /metrics ``process_resident_memory_bytes``).  Writes one JSON file.

Either starts the server itself (``--target`` / ``--draft``, on a free 127.0.0.1 port, stopped at the
end) or targets a running one with ``--url``, which must be a loopback address.

    python benchmarks/load_test.py --target /tmp/specexit-tiny --draft /tmp/specexit-tiny-draft \\
        --clients 4 --requests 10 --max-tokens 48 --out benchmarks/results/serve/tiny.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
PROMPTS = [
    "What is 12 + 7?",
    "Half of 18?",
    "Is 91 a prime number?",
    "How many legs do three spiders have?",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 1])."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def _rss(url: str) -> int | None:
    try:
        text = httpx.get(url + "/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("process_resident_memory_bytes "):
            return int(float(line.split()[1]))
    return None


def _start_server(a: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "specexit.serve.cli", "serve", "--target", a.target, "--host", "127.0.0.1",
           "--port", str(port), "--max-queue", str(max(1, a.clients)), "--log-level", "warning",
           "--max-tokens-cap", str(max(a.max_tokens, 8192))]  # fmt: skip
    if a.draft:
        cmd += ["--draft", a.draft]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    cmd += a.server_arg
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + a.startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited during start-up:\n{proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"the server did not answer /health within {a.startup_timeout}s")


def _stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _error_message(text: str) -> str:
    try:
        return str(json.loads(text)["error"]["message"])[:300]
    except (ValueError, KeyError, TypeError):
        return text[:300]


def _one_request(client: httpx.Client, url: str, body: dict, stream: bool, timeout: float) -> dict:
    """One chat completion: latency, ttft (stream), tokens, or the error."""
    t0 = time.perf_counter()
    rec: dict = {"ok": False}
    try:
        if not stream:
            r = client.post(url + "/v1/chat/completions", json=body, timeout=timeout)
            if r.status_code != 200:
                rec["error"] = f"http_{r.status_code}"
                rec["message"] = _error_message(r.text)
                return rec
            usage = r.json()["usage"]
        else:
            usage, ttft = None, None
            with client.stream("POST", url + "/v1/chat/completions", json=body, timeout=timeout) as r:
                if r.status_code != 200:
                    rec["error"] = f"http_{r.status_code}"
                    rec["message"] = _error_message(r.read().decode(errors="replace"))
                    return rec
                for line in r.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    data = json.loads(line[6:])
                    if "error" in data:
                        rec["error"] = "stream_error"
                        return rec
                    if data.get("usage"):
                        usage = data["usage"]
                    delta = data["choices"][0]["delta"] if data.get("choices") else {}
                    if ttft is None and (delta.get("content") or delta.get("reasoning_content")):
                        ttft = time.perf_counter() - t0
            rec["ttft_s"] = ttft
            if usage is None:
                rec["error"] = "no_usage"
                return rec
    except httpx.TimeoutException:
        rec["error"] = "timeout"
        return rec
    except httpx.HTTPError as e:
        rec["error"] = type(e).__name__
        return rec
    rec.update(
        ok=True,
        latency_s=time.perf_counter() - t0,
        completion_tokens=usage["completion_tokens"],
        reasoning_tokens=usage["completion_tokens_details"]["reasoning_tokens"],
        exited_early=bool(usage["specexit"]["exited_early"]),
        mean_accept_length=usage["specexit"]["mean_accept_length"],
        generation_s=usage["specexit"]["generation_s"],
    )
    return rec


def load_prompts(spec: str) -> list[str]:
    """`builtin` (four short questions) or `testbed:N` (the first N held-out testbed problems)."""
    if spec == "builtin":
        return list(PROMPTS)
    name, _, n = spec.partition(":")
    if name != "testbed" or not n.isdigit() or int(n) < 1:
        raise SystemExit(f"--prompts: expected 'builtin' or 'testbed:N' with N >= 1, got {spec!r}")
    from specexit.testbed.problems import make_problems

    return [p.question for p in make_problems(int(n), seed=0, split="test")]


def run_load(url: str, a: argparse.Namespace) -> dict:
    model = httpx.get(url + "/v1/models", timeout=10).json()["data"][0]["id"]
    extra = {"specexit": {"mode": a.mode}} if a.mode else {}
    prompts = load_prompts(a.prompts)

    def body(i: int) -> dict:
        b = {"model": model, "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
             "max_tokens": a.max_tokens, "temperature": 0, "stream": a.stream, **extra}  # fmt: skip
        if a.stream:
            b["stream_options"] = {"include_usage": True}
        return b

    with httpx.Client() as c:  # warm-up (not counted): first-call allocations, lazy imports
        for i in range(a.warmup):
            _one_request(c, url, body(i), a.stream, a.timeout)
    rss_before = _rss(url)
    records: list[dict] = []
    lock = threading.Lock()
    deadline = time.monotonic() + a.timeout

    def client_loop(k: int) -> None:
        with httpx.Client() as c:
            for j in range(a.requests):
                left = deadline - time.monotonic()
                if left <= 0:
                    rec = {"ok": False, "error": "not_run_global_timeout"}
                else:
                    rec = _one_request(c, url, body(k * a.requests + j), a.stream, left)
                with lock:
                    records.append(rec)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(k,), daemon=True) for k in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 5)
    wall = time.perf_counter() - t0
    rss_after = _rss(url)

    ok = [r for r in records if r["ok"]]
    lat = [r["latency_s"] for r in ok]
    ttft = [r["ttft_s"] for r in ok if r.get("ttft_s") is not None]
    errors: dict[str, int] = {}
    for r in records:
        if not r["ok"]:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    messages = sorted({r["message"] for r in records if r.get("message")})[:5]
    missing = a.clients * a.requests - len(records)
    if missing:
        errors["unfinished_at_timeout"] = missing
    tokens = sum(r["completion_tokens"] for r in ok)
    acc = [r["mean_accept_length"] for r in ok if r["mean_accept_length"]]

    def rnd(x: float | None, n: int = 4) -> float | None:
        return None if x is None else round(x, n)

    return {
        "config": {k: v for k, v in vars(a).items() if k not in ("out",)},
        "model": model,
        "host": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "requests": a.clients * a.requests,
        "ok": len(ok),
        "errors": errors,
        "error_messages": messages,
        "wall_s": rnd(wall, 3),
        "requests_per_s": rnd(len(ok) / wall if wall else None),
        "generated_tokens_per_s": rnd(tokens / wall if wall else None, 2),
        "mean_completion_tokens": rnd(tokens / len(ok) if ok else None, 2),
        "mean_reasoning_tokens": rnd(sum(r["reasoning_tokens"] for r in ok) / len(ok) if ok else None, 2),
        "early_exits": sum(r["exited_early"] for r in ok),
        # engine time per request on the server (the rest of the latency is queueing and transport)
        "mean_generation_s": rnd(sum(r["generation_s"] for r in ok) / len(ok) if ok else None),
        "mean_accept_length": rnd(sum(acc) / len(acc) if acc else None),
        "latency_s": {
            "p50": rnd(_percentile(lat, 0.5)),
            "p90": rnd(_percentile(lat, 0.9)),
            "p99": rnd(_percentile(lat, 0.99)),
            "mean": rnd(sum(lat) / len(lat) if lat else None),
            "max": rnd(max(lat) if lat else None),
        },
        "ttft_s": {"p50": rnd(_percentile(ttft, 0.5)), "p99": rnd(_percentile(ttft, 0.99))} if a.stream else None,
        "server_rss_mb": {
            "before": rnd(rss_before / 2**20 if rss_before else None, 1),
            "after": rnd(rss_after / 2**20 if rss_after else None, 1),
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default=None, help="a running server, e.g. http://127.0.0.1:8000 (loopback only)")
    p.add_argument("--target", default=None, help="start a server on this target folder")
    p.add_argument("--draft", default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the started server")
    p.add_argument("--server-arg", action="append", default=[], help="extra argument for the started server")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--requests", type=int, default=10, help="requests per client")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--prompts", default="builtin", help="'builtin' or 'testbed:N' (held-out testbed problems)")
    p.add_argument("--mode", choices=["vanilla", "spec", "specexit"], default=None, help="default: the server's")
    p.add_argument("--stream", action="store_true", help="stream (measures time to first token)")
    p.add_argument("--warmup", type=int, default=1, help="requests before the measurement")
    p.add_argument("--timeout", type=float, default=600.0, help="global time limit of the load phase (s)")
    p.add_argument("--startup-timeout", type=float, default=120.0)
    p.add_argument("--out", default="benchmarks/results/serve/load.json")
    a = p.parse_args(argv)
    if not 1 <= a.clients <= 64 or not 1 <= a.requests <= 10_000 or a.timeout <= 0:
        p.error("--clients must be in [1, 64], --requests in [1, 10000], --timeout > 0")
    if (a.url is None) == (a.target is None):
        p.error("give exactly one of --url and --target")
    if a.url is not None and urlparse(a.url).hostname not in LOOPBACK:
        p.error(f"--url must point at a loopback address ({', '.join(sorted(LOOPBACK))})")

    proc = None
    if a.url is None:
        proc, url = _start_server(a)
    else:
        url = a.url.rstrip("/")
    try:
        report = run_load(url, a)
    finally:
        if proc is not None:
            _stop_server(proc)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    lat = report["latency_s"]
    print(
        f"{report['ok']}/{report['requests']} ok in {report['wall_s']}s: {report['requests_per_s']} req/s, "
        f"{report['generated_tokens_per_s']} tok/s, latency p50 {lat['p50']}s p99 {lat['p99']}s, "
        f"errors {report['errors'] or 'none'}, RSS {report['server_rss_mb']['before']} -> "
        f"{report['server_rss_mb']['after']} MiB; wrote {out}"
    )
    return 0 if report["ok"] == report["requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
