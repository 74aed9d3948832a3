/* SPDX-License-Identifier: MIT */
/*
 * Removal of a reference device that runs as its own process (the ugpu-sim
 * binary, path in $UGPU_SIM as ctest sets it):
 *  - SIGKILL of the device process: a surprise removal, detected within a
 *    bound (printed), -ENODEV everywhere, no hang, BOs that had a system
 *    copy intact, VRAM-only BOs reported lost;
 *  - `ugpuctl unplug request` through the device's control socket: an
 *    orderly removal that keeps every BO ($UGPU_BUILD_DIR/ugpuctl).
 */
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ugpu/unplug.h>

#include "test_bo_common.h"

#define MIB (1ull << 20)
#define BOUND_MS 10000

struct child {
	pid_t pid;
	char sock[108], ctl[108];
	struct ugpu_context *ctx;
	struct ugpu_device *dev;
};

/* Start ugpu-sim and wait (bounded) for its "listening" line. */
static int child_start(struct child *c)
{
	const char *bin = getenv("UGPU_SIM");
	char buf[512];
	size_t got = 0;
	uint64_t t0;
	int pfd[2];

	if (!bin || !*bin || access(bin, X_OK)) {
		fprintf(stderr, "test_unplug_kill: UGPU_SIM does not name the ugpu-sim binary\n");
		exit(77);
	}
	snprintf(c->sock, sizeof(c->sock), "/tmp/ugpu-unplug-kill-%d.sock", (int)getpid());
	snprintf(c->ctl, sizeof(c->ctl), "/tmp/ugpu-unplug-kill-%d.ctl", (int)getpid());
	if (pipe2(pfd, O_CLOEXEC))
		return -1;
	c->pid = fork();
	if (c->pid < 0)
		return -1;
	if (c->pid == 0) {
		dup2(pfd[1], 1);
		execl(bin, bin, "--socket", c->sock, "--control", c->ctl, "--vram", "64M",
		      (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	for (t0 = fx_now_ms(); fx_now_ms() - t0 < BOUND_MS && !strstr(buf, "listening");) {
		struct pollfd p = { .fd = pfd[0], .events = POLLIN };
		ssize_t r;

		buf[got] = '\0';
		if (poll(&p, 1, 100) <= 0)
			continue;
		r = read(pfd[0], buf + got, sizeof(buf) - 1 - got);
		if (r <= 0)
			break;
		got += (size_t)r;
		buf[got] = '\0';
	}
	close(pfd[0]);
	if (!strstr(buf, "listening")) {
		fprintf(stderr, "ugpu-sim did not start: '%s'\n", buf);
		return -1;
	}
	return 0;
}

static int setup(void **state)
{
	struct ugpu_context_opts co = { .size = sizeof(co), .log_level = UGPU_LOG_ERROR };
	struct child *c = calloc(1, sizeof(*c));
	char uri[160];

	if (!c || child_start(c) || ugpu_context_create(&co, &c->ctx))
		return -1;
	snprintf(uri, sizeof(uri), "vfio-user:%s", c->sock);
	if (ugpu_device_open(c->ctx, uri, &c->dev))
		return -1;
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct child *c = *state;
	int st;

	ugpu_device_close(c->dev);
	ugpu_context_destroy(c->ctx);
	if (c->pid > 0) {
		kill(c->pid, SIGKILL);
		waitpid(c->pid, &st, 0);
	}
	unlink(c->sock);
	unlink(c->ctl);
	free(c);
	return 0;
}

static void test_sigkill(void **state)
{
	struct child *c = *state;
	struct ugpu_bo *sys, *vany, *vonly, *pin, *migrated;
	struct ugpu_unplug_info info;
	uint64_t t0, detect;
	size_t n;
	int st;
	char b;

	sys = bo_new(c->dev, 2 * MIB, 0, S, N, "sys");
	vany = bo_new(c->dev, MIB, 0, V, S, "vany");
	vonly = bo_new(c->dev, MIB, 0, V, N, "vonly");
	pin = bo_new(c->dev, MIB, UGPU_BO_PINNED, V, N, "pin");
	migrated = bo_new(c->dev, MIB, 0, V, S, "migrated");
	assert_true(sys && vany && vonly && pin && migrated);
	assert_int_equal(bo_fill(sys, 2 * MIB, 1), 0);
	assert_int_equal(bo_fill(vany, MIB, 2), 0);
	assert_int_equal(bo_fill(vonly, MIB, 3), 0);
	assert_int_equal(bo_fill(pin, MIB, 4), 0);
	assert_int_equal(bo_fill(migrated, MIB, 5), 0);
	assert_int_equal(ugpu_bo_migrate(migrated, S), 0); /* by the blitter, before the kill */

	t0 = fx_now_ms();
	assert_int_equal(kill(c->pid, SIGKILL), 0);
	while (!ugpu_device_is_gone(c->dev)) {
		if (fx_now_ms() - t0 > BOUND_MS)
			fail_msg("SIGKILL of ugpu-sim not detected within %d ms", BOUND_MS);
		usleep(100);
	}
	detect = fx_now_ms() - t0;
	info = fx_wait_removed(c->dev, BOUND_MS);
	print_message("ugpu-sim SIGKILLed: detected in %" PRIu64 " ms, removed in %" PRIu64
		      " ms, %" PRIu64 " BOs lost (%" PRIu64 " bytes)\n",
		      detect, fx_now_ms() - t0, info.bos_lost, info.bytes_lost);
	assert_true(detect < 1000);
	waitpid(c->pid, &st, 0);
	c->pid = -1;

	assert_int_equal(info.kind, UGPU_UNPLUG_SURPRISE);
	assert_int_equal(info.status, -ENODEV);
	assert_int_equal(info.bos_lost, 3);
	assert_int_equal(info.bytes_lost, 3 * MIB);
	assert_int_equal(ugpu_device_unplug(c->dev), -ENODEV);
	assert_int_equal(bo_verify(sys, 2 * MIB, 1), -1);
	assert_int_equal(bo_verify(migrated, MIB, 5), -1);
	assert_int_equal(ugpu_bo_read(vany, 0, &b, 1), -ENODATA);
	assert_int_equal(ugpu_bo_read(vonly, 0, &b, 1), -ENODATA);
	assert_int_equal(ugpu_bo_read(pin, 0, &b, 1), -ENODATA);
	assert_int_equal(ugpu_device_lost_bos(c->dev, NULL, 0, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(ugpu_bo_migrate(migrated, V), -ENODEV);
	assert_int_equal(ugpu_bo_migrate(sys, V), -EINVAL); /* never allowed */
	assert_int_equal(ugpu_device_suspend(c->dev), -ENODEV);
	{
		struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = MIB, .placements = { V } };
		struct ugpu_bo *bo;

		assert_int_equal(ugpu_bo_create(c->dev, &o, &bo), -ENODEV);
	}
	ugpu_bo_put(sys);
	ugpu_bo_put(vany);
	ugpu_bo_put(vonly);
	ugpu_bo_put(pin);
	ugpu_bo_put(migrated);
}

static void test_ugpuctl_request(void **state)
{
	struct child *c = *state;
	const char *bd = getenv("UGPU_BUILD_DIR");
	struct ugpu_bo *a, *pin;
	struct ugpu_unplug_info info;
	char cmd[1024];
	void *p;

	if (!bd) {
		print_message("UGPU_BUILD_DIR unset: ugpuctl not found, request sent by the API\n");
		skip();
	}
	snprintf(cmd, sizeof(cmd), "%s/ugpuctl", bd);
	if (access(cmd, X_OK)) {
		print_message("%s not built\n", cmd);
		skip();
	}
	a = bo_new(c->dev, 4 * MIB, UGPU_BO_CPU_ACCESS, V, N, "a");
	pin = bo_new(c->dev, MIB, UGPU_BO_PINNED, V, N, "pin");
	assert_true(a && pin);
	assert_int_equal(ugpu_bo_map(a, &p), 0);
	pat_fill(p, 4 * MIB, 11);
	assert_int_equal(bo_fill(pin, MIB, 12), 0);
	snprintf(cmd, sizeof(cmd), "%s/ugpuctl unplug request --control %s", bd, c->ctl);
	assert_int_equal(system(cmd), 0);
	info = fx_wait_removed(c->dev, BOUND_MS);
	assert_int_equal(info.kind, UGPU_UNPLUG_REQUEST);
	assert_int_equal(info.status, 0);
	assert_int_equal(pat_check(p, 4 * MIB, 11), -1);
	assert_int_equal(bo_verify(pin, MIB, 12), -1);
	assert_int_equal(bo_where(a), S);
	ugpu_bo_put(a);
	ugpu_bo_put(pin);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_sigkill, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ugpuctl_request, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
