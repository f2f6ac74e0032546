# SPDX-License-Identifier: MIT
"""QEMU for the pvfree tests: starts QEMU processes (TCG guests and Xen
inside QEMU), talks QMP, drives a guest's serial console and migrates a
guest between two QEMU processes.

Every wait has a timeout and every process this module starts is killed on
any failure or exit, so that a failed test leaves no qemu-system behind."""

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from . import TOP, TestFailure, log, scratch

FIRMWARE = ["-L", "/usr/share/qemu", "-L", "/usr/share/seabios"]
# bytes/s: local migrations are CPU bound; 0 = leave QEMU's default
MAX_BANDWIDTH = int(os.environ.get("PVFREE_MIG_BANDWIDTH", 8 << 30))
DOWNTIME_LIMIT_MS = int(os.environ.get("PVFREE_MIG_DOWNTIME_MS", 500))


# ---- process bookkeeping -------------------------------------------------

_procs = []


def _kill_all():
    for p in list(_procs):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        _procs.remove(p)


def _on_signal(sig, frame):
    _kill_all()
    sys.exit(128 + sig)


atexit.register(_kill_all)
for _s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_s, _on_signal)


def spawn(argv, logpath):
    """Start ARGV in its own process group with stdout and stderr appended
    to LOGPATH; it is killed with its group when this program exits."""
    out = open(logpath, "a")
    out.write("$ " + " ".join(argv) + "\n")
    out.flush()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                         stderr=subprocess.STDOUT, start_new_session=True)
    _procs.append(p)
    return p


def reap(p, timeout=10):
    """Wait up to TIMEOUT s for P to exit, then kill its group; forget it."""
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
    if p in _procs:
        _procs.remove(p)


