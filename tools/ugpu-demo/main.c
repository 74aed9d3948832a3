/* SPDX-License-Identifier: MIT */
/*
 * ugpu-demo: the project's main job (`make run`). It starts the reference
 * device in-process (the embedded default), drives it through the driver
 * exactly as a real GPU would be driven — over the vfio-user transport — and
 * prints what happens at each step: bring-up, the VRAM allocator, the
 * blitter, buffer objects past VRAM capacity (eviction, a CPU mapping that
 * follows its BO), a host suspend/resume cycle in which the device really
 * loses VRAM, runtime PM (sleep when idle, wake on a CPU touch), and a
 * hot-unplug that keeps every object's data. Every step checks its result;
 * the demo exits non-zero when anything did not do what it says. ctest runs
 * it too (test "demo").
 *
 * usage: ugpu-demo [--device URI] [--vram MiB]
 *   --device URI   use this device instead of the embedded reference device
 *                  (vfio-user:PATH or pci:DDDD:BB:DD.F); the unplug step
 *                  needs the embedded device and is skipped otherwise
 *   --vram MiB     VRAM of the embedded device (default 128)
 */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ugpu/bo.h>
#include <ugpu/device.h>
#include <ugpu/pm.h>
#include <ugpu/rpm.h>
#include <ugpu/ugpu.h>
#include <ugpu/unplug.h>

#include "mm/vram.h"
#include "src/base/sysmem.h"
#include "src/device.h"
#include "tools/ugpu-sim/sim.h"

static int step_no;
static int failures;

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void step(const char *title)
{
	printf("\n[%d] %s\n", ++step_no, title);
}

static uint64_t vram_avail(struct ugpu_device *dev)
{
	uint64_t used, avail;

	vram_usage(dev, &used, &avail);
	return avail;
}

static void result(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void result(int ok, const char *fmt, ...)
{
	va_list ap;

	printf("    %s ", ok ? "ok  " : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (!ok)
		failures++;
}

static void log_hook(void *user, enum ugpu_log_level level, const char *msg)
{
	(void)user;
	printf("    (driver %s) %s\n", level == UGPU_LOG_ERROR ? "error" : "log", msg);
}

static void pattern(unsigned char *p, size_t n, unsigned seed)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (unsigned char)(i * 131 + seed);
}

static int pattern_ok(const unsigned char *p, size_t n, unsigned seed)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i] != (unsigned char)(i * 131 + seed))
			return 0;
	return 1;
}

static const char *power_name(enum ugpu_power_state s)
{
	return s == UGPU_POWER_D0 ? "D0" : s == UGPU_POWER_D3HOT ? "D3hot" : "D3cold";
}

/* The VRAM allocator: every VRAM placement goes through it. */
static void demo_allocator(struct ugpu_device *dev)
{
	struct buddy_list small, big;
	uint64_t avail0 = vram_avail(dev);
	int ret, n = 0;

	step("VRAM buddy allocator");
	buddy_list_init(&small);
	buddy_list_init(&big);
	while (n < 64 && !(ret = vram_alloc(dev, 64 << 10, 64 << 10, 0, &small)))
		n++;
	result(n == 64, "64 allocations of 64 KiB: %d succeeded, %" PRIu64 " KiB left", n,
	       vram_avail(dev) >> 10);
	ret = vram_alloc(dev, 4 << 20, 4096, BUDDY_CONTIGUOUS_ALLOCATION, &big);
	result(ret == 0, "one contiguous 4 MiB allocation at VRAM offset 0x%" PRIx64,
	       ret ? 0 : buddy_block_offset(buddy_list_first(&big)));
	if (!ret)
		vram_free(dev, &big, 0);
	ret = vram_alloc(dev, dev->vram_size, 4096, 0, &big);
	result(ret == -ENOSPC, "asking for all of VRAM while some is used: %s",
	       ugpu_strerror(ret));
	if (!ret)
		vram_free(dev, &big, 0);
	vram_free(dev, &small, 0);
	result(vram_avail(dev) == avail0, "everything freed: %" PRIu64 " KiB available again",
	       vram_avail(dev) >> 10);
}

