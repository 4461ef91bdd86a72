#!/usr/bin/env bash
# Builds the vessel-vmm fuzz targets and runs each for a bounded time on its
# corpus kept between runs in the cache dir ($VESSEL_CACHE_DIR/fuzz-corpus/
# <target>), which the committed seeds are copied into first: the corpus
# grows from run to run, and the repo never does. A corpus over
# MAX_CORPUS_FILES inputs is first minimized (libFuzzer -merge=1).
# Fails if any target finds a crash, printing where the reproducer is.
#
#   VESSEL_FUZZ_SECONDS  seconds per target (default 60)
#   VESSEL_CACHE_DIR     build cache root (default ~/.cache/vessel); the
#                        cargo-fuzz target dir is $VESSEL_CACHE_DIR/fuzz-target
#
# cargo-fuzz passes nightly-only -Z flags to rustc; on a stable toolchain
# RUSTC_BOOTSTRAP=1 allows them (AddressSanitizer included).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
seconds="${VESSEL_FUZZ_SECONDS:-60}"
cache="${VESSEL_CACHE_DIR:-$HOME/.cache/vessel}"
targets=(mmio_transport vsock_handshake virtio_descriptors net_rxtx vsock_muxer mmio_devices)
max_corpus_files=5000

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$cache/fuzz-target"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cd "$here"
echo "fuzz: building ${targets[*]} (target dir $CARGO_TARGET_DIR)"
cargo fuzz build

work="$(mktemp -d "${TMPDIR:-/tmp}/vessel-fuzz.XXXXXX")"
# cargo-fuzz makes empty artifacts/<target> dirs here even though crash
# inputs go to -artifact_prefix; remove them if empty.
trap 'rm -rf "$work"; rmdir "$here"/artifacts/* "$here/artifacts" 2>/dev/null || true' EXIT

failed=0
summary=()
for t in "${targets[@]}"; do
    corpus="$cache/fuzz-corpus/$t"
    artifacts="$work/artifacts/$t/"
    mkdir -p "$corpus" "$artifacts"
    # New seeds join; inputs found by earlier runs stay.
    cp -r "$here/corpus/$t/." "$corpus/"
    if [ "$(find "$corpus" -type f | wc -l)" -gt "$max_corpus_files" ]; then
        echo "fuzz: minimizing the $t corpus (over $max_corpus_files inputs)"
        merged="$work/merged-$t"
        mkdir -p "$merged"
        if cargo fuzz run "$t" "$merged" "$corpus" -- -merge=1 -rss_limit_mb=2048 >"$work/$t.merge.log" 2>&1; then
            rm -rf "$corpus" && mv "$merged" "$corpus"
        else
            tail -n 20 "$work/$t.merge.log"
        fi
    fi
    log="$work/$t.log"
    echo "fuzz: running $t for ${seconds}s"
    # -artifact_prefix keeps crash inputs out of the repo as well.
    if cargo fuzz run "$t" "$corpus" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts" -print_final_stats=1 >"$log" 2>&1; then
        runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)"
        cov="$(grep -o 'cov: [0-9]*' "$log" | tail -n1 || true)"
        summary+=("fuzz: $t: ok, ${runs:-?} runs in ${seconds}s, ${cov:-cov: ?}, corpus $(find "$corpus" -type f | wc -l) inputs")
    else
        failed=1
        tail -n 60 "$log"
        # Keep the reproducers: move them where they outlive the temp dir.
        keep="$cache/fuzz-artifacts/$t"
        mkdir -p "$keep"
        cp -r "$artifacts/." "$keep/" 2>/dev/null || true
        found="$(find "$keep" -type f | tr '\n' ' ')"
        summary+=("fuzz: $t: FAILED, artifacts: ${found:-none} (reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $t <artifact> in $here)")
    fi
done

printf '%s\n' "${summary[@]}"
exit "$failed"
