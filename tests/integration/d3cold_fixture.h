/* SPDX-License-Identifier: MIT */
/*
 * Shared fixture of the runtime-D3cold data-loss tests (test_dataloss,
 * test_unplug_rpm, test_windows): a 32 MiB reference device whose runtime
 * suspends are explicit (autosuspend off), runtime-suspend helpers, and two
 * threads that touch a BO's CPU mapping through a power transition: the
 * storer (one store on request) and the spinner (stores without a pause,
 * stopping at SIGBUS). Header-only, included by one file of each executable.
 */
#ifndef UGPU_TESTS_D3COLD_FIXTURE_H
#define UGPU_TESTS_D3COLD_FIXTURE_H

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <unistd.h>

#include <ugpu/rpm.h>
#include <ugpu/unplug.h>

#include "test_bo_common.h"
#include "base/test_point.h"
#include "mm/cpu_map.h"

#define MIB (1ull << 20)
#define BOUND_MS 15000

static inline int setup(void **state)
{
	struct fx *f;

	if (fx_setup_dev(state, 32 * MIB, 0))
		return -1;
	f = *state;
	ugpu_device_rpm_set_autosuspend_delay(f->dev, -1); /* suspends are explicit */
	return 0;
}

static inline void rpm_stats_now(struct fx *f, struct ugpu_rpm_stats *st)
{
	st->size = sizeof(*st);
	assert_int_equal(ugpu_device_rpm_stats(f->dev, st), 0);
}

/* Runtime suspend now, to D3cold (@cold) or D3hot; returns the call's result. */
static inline int rpm_sleep(struct fx *f, bool cold)
{
	assert_int_equal(ugpu_device_rpm_set_d3cold_threshold(f->dev, cold ? 1ull << 40 : 0), 0);
	return ugpu_device_rpm_suspend(f->dev);
}

static inline enum cpu_map_state map_state(struct ugpu_bo *bo)
{
	struct cpu_map_info mi;

	cpu_map_query(bo->map, &mi);
	return mi.state;
}

/* The BO (1 MiB) holds pattern @seed except its first word: the first bad
 * offset, or -1. */
static inline int64_t check_after_word(struct ugpu_bo *bo, uint32_t seed)
{
	uint8_t *buf = malloc(MIB);
	int64_t r = -2;

	if (buf && !ugpu_bo_read(bo, 0, buf, MIB)) {
		pat_fill(buf, 8, seed);
		r = pat_check(buf, MIB, seed);
	}
	free(buf);
	return r;
}

/* ---- a thread that stores one word through a mapping on request ---------- */

struct storer {
	pthread_t thread;
	volatile uint64_t *addr;
	uint64_t value;
	atomic_int go; /* 1: store now; 2: quit */
	atomic_int done; /* stores completed */
};

static inline void *storer_main(void *arg)
{
	struct storer *s = arg;

	for (;;) {
		int g = atomic_load(&s->go);

		if (g == 2)
			return NULL;
		if (g == 1) {
			*s->addr = s->value;
			atomic_store(&s->go, 0);
			atomic_fetch_add(&s->done, 1);
		}
		usleep(100);
	}
}

/* Ask for the store and wait until it completed, up to @ms. */
static inline bool storer_store(struct storer *s, uint64_t value, int ms)
{
	int before = atomic_load(&s->done);
	uint64_t t0 = fx_now_ms();

	s->value = value;
	atomic_store(&s->go, 1);
	while (atomic_load(&s->done) == before) {
		if (fx_now_ms() - t0 > (uint64_t)ms)
			return false;
		usleep(200);
	}
	return true;
}

/* The test's storer, stopped by the teardown when an assertion ended the
 * test early (it would otherwise touch a mapping the close removed). Not on
 * a test's stack: a failed assertion leaves the test function early. */
static struct storer the_storer __attribute__((unused));
static struct storer *live_storer __attribute__((unused));

static inline void storer_start(struct storer *s, void *addr)
{
	memset(s, 0, sizeof(*s));
	s->addr = addr;
	assert_int_equal(pthread_create(&s->thread, NULL, storer_main, s), 0);
	live_storer = s;
}

static inline void storer_stop(struct storer *s)
{
	atomic_store(&s->go, 2);
	pthread_join(s->thread, NULL);
	live_storer = NULL;
}

static inline int teardown(void **state)
{
	test_point_clear_all();
	if (live_storer)
		storer_stop(live_storer);
	return fx_teardown(state);
}

struct d3cold_store {
	struct storer *s;
	struct ugpu_bo *bo;
	int hits;
	bool stored;
};

/* A test point after the D3cold backup of @d->bo was taken: the storer
 * stores (once). */
static inline void store_after_backup(void *arg, enum test_point_id id, void *obj)
{
	struct d3cold_store *d = arg;

	(void)id;
	if (obj != d->bo || d->hits++)
		return;
	/* Fixed: the mapping was released before the backup, so the store
	 * faults, takes a reference (aborting this suspend) and lands. */
	d->stored = storer_store(d->s, 0x5151515151515151ull, 2000);
}

/* ---- a thread that stores without a pause --------------------------------- */

struct spinner {
	pthread_t t;
	volatile uint64_t *p;
	atomic_uint_fast64_t last;
	atomic_bool stop, hold, bused;
	atomic_int held; /* 1 while it waits at @hold */
};

/* A lost BO's touch raises SIGBUS: the spinner stops there (@bused). */
static __thread sigjmp_buf spin_jmp __attribute__((unused));
static __thread int spin_jmp_set __attribute__((unused));

static inline void spin_sigbus(int sig)
{
	if (!spin_jmp_set) {
		signal(sig, SIG_DFL);
		raise(sig);
		return;
	}
	siglongjmp(spin_jmp, 1);
}

static inline void *spinner_main(void *arg)
{
	struct spinner *sp = arg;
	volatile uint64_t v = 1;

	if (sigsetjmp(spin_jmp, 1)) {
		atomic_store(&sp->bused, true);
		atomic_store(&sp->held, 1);
		return NULL;
	}
	spin_jmp_set = 1;
	for (; !atomic_load(&sp->stop); v++) {
		if (atomic_load(&sp->hold)) {
			atomic_store(&sp->held, 1);
			while (atomic_load(&sp->hold) && !atomic_load(&sp->stop))
				usleep(100);
			atomic_store(&sp->held, 0);
		}
		sp->p[(v % 64) * 512] = v; /* 64 words 4 KiB apart, then the last */
		sp->p[0] = v;
		atomic_store(&sp->last, v);
	}
	return NULL;
}

static inline void spinner_hold(struct spinner *sp)
{
	atomic_store(&sp->hold, true);
	while (!atomic_load(&sp->held))
		usleep(50);
}

#endif
