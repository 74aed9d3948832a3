/* SPDX-License-Identifier: MIT */
/*
 * Several devices in one context (docs/multi-device.md): links and owner
 * groups, BO moves between devices directly over the fabric or through
 * system memory, byte-exact, with eviction on the destination, errors, a
 * peer woken from runtime suspend for a copy, and a removal that sends the
 * removed device's BOs to a peer. In-process reference devices on one
 * fabric (2 or 3 nodes, some links slow).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <ugpu/bo.h>
#include <ugpu/device.h>
#include <ugpu/fabric.h>
#include <ugpu/pm.h>
#include <ugpu/rpm.h>
#include <ugpu/unplug.h>
#include <ugpu/vm.h>

#include "base/test_point.h"
#include "mm/bo.h"
#include "src/device.h"
#include "tools/ugpu-sim/sim.h"

#include "bo_util.h"
#include "kernel_util.h"
#include "rng.h"

#define MAXD 3

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define UNDER_SAN 1
#else
#define UNDER_SAN 0
#endif

struct mfx {
	struct sim *sim;
	struct ugpu_context *ctx;
	unsigned int n;
	struct ugpu_device *dev[MAXD];
};

/* @n devices of @vram bytes on one fabric; @slow: pairs (a, b) of slow
 * links, terminated by a == b. Autosuspend off (tests that want it set it). */
static struct mfx *mfx_start(unsigned int n, uint64_t vram, const unsigned int (*slow)[2])
{
	struct ugpu_context_opts copts = { .size = sizeof(copts), .log_level = UGPU_LOG_ERROR };
	struct mfx *f = calloc(1, sizeof(*f));
	struct sim_opts o;
	unsigned int i;

	assert_non_null(f);
	if (getenv("UGPU_TEST_LOG"))
		copts.log_level = UGPU_LOG_DEBUG;
	sim_opts_init(&o);
	o.vram_size = vram;
	o.devices = n;
	o.exec_queues = 1;
	for (; slow && slow[0][0] != slow[0][1]; slow++)
		o.slow_links[slow[0][0]] |= 1u << slow[0][1];
	assert_int_equal(sim_start(&o, &f->sim), 0);
	assert_int_equal(ugpu_context_create(&copts, &f->ctx), 0);
	f->n = n;
	for (i = 0; i < n; i++) {
		char uri[300];

		snprintf(uri, sizeof(uri), "vfio-user:%s", sim_socket_path(f->sim, i));
		assert_int_equal(ugpu_device_open(f->ctx, uri, &f->dev[i]), 0);
		assert_int_equal(ugpu_device_rpm_set_autosuspend_delay(f->dev[i], -1), 0);
	}
	return f;
}

static void mfx_stop(struct mfx *f)
{
	unsigned int i;

	for (i = 0; i < f->n; i++) {
		if (f->dev[i])
			assert_int_equal(bo_mgr_check(f->dev[i], false), 0);
		ugpu_device_close(f->dev[i]);
	}
	ugpu_context_destroy(f->ctx);
	sim_stop(f->sim);
	free(f);
}

static struct ugpu_device_mem mem_of(struct ugpu_device *dev)
{
	struct ugpu_device_mem m = { .size = sizeof(m) };

	assert_int_equal(ugpu_device_mem_stats(dev, &m), 0);
	return m;
}

static enum ugpu_link link_of(struct ugpu_device *a, struct ugpu_device *b)
{
	enum ugpu_link l = (enum ugpu_link)-1;

	assert_int_equal(ugpu_device_link(a, b, &l), 0);
	return l;
}

static struct ugpu_device_peers peers_of(struct ugpu_device *dev)
{
	struct ugpu_device_peers p = { .size = sizeof(p) };

	assert_int_equal(ugpu_device_peers(dev, &p), 0);
	return p;
}

/* ---- links and owner groups ------------------------------------------------ */

/* 0-1 fast, 1-2 fast, 0-2 slow: one owner group through node 1. */
static void test_links_chain(void **state)
{
	static const unsigned int slow[][2] = { { 0, 2 }, { 0, 0 } };
	struct mfx *f = mfx_start(3, 16 << 20, slow);
	struct ugpu_device_peers p0, p1, p2;
	enum ugpu_link l;

	(void)state;
	assert_int_equal(link_of(f->dev[0], f->dev[1]), UGPU_LINK_FAST);
	assert_int_equal(link_of(f->dev[1], f->dev[2]), UGPU_LINK_FAST);
	assert_int_equal(link_of(f->dev[0], f->dev[2]), UGPU_LINK_SLOW);
	assert_int_equal(link_of(f->dev[2], f->dev[0]), UGPU_LINK_SLOW);
	p0 = peers_of(f->dev[0]);
	p1 = peers_of(f->dev[1]);
	p2 = peers_of(f->dev[2]);
	assert_int_equal(p0.total, 2);
	assert_int_equal(p0.count, 2);
	assert_ptr_equal(p0.peers[0].dev, f->dev[1]);
	assert_int_equal(p0.peers[0].link, UGPU_LINK_FAST);
	assert_int_equal(p0.peers[0].fabric_id, 1);
	assert_ptr_equal(p0.peers[1].dev, f->dev[2]);
	assert_int_equal(p0.peers[1].link, UGPU_LINK_SLOW);
	assert_true(p0.peers[1].same_owner); /* joined through node 1 */
	assert_int_equal(p0.owner, p1.owner);
	assert_int_equal(p1.owner, p2.owner);
	/* errors */
	assert_int_equal(ugpu_device_link(f->dev[0], f->dev[0], &l), -EINVAL);
	assert_int_equal(ugpu_device_link(NULL, f->dev[0], &l), -EINVAL);
	assert_int_equal(ugpu_device_link(f->dev[0], f->dev[1], NULL), -EINVAL);
	assert_int_equal(ugpu_device_peers(f->dev[0], NULL), -EINVAL);
	{
		struct ugpu_device_peers small = { .size = 1 };

		assert_int_equal(ugpu_device_peers(f->dev[0], &small), -EINVAL);
	}
	mfx_stop(f);
}

/* 0-1 fast, 2 joined to both by slow links only: two owner groups. A device
 * of another fabric in the same context has no link; one of another
 * context is refused. */
static void test_links_groups(void **state)
{
	static const unsigned int slow[][2] = { { 0, 2 }, { 1, 2 }, { 0, 0 } };
	struct mfx *f = mfx_start(3, 16 << 20, slow);
	struct ugpu_device_peers p0, p1, p2, po;
	struct ugpu_context *ctx2;
	struct ugpu_device *other, *alien;
	struct sim *sim2;
	struct sim_opts o;
	char uri[300];
	enum ugpu_link l;

	(void)state;
	p0 = peers_of(f->dev[0]);
	p1 = peers_of(f->dev[1]);
	p2 = peers_of(f->dev[2]);
	assert_int_equal(p0.owner, p1.owner);
	assert_int_not_equal(p0.owner, p2.owner);
	assert_true(p0.peers[0].same_owner);
	assert_false(p0.peers[1].same_owner);

	/* a second fabric of two: node ids 0 and 1 again */
	sim_opts_init(&o);
	o.vram_size = 16 << 20;
	o.devices = 2;
	o.exec_queues = 1;
	assert_int_equal(sim_start(&o, &sim2), 0);
	snprintf(uri, sizeof(uri), "vfio-user:%s", sim_socket_path(sim2, 1));
	assert_int_equal(ugpu_device_open(f->ctx, uri, &other), 0);
	assert_int_equal(link_of(f->dev[0], other), UGPU_LINK_NONE);
	assert_int_equal(link_of(other, f->dev[1]), UGPU_LINK_NONE);
	po = peers_of(other);
	assert_int_equal(po.total, 3);
	assert_int_not_equal(po.owner, p0.owner);
	assert_int_not_equal(po.owner, p2.owner);
	p0 = peers_of(f->dev[0]);
	assert_int_equal(p0.total, 3);
	assert_int_equal(p0.peers[2].link, UGPU_LINK_NONE);
	/* peer access in place only within an owner group: node 2 (slow
	 * links) and the other fabric's device are refused */
	{
		struct ugpu_vm *vm;
		struct ugpu_bo *b2 = bo_new(f->dev[2], 1 << 20, 0, V, S, "g2");
		struct ugpu_bo *bo = bo_new(other, 1 << 20, 0, V, S, "go");
		struct ugpu_bo *b1 = bo_new(f->dev[1], 1 << 20, 0, V, S, "g1");

		assert_true(b2 && bo && b1);
		assert_int_equal(ugpu_vm_create(f->dev[0], NULL, &vm), 0);
		assert_int_equal(ugpu_vm_bind(vm, b2, 0, 1ull << 32, 1 << 20, 0), -EINVAL);
		assert_int_equal(ugpu_vm_bind(vm, bo, 0, 1ull << 32, 1 << 20, 0), -EINVAL);
		assert_int_equal(ugpu_vm_bind(vm, b1, 0, 1ull << 32, 1 << 20, 0), 0);
		assert_int_equal(ugpu_vm_destroy(vm), 0);
		ugpu_bo_put(b1);
		ugpu_bo_put(b2);
		ugpu_bo_put(bo);
	}

	/* another context */
	{
		struct ugpu_context_opts copts = { .size = sizeof(copts),
						   .log_level = UGPU_LOG_ERROR };
		struct ugpu_bo *bo;

		assert_int_equal(ugpu_context_create(&copts, &ctx2), 0);
		snprintf(uri, sizeof(uri), "vfio-user:%s", sim_socket_path(sim2, 0));
		assert_int_equal(ugpu_device_open(ctx2, uri, &alien), 0);
		assert_int_equal(ugpu_device_link(f->dev[0], alien, &l), -EXDEV);
		bo = bo_new(f->dev[0], 1 << 20, 0, V, S, "x");
		assert_non_null(bo);
		assert_int_equal(ugpu_bo_migrate_device(bo, alien, 0), -EXDEV);
		ugpu_bo_put(bo);
		ugpu_device_close(alien);
		ugpu_context_destroy(ctx2);
	}
	ugpu_device_close(other);
	sim_stop(sim2);
	/* closed: no longer listed */
	assert_int_equal(peers_of(f->dev[0]).total, 2);
	mfx_stop(f);
}

/* ---- moves ---------------------------------------------------------------- */

#define BIG (6u << 20)

