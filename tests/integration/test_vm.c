/* SPDX-License-Identifier: MIT */
/*
 * GPU VMs, binds and kernels (include/ugpu/vm.h) on the reference device:
 * binds of every BO kind read and written by kernels byte-exact, through
 * eviction, migration, host suspend, runtime D3cold and orderly removal;
 * several VMs on several queues at once; a faulting kernel on one queue while
 * another completes; fences (wait, poll, timeout, eventfd, stale); every bad
 * input with its errno. Public API, plus the reference device's control
 * (tools/ugpu-sim/sim.h) and one test point to hold a kernel "running".
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include <ugpu/bo.h>
#include <ugpu/pm.h>
#include <ugpu/rpm.h>
#include <ugpu/unplug.h>
#include <ugpu/vm.h>

#include "base/test_point.h"
#include "tools/ugpu-sim/sim.h"
#include "test_bo_common.h"

#define MIB (1ull << 20)
#define KIB (1ull << 10)
#define VA0 0x100000000ull /* 4 GiB: where the tests bind */
#define WAIT_MS 10000

static int setup(void **state)
{
	struct fx *f;

	if (fx_setup_vram(state, 64 * MIB))
		return -1;
	f = *state;
	ugpu_device_rpm_set_autosuspend_delay(f->dev, -1); /* suspends are explicit */
	return 0;
}

static int teardown(void **state)
{
	test_point_clear_all();
	return fx_teardown(state);
}

static struct ugpu_vm *vm_new(struct ugpu_device *dev, const char *name)
{
	struct ugpu_vm_opts o = { .size = sizeof(o), .name = name };
	struct ugpu_vm *vm = NULL;

	assert_int_equal(ugpu_vm_create(dev, &o, &vm), 0);
	assert_non_null(vm);
	return vm;
}

static struct ugpu_queue *queue_new(struct ugpu_vm *vm, const char *name)
{
	struct ugpu_queue_opts o = { .size = sizeof(o), .name = name };
	struct ugpu_queue *q = NULL;

	assert_int_equal(ugpu_queue_create(vm, &o, &q), 0);
	assert_non_null(q);
	return q;
}

static int submit(struct ugpu_queue *q, enum ugpu_kernel_op op, uint64_t va, uint64_t bytes,
		  uint64_t value, uint64_t *fence)
{
	struct ugpu_kernel k = { .size = sizeof(k), .op = op, .va = va, .bytes = bytes,
				 .value = value };

	return ugpu_queue_submit(q, &k, fence);
}

/* Run one kernel to its end; its result in *@r. */
static void run(struct ugpu_queue *q, enum ugpu_kernel_op op, uint64_t va, uint64_t bytes,
		uint64_t value, struct ugpu_kernel_result *r)
{
	uint64_t fence = 0;

	memset(r, 0, sizeof(*r));
	r->size = sizeof(*r);
	assert_int_equal(submit(q, op, va, bytes, value, &fence), 0);
	assert_int_equal(ugpu_fence_wait(q, fence, WAIT_MS, r), 0);
}

static uint64_t run_ok(struct ugpu_queue *q, enum ugpu_kernel_op op, uint64_t va, uint64_t bytes,
		       uint64_t value)
{
	struct ugpu_kernel_result r;

	run(q, op, va, bytes, value, &r);
	if (r.status)
		fail_msg("kernel op %d at 0x%llx: status %s (fault at 0x%llx)", (int)op,
			 (unsigned long long)va, ugpu_strerror(r.status),
			 (unsigned long long)r.fault_va);
	return r.sum;
}

/* The u64 words of @buf summed (what a READ_SUM kernel answers). */
static uint64_t words_sum(const void *buf, uint64_t bytes)
{
	const uint64_t *w = buf;
	uint64_t s = 0, i;

	for (i = 0; i < bytes / 8; i++)
		s += w[i];
	return s;
}

static void words_set(void *buf, uint64_t bytes, uint64_t v)
{
	uint64_t *w = buf, i;

	for (i = 0; i < bytes / 8; i++)
		w[i] = v;
}

static void words_add(void *buf, uint64_t bytes, uint64_t v)
{
	uint64_t *w = buf, i;

	for (i = 0; i < bytes / 8; i++)
		w[i] += v;
}

/* The BO's bytes equal @model. */
static void bo_equals(struct ugpu_bo *bo, const void *model, uint64_t bytes)
{
	void *buf = malloc(bytes);

	assert_non_null(buf);
	assert_int_equal(ugpu_bo_read(bo, 0, buf, bytes), 0);
	if (memcmp(buf, model, bytes)) {
		uint64_t i = 0;

		while (((char *)buf)[i] == ((const char *)model)[i])
			i++;
		free(buf);
		fail_msg("BO differs from the model at byte %llu", (unsigned long long)i);
	}
	free(buf);
}

/* A BO of @bytes filled with pattern @seed, and its model. */
static struct ugpu_bo *bo_pat(struct fx *f, uint64_t bytes, uint32_t flags, enum ugpu_placement p0,
			      enum ugpu_placement p1, uint32_t seed, void **model)
{
	struct ugpu_bo *bo = bo_new(f->dev, bytes, flags, p0, p1, "bound");

	assert_non_null(bo);
	*model = malloc(bytes);
	assert_non_null(*model);
	pat_fill(*model, bytes, seed);
	assert_int_equal(ugpu_bo_write(bo, 0, *model, bytes), 0);
	return bo;
}

/*
 * Kernels on a bound BO against its model: read the whole, write a half,
 * add to a quarter straddling the two, read again; the BO then equals the
 * model byte for byte.
 */
static void exercise(struct ugpu_queue *q, struct ugpu_bo *bo, void *model, uint64_t va,
		     uint64_t bytes, uint64_t salt)
{
	char *m = model;

	assert_true(run_ok(q, UGPU_KERNEL_READ_SUM, va, bytes, 0) == words_sum(m, bytes));
	run_ok(q, UGPU_KERNEL_WRITE, va, bytes / 2, 0x1111000000000000ull + salt);
	words_set(m, bytes / 2, 0x1111000000000000ull + salt);
	run_ok(q, UGPU_KERNEL_ATOMIC_ADD, va + bytes * 3 / 8, bytes / 4, salt * 7 + 3);
	words_add(m + bytes * 3 / 8, bytes / 4, salt * 7 + 3);
	assert_true(run_ok(q, UGPU_KERNEL_READ_SUM, va, bytes, 0) == words_sum(m, bytes));
	bo_equals(bo, m, bytes);
}

/* ---- binds of every BO kind ---------------------------------------------------- */

