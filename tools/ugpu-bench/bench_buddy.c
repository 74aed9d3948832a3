/* SPDX-License-Identifier: MIT */
/*
 * ugpu-bench buddy: the VRAM buddy allocator under the workloads it is
 * judged by. One JSON object per line:
 *   frag          4 GiB / 4 KiB chunks: 65,536 x 8 KiB at 64 KiB alignment,
 *                 freed alternately cleared/dirty (i % 4 in {0,3} cleared)
 *                 so nothing coalesces, then 65,536 x 64 KiB (half of them
 *                 only by forced merge), then all freed. The shape of the
 *                 kernel's drm_buddy fragmentation kunit test, timed the
 *                 same way (allocations and frees included).
 *   frag-reverse  same fill; every other block freed cleared, the rest
 *                 freed in reverse order, cleared.
 *   churn         1 GiB / 4 KiB: 1,000,000 random allocate/free of
 *                 4 KiB..2 MiB (powers of two) at about half full.
 *   range         1 GiB / 4 KiB: allocations of 4..256 KiB confined to a
 *                 random 1 MiB window, frees at random, about half full.
 *   churn-clear   (only with --workload) churn with cleared frees and
 *                 CLEAR allocations mixed in: exercises forced merges.
 * Each workload runs --reps times (default 5) from a fresh allocator; "ms"
 * is the best run (this box is shared, the best run is the one least
 * disturbed), "ms_median" the median. ops_per_s = ops / best ms and counts
 * allocation and free calls. meta_bytes_per_block is the size of one
 * block's metadata; pool_bytes_per_block is what the pool held at the peak
 * divided by the blocks alive then (slab slack included).
 *
 * Usage: ugpu-bench buddy [--workload NAME] [--reps N] [--seed N]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mmap flags, madvise, getpid, clock_gettime without the build's -D */
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mm/buddy.h"
#include "tools/ugpu-bench/bench.h"

#define KIB 1024ull
#define MIB (1024ull * KIB)
#define GIB (1024ull * MIB)

struct result {
	double ms, ms_median;
	unsigned int reps;
	uint64_t ops;
	uint64_t pool_peak;  /* bytes */
	uint64_t blocks_peak; /* blocks alive at the pool peak */
	uint64_t enospc;
};

static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t x = rng_state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rng_state = x;
	return x * 0x2545f4914f6cdd1dull;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void note_peak(const struct buddy_mm *mm, struct result *r)
{
	if (buddy_meta_bytes(mm) > r->pool_peak) {
		r->pool_peak = buddy_meta_bytes(mm);
		r->blocks_peak = buddy_meta_blocks(mm) + mm->n_roots;
	}
}

static int fail(const char *workload, const char *what, int err)
{
	fprintf(stderr, "bench buddy %s: %s: %s\n", workload, what, strerror(-err));
	return -1;
}

/* ---- frag / frag-reverse --------------------------------------------------- */

static int fill_8k_at_64k(struct buddy_mm *mm, struct buddy_list *l, unsigned int n,
			  const char *name)
{
	unsigned int i;
	int err;

	for (i = 0; i < n; i++) {
		err = buddy_alloc_blocks(mm, 0, mm->size, 8 * KIB, 64 * KIB, l, 0);
		if (err)
			return fail(name, "8 KiB allocation", err);
	}
	return 0;
}

