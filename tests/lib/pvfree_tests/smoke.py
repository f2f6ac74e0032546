# SPDX-License-Identifier: MIT
"""Smoke tests, as scenarios of the harness (tests/kvm/smoke):

  guest  `make -C guest smoke`: boot each guest kernel under TCG, load
         pvfree.ko, check registration and debugfs, rmmod/insmod loops,
         self-test requests (SELFTEST=1 builds: no device needed) also
         with fragmented free memory; with a QEMU that has pvfree-pci, two
         migrations whose requests must be answered OK and an rmmod while
         a request is being answered, which must answer ABORTED; every
         guest's kernel log must stay clean
  qemu   the patched QEMU end to end: migrate a cloud-6.1 guest that keeps
         rewriting and checking page cache to a second QEMU over TCP and
         check query-pvfree and query-migrate

usage: tests/kvm/smoke guest [--only NAME,...] [--list] [--append ARGS]
                             [--json FILE]
       tests/kvm/smoke qemu [--no-driver] [--mem MIB] [--accel kvm|tcg]
                            [--device-opts ,k=v] [--caps "multifd ..."]
                            [--expect STATUS] [--json FILE]
  qemu --expect: the last-status query-pvfree must show (default: ok, or
  not-registered with --no-driver); pages must be skipped only for "ok".
QEMU: $PVFREE_QEMU, else what hv-kvm/build-qemu.sh prints.  Logs:
$PVFREE_SCRATCH/smoke-NAME/.  Exit status 0 when every check passed."""

import argparse
import os
import re
import sys
import time

from . import TestFailure, checks, image, log, results, scratch, select
from . import qemu as h
from .scenario import BOOT_TIMEOUT

STATS = "/sys/kernel/debug/pvfree/stats"
SELFTEST = "/sys/kernel/debug/pvfree-selftest"
MODULES = "/lib/pvfree-modules"
STATUS_OK, STATUS_UNSUPPORTED = 1, 4
HF_ZERO_FILL, HF_POISON_FILL = 1, 2
APPEND = "console=ttyS0 quiet panic=1"


class Checks:
    """The checks of one smoke test: each is logged as SMOKE-OK or
    SMOKE-FAIL in LOGPATH, the failures are kept."""

    def __init__(self, name, logpath):
        self.name = name
        self.failures = []
        self.logf = open(logpath, "a")

    def note(self, msg):
        self.logf.write(f"SMOKE: {msg}\n")
        self.logf.flush()

    def check(self, ok, what):
        self.logf.write(f"SMOKE-{'OK' if ok else 'FAIL'}: {what}\n")
        self.logf.flush()
        if not ok:
            self.failures.append(what)
        return ok


# ---- guest smoke ---------------------------------------------------------

class GuestSmoke:
    """One boot of `make -C guest smoke`."""

    def __init__(self, name, flavour, selftest=False, loops=10, migrate=0,
                 abort=False, insmod_args="", append=""):
        self.name = name
        self.flavour = flavour
        self.selftest = selftest        # SELFTEST=1 build of the module
        self.loops = loops              # rmmod/insmod iterations
        self.migrate = migrate          # migrations to /dev/null
        self.abort = abort              # rmmod while answering: ABORTED
        self.insmod_args = insmod_args
        self.append = append

    @property
    def selftest_transport(self):
        """The self-test instance runs (and keeps the device from binding)."""
        return self.selftest and "selftest=0" not in self.insmod_args

    def describe(self):
        bits = [self.flavour, "SELFTEST=1" if self.selftest else "pvfree.ko",
                f"{self.loops} rmmod/insmod"]
        if self.insmod_args:
            bits.append(self.insmod_args)
        if self.migrate:
            bits.append(f"{self.migrate} migration(s)"
                        + (", rmmod while answering" if self.abort else ""))
        if self.append:
            bits.append(self.append)
        return ", ".join(bits)


def guest_smokes(has_device, append=""):
    """What `make -C guest smoke` runs: the self-test transport on the
    three kernels; with pvfree-pci, two migrations and an rmmod while a
    request is being answered."""
    todo = [GuestSmoke(f"selftest-{f}", f, selftest=True, loops=5,
                       append=append)
            for f in ("cloud-6.1", "amd64-6.1", "cloud-6.12")]
    if has_device:
        todo += [GuestSmoke("migrate-cloud-6.1", "cloud-6.1", loops=5,
                            migrate=2, append=append),
                 GuestSmoke("abort-cloud-6.1", "cloud-6.1", selftest=True,
                            loops=1, migrate=1, abort=True,
                            insmod_args="selftest=0 walk_delay_us=20000",
                            append=append)]
    return todo


