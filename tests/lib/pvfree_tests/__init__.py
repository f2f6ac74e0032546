# SPDX-License-Identifier: MIT
"""pvfree's test harness: builds guest images, boots guests under QEMU TCG
(KVM scenarios, guest and QEMU smoke tests, Xen inside QEMU), migrates
them, verifies them on the destination and writes one JSON-lines result
format (results.py) that report.py reads.

Run its programs as modules with tests/lib on PYTHONPATH, as the wrappers
in tests/kvm, tests/xen and tests/bench do:

  kvm              make kvm-test: the migration scenarios
  smoke            make -C guest smoke (guest) and the QEMU smoke test (qemu)
  xen              make xen-test: Xen 4.17 under QEMU TCG, xl migrate
  demo             make demo
  bench, report    make bench and its report
  hold_contention  lock holds under host CPU contention

Stdlib only (Debian's /usr/bin/python3)."""

import os
import sys

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..",
                                   ".."))
CACHE = os.environ.get("PVFREE_CACHE") or os.path.expanduser("~/.cache/pvfree")


class TestFailure(Exception):
    """A check failed or a guest or QEMU did not do what it should."""


def log(msg):
    print(msg, flush=True)


def err(msg):
    print(msg, file=sys.stderr, flush=True)


def scratch():
    """Where logs go ($PVFREE_SCRATCH), read at call time so that a program
    can pick its own default before it starts anything."""
    return os.environ.get("PVFREE_SCRATCH", "/tmp/pvfree-tests")


def select(todo, only, listing):
    """The tests of TODO (things with .name and .describe()) that --only
    ONLY names (all if None); with LISTING (--list) print them instead and
    return []."""
    if listing:
        for t in todo:
            print(f"{t.name:<20} {t.describe()}")
        return []
    if not only:
        return todo
    names = only.split(",")
    unknown = set(names) - {t.name for t in todo}
    if unknown:
        err(f"unknown test(s): {', '.join(sorted(unknown))}")
        sys.exit(2)
    return [t for t in todo if t.name in names]
