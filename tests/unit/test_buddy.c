/* SPDX-License-Identifier: MIT */
/*
 * Buddy allocator tests. Each test states one property of mm/buddy.c:
 * the scenarios of the kernel's drm_buddy suite (limit, optimistic,
 * pessimistic, pathological, smoke, contiguous, clear, range bias,
 * exceeds-max-order, offset-aligned, fragmentation) restated here, every
 * invalid-argument path, trim, leak reporting at fini, metadata exhaustion,
 * and a randomised stress run that checks every invariant after each step.
 *
 * Random tests draw from one seed: printed at start, replayed with
 * UGPU_TEST_SEED=<n>.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mmap flags, madvise, getpid, clock_gettime without the build's -D */
#endif
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "mm/buddy.h"
#include "rng.h"

#define SZ_4K 0x1000ull
#define SZ_8K 0x2000ull
#define SZ_16K 0x4000ull
#define SZ_64K 0x10000ull
#define SZ_256K 0x40000ull
#define SZ_1M 0x100000ull
#define SZ_4M 0x400000ull
#define SZ_8M 0x800000ull
#define SZ_1G 0x40000000ull
#define SZ_2G 0x80000000ull
#define SZ_4G 0x100000000ull
#define SZ_8G 0x200000000ull

static uint64_t g_seed;

/* ---- helpers ------------------------------------------------------------------ */

/* Each test gets its own stream so one can be replayed alone. */
static void rng_for(struct rng *r, const char *test)
{
	uint64_t h = 1469598103934665603ull;

	while (*test)
		h = (h ^ (unsigned char)*test++) * 1099511628211ull;
	r->s = g_seed ^ h;
}

static void check_mm(const struct buddy_mm *mm)
{
	assert_int_equal(buddy_check(mm), 0);
}

static uint64_t list_bytes(const struct buddy_mm *mm, const struct buddy_list *l)
{
	const struct buddy_block *b;
	uint64_t total = 0;

	buddy_list_for_each(b, l)
		total += buddy_block_size(mm, b);
	return total;
}

static unsigned int list_len(const struct buddy_list *l)
{
	const struct buddy_block *b;
	unsigned int n = 0;

	buddy_list_for_each(b, l)
		n++;
	return n;
}

/*
 * Every block allocated, power-of-two sized, aligned to its size, inside the
 * mm; the total is @expect; with @contiguous each block starts where the one
 * before ended.
 */
static void check_blocks(const struct buddy_mm *mm, const struct buddy_list *l, uint64_t expect,
			 bool contiguous)
{
	const struct buddy_block *b, *prev = NULL;
	uint64_t total = 0;

	buddy_list_for_each(b, l) {
		uint64_t off = buddy_block_offset(b), sz = buddy_block_size(mm, b);

		if (!buddy_block_is_allocated(b))
			fail_msg("block at 0x%" PRIx64 " is not allocated", off);
		if (off & (sz - 1))
			fail_msg("block at 0x%" PRIx64 " not aligned to its size 0x%" PRIx64, off, sz);
		if (off + sz > mm->size)
			fail_msg("block at 0x%" PRIx64 " beyond the mm", off);
		if (contiguous && prev &&
		    buddy_block_offset(prev) + buddy_block_size(mm, prev) != off)
			fail_msg("block at 0x%" PRIx64 " does not follow the previous one", off);
		total += sz;
		prev = b;
	}
	if (total != expect)
		fail_msg("blocks total 0x%" PRIx64 ", expected 0x%" PRIx64, total, expect);
}

/* Allocate and move the (single) new block to the tail of @to. */
static struct buddy_block *alloc_block(struct buddy_mm *mm, uint64_t size, uint64_t min,
				       unsigned int flags, struct buddy_list *to)
{
	struct buddy_list tmp = BUDDY_LIST_INIT(tmp);
	struct buddy_block *b;
	int err = buddy_alloc_blocks(mm, 0, mm->size, size, min, &tmp, flags);

	if (err)
		fail_msg("alloc size 0x%" PRIx64 " min 0x%" PRIx64 " flags 0x%x: %d", size, min,
			 flags, err);
	assert_int_equal(list_len(&tmp), 1);
	b = buddy_list_first(&tmp);
	buddy_list_move_tail(to, b);
	return b;
}

struct log_capture {
	unsigned int n;
	char last[256];
	char all[4096];
};

static void capture_log(void *arg, const char *msg)
{
	struct log_capture *c = arg;
	size_t used = strlen(c->all);

	c->n++;
	snprintf(c->last, sizeof(c->last), "%s", msg);
	snprintf(c->all + used, sizeof(c->all) - used, "%s\n", msg);
}

static void quiet_log(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

/* ---- init and limits ------------------------------------------------------------ */

static void test_init_args(void **state)
{
	struct buddy_mm mm;

	(void)state;
	/* init trusts nothing in the struct: garbage in it is fine. */
	memset(&mm, 0xa5, sizeof(mm));
	assert_int_equal(buddy_init(NULL, SZ_1M, SZ_4K), -EINVAL);
	assert_int_equal(buddy_init(&mm, SZ_1M, 0), -EINVAL);
	assert_int_equal(buddy_init(&mm, SZ_1M, 2048), -EINVAL);       /* below 4 KiB */
	assert_int_equal(buddy_init(&mm, SZ_1M, SZ_4K * 3), -EINVAL);  /* not a power of two */
	assert_int_equal(buddy_init(&mm, SZ_4K - 1, SZ_4K), -EINVAL);  /* smaller than a chunk */
	assert_int_equal(buddy_init(&mm, SZ_1M, SZ_2G), -EINVAL);
	/* A failed init leaves a zeroed mm that every call refuses. */
	assert_int_equal(mm.n_roots, 0);
	assert_int_equal(buddy_fini(&mm), 0);
	memset(&mm, 0xa5, sizeof(mm));

	/* Rounded down to the chunk; one root per set bit, largest first. */
	assert_int_equal(buddy_init(&mm, 13 * SZ_64K + 5 * SZ_4K + 17, SZ_64K), 0);
	assert_int_equal(mm.size, 13 * SZ_64K);
	assert_int_equal(mm.n_roots, 3);
	assert_int_equal(mm.max_order, 3);
	assert_int_equal(buddy_block_size(&mm, &mm.roots[0]), 8 * SZ_64K);
	assert_int_equal(buddy_block_offset(&mm.roots[1]), 8 * SZ_64K);
	assert_int_equal(buddy_block_size(&mm, &mm.roots[1]), 4 * SZ_64K);
	assert_int_equal(buddy_block_offset(&mm.roots[2]), 12 * SZ_64K);
	assert_int_equal(buddy_block_size(&mm, &mm.roots[2]), SZ_64K);
	assert_null(buddy_block_buddy(&mm.roots[0]));
	assert_int_equal(buddy_avail(&mm), mm.size);
	assert_int_equal(buddy_clear_avail(&mm), 0);
	check_mm(&mm);
	assert_int_equal(buddy_fini(&mm), 0);
	/* fini twice, and on a never-initialised mm: nothing to do. */
	assert_int_equal(buddy_fini(&mm), 0);
	assert_int_equal(buddy_fini(NULL), 0);
}

static void test_limit(void **state)
{
	struct buddy_list blocks = BUDDY_LIST_INIT(blocks);
	struct buddy_mm mm = { 0 };
	struct buddy_block *b;
	uint64_t size;

	(void)state;
	/* The largest mm there is: 2^64 - 4 KiB, 52 roots. */
	assert_int_equal(buddy_init(&mm, UINT64_MAX, SZ_4K), 0);
	assert_int_equal(mm.max_order, BUDDY_MAX_ORDER);
	assert_int_equal(mm.n_roots, 52);
	assert_int_equal(mm.size, UINT64_MAX & ~(SZ_4K - 1));

	size = mm.chunk_size << mm.max_order;
	assert_int_equal(buddy_alloc_blocks(&mm, 0, size, size, mm.chunk_size, &blocks, 0), 0);
	b = buddy_list_first(&blocks);
	assert_non_null(b);
	assert_int_equal(buddy_block_order(b), mm.max_order);
	assert_int_equal(buddy_block_size(&mm, b), 1ull << 63);
	assert_int_equal(list_len(&blocks), 1);

	/* The very last chunk, by range and top-down: no overflow at 2^64. */
	assert_int_equal(buddy_alloc_blocks(&mm, mm.size - SZ_1M, mm.size, SZ_4K, SZ_4K, &blocks,
					    BUDDY_RANGE_ALLOCATION | BUDDY_TOPDOWN_ALLOCATION), 0);
	assert_int_equal(buddy_block_offset(buddy_list_last(&blocks)), mm.size - SZ_4K);
	/* A half-of-everything block is still there to be had by range. */
	assert_int_equal(buddy_alloc_blocks(&mm, 1ull << 63, mm.size, 1ull << 62, 1ull << 62,
					    &blocks, BUDDY_RANGE_ALLOCATION), 0);
	assert_int_equal(buddy_block_offset(buddy_list_last(&blocks)), 1ull << 63);
	check_mm(&mm);
	assert_int_equal(buddy_free_list(&mm, &blocks, 0), 0);
	assert_int_equal(buddy_avail(&mm), mm.size);
	check_mm(&mm);
	assert_int_equal(buddy_fini(&mm), 0);
}

/* ---- drm_buddy's classic shapes -------------------------------------------------- */

/* One free block of every order: each can be allocated, then nothing is left. */
static void test_optimistic(void **state)
{
	const unsigned int max_order = 16;
	struct buddy_list blocks = BUDDY_LIST_INIT(blocks);
	struct buddy_list tmp = BUDDY_LIST_INIT(tmp);
	struct buddy_mm mm = { 0 };
	unsigned int order;

	(void)state;
	assert_int_equal(buddy_init(&mm, SZ_4K * ((1ull << (max_order + 1)) - 1), SZ_4K), 0);
	assert_int_equal(mm.max_order, max_order);
	assert_int_equal(mm.n_roots, max_order + 1);

	for (order = 0; order <= max_order; order++) {
		struct buddy_block *b = alloc_block(&mm, SZ_4K << order, SZ_4K << order, 0, &blocks);

		assert_int_equal(buddy_block_order(b), order);
	}
	check_mm(&mm);
	assert_int_equal(buddy_avail(&mm), 0);
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm.size, SZ_4K, SZ_4K, &tmp, 0), -ENOSPC);
	assert_true(buddy_list_is_empty(&tmp));
	check_blocks(&mm, &blocks, mm.size, false);
	assert_int_equal(buddy_free_list(&mm, &blocks, 0), 0);
	check_mm(&mm);
	assert_int_equal(buddy_fini(&mm), 0);
}