static void test_every_bo_kind(void **state)
{
	static const struct {
		const char *name;
		uint32_t flags;
		enum ugpu_placement p0, p1;
		uint64_t bytes;
	} kinds[] = {
		{ "vram+system", 0, V, S, 1 * MIB },
		{ "vram only", 0, V, N, 512 * KIB },
		{ "system only", 0, S, N, 768 * KIB },
		{ "system first", 0, S, V, 256 * KIB },
		{ "pinned", UGPU_BO_PINNED, V, N, 1 * MIB },
		{ "contiguous", UGPU_BO_CONTIGUOUS, V, S, 2 * MIB },
		{ "no-restore", UGPU_BO_NO_RESTORE, V, S, 64 * KIB },
		{ "one page", 0, V, S, 4 * KIB },
	};
	struct fx *f = *state;
	struct ugpu_vm *vm = vm_new(f->dev, "kinds");
	struct ugpu_queue *q = queue_new(vm, "kinds");
	struct ugpu_vm_info vi = { .size = sizeof(vi) };
	struct ugpu_bo *bo[8];
	void *model[8];
	size_t i;

	for (i = 0; i < 8; i++) {
		uint64_t va = VA0 + i * 0x10000000ull;

		bo[i] = bo_pat(f, kinds[i].bytes, kinds[i].flags, kinds[i].p0, kinds[i].p1,
			       (uint32_t)(40 + i), &model[i]);
		assert_int_equal(ugpu_vm_bind(vm, bo[i], 0, va, kinds[i].bytes, 0), 0);
		exercise(q, bo[i], model[i], va, kinds[i].bytes, i + 1);
		assert_int_equal(bo_where(bo[i]), kinds[i].p0);
	}
	assert_int_equal(ugpu_vm_query(vm, &vi), 0);
	assert_int_equal(vi.binds, 8);
	assert_true(vi.page_tables > 1);

	/* A bind of part of a BO, at an offset: the kernel sees those bytes. */
	assert_int_equal(ugpu_vm_bind(vm, bo[0], 256 * KIB, 0x7000000000ull, 128 * KIB, 0), 0);
	assert_true(run_ok(q, UGPU_KERNEL_READ_SUM, 0x7000000000ull, 128 * KIB, 0) ==
		    words_sum((char *)model[0] + 256 * KIB, 128 * KIB));
	assert_int_equal(ugpu_vm_unbind(vm, 0x7000000000ull, 128 * KIB), 0);

	/* Unbound: every table but the root goes back. */
	for (i = 0; i < 8; i++)
		assert_int_equal(ugpu_vm_unbind(vm, VA0 + i * 0x10000000ull, kinds[i].bytes), 0);
	assert_int_equal(ugpu_vm_query(vm, &vi), 0);
	assert_int_equal(vi.binds, 0);
	assert_int_equal(vi.page_tables, 1);
	/* A kernel on what was bound faults now. */
	{
		struct ugpu_kernel_result r;

		run(q, UGPU_KERNEL_READ_SUM, VA0, 4096, 0, &r);
		assert_int_equal(r.status, -EFAULT);
		assert_true(r.fault_va == VA0);
	}
	for (i = 0; i < 8; i++) {
		bo_equals(bo[i], model[i], kinds[i].bytes); /* unbinding kept the bytes */
		ugpu_bo_put(bo[i]);
		free(model[i]);
	}
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
}

/* A read-only bind: reads work, a write or an atomic faults and changes
 * nothing; the fault names the address and the access. */
static void test_readonly_bind(void **state)
{
	struct fx *f = *state;
	struct ugpu_vm *vm = vm_new(f->dev, "ro");
	struct ugpu_queue *q = queue_new(vm, "ro");
	struct ugpu_kernel_result r;
	void *model;
	struct ugpu_bo *bo = bo_pat(f, 64 * KIB, 0, V, S, 7, &model);

	assert_int_equal(ugpu_vm_bind(vm, bo, 0, VA0, 64 * KIB, UGPU_BIND_READONLY), 0);
	assert_true(run_ok(q, UGPU_KERNEL_READ_SUM, VA0, 64 * KIB, 0) == words_sum(model, 64 * KIB));
	run(q, UGPU_KERNEL_WRITE, VA0 + 8 * KIB, 8, 5, &r);
	assert_int_equal(r.status, -EFAULT);
	assert_true(r.fault_va == VA0 + 8 * KIB);
	assert_int_equal(r.fault_access, UGPU_ACCESS_WRITE);
	run(q, UGPU_KERNEL_ATOMIC_ADD, VA0, 64 * KIB, 1, &r);
	assert_int_equal(r.status, -EFAULT);
	assert_int_equal(r.fault_access, UGPU_ACCESS_ATOMIC);
	bo_equals(bo, model, 64 * KIB);
	/* The queue goes on after faults. */
	assert_true(run_ok(q, UGPU_KERNEL_READ_SUM, VA0, 64 * KIB, 0) == words_sum(model, 64 * KIB));
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0); /* drops the bind's reference */
	ugpu_bo_put(bo);
	free(model);
}

/* ---- moves -------------------------------------------------------------------- */

/* A bound BO evicted by other allocations, then migrated back: kernels see
 * its bytes wherever it is, and the VM's tables are rewritten for it. */
static void test_follows_eviction_and_migration(void **state)
{
	struct fx *f = *state;
	struct ugpu_vm *vm = vm_new(f->dev, "evict");
	struct ugpu_queue *q = queue_new(vm, "evict");
	struct ugpu_vm_info vi = { .size = sizeof(vi) };
	struct ugpu_bo *hog[4];
	uint64_t gen;
	void *model;
	struct ugpu_bo *bo = bo_pat(f, 16 * MIB, 0, V, S, 11, &model);
	int i;

	assert_int_equal(ugpu_vm_bind(vm, bo, 0, VA0, 16 * MIB, 0), 0);
	exercise(q, bo, model, VA0, 16 * MIB, 1);
	assert_int_equal(bo_where(bo), V);
	assert_int_equal(ugpu_vm_query(vm, &vi), 0);
	gen = vi.pt_gen;

	/* 4 x 14 MiB of new VRAM BOs in 64 MiB: the bound BO (least recently
	 * used) is evicted. */
	for (i = 0; i < 4; i++) {
		hog[i] = bo_new(f->dev, 14 * MIB, 0, V, S, "hog");
		assert_non_null(hog[i]);
	}
	assert_int_equal(bo_where(bo), S);
	exercise(q, bo, model, VA0, 16 * MIB, 2);
	assert_int_equal(ugpu_vm_query(vm, &vi), 0);
	assert_true(vi.pt_gen > gen); /* its PTEs were rewritten */
	gen = vi.pt_gen;

	/* Migrations both ways. */
	for (i = 0; i < 4; i++)
		ugpu_bo_put(hog[i]);
	assert_int_equal(ugpu_bo_migrate(bo, V), 0);
	exercise(q, bo, model, VA0, 16 * MIB, 3);
	assert_int_equal(ugpu_bo_migrate(bo, S), 0);
	exercise(q, bo, model, VA0, 16 * MIB, 4);
	assert_int_equal(ugpu_bo_migrate(bo, V), 0);
	exercise(q, bo, model, VA0, 16 * MIB, 5);
	assert_int_equal(ugpu_vm_query(vm, &vi), 0);
	assert_true(vi.pt_gen > gen);

	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	ugpu_bo_put(bo);
	free(model);
}

