#!/usr/bin/env python3
"""Medians of $OUT/results/raw.txt (written by benches/flink/run.sh) as markdown tables.
Usage: benches/flink/summarize.py [raw.txt]   (default: $OUT/results/raw.txt, OUT as in run.sh)"""
import statistics, sys, collections, os

rows = [dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        for line in open(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.environ.get("OUT") or os.path.join(os.environ.get("TMPDIR") or "/tmp", "flink-peer"), "results/raw.txt"))]
groups = collections.defaultdict(list)
for r in rows:
    groups[(r["label"], r.get("backend", "?"), r.get("p", "?"))].append(r)

def med(rs, key, scale=1.0, fmt="{:.0f}"):
    vals = [float(r[key]) * scale for r in rs if key in r and "FAILED" not in r]
    return fmt.format(statistics.median(vals)) + ("" if len(vals) >= 3 else f" (n={len(vals)})") if vals else "FAILED"

def get(label, b, p="1"):
    return groups.get((label, b, p), [])

print("| workload | parallelism | backend | records/s (N/netRuntime) | steady records/s | wall s | peak RSS MB | savepoint ms | savepoint MB | restore ms |")
print("|---|---|---|---|---|---|---|---|---|---|")
def events(rs):
    ns = sorted({int(r["N"]) for r in rs if "N" in r})
    return "/".join(f"{n/1e6:g}M" if n >= 1e6 else f"{n:,}" for n in ns) or "?"

for label, what in [("tp-ckpt1000", "checkpoint every 1000 ms"), ("tp-ckptoff", "checkpointing off"),
                    ("window-ckpt1000", "WindowCount: 1 s tumbling event-time windows, 200 ms out of order, checkpoint every 1000 ms")]:
    for b in ("hashmap", "rocksdb"):
        for p in ("1", "2"):
            rs = get(label, b, p)
            if rs:
                name = f"N={events(rs)} K=100k, {what}"
                print(f"| {name} | {p} | {b} | {med(rs,'rps')} | {med(rs,'steadyRps')} | {med(rs,'wall',fmt='{:.1f}')} "
                      f"| {med(rs,'rssKB',1/1024)} | – | – | – |")
for b in ("hashmap", "rocksdb"):
    sp, rstop, rnat = get("sp", b), get("restore-stop", b), get("restore-native", b)
    if not sp:
        continue
    w, m = med(sp, "wall", fmt="{:.1f}"), med(sp, "rssKB", 1/1024)
    fmt1 = "{:.1f}"
    print(f"| savepoint K=1M, CANONICAL (trigger, job running) | 1 | {b} | – | – | {w} | {m} | {med(sp,'canonicalMs')} | {med(sp,'canonicalMB',fmt=fmt1)} | {med(rstop,'stateInitMs')} (from the stop-with-savepoint one) |")
    print(f"| savepoint K=1M, NATIVE (trigger, job running) | 1 | {b} | – | – | {w} | {m} | {med(sp,'nativeMs')} | {med(sp,'nativeMB',fmt=fmt1)} | {med(rnat,'stateInitMs')} |")
    print(f"| stop-with-savepoint K=1M, CANONICAL | 1 | {b} | – | – | {w} | {m} | {med(sp,'stopMs')} | {med(sp,'stopMB',fmt=fmt1)} | – |")

print("\nRestore runs (K=1M, p=1; restoreMs = operator deserialised -> open(), i.e. keyed state backend build + restore;"
      " firstRecordMs = executeAsync() -> first record at sink, includes MiniCluster start):\n")
print("| backend | restored from | restore ms | first record ms | fresh-start first record ms | fresh-start state init ms | wall s | peak RSS MB | probe sum at savepoint -> first after restore -> end (expected) | check |")
print("|---|---|---|---|---|---|---|---|---|---|")
for b in ("hashmap", "rocksdb"):
    fresh = get("sp", b)  # the savepoint run is the same job (K=1M, p=1) started without state
    for label, src in [("restore-stop", "stop-with-savepoint CANONICAL"), ("restore-native", "NATIVE savepoint")]:
        rs = get(label, b)
        if not rs:
            continue
        sp = get("sp", b)
        ok = sum(r.get("probe") == "COMPLETE" for r in rs)
        ex = rs[-1]
        print(f"| {b} | {src} | {med(rs,'stateInitMs')} | {med(rs,'firstRecordMs')} | {med(fresh,'firstRecordMs')} | {med(fresh,'stateInitMs')} "
              f"| {med(rs,'wall',fmt='{:.1f}')} | {med(rs,'rssKB',1/1024)} "
              f"| {sp[-1].get('probeSum') if sp else '?'} -> {ex.get('probeFirstSum')} -> {ex.get('probeSum')} ({ex.get('probeExpectedAtEnd')}) "
              f"| {ok}/{len(rs)} runs COMPLETE |")
