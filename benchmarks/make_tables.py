#!/usr/bin/env python
"""Markdown tables for benchmarks/README.md from the JSON the benchmarks write.

    python benchmarks/make_tables.py --kernels kernels.json [more.json ...] --epoch epoch.json

kernels.json: `pytest benchmarks/ --benchmark-only --bench-json kernels.json`
epoch.json:   `python benchmarks/bench_epoch.py ... --json epoch.json`
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _benchlib as bl  # noqa: E402


def _ratio(r):
    return f"{r['median']:.2f} [{r['min']:.2f}–{r['max']:.2f}]" if r else "–"


def environment_lines(env):
    return [f"- {line}" for line in bl.describe_environment(env)]


def merge_kernel_runs(runs):
    """One row per (op, threads): from the run whose row saw the least load of other
    processes (a shared machine's bursts spoil some rows of each run)."""
    best, order = {}, []
    for i, data in enumerate(runs):
        for row in data["rows"]:
            key = (row["op"], row["threads"])
            if key not in best:
                order.append(key)
            load = row.get("other_cores", float("inf"))
            if key not in best or load < best[key][0]:
                best[key] = (load, dict(row, source=i + 1))
    merged = dict(runs[-1])
    merged["rows"] = [best[k][1] for k in order]
    return merged


def kernel_tables(data):
    sources = len({row.get("source") for row in data["rows"]} - {None})
    out = ["Kernel benchmarks: median time per call (median over "
           f"{data['reps']} interleaved repeats), time ratios minigrad/other "
           "(median [min–max] over the repeats; < 1 means minigrad is faster), GFLOP/s "
           "for the GEMMs, and the most cores other processes used during a row (load).", ""]
    out += environment_lines(data["environment"]) + [""]
    if sources:
        out += [f"Rows merged from several runs: each row from the run (`run`) whose row saw "
                f"the least load.", ""]
    out.append("| op | threads | minigrad | numpy | torch | mg/numpy | mg/torch "
               "| GFLOP/s mg / np / torch | load |" + (" run |" if sources else ""))
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if sources else ""))
    for row in data["rows"]:
        t = row["impls"]
        cells = [bl.fmt_time(t[i]["median_s"]) if i in t else "–" for i in ("minigrad", "numpy", "torch")]
        gf = " / ".join(f"{t[i]['gflops']:.0f}" if i in t and t[i]["gflops"] else "–"
                        for i in ("minigrad", "numpy", "torch"))
        gf = gf if any(i in t and t[i]["gflops"] for i in t) else ""
        out.append(f"| {row['description']} | {row['threads']} | {cells[0]} | {cells[1]} | {cells[2]} "
                   f"| {_ratio(row.get('ratio_mg_numpy'))} | {_ratio(row.get('ratio_mg_torch'))} "
                   f"| {gf} | {row.get('other_cores', float('nan')):.2f} |"
                   + (f" {row.get('source', '')} |" if sources else ""))
    return out


def epoch_tables(data):
    s = data["summary"]
    args = data["args"]
    out = [f"Epoch benchmark: {args['samples']} samples, batch 128, {s['epoch_gflop']:.1f} GFLOP; "
           f"{args['repeats']} interleaved repeats, median seconds per epoch [min–max].", ""]
    out += environment_lines(data["environment"]) + [""]
    out.append("| case | threads | engine | s/epoch | [min–max] | samples/s | GFLOP/s "
               "| step est s | load max |")
    out.append("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for t in s["table"]:
        out.append(f"| {t['case']} | {t['threads']} | {t['engine']} | {t['median_s']:.3f} "
                   f"| {t['min_s']:.3f}–{t['max_s']:.3f} | {t['samples_per_s']:,.0f} "
                   f"| {t['gflops']:.1f} | {t.get('est_s', float('nan')):.3f} | {t['other_cores']:.2f} |")
    if s["ratios"]:
        out += ["", "| case | threads | time ratio | median [min–max] |", "|---|---:|---|---:|"]
        for r in s["ratios"]:
            out.append(f"| {r['case']} | {r['threads']} | {r['a']} / {r['b']} | {_ratio(r)} |")
    if s.get("gemm_floor"):
        out += ["", "| case | threads | NumPy loop's sgemm s | share of its epoch "
                "| fit / sgemm floor | torch / sgemm floor |", "|---|---:|---:|---:|---:|---:|"]
        for f in s["gemm_floor"]:
            out.append(f"| {f['case']} | {f['threads']} | {f['floor_s']:.3f} "
                       f"| {_ratio(f['numpy_share'])} | {_ratio(f.get('minigrad-fit'))} "
                       f"| {_ratio(f.get('torch'))} |")
    if s["speedups"]:
        out += ["", "| case | engine | speed-up | median [min–max] |", "|---|---|---|---:|"]
        for r in s["speedups"]:
            out.append(f"| {r['case']} | {r['engine']} | {r['from']} → {r['to']} threads | {_ratio(r)} |")
    if s["late_vs_normal"]:
        out += ["", "| threads | engine | late / normal time | ", "|---:|---|---:|"]
        for r in s["late_vs_normal"]:
            out.append(f"| {r['threads']} | {r['engine']} | {_ratio(r)} |")
    mem = data.get("peak_memory")
    if mem:
        out += ["", "| engine | peak RSS MiB: Python+NumPy | + data | + engine | after one epoch |",
                "|---|---:|---:|---:|---:|"]
        for name, m in mem.items():
            if "error" not in m:
                out.append(f"| {name} | {m['start']:.0f} | {m['data']:.0f} | {m['engine']:.0f} "
                           f"| {m['epoch']:.0f} |")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kernels", metavar="JSON", nargs="+",
                   help="one or more --bench-json files; with several, each row comes from the "
                        "run whose row saw the least load")
    p.add_argument("--epoch", metavar="JSON")
    args = p.parse_args(argv)
    if not (args.kernels or args.epoch):
        p.error("give --kernels and/or --epoch")
    blocks = []
    if args.kernels:
        runs = []
        for path in args.kernels:
            with open(path) as f:
                runs.append(json.load(f))
        data = runs[0] if len(runs) == 1 else merge_kernel_runs(runs)
        blocks.append("\n".join(kernel_tables(data)))
    if args.epoch:
        with open(args.epoch) as f:
            blocks.append("\n".join(epoch_tables(json.load(f))))
    print("\n\n".join(blocks))


if __name__ == "__main__":
    main()
