/* SPDX-License-Identifier: MIT */
/*
 * Device removal against the in-process reference device: an orderly
 * removal (REQ irq, ugpu_device_unplug) keeps every BO's data in system
 * memory, whatever the BO was doing (pinned, mapped and written by threads,
 * being copied, evicting, runtime-suspended, host-suspend prepared or
 * suspended); a surprise removal keeps what had a system copy and reports
 * the rest lost; the teardown leaves nothing mapped on the transport. Every
 * wait is bounded far below the ctest timeout.
 */
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include <ugpu/rpm.h>
#include <ugpu/unplug.h>

#include "test_bo_common.h"
#include "base/test_point.h"
#include "mm/cpu_map.h"
#include "src/unplug.h"

#define MIB (1ull << 20)
#define REMOVAL_BOUND_MS 15000

static int setup(void **state)
{
	return fx_setup_vram(state, 64 * MIB);
}

static int fill_seed(struct ugpu_bo *bo, uint64_t bytes, uint32_t seed)
{
	return bo_fill(bo, bytes, seed);
}

/* After a removal: what every device-side path answers. */
static void check_after_removal(struct fx *f)
{
	struct ugpu_device_info di = { .size = sizeof(di) };
	struct ugpu_bo *bo;

	assert_true(ugpu_device_is_gone(f->dev));
	/* VRAM only: -ENODEV; VRAM then SYSTEM: falls back. */
	{
		struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = MIB,
					  .placements = { V }, .name = "late-vram" };

		assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), -ENODEV);
	}
	bo = bo_new(f->dev, MIB, 0, V, S, "late-any");
	assert_non_null(bo);
	assert_int_equal(bo_where(bo), S);
	assert_int_equal(fill_seed(bo, MIB, 77), 0);
	assert_int_equal(bo_verify(bo, MIB, 77), -1);
	assert_int_equal(ugpu_bo_migrate(bo, V), -ENODEV);
	{
		void *p;

		assert_int_equal(ugpu_bo_map(bo, &p), 0);
		assert_int_equal(pat_check(p, MIB, 77), -1);
		assert_int_equal(ugpu_bo_unmap(bo), 0);
	}
	ugpu_bo_put(bo);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), -ENODEV);
	assert_int_equal(ugpu_device_suspend(f->dev), -ENODEV);
	assert_int_equal(ugpu_device_query(f->dev, &di), 0);
	assert_string_equal(di.transport, "removed");
	assert_int_equal(bo_mgr_check(f->dev, false), 0);
}

/* ---- orderly removal: every kind of BO ------------------------------------- */

struct cb_seen {
	pthread_mutex_t lock;
	int calls;
	enum ugpu_unplug_kind kind;
	int status;
};

static void on_removed(void *user, struct ugpu_device *dev, enum ugpu_unplug_kind kind, int status)
{
	struct cb_seen *c = user;

	(void)dev;
	pthread_mutex_lock(&c->lock);
	c->calls++;
	c->kind = kind;
	c->status = status;
	pthread_mutex_unlock(&c->lock);
}

