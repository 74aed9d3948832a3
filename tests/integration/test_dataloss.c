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
 * A removal meeting a runtime D3cold suspend: test_unplug_rpm.c.
 */
#include <inttypes.h>
#include <time.h>

#include "d3cold_fixture.h"
#include "mm/bo_rpm.h"
#include "src/rpm.h"
#include "base/test_point.h"
#include "src/unplug.h"

/* ---- D3cold: a store between the backup and the release ------------------- */

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

/* ---- a BO moved back into VRAM under a storer, then D3cold ----------------- */

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
		cmocka_unit_test_setup_teardown(test_moved_back_then_d3cold_keeps_stores, setup,
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