/* The blitter moves bytes between VRAM and system memory. */
static void demo_copy(struct ugpu_device *dev)
{
	const uint64_t len = 8 << 20;
	struct engine *e = device_copy_engine(dev);
	struct buddy_list vb;
	struct sysmem sm = { .fd = -1 };
	uint64_t iova = 0, fence, voff;
	unsigned char *vram = dev->vram;
	double t0, ms;
	int ret;

	step("Copy engine: VRAM <-> system memory");
	buddy_list_init(&vb);
	ret = vram_alloc(dev, len, 4096, BUDDY_CONTIGUOUS_ALLOCATION, &vb);
	if (ret) {
		result(0, "VRAM for the copy: %s", ugpu_strerror(ret));
		return;
	}
	voff = buddy_block_offset(buddy_list_first(&vb));
	ret = sysmem_create(dev->ctx, len, "demo", &sm);
	if (!ret)
		ret = dma_map_sysmem(&dev->dma, &sm, VFIO_DMA_READ | VFIO_DMA_WRITE, &iova);
	if (ret) {
		result(0, "system memory for the copy: %s", ugpu_strerror(ret));
		goto out;
	}
	printf("    engine '%s', %" PRIu64 " MiB of system memory at IOVA 0x%" PRIx64 "\n", e->name,
	       len >> 20, iova);

	pattern(vram + voff, len, 7);
	/* The first pass also faults in the pages on both sides; time the second. */
	ret = engine_copy(e, engine_iova(iova), engine_vram(voff), len, &fence);
	if (!ret)
		ret = engine_wait(e, fence, 5000);
	memset(sm.vaddr, 0, len);
	t0 = now_ms();
	ret = engine_copy(e, engine_iova(iova), engine_vram(voff), len, &fence);
	if (!ret)
		ret = engine_wait(e, fence, 5000);
	ms = now_ms() - t0;
	result(!ret && pattern_ok(sm.vaddr, len, 7), "VRAM -> system, %" PRIu64 " MiB in %.2f ms (%.1f GB/s), byte-exact",
	       len >> 20, ms, (double)len / ms / 1e6);

	memset(vram + voff, 0, len);
	pattern(sm.vaddr, len, 9);
	t0 = now_ms();
	ret = engine_copy(e, engine_vram(voff), engine_iova(iova), len, &fence);
	if (!ret)
		ret = engine_wait(e, fence, 5000);
	ms = now_ms() - t0;
	result(!ret && pattern_ok(vram + voff, len, 9), "system -> VRAM, %" PRIu64 " MiB in %.2f ms (%.1f GB/s), byte-exact",
	       len >> 20, ms, (double)len / ms / 1e6);

	/* A bad command: the engine stops, names it, and recovers after reset. */
	ret = engine_copy(e, engine_iova(0x7f0000000000ull), engine_vram(voff), 4096, &fence);
	if (!ret)
		ret = engine_wait(e, fence, 5000);
	result(ret == -EIO, "a copy to an unmapped IOVA fails: %s", ugpu_strerror(ret));
	ret = engine_reset(e);
	if (!ret)
		ret = engine_copy(e, engine_vram(voff + 4096), engine_vram(voff), 4096, &fence);
	if (!ret)
		ret = engine_wait(e, fence, 5000);
	result(ret == 0, "after reset the engine works again");
	dma_unmap(&dev->dma, iova, sm.size);
out:
	sysmem_destroy(&sm);
	vram_free(dev, &vb, 0);
}

static const char *placement_name(enum ugpu_placement p)
{
	return p == UGPU_PLACEMENT_VRAM ? "VRAM" : p == UGPU_PLACEMENT_SYSTEM ? "system" : "none";
}

static enum ugpu_placement bo_where(struct ugpu_bo *bo)
{
	struct ugpu_bo_info bi = { .size = sizeof(bi) };

	return ugpu_bo_query(bo, &bi) ? UGPU_PLACEMENT_NONE : bi.placement;
}

static int bo_pattern_ok(struct ugpu_bo *bo, uint64_t len, unsigned seed, unsigned char *tmp)
{
	return !ugpu_bo_read(bo, 0, tmp, len) && pattern_ok(tmp, len, seed);
}

