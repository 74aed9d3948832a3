/* SPDX-License-Identifier: MIT */
/*
 * ugpu-bench svm-race [--n N]: the race window of shared virtual memory
 * (docs/svm.md, "Taking pages from the CPU without losing a store"): how
 * long a CPU store racing a move into VRAM waits, on the reference device,
 * for each mechanism. One JSON object per line:
 *   {"bench":"svm-race","case":"store_race","mechanism":"move"|"write_protect",
 *    "kib":2048,"n":N,"window_mean_us":A,"window_p50_le_us":B,"window_p99_le_us":C,
 *    "store_wait_p50_us":D,"store_wait_p99_us":E,"store_wait_max_us":F,
 *    "memcpy_us":G,"timeslice_ms":5,"raced":R,"lost":0}
 * Each of N rounds takes a fresh 2 MiB of populated anonymous memory; a
 * writer thread stores into it without pause (every word in turn, each
 * store timed) while a kernel reads it, so its first GPU fault moves the
 * range into VRAM under the writer's feet; the round ends once a store
 * begun after the kernel's end has completed (the range came back).
 *   window_*: the driver's own measure of each move (the histogram
 *     svm_migrate_window_us: pages taken, by UFFDIO_MOVE or write
 *     protection, until the range is in VRAM; a racing store waits at least
 *     that long); the mean is exact, p50/p99 are bucket bounds (powers of
 *     two).
 *   store_wait_*: the longest single store of each round, as the writer
 *     timed it: the move's rest, then the range's way back (which waits
 *     out the 5 ms timeslice since it reached VRAM, so the two sides do not
 *     ping-pong), then the copy back.
 *   memcpy_us: a memcpy of the same 2 MiB in the same run.
 *   raced: rounds whose longest store faulted (took 50 us or more); none
 *     fails the benchmark (it would not have measured a race).
 *   lost: words whose last store is not what the CPU reads at the end of
 *     the round (every word is checked; any loss fails the benchmark).
 * The write-protect pass sets UGPU_SVM_NO_MOVE=1 for its context (the path
 * Linux 6.1 takes). The device's engines are threads of this process: run
 * it on a quiet machine.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <ugpu/device.h>
#include <ugpu/stats.h>
#include <ugpu/vm.h>

#include "tools/ugpu-bench/bench.h"

#define RANGE (2ull << 20)
#define WORDS (RANGE / 8)
#define WAIT_MS 60000
#define ROUND_NS 10000000000ull /* a round that takes 10 s is a failure */
/* A store that took this long faulted (a plain store takes nanoseconds, a
 * userfaultfd round trip microseconds): the round raced a move. */
#define RACED_NS 50000ull

/* The writer's side of a round. Shared between the main thread and the
 * writer: @buf and @round are set by the main thread while the writer
 * waits for a new round (it spins on @round); the counters and @max_ns are
 * the writer's, read by the main thread after the writer set @done. */
struct writer {
	uint64_t *_Atomic buf;
	_Atomic uint64_t round; /* 0: not started; UINT64_MAX: quit */
	_Atomic uint64_t stores; /* stores completed this round */
	_Atomic uint64_t stop_after; /* finish the round after this many stores */
	_Atomic uint64_t done; /* the round the writer finished */
	uint64_t max_ns; /* the longest store of the round */
	uint64_t last; /* the number of stores of the round */
};

static uint64_t init_word(uint64_t round, uint64_t j)
{
	return ~(round << 32 | j);
}

