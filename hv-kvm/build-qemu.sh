#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Build (or reuse from the cache) QEMU 10.0 with the pvfree patch series.
#
# Prints the absolute path of qemu-system-x86_64 as its only stdout line
# (the series' qtest, pvfree-pci-test, is installed beside it);
# progress goes to stderr.  The result is cached in
# $PVFREE_CACHE/qemu-<hash>/, where <hash> covers the Debian source version,
# the series file and every patch, every file of hv-kvm/qemu/ (pvfree's new
# QEMU files, and links to include/pvfree/abi.h and the host library; see
# scripts/build-lib.sh), this script and the configure flags.  A cache
# hit takes seconds.
#
# The tree is Debian's source with hv-kvm/qemu/ copied over it (links
# followed), then the patches of hv-kvm/patches/series, which change only
# files that exist upstream.
#
# usage: hv-kvm/build-qemu.sh [--print-hash | --print-tarball]
#   --print-tarball  download the source if needed and print the path of
#                    its orig tarball (pristine upstream); builds nothing
#
# Environment:
#   PVFREE_CACHE   cache root (default $HOME/.cache/pvfree)
#   PVFREE_JOBS    parallel compile jobs (default 2)
#   PVFREE_QEMU_VERSION  Debian source version to use (default: newest
#                  1:10.0.x that `apt-cache showsrc qemu` lists)
#   PVFREE_NO_SETUP=1    do not run scripts/setup-deps.sh on a cache miss
#   PVFREE_KEEP_TREE=1   keep the patched source and build tree in the cache
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=../scripts/build-lib.sh
. "$top/scripts/build-lib.sh"		# cache, jobs, lock, series_*

log() { echo "build-qemu: $*" >&2; }
die() { log "error: $*"; exit 1; }

configure_flags=(
	--python=/usr/bin/python3
	--target-list=x86_64-softmmu
	--without-default-features
	--enable-tcg
	--enable-kvm
	--disable-docs
	--disable-install-blobs
	--disable-werror
)

series_read "$here/patches" "$here/qemu"
patches=("${series_patches[@]}")

# --- the Debian source version -------------------------------------------
discover_version() {
	apt-cache showsrc qemu 2>/dev/null |
		awk '/^Package: /{p=$2} /^Version: /{if (p=="qemu") print $2}' |
		grep -E '^1:10\.0\.' |
		sort -u | sort -V | tail -n1
}
ver=${PVFREE_QEMU_VERSION:-}
if [ -z "$ver" ]; then
	ver=$(discover_version || true)
	if [ -z "$ver" ]; then
		# The deb-src entry may not be set up yet, or apt lists are stale.
		if [ -z "${PVFREE_NO_SETUP:-}" ]; then
			log "no qemu 10.0.x source listed; running setup-deps.sh kvm"
			"$top/scripts/setup-deps.sh" kvm >&2
			ver=$(discover_version || true)
		fi
	fi
	if [ -z "$ver" ]; then
		# Fall back to whatever is already downloaded.
		ver=$(ls "$cache"/src/qemu_10.0.*.dsc 2>/dev/null |
		      sed 's/.*qemu_\(.*\)\.dsc/1:\1/' | sort -V | tail -n1)
	fi
	[ -n "$ver" ] || die "cannot find a qemu 1:10.0.x source package"
fi
uver=${ver#*:}			# without epoch: 10.0.13+ds-0+deb13u1
upstream=${uver%%+*}		# 10.0.13
upstream=${upstream%%-*}

# --- the cache key --------------------------------------------------------
key() {
	{
		echo "version $ver"
		echo "configure ${configure_flags[*]}"
		sha256sum "$0" | awk '{print $1}'
		series_inputs
	} | sha256sum | cut -c1-16
}
# --- source: download once, unpack with Debian's patches -------------------
srcdir=$cache/src
dsc=$srcdir/qemu_${uver}.dsc
download_source() {
	mkdir -p "$srcdir"
	if [ ! -f "$dsc" ]; then
		log "downloading source package qemu=$ver"
		(cd "$srcdir" && apt-get source --download-only "qemu=$ver" >&2)
	fi
	[ -f "$dsc" ] || die "download of qemu=$ver failed"
}

hash=$(key)
if [ "${1:-}" = "--print-hash" ]; then
	echo "$hash"
	exit 0
fi
# The pristine upstream source, the base of scripts/make-series.
if [ "${1:-}" = "--print-tarball" ]; then
	download_source
	ls "$srcdir/qemu_${uver%%-*}.orig.tar.xz"
	exit 0
fi

out=$cache/qemu-$hash
bin=$out/bin/qemu-system-x86_64
if [ -x "$bin" ] && [ -f "$out/.complete" ]; then
	log "cache hit: $out (qemu $ver, ${#patches[@]} patches)"
	echo "$bin"
	exit 0
fi

log "cache miss: building qemu $ver with ${#patches[@]} patches into $out"
if [ -z "${PVFREE_NO_SETUP:-}" ]; then
	"$top/scripts/setup-deps.sh" kvm >&2
fi

download_source

mkdir -p "$out"
exec 9>"$lock"
log "waiting for $lock"
flock 9

# Re-check: another invocation may have built it while we waited.
if [ -x "$bin" ] && [ -f "$out/.complete" ]; then
	log "built meanwhile: $out"
	echo "$bin"
	exit 0
fi

tree=$out/qemu-$upstream
rm -rf "$tree" "$out/bin" "$out/.complete"
log "unpacking $dsc (with Debian's patches)"
dpkg-source --no-check -x "$dsc" "$tree" >&2

# pvfree's new files at their places in the tree, then the patches.
series_apply "$tree"

mkdir -p "$tree/build"
log "configure ${configure_flags[*]}"
(cd "$tree/build" && ../configure "${configure_flags[@]}" >"$out/configure.log" 2>&1) ||
	{ tail -n 30 "$out/configure.log" >&2; die "configure failed ($out/configure.log)"; }
log "compiling with -j$jobs (log: $out/build.log)"
start=$(date +%s)
# The series' qtest too: hv-kvm/run-qtest runs it against this binary.
(cd "$tree/build" && ninja -j "$jobs" qemu-system-x86_64 \
	tests/qtest/pvfree-pci-test >"$out/build.log" 2>&1) ||
	{ grep -E 'error|FAILED' "$out/build.log" | head -n 30 >&2; die "build failed ($out/build.log)"; }
log "compiled in $(( $(date +%s) - start )) s"

install -D -m 0755 "$tree/build/qemu-system-x86_64" "$bin"
install -D -m 0755 "$tree/build/tests/qtest/pvfree-pci-test" \
	"$out/bin/pvfree-pci-test"
echo "$ver" > "$out/VERSION"
printf '%s\n' "${patches[@]##*/}" > "$out/PATCHES"
touch "$out/.complete"
if [ -z "${PVFREE_KEEP_TREE:-}" ]; then
	rm -rf "$tree"		# ~800 MB; the binary needs only -L firmware
fi
log "done: $bin"
echo "$bin"
