/* SPDX-License-Identifier: MIT */
/*
 * Regression tests for ways data was lost, or memory misused, in the core
 * paths (runtime D3cold, unmap, removal, close). Each one makes its narrow
 * window reproducible with a test point (src/test_point.h) where timing alone
 * would hit it only sometimes, and each failed before its fix:
 *
 *  - a store between the D3cold backup of a pinned mapped BO and the release
 *    of its mapping reached VRAM only, and the wake restored the stale backup;
 *  - unmapping a BO while the device sleeps in D3cold freed its only copy;
 *  - a surprise removal during runtime D3cold reported lost the BOs whose
 *    data the runtime-PM backups held;
 *  - an orderly removal dropped the program's UGPU_BO_KERNEL BOs and
 *    reported nothing lost;
 *  - a BO that D3cold evicted, then pinned back into VRAM and touched, was
 *    never listed as mapped: the next suspend left its mapping live;
 *  - a fault that decided "system memory" while a migration to VRAM ran
 *    mapped VRAM unlisted and without a runtime-PM reference;
 *  - BO calls after ugpu_device_close() touched freed memory;
 *  - an aborted D3cold suspend must not restore its backups over VRAM that
 *    was never lost and was written since;
 *  - a copy failure during an orderly removal must be reported as a loss;
 *  - a store while host-suspend backups are copied must survive.
 */
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include <ugpu/rpm.h>
#include <ugpu/unplug.h>

#include "test_bo_common.h"
#include "mm/bo_rpm.h"
#include "mm/cpu_map.h"
#include "src/rpm.h"
#include "base/test_point.h"
#include "src/unplug.h"

#define MIB (1ull << 20)
#define BOUND_MS 15000

static int setup(void **state)
{
	struct fx *f;

	if (fx_setup_dev(state, 32 * MIB, 0))
		return -1;
	f = *state;
	ugpu_device_rpm_set_autosuspend_delay(f->dev, -1); /* suspends are explicit */
	return 0;
}

static void rpm_stats_now(struct fx *f, struct ugpu_rpm_stats *st)
{
	st->size = sizeof(*st);
	assert_int_equal(ugpu_device_rpm_stats(f->dev, st), 0);
}

/* Runtime suspend now, to D3cold (@cold) or D3hot; returns the call's result. */
static int rpm_sleep(struct fx *f, bool cold)
{
	assert_int_equal(ugpu_device_rpm_set_d3cold_threshold(f->dev, cold ? 1ull << 40 : 0), 0);
	return ugpu_device_rpm_suspend(f->dev);
}

static enum cpu_map_state map_state(struct ugpu_bo *bo)
{
	struct cpu_map_info mi;

	cpu_map_query(bo->map, &mi);
	return mi.state;
}

/* The BO (1 MiB) holds pattern @seed except its first word: the first bad
 * offset, or -1. */
static int64_t check_after_word(struct ugpu_bo *bo, uint32_t seed)
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

static void *storer_main(void *arg)
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
static bool storer_store(struct storer *s, uint64_t value, int ms)
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
static struct storer the_storer;
static struct storer *live_storer;

static void storer_start(struct storer *s, void *addr)
{
	memset(s, 0, sizeof(*s));
	s->addr = addr;
	assert_int_equal(pthread_create(&s->thread, NULL, storer_main, s), 0);
	live_storer = s;
}

static void storer_stop(struct storer *s)
{
	atomic_store(&s->go, 2);
	pthread_join(s->thread, NULL);
	live_storer = NULL;
}

static int teardown(void **state)
{
	test_point_clear_all();
	if (live_storer)
		storer_stop(live_storer);
	return fx_teardown(state);
}

/* ---- D3cold: a store between the backup and the release ------------------- */

struct d3cold_store {
	struct storer *s;
	struct ugpu_bo *bo;
	int hits;
	bool stored;
};

/* After the D3cold backup of the BO was taken: another thread stores. */
static void store_after_backup(void *arg, enum test_point_id id, void *obj)
{
	struct d3cold_store *d = arg;

	(void)id;
	if (obj != d->bo || d->hits++)
		return;
	/* Fixed: the mapping was released before the backup, so the store
	 * faults, takes a reference (aborting this suspend) and lands. */
	d->stored = storer_store(d->s, 0x5151515151515151ull, 2000);
}

static void test_d3cold_store_after_backup(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "pinned-mapped");
	struct storer *s = &the_storer;
	struct d3cold_store d = { .s = s, .bo = bo };
	struct ugpu_rpm_stats st;
	uint64_t *p, w = 0;
	int ret;

	assert_non_null(bo);
	assert_int_equal(ugpu_bo_map(bo, (void **)&p), 0);
	pat_fill(p, MIB, 11);
	storer_start(s, p);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);

	test_point_set(TEST_POINT_BO_D3COLD_BACKUP, store_after_backup, &d);
	ret = rpm_sleep(f, true);
	test_point_set(TEST_POINT_BO_D3COLD_BACKUP, NULL, NULL);
	assert_int_equal(d.hits, 1);
	/* Either the store aborted the suspend, or it waits for the wake. */
	assert_true(ret == -EBUSY || ret == 0);
	if (!d.stored)
		assert_true(storer_store(s, 0x5151515151515151ull, BOUND_MS));
	assert_int_equal(ugpu_bo_read(bo, 0, &w, 8), 0);
	assert_int_equal(w, 0x5151515151515151ull);
	assert_int_equal(check_after_word(bo, 11), -1);
	rpm_stats_now(f, &st);
	assert_true(st.bo_backed_up >= 1);
	storer_stop(s);
	ugpu_bo_put(bo);
}

/* ---- unmap while asleep in D3cold ------------------------------------------ */

static void test_unmap_in_d3cold_keeps_data(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *pinned = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "pinned");
	struct ugpu_bo *vonly = bo_new(f->dev, MIB + 4096, 0, V, N, "vram-only");
	struct ugpu_rpm_stats st, st0;
	struct sim_state ss;
	uint8_t *p, *q;

	assert_true(pinned && vonly);
	rpm_stats_now(f, &st0);
	assert_int_equal(ugpu_bo_map(pinned, (void **)&p), 0);
	assert_int_equal(ugpu_bo_map(vonly, (void **)&q), 0);
	pat_fill(p, MIB, 21);
	pat_fill(q, MIB + 4096, 22);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	assert_int_equal(rpm_sleep(f, true), 0);
	assert_int_equal(sim_state(f->sim, 0, &ss), 0);
	assert_int_equal(ss.power, SIM_POWER_D3COLD);
	rpm_stats_now(f, &st);
	assert_true(st.bo_backed_up - st0.bo_backed_up >= 2); /* ours (and the rings) */
	/* Unmapping needs no device: it must not wake it, nor drop a backup. */
	assert_int_equal(ugpu_bo_unmap(pinned), 0);
	assert_int_equal(ugpu_bo_unmap(vonly), 0);
	assert_int_equal(sim_state(f->sim, 0, &ss), 0);
	assert_int_equal(ss.power, SIM_POWER_D3COLD);
	assert_int_equal(bo_verify(pinned, MIB, 21), -1); /* wakes, restores */
	assert_int_equal(bo_verify(vonly, MIB + 4096, 22), -1);
	assert_int_equal(bo_mgr_check(f->dev, true), 0);
	ugpu_bo_put(pinned);
	ugpu_bo_put(vonly);
}

/* ---- surprise removal while asleep in D3cold ------------------------------- */