def expected_status(hf, append):
    """What the guest must answer a request with HOST_FEATURES HF: a
    guest whose free pages must read as poison or zero (page_poison=1,
    init_on_free=1) answers UNSUPPORTED unless the host can fill them."""
    needs = (HF_POISON_FILL if "page_poison=1" in append else
             HF_ZERO_FILL if "init_on_free=1" in append else 0)
    return STATUS_OK if (hf & needs) == needs else STATUS_UNSUPPORTED


def selftest_request(c, ck, hf, label, append):
    """One self-test request: its status must be the expected one; for an
    OK answer, compare the bitmap's free frames, less those found on
    per-CPU lists (pcp_frames), with the kernel's MemFree (NR_FREE_PAGES
    counts exactly the buddy free lists), allowing 1024 pages of allocator
    activity between the reads."""
    mf = "awk '/^MemFree:/ { print int($2 / 4) }' /proc/meminfo"
    _, out = c.run(f"m1=$({mf}); echo {hf} >{SELFTEST}/request; m2=$({mf}); "
                   f'echo "M $m1 $m2"; echo "R $(cat {SELFTEST}/request)"; '
                   f"echo \"P $(awk '/^pcp_frames:/ {{ print $2 }}' {STATS})\"",
                   timeout=120, check=False)
    f = {line[:1]: line[2:].strip() for line in out.splitlines()
         if line[:2] in ("M ", "R ", "P ")}
    r = f.get("R", "")
    ck.note(f"selftest {label}: {r}")
    st = re.search(r"status (\d+)", r)
    want = expected_status(hf, append)
    ok = "FAIL" not in r and st and int(st.group(1)) == want
    if not ck.check(ok, f"selftest {label}: status {want}" if ok else
                    f"selftest {label}: {r or out.strip()[-200:]!r}, "
                    f"expected status {want}"):
        return
    m = re.search(r"free_frames (\d+) ", r)
    if not m:
        return
    lo, hi = sorted(int(x) for x in f["M"].split())
    free = int(m.group(1)) - int(f.get("P") or 0)
    ck.check(lo - 1024 <= free <= hi + 1024,
             f"selftest {label}: {free} free frames vs MemFree {lo}-{hi} "
             f"pages")


def selftest_requests(c, ck, append):
    """Requests for every combination of fills, then with every other
    page of 150000 held (fragmented free memory), then released."""
    for hf in range(4):
        selftest_request(c, ck, hf, f"hf={hf}", append)
    c.run(f"echo 150000 >{SELFTEST}/fragment", timeout=600)
    for n in (1, 2, 3):
        selftest_request(c, ck, 1, f"fragmented {n}", append)
        _, out = c.run(f"grep -E '^(batches|entries|pcp_frames):' {STATS}",
                       check=False)
        ck.note(" ".join(out.split()))
    c.run(f"echo 0 >{SELFTEST}/fragment", timeout=600)
    selftest_request(c, ck, 1, "released", append)


def selftest_withdraw(c, ck, insmod, append):
    """Storage installed while a response is published (core spec 6.4.1
    item 1): load with fail_storage=1 so that requests are answered
    NO_SPACE and each answer queues another storage allocation; let the
    next one succeed.  It rewrites the header's extents and frees nothing
    yet, but the NO_SPACE response is still published: the driver must
    have withdrawn it (response_id = 0) first, which the self-test's
    recheck of the header copied at the doorbell verifies."""
    param = "/sys/module/pvfree/parameters/fail_storage"
    if expected_status(1, append) != STATUS_OK:
        ck.note("withdraw: not run, requests are answered UNSUPPORTED")
        return
    ck.check(c.run("rmmod pvfree", check=False)[0] == 0, "rmmod (withdraw)")
    if not ck.check(c.run(f"{insmod} fail_storage=1", check=False)[0] == 0,
                    "insmod fail_storage=1"):
        return
    _, out = c.run(f"echo 1 >{SELFTEST}/request; cat {SELFTEST}/request; "
                   f"echo 0 >{param}; "
                   f"echo 1 >{SELFTEST}/request; cat {SELFTEST}/request; "
                   f"i=0; while [ $i -lt 300 ] && grep -q '^storage_bytes: 0$' "
                   f"{STATS}; do sleep 0.1; i=$((i + 1)); done; "
                   f"grep '^storage_bytes:' {STATS}; cat {SELFTEST}/recheck",
                   timeout=120, check=False)
    lines = out.strip().splitlines()
    for line in lines:
        ck.note(f"withdraw: {line}")
    answers = [line for line in lines if line.startswith("request ")]
    ck.check(len(answers) == 2 and
             all(re.search(r"status 3 ", a) for a in answers),
             "withdraw: fail_storage=1 answers NO_SPACE twice")
    ck.check(any(re.match(r"storage_bytes: [1-9]", line) for line in lines),
             "withdraw: storage installed after NO_SPACE")
    rc = [line for line in lines if "recheck" in line]
    ck.check(len(rc) == 1 and "FAIL" not in rc[0] and
             "withdrawn before rewriting" in rc[0],
             f"withdraw: response_id = 0 before the extents change "
             f"({rc[0] if rc else 'no recheck'})")
    selftest_request(c, ck, 1, "after withdraw", append)
    ck.check(c.run("rmmod pvfree", check=False)[0] == 0, "rmmod (withdraw)")
    ck.check(c.run(insmod, check=False)[0] == 0, "insmod (withdraw)")


