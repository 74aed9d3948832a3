/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim: the reference device as a standalone vfio-user server.
 *
 *   ugpu-sim --socket-path=PATH | --fd=N [--vram SIZE] [--control PATH]
 *            [--devices N] [--wake-latency-us N] [--max-dma-maps N]
 *            [--req-interval-ms N] [--slow-link A-B]... [--exec-queues N]
 *            [--version-minor N]
 *
 * ugpu-sim --help gives each option's range and default (tools/common/cli.h
 * parses them).
 *
 * The vfio-user backend-program conventions (qemu docs/interop/vfio-user.rst):
 * --socket-path=PATH listens on a UNIX socket (--socket PATH is the older
 * spelling); --fd=N serves the connected stream socket N instead and exits
 * when that client leaves. It never daemonizes and honours SIGTERM.
 *
 * Prints one line when it serves (every socket listens, or the fd is
 * adopted), serves until SIGTERM/SIGINT, then stops cleanly and unlinks its
 * sockets.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim.h"
#include "tools/common/cli.h"

#define MAX_WAKE_LATENCY_US 10000000u /* 10 s */
#define MAX_REQ_INTERVAL_MS 3600000u /* an hour */

/* The command line, parsed into these, then into struct sim_opts. */
static const char *socket_path, *control_path;
static uint64_t vram = 256ull << 20, devices = 1, wake_latency_us, max_dma_maps = 65535,
		req_interval_ms = 10000, exec_queues = 4, version_minor = 4;
static int client_fd = -1;
static uint32_t slow_links[SIM_MAX_DEVICES];

static int parse_fd(const char *val, void *dst)
{
	uint64_t v;

	if (cli_strtou64(val, &v) || v > 0x7fffffff)
		return -EINVAL;
	*(int *)dst = (int)v;
	return 0;
}

static int parse_link(const char *val, void *dst)
{
	uint32_t *links = dst;
	char a_s[16], b_s[16];
	uint64_t a, b;
	int n = 0;

	if (sscanf(val, "%15[0-9]-%15[0-9]%n", a_s, b_s, &n) != 2 || val[n] || cli_strtou64(a_s, &a) ||
	    cli_strtou64(b_s, &b) || a >= SIM_MAX_DEVICES || b >= SIM_MAX_DEVICES || a == b)
		return -EINVAL;
	links[a] |= 1u << b;
	return 0;
}

static const struct cli_opt opts_table[] = {
	{ .name = "socket-path", .kind = CLI_STR, .dst = &socket_path, .arg = "PATH",
	  .help = "listen on this UNIX socket (device i of N: PATH.i)" },
	{ .name = "socket", .kind = CLI_STR, .dst = &socket_path, .arg = "PATH",
	  .help = "the older spelling of --socket-path" },
	{ .name = "fd", .kind = CLI_CALL, .dst = &client_fd, .arg = "N", .call = parse_fd,
	  .help = "serve this connected stream socket, exit when its client leaves",
	  .range = "a file descriptor, 0..2147483647" },
	{ .name = "vram", .kind = CLI_SIZE, .dst = &vram, .arg = "SIZE", .help = "VRAM per device",
	  .min = 1ull << 20, .max = 1ull << 40, .unit = 1, .pow2 = true },
	{ .name = "control", .kind = CLI_STR, .dst = &control_path, .arg = "PATH",
	  .help = "control socket (removal, fault injection; docs/reference-device.md)" },
	{ .name = "devices", .kind = CLI_UINT, .dst = &devices, .arg = "N",
	  .help = "devices on one fabric", .min = 1, .max = SIM_MAX_DEVICES },
	{ .name = "wake-latency-us", .kind = CLI_UINT, .dst = &wake_latency_us, .arg = "US",
	  .help = "D3 -> D0 latency", .max = MAX_WAKE_LATENCY_US },
	{ .name = "max-dma-maps", .kind = CLI_UINT, .dst = &max_dma_maps, .arg = "N",
	  .help = "DMA mappings a client may hold", .min = 1, .max = 65535 },
	{ .name = "req-interval-ms", .kind = CLI_UINT, .dst = &req_interval_ms, .arg = "MS",
	  .help = "how often a removal request repeats", .min = 1, .max = MAX_REQ_INTERVAL_MS },
	{ .name = "slow-link", .kind = CLI_CALL, .dst = slow_links, .arg = "A-B", .call = parse_link,
	  .help = "the fabric link between devices A and B is slow; repeatable",
	  .range = "A-B, device numbers 0..15, A != B" },
	{ .name = "exec-queues", .kind = CLI_UINT, .dst = &exec_queues, .arg = "N",
	  .help = "exec queues per device", .min = 1, .max = SIM_MAX_EXEC_QUEUES },
	{ .name = "version-minor", .kind = CLI_UINT, .dst = &version_minor, .arg = "N",
	  .help = "the VERSION minor modelled: 4, 3 for a 1.3 device (no COPY_LIST), 2 for a 1.2 device (no COPY_SUM either), 1 for a 1.1 device (no NO_ATOMIC bit either)",
	  .min = 1, .max = 4 },
	{ 0 },
};