static void test_surprise_in_d3cold_adopts_rpm_backups(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *pinned = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "pinned");
	struct ugpu_bo *vonly = bo_new(f->dev, 2 * MIB, 0, V, N, "vram-only");
	struct ugpu_bo *unp = bo_new(f->dev, MIB, 0, V, S, "unpinned");
	struct ugpu_unplug_info info;
	struct sim_state ss;
	size_t nlost = 99;
	uint8_t *p;

	assert_true(pinned && vonly && unp);
	assert_int_equal(bo_fill(pinned, MIB, 31), 0);
	assert_int_equal(bo_fill(vonly, 2 * MIB, 32), 0);
	assert_int_equal(ugpu_bo_map(unp, (void **)&p), 0);
	pat_fill(p, MIB, 33);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	assert_int_equal(rpm_sleep(f, true), 0);
	assert_int_equal(sim_state(f->sim, 0, &ss), 0);
	assert_int_equal(ss.power, SIM_POWER_D3COLD);

	assert_int_equal(sim_unplug_surprise(f->sim, 0), 0);
	info = fx_wait_removed(f->dev, BOUND_MS);
	assert_int_equal(info.kind, UGPU_UNPLUG_SURPRISE);
	assert_int_equal(info.bos_lost, 0);
	assert_int_equal(info.bytes_lost, 0);
	assert_int_equal(info.bos_adopted, 2); /* the runtime-PM backups */
	assert_int_equal(ugpu_device_lost_bos(f->dev, NULL, 0, &nlost), 0);
	assert_int_equal(nlost, 0);
	assert_int_equal(bo_where(pinned), S);
	assert_int_equal(bo_where(vonly), S);
	assert_int_equal(bo_where(unp), S); /* D3cold evicted it already */
	assert_int_equal(bo_verify(pinned, MIB, 31), -1);
	assert_int_equal(bo_verify(vonly, 2 * MIB, 32), -1);
	assert_int_equal(bo_verify(unp, MIB, 33), -1);
	assert_int_equal(pat_check(p, MIB, 33), -1);
	assert_int_equal(bo_mgr_check(f->dev, false), 0);
	ugpu_bo_put(pinned);
	ugpu_bo_put(vonly);
	ugpu_bo_put(unp);
}

/* The same when an orderly removal cannot wake the device. */
static void test_removal_wake_fails_in_d3cold(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *pinned = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "pinned");
	struct ugpu_unplug_info info;

	assert_non_null(pinned);
	assert_int_equal(bo_fill(pinned, MIB, 41), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	assert_int_equal(rpm_sleep(f, true), 0);
	assert_int_equal(sim_inject(f->sim, 0, SIM_INJECT_WAKE, 1, true), 0);
	assert_int_equal(ugpu_device_unplug(f->dev), -ENODEV); /* as good as a surprise */
	info = fx_wait_removed(f->dev, BOUND_MS);
	assert_int_equal(info.bos_lost, 0);
	assert_int_equal(info.bos_adopted, 1);
	assert_int_equal(bo_verify(pinned, MIB, 41), -1);
	sim_inject_clear(f->sim, 0);
	ugpu_bo_put(pinned);
}

/* ---- a BO moved back into VRAM under a storer, then D3cold ----------------- */

struct spinner {
	pthread_t t;
	volatile uint64_t *p;
	atomic_uint_fast64_t last;
	atomic_bool stop, hold, bused;
	atomic_int held; /* 1 while it waits at @hold */
};

/* A lost BO's touch raises SIGBUS: the spinner stops there (@bused). */
static __thread sigjmp_buf spin_jmp;
static __thread int spin_jmp_set;

static void spin_sigbus(int sig)
{
	if (!spin_jmp_set) {
		signal(sig, SIG_DFL);
		raise(sig);
		return;
	}
	siglongjmp(spin_jmp, 1);
}

static void *spinner_main(void *arg)
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

static void spinner_hold(struct spinner *sp)
{
	atomic_store(&sp->hold, true);
	while (!atomic_load(&sp->held))
		usleep(50);
}

/* A mapping that a move (migrate, pin) brought back into VRAM while a
 * thread stored through it must be released at the next D3cold like any:
 * else its stores after the backup reach VRAM only and the wake's restore
 * takes them back (the model's TSan campaign: a surprise removal adopted
 * such a stale backup). */
static void test_moved_back_then_d3cold_keeps_stores(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, MIB, 0, V, S, "spun");
	struct spinner sp = { 0 };
	uint64_t *p, w = 0;
	int slept = 0;

	assert_non_null(bo);
	assert_int_equal(ugpu_bo_map(bo, (void **)&p), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	sp.p = p;
	assert_int_equal(pthread_create(&sp.t, NULL, spinner_main, &sp), 0);
	for (int round = 0; round < 40; round++) {
		int r;

		assert_int_equal(ugpu_bo_migrate(bo, S), 0);
		usleep(200);
		if (round % 2)
			assert_int_equal(ugpu_bo_migrate(bo, V), 0);
		else
			assert_int_equal(ugpu_bo_pin(bo), 0); /* back to VRAM, its first */
		usleep(200);
		spinner_hold(&sp); /* idle: the suspend goes ahead */
		r = rpm_sleep(f, true); /* pinned: backed up; else evicted */
		assert_true(r == 0 || r == -EBUSY || r == -EAGAIN);
		slept += r == 0;
		atomic_store(&sp.hold, false); /* stores after the backup */
		usleep(2000);
		if (!(round % 2))
			assert_int_equal(ugpu_bo_unpin(bo), 0);
	}
	spinner_hold(&sp);
	assert_int_equal(ugpu_bo_read(bo, 0, &w, 8), 0);
	assert_int_equal(w, atomic_load(&sp.last));
	atomic_store(&sp.hold, false);
	/* and a surprise removal in D3cold with stores racing it: adopted
	 * from the D3cold backup, every store after it in the adopted memory */
	{
		struct ugpu_unplug_info info;
		int r;

		assert_int_equal(ugpu_bo_migrate(bo, S), 0);
		assert_int_equal(ugpu_bo_pin(bo), 0); /* back to VRAM, backed up at D3cold */
		usleep(500);
		spinner_hold(&sp);
		r = rpm_sleep(f, true);
		assert_int_equal(r, 0);
		atomic_store(&sp.hold, false);
		assert_int_equal(sim_unplug_surprise(f->sim, 0), 0);
		info = fx_wait_removed(f->dev, BOUND_MS);
		usleep(2000);
		atomic_store(&sp.stop, true);
		pthread_join(sp.t, NULL);
		print_message("surprise removal in D3cold: %llu adopted, %llu lost\n",
			      (unsigned long long)info.bos_adopted, (unsigned long long)info.bos_lost);
		if (info.bos_lost == 0) {
			assert_int_equal(ugpu_bo_read(bo, 0, &w, 8), 0);
			assert_int_equal(w, atomic_load(&sp.last));
		}
	}
	print_message("%d of 40 D3cold suspends with the storer running; last store %llu, read %llu\n",
		      slept, (unsigned long long)atomic_load(&sp.last), (unsigned long long)w);
	ugpu_bo_unpin(bo);
	ugpu_bo_put(bo);
}

/* how long the rpm thread waits after the unplug at TEST_POINT_RPM_HOOKS_DONE */
static unsigned int unplug_then_wait_us = 3000;

static void unplug_at_hooks_done(void *arg, enum test_point_id id, void *obj)
{
	struct fx *f = arg;

	(void)id;
	(void)obj;
	sim_unplug_surprise(f->sim, 0);
	if (unplug_then_wait_us)
		usleep(unplug_then_wait_us); /* the removal's thread gets going */
}

/* The same, but a write through the API right after the abandoned suspend,
 * before the removal (its watcher polls every 10 ms) has looked: the
 * device is gone and the runtime-PM state says awake. The write must wait
 * for the removal and land in the memory it keeps, not in VRAM behind the
 * backup the removal adopts. */
static void test_surprise_during_d3cold_entry_write_waits(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "entry-write");
	struct ugpu_unplug_info info;
	uint64_t magic = 0x6b6b6b6b12345678ull, w = 0;
	int r, rw;

	assert_non_null(bo);
	assert_int_equal(bo_fill(bo, MIB, 61), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	unplug_then_wait_us = 0;
	test_point_set(TEST_POINT_RPM_HOOKS_DONE, unplug_at_hooks_done, f);
	r = rpm_sleep(f, true);
	test_point_set(TEST_POINT_RPM_HOOKS_DONE, NULL, NULL);
	unplug_then_wait_us = 3000;
	rw = ugpu_bo_write(bo, 4096, &magic, 8);
	info = fx_wait_removed(f->dev, BOUND_MS);
	print_message("suspend %d, write %d; removal: %llu adopted, %llu lost\n", r, rw,
		      (unsigned long long)info.bos_adopted, (unsigned long long)info.bos_lost);
	if (info.bos_lost) {
		assert_int_equal(ugpu_bo_read(bo, 4096, &w, 8), -ENODATA);
	} else {
		assert_int_equal(rw, 0);
		assert_int_equal(ugpu_bo_read(bo, 4096, &w, 8), 0);
		assert_int_equal(w, magic);
		{
			uint8_t *got = malloc(MIB), *want = malloc(MIB);

			assert_true(got && want);
			pat_fill(want, MIB, 61);
			memcpy(want + 4096, &magic, 8);
			assert_int_equal(ugpu_bo_read(bo, 0, got, MIB), 0);
			assert_memory_equal(got, want, MIB);
			free(got);
			free(want);
		}
	}
	ugpu_bo_put(bo);
}

