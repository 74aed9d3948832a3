/* SPDX-License-Identifier: MIT */
/*
 * The logind notifier degrades cleanly: on a host without a system bus or
 * logind (CI containers), ugpu_logind_start() answers -ENOENT (or -ENOTSUP
 * without libsystemd) and the device still suspends through the API; where
 * logind is present the notifier starts and stops within its bound.
 */
#include "integration/test_bo_common.h"

static int setup(void **state)
{
	return fx_setup_vram(state, 16u << 20);
}

static void test_start_or_degrade(void **state)
{
	struct fx *f = *state;
	struct ugpu_logind *ln = NULL;
	int ret = ugpu_logind_start(f->dev, &ln);

	assert_true(ret == 0 || ret == -ENOENT || ret == -ENOTSUP);
	if (!ret)
		ugpu_logind_stop(ln);
	else
		assert_null(ln);
	assert_int_equal(ugpu_logind_start(NULL, &ln), -EINVAL);
	ugpu_logind_stop(NULL);
	/* the API path works either way */
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	assert_int_equal(ugpu_device_resume(f->dev), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_start_or_degrade, setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
