#!/usr/bin/env bash
# The issue-4 measurements on main, in one run (results: docs/benchmarks.md,
# "Current results"). Broker pinned to CPU 0 with --shards 1, generator on
# CPU 1; the 2-shard run puts broker and generator on CPUs 0-1.
# Usage: bash docs/bench/current/run.sh [OUT_DIR]   (from the repository root)
set -u
B=target/release/corelog-bench
S=target/release/corelog
OUT=${1:-/work/bench-current}
DISKDIR=${DISKDIR:-/work/bench-runs/disk}
TMPFS=${TMPFS:-/work/bench-runs/tmpfs}
mkdir -p "$OUT" "$DISKDIR" "$TMPFS"
mountpoint -q "$TMPFS" || mount -t tmpfs -o size=10g tmpfs "$TMPFS"
echo -10 > /proc/self/autogroup 2>/dev/null || true
wait_listen() { for _ in $(seq 1 100); do grep -q "listening on" "$1" && return 0; sleep 0.1; done; return 1; }
PORT=19920
broker() { # $1 data dir, $2 shards, $3 cpus
  PORT=$((PORT + 1)); rm -rf "$1"; mkdir -p "$1"
  taskset -c "$3" $S serve --data-dir "$1" --listen 127.0.0.1:$PORT --shards "$2" 2> "$OUT/broker-$PORT.log" &
  PID=$!; wait_listen "$OUT/broker-$PORT.log"
}
stop() { kill $PID; sleep 1; kill -9 $PID 2>/dev/null; wait $PID 2>/dev/null; }
durable=(--topic-config flush=always --acks leader --message-bytes 1024 --batch-bytes 1048576)

$B limits --data-dir "$DISKDIR" --cpu 1 --write-mib 512 --json "$OUT/limits.json" > "$OUT/limits.txt" 2>&1
DISK=$(python3 -c "import json;print(json.load(open('$OUT/limits.json'))['disk_write_mb_s'])")
RATE=$(python3 -c "print(round($DISK*0.2,1))")
echo "disk_write_mb_s=$DISK rate20=$RATE"

broker "$DISKDIR/data" 1 0
$B produce --bootstrap 127.0.0.1:$PORT --topic durable --create-partitions 4 "${durable[@]}" \
  --linger-ms 5 --producers 1 --duration-s 15 --warmup-s 3 --cpus 1 --broker-pid $PID \
  --limits "$OUT/limits.json" --json "$OUT/durable-max.json" > "$OUT/durable-max.txt" 2>/dev/null
stop

# e2e at 20% of the disk's write bandwidth: name, data dir, partitions, linger
for run in "20pct-p4-linger0-disk $DISKDIR 4 0" "20pct-p4-linger1-disk $DISKDIR 4 1" \
           "20pct-p1-linger0-disk $DISKDIR 1 0" "20pct-p4-linger0-tmpfs $TMPFS 4 0"; do
  set -- $run
  broker "$2/data" 1 0
  $B e2e --bootstrap 127.0.0.1:$PORT --topic lat --create-partitions "$3" "${durable[@]}" \
    --linger-ms "$4" --producers 1 --consumers 1 --rate-mb-s "$RATE" --duration-s 15 --warmup-s 3 \
    --cpus 1 --broker-pid $PID --limits "$OUT/limits.json" --json "$OUT/e2e-$1.json" > "$OUT/e2e-$1.txt" 2>/dev/null
  stop
done

broker "$TMPFS/data" 1 0
$B e2e --bootstrap 127.0.0.1:$PORT --topic lat --create-partitions 4 "${durable[@]}" \
  --linger-ms 0 --producers 1 --consumers 1 --rate-mb-s 5 --duration-s 12 --warmup-s 2 --cpus 1 \
  --broker-pid $PID --json "$OUT/e2e-5mbs-p4-linger0-tmpfs.json" > "$OUT/e2e-5mbs-p4-linger0-tmpfs.txt" 2>/dev/null
stop

for shards in 1 2; do
  cpus=0; gen=1; [ "$shards" = 2 ] && { cpus=0,1; gen=0,1; }
  broker "$TMPFS/data" $shards $cpus
  $B produce --bootstrap 127.0.0.1:$PORT --topic cpu --create-partitions 4 \
    --topic-config flush.interval_ms=1000 --topic-config segment_bytes=67108864 \
    --acks leader --message-bytes 1024 --batch-bytes 1048576 --linger-ms 5 --producers 2 \
    --duration-s 10 --warmup-s 2 --cpus $gen --broker-pid $PID --json "$OUT/cpu4-${shards}shard.json" \
    > "$OUT/cpu4-${shards}shard.txt" 2>/dev/null
  stop
done
rm -rf "$TMPFS/data" "$DISKDIR/data"

$B plot --out "$OUT/latency-20pct.svg" "$OUT"/e2e-20pct-*.json
$B plot --out "$OUT/durable-max.svg" "$OUT/durable-max.json"
$B plot --out "$OUT/cpu-shards.svg" "$OUT/cpu4-1shard.json" "$OUT/cpu4-2shard.json"
echo done
