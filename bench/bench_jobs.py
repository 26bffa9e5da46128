"""Benchmark: -j/--jobs. Four targets on this machine's cores, `graphcheck -j 2` against `-j 1`.

    python bench/bench_jobs.py --repeat 3          # medians of 3 processes per setting, interleaved

Each run is one `python -m graphcheck` process over the same four targets (two small real models from
bench/models.py, BERT-base and ResNet-50), timed from start to exit (wall clock). Results print as
one JSON object; docs/performance.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "bench" / "models.py"
TARGETS = [(f"{MODELS}:small_cnn", f"{MODELS}:classification_loss"),
           (f"{MODELS}:resnet50", f"{MODELS}:classification_loss"),
           (f"{MODELS}:bert_base", f"{MODELS}:classification_loss"),
           (f"{MODELS}:gpt2_48", f"{MODELS}:next_token_loss")]


def _config(folder: Path) -> Path:
    tables = "\n".join(f'[[tool.graphcheck.target]]\nmodel = "{model}"\nloss = "{loss}"\n' for model, loss in TARGETS)
    path = folder / "pyproject.toml"
    path.write_text("[tool.graphcheck]\n\n" + tables)
    return path


def _run(jobs: int, config: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "graphcheck", "--config", str(config), "-j", str(jobs), "-q",
                           "--format", "json"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    elapsed = time.perf_counter() - started
    statuses = [t["status"] for t in json.loads(done.stdout)["targets"]]
    if done.returncode not in (0, 1) or statuses != ["ok"] * len(TARGETS):
        raise SystemExit(f"-j {jobs}: exit {done.returncode}, {statuses}\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    folder = ROOT / "bench" / ".jobs"
    folder.mkdir(exist_ok=True)
    config = _config(folder)
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeat):
        for jobs in (1, 2):
            times[jobs].append(_run(jobs, config))
    result = {"targets": [t[0].rsplit(":", 1)[1] for t in TARGETS], "cpus": os.cpu_count(), "repeat": args.repeat,
              "wall_s": {f"-j {j}": round(statistics.median(v), 2) for j, v in times.items()},
              "runs_s": {f"-j {j}": [round(x, 2) for x in v] for j, v in times.items()}}
    result["speedup"] = round(result["wall_s"]["-j 1"] / result["wall_s"]["-j 2"], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