/*
 * A power-of-two mm, one block of each order below the top allocated: one
 * page is left. Freeing in increasing size makes each next order available.
 */
static void test_pessimistic(void **state)
{
	const unsigned int max_order = 16;
	struct buddy_list blocks = BUDDY_LIST_INIT(blocks);
	struct buddy_list tmp = BUDDY_LIST_INIT(tmp);
	struct buddy_block *b, *n;
	struct buddy_mm mm = { 0 };
	unsigned int order;

	(void)state;
	assert_int_equal(buddy_init(&mm, SZ_4K << max_order, SZ_4K), 0);
	assert_int_equal(mm.max_order, max_order);

	for (order = 0; order < max_order; order++)
		alloc_block(&mm, SZ_4K << order, SZ_4K << order, 0, &blocks);
	assert_int_equal(buddy_avail(&mm), SZ_4K);
	alloc_block(&mm, SZ_4K, SZ_4K, 0, &blocks);
	check_mm(&mm);

	for (order = max_order; order--;)
		assert_int_equal(buddy_alloc_blocks(&mm, 0, mm.size, SZ_4K << order, SZ_4K << order,
						    &tmp, 0), -ENOSPC);

	b = buddy_list_last(&blocks);
	assert_int_equal(buddy_free_block(&mm, b, 0), 0);
	order = 1;
	buddy_list_for_each_safe(b, n, &blocks) {
		assert_int_equal(buddy_free_block(&mm, b, 0), 0);
		b = alloc_block(&mm, SZ_4K << order, SZ_4K << order, 0, &tmp);
		assert_int_equal(buddy_block_order(b), order);
		assert_int_equal(buddy_free_list(&mm, &tmp, 0), 0);
		check_mm(&mm);
		order++;
	}
	assert_int_equal(order, max_order + 1);
	/* Everything merged back: the whole mm is one block again. */
	b = alloc_block(&mm, mm.size, mm.size, 0, &tmp);
	assert_int_equal(buddy_block_order(b), max_order);
	assert_int_equal(buddy_free_list(&mm, &tmp, 0), 0);
	assert_int_equal(buddy_fini(&mm), 0);
}

/*
 * Allocate one block of each order, keep a one-page hole, free the largest
 * block and whittle down again, until the mm is 50% fragmented: then no
 * block above one page exists although half the mm is free.
 */
static void test_pathological(void **state)
{
	const unsigned int max_order = 3;
	struct buddy_list blocks = BUDDY_LIST_INIT(blocks);
	struct buddy_list holes = BUDDY_LIST_INIT(holes);
	struct buddy_list tmp = BUDDY_LIST_INIT(tmp);
	struct buddy_mm mm = { 0 };
	unsigned int top, order;

	(void)state;
	assert_int_equal(buddy_init(&mm, SZ_4K << max_order, SZ_4K), 0);
	for (top = max_order; top; top--) {
		struct buddy_block *b = buddy_list_first(&blocks);

		if (b)
			assert_int_equal(buddy_free_block(&mm, b, 0), 0);
		for (order = top; order--;)
			alloc_block(&mm, SZ_4K << order, SZ_4K << order, 0, &blocks);
		alloc_block(&mm, SZ_4K, SZ_4K, 0, &holes);
		assert_int_equal(buddy_alloc_blocks(&mm, 0, mm.size, SZ_4K << top, SZ_4K << top,
						    &tmp, 0), -ENOSPC);
		check_mm(&mm);
	}
	assert_int_equal(buddy_free_list(&mm, &holes, 0), 0);
	/* Three one-page holes, none of them buddies. */
	assert_int_equal(buddy_avail(&mm), 3 * SZ_4K);
	for (order = 1; order <= max_order; order++)
		assert_int_equal(buddy_alloc_blocks(&mm, 0, mm.size, SZ_4K << order, SZ_4K << order,
						    &tmp, 0), -ENOSPC);
	/* ...but the pages themselves are all there. */
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm.size, 3 * SZ_4K, SZ_4K, &tmp, 0), 0);
	check_blocks(&mm, &tmp, 3 * SZ_4K, false);
	assert_int_equal(list_len(&tmp), 3);
	buddy_list_splice_tail(&blocks, &tmp);
	assert_int_equal(buddy_free_list(&mm, &blocks, 0), 0);
	check_mm(&mm);
	assert_int_equal(buddy_fini(&mm), 0);
}

/*
 * Random mm shape; for every order in random sequence, fill the mm with
 * blocks of that order (smaller once it no longer fits), check, free.
 */
static void test_smoke(void **state)
{
	struct buddy_mm mm = { 0 };
	unsigned int *orders, i, n;
	uint64_t pages, chunk;
	struct rng r;
	time_t t0 = time(NULL);

	(void)state;
	rng_for(&r, __func__);
	pages = 1 + rng_below(&r, (1u << 16) - 1);
	chunk = 1ull << rng_below(&r, 64 - (unsigned int)__builtin_clzll(pages));
	pages &= ~(chunk - 1);
	if (!pages)
		pages = chunk;
	assert_int_equal(buddy_init(&mm, pages * SZ_4K, chunk * SZ_4K), 0);
	print_message("smoke: size 0x%" PRIx64 " chunk 0x%" PRIx64 " roots %u\n", mm.size,
		      mm.chunk_size, mm.n_roots);

	n = mm.max_order + 1;
	orders = calloc(n, sizeof(*orders));
	assert_non_null(orders);
	for (i = 0; i < n; i++)
		orders[i] = i;
	for (i = n - 1; i > 0; i--) {
		unsigned int j = (unsigned int)rng_below(&r, i + 1), t = orders[i];

		orders[i] = orders[j];
		orders[j] = t;
	}
	for (i = 0; i < n && time(NULL) - t0 < 5; i++) {
		struct buddy_list blocks = BUDDY_LIST_INIT(blocks);
		unsigned int order = orders[i];
		uint64_t total = 0;

		check_mm(&mm);
		while (total < mm.size) {
			struct buddy_list tmp = BUDDY_LIST_INIT(tmp);
			uint64_t sz = mm.chunk_size << order;
			int err = buddy_alloc_blocks(&mm, 0, mm.size, sz, sz, &tmp, 0);

			if (err == -ENOSPC && order) {
				order--;
				continue;
			}
			assert_int_equal(err, 0);
			assert_int_equal(buddy_block_order(buddy_list_first(&tmp)), order);
			total += sz;
			buddy_list_splice_tail(&blocks, &tmp);
		}
		check_blocks(&mm, &blocks, mm.size, false);
		assert_int_equal(buddy_avail(&mm), 0);
		check_mm(&mm);
		assert_int_equal(buddy_free_list(&mm, &blocks, 0), 0);
		check_mm(&mm);
		assert_int_equal(buddy_avail(&mm), mm.size);
	}
	free(orders);
	assert_int_equal(buddy_fini(&mm), 0);
}

/* ---- contiguous ---------------------------------------------------------------------- */

/*
 * Fragment 48 pages by dealing single pages round-robin into three lists
 * (left, middle, right). Free them one list at a time: a contiguous request
 * succeeds exactly when a long enough run of free pages exists, including
 * runs that cross buddy boundaries ("try harder").
 */
static void test_contiguous(void **state)
{
	const uint64_t ps = SZ_4K, mm_size = 16 * 3 * SZ_4K;
	struct buddy_list lists[3] = { BUDDY_LIST_INIT(lists[0]), BUDDY_LIST_INIT(lists[1]),
				       BUDDY_LIST_INIT(lists[2]) };
	struct buddy_list allocated = BUDDY_LIST_INIT(allocated);
	struct buddy_list one = BUDDY_LIST_INIT(one);
	struct buddy_mm mm = { 0 };
	unsigned int i;

	(void)state;
	assert_int_equal(buddy_init(&mm, mm_size, ps), 0);
	assert_int_equal(mm.n_roots, 2);
	for (i = 0; i < mm_size / ps; i++)
		assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, ps, ps, &lists[i % 3], 0), 0);
	assert_int_equal(buddy_avail(&mm), 0);
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, 3 * ps, ps, &allocated,
					    BUDDY_CONTIGUOUS_ALLOCATION), -ENOSPC);

	/* Middle free: isolated pages only. */
	assert_int_equal(buddy_free_list(&mm, &lists[1], 0), 0);
	check_mm(&mm);
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, 3 * ps, ps, &allocated,
					    BUDDY_CONTIGUOUS_ALLOCATION), -ENOSPC);
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, 2 * ps, ps, &allocated,
					    BUDDY_CONTIGUOUS_ALLOCATION), -ENOSPC);
	/* Not contiguous: fine. */
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, 3 * ps, ps, &one, 0), 0);
	check_blocks(&mm, &one, 3 * ps, false);
	assert_int_equal(buddy_free_list(&mm, &one, 0), 0);

	/* Middle and right free: runs of two pages, some of them not buddies. */
	assert_int_equal(buddy_free_list(&mm, &lists[2], 0), 0);
	check_mm(&mm);
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, 3 * ps, ps, &allocated,
					    BUDDY_CONTIGUOUS_ALLOCATION), -ENOSPC);
	/* Every two-page run in turn, buddies or not, until none is left. */
	for (i = 0; i < mm_size / ps / 3; i++) {
		assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, 2 * ps, ps, &one,
						    BUDDY_CONTIGUOUS_ALLOCATION), 0);
		check_blocks(&mm, &one, 2 * ps, true);
		check_mm(&mm);
		buddy_list_splice_tail(&allocated, &one);
	}
	assert_int_equal(buddy_avail(&mm), 0);
	assert_int_equal(buddy_free_list(&mm, &allocated, 0), 0);

	/* One two-page run across a buddy boundary, the rest taken. */
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, 2 * ps, ps, &one,
					    BUDDY_CONTIGUOUS_ALLOCATION), 0);
	check_blocks(&mm, &one, 2 * ps, true);
	buddy_list_splice_tail(&allocated, &one);

	/* Everything free: 3 pages round up to 4 and are trimmed back to 3. */
	assert_int_equal(buddy_free_list(&mm, &lists[0], 0), 0);
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, 3 * ps, ps, &one,
					    BUDDY_CONTIGUOUS_ALLOCATION), 0);
	check_blocks(&mm, &one, 3 * ps, true);
	assert_int_equal(list_len(&one), 2);
	buddy_list_splice_tail(&allocated, &one);
	assert_int_equal(list_bytes(&mm, &allocated), 2 * ps + 3 * ps);
	assert_int_equal(buddy_avail(&mm), mm_size - 5 * ps);
	check_mm(&mm);
	assert_int_equal(buddy_free_list(&mm, &allocated, 0), 0);
	assert_int_equal(buddy_avail(&mm), mm_size);
	assert_int_equal(buddy_fini(&mm), 0);
}

