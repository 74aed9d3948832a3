/* SPDX-License-Identifier: MIT */
/*
 * VRAM buddy allocator (internal to ugpu; see docs/buddy.md for the design).
 *
 * Manages an address range [0, size) in power-of-two blocks of at least
 * chunk_size bytes. Semantics follow the Linux kernel's drm_buddy: range,
 * top-down, contiguous (with trim and a "try harder" fallback), cleared/dirty
 * tracking with a forced merge, and block trimming. The data structures are
 * our own and are built for speed under fragmentation:
 *   - per-order free lists split by clear state, O(1) push/pop/remove, with a
 *     64-bit mask per state that finds the smallest non-empty order in one
 *     instruction;
 *   - a 32-byte block, children allocated as a 64-byte pair from a pool, so
 *     a block's buddy is found by address arithmetic;
 *   - every split block caches, for its subtree, the largest free order per
 *     clear state and the largest "fully free" order (a region whose blocks
 *     are all free but not merged because their clear states differ), so
 *     range, top-down and forced-merge searches prune whole subtrees. The
 *     cache is refreshed lazily, so plain allocate/free do not pay for it;
 *   - memory for block metadata is reserved before an operation changes
 *     anything: no -ENOMEM half-way, nothing to undo.
 *
 * Threading: NOT thread safe. One struct buddy_mm and every block allocated
 * from it must be used by one thread at a time; the caller serialises (the
 * BO layer holds its VRAM manager lock around every call). Nothing here
 * blocks or sleeps.
 *
 * Errors: every action returns 0 or a negative errno; bad caller input is
 * -EINVAL with a one-line message through the log hook, never a crash.
 */
#ifndef UGPU_MM_BUDDY_H
#define UGPU_MM_BUDDY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/list.h"

/* Largest order a block can have: offsets live in header bits 63..12. */
#define BUDDY_MAX_ORDER 51
/* Smallest chunk size (one CPU page; offsets need 12 free low bits). */
#define BUDDY_MIN_CHUNK 4096u

/* buddy_alloc_blocks() flags. */
#define BUDDY_RANGE_ALLOCATION (1u << 0)      /* stay inside [start, end) */
#define BUDDY_TOPDOWN_ALLOCATION (1u << 1)    /* prefer the highest offsets */
#define BUDDY_CONTIGUOUS_ALLOCATION (1u << 2) /* one contiguous run */
#define BUDDY_CLEAR_ALLOCATION (1u << 3)      /* prefer cleared blocks */
#define BUDDY_TRIM_DISABLE (1u << 4)          /* keep the rounded-up size */
#define BUDDY_ALLOC_FLAGS_ALL 0x1fu

/* buddy_free_list()/buddy_free_block() flags. */
#define BUDDY_CLEARED (1u << 0) /* the caller knows the blocks hold zeroes */

/* A list of blocks (allocation results). Must not be copied once in use. */
struct buddy_list {
	struct list_link head;
};

#define BUDDY_LIST_INIT(name) { { &(name).head, &(name).head } }

/*
 * One block: 32 bytes. The header packs the offset (bits 63..12), the order
 * (bits 5..0), the state (bits 7..6) and the clear bit (bit 8). Non-root
 * blocks come in 64-byte aligned pairs [left, right] so the buddy of a
 * block is at (address ^ 32).
 *
 * Fields are private to buddy.c: use the accessors below. The link is the
 * caller's while the block is allocated (it sits on the caller's list);
 * use buddy_list_* helpers to move it between lists.
 */
struct buddy_block {
	uint64_t header;
	struct buddy_block *parent; /* NULL for a root */
	union {
		struct list_link link; /* FREE: free list; ALLOCATED: caller list */
		struct {
			struct buddy_block *children; /* SPLIT: the [left, right] pair */
			uint32_t aug; /* SPLIT: cached subtree summary, see buddy.c */
			uint32_t unused;
		} split;
	};
};

#define BUDDY_HEADER_OFFSET (~(uint64_t)0xfff)
#define BUDDY_HEADER_ORDER 0x3fu
#define BUDDY_HEADER_STATE 0xc0u
#define BUDDY_HEADER_CLEAR 0x100u
#define BUDDY_STATE_FREE 0x40u
#define BUDDY_STATE_ALLOCATED 0x80u
#define BUDDY_STATE_SPLIT 0xc0u

