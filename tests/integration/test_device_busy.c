/* SPDX-License-Identifier: MIT */
/*
 * A device another process (here: another context) holds is "in use"
 * (-EBUSY), not "gone" (-ENODEV): the reference device answers a second
 * client's first message with EBUSY before it hangs up, and the driver says
 * so, without first announcing a hang-up as a lost device. Once the holder
 * lets go, the device opens.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include <ugpu/device.h>
#include <ugpu/ugpu.h>

#include "log_capture.h"
#include "tools/ugpu-sim/sim.h"

static void test_second_owner_is_told_in_use(void **state)
{
	struct ugpu_context_opts quiet = { .size = sizeof(quiet), .log_level = UGPU_LOG_ERROR };
	struct ugpu_context_opts cap = { .size = sizeof(cap), .log_fn = log_capture,
					 .log_level = UGPU_LOG_ERROR };
	struct ugpu_context *holder_ctx, *ctx;
	struct ugpu_device *holder, *dev = NULL;
	struct sim_opts so;
	struct sim *sim;
	char uri[256];
	int ret = -1;

	(void)state;
	sim_opts_init(&so);
	so.vram_size = 16ull << 20;
	assert_int_equal(sim_start(&so, &sim), 0);
	snprintf(uri, sizeof(uri), "vfio-user:%s", sim_socket_path(sim, 0));
	assert_int_equal(ugpu_context_create(&quiet, &holder_ctx), 0);
	assert_int_equal(ugpu_device_open(holder_ctx, uri, &holder), 0);

	assert_int_equal(ugpu_context_create(&cap, &ctx), 0);
	assert_int_equal(ugpu_device_open(ctx, uri, &dev), -EBUSY);
	assert_null(dev);
	assert_true(log_has("in use"));
	assert_false(log_has("device is gone"));
	assert_string_equal(ugpu_strerror(-EBUSY), "object or device is busy (pinned, mapped or in use)");

	/* the holder lets go: the device is free (the server notices the
	 * hang-up on its own thread: a bounded number of tries) */
	ugpu_device_close(holder);
	for (int i = 0; i < 200 && ret; i++) {
		ret = ugpu_device_open(ctx, uri, &dev);
		if (ret)
			usleep(10000);
	}
	assert_int_equal(ret, 0);
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	ugpu_context_destroy(holder_ctx);
	sim_stop(sim);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_second_owner_is_told_in_use),
	};

	log_echo = getenv("UGPU_TEST_LOG") != NULL;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
