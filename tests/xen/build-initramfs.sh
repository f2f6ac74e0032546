#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Build the dom0 initramfs for tests/xen/run-migrate (pvfree_tests.xen): busybox, Debian's Xen
# 4.17 toolstack with pvfree's patched libxenguest overriding Debian's (the
# original is kept in /opt/debian-lib for the unpatched runs), the dom0
# kernel's Xen modules, and the test domU: Debian's cloud kernel, a busybox
# initramfs with pvfree.ko (guest/, built for that kernel),
# tests/guest/pvfree-workload, tests/xen/pvfree-standin and tests/xen/xs,
# and its xl config.
#
# usage: tests/xen/build-initramfs.sh
# Prints "DOM0_VMLINUZ DOM0_INITRAMFS".  Cached under
# $PVFREE_CACHE/xen-test/<hash>/, keyed by a hash of all inputs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cache=${PVFREE_CACHE:-$HOME/.cache/pvfree}
log() { echo "build-initramfs: $*" >&2; }

read -r _ dom0_rel dom0_dir _ < <("$top/scripts/guest-kernels.sh" amd64-6.1)
read -r _ domu_rel domu_dir domu_hdir < <("$top/scripts/guest-kernels.sh" cloud-6.1)
xglib=$("$top/hv-xen/build-xen-tools.sh")
xenver=$(sed -n 's/^xen //p' "$xglib/../inputs.txt")

# dom0's toolstack: Debian's binary packages of the very version the
# patched libxenguest is built from (libxenguest uses libxenctrl's
# internals, so 4.17.5 and 4.17.7 must not be mixed: heap corruption).
debs=$cache/xen-debs-$xenver
tsroot=$debs/root
if [ ! -f "$tsroot/.done" ]; then
	log "fetching Debian's xen-utils-4.17 $xenver"
	mkdir -p "$debs"
	pkgs=(xen-utils-4.17 libxenmisc4.17 libxenstore4 libxencall1
	      libxenevtchn1 libxenforeignmemory1 libxengnttab1 libxendevicemodel1
	      libxenhypfs1 libxentoolcore1 libxentoollog1 xenstore-utils)
	(cd "$debs" && apt-get download "${pkgs[@]/%/=$xenver}" >&2)
	rm -rf "$tsroot"
	for d in "$debs"/*.deb; do dpkg-deb -x "$d" "$tsroot"; done
	touch "$tsroot/.done"
fi

# The dom0 kernel's modules, from its linux-image package:
# $kbase/lib/modules/$dom0_rel.
kbase=$cache/kernels/$dom0_rel/modules-root
if [ ! -f "$kbase/.done" ]; then
	log "extracting the modules of linux-image-$dom0_rel"
	tmp=$(mktemp -d)
	(cd "$tmp" && apt-get download "linux-image-$dom0_rel" >&2)
	dpkg-deb -x "$tmp"/linux-image-*.deb "$tmp/x"
	rm -rf "$kbase"
	mkdir -p "$kbase/lib/modules"
	cp -a "$tmp/x/lib/modules/$dom0_rel" "$kbase/lib/modules/"
	rm -rf "$tmp"
	depmod -b "$kbase" "$dom0_rel"
	touch "$kbase/.done"
fi

hash=$( (echo "$dom0_rel $domu_rel"
	 cat "$0" "$here"/dom0-init.sh "$here"/domu-init.sh "$here"/domu.cfg \
	     "$here"/countbytes.c "$here"/zerocheck.c "$here"/pvfree-standin.c "$here"/standin-check.c \
	     "$here"/xs.c "$here"/xs-wire.h "$top"/tests/guest/pvfree-workload.c \
	     "$top"/tests/guest/Makefile "$top"/guest/Makefile "$top"/guest/Kbuild \
	     "$top"/guest/*.[ch] \
	     "$top/include/pvfree/abi.h" "$xglib"/libxenguest.so.4.17.0
	 echo "$xenver"; dpkg-query -W busybox-static) | sha256sum | cut -c1-16)
out=$cache/xen-test/$hash
if [ -f "$out/dom0.cpio.gz" ]; then
	echo "$dom0_dir/vmlinuz $out/dom0.cpio.gz"
	exit 0
fi

scratch=${PVFREE_XEN_SCRATCH:-/tmp/pvfree-xen}
mkdir -p "$scratch"
work=$(mktemp -d "$scratch/initramfs.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- test programs -------------------------------------------------------
gcc -static -O2 -Wall -Wextra -Werror -o "$work/countbytes" "$here/countbytes.c"
gcc -static -O2 -Wall -Wextra -Werror -I"$top/include" \
	-o "$work/pvfree-standin" "$here/pvfree-standin.c"
gcc -static -O2 -Wall -Wextra -Werror -o "$work/xs" "$here/xs.c"
gcc -static -O2 -Wall -Wextra -Werror -o "$work/zerocheck" "$here/zerocheck.c"
# the KVM tests' workload and integrity program, and the real module
make -s -C "$top/tests/guest" O="$work/guest" >&2
make -s -C "$top/guest" module KDIR="$domu_hdir" O="$work/ko" >&2

# The stand-in's response must satisfy the host reader: check on this host
# (needs root for /proc/self/pagemap PFNs).
if [ "$(id -u)" = 0 ]; then
	gcc -O2 -Wall -Wextra -Werror -I"$top/include" -I"$top/host" \
		-o "$work/standin-check" "$here/standin-check.c" \
		"$top"/host/pvfree-reader.c "$top"/host/pvfree-protocol.c \
		"$top"/host/pvfree-diag.c
	PVFREE_STANDIN_SELFTEST=$work/standin.dump "$work/pvfree-standin" 8 32 >&2
	"$work/standin-check" "$work/standin.dump" >&2
fi

# --- domU initramfs ------------------------------------------------------
d=$work/domu
mkdir -p "$d"/{bin,dev,proc,sys,tmp,run}
cp /bin/busybox "$d/bin/busybox"
cp "$work/pvfree-standin" "$work/xs" "$work/zerocheck" \
	"$work/guest/pvfree-workload" "$d/bin/"
mkdir -p "$d/lib"
cp "$work/ko/pvfree.ko" "$d/lib/pvfree.ko"
cp "$here/domu-init.sh" "$d/init"
chmod +x "$d/init"
(cd "$d" && find . | cpio -o -H newc --quiet | gzip -9) > "$work/domu.cpio.gz"

# --- dom0 initramfs ------------------------------------------------------
r=$work/dom0
# merged /usr, as on Debian 12, so that each library exists once
mkdir -p "$r"/usr/{bin,sbin,lib/x86_64-linux-gnu,lib64}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$r/$d"; done
mkdir -p "$r"/{dev,proc,sys,tmp,run,etc/xen,pvfree,opt/debian-lib}
mkdir -p "$r"/var/{lib/xen,lib/xenstored,log/xen,lock}
ln -s ../run "$r/var/run"
cp /bin/busybox "$r/bin/busybox"

xenbin=/usr/lib/xen-4.17/bin
bins=("$xenbin/xl" "$xenbin/xenstored" "$xenbin/xenconsoled"
      "$xenbin/xen-init-dom0" "$xenbin/libxl-save-helper"
      /usr/bin/xenstore-read /usr/bin/xenstore-write /usr/bin/xenstore-ls
      /usr/bin/xenstore-rm)
for b in "${bins[@]}"; do
	mkdir -p "$r$(dirname "$b")"
	cp -a "$tsroot$b" "$r$b"
done
# Shared libraries: Xen's from $tsroot, the rest from this host (same
# Debian release), resolved against $tsroot's libraries.
tslib=$tsroot/usr/lib/x86_64-linux-gnu
libs=$(for b in "${bins[@]}" "$xglib/libxenguest.so.4.17.0"; do
		LD_LIBRARY_PATH=$tslib ldd "$tsroot$b" 2>/dev/null || ldd "$b"
	done |
       sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) .*/\1/p' |
       grep -v "^$tsroot" | grep -v -E '/lib(xen|xlutil)' | sort -u)