struct buddy_pool {
	void *free_pairs;   /* singly linked through each free pair's first word */
	uint64_t free_count;
	char *bump, *bump_end; /* never-used pairs of the newest slab */
	void *slabs;        /* singly linked list of slabs (first pair = header) */
	size_t slab_pairs;  /* pairs in the next slab (doubles up to a cap) */
	uint64_t bytes;     /* bytes held in slabs */
	uint64_t pairs_used;
};

/*
 * The allocator. Not thread safe: the caller serialises every call on one
 * mm (and on the blocks it handed out). Must not be moved or copied after
 * buddy_init(): free lists and roots point into it.
 */
struct buddy_mm {
	/* Read-only for callers. */
	uint64_t size;        /* bytes managed (a multiple of chunk_size) */
	uint64_t avail;       /* free bytes */
	uint64_t clear_avail; /* free bytes known to be cleared */
	uint64_t chunk_size;
	unsigned int chunk_shift;
	unsigned int max_order; /* order of the largest root */
	unsigned int n_roots;   /* one per set bit of size, largest first */

	/* Private. */
	uint64_t nonempty[2]; /* [clear] bit k: free_list[clear][k] not empty */
	struct list_link free_list[2][BUDDY_MAX_ORDER + 1];
	struct buddy_block roots[BUDDY_MAX_ORDER + 1];
	struct buddy_pool pool;
	/*
	 * Fault injection for tests: when non-zero, counts down on every
	 * metadata reservation and makes the one that reaches zero fail with
	 * -ENOMEM (once). Each operation reserves before changing anything.
	 */
	unsigned long fail_reserve_at;
	void (*log)(void *arg, const char *msg);
	void *log_arg;
};

/* ---- lists ---------------------------------------------------------------- */

static inline void buddy_list_init(struct buddy_list *l)
{
	list_init(&l->head);
}

static inline bool buddy_list_is_empty(const struct buddy_list *l)
{
	return list_empty(&l->head);
}

static inline struct buddy_block *buddy_link_block(const struct list_link *link)
{
	return list_entry(link, struct buddy_block, link);
}

/* First/last block, or NULL if the list is empty. */
static inline struct buddy_block *buddy_list_first(const struct buddy_list *l)
{
	return buddy_list_is_empty(l) ? NULL : buddy_link_block(l->head.next);
}

static inline struct buddy_block *buddy_list_last(const struct buddy_list *l)
{
	return buddy_list_is_empty(l) ? NULL : buddy_link_block(l->head.prev);
}

/* Next block after @b on @l, or NULL at the end. */
static inline struct buddy_block *buddy_list_next(const struct buddy_list *l,
						  const struct buddy_block *b)
{
	return b->link.next == &l->head ? NULL : buddy_link_block(b->link.next);
}

/* Unlink @b from whatever list holds it (leaves it self-linked). */
static inline void buddy_list_del(struct buddy_block *b)
{
	list_del(&b->link);
}

static inline void buddy_list_add_tail(struct buddy_list *l, struct buddy_block *b)
{
	list_add_tail(&l->head, &b->link);
}

/* Move @b from its current list to the tail of @l. */
static inline void buddy_list_move_tail(struct buddy_list *l, struct buddy_block *b)
{
	buddy_list_del(b);
	buddy_list_add_tail(l, b);
}

/* Append all of @from to @to; @from becomes empty. */
static inline void buddy_list_splice_tail(struct buddy_list *to, struct buddy_list *from)
{
	list_splice_tail(&to->head, &from->head);
}

/* Iterate; @b may not be removed in the body (use _safe for that). */
#define buddy_list_for_each(b, l) \
	for ((b) = buddy_list_first(l); (b); (b) = buddy_list_next((l), (b)))
#define buddy_list_for_each_safe(b, n, l)                                   \
	for ((b) = buddy_list_first(l), (n) = (b) ? buddy_list_next((l), (b)) : NULL; \
	     (b); (b) = (n), (n) = (b) ? buddy_list_next((l), (b)) : NULL)

/* ---- block accessors ------------------------------------------------------ */

static inline uint64_t buddy_block_offset(const struct buddy_block *b)
{
	return b->header & BUDDY_HEADER_OFFSET;
}

