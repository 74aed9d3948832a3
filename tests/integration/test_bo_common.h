/* SPDX-License-Identifier: MIT */
/* Shared fixture for the BO and suspend tests: an in-process reference
 * device, a context, an open device, pattern helpers. Header-only (each test
 * file is its own executable). */
#ifndef UGPU_TEST_BO_COMMON_H
#define UGPU_TEST_BO_COMMON_H

#include <errno.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <ugpu/bo.h>
#include <ugpu/device.h>
#include <ugpu/pm.h>
#include <ugpu/rpm.h>
#include <ugpu/unplug.h>

#include "mm/bo.h"
#include "src/device.h"
#include "tools/ugpu-sim/sim.h"

#include "bo_util.h"

/*
 * Watchdog: a test that hangs fails with a line saying so, instead of
 * sitting silently until ctest's timeout. The usual cause is an assertion
 * that failed while the test held a lock (a callback runs with the BO
 * manager lock held) or parked a driver thread: the teardown then waits for
 * it forever. Each test gets FX_TEST_BOUND_S (UGPU_TEST_BOUND_S overrides),
 * its teardown FX_TEARDOWN_BOUND_S.
 */
#define FX_TEST_BOUND_S 270
#define FX_TEARDOWN_BOUND_S 30

static const char *fx_watchdog_msg = "";

static void fx_watchdog_fire(int sig)
{
	static const char head[] = "\n[  FAILED  ] watchdog: ";

	(void)sig;
	if (write(2, head, sizeof(head) - 1) < 0 ||
	    write(2, fx_watchdog_msg, strlen(fx_watchdog_msg)) < 0) {
		/* nothing else to do from a signal handler */
	}
	_exit(1);
}

static inline void fx_watchdog_arm(unsigned int seconds, const char *msg)
{
	fx_watchdog_msg = msg;
	signal(SIGALRM, fx_watchdog_fire);
	alarm(seconds);
}

static inline unsigned int fx_test_bound_s(void)
{
	const char *e = getenv("UGPU_TEST_BOUND_S");
	long v = e ? strtol(e, NULL, 10) : 0;

	return v > 0 ? (unsigned int)v : FX_TEST_BOUND_S;
}

struct fx {
	struct sim *sim;
	struct ugpu_context *ctx;
	struct ugpu_device *dev;
	char uri[256];
};

/* The fixture with a reference device built from @o (sim_opts_init() and
 * the caller's changes). */
static inline int fx_setup_opts(void **state, const struct sim_opts *o)
{
	struct ugpu_context_opts copts = { .size = sizeof(copts), .log_level = UGPU_LOG_ERROR };
	struct fx *f = calloc(1, sizeof(*f));

	if (getenv("UGPU_TEST_LOG"))
		copts.log_level = UGPU_LOG_INFO;
	fx_watchdog_arm(fx_test_bound_s(),
			"the test running (the last [ RUN ] line above) did not finish within its bound (UGPU_TEST_BOUND_S): a wait hung\n");
	if (!f || sim_start(o, &f->sim) || ugpu_context_create(&copts, &f->ctx))
		return -1;
	snprintf(f->uri, sizeof(f->uri), "vfio-user:%s", sim_socket_path(f->sim, 0));
	if (ugpu_device_open(f->ctx, f->uri, &f->dev))
		return -1;
	*state = f;
	return 0;
}

/* The fixture with a reference device of @vram bytes whose D3 -> D0
 * transition takes @wake_latency_us. */
static inline int fx_setup_dev(void **state, uint64_t vram, unsigned int wake_latency_us)
{
	struct sim_opts o;

	sim_opts_init(&o);
	o.vram_size = vram;
	o.wake_latency_us = wake_latency_us;
	return fx_setup_opts(state, &o);
}

static inline int fx_setup_vram(void **state, uint64_t vram)
{
	return fx_setup_dev(state, vram, 0);
}

/* The same with runtime PM's autosuspend off: the test's suspends are the
 * only ones. */
static inline int fx_setup_vram_no_autosuspend(void **state, uint64_t vram)
{
	if (fx_setup_vram(state, vram))
		return -1;
	return ugpu_device_rpm_set_autosuspend_delay(((struct fx *)*state)->dev, -1);
}

