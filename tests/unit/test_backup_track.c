/* SPDX-License-Identifier: MIT */
/*
 * The write track of a host-suspend backup (mm/backup_track.c) against an
 * oracle: random marks on BOs of random sizes (the last chunk partial or
 * not, bitmaps of one word and of several), then the runs track_next_dirty()
 * returns must be exactly the maximal runs of marked chunks, clipped to the
 * BO; checksums catch a flipped byte in any chunk, the last one included.
 * Prints its seed; UGPU_TEST_SEED replays one.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "mm/backup_track.h"

static uint64_t rng;
static uint64_t rnd(uint64_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng % n;
}

/* The runs of the oracle's marked chunks must be what the track returns. */
static void check_runs(const struct backup_track *t, const uint8_t *oracle, uint64_t size)
{
	uint64_t n = (size + BACKUP_CHUNK - 1) / BACKUP_CHUNK, c = 0, off, len, from = 0;

	while (track_next_dirty(t, from, &off, &len)) {
		uint64_t s = off / BACKUP_CHUNK, e;

		assert_int_equal(off % BACKUP_CHUNK, 0);
		assert_true(len > 0 && off + len <= size);
		/* nothing marked between the previous run and this one */
		for (; c < s; c++)
			assert_false(oracle[c]);
		e = (off + len + BACKUP_CHUNK - 1) / BACKUP_CHUNK;
		for (; c < e; c++)
			assert_true(oracle[c]);
		/* maximal: the chunk after the run is clean (or the end) */
		assert_true(e == n || !oracle[e]);
		assert_true(e == n ? off + len == size : len % BACKUP_CHUNK == 0);
		from = off + len;
	}
	for (; c < n; c++)
		assert_false(oracle[c]);
}

static void test_runs_against_oracle(void **state)
{
	const char *e = getenv("UGPU_TEST_SEED");
	uint64_t seed = e ? strtoull(e, NULL, 0) : (uint64_t)time(NULL);
	int round;

	(void)state;
	printf("test_backup_track: seed %llu (UGPU_TEST_SEED to replay)\n",
	       (unsigned long long)seed);
	rng = seed * 2654435761u + 1;
	for (round = 0; round < 300; round++) {
		/* 1 chunk to ~200 chunks, often not a whole number of them */
		uint64_t size = 4096 * (1 + rnd(200 * BACKUP_CHUNK / 4096));
		uint64_t n = (size + BACKUP_CHUNK - 1) / BACKUP_CHUNK, k, marks = rnd(12);
		struct backup_track *t = track_new(size);
		uint8_t *oracle = calloc(n, 1);

		assert_non_null(t);
		assert_non_null(oracle);
		assert_int_equal(t->nchunks, n);
		check_runs(t, oracle, size);
		for (k = 0; k < marks; k++) {
			uint64_t off = rnd(size + 4096), len = rnd(4) ? 1 + rnd(3 * BACKUP_CHUNK) : 0;
			uint64_t c;

			track_mark(t, off, len);
			/* the oracle: every chunk [off, off+len) touches, clipped */
			if (len && off < size) {
				uint64_t end = off + len > size ? size : off + len;

				for (c = off / BACKUP_CHUNK; c <= (end - 1) / BACKUP_CHUNK; c++)
					oracle[c] = 1;
			}
			check_runs(t, oracle, size);
		}
		track_clean(t);
		memset(oracle, 0, n);
		check_runs(t, oracle, size);
		free(oracle);
		track_free(t);
	}
}

static void test_checksums(void **state)
{
	uint64_t size = 3 * BACKUP_CHUNK + 12288, bad, i;
	uint8_t *buf = malloc(size);
	struct backup_track *t = track_new(size);
	static const uint64_t flips[] = { 0, BACKUP_CHUNK - 1, BACKUP_CHUNK, 2 * BACKUP_CHUNK + 7,
					  3 * BACKUP_CHUNK, 3 * BACKUP_CHUNK + 12287 };

	(void)state;
	assert_non_null(buf);
	assert_non_null(t);
	for (i = 0; i < size; i++)
		buf[i] = (uint8_t)(i * 131 + 7);
	track_hash(t, buf, 0, size);
	assert_int_equal(track_verify(t, buf, &bad), 0);
	for (i = 0; i < sizeof(flips) / sizeof(flips[0]); i++) {
		buf[flips[i]] ^= 1;
		assert_int_equal(track_verify(t, buf, &bad), -EBADMSG);
		assert_int_equal(bad, flips[i] / BACKUP_CHUNK * BACKUP_CHUNK);
		/* Hashing the chunk again (a copy into it) makes it good. */
		track_hash(t, buf, bad, BACKUP_CHUNK);
		assert_int_equal(track_verify(t, buf, &bad), 0);
	}
	free(buf);
	track_free(t);
}

/* A piece held elsewhere (a spill staging slot): hashed and checked at its
 * own address, the sums those of the chunks it covers; a flip in it is
 * found at its offset in the BO, a flip outside it is not its business. */
static void test_checksums_at(void **state)
{
	uint64_t size = 5 * BACKUP_CHUNK + 4096, off = 2 * BACKUP_CHUNK, len, bad, i;
	uint8_t *buf = malloc(size), *slot = malloc(size);
	struct backup_track *t = track_new(size);

	(void)state;
	assert_non_null(buf);
	assert_non_null(slot);
	assert_non_null(t);
	for (i = 0; i < size; i++)
		buf[i] = (uint8_t)(i * 37 + 1);
	track_hash(t, buf, 0, size);
	/* the tail piece: chunks 2..5, the last one short */
	len = size - off;
	memcpy(slot, buf + off, len);
	assert_int_equal(track_verify_at(t, slot, off, len, &bad), 0);
	slot[len - 1] ^= 4;
	assert_int_equal(track_verify_at(t, slot, off, len, &bad), -EBADMSG);
	assert_int_equal(bad, 5 * BACKUP_CHUNK);
	/* hashed from the slot: the sums follow it, the whole backup differs
	 * there now */
	track_hash_at(t, slot, off, len);
	assert_int_equal(track_verify_at(t, slot, off, len, &bad), 0);
	assert_int_equal(track_verify(t, buf, &bad), -EBADMSG);
	assert_int_equal(bad, 5 * BACKUP_CHUNK);
	/* a piece before it is untouched by that */
	assert_int_equal(track_verify_at(t, buf, 0, off, &bad), 0);
	buf[BACKUP_CHUNK + 5] ^= 1;
	assert_int_equal(track_verify_at(t, buf, 0, off, &bad), -EBADMSG);
	assert_int_equal(bad, BACKUP_CHUNK);
	free(buf);
	free(slot);
	track_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_runs_against_oracle),
		cmocka_unit_test(test_checksums),
		cmocka_unit_test(test_checksums_at),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
