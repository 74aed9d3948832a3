/* SPDX-License-Identifier: MIT */
/*
 * ugpu-bench copy: copy-engine throughput against memcpy of the same sizes on
 * the same memory, in the same run.
 *
 * An in-process reference device (ugpu-sim) is driven through the vfio-user
 * client with one sim engine. For each direction (VRAM -> system, system ->
 * VRAM, VRAM -> VRAM) and each size from 4 KiB to 64 MiB, the engine copies
 * the buffer back to back in a plugged batch (one fence on the last copy; the
 * doorbell is rung after the first copies and when the ring fills, so
 * submission overlaps execution, as a driver streams a backup) and memcpy copies the same bytes
 * between the same mappings. One JSON line per case:
 *   {"bench":"copy","dir":"vram-to-sys","bytes":N,"gbps":X,"memcpy_gbps":Y,"ratio":X/Y}
 * gbps is 10^9 bytes per second. The destination is checked byte-exact after
 * each engine run.
 *
 * Options: --vram-mib N (default 256), --max-bytes N (default 64 MiB),
 * --min-ms N (least time per measurement, best of the runs in it; default 100).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <ugpu/ugpu.h>

#include "engines/engine.h"
#include "base/sysmem.h"
#include "vfio/dma.h"
#include "vfio/transport.h"
#include "tools/ugpu-bench/bench.h"
#include "tools/ugpu-sim/sim.h"

#define RING_OFF 0ull
#define RING_SIZE (64u << 10)
#define DATA_OFF (1ull << 20)
#define WAIT_MS 30000

enum dir { VRAM_TO_SYS, SYS_TO_VRAM, VRAM_TO_VRAM };
static const char *const dir_names[] = { "vram-to-sys", "sys-to-vram", "vram-to-vram" };

struct bench {
	struct ugpu_context *ctx;
	struct sim *sim;
	struct vfio_dev *dev;
	struct dma_space dma;
	struct engine *e;
	char *vram;
	uint64_t vram_size;
	struct sysmem sys;
	uint64_t sys_iova;
	uint64_t max;
	int min_ms;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Source and destination of one direction, as engine addresses and as
 * process pointers (for memcpy and checking). */
static void endpoints(struct bench *b, enum dir d, struct engine_addr *dst, struct engine_addr *src,
		      char **dp, char **sp)
{
	uint64_t vsrc = DATA_OFF, vdst = DATA_OFF + b->max;

	switch (d) {
	case VRAM_TO_SYS:
		*src = engine_vram(vsrc), *sp = b->vram + vsrc;
		*dst = engine_iova(b->sys_iova), *dp = b->sys.vaddr;
		break;
	case SYS_TO_VRAM:
		*src = engine_iova(b->sys_iova), *sp = b->sys.vaddr;
		*dst = engine_vram(vdst), *dp = b->vram + vdst;
		break;
	case VRAM_TO_VRAM:
		*src = engine_vram(vsrc), *sp = b->vram + vsrc;
		*dst = engine_vram(vdst), *dp = b->vram + vdst;
		break;
	}
}

/* Repetitions so one measurement moves enough bytes to be timed. */
static unsigned reps_for(uint64_t size)
{
	uint64_t r = (256ull << 20) / size;

	return r < 4 ? 4 : r > 4096 ? 4096 : (unsigned)r;
}

static int engine_run(struct bench *b, struct engine_addr dst, struct engine_addr src,
		      uint64_t size, unsigned reps, double *secs)
{
	uint64_t fence = 0;
	double t0 = now_s();
	unsigned i;
	int ret;

	/* One batch: the doorbell (a vfio-user round trip) is rung when the
	 * ring fills and at the end, not once per copy. */
	engine_plug(b->e);
	for (i = 0; i < reps; i++) {
		ret = engine_copy(b->e, dst, src, size, i + 1 == reps ? &fence : NULL);
		if (ret) {
			engine_unplug(b->e);
			return ret;
		}
		/* Keep the engine fed: start the first copies while the rest
		 * are queued. */
		if (i == 0 || i == 7) {
			ret = engine_unplug(b->e);
			engine_plug(b->e);
			if (ret)
				return ret;
		}
	}
	ret = engine_unplug(b->e);
	if (!ret)
		ret = engine_wait(b->e, fence, WAIT_MS);
	*secs = now_s() - t0;
	return ret;
}

