/* SPDX-License-Identifier: MIT */
/*
 * ugpu-bench rpm [N mappings] [rounds] [wake latency us]: runtime-PM costs
 * on the reference device (in process).
 *   release_ms    the suspend hook invalidating N mapped VRAM ranges (the
 *                 step that must precede D3 / the kernel's low-power entry)
 *   touch_*_us    a CPU read of a released range while the device sleeps,
 *                 until the data is there: uffd message, fault_begin
 *                 (rpm_get wakes the device), resolve, mmap, wake
 *   uffd_p50_us   the raw userfaultfd round trip, from `ugpu-bench uffd`'s
 *                 raw case run in a child process in the same run
 *   wake_us       the device's own D3hot -> D0 time (median over the rounds,
 *                 as runtime PM measured it)
 * Target: touch_p50_us <= wake_us + 3 * uffd_p50_us.
 * One JSON object per line.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ugpu/rpm.h>

#include "mm/cpu_map.h"
#include "src/device.h"
#include "src/rpm.h"
#include "tools/ugpu-bench/bench.h"
#include "tools/ugpu-sim/sim.h"

#define MAP_BYTES (64u * 1024)

static uint64_t rpm_bench_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * The raw round trip, measured by bench_uffd (tools/ugpu-bench/bench_uffd.c)
 * rather than a second copy of it: run it in a child before any thread
 * exists and read its "raw_missing_copy_4k" p50 from the pipe.
 */
static int raw_uffd_p50(double *p50_us)
{
	char buf[4096], *p;
	size_t got = 0;
	ssize_t n;
	int fds[2], status;
	pid_t pid;

	if (pipe(fds))
		return -errno;
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		char *args[] = { "uffd", "64", NULL };

		close(fds[0]);
		dup2(fds[1], STDOUT_FILENO);
		status = bench_uffd(2, args);
		fflush(stdout); /* _exit() does not flush the pipe's buffer */
		_exit(status ? 1 : 0);
	}
	close(fds[1]);
	while (got < sizeof(buf) - 1 && (n = read(fds[0], buf + got, sizeof(buf) - 1 - got)) > 0)
		got += (size_t)n;
	close(fds[0]);
	buf[got] = 0;
	waitpid(pid, &status, 0);
	p = strstr(buf, "\"raw_missing_copy_4k\"");
	if (!p || !(p = strstr(p, "\"p50_us\":")) || sscanf(p + 9, "%lf", p50_us) != 1)
		return -EIO;
	return 0;
}

struct rb_map {
	struct ugpu_device *dev;
	struct cpu_map *map;
	volatile uint32_t *addr;
	int fd;
	uint64_t fd_off;
};

struct rb {
	struct rb_map *maps;
	size_t n;
	uint64_t release_ns;
	int release_err;
};

static int rb_resolve(void *owner, uint64_t offset, struct cpu_map_extent *ext)
{
	struct rb_map *m = owner;

	ext->fd = m->fd;
	ext->fd_offset = m->fd_off + offset;
	ext->len = MAP_BYTES - offset;
	return 0;
}

/* What the BO layer does: a fault on a VRAM object holds the device awake. */
static int rb_fault_begin(void *owner)
{
	struct rb_map *m = owner;

	return rpm_get(m->dev->rpm);
}

static void rb_fault_end(void *owner)
{
	struct rb_map *m = owner;

	rpm_put(m->dev->rpm);
}

static const struct cpu_map_owner_ops rb_map_ops = {
	.resolve = rb_resolve,
	.fault_begin = rb_fault_begin,
	.fault_end = rb_fault_end,
};

static int rb_suspend(void *arg, enum ugpu_power_state target)
{
	struct rb *b = arg;
	uint64_t t0 = rpm_bench_ns();
	size_t i;
	int ret;

	(void)target;
	for (i = 0; i < b->n; i++) {
		ret = cpu_map_invalidate(b->maps[i].map);
		if (ret) {
			b->release_err = ret;
			return ret;
		}
	}
	b->release_ns = rpm_bench_ns() - t0;
	return 0;
}

static const struct rpm_hook_ops rb_hook_ops = { .name = "bench", .suspend = rb_suspend };

