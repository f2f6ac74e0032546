# SPDX-License-Identifier: MIT
"""What the tests look for in a guest's output: kernel-log problems and the
`key: value` / `key=value` lines that the guest tools print."""

import re

# Bad things in a guest's kernel log (the acceptance list of issue 1).
DMESG_BAD = ["Oops", "BUG", "WARNING", "panic", "page allocation failure",
             "memory corruption", "Bad page"]
# The smoke tests also refuse these: a trace without a WARNING line, and
# any error the module itself logs.
DMESG_BAD_SMOKE = [r"Call Trace", r"pvfree.*(error|fail)"]
DMESG_IGNORE = ["Kernel command line:", "panic=", "@@", "taints kernel",
                "module verification failed"]


def dmesg_problems(text, extra=()):
    """The lines of TEXT (a kernel log or console) that have one of
    DMESG_BAD, or match one of the regexes EXTRA, and none of
    DMESG_IGNORE."""
    rx = [re.compile(e) for e in extra]
    bad = []
    for line in text.splitlines():
        if any(i in line for i in DMESG_IGNORE):
            continue
        if any(b in line for b in DMESG_BAD) or any(r.search(line) for r in rx):
            bad.append(line.strip())
    return bad


def parse_kv(text, sep=":"):
    """{key: value} of TEXT's `key: value` lines (debugfs stats, meminfo)."""
    d = {}
    for line in text.splitlines():
        if sep in line:
            k, v = line.split(sep, 1)
            d[k.strip()] = v.strip()
    return d


def parse_fields(line):
    """{key: value} of the `key=value` words of LINE."""
    return dict(re.findall(r"(\S+?)=(\S+)", line))
