// SPDX-License-Identifier: MIT
/*
 * pvfree-workload: memory workloads run inside the test guests.
 *
 *   pvfree-workload hold MIB [opts]      fill MIB with checksummed pages, keep
 *                                        them, rewrite a slice with new
 *                                        generations until told to verify
 *   pvfree-workload fragment MIB [opts]  like hold, but free every other page
 *                                        (order-0 holes in the buddy allocator)
 *   pvfree-workload dirty MIB            touch MIB with non-zero data and exit
 *   pvfree-workload churn [opts]         mmap/write/check/munmap in a loop
 *   pvfree-workload files DIR PRIME_MIB [opts]
 *                                        write and drop PRIME_MIB of page
 *                                        cache, then create/check/delete
 *                                        checksummed files in DIR in a loop
 *   pvfree-workload verify PIDFILE RESULT [TIMEOUT_S]
 *                                        signal a daemon (SIGUSR1) and wait for
 *                                        its result line; rc 0 iff it is clean
 *   pvfree-workload stop PIDFILE         SIGTERM a daemon and wait for it
 *
 * Options for hold/fragment/churn:
 *   -d           daemonize once ready (parent prints READY and exits 0)
 *   -p PIDFILE   write the daemon's pid
 *   -r RESULT    where the daemon writes its VERIFY/CHURN line
 *   -w MIB       writer slice (hold/fragment; default 4, 0 = no writer)
 *   -s SEED      pattern seed
 *   -m MIB       churn: most memory held at once (default 64)
 *
 * SIGUSR2 (hold/fragment) zeroes one held page: a negative control for the
 * harness, whose verify must then report exactly one mismatch.
 *
 * On SIGUSR1 a daemon stops writing, checks every page it holds and writes
 * "VERIFY pages=N mismatches=M ..." (churn: "CHURN rounds=... mismatches=M")
 * to RESULT.  It keeps holding its memory afterwards, so a later SIGUSR1
 * verifies again; SIGTERM ends it.
 *
 * Copyright (c) 2026 The pvfree authors
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE		4096UL
#define WORDS		(PAGE / 8)
#define PAGE_MAGIC	0x7076667265655047ULL	/* "GPeerfvp" */

static volatile sig_atomic_t got_usr1, got_usr2, got_term;
static volatile int stop_writer;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		got_usr1 = 1;
	else if (sig == SIGUSR2)
		got_usr2 = 1;
	else
		got_term = 1;
}

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

/* Page layout: magic^idx, idx, gen, seed, pattern..., checksum. */
static void fill_page(uint64_t *p, uint64_t idx, uint64_t gen, uint64_t seed)
{
	uint64_t x = mix(seed ^ (idx * 0x9e3779b97f4a7c15ULL) ^ (gen << 40)) | 1;
	uint64_t sum = 0;
	size_t i;

	p[0] = PAGE_MAGIC ^ idx;
	p[1] = idx;
	p[2] = gen;
	p[3] = seed;
	for (i = 4; i < WORDS - 1; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = x;
	}
	for (i = 0; i < WORDS - 1; i++)
		sum = (sum + p[i]) * 31 + (p[i] >> 29);
	p[WORDS - 1] = sum;
}

/* 0 if the page is exactly what fill_page(idx, gen, seed) wrote. */
static int check_page(const uint64_t *p, uint64_t idx, uint64_t gen,
		      uint64_t seed)
{
	static uint64_t ref[WORDS];

	fill_page(ref, idx, gen, seed);
	return memcmp(p, ref, PAGE) != 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *map_anon(size_t len, int nohuge)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		fprintf(stderr, "pvfree-workload: mmap %zu: %s\n", len,
			strerror(errno));
		exit(2);
	}
	if (nohuge)
		madvise(p, len, MADV_NOHUGEPAGE);
	return p;
}

