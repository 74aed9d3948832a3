/* SPDX-License-Identifier: MIT */
/*
 * VRAM buddy allocator. Design notes: docs/buddy.md. Locking: none inside;
 * the caller serialises every call on one struct buddy_mm (see buddy.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mmap flags, madvise, getpid, clock_gettime without the build's -D */
#endif
#include "mm/buddy.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

static_assert(sizeof(struct buddy_block) == 32, "a block pair must fill one 64-byte line");
static_assert(BUDDY_MAX_ORDER + 1 <= 64, "free-list masks are 64-bit");

#define PAIR_BYTES (2 * sizeof(struct buddy_block))
#define SLAB_FIRST_PAIRS 64u        /* 4 KiB */
#define SLAB_HUGE_BYTES (2u << 20)  /* from here on: mmap'd, 2 MiB aligned, THP */
#define SLAB_MAX_PAIRS (SLAB_HUGE_BYTES / PAIR_BYTES)
#define FORCE_TRIES 4               /* list heads tried before a tree search */
#define LEAKS_LOGGED 16

/*
 * Cached subtree summary of a split block (split.aug), one byte each, value
 * order + 1 (0 = none):
 *   byte 0: largest free dirty block in the subtree,
 *   byte 1: largest free cleared block,
 *   byte 2: largest "fully free" block: free, or split with every block
 *           below it free (buddies kept apart only by their clear state).
 * A free block's summary is derived from its header, an allocated one's is 0.
 */
#define AUG_FF_SHIFT 16
#define AUG_INVALID 0xffffffffu /* stale: recompute before use (never a real value) */

enum find_mode {
	FIND_PREF,  /* free blocks in the preferred clear state only */
	FIND_ANY,   /* any free block */
	FIND_FORCE, /* also fully free split blocks, merged by force */
};

struct find_req {
	uint64_t start, end;    /* [start, end) */
	unsigned int order;     /* wanted */
	unsigned int min_order; /* acceptable */
	unsigned int pref;      /* 1: cleared preferred */
	enum find_mode mode;
	bool topdown;
	/* Answer: the largest order found so far and where. */
	struct buddy_block *best;
	int best_order;
};

/* ---- small helpers -------------------------------------------------------- */

