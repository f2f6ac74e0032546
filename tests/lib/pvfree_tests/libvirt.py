# SPDX-License-Identifier: MIT
"""pvfree under libvirt (`make libvirt-test`, tests/libvirt/run-tests).

Two real libvirtd daemons on this machine, A and B, each in its own mount
namespace (private /run/libvirt, /var/lib/libvirt, /var/cache/libvirt,
/var/log/libvirt and /etc/libvirt), with its own host UUID and socket
directory, twice: with Debian's libvirt (route "stock": the patched QEMU
as <emulator>, -device pvfree-pci by <qemu:commandline>, docs/libvirt.md)
and with hv-kvm/libvirt's build (route "patched": <pvfree model='pci'/>).
Each scenario defines a transient TCG domain on A, boots the harness's
guest, prepares its memory like the KVM scenarios, moves it with
`virsh migrate --live` and verifies it on the destination (scenario.py).
`virsh domjobinfo --completed` is checked against QEMU's own final
query-migrate, read on a QMP monitor of the test's own when the MIGRATION
event says completed.  --demo (make virsh-demo): one post-workload guest
moved with no device, balloon free page hints and pvfree.

Every daemon and QEMU the suite starts is stopped by it, also on failure;
the last check says so.

usage: tests/libvirt/run-tests [--only NAME[,NAME]] [--list] [--mem MIB]
                               [--route stock|patched|both] [--demo]
                               [--json FILE]
Logs and daemon state: $PVFREE_SCRATCH/libvirt, default /tmp/libvirt-tests.
The patched build: $PVFREE_LIBVIRT_RUN, else hv-kvm/libvirt/build-libvirt.sh.
"""

import argparse
import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from xml.sax.saxutils import escape

from . import TOP, TestFailure, log, results, scenario, scratch, select
from . import image
from . import qemu as h
from .results import kib
from .scenario import Scenario

# An emulator without pvfree-pci, for the "destination lacks pvfree"
# scenario: Debian's QEMU 10.0 (qemu-system-x86 comes with
# libvirt-daemon-driver-qemu).
STOCK_QEMU = os.environ.get("PVFREE_STOCK_QEMU", "/usr/bin/qemu-system-x86_64")
# the directories each daemon gets its own copy of (mount namespace)
PRIVATE = ["/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt",
           "/var/log/libvirt", "/etc/libvirt"]
BANDWIDTH_MIB = int(os.environ.get("PVFREE_MIG_BANDWIDTH", 8 << 30)) >> 20
ACCEPT_RATIO = 1.25

QEMU_CONF = """\
# pvfree tests/libvirt: root, no security driver, no cgroups, no
# namespaces, QEMU's output to a file (no virtlogd)
user = "root"
group = "root"
security_driver = "none"
dynamic_ownership = 0
remember_owner = 0
stdio_handler = "file"
cgroup_controllers = [ ]
namespaces = [ ]
"""


# ---- how libvirt is run -----------------------------------------------------

class Route:
    """STOCK: Debian's libvirt, the device by <qemu:commandline>
    (docs/libvirt.md).  PATCHED: hv-kvm/libvirt's build (run uninstalled
    through its build/run), the device as <pvfree model='pci'/>, the
    emulator a wrapper that adds the firmware directories and the suite's
    own QMP monitor (so the domain has no <qemu:commandline> at all)."""

    def __init__(self, name, run=None, top=None, qemu=None):
        self.name, self.run = name, run
        self.patched = run is not None
        self.qemu = self.stock_qemu = None
        if self.patched:
            self.mon_dir = os.path.join(top, "monitors")
            os.makedirs(self.mon_dir, exist_ok=True)
            self.qemu = self._wrapper(top, "qemu-pvfree", qemu)
            self.stock_qemu = self._wrapper(top, "qemu-stock", STOCK_QEMU)
        else:
            self.qemu, self.stock_qemu = qemu, STOCK_QEMU

    def _wrapper(self, top, name, real):
        path = os.path.join(top, name)
        with open(path, "w") as f:
            f.write(f"""#!/bin/sh
# tests/libvirt: {real} with the firmware directories and a QMP monitor
# of the test's own, named by the QEMU pid (exec keeps it)
exec {real} -L /usr/share/qemu -L /usr/share/seabios "$@" \\
	-qmp unix:{self.mon_dir}/qemu-$$.qmp,server=on,wait=off
""")
        os.chmod(path, 0o755)
        return path

    def libvirtd(self):
        return f"{self.run} libvirtd" if self.patched else "libvirtd"

    def virsh(self):
        return [self.run, "virsh"] if self.patched else ["virsh"]


