#!/usr/bin/env bash
# Build the vessel guest kernel (an uncompressed vmlinux with the PVH entry)
# from Debian's linux-source-6.1 and the fragment microvm.config.
#
# Output: progress on stderr; the path of the vmlinux as the last line of
# stdout. Result is cached in
#   ${VESSEL_CACHE_DIR:-$HOME/.cache/vessel}/kernel/<key>/{vmlinux,config,System.map,build.log}
# where <key> hashes every input (fragment, this script, linux-source-6.1
# package version, compiler and linker versions), so a second run with the
# same inputs only prints the path.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fragment_src="$here/microvm.config"
self="$here/$(basename "${BASH_SOURCE[0]}")"
src_pkg=linux-source-6.1
cache_root="${VESSEL_CACHE_DIR:-$HOME/.cache/vessel}/kernel"
# Packages the build needs (dwarves/cpio/lz4 are harmless extras that keep
# config experiments with BTF/IKHEADERS/LZ4 from failing on a missing tool).
deps=("$src_pkg" build-essential bc bison flex libelf-dev libssl-dev cpio lz4 dwarves xz-utils)

start=$SECONDS
log() { printf '[kernel-config %4ds] %s\n' "$((SECONDS - start))" "$*" >&2; }
die() { log "error: $*"; exit 1; }