/*
 * The device caches translations: every change of a VM's tables (a move of
 * a bound BO, an unbind, a new bind at the same address) must drop them
 * before the next kernel. One page, one queue, so the same hardware queue
 * and TLB entry are reused each time.
 */
static void test_tlb_dropped_after_changes(void **state)
{
	struct fx *f = *state;
	struct ugpu_vm *vm = vm_new(f->dev, "tlb");
	struct ugpu_queue *q = queue_new(vm, "tlb");
	struct ugpu_kernel_result r;
	void *ma, *mb, *m2 = malloc(4096);
	struct ugpu_bo *a = bo_pat(f, 4096, 0, V, S, 101, &ma);
	struct ugpu_bo *b = bo_pat(f, 4096, 0, V, S, 102, &mb);
	int i;

	assert_non_null(m2);
	assert_int_equal(ugpu_vm_bind(vm, a, 0, VA0, 4096, 0), 0);
	for (i = 0; i < 3; i++) {
		/* cached now */
		assert_true(run_ok(q, UGPU_KERNEL_READ_SUM, VA0, 4096, 0) == words_sum(ma, 4096));
		assert_int_equal(ugpu_bo_migrate(a, i & 1 ? V : S), 0);
		pat_fill(ma, 4096, 200 + (uint32_t)i); /* new bytes, at the new place only */
		assert_int_equal(ugpu_bo_write(a, 0, ma, 4096), 0);
		assert_true(run_ok(q, UGPU_KERNEL_READ_SUM, VA0, 4096, 0) == words_sum(ma, 4096));
	}
	assert_int_equal(ugpu_vm_unbind(vm, VA0, 4096), 0);
	run(q, UGPU_KERNEL_READ_SUM, VA0, 4096, 0, &r);
	assert_int_equal(r.status, -EFAULT);
	assert_int_equal(ugpu_vm_bind(vm, b, 0, VA0, 4096, 0), 0);
	assert_true(run_ok(q, UGPU_KERNEL_READ_SUM, VA0, 4096, 0) == words_sum(mb, 4096));
	/* Read-only at the same address: a write faults, though the page was
	 * writable (and cached so) a moment ago. */
	run_ok(q, UGPU_KERNEL_WRITE, VA0, 4096, 1);
	words_set(mb, 4096, 1);
	assert_int_equal(ugpu_vm_unbind(vm, VA0, 4096), 0);
	assert_int_equal(ugpu_vm_bind(vm, b, 0, VA0, 4096, UGPU_BIND_READONLY), 0);
	run(q, UGPU_KERNEL_WRITE, VA0, 4096, 2, &r);
	assert_int_equal(r.status, -EFAULT);
	bo_equals(b, mb, 4096);
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	ugpu_bo_put(a);
	ugpu_bo_put(b);
	free(ma);
	free(mb);
	free(m2);
}

/* Held at TEST_POINT_EXEC_SCAN: the exec engine does not see ends. */
struct gate {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool closed;
	int waiting;
};

static void gate_fn(void *arg, enum test_point_id id, void *obj)
{
	struct gate *g = arg;

	(void)id, (void)obj;
	pthread_mutex_lock(&g->lock);
	g->waiting++;
	pthread_cond_broadcast(&g->cond);
	while (g->closed)
		pthread_cond_wait(&g->cond, &g->lock);
	g->waiting--;
	pthread_mutex_unlock(&g->lock);
}

static void gate_open(struct gate *g)
{
	pthread_mutex_lock(&g->lock);
	g->closed = false;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

/* A BO bound in a VM with a running kernel does not move: eviction takes
 * others (or fails), migration and unbind answer -EBUSY; afterwards all
 * work again. */
static void test_busy_bo_does_not_move(void **state)
{
	struct fx *f = *state;
	struct gate g = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, true, 0 };
	struct ugpu_vm *vm = vm_new(f->dev, "busy");
	struct ugpu_queue *q = queue_new(vm, "busy");
	struct ugpu_kernel_result r = { .size = sizeof(r) };
	struct ugpu_queue_info qi = { .size = sizeof(qi) };
	struct ugpu_bo *hog[4];
	uint64_t fence;
	void *model;
	struct ugpu_bo *bo = bo_pat(f, 16 * MIB, 0, V, S, 12, &model);
	int i, n = 0;

	assert_int_equal(ugpu_vm_bind(vm, bo, 0, VA0, 16 * MIB, 0), 0);
	test_point_set(TEST_POINT_EXEC_SCAN, gate_fn, &g);
	assert_int_equal(submit(q, UGPU_KERNEL_ATOMIC_ADD, VA0, 16 * MIB, 1, &fence), 0);
	words_add(model, 16 * MIB, 1);
	assert_int_equal(ugpu_queue_query(q, &qi), 0);
	assert_true(qi.running);

	assert_int_equal(ugpu_bo_migrate(bo, S), -EBUSY);
	assert_int_equal(ugpu_vm_unbind(vm, VA0, 16 * MIB), -EBUSY);
	for (i = 0; i < 4; i++) {
		hog[i] = bo_new(f->dev, 14 * MIB, 0, V, N, "hog");
		n += hog[i] != NULL;
	}
	assert_true(n < 4); /* it would have taken the busy BO's VRAM */
	assert_int_equal(bo_where(bo), V);
	assert_int_equal(ugpu_fence_wait(q, fence, 0, &r), -EAGAIN);

	test_point_set(TEST_POINT_EXEC_SCAN, NULL, NULL);
	gate_open(&g);
	assert_int_equal(ugpu_fence_wait(q, fence, WAIT_MS, &r), 0);
	assert_int_equal(r.status, 0);
	bo_equals(bo, model, 16 * MIB);
	for (i = 0; i < 4; i++)
		ugpu_bo_put(hog[i]);
	assert_int_equal(ugpu_bo_migrate(bo, S), 0);
	exercise(q, bo, model, VA0, 16 * MIB, 6);
	assert_int_equal(ugpu_vm_unbind(vm, VA0, 16 * MIB), 0);
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	ugpu_bo_put(bo);
	free(model);
}