static void write_result(const char *path, const char *line)
{
	char tmp[512];
	int fd;

	if (!path) {
		printf("%s\n", line);
		fflush(stdout);
		return;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return;
	if (write(fd, line, strlen(line)) < 0 || write(fd, "\n", 1) < 0)
		perror("write");
	fsync(fd);
	close(fd);
	rename(tmp, path);
}

struct opts {
	uint64_t mib;
	uint64_t writer_mib;
	uint64_t churn_max_mib;
	uint64_t seed;
	int daemon;
	const char *pidfile;
	const char *result;
};

/* Fork; the parent prints READY and exits, the child carries on. */
static void daemonize(const struct opts *o, const char *ready)
{
	pid_t pid;
	int fd;

	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(2);
	}
	if (pid > 0) {
		if (o->pidfile) {
			FILE *f = fopen(o->pidfile, "w");

			if (f) {
				fprintf(f, "%d\n", pid);
				fclose(f);
			}
		}
		printf("%s pid=%d\n", ready, pid);
		fflush(stdout);
		_exit(0);
	}
	setsid();
	fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		/* keep stderr on the console for fatal messages */
		if (fd > 2)
			close(fd);
	}
}

static void setup_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
}

/* ---- hold / fragment ---------------------------------------------------- */

struct region {
	uint8_t *base;
	uint64_t npages;
	uint64_t *gen;		/* expected generation per page */
	int fragment;		/* odd pages were freed */
	uint64_t seed;
	uint64_t writer_pages;
	volatile uint64_t rewrites;
};

static int held(const struct region *r, uint64_t i)
{
	return !r->fragment || (i % 2) == 0;
}

static void *writer(void *arg)
{
	struct region *r = arg;
	uint64_t i = 0, n = 0;

	while (!stop_writer) {
		if (held(r, i)) {
			uint64_t g = r->gen[i] + 1;

			/* page first, then the record: a stop between the two
			 * is impossible because the flag is only read here */
			fill_page((uint64_t *)(r->base + i * PAGE), i, g,
				  r->seed);
			r->gen[i] = g;
			r->rewrites++;
		}
		i = (i + 1) % r->writer_pages;
		/* ~ a few MiB/s under TCG: dirty, but let migration converge */
		if (++n % 64 == 0)
			usleep(2000);
	}
	return NULL;
}

static void verify_region(struct region *r, const char *result, double t0)
{
	uint64_t i, pages = 0, bad = 0, first_bad = ~0ULL, zero = 0;
	char line[400];

	for (i = 0; i < r->npages; i++) {
		const uint64_t *p;

		if (!held(r, i))
			continue;
		p = (const uint64_t *)(r->base + i * PAGE);
		pages++;
		if (check_page(p, i, r->gen[i], r->seed)) {
			if (!bad)
				first_bad = i;
			bad++;
			if (p[0] == 0 && p[WORDS - 1] == 0)
				zero++;
		}
	}
	snprintf(line, sizeof(line),
		 "VERIFY pages=%llu mismatches=%llu zeroed=%llu first_bad=%lld "
		 "rewrites=%llu uptime_s=%.1f",
		 (unsigned long long)pages, (unsigned long long)bad,
		 (unsigned long long)zero,
		 bad ? (long long)first_bad : -1LL,
		 (unsigned long long)r->rewrites, now_s() - t0);
	write_result(result, line);
}

static int run_hold(const struct opts *o, int fragment)
{
	struct region r;
	pthread_t th;
	sigset_t block, old;
	uint64_t i, freed = 0;
	int have_writer;
	double t0 = now_s();

	memset(&r, 0, sizeof(r));
	r.npages = o->mib * 256;
	r.seed = o->seed;
	r.fragment = fragment;
	r.base = map_anon(r.npages * PAGE, fragment);
	r.gen = map_anon(r.npages * sizeof(uint64_t), 0);
	for (i = 0; i < r.npages; i++) {
		r.gen[i] = 1;
		fill_page((uint64_t *)(r.base + i * PAGE), i, 1, r.seed);
	}
	if (fragment) {
		for (i = 1; i < r.npages; i += 2) {
			if (madvise(r.base + i * PAGE, PAGE, MADV_DONTNEED)) {
				perror("madvise");
				return 2;
			}
			freed++;
		}
	}
	r.writer_pages = o->writer_mib * 256;
	if (r.writer_pages > r.npages)
		r.writer_pages = r.npages;

	setup_signals();
	if (o->daemon) {
		char ready[160];

		snprintf(ready, sizeof(ready),
			 "READY %s pages=%llu freed=%llu fill_s=%.1f",
			 fragment ? "fragment" : "hold",
			 (unsigned long long)r.npages,
			 (unsigned long long)freed, now_s() - t0);
		daemonize(o, ready);
	} else {
		printf("READY pages=%llu freed=%llu\n",
		       (unsigned long long)r.npages,
		       (unsigned long long)freed);
		fflush(stdout);
	}

	/* signals go to this thread only: block them around the writer's
	 * creation, then wait for them with sigsuspend (no lost wake-ups) */
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGUSR2);
	sigprocmask(SIG_BLOCK, &block, &old);
	have_writer = r.writer_pages > 0;
	if (have_writer && pthread_create(&th, NULL, writer, &r)) {
		perror("pthread_create");
		return 2;
	}
	for (;;) {
		if (!got_usr1 && !got_usr2 && !got_term)
			sigsuspend(&old);
		if (got_usr2) {
			/* negative control: damage one held page the way a lost
			 * page would look (zeroed), so verify must count it */
			got_usr2 = 0;
			if (have_writer) {
				stop_writer = 1;
				pthread_join(th, NULL);
				have_writer = 0;
			}
			memset(r.base + (r.npages / 2 & ~1ULL) * PAGE, 0, PAGE);
		}
		if (got_usr1 || got_term) {
			if (have_writer) {
				stop_writer = 1;
				pthread_join(th, NULL);
				have_writer = 0;
			}
		}
		if (got_usr1) {
			got_usr1 = 0;
			verify_region(&r, o->result, t0);
		}
		if (got_term)
			break;
	}
	return 0;
}

