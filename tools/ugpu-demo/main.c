/* SPDX-License-Identifier: MIT */
/*
 * ugpu-demo: the project's main job (`make run`). It starts the reference
 * device in-process (the embedded default), drives it through the driver
 * exactly as a real GPU would be driven — over the vfio-user transport — and
 * prints what happens at each step: bring-up, the VRAM allocator, the
 * blitter, buffer objects past VRAM capacity (eviction, a CPU mapping that
 * follows its BO), a host suspend/resume cycle in which the device really
 * loses VRAM, runtime PM (sleep when idle, wake on a CPU touch), GPU VMs
 * with kernels on a bound BO that follows its moves, kernels on malloc'd
 * memory (shared virtual memory), and a hot-unplug that
 * keeps every object's data. Every step checks its result;
 * the demo exits non-zero when anything did not do what it says. ctest runs
 * it too (test "demo").
 *
 * It uses only the public API (the ugpu/ headers; linked against
 * libugpu.so.0), as a user's program would, plus tools/ugpu-sim/sim.h to
 * start the reference device and inject its faults: that is the hardware,
 * not the driver. The build checks the includes (cmake/demo_includes.cmake).
 *
 * usage: ugpu-demo [--device URI] [--vram SIZE]
 *   --device URI   use this device instead of the embedded reference device
 *                  (vfio-user:PATH or pci:DDDD:BB:DD.F); the unplug step
 *                  needs the embedded device and is skipped otherwise
 *   --vram SIZE    VRAM of the embedded device: a power of two, 16M..1T; a
 *                  bare number is MiB (default 128)
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ugpu/bo.h>
#include <ugpu/device.h>
#include <ugpu/pm.h>
#include <ugpu/rpm.h>
#include <ugpu/ugpu.h>
#include <ugpu/unplug.h>
#include <ugpu/vm.h>

#include "tools/common/cli.h"
#include "tools/common/progress_bar.h"
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
	progress_bar_clear();
	printf("\n[%d] %s\n", ++step_no, title);
}

static void result(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void result(int ok, const char *fmt, ...)
{
	va_list ap;

	progress_bar_clear();
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
	progress_bar_clear();
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

static struct ugpu_device_mem mem_stats(struct ugpu_device *dev)
{
	struct ugpu_device_mem m = { .size = sizeof(m) };

	if (ugpu_device_mem_stats(dev, &m))
		memset(&m, 0, sizeof(m));
	return m;
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

/* A BO allowed in @where only (NONE: VRAM, then system), or NULL. */
static struct ugpu_bo *bo_new(struct ugpu_device *dev, uint64_t bytes, enum ugpu_placement where,
			      uint32_t flags, const char *name, int *err)
{
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = bytes, .flags = flags, .name = name,
				  .placements = { where } };
	struct ugpu_bo *bo = NULL;

	*err = ugpu_bo_create(dev, &o, &bo);
	return *err ? NULL : bo;
}

#define DEMO_NSMALL 64

/*
 * The VRAM allocator, through buffer objects: every VRAM placement comes from
 * the driver's buddy allocator, and ugpu_device_mem_stats() shows its use.
 */
