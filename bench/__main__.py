"""`make bench` / `python -m bench [--quick] [--with-litellm]`.

Starts the fake upstream and the gateway as in production (uvicorn, several workers), then measures:
1. added latency, sequential non-streaming chat (p50/p99, gateway minus direct);
2. streaming: added time to first and last byte for a 200-chunk stream, sent in one burst and paced
   (PACE_SECONDS between chunks, as a model produces them, only much faster);
3. throughput at 50 concurrent connections, direct vs gateway;
4. the same for an OpenAI client served by an Anthropic upstream (conversion cost);
5. gateway RSS per worker at rest and under load;
6. dashboard page render times with 1 million usage rows (100,000 with --quick; bench/dashboard_pages.py);
7. chart queries with 5 million usage rows (200,000 with --quick; bench/usage_queries.py);
8. local model time to first token and tokens/s, gateway vs plain transformers (when the extra is installed);
9. with --with-litellm, the same against LiteLLM's proxy in front of the same fake;
10. with --load (which `make bench` passes), 10,000 mixed requests with 5% upstream faults: no 5xx, one usage row
    per request (2,000 with --quick; bench/load.py). A failed load run makes the command exit non-zero.
Writes bench/results.json and bench/results.md and prints a summary table.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

import httpx

from bench import report
from bench.dashboard_pages import run_in_subprocess as run_dashboard_pages
from bench.gateway_config import BENCH_TOKEN, UPSTREAM_KEY, prepare_gateway_database
from bench.measure import sequential, throughput
from bench.processes import ROOT, Server, free_port, python
from bench.usage_queries import run_in_subprocess as run_usage_queries
from ds2api_site.serve import prepare_metrics_dir

PACE_SECONDS = 0.001  # between chunks of the paced stream: 1,000 chunks/s, far above any model's rate
CHAT = {"messages": [{"role": "user", "content": "Say hello to the benchmark please"}]}
ANTHROPIC_BODY = {"model": "claude-bench", "max_tokens": 256, **CHAT}


def scenario_bodies(stream: bool) -> dict[str, dict]:
    extra = {"stream": True} if stream else {}
    model = "long" if stream else "bench"
    return {
        "direct": {"model": model, **CHAT, **extra},
        "gateway": {"model": "bench-long" if stream else "bench-model", **CHAT, **extra},
        "direct_anthropic": {**ANTHROPIC_BODY, "model": "long" if stream else "claude-bench", **extra},
        "gateway_anthropic": {"model": "bench-claude-long" if stream else "bench-claude", **CHAT, **extra},
    }


def targets(fake: Server, gateway: Server) -> dict[str, tuple[str, str, dict]]:
    return {
        "direct": (fake.url, "/v1/chat/completions", {"authorization": f"Bearer {UPSTREAM_KEY}"}),
        "gateway": (gateway.url, "/v1/chat/completions", {"authorization": f"Bearer {BENCH_TOKEN}"}),
        "direct_anthropic": (fake.url, "/v1/messages", {"x-api-key": UPSTREAM_KEY, "anthropic-version": "2023-06-01"}),
        "gateway_anthropic": (gateway.url, "/v1/chat/completions", {"authorization": f"Bearer {BENCH_TOKEN}"}),
    }


def gateway_command(server: str, port: int, workers: int) -> list[str]:
    """The gateway as production would run it. granian serves the API paths only here (no websockets)."""
    if server == "granian":
        return [str(Path(python()).parent / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port",
                str(port), "--workers", str(workers), "--loop", "uvloop", "--no-ws", "--log-level", "warning",
                "ds2api_site.asgi:application"]
    return [python(), "-m", "uvicorn", "ds2api_site.asgi:application", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--lifespan", "on", "--http", "httptools", "--loop", "uvloop",
            "--no-access-log", "--log-level", "warning"]


def paced_streams(fake: Server, urls: dict, n: int) -> dict:
    """The OpenAI streams again with the fake pausing PACE_SECONDS between chunks. In the burst the fake, the
    gateway and the client all want a CPU at once (two here), which delays the client's first read by a
    scheduler slice; paced, the first-byte figure is the gateway's own work."""
    httpx.post(fake.url + "/_fake/config", json={"chunk_delay": PACE_SECONDS}, timeout=5).raise_for_status()
    try:
        bodies = scenario_bodies(True)
        return {name: attempt(sequential, *urls[name], bodies[name], n, warmup=5) for name in ("direct", "gateway")}
    finally:
        httpx.post(fake.url + "/_fake/config", json={"chunk_delay": 0}, timeout=5)