/* A run only reachable across buddies: exact pages checked. */
static void test_contiguous_try_harder(void **state)
{
	const uint64_t ps = SZ_4K;
	struct buddy_list all = BUDDY_LIST_INIT(all), out = BUDDY_LIST_INIT(out);
	struct buddy_block *b, *n;
	struct buddy_mm mm = { 0 };
	unsigned int i;

	(void)state;
	assert_int_equal(buddy_init(&mm, 32 * ps, ps), 0);
	/* Every page by exact range: page i at i * ps. */
	for (i = 0; i < 32; i++)
		assert_int_equal(buddy_alloc_blocks(&mm, (uint64_t)i * ps, (uint64_t)(i + 1) * ps, ps,
						    ps, &all, 0), 0);
	/* Free pages 5..11 (7 pages: [5], [6,7], [8..11] are separate blocks). */
	buddy_list_for_each_safe(b, n, &all) {
		uint64_t p = buddy_block_offset(b) / ps;

		if (p >= 5 && p <= 11)
			assert_int_equal(buddy_free_block(&mm, b, p & 1 ? BUDDY_CLEARED : 0), 0);
	}
	check_mm(&mm);
	/* 8 pages: no. 7 pages: exactly [5, 12). 6 pages after that: no. */
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm.size, 8 * ps, ps, &out,
					    BUDDY_CONTIGUOUS_ALLOCATION), -ENOSPC);
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm.size, 7 * ps, ps, &out,
					    BUDDY_CONTIGUOUS_ALLOCATION), 0);
	check_blocks(&mm, &out, 7 * ps, true);
	assert_int_equal(buddy_block_offset(buddy_list_first(&out)), 5 * ps);
	/* Clear state survives: pages freed as cleared come back cleared. */
	buddy_list_for_each(b, &out)
		if (buddy_block_size(&mm, b) == ps)
			assert_int_equal(buddy_block_is_clear(b), (buddy_block_offset(b) / ps) & 1);
	check_mm(&mm);
	assert_int_equal(buddy_free_list(&mm, &out, 0), 0);
	/* Inside a range that cuts the run: [6, 12) has 6 pages only. */
	assert_int_equal(buddy_alloc_blocks(&mm, 6 * ps, 16 * ps, 7 * ps, ps, &out,
					    BUDDY_CONTIGUOUS_ALLOCATION | BUDDY_RANGE_ALLOCATION),
			 -ENOSPC);
	assert_int_equal(buddy_alloc_blocks(&mm, 6 * ps, 16 * ps, 6 * ps, ps, &out,
					    BUDDY_CONTIGUOUS_ALLOCATION | BUDDY_RANGE_ALLOCATION), 0);
	check_blocks(&mm, &out, 6 * ps, true);
	assert_int_equal(buddy_block_offset(buddy_list_first(&out)), 6 * ps);
	buddy_list_splice_tail(&all, &out);
	assert_int_equal(buddy_free_list(&mm, &all, 0), 0);
	check_mm(&mm);
	assert_int_equal(buddy_avail(&mm), mm.size);
	assert_int_equal(buddy_fini(&mm), 0);
}

/* ---- cleared / dirty ------------------------------------------------------------------ */

static void test_clear(void **state)
{
	const unsigned int max_order = 12;
	const uint64_t ps = SZ_4K, mm_size = SZ_4K << max_order;
	struct buddy_list allocated = BUDDY_LIST_INIT(allocated);
	struct buddy_list dirty = BUDDY_LIST_INIT(dirty), clean = BUDDY_LIST_INIT(clean);
	struct buddy_block *b;
	struct buddy_mm mm = { 0 };
	unsigned int i, order;
	uint64_t c = 0;

	(void)state;
	assert_int_equal(buddy_init(&mm, mm_size, ps), 0);
	/* A fresh mm's contents are unknown: dirty. */
	assert_int_equal(buddy_clear_avail(&mm), 0);

	/*
	 * Free some pages as cleared; ask alternately for dirty and cleared
	 * pages, never more cleared than exist: each gets what it asked for.
	 */
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, 5 * ps, ps, &allocated,
					    BUDDY_TOPDOWN_ALLOCATION), 0);
	assert_int_equal(buddy_free_list(&mm, &allocated, BUDDY_CLEARED), 0);
	assert_int_equal(buddy_clear_avail(&mm), 5 * ps);
	check_mm(&mm);
	for (i = 0; i < 10; i++)
		assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, ps, ps, i % 2 ? &clean : &dirty,
						    i % 2 ? BUDDY_CLEAR_ALLOCATION : 0), 0);
	buddy_list_for_each(b, &clean)
		assert_true(buddy_block_is_clear(b));
	buddy_list_for_each(b, &dirty)
		assert_false(buddy_block_is_clear(b));
	assert_int_equal(buddy_clear_avail(&mm), 0);
	check_mm(&mm);

	/* More cleared than there is: the rest comes dirty, never a failure. */
	assert_int_equal(buddy_free_list(&mm, &clean, BUDDY_CLEARED), 0);
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, 10 * ps, ps, &clean,
					    BUDDY_CLEAR_ALLOCATION), 0);
	buddy_list_for_each(b, &clean)
		if (buddy_block_is_clear(b))
			c += buddy_block_size(&mm, b);
	/* Per block: cleared when a cleared block of that size exists. */
	assert_true(c > 0 && c <= 5 * ps);
	assert_int_equal(buddy_clear_avail(&mm), 5 * ps - c);
	check_blocks(&mm, &clean, 10 * ps, false);
	assert_int_equal(buddy_free_list(&mm, &clean, BUDDY_CLEARED), 0);
	assert_int_equal(buddy_free_list(&mm, &dirty, 0), 0);
	assert_int_equal(buddy_clear_avail(&mm), 10 * ps + 5 * ps - c);
	check_mm(&mm);
	assert_int_equal(buddy_fini(&mm), 0);

	/*
	 * Alternate every page between two lists, free one cleared and one
	 * dirty: no two free buddies may merge. A request of twice the size
	 * then only succeeds by merging by force, and the result is dirty.
	 */
	assert_int_equal(buddy_init(&mm, mm_size, ps), 0);
	for (order = 1; order < max_order; order++) {
		uint64_t size = ps << order, total = 0;
		struct buddy_block *n;

		for (i = 0; i < mm_size / ps; i++)
			assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, ps, ps, &allocated, 0),
					 0);
		buddy_list_for_each_safe(b, n, &allocated)
			buddy_list_move_tail(buddy_block_offset(b) / ps % 2 ? &clean : &dirty, b);
		assert_int_equal(buddy_free_list(&mm, &clean, BUDDY_CLEARED), 0);
		assert_int_equal(buddy_free_list(&mm, &dirty, 0), 0);
		assert_int_equal(buddy_avail(&mm), mm_size);
		assert_int_equal(buddy_clear_avail(&mm), mm_size / 2);
		assert_int_equal(buddy_meta_blocks(&mm) + mm.n_roots, 2 * (mm_size / ps) - 1);
		check_mm(&mm);

		assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, size, size, &allocated,
						    BUDDY_CLEAR_ALLOCATION), 0);
		buddy_list_for_each(b, &allocated) {
			assert_false(buddy_block_is_clear(b));
			total += buddy_block_size(&mm, b);
		}
		assert_int_equal(total, size);
		assert_int_equal(buddy_clear_avail(&mm), mm_size / 2 - size / 2);
		check_mm(&mm);
		assert_int_equal(buddy_free_list(&mm, &allocated, 0), 0);
		check_mm(&mm);
	}
	/* The whole mm asked for by exact range keeps each page's state. */
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, mm_size, ps, &allocated, 0), 0);
	check_blocks(&mm, &allocated, mm_size, true);
	assert_int_equal(buddy_free_list(&mm, &allocated, BUDDY_CLEARED), 0);
	assert_int_equal(buddy_clear_avail(&mm), mm_size);
	assert_int_equal(buddy_fini(&mm), 0);

	/*
	 * Non-power-of-two mm: free half of it cleared, then reset the state
	 * of everything free to dirty and to cleared. Split blocks merge back.
	 */
	assert_int_equal(buddy_init(&mm, mm_size + 3 * SZ_64K, ps), 0);
	for (i = 0; i < mm.size / ps; i++)
		assert_int_equal(buddy_alloc_blocks(&mm, 0, mm.size, ps, ps,
						    i % 2 ? &clean : &dirty, 0), 0);
	assert_int_equal(buddy_free_list(&mm, &clean, BUDDY_CLEARED), 0);
	assert_int_equal(buddy_reset_clear(&mm, false), 0);
	assert_int_equal(buddy_clear_avail(&mm), 0);
	check_mm(&mm);
	assert_int_equal(buddy_free_list(&mm, &dirty, BUDDY_CLEARED), 0);
	assert_int_equal(buddy_clear_avail(&mm), mm.size / 2);
	assert_int_equal(buddy_reset_clear(&mm, true), 0);
	assert_int_equal(buddy_clear_avail(&mm), mm.size);
	assert_int_equal(buddy_meta_blocks(&mm), 0); /* all merged back into the roots */
	check_mm(&mm);
	for (i = 0; i < mm.n_roots; i++)
		assert_true(buddy_block_is_free(&mm.roots[i]) && buddy_block_is_clear(&mm.roots[i]));
	assert_int_equal(buddy_reset_clear(&mm, false), 0);
	assert_int_equal(buddy_clear_avail(&mm), 0);
	check_mm(&mm);
	assert_int_equal(buddy_fini(&mm), 0);
}

