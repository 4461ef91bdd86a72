#!/usr/bin/env bash
# Self-test for tests/kvm-host/run. Exercises the runner in whatever mode it
# picks on this machine (or VESSEL_KVM_HOST_MODE):
#   - exit status propagation (0, 7), stdout and stderr kept apart, stdin pipe
#   - the caller's environment (tricky values too) and cwd inside
#   - root, /dev/kvm answering KVM_GET_API_VERSION = 12 and KVM_CREATE_VM
#   - a Unix socket bound in $VESSEL_SCRATCH, loopback TCP
#   - a file written inside under target/ is visible on the host
#   - no nesting: 'run' inside just runs the command
#   - a QEMU microvm guest starts under /dev/kvm inside (skip with
#     VESSEL_SELFTEST_QEMU=0)
#   - the overall timeout gives 124 (skip with VESSEL_SELFTEST_TIMEOUT=0)
# Prints PASS/FAIL lines and a final "N passed, N failed"; exits 1 on failure.
#
# Usage: tests/kvm-host/selftest.sh
# The whole script is one { ... } block: bash parses it completely before
# running it, so editing this file while a run is in progress (the tree is
# shared) cannot make the running copy read a half-changed file.
{
set -euo pipefail

SELF_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
RUN=$SELF_DIR/run

# --------------------------------------------------------------------------
# Inside part: runs under the runner; reports "SELFTEST ok|fail NAME: detail"
# lines on stdout, which the host part counts.
# --------------------------------------------------------------------------
if [[ ${1:-} == --inside ]]; then
	set +e
	ok() { echo "SELFTEST ok $1${2:+: $2}"; }
	bad() { echo "SELFTEST fail $1${2:+: $2}"; }
	check() { # NAME CMD... : ok if CMD succeeds
		local name=$1 out
		shift
		if out=$("$@" 2>&1); then ok "$name" "$out"; else bad "$name" "$out"; fi
	}
	py=$(command -v python3)

	[[ $(id -u) == 0 ]] && ok "root inside" || bad "root inside" "uid $(id -u)"
	[[ $(pwd -P) == "$SELFTEST_EXPECT_CWD" ]] && ok "cwd" "$(pwd -P)" || bad "cwd" "$(pwd -P) != $SELFTEST_EXPECT_CWD"

	# Environment: values must arrive byte for byte.
	tricky=$'spaces  and\ttab, "double" \'single\' $dollar `tick` \\ back\nnew line *glob*'
	[[ ${VESSEL_SELFTEST_TRICKY:-} == "$tricky" ]] && ok "env: tricky VESSEL_ value" || bad "env: tricky VESSEL_ value" "got $(printf %q "${VESSEL_SELFTEST_TRICKY:-<unset>}")"
	[[ ${RUST_LOG:-} == "vessel=debug,info" && ${RUST_BACKTRACE:-} == 1 ]] && ok "env: RUST_LOG, RUST_BACKTRACE" || bad "env: RUST_LOG, RUST_BACKTRACE" "RUST_LOG=${RUST_LOG:-} RUST_BACKTRACE=${RUST_BACKTRACE:-}"
	[[ ${CARGO_TERM_COLOR:-} == never ]] && ok "env: CARGO_*" || bad "env: CARGO_*" "CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-}"
	[[ ${SELFTEST_PLAIN:-} == plain ]] && ok "env: other exported vars" || bad "env: other exported vars"
	[[ $PATH == "$SELFTEST_EXPECT_PATH" ]] && ok "env: PATH" || bad "env: PATH" "$PATH"
	[[ $HOME == "$SELFTEST_EXPECT_HOME" ]] && ok "env: HOME" || bad "env: HOME" "$HOME"
	[[ ${VESSEL_KVM_HOST_INSIDE:-} == 1 ]] && ok "env: VESSEL_KVM_HOST_INSIDE=1" || bad "env: VESSEL_KVM_HOST_INSIDE=1"

	# VESSEL_SCRATCH: a writable dir where Unix sockets can be bound.
	if [[ -n ${VESSEL_SCRATCH:-} && -d $VESSEL_SCRATCH && -w $VESSEL_SCRATCH ]]; then
		ok "VESSEL_SCRATCH writable dir" "$VESSEL_SCRATCH ($(stat -f -c %T "$VESSEL_SCRATCH"))"
	else
		bad "VESSEL_SCRATCH writable dir" "${VESSEL_SCRATCH:-<unset>}"
	fi
	check "unix socket in VESSEL_SCRATCH" "$py" -c '
import os, socket, sys
p = os.path.join(os.environ["VESSEL_SCRATCH"], "selftest.sock")
s = socket.socket(socket.AF_UNIX); s.bind(p); s.listen(1)
c = socket.socket(socket.AF_UNIX); c.connect(p); a, _ = s.accept()
c.sendall(b"ping"); assert a.recv(4) == b"ping"
os.unlink(p); print(p)'
	check "unix socket in /tmp" "$py" -c '
import os, socket, tempfile
d = tempfile.mkdtemp(dir="/tmp"); p = os.path.join(d, "s")
s = socket.socket(socket.AF_UNIX); s.bind(p); s.listen(1)
c = socket.socket(socket.AF_UNIX); c.connect(p); os.unlink(p); os.rmdir(d)'
	check "loopback TCP" "$py" -c '
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
c = socket.create_connection(s.getsockname()); a, _ = s.accept()
c.sendall(b"x"); assert a.recv(1) == b"x"'

	# /dev/kvm: API version 12 and a VM can be created.
	check "/dev/kvm KVM_GET_API_VERSION=12, KVM_CREATE_VM" "$py" -c '
import os, fcntl
fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
v = fcntl.ioctl(fd, 0xAE00)          # KVM_GET_API_VERSION
assert v == 12, v
vm = fcntl.ioctl(fd, 0xAE01, 0)      # KVM_CREATE_VM
assert vm >= 0, vm
os.close(vm); os.close(fd); print("api", v)'

	# Written here, checked on the host after the run.
	if mkdir -p "$SELFTEST_OUTDIR" && echo "$SELFTEST_TOKEN" >"$SELFTEST_OUTDIR/written-inside"; then
		ok "write under target/" "$SELFTEST_OUTDIR/written-inside"
	else
		bad "write under target/"
	fi

	# Calling the runner again inside must not nest: it just runs.
	rc=0
	t0=$(date +%s)
	"$SELFTEST_RUN" sh -c 'exit 5' || rc=$?
	((rc == 5 && $(date +%s) - t0 < 10)) && ok "no nesting: inner run returns 5 at once" || bad "no nesting: inner run" "rc $rc after $(($(date +%s) - t0))s"

	# A QEMU microvm guest starts with KVM here: this is what the e2e tests
	# need. Serial goes to a file (a pipe stalls QEMU there, see DESIGN.md);
	# we only wait for the kernel's first console lines.
	if [[ ${VESSEL_SELFTEST_QEMU:-1} != 0 ]]; then
		kernel=$(compgen -G '/boot/vmlinuz-*' | sort -V | tail -n1)
		log=$SELFTEST_OUTDIR/qemu-microvm.log
		rm -f "$log"
		if ! command -v qemu-system-x86_64 >/dev/null || [[ -z $kernel ]]; then
			bad "qemu -accel kvm -M microvm starts" "no qemu-system-x86_64 or /boot/vmlinuz-*"
		else
			t0=$(date +%s%N)
			qemu-system-x86_64 -accel kvm -M microvm -cpu host -m 256 -smp 1 -nodefaults -no-user-config \
				-display none -no-reboot -serial "file:$log" -kernel "$kernel" \
				-append 'console=ttyS0 earlyprintk=ttyS0 panic=-1' </dev/null >"$log.qemu" 2>&1 &
			qpid=$!
			seen=
			for _ in $(seq 1 1200); do # up to 120 s
				if grep -q 'Linux version' "$log" 2>/dev/null; then
					seen=1
					break
				fi
				kill -0 "$qpid" 2>/dev/null || break
				sleep 0.1
			done
			ms=$((($(date +%s%N) - t0) / 1000000))
			kill "$qpid" 2>/dev/null
			wait "$qpid" 2>/dev/null
			if [[ -n $seen ]]; then
				ok "qemu -accel kvm -M microvm starts" "first console line after $((ms / 1000)).$((ms % 1000 / 100))s: $(grep -m1 -o 'Linux version [^ ]*' "$log")"
			else
				bad "qemu -accel kvm -M microvm starts" "no console output after ${ms}ms; qemu: $(head -c 300 "$log.qemu")"
			fi
		fi
	fi

	# Output volume: everything written before exit must reach the host.
	echo "PAYLOAD-BEGIN"
	seq 1 20000
	echo "PAYLOAD-END"
	echo "selftest-stderr-marker" >&2
	exit 0
fi

# --------------------------------------------------------------------------
# Host part.
# --------------------------------------------------------------------------
PASS=0 FAIL=0
pass() {
	PASS=$((PASS + 1))
	echo "PASS $1${2:+ ($2)}"
}
fail() {
	FAIL=$((FAIL + 1))
	echo "FAIL $1${2:+ ($2)}"
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { printf '%d.%ds' $(($1 / 1000)) $(($1 % 1000 / 100)); }

REPO=$(cd "$SELF_DIR/../.." && pwd -P)
OUTDIR=$REPO/target/kvm-host-selftest
rm -rf "$OUTDIR"
mkdir -p "$OUTDIR"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "kvm-host selftest: $("$RUN" --probe)"

# 1. Exit status 7, stdin pipe, stdout and stderr apart, round-trip time.
t0=$(now_ms)
rc=0
printf 'hello from stdin\n' | "$RUN" sh -c 'cat; echo to-stderr >&2; exit 7' >"$TMP/o1" 2>"$TMP/e1" || rc=$?
T_ROUNDTRIP=$(($(now_ms) - t0))
[[ $rc == 7 ]] && pass "exit status 7 propagates" || fail "exit status 7 propagates" "got $rc; stderr: $(tail -n5 "$TMP/e1")"
[[ $(cat "$TMP/o1") == "hello from stdin" ]] && pass "stdin pipe reaches CMD, stdout comes back" || fail "stdin pipe reaches CMD, stdout comes back" "stdout: $(head -c 200 "$TMP/o1")"
grep -qx to-stderr "$TMP/e1" && ! grep -q to-stderr "$TMP/o1" && pass "stderr comes back separately" || fail "stderr comes back separately"
grep -q '^kvm-host: mode \(native\|nested\): ' "$TMP/e1" && pass "mode and reason printed to stderr" "$(grep -m1 '^kvm-host: mode' "$TMP/e1")" || fail "mode and reason printed to stderr"

# 2. Everything else in one run, from a subdirectory, with a test environment.
export VESSEL_SELFTEST_TRICKY=$'spaces  and\ttab, "double" \'single\' $dollar `tick` \\ back\nnew line *glob*'
export RUST_LOG=vessel=debug,info RUST_BACKTRACE=1 CARGO_TERM_COLOR=never SELFTEST_PLAIN=plain
export SELFTEST_EXPECT_PATH=$PATH SELFTEST_EXPECT_HOME=$HOME SELFTEST_EXPECT_CWD=$SELF_DIR
export SELFTEST_OUTDIR=$OUTDIR SELFTEST_TOKEN="token-$$-$RANDOM" SELFTEST_RUN=$RUN
t0=$(now_ms)
rc=0
(cd "$SELF_DIR" && "$RUN" "$SELF_DIR/selftest.sh" --inside) >"$TMP/o2" 2>"$TMP/e2" || rc=$?
T_MAIN=$(($(now_ms) - t0))
[[ $rc == 0 ]] && pass "exit status 0 propagates" || fail "exit status 0 propagates" "got $rc; stderr: $(tail -n5 "$TMP/e2")"
n_inside=0
while read -r _ verdict rest; do
	n_inside=$((n_inside + 1))
	name=${rest%%: *}
	detail=
	[[ $rest == *": "* ]] && detail=${rest#*: }
	if [[ $verdict == ok ]]; then pass "inside: $name" "$detail"; else fail "inside: $name" "$detail"; fi
done < <(grep '^SELFTEST ' "$TMP/o2")
((n_inside >= 15)) || fail "inside checks all reported" "only $n_inside lines; stderr: $(tail -n5 "$TMP/e2")"
if diff <(sed -n '/^PAYLOAD-BEGIN$/,/^PAYLOAD-END$/p' "$TMP/o2" | sed '1d;$d') <(seq 1 20000) >/dev/null; then
	pass "20000 lines of stdout arrive intact"
else
	fail "20000 lines of stdout arrive intact"
fi
grep -qx selftest-stderr-marker "$TMP/e2" && pass "stderr of CMD reaches the caller" || fail "stderr of CMD reaches the caller"
[[ -f $OUTDIR/written-inside && $(cat "$OUTDIR/written-inside") == "$SELFTEST_TOKEN" ]] &&
	pass "file written inside is on the host" "$OUTDIR/written-inside" || fail "file written inside is on the host"

# 3. The overall timeout: exit 124 and the console log is kept.
if [[ ${VESSEL_SELFTEST_TIMEOUT:-1} != 0 ]]; then
	t0=$(now_ms)
	rc=0
	VESSEL_KVM_HOST_TIMEOUT=8 "$RUN" sleep 600 >"$TMP/o3" 2>"$TMP/e3" || rc=$?
	t=$(($(now_ms) - t0))
	[[ $rc == 124 ]] && ((t < 40000)) && pass "timeout exits 124" "after $(secs $t)" || fail "timeout exits 124" "rc $rc after $(secs $t)"
	if grep -q 'nested' "$TMP/e3"; then
		log=$(grep -o 'console log kept: [^ ]*' "$TMP/e3" | cut -d' ' -f4)
		[[ -n $log && -f $log ]] && pass "timeout keeps the console log" "$log" || fail "timeout keeps the console log" "$(tail -n3 "$TMP/e3")"
	fi
fi

# The runner keeps the run dirs of failed runs; these two failed on purpose.
for f in "$TMP/e1" "$TMP/e3"; do
	[[ -f $f ]] || continue
	d=$(sed -n 's/.*console log kept: \([^ ]*\)\/console\.log.*/\1/p' "$f" | head -n1)
	[[ -n $d && -d $d && $d == */kvm-host/runs/* ]] && rm -rf -- "$d"
done

echo "timing: round trip for a trivial CMD $(secs "$T_ROUNDTRIP"), main check run $(secs "$T_MAIN")"
echo "$PASS passed, $FAIL failed"
((FAIL == 0))
}
