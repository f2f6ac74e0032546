#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Build Debian 12's Xen 4.17 with pvfree's libxenguest patches.
#
#   hv-xen/build-xen-tools.sh               patched libxenguest (and the
#       libraries it needs); prints the directory holding libxenguest.so*
#   hv-xen/build-xen-tools.sh --print-tarball  fetch the source only and
#       print the path of its orig tarball (pristine upstream)
#   hv-xen/build-xen-tools.sh --hypervisor  Debian's hypervisor
#       configuration plus CONFIG_SHADOW_PAGING=y (needed for live
#       migration of PV guests); prints the path of the multiboot image
#       `xen' (for QEMU -kernel)
#
# The Xen source is Debian's (apt-get source, with Debian's patches
# applied); XEN_SRC_VERSION picks a version, default: the newest 4.17
# listed by `apt-cache showsrc xen' that downloads.  At build time
# hv-xen/xen/ (pvfree's new files, and links to include/pvfree/abi.h and
# the host library) is copied over the tree, links followed, then
# hv-xen/patches/series is applied: patches of files that exist upstream.  Results are cached under
# $PVFREE_CACHE/xen-tools-<hash>/ and xen-hv-<hash>/, keyed by a hash of all
# inputs; the only stdout line is the result.  Logs go to stderr and to
# the cache directory (build.log).  Needs: scripts/setup-deps.sh xen.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${PVFREE_CACHE:-$HOME/.cache/pvfree}
scratch=${PVFREE_XEN_SCRATCH:-/tmp/pvfree-xen}
lock=/tmp/pvfree-heavy.lock
jobs=${JOBS:-2}

mode=tools
case "${1:-}" in
"") ;;
--hypervisor) mode=hv ;;
--print-tarball) mode=tarball ;;
*) echo "usage: $0 [--hypervisor | --print-tarball]" >&2; exit 2 ;;
esac

log() { echo "build-xen-tools: $*" >&2; }

# --- the source package ------------------------------------------------
srcdir=$cache/src/xen
mkdir -p "$srcdir" "$scratch"

fetch_source() {	# fetch_source VERSION: 0 if its .dsc is (now) present
	local v=$1
	[ -f "$srcdir/xen_$v.dsc" ] && return 0
	log "apt-get source xen=$v"
	(cd "$srcdir" && apt-get source --download-only "xen=$v" >&2 2>&1) ||
		return 1
	[ -f "$srcdir/xen_$v.dsc" ]
}

if [ -n "${XEN_SRC_VERSION:-}" ]; then
	version=$XEN_SRC_VERSION
	fetch_source "$version" || { log "cannot fetch xen=$version"; exit 1; }
else
	version=
	# Newest first; the newest may 404 on the mirror.
	for v in $(apt-cache showsrc xen 2>/dev/null |
		   sed -n 's/^Version: \(4\.17\..*\)$/\1/p' | sort -rV); do
		if fetch_source "$v"; then version=$v; break; fi
	done
	if [ -z "$version" ]; then
		# Offline or no deb-src entry: use what is already cached.
		version=$(ls "$srcdir" 2>/dev/null |
			  sed -n 's/^xen_\(4\.17\..*\)\.dsc$/\1/p' | sort -rV |
			  head -n 1)
	fi
	if [ -z "$version" ]; then
		log "no Xen 4.17 source (scripts/setup-deps.sh xen adds deb-src)"
		exit 1
	fi
fi
dsc=$srcdir/xen_$version.dsc
if [ "$mode" = tarball ]; then
	# The pristine upstream source, the base of scripts/make-series.
	ls "$srcdir/xen_${version%-*}.orig.tar.xz"
	exit 0
fi

# --- the cache key -----------------------------------------------------
overlay=$here/xen
inputs=("$dsc" "$0")
overlay_files=()
if [ "$mode" = tools ]; then
	inputs+=("$here/patches/series")
	while read -r p _; do
		case "$p" in ''|'#'*) continue ;; esac
		inputs+=("$here/patches/$p")
	done < "$here/patches/series"
	mapfile -t overlay_files < <(cd "$overlay" &&
		find . -type f -o -type l | sed 's|^\./||' | sort)
	for f in "${overlay_files[@]}"; do
		[ -e "$overlay/$f" ] || { log "$overlay/$f is a dangling link"; exit 1; }
		inputs+=("$overlay/$f")
	done
