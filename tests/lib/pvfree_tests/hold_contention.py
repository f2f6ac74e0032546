# SPDX-License-Identifier: MIT
"""Does host CPU contention stretch the guest's lock holds?

Boots one guest (self-test module, no pvfree device, no migration), takes
N snapshots with the host otherwise idle and N while HOGS busy loops run on
the host, first with the just-booted free memory (mostly order 10), then
with almost all free memory order-0 (the self-test `fragment` knob), and
prints snapshot_us and max_lock_hold_us of each.  The lock hold is measured
in the guest in wall-clock time, so a vCPU that the host preempts inside
zone->lock or pcp->lock counts.  docs/performance.md, "Targets".

usage: flock /tmp/pvfree-run.lock tests/bench/hold-contention [--mem MIB]
           [--requests N] [--hogs N]
"""

import argparse
import os
import subprocess
import sys
import time

from . import checks, image, scenario
from . import qemu as h

ST = "/sys/kernel/debug/pvfree-selftest"


def main():
    ap = argparse.ArgumentParser(prog="tests/bench/hold-contention",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--mem", type=int, default=4096)
    ap.add_argument("--requests", type=int, default=5)
    ap.add_argument("--hogs", type=int, default=os.cpu_count() or 2)
    a = ap.parse_args()
    os.environ.setdefault("PVFREE_SCRATCH", "/tmp/pvfree-bench")
    qemu = h.qemu_binary()
    k, initrd, ok = image.initramfs("cloud-6.1", selftest=True)
    if not ok:
        print("no SELFTEST=1 build of pvfree.ko", file=sys.stderr)
        return 1
    vm = h.Vm("guest", qemu=qemu, workdir=h.workdir("hold-contention"),
              kernel=k.vmlinuz, initrd=initrd,
              append="console=ttyS0 quiet panic=1", mem_mb=a.mem, smp=1)
    hogs = []
    try:
        vm.start()
        vm.wait_boot(scenario.BOOT_TIMEOUT)
        c = vm.console
        c.run("insmod /lib/pvfree-modules/pvfree-selftest.ko")
        _, out = c.run("cat /proc/meminfo")
        free = int(checks.parse_kv(out)["MemFree"].split()[0]) // 4
        print(f"{a.mem} MiB guest, {a.requests} snapshots per line, "
              f"(snapshot_us, max_lock_hold_us):", flush=True)
        for cond in ("contiguous", "order-0"):
            if cond == "order-0":
                c.run(f"echo {free * 9 // 10} > {ST}/fragment", timeout=600)
            for load in (0, a.hogs):
                hogs = [subprocess.Popen([sys.executable, "-c",
                                          "while True: pass"])
                        for _ in range(load)]
                time.sleep(1 if load else 0)
                res = []
                for _ in range(a.requests):
                    c.run(f"echo 1 > {ST}/request", timeout=120)
                    _, st = c.run("cat /sys/kernel/debug/pvfree/stats")
                    s = checks.parse_kv(st)
                    res.append((int(s["snapshot_us"]),
                                int(s["max_lock_hold_us"])))
                for p in hogs:
                    p.kill()
                    p.wait()
                hogs = []
                print(f"{cond:<10} host {'idle' if not load else f'+ {load} busy loops':<15} "
                      f"{res}", flush=True)
    finally:
        for p in hogs:
            p.kill()
        vm.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