#define DEMO_BO_LEN (8ull << 20)
#define DEMO_NBO 40

/*
 * Buffer objects: more than VRAM holds, so the oldest unpinned ones are
 * evicted to system memory by the blitter; a CPU mapping follows its object.
 */
static void demo_bos(struct ugpu_device *dev, uint64_t vram_size, struct ugpu_bo **bos, int *nbos,
		     unsigned char *tmp)
{
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = DEMO_BO_LEN,
				  .placements = { UGPU_PLACEMENT_VRAM, UGPU_PLACEMENT_SYSTEM },
				  .flags = UGPU_BO_CPU_ACCESS };
	int i, n = (int)(vram_size / DEMO_BO_LEN) + 8, in_vram = 0, ok = 1, ret;
	unsigned char *map = NULL;
	double t0;

	step("Buffer objects and eviction");
	if (n > DEMO_NBO)
		n = DEMO_NBO;
	t0 = now_ms();
	for (i = 0; i < n; i++) {
		o.flags = UGPU_BO_CPU_ACCESS | (i == 0 ? UGPU_BO_PINNED : 0);
		o.name = i == 0 ? "pinned" : "user";
		ret = ugpu_bo_create(dev, &o, &bos[i]);
		if (ret) {
			result(0, "create BO %d: %s", i, ugpu_strerror(ret));
			break;
		}
		pattern(tmp, DEMO_BO_LEN, (unsigned)i);
		if (ugpu_bo_write(bos[i], 0, tmp, DEMO_BO_LEN))
			ok = 0;
	}
	*nbos = i;
	for (i = 0; i < *nbos; i++)
		in_vram += bo_where(bos[i]) == UGPU_PLACEMENT_VRAM;
	result(ok && *nbos == n, "%d BOs of %llu MiB (%llu MiB) in %.0f ms on %llu MiB of VRAM: %d in VRAM, %d evicted to system",
	       *nbos, DEMO_BO_LEN >> 20, (unsigned long long)(*nbos * DEMO_BO_LEN) >> 20, now_ms() - t0,
	       (unsigned long long)vram_size >> 20, in_vram, *nbos - in_vram);
	ok = 1;
	for (i = 0; i < *nbos; i++)
		ok &= bo_pattern_ok(bos[i], DEMO_BO_LEN, (unsigned)i, tmp);
	result(ok, "every BO reads back byte-exact, wherever it lives");
	result(*nbos && bo_where(bos[0]) == UGPU_PLACEMENT_VRAM, "the pinned BO was never evicted");

	/* A CPU mapping of an evicted BO, then the BO moves back to VRAM: the
	 * mapping follows it. */
	if (*nbos > 1 && !ugpu_bo_map(bos[1], (void **)&map)) {
		enum ugpu_placement before = bo_where(bos[1]);

		map[0] ^= 0xff;
		map[0] ^= 0xff; /* a write through the mapping, where it lives now */
		ret = ugpu_bo_migrate(bos[1], before == UGPU_PLACEMENT_VRAM ? UGPU_PLACEMENT_SYSTEM
									  : UGPU_PLACEMENT_VRAM);
		result(!ret && pattern_ok(map, DEMO_BO_LEN, 1),
		       "a mapped BO moved %s -> %s: its CPU mapping follows it, byte-exact",
		       placement_name(before), placement_name(bo_where(bos[1])));
		map[4096] = 0x5a;
		ret = ugpu_bo_read(bos[1], 4096, tmp, 1);
		result(!ret && tmp[0] == 0x5a, "a CPU write after the move lands in the BO's new home");
		tmp[0] = (unsigned char)(4096 * 131 + 1);
		ugpu_bo_write(bos[1], 4096, tmp, 1);
		ugpu_bo_unmap(bos[1]);
	}
}

static void pm_progress(void *user, enum ugpu_pm_phase phase, uint64_t bos, uint64_t bytes,
			uint64_t ns, int err)
{
	(void)user;
	printf("      %-18s %4llu BOs %8.1f MiB %8.2f ms%s%s\n", ugpu_pm_phase_name(phase),
	       (unsigned long long)bos, (double)bytes / (1 << 20), (double)ns / 1e6,
	       err ? "  error: " : "", err ? ugpu_strerror(err) : "");
}

