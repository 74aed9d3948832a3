/* SPDX-License-Identifier: MIT */
/*
 * Experiments from the review of GPU VMs and submission (mm/vm.c,
 * mm/submit.c, engines/sim/exec_sim.c): each test pins down one interleaving
 * that broke an invariant of mm/vm.h ("no BO moves under a running kernel;
 * every kernel runs on current PTEs") or an accounting rule, and passes once
 * it is fixed.
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
#include <unistd.h>

#include <cmocka.h>

#include <ugpu/bo.h>
#include <ugpu/pm.h>
#include <ugpu/rpm.h>
#include <ugpu/unplug.h>
#include <ugpu/vm.h>

#include "base/test_point.h"
#include "src/unplug.h"
#include "tools/ugpu-sim/sim.h"
#include "test_bo_common.h"

#define MIB (1ull << 20)
#define KIB (1ull << 10)
#define VA0 0x100000000ull
#define WAIT_MS 10000

static int setup(void **state)
{
	struct fx *f;

	if (fx_setup_vram(state, 64 * MIB))
		return -1;
	f = *state;
	ugpu_device_rpm_set_autosuspend_delay(f->dev, -1);
	return 0;
}

struct gate;
static struct gate *open_at_teardown;
static void gate_open(struct gate *g);
struct hold;
static struct hold *release_at_teardown;
static void hold_release_all(struct hold *h);

static int teardown(void **state)
{
	test_point_clear_all();
	if (open_at_teardown) /* a failed assertion left a driver thread parked */
		gate_open(open_at_teardown);
	open_at_teardown = NULL;
	if (release_at_teardown)
		hold_release_all(release_at_teardown);
	release_at_teardown = NULL;
	return fx_teardown(state);
}

static struct ugpu_vm *vm_new(struct ugpu_device *dev, const char *name)
{
	struct ugpu_vm_opts o = { .size = sizeof(o), .name = name };
	struct ugpu_vm *vm = NULL;

	assert_int_equal(ugpu_vm_create(dev, &o, &vm), 0);
	return vm;
}

static struct ugpu_queue *queue_new(struct ugpu_vm *vm, const char *name)
{
	struct ugpu_queue_opts o = { .size = sizeof(o), .name = name };
	struct ugpu_queue *q = NULL;

	assert_int_equal(ugpu_queue_create(vm, &o, &q), 0);
	return q;
}

static int submit(struct ugpu_queue *q, enum ugpu_kernel_op op, uint64_t va, uint64_t bytes,
		  uint64_t value, uint64_t *fence)
{
	struct ugpu_kernel k = { .size = sizeof(k), .op = op, .va = va, .bytes = bytes,
				 .value = value };

	return ugpu_queue_submit(q, &k, fence);
}

static void run(struct ugpu_queue *q, enum ugpu_kernel_op op, uint64_t va, uint64_t bytes,
		uint64_t value, struct ugpu_kernel_result *r)
{
	uint64_t fence = 0;

	memset(r, 0, sizeof(*r));
	r->size = sizeof(*r);
	assert_int_equal(submit(q, op, va, bytes, value, &fence), 0);
	assert_int_equal(ugpu_fence_wait(q, fence, WAIT_MS, r), 0);
}

static uint64_t words_sum(const void *buf, uint64_t bytes)
{
	const uint64_t *w = buf;
	uint64_t s = 0, i;

	for (i = 0; i < bytes / 8; i++)
		s += w[i];
	return s;
}

static void words_add(void *buf, uint64_t bytes, uint64_t v)
{
	uint64_t *w = buf, i;

	for (i = 0; i < bytes / 8; i++)
		w[i] += v;
}

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

/* Held at a test point until opened. */
struct gate {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool closed;
	int waiting;
};

#define GATE_INIT { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, true, 0 }

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

/* ---- 1. ugpu_bo_pin() moves a BO under a running kernel ------------------------ */

/*
 * A BO bound in a VM with a running kernel must not move (mm/vm.h):
 * migration answers -EBUSY. Pinning moves a BO back to its first placement,
 * so it must answer the same (or not move it).
 */
