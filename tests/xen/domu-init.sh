#!/bin/busybox sh
# SPDX-License-Identifier: MIT
# /init of the test domU (console hvc0).  dom0-init.sh picks what it does
# with the kernel command line ("extra" of xl create):
#   pvfree_run=standin        run pvfree-standin 32 96 (see pvfree-standin.c)
#   pvfree_run=dirt           fill MemFree - 24 MiB with non-zero data
#                             (`pvfree-workload dirty', exits), write
#                             data/pvfree-test/ready and idle: dom0 then
#                             balloons it down, giving Xen dirty free pages
#   pvfree_run=driver         the real module and tests/guest/pvfree-workload:
#     pvfree_insmod=0|1       load /lib/pvfree.ko (the xenstore transport)
#     pvfree_dirty_pct=P      dirty P% of MemTotal (at most MemFree - 24 MiB)
#                             with `pvfree-workload dirty', which exits
#     pvfree_fragment=MIB     `pvfree-workload fragment MIB' (every other
#                             page freed)
#     pvfree_zerocheck=1      on every check, also `zerocheck' MemFree - 24 MiB
#                             (fresh pages must read as zero; run with
#                             init_on_free=1 they are not cleared at
#                             allocation)
#   then always `pvfree-workload hold 32' (4 MiB rewritten all along), and
#   data/pvfree-test/ready = "memfree_kb=... dirtied_mib=... registered=..."
#   Each new value V of data/pvfree-test/check: verify every daemon and
#   write data/pvfree-test/result = "check=V hold_mismatches=M ... guest_*";
#   V = rmmod-*: unload the module, report rmmod_rc, keys_after_rmmod and
#   dmesg_bad instead
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
# keep the stand-in's locked pages where they are
echo 0 > /proc/sys/vm/compact_unevictable_allowed
say() { echo "domU: $*"; }
say "$(uname -r), $(grep MemTotal /proc/meminfo)"

run=standin insmod=0 dirty_pct=0 fragment=0 zerocheck=0
for a in $(cat /proc/cmdline); do
	case $a in
	pvfree_run=*) run=${a#pvfree_run=} ;;
	pvfree_insmod=*) insmod=${a#pvfree_insmod=} ;;
	pvfree_dirty_pct=*) dirty_pct=${a#pvfree_dirty_pct=} ;;
	pvfree_fragment=*) fragment=${a#pvfree_fragment=} ;;
	pvfree_zerocheck=*) zerocheck=${a#pvfree_zerocheck=} ;;
	esac
done

if [ "$run" = standin ]; then
	pvfree-standin 32 96 &
	while :; do sleep 3600; done
fi

kb() { sed -n "s/^$1: *\([0-9]*\) kB/\1/p" /proc/meminfo; }
if [ "$run" = dirt ]; then
	mib=$(( $(kb MemFree) / 1024 - 24 ))
	say "dirt: $(pvfree-workload dirty $mib)"
	xs write data/pvfree-test/ready "dirtied_mib=$mib"
	while :; do sleep 3600; done
fi
gstat() { sed -n "s/^$1: //p" /sys/kernel/debug/pvfree/stats 2>/dev/null; }

registered=0
if [ "$insmod" = 1 ]; then
	insmod /lib/pvfree.ko || say "insmod pvfree.ko failed"
	xs read data/pvfree/header-frame >/dev/null && registered=1
	dmesg | grep -i pvfree
fi
dirtied=0
if [ "$dirty_pct" -gt 0 ]; then
	dirtied=$(( $(kb MemTotal) * dirty_pct / 100 / 1024 ))
	max=$(( $(kb MemFree) / 1024 - 24 ))
	[ "$dirtied" -gt "$max" ] && dirtied=$max
	say "$(pvfree-workload dirty $dirtied)"
fi
daemons=hold
say "$(pvfree-workload hold 32 -d -p /run/hold.pid -r /run/hold.res -w 4)"
if [ "$fragment" -gt 0 ]; then
	say "$(pvfree-workload fragment $fragment -d -p /run/fragment.pid \
		-r /run/fragment.res -w 0)"
	daemons="hold fragment"
fi
sleep 2
ready="memfree_kb=$(kb MemFree) dirtied_mib=$dirtied registered=$registered"
xs write data/pvfree-test/ready "$ready"
say "ready: $ready"

last=
while :; do
	v=$(xs wait data/pvfree-test/check "$last" 3600) || continue
	last=$v
	res="check=$v"
	case $v in
	rmmod-*)
		# unload: the module must remove data/pvfree (spec 10.1)
		rmmod pvfree
		rc=$?
		keys=none
		xs read data/pvfree/header-frame >/dev/null 2>&1 && keys=present
		bad=$(dmesg | grep -c -E 'BUG|WARNING|Oops')
		dmesg | grep -E 'pvfree|BUG|WARNING|Oops' | tail -n 5
		res="$res rmmod_rc=$rc keys_after_rmmod=$keys dmesg_bad=$bad"
		xs write data/pvfree-test/result "$res"
		say "$res"
		continue ;;
	esac
	for d in $daemons; do
		line=$(pvfree-workload verify /run/$d.pid /run/$d.res 300)
		rc=$?
		say "verify $d rc=$rc: $line"
		if [ $rc != 0 ] && [ $rc != 1 ]; then
			# no answer: where is the daemon stuck?
			pid=$(cat /run/$d.pid)
			for t in /proc/$pid/task/*; do
				say "$d task $t: $(cut -d' ' -f1-3 $t/stat) wchan=$(cat $t/wchan)"
				sed "s/^/domU: $d stack: /" $t/stack
			done
			dmesg | tail -n 20
		fi
		mis=$(echo "$line" | sed -n 's/.* mismatches=\([0-9]*\).*/\1/p')
		pages=$(echo "$line" | sed -n 's/.*pages=\([0-9]*\).*/\1/p')
		res="$res ${d}_rc=$rc ${d}_pages=${pages:-none} ${d}_mismatches=${mis:-none}"
	done
	if [ "$zerocheck" = 1 ]; then
		line=$(zerocheck $(( $(kb MemFree) / 1024 - 24 )))
		say "zerocheck rc=$?: $line"
		for k in pages nonzero_pages nonzero_bytes first_byte; do
			v=$(echo "$line" | sed -n "s/.* $k=\([0-9a-fx]*\).*/\1/p")
			res="$res zero_$k=${v:-none}"
		done
	fi
	if [ -f /sys/kernel/debug/pvfree/stats ]; then
		res="$res guest_transport=$(gstat transport)"
		res="$res guest_registered=$(gstat registered)"
		res="$res guest_requests=$(gstat requests)"
		res="$res guest_last_request_id=$(gstat last_request_id)"
		res="$res guest_last_status=$(gstat last_status)"
		res="$res guest_content=$(gstat content)"
		res="$res guest_free_frames=$(gstat free_frames)"
		res="$res guest_snapshot_us=$(gstat snapshot_us)"
	fi
	res="$res header_frame=$(xs read data/pvfree/header-frame || echo none)"
	dmesg | grep -E 'pvfree|BUG|WARNING|Oops' | tail -n 20
	xs write data/pvfree-test/result "$res"
	say "$res"
done
