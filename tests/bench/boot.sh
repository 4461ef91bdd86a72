#!/usr/bin/env bash
# Boot benchmark (not a test): vessel-vmm vs QEMU microvm, interleaved, through
# tests/kvm-host. Prints a Markdown table for docs/benchmarks.md.
#   tests/bench/boot.sh            # 10 rounds
#   VESSEL_BENCH_RUNS=20 tests/bench/boot.sh
# The rounds run two at a time, each pair in a fresh nested test host: a
# nested host fails more often the more guests it has booted (see
# tests/kvm-host/README.md, "Freezes"), and a pair whose host failed (status
# 125) is run again, at most three times in all.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
eval "$(tests/artifacts.sh)"
cargo build --release -q -p vessel-e2e --bin bench-boot
bench=${CARGO_TARGET_DIR:-$repo/target}/release/bench-boot
runs=${VESSEL_BENCH_RUNS:-10}
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
retries=0
done_rounds=0
while [ "$done_rounds" -lt "$runs" ]; do
  n=$((runs - done_rounds < 2 ? runs - done_rounds : 2))
  out=$(mktemp)
  rc=0
  # QEMU's vsock is vhost-vsock; tests/kvm-host loads its module.
  VESSEL_BENCH_RUNS=$n VESSEL_BENCH_RAW=1 tests/kvm-host/run "$bench" >"$out" || rc=$?
  if [ "$rc" -eq 125 ] && [ "$retries" -lt 3 ]; then
    retries=$((retries + 1))
    echo "bench: the test host failed (125); running these $n round(s) again ($retries of 3 retries)" >&2
    rm -f "$out"
    continue
  fi
  [ "$rc" -eq 0 ] || { cat "$out" >&2; rm -f "$out"; echo "bench: the benchmark failed (status $rc)" >&2; exit "$rc"; }
  grep '^raw ' "$out" >>"$raw"
  rm -f "$out"
  done_rounds=$((done_rounds + n))
done
python3 - "$raw" "$runs" <<'PY'
import statistics, sys
rows = [l.split()[1:] for l in open(sys.argv[1])]
runs = int(sys.argv[2])
def ok(vmm, col):
    return [float(r[col]) for r in rows if r[0] == vmm and r[1] != "failed"]
failed = {v: sum(1 for r in rows if r[0] == v and r[1] == "failed") for v in ("vessel-vmm", "qemu")}
def cell(xs):
    return f"{statistics.median(xs):.0f} ({min(xs):.0f}–{max(xs):.0f})"
print(f"failed boots (left out): vessel-vmm {failed['vessel-vmm']} of {runs}, QEMU {failed['qemu']} of {runs}")
print(f"| metric ({runs} rounds, 1 vCPU, 256 MiB) | vessel-vmm median (min–max) | QEMU microvm median (min–max) | ratio vessel/QEMU |")
print("| --- | --- | --- | --- |")
for name, col in (("boot to agent-ready (ms)", 1), ("VMM RSS excluding guest RAM (KiB)", 2)):
    v, q = ok("vessel-vmm", col), ok("qemu", col)
    print(f"| {name} | {cell(v)} | {cell(q)} | {statistics.median(v) / statistics.median(q):.2f} |")
PY
