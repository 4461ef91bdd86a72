#!/usr/bin/env bash
# CRI benchmark (not a test): vessel against containerd 1.6 + runc (Debian's),
# both in the same nested test host and driven by the same client; prints
# Markdown tables for docs/benchmarks.md.
#   tests/bench/cri.sh                      # 10 lifecycles of each, 3 pods of each for memory,
#                                           # 10 rounds of streaming (exec, 64 MiB through exec and port-forward)
#   VESSEL_BENCH_RUNS=4 VESSEL_BENCH_PODS=2 VESSEL_BENCH_STREAMS=5 tests/bench/cri.sh
# Other knobs: VESSEL_BENCH_PER_HOST (4) lifecycle rounds per test host;
# VESSEL_BENCH_SKIP_BUILD=1 takes the VESSEL_* artifacts from the environment
# and the bench-cri binary already built; VESSEL_KVM_HOST_LOCK=FILE runs each
# test host under `flock FILE` (machines shared by several people).
# Each group of rounds runs in a fresh test host (a nested host fails more
# often the more guests it has booted: tests/kvm-host/README.md, "Freezes"),
# the memory and ExecSync figures in one more; a group whose host failed
# (status 125) is run again, at most three times in all. Raw records, logs
# and vesseld's log of each host stay in $CARGO_TARGET_DIR/bench-cri/<time>/.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
target=${CARGO_TARGET_DIR:-$repo/target}
if [ -z "${VESSEL_BENCH_SKIP_BUILD:-}" ]; then
  eval "$(tests/artifacts.sh)"
  cargo build --release -q -p vessel-e2e --bin bench-cri
fi
bench=$target/release/bench-cri
runs=${VESSEL_BENCH_RUNS:-10}
pods=${VESSEL_BENCH_PODS:-3}
streams=${VESSEL_BENCH_STREAMS:-10}
per_host=${VESSEL_BENCH_PER_HOST:-4}
out=$target/bench-cri/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
# containerd's sandbox image: there is no registry.k8s.io/pause to pull here.
cc -static -Os -s -o "$out/pause" tests/bench/pause.c
export VESSEL_BENCH_PAUSE=$out/pause

host() {
  if [ -n "${VESSEL_KVM_HOST_LOCK:-}" ]; then
    flock "$VESSEL_KVM_HOST_LOCK" tests/kvm-host/run "$@"
  else
    tests/kvm-host/run "$@"
  fi
}

retries=0
# group NAME FIRST_ROUND ROUNDS PODS [STREAMS]: one test host, retried on status 125.
group() {
  local name=$1 first=$2 rounds=$3 npods=$4 nstreams=${5:-0} rc
  while :; do
    rc=0
    VESSEL_BENCH_FIRST_ROUND=$first VESSEL_BENCH_RUNS=$rounds VESSEL_BENCH_PODS=$npods \
      VESSEL_BENCH_STREAMS=$nstreams \
      VESSEL_BENCH_VESSELD_LOG=$out/$name.vesseld.log \
      host "$bench" >"$out/$name.raw" 2> >(tee "$out/$name.log" >&2) || rc=$?
    if [ "$rc" -eq 125 ] && [ "$retries" -lt 3 ]; then
      retries=$((retries + 1))
      echo "bench: the test host failed (125); running $name again ($retries of 3 retries)" >&2
      continue
    fi
    [ "$rc" -eq 0 ] || { echo "bench: $name failed (status $rc); see $out" >&2; exit "$rc"; }
    return
  done
}

if [ "$pods" -gt 0 ]; then
  group memory 0 0 "$pods"
fi
if [ "$streams" -gt 0 ]; then
  group streams 0 0 0 "$streams"
fi
done_rounds=0
while [ "$done_rounds" -lt "$runs" ]; do
  n=$((runs - done_rounds < per_host ? runs - done_rounds : per_host))
  group "rounds-$done_rounds" "$done_rounds" "$n" 0
  done_rounds=$((done_rounds + n))
done
echo "bench: raw records and logs in $out ($retries host(s) run again)" >&2
"$bench" summarize "$out"/*.raw | tee "$out/tables.md"
