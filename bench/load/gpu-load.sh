#!/bin/bash
# homi load against PyTorch on the lent GPU machine: writes the four datasets on the largest disk that is not
# tmpfs, then runs load-compare on each with --to gpu --cold; results (tables, JSON, logs) go to $OUT.
#
#   bash bench/load/gpu-load.sh            (from the repository root; dist/ built and carried)
#
# $OUT gets gpu-load.log (the machine, each set's table, errors) and load-<set>.json per dataset: five files.
#
# Sized to finish in about 6 minutes on a virtio disk. Every size is an environment variable:
#   LOAD_SETS="small medium large safetensors"  which datasets, in this order
#   SMALL_FILES=4096  SMALL_BYTES=110KiB        many small files (payload per file, +-20%)
#   MEDIUM_FILES=64   MEDIUM_BYTES=7.5MiB       medium files (7-8 MiB)
#   LARGE_FILES=2     LARGE_BYTES=1GiB          a few large files
#   ST_FILES=4        ST_BYTES=256MiB           safetensors shards
#   LOAD_PATHS=io_uring,posix  LOAD_TO=gpu  LOAD_ROUNDS=3  LOAD_BASELINES=(all)  LOAD_VERIFY=0
#   LOAD_DIR=<dir>    where datasets go (default: <largest non-tmpfs filesystem>/homi-load-data)
#   LOAD_TIMEOUT=300  seconds for one dataset's load-compare; RUN_TIMEOUT=120 seconds for one contender's run
#   HOMI_CMD=<cmd>    what runs `homi` (default: node dist/src/cli/main.js; tests pass a fake)
#   HOMI_ARGS="--no-progress"  more arguments for every homi load (e.g. "--no-progress --qd 128")
#   PYTHON=python3    NODE=<node binary> (default: node on PATH, else .carry/node.xz unpacked to /tmp/nodebin)
#   LOAD_HOMID=1      also serve each dataset through homid (an ext4 image of it, made with mkfs.ext4 -d, on an
#                     embedded controller backed by the image file) and add the driver and gpu paths to the
#                     comparison: their bytes come from that image file (through the page cache), not from
#                     the disk the other contenders read, so their rows measure HOMI's queues, not the disk
#   RAW_DISK=1        measure what raw io_uring O_DIRECT reads from the disk: homi perf on the dataset's
#                     largest file, sequential 1 MiB reads at qd 16 (the "90% of raw" goal)
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/out/load}
mkdir -p "$OUT"
LOG=$OUT/gpu-load.log
: > "$LOG"
work=$(mktemp -d)
say() { echo "gpu-load: $*" | tee -a "$LOG"; }
t_start=$(date +%s)

# --- node (the GPU machine has none: a binary travels in .carry) ---
if [ -z "${NODE:-}" ]; then
  if command -v node >/dev/null 2>&1; then NODE=$(command -v node)
  elif [ -x /tmp/nodebin/node ]; then NODE=/tmp/nodebin/node
  elif [ -f .carry/node.xz ]; then mkdir -p /tmp/nodebin && xz -dc .carry/node.xz > /tmp/nodebin/node && chmod +x /tmp/nodebin/node && NODE=/tmp/nodebin/node
  else say "no node: put one on PATH, set NODE, or carry .carry/node.xz"; exit 1
  fi
fi
if [ ! -e node_modules/zod ] && [ -d .carry/node_modules ]; then rm -f node_modules; ln -s .carry/node_modules node_modules; fi
[ -f dist/src/bench/load-compare.js ] || { say "dist/ is not built (npx tsc -p tsconfig.json, and carry dist)"; exit 1; }
PYTHON=${PYTHON:-python3}

# --- the machine, for the record ---
{
  echo "date: $(date -u +%FT%TZ)"; echo "node: $($NODE --version)"; uname -a
  nvidia-smi -L 2>&1 | head -4
  $PYTHON -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tail -1
  $PYTHON -c 'import safetensors, numpy; print("safetensors", safetensors.__version__, "numpy", numpy.__version__)' 2>&1 | tail -1
  [ -e /proc/driver/nvidia-fs ] && echo "nvidia-fs: present" || echo "nvidia-fs: absent (cuFile runs in compatibility mode)"
  nproc; free -g | head -2; df -hT -x tmpfs -x devtmpfs -x overlay 2>/dev/null
} 2>&1 | tee -a "$LOG"

# --- where the datasets go: the non-tmpfs filesystem with the most room, among the usual places ---
if [ -z "${LOAD_DIR:-}" ]; then
  best=""; best_avail=0
  for d in /tmp /var/tmp /mnt /data /scratch "$HOME" "$PWD"; do
    [ -d "$d" ] && [ -w "$d" ] || continue
    line=$(df -P -T "$d" 2>/dev/null | tail -1) || continue
    type=$(echo "$line" | awk '{print $2}'); avail=$(echo "$line" | awk '{print $5}')
    case "$type" in tmpfs|ramfs|devtmpfs) continue ;; esac
    if [ "${avail:-0}" -gt "$best_avail" ]; then best=$d; best_avail=$avail; fi
  done
  [ -n "$best" ] || { say "no writable non-tmpfs filesystem found (set LOAD_DIR)"; exit 1; }
  LOAD_DIR=$best/homi-load-data
fi
mkdir -p "$LOAD_DIR"
say "datasets in $LOAD_DIR ($(df -P -T "$LOAD_DIR" | tail -1 | awk '{print $2", "int($5/1048576)" GiB free"}'))"

