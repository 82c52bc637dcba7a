#!/bin/bash
# fill with 1 MB batches, then profile the broker while 2 consumers catch up (no restart)
CB=${CB:-/work/bins/new}; D=/work/bench-runs/disk/data; rm -rf $D; mkdir -p $D; L=${L:-cprof}
taskset -c 0 $CB/corelog serve --data-dir $D --listen 127.0.0.1:19801 --shards 1 2> /work/runs/$L-broker.log & CPID=$!
for i in $(seq 100); do grep -q "listening on" /work/runs/$L-broker.log && break; sleep 0.1; done
$CB/corelog-bench produce --bootstrap 127.0.0.1:19801 --topic cmp --create-partitions 2 --topic-config flush=always --keys pinned --message-bytes 1024 --batch-bytes 1040100 --linger-ms 0 --partition-in-flight 1 --max-in-flight 1000 --producers 2 --duration-s 5 --warmup-s 0 --cpus 1 --quiet > /work/runs/$L-fill.txt 2>&1
( sleep 0.5; perf record -F 2000 -g -p $CPID -o /work/runs/$L.perf -- sleep 2 > /dev/null 2>&1 ) &
$CB/corelog-bench consume --bootstrap 127.0.0.1:19801 --topic cmp --consumers 2 --from earliest --duration-s 3 --warmup-s 0 --cpus 1 --broker-pid $CPID --quiet ${EXTRA} > /work/runs/$L.txt 2>&1
wait %2 2>/dev/null
kill $CPID; wait $CPID 2>/dev/null
grep -E "^produced" /work/runs/$L-fill.txt; grep -E "^consumed|CPU" /work/runs/$L.txt
