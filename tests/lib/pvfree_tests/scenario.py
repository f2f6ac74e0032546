# SPDX-License-Identifier: MIT
"""One pvfree migration scenario: boot a guest, prepare its memory, migrate
it, check it on the destination.  The scenarios of kvm.py and demo.py;
bench.py uses its destination check."""

import os
import time

from . import TestFailure, checks, image, log, results
from . import qemu as h

BOOT_TIMEOUT = 240


class Scenario:
    """What one migration test does and expects (see kvm.scenarios())."""

    def __init__(self, name, flavour="cloud-6.1", mem_mb=1024, smp=1,
                 append="", device="pvfree", device_opts="", driver=True,
                 dirty_mib=0, hold_mib=32, writer_mib=4, fragment_mib=0,
                 churn=False, files_mib=0, transport="tcp", caps=(), hops=1,
                 corrupt=False, settle_s=0, expect_skipped=None,
                 expect_status=None, expect_guest_status=None,
                 expect_content=None, timeout=600,
                 label=None):
        self.name = name
        self.label = label or name
        self.flavour = flavour
        self.mem_mb, self.smp = mem_mb, smp
        self.append = append
        self.device = device            # "pvfree" | "balloon" | "none"
        self.device_opts = device_opts
        self.driver = driver            # insmod pvfree.ko in the guest
        self.dirty_mib = dirty_mib
        self.hold_mib, self.writer_mib = hold_mib, writer_mib
        self.fragment_mib = fragment_mib
        self.churn = churn
        self.files_mib = files_mib      # page-cache churn, primed with N MiB
        self.transport = transport
        self.caps = tuple(caps)         # migration capabilities, both ends
        self.hops = hops                # migrations in a row
        # negative control: zero one hold page on the destination before
        # verifying; verify must then find exactly that one mismatch
        self.corrupt = corrupt
        self.settle_s = settle_s        # guest idles this long before migrating
        self.expect_skipped = expect_skipped    # ">0", "==0" or None
        # query-pvfree last-status: a string or a tuple of accepted ones
        self.expect_status = expect_status
        # query-pvfree last-guest-status if last-status is "guest-status"
        self.expect_guest_status = expect_guest_status
        # guest debugfs "content" (PVFREE_CONTENT_*: 1 any, 2 zero, 3 poison)
        self.expect_content = expect_content
        self.timeout = timeout

    def describe(self):
        bits = [self.flavour, f"{self.mem_mb} MiB", f"smp {self.smp}",
                self.device + ("" if self.driver or self.device != "pvfree"
                               else " (no driver)")]
        if self.append:
            bits.append(self.append)
        if self.device_opts:
            bits.append(self.device_opts)
        if self.hops > 1:
            bits.append(f"{self.hops} hops")
        if self.transport != "tcp":
            bits.append(self.transport + ":")
        bits.extend(self.caps)
        return ", ".join(bits)


def registered(vm, timeout=30):
    """Wait until the guest driver registered with VM's device."""
    deadline = time.time() + timeout
    while True:
        pv = vm.qmp.cmd("query-pvfree", quiet=True)
        if pv.get("registered"):
            return pv
        if time.time() > deadline:
            raise TestFailure(f"driver did not register: {pv}")
        time.sleep(0.5)


def check_destination(sc, r, dst, daemons, fail, progress, wd, suffix=""):
    """Guest alive, workloads verify, guest stats, dmesg clean."""
    dc = dst.console
    _, out = dc.run("echo pong-$((6*7))", timeout=60)
    if "pong-42" not in out:
        fail(f"echo test{suffix}: {out!r}")
    r.setdefault("mismatches", 0)
    for d in daemons:
        control = sc.corrupt and d == "hold" and not suffix
        if control:
            dc.run("kill -USR2 $(cat /run/hold.pid) && sleep 1")
        rc, out = dc.run(f"pvfree-workload verify /run/{d}.pid "
                         f"/run/{d}.res 300", timeout=330, check=False)
        line = next((l for l in out.splitlines()
                     if l.startswith(("VERIFY", "CHURN", "FILES"))),
                    out.strip())
        f = checks.parse_fields(line)
        r[f"verify_{d}{suffix}"] = line
        mis = int(f.get("mismatches", "-1"))
        if control:
            if mis != 1 or rc != 1:
                fail(f"negative control: one zeroed page not reported "
                     f"(rc={rc}): {line}")
            r["control_detected"] = mis == 1
        elif rc != 0 or mis != 0:
            fail(f"{d} verify{suffix} rc={rc}: {line}")
            r["mismatches"] += max(mis, 1)
    if sc.device == "pvfree" and sc.driver:
        rc, out = dc.run("cat /sys/kernel/debug/pvfree/stats", check=False)
        r["guest_stats" + suffix] = checks.parse_kv(out)
        progress(f"  [{sc.name}] guest stats{suffix}: " + ", ".join(
            f"{k}={v}" for k, v in r["guest_stats" + suffix].items()))
    _, out = dc.run("dmesg", timeout=120)
    with open(os.path.join(wd, f"{dst.name}.dmesg"), "w") as f:
        f.write(out)
    bad = checks.dmesg_problems(out)
    r["dmesg_bad"] = r.get("dmesg_bad", []) + bad
    if bad:
        fail(f"dmesg{suffix}: {bad[:3]}")