static void test_request_keeps_everything(void **state)
{
	struct fx *f = *state;
	struct cb_seen cb = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct ugpu_bo *vonly, *vany, *pinned, *sys, *mapped;
	struct ugpu_unplug_info info;
	struct sim_state ss;
	void *p;
	uint64_t t0;

	vonly = bo_new(f->dev, 3 * MIB, 0, V, N, "vram-only");
	vany = bo_new(f->dev, 2 * MIB + 4096, 0, V, S, "vram-any");
	pinned = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, N, "pinned");
	sys = bo_new(f->dev, MIB, 0, S, N, "system");
	mapped = bo_new(f->dev, 4 * MIB, UGPU_BO_CPU_ACCESS, V, S, "mapped");
	assert_true(vonly && vany && pinned && sys && mapped);
	assert_int_equal(fill_seed(vonly, 3 * MIB, 1), 0);
	assert_int_equal(fill_seed(vany, 2 * MIB + 4096, 2), 0);
	assert_int_equal(fill_seed(pinned, MIB, 3), 0);
	assert_int_equal(fill_seed(sys, MIB, 4), 0);
	assert_int_equal(ugpu_bo_map(mapped, &p), 0);
	pat_fill(p, 4 * MIB, 5);
	assert_int_equal(bo_where(vonly), V);
	assert_int_equal(bo_where(pinned), V);
	assert_int_equal(bo_where(mapped), V);
	assert_int_equal(ugpu_device_set_removal_callback(f->dev, on_removed, &cb), 0);
	assert_false(ugpu_device_is_gone(f->dev));

	t0 = fx_now_ms();
	assert_int_equal(sim_unplug_request(f->sim, 0), 0);
	info = fx_wait_removed(f->dev, REMOVAL_BOUND_MS);
	print_message("removal after REQ: %" PRIu64 " ms (removal itself %" PRIu64 " us), %" PRIu64
		      " BOs / %" PRIu64 " bytes moved, %" PRIu64 " kernel BOs\n",
		      fx_now_ms() - t0, info.removal_us, info.bos_moved, info.bytes_moved,
		      info.kernel_bos);
	assert_int_equal(info.kind, UGPU_UNPLUG_REQUEST);
	assert_int_equal(info.status, 0);
	assert_int_equal(info.bos_moved, 4);
	assert_int_equal(info.bos_lost, 0);
	assert_true(info.reqs >= 1);
	assert_int_equal(info.kernel_bos, FX_KERNEL_BOS);
	/* The device let go: the server saw its client leave. */
	for (t0 = fx_now_ms(); fx_now_ms() - t0 < 5000;) {
		if (sim_state(f->sim, 0, &ss) != 0 || (!ss.client && ss.removed))
			break;
		usleep(2000);
	}
	assert_int_equal(ugpu_device_unplug(f->dev), 0); /* already removed: no-op */
	/* The removal thread calls the callback just after the state turns
	 * REMOVED: wait for it (bounded), and assert outside the lock, which a
	 * failed assertion would otherwise leave held for that thread (the
	 * teardown then hung joining it). */
	{
		struct cb_seen seen = { .calls = 0 };

		for (t0 = fx_now_ms(); fx_now_ms() - t0 < 5000; usleep(1000)) {
			pthread_mutex_lock(&cb.lock);
			seen.calls = cb.calls;
			seen.kind = cb.kind;
			seen.status = cb.status;
			pthread_mutex_unlock(&cb.lock);
			if (seen.calls)
				break;
		}
		assert_int_equal(seen.calls, 1);
		assert_int_equal(seen.kind, UGPU_UNPLUG_REQUEST);
		assert_int_equal(seen.status, 0);
	}

	assert_int_equal(bo_where(vonly), S);
	assert_int_equal(bo_where(vany), S);
	assert_int_equal(bo_where(pinned), S);
	assert_int_equal(bo_where(mapped), S);
	assert_int_equal(bo_verify(vonly, 3 * MIB, 1), -1);
	assert_int_equal(bo_verify(vany, 2 * MIB + 4096, 2), -1);
	assert_int_equal(bo_verify(pinned, MIB, 3), -1);
	assert_int_equal(bo_verify(sys, MIB, 4), -1);
	/* The mapping now faults to the system copy, and writes land there. */
	assert_int_equal(pat_check(p, 4 * MIB, 5), -1);
	pat_fill(p, 4 * MIB, 6);
	assert_int_equal(bo_verify(mapped, 4 * MIB, 6), -1);
	{
		struct ugpu_bo_info bi = { .size = sizeof(bi) };

		assert_int_equal(ugpu_bo_query(pinned, &bi), 0);
		assert_int_equal(bi.pin_count, 1);
		assert_false(bi.lost);
		assert_int_equal(ugpu_bo_unpin(pinned), 0);
		assert_int_equal(ugpu_bo_pin(pinned), 0); /* now a system BO */
		assert_int_equal(ugpu_bo_unpin(pinned), 0);
	}
	{
		size_t n = 99;

		assert_int_equal(ugpu_device_lost_bos(f->dev, NULL, 0, &n), 0);
		assert_int_equal(n, 0);
	}
	check_after_removal(f);
	ugpu_bo_put(vonly);
	ugpu_bo_put(vany);
	ugpu_bo_put(pinned);
	ugpu_bo_put(sys);
	ugpu_bo_put(mapped);
}

/* ---- the teardown order ------------------------------------------------------ */

struct order {
	struct fx *f;
	char steps[16][16];
	int n;
	size_t dma_at_dma_step; /* dma_space_count when the DMA space is torn down */
	int maps_at_transport; /* the device's live mappings before the socket closes */
	bool client_at_transport;
};

static void observe(void *arg, struct ugpu_device *dev, const char *step)
{
	struct order *o = arg;

	if (o->n < 16)
		snprintf(o->steps[o->n++], sizeof(o->steps[0]), "%s", step);
	if (!strcmp(step, "dma"))
		o->dma_at_dma_step = dma_space_count(&dev->dma);
	if (!strcmp(step, "transport")) {
		struct sim_state ss;

		if (sim_state(o->f->sim, 0, &ss) == 0) {
			o->maps_at_transport = (int)ss.dma_maps;
			o->client_at_transport = ss.client;
		}
	}
}

static void test_teardown_order(void **state)
{
	static const char *const want[] = { "svm",	 "vm-exec", "bo-rpm", "rpm",
					     "exec",	 "engines", "vram-mm", "dma",
					     "irqs",	 "vram-map", "transport" };
	struct fx *f = *state;
	struct order o = { .f = f, .dma_at_dma_step = 999, .maps_at_transport = -1 };
	struct ugpu_bo *bos[6];
	struct sim_state ss;
	int i;

	for (i = 0; i < 6; i++) {
		bos[i] = bo_new(f->dev, MIB, 0, i & 1 ? S : V, i & 1 ? N : S, "t");
		assert_non_null(bos[i]);
		assert_int_equal(fill_seed(bos[i], MIB, 100 + (uint32_t)i), 0);
	}
	assert_int_equal(sim_state(f->sim, 0, &ss), 0);
	assert_true(ss.dma_maps >= 3); /* the system BOs are mapped for the device */
	unplug_set_step_observer(f->dev, observe, &o);
	assert_int_equal(ugpu_device_unplug(f->dev), 0);
	unplug_set_step_observer(f->dev, NULL, NULL); /* @o goes out of scope */
	assert_int_equal(o.n, 11);
	for (i = 0; i < 11; i++)
		assert_string_equal(o.steps[i], want[i]);
	assert_int_equal(o.dma_at_dma_step, 0);
	assert_true(o.client_at_transport);
	assert_int_equal(o.maps_at_transport, 0);
	for (i = 0; i < 6; i++) {
		assert_int_equal(bo_where(bos[i]), S);
		assert_int_equal(bo_verify(bos[i], MIB, 100 + (uint32_t)i), -1);
		ugpu_bo_put(bos[i]);
	}
	check_after_removal(f);
}

