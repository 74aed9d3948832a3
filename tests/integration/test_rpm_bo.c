/* SPDX-License-Identifier: MIT */
/*
 * Runtime PM with buffer objects: CPU mappings of VRAM BOs are released
 * before the device sleeps and a touch wakes it (data intact); only BOs
 * still mapped in VRAM are released (moved/destroyed ones are not touched);
 * D3cold evicts to system and restores after the wake; unmap/destroy/close
 * while asleep; many threads touching many BOs wake it once; a process
 * exiting while it sleeps; and a stress: writer threads on many mapped BOs
 * while the device cycles suspend/resume 10,000 times, every write landing
 * and none reaching the sleeping device. Mappings are released in place
 * (the reference device's VRAM is a memfd) and, in a second run of the
 * tests that depend on it, by invalidation (the vfio-pci BAR path).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#include <cmocka.h>

#include <ugpu/bo.h>
#include <ugpu/rpm.h>

#include "mm/bo.h"
#include "mm/bo_rpm.h"
#include "mm/cpu_map.h"
#include "src/device.h"
#include "src/rpm.h"
#include "tools/ugpu-sim/sim.h"
#include "test_bo_common.h"

static int setup(void **state)
{
	struct fx *f;

	if (fx_setup_dev(state, 32u << 20, 0))
		return -1;
	f = *state;
	ugpu_device_rpm_set_d3cold_threshold(f->dev, 0); /* D3hot unless a test says */
	ugpu_device_rpm_set_autosuspend_delay(f->dev, -1); /* suspends are explicit */
	return 0;
}

/* The same, releasing CPU mappings by invalidation: the path of a backing
 * userfaultfd cannot register in place (a vfio-pci BAR). */
static bool by_invalidate;

static int setup_invalidate(void **state)
{
	by_invalidate = true;
	bo_test_release_by_invalidate(true);
	return setup(state);
}

static int teardown_invalidate(void **state)
{
	by_invalidate = false;
	bo_test_release_by_invalidate(false);
	return fx_teardown(state);
}

/* What a released mapping looks like: kept and emptied in place (the
 * reference device's VRAM is a memfd), or replaced by a placeholder. */
static enum cpu_map_state released_state(void)
{
	return by_invalidate ? CPU_MAP_UNMAPPED : CPU_MAP_RELEASED;
}



static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct ugpu_rpm_stats stats(struct fx *f)
{
	struct ugpu_rpm_stats s = { .size = sizeof(s) };

	assert_int_equal(ugpu_device_rpm_stats(f->dev, &s), 0);
	return s;
}

static enum sim_power_state sim_power(struct fx *f)
{
	struct sim_state st;

	assert_int_equal(sim_state(f->sim, 0, &st), 0);
	return st.power;
}

static struct ugpu_bo *cpu_bo_new(struct fx *f, uint64_t bytes, uint32_t flags)
{
	struct ugpu_bo_opts o = {
		.size = sizeof(o),
		.bytes = bytes,
		.placements = { UGPU_PLACEMENT_VRAM, UGPU_PLACEMENT_SYSTEM },
		.flags = UGPU_BO_CPU_ACCESS | flags,
		.name = "rpm-test",
	};
	struct ugpu_bo *bo = NULL;

	assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), 0);
	return bo;
}

static enum cpu_map_state map_state(struct ugpu_bo *bo)
{
	struct cpu_map_info i;

	cpu_map_query(bo->map, &i);
	return i.state;
}

static void fill(uint32_t *p, size_t words, uint32_t seed)
{
	size_t i;

	for (i = 0; i < words; i++)
		p[i] = seed * 2654435761u + (uint32_t)i;
}

static void check(const uint32_t *p, size_t words, uint32_t seed)
{
	size_t i;

	for (i = 0; i < words; i++)
		if (p[i] != seed * 2654435761u + (uint32_t)i)
			fail_msg("word %zu: 0x%08x, expected 0x%08x", i, p[i],
				 seed * 2654435761u + (uint32_t)i);
}

