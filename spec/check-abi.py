#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Check that the tables of spec/*.md agree with include/pvfree/abi.h.

Compiles a tiny C program against abi.h to get the real offsets, sizes and
constant values, then compares them with the layout, status, content,
feature, PCI register and xenstore key tables of the specification; and
feeds the byte-exact example of the core's Appendix A.2 to the host reader
(host/pvfree-reader.c), which must accept it and report the stated runs.
Exit status 0 when everything agrees, 1 otherwise.

Usage: spec/check-abi.py [repo-root]    (needs python3 and a C compiler)
"""
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                       os.path.join(os.path.dirname(__file__), '..'))
SPEC = os.path.join(ROOT, 'spec')

FIELDS = ['magic', 'version', 'header_size', 'guest_features',
          'host_features', 'request_id', 'host_reserved', 'response_id',
          'status', 'content', 'poison', 'reserved0', 'base_pfn',
          'nr_frames', 'nr_extents', 'table_extents', 'free_frames',
          'snapshot_us', 'max_lock_hold_us', 'reserved1', 'guest_reserved',
          'extents']
EXTENT_FIELDS = ['pfn', 'nr_frames']
NUMBERS = ['PVFREE_MAGIC', 'PVFREE_VERSION', 'PVFREE_FRAME_SIZE',
           'PVFREE_HEADER_SIZE', 'PVFREE_HF_ZERO_FILL',
           'PVFREE_HF_POISON_FILL', 'PVFREE_GF_STATS',
           'PVFREE_STATUS_NONE', 'PVFREE_STATUS_OK', 'PVFREE_STATUS_BUSY',
           'PVFREE_STATUS_NO_SPACE', 'PVFREE_STATUS_UNSUPPORTED',
           'PVFREE_STATUS_ABORTED', 'PVFREE_CONTENT_ANY',
           'PVFREE_CONTENT_ZERO', 'PVFREE_CONTENT_POISON',
           'PVFREE_INLINE_EXTENTS', 'PVFREE_MAX_EXTENTS',
           'PVFREE_PCI_VENDOR_ID', 'PVFREE_PCI_DEVICE_ID',
           'PVFREE_PCI_REVISION', 'PVFREE_PCI_BAR', 'PVFREE_PCI_BAR_SIZE',
           'PVFREE_PCI_REG_MAGIC', 'PVFREE_PCI_REG_VERSION',
           'PVFREE_PCI_REG_HEADER_LO', 'PVFREE_PCI_REG_HEADER_HI',
           'PVFREE_PCI_REG_COMMAND', 'PVFREE_PCI_REG_STATUS',
           'PVFREE_PCI_REG_ISR', 'PVFREE_PCI_CMD_REGISTER',
           'PVFREE_PCI_CMD_UNREGISTER', 'PVFREE_PCI_CMD_RESPONSE',
           'PVFREE_PCI_STATUS_REGISTERED', 'PVFREE_PCI_STATUS_REJECTED',
           'PVFREE_PCI_ISR_REQUEST']
STRINGS = ['PVFREE_XS_DIR', 'PVFREE_XS_VERSION', 'PVFREE_XS_HEADER_FRAME',
           'PVFREE_XS_REQUEST', 'PVFREE_XS_RESPONSE']

errors = []


def abi_values():
    src = ['#include <stdio.h>', '#include "pvfree/abi.h"',
           '#define SZ(s, f) sizeof(((struct s *)0)->f)', 'int main(void) {']
    for f in FIELDS:
        src.append('printf("field %s %%zu %%zu\\n", offsetof(struct '
                   'pvfree_header, %s), SZ(pvfree_header, %s));' % (f, f, f))
    for f in EXTENT_FIELDS:
        src.append('printf("extent %s %%zu %%zu\\n", offsetof(struct '
                   'pvfree_extent, %s), SZ(pvfree_extent, %s));' % (f, f, f))
    for n in NUMBERS:
        src.append('printf("num %s %%llu\\n", (unsigned long long)(%s));'
                   % (n, n))
    for s in STRINGS:
        src.append('printf("str %s %%s\\n", %s);' % (s, s))
    src.append('return 0; }')
    with tempfile.TemporaryDirectory() as tmp:
        c = os.path.join(tmp, 'abi.c')
        exe = os.path.join(tmp, 'abi')
        with open(c, 'w') as fh:
            fh.write('\n'.join(src) + '\n')
        cc = os.environ.get('CC', 'cc')
        subprocess.run([cc, '-std=c11', '-I', os.path.join(ROOT, 'include'),
                        c, '-o', exe], check=True)
        out = subprocess.run([exe], check=True, capture_output=True,
                             text=True).stdout
    vals = {}
    for line in out.splitlines():
        kind, name, *rest = line.split()
        if kind in ('field', 'extent'):
            vals[(kind, name)] = (int(rest[0]), int(rest[1]))
        elif kind == 'num':
            vals[name] = int(rest[0])
        else:
            vals[name] = rest[0]
    return vals


def read(name):
    with open(os.path.join(SPEC, name)) as fh:
        return fh.read()


def expect(what, got, want):
    if got != want:
        errors.append('%s: spec says %r, abi.h says %r' % (what, got, want))


def check_core(v, text):
    seen = set()
    for m in re.finditer(r'^\| (0x[0-9a-f]{3}) \| (\d+) \| `([a-z_0-9]+)'
                         r'(?:\[\d+\])?` \|', text, re.M):
        off, size, name = int(m.group(1), 16), int(m.group(2)), m.group(3)
        if ('field', name) not in v:
            errors.append('layout table names unknown field %s' % name)
            continue
        expect('offset/size of ' + name, (off, size), v[('field', name)])
        seen.add(name)
    for f in FIELDS:
        if f not in seen:
            errors.append('layout table lacks field %s' % f)
    for m in re.finditer(r'^\| (0x[0-9a-f]) \| (\d+) \| `([a-z_]+)` \|',
                         text, re.M):
        name = m.group(3)
        expect('extent ' + name, (int(m.group(1), 16), int(m.group(2))),
               v.get(('extent', name)))
    for m in re.finditer(r'^\| (\d+) \| `(PVFREE_STATUS_[A-Z_]+)` \|',
                         text, re.M):
        expect(m.group(2), int(m.group(1)), v[m.group(2)])
    for m in re.finditer(r'^\| `(PVFREE_CONTENT_[A-Z]+)` \| (\d+) \|',
                         text, re.M):
        expect(m.group(1), int(m.group(2)), v[m.group(1)])
    for m in re.finditer(r'^\| (\d+) of `(guest|host)_features` \| '
                         r'`(PVFREE_[GH]F_[A-Z_]+)` \|', text, re.M):
        expect(m.group(3), 1 << int(m.group(1)), v[m.group(3)])
    for name in ('PVFREE_MAGIC', 'PVFREE_INLINE_EXTENTS',
                 'PVFREE_MAX_EXTENTS', 'PVFREE_HEADER_SIZE'):
        for m in re.finditer(r'`%s` = (0x[0-9a-f]+|\d+)' % name, text):
            expect(name, int(m.group(1), 0), v[name])


def check_pci(v, text):
    regs = {}
    for m in re.finditer(r'^\| (0x[0-9a-f]{2}) \| `([A-Z_]+)` \|', text,
                         re.M):
        regs[m.group(2)] = int(m.group(1), 16)
    for r in ('MAGIC', 'VERSION', 'HEADER_LO', 'HEADER_HI', 'COMMAND',
              'STATUS', 'ISR'):
        expect('register ' + r, regs.get(r), v['PVFREE_PCI_REG_' + r])
    for m in re.finditer(r'^\| (\d+) \| `(PVFREE_PCI_CMD_[A-Z]+)` \|', text,
                         re.M):
        expect(m.group(2), int(m.group(1)), v[m.group(2)])
    for m in re.finditer(r'^\| (\d+) \| `(PVFREE_PCI_(?:STATUS|ISR)_[A-Z]+)`'
                         r' \|', text, re.M):
        expect(m.group(2), 1 << int(m.group(1)), v[m.group(2)])
    for name in ('PVFREE_PCI_VENDOR_ID', 'PVFREE_PCI_DEVICE_ID',
                 'PVFREE_PCI_REVISION', 'PVFREE_PCI_BAR',
                 'PVFREE_PCI_BAR_SIZE'):
        m = re.search(r'`%s` = (0x[0-9a-f]+|\d+)' % name, text)
        if not m:
            errors.append('transport-pci.md does not state %s' % name)
        else:
            expect(name, int(m.group(1), 0), v[name])


def check_xs(v, text):
    for m in re.finditer(r'^\| `([a-z/-]+)` \(`(PVFREE_XS_[A-Z_]+)`\) \|',
                         text, re.M):
        expect(m.group(2), m.group(1), v[m.group(2)])
    for s in STRINGS:
        if '`%s`' % s not in text:
            errors.append('transport-xenstore.md does not name %s' % s)


def check_example(text):
    """Feed Appendix A.2's header bytes to host/pvfree-reader.c."""
    reader = os.path.join(ROOT, 'host', 'pvfree-reader.c')
    if not os.path.exists(reader):
        return
    sec = text[text.index('### A.2'):]
    sec = sec[:sec.index('## Appendix B')]
    header = bytearray(4096)
    for m in re.finditer(r'^([0-9a-f]{3}):((?: [0-9a-f]{2}){16})', sec, re.M):
        off = int(m.group(1), 16)
        header[off:off + 16] = bytes(int(b, 16) for b in m.group(2).split())
    bitmap = bytes(int(b, 16) for b in
                   re.search(r'begins `([0-9a-f ]+)`', sec).group(1).split())
    want = [(int(a, 16), int(b)) for a, b in
            re.findall(r'\((0x[0-9a-f]+), (\d+)\)', sec)]
    src = r"""
#include <stdio.h>
#include <string.h>
#include "pvfree-reader.h"
static const unsigned char hdr[4096] = { %s };
static const unsigned char bm[] = { %s };
static int rd(void *o, uint64_t gpa, void *buf, size_t len)
{
    (void)o;
    memset(buf, 0, len);
    if (gpa >= 0x1000000ull && gpa + len <= 0x1001000ull)
        memcpy(buf, hdr + (gpa - 0x1000000ull), len);
    else if (gpa == 0x2000000ull)
        memcpy(buf, bm, sizeof(bm) < len ? sizeof(bm) : len);
    return 0;
}
static int run(void *o, uint64_t pfn, uint64_t n)
{
    (void)o;
    printf("run %%llu %%llu\n", (unsigned long long)pfn,
           (unsigned long long)n);
    return 0;
}
int main(void)
{
    static unsigned char scratch[4 * 4096];
    struct pvfree_ram_range ram = { 0, 0x4000 };
    struct pvfree_reader r = { .read = rd, .ram = &ram, .nr_ram = 1,
        .scratch = scratch, .scratch_size = sizeof(scratch),
        .host_features = PVFREE_HF_ZERO_FILL };
    struct pvfree_response resp;
    struct pvfree_diag d;
    int e = pvfree_read_response(&r, 0x1000000ull, 7, &resp, &d);
    if (!e)
        e = pvfree_for_each_free_run(&r, &resp, run, NULL, &d);
    printf("result %%s\n", pvfree_error_name(e));
    return 0;
}
""" % (', '.join(str(b) for b in header), ', '.join(str(b) for b in bitmap))
    with tempfile.TemporaryDirectory() as tmp:
        c = os.path.join(tmp, 'ex.c')
        exe = os.path.join(tmp, 'ex')
        with open(c, 'w') as fh:
            fh.write(src)
        cc = os.environ.get('CC', 'cc')
        subprocess.run([cc, '-std=c11', '-I', os.path.join(ROOT, 'include'),
                        '-I', os.path.join(ROOT, 'host'), c, reader,
                        os.path.join(ROOT, 'host', 'pvfree-protocol.c'),
                        os.path.join(ROOT, 'host', 'pvfree-diag.c'), '-o',
                        exe], check=True)
        out = subprocess.run([exe], check=True, capture_output=True,
                             text=True).stdout.split('\n')
    runs = [tuple(int(x) for x in l.split()[1:]) for l in out
            if l.startswith('run ')]
    if 'result PVFREE_OK' not in out:
        errors.append('Appendix A.2 example rejected by the reader: %r' % out)
    if runs != want:
        errors.append('Appendix A.2: spec states runs %r, the reader reports '
                      '%r' % (want, runs))


def main():
    v = abi_values()
    check_core(v, read('pvfree-v1.md'))
    check_example(read('pvfree-v1.md'))
    check_pci(v, read('transport-pci.md'))
    check_xs(v, read('transport-xenstore.md'))
    for e in errors:
        print('spec/check-abi: ' + e, file=sys.stderr)
    if not errors:
        print('spec/check-abi: spec tables agree with include/pvfree/abi.h')
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())