/* A -> B -> A over a fast link: directly, byte-exact, the BO counted on
 * whichever device holds it; and the same through system memory. */
static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A test point that holds the first thread reaching it for @bo until
 * @release (3 s at most). */
struct hold {
	struct ugpu_bo *bo;
	int entered, release;
};

static void hold_hook(void *arg, enum test_point_id id, void *obj)
{
	struct hold *h = arg;
	uint64_t t0 = now_ms();

	(void)id;
	if (obj != h->bo || __atomic_exchange_n(&h->entered, 1, __ATOMIC_ACQ_REL))
		return;
	while (!__atomic_load_n(&h->release, __ATOMIC_ACQUIRE) && now_ms() - t0 < 3000)
		usleep(1000);
}

struct own_query {
	struct ugpu_bo *bo;
	int ret, done;
};

static void *own_query_fn(void *arg)
{
	struct own_query *q = arg;
	struct ugpu_bo_info i = { .size = sizeof(i) };

	q->ret = ugpu_bo_query(q->bo, &i);
	__atomic_store_n(&q->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void *migrate_sys_fn(void *arg)
{
	struct own_query *q = arg;

	q->ret = ugpu_bo_migrate(q->bo, S);
	return NULL;
}

/*
 * A taker that waits only for its own BO's move (here ugpu_bo_query()) read
 * the BO's device (A), then the BO went to B and began an unlocked move
 * there. It took A's lock and waited on A's condition for a move B ends:
 * it hung until some move of A ended (the review of 2026-12-07). Now it
 * sees the BO is B's and waits there: it returns once B's move is done.
 */
static void test_own_wait_follows_device(void **state)
{
	struct mfx *f = mfx_start(2, 32 << 20, NULL);
	struct ugpu_bo *bo = bo_new(f->dev[0], 1 << 20, 0, V, S, "wanderer");
	struct ugpu_bo *other = bo_new(f->dev[0], 1 << 20, 0, V, S, "other");
	struct hold lock_hold = { .bo = bo }, move_hold = { .bo = bo };
	struct own_query q = { .bo = bo }, mv = { .bo = bo };
	pthread_t tq, tm;
	uint64_t t0;
	bool hung;

	(void)state;
	assert_non_null(bo);
	assert_non_null(other);
	assert_int_equal(bo_fill(bo, 1 << 20, 23), 0);
	test_point_set(TEST_POINT_BO_LOCK_OWN, hold_hook, &lock_hold);
	assert_int_equal(pthread_create(&tq, NULL, own_query_fn, &q), 0);
	while (!__atomic_load_n(&lock_hold.entered, __ATOMIC_ACQUIRE))
		usleep(100);
	/* the query read device A; the BO goes to B and moves there */
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[1], 0), 0);
	test_point_set(TEST_POINT_BO_MOVE_COPY, hold_hook, &move_hold);
	assert_int_equal(pthread_create(&tm, NULL, migrate_sys_fn, &mv), 0);
	while (!__atomic_load_n(&move_hold.entered, __ATOMIC_ACQUIRE))
		usleep(100);
	__atomic_store_n(&lock_hold.release, 1, __ATOMIC_RELEASE);
	usleep(50000); /* the query takes A's lock and looks */
	__atomic_store_n(&move_hold.release, 1, __ATOMIC_RELEASE);
	pthread_join(tm, NULL);
	for (t0 = now_ms(); !__atomic_load_n(&q.done, __ATOMIC_ACQUIRE) && now_ms() - t0 < 1000;)
		usleep(1000);
	hung = !__atomic_load_n(&q.done, __ATOMIC_ACQUIRE);
	if (hung) /* a move of A wakes it, so that the test can end */
		assert_int_equal(ugpu_bo_migrate(other, S), 0);
	pthread_join(tq, NULL);
	test_point_set(TEST_POINT_BO_LOCK_OWN, NULL, NULL);
	test_point_set(TEST_POINT_BO_MOVE_COPY, NULL, NULL);
	print_message("query of a BO that went to another device and moved there: %s\n",
		      hung ? "hung until a move of the first device" : "returned");
	assert_false(hung);
	assert_int_equal(q.ret, 0);
	assert_int_equal(mv.ret, 0);
	assert_int_equal(bo_where(bo), S);
	assert_int_equal(bo_verify(bo, 1 << 20, 23), -1);
	ugpu_bo_put(bo);
	ugpu_bo_put(other);
	mfx_stop(f);
}

static void test_move_a_b_a(void **state)
{
	struct mfx *f = mfx_start(2, 64 << 20, NULL);
	struct ugpu_device_mem a0 = mem_of(f->dev[0]), b0 = mem_of(f->dev[1]), a, b;
	struct ugpu_bo *bo;

	(void)state;
	bo = bo_new(f->dev[0], BIG + 12288, 0, V, S, "abA");
	assert_non_null(bo);
	assert_int_equal(bo_fill(bo, BIG + 12288, 17), 0);
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[1], UGPU_MIGRATE_DIRECT), 0);
	assert_int_equal(bo_where(bo), V);
	a = mem_of(f->dev[0]);
	b = mem_of(f->dev[1]);
	assert_int_equal(a.bos, a0.bos);
	assert_int_equal(b.bos, b0.bos + 1);
	assert_int_equal(b.bos_vram, b0.bos_vram + 1);
	assert_int_equal(a.vram_bos, a0.vram_bos);
	assert_int_equal(a.peer_out, 1);
	assert_int_equal(b.peer_in, 1);
	assert_int_equal(b.peer_direct, 1);
	assert_int_equal(b.peer_via_system, 0);
	assert_int_equal(b.peer_bytes, BIG + 12288);
	assert_int_equal(bo_verify(bo, BIG + 12288, 17), -1);
	assert_int_equal(bo_mgr_check(f->dev[0], false), 0);
	assert_int_equal(bo_mgr_check(f->dev[1], false), 0);

	/* B writes, then back to A through system memory */
	assert_int_equal(bo_fill(bo, BIG + 12288, 18), 0);
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[0], UGPU_MIGRATE_VIA_SYSTEM), 0);
	a = mem_of(f->dev[0]);
	assert_int_equal(a.peer_in, 1);
	assert_int_equal(a.peer_via_system, 1);
	assert_int_equal(a.bos, a0.bos + 1);
	assert_int_equal(mem_of(f->dev[1]).bos, b0.bos);
	assert_int_equal(bo_verify(bo, BIG + 12288, 18), -1);
	/* and once more directly, after the way back */
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[1], 0), 0);
	assert_int_equal(mem_of(f->dev[1]).peer_direct, 2);
	assert_int_equal(bo_verify(bo, BIG + 12288, 18), -1);
	/* the usual calls work on its new device */
	assert_int_equal(ugpu_bo_migrate(bo, S), 0);
	assert_int_equal(mem_of(f->dev[1]).bos_system, 1);
	assert_int_equal(bo_verify(bo, BIG + 12288, 18), -1);
	/* from system memory of B into A: through system memory */
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[0], UGPU_MIGRATE_DIRECT), -ENOLINK);
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[0], 0), 0);
	assert_int_equal(mem_of(f->dev[0]).peer_via_system, 2);
	assert_int_equal(bo_where(bo), V);
	assert_int_equal(bo_verify(bo, BIG + 12288, 18), -1);
	ugpu_bo_put(bo);
	assert_int_equal(mem_of(f->dev[0]).bos, a0.bos);
	assert_int_equal(mem_of(f->dev[1]).bos, b0.bos);
	mfx_stop(f);
}

/* A slow link: the default goes through system memory (the faster path on
 * the reference device); a direct move asked for uses the link. Both
 * byte-exact, each counted by its path. */
static void test_move_slow_link(void **state)
{
	static const unsigned int slow[][2] = { { 0, 1 }, { 0, 0 } };
	struct mfx *f = mfx_start(2, 32 << 20, slow);
	struct ugpu_bo *bo;

	(void)state;
	assert_int_equal(link_of(f->dev[0], f->dev[1]), UGPU_LINK_SLOW);
	bo = bo_new(f->dev[0], 2 << 20, 0, V, S, "slow");
	assert_non_null(bo);
	assert_int_equal(bo_fill(bo, 2 << 20, 5), 0);
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[1], 0), 0);
	assert_int_equal(mem_of(f->dev[1]).peer_via_system, 1);
	assert_int_equal(mem_of(f->dev[1]).peer_direct, 0);
	assert_int_equal(bo_verify(bo, 2 << 20, 5), -1);
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[0], UGPU_MIGRATE_DIRECT), 0);
	assert_int_equal(mem_of(f->dev[0]).peer_direct, 1);
	assert_int_equal(mem_of(f->dev[0]).peer_via_system, 0);
	assert_int_equal(bo_verify(bo, 2 << 20, 5), -1);
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[1], UGPU_MIGRATE_VIA_SYSTEM), 0);
	assert_int_equal(mem_of(f->dev[1]).peer_via_system, 2);
	assert_int_equal(bo_verify(bo, 2 << 20, 5), -1);
	ugpu_bo_put(bo);
	mfx_stop(f);
}

/* The destination evicts its own unpinned BOs to make room (they keep their
 * bytes); with only pinned BOs there it is -ENOSPC and nothing moves. */
static void test_move_evicts(void **state)
{
	struct mfx *f = mfx_start(2, 16 << 20, NULL);
	struct ugpu_bo *mine[3], *bo, *pin;
	unsigned int i;

	(void)state;
	for (i = 0; i < 3; i++) {
		mine[i] = bo_new(f->dev[1], 4 << 20, 0, V, S, "b-own");
		assert_non_null(mine[i]);
		assert_int_equal(bo_fill(mine[i], 4 << 20, 100 + i), 0);
	}
	bo = bo_new(f->dev[0], 8 << 20, 0, V, S, "big");
	assert_non_null(bo);
	assert_int_equal(bo_fill(bo, 8 << 20, 7), 0);
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[1], 0), 0);
	assert_true(mem_of(f->dev[1]).evictions >= 1);
	assert_int_equal(bo_verify(bo, 8 << 20, 7), -1);
	for (i = 0; i < 3; i++)
		assert_int_equal(bo_verify(mine[i], 4 << 20, 100 + i), -1);
	assert_int_equal(bo_mgr_check(f->dev[1], false), 0);

	/* back to A; then B full of pinned BOs refuses it */
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[0], 0), 0);
	for (i = 0; i < 3; i++)
		ugpu_bo_put(mine[i]);
	pin = bo_new(f->dev[1], 12 << 20, UGPU_BO_PINNED, V, N, "b-pinned");
	assert_non_null(pin);
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[1], 0), -ENOSPC);
	assert_int_equal(bo_where(bo), V);
	assert_int_equal(mem_of(f->dev[0]).bos, 1);
	assert_int_equal(bo_verify(bo, 8 << 20, 7), -1);
	ugpu_bo_put(pin);
	ugpu_bo_put(bo);
	mfx_stop(f);
}

