# SPDX-License-Identifier: MIT
"""pvfree benchmarks (`make bench`, `make bench-full`).

Migrates TCG guests with one QEMU binary three ways, interleaved in one run
(A B C A B C ..., every round):

  A  none     no pvfree device (the same QEMU build, device absent)
  B  balloon  virtio-balloon-pci,free-page-hint=on,iothread=io0
  C  pvfree   pvfree-pci + the guest driver

Scenarios (each measured on a FRESH boot per round, size and system, so
that no measurement depends on what an earlier migration left in the QEMU
process; docs/performance.md, "Matrix"):

  idle           just booted
  post-workload  a process dirtied 75% of RAM and exited
  fragmented     a process keeps every other page of a region of 50% of RAM
  writing        post-workload, then a process rewrites 1/8 of RAM steadily
                 during the migration

Links: `loopback` (max-bandwidth 0: no limit) and `10g` (max-bandwidth
1250000000 bytes/s).  Every migration is the first one of its boot
(--chain: the links of a scenario in a row, each from the previous
destination onward, which measures something else: see
docs/performance.md).  Every migration is checked on
the destination (the checksummed regions verify with 0 mismatches, the
guest answers, dmesg is clean): a row whose check failed is FAILED and is
left out of the medians.

Then the guest-side cost alone: guests with the self-test transport
(guest/pvfree_selftest.c, no host involved) take snapshots of mostly
high-order free memory (just booted) and of all-order-0 free memory
(`fragment` knob), per guest size.

Then Xen (--no-xen skips it): xen.py (tests/xen/run-migrate) boots Xen 4.17
under QEMU TCG once and runs its cases unpatched (Debian's libxenguest, idle
domU), idle, post-workload, fragmented (pvfree's libxenguest) --rounds
times, interleaved (--full: nodriver too), a fresh 256 MiB PV domU per
migration; every PVFREE-CASE line is a result record, FAILED unless
run-migrate's own checks for that case hold.

Output in OUT (default tests/out/bench/<UTC time>/): results.jsonl (one
record per migration and per guest-side snapshot, results.py), meta.json,
table.md, *.png (report.py renders them; tests/bench/report RUNDIR
re-renders a run directory).  Logs: $PVFREE_SCRATCH (/tmp/pvfree-bench;
Xen: xen/ there; its serial log is kept as xen-serial.log in OUT).

usage: tests/bench/run-bench [--full] [--rounds N] [--sizes 1,2,4]
          [--scenarios idle,...] [--links loopback,10g] [--systems A,B,C]
          [--guest-sizes 1,2,4,8] [--no-migrations] [--no-guest-cost]
          [--no-xen | --xen-only] [--xen-cases a,b] [--xen-rounds N]
          [--xen-parse LOG] [--chain] [--out DIR] [--list]
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time

from . import TOP, TestFailure, checks, image, report, results, scenario
from . import scratch, xen
from . import qemu as h

SYSTEMS = {"A": "none", "B": "balloon", "C": "pvfree"}
LINKS = {"loopback": 0, "10g": 1250000000}
SCENARIOS = ["idle", "post-workload", "fragmented", "writing"]
FLAVOUR = "cloud-6.1"
HOLD_MIB = 32           # checksummed region + 4 MiB writer, every migration
APPEND = "console=ttyS0 quiet panic=1"

# Cells: (scenario, link, sizes in GiB).  Every migration is the first one
# of a fresh boot: a QEMU process that was itself a migration destination
# sends several times faster under TCG than one whose guest wrote its
# memory (docs/performance.md, "Why one migration per boot").
# The default matrix (`make bench`) is what fits in ~20 minutes on two
# cores under TCG: idle and post-workload at every size, the 10 Gbit/s link
# at the largest, fragmented and writing at 2 GiB.
DEFAULT = {
    "cells": [("idle", "loopback", [1, 2, 4]), ("idle", "10g", [4]),
              ("post-workload", "loopback", [1, 2, 4]),
              ("post-workload", "10g", [4]),
              ("fragmented", "loopback", [2]), ("writing", "loopback", [2])],
    "guest_sizes": [1, 2, 4, 8],
}
FULL = {
    "cells": [(s, l, [1, 2, 4, 8]) for s in SCENARIOS for l in LINKS],
    "guest_sizes": [1, 2, 4, 8],
}
# Xen part: xen.py's cases with the real module, each once
# per round in this order, all in one boot of Xen.  One case (fresh domU:
# ~15-20 s to get ready, 5-9 s to migrate, verify) takes ~25 s here; its
# progress weight is in the units of the KVM part (~3 s per GiB migrated).
XEN_DEFAULT = ["unpatched", "idle", "post-workload", "fragmented"]
XEN_FULL = XEN_DEFAULT + ["nodriver"]
XEN_WEIGHT = 9


def now():
    return time.strftime("%H:%M:%S")


class Progress:
    """One line per migration: done/total, elapsed, estimate, result."""

    def __init__(self, total_weight, logf):
        self.total = total_weight
        self.done = 0.0
        self.t0 = time.time()
        self.n = 0
        self.logf = logf

    def log(self, msg):
        self.logf.write(f"{now()} {msg}\n")
        self.logf.flush()

    def line(self, weight, msg):
        self.done += weight
        self.n += 1
        el = int(time.time() - self.t0)
        left = int(el / self.done * (self.total - self.done)) \
            if self.done else 0
        s = (f"[bench {100 * self.done / self.total:3.0f}% "
             f"{el // 60:2d}:{el % 60:02d} elapsed, ~{left // 60}:"
             f"{left % 60:02d} left] {msg}")
        print(s, flush=True)
        self.log(s)


# ---- host-side measurements of a QEMU process ---------------------------

_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(vm):
    """utime + stime of VM's QEMU process, seconds."""
    with open(f"/proc/{vm.proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TCK


def rss_mib(vm):
    with open(f"/proc/{vm.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def ram_rss_mib(vm):
    """Resident part of the guest's RAM in VM's QEMU process: the largest
    private anonymous read-write mapping of at least the guest's size."""
    best = None
    size_kib = vm.mem_mb * 1024
    cur = None
    with open(f"/proc/{vm.proc.pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and ":" not in parts[0]:
                cur = {"anon": len(parts) == 5 and parts[1] == "rw-p"}
            elif cur is not None and parts[0] == "Size:":
                cur["size"] = int(parts[1])
            elif cur is not None and parts[0] == "Rss:":
                if cur["anon"] and cur.get("size", 0) >= size_kib:
                    rss = int(parts[1])
                    best = rss if best is None else max(best, rss)
    return None if best is None else best / 1024


# $PVFREE_BENCH_PERF=DIR: `perf record -g` both QEMUs during each migration
# (for finding out where the time goes; not used by make bench)
PERF_DIR = os.environ.get("PVFREE_BENCH_PERF")


def start_perf(tag, *vms):
    if not PERF_DIR:
        return []
    os.makedirs(PERF_DIR, exist_ok=True)
    procs = []
    for vm in vms:
        out = os.path.join(PERF_DIR, f"{tag}-{vm.name}.data")
        procs.append(subprocess.Popen(
            ["perf", "record", "-q", "-F", "499", "-g", "-o", out, "-p",
             str(vm.proc.pid)], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
    time.sleep(0.5)
    return procs


def stop_perf(procs):
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()


# ---- one boot, several migrations ---------------------------------------

def guest_memfree_mib(c):
    _, out = c.run("cat /proc/meminfo")
    mi = checks.parse_kv(out)
    return int(mi.get("MemFree", "0 kB").split()[0]) // 1024


def chain(qemu, k, initrd, rnd, size, sysid, scen, links, prog):
    """Boot one guest of SIZE GiB with system SYSID, prepare scenario SCEN
    and migrate it once per link in LINKS, each time from the previous
    destination onward.  Returns one row per migration."""
    device = SYSTEMS[sysid]
    mem = size * 1024
    name = f"r{rnd}-{size}g-{scen}-{'+'.join(links)}-{sysid}"
    wd = h.workdir(name)
    common = dict(qemu=qemu, workdir=wd, kernel=k.vmlinuz, initrd=initrd,
                  append=APPEND, mem_mb=mem, smp=1,
                  pvfree=device == "pvfree", balloon=device == "balloon")
    # what scenario.check_destination needs to know about the guest
    sc = scenario.Scenario(name, mem_mb=mem, device=device,
                           driver=device == "pvfree")
    rows = []
    src = None
    vms = []
    broken = None
    prep = {}
    daemons = ["hold"]
    try:
        src = h.Vm("src", **common)
        vms.append(src)
        src.start()
        t0 = time.time()
        src.wait_boot(scenario.BOOT_TIMEOUT)
        prep["boot_s"] = round(time.time() - t0, 1)
        c = src.console
        if device == "balloon":
            c.run("loadmod virtio_pci && loadmod virtio_balloon")
        if device == "pvfree":
            c.run("insmod /lib/pvfree-modules/pvfree.ko")
            scenario.registered(src)
        t1 = time.time()
        if scen in ("post-workload", "writing"):
            dirty = mem * 3 // 4
            c.run(f"pvfree-workload dirty {dirty}", timeout=900)
            prep["dirtied_mib"] = dirty
        if scen == "fragmented":
            frag = mem // 2
            c.run(f"pvfree-workload fragment {frag} -d -p /run/fragment.pid "
                  f"-r /run/fragment.res -w 0", timeout=900)
            prep["kept_mib"] = frag // 2
            daemons.append("fragment")
        prep["prepare_s"] = round(time.time() - t1, 1)
        prog.log(f"{name}: {prep}")
    except TestFailure as e:
        broken = f"boot: {e}"
    for i, link in enumerate(links):
        row = {"hv": "kvm", "round": rnd, "mem_mib": mem, "system": device,
               "scenario": scen, "link": link, "step": i + 1}
        row.update(prep)
        mname = f"r{rnd}-{size}g-{scen}-{link}-{sysid}"
        weight = size
        if broken:
            rows.append(results.record("bench", "migration", mname, [broken],
                                       **row))
            prog.line(weight, f"r{rnd} {size} GiB {sysid} {scen}/{link}: "
                      f"FAILED ({broken[:80]})")
            continue
        failures = []
        dst = None
        try:
            c = src.console
            # a fresh checksummed region with a writer for every migration
            # (verify stops a writer); "writing": 1/8 of RAM rewritten
            c.run("[ -f /run/hold.pid ] && pvfree-workload stop /run/hold.pid"
                  " >/dev/null; rm -f /run/hold.pid /run/hold.res; true",
                  timeout=120)
            hold = mem // 8 if scen == "writing" else HOLD_MIB
            writer = hold if scen == "writing" else 4
            c.run(f"pvfree-workload hold {hold} -d -p /run/hold.pid "
                  f"-r /run/hold.res -w {writer}", timeout=300)
            row["hold_mib"], row["writer_mib"] = hold, writer
            row["memfree_mib"] = guest_memfree_mib(c)

            dst = h.Vm(f"dst{i + 1}", incoming=True, **common)
            vms.append(dst)
            dst.start()
            src.qmp.cmd("migrate-set-parameters",
                        {"max-bandwidth": LINKS[link]})
            cpu0 = cpu_s(src)
            perf = start_perf(f"{name}-{link}", src, dst)
            try:
                m = h.migrate(src, dst, "tcp", timeout=900,
                              progress=prog.log, tag=f"[{name} {link}] ")
            finally:
                stop_perf(perf)
            row["src_cpu_s"] = round(cpu_s(src) - cpu0, 2)
            # the destination was started just before: all of its CPU time
            row["dst_cpu_s"] = round(cpu_s(dst), 2)
            row["dst_rss_mib"] = round(rss_mib(dst), 1)
            ram_rss = ram_rss_mib(dst)
            row["dst_ram_rss_mib"] = None if ram_rss is None else \
                round(ram_rss, 1)
            ram = (src.qmp.cmd("query-migrate") or {}).get("ram", {})
            row.update({
                "total_ms": m["total_time_ms"],
                "downtime_ms": m["downtime_ms"],
                "setup_ms": m["setup_time_ms"],
                "bytes": m["transferred"],
                "normal_pages": m["normal_pages"],
                "zero_pages": m["duplicate_pages"],
                "passes": m["dirty_sync_count"],
                "skipped": ram.get("free-pages-skipped"),
                "mbps": ram.get("mbps"),
                "precopy_bytes": ram.get("precopy-bytes"),
                "downtime_bytes": ram.get("downtime-bytes"),
            })
            if device == "pvfree":
                pv = src.qmp.cmd("query-pvfree")
                row.update({
                    "pv_status": pv.get("last-status"),
                    "pv_skipped": pv.get("pages-skipped"),
                    "pv_wait_ms": pv.get("wait-ms"),
                    "snapshot_us": pv.get("guest-snapshot-us"),
                    "lock_hold_us": pv.get("guest-max-lock-hold-us"),
                })
                if pv.get("last-status") != "ok":
                    failures.append(f"query-pvfree last-status "
                                    f"{pv.get('last-status')}: "
                                    f"{pv.get('last-error')}")
            r = {"failures": []}
            scenario.check_destination(sc, r, dst, daemons,
                                        failures.append, prog.log, wd,
                                        f"_{i + 1}")
            row["mismatches"] = r.get("mismatches")
            gs = r.get(f"guest_stats_{i + 1}") or {}
            if gs:
                row["entries"] = gs.get("entries")
                row["batches"] = gs.get("batches")
                row["pcp_frames"] = gs.get("pcp_frames")
        except TestFailure as e:
            failures.append(str(e))
            broken = f"after step {i + 1}: {e}"
        except Exception as e:  # a harness bug: report it, clean up
            failures.append(f"{type(e).__name__}: {e}")
            broken = f"after step {i + 1}: {type(e).__name__}: {e}"
        if dst is not None:
            # the destination runs on as the next source
            src.stop()
            src = dst
        row = results.record("bench", "migration", mname,
                             ["; ".join(failures)[:400]] if failures else [],
                             **row)
        rows.append(row)
        mib = (row.get("bytes") or 0) / (1 << 20)
        prog.line(weight, f"r{rnd} {size} GiB {sysid} {scen}/{link}: "
                  f"{row.get('total_ms', '-')} ms, {mib:.0f} MiB, "
                  f"{row.get('passes', '-')} passes, "
                  f"skipped {row.get('skipped', '-')}, dst RSS "
                  f"{row.get('dst_rss_mib', '-')} MiB: {row['status']}"
                  + (f" ({row['failure'][:120]})" if failures else ""))
    for vm in vms:
        vm.stop()
    return rows


# ---- guest-side cost (self-test transport) -------------------------------

ST = "/sys/kernel/debug/pvfree-selftest"


def guest_cost(qemu, k, initrd, size, requests, prog):
    """Snapshots taken inside a guest of SIZE GiB with no host involved.
    Returns one row per request."""
    mem = size * 1024
    name = f"guest-cost-{size}g"
    wd = h.workdir(name)
    rows = []
    vm = h.Vm("guest", qemu=qemu, workdir=wd, kernel=k.vmlinuz,
              initrd=initrd, append=APPEND, mem_mb=mem, smp=1)
    try:
        vm.start()
        vm.wait_boot(scenario.BOOT_TIMEOUT)
        c = vm.console
        c.run("insmod /lib/pvfree-modules/pvfree-selftest.ko")
        for cond in ("contiguous", "order-0"):
            held = 0
            if cond == "order-0":
                # hold every other page of 90% of the free memory: what is
                # left free is almost all order-0 pages between held ones
                n = guest_memfree_mib(c) * 256 * 9 // 10
                c.run(f"echo {n} > {ST}/fragment", timeout=600)
                held = n // 2
            for q in range(requests):
                mf = guest_memfree_mib(c)
                _, out = c.run(f"echo 1 > {ST}/request && cat {ST}/request",
                               timeout=120)
                _, st = c.run("cat /sys/kernel/debug/pvfree/stats")
                s = checks.parse_kv(st)
                line = out.strip().splitlines()[-1] if out.strip() else ""
                f = dict(zip(line.split()[::2], line.split()[1::2]))
                ok = "FAIL" not in line and s.get("last_status") == "1"
                row = {"suite": "bench", "kind": "guest-cost",
                       "name": f"guest-cost-{size}g-{cond}-{q + 1}",
                       "mem_mib": mem, "condition": cond, "request": q + 1,
                       "status": "ok" if ok else results.FAILED,
                       "memfree_mib": mf, "held_pages": held,
                       "free_frames": s.get("free_frames"),
                       "snapshot_us": s.get("snapshot_us"),
                       "lock_hold_us": s.get("max_lock_hold_us"),
                       "entries": s.get("entries"),
                       "batches": s.get("batches"),
                       "pcp_frames": s.get("pcp_frames"),
                       "failure": "" if "FAIL" not in line else line[:200]}
                if "snapshot_us" in f and not row["snapshot_us"]:
                    row["snapshot_us"] = f["snapshot_us"]
                rows.append(row)
            prog.line(size / 2, f"guest cost {size} GiB {cond}: snapshot "
                      f"{', '.join(str(r['snapshot_us']) for r in rows[-requests:])}"
                      f" us, lock hold "
                      f"{', '.join(str(r['lock_hold_us']) for r in rows[-requests:])}"
                      f" us, {rows[-1]['entries']} entries: "
                      f"{'ok' if all(r['status'] == 'ok' for r in rows[-requests:]) else 'FAILED'}")
        _, out = c.run("dmesg", timeout=120)
        bad = checks.dmesg_problems(out)
        if bad:
            for r in rows:
                r["status"] = results.FAILED
                r["failure"] = f"dmesg: {bad[:2]}"
    except TestFailure as e:
        rows.append(results.record("bench", "guest-cost",
                                   f"guest-cost-{size}g", [str(e)[:300]],
                                   mem_mib=mem, condition="-"))
        prog.line(size, f"guest cost {size} GiB: FAILED ({str(e)[:120]})")
    finally:
        vm.stop()
    return rows


# ---- Xen: xen.py (tests/xen/run-migrate) ---------------------------------

def xen_msg(r):
    mib = (r.get("bytes") or 0) / (1 << 20)
    return (f"Xen r{r['round']} {r['name']}: {mib:.0f} MiB, stream "
            f"{r.get('stream_s') or '-'} s, xl migrate "
            f"{r.get('total_s') or '-'} s, skipped {r.get('skipped') or 0}: "
            f"{r['status']}"
            + (f" ({r['failure'][:120]})" if r["status"] != "ok" else ""))


def xen_bench(plan, out, prog, parse=None):
    """Boot Xen once with the cases PLAN (or parse the serial log PARSE of
    such a run instead) and return (records, whether all passed)."""
    if parse:
        with open(parse, errors="replace") as f:
            recs = xen.records(xen.parse(f), plan, "bench")
        for r in recs:
            prog.line(XEN_WEIGHT, xen_msg(r))
        return recs, None
    seen = []

    def progress(case, fields):
        seen.append(case)
        r = xen.records([(case, fields)], [case], "bench")[0]
        r["round"] = seen.count(case)
        prog.line(XEN_WEIGHT, xen_msg(r))

    # a hung dom0 must not hold make bench for run-migrate's default 40 min
    timeout = int(os.environ.get("PVFREE_XEN_TIMEOUT", 100 * len(plan) + 300))
    prog.log("xen: cases " + ":".join(plan))
    serial, parsed = xen.boot(plan, out=os.path.join(scratch(), "xen"),
                              timeout=timeout, progress=progress)
    # the serial log is the record: kept in OUT
    if os.path.exists(serial):
        shutil.copyfile(serial, os.path.join(out, "xen-serial.log"))
    recs = xen.records(parsed, plan, "bench")
    for r in recs[len(seen):]:
        prog.line(XEN_WEIGHT, xen_msg(r))
    ratio = xen.ratio(recs)
    ok = all(r["status"] == "ok" for r in recs) and bool(parsed) and \
        (ratio is None or ratio <= xen.MAX_RATIO)
    return recs, ok


# ---- main ----------------------------------------------------------------

def ints(s):
    return [int(x) for x in s.split(",") if x]


def main():
    ap = argparse.ArgumentParser(prog="tests/bench/run-bench",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true",
                    help="8 GiB too and every scenario on both links")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", help="guest GiB for migrations, e.g. 1,2,4")
    ap.add_argument("--scenarios", help=",".join(SCENARIOS))
    ap.add_argument("--links", help="loopback,10g")
    ap.add_argument("--systems", default="A,B,C")
    ap.add_argument("--guest-sizes", help="guest GiB for the guest-side cost")
    ap.add_argument("--guest-requests", type=int, default=3)
    ap.add_argument("--no-migrations", action="store_true")
    ap.add_argument("--no-guest-cost", action="store_true")
    ap.add_argument("--no-xen", action="store_true",
                    help="skip the Xen part (tests/xen/run-migrate)")
    ap.add_argument("--xen-only", action="store_true",
                    help="only the Xen part (= --no-migrations "
                    "--no-guest-cost)")
    ap.add_argument("--xen-cases", help="run-migrate cases, default "
                    f"{','.join(XEN_DEFAULT)} (--full: {','.join(XEN_FULL)})")
    ap.add_argument("--xen-rounds", type=int,
                    help="rounds of the Xen part (default --rounds)")
    ap.add_argument("--xen-parse", metavar="LOG",
                    help="no Xen boot: parse LOG (run-migrate's stderr or "
                    "serial log of a run of the same cases) instead")
    ap.add_argument("--out")
    ap.add_argument("--chain", action="store_true",
                    help="migrate one boot once per link of its scenario, "
                    "each from the previous destination (to study the "
                    "order effect; not what make bench measures)")
    ap.add_argument("--list", action="store_true",
                    help="print the matrix and exit")
    a = ap.parse_args()

    os.environ.setdefault("PVFREE_SCRATCH", "/tmp/pvfree-bench")
    m = FULL if a.full else DEFAULT
    want_s = ints(a.sizes) if a.sizes else None
    want_sc = a.scenarios.split(",") if a.scenarios else SCENARIOS
    want_l = a.links.split(",") if a.links else list(LINKS)
    cells = [(sc, l, [z for z in zs if not want_s or z in want_s])
             for sc, l, zs in m["cells"] if sc in want_sc and l in want_l]
    cells = [c for c in cells if c[2]]
    systems = a.systems.split(",")
    gsizes = ints(a.guest_sizes) if a.guest_sizes else m["guest_sizes"]
    if a.no_migrations or a.xen_only:
        cells = []
    if a.no_guest_cost or a.xen_only:
        gsizes = []
    xcases = a.xen_cases.split(",") if a.xen_cases else \
        (XEN_FULL if a.full else XEN_DEFAULT)
    for c in xcases:
        if c not in xen.CASE_SYSTEM:
            ap.error(f"--xen-cases: {c}: not one of "
                     f"{','.join(xen.CASE_SYSTEM)}")
    xrounds = a.xen_rounds or a.rounds
    xplan = [] if a.no_xen else [c for _ in range(xrounds) for c in xcases]

    # one boot and one migration per (round, size, scenario, link, system);
    # A B C adjacent, smaller guests first in every round
    sizes = sorted({z for _, _, zs in cells for z in zs})
    plan = [(r, z, sc, sy, [l]) for r in range(1, a.rounds + 1)
            for z in sizes for sc, l, zs in cells if z in zs
            for sy in systems]
    n_mig = len(plan)
    if a.chain:
        # the links of a scenario as successive migrations of one boot
        plan = [(r, z, sc, sy, [l for sc2, l, zs in cells
                                if sc2 == sc and z in zs])
                for r in range(1, a.rounds + 1) for z in sizes
                for sc in SCENARIOS
                if any(sc2 == sc and z in zs for sc2, _, zs in cells)
                for sy in systems]
        n_mig = sum(len(p[4]) for p in plan)
    print(f"pvfree bench ({'full' if a.full else 'default'}): {a.rounds} "
          f"rounds x systems {','.join(systems)} x {len(plan) // max(1, a.rounds * len(systems))} "
          f"(scenario, link, size) = {n_mig} migrations in {len(plan)} "
          f"boots; "
          f"guest cost at {gsizes} GiB", flush=True)
    print("cells: " + ", ".join(f"{sc}/{l} {'+'.join(map(str, zs))} GiB"
                                for sc, l, zs in cells), flush=True)
    if xplan:
        print(f"xen: {xrounds} rounds x {','.join(xcases)} = {len(xplan)} "
              f"xl migrate of a {xen.domu_mib()} MiB PV domU in one boot of Xen "
              f"(tests/xen/run-migrate --cases {':'.join(xplan)})"
              + (f"; parsed from {a.xen_parse}" if a.xen_parse else ""),
              flush=True)
    else:
        print("xen: none", flush=True)
    if a.list:
        return 0

    out = a.out or os.path.join(TOP, "tests", "out", "bench",
                                time.strftime("%Y%m%d-%H%M%S", time.gmtime()))
    os.makedirs(out, exist_ok=True)
    logf = open(os.path.join(out, "bench.log"), "a")
    t0 = time.time()
    qemu = h.qemu_binary()
    if not h.qemu_has_device(qemu, "pvfree-pci"):
        print(f"{qemu} has no pvfree-pci device", file=sys.stderr)
        return 1
    k = None
    if cells or gsizes:
        k, initrd, has_ko = image.initramfs(FLAVOUR)
        if not has_ko:
            print("pvfree.ko could not be built (guest/)", file=sys.stderr)
            return 1
    print(f"qemu: {qemu}\nguest: {FLAVOUR} {k.release if k else '-'}\n"
          f"out: {out}\nlogs: {scratch()}", flush=True)
    # migrate() leaves max-bandwidth alone: the bench sets it per link
    h.MAX_BANDWIDTH = 0
    meta = report.machine_info(qemu, k.release if k else "-")
    meta.update({"mode": "full" if a.full else "default",
                 "rounds": a.rounds, "sizes": sizes, "guest_sizes": gsizes,
                 "cells": [f"{sc}/{l} {'+'.join(map(str, zs))} GiB"
                           for sc, l, zs in cells],
                 "systems": systems, "downtime_limit_ms": h.DOWNTIME_LIMIT_MS,
                 "command": " ".join(["tests/bench/run-bench"] + sys.argv[1:]),
                 "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})

    weight = sum(p[1] * len(p[4]) for p in plan) + sum(gsizes) + \
        XEN_WEIGHT * len(xplan)
    prog = Progress(weight or 1, logf)
    writer = results.Writer(os.path.join(out, report.RESULTS))
    rows = []
    for rnd, size, scen, sysid, links in plan:
        for r in chain(qemu, k, initrd, rnd, size, sysid, scen, links, prog):
            rows.append(writer.write(r))
    grows = []
    if gsizes:
        k2, initrd2, has_st = image.initramfs(FLAVOUR, selftest=True)
        if not has_st:
            print("pvfree.ko (SELFTEST=1) could not be built", file=sys.stderr)
        else:
            for size in gsizes:
                for r in guest_cost(qemu, k2, initrd2, size,
                                    a.guest_requests, prog):
                    grows.append(writer.write(r))
    xrows = []
    if xplan:
        t1 = time.time()
        xrows, xok = xen_bench(xplan, out, prog, a.xen_parse)
        for r in xrows:
            writer.write(r)
        meta["xen"] = {
            "cases": ",".join(xcases), "rounds": xrounds,
            "command": "tests/xen/run-migrate --cases " + ":".join(xplan),
            "domu_mib": xen.domu_mib(),
            "cpu": os.environ.get("PVFREE_XEN_CPU", "qemu64"),
            "passed": xok, "parsed_from": a.xen_parse,
            "elapsed_s": round(time.time() - t1)}
    meta["elapsed_s"] = round(time.time() - t0)
    report.write_meta(out, meta)
    md = report.render(out)
    print("\n" + md, flush=True)
    failed = sum(r["status"] != "ok" for r in rows + grows + xrows)
    print(f"bench done in {meta['elapsed_s'] // 60}:{meta['elapsed_s'] % 60:02d}"
          f" ({len(rows)} migrations, {len(xrows)} Xen migrations, {failed} "
          f"FAILED rows); {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