static void buddy_log(const struct buddy_mm *mm, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void buddy_log(const struct buddy_mm *mm, const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (mm && mm->log)
		mm->log(mm->log_arg, buf);
	else
		fprintf(stderr, "buddy: %s\n", buf);
}

static inline unsigned int ilog2_u64(uint64_t x)
{
	return 63u - (unsigned int)__builtin_clzll(x);
}

static inline bool is_pow2(uint64_t x)
{
	return x && !(x & (x - 1));
}

static inline unsigned int hdr_clear(const struct buddy_block *b)
{
	return (unsigned int)(b->header >> 8) & 1u;
}

static inline uint64_t block_end(const struct buddy_mm *mm, const struct buddy_block *b)
{
	return buddy_block_offset(b) + buddy_block_size(mm, b);
}

static inline struct buddy_block *pair_of(struct buddy_block *b)
{
	return (struct buddy_block *)((uintptr_t)b & ~(uintptr_t)(PAIR_BYTES - 1));
}

static inline void set_state(struct buddy_block *b, uint64_t state, uint64_t clear)
{
	b->header = (b->header & ~(uint64_t)(BUDDY_HEADER_STATE | BUDDY_HEADER_CLEAR)) | state | clear;
}

/* ---- block pool: 64-byte pairs from slabs ---------------------------------- */

/* The first pair of every slab describes it. */
struct slab_hdr {
	void *next;
	size_t bytes;
	bool mapped; /* mmap'd (else aligned_alloc'd) */
};

static_assert(sizeof(struct slab_hdr) <= 2 * sizeof(struct buddy_block), "slab header");

/*
 * Big slabs are 2 MiB, 2 MiB aligned and marked for transparent huge pages:
 * one page fault and one TLB entry per 32768 pairs instead of 64 each.
 */
static void *slab_map(size_t bytes)
{
	size_t align = SLAB_HUGE_BYTES;
	char *raw = mmap(NULL, bytes + align, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	char *slab;
	size_t head;

	if (raw == MAP_FAILED)
		return NULL;
	slab = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
	head = (size_t)(slab - raw);
	if (head)
		munmap(raw, head);
	munmap(slab + bytes, align - head);
#ifdef MADV_HUGEPAGE
	madvise(slab, bytes, MADV_HUGEPAGE); /* a hint: fine if refused */
#endif
	return slab;
}

static int pool_grow(struct buddy_pool *p, uint64_t need)
{
	size_t n = p->slab_pairs ? p->slab_pairs : SLAB_FIRST_PAIRS;
	struct slab_hdr *hdr;
	bool mapped;
	char *slab;

	while (n < need + 1)
		n *= 2;
	mapped = n * PAIR_BYTES >= SLAB_HUGE_BYTES;
	slab = mapped ? slab_map(n * PAIR_BYTES) : aligned_alloc(PAIR_BYTES, n * PAIR_BYTES);
	if (!slab)
		return -ENOMEM;
	/* The leftover bump space of the previous slab goes to the free list. */
	while (p->bump != p->bump_end) {
		*(void **)p->bump = p->free_pairs;
		p->free_pairs = p->bump;
		p->free_count++;
		p->bump += PAIR_BYTES;
	}
	hdr = (struct slab_hdr *)slab;
	hdr->next = p->slabs;
	hdr->bytes = n * PAIR_BYTES;
	hdr->mapped = mapped;
	p->slabs = slab;
	p->bump = slab + PAIR_BYTES;
	p->bump_end = slab + n * PAIR_BYTES;
	p->bytes += n * PAIR_BYTES;
	if (n < SLAB_MAX_PAIRS)
		p->slab_pairs = n * 2;
	return 0;
}

/*
 * Make sure @n pairs can be taken without failing, so no operation ever has
 * to undo half-done splits. Cheap: one comparison on the hot path.
 */
static inline int pool_reserve(struct buddy_mm *mm, uint64_t n)
{
	struct buddy_pool *p = &mm->pool;

	if (unlikely(mm->fail_reserve_at) && --mm->fail_reserve_at == 0)
		return -ENOMEM;
	if (likely(p->free_count + (uint64_t)(p->bump_end - p->bump) / PAIR_BYTES >= n))
		return 0;
	return pool_grow(p, n);
}

static inline struct buddy_block *pair_get(struct buddy_mm *mm)
{
	struct buddy_pool *p = &mm->pool;
	void *pair = p->free_pairs;

	if (likely(pair)) {
		p->free_pairs = *(void **)pair;
		p->free_count--;
	} else {
		/* pool_reserve() guarantees room. */
		pair = p->bump;
		p->bump += PAIR_BYTES;
	}
	p->pairs_used++;
	return pair;
}

static inline void pair_put(struct buddy_mm *mm, struct buddy_block *pair)
{
	struct buddy_pool *p = &mm->pool;

	*(void **)pair = p->free_pairs;
	p->free_pairs = pair;
	p->free_count++;
	p->pairs_used--;
}

static void pool_destroy(struct buddy_pool *p)
{
	void *slab = p->slabs;

	while (slab) {
		struct slab_hdr *hdr = slab;
		void *next = hdr->next;

		if (hdr->mapped)
			munmap(slab, hdr->bytes);
		else
			free(slab);
		slab = next;
	}
	memset(p, 0, sizeof(*p));
}

/* ---- free lists ------------------------------------------------------------ */

static inline void fl_push(struct buddy_mm *mm, struct buddy_block *b)
{
	unsigned int c = hdr_clear(b), o = buddy_block_order(b);
	struct list_link *head = &mm->free_list[c][o];

	b->link.next = head->next;
	b->link.prev = head;
	head->next->prev = &b->link;
	head->next = &b->link;
	mm->nonempty[c] |= 1ull << o;
}

static inline void fl_remove(struct buddy_mm *mm, struct buddy_block *b)
{
	unsigned int c = hdr_clear(b), o = buddy_block_order(b);
	struct list_link *head = &mm->free_list[c][o];

	b->link.prev->next = b->link.next;
	b->link.next->prev = b->link.prev;
	if (head->next == head)
		mm->nonempty[c] &= ~(1ull << o);
}

/* ---- subtree summaries ----------------------------------------------------- */

static inline uint32_t max_u32(uint32_t a, uint32_t b)
{
	return a > b ? a : b;
}

/* Summary of a split block of order @order from its children's summaries. */
static inline uint32_t aug_merge(uint32_t l, uint32_t r, unsigned int order)
{
	uint32_t lf = l >> AUG_FF_SHIFT, rf = r >> AUG_FF_SHIFT, ff;

	/* Both children fully free (ff == child order + 1 == order): so is this. */
	if (lf == order && rf == order)
		ff = order + 1;
	else
		ff = max_u32(lf, rf);
	return max_u32(l & 0xff, r & 0xff) | max_u32(l & 0xff00, r & 0xff00) | ff << AUG_FF_SHIFT;
}

static uint32_t aug_refresh(struct buddy_block *b);

/*
 * The summary of any block. A split block's cached value is recomputed if
 * stale (AUG_INVALID): the work is bounded by the marks made since the last
 * search went this way.
 */
static inline uint32_t aug_get(struct buddy_block *b)
{
	uint32_t o1;

	switch (buddy_block_state(b)) {
	case BUDDY_STATE_FREE:
		o1 = buddy_block_order(b) + 1;
		return (o1 << (8 * hdr_clear(b))) | (o1 << AUG_FF_SHIFT);
	case BUDDY_STATE_SPLIT:
		if (likely(b->split.aug != AUG_INVALID))
			return b->split.aug;
		return aug_refresh(b);
	default:
		return 0;
	}
}

static uint32_t aug_refresh(struct buddy_block *b)
{
	struct buddy_block *kids = b->split.children;

	b->split.aug = aug_merge(aug_get(&kids[0]), aug_get(&kids[1]), buddy_block_order(b));
	return b->split.aug;
}

/*
 * @b changed state: mark the summaries above it stale. A stale block's
 * ancestors are all stale, so the walk stops at the first stale one: O(1)
 * amortised, and plain allocate/free never pay for recomputing.
 */
static inline void aug_mark_up(struct buddy_block *b)
{
	struct buddy_block *p;

	for (p = b->parent; p && p->split.aug != AUG_INVALID; p = p->parent)
		p->split.aug = AUG_INVALID;
}

static inline unsigned int aug_ff(struct buddy_block *b)
{
	return aug_get(b) >> AUG_FF_SHIFT;
}

static inline bool is_fully_free(struct buddy_block *b)
{
	return aug_ff(b) == buddy_block_order(b) + 1;
}

/* ---- split, merge, collapse ------------------------------------------------ */

/*
 * Split @b (free or allocated, on no list) into two children of its state
 * and clear bit; @b becomes split and loses its clear bit. Needs a reserved
 * pair. The children are on no list.
 */
static inline struct buddy_block *split_block(struct buddy_mm *mm, struct buddy_block *b)
{
	struct buddy_block *kids = pair_get(mm);
	unsigned int o = buddy_block_order(b) - 1;
	uint64_t off = buddy_block_offset(b);
	uint64_t keep = b->header & (BUDDY_HEADER_STATE | BUDDY_HEADER_CLEAR);

	kids[0].header = off | o | keep;
	kids[0].parent = b;
	kids[1].header = (off + (mm->chunk_size << o)) | o | keep;
	kids[1].parent = b;
	set_state(b, BUDDY_STATE_SPLIT, 0);
	b->split.children = kids;
	b->split.aug = AUG_INVALID;
	b->split.unused = 0;
	return kids;
}

/*
 * Make @b (on no list) free with clear bit @clear and merge it with free
 * buddies of the same clear state. Returns the resulting free block, which
 * is on its free list. Counters and summaries are the caller's business.
 */
static struct buddy_block *free_merge(struct buddy_mm *mm, struct buddy_block *b, uint64_t clear)
{
	const uint64_t want = BUDDY_STATE_FREE | clear;

	while (b->parent) {
		struct buddy_block *bud = buddy_block_buddy(b);
		struct buddy_block *parent = b->parent;

		if ((bud->header & (BUDDY_HEADER_STATE | BUDDY_HEADER_CLEAR)) != want)
			break;
		fl_remove(mm, bud);
		pair_put(mm, pair_of(b));
		b = parent;
	}
	set_state(b, BUDDY_STATE_FREE, clear);
	fl_push(mm, b);
	return b;
}

/* Release the subtree under split @b (all of it free) and its free blocks. */
static void collapse_rec(struct buddy_mm *mm, struct buddy_block *b)
{
	struct buddy_block *kids = b->split.children;
	int i;

	for (i = 0; i < 2; i++) {
		struct buddy_block *k = &kids[i];

		if (buddy_block_is_free(k)) {
			fl_remove(mm, k);
			if (buddy_block_is_clear(k))
				mm->clear_avail -= buddy_block_size(mm, k);
		} else {
			collapse_rec(mm, k);
		}
	}
	pair_put(mm, kids);
}

/*
 * Force merge: turn fully free split @b into one free dirty block, on no
 * list. Its cleared parts stop counting as cleared.
 */
static void collapse(struct buddy_mm *mm, struct buddy_block *b)
{
	collapse_rec(mm, b);
	set_state(b, BUDDY_STATE_FREE, 0);
}

/* ---- allocation primitives ------------------------------------------------- */

static inline void mark_allocated(struct buddy_mm *mm, struct buddy_block *b,
				  struct buddy_list *out)
{
	uint64_t sz = buddy_block_size(mm, b);

	set_state(b, BUDDY_STATE_ALLOCATED, b->header & BUDDY_HEADER_CLEAR);
	mm->avail -= sz;
	if (buddy_block_is_clear(b))
		mm->clear_avail -= sz;
	buddy_list_add_tail(out, b);
}

/* Free an allocated block (already unlinked) keeping its clear bit. */
static void free_allocated(struct buddy_mm *mm, struct buddy_block *b)
{
	uint64_t sz = buddy_block_size(mm, b);
	uint64_t clear = b->header & BUDDY_HEADER_CLEAR;

	mm->avail += sz;
	if (clear)
		mm->clear_avail += sz;
	aug_mark_up(free_merge(mm, b, clear));
}

static void free_list_keep_state(struct buddy_mm *mm, struct buddy_list *l)
{
	struct buddy_block *b, *n;

	buddy_list_for_each_safe(b, n, l) {
		buddy_list_del(b);
		free_allocated(mm, b);
	}
}

/*
 * Split free block @b (on no list) down to order @k, keeping the order-@k
 * block that starts at @target and putting the other halves on free lists.
 * Returns the kept block (free state, on no list). Pairs must be reserved.
 */
static struct buddy_block *split_down_to(struct buddy_mm *mm, struct buddy_block *b,
					 unsigned int k, uint64_t target)
{
	while (buddy_block_order(b) > k) {
		struct buddy_block *kids = split_block(mm, b);
		int keep = target >= buddy_block_offset(&kids[1]);

		fl_push(mm, &kids[!keep]);
		b = &kids[keep];
	}
	return b;
}

/*
 * Allocate the first @keep bytes of free block @b (on no list, ancestors
 * already marked stale) as blocks appended to @out in address order; the
 * rest goes back on the free lists. Used instead of allocate-then-trim when
 * a request was rounded up: the same result without splitting an allocated
 * block.
 */
static void alloc_prefix(struct buddy_mm *mm, struct buddy_block *b, uint64_t keep,
			 struct buddy_list *out)
{
	for (;;) {
		uint64_t half = buddy_block_size(mm, b) / 2;
		struct buddy_block *kids;

		if (keep == 2 * half) {
			mark_allocated(mm, b, out);
			return;
		}
		kids = split_block(mm, b);
		if (keep <= half) {
			fl_push(mm, &kids[1]);
			b = &kids[0];
		} else {
			mark_allocated(mm, &kids[0], out);
			keep -= half;
			b = &kids[1];
		}
	}
}

/* Pop a free block of order >= @k from the lists (preferring clear state
 * @pref) and split it down to order @k. NULL if there is none. */
static inline struct buddy_block *take_from_lists(struct buddy_mm *mm, unsigned int k,
						  unsigned int pref)
{
	uint64_t want = ~0ull << k;
	unsigned int c = pref;
	uint64_t m = mm->nonempty[c] & want;
	struct buddy_block *b;

	if (!m) {
		c ^= 1;
		m = mm->nonempty[c] & want;
		if (!m)
			return NULL;
	}
	b = buddy_link_block(mm->free_list[c][__builtin_ctzll(m)].next);
	fl_remove(mm, b);
	aug_mark_up(b);
	return split_down_to(mm, b, k, buddy_block_offset(b));
}

/* Largest order in [min_order, min(order, k)] of an aligned block inside [lo, hi). */
static int fit_order(const struct buddy_mm *mm, uint64_t lo, uint64_t hi, unsigned int o,
		     const struct find_req *q)
{
	int j = (int)(o < q->order ? o : q->order);

	for (; j >= (int)q->min_order && j > q->best_order; j--) {
		uint64_t req = mm->chunk_size << j;

		/* hi - lo >= req, and the first aligned start leaves room (no overflow). */
		if (hi - lo >= req && ((req - (lo & (req - 1))) & (req - 1)) <= hi - lo - req)
			return j;
	}
	return -1;
}

/* Largest order of a block under @b usable in @q's mode, from its summary. */
static inline int usable_order(struct buddy_block *b, const struct find_req *q)
{
	uint32_t aug = aug_get(b), v;

	switch (q->mode) {
	case FIND_PREF:
		v = (aug >> (8 * q->pref)) & 0xff;
		break;
	case FIND_ANY:
		v = max_u32(aug & 0xff, (aug >> 8) & 0xff);
		break;
	default:
		v = aug >> AUG_FF_SHIFT;
		break;
	}
	return (int)v - 1;
}

/*
 * Depth-first search under @b (which overlaps the range) for where to
 * allocate the largest block of order <= q->order, >= q->min_order, inside
 * [start, end): a free block holding a suitably aligned sub-block in the
 * range, or (FIND_FORCE, order == min_order) a fully free split block
 * inside the range. Subtrees whose summary cannot beat the best answer so
 * far, or that miss the range, are not entered. Stops at the first answer of
 * the wanted order; with topdown, higher addresses are tried first.
 */
static void find_rec(const struct buddy_mm *mm, struct buddy_block *b, struct find_req *q)
{
	uint64_t bs = buddy_block_offset(b), half;
	unsigned int o = buddy_block_order(b);
	struct buddy_block *kids;
	int i, first, cap[2];

	switch (buddy_block_state(b)) {
	case BUDDY_STATE_FREE: {
		uint64_t be = bs + (mm->chunk_size << o);
		uint64_t lo = bs > q->start ? bs : q->start;
		uint64_t hi = be < q->end ? be : q->end;
		int j;

		if (q->mode == FIND_PREF && hdr_clear(b) != q->pref)
			return;
		j = fit_order(mm, lo, hi, o, q);
		if (j > q->best_order) {
			q->best = b;
			q->best_order = j;
		}
		return;
	}
	case BUDDY_STATE_SPLIT:
		break;
	default:
		return;
	}
	if (q->mode == FIND_FORCE && o == q->order) {
		uint64_t be = bs + (mm->chunk_size << o);

		if (bs >= q->start && be <= q->end && is_fully_free(b)) {
			q->best = b;
			q->best_order = (int)o;
		}
		return;
	}
	kids = b->split.children;
	half = mm->chunk_size << (o - 1);
	for (i = 0; i < 2; i++) {
		uint64_t cs = bs + (uint64_t)i * half;

		cap[i] = -1;
		if (cs + half <= q->start || cs >= q->end || o - 1 < q->min_order)
			continue;
		/*
		 * Only a block inside the range is judged by its summary: one
		 * that sticks out summarises space we cannot use (at most two
		 * such per level), and not asking keeps the lazy refresh local.
		 */
		if (cs >= q->start && cs + half <= q->end)
			cap[i] = usable_order(&kids[i], q);
		else
			cap[i] = (int)o - 1;
		if (cap[i] > (int)q->order)
			cap[i] = (int)q->order;
	}
	/* The child that can give the larger block first; on a tie, by direction. */
	first = q->topdown ? 1 : 0;
	if (cap[!first] > cap[first])
		first = !first;
	for (i = 0; i < 2; i++) {
		int c = i ^ first;

		if (cap[c] < (int)q->min_order || cap[c] <= q->best_order)
			continue;
		find_rec(mm, &kids[c], q);
		if (q->best_order == (int)q->order)
			return;
	}
}

static void find_in_roots(struct buddy_mm *mm, struct find_req *q)
{
	unsigned int i;

	q->best = NULL;
	q->best_order = -1;
	for (i = 0; i < mm->n_roots && q->best_order != (int)q->order; i++) {
		struct buddy_block *root = &mm->roots[q->topdown ? mm->n_roots - 1 - i : i];
		uint64_t bs = buddy_block_offset(root), be = block_end(mm, root);

		if (be <= q->start || bs >= q->end)
			continue;
		if (bs >= q->start && be <= q->end) {
			int u = usable_order(root, q);

			if (u < (int)q->min_order || u <= q->best_order)
				continue;
		} else {
			/* Go straight down to the smallest block holding the whole range. */
			while (buddy_block_is_split(root) && buddy_block_order(root) > q->min_order) {
				struct buddy_block *r = &root->split.children[1];
				uint64_t mid = buddy_block_offset(r);

				if (q->end <= mid)
					root = &root->split.children[0];
				else if (q->start >= mid)
					root = r;
				else
					break;
			}
		}
		find_rec(mm, root, q);
	}
}

/*
 * Anywhere in the mm: a fully free block of order @k. First a cheap guess:
 * the newest free blocks below order k whose ancestors are fully free up to
 * order k (the usual case: a cleared block next to a dirty buddy). Then the
 * exact way: the first fully free block of order >= k from the roots,
 * followed down to order k (everything under a fully free block is fully
 * free); the ff summary is exact, so that never backtracks.
 */
static struct buddy_block *find_fully_free(struct buddy_mm *mm, unsigned int k)
{
	unsigned int i, j, c, need = k + 1;

	for (j = k; j-- > 0;) {
		for (c = 0; c < 2; c++) {
			struct list_link *head = &mm->free_list[c][j], *l = head->next;
			unsigned int tries;

			for (tries = 0; l != head && tries < FORCE_TRIES; tries++, l = l->next) {
				struct buddy_block *p = buddy_link_block(l);

				while (p->parent && buddy_block_order(p) < k &&
				       is_fully_free(p->parent))
					p = p->parent;
				if (buddy_block_order(p) == k)
					return p;
			}
		}
	}

	for (i = 0; i < mm->n_roots; i++) {
		struct buddy_block *b = &mm->roots[i];

		if (aug_ff(b) < need)
			continue;
		while (buddy_block_order(b) > k && buddy_block_is_split(b)) {
			struct buddy_block *kids = b->split.children;

			b = aug_ff(&kids[0]) >= need ? &kids[0] : &kids[1];
		}
		return b;
	}
	return NULL;
}

/*
 * Turn a search answer @b into a free block of order @k on no list: split a
 * free block down to the aligned order-k block inside [q->start, q->end)
 * (the lowest, or the highest with topdown), or merge a fully free split
 * block by force into one dirty block.
 */
static struct buddy_block *claim_found(struct buddy_mm *mm, struct buddy_block *b,
				       unsigned int k, const struct find_req *q)
{
	uint64_t req = mm->chunk_size << k, lo, hi, target;

	aug_mark_up(b);
	if (buddy_block_is_split(b)) {
		collapse(mm, b);
		return b;
	}
	fl_remove(mm, b);
	lo = buddy_block_offset(b) > q->start ? buddy_block_offset(b) : q->start;
	hi = block_end(mm, b) < q->end ? block_end(mm, b) : q->end;
	if (q->topdown)
		target = (hi & ~(req - 1)) - req;
	else
		target = (lo + req - 1) & ~(req - 1);
	return split_down_to(mm, b, k, target);
}

/*
 * One block of order @k (or, when @min_k < @k, the largest order down to
 * @min_k that exists), free state, on no list, the summaries above it
 * marked stale (so the caller may allocate it without marking again).
 * *@got is its order. Free buddies of different clear states are merged by
 * force only when nothing of order @min_k exists otherwise (as drm_buddy
 * does), so cleared blocks are not given up needlessly.
 */
static struct buddy_block *alloc_one(struct buddy_mm *mm, unsigned int k, unsigned int min_k,
				     uint64_t start, uint64_t end, unsigned int flags,
				     unsigned int *got)
{
	unsigned int pref = (flags & BUDDY_CLEAR_ALLOCATION) ? 1 : 0;
	struct find_req q;
	struct buddy_block *b;

	if (!(flags & (BUDDY_RANGE_ALLOCATION | BUDDY_TOPDOWN_ALLOCATION))) {
		for (;;) {
			uint64_t any;

			b = take_from_lists(mm, k, pref);
			if (b) {
				*got = k;
				return b;
			}
			if (k == min_k)
				break;
			/* Nothing >= k anywhere: jump to the largest order that exists. */
			any = (mm->nonempty[0] | mm->nonempty[1]) & ((1ull << k) - 1);
			k = any ? ilog2_u64(any) : 0;
			if (k < min_k)
				k = min_k;
		}
		if (!mm->clear_avail) /* no cleared block: nothing to merge by force */
			return NULL;
		b = find_fully_free(mm, k);
		if (!b)
			return NULL;
		q.start = 0;
		q.end = mm->size;
		q.topdown = false;
		*got = k;
		return claim_found(mm, b, k, &q);
	}

	q.start = (flags & BUDDY_RANGE_ALLOCATION) ? start : 0;
	q.end = (flags & BUDDY_RANGE_ALLOCATION) ? end : mm->size;
	q.topdown = (flags & BUDDY_TOPDOWN_ALLOCATION) != 0;
	q.pref = pref;
	/* The largest order available in the range, in either clear state... */
	q.order = k;
	q.min_order = min_k;
	q.mode = FIND_ANY;
	find_in_roots(mm, &q);
	if (q.best) {
		struct buddy_block *any = q.best;
		unsigned int j = (unsigned int)q.best_order;

		/* ...from a block in the preferred state if one has it. */
		if (hdr_clear(any) != pref) {
			q.order = q.min_order = j;
			q.mode = FIND_PREF;
			find_in_roots(mm, &q);
			if (q.best)
				any = q.best;
		}
		*got = j;
		return claim_found(mm, any, j, &q);
	}
	if (!mm->clear_avail)
		return NULL;
	q.order = q.min_order = min_k;
	q.mode = FIND_FORCE;
	find_in_roots(mm, &q);
	if (!q.best)
		return NULL;
	*got = min_k;
	return claim_found(mm, q.best, min_k, &q);
}

/* ---- exact ranges ----------------------------------------------------------- */

/* Is [a, e) free (free blocks or fully free split blocks) under @b? */
static bool range_free_rec(const struct buddy_mm *mm, struct buddy_block *b, uint64_t a,
			   uint64_t e)
{
	uint64_t bs = buddy_block_offset(b), be = block_end(mm, b);

	if (be <= a || bs >= e)
		return true;
	switch (buddy_block_state(b)) {
	case BUDDY_STATE_FREE:
		return true;
	case BUDDY_STATE_SPLIT:
		if (is_fully_free(b))
			return true;
		return range_free_rec(mm, &b->split.children[0], a, e) &&
		       range_free_rec(mm, &b->split.children[1], a, e);
	default:
		return false;
	}
}

static bool range_is_free(struct buddy_mm *mm, uint64_t a, uint64_t e)
{
	unsigned int i;

	for (i = 0; i < mm->n_roots; i++)
		if (!range_free_rec(mm, &mm->roots[i], a, e))
			return false;
	return true;
}

/*
 * Allocate every block covering [a, e) under @b (known free), splitting free
 * blocks at the edges. Free blocks keep their clear state. Appends to @out in
 * address order. Every split block visited is marked stale; the walk starts
 * at the roots, so their ancestors are too.
 */
static void carve_rec(struct buddy_mm *mm, struct buddy_block *b, uint64_t a, uint64_t e,
		      struct buddy_list *out)
{
	uint64_t bs = buddy_block_offset(b), be = block_end(mm, b);
	struct buddy_block *kids;

	if (be <= a || bs >= e)
		return;
	if (buddy_block_is_free(b)) {
		fl_remove(mm, b);
		if (a <= bs && be <= e) {
			mark_allocated(mm, b, out);
			return;
		}
		kids = split_block(mm, b);
		fl_push(mm, &kids[0]);
		fl_push(mm, &kids[1]);
	} else {
		kids = b->split.children;
	}
	carve_rec(mm, &kids[0], a, e, out);
	carve_rec(mm, &kids[1], a, e, out);
	b->split.aug = AUG_INVALID; /* all its ancestors are visited too */
}

/* Pairs needed to cut an exact range out: two edge paths from the top. */
static inline uint64_t edge_pairs(const struct buddy_mm *mm)
{
	return 2ull * mm->max_order + 2;
}

static int alloc_exact(struct buddy_mm *mm, uint64_t a, uint64_t size, struct buddy_list *out)
{
	struct buddy_list tmp = BUDDY_LIST_INIT(tmp);
	unsigned int i;
	int err;

	if (!range_is_free(mm, a, a + size))
		return -ENOSPC;
	err = pool_reserve(mm, edge_pairs(mm));
	if (err)
		return err;
	for (i = 0; i < mm->n_roots; i++)
		carve_rec(mm, &mm->roots[i], a, a + size, &tmp);
	buddy_list_splice_tail(out, &tmp);
	return 0;
}

/* ---- contiguous "try harder" ----------------------------------------------- */

/*
 * The node that covers @pos if it is free (a free block or a fully free
 * split block), else NULL.
 */
static struct buddy_block *free_node_at(struct buddy_mm *mm, uint64_t pos)
{
	struct buddy_block *b = NULL;
	unsigned int i;

	for (i = 0; i < mm->n_roots; i++) {
		if (pos < block_end(mm, &mm->roots[i])) {
			b = &mm->roots[i];
			break;
		}
	}
	while (b) {
		switch (buddy_block_state(b)) {
		case BUDDY_STATE_FREE:
			return b;
		case BUDDY_STATE_SPLIT:
			if (is_fully_free(b))
				return b;
			b = &b->split.children[pos >= buddy_block_offset(&b->split.children[1])];
			break;
		default:
			return NULL;
		}
	}
	return NULL;
}

/* Free bytes in a run starting at @pos going up, at most @cap. */
static uint64_t free_run_up(struct buddy_mm *mm, uint64_t pos, uint64_t cap)
{
	uint64_t run = 0;

	while (run < cap) {
		struct buddy_block *b = free_node_at(mm, pos + run);

		if (!b)
			break;
		run = block_end(mm, b) - pos;
	}
	return run < cap ? run : cap;
}

/* Free bytes in a run ending at @pos going down, at most @cap. */
static uint64_t free_run_down(struct buddy_mm *mm, uint64_t pos, uint64_t cap)
{
	uint64_t run = 0;

	while (run < cap && pos - run > 0) {
		struct buddy_block *b = free_node_at(mm, pos - run - 1);

		if (!b)
			break;
		run = pos - buddy_block_offset(b);
	}
	return run < cap ? run : cap;
}

struct contig_req {
	uint64_t size, min_block, rs, re;
	unsigned int anchor_order;
	uint64_t skip_below; /* end of the last run measured (too short) */
	struct buddy_list *out;
};

/*
 * Visit, in address order, the maximal fully free nodes of order >=
 * anchor_order under @b (pruned by the ff summary). Every free run of
 * @size bytes contains an aligned fully free interval of half of
 * 2^floor(log2(size)), so it contains one of these anchors. Measure the run
 * through each anchor and cut @size bytes out of the first long enough one.
 * Returns 1 when allocated, 0 to go on, or a negative errno.
 */
static int contig_rec(struct buddy_mm *mm, struct buddy_block *b, struct contig_req *q)
{
	uint64_t bs = buddy_block_offset(b), be = block_end(mm, b), a, up, down, lhs;
	int r;

	if (be <= q->rs || bs >= q->re || be <= q->skip_below ||
	    aug_ff(b) < q->anchor_order + 1)
		return 0;
	if (!is_fully_free(b)) {
		if (!buddy_block_is_split(b))
			return 0;
		r = contig_rec(mm, &b->split.children[0], q);
		return r ? r : contig_rec(mm, &b->split.children[1], q);
	}
	a = bs > q->rs ? bs : q->rs;
	if (a < q->skip_below)
		a = q->skip_below; /* inside a run already measured: nothing new below */
	up = free_run_up(mm, a, q->re - a < q->size ? q->re - a : q->size);
	if (up >= q->size) {
		r = alloc_exact(mm, a, q->size, q->out);
		return r ? r : 1;
	}
	q->skip_below = a + up;
	lhs = q->size - up;
	lhs = (lhs + q->min_block - 1) & ~(q->min_block - 1);
	if (lhs > a - q->rs)
		return 0;
	down = free_run_down(mm, a, lhs);
	if (down < lhs)
		return 0;
	r = alloc_exact(mm, a - lhs, q->size, q->out);
	return r ? r : 1;
}

/*
 * A contiguous run of exactly @size bytes in [rs, re) that no single block
 * holds: it may cross buddy boundaries and clear states. Blocks keep their
 * clear state.
 */
static int alloc_contig_try_harder(struct buddy_mm *mm, uint64_t size, uint64_t min_block,
				   uint64_t rs, uint64_t re, struct buddy_list *out)
{
	unsigned int top = ilog2_u64(size >> mm->chunk_shift), i;
	struct contig_req q = {
		.size = size, .min_block = min_block, .rs = rs, .re = re,
		.anchor_order = top - 1, .out = out,
	};

	if (top == 0)
		return -ENOSPC; /* one chunk: any free block would have done */
	for (i = 0; i < mm->n_roots; i++) {
		int r = contig_rec(mm, &mm->roots[i], &q);

		if (r)
			return r < 0 ? r : 0;
	}
	return -ENOSPC;
}

/* ---- trim ------------------------------------------------------------------- */

/*
 * Keep the parts of allocated @b (on no list) inside [a, e) allocated,
 * appended to @out in address order; free the rest with clear bit @clear.
 * A freed part never has a free buddy (its buddy holds kept bytes), so
 * nothing merges. Pairs must be reserved; the blocks split here are marked
 * stale, the caller marks those above @b.
 */
static void trim_rec(struct buddy_mm *mm, struct buddy_block *b, uint64_t a, uint64_t e,
		     uint64_t clear, struct buddy_list *out)
{
	uint64_t bs = buddy_block_offset(b), be = block_end(mm, b);
	struct buddy_block *kids;

	if (a <= bs && be <= e) {
		buddy_list_add_tail(out, b);
		return;
	}
	if (be <= a || bs >= e) {
		mm->avail += be - bs;
		if (clear)
			mm->clear_avail += be - bs;
		set_state(b, BUDDY_STATE_FREE, clear);
		fl_push(mm, b);
		return;
	}
	kids = split_block(mm, b);
	trim_rec(mm, &kids[0], a, e, clear, out);
	trim_rec(mm, &kids[1], a, e, clear, out);
	b->split.aug = AUG_INVALID;
}

static int trim_block(struct buddy_mm *mm, struct buddy_block *b, uint64_t a, uint64_t len,
		      uint64_t clear, struct buddy_list *out)
{
	int err = pool_reserve(mm, 2ull * buddy_block_order(b) + 2);

	if (err)
		return err;
	buddy_list_del(b);
	trim_rec(mm, b, a, a + len, clear, out);
	aug_mark_up(b);
	return 0;
}

int buddy_block_trim(struct buddy_mm *mm, const uint64_t *start, uint64_t new_size,
		     struct buddy_list *blocks)
{
	struct buddy_list tmp = BUDDY_LIST_INIT(tmp);
	struct buddy_block *b;
	uint64_t bs, bsz, ns;
	int err;

	if (!mm || !blocks || !mm->n_roots) {
		buddy_log(mm, "trim: NULL allocator or list");
		return -EINVAL;
	}
	b = buddy_list_first(blocks);
	if (!b || buddy_list_next(blocks, b)) {
		buddy_log(mm, "trim: the list must hold exactly one block");
		return -EINVAL;
	}
	if (!buddy_block_is_allocated(b)) {
		buddy_log(mm, "trim: block at 0x%llx is not allocated",
			  (unsigned long long)buddy_block_offset(b));
		return -EINVAL;
	}
	bs = buddy_block_offset(b);
	bsz = buddy_block_size(mm, b);
	if (!new_size || new_size > bsz || (new_size & (mm->chunk_size - 1))) {
		buddy_log(mm, "trim: new size 0x%llx is 0, unaligned or above the block's 0x%llx",
			  (unsigned long long)new_size, (unsigned long long)bsz);
		return -EINVAL;
	}
	if (new_size == bsz)
		return 0;
	ns = bs;
	if (start) {
		ns = *start;
		if (ns < bs || (ns & (mm->chunk_size - 1)) || ns - bs > bsz - new_size) {
			buddy_log(mm, "trim: start 0x%llx + 0x%llx is not inside block [0x%llx, +0x%llx)",
				  (unsigned long long)ns, (unsigned long long)new_size,
				  (unsigned long long)bs, (unsigned long long)bsz);
			return -EINVAL;
		}
	}
	/*
	 * The caller may have written to the block since it was handed out, so
	 * what is cut off goes back dirty (drm_buddy keeps the clear bit).
	 */
	err = trim_block(mm, b, ns, new_size, 0, &tmp);
	if (err)
		return err;
	buddy_list_splice_tail(blocks, &tmp);
	return 0;
}

/* ---- public: allocation ----------------------------------------------------- */

int buddy_alloc_blocks(struct buddy_mm *mm, uint64_t start, uint64_t end, uint64_t size,
		       uint64_t min_block_size, struct buddy_list *blocks, unsigned int flags)
{
	struct buddy_list tmp = BUDDY_LIST_INIT(tmp);
	uint64_t orig_size = size, orig_min = min_block_size, pages, cmask;
	unsigned int order, min_order;
	bool contig = flags & BUDDY_CONTIGUOUS_ALLOCATION;
	bool range = flags & BUDDY_RANGE_ALLOCATION;
	bool too_big = false;
	int err;

	if (!mm || !blocks || !mm->n_roots) {
		buddy_log(mm, "alloc: NULL allocator or list");
		return -EINVAL;
	}
	cmask = mm->chunk_size - 1;
	if (flags & ~BUDDY_ALLOC_FLAGS_ALL) {
		buddy_log(mm, "alloc: unknown flags 0x%x", flags & ~BUDDY_ALLOC_FLAGS_ALL);
		return -EINVAL;
	}
	if (!size || ((start | end | size) & cmask)) {
		buddy_log(mm, "alloc: size 0x%llx, start 0x%llx or end 0x%llx is 0 or not a multiple of the chunk size 0x%llx",
			  (unsigned long long)size, (unsigned long long)start,
			  (unsigned long long)end, (unsigned long long)mm->chunk_size);
		return -EINVAL;
	}
	if (!is_pow2(min_block_size) || min_block_size < mm->chunk_size) {
		buddy_log(mm, "alloc: min block size 0x%llx is not a power of two >= the chunk size",
			  (unsigned long long)min_block_size);
		return -EINVAL;
	}
	if (end > mm->size || start > end || size > mm->size - start) {
		buddy_log(mm, "alloc: [0x%llx, 0x%llx) size 0x%llx does not fit in 0x%llx bytes",
			  (unsigned long long)start, (unsigned long long)end,
			  (unsigned long long)size, (unsigned long long)mm->size);
		return -EINVAL;
	}
	if (range && end - start < size) {
		buddy_log(mm, "alloc: range [0x%llx, 0x%llx) is smaller than size 0x%llx",
			  (unsigned long long)start, (unsigned long long)end,
			  (unsigned long long)size);
		return -EINVAL;
	}

	/* The whole of [start, end): exactly that range. */
	if (end - start == size) {
		if ((start | end) & (min_block_size - 1)) {
			buddy_log(mm, "alloc: exact range [0x%llx, 0x%llx) not aligned to min block 0x%llx",
				  (unsigned long long)start, (unsigned long long)end,
				  (unsigned long long)min_block_size);
			return -EINVAL;
		}
		return alloc_exact(mm, start, size, blocks);
	}

	if (contig) {
		if (size > (1ull << 63)) {
			too_big = true;
		} else {
			size = 1ull << (64 - __builtin_clzll(size - 1));
			if (size < min_block_size)
				size = min_block_size;
			min_block_size = size;
		}
	} else if (size & (min_block_size - 1)) {
		uint64_t up = (size + min_block_size - 1) & ~(min_block_size - 1);

		if (up < size)
			too_big = true;
		size = up;
	}
	if (too_big || size > mm->size || ilog2_u64(size >> mm->chunk_shift) > mm->max_order) {
		/* drm_buddy: only a plain contiguous request gets the fallback here. */
		if (contig && !range)
			return alloc_contig_try_harder(mm, orig_size, orig_min, 0, mm->size,
						       blocks);
		buddy_log(mm, "alloc: size 0x%llx rounds up to 0x%llx, more than the largest block",
			  (unsigned long long)orig_size, (unsigned long long)size);
		return -EINVAL;
	}
	if (range && size > end - start) {
		/* The rounded-up block cannot fit; a contiguous run still may. */
		if (contig)
			return alloc_contig_try_harder(mm, orig_size, orig_min, start, end,
						       blocks);
		buddy_log(mm, "alloc: size 0x%llx rounds up to 0x%llx, more than the range",
			  (unsigned long long)orig_size, (unsigned long long)size);
		return -EINVAL;
	}

	pages = size >> mm->chunk_shift;
	order = ilog2_u64(pages);
	min_order = ilog2_u64(min_block_size) - mm->chunk_shift;
	if (!range) {
		start = 0;
		end = mm->size;
	}

	while (pages) {
		struct buddy_block *b;
		unsigned int hi = ilog2_u64(pages), got;

		if (order > hi)
			order = hi;
		err = pool_reserve(mm, 2ull * mm->max_order + 2);
		if (err)
			goto out_free;
		b = alloc_one(mm, order, min_order, start, end, flags, &got);
		if (!b) {
			if (contig) {
				free_list_keep_state(mm, &tmp);
				return alloc_contig_try_harder(mm, orig_size, orig_min, start, end,
							       blocks);
			}
			err = -ENOSPC;
			goto out_free;
		}
		order = got;
		pages -= 1ull << order;
		if (!pages && orig_size != size && !(flags & BUDDY_TRIM_DISABLE)) {
			/*
			 * The last block is the smallest and the excess is below
			 * min_block_size: trim it back by allocating only its prefix.
			 */
			alloc_prefix(mm, b, buddy_block_size(mm, b) - (size - orig_size), &tmp);
			break;
		}
		mark_allocated(mm, b, &tmp); /* alloc_one() marked the ancestors */
	}
	buddy_list_splice_tail(blocks, &tmp);
	return 0;

out_free:
	free_list_keep_state(mm, &tmp);
	return err;
}

/* ---- public: free ------------------------------------------------------------ */

static bool block_ok_to_free(const struct buddy_mm *mm, const struct buddy_block *b)
{
	if (!b || !buddy_block_is_allocated(b) || buddy_block_order(b) > mm->max_order ||
	    block_end(mm, b) > mm->size) {
		buddy_log(mm, "free: block %p (offset 0x%llx) is not an allocated block",
			  (const void *)b, b ? (unsigned long long)buddy_block_offset(b) : 0ull);
		return false;
	}
	return true;
}

int buddy_free_block(struct buddy_mm *mm, struct buddy_block *b, unsigned int flags)
{
	if (!mm || !mm->n_roots || (flags & ~BUDDY_CLEARED)) {
		buddy_log(mm, "free: NULL allocator or unknown flags 0x%x", flags);
		return -EINVAL;
	}
	if (!block_ok_to_free(mm, b))
		return -EINVAL;
	buddy_list_del(b);
	set_state(b, BUDDY_STATE_ALLOCATED, (flags & BUDDY_CLEARED) ? BUDDY_HEADER_CLEAR : 0);
	free_allocated(mm, b);
	return 0;
}

int buddy_free_list(struct buddy_mm *mm, struct buddy_list *blocks, unsigned int flags)
{
	struct buddy_block *b, *n;
	uint64_t clear = (flags & BUDDY_CLEARED) ? BUDDY_HEADER_CLEAR : 0;
	int err = 0;

	if (!mm || !blocks || !mm->n_roots || (flags & ~BUDDY_CLEARED)) {
		buddy_log(mm, "free: NULL allocator/list or unknown flags 0x%x", flags);
		return -EINVAL;
	}
	/* The whole list goes: no need to unlink blocks one by one. */
	buddy_list_for_each_safe(b, n, blocks) {
		/* The list is a pointer chase: start on the next block's line now. */
		if (n)
			__builtin_prefetch(n);
		if (!block_ok_to_free(mm, b)) {
			err = -EINVAL; /* not ours to touch: skip it */
			continue;
		}
		set_state(b, BUDDY_STATE_ALLOCATED, clear);
		free_allocated(mm, b);
	}
	buddy_list_init(blocks);
	return err;
}

/* ---- public: reset clear ------------------------------------------------------ */

/* Merge every maximal fully free split block under @b into one dirty block. */
static void collapse_all_rec(struct buddy_mm *mm, struct buddy_block *b)
{
	struct buddy_block *kids;

	if (!buddy_block_is_split(b) || aug_ff(b) == 0)
		return;
	if (is_fully_free(b)) {
		collapse(mm, b); /* bytes stay free; only clear_avail changed */
		aug_mark_up(free_merge(mm, b, 0));
		return;
	}
	kids = b->split.children;
	collapse_all_rec(mm, &kids[0]);
	collapse_all_rec(mm, &kids[1]);
}

int buddy_reset_clear(struct buddy_mm *mm, bool is_clear)
{
	unsigned int i, o, from = is_clear ? 0 : 1;

	if (!mm || !mm->n_roots) {
		buddy_log(mm, "reset_clear: NULL or uninitialised allocator");
		return -EINVAL;
	}
	for (i = 0; i < mm->n_roots; i++)
		collapse_all_rec(mm, &mm->roots[i]);
	for (o = 0; o <= mm->max_order; o++) {
		struct list_link *head = &mm->free_list[from][o];

		while (head->next != head) {
			struct buddy_block *b = buddy_link_block(head->next);

			fl_remove(mm, b);
			set_state(b, BUDDY_STATE_FREE, is_clear ? BUDDY_HEADER_CLEAR : 0);
			fl_push(mm, b);
			aug_mark_up(b);
		}
	}
	mm->clear_avail = is_clear ? mm->avail : 0;
	return 0;
}

/* ---- public: init / fini -------------------------------------------------------- */

void buddy_set_log(struct buddy_mm *mm, void (*fn)(void *arg, const char *msg), void *arg)
{
	if (!mm)
		return;
	mm->log = fn;
	mm->log_arg = arg;
}

int buddy_init(struct buddy_mm *mm, uint64_t size, uint64_t chunk_size)
{
	uint64_t off = 0;
	unsigned int c, o;

	if (!mm) {
		buddy_log(NULL, "init: NULL allocator");
		return -EINVAL;
	}
	/* Nothing in *mm is trusted: it may be uninitialised memory. */
	memset(mm, 0, sizeof(*mm));
	if (!is_pow2(chunk_size) || chunk_size < BUDDY_MIN_CHUNK || size < chunk_size) {
		buddy_log(mm, "init: chunk size 0x%llx must be a power of two >= 4096 and <= size 0x%llx",
			  (unsigned long long)chunk_size, (unsigned long long)size);
		return -EINVAL;
	}
	size &= ~(chunk_size - 1);
	mm->size = size;
	mm->avail = size;
	mm->chunk_size = chunk_size;
	mm->chunk_shift = ilog2_u64(chunk_size);
	mm->max_order = ilog2_u64(size) - mm->chunk_shift;
	for (c = 0; c < 2; c++)
		for (o = 0; o <= BUDDY_MAX_ORDER; o++)
			mm->free_list[c][o].next = mm->free_list[c][o].prev = &mm->free_list[c][o];
	/* One root per set bit, largest first: each is aligned to its size. */
	while (size) {
		struct buddy_block *root = &mm->roots[mm->n_roots++];

		o = ilog2_u64(size) - mm->chunk_shift;
		root->header = off | o | BUDDY_STATE_FREE;
		root->parent = NULL;
		fl_push(mm, root);
		off += chunk_size << o;
		size -= chunk_size << o;
	}
	return 0;
}

static void leaks_rec(const struct buddy_mm *mm, struct buddy_block *b, uint64_t *n)
{
	switch (buddy_block_state(b)) {
	case BUDDY_STATE_ALLOCATED:
		if (*n < LEAKS_LOGGED)
			buddy_log(mm, "fini: leak: block [0x%llx, 0x%llx) still allocated",
				  (unsigned long long)buddy_block_offset(b),
				  (unsigned long long)block_end(mm, b));
		(*n)++;
		break;
	case BUDDY_STATE_SPLIT:
		if (is_fully_free(b))
			break;
		leaks_rec(mm, &b->split.children[0], n);
		leaks_rec(mm, &b->split.children[1], n);
		break;
	default:
		break;
	}
}

int buddy_fini(struct buddy_mm *mm)
{
	uint64_t leaks = 0;
	unsigned int i;

	if (!mm || !mm->n_roots)
		return 0;
	for (i = 0; i < mm->n_roots; i++)
		leaks_rec(mm, &mm->roots[i], &leaks);
	if (leaks) {
		buddy_log(mm, "fini: %llu block(s) still allocated, %llu of %llu bytes in use",
			  (unsigned long long)leaks, (unsigned long long)(mm->size - mm->avail),
			  (unsigned long long)mm->size);
	}
	pool_destroy(&mm->pool);
	memset(mm, 0, sizeof(*mm));
	return leaks > INT32_MAX ? INT32_MAX : (int)leaks;
}

/* ---- public: invariant checker -------------------------------------------------- */

struct check_ctx {
	const struct buddy_mm *mm;
	uint64_t free_bytes, clear_bytes, alloc_bytes, nodes;
	uint64_t nfree[2][BUDDY_MAX_ORDER + 1];
};

#define CHECK_FAIL(mm, b, ...)                                                          \
	do {                                                                             \
		char what_[160];                                                         \
		snprintf(what_, sizeof(what_), __VA_ARGS__);                             \
		buddy_log((mm), "check: %s (block %p header 0x%llx offset 0x%llx order %u)", \
			  what_, (const void *)(b), (unsigned long long)(b)->header,      \
			  (unsigned long long)buddy_block_offset(b), buddy_block_order(b)); \
		return -EINVAL;                                                          \
	} while (0)

static int check_rec(struct check_ctx *x, const struct buddy_block *b, uint64_t off,
		     unsigned int order, const struct buddy_block *parent, uint32_t *aug)
{
	const struct buddy_mm *mm = x->mm;
	uint64_t sz = mm->chunk_size << order;
	const struct buddy_block *kids;
	uint32_t la, ra;
	int err;

	x->nodes++;
	*aug = 0;
	if (buddy_block_offset(b) != off || buddy_block_order(b) != order)
		CHECK_FAIL(mm, b, "expected offset 0x%llx order %u", (unsigned long long)off, order);
	if (b->parent != parent)
		CHECK_FAIL(mm, b, "wrong parent");
	if (off & (sz - 1))
		CHECK_FAIL(mm, b, "offset not aligned to size 0x%llx", (unsigned long long)sz);
	if (b->header & 0xe00)
		CHECK_FAIL(mm, b, "unused header bits set");
	if (parent) {
		const struct buddy_block *bud = buddy_block_buddy(b);

		if (bud->parent != parent || buddy_block_offset(bud) != (off ^ sz) ||
		    buddy_block_order(bud) != order)
			CHECK_FAIL(mm, b, "buddy is not at offset ^ size");
		if (buddy_block_is_free(b) && buddy_block_is_free(bud) &&
		    hdr_clear(b) == hdr_clear(bud))
			CHECK_FAIL(mm, b, "block and its buddy are both free with the same clear state");
	}
	switch (buddy_block_state(b)) {
	case BUDDY_STATE_FREE:
		x->free_bytes += sz;
		if (buddy_block_is_clear(b))
			x->clear_bytes += sz;
		x->nfree[hdr_clear(b)][order]++;
		*aug = (order + 1) << (8 * hdr_clear(b)) | (order + 1) << AUG_FF_SHIFT;
		return 0;
	case BUDDY_STATE_ALLOCATED:
		x->alloc_bytes += sz;
		return 0;
	case BUDDY_STATE_SPLIT:
		break;
	default:
		CHECK_FAIL(mm, b, "invalid state");
	}
	if (!order)
		CHECK_FAIL(mm, b, "order-0 block is split");
	if (buddy_block_is_clear(b))
		CHECK_FAIL(mm, b, "split block has the clear bit");
	kids = b->split.children;
	if (!kids || ((uintptr_t)kids & (PAIR_BYTES - 1)))
		CHECK_FAIL(mm, b, "children pair missing or misaligned");
	err = check_rec(x, &kids[0], off, order - 1, b, &la);
	if (!err)
		err = check_rec(x, &kids[1], off + sz / 2, order - 1, b, &ra);
	if (err)
		return err;
	*aug = aug_merge(la, ra, order);
	if (b->split.aug == AUG_INVALID) {
		if (parent && parent->split.aug != AUG_INVALID)
			CHECK_FAIL(mm, b, "stale summary under an up-to-date parent");
	} else if (b->split.aug != *aug) {
		CHECK_FAIL(mm, b, "wrong subtree summary 0x%x, expected 0x%x", b->split.aug, *aug);
	}
	return 0;
}

int buddy_check(const struct buddy_mm *mm)
{
	struct check_ctx *x;
	uint64_t off = 0, total = 0;
	unsigned int i, c, o;
	int err = 0;

	if (!mm || !mm->n_roots) {
		buddy_log(mm, "check: NULL or uninitialised allocator");
		return -EINVAL;
	}
	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	x->mm = mm;
	if (mm->n_roots != (unsigned int)__builtin_popcountll(mm->size) ||
	    buddy_block_order(&mm->roots[0]) != mm->max_order) {
		buddy_log(mm, "check: %u roots / max order %u do not match size 0x%llx",
			  mm->n_roots, mm->max_order, (unsigned long long)mm->size);
		err = -EINVAL;
		goto out;
	}
	for (i = 0; i < mm->n_roots && !err; i++) {
		unsigned int ro = buddy_block_order(&mm->roots[i]);

		if (i && ro >= buddy_block_order(&mm->roots[i - 1])) {
			buddy_log(mm, "check: root %u not smaller than the one before", i);
			err = -EINVAL;
			break;
		}
		uint32_t aug;

		err = check_rec(x, &mm->roots[i], off, ro, NULL, &aug);
		off += mm->chunk_size << ro;
		total += mm->chunk_size << ro;
	}
	if (err)
		goto out;
	if (total != mm->size) {
		buddy_log(mm, "check: roots cover 0x%llx of 0x%llx bytes", (unsigned long long)total,
			  (unsigned long long)mm->size);
		err = -EINVAL;
		goto out;
	}
	for (c = 0; c < 2 && !err; c++) {
		for (o = 0; o <= BUDDY_MAX_ORDER; o++) {
			const struct list_link *head = &mm->free_list[c][o], *l;
			uint64_t n = 0;

			for (l = head->next; l != head; l = l->next) {
				const struct buddy_block *b = buddy_link_block(l);

				if (l->next->prev != l || ++n > x->nodes) {
					buddy_log(mm, "check: free list [%u][%u] is corrupt", c, o);
					err = -EINVAL;
					goto out;
				}
				if (!buddy_block_is_free(b) || buddy_block_order(b) != o ||
				    hdr_clear(b) != c) {
					buddy_log(mm, "check: free list [%u][%u] holds block 0x%llx header 0x%llx",
						  c, o, (unsigned long long)buddy_block_offset(b),
						  (unsigned long long)b->header);
					err = -EINVAL;
					goto out;
				}
			}
			if (n != x->nfree[c][o] || !!(mm->nonempty[c] >> o & 1) != (n != 0)) {
				buddy_log(mm, "check: free list [%u][%u] has %llu blocks, tree has %llu, mask bit %u",
					  c, o, (unsigned long long)n,
					  (unsigned long long)x->nfree[c][o],
					  (unsigned int)(mm->nonempty[c] >> o & 1));
				err = -EINVAL;
				goto out;
			}
		}
	}
	if (x->free_bytes != mm->avail || x->clear_bytes != mm->clear_avail ||
	    x->free_bytes + x->alloc_bytes != mm->size) {
		buddy_log(mm, "check: counters avail 0x%llx clear 0x%llx, recount free 0x%llx clear 0x%llx allocated 0x%llx of 0x%llx",
			  (unsigned long long)mm->avail, (unsigned long long)mm->clear_avail,
			  (unsigned long long)x->free_bytes, (unsigned long long)x->clear_bytes,
			  (unsigned long long)x->alloc_bytes, (unsigned long long)mm->size);
		err = -EINVAL;
		goto out;
	}
	if (x->nodes - mm->n_roots != mm->pool.pairs_used * 2) {
		buddy_log(mm, "check: %llu non-root blocks in the tree, pool says %llu",
			  (unsigned long long)(x->nodes - mm->n_roots),
			  (unsigned long long)(mm->pool.pairs_used * 2));
		err = -EINVAL;
	}
out:
	free(x);
	return err;
}