def _query_pvfree(sc, src, r, progress, suffix=""):
    pv = src.qmp.cmd("query-pvfree")
    r["pvfree" + suffix] = pv
    r["skipped" + suffix] = pv.get("pages-skipped")
    r["last_status" + suffix] = pv.get("last-status")
    r["last_guest_status" + suffix] = pv.get("last-guest-status")
    progress(f"  [{sc.name}] query-pvfree{suffix}: " + ", ".join(
        f"{k}={v}" for k, v in pv.items()))
    try:
        src.qmp.hmp("info pvfree")      # into the QMP log
    except TestFailure:
        pass
    # whatever the scenario: no answer accepted, nothing skipped
    if pv.get("last-status") != "ok" and pv.get("pages-skipped"):
        fail_msg = (f"last-status {pv.get('last-status')} but "
                    f"{pv.get('pages-skipped')} pages skipped")
        r["failures"].append(fail_msg + suffix)


def prepare(sc, vm, r, progress=log):
    """Boot VM's guest (already started) and prepare its memory as SC says:
    driver, balloon modules, dirty, hold and the other workload daemons.
    Records boot time, MemFree and per-CPU pages in R; returns the names of
    the daemons that check_destination() verifies."""
    t0 = time.time()
    rel = vm.wait_boot(BOOT_TIMEOUT)
    r["boot_s"] = time.time() - t0
    c = vm.console
    progress(f"  [{sc.name}] booted {rel} in {r['boot_s']:.1f} s")
    if sc.device == "balloon":
        c.run("loadmod virtio_pci && loadmod virtio_balloon")
    if sc.device == "pvfree" and sc.driver:
        c.run("insmod /lib/pvfree-modules/pvfree.ko")
        registered(vm)
    if sc.dirty_mib:
        t1 = time.time()
        _, out = c.run(f"pvfree-workload dirty {sc.dirty_mib}", timeout=900)
        progress(f"  [{sc.name}] dirtied {sc.dirty_mib} MiB and freed it "
                 f"({time.time() - t1:.1f} s)")
    daemons = ["hold"]
    c.run(f"pvfree-workload hold {sc.hold_mib} -d -p /run/hold.pid "
          f"-r /run/hold.res -w {sc.writer_mib}", timeout=300)
    if sc.fragment_mib:
        t1 = time.time()
        _, out = c.run(f"pvfree-workload fragment {sc.fragment_mib} -d "
                       f"-p /run/fragment.pid -r /run/fragment.res -w 0",
                       timeout=900)
        daemons.append("fragment")
        progress(f"  [{sc.name}] fragmented {sc.fragment_mib} MiB "
                 f"({time.time() - t1:.1f} s): {out.strip()}")
    if sc.churn:
        c.run("pvfree-workload churn -d -p /run/churn.pid "
              "-r /run/churn.res -m 64")
        daemons.append("churn")
    if sc.files_mib:
        c.run(f"pvfree-workload files /run/fc {sc.files_mib} -d "
              "-p /run/files.pid -r /run/files.res -m 64", timeout=300)
        daemons.append("files")
    _, out = c.run("cat /proc/meminfo")
    mi = checks.parse_kv(out)
    r["guest_memfree_mib"] = int(mi.get("MemFree", "0 kB").split()[0]) // 1024
    if sc.settle_s:
        c.run(f"sleep {sc.settle_s}", timeout=sc.settle_s + 60)
    # free pages parked on per-CPU lists (not in MemFree): record how
    # many there are, to compare with the driver's pcp_frames
    _, out = c.run("grep -E '^ +count: ' /proc/zoneinfo", check=False)
    r["guest_pcp_pages"] = sum(int(l.split()[1]) for l in out.splitlines()
                               if l.strip().startswith("count:"))
    progress(f"  [{sc.name}] guest MemFree {r['guest_memfree_mib']} MiB "
             f"({r['guest_pcp_pages']} pages on per-CPU lists); "
             f"migrating")
    return daemons


def check_expectations(sc, r, fail):
    """SC's expectations (pages skipped, last-status and the guest's
    status code, guest content) against what R recorded of the first
    migration."""
    if sc.expect_skipped == ">0" and not (r.get("skipped") or 0) > 0:
        fail(f"pages-skipped {r.get('skipped')} (expected > 0, "
             f"last-status {r.get('last_status')})")
    if sc.expect_skipped == ">0" and (r.get("skipped") or 0) > 0:
        # most of what the guest had free must have been skipped
        free_pages = r["guest_memfree_mib"] * 256
        if r["skipped"] < free_pages // 2:
            fail(f"pages-skipped {r['skipped']} < half the guest's free "
                 f"pages before migration ({free_pages})")
    if sc.expect_skipped == "==0" and r.get("skipped") != 0:
        fail(f"pages-skipped {r.get('skipped')} (expected 0)")
    want = sc.expect_status
    if isinstance(want, str):
        want = (want,)
    if want and r.get("last_status") not in want:
        fail(f"last-status {r.get('last_status')!r} "
             f"(expected {' or '.join(want)})")
    if (sc.expect_guest_status is not None and
            r.get("last_status") == "guest-status" and
            r.get("last_guest_status") != sc.expect_guest_status):
        fail(f"last-guest-status {r.get('last_guest_status')!r} "
             f"(expected {sc.expect_guest_status})")
    if sc.expect_content is not None:
        got = (r.get("guest_stats") or {}).get("content")
        if got != str(sc.expect_content):
            fail(f"guest content {got} (expected {sc.expect_content})")