fi
# The overlay's paths count too: moving a file changes the tree.
hash=$( (echo "$mode $version ${overlay_files[*]}"; cat "${inputs[@]}") |
	sha256sum | cut -c1-16)

if [ "$mode" = tools ]; then
	out=$cache/xen-tools-$hash
	result=$out/lib
	[ -e "$result/libxenguest.so.4.17" ] && { echo "$result"; exit 0; }
else
	out=$cache/xen-hv-$hash
	result=$out/xen
	[ -e "$result" ] && { echo "$result"; exit 0; }
fi

# --- unpack, copy pvfree's files, patch --------------------------------
work=$scratch/build-$mode-$hash
rm -rf "$work"
log "unpacking xen $version into $work"
dpkg-source -x "$dsc" "$work" >&2
cd "$work"
# Debian deletes these from its source; configure needs them.
cp /usr/share/autoconf/build-aux/config.guess \
   /usr/share/autoconf/build-aux/config.sub .

mkdir -p "$out.tmp"
buildlog=$out.tmp/build.log
: > "$buildlog"
run() { "$@" >> "$buildlog" 2>&1 || { log "failed: $* (see $buildlog)"; tail -n 30 "$buildlog" >&2; exit 1; }; }

if [ "$mode" = tools ]; then
	for f in "${overlay_files[@]}"; do
		install -D -m 0644 "$overlay/$f" "$f"
	done
	while read -r p _; do
		case "$p" in ''|'#'*) continue ;; esac
		log "applying $p"
		run patch -p1 --no-backup-if-mismatch -i "$here/patches/$p"
	done < "$here/patches/series"

	log "configuring the tools"
	run ./autogen.sh
	run ./configure --prefix=/usr --disable-docs --disable-stubdom \
		--disable-xen --enable-tools --disable-monitors \
		--disable-ocamltools --disable-xsmpolicy --disable-seabios \
		--disable-golang --disable-qemu-traditional --disable-rombios \
		--disable-ipxe --disable-pvshim \
		--with-system-qemu=/usr/bin/qemu-system-i386 \
		--with-xenstored=xenstored

	# libxenguest and the in-tree libraries it builds against, in
	# dependency order (tools/libs/uselibs.mk).
	log "building libxenguest (flock $lock, -j$jobs)"
	run flock "$lock" sh -c "
		make -C tools/include -j$jobs &&
		for d in toolcore toollog evtchn gnttab call foreignmemory \
			 devicemodel ctrl store guest; do
			make -C tools/libs/\$d -j$jobs || exit 1
		done"
	mkdir -p "$out.tmp/lib"
	cp -a tools/libs/guest/libxenguest.so* "$out.tmp/lib/"
	# Record what went in.
	{
		echo "xen $version"
		(cd "$here/patches" && sha256sum $(sed -n 's/^\([0-9][^ ]*\.patch\).*/\1/p' series))
		(cd "$overlay" && sha256sum "${overlay_files[@]}")
	} > "$out.tmp/inputs.txt"
else
	log "configuring the hypervisor (Debian's config + CONFIG_SHADOW_PAGING)"
	cp /boot/xen-4.17-amd64.config xen/.config
	sed -i 's/^# CONFIG_SHADOW_PAGING is not set$/CONFIG_SHADOW_PAGING=y/' \
		xen/.config
	grep -q '^CONFIG_SHADOW_PAGING=y' xen/.config ||
		echo 'CONFIG_SHADOW_PAGING=y' >> xen/.config
	export DEB_VERSION=$version+pvfree-shadow
	export DEB_MAINTAINER="pvfree <pvfree@localhost>"
	run make -C xen olddefconfig
	grep -q '^CONFIG_SHADOW_PAGING=y' xen/.config ||
		{ log "CONFIG_SHADOW_PAGING did not stick"; exit 1; }
	log "building the hypervisor (flock $lock, -j$jobs)"
	run flock "$lock" make -C xen -j"$jobs"
	cp xen/xen "$out.tmp/xen"
	cp xen/.config "$out.tmp/config"
fi

rm -rf "$out"
mv "$out.tmp" "$out"
cd /
rm -rf "$work"
echo "$result"
