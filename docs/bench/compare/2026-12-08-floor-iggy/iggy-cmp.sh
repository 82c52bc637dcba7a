#!/bin/bash
# Side by side, back to back: Apache Iggy vs Corelog, durable (fsync/O_DSYNC before ack),
# 2 producers x 1 partition each, 1 KiB messages, closed loop, one batch in flight per producer;
# then catch-up consume of what was written by 2 consumers (same server, not restarted).
# $1 = messages per batch (1000|100|10), $2 = Iggy batches per producer, $3 = corelog bin dir
B=$1; N=$2; CB=${3:-/work/bins/new}; PORT=18090; OUT=/work/runs/iggy
I=/work/iggy/target/release
# ---- Iggy
rm -rf /work/iggy-data && mkdir -p /work/iggy-data
( cd /work/iggy && IGGY_CONFIG_PATH=/work/iggy/core/server/config.toml IGGY_SYSTEM_PATH=/work/iggy-data \
  IGGY_TCP_ADDRESS=127.0.0.1:$PORT IGGY_HTTP_ENABLED=false IGGY_QUIC_ENABLED=false IGGY_WEBSOCKET_ENABLED=false \
  IGGY_SYSTEM_SHARDING_CPU_ALLOCATION=1 IGGY_SYSTEM_LOGGING_FILE_ENABLED=false \
  taskset -c 0 $I/iggy-server --fresh --with-default-root-credentials > $OUT/iggy-server-$B.log 2>&1 ) &
sleep 0.5; IPID=$(pgrep -f "iggy-server --fresh" | head -1)
for i in $(seq 100); do grep -q "accepting on" $OUT/iggy-server-$B.log && break; sleep 0.1; done
CLI="taskset -c 1 $I/iggy --tcp-server-address 127.0.0.1:$PORT -u iggy -p iggy"
for s in 1 2; do $CLI stream create bench-stream-$s >/dev/null 2>&1; $CLI topic create bench-stream-$s topic-1 1 none --set enforce_fsync=true --set messages_required_to_save=1 >/dev/null 2>&1; done
t0=$(awk '{print $14+$15}' /proc/$IPID/stat)
s0=$(date +%s.%N)
taskset -c 1 $I/iggy-bench --reuse-streams -m 1024 -P $B -b $N pinned-producer -p 2 -s 2 tcp --server-address 127.0.0.1:$PORT --nodelay output -o $OUT/res --identifier cmp --remark p$B > $OUT/iggy-prod-$B.txt 2>&1
s1=$(date +%s.%N); t1=$(awk '{print $14+$15}' /proc/$IPID/stat)
echo "iggy server cores during produce: $(python3 -c "print(round(($t1-$t0)/100/($s1-$s0),2))")" >> $OUT/iggy-prod-$B.txt
taskset -c 1 $I/iggy-bench -m 1024 -P $B -b $N pinned-consumer -c 2 -s 2 tcp --server-address 127.0.0.1:$PORT --nodelay output -o $OUT/res --identifier cmp --remark c$B > $OUT/iggy-cons-$B.txt 2>&1
kill -INT $IPID; wait 2>/dev/null; sleep 1; rm -rf /work/iggy-data
# ---- Corelog
D=/work/bench-runs/disk/data; rm -rf $D; mkdir -p $D
taskset -c 0 $CB/corelog serve --data-dir $D --listen 127.0.0.1:19801 --shards 1 2> $OUT/corelog-$B.log & CPID=$!
for i in $(seq 100); do grep -q "listening on" $OUT/corelog-$B.log && break; sleep 0.1; done
BB=$(( B * 1040 + 100 ))
$CB/corelog-bench produce --bootstrap 127.0.0.1:19801 --topic cmp --create-partitions 2 --topic-config flush=always --acks leader \
  --keys pinned --message-bytes 1024 --batch-bytes $BB --linger-ms 0 --partition-in-flight 1 --max-in-flight $B --producers 2 \
  --duration-s 8 --warmup-s 2 --cpus 1 --broker-pid $CPID --quiet --json $OUT/corelog-prod-$B.json > $OUT/corelog-prod-$B.txt 2>&1
$CB/corelog-bench consume --bootstrap 127.0.0.1:19801 --topic cmp --consumers 2 --from earliest --duration-s 3 --warmup-s 0 --cpus 1 \
  --broker-pid $CPID --quiet --json $OUT/corelog-cons-$B.json > $OUT/corelog-cons-$B.txt 2>&1
kill $CPID; wait $CPID 2>/dev/null
echo "=== B=$B"; grep -iE "Total throughput|p50|p99|Producers Results|Consumers Results" $OUT/iggy-prod-$B.txt | head -8
grep "server cores" $OUT/iggy-prod-$B.txt
grep -iE "Total throughput|Consumers Results" $OUT/iggy-cons-$B.txt | head -4
grep -E "^produced|^publish|CPU|requests:" $OUT/corelog-prod-$B.txt; grep -E "^consumed|CPU" $OUT/corelog-cons-$B.txt