def migrate_to_null(vm, ck, timeout=60):
    """Start a migration of VM to /dev/null (so that QEMU publishes a
    request); returns a function that waits for its end and resumes the
    guest."""
    vm.qmp.cmd("migrate", {"uri": "exec:cat > /dev/null"})

    def finish():
        deadline = time.time() + timeout
        st = None
        while time.time() < deadline:
            st = vm.qmp.cmd("query-migrate", quiet=True).get("status")
            if st in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.5)
        ck.note(f"migration {st}")
        for line in vm.qmp.hmp("info pvfree").splitlines():
            ck.note(f"info pvfree: {line.strip()}")
        vm.qmp.cmd("cont")
    return finish


def run_guest_smoke(sm, qemu, has_device):
    """Boot SM's guest and run its checks; returns the result record."""
    wd = h.workdir(f"smoke-{sm.name}")
    ck = Checks(sm.name, os.path.join(wd, "smoke.log"))
    vm = None
    try:
        k, initrd, has_ko = image.initramfs(sm.flavour, selftest=sm.selftest)
        if not has_ko:
            raise TestFailure(f"pvfree.ko could not be built for {k.release}")
        ko = f"{MODULES}/pvfree{'-selftest' if sm.selftest else ''}.ko"
        insmod = f"insmod {ko} {sm.insmod_args}".strip()
        device = has_device and not sm.selftest_transport
        vm = h.Vm("guest", qemu=qemu, workdir=wd, kernel=k.vmlinuz,
                  initrd=initrd, append=f"{APPEND} {sm.append}".strip(),
                  mem_mb=1024, smp=1, pvfree=device)
        vm.start()
        ck.note(f"kernel {vm.wait_boot(BOOT_TIMEOUT)}, "
                f"{'pvfree-pci' if device else 'no pvfree device'}")
        c = vm.console
        c.run("dmesg -c >/dev/null")
        ck.check(c.run(insmod, check=False)[0] == 0, "insmod")
        rc, out = c.run(f"cat {STATS}", check=False)
        if rc == 0:
            ck.check(checks.parse_kv(out).get("registered") == "1",
                     "registered")
        else:
            ck.note("no debugfs stats (no device)")
        for i in range(sm.loops):
            ck.check(c.run("rmmod pvfree", check=False)[0] == 0, f"rmmod {i}")
            ck.check(c.run(insmod, check=False)[0] == 0, f"insmod {i}")
        ck.note(f"rmmod/insmod x{sm.loops}")
        if sm.selftest_transport:
            selftest_requests(c, ck, sm.append)
            selftest_withdraw(c, ck, insmod, sm.append)
        for m in range(1, sm.migrate + 1):
            finish = migrate_to_null(vm, ck)
            if sm.abort:
                c.run(f"i=0; while [ $i -lt 1200 ] && ! grep -q "
                      f"'^answering: 1' {STATS}; do sleep 0.1; "
                      f"i=$((i + 1)); done", timeout=180)
                ck.check(c.run("rmmod pvfree", check=False)[0] == 0,
                         "rmmod during request")
                rc, out = c.run("dmesg | grep pvfree | tail -3; dmesg | "
                                "grep -q 'request [0-9]* aborted'",
                                check=False)
                ck.note(" | ".join(out.strip().splitlines()))
                ck.check(rc == 0, "rmmod during request: ABORTED")
                finish()
                ck.check(c.run(insmod, check=False)[0] == 0,
                         "insmod after abort")
                break
            finish()
            c.run(f"i=0; while [ $i -lt 600 ] && ! grep -q '^requests: {m}$' "
                  f"{STATS}; do sleep 0.2; i=$((i + 1)); done", timeout=180)
            _, out = c.run(f"cat {STATS}")
            st = checks.parse_kv(out)
            ck.note(" ".join(f"{key}: {st.get(key)}" for key in (
                "requests", "last_status", "content", "free_frames",
                "snapshot_us", "max_lock_hold_us", "batches", "entries",
                "pcp_frames")))
            ck.check(st.get("last_status") == str(STATUS_OK),
                     f"request {m} answered {STATUS_OK}")
        ck.check(c.run("rmmod pvfree", check=False)[0] == 0, "final rmmod")
        _, out = c.run("dmesg", timeout=120)
        bad = checks.dmesg_problems(out, checks.DMESG_BAD_SMOKE)
        ck.check(not bad, "dmesg clean" + (f": {bad[:3]}" if bad else ""))
    except TestFailure as e:
        ck.check(False, str(e))
    except Exception as e:  # a harness bug still has to clean up and report
        ck.check(False, f"{type(e).__name__}: {e}")
    finally:
        if vm:
            vm.stop()
    return results.record("smoke", "smoke", sm.name, ck.failures,
                          flavour=sm.flavour, description=sm.describe(),
                          log=ck.logf.name)


