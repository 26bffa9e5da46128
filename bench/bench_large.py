"""Benchmark: linting big architectures on the meta device (no weights allocated).

    python bench/bench_large.py [llama_7b llama_70b ...]

Each case runs in a fresh subprocess so its peak memory (ru_maxrss) is its own.
Prints build / trace / rules seconds, the frontend used, graph size and peak RSS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = ["llama_tiny", "llama_7b", "llama_70b"]

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
import graphcheck
started = time.perf_counter()
result = graphcheck.check("examples/llama.py:" + {case!r}, loss="examples/llama.py:next_token_loss", meta=True)
total = time.perf_counter() - started
print(json.dumps({{
    "case": {case!r}, "status": result.status, "error": result.error, "frontend": result.frontend,
    "parameters": result.parameters["total"], "nodes": result.graph.graph.number_of_nodes() if result.graph else 0,
    "findings": len(result.findings), "total_s": round(total, 2),
    **{{k + "_s": round(v, 2) for k, v in result.timings.items()}},
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
}}))
"""


def main(cases: list[str]) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    print(f"{'case':<12} {'frontend':<9} {'params':>7} {'nodes':>6} {'build':>6} {'trace':>6} {'rules':>6} {'total':>6} {'RSS MB':>7}")
    for case in cases:
        out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), case=case)],
                             cwd=ROOT, env=env, capture_output=True, text=True)
        try:
            row = json.loads(out.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            print(f"{case:<12} failed: {out.stderr.strip()[-300:]}")
            continue
        print(f"{row['case']:<12} {row['frontend'] or row['status']:<9} {row['parameters']:>7} {row['nodes']:>6} "
              f"{row.get('build_s', 0):>6} {row.get('trace_s', 0):>6} {row.get('rules_s', 0):>6} "
              f"{row['total_s']:>6} {row['peak_rss_mb']:>7}")


if __name__ == "__main__":
    main(sys.argv[1:] or CASES)
