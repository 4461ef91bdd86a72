#!/usr/bin/env bash
# Boot benchmark (not a test): vessel-vmm vs QEMU microvm, interleaved, in one
# run through tests/kvm-host. Prints a Markdown table for docs/benchmarks.md.
#   tests/bench/boot.sh            # 10 rounds
#   VESSEL_BENCH_RUNS=20 tests/bench/boot.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
eval "$(tests/artifacts.sh)"
cargo build --release -q -p vessel-e2e --bin bench-boot
bench=${CARGO_TARGET_DIR:-$repo/target}/release/bench-boot
# QEMU's vsock is vhost-vsock: its host module must be loaded where it runs.
tests/kvm-host/run bash -c "modprobe vhost_vsock 2>/dev/null || true; exec '$bench'"