/* What may not move, and why. */
static void test_move_errors(void **state)
{
	struct mfx *f = mfx_start(2, 16 << 20, NULL);
	struct ugpu_bo *bo, *sys_only;

	(void)state;
	bo = bo_new(f->dev[0], 1 << 20, 0, V, S, "e");
	sys_only = bo_new(f->dev[0], 1 << 20, 0, S, N, "sys-only");
	assert_non_null(bo);
	assert_non_null(sys_only);
	assert_int_equal(ugpu_bo_migrate_device(NULL, f->dev[1], 0), -EINVAL);
	assert_int_equal(ugpu_bo_migrate_device(bo, NULL, 0), -EINVAL);
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[1], 4), -EINVAL);
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[1], UGPU_MIGRATE_FLAGS_ALL), -EINVAL);
	assert_int_equal(ugpu_bo_migrate(bo, S), 0);
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[0], UGPU_MIGRATE_DIRECT), 0); /* its own: VRAM */
	assert_int_equal(bo_where(bo), V);
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[0], 0), 0);
	assert_int_equal(ugpu_bo_migrate_device(sys_only, f->dev[1], 0), -EINVAL);
	assert_int_equal(ugpu_bo_pin(bo), 0);
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[1], 0), -EBUSY);
	assert_int_equal(ugpu_bo_unpin(bo), 0);
	assert_int_equal(mem_of(f->dev[1]).peer_in, 0);
	/* a removed destination */
	assert_int_equal(ugpu_device_unplug(f->dev[1]), 0);
	assert_int_equal(link_of(f->dev[0], f->dev[1]), UGPU_LINK_NONE);
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[1], 0), -ENODEV);
	assert_int_equal(bo_where(bo), V);
	ugpu_bo_put(sys_only);
	ugpu_bo_put(bo);
	mfx_stop(f);
}

/* Three devices, 0-1 fast, 1-2 slow: around the triangle and back,
 * byte-exact, each hop by the path its link allows. */
static void test_three_devices(void **state)
{
	static const unsigned int slow[][2] = { { 1, 2 }, { 0, 0 } };
	struct mfx *f = mfx_start(3, 32 << 20, slow);
	struct ugpu_bo *bo[2];
	unsigned int i, round;

	(void)state;
	for (i = 0; i < 2; i++) {
		bo[i] = bo_new(f->dev[0], (3 << 20) + i * 4096, 0, V, S, "tri");
		assert_non_null(bo[i]);
		assert_int_equal(bo_fill(bo[i], (3 << 20) + i * 4096, 40 + i), 0);
	}
	for (round = 0; round < 2; round++)
		for (i = 0; i < 3; i++) {
			struct ugpu_device *to = f->dev[(i + 1) % 3];

			assert_int_equal(ugpu_bo_migrate_device(bo[0], to, 0), 0);
			assert_int_equal(ugpu_bo_migrate_device(bo[1], to, 0), 0);
			assert_int_equal(bo_verify(bo[0], 3 << 20, 40), -1);
			assert_int_equal(bo_verify(bo[1], (3 << 20) + 4096, 41), -1);
		}
	/* hops 0->1 and 2->0 fast (direct) ... 1->2 slow (system) */
	assert_int_equal(mem_of(f->dev[1]).peer_direct, 4);
	assert_int_equal(mem_of(f->dev[2]).peer_via_system, 4);
	assert_int_equal(mem_of(f->dev[0]).peer_direct, 4);
	for (i = 0; i < 2; i++)
		ugpu_bo_put(bo[i]);
	mfx_stop(f);
}

/* Suspend now; -EBUSY while a transition (the last wake) is still
 * finishing: try again, for at most 5 s. */
static int rpm_suspend_soon(struct ugpu_device *dev)
{
	int ret, i;

	for (i = 0; i < 500; i++) {
		ret = ugpu_device_rpm_suspend(dev);
		if (ret != -EBUSY)
			break;
		usleep(10000);
	}
	return ret;
}

/* Runtime PM: a destination in D3 is woken before the peer copy reaches its
 * VRAM (a peer in D3 fails PEER descriptors), and sleeps again after. */
static void test_move_wakes_peer(void **state)
{
	struct mfx *f = mfx_start(2, 16 << 20, NULL);
	struct ugpu_device_info info = { .size = sizeof(info) };
	struct ugpu_rpm_stats rs = { .size = sizeof(rs) };
	uint64_t resumes;
	struct ugpu_bo *bo;
	int i;

	(void)state;
	bo = bo_new(f->dev[0], 2 << 20, 0, V, S, "wake");
	assert_non_null(bo);
	assert_int_equal(bo_fill(bo, 2 << 20, 9), 0);
	for (i = 0; i < 2; i++) {
		/* D3hot: the VRAM stays, so the BO stays in it */
		assert_int_equal(ugpu_device_rpm_set_d3cold_threshold(f->dev[i], 0), 0);
		assert_int_equal(ugpu_device_rpm_allow(f->dev[i], true), 0);
	}
	assert_int_equal(rpm_suspend_soon(f->dev[1]), 0);
	assert_int_equal(ugpu_device_query(f->dev[1], &info), 0);
	assert_int_equal(info.power_state, UGPU_POWER_D3HOT);
	assert_int_equal(ugpu_device_rpm_stats(f->dev[1], &rs), 0);
	resumes = rs.resumes;
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[1], UGPU_MIGRATE_DIRECT), 0);
	assert_int_equal(ugpu_device_rpm_stats(f->dev[1], &rs), 0);
	assert_true(rs.resumes > resumes);
	assert_int_equal(bo_verify(bo, 2 << 20, 9), -1);
	/* both asleep: the source is woken for its engine, the destination
	 * for its VRAM */
	assert_int_equal(rpm_suspend_soon(f->dev[0]), 0);
	assert_int_equal(rpm_suspend_soon(f->dev[1]), 0);
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[0], UGPU_MIGRATE_DIRECT), 0);
	assert_int_equal(bo_verify(bo, 2 << 20, 9), -1);
	/* the source in D3cold (its VRAM evicted before, restored after the
	 * wake): the bytes still arrive whole, by whichever path */
	assert_int_equal(ugpu_device_rpm_set_d3cold_threshold(f->dev[0], 1ull << 40), 0);
	assert_int_equal(rpm_suspend_soon(f->dev[0]), 0);
	assert_int_equal(ugpu_device_query(f->dev[0], &info), 0);
	assert_true(info.caps & UGPU_DEVICE_CAP_D3COLD); /* the reference device can */
	assert_int_equal(info.power_state, UGPU_POWER_D3COLD);
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[1], 0), 0);
	assert_int_equal(bo_verify(bo, 2 << 20, 9), -1);
	ugpu_bo_put(bo);
	/* closing a device does not wake its peers (none maps its VRAM) */
	assert_int_equal(rpm_suspend_soon(f->dev[0]), 0);
	assert_int_equal(ugpu_device_rpm_stats(f->dev[0], &rs), 0);
	resumes = rs.resumes;
	ugpu_device_close(f->dev[1]);
	f->dev[1] = NULL;
	assert_int_equal(ugpu_device_rpm_stats(f->dev[0], &rs), 0);
	assert_int_equal(rs.resumes, resumes);
	mfx_stop(f);
}

/* Host suspend, each device on its own: no move while a cycle is open on
 * either end (-EBUSY, nothing moved); a BO that came from a peer is
 * suspended and restored by its new device like its own. */
static void test_move_host_suspend(void **state)
{
	struct mfx *f = mfx_start(2, 32 << 20, NULL);
	struct ugpu_bo *bo, *pinned;

	(void)state;
	bo = bo_new(f->dev[0], 3 << 20, 0, V, S, "hs");
	pinned = bo_new(f->dev[0], 1 << 20, 0, V, S, "hs-pinned");
	assert_true(bo && pinned);
	assert_int_equal(bo_fill(bo, 3 << 20, 61), 0);
	assert_int_equal(bo_fill(pinned, 1 << 20, 62), 0);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev[1]), 0);
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[1], 0), -EBUSY);
	assert_int_equal(ugpu_device_suspend_cancel(f->dev[1]), 0);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev[0]), 0);
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[1], 0), -EBUSY);
	assert_int_equal(ugpu_device_suspend_cancel(f->dev[0]), 0);
	assert_int_equal(mem_of(f->dev[1]).peer_in, 0);
	/* both move, one is pinned there; device 1 sleeps and wakes with them */
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[1], 0), 0);
	assert_int_equal(ugpu_bo_migrate_device(pinned, f->dev[1], 0), 0);
	assert_int_equal(ugpu_bo_pin(pinned), 0);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev[1]), 0);
	assert_int_equal(ugpu_device_suspend(f->dev[1]), 0);
	assert_int_equal(ugpu_device_resume(f->dev[1]), 0);
	assert_int_equal(bo_verify(bo, 3 << 20, 61), -1);
	assert_int_equal(bo_where(pinned), V);
	assert_int_equal(bo_verify(pinned, 1 << 20, 62), -1);
	/* and the first device's cycle does not touch them */
	assert_int_equal(ugpu_device_suspend_prepare(f->dev[0]), 0);
	assert_int_equal(ugpu_device_suspend(f->dev[0]), 0);
	assert_int_equal(ugpu_bo_read(pinned, 0, &(char){ 0 }, 1), 0);
	assert_int_equal(ugpu_device_resume(f->dev[0]), 0);
	assert_int_equal(ugpu_bo_unpin(pinned), 0);
	assert_int_equal(ugpu_bo_migrate_device(pinned, f->dev[0], 0), 0);
	assert_int_equal(bo_verify(pinned, 1 << 20, 62), -1);
	ugpu_bo_put(bo);
	ugpu_bo_put(pinned);
	mfx_stop(f);
}