def run(sc, qemu, progress=log):
    """Returns a result dict; r['failures'] lists what went wrong."""
    r = {"name": sc.name, "label": sc.label, "flavour": sc.flavour,
         "mem_mb": sc.mem_mb, "device": sc.device, "failures": [],
         "start": time.time()}
    fail = r["failures"].append
    wd = h.workdir(sc.name)
    r["workdir"] = wd
    src = dst = None
    try:
        k, initrd, has_ko = image.initramfs(sc.flavour)
        if sc.driver and sc.device == "pvfree" and not has_ko:
            raise TestFailure("pvfree.ko could not be built for "
                              f"{k.release} (guest/)")
        append = "console=ttyS0 quiet panic=1 " + sc.append
        common = dict(qemu=qemu, workdir=wd, kernel=k.vmlinuz, initrd=initrd,
                      append=append.strip(), mem_mb=sc.mem_mb, smp=sc.smp,
                      pvfree=sc.device == "pvfree", pvfree_opts=sc.device_opts,
                      balloon=sc.device == "balloon")
        src = h.Vm("src", **common)
        dst = h.Vm("dst", incoming=True, **common)
        src.start()
        dst.start()
        daemons = prepare(sc, src, r, progress)

        m = h.migrate(src, dst, sc.transport, timeout=sc.timeout,
                      progress=progress, tag=f"[{sc.name}] ", caps=sc.caps)
        r.update(m)
        if sc.device == "pvfree":
            _query_pvfree(sc, src, r, progress)

        check_destination(sc, r, dst, daemons, fail, progress, wd)

        check_expectations(sc, r, fail)
        # further hops: the destination becomes the source (registration
        # and request ids must survive migration)
        for hop in range(2, sc.hops + 1):
            sfx = f"_hop{hop}"
            src.stop()
            src, dst = dst, h.Vm(f"dst{hop}", incoming=True, **common)
            dst.start()
            progress(f"  [{sc.name}] hop {hop}: {src.name} -> {dst.name}")
            m = h.migrate(src, dst, "tcp", timeout=sc.timeout,
                          progress=progress, tag=f"[{sc.name}] ")
            r["transferred" + sfx] = m["transferred"]
            r["total_time_ms" + sfx] = m["total_time_ms"]
            if sc.device == "pvfree":
                _query_pvfree(sc, src, r, progress, sfx)
                if sc.expect_skipped == ">0" and not r["skipped" + sfx]:
                    fail(f"hop {hop}: pages-skipped {r['skipped' + sfx]} "
                         f"({r['last_status' + sfx]})")
            check_destination(sc, r, dst, daemons, fail, progress, wd, sfx)
            gs = r.get("guest_stats" + sfx) or {}
            if sc.device == "pvfree" and sc.driver and \
                    gs.get("last_request_id") != str(hop):
                fail(f"hop {hop}: guest last_request_id "
                     f"{gs.get('last_request_id')} (expected {hop}: request "
                     f"ids must keep increasing across migrations)")
    except TestFailure as e:
        fail(str(e))
    except Exception as e:  # a harness bug still has to clean up and report
        fail(f"{type(e).__name__}: {e}")
    finally:
        for vm in (src, dst):
            if vm:
                vm.stop()
    if r["failures"]:
        # say why a guest died, from what its console showed
        for vm in (src, dst):
            if vm and vm.console and not r.get("dmesg_bad"):
                bad = checks.dmesg_problems(vm.console.data)
                if bad:
                    fail(f"{vm.name} console: {' | '.join(bad[:4])}")
    r["ok"] = not r["failures"]
    r["elapsed_s"] = time.time() - r["start"]
    return r


def record(r, suite):
    """The result record (results.py) of run()'s result R."""
    pv = r.get("pvfree") or {}
    fields = {k: v for k, v in r.items() if k not in ("name", "failures")}
    fields.update(hv="kvm", system=r.get("device"), scenario=r["name"],
                  link="loopback", mem_mib=r.get("mem_mb"), round=1,
                  bytes=r.get("transferred"), total_ms=r.get("total_time_ms"),
                  snapshot_us=pv.get("guest-snapshot-us"),
                  lock_hold_us=pv.get("guest-max-lock-hold-us"))
    return results.record(suite, "migration", r["name"], r["failures"],
                          **fields)
