"""pytest configuration of the kernel benchmarks (benchmarks/ only).

- prints which BLAS NumPy uses (threadpoolctl), the minigrad GEMM kernel and the
  PyTorch version in the header and again above the summary;
- parametrises the thread count (--bench-threads, default 1,2) and a repeat index
  (--bench-reps, default 3), and orders the rows so that for each op and thread
  count the implementations run back to back (minigrad, numpy, torch) and the trio
  is repeated: ratios come from measurements taken side by side;
- at the end prints a summary: per op and thread count, the median time of each
  implementation (median over the repeats of pytest-benchmark's medians), the time
  ratios minigrad/numpy and minigrad/torch (median over the repeats of the per-repeat
  ratios, with their min-max), GFLOP/s for the GEMMs, and the run-to-run spread;
  --bench-json PATH writes the same table as JSON (for benchmarks/README.md).
"""
import json
import statistics

import pytest

import _benchlib as bl


def pytest_addoption(parser):
    group = parser.getgroup("minigrad benchmarks")
    group.addoption("--bench-threads", default="1,2",
                    help="comma-separated thread counts (default 1,2)")
    group.addoption("--bench-reps", type=int, default=3,
                    help="interleaved repeats of each op's minigrad/numpy/torch trio (default 3)")
    group.addoption("--bench-ops", default="",
                    help="only ops whose name contains one of these comma-separated words")
    group.addoption("--bench-wait-quiet", type=float, default=0.0, metavar="SECONDS",
                    help="before each row, wait up to SECONDS for other processes to use "
                         "< 0.3 cores (default 0: do not wait)")
    group.addoption("--bench-json", default=None, metavar="PATH",
                    help="write the summary table (and the environment) as JSON to PATH")


def _threads(config):
    return [int(t) for t in str(config.getoption("--bench-threads")).split(",") if t.strip()]


def pytest_generate_tests(metafunc):
    if "threads" in metafunc.fixturenames:
        metafunc.parametrize("threads", _threads(metafunc.config), ids=lambda t: f"t{t}")
    if "rep" in metafunc.fixturenames:
        reps = max(1, metafunc.config.getoption("--bench-reps"))
        metafunc.parametrize("rep", range(reps), ids=lambda r: f"r{r}")


def pytest_collection_modifyitems(session, config, items):
    words = [w.strip() for w in config.getoption("--bench-ops").split(",") if w.strip()]
    if words:
        keep = [it for it in items if not hasattr(it, "callspec")
                or any(w in str(it.callspec.params.get("op", "")) for w in words)]
        deselected = [it for it in items if it not in keep]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
        items[:] = keep

    def key(item):
        p = getattr(item, "callspec", None)
        if p is None or "op" not in p.params:
            return (1, 0, 0, 0, 0)
        module = item.module
        ops = list(module.OPS)
        impls = list(module.IMPLS)
        return (0, ops.index(p.params["op"]), p.params["threads"], p.params["rep"],
                impls.index(p.params["impl"]))
    items.sort(key=key)  # stable: non-benchmark items keep their order at the end


def pytest_report_header(config):
    try:
        return bl.describe_environment(bl.environment())
    except Exception as exc:  # never let the header break a run
        return [f"(could not describe the environment: {exc})"]


# ---------------------------------------------------------------- summary