static int run_frag(struct result *r)
{
	const uint64_t size = 4 * GIB;
	const unsigned int n = size / (64 * KIB);
	struct buddy_list allocated = BUDDY_LIST_INIT(allocated);
	struct buddy_list clear = BUDDY_LIST_INIT(clear), dirty = BUDDY_LIST_INIT(dirty);
	struct buddy_list test = BUDDY_LIST_INIT(test);
	struct buddy_block *b, *nx;
	struct buddy_mm mm = { 0 };
	unsigned int i;
	double t0;
	int err;

	err = buddy_init(&mm, size, 4 * KIB);
	if (err)
		return fail("frag", "init", err);
	t0 = now_ms();
	if (fill_8k_at_64k(&mm, &allocated, n, "frag"))
		return -1;
	note_peak(&mm, r);
	i = 0;
	buddy_list_for_each_safe(b, nx, &allocated) {
		buddy_list_move_tail(i % 4 == 0 || i % 4 == 3 ? &clear : &dirty, b);
		i++;
	}
	buddy_free_list(&mm, &clear, BUDDY_CLEARED);
	buddy_free_list(&mm, &dirty, 0);
	for (i = 0; i < n; i++) {
		err = buddy_alloc_blocks(&mm, 0, size, 64 * KIB, 64 * KIB, &test, 0);
		if (err)
			return fail("frag", "64 KiB allocation", err);
	}
	note_peak(&mm, r);
	buddy_free_list(&mm, &test, 0);
	r->ms = now_ms() - t0;
	r->ops = 4ull * n;
	if (buddy_avail(&mm) != size)
		return fail("frag", "space lost", -EFAULT);
	if (buddy_fini(&mm))
		return fail("frag", "leak", -EFAULT);
	return 0;
}

static int run_frag_reverse(struct result *r)
{
	const uint64_t size = 4 * GIB;
	const unsigned int n = size / (64 * KIB);
	struct buddy_list allocated = BUDDY_LIST_INIT(allocated);
	struct buddy_list half = BUDDY_LIST_INIT(half), reverse = BUDDY_LIST_INIT(reverse);
	struct buddy_block *b, *nx;
	struct buddy_mm mm = { 0 };
	unsigned int i;
	double t0;
	int err;

	err = buddy_init(&mm, size, 4 * KIB);
	if (err)
		return fail("frag-reverse", "init", err);
	t0 = now_ms();
	if (fill_8k_at_64k(&mm, &allocated, n, "frag-reverse"))
		return -1;
	note_peak(&mm, r);
	i = 0;
	buddy_list_for_each_safe(b, nx, &allocated)
		if (i++ % 2 == 0)
			buddy_list_move_tail(&half, b);
	buddy_free_list(&mm, &half, BUDDY_CLEARED);
	/* Reverse what is left, then free it in that order. */
	while ((b = buddy_list_last(&allocated)))
		buddy_list_move_tail(&reverse, b);
	buddy_free_list(&mm, &reverse, BUDDY_CLEARED);
	r->ms = now_ms() - t0;
	r->ops = 2ull * n;
	if (buddy_avail(&mm) != size)
		return fail("frag-reverse", "space lost", -EFAULT);
	if (buddy_fini(&mm))
		return fail("frag-reverse", "leak", -EFAULT);
	return 0;
}

/* ---- churn / range ----------------------------------------------------------- */

struct slots {
	struct buddy_list *lists; /* stable list heads */
	uint64_t *bytes;
	unsigned int *active;     /* indices of live slots */
	unsigned int *idle;       /* indices of free slots */
	unsigned int n_active, n_idle;
};

static int slots_init(struct slots *s, unsigned int n)
{
	unsigned int i;

	s->lists = calloc(n, sizeof(*s->lists));
	s->bytes = calloc(n, sizeof(*s->bytes));
	s->active = calloc(n, sizeof(*s->active));
	s->idle = calloc(n, sizeof(*s->idle));
	if (!s->lists || !s->bytes || !s->active || !s->idle)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		buddy_list_init(&s->lists[i]);
		s->idle[i] = n - 1 - i;
	}
	s->n_active = 0;
	s->n_idle = n;
	return 0;
}

static void slots_destroy(struct slots *s)
{
	free(s->lists);
	free(s->bytes);
	free(s->active);
	free(s->idle);
}

struct churn_cfg {
	const char *name;
	uint64_t size;
	unsigned int max_log;   /* sizes 4 KiB << [0, max_log] */
	bool range;             /* confine to a random 1 MiB window */
	bool mixed_clear;       /* CLEAR allocations and cleared frees */
	uint64_t ops;
};

