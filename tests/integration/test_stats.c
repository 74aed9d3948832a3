/* SPDX-License-Identifier: MIT */
/*
 * The stats registry (include/ugpu/stats.h) against the in-process reference
 * device:
 *  - every counter is listed once, from index 0 until -ENOENT, with a valid
 *    name, a help line, a group, a kind and a unit; the order is the same on
 *    a second walk and on a second device;
 *  - a counter read by name equals the per-area call's field (mem, rpm, svm,
 *    pm) and follows what the program does (BOs created, evicted, a runtime
 *    suspend and wake);
 *  - histograms (rpm_wake_latency_us, svm_pagefault_latency_us,
 *    bo_cpu_fault_latency_us: a CPU touch of a mapped BO adds one): cumulative
 *    buckets that never decrease, the last one equal to the count, bounds
 *    1, 2, 4, ... then +Inf; a runtime suspend and wake adds one
 *    observation in the bucket of rpm_wake_last_us; a caller with the first
 *    release's struct gets the count and nothing written past its size;
 *  - bad arguments: -EINVAL for NULL and a short size, -ENOENT for an
 *    unknown name and an index past the end.
 */
#include <ctype.h>
#include <string.h>
#include <unistd.h>

#include <ugpu/pm.h>
#include <ugpu/rpm.h>
#include <ugpu/stats.h>
#include <ugpu/vm.h>

#include "test_bo_common.h"

#define MIB (1ull << 20)

static int setup(void **state)
{
	return fx_setup_vram(state, 32 * MIB);
}

static uint64_t stat_of(struct ugpu_device *dev, const char *name)
{
	struct ugpu_stat st = { .size = sizeof(st) };

	assert_int_equal(ugpu_device_stat_find(dev, name, &st), 0);
	assert_string_equal(st.name, name);
	return st.value;
}

static unsigned walk(struct ugpu_device *dev, const char **names, unsigned max)
{
	struct ugpu_stat st = { .size = sizeof(st) };
	unsigned i;
	int ret;

	for (i = 0; (ret = ugpu_device_stat(dev, i, &st)) == 0; i++) {
		assert_true(i < max);
		assert_non_null(st.name);
		assert_true(st.name[0] != '\0' && strlen(st.name) < 64);
		for (const char *c = st.name; *c; c++)
			assert_true(isalnum((unsigned char)*c) || *c == '_');
		assert_non_null(st.help);
		assert_true(strlen(st.help) > 5);
		assert_non_null(st.group);
		assert_true(st.kind == UGPU_STAT_COUNTER || st.kind == UGPU_STAT_GAUGE ||
			    st.kind == UGPU_STAT_HISTOGRAM);
		assert_true(st.kind == UGPU_STAT_HISTOGRAM ? st.buckets == UGPU_STAT_BUCKETS
							   : st.buckets == 0 && st.sum == 0);
		assert_true(st.unit <= UGPU_STAT_UNIT_MS);
		/* Prometheus keeps these suffixes for counters and histograms */
		if (st.kind != UGPU_STAT_COUNTER) {
			size_t n = strlen(st.name);

			for (const char *const *sfx = (const char *const[]){ "_count", "_sum", "_bucket",
									       "_total", NULL };
			     *sfx; sfx++)
				if (n > strlen(*sfx) && !strcmp(st.name + n - strlen(*sfx), *sfx))
					fail_msg("gauge %s ends in %s", st.name, *sfx);
		}
		for (unsigned j = 0; j < i; j++)
			if (!strcmp(names[j], st.name))
				fail_msg("counter %s listed twice (indexes %u and %u)", st.name, j, i);
		names[i] = st.name;
	}
	assert_int_equal(ret, -ENOENT);
	return i;
}

static void test_enumerate(void **state)
{
	struct fx *f = *state;
	const char *a[256], *b[256], *c[256];
	struct fx *g = NULL;
	unsigned n, m, k;

	n = walk(f->dev, a, 256);
	/* every area registered its counters */
	assert_true(n >= 60);
	m = walk(f->dev, b, 256);
	assert_int_equal(m, n);
	for (unsigned i = 0; i < n; i++)
		assert_string_equal(a[i], b[i]);
	/* a second device lists the same names in the same order */
	assert_int_equal(fx_setup_vram((void **)&g, 16 * MIB), 0);
	k = walk(g->dev, c, 256);
	assert_int_equal(k, n);
	for (unsigned i = 0; i < n; i++)
		assert_string_equal(a[i], c[i]);
	fx_teardown((void **)&g);
}

