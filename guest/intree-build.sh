#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# In-tree build check: pvfree as drivers/virt/pvfree in Debian's
# linux-source-6.1 with the cloud-6.1 kernel's config.
#
# The source is extracted once into $PVFREE_CACHE/linux-source-6.1-<ver>/;
# configuring and modules_prepare are redone only when the package version
# or the cloud kernel release changes.  Heavy steps run under
# flock /tmp/pvfree-heavy.lock with at most -j2.  Then
# "make M=drivers/virt/pvfree" must build pvfree.ko without warnings.
#
# usage: guest/intree-build.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
cache=${PVFREE_CACHE:-$HOME/.cache/pvfree}
tarball=/usr/src/linux-source-6.1.tar.xz
lock=/tmp/pvfree-heavy.lock
jobs=${JOBS:-2}

if [ ! -f "$tarball" ]; then
	echo "intree: $tarball missing (scripts/setup-deps.sh kernel-src)" >&2
	exit 1
fi
ver=$(dpkg-query -W -f='${Version}' linux-source-6.1)
read -r _ rel kdir hdir < <("$top/scripts/guest-kernels.sh" cloud-6.1)
src=$cache/linux-source-6.1-$ver
stamp=$src/.pvfree-prepared
key="linux-source-6.1 $ver config $rel"

if [ ! -f "$src/Makefile" ]; then
	echo "intree: extracting $tarball into $src"
	rm -rf "$src.tmp"
	mkdir -p "$src.tmp"
	flock "$lock" tar -xJf "$tarball" -C "$src.tmp" --strip-components=1
	rm -rf "$src"
	mv "$src.tmp" "$src"
fi

"$here/add-to-kernel-tree.sh" "$src" >/dev/null

kmake() {
	make -C "$src" -j"$jobs" "$@"
}

if [ "$(cat "$stamp" 2>/dev/null)" != "$key" ] ||
   ! grep -q '^CONFIG_PVFREE=m' "$src/.config"; then
	echo "intree: configuring ($key)"
	rm -f "$stamp"
	cp "$kdir/config" "$src/.config"
	# Debian's key files are not in linux-source; pahole-less BTF is off.
	"$src/scripts/config" --file "$src/.config" \
		--enable VIRT_DRIVERS --module PVFREE \
		--set-str SYSTEM_TRUSTED_KEYS "" \
		--set-str SYSTEM_REVOCATION_KEYS "" \
		--disable DEBUG_INFO_BTF
	kmake -s olddefconfig
	grep -q '^CONFIG_PVFREE=m' "$src/.config" || {
		echo "intree: CONFIG_PVFREE=m did not stick" >&2; exit 1; }
	echo "intree: modules_prepare"
	flock "$lock" make -C "$src" -j"$jobs" -s modules_prepare
	# Symbol versions of the real kernel, so modpost checks our imports.
	cp "$hdir/Module.symvers" "$src/Module.symvers"
	echo "$key" >"$stamp"
fi

log=$src/drivers/virt/pvfree/build.log
rm -f "$src/drivers/virt/pvfree/pvfree.ko"
kmake M=drivers/virt/pvfree modules >"$log" 2>&1 || { cat "$log"; exit 1; }
if grep -iE 'warning|error' "$log"; then
	echo "intree: warnings, see $log" >&2
	exit 1
fi
test -f "$src/drivers/virt/pvfree/pvfree.ko"
echo "intree: built $src/drivers/virt/pvfree/pvfree.ko"