static const struct cli_cmd sim_cli = {
	.prog = "ugpu-sim",
	.args = "",
	.summary = "the reference device, served over vfio-user",
	.about = "Give one of --socket-path and --fd. Prints one line when it serves, serves until\n"
		 "SIGTERM/SIGINT, then stops and unlinks its sockets. Sizes take K, M, G, T\n"
		 "(powers of 1024); a bare number is bytes.",
	.opts = opts_table,
};

int main(int argc, char **argv)
{
	struct sim_opts opts;
	struct sim *sim;
	sigset_t set;
	int ret = cli_parse(&sim_cli, argc, argv, NULL, NULL);

	if (ret != CLI_CONTINUE)
		return ret;
	if (!socket_path == (client_fd < 0))
		return cli_usage_error(sim_cli.prog, "give one of --socket-path and --fd");
	if (client_fd >= 0 && devices != 1)
		return cli_usage_error(sim_cli.prog, "--fd serves one device: --devices must be 1");
	sim_opts_init(&opts);
	opts.socket_path = socket_path;
	opts.client_fd = client_fd;
	opts.vram_size = vram;
	opts.control_path = control_path;
	opts.devices = (unsigned)devices;
	opts.wake_latency_us = (unsigned)wake_latency_us;
	opts.max_dma_maps = (unsigned)max_dma_maps;
	opts.req_interval_ms = (unsigned)req_interval_ms;
	opts.exec_queues = (unsigned)exec_queues;
	opts.version_minor = (unsigned)version_minor;
	memcpy(opts.slow_links, slow_links, sizeof(slow_links));

	/* Block the stop signals before any thread exists so only sigtimedwait
	 * below sees them; the device threads inherit the mask. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	ret = sim_start(&opts, &sim);
	if (ret) {
		fprintf(stderr, "ugpu-sim: cannot start: %s\n", strerror(-ret));
		return 1;
	}
	if (opts.client_fd >= 0) {
		printf("ugpu-sim: serving fd %d (vram %" PRIu64 " MiB)\n", opts.client_fd,
		       opts.vram_size >> 20);
	} else if (sim_num_devices(sim) == 1) {
		printf("ugpu-sim: listening on %s (vram %" PRIu64 " MiB)\n", sim_socket_path(sim, 0),
		       opts.vram_size >> 20);
	} else {
		printf("ugpu-sim: listening on");
		for (unsigned i = 0; i < sim_num_devices(sim); i++)
			printf(" %s", sim_socket_path(sim, i));
		printf(" (vram %" PRIu64 " MiB)\n", opts.vram_size >> 20);
	}
	fflush(stdout);

	for (;;) {
		struct timespec ts = { .tv_nsec = 100000000 };
		struct sim_state st;
		int sig = sigtimedwait(&set, NULL, &ts);

		if (sig == SIGTERM || sig == SIGINT)
			break;
		/* --fd: the one client we were given is gone, nobody can follow. */
		if (opts.client_fd >= 0 && sim_state(sim, 0, &st) == 0 && !st.client)
			break;
	}
	sim_stop(sim);
	return 0;
}
