/* SPDX-License-Identifier: MIT */
/*
 * ugpu-bench rpm [N mappings] [rounds] [wake latency us] [placement]:
 * runtime-PM costs on the reference device (in process).
 *   release_ms    the suspend hook releasing N mapped VRAM ranges (the step
 *                 that must precede D3 / the kernel's low-power entry), median
 *   touch_*_us    a CPU read of a released range while the device sleeps,
 *                 until the data is there: uffd message, fault_begin
 *                 (rpm_get wakes the device), the range given back, wake
 *   uffd_p50_us   the raw userfaultfd round trip (a bare missing fault
 *                 answered by UFFDIO_COPY, bench.h), measured in this process
 *                 with the same CPU placement in two ways, the smaller p50 of:
 *                 uffd_interleaved_p50_us  one sample right before each touch
 *                                          (same moment, same idle history)
 *                 uffd_loop_p50_us         64 faults back to back, as
 *                                          `ugpu-bench uffd` measures it
 *   wake_us       the device's own D3hot -> D0 time (median over the rounds,
 *                 as runtime PM measured it)
 * Target: touch_p50_us <= wake_us + 3 * uffd_p50_us.
 *
 * Where threads run decides both latencies on a VM: a wake-up that crosses
 * vCPUs costs ~15-20 us here, one on the same vCPU ~3 us. So each placement
 * is measured with its own baseline (docs/runtime-pm.md):
 *   one-cpu   every thread (faulting thread, cpu_map handler, device model,
 *             vfio-user reader, raw handler) on one CPU
 *   two-cpu   the faulting thread on one CPU, every other thread on another
 *   free      no affinity: wherever the scheduler puts them
 * Default: all three. One JSON object per line.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ugpu/rpm.h>

#include "mm/cpu_map.h"
#include "src/device.h"
#include "src/rpm.h"
#include "tools/ugpu-bench/bench.h"
#include "tools/ugpu-sim/sim.h"

#define MAP_BYTES (64u * 1024)
#define RB_LOOP 64 /* back-to-back raw faults */



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

/* What mm/bo_rpm.c's hook does for every VRAM object a fault mapped. */
static int rb_suspend(void *arg, enum ugpu_power_state target)
{
	struct rb *b = arg;
	uint64_t t0 = bench_ns();
	size_t i;
	int ret;

	(void)target;
	for (i = 0; i < b->n; i++) {
		ret = cpu_map_release(b->maps[i].map);
		if (ret) {
			b->release_err = ret;
			return ret;
		}
	}
	b->release_ns = bench_ns() - t0;
	return 0;
}

static const struct rpm_hook_ops rb_hook_ops = { .name = "bench", .suspend = rb_suspend };

struct rb_cfg {
	size_t n;
	unsigned int rounds, wake_lat;
	struct bench_cpus cpus; /* a: the faulting thread; b: the others (two-cpu) */
};

struct rb_result {
	double release_ms, touch_p50, touch_p99, uffd_p50, uffd_loop_p50, wake;
};

/*
 * One placement, from a fresh reference device: threads created here inherit
 * the affinity set before they are created, so the device model, the
 * vfio-user reader, the cpu_map handler, the rpm thread and the raw handler
 * run where @pl says; the faulting thread (this one) is placed last.
 */