/* Concurrency: two threads move one BO back and forth between the devices
 * (one directly, one through system memory) while two others read it whole
 * and query it: every read sees the whole pattern, every call finds the
 * BO's manager wherever it is at that moment (bo_lock()). */
struct conc {
	struct mfx *f;
	struct ugpu_bo *bo;
	int stop;
	int err;
	unsigned long moves, reads;
};

static void *conc_mover(void *arg)
{
	struct conc *c = arg;
	unsigned int i;

	for (i = 0; i < 40; i++) {
		uint32_t flags = i & 1 ? UGPU_MIGRATE_VIA_SYSTEM : 0;
		int ret = ugpu_bo_migrate_device(c->bo, c->f->dev[i & 2 ? 0 : 1], flags);

		if (ret) {
			__atomic_store_n(&c->err, ret, __ATOMIC_RELAXED);
			break;
		}
		__atomic_add_fetch(&c->moves, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void *conc_reader(void *arg)
{
	struct conc *c = arg;
	uint8_t *buf = malloc(1 << 20);

	while (buf && !__atomic_load_n(&c->stop, __ATOMIC_RELAXED)) {
		struct ugpu_bo_info i = { .size = sizeof(i) };

		if (ugpu_bo_read(c->bo, 0, buf, 1 << 20) || pat_check(buf, 1 << 20, 51) != -1 ||
		    ugpu_bo_query(c->bo, &i) || i.placement != V) {
			__atomic_store_n(&c->err, -EIO, __ATOMIC_RELAXED);
			break;
		}
		__atomic_add_fetch(&c->reads, 1, __ATOMIC_RELAXED);
	}
	free(buf);
	return NULL;
}

static void test_move_concurrent(void **state)
{
	struct conc c = { .f = mfx_start(2, 16 << 20, NULL) };
	pthread_t t[4];
	int i;

	(void)state;
	c.bo = bo_new(c.f->dev[0], 1 << 20, 0, V, S, "conc");
	assert_non_null(c.bo);
	assert_int_equal(bo_fill(c.bo, 1 << 20, 51), 0);
	for (i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, i < 2 ? conc_mover : conc_reader, &c), 0);
	for (i = 0; i < 2; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	__atomic_store_n(&c.stop, 1, __ATOMIC_RELAXED);
	for (i = 2; i < 4; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	assert_int_equal(c.err, 0);
	assert_int_equal(c.moves, 80);
	assert_true(c.reads > 0);
	assert_int_equal(bo_verify(c.bo, 1 << 20, 51), -1);
	assert_int_equal(mem_of(c.f->dev[0]).bos + mem_of(c.f->dev[1]).bos, 1);
	ugpu_bo_put(c.bo);
	mfx_stop(c.f);
}

/* ---- removal of one device ------------------------------------------------- */

#define NW 4
#define WBYTES (2u << 20)

struct writer {
	struct ugpu_bo *bo;
	uint32_t seed; /* last pattern written whole (atomic) */
	int *stop;
	int err;
};

/* Rewrite the whole BO with a new pattern until told to stop; every write
 * must succeed, wherever the BO lives meanwhile. */
static void *writer_fn(void *arg)
{
	struct writer *w = arg;
	uint32_t s = __atomic_load_n(&w->seed, __ATOMIC_RELAXED);

	while (!__atomic_load_n(w->stop, __ATOMIC_RELAXED)) {
		int ret = bo_fill(w->bo, WBYTES, ++s);

		if (ret) {
			w->err = ret;
			break;
		}
		__atomic_store_n(&w->seed, s, __ATOMIC_RELAXED);
	}
	return NULL;
}

/* An orderly removal under load: BOs written all along move to the peer's
 * VRAM over the fabric, byte-exact, and so do the pinned one (still
 * pinned there) and the CPU-mapped one (its mapping with it); the peer's
 * own BOs are untouched. */
static void test_removal_to_peer(void **state)
{
	struct mfx *f = mfx_start(2, 64 << 20, NULL);
	struct ugpu_unplug_info ui = { .size = sizeof(ui) };
	struct ugpu_device_mem b0 = mem_of(f->dev[1]), b;
	struct writer w[NW];
	pthread_t t[NW];
	struct ugpu_bo *pinned, *mapped, *sys, *own;
	uint8_t *p;
	int stop = 0;
	unsigned int i;

	(void)state;
	own = bo_new(f->dev[1], 1 << 20, 0, V, S, "b-own");
	pinned = bo_new(f->dev[0], 1 << 20, UGPU_BO_PINNED, V, S, "pinned");
	mapped = bo_new(f->dev[0], 1 << 20, 0, V, S, "mapped");
	sys = bo_new(f->dev[0], 1 << 20, 0, S, V, "sys");
	assert_true(own && pinned && mapped && sys);
	assert_int_equal(bo_fill(own, 1 << 20, 201), 0);
	assert_int_equal(bo_fill(pinned, 1 << 20, 202), 0);
	assert_int_equal(bo_fill(sys, 1 << 20, 204), 0);
	assert_int_equal(ugpu_bo_map(mapped, (void **)&p), 0);
	pat_fill(p, 1 << 20, 203);
	for (i = 0; i < NW; i++) {
		w[i] = (struct writer){ .bo = bo_new(f->dev[0], WBYTES, 0, V, S, "loaded"),
					.seed = 1000 * (i + 1), .stop = &stop };
		assert_non_null(w[i].bo);
		assert_int_equal(bo_fill(w[i].bo, WBYTES, w[i].seed), 0);
		assert_int_equal(pthread_create(&t[i], NULL, writer_fn, &w[i]), 0);
	}
	usleep(30000);
	assert_int_equal(ugpu_device_unplug(f->dev[0]), 0);
	usleep(10000); /* the writers go on after the removal */
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	for (i = 0; i < NW; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(w[i].err, 0);
	}
	assert_int_equal(ugpu_device_unplug_info(f->dev[0], &ui), 0);
	assert_int_equal(ui.state, UGPU_UNPLUG_REMOVED);
	assert_int_equal(ui.status, 0);
	/* the writers' BOs and the pinned one (its pin with it) */
	/* the writers' BOs, the pinned one (its pin with it) and the mapped
	 * one (its mapping with it) */
	assert_int_equal(ui.bos_to_peer, NW + 2);
	assert_int_equal(ui.bytes_to_peer, (uint64_t)NW * WBYTES + (2 << 20));
	assert_int_equal(ui.bos_moved, 0);
	assert_int_equal(ui.bos_lost, 0);
	b = mem_of(f->dev[1]);
	assert_int_equal(b.bos, b0.bos + 3 + NW);
	assert_int_equal(b.peer_in, NW + 2);
	assert_int_equal(b.peer_direct, NW + 2);
	assert_ptr_equal(bo_dev(mapped), f->dev[1]);
	assert_int_equal(bo_where(mapped), V);
	for (i = 0; i < NW; i++) {
		assert_int_equal(bo_where(w[i].bo), V);
		assert_int_equal(bo_verify(w[i].bo, WBYTES, w[i].seed), -1);
	}
	assert_int_equal(bo_where(pinned), V);
	assert_int_equal(bo_verify(pinned, 1 << 20, 202), -1);
	assert_int_equal(ugpu_bo_migrate(pinned, S), -EBUSY); /* still pinned */
	assert_int_equal(pat_check(p, 1 << 20, 203), -1);
	assert_int_equal(bo_verify(sys, 1 << 20, 204), -1);
	assert_int_equal(bo_verify(own, 1 << 20, 201), -1);
	/* a BO that moved keeps working on its new device: and back to system */
	assert_int_equal(ugpu_bo_migrate(w[0].bo, S), 0);
	assert_int_equal(bo_verify(w[0].bo, WBYTES, w[0].seed), -1);
	/* unpinned on its new device, it moves as any of its BOs */
	assert_int_equal(ugpu_bo_unpin(pinned), 0);
	assert_int_equal(ugpu_bo_migrate(pinned, S), 0);
	assert_int_equal(bo_verify(pinned, 1 << 20, 202), -1);
	/* the survivors of the removed device may move to the peer afterwards
	 * (through system memory: a removed device has no link) */
	assert_int_equal(ugpu_bo_unmap(mapped), 0);
	assert_int_equal(bo_verify(mapped, 1 << 20, 203), -1);
	assert_int_equal(ugpu_bo_migrate_device(sys, f->dev[1], UGPU_MIGRATE_DIRECT), -ENOLINK);
	assert_int_equal(ugpu_bo_migrate_device(sys, f->dev[1], 0), 0);
	assert_int_equal(bo_where(sys), V);
	assert_int_equal(bo_verify(sys, 1 << 20, 204), -1);
	for (i = 0; i < NW; i++)
		ugpu_bo_put(w[i].bo);
	ugpu_bo_put(pinned);
	ugpu_bo_put(mapped);
	ugpu_bo_put(sys);
	ugpu_bo_put(own);
	mfx_stop(f);
}

/* Three devices: the removed one's fast peer is full, its other peer (slow
 * link) has room: the BOs go there through system memory. With no room
 * anywhere they go to system memory. */
static void test_removal_peer_room(void **state)
{
	static const unsigned int slow[][2] = { { 0, 2 }, { 0, 0 } };
	struct mfx *f = mfx_start(3, 16 << 20, slow);
	struct ugpu_unplug_info ui = { .size = sizeof(ui) };
	struct ugpu_bo *full1, *full2, *bo[2], *kept;
	unsigned int i;

	(void)state;
	/* node 1: full of its own BOs (not evicted for the removal) */
	full1 = bo_new(f->dev[1], 15 << 20, 0, V, S, "full1");
	assert_non_null(full1);
	for (i = 0; i < 2; i++) {
		bo[i] = bo_new(f->dev[0], 3 << 20, 0, V, S, "to-2");
		assert_non_null(bo[i]);
		assert_int_equal(bo_fill(bo[i], 3 << 20, 300 + i), 0);
	}
	/* node 2 has room for one of them only */
	full2 = bo_new(f->dev[2], 11 << 20, UGPU_BO_PINNED, V, N, "full2");
	assert_non_null(full2);
	assert_int_equal(ugpu_device_unplug(f->dev[0]), 0);
	assert_int_equal(ugpu_device_unplug_info(f->dev[0], &ui), 0);
	assert_int_equal(ui.bos_to_peer, 1);
	assert_int_equal(ui.bos_moved, 1);
	assert_int_equal(mem_of(f->dev[2]).peer_via_system, 1);
	assert_int_equal(mem_of(f->dev[1]).peer_in, 0);
	assert_int_equal(bo_where(full1), V);
	for (i = 0; i < 2; i++)
		assert_int_equal(bo_verify(bo[i], 3 << 20, 300 + i), -1);
	kept = bo_where(bo[0]) == S ? bo[0] : bo[1];
	assert_int_equal(bo_where(kept), S);
	for (i = 0; i < 2; i++)
		ugpu_bo_put(bo[i]);
	ugpu_bo_put(full1);
	ugpu_bo_put(full2);
	mfx_stop(f);
}

/* Pull device @i out by surprise; its removal's report once it is done. */
static struct ugpu_unplug_info surprise_and_wait(struct mfx *f, unsigned int i)
{
	struct ugpu_unplug_info ui = { .size = sizeof(ui) };
	unsigned int t;

	assert_int_equal(sim_unplug_surprise(f->sim, i), 0);
	for (t = 0;; t++) {
		assert_int_equal(ugpu_device_unplug_info(f->dev[i], &ui), 0);
		if (ui.state == UGPU_UNPLUG_REMOVED)
			return ui;
		assert_true(t < 10000);
		usleep(1000);
	}
}

/* A surprise removal: nothing can be read from the device any more, so
 * nothing goes to the peer; what had a copy in system memory survives,
 * what was only in VRAM is reported lost; the peer is untouched. */
static void test_removal_surprise(void **state)
{
	struct mfx *f = mfx_start(2, 16 << 20, NULL);
	struct ugpu_unplug_info ui = { .size = sizeof(ui) };
	struct ugpu_bo *vram, *sys, *own;

	(void)state;
	vram = bo_new(f->dev[0], 1 << 20, 0, V, S, "vram");
	sys = bo_new(f->dev[0], 1 << 20, 0, S, V, "sys");
	own = bo_new(f->dev[1], 1 << 20, 0, V, S, "own");
	assert_true(vram && sys && own);
	assert_int_equal(bo_fill(vram, 1 << 20, 401), 0);
	assert_int_equal(bo_fill(sys, 1 << 20, 402), 0);
	assert_int_equal(bo_fill(own, 1 << 20, 403), 0);
	ui = surprise_and_wait(f, 0);
	assert_int_equal(ui.status, -ENODEV);
	assert_int_equal(ui.bos_to_peer, 0);
	assert_int_equal(ui.bos_lost, 1);
	assert_int_equal(link_of(f->dev[0], f->dev[1]), UGPU_LINK_NONE);
	assert_int_equal(bo_verify(sys, 1 << 20, 402), -1);
	assert_int_equal(bo_verify(own, 1 << 20, 403), -1);
	{
		char b;

		assert_int_equal(ugpu_bo_read(vram, 0, &b, 1), -ENODATA);
	}
	assert_int_equal(ugpu_bo_migrate_device(vram, f->dev[1], 0), -ENODATA);
	/* the survivor moves on to the peer */
	assert_int_equal(ugpu_bo_migrate_device(sys, f->dev[1], 0), 0);
	assert_int_equal(bo_verify(sys, 1 << 20, 402), -1);
	ugpu_bo_put(vram);
	ugpu_bo_put(sys);
	ugpu_bo_put(own);
	mfx_stop(f);
}

/* A VRAM-only BO that a removal left in system memory (no peer had room)
 * and ugpu_bo_migrate_device() then moved to a peer is VRAM-only there
 * again: host suspend's prepare keeps it in VRAM, and a move to system
 * memory is refused as at its creation (found by test_model's moves between
 * devices: the removal's placements stayed, and prepare evicted it). */
static void test_survivor_keeps_placements(void **state)
{
	struct mfx *f = mfx_start(2, 16 << 20, NULL);
	struct ugpu_bo *full, *bo;

	(void)state;
	full = bo_new(f->dev[1], 15 << 20, UGPU_BO_PINNED, V, N, "full");
	bo = bo_new(f->dev[0], 1 << 20, 0, V, N, "vram-only");
	assert_true(full && bo);
	assert_int_equal(bo_fill(bo, 1 << 20, 501), 0);
	assert_int_equal(ugpu_bo_migrate(bo, S), -EINVAL);
	assert_int_equal(ugpu_device_unplug(f->dev[0]), 0);
	assert_int_equal(bo_where(bo), S); /* no room on the peer */
	ugpu_bo_put(full);
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[1], 0), 0);
	assert_int_equal(bo_where(bo), V);
	assert_int_equal(ugpu_bo_migrate(bo, S), -EINVAL);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev[1]), 0);
	assert_int_equal(bo_where(bo), V);
	assert_int_equal(ugpu_device_suspend_cancel(f->dev[1]), 0);
	assert_int_equal(bo_verify(bo, 1 << 20, 501), -1);
	ugpu_bo_put(bo);
	mfx_stop(f);
}

