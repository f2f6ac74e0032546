# SPDX-License-Identifier: MIT
"""Tables, target checks and plots of a pvfree benchmark run.

Reads RUNDIR/results.jsonl (results.py: one record per migration, KVM and
Xen alike, and per self-test snapshot) and RUNDIR/meta.json; writes
RUNDIR/table.md and, with gnuplot, RUNDIR/transferred.png,
RUNDIR/total-time.png, RUNDIR/snapshot.png and RUNDIR/xen.png (their data
and scripts as *.dat / plots.gp next to them).

usage: tests/bench/report RUNDIR      (re-render a run)
"""

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys

from . import TOP, results

RESULTS = "results.jsonl"
SYSNAME = {"none": "A none", "balloon": "B balloon", "pvfree": "C pvfree",
           "unpatched": "Xen unpatched libxenguest (Debian)",
           "nodriver": "Xen pvfree libxenguest, domU without module"}
XEN_PVFREE = "Xen pvfree libxenguest"
SYSTEM_ORDER = ["none", "balloon", "unpatched", "pvfree", "nodriver"]
XEN_SYSTEMS = ["unpatched", "pvfree", "nodriver"]
SCEN_ORDER = ["idle", "post-workload", "fragmented", "writing"]
LINK_ORDER = ["loopback", "10g", "pipe"]
MIB = 1 << 20


def machine_info(qemu, guest_release):
    def first(path, key):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "?"

    def cmd(*a):
        try:
            return subprocess.run(a, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    rev = cmd("git", "-C", TOP, "rev-parse", "--short", "HEAD")
    # uncommitted changes to what the measurement runs
    if cmd("git", "-C", TOP, "status", "--porcelain", "--", "tests/bench",
           "tests/lib", "tests/kvm", "tests/guest", "guest", "hv-kvm", "host",
           "include"):
        rev += "+changes"
    return {
        "cpu": first("/proc/cpuinfo", "model name"),
        "cpus": os.cpu_count(),
        "host_mem": first("/proc/meminfo", "MemTotal"),
        "host_kernel": platform.release(),
        "qemu": qemu,
        "qemu_version": cmd(qemu, "--version").splitlines()[0]
        if qemu else "?",
        "guest_kernel": guest_release,
        "accel": "tcg",
        "git": rev,
    }


def write_meta(out, meta):
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


# ---- statistics -----------------------------------------------------------

def num(v):
    if v in (None, "", "None"):
        return None
    try:
        return float(v)
    except ValueError:
        return None


def stat(rows, key, scale=1.0):
    """(median, min, max, n) of KEY over ROWS, or None."""
    vals = [num(r.get(key)) for r in rows]
    vals = [v * scale for v in vals if v is not None]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals), len(vals)


def fmt(s, prec=0):
    if s is None:
        return "-"
    med, lo, hi, n = s

    def f(x):
        return f"{x:,.{prec}f}"
    if n == 1 or f(lo) == f(hi):
        return f(med)
    return f"{f(med)} ({f(lo)}–{f(hi)})"


def med(s):
    return None if s is None else s[0]


def groups(rows, hv):
    """The migration records of hypervisor HV grouped for the tables:
    [(scenario, link, mem_mib)] in table order, {key: {system: ok rows}}
    and {key: {system: all rows}}."""
    ok, every = {}, {}
    for r in rows:
        if r.get("kind") != "migration" or r.get("hv") != hv:
            continue
        key = (r["scenario"], r["link"], int(r["mem_mib"]))
        every.setdefault(key, {}).setdefault(r["system"], []).append(r)
        if r["status"] == "ok":
            ok.setdefault(key, {}).setdefault(r["system"], []).append(r)
    order = sorted(every, key=lambda k: (_index(SCEN_ORDER, k[0]),
                                         _index(LINK_ORDER, k[1]), k[2]))
    return order, ok, every


def _index(order, item):
    return order.index(item) if item in order else len(order)


def mem_label(mib):
    return f"{mib // 1024} GiB" if mib % 1024 == 0 else f"{mib} MiB"


def sysname(hv, system):
    return XEN_PVFREE if (hv, system) == ("xen", "pvfree") else \
        SYSNAME.get(system, system)


def _col(field, scale=1.0, prec=0, pv_only=False):
    """A table column: FIELD's median (min–max) over a cell's ok rows."""
    return lambda rs, pv: "-" if pv_only and not pv else \
        fmt(stat(rs, field, scale), prec)


