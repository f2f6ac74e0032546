#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Make the guest kernels pvfree is tested on available: installs the
# matching linux-headers-* packages (to build the module) and extracts the
# linux-image-* packages (no install) into $PVFREE_CACHE/kernels/RELEASE/
# (vmlinuz, config, System.map).
#
#   cloud-6.1   Debian 12's linux-image-6.1.0-N-cloud-amd64
#   amd64-6.1   Debian 12's linux-image-6.1.0-N-amd64 (has CONFIG_PAGE_POISONING)
#   cloud-6.12  linux-image-6.12.N+deb12-cloud-amd64 from bookworm-backports
#
# usage: scripts/guest-kernels.sh [FLAVOUR...]   (default: all three)
# Prints one line per flavour: "FLAVOUR RELEASE KERNEL_DIR HEADERS_DIR".
set -euo pipefail

cache=${PVFREE_CACHE:-$HOME/.cache/pvfree}/kernels
mkdir -p "$cache"
flavours=("$@")
[ ${#flavours[@]} -eq 0 ] && flavours=(cloud-6.1 amd64-6.1 cloud-6.12)

# release_of META [APT_OPTS...]: the ABI release a meta-package points at
release_of() {
	local meta=$1; shift
	apt-cache depends "$@" "$meta" 2>/dev/null |
		sed -n 's/^ *Depends: linux-image-\(.*\)$/\1/p' | head -n 1
}

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

for flavour in "${flavours[@]}"; do
	case "$flavour" in
	cloud-6.1)  rel=$(release_of linux-image-cloud-amd64); opts=() ;;
	amd64-6.1)  rel=$(release_of linux-image-amd64); opts=() ;;
	cloud-6.12) rel=$(release_of linux-image-cloud-amd64 -t bookworm-backports)
		    opts=(-t bookworm-backports) ;;
	*) echo "guest-kernels: unknown flavour $flavour" >&2; exit 2 ;;
	esac
	if [ -z "$rel" ]; then
		echo "guest-kernels: cannot resolve $flavour (apt-get update?)" >&2
		exit 1
	fi
	if ! installed "linux-headers-$rel"; then
		echo "guest-kernels: installing linux-headers-$rel" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends "${opts[@]}" \
			"linux-headers-$rel" >&2
	fi
	dir=$cache/$rel
	if [ ! -f "$dir/vmlinuz" ]; then
		echo "guest-kernels: extracting linux-image-$rel" >&2
		tmp=$(mktemp -d)
		(cd "$tmp" && apt-get download "${opts[@]}" \
			"linux-image-$rel" >&2 2>/dev/null ||
		 cd "$tmp" && apt-get download "linux-image-$rel" >&2)
		dpkg-deb -x "$tmp"/linux-image-*.deb "$tmp/x"
		mkdir -p "$dir"
		cp "$tmp/x/boot/vmlinuz-$rel" "$dir/vmlinuz"
		cp "$tmp/x/boot/config-$rel" "$dir/config"
		cp "$tmp/x/boot/System.map-$rel" "$dir/System.map" 2>/dev/null || true
		rm -rf "$tmp"
	fi
	echo "$flavour $rel $dir /usr/src/linux-headers-$rel"
done
