/* SPDX-License-Identifier: MIT */
/* Write tracking and checksums of host-suspend backups: see backup_track.h. */
#include <errno.h>
#include <stdlib.h>

#include <xxhash.h>

#include "mm/backup_track.h"

#define WORD_BITS 64

struct backup_track *track_new(uint64_t size)
{
	struct backup_track *t = calloc(1, sizeof(*t));
	uint64_t words;

	if (!t)
		return NULL;
	t->size = size;
	t->nchunks = (size + BACKUP_CHUNK - 1) >> BACKUP_CHUNK_SHIFT;
	words = (t->nchunks + WORD_BITS - 1) / WORD_BITS;
	t->dirty = calloc(words ? words : 1, sizeof(*t->dirty));
	t->sum = calloc(t->nchunks ? t->nchunks : 1, sizeof(*t->sum));
	if (!t->dirty || !t->sum) {
		track_free(t);
		return NULL;
	}
	return t;
}

void track_free(struct backup_track *t)
{
	if (!t)
		return;
	free(t->dirty);
	free(t->sum);
	free(t);
}

void track_mark(struct backup_track *t, uint64_t off, uint64_t len)
{
	uint64_t c, end;

	if (!len || off >= t->size)
		return;
	if (len > t->size - off)
		len = t->size - off;
	end = (off + len - 1) >> BACKUP_CHUNK_SHIFT;
	for (c = off >> BACKUP_CHUNK_SHIFT; c <= end; c++)
		__atomic_fetch_or(&t->dirty[c / WORD_BITS], 1ull << (c % WORD_BITS),
				  __ATOMIC_RELAXED);
}

void track_clean(struct backup_track *t)
{
	uint64_t w, words = (t->nchunks + WORD_BITS - 1) / WORD_BITS;

	for (w = 0; w < words; w++)
		__atomic_store_n(&t->dirty[w], 0, __ATOMIC_RELAXED);
	t->whole = false;
}

static bool chunk_dirty(const struct backup_track *t, uint64_t c)
{
	return __atomic_load_n(&t->dirty[c / WORD_BITS], __ATOMIC_RELAXED) >> (c % WORD_BITS) & 1;
}

bool track_next_dirty(const struct backup_track *t, uint64_t from, uint64_t *off, uint64_t *len)
{
	uint64_t c = (from + BACKUP_CHUNK - 1) >> BACKUP_CHUNK_SHIFT, e;

	while (c < t->nchunks && !chunk_dirty(t, c)) {
		/* Skip clean words whole: most of a big BO is clean. */
		if (c % WORD_BITS == 0 &&
		    !__atomic_load_n(&t->dirty[c / WORD_BITS], __ATOMIC_RELAXED))
			c += WORD_BITS;
		else
			c++;
	}
	if (c >= t->nchunks)
		return false;
	for (e = c + 1; e < t->nchunks && chunk_dirty(t, e); e++)
		;
	*off = c << BACKUP_CHUNK_SHIFT;
	*len = (e << BACKUP_CHUNK_SHIFT) < t->size ? (e - c) << BACKUP_CHUNK_SHIFT : t->size - *off;
	return true;
}

static uint64_t chunk_len(const struct backup_track *t, uint64_t c)
{
	uint64_t off = c << BACKUP_CHUNK_SHIFT;

	return t->size - off < BACKUP_CHUNK ? t->size - off : BACKUP_CHUNK;
}

void track_hash(struct backup_track *t, const void *base, uint64_t off, uint64_t len)
{
	track_hash_at(t, (const char *)base + off, off, len);
}

/* The chunks [*first, *end) of [off, off+len) that the track has. */
static void chunks_of(const struct backup_track *t, uint64_t off, uint64_t len, uint64_t *first,
		      uint64_t *end)
{
	*first = off >> BACKUP_CHUNK_SHIFT;
	*end = len ? ((off + len - 1) >> BACKUP_CHUNK_SHIFT) + 1 : *first;
	if (*end > t->nchunks)
		*end = t->nchunks;
}

void track_hash_at(struct backup_track *t, const void *at, uint64_t off, uint64_t len)
{
	uint64_t c, end, first;

	chunks_of(t, off, len, &first, &end);
	for (c = first; c < end; c++)
		t->sum[c] = XXH3_64bits((const char *)at + ((c - first) << BACKUP_CHUNK_SHIFT),
					chunk_len(t, c));
}

void track_set_sums(struct backup_track *t, uint64_t off, uint64_t len, const uint64_t *sums)
{
	uint64_t c, end, first;

	chunks_of(t, off, len, &first, &end);
	for (c = first; c < end; c++)
		t->sum[c] = sums[c - first];
}

int track_verify_at(const struct backup_track *t, const void *at, uint64_t off, uint64_t len,
		    uint64_t *bad_off)
{
	uint64_t c, end, first;

	chunks_of(t, off, len, &first, &end);
	for (c = first; c < end; c++) {
		if (XXH3_64bits((const char *)at + ((c - first) << BACKUP_CHUNK_SHIFT),
				chunk_len(t, c)) != t->sum[c]) {
			*bad_off = c << BACKUP_CHUNK_SHIFT;
			return -EBADMSG;
		}
	}
	return 0;
}

int track_verify(const struct backup_track *t, const void *base, uint64_t *bad_off)
{
	return track_verify_at(t, base, 0, t->size, bad_off);
}
