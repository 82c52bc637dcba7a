#!/usr/bin/env bash
# Producer throughput and CPU (broker and load generator) per codec, on
# JSON-like values and on random values, in one run against one broker.
# Usage: bash docs/bench/compression/run.sh BROKER BENCH [OUT_DIR]
#   BROKER / BENCH: release `corelog` and `corelog-bench` binaries
# Broker on CPU 0 (--shards 1), generator on CPU 1; data dir on disk;
# flush.interval_ms=1000 (not fsync-bound: the codec's cost is what moves).
set -u
BROKER=$1 B=$2
OUT=${3:-/work/bench-compression}
DATA=${DATA:-/work/bench-runs/disk/compression}
mkdir -p "$OUT"; rm -rf "$DATA"; mkdir -p "$DATA"
PORT=19990
taskset -c 0 "$BROKER" serve --data-dir "$DATA" --listen 127.0.0.1:$PORT --shards 1 2> "$OUT/broker.log" &
PID=$!
for _ in $(seq 1 200); do grep -q "listening on" "$OUT/broker.log" && break; sleep 0.1; done
for v in json random; do
  for c in none gzip snappy lz4 zstd; do
    $B produce --bootstrap 127.0.0.1:$PORT --topic c-$c-$v --create-partitions 2 \
      --topic-config flush.interval_ms=1000 --acks leader --message-bytes 1024 \
      --batch-bytes 262144 --linger-ms 5 --producers 1 --values $v --compression $c \
      --duration-s 6 --warmup-s 1 --cpus 1 --broker-pid $PID \
      --json "$OUT/$c-$v.json" > "$OUT/$c-$v.txt" 2>&1
  done
done
kill $PID; wait $PID 2>/dev/null
rm -rf "$DATA"
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
print("| values | codec | MB/s (uncompressed) | broker cores | generator cores | publish p99 ms |")
print("|---|---|---:|---:|---:|---:|")
for v in ("json", "random"):
    for c in ("none", "gzip", "snappy", "lz4", "zstd"):
        p = os.path.join(out, f"{c}-{v}.json")
        if not os.path.exists(p):
            print(f"| {v} | {c} | failed | | | |"); continue
        d = json.load(open(p)); cpu = d.get("cpu") or {}
        f = lambda x: "-" if x is None else f"{x:.2f}"
        print(f"| {v} | {c} | {d['throughput']['mb_per_s']:.1f} | {f(cpu.get('broker_cores'))} | "
              f"{f(cpu.get('bench_cores'))} | {d['publish_latency_us']['p99']/1000:.2f} |")
PY
