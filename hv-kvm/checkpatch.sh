#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Run QEMU's own scripts/checkpatch.pl on every patch of hv-kvm/patches/series
# and fail on any error or warning.  checkpatch.pl is taken from the QEMU
# 10.0 source tarball that hv-kvm/build-qemu.sh downloads into
# $PVFREE_CACHE/src (running build-qemu.sh first if it is not there yet,
# which is a cache hit once QEMU is built) and is extracted once into
# $PVFREE_CACHE/qemu-checkpatch-<tarball>/.
#
# usage: hv-kvm/checkpatch.sh [PATCH...]   (default: the series)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${PVFREE_CACHE:-$HOME/.cache/pvfree}

log() { echo "qemu-checkpatch: $*" >&2; }

find_tarball() {
	ls "$cache"/src/qemu_10.0.*.orig.tar.xz 2>/dev/null | sort -V | tail -n1
}

tarball=$(find_tarball)
if [ -z "$tarball" ]; then
	# build-qemu.sh owns the choice of version and the download.
	log "no QEMU source in $cache/src; running build-qemu.sh"
	"$here/build-qemu.sh" >/dev/null
	tarball=$(find_tarball)
	[ -n "$tarball" ] || { log "error: still no QEMU source tarball"; exit 1; }
fi

dir=$cache/qemu-checkpatch-$(basename "$tarball" .orig.tar.xz)
if [ ! -f "$dir/scripts/checkpatch.pl" ]; then
	log "extracting scripts/checkpatch.pl from $(basename "$tarball")"
	mkdir -p "$cache"
	tmp=$(mktemp -d "$dir.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	tar -xJf "$tarball" -C "$tmp" --strip-components=1 \
		--wildcards --no-wildcards-match-slash \
		'qemu-*/scripts/checkpatch.pl'
	rm -rf "$dir"
	mv "$tmp" "$dir"
	trap - EXIT
fi

patches=("$@")
if [ ${#patches[@]} -eq 0 ]; then
	while read -r p _; do
		case "$p" in ''|'#'*) continue ;; esac
		patches+=("$here/patches/$p")
	done < "$here/patches/series"
fi

status=0
for p in "${patches[@]}"; do
	# --no-tree: checkpatch.pl runs outside a QEMU tree.  It exits
	# non-zero on errors; warnings only show in its summary line.
	if ! out=$(perl "$dir/scripts/checkpatch.pl" --no-tree "$p" 2>&1) ||
	   ! grep -q '^total: 0 errors, 0 warnings' <<<"$out"; then
		echo "$out"
		status=1
	else
		echo "qemu-checkpatch: $(basename "$p"): clean"
	fi
done
exit $status
