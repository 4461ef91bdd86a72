#!/usr/bin/env bash
# Where the guest kernel's boot time goes, by initcall (not a test): boots one
# vessel-vmm guest in tests/kvm-host with `initcall_debug ignore_loglevel`
# and prints the slowest initcalls and their total, for issue 15's kernel
# config trims. The durations are the kernel's own (each initcall timed
# around its call, its console lines printed outside that window), but the
# whole boot is slower than usual: every line crawls out of the serial port.
#   tests/bench/initcalls.sh            # the 25 slowest
#   VESSEL_BENCH_TOP=50 tests/bench/initcalls.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${VESSEL_KVM_HOST_INSIDE:-}" ]; then
  cd "$repo"
  eval "$(tests/artifacts.sh)"
  exec tests/kvm-host/run "$0" "$@"
fi
# Inside the test host.
dir=$VESSEL_SCRATCH/initcalls
mkdir -p "$dir"
"$VESSEL_VMM" --kernel "$VESSEL_KERNEL" --initramfs "$VESSEL_INITRAMFS" --memory 256 \
  --vsock "$dir/vsock" --console "$dir/console.log" --log "$dir/vmm.log" \
  --cmdline "ignore_loglevel initcall_debug" &
vmm=$!
for _ in $(seq 600); do
  grep -q "listening on vsock" "$dir/console.log" 2>/dev/null && break
  sleep 0.2
done
kill "$vmm" 2>/dev/null || true
wait "$vmm" || true
grep -q "listening on vsock" "$dir/console.log" ||
  { tail -n 20 "$dir/console.log" >&2; echo "initcalls: the guest agent did not come up" >&2; exit 1; }
# "initcall foo+0x0/0x12 returned 0 after 123 usecs"
grep -o 'initcall [^ ]* returned -\?[0-9]* after [0-9]* usecs' "$dir/console.log" |
  awk '{ sub(/\+.*/, "", $2); print $(NF-1), $2 }' | sort -rn > "$dir/initcalls"
echo "| initcall | µs |"
echo "| --- | --- |"
head -n "${VESSEL_BENCH_TOP:-25}" "$dir/initcalls" | awk '{ printf "| %s | %d |\n", $2, $1 }'
awk '{ s += $1; n++ } END { printf "\n%d initcalls, %.0f ms in all\n", n, s / 1000 }' "$dir/initcalls"