static void test_pin_does_not_move_busy_bo(void **state)
{
	struct fx *f = *state;
	static struct gate g;
	struct ugpu_vm *vm = vm_new(f->dev, "pin");
	struct ugpu_queue *q = queue_new(vm, "pin");
	struct ugpu_kernel_result r = { .size = sizeof(r) };
	struct ugpu_queue_info qi = { .size = sizeof(qi) };
	uint64_t fence;
	void *model;
	struct ugpu_bo *bo = bo_pat(f, 1 * MIB, 0, V, S, 5, &model);
	int ret;

	assert_int_equal(ugpu_bo_migrate(bo, S), 0);
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, VA0, 1 * MIB, 0), 0);
	g = (struct gate)GATE_INIT;
	open_at_teardown = &g;
	test_point_set(TEST_POINT_EXEC_SCAN, gate_fn, &g);
	assert_int_equal(submit(q, UGPU_KERNEL_ATOMIC_ADD, VA0, 1 * MIB, 1, &fence), 0);
	words_add(model, 1 * MIB, 1);
	assert_int_equal(ugpu_queue_query(q, &qi), 0);
	assert_true(qi.running);

	assert_int_equal(ugpu_bo_migrate(bo, V), -EBUSY); /* the rule */
	ret = ugpu_bo_pin(bo);
	fprintf(stderr, "ugpu_bo_pin() under a running kernel: %d, BO now in %s\n", ret,
		bo_where(bo) == V ? "VRAM" : "system memory");
	assert_int_equal(bo_where(bo), S); /* did not move */
	assert_int_equal(ret, -EBUSY);

	test_point_set(TEST_POINT_EXEC_SCAN, NULL, NULL);
	gate_open(&g);
	assert_int_equal(ugpu_fence_wait(q, fence, WAIT_MS, &r), 0);
	assert_int_equal(r.status, 0);
	bo_equals(bo, model, 1 * MIB);
	assert_int_equal(ugpu_bo_pin(bo), 0); /* idle now: moves */
	assert_int_equal(bo_where(bo), V);
	assert_int_equal(ugpu_bo_unpin(bo), 0);
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	ugpu_bo_put(bo);
	free(model);
}

/*
 * The same with a kernel really running on the device (a long atomic add
 * over many binds of one BO): the pin's move copies the BO while the kernel
 * adds to it, and frees the system pages the kernel's PTEs still point at.
 * Every word must end with exactly the kernel's additions.
 */
static void test_pin_under_real_kernel(void **state)
{
	struct fx *f = *state;
	struct ugpu_vm *vm = vm_new(f->dev, "pin-real");
	struct ugpu_queue *q = queue_new(vm, "pin-real");
	struct ugpu_kernel_result r = { .size = sizeof(r) };
	struct ugpu_queue_info qi = { .size = sizeof(qi) };
	const uint64_t bytes = 4 * MIB;
	const unsigned int reps = 64; /* 256 MiB of VA over one 4 MiB BO */
	uint64_t fence, *buf;
	unsigned int i;
	int ret;
	void *model;
	struct ugpu_bo *bo = bo_pat(f, bytes, 0, V, S, 6, &model);

	assert_int_equal(ugpu_bo_migrate(bo, S), 0);
	for (i = 0; i < reps; i++)
		assert_int_equal(ugpu_vm_bind(vm, bo, 0, VA0 + i * bytes, bytes, 0), 0);
	/* how long does it run? */
	run(q, UGPU_KERNEL_READ_SUM, VA0, reps * bytes, 0, &r);
	assert_int_equal(r.status, 0);
	fprintf(stderr, "a %u MiB kernel runs %.1f ms\n", (unsigned)(reps * bytes / MIB),
		r.run_ns / 1e6);

	assert_int_equal(submit(q, UGPU_KERNEL_ATOMIC_ADD, VA0, reps * bytes, 1, &fence), 0);
	assert_int_equal(ugpu_queue_query(q, &qi), 0);
	assert_true(qi.running);
	usleep(2000);
	ret = ugpu_bo_pin(bo);
	fprintf(stderr, "ugpu_bo_pin() during the kernel: %d (BO in %s)\n", ret,
		bo_where(bo) == V ? "VRAM" : "system memory");
	assert_int_equal(ugpu_fence_wait(q, fence, WAIT_MS, &r), 0);
	buf = malloc(bytes);
	assert_non_null(buf);
	assert_int_equal(ugpu_bo_read(bo, 0, buf, bytes), 0);
	{
		const uint64_t *m = model;
		uint64_t k, bad = 0, first = ~0ull;

		for (k = 0; k < bytes / 8; k++)
			if (buf[k] != m[k] + reps) {
				bad++;
				if (first == ~0ull)
					first = k;
			}
		fprintf(stderr, "kernel status %d; %llu of %llu words without their %u additions\n",
			r.status, (unsigned long long)bad, (unsigned long long)(bytes / 8), reps);
		assert_int_equal(r.status, 0);
		assert_int_equal(bad, 0);
	}
	free(buf);
	if (!ret)
		assert_int_equal(ugpu_bo_unpin(bo), 0);
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	ugpu_bo_put(bo);
	free(model);
}