/* ---- peer access in place ---------------------------------------------------- */

static uint64_t word_sum(struct ugpu_bo *bo, uint64_t bytes)
{
	uint64_t *w = malloc(bytes), sum = 0;

	assert_non_null(w);
	assert_int_equal(ugpu_bo_read(bo, 0, w, bytes), 0);
	for (uint64_t i = 0; i < bytes / 8; i++)
		sum += w[i];
	free(w);
	return sum;
}

static uint32_t pins_of(struct ugpu_bo *bo)
{
	struct ugpu_bo_info i = { .size = sizeof(i) };

	assert_int_equal(ugpu_bo_query(bo, &i), 0);
	return i.pin_count;
}

/* A surprise while the device sleeps in D3cold: what its runtime-PM
 * backups kept (a pinned BO, a VRAM-only one) survives, and is then
 * offered to the peer's VRAM like an orderly removal's BOs: both land
 * there byte-exact, with the placements (and the pin) they had. */
static void test_removal_surprise_survivors(void **state)
{
	struct mfx *f = mfx_start(2, 16 << 20, NULL);
	struct ugpu_unplug_info ui = { .size = sizeof(ui) };
	struct ugpu_device_info info = { .size = sizeof(info) };
	struct ugpu_bo *pinned, *vonly;

	(void)state;
	pinned = bo_new(f->dev[0], 1 << 20, UGPU_BO_PINNED, V, S, "pinned");
	vonly = bo_new(f->dev[0], 2 << 20, 0, V, N, "vram-only");
	assert_true(pinned && vonly);
	assert_int_equal(bo_fill(pinned, 1 << 20, 411), 0);
	assert_int_equal(bo_fill(vonly, 2 << 20, 412), 0);
	assert_int_equal(ugpu_device_rpm_set_d3cold_threshold(f->dev[0], 1ull << 40), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev[0], true), 0);
	assert_int_equal(rpm_suspend_soon(f->dev[0]), 0);
	assert_int_equal(ugpu_device_query(f->dev[0], &info), 0);
	assert_int_equal(info.power_state, UGPU_POWER_D3COLD);
	ui = surprise_and_wait(f, 0);
	assert_int_equal(ui.status, -ENODEV);
	assert_int_equal(ui.bos_lost, 0);
	assert_int_equal(ui.bos_adopted, 2);
	assert_int_equal(ui.bos_to_peer, 2);
	assert_int_equal(ui.bytes_to_peer, 3 << 20);
	assert_int_equal(mem_of(f->dev[1]).peer_via_system, 2);
	assert_ptr_equal(bo_dev(pinned), f->dev[1]);
	assert_ptr_equal(bo_dev(vonly), f->dev[1]);
	assert_int_equal(bo_where(pinned), V);
	assert_int_equal(bo_where(vonly), V);
	assert_int_equal(bo_verify(pinned, 1 << 20, 411), -1);
	assert_int_equal(bo_verify(vonly, 2 << 20, 412), -1);
	assert_int_equal(ugpu_bo_migrate(pinned, S), -EBUSY); /* still pinned */
	assert_int_equal(ugpu_bo_migrate(vonly, S), -EINVAL); /* VRAM only again */
	assert_int_equal(pins_of(pinned), 1);
	ugpu_bo_put(pinned);
	ugpu_bo_put(vonly);
	mfx_stop(f);
}

#define PVA 0x10000000ull
#define PBYTES (2u << 20)

/* A VM on @dev with one queue. */
static void vm_and_queue(struct ugpu_device *dev, struct ugpu_vm **vm, struct ugpu_queue **q)
{
	struct ugpu_vm_opts vo = { .size = sizeof(vo), .name = "a" };
	struct ugpu_queue_opts qo = { .size = sizeof(qo), .name = "a" };

	assert_int_equal(ugpu_vm_create(dev, &vo, vm), 0);
	assert_int_equal(ugpu_queue_create(*vm, &qo, q), 0);
}

/* A kernel on device 0 reads and writes a BO living in device 1's VRAM in
 * place, through device 0's window onto device 1's VRAM BAR: the BO is
 * pinned there while bound; the unbind lets it go. */
static void test_peer_bind(void **state)
{
	struct mfx *f = mfx_start(2, 32 << 20, NULL);
	struct ugpu_kernel_result r;
	struct ugpu_vm *vm;
	struct ugpu_queue *q;
	struct ugpu_bo *bo, *sys_only;
	uint64_t *w = malloc(PBYTES);
	unsigned int i;

	(void)state;
	assert_non_null(w);
	bo = bo_new(f->dev[1], PBYTES, 0, V, S, "peer");
	sys_only = bo_new(f->dev[1], PBYTES, 0, S, N, "peer-sys");
	assert_true(bo && sys_only);
	assert_int_equal(bo_fill(bo, PBYTES, 77), 0);
	vm_and_queue(f->dev[0], &vm, &q);

	assert_int_equal(ugpu_vm_bind(vm, sys_only, 0, PVA, PBYTES, 0), -EINVAL);
	assert_int_equal(pins_of(sys_only), 0);
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, PVA, PBYTES, 0), 0);
	assert_true(pins_of(bo) >= 1);
	assert_int_equal(ugpu_bo_migrate(bo, S), -EBUSY); /* held in place */
	assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[0], 0), -EBUSY);
	assert_int_equal(run_kernel(q, UGPU_KERNEL_READ_SUM, (void *)(uintptr_t)PVA, PBYTES, 0, 5000,
				    &r),
			 0);
	assert_int_equal(r.sum, word_sum(bo, PBYTES));
	/* a write from device 0 lands in device 1's VRAM */
	assert_int_equal(run_kernel(q, UGPU_KERNEL_WRITE, (void *)(uintptr_t)(PVA + 4096), 8192,
				    0x1122334455667788ull, 5000, &r),
			 0);
	assert_int_equal(ugpu_bo_read(bo, 0, w, PBYTES), 0);
	assert_int_equal(pat_check(w, 4096, 77), -1);
	for (i = 0; i < 1024; i++)
		assert_int_equal(w[512 + i], 0x1122334455667788ull);
	assert_int_equal(bo_where(bo), V);
	assert_int_equal(mem_of(f->dev[0]).bos, 0); /* nothing moved to device 0 */
	assert_int_equal(ugpu_vm_unbind(vm, PVA, PBYTES), 0);
	assert_int_equal(pins_of(bo), 0);
	assert_int_equal(ugpu_bo_migrate(bo, S), 0);
	/* in system memory: no in-place bind from there */
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, PVA, PBYTES, 0), 0); /* the pin brings it back */
	assert_int_equal(bo_where(bo), V);
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0); /* the binds go with it */
	assert_int_equal(pins_of(bo), 0);
	free(w);
	ugpu_bo_put(bo);
	ugpu_bo_put(sys_only);
	mfx_stop(f);
}

