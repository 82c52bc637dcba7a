#!/bin/bash
# $1 broker $2 bench $3 label $4 rate MB/s $5 duration s: open loop, issue setup, broker RSS sampled
BIN=$1; B=$2; L=$3; R=$4; T=$5; D=/work/bench-runs/disk/data
rm -rf $D; mkdir -p $D
taskset -c 0 $BIN serve --data-dir $D --listen 127.0.0.1:19801 --shards 1 2> /work/runs/$L-broker.log & PID=$!
for i in $(seq 100); do grep -q "listening on" /work/runs/$L-broker.log && break; sleep 0.1; done
( peak=0; while kill -0 $PID 2>/dev/null; do r=$(awk '/VmRSS/{print $2}' /proc/$PID/status 2>/dev/null); [ -n "$r" ] && [ "$r" -gt "$peak" ] && peak=$r; echo "$(date +%s) $r" >> /work/runs/$L-rss.txt; sleep 1; done ) &
$B produce --bootstrap 127.0.0.1:19801 --topic o --create-partitions 4 --topic-config flush=always --acks leader --message-bytes 1024 --batch-bytes 16384 --linger-ms 1 --producers 2 --duration-s $T --warmup-s 2 --cpus 1 --broker-pid $PID --quiet --rate-mb-s $R --json /work/runs/$L.json > /work/runs/$L.txt 2>&1
grep VmHWM /proc/$PID/status
kill $PID; wait $PID
grep -E "^produced|^publish|produce requests|CPU \(|errors" /work/runs/$L.txt
grep -E "request budget" /work/runs/$L-broker.log | tail -1
