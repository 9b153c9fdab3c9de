#!/bin/bash
# Device-memory vs host-memory placement of the user-space driver's data buffers (issue 12), run INSIDE a guest
# of the VM harness that has an ivshmem device (its BAR2 is the peer "device memory") and one QEMU NVMe:
#
#   node dist/src/vm/cli.js run --cpus 1 --ivshmem peer0:16M --hugepages 64 --modules nvme,uio_pci_generic \
#     --nvme serial=HOMI-BENCH,ns=256M:4096 --timeout 900 -- bash bench/p2p-placement.sh uio 5 5
#   (add --iommu and vfio-pci,vfio_iommu_type1 to the modules, and pass vfio, for the VFIO run)
#
# Arguments: mode (uio|vfio), repetitions, seconds per run. 4 KiB random reads, qd 32, 1 s warm-up; host and
# peer runs interleaved (the order alternates each repetition); prints every run and the medians as JSON lines.
set -euo pipefail
MODE=${1:-uio}
REPS=${2:-5}
SECS=${3:-5}
NVME=""
PEER=""
for d in /sys/bus/pci/devices/*; do
  [ "$(cat "$d/class")" = 0x010802 ] && [ -z "$NVME" ] && NVME=$(basename "$d")
  [ "$(cat "$d/vendor")" = 0x1af4 ] && [ "$(cat "$d/device")" = 0x1110 ] && PEER=$(basename "$d")
done
[ -n "$NVME" ] && [ -n "$PEER" ] || { echo "need one NVMe controller and one ivshmem device (nvme=$NVME peer=$PEER)" >&2; exit 2; }
run() {
  taskset -c 0 node dist/src/cli/main.js perf "pci:$NVME?mode=$MODE" --buffers "$1" --rw randread --bs 4k --qd 32 \
    --time "$SECS" --warmup 1 --json | tail -1 |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const r=JSON.parse(s);console.log(JSON.stringify({buffers:r.buffers,iops:Math.round(r.iops),p50:r.latencyUs.percentiles.p50,p99:r.latencyUs.percentiles.p99,errors:r.errors,cpuNsPerIo:Math.round(r.cpuNsPerIo)}))})'
}
OUT=$(mktemp)
for i in $(seq 1 "$REPS"); do
  if [ $((i % 2)) = 1 ]; then order="host peer:$PEER"; else order="peer:$PEER host"; fi
  for b in $order; do
    line=$(run "$b")
    echo "rep $i $b $line"
    echo "$b $line" >> "$OUT"
  done
done
node -e '
const lines = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n");
const by = {};
for (const l of lines) { const i = l.indexOf(" "); const k = l.slice(0, i).startsWith("peer") ? "peer" : "host"; (by[k] ??= []).push(JSON.parse(l.slice(i + 1))); }
const med = (a) => { const s = [...a].sort((x, y) => x - y); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
const sum = {};
for (const [k, rs] of Object.entries(by)) sum[k] = { runs: rs.map((r) => r.iops), iops: med(rs.map((r) => r.iops)), p50: med(rs.map((r) => r.p50)), p99: med(rs.map((r) => r.p99)), cpuNsPerIo: med(rs.map((r) => r.cpuNsPerIo)), errors: rs.reduce((s, r) => s + r.errors, 0), buffers: rs[0].buffers };
sum.ratioPeerOverHost = +(sum.peer.iops / sum.host.iops).toFixed(3);
console.log("MEDIANS " + JSON.stringify(sum));
' "$OUT"
rm -f "$OUT"
