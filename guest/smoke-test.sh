#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Smoke test of the pvfree guest driver: boots a guest kernel under QEMU
# (TCG) with a busybox initramfs, loads pvfree.ko, checks registration,
# debugfs and dmesg, and runs rmmod/insmod loops.  With a QEMU that has
# the pvfree-pci device, the guest gets one; without it, the module must
# load quietly and do nothing.
#
# usage: guest/smoke-test.sh [FLAVOUR] [-- EXTRA_QEMU_ARGS...]
#   FLAVOUR   cloud-6.1 (default), amd64-6.1 or cloud-6.12
#   QEMU      QEMU binary (default: what hv-kvm/build-qemu.sh prints)
#   DEVICE    auto (default), on or off: add -device pvfree-pci
#   APPEND    extra kernel command line
#   LOOPS     rmmod/insmod iterations (default 10)
#   MEM       QEMU -m argument (default 1024)
#   INSMOD_ARGS  module parameters (SELFTEST=1 builds: force_table=1,
#             storage_max_order=0)
#   GUEST_SCRIPT  extra shell run in the guest after the checks (before
#             the migrations)
#   EXPECT_STATUS  status the requests must get (default 1 = OK)
#   ABORT     1 (with MIGRATE=1 and a SELFTEST=1 build loaded with
#             INSMOD_ARGS="selftest=0 walk_delay_us=20000"): rmmod while
#             the request is being answered, expect ABORTED
#   MIGRATE   N: with the device, migrate the guest to /dev/null N times
#             (HMP "migrate exec:cat>/dev/null", then "cont") so that QEMU
#             publishes a request, and check the guest's answer
#   SELFTEST  1: build with the self-test transport (no device needed) and
#             run requests from inside the guest, also with fragmented
#             free memory
# Scratch files go to /tmp/pvfree-guest/smoke-FLAVOUR/.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
flavour=${1:-cloud-6.1}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
DEVICE=${DEVICE:-auto}
LOOPS=${LOOPS:-10}

QEMU=${QEMU:-$("$top/hv-kvm/build-qemu.sh")}
read -r _ rel kdir hdir < <("$top/scripts/guest-kernels.sh" "$flavour")
work=/tmp/pvfree-guest/smoke-$flavour
mkdir -p "$work"

make -s -C "$here" module KDIR="$hdir" O="$work/build" \
	${SELFTEST:+SELFTEST=1} >"$work/build.log" 2>&1 ||
	{ cat "$work/build.log"; exit 1; }

# initramfs: busybox-static, pvfree.ko and an init script
root=$work/root
rm -rf "$root"
mkdir -p "$root"/{bin,proc,sys,dev,tmp}
cp /bin/busybox "$root/bin/busybox"
for a in sh mount insmod rmmod lsmod dmesg cat grep echo sleep seq poweroff \
	 dd rm free awk ls head tail wc tr; do
	ln -s busybox "$root/bin/$a"
done
cp "$work/build/pvfree.ko" "$root/pvfree.ko"
echo "${INSMOD_ARGS:-}" >"$root/insmod.args"
printf '%s\n' "${GUEST_SCRIPT:-true}" >"$root/extra.sh"
if [ -n "${SELFTEST:-}" ]; then
	cat >>"$root/extra.sh" <<'EOS'