for l in $libs /lib/x86_64-linux-gnu/libgcc_s.so.1; do
	real=$(readlink -f "$l")
	mkdir -p "$r$(dirname "$l")"
	cp "$real" "$r$l"
done
for l in "$tslib"/libxen*.so.* "$tslib"/libxlutil.so.*; do
	cp -a "$l" "$r/usr/lib/x86_64-linux-gnu/"
done
# /lib and /lib64 are symlinks into /usr on Debian 12.
[ -e "$r/lib64/ld-linux-x86-64.so.2" ] ||
	cp /lib64/ld-linux-x86-64.so.2 "$r/lib64/"
# pvfree's libxenguest replaces Debian's; Debian's stays for comparison.
rm -f "$r"/usr/lib/x86_64-linux-gnu/libxenguest.so.4.17*
cp "$tslib/libxenguest.so.4.17.0" "$r/opt/debian-lib/libxenguest.so.4.17"
cp "$xglib/libxenguest.so.4.17.0" \
   "$r/usr/lib/x86_64-linux-gnu/libxenguest.so.4.17"
[ -e "$r/usr/lib/x86_64-linux-gnu/libxenstore.so.4" ] || {
	log "libxenstore.so.4 missing"; exit 1; }

# Kernel modules: the Xen device drivers and what they depend on.
mdir=$kbase/lib/modules/$dom0_rel
declare -A seen=()
add_mod() {
	local m=$1 f d
	[ -n "${seen[$m]:-}" ] && return 0
	seen[$m]=1
	f=$(modinfo -b "$kbase" -k "$dom0_rel" -n "$m") ||
		{ log "module $m not found"; exit 1; }
	case "$f" in /*) ;; *) return 0 ;; esac	# built in
	mkdir -p "$r/lib/modules/$dom0_rel/$(dirname "${f#$mdir/}")"
	cp "$f" "$r/lib/modules/$dom0_rel/${f#$mdir/}"
	for d in $(modinfo -b "$kbase" -k "$dom0_rel" -F depends "$m" |
		   tr ',' ' '); do
		add_mod "$d"
	done
}
for m in xen-evtchn xen-privcmd xenfs xen-gntdev xen-gntalloc; do
	add_mod "$m"
done
cp "$mdir"/modules.builtin* "$r/lib/modules/$dom0_rel/" 2>/dev/null || true
depmod -b "$r" "$dom0_rel"

cat > "$r/etc/xen/xl.conf" <<'EOF'
autoballoon="off"
EOF
cp "$work/countbytes" "$r/pvfree/"
cp "$domu_dir/vmlinuz" "$r/pvfree/domu-vmlinuz"
cp "$work/domu.cpio.gz" "$r/pvfree/domu.cpio.gz"
cp "$here/domu.cfg" "$r/pvfree/domu.cfg"
cp "$here/dom0-init.sh" "$r/init"
chmod +x "$r/init"

mkdir -p "$out"
(cd "$r" && find . | cpio -o -H newc --quiet | gzip -6) > "$out/dom0.cpio.gz.tmp"
mv "$out/dom0.cpio.gz.tmp" "$out/dom0.cpio.gz"
log "dom0 initramfs: $(du -h "$out/dom0.cpio.gz" | cut -f1)"
echo "$dom0_dir/vmlinuz $out/dom0.cpio.gz"
