"""Depth sweep: graphcheck's cost per graph node from 100 to 100,000 nodes (issue 10, linear cost).

A synthetic deep network (Linear + ReLU blocks, a residual add every other block, a
LayerNorm every fourth) is built on the meta device at growing depths and analysed with
every rule that reads the graph (the numeric rules need real weights and are skipped on
meta). Each depth runs in a fresh process; the table gives the trace and rules time per
node, which stays roughly constant when no pass is quadratic.

    python bench/depth_sweep.py                 # 100 .. 100,000 nodes
    python bench/depth_sweep.py --nodes 1000,10000 --markdown
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

NODES_PER_BLOCK = 5.25   # measured: ops, parameters and outputs per block of the network below


def _child(blocks: int) -> dict:
    import torch
    from torch import nn

    import graphcheck

    class Deep(nn.Module):
        def __init__(self, n: int, width: int = 8):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(n))
            self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(n // 4))

        def forward(self, x):
            for i, layer in enumerate(self.layers):
                h = torch.relu(layer(x))
                x = x + h if i % 2 else h
                if i % 4 == 3:
                    x = self.norms[i // 4](x)
            return x

    with torch.device("meta"):
        model = Deep(blocks)
    started = time.perf_counter()
    result = graphcheck.check(model, (torch.randn(2, 8, device="meta"),), frontends=("autograd",))
    total = time.perf_counter() - started
    return {"blocks": blocks, "nodes": len(result.graph.graph), "status": result.status,
            "trace": result.timings.get("trace", 0.0), "rules": result.timings.get("rules", 0.0), "total": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="100,300,1000,3000,10000,30000,100000")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child)))
        return
    rows = []
    for target in (int(n) for n in args.nodes.split(",")):
        blocks = max(1, round(target / NODES_PER_BLOCK))
        out = subprocess.run([sys.executable, __file__, "--child", str(blocks)], capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        if out.returncode:
            print(out.stderr[-2000:], file=sys.stderr)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['nodes']:>7} nodes: trace {row['trace']:7.2f} s ({row['trace'] / row['nodes'] * 1e6:5.0f} us/node), "
              f"rules {row['rules']:6.2f} s ({row['rules'] / row['nodes'] * 1e6:5.0f} us/node)", flush=True)
    if args.markdown:
        print("\n| nodes | trace s | trace us/node | rules s | rules us/node |\n|---:|---:|---:|---:|---:|")
        for row in rows:
            print(f"| {row['nodes']:,} | {row['trace']:.2f} | {row['trace'] / row['nodes'] * 1e6:.0f} | "
                  f"{row['rules']:.2f} | {row['rules'] / row['nodes'] * 1e6:.0f} |")


if __name__ == "__main__":
    main()
