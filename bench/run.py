"""Benchmark: what graphcheck costs next to the floor (a meta forward + backward), bare tracers
and the runtime alternative (a real forward + backward, checking which grads stay None).

    python bench/run.py --repeat 3 --markdown            # the table of docs/performance.md
    python bench/run.py --models bert,cnn --repeat 1 --json out.json
    python bench/run.py --child floor --model bert        # one measurement, one JSON line

Every measurement is a separate process, run under ``/usr/bin/time -v`` (wall clock and peak
RSS of that process; without it, ``getrusage(RUSAGE_CHILDREN)`` in a fresh helper process).
Runs are interleaved (repeat 1 of every model and run kind, then repeat 2, ...) and the
table shows medians over ``--repeat`` processes. Run kinds:

  gc        python -m graphcheck TARGET --loss LOSS            real weights, every rule
  gc-meta   ... --meta                                         built on the meta device
  gc-gc1    ... --select GC1                                   real weights, GC1xx rules only
  floor     build on meta, forward, loss, backward             (bench/run.py --child floor)
  fx        build on meta, torch.fx.symbolic_trace(model)
  export    build on meta, torch.export.export(model, inputs, strict=False)
  runtime   build with real weights on CPU, forward, loss, backward, list grads that are None
            (what DistributedDataParallel's find_unused_parameters finds, at run time)

graphcheck's own times (build, trace, rules) come from its ``--debug`` output; its "work" is
trace + rules (building the model and importing excluded), comparable with the floor's
work (forward + loss + backward, imports and building excluded). Models whose real weights
do not fit in memory (Llama 7B/70B) skip the real-weight kinds (gc, gc-gc1, runtime).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS_FILE = "bench/models.py"
KINDS = ("gc", "gc-meta", "gc-gc1", "floor", "fx", "export", "runtime")
CHILD_KINDS = ("floor", "fx", "export", "runtime")
TIMEOUT_S = 1800


# --------------------------------------------------------------------------- child processes

def child(kind: str, name: str) -> dict:
    """One measurement in this (fresh) process; returns what is printed as one JSON line."""
    started = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import warnings
    warnings.simplefilter("ignore")
    import torch
    sys.path.insert(0, str(ROOT / "bench"))
    import models
    import transformers  # noqa: F401  (imported here so that "build" is building, not importing)
    factory_name, loss_name, _ = models.MODELS[name]
    factory, loss_fn = getattr(models, factory_name), getattr(models, loss_name)
    imported = time.perf_counter()
    row = {"kind": kind, "model": name, "import_s": imported - started}

    attempts = ["cpu"] if kind == "runtime" else ["meta", "fake"] if kind == "floor" else ["meta"]
    for device in attempts:
        row.update(_attempt(kind, device, factory, loss_fn, torch))
        if row["status"] == "ok":
            row.pop("error", None)
            break
        row.setdefault("errors", []).append(f"{device}: {row['error']}")
    row["device"] = device
    row["in_process_s"] = time.perf_counter() - started
    return row


def _attempt(kind: str, device: str, factory, loss_fn, torch) -> dict:
    """Build on ``device`` ("cpu", "meta", or "fake": a FakeTensorMode, no storage either) and run ``kind``."""
    import contextlib
    if device == "fake":
        from torch._subclasses.fake_tensor import FakeTensorMode
        context = FakeTensorMode(allow_non_fake_inputs=True)
    else:
        context = contextlib.nullcontext()
    row: dict = {}
    start = time.perf_counter()
    with context:
        torch.manual_seed(0)
        with torch.device("cpu" if device == "fake" else device):
            model, inputs = factory()
        model.train()
        built = time.perf_counter()
        row["build_s"] = built - start
        row["params"] = sum(p.numel() for p in model.parameters())
        try:
            if kind in ("floor", "runtime"):
                loss = loss_fn(model(*inputs))
                loss.backward()
                row["work_s"] = time.perf_counter() - built
                no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
                row["no_grad"] = len(no_grad)
                if kind == "floor":   # the same again, warm: the first run pays one-time set-up
                    model.zero_grad(set_to_none=True)
                    again = time.perf_counter()
                    loss_fn(model(*inputs)).backward()
                    row["warm_s"] = time.perf_counter() - again
            elif kind == "fx":
                gm = torch.fx.symbolic_trace(model)
                row["work_s"] = time.perf_counter() - built
                row["nodes"] = len(gm.graph.nodes)
            elif kind == "export":
                program = torch.export.export(model, tuple(inputs), strict=False)
                row["work_s"] = time.perf_counter() - built
                row["nodes"] = len(program.graph.nodes)
            row["status"] = "ok"
            row.pop("error", None)
        except Exception as exc:  # a tracer that cannot handle the model is a result, not a crash
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            row["work_s"] = time.perf_counter() - built
            row["status"] = "fails"
            row["error"] = f"{type(exc).__name__}: {first}"[:200]
    return row


# --------------------------------------------------------------------------- the parent

def command(kind: str, name: str) -> list[str] | None:
    """The process of one run, or None when it is skipped for this model."""
    from models import MODELS   # bench/ is on sys.path (the script's folder)
    factory, loss, real_fits = MODELS[name]
    if kind in CHILD_KINDS:
        if kind == "runtime" and not real_fits:
            return None
        return [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--model", name]
    args = [sys.executable, "-m", "graphcheck", f"{MODELS_FILE}:{factory}", "--loss", f"{MODELS_FILE}:{loss}",
            "--format", "json", "--exit-zero", "--debug"]
    if kind in ("gc", "gc-gc1") and not real_fits:
        return None
    if kind == "gc-meta":
        args.append("--meta")
    if kind == "gc-gc1":
        args += ["--select", "GC1"]
    return args


_TIMINGS = re.compile(r"graphcheck: \S+: (build [\d.]+s.*)$", re.M)
_FAILED = re.compile(r"graphcheck: \S+: (\w+)(?: \((\w+)\))? frontend did not work: (.*)$", re.M)


def parse_graphcheck(stdout: str, stderr: str) -> dict:
    row: dict = {}
    try:
        target = json.loads(stdout)["targets"][0]
        row["status"] = target["status"]
        row["frontend"] = target.get("frontend")
        row["findings"] = len(target.get("findings", []))
        row["codes"] = sorted({f["code"] for f in target.get("findings", [])})
        if target["status"] != "ok":
            row["error"] = (target.get("error") or "")[:200]
    except (json.JSONDecodeError, KeyError, IndexError):
        row["status"] = "fails"
        row["error"] = stderr.strip().splitlines()[-1][:200] if stderr.strip() else "no output"
    match = _TIMINGS.search(stderr)
    if match:
        for part in match.group(1).split(", "):
            key, value = part.split()
            row[f"{key}_s"] = float(value.rstrip("s"))
        row["work_s"] = row.get("trace_s", 0.0) + row.get("rules_s", 0.0)
    row["frontends_failed"] = [f"{m.group(1)}{' (' + m.group(2) + ')' if m.group(2) else ''}: {m.group(3)[:120]}"
                               for m in _FAILED.finditer(stderr)]
    return row


def _time_v(path: Path) -> dict:
    text = path.read_text()
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return {"peak_rss_mb": int(rss.group(1)) / 1024} if rss else {}


def run_one(kind: str, name: str) -> dict | None:
    args = command(kind, name)
    if args is None:
        return None
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    timer = shutil.which("time") if Path("/usr/bin/time").exists() else None
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "time.txt"
        if timer:
            full = ["/usr/bin/time", "-v", "-o", str(stats), *args]
        else:   # a fresh helper whose only child is the run: its RUSAGE_CHILDREN is the run's
            helper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]).returncode; "
                      f"open({str(stats)!r}, 'w').write('Maximum resident set size (kbytes): %d\\n' % "
                      "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r)")
            full = [sys.executable, "-c", helper, *args]
        load = os.getloadavg()[0]
        started = time.perf_counter()
        try:
            out = subprocess.run(full, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"kind": kind, "model": name, "status": "timeout", "wall_s": float(TIMEOUT_S)}
        wall = time.perf_counter() - started
        row = {"kind": kind, "model": name, "wall_s": wall, "returncode": out.returncode, "load_before": load,
               **(_time_v(stats) if stats.exists() else {})}
    if kind in CHILD_KINDS:
        try:
            row.update(json.loads(out.stdout.strip().splitlines()[-1]))
        except (IndexError, json.JSONDecodeError):
            row.update(status="crashed", error=(out.stderr.strip().splitlines() or ["?"])[-1][:200])
    else:
        row.update(parse_graphcheck(out.stdout, out.stderr))
    return row


def median_rows(runs: list[dict]) -> dict:
    """(model, kind) -> the median of each number over the repeats, the rest from the last run."""
    groups: dict = {}
    for run in runs:
        groups.setdefault((run["model"], run["kind"]), []).append(run)
    result = {}
    for key, rows in groups.items():
        merged = dict(rows[-1])
        for field in {k for r in rows for k, v in r.items() if isinstance(v, float)}:
            values = [r[field] for r in rows if isinstance(r.get(field), float)]
            merged[field] = statistics.median(values)
        merged["n"] = len(rows)
        merged["statuses"] = sorted({r.get("status", "?") for r in rows})
        result[key] = merged
    return result


def ratios(medians: dict, names: list[str]) -> dict:
    out = {}
    for name in names:
        get = lambda kind, field: (medians.get((name, kind)) or {}).get(field)  # noqa: E731
        r = {}
        floor = get("floor", "work_s") if get("floor", "status") == "ok" else None
        for kind in ("gc", "gc-meta", "gc-gc1"):
            work = get(kind, "work_s")
            if work is not None and floor:
                r[f"{kind} work / floor work"] = work / floor
        for field in ("wall_s", "peak_rss_mb"):
            gc, rt = get("gc", field), get("runtime", field)
            if "ok" not in (get("gc", "status"), ) or get("runtime", "status") != "ok":
                continue
            if gc is not None and rt:
                r[f"gc / runtime {field}"] = gc / rt
        out[name] = r
    return out


LABELS = {
    "gc": "graphcheck (real weights, all rules)",
    "gc-meta": "graphcheck --meta",
    "gc-gc1": "graphcheck --select GC1",
    "floor": "floor: meta forward+backward",
    "fx": "torch.fx.symbolic_trace",
    "export": "torch.export.export(strict=False)",
    "runtime": "runtime: real forward+backward",
}


def _detail(row: dict) -> str:
    if row.get("status") not in ("ok", None):
        return f"**{row['status']}**: {row.get('error', '')}".replace("|", "\\|")
    kind = row["kind"]
    if kind.startswith("gc"):
        parts = [f"frontend {row.get('frontend')}", f"{row.get('findings', 0)} findings"
                 + (f" ({', '.join(row['codes'])})" if row.get("codes") else "")]
        if row.get("frontends_failed"):
            parts.append("failed first: " + "; ".join(row["frontends_failed"]))
        return ", ".join(parts).replace("|", "\\|")
    if kind in ("fx", "export"):
        return f"{row.get('nodes')} nodes"
    text = f"{row.get('no_grad', '?')} params with grad None"
    if kind == "floor":
        text += f"; warm 2nd pass {_num(row.get('warm_s'))} s"
        if row.get("device") == "fake":
            text += ("; on meta it fails (transformers calls .item() on a meta tensor), so this is the "
                     "same model under FakeTensorMode (no storage either)")
    return text


def _num(value, digits=2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(medians: dict, names: list[str], kinds: list[str], repeat: int, meta_only=frozenset()) -> str:
    lines = [f"Medians of {repeat} process(es) each. wall = whole process; work = graphcheck's trace + rules, "
             "the floor's/runtime's forward + loss + backward, the tracers' trace call.", "",
             "| model | run | wall s | peak RSS MB | build s | work s | detail |",
             "|---|---|---:|---:|---:|---:|---|"]
    from models import MODELS
    for name in names:
        for kind in kinds:
            row = medians.get((name, kind))
            if row is None:
                if kind in kinds:
                    why = ("real fp32 weights do not fit in 24 GiB (7B: 27 GB, 70B: 276 GB)" if not MODELS[name][2]
                           else "--meta-only" if name in meta_only else "not run")
                    lines.append(f"| {name} | {LABELS[kind]} | - | - | - | - | skipped: {why} |")
                continue
            lines.append(f"| {name} | {LABELS[kind]} | {_num(row.get('wall_s'), 1)} | "
                         f"{_num(row.get('peak_rss_mb'), 0)} | {_num(row.get('build_s'))} | "
                         f"{_num(row.get('work_s'))} | {_detail(row)} |")
    lines += ["", "| model | gc work / floor work | gc --meta work / floor work | gc GC1 work / floor work | "
              "gc wall / runtime wall | gc RSS / runtime RSS |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in ratios(medians, names).items():
        cells = [r.get(k) for k in ("gc work / floor work", "gc-meta work / floor work", "gc-gc1 work / floor work",
                                    "gc / runtime wall_s", "gc / runtime peak_rss_mb")]
        lines.append(f"| {name} | " + " | ".join(_num(c, 1) + ("x" if c is not None else "") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from models import MODELS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma separated (default: {','.join(MODELS)})")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"run kinds (default: {','.join(KINDS)})")
    parser.add_argument("--meta-only", default="", metavar="MODELS",
                        help="models for which only the meta-device kinds run (gc-meta, floor, fx, export)")
    parser.add_argument("--repeat", type=int, default=3, help="processes per measurement (median)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--json", metavar="FILE", help="write every run and the medians to FILE")
    parser.add_argument("--from-json", metavar="FILE", help="print the tables of an earlier --json FILE, run nothing")
    parser.add_argument("--child", choices=CHILD_KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(child(args.child, args.model)), flush=True)
        return

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    meta_only = {n.strip() for n in args.meta_only.split(",") if n.strip()}
    for n in names:
        if n not in MODELS:
            parser.error(f"unknown model {n!r}; choose from {', '.join(MODELS)}")
    for k in kinds:
        if k not in KINDS:
            parser.error(f"unknown kind {k!r}; choose from {', '.join(KINDS)}")

    runs = []
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        runs, args.repeat = saved["runs"], saved["repeat"]
        names = [n for n in names if any(r["model"] == n for r in runs)]
    for rep in range(0 if args.from_json else args.repeat):
        for name in names:
            for kind in kinds:
                if name in meta_only and kind not in ("gc-meta", "floor", "fx", "export"):
                    continue
                row = run_one(kind, name)
                if row is None:
                    continue
                row["repeat"] = rep
                runs.append(row)
                print(f"[{rep + 1}/{args.repeat}] {name:<9} {kind:<8} {row.get('status', '?'):<7} "
                      f"wall {row.get('wall_s', 0):7.1f}s  rss {row.get('peak_rss_mb', 0):7.0f} MB  "
                      f"work {row.get('work_s', float('nan')):7.2f}s", file=sys.stderr, flush=True)

    medians = median_rows(runs)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "runs": runs, "medians": [dict(v, key=list(k)) for k, v in medians.items()],
            "ratios": ratios(medians, names), "repeat": args.repeat,
            "python": sys.version.split()[0], "cpus": os.cpu_count()}, indent=1))
    if args.markdown:
        print(markdown(medians, names, kinds, args.repeat, meta_only), end="")
    else:
        for (name, kind), row in medians.items():
            print(f"{name:<9} {kind:<8} wall {_num(row.get('wall_s'), 1):>7}s  rss {_num(row.get('peak_rss_mb'), 0):>6} MB"
                  f"  build {_num(row.get('build_s')):>6}s  work {_num(row.get('work_s')):>7}s  {_detail(row)}")
        for name, r in ratios(medians, names).items():
            print(f"{name:<9} " + "  ".join(f"{k} {v:.1f}x" for k, v in r.items()))


if __name__ == "__main__":
    main()