static uint64_t store_value(uint64_t round, uint64_t seq)
{
	return round << 40 | (seq + 1);
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint64_t seen = 0;

	for (;;) {
		uint64_t round = atomic_load(&w->round), seq = 0, max_ns = 0;
		uint64_t *buf;

		if (round == UINT64_MAX)
			return NULL;
		if (round == seen) {
			sched_yield();
			continue;
		}
		buf = atomic_load(&w->buf);
		while (seq < atomic_load_explicit(&w->stop_after, memory_order_relaxed)) {
			uint64_t t0 = bench_ns(), d;

			((volatile uint64_t *)buf)[seq % WORDS] = store_value(round, seq);
			d = bench_ns() - t0;
			if (d > max_ns)
				max_ns = d;
			seq++;
			atomic_store_explicit(&w->stores, seq, memory_order_release);
		}
		w->max_ns = max_ns;
		w->last = seq;
		seen = round;
		atomic_store(&w->done, round);
	}
}

/* Words whose last store is not there. */
static uint64_t lost_words(const uint64_t *buf, uint64_t round, uint64_t stores)
{
	uint64_t lost = 0;

	for (uint64_t j = 0; j < WORDS; j++) {
		uint64_t want = init_word(round, j);

		if (stores > j)
			want = store_value(round, j + (stores - 1 - j) / WORDS * WORDS);
		lost += buf[j] != want;
	}
	return lost;
}

static int window_read(struct ugpu_device *dev, struct ugpu_stat *st)
{
	memset(st, 0, sizeof(*st));
	st->size = sizeof(*st);
	return ugpu_device_stat_find(dev, "svm_migrate_window_us", st);
}

/* The bound of the bucket holding the @pct-th percentile of the
 * observations between @a and @b. */
static uint64_t window_pct_le(const struct ugpu_stat *a, const struct ugpu_stat *b, unsigned pct)
{
	uint64_t n = b->value - a->value;

	for (unsigned i = 0; n && i < b->buckets; i++)
		if ((b->bucket[i] - a->bucket[i]) * 100 >= n * pct)
			return ugpu_stat_bucket_le(b, i);
	return 0;
}

