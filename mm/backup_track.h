/* SPDX-License-Identifier: MIT */
/*
 * Write tracking and checksums of host-suspend backups (mm/backup.c,
 * docs/suspend.md "Incremental backups").
 *
 * A backup is cut in chunks of BACKUP_CHUNK bytes. Each chunk carries the
 * XXH3-64 of its bytes as the last copy into the backup left them (computed
 * by the copy engine as it copied, where it can: engine_copy_sum(); else by
 * the CPU right after the engine finished that copy), and a dirty bit:
 * set by every tracked writer of the BO after prepare filled the backup, so
 * that the suspend window copies (and hashes) only the dirty chunks. Resume
 * checks every chunk of a backup before its bytes go back to VRAM.
 *
 * Why 64 KiB: it is the unit the copy engines move at full speed (a 4 KiB
 * copy costs a descriptor for little data), the smallest migration unit of
 * xe and of our SVM, and small enough that a scattered write dirties little:
 * a 4 GiB BO has 65,536 chunks, i.e. an 8 KiB bitmap and 512 KiB of sums
 * (0.012 % of the backup). Runs of dirty chunks are copied as one copy.
 *
 * Locking: a track belongs to its BO's backup and lives and dies with it,
 * under the BO manager lock (mm/bo.h). @dirty words are changed with atomic
 * ORs and exchanges so that a writer outside the manager lock could mark
 * chunks; every writer today holds the manager lock. @sum and @whole are
 * under the manager lock only.
 */
#ifndef UGPU_MM_BACKUP_TRACK_H
#define UGPU_MM_BACKUP_TRACK_H

#include <stdbool.h>
#include <stdint.h>

#define BACKUP_CHUNK_SHIFT 16
#define BACKUP_CHUNK (1ull << BACKUP_CHUNK_SHIFT)

struct ugpu_bo;

struct backup_track {
	uint64_t size; /* the BO's size */
	uint64_t nchunks;
	uint64_t *dirty; /* one bit per chunk, atomic words */
	uint64_t *sum; /* XXH3-64 of each chunk of the backup */
	uint64_t gen; /* bo->backing_gen when the backup was filled */
	/* A writer the track cannot follow touched the BO: the next save
	 * copies it whole. */
	bool whole;
};

/* A track for a backup of @size bytes, every chunk clean; NULL on ENOMEM. */
struct backup_track *track_new(uint64_t size);
void track_free(struct backup_track *t);

/* Mark the chunks of [off, off+len) dirty (clipped to the BO). */
void track_mark(struct backup_track *t, uint64_t off, uint64_t len);
/* Clear every dirty bit and the whole flag: the backup equals VRAM now. */
void track_clean(struct backup_track *t);
/*
 * The next run of dirty chunks at or after byte @from: *@off, *@len (the
 * last run clipped to the BO). Returns false when there is none.
 */
bool track_next_dirty(const struct backup_track *t, uint64_t from, uint64_t *off, uint64_t *len);

/* Hash the chunks of [off, off+len) of the backup bytes @base (chunk
 * aligned @off) into the sums. */
void track_hash(struct backup_track *t, const void *base, uint64_t off, uint64_t len);
/* The sums of the chunks of [off, off+len) (chunk aligned @off) as a copy
 * engine computed them while it copied (engine_copy_sum(): the same XXH3-64
 * of the same 64 KiB pieces), one per chunk in @sums. */
void track_set_sums(struct backup_track *t, uint64_t off, uint64_t len, const uint64_t *sums);
/* The same for bytes [off, off+len) held at @at (not at @base + @off: a
 * staging buffer of the spill file, mm/spill.h). */
void track_hash_at(struct backup_track *t, const void *at, uint64_t off, uint64_t len);
/*
 * Check the chunks of [off, off+len) (chunk aligned @off), held at @at,
 * against their sums. Returns 0, or -EBADMSG with *@bad_off the first chunk
 * that differs (a byte offset in the BO).
 */
int track_verify_at(const struct backup_track *t, const void *at, uint64_t off, uint64_t len,
		    uint64_t *bad_off);
/*
 * Check every chunk of the backup @base against its sum. Returns 0, or
 * -EBADMSG with *@bad_off the first chunk that differs.
 */
int track_verify(const struct backup_track *t, const void *base, uint64_t *bad_off);

#endif