static double memcpy_run(char *dp, const char *sp, uint64_t size, unsigned reps)
{
	double t0 = now_s();
	unsigned i;

	for (i = 0; i < reps; i++) {
		memcpy(dp, sp, size);
		/* Keep the compiler from merging the repeated copies. */
		__asm__ __volatile__("" : : "r"(dp) : "memory");
	}
	return now_s() - t0;
}

/*
 * Engine and memcpy throughput of the same copy, measured alternately in the
 * same time window and each taken as its best run: the figures are what each
 * can do, and a burst of noise on this shared machine (another VM, memory
 * reclaim) hits both sides alike instead of whichever ran during it.
 */
static int measure_pair(struct bench *b, struct engine_addr dst, struct engine_addr src,
			char *dp, const char *sp, uint64_t size, double *gbps, double *mgbps)
{
	unsigned reps = reps_for(size);
	double best = 0, mbest = 0, secs, t_end = now_s() + 2 * b->min_ms / 1000.0;
	int err;

	do {
		err = engine_run(b, dst, src, size, reps, &secs);
		if (err)
			return err;
		if ((double)size * reps / secs > best)
			best = (double)size * reps / secs;
		secs = memcpy_run(dp, sp, size, reps);
		if ((double)size * reps / secs > mbest)
			mbest = (double)size * reps / secs;
	} while (now_s() < t_end);
	*gbps = best / 1e9;
	*mgbps = mbest / 1e9;
	return 0;
}

static void fill_pattern(char *p, uint64_t n, uint64_t salt)
{
	uint64_t i, v;

	for (i = 0; i + 8 <= n; i += 8) {
		v = (i * 0x9e3779b97f4a7c15ull) ^ salt;
		memcpy(p + i, &v, 8);
	}
}

static int run_case(struct bench *b, enum dir d, uint64_t size)
{
	struct engine_addr dst, src;
	double gbps, mgbps;
	char *dp = NULL, *sp = NULL;
	int err = 0;

	endpoints(b, d, &dst, &src, &dp, &sp);
	fill_pattern(sp, size, size ^ (uint64_t)d);
	memset(dp, 0, size);
	/* Warm-up: both sides' page tables (ours and the device's) are
	 * populated before anything is timed. */
	if (engine_run(b, dst, src, size, 1, &gbps) != 0) {
		fprintf(stderr, "ugpu-bench copy: %s %" PRIu64 " bytes failed\n", dir_names[d], size);
		return -EIO;
	}
	if (memcmp(dp, sp, size)) {
		fprintf(stderr, "ugpu-bench copy: %s %" PRIu64 " bytes: destination differs\n",
			dir_names[d], size);
		return -EIO;
	}
	err = measure_pair(b, dst, src, dp, sp, size, &gbps, &mgbps);
	if (err) {
		fprintf(stderr, "ugpu-bench copy: %s %" PRIu64 " bytes: %s\n", dir_names[d], size,
			ugpu_strerror(err));
		return err;
	}
	printf("{\"bench\":\"copy\",\"dir\":\"%s\",\"bytes\":%" PRIu64
	       ",\"gbps\":%.3f,\"memcpy_gbps\":%.3f,\"ratio\":%.3f}\n",
	       dir_names[d], size, gbps, mgbps, mgbps > 0 ? gbps / mgbps : 0.0);
	fflush(stdout);
	return 0;
}