/* ---- a CPU touch parked behind a long removal ------------------------------ */

/* From the removal's hold of the mappings (before the device teardown) to
 * their release (after it), a touch parks. The teardown is bounded, but
 * may take longer than a move: held here 600 ms at its "bo-rpm" step,
 * with the BO's own bound for a move cut to 200 ms. The touch must wait
 * for the removal and land in system memory; it got SIGBUS (a move that
 * did not finish, said the driver) though the BO's data was safe. */
static sigjmp_buf bus_jmp;

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(bus_jmp, 1);
}

struct long_teardown {
	atomic_int at_step;
};

static void hold_teardown(void *arg, struct ugpu_device *dev, const char *step)
{
	struct long_teardown *h = arg;

	(void)dev;
	if (strcmp(step, "bo-rpm"))
		return;
	atomic_store(&h->at_step, 1);
	usleep(600000);
}

static void *unplug_main(void *arg)
{
	return (void *)(intptr_t)ugpu_device_unplug(arg);
}

static void test_touch_parked_behind_long_removal(void **state)
{
	struct fx *f = *state;
	struct long_teardown h = { 0 };
	struct ugpu_bo *bo = bo_new(f->dev, MIB, 0, V, S, "parked");
	const uint64_t value = 0x6d6d6d6d6d6d6d6dull;
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	volatile int got_bus = 0;
	volatile uint64_t *p;
	pthread_t ut;
	void *ret, *pv;
	uint64_t w = 0;

	assert_non_null(bo);
	assert_int_equal(fill_seed(bo, MIB, 141), 0);
	assert_int_equal(ugpu_bo_map(bo, &pv), 0);
	p = pv;
	assert_int_equal(p[1], p[1]); /* mapped */
	cpu_map_set_block_timeout(bo->map, 200);
	unplug_set_step_observer(f->dev, hold_teardown, &h);
	assert_int_equal(pthread_create(&ut, NULL, unplug_main, f->dev), 0);
	while (!atomic_load(&h.at_step))
		usleep(1000);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &old);
	if (sigsetjmp(bus_jmp, 1) == 0)
		p[0] = value; /* parks: the removal holds the mapping */
	else
		got_bus = 1;
	sigaction(SIGBUS, &old, NULL);
	pthread_join(ut, &ret);
	unplug_set_step_observer(f->dev, NULL, NULL);
	print_message("touch: %s; removal %d\n", got_bus ? "SIGBUS" : "landed", (int)(intptr_t)ret);
	assert_int_equal(got_bus, 0);
	assert_int_equal((int)(intptr_t)ret, 0);
	assert_int_equal(bo_where(bo), S);
	assert_int_equal(ugpu_bo_read(bo, 0, &w, 8), 0);
	assert_true(w == value);
	{
		uint8_t *buf = malloc(MIB);

		assert_non_null(buf);
		assert_int_equal(ugpu_bo_read(bo, 0, buf, MIB), 0);
		pat_fill(buf, 8, 141);
		assert_int_equal(pat_check(buf, MIB, 141), -1);
		free(buf);
	}
	assert_int_equal(ugpu_bo_unmap(bo), 0);
	ugpu_bo_put(bo);
}

/* ---- a migrate's old system memory, freed after its lock ------------------------ */

struct old_free {
	int entered;
	uint64_t left_ms;
};

/* the migrate has let go of the manager lock and is about to free the
 * system memory the BO left: the removal comes now */
static void old_free_hook(void *arg, enum test_point_id id, void *obj)
{
	struct old_free *o = arg;

	(void)id, (void)obj;
	if (__atomic_exchange_n(&o->entered, 1, __ATOMIC_ACQ_REL))
		return;
	usleep(300000);
	__atomic_store_n(&o->left_ms, fx_now_ms(), __ATOMIC_RELEASE);
}

struct migrate_arg {
	struct ugpu_bo *bo;
	int ret;
};

static void *migrate_to_vram(void *arg)
{
	struct migrate_arg *a = arg;

	a->ret = ugpu_bo_migrate(a->bo, V);
	return NULL;
}

/* A removal that comes while a migrate frees the system memory its BO left
 * (after the manager lock, before its runtime-PM use ends) waits for that
 * free: the DMA space is torn down after the runtime-PM users left. Freed
 * after the use ended (the review of the unlocked pin), the removal ran to
 * its end in between and the unmap ran on a finalised DMA space. */
static void test_removal_waits_for_old_free(void **state)
{
	struct fx *f = *state;
	struct old_free o = { 0 };
	struct migrate_arg a;
	uint64_t done_ms;
	pthread_t t;

	a.bo = bo_new(f->dev, 16 * MIB, 0, V, S, "old-free");
	assert_non_null(a.bo);
	assert_int_equal(ugpu_bo_migrate(a.bo, S), 0);
	assert_int_equal(fill_seed(a.bo, 16 * MIB, 4242), 0);
	test_point_set(TEST_POINT_BO_OLD_FREE, old_free_hook, &o);
	assert_int_equal(pthread_create(&t, NULL, migrate_to_vram, &a), 0);
	while (!__atomic_load_n(&o.entered, __ATOMIC_ACQUIRE))
		usleep(100);
	assert_int_equal(ugpu_device_unplug(f->dev), 0);
	done_ms = fx_now_ms();
	pthread_join(t, NULL);
	test_point_set(TEST_POINT_BO_OLD_FREE, NULL, NULL);
	print_message("removal during the free of a migrate's old memory: migrate %d, removal done %lld ms after the free began to end\n",
		      a.ret, (long long)(done_ms - __atomic_load_n(&o.left_ms, __ATOMIC_ACQUIRE)));
	assert_int_equal(a.ret, 0);
	/* the removal ended after the free (done_ms is read after; left_ms
	 * stays 0 if the removal ended first) */
	assert_true(__atomic_load_n(&o.left_ms, __ATOMIC_ACQUIRE) != 0);
	assert_true(done_ms >= __atomic_load_n(&o.left_ms, __ATOMIC_ACQUIRE));
	assert_int_equal(bo_where(a.bo), S); /* the removal moved it back */
	assert_int_equal(bo_verify(a.bo, 16 * MIB, 4242), -1);
	ugpu_bo_put(a.bo);
}

