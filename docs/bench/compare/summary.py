#!/usr/bin/env python3
"""Summarises docs/bench/compare/run.sh output: per workload, old vs new
(median over rounds) and the ratio new/old."""
import glob, json, os, re, statistics, sys
out = sys.argv[1]
rows = {}
for f in sorted(glob.glob(os.path.join(out, "*-r*-*.json"))):
    m = re.match(r"(old|new)-r(\d+)-(.*)\.json", os.path.basename(f))
    if not m:
        continue
    build, _, name = m.groups()
    d = json.load(open(f))
    vals = {
        "MB/s": d["throughput"]["mb_per_s"],
        "publish p50 ms": d["publish_latency_us"]["p50"] / 1000,
        "publish p99 ms": d["publish_latency_us"]["p99"] / 1000,
        "broker cores": (d.get("cpu") or {}).get("broker_cores"),
        "errors": d.get("errors", 0),
    }
    e2e = d.get("e2e_latency_us")
    if e2e and e2e.get("count"):
        vals["e2e p99 ms"] = e2e["p99"] / 1000
    rows.setdefault(name, {}).setdefault(build, []).append(vals)
print("| workload | metric | old (median) | new (median) | new/old |")
print("|---|---|---:|---:|---:|")
for name, builds in rows.items():
    if "old" not in builds or "new" not in builds:
        continue
    for metric in builds["old"][0]:
        o = [v[metric] for v in builds["old"] if v.get(metric) is not None]
        n = [v[metric] for v in builds["new"] if v.get(metric) is not None]
        if not o or not n:
            continue
        mo, mn = statistics.median(o), statistics.median(n)
        ratio = f"{mn / mo:.2f}" if mo else "-"
        print(f"| {name} | {metric} | {mo:.2f} | {mn:.2f} | {ratio} |")