/* ---- range bias -------------------------------------------------------------------------- */

static void check_in_range(const struct buddy_mm *mm, const struct buddy_list *l, uint64_t start,
			   uint64_t end)
{
	const struct buddy_block *b;

	buddy_list_for_each(b, l) {
		uint64_t off = buddy_block_offset(b);

		if (off < start || off + buddy_block_size(mm, b) > end)
			fail_msg("block [0x%" PRIx64 ", +0x%" PRIx64 ") leaks out of [0x%" PRIx64
				 ", 0x%" PRIx64 ")", off, buddy_block_size(mm, b), start, end);
	}
}

static int alloc_in(struct buddy_mm *mm, uint64_t start, uint64_t end, uint64_t size,
		    uint64_t min, struct buddy_list *to)
{
	struct buddy_list tmp = BUDDY_LIST_INIT(tmp);
	int err = buddy_alloc_blocks(mm, start, end, size, min, &tmp, BUDDY_RANGE_ALLOCATION);

	if (!err) {
		check_in_range(mm, &tmp, start, end);
		check_blocks(mm, &tmp, size, false);
	} else {
		assert_true(buddy_list_is_empty(&tmp));
	}
	buddy_list_splice_tail(to, &tmp);
	return err;
}

static uint64_t round_up_u64(uint64_t x, uint64_t a)
{
	return (x + a - 1) / a * a;
}

/*
 * Cut the mm (several roots, random page size) into 1 MiB bias windows and
 * fill them in random order with assorted patterns; then grow a random
 * window in both directions while filling it until the whole mm is used.
 */
static void test_range_bias(void **state)
{
	const uint64_t bias_size = SZ_1M;
	struct buddy_list allocated = BUDDY_LIST_INIT(allocated);
	uint64_t mm_size, ps, count, i, *order;
	uint64_t bias_start, bias_end, bias_rem;
	struct buddy_mm mm = { 0 };
	struct rng r;

	(void)state;
	rng_for(&r, __func__);
	ps = SZ_4K << rng_below(&r, 9); /* 4 KiB .. 1 MiB */
	mm_size = (SZ_8M - 1) & ~(ps - 1);
	print_message("range_bias: mm_size 0x%" PRIx64 " ps 0x%" PRIx64 "\n", mm_size, ps);
	assert_int_equal(buddy_init(&mm, mm_size, ps), 0);
	assert_true(mm.n_roots > 1);

	count = mm_size / bias_size;
	order = calloc(count, sizeof(*order));
	assert_non_null(order);
	for (i = 0; i < count; i++)
		order[i] = i;
	for (i = count - 1; i > 0; i--) {
		uint64_t j = rng_below(&r, i + 1), t = order[i];

		order[i] = order[j];
		order[j] = t;
	}

	for (i = 0; i < count; i++) {
		struct buddy_list tmp = BUDDY_LIST_INIT(tmp);
		uint64_t size;

		bias_start = order[i] * bias_size;
		bias_end = bias_start + bias_size;
		bias_rem = bias_size;

		/* Rounded up to the min block, too big for the window. */
		assert_int_not_equal(alloc_in(&mm, bias_start, bias_end, bias_size + ps, bias_size,
					      &allocated), 0);
		/* Too big. */
		assert_int_not_equal(alloc_in(&mm, bias_start, bias_end, bias_size + ps, ps,
					      &allocated), 0);
		/* Window too small for the size. */
		assert_int_not_equal(alloc_in(&mm, bias_start + ps, bias_end, bias_size, ps,
					      &allocated), 0);
		/* No aligned half-window block fits in a window shrunk at both ends. */
		assert_int_not_equal(alloc_in(&mm, bias_start + ps, bias_end - ps, bias_size >> 1,
					      bias_size >> 1, &allocated), 0);
		/* The whole window as one block. */
		assert_int_equal(alloc_in(&mm, bias_start, bias_end, bias_size, bias_size, &tmp), 0);
		assert_int_equal(list_len(&tmp), 1);
		assert_int_equal(buddy_free_list(&mm, &tmp, 0), 0);
		/* One page, rounded up to the window and trimmed back. */
		assert_int_equal(buddy_alloc_blocks(&mm, bias_start, bias_end, ps, bias_size, &tmp,
						    BUDDY_RANGE_ALLOCATION), 0);
		check_in_range(&mm, &tmp, bias_start, bias_end);
		check_blocks(&mm, &tmp, ps, false);
		assert_int_equal(buddy_free_list(&mm, &tmp, 0), 0);

		/* Random size, then too big for what is left, then a random fill. */
		size = round_up_u64(rng_below(&r, bias_rem), ps);
		if (size < ps)
			size = ps;
		assert_int_equal(alloc_in(&mm, bias_start, bias_end, size, ps, &tmp), 0);
		bias_rem -= size;
		assert_int_not_equal(alloc_in(&mm, bias_start, bias_end, bias_rem + ps, ps,
					      &allocated), 0);
		if (bias_rem) {
			size = round_up_u64(rng_below(&r, bias_rem), ps);
			if (size < ps)
				size = ps;
			assert_int_equal(alloc_in(&mm, bias_start, bias_end, size, ps, &allocated),
					 0);
			/* Leave holes, not always on window boundaries. */
			assert_int_equal(buddy_free_list(&mm, &tmp, 0), 0);
		} else {
			buddy_list_splice_tail(&allocated, &tmp);
		}
		check_mm(&mm);
	}
	free(order);
	assert_int_equal(buddy_free_list(&mm, &allocated, 0), 0);
	assert_int_equal(buddy_fini(&mm), 0);

	/* Free form: a random window that grows while it fills. */
	assert_int_equal(buddy_init(&mm, mm_size, ps), 0);
	bias_start = round_up_u64(rng_below(&r, mm_size - ps), ps);
	bias_end = round_up_u64(bias_start + rng_below(&r, mm_size - bias_start), ps);
	if (bias_end < bias_start + ps)
		bias_end = bias_start + ps;
	bias_rem = bias_end - bias_start;
	do {
		uint64_t size = round_up_u64(rng_below(&r, bias_rem), ps);

		if (size < ps)
			size = ps;
		assert_int_equal(alloc_in(&mm, bias_start, bias_end, size, ps, &allocated), 0);
		bias_rem -= size;
		do {
			uint64_t old_start = bias_start, old_end = bias_end;

			if (bias_start)
				bias_start -= round_up_u64(rng_below(&r, bias_start), ps);
			if (bias_end != mm_size)
				bias_end += round_up_u64(rng_below(&r, mm_size - bias_end), ps);
			if (bias_end > mm_size)
				bias_end = mm_size;
			bias_rem += old_start - bias_start;
			bias_rem += bias_end - old_end;
		} while (!bias_rem && (bias_start || bias_end != mm_size));
	} while (bias_rem);
	assert_int_equal(bias_start, 0);
	assert_int_equal(bias_end, mm_size);
	assert_int_equal(buddy_avail(&mm), 0);
	assert_int_equal(alloc_in(&mm, 0, mm_size, ps, ps, &allocated), -ENOSPC);
	check_mm(&mm);
	assert_int_equal(buddy_free_list(&mm, &allocated, 0), 0);
	check_mm(&mm);
	assert_int_equal(buddy_fini(&mm), 0);
}

/* Range and top-down together: the highest aligned fit inside the window. */
static void test_topdown(void **state)
{
	struct buddy_list l = BUDDY_LIST_INIT(l);
	struct buddy_mm mm = { 0 };
	struct buddy_block *b;

	(void)state;
	assert_int_equal(buddy_init(&mm, SZ_8M + SZ_1M, SZ_4K), 0);
	b = alloc_block(&mm, SZ_4K, SZ_4K, BUDDY_TOPDOWN_ALLOCATION, &l);
	assert_int_equal(buddy_block_offset(b), mm.size - SZ_4K);
	b = alloc_block(&mm, SZ_64K, SZ_64K, BUDDY_TOPDOWN_ALLOCATION, &l);
	assert_int_equal(buddy_block_offset(b), mm.size - 2 * SZ_64K);
	/* Cleared preferred over higher: free a low block cleared, ask for it. */
	assert_int_equal(buddy_alloc_blocks(&mm, 0, SZ_1M, SZ_16K, SZ_16K, &l,
					    BUDDY_RANGE_ALLOCATION), 0);
	b = buddy_list_last(&l);
	assert_int_equal(buddy_block_offset(b), 0);
	assert_int_equal(buddy_free_block(&mm, b, BUDDY_CLEARED), 0);
	b = alloc_block(&mm, SZ_4K, SZ_4K, BUDDY_TOPDOWN_ALLOCATION | BUDDY_CLEAR_ALLOCATION, &l);
	assert_true(buddy_block_is_clear(b));
	assert_int_equal(buddy_block_offset(b), SZ_16K - SZ_4K);
	{
		struct buddy_list w = BUDDY_LIST_INIT(w);

		/* 1 MiB in [1 MiB + 4 KiB, 3 MiB - 4 KiB): the top 512 KiB block first. */
		assert_int_equal(buddy_alloc_blocks(&mm, SZ_1M + SZ_4K, 3 * SZ_1M - SZ_4K, SZ_1M,
						    SZ_4K, &w, BUDDY_RANGE_ALLOCATION |
						    BUDDY_TOPDOWN_ALLOCATION), 0);
		check_in_range(&mm, &w, SZ_1M + SZ_4K, 3 * SZ_1M - SZ_4K);
		check_blocks(&mm, &w, SZ_1M, false);
		b = buddy_list_first(&w);
		assert_int_equal(buddy_block_offset(b), 2 * SZ_1M);
		assert_int_equal(buddy_block_size(&mm, b), SZ_1M / 2);
		buddy_list_splice_tail(&l, &w);
	}
	check_mm(&mm);
	assert_int_equal(buddy_free_list(&mm, &l, 0), 0);
	assert_int_equal(buddy_fini(&mm), 0);
}