static void test_values_follow(void **state)
{
	struct fx *f = *state;
	struct ugpu_device_mem mem = { .size = sizeof(mem) };
	struct ugpu_rpm_stats rs = { .size = sizeof(rs) };
	struct ugpu_svm_stats ss = { .size = sizeof(ss) };
	struct ugpu_pm_stats ps = { .size = sizeof(ps) };
	struct ugpu_bo *bo[6];
	uint64_t bos0, ev0, res0;
	int i;

	bos0 = stat_of(f->dev, "bos");
	ev0 = stat_of(f->dev, "bo_evict_count");
	/* 6 x 8 MiB on 32 MiB of VRAM: evictions */
	for (i = 0; i < 6; i++) {
		bo[i] = bo_new(f->dev, 8 * MIB, 0, UGPU_PLACEMENT_VRAM, UGPU_PLACEMENT_SYSTEM, "stats");
		assert_non_null(bo[i]);
		/* written, so an eviction has data to move */
		assert_int_equal(bo_fill(bo[i], 8 * MIB, (uint32_t)i), 0);
	}
	assert_int_equal(stat_of(f->dev, "bos"), bos0 + 6);
	assert_true(stat_of(f->dev, "bo_evict_count") > ev0);
	assert_int_equal(ugpu_device_mem_stats(f->dev, &mem), 0);
	assert_int_equal(stat_of(f->dev, "bos"), mem.bos);
	assert_int_equal(stat_of(f->dev, "vram_used_bytes"), mem.vram_used);
	assert_int_equal(stat_of(f->dev, "vram_size_bytes"), mem.vram_size);
	assert_int_equal(stat_of(f->dev, "bo_evict_bytes"), mem.evicted_bytes);
	for (i = 0; i < 6; i++)
		ugpu_bo_put(bo[i]);
	assert_int_equal(stat_of(f->dev, "bos"), bos0);

	/* a runtime suspend and a wake */
	res0 = stat_of(f->dev, "rpm_resume_count");
	assert_int_equal(ugpu_device_rpm_set_autosuspend_delay(f->dev, -1), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	assert_int_equal(ugpu_device_rpm_suspend(f->dev), 0);
	assert_int_equal(stat_of(f->dev, "rpm_allowed"), 1);
	assert_int_equal(ugpu_device_rpm_get(f->dev), 0);
	ugpu_device_rpm_put(f->dev);
	assert_int_equal(stat_of(f->dev, "rpm_resume_count"), res0 + 1);
	assert_int_equal(ugpu_device_rpm_stats(f->dev, &rs), 0);
	assert_int_equal(stat_of(f->dev, "rpm_suspend_count"), rs.suspends);
	assert_int_equal(stat_of(f->dev, "rpm_power_state"), (uint64_t)rs.power_state);
	assert_int_equal(stat_of(f->dev, "rpm_wake_max_us"), rs.wake_max_us);

	assert_int_equal(ugpu_device_svm_stats(f->dev, &ss), 0);
	assert_int_equal(stat_of(f->dev, "svm_pagefault_count"), ss.svm_pagefault_count);
	assert_int_equal(stat_of(f->dev, "svm_ranges"), ss.svm_ranges);
	assert_int_equal(ugpu_device_pm_stats(f->dev, &ps), 0);
	assert_int_equal(stat_of(f->dev, "pm_cycle_count"), ps.cycles);
	assert_int_equal(stat_of(f->dev, "pm_state"), ps.state);
}

/* @name is a histogram whose buckets are consistent; its count. */
static uint64_t check_hist(struct ugpu_device *dev, const char *name, struct ugpu_stat *st)
{
	*st = (struct ugpu_stat){ .size = sizeof(*st) };
	assert_int_equal(ugpu_device_stat_find(dev, name, st), 0);
	assert_int_equal(st->kind, UGPU_STAT_HISTOGRAM);
	assert_int_equal(st->unit, UGPU_STAT_UNIT_US);
	assert_int_equal(st->buckets, UGPU_STAT_BUCKETS);
	for (unsigned b = 0; b < st->buckets; b++) {
		if (b)
			assert_true(st->bucket[b] >= st->bucket[b - 1]);
		assert_int_equal(ugpu_stat_bucket_le(st, b),
				 b + 1 < st->buckets ? 1ull << b : UINT64_MAX);
	}
	assert_int_equal(st->bucket[st->buckets - 1], st->value);
	if (!st->value)
		assert_int_equal(st->sum, 0);
	return st->value;
}

static void test_histograms(void **state)
{
	struct fx *f = *state;
	struct ugpu_stat st, a, b;
	struct ugpu_stat old = { .size = offsetof(struct ugpu_stat, value) + sizeof(uint64_t) };
	unsigned char guard[sizeof(struct ugpu_stat)];
	uint64_t n0, last, sum0;
	unsigned k;

	n0 = check_hist(f->dev, "rpm_wake_latency_us", &a);
	sum0 = a.sum;
	check_hist(f->dev, "svm_pagefault_latency_us", &st);
	{
		/* the first CPU touch of a mapped BO is a userfaultfd fault the
		 * handler serves: one more observation */
		struct ugpu_bo *bo = bo_new(f->dev, 1 * MIB, 0, UGPU_PLACEMENT_VRAM,
					    UGPU_PLACEMENT_NONE, "hist");
		uint64_t c0 = check_hist(f->dev, "bo_cpu_fault_latency_us", &st);
		void *p = NULL;

		assert_non_null(bo);
		assert_int_equal(ugpu_bo_map(bo, &p), 0);
		*(volatile uint32_t *)p = 0x12345678;
		/* the handler records it just after waking us: wait for it
		 * (bounded) */
		for (int i = 0; i < 1000 && check_hist(f->dev, "bo_cpu_fault_latency_us", &st) == c0; i++)
			usleep(1000);
		assert_true(check_hist(f->dev, "bo_cpu_fault_latency_us", &st) >= c0 + 1);
		assert_true(*(volatile uint32_t *)p == 0x12345678);
		ugpu_bo_put(bo);
	}
	assert_int_equal(ugpu_stat_bucket_le(NULL, 0), UINT64_MAX);
	assert_int_equal(ugpu_stat_bucket_le(&st, UGPU_STAT_BUCKETS), UINT64_MAX);

	/* a runtime suspend and a wake: one more observation, in the bucket
	 * of the wake's time */
	assert_int_equal(ugpu_device_rpm_set_autosuspend_delay(f->dev, -1), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	assert_int_equal(ugpu_device_rpm_suspend(f->dev), 0);
	assert_int_equal(ugpu_device_rpm_get(f->dev), 0);
	ugpu_device_rpm_put(f->dev);
	assert_int_equal(check_hist(f->dev, "rpm_wake_latency_us", &b), n0 + 1);
	last = stat_of(f->dev, "rpm_wake_last_us");
	assert_int_equal(b.sum, sum0 + last);
	for (k = 0; k + 1 < b.buckets && ugpu_stat_bucket_le(&b, k) < last; k++)
		assert_int_equal(b.bucket[k], a.bucket[k]);
	assert_int_equal(b.bucket[k], a.bucket[k] + 1);
	/* the sum agrees with the counter that sums the wakes */
	assert_int_equal(b.sum, stat_of(f->dev, "rpm_wake_us"));

	/* a program built against the first release: the count, nothing
	 * written past its struct */
	memset(guard, 0xa5, sizeof(guard));
	memcpy(guard, &old, old.size);
	assert_int_equal(
		ugpu_device_stat_find(f->dev, "rpm_wake_latency_us", (struct ugpu_stat *)guard), 0);
	memcpy(&old, guard, sizeof(old));
	assert_int_equal(old.kind, UGPU_STAT_HISTOGRAM);
	assert_int_equal(old.value, n0 + 1);
	for (size_t i = old.size; i < sizeof(guard); i++)
		assert_int_equal(guard[i], 0xa5);
}

static void test_bad_args(void **state)
{
	struct fx *f = *state;
	struct ugpu_stat st = { .size = sizeof(st) };
	struct ugpu_stat small = { .size = sizeof(size_t) };
	unsigned n = 0;

	while (ugpu_device_stat(f->dev, n, &st) == 0)
		n++;
	assert_int_equal(ugpu_device_stat(f->dev, n, &st), -ENOENT);
	assert_int_equal(ugpu_device_stat(f->dev, ~0u, &st), -ENOENT);
	assert_int_equal(ugpu_device_stat(NULL, 0, &st), -EINVAL);
	assert_int_equal(ugpu_device_stat(f->dev, 0, NULL), -EINVAL);
	assert_int_equal(ugpu_device_stat(f->dev, 0, &small), -EINVAL);
	assert_int_equal(ugpu_device_stat_find(f->dev, "no_such_counter", &st), -ENOENT);
	assert_int_equal(ugpu_device_stat_find(f->dev, "", &st), -ENOENT);
	assert_int_equal(ugpu_device_stat_find(f->dev, NULL, &st), -EINVAL);
	assert_int_equal(ugpu_device_stat_find(NULL, "bos", &st), -EINVAL);
	assert_int_equal(ugpu_device_stat_find(f->dev, "bos", &small), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_enumerate, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_values_follow, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_histograms, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_bad_args, setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
