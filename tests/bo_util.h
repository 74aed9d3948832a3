/* SPDX-License-Identifier: MIT */
/*
 * BO test helpers that need no device of a particular kind: byte patterns,
 * BO creation, fill and verification through the public API, and the
 * population of BO kinds the suspend and removal tests use. Shared by the
 * integration tests (test_bo_common.h, on the reference device) and the unit
 * tests (tests/unit/test_bo_unit.c, on a fake device). Header-only: each test
 * file is its own executable.
 */
#ifndef UGPU_TEST_BO_UTIL_H
#define UGPU_TEST_BO_UTIL_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <ugpu/bo.h>

/* A byte pattern unique to (@seed, offset). */
static inline uint8_t pat(uint32_t seed, uint64_t i)
{
	uint64_t x = (i >> 3) * 0x9e3779b97f4a7c15ull + seed * 0xbf58476d1ce4e5b9ull;

	x ^= x >> 29;
	return (uint8_t)(x >> (8 * (i & 7)));
}

static inline void pat_fill(void *p, uint64_t len, uint32_t seed)
{
	uint8_t *b = p;
	uint64_t i;

	for (i = 0; i < len; i++)
		b[i] = pat(seed, i);
}

/* Offset of the first mismatch, or -1 when all of [0, len) matches. */
static inline int64_t pat_check(const void *p, uint64_t len, uint32_t seed)
{
	const uint8_t *b = p;
	uint64_t i;

	for (i = 0; i < len; i++)
		if (b[i] != pat(seed, i))
			return (int64_t)i;
	return -1;
}

static inline struct ugpu_bo *bo_new(struct ugpu_device *dev, uint64_t bytes, uint32_t flags,
				     enum ugpu_placement p0, enum ugpu_placement p1,
				     const char *name)
{
	struct ugpu_bo_opts o = {
		.size = sizeof(o),
		.bytes = bytes,
		.placements = { p0, p1 },
		.flags = flags,
		.name = name,
	};
	struct ugpu_bo *bo = NULL;
	int ret = ugpu_bo_create(dev, &o, &bo);

	if (ret)
		fprintf(stderr, "bo_new(%s, %llu): %s\n", name, (unsigned long long)bytes,
			ugpu_strerror(ret));
	return bo;
}

/* Write pattern @seed into the whole BO through ugpu_bo_write. */
static inline int bo_fill(struct ugpu_bo *bo, uint64_t bytes, uint32_t seed)
{
	void *buf = malloc(bytes);
	int ret;

	if (!buf)
		return -ENOMEM;
	pat_fill(buf, bytes, seed);
	ret = ugpu_bo_write(bo, 0, buf, bytes);
	free(buf);
	return ret;
}

/* -1 when the BO holds pattern @seed, else the first bad offset (or -2 on a
 * read error). */
static inline int64_t bo_verify(struct ugpu_bo *bo, uint64_t bytes, uint32_t seed)
{
	void *buf = malloc(bytes);
	int64_t r;

	if (!buf)
		return -2;
	if (ugpu_bo_read(bo, 0, buf, bytes)) {
		free(buf);
		return -2;
	}
	r = pat_check(buf, bytes, seed);
	free(buf);
	return r;
}

static inline enum ugpu_placement bo_where(struct ugpu_bo *bo)
{
	struct ugpu_bo_info i = { .size = sizeof(i) };

	if (ugpu_bo_query(bo, &i))
		return UGPU_PLACEMENT_NONE;
	return i.placement;
}

#define V UGPU_PLACEMENT_VRAM
#define S UGPU_PLACEMENT_SYSTEM
#define N UGPU_PLACEMENT_NONE

/* What the reference device reads back after D3cold (docs/reference-device.md);
 * the unit tests' fake device poisons its VRAM with it at power-off. */
#define POISON 0xDEADBEEFDEADBEEFull

/* ---- a population of BOs of every kind (suspend, removal, logind tests) -- */

enum kind { K_KERNEL, K_USER_PINNED, K_LATE, K_NORESTORE, K_UNPINNED, K_VRAM_ONLY, K_MAPPED_PINNED,
	    K_MAPPED_UNPINNED, K_SYSTEM_PINNED, K_NKINDS };

static const struct {
	uint32_t flags;
	enum ugpu_placement p0, p1;
	const char *name;
} kinds[K_NKINDS] = {
	[K_KERNEL] = { UGPU_BO_KERNEL | UGPU_BO_PINNED, V, N, "kernel" },
	[K_USER_PINNED] = { UGPU_BO_PINNED, V, S, "user-pinned" },
	[K_LATE] = { UGPU_BO_KERNEL | UGPU_BO_LATE_RESTORE | UGPU_BO_PINNED, V, N, "late" },
	[K_NORESTORE] = { UGPU_BO_PINNED | UGPU_BO_NO_RESTORE, V, N, "no-restore" },
	[K_UNPINNED] = { 0, V, S, "unpinned" },
	[K_VRAM_ONLY] = { 0, V, N, "vram-only" },
	[K_MAPPED_PINNED] = { UGPU_BO_PINNED | UGPU_BO_CPU_ACCESS, V, S, "mapped-pinned" },
	[K_MAPPED_UNPINNED] = { UGPU_BO_CPU_ACCESS, V, S, "mapped" },
	[K_SYSTEM_PINNED] = { UGPU_BO_PINNED, S, N, "system-pinned" },
};

struct obj {
	struct ugpu_bo *bo;
	enum kind kind;
	uint64_t size;
	uint32_t seed;
	uint8_t *map;
};

#endif