/* ---- sizes beyond the largest block ------------------------------------------------------- */

/*
 * 10 GiB is an 8 GiB and a 2 GiB root. 9 GiB contiguous cannot round up to
 * 16 GiB, but can be had across the two roots; every other way of asking
 * for a rounded size above the mm is invalid.
 */
static void test_exceeds_max_order(void **state)
{
	const uint64_t mm_size = SZ_8G + SZ_2G, size = SZ_8G + SZ_1G;
	struct buddy_list blocks = BUDDY_LIST_INIT(blocks);
	struct buddy_mm mm = { 0 };

	(void)state;
	assert_int_equal(buddy_init(&mm, mm_size, SZ_4K), 0);
	assert_int_equal(mm.n_roots, 2);
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, size, SZ_4K, &blocks,
					    BUDDY_CONTIGUOUS_ALLOCATION), 0);
	check_blocks(&mm, &blocks, size, true);
	assert_int_equal(buddy_block_offset(buddy_list_first(&blocks)), 0);
	check_mm(&mm);
	assert_int_equal(buddy_free_list(&mm, &blocks, 0), 0);

	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, size, SZ_8G, &blocks, 0), -EINVAL);
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, size, SZ_8G, &blocks,
					    BUDDY_RANGE_ALLOCATION), -EINVAL);
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, size, SZ_4K, &blocks,
					    BUDDY_CONTIGUOUS_ALLOCATION | BUDDY_RANGE_ALLOCATION),
			 -EINVAL);
	assert_true(buddy_list_is_empty(&blocks));
	assert_int_equal(buddy_avail(&mm), mm_size);
	check_mm(&mm);
	assert_int_equal(buddy_fini(&mm), 0);
}

/* ---- alignment larger than the size -------------------------------------------------------- */

/*
 * A min block size above the size means alignment: 8 KiB blocks at 256 KiB
 * boundaries, one per boundary, until every boundary is used.
 */
static void test_offset_aligned(void **state)
{
	const uint64_t mm_size = SZ_4M;
	const unsigned int slots = mm_size / SZ_256K;
	struct buddy_list allocated = BUDDY_LIST_INIT(allocated);
	struct buddy_list freed = BUDDY_LIST_INIT(freed);
	struct buddy_block *b, *n;
	struct buddy_mm mm = { 0 };
	unsigned int i = 0;

	(void)state;
	assert_int_equal(buddy_init(&mm, mm_size, SZ_4K), 0);
	for (i = 0; i < slots; i++)
		assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, SZ_8K, SZ_256K, &allocated, 0), 0);
	buddy_list_for_each(b, &allocated) {
		assert_int_equal(buddy_block_size(&mm, b), SZ_8K);
		assert_int_equal(buddy_block_offset(b) & (SZ_256K - 1), 0);
	}
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, SZ_8K, SZ_256K, &freed, 0), -ENOSPC);
	assert_int_equal(buddy_avail(&mm), mm_size - slots * SZ_8K);
	/* TRIM_DISABLE keeps the whole aligned block. */
	assert_int_equal(buddy_free_list(&mm, &allocated, 0), 0);
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, SZ_8K, SZ_256K, &allocated,
					    BUDDY_TRIM_DISABLE), 0);
	assert_int_equal(list_bytes(&mm, &allocated), SZ_256K);
	assert_int_equal(buddy_free_list(&mm, &allocated, 0), 0);

	for (i = 0; i < slots; i++)
		assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, SZ_16K, SZ_256K, &allocated, 0), 0);
	i = 0;
	buddy_list_for_each_safe(b, n, &allocated) {
		assert_int_equal(buddy_block_size(&mm, b), SZ_16K);
		assert_int_equal(buddy_block_offset(b) & (SZ_256K - 1), 0);
		if (i++ % 2 == 0)
			buddy_list_move_tail(&freed, b);
	}
	assert_int_equal(buddy_free_list(&mm, &freed, 0), 0);
	for (i = 0; i < slots / 2; i++)
		assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, SZ_16K, SZ_256K, &allocated, 0), 0);
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, SZ_16K, SZ_256K, &allocated, 0),
			 -ENOSPC);
	check_mm(&mm);
	assert_int_equal(buddy_free_list(&mm, &allocated, 0), 0);
	assert_int_equal(buddy_fini(&mm), 0);
}

/* ---- fragmentation (the shapes ugpu-bench times) --------------------------------------------- */

/*
 * 4 GiB filled with 8 KiB blocks at 64 KiB boundaries; freed alternately
 * cleared and dirty so nothing coalesces; then the whole 4 GiB again as
 * 64 KiB blocks, half of them only by merging by force.
 */
static void test_fragmentation(void **state)
{
	const uint64_t mm_size = SZ_4G;
	const unsigned int n = mm_size / SZ_64K;
	struct buddy_list allocated = BUDDY_LIST_INIT(allocated);
	struct buddy_list clear = BUDDY_LIST_INIT(clear), dirty = BUDDY_LIST_INIT(dirty);
	struct buddy_block *b, *nx;
	struct buddy_mm mm = { 0 };
	unsigned int i;

	(void)state;
	assert_int_equal(buddy_init(&mm, mm_size, SZ_4K), 0);
	for (i = 0; i < n; i++)
		assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, SZ_8K, SZ_64K, &allocated, 0), 0);
	assert_int_equal(buddy_avail(&mm), mm_size - n * SZ_8K);
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, SZ_8K, SZ_64K, &clear, 0), -ENOSPC);
	check_mm(&mm);
	i = 0;
	buddy_list_for_each_safe(b, nx, &allocated) {
		buddy_list_move_tail(i % 4 == 0 || i % 4 == 3 ? &clear : &dirty, b);
		i++;
	}
	assert_int_equal(buddy_free_list(&mm, &clear, BUDDY_CLEARED), 0);
	assert_int_equal(buddy_free_list(&mm, &dirty, 0), 0);
	assert_int_equal(buddy_avail(&mm), mm_size);
	assert_int_equal(buddy_clear_avail(&mm), n / 2 * SZ_8K);
	check_mm(&mm);
	for (i = 0; i < n; i++)
		assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, SZ_64K, SZ_64K, &allocated, 0), 0);
	assert_int_equal(buddy_avail(&mm), 0);
	assert_int_equal(buddy_clear_avail(&mm), 0);
	buddy_list_for_each(b, &allocated)
		assert_false(buddy_block_is_clear(b));
	check_blocks(&mm, &allocated, mm_size, false);
	check_mm(&mm);
	assert_int_equal(buddy_free_list(&mm, &allocated, 0), 0);
	assert_int_equal(buddy_meta_blocks(&mm), 0);
	assert_int_equal(buddy_fini(&mm), 0);

	/* Same fill; free every other block, then the rest in reverse, cleared. */
	assert_int_equal(buddy_init(&mm, mm_size, SZ_4K), 0);
	for (i = 0; i < n; i++)
		assert_int_equal(buddy_alloc_blocks(&mm, 0, mm_size, SZ_8K, SZ_64K, &allocated, 0), 0);
	i = 0;
	buddy_list_for_each_safe(b, nx, &allocated)
		if (i++ % 2 == 0)
			buddy_list_move_tail(&clear, b);
	assert_int_equal(buddy_free_list(&mm, &clear, BUDDY_CLEARED), 0);
	while ((b = buddy_list_last(&allocated)))
		assert_int_equal(buddy_free_block(&mm, b, BUDDY_CLEARED), 0);
	assert_int_equal(buddy_avail(&mm), mm_size);
	assert_int_equal(buddy_clear_avail(&mm), n * SZ_8K);
	check_mm(&mm);
	assert_int_equal(buddy_reset_clear(&mm, false), 0);
	assert_int_equal(buddy_meta_blocks(&mm), 0);
	assert_int_equal(buddy_fini(&mm), 0);
}

/* ---- trim --------------------------------------------------------------------------------------- */

