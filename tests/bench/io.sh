#!/usr/bin/env bash
# I/O benchmark (not a test): vsock and virtio-net throughput of vessel-vmm vs QEMU microvm,
# in one run through tests/kvm-host. Prints a Markdown table for docs/benchmarks.md.
#   tests/bench/io.sh                          # 5 rounds of 64 MiB each way
#   VESSEL_BENCH_RUNS=10 VESSEL_BENCH_MIB=128 tests/bench/io.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
eval "$(tests/artifacts.sh)"
cargo build --release -q -p vessel-e2e --bin bench-io
bench=${CARGO_TARGET_DIR:-$repo/target}/release/bench-io
# QEMU's vsock is vhost-vsock; tests/kvm-host loads its module.
tests/kvm-host/run "$bench"
