/* SPDX-License-Identifier: MIT */
/*
 * ugpuctl unplug request|surprise --control PATH [--dev N]
 *
 * Triggers a removal of a reference device through its control socket
 * (ugpu-sim --control PATH; docs/reference-device.md "Removal and
 * control"): `request` raises the REQ irq (repeated until the client lets
 * go, as the kernel does), `surprise` makes the device stop answering at
 * once. The driver that owns the device reacts (docs/unplug.md); this
 * command only pulls the plug. On a real machine the same two events are
 * `echo 1 > /sys/bus/pci/devices/BDF/remove` (the kernel sends REQ) and a
 * physical surprise removal.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "tools/ugpuctl/ugpuctl.h"

#define CONTROL_TIMEOUT_MS 5000

static long ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int ugpuctl_control_call(const char *path, const char *line, char *reply, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t got = 0, n = strlen(line);
	long deadline;
	int fd, ret;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "ugpuctl: control socket path too long: %s\n", path);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		ret = -errno;
		fprintf(stderr, "ugpuctl: cannot connect to control socket %s: %s\n", path,
			strerror(-ret));
		goto out;
	}
	if (send(fd, line, n, MSG_NOSIGNAL) != (ssize_t)n || send(fd, "\n", 1, MSG_NOSIGNAL) != 1) {
		ret = -errno;
		fprintf(stderr, "ugpuctl: cannot send to %s: %s\n", path, strerror(-ret));
		goto out;
	}
	deadline = ms_now() + CONTROL_TIMEOUT_MS;
	while (got + 1 < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		long left = deadline - ms_now();
		ssize_t r;

		if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
			fprintf(stderr, "ugpuctl: %s did not answer within %d ms\n", path,
				CONTROL_TIMEOUT_MS);
			ret = -ETIMEDOUT;
			goto out;
		}
		r = read(fd, reply + got, len - 1 - got);
		if (r <= 0) {
			fprintf(stderr, "ugpuctl: %s closed the connection without a reply\n", path);
			ret = -EPROTO;
			goto out;
		}
		got += (size_t)r;
		reply[got] = '\0';
		if (strchr(reply, '\n'))
			break;
	}
	reply[strcspn(reply, "\n")] = '\0';
	ret = strncmp(reply, "ok", 2) ? -EIO : 0;
out:
	close(fd);
	return ret;
}

static const char *control;
static uint64_t devn;

static const struct cli_opt unplug_opts[] = {
	{ .name = "control", .kind = CLI_STR, .dst = &control, .arg = "PATH",
	  .help = "the device's control socket (ugpu-sim --control PATH); required" },
	{ .name = "dev", .kind = CLI_UINT, .dst = &devn, .arg = "N",
	  .help = "which device of a multi-device ugpu-sim", .max = 15 },
	{ 0 },
};

static const struct cli_cmd unplug_cli = {
	.prog = "ugpuctl unplug",
	.args = "request|surprise",
	.summary = "remove a reference device (REQ irq or surprise) through its control socket",
	.opts = unplug_opts,
	.min_pos = 1,
	.max_pos = 1,
};

static int run_unplug(int argc, char **argv)
{
	char line[64], reply[512], *kind;
	unsigned npos;
	int ret = cli_parse(&unplug_cli, argc, argv, &kind, &npos);

	if (ret != CLI_CONTINUE)
		return ret;
	if (strcmp(kind, "request") && strcmp(kind, "surprise"))
		return cli_usage_error(unplug_cli.prog, "'%s' is neither request nor surprise", kind);
	if (!control)
		return cli_usage_error(unplug_cli.prog, "--control PATH is required");
	snprintf(line, sizeof(line), "dev %llu unplug %s", (unsigned long long)devn, kind);
	ret = ugpuctl_control_call(control, line, reply, sizeof(reply));
	if (ret == -EIO) {
		fprintf(stderr, "ugpuctl unplug %s: the device refused: %s\n", kind, reply);
		return 1;
	}
	if (ret)
		return 1;
	printf("unplug %s: %s\n", kind, reply);
	return 0;
}

const struct ugpuctl_cmd ugpuctl_cmd_unplug = { .cli = &unplug_cli, .name = "unplug",
						.run = run_unplug };