/* A surprise removal while a D3cold suspend is past its hooks (backups
 * taken, mappings released), with a thread storing right after: the
 * backup was current, so the removal keeps the BO from it, and it holds
 * every store (the stores wait for the removal). The abandoned suspend
 * dropped its backups before the removal looked: reported lost. With
 * @hold_us the suspend waits that long after the unplug, before its power
 * step: the removal looks in that window (below). */
static void surprise_during_d3cold_entry(struct fx *f, unsigned int hold_us)
{
	struct ugpu_bo *bo = bo_new(f->dev, MIB, UGPU_BO_PINNED | UGPU_BO_NO_RESTORE, V, S, "entry");
	struct ugpu_unplug_info info;
	struct spinner sp = { 0 };
	uint64_t *p, w = 0;
	int r, rr;

	assert_non_null(bo);
	assert_int_equal(ugpu_bo_map(bo, (void **)&p), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	sp.p = p;
	signal(SIGBUS, spin_sigbus);
	assert_int_equal(pthread_create(&sp.t, NULL, spinner_main, &sp), 0);
	usleep(2000);
	spinner_hold(&sp);
	unplug_then_wait_us = hold_us;
	test_point_set(TEST_POINT_RPM_HOOKS_DONE, unplug_at_hooks_done, f);
	r = rpm_sleep(f, true);
	test_point_set(TEST_POINT_RPM_HOOKS_DONE, NULL, NULL);
	unplug_then_wait_us = 3000;
	atomic_store(&sp.hold, false);
	info = fx_wait_removed(f->dev, BOUND_MS);
	usleep(2000);
	atomic_store(&sp.stop, true);
	pthread_join(sp.t, NULL);
	signal(SIGBUS, SIG_DFL);
	rr = ugpu_bo_read(bo, 0, &w, 8);
	print_message("suspend %d; removal: %llu adopted, %llu lost; read %d: last %llu, read %llu%s\n",
		      r, (unsigned long long)info.bos_adopted, (unsigned long long)info.bos_lost, rr,
		      (unsigned long long)atomic_load(&sp.last), (unsigned long long)w,
		      atomic_load(&sp.bused) ? " (the storer got SIGBUS)" : "");
	assert_int_equal(info.bos_lost, 0);
	assert_int_equal(info.bos_adopted, 1);
	assert_false(atomic_load(&sp.bused));
	assert_int_equal(rr, 0);
	assert_int_equal(w, atomic_load(&sp.last));
	ugpu_bo_put(bo);
}

static void test_surprise_during_d3cold_entry_keeps_stores(void **state)
{
	surprise_during_d3cold_entry(*state, 3000);
}

/* The removal looks while the suspend is between its hooks and its power
 * step (held 100 ms there): VRAM is out of reach, and the backups are
 * current since no access was let in after the hooks. It found VRAM
 * neither readable nor backed up and reported the BO lost (this test
 * failed every run; the 3 ms one about one run in three on a loaded
 * machine); now it adopts the backup and holds accesses until the
 * suspend's hooks' resume has kept it. */
static void test_surprise_before_d3cold_power_step_keeps_stores(void **state)
{
	surprise_during_d3cold_entry(*state, 100000);
}

/* The unplug comes inside the BO hook, its backup just taken (manager lock
 * held); the removal waits for that lock. Then the suspending thread is
 * held 50 ms after the hook returned, before the suspend says its hooks are
 * done: the removal looked then, found VRAM neither readable nor backed up
 * (its question came too early) and reported the BO lost; it now waits for
 * the hooks to be done and adopts the backup (the review of 2026-12-07:
 * 3/3 lost with the hold, about one run in three without it under load). */
struct unplug_in_hook {
	struct fx *f;
	struct ugpu_bo *bo;
	int hits;
};

static void unplug_at_backup(void *arg, enum test_point_id id, void *obj)
{
	struct unplug_in_hook *u = arg;

	(void)id;
	if (obj != u->bo || u->hits++)
		return;
	sim_unplug_surprise(u->f->sim, 0);
	usleep(20000); /* the removal gets going: it waits for the manager lock */
}

/* Hold the thread at a test point for (uintptr_t)@arg microseconds. */
static void hold_at_point(void *arg, enum test_point_id id, void *obj)
{
	(void)id, (void)obj;
	usleep((useconds_t)(uintptr_t)arg);
}

static void test_surprise_as_d3cold_hooks_return_keeps(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "hook-return");
	struct unplug_in_hook u = { .f = f, .bo = bo };
	struct ugpu_unplug_info info;
	int r;

	assert_non_null(bo);
	assert_int_equal(bo_fill(bo, MIB, 33), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	test_point_set(TEST_POINT_BO_D3COLD_BACKUP, unplug_at_backup, &u);
	test_point_set(TEST_POINT_RPM_HOOK_RETURNED, hold_at_point, (void *)(uintptr_t)50000);
	r = rpm_sleep(f, true);
	test_point_set(TEST_POINT_RPM_HOOK_RETURNED, NULL, NULL);
	test_point_set(TEST_POINT_BO_D3COLD_BACKUP, NULL, NULL);
	info = fx_wait_removed(f->dev, BOUND_MS);
	print_message("suspend %d; removal: %llu adopted, %llu lost\n", r,
		      (unsigned long long)info.bos_adopted, (unsigned long long)info.bos_lost);
	assert_int_equal(info.bos_lost, 0);
	assert_int_equal(info.bos_adopted, 1);
	assert_int_equal(bo_verify(bo, MIB, 33), -1);
	ugpu_bo_put(bo);
}

/* A surprise injected on a device that still answers (as an orderly removal
 * whose wake failed goes on), between the D3cold suspend's hooks and its
 * power step; the removal is held 300 ms as it adopts the backup, and the
 * program loads and stores through its mapping meanwhile. The suspend once
 * went on to D3cold (the device answered), the touch woke it and mapped
 * VRAM that the resume had not restored (the load saw 0xdeadbeef...), and
 * the store landed there, under the backup adopted after it: "1 adopted,
 * 0 lost" and the store gone (the review of 2026-12-07). Now the claimed
 * backups skip the power step and every access waits for the removal. */
static void inject_at_hooks_done(void *arg, enum test_point_id id, void *obj)
{
	struct fx *f = arg;

	(void)id, (void)obj;
	unplug_inject_surprise(f->dev);
	usleep(100000); /* the removal claims the backups */
}

static void test_injected_surprise_before_power_step_keeps_store(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, MIB, UGPU_BO_PINNED | UGPU_BO_NO_RESTORE, V, S, "inject");
	struct ugpu_unplug_info info;
	uint64_t *p, magic = 0x5a5a5a5a0badf00dull, w = 0, seen, want[1];
	int r, rr;

	assert_non_null(bo);
	assert_int_equal(ugpu_bo_map(bo, (void **)&p), 0);
	pat_fill(p, MIB, 45);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	test_point_set(TEST_POINT_UNPLUG_ADOPTING, hold_at_point, (void *)(uintptr_t)300000);
	test_point_set(TEST_POINT_RPM_HOOKS_DONE, inject_at_hooks_done, f);
	r = rpm_sleep(f, true);
	test_point_set(TEST_POINT_RPM_HOOKS_DONE, NULL, NULL);
	seen = ((volatile uint64_t *)p)[513]; /* waits for the removal */
	p[512] = magic;
	info = fx_wait_removed(f->dev, BOUND_MS);
	test_point_set(TEST_POINT_UNPLUG_ADOPTING, NULL, NULL);
	rr = ugpu_bo_read(bo, 4096, &w, 8);
	print_message("suspend %d; load 0x%llx; removal: %llu adopted, %llu lost; read %d: 0x%llx\n", r,
		      (unsigned long long)seen, (unsigned long long)info.bos_adopted,
		      (unsigned long long)info.bos_lost, rr, (unsigned long long)w);
	{
		uint64_t *all = malloc(MIB);

		assert_non_null(all);
		pat_fill(all, MIB, 45);
		want[0] = all[513];
		free(all);
	}
	assert_int_equal(info.bos_lost, 0);
	assert_int_equal(info.bos_adopted, 1);
	assert_int_equal(seen, want[0]);
	assert_int_equal(rr, 0);
	assert_int_equal(w, magic);
	ugpu_bo_put(bo);
}