/* ---- copies in flight --------------------------------------------------------- */

#define NCOPIERS 3

struct copier {
	struct ugpu_bo *bo;
	uint32_t seed;
	int moves;
	int last_err;
	int *stop;
};

static void *copier_fn(void *arg)
{
	struct copier *c = arg;
	int i = 0;

	while (!__atomic_load_n(c->stop, __ATOMIC_ACQUIRE)) {
		int ret = ugpu_bo_migrate(c->bo, (i++ & 1) ? V : S);

		if (ret == 0)
			c->moves++;
		else
			c->last_err = ret;
		if (ret && ret != -ENODEV && ret != -EBUSY)
			break;
		if (ret)
			usleep(1000);
	}
	return NULL;
}

static void test_copies_in_flight(void **state)
{
	struct fx *f = *state;
	struct copier c[NCOPIERS];
	pthread_t t[NCOPIERS];
	int stop = 0, i;
	struct ugpu_unplug_info info;

	for (i = 0; i < NCOPIERS; i++) {
		c[i] = (struct copier){ .seed = 200 + (uint32_t)i, .stop = &stop };
		c[i].bo = bo_new(f->dev, 4 * MIB, 0, V, S, "copied");
		assert_non_null(c[i].bo);
		assert_int_equal(fill_seed(c[i].bo, 4 * MIB, c[i].seed), 0);
		assert_int_equal(pthread_create(&t[i], NULL, copier_fn, &c[i]), 0);
	}
	usleep(50000);
	assert_int_equal(sim_unplug_request(f->sim, 0), 0);
	info = fx_wait_removed(f->dev, REMOVAL_BOUND_MS);
	usleep(20000);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	for (i = 0; i < NCOPIERS; i++) {
		pthread_join(t[i], NULL);
		print_message("copier %d: %d moves, last error %d\n", i, c[i].moves, c[i].last_err);
		assert_true(c[i].moves > 0);
		assert_true(c[i].last_err == 0 || c[i].last_err == -ENODEV);
		assert_int_equal(bo_where(c[i].bo), S);
		assert_int_equal(bo_verify(c[i].bo, 4 * MIB, c[i].seed), -1);
		ugpu_bo_put(c[i].bo);
	}
	assert_int_equal(info.status, 0);
	assert_int_equal(info.bos_lost, 0);
	check_after_removal(f);
}

/* ---- writers on mapped BOs ----------------------------------------------------- */

#define NWRITERS 4
#define WSLOTS (256u << 10) /* u64 slots: 2 MiB per BO */

struct writer {
	struct ugpu_bo *bo;
	volatile uint64_t *p;
	uint64_t seq; /* next value to write */
	uint64_t after_gone; /* writes done once the device was gone */
	int bad; /* first mismatch found by the writer itself, else -1 */
	struct ugpu_device *dev;
	int *stop;
};

/* Each writer writes its own sequence 1, 2, 3... round the BO's slots and
 * checks the slot it wrote a lap ago still holds its value: a lost or
 * misplaced write shows up at once. */
