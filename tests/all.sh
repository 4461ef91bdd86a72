#!/usr/bin/env bash
# The test command (README, .ci/run): installs what it needs, then runs
#   1. format and lint checks,
#   2. unit and host-side integration tests,
#   3. the VMM's fuzz targets, each for VESSEL_FUZZ_SECONDS (60),
#   4. the end-to-end suite, which boots real VMs through tests/kvm-host.
# Exits non-zero if any stage fails. Set VESSEL_SKIP_E2E=1 to stop after 3
# (it says so loudly; CI never sets it).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
started=$SECONDS
stage() { printf '\n=== %s (t=%ss)\n' "$*" "$((SECONDS - started))"; }

stage "dependencies"
tests/deps.sh
# virtiofsd: the VMM's virtio-fs tests and the e2e suite run a real one.
VESSEL_VIRTIOFSD=$(tests/tools/virtiofsd.sh | tail -n 1)
export VESSEL_VIRTIOFSD

stage "cargo fmt --check"
cargo fmt --all -- --check

stage "cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings

stage "unit and host-side integration tests"
cargo test --workspace --exclude vessel-e2e

stage "fuzz targets (vmm/fuzz)"
vmm/fuzz/run.sh

if [ "${VESSEL_SKIP_E2E:-0}" = 1 ]; then
  echo "WARNING: VESSEL_SKIP_E2E=1: the end-to-end suite (real VMs) was NOT run" >&2
  exit 0
fi

stage "artifacts: guest kernel, initramfs, release binaries"
eval "$(tests/artifacts.sh)"

stage "end-to-end suite through tests/kvm-host"
tests/e2e/run.sh

stage "all stages passed"