/* As above, with the removal held as it adopts, while the application
 * takes a runtime-PM reference (a get that is not a BO access): the
 * claimed suspend never reaches D3cold, and a wake from D3cold while the
 * removal runs keeps the backups for it. With both gone the wake restored
 * and dropped the backups under the removal (the re-review of 2026-12-07:
 * "0 adopted, 2 lost"). Every BO the removal kept holds its bytes. */
struct rpm_get_at_adopt {
	struct fx *f;
	int hits, ret;
};

static void rpm_get_at_adopting(void *arg, enum test_point_id id, void *obj)
{
	struct rpm_get_at_adopt *g = arg;

	(void)id, (void)obj;
	if (g->hits++)
		return;
	g->ret = ugpu_device_rpm_get(g->f->dev);
	usleep(100000);
}

static void test_app_rpm_get_while_removal_adopts(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *a = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "adopt-a");
	struct ugpu_bo *b = bo_new(f->dev, MIB, UGPU_BO_PINNED | UGPU_BO_NO_RESTORE, V, S, "adopt-b");
	struct rpm_get_at_adopt g = { .f = f };
	struct ugpu_unplug_info info;
	int r;

	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(bo_fill(a, MIB, 51), 0);
	assert_int_equal(bo_fill(b, MIB, 52), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	test_point_set(TEST_POINT_UNPLUG_ADOPTING, rpm_get_at_adopting, &g);
	test_point_set(TEST_POINT_RPM_HOOKS_DONE, inject_at_hooks_done, f);
	r = rpm_sleep(f, true);
	test_point_set(TEST_POINT_RPM_HOOKS_DONE, NULL, NULL);
	info = fx_wait_removed(f->dev, BOUND_MS);
	test_point_set(TEST_POINT_UNPLUG_ADOPTING, NULL, NULL);
	if (g.hits && !g.ret)
		ugpu_device_rpm_put(f->dev);
	print_message("suspend %d; rpm get %d; removal: %llu adopted, %llu lost\n", r, g.ret,
		      (unsigned long long)info.bos_adopted, (unsigned long long)info.bos_lost);
	assert_int_equal(info.bos_lost, 0);
	assert_int_equal(info.bos_adopted, 2);
	assert_int_equal(bo_verify(a, MIB, 51), -1);
	assert_int_equal(bo_verify(b, MIB, 52), -1);
	ugpu_bo_put(a);
	ugpu_bo_put(b);
}

/* The device goes in the middle of a D3cold suspend's backups: one BO's
 * backup taken before, the next one's copied from what the BAR reads then
 * (all-ones on real hardware; here written over VRAM, since the reference
 * device's memory stays readable). That backup was adopted as good (the
 * re-review of 2026-12-07: "2 adopted, 0 lost", the second BO 0xff). Now a
 * backup copied once the device is known gone is no backup: whatever the
 * removal keeps is byte-exact, the rest is reported lost. */
struct dead_bar {
	struct fx *f;
	struct ugpu_bo *first, *second;
	uint64_t second_at; /* its VRAM offset (pinned: it stays) */
	int hits;
};

static void dead_bar_at_backup(void *arg, enum test_point_id id, void *obj)
{
	struct dead_bar *x = arg;

	(void)id;
	if (obj != x->first || x->hits++)
		return;
	sim_unplug_surprise(x->f->sim, 0);
	usleep(20000); /* seen gone */
	memset((char *)x->f->dev->vram + x->second_at, 0xff, MIB); /* (manager lock held) */
}

static void test_backup_of_dead_bar_not_adopted(void **state)
{
	struct fx *f = *state;
	struct dead_bar x = { .f = f };
	struct ugpu_unplug_info info;
	struct ugpu_bo_info ia = { .size = sizeof(ia) }, ib = { .size = sizeof(ib) };
	int r;

	x.first = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "bar-first");
	x.second = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "bar-second");
	assert_non_null(x.first);
	assert_non_null(x.second);
	assert_int_equal(bo_fill(x.first, MIB, 53), 0);
	assert_int_equal(bo_fill(x.second, MIB, 54), 0);
	assert_int_equal(ugpu_bo_query(x.second, &ib), 0);
	x.second_at = ib.vram_offset;
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	test_point_set(TEST_POINT_BO_D3COLD_BACKUP, dead_bar_at_backup, &x);
	r = rpm_sleep(f, true);
	test_point_set(TEST_POINT_BO_D3COLD_BACKUP, NULL, NULL);
	info = fx_wait_removed(f->dev, BOUND_MS);
	assert_int_equal(ugpu_bo_query(x.first, &ia), 0);
	assert_int_equal(ugpu_bo_query(x.second, &ib), 0);
	print_message("suspend %d; removal: %llu adopted, %llu lost (first %s, second %s)\n", r,
		      (unsigned long long)info.bos_adopted, (unsigned long long)info.bos_lost,
		      ia.lost ? "lost" : "kept", ib.lost ? "lost" : "kept");
	assert_int_equal(x.hits > 0, 1);
	if (!ia.lost)
		assert_int_equal(bo_verify(x.first, MIB, 53), -1);
	if (!ib.lost)
		assert_int_equal(bo_verify(x.second, MIB, 54), -1);
	ugpu_bo_put(x.first);
	ugpu_bo_put(x.second);
}

/* An orderly removal of a device asleep in D3cold whose wake fails once: it
 * goes on as a surprise and adopts the D3cold backup, while the program
 * loads and stores through its mapping. The touch woke the device (the
 * next wake worked) and mapped VRAM the resume had not restored: the load
 * saw 0xdeadbeef..., the store was lost under the adopted backup, and the
 * removal said "1 adopted, 0 lost" (found by the review of 2026-12-07, older
 * than it). Now a removal that found the device unreadable closes VRAM to
 * every access until it has run. */
static void *unplug_thread(void *arg)
{
	struct fx *f = arg;

	(void)ugpu_device_unplug(f->dev);
	return NULL;
}

static void test_orderly_removal_wake_fails_once_keeps_store(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, MIB, UGPU_BO_PINNED | UGPU_BO_NO_RESTORE, V, S, "orderly");
	struct ugpu_unplug_info info;
	uint64_t *p, *all = malloc(MIB), magic = 0x5a5a5a5a0badf00dull, w = 0, seen;
	pthread_t t;
	int rr;

	assert_non_null(bo);
	assert_non_null(all);
	pat_fill(all, MIB, 46);
	assert_int_equal(ugpu_bo_map(bo, (void **)&p), 0);
	pat_fill(p, MIB, 46);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	assert_int_equal(rpm_sleep(f, true), 0);
	assert_int_equal(sim_inject(f->sim, 0, SIM_INJECT_WAKE, 1, false), 0);
	test_point_set(TEST_POINT_UNPLUG_ADOPTING, hold_at_point, (void *)(uintptr_t)300000);
	assert_int_equal(pthread_create(&t, NULL, unplug_thread, f), 0);
	usleep(50000);
	seen = ((volatile uint64_t *)p)[513];
	p[512] = magic;
	pthread_join(t, NULL);
	info = fx_wait_removed(f->dev, BOUND_MS);
	test_point_set(TEST_POINT_UNPLUG_ADOPTING, NULL, NULL);
	sim_inject_clear(f->sim, 0);
	rr = ugpu_bo_read(bo, 4096, &w, 8);
	print_message("load 0x%llx; removal status %d: %llu adopted, %llu lost; read %d: 0x%llx\n",
		      (unsigned long long)seen, info.status, (unsigned long long)info.bos_adopted,
		      (unsigned long long)info.bos_lost, rr, (unsigned long long)w);
	assert_int_equal(info.bos_lost, 0);
	assert_int_equal(info.bos_adopted, 1);
	assert_int_equal(seen, all[513]);
	assert_int_equal(rr, 0);
	assert_int_equal(w, magic);
	free(all);
	ugpu_bo_put(bo);
}

/* Below, a thread held 100 ms at a test point (hold_at_point()): at
 * TEST_POINT_RPM_ABANDONED the removal runs before the hooks' resume; at
 * TEST_POINT_UNPLUG_MARKED the abandoned suspend's hooks run before the
 * removal. */