/* ---- 2. a submission while host-suspended -------------------------------------- */

/*
 * prepare evicts a bound BO (its VM is dirty); while the device is
 * host-suspended (D3cold) a kernel is submitted: it waits for resume. It
 * must run on PTEs that point at the BO's new place.
 */
static void test_submit_while_host_suspended(void **state)
{
	struct fx *f = *state;
	struct ugpu_vm *vm = vm_new(f->dev, "susp");
	struct ugpu_queue *q = queue_new(vm, "susp");
	struct ugpu_kernel_result r = { .size = sizeof(r) };
	uint64_t fence_add, fence_sum;
	void *model;
	struct ugpu_bo *bo = bo_pat(f, 1 * MIB, 0, V, S, 7, &model);

	assert_int_equal(ugpu_vm_bind(vm, bo, 0, VA0, 1 * MIB, 0), 0);
	run(q, UGPU_KERNEL_READ_SUM, VA0, 1 * MIB, 0, &r); /* PTEs to VRAM, cached */
	assert_int_equal(r.status, 0);
	assert_true(r.sum == words_sum(model, 1 * MIB));

	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(bo_where(bo), S); /* evicted by prepare */
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	/* Host-suspended: these wait for resume. */
	assert_int_equal(submit(q, UGPU_KERNEL_ATOMIC_ADD, VA0, 1 * MIB, 3, &fence_add), 0);
	words_add(model, 1 * MIB, 3);
	assert_int_equal(submit(q, UGPU_KERNEL_READ_SUM, VA0, 1 * MIB, 0, &fence_sum), 0);
	assert_int_equal(ugpu_fence_wait(q, fence_sum, 20, &r), -ETIMEDOUT);
	assert_int_equal(ugpu_device_resume(f->dev), 0);

	assert_int_equal(ugpu_fence_wait(q, fence_add, WAIT_MS, &r), 0);
	assert_int_equal(r.status, 0);
	assert_int_equal(ugpu_fence_wait(q, fence_sum, WAIT_MS, &r), 0);
	assert_int_equal(r.status, 0);
	fprintf(stderr, "sum after resume 0x%llx, expected 0x%llx\n", (unsigned long long)r.sum,
		(unsigned long long)words_sum(model, 1 * MIB));
	assert_true(r.sum == words_sum(model, 1 * MIB));
	bo_equals(bo, model, 1 * MIB);
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	ugpu_bo_put(bo);
	free(model);
}

/* ---- 3. ugpu_device_close() with a kernel on the device ------------------------- */

static int setup_one_queue(void **state)
{
	struct ugpu_context_opts copts = { .size = sizeof(copts), .log_level = UGPU_LOG_ERROR };
	struct sim_opts o;
	struct fx *f = calloc(1, sizeof(*f));

	fx_watchdog_arm(fx_test_bound_s(), "a test of test_vm_review hung\n");
	sim_opts_init(&o);
	o.vram_size = 64 * MIB;
	o.exec_queues = 1; /* every launch on exec queue 0 */
	if (!f || sim_start(&o, &f->sim) || ugpu_context_create(&copts, &f->ctx))
		return -1;
	snprintf(f->uri, sizeof(f->uri), "vfio-user:%s", sim_socket_path(f->sim, 0));
	if (ugpu_device_open(f->ctx, f->uri, &f->dev))
		return -1;
	ugpu_device_rpm_set_autosuspend_delay(f->dev, -1);
	*state = f;
	return 0;
}

/*
 * A program closes the device while its kernel still runs; the kernel then
 * faults (its last page is not bound) after the driver's exec thread is
 * gone. The next program that opens the device must be able to run kernels:
 * the exec queue must not stay stalled on the old kernel.
 */