/* Host suspend: the device loses VRAM (D3cold); nothing else is lost. */
static void demo_suspend(struct ugpu_device *dev, struct ugpu_bo **bos, int nbos, unsigned char *tmp)
{
	struct ugpu_pm_opts po = { .size = sizeof(po), .progress = pm_progress };
	struct ugpu_pm_stats st = { .size = sizeof(st) };
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = 1 << 20,
				  .placements = { UGPU_PLACEMENT_VRAM },
				  .flags = UGPU_BO_PINNED | UGPU_BO_NO_RESTORE, .name = "scratch" };
	struct ugpu_bo *scratch = NULL;
	int i, ok = 1, ret;

	step("Host suspend and resume (the device really loses VRAM in D3cold)");
	if (!ugpu_bo_create(dev, &o, &scratch)) {
		pattern(tmp, 1 << 20, 77);
		ugpu_bo_write(scratch, 0, tmp, 1 << 20);
	}
	ugpu_device_pm_set_opts(dev, &po);
	printf("    prepare (userspace still runs):\n");
	ret = ugpu_device_suspend_prepare(dev);
	result(ret == 0, "prepared: %s", ugpu_strerror(ret));
	printf("    suspend (the critical window):\n");
	ret = ugpu_device_suspend(dev);
	result(ret == 0, "suspended: device in D3cold");
	printf("    resume:\n");
	ret = ugpu_device_resume(dev);
	result(ret == 0, "resumed");
	ugpu_device_pm_stats(dev, &st);
	printf("    prepare %.2f ms, critical window %.2f ms, resume %.2f ms\n", st.prepare_ns / 1e6,
	       st.critical_ns / 1e6, st.resume_ns / 1e6);
	for (i = 0; i < nbos; i++)
		ok &= bo_pattern_ok(bos[i], DEMO_BO_LEN, (unsigned)i, tmp);
	result(ok, "all %d BOs byte-exact after the cycle", nbos);
	if (scratch) {
		struct ugpu_bo_info bi = { .size = sizeof(bi) };

		ugpu_bo_query(scratch, &bi);
		ret = ugpu_bo_read(scratch, 0, tmp, 1 << 20);
		result(ret == -ENODATA || (!ret && !pattern_ok(tmp, 1 << 20, 77)),
		       "a NO_RESTORE BO lost its contents, as it allowed (%s)",
		       ret ? ugpu_strerror(ret) : "it reads the device's poison");
		ugpu_bo_put(scratch);
	}
	ugpu_device_pm_set_opts(dev, NULL);
}

static int rpm_wait_state(struct ugpu_device *dev, enum ugpu_rpm_state want, double ms)
{
	struct ugpu_rpm_stats st = { .size = sizeof(st) };
	double end = now_ms() + ms;

	do {
		if (!ugpu_device_rpm_stats(dev, &st) && st.state == want)
			return 1;
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	} while (now_ms() < end);
	return 0;
}

/* Runtime PM: the device sleeps when idle; a CPU touch wakes it. */
static void demo_rpm(struct ugpu_device *dev, struct ugpu_bo *bo, unsigned seed)
{
	struct ugpu_rpm_stats st = { .size = sizeof(st) };
	struct ugpu_device_info info = { .size = sizeof(info) };
	volatile unsigned char *map = NULL;
	double t0;
	int ret, ok;

	step("Runtime power management: sleep when idle, wake on a touch");
	ret = ugpu_bo_map(bo, (void **)&map);
	if (ret) {
		result(0, "map a VRAM BO: %s", ugpu_strerror(ret));
		return;
	}
	ok = map[0] == (unsigned char)seed; /* mapped to VRAM now */
	ugpu_device_rpm_set_autosuspend_delay(dev, 100);
	ugpu_device_rpm_allow(dev, true);
	t0 = now_ms();
	ret = rpm_wait_state(dev, UGPU_RPM_SUSPENDED, 5000);
	ugpu_device_query(dev, &info);
	result(ok && ret, "idle: the device went to %s %.0f ms later (autosuspend delay 100 ms); its CPU mappings were released first%s",
	       power_name(info.power_state), now_ms() - t0,
	       info.power_state == UGPU_POWER_D3COLD ? " and, VRAM use being low, its BOs saved" : "");
	t0 = now_ms();
	ok = map[1] == (unsigned char)(131 + seed); /* a read through the released mapping */
	map[4096] = 0xa5;
	ugpu_device_rpm_stats(dev, &st);
	result(ok && st.resumes >= 1, "a CPU read through the mapping faulted, woke the device (wake %llu us) and returned the BO's bytes in %.2f ms",
	       (unsigned long long)st.wake_last_us, now_ms() - t0);
	ugpu_device_rpm_allow(dev, false); /* keep it awake for what follows */
	ok = map[4096] == 0xa5;
	map[4096] = (unsigned char)(4096 * 131 + seed);
	result(ok, "the write made right after the wake is in VRAM; %llu sleeps, %llu wakes so far",
	       (unsigned long long)st.suspends, (unsigned long long)st.resumes);
	ugpu_bo_unmap(bo);
}

