/* SPDX-License-Identifier: MIT */
/*
 * No CPU store is lost to a move. Writer threads store increasing sequence
 * numbers into their own mapped BOs (re-reading each store) while the main
 * thread forces migrations and evictions (a filler BO that needs the VRAM
 * the writers' BOs hold). At the end each BO must hold every writer's last
 * value, read back through ugpu_bo_read (the BO's real backing).
 */
#include <pthread.h>
#include <unistd.h>

#include "integration/test_bo_common.h"

#define MiB (1ull << 20)
#define NW 4
#define SLOTS 64 /* per writer: one 8-byte slot per 64 bytes spread over the BO */
#define BO_SZ (1 * MiB)

struct writer {
	struct ugpu_bo *bo;
	uint64_t *base;
	int stop; /* atomic */
	uint64_t last; /* atomic: highest value stored */
	int bad; /* atomic: a store that did not read back */
};

static void *writer_fn(void *arg)
{
	struct writer *w = arg;
	uint64_t v = 0;

	while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
		unsigned int s;

		v++;
		for (s = 0; s < SLOTS; s++) {
			volatile uint64_t *p = w->base + (uint64_t)s * (BO_SZ / 8 / SLOTS);

			*p = v;
			if (*p != v)
				__atomic_store_n(&w->bad, 1, __ATOMIC_RELAXED);
		}
		__atomic_store_n(&w->last, v, __ATOMIC_RELEASE);
	}
	return NULL;
}

static int setup(void **state)
{
	return fx_setup_vram(state, 16 * MiB);
}

static void run_race(struct fx *f, int cycles, bool evict)
{
	struct writer w[NW];
	pthread_t th[NW];
	uint64_t before[NW];
	int i, c;

	for (i = 0; i < NW; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].bo = bo_new(f->dev, BO_SZ, UGPU_BO_CPU_ACCESS, V, S, "writer");
		assert_non_null(w[i].bo);
		assert_int_equal(ugpu_bo_map(w[i].bo, (void **)&w[i].base), 0);
		assert_int_equal(pthread_create(&th[i], NULL, writer_fn, &w[i]), 0);
	}
	for (c = 0; c < cycles; c++) {
		/* Wait until every writer made progress since the last move, so
		 * each move races with live stores. */
		for (i = 0; i < NW; i++)
			before[i] = __atomic_load_n(&w[i].last, __ATOMIC_ACQUIRE);
		for (i = 0; i < NW; i++) {
			int spins = 0;

			while (__atomic_load_n(&w[i].last, __ATOMIC_ACQUIRE) == before[i] &&
			       spins++ < 20000)
				usleep(50);
		}
		if (evict) {
			/* A filler wanting (almost) all of VRAM evicts the writers'
			 * BOs; dropping it lets them come back on the next migrate. */
			struct ugpu_bo *filler = bo_new(f->dev, 14 * MiB, 0, V, S, "filler");

			assert_non_null(filler);
			assert_int_equal(bo_where(filler), V);
			assert_int_equal(bo_mgr_check(f->dev, true), 0);
			ugpu_bo_put(filler);
			for (i = 0; i < NW; i++)
				assert_int_equal(ugpu_bo_migrate(w[i].bo, V), 0);
		} else {
			for (i = 0; i < NW; i++)
				assert_int_equal(ugpu_bo_migrate(w[i].bo, c & 1 ? V : S), 0);
		}
	}
	for (i = 0; i < NW; i++) {
		__atomic_store_n(&w[i].stop, 1, __ATOMIC_RELEASE);
		pthread_join(th[i], NULL);
	}
	assert_int_equal(bo_mgr_check(f->dev, true), 0);
	for (i = 0; i < NW; i++) {
		uint64_t last = __atomic_load_n(&w[i].last, __ATOMIC_ACQUIRE);
		unsigned int s;

		assert_false(w[i].bad);
		assert_true(last > (uint64_t)cycles / 4);
		for (s = 0; s < SLOTS; s++) {
			uint64_t got = 0;

			assert_int_equal(ugpu_bo_read(w[i].bo, (uint64_t)s * (BO_SZ / SLOTS), &got, 8),
					 0);
			if (got != last)
				fail_msg("writer %d slot %u: BO holds %llu, last store was %llu", i, s,
					 (unsigned long long)got, (unsigned long long)last);
		}
		ugpu_bo_put(w[i].bo);
	}
}

/* Half the moves under TSan (its ~9x, and this runs twice: as root and as
 * an ordinary user), for make test's time; every other build does all. */
#if defined(__SANITIZE_THREAD__)
#define RACE_SCALE 2
#else
#define RACE_SCALE 1
#endif

static void test_writes_survive_migrations(void **state)
{
	run_race(*state, 200 / RACE_SCALE, false);
}

static void test_writes_survive_evictions(void **state)
{
	run_race(*state, 100 / RACE_SCALE, true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_writes_survive_migrations, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_writes_survive_evictions, setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
