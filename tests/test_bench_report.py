"""`make bench`'s report (bench/report.py) shows every measurement issue #8 asks for, rendered from the
results of a real run (tests/fixtures/bench/results-2026-11-26.json, the figures in docs/performance.md)."""

import json
from pathlib import Path

from bench import report

RESULTS = json.loads((Path(__file__).parent / "fixtures" / "bench" / "results-2026-11-26.json").read_text())


def test_the_report_has_every_measurement_with_its_added_figures():
    text = report.markdown(RESULTS)
    for heading in ("## Added latency", "## Streaming, 200 chunks", "## Throughput, 50 connections", "## Memory",
                    "## Dashboard pages", "## Chart queries", "## Side by side with LiteLLM", "## Load with nothing lost",
                    "## Targets (issue #8)"):
        assert heading in text, heading
    # 1. added latency (gateway minus direct), both paths; 2. streaming first/last byte, burst and paced;
    # 3./4. throughput direct vs gateway, also converted; 5. RSS; 6. LiteLLM side by side with ratios
    assert "| OpenAI → OpenAI | 0.237 ms | 0.751 ms | **0.514 ms** |" in text
    assert "| OpenAI → Anthropic (converted) |" in text
    assert "**0.613 ms**" in text and "Paced (1.0 ms between chunks)" in text and "**added 1.303 ms**" in text
    assert "| through gateway (OpenAI → OpenAI) | **3488** |" in text and "| direct to fake (OpenAI) | **16135** |" in text
    assert "peak under load: 127.6 MB" in text
    assert "| requests/s, 50 connections (2 workers each) | 3488 | 136 | 25.7× |" in text
    assert "**passed**" in text