/* The removal runs between the failed power step and the abandoned
 * suspend's hooks' resume: the backups are current, kept (the review of
 * the kept backups: reported lost in that window). */
static void test_surprise_between_power_step_and_resume(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "window");
	struct ugpu_unplug_info info;
	int r;

	assert_non_null(bo);
	assert_int_equal(bo_fill(bo, MIB, 81), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	unplug_then_wait_us = 0;
	test_point_set(TEST_POINT_RPM_HOOKS_DONE, unplug_at_hooks_done, f);
	test_point_set(TEST_POINT_RPM_ABANDONED, hold_at_point, (void *)(uintptr_t)100000);
	r = rpm_sleep(f, true);
	test_point_set(TEST_POINT_RPM_HOOKS_DONE, NULL, NULL);
	test_point_set(TEST_POINT_RPM_ABANDONED, NULL, NULL);
	unplug_then_wait_us = 3000;
	info = fx_wait_removed(f->dev, BOUND_MS);
	print_message("suspend %d; removal: %llu adopted, %llu lost\n", r,
		      (unsigned long long)info.bos_adopted, (unsigned long long)info.bos_lost);
	assert_int_equal(info.bos_lost, 0);
	assert_int_equal(info.bos_adopted, 1);
	assert_int_equal(bo_verify(bo, MIB, 81), -1);
	ugpu_bo_put(bo);
}

/* A write from another thread while the failed suspend is abandoned
 * (between its power step and its hooks' resume), then a second suspend
 * before the removal: the write waits for the removal and lands in what
 * it keeps, and the second suspend drops nothing (the re-review: the
 * write reached VRAM behind the adopted backup; the second suspend's
 * refusal dropped the backups, the BO reported lost). */
struct window_writer {
	struct ugpu_bo *bo;
	pthread_t t;
	bool started;
	int ret;
};

static void *window_writer_fn(void *arg)
{
	struct window_writer *ww = arg;
	uint64_t magic = 0x77777777abcdef01ull;

	ww->ret = ugpu_bo_write(ww->bo, 8192, &magic, 8);
	return NULL;
}

static void write_in_window(void *arg, enum test_point_id id, void *obj)
{
	struct window_writer *ww = arg;

	(void)id;
	(void)obj;
	if (ww->started)
		return;
	ww->started = pthread_create(&ww->t, NULL, window_writer_fn, ww) == 0;
	usleep(50000); /* it asks for the device now */
}

static void test_access_while_abandoning_then_second_suspend(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "abandoning");
	struct window_writer ww = { .bo = bo };
	struct ugpu_unplug_info info;
	uint64_t magic = 0x77777777abcdef01ull;
	uint8_t *got = malloc(MIB), *want = malloc(MIB);
	int r1, r2;

	assert_non_null(bo);
	assert_true(got && want);
	assert_int_equal(bo_fill(bo, MIB, 91), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	unplug_then_wait_us = 0;
	test_point_set(TEST_POINT_UNPLUG_MARKED, hold_at_point, (void *)(uintptr_t)100000);
	test_point_set(TEST_POINT_RPM_HOOKS_DONE, unplug_at_hooks_done, f);
	test_point_set(TEST_POINT_RPM_ABANDONED, write_in_window, &ww);
	r1 = rpm_sleep(f, true);
	test_point_set(TEST_POINT_RPM_HOOKS_DONE, NULL, NULL);
	test_point_set(TEST_POINT_RPM_ABANDONED, NULL, NULL);
	unplug_then_wait_us = 3000;
	r2 = rpm_sleep(f, true); /* before the removal (held 100 ms) */
	info = fx_wait_removed(f->dev, BOUND_MS);
	test_point_set(TEST_POINT_UNPLUG_MARKED, NULL, NULL);
	assert_true(ww.started);
	pthread_join(ww.t, NULL);
	print_message("suspends %d, %d; write %d; removal: %llu adopted, %llu lost\n", r1, r2, ww.ret,
		      (unsigned long long)info.bos_adopted, (unsigned long long)info.bos_lost);
	assert_int_not_equal(r2, 0);
	assert_int_equal(info.bos_lost, 0);
	assert_int_equal(info.bos_adopted, 1);
	assert_int_equal(ww.ret, 0);
	pat_fill(want, MIB, 91);
	memcpy(want + 8192, &magic, 8);
	assert_int_equal(ugpu_bo_read(bo, 0, got, MIB), 0);
	assert_memory_equal(got, want, MIB);
	free(got);
	free(want);
	ugpu_bo_put(bo);
}

/* A store after the D3cold backup aborts the suspend (it lands in VRAM);
 * then a surprise removal: the abandoned suspend must not keep its
 * backups for the removal, which would adopt them without the store (the
 * review of the kept backups: 1 adopted, the old word read back). */
static struct fx *unplug_fx;

static void store_after_backup_then_unplug(void *arg, enum test_point_id id, void *obj)
{
	struct d3cold_store *d = arg;

	if (obj != d->bo || d->hits)
		return;
	store_after_backup(arg, id, obj);
	sim_unplug_surprise(unplug_fx->sim, 0); /* before the suspend is abandoned */
}

static void test_store_aborts_d3cold_then_surprise(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "aborted");
	struct storer *s = &the_storer;
	struct d3cold_store d = { .s = s, .bo = bo };
	struct ugpu_unplug_info info;
	uint64_t *p, w = 0;
	int ret, rr;

	assert_non_null(bo);
	assert_int_equal(ugpu_bo_map(bo, (void **)&p), 0);
	pat_fill(p, MIB, 71);
	storer_start(s, p);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	unplug_fx = f;
	test_point_set(TEST_POINT_UNPLUG_MARKED, hold_at_point, (void *)(uintptr_t)100000);
	test_point_set(TEST_POINT_BO_D3COLD_BACKUP, store_after_backup_then_unplug, &d);
	ret = rpm_sleep(f, true);
	test_point_set(TEST_POINT_BO_D3COLD_BACKUP, NULL, NULL);
	assert_int_equal(d.hits, 1);
	info = fx_wait_removed(f->dev, BOUND_MS);
	test_point_set(TEST_POINT_UNPLUG_MARKED, NULL, NULL);
	storer_stop(s);
	rr = ugpu_bo_read(bo, 0, &w, 8);
	print_message("suspend %d; removal: %llu adopted, %llu lost; read %d: %#llx\n", ret,
		      (unsigned long long)info.bos_adopted, (unsigned long long)info.bos_lost, rr,
		      (unsigned long long)w);
	/* abandoned for the store, not in the power step: nothing kept */
	assert_int_equal(info.bos_adopted, 0);
	assert_int_equal(info.bos_lost, 1);
	assert_int_equal(rr, -ENODATA);
	(void)w;
	ugpu_bo_put(bo);
}

/* ---- a touch whose device does not wake: SIGBUS until the BO moves --------- */

static sigjmp_buf bus_jmp;

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(bus_jmp, 1);
}

/* Read the mapping's first word into @w: false when it raised SIGBUS. */
static bool touch_word(volatile uint64_t *p, uint64_t *w)
{
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	bool ok = false;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &old);
	if (sigsetjmp(bus_jmp, 1) == 0) {
		*w = *p;
		ok = true;
	}
	sigaction(SIGBUS, &old, NULL);
	return ok;
}

/* The poisoned mapping stays poisoned after the device can wake again
 * (bo.h), and a move or a fresh mapping ends it with every byte intact. */
static void test_wake_failure_touch_sigbus_until_moved(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, MIB, 0, V, S, "wake-fails");
	uint64_t *p, w = 0;

	assert_non_null(bo);
	assert_int_equal(bo_fill(bo, MIB, 53), 0);
	assert_int_equal(ugpu_bo_map(bo, (void **)&p), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	for (int round = 0; round < 2; round++) {
		assert_int_equal(ugpu_bo_migrate(bo, V), 0);
		assert_true(touch_word(p, &w));
		assert_int_equal(pat_check(p, MIB, 53), -1);
		assert_int_equal(rpm_sleep(f, false), 0);
		assert_int_equal(sim_inject(f->sim, 0, SIM_INJECT_WAKE, 1, true), 0);
		assert_false(touch_word(p, &w)); /* the device does not wake */
		assert_int_equal(map_state(bo), CPU_MAP_ERROR);
		assert_int_equal(sim_inject_clear(f->sim, 0), 0);
		assert_false(touch_word(p, &w)); /* still poisoned: nothing moved */
		if (round == 0) {
			assert_int_equal(ugpu_bo_migrate(bo, S), 0);
		} else {
			assert_int_equal(ugpu_bo_unmap(bo), 0);
			assert_int_equal(ugpu_bo_map(bo, (void **)&p), 0);
		}
		assert_true(touch_word(p, &w));
		assert_int_equal(pat_check(p, MIB, 53), -1);
	}
	assert_int_equal(bo_verify(bo, MIB, 53), -1);
	ugpu_bo_put(bo);
}

