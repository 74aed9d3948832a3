/* SPDX-License-Identifier: MIT */
/*
 * Runtime PM and device identity across a removal, against the in-process
 * reference device:
 *  - after a removal every ugpu_device_rpm_*() call that acts says -ENODEV
 *    ("the device is gone"), and ugpu_device_rpm_stats() still reports the
 *    stats as they were (the counters survive, frozen);
 *  - public runtime-PM calls racing a removal either complete on the device
 *    or say -ENODEV, never touch freed state (ASan/TSan);
 *  - bo_rpm_detach() waits for a CPU-fault hook that is using the BO
 *    runtime-PM state (held in bo_rpm_fault_begin() by the test gate, where
 *    a slow wake keeps it), drops the reference that fault took, and a later
 *    fault finds no state and still maps the BO;
 *  - ugpu_device_query() from another thread while the device is removed:
 *    the transport is swapped for the tombstone under it (TSan-clean), the
 *    name never changes and the transport reads "removed" once done.
 * Every wait is bounded far below the ctest timeout.
 */
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <time.h>
#include <unistd.h>

#include <ugpu/rpm.h>
#include <ugpu/unplug.h>

#include "test_bo_common.h"
#include "mm/bo_rpm.h"
#include "mm/cpu_map.h"

#define MIB (1ull << 20)
#define BOUND_MS 15000

static int setup(void **state)
{
	return fx_setup_vram(state, 32 * MIB);
}

static struct ugpu_rpm_stats rpm_stats_of(struct ugpu_device *dev)
{
	struct ugpu_rpm_stats s = { .size = sizeof(s) };

	assert_int_equal(ugpu_device_rpm_stats(dev, &s), 0);
	return s;
}

/* ---- 1. the API after a removal --------------------------------------------- */

static void test_api_after_removal(void **state)
{
	struct fx *f = *state;
	struct ugpu_rpm_stats before, after, again, part;
	int i;

	assert_int_equal(ugpu_device_rpm_set_autosuspend_delay(f->dev, -1), 0);
	assert_int_equal(ugpu_device_rpm_set_d3cold_threshold(f->dev, 0), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	/* Some history worth keeping: two sleeps, two wakes. */
	for (i = 0; i < 2; i++) {
		assert_int_equal(ugpu_device_rpm_suspend(f->dev), 0);
		assert_int_equal(ugpu_device_rpm_get(f->dev), 0);
		ugpu_device_rpm_put(f->dev);
	}
	before = rpm_stats_of(f->dev);
	assert_int_equal(before.suspends, 2);
	assert_int_equal(before.resumes, 2);
	assert_true(before.allowed);
	assert_int_equal(before.autosuspend_delay_ms, -1);

	assert_int_equal(sim_unplug_request(f->sim, 0), 0);
	fx_wait_removed(f->dev, BOUND_MS);

	/* Acting on runtime PM: the device is gone. */
	assert_int_equal(ugpu_device_rpm_get(f->dev), -ENODEV);
	ugpu_device_rpm_put(f->dev); /* nothing held, nothing to drop: no crash */
	assert_int_equal(ugpu_device_rpm_allow(f->dev, false), -ENODEV);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), -ENODEV);
	assert_int_equal(ugpu_device_rpm_set_autosuspend_delay(f->dev, 10), -ENODEV);
	assert_int_equal(ugpu_device_rpm_set_d3cold_threshold(f->dev, MIB), -ENODEV);
	assert_int_equal(ugpu_device_rpm_suspend(f->dev), -ENODEV);
	/* Bad arguments are still bad arguments. */
	assert_int_equal(ugpu_device_rpm_get(NULL), -EINVAL);
	assert_int_equal(ugpu_device_rpm_stats(f->dev, NULL), -EINVAL);

	/* The stats survive, frozen: the history is the one before. */
	after = rpm_stats_of(f->dev);
	assert_int_equal(after.size, sizeof(after));
	assert_int_equal(after.suspends, before.suspends);
	assert_int_equal(after.resumes, before.resumes);
	assert_int_equal(after.suspends_d3cold, 0);
	assert_int_equal(after.wake_max_us, before.wake_max_us);
	assert_int_equal(after.wake_total_us, before.wake_total_us);
	assert_int_equal(after.autosuspend_delay_ms, -1);
	assert_true(after.allowed);
	assert_int_equal(after.usage, 0);
	assert_int_equal(after.state, UGPU_RPM_ACTIVE);
	usleep(20000);
	again = rpm_stats_of(f->dev);
	assert_int_equal(again.suspends, after.suspends);
	assert_int_equal(again.resumes, after.resumes);
	assert_int_equal(again.suspended_us, after.suspended_us);
	assert_int_equal(again.wake_last_us, after.wake_last_us);
	assert_int_equal(again.suspend_last_us, after.suspend_last_us);
	assert_int_equal(again.power_state, after.power_state);
	/* A caller built against a smaller struct gets its prefix. */
	memset(&part, 0xa5, sizeof(part));
	part.size = offsetof(struct ugpu_rpm_stats, suspends_d3cold);
	assert_int_equal(ugpu_device_rpm_stats(f->dev, &part), 0);
	assert_int_equal(part.suspends, before.suspends);
	assert_int_equal(((unsigned char *)&part)[offsetof(struct ugpu_rpm_stats, suspends_d3cold)],
			 0xa5);
}