static void test_close_with_kernel_then_reopen(void **state)
{
	struct fx *f = *state;
	struct ugpu_vm *vm = vm_new(f->dev, "old");
	struct ugpu_queue *q = queue_new(vm, "old");
	struct ugpu_kernel_result r = { .size = sizeof(r) };
	const uint64_t bytes = 4 * MIB;
	const unsigned int reps = 256; /* 1 GiB of VA, then one unbound page */
	struct ugpu_bo *bo = bo_new(f->dev, bytes, 0, V, N, "old");
	struct sim_state ss;
	uint64_t fence, t0;
	unsigned int i;
	int ret;

	assert_non_null(bo);
	for (i = 0; i < reps; i++)
		assert_int_equal(ugpu_vm_bind(vm, bo, 0, VA0 + i * bytes, bytes, 0), 0);
	run(q, UGPU_KERNEL_READ_SUM, VA0, reps * bytes, 0, &r);
	fprintf(stderr, "a %u MiB kernel runs %.1f ms\n", (unsigned)(reps * bytes / MIB),
		r.run_ns / 1e6);
	assert_int_equal(submit(q, UGPU_KERNEL_ATOMIC_ADD, VA0, reps * bytes + 4096, 1, &fence), 0);
	ugpu_device_close(f->dev); /* the kernel is still running */
	f->dev = NULL;
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	ugpu_bo_put(bo);

	/* What the device does with it now. */
	t0 = fx_now_ms();
	do {
		usleep(5000);
		assert_int_equal(sim_state(f->sim, 0, &ss), 0);
	} while (ss.queue_status[0] == 1 && fx_now_ms() - t0 < 5000);
	fprintf(stderr, "after close: exec queue 0 status %u (2 = stalled on a fault)\n",
		ss.queue_status[0]);

	/* The next program. */
	assert_int_equal(ugpu_device_open(f->ctx, f->uri, &f->dev), 0);
	ugpu_device_rpm_set_autosuspend_delay(f->dev, -1);
	vm = vm_new(f->dev, "new");
	q = queue_new(vm, "new");
	bo = bo_new(f->dev, 64 * KIB, 0, V, S, "new");
	assert_non_null(bo);
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, VA0, 64 * KIB, 0), 0);
	assert_int_equal(submit(q, UGPU_KERNEL_WRITE, VA0, 64 * KIB, 0x55, &fence), 0);
	ret = ugpu_fence_wait(q, fence, 3000, &r);
	fprintf(stderr, "new program's kernel: wait %d, status %d\n", ret, r.status);
	assert_int_equal(ret, 0);
	assert_int_equal(r.status, 0);
	{
		uint64_t w[8192], k;

		assert_int_equal(ugpu_bo_read(bo, 0, w, sizeof(w)), 0);
		for (k = 0; k < 8192; k++)
			assert_true(w[k] == 0x55);
	}
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	ugpu_bo_put(bo);
}

/* ---- 4. a fault batch outlives its queue --------------------------------------- */

/* Parks the exec thread with a fault batch, and the removal before vm-exec. */
struct hold {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool at_deliver, go_deliver, at_vm_exec, go_vm_exec;
};

static void hold_release_all(struct hold *h)
{
	pthread_mutex_lock(&h->lock);
	h->go_deliver = h->go_vm_exec = true;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
}

static bool hold_wait(struct hold *h, bool *flag, int ms)
{
	uint64_t t0 = fx_now_ms();
	bool ok;

	pthread_mutex_lock(&h->lock);
	while (!*flag && fx_now_ms() - t0 < (uint64_t)ms) {
		pthread_mutex_unlock(&h->lock);
		usleep(1000);
		pthread_mutex_lock(&h->lock);
	}
	ok = *flag;
	pthread_mutex_unlock(&h->lock);
	return ok;
}

static void hold_set(struct hold *h, bool *flag)
{
	pthread_mutex_lock(&h->lock);
	*flag = true;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
}