static void demo_allocator(struct ugpu_device *dev, uint64_t vram_size)
{
	static const uint64_t sizes[] = { 4 << 10, 12 << 10, (1 << 20) + (4 << 10), 3 << 20 };
	struct ugpu_bo *small[DEMO_NSMALL], *sized[4], *big, *sys, *all;
	struct ugpu_device_mem m0 = mem_stats(dev), m;
	struct ugpu_bo_info bi = { .size = sizeof(bi) };
	uint64_t want = 0;
	int i, n = 0, nsized = 0, ok = 1, ret;

	step("VRAM allocator, through buffer objects");
	printf("    %" PRIu64 " MiB of VRAM: %" PRIu64 " KiB used by the driver's own objects (engine rings), %" PRIu64 " KiB free\n",
	       m0.vram_size >> 20, m0.vram_used >> 10, m0.vram_free >> 10);
	while (n < DEMO_NSMALL &&
	       (small[n] = bo_new(dev, 64 << 10, UGPU_PLACEMENT_VRAM, 0, "small", &ret)))
		ok &= bo_where(small[n++]) == UGPU_PLACEMENT_VRAM;
	m = mem_stats(dev);
	result(ok && n == DEMO_NSMALL && m.vram_used == m0.vram_used + n * (64 << 10),
	       "%d VRAM BOs of 64 KiB: %d created, VRAM used +%" PRIu64 " KiB, %" PRIu64 " KiB free",
	       DEMO_NSMALL, n, (m.vram_used - m0.vram_used) >> 10, m.vram_free >> 10);

	m0 = m;
	for (i = 0; i < 4; i++) {
		sized[nsized] = bo_new(dev, sizes[i], UGPU_PLACEMENT_VRAM, 0, "sized", &ret);
		if (sized[nsized]) {
			want += sizes[i];
			nsized++;
		}
	}
	m = mem_stats(dev);
	result(nsized == 4 && m.vram_used - m0.vram_used == want,
	       "sizes 4 KiB, 12 KiB, 1 MiB + 4 KiB, 3 MiB: VRAM use grew by exactly their %" PRIu64 " KiB (split into power-of-two blocks)",
	       (m.vram_used - m0.vram_used) >> 10);

	big = bo_new(dev, 4 << 20, UGPU_PLACEMENT_VRAM, UGPU_BO_CONTIGUOUS, "contiguous", &ret);
	if (big)
		ret = ugpu_bo_query(big, &bi);
	result(!ret && (bi.flags & UGPU_BO_CONTIGUOUS), "one contiguous 4 MiB BO at VRAM offset 0x%" PRIx64,
	       ret ? 0 : bi.vram_offset);

	m0 = mem_stats(dev);
	sys = bo_new(dev, 1 << 20, UGPU_PLACEMENT_SYSTEM, 0, "system", &ret);
	m = mem_stats(dev);
	result(sys && bo_where(sys) == UGPU_PLACEMENT_SYSTEM && m.vram_used == m0.vram_used &&
		       m.system_bytes == m0.system_bytes + (1 << 20),
	       "a SYSTEM-only BO of 1 MiB takes system memory (%" PRIu64 " KiB now) and no VRAM",
	       m.system_bytes >> 10);

	/* VRAM-only BOs cannot be evicted: nothing can make room. */
	all = bo_new(dev, vram_size, UGPU_PLACEMENT_VRAM, 0, "all", &ret);
	ok = 1;
	for (i = 0; i < n; i++)
		ok &= bo_where(small[i]) == UGPU_PLACEMENT_VRAM;
	result(ret == -ENOSPC && ok, "asking for all of VRAM while some is used: %s; every BO still in VRAM",
	       ugpu_strerror(ret));
	ugpu_bo_put(all);

	for (i = 0; i < n; i++)
		ugpu_bo_put(small[i]);
	for (i = 0; i < nsized; i++)
		ugpu_bo_put(sized[i]);
	ugpu_bo_put(big);
	ugpu_bo_put(sys);
	m0 = m;
	m = mem_stats(dev);
	result(m.bos == m0.bos - (uint64_t)(n + nsized + !!big + !!sys) && m.vram_bos == 0 &&
		       m.vram_used == m.vram_kernel,
	       "everything freed: %" PRIu64 " KiB free again (the driver's %" PRIu64 " KiB stay)",
	       m.vram_free >> 10, m.vram_kernel >> 10);
}

#define DEMO_COPY_LEN (8ull << 20)

/* Time one migration of @bo to @to; check it arrived byte-exact (@seed). */
static void timed_migrate(const char *what, struct ugpu_bo *bo, enum ugpu_placement to, unsigned seed,
			  unsigned char *tmp)
{
	enum ugpu_placement from = bo_where(bo);
	double t0 = now_ms(), ms;
	int ret;

	ret = ugpu_bo_migrate(bo, to);
	ms = now_ms() - t0;
	result(!ret && bo_where(bo) == to && bo_pattern_ok(bo, DEMO_COPY_LEN, seed, tmp),
	       "%s%s -> %s, %llu MiB in %.2f ms (%.1f GB/s), byte-exact%s%s", what, placement_name(from),
	       placement_name(to), DEMO_COPY_LEN >> 20, ms, (double)DEMO_COPY_LEN / ms / 1e6,
	       ret ? ": " : "", ret ? ugpu_strerror(ret) : "");
}

/*
 * The blitter moves a BO between VRAM and system memory (ugpu_bo_migrate);
 * when a copy fails the BO stays where it was and the engine is reset.
 */