/* ---- 1b. the API racing a removal -------------------------------------------- */

struct racer {
	struct ugpu_device *dev;
	int id;
	int stop; /* atomic */
	unsigned long calls, gone;
	int bad_ret; /* first unexpected return, 0 if none */
	const char *bad_call;
};

static void racer_check(struct racer *r, const char *call, int ret, int ok1, int ok2)
{
	if (ret == 0 || ret == ok1 || ret == ok2) {
		r->calls++;
		r->gone += ret == -ENODEV;
		return;
	}
	if (!r->bad_ret) {
		r->bad_ret = ret;
		r->bad_call = call;
	}
}

/* Runs until told to stop and it has seen the device gone (or 2 s more). */
static void *racer_main(void *arg)
{
	struct racer *r = arg;
	uint64_t stop_at = 0;

	for (;;) {
		struct ugpu_rpm_stats s = { .size = sizeof(s) };
		int ret;

		switch (r->id % 4) {
		case 0:
			ret = ugpu_device_rpm_get(r->dev);
			racer_check(r, "get", ret, -ENODEV, -ENODEV);
			if (!ret)
				ugpu_device_rpm_put(r->dev); /* maybe after the removal */
			break;
		case 1:
			racer_check(r, "stats", ugpu_device_rpm_stats(r->dev, &s), 0, 0);
			racer_check(r, "delay", ugpu_device_rpm_set_autosuspend_delay(r->dev, 0),
				    -ENODEV, -ENODEV);
			break;
		case 2:
			/* The suspend runs the BO hook, which takes the manager
			 * lock the removal holds. */
			ret = ugpu_device_rpm_suspend(r->dev);
			if (ret == -EPERM)
				ret = -EBUSY; /* racer 3 forbade runtime suspend */
			racer_check(r, "suspend", ret, -EBUSY, -ENODEV);
			break;
		default:
			racer_check(r, "allow", ugpu_device_rpm_allow(r->dev, r->calls & 1), -ENODEV,
				    -ENODEV);
			racer_check(r, "threshold", ugpu_device_rpm_set_d3cold_threshold(r->dev, 0),
				    -ENODEV, -ENODEV);
			break;
		}
		if (!stop_at && __atomic_load_n(&r->stop, __ATOMIC_ACQUIRE))
			stop_at = fx_now_ms();
		if (stop_at && (r->gone || fx_now_ms() - stop_at > 2000))
			break;
	}
	return NULL;
}