static int race_pass(const char *mechanism, size_t n, double memcpy_us)
{
	struct bench_mirror m;
	struct writer w;
	struct ugpu_stat a, b;
	uint64_t *waits = calloc(n, sizeof(*waits)), lost = 0, raced = 0;
	uint64_t *mem = bench_map_2m(n * RANGE);
	pthread_t th;
	bool started = false;
	int ret;

	memset(&w, 0, sizeof(w)); /* (an initializer of 0 for an _Atomic pointer: clang refuses) */
	if (!waits || !mem) {
		ret = -ENOMEM;
		goto out;
	}
	ret = bench_mirror_open(&m, n * RANGE, "bench-svm-race");
	if (ret)
		goto out;
	ret = window_read(m.dev, &a);
	if (!ret)
		ret = -pthread_create(&th, NULL, writer_main, &w);
	started = !ret;
	for (size_t r = 0; !ret && r < n; r++) {
		uint64_t round = r + 1, *buf = mem + r * WORDS, after, t0;
		struct ugpu_kernel k = { .size = sizeof(k), .op = UGPU_KERNEL_READ_SUM,
					 .va = (uintptr_t)buf, .bytes = RANGE };
		struct ugpu_kernel_result kr = { .size = sizeof(kr) };
		uint64_t fence;

		for (uint64_t j = 0; j < WORDS; j++)
			buf[j] = init_word(round, j);
		atomic_store(&w.stores, 0);
		atomic_store(&w.stop_after, UINT64_MAX);
		atomic_store(&w.buf, buf);
		atomic_store(&w.round, round);
		t0 = bench_ns();
		/* the writer is under way before the kernel starts */
		while (atomic_load(&w.stores) < 4096 && bench_ns() - t0 < ROUND_NS)
			sched_yield();
		ret = ugpu_queue_submit(m.q, &k, &fence);
		if (!ret)
			ret = ugpu_fence_wait(m.q, fence, WAIT_MS, &kr);
		if (!ret && kr.status)
			ret = kr.status;
		/* a store begun after the kernel has completed: the range
		 * came back */
		after = atomic_load(&w.stores) + 2;
		while (!ret && atomic_load(&w.stores) < after && bench_ns() - t0 < ROUND_NS)
			sched_yield();
		if (!ret && atomic_load(&w.stores) < after)
			ret = -ETIMEDOUT;
		atomic_store(&w.stop_after, 0);
		while (atomic_load(&w.done) != round)
			sched_yield();
		if (!ret) {
			waits[r] = w.max_ns;
			lost += lost_words(buf, round, w.last);
		}
	}
	if (started) {
		atomic_store(&w.round, UINT64_MAX);
		pthread_join(th, NULL);
	}
	if (!ret)
		ret = window_read(m.dev, &b);
	if (!ret && b.value - a.value < n) {
		fprintf(stderr, "ugpu-bench svm-race: %" PRIu64 " moves into VRAM for %zu rounds\n",
			b.value - a.value, n);
		ret = -EIO;
	}
	for (size_t r = 0; !ret && r < n; r++)
		raced += waits[r] >= RACED_NS;
	if (!ret && !raced) {
		fprintf(stderr, "ugpu-bench svm-race: no store waited in %zu rounds: nothing raced\n", n);
		ret = -EIO;
	}
	if (!ret && lost) {
		fprintf(stderr, "ugpu-bench svm-race: %" PRIu64 " stores lost\n", lost);
		ret = -EIO;
	}
	if (!ret) {
		qsort(waits, n, sizeof(*waits), bench_cmp_u64);
		printf("{\"bench\":\"svm-race\",\"case\":\"store_race\",\"mechanism\":\"%s\",\"kib\":%llu,\"n\":%zu,"
		       "\"window_mean_us\":%.1f,\"window_p50_le_us\":%" PRIu64 ",\"window_p99_le_us\":%" PRIu64 ","
		       "\"store_wait_p50_us\":%.1f,\"store_wait_p99_us\":%.1f,\"store_wait_max_us\":%.1f,"
		       "\"memcpy_us\":%.1f,\"timeslice_ms\":5,\"raced\":%" PRIu64 ",\"lost\":%" PRIu64 "}\n",
		       mechanism, RANGE >> 10, n, (double)(b.sum - a.sum) / (double)(b.value - a.value),
		       window_pct_le(&a, &b, 50), window_pct_le(&a, &b, 99), waits[n / 2] / 1000.0,
		       waits[(n * 99) / 100] / 1000.0, waits[n - 1] / 1000.0, memcpy_us, raced, lost);
		fflush(stdout);
	}
	bench_mirror_close(&m);
out:
	if (mem)
		munmap(mem, n * RANGE);
	free(waits);
	return ret;
}

int bench_svm_race(int argc, char **argv)
{
	uint64_t n_opt = 50;
	const struct cli_opt opts[] = {
		{ .name = "n", .kind = CLI_UINT, .dst = &n_opt, .arg = "N",
		  .help = "rounds per mechanism (2 MiB each)", .min = 2, .max = 4096 },
		{ 0 },
	};
	const struct cli_cmd cli = {
		.prog = "ugpu-bench svm-race", .args = "",
		.summary = "shared virtual memory: how long a CPU store racing a move into VRAM waits",
		.opts = opts };
	int ret = cli_parse(&cli, argc, argv, NULL, NULL);
	uint64_t mc;

	if (ret != CLI_CONTINUE)
		return ret;
	mc = bench_memcpy_ns(RANGE, NULL);
	ret = race_pass("move", (size_t)n_opt, mc / 1000.0);
	if (!ret) {
		setenv("UGPU_SVM_NO_MOVE", "1", 1);
		ret = race_pass("write_protect", (size_t)n_opt, mc / 1000.0);
		unsetenv("UGPU_SVM_NO_MOVE");
	}
	if (ret)
		fprintf(stderr, "ugpu-bench svm-race: %s\n", ugpu_strerror(ret));
	return ret ? 1 : 0;
}