/* ---- dirty -------------------------------------------------------------- */

static int run_dirty(const struct opts *o)
{
	uint64_t npages = o->mib * 256, i;
	double t0 = now_s();
	uint8_t *p = map_anon(npages * PAGE, 0);

	/* a few non-zero words per page: enough for the host to have to send
	 * the whole page, cheap enough under TCG */
	for (i = 0; i < npages; i++) {
		uint64_t *w = (uint64_t *)(p + i * PAGE);

		w[0] = PAGE_MAGIC ^ i;
		w[WORDS / 2] = mix(o->seed ^ i) | 1;
		w[WORDS - 1] = i + 1;
	}
	printf("DIRTY pages=%llu s=%.1f\n", (unsigned long long)npages,
	       now_s() - t0);
	fflush(stdout);
	return 0;	/* exit frees it: free memory that is dirty on the host */
}

/* ---- churn -------------------------------------------------------------- */

#define CHURN_SLOTS 64

static int run_churn(const struct opts *o)
{
	struct { uint8_t *p; uint64_t pages, gen; } slot[CHURN_SLOTS];
	uint64_t rounds = 0, mapped = 0, bad = 0, bytes = 0;
	uint64_t max_pages = o->churn_max_mib * 256;
	uint64_t rnd = mix(o->seed) | 1, held_pages = 0;
	double t0 = now_s();
	char line[300];
	int i;

	memset(slot, 0, sizeof(slot));
	setup_signals();
	if (o->daemon)
		daemonize(o, "READY churn");
	while (!got_term) {
		if (got_usr1) {
			got_usr1 = 0;
			snprintf(line, sizeof(line),
				 "CHURN rounds=%llu maps=%llu mib_written=%llu "
				 "mismatches=%llu uptime_s=%.1f",
				 (unsigned long long)rounds,
				 (unsigned long long)mapped,
				 (unsigned long long)(bytes >> 20),
				 (unsigned long long)bad, now_s() - t0);
			write_result(o->result, line);
			/* stop churning once asked for a result */
			pause();
			continue;
		}
		rnd ^= rnd << 13;
		rnd ^= rnd >> 7;
		rnd ^= rnd << 17;
		i = rnd % CHURN_SLOTS;
		if (slot[i].p) {
			uint64_t k;

			for (k = 0; k < slot[i].pages; k++)
				bad += check_page((uint64_t *)(slot[i].p +
							       k * PAGE),
						  k, slot[i].gen, o->seed);
			munmap(slot[i].p, slot[i].pages * PAGE);
			held_pages -= slot[i].pages;
			slot[i].p = NULL;
		} else {
			/* 1 page .. 8 MiB, skewed towards small */
			uint64_t pages = 1 + (rnd >> 20) % (1u << ((rnd >> 8) % 12));
			uint64_t k;

			if (held_pages + pages > max_pages)
				continue;
			slot[i].p = map_anon(pages * PAGE, 0);
			slot[i].pages = pages;
			slot[i].gen = rounds;
			for (k = 0; k < pages; k++)
				fill_page((uint64_t *)(slot[i].p + k * PAGE),
					  k, slot[i].gen, o->seed);
			held_pages += pages;
			bytes += pages * PAGE;
			mapped++;
		}
		rounds++;
	}
	return 0;
}