def libvirt_run():
    """$PVFREE_LIBVIRT_RUN, else what hv-kvm/libvirt/build-libvirt.sh
    prints (the build/run of the patched build, built on a cache miss)."""
    r = os.environ.get("PVFREE_LIBVIRT_RUN")
    if r:
        return r
    out = subprocess.run([os.path.join(TOP, "hv-kvm", "libvirt",
                                       "build-libvirt.sh")],
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    lines = out.strip().splitlines()
    if not lines or not os.access(lines[-1], os.X_OK):
        raise TestFailure(f"hv-kvm/libvirt/build-libvirt.sh printed {out!r}")
    return lines[-1]


# ---- the daemons ---------------------------------------------------------

_daemons = []


def _stop_all():
    for d in list(_daemons):
        d.stop()


atexit.register(_stop_all)      # runs before qemu.py's (registered earlier)


class Daemon:
    """One libvirtd in its own mount namespace, state under BASE/NAME."""

    def __init__(self, name, base, route):
        self.name, self.route = name, route
        self.base = os.path.join(base, name)
        self.sock_dir = os.path.join(self.base, "sock")
        self.uri = f"qemu+unix:///system?socket={self.sock_dir}/libvirt-sock"
        self.host_uuid = str(uuid.uuid4())
        self.proc = None

    def _dir(self, path):
        return os.path.join(self.base, path.strip("/").replace("/", "-"))

    def setup(self):
        shutil.rmtree(self.base, ignore_errors=True)
        os.makedirs(self.sock_dir)
        for p in PRIVATE:
            os.makedirs(p, exist_ok=True)       # the mount points
            os.makedirs(self._dir(p))
        shutil.copytree("/etc/libvirt", self._dir("/etc/libvirt"),
                        dirs_exist_ok=True, symlinks=True)
        with open(os.path.join(self._dir("/etc/libvirt"), "libvirtd.conf"),
                  "w") as f:
            f.write(f'unix_sock_dir = "{self.sock_dir}"\n'
                    f'host_uuid = "{self.host_uuid}"\n'
                    'auth_unix_rw = "none"\n'
                    'auth_unix_ro = "none"\n'
                    'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n')
        with open(os.path.join(self._dir("/etc/libvirt"), "qemu.conf"),
                  "w") as f:
            f.write(QEMU_CONF)

    def start(self):
        self.setup()
        mounts = "".join(f"mount --bind {self._dir(p)} {p} && "
                         for p in PRIVATE)
        script = (f"{mounts}exec {self.route.libvirtd()} "
                  f"-f /etc/libvirt/libvirtd.conf "
                  f"-p {self.base}/libvirtd.pid")
        self.proc = h.spawn(["unshare", "-m", "--propagation", "private",
                             "/bin/sh", "-c", script],
                            os.path.join(self.base, "libvirtd.out"))
        _daemons.append(self)
        deadline = time.time() + 60
        while True:
            if self.proc.poll() is not None:
                raise TestFailure(f"libvirtd {self.name} exited "
                                  f"({self.proc.returncode}), see "
                                  f"{self.base}/libvirtd.out")
            r = self.virsh("version", check=False, timeout=20)
            if r.returncode == 0:
                return self
            if time.time() > deadline:
                raise TestFailure(f"libvirtd {self.name}: no answer on "
                                  f"{self.uri}: {r.stderr.strip()}")
            time.sleep(0.3)

    def virsh(self, *args, check=True, timeout=120):
        """`virsh -c URI ARGS`; a CompletedProcess (text)."""
        cmd = [*self.route.virsh(), "-q", "-c", self.uri, *args]
        try:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TestFailure(f"virsh {' '.join(args)}: no answer after "
                              f"{timeout} s")
        with open(os.path.join(self.base, "virsh.log"), "a") as f:
            f.write(f"$ {' '.join(cmd)}\nrc={r.returncode}\n{r.stdout}"
                    f"{r.stderr}")
        if check and r.returncode != 0:
            raise TestFailure(f"virsh -c {self.name} {' '.join(args)}: "
                              f"{r.stderr.strip()}")
        return r

    def domains(self):
        r = self.virsh("list", "--all", "--name", check=False, timeout=30)
        return [l.strip() for l in r.stdout.splitlines() if l.strip()]

    def qemu_pid(self, dom):
        try:
            with open(os.path.join(self._dir("/run/libvirt"), "qemu",
                                   f"{dom}.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def domain_log(self, dom):
        try:
            with open(os.path.join(self._dir("/var/log/libvirt"), "qemu",
                                   f"{dom}.log")) as f:
                return f.read()
        except OSError:
            return ""

    def destroy(self, dom):
        """Stop domain DOM here if it exists, and its QEMU in any case."""
        pid = self.qemu_pid(dom)
        if self.proc and self.proc.poll() is None:
            self.virsh("destroy", dom, check=False, timeout=30)
        if pid and _is_ours(pid, self.base, dom):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def stop(self):
        if self in _daemons:
            _daemons.remove(self)
        if not self.proc:
            return
        try:
            for dom in self.domains() if self.proc.poll() is None else []:
                self.destroy(dom)
        except TestFailure:
            pass
        qdir = os.path.join(self._dir("/run/libvirt"), "qemu")
        for f in (os.listdir(qdir) if os.path.isdir(qdir) else []):
            if f.startswith("pvfree-") and f.endswith(".pid"):
                self.destroy(f[:-4])
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except OSError:
                pass
        h.reap(self.proc, 15)
        self.proc = None


def _is_ours(pid, base, dom):
    """PID is a QEMU running domain DOM (not a reused pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return b"qemu" in argv[0] and f"guest={dom}".encode() in b" ".join(argv)


def leftovers(top):
    """Processes whose command line names the suite's scratch dir TOP."""
    r = subprocess.run(["pgrep", "-af", f"{top}/"], stdout=subprocess.PIPE,
                       text=True)
    return [l for l in r.stdout.splitlines()
            if "pgrep" not in l and l.split()[0] != str(os.getpid())]


# ---- a domain, as scenario.py sees a Vm ------------------------------------

class _DomProc:
    """What Console and _connect_unix want of a process: poll()."""

    def __init__(self, pid):
        self.pid = pid
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            try:
                os.kill(self.pid, 0)
            except OSError:
                self.returncode = -1
        return self.returncode


class VirshQmp:
    """QMP through `virsh qemu-monitor-command` (the way a user asks)."""

    def __init__(self, daemon, dom, logf):
        self.daemon, self.dom, self.logf = daemon, dom, logf

    def cmd(self, name, args=None, timeout=60, quiet=False):
        req = {"execute": name}
        if args is not None:
            req["arguments"] = args
        r = self.daemon.virsh("qemu-monitor-command", self.dom,
                              json.dumps(req), check=False, timeout=timeout)
        if not quiet:
            self.logf.write(f"virsh QMP> {json.dumps(req)}\n< {r.stdout}"
                            f"{r.stderr}")
            self.logf.flush()
        if r.returncode != 0:
            raise h.QmpError(f"{name}: {r.stderr.strip()}")
        resp = json.loads(r.stdout)
        if "error" in resp:
            raise h.QmpError(f"{name}: {resp['error'].get('desc')}")
        return resp.get("return")

    def hmp(self, line):
        r = self.daemon.virsh("qemu-monitor-command", "--hmp", self.dom, line)
        self.logf.write(f"virsh HMP> {line}\n{r.stdout}")
        return r.stdout


class Domain:
    """Domain DOM on DAEMON as side NAME (A, B, A2, ...): its serial
    console (unix socket), QMP through virsh, and a second QMP monitor of
    its own for the final query-migrate."""

    def __init__(self, name, daemon, dom, wd):
        self.name, self.daemon, self.dom, self.dir = name, daemon, dom, wd
        self.ser_path = os.path.join(wd, f"{name}.serial")
        self.mon_path = os.path.join(wd, f"{name}.qmp")
        self.xml_path = os.path.join(wd, f"{name}.xml")
        self.console = None
        self.mon = None
        self.qmplog = open(os.path.join(wd, f"{name}.qmp.log"), "a")
        self.qmp = VirshQmp(daemon, dom, self.qmplog)

    def attach(self):
        """Connect console and monitor to the running QEMU."""
        pid = self.daemon.qemu_pid(self.dom)
        if not pid:
            raise TestFailure(f"{self.dom}: no QEMU pid on {self.daemon.name}")
        proc = _DomProc(pid)
        if self.daemon.route.patched:       # the wrapper's monitor
            self.mon_path = os.path.join(self.daemon.route.mon_dir,
                                         f"qemu-{pid}.qmp")
        self.console = h.Console(self.ser_path, proc, os.path.join(
            self.dir, f"{self.name}.console.log"))
        self.console.connect()
        self.mon = h.Qmp(self.mon_path, proc, self.qmplog)
        self.mon.connect()
        return self

    def wait_boot(self, timeout=180):
        m = self.console.wait(r"^@@READY (\S+)\n", timeout,
                              "guest boot (@@READY)")
        return m.group(1)

    def state(self):
        r = self.daemon.virsh("domstate", "--reason", self.dom, check=False)
        return r.stdout.strip() if r.returncode == 0 else None

    def close(self):
        for c in (self.console, self.mon):
            if c:
                c.close()


def domain_xml(route, dom, emulator, k, initrd, append, mem_mb, side,
               pvfree=True, balloon=False):
    """The domain of docs/libvirt.md for side SIDE (a Domain, for its
    serial and monitor paths): STOCK, with <qemu:commandline> for the
    firmware, the device and the test's monitor; PATCHED, with
    <pvfree model='pci'/> and no <qemu:commandline>."""
    if route.patched:
        dev = "    <pvfree model='pci'/>\n" if pvfree else ""
        qemu_ns = qemu_cl = ""
    else:
        dev = ""
        args = ["-L", "/usr/share/qemu", "-L", "/usr/share/seabios"]
        if pvfree:
            args += ["-device", "pvfree-pci"]
        args += ["-qmp", f"unix:{side.mon_path},server=on,wait=off"]
        qemu_ns = " xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'"
        qemu_cl = ("  <qemu:commandline>\n" + "".join(
            f"    <qemu:arg value='{escape(a)}'/>\n" for a in args)
            + "  </qemu:commandline>\n")
    balloon_dev = "<memballoon model='none'/>"
    iothreads = ""
    if balloon:
        # virtio-balloon with free page hints (the baseline of
        # make virsh-demo): libvirt has no setting for them, so
        # <qemu:override> sets the properties; they need an iothread
        balloon_dev = "<memballoon model='virtio'/>"
        iothreads = "  <iothreads>1</iothreads>\n"
        qemu_ns = " xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'"
        qemu_cl += """  <qemu:override>
    <qemu:device alias='balloon0'>
      <qemu:frontend>
        <qemu:property name='free-page-hint' type='bool' value='true'/>
        <qemu:property name='iothread' type='string' value='iothread1'/>
      </qemu:frontend>
    </qemu:device>
  </qemu:override>
"""
    return f"""\
<domain type='qemu'{qemu_ns}>
  <name>{dom}</name>
  <memory unit='MiB'>{mem_mb}</memory>
  <vcpu>1</vcpu>
{iothreads}  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(k)}</kernel>
    <initrd>{escape(initrd)}</initrd>
    <cmdline>{escape(append)}</cmdline>
  </os>
  <cpu mode='custom' match='exact'>
    <model fallback='forbid'>qemu64</model>
  </cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{escape(emulator)}</emulator>
    <controller type='usb' model='none'/>
    <serial type='unix'>
      <source mode='bind' path='{escape(side.ser_path)}'/>
      <target port='0'/>
    </serial>
    {balloon_dev}
{dev}  </devices>
{qemu_cl}</domain>
"""


# ---- scenarios -------------------------------------------------------------

class LvScenario(Scenario):
    """A scenario of this suite: scenario.Scenario plus how virsh moves
    it."""

    def __init__(self, name, p2p=(True,), dest="pvfree", bandwidth_mib=None,
                 poll_jobinfo=False, **kw):
        super().__init__(name, **kw)
        self.bandwidth_mib = bandwidth_mib or BANDWIDTH_MIB
        # read `virsh domjobinfo` on the source while the migration runs
        self.poll_jobinfo = poll_jobinfo
        self.p2p = p2p          # per hop: --p2p or not
        self.hops = len(p2p)
        # pvfree | stock-qemu (emulator lacks it) | no-device (XML lacks it)
        self.dest = dest

    def describe(self):
        hops = " -> ".join(["A", "B", "A", "B"][:self.hops + 1])
        how = ", ".join("p2p" if p else "direct" for p in self.p2p)
        d = super().describe().replace(f", {self.hops} hops", "")
        extra = {"pvfree": "",
                 "stock-qemu": ", destination emulator without pvfree",
                 "no-device": ", destination XML without the device",
                 "start": ", started on an emulator without pvfree"}[
                     self.dest]
        return f"{d}, {hops} ({how}){extra}"


def scenarios(mem):
    dirty = mem * 3 // 4
    return [
        LvScenario("idle", mem_mb=mem, expect_skipped=">0",
                   expect_status="ok"),
        LvScenario("post-workload", mem_mb=mem, dirty_mib=dirty, hold_mib=16,
                   expect_skipped=">0", expect_status="ok", p2p=(False,)),
        LvScenario("no-driver", mem_mb=mem, driver=False, dirty_mib=mem // 2,
                   expect_skipped="==0", expect_status="not-registered",
                   p2p=(False,)),
        LvScenario("no-pvfree", mem_mb=mem, device="none", driver=False,
                   dirty_mib=mem // 2),
        LvScenario("dest-no-pvfree", mem_mb=mem, dirty_mib=mem // 4,
                   dest="stock-qemu"),
        LvScenario("dest-no-device", mem_mb=mem, dirty_mib=mem // 4,
                   dest="no-device"),
        LvScenario("start-no-pvfree", mem_mb=mem, dest="start"),
        # slow enough (64 MiB/s) to read domjobinfo of the running job
        LvScenario("jobinfo-running", mem_mb=mem, expect_skipped=">0",
                   expect_status="ok", bandwidth_mib=64, poll_jobinfo=True),
        LvScenario("a-b-a", mem_mb=mem, dirty_mib=mem // 2,
                   expect_skipped=">0", expect_status="ok",
                   p2p=(True, False)),
    ]


def demo_scenarios(mem):
    """make virsh-demo: one post-workload guest moved three ways."""
    kw = dict(mem_mb=mem, dirty_mib=mem * 3 // 4, hold_mib=16, p2p=(True,))
    return [LvScenario("no-device", device="none", driver=False, **kw),
            LvScenario("balloon-hints", device="balloon", driver=False, **kw),
            LvScenario("pvfree", expect_skipped=">0", expect_status="ok",
                       **kw)]


def demo_table(done, out=sys.stdout):
    hdr = (f"{'how':<40} {'result':<6} {'sent MiB':>9} {'QEMU ms':>8} "
           f"{'down ms':>8} {'virsh migrate s':>15} {'free pages skipped':>18}")
    print(hdr, file=out)
    print("-" * len(hdr), file=out)
    what = {"no-device": "no device", "balloon-hints":
            "virtio-balloon free-page-hint", "pvfree": "pvfree"}
    for r in done:
        n = r["name"].split("/")[-1]
        t = r.get("transferred")
        print(f"{what.get(n, n) + ' (' + r['route'] + ')':<40} "
              f"{'PASS' if r['ok'] else 'FAIL':<6} "
              f"{'-' if t is None else f'{t / 2**20:.1f}':>9} "
              f"{str(r.get('total_time_ms', '-')):>8} "
              f"{str(r.get('downtime_ms', '-')):>8} "
              f"{r.get('virsh_migrate_s', 0):>15.1f} "
              f"{str(r.get('free_pages_skipped', '-')):>18}", file=out)


# domjobinfo --rawstats field -> query-migrate (ram.*) field
JOBINFO_VS_QMP = [("memory_processed", "transferred"),
                  ("memory_total", "total"),
                  ("memory_constant", "duplicate"),
                  ("memory_normal", "normal"),
                  ("memory_iteration", "dirty-sync-count")]
# (libvirt measures downtime itself, from pause on the source to resume on
# the destination: it is recorded, not compared)


def jobinfo(daemon, dom):
    """virsh domjobinfo --completed --rawstats DOM on DAEMON, as a dict."""
    r = daemon.virsh("domjobinfo", "--completed", "--rawstats", dom)
    return _parse_jobinfo(r.stdout)


def _parse_jobinfo(text):
    d = {}
    for line in text.splitlines():
        m = re.match(r"\s*(\w+):\s*(.*)$", line)
        if m:
            v = m.group(2).strip()
            d[m.group(1)] = int(v) if re.fullmatch(r"-?\d+", v) else v
    return d


class MigrationWatch:
    """Waits on SRC's own QMP monitor for the MIGRATION 'completed' event
    and reads query-migrate and query-pvfree at once, before libvirt
    stops the source QEMU."""

    def __init__(self, src, pvfree):
        self.src, self.pvfree = src, pvfree
        self.info = self.pv = self.error = None
        self.stopped = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        mon = self.src.mon
        end = ("completed", "failed", "cancelled")
        try:
            while True:
                try:
                    mon.wait_event("MIGRATION", 1, lambda e: e.get(
                        "data", {}).get("status") in end)
                    break
                except TestFailure as e:
                    if self.stopped or "timeout" not in str(e):
                        raise
            self.info = mon.cmd("query-migrate", timeout=5)
            if self.pvfree:
                self.pv = mon.cmd("query-pvfree", timeout=5)
        except Exception as e:      # QEMU gone, closed, stopped: see .error
            self.error = f"{type(e).__name__}: {e}"

    def join(self, failed=False):
        """Wait for the figures; FAILED: the migration did not happen, stop
        waiting."""
        if failed:
            self.stopped = True
        self.t.join(5 if failed else 30)
        return self


class JobinfoPoll:
    """`virsh domjobinfo --rawstats` of SRC every 0.2 s while its
    migration runs; .stop() returns the samples of the running job."""

    def __init__(self, src):
        self.src, self.samples, self.done = src, [], False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.done:
            try:
                r = self.src.daemon.virsh("domjobinfo", "--rawstats",
                                          self.src.dom, check=False,
                                          timeout=10)
            except TestFailure:
                r = None
            if r is not None and r.returncode == 0:
                d = _parse_jobinfo(r.stdout)
                if d.get("memory_total"):
                    self.samples.append(d)
            time.sleep(0.2)

    def stop(self):
        self.done = True
        self.t.join(15)
        return self.samples


def _migrate(sc, r, src, dst_daemon, dst_side, p2p, sfx, progress,
             emulator=None, no_device=False):
    """virsh migrate SRC -> DST_DAEMON, with the source's migratable XML
    given the destination side's own serial and monitor paths (and
    EMULATOR, if given) as --xml.  Returns (CompletedProcess,
    MigrationWatch).  NO_DEVICE: without -device pvfree-pci."""
    xml = src.daemon.virsh("dumpxml", "--migratable", src.dom).stdout
    paths = [(src.ser_path, dst_side.ser_path)]
    if not src.daemon.route.patched:
        paths.append((src.mon_path, dst_side.mon_path))
    for a, b in paths:
        if a not in xml:
            raise TestFailure(f"{a} not in the domain XML")
        xml = xml.replace(a, b)
    if emulator:
        xml = re.sub(r"<emulator>[^<]*</emulator>",
                     f"<emulator>{escape(emulator)}</emulator>", xml)
    if no_device and src.daemon.route.patched:
        xml, n = re.subn(r"\s*<pvfree\b[^>]*/>|\s*<pvfree\b.*?</pvfree>", "",
                         xml, flags=re.S)
        if n != 1:
            raise TestFailure("no <pvfree> in the domain XML")
    elif no_device:
        xml, n = re.subn(r"<qemu:arg value='-device'/>\s*"
                         r"<qemu:arg value='pvfree-pci[^']*'/>\s*", "", xml)
        if n != 1:
            raise TestFailure("no -device pvfree-pci in the domain XML")
    with open(dst_side.xml_path, "w") as f:
        f.write(xml)
    watch = MigrationWatch(src, sc.device == "pvfree")
    args = ["migrate", "--live", "--verbose", src.dom, dst_daemon.uri,
            "--migrateuri", f"unix://{os.path.join(src.dir, 'mig' + sfx)}",
            "--xml", dst_side.xml_path, "--bandwidth", str(sc.bandwidth_mib)]
    if p2p:
        args.insert(2, "--p2p")
    progress(f"  [{sc.name}] virsh -c {src.daemon.name} migrate "
             f"{'--p2p ' if p2p else ''}{src.name} -> {dst_side.name}")
    t0 = time.time()
    poll = None
    if sc.poll_jobinfo and sfx == "":
        poll = JobinfoPoll(src)
    res = src.daemon.virsh(*args, check=False, timeout=sc.timeout)
    r["virsh_migrate_s" + sfx] = time.time() - t0
    if poll:
        r["jobinfo_running"] = poll.stop()
    watch.join(failed=res.returncode != 0)
    return res, watch


def _check_figures(r, watch, job, sfx, fail, patched):
    """domjobinfo --completed against the source's final query-migrate;
    PATCHED: libvirt reports free-pages-skipped too."""
    if watch.error or not watch.info:
        fail(f"no final query-migrate from the source{sfx}: {watch.error}")
        return
    info = watch.info
    ram = info.get("ram", {})
    if info.get("status") != "completed":
        fail(f"source query-migrate status {info.get('status')}{sfx}")
    r["transferred" + sfx] = ram.get("transferred")
    r["total_time_ms" + sfx] = info.get("total-time")
    r["downtime_ms" + sfx] = info.get("downtime")
    r["free_pages_skipped" + sfx] = ram.get("free-pages-skipped")
    r["jobinfo" + sfx] = job
    for jk, qk in JOBINFO_VS_QMP:
        if job.get(jk) != ram.get(qk):
            fail(f"domjobinfo {jk}={job.get(jk)} but query-migrate "
                 f"ram.{qk}={ram.get(qk)}{sfx}")
    r["libvirt_downtime_ms" + sfx] = job.get("downtime")
    jk = "memory_free_pages_skipped"
    if patched and "free-pages-skipped" in ram:
        if job.get(jk) != ram["free-pages-skipped"]:
            fail(f"domjobinfo {jk}={job.get(jk)} but query-migrate "
                 f"ram.free-pages-skipped={ram['free-pages-skipped']}{sfx}")
    elif jk in job:
        fail(f"domjobinfo has {jk} ({job[jk]}) from a stock libvirt or "
             f"without QEMU reporting it{sfx}")
    r["jobinfo_free_pages_skipped" + sfx] = job.get(jk)
    if watch.pv is not None:
        pv = watch.pv
        r["pvfree" + sfx] = pv
        r["skipped" + sfx] = pv.get("pages-skipped")
        r["last_status" + sfx] = pv.get("last-status")
        if pv.get("pages-skipped") != ram.get("free-pages-skipped"):
            fail(f"query-pvfree pages-skipped {pv.get('pages-skipped')} != "
                 f"query-migrate free-pages-skipped "
                 f"{ram.get('free-pages-skipped')}{sfx}")
        if pv.get("last-status") != "ok" and pv.get("pages-skipped"):
            fail(f"last-status {pv.get('last-status')} but "
                 f"{pv.get('pages-skipped')} pages skipped{sfx}")
    elif ram.get("free-pages-skipped") and r.get("device") == "none":
        fail(f"no pvfree device, yet free-pages-skipped "
             f"{ram.get('free-pages-skipped')}{sfx}")


def _check_running(r, patched, fail):
    """The samples of `virsh domjobinfo` while the job ran: some at all,
    and (PATCHED) memory_free_pages_skipped among them, growing to the
    final figure; (STOCK) never."""
    samples = r["jobinfo_running"]
    jk = "memory_free_pages_skipped"
    vals = [s_[jk] for s_ in samples if jk in s_]
    r["jobinfo_running_samples"] = len(samples)
    r["jobinfo_running_skipped"] = vals
    if not samples:
        fail("no domjobinfo sample while the migration ran")
    elif patched and not any(vals):
        fail(f"running domjobinfo never showed {jk} > 0 "
             f"({len(samples)} samples)")
    elif patched and max(vals) > (r.get("skipped") or 0):
        fail(f"running {jk} {max(vals)} > final {r.get('skipped')}")
    elif not patched and vals:
        fail(f"stock libvirt showed {jk}")
    r["jobinfo_running"] = samples[-1:]      # keep the record small


def run(sc, daemons, progress=log):
    """One scenario between DAEMONS (A, B, of one Route); a result dict
    like scenario.run()'s."""
    route = daemons[0].route
    r = {"name": f"{route.name}/{sc.name}", "label": sc.label,
         "flavour": sc.flavour, "mem_mb": sc.mem_mb, "device": sc.device,
         "failures": [], "start": time.time(), "route": route.name}
    fail = r["failures"].append
    wd = h.workdir(f"{route.name}-{sc.name}")
    r["workdir"] = wd
    dom = f"pvfree-{sc.name}"
    sides = []
    try:
        k, initrd, has_ko = image.initramfs(sc.flavour)
        if sc.driver and sc.device == "pvfree" and not has_ko:
            raise TestFailure(f"pvfree.ko could not be built for {k.release}")
        append = ("console=ttyS0 quiet panic=1 " + sc.append).strip()

        def xml(side, emulator=route.qemu):
            return domain_xml(route, dom, emulator, k.vmlinuz, initrd,
                              append, sc.mem_mb, side,
                              pvfree=sc.device == "pvfree",
                              balloon=sc.device == "balloon")

        a, b = daemons
        src = Domain("A", a, dom, wd)
        sides.append(src)
        if sc.dest == "start":
            # the emulator lacks pvfree-pci: refused when the domain is
            # defined (patched) or when QEMU starts (stock)
            with open(src.xml_path, "w") as f:
                f.write(xml(src, route.stock_qemu))
            how = "define" if route.patched else "create"
            res = a.virsh(how, src.xml_path, check=False)
            r["refusal"] = res.stderr.strip()
            r["refusal_why"] = _why(r["refusal"])
            r["source_state"] = f"{how} refused"
            r["source_paused"] = False
            progress(f"  [{sc.name}] virsh {how} rc={res.returncode}: "
                     f"{r['refusal']}")
            if res.returncode == 0:
                fail(f"virsh {how} of pvfree on an emulator without it "
                     f"succeeded")
            elif "pvfree-pci" not in res.stderr:
                fail(f"the error does not name pvfree-pci: {r['refusal']}")
            if a.domains():
                fail(f"a domain was left: {a.domains()}")
            return r
        with open(src.xml_path, "w") as f:
            f.write(xml(src))
        a.virsh("create", "--paused", src.xml_path)
        src.attach()
        a.virsh("resume", dom)
        daemons_ = scenario.prepare(sc, src, r, progress)
        log_a = a.domain_log(dom)
        r["tainted"] = "custom-argv" in log_a
        if route.patched:
            if r["tainted"]:
                fail("domain tainted custom-argv with <pvfree/>")
            dev = re.search(r"-device '(\{\"driver\":\"pvfree-pci\"[^']*)'",
                            log_a)
            r["pvfree_device_arg"] = dev and dev.group(1)
            if (sc.device == "pvfree") != bool(dev):
                fail(f"pvfree-pci in the command line: {bool(dev)}")
            elif dev and not all(f'"{k}":' in dev.group(1)
                                 for k in ("id", "bus", "addr")):
                fail(f"pvfree-pci without alias or PCI address: "
                     f"{dev.group(1)}")
        elif not r["tainted"]:
            fail("domain log does not say tainted: custom-argv")

        if sc.dest != "pvfree":
            # stock-qemu: the destination's emulator lacks pvfree-pci:
            # refused before anything is sent, the guest never paused.
            # no-device: the destination QEMU has no pvfree-pci: it refuses
            # the device's state, the source resumes the guest.
            stock = sc.dest == "stock-qemu"
            # patched libvirt refuses both in Prepare (capability, ABI
            # check): before anything is sent, guest never paused
            early = stock or route.patched
            if stock and (not os.access(STOCK_QEMU, os.X_OK) or
                          h.qemu_has_device(STOCK_QEMU, "pvfree-pci")):
                raise TestFailure(f"{STOCK_QEMU}: not an emulator without "
                                  f"pvfree-pci")
            dst = Domain("B", b, dom, wd)
            sides.append(dst)
            res, watch = _migrate(sc, r, src, b, dst, True, "", progress,
                                  emulator=route.stock_qemu if stock
                                  else None, no_device=not stock)
            r["refusal"] = res.stderr.strip()
            r["refusal_why"] = _why(r["refusal"])
            progress(f"  [{sc.name}] virsh migrate rc={res.returncode}: "
                     f"{r['refusal']}")
            if res.returncode == 0:
                fail("migration to a destination without pvfree succeeded")
            elif stock and "pvfree-pci" not in res.stderr:
                fail(f"the error does not name pvfree-pci: {r['refusal']}")
            elif early and "pvfree" not in res.stderr:
                fail(f"the error does not name pvfree: {r['refusal']}")
            elif not early:
                # virsh says "load of migration failed"; the destination's
                # domain log says why
                why = [l for l in b.domain_log(dom).splitlines()
                       if "Unknown savevm section" in l and "pvfree" in l]
                if not why:
                    fail("destination log does not name pvfree's section")
                else:
                    r["refusal_why"] = why[0].split(
                        "qemu-system-x86_64: ")[-1].split(". ")[0]
            st = src.state()
            r["source_state"] = st
            if not st or not st.startswith("running"):
                fail(f"source domain state after the failure: {st}")
            if b.domains():
                fail(f"destination kept a domain: {b.domains()}")
            src.mon.cmd("query-status")     # reads the events meanwhile
            paused = any(e.get("event") == "STOP" for e in src.mon.events)
            r["source_paused"] = paused
            if early and paused:
                fail("the source guest was paused")
            # the guest is fine where it is
            scenario.check_destination(sc, r, src, daemons_, fail, progress,
                                       wd)
            return r

        here, there = (a, src), None
        for hop, p2p in enumerate(sc.p2p, 1):
            sfx = "" if hop == 1 else f"_hop{hop}"
            sd, s = here
            dd = b if sd is a else a
            dst = Domain({1: "B", 2: "A2", 3: "B2"}[hop], dd, dom, wd)
            sides.append(dst)
            res, watch = _migrate(sc, r, s, dd, dst, p2p, sfx, progress)
            if res.returncode != 0:
                raise TestFailure(f"virsh migrate{sfx}: {res.stderr.strip()}")
            if dom in sd.domains():
                fail(f"{dom} still on {sd.name} after migration{sfx}")
            s.close()
            dst.attach()
            st = dst.state()
            if not st or not st.startswith("running"):
                fail(f"destination state{sfx}: {st}")
            job = jobinfo(dd, dom)
            _check_figures(r, watch, job, sfx, fail, route.patched)
            progress(f"  [{sc.name}] hop {hop}: sent "
                     f"{(r.get('transferred' + sfx) or 0) / 2**20:.1f} MiB in "
                     f"{r.get('total_time_ms' + sfx)} ms, downtime "
                     f"{r.get('downtime_ms' + sfx)} ms, skipped "
                     f"{r.get('skipped' + sfx, '-')} "
                     f"({r.get('last_status' + sfx, '-')}); domjobinfo "
                     f"memory_processed {job.get('memory_processed')}")
            scenario.check_destination(sc, r, dst, daemons_, fail, progress,
                                       wd, sfx)
            if sc.device == "pvfree" and sc.expect_skipped == ">0" and \
                    not r.get("skipped" + sfx):
                fail(f"hop {hop}: nothing skipped")
            gs = r.get("guest_stats" + sfx) or {}
            if sc.device == "pvfree" and sc.driver and \
                    gs.get("last_request_id") != str(hop):
                fail(f"hop {hop}: guest last_request_id "
                     f"{gs.get('last_request_id')} (expected {hop})")
            if hop == 1:
                scenario.check_expectations(sc, r, fail)
            if "jobinfo_running" in r and hop == 1:
                _check_running(r, route.patched, fail)
            here = (dd, dst)
    except TestFailure as e:
        fail(str(e))
    except Exception as e:  # a harness bug still has to clean up and report
        fail(f"{type(e).__name__}: {e}")
    finally:
        for s in sides:
            s.close()
        for d in daemons:
            d.destroy(dom)
        r["ok"] = not r["failures"]
        r["elapsed_s"] = time.time() - r["start"]
    return r


def _why(err):
    """The gist of a virsh error: its last line, QEMU's words if it
    quotes QEMU."""
    last = err.strip().splitlines()[-1] if err.strip() else ""
    return last.split("qemu-system-x86_64: ")[-1].split("error: ")[-1]


def table(done, out=sys.stdout):
    hdr = (f"{'scenario':<24} {'result':<6} {'sent KiB':>10} {'total ms':>9} "
           f"{'down ms':>8} {'skipped':>8} {'status':<15} "
           f"{'back KiB':>9} {'back skip':>9}")
    print(hdr, file=out)
    print("-" * len(hdr), file=out)
    for r in done:
        print(f"{r['name']:<24} {'PASS' if r['ok'] else 'FAIL':<6} "
              f"{kib(r.get('transferred')):>10} "
              f"{str(r.get('total_time_ms', '-')):>9} "
              f"{str(r.get('downtime_ms', '-')):>8} "
              f"{str(r.get('skipped', '-')):>8} "
              f"{str(r.get('last_status', '-')):<15} "
              f"{kib(r.get('transferred_hop2')):>9} "
              f"{str(r.get('skipped_hop2', '-')):>9}", file=out)


def main():
    # its own scratch dir: the cleanup check looks for processes naming it
    sc = os.environ.get("PVFREE_SCRATCH")
    os.environ["PVFREE_SCRATCH"] = os.path.join(sc, "libvirt") if sc \
        else "/tmp/libvirt-tests"
    ap = argparse.ArgumentParser(prog="tests/libvirt/run-tests",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated scenario names")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--route", choices=("stock", "patched", "both"),
                    default="both", help="stock libvirt, the patched "
                    "build (hv-kvm/libvirt) or both (default)")
    ap.add_argument("--mem", type=int, default=int(os.environ.get(
        "PVFREE_LIBVIRT_MEM", "512")), help="guest MiB (default 512)")
    ap.add_argument("--json", help="write the results here (JSON lines)")
    ap.add_argument("--demo", action="store_true", help="make virsh-demo: "
                    "a post-workload guest (--mem, default 1024) moved "
                    "with no device, balloon free page hints and pvfree "
                    "(--route, default patched)")
    a = ap.parse_args()
    if a.demo:
        if a.route == "both":
            a.route = "patched"
        if "--mem" not in sys.argv:
            a.mem = 1024

    todo = select(demo_scenarios(a.mem) if a.demo else scenarios(a.mem),
                  a.only, a.list)
    if a.list:
        return 0
    for tool in ("libvirtd", "virsh", "unshare"):
        if not shutil.which(tool):
            print(f"{tool} missing: scripts/setup-deps.sh libvirt",
                  file=sys.stderr)
            return 1
    t0 = time.time()
    top = scratch()
    os.makedirs(top, exist_ok=True)
    qemu = h.qemu_binary()
    routes = []
    if a.route in ("stock", "both"):
        routes.append(Route("stock", qemu=qemu))
    if a.route in ("patched", "both"):
        routes.append(Route("patched", run=libvirt_run(), top=top, qemu=qemu))
    for rt in routes:
        v = subprocess.run([*rt.virsh(), "--version"],
                           stdout=subprocess.PIPE, text=True).stdout.strip()
        print(f"{rt.name} libvirt: virsh {v}"
              f"{' (' + rt.run + ')' if rt.patched else ''}", flush=True)
    print(f"qemu: {qemu}", flush=True)
    writer = results.Writer(a.json)
    done = []
    passed = failed = 0

    def report(name, failures, line, **fields):
        nonlocal passed, failed
        writer.write(results.record("libvirt", "check", name, failures,
                                    **fields))
        if failures:
            failed += 1
            print(f"FAIL {name}: {'; '.join(failures)}", flush=True)
        else:
            passed += 1
            print(f"PASS {name}: {line}", flush=True)

    for rt in routes:
        daemons = []
        try:
            base = os.path.join(top, "daemons")
            for n in ("A", "B"):
                daemons.append(Daemon(n, base, rt).start())
            log(f"=== {rt.name} libvirt: libvirtd A and B up")
            for s in todo:
                log(f"--- {rt.name}/{s.name}: {s.describe()}")
                r = run(s, daemons)
                done.append(r)
                writer.write(scenario.record(r, "libvirt"))
                if results.print_outcome(r, summary(r) if r["ok"] else ""):
                    passed += 1
                else:
                    failed += 1
            by = {r["name"]: r for r in done}
            post, idle = f"{rt.name}/post-workload", f"{rt.name}/idle"
            if post in by and idle in by:
                p = by[post].get("transferred")
                i = by[idle].get("transferred")
                ok = p is not None and bool(i) and p <= ACCEPT_RATIO * i
                ratio = f"x{p / i:.2f}" if p is not None and i else "no data"
                line = f"{kib(p)} KiB vs {kib(i)} KiB ({ratio})"
                report(f"{rt.name}/acceptance post-workload <= "
                       f"{ACCEPT_RATIO} x idle", [] if ok else [line], line)
        finally:
            for d in daemons:
                d.stop()
    left = leftovers(top)
    report("cleanup", [f"left running: {left}"] if left else [],
           "no libvirtd or QEMU of this run left running")
    print()
    (demo_table if a.demo else table)(done)
    print(f"\n(tests/libvirt/run-tests, {time.time() - t0:.0f} s; logs under "
          f"{top}/<route>-<scenario>/, daemons under {top}/daemons/)")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def summary(r):
    """The PASS line of scenario result R."""
    if "refusal" in r:
        paused = ", paused and resumed" if r["source_paused"] \
            else ", never paused"
        return (f"refused ({r['refusal_why']}), "
                f"source {r['source_state']}{paused}")
    what = (f"sent {kib(r.get('transferred'))} KiB in "
            f"{r.get('total_time_ms')} ms, skipped {r.get('skipped', '-')}")
    if "transferred_hop2" in r:
        what += (f"; back to A: sent {kib(r['transferred_hop2'])} KiB, "
                 f"skipped {r.get('skipped_hop2')}")
    what += "; domjobinfo --completed = query-migrate"
    if "jobinfo_running_samples" in r:
        v = r["jobinfo_running_skipped"]
        what += (f"; domjobinfo while running: {r['jobinfo_running_samples']}"
                 f" samples, memory_free_pages_skipped "
                 f"{'up to ' + str(max(v)) if v else 'absent'}")
    if r.get("jobinfo_free_pages_skipped") is not None:
        what += (f" (memory_free_pages_skipped "
                 f"{r['jobinfo_free_pages_skipped']})")
    return what + "; integrity verified"


if __name__ == "__main__":
    sys.exit(main())
