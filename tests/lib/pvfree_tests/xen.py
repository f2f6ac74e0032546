# SPDX-License-Identifier: MIT
"""Xen end to end (`make xen-test`, tests/xen/run-migrate): boot Xen 4.17
under QEMU TCG with the dom0 of tests/xen/build-initramfs.sh; for every
case dom0 (tests/xen/dom0-init.sh) creates a fresh test domU, migrates it
to localhost with countbytes in the `xl migrate' pipe and has the domU
verify its memory on the destination (tests/xen/domu-init.sh).  This
module boots the VM, reads the serial log, checks every case and writes
one result record per case.

usage: tests/xen/run-migrate [--type pv|pvh] [--hv shadow|stock]
                             [--cases unpatched:idle:post-workload:...]
                             [--json FILE]
  --type   domU type (default pv)
  --hv     hypervisor: shadow = Debian's config + CONFIG_SHADOW_PAGING
           (hv-xen/build-xen-tools.sh --hypervisor; needed to migrate PV
           guests live, and for PVH under -cpu qemu64, which has no NPT),
           stock = Debian's /boot/xen-4.17-amd64.gz (HAP only: PVH needs
           a CPU model with NPT) (default: shadow)
  --cases  default unpatched:idle:post-workload:fragmented:nodriver:two-hops:
           zero-fill; opt-in: paused (see ISSUE10_CASES)
           (the real module); stand-in cases: skip, silent, noreg,
           standin-unpatched (see dom0-init.sh)
  --json   the results as JSON lines (results.py)
Environment: PVFREE_QEMU (default: what hv-kvm/build-qemu.sh prints),
PVFREE_XEN_CPU (default qemu64; with max,-smap,-smep dom0 user space
crashes at random once migrations start), PVFREE_XEN_ARGS (extra Xen
command line), PVFREE_XEN_TIMEOUT (s, default 2400), PVFREE_XEN_OUT (log
directory, default $PVFREE_SCRATCH/xen), PVFREE_XEN_MAX_RATIO (default
1.25), PVFREE_XEN_VM_LOCK=1 (wait for /tmp/pvfree-heavy.lock, CPU-heavy
builds, before booting).
Exit status 0 if every case ran and migrated (rc=0), every integrity
check on the destination found no mismatch, free pfns were skipped
exactly where expected, and post-workload sent at most
PVFREE_XEN_MAX_RATIO x what idle sent."""

import argparse
import os
import re
import subprocess
import sys
import time

from . import CACHE, TOP, err, results, scratch
from . import qemu as q

HERE = os.path.join(TOP, "tests", "xen")
DEFAULT_CASES = ["unpatched", "idle", "post-workload", "fragmented",
                 "nodriver", "two-hops", "zero-fill"]
# Opt-in: the saver does not ask a paused domain (checked in its log), but
# stock libxenguest fails the save of a PV domain that was paused when it
# started and is unpaused during it ("Bad mfn for L1"), with or without
# pvfree; and a PV guest must be running to answer the suspend.
ISSUE10_CASES = ["paused"]
STANDIN_CASES = ["skip", "silent", "noreg", "standin-unpatched"]
# cases with the real module: (system, scenario) of their result records
CASE_SYSTEM = {"unpatched": ("unpatched", "idle"),
               "idle": ("pvfree", "idle"),
               "post-workload": ("pvfree", "post-workload"),
               "fragmented": ("pvfree", "fragmented"),
               "nodriver": ("nodriver", "idle"),
               "two-hops": ("pvfree", "two-hops"),
               "zero-fill": ("pvfree", "zero-fill"),
               "paused": ("pvfree", "paused")}
# cases where pvfree's saver must skip free pfns
SKIPPING = ("idle", "post-workload", "fragmented", "two-hops")
MAX_RATIO = float(os.environ.get("PVFREE_XEN_MAX_RATIO", "1.25"))
# what tests/xen/run-migrate prints on stderr from the serial log
SHOWN = re.compile(r"PVFREE-(LOG|CASE|DOMU)|PVFREE:|standin:")


