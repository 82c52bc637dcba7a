#!/bin/bash
# $1 broker $2 bench $3 label $4 rate (MB/s, or "max" for closed-loop produce only)
BIN=$1; B=$2; L=$3; R=$4; D=/work/bench-runs/disk/data
rm -rf $D; mkdir -p $D
taskset -c 0 $BIN serve --data-dir $D --listen 127.0.0.1:19801 --shards 1 2> /work/runs/$L-broker.log & PID=$!
for i in $(seq 100); do grep -q "listening on" /work/runs/$L-broker.log && break; sleep 0.1; done
common="--bootstrap 127.0.0.1:19801 --topic e --create-partitions 4 --topic-config flush=always --acks leader --message-bytes 1024 --batch-bytes 16384 --linger-ms ${LINGER:-1} --producers 2 --duration-s 10 --warmup-s 2 --cpus 1 --broker-pid $PID --quiet --limits /work/runs/limits-new.json --json /work/runs/$L.json"
if [ "$R" = max ]; then $B produce $common > /work/runs/$L.txt 2>&1
else $B e2e $common --consumers 2 --rate-mb-s $R > /work/runs/$L.txt 2>&1; fi
kill $PID; wait $PID
grep -E "^produced|^consumed|^publish|^end-to-end|^e2e|produce requests|CPU \(" /work/runs/$L.txt