/* ---- the program's KERNEL BOs survive an orderly removal ------------------- */

static void test_removal_keeps_kernel_flag_bos(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *k = bo_new(f->dev, MIB, UGPU_BO_KERNEL | UGPU_BO_PINNED, V, N, "kernel");
	struct ugpu_bo *late = bo_new(f->dev, MIB,
				      UGPU_BO_KERNEL | UGPU_BO_LATE_RESTORE | UGPU_BO_PINNED, V, N,
				      "late");
	struct ugpu_bo *k2 = bo_new(f->dev, 64 * 1024, UGPU_BO_KERNEL, V, S, "kernel-unpinned");
	struct ugpu_unplug_info info;
	struct ugpu_device_mem mem = { .size = sizeof(mem) };
	size_t nlost = 99;

	assert_true(k && late && k2);
	assert_int_equal(bo_fill(k, MIB, 51), 0);
	assert_int_equal(bo_fill(late, MIB, 52), 0);
	assert_int_equal(bo_fill(k2, 64 * 1024, 53), 0);
	assert_int_equal(ugpu_device_unplug(f->dev), 0);
	info = fx_wait_removed(f->dev, BOUND_MS);
	assert_int_equal(info.status, 0);
	assert_int_equal(info.bos_lost, 0);
	assert_int_equal(info.bos_moved, 3);
	assert_int_equal(info.kernel_bos, FX_KERNEL_BOS); /* the driver's own only */
	assert_int_equal(ugpu_device_lost_bos(f->dev, NULL, 0, &nlost), 0);
	assert_int_equal(nlost, 0);
	assert_int_equal(bo_where(k), S);
	assert_int_equal(bo_verify(k, MIB, 51), -1);
	assert_int_equal(bo_verify(late, MIB, 52), -1);
	assert_int_equal(bo_verify(k2, 64 * 1024, 53), -1);
	assert_int_equal(ugpu_device_mem_stats(f->dev, &mem), 0);
	assert_int_equal(mem.bos, 3);
	assert_int_equal(mem.bos_system, 3);
	assert_int_equal(mem.bos_lost, 0);
	assert_int_equal(mem.vram_used, 0);
	ugpu_bo_put(k);
	ugpu_bo_put(late);
	ugpu_bo_put(k2);
}

/* ---- D3cold-evicted, pinned back, touched: listed for the next release ---- */

struct restore_hold {
	atomic_int entered;
	atomic_int go;
};

/* The rpm thread's deferred restore waits until the test lets it go. */
static void hold_restore(void *arg, enum test_point_id id, void *obj)
{
	struct restore_hold *h = arg;
	uint64_t t0 = fx_now_ms();

	(void)id, (void)obj;
	atomic_fetch_add(&h->entered, 1);
	while (!atomic_load(&h->go) && fx_now_ms() - t0 < BOUND_MS)
		usleep(500);
}

static void test_evicted_then_pinned_is_released(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, MIB, 0, V, S, "evictee");
	struct restore_hold h = { 0 };
	struct ugpu_rpm_stats st;
	uint64_t t0;
	uint8_t *p;
	int ret;

	assert_non_null(bo);
	assert_int_equal(ugpu_bo_map(bo, (void **)&p), 0);
	pat_fill(p, MIB, 61);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	test_point_set(TEST_POINT_RPM_RESTORE, hold_restore, &h);
	assert_int_equal(rpm_sleep(f, true), 0);
	rpm_stats_now(f, &st);
	assert_int_equal(st.bo_evicted, 1);
	assert_int_equal(bo_where(bo), S);
	/* Wakes the device and moves it back into VRAM before the rpm
	 * thread's restore runs. */
	assert_int_equal(ugpu_bo_pin(bo), 0);
	assert_int_equal(bo_where(bo), V);
	pat_fill(p, MIB, 62); /* the touch maps VRAM */
	assert_int_equal(map_state(bo), CPU_MAP_MAPPED);
	for (t0 = fx_now_ms(); !atomic_load(&h.entered) && fx_now_ms() - t0 < BOUND_MS;)
		usleep(500);
	atomic_store(&h.go, 1);
	test_point_set(TEST_POINT_RPM_RESTORE, NULL, NULL);
	/* Now D3hot: the mapping must be released before the device sleeps. */
	for (t0 = fx_now_ms(); (ret = rpm_sleep(f, false)) == -EBUSY && fx_now_ms() - t0 < BOUND_MS;)
		usleep(1000);
	assert_int_equal(ret, 0);
	assert_int_not_equal(map_state(bo), CPU_MAP_MAPPED);
	assert_int_equal(pat_check(p, MIB, 62), -1); /* wakes */
	assert_int_equal(ugpu_bo_unpin(bo), 0);
	ugpu_bo_put(bo);
}

/* ---- a fault deciding while a migration changes the placement ------------- */

struct decide_hold {
	struct ugpu_bo *bo;
	atomic_int entered;
	atomic_int go;
};

/* The fault's first decision waits until the migration is done. */
static void hold_decision(void *arg, enum test_point_id id, void *obj)
{
	struct decide_hold *h = arg;
	uint64_t t0 = fx_now_ms();

	(void)id;
	if (obj != h->bo || atomic_fetch_add(&h->entered, 1))
		return; /* the decision made again goes through */
	while (!atomic_load(&h->go) && fx_now_ms() - t0 < BOUND_MS)
		usleep(500);
}

struct toucher {
	volatile uint8_t *p;
	uint32_t seed;
};

static void *touch_main(void *arg)
{
	struct toucher *t = arg;

	pat_fill((void *)t->p, MIB, t->seed);
	return NULL;
}

static void test_fault_decision_follows_migration(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, MIB, 0, S, V, "sys-first");
	struct decide_hold h = { .bo = bo };
	struct ugpu_rpm_stats st;
	struct toucher t;
	pthread_t th;
	uint64_t t0;
	uint8_t *p;

	assert_non_null(bo);
	assert_int_equal(ugpu_bo_map(bo, (void **)&p), 0);
	assert_int_equal(bo_where(bo), S);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	test_point_set(TEST_POINT_BO_FAULT_DECIDED, hold_decision, &h);
	t.p = p;
	t.seed = 71;
	assert_int_equal(pthread_create(&th, NULL, touch_main, &t), 0);
	for (t0 = fx_now_ms(); !atomic_load(&h.entered) && fx_now_ms() - t0 < BOUND_MS;)
		usleep(500);
	assert_int_equal(atomic_load(&h.entered), 1);
	/* The fault decided "system memory"; now it moves to VRAM. */
	assert_int_equal(ugpu_bo_migrate(bo, V), 0);
	atomic_store(&h.go, 1);
	pthread_join(th, NULL);
	test_point_set(TEST_POINT_BO_FAULT_DECIDED, NULL, NULL);
	assert_true(atomic_load(&h.entered) >= 2); /* it decided again */
	rpm_stats_now(f, &st);
	assert_int_equal(st.bo_mappings_listed, 1);
	assert_int_equal(rpm_sleep(f, false), 0);
	assert_int_not_equal(map_state(bo), CPU_MAP_MAPPED);
	assert_int_equal(bo_verify(bo, MIB, 71), -1);
	ugpu_bo_put(bo);
}

/* ---- BO handles after ugpu_device_close() ---------------------------------- */