installed() { dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'; }

# --- 1. build dependencies (only what is missing) ------------------------------
missing=()
for p in "${deps[@]}"; do installed "$p" || missing+=("$p"); done
if ((${#missing[@]})); then
    log "installing missing packages: ${missing[*]}"
    sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
        sudo=(sudo)
    fi
    apt_install() {
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
            install -y --no-install-recommends "${missing[@]}" >&2
    }
    # Stale package lists are the usual reason an install fails: refresh once.
    apt_install || { "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update >&2 && apt_install; } \
        || die "apt-get install failed"
fi

tarball=$(dpkg -L "$src_pkg" | grep -E '/linux-source-6\.1\.tar\.(xz|bz2|gz)$' | head -n1 || true)
[[ -n $tarball && -f $tarball ]] || die "no source tarball found in package $src_pkg"
src_version=$(dpkg-query -W -f='${Version}' "$src_pkg")

# --- 2. cache key ---------------------------------------------------------------
# Snapshot the fragment first so the key and the build see the same bytes even
# if someone edits the file while we build.
mkdir -p "$cache_root"
fragment_snapshot=$(mktemp "$cache_root/.fragment.XXXXXX")
trap 'rm -f "$fragment_snapshot"' EXIT
cp "$fragment_src" "$fragment_snapshot"

key=$({
    echo "vessel-kernel-key v1"
    echo "$src_pkg $src_version"
    echo "gcc $(gcc -dumpfullversion)"
    echo "ld $(ld --version | head -n1)"
    echo "--- fragment"; cat "$fragment_snapshot"
    echo "--- build.sh"; cat "$self"
} | sha256sum | cut -c1-16)
out="$cache_root/$key"

cached() { [[ -f $out/vmlinux && -f $out/config ]]; }
if cached; then
    log "cache hit ($src_pkg $src_version, key $key)"
    echo "$out/vmlinux"
    exit 0
fi

# --- 3. build (serialized per key; a concurrent run waits, then hits the cache)
exec 9>"$cache_root/.lock-$key"
log "cache miss (key $key); waiting for the build lock"
flock 9
if cached; then
    log "built by a concurrent run"
    echo "$out/vmlinux"
    exit 0
fi
# We hold the lock, so leftovers of this key are from killed runs.
rm -rf "$cache_root/.build-$key."*

# Everything happens in a temp dir on the same filesystem as the cache, and the
# finished result is renamed into place in one step: an interrupted build never
# leaves a half-written cache entry.
work=$(mktemp -d "$cache_root/.build-$key.XXXXXX")
trap 'rm -f "$fragment_snapshot"; rm -rf "$work"' EXIT
buildlog="$work/build.log"
failed_log="$cache_root/failed-$key.log"

fail() {
    log "error: $*"
    cp "$buildlog" "$failed_log" 2>/dev/null || true
    if [[ -f $failed_log ]]; then
        log "build log kept at $failed_log; its tail:"
        tail -n 40 "$failed_log" >&2
    fi
    exit 1
}

log "extracting $tarball ($src_pkg $src_version)"
tar -xf "$tarball" -C "$work" || fail "extracting $tarball failed"
srcdir="$work/linux-source-6.1"
[[ -f $srcdir/Makefile ]] || fail "unexpected tarball layout: no $srcdir/Makefile"
cp "$fragment_snapshot" "$work/microvm.config"

# Same make arguments for every step. ARCH=x86_64 (not x86) forces 64BIT=y
# under allnoconfig. Fixed user/host keep `uname -v` free of build-machine names.
mk=(make -C "$srcdir" ARCH=x86_64 KBUILD_BUILD_USER=vessel KBUILD_BUILD_HOST=vessel)

log "configuring: allnoconfig + microvm.config"
# merge_config.sh -n = `make allnoconfig` with the fragment as KCONFIG_ALLCONFIG.
(cd "$srcdir" && ARCH=x86_64 scripts/kconfig/merge_config.sh -n "$work/microvm.config") >>"$buildlog" 2>&1 \
    || fail "merge_config.sh failed"

# Kconfig drops options with unmet dependencies without failing; merge_config
# only warns. Insist that every value the fragment asks for is in .config.
verify_config() {
    local frag=$1 cfg=$2 bad=0 line sym want have
    while IFS= read -r line; do
        if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
            sym=${BASH_REMATCH[1]} want=${BASH_REMATCH[2]}
            have=$(grep -E "^$sym=" "$cfg" | head -n1 | cut -d= -f2- || true)
            if [[ $have != "$want" ]]; then
                log "config: $sym wanted '$want', got '${have:-<not set>}'"
                bad=1
            fi
        elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
            sym=${BASH_REMATCH[1]}
            if grep -qE "^$sym=" "$cfg"; then
                log "config: $sym wanted off, got '$(grep -E "^$sym=" "$cfg")'"
                bad=1
            fi
        fi
    done <"$frag"
    return "$bad"
}
verify_config "$work/microvm.config" "$srcdir/.config" \
    || fail "the final .config does not match microvm.config (missing dependencies?)"
log "config verified: every option in microvm.config is in the final .config"

log "building vmlinux with $(nproc) jobs (log: $buildlog)"
"${mk[@]}" -j"$(nproc)" vmlinux >>"$buildlog" 2>&1 || fail "make vmlinux failed"

vmlinux="$srcdir/vmlinux"
# The VMM boots through PVH: without the Xen PHYS32_ENTRY note (type 0x12)
# there is no entry point for it to jump to.
readelf -n "$vmlinux" >"$work/notes.txt" 2>>"$buildlog" || fail "readelf -n vmlinux failed"
grep -E '^\s*Xen\s' "$work/notes.txt" | grep -qiE '0x0*12\b|PHYS32_ENTRY' \
    || fail "vmlinux has no XEN_ELFNOTE_PHYS32_ENTRY note: the PVH entry is missing"
log "PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) present"

stage="$work/out"
mkdir "$stage"
cp "$vmlinux" "$stage/vmlinux"
cp "$srcdir/.config" "$stage/config"
cp "$srcdir/System.map" "$stage/System.map"
cp "$buildlog" "$stage/build.log"
mv -T "$stage" "$out"
rm -f "$failed_log"
log "built $(du -h "$out/vmlinux" | cut -f1) vmlinux ($(make -s -C "$srcdir" ARCH=x86_64 kernelrelease 2>/dev/null || echo '?'))"
echo "$out/vmlinux"
