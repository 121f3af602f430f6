"""Analyse a Locust run of the Tidemark load tests.

    uv run python tests/load/analyze.py tests/load/results/baseline --warmup 60

PREFIX is the value given to Locust's ``--csv``; this script reads
``PREFIX_stats_history.csv`` (one Aggregated row a second, plus one row per request name a
second when Locust ran with ``--csv-full-history``), ``PREFIX_names_history.csv`` (per-name
totals once a second, written by the locustfile) and ``PREFIX_stats.csv`` (whole-run rows per
request name).

It prints, for the stable period (everything more than ``--warmup`` seconds after the first
sample):

* average RPS and average response time as in the guide's snippet (mean of the per-second
  increase of ``Total Request Count``; mean of ``Total Average Response Time``), and the exact
  average response time of the requests made inside the stable period;
* events/s by the guide's formula: successful single-event requests/s x 1 + successful batch
  requests/s x ``--batch-size`` (20 by default: the suite's batches hold 20 events on average),
  taken from the per-request-name rows; refused requests (``... (rate limited: PLAN)``) are
  shown on their own and carry no events;
* the error rate (failed requests / all requests) in the stable period;
* P50/P95/P99 of the whole run: over all requests, and over accepted ingest requests only
  (a mix of the per-name percentile columns: approximate, within Locust's percentile grid).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from itertools import pairwise
from pathlib import Path

import pandas as pd

SINGLE_PREFIX = "/api/v1/event ("
BATCH_PREFIX = "/api/v1/event/batch ("
RATE_LIMITED = "(rate limited:"
PCT_COLUMNS = ["50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]


def kind_of(name: str) -> str:
    if RATE_LIMITED in name:
        return "rate_limited"
    if name.startswith(BATCH_PREFIX):
        return "batch"
    if name.startswith(SINGLE_PREFIX):
        return "single"
    return "other"


def mixed_percentiles(rows: pd.DataFrame, quantiles: list[float]) -> list[float | None]:
    """Approximate percentiles of the union of several request names, from each name's
    percentile columns (piecewise-linear CDF per name, weighted by its request count)."""
    curves = []
    for _, r in rows.iterrows():
        n = float(r["Request Count"])
        if n <= 0:
            continue
        pts = [(0.0, float(r["Min Response Time"]))]
        for col in PCT_COLUMNS:
            v = pd.to_numeric(r.get(col), errors="coerce")
            if pd.notna(v):
                pts.append((float(col.rstrip("%")) / 100.0, float(v)))
        curves.append((n, pts))
    if not curves:
        return [None for _ in quantiles]
    total = sum(n for n, _ in curves)

    def cdf(pts: list[tuple[float, float]], x: float) -> float:
        if x < pts[0][1]:
            return 0.0
        for (p0, v0), (p1, v1) in pairwise(pts):
            if x < v1:
                return p0 if v1 == v0 else p0 + (p1 - p0) * (x - v0) / (v1 - v0)
        return 1.0

    xs = sorted({v for _, pts in curves for _, v in pts})
    out: list[float | None] = []
    for q in quantiles:
        found = xs[-1]
        prev_x, prev_f = xs[0], 0.0
        for x in xs:
            f = sum(n * cdf(pts, x) for n, pts in curves) / total
            if f >= q:
                found = x if f == prev_f else prev_x + (x - prev_x) * (q - prev_f) / (f - prev_f)
                break
            prev_x, prev_f = x, f
        out.append(found)
    return out


def analyze(prefix: str, warmup: float, batch_size: float) -> dict:
    history_path = Path(f"{prefix}_stats_history.csv")
    stats_path = Path(f"{prefix}_stats.csv")
    if not history_path.exists():
        raise SystemExit(f"error: {history_path} not found (run Locust with --csv={prefix})")
    df = pd.read_csv(history_path)
    notes: list[str] = []

    agg = df[df["Name"] == "Aggregated"].sort_values("Timestamp")
    if agg.empty:
        raise SystemExit(f"error: {history_path} has no Aggregated rows")
    start = agg["Timestamp"].min()
    stable = agg[agg["Timestamp"] > start + warmup]
    if len(stable) < 2:
        notes.append(f"run shorter than the {warmup:g} s warm-up plus 2 samples: figures cover the whole run instead")
        stable = agg
        warmup_used = 0.0
    else:
        warmup_used = warmup

    # The guide's figures.
    guide_rps = float(stable["Total Request Count"].diff().mean())
    guide_latency = float(stable["Total Average Response Time"].mean())

    # Exact figures for the stable period, from its first and last samples.
    first, last = stable.iloc[0], stable.iloc[-1]
    seconds = float(last["Timestamp"] - first["Timestamp"]) or 1.0
    requests = float(last["Total Request Count"] - first["Total Request Count"])
    failures = float(last["Total Failure Count"] - first["Total Failure Count"])
    rt_sum = float(
        last["Total Average Response Time"] * last["Total Request Count"]
        - first["Total Average Response Time"] * first["Total Request Count"]
    )
    rps = requests / seconds
    avg_latency = rt_sum / requests if requests else math.nan
    error_rate = failures / requests if requests else math.nan

    # Per-request-name rates in the stable period.
    per_name = df[df["Name"] != "Aggregated"]
    per_name_source = "stable-period shares from the per-name history rows (--csv-full-history)"
    names_path = Path(f"{prefix}_names_history.csv")
    if per_name.empty and names_path.exists():
        per_name = pd.read_csv(names_path)
        per_name_source = f"stable-period shares from {names_path.name} (written by the locustfile)"
    names: dict[str, dict[str, float]] = {}
    if not per_name.empty:
        # Per-name totals per second. Workers report every few seconds, so each name's share of
        # the requests made in the stable period is taken from these rows and applied to the
        # stable-period rate of the Aggregated row (the two files are sampled independently).
        t0 = first["Timestamp"]
        rows_in = per_name[per_name["Timestamp"] >= t0]
        if rows_in.empty:
            rows_in = per_name
        ta, tb = rows_in["Timestamp"].min(), per_name["Timestamp"].max()
        deltas: dict[str, tuple[float, float]] = {}
        for name, rows in per_name.groupby("Name"):
            rows = rows.sort_values("Timestamp")

            def at(t: float, col: str, rows=rows) -> float:
                before = rows[rows["Timestamp"] <= t]
                return float(before[col].iloc[-1]) if not before.empty else 0.0

            deltas[str(name)] = (
                at(tb, "Total Request Count") - at(ta, "Total Request Count"),
                at(tb, "Total Failure Count") - at(ta, "Total Failure Count"),
            )
        total = sum(d[0] for d in deltas.values()) or 1.0
        names = {n: {"rps": rps * d[0] / total, "fps": rps * d[1] / total} for n, d in deltas.items()}
    elif stats_path.exists():  # share of each name in the whole run, applied to the stable rate
        st = pd.read_csv(stats_path)
        st = st[st["Name"] != "Aggregated"]
        total = float(st["Request Count"].sum()) or 1.0
        for _, r in st.iterrows():
            share = float(r["Request Count"]) / total
            fail_share = float(r["Failure Count"]) / float(r["Request Count"]) if r["Request Count"] else 0.0
            names[str(r["Name"])] = {"rps": rps * share, "fps": rps * share * fail_share}
        per_name_source = "whole-run request shares from _stats.csv applied to the stable-period rate"
    else:
        per_name_source = "none"
        notes.append(f"{stats_path} not found: no per-name breakdown, no events/s")

    ok_single = sum(v["rps"] - v["fps"] for n, v in names.items() if kind_of(n) == "single")
    ok_batch = sum(v["rps"] - v["fps"] for n, v in names.items() if kind_of(n) == "batch")
    limited = sum(v["rps"] for n, v in names.items() if kind_of(n) == "rate_limited")
    events_per_s = ok_single * 1 + ok_batch * batch_size

    # Whole-run percentiles.
    pct = {"all": [None, None, None], "accepted_ingest": [None, None, None]}
    if stats_path.exists():
        st = pd.read_csv(stats_path)
        a = st[st["Name"] == "Aggregated"]
        if not a.empty:
            pct["all"] = [pd.to_numeric(a.iloc[0][c], errors="coerce") for c in ("50%", "95%", "99%")]
            pct["all"] = [None if pd.isna(v) else float(v) for v in pct["all"]]
        ingest = st[st["Name"].map(lambda n: kind_of(str(n)) in ("single", "batch"))].copy()
        if not ingest.empty:
            ingest["Request Count"] = ingest["Request Count"] - ingest["Failure Count"]
            pct["accepted_ingest"] = mixed_percentiles(ingest, [0.50, 0.95, 0.99])

    return {
        "prefix": prefix,
        "warmup_s": warmup_used,
        "stable_seconds": seconds,
        "users": int(stable["User Count"].max()),
        "guide_avg_rps": guide_rps,
        "guide_avg_response_time_ms": guide_latency,
        "rps": rps,
        "avg_response_time_ms": avg_latency,
        "error_rate": error_rate,
        "single_ok_rps": ok_single,
        "batch_ok_rps": ok_batch,
        "rate_limited_rps": limited,
        "batch_size": batch_size,
        "events_per_s": events_per_s,
        "percentiles_ms": {"p50_p95_p99_all": pct["all"], "p50_p95_p99_accepted_ingest": pct["accepted_ingest"]},
        "per_name": names,
        "per_name_source": per_name_source,
        "notes": notes,
    }


def fmt_ms(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0f}"


def print_report(r: dict) -> None:
    print(f"Run: {r['prefix']}  (stable period: {r['stable_seconds']:.0f} s after a {r['warmup_s']:g} s warm-up)")
    for note in r["notes"]:
        print(f"NOTE: {note}")
    print(f"Average RPS: {r['guide_avg_rps']:.2f}")
    print(f"Average Response Time: {r['guide_avg_response_time_ms']:.2f}ms  (guide: mean of the running average)")
    print(f"Stable-period RPS: {r['rps']:.2f}  average response time {r['avg_response_time_ms']:.2f}ms")
    print(f"Error rate: {r['error_rate'] * 100:.2f}%")
    print()
    print(f"{'Name':<52} {'req/s':>9} {'fail/s':>8} {'events/s':>10}")
    for name in sorted(r["per_name"]):
        v = r["per_name"][name]
        k = kind_of(name)
        ev = (v["rps"] - v["fps"]) * (1 if k == "single" else r["batch_size"] if k == "batch" else 0)
        print(f"{name:<52} {v['rps']:>9.2f} {v['fps']:>8.2f} {ev:>10.1f}")
    print(f"(per-name rates: {r['per_name_source']})")
    print()
    print(
        f"Throughput: {r['events_per_s']:.1f} events/s = {r['single_ok_rps']:.2f} single req/s x 1"
        f" + {r['batch_ok_rps']:.2f} batch req/s x {r['batch_size']:g}"
        f"  (refused by rate limit: {r['rate_limited_rps']:.2f} req/s)"
    )
    a = r["percentiles_ms"]["p50_p95_p99_all"]
    b = r["percentiles_ms"]["p50_p95_p99_accepted_ingest"]
    print(f"Whole run P50/P95/P99, all requests: {'/'.join(fmt_ms(x) for x in a)} ms")
    print(f"Whole run P50/P95/P99, accepted ingest (approx.): {'/'.join(fmt_ms(x) for x in b)} ms")
    print()
    print("Table row (users | req/s | events/s | P50/P95/P99 accepted ingest | error rate):")
    print(
        f"| {r['users']} | {r['rps']:.0f} | {r['events_per_s']:.0f} | {'/'.join(fmt_ms(x) for x in b)} ms"
        f" | {r['error_rate'] * 100:.2f}% |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Analyse a Tidemark Locust run (CSV prefix given to --csv).")
    p.add_argument("prefix", help="the --csv prefix, e.g. tests/load/results/baseline")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds excluded at the start (default 60)")
    p.add_argument("--batch-size", type=float, default=20.0, help="events per batch request (default 20)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    result = analyze(args.prefix, args.warmup, args.batch_size)
    if args.json:
        print(json.dumps(result, indent=2, default=float))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
