/* SPDX-License-Identifier: MIT */
/*
 * Runtime PM core against the reference device: autosuspend after the delay
 * (and not before), get wakes, refcount semantics, hooks (order, veto, the
 * state they see), a get racing the suspend hooks aborts the suspend instead
 * of waiting for it, concurrent get/put from threads (the device is in D0
 * whenever someone holds a reference), D3cold below the VRAM threshold with
 * an evicting hook (data intact, engines usable after), failed wakes,
 * counters.
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <ugpu/rpm.h>

#include "mm/vram.h"
#include "src/device.h"
#include "src/rpm.h"
#include "tools/ugpu-sim/sim.h"
#include "test_bo_common.h"

#define WAKE_LAT_US 1000

static int setup(void **state)
{
	struct fx *f;

	if (fx_setup_dev(state, 16u << 20, WAKE_LAT_US))
		return -1;
	f = *state;
	/* The BO layer's hook can evict, so the default threshold (300 MiB,
	 * more than this VRAM) would pick D3cold: these tests want D3hot
	 * unless they say otherwise. */
	ugpu_device_rpm_set_d3cold_threshold(f->dev, 0);
	return 0;
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

/* Poll (bounded) until the rpm state is @want; returns 1 when reached. */
static int wait_state(struct fx *f, enum ugpu_rpm_state want, unsigned int timeout_ms)
{
	uint64_t end = ms_now() + timeout_ms;

	do {
		if (stats(f).state == want)
			return 1;
		usleep(1000);
	} while (ms_now() < end);
	return 0;
}

/* After open: forbidden (the PCI core's power/control "on"), xe's defaults. */
static void test_defaults(void **state)
{
	struct fx *f = *state;
	struct ugpu_rpm_stats s = stats(f);

	assert_int_equal(s.state, UGPU_RPM_ACTIVE);
	assert_int_equal(s.power_state, UGPU_POWER_D0);
	assert_false(s.allowed);
	assert_int_equal(s.autosuspend_delay_ms, 1000);
	assert_int_equal(s.d3cold_threshold, 0); /* set by setup() */
	assert_int_equal(RPM_DEFAULT_D3COLD_THRESHOLD, 300ull << 20);
	assert_int_equal(s.usage, 0);
	assert_int_equal(ugpu_device_rpm_suspend(f->dev), -EPERM);
	assert_string_equal(ugpu_rpm_state_name(UGPU_RPM_SUSPENDED), "suspended");
	assert_int_equal(ugpu_device_rpm_get(NULL), -EINVAL);
	assert_int_equal(ugpu_device_rpm_stats(f->dev, NULL), -EINVAL);

	/* Forbidden: even a zero delay never suspends. */
	assert_int_equal(ugpu_device_rpm_set_autosuspend_delay(f->dev, 0), 0);
	usleep(100 * 1000);
	assert_int_equal(stats(f).state, UGPU_RPM_ACTIVE);
	assert_int_equal(stats(f).suspends, 0);
}

/* Idle for the delay -> D3hot; not before the delay. */
static void test_autosuspend_after_delay(void **state)
{
	struct fx *f = *state;
	uint64_t t0;

	assert_int_equal(ugpu_device_rpm_set_autosuspend_delay(f->dev, 300), 0);
	t0 = ms_now();
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	usleep(100 * 1000);
	if (ms_now() - t0 < 250) /* not yet: the delay has not passed */
		assert_int_equal(stats(f).state, UGPU_RPM_ACTIVE);
	assert_true(wait_state(f, UGPU_RPM_SUSPENDED, 3000));
	assert_true(ms_now() - t0 >= 300);
	assert_int_equal(sim_power(f), SIM_POWER_D3HOT);
	assert_int_equal(stats(f).power_state, UGPU_POWER_D3HOT);
	assert_int_equal(stats(f).suspends, 1);
	assert_int_equal(stats(f).suspends_d3cold, 0);

	/* A negative delay disables autosuspend (as the kernel's). */
	assert_int_equal(ugpu_device_rpm_get(f->dev), 0);
	assert_int_equal(ugpu_device_rpm_set_autosuspend_delay(f->dev, -1), 0);
	ugpu_device_rpm_put(f->dev);
	usleep(200 * 1000);
	assert_int_equal(stats(f).state, UGPU_RPM_ACTIVE);
	assert_int_equal(stats(f).autosuspend_delay_ms, -1);
}