def _verified(rs, pv):
    return (f"{fmt(stat(rs, 'pages_verified'))}, "
            f"{sum(num(r.get('mismatches')) or 0 for r in rs):.0f} mismatches")


# (header, cell(ok rows, system is pvfree)) after scenario, link, guest,
# system and ok
COLUMNS = {
    "kvm": [("total ms", _col("total_ms")),
            ("downtime ms", _col("downtime_ms")),
            ("transferred MiB", _col("bytes", 1 / MIB)),
            ("pages skipped", _col("skipped")),
            ("passes", _col("passes")),
            ("snapshot ms", _col("snapshot_us", 1e-3, 1, True)),
            ("lock hold µs", _col("lock_hold_us", pv_only=True)),
            ("src CPU s", _col("src_cpu_s", prec=1)),
            ("dst RSS MiB", _col("dst_rss_mib")),
            ("dst guest-RAM RSS MiB", _col("dst_ram_rss_mib"))],
    "xen": [("MiB in the stream", _col("bytes", 1 / MIB)),
            ("stream s", _col("stream_s", prec=1)),
            ("xl migrate s", _col("total_ms", 1e-3, 1)),
            ("pfns skipped", _col("skipped")),
            ("MiB not sent", _col("not_sent_mib", pv_only=True)),
            ("guest answer ms", _col("answer_ms", pv_only=True)),
            ("snapshot ms", _col("snapshot_us", 1e-3, 1, True)),
            ("lock hold µs", _col("lock_hold_us", pv_only=True)),
            ("pages verified on the destination", _verified)],
}


# ---- Markdown --------------------------------------------------------------

def migration_table(rows, hv):
    """The migrations of HV: one line per (scenario, link, guest, system)."""
    cols = COLUMNS[hv]
    order, ok, every = groups(rows, hv)
    out = ["| scenario | link | guest | system | ok | "
           + " | ".join(c[0] for c in cols) + " |",
           "|---|---|--:|---|--:|" + "--:|" * len(cols)]
    for key in order:
        scen, link, mem = key
        for sysid in sorted(every[key], key=lambda s: _index(SYSTEM_ORDER, s)):
            rs = ok.get(key, {}).get(sysid, [])
            n = len(every[key][sysid])
            okcell = f"{len(rs)}/{n}" if len(rs) == n else \
                f"**{len(rs)}/{n} FAILED {n - len(rs)}**"
            out.append(f"| {scen} | {link} | {mem_label(mem)} "
                       f"| {sysname(hv, sysid)} | {okcell} | "
                       + " | ".join(c[1](rs, sysid == "pvfree") for c in cols)
                       + " |")
    return "\n".join(out)