static void test_trim(void **state)
{
	struct buddy_list l = BUDDY_LIST_INIT(l), other = BUDDY_LIST_INIT(other);
	struct buddy_mm mm = { 0 };
	struct buddy_block *b;
	uint64_t start;

	(void)state;
	assert_int_equal(buddy_init(&mm, SZ_1M, SZ_4K), 0);

	/* 16 pages trimmed to 5 from the start: [0,4) + [4,5) pages, in order. */
	b = alloc_block(&mm, 16 * SZ_4K, 16 * SZ_4K, 0, &l);
	start = buddy_block_offset(b);
	assert_int_equal(buddy_block_trim(&mm, NULL, 5 * SZ_4K, &l), 0);
	check_blocks(&mm, &l, 5 * SZ_4K, true);
	assert_int_equal(list_len(&l), 2);
	assert_int_equal(buddy_block_offset(buddy_list_first(&l)), start);
	assert_int_equal(buddy_avail(&mm), SZ_1M - 5 * SZ_4K);
	check_mm(&mm);
	assert_int_equal(buddy_free_list(&mm, &l, 0), 0);

	/* With an offset: 16 pages, keep pages [3, 10). */
	b = alloc_block(&mm, 16 * SZ_4K, 16 * SZ_4K, 0, &l);
	start = buddy_block_offset(b) + 3 * SZ_4K;
	assert_int_equal(buddy_block_trim(&mm, &start, 7 * SZ_4K, &l), 0);
	check_blocks(&mm, &l, 7 * SZ_4K, true);
	assert_int_equal(buddy_block_offset(buddy_list_first(&l)), start);
	assert_int_equal(list_len(&l), 3); /* [3] [4,8) [8,10) */
	assert_int_equal(buddy_avail(&mm), SZ_1M - 7 * SZ_4K);
	check_mm(&mm);
	assert_int_equal(buddy_free_list(&mm, &l, 0), 0);

	/* Same size: nothing to do. Offset at the very end of the block. */
	b = alloc_block(&mm, 8 * SZ_4K, 8 * SZ_4K, 0, &l);
	assert_int_equal(buddy_block_trim(&mm, NULL, 8 * SZ_4K, &l), 0);
	assert_ptr_equal(buddy_list_first(&l), b);
	start = buddy_block_offset(b) + 7 * SZ_4K;
	assert_int_equal(buddy_block_trim(&mm, &start, SZ_4K, &l), 0);
	check_blocks(&mm, &l, SZ_4K, true);
	assert_int_equal(buddy_block_offset(buddy_list_first(&l)), start);
	check_mm(&mm);
	assert_int_equal(buddy_free_list(&mm, &l, 0), 0);

	/* A cleared block: the cut-off part goes back dirty, the kept part stays. */
	b = alloc_block(&mm, 8 * SZ_4K, 8 * SZ_4K, 0, &l);
	assert_int_equal(buddy_free_list(&mm, &l, BUDDY_CLEARED), 0);
	b = alloc_block(&mm, 8 * SZ_4K, 8 * SZ_4K, BUDDY_CLEAR_ALLOCATION, &l);
	assert_true(buddy_block_is_clear(b));
	assert_int_equal(buddy_block_trim(&mm, NULL, 2 * SZ_4K, &l), 0);
	assert_true(buddy_block_is_clear(buddy_list_first(&l)));
	assert_int_equal(buddy_clear_avail(&mm), 0);
	check_mm(&mm);
	assert_int_equal(buddy_free_list(&mm, &l, 0), 0);

	/* Contiguous rounding trimmed inside alloc, or kept with TRIM_DISABLE. */
	assert_int_equal(buddy_alloc_blocks(&mm, 0, SZ_1M, 5 * SZ_4K, SZ_4K, &l,
					    BUDDY_CONTIGUOUS_ALLOCATION), 0);
	check_blocks(&mm, &l, 5 * SZ_4K, true);
	assert_int_equal(buddy_alloc_blocks(&mm, 0, SZ_1M, 5 * SZ_4K, SZ_4K, &other,
					    BUDDY_CONTIGUOUS_ALLOCATION | BUDDY_TRIM_DISABLE), 0);
	check_blocks(&mm, &other, 8 * SZ_4K, true);
	assert_int_equal(list_len(&other), 1);
	/* Non-contiguous rounding to min block: only the last block is cut. */
	assert_int_equal(buddy_alloc_blocks(&mm, 0, SZ_1M, 9 * SZ_16K + SZ_4K, SZ_16K, &other, 0),
			 0);
	assert_int_equal(list_bytes(&mm, &other), 8 * SZ_4K + 9 * SZ_16K + SZ_4K);
	check_mm(&mm);
	assert_int_equal(buddy_free_list(&mm, &l, 0), 0);
	assert_int_equal(buddy_free_list(&mm, &other, 0), 0);
	assert_int_equal(buddy_avail(&mm), SZ_1M);
	check_mm(&mm);
	assert_int_equal(buddy_fini(&mm), 0);
}

/* ---- invalid arguments -------------------------------------------------------------------------- */

static void test_invalid_args(void **state)
{
	struct buddy_list l = BUDDY_LIST_INIT(l), two = BUDDY_LIST_INIT(two);
	struct buddy_block fake = { .header = BUDDY_STATE_FREE };
	struct log_capture cap = { 0 };
	const uint64_t M = SZ_1M + SZ_256K; /* two roots */
	struct buddy_mm mm = { 0 };
	struct buddy_block *b;
	uint64_t start;

	(void)state;
	/* Before init (a zeroed mm). */
	assert_int_equal(buddy_alloc_blocks(&mm, 0, M, SZ_4K, SZ_4K, &l, 0), -EINVAL);
	assert_int_equal(buddy_init(&mm, M, SZ_4K), 0);
	buddy_set_log(&mm, capture_log, &cap);

#define BAD(start_, end_, size_, min_, flags_)                                               \
	do {                                                                                 \
		unsigned int n0_ = cap.n;                                                    \
		assert_int_equal(buddy_alloc_blocks(&mm, (start_), (end_), (size_), (min_), &l, \
						    (flags_)), -EINVAL);                     \
		assert_true(buddy_list_is_empty(&l));                                        \
		assert_true(cap.n > n0_); /* and it said why */                             \
	} while (0)

	assert_int_equal(buddy_alloc_blocks(NULL, 0, M, SZ_4K, SZ_4K, &l, 0), -EINVAL);
	assert_int_equal(buddy_alloc_blocks(&mm, 0, M, SZ_4K, SZ_4K, NULL, 0), -EINVAL);
	BAD(0, M, SZ_4K, SZ_4K, 1u << 20);                      /* unknown flag */
	BAD(0, M, 0, SZ_4K, 0);                                 /* size 0 */
	BAD(0, M, SZ_4K + 512, SZ_4K, 0);                       /* size not chunk aligned */
	BAD(512, M, SZ_4K, SZ_4K, BUDDY_RANGE_ALLOCATION);      /* start not aligned */
	BAD(0, M - 512, SZ_4K, SZ_4K, BUDDY_RANGE_ALLOCATION);  /* end not aligned */
	BAD(0, M, SZ_4K, 3 * SZ_4K, 0);                         /* min not power of two */
	BAD(0, M, SZ_4K, 2048, 0);                              /* min below chunk */
	BAD(0, M, SZ_4K, 0, 0);                                 /* min 0 */
	BAD(0, M + SZ_4K, SZ_4K, SZ_4K, 0);                     /* end past the mm */
	BAD(SZ_64K, SZ_4K, SZ_4K, SZ_4K, BUDDY_RANGE_ALLOCATION); /* start > end */
	BAD(0, M, M + SZ_4K, SZ_4K, 0);                         /* size > total */
	BAD(M - SZ_4K, M, 2 * SZ_4K, SZ_4K, 0);                 /* start + size > total */
	BAD(0, SZ_64K, SZ_64K + SZ_4K, SZ_4K, BUDDY_RANGE_ALLOCATION); /* range < size */
	BAD(SZ_4K, SZ_64K + SZ_4K, SZ_64K, SZ_64K, 0);           /* exact range misaligned */
	BAD(0, M, SZ_1M + SZ_4K, SZ_1M, 0);                     /* rounds up past the mm */
	BAD(0, M, SZ_1M + SZ_4K, SZ_4K,                         /* contiguous + range too big */
	    BUDDY_CONTIGUOUS_ALLOCATION | BUDDY_RANGE_ALLOCATION);
	BAD(0, SZ_64K, SZ_16K, SZ_64K + SZ_4K, BUDDY_RANGE_ALLOCATION); /* bad min in range */
	BAD(0, SZ_64K, 48 * SZ_1M, SZ_4K, BUDDY_RANGE_ALLOCATION);
#undef BAD
	assert_int_equal(buddy_avail(&mm), M);
	check_mm(&mm);

	/* Frees. */
	assert_int_equal(buddy_free_list(NULL, &l, 0), -EINVAL);
	assert_int_equal(buddy_free_list(&mm, NULL, 0), -EINVAL);
	assert_int_equal(buddy_free_list(&mm, &l, 0x80), -EINVAL);
	assert_int_equal(buddy_free_block(&mm, NULL, 0), -EINVAL);
	/* A root block is never recycled: its double free is always caught. */
	assert_int_equal(buddy_alloc_blocks(&mm, 0, SZ_1M, SZ_1M, SZ_4K, &l, 0), 0);
	b = buddy_list_first(&l);
	assert_ptr_equal(b, &mm.roots[0]);
	assert_int_equal(buddy_free_block(&mm, b, 0), 0);
	assert_true(buddy_list_is_empty(&l));
	assert_int_equal(buddy_free_block(&mm, b, 0), -EINVAL);
	/* A free block on a list: refused, unlinked, the rest freed. */
	alloc_block(&mm, SZ_4K, SZ_4K, 0, &l);
	buddy_list_add_tail(&l, &fake);
	alloc_block(&mm, SZ_8K, SZ_4K, 0, &l);
	assert_int_equal(buddy_free_list(&mm, &l, 0), -EINVAL);
	assert_true(buddy_list_is_empty(&l));
	assert_int_equal(buddy_free_block(&mm, &mm.roots[1], 0x4), -EINVAL);
	check_mm(&mm);
	assert_int_equal(buddy_avail(&mm), M);

	/* Trim. */
	b = alloc_block(&mm, 16 * SZ_4K, 16 * SZ_4K, 0, &l);
	assert_int_equal(buddy_block_trim(NULL, NULL, SZ_4K, &l), -EINVAL);
	assert_int_equal(buddy_block_trim(&mm, NULL, SZ_4K, NULL), -EINVAL);
	assert_int_equal(buddy_block_trim(&mm, NULL, SZ_4K, &two), -EINVAL); /* empty */
	assert_int_equal(buddy_block_trim(&mm, NULL, 0, &l), -EINVAL);
	assert_int_equal(buddy_block_trim(&mm, NULL, SZ_4K + 1, &l), -EINVAL);
	assert_int_equal(buddy_block_trim(&mm, NULL, 32 * SZ_4K, &l), -EINVAL);
	start = buddy_block_offset(b) - SZ_4K;
	assert_int_equal(buddy_block_trim(&mm, &start, SZ_4K, &l), -EINVAL); /* before */
	start = buddy_block_offset(b) + 512;
	assert_int_equal(buddy_block_trim(&mm, &start, SZ_4K, &l), -EINVAL); /* misaligned */
	start = buddy_block_offset(b) + 12 * SZ_4K;
	assert_int_equal(buddy_block_trim(&mm, &start, 8 * SZ_4K, &l), -EINVAL); /* runs past */
	start = UINT64_MAX & ~(SZ_4K - 1);
	assert_int_equal(buddy_block_trim(&mm, &start, SZ_4K, &l), -EINVAL); /* overflow */
	alloc_block(&mm, SZ_4K, SZ_4K, 0, &l);
	assert_int_equal(buddy_block_trim(&mm, NULL, SZ_4K, &l), -EINVAL); /* two blocks */
	assert_int_equal(buddy_free_list(&mm, &l, 0), 0);
	buddy_list_add_tail(&two, &fake); /* a free block is not trimmable */
	assert_int_equal(buddy_block_trim(&mm, NULL, SZ_4K, &two), -EINVAL);
	buddy_list_del(&fake);
	check_mm(&mm);
	assert_int_equal(buddy_avail(&mm), M);

	/* The rest. */
	assert_int_equal(buddy_reset_clear(NULL, true), -EINVAL);
	assert_int_equal(buddy_check(NULL), -EINVAL);
	assert_int_equal(buddy_fini(&mm), 0);
	assert_int_equal(buddy_reset_clear(&mm, true), -EINVAL); /* after fini */
	assert_int_equal(buddy_block_trim(&mm, NULL, SZ_4K, &l), -EINVAL);
	assert_int_equal(buddy_free_list(&mm, &l, 0), -EINVAL);
}

