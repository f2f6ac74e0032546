#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Generate the upstream series (scripts/make-series: hv-kvm/patches plus the
# new files of hv-kvm/qemu/) and run QEMU's own scripts/checkpatch.pl on
# every patch of it; fail on any error or warning.  checkpatch.pl and the
# base of the series come from the QEMU 10.0 orig tarball that
# `hv-kvm/build-qemu.sh --print-tarball` downloads into $PVFREE_CACHE/src.
#
# The files pvfree imports verbatim, the links in hv-kvm/qemu/ (its ABI
# header and host library: MIT, shared with Linux and Xen, so in Linux
# style where Linux needs it), are left out of the check, as QEMU's
# checkpatch.pl leaves out linux-headers/ and include/standard-headers/.
#
# usage: hv-kvm/checkpatch.sh [--out DIR]   (default: a temporary directory;
#        with --out the generated series stays there)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
cache=${PVFREE_CACHE:-$HOME/.cache/pvfree}

log() { echo "qemu-checkpatch: $*" >&2; }

out=
if [ "${1:-}" = --out ]; then
	out=$2
fi

# build-qemu.sh owns the choice of version and the download.
tarball=$("$here/build-qemu.sh" --print-tarball)

dir=$cache/qemu-checkpatch-$(basename "$tarball" .orig.tar.xz)
if [ ! -f "$dir/scripts/checkpatch.pl" ]; then
	log "extracting scripts/checkpatch.pl from $(basename "$tarball")"
	mkdir -p "$cache"
	tmp=$(mktemp -d "$dir.XXXXXX")
	tar -xJf "$tarball" -C "$tmp" --strip-components=1 \
		--wildcards --no-wildcards-match-slash \
		'qemu-*/scripts/checkpatch.pl'
	rm -rf "$dir"
	mv "$tmp" "$dir"
fi

scratch=$(mktemp -d /tmp/pvfree-qemu-checkpatch.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
[ -n "$out" ] || out=$scratch/series
mapfile -t patches < <("$top/scripts/make-series" --tarball "$tarball" \
	--overlay "$here/qemu" --patches "$here/patches" --out "$out")

# Drop the diffs of the verbatim imports from a patch (stdin to stdout).
imports=$(cd "$here/qemu" && find . -type l | sed 's|^\./|a/|')
without_imports() {
	awk -v imports="$imports" '
	     BEGIN { n = split(imports, list, "\n"); for (i = 1; i <= n; i++) imported[list[i]] = 1 }
	     /^diff --git /{ skip = ($3 in imported) }
	     /^-- $/{ skip = 0 }
	     !skip'
}

status=0
for p in "${patches[@]}"; do
	checked=$scratch/$(basename "$p")
	without_imports < "$p" > "$checked"
	# --no-tree: checkpatch.pl runs outside a QEMU tree.  It exits
	# non-zero on errors; warnings only show in its summary line.
	if ! result=$(perl "$dir/scripts/checkpatch.pl" --no-tree "$checked" 2>&1) ||
	   ! grep -q '^total: 0 errors, 0 warnings' <<<"$result"; then
		echo "$result"
		status=1
	else
		echo "qemu-checkpatch: $(basename "$p"): clean"
	fi
done
exit $status