/* Map, write, autosuspend: the mappings are released before D3; a read and
 * a write from the CPU wake the device; the data is intact. */
static void test_map_write_autosuspend_touch(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo[4];
	uint32_t *p[4], *tmp;
	struct bo_rpm_stats bs;
	size_t words = (256u << 10) / 4;
	uint64_t end;
	int i;

	for (i = 0; i < 4; i++) {
		bo[i] = cpu_bo_new(f, 256u << 10, 0);
		assert_int_equal(ugpu_bo_map(bo[i], (void **)&p[i]), 0);
		fill(p[i], words, (uint32_t)i + 1);
		assert_int_equal(map_state(bo[i]), CPU_MAP_MAPPED);
	}
	bo_rpm_get_stats(f->dev, &bs);
	assert_int_equal(bs.listed, 4);

	assert_int_equal(ugpu_device_rpm_set_autosuspend_delay(f->dev, 20), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	end = ms_now() + 3000;
	while (stats(f).state != UGPU_RPM_SUSPENDED && ms_now() < end)
		usleep(1000);
	assert_int_equal(stats(f).state, UGPU_RPM_SUSPENDED);
	assert_int_equal(sim_power(f), SIM_POWER_D3HOT);
	for (i = 0; i < 4; i++)
		assert_int_equal(map_state(bo[i]), released_state());
	bo_rpm_get_stats(f->dev, &bs);
	assert_int_equal(bs.released, 4);
	assert_int_equal(bs.listed, 0);

	/* Hold the device awake from here so the checks see one wake. */
	assert_int_equal(ugpu_device_rpm_set_autosuspend_delay(f->dev, -1), 0);
	check(p[2], words, 3); /* a read wakes it */
	assert_int_equal(stats(f).resumes, 1);
	assert_int_equal(sim_power(f), SIM_POWER_D0);
	p[0][7] = 0xfeedface; /* a write too (already awake) */
	check(p[1], words, 2);
	check(p[3], words, 4);

	/* Again, forced: a write is the first touch this time. */
	assert_int_equal(ugpu_device_rpm_suspend(f->dev), 0);
	p[0][9] = 0xabad1dea;
	assert_int_equal(stats(f).resumes, 2);
	tmp = malloc(words * 4);
	assert_non_null(tmp);
	assert_int_equal(ugpu_device_rpm_get(f->dev), 0);
	assert_int_equal(ugpu_bo_read(bo[0], 0, tmp, words * 4), 0); /* through the BAR */
	ugpu_device_rpm_put(f->dev);
	assert_int_equal(tmp[7], 0xfeedface);
	assert_int_equal(tmp[9], 0xabad1dea);
	p[0][7] = 1u * 2654435761u + 7; /* put the pattern back */
	p[0][9] = 1u * 2654435761u + 9;
	check(p[0], words, 1);
	free(tmp);
	for (i = 0; i < 4; i++)
		ugpu_bo_put(bo[i]);
}

/* Only BOs still mapped in VRAM are released: a BO moved to system memory
 * and a destroyed one are off the list; an unmapped one too. */
static void test_list_bookkeeping(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *moved, *gone, *unmapped, *kept;
	uint32_t *pm, *pg, *pu, *pk;
	struct cpu_map_info mi;
	struct bo_rpm_stats bs;

	moved = cpu_bo_new(f, 64u << 10, 0);
	gone = cpu_bo_new(f, 64u << 10, 0);
	unmapped = cpu_bo_new(f, 64u << 10, 0);
	kept = cpu_bo_new(f, 64u << 10, 0);
	assert_int_equal(ugpu_bo_map(moved, (void **)&pm), 0);
	assert_int_equal(ugpu_bo_map(gone, (void **)&pg), 0);
	assert_int_equal(ugpu_bo_map(unmapped, (void **)&pu), 0);
	assert_int_equal(ugpu_bo_map(kept, (void **)&pk), 0);
	pm[0] = 1;
	pg[0] = 2;
	pu[0] = 3;
	pk[0] = 4;
	bo_rpm_get_stats(f->dev, &bs);
	assert_int_equal(bs.listed, 4);

	assert_int_equal(ugpu_device_rpm_get(f->dev), 0); /* the move uses the blitter */
	assert_int_equal(ugpu_bo_migrate(moved, UGPU_PLACEMENT_SYSTEM), 0);
	ugpu_device_rpm_put(f->dev);
	assert_int_equal(pm[0], 1); /* faults into system memory: no list */
	ugpu_bo_put(gone);
	assert_int_equal(ugpu_bo_unmap(unmapped), 0);
	bo_rpm_get_stats(f->dev, &bs);
	assert_int_equal(bs.listed, 1);

	cpu_map_query(moved->map, &mi);
	uint64_t moved_inval = mi.invalidations;
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	assert_int_equal(ugpu_device_rpm_suspend(f->dev), 0);
	bo_rpm_get_stats(f->dev, &bs);
	assert_int_equal(bs.released, 1);
	cpu_map_query(moved->map, &mi);
	assert_int_equal(mi.invalidations, moved_inval); /* untouched */
	assert_int_equal(mi.state, CPU_MAP_MAPPED);
	assert_int_equal(map_state(kept), released_state());
	/* A system-memory BO is usable while the device sleeps. */
	pm[1] = 11;
	assert_int_equal(stats(f).state, UGPU_RPM_SUSPENDED);
	assert_int_equal(pk[0], 4); /* wakes */
	assert_int_equal(stats(f).state, UGPU_RPM_ACTIVE);
	ugpu_bo_put(moved);
	ugpu_bo_put(unmapped);
	ugpu_bo_put(kept);
	assert_int_equal(bo_mgr_check(f->dev, false), 0);
}

/* D3cold: unpinned VRAM BOs go to system first (their mappings follow, no
 * wake needed to touch them), pinned ones are copied by CPU and put back
 * at the wake; after the wake the rpm thread moves the evictees back. */
static void test_d3cold_evict_restore(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *a, *pinned;
	struct ugpu_bo_info info = { .size = sizeof(info) };
	struct bo_rpm_stats bs;
	uint32_t *pa, *pp;
	size_t words = (128u << 10) / 4;
	int k;

	a = cpu_bo_new(f, 128u << 10, 0);
	pinned = cpu_bo_new(f, 128u << 10, UGPU_BO_PINNED);
	assert_int_equal(ugpu_bo_map(a, (void **)&pa), 0);
	assert_int_equal(ugpu_bo_map(pinned, (void **)&pp), 0);
	fill(pa, words, 21);
	fill(pp, words, 22);

	assert_int_equal(ugpu_device_rpm_set_d3cold_threshold(f->dev, 30u << 20), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	assert_int_equal(ugpu_device_rpm_suspend(f->dev), 0);
	assert_int_equal(sim_power(f), SIM_POWER_D3COLD);
	assert_int_equal(stats(f).suspends_d3cold, 1);
	assert_int_equal(ugpu_bo_query(a, &info), 0);
	assert_int_equal(info.placement, UGPU_PLACEMENT_SYSTEM);
	bo_rpm_get_stats(f->dev, &bs);
	assert_true(bs.evicted >= 1);
	assert_true(bs.backed_up >= 1); /* the pinned BO (and the engine rings) */

	check(pa, words, 21); /* in system memory: the device stays asleep */
	assert_int_equal(stats(f).state, UGPU_RPM_SUSPENDED);
	check(pp, words, 22); /* pinned in VRAM: wakes, restored by CPU */
	assert_int_equal(stats(f).resumes, 1);
	for (k = 0; k < 3000; k++) {
		bo_rpm_get_stats(f->dev, &bs);
		if (bs.restored >= 1)
			break;
		usleep(1000);
	}
	assert_true(bs.restored >= 1);
	assert_int_equal(ugpu_bo_query(a, &info), 0);
	assert_int_equal(info.placement, UGPU_PLACEMENT_VRAM);
	check(pa, words, 21);
	assert_int_equal(bo_mgr_check(f->dev, false), 0);
	ugpu_bo_put(a);
	ugpu_bo_put(pinned);
}

/* Many threads touching many released BOs at once wake the device once. */
#define CT_THREADS 8

struct toucher {
	pthread_barrier_t *go;
	uint32_t *p[CT_THREADS];
	size_t words;
	int me;
	int bad;
};

static void *toucher_thread(void *arg)
{
	struct toucher *t = arg;
	int i;

	pthread_barrier_wait(t->go);
	for (i = 0; i < CT_THREADS; i++) {
		int k = (t->me + i) % CT_THREADS; /* everyone starts on a different BO */

		if (t->p[k][t->me] != (uint32_t)(k + 1) * 2654435761u + (uint32_t)t->me)
			t->bad++;
	}
	t->p[t->me][t->words - 1] = 0xc0ffee00u + (uint32_t)t->me;
	return NULL;
}

static void test_concurrent_touches_wake_once(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo[CT_THREADS];
	struct toucher t[CT_THREADS];
	pthread_t th[CT_THREADS];
	pthread_barrier_t go;
	size_t words = (64u << 10) / 4;
	struct ugpu_rpm_stats st;
	int i, k;

	memset(t, 0, sizeof(t));
	for (i = 0; i < CT_THREADS; i++) {
		bo[i] = cpu_bo_new(f, 64u << 10, 0);
		assert_int_equal(ugpu_bo_map(bo[i], (void **)&t[0].p[i]), 0);
		fill(t[0].p[i], words, (uint32_t)i + 1);
	}
	assert_int_equal(pthread_barrier_init(&go, NULL, CT_THREADS), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	assert_int_equal(ugpu_device_rpm_suspend(f->dev), 0);
	st = stats(f);
	assert_int_equal(st.state, UGPU_RPM_SUSPENDED);
	for (i = 0; i < CT_THREADS; i++) {
		t[i].go = &go;
		t[i].words = words;
		t[i].me = i;
		for (k = 0; k < CT_THREADS; k++)
			t[i].p[k] = t[0].p[k];
		assert_int_equal(map_state(bo[i]), released_state());
	}
	for (i = 0; i < CT_THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, toucher_thread, &t[i]), 0);
	for (i = 0; i < CT_THREADS; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	for (i = 0; i < CT_THREADS; i++)
		assert_int_equal(t[i].bad, 0);
	assert_int_equal(stats(f).resumes, st.resumes + 1);
	assert_int_equal(stats(f).suspends, st.suspends);
	assert_int_equal(stats(f).state, UGPU_RPM_ACTIVE);
	for (i = 0; i < CT_THREADS; i++) {
		uint32_t v = 0;

		assert_int_equal(ugpu_bo_read(bo[i], (words - 1) * 4, &v, 4), 0);
		assert_int_equal(v, 0xc0ffee00u + (uint32_t)i);
		ugpu_bo_put(bo[i]);
	}
	pthread_barrier_destroy(&go);
}

/* Unmapping, destroying and closing while asleep need no wake and leak
 * nothing (ASan checks the leaks). */
static void test_destroy_while_asleep(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *a, *b;
	uint32_t *pa, *pb;

	a = cpu_bo_new(f, 64u << 10, 0);
	b = cpu_bo_new(f, 64u << 10, 0);
	assert_int_equal(ugpu_bo_map(a, (void **)&pa), 0);
	assert_int_equal(ugpu_bo_map(b, (void **)&pb), 0);
	pa[0] = pb[0] = 5;
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	assert_int_equal(ugpu_device_rpm_suspend(f->dev), 0);
	assert_int_equal(ugpu_bo_unmap(a), 0);
	ugpu_bo_put(a);
	assert_int_equal(stats(f).state, UGPU_RPM_SUSPENDED);
	assert_int_equal(stats(f).resumes, 0);
	/* b stays mapped and alive: close frees its memory and mapping, and
	 * the handle answers -ENODEV until its last put frees it. */
	ugpu_device_close(f->dev);
	f->dev = NULL;
	assert_int_equal(sim_power(f), SIM_POWER_D0);
	assert_int_equal(ugpu_bo_unmap(b), -ENODEV);
	ugpu_bo_put(b);
}

/* --- stress ------------------------------------------------------------- */

#define ST_THREADS 4
#define ST_BOS_PER_THREAD 4
#define ST_CYCLES 10000

struct writer {
	uint32_t *p[ST_BOS_PER_THREAD];
	struct ugpu_bo *bo[ST_BOS_PER_THREAD];
	atomic_int *stop;
	uint32_t last;
	uint32_t seq_now; /* the store being made (atomic; for failure reports) */
	int bad;
	int slot;
};

static void *writer_thread(void *arg)
{
	struct writer *w = arg;
	uint32_t seq = 0;

	while (!atomic_load(w->stop)) {
		int j = (int)(seq % ST_BOS_PER_THREAD);

		seq++;
		__atomic_store_n(&w->seq_now, seq, __ATOMIC_RELAXED);
		w->p[j][w->slot] = seq;
		if (w->p[j][w->slot] != seq)
			w->bad++;
		/* Pace the stores so the device does go idle: each release
		 * then races a few live stores instead of always aborting. */
		usleep(500 + (seq * 7919u) % 1000u);
	}
	w->last = seq;
	return NULL;
}

/* The writers' slots as VRAM holds them, read behind the driver's back
 * (its own BAR mapping, which the test may read in D3hot). */
static uint64_t slots_hash(struct fx *f, const struct writer *w)
{
	uint64_t h = 1469598103934665603ull;
	int t, j;

	for (t = 0; t < ST_THREADS; t++)
		for (j = 0; j < ST_BOS_PER_THREAD; j++) {
			const volatile uint32_t *v = (const volatile uint32_t *)
				((const char *)f->dev->vram + bo_vram_offset(w[t].bo[j]));

			h = (h ^ v[w[t].slot]) * 1099511628211ull;
		}
	return h;
}

/*
 * After a suspend, no store may reach VRAM until the device is awake again.
 * The fault gate holds the first writer that touches a released mapping
 * where a slow wake would (the device stays in D3hot), and VRAM must not
 * change meanwhile although all writers keep storing. A release that let
 * stores through - one that zapped before registering, say - fails here;
 * with VRAM kept in D3hot the data itself would survive, so the final check
 * alone could not tell. The gate closes after the suspend (while closed it
 * would also hold the handler thread that an invalidating release waits
 * for), so a writer may wake the device first: then the device is not
 * suspended when the check starts, or the resume count moved, and there is
 * nothing to check. Returns 1 when a writer was caught waiting
 * (the check had something to check), 0 when not, -EBUSY when the suspend
 * was refused.
 */
static int gated_suspend_check(struct fx *f, const struct writer *w)
{
	uint64_t resumes, before, after, until;
	struct ugpu_rpm_stats st;
	bool caught;
	int r;

	r = ugpu_device_rpm_suspend(f->dev);
	if (r)
		return r;
	bo_rpm_test_gate(true);
	st = stats(f);
	if (st.state != UGPU_RPM_SUSPENDED) {
		/* A writer passed the gate before it closed and woke it. */
		bo_rpm_test_gate(false);
		return 0;
	}
	/* From here a store needs a resume to start and finish first. */
	resumes = st.resumes;
	before = slots_hash(f, w);
	until = ms_now() + 20;
	while (!bo_rpm_test_parked() && ms_now() < until)
		usleep(100);
	caught = bo_rpm_test_parked() > 0;
	usleep(2000); /* writers store every 0.5-1.5 ms */
	after = slots_hash(f, w);
	if (stats(f).resumes != resumes) {
		caught = false; /* woken before the gate closed */
	} else if (before != after) {
		int t, j;

		for (t = 0; t < ST_THREADS; t++)
			for (j = 0; j < ST_BOS_PER_THREAD; j++)
				print_message("writer %d BO %d: map %s, slot %u (last seq %u)\n", t, j,
					      cpu_map_state_name(map_state(w[t].bo[j])),
					      ((const volatile uint32_t *)((const char *)f->dev->vram +
						bo_vram_offset(w[t].bo[j])))[w[t].slot],
					      __atomic_load_n(&w[t].seq_now, __ATOMIC_RELAXED));
		fail_msg("a store reached VRAM while the device slept (release %s)",
			 by_invalidate ? "by invalidation" : "in place");
	}
	bo_rpm_test_gate(false);
	return caught;
}

static void test_stress_writers_vs_cycles(void **state)
{
	struct fx *f = *state;
	struct writer w[ST_THREADS];
	pthread_t th[ST_THREADS];
	atomic_int stop = 0;
	struct bo_rpm_stats bs;
	uint64_t end, done = 0, busy = 0, caught = 0;
	int t, j;

	memset(w, 0, sizeof(w));
	for (t = 0; t < ST_THREADS; t++) {
		w[t].stop = &stop;
		w[t].slot = t * 64; /* own cache line in every BO */
		for (j = 0; j < ST_BOS_PER_THREAD; j++) {
			w[t].bo[j] = cpu_bo_new(f, 16u << 10, 0);
			assert_int_equal(ugpu_bo_map(w[t].bo[j], (void **)&w[t].p[j]), 0);
		}
	}
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	for (t = 0; t < ST_THREADS; t++)
		assert_int_equal(pthread_create(&th[t], NULL, writer_thread, &w[t]), 0);
	end = ms_now() + 25000;
	while ((done = stats(f).suspends) < ST_CYCLES && ms_now() < end) {
		int r = done % 32 == 0 ? gated_suspend_check(f, w) : ugpu_device_rpm_suspend(f->dev);

		if (r > 0) {
			caught++;
			r = 0;
		}
		if (r == -EBUSY) { /* a writer is faulting, or raced the release */
			busy++;
			usleep(50);
			continue;
		}
		if (r)
			fail_msg("suspend failed: %d", r);
		/* Every other cycle a writer's touch wakes the device (bounded
		 * wait); otherwise, or if none came, we wake it ourselves. */
		if (done & 1) {
			uint64_t until = ms_now() + 3;

			while (stats(f).state == UGPU_RPM_SUSPENDED && ms_now() < until)
				usleep(100);
		}
		assert_int_equal(ugpu_device_rpm_get(f->dev), 0);
		ugpu_device_rpm_put(f->dev);
	}
	atomic_store(&stop, 1);
	for (t = 0; t < ST_THREADS; t++)
		pthread_join(th[t], NULL);
	bo_rpm_get_stats(f->dev, &bs);
	print_message("stress (release %s): %llu suspend/resume cycles (%llu aborted/busy), %llu mappings released, "
		      "%llu waking faults\n",
		      by_invalidate ? "by invalidation" : "in place", (unsigned long long)done,
		      (unsigned long long)busy,
		      (unsigned long long)bs.released, (unsigned long long)bs.wake_faults);
	assert_int_equal(done, ST_CYCLES);
	/* The gated checks saw writers waiting (out of ~ST_CYCLES / 32). */
	print_message("stress: %llu gated suspends caught a writer waiting\n",
		      (unsigned long long)caught);
	assert_true(caught >= 20);
	assert_int_equal(stats(f).errors, 0);

	/* Every write landed: each thread's last values, read through the BAR
	 * (not the mapping), are in VRAM. */
	assert_int_equal(ugpu_device_rpm_get(f->dev), 0);
	for (t = 0; t < ST_THREADS; t++) {
		assert_int_equal(w[t].bad, 0);
		for (j = 0; j < ST_BOS_PER_THREAD; j++) {
			uint32_t v = 0, expect;

			assert_int_equal(ugpu_bo_read(w[t].bo[j], (uint64_t)w[t].slot * 4, &v, 4), 0);
			/* The last store to BO j had the largest seq = j+1 mod 4. */
			expect = w[t].last - ((w[t].last - (uint32_t)j - 1) % ST_BOS_PER_THREAD);
			if (w[t].last < (uint32_t)j + 1)
				expect = 0;
			assert_int_equal(v, expect);
		}
	}
	ugpu_device_rpm_put(f->dev);
	for (t = 0; t < ST_THREADS; t++)
		for (j = 0; j < ST_BOS_PER_THREAD; j++)
			ugpu_bo_put(w[t].bo[j]);
}

/*
 * A process that exits while the device sleeps, with a BO still mapped and
 * its mapping released: nothing of it outlives it, and the next process
 * opens the device (waking it) and works. The exiting process is this test
 * binary run again (a fresh exec: no fork of a threaded process).
 */
static int child_exit_while_asleep(const char *uri)
{
	struct ugpu_context_opts copts = { .size = sizeof(copts), .log_level = UGPU_LOG_ERROR };
	struct ugpu_bo_opts o = {
		.size = sizeof(o),
		.bytes = 64u << 10,
		.placements = { UGPU_PLACEMENT_VRAM },
		.flags = UGPU_BO_CPU_ACCESS,
		.name = "exit-asleep",
	};
	struct ugpu_rpm_stats st = { .size = sizeof(st) };
	struct ugpu_context *ctx;
	struct ugpu_device *dev;
	struct ugpu_bo *bo;
	uint32_t *p;

	if (ugpu_context_create(&copts, &ctx) || ugpu_device_open(ctx, uri, &dev))
		return 2;
	if (ugpu_bo_create(dev, &o, &bo) || ugpu_bo_map(bo, (void **)&p))
		return 3;
	p[0] = 0x5eed5eed;
	if (ugpu_device_rpm_allow(dev, true) || ugpu_device_rpm_suspend(dev) ||
	    ugpu_device_rpm_stats(dev, &st) || st.state != UGPU_RPM_SUSPENDED)
		return 4;
	_exit(0); /* no close, no unmap: the process just ends */
}

static void test_exit_while_asleep(void **state)
{
	struct fx *f = *state;
	char *argv[] = { "/proc/self/exe", "--exit-while-asleep", f->uri, NULL };
	struct ugpu_rpm_stats st = { .size = sizeof(st) };
	struct sim_state ss;
	uint64_t end;
	pid_t pid;
	int status;

	/* The reference device serves one client at a time: hand it over. */
	ugpu_device_close(f->dev);
	f->dev = NULL;
	assert_int_equal(posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, environ), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(sim_state(f->sim, 0, &ss), 0);
	/* It did go to sleep: D3cold, the default for so little VRAM in use. */
	assert_int_equal(ss.power, SIM_POWER_D3COLD);

	/* The next user: the device answers (bounded: the model notices the
	 * old client's socket closing), wakes on open and works. */
	end = ms_now() + 3000;
	while (ugpu_device_open(f->ctx, f->uri, &f->dev) && ms_now() < end)
		usleep(10000);
	assert_non_null(f->dev);
	assert_int_equal(sim_power(f), SIM_POWER_D0);
	assert_int_equal(ugpu_device_rpm_stats(f->dev, &st), 0);
	assert_int_equal(st.state, UGPU_RPM_ACTIVE);
	{
		struct ugpu_bo *bo = cpu_bo_new(f, 64u << 10, 0);
		uint32_t *p;

		assert_int_equal(ugpu_bo_map(bo, (void **)&p), 0);
		p[1] = 77;
		assert_int_equal(p[1], 77u);
		ugpu_bo_put(bo);
	}
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--exit-while-asleep"))
		return child_exit_while_asleep(argv[2]);

	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_map_write_autosuspend_touch, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_list_bookkeeping, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_d3cold_evict_restore, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_destroy_while_asleep, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_touches_wake_once, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_touches_wake_once, setup_invalidate,
						teardown_invalidate),
		cmocka_unit_test_setup_teardown(test_exit_while_asleep, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_stress_writers_vs_cycles, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_map_write_autosuspend_touch, setup_invalidate,
						teardown_invalidate),
		cmocka_unit_test_setup_teardown(test_stress_writers_vs_cycles, setup_invalidate,
						teardown_invalidate),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
