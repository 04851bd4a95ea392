#!/usr/bin/env bash
# wrun's Flink 2.3.0 comparison harness (KeyedCount and WindowCount; see README.md here).
# Usage: benches/flink/run.sh [all|throughput-hashmap|throughput-rocksdb|savepoint|window] [reps]
# Appends one line of key=value pairs per JVM run to $OUT/results/raw.txt (each JVM's full output goes to
# $OUT/results/logs/); benches/flink/summarize.py $OUT/results/raw.txt prints the medians tables.
# Environment: OUT (where everything is written), VENV (the Flink install, default $OUT/.venv),
# N (events of the throughput runs, default 10000000), JAVA_OPTS.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-${TMPDIR:-/tmp}/flink-peer}   # everything written goes here (this folder may be read-only)
VENV=${VENV:-$OUT/.venv}
WORK=${WORK:-$OUT/.work}
WHAT=${1:-all}
REPS=${2:-3}
N=${N:-10000000}                  # throughput and window runs: events (keys: 100000)
JAVA_OPTS=${JAVA_OPTS:-}          # JVM defaults unless set (here: G1, max heap = 1/4 of RAM)

if ! ls "$VENV"/lib/python3*/site-packages/pyflink/lib/flink-dist-*.jar >/dev/null 2>&1; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q apache-flink==2.3.0
fi
LIB=$(echo "$VENV"/lib/python3*/site-packages/pyflink/lib)
CP="$(ls "$LIB"/flink-dist-*.jar "$LIB"/log4j-*.jar | tr '\n' ':')$WORK/classes"
mkdir -p "$WORK/classes" "$OUT/results/logs"
javac -cp "$CP" -d "$WORK/classes" "$HERE/KeyedCount.java" "$HERE/WindowCount.java"

# one JVM run: label, then KeyedCount args (CLASS=WindowCount for the window job); prints and records "label=.. k=v ..."
run() {
  local label=$1; shift
  rm -rf "$WORK/ckpt"
  /usr/bin/time -f "TIME wall=%e rssKB=%M" java $JAVA_OPTS -cp "$CP" "${CLASS:-KeyedCount}" "$@" >"$WORK/out.txt" 2>&1 || true
  local line="label=$label $(grep -E '^(RESULT|PROBE|SAVEPOINT|TIME) ' "$WORK/out.txt" | cut -d' ' -f2- | tr '\n' ' ')"
  grep -qE '^RESULT ' "$WORK/out.txt" || line="$line FAILED=$(grep -m1 -E 'Exception' "$WORK/out.txt" | tr ' ' '_' | cut -c1-200)"
  echo "$line" | tee -a "$OUT/results/raw.txt"
  cp "$WORK/out.txt" "$OUT/results/logs/$(wc -l < "$OUT/results/raw.txt")-$label.txt"
}

throughput() {  # backend
  for rep in $(seq "$REPS"); do
    for p in 1 2; do
      run "tp-ckpt1000" "$N" 100000 $p 1000 "file://$WORK/ckpt" "$1"
      run "tp-ckptoff"  "$N" 100000 $p 0    "file://$WORK/ckpt" "$1"
    done
  done
}

savepoint() {  # K=1M: N=1M records (p=1 touches every key once), then savepoints, then restores
  for rep in $(seq "$REPS"); do
    for b in hashmap rocksdb; do
      rm -rf "$WORK/sp"
      run "sp" 1000000 1000000 1 0 "file://$WORK/ckpt" $b savepoint "file://$WORK/sp"
      local out; out=$(tail -1 "$OUT/results/raw.txt")
      for f in stop native; do
        local path; path=$(grep -o "${f}Path=[^ ]*" <<<"$out" | cut -d= -f2)
        run "restore-$f" 1000000 1000000 1 0 "file://$WORK/ckpt" $b restore "$path"
      done
    done
  done
}

window() {  # N events, 100k keys, 1 s tumbling event-time windows, 200 ms out-of-orderness, 1 s checkpoints
  for rep in $(seq "$REPS"); do
    for p in 1 2; do
      CLASS=WindowCount run "window-ckpt1000" "$N" 100000 $p 1000 "file://$WORK/ckpt" hashmap 1000000 200 1000
    done
  done
}

case "$WHAT" in
  throughput-hashmap) throughput hashmap ;;
  throughput-rocksdb) throughput rocksdb ;;
  savepoint) savepoint ;;
  window) window ;;
  all) throughput hashmap; savepoint; throughput rocksdb; window ;;
esac
