/* SPDX-License-Identifier: MIT */
/* Test points (see test_point.h). */
#include <pthread.h>
#include <stddef.h>

#include "base/test_point.h"

#ifdef UGPU_TEST_HOOKS

int test_points_armed;

/* @lock protects the table; a callback runs without it (it may block for as
 * long as the test wants, and another thread may disarm meanwhile). */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	test_point_fn fn;
	void *arg;
} points[TEST_POINT_COUNT];

void test_point_set(enum test_point_id id, test_point_fn fn, void *arg)
{
	if ((unsigned int)id >= TEST_POINT_COUNT)
		return;
	pthread_mutex_lock(&lock);
	if (!points[id].fn && fn)
		__atomic_add_fetch(&test_points_armed, 1, __ATOMIC_RELAXED);
	else if (points[id].fn && !fn)
		__atomic_sub_fetch(&test_points_armed, 1, __ATOMIC_RELAXED);
	points[id].fn = fn;
	points[id].arg = arg;
	pthread_mutex_unlock(&lock);
}

void test_point_clear_all(void)
{
	unsigned int i;

	for (i = 0; i < TEST_POINT_COUNT; i++)
		test_point_set((enum test_point_id)i, NULL, NULL);
}

void test_point_run(enum test_point_id id, void *obj)
{
	test_point_fn fn;
	void *arg;

	if ((unsigned int)id >= TEST_POINT_COUNT)
		return;
	pthread_mutex_lock(&lock);
	fn = points[id].fn;
	arg = points[id].arg;
	pthread_mutex_unlock(&lock);
	if (fn)
		fn(arg, id, obj);
}

#endif /* UGPU_TEST_HOOKS */
