#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Install pvfree's build and test dependencies from Debian packages, by name.
# Idempotent: checks before it installs, runs apt-get update only when an
# apt source was added or a package is missing, and adds deb-src/backports
# entries only when asked for the parts that need them.
#
# usage: scripts/setup-deps.sh [base] [kvm] [xen] [kernel-src] [bench] [libvirt]
#                              [libvirt-src]
set -euo pipefail

SOURCES=/etc/apt/sources.list.d/pvfree.sources
need_update=0
groups=("$@")
[ ${#groups[@]} -eq 0 ] && groups=(base)

as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

add_source() {	# add_source NAME STANZA
	if ! grep -qs "^# pvfree: $1\$" "$SOURCES"; then
		printf '# pvfree: %s\n%s\n\n' "$1" "$2" | as_root tee -a "$SOURCES" >/dev/null
		need_update=1
	fi
}

add_debian_source() {	# add_debian_source NAME TYPE SUITE: Debian's main
	add_source "$1" "Types: $2
URIs: http://deb.debian.org/debian
Suites: $3
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
}

apt_update_once() {
	if [ "$need_update" = 1 ] || [ ! -d /var/lib/apt/lists ] ||
	   [ -z "$(ls /var/lib/apt/lists/*_Packages* 2>/dev/null)" ]; then
		echo "setup-deps: apt-get update"
		as_root apt-get update -qq
		need_update=0
	fi
}

pkgs=()
want_bpo=()
want() { pkgs+=("$@"); }

for g in "${groups[@]}"; do
	case "$g" in
	base)
		want build-essential libcmocka-dev clang llvm libclang-rt-14-dev \
		     python3 pkg-config ;;
	kvm)
		add_debian_source backports deb bookworm-backports
		add_debian_source trixie-src deb-src trixie
		want dpkg-dev git libglib2.0-dev libpixman-1-dev zlib1g-dev \
		     libfdt-dev flex bison ninja-build seabios qemu-system-data \
		     busybox-static cpio kmod linux-headers-amd64 \
		     linux-headers-cloud-amd64 gcc-12 bc libelf-dev xz-utils
		want_bpo+=(meson) ;;
	xen)
		add_debian_source bookworm-src deb-src bookworm
		# hv-xen/build-xen-tools.sh: Debian's Xen 4.17 source, the
		# tools' configure and libs, the hypervisor (--hypervisor).
		want dpkg-dev autoconf libyajl-dev libzstd-dev uuid-dev \
		     libncurses-dev libssl-dev acpica-tools zlib1g-dev libbz2-dev \
		     liblzma-dev python3-dev pkg-config flex bison \
		     build-essential
		# tests/xen: dom0 hypervisor and toolstack, initramfs, QEMU
		# firmware.
		want xen-hypervisor-4.17-amd64 xen-utils-4.17 busybox-static \
		     cpio kmod gzip qemu-system-data seabios ;;
	kernel-src)
		want linux-source-6.1 bc libelf-dev libssl-dev flex bison ;;
	bench)
		want gnuplot-nox ;;
	libvirt)
		# tests/libvirt: libvirt 11.3 (bookworm's 9.0 predates QEMU
		# 10.0's QMP); libvirtd runs directly, there is no systemd.
		add_debian_source backports deb bookworm-backports
		want seabios qemu-system-data busybox-static cpio kmod
		want_bpo+=(libvirt-daemon libvirt-daemon-driver-qemu
			   libvirt-clients) ;;
	libvirt-src)
		# hv-kvm/libvirt/build-libvirt.sh: trixie's libvirt 11.3 source,
		# only what the QEMU driver needs.
		add_debian_source trixie-src deb-src trixie
		want dpkg-dev ninja-build pkg-config libglib2.0-dev \
		     libgnutls28-dev libxml2-dev libxml2-utils xsltproc \
		     libtirpc-dev libjson-c-dev libnl-3-dev libnl-route-3-dev \
		     python3-docutils gcc
		want_bpo+=(meson) ;;
	*)
		echo "setup-deps: unknown group '$g'" >&2; exit 2 ;;
	esac
done

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
		missing+=("$p")
done
bpo_missing=()
for p in "${want_bpo[@]:-}"; do
	[ -n "$p" ] || continue
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
		bpo_missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ] || [ ${#bpo_missing[@]} -gt 0 ]; then
	need_update=1
	apt_update_once
fi
export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup-deps: installing ${missing[*]}"
	as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [ ${#bpo_missing[@]} -gt 0 ]; then
	echo "setup-deps: installing from bookworm-backports: ${bpo_missing[*]}"
	as_root apt-get install -y -qq --no-install-recommends \
		-t bookworm-backports "${bpo_missing[@]}"
fi
[ "$need_update" = 1 ] && apt_update_once
exit 0