static int rb_run(const struct rb_cfg *c, enum bench_placement pl, struct rb_result *res)
{
	struct ugpu_context_opts copts = { .size = sizeof(copts), .log_level = UGPU_LOG_ERROR };
	struct ugpu_context *ctx = NULL;
	struct ugpu_device *dev = NULL;
	struct cpu_map_mgr *mgr = NULL;
	struct uffd_raw *raw = NULL;
	struct sim *sim = NULL;
	struct rpm_hook *hook = NULL;
	struct rb b = { .n = c->n };
	struct sim_opts so;
	uint64_t *touch = NULL, *wake = NULL, *rel = NULL, *rawl = NULL, loopl[RB_LOOP];
	char uri[300];
	size_t i;
	unsigned int r;
	int fd, ret = 1;
	uint64_t fd_off;

	if (bench_place_others(&c->cpus, pl)) {
		fprintf(stderr, "bench rpm: cannot set the CPU affinity\n");
		goto out_affinity;
	}
	touch = calloc(c->rounds, sizeof(*touch));
	wake = calloc(c->rounds, sizeof(*wake));
	rel = calloc(c->rounds, sizeof(*rel));
	rawl = calloc(c->rounds, sizeof(*rawl));
	b.maps = calloc(c->n, sizeof(*b.maps));
	if (!touch || !wake || !rel || !rawl || !b.maps)
		goto out;

	sim_opts_init(&so);
	so.vram_size = 256u << 20;
	so.wake_latency_us = c->wake_lat;
	if (sim_start(&so, &sim) || ugpu_context_create(&copts, &ctx))
		goto out;
	snprintf(uri, sizeof(uri), "vfio-user:%s", sim_socket_path(sim, 0));
	if (ugpu_device_open(ctx, uri, &dev))
		goto out;
	if (dev->vdev->ops->region_fd(dev->vdev, dev->profile->vram_region, &fd, &fd_off) ||
	    cpu_map_mgr_create(ctx, NULL, &mgr) ||
	    uffd_raw_create(c->rounds + RB_LOOP, &raw)) {
		fprintf(stderr, "bench rpm: no VRAM fd or no userfaultfd\n");
		goto out;
	}
	if (bench_place_self(&c->cpus, pl))
		goto out;
	/* The baseline back to back too, as `ugpu-bench uffd` measures it. */
	for (i = 0; i < RB_LOOP; i++)
		if (uffd_raw_touch(raw, &loopl[i]))
			goto out;
	for (i = 0; i < c->n; i++) {
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
	for (r = 0; r < c->rounds && !ret; r++) {
		struct ugpu_rpm_stats st;
		size_t k = r % c->n;
		uint64_t t0;

		/* Map everything again so each suspend releases N live mappings. */
		for (i = 0; i < c->n; i++)
			if (b.maps[i].addr[0] != (uint32_t)(0xa5000000u + i))
				ret = 1;
		if (rpm_suspend_now(dev->rpm)) {
			fprintf(stderr, "bench rpm: suspend failed (%s)\n",
				ugpu_strerror(b.release_err));
			ret = 1;
			break;
		}
		rel[r] = b.release_ns;
		if (uffd_raw_touch(raw, &rawl[r]))
			ret = 1;
		t0 = bench_ns();
		if (b.maps[k].addr[0] != (uint32_t)(0xa5000000u + k))
			ret = 1;
		touch[r] = bench_ns() - t0;
		rpm_stats(dev->rpm, &st);
		wake[r] = st.wake_last_us;
		if (st.state != UGPU_RPM_ACTIVE)
			ret = 1;
	}
	if (ret) {
		fprintf(stderr, "bench rpm: wrong data after a wake, or the device did not wake\n");
		goto out_maps;
	}
	qsort(touch, c->rounds, sizeof(*touch), bench_cmp_u64);
	qsort(wake, c->rounds, sizeof(*wake), bench_cmp_u64);
	qsort(rel, c->rounds, sizeof(*rel), bench_cmp_u64);
	qsort(rawl, c->rounds, sizeof(*rawl), bench_cmp_u64);
	qsort(loopl, RB_LOOP, sizeof(*loopl), bench_cmp_u64);
	res->release_ms = rel[c->rounds / 2] / 1e6;
	res->touch_p50 = touch[c->rounds / 2] / 1000.0;
	res->touch_p99 = touch[c->rounds * 99 / 100] / 1000.0;
	res->uffd_p50 = rawl[c->rounds / 2] / 1000.0;
	res->uffd_loop_p50 = loopl[RB_LOOP / 2] / 1000.0;
	res->wake = (double)wake[c->rounds / 2];
out_maps:
	if (dev && dev->rpm) {
		rpm_allow(dev->rpm, false);
		rpm_hook_unregister(dev->rpm, hook);
	}
	for (i = 0; b.maps && i < c->n; i++)
		if (b.maps[i].map)
			cpu_map_destroy(b.maps[i].map);
out:
	uffd_raw_destroy(raw);
	cpu_map_mgr_destroy(mgr);
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	sim_stop(sim);
	free(touch);
	free(wake);
	free(rel);
	free(rawl);
	free(b.maps);
out_affinity:
	bench_place_restore(&c->cpus);
	return ret;
}

int bench_rpm(int argc, char **argv)
{
	const struct cli_cmd cli = {
		.prog = "ugpu-bench rpm", .args = "[N [ROUNDS [WAKE_US [one-cpu|two-cpu|free|all]]]]",
		.summary = "runtime PM: release N mappings, touch-to-data while asleep vs wake + uffd, per CPU placement",
		.about = "N: mappings, 1..4096 (default 256); ROUNDS: 1..100000 (default 200);\n"
			 "WAKE_US: the device's wake latency, 0..10000000 (default 100);\n"
			 "the CPU placement to run (default all)",
		.max_pos = 4 };
	struct rb_cfg c = { 0 };
	uint64_t n = 256, rounds = 200, wake = 100;
	const char *only = "all";
	char *pos[4];
	unsigned npos;
	int p, pick, ret = cli_parse(&cli, argc, argv, pos, &npos);

	if (ret != CLI_CONTINUE)
		return ret;
	ret = 0;
	if ((npos > 0 && cli_uint(cli.prog, "N (mappings)", pos[0], 1, 4096, &n)) ||
	    (npos > 1 && cli_uint(cli.prog, "ROUNDS", pos[1], 1, 100000, &rounds)) ||
	    (npos > 2 && cli_uint(cli.prog, "WAKE_US", pos[2], 0, 10000000, &wake)))
		return CLI_EXIT_USAGE;
	if (npos > 3)
		only = pos[3];
	pick = bench_placement_parse(only);
	if (pick == -EINVAL)
		return cli_usage_error(cli.prog, "unknown placement '%s'; expected one-cpu, two-cpu, free or all",
				       only);
	c.n = (size_t)n;
	c.rounds = (unsigned int)rounds;
	c.wake_lat = (unsigned int)wake;
	if (bench_cpus_init(&c.cpus)) {
		fprintf(stderr, "bench rpm: cannot read the CPU affinity\n");
		return 1;
	}
	for (p = 0; p < BENCH_NPLACEMENTS; p++) {
		struct rb_result res;
		double target, base;
		char cpus[32];

		if (pick >= 0 && pick != p)
			continue;
		if (p == BENCH_TWO_CPU && c.cpus.b < 0) {
			fprintf(stderr, "bench rpm: two-cpu skipped: this process may use one CPU\n");
			continue;
		}
		if (rb_run(&c, p, &res)) {
			ret = 1;
			continue;
		}
		bench_placement_cpus(&c.cpus, p, cpus, sizeof(cpus));
		/* The stricter baseline of the two. */
		base = res.uffd_p50 < res.uffd_loop_p50 ? res.uffd_p50 : res.uffd_loop_p50;
		target = res.wake + 3 * base;
		printf("{\"bench\":\"rpm\",\"placement\":\"%s\",\"cpus\":\"%s\",\"mappings\":%zu,"
		       "\"rounds\":%u,\"release_ms\":%.3f,\"touch_p50_us\":%.1f,\"touch_p99_us\":%.1f,"
		       "\"uffd_p50_us\":%.2f,\"uffd_interleaved_p50_us\":%.2f,"
		       "\"uffd_loop_p50_us\":%.2f,\"wake_us\":%.0f,\"wake_model_us\":%u,\"target_us\":%.1f,"
		       "\"ok\":%s}\n",
		       bench_placement_names[p], cpus, c.n, c.rounds, res.release_ms, res.touch_p50,
		       res.touch_p99, base, res.uffd_p50, res.uffd_loop_p50, res.wake, c.wake_lat, target,
		       res.touch_p50 <= target ? "true" : "false");
		fflush(stdout);
	}
	return ret;
}