static void test_bo_after_close(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *a = bo_new(f->dev, MIB, 0, V, S, "a");
	struct ugpu_bo *b = bo_new(f->dev, MIB, UGPU_BO_PINNED, S, N, "b");
	struct ugpu_bo_info bi = { .size = sizeof(bi) };
	uint8_t buf[16] = { 0 };
	void *p;

	assert_true(a && b);
	assert_int_equal(ugpu_bo_map(a, &p), 0);
	pat_fill(p, 4096, 81);
	ugpu_bo_get(b);
	ugpu_device_close(f->dev);
	f->dev = NULL;
	assert_int_equal(ugpu_bo_query(a, &bi), -ENODEV);
	assert_int_equal(ugpu_bo_read(a, 0, buf, sizeof(buf)), -ENODEV);
	assert_int_equal(ugpu_bo_write(b, 0, buf, sizeof(buf)), -ENODEV);
	assert_int_equal(ugpu_bo_pin(a), -ENODEV);
	assert_int_equal(ugpu_bo_unpin(b), -ENODEV);
	assert_int_equal(ugpu_bo_migrate(a, S), -ENODEV);
	assert_int_equal(ugpu_bo_map(b, &p), -ENODEV);
	assert_int_equal(ugpu_bo_unmap(a), -ENODEV);
	ugpu_bo_put(a);
	ugpu_bo_put(b);
	assert_int_equal(ugpu_bo_query(b, &bi), -ENODEV);
	ugpu_bo_put(b); /* the last handle frees the device object */
}

/* ---- an aborted D3cold suspend restores nothing ---------------------------- */

struct veto {
	struct ugpu_bo *bo;
	int calls;
	int write_ret;
};

/* A later hook: the BO hook took its D3cold backups; write new data (the
 * device is still in D0) and veto. */
static int veto_suspend(void *arg, enum ugpu_power_state target)
{
	struct veto *v = arg;
	uint64_t w = 0xabcdabcdabcdabcdull;

	(void)target;
	v->calls++;
	v->write_ret = ugpu_bo_write(v->bo, 0, &w, sizeof(w));
	return -EBUSY;
}

static const struct rpm_hook_ops veto_ops = { .name = "veto", .suspend = veto_suspend };

/* The rpm thread restores, after the aborted D3cold, what the hooks had
 * evicted; it holds the device meanwhile. Slow it down so that a suspend
 * asked for at once meets it (seen in CI under TSan). */
static void slow_restore(void *arg, enum test_point_id id, void *obj)
{
	(void)id;
	(void)obj;
	__atomic_store_n((int *)arg, 1, __ATOMIC_RELEASE);
	usleep(200 * 1000);
}

static void test_aborted_d3cold_restores_nothing(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "pinned");
	struct veto v = { .bo = bo };
	struct ugpu_rpm_stats st;
	struct rpm_hook *hook;
	uint64_t w = 0;
	int ret, restoring = 0;

	assert_non_null(bo);
	assert_int_equal(bo_fill(bo, MIB, 91), 0);
	test_point_set(TEST_POINT_RPM_RESTORE, slow_restore, &restoring);
	assert_int_equal(rpm_hook_register(f->dev->rpm, &veto_ops, &v, &hook), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	assert_int_equal(rpm_sleep(f, true), -EBUSY);
	rpm_hook_unregister(f->dev->rpm, hook);
	assert_int_equal(v.calls, 1);
	assert_int_equal(v.write_ret, 0);
	rpm_stats_now(f, &st);
	assert_true(st.bo_backed_up >= 1); /* the backup was taken, then dropped */
	assert_int_equal(st.aborted, 1);
	assert_int_equal(ugpu_bo_read(bo, 0, &w, 8), 0);
	assert_int_equal(w, 0xabcdabcdabcdabcdull);
	/* And a real D3cold afterwards keeps the new data too. The restore
	 * after the abort holds the device meanwhile: -EBUSY ("a transition is
	 * running") until it is done, never longer. */
	for (int ms = 0; !__atomic_load_n(&restoring, __ATOMIC_ACQUIRE) && ms < BOUND_MS; ms++)
		usleep(1000);
	assert_int_equal(restoring, 1);
	assert_int_equal(rpm_sleep(f, true), -EBUSY);
	for (int ms = 0; (ret = rpm_sleep(f, true)) == -EBUSY && ms < BOUND_MS; ms++)
		usleep(1000);
	test_point_set(TEST_POINT_RPM_RESTORE, NULL, NULL);
	assert_int_equal(ret, 0);
	assert_int_equal(ugpu_bo_read(bo, 0, &w, 8), 0);
	assert_int_equal(w, 0xabcdabcdabcdabcdull);
	ugpu_bo_put(bo);
}

/* ---- a copy failing during an orderly removal is a reported loss ---------- */

