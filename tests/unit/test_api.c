/* SPDX-License-Identifier: MIT */
/* The public API skeleton: version, errors, contexts, the log hook. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <ugpu/ugpu.h>

#include "base/log.h"

static void test_version(void **state)
{
	char buf[32];

	(void)state;
	assert_int_equal(ugpu_version(), UGPU_VERSION_NUMBER);
	snprintf(buf, sizeof(buf), "%d.%d.%d", UGPU_VERSION_MAJOR, UGPU_VERSION_MINOR,
		 UGPU_VERSION_PATCH);
	assert_string_equal(ugpu_version_string(), buf);
}

static void test_strerror(void **state)
{
	(void)state;
	assert_string_equal(ugpu_strerror(0), "success");
	/* ugpu's own wording for codes it uses with a meaning... */
	assert_non_null(strstr(ugpu_strerror(-ENODEV), "gone"));
	/* ...the same for a positive code... */
	assert_string_equal(ugpu_strerror(ENODEV), ugpu_strerror(-ENODEV));
	/* ...and the C library's text for the rest. */
	assert_string_equal(ugpu_strerror(-EINVAL), "Invalid argument");
	assert_string_equal(ugpu_strerror(-123456), "unknown error");
	/* Every int is a valid argument: INT_MIN has no negation. */
	assert_string_equal(ugpu_strerror(INT_MIN), "unknown error");
	assert_string_equal(ugpu_strerror(INT_MAX), "unknown error");
}

static void test_context_args(void **state)
{
	struct ugpu_context_opts opts = { 0 };
	struct ugpu_context *ctx = (void *)0x1;

	(void)state;
	assert_int_equal(ugpu_context_create(NULL, NULL), -EINVAL);
	/* size 0: the caller did not say which struct it compiled against */
	assert_int_equal(ugpu_context_create(&opts, &ctx), -EINVAL);
	assert_ptr_equal(ctx, (void *)0x1);
	opts.size = sizeof(opts);
	opts.log_level = (enum ugpu_log_level)99;
	assert_int_equal(ugpu_context_create(&opts, &ctx), -EINVAL);
	assert_ptr_equal(ctx, (void *)0x1);

	assert_int_equal(ugpu_context_create(NULL, &ctx), 0);
	assert_int_equal(ugpu_context_set_log(ctx, NULL, NULL, (enum ugpu_log_level)-1), -EINVAL);
	assert_int_equal(ugpu_context_set_log(NULL, NULL, NULL, UGPU_LOG_INFO), -EINVAL);
	ugpu_context_destroy(ctx);
	ugpu_context_destroy(NULL);
}

struct captured {
	int calls;
	enum ugpu_log_level level;
	char msg[256];
};

static void capture(void *user, enum ugpu_log_level level, const char *msg)
{
	struct captured *c = user;

	c->calls++;
	c->level = level;
	snprintf(c->msg, sizeof(c->msg), "%s", msg);
}

/* An older caller's struct: only the first fields exist. */
struct old_opts {
	size_t size;
	ugpu_log_fn log_fn;
	void *log_user;
};

static void test_log_hook(void **state)
{
	struct captured c = { 0 };
	struct ugpu_context_opts opts = {
		.size = sizeof(opts), .log_fn = capture, .log_user = &c, .log_level = UGPU_LOG_INFO,
	};
	struct ugpu_context *ctx;

	(void)state;
	assert_int_equal(ugpu_context_create(&opts, &ctx), 0);
	log_info(ctx, "bar %d at %s", 2, "0x1000");
	assert_int_equal(c.calls, 1);
	assert_int_equal(c.level, UGPU_LOG_INFO);
	assert_string_equal(c.msg, "bar 2 at 0x1000");
	log_dbg(ctx, "dropped");
	assert_int_equal(c.calls, 1);

	assert_int_equal(ugpu_context_set_log(ctx, capture, &c, UGPU_LOG_ERROR), 0);
	log_warn(ctx, "dropped too");
	assert_int_equal(c.calls, 1);
	log_err(ctx, "kept");
	assert_int_equal(c.calls, 2);
	assert_string_equal(c.msg, "kept");
	ugpu_context_destroy(ctx);
}

static void test_grown_struct(void **state)
{
	struct captured c = { 0 };
	struct old_opts old = { .size = sizeof(old), .log_fn = capture, .log_user = &c };
	struct ugpu_context *ctx;

	(void)state;
	/* Fields past size read as zero: log_level is the default (WARN). */
	setenv("UGPU_LOG", "warn", 1);
	assert_int_equal(ugpu_context_create((const struct ugpu_context_opts *)&old, &ctx), 0);
	log_info(ctx, "below default");
	assert_int_equal(c.calls, 0);
	log_warn(ctx, "at default");
	assert_int_equal(c.calls, 1);
	ugpu_context_destroy(ctx);

	setenv("UGPU_LOG", "debug", 1);
	assert_int_equal(ugpu_context_create((const struct ugpu_context_opts *)&old, &ctx), 0);
	log_dbg(ctx, "env says debug");
	assert_int_equal(c.calls, 2);
	ugpu_context_destroy(ctx);
	unsetenv("UGPU_LOG");
}

struct hammer {
	struct ugpu_context *ctx;
	int n;
};

static void *log_thread(void *arg)
{
	struct hammer *h = arg;
	int i;

	for (i = 0; i < h->n; i++)
		log_err(h->ctx, "line %d", i);
	return NULL;
}

static void count_only(void *user, enum ugpu_log_level level, const char *msg)
{
	(void)level;
	(void)msg;
	(*(int *)user)++; /* serialised by the context's log lock */
}

static void test_log_threads(void **state)
{
	struct ugpu_context_opts opts = { .size = sizeof(opts), .log_level = UGPU_LOG_ERROR };
	struct hammer h = { .n = 2000 };
	pthread_t t[4];
	int count = 0, i;

	(void)state;
	opts.log_fn = count_only;
	opts.log_user = &count;
	assert_int_equal(ugpu_context_create(&opts, &h.ctx), 0);
	for (i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, log_thread, &h), 0);
	for (i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(count, 4 * h.n);
	ugpu_context_destroy(h.ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_version),     cmocka_unit_test(test_strerror),
		cmocka_unit_test(test_context_args), cmocka_unit_test(test_log_hook),
		cmocka_unit_test(test_grown_struct), cmocka_unit_test(test_log_threads),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