static void demo_copy(struct sim *sim, struct ugpu_device *dev, unsigned char *tmp)
{
	struct ugpu_device_mem m0 = mem_stats(dev), m;
	struct ugpu_bo *bo;
	int ret;

	step("Copy engine: a BO migrated VRAM <-> system memory");
	bo = bo_new(dev, DEMO_COPY_LEN, UGPU_PLACEMENT_NONE, 0, "copy", &ret);
	if (!bo) {
		result(0, "a BO for the copy: %s", ugpu_strerror(ret));
		return;
	}
	pattern(tmp, DEMO_COPY_LEN, 7);
	ret = ugpu_bo_write(bo, 0, tmp, DEMO_COPY_LEN);
	result(!ret && bo_where(bo) == UGPU_PLACEMENT_VRAM,
	       "%llu MiB BO in VRAM, pattern written (each move below is timed whole: new backing, DMA mapping, copy)",
	       DEMO_COPY_LEN >> 20);
	timed_migrate("", bo, UGPU_PLACEMENT_SYSTEM, 7, tmp);
	pattern(tmp, DEMO_COPY_LEN, 9);
	ugpu_bo_write(bo, 0, tmp, DEMO_COPY_LEN); /* new contents, written in system memory */
	timed_migrate("", bo, UGPU_PLACEMENT_VRAM, 9, tmp);
	m = mem_stats(dev);
	printf("    %" PRIu64 " moves, %" PRIu64 " MiB moved\n", m.moves - m0.moves,
	       (m.moved_bytes - m0.moved_bytes) >> 20);

	/* A failed copy: the engine stops, the driver names it, the BO keeps
	 * its place and bytes, and the engine works again after a reset. */
	if (!sim) {
		printf("    (a failed copy needs the embedded reference device's fault injection)\n");
		goto out;
	}
	ret = sim_inject(sim, 0, SIM_INJECT_DMA, 1, false);
	if (!ret)
		ret = ugpu_bo_migrate(bo, UGPU_PLACEMENT_SYSTEM);
	m = mem_stats(dev);
	result(ret == -EIO && bo_where(bo) == UGPU_PLACEMENT_VRAM &&
		       bo_pattern_ok(bo, DEMO_COPY_LEN, 9, tmp) && m.copy_failures == m0.copy_failures + 1,
	       "a migration whose DMA the device fails: %s; the BO stays in VRAM, byte-exact",
	       ugpu_strerror(ret));
	sim_inject_clear(sim, 0);
	timed_migrate("the driver reset the engine; again: ", bo, UGPU_PLACEMENT_SYSTEM, 9, tmp);
out:
	ugpu_bo_put(bo);
}

#define DEMO_KERNEL_LEN (4ull << 20)
#define DEMO_VA 0x100000000ull

/* Run one kernel to its end; -errno, or its status. */
static int kernel(struct ugpu_queue *q, enum ugpu_kernel_op op, uint64_t va, uint64_t bytes,
		  uint64_t value, struct ugpu_kernel_result *r)
{
	struct ugpu_kernel k = { .size = sizeof(k), .op = op, .va = va, .bytes = bytes,
				 .value = value };
	uint64_t fence;
	int ret;

	memset(r, 0, sizeof(*r));
	r->size = sizeof(*r);
	ret = ugpu_queue_submit(q, &k, &fence);
	if (!ret)
		ret = ugpu_fence_wait(q, fence, 10000, r);
	return ret ? ret : r->status;
}

static uint64_t sum_words(const unsigned char *p, uint64_t len)
{
	uint64_t s = 0, w, i;

	for (i = 0; i < len; i += 8) {
		memcpy(&w, p + i, 8);
		s += w;
	}
	return s;
}

/*
 * GPU VMs and kernels: a BO bound at a GPU address, kernels that read and
 * write it through the driver's page tables, a kernel that touches an
 * unbound address (aborted, the fence says where), and the bound BO moved to
 * system memory and back: its page-table entries follow it.
 */