/* One allocation into an idle slot; false when the allocator said ENOSPC. */
static int churn_alloc(struct buddy_mm *mm, struct slots *s, const struct churn_cfg *c,
		       uint64_t *used)
{
	unsigned int id = s->idle[s->n_idle - 1];
	uint64_t sz = 4 * KIB << (rnd() % (c->max_log + 1));
	unsigned int flags = 0;
	uint64_t start = 0, end = mm->size;
	int err;

	if (c->range) {
		start = (rnd() % (mm->size / MIB)) * MIB;
		end = start + MIB;
		flags |= BUDDY_RANGE_ALLOCATION;
	}
	if (c->mixed_clear && rnd() % 4 == 0)
		flags |= BUDDY_CLEAR_ALLOCATION;
	err = buddy_alloc_blocks(mm, start, end, sz, 4 * KIB, &s->lists[id], flags);
	if (err)
		return err;
	s->n_idle--;
	s->bytes[id] = sz;
	s->active[s->n_active++] = id;
	*used += sz;
	return 0;
}

static void churn_free(struct buddy_mm *mm, struct slots *s, const struct churn_cfg *c,
		       uint64_t *used)
{
	unsigned int k = (unsigned int)(rnd() % s->n_active), id = s->active[k];

	buddy_free_list(mm, &s->lists[id], c->mixed_clear && rnd() % 2 ? BUDDY_CLEARED : 0);
	*used -= s->bytes[id];
	s->active[k] = s->active[--s->n_active];
	s->idle[s->n_idle++] = id;
}

static int run_churn(const struct churn_cfg *c, struct result *r)
{
	const unsigned int max_live = 1u << 20;
	struct buddy_mm mm = { 0 };
	struct slots s;
	uint64_t used = 0, target, op;
	double t0;
	int err;

	err = buddy_init(&mm, c->size, 4 * KIB);
	if (err)
		return fail(c->name, "init", err);
	err = slots_init(&s, max_live);
	if (err)
		return fail(c->name, "slots", err);
	target = c->size / 2;
	/* Fill to half, untimed. */
	while (used < target) {
		err = churn_alloc(&mm, &s, c, &used);
		if (err && err != -ENOSPC)
			return fail(c->name, "prefill", err);
	}
	t0 = now_ms();
	for (op = 0; op < c->ops; op++) {
		bool do_alloc;

		if (used < target - target / 16)
			do_alloc = true;
		else if (used > target + target / 16 || !s.n_idle)
			do_alloc = false;
		else
			do_alloc = rnd() & 1;
		if (do_alloc) {
			err = churn_alloc(&mm, &s, c, &used);
			if (!err)
				continue;
			if (err != -ENOSPC)
				return fail(c->name, "allocation", err);
			r->enospc++;
		}
		if (s.n_active)
			churn_free(&mm, &s, c, &used);
		if ((op & 0xffff) == 0)
			note_peak(&mm, r);
	}
	r->ms = now_ms() - t0;
	r->ops = c->ops;
	note_peak(&mm, r);
	while (s.n_active)
		churn_free(&mm, &s, c, &used);
	if (buddy_avail(&mm) != c->size)
		return fail(c->name, "space lost", -EFAULT);
	if (buddy_fini(&mm))
		return fail(c->name, "leak", -EFAULT);
	slots_destroy(&s);
	return 0;
}

/* ---- driver ------------------------------------------------------------------- */

