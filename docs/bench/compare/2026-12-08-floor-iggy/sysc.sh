#!/bin/bash
# $1 build; counts broker syscalls per produce request over the small workload
b=$1; D=/work/bench-runs/disk/data; rm -rf $D; mkdir -p $D
taskset -c 0 /work/bins/$b/corelog serve --data-dir $D --listen 127.0.0.1:19801 --shards 1 2> /work/runs/sc-broker.log & PID=$!
for i in $(seq 100); do grep -q "listening on" /work/runs/sc-broker.log && break; sleep 0.1; done
/work/bins/$b/corelog-bench produce --bootstrap 127.0.0.1:19801 --topic small --create-partitions 2 --topic-config flush=always --acks leader --message-bytes 1024 --batch-bytes 10400 --linger-ms 0 --partition-in-flight 1 --producers 2 --duration-s 8 --warmup-s 2 --cpus 1 --broker-pid $PID --quiet --max-in-flight 10 --json /work/runs/sc-$b.json > /work/runs/sc-$b.txt 2>&1 &
G=$!
sleep 4
perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendmsg,syscalls:sys_enter_io_uring_enter,io_uring:io_uring_submit_req,syscalls:sys_enter_membarrier,sched:sched_switch,syscalls:sys_enter_futex -p $PID -- sleep 3 2> /work/runs/sc-$b.perf; perf record -e io_uring:io_uring_submit_req -p $PID -o /work/runs/sc-$b.rec -- sleep 1 2>/dev/null
wait $G
kill $PID; wait $PID
python3 - "$b" <<'PY'
import json,sys,re
b=sys.argv[1]
j=json.load(open(f'/work/runs/sc-{b}.json'))
reqs=j['throughput'].get('requests_per_s') or 0
eff=j.get('efficiency') or {}
txt=open(f'/work/runs/sc-{b}.perf').read()
print(b, 'req/s', eff.get('produce_requests_per_s'), 'cpu/req', eff.get('broker_cpu_us_per_request'))
rps=eff.get('produce_requests_per_s') or 1
for line in txt.splitlines():
    m=re.match(r'\s*([\d,]+)\s+(\S+)',line)
    if m: print(f"  {m.group(2):45s} {int(m.group(1).replace(',',''))/3/rps:6.2f} per request")
PY