/* Unplug: the device asks to be released; every object keeps its data. */
static void demo_unplug(struct sim *sim, struct ugpu_device *dev, struct ugpu_bo **bos, int nbos,
			unsigned char *tmp)
{
	struct ugpu_unplug_info ui = { .size = sizeof(ui) };
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = 1 << 20,
				  .placements = { UGPU_PLACEMENT_VRAM } };
	struct ugpu_bo *late = NULL;
	unsigned char *map = NULL;
	double t0, end;
	int i, ok = 1, ret;

	step("Hot-unplug: the device asks to be released (REQ irq)");
	/* Bring BOs back into VRAM (the newest ones win) so the removal has
	 * work to do. */
	for (i = 1; i < nbos; i++)
		ugpu_bo_migrate(bos[i], UGPU_PLACEMENT_VRAM);
	for (i = 0, ret = 0; i < nbos; i++)
		ret += bo_where(bos[i]) == UGPU_PLACEMENT_VRAM;
	printf("    %d of %d BOs in VRAM before the request\n", ret, nbos);
	if (nbos > 1 && ugpu_bo_map(bos[1], (void **)&map))
		map = NULL;
	t0 = now_ms();
	ret = sim_unplug_request(sim, 0);
	end = t0 + 10000;
	/* The driver's removal thread does the work; wait (bounded) for it. */
	while (!ret && !ugpu_device_unplug_info(dev, &ui) && ui.state != UGPU_UNPLUG_REMOVED &&
	       now_ms() < end)
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	result(!ret && ugpu_device_is_gone(dev) && ui.state == UGPU_UNPLUG_REMOVED,
	       "removal request -> device released in %.1f ms: %llu BOs (%.0f MiB) moved to system memory by the blitter, %llu driver BOs released, %llu lost",
	       now_ms() - t0, (unsigned long long)ui.bos_moved, (double)ui.bytes_moved / (1 << 20),
	       (unsigned long long)ui.kernel_bos, (unsigned long long)ui.bos_lost);
	for (i = 0; i < nbos; i++)
		ok &= bo_where(bos[i]) == UGPU_PLACEMENT_SYSTEM &&
		      bo_pattern_ok(bos[i], DEMO_BO_LEN, (unsigned)i, tmp);
	result(ok, "all %d BOs (the pinned one included) are in system memory, byte-exact", nbos);
	if (map) {
		result(pattern_ok(map, DEMO_BO_LEN, 1), "a CPU mapping made before the unplug now reads the system copy");
		ugpu_bo_unmap(bos[1]);
	}
	ret = ugpu_bo_create(dev, &o, &late);
	result(ret == -ENODEV, "a new VRAM-only BO: %s", ugpu_strerror(ret));
	if (!ret)
		ugpu_bo_put(late);
}

