/* SPDX-License-Identifier: MIT */
/*
 * The device's VRAM manager: the buddy allocator (mm/buddy.h) over the VRAM
 * BAR in 4 KiB chunks, with its own lock. Every VRAM placement goes through
 * it. It is the "vram-mm" bring-up step (device lifetime: a removal frees
 * it; afterwards allocations fail with -ENODEV and usage reads 0).
 *
 * Locking: the VRAM lock (inside struct bo_mgr) is a leaf, taken inside the
 * BO manager lock. dev->vram_used mirrors the allocated bytes for readers
 * that may not take it (runtime PM choosing D3cold).
 */
#ifndef UGPU_MM_VRAM_H
#define UGPU_MM_VRAM_H

#include <stdbool.h>
#include <stdint.h>

#include "mm/buddy.h"

struct ugpu_device;

/* Allocate @size bytes (blocks of at least @min_block; BUDDY_* @flags) into
 * @out. Returns 0, -ENOSPC, -ENOMEM, -EINVAL, or -ENODEV once removed. */
int vram_alloc(struct ugpu_device *dev, uint64_t size, uint64_t min_block, unsigned int flags,
	       struct buddy_list *out);
/* The same inside [@start, @end) (tests and guest programs that reserve a
 * window of VRAM). */
int vram_alloc_range(struct ugpu_device *dev, uint64_t start, uint64_t end, uint64_t size,
		     uint64_t min_block, unsigned int flags, struct buddy_list *out);
/* Free every block of @blocks (BUDDY_CLEARED @flags); @blocks ends empty. */
void vram_free(struct ugpu_device *dev, struct buddy_list *blocks, unsigned int flags);
/* Bytes allocated and free now (0 and 0 once removed). */
void vram_usage(struct ugpu_device *dev, uint64_t *used, uint64_t *avail);
/* The allocator's own consistency check (0 or -EINVAL; 0 once removed). */
int vram_check(struct ugpu_device *dev);

/*
 * Frees held back, for a record of where BOs are that lags behind them
 * (ugpud's restart table, tools/ugpud/persist.c): a BO moved out of VRAM
 * blocks the record still names must not have them written by another BO
 * before the record is rewritten, or a restart from it reads another BO's
 * bytes. vram_hold_frees(@on): from now on freed blocks are held back (off:
 * given back, and frees go straight to the allocator again).
 * vram_held_seal(): the blocks held so far are sealed, before the record's
 * walk; vram_sealed_release(): once the record written after that walk is
 * stored, the sealed blocks go back to the allocator (frees during the walk
 * wait for the next one). vram_alloc() never takes held-back blocks.
 * Usage counts held-back blocks as free.
 *
 * When an allocation of @need bytes cannot be had without them, the BO
 * layer calls vram_held_claim(): 0 when nothing is held, or when it is
 * refused and the held blocks with the free ones are still short of @need
 * (evict more first); 1 when the held blocks were given back to the
 * allocator (try again); -ERESTART when it is refused: they are kept and
 * the record's owner was told. It is refused in strict mode on a thread
 * inside vram_refusing(true): vram_hold_strict(@want, @arg) sets strict
 * mode: @want(@arg) is called, from any thread with the BO manager lock
 * held (it must only wake its owner), whenever held blocks were wanted;
 * the owner writes its record (which releases them) and makes the call
 * that returned -ERESTART again. Giving them back would let another BO
 * write blocks the stored record still names for a BO that moved out (a
 * restart then reads that BO from the other's bytes). The owner opts in
 * per call, around the calls it makes and retries (any BO they place,
 * page tables included); every other allocation (a fault thread's, a
 * call the owner does not retry) takes the held blocks as before, @want
 * told (the window is then from that allocation to the owner's next
 * record). vram_give_back_held() gives them all back (true if any).
 */
void vram_hold_frees(struct ugpu_device *dev, bool on);
void vram_hold_strict(struct ugpu_device *dev, void (*want)(void *arg), void *arg);
int vram_held_claim(struct ugpu_device *dev, uint64_t need);
void vram_refusing(bool on);
bool vram_give_back_held(struct ugpu_device *dev);
void vram_held_seal(struct ugpu_device *dev);
void vram_sealed_release(struct ugpu_device *dev);

/* A VRAM block's size (the manager's chunk is BUDDY_MIN_CHUNK). */
static inline uint64_t vram_block_size(const struct buddy_block *b)
{
	return (uint64_t)BUDDY_MIN_CHUNK << buddy_block_order(b);
}

#endif