/* ---- power ---------------------------------------------------------------------- */

/* Host suspend with VMs alive: evictable bound BOs go to system memory,
 * pinned ones are backed up; kernels after resume see every byte, and a
 * kernel submitted while suspended runs after resume. */
static void test_host_suspend(void **state)
{
	struct fx *f = *state;
	struct ugpu_vm *vm = vm_new(f->dev, "pm");
	struct ugpu_queue *q = queue_new(vm, "pm");
	struct ugpu_kernel_result r = { .size = sizeof(r) };
	struct ugpu_bo *bo[3];
	void *model[3];
	uint64_t fence, sz[3] = { 4 * MIB, 2 * MIB, 1 * MIB };
	int i;

	bo[0] = bo_pat(f, sz[0], 0, V, S, 21, &model[0]);
	bo[1] = bo_pat(f, sz[1], UGPU_BO_PINNED, V, N, 22, &model[1]);
	bo[2] = bo_pat(f, sz[2], 0, S, N, 23, &model[2]);
	for (i = 0; i < 3; i++) {
		assert_int_equal(ugpu_vm_bind(vm, bo[i], 0, VA0 + (uint64_t)i * 0x40000000ull, sz[i], 0), 0);
		exercise(q, bo[i], model[i], VA0 + (uint64_t)i * 0x40000000ull, sz[i], 10 + i);
	}
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	/* Launches wait from prepare on: the kernel waits for resume. */
	assert_int_equal(submit(q, UGPU_KERNEL_ATOMIC_ADD, VA0, sz[0], 5, &fence), 0);
	words_add(model[0], sz[0], 5);
	assert_int_equal(ugpu_fence_wait(q, fence, 50, &r), -ETIMEDOUT);
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	assert_int_equal(bo_where(bo[0]), S);
	assert_int_equal(ugpu_vm_bind(vm, bo[0], 0, 0x200000000ull, 4096, 0), -EBUSY);
	assert_int_equal(ugpu_fence_wait(q, fence, 20, &r), -ETIMEDOUT);
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	assert_int_equal(ugpu_fence_wait(q, fence, WAIT_MS, &r), 0);
	assert_int_equal(r.status, 0);
	for (i = 0; i < 3; i++)
		exercise(q, bo[i], model[i], VA0 + (uint64_t)i * 0x40000000ull, sz[i], 20 + i);
	/* A second cycle, without prepare. */
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	for (i = 0; i < 3; i++) {
		exercise(q, bo[i], model[i], VA0 + (uint64_t)i * 0x40000000ull, sz[i], 30 + i);
		ugpu_bo_put(bo[i]); /* the binds keep them */
		free(model[i]);
	}
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
}

static enum sim_power_state sim_power(struct fx *f)
{
	struct sim_state ss;

	assert_int_equal(sim_state(f->sim, 0, &ss), 0);
	return ss.power;
}

/* Runtime D3cold with VMs alive: VRAM is lost; the page tables come back
 * by CPU, the evicted bound BO is used from system memory, and kernels see
 * every byte. */
