#!/usr/bin/env bash
# Builds the guest initramfs: vessel-agent, statically linked, as /init.
#
# Prints progress on stderr and the image's path as the last line of stdout.
# Environment:
#   CARGO_TARGET_DIR   cargo's target dir (default: <repo>/target); the image
#                      goes to $CARGO_TARGET_DIR/vessel/
#   COMPRESS           lz4 (default), gzip or none; the guest kernel has
#                      RD_GZIP and RD_LZ4. lz4 because the guest inflates
#                      gzip -9 about 40 ms slower on a real host (9.4 MB:
#                      50 ms against under 10 ms natively) for 14% fewer
#                      bytes, which come from the page cache there
#                      (docs/benchmarks.md, "Cheap cuts, the rest").
#   SOURCE_DATE_EPOCH  mtime of every archive entry (default 0)
#
# The archive is written by a small newc writer below rather than by `cpio -o`
# from a staging tree: device nodes need no mknod (so no root, and no
# CAP_MKNOD in containers), and uid/gid, mtimes, inode numbers and order are
# fixed, so the same agent binary always gives the same image. `cpio` (installed
# if missing) only checks the result.
set -euo pipefail

export LC_ALL=C
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac
triple=x86_64-unknown-linux-gnu
out_dir="$target_dir/vessel"
compress="${COMPRESS:-lz4}"
mtime="${SOURCE_DATE_EPOCH:-0}"

log() { echo "rootfs/build.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

case "$compress" in
  gzip) image="$out_dir/initramfs.cpio.gz" ;;
  lz4) image="$out_dir/initramfs.cpio.lz4" ;;
  none) image="$out_dir/initramfs.cpio" ;;
  *) die "COMPRESS must be gzip, lz4 or none, not '$compress'" ;;
esac

# need COMMAND PACKAGE: installs the Debian package if COMMAND is missing.
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing $2"
  [ "$(id -u)" -eq 0 ] || die "$1 is missing; install the Debian package $2"
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$2" >&2 ||
    { apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 &&
      apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$2" >&2; } ||
    die "cannot install $2"
}
need cpio cpio
need readelf binutils
case "$compress" in
  gzip) need gzip gzip ;;
  lz4) need lz4 lz4 ;;
esac

# --- the agent --------------------------------------------------------------
log "building vessel-agent (static, $triple)"
# With an explicit --target, RUSTFLAGS reach only the target's crates, not
# build scripts, so crt-static does not break proc macros or build.rs.
RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
CARGO_PROFILE_RELEASE_STRIP=symbols \
  cargo build --release -p vessel-agent --target "$triple" >&2
agent="$target_dir/$triple/release/vessel-agent"
[ -x "$agent" ] || die "no agent binary at $agent"

# Static: no program interpreter and no shared libraries, or /init cannot start.
if readelf -lW "$agent" | grep -q 'INTERP'; then
  die "$agent has a program interpreter: not static"
fi
if readelf -dW "$agent" | grep -q '(NEEDED)'; then
  die "$agent needs shared libraries: $(readelf -dW "$agent" | grep '(NEEDED)' | tr -s ' ')"
fi
"$agent" --version >&2 || die "$agent does not run"
agent_size=$(stat -c %s "$agent")
log "agent: $agent ($agent_size bytes, static)"

# --- the archive --------------------------------------------------------------
mkdir -p "$out_dir"
tmp_cpio="$(mktemp "$out_dir/.initramfs.cpio.XXXXXX")"
tmp_image="$(mktemp "$out_dir/.initramfs.image.XXXXXX")"
trap 'rm -f "$tmp_cpio" "$tmp_image"' EXIT

ino=0
# pad N: NUL bytes that bring a length of N up to a multiple of 4.
pad() { head -c $(( (4 - $1 % 4) % 4 )) /dev/zero; }
# header NAME MODE NLINK SIZE RDEVMAJOR RDEVMINOR: one newc header plus name.
header() {
  local name=$1 namesize=$(( ${#1} + 1 ))
  ino=$((ino + 1))
  printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
    "$ino" "$2" 0 0 "$3" "$mtime" "$4" 0 0 "$5" "$6" "$namesize" 0
  printf '%s\0' "$name"
  pad $((110 + namesize))
}
cpio_dir() { header "$1" $((8#040000 | $2)) 2 0 0 0; }
cpio_chardev() { header "$1" $((8#020000 | $2)) 1 0 "$3" "$4"; }
cpio_file() {
  local size
  size=$(stat -c %s "$3")
  header "$1" $((8#0100000 | $2)) 1 "$size" 0 0
  cat "$3"
  pad "$size"
}
cpio_trailer() { ino=-1; header 'TRAILER!!!' 0 1 0 0 0; }

# Sorted by name, parents first. /init must be a regular file: the kernel execs it.
{
  cpio_dir dev 0755
  cpio_chardev dev/console 0600 5 1 # init's stdin/stdout/stderr before /dev is mounted
  cpio_chardev dev/null 0666 1 3
  cpio_dir etc 0755
  cpio_file init 0755 "$agent"
  cpio_dir proc 0755
  cpio_dir root 0700
  cpio_dir run 0755
  cpio_dir sbin 0755
  cpio_dir sys 0755
  cpio_dir tmp 01777
  cpio_trailer
} >"$tmp_cpio"

listing="$(cpio -it --quiet <"$tmp_cpio" | tr '\n' ' ')"
expected="dev dev/console dev/null etc init proc root run sbin sys tmp "
[ "$listing" = "$expected" ] || die "cpio lists '$listing', expected '$expected'"
cpio -itv --quiet <"$tmp_cpio" | grep -q '^crw-------.* 5, *1 .* dev/console$' ||
  die "dev/console is not char 5:1 in the archive"

case "$compress" in
  gzip) gzip -9 -n -c "$tmp_cpio" >"$tmp_image" ;;
  # The kernel only reads lz4's legacy frame format (-l).
  lz4) lz4 -l -9 -q -c "$tmp_cpio" >"$tmp_image" ;;
  none) cp "$tmp_cpio" "$tmp_image" ;;
esac
chmod 0644 "$tmp_image"
mv -f "$tmp_image" "$image"

log "initramfs: $image ($(stat -c %s "$image") bytes $compress, $(stat -c %s "$tmp_cpio") bytes uncompressed)"
echo "$image"