def hypervisor(kind):
    """The multiboot image of Xen: shadow (built with shadow paging) or
    stock (Debian's)."""
    if kind == "shadow":
        return subprocess.run(
            [os.path.join(TOP, "hv-xen", "build-xen-tools.sh"),
             "--hypervisor"], stdout=subprocess.PIPE, text=True,
            check=True).stdout.strip()
    xen = os.path.join(CACHE, "xen-hv-stock", "xen")
    if not os.path.exists(xen):
        os.makedirs(os.path.dirname(xen), exist_ok=True)
        with open(xen + ".tmp", "wb") as f:
            subprocess.run(["zcat", "/boot/xen-4.17-amd64.gz"], stdout=f,
                           check=True)
        os.rename(xen + ".tmp", xen)
    return xen


def dom0_image():
    """(dom0 vmlinuz, dom0 initramfs) of tests/xen/build-initramfs.sh."""
    out = subprocess.run([os.path.join(HERE, "build-initramfs.sh")],
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    vmlinuz, initramfs = out.split()
    return vmlinuz, initramfs


def domu_mib():
    """The test domU's memory (tests/xen/domu.cfg)."""
    with open(os.path.join(HERE, "domu.cfg")) as f:
        m = re.search(r"^memory\s*=\s*(\d+)", f.read(), re.M)
    return int(m.group(1)) if m else None


def _kv(text):
    return dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", text))


def parse(lines):
    """[(case, fields)] of the PVFREE-CASE lines of a serial log, in order;
    FIELDS also has what the case's PVFREE: and PVFREE-LOG lines before it
    said: ready_s, answer_ms, snapshot_log_us, lock_hold_us, not_sent_mib."""
    pend, got = {}, []
    for line in lines:
        line = line.replace("\r", "").rstrip("\n")
        m = re.search(r"PVFREE: (\S+): domU \d+ (.*) in ([\d.]+) s$", line)
        if m:
            pend.setdefault(m.group(1), {}).update(_kv(m.group(2)))
            pend[m.group(1)]["ready_s"] = m.group(3)
            continue
        m = re.search(r"PVFREE-LOG (\S+) hop \d+: .*pvfree: guest answered "
                      r"request \d+ in (\d+) ms: .*snapshot (\d+) us, max "
                      r"lock hold (\d+) us", line)
        if m:
            pend.setdefault(m.group(1), {}).update(
                answer_ms=m.group(2), snapshot_log_us=m.group(3),
                lock_hold_us=m.group(4))
            continue
        m = re.search(r"PVFREE-LOG (\S+) hop \d+: .*pvfree: first pass sent "
                      r"\d+ free pfns without data \((\d+) MiB not sent\)",
                      line)
        if m:
            pend.setdefault(m.group(1), {})["not_sent_mib"] = m.group(2)
            continue
        m = re.search(r"^.*?(PVFREE-CASE (\S+) (.*))", line)
        if m:
            f = pend.pop(m.group(2), {})
            f.update(_kv(m.group(3)))
            f["line"] = m.group(1)
            got.append((m.group(2), f))
    return got


def _int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def _ratio(used):
    """OK and TOTAL of a stand-in's "OK/TOTAL" field, or None."""
    m = re.fullmatch(r"(\d+)/(\d+)", used or "")
    return (m.group(1), m.group(2)) if m else None


def case_failures(case, f):
    """What is wrong with the result FIELDS F of CASE."""
    bad = []
    if f.get("rc") != "0":
        bad.append("migration failed")
    if case in STANDIN_CASES:
        used, fz = _ratio(f.get("used_ok")), _ratio(f.get("free_zero"))
        if not used or used[0] != used[1]:
            bad.append("USED buffer damaged or not checked")
        elif case == "skip" and (not fz or fz[0] != fz[1]):
            bad.append("FREE frames were sent (not zero)")
        return bad
    for d in ("hold", "fragment"):
        m = f.get(f"{d}_mismatches")
        if m and (m != "0" or f.get(f"{d}_rc") != "0"):
            bad.append(f"{d}: {m} mismatches after migration")
    if not f.get("hold_mismatches"):
        bad.append("integrity not checked")
    if case == "fragmented" and not f.get("fragment_mismatches"):
        bad.append("fragment not checked")
    skipped = _int(f.get("skipped"))
    if case in SKIPPING:
        if skipped <= 0:
            bad.append("no free pfns skipped")
        if f.get("guest_last_status") != "1":      # PVFREE_STATUS_OK
            bad.append("guest's last status not OK")
    if case == "two-hops":
        if _int(f.get("hop1_skipped")) <= 0:
            bad.append("hop 1: no free pfns skipped")
        # ids continue above the header's (spec 9.2)
        if f.get("guest_last_request_id") != "2":
            bad.append("guest's last request id is not 2")
        if (f.get("rmmod_rc"), f.get("keys_after_rmmod"),
                f.get("dmesg_bad")) != ("0", "none", "0"):
            bad.append("rmmod: keys not removed or dmesg not clean")
    if case == "zero-fill":
        # init_on_free=1: the guest's free pages must read as zero on the
        # destination, whatever Xen's heap held (issue 10, section 1)
        if _int(f.get("zero_pages")) <= 0:
            bad.append("zerocheck did not run")
        elif f.get("zero_nonzero_bytes") != "0":
            bad.append(f"{f.get('zero_nonzero_bytes')} non-zero bytes in "
                       f"{f.get('zero_nonzero_pages')} fresh pages "
                       f"(first {f.get('zero_first_byte')})")
        if f.get("guest_content") != "2":           # PVFREE_CONTENT_ZERO
            bad.append("guest did not report content ZERO")
    if case == "paused":
        if f.get("asked") != "no":
            bad.append(f"saver asked the paused domain (asked={f.get('asked')})")
        if skipped:
            bad.append(f"{skipped} pfns skipped")
    if case in ("unpatched", "nodriver") and skipped:
        bad.append(f"{skipped} pfns skipped")
    return bad


def _num(v):
    try:
        return float(v) if "." in v else int(v)
    except (TypeError, ValueError):
        return v


def records(parsed, plan, suite="xen"):
    """One result record per case of PLAN (the cases in the order they
    were asked for), from parse()'s PARSED; a case with no PVFREE-CASE
    line is FAILED (no result)."""
    by, seen, out = {}, {}, []
    for case, f in parsed:
        by.setdefault(case, []).append(f)
    for i, case in enumerate(plan):
        k = seen[case] = seen.get(case, 0) + 1
        system, scen = CASE_SYSTEM.get(case, ("standin", case))
        common = dict(hv="xen", system=system, scenario=scen, link="pipe",
                      mem_mib=domu_mib(), round=k, index=i + 1)
        fs = by.get(case, [])
        if len(fs) < k:
            out.append(results.record(suite, "migration", case,
                                      ["no result"], **common))
            continue
        f = {key: _num(v) for key, v in fs[k - 1].items()}
        fields = dict(f, **common)
        fields.update(
            bytes=f.get("bytes"),
            total_ms=round(f["total_s"] * 1000) if isinstance(
                f.get("total_s"), (int, float)) else None,
            snapshot_us=f.get("guest_snapshot_us") or f.get("snapshot_log_us"),
            mismatches=_int(f.get("hold_mismatches")) +
            _int(f.get("fragment_mismatches")),
            pages_verified=_int(f.get("hold_pages")) +
            _int(f.get("fragment_pages")))
        out.append(results.record(suite, "migration", case,
                                  case_failures(case, fs[k - 1]), **fields))
    return out


def ratio(recs):
    """post-workload / idle bytes of the last of each in RECS, or None."""
    last = {r["name"]: r for r in recs if r.get("bytes")}
    if "idle" in last and "post-workload" in last:
        return last["post-workload"]["bytes"] / last["idle"]["bytes"]
    return None


def boot(plan, dtype="pv", hv="shadow", out=None, timeout=None,
         progress=None):
    """Boot Xen under QEMU with cases PLAN; call PROGRESS(case, fields) for
    every case as its PVFREE-CASE line appears.  Returns (serial log path,
    parse() of it)."""
    out = out or os.environ.get("PVFREE_XEN_OUT") or \
        os.path.join(scratch(), "xen")
    timeout = timeout or int(os.environ.get("PVFREE_XEN_TIMEOUT", "2400"))
    os.makedirs(out, exist_ok=True)
    qemu = q.qemu_binary()
    xen = hypervisor(hv)
    vmlinuz, initramfs = dom0_image()
    serial = os.path.join(out, f"serial-{dtype}-{hv}.log")
    if os.path.exists(serial):
        os.unlink(serial)
    cases = ":".join(plan)
    err(f"run-migrate: {dtype} domU, {hv} hypervisor, cases {cases}; "
        f"log {serial}")
    argv = [qemu, "-accel", "tcg", *q.FIRMWARE, "-machine", "pc",
            "-cpu", os.environ.get("PVFREE_XEN_CPU", "qemu64"),
            "-m", "3072", "-smp", "1", "-nodefaults", "-no-user-config",
            "-no-reboot", "-display", "none", "-vga", "none", "-nic", "none",
            "-monitor", "none", "-serial", f"file:{serial}",
            "-kernel", xen,
            "-append", "console=com1 com1=115200 dom0_mem=1024M,max:1024M "
            "dom0_max_vcpus=1 loglvl=all guest_loglvl=all "
            + os.environ.get("PVFREE_XEN_ARGS", ""),
            "-initrd", f"{vmlinuz} console=hvc0 earlyprintk=xen "
            f"pvfree_type={dtype} pvfree_cases={cases},{initramfs}"]
    if os.environ.get("PVFREE_XEN_VM_LOCK") == "1":
        argv = ["flock", "/tmp/pvfree-heavy.lock"] + argv
    t0 = time.time()
    p = q.spawn(argv, os.path.join(out, f"qemu-{dtype}-{hv}.log"))
    shown = 0
    while True:
        done = p.poll() is not None
        if not done and time.time() - t0 > timeout:
            err(f"run-migrate: VM still running after {timeout} s: killed")
            q.reap(p, 0)
            done = True
        try:
            with open(serial, errors="replace") as f:
                parsed = parse(f)
        except OSError:
            parsed = []
        for case, fields in parsed[shown:]:
            if progress:
                progress(case, fields)
        shown = len(parsed)
        if done:
            break
        time.sleep(3)
    q.reap(p)
    if p.returncode:
        err(f"run-migrate: QEMU exited with {p.returncode}")
    err(f"run-migrate: VM ran {time.time() - t0:.0f} s")
    return serial, parsed


def main():
    ap = argparse.ArgumentParser(
        prog="tests/xen/run-migrate", description=__doc__.split("\n")[0])
    ap.add_argument("--type", default="pv", choices=("pv", "pvh"))
    ap.add_argument("--hv", default="shadow", choices=("shadow", "stock"))
    ap.add_argument("--cases", default=":".join(DEFAULT_CASES))
    ap.add_argument("--json", help="write the results here (JSON lines)")
    a = ap.parse_args()
    plan = a.cases.split(":")
    unknown = [c for c in plan
               if c not in DEFAULT_CASES + STANDIN_CASES + ISSUE10_CASES]
    if unknown:
        ap.error(f"unknown case(s): {', '.join(unknown)}")
    serial, parsed = boot(plan, a.type, a.hv)
    with open(serial, errors="replace") as f:
        for line in f:
            if SHOWN.search(line):
                err(line.replace("\r", "").rstrip("\n"))
    writer = results.Writer(a.json)
    fail = not parsed
    for rec in records(parsed, plan):
        writer.write(rec)
        if rec.get("line"):
            print(rec["line"], flush=True)
        for why in filter(None, rec["failure"].split("; ")):
            err(f"run-migrate: {rec['name']}: {why}")
            fail = True
    r = ratio(writer.records)
    if r is not None:
        print(f"PVFREE-RATIO post-workload/idle bytes = {r:.3f} "
              f"(limit {MAX_RATIO:g})")
        writer.write(results.record(
            "xen", "acceptance", "post-workload/idle bytes",
            [] if r <= MAX_RATIO else [f"sent {r:.3f} x what idle sent"],
            ratio=r, limit=MAX_RATIO))
        if r > MAX_RATIO:
            err(f"run-migrate: post-workload: sent {r:.3f} x what idle sent")
            fail = True
    if not parsed:
        err(f"run-migrate: no results (see {serial})")
    print("run-migrate: PASS" if not fail else f"run-migrate: FAIL (see {serial})")
    return 1 if fail else 0


if __name__ == "__main__":
    sys.exit(main())
