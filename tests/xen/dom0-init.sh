#!/bin/busybox sh
# SPDX-License-Identifier: MIT
#
# /init of the dom0 initramfs (tests/xen/build-initramfs.sh): start the Xen
# toolstack, then for every case create a fresh test domU, prepare it,
# migrate it to localhost once with tests/xen/countbytes in the pipe, have
# the domU check itself on the destination, print one result line, destroy
# it; power off.  Kernel command line:
#   pvfree_type=pv|pvh        domU type (default pv)
#   pvfree_cases=a:b:...      cases, in order (default
#                             unpatched:idle:post-workload:fragmented:nodriver:two-hops)
# Cases with the real module (domU runs pvfree.ko + pvfree-workload):
#   unpatched      Debian's libxenguest (LD_LIBRARY_PATH=/opt/debian-lib),
#                  module loaded, idle: the full-stream baseline
#   idle           pvfree libxenguest, module loaded, idle
#   post-workload  pvfree libxenguest, module loaded, 75% of RAM dirtied
#                  by a process that exited
#   fragmented     pvfree libxenguest, module loaded, 64 MiB with every
#                  other page freed
#   nodriver       pvfree libxenguest, no module: "no pvfree registration"
#   zero-fill      pvfree libxenguest, module loaded, domU booted with
#                  init_on_free=1 (its free pages must read as zero); before
#                  the migration a second domU "dirt" fills its memory with
#                  non-zero data and is ballooned down (xen_scrub_pages=0),
#                  so Xen's free heap holds dirty pages the destination may
#                  be given; on the destination the domU runs zerocheck
#   paused         as idle, but `xl pause' before the migration: the saver
#                  must not ask (its log says so); unpaused after the first
#                  pass, as libxl's suspend needs a PV guest to answer
#   two-hops       as idle, migrated twice: the second save finds the keys
#                  the module wrote again after resuming on the destination;
#                  then rmmod there must remove data/pvfree
# Cases with the user-space stand-in (tests/xen/pvfree-standin.c):
#   skip           pvfree libxenguest, stand-in answers
#   silent         pvfree libxenguest, stand-in registered, never answers
#   noreg          pvfree libxenguest, stand-in unregistered
#   standin-unpatched  Debian's libxenguest, stand-in answering
# Result lines: "PVFREE-CASE NAME rc=RC bytes=N stream_s=S total_s=T
#               skipped=PFNS <domU's check result>"
export PATH=/usr/lib/xen-4.17/bin:/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/xen /run/xenstored /dev/pts /tmp/console
mount -t devpts devpts /dev/pts

say() { echo "PVFREE: $*"; }
fin() { say "done"; sync; poweroff -f; }

for m in xen-evtchn xen-privcmd xenfs xen-gntdev xen-gntalloc; do
	modprobe $m || say "modprobe $m failed"
done
mount -t xenfs xenfs /proc/xen
xenstored --pid-file /run/xenstored.pid || { say "xenstored failed"; fin; }
xen-init-dom0 || { say "xen-init-dom0 failed"; fin; }
# domU consoles into /tmp/console/guest-NAME.log, shown after each case
xenconsoled --pid-file=/run/xenconsoled.pid --log=guest \
	--log-dir=/tmp/console
xl list