int main(int argc, char **argv)
{
	struct ugpu_context_opts copts = { .size = sizeof(copts), .log_fn = log_hook,
					   .log_level = UGPU_LOG_WARN };
	struct ugpu_device_info info = { .size = sizeof(info) };
	struct ugpu_context *ctx = NULL;
	struct ugpu_device *dev = NULL;
	struct sim *sim = NULL;
	const char *uri = NULL;
	uint64_t vram_mib = 128;
	struct ugpu_bo *bos[DEMO_NBO];
	unsigned char *tmp = NULL;
	int nbos = 0;
	char buf[512];
	double t0;
	int i, ret;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--device") && i + 1 < argc)
			uri = argv[++i];
		else if (!strcmp(argv[i], "--vram") && i + 1 < argc)
			vram_mib = strtoull(argv[++i], NULL, 0);
		else {
			fprintf(stderr, "usage: %s [--device URI] [--vram MiB]\n", argv[0]);
			return 2;
		}
	}

	printf("ugpu %s demo: a userspace GPU driver over VFIO\n", ugpu_version_string());
	ret = ugpu_context_create(&copts, &ctx);
	if (ret) {
		fprintf(stderr, "ugpu_context_create: %s\n", ugpu_strerror(ret));
		return 1;
	}

	if (!uri) {
		struct sim_opts so;

		step("Start the reference device (ugpu-sim, in-process, over vfio-user)");
		sim_opts_init(&so);
		so.vram_size = vram_mib << 20;
		so.wake_latency_us = 500;
		ret = sim_start(&so, &sim);
		result(ret == 0, "ugpu-sim serving %" PRIu64 " MiB of VRAM at %s", vram_mib,
		       ret ? "-" : sim_socket_path(sim, 0));
		if (ret)
			goto out;
		snprintf(buf, sizeof(buf), "vfio-user:%s", sim_socket_path(sim, 0));
		uri = buf;
	}

	step("Open the device through the driver");
	t0 = now_ms();
	ret = ugpu_device_open(ctx, uri, &dev);
	result(ret == 0, "%s opened in %.1f ms%s%s", uri, now_ms() - t0, ret ? ": " : "",
	       ret ? ugpu_strerror(ret) : "");
	if (ret)
		goto out;
	ugpu_device_query(dev, &info);
	printf("    transport %s, profile %s, PCI %04x:%04x class %06x\n", info.transport,
	       info.profile, info.vendor_id, info.device_id, info.class_code);
	printf("    %" PRIu64 " MiB VRAM, %u copy engines, caps:%s%s%s%s, power %s\n",
	       info.vram_size >> 20, info.num_copy_engines,
	       info.caps & UGPU_DEVICE_CAP_COPY_ENGINE ? " blitter" : "",
	       info.caps & UGPU_DEVICE_CAP_GPUVM ? " gpuvm" : "",
	       info.caps & UGPU_DEVICE_CAP_FABRIC ? " fabric" : "",
	       info.caps & UGPU_DEVICE_CAP_D3COLD ? " d3cold" : "", power_name(info.power_state));

	demo_allocator(dev);
	demo_copy(dev);
	tmp = malloc(DEMO_BO_LEN);
	if (!tmp) {
		ret = -ENOMEM;
		goto out;
	}
	demo_bos(dev, info.vram_size, bos, &nbos, tmp);
	if (info.caps & UGPU_DEVICE_CAP_D3COLD)
		demo_suspend(dev, bos, nbos, tmp);
	if (nbos)
		demo_rpm(dev, bos[0], 0);
	if (sim && nbos)
		demo_unplug(sim, dev, bos, nbos, tmp);
	for (i = 0; i < nbos; i++)
		ugpu_bo_put(bos[i]);
	nbos = 0;

	step("Close the device");
	ugpu_device_close(dev);
	dev = NULL;
	if (sim) {
		struct sim_state st = { 0 };
		double t_end = now_ms() + 2000;

		/* The device notices the hang-up on its own thread: give it a
		 * bounded moment. */
		while (!(ret = sim_state(sim, 0, &st)) && st.client && now_ms() < t_end)
			nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
		result(ret == 0 && !st.client && st.dma_maps == 0,
		       "the reference device holds no client and no DMA mapping any more");
	} else {
		result(1, "closed");
	}

out:
	for (i = 0; i < nbos; i++)
		ugpu_bo_put(bos[i]);
	free(tmp);
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	sim_stop(sim);
	printf("\n%s: %d step(s), %d failure(s)\n", failures ? "FAILED" : "done", step_no, failures);
	return failures || ret ? 1 : 0;
}
