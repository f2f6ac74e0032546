#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Run the kernel's checkpatch.pl --strict on the given files and fail on
# any error, warning or check.  checkpatch.pl comes from Debian's
# linux-source-6.1 package (scripts/setup-deps.sh kernel-src); only the
# few files it needs are extracted, once, into
# $PVFREE_CACHE/checkpatch-<package version>/.
#
# usage: guest/checkpatch.sh FILE...
set -euo pipefail

tarball=/usr/src/linux-source-6.1.tar.xz
if [ ! -f "$tarball" ]; then
	echo "checkpatch: $tarball missing (scripts/setup-deps.sh kernel-src)" >&2
	exit 1
fi
ver=$(dpkg-query -W -f='${Version}' linux-source-6.1)
dir=${PVFREE_CACHE:-$HOME/.cache/pvfree}/checkpatch-$ver

if [ ! -f "$dir/scripts/checkpatch.pl" ]; then
	echo "checkpatch: extracting checkpatch.pl from $tarball" >&2
	mkdir -p "$(dirname "$dir")"
	tmp=$(mktemp -d "${dir}.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	flock /tmp/pvfree-heavy.lock tar -xJf "$tarball" -C "$tmp" \
		--strip-components=1 \
		linux-source-6.1/scripts/checkpatch.pl \
		linux-source-6.1/scripts/spelling.txt \
		linux-source-6.1/scripts/const_structs.checkpatch
	mkdir -p "$dir"
	cp -r "$tmp/scripts" "$dir/"
fi

status=0
for f in "$@"; do
	if ! out=$(perl "$dir/scripts/checkpatch.pl" --no-tree --strict \
			--show-types -f "$f" 2>&1) ||
	   ! grep -q '^total: 0 errors, 0 warnings, 0 checks' <<<"$out"; then
		echo "$out"
		status=1
	else
		echo "checkpatch: $(basename "$f"): clean"
	fi
done
exit $status