static void test_runtime_d3cold(void **state)
{
	struct fx *f = *state;
	struct ugpu_vm *vm = vm_new(f->dev, "d3cold");
	struct ugpu_queue *q = queue_new(vm, "d3cold");
	struct ugpu_rpm_stats st = { .size = sizeof(st) };
	struct ugpu_bo *a, *p;
	void *ma, *mp;
	int cycle;

	a = bo_pat(f, 2 * MIB, 0, V, S, 31, &ma);
	p = bo_pat(f, 1 * MIB, UGPU_BO_PINNED, V, N, 32, &mp);
	assert_int_equal(ugpu_vm_bind(vm, a, 0, VA0, 2 * MIB, 0), 0);
	assert_int_equal(ugpu_vm_bind(vm, p, 0, VA0 + 0x10000000ull, 1 * MIB, 0), 0);
	assert_int_equal(ugpu_device_rpm_set_d3cold_threshold(f->dev, 60 * MIB), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	for (cycle = 0; cycle < 3; cycle++) {
		exercise(q, a, ma, VA0, 2 * MIB, 40 + (uint64_t)cycle);
		exercise(q, p, mp, VA0 + 0x10000000ull, 1 * MIB, 50 + (uint64_t)cycle);
		assert_int_equal(ugpu_device_rpm_suspend(f->dev), 0);
		assert_int_equal(sim_power(f), SIM_POWER_D3COLD);
		assert_int_equal(bo_where(a), S);
	}
	assert_int_equal(ugpu_device_rpm_stats(f->dev, &st), 0);
	assert_true(st.suspends_d3cold >= 3);
	exercise(q, a, ma, VA0, 2 * MIB, 60);
	exercise(q, p, mp, VA0 + 0x10000000ull, 1 * MIB, 61);
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	ugpu_bo_put(a);
	ugpu_bo_put(p);
	free(ma);
	free(mp);
}

/* ---- removal -------------------------------------------------------------------- */

/* An orderly removal with VMs alive: bound BOs end in system memory with
 * their bytes; kernels waiting are cancelled; the VM is dead but its
 * handles still work for what needs no device. */
static void test_orderly_removal(void **state)
{
	struct fx *f = *state;
	struct ugpu_vm *vm = vm_new(f->dev, "gone");
	struct ugpu_queue *q = queue_new(vm, "gone");
	struct ugpu_vm_info vi = { .size = sizeof(vi) };
	struct ugpu_kernel_result r = { .size = sizeof(r) };
	struct ugpu_unplug_info ui;
	struct ugpu_bo *a, *p;
	uint64_t fence[3], done;
	void *ma, *mp;
	int i;

	a = bo_pat(f, 4 * MIB, 0, V, S, 61, &ma);
	p = bo_pat(f, 1 * MIB, 0, V, N, 62, &mp);
	assert_int_equal(ugpu_vm_bind(vm, a, 0, VA0, 4 * MIB, 0), 0);
	assert_int_equal(ugpu_vm_bind(vm, p, 0, VA0 + 0x10000000ull, 1 * MIB, 0), 0);
	exercise(q, a, ma, VA0, 4 * MIB, 70);
	exercise(q, p, mp, VA0 + 0x10000000ull, 1 * MIB, 71);
	assert_int_equal(submit(q, UGPU_KERNEL_WRITE, VA0, 4096, 1, &done), 0);
	assert_int_equal(ugpu_fence_wait(q, done, WAIT_MS, &r), 0);
	words_set(ma, 4096, 1);

	/* Kernels waiting (launches stopped by a prepare) at the removal. */
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	for (i = 0; i < 3; i++)
		assert_int_equal(submit(q, UGPU_KERNEL_WRITE, VA0, 4 * MIB, 9, &fence[i]), 0);
	assert_int_equal(ugpu_device_unplug(f->dev), 0);
	ui = fx_wait_removed(f->dev, WAIT_MS);
	assert_int_equal(ui.status, 0);
	for (i = 0; i < 3; i++) {
		assert_int_equal(ugpu_fence_wait(q, fence[i], WAIT_MS, &r), 0);
		assert_int_equal(r.status, -ECANCELED);
	}
	assert_int_equal(ugpu_fence_wait(q, done, 0, &r), 0); /* still known */
	assert_int_equal(r.status, 0);
	assert_int_equal(bo_where(a), S);
	assert_int_equal(bo_where(p), S);
	bo_equals(a, ma, 4 * MIB);
	bo_equals(p, mp, 1 * MIB);

	assert_int_equal(submit(q, UGPU_KERNEL_READ_SUM, VA0, 8, 0, &fence[0]), -ENODEV);
	assert_int_equal(ugpu_vm_bind(vm, a, 0, 0x200000000ull, 4096, 0), -ENODEV);
	assert_int_equal(ugpu_vm_query(vm, &vi), 0);
	assert_true(vi.dead);
	assert_int_equal(vi.page_tables, 0);
	{
		struct ugpu_vm *v2 = NULL;

		assert_int_equal(ugpu_vm_create(f->dev, NULL, &v2), -ENODEV);
		assert_null(v2);
	}
	assert_int_equal(ugpu_vm_unbind(vm, VA0, 4 * MIB), 0);
	assert_int_equal(ugpu_vm_destroy(vm), -EBUSY); /* its queue first */
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	bo_equals(a, ma, 4 * MIB);
	ugpu_bo_put(a);
	ugpu_bo_put(p);
	free(ma);
	free(mp);
}

/* ---- several VMs and queues ------------------------------------------------------ */

#define NQ 8 /* more queues than the device has exec queues (4) */
#define ROUNDS 40

struct worker {
	struct ugpu_queue *q;
	uint64_t va, bytes;
	uint64_t expect;
	int failures;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	struct ugpu_kernel_result r = { .size = sizeof(r) };
	struct ugpu_kernel k = { .size = sizeof(k), .va = w->va, .bytes = w->bytes };
	uint64_t fence = 0;
	int i;

	for (i = 0; i < ROUNDS; i++) {
		k.op = UGPU_KERNEL_ATOMIC_ADD;
		k.value = (uint64_t)i + 1;
		if (ugpu_queue_submit(w->q, &k, &fence))
			w->failures++;
		if (i % 8 == 7) {
			k.op = UGPU_KERNEL_READ_SUM;
			if (ugpu_queue_submit(w->q, &k, &fence) ||
			    ugpu_fence_wait(w->q, fence, WAIT_MS, &r) || r.status)
				w->failures++;
			else if (r.sum != (uint64_t)(i + 1) * (uint64_t)(i + 2) / 2 * (w->bytes / 8))
				w->failures++;
		}
	}
	if (ugpu_fence_wait(w->q, fence, WAIT_MS, &r) || r.status)
		w->failures++;
	return NULL;
}

static void test_several_vms_at_once(void **state)
{
	struct fx *f = *state;
	struct ugpu_vm *vm[NQ / 2];
	struct ugpu_queue *q[NQ];
	struct ugpu_bo *bo[NQ];
	struct worker w[NQ];
	pthread_t t[NQ];
	int i;

	for (i = 0; i < NQ / 2; i++)
		vm[i] = vm_new(f->dev, "many");
	for (i = 0; i < NQ; i++) {
		void *zero = calloc(1, 256 * KIB);

		bo[i] = bo_new(f->dev, 256 * KIB, 0, i & 1 ? S : V, i & 1 ? N : S, "many");
		assert_non_null(bo[i]);
		assert_int_equal(ugpu_bo_write(bo[i], 0, zero, 256 * KIB), 0);
		free(zero);
		/* Two queues per VM, each on its own bind. */
		assert_int_equal(ugpu_vm_bind(vm[i / 2], bo[i], 0, VA0 + (uint64_t)(i & 1) * MIB,
					      256 * KIB, 0),
				 0);
		q[i] = queue_new(vm[i / 2], "many");
		w[i] = (struct worker){ .q = q[i], .va = VA0 + (uint64_t)(i & 1) * MIB,
					.bytes = 256 * KIB };
	}
	for (i = 0; i < NQ; i++)
		assert_int_equal(pthread_create(&t[i], NULL, worker_run, &w[i]), 0);
	for (i = 0; i < NQ; i++) {
		uint64_t *buf = malloc(256 * KIB), want = (uint64_t)ROUNDS * (ROUNDS + 1) / 2;
		uint64_t k;

		pthread_join(t[i], NULL);
		assert_int_equal(w[i].failures, 0);
		assert_int_equal(ugpu_bo_read(bo[i], 0, buf, 256 * KIB), 0);
		for (k = 0; k < 256 * KIB / 8; k++)
			assert_true(buf[k] == want);
		free(buf);
		assert_int_equal(ugpu_queue_destroy(q[i]), 0);
	}
	for (i = 0; i < NQ / 2; i++)
		assert_int_equal(ugpu_vm_destroy(vm[i]), 0);
	for (i = 0; i < NQ; i++)
		ugpu_bo_put(bo[i]);
}

/* A kernel that faults on one queue is aborted with the address and the
 * access, while a kernel on another queue (another VM) completes. */
static void test_fault_on_one_queue(void **state)
{
	struct fx *f = *state;
	struct ugpu_vm *good_vm = vm_new(f->dev, "good"), *bad_vm = vm_new(f->dev, "bad");
	struct ugpu_queue *good = queue_new(good_vm, "good"), *bad = queue_new(bad_vm, "bad");
	struct ugpu_kernel_result r = { .size = sizeof(r) };
	uint64_t fg, fb;
	void *model;
	struct ugpu_bo *bo = bo_pat(f, 16 * MIB, 0, V, S, 81, &model), *half;
	int i;

	assert_int_equal(ugpu_vm_bind(good_vm, bo, 0, VA0, 16 * MIB, 0), 0);
	for (i = 0; i < 3; i++) {
		assert_int_equal(submit(good, UGPU_KERNEL_READ_SUM, VA0, 16 * MIB, 0, &fg), 0);
		assert_int_equal(submit(bad, i == 0 ? UGPU_KERNEL_READ_SUM : i == 1 ? UGPU_KERNEL_WRITE : UGPU_KERNEL_ATOMIC_ADD,
					VA0 + 0x1230000ull, 64 * KIB, 1, &fb),
				 0);
		assert_int_equal(ugpu_fence_wait(bad, fb, WAIT_MS, &r), 0);
		assert_int_equal(r.status, -EFAULT);
		assert_true(r.fault_va >= VA0 + 0x1230000ull && r.fault_va < VA0 + 0x1240000ull);
		assert_int_equal(r.fault_va & 4095, 0);
		assert_int_equal(r.fault_access, i == 0 ? UGPU_ACCESS_READ : i == 1 ? UGPU_ACCESS_WRITE : UGPU_ACCESS_ATOMIC);
		assert_int_equal(ugpu_fence_wait(good, fg, WAIT_MS, &r), 0);
		assert_int_equal(r.status, 0);
		assert_true(r.sum == words_sum(model, 16 * MIB));
	}
	/* Half bound: the kernel faults at the first page past the bind. */
	half = bo_new(f->dev, 64 * KIB, 0, V, S, "half");
	assert_int_equal(ugpu_vm_bind(bad_vm, half, 0, VA0, 64 * KIB, 0), 0);
	run(bad, UGPU_KERNEL_READ_SUM, VA0, 128 * KIB, 0, &r);
	assert_int_equal(r.status, -EFAULT);
	assert_true(r.fault_va >= VA0 + 64 * KIB && r.fault_va < VA0 + 128 * KIB);
	assert_true(run_ok(bad, UGPU_KERNEL_READ_SUM, VA0, 64 * KIB, 0) == 0);
	ugpu_bo_put(half);

	assert_int_equal(ugpu_queue_destroy(good), 0);
	assert_int_equal(ugpu_queue_destroy(bad), 0);
	assert_int_equal(ugpu_vm_destroy(good_vm), 0);
	assert_int_equal(ugpu_vm_destroy(bad_vm), 0);
	ugpu_bo_put(bo);
	free(model);
}

/* ---- fences ----------------------------------------------------------------------- */

static bool fd_readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

/* Polls, timeouts, eventfds, the depth limit and stale results, with
 * launches held back by a suspend prepare (so "still pending" is certain). */
static void test_fences(void **state)
{
	struct fx *f = *state;
	struct ugpu_vm *vm = vm_new(f->dev, "fences");
	struct ugpu_queue *q = queue_new(vm, "fences");
	struct ugpu_kernel_result r = { .size = sizeof(r) };
	struct ugpu_queue_info qi = { .size = sizeof(qi) };
	struct ugpu_bo *bo = bo_new(f->dev, 64 * KIB, 0, V, S, "f");
	uint64_t fence, first = 0, last = 0, i;
	int efd, efd_done;

	assert_non_null(bo);
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, VA0, 64 * KIB, 0), 0);
	assert_int_equal(submit(q, UGPU_KERNEL_WRITE, VA0, 64 * KIB, 3, &fence), 0);
	assert_int_equal(fence, 1);
	assert_int_equal(ugpu_fence_wait(q, fence, WAIT_MS, &r), 0);
	assert_int_equal(ugpu_fence_eventfd(q, fence, &efd_done), 0);
	assert_true(fd_readable(efd_done, 0)); /* completed already */
	close(efd_done);

	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	for (i = 0; i < UGPU_QUEUE_DEPTH; i++) {
		assert_int_equal(submit(q, UGPU_KERNEL_ATOMIC_ADD, VA0, 64 * KIB, 1, &fence), 0);
		if (!first)
			first = fence;
		last = fence;
	}
	assert_int_equal(last, first + UGPU_QUEUE_DEPTH - 1);
	assert_int_equal(submit(q, UGPU_KERNEL_ATOMIC_ADD, VA0, 64 * KIB, 1, &fence), -EAGAIN);
	assert_int_equal(ugpu_queue_query(q, &qi), 0);
	assert_int_equal(qi.waiting, UGPU_QUEUE_DEPTH);
	assert_int_equal(ugpu_fence_wait(q, first, 0, &r), -EAGAIN);
	assert_int_equal(ugpu_fence_wait(q, last, 30, &r), -ETIMEDOUT);
	assert_int_equal(ugpu_fence_wait(q, last + 1, 0, &r), -EINVAL);
	assert_int_equal(ugpu_fence_wait(q, 0, 0, &r), -EINVAL);
	assert_int_equal(ugpu_fence_wait(q, first, -1, &r), -EINVAL);
	assert_int_equal(ugpu_fence_eventfd(q, last, &efd), 0);
	assert_int_equal(ugpu_fence_eventfd(q, last + 1, &efd_done), -EINVAL);
	assert_false(fd_readable(efd, 20));

	assert_int_equal(ugpu_device_suspend_cancel(f->dev), 0);
	assert_true(fd_readable(efd, WAIT_MS));
	close(efd);
	assert_int_equal(ugpu_fence_wait(q, last, WAIT_MS, &r), 0);
	assert_int_equal(r.status, 0);
	assert_true(run_ok(q, UGPU_KERNEL_READ_SUM, VA0, 64 * KIB, 0) ==
		    (3 + UGPU_QUEUE_DEPTH) * (64 * KIB / 8));
	/* The first fence's result was overwritten UGPU_QUEUE_RESULTS later. */
	assert_int_equal(ugpu_fence_wait(q, first, 0, &r), -ESTALE);
	assert_int_equal(ugpu_fence_wait(q, last, 0, &r), 0);

	/* An eventfd closed by the caller before its fence is harmless. */
	assert_int_equal(submit(q, UGPU_KERNEL_READ_SUM, VA0, 64 * KIB, 0, &fence), 0);
	assert_int_equal(ugpu_fence_eventfd(q, fence, &efd), 0);
	close(efd);
	assert_int_equal(ugpu_fence_wait(q, fence, WAIT_MS, &r), 0);

	/* Destroy cancels what waits. */
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(submit(q, UGPU_KERNEL_READ_SUM, VA0, 64 * KIB, 0, &fence), 0);
	assert_int_equal(ugpu_fence_eventfd(q, fence, &efd), 0);
	assert_int_equal(ugpu_vm_destroy(vm), -EBUSY);
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_true(fd_readable(efd, 0));
	close(efd);
	assert_int_equal(ugpu_device_suspend_cancel(f->dev), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	ugpu_bo_put(bo);
}

