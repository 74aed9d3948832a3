/* SPDX-License-Identifier: MIT */
/*
 * Host suspend/resume against the reference device, which really loses VRAM
 * in D3cold (it comes back poisoned): BOs of every kind keep their bytes
 * (except NO_RESTORE ones), CPU mappings and engines work after resume; the
 * state machine refuses what it must; unpin/destroy race with prepare and
 * suspend; injected faults (copy failure in suspend, allocation failure in
 * prepare and suspend, wake failure) leave a usable device and lose nothing.
 */
#include <pthread.h>

#include "engines/engine.h"
#include "integration/test_bo_common.h"
#include "mm/vram.h"

#define MiB (1ull << 20)

static int setup(void **state)
{
	return fx_setup_vram(state, 32 * MiB);
}

#define NOBJ 27 /* 3 of each kind */


static void free_population(struct obj *o, int n)
{
	int i;

	for (i = 0; i < n; i++)
		ugpu_bo_put(o[i].bo);
}

/* The engines run after resume: a BO round trip and a raw copy. */
static void check_engines(struct fx *f)
{
	struct ugpu_bo *bo = bo_new(f->dev, MiB, 0, V, S, "probe");
	struct engine *e;
	int k;

	assert_int_equal(bo_fill(bo, MiB, 4242), 0);
	assert_int_equal(ugpu_bo_migrate(bo, S), 0);
	assert_int_equal(ugpu_bo_migrate(bo, V), 0);
	assert_int_equal(bo_verify(bo, MiB, 4242), -1);
	for (k = 0; k < 2; k++) {
		uint64_t fence, src = bo_vram_offset(bo), dst;
		struct ugpu_bo *d = bo_new(f->dev, MiB, UGPU_BO_PINNED | UGPU_BO_CONTIGUOUS, V, N,
					   "probe-dst");

		assert_int_equal(ugpu_bo_pin(bo), 0);
		dst = bo_vram_offset(d);
		e = f->dev->copy[k];
		/* bo may be scattered: copy its first block only */
		{
			struct buddy_block *b = buddy_list_first(bo->vram);
			uint64_t len = vram_block_size(b);

			assert_int_equal(engine_copy(e, engine_vram(dst), engine_vram(src), len, &fence),
					 0);
			assert_int_equal(engine_wait(e, fence, 5000), 0);
			assert_memory_equal((char *)f->dev->vram + dst, (char *)f->dev->vram + src, len);
		}
		assert_int_equal(ugpu_bo_unpin(bo), 0);
		ugpu_bo_put(d);
	}
	ugpu_bo_put(bo);
}

static void assert_state(struct fx *f, enum ugpu_pm_state s)
{
	struct ugpu_pm_stats st = { .size = sizeof(st) };

	assert_int_equal(ugpu_device_pm_stats(f->dev, &st), 0);
	assert_int_equal(st.state, s);
}

static void assert_power(struct fx *f, enum sim_power_state p)
{
	struct sim_state st;

	assert_int_equal(sim_state(f->sim, 0, &st), 0);
	assert_int_equal(st.power, p);
}

static int phases_seen[UGPU_PM_PHASE_COUNT];
static void progress(void *user, enum ugpu_pm_phase ph, uint64_t bos, uint64_t bytes, uint64_t ns,
		     int err)
{
	(void)user;
	(void)bos;
	(void)bytes;
	(void)ns;
	if (!err)
		phases_seen[ph]++;
}

