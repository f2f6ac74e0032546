// SPDX-License-Identifier: MIT
/*
 * zerocheck MIB: fault in MIB of private anonymous memory for writing
 * (MAP_POPULATE) without writing it, then count the bytes that are not
 * zero and print
 *   ZEROCHECK pages=N nonzero_pages=P nonzero_bytes=B first_byte=0xXX
 * Fresh anonymous pages must read as zero.  In a guest booted with
 * init_on_free=1 the kernel does not clear them at allocation (it relies
 * on free pages being zero already), so this reads what the guest's free
 * pages really hold, e.g. after a migration that did not send them.
 * Exit status 0 if every byte is zero, 1 if not, 2 on error.
 *
 * Copyright (c) 2026 The pvfree authors
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	unsigned long long mib, len, i, pages, nzp = 0, nzb = 0;
	long psz = sysconf(_SC_PAGESIZE);
	int first = -1;
	uint8_t *p;

	if (argc != 2 || !(mib = strtoull(argv[1], NULL, 0))) {
		fprintf(stderr, "usage: zerocheck MIB\n");
		return 2;
	}
	len = mib << 20;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (p == MAP_FAILED) {
		perror("zerocheck: mmap");
		return 2;
	}
	pages = len / psz;
	for (i = 0; i < pages; i++) {
		const uint8_t *pg = p + i * psz;
		unsigned long long n = 0;
		long j;

		for (j = 0; j < psz; j++) {
			if (pg[j]) {
				n++;
				if (first < 0)
					first = pg[j];
			}
		}
		if (n)
			nzp++;
		nzb += n;
	}
	printf("ZEROCHECK pages=%llu nonzero_pages=%llu nonzero_bytes=%llu first_byte=%#x\n",
	       pages, nzp, nzb, first < 0 ? 0 : first);
	return nzb ? 1 : 0;
}
