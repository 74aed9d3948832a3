/* SPDX-License-Identifier: MIT */
/*
 * A removal meeting a runtime D3cold suspend (docs/unplug.md, "Removal and
 * runtime PM"): a surprise while asleep, during the suspend's hooks, between
 * its hooks and its power step, as it returns, during the wake; an orderly
 * removal whose wake fails; the program's own runtime-PM references and
 * stores meanwhile. Each window is made reproducible with a test point
 * (base/test_point.h), and each test failed before its fix: BOs whose data
 * the runtime-PM backups held were reported lost, stores were lost under an
 * adopted backup, or a backup of a dead BAR was adopted as good.
 * (Split from test_dataloss.c, whose fixture it shares: d3cold_fixture.h.)
 */
#include <inttypes.h>
#include <time.h>

#include "d3cold_fixture.h"
#include "mm/bo_rpm.h"
#include "src/rpm.h"
#include "base/test_point.h"
#include "src/unplug.h"

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
	void *scribble; /* 1 MiB of VRAM overwritten once the device is seen gone, or NULL */
};

static void unplug_at_backup(void *arg, enum test_point_id id, void *obj)
{
	struct unplug_in_hook *u = arg;

	(void)id;
	if (obj != u->bo || u->hits++)
		return;
	sim_unplug_surprise(u->f->sim, 0);
	usleep(20000); /* the removal gets going (it waits for the manager lock): seen gone */
	if (u->scribble)
		memset(u->scribble, 0xff, MIB); /* (manager lock held) */
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
static void test_backup_of_dead_bar_not_adopted(void **state)
{
	struct fx *f = *state;
	struct unplug_in_hook x = { .f = f };
	struct ugpu_unplug_info info;
	struct ugpu_bo_info ia = { .size = sizeof(ia) }, ib = { .size = sizeof(ib) };
	struct ugpu_bo *first, *second;
	int r;

	first = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "bar-first");
	second = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "bar-second");
	assert_non_null(first);
	assert_non_null(second);
	assert_int_equal(bo_fill(first, MIB, 53), 0);
	assert_int_equal(bo_fill(second, MIB, 54), 0);
	assert_int_equal(ugpu_bo_query(second, &ib), 0);
	/* the second's VRAM (pinned: it stays) is overwritten once the first's
	 * backup finds the device gone */
	x.bo = first;
	x.scribble = (char *)f->dev->vram + ib.vram_offset;
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	test_point_set(TEST_POINT_BO_D3COLD_BACKUP, unplug_at_backup, &x);
	r = rpm_sleep(f, true);
	test_point_set(TEST_POINT_BO_D3COLD_BACKUP, NULL, NULL);
	info = fx_wait_removed(f->dev, BOUND_MS);
	assert_int_equal(ugpu_bo_query(first, &ia), 0);
	assert_int_equal(ugpu_bo_query(second, &ib), 0);
	print_message("suspend %d; removal: %llu adopted, %llu lost (first %s, second %s)\n", r,
		      (unsigned long long)info.bos_adopted, (unsigned long long)info.bos_lost,
		      ia.lost ? "lost" : "kept", ib.lost ? "lost" : "kept");
	assert_int_equal(x.hits > 0, 1);
	if (!ia.lost)
		assert_int_equal(bo_verify(first, MIB, 53), -1);
	if (!ib.lost)
		assert_int_equal(bo_verify(second, MIB, 54), -1);
	ugpu_bo_put(first);
	ugpu_bo_put(second);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_surprise_in_d3cold_adopts_rpm_backups, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_removal_wake_fails_in_d3cold, setup, teardown),
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
	};

	if (getenv("UGPU_TEST_FILTER")) /* one case (or a glob) */
		cmocka_set_test_filter(getenv("UGPU_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