def summarize(benchmarks):
    """Rows of the summary: one per (op, threads)."""
    by_key = {}
    for b in benchmarks:
        info = b.extra_info
        if "op" not in info or not b.stats:
            continue
        k = (info["op"], info["threads"])
        by_key.setdefault(k, {"description": info["description"], "flops": info.get("flops"),
                              "runs": {}})
        by_key[k]["runs"].setdefault(info["impl"], {})[info["rep"]] = b.stats.median
        by_key[k].setdefault("load", []).append(info.get("other_cores", float("nan")))
    order = []
    for b in benchmarks:  # keep the run order (ops as declared)
        info = b.extra_info
        k = (info.get("op"), info.get("threads"))
        if k in by_key and k not in order:
            order.append(k)
    rows = []
    for op, threads in order:
        entry = by_key[(op, threads)]
        runs = entry["runs"]
        row = {"op": op, "description": entry["description"], "threads": threads, "impls": {},
               "other_cores": max(entry["load"])}
        for impl, reps in runs.items():
            times = list(reps.values())
            med = statistics.median(times)
            row["impls"][impl] = {
                "median_s": med, "reps_s": times, "spread": bl.spread(times),
                "gflops": entry["flops"] / med / 1e9 if entry["flops"] else None}
        for other in ("numpy", "torch"):
            if "minigrad" in runs and other in runs:
                common = sorted(set(runs["minigrad"]) & set(runs[other]))
                ratios = [runs["minigrad"][r] / runs[other][r] for r in common]
                if ratios:
                    row[f"ratio_mg_{other}"] = {"median": statistics.median(ratios),
                                                "min": min(ratios), "max": max(ratios)}
        rows.append(row)
    return rows


def _fmt_ratio(r):
    if r is None:
        return "-"
    return f"{r['median']:.2f} [{r['min']:.2f}-{r['max']:.2f}]"


def format_summary(rows):
    head = (f"{'op':<20} {'thr':>3} {'minigrad':>11} {'numpy':>11} {'torch':>11} "
            f"{'mg/np time':>17} {'mg/torch time':>17} {'GFLOP/s mg/np/torch':>21} {'spread':>6} {'load':>5}")
    lines = [head, "-" * len(head)]
    for row in rows:
        t = {i: row["impls"].get(i) for i in ("minigrad", "numpy", "torch")}
        cells = [bl.fmt_time(t[i]["median_s"]) if t[i] else "-" for i in ("minigrad", "numpy", "torch")]
        gf = "/".join(f"{t[i]['gflops']:.0f}" if t[i] and t[i]["gflops"] else "-"
                      for i in ("minigrad", "numpy", "torch")) if any(
            t[i] and t[i]["gflops"] for i in t) else ""
        worst = max((v["spread"] for v in row["impls"].values()), default=float("nan"))
        lines.append(f"{row['op']:<20} {row['threads']:>3} {cells[0]:>11} {cells[1]:>11} {cells[2]:>11} "
                     f"{_fmt_ratio(row.get('ratio_mg_numpy')):>17} "
                     f"{_fmt_ratio(row.get('ratio_mg_torch')):>17} {gf:>21} {worst:>6.0%} {row['other_cores']:>5.2f}")
    threads = sorted({row["threads"] for row in rows})
    if len(threads) > 1:
        t0 = threads[0]
        lines.append("")
        lines.append(f"Thread speed-up, median time at {t0} thread(s) / at N threads:")
        base = {(r["op"], r["threads"]): r for r in rows}
        for row in rows:
            if row["threads"] == t0 or (row["op"], t0) not in base:
                continue
            b = base[(row["op"], t0)]["impls"]
            cells = []
            for impl in ("minigrad", "numpy", "torch"):
                if impl in b and impl in row["impls"]:
                    cells.append(f"{impl} {b[impl]['median_s'] / row['impls'][impl]['median_s']:.2f}")
            lines.append(f"  {row['op']:<20} {t0}->{row['threads']}: " + ", ".join(cells))
    return lines


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None:
        return
    rows = summarize(session.benchmarks)
    if not rows:
        return
    env = bl.environment()
    tr = terminalreporter
    tr.section("minigrad kernel benchmark summary")
    for line in bl.describe_environment(env):
        tr.write_line(line)
    reps = config.getoption("--bench-reps")
    tr.write_line(f"Times: median over {reps} interleaved repeats of pytest-benchmark's per-call "
                  f"median. Ratios are times minigrad/other (< 1: minigrad faster), median "
                  f"[min-max] over the repeats. spread: (max-min)/median of the repeat medians, "
                  f"worst implementation of the row. load: the most cores other processes used during any row of the line.")
    for line in format_summary(rows):
        tr.write_line(line)
    path = config.getoption("--bench-json")
    if path:
        with open(path, "w") as f:
            json.dump({"environment": env, "reps": reps, "rows": rows}, f, indent=1)
        tr.write_line(f"summary written to {path}")