def attempt(measure, *args, **kwargs) -> dict:
    """Run one measurement; a scenario the gateway cannot serve yet is reported, not fatal."""
    try:
        return measure(*args, **kwargs)
    except RuntimeError as exc:
        return {"error": str(exc)[:200]}


class RssSampler(threading.Thread):
    def __init__(self, server: Server):
        super().__init__(daemon=True)
        self.server, self.peak, self._done = server, 0.0, threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.25):
            self.peak = max([self.peak, *self.server.worker_rss_mb()])

    def stop(self) -> float:
        self._done.set()
        self.join()
        return round(self.peak, 1)


def run(args) -> dict:
    env = {
        "DATABASE_URL": os.environ.get("BENCH_DATABASE_URL", "postgres://root@127.0.0.1:5432/ds2api_bench"),
        "DS2API_REDIS_PREFIX": "ds2api_bench",
        "DS2API_ALLOW_PRIVATE_UPSTREAMS": "1",
        "LOG_LEVEL": "WARNING",
    }
    # As `python -m ds2api_site.serve` runs it: several workers sum their metrics through a shared directory.
    prepare_metrics_dir(args.workers, env)
    fake = Server("fake", [python(), "-m", "tests.fakes.upstream", "--port", str(free_port()), "--workers",
                           str(args.fake_workers)], 0, ready_path="/_fake/stats")
    fake.port = int(fake.cmd[4])
    fake.start()
    results: dict = {"config": vars(args), "pace_ms": PACE_SECONDS * 1000}
    gateway = None
    try:
        prepare_gateway_database(env, fake.url)
        port = free_port()
        gateway = Server("gateway", gateway_command(args.server, port, args.workers), port, env=env).start()
        time.sleep(1.0)
        urls = targets(fake, gateway)
        results["rss_at_rest_mb"] = [round(x, 1) for x in gateway.worker_rss_mb()]
        results["sequential"] = {name: attempt(sequential, *urls[name], body, args.sequential)
                                 for name, body in scenario_bodies(False).items()}
        results["streaming"] = {name: attempt(sequential, *urls[name], body, max(args.sequential // 5, 20), warmup=10)
                                for name, body in scenario_bodies(True).items()}
        results["streaming_paced"] = attempt(paced_streams, fake, urls, max(args.sequential // 20, 20))
        sampler = RssSampler(gateway)
        sampler.start()
        results["throughput"] = {name: attempt(throughput, *urls[name], body, 50, args.seconds)
                                 for name, body in scenario_bodies(False).items()}
        results["rss_under_load_mb"] = sampler.stop()
        results["dashboard"] = attempt(run_dashboard_pages, env, args.dashboard_rows)
        results["usage_queries"] = attempt(run_usage_queries, env, args.query_rows)
        if args.local:
            from bench.local import measure_local

            results["local"] = measure_local(env)
        if args.with_litellm:
            from bench.litellm import measure_litellm

            results["litellm"] = measure_litellm(fake, args, scenario_bodies, sequential, throughput)
    finally:
        if gateway:
            gateway.stop()
        fake.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests, shorter load runs")
    parser.add_argument("--with-litellm", action="store_true", help="also measure LiteLLM's proxy")
    parser.add_argument("--no-local", dest="local", action="store_false",
                        help="skip the local-model comparison (it runs when the local extra is installed)")
    parser.add_argument("--workers", type=int, default=2, help="gateway workers (default 2)")
    parser.add_argument("--fake-workers", type=int, default=1)
    parser.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn",
                        help="ASGI server for the gateway (default uvicorn, as make run and deploy/ use)")
    parser.add_argument("--load", action="store_true", help="also run the load test with faults (bench/load.py)")
    args = parser.parse_args()
    args.sequential = 200 if args.quick else 1000
    args.seconds = 4 if args.quick else 10
    args.dashboard_rows = 100_000 if args.quick else 1_000_000
    args.query_rows = 200_000 if args.quick else 5_000_000
    results = run(args)
    if args.load:
        from bench.load import bench_load

        results["load"] = attempt(bench_load, 2_000 if args.quick else 10_000, 50, args.workers)
    results.update(report.environment())
    out = ROOT / "bench"
    (out / "results.json").write_text(json.dumps(results, indent=2))
    markdown = report.markdown(results)
    (out / "results.md").write_text(markdown)
    print(markdown)
    print(f"Wrote {Path('bench/results.json')} and {Path('bench/results.md')}")
    if args.load and not results["load"].get("passed"):
        raise SystemExit("the load test lost requests or answered 5xx: see the load section above")


if __name__ == "__main__":
    main()
