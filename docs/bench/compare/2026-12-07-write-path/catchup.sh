#!/bin/bash
# $1 broker, $2 bench, $3 label: fill 2 partitions, restart (cold cache), consume from earliest with 2 consumers
BIN=$1; B=$2; L=$3; D=/work/bench-runs/disk/data
rm -rf $D; mkdir -p $D
start() { taskset -c 0 $BIN serve --data-dir $D --listen 127.0.0.1:19801 --shards 1 2> /work/runs/$L-broker$1.log & PID=$!; for i in $(seq 100); do grep -q "listening on" /work/runs/$L-broker$1.log && break; sleep 0.1; done; }
start 1
$B produce --bootstrap 127.0.0.1:19801 --topic cu --create-partitions 2 --message-bytes 1024 --batch-bytes 1048576 --linger-ms 5 --producers 1 --duration-s 8 --warmup-s 0 --cpus 1 --quiet --json /work/runs/$L-fill.json > /work/runs/$L-fill.txt 2>&1
kill $PID; wait $PID
start 2
$B consume --bootstrap 127.0.0.1:19801 --topic cu --consumers 2 --from earliest --duration-s 6 --warmup-s 0 --cpus 1 --broker-pid $PID --quiet --json /work/runs/$L.json > /work/runs/$L.txt 2>&1
kill $PID; wait $PID
grep -E "produced" /work/runs/$L-fill.txt; grep -E "consumed|CPU" /work/runs/$L.txt
