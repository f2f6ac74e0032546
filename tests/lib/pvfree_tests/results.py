# SPDX-License-Identifier: MIT
"""The one result format of pvfree's tests and benchmarks: JSON lines, one
object per thing measured or checked, written as it finishes so that a run
that dies half-way still leaves its results.

Every record has
  suite    kvm, smoke, xen or bench (the program that wrote it)
  kind     migration, guest-cost or smoke
  name     the scenario, case or measurement
  status   "ok" or "FAILED"
  failure  why it is not ok ("" when ok)
Migrations (kind migration, KVM and Xen alike) also have
  hv        kvm or xen
  system    what was compared: A/B/C (no device, balloon, pvfree) for KVM,
            unpatched/pvfree/nodriver (libxenguest, module) for Xen
  scenario  idle, post-workload, fragmented, writing, ...
  link      loopback or 10g (KVM), pipe (Xen: xl migrate to localhost)
  mem_mib   guest size
  round     benchmark round (1 in the tests)
  bytes total_ms downtime_ms skipped snapshot_us lock_hold_us mismatches
            where measured (None where not)
and whatever else the writer measured (report.py ignores what it does not
know)."""

import json
import os

FAILED = "FAILED"


def record(suite, kind, name, failures, **fields):
    """A result record; FAILURES: the list of what went wrong (empty: ok)."""
    rec = {"suite": suite, "kind": kind, "name": name,
           "status": FAILED if failures else "ok",
           "failure": "; ".join(failures)}
    rec.update(fields)
    return rec


class Writer:
    """Appends records to PATH (None: keeps them only in .records)."""

    def __init__(self, path=None):
        self.path = path
        self.records = []
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            open(path, "w").close()

    def write(self, rec):
        self.records.append(rec)
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(rec, default=str, sort_keys=True) + "\n")
        return rec


def kib(b):
    """Bytes B as whole KiB with thousands separators, "-" if unknown."""
    return "-" if b is None else f"{b / 1024:,.0f}"


def print_outcome(r, summary, detail=""):
    """Print the PASS line of scenario result R (SUMMARY, then DETAIL) or
    its FAIL line (its failures, DETAIL and where its logs are); returns
    whether it passed."""
    took = f"{r['elapsed_s']:.0f} s"
    if r["ok"]:
        print(f"PASS {r['name']}: {summary}{detail} [{took}]", flush=True)
    else:
        print(f"FAIL {r['name']}: {'; '.join(r['failures'])}{detail} "
              f"[{took}, logs {r.get('workdir', '-')}]", flush=True)
    return r["ok"]


def read(path):
    """The records of PATH, [] if there is no such file."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