def guest_main(a):
    qemu = h.qemu_binary()
    has_device = h.qemu_has_device(qemu, "pvfree-pci")
    todo = select(guest_smokes(has_device, a.append), a.only, a.list)
    if a.list:
        return 0
    log(f"guest smoke: QEMU {qemu}"
        + ("" if has_device else " has no pvfree-pci, no migration test"))
    writer = results.Writer(a.json)
    for sm in todo:
        rec = writer.write(run_guest_smoke(sm, qemu, has_device))
        log(f"{'PASS' if rec['status'] == 'ok' else 'FAIL'} {sm.name} "
            f"({sm.describe()})"
            + (f": {rec['failure']} (log {rec['log']})" if rec["failure"]
               else ""))
    failed = sum(r["status"] != "ok" for r in writer.records)
    log(f"{len(todo) - failed} passed, {failed} failed (logs under "
        f"{scratch()}/smoke-*/)")
    return 1 if failed or not todo else 0


# ---- QEMU smoke ----------------------------------------------------------

# Keep reallocating page cache (1 MiB files in tmpfs) and check every file
# against its checksum before rewriting it: pages freed and reused around
# the request must arrive intact.  /run/checker.n: the iteration (renamed
# into place, so that a reader never sees it empty).
CHECKER = ("mkdir -p /tmp/w && mount -t tmpfs tmpfs /tmp/w && "
           "(n=0; while :; do n=$((n + 1)); "
           "echo $n >/run/checker.t && mv /run/checker.t /run/checker.n; "
           "f=/tmp/w/w$((n % 32)); "
           "if [ -f $f.md5 ] && ! md5sum -c -s $f.md5; then "
           "echo \"CORRUPT $f at iteration $n\"; fi; "
           "dd if=/dev/urandom of=$f bs=64k count=16 2>/dev/null; "
           "md5sum $f >$f.md5; [ $n = 64 ] && echo ready; "
           "[ $((n % 64)) = 0 ] && echo \"checked $n\"; done) "
           ">/run/checker.log 2>&1 &")