static inline unsigned int buddy_block_order(const struct buddy_block *b)
{
	return (unsigned int)(b->header & BUDDY_HEADER_ORDER);
}

static inline uint64_t buddy_block_size(const struct buddy_mm *mm, const struct buddy_block *b)
{
	return mm->chunk_size << buddy_block_order(b);
}

static inline unsigned int buddy_block_state(const struct buddy_block *b)
{
	return (unsigned int)(b->header & BUDDY_HEADER_STATE);
}

static inline bool buddy_block_is_free(const struct buddy_block *b)
{
	return buddy_block_state(b) == BUDDY_STATE_FREE;
}

static inline bool buddy_block_is_allocated(const struct buddy_block *b)
{
	return buddy_block_state(b) == BUDDY_STATE_ALLOCATED;
}

static inline bool buddy_block_is_split(const struct buddy_block *b)
{
	return buddy_block_state(b) == BUDDY_STATE_SPLIT;
}

/* Free block: its memory is known zero. Allocated block: it was when handed out. */
static inline bool buddy_block_is_clear(const struct buddy_block *b)
{
	return (b->header & BUDDY_HEADER_CLEAR) != 0;
}

/* The buddy of @b (same size, offset ^ size), or NULL for a root. */
static inline struct buddy_block *buddy_block_buddy(const struct buddy_block *b)
{
	if (!b->parent)
		return NULL;
	return (struct buddy_block *)((uintptr_t)b ^ sizeof(struct buddy_block));
}

static inline struct buddy_block *buddy_block_parent(const struct buddy_block *b)
{
	return b->parent;
}

/* ---- the allocator -------------------------------------------------------- */

/*
 * buddy_init() - manage [0, size) in blocks of at least @chunk_size bytes.
 * @mm: the allocator to set up (caller-owned memory, need not be zeroed;
 *      must not move after). Errors here go to stderr: set a log hook with
 *      buddy_set_log() after init.
 * @size: bytes; rounded down to a multiple of @chunk_size. A size that is not
 *        a power of two becomes one root per set bit, largest first.
 * @chunk_size: a power of two >= BUDDY_MIN_CHUNK (4096).
 *
 * Returns: 0; -EINVAL if @mm is NULL, @chunk_size is not a power of two or
 * below 4096, or @size is below @chunk_size.
 */
int buddy_init(struct buddy_mm *mm, uint64_t size, uint64_t chunk_size);

/*
 * buddy_fini() - release everything @mm holds.
 * Blocks still allocated are leaks: each is logged (offset, size; the first
 * 16, then a count) and the memory behind them is released too, so the
 * caller's lists must not be used afterwards. The mm ends up zeroed (log
 * hook included). Safe on a zeroed or already finalised mm.
 *
 * Returns: the number of blocks that were still allocated (0 when clean).
 */
int buddy_fini(struct buddy_mm *mm);

/*
 * buddy_set_log() - route error and leak messages to @fn (default: stderr).
 * @fn: called with one line without trailing newline; NULL restores stderr.
 */
void buddy_set_log(struct buddy_mm *mm, void (*fn)(void *arg, const char *msg), void *arg);

/*
 * buddy_alloc_blocks() - allocate @size bytes as power-of-two blocks.
 * @mm: the allocator.
 * @start, @end: the allowed range [start, end) with BUDDY_RANGE_ALLOCATION;
 *        otherwise only validated. If end - start == size, exactly
 *        [start, end) is allocated (start and end aligned to @min_block_size).
 * @size: bytes, a multiple of chunk_size.
 * @min_block_size: power of two >= chunk_size; every block is at least this
 *        big and aligned to it, except the last one when the rounded-up size
 *        is trimmed back to @size.
 * @blocks: the new blocks are appended to its tail, largest first;
 *        contiguous and exact-range results are in address order.
 * @flags: BUDDY_*_ALLOCATION, BUDDY_TRIM_DISABLE.
 *
 * Without CONTIGUOUS, size is rounded up to a multiple of @min_block_size and
 * served with the largest blocks available. With CONTIGUOUS it is rounded up
 * to a power of two (at least @min_block_size); if no such block exists the
 * allocator "tries harder": it looks for a run of exactly @size bytes made of
 * free blocks that are not buddies (also inside a RANGE; no alignment beyond
 * the chunk size is promised then). A rounded-up size is trimmed back to
 * @size unless BUDDY_TRIM_DISABLE. With CLEAR, cleared blocks are preferred
 * and dirty ones used when needed; without it dirty blocks are preferred.
 * When nothing of @min_block_size is left only because free buddies differ
 * in clear state, they are merged by force (the merged block is dirty).
 * Placement: TOPDOWN takes the highest addresses; otherwise it is
 * unspecified (recently freed blocks are reused first).
 *
 * Returns: 0; -EINVAL for NULL pointers, unknown flags, size 0, size/start/end
 * not aligned to chunk_size, min_block_size not a power of two or below
 * chunk_size, end > mm size, start > end, start + size > mm size, a RANGE
 * narrower than size, a rounded size above the largest block for
 * non-contiguous or RANGE requests; -ENOSPC when it cannot be satisfied;
 * -ENOMEM when block metadata cannot be allocated. On error @blocks is
 * unchanged.
 */
