#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Smoke test of the patched QEMU: boots the cloud-6.1 kernel with a busybox
# initramfs, optionally loads the pvfree guest module, migrates the guest to
# a second QEMU over TCP and checks query-pvfree and query-migrate.
# The full test suite lives in tests/; this only checks hv-kvm end to end.
#
# usage: hv-kvm/smoke-test.sh [--no-driver] [--mem MiB] [--accel kvm|tcg]
#                             [--device-opts ,timeout-ms=..] [--keep]
#                             [--caps "multifd postcopy-ram"] [--expect STATUS]
# --expect: the last-status query-pvfree must show (default: ok, or
# not-registered with --no-driver); pages must be skipped only for "ok".
# Exit status 0 when every check passed.  Output: "smoke: ..." lines, and a
# final JSON line with the numbers.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
cache=${PVFREE_CACHE:-$HOME/.cache/pvfree}

driver=1 mem=1024 accel= devopts= keep= caps= expect=
while [ $# -gt 0 ]; do
	case "$1" in
	--no-driver) driver= ;;
	--mem) mem=$2; shift ;;
	--accel) accel=$2; shift ;;
	--device-opts) devopts=$2; shift ;;
	--keep) keep=1 ;;
	--caps) caps=$2; shift ;;
	--expect) expect=$2; shift ;;
	*) echo "usage: $0 [--no-driver] [--mem MiB] [--accel kvm|tcg] [--device-opts ,k=v] [--keep]" >&2
	   exit 2 ;;
	esac
	shift
done
[ -n "$accel" ] || { [ -w /dev/kvm ] && accel=kvm || accel=tcg; }

log() { echo "smoke: $*" >&2; }
die() { log "FAIL: $*"; exit 1; }

qemu=${PVFREE_QEMU:-$("$here/build-qemu.sh")}
kdir=$(ls -d "$cache"/kernels/6.1.*-cloud-amd64 2>/dev/null | sort -V | tail -n1)
[ -n "$kdir" ] && [ -f "$kdir/vmlinuz" ] ||
	die "no cloud-6.1 kernel in $cache/kernels (run scripts/guest-kernels.sh cloud-6.1)"
rel=$(basename "$kdir")
work=$(mktemp -d /tmp/pvfree-qemu/smoke.XXXXXX)
[ -n "$keep" ] || trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT

# --- the guest module -------------------------------------------------------
ko=
if [ -n "$driver" ]; then
	[ -f "$top/guest/Makefile" ] || die "guest/Makefile missing: no guest driver yet (try --no-driver)"
	mod=/tmp/pvfree-qemu/mod-$rel
	mkdir -p "$mod"
	make -s -C "$top/guest" module KDIR="/usr/src/linux-headers-$rel" O="$mod" >&2 ||
		die "building the guest module failed"
	ko=$(find "$mod" "$top/guest" -name 'pvfree*.ko' -newer "$top/guest/Makefile" 2>/dev/null | head -n1)
	[ -n "$ko" ] || ko=$(find "$mod" "$top/guest" -name 'pvfree*.ko' | head -n1)
	[ -n "$ko" ] || die "no pvfree .ko after building the guest module"
	log "guest module: $ko"
fi

# --- initramfs ----------------------------------------------------------------
mkdir -p "$work/root/bin" "$work/root/proc" "$work/root/sys" "$work/root/dev" \
	"$work/root/tmp"
cp /bin/busybox "$work/root/bin/busybox"
[ -n "$ko" ] && cp "$ko" "$work/root/pvfree.ko"
cat > "$work/root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
if [ -f /pvfree.ko ]; then
	insmod /pvfree.ko && echo "SMOKE: insmod ok" || echo "SMOKE: insmod failed"
fi
# Keep reallocating page cache (1 MiB files in tmpfs) and check every file
# against its checksum before rewriting it: pages freed and reused around
# the request must arrive intact.
mount -t tmpfs tmpfs /tmp
n=0
while :; do
	n=$((n + 1))
	f=/tmp/w$((n % 32))
	if [ -f $f.md5 ] && ! md5sum -c -s $f.md5; then
		echo "SMOKE: CORRUPT $f at iteration $n"
	fi
	dd if=/dev/urandom of=$f bs=64k count=16 2>/dev/null
	md5sum $f > $f.md5
	[ $n = 64 ] && echo "SMOKE: ready"
	[ $((n % 64)) = 0 ] && echo "SMOKE: checked $n"
done
EOF
chmod +x "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$work/initrd.gz")

# --- two QEMUs ------------------------------------------------------------------
port=$(( 20000 + RANDOM % 20000 ))
common=(-M pc -accel "$accel" -m "$mem" -smp 2 -nodefaults -display none
	-L /usr/share/qemu -L /usr/share/seabios
	-kernel "$kdir/vmlinuz" -initrd "$work/initrd.gz"
	-append "console=ttyS0 panic=-1 quiet"
	-device "pvfree-pci$devopts")