/* The peer goes away: device 0's binds into its VRAM are revoked before
 * anything of it moves (a kernel then faults on them instead of reading
 * VRAM that is no longer the BO's), the BO keeps its bytes (the bind's pin
 * moves it with the removal's pinned BOs: to device 0's VRAM, the peer
 * with room), and the unbind still works. */
static void test_peer_bind_revoked(void **state)
{
	struct mfx *f = mfx_start(2, 32 << 20, NULL);
	struct ugpu_kernel_result r;
	struct ugpu_vm *vm;
	struct ugpu_queue *q;
	struct ugpu_bo *bo;

	(void)state;
	bo = bo_new(f->dev[1], PBYTES, 0, V, S, "peer");
	assert_non_null(bo);
	assert_int_equal(bo_fill(bo, PBYTES, 78), 0);
	vm_and_queue(f->dev[0], &vm, &q);
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, PVA, PBYTES, UGPU_BIND_READONLY), 0);
	assert_int_equal(run_kernel(q, UGPU_KERNEL_READ_SUM, (void *)(uintptr_t)PVA, PBYTES, 0, 5000,
				    &r),
			 0);
	assert_int_equal(ugpu_device_unplug(f->dev[1]), 0);
	assert_int_equal(run_kernel(q, UGPU_KERNEL_READ_SUM, (void *)(uintptr_t)PVA, PBYTES, 0, 5000,
				    &r),
			 -EFAULT);
	assert_int_equal(r.fault_va, PVA);
	assert_int_equal(bo_where(bo), V);
	assert_int_equal(bo_verify(bo, PBYTES, 78), -1);
	assert_int_equal(mem_of(f->dev[0]).peer_in, 1);
	/* it is device 0's BO now: a new bind is a local one, and reads it */
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, PVA + PBYTES, PBYTES, 0), 0);
	assert_int_equal(run_kernel(q, UGPU_KERNEL_READ_SUM, (void *)(uintptr_t)(PVA + PBYTES),
				    PBYTES, 0, 5000, &r),
			 0);
	assert_true(r.sum == word_sum(bo, PBYTES));
	assert_int_equal(ugpu_vm_unbind(vm, PVA + PBYTES, PBYTES), 0);
	assert_int_equal(ugpu_vm_unbind(vm, PVA, PBYTES), 0);
	assert_int_equal(pins_of(bo), 0);
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	ugpu_bo_put(bo);
	mfx_stop(f);
}

/* The importer goes: device 0, whose VM reads device 1's BO in place, is
 * removed (orderly, by a surprise) or closed. Its kernels can run no more,
 * so its binds hold device 1 awake no longer: device 1 sleeps at once
 * (autosuspend 0) though the program has not unbound yet, and it closes
 * without waiting for them; the BO stays byte-exact (pinned until the
 * unbind, which still works after a removal, as does the VM's destroy
 * after either). The close was found by the review of the removal's fix:
 * device 1 stayed awake, and its close waited 30 s. */
enum importer_goes { IMPORTER_REMOVED, IMPORTER_SURPRISE, IMPORTER_CLOSED };

static void importer_goes(enum importer_goes how)
{
	struct mfx *f = mfx_start(2, 32 << 20, NULL);
	struct ugpu_rpm_stats st = { .size = sizeof(st) };
	struct ugpu_kernel_result r;
	struct ugpu_vm *vm;
	struct ugpu_queue *q;
	struct ugpu_bo *bo;
	uint64_t t0;
	int i;

	bo = bo_new(f->dev[1], PBYTES, 0, V, S, "peer");
	assert_non_null(bo);
	assert_int_equal(bo_fill(bo, PBYTES, 91), 0);
	vm_and_queue(f->dev[0], &vm, &q);
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, PVA, PBYTES, UGPU_BIND_READONLY), 0);
	assert_int_equal(run_kernel(q, UGPU_KERNEL_READ_SUM, (void *)(uintptr_t)PVA, PBYTES, 0, 5000,
				    &r),
			 0);
	if (how == IMPORTER_SURPRISE) {
		(void)surprise_and_wait(f, 0);
	} else if (how == IMPORTER_REMOVED) {
		assert_int_equal(ugpu_device_unplug(f->dev[0]), 0);
	} else {
		ugpu_device_close(f->dev[0]);
		f->dev[0] = NULL;
	}
	assert_true(!f->dev[0] || ugpu_device_is_gone(f->dev[0]));
	assert_int_equal(ugpu_device_rpm_set_autosuspend_delay(f->dev[1], 0), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev[1], true), 0);
	for (i = 0; i < 400; i++) {
		assert_int_equal(ugpu_device_rpm_stats(f->dev[1], &st), 0);
		if (st.state == UGPU_RPM_SUSPENDED)
			break;
		usleep(5000);
	}
	if (st.state != UGPU_RPM_SUSPENDED)
		fail_msg("device 1 still awake: state %d, usage %u, allowed %d", st.state, st.usage,
			 st.allowed);
	assert_int_equal(bo_verify(bo, PBYTES, 91), -1);
	assert_int_equal(pins_of(bo), 1);
	/* the exporter closes while the gone importer's VM still binds */
	t0 = now_ms();
	ugpu_bo_put(bo);
	ugpu_device_close(f->dev[1]);
	f->dev[1] = NULL;
	assert_true(now_ms() - t0 < 5000);
	if (how != IMPORTER_CLOSED)
		assert_int_equal(ugpu_vm_unbind(vm, PVA, PBYTES), 0);
	ugpu_queue_destroy(q);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	if (f->dev[0])
		ugpu_device_close(f->dev[0]);
	f->dev[0] = NULL;
	mfx_stop(f);
}

static void test_importer_removed_lets_exporter_sleep(void **state)
{
	(void)state;
	importer_goes(IMPORTER_REMOVED);
}

static void test_importer_surprise_lets_exporter_sleep(void **state)
{
	(void)state;
	importer_goes(IMPORTER_SURPRISE);
}

static void test_importer_closed_lets_exporter_sleep(void **state)
{
	(void)state;
	importer_goes(IMPORTER_CLOSED);
}

/* The exporter's host suspend: a kernel of device 0 on a VM with a peer
 * bind into device 1 waits while device 1's VRAM is off (not run against
 * a sleeping peer), and runs when it resumes, reading the BO's bytes
 * (restored in place: the bind pins it); a VM of device 0 without peer
 * binds is not held meanwhile. */
static void test_peer_bind_host_suspend(void **state)
{
	struct mfx *f = mfx_start(2, 32 << 20, NULL);
	struct ugpu_kernel k = { .size = sizeof(k), .op = UGPU_KERNEL_READ_SUM, .va = PVA,
				 .bytes = PBYTES };
	struct ugpu_kernel_result r = { .size = sizeof(r) };
	struct ugpu_vm *vm, *vm_own;
	struct ugpu_queue *q, *q_own;
	struct ugpu_bo *bo, *own;
	uint64_t fence, sum;

	(void)state;
	bo = bo_new(f->dev[1], PBYTES, 0, V, S, "peer");
	own = bo_new(f->dev[0], PBYTES, 0, V, S, "own");
	assert_true(bo && own);
	assert_int_equal(bo_fill(bo, PBYTES, 81), 0);
	assert_int_equal(bo_fill(own, PBYTES, 82), 0);
	sum = word_sum(bo, PBYTES);
	vm_and_queue(f->dev[0], &vm, &q);
	vm_and_queue(f->dev[0], &vm_own, &q_own);
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, PVA, PBYTES, 0), 0);
	assert_int_equal(ugpu_vm_bind(vm_own, own, 0, PVA, PBYTES, 0), 0);
	assert_int_equal(run_kernel(q, UGPU_KERNEL_READ_SUM, (void *)(uintptr_t)PVA, PBYTES, 0, 5000,
				    &r),
			 0);
	assert_true(r.sum == sum);

	assert_int_equal(ugpu_device_suspend(f->dev[1]), 0);
	assert_int_equal(ugpu_queue_submit(q, &k, &fence), 0);
	assert_int_equal(ugpu_fence_wait(q, fence, 300, &r), -ETIMEDOUT); /* held */
	/* device 0's other VM runs as usual */
	assert_int_equal(run_kernel(q_own, UGPU_KERNEL_READ_SUM, (void *)(uintptr_t)PVA, PBYTES, 0,
				    5000, &r),
			 0);
	assert_true(r.sum == word_sum(own, PBYTES));
	assert_int_equal(ugpu_fence_wait(q, fence, 0, &r), -EAGAIN); /* still held */
	assert_int_equal(ugpu_device_resume(f->dev[1]), 0);
	assert_int_equal(ugpu_fence_wait(q, fence, 5000, &r), 0);
	assert_int_equal(r.status, 0);
	assert_true(r.sum == sum);
	/* and writes land in device 1's VRAM as before */
	assert_int_equal(run_kernel(q, UGPU_KERNEL_WRITE, (void *)(uintptr_t)PVA, 4096,
				    0x5a5a5a5a5a5a5a5aull, 5000, &r),
			 0);
	{
		uint64_t w;

		assert_int_equal(ugpu_bo_read(bo, 4088, &w, 8), 0);
		assert_true(w == 0x5a5a5a5a5a5a5a5aull);
	}
	/* a second cycle, resumed without anything held */
	assert_int_equal(ugpu_device_suspend(f->dev[1]), 0);
	assert_int_equal(ugpu_device_resume(f->dev[1]), 0);
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_queue_destroy(q_own), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	assert_int_equal(ugpu_vm_destroy(vm_own), 0);
	ugpu_bo_put(bo);
	ugpu_bo_put(own);
	mfx_stop(f);
}

