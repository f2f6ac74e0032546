# SPDX-License-Identifier: MIT
"""pvfree KVM/QEMU migration tests (`make kvm-test`, tests/kvm/run-tests).

Boots TCG guests with the patched QEMU ($PVFREE_QEMU, else what
hv-kvm/build-qemu.sh prints), migrates them and checks integrity, the
guest's kernel log and what pvfree skipped.  One line per scenario, a table
of the measurements, then "N passed, N failed"; exit status 1 if any failed.

usage: tests/kvm/run-tests [--only NAME[,NAME]] [--list] [--mem MIB]
                           [--no-device] [--json FILE]
  --no-device  plumbing check with a QEMU without pvfree-pci: drops the
               device and every pvfree expectation
  --json       the results as JSON lines (results.py)
"""

import argparse
import os
import sys
import time

from . import log, results, scenario, scratch, select
from . import qemu as h
from .results import kib
from .scenario import Scenario


def scenarios(mem):
    dirty = mem * 3 // 4
    return [
        Scenario("idle", mem_mb=mem, expect_skipped=">0", expect_status="ok",
                 expect_content=1),
        Scenario("post-workload", mem_mb=mem, dirty_mib=dirty, hold_mib=16,
                 expect_skipped=">0", expect_status="ok"),
        # reference: the same guest and workload without pvfree
        Scenario("post-workload-nopv", mem_mb=mem, dirty_mib=dirty,
                 hold_mib=16, device="none", driver=False),
        Scenario("fragmented", mem_mb=mem, fragment_mib=mem // 2, hold_mib=16,
                 expect_skipped=">0", expect_status="ok"),
        Scenario("churn", mem_mb=mem, smp=2, churn=True, dirty_mib=mem // 2,
                 expect_skipped=">0", expect_status="ok"),
        Scenario("pagecache", mem_mb=mem, smp=2, files_mib=mem // 4,
                 expect_skipped=">0", expect_status="ok"),
        # the checks must be able to fail: zero one page, expect 1 mismatch
        Scenario("negative-control", mem_mb=mem, corrupt=True,
                 expect_skipped=">0", expect_status="ok"),
        Scenario("two-hops", mem_mb=mem, dirty_mib=mem // 2, hops=2,
                 expect_skipped=">0", expect_status="ok"),
        # the guest rarely answers within 1 ms under TCG: whatever the
        # outcome, a late answer must not be used (checked for every
        # scenario: status other than ok => nothing skipped)
        Scenario("timeout-1ms", mem_mb=mem, device_opts="timeout-ms=1",
                 dirty_mib=mem // 2, expect_status=("timeout", "ok")),
        # multifd sends from the same bitmap: pages are skipped as usual
        Scenario("multifd", mem_mb=mem, dirty_mib=dirty, hold_mib=16,
                 caps=("multifd",), expect_skipped=">0", expect_status="ok"),
        # postcopy would never send a skipped page the destination faults
        # on, so the device does not ask; the migration completes as precopy
        Scenario("postcopy-ram", mem_mb=mem, dirty_mib=mem // 2,
                 caps=("postcopy-ram",), expect_skipped="==0",
                 expect_status="disabled"),
        Scenario("no-driver", mem_mb=mem, driver=False, dirty_mib=mem // 2,
                 transport="exec", expect_skipped="==0",
                 expect_status="not-registered"),
        Scenario("skip-free-off", mem_mb=mem, device_opts="skip-free=off",
                 dirty_mib=mem // 2, expect_skipped="==0", expect_status="ok"),
        Scenario("init-on-free", mem_mb=mem, append="init_on_free=1",
                 dirty_mib=mem // 2, expect_skipped=">0", expect_status="ok",
                 expect_content=2),
        Scenario("page-poison", flavour="amd64-6.1", mem_mb=mem,
                 append="page_poison=1", dirty_mib=mem // 2,
                 expect_skipped="==0", expect_content=3,
                 # spec §8.3: the guest SHOULD answer UNSUPPORTED itself
                 expect_status=("guest-status", "unsupported-content"),
                 expect_guest_status=4),     # PVFREE_STATUS_UNSUPPORTED
        Scenario("idle-6.12", flavour="cloud-6.12", mem_mb=mem,
                 expect_skipped=">0", expect_status="ok"),
        Scenario("post-workload-6.12", flavour="cloud-6.12", mem_mb=mem,
                 dirty_mib=dirty, hold_mib=16, expect_skipped=">0",
                 expect_status="ok"),
    ]


# (post-workload, idle) pairs for the acceptance criterion
ACCEPTANCE = [("post-workload", "idle"), ("post-workload-6.12", "idle-6.12")]
ACCEPT_RATIO = 1.25


def table(done, out=sys.stdout):
    hdr = (f"{'scenario':<20} {'kernel':<11} {'MiB':>5} {'result':<6} "
           f"{'sent KiB':>11} {'total ms':>9} {'down ms':>8} "
           f"{'skipped':>8} {'status':<15} {'wait ms':>7} {'snap us':>8} "
           f"{'lock us':>7} {'mism':>4} {'pcp':>6}")
    print(hdr, file=out)
    print("-" * len(hdr), file=out)
    for r in done:
        pv = r.get("pvfree") or {}
        print(f"{r['name']:<20} {r['flavour']:<11} {r['mem_mb']:>5} "
              f"{'PASS' if r['ok'] else 'FAIL':<6} {kib(r.get('transferred')):>11} "
              f"{str(r.get('total_time_ms', '-')):>9} "
              f"{str(r.get('downtime_ms', '-')):>8} "
              f"{str(r.get('skipped', '-')):>8} "
              f"{str(r.get('last_status', '-')):<15} "
              f"{str(pv.get('wait-ms', '-')):>7} "
              f"{str(pv.get('guest-snapshot-us', '-')):>8} "
              f"{str(pv.get('guest-max-lock-hold-us', '-')):>7} "
              f"{str(r.get('mismatches', '-')):>4} "
              f"{str(r.get('guest_pcp_pages', '-')):>6}", file=out)


def main():
    ap = argparse.ArgumentParser(prog="tests/kvm/run-tests",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated scenario names")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--mem", type=int, default=int(os.environ.get(
        "PVFREE_TEST_MEM", "1024")), help="guest MiB (default 1024)")
    ap.add_argument("--no-device", action="store_true")
    ap.add_argument("--json", help="write the results here (JSON lines)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each scenario N times (flakiness hunting)")
    a = ap.parse_args()

    todo = select(scenarios(a.mem), a.only, a.list)
    if a.list:
        return 0

    if a.repeat > 1:
        todo = [s for s in todo for _ in range(a.repeat)]
    t0 = time.time()
    qemu = h.qemu_binary()
    has_dev = h.qemu_has_device(qemu, "pvfree-pci")
    print(f"qemu: {qemu} (pvfree-pci {'present' if has_dev else 'MISSING'})",
          flush=True)
    if a.no_device:
        for s in todo:
            if s.device == "pvfree":
                s.device, s.driver = "none", False
            s.expect_skipped = s.expect_status = None

    done = []
    writer = results.Writer(a.json)
    passed = failed = 0
    for s in todo:
        log(f"--- {s.name}: {s.describe()}")
        if s.device == "pvfree" and not has_dev:
            r = {"name": s.name, "flavour": s.flavour, "mem_mb": s.mem_mb,
                 "ok": False, "elapsed_s": 0,
                 "failures": ["pvfree-pci is not in this QEMU binary"]}
        else:
            r = scenario.run(s, qemu)
        done.append(r)
        writer.write(scenario.record(r, "kvm"))
        pv = f", skipped {r.get('skipped')} ({r.get('last_status')})" \
            if "skipped" in r else ""
        sent = (f"sent {kib(r.get('transferred'))} KiB in "
                f"{r.get('total_time_ms')} ms, downtime "
                f"{r.get('downtime_ms')} ms")
        checked = (", mismatches 0"
                   f"{' (+1 planted, detected)' if r.get('control_detected') else ''}"
                   ", dmesg clean")
        # a failure's line names the failures, then what was skipped
        if results.print_outcome(r, sent + pv + checked,
                                 "" if r["ok"] else pv):
            passed += 1
        else:
            failed += 1

    by = {r["name"]: r for r in done}
    for post, idle in ACCEPTANCE:
        if post not in by or idle not in by or a.no_device:
            continue
        p, i = by[post].get("transferred"), by[idle].get("transferred")
        name = f"acceptance {post} <= {ACCEPT_RATIO} x {idle}"
        ok = p is not None and i and p <= ACCEPT_RATIO * i
        writer.write(results.record(
            "kvm", "acceptance", name, [] if ok else ["ratio too high"],
            ratio=p / i if p is not None and i else None))
        if ok:
            passed += 1
            print(f"PASS {name}: {kib(p)} KiB vs {kib(i)} KiB "
                  f"(x{p / i:.2f})")
        else:
            failed += 1
            ratio = f"x{p / i:.2f}" if p is not None and i else "no data"
            print(f"FAIL {name}: {kib(p)} KiB vs {kib(i)} KiB ({ratio})")

    print()
    table(done)
    print("(pcp: free pages on the guest's per-CPU lists before migration;"
          " the driver marks them too: guest stats pcp_frames)")
    print(f"\n(tests/kvm/run-tests, {time.time() - t0:.0f} s; logs under "
          f"{scratch()}/<scenario>/)")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