static void deliver_fn(void *arg, enum test_point_id id, void *obj)
{
	struct hold *h = arg;

	(void)id;
	if (!obj)
		return; /* only the batch with the fault */
	pthread_mutex_lock(&h->lock);
	if (!h->at_deliver) {
		h->at_deliver = true;
		pthread_cond_broadcast(&h->cond);
		while (!h->go_deliver)
			pthread_cond_wait(&h->cond, &h->lock);
	}
	pthread_mutex_unlock(&h->lock);
}

static void step_fn(void *arg, struct ugpu_device *dev, const char *step)
{
	struct hold *h = arg;

	(void)dev;
	if (strcmp(step, "vm-exec"))
		return;
	pthread_mutex_lock(&h->lock);
	h->at_vm_exec = true;
	pthread_cond_broadcast(&h->cond);
	while (!h->go_vm_exec)
		pthread_cond_wait(&h->cond, &h->lock);
	pthread_mutex_unlock(&h->lock);
}

struct destroyer {
	struct ugpu_queue *q;
	int ret;
};

static void *destroy_run(void *arg)
{
	struct destroyer *d = arg;

	d->ret = ugpu_queue_destroy(d->q);
	return NULL;
}

/* ugpu_device_unplug() waits for the removal, which the test holds. */
static void *unplug_run(void *arg)
{
	ugpu_device_unplug(arg);
	return NULL;
}

/*
 * The exec thread collected a fault of queue Q's kernel and is about to
 * hand it over; meanwhile a removal abandons that kernel (it ran past the
 * removal's idle bound) and the ended callback lets ugpu_queue_destroy(Q)
 * free Q. The fault batch still names Q: its delivery must not touch it
 * (AddressSanitizer: heap-use-after-free in on_faults()).
 */
static void test_fault_batch_outlives_queue(void **state)
{
	struct fx *f = *state;
	static struct hold h = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false,
				 false, false };
	struct ugpu_vm *vm = vm_new(f->dev, "uaf");
	struct destroyer d = { .q = queue_new(vm, "uaf"), .ret = 1 };
	struct ugpu_unplug_info ui;
	pthread_t t, tu;
	uint64_t fence;

	release_at_teardown = &h;
	test_point_set(TEST_POINT_EXEC_DELIVER, deliver_fn, &h);
	unplug_set_step_observer(f->dev, step_fn, &h);
	/* Nothing is bound: the kernel faults and stalls. */
	assert_int_equal(submit(d.q, UGPU_KERNEL_READ_SUM, VA0, 4096, 0, &fence), 0);
	assert_true(hold_wait(&h, &h.at_deliver, 5000));

	assert_int_equal(pthread_create(&t, NULL, destroy_run, &d), 0);
	assert_int_equal(pthread_create(&tu, NULL, unplug_run, f->dev), 0);
	pthread_join(t, NULL); /* the removal abandoned the kernel: Q is freed */
	fprintf(stderr, "ugpu_queue_destroy() returned %d: the queue is freed\n", d.ret);
	assert_int_equal(d.ret, 0);
	assert_true(hold_wait(&h, &h.at_vm_exec, 20000));

	hold_set(&h, &h.go_deliver); /* the fault batch is handed over now */
	usleep(200 * 1000);
	test_point_set(TEST_POINT_EXEC_DELIVER, NULL, NULL);
	hold_set(&h, &h.go_vm_exec);
	ui = fx_wait_removed(f->dev, 30000);
	(void)ui;
	pthread_join(tu, NULL);
	unplug_set_step_observer(f->dev, NULL, NULL);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	release_at_teardown = NULL;
}

/* ---- 5. fences complete in order --------------------------------------------- */

static bool fd_readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

static void *destroy_run2(void *arg)
{
	struct destroyer *d = arg;

	d->ret = ugpu_queue_destroy(d->q);
	return NULL;
}

/*
 * ugpu_queue_destroy() cancels the waiting kernels and waits for the running
 * one. The running kernel's fence (here: its eventfd) must not complete
 * before that kernel ended: the caller's event loop would read a BO the
 * kernel still writes.
 */
