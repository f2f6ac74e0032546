# SPDX-License-Identifier: MIT
"""Build what a pvfree test guest boots: kernel lookup, extra kernel modules
(virtio_pci + virtio_balloon for the free-page-hinting baseline), the pvfree
module, the static workload and a gzip'd initramfs whose /init is
guest-init.sh.  The one guest image of the KVM scenarios, the smoke tests
and the benchmarks.  Everything heavy is
cached under $PVFREE_CACHE, keyed by a hash of its inputs."""

import glob
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile

from . import CACHE, TOP

# Modules the baseline needs, loaded in this order after their deps.
BALLOON_MODULES = ["virtio_pci", "virtio_balloon"]


def log(msg):
    print(f"[build] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def sha(*parts):
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, str):
            p = p.encode()
        h.update(p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def file_hash(path):
    with open(path, "rb") as f:
        return sha(f.read())


class Kernel:
    """A guest kernel of scripts/guest-kernels.sh: its image and headers."""

    def __init__(self, flavour, release, kdir, hdir):
        self.flavour = flavour
        self.release = release
        self.kdir = kdir
        self.hdir = hdir
        self.vmlinuz = os.path.join(kdir, "vmlinuz")


_kernels = {}


def kernel(flavour):
    """Resolve a flavour with scripts/guest-kernels.sh (cached per run)."""
    if flavour not in _kernels:
        out = run([os.path.join(TOP, "scripts", "guest-kernels.sh"), flavour],
                  stdout=subprocess.PIPE, text=True).stdout.split()
        if len(out) != 4 or out[0] != flavour:
            raise RuntimeError(f"guest-kernels.sh {flavour}: {out}")
        _kernels[flavour] = Kernel(*out)
    return _kernels[flavour]


def workload():
    """Build tests/guest/pvfree-workload (static) into tests/out/guest."""
    out = os.path.join(TOP, "tests", "out", "guest")
    run(["make", "-s", "-C", os.path.join(TOP, "tests", "guest"), f"O={out}"],
        stdout=sys.stderr)
    return os.path.join(out, "pvfree-workload")


def extra_modules(k, names=BALLOON_MODULES):
    """Extract NAMES and their dependencies (modinfo depends=) from the
    linux-image .deb of K into $PVFREE_CACHE/kmods/RELEASE.  Returns
    {name: [ordered .ko file names ending with name.ko]}."""
    d = os.path.join(CACHE, "kmods", k.release)
    stamp = os.path.join(d, ".done-" + sha(*names))
    if not os.path.exists(stamp):
        log(f"extracting {', '.join(names)} (+deps) from linux-image-{k.release}")
        tmp = tempfile.mkdtemp(prefix="pvfree-kmods-")
        os.chmod(tmp, 0o755)    # apt-get download runs as _apt
        try:
            run(["apt-get", "-o", "APT::Sandbox::User=root", "download",
                 f"linux-image-{k.release}"], cwd=tmp,
                stdout=subprocess.DEVNULL)
            deb = glob.glob(os.path.join(tmp, "linux-image-*.deb"))[0]
            run(["dpkg-deb", "-x", deb, os.path.join(tmp, "x")])
            kos = {}
            for path in glob.glob(os.path.join(tmp, "x", "lib", "modules", "*",
                                               "kernel", "**", "*.ko*"),
                                  recursive=True):
                base = os.path.basename(path)
                kos[base.split(".ko")[0].replace("-", "_")] = path
            os.makedirs(d, exist_ok=True)
            for name in names:
                order = []
                _deps(name, kos, order)
                for m in order:
                    src = kos[m]
                    dst = os.path.join(d, m + ".ko")
                    if src.endswith(".xz"):
                        with open(dst, "wb") as f:
                            run(["xz", "-dc", src], stdout=f)
                    elif src.endswith(".zst"):
                        with open(dst, "wb") as f:
                            run(["zstd", "-dc", src], stdout=f)
                    else:
                        shutil.copy(src, dst)
                # load order, deps first; empty if NAME is built in
                with open(os.path.join(d, name + ".load"), "w") as f:
                    f.write("".join(m + ".ko\n" for m in order))
            open(stamp, "w").close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    res = {}
    for name in names:
        with open(os.path.join(d, name + ".load")) as f:
            res[name] = [l.strip() for l in f if l.strip()]
    return d, res


def _deps(name, kos, order):
    if name in order:
        return
    if name not in kos:
        # built in (e.g. virtio on 6.12 cloud): nothing to load
        return
    dep = subprocess.run(["/sbin/modinfo", "-F", "depends", kos[name]],
                         stdout=subprocess.PIPE, text=True, check=True)
    for d in dep.stdout.strip().split(","):
        if d:
            _deps(d.replace("-", "_"), kos, order)
    order.append(name)


def pvfree_module(k, selftest=False):
    """Build guest/pvfree.ko for K with `make -C guest module`, cached by a
    hash of guest/ and include/.  SELFTEST: a SELFTEST=1 build (the
    self-test transport, guest/pvfree_selftest.c).  Returns the path, or
    None if the module cannot be built (a test that needs it then says so
    and fails)."""
    srcs = sorted(glob.glob(os.path.join(TOP, "guest", "**", "*"), recursive=True))
    srcs.append(os.path.join(TOP, "include", "pvfree", "abi.h"))
    parts = [k.release] + (["SELFTEST=1"] if selftest else [])
    for s in srcs:
        if os.path.isfile(s) and not s.endswith((".o", ".ko", ".cmd", ".mod",
                                                 ".mod.c", ".symvers",
                                                 ".order")):
            parts += [os.path.relpath(s, TOP), file_hash(s)]
    out = os.path.join(CACHE, "pvfree-ko", f"{k.release}-{sha(*parts)}")
    ko = os.path.join(out, "pvfree.ko")
    if os.path.exists(ko):
        return ko
    fail = os.path.join(out, "FAILED")
    if os.path.exists(fail):
        return None
    os.makedirs(out, exist_ok=True)
    log(f"building pvfree.ko{' (SELFTEST=1)' if selftest else ''} for "
        f"{k.release}")
    r = subprocess.run(["make", "-C", os.path.join(TOP, "guest"), "module",
                        f"KDIR={k.hdir}", f"O={out}"]
                       + (["SELFTEST=1"] if selftest else []),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with open(os.path.join(out, "build.log"), "w") as f:
        f.write(r.stdout)
    if not os.path.exists(ko):
        log(f"pvfree.ko build failed (see {out}/build.log):\n"
            + "\n".join(r.stdout.splitlines()[-15:]))
        open(fail, "w").close()
        return None
    return ko


# ---- initramfs ---------------------------------------------------------

class Cpio:
    """Minimal newc writer (no root needed for device nodes)."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name, mode, data=b"", rdev=(0, 0), nlink=1):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0,
            rdev[0], rdev[1], len(name_b), 0))
        self.ino += 1
        self.buf.write(hdr.encode() + name_b)
        self.buf.write(b"\0" * ((4 - (110 + len(name_b)) % 4) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * ((4 - len(data) % 4) % 4))

    def dir(self, name):
        self._entry(name, 0o040755, nlink=2)

    def file(self, name, data, mode=0o644):
        self._entry(name, 0o100000 | mode, data)

    def chardev(self, name, major, minor):
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


_built = {}


def initramfs(flavour, selftest=False):
    """Returns (kernel, initrd path, has_pvfree_ko).  Built once per process
    and flavour, so every scenario of a run uses the same guest module even
    if guest/ changes meanwhile.  SELFTEST: the initramfs also has
    /lib/pvfree-modules/pvfree-selftest.ko (a SELFTEST=1 build), and
    has_pvfree_ko says whether that one was built."""
    key = (flavour, selftest)
    if key not in _built:
        _built[key] = _initramfs(flavour, selftest)
    return _built[key]


def _initramfs(flavour, selftest):
    k = kernel(flavour)
    wl = workload()
    kdir, mods = extra_modules(k)
    ko = pvfree_module(k)
    st_ko = pvfree_module(k, selftest=True) if selftest else None
    init = os.path.join(os.path.dirname(__file__), "guest-init.sh")
    files = {"init": (init, 0o755), "bin/busybox": ("/bin/busybox", 0o755),
             "bin/pvfree-workload": (wl, 0o755)}
    for name, order in mods.items():
        for m in order:
            files[f"lib/pvfree-modules/{m}"] = (os.path.join(kdir, m), 0o644)
        files[f"lib/pvfree-modules/{name}.load"] = (
            os.path.join(kdir, name + ".load"), 0o644)
    if ko:
        files["lib/pvfree-modules/pvfree.ko"] = (ko, 0o644)
    if st_ko:
        files["lib/pvfree-modules/pvfree-selftest.ko"] = (st_ko, 0o644)
    parts = [k.release]
    for name in sorted(files):
        parts += [name, file_hash(files[name][0])]
    out = os.path.join(CACHE, "initramfs", f"{k.release}-{sha(*parts)}.cpio.gz")
    if not os.path.exists(out):
        log(f"writing {out}")
        c = Cpio()
        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc",
                  "sys", "run", "tmp", "lib", "lib/pvfree-modules"):
            c.dir(d)
        c.chardev("dev/console", 5, 1)
        c.chardev("dev/null", 1, 3)
        c.chardev("dev/ttyS0", 4, 64)
        for name in sorted(files):
            with open(files[name][0], "rb") as f:
                c.file(name, f.read(), files[name][1])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out + ".tmp", "wb") as f:
            f.write(gzip.compress(c.finish(), compresslevel=6))
        os.rename(out + ".tmp", out)
    return k, out, (st_ko if selftest else ko) is not None

