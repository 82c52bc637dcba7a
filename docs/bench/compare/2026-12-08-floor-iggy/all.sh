#!/bin/bash
set -u
C=/work/main/docs/bench/compare/2026-12-07-write-path
cd /work/runs
# (b) small requests, base vs new, alternating, each with its own generator
for r in 1 2; do for b in base new; do
  BENCH=/work/bins/$b/corelog-bench bash $C/small.sh /work/bins/$b/corelog f-small-$b-$r /work/bench-runs/disk/data --max-in-flight 10 --limits /work/runs/limits.json > /dev/null 2>&1
done; done
# (c) 1 MiB batches, base vs new (generator cores per GB/s)
for r in 1 2; do for b in base new; do
  BENCH=/work/bins/$b/corelog-bench bash $C/big.sh /work/bins/$b/corelog f-big-$b-$r /work/bench-runs/disk/data > /dev/null 2>&1
done; done
# (e) cold catch-up (fill, restart, 2 consumers from earliest)
bash $C/catchup.sh /work/bins/new/corelog /work/bins/new/corelog-bench f-cu-new > /dev/null 2>&1
# (d) overload: max of the setup, then 2x open loop for 60 s
cp /work/runs/limits.json /work/runs/limits-new.json
bash $C/e2e.sh /work/bins/new/corelog /work/bins/new/corelog-bench f-max-new max > /dev/null 2>&1
MAX=$(python3 -c "import json;print(round(json.load(open('/work/runs/f-max-new.json'))['throughput']['mb_per_s'],1))")
echo "max $MAX" > /work/runs/final/max.txt
R20=$(python3 -c "print(round($MAX*0.2,1))")
bash $C/e2e.sh /work/bins/new/corelog /work/bins/new/corelog-bench f-e2e20-new $R20 > /dev/null 2>&1
LINGER=0 bash $C/e2e.sh /work/bins/new/corelog /work/bins/new/corelog-bench f-e2e20l0-new $R20 > /dev/null 2>&1
R2=$(python3 -c "print(round($MAX*2,1))")
bash $C/overload.sh /work/bins/new/corelog /work/bins/new/corelog-bench f-ovl-new $R2 60 > /work/runs/final/ovl.txt 2>&1
echo done > /work/runs/final/done
