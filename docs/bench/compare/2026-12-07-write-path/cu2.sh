#!/bin/bash
# consume only (data left by catchup.sh), with diskstats and broker profile
BIN=$1; B=$2; L=$3; D=/work/bench-runs/disk/data
taskset -c 0 $BIN serve ${CFG:+--config $CFG} --data-dir $D --listen 127.0.0.1:19801 --shards 1 2> /work/runs/$L-broker.log & PID=$!; for i in $(seq 100); do grep -q "listening on" /work/runs/$L-broker.log && break; sleep 0.1; done
a=$(awk '$3=="vda"{print $4, $6}' /proc/diskstats)
( sleep 2; perf record -F 1000 --call-graph dwarf,32768 -p $PID -o /work/runs/$L.perf -- sleep 2 > /dev/null 2>&1 ) &
$B consume --bootstrap 127.0.0.1:19801 --topic cu --consumers 2 --from earliest --duration-s ${DUR:-5} --warmup-s 0 --cpus 1 --broker-pid $PID --quiet $EXTRA > /work/runs/$L.txt 2>&1
b=$(awk '$3=="vda"{print $4, $6}' /proc/diskstats)
wait %2 2>/dev/null; sleep 1
kill $PID; wait $PID
echo "reads/sectors before $a after $b"
grep -E "consumed|CPU" /work/runs/$L.txt
