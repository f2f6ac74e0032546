#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Tables, target checks and plots of a pvfree benchmark run.

Reads RUNDIR/results.csv (one row per migration), RUNDIR/guest-cost.csv
(one row per self-test snapshot) and RUNDIR/meta.json; writes
RUNDIR/table.md and, with gnuplot, RUNDIR/transferred.png,
RUNDIR/total-time.png and RUNDIR/snapshot.png (their data and scripts as
*.dat / plots.gp next to them).

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
SYSNAME = {"A": "A none", "B": "B balloon", "C": "C pvfree"}
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


def failures(rows, grows):
    bad = [r for r in rows + grows if r.get("status") != "ok"]
    if not bad:
        return "No FAILED rows."
    out = [f"{len(bad)} FAILED rows (left out of the medians):", ""]
    for r in bad[:40]:
        where = (f"r{r.get('round')} {r.get('size_gib')} GiB "
                 f"{r.get('system')} {r.get('scenario')}/{r.get('link')}"
                 if "system" in r else
                 f"guest cost {r.get('size_gib')} GiB {r.get('condition')}")
        out.append(f"- {where}: {r.get('failure') or '?'}")
    return "\n".join(out)


# ---- plots ---------------------------------------------------------------

def _bars(out, rows, field, scale, name):
    order, ok, _ = groups(rows)
    links = [l for l in LINK_ORDER if any(k[1] == l for k in order)]
    files = []
    for link in links:
        path = os.path.join(out, f"{name}-{link}.dat")
        with open(path, "w") as f:
            f.write("# label  A med min max  B med min max  C med min max\n")
            for key in order:
                if key[1] != link:
                    continue
                cells = [f'"{key[0]}\\n{key[2]} GiB"']
                for sysid in "ABC":
                    s = stat(ok.get(key, {}).get(sysid, []), field, scale)
                    cells += ["0 0 0" if s is None else
                              f"{s[0]:.3f} {s[1]:.3f} {s[2]:.3f}"]
                f.write(" ".join(cells) + "\n")
        files.append((link, os.path.basename(path)))
    return files


def plots(out, rows, grows):
    gp = shutil.which("gnuplot")
    if not gp:
        return "gnuplot not found (scripts/setup-deps.sh bench): no plots"
    script = ["set style fill solid 0.8 border -1", "set grid ytics",
              "set xtics nomirror", "set bars 0.5", "set bmargin 4"]
    parts = []
    for field, scale, name, ylabel, title in (
            ("transferred", 1 / MIB, "transferred", "MiB sent",
             "Transferred bytes (median, min–max)"),
            ("total_ms", 1e-3, "total-time", "seconds",
             "Total migration time (median, min–max)")):
        files = _bars(out, rows, field, scale, name)
        if not files:
            continue
        parts += [f"set terminal pngcairo size 1500,{420 * len(files) + 60} "
                  f"font 'DejaVu Sans,10'",
                  f"set output '{name}.png'",
                  "set style data histogram",
                  "set style histogram errorbars gap 1 lw 1",
                  "set key top left", "set yrange [0:*]",
                  f"set multiplot layout {len(files)},1 title '{title}, "
                  f"TCG guests, same QEMU'"]
        for link, dat in files:
            parts += [f"set title '{link}'", f"set ylabel '{ylabel}'",
                      f"plot '{dat}' using 2:3:4:xtic(1) title 'A: no device' "
                      f"lc rgb '#999999', '' using 5:6:7 title 'B: virtio-balloon "
                      f"free page hints' lc rgb '#e69f00', '' using 8:9:10 "
                      f"title 'C: pvfree' lc rgb '#0072b2'"]
        parts += ["unset multiplot", "set yrange [*:*]"]
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
                                             "total-time.png", "snapshot.png")
                                 if os.path.exists(os.path.join(out, p)))


def render(out):
    rows = read_csv(os.path.join(out, "results.csv"))
    grows = read_csv(os.path.join(out, "guest-cost.csv"))
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
    md += ["### Targets (issue 4), from the medians above", "",
           targets(rows, grows), "", "### Integrity", "",
           failures(rows, grows), ""]
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