/* ---- files: page-cache churn ------------------------------------------- */

/*
 * The kernel writes page-cache pages through its own (direct) mapping,
 * not through the task's: this exercises guest writes the host must log
 * even though no user page table changed.  Files live in DIR (tmpfs);
 * each 4 KiB block is a checksummed page (idx = block, gen = file gen).
 */
#define FILE_SLOTS 48

static int file_check(const char *path, uint64_t gen, uint64_t blocks,
		      uint64_t seed)
{
	static uint64_t buf[WORDS];
	uint64_t k;
	int fd = open(path, O_RDONLY), bad = 0;

	if (fd < 0)
		return 1;
	for (k = 0; k < blocks; k++) {
		if (read(fd, buf, PAGE) != (ssize_t)PAGE) {
			bad++;
			break;
		}
		bad += check_page(buf, k, gen, seed);
	}
	close(fd);
	return bad;
}

static int file_write(const char *path, uint64_t gen, uint64_t blocks,
		      uint64_t seed)
{
	static uint64_t buf[WORDS];
	uint64_t k;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (fd < 0)
		return -1;
	for (k = 0; k < blocks; k++) {
		fill_page(buf, k, gen, seed);
		if (write(fd, buf, PAGE) != (ssize_t)PAGE) {
			close(fd);
			return -1;
		}
	}
	close(fd);
	return 0;
}

static int run_files(const struct opts *o, const char *dir)
{
	struct { uint64_t gen, blocks; } slot[FILE_SLOTS];
	uint64_t rounds = 0, written = 0, bad = 0, checked = 0, held = 0;
	uint64_t max_blocks = o->churn_max_mib * 256;
	uint64_t rnd = mix(o->seed ^ 0xf11e) | 1;
	double t0 = now_s();
	char path[300], line[300];
	int i, stopped = 0;

	memset(slot, 0, sizeof(slot));
	mkdir(dir, 0755);
	/* prime: fill the page cache with o->mib MiB, then drop it, so the
	 * free lists hold pages the kernel wrote through its own mapping */
	snprintf(path, sizeof(path), "%s/prime", dir);
	if (o->mib && file_write(path, 1, o->mib * 256, o->seed)) {
		perror("prime");
		return 2;
	}
	unlink(path);
	setup_signals();
	if (o->daemon)
		daemonize(o, "READY files");
	while (!got_term) {
		if (got_usr1) {
			got_usr1 = 0;
			if (!stopped) {
				/* final check of every file still there */
				for (i = 0; i < FILE_SLOTS; i++) {
					if (!slot[i].blocks)
						continue;
					snprintf(path, sizeof(path), "%s/f%d",
						 dir, i);
					bad += file_check(path, slot[i].gen,
							  slot[i].blocks,
							  o->seed);
					checked++;
				}
				stopped = 1;
			}
			snprintf(line, sizeof(line),
				 "FILES rounds=%llu mib_written=%llu "
				 "files_checked=%llu mismatches=%llu "
				 "uptime_s=%.1f",
				 (unsigned long long)rounds,
				 (unsigned long long)(written >> 8),
				 (unsigned long long)checked,
				 (unsigned long long)bad, now_s() - t0);
			write_result(o->result, line);
		}
		if (stopped) {
			pause();
			continue;
		}
		rnd ^= rnd << 13;
		rnd ^= rnd >> 7;
		rnd ^= rnd << 17;
		i = rnd % FILE_SLOTS;
		snprintf(path, sizeof(path), "%s/f%d", dir, i);
		if (slot[i].blocks) {
			bad += file_check(path, slot[i].gen, slot[i].blocks,
					  o->seed);
			checked++;
			unlink(path);
			held -= slot[i].blocks;
			slot[i].blocks = 0;
		} else {
			uint64_t blocks = 1 + (rnd >> 24) % 512;   /* <= 2 MiB */

			if (held + blocks > max_blocks)
				continue;
			slot[i].gen = rounds + 2;
			if (file_write(path, slot[i].gen, blocks, o->seed)) {
				perror("write");
				return 2;
			}
			slot[i].blocks = blocks;
			held += blocks;
			written += blocks;
		}
		rounds++;
	}
	return 0;
}