static void *writer_fn(void *arg)
{
	struct writer *w = arg;

	while (!__atomic_load_n(w->stop, __ATOMIC_ACQUIRE)) {
		uint64_t slot = w->seq % WSLOTS;

		if (w->seq >= WSLOTS && w->p[slot] != w->seq - WSLOTS + 1 && w->bad < 0)
			w->bad = (int)slot;
		w->p[slot] = w->seq + 1;
		w->seq++;
		if (ugpu_device_is_gone(w->dev))
			__atomic_add_fetch(&w->after_gone, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void test_writers_on_mapped_bos(void **state)
{
	struct fx *f = *state;
	struct writer w[NWRITERS];
	pthread_t t[NWRITERS];
	int stop = 0, i;
	void *p;

	for (i = 0; i < NWRITERS; i++) {
		w[i] = (struct writer){ .bad = -1, .stop = &stop, .dev = f->dev };
		w[i].bo = bo_new(f->dev, WSLOTS * 8, UGPU_BO_CPU_ACCESS | (i == 0 ? UGPU_BO_PINNED : 0),
				 V, i == 1 ? N : S, "written");
		assert_non_null(w[i].bo);
		assert_int_equal(ugpu_bo_map(w[i].bo, &p), 0);
		w[i].p = p;
		assert_int_equal(pthread_create(&t[i], NULL, writer_fn, &w[i]), 0);
	}
	usleep(100000);
	assert_int_equal(sim_unplug_request(f->sim, 0), 0);
	(void)fx_wait_removed(f->dev, REMOVAL_BOUND_MS);
	/* Let them run on system memory for a while: until each wrote there
	 * (bounded; a loaded machine may not schedule them at once). */
	usleep(100000);
	for (i = 0; i < NWRITERS; i++)
		for (uint64_t t0 = fx_now_ms();
		     !__atomic_load_n(&w[i].after_gone, __ATOMIC_RELAXED) &&
		     fx_now_ms() - t0 < REMOVAL_BOUND_MS;)
			usleep(1000);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	for (i = 0; i < NWRITERS; i++) {
		uint64_t *buf = malloc(WSLOTS * 8), s, bad = 0;

		pthread_join(t[i], NULL);
		assert_non_null(buf);
		print_message("writer %d: %" PRIu64 " writes, %" PRIu64 " after removal\n", i,
			      w[i].seq, w[i].after_gone);
		assert_int_equal(w[i].bad, -1);
		assert_true(w[i].after_gone > 0);
		assert_int_equal(bo_where(w[i].bo), S);
		/* Through the BO: every slot holds the writer's last lap. */
		assert_int_equal(ugpu_bo_read(w[i].bo, 0, buf, WSLOTS * 8), 0);
		for (s = 0; s < WSLOTS; s++) {
			uint64_t last = w[i].seq - 1 - ((w[i].seq - 1 - s) % WSLOTS);

			if (s < w[i].seq && buf[s] != last + 1)
				bad++;
		}
		assert_int_equal(bad, 0);
		free(buf);
		ugpu_bo_put(w[i].bo);
	}
	check_after_removal(f);
}

/* ---- runtime-suspended ------------------------------------------------------------ */

static void removal_while_rpm_suspended(struct fx *f, uint64_t d3cold_threshold)
{
	struct ugpu_rpm_stats rs = { .size = sizeof(rs) };
	struct ugpu_bo *a, *b, *pin;
	struct ugpu_unplug_info info;
	void *p;

	a = bo_new(f->dev, 2 * MIB, UGPU_BO_CPU_ACCESS, V, S, "a");
	b = bo_new(f->dev, MIB, 0, V, N, "b");
	pin = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, N, "pin");
	assert_true(a && b && pin);
	assert_int_equal(ugpu_bo_map(a, &p), 0);
	pat_fill(p, 2 * MIB, 31);
	assert_int_equal(fill_seed(b, MIB, 32), 0);
	assert_int_equal(fill_seed(pin, MIB, 33), 0);
	assert_int_equal(ugpu_device_rpm_set_d3cold_threshold(f->dev, d3cold_threshold), 0);
	assert_int_equal(ugpu_device_rpm_set_autosuspend_delay(f->dev, 1), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	assert_int_equal(ugpu_device_rpm_suspend(f->dev), 0);
	assert_int_equal(ugpu_device_rpm_stats(f->dev, &rs), 0);
	assert_true(rs.power_state == UGPU_POWER_D3HOT || rs.power_state == UGPU_POWER_D3COLD);
	print_message("runtime-suspended in %s before the removal\n",
		      rs.power_state == UGPU_POWER_D3COLD ? "D3cold" : "D3hot");

	assert_int_equal(sim_unplug_request(f->sim, 0), 0);
	info = fx_wait_removed(f->dev, REMOVAL_BOUND_MS);
	assert_int_equal(info.status, 0);
	assert_int_equal(info.bos_lost, 0);
	assert_int_equal(bo_where(a), S);
	assert_int_equal(bo_where(b), S);
	assert_int_equal(bo_where(pin), S);
	assert_int_equal(pat_check(p, 2 * MIB, 31), -1);
	assert_int_equal(bo_verify(b, MIB, 32), -1);
	assert_int_equal(bo_verify(pin, MIB, 33), -1);
	ugpu_bo_put(a);
	ugpu_bo_put(b);
	ugpu_bo_put(pin);
	check_after_removal(f);
}

static void test_rpm_suspended_d3hot(void **state)
{
	removal_while_rpm_suspended(*state, 0);
}

static void test_rpm_suspended_d3cold(void **state)
{
	removal_while_rpm_suspended(*state, 1ull << 40);
}

/* ---- host suspend ---------------------------------------------------------------- */

struct preparer {
	struct ugpu_device *dev;
	int ret;
};

static void *prepare_fn(void *arg)
{
	struct preparer *p = arg;

	p->ret = ugpu_device_suspend_prepare(p->dev);
	return NULL;
}

static void test_during_host_suspend_prepare(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bos[12];
	struct preparer pr = { .dev = f->dev };
	struct ugpu_unplug_info info;
	pthread_t t;
	int i;

	for (i = 0; i < 12; i++) {
		bos[i] = bo_new(f->dev, 2 * MIB, i % 3 == 0 ? UGPU_BO_PINNED : 0, V, i % 3 == 1 ? N : S,
				"susp");
		assert_non_null(bos[i]);
		assert_int_equal(fill_seed(bos[i], 2 * MIB, 300 + (uint32_t)i), 0);
	}
	assert_int_equal(pthread_create(&t, NULL, prepare_fn, &pr), 0);
	assert_int_equal(sim_unplug_request(f->sim, 0), 0);
	info = fx_wait_removed(f->dev, REMOVAL_BOUND_MS);
	pthread_join(t, NULL);
	print_message("prepare returned %d (%s); removal moved %" PRIu64 " BOs\n", pr.ret,
		      ugpu_strerror(pr.ret), info.bos_moved);
	assert_true(pr.ret == 0 || pr.ret == -ENODEV);
	assert_int_equal(info.status, 0);
	for (i = 0; i < 12; i++) {
		struct ugpu_bo_info bi = { .size = sizeof(bi) };

		assert_int_equal(bo_where(bos[i]), S);
		assert_int_equal(bo_verify(bos[i], 2 * MIB, 300 + (uint32_t)i), -1);
		assert_int_equal(ugpu_bo_query(bos[i], &bi), 0);
		assert_false(bi.has_backup);
		ugpu_bo_put(bos[i]);
	}
	{
		struct ugpu_pm_stats ps = { .size = sizeof(ps) };

		assert_int_equal(ugpu_device_pm_stats(f->dev, &ps), 0); /* stats survive */
		assert_int_equal(ps.state, UGPU_PM_ACTIVE);
	}
	check_after_removal(f);
}

static void test_while_host_suspended(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *pin, *vonly, *any, *nor;
	struct ugpu_unplug_info info;
	size_t n = 0;

	pin = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, N, "pin");
	vonly = bo_new(f->dev, 2 * MIB, 0, V, N, "vonly");
	any = bo_new(f->dev, MIB, 0, V, S, "any");
	nor = bo_new(f->dev, MIB, UGPU_BO_NO_RESTORE, V, N, "scratch");
	assert_true(pin && vonly && any && nor);
	assert_int_equal(fill_seed(pin, MIB, 41), 0);
	assert_int_equal(fill_seed(vonly, 2 * MIB, 42), 0);
	assert_int_equal(fill_seed(any, MIB, 43), 0);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	/* The host sleeps; the device is removed meanwhile. */
	assert_int_equal(sim_unplug_request(f->sim, 0), 0);
	info = fx_wait_removed(f->dev, REMOVAL_BOUND_MS);
	print_message("removed while host-suspended: %" PRIu64 " adopted backups, %" PRIu64
		      " moved, %" PRIu64 " lost\n",
		      info.bos_adopted, info.bos_moved, info.bos_lost);
	assert_int_equal(bo_verify(pin, MIB, 41), -1);
	assert_int_equal(bo_verify(vonly, 2 * MIB, 42), -1);
	assert_int_equal(bo_verify(any, MIB, 43), -1);
	/* A NO_RESTORE BO had no backup: its contents are gone, and it says so. */
	assert_int_equal(info.bos_lost, 1);
	assert_int_equal(info.status, -EIO);
	{
		struct ugpu_bo *l[4];
		char b;

		assert_int_equal(ugpu_device_lost_bos(f->dev, l, 4, &n), 0);
		assert_int_equal(n, 1);
		assert_ptr_equal(l[0], nor);
		assert_int_equal(ugpu_bo_read(nor, 0, &b, 1), -ENODATA);
		ugpu_bo_put(l[0]);
	}
	assert_int_equal(ugpu_device_resume(f->dev), -EBUSY); /* nothing to resume */
	ugpu_bo_put(pin);
	ugpu_bo_put(vonly);
	ugpu_bo_put(any);
	ugpu_bo_put(nor);
	check_after_removal(f);
}

/* ---- during a large eviction ------------------------------------------------------- */

struct evictor {
	struct ugpu_device *dev;
	struct ugpu_bo *bos[64];
	int n, last;
};

static void *evict_fn(void *arg)
{
	struct evictor *e = arg;

	/* 64 x 2 MiB into 64 MiB of VRAM: the later ones evict the earlier. */
	for (e->n = 0; e->n < 64; e->n++) {
		struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = 2 * MIB,
					  .placements = { V, S }, .name = "ev" };

		e->last = ugpu_bo_create(e->dev, &o, &e->bos[e->n]);
		if (e->last)
			break;
		bo_fill(e->bos[e->n], 2 * MIB, 500 + (uint32_t)e->n);
	}
	return NULL;
}

static void test_during_large_eviction(void **state)
{
	struct fx *f = *state;
	struct evictor e = { .dev = f->dev };
	struct ugpu_unplug_info info;
	pthread_t t;
	int i;

	assert_int_equal(pthread_create(&t, NULL, evict_fn, &e), 0);
	usleep(30000);
	assert_int_equal(sim_unplug_request(f->sim, 0), 0);
	info = fx_wait_removed(f->dev, REMOVAL_BOUND_MS);
	pthread_join(t, NULL);
	print_message("evictor created %d BOs (last %d); removal moved %" PRIu64 "\n", e.n, e.last,
		      info.bos_moved);
	assert_int_equal(info.status, 0);
	for (i = 0; i < e.n; i++) {
		assert_int_equal(bo_where(e.bos[i]), S);
		assert_int_equal(bo_verify(e.bos[i], 2 * MIB, 500 + (uint32_t)i), -1);
		ugpu_bo_put(e.bos[i]);
	}
	check_after_removal(f);
}

/* ---- surprise removal ---------------------------------------------------------- */


static void test_surprise(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *sys, *vonly, *vany, *pin, *lost[8];
	struct ugpu_unplug_info info;
	uint64_t t0, detect_ms;
	volatile char *p;
	size_t n = 0;
	char b;
	void *pv;

	sys = bo_new(f->dev, MIB, 0, S, N, "sys");
	vonly = bo_new(f->dev, MIB, UGPU_BO_CPU_ACCESS, V, N, "vonly");
	vany = bo_new(f->dev, MIB, 0, V, S, "vany");
	pin = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, N, "pin");
	assert_true(sys && vonly && vany && pin);
	assert_int_equal(fill_seed(sys, MIB, 61), 0);
	assert_int_equal(fill_seed(vonly, MIB, 62), 0);
	assert_int_equal(fill_seed(vany, MIB, 63), 0);
	assert_int_equal(ugpu_bo_map(vonly, &pv), 0);
	p = pv;
	assert_int_equal(p[0], (char)pat(62, 0));

	t0 = fx_now_ms();
	assert_int_equal(sim_unplug_surprise(f->sim, 0), 0);
	while (!ugpu_device_is_gone(f->dev)) {
		if (fx_now_ms() - t0 > REMOVAL_BOUND_MS)
			fail_msg("surprise removal not detected within %d ms", REMOVAL_BOUND_MS);
		usleep(200);
	}
	detect_ms = fx_now_ms() - t0;
	info = fx_wait_removed(f->dev, REMOVAL_BOUND_MS);
	print_message("surprise removal detected in %" PRIu64 " ms (watcher bound %" PRIu64
		      " us), removed in %" PRIu64 " ms total; %" PRIu64 " BOs lost (%" PRIu64
		      " bytes)\n",
		      detect_ms, info.detect_us, fx_now_ms() - t0, info.bos_lost, info.bytes_lost);
	assert_true(detect_ms < 1000);
	assert_int_equal(info.kind, UGPU_UNPLUG_SURPRISE);
	assert_int_equal(info.status, -ENODEV);
	assert_int_equal(info.bos_lost, 3);
	assert_int_equal(info.bytes_lost, 3 * MIB);
	assert_int_equal(ugpu_device_unplug(f->dev), -ENODEV);
	/* What had a system copy is intact. */
	assert_int_equal(bo_verify(sys, MIB, 61), -1);
	/* What was only in VRAM is reported, by query and by list. */
	assert_int_equal(ugpu_bo_read(vonly, 0, &b, 1), -ENODATA);
	assert_int_equal(ugpu_bo_read(vany, 0, &b, 1), -ENODATA);
	assert_int_equal(ugpu_bo_write(pin, 0, &b, 1), -ENODATA);
	assert_int_equal(ugpu_device_lost_bos(f->dev, lost, 8, &n), 0);
	assert_int_equal(n, 3);
	for (size_t i = 0; i < n; i++) {
		struct ugpu_bo_info bi = { .size = sizeof(bi) };

		assert_int_equal(ugpu_bo_query(lost[i], &bi), 0);
		assert_true(bi.lost);
		assert_int_equal(bi.placement, UGPU_PLACEMENT_NONE);
		ugpu_bo_put(lost[i]);
	}
	/* A CPU touch of a lost BO's mapping: SIGBUS, not a hang or garbage. */
	{
		struct sigaction sa = { .sa_handler = on_sigbus }, old;
		volatile int got = 0;

		sigemptyset(&sa.sa_mask);
		sigaction(SIGBUS, &sa, &old);
		if (sigsetjmp(bus_jmp, 1) == 0) {
			b = p[4096];
			(void)b;
		} else {
			got = 1;
		}
		sigaction(SIGBUS, &old, NULL);
		assert_int_equal(got, 1);
	}
	ugpu_bo_put(sys);
	ugpu_bo_put(vonly);
	ugpu_bo_put(vany);
	ugpu_bo_put(pin);
	check_after_removal(f);
}

