#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Build (or reuse from the cache) libvirt 11.3 with pvfree's patch series
# (hv-kvm/libvirt/patches/series): only what the QEMU driver, libvirtd and
# virsh need, plus the QEMU driver's qemuxmlconftest.  The build is run
# uninstalled, through its build/run script.
#
# Prints the absolute path of build/run as its only stdout line; progress
# goes to stderr.  Cached in $PVFREE_CACHE/libvirt-<hash>/, where <hash>
# covers the source tarball, the series file, every patch and new file
# (scripts/build-lib.sh), this script and the meson options.  A cache
# hit takes a second.
#
# usage: hv-kvm/libvirt/build-libvirt.sh [--print-hash | --test]
#   --test   also run qemuxmlconftest in the (cached) build tree
#
# Environment:
#   PVFREE_CACHE   cache root (default $HOME/.cache/pvfree)
#   PVFREE_JOBS    parallel compile jobs (default 2)
#   PVFREE_NO_SETUP=1    do not run scripts/setup-deps.sh on a cache miss
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
# shellcheck source=../../scripts/build-lib.sh
. "$top/scripts/build-lib.sh"		# cache, jobs, lock, series_*
version=11.3.0
tarball=$cache/src/libvirt_$version.orig.tar.xz
newdir=$here/libvirt

log() { echo "build-libvirt: $*" >&2; }
die() { log "error: $*"; exit 1; }

meson_flags=(
	--prefix=/usr --sysconfdir=/etc --localstatedir=/var
	--libdir=lib/x86_64-linux-gnu
	--auto-features=disabled
	-Ddriver_qemu=enabled -Ddriver_remote=enabled -Ddriver_libvirtd=enabled
	-Djson_c=enabled -Dlibnl=enabled
	-Dtests=enabled -Dexpensive_tests=disabled -Ddocs=disabled
	-Dinit_script=none -Dwerror=false
)
targets=(src/libvirtd src/libvirt_driver_qemu.so tools/virsh
	 tests/qemuxmlconftest tests/virschematest
	 tests/libqemuxml2argvmock.so tests/libdomaincapsmock.so
	 tests/libvirrandommock.so tests/libqemucpumock.so
	 tests/libvirpcimock.so tests/libvirnumamock.so)

series_read "$here/patches" "$newdir"
patches=("${series_patches[@]}")

test_only=0
case "${1:-}" in
--print-hash|'') ;;
--test) test_only=1 ;;
*) die "usage: $0 [--print-hash | --test]" ;;
esac

key() {
	{
		echo "libvirt $version"
		echo "meson ${meson_flags[*]}"
		echo "targets ${targets[*]}"
		sha256sum "$0" | awk '{print $1}'
		series_inputs
	} | sha256sum | cut -c1-16
}
hash=$(key)
if [ "${1:-}" = "--print-hash" ]; then
	echo "$hash"
	exit 0
fi

out=$cache/libvirt-$hash
tree=$out/libvirt-$version
run=$tree/build/run

run_tests() {	# libvirt's own tests of what the series touches
	local t
	for t in qemuxmlconftest virschematest; do
		log "$t (log: $out/$t.log)"
		if (cd "$tree/build" && VIR_TEST_DEBUG=1 "./tests/$t" \
			>"$out/$t.log" 2>&1); then
			log "$t: $(grep -c '\.\.\. OK$' "$out/$t.log" || true) OK" \
			    "($(grep -cE '[ /]pvfree[-.].*\.\.\. OK$' "$out/$t.log" || true) of pvfree's)"
		else
			grep -E 'FAILED$' "$out/$t.log" | head -n 20 >&2
			die "$t failed ($out/$t.log)"
		fi
	done
}

if [ -x "$run" ] && [ -f "$out/.complete" ]; then
	log "cache hit: $out (libvirt $version, ${#patches[@]} patches)"
	[ "$test_only" = 1 ] && run_tests
	echo "$run"
	exit 0
fi

log "cache miss: building libvirt $version with ${#patches[@]} patches into $out"
if [ -z "${PVFREE_NO_SETUP:-}" ]; then
	"$top/scripts/setup-deps.sh" libvirt-src >&2
fi
if [ ! -f "$tarball" ]; then
	log "downloading the libvirt source package (orig tarball)"
	mkdir -p "$cache/src"
	# The .dsc of trixie's libvirt may 404 while the tarball is there.
	(cd "$cache/src" && apt-get source --download-only libvirt >&2) || true
fi
[ -f "$tarball" ] || die "no $tarball (apt-get source --download-only libvirt)"

mkdir -p "$out"
exec 9>"$lock"
log "waiting for $lock"
flock 9
if [ -x "$run" ] && [ -f "$out/.complete" ]; then
	log "built meanwhile: $out"
	[ "$test_only" = 1 ] && run_tests
	echo "$run"
	exit 0
fi

rm -rf "$tree" "$out/.complete"
log "unpacking $(basename "$tarball")"
tar -C "$out" -xf "$tarball"
series_apply "$tree"

log "meson setup ${meson_flags[*]}"
(cd "$tree" && meson setup build "${meson_flags[@]}" >"$out/configure.log" 2>&1) ||
	{ tail -n 30 "$out/configure.log" >&2; die "meson setup failed ($out/configure.log)"; }
log "compiling ${targets[*]} with -j$jobs (log: $out/build.log)"
start=$(date +%s)
set +e
(cd "$tree" && ninja -C build -j "$jobs" "${targets[@]}") 2>&1 |
	tee "$out/build.log" |
	awk '/^\[[0-9]+\/[0-9]+\]/ { split(substr($1, 2), a, "/");
	     if (a[1] % 50 == 0 || a[1] == a[2]) {
		     printf "build-libvirt: %s\n", $1 > "/dev/stderr"; fflush() } }'
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 0 ] ||
	{ grep -E 'error|FAILED' "$out/build.log" | head -n 30 >&2; die "build failed ($out/build.log)"; }
log "compiled in $(( $(date +%s) - start )) s"
[ -x "$run" ] || die "no $run after the build"
printf '%s\n' "${patches[@]##*/}" > "$out/PATCHES"
touch "$out/.complete"
[ "$test_only" = 1 ] && run_tests
log "done: $run"
echo "$run"