static void test_full_cycle(void **state)
{
	struct fx *f = *state;
	struct ugpu_pm_opts po = { .size = sizeof(po), .progress = progress };
	struct ugpu_pm_stats st = { .size = sizeof(st) };
	struct bo_mgr_stats ms;
	struct obj o[NOBJ];
	int i;

	memset(phases_seen, 0, sizeof(phases_seen));
	assert_int_equal(ugpu_device_pm_set_opts(f->dev, &po), 0);
	pop_make(f, o, NOBJ, 7000, 3);
	pop_verify(f, o, NOBJ, 0);

	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_state(f, UGPU_PM_PREPARED);
	assert_int_equal(bo_mgr_check(f->dev, true), 0);
	for (i = 0; i < NOBJ; i++) {
		struct ugpu_bo_info info = { .size = sizeof(info) };

		assert_int_equal(ugpu_bo_query(o[i].bo, &info), 0);
		if (o[i].kind == K_UNPINNED || o[i].kind == K_MAPPED_UNPINNED)
			assert_int_equal(info.placement, S); /* evicted by prepare */
		if (o[i].kind == K_NORESTORE || o[i].kind == K_SYSTEM_PINNED ||
		    info.placement == S)
			assert_false(info.has_backup);
		else
			assert_true(info.has_backup);
	}
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), -EBUSY);

	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	assert_state(f, UGPU_PM_SUSPENDED);
	assert_power(f, SIM_POWER_D3COLD);
	assert_int_equal(ugpu_device_pm_stats(f->dev, &st), 0);
	assert_int_equal(st.backups_missed, 0); /* prepare made every backup */
	assert_int_equal(st.backups_prepared, 15 + FX_KERNEL_BOS); /* 5 kinds x 3 + the driver's */
	assert_int_equal(ugpu_device_suspend(f->dev), -EBUSY);
	assert_int_equal(ugpu_device_suspend_cancel(f->dev), -EBUSY);
	{
		uint64_t w;

		/* VRAM BOs are not reachable while suspended; system ones are. */
		assert_int_equal(ugpu_bo_read(o[K_USER_PINNED].bo, 0, &w, 8), -EBUSY);
		assert_int_equal(ugpu_bo_read(o[K_SYSTEM_PINNED].bo, 0, &w, 8), 0);
	}

	assert_int_equal(ugpu_device_resume(f->dev), 0);
	assert_state(f, UGPU_PM_ACTIVE);
	assert_power(f, SIM_POWER_D0);
	pop_verify(f, o, NOBJ, 1);
	bo_mgr_get_stats(f->dev, &ms);
	assert_int_equal(ms.backups, 0);
	/* Mappings still work both ways, and follow moves. */
	for (i = 0; i < NOBJ; i++) {
		if (!o[i].map)
			continue;
		pat_fill(o[i].map, o[i].size, o[i].seed + 100);
		assert_int_equal(bo_verify(o[i].bo, o[i].size, o[i].seed + 100), -1);
		o[i].seed += 100;
	}
	check_engines(f);
	assert_int_equal(ugpu_device_pm_stats(f->dev, &st), 0);
	assert_int_equal(st.cycles, 1);
	assert_true(st.critical_ns > 0 && st.resume_ns > 0 && st.prepare_ns > 0);
	for (i = 0; i < UGPU_PM_PHASE_COUNT; i++)
		if (!phases_seen[i])
			fail_msg("phase %s not reported", ugpu_pm_phase_name((enum ugpu_pm_phase)i));
	/* a second cycle, without prepare */
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	assert_power(f, SIM_POWER_D3COLD);
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	pop_verify(f, o, NOBJ, 1);
	check_engines(f);
	free_population(o, NOBJ);
	assert_int_equal(bo_mgr_check(f->dev, true), 0);
}

static void test_state_machine(void **state)
{
	struct fx *f = *state;
	struct bo_mgr_stats ms;
	struct ugpu_bo *bo = bo_new(f->dev, MiB, UGPU_BO_PINNED, V, S, "p");

	assert_int_equal(bo_fill(bo, MiB, 1), 0);
	assert_int_equal(ugpu_device_resume(f->dev), -EBUSY);
	assert_int_equal(ugpu_device_suspend_cancel(f->dev), 0);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	bo_mgr_get_stats(f->dev, &ms);
	assert_int_equal(ms.backups, 1 + FX_KERNEL_BOS); /* bo + the driver's */
	assert_int_equal(ugpu_device_suspend_cancel(f->dev), 0);
	assert_state(f, UGPU_PM_ACTIVE);
	bo_mgr_get_stats(f->dev, &ms);
	assert_int_equal(ms.backups, 0);
	assert_int_equal(bo_mgr_check(f->dev, true), 0);

	/* unpin of a BO holding a prepared backup drops the backup */
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	{
		struct ugpu_bo_info info = { .size = sizeof(info) };

		assert_int_equal(ugpu_bo_query(bo, &info), 0);
		assert_true(info.has_backup);
		assert_int_equal(ugpu_bo_unpin(bo), 0);
		assert_int_equal(ugpu_bo_query(bo, &info), 0);
		assert_false(info.has_backup);
	}
	assert_int_equal(bo_fill(bo, MiB, 2), 0); /* changed after prepare */
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	/* a BO created while suspended cannot have VRAM */
	{
		struct ugpu_bo *x = bo_new(f->dev, 4096, 0, V, S, "late-comer");
		struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = 4096, .placements = { V } };
		struct ugpu_bo *y = NULL;

		assert_int_equal(bo_where(x), S);
		assert_int_equal(ugpu_bo_create(f->dev, &o, &y), -EBUSY);
		assert_int_equal(ugpu_bo_migrate(x, V), -EBUSY);
		ugpu_bo_put(x);
	}
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	assert_int_equal(bo_verify(bo, MiB, 2), -1);
	ugpu_bo_put(bo);
	check_engines(f);
	assert_int_equal(bo_mgr_check(f->dev, true), 0);
}

