#!/bin/busybox sh
# SPDX-License-Identifier: MIT
#
# /init of the pvfree test initramfs.  Mounts the usual file systems, then
# runs a command loop on the console (ttyS0) that tests/lib/pvfree_tests/qemu.py
# drives: the host sends "<n> <shell command>", the guest runs it with stdin
# from /dev/null and answers "@@DONE <n> <rc>".  "@@READY" is printed once,
# when the loop starts.
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mkdir -p /proc /sys /dev /run /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /run

# Console: no echo, so only the commands' own output comes back.
stty -echo 2>/dev/null
# Keep warnings on the console (the harness reads dmesg anyway).
echo 4 >/proc/sys/kernel/printk

# Load a module and its dependencies: /lib/pvfree-modules/<name>.load lists
# the .ko files in load order (empty if <name> is built in).
loadmod() {
	d=/lib/pvfree-modules
	[ -f "$d/$1.load" ] || { insmod "$d/$1.ko"; return; }
	for m in $(cat "$d/$1.load"); do
		grep -q "^${m%.ko} " /proc/modules || insmod "$d/$m" || return 1
	done
}

echo "@@READY $(uname -r)"
while :; do
	if ! read -r n cmd; then
		sleep 1
		continue
	fi
	[ -n "$n" ] || continue
	eval "$cmd" </dev/null 2>&1
	echo "@@DONE $n $?"
done
