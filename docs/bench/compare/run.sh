#!/usr/bin/env bash
# Side-by-side: the workloads of docs/bench/current/run.sh against two broker
# builds in one run, alternating OLD and NEW per workload (same load
# generator binary for both), so a change can be judged by ratios measured
# on the same noisy machine at the same time.
# Usage: bash docs/bench/compare/run.sh OLD_BROKER NEW_BROKER BENCH [OUT_DIR] [ROUNDS]
#   OLD_BROKER / NEW_BROKER: paths to two `corelog` release binaries
#   BENCH: path to a `corelog-bench` release binary
#   env ORDER="new old" reverses the order per round; ALTERNATE=1 reverses it
#     every other round; ONLY=durable runs only durable-max, ONLY=e2e-tmpfs
#     only the 5 MB/s tmpfs latency run; FIRST_ROUND=N numbers rounds from N
#     (to add rounds to OUT); OLD_ARGS / NEW_ARGS: extra generator flags per
#     build (e.g. NEW_ARGS="--partition-in-flight 8")
#   durable-max also records the disk's own counters over the run (writes,
#     average write size, flushes, ms busy; /proc/diskstats of DISK_DEV,
#     default vda) in OUT/BUILD-rN-durable-max.diskstats, so two builds' I/O
#     patterns can be compared, not only their throughput
#   OLD_BENCH (env, optional): a second corelog-bench for OLD, when the two
#     builds do not share a batch format (each build is then driven by its
#     own generator, and the comparison includes the client)
# Broker pinned to CPU 0 with --shards 1, generator on CPU 1 (as run.sh).
set -u
OLD=$1 NEW=$2 B=$3 NEW_BENCH=$3
OUT=${4:-/work/bench-compare}
ROUNDS=${5:-2}
DISKDIR=${DISKDIR:-/work/bench-runs/disk}
TMPFS=${TMPFS:-/work/bench-runs/tmpfs}
mkdir -p "$OUT" "$DISKDIR" "$TMPFS"
mountpoint -q "$TMPFS" || mount -t tmpfs -o size=10g tmpfs "$TMPFS"
wait_listen() { for _ in $(seq 1 200); do grep -q "listening on" "$1" && return 0; sleep 0.1; done; return 1; }
PORT=19960
broker() { # $1 binary, $2 data dir
  PORT=$((PORT + 1)); rm -rf "$2"; mkdir -p "$2"
  taskset -c 0 "$1" serve --data-dir "$2" --listen 127.0.0.1:$PORT --shards 1 2> "$OUT/broker-$PORT.log" &
  PID=$!; wait_listen "$OUT/broker-$PORT.log"
}
stop() { kill $PID; for _ in $(seq 1 50); do kill -0 $PID 2>/dev/null || break; sleep 0.1; done; kill -9 $PID 2>/dev/null; wait $PID 2>/dev/null; }
durable=(--topic-config flush=always --acks leader --message-bytes 1024 --batch-bytes 1048576)
DISK_DEV=${DISK_DEV:-vda}
# reads, writes, sectors written, ms writing, ms busy, flushes, ms flushing
diskstats() { awk -v d="$DISK_DEV" '$3==d{print $4, $8, $10, $11, $13, $19, $20}' /proc/diskstats; }
diskstats_delta() { # $1 before, $2 after, $3 MB/s
  python3 -c "
import sys
a=list(map(int,'$1'.split())); b=list(map(int,'$2'.split()))
if len(a) < 7 or len(b) < 7: sys.exit()
rd,wr,sec,wms,busy,fl,flms=[y-x for x,y in zip(a,b)]
print(f'writes={wr} avg_write_kib={sec*512/1024/max(wr,1):.0f} written_gb={sec*512/1e9:.2f} flushes={fl} flushes_per_gb={fl/max(sec*512/1e9,1e-9):.0f} write_ms_avg={wms/max(wr,1):.2f} flush_ms_avg={flms/max(fl,1):.2f} busy_ms={busy}')"
}

$B limits --data-dir "$DISKDIR" --cpu 1 --write-mib 512 --json "$OUT/limits.json" > "$OUT/limits.txt" 2>&1
DISK=$(python3 -c "import json;print(json.load(open('$OUT/limits.json'))['disk_write_mb_s'])")
RATE=$(python3 -c "print(round($DISK*0.2,1))")
echo "disk_write_mb_s=$DISK rate20=$RATE"

ORDER=${ORDER:-old new}
ONLY=${ONLY:-all}
for round in $(seq "${FIRST_ROUND:-1}" $(( ${FIRST_ROUND:-1} + ROUNDS - 1 ))); do
  builds=$ORDER
  if [ "${ALTERNATE:-0}" = 1 ] && [ $((round % 2)) = 0 ]; then
    builds=$(echo $ORDER | awk '{print $2, $1}')
  fi
  for build in $builds; do
    bin=$OLD; [ $build = new ] && bin=$NEW
    B=$NEW_BENCH; [ $build = old ] && B=${OLD_BENCH:-$NEW_BENCH}
    extra=${NEW_ARGS:-}; [ $build = old ] && extra=${OLD_ARGS:-}
    if [ "$ONLY" = all ] || [ "$ONLY" = durable ]; then
      broker "$bin" "$DISKDIR/data"
      before=$(diskstats)
      $B produce --bootstrap 127.0.0.1:$PORT --topic durable --create-partitions 4 "${durable[@]}" \
        --linger-ms 5 --producers 1 --duration-s 10 --warmup-s 2 --cpus 1 --broker-pid $PID $extra \
        --limits "$OUT/limits.json" --json "$OUT/$build-r$round-durable-max.json" > "$OUT/$build-r$round-durable-max.txt" 2>/dev/null
      diskstats_delta "$before" "$(diskstats)" > "$OUT/$build-r$round-durable-max.diskstats"
      stop
    fi
    [ "$ONLY" = durable ] && continue
    for run in "20pct-p4-linger0-disk $DISKDIR $RATE" "5mbs-p4-linger0-tmpfs $TMPFS 5"; do
      set -- $run
      [ "$ONLY" = e2e-tmpfs ] && [ "$1" != 5mbs-p4-linger0-tmpfs ] && continue
      broker "$bin" "$2/data"
      $B e2e --bootstrap 127.0.0.1:$PORT --topic lat --create-partitions 4 "${durable[@]}" \
        --linger-ms 0 --producers 1 --consumers 1 --rate-mb-s "$3" --duration-s 10 --warmup-s 2 \
        --cpus 1 --broker-pid $PID $extra --limits "$OUT/limits.json" --json "$OUT/$build-r$round-e2e-$1.json" > "$OUT/$build-r$round-e2e-$1.txt" 2>/dev/null
      stop
    done
    [ "$ONLY" = e2e-tmpfs ] && continue
    broker "$bin" "$TMPFS/data"
    $B produce --bootstrap 127.0.0.1:$PORT --topic cpu --create-partitions 4 $extra \
      --topic-config flush.interval_ms=1000 --topic-config segment_bytes=67108864 \
      --acks leader --message-bytes 1024 --batch-bytes 1048576 --linger-ms 5 --producers 2 \
      --duration-s 8 --warmup-s 2 --cpus 1 --broker-pid $PID --json "$OUT/$build-r$round-cpu4-1shard.json" \
      > "$OUT/$build-r$round-cpu4-1shard.txt" 2>/dev/null
    stop
  done
done
rm -rf "$TMPFS/data" "$DISKDIR/data"
python3 "$(dirname "$0")/summary.py" "$OUT" | tee "$OUT/summary.md"