static inline int fx_teardown(void **state)
{
	struct fx *f = *state;

	fx_watchdog_arm(FX_TEARDOWN_BOUND_S,
			"the teardown of the test above did not finish in 30 s: did the test fail with a lock held or a driver thread parked?\n");

	ugpu_device_close(f->dev);
	ugpu_context_destroy(f->ctx);
	sim_stop(f->sim);
	free(f);
	alarm(0);
	return 0;
}

static inline uint64_t fx_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Wait (bounded by @bound_ms) for @dev's removal to finish; its info. */
static inline struct ugpu_unplug_info fx_wait_removed(struct ugpu_device *dev, uint64_t bound_ms)
{
	struct ugpu_unplug_info i = { .size = sizeof(i) };
	uint64_t t0 = fx_now_ms();

	for (;;) {
		assert_int_equal(ugpu_device_unplug_info(dev, &i), 0);
		if (i.state == UGPU_UNPLUG_REMOVED)
			return i;
		if (fx_now_ms() - t0 > bound_ms)
			fail_msg("removal not finished within %llu ms (state %s)",
				 (unsigned long long)bound_ms, ugpu_unplug_state_name(i.state));
		usleep(1000);
	}
}

/* What the driver keeps in VRAM of its own on the reference device: the two
 * copy engines' rings with their fence pages and sum slots (132 KiB each)
 * and the exec queues' fault ring and fences (12 KiB), as kernel BOs. */
#define FX_KERNEL_BOS 3
#define FX_KERNEL_VRAM (2 * (132u << 10) + (12u << 10))

/*
 * pop_make() - @n BOs cycling through every kind, sizes 256..768 KiB (odd
 * ones @odd_pages pages longer), each filled with its own pattern — through
 * its CPU mapping for the mapped kinds.
 */
static inline void pop_make(struct fx *f, struct obj *o, int n, uint32_t seed_base,
			    unsigned int odd_pages)
{
	int i;

	for (i = 0; i < n; i++) {
		enum kind k = (enum kind)(i % K_NKINDS);

		o[i].kind = k;
		o[i].size = (uint64_t)(1 + i % 3) * 256 * 1024 + (i & 1 ? 4096ull * odd_pages : 0);
		o[i].seed = seed_base + (uint32_t)i;
		o[i].map = NULL;
		o[i].bo = bo_new(f->dev, o[i].size, kinds[k].flags, kinds[k].p0, kinds[k].p1,
				 kinds[k].name);
		assert_non_null(o[i].bo);
		if (k == K_MAPPED_PINNED || k == K_MAPPED_UNPINNED) {
			assert_int_equal(ugpu_bo_map(o[i].bo, (void **)&o[i].map), 0);
			pat_fill(o[i].map, o[i].size, o[i].seed);
		} else {
			assert_int_equal(bo_fill(o[i].bo, o[i].size, o[i].seed), 0);
		}
	}
}

/*
 * pop_verify() - every BO (NULL entries skipped) holds its pattern, through
 * read and through its mapping. NO_RESTORE BOs: with @min_discarded >= 1
 * (after that many suspends) they must have been discarded and read the
 * device's poison — proof that VRAM really was lost; with 0 they are not
 * checked. Ends with the BO manager's invariant checker.
 */
static inline void pop_verify(struct fx *f, struct obj *o, int n, uint64_t min_discarded)
{
	int i;

	for (i = 0; i < n; i++) {
		if (!o[i].bo)
			continue;
		if (o[i].kind == K_NORESTORE) {
			if (min_discarded) {
				struct ugpu_bo_info info = { .size = sizeof(info) };
				uint64_t w = 0;

				assert_int_equal(ugpu_bo_query(o[i].bo, &info), 0);
				assert_true(info.discarded >= min_discarded);
				assert_int_equal(ugpu_bo_read(o[i].bo, 0, &w, 8), 0);
				assert_int_equal(w, POISON);
			}
			continue;
		}
		if (bo_verify(o[i].bo, o[i].size, o[i].seed) != -1)
			fail_msg("BO %d (%s) lost bytes at offset %lld", i, kinds[o[i].kind].name,
				 (long long)bo_verify(o[i].bo, o[i].size, o[i].seed));
		if (o[i].map && pat_check(o[i].map, o[i].size, o[i].seed) != -1)
			fail_msg("BO %d (%s) mapping lost bytes", i, kinds[o[i].kind].name);
	}
	assert_int_equal(bo_mgr_check(f->dev, true), 0);
}

#endif
