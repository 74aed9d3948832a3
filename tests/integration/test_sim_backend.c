/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim as a vfio-user backend program (qemu docs/interop/vfio-user.rst,
 * "Backend Program Conventions"): --socket-path=PATH, --fd=N (a connected
 * socket; the program ends when that client leaves), SIGTERM honoured,
 * max_dma_maps kept within what clients accept. Runs the real binary
 * ($UGPU_SIM, set by ctest).
 */
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "vfio/transport.h"
#include "vfio/vfio_user.h"

#define BOUND_MS 10000

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *sim_bin(void)
{
	const char *bin = getenv("UGPU_SIM");

	if (!bin || !*bin || access(bin, X_OK)) {
		fprintf(stderr, "test_sim_backend: UGPU_SIM does not name the ugpu-sim binary\n");
		exit(77);
	}
	return bin;
}

struct child {
	pid_t pid;
	int out; /* its stdout and stderr */
	char text[2048];
};

/* Run ugpu-sim with @argv (NULL-terminated, argv[0] filled in here); @keep_fd
 * is passed on as fd 3 when >= 0. */
static void spawn(struct child *c, const char **argv, int keep_fd)
{
	int pfd[2];

	memset(c, 0, sizeof(*c));
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	argv[0] = sim_bin();
	c->pid = fork();
	assert_true(c->pid >= 0);
	if (c->pid == 0) {
		dup2(pfd[1], 1);
		dup2(pfd[1], 2);
		if (keep_fd >= 0)
			dup2(keep_fd, 3); /* dup2 clears CLOEXEC on the copy */
		execv(argv[0], (char **)argv);
		_exit(127);
	}
	close(pfd[1]);
	c->out = pfd[0];
}

/* Collect output until @needle shows or the child's output ends. */
static bool wait_text(struct child *c, const char *needle)
{
	size_t got = strlen(c->text);
	uint64_t t0 = now_ms();

	while (!strstr(c->text, needle) && now_ms() - t0 < BOUND_MS) {
		struct pollfd p = { .fd = c->out, .events = POLLIN };
		ssize_t r;

		if (poll(&p, 1, 100) <= 0)
			continue;
		r = read(c->out, c->text + got, sizeof(c->text) - 1 - got);
		if (r <= 0)
			break;
		got += (size_t)r;
		c->text[got] = '\0';
	}
	return strstr(c->text, needle) != NULL;
}

/* Wait (bounded) for the child to exit; returns its status or -1. */
static int reap(struct child *c)
{
	uint64_t t0 = now_ms();
	int st;

	while (now_ms() - t0 < BOUND_MS) {
		pid_t r = waitpid(c->pid, &st, WNOHANG);

		if (r == c->pid) {
			close(c->out);
			return st;
		}
		usleep(10000);
	}
	kill(c->pid, SIGKILL);
	waitpid(c->pid, &st, 0);
	close(c->out);
	return -1;
}

/* The driver's transport sees the reference device behind @dev. */
static void check_device(struct vfio_dev *dev)
{
	struct vfio_dev_region_info ri;
	uint32_t id;

	assert_int_equal(dev->ops->region_info(dev, VFIO_REGION_BAR2, &ri), 0);
	assert_int_equal(ri.size, 16u << 20);
	assert_int_equal(vfio_read32(dev, VFIO_REGION_CONFIG, 0, &id), 0);
	assert_int_equal(id, 0x00015547);
}

static void test_socket_path(void **state)
{
	char path[108], arg[128];
	const char *argv[] = { NULL, arg, "--vram", "16M", NULL };
	struct vfio_dev *dev = NULL;
	struct child c;
	int st;

	(void)state;
	snprintf(path, sizeof(path), "/tmp/ugpu-test-backend-%d.sock", (int)getpid());
	snprintf(arg, sizeof(arg), "--socket-path=%s", path);
	spawn(&c, argv, -1);
	assert_true(wait_text(&c, "listening on"));
	assert_int_equal(vfio_user_open(NULL, path, &dev), 0);
	check_device(dev);
	dev->ops->close(dev);
	/* SIGTERM: a clean stop that removes the socket. */
	kill(c.pid, SIGTERM);
	st = reap(&c);
	assert_true(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_int_not_equal(access(path, F_OK), 0);
}

static void test_fd(void **state)
{
	const char *argv[] = { NULL, "--fd=3", "--vram", "16M", NULL };
	struct vfio_dev *dev = NULL;
	struct child c;
	int sv[2], st;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	spawn(&c, argv, sv[1]);
	close(sv[1]);
	assert_true(wait_text(&c, "serving fd 3"));
	assert_int_equal(vfio_user_open_fd(NULL, sv[0], "backend-fd", NULL, &dev), 0);
	check_device(dev);
	/* Its one client leaving ends the program. */
	dev->ops->close(dev);
	st = reap(&c);
	assert_true(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_bad_arguments(void **state)
{
	const char *too_many[] = { NULL, "--fd=3", "--max-dma-maps", "65536", NULL };
	const char *both[] = { NULL, "--fd=3", "--socket-path=/tmp/x", NULL };
	const char *not_socket[] = { NULL, "--fd=1", NULL }; /* its stdout: our pipe */
	struct child c;
	int st;

	(void)state;
	spawn(&c, too_many, -1);
	assert_true(wait_text(&c, "at most 65535"));
	st = reap(&c);
	assert_true(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) != 0);
	spawn(&c, both, -1);
	assert_true(wait_text(&c, "one of --socket-path and --fd"));
	st = reap(&c);
	assert_true(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 2);
	spawn(&c, not_socket, -1);
	assert_true(wait_text(&c, "not a connected stream socket"));
	st = reap(&c);
	assert_true(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) != 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_socket_path),
		cmocka_unit_test(test_fd),
		cmocka_unit_test(test_bad_arguments),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
