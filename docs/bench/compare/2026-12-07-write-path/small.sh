#!/bin/bash
# $1 broker binary, $2 label, $3 data dir, extra args after
BIN=$1; L=$2; D=$3; shift 3
rm -rf $D; mkdir -p $D
taskset -c 0 $BIN serve --data-dir $D --listen 127.0.0.1:19801 --shards 1 2> /work/runs/$L-broker.log &
PID=$!
for i in $(seq 100); do grep -q "listening on" /work/runs/$L-broker.log && break; sleep 0.1; done
${BENCH:-/work/bins/base/corelog-bench} produce --bootstrap 127.0.0.1:19801 --topic small --create-partitions 2 --topic-config flush=always --acks leader --message-bytes 1024 --batch-bytes ${BATCH:-10400} --linger-ms 0 --partition-in-flight 1 --producers 2 --duration-s 8 --warmup-s 2 --cpus 1 --broker-pid $PID --quiet --json /work/runs/$L.json "$@" > /work/runs/$L.txt 2>&1
kill $PID; wait $PID
grep -E "throughput|publish|efficiency|broker" /work/runs/$L.txt | head