static void test_destroy_keeps_fence_order(void **state)
{
	struct fx *f = *state;
	static struct gate g;
	struct ugpu_vm *vm = vm_new(f->dev, "order");
	struct destroyer d = { .q = queue_new(vm, "order"), .ret = 1 };
	struct ugpu_bo *bo = bo_new(f->dev, 64 * KIB, 0, V, S, "order");
	uint64_t f1, f2;
	pthread_t t;
	bool early;
	int efd;

	assert_non_null(bo);
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, VA0, 64 * KIB, 0), 0);
	g = (struct gate)GATE_INIT;
	open_at_teardown = &g;
	test_point_set(TEST_POINT_EXEC_SCAN, gate_fn, &g); /* kernel 1 stays "running" */
	assert_int_equal(submit(d.q, UGPU_KERNEL_ATOMIC_ADD, VA0, 64 * KIB, 1, &f1), 0);
	assert_int_equal(submit(d.q, UGPU_KERNEL_ATOMIC_ADD, VA0, 64 * KIB, 1, &f2), 0);
	assert_int_equal(ugpu_fence_eventfd(d.q, f1, &efd), 0);
	assert_false(fd_readable(efd, 20));

	assert_int_equal(pthread_create(&t, NULL, destroy_run2, &d), 0);
	early = fd_readable(efd, 300); /* kernel 1 has not ended for the driver */
	fprintf(stderr, "fence %llu of the running kernel %s while it runs\n",
		(unsigned long long)f1, early ? "COMPLETED" : "did not complete");
	test_point_set(TEST_POINT_EXEC_SCAN, NULL, NULL);
	gate_open(&g);
	pthread_join(t, NULL);
	open_at_teardown = NULL;
	assert_int_equal(d.ret, 0);
	assert_true(fd_readable(efd, 0));
	close(efd);
	assert_false(early);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	ugpu_bo_put(bo);
}

/* The same with a kernel that really runs: when the eventfd says "done", the
 * device still runs it and the BO does not hold its result yet. */
static void test_destroy_keeps_fence_order_real(void **state)
{
	struct fx *f = *state;
	struct ugpu_vm *vm = vm_new(f->dev, "order-real");
	struct destroyer d = { .q = queue_new(vm, "order-real"), .ret = 1 };
	const uint64_t bytes = 4 * MIB;
	const unsigned int reps = 256; /* 1 GiB of VA */
	struct ugpu_bo *bo = bo_new(f->dev, bytes, 0, V, N, "order-real");
	struct sim_state ss;
	uint64_t f1, f2, w = 0;
	unsigned int i, running = 0;
	pthread_t t;
	int efd;

	assert_non_null(bo);
	for (i = 0; i < reps; i++)
		assert_int_equal(ugpu_vm_bind(vm, bo, 0, VA0 + i * bytes, bytes, 0), 0);
	assert_int_equal(submit(d.q, UGPU_KERNEL_ATOMIC_ADD, VA0, reps * bytes, 1, &f1), 0);
	assert_int_equal(submit(d.q, UGPU_KERNEL_ATOMIC_ADD, VA0, 8, 1, &f2), 0);
	assert_int_equal(ugpu_fence_eventfd(d.q, f1, &efd), 0);
	assert_int_equal(pthread_create(&t, NULL, destroy_run2, &d), 0);
	assert_true(fd_readable(efd, WAIT_MS));
	/* "Kernel 1 ended": look at the device and at the last word. */
	assert_int_equal(sim_state(f->sim, 0, &ss), 0);
	for (i = 0; i < ss.exec_queues; i++)
		running += ss.queue_status[i] == 1;
	assert_int_equal(ugpu_bo_read(bo, bytes - 8, &w, 8), 0);
	fprintf(stderr, "at fence %llu's eventfd: %u exec queues running, last word %llu of %u\n",
		(unsigned long long)f1, running, (unsigned long long)w, reps);
	pthread_join(t, NULL);
	close(efd);
	assert_int_equal(d.ret, 0);
	assert_int_equal(running, 0);
	assert_true(w == reps);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	ugpu_bo_put(bo);
}

/* ---- 6. the second program on a device ------------------------------------------ */

/*
 * A program ran kernels and closed the device (cleanly: nothing left on
 * it). The next program's kernel that faults must be reported, not hang:
 * the device's LAUNCH counters (the tag of fault entries) kept counting
 * across the two programs.
 */