/* ---- races -------------------------------------------------------------------- */

#define NRACE 48
struct racer {
	struct ugpu_bo *bo[NRACE];
	int go; /* atomic */
};

static void *racer_fn(void *arg)
{
	struct racer *r = arg;
	int i;

	while (!__atomic_load_n(&r->go, __ATOMIC_ACQUIRE))
		;
	for (i = 0; i < NRACE; i++) {
		if (i % 2)
			ugpu_bo_unpin(r->bo[i]);
		else {
			ugpu_bo_put(r->bo[i]);
			r->bo[i] = NULL;
		}
	}
	return NULL;
}

static void race_one(struct fx *f, bool during_suspend)
{
	struct racer r = { .go = 0 };
	struct obj keep[9];
	pthread_t th;
	int i;

	pop_make(f, keep, 9, 7000, 3);
	for (i = 0; i < NRACE; i++) {
		r.bo[i] = bo_new(f->dev, 128 * 1024, UGPU_BO_PINNED, V, S, "racer");
		assert_non_null(r.bo[i]);
		assert_int_equal(bo_fill(r.bo[i], 128 * 1024, 500 + (uint32_t)i), 0);
	}
	assert_int_equal(pthread_create(&th, NULL, racer_fn, &r), 0);
	if (!during_suspend)
		__atomic_store_n(&r.go, 1, __ATOMIC_RELEASE);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	if (during_suspend)
		__atomic_store_n(&r.go, 1, __ATOMIC_RELEASE);
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	pthread_join(th, NULL);
	assert_int_equal(bo_mgr_check(f->dev, true), 0);
	for (i = 1; i < NRACE; i += 2) {
		struct ugpu_bo_info info = { .size = sizeof(info) };

		assert_int_equal(bo_verify(r.bo[i], 128 * 1024, 500 + (uint32_t)i), -1);
		assert_int_equal(ugpu_bo_query(r.bo[i], &info), 0);
		assert_int_equal(info.pin_count, 0);
		assert_false(info.has_backup);
		ugpu_bo_put(r.bo[i]);
	}
	pop_verify(f, keep, 9, 1);
	free_population(keep, 9);
	{
		struct bo_mgr_stats ms;

		bo_mgr_get_stats(f->dev, &ms);
		assert_int_equal(ms.bos, FX_KERNEL_BOS);
		assert_int_equal(ms.backups, 0);
	}
	assert_int_equal(bo_mgr_check(f->dev, true), 0);
}

static void test_race_prepare(void **state)
{
	int i;

	for (i = 0; i < 5; i++)
		race_one(*state, false);
}

static void test_race_suspend(void **state)
{
	int i;

	for (i = 0; i < 5; i++)
		race_one(*state, true);
}

/* ---- fault injection ----------------------------------------------------------- */