/*
 * A CPU store into a runtime-suspended device's BO right after a surprise
 * removal, before the watcher has noticed (the model test's seed
 * 1796547652632472, shrunk: a pinned {VRAM, SYSTEM} BO, mapped; D3cold;
 * surprise; store). The store's fault finds the device gone and cannot wake
 * it; it must wait for the removal, which decides where the BO's data is: in
 * D3cold the runtime-PM backup holds it, so the store lands there and no
 * SIGBUS may come; in D3hot VRAM was the only copy, so the BO is lost and
 * the store gets SIGBUS by design (docs/unplug.md).
 */
/* The removal held at its start (after marking the device gone) this many
 * microseconds, and the BO's bound for a move cut to 200 ms: the touch
 * waits for the removal longer than a move may take. */
static void hold_marked(void *arg, enum test_point_id id, void *obj)
{
	(void)id, (void)obj;
	usleep((useconds_t)(uintptr_t)arg);
}

static void surprise_touch_while_rpm_suspended(struct fx *f, bool d3cold, unsigned int hold_us)
{
	struct ugpu_rpm_stats rs = { .size = sizeof(rs) };
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	const uint64_t len = 64 * 1024;
	struct ugpu_unplug_info info;
	volatile int got_bus = 0;
	volatile char *p;
	struct ugpu_bo *bo;
	bool raced;
	void *pv;

	bo = bo_new(f->dev, len, UGPU_BO_CPU_ACCESS, V, S, "touched");
	assert_non_null(bo);
	assert_int_equal(ugpu_bo_map(bo, &pv), 0);
	pat_fill(pv, len, 71);
	assert_int_equal(ugpu_bo_pin(bo), 0);
	assert_int_equal(bo_where(bo), V);
	assert_int_equal(ugpu_device_rpm_set_d3cold_threshold(f->dev, d3cold ? 1ull << 40 : 0), 0);
	assert_int_equal(ugpu_device_rpm_set_autosuspend_delay(f->dev, 1), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	assert_int_equal(ugpu_device_rpm_suspend(f->dev), 0);
	assert_int_equal(ugpu_device_rpm_stats(f->dev, &rs), 0);
	assert_int_equal(rs.power_state, d3cold ? UGPU_POWER_D3COLD : UGPU_POWER_D3HOT);

	p = pv;
	if (hold_us) {
		cpu_map_set_block_timeout(bo->map, 200);
		test_point_set(TEST_POINT_UNPLUG_MARKED, hold_marked, (void *)(uintptr_t)hold_us);
	}
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &old);
	assert_int_equal(sim_unplug_surprise(f->sim, 0), 0);
	raced = !ugpu_device_is_gone(f->dev);
	if (sigsetjmp(bus_jmp, 1) == 0)
		p[100] = (char)0x5a;
	else
		got_bus = 1;
	sigaction(SIGBUS, &old, NULL);
	info = fx_wait_removed(f->dev, REMOVAL_BOUND_MS);
	test_point_set(TEST_POINT_UNPLUG_MARKED, NULL, NULL);
	print_message("%s: the store %s the removal's detection; %s; %" PRIu64 " adopted, %" PRIu64
		      " lost\n", d3cold ? "D3cold" : "D3hot", raced ? "raced" : "came after",
		      got_bus ? "SIGBUS" : "no SIGBUS", info.bos_adopted, info.bos_lost);
	assert_int_equal(info.kind, UGPU_UNPLUG_SURPRISE);
	if (d3cold) {
		assert_int_equal(got_bus, 0);
		assert_int_equal(info.bos_lost, 0);
		assert_int_equal(info.bos_adopted, 1);
		assert_int_equal(bo_where(bo), S);
		assert_int_equal(p[100], (char)0x5a);
		p[100] = (char)pat(71, 100);
		assert_int_equal(pat_check(pv, len, 71), -1);
	} else {
		struct ugpu_bo_info bi = { .size = sizeof(bi) };

		assert_int_equal(got_bus, 1);
		assert_int_equal(info.bos_lost, 1);
		assert_int_equal(ugpu_bo_query(bo, &bi), 0);
		assert_true(bi.lost);
	}
	ugpu_bo_put(bo);
	check_after_removal(f);
}