static void test_reopen_then_fault(void **state)
{
	struct fx *f = *state;
	struct ugpu_vm *vm = vm_new(f->dev, "first");
	struct ugpu_queue *q = queue_new(vm, "first");
	struct ugpu_kernel_result r = { .size = sizeof(r) };
	struct ugpu_bo *bo = bo_new(f->dev, 64 * KIB, 0, V, S, "first");
	uint64_t fence;
	int ret;

	assert_non_null(bo);
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, VA0, 64 * KIB, 0), 0);
	run(q, UGPU_KERNEL_WRITE, VA0, 64 * KIB, 1, &r);
	assert_int_equal(r.status, 0);
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	ugpu_bo_put(bo);
	ugpu_device_close(f->dev);

	assert_int_equal(ugpu_device_open(f->ctx, f->uri, &f->dev), 0);
	ugpu_device_rpm_set_autosuspend_delay(f->dev, -1);
	vm = vm_new(f->dev, "second");
	q = queue_new(vm, "second");
	assert_int_equal(submit(q, UGPU_KERNEL_READ_SUM, VA0, 4096, 0, &fence), 0); /* unbound */
	ret = ugpu_fence_wait(q, fence, 3000, &r);
	fprintf(stderr, "second program's faulting kernel: wait %d, status %d\n", ret, r.status);
	assert_int_equal(ret, 0);
	assert_int_equal(r.status, -EFAULT);
	assert_true(r.fault_va == VA0);
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
}

/* ---- checked sound: one runtime-PM reference per kernel ------------------------ */

/*
 * ugpu_device_rpm_suspend(), once the driver's own work after a wake is
 * done. A wake from D3cold leaves the rpm thread restoring what the hooks
 * had evicted, holding a reference meanwhile: a suspend asked for at once
 * answers -EBUSY ("a transition is running", rpm.h) until the restore ends
 * (test_dataloss meets the same window). A reference a kernel left behind
 * keeps it -EBUSY past the bound.
 */
static int rpm_suspend_settled(struct ugpu_device *dev)
{
	int ret, ms;

	for (ms = 0; (ret = ugpu_device_rpm_suspend(dev)) == -EBUSY && ms < WAIT_MS; ms++)
		usleep(1000);
	return ret;
}

/*
 * Every kernel holds a reference from submission to its end, whatever the
 * end: done, faulted (aborted), cancelled by a queue destroy, cancelled
 * after waiting through a suspend prepare. After each, the device can
 * runtime-suspend (no reference left), and with one queued it cannot.
 */
static void test_rpm_one_reference_per_kernel(void **state)
{
	struct fx *f = *state;
	struct ugpu_vm *vm = vm_new(f->dev, "rpm");
	struct ugpu_queue *q = queue_new(vm, "rpm");
	struct ugpu_kernel_result r;
	struct ugpu_bo *bo = bo_new(f->dev, 64 * KIB, 0, V, S, "rpm");
	uint64_t fence;
	int i;

	assert_non_null(bo);
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, VA0, 64 * KIB, 0), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	run(q, UGPU_KERNEL_WRITE, VA0, 64 * KIB, 1, &r); /* done */
	assert_int_equal(r.status, 0);
	assert_int_equal(rpm_suspend_settled(f->dev), 0);
	run(q, UGPU_KERNEL_READ_SUM, VA0 + MIB, 4096, 0, &r); /* faulted */
	assert_int_equal(r.status, -EFAULT);
	assert_int_equal(rpm_suspend_settled(f->dev), 0);

	/* Cancelled by a destroy, after waiting at a prepare. */
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	for (i = 0; i < 3; i++)
		assert_int_equal(submit(q, UGPU_KERNEL_WRITE, VA0, 64 * KIB, 2, &fence), 0);
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_device_suspend_cancel(f->dev), 0);
	assert_int_equal(rpm_suspend_settled(f->dev), 0);

	/* Queued at a prepare, run after its cancel. */
	q = queue_new(vm, "rpm2");
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(submit(q, UGPU_KERNEL_WRITE, VA0, 64 * KIB, 3, &fence), 0);
	assert_int_equal(ugpu_device_suspend_cancel(f->dev), 0);
	memset(&r, 0, sizeof(r));
	r.size = sizeof(r);
	assert_int_equal(ugpu_fence_wait(q, fence, WAIT_MS, &r), 0);
	assert_int_equal(r.status, 0);
	assert_int_equal(rpm_suspend_settled(f->dev), 0);

	/* Running (its end held back): no runtime suspend under it. */
	{
		static struct gate g;

		g = (struct gate)GATE_INIT;
		open_at_teardown = &g;
		test_point_set(TEST_POINT_EXEC_SCAN, gate_fn, &g);
		assert_int_equal(submit(q, UGPU_KERNEL_WRITE, VA0, 64 * KIB, 4, &fence), 0);
		assert_int_equal(ugpu_device_rpm_suspend(f->dev), -EBUSY);
		test_point_set(TEST_POINT_EXEC_SCAN, NULL, NULL);
		gate_open(&g);
		open_at_teardown = NULL;
	}
	assert_int_equal(ugpu_fence_wait(q, fence, WAIT_MS, &r), 0);
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(rpm_suspend_settled(f->dev), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	ugpu_bo_put(bo);
}

