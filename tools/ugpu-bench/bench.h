/* SPDX-License-Identifier: MIT */
#ifndef UGPU_BENCH_H
#define UGPU_BENCH_H

#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "tools/common/cli.h"

/* CLOCK_MONOTONIC in nanoseconds: what every benchmark times with. */
static inline uint64_t bench_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* CPU time of the whole process, every thread (the in-process reference
 * device's engines included): what a piece of work costs, much less
 * disturbed by other work on a busy machine than the wall time. */
static inline uint64_t bench_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* qsort() comparator of uint64_t, for percentiles. */
static inline int bench_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Bytes over nanoseconds: GB/s (0 for no time). */
static inline double bench_gbps(uint64_t bytes, uint64_t ns)
{
	return ns ? (double)bytes / (double)ns : 0.0;
}

/* Shared virtual memory's benchmarks (bench_svm.c): @bytes of anonymous
 * memory aligned to 2 MiB (NULL when there is none), and the best of three
 * memcpy()s of @bytes between populated buffers (0 when it failed). */
void *bench_map_2m(size_t bytes);
struct bench_mirror {
	struct sim *sim;
	struct ugpu_context *ctx;
	struct ugpu_device *dev;
	struct ugpu_vm *vm;
	struct ugpu_queue *q;
	bool awake;
};
int bench_mirror_open(struct bench_mirror *m, uint64_t bytes, const char *name);
void bench_mirror_close(struct bench_mirror *m);
/* memcpy of @bytes between two populated buffers, best of 3: wall ns, and
 * the CPU ns of the best run in *@cpu_ns (may be NULL). 0 on failure. */
uint64_t bench_memcpy_ns(size_t bytes, uint64_t *cpu_ns);

/* Each benchmark: argv[0] is its name; returns 0 or non-zero on failure. */
int bench_buddy(int argc, char **argv);
int bench_copy(int argc, char **argv);
int bench_exec(int argc, char **argv);
int bench_suspend(int argc, char **argv);
int bench_rpm(int argc, char **argv);
int bench_svm(int argc, char **argv);
int bench_p2p(int argc, char **argv);
int bench_svm_prefetch(int argc, char **argv);
int bench_svm_race(int argc, char **argv);
int bench_uffd(int argc, char **argv);
/* Not a benchmark: draws one's JSON lines (bench_plot.c). */
int bench_plot(int argc, char **argv);
int bench_daemon(int argc, char **argv);

/*
 * The raw userfaultfd round trip (bench_uffd.c): @n fresh pages of an
 * anonymous area registered for missing faults, and a handler thread (created
 * here, so it inherits the caller's CPU affinity) that answers each fault
 * with UFFDIO_COPY. uffd_raw_touch() reads the next fresh page and returns
 * the fault's round trip in *ns: 0, -ENOSPC (all @n used), -EIO (wrong data).
 */
struct uffd_raw;
int uffd_raw_create(size_t n, struct uffd_raw **out);
int uffd_raw_touch(struct uffd_raw *r, uint64_t *ns);
void uffd_raw_destroy(struct uffd_raw *r);

/*
 * CPU placements of a latency benchmark (bench_uffd.c). Where threads run
 * decides a fault's round trip on a VM: a wake-up that crosses vCPUs costs
 * ~15-20 us here, one on the same vCPU ~3 us; so a latency and its raw
 * baseline are only compared within one placement (docs/runtime-pm.md):
 *   one-cpu   every thread (the measuring one, the driver's, the device
 *             model's, the raw handler) on one CPU
 *   two-cpu   the measuring thread on one CPU, every other thread on another
 *   free      no affinity: wherever the scheduler puts them
 * bench_cpus_init() records the CPUs this process may use (the first two:
 * @a, @b; -1 where there are fewer) and its affinity. Threads inherit the
 * affinity of the thread creating them: bench_place_others() before the
 * device and the raw handler are created, bench_place_self() after, and
 * bench_place_restore() at the end. 0 or -errno.
 */
enum bench_placement { BENCH_ONE_CPU, BENCH_TWO_CPU, BENCH_FREE, BENCH_NPLACEMENTS };
extern const char *const bench_placement_names[BENCH_NPLACEMENTS];
struct bench_cpus {
	int a, b;
	cpu_set_t all;
};
int bench_cpus_init(struct bench_cpus *c);
/* "one-cpu", "two-cpu", "free" or "all" (-1): the placement, or -EINVAL. */
int bench_placement_parse(const char *name);
/* "0", "0+1" or "any", into @buf. */
const char *bench_placement_cpus(const struct bench_cpus *c, enum bench_placement p, char *buf,
				 size_t len);
int bench_place_others(const struct bench_cpus *c, enum bench_placement p);
int bench_place_self(const struct bench_cpus *c, enum bench_placement p);
void bench_place_restore(const struct bench_cpus *c);

#endif
