"""Benchmark: graphcheck on the real transformers models of tests/real_models.py (a script, not a test).

    python bench/bench_real_models.py                 # every case, every rule family
    python bench/bench_real_models.py bert-seqcls clip --select GC1
    python bench/bench_real_models.py --markdown      # the table of docs/real-models.md
    python bench/bench_real_models.py --meta          # build the models on the meta device

For each model: the frontend graphcheck used, the seconds spent building the model from its
config, tracing it (graphcheck's "trace", which includes the meta/CPU execution) and running
the rules, the number of graph nodes, the GC1xx parameters found, and whether that set equals
autograd's (tests/oracle.py). Times are wall clock on whatever machine runs it; the first case
also pays for importing transformers' modeling code.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Expected noise from the catalogue itself (a deprecated transformers alias, the reentrant-checkpoint bug case).
warnings.filterwarnings("ignore", message=".*gradient_checkpointing_enable.*", category=FutureWarning)
warnings.filterwarnings("ignore", message="None of the inputs have requires_grad", category=UserWarning)
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import graphcheck  # noqa: E402
from tests import real_models as rm  # noqa: E402
from tests.oracle import params_without_gradient  # noqa: E402

COLUMNS = ("case", "modality", "frontend", "device", "model build s", "trace s", "rules s", "nodes",
           "params", "GC1xx found", "oracle", "match")


def measure(case: rm.Case, select: str | None, meta: bool) -> dict:
    torch.manual_seed(0)
    started = time.perf_counter()
    if meta:
        with torch.device("meta"):
            model, inputs = case.build()
        model = model.to("meta")
        inputs = tuple(t.to("meta") if isinstance(t, torch.Tensor) else t for t in inputs)
    else:
        model, inputs = case.build()
    built = time.perf_counter() - started
    result = graphcheck.check(model, inputs, loss=case.loss, mode=case.mode, select=select, name=case.name)
    row = {"case": case.name, "modality": case.modality, "frontend": result.frontend or "-",
           "device": result.device or "-", "model build s": f"{built:.2f}",
           "trace s": f"{result.timings.get('trace', 0):.2f}", "rules s": f"{result.timings.get('rules', 0):.2f}",
           "nodes": result.graph.graph.number_of_nodes() if result.graph else 0,
           "params": sum(1 for p in model.parameters() if p.requires_grad)}
    if result.status != "ok":
        row.update({"GC1xx found": "ERROR", "oracle": "-", "match": result.error.splitlines()[0][:80]})
        return row
    found = result.parameters_without_gradient()
    codes = sorted({f.code for f in result.findings if f.code.startswith("GC1")})
    if meta:   # the oracle needs values; the verdict must not depend on them
        real_model, real_inputs = case.build()
        oracle = params_without_gradient(real_model, real_inputs, case.loss, train=case.mode == "train")
    else:
        oracle = params_without_gradient(model, inputs, case.loss, train=case.mode == "train")
    row.update({"GC1xx found": f"{len(found)} {'/'.join(codes)}".strip(), "oracle": len(oracle),
                "match": "yes" if found == oracle else f"NO (+{len(found - oracle)} -{len(oracle - found)})"})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="case names (default: all)")
    parser.add_argument("--select", help="rule code prefixes, e.g. GC1 (default: every rule)")
    parser.add_argument("--meta", action="store_true", help="build the models on the meta device")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    cases = [rm.BY_NAME[n] for n in args.names] if args.names else rm.CASES
    rows = []
    for case in cases:
        row = measure(case, args.select, args.meta)
        rows.append(row)
        if not args.markdown:
            print("  ".join(f"{row[c]!s:<{_width(c)}}" for c in COLUMNS), flush=True)
    if args.markdown:
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "|".join("---" for _ in COLUMNS) + "|")
        for row in rows:
            print("| " + " | ".join(str(row[c]) for c in COLUMNS) + " |")
    else:
        print("columns: " + ", ".join(COLUMNS))


def _width(column: str) -> int:
    return {"case": 24, "modality": 10, "frontend": 8, "device": 6, "match": 6}.get(column, len(column))


if __name__ == "__main__":
    main()
