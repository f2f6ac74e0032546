#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Tables, target checks and plots of a pvfree benchmark run.

Reads RUNDIR/results.csv (one row per migration), RUNDIR/guest-cost.csv
(one row per self-test snapshot), RUNDIR/xen-results.csv (one row per
`xl migrate' of the Xen part) and RUNDIR/meta.json; writes RUNDIR/table.md
and, with gnuplot, RUNDIR/transferred.png, RUNDIR/total-time.png,
RUNDIR/snapshot.png and RUNDIR/xen.png (their data and scripts as *.dat /
plots.gp next to them).

usage: tests/bench/report.py RUNDIR      (re-render a run)
"""

import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys

MIG_FIELDS = [
    "round", "size_gib", "system", "device", "scenario", "link", "step",
    "status", "total_ms", "downtime_ms", "setup_ms", "transferred",
    "normal_pages", "zero_pages", "skipped", "passes", "mbps",
    "precopy_bytes", "downtime_bytes", "snapshot_us",
    "lock_hold_us", "pv_status", "pv_skipped", "pv_wait_ms", "entries",
    "batches", "pcp_frames", "src_cpu_s", "dst_cpu_s", "dst_rss_mib",
    "dst_ram_rss_mib", "memfree_mib", "boot_s",
    "dirtied_mib", "kept_mib", "hold_mib", "writer_mib", "prepare_s",
    "mismatches", "failure"]
GC_FIELDS = [
    "size_gib", "condition", "request", "status", "memfree_mib",
    "held_pages", "free_frames", "snapshot_us", "lock_hold_us", "entries",
    "batches", "pcp_frames", "failure"]
XEN_FIELDS = [
    "round", "index", "case", "system", "scenario", "status", "rc", "bytes",
    "stream_s", "total_s", "skipped", "not_sent_mib", "answer_ms",
    "snapshot_us", "lock_hold_us", "guest_free_frames", "guest_status",
    "hold_pages", "hold_mismatches", "fragment_pages",
    "fragment_mismatches", "memfree_kb", "dirtied_mib", "ready_s", "failure"]
SYSNAME = {"A": "A none", "B": "B balloon", "C": "C pvfree"}
# tests/xen/run-migrate's cases: (system, scenario)
XEN_CASES = {"unpatched": ("unpatched", "idle"),
             "idle": ("pvfree", "idle"),
             "post-workload": ("pvfree", "post-workload"),
             "fragmented": ("pvfree", "fragmented"),
             "nodriver": ("nodriver", "idle")}
XEN_SYSTEMS = ["unpatched", "pvfree", "nodriver"]
XEN_SYSNAME = {"unpatched": "Xen unpatched libxenguest (Debian)",
               "pvfree": "Xen pvfree libxenguest",
               "nodriver": "Xen pvfree libxenguest, domU without module"}
SCEN_ORDER = ["idle", "post-workload", "fragmented", "writing"]
LINK_ORDER = ["loopback", "10g"]
MIB = 1 << 20


def write_csv(path, rows, fields):
    with open(path + ".tmp", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    os.rename(path + ".tmp", path)


def read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


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

    top = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    rev = cmd("git", "-C", top, "rev-parse", "--short", "HEAD")
    # uncommitted changes to what the measurement runs
    if cmd("git", "-C", top, "status", "--porcelain", "--", "tests/bench",
           "tests/kvm", "tests/guest", "guest", "hv-kvm", "host", "include"):
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


def groups(rows):
    """{(scenario, link, size): {system: [ok rows]}} and all rows likewise."""
    ok, every = {}, {}
    for r in rows:
        key = (r["scenario"], r["link"], int(r["size_gib"]))
        every.setdefault(key, {}).setdefault(r["system"], []).append(r)
        if r["status"] == "ok":
            ok.setdefault(key, {}).setdefault(r["system"], [])
            ok[key][r["system"]].append(r)
    order = sorted(every, key=lambda k: (SCEN_ORDER.index(k[0])
                                         if k[0] in SCEN_ORDER else 9,
                                         LINK_ORDER.index(k[1])
                                         if k[1] in LINK_ORDER else 9, k[2]))
    return order, ok, every


# ---- Markdown --------------------------------------------------------------

def mig_table(rows):
    order, ok, every = groups(rows)
    out = ["| scenario | link | GiB | system | ok | total ms | downtime ms "
           "| transferred MiB | pages skipped | passes | snapshot ms "
           "| lock hold µs | src CPU s | dst RSS MiB | dst guest-RAM RSS MiB |",
           "|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for key in order:
        scen, link, size = key
        for sysid in sorted(every[key]):
            rs = ok.get(key, {}).get(sysid, [])
            n = len(every[key][sysid])
            okcell = f"{len(rs)}/{n}" if len(rs) == n else \
                f"**{len(rs)}/{n} FAILED {n - len(rs)}**"
            snap = stat(rs, "snapshot_us", 1e-3) if sysid == "C" else None
            hold = stat(rs, "lock_hold_us") if sysid == "C" else None
            out.append(
                f"| {scen} | {link} | {size} | {SYSNAME.get(sysid, sysid)} "
                f"| {okcell} | {fmt(stat(rs, 'total_ms'))} "
                f"| {fmt(stat(rs, 'downtime_ms'))} "
                f"| {fmt(stat(rs, 'transferred', 1 / MIB))} "
                f"| {fmt(stat(rs, 'skipped'))} | {fmt(stat(rs, 'passes'))} "
                f"| {fmt(snap, 1)} | {fmt(hold)} "
                f"| {fmt(stat(rs, 'src_cpu_s'), 1)} "
                f"| {fmt(stat(rs, 'dst_rss_mib'))} "
                f"| {fmt(stat(rs, 'dst_ram_rss_mib'))} |")
    return "\n".join(out)


def gc_table(grows):
    by = {}
    for r in grows:
        if r.get("condition") in (None, "", "-"):
            continue
        by.setdefault((int(r["size_gib"]), r["condition"]), []).append(r)
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
    order, okg, _ = groups(rows)
    lines = ["| target | where | value | limit | |", "|---|---|--:|--:|---|"]

    def m(key, sysid, field, scale=1.0):
        return med(stat(okg.get(key, {}).get(sysid, []), field, scale))

    for (scen, link, size) in order:
        idle = ("idle", link, size)
        key = (scen, link, size)
        where = f"{size} GiB, {link}"
        if scen == "post-workload":
            ct, it = m(key, "C", "transferred"), m(idle, "C", "transferred")
            if ct and it:
                lines.append(f"| post-workload bytes ≤ 1.1 × idle (C) | {where} "
                             f"| {ct / it:.2f} × | 1.1 × | {verdict(ct <= 1.1 * it)} |")
            ct, it = m(key, "C", "total_ms"), m(idle, "C", "total_ms")
            if ct and it:
                lines.append(f"| post-workload time ≤ 1.25 × idle (C) | {where} "
                             f"| {ct / it:.2f} × | 1.25 × | {verdict(ct <= 1.25 * it)} |")
            bt, ct = m(key, "B", "transferred"), m(key, "C", "transferred")
            if bt and ct:
                lines.append(f"| post-workload bytes B / C ≥ 4 | {where} "
                             f"| {bt / ct:.1f} × | 4 × | {verdict(bt >= 4 * ct)} |")
            bt, ct = m(key, "B", "total_ms"), m(key, "C", "total_ms")
            if bt and ct:
                lines.append(f"| post-workload time B / C ≥ 2 | {where} "
                             f"| {bt / ct:.1f} × | 2 × | {verdict(bt >= 2 * ct)} |")
            free = m(key, "C", "memfree_mib")
            for field, what in (("dst_ram_rss_mib", "guest-RAM RSS"),
                                ("dst_rss_mib", "process RSS")):
                rss = m(key, "C", field)
                if rss and free is not None:
                    inuse = size * 1024 - free
                    lines.append(f"| dst {what} ≤ 1.2 × in-use memory (C) "
                                 f"| {where} | {rss:,.0f} MiB / {inuse:,.0f} "
                                 f"MiB = {rss / inuse:.2f} × | 1.2 × "
                                 f"| {verdict(rss <= 1.2 * inuse)} |")
        if scen == "fragmented":
            ct, it = m(key, "C", "transferred"), m(idle, "C", "transferred")
            kept = m(key, "C", "kept_mib")
            if ct and it and kept:
                lim = it + kept * MIB
                lines.append(f"| fragmented bytes ≤ 1.1 × (idle + kept) (C) "
                             f"| {where} | {ct / lim:.2f} × | 1.1 × "
                             f"| {verdict(ct <= 1.1 * lim)} |")
            bt, ct = m(key, "B", "transferred"), m(key, "C", "transferred")
            if bt and ct:
                lines.append(f"| fragmented bytes B / C (\"several times\") "
                             f"| {where} | {bt / ct:.1f} × | ≥ 3 × "
                             f"| {verdict(bt >= 3 * ct)} |")
    # guest snapshot: migrations and self-test
    for (scen, link, size) in order:
        key = (scen, link, size)
        hold = stat(okg.get(key, {}).get("C", []), "lock_hold_us")
        if hold:
            lines.append(f"| lock hold ≤ 1000 µs (C, max of runs) "
                         f"| {scen}, {size} GiB, {link} | {hold[2]:,.0f} µs "
                         f"| 1000 µs | {verdict(hold[2] <= 1000)} |")
        if scen == "idle":
            snap = stat(okg.get(key, {}).get("C", []), "snapshot_us", 1e-3)
            if snap:
                lines.append(f"| snapshot ≤ 10 ms/GiB (C, idle) "
                             f"| {size} GiB, {link} | {snap[0] / size:.1f} "
                             f"ms/GiB | 10 | {verdict(snap[0] <= 10 * size)} |")
    by = {}
    for r in grows:
        if r.get("status") == "ok":
            by.setdefault((int(r["size_gib"]), r["condition"]), []).append(r)
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


def failures(rows, grows, xrows=()):
    bad = [r for r in rows + grows + list(xrows) if r.get("status") != "ok"]
    if not bad:
        return "No FAILED rows."
    out = [f"{len(bad)} FAILED rows (left out of the medians):", ""]
    for r in bad[:40]:
        where = (f"Xen r{r.get('round')} case {r.get('case')}"
                 if "case" in r else
                 f"r{r.get('round')} {r.get('size_gib')} GiB "
                 f"{r.get('system')} {r.get('scenario')}/{r.get('link')}"
                 if "system" in r else
                 f"guest cost {r.get('size_gib')} GiB {r.get('condition')}")
        out.append(f"- {where}: {r.get('failure') or '?'}")
    return "\n".join(out)


# ---- Xen (tests/xen/run-migrate's cases) --------------------------------

def xen_groups(xrows):
    """[(scenario, system)] in table order, {key: ok rows}, {key: rows}."""
    ok, every = {}, {}
    for r in xrows:
        key = (r["scenario"], r["system"])
        every.setdefault(key, []).append(r)
        if r["status"] == "ok":
            ok.setdefault(key, []).append(r)
    order = sorted(every, key=lambda k: (
        SCEN_ORDER.index(k[0]) if k[0] in SCEN_ORDER else 9,
        XEN_SYSTEMS.index(k[1]) if k[1] in XEN_SYSTEMS else 9))
    return order, ok, every


def xen_table(xrows):
    order, ok, every = xen_groups(xrows)
    out = ["| scenario | system | ok | MiB in the stream | stream s | xl migrate s "
           "| pfns skipped | MiB not sent | guest answer ms | snapshot ms "
           "| lock hold µs | pages verified on the destination |",
           "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for key in order:
        scen, sysid = key
        rs = ok.get(key, [])
        n = len(every[key])
        okcell = f"{len(rs)}/{n}" if len(rs) == n else \
            f"**{len(rs)}/{n} FAILED {n - len(rs)}**"
        pv = sysid == "pvfree"
        pages = stat([{"p": (num(r.get("hold_pages")) or 0) +
                       (num(r.get("fragment_pages")) or 0)} for r in rs], "p")
        mis = sum((num(r.get("hold_mismatches")) or 0) +
                  (num(r.get("fragment_mismatches")) or 0) for r in rs)
        out.append(
            f"| {scen} | {XEN_SYSNAME.get(sysid, sysid)} | {okcell} "
            f"| {fmt(stat(rs, 'bytes', 1 / MIB))} "
            f"| {fmt(stat(rs, 'stream_s'), 1)} | {fmt(stat(rs, 'total_s'), 1)} "
            f"| {fmt(stat(rs, 'skipped'))} "
            f"| {fmt(stat(rs, 'not_sent_mib')) if pv else '-'} "
            f"| {fmt(stat(rs, 'answer_ms')) if pv else '-'} "
            f"| {fmt(stat(rs, 'snapshot_us', 1e-3), 1) if pv else '-'} "
            f"| {fmt(stat(rs, 'lock_hold_us')) if pv else '-'} "
            f"| {fmt(pages)}, {mis:.0f} mismatches |")
    return "\n".join(out)


def xen_ratios(xrows):
    """Bytes and times relative to the unpatched saver, and the issue-5
    target (post-workload bytes <= 1.25 x idle), from the medians."""
    _, ok, _ = xen_groups(xrows)

    def m(scen, sysid, field):
        return med(stat(ok.get((scen, sysid), []), field))

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
        t, tb = m(scen, "pvfree", "total_s"), m("idle", "unpatched", "total_s")
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


KVM_SERIES = [("A: no device", "#999999"),
              ("B: virtio-balloon free page hints", "#e69f00"),
              ("C: pvfree", "#0072b2")]
XEN_COLOUR = {"unpatched": "#999999", "pvfree": "#0072b2",
              "nodriver": "#cc79a7"}


def plots(out, rows, grows, xrows=()):
    gp = shutil.which("gnuplot")
    if not gp:
        return "gnuplot not found (scripts/setup-deps.sh bench): no plots"
    script = ["set style fill solid 0.8 border -1", "set grid ytics",
              "set xtics nomirror", "set bars 0.5", "set bmargin 4"]
    parts = []
    order, ok, _ = groups(rows)
    links = [l for l in LINK_ORDER if any(k[1] == l for k in order)]
    for field, scale, name, ylabel, title in (
            ("transferred", 1 / MIB, "transferred", "MiB sent",
             "Transferred bytes (median, min–max)"),
            ("total_ms", 1e-3, "total-time", "seconds",
             "Total migration time (median, min–max)")):
        panels = []
        for link in links:
            cells = [(f"{k[0]}\\n{k[2]} GiB", ok.get(k, {}))
                     for k in order if k[1] == link]
            panels.append((link, ylabel, _dat(
                os.path.join(out, f"{name}-{link}.dat"), cells, "ABC",
                field, scale)))
        if panels:
            parts += _hist(name, f"{title}, TCG guests, same QEMU", panels,
                           KVM_SERIES)
    if xrows:
        xorder, xok, _ = xen_groups(xrows)
        series = [s for s in XEN_SYSTEMS if any(k[1] == s for k in xorder)]
        scens = [sc for sc in SCEN_ORDER if any(k[0] == sc for k in xorder)]
        cells = [(sc, {s: xok.get((sc, s), []) for s in series})
                 for sc in scens]
        panels = [(t, yl, _dat(os.path.join(out, f"xen-{f}.dat"), cells,
                               series, f, sc))
                  for f, sc, t, yl in (
                      ("bytes", 1 / MIB, "bytes in the xl migrate stream",
                       "MiB"),
                      ("total_s", 1, "xl migrate time (nested: indicative "
                       "only)", "seconds"))]
        parts += _hist("xen", "Xen 4.17 under QEMU TCG: xl migrate of a PV "
                       "domU (median, min–max)", panels,
                       [(XEN_SYSNAME[s], XEN_COLOUR[s]) for s in series])
    # snapshot time against guest size
    by = {}
    for r in grows:
        if r.get("status") == "ok":
            by.setdefault((int(r["size_gib"]), r["condition"]), []).append(r)
    mig = {}
    for r in rows:
        if r["status"] == "ok" and r["system"] == "C" and \
                r["scenario"] in ("idle", "post-workload", "fragmented"):
            mig.setdefault((int(r["size_gib"]), r["scenario"]), []).append(r)
    if by or mig:
        with open(os.path.join(out, "snapshot.dat"), "w") as f:
            for cond in ("contiguous", "order-0"):
                f.write(f"# self-test {cond}: GiB snap_ms min max "
                        f"hold_us min max\n")
                for size in sorted({k[0] for k in by if k[1] == cond}):
                    s = stat(by[(size, cond)], "snapshot_us", 1e-3)
                    hd = stat(by[(size, cond)], "lock_hold_us")
                    f.write(f"{size} {s[0]} {s[1]} {s[2]} {hd[0]} {hd[1]} "
                            f"{hd[2]}\n")
                f.write("\n\n")
            for scen in ("idle", "post-workload", "fragmented"):
                f.write(f"# migration C {scen}\n")
                for size in sorted({k[0] for k in mig if k[1] == scen}):
                    s = stat(mig[(size, scen)], "snapshot_us", 1e-3)
                    hd = stat(mig[(size, scen)], "lock_hold_us")
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
    rows = read_csv(os.path.join(out, "results.csv"))
    grows = read_csv(os.path.join(out, "guest-cost.csv"))
    xrows = read_csv(os.path.join(out, "xen-results.csv"))
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
    if rows:
        md += ["### Migrations", "", mig_table(rows), ""]
    if grows:
        md += ["### Guest-side cost (self-test transport, no host)", "",
               gc_table(grows), ""]
    if rows or grows:
        md += ["### Targets (issue 4), from the medians above", "",
               targets(rows, grows), ""]
    if xrows:
        x = meta.get("xen", {})
        md += ["### Xen: `xl migrate` of a PV domU (tests/xen/run-migrate)",
               "",
               f"`{x.get('command', '?')}`, {x.get('rounds', '?')} rounds "
               f"interleaved in one boot of Xen ({x.get('cases', '?')}, "
               f"a fresh domU per migration), "
               f"{'%d min' % round(x['elapsed_s'] / 60) if 'elapsed_s' in x else '?'}; "
               f"Xen 4.17 under QEMU TCG (`-cpu {x.get('cpu', '?')}`, nested: "
               f"times are indicative only), dom0 1 vCPU, domU "
               f"{x.get('domu_mib', '?')} MiB, 1 vCPU; run-migrate exit "
               f"status {x.get('rc', '?')}. Bytes are counted in the "
               "`xl migrate` pipe; stream s = first to last byte, xl migrate "
               "s = the whole command in dom0.", "",
               xen_table(xrows), "", xen_ratios(xrows), ""]
    md += ["### Integrity", "", failures(rows, grows, xrows), ""]
    md.append(plots(out, rows, grows, xrows))
    text = "\n".join(md) + "\n"
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(text)
    return text


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    print(render(sys.argv[1]))