static void demo_kernels(struct ugpu_device *dev, unsigned char *tmp)
{
	struct ugpu_vm_info vi = { .size = sizeof(vi) };
	struct ugpu_kernel_result r;
	struct ugpu_queue *q = NULL;
	struct ugpu_vm *vm = NULL;
	struct ugpu_bo *bo;
	uint64_t want;
	int ret, i;
	double t0;

	step("GPU VM: a bound BO, kernels, a fault, moves");
	ret = ugpu_vm_create(dev, NULL, &vm);
	if (ret == -EOPNOTSUPP) {
		printf("    (this device has no GPU VM: %s)\n", ugpu_strerror(ret));
		return;
	}
	if (!ret)
		ret = ugpu_queue_create(vm, NULL, &q);
	bo = ret ? NULL : bo_new(dev, DEMO_KERNEL_LEN, UGPU_PLACEMENT_NONE, 0, "kernel", &ret);
	if (bo) {
		pattern(tmp, DEMO_KERNEL_LEN, 21);
		ret = ugpu_bo_write(bo, 0, tmp, DEMO_KERNEL_LEN);
	}
	if (!ret)
		ret = ugpu_vm_bind(vm, bo, 0, DEMO_VA, DEMO_KERNEL_LEN, 0);
	ugpu_vm_query(vm, &vi);
	result(!ret, "VM created, %llu MiB BO bound at GPU VA 0x%llx (%llu page tables): %s",
	       DEMO_KERNEL_LEN >> 20, (unsigned long long)DEMO_VA,
	       (unsigned long long)vi.page_tables, ugpu_strerror(ret));
	if (ret)
		goto out;
	want = sum_words(tmp, DEMO_KERNEL_LEN);
	t0 = now_ms();
	ret = kernel(q, UGPU_KERNEL_READ_SUM, DEMO_VA, DEMO_KERNEL_LEN, 0, &r);
	result(!ret && r.sum == want, "read-sum kernel over the BO in %s: sum matches the CPU's (%.2f ms)",
	       placement_name(bo_where(bo)), now_ms() - t0);
	ret = kernel(q, UGPU_KERNEL_WRITE, DEMO_VA, DEMO_KERNEL_LEN / 2, 0x0101010101010101ull, &r);
	if (!ret)
		ret = kernel(q, UGPU_KERNEL_ATOMIC_ADD, DEMO_VA, DEMO_KERNEL_LEN / 2, 1, &r);
	for (i = 0; i < (int)(DEMO_KERNEL_LEN / 2); i += 8) {
		uint64_t w = 0x0101010101010101ull + 1; /* what the two kernels left */

		memcpy(tmp + i, &w, 8);
	}
	{
		unsigned char *back = malloc(DEMO_KERNEL_LEN);
		int same = back && !ugpu_bo_read(bo, 0, back, DEMO_KERNEL_LEN) &&
			   !memcmp(back, tmp, DEMO_KERNEL_LEN);

		result(!ret && same, "write + atomic-add kernels over half of it: the CPU reads every byte the GPU wrote");
		free(back);
	}
	want = sum_words(tmp, DEMO_KERNEL_LEN);
	ret = kernel(q, UGPU_KERNEL_READ_SUM, DEMO_VA + (64ull << 20), 4096, 0, &r);
	result(ret == -EFAULT && r.fault_va == DEMO_VA + (64ull << 20) &&
		       r.fault_access == UGPU_ACCESS_READ,
	       "a kernel reading GPU VA 0x%llx, where nothing is bound: aborted, its fence says %s at 0x%llx",
	       (unsigned long long)(DEMO_VA + (64ull << 20)), ugpu_strerror(ret),
	       (unsigned long long)r.fault_va);
	for (i = 0; i < 2; i++) {
		enum ugpu_placement to = i ? UGPU_PLACEMENT_VRAM : UGPU_PLACEMENT_SYSTEM;

		ret = ugpu_bo_migrate(bo, to);
		if (!ret)
			ret = kernel(q, UGPU_KERNEL_READ_SUM, DEMO_VA, DEMO_KERNEL_LEN, 0, &r);
		result(!ret && r.sum == want,
		       "BO migrated to %s: the next kernel runs on rewritten page-table entries, same sum",
		       placement_name(bo_where(bo)));
	}
out:
	ugpu_queue_destroy(q);
	ugpu_vm_destroy(vm);
	ugpu_bo_put(bo);
}

#define DEMO_SVM_LEN (16ull << 20)

static struct ugpu_svm_stats svm_now(struct ugpu_device *dev)
{
	struct ugpu_svm_stats st = { .size = sizeof(st) };

	ugpu_device_svm_stats(dev, &st);
	return st;
}

/*
 * Shared virtual memory: kernels on plain malloc'd memory. A mirror VM sees
 * the process's address space at the same addresses; the GPU's first touch
 * of a range faults and moves it into VRAM, and the CPU's next touch brings
 * it back, byte-exact (docs/svm.md).
 */