req=/sys/kernel/debug/pvfree-selftest/request
memfree() { awk '/^MemFree:/ { print int($2 / 4) }' /proc/meminfo; }
# rq HOST_FEATURES LABEL: one request; check it and compare the bitmap's
# free frames, less those found on per-CPU lists (pcp_frames), with the
# kernel's MemFree (NR_FREE_PAGES counts exactly the buddy free lists),
# allowing 1024 pages of allocator activity between the reads
rq() {
	m1=$(memfree); echo $1 >$req; m2=$(memfree); r=$(cat $req)
	echo "SELFTEST $2: $r"
	case $r in *FAIL*) echo "SMOKE-FAIL: selftest $2"; return;; esac
	f=$(echo "$r" | sed -n 's/.*free_frames \([0-9]*\) .*/\1/p')
	[ -n "$f" ] || return 0
	p=$(awk '/^pcp_frames:/ { print $2 }' /sys/kernel/debug/pvfree/stats)
	echo "SELFTEST $2: pcp_frames $p"
	f=$((f - ${p:-0}))
	lo=$((m1 < m2 ? m1 : m2)); hi=$((m1 > m2 ? m1 : m2))
	if [ $f -gt $((hi + 1024)) ] || [ $f -lt $((lo - 1024)) ]; then
		echo "SMOKE-FAIL: selftest $2: $f free frames, MemFree $lo-$hi pages"
	else
		echo "SELFTEST $2: $f free frames vs MemFree $lo-$hi pages: ok"
	fi
}
for hf in 0 1 2 3; do rq $hf "hf=$hf"; done
# fragment: hold every other page of 150000 pages (~300 MiB held)
echo 150000 >/sys/kernel/debug/pvfree-selftest/fragment
for n in 1 2 3; do
	rq 1 "fragmented $n"
	grep -E '^(batches|entries|pcp_frames):' /sys/kernel/debug/pvfree/stats | tr '\n' ' '; echo
done
echo 0 >/sys/kernel/debug/pvfree-selftest/fragment
rq 1 released
echo "SMOKE-OK: selftest done"
cat /sys/kernel/debug/pvfree/stats
EOS
fi
cat >"$root/init" <<EOF
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /tmp
ok() { echo "SMOKE-OK: \$*"; }
bad() { echo "SMOKE-FAIL: \$*"; }
echo "SMOKE: kernel \$(cat /proc/sys/kernel/osrelease)"
for d in /sys/bus/pci/devices/*; do
	[ "\$(cat \$d/vendor):\$(cat \$d/device)" = "0x1b36:0x0015" ] &&
		echo "SMOKE: pvfree-pci at \${d##*/}"
done
dmesg -c >/dev/null
insmod /pvfree.ko \$(cat /insmod.args) && ok insmod || bad insmod
dmesg | grep -i pvfree
if [ -f /sys/kernel/debug/pvfree/stats ]; then
	cat /sys/kernel/debug/pvfree/stats
	grep -q '^registered: 1' /sys/kernel/debug/pvfree/stats &&
		ok registered || bad registered
else
	echo "SMOKE: no debugfs stats (no device)"
fi
i=0
while [ \$i -lt $LOOPS ]; do
	rmmod pvfree || bad "rmmod \$i"
	insmod /pvfree.ko \$(cat /insmod.args) || bad "insmod \$i"
	i=\$((i + 1))
done
ok "rmmod/insmod x$LOOPS"
. /extra.sh
if [ "${MIGRATE:-0}" -gt 0 ]; then
	st=/sys/kernel/debug/pvfree/stats
	m=1
	while [ \$m -le ${MIGRATE:-0} ]; do
		echo "SMOKE: migrate now \$m"
		if [ "${ABORT:-}" = 1 ]; then
			i=0
			while [ \$i -lt 1200 ] &&
			      ! grep -q '^answering: 1' \$st; do
				sleep 0.1; i=\$((i + 1))
			done
			rmmod pvfree || bad "rmmod during request"
			dmesg | grep -q 'request [0-9]* aborted' &&
				ok "rmmod during request: ABORTED" ||
				bad "rmmod during request: not aborted"
			dmesg | grep pvfree | tail -3
			sleep 20
			insmod /pvfree.ko \$(cat /insmod.args) ||
				bad "insmod after abort"
			break
		fi
		i=0
		while [ \$i -lt 600 ] &&
		      ! grep -q "^requests: \$m\\\$" \$st; do
			sleep 0.2; i=\$((i + 1))
		done
		grep -E '^(requests|last_status|content|free_frames|snapshot_us|max_lock_hold_us|batches|entries|pcp_frames):' \$st | tr '\\n' ' '; echo
		grep -q '^last_status: ${EXPECT_STATUS:-1}\$' \$st &&
			ok "request \$m answered ${EXPECT_STATUS:-1}" ||
			bad "request \$m not answered ${EXPECT_STATUS:-1}"
		# let the host finish the migration (and cont) before going on
		sleep 20
		m=\$((m + 1))
	done