"$qemu" "${common[@]}" -serial "file:$work/src.log" \
	-qmp "unix:$work/src.qmp,server=on,wait=off" \
	-pidfile "$work/src.pid" -daemonize
"$qemu" "${common[@]}" -serial "file:$work/dst.log" \
	-qmp "unix:$work/dst.qmp,server=on,wait=off" \
	-incoming defer -pidfile "$work/dst.pid" -daemonize
log "qemu $qemu ($accel), guest $rel, ${mem} MiB, work $work"

for _ in $(seq 120); do
	grep -q "SMOKE: ready" "$work/src.log" 2>/dev/null && break
	sleep 1
done
grep -q "SMOKE: ready" "$work/src.log" || { tail -n 20 "$work/src.log" >&2; die "guest did not boot"; }
grep "SMOKE: insmod" "$work/src.log" >&2 || true
grep -i pvfree "$work/src.log" >&2 || true

[ -n "$expect" ] || { [ -n "$driver" ] && expect=ok || expect=not-registered; }
python3 - "$work" "$port" "$driver" "$caps" "$expect" "$devopts" <<'EOF'
import json, socket, sys, time

work, port, driver = sys.argv[1], int(sys.argv[2]), bool(sys.argv[3])
caps, expect, devopts = sys.argv[4].split(), sys.argv[5], sys.argv[6]

class QMP:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.f = self.s.makefile("rw")
        self.read()
        self.cmd("qmp_capabilities")

    def read(self):
        while True:
            msg = json.loads(self.f.readline())
            if "event" not in msg:
                return msg

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.f.flush()
        r = self.read()
        if "error" in r:
            raise RuntimeError(f"{name}: {r['error']['desc']}")
        return r["return"]

def fail(msg):
    print(f"smoke: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)

src, dst = QMP(f"{work}/src.qmp"), QMP(f"{work}/dst.qmp")
before = src.cmd("query-pvfree")
print(f"smoke: before: {json.dumps(before)}", file=sys.stderr)
if before["registered"] != driver:
    fail(f"registered is {before['registered']}, expected {driver}")
hmp = src.cmd("human-monitor-command", **{"command-line": "info pvfree"})
if "registered:" not in hmp:
    fail("info pvfree printed nothing useful")

src.cmd("migrate-set-parameters", **{"max-bandwidth": 8 << 30})
if caps:
    cl = [{"capability": c, "state": True} for c in caps]
    src.cmd("migrate-set-capabilities", capabilities=cl)
    dst.cmd("migrate-set-capabilities", capabilities=cl)
dst.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
t0 = time.time()
src.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
while True:
    m = src.cmd("query-migrate")
    if m.get("status") in ("completed", "failed", "cancelled"):
        break
    if time.time() - t0 > 300:
        fail("migration did not finish in 300 s")
    time.sleep(0.2)
if m["status"] != "completed":
    fail(f"migration {m['status']}: {m.get('error-desc', '')}")
secs = time.time() - t0
after = src.cmd("query-pvfree")
ram = m["ram"]
print(f"smoke: after: {json.dumps(after)}", file=sys.stderr)
print(f"smoke: ram: transferred {ram['transferred']} normal {ram['normal']} "
      f"duplicate {ram['duplicate']} total {ram['total']} in {secs:.1f} s",
      file=sys.stderr)
if dst.cmd("query-status")["status"] != "running":
    fail("destination is not running")
dpv = dst.cmd("query-pvfree")
if dpv["registered"] != driver:
    fail("registration did not survive migration")

if after["last-status"] != expect:
    fail(f"last-status {after['last-status']} ({after['last-error']}), "
         f"expected {expect}")
want_skip = expect == "ok" and "skip-free=off" not in devopts
if want_skip and after["pages-skipped"] <= 0:
    fail("no pages skipped")
if not want_skip and after["pages-skipped"] != 0:
    fail(f"{after['pages-skipped']} pages skipped, expected none")
if "free-pages-skipped" in ram and \
        ram["free-pages-skipped"] != after["pages-skipped"]:
    fail(f"query-migrate free-pages-skipped {ram['free-pages-skipped']} "
         f"!= query-pvfree pages-skipped {after['pages-skipped']}")
if not driver and after["wait-ms"] != 0:
    fail(f"waited {after['wait-ms']} ms with no driver")
print(f"smoke: migrate: {src.cmd('human-monitor-command', **{'command-line': 'info migrate'})!r}",
      file=sys.stderr)
time.sleep(10)
dlog = open(f"{work}/dst.log", errors="replace").read()
slog = open(f"{work}/src.log", errors="replace").read()
if "SMOKE: CORRUPT" in slog + dlog:
    fail("guest found corrupted memory: " +
         [l for l in (slog + dlog).splitlines() if "CORRUPT" in l][0])
if "SMOKE: checked" not in dlog:
    fail("the guest's checker made no progress on the destination")
print(json.dumps({"pvfree": after, "ram": ram, "seconds": round(secs, 2)}))
print("smoke: PASS", file=sys.stderr)
EOF