static void demo_svm(struct ugpu_device *dev)
{
	struct ugpu_vm_opts vo = { .size = sizeof(vo), .flags = UGPU_VM_MIRROR,
				   .mirror_start = 0x10000, .mirror_size = (1ull << 47) - 0x20000,
				   .name = "svm" };
	struct ugpu_svm_stats s0, s1;
	struct ugpu_kernel_result r;
	struct ugpu_queue *q = NULL;
	struct ugpu_vm *vm = NULL;
	uint64_t *mem, want, i;
	int ret, ok;
	double t0;

	step("Shared virtual memory: kernels on malloc'd memory");
	mem = malloc(DEMO_SVM_LEN);
	if (!mem) {
		result(0, "malloc of %llu MiB failed", DEMO_SVM_LEN >> 20);
		return;
	}
	ret = ugpu_vm_create(dev, &vo, &vm);
	if (ret == -EOPNOTSUPP || ret == -EPERM || ret == -ENOSYS) {
		printf("    (no shared virtual memory here: %s; the log says why)\n", ugpu_strerror(ret));
		free(mem);
		return;
	}
	if (!ret)
		ret = ugpu_queue_create(vm, NULL, &q);
	result(!ret, "mirror VM: GPU addresses are the process's addresses: %s", ugpu_strerror(ret));
	if (ret)
		goto out;
	for (i = 0, want = 0; i < DEMO_SVM_LEN / 8; i++) {
		mem[i] = i * 0x9e3779b97f4a7c15ull;
		want += mem[i];
	}
	s0 = svm_now(dev);
	t0 = now_ms();
	ret = kernel(q, UGPU_KERNEL_READ_SUM, (uintptr_t)mem, DEMO_SVM_LEN, 0, &r);
	s1 = svm_now(dev);
	result(!ret && r.sum == want,
	       "read-sum kernel on %llu MiB of malloc'd memory at %p: sum matches (%.1f ms); %llu GPU faults, %llu ranges moved into VRAM (%llu KiB), %llu MiB there now",
	       DEMO_SVM_LEN >> 20, (void *)mem, now_ms() - t0,
	       (unsigned long long)(s1.svm_pagefault_count - s0.svm_pagefault_count),
	       (unsigned long long)(s1.svm_2M_migrate_count + s1.svm_64K_migrate_count +
				    s1.svm_4K_migrate_count - s0.svm_2M_migrate_count -
				    s0.svm_64K_migrate_count - s0.svm_4K_migrate_count),
	       (unsigned long long)(s1.svm_device_copy_kb - s0.svm_device_copy_kb),
	       (unsigned long long)(s1.svm_vram_bytes >> 20));
	if (!ret)
		ret = kernel(q, UGPU_KERNEL_ATOMIC_ADD, (uintptr_t)mem, DEMO_SVM_LEN / 2, 7, &r);
	result(!ret, "atomic-add kernel over the first half, in VRAM: %s", ugpu_strerror(ret));
	s0 = svm_now(dev);
	t0 = now_ms();
	for (i = 0, ok = 1; i < DEMO_SVM_LEN / 8; i++)
		if (mem[i] != i * 0x9e3779b97f4a7c15ull + (i < DEMO_SVM_LEN / 16 ? 7 : 0))
			ok = 0;
	s1 = svm_now(dev);
	result(!ret && ok,
	       "the CPU reads it all back: every byte is what the GPU left (%.1f ms); %llu CPU touches brought ranges home (%llu KiB)",
	       now_ms() - t0, (unsigned long long)(s1.svm_cpu_fault_count - s0.svm_cpu_fault_count),
	       (unsigned long long)(s1.svm_cpu_copy_kb - s0.svm_cpu_copy_kb));
out:
	ugpu_queue_destroy(q);
	ugpu_vm_destroy(vm);
	free(mem);
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
	struct ugpu_device_mem m;
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
	m = mem_stats(dev);
	printf("    VRAM %" PRIu64 " MiB used, %" PRIu64 " KiB free; %" PRIu64 " BOs in VRAM, %" PRIu64 " in system memory (%" PRIu64 " MiB); %" PRIu64 " evictions so far\n",
	       m.vram_used >> 20, m.vram_free >> 10, m.bos_vram, m.bos_system, m.system_bytes >> 20,
	       m.evictions);
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
	struct ugpu_device_mem m;
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
	m = mem_stats(dev);
	result(m.vram_used == 0 && m.vram_free == 0 && m.bos_system == (uint64_t)nbos && !m.bos_lost,
	       "the device's VRAM is gone (0 used, 0 free); %" PRIu64 " BOs, %" PRIu64 " MiB, live in system memory",
	       m.bos_system, m.system_bytes >> 20);
	if (map) {
		result(pattern_ok(map, DEMO_BO_LEN, 1), "a CPU mapping made before the unplug now reads the system copy");
		ugpu_bo_unmap(bos[1]);
	}
	ret = ugpu_bo_create(dev, &o, &late);
	result(ret == -ENODEV, "a new VRAM-only BO: %s", ugpu_strerror(ret));
	if (!ret)
		ugpu_bo_put(late);
}