static int setup(struct bench *b, uint64_t vram_mib)
{
	struct engine_cfg cfg = { .size = sizeof(cfg) };
	struct sim_opts so;
	void *p;
	int ret;

	ret = ugpu_context_create(NULL, &b->ctx);
	if (ret)
		return ret;
	sim_opts_init(&so);
	so.vram_size = vram_mib << 20;
	b->vram_size = so.vram_size;
	if (DATA_OFF + 2 * b->max > b->vram_size) {
		fprintf(stderr, "ugpu-bench copy: --vram-mib %" PRIu64 " too small for 2 x %" PRIu64
			" bytes\n", vram_mib, b->max);
		return -EINVAL;
	}
	ret = sim_start(&so, &b->sim);
	if (ret) {
		fprintf(stderr, "ugpu-bench copy: cannot start the reference device: %s\n",
			ugpu_strerror(ret));
		return ret;
	}
	ret = vfio_user_open(b->ctx, sim_socket_path(b->sim, 0), &b->dev);
	if (ret)
		return ret;
	ret = dma_space_init(b->ctx, b->dev, &b->dma);
	if (ret)
		return ret;
	ret = b->dev->ops->region_mmap(b->dev, VFIO_REGION_BAR2, 0, b->vram_size,
				       PROT_READ | PROT_WRITE, &p);
	if (ret)
		return ret;
	b->vram = p;
	ret = sysmem_create(b->ctx, b->max, "bench-sys", &b->sys);
	if (ret)
		return ret;
	ret = dma_map_sysmem(&b->dma, &b->sys, VFIO_DMA_READ | VFIO_DMA_WRITE, &b->sys_iova);
	if (ret)
		return ret;
	cfg.dev = b->dev;
	cfg.vram = b->vram;
	cfg.vram_size = b->vram_size;
	cfg.index = 0;
	cfg.ring_offset = RING_OFF;
	cfg.ring_size = RING_SIZE;
	cfg.timeout_ms = WAIT_MS;
	return engine_create(b->ctx, &engine_sim_ops, &cfg, &b->e);
}

static void teardown(struct bench *b)
{
	engine_destroy(b->e);
	if (b->sys_iova)
		dma_unmap(&b->dma, b->sys_iova, b->sys.size);
	if (b->dma.ready && dma_space_fini(&b->dma))
		fprintf(stderr, "ugpu-bench copy: DMA mappings leaked\n");
	if (b->vram)
		b->dev->ops->region_munmap(b->dev, b->vram, b->vram_size);
	if (b->dev)
		b->dev->ops->close(b->dev);
	sim_stop(b->sim);
	if (b->sys.vaddr)
		sysmem_destroy(&b->sys);
	ugpu_context_destroy(b->ctx);
}

int bench_copy(int argc, char **argv)
{
	struct bench b;
	uint64_t vram_mib = 256, max = 64ull << 20, min_ms = 100, size;
	const struct cli_opt opts[] = {
		{ .name = "vram-mib", .kind = CLI_UINT, .dst = &vram_mib, .arg = "N",
		  .help = "VRAM of the reference device, MiB (at least 2 x --max-bytes)", .min = 1,
		  .max = 1u << 20 },
		{ .name = "max-bytes", .kind = CLI_SIZE, .dst = &max, .arg = "SIZE",
		  .help = "largest copy, a multiple of 4096; a bare number is bytes", .min = 4096,
		  .max = 1ull << 30, .unit = 1 },
		{ .name = "min-ms", .kind = CLI_UINT, .dst = &min_ms, .arg = "MS",
		  .help = "least time per measurement (best of the runs in it)", .min = 1,
		  .max = 60000 },
		{ 0 },
	};
	const struct cli_cmd cli = { .prog = "ugpu-bench copy", .args = "",
				     .summary = "copy engine throughput vs memcpy (reference device)",
				     .opts = opts };
	int ret = cli_parse(&cli, argc, argv, NULL, NULL);
	enum dir d;

	if (ret != CLI_CONTINUE)
		return ret;
	if (max & 4095)
		return cli_usage_error(cli.prog, "--max-bytes: %" PRIu64 " is not a multiple of 4096",
				       max);
	memset(&b, 0, sizeof(b));
	b.sys.fd = -1;
	b.max = max;
	b.min_ms = (int)min_ms;

	ret = setup(&b, vram_mib);
	if (ret) {
		fprintf(stderr, "ugpu-bench copy: setup failed: %s\n", ugpu_strerror(ret));
		teardown(&b);
		return 1;
	}
	for (d = VRAM_TO_SYS; d <= VRAM_TO_VRAM && !ret; d++)
		for (size = 4096; size <= b.max && !ret; size *= 4) {
			ret = run_case(&b, d, size);
			/* Always include the largest size, and 2 MiB (the target's
			 * threshold), whatever the stride. */
			if (!ret && size < (2ull << 20) && size * 4 > (2ull << 20) &&
			    (2ull << 20) <= b.max)
				ret = run_case(&b, d, 2ull << 20);
			if (!ret && size < b.max && size * 4 > b.max)
				ret = run_case(&b, d, b.max);
		}
	teardown(&b);
	return ret ? 1 : 0;
}
