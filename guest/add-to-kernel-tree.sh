#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Add the pvfree guest driver to a Linux source tree as drivers/virt/pvfree/
# (CONFIG_PVFREE): copies the sources and include/pvfree/abi.h, and wires
# drivers/virt/Kconfig and drivers/virt/Makefile.  Idempotent: running it
# again refreshes the copied sources and leaves the wiring alone.
#
# usage: guest/add-to-kernel-tree.sh KSRC
set -euo pipefail

if [ $# -ne 1 ] || [ ! -f "$1/drivers/virt/Kconfig" ]; then
	echo "usage: $0 KSRC (a Linux source tree)" >&2
	exit 2
fi
ksrc=$1
here=$(cd "$(dirname "$0")" && pwd)
dst=$ksrc/drivers/virt/pvfree

mkdir -p "$dst"
for f in pvfree_main.c pvfree_storage.c pvfree_walk.c pvfree_internal.h \
	 pvfree_pci.c pvfree_xen.c pvfree_selftest.c pvfree.h Kconfig Kbuild; do
	cmp -s "$here/$f" "$dst/$f" || cp "$here/$f" "$dst/$f"
done
cmp -s "$here/../include/pvfree/abi.h" "$dst/abi.h" ||
	cp "$here/../include/pvfree/abi.h" "$dst/abi.h"

kconfig=$ksrc/drivers/virt/Kconfig
if ! grep -q '^source "drivers/virt/pvfree/Kconfig"' "$kconfig"; then
	# before the closing "endif" of "if VIRT_DRIVERS"
	last=$(grep -n '^endif' "$kconfig" | tail -n 1 | cut -d: -f1)
	if [ -z "$last" ]; then
		printf '\nsource "drivers/virt/pvfree/Kconfig"\n' >>"$kconfig"
	else
		sed -i "${last}i source \"drivers/virt/pvfree/Kconfig\"\n" \
			"$kconfig"
	fi
fi

makefile=$ksrc/drivers/virt/Makefile
grep -q '^obj-$(CONFIG_PVFREE)' "$makefile" ||
	printf 'obj-$(CONFIG_PVFREE)\t\t+= pvfree/\n' >>"$makefile"

echo "pvfree: added to $dst"