/* A CPU thread stores a running counter through a BO's mapping, word
 * n % words gets n, until told to stop; @n is how far it got. */
struct storer {
	volatile uint64_t *p;
	uint64_t words;
	uint64_t n;
	int *stop;
};

static void *storer_fn(void *arg)
{
	struct storer *w = arg;
	uint64_t n = 0;

	while (!__atomic_load_n(w->stop, __ATOMIC_RELAXED) || n < 2 * w->words)
		w->p[n % w->words] = n, n++;
	__atomic_store_n(&w->n, n, __ATOMIC_RELEASE);
	return NULL;
}

/* Every word as the storer left it: word k holds the last n < @w->n with
 * n % words == k. @words: read with ugpu_bo_read() (NULL: through the map). */
static void storer_check(const struct storer *w, const uint64_t *words)
{
	for (uint64_t k = 0; k < w->words; k++) {
		uint64_t last = w->n - 1 - ((w->n - 1 - k) % w->words);
		uint64_t got = words ? words[k] : w->p[k];

		if (got != last)
			fail_msg("word %" PRIu64 ": %" PRIu64 ", expected %" PRIu64, k, got, last);
	}
}

/* A CPU mapping follows its BO to another device: a thread stores through
 * it before, during and after ugpu_bo_migrate_device() there and back
 * (directly and through system memory); the address never changes, every
 * store lands (the words against the counter, through the map and through
 * ugpu_bo_read()), and the new device's map manager serves the faults. */
static void test_move_mapped(void **state)
{
	struct mfx *f = mfx_start(2, 32 << 20, NULL);
	struct storer w = { .words = (4u << 20) / 8 };
	struct ugpu_rpm_stats rs = { .size = sizeof(rs) };
	uint64_t *buf = malloc(4u << 20), resumes;
	struct ugpu_bo *bo;
	pthread_t t;
	void *p, *p2;
	int stop = 0, k;

	(void)state;
	assert_non_null(buf);
	bo = bo_new(f->dev[0], 4u << 20, 0, V, S, "mapped");
	assert_non_null(bo);
	assert_int_equal(ugpu_bo_map(bo, &p), 0);
	w.p = p;
	w.stop = &stop;
	assert_int_equal(pthread_create(&t, NULL, storer_fn, &w), 0);
	for (k = 0; k < 4; k++) {
		struct ugpu_device *to = f->dev[(k + 1) % 2];

		usleep(5000);
		assert_int_equal(ugpu_bo_migrate_device(bo, to, k == 2 ? UGPU_MIGRATE_VIA_SYSTEM
								    : UGPU_MIGRATE_DIRECT),
				 0);
		assert_ptr_equal(bo_dev(bo), to);
		assert_int_equal(bo_where(bo), V);
		assert_int_equal(ugpu_bo_map(bo, &p2), 0); /* the same mapping */
		assert_ptr_equal(p2, p);
	}
	usleep(5000);
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	assert_int_equal(pthread_join(t, NULL), 0);
	storer_check(&w, NULL);
	assert_int_equal(ugpu_bo_read(bo, 0, buf, 4u << 20), 0);
	storer_check(&w, buf);
	assert_int_equal(mem_of(f->dev[0]).peer_in, 2);
	assert_int_equal(mem_of(f->dev[1]).peer_in, 2);
	assert_int_equal(mem_of(f->dev[1]).peer_via_system, 1);
	/* the manager of device 0 has it now: its writes go to device 0's VRAM */
	assert_int_equal(bo_fill(bo, 4u << 20, 55), 0);
	assert_int_equal(pat_check(p, 4u << 20, 55), -1);
	pat_fill(p, 4u << 20, 56);
	assert_int_equal(bo_verify(bo, 4u << 20, 56), -1);
	/* and its runtime PM: the mapping is released when device 0 sleeps
	 * (the fault took device 0's reference, not device 1's), and a touch
	 * wakes device 0 */
	assert_int_equal(ugpu_device_rpm_set_d3cold_threshold(f->dev[0], 0), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev[0], true), 0);
	assert_int_equal(rpm_suspend_soon(f->dev[0]), 0);
	assert_int_equal(ugpu_device_rpm_stats(f->dev[0], &rs), 0);
	resumes = rs.resumes;
	assert_int_equal(pat_check(p, 4u << 20, 56), -1);
	assert_int_equal(ugpu_device_rpm_stats(f->dev[0], &rs), 0);
	assert_true(rs.resumes > resumes);
	assert_int_equal(ugpu_bo_unmap(bo), 0);
	ugpu_bo_put(bo);
	free(buf);
	mfx_stop(f);
}

/* An orderly removal takes a CPU-mapped BO to the peer's VRAM with its
 * mapping: a thread stores through it before, during and after the
 * removal; every store lands, byte-exact, the address unchanged. */
static void test_removal_mapped_to_peer(void **state)
{
	struct mfx *f = mfx_start(2, 32 << 20, NULL);
	struct ugpu_unplug_info ui = { .size = sizeof(ui) };
	struct storer w = { .words = (8u << 20) / 8 };
	uint64_t *buf = malloc(8u << 20);
	struct ugpu_bo *bo;
	pthread_t t;
	void *p, *p2;
	int stop = 0;

	(void)state;
	assert_non_null(buf);
	bo = bo_new(f->dev[0], 8u << 20, 0, V, S, "mapped");
	assert_non_null(bo);
	assert_int_equal(ugpu_bo_map(bo, &p), 0);
	w.p = p;
	w.stop = &stop;
	assert_int_equal(pthread_create(&t, NULL, storer_fn, &w), 0);
	usleep(10000);
	assert_int_equal(ugpu_device_unplug(f->dev[0]), 0);
	usleep(10000); /* stores after the removal */
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(ugpu_device_unplug_info(f->dev[0], &ui), 0);
	assert_int_equal(ui.status, 0);
	assert_int_equal(ui.bos_to_peer, 1);
	assert_int_equal(ui.bos_moved, 0);
	assert_ptr_equal(bo_dev(bo), f->dev[1]);
	assert_int_equal(bo_where(bo), V);
	assert_int_equal(mem_of(f->dev[1]).peer_direct, 1);
	assert_int_equal(ugpu_bo_map(bo, &p2), 0);
	assert_ptr_equal(p2, p);
	storer_check(&w, NULL);
	assert_int_equal(ugpu_bo_read(bo, 0, buf, 8u << 20), 0);
	storer_check(&w, buf);
	/* and it keeps working on device 1: a move within it, the map follows */
	assert_int_equal(ugpu_bo_migrate(bo, S), 0);
	storer_check(&w, NULL);
	assert_int_equal(ugpu_bo_unmap(bo), 0);
	ugpu_bo_put(bo);
	free(buf);
	mfx_stop(f);
}

/* An orderly removal takes a GPU-bound BO to the peer: a kernel of the
 * removed device wrote it; its binds in the removed device's VM are
 * orphaned (the dead VM's unbind and destroy still work, and leave the BO
 * alone), it lands in the peer's VRAM byte-exact, and binds and reads
 * there. */
static void test_removal_bound_to_peer(void **state)
{
	struct mfx *f = mfx_start(2, 32 << 20, NULL);
	struct ugpu_unplug_info ui = { .size = sizeof(ui) };
	struct ugpu_kernel_result r;
	struct ugpu_vm *vm, *vm1;
	struct ugpu_queue *q, *q1;
	struct ugpu_bo *bo;
	uint64_t *w = malloc(PBYTES), sum;
	unsigned int i;

	(void)state;
	assert_non_null(w);
	bo = bo_new(f->dev[0], PBYTES, 0, V, S, "bound");
	assert_non_null(bo);
	assert_int_equal(bo_fill(bo, PBYTES, 91), 0);
	vm_and_queue(f->dev[0], &vm, &q);
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, PVA, PBYTES, 0), 0);
	assert_int_equal(ugpu_vm_bind(vm, bo, 0, PVA + PBYTES, PBYTES, UGPU_BIND_READONLY), 0);
	assert_int_equal(run_kernel(q, UGPU_KERNEL_WRITE, (void *)(uintptr_t)(PVA + 8192), 4096,
				    0x0123456789abcdefull, 5000, &r),
			 0);
	assert_int_equal(ugpu_device_unplug(f->dev[0]), 0);
	assert_int_equal(ugpu_device_unplug_info(f->dev[0], &ui), 0);
	assert_int_equal(ui.status, 0);
	assert_int_equal(ui.bos_to_peer, 1);
	assert_ptr_equal(bo_dev(bo), f->dev[1]);
	assert_int_equal(bo_where(bo), V);
	assert_int_equal(mem_of(f->dev[1]).peer_direct, 1);
	assert_int_equal(ugpu_bo_read(bo, 0, w, PBYTES), 0);
	assert_int_equal(pat_check(w, 8192, 91), -1);
	for (i = 0; i < 512; i++)
		assert_int_equal(w[1024 + i], 0x0123456789abcdefull);
	sum = word_sum(bo, PBYTES);
	/* the dead VM lets go of its binds; the BO is untouched */
	assert_int_equal(ugpu_vm_unbind(vm, PVA, PBYTES), 0);
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0); /* the other bind with it */
	assert_int_equal(word_sum(bo, PBYTES), sum);
	/* device 1's BO like any: it moves (no binds left on it) and binds */
	assert_int_equal(ugpu_bo_migrate(bo, S), 0);
	vm_and_queue(f->dev[1], &vm1, &q1);
	assert_int_equal(ugpu_vm_bind(vm1, bo, 0, PVA, PBYTES, 0), 0);
	assert_int_equal(run_kernel(q1, UGPU_KERNEL_READ_SUM, (void *)(uintptr_t)PVA, PBYTES, 0,
				    5000, &r),
			 0);
	assert_true(r.sum == sum);
	assert_int_equal(ugpu_queue_destroy(q1), 0);
	assert_int_equal(ugpu_vm_destroy(vm1), 0);
	ugpu_bo_put(bo);
	free(w);
	mfx_stop(f);
}