def qemu_binary():
    """$PVFREE_QEMU, else what hv-kvm/build-qemu.sh prints (it builds
    QEMU with pvfree's patches once, then prints the cached binary)."""
    q = os.environ.get("PVFREE_QEMU")
    if q:
        return q
    out = subprocess.run([os.path.join(TOP, "hv-kvm", "build-qemu.sh")],
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    lines = out.strip().splitlines()
    if not lines or not os.access(lines[-1], os.X_OK):
        raise TestFailure(f"hv-kvm/build-qemu.sh printed {out!r}")
    return lines[-1]


def qemu_has_device(qemu, dev):
    r = subprocess.run([qemu, "-device", "help"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=60)
    return f'"{dev}"' in r.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _connect_unix(path, timeout, proc):
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            raise TestFailure(f"QEMU exited ({proc.returncode}) before {path}")
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.time() > deadline:
                raise TestFailure(f"cannot connect to {path}")
            time.sleep(0.1)


# ---- QMP -----------------------------------------------------------------

class QmpError(TestFailure):
    """QEMU answered a QMP command with an error."""


class Qmp:
    """A QMP connection; events that arrive meanwhile are kept in .events."""

    def __init__(self, path, proc, logf):
        self.path, self.proc, self.logf = path, proc, logf
        self.sock = None
        self.buf = b""
        self.events = []
        self.n = 0

    def connect(self, timeout=30):
        self.sock = _connect_unix(self.path, timeout, self.proc)
        self._read(timeout)                     # greeting
        self.cmd("qmp_capabilities")

    def _read(self, timeout):
        deadline = time.time() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.time()
            if left <= 0:
                raise TestFailure(f"QMP {self.path}: timeout")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise TestFailure(f"QMP {self.path}: connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, args=None, timeout=60, quiet=False):
        self.n += 1
        req = {"execute": name, "id": self.n}
        if args is not None:
            req["arguments"] = args
        if not quiet:
            self.logf.write(f"QMP> {json.dumps(req)}\n")
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        while True:
            resp = self._read(timeout)
            if "event" in resp:
                self.events.append(resp)
                self.logf.write(f"QMP event {json.dumps(resp)}\n")
                continue
            if resp.get("id") != self.n:
                continue
            if not quiet:
                self.logf.write(f"QMP< {json.dumps(resp)[:2000]}\n")
            self.logf.flush()
            if "error" in resp:
                raise QmpError(f"{name}: {resp['error'].get('desc')}")
            return resp.get("return")

    def hmp(self, line):
        return self.cmd("human-monitor-command", {"command-line": line})

    def wait_event(self, name, timeout, pred=lambda e: True):
        """Wait up to TIMEOUT s for event NAME for which PRED(event) holds
        (also among those kept in .events); returns it and forgets it."""
        deadline = time.time() + timeout
        while True:
            for e in self.events:
                if e.get("event") == name and pred(e):
                    self.events.remove(e)
                    return e
            resp = self._read(max(deadline - time.time(), 0.01))
            if "event" in resp:
                self.events.append(resp)
                self.logf.write(f"QMP event {json.dumps(resp)}\n")
                self.logf.flush()

    def close(self):
        if self.sock:
            self.sock.close()


# ---- serial console ------------------------------------------------------

class Console:
    """The guest's ttyS0 over a unix socket, driven by guest-init.sh:
    send "<n> <cmd>", read until "@@DONE <n> <rc>"."""

    def __init__(self, path, proc, logpath):
        self.path, self.proc = path, proc
        self.logf = open(logpath, "ab", buffering=0)
        self.data = ""
        self.pos = 0
        self.cond = threading.Condition()
        self.sock = None
        self.closed = False
        self.n = 0

    def connect(self, timeout=30):
        self.sock = _connect_unix(self.path, timeout, self.proc)
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            with self.cond:
                if not chunk:
                    self.closed = True
                    self.cond.notify_all()
                    return
                self.logf.write(chunk)
                self.data += chunk.decode("utf-8", "replace").replace("\r", "")
                self.cond.notify_all()

    def wait(self, regex, timeout, what=None):
        """Wait for REGEX in the output after self.pos; move pos past it."""
        rx = re.compile(regex, re.M)
        deadline = time.time() + timeout
        with self.cond:
            while True:
                m = rx.search(self.data, self.pos)
                if m:
                    self.pos = m.end()
                    return m
                left = deadline - time.time()
                if left <= 0:
                    raise TestFailure(f"guest console: no {what or regex!r} "
                                      f"after {timeout:.0f} s; last output: "
                                      f"{self.data[-300:]!r}")
                if self.closed or self.proc.poll() is not None:
                    raise TestFailure(f"guest console closed (QEMU "
                                      f"rc={self.proc.poll()}) waiting for "
                                      f"{what or regex!r}; last output: "
                                      f"{self.data[-300:]!r}")
                self.cond.wait(min(left, 1.0))

    def run(self, cmd, timeout=60, check=True):
        """Run CMD in the guest; returns (rc, output)."""
        self.n += 1
        n = self.n
        with self.cond:
            start = len(self.data)
            self.pos = start
        self.sock.sendall(f"{n} {cmd}\n".encode())
        m = self.wait(rf"^@@DONE {n} (\d+)\n", timeout, f"end of `{cmd}`")
        rc = int(m.group(1))
        out = self.data[start:m.start()]
        if check and rc != 0:
            raise TestFailure(f"guest `{cmd}` failed rc={rc}: {out.strip()[-500:]}")
        return rc, out

    def close(self):
        if self.sock:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()


# ---- a QEMU process ------------------------------------------------------

class Vm:
    """One QEMU process running a guest of the harness's initramfs."""

    def __init__(self, name, qemu, workdir, kernel, initrd, append,
                 mem_mb=1024, smp=1, pvfree=False, pvfree_opts="",
                 balloon=False, incoming=False, extra=(), accel="tcg"):
        self.name = name
        self.accel = accel
        self.qemu = qemu
        self.dir = workdir
        self.kernel, self.initrd, self.append = kernel, initrd, append
        self.mem_mb, self.smp = mem_mb, smp
        self.pvfree, self.pvfree_opts = pvfree, pvfree_opts
        self.balloon = balloon
        self.incoming = incoming
        self.extra = list(extra)
        self.proc = None
        self.qmp = None
        self.console = None
        self.qmp_path = os.path.join(workdir, f"{name}.qmp")
        self.ser_path = os.path.join(workdir, f"{name}.serial")
        self.qmplog = open(os.path.join(workdir, f"{name}.qmp.log"), "a")

    def argv(self):
        a = [self.qemu, "-name", self.name, "-accel", self.accel, "-machine", "pc",
             "-m", str(self.mem_mb), "-smp", str(self.smp), "-nodefaults",
             "-no-user-config", "-no-reboot", "-nic", "none", "-display", "none",
             "-vga", "none", "-monitor", "none", *FIRMWARE,
             "-kernel", self.kernel, "-initrd", self.initrd,
             "-append", self.append,
             "-chardev", f"socket,id=ser0,path={self.ser_path},server=on,wait=off",
             "-serial", "chardev:ser0",
             "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        if self.pvfree:
            dev = "pvfree-pci"
            if self.pvfree_opts:
                dev += "," + self.pvfree_opts
            a += ["-device", dev]
        if self.balloon:
            a += ["-object", "iothread,id=io0", "-device",
                  "virtio-balloon-pci,free-page-hint=on,iothread=io0"]
        if self.incoming:
            a += ["-incoming", "defer"]
        return a + self.extra

    def start(self):
        for p in (self.qmp_path, self.ser_path):
            if os.path.exists(p):
                os.unlink(p)
        self.proc = spawn(self.argv(),
                          os.path.join(self.dir, f"{self.name}.qemu.log"))
        self.qmp = Qmp(self.qmp_path, self.proc, self.qmplog)
        self.qmp.connect()
        self.console = Console(self.ser_path, self.proc,
                               os.path.join(self.dir, f"{self.name}.console.log"))
        self.console.connect()
        return self

    def wait_boot(self, timeout=180):
        m = self.console.wait(r"^@@READY (\S+)\n", timeout, "guest boot (@@READY)")
        return m.group(1)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if not self.proc:
            return
        if self.alive():
            try:
                self.qmp.cmd("quit", timeout=5)
            except Exception:
                pass
        reap(self.proc)
        if self.console:
            self.console.close()
        if self.qmp:
            self.qmp.close()


# ---- migration -----------------------------------------------------------

def _mib(b):
    return (b or 0) / (1 << 20)


def migrate(src, dst, transport="tcp", timeout=600, progress=log, tag="",
            caps=()):
    """Migrate SRC to DST (started with incoming=True), with the migration
    capabilities CAPS turned on at both ends.  Returns the source's final
    query-migrate 'ram' stats plus times; raises TestFailure."""
    mig_file = os.path.join(src.dir, "migration.stream")
    if caps:
        cl = [{"capability": c, "state": True} for c in caps]
        for vm in (src, dst):
            vm.qmp.cmd("migrate-set-capabilities", {"capabilities": cl})
    if transport == "tcp":
        uri = f"tcp:127.0.0.1:{free_port()}"
        dst.qmp.cmd("migrate-incoming", {"uri": uri})
        src_uri = uri
    elif transport == "exec":
        src_uri = f"exec:cat > {mig_file}"
    else:
        raise ValueError(transport)
    params = {"downtime-limit": DOWNTIME_LIMIT_MS}
    if MAX_BANDWIDTH:
        params["max-bandwidth"] = MAX_BANDWIDTH
    src.qmp.cmd("migrate-set-parameters", params)
    t0 = time.time()
    src.qmp.cmd("migrate", {"uri": src_uri})
    last = 0
    while True:
        info = src.qmp.cmd("query-migrate", quiet=True)
        st = info.get("status")
        ram = info.get("ram", {})
        if st == "completed":
            break
        if st in ("failed", "cancelled"):
            raise TestFailure(f"migration {st}: {info.get('error-desc', '')}")
        el = time.time() - t0
        if el > timeout:
            try:
                src.qmp.cmd("migrate_cancel")
            except Exception:
                pass
            raise TestFailure(f"migration not done after {timeout} s "
                              f"(status {st})")
        if el - last >= 5:
            last = el
            progress(f"  {tag}migrating: {st} {el:5.1f} s, sent "
                     f"{_mib(ram.get('transferred')):7.1f} MiB, remaining "
                     f"{_mib(ram.get('remaining')):7.1f} MiB, pass "
                     f"{ram.get('dirty-sync-count', '?')}, dirty "
                     f"{ram.get('dirty-pages-rate', 0)} pages/s")
        time.sleep(0.25)
    src.qmplog.write(f"final query-migrate: {json.dumps(info)}\n")
    if transport == "exec":
        dst.qmp.cmd("migrate-incoming", {"uri": f"exec:cat {mig_file}"})
    # the destination runs the guest once it has everything
    deadline = time.time() + 120
    while True:
        st = dst.qmp.cmd("query-status", quiet=True)
        if st.get("running"):
            break
        if time.time() > deadline:
            raise TestFailure(f"destination not running: {st}")
        time.sleep(0.2)
    if transport == "exec":
        try:
            os.unlink(mig_file)
        except OSError:
            pass
    return {
        "status": info.get("status"),
        "total_time_ms": info.get("total-time"),
        "downtime_ms": info.get("downtime"),
        "setup_time_ms": info.get("setup-time"),
        "transferred": ram.get("transferred"),
        "normal_pages": ram.get("normal"),
        "duplicate_pages": ram.get("duplicate"),
        "ram_total": ram.get("total"),
        "dirty_sync_count": ram.get("dirty-sync-count"),
        # pages the guest reported free (pvfree or balloon hints), patch 5
        "free_pages_skipped": ram.get("free-pages-skipped"),
        "wall_s": time.time() - t0,
    }


def workdir(name):
    """A fresh log directory $PVFREE_SCRATCH/NAME."""
    d = os.path.join(scratch(), name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d