static void test_removal_copy_failure_reported(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *a = bo_new(f->dev, MIB, 0, V, N, "first");
	struct ugpu_bo *b = bo_new(f->dev, 2 * MIB, 0, V, N, "second");
	struct ugpu_bo *lostv[2] = { NULL, NULL };
	struct ugpu_bo_info bi = { .size = sizeof(bi) };
	struct ugpu_unplug_info info;
	uint8_t byte;
	size_t n = 0;

	assert_true(a && b);
	assert_int_equal(bo_fill(a, MIB, 101), 0);
	assert_int_equal(bo_fill(b, 2 * MIB, 102), 0);
	/* The first descriptor of the removal's copies fails. */
	assert_int_equal(sim_inject(f->sim, 0, SIM_INJECT_CMD, 1, false), 0);
	assert_int_equal(ugpu_device_unplug(f->dev), -EIO);
	info = fx_wait_removed(f->dev, BOUND_MS);
	assert_int_equal(info.status, -EIO);
	assert_int_equal(info.bos_lost, 1);
	assert_int_equal(info.bos_moved, 1);
	assert_int_equal(ugpu_device_lost_bos(f->dev, lostv, 2, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(info.bytes_lost, lostv[0] == a ? MIB : 2 * MIB);
	assert_int_equal(ugpu_bo_query(lostv[0], &bi), 0);
	assert_true(bi.lost);
	assert_int_equal(bi.placement, N);
	assert_int_equal(ugpu_bo_read(lostv[0], 0, &byte, 1), -ENODATA);
	if (lostv[0] == a)
		assert_int_equal(bo_verify(b, 2 * MIB, 102), -1);
	else
		assert_int_equal(bo_verify(a, MIB, 101), -1);
	ugpu_bo_put(lostv[0]);
	sim_inject_clear(f->sim, 0);
	ugpu_bo_put(a);
	ugpu_bo_put(b);
}

/* ---- host suspend: a store while the backups are copied ------------------- */

struct blit_store {
	struct storer *s;
	int fired;
};

/* At the end of the blit phase, another thread stores through a mapping of a
 * pinned VRAM BO. The maps were blocked before the copies: the store waits
 * for resume and lands then (it would otherwise have landed in VRAM after
 * its copy and been wiped by D3cold). */
static void on_phase(void *user, enum ugpu_pm_phase phase, uint64_t bos, uint64_t bytes,
		     uint64_t ns, int err)
{
	struct blit_store *b = user;

	(void)bos, (void)bytes, (void)ns, (void)err;
	if (phase != UGPU_PM_PHASE_SUSPEND_BLIT || b->fired++)
		return;
	b->s->value = 0x7777777777777777ull;
	atomic_store(&b->s->go, 1);
	usleep(50 * 1000); /* time for the store to land if it could */
}

static void test_host_suspend_store_during_copies(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "pinned-mapped");
	struct storer *s = &the_storer;
	struct blit_store b = { .s = s };
	struct ugpu_pm_opts o = { .size = sizeof(o), .progress = on_phase, .user = &b };
	uint64_t *p, w = 0, t0;

	assert_non_null(bo);
	assert_int_equal(ugpu_bo_map(bo, (void **)&p), 0);
	pat_fill(p, MIB, 111);
	storer_start(s, p);
	assert_int_equal(ugpu_device_pm_set_opts(f->dev, &o), 0);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	assert_int_equal(b.fired, 1);
	assert_int_equal(atomic_load(&s->done), 0); /* held while suspended */
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	for (t0 = fx_now_ms(); !atomic_load(&s->done) && fx_now_ms() - t0 < BOUND_MS;)
		usleep(500);
	assert_int_equal(atomic_load(&s->done), 1);
	assert_int_equal(ugpu_bo_read(bo, 0, &w, 8), 0);
	assert_int_equal(w, 0x7777777777777777ull);
	assert_int_equal(check_after_word(bo, 111), -1);
	assert_int_equal(ugpu_device_pm_set_opts(f->dev, NULL), 0);
	storer_stop(s);
	ugpu_bo_put(bo);
}

/* ---- small things ----------------------------------------------------------- */

static void test_rpm_put_unbalanced_while_forbidden(void **state)
{
	struct fx *f = *state;
	struct ugpu_rpm_stats st;

	rpm_stats_now(f, &st);
	assert_false(st.allowed);
	assert_int_equal(st.usage, 0);
	ugpu_device_rpm_put(f->dev); /* one too many: logged and ignored */
	rpm_stats_now(f, &st);
	assert_int_equal(st.usage, 0);
	assert_int_equal(ugpu_device_rpm_get(f->dev), 0);
	rpm_stats_now(f, &st);
	assert_int_equal(st.usage, 1);
	ugpu_device_rpm_put(f->dev);
	/* Allowing it afterwards still works: the hold was not stolen. */
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	assert_int_equal(rpm_sleep(f, false), 0);
	rpm_stats_now(f, &st);
	assert_int_equal(st.state, UGPU_RPM_SUSPENDED);
	assert_int_equal(st.usage, 0);
}

static void test_mem_stats(void **state)
{
	struct fx *f = *state;
	struct ugpu_device_mem m0 = { .size = sizeof(m0) }, m1 = { .size = sizeof(m1) };
	struct ugpu_bo *a = bo_new(f->dev, MIB, 0, V, S, "a");
	struct ugpu_bo *b = bo_new(f->dev, 3 * MIB, 0, S, N, "b");

	assert_true(a && b);
	assert_int_equal(ugpu_device_mem_stats(f->dev, &m1), 0);
	assert_int_equal(m1.vram_size, 32 * MIB);
	assert_int_equal(m1.vram_used + m1.vram_free, m1.vram_size);
	assert_int_equal(m1.vram_kernel, FX_KERNEL_VRAM); /* rings, fault ring */
	assert_int_equal(m1.vram_bos, MIB);
	assert_int_equal(m1.vram_used, m1.vram_kernel + m1.vram_bos);
	assert_int_equal(m1.system_bytes, 3 * MIB);
	assert_int_equal(m1.bos, 2);
	assert_int_equal(m1.bos_vram, 1);
	assert_int_equal(m1.bos_system, 1);
	assert_int_equal(ugpu_bo_migrate(a, S), 0);
	assert_int_equal(ugpu_device_mem_stats(f->dev, &m0), 0);
	assert_int_equal(m0.vram_bos, 0);
	assert_int_equal(m0.moves, m1.moves + 1);
	assert_int_equal(m0.vram_free, m1.vram_free + MIB);
	m0.size = 0;
	assert_int_equal(ugpu_device_mem_stats(f->dev, &m0), -EINVAL);
	assert_int_equal(ugpu_device_mem_stats(NULL, &m1), -EINVAL);
	ugpu_bo_put(a);
	ugpu_bo_put(b);
}

/* A CPU touch during a BO's move waits at least as long as the move may
 * take (its copy bound), not a fixed 10 s: a slow but in-bound copy of a
 * large BO must not turn into SIGBUS for a reader that lost nothing. */
static void test_map_block_bound_follows_copy_bound(void **state)
{
	struct fx *f = *state;
	uint64_t big = 512 * MIB; /* system memory: created lazily */
	struct ugpu_bo *bo = bo_new(f->dev, big, 0, S, N, "big");
	struct ugpu_bo *small = bo_new(f->dev, MIB, 0, S, N, "small");
	struct cpu_map_info mi;
	void *p;

	assert_true(bo && small);
	assert_int_equal(ugpu_bo_map(bo, &p), 0);
	cpu_map_query(bo->map, &mi);
	assert_int_equal(mi.block_timeout_ms, bo_copy_timeout_ms(big) + BO_BLOCK_SLACK_MS);
	assert_true(mi.block_timeout_ms > 10000);
	assert_int_equal(ugpu_bo_map(small, &p), 0);
	cpu_map_query(small->map, &mi);
	assert_int_equal(mi.block_timeout_ms, bo_copy_timeout_ms(MIB) + BO_BLOCK_SLACK_MS);
	ugpu_bo_put(bo);
	ugpu_bo_put(small);
}

/* The options struct convention: fields past @size read as zero. */
static void test_opts_size_prefix(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo_opts o = { .size = offsetof(struct ugpu_bo_opts, bytes) + sizeof(o.bytes),
				  .bytes = 8192,
				  .placements = { S, N }, /* past size: must be ignored */
				  .flags = UGPU_BO_PINNED,
				  .name = (const char *)1 /* past size: must not be read */ };
	struct ugpu_bo_info bi = { .size = sizeof(bi) };
	struct ugpu_bo *bo = NULL;

	assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), 0);
	assert_int_equal(ugpu_bo_query(bo, &bi), 0);
	assert_int_equal(bi.flags, 0);
	assert_int_equal(bi.pin_count, 0);
	assert_int_equal(bi.placement, V); /* the default {VRAM, SYSTEM} */
	ugpu_bo_put(bo);
	o.size = offsetof(struct ugpu_bo_opts, bytes); /* does not reach bytes */
	assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), -EINVAL);
}

/* While host-suspended a pinned BO's backup is its only copy: unpinning it
 * then must keep the backup (it is restored at resume). */
static void test_unpin_while_host_suspended(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, N, "pinned");

	assert_non_null(bo);
	assert_int_equal(bo_fill(bo, MIB, 121), 0);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	assert_int_equal(ugpu_bo_unpin(bo), 0);
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	assert_int_equal(bo_verify(bo, MIB, 121), -1);
	ugpu_bo_put(bo);
}

/* A prepared (not yet suspended) backup is a snapshot that writes since
 * may have outdated: a surprise removal must not adopt it as the BO's
 * contents; the BO is reported lost. */
static void test_surprise_after_prepare_adopts_nothing(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, N, "pinned");
	struct ugpu_unplug_info info;
	uint8_t byte;

	assert_non_null(bo);
	assert_int_equal(bo_fill(bo, MIB, 131), 0);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(bo_fill(bo, MIB, 132), 0); /* the backup is stale now */
	assert_int_equal(sim_unplug_surprise(f->sim, 0), 0);
	info = fx_wait_removed(f->dev, BOUND_MS);
	assert_int_equal(info.bos_adopted, 0);
	assert_int_equal(info.bos_lost, 1);
	assert_int_equal(ugpu_bo_read(bo, 0, &byte, 1), -ENODATA);
	ugpu_bo_put(bo);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_d3cold_store_after_backup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unmap_in_d3cold_keeps_data, setup, teardown),
		cmocka_unit_test_setup_teardown(test_surprise_in_d3cold_adopts_rpm_backups, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_removal_wake_fails_in_d3cold, setup, teardown),
		cmocka_unit_test_setup_teardown(test_moved_back_then_d3cold_keeps_stores, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_surprise_during_d3cold_entry_keeps_stores, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_surprise_as_d3cold_hooks_return_keeps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_injected_surprise_before_power_step_keeps_store, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_orderly_removal_wake_fails_once_keeps_store, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_app_rpm_get_while_removal_adopts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backup_of_dead_bar_not_adopted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_surprise_before_d3cold_power_step_keeps_stores, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_surprise_during_d3cold_entry_write_waits, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_store_aborts_d3cold_then_surprise, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_surprise_between_power_step_and_resume, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_access_while_abandoning_then_second_suspend, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_wake_failure_touch_sigbus_until_moved, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_removal_keeps_kernel_flag_bos, setup, teardown),
		cmocka_unit_test_setup_teardown(test_evicted_then_pinned_is_released, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_fault_decision_follows_migration, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_bo_after_close, setup, teardown),
		cmocka_unit_test_setup_teardown(test_aborted_d3cold_restores_nothing, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_removal_copy_failure_reported, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_suspend_store_during_copies, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_rpm_put_unbalanced_while_forbidden, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_mem_stats, setup, teardown),
		cmocka_unit_test_setup_teardown(test_map_block_bound_follows_copy_bound, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_opts_size_prefix, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unpin_while_host_suspended, setup, teardown),
		cmocka_unit_test_setup_teardown(test_surprise_after_prepare_adopts_nothing, setup,
						teardown),
	};

	if (getenv("UGPU_TEST_FILTER")) /* one case (or a glob) */
		cmocka_set_test_filter(getenv("UGPU_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