fi
rmmod pvfree && ok "final rmmod" || bad "final rmmod"
dmesg | grep -vE 'taints kernel|module verification failed' |
	grep -E 'Oops|BUG|WARNING|Call Trace|Bad page|memory corruption|page allocation failure|pvfree.*(error|fail)' &&
	bad "dmesg has warnings" || ok "dmesg clean"
echo SMOKE-DONE
poweroff -f
EOF
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"

dev=()
case "$DEVICE" in
on) dev=(-device pvfree-pci) ;;
off) ;;
auto)	# the self-test instance would keep the device from binding
	if [ -n "${SELFTEST:-}" ] &&
	   [[ "${INSMOD_ARGS:-}" != *selftest=0* ]]; then
		:
	elif "$QEMU" -device help 2>/dev/null | grep -q '"pvfree-pci"'; then
		dev=(-device pvfree-pci)
	fi ;;
esac
echo "smoke: $flavour $rel, QEMU $QEMU ${dev[*]:-(no pvfree device)}"

mon=$work/monitor.sock
rm -f "$mon"
timeout 600 "$QEMU" -accel tcg -m "${MEM:-1024}" -smp 1 -nographic \
	-no-reboot -nic none -L /usr/share/qemu -L /usr/share/seabios \
	-monitor "unix:$mon,server=on,wait=off" \
	-kernel "$kdir/vmlinuz" -initrd "$work/initrd.gz" \
	-append "console=ttyS0 panic=-1 ${APPEND:-}" "${dev[@]}" "$@" \
	</dev/null >"$work/console.log" 2>&1 &
qpid=$!
for m in $(seq "${MIGRATE:-0}"); do
	for _ in $(seq 300); do
		grep -aq "SMOKE: migrate now $m" "$work/console.log" && break
		kill -0 $qpid 2>/dev/null || break
		sleep 1
	done
	python3 - "$mon" <<'EOP' || echo "smoke: migration driver failed"
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(1)
def cmd(c):
    s.sendall((c + "\n").encode())
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                raise EOFError("monitor closed")
            out += d
            if out.rstrip().endswith(b"(qemu)") and c.encode() in out:
                break
    except socket.timeout:
        pass
    return out.decode(errors="replace")
def lines(out, c):
    return [l.strip() for l in out.splitlines()
            if l.strip() and "(qemu)" not in l and c not in l]
cmd("")
cmd('migrate -d "exec:cat > /dev/null"')
status = ""
for _ in range(120):
    out = cmd("info migrate")
    st = [l for l in lines(out, "info migrate") if "status" in l]
    if st and st[0] != status:
        status = st[0]
        print("smoke: " + status, flush=True)
    if "completed" in status or "failed" in status:
        break
    time.sleep(0.5)
for l in lines(cmd("info pvfree"), "info pvfree"):
    print("smoke: info pvfree: " + l)
cmd("cont")
EOP
done
wait $qpid || true

grep -aE '^SMOKE|^SELFTEST|pvfree|^[a-z_]+: ' "$work/console.log" || true
if grep -aq 'SMOKE-FAIL' "$work/console.log" ||
   ! grep -aq 'SMOKE-DONE' "$work/console.log"; then
	echo "smoke: FAILED (log: $work/console.log)"
	exit 1
fi
echo "smoke: passed (log: $work/console.log)"