/* ---- fini ----------------------------------------------------------------------------------------- */

static void test_fini_leaks(void **state)
{
	struct buddy_list a = BUDDY_LIST_INIT(a), b = BUDDY_LIST_INIT(b);
	struct log_capture cap = { 0 };
	struct buddy_mm mm = { 0 };
	char expect[64];
	unsigned int i;

	(void)state;
	assert_int_equal(buddy_init(&mm, SZ_4M, SZ_4K), 0);
	buddy_set_log(&mm, capture_log, &cap);
	assert_int_equal(buddy_alloc_blocks(&mm, 0, SZ_4M, 7 * SZ_4K, SZ_4K, &a, 0), 0);
	assert_int_equal(list_len(&a), 3);
	assert_int_equal(buddy_alloc_blocks(&mm, SZ_1M, SZ_4M, SZ_64K, SZ_64K, &b,
					    BUDDY_RANGE_ALLOCATION), 0);
	snprintf(expect, sizeof(expect), "[0x%" PRIx64 ", 0x%" PRIx64 ")",
		 buddy_block_offset(buddy_list_first(&b)),
		 (uint64_t)(buddy_block_offset(buddy_list_first(&b)) + SZ_64K));
	assert_int_equal(buddy_free_list(&mm, &a, 0), 0);
	assert_int_equal(cap.n, 0);
	/* One allocation left behind: one leaked block, named in the log. */
	assert_int_equal(buddy_fini(&mm), 1);
	assert_non_null(strstr(cap.all, expect));
	assert_non_null(strstr(cap.all, "leak"));
	/* Finalised: everything forgotten. */
	assert_int_equal(mm.n_roots, 0);
	assert_null(mm.log);

	/* Many leaks: counted, the log stays short. */
	memset(&cap, 0, sizeof(cap));
	assert_int_equal(buddy_init(&mm, SZ_4M, SZ_4K), 0);
	buddy_set_log(&mm, capture_log, &cap);
	for (i = 0; i < 100; i++)
		assert_int_equal(buddy_alloc_blocks(&mm, 0, SZ_4M, SZ_4K, SZ_4K, &a, 0), 0);
	assert_int_equal(buddy_fini(&mm), 100);
	assert_true(cap.n > 1 && cap.n < 30);
	assert_non_null(strstr(cap.last, "100 block"));
}

/* ---- metadata exhaustion ----------------------------------------------------------------------------- */

/*
 * Fail the Nth metadata reservation for every N an operation reaches: the
 * operation returns -ENOMEM and the allocator is exactly as before.
 */
static void test_enomem(void **state)
{
	struct buddy_list keep = BUDDY_LIST_INIT(keep), l = BUDDY_LIST_INIT(l);
	struct buddy_mm mm = { 0 };
	unsigned long nth;
	int ops;

	(void)state;
	assert_int_equal(buddy_init(&mm, 8 * SZ_1M + 5 * SZ_64K, SZ_4K), 0);
	buddy_set_log(&mm, quiet_log, NULL);
	/* Some shape to work in. */
	assert_int_equal(buddy_alloc_blocks(&mm, 0, mm.size, 3 * SZ_64K + SZ_4K, SZ_4K, &keep, 0), 0);
	assert_int_equal(buddy_alloc_blocks(&mm, SZ_1M, 2 * SZ_1M, 5 * SZ_4K, SZ_4K, &keep,
					    BUDDY_RANGE_ALLOCATION), 0);

	for (ops = 0; ops < 6; ops++) {
		for (nth = 1;; nth++) {
			uint64_t avail = buddy_avail(&mm), meta = buddy_meta_blocks(&mm);
			int err;

			mm.fail_reserve_at = nth;
			switch (ops) {
			case 0:
				err = buddy_alloc_blocks(&mm, 0, mm.size, 37 * SZ_4K, SZ_4K, &l, 0);
				break;
			case 1:
				err = buddy_alloc_blocks(&mm, 0, mm.size, 37 * SZ_4K, SZ_4K, &l,
							 BUDDY_CONTIGUOUS_ALLOCATION);
				break;
			case 2:
				err = buddy_alloc_blocks(&mm, 3 * SZ_1M + SZ_4K, 5 * SZ_1M,
							 37 * SZ_4K, SZ_4K, &l,
							 BUDDY_RANGE_ALLOCATION |
							 BUDDY_TOPDOWN_ALLOCATION);
				break;
			case 3:
				err = buddy_alloc_blocks(&mm, SZ_4K, SZ_4K + 37 * SZ_4K, 37 * SZ_4K,
							 SZ_4K, &l, 0);
				break;
			case 4:
				err = buddy_alloc_blocks(&mm, 0, mm.size, SZ_8K, SZ_1M, &l, 0);
				break;
			default: {
				struct buddy_list t = BUDDY_LIST_INIT(t);
				uint64_t at;

				mm.fail_reserve_at = 0;
				assert_int_equal(buddy_alloc_blocks(&mm, 0, mm.size, SZ_256K, SZ_256K,
								    &t, 0), 0);
				avail = buddy_avail(&mm);
				meta = buddy_meta_blocks(&mm);
				at = buddy_block_offset(buddy_list_first(&t)) + 5 * SZ_4K;
				mm.fail_reserve_at = nth;
				err = buddy_block_trim(&mm, &at, 9 * SZ_4K, &t);
				if (err) {
					assert_int_equal(list_len(&t), 1);
					assert_int_equal(list_bytes(&mm, &t), SZ_256K);
				}
				buddy_list_splice_tail(&l, &t);
				break;
			}
			}
			if (err) {
				assert_int_equal(err, -ENOMEM);
				assert_int_equal(buddy_avail(&mm), avail);
				assert_int_equal(buddy_meta_blocks(&mm), meta);
				check_mm(&mm);
				if (ops != 5)
					assert_true(buddy_list_is_empty(&l));
				assert_int_equal(buddy_free_list(&mm, &l, 0), 0);
				continue;
			}
			/* The countdown was not reached: this op is done. */
			mm.fail_reserve_at = 0;
			assert_true(nth > 1);
			check_mm(&mm);
			assert_int_equal(buddy_free_list(&mm, &l, 0), 0);
			break;
		}
	}
	mm.fail_reserve_at = 0;
	assert_int_equal(buddy_free_list(&mm, &keep, 0), 0);
	assert_int_equal(buddy_avail(&mm), mm.size);
	check_mm(&mm);
	assert_int_equal(buddy_fini(&mm), 0);
}

/* ---- randomised stress ---------------------------------------------------------------------------------- */

#define STRESS_LIVE 48

struct shadow {
	uint16_t *owner; /* per chunk: 0 free, else allocation id + 1 */
	uint8_t *clear;  /* per chunk: known zero (shadow of the clear state) */
};

struct live {
	struct buddy_list blocks;
	bool used;
};

static void shadow_take(struct buddy_mm *mm, struct shadow *sh, struct buddy_list *l,
			unsigned int id)
{
	struct buddy_block *b;

	buddy_list_for_each(b, l) {
		uint64_t c0 = buddy_block_offset(b) >> mm->chunk_shift;
		uint64_t n = buddy_block_size(mm, b) >> mm->chunk_shift, c;

		for (c = c0; c < c0 + n; c++) {
			if (sh->owner[c])
				fail_msg("chunk %" PRIu64 " handed out twice (owner %u, now %u)", c,
					 sh->owner[c] - 1, id);
			if (buddy_block_is_clear(b) && !sh->clear[c])
				fail_msg("chunk %" PRIu64 " reported cleared but was freed dirty", c);
			sh->owner[c] = (uint16_t)(id + 1);
			sh->clear[c] = buddy_block_is_clear(b);
		}
	}
}

static void shadow_release(struct buddy_mm *mm, struct shadow *sh, struct buddy_block *b,
			   bool cleared)
{
	uint64_t c0 = buddy_block_offset(b) >> mm->chunk_shift;
	uint64_t n = buddy_block_size(mm, b) >> mm->chunk_shift, c;

	for (c = c0; c < c0 + n; c++) {
		sh->owner[c] = 0;
		sh->clear[c] = cleared;
	}
}