def gc_table(grows):
    by = {}
    for r in grows:
        if r.get("condition") in (None, "", "-"):
            continue
        by.setdefault((int(r["mem_mib"]) // 1024, r["condition"]), []).append(r)
    out = ["| GiB | free memory | ok | free MiB | list entries | batches "
           "| snapshot ms | ms per GiB | longest lock hold µs |",
           "|--:|---|--:|--:|--:|--:|--:|--:|--:|"]
    for (size, cond) in sorted(by):
        allr = by[(size, cond)]
        rs = [r for r in allr if r["status"] == "ok"]
        snap = stat(rs, "snapshot_us", 1e-3)
        per = stat(rs, "snapshot_us", 1e-3 / size)
        out.append(f"| {size} | {cond} | {len(rs)}/{len(allr)} "
                   f"| {fmt(stat(rs, 'free_frames', 1 / 256))} "
                   f"| {fmt(stat(rs, 'entries'))} | {fmt(stat(rs, 'batches'))} "
                   f"| {fmt(snap, 1)} | {fmt(per, 1)} "
                   f"| {fmt(stat(rs, 'lock_hold_us'))} |")
    return "\n".join(out)


def verdict(ok):
    return "met" if ok else "**missed**"


def targets(rows, grows):
    """The issue's targets, read off the medians."""
    order, okg, _ = groups(rows, "kvm")
    lines = ["| target | where | value | limit | |", "|---|---|--:|--:|---|"]

    def m(key, sysid, field, scale=1.0):
        return med(stat(okg.get(key, {}).get(sysid, []), field, scale))

    def ratio(target, where, a, b, limit, at_least=False, prec=2, shown=None):
        """A line for target A / B <= LIMIT (>= with AT_LEAST)."""
        if a and b:
            ok = a >= limit * b if at_least else a <= limit * b
            lines.append(f"| {target} | {where} | {a / b:.{prec}f} × "
                         f"| {shown or f'{limit:g} ×'} | {verdict(ok)} |")

    for (scen, link, mem) in order:
        idle = ("idle", link, mem)
        key = (scen, link, mem)
        where = f"{mem_label(mem)}, {link}"
        if scen == "post-workload":
            ratio("post-workload bytes ≤ 1.1 × idle (C)", where,
                  m(key, "pvfree", "bytes"), m(idle, "pvfree", "bytes"), 1.1)
            ratio("post-workload time ≤ 1.25 × idle (C)", where,
                  m(key, "pvfree", "total_ms"), m(idle, "pvfree", "total_ms"),
                  1.25)
            ratio("post-workload bytes B / C ≥ 4", where,
                  m(key, "balloon", "bytes"), m(key, "pvfree", "bytes"), 4,
                  at_least=True, prec=1)
            ratio("post-workload time B / C ≥ 2", where,
                  m(key, "balloon", "total_ms"), m(key, "pvfree", "total_ms"),
                  2, at_least=True, prec=1)
            free = m(key, "pvfree", "memfree_mib")
            for field, what in (("dst_ram_rss_mib", "guest-RAM RSS"),
                                ("dst_rss_mib", "process RSS")):
                rss = m(key, "pvfree", field)
                if rss and free is not None:
                    inuse = mem - free
                    lines.append(f"| dst {what} ≤ 1.2 × in-use memory (C) "
                                 f"| {where} | {rss:,.0f} MiB / {inuse:,.0f} "
                                 f"MiB = {rss / inuse:.2f} × | 1.2 × "
                                 f"| {verdict(rss <= 1.2 * inuse)} |")
        if scen == "fragmented":
            it, kept = m(idle, "pvfree", "bytes"), m(key, "pvfree", "kept_mib")
            ratio("fragmented bytes ≤ 1.1 × (idle + kept) (C)", where,
                  m(key, "pvfree", "bytes"),
                  it + kept * MIB if it and kept else None, 1.1)
            ratio("fragmented bytes B / C (\"several times\")", where,
                  m(key, "balloon", "bytes"), m(key, "pvfree", "bytes"), 3,
                  at_least=True, prec=1, shown="≥ 3 ×")
    # guest snapshot: migrations and self-test
    for (scen, link, mem) in order:
        key = (scen, link, mem)
        hold = stat(okg.get(key, {}).get("pvfree", []), "lock_hold_us")
        if hold:
            lines.append(f"| lock hold ≤ 1000 µs (C, max of runs) "
                         f"| {scen}, {mem_label(mem)}, {link} | {hold[2]:,.0f} µs "
                         f"| 1000 µs | {verdict(hold[2] <= 1000)} |")
        if scen == "idle":
            snap = stat(okg.get(key, {}).get("pvfree", []), "snapshot_us", 1e-3)
            gib = mem / 1024
            if snap:
                lines.append(f"| snapshot ≤ 10 ms/GiB (C, idle) "
                             f"| {mem_label(mem)}, {link} | {snap[0] / gib:.1f} "
                             f"ms/GiB | 10 | {verdict(snap[0] <= 10 * gib)} |")
    by = {}
    for r in grows:
        if r.get("status") == "ok":
            by.setdefault((int(r["mem_mib"]) // 1024, r["condition"]), []).append(r)
    for (size, cond) in sorted(by):
        snap = stat(by[(size, cond)], "snapshot_us", 1e-3)
        hold = stat(by[(size, cond)], "lock_hold_us")
        if cond == "contiguous" and snap:
            lines.append(f"| self-test snapshot ≤ 10 ms/GiB | {size} GiB, "
                         f"{cond} | {snap[0] / size:.1f} ms/GiB | 10 "
                         f"| {verdict(snap[0] <= 10 * size)} |")
        if hold:
            lines.append(f"| self-test lock hold ≤ 1000 µs (max) | {size} GiB, "
                         f"{cond} | {hold[2]:,.0f} µs | 1000 µs "
                         f"| {verdict(hold[2] <= 1000)} |")
    return "\n".join(lines)


def failures(recs):
    """The FAILED records of the run, and why."""
    bad = [r for r in recs if r.get("status") != "ok"]
    if not bad:
        return "No FAILED rows."
    out = [f"{len(bad)} FAILED rows (left out of the medians):", ""]
    for r in bad[:40]:
        where = (f"{r.get('hv')} r{r.get('round')} "
                 f"{mem_label(int(r.get('mem_mib') or 0))} "
                 f"{r.get('system')} {r.get('scenario')}/{r.get('link')}"
                 if r.get("kind") == "migration" else
                 f"guest cost {mem_label(int(r.get('mem_mib') or 0))} "
                 f"{r.get('condition')}")
        out.append(f"- {where}: {r.get('failure') or '?'}")
    return "\n".join(out)


def xen_ratios(rows):
    """Bytes and times relative to the unpatched saver, and the issue-5
    target (post-workload bytes <= 1.25 x idle), from the medians."""
    order, ok, _ = groups(rows, "xen")

    def m(scen, sysid, field):
        return med(stat([r for k in order if k[0] == scen
                         for r in ok.get(k, {}).get(sysid, [])], field))

    lines = ["| | value | |", "|---|--:|---|"]
    base = m("idle", "unpatched", "bytes")
    pi, pp = m("idle", "pvfree", "bytes"), m("post-workload", "pvfree", "bytes")
    if pi and pp:
        lines.append(f"| post-workload bytes ≤ 1.25 × idle (pvfree, issue 5) "
                     f"| {pp / pi:.3f} × | {verdict(pp <= 1.25 * pi)} |")
    for scen in SCEN_ORDER:
        b = m(scen, "pvfree", "bytes")
        if b and base:
            lines.append(f"| {scen}: pvfree bytes / unpatched idle bytes "
                         f"| {b / base:.2f} × | |")
        t, tb = m(scen, "pvfree", "total_ms"), m("idle", "unpatched", "total_ms")
        if t and tb:
            lines.append(f"| {scen}: pvfree xl migrate time / unpatched idle "
                         f"| {t / tb:.2f} × | |")
    nd = m("idle", "nodriver", "bytes")
    if nd and base:
        lines.append(f"| no module: pvfree saver bytes / unpatched "
                     f"| {nd / base:.3f} × | |")
    return "\n".join(lines) if len(lines) > 2 else ""


# ---- plots ---------------------------------------------------------------

def _dat(path, cells, series, field, scale):
    """A histogram data file: one line per (label, {series: rows}) of
    CELLS, median min max of FIELD for every series id in SERIES."""
    with open(path, "w") as f:
        f.write("# label" + "".join(f"  {s} med min max" for s in series)
                + "\n")
        for label, by in cells:
            line = [f'"{label}"']
            for sid in series:
                st = stat(by.get(sid, []), field, scale)
                line.append("0 0 0" if st is None else
                            f"{st[0]:.3f} {st[1]:.3f} {st[2]:.3f}")
            f.write(" ".join(line) + "\n")
    return os.path.basename(path)


def _hist(name, title, panels, series):
    """gnuplot lines for NAME.png: one histogram with min–max error bars
    per (subtitle, ylabel, dat) of PANELS, bars (title, colour) of
    SERIES."""
    parts = [f"set terminal pngcairo size 1500,{420 * len(panels) + 60} "
             f"font 'DejaVu Sans,10'",
             f"set output '{name}.png'",
             "set style data histogram",
             "set style histogram errorbars gap 1 lw 1",
             "set key top left", "set yrange [0:*]",
             f"set multiplot layout {len(panels)},1 title '{title}'"]
    for sub, ylabel, dat in panels:
        cols = []
        for i, (t, colour) in enumerate(series):
            c = 2 + 3 * i
            cols.append(f"{repr(dat) if i == 0 else chr(39) * 2} using "
                        f"{c}:{c + 1}:{c + 2}{':xtic(1)' if i == 0 else ''} "
                        f"title '{t}' lc rgb '{colour}'")
        parts += [f"set title '{sub}'", f"set ylabel '{ylabel}'",
                  "plot " + ", ".join(cols)]
    return parts + ["unset multiplot", "set yrange [*:*]"]


KVM_SYSTEMS = ["none", "balloon", "pvfree"]
KVM_SERIES = [("A: no device", "#999999"),
              ("B: virtio-balloon free page hints", "#e69f00"),
              ("C: pvfree", "#0072b2")]
XEN_COLOUR = {"unpatched": "#999999", "pvfree": "#0072b2",
              "nodriver": "#cc79a7"}


def plots(out, rows, grows):
    gp = shutil.which("gnuplot")
    if not gp:
        return "gnuplot not found (scripts/setup-deps.sh bench): no plots"
    script = ["set style fill solid 0.8 border -1", "set grid ytics",
              "set xtics nomirror", "set bars 0.5", "set bmargin 4"]
    parts = []
    order, ok, _ = groups(rows, "kvm")
    links = [l for l in LINK_ORDER if any(k[1] == l for k in order)]
    for field, scale, name, ylabel, title in (
            ("bytes", 1 / MIB, "transferred", "MiB sent",
             "Transferred bytes (median, min–max)"),
            ("total_ms", 1e-3, "total-time", "seconds",
             "Total migration time (median, min–max)")):
        panels = []
        for link in links:
            cells = [(f"{k[0]}\\n{mem_label(k[2])}", ok.get(k, {}))
                     for k in order if k[1] == link]
            panels.append((link, ylabel, _dat(
                os.path.join(out, f"{name}-{link}.dat"), cells, KVM_SYSTEMS,
                field, scale)))
        if panels:
            parts += _hist(name, f"{title}, TCG guests, same QEMU", panels,
                           KVM_SERIES)
    xorder, xok, xevery = groups(rows, "xen")
    if xorder:
        series = [s for s in XEN_SYSTEMS
                  if any(s in xevery[k] for k in xorder)]
        scens = [sc for sc in SCEN_ORDER if any(k[0] == sc for k in xorder)]
        cells = [(sc, {s: [r for k in xorder if k[0] == sc
                           for r in xok.get(k, {}).get(s, [])]
                       for s in series})
                 for sc in scens]
        panels = [(t, yl, _dat(os.path.join(out, f"xen-{f}.dat"), cells,
                               series, f, sc))
                  for f, sc, t, yl in (
                      ("bytes", 1 / MIB, "bytes in the xl migrate stream",
                       "MiB"),
                      ("total_ms", 1e-3, "xl migrate time (nested: indicative "
                       "only)", "seconds"))]
        parts += _hist("xen", "Xen 4.17 under QEMU TCG: xl migrate of a PV "
                       "domU (median, min–max)", panels,
                       [(sysname("xen", s), XEN_COLOUR[s]) for s in series])
    # snapshot time against guest size
    by = {}
    for r in grows:
        if r.get("status") == "ok":
            by.setdefault((int(r["mem_mib"]) // 1024, r["condition"]),
                          []).append(r)
    mig = {}
    for r in rows:
        if r["status"] == "ok" and r.get("hv") == "kvm" and \
                r["system"] == "pvfree" and \
                r["scenario"] in ("idle", "post-workload", "fragmented"):
            mig.setdefault((int(r["mem_mib"]) // 1024, r["scenario"]),
                           []).append(r)
    if by or mig:
        with open(os.path.join(out, "snapshot.dat"), "w") as f:
            # gnuplot indexes 0-1: self-test, 2-4: migrations
            for title, sel, what in [
                    (f"self-test {c}: GiB snap_ms min max hold_us min max",
                     by, c) for c in ("contiguous", "order-0")] + [
                    (f"migration C {sc}", mig, sc)
                    for sc in ("idle", "post-workload", "fragmented")]:
                f.write(f"# {title}\n")
                for size in sorted({k[0] for k in sel if k[1] == what}):
                    s = stat(sel[(size, what)], "snapshot_us", 1e-3)
                    hd = stat(sel[(size, what)], "lock_hold_us")
                    f.write(f"{size} {s[0]} {s[1]} {s[2]} {hd[0]} {hd[1]} "
                            f"{hd[2]}\n")
                f.write("\n\n")
        parts += [
            "set terminal pngcairo size 1300,800 font 'DejaVu Sans,10'",
            "set output 'snapshot.png'", "set style data linespoints",
            "set key outside right", "set xlabel 'guest GiB'",
            "set xrange [0.5:8.5]", "set xtics (1,2,4,8)", "set logscale y",
            "set multiplot layout 2,1 title 'Guest snapshot (TCG): median "
            "and min–max'",
            "set title 'snapshot time'", "set ylabel 'ms'",
            "plot 'snapshot.dat' index 0 using 1:2:3:4 with yerrorlines "
            "title 'self-test, just booted (mostly order 10)' lw 2, "
            "'' index 1 using 1:2:3:4 with yerrorlines title 'self-test, "
            "all order-0 (fragment knob)' lw 2, "
            "'' index 2 using 1:2:3:4 with yerrorlines title 'migration C, "
            "idle' dt 2, "
            "'' index 3 using 1:2:3:4 with yerrorlines title 'migration C, "
            "post-workload' dt 2, "
            "'' index 4 using 1:2:3:4 with yerrorlines title 'migration C, "
            "fragmented' dt 2, "
            "10*x title 'target 10 ms/GiB' lc rgb 'red' dt 3",
            "set title 'longest zone->lock / pcp->lock hold'",
            "set ylabel 'µs'",
            "plot 'snapshot.dat' index 0 using 1:5:6:7 with yerrorlines "
            "title 'self-test, just booted' lw 2, "
            "'' index 1 using 1:5:6:7 with yerrorlines title 'self-test, "
            "all order-0' lw 2, "
            "'' index 2 using 1:5:6:7 with yerrorlines title 'migration C, "
            "idle' dt 2, "
            "'' index 3 using 1:5:6:7 with yerrorlines title 'migration C, "
            "post-workload' dt 2, "
            "'' index 4 using 1:5:6:7 with yerrorlines title 'migration C, "
            "fragmented' dt 2, "
            "1000 title 'target 1 ms' lc rgb 'red' dt 3",
            "unset multiplot"]
    with open(os.path.join(out, "plots.gp"), "w") as f:
        f.write("\n".join(script + parts) + "\n")
    r = subprocess.run([gp, "plots.gp"], cwd=out, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=120)
    if r.returncode:
        return f"gnuplot failed: {r.stdout.strip()[-500:]}"
    return "plots: " + ", ".join(p for p in ("transferred.png",
                                             "total-time.png", "snapshot.png",
                                             "xen.png")
                                 if os.path.exists(os.path.join(out, p)))


def render(out):
    """Write OUT/table.md and the plots from OUT/results.jsonl; returns the
    Markdown."""
    recs = results.read(os.path.join(out, RESULTS))
    rows = [r for r in recs if r.get("kind") == "migration"]
    grows = [r for r in recs if r.get("kind") == "guest-cost"]
    kvm = any(r.get("hv") == "kvm" for r in rows)
    xen = any(r.get("hv") == "xen" for r in rows)
    try:
        with open(os.path.join(out, "meta.json")) as f:
            meta = json.load(f)
    except OSError:
        meta = {}
    md = [f"## pvfree benchmark, {meta.get('started', '?')} "
          f"({meta.get('mode', '?')} mode, {meta.get('rounds', '?')} rounds"
          f"{', %d min' % round(meta['elapsed_s'] / 60) if 'elapsed_s' in meta else ''})",
          "",
          f"`{meta.get('command', '?')}` at {meta.get('git', '?')}; "
          f"{meta.get('cpu', '?')}, {meta.get('cpus', '?')} CPUs, "
          f"{meta.get('host_mem', '?')}; {meta.get('qemu_version', '?')} "
          f"(TCG); guest {meta.get('guest_kernel', '?')}, 1 vCPU; "
          f"downtime-limit {meta.get('downtime_limit_ms', '?')} ms. "
          "Cells: median (min–max) over the rounds whose integrity checks "
          "passed.", ""]
    if kvm:
        md += ["### Migrations", "", migration_table(rows, "kvm"), ""]
    if grows:
        md += ["### Guest-side cost (self-test transport, no host)", "",
               gc_table(grows), ""]
    if kvm or grows:
        md += ["### Targets (issue 4), from the medians above", "",
               targets(rows, grows), ""]
    if xen:
        x = meta.get("xen", {})
        md += ["### Xen: `xl migrate` of a PV domU (tests/xen/run-migrate)",
               "",
               f"`{x.get('command', '?')}`, {x.get('rounds', '?')} rounds "
               f"interleaved in one boot of Xen ({x.get('cases', '?')}, "
               f"a fresh domU per migration), "
               f"{'%d min' % round(x['elapsed_s'] / 60) if 'elapsed_s' in x else '?'}; "
               f"Xen 4.17 under QEMU TCG (`-cpu {x.get('cpu', '?')}`, nested: "
               f"times are indicative only), dom0 1 vCPU, domU "
               f"{x.get('domu_mib', '?')} MiB, 1 vCPU; run-migrate's checks "
               f"{ {True: 'passed', False: 'FAILED'}.get(x.get('passed'), '?')}. "
               "Bytes are counted in the "
               "`xl migrate` pipe; stream s = first to last byte, xl migrate "
               "s = the whole command in dom0.", "",
               migration_table(rows, "xen"), "", xen_ratios(rows), ""]
    md += ["### Integrity", "", failures(recs), ""]
    md.append(plots(out, rows, grows))
    text = "\n".join(md) + "\n"
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(text)
    return text


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    print(render(sys.argv[1]))