int buddy_alloc_blocks(struct buddy_mm *mm, uint64_t start, uint64_t end, uint64_t size,
		       uint64_t min_block_size, struct buddy_list *blocks, unsigned int flags);

/*
 * buddy_block_trim() - shrink a single allocated block to @new_size bytes.
 * @start: NULL to keep the block's start, or the new start inside the block
 *         (chunk aligned, start + new_size within the block).
 * @new_size: bytes, chunk aligned, 0 < new_size <= block size.
 * @blocks: must hold exactly one allocated block; on success it holds the
 *          blocks covering [start, start + new_size) in address order. The
 *          rest is freed dirty (the caller may have written to it; drm_buddy
 *          keeps the clear bit); the kept blocks keep theirs.
 *
 * Returns: 0; -EINVAL for a list that is not exactly one allocated block or
 * a bad size/start; -ENOMEM (nothing changed).
 */
int buddy_block_trim(struct buddy_mm *mm, const uint64_t *start, uint64_t new_size,
		     struct buddy_list *blocks);

/*
 * buddy_free_block() - free one allocated block (and unlink it from its list).
 * @flags: BUDDY_CLEARED if its memory is known zero; otherwise it is dirty.
 *
 * Returns: 0; -EINVAL if @b is not an allocated block (double free; best
 * effort: a block whose memory was reused may not be detected).
 */
int buddy_free_block(struct buddy_mm *mm, struct buddy_block *b, unsigned int flags);

/*
 * buddy_free_list() - free every block on @blocks; the list ends up empty.
 * @flags: BUDDY_CLEARED if all their memory is known zero; otherwise dirty.
 *
 * Returns: 0; -EINVAL if some entry was not an allocated block (it is
 * unlinked and skipped; the others are freed).
 */
int buddy_free_list(struct buddy_mm *mm, struct buddy_list *blocks, unsigned int flags);

/*
 * buddy_reset_clear() - merge all free space by force and mark it cleared
 * (@is_clear) or dirty. For after a device reset or a full VRAM wipe.
 *
 * Returns: 0; -EINVAL if @mm is NULL.
 */
int buddy_reset_clear(struct buddy_mm *mm, bool is_clear);

/*
 * buddy_check() - verify every invariant of @mm (for tests; O(blocks)).
 * Checks the roots, each block's header, alignment and parent, that a
 * block's buddy sits at offset ^ size, that no two free buddies share a
 * clear state, the free lists and their masks, the cached subtree
 * summaries, and that avail/clear_avail match a recount and free +
 * allocated == size. The first violation is logged.
 *
 * Returns: 0; -EINVAL on the first violation found.
 */
int buddy_check(const struct buddy_mm *mm);

/* Counters. */
static inline uint64_t buddy_avail(const struct buddy_mm *mm)
{
	return mm->avail;
}

static inline uint64_t buddy_clear_avail(const struct buddy_mm *mm)
{
	return mm->clear_avail;
}

/* Metadata memory held by @mm's block pool, in bytes (roots not included). */
static inline uint64_t buddy_meta_bytes(const struct buddy_mm *mm)
{
	return mm->pool.bytes;
}

/* Non-root blocks currently in the tree (free, allocated or split). */
static inline uint64_t buddy_meta_blocks(const struct buddy_mm *mm)
{
	return mm->pool.pairs_used * 2;
}

#endif