/* ---- bad input --------------------------------------------------------------------- */

static void test_bad_input(void **state)
{
	struct fx *f = *state;
	struct ugpu_vm_opts vo = { .size = sizeof(vo) };
	struct ugpu_vm *vm = NULL, *other_vm = NULL;
	struct ugpu_queue *q;
	struct ugpu_kernel k = { .size = sizeof(k), .op = UGPU_KERNEL_READ_SUM, .va = VA0, .bytes = 8 };
	struct ugpu_vm_info vi = { .size = sizeof(vi) };
	struct ugpu_bo *bo = bo_new(f->dev, 64 * KIB, 0, V, S, "in"), *other_bo;
	struct ugpu_context *ctx2;
	struct ugpu_device *dev2;
	struct sim *sim2;
	struct sim_opts so;
	char uri[256];
	uint64_t fence = 0, gen;
	const uint64_t top = 1ull << UGPU_VM_VA_BITS;

	assert_non_null(bo);
	/* VM creation. */
	assert_int_equal(ugpu_vm_create(NULL, NULL, &vm), -EINVAL);
	assert_int_equal(ugpu_vm_create(f->dev, NULL, NULL), -EINVAL);
	vo.flags = 0x80;
	assert_int_equal(ugpu_vm_create(f->dev, &vo, &vm), -EINVAL);
	vo.flags = UGPU_VM_MIRROR; /* empty span */
	assert_int_equal(ugpu_vm_create(f->dev, &vo, &vm), -EINVAL);
	vo.mirror_start = 0x1001;
	vo.mirror_size = 0x10000;
	assert_int_equal(ugpu_vm_create(f->dev, &vo, &vm), -EINVAL);
	vo.mirror_start = top - 0x1000;
	vo.mirror_size = 0x2000; /* past the range */
	assert_int_equal(ugpu_vm_create(f->dev, &vo, &vm), -EINVAL);
	vo.flags = 0; /* a span without the mode */
	vo.mirror_start = 0x10000;
	vo.mirror_size = 0x10000;
	assert_int_equal(ugpu_vm_create(f->dev, &vo, &vm), -EINVAL);
	vo.size = 4;
	assert_int_equal(ugpu_vm_create(f->dev, &vo, &vm), -EINVAL);
	assert_null(vm);
	vm = vm_new(f->dev, "input");
	q = queue_new(vm, "input");

	/* Binds: nothing changes on any refusal. */
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, VA0, 64 * KIB, 0), 0);
	assert_int_equal(ugpu_vm_query(vm, &vi), 0);
	gen = vi.pt_gen;
	assert_int_equal(ugpu_vm_bind(NULL, bo, 0, VA0, 4096, 0), -EINVAL);
	assert_int_equal(ugpu_vm_bind(vm, NULL, 0, VA0, 4096, 0), -EINVAL);
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, 0x200000800ull, 4096, 0), -EINVAL); /* va */
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, 0x200000000ull, 100, 0), -EINVAL); /* size */
	assert_int_equal(ugpu_vm_bind(vm, bo, 512, 0x200000000ull, 4096, 0), -EINVAL); /* offset */
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, 0x200000000ull, 0, 0), -EINVAL); /* empty */
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, 0x200000000ull, 128 * KIB, 0), -EINVAL); /* past BO */
	assert_int_equal(ugpu_vm_bind(vm, bo, 60 * KIB, 0x200000000ull, 8 * KIB, 0), -EINVAL);
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, top - 4096, 8192, 0), -EINVAL); /* past VA */
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, top, 4096, 0), -EINVAL);
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, 0x200000000ull, 4096, 0x10), -EINVAL); /* flags */
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, VA0 + 60 * KIB, 8 * KIB, 0), -EINVAL); /* overlap */
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, VA0 - 4096, 8 * KIB, 0), -EINVAL);
	assert_int_equal(ugpu_vm_query(vm, &vi), 0);
	assert_int_equal(vi.binds, 1);
	assert_true(vi.pt_gen == gen);
	/* Adjacent binds are fine. */
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, VA0 + 64 * KIB, 4096, 0), 0);
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, VA0 - 4096, 4096, UGPU_BIND_READONLY), 0);
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, top - 4096, 4096, 0), 0);

	/* A BO of a device of another context (one of the same context
	 * binds in place: test_multidev). */
	sim_opts_init(&so);
	so.vram_size = 16 * MIB;
	assert_int_equal(sim_start(&so, &sim2), 0);
	{
		struct ugpu_context_opts co = { .size = sizeof(co), .log_level = UGPU_LOG_ERROR };

		assert_int_equal(ugpu_context_create(&co, &ctx2), 0);
	}
	snprintf(uri, sizeof(uri), "vfio-user:%s", sim_socket_path(sim2, 0));
	assert_int_equal(ugpu_device_open(ctx2, uri, &dev2), 0);
	other_bo = bo_new(dev2, 4096, 0, V, S, "other");
	assert_non_null(other_bo);
	assert_int_equal(ugpu_vm_bind(vm, other_bo, 0, 0x300000000ull, 4096, 0), -EXDEV);
	other_vm = vm_new(dev2, "other");
	assert_int_equal(ugpu_vm_bind(other_vm, bo, 0, VA0, 4096, 0), -EXDEV);
	assert_int_equal(ugpu_vm_destroy(other_vm), 0);
	ugpu_bo_put(other_bo);
	ugpu_device_close(dev2);
	ugpu_context_destroy(ctx2);
	sim_stop(sim2);

	/* Unbinds: whole binds, at least one. */
	assert_int_equal(ugpu_vm_unbind(NULL, VA0, 4096), -EINVAL);
	assert_int_equal(ugpu_vm_unbind(vm, VA0, 4096), -EINVAL); /* part of one */
	assert_int_equal(ugpu_vm_unbind(vm, VA0 + 1, 4096), -EINVAL);
	assert_int_equal(ugpu_vm_unbind(vm, VA0, 0), -EINVAL);
	assert_int_equal(ugpu_vm_unbind(vm, 0x500000000ull, 4096), -EINVAL); /* none */
	assert_int_equal(ugpu_vm_unbind(vm, VA0, 64 * KIB + 2048), -EINVAL);
	assert_int_equal(ugpu_vm_query(vm, &vi), 0);
	assert_int_equal(vi.binds, 4);
	/* Two whole binds at once, and the range may reach past them. */
	assert_int_equal(ugpu_vm_unbind(vm, VA0, 128 * KIB), 0);
	assert_int_equal(ugpu_vm_query(vm, &vi), 0);
	assert_int_equal(vi.binds, 2);

	/* Submission. */
	assert_int_equal(ugpu_queue_submit(NULL, &k, &fence), -EINVAL);
	assert_int_equal(ugpu_queue_submit(q, NULL, &fence), -EINVAL);
	assert_int_equal(ugpu_queue_submit(q, &k, NULL), -EINVAL);
	k.op = 9;
	assert_int_equal(ugpu_queue_submit(q, &k, &fence), -EINVAL);
	k.op = UGPU_KERNEL_WRITE;
	k.va = VA0 + 4;
	assert_int_equal(ugpu_queue_submit(q, &k, &fence), -EINVAL);
	k.va = VA0;
	k.bytes = 12;
	assert_int_equal(ugpu_queue_submit(q, &k, &fence), -EINVAL);
	k.va = top - 8;
	k.bytes = 16;
	assert_int_equal(ugpu_queue_submit(q, &k, &fence), -EINVAL);
	k.size = offsetof(struct ugpu_kernel, value);
	k.va = VA0;
	k.bytes = 8;
	assert_int_equal(ugpu_queue_submit(q, &k, &fence), -EINVAL);
	assert_int_equal(fence, 0); /* nothing was queued */
	/* An empty kernel completes. */
	k.size = sizeof(k);
	k.bytes = 0;
	assert_int_equal(ugpu_queue_submit(q, &k, &fence), 0);
	assert_int_equal(fence, 1);
	assert_int_equal(ugpu_fence_wait(q, fence, WAIT_MS, NULL), 0);

	{
		struct ugpu_queue_opts qo = { .size = 2 };
		struct ugpu_queue *q2 = NULL;

		assert_int_equal(ugpu_queue_create(vm, &qo, &q2), -EINVAL);
		assert_int_equal(ugpu_queue_create(NULL, NULL, &q2), -EINVAL);
		assert_int_equal(ugpu_queue_create(vm, NULL, NULL), -EINVAL);
	}
	assert_int_equal(ugpu_vm_query(NULL, &vi), -EINVAL);
	assert_int_equal(ugpu_queue_destroy(NULL), 0);
	assert_int_equal(ugpu_vm_destroy(NULL), 0);
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	ugpu_bo_put(bo);
}

