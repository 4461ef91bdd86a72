#!/usr/bin/env bash
# Builds everything a VM boot needs and prints it as shell assignments:
#   eval "$(tests/artifacts.sh)"
# sets VESSEL_KERNEL, VESSEL_INITRAMFS, VESSEL_VMM, VESSEL_VESSELD,
# VESSEL_VIRTIOFSD, VESSEL_CLIENT (the `vessel` CRI client) and
# VESSEL_PUSH_BUSYBOX (fills a local registry for `make run`).
# The kernel is cached outside the clone (kernel-config/build.sh); the rest is
# an incremental cargo build. Progress goes to stderr.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

"$repo/tests/deps.sh"
kernel=$("$repo/kernel-config/build.sh" | tail -n 1)
initramfs=$("$repo/rootfs/build.sh" | tail -n 1)
virtiofsd=$("$repo/tests/tools/virtiofsd.sh" | tail -n 1)
echo "artifacts: building vessel-vmm, vesseld and vessel (release)" >&2
cargo build --release -q -p vessel-vmm -p vessel-host-runtime -p vessel-client >&2
cargo build --release -q -p vessel-e2e --bin push-busybox >&2
target=${CARGO_TARGET_DIR:-$repo/target}

for f in "$kernel" "$initramfs" "$target/release/vessel-vmm" "$target/release/vesseld" \
  "$target/release/vessel" "$target/release/push-busybox"; do
  [ -f "$f" ] || { echo "artifacts: missing $f" >&2; exit 1; }
done
printf 'export VESSEL_KERNEL=%q\n' "$kernel"
printf 'export VESSEL_INITRAMFS=%q\n' "$initramfs"
printf 'export VESSEL_VMM=%q\n' "$target/release/vessel-vmm"
printf 'export VESSEL_VESSELD=%q\n' "$target/release/vesseld"
printf 'export VESSEL_VIRTIOFSD=%q\n' "$virtiofsd"
printf 'export VESSEL_CLIENT=%q\n' "$target/release/vessel"
printf 'export VESSEL_PUSH_BUSYBOX=%q\n' "$target/release/push-busybox"
