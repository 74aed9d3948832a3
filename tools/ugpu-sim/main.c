/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim: the reference device as a standalone vfio-user server.
 *
 *   ugpu-sim --socket-path=PATH | --fd=N [--vram SIZE] [--control PATH]
 *            [--devices N] [--wake-latency-us N] [--max-dma-maps N]
 *            [--req-interval-ms N] [--slow-link A-B]... [--exec-queues N]
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
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: ugpu-sim --socket-path=PATH | --fd=N [--vram SIZE[K|M|G]] "
		   "[--control PATH] [--devices N]\n"
		   "                [--wake-latency-us N] [--max-dma-maps N (<= 65535)] "
		   "[--req-interval-ms N] [--slow-link A-B]...\n"
		   "                [--exec-queues N (1..64, default 4)]\n");
}

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k':
	case 'K':
		v <<= 10;
		end++;
		break;
	case 'm':
	case 'M':
		v <<= 20;
		end++;
		break;
	case 'g':
	case 'G':
		v <<= 30;
		end++;
		break;
	}
	if (*end == 'i' || *end == 'B')
		end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
	if (*end)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_uint(const char *s, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > 0xffffffffu)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "socket-path", required_argument, NULL, 's' },
		{ "fd", required_argument, NULL, 'f' },
		{ "vram", required_argument, NULL, 'v' },
		{ "control", required_argument, NULL, 'c' },
		{ "devices", required_argument, NULL, 'n' },
		{ "wake-latency-us", required_argument, NULL, 'w' },
		{ "max-dma-maps", required_argument, NULL, 'm' },
		{ "req-interval-ms", required_argument, NULL, 'r' },
		{ "slow-link", required_argument, NULL, 'l' },
		{ "exec-queues", required_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct sim_opts opts;
	struct sim *sim;
	sigset_t set;
	unsigned fdnum;
	int c, ret, li;

	sim_opts_init(&opts);
	while ((c = getopt_long(argc, argv, "", longopts, &li)) != -1) {
		unsigned a, b;
		int bad = 0;

		switch (c) {
		case 's':
			opts.socket_path = optarg;
			break;
		case 'f':
			bad = parse_uint(optarg, &fdnum) || fdnum > 0x7fffffff;
			opts.client_fd = bad ? -1 : (int)fdnum;
			break;
		case 'v':
			bad = parse_size(optarg, &opts.vram_size);
			break;
		case 'c':
			opts.control_path = optarg;
			break;
		case 'n':
			bad = parse_uint(optarg, &opts.devices);
			break;
		case 'w':
			bad = parse_uint(optarg, &opts.wake_latency_us);
			break;
		case 'm':
			bad = parse_uint(optarg, &opts.max_dma_maps);
			break;
		case 'r':
			bad = parse_uint(optarg, &opts.req_interval_ms);
			break;
		case 'q':
			bad = parse_uint(optarg, &opts.exec_queues) || !opts.exec_queues ||
			      opts.exec_queues > SIM_MAX_EXEC_QUEUES;
			break;
		case 'l':
			if (sscanf(optarg, "%u-%u", &a, &b) != 2 || a >= SIM_MAX_DEVICES ||
			    b >= SIM_MAX_DEVICES || a == b) {
				bad = 1;
				break;
			}
			opts.slow_links[a] |= 1u << b;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
		if (bad) {
			fprintf(stderr, "ugpu-sim: bad value for --%s: %s\n", longopts[li].name, optarg);
			return 2;
		}
	}
	if ((!opts.socket_path) == (opts.client_fd < 0) || optind != argc) {
		fprintf(stderr, "ugpu-sim: give one of --socket-path and --fd\n");
		usage(stderr);
		return 2;
	}

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
