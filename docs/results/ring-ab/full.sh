#!/bin/bash
# alternating rounds of the two required benchmarks, base and ring (order flipped every round)
out=${OUT:-full.jsonl}
for i in $(seq 1 ${1:-8}); do
  order="base ring"; [ $((i % 2)) = 0 ] && order="ring base"
  for v in $order; do
    d=${RING:-/work/wt-ring}; [ $v = base ] && d=${BASE:-/work/wt-ring-base}
    l=$(cut -d' ' -f1 /proc/loadavg)
    r=$(cd $d && node dist/src/cli/main.js perf 'emu://?size=256MiB&null=1' --rw randread --bs 4096 --qd 128 --time 3 --json 2>/dev/null)
    echo "{\"v\":\"$v\",\"i\":$i,\"kind\":\"perf\",\"load\":\"$l\",\"r\":$r}" >> $out
  done
  for v in $order; do
    d=${RING:-/work/wt-ring}; [ $v = base ] && d=${BASE:-/work/wt-ring-base}
    l=$(cut -d' ' -f1 /proc/loadavg)
    r=$(cd $d && node dist/src/bench/homid-bench.js --time 3 --runs 3 --qd 32 --only rawx1,mediatedx1 2>/dev/null | tail -1)
    echo "{\"v\":\"$v\",\"i\":$i,\"kind\":\"homid\",\"load\":\"$l\",\"r\":$r}" >> $out
  done
done