static const char *uri;
static uint64_t vram = 128ull << 20;

static const struct cli_opt demo_opts[] = {
	{ .name = "device", .kind = CLI_STR, .dst = &uri, .arg = "URI",
	  .help = "use this device (vfio-user:PATH or pci:DDDD:BB:DD.F) instead of the embedded "
		  "reference device; the unplug step is skipped" },
	{ .name = "vram", .kind = CLI_SIZE, .dst = &vram, .arg = "SIZE",
	  .help = "VRAM of the embedded device; a bare number is MiB", .min = 16ull << 20,
	  .max = 1ull << 40, .unit = 1ull << 20, .pow2 = true },
	{ 0 },
};

static const struct cli_cmd demo_cli = {
	.prog = "ugpu-demo",
	.args = "",
	.summary = "the driver's tour, every step checked: bring-up, allocator, blitter, kernels,\n"
		   "shared virtual memory, BOs and eviction, suspend, runtime PM, hot-unplug",
	.opts = demo_opts,
};

/*
 * The embedded device's socket, removed if the demo is stopped by SIGINT or
 * SIGTERM (a normal exit removes it in sim_stop()). Written before the
 * handlers are installed and never again, so the handler reads a stable
 * string; unlink() is async-signal-safe.
 */
static char demo_sock_path[256];

static void demo_stop_signal(int sig)
{
	if (demo_sock_path[0])
		unlink(demo_sock_path);
	signal(sig, SIG_DFL);
	raise(sig);
}

int main(int argc, char **argv)
{
	struct ugpu_context_opts copts = { .size = sizeof(copts), .log_fn = log_hook,
					   .log_level = UGPU_LOG_WARN };
	struct ugpu_device_info info = { .size = sizeof(info) };
	struct ugpu_context *ctx = NULL;
	struct ugpu_device *dev = NULL;
	struct sim *sim = NULL;
	struct ugpu_bo *bos[DEMO_NBO];
	unsigned char *tmp = NULL;
	int nbos = 0;
	char buf[512];
	double t0;
	int i, ret;

	ret = cli_parse(&demo_cli, argc, argv, NULL, NULL);
	if (ret != CLI_CONTINUE)
		return ret;

	printf("ugpu %s demo: a userspace GPU driver over VFIO\n", ugpu_version_string());
	ret = ugpu_context_create(&copts, &ctx);
	if (ret) {
		fprintf(stderr, "ugpu_context_create: %s\n", ugpu_strerror(ret));
		return 1;
	}
	/* long copies (a big --vram's backups, evictions) draw a bar */
	progress_bar_install(ctx);

	if (!uri) {
		struct sim_opts so;

		step("Start the reference device (ugpu-sim, in-process, over vfio-user)");
		sim_opts_init(&so);
		so.vram_size = vram;
		so.wake_latency_us = 500;
		ret = sim_start(&so, &sim);
		result(ret == 0, "ugpu-sim serving %" PRIu64 " MiB of VRAM at %s", vram >> 20,
		       ret ? "-" : sim_socket_path(sim, 0));
		if (ret)
			goto out;
		snprintf(buf, sizeof(buf), "vfio-user:%s", sim_socket_path(sim, 0));
		uri = buf;
		snprintf(demo_sock_path, sizeof(demo_sock_path), "%s", sim_socket_path(sim, 0));
		signal(SIGINT, demo_stop_signal);
		signal(SIGTERM, demo_stop_signal);
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

	tmp = malloc(DEMO_BO_LEN);
	if (!tmp) {
		ret = -ENOMEM;
		goto out;
	}
	demo_allocator(dev, info.vram_size);
	demo_copy(sim, dev, tmp);
	demo_kernels(dev, tmp);
	if (info.caps & UGPU_DEVICE_CAP_GPUVM)
		demo_svm(dev);
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