static void test_api_races_removal(void **state)
{
	struct fx *f = *state;
	struct racer rs[8];
	pthread_t th[8];
	struct ugpu_bo *bo;
	void *p;
	int i;

	/* A mapped VRAM BO: the suspends release its mapping, the removal
	 * moves it. */
	bo = bo_new(f->dev, MIB, UGPU_BO_CPU_ACCESS, V, S, "race");
	assert_non_null(bo);
	assert_int_equal(ugpu_bo_map(bo, &p), 0);
	pat_fill(p, MIB, 9);
	assert_int_equal(ugpu_device_rpm_set_autosuspend_delay(f->dev, 0), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	for (i = 0; i < 8; i++) {
		rs[i] = (struct racer){ .dev = f->dev, .id = i };
		assert_int_equal(pthread_create(&th[i], NULL, racer_main, &rs[i]), 0);
	}
	usleep(50000);
	assert_int_equal(sim_unplug_request(f->sim, 0), 0);
	fx_wait_removed(f->dev, BOUND_MS);
	usleep(20000);
	for (i = 0; i < 8; i++)
		__atomic_store_n(&rs[i].stop, 1, __ATOMIC_RELEASE);
	for (i = 0; i < 8; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		if (rs[i].bad_ret)
			fail_msg("racer %d: %s returned %d (%s)", i, rs[i].bad_call, rs[i].bad_ret,
				 ugpu_strerror(rs[i].bad_ret));
		assert_true(rs[i].calls > 0);
	}
	/* The acting racers all saw the device go. */
	for (i = 0; i < 8; i++)
		assert_true(rs[i].gone > 0);
	/* The data went with the BO to system memory. */
	assert_int_equal(bo_where(bo), S);
	assert_int_equal(pat_check(p, MIB, 9), -1);
	assert_int_equal(ugpu_bo_unmap(bo), 0);
	ugpu_bo_put(bo);
	assert_int_equal(rpm_stats_of(f->dev).size, sizeof(struct ugpu_rpm_stats));
}

/* ---- 2. bo_rpm_detach() vs a fault hook in flight ------------------------------ */

struct toucher {
	volatile uint32_t *p;
	uint32_t seen;
	int done; /* atomic */
};

static void *toucher_main(void *arg)
{
	struct toucher *t = arg;

	t->seen = t->p[0]; /* faults: the device sleeps and the mapping is released */
	__atomic_store_n(&t->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

struct detacher {
	struct ugpu_device *dev;
	int done; /* atomic */
};

static void *detacher_main(void *arg)
{
	struct detacher *d = arg;

	bo_rpm_detach(d->dev);
	__atomic_store_n(&d->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static bool wait_flag(int *flag, int ms)
{
	uint64_t t0 = fx_now_ms();

	while (!__atomic_load_n(flag, __ATOMIC_ACQUIRE)) {
		if (fx_now_ms() - t0 > (uint64_t)ms)
			return false;
		usleep(1000);
	}
	return true;
}

/*
 * A mapped VRAM BO holding a known pattern, the device runtime-suspended (its
 * mapping released), and a thread whose touch of it is parked in
 * bo_rpm_fault_begin() by the test gate, holding the BO runtime-PM state.
 */
static struct ugpu_bo *park_a_fault(struct fx *f, const char *name, struct toucher *t,
				    pthread_t *tt)
{
	struct ugpu_bo *bo = bo_new(f->dev, MIB, UGPU_BO_CPU_ACCESS, V, S, name);
	uint32_t *p;
	uint64_t t0;
	size_t i;

	assert_non_null(bo);
	assert_int_equal(ugpu_bo_map(bo, (void **)&p), 0);
	for (i = 0; i < MIB / 4; i++)
		p[i] = 0x5eed0000u + (uint32_t)i;
	assert_int_equal(bo_where(bo), V);
	assert_int_equal(ugpu_device_rpm_set_autosuspend_delay(f->dev, -1), 0);
	assert_int_equal(ugpu_device_rpm_set_d3cold_threshold(f->dev, 0), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	assert_int_equal(ugpu_device_rpm_suspend(f->dev), 0); /* releases the mapping */
	bo_rpm_test_gate(true);
	t->p = p;
	assert_int_equal(pthread_create(tt, NULL, toucher_main, t), 0);
	for (t0 = fx_now_ms(); bo_rpm_test_parked() == 0; usleep(1000))
		if (fx_now_ms() - t0 > 5000) {
			bo_rpm_test_gate(false);
			fail_msg("the fault never reached bo_rpm_fault_begin()");
		}
	return bo;
}

static void test_detach_waits_for_fault_hook(void **state)
{
	struct fx *f = *state;
	struct toucher t = { 0 };
	struct detacher d = { .dev = f->dev };
	struct bo_rpm_stats bs;
	pthread_t tt, dt;
	struct ugpu_bo *bo;
	uint32_t *p;
	size_t i;

	bo = park_a_fault(f, "fault-vs-detach", &t, &tt);
	p = (uint32_t *)t.p;

	/* Detach must wait for it: not done while the hook is parked. */
	assert_int_equal(pthread_create(&dt, NULL, detacher_main, &d), 0);
	usleep(200000);
	if (__atomic_load_n(&d.done, __ATOMIC_ACQUIRE)) {
		bo_rpm_test_gate(false);
		fail_msg("bo_rpm_detach() returned while a fault hook was using its state");
	}
	assert_false(__atomic_load_n(&t.done, __ATOMIC_ACQUIRE));
	bo_rpm_test_gate(false);
	assert_true(wait_flag(&d.done, BOUND_MS));
	assert_true(wait_flag(&t.done, BOUND_MS));
	assert_int_equal(pthread_join(dt, NULL), 0);
	assert_int_equal(pthread_join(tt, NULL), 0);
	assert_int_equal(bo_rpm_test_parked(), 0);

	/* The touch woke the device and read VRAM; its reference was dropped
	 * by detach (its fault_end found no state). */
	assert_int_equal(t.seen, 0x5eed0000u);
	{
		struct ugpu_rpm_stats s = rpm_stats_of(f->dev);

		assert_int_equal(s.usage, 1); /* detach holds the device awake until rpm_fini() */
		assert_int_equal(s.resumes, 1);
		assert_int_equal(s.state, UGPU_RPM_ACTIVE);
	}
	bo_rpm_get_stats(f->dev, &bs); /* detached: all zero, and safe to ask */
	assert_int_equal(bs.wake_faults, 0);
	/* A fault that starts now finds no state and maps the BO anyway (the
	 * device is awake and stays so: nothing releases mappings any more). */
	assert_int_equal(cpu_map_invalidate(bo->map), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, false), 0);
	for (i = 0; i < MIB / 4; i++)
		if (p[i] != 0x5eed0000u + (uint32_t)i)
			fail_msg("word %zu: 0x%08x", i, p[i]);
	p[7] = 0xabcdef01u;
	assert_int_equal(ugpu_bo_unmap(bo), 0);
	{
		uint32_t w;

		assert_int_equal(ugpu_bo_read(bo, 7 * 4, &w, 4), 0);
		assert_int_equal(w, 0xabcdef01u);
	}
	ugpu_bo_put(bo);
}

/*
 * A fault hook that outlives detach's wait (a wake slower than the bound)
 * must still find its state: freeing is counted, not timed. Detach returns
 * after its (here shortened) wait with the hook parked; the hook then goes
 * on, and its state is freed by whichever of the two leaves last, with the
 * reference the fault took (ASan would see a use after free).
 */
static void test_slow_hook_outlives_detach(void **state)
{
	struct fx *f = *state;
	struct toucher t = { 0 };
	struct detacher d = { .dev = f->dev };
	pthread_t tt, dt;
	struct ugpu_bo *bo;

	bo = park_a_fault(f, "slow-hook", &t, &tt);
	bo_rpm_test_set_detach_wait(100);
	assert_int_equal(pthread_create(&dt, NULL, detacher_main, &d), 0);
	if (!wait_flag(&d.done, 5000)) {
		bo_rpm_test_gate(false);
		bo_rpm_test_set_detach_wait(0);
		fail_msg("bo_rpm_detach() did not return after its wait");
	}
	bo_rpm_test_set_detach_wait(0);
	assert_false(__atomic_load_n(&t.done, __ATOMIC_ACQUIRE)); /* still parked */
	bo_rpm_test_gate(false);
	assert_true(wait_flag(&t.done, BOUND_MS));
	assert_int_equal(pthread_join(dt, NULL), 0);
	assert_int_equal(pthread_join(tt, NULL), 0);
	assert_int_equal(t.seen, 0x5eed0000u);
	{
		struct ugpu_rpm_stats s = rpm_stats_of(f->dev);

		assert_int_equal(s.usage, 1); /* only detach's: the fault's was dropped */
		assert_int_equal(s.state, UGPU_RPM_ACTIVE);
	}
	assert_int_equal(ugpu_device_rpm_allow(f->dev, false), 0);
	assert_int_equal(ugpu_bo_unmap(bo), 0);
	ugpu_bo_put(bo);
}

/* ---- 4. query vs removal -------------------------------------------------------- */

struct querier {
	struct ugpu_device *dev;
	char name[sizeof(((struct ugpu_device_info *)0)->name)];
	int stop; /* atomic */
	unsigned long live, removed;
	char bad[2 * sizeof(((struct ugpu_device_info *)0)->name) + 64];
};

static void *querier_main(void *arg)
{
	struct querier *q = arg;

	while (!__atomic_load_n(&q->stop, __ATOMIC_ACQUIRE)) {
		struct ugpu_device_info di = { .size = sizeof(di) };
		int ret = ugpu_device_query(q->dev, &di);

		if (ret) {
			snprintf(q->bad, sizeof(q->bad), "query returned %d", ret);
			break;
		}
		if (strcmp(di.name, q->name)) {
			snprintf(q->bad, sizeof(q->bad), "name '%s', expected '%s'", di.name,
				 q->name);
			break;
		}
		if (!strcmp(di.transport, "vfio-user")) {
			__atomic_add_fetch(&q->live, 1, __ATOMIC_RELAXED);
		} else if (!strcmp(di.transport, "removed")) {
			__atomic_add_fetch(&q->removed, 1, __ATOMIC_RELAXED);
		} else {
			snprintf(q->bad, sizeof(q->bad), "transport '%s'", di.transport);
			break;
		}
	}
	return NULL;
}

static void test_query_during_removal(void **state)
{
	struct fx *f = *state;
	struct ugpu_device_info di = { .size = sizeof(di) };
	struct querier q[2];
	pthread_t th[2];
	int i;

	assert_int_equal(ugpu_device_query(f->dev, &di), 0);
	assert_string_equal(di.transport, "vfio-user");
	for (i = 0; i < 2; i++) {
		q[i] = (struct querier){ .dev = f->dev };
		snprintf(q[i].name, sizeof(q[i].name), "%s", di.name);
		assert_int_equal(pthread_create(&th[i], NULL, querier_main, &q[i]), 0);
	}
	/* Each querier sees the live device, then the removed one (bounded
	 * waits, not sleeps: a loaded machine may not run them for a while). */
	for (i = 0; i < 2; i++)
		for (uint64_t t0 = fx_now_ms();
		     !__atomic_load_n(&q[i].live, __ATOMIC_RELAXED) && fx_now_ms() - t0 < BOUND_MS;)
			usleep(1000);
	assert_int_equal(sim_unplug_request(f->sim, 0), 0);
	fx_wait_removed(f->dev, BOUND_MS);
	for (i = 0; i < 2; i++)
		for (uint64_t t0 = fx_now_ms();
		     !__atomic_load_n(&q[i].removed, __ATOMIC_RELAXED) && fx_now_ms() - t0 < BOUND_MS;)
			usleep(1000);
	for (i = 0; i < 2; i++)
		__atomic_store_n(&q[i].stop, 1, __ATOMIC_RELEASE);
	for (i = 0; i < 2; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		if (q[i].bad[0])
			fail_msg("querier %d: %s", i, q[i].bad);
		assert_true(q[i].live > 0);
		assert_true(q[i].removed > 0);
	}
	assert_int_equal(ugpu_device_query(f->dev, &di), 0);
	assert_string_equal(di.transport, "removed");
	assert_string_equal(di.name, q[0].name);
	assert_string_equal(di.profile, "ugpu-sim");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_api_after_removal, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_api_races_removal, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_slow_hook_outlives_detach, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_detach_waits_for_fault_hook, setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_query_during_removal, setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