/* ---- a random sequence over two devices, against an oracle ------------------- */

#define RMAX 12

/* What the test knows of each BO: where it must be and what it holds. */
struct rbo {
	struct ugpu_bo *bo;
	uint64_t bytes;
	uint32_t seed; /* the pattern it holds */
	int dev; /* the device it belongs to */
	enum ugpu_placement where;
	unsigned int pins;
	uint8_t *map; /* CPU mapping, or NULL */
};

struct rstate {
	struct mfx *f;
	struct rng rng;
	struct rbo b[RMAX];
	bool slow;
	uint32_t next_seed;
	unsigned long ops, moves_direct, moves_via;
};

static void r_check(struct rstate *st, struct rbo *o)
{
	uint64_t bad;

	assert_int_equal(bo_where(o->bo), o->where);
	bad = (uint64_t)bo_verify(o->bo, o->bytes, o->seed);
	if (bad != (uint64_t)-1)
		fail_msg("op %lu: BO of %" PRIu64 " bytes on device %d differs at %" PRId64, st->ops,
			 o->bytes, o->dev, (int64_t)bad);
	if (o->map)
		assert_int_equal(pat_check(o->map, o->bytes, o->seed), -1);
}

/* Counts per device and each manager's invariants. */
static void r_check_all(struct rstate *st)
{
	uint64_t n[2] = { 0, 0 }, v[2] = { 0, 0 };

	for (int i = 0; i < RMAX; i++)
		if (st->b[i].bo) {
			n[st->b[i].dev]++;
			v[st->b[i].dev] += st->b[i].where == V;
		}
	for (int d = 0; d < 2; d++) {
		struct ugpu_device_mem m = mem_of(st->f->dev[d]);

		assert_int_equal(m.bos, n[d]);
		assert_int_equal(m.bos_vram, v[d]);
		assert_int_equal(bo_mgr_check(st->f->dev[d], false), 0);
	}
}

static void r_op(struct rstate *st)
{
	struct rbo *o = &st->b[rng_below(&st->rng, RMAX)];
	unsigned int what = (unsigned int)rng_below(&st->rng, 10);
	int ret;

	st->ops++;
	if (!o->bo) { /* create it on either device */
		o->dev = (int)rng_below(&st->rng, 2);
		o->bytes = 4096 * (1 + rng_below(&st->rng, 256)) - 8 * rng_below(&st->rng, 2);
		o->bo = bo_new(st->f->dev[o->dev], o->bytes, 0, V, S, "rnd");
		assert_non_null(o->bo);
		o->seed = st->next_seed++;
		o->where = V;
		assert_int_equal(bo_fill(o->bo, o->bytes, o->seed), 0);
		return;
	}
	switch (what) {
	case 0: /* rewrite */
		o->seed = st->next_seed++;
		if (o->map)
			pat_fill(o->map, o->bytes, o->seed);
		else
			assert_int_equal(bo_fill(o->bo, o->bytes, o->seed), 0);
		break;
	case 1: case 2: case 3: case 4: { /* to the other device, some path */
		uint32_t flags = (uint32_t)rng_below(&st->rng, 3);
		int to = 1 - o->dev, want;
		/* a slow link carries a move only when asked (DIRECT) */
		bool direct_ok = o->where == V && (!st->slow || flags == UGPU_MIGRATE_DIRECT);

		/* a CPU mapping follows the BO (its writes and checks below
		 * go through the same address on the other device) */
		want = o->pins ? -EBUSY : flags == UGPU_MIGRATE_DIRECT && !direct_ok ? -ENOLINK : 0;
		ret = ugpu_bo_migrate_device(o->bo, st->f->dev[to], flags);
		if (ret != want)
			fail_msg("op %lu: migrate_device(flags %u, %s, %u pins, %smapped) = %d, expected %d",
				 st->ops, flags, o->where == V ? "VRAM" : "system", o->pins,
				 o->map ? "" : "not ", ret, want);
		if (!ret) {
			if (flags != UGPU_MIGRATE_VIA_SYSTEM && direct_ok)
				st->moves_direct++;
			else
				st->moves_via++;
			o->dev = to;
			o->where = V;
		}
		break;
	}
	case 5: /* within its device */
		ret = ugpu_bo_migrate(o->bo, o->where == V ? S : V);
		assert_int_equal(ret, o->pins ? -EBUSY : 0);
		if (!ret)
			o->where = o->where == V ? S : V;
		break;
	case 6: /* pin / unpin */
		if (o->pins && rng_below(&st->rng, 2)) {
			assert_int_equal(ugpu_bo_unpin(o->bo), 0);
			o->pins--;
		} else if (o->pins < 3) {
			assert_int_equal(ugpu_bo_pin(o->bo), 0);
			if (!o->pins)
				o->where = V; /* first placement */
			o->pins++;
		}
		break;
	case 7: /* map / unmap */
		if (o->map) {
			assert_int_equal(ugpu_bo_unmap(o->bo), 0);
			o->map = NULL;
		} else {
			assert_int_equal(ugpu_bo_map(o->bo, (void **)&o->map), 0);
		}
		break;
	case 8: /* gone */
		if (o->map)
			assert_int_equal(ugpu_bo_unmap(o->bo), 0);
		ugpu_bo_put(o->bo);
		memset(o, 0, sizeof(*o));
		break;
	default:
		break;
	}
	if (o->bo)
		r_check(st, o);
}

/* Seeded random sequences of creates, writes (API and CPU mapping), moves
 * between the devices by every path, moves within a device, pins, maps and
 * puts, each checked against the oracle (bytes, placement, device, counts,
 * both managers' invariants). UGPU_MULTIDEV_SEED=N replays one seed. */
static void test_random_two_devices(void **state)
{
	const char *env = getenv("UGPU_MULTIDEV_SEED");
	uint64_t seed0 = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) * 1000003u;
	/* under a sanitizer two seeds (make test's time: four were 24 s of
	 * TSan's suite); a fresh pair each run */
	unsigned int seeds = env ? 1 : UNDER_SAN ? 2 : 4, k;

	(void)state;
	for (k = 0; k < seeds; k++) {
		static const unsigned int slow[][2] = { { 0, 1 }, { 0, 0 } };
		struct rstate st = { .rng = { .s = seed0 + k }, .next_seed = 1 };
		unsigned int i;

		st.slow = rng_below(&st.rng, 2);
		fprintf(stderr, "multidev random: seed=%" PRIu64 " (%s link); UGPU_MULTIDEV_SEED=%" PRIu64 " replays it\n",
			seed0 + k, st.slow ? "slow" : "fast", seed0 + k);
		st.f = mfx_start(2, 32 << 20, st.slow ? slow : NULL);
		for (i = 0; i < 250; i++) {
			r_op(&st);
			if (i % 25 == 24)
				r_check_all(&st);
		}
		r_check_all(&st);
		for (i = 0; i < RMAX; i++) {
			if (st.b[i].map)
				ugpu_bo_unmap(st.b[i].bo);
			ugpu_bo_put(st.b[i].bo);
		}
		fprintf(stderr, "multidev random: %lu ops, %lu moves directly, %lu through system memory\n",
			st.ops, st.moves_direct, st.moves_via);
		mfx_stop(st.f);
	}
}

/* A split direct copy (1 MiB or more: two halves on the source's two copy
 * engines) with the n-th descriptor failing: the move fails or completes,
 * the BO stays whole wherever it is, and both engines work afterwards. */
static void test_split_copy_half_fails(void **state)
{
	(void)state;
	for (unsigned int nth = 1; nth <= 3; nth++) {
		struct mfx *f = mfx_start(2, 64 << 20, NULL);
		struct ugpu_bo *bo = bo_new(f->dev[0], BIG, 0, V, S, "split");
		bool on0;

		assert_non_null(bo);
		assert_int_equal(bo_fill(bo, BIG, 31 + nth), 0);
		assert_int_equal(sim_inject(f->sim, 0, SIM_INJECT_CMD, nth, false), 0);
		(void)ugpu_bo_migrate_device(bo, f->dev[1], UGPU_MIGRATE_DIRECT);
		sim_inject_clear(f->sim, 0);
		on0 = mem_of(f->dev[0]).bos == 1;
		assert_int_equal(bo_verify(bo, BIG, 31 + nth), -1);
		assert_int_equal(ugpu_bo_migrate_device(bo, f->dev[on0 ? 1 : 0], UGPU_MIGRATE_DIRECT), 0);
		assert_int_equal(bo_verify(bo, BIG, 31 + nth), -1);
		assert_int_equal(ugpu_bo_migrate(bo, S), 0);
		assert_int_equal(bo_verify(bo, BIG, 31 + nth), -1);
		ugpu_bo_put(bo);
		mfx_stop(f);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_links_chain),
		cmocka_unit_test(test_links_groups),
		cmocka_unit_test(test_move_a_b_a),
		cmocka_unit_test(test_own_wait_follows_device),
		cmocka_unit_test(test_split_copy_half_fails),
		cmocka_unit_test(test_move_slow_link),
		cmocka_unit_test(test_move_evicts),
		cmocka_unit_test(test_move_errors),
		cmocka_unit_test(test_three_devices),
		cmocka_unit_test(test_move_wakes_peer),
		cmocka_unit_test(test_move_host_suspend),
		cmocka_unit_test(test_move_concurrent),
		cmocka_unit_test(test_removal_to_peer),
		cmocka_unit_test(test_removal_peer_room),
		cmocka_unit_test(test_removal_surprise),
		cmocka_unit_test(test_survivor_keeps_placements),
		cmocka_unit_test(test_removal_surprise_survivors),
		cmocka_unit_test(test_peer_bind),
		cmocka_unit_test(test_peer_bind_revoked),
		cmocka_unit_test(test_importer_removed_lets_exporter_sleep),
		cmocka_unit_test(test_importer_surprise_lets_exporter_sleep),
		cmocka_unit_test(test_importer_closed_lets_exporter_sleep),
		cmocka_unit_test(test_peer_bind_host_suspend),
		cmocka_unit_test(test_move_mapped),
		cmocka_unit_test(test_removal_mapped_to_peer),
		cmocka_unit_test(test_removal_bound_to_peer),
		cmocka_unit_test(test_random_two_devices),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