LOAD_SETS=${LOAD_SETS:-small medium large safetensors}
LOAD_PATHS=${LOAD_PATHS:-io_uring,posix}
LOAD_TO=${LOAD_TO:-gpu}
LOAD_ROUNDS=${LOAD_ROUNDS:-3}
LOAD_TIMEOUT=${LOAD_TIMEOUT:-300}
RUN_TIMEOUT=${RUN_TIMEOUT:-120}
extra=()
[ -n "${HOMI_CMD:-}" ] && extra+=(--homi-cmd "$HOMI_CMD")
extra+=("--homi-args=${HOMI_ARGS:---no-progress}")  # "=": a value that starts with -- must be attached
[ -n "${LOAD_BASELINES:-}" ] && extra+=(--baselines "$LOAD_BASELINES")
[ "${LOAD_VERIFY:-0}" = 1 ] && extra+=(--verify)

for set in $LOAD_SETS; do
  case "$set" in
    small) files=${SMALL_FILES:-4096}; bytes=${SMALL_BYTES:-110KiB} ;;
    medium) files=${MEDIUM_FILES:-64}; bytes=${MEDIUM_BYTES:-7.5MiB} ;;
    large) files=${LARGE_FILES:-2}; bytes=${LARGE_BYTES:-1GiB} ;;
    safetensors) files=${ST_FILES:-4}; bytes=${ST_BYTES:-256MiB} ;;
    *) say "unknown dataset $set"; continue ;;
  esac
  dir=$LOAD_DIR/$set
  t0=$(date +%s)
  $NODE dist/src/bench/load-gen.js "$set" "$dir" --files "$files" --bytes "$bytes" --quiet 2>&1 | tee -a "$LOG"
  [ "${PIPESTATUS[0]}" = 0 ] || { say "$set: generation failed"; continue; }
  say "$set: generated in $(( $(date +%s) - t0 )) s"
  paths=$LOAD_PATHS
  setextra=()
  homid_pid=""
  if [ "${RAW_DISK:-1}" = 1 ]; then
    big=$(ls -S "$dir"/*.safetensors | head -1)
    if [ "$(stat -c %s "$big")" -lt $((16 * 1048576)) ]; then say "$set: no raw figure (its largest file is under 16 MiB)"; else
    raw=$(timeout 60 $NODE dist/src/cli/main.js perf "$big" --backend io_uring --direct --rw read --bs 1MiB --qd 16 --time 3 --json 2>/dev/null | $NODE -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{try{const j=JSON.parse(s);console.log(j.bandwidthMiBps.toFixed(1))}catch{console.log('failed')}})")
    say "$set: raw io_uring O_DIRECT sequential 1 MiB reads at qd 16 on $(basename "$big") ($(stat -c %s "$big") bytes): $raw MiB/s"
    fi
  fi
  if [ "${LOAD_HOMID:-1}" = 1 ] && command -v mkfs.ext4 >/dev/null; then
    img=$LOAD_DIR/$set.ext4
    mib=$(( $(du -sm "$dir" | cut -f1) * 12 / 10 + 64 ))
    if mkfs.ext4 -q -F -d "$dir" -b 4096 "$img" "${mib}M" 2>>"$LOG"; then
      sock=$work/homid-$set.sock
      cat > "$work/homid-$set.toml" <<TOML
socket = "$sock"
log_level = "warn"
[[device]]
name = "img"
uri = "emu://$img?size=${mib}MiB&queues=16"
extents = "decoder:ext4"
extent_root = "$dir"
[raw]
users = [0]
[class.default]
queue_pairs = 16
per_client = 16
gpu_queues = 8
TOML
      $NODE dist/src/cli/homid.js --config "$work/homid-$set.toml" >> "$work/homid-$set.log" 2>&1 &
      homid_pid=$!
      for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
      if [ -S "$sock" ]; then
        paths=$paths,driver
        if command -v nvidia-smi >/dev/null 2>&1; then paths=$paths,gpu; fi
        setextra+=("--homi-args=${HOMI_ARGS:---no-progress} --socket $sock --device img")
        say "$set: homid serves an ext4 image of it ($mib MiB, emu:// over the image file) for the paths through homid ($paths)"
      else
        say "$set: homid did not start: $(tail -3 "$work/homid-$set.log")"
      fi
    else
      say "$set: mkfs.ext4 -d failed: no driver/gpu rows"
    fi
  fi
  t0=$(date +%s)
  timeout "$LOAD_TIMEOUT" $NODE dist/src/bench/load-compare.js --dataset "$dir" --paths "$paths" --to "$LOAD_TO" --cold \
    --rounds "$LOAD_ROUNDS" --python "$PYTHON" --timeout "$RUN_TIMEOUT" --out "$OUT/load-$set.json" ${extra[@]+"${extra[@]}"} ${setextra[@]+"${setextra[@]}"} \
    > "$work/$set.txt" 2> "$work/$set.log"
  rc=$?
  if [ -n "$homid_pid" ]; then kill "$homid_pid" 2>/dev/null; wait "$homid_pid" 2>/dev/null; rm -f "$LOAD_DIR/$set.ext4"; fi
  say "$set: load-compare rc=$rc in $(( $(date +%s) - t0 )) s"
  tee -a "$LOG" < "$work/$set.txt"
  # each round's lines, for the record (errors included)
  sed 's/^/  | /' "$work/$set.log" >> "$LOG"
  [ $rc = 0 ] || tail -5 "$work/$set.log"
  # free the disk for the next set (the .pt twins too)
  [ "${LOAD_KEEP:-0}" = 1 ] || rm -rf "$dir" "$dir.pt-twins"
done
say "done in $(( $(date +%s) - t_start )) s; results in $OUT"
