/* SPDX-License-Identifier: MIT */
/*
 * The random source of the randomised tests (splitmix64): one seed gives the
 * same sequence on every machine, so a run that failed replays from the seed
 * it printed. Header-only.
 */
#ifndef UGPU_TEST_RNG_H
#define UGPU_TEST_RNG_H

#include <stdint.h>

struct rng {
	uint64_t s;
};

static inline uint64_t rng_next(struct rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, n); n > 0. */
static inline uint64_t rng_below(struct rng *r, uint64_t n)
{
	return rng_next(r) % n;
}

#endif
