"""Measurements: sequential latency, streaming time to first/last byte, throughput with wrk."""

from __future__ import annotations

import http.client
import json
import re
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    mean_ms: float
    n: int


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summarize(samples: list[float]) -> Latency:
    ms = [s * 1000 for s in samples]
    return Latency(round(_percentile(ms, 0.5), 3), round(_percentile(ms, 0.99), 3), round(statistics.fmean(ms), 3),
                   len(ms))


class Client:
    """A keep-alive HTTP/1.1 client with as little overhead of its own as possible."""

    def __init__(self, base_url: str, path: str, headers: dict[str, str]):
        parts = urlsplit(base_url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.path, self.headers = path, {"content-type": "application/json", **headers}

    def post(self, body: bytes) -> tuple[float, float, bytes]:
        """Returns (time to first body byte, time to last byte, body)."""
        start = time.perf_counter()
        self.conn.request("POST", self.path, body=body, headers=self.headers)
        response = self.conn.getresponse()
        first = response.read1(65536)
        ttfb = time.perf_counter() - start
        rest = response.read()
        total = time.perf_counter() - start
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {(first + rest)[:300]!r}")
        return ttfb, total, first + rest

    def close(self) -> None:
        self.conn.close()


def sequential(base_url: str, path: str, headers: dict, body: dict, n: int, warmup: int = 50) -> dict:
    client = Client(base_url, path, headers)
    payload = json.dumps(body).encode()
    try:
        for _ in range(warmup):
            client.post(payload)
        ttfbs, totals = [], []
        for _ in range(n):
            ttfb, total, _ = client.post(payload)
            ttfbs.append(ttfb)
            totals.append(total)
    finally:
        client.close()
    return {"ttfb": asdict(summarize(ttfbs)), "total": asdict(summarize(totals))}


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
%s
"""


def throughput(base_url: str, path: str, headers: dict, body: dict, connections: int, seconds: int,
               threads: int = 2) -> dict:
    header_lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % (json.dumps(body), header_lines))
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", script.name,
         base_url + path], capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    latency = {q: _to_ms(v) for q, v in re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M)}
    return {"requests_per_s": rps, "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1).strip() if socket_errors else "",
            "p50_ms": latency.get("50"), "p99_ms": latency.get("99")}


def _to_ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()
    return round(float(number) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit], 3)
