#!/usr/bin/env bash
# Boot benchmark (not a test): vessel-vmm vs QEMU microvm, interleaved, through
# tests/kvm-host. Prints Markdown tables for docs/benchmarks.md.
#   tests/bench/boot.sh                 # 20 pairs, 2 per fresh test host
#   VESSEL_BENCH_RUNS=10 tests/bench/boot.sh
#   VESSEL_BENCH_PAIRS_PER_HOST=4 tests/bench/boot.sh
# A change on and off (vessel-vmm against vessel-vmm set up otherwise, in
# QEMU's place):
#   VESSEL_BENCH_B_COMPRESS=lz4 tests/bench/boot.sh       # initramfs lz4 or none
#   VESSEL_BENCH_B_CMDLINE='tsc=reliable' tests/bench/boot.sh
#   VESSEL_BENCH_B_SMALL_AGENT=1 tests/bench/boot.sh      # agent built for size
#   VESSEL_BENCH_B_CONSOLE=none tests/bench/boot.sh        # no serial console
# Each test host first boots one warm-up guest with each VMM (reported apart
# as "first boot of a host", never paired), then its pairs, alternating which
# VMM goes first. A nested host fails more often the more guests it has
# booted (tests/kvm-host/README.md, "Freezes"): hosts stay short, and a host
# that failed (status 125) is run again, at most three times in all.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
eval "$(tests/artifacts.sh)"
if [ -n "${VESSEL_BENCH_B_COMPRESS:-}" ]; then
  VESSEL_BENCH_B_INITRAMFS=$(COMPRESS=$VESSEL_BENCH_B_COMPRESS rootfs/build.sh | tail -n 1)
  export VESSEL_BENCH_B_INITRAMFS
elif [ -n "${VESSEL_BENCH_B_SMALL_AGENT:-}" ]; then
  # The same agent optimized for size, whole-program: fewer bytes to load
  # and inflate. Its own target dir, so the default build stays cached.
  VESSEL_BENCH_B_INITRAMFS=$(
    CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}/small-agent \
    CARGO_PROFILE_RELEASE_OPT_LEVEL=s CARGO_PROFILE_RELEASE_LTO=fat \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 rootfs/build.sh | tail -n 1)
  export VESSEL_BENCH_B_INITRAMFS
fi
cargo build --release -q -p vessel-e2e --bin bench-boot
bench=${CARGO_TARGET_DIR:-$repo/target}/release/bench-boot
runs=${VESSEL_BENCH_RUNS:-20}
per_host=${VESSEL_BENCH_PAIRS_PER_HOST:-2}
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
retries=0
done_pairs=0
host=0
while [ "$done_pairs" -lt "$runs" ]; do
  n=$((runs - done_pairs < per_host ? runs - done_pairs : per_host))
  out=$(mktemp)
  rc=0
  # QEMU's vsock is vhost-vsock; tests/kvm-host loads its module.
  VESSEL_BENCH_RUNS=$n tests/kvm-host/run "$bench" >"$out" || rc=$?
  if [ "$rc" -eq 125 ] && [ "$retries" -lt 3 ]; then
    retries=$((retries + 1))
    echo "bench: the test host failed (125); running its $n pair(s) again ($retries of 3 retries)" >&2
    rm -f "$out"
    continue
  fi
  [ "$rc" -eq 0 ] || { cat "$out" >&2; rm -f "$out"; echo "bench: the benchmark failed (status $rc)" >&2; exit "$rc"; }
  # Each line gets its host's number, which makes pairs unique.
  grep -E '^(raw|phase) ' "$out" | sed "s/^/$host /" >>"$raw"
  rm -f "$out"
  done_pairs=$((done_pairs + n))
  host=$((host + 1))
done
echo "bench: $runs pairs in $host test hosts, $retries host(s) run again" >&2
python3 "$repo/tests/bench/boot_tables.py" "$raw"