/* ---- control ------------------------------------------------------------ */

static pid_t read_pid(const char *pidfile)
{
	FILE *f = fopen(pidfile, "r");
	int pid = 0;

	if (!f || fscanf(f, "%d", &pid) != 1) {
		fprintf(stderr, "pvfree-workload: no pid in %s\n", pidfile);
		exit(2);
	}
	fclose(f);
	return pid;
}

static int run_verify(const char *pidfile, const char *result, double timeout)
{
	pid_t pid = read_pid(pidfile);
	double t0 = now_s();
	char line[512];
	FILE *f;

	unlink(result);
	if (kill(pid, SIGUSR1)) {
		fprintf(stderr, "pvfree-workload: kill %d: %s\n", pid,
			strerror(errno));
		return 2;
	}
	while (access(result, R_OK)) {
		if (now_s() - t0 > timeout) {
			fprintf(stderr, "pvfree-workload: no result after %.0f s\n",
				timeout);
			return 3;
		}
		usleep(100000);
	}
	f = fopen(result, "r");
	if (!f || !fgets(line, sizeof(line), f)) {
		fprintf(stderr, "pvfree-workload: cannot read %s\n", result);
		return 2;
	}
	fclose(f);
	fputs(line, stdout);
	return strstr(line, " mismatches=0 ") ? 0 : 1;
}

static int run_stop(const char *pidfile)
{
	pid_t pid = read_pid(pidfile);
	int i;

	kill(pid, SIGTERM);
	for (i = 0; i < 100; i++) {
		if (kill(pid, 0) && errno == ESRCH)
			return 0;
		usleep(100000);
	}
	return 1;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: pvfree-workload hold|fragment MIB [-d] [-p PIDFILE] "
		"[-r RESULT] [-w MIB] [-s SEED]\n"
		"       pvfree-workload dirty MIB [-s SEED]\n"
		"       pvfree-workload churn [-d] [-p PIDFILE] [-r RESULT] "
		"[-m MIB] [-s SEED]\n"
		"       pvfree-workload files DIR PRIME_MIB [-d] [-p PIDFILE] "
		"[-r RESULT] [-m MIB] [-s SEED]\n"
		"       pvfree-workload verify PIDFILE RESULT [TIMEOUT_S]\n"
		"       pvfree-workload stop PIDFILE\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct opts o = { .writer_mib = 4, .churn_max_mib = 64,
			  .seed = 0x5eed };
	const char *mode, *dir = NULL;
	int c;

	if (argc < 2)
		usage();
	mode = argv[1];
	if (!strcmp(mode, "verify")) {
		if (argc < 4)
			usage();
		return run_verify(argv[2], argv[3],
				  argc > 4 ? atof(argv[4]) : 60);
	}
	if (!strcmp(mode, "stop")) {
		if (argc < 3)
			usage();
		return run_stop(argv[2]);
	}
	optind = 2;
	if (!strcmp(mode, "files")) {
		/* files DIR PRIME_MIB */
		if (argc < 4)
			usage();
		dir = argv[2];
		o.mib = strtoull(argv[3], NULL, 0);
		optind = 4;
	} else if (strcmp(mode, "churn")) {
		if (argc < 3)
			usage();
		o.mib = strtoull(argv[2], NULL, 0);
		optind = 3;
	}
	while ((c = getopt(argc, argv, "dp:r:w:s:m:")) != -1) {
		switch (c) {
		case 'd': o.daemon = 1; break;
		case 'p': o.pidfile = optarg; break;
		case 'r': o.result = optarg; break;
		case 'w': o.writer_mib = strtoull(optarg, NULL, 0); break;
		case 's': o.seed = strtoull(optarg, NULL, 0); break;
		case 'm': o.churn_max_mib = strtoull(optarg, NULL, 0); break;
		default: usage();
		}
	}
	if (!strcmp(mode, "hold"))
		return run_hold(&o, 0);
	if (!strcmp(mode, "fragment"))
		return run_hold(&o, 1);
	if (!strcmp(mode, "dirty"))
		return run_dirty(&o);
	if (!strcmp(mode, "churn"))
		return run_churn(&o);
	if (!strcmp(mode, "files"))
		return run_files(&o, dir);
	usage();
	return 2;
}