static void test_surprise_touch_in_d3cold(void **state)
{
	surprise_touch_while_rpm_suspended(*state, true, 0);
}

static void test_surprise_touch_in_d3hot(void **state)
{
	surprise_touch_while_rpm_suspended(*state, false, 0);
}

/* The removal slower than a move may take (held 600 ms at its start): the
 * touch waits for it all the same, and lands in the adopted backup. It got
 * SIGBUS ("a move that did not finish") though the backup held the BO. */
static void test_surprise_touch_waits_for_slow_removal(void **state)
{
	surprise_touch_while_rpm_suspended(*state, true, 600000);
}

/* A device that keeps answering but is surprise-removed by the driver's own
 * detection (injected): engine waits in flight return, nothing hangs. */
static void test_surprise_with_copies_in_flight(void **state)
{
	struct fx *f = *state;
	struct copier c[NCOPIERS];
	pthread_t t[NCOPIERS];
	int stop = 0, i;
	struct ugpu_unplug_info info;
	uint64_t t0;

	for (i = 0; i < NCOPIERS; i++) {
		c[i] = (struct copier){ .seed = 700 + (uint32_t)i, .stop = &stop };
		c[i].bo = bo_new(f->dev, 8 * MIB, 0, V, S, "copied");
		assert_non_null(c[i].bo);
		assert_int_equal(fill_seed(c[i].bo, 8 * MIB, c[i].seed), 0);
		assert_int_equal(pthread_create(&t[i], NULL, copier_fn, &c[i]), 0);
	}
	usleep(50000);
	t0 = fx_now_ms();
	assert_int_equal(sim_unplug_surprise(f->sim, 0), 0);
	info = fx_wait_removed(f->dev, REMOVAL_BOUND_MS);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	for (i = 0; i < NCOPIERS; i++)
		pthread_join(t[i], NULL);
	print_message("surprise under copies: removed in %" PRIu64 " ms, %" PRIu64 " lost\n",
		      fx_now_ms() - t0, info.bos_lost);
	assert_true(fx_now_ms() - t0 < 10000);
	for (i = 0; i < NCOPIERS; i++) {
		struct ugpu_bo_info bi = { .size = sizeof(bi) };

		assert_int_equal(ugpu_bo_query(c[i].bo, &bi), 0);
		/* In system memory when the surprise came (intact), or lost. */
		if (bi.placement == S)
			assert_int_equal(bo_verify(c[i].bo, 8 * MIB, c[i].seed), -1);
		else
			assert_true(bi.lost);
		ugpu_bo_put(c[i].bo);
	}
	check_after_removal(f);
}

/* Close right after the request: close joins the removal, nothing leaks. */
static void test_close_during_removal(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, 8 * MIB, 0, V, S, "late");

	assert_non_null(bo);
	assert_int_equal(fill_seed(bo, 8 * MIB, 9), 0);
	assert_int_equal(sim_unplug_request(f->sim, 0), 0);
	usleep(1000);
	ugpu_bo_put(bo);
	ugpu_device_close(f->dev);
	f->dev = NULL;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_request_keeps_everything, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_teardown_order, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_touch_parked_behind_long_removal, setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_removal_waits_for_old_free, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_copies_in_flight, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_writers_on_mapped_bos, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_rpm_suspended_d3hot, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_rpm_suspended_d3cold, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_during_host_suspend_prepare, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_while_host_suspended, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_during_large_eviction, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_surprise, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_surprise_with_copies_in_flight, setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_close_during_removal, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_surprise_touch_in_d3cold, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_surprise_touch_in_d3hot, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_surprise_touch_waits_for_slow_removal, setup,
						fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