type=pv
cases=unpatched:idle:post-workload:fragmented:nodriver:two-hops
for a in $(cat /proc/cmdline); do
	case $a in
	pvfree_type=*) type=${a#pvfree_type=} ;;
	pvfree_cases=*) cases=${a#pvfree_cases=} ;;
	esac
done

domid() { xl domid domu 2>/dev/null; }
key() { echo /local/domain/$(domid)/$1; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

# wait_key KEY SECONDS: until the key exists
wait_key() {
	end=$(awk "BEGIN{print $(uptime_s) + $2}")
	while ! xenstore-read $(key $1) >/dev/null 2>&1; do
		awk "BEGIN{exit !($(uptime_s) > $end)}" && return 1
		sleep 0.2
	done
}

# show_console CASE: the domU's console (source and destination)
show_console() {
	for f in /tmp/console/guest-*.log; do
		[ -f "$f" ] || continue
		tr -d '\r' < "$f" | grep -v '^$' | tail -n 60 |
			sed "s|^|PVFREE-DOMU $1 $(basename $f .log): |"
		rm -f "$f"
	done
}

# make_dirt CASE: a second domU fills its memory with non-zero data and
# is ballooned down to 48 MiB without scrubbing (xen_scrub_pages=0): the
# pages it gives back are free in Xen's heap but not scrubbed (Xen scrubs
# only a dying domain's pages), and they are the first a new allocation
# gets.  Then destroy it.  Sets dirtinfo.
make_dirt() {
	sed -e 's/^name = .*/name = "dirt"/' -e 's/^memory = .*/memory = 384/' \
		-e 's/^maxmem = .*/maxmem = 384/' /pvfree/domu.cfg > /tmp/dirt.cfg
	echo "type = \"$type\"" >> /tmp/dirt.cfg
	echo "extra = \"console=hvc0 quiet pvfree_run=dirt xen_scrub_pages=0 init_on_alloc=0\"" >> /tmp/dirt.cfg
	if ! xl create /tmp/dirt.cfg; then
		say "$1: xl create dirt failed"
		dirtinfo=" dirt=create-failed"
		return
	fi
	d=$(xl domid dirt)
	end=$(awk "BEGIN{print $(uptime_s) + 300}")
	while ! xenstore-read /local/domain/$d/data/pvfree-test/ready \
		>/dev/null 2>&1; do
		awk "BEGIN{exit !($(uptime_s) > $end)}" && break
		sleep 0.2
	done
	r=$(xenstore-read /local/domain/$d/data/pvfree-test/ready 2>/dev/null)
	xl mem-set dirt 48m
	i=0
	while [ $i -lt 100 ]; do
		m=$(xl list dirt | awk 'NR == 2 {print $3}')
		[ "${m:-999}" -le 64 ] && break
		i=$((i + 1)); sleep 0.3
	done
	say "$1: dirt $r, ballooned to ${m:-?} MiB"
	dirtinfo=" dirt_${r:-dirtied_mib=none} dirt_mib_after=${m:-none}"
	xl destroy dirt
	for f in /tmp/console/guest-dirt.log; do
		[ -f "$f" ] && tr -d '\r' < "$f" | grep -v '^$' | tail -n 10 |
			sed "s|^|PVFREE-DOMU $1 dirt: |"
		rm -f "$f"
	done
}

n=0
for c in $(echo $cases | tr ':' ' '); do
	n=$((n + 1))
	env=""
	mode=answer
	hops=1
	dirt=0 pause=0
	extra="pvfree_run=driver pvfree_insmod=1"
	case $c in
	unpatched) env="LD_LIBRARY_PATH=/opt/debian-lib" ;;
	idle) ;;
	post-workload) extra="$extra pvfree_dirty_pct=75" ;;
	fragmented) extra="$extra pvfree_fragment=64" ;;
	nodriver) extra="pvfree_run=driver pvfree_insmod=0" ;;
	two-hops) hops=2 ;;
	zero-fill) extra="$extra init_on_free=1 pvfree_zerocheck=1" dirt=1 ;;
	paused) pause=1 ;;
	skip) extra=pvfree_run=standin ;;
	silent) extra=pvfree_run=standin mode=silent ;;	# waits 5000 ms
	noreg) extra=pvfree_run=standin mode=off ;;
	standin-unpatched) extra=pvfree_run=standin
		env="LD_LIBRARY_PATH=/opt/debian-lib" ;;
	*) say "unknown case $c"; continue ;;
	esac
	(cat /pvfree/domu.cfg
	 echo "type = \"$type\""
	 echo "extra = \"console=hvc0 quiet $extra\"") > /tmp/domu.cfg
	t0=$(uptime_s)
	if ! xl create /tmp/domu.cfg; then
		say "$c: xl create failed"
		echo "PVFREE-CASE $c rc=create-failed"
		continue
	fi
	case $extra in
	*standin*)
		wait_key data/pvfree/header-frame 300 ||
			say "$c: stand-in did not register"
		xenstore-write $(key data/pvfree-test/mode) $mode
		sleep 1
		if [ $mode = off ]; then
			i=0
			while xenstore-read $(key data/pvfree/header-frame) \
				>/dev/null 2>&1 && [ $i -lt 50 ]; do
				i=$((i + 1)); sleep 0.1
			done
		fi ;;
	*)
		wait_key data/pvfree-test/ready 900 ||
			say "$c: domU not ready after 900 s"
		say "$c: domU $(domid) $(xenstore-read $(key data/pvfree-test/ready)) in $(awk "BEGIN{print $(uptime_s)-$t0}") s" ;;
	esac
	dirtinfo=
	[ $dirt = 1 ] && make_dirt $c
	hf=$(xenstore-read $(key data/pvfree/header-frame) 2>/dev/null || echo none)
	say "$c: header-frame $hf"
	h=0 hopinfo=
	while [ $h -lt $hops ]; do
		h=$((h + 1))
		[ $h -gt 1 ] && sleep 5
		rm -f /tmp/count
		rm -f /tmp/mig-$c.log
		unp=
		if [ $pause = 1 ]; then
			# paused when the save starts (and through the first
			# pass: libxenguest treats page-table races as fatal for
			# a domain paused at the start), unpaused 1 s after the
			# first pass or after 25 s, because a PV guest must
			# answer libxl's suspend request itself (60 s timeout)
			xl pause domu
			(i=0; while [ $i -lt 250 ]; do
				tr '\r' '\n' < /tmp/mig-$c.log 2>/dev/null |
					grep -q 'Frames iteration.*100%' && break
				i=$((i + 1)); sleep 0.1
			done; sleep 1; xl unpause domu) &
			unp=$!
		fi
		t0=$(uptime_s)
		env $env xl -v migrate -s "" domu \
			"/pvfree/countbytes /tmp/count | env $env xl -v migrate-receive" \
			> /tmp/mig-$c.log 2>&1
		rc=$?
		t1=$(uptime_s)
		[ -n "$unp" ] && { kill $unp 2>/dev/null; wait $unp; xl unpause domu 2>/dev/null; }
		tr '\r' '\n' < /tmp/mig-$c.log | grep -v -E '%|^$' > /tmp/mig-$c.txt
		sed "s/^/PVFREE-LOG $c hop $h: /" /tmp/mig-$c.txt | head -80
		skipped=$(sed -n 's/.*pvfree: first pass sent \([0-9]*\) free pfns.*/\1/p' \
			/tmp/mig-$c.txt | head -n 1)
		[ $hops -gt 1 ] &&
			hopinfo="$hopinfo hop${h}_rc=$rc hop${h}_skipped=${skipped:-0}"
		[ $rc = 0 ] || break
	done
	set -- $(cat /tmp/count 2>/dev/null || echo "0 0")
	bytes=$1 stream=$2
	xenstore-write $(key data/pvfree-test/check) "$c-$n"
	res=none
	i=0
	while [ $i -lt 3000 ]; do
		r=$(xenstore-read $(key data/pvfree-test/result) 2>/dev/null)
		case "$r" in "check=$c-$n "*) res=${r#check=$c-$n }; break ;; esac
		i=$((i + 1)); sleep 0.2
	done
	if [ $c = two-hops ]; then
		# then unload the module on the destination
		xenstore-write $(key data/pvfree-test/check) "rmmod-$n"
		i=0
		while [ $i -lt 300 ]; do
			r=$(xenstore-read $(key data/pvfree-test/result) 2>/dev/null)
			case "$r" in "check=rmmod-$n "*)
				res="$res ${r#check=rmmod-$n }"; break ;; esac
			i=$((i + 1)); sleep 0.2
		done
	fi
	asked=yes
	grep -q 'pvfree: domain .* is paused' /tmp/mig-$c.txt && asked=no
	grep -q 'pvfree: no response to request' /tmp/mig-$c.txt && asked=timeout
	echo "PVFREE-CASE $c rc=$rc bytes=$bytes stream_s=$stream total_s=$(awk "BEGIN{print $t1-$t0}") skipped=${skipped:-0}$hopinfo$dirtinfo asked=$asked $res"
	xl destroy domu
	xl destroy domu--incoming 2>/dev/null
	i=0
	while xl domid domu >/dev/null 2>&1 && [ $i -lt 50 ]; do
		i=$((i + 1)); sleep 0.2
	done
	sleep 1
	show_console $c
done
xl list
fin
