/* SPDX-License-Identifier: MIT */
/*
 * The spill file of host-suspend backups (docs/suspend.md, "Spill"): the
 * backups that do not fit under ugpu_pm_opts.backup_mem_limit, or whose
 * memory could not be allocated, live in one file of the directory
 * ugpu_pm_opts.spill_dir instead of in memory.
 *
 * Each spilled backup has a region of the file (its size rounded up to
 * SPILL_ALIGN, at a SPILL_ALIGN boundary) reserved with fallocate() when the
 * backup is made, so a full filesystem is found then (prepare, outside the
 * window), not in the window. Bytes move between VRAM and the file through
 * SPILL_SLOTS staging buffers of SPILL_SLOT bytes (halved down to
 * SPILL_SLOT_MIN while that memory cannot be had), DMA-mapped for the copy
 * engine and registered with io_uring: on the way out the engine copies a
 * piece into a free slot while io_uring writes the slots filled before (the
 * CPU hashes each piece into the backup's checksums between the two); on
 * the way back io_uring reads the next pieces while the engine copies the
 * ones read (each checked against its checksums first). The file is opened
 * with O_DIRECT where the filesystem takes it, so the backups do not sit in
 * the page cache too; where not, through the page cache (logged).
 *
 * Locking: a struct spill belongs to the BO manager (struct bo_mgr.spill)
 * and every call is made with the manager lock held, from the thread running
 * a host-suspend transition (or the removal): one user at a time, so the
 * ring, the slots and the file offsets need no lock of their own.
 */
#ifndef UGPU_MM_SPILL_H
#define UGPU_MM_SPILL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ugpu_device;
struct ugpu_bo;
struct engine;
struct spill;

/* 4 x 4 MiB of staging: two slots in flight each way keep both the engine
 * and the file busy; 4 MiB writes are well past where O_DIRECT reaches a
 * disk's sequential rate. */
#define SPILL_SLOTS 4
#define SPILL_SLOT (4ull << 20)
#define SPILL_SLOT_MIN (256ull << 10)
/* Backups start at 64 KiB boundaries of the file (a backup chunk, and a
 * multiple of every O_DIRECT alignment: logical block and page). */
#define SPILL_ALIGN (64ull << 10)

/* One transfer: bytes [@off, @off+@len) of @bo (@off chunk aligned, @len at
 * most the file's slot size, spill_slot_bytes()). */
struct spill_piece {
	struct ugpu_bo *bo;
	uint64_t off, len;
};

struct spill_pieces {
	struct spill_piece *v;
	size_t n, cap;
};

/* Append [off, off+len) of @bo, cut into pieces of at most @s's slot size.
 * Returns 0 or -ENOMEM. */
int spill_pieces_add(const struct spill *s, struct spill_pieces *p, struct ugpu_bo *bo,
		     uint64_t off, uint64_t len);

/*
 * spill_open() - create the spill file in @dir, its staging buffers and its
 * io_uring. Returns 0, or -EIO (the file, the ring or the staging could not
 * be made: logged with the reason), -ENOSPC (no space to create it),
 * -ENOMEM (not even for its bookkeeping).
 */
int spill_open(struct ugpu_device *dev, const char *dir, struct spill **out);
/* spill_close() - close and remove the file, free the staging. NULL: no-op. */
void spill_close(struct spill *s);
/* Bytes per staging slot: SPILL_SLOT, or less when memory was short. */
uint64_t spill_slot_bytes(const struct spill *s);
/* The file's name (for logs and tests). */
const char *spill_path(const struct spill *s);
/* Whether the file was opened with O_DIRECT. */
bool spill_is_direct(const struct spill *s);

/*
 * spill_reserve() - a region for a backup of @size bytes of BO @name:
 * *@off its first byte in the file. Returns 0, -ENOSPC (filesystem or quota
 * full), -EIO (another fallocate failure; logged).
 */
int spill_reserve(struct spill *s, const char *name, uint64_t size, uint64_t *off);

/*
 * spill_save() - copy the pieces from VRAM into their BOs' regions of the
 * file with engine @e, hashing each into its BO's track (bo->track sums).
 * *@bytes is increased by the bytes written. Returns 0; -EIO when a copy
 * failed (the engine is reset), -ENOSPC or -EIO when a write failed (short
 * or an error; logged with the BO's name). Nothing is in flight on return.
 */
int spill_save(struct spill *s, struct engine *e, const struct spill_piece *p, size_t n,
	       uint64_t *bytes);

/*
 * spill_restore() - read the pieces back and copy them into VRAM with engine
 * @e. With @bad, each piece is first checked against its BO's checksums and
 * @bad(@arg, bo, first damaged byte) is called for the first damaged piece
 * of each BO (pieces of one BO must be adjacent); the piece is restored all
 * the same. *@bytes is increased by the bytes read. Returns 0, -EIO (a read
 * or a copy failed; logged), -ETIMEDOUT (the file did not answer in time).
 * Nothing is in flight on return.
 */
int spill_restore(struct spill *s, struct engine *e, const struct spill_piece *p, size_t n,
		  void (*bad)(void *arg, struct ugpu_bo *bo, uint64_t off), void *arg,
		  uint64_t *bytes);

/*
 * spill_load() - read @bo's whole backup into @dst (bo->size bytes, page
 * aligned), synchronously: for the removal of a suspended device, which
 * keeps the backup as the BO's system memory. Returns 0 or -EIO.
 */
int spill_load(struct spill *s, struct ugpu_bo *bo, void *dst);

#endif
