#!/bin/busybox sh
# SPDX-License-Identifier: MIT
#
# /init of the dom0 initramfs (tests/xen/build-initramfs.sh): start the Xen
# toolstack, create the test domU, migrate it to localhost once per case
# with tests/xen/countbytes in the pipe, print one result line per case,
# power off.  Kernel command line:
#   pvfree_type=pv|pvh        domU type (default pv)
#   pvfree_cases=a:b:...      cases, in order (default
#                             unpatched:skip:silent:noreg)
# Cases:
#   unpatched  Debian's libxenguest (LD_LIBRARY_PATH=/opt/debian-lib)
#   skip       pvfree libxenguest, stand-in answers
#   silent     pvfree libxenguest, stand-in registered but never answers
#   noreg      pvfree libxenguest, stand-in unregistered
# Result lines: "PVFREE-CASE NAME rc=RC bytes=N stream_s=S total_s=T
#               check=<stand-in check of its buffers>"
export PATH=/usr/lib/xen-4.17/bin:/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/xen /run/xenstored /dev/pts
mount -t devpts devpts /dev/pts

say() { echo "PVFREE: $*"; }
fin() { say "done"; sync; poweroff -f; }

for m in xen-evtchn xen-privcmd xenfs xen-gntdev xen-gntalloc; do
	modprobe $m || say "modprobe $m failed"
done
mount -t xenfs xenfs /proc/xen
xenstored --pid-file /run/xenstored.pid || { say "xenstored failed"; fin; }
xen-init-dom0 || { say "xen-init-dom0 failed"; fin; }
xenconsoled --pid-file=/run/xenconsoled.pid
xl list

type=pv
cases=unpatched:skip:silent:noreg
for a in $(cat /proc/cmdline); do
	case $a in
	pvfree_type=*) type=${a#pvfree_type=} ;;
	pvfree_cases=*) cases=${a#pvfree_cases=} ;;
	esac
done

(cat /pvfree/domu.cfg; echo "type = \"$type\"") > /tmp/domu.cfg
xl create /tmp/domu.cfg || { say "xl create failed"; fin; }

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

wait_key data/pvfree/header-frame 120 || say "stand-in did not register"
say "domU $(domid) registered header-frame $(xenstore-read $(key data/pvfree/header-frame))"

n=0
for c in $(echo $cases | tr ':' ' '); do
	n=$((n + 1))
	env=""
	mode=answer
	case $c in
	unpatched) env="LD_LIBRARY_PATH=/opt/debian-lib" ;;
	skip) ;;
	silent) mode=silent; env="XG_PVFREE_TIMEOUT_MS=3000" ;;
	noreg) mode=off ;;
	*) say "unknown case $c"; continue ;;
	esac
	xenstore-write $(key data/pvfree-test/mode) $mode
	sleep 1
	if [ $mode = off ]; then
		i=0
		while xenstore-read $(key data/pvfree/header-frame) >/dev/null 2>&1 &&
		      [ $i -lt 50 ]; do i=$((i + 1)); sleep 0.1; done
	else
		wait_key data/pvfree/header-frame 20 || say "$c: not registered"
	fi
	rm -f /tmp/count
	t0=$(uptime_s)
	env $env xl -v migrate -s "" domu \
		"/pvfree/countbytes /tmp/count | env $env xl -v migrate-receive" \
		> /tmp/mig-$c.log 2>&1
	rc=$?
	t1=$(uptime_s)
	tr '\r' '\n' < /tmp/mig-$c.log | grep -v -E '%|^$' |
		sed "s/^/PVFREE-LOG $c: /" | head -80
	set -- $(cat /tmp/count 2>/dev/null || echo "0 0")
	bytes=$1 stream=$2
	xenstore-write $(key data/pvfree-test/check) "$c-$n"
	res=none
	i=0
	while [ $i -lt 100 ]; do
		r=$(xenstore-read $(key data/pvfree-test/result) 2>/dev/null)
		case "$r" in "check=$c-$n "*) res=${r#check=$c-$n }; break ;; esac
		i=$((i + 1)); sleep 0.1
	done
	echo "PVFREE-CASE $c rc=$rc bytes=$bytes stream_s=$stream total_s=$(awk "BEGIN{print $t1-$t0}") $res"
done
xl list
xl destroy domu
fin