static void test_copy_failure_in_suspend(void **state)
{
	struct fx *f = *state;
	struct obj o[NOBJ];
	int n;

	pop_make(f, o, NOBJ, 7000, 3);
	for (n = 1; n <= 3; n++) {
		assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
		/* the n-th blitter descriptor of the suspend fails */
		assert_int_equal(sim_inject(f->sim, 0, SIM_INJECT_CMD, (unsigned)n, false), 0);
		assert_int_equal(ugpu_device_suspend(f->dev), -EIO); /* pm.h: a copy failed */
		sim_inject_clear(f->sim, 0);
		assert_state(f, UGPU_PM_PREPARED);
		assert_power(f, SIM_POWER_D0);
		assert_int_equal(bo_mgr_check(f->dev, true), 0);
		pop_verify(f, o, NOBJ, 0);
		check_engines(f);
		/* retry works */
		assert_int_equal(ugpu_device_suspend(f->dev), 0);
		assert_int_equal(ugpu_device_resume(f->dev), 0);
		pop_verify(f, o, NOBJ, 1);
	}
	/* without prepare too; cancel then frees nothing more */
	assert_int_equal(sim_inject(f->sim, 0, SIM_INJECT_CMD, 2, false), 0);
	assert_int_equal(ugpu_device_suspend(f->dev), -EIO); /* pm.h: a copy failed */
	sim_inject_clear(f->sim, 0);
	assert_state(f, UGPU_PM_ACTIVE);
	{
		struct bo_mgr_stats ms;

		bo_mgr_get_stats(f->dev, &ms);
		assert_int_equal(ms.backups, 0);
	}
	pop_verify(f, o, NOBJ, 0);
	check_engines(f);
	free_population(o, NOBJ);
}

static void test_alloc_failure(void **state)
{
	struct fx *f = *state;
	struct bo_mgr_stats ms;
	struct obj o[NOBJ];
	int n;

	pop_make(f, o, NOBJ, 7000, 3);
	for (n = 1; n <= 4; n++) {
		bo_mgr_inject_backup_failure(f->dev, (unsigned long)n, false);
		assert_int_equal(ugpu_device_suspend_prepare(f->dev), -ENOMEM);
		assert_state(f, UGPU_PM_ACTIVE);
		bo_mgr_get_stats(f->dev, &ms);
		assert_int_equal(ms.backups, 0);
		pop_verify(f, o, NOBJ, 0);
	}
	/* in the suspend window (no prepare) */
	bo_mgr_inject_backup_failure(f->dev, 3, false);
	assert_int_equal(ugpu_device_suspend(f->dev), -ENOMEM);
	assert_state(f, UGPU_PM_ACTIVE);
	assert_power(f, SIM_POWER_D0);
	bo_mgr_get_stats(f->dev, &ms);
	assert_int_equal(ms.backups, 0);
	pop_verify(f, o, NOBJ, 0);
	/* after a prepare that succeeded, a BO pinned later misses its backup
	 * and its allocation fails in the window: prepared backups stay */
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	{
		struct ugpu_bo *late = bo_new(f->dev, MiB, UGPU_BO_PINNED, V, S, "late-pin");
		struct bo_mgr_stats before;

		bo_mgr_get_stats(f->dev, &before);
		bo_mgr_inject_backup_failure(f->dev, 1, true);
		assert_int_equal(ugpu_device_suspend(f->dev), -ENOMEM);
		bo_mgr_inject_backup_failure(f->dev, 0, false);
		bo_mgr_get_stats(f->dev, &ms);
		assert_int_equal(ms.backups, before.backups);
		assert_state(f, UGPU_PM_PREPARED);
		assert_int_equal(ugpu_device_suspend_cancel(f->dev), 0);
		bo_mgr_get_stats(f->dev, &ms);
		assert_int_equal(ms.backups, 0);
		ugpu_bo_put(late);
	}
	check_engines(f);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	pop_verify(f, o, NOBJ, 1);
	free_population(o, NOBJ);
}

static void test_wake_failure(void **state)
{
	struct fx *f = *state;
	struct obj o[NOBJ];

	pop_make(f, o, NOBJ, 7000, 3);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	assert_int_equal(sim_inject(f->sim, 0, SIM_INJECT_WAKE, 1, false), 0);
	assert_int_equal(ugpu_device_resume(f->dev), -EIO);
	assert_state(f, UGPU_PM_SUSPENDED);
	assert_int_equal(bo_mgr_check(f->dev, true), 0);
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	pop_verify(f, o, NOBJ, 1);
	check_engines(f);
	/* a blitter failure during restore falls back to the CPU */
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	assert_int_equal(sim_inject(f->sim, 0, SIM_INJECT_CMD, 1, false), 0);
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	sim_inject_clear(f->sim, 0);
	pop_verify(f, o, NOBJ, 1);
	check_engines(f);
	free_population(o, NOBJ);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_full_cycle, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_state_machine, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_race_prepare, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_race_suspend, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_copy_failure_in_suspend, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_alloc_failure, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_wake_failure, setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