static uint64_t rand_pow2_chunks(struct rng *r, const struct buddy_mm *mm, unsigned int max_log)
{
	return mm->chunk_size << rng_below(r, max_log + 1);
}

static void stress_round(struct rng *r, unsigned int steps)
{
	struct live live[STRESS_LIVE];
	struct buddy_mm mm = { 0 };
	struct shadow sh;
	uint64_t chunks, used = 0, stats[8] = { 0 };
	uint64_t ck = 0x1000ull << (rng_below(r, 3) ? 0 : rng_below(r, 5)); /* chunk size */
	unsigned int i, step;

	chunks = 16 + rng_below(r, 2048);
	assert_int_equal(buddy_init(&mm, chunks * ck, ck), 0);
	buddy_set_log(&mm, quiet_log, NULL);
	sh.owner = calloc(chunks, sizeof(*sh.owner));
	sh.clear = calloc(chunks, 1);
	assert_non_null(sh.owner);
	assert_non_null(sh.clear);
	for (i = 0; i < STRESS_LIVE; i++) {
		buddy_list_init(&live[i].blocks);
		live[i].used = false;
	}

	for (step = 0; step < steps; step++) {
		unsigned int op = (unsigned int)rng_below(r, 100);
		unsigned int id = (unsigned int)rng_below(r, STRESS_LIVE);
		struct live *lv = &live[id];

		if (!lv->used && op < 60) {
			/* Allocate with a random mix of everything. */
			unsigned int flags = (unsigned int)rng_below(r, BUDDY_ALLOC_FLAGS_ALL + 1);
			uint64_t size = ck * (1 + rng_below(r, rng_below(r, 4) ? 16 : chunks / 2));
			uint64_t min = rand_pow2_chunks(r, &mm, rng_below(r, 4) ? 0 : 6);
			uint64_t start = 0, end = mm.size, rounded, pre_avail = mm.avail;
			bool inval = false, contig = flags & BUDDY_CONTIGUOUS_ALLOCATION;
			bool range = flags & BUDDY_RANGE_ALLOCATION;
			int err;

			if (size > mm.size)
				size = mm.size;
			if (range || rng_below(r, 8) == 0) {
				start = ck * rng_below(r, chunks);
				end = start + ck * rng_below(r, chunks - start / ck + 1);
				if (rng_below(r, 4) == 0 && end - start >= ck) {
					size = end - start; /* exact range */
					min = ck;
				}
			}
			/* What the allocator must call invalid. */
			if (contig) {
				rounded = 1;
				while (rounded < size)
					rounded <<= 1;
				if (rounded < min)
					rounded = min;
			} else {
				rounded = round_up_u64(size, min);
			}
			if (start + size > mm.size || (range && end - start < size))
				inval = true;
			else if (end - start == size)
				inval = ((start | end) & (min - 1)) != 0;
			else if (rounded > mm.size)
				inval = !contig || range;
			else if (range && rounded > end - start)
				inval = !contig;
			if (rng_below(r, 16) == 0)
				mm.fail_reserve_at = 1 + rng_below(r, 3);
			err = buddy_alloc_blocks(&mm, start, end, size, min, &lv->blocks, flags);
			mm.fail_reserve_at = 0;
			if (inval) {
				if (err != -EINVAL)
					fail_msg("step %u: [0x%" PRIx64 ",0x%" PRIx64 ") size 0x%" PRIx64
						 " min 0x%" PRIx64 " flags 0x%x: %d, expected -EINVAL",
						 step, start, end, size, min, flags, err);
				stats[1]++;
			} else if (err) {
				if (err != -ENOSPC && err != -ENOMEM)
					fail_msg("step %u: [0x%" PRIx64 ",0x%" PRIx64 ") size 0x%" PRIx64
						 " min 0x%" PRIx64 " flags 0x%x: %d", step, start,
						 end, size, min, flags, err);
				assert_int_equal(mm.avail, pre_avail);
				stats[err == -ENOMEM ? 3 : 2]++;
			}
			if (err) {
				assert_true(buddy_list_is_empty(&lv->blocks));
			} else {
				uint64_t got = list_bytes(&mm, &lv->blocks);
				bool exact = end - start == size;

				if (flags & BUDDY_TRIM_DISABLE && !exact)
					assert_true(got == size || got == rounded);
				else if (got != size)
					fail_msg("step %u: got 0x%" PRIx64 " for size 0x%" PRIx64
						 " flags 0x%x", step, got, size, flags);
				check_blocks(&mm, &lv->blocks, got, contig || exact);
				if (range || exact)
					check_in_range(&mm, &lv->blocks, start, end);
				shadow_take(&mm, &sh, &lv->blocks, id);
				lv->used = true;
				used += got;
				stats[0]++;
			}
		} else if (lv->used && op < 85) {
			/* Free: all at once or block by block, cleared or not. */
			bool cleared = rng_below(r, 2);
			struct buddy_block *b, *n;

			buddy_list_for_each(b, &lv->blocks) {
				shadow_release(&mm, &sh, b, cleared);
				used -= buddy_block_size(&mm, b);
			}
			if (rng_below(r, 2)) {
				assert_int_equal(buddy_free_list(&mm, &lv->blocks,
								 cleared ? BUDDY_CLEARED : 0), 0);
			} else {
				buddy_list_for_each_safe(b, n, &lv->blocks)
					assert_int_equal(buddy_free_block(&mm, b, cleared ? BUDDY_CLEARED
											  : 0), 0);
			}
			assert_true(buddy_list_is_empty(&lv->blocks));
			lv->used = false;
			stats[4]++;
		} else if (lv->used && op < 95 && list_len(&lv->blocks) == 1) {
			/* Trim the single block, at a random offset or not. */
			struct buddy_block *b = buddy_list_first(&lv->blocks);
			uint64_t bsz = buddy_block_size(&mm, b), bs = buddy_block_offset(b);
			uint64_t ns = ck * (1 + rng_below(r, bsz / ck));
			uint64_t at = bs + ck * rng_below(r, (bsz - ns) / ck + 1);
			bool with_start = rng_below(r, 2);
			struct buddy_block *k;
			int err;

			if (rng_below(r, 16) == 0)
				mm.fail_reserve_at = 1;
			err = buddy_block_trim(&mm, with_start ? &at : NULL, ns, &lv->blocks);
			mm.fail_reserve_at = 0;
			if (!with_start)
				at = bs;
			if (err) {
				assert_int_equal(err, -ENOMEM);
				assert_ptr_equal(buddy_list_first(&lv->blocks), b);
				stats[3]++;
			} else {
				check_blocks(&mm, &lv->blocks, ns, true);
				check_in_range(&mm, &lv->blocks, at, at + ns);
				/* What was cut off is free again, and dirty. */
				for (uint64_t c = bs / ck; c < (bs + bsz) / ck; c++) {
					if (c < at / ck || c >= (at + ns) / ck) {
						sh.owner[c] = 0;
						sh.clear[c] = 0;
					}
				}
				buddy_list_for_each(k, &lv->blocks)
					assert_true(buddy_block_is_clear(k) == (bool)sh.clear[
						buddy_block_offset(k) / ck]);
				used -= bsz - ns;
				stats[5]++;
			}
		} else if (op >= 98) {
			bool to_clear = rng_below(r, 2);

			assert_int_equal(buddy_reset_clear(&mm, to_clear), 0);
			for (uint64_t c = 0; c < chunks; c++)
				if (!sh.owner[c])
					sh.clear[c] = to_clear;
			stats[6]++;
		}
		if (buddy_check(&mm))
			fail_msg("invariant broken after step %u (op %u)", step, op);
		assert_int_equal(mm.size - mm.avail, used);
	}
	for (i = 0; i < STRESS_LIVE; i++)
		if (live[i].used)
			assert_int_equal(buddy_free_list(&mm, &live[i].blocks, 0), 0);
	check_mm(&mm);
	assert_int_equal(mm.avail, mm.size);
	assert_int_equal(buddy_fini(&mm), 0);
	print_message("stress: %" PRIu64 " x 0x%" PRIx64 ": %" PRIu64 " allocs, %" PRIu64 " EINVAL, %" PRIu64
		      " ENOSPC, %" PRIu64 " ENOMEM, %" PRIu64 " frees, %" PRIu64 " trims, %" PRIu64
		      " resets\n", chunks, ck, stats[0], stats[1], stats[2], stats[3], stats[4],
		      stats[5], stats[6]);
	free(sh.owner);
	free(sh.clear);
}

static void test_stress(void **state)
{
	struct rng r;
	unsigned int round;

	(void)state;
	rng_for(&r, __func__);
	for (round = 0; round < 24; round++)
		stress_round(&r, 8000);
}

int main(void)
{
	const char *env = getenv("UGPU_TEST_SEED");
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_args),
		cmocka_unit_test(test_limit),
		cmocka_unit_test(test_optimistic),
		cmocka_unit_test(test_pessimistic),
		cmocka_unit_test(test_pathological),
		cmocka_unit_test(test_smoke),
		cmocka_unit_test(test_contiguous),
		cmocka_unit_test(test_contiguous_try_harder),
		cmocka_unit_test(test_clear),
		cmocka_unit_test(test_range_bias),
		cmocka_unit_test(test_topdown),
		cmocka_unit_test(test_exceeds_max_order),
		cmocka_unit_test(test_offset_aligned),
		cmocka_unit_test(test_fragmentation),
		cmocka_unit_test(test_trim),
		cmocka_unit_test(test_invalid_args),
		cmocka_unit_test(test_fini_leaks),
		cmocka_unit_test(test_enomem),
		cmocka_unit_test(test_stress),
	};

	if (env && *env)
		g_seed = strtoull(env, NULL, 0);
	else
		g_seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	printf("test_buddy: seed %" PRIu64 " (replay with UGPU_TEST_SEED=%" PRIu64 ")\n", g_seed,
	       g_seed);
	fflush(stdout);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