/* The CPU-address-mirror mode: its span is recorded; binds inside punch
 * holes in it (the BO's bytes, not the process's); elsewhere in the span
 * kernels use the process's memory (shared virtual memory, test_svm.c),
 * and an address the process has not mapped faults, named. */
/* Page tables come back to the VM's pool when their binds go: a VM that
 * grew its pool several times and then unbinds everything must have room
 * for every table (the free list once held only what was free when it last
 * grew: an ASan build saw the write past its end). */
static void test_tables_come_back(void **state)
{
	struct fx *f = *state;
	struct ugpu_vm *vm = vm_new(f->dev, "tables");
	struct ugpu_queue *q = queue_new(vm, "tables");
	struct ugpu_vm_info vi = { .size = sizeof(vi) };
	void *model;
	struct ugpu_bo *bo = bo_pat(f, 4096, 0, V, S, 17, &model);
	const int n = 40; /* one leaf and one middle table each: 5 chunks */
	uint64_t sum;

	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < n; i++)
			assert_int_equal(ugpu_vm_bind(vm, bo, 0, VA0 + ((uint64_t)i << 30), 4096, 0), 0);
		assert_int_equal(ugpu_vm_query(vm, &vi), 0);
		assert_true(vi.page_tables >= (uint64_t)(2 * n));
		sum = run_ok(q, UGPU_KERNEL_READ_SUM, VA0 + ((uint64_t)(n - 1) << 30), 4096, 0);
		assert_true(sum == run_ok(q, UGPU_KERNEL_READ_SUM, VA0, 4096, 0));
		for (int i = 0; i < n; i++)
			assert_int_equal(ugpu_vm_unbind(vm, VA0 + ((uint64_t)i << 30), 4096), 0);
		assert_int_equal(ugpu_vm_query(vm, &vi), 0);
		assert_true(vi.page_tables <= 2); /* the root and what it keeps */
	}
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	ugpu_bo_put(bo);
	free(model);
}