def qemu_smoke(a, qemu):
    """The QEMU smoke test; returns (failures, numbers)."""
    wd = h.workdir("smoke-qemu")
    ck = Checks("qemu", os.path.join(wd, "smoke.log"))
    driver = not a.no_driver
    expect = a.expect or ("ok" if driver else "not-registered")
    caps = tuple(a.caps.split())
    nums = {}
    src = dst = None
    try:
        k, initrd, has_ko = image.initramfs("cloud-6.1")
        if driver and not has_ko:
            raise TestFailure("building the guest module failed")
        common = dict(qemu=qemu, workdir=wd, kernel=k.vmlinuz, initrd=initrd,
                      append=APPEND, mem_mb=a.mem, smp=2, pvfree=True,
                      pvfree_opts=a.device_opts.lstrip(","), accel=a.accel)
        src = h.Vm("src", **common).start()
        dst = h.Vm("dst", incoming=True, **common).start()
        log(f"smoke: qemu {qemu} ({a.accel}), guest {k.release}, "
            f"{a.mem} MiB, logs {wd}")
        src.wait_boot(BOOT_TIMEOUT)
        c = src.console
        if driver:
            ck.check(c.run(f"insmod {MODULES}/pvfree.ko", check=False)[0] == 0,
                     "insmod")
        c.run(CHECKER)
        c.run("i=0; while [ $i -lt 120 ] && ! grep -q ready /run/checker.log;"
              " do sleep 1; i=$((i + 1)); done; grep -q ready /run/checker.log",
              timeout=180)
        before = src.qmp.cmd("query-pvfree")
        ck.note(f"before: {before}")
        ck.check(before["registered"] == driver,
                 f"registered is {before['registered']}, expected {driver}")
        ck.check("registered:" in src.qmp.hmp("info pvfree"),
                 "info pvfree printed something useful")
        m = h.migrate(src, dst, "tcp", timeout=300, progress=ck.note,
                      caps=caps)
        after = src.qmp.cmd("query-pvfree")
        ck.note(f"after: {after}")
        ck.note(f"ram: transferred {m['transferred']} normal "
                f"{m['normal_pages']} duplicate {m['duplicate_pages']} total "
                f"{m['ram_total']} in {m['wall_s']:.1f} s")
        ck.check(dst.qmp.cmd("query-pvfree")["registered"] == driver,
                 "registration survived migration")
        ck.check(after["last-status"] == expect,
                 f"last-status {after['last-status']} "
                 f"({after.get('last-error')}), expected {expect}")
        want_skip = expect == "ok" and "skip-free=off" not in a.device_opts
        ck.check(after["pages-skipped"] > 0 if want_skip else
                 after["pages-skipped"] == 0,
                 f"{after['pages-skipped']} pages skipped, expected "
                 f"{'some' if want_skip else 'none'}")
        if m["free_pages_skipped"] is not None:
            ck.check(m["free_pages_skipped"] == after["pages-skipped"],
                     f"query-migrate free-pages-skipped "
                     f"{m['free_pages_skipped']} == query-pvfree "
                     f"pages-skipped {after['pages-skipped']}")
        if not driver:
            ck.check(after["wait-ms"] == 0,
                     f"waited {after['wait-ms']} ms with no driver")
        ck.note(f"migrate: {src.qmp.hmp('info migrate')!r}")
        dc = dst.console
        n1 = int(dc.run("cat /run/checker.n")[1].split()[-1])
        time.sleep(10)
        _, out = dc.run("cat /run/checker.n /run/checker.log")
        n2 = int(out.split()[0])
        corrupt = [line for line in out.splitlines() if "CORRUPT" in line]
        ck.check(not corrupt, "guest found no corrupted memory"
                 + (f": {corrupt[0]}" if corrupt else ""))
        ck.check(n2 > n1, f"the guest's checker made progress on the "
                 f"destination ({n1} -> {n2})")
        nums = {"pvfree": after, "migration": m}
    except TestFailure as e:
        ck.check(False, str(e))
    except Exception as e:  # a harness bug still has to clean up and report
        ck.check(False, f"{type(e).__name__}: {e}")
    finally:
        for vm in (src, dst):
            if vm:
                vm.stop()
    return ck.failures, nums, ck.logf.name


def qemu_main(a):
    qemu = h.qemu_binary()
    failures, nums, logpath = qemu_smoke(a, qemu)
    rec = results.record("smoke", "smoke", "qemu", failures, **nums)
    results.Writer(a.json).write(rec)
    for f in failures:
        log(f"smoke: FAIL: {f}")
    log(f"smoke: {'PASS' if not failures else 'FAILED'} (log {logpath})")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(prog="tests/kvm/smoke",
                                 description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    g = sub.add_parser("guest", help="make -C guest smoke")
    g.add_argument("--only", help="comma-separated smoke test names")
    g.add_argument("--list", action="store_true")
    g.add_argument("--append", default="", help="extra kernel command line")
    g.add_argument("--json", help="write the results here (JSON lines)")
    q = sub.add_parser("qemu", help="the QEMU smoke test")
    q.add_argument("--no-driver", action="store_true")
    q.add_argument("--mem", type=int, default=1024)
    q.add_argument("--accel", default="kvm" if os.access("/dev/kvm", os.W_OK)
                   else "tcg", choices=("kvm", "tcg"))
    q.add_argument("--device-opts", default="", help="e.g. ,timeout-ms=1")
    q.add_argument("--caps", default="", help='e.g. "multifd postcopy-ram"')
    q.add_argument("--expect", help="query-pvfree last-status")
    q.add_argument("--json", help="write the results here (JSON lines)")
    a = ap.parse_args()
    return guest_main(a) if a.what == "guest" else qemu_main(a)


if __name__ == "__main__":
    sys.exit(main())