/* get wakes (and waits the device's wake latency); held, it stays awake. */
static void test_get_wakes(void **state)
{
	struct fx *f = *state;
	struct ugpu_rpm_stats s;

	assert_int_equal(ugpu_device_rpm_set_autosuspend_delay(f->dev, 20), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	assert_true(wait_state(f, UGPU_RPM_SUSPENDED, 3000));

	assert_int_equal(ugpu_device_rpm_get(f->dev), 0);
	assert_int_equal(sim_power(f), SIM_POWER_D0);
	s = stats(f);
	assert_int_equal(s.state, UGPU_RPM_ACTIVE);
	assert_int_equal(s.resumes, 1);
	assert_int_equal(s.usage, 1);
	assert_true(s.wake_last_us >= WAKE_LAT_US);
	assert_true(s.wake_max_us >= s.wake_last_us);
	assert_true(s.resume_last_us >= s.wake_last_us);
	assert_true(s.suspended_us > 0);
	/* Registers answer again. */
	uint32_t id = 0;
	assert_int_equal(device_reg_read32(f->dev, 0, &id), 0);
	assert_int_equal(id, 0x55475055);

	usleep(200 * 1000); /* 10x the delay, held */
	assert_int_equal(stats(f).state, UGPU_RPM_ACTIVE);
	assert_int_equal(stats(f).suspends, 1);
	ugpu_device_rpm_put(f->dev);
	assert_true(wait_state(f, UGPU_RPM_SUSPENDED, 3000));
	assert_int_equal(stats(f).suspends, 2);

	/* Forbidding a sleeping device wakes it and keeps it awake. */
	assert_int_equal(ugpu_device_rpm_allow(f->dev, false), 0);
	assert_int_equal(sim_power(f), SIM_POWER_D0);
	usleep(100 * 1000);
	assert_int_equal(stats(f).state, UGPU_RPM_ACTIVE);
	assert_int_equal(stats(f).usage, 0);
}

static void test_refcount(void **state)
{
	struct fx *f = *state;
	struct rpm *rpm = f->dev->rpm;

	assert_int_equal(ugpu_device_rpm_set_autosuspend_delay(f->dev, 20), 0);
	assert_int_equal(rpm_get(rpm), 0);
	assert_int_equal(rpm_get(rpm), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	assert_int_equal(stats(f).usage, 2);
	assert_int_equal(rpm_suspend_now(rpm), -EBUSY);
	rpm_put(rpm);
	usleep(150 * 1000);
	assert_int_equal(stats(f).state, UGPU_RPM_ACTIVE); /* one still held */
	assert_true(rpm_get_if_active(rpm));
	rpm_put(rpm);
	rpm_put(rpm);
	assert_true(wait_state(f, UGPU_RPM_SUSPENDED, 3000));
	assert_false(rpm_get_if_active(rpm)); /* never wakes */
	assert_int_equal(stats(f).state, UGPU_RPM_SUSPENDED);
	/* An unbalanced put is ignored: the count does not wrap. */
	rpm_put(rpm);
	assert_int_equal(stats(f).usage, 0);
	assert_int_equal(rpm_get(rpm), 0);
	assert_int_equal(stats(f).usage, 1);
	rpm_put(rpm);
	/* Forced suspend skips the delay. */
	rpm_set_autosuspend_delay(rpm, 100000);
	assert_int_equal(rpm_get(rpm), 0);
	rpm_put(rpm);
	assert_int_equal(rpm_suspend_now(rpm), 0);
	assert_true(rpm_is_suspended(rpm));
	assert_int_equal(rpm_suspend_now(rpm), 0); /* already */
}

/* --- hooks -------------------------------------------------------------- */

struct rec {
	char log[256];
	pthread_mutex_t lock;
	int veto; /* suspend returns -EBUSY while set */
	enum ugpu_power_state last_target, last_from;
	atomic_int restores;
};

static void rec_add(struct rec *r, const char *s)
{
	pthread_mutex_lock(&r->lock);
	strncat(r->log, s, sizeof(r->log) - strlen(r->log) - 1);
	pthread_mutex_unlock(&r->lock);
}

static int hook_a_suspend(void *arg, enum ugpu_power_state target)
{
	struct rec *r = arg;

	r->last_target = target;
	rec_add(r, "sA ");
	return 0;
}

static void hook_a_resume(void *arg, enum ugpu_power_state from)
{
	struct rec *r = arg;

	r->last_from = from;
	rec_add(r, "rA ");
}

static int hook_b_suspend(void *arg, enum ugpu_power_state target)
{
	struct rec *r = arg;

	(void)target;
	rec_add(r, r->veto ? "vB " : "sB ");
	return r->veto ? -EBUSY : 0;
}

static void hook_b_resume(void *arg, enum ugpu_power_state from)
{
	(void)from;
	rec_add(arg, "rB ");
}

static const struct rpm_hook_ops hook_a = {
	.name = "a", .suspend = hook_a_suspend, .resume = hook_a_resume,
};
static const struct rpm_hook_ops hook_b = {
	.name = "b", .suspend = hook_b_suspend, .resume = hook_b_resume,
};

/* Suspend hooks in order, resume in reverse; a veto undoes those that ran
 * and is retried later; nothing is called after unregister. */
static void test_hooks_order_and_veto(void **state)
{
	struct fx *f = *state;
	struct rpm *rpm = f->dev->rpm;
	struct rec r = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct rpm_hook *ha, *hb;

	assert_int_equal(rpm_hook_register(rpm, &hook_a, &r, &ha), 0);
	assert_int_equal(rpm_hook_register(rpm, &hook_b, &r, &hb), 0);
	assert_int_equal(rpm_hook_register(rpm, NULL, &r, &hb), -EINVAL);
	rpm_set_autosuspend_delay(rpm, 100000);
	assert_int_equal(rpm_allow(rpm, true), 0);

	assert_int_equal(rpm_suspend_now(rpm), 0);
	assert_int_equal(r.last_target, UGPU_POWER_D3HOT);
	assert_int_equal(rpm_get(rpm), 0);
	assert_int_equal(r.last_from, UGPU_POWER_D3HOT);
	rpm_put(rpm);
	assert_string_equal(r.log, "sA sB rB rA ");

	/* Veto: A is undone with "D0" (nothing lost), the device stays up. */
	r.log[0] = 0;
	r.veto = 1;
	assert_int_equal(rpm_suspend_now(rpm), -EBUSY);
	assert_string_equal(r.log, "sA vB rB rA ");
	assert_int_equal(r.last_from, UGPU_POWER_D0);
	assert_int_equal(sim_power(f), SIM_POWER_D0);
	assert_int_equal(stats(f).aborted, 1);
	assert_int_equal(stats(f).state, UGPU_RPM_ACTIVE);

	/* Autosuspend retries a vetoed suspend after the delay (>= 50 ms). */
	rpm_set_autosuspend_delay(rpm, 10);
	assert_int_equal(rpm_get(rpm), 0);
	rpm_put(rpm);
	usleep(120 * 1000);
	assert_true(stats(f).aborted >= 2);
	assert_int_equal(stats(f).state, UGPU_RPM_ACTIVE);
	r.veto = 0;
	assert_true(wait_state(f, UGPU_RPM_SUSPENDED, 3000));

	rpm_set_autosuspend_delay(rpm, 100000);
	assert_int_equal(rpm_get(rpm), 0);
	rpm_hook_unregister(rpm, hb);
	rpm_hook_unregister(rpm, ha);
	rpm_put(rpm);
	r.log[0] = 0;
	assert_int_equal(rpm_suspend_now(rpm), 0);
	assert_int_equal(rpm_get(rpm), 0);
	rpm_put(rpm);
	assert_string_equal(r.log, "");
}

/* --- a get racing the suspend hooks ------------------------------------- */

struct slow {
	atomic_int entered;
	atomic_int release;
};

static int slow_suspend(void *arg, enum ugpu_power_state target)
{
	struct slow *s = arg;
	int i;

	(void)target;
	atomic_store(&s->entered, 1);
	for (i = 0; i < 5000 && !atomic_load(&s->release); i++)
		usleep(1000);
	return 0;
}

static const struct rpm_hook_ops slow_ops = { .name = "slow", .suspend = slow_suspend };

static void *suspend_thread(void *arg)
{
	return (void *)(intptr_t)rpm_suspend_now(arg);
}

/* While a suspend hook runs, a get does not wait for it (the hook may be
 * waiting for the thread calling get: the cpu_map handler): it returns at
 * once with the device in D0, and the suspend is abandoned. */
static void test_get_during_hooks_aborts(void **state)
{
	struct fx *f = *state;
	struct rpm *rpm = f->dev->rpm;
	struct slow s = { 0 };
	struct rpm_hook *h;
	pthread_t th;
	void *res;
	uint64_t t0;

	assert_int_equal(rpm_hook_register(rpm, &slow_ops, &s, &h), 0);
	rpm_set_autosuspend_delay(rpm, 100000);
	assert_int_equal(rpm_allow(rpm, true), 0);
	assert_int_equal(pthread_create(&th, NULL, suspend_thread, rpm), 0);
	while (!atomic_load(&s.entered))
		usleep(100);
	assert_int_equal(stats(f).state, UGPU_RPM_SUSPENDING);
	t0 = ms_now();
	assert_int_equal(rpm_get(rpm), 0);
	assert_true(ms_now() - t0 < 1000);
	assert_int_equal(sim_power(f), SIM_POWER_D0);
	atomic_store(&s.release, 1);
	assert_int_equal(pthread_join(th, &res), 0);
	assert_int_equal((int)(intptr_t)res, -EBUSY);
	assert_int_equal(stats(f).state, UGPU_RPM_ACTIVE);
	assert_int_equal(stats(f).aborted, 1);
	assert_int_equal(stats(f).suspends, 0);
	assert_int_equal(sim_power(f), SIM_POWER_D0);
	rpm_put(rpm);
	rpm_hook_unregister(rpm, h);
}

/* --- threads ------------------------------------------------------------- */

struct hammer {
	struct fx *f;
	int iters;
	atomic_int bad;
};

static void *hammer_thread(void *arg)
{
	struct hammer *h = arg;
	struct ugpu_device *dev = h->f->dev;
	int i;

	for (i = 0; i < h->iters; i++) {
		if (ugpu_device_rpm_get(dev)) {
			atomic_fetch_add(&h->bad, 1);
			continue;
		}
		/* Held: the device must answer. */
		uint32_t id = 0;

		if (device_reg_read32(dev, 0, &id) || id != 0x55475055)
			atomic_fetch_add(&h->bad, 1);
		if (i % 4 == 0)
			usleep(200);
		ugpu_device_rpm_put(dev);
		if (i % 3 == 0)
			usleep(300);
	}
	return NULL;
}

/* Threads get/put while a zero delay makes the device cycle and another
 * thread forces suspends: whoever holds a reference always finds it in D0. */
static void test_concurrent_get_put(void **state)
{
	struct fx *f = *state;
	struct hammer h = { .f = f, .iters = 400 };
	pthread_t th[6];
	struct ugpu_rpm_stats s;
	int i, forced = 0;

	assert_int_equal(ugpu_device_rpm_set_autosuspend_delay(f->dev, 0), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	for (i = 0; i < 6; i++)
		assert_int_equal(pthread_create(&th[i], NULL, hammer_thread, &h), 0);
	for (i = 0; i < 300; i++) {
		if (ugpu_device_rpm_suspend(f->dev) == 0)
			forced++;
		usleep(500);
	}
	for (i = 0; i < 6; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(atomic_load(&h.bad), 0);
	assert_true(wait_state(f, UGPU_RPM_SUSPENDED, 3000));
	s = stats(f);
	assert_int_equal(s.usage, 0);
	assert_int_equal(s.errors, 0);
	assert_true(s.suspends > 1);
	/* Every wake followed a suspend; the last suspend has no wake yet. */
	assert_int_equal(s.resumes + 1, s.suspends);
	print_message("concurrent: %llu suspends, %llu aborted, %d forced\n",
		      (unsigned long long)s.suspends, (unsigned long long)s.aborted, forced);
}

/* --- D3cold ------------------------------------------------------------- */

struct saver {
	struct ugpu_device *dev;
	struct buddy_list blocks;
	uint64_t off;
	size_t len;
	unsigned char *copy;
	int suspends, resumes_cold;
	atomic_int restores;
	enum ugpu_power_state target;
};

/* What the BO layer does for D3cold: move VRAM contents to system memory
 * (here: memcpy through the BAR) and bring them back after the wake. */
static int saver_suspend(void *arg, enum ugpu_power_state target)
{
	struct saver *s = arg;

	s->suspends++;
	s->target = target;
	if (target == UGPU_POWER_D3COLD)
		memcpy(s->copy, (char *)s->dev->vram + s->off, s->len);
	return 0;
}

static void saver_resume(void *arg, enum ugpu_power_state from)
{
	struct saver *s = arg;

	if (from == UGPU_POWER_D3COLD) {
		s->resumes_cold++;
		memcpy((char *)s->dev->vram + s->off, s->copy, s->len);
	}
}

static void saver_restore(void *arg)
{
	struct saver *s = arg;

	atomic_fetch_add(&s->restores, 1);
}

static const struct rpm_hook_ops saver_ops = {
	.name = "saver",
	.suspend = saver_suspend,
	.resume = saver_resume,
	.restore = saver_restore,
	.evicts_vram = true,
};

static void test_d3cold_below_threshold(void **state)
{
	struct fx *f = *state;
	struct ugpu_device *d = f->dev;
	struct rpm *rpm = d->rpm;
	struct saver s = { .dev = d, .len = 1 << 20 };
	struct rpm_hook *h;
	unsigned char *v = d->vram;
	uint64_t fence, dst;
	size_t i;
	int k;

	s.copy = malloc(s.len);
	assert_non_null(s.copy);
	buddy_list_init(&s.blocks);
	assert_int_equal(vram_alloc(d, 2 * s.len, 4096, BUDDY_CONTIGUOUS_ALLOCATION,
					   &s.blocks), 0);
	s.off = buddy_block_offset(buddy_list_first(&s.blocks));
	dst = s.off + s.len;
	for (i = 0; i < s.len; i++)
		v[s.off + i] = (unsigned char)(i * 13 + 7);

	rpm_set_autosuspend_delay(rpm, 100000);
	assert_int_equal(rpm_allow(rpm, true), 0);

	assert_int_equal(rpm_hook_register(rpm, &saver_ops, &s, &h), 0);
	/* VRAM use (2 MiB + rings) above the threshold: D3hot. */
	rpm_set_d3cold_threshold(rpm, 1 << 20);
	assert_int_equal(rpm_suspend_now(rpm), 0);
	assert_int_equal(s.target, UGPU_POWER_D3HOT);
	assert_int_equal(sim_power(f), SIM_POWER_D3HOT);
	assert_int_equal(rpm_get(rpm), 0);
	rpm_put(rpm);

	/* Below it: D3cold, twice (engines must come back each time). */
	assert_int_equal(ugpu_device_rpm_set_d3cold_threshold(d, 15u << 20), 0);
	for (k = 0; k < 2; k++) {
		assert_int_equal(rpm_suspend_now(rpm), 0);
		assert_int_equal(s.target, UGPU_POWER_D3COLD);
		assert_int_equal(sim_power(f), SIM_POWER_D3COLD);
		assert_int_equal(stats(f).power_state, UGPU_POWER_D3COLD);
		assert_int_equal(rpm_get(rpm), 0);
		assert_int_equal(s.resumes_cold, k + 1);
		for (i = 0; i < s.len; i++)
			if (v[s.off + i] != (unsigned char)(i * 13 + 7))
				fail_msg("VRAM byte %zu lost over D3cold", i);
		/* The blitter works after D3cold reset its registers. */
		memset(v + dst, 0, s.len);
		assert_int_equal(engine_copy(device_copy_engine(d), engine_vram(dst),
					     engine_vram(s.off), s.len, &fence), 0);
		assert_int_equal(engine_wait(device_copy_engine(d), fence, 5000), 0);
		assert_memory_equal(v + s.off, v + dst, s.len);
		rpm_put(rpm);
		/* The deferred restore runs on the rpm thread after the cold
		 * wake. Waited for here: a suspend before it ran would fold
		 * it into the next wake's (still correct, but not this check). */
		for (i = 0; i < 2000 && atomic_load(&s.restores) < k + 1; i++)
			usleep(1000);
		assert_int_equal(atomic_load(&s.restores), k + 1);
	}
	assert_int_equal(stats(f).suspends_d3cold, 2);

	/* A threshold of 0 never uses D3cold. */
	rpm_set_d3cold_threshold(rpm, 0);
	assert_int_equal(rpm_suspend_now(rpm), 0);
	assert_int_equal(sim_power(f), SIM_POWER_D3HOT);
	assert_int_equal(rpm_get(rpm), 0);
	rpm_put(rpm);

	rpm_hook_unregister(rpm, h);
	vram_free(d, &s.blocks, 0);
	free(s.copy);
}

/* A wake the device refuses: get fails, nothing is held, the next works. */
static void test_wake_failure(void **state)
{
	struct fx *f = *state;
	struct rpm *rpm = f->dev->rpm;

	rpm_set_autosuspend_delay(rpm, 100000);
	assert_int_equal(rpm_allow(rpm, true), 0);
	assert_int_equal(rpm_suspend_now(rpm), 0);
	assert_int_equal(sim_inject(f->sim, 0, SIM_INJECT_WAKE, 1, false), 0);
	assert_int_equal(rpm_get(rpm), -EIO);
	assert_int_equal(stats(f).state, UGPU_RPM_SUSPENDED);
	assert_int_equal(stats(f).usage, 0);
	assert_int_equal(stats(f).errors, 1);
	assert_int_equal(rpm_get(rpm), 0);
	assert_int_equal(sim_power(f), SIM_POWER_D0);
	rpm_put(rpm);
}

/* Closing a sleeping device works and leaves it in D0. */
static void test_close_while_suspended(void **state)
{
	struct fx *f = *state;

	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	assert_int_equal(ugpu_device_rpm_suspend(f->dev), 0);
	assert_int_equal(sim_power(f), SIM_POWER_D3HOT);
	ugpu_device_close(f->dev);
	f->dev = NULL;
	assert_int_equal(sim_power(f), SIM_POWER_D0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_defaults, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_autosuspend_after_delay, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_get_wakes, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_refcount, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_hooks_order_and_veto, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_get_during_hooks_aborts, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_get_put, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_d3cold_below_threshold, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_wake_failure, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_close_while_suspended, setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