static void test_mirror_vm(void **state)
{
	struct fx *f = *state;
	size_t span = 8 * MIB;
	char *cpu = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct ugpu_vm_opts vo = { .size = sizeof(vo), .flags = UGPU_VM_MIRROR,
				   .mirror_start = (uintptr_t)cpu, .mirror_size = span,
				   .name = "mirror" };
	struct ugpu_vm_info vi = { .size = sizeof(vi) };
	struct ugpu_kernel_result r;
	struct ugpu_vm *vm = NULL;
	struct ugpu_queue *q;
	void *model;
	struct ugpu_bo *bo;

	assert_true(cpu != MAP_FAILED);
	assert_int_equal(munmap(cpu + 4 * MIB, 4 * MIB), 0); /* the second half: nothing */
	memset(cpu, 1, 4 * MIB);
	assert_int_equal(ugpu_vm_create(f->dev, &vo, &vm), 0);
	assert_int_equal(ugpu_vm_query(vm, &vi), 0);
	assert_int_equal(vi.flags, UGPU_VM_MIRROR);
	assert_true(vi.mirror_start == (uintptr_t)cpu && vi.mirror_size == span);
	q = queue_new(vm, "mirror");
	bo = bo_pat(f, 64 * KIB, 0, V, S, 91, &model);
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, (uintptr_t)cpu + MIB, 64 * KIB, 0), 0);
	exercise(q, bo, model, (uintptr_t)cpu + MIB, 64 * KIB, 9);
	/* process memory around the bind */
	assert_true(run_ok(q, UGPU_KERNEL_READ_SUM, (uintptr_t)cpu, 4096, 0) ==
		    512 * 0x0101010101010101ull);
	assert_true(((unsigned char *)cpu)[MIB] == 1); /* the bind did not touch it */
	run(q, UGPU_KERNEL_READ_SUM, (uintptr_t)cpu + 5 * MIB, 4096, 0, &r);
	assert_int_equal(r.status, -EFAULT);
	assert_true(r.fault_va == (uintptr_t)cpu + 5 * MIB);
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	ugpu_bo_put(bo);
	free(model);
	munmap(cpu, 4 * MIB);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_every_bo_kind, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readonly_bind, setup, teardown),
		cmocka_unit_test_setup_teardown(test_follows_eviction_and_migration, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tlb_dropped_after_changes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_busy_bo_does_not_move, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_suspend, setup, teardown),
		cmocka_unit_test_setup_teardown(test_runtime_d3cold, setup, teardown),
		cmocka_unit_test_setup_teardown(test_orderly_removal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_several_vms_at_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fault_on_one_queue, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fences, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tables_come_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mirror_vm, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