/* ---- 10. a host-suspend transition waiting for a kernel on a vanished device ---- */

/*
 * prepare (and suspend) wait up to 5 s for running kernels, holding the
 * host-suspend lock. When the device vanishes meanwhile, the kernel never
 * ends, and the removal that would abandon it waits for that lock: the
 * transition must answer -ENODEV once it can tell ("also when it vanished
 * during the call", pm.h), not -ETIMEDOUT after 5 s. Found by the model
 * test (a notifier's prepare, a kernel, a surprise removal). The kernel's
 * end is held back at the exec thread's scan, so it is still running.
 */
struct preparer {
	struct ugpu_device *dev;
	int ret;
	double ms;
};

static void *prepare_run(void *arg)
{
	struct preparer *p = arg;
	struct timespec a, b;

	clock_gettime(CLOCK_MONOTONIC, &a);
	p->ret = ugpu_device_suspend_prepare(p->dev);
	clock_gettime(CLOCK_MONOTONIC, &b);
	p->ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
	return NULL;
}

static void test_prepare_kernel_device_vanishes(void **state)
{
	struct fx *f = *state;
	static struct gate g;
	struct ugpu_vm *vm = vm_new(f->dev, "vanish");
	struct ugpu_queue *q = queue_new(vm, "vanish");
	struct ugpu_kernel_result r = { .size = sizeof(r) };
	struct preparer p = { .dev = f->dev, .ret = 1 };
	struct ugpu_bo *bo = bo_new(f->dev, 64 * KIB, 0, V, S, "vanish");
	struct ugpu_unplug_info ui;
	pthread_t t;
	uint64_t fence;

	assert_non_null(bo);
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, VA0, 64 * KIB, 0), 0);
	g = (struct gate)GATE_INIT;
	open_at_teardown = &g;
	test_point_set(TEST_POINT_EXEC_SCAN, gate_fn, &g);
	assert_int_equal(submit(q, UGPU_KERNEL_WRITE, VA0, 64 * KIB, 1, &fence), 0);
	assert_int_equal(pthread_create(&t, NULL, prepare_run, &p), 0);
	usleep(50 * 1000); /* prepare waits for the kernel */
	assert_int_equal(sim_unplug_surprise(f->sim, 0), 0);
	pthread_join(t, NULL);
	fprintf(stderr, "prepare returned %d after %.0f ms\n", p.ret, p.ms);
	test_point_set(TEST_POINT_EXEC_SCAN, NULL, NULL);
	gate_open(&g);
	open_at_teardown = NULL;
	assert_int_equal(p.ret, -ENODEV);
	assert_true(p.ms < 2000);
	ui = fx_wait_removed(f->dev, 30000);
	assert_int_equal(ui.state, UGPU_UNPLUG_REMOVED);
	assert_int_equal(ugpu_fence_wait(q, fence, WAIT_MS, &r), 0);
	/* cancelled by the removal, or its end read from the dead device */
	assert_true(r.status == -ECANCELED || r.status == -EIO || r.status == 0);
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	ugpu_bo_put(bo);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_pin_does_not_move_busy_bo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pin_under_real_kernel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_submit_while_host_suspended, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_with_kernel_then_reopen, setup_one_queue,
						teardown),
		cmocka_unit_test_setup_teardown(test_fault_batch_outlives_queue, setup, teardown),
		cmocka_unit_test_setup_teardown(test_destroy_keeps_fence_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_destroy_keeps_fence_order_real, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen_then_fault, setup_one_queue, teardown),
		cmocka_unit_test_setup_teardown(test_rpm_one_reference_per_kernel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prepare_kernel_device_vanishes, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