int bench_rpm(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 0) : 256;
	unsigned int rounds = argc > 2 ? (unsigned int)strtoul(argv[2], NULL, 0) : 200;
	unsigned int wake_lat = argc > 3 ? (unsigned int)strtoul(argv[3], NULL, 0) : 100;
	struct ugpu_context_opts copts = { .size = sizeof(copts), .log_level = UGPU_LOG_ERROR };
	struct ugpu_context *ctx = NULL;
	struct ugpu_device *dev = NULL;
	struct cpu_map_mgr *mgr = NULL;
	struct sim *sim = NULL;
	struct rpm_hook *hook = NULL;
	struct rb b = { 0 };
	struct sim_opts so;
	uint64_t *touch = NULL, *wake = NULL, *rel = NULL;
	double uffd_p50 = 0;
	char uri[300];
	size_t i;
	unsigned int r;
	int fd, ret = 1;
	uint64_t fd_off;

	if (n < 1 || n > 4096 || rounds < 1 || rounds > 100000) {
		fprintf(stderr, "usage: ugpu-bench rpm [N mappings 1..4096] [rounds] [wake us]\n");
		return 1;
	}
	if (raw_uffd_p50(&uffd_p50)) {
		fprintf(stderr, "bench rpm: the raw userfaultfd round trip could not be measured\n");
		return 1;
	}
	touch = calloc(rounds, sizeof(*touch));
	wake = calloc(rounds, sizeof(*wake));
	rel = calloc(rounds, sizeof(*rel));
	b.maps = calloc(n, sizeof(*b.maps));
	b.n = n;
	if (!touch || !wake || !rel || !b.maps)
		goto out;

	sim_opts_init(&so);
	so.vram_size = 256u << 20;
	so.wake_latency_us = wake_lat;
	if (sim_start(&so, &sim) || ugpu_context_create(&copts, &ctx))
		goto out;
	snprintf(uri, sizeof(uri), "vfio-user:%s", sim_socket_path(sim, 0));
	if (ugpu_device_open(ctx, uri, &dev))
		goto out;
	if (dev->vdev->ops->region_fd(dev->vdev, dev->profile->vram_region, &fd, &fd_off) ||
	    cpu_map_mgr_create(ctx, NULL, &mgr)) {
		fprintf(stderr, "bench rpm: no VRAM fd or no userfaultfd\n");
		goto out;
	}
	for (i = 0; i < n; i++) {
		struct rb_map *m = &b.maps[i];
		void *addr;

		*m = (struct rb_map){ .dev = dev, .fd = fd, .fd_off = fd_off + i * MAP_BYTES };
		if (cpu_map_create(mgr, &rb_map_ops, m, MAP_BYTES, "bench-rpm", &m->map, &addr))
			goto out_maps;
		m->addr = addr;
		m->addr[0] = (uint32_t)(0xa5000000u + i); /* faults it in */
	}
	if (rpm_hook_register(dev->rpm, &rb_hook_ops, &b, &hook))
		goto out_maps;
	rpm_set_autosuspend_delay(dev->rpm, -1); /* suspends are forced below */
	/* D3hot: the ranges here are raw VRAM, not BOs the D3cold hook saves. */
	rpm_set_d3cold_threshold(dev->rpm, 0);
	if (rpm_allow(dev->rpm, true))
		goto out_maps;

	ret = 0;
	for (r = 0; r < rounds && !ret; r++) {
		struct ugpu_rpm_stats st;
		size_t k = r % n;
		uint64_t t0;

		/* Map everything again so each suspend releases N live mappings. */
		for (i = 0; i < n; i++)
			if (b.maps[i].addr[0] != (uint32_t)(0xa5000000u + i))
				ret = 1;
		if (rpm_suspend_now(dev->rpm)) {
			fprintf(stderr, "bench rpm: suspend failed (%s)\n",
				ugpu_strerror(b.release_err));
			ret = 1;
			break;
		}
		rel[r] = b.release_ns;
		t0 = rpm_bench_ns();
		if (b.maps[k].addr[0] != (uint32_t)(0xa5000000u + k))
			ret = 1;
		touch[r] = rpm_bench_ns() - t0;
		rpm_stats(dev->rpm, &st);
		wake[r] = st.wake_last_us;
		if (st.state != UGPU_RPM_ACTIVE)
			ret = 1;
	}
	if (ret) {
		fprintf(stderr, "bench rpm: wrong data after a wake, or the device did not wake\n");
		goto out_maps;
	}
	qsort(touch, rounds, sizeof(*touch), cmp_u64);
	qsort(wake, rounds, sizeof(*wake), cmp_u64);
	qsort(rel, rounds, sizeof(*rel), cmp_u64);
	{
		double p50 = touch[rounds / 2] / 1000.0, w = (double)wake[rounds / 2];

		printf("{\"bench\":\"rpm\",\"mappings\":%zu,\"rounds\":%u,\"release_ms\":%.3f,"
		       "\"touch_p50_us\":%.1f,\"touch_p99_us\":%.1f,\"uffd_p50_us\":%.2f,"
		       "\"wake_us\":%.0f,\"wake_model_us\":%u,\"target_us\":%.1f,\"ok\":%s}\n",
		       n, rounds, rel[rounds / 2] / 1e6, p50, touch[rounds * 99 / 100] / 1000.0,
		       uffd_p50, w, wake_lat, w + 3 * uffd_p50,
		       p50 <= w + 3 * uffd_p50 ? "true" : "false");
	}
out_maps:
	if (dev && dev->rpm) {
		rpm_allow(dev->rpm, false);
		rpm_hook_unregister(dev->rpm, hook);
	}
	for (i = 0; b.maps && i < n; i++)
		if (b.maps[i].map)
			cpu_map_destroy(b.maps[i].map);
	cpu_map_mgr_destroy(mgr);
out:
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	sim_stop(sim);
	free(touch);
	free(wake);
	free(rel);
	free(b.maps);
	return ret;
}