static void print_result(const char *workload, const struct result *r)
{
	printf("{\"bench\":\"buddy\",\"workload\":\"%s\",\"ms\":%.3f,\"ops_per_s\":%.0f,"
	       "\"meta_bytes_per_block\":%zu,\"ms_median\":%.3f,\"reps\":%u,\"ops\":%" PRIu64
	       ",\"ns_per_op\":%.1f,\"pool_bytes_peak\":%" PRIu64 ",\"blocks_peak\":%" PRIu64
	       ",\"pool_bytes_per_block\":%.1f,\"enospc\":%" PRIu64 "}\n",
	       workload, r->ms, r->ms > 0 ? r->ops / (r->ms / 1e3) : 0.0,
	       sizeof(struct buddy_block), r->ms_median, r->reps, r->ops,
	       r->ops ? r->ms * 1e6 / r->ops : 0.0, r->pool_peak, r->blocks_peak,
	       r->blocks_peak ? (double)r->pool_peak / r->blocks_peak : 0.0, r->enospc);
	fflush(stdout);
}

static const struct churn_cfg churn_cfgs[] = {
	{ .name = "churn", .size = 1 * GIB, .max_log = 9, .ops = 1000000 },
	{ .name = "range", .size = 1 * GIB, .max_log = 6, .range = true, .ops = 1000000 },
	{ .name = "churn-clear", .size = 1 * GIB, .max_log = 9, .mixed_clear = true,
	  .ops = 1000000 },
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int run_one(const char *name, unsigned int reps, uint64_t seed)
{
	const struct churn_cfg *cfg = NULL;
	struct result best = { 0 };
	double ms[64];
	unsigned int rep;
	size_t i;

	if (strcmp(name, "frag") && strcmp(name, "frag-reverse")) {
		for (i = 0; i < sizeof(churn_cfgs) / sizeof(churn_cfgs[0]); i++)
			if (!strcmp(name, churn_cfgs[i].name))
				cfg = &churn_cfgs[i];
		if (!cfg) {
			fprintf(stderr, "bench buddy: unknown workload '%s' (frag, frag-reverse, churn, range, churn-clear)\n",
				name);
			return -1;
		}
	}
	for (rep = 0; rep < reps; rep++) {
		struct result r = { 0 };
		int err;

		rng_state = seed; /* every rep does the same operations */
		if (!strcmp(name, "frag"))
			err = run_frag(&r);
		else if (!strcmp(name, "frag-reverse"))
			err = run_frag_reverse(&r);
		else
			err = run_churn(cfg, &r);
		if (err)
			return err;
		ms[rep] = r.ms;
		if (!rep || r.ms < best.ms)
			best = r;
	}
	qsort(ms, reps, sizeof(ms[0]), cmp_double);
	best.reps = reps;
	best.ms_median = reps % 2 ? ms[reps / 2] : (ms[reps / 2 - 1] + ms[reps / 2]) / 2;
	print_result(name, &best);
	return 0;
}

int bench_buddy(int argc, char **argv)
{
	static const char *const defaults[] = { "frag", "frag-reverse", "churn", "range" };
	uint64_t seed = 0x9e3779b97f4a7c15ull, reps = 5;
	const char *only = NULL;
	const struct cli_opt opts[] = {
		{ .name = "workload", .kind = CLI_STR, .dst = &only, .arg = "NAME",
		  .help = "one of frag, frag-reverse, churn, range (default: all four)" },
		{ .name = "reps", .kind = CLI_UINT, .dst = &reps, .arg = "N",
		  .help = "runs per workload, the median is reported", .min = 1, .max = 64 },
		{ .name = "seed", .kind = CLI_UINT, .dst = &seed, .arg = "N",
		  .help = "random seed (made odd)", .max = UINT64_MAX },
		{ 0 },
	};
	const struct cli_cmd cli = { .prog = "ugpu-bench buddy", .args = "",
				     .summary = "VRAM buddy allocator: frag, frag-reverse, churn, range",
				     .opts = opts };
	size_t i;
	int ret = cli_parse(&cli, argc, argv, NULL, NULL);

	if (ret != CLI_CONTINUE)
		return ret;
	seed |= 1;
	if (only)
		return run_one(only, (unsigned int)reps, seed) ? 1 : 0;
	for (i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
		if (run_one(defaults[i], (unsigned int)reps, seed))
			ret = 1;
	return ret;
}
