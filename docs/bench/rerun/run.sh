#!/usr/bin/env bash
# Re-measurement after the timer / group-size / cache changes (lead, session 2).
set -u
cd /work/main
B=target/release/corelog-bench
S=target/release/corelog
OUT=/work/bench2
mkdir -p /work/bench-runs/disk /work/bench-runs/tmpfs
mountpoint -q /work/bench-runs/tmpfs || mount -t tmpfs -o size=10g tmpfs /work/bench-runs/tmpfs
echo -10 > /proc/self/autogroup || true
wait_listen() { for _ in $(seq 1 100); do grep -q "listening on" "$1" && return 0; sleep 0.1; done; return 1; }
broker() { # $1 dir $2 port $3 shards $4 cpus
  rm -rf "$1"; mkdir -p "$1"
  taskset -c "$4" $S serve --data-dir "$1" --listen 127.0.0.1:$2 --shards $3 2> $OUT/broker-$2.log &
  PID=$!; wait_listen $OUT/broker-$2.log
}
stop() { kill $PID; wait $PID 2>/dev/null; }

$B limits --data-dir /work/bench-runs/disk --cpu 1 --write-mib 512 --json $OUT/limits.json > $OUT/limits.txt 2>&1
DISK=$(python3 -c "import json;print(json.load(open('$OUT/limits.json'))['disk_write_mb_s'])")
RATE=$(python3 -c "print(round($DISK*0.2,1))")
echo "disk_write_mb_s=$DISK rate20=$RATE"

broker /work/bench-runs/disk/data 19901 1 0
$B produce --bootstrap 127.0.0.1:19901 --topic durable --create-partitions 4 \
  --topic-config flush=always --acks leader --message-bytes 1024 --batch-bytes 1048576 \
  --linger-ms 5 --producers 1 --duration-s 15 --warmup-s 3 --cpus 1 --broker-pid $PID \
  --limits $OUT/limits.json --json $OUT/durable-max.json > $OUT/durable-max.txt 2>/dev/null
stop

broker /work/bench-runs/disk/data 19902 1 0
$B e2e --bootstrap 127.0.0.1:19902 --topic lat --create-partitions 4 --topic-config flush=always \
  --acks leader --message-bytes 1024 --batch-bytes 1048576 --linger-ms 1 --producers 1 \
  --consumers 1 --rate-mb-s $RATE --duration-s 15 --warmup-s 3 --cpus 1 --broker-pid $PID \
  --limits $OUT/limits.json --json $OUT/e2e-20pct-linger1-disk.json > $OUT/e2e-20pct-linger1-disk.txt 2>/dev/null
stop

broker /work/bench-runs/tmpfs/data 19903 1 0
$B e2e --bootstrap 127.0.0.1:19903 --topic lat --create-partitions 4 --topic-config flush=always \
  --acks leader --message-bytes 1024 --batch-bytes 1048576 --linger-ms 0 --producers 1 \
  --consumers 1 --rate-mb-s 5 --duration-s 12 --warmup-s 2 --cpus 1 --broker-pid $PID \
  --json $OUT/e2e-5mbs-linger0-tmpfs.json > $OUT/e2e-5mbs-linger0-tmpfs.txt 2>/dev/null
stop

for shards in 1 2; do
  cpus=0; gen=1; [ $shards = 2 ] && { cpus=0,1; gen=0,1; }
  broker /work/bench-runs/tmpfs/data 1991$shards $shards $cpus
  $B produce --bootstrap 127.0.0.1:1991$shards --topic cpu --create-partitions 4 \
    --topic-config flush.interval_ms=1000 --topic-config segment_bytes=67108864 \
    --acks leader --message-bytes 1024 --batch-bytes 1048576 --linger-ms 5 --producers 2 \
    --duration-s 10 --warmup-s 2 --cpus $gen --broker-pid $PID --json $OUT/cpu4-${shards}shard.json > $OUT/cpu4-${shards}shard.txt 2>/dev/null
  stop
done
rm -rf /work/bench-runs/tmpfs/data /work/bench-runs/disk/data
echo done
