/* SPDX-License-Identifier: MIT */
/*
 * Narrow windows found by a review of the data-loss fixes, each made
 * reproducible with test points; every test failed before its fix:
 *
 *  - test_surprise_during_aborted_d3cold_adopts_stale_backup: a surprise
 *    removal while an aborted D3cold suspend still holds its backups adopts
 *    the backup of a BO written since, reports it kept (bos_adopted), and the
 *    write is silently gone (bo_rpm_take_backup() does not know whether the
 *    backups are authoritative);
 *  - test_orderly_removal_copy_failure_adopts_stale_backup: the same window
 *    in an orderly removal whose copy fails: status 0, nothing reported lost,
 *    stale data;
 *  - test_rpm_stats_waits_for_d3cold_hooks: ugpu_device_rpm_stats() waits
 *    for the whole D3cold hook phase (rpm_user_enter() takes the BO manager
 *    lock, which the BO suspend hook holds across evictions and backups),
 *    although rpm.h says it never waits for a transition in progress;
 *  - test_rpm_stats_latency_during_d3cold_eviction: the same without an
 *    injected delay (192 MiB evicted: the stats call stalls for the whole
 *    suspend);
 *  - test_aborted_d3cold_keeps_evicting: a reference taken during the D3cold
 *    hook (which aborts the suspend) does not stop the hook: it evicts every
 *    remaining BO, which the rpm thread then moves back (docs say the hooks
 *    stop at the next BO);
 *  - test_write_after_failed_wake_enodev: a wake that fails with -ENODEV (the
 *    device went away while asleep in D3cold) lets ugpu_bo_write()/read()
 *    go on without a reference and return 0 (bo_rpm_hold() maps -ENODEV to
 *    "no reference needed"); the removal then adopts the D3cold backup and
 *    the "successful" write is lost.
 */
#include <inttypes.h>
#include <time.h>

#include "d3cold_fixture.h"
#include "mm/bo_rpm.h"
#include "src/rpm.h"
#include "src/suspend.h"
#include "src/unplug.h"
#include "vfio/transport.h"

/* ---- 1. surprise removal while an aborted D3cold still holds backups ------ */

struct stale {
	struct fx *f;
	struct storer *s;
	struct ugpu_bo *bo;
	int backup_hits;
	bool stored;
	bool removed_in_window;
};

/* D3cold backup of the BO taken (manager lock held): the program stores a new
 * word through its mapping. The mapping was released first, so the store
 * faults, takes a reference (aborting this suspend: the device is in D0) and
 * lands in VRAM. The backup is now older than VRAM. */
static void stale_after_backup(void *arg, enum test_point_id id, void *obj)
{
	struct stale *d = arg;

	(void)id;
	if (obj != d->bo || d->backup_hits++)
		return;
	d->stored = storer_store(d->s, 0x5151515151515151ull, 5000);
}

/* Hooks done, the suspend is about to find out it was aborted (no lock held
 * but the hook list lock): the device disappears now, and its removal runs
 * before the abandoned suspend drops its backups. */
static void stale_surprise(void *arg, enum test_point_id id, void *obj)
{
	struct stale *d = arg;
	uint64_t t0 = fx_now_ms();

	(void)id, (void)obj;
	if (sim_unplug_surprise(d->f->sim, 0))
		return;
	/* removed is set once every BO was evacuated (under the manager lock);
	 * the rest of the removal waits for the hook lock we hold. */
	while (!device_is_removed(d->f->dev) && fx_now_ms() - t0 < BOUND_MS)
		usleep(500);
	d->removed_in_window = device_is_removed(d->f->dev);
}

static void test_surprise_during_aborted_d3cold_adopts_stale_backup(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "pinned-mapped");
	struct storer *s = &the_storer;
	struct stale d = { .f = f, .s = s, .bo = bo };
	struct ugpu_unplug_info info;
	uint64_t *p, w = 0;
	int ret;

	assert_non_null(bo);
	assert_int_equal(ugpu_bo_map(bo, (void **)&p), 0);
	pat_fill(p, MIB, 11); /* the first word is 11's pattern */
	storer_start(s, p);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);

	test_point_set(TEST_POINT_BO_D3COLD_BACKUP, stale_after_backup, &d);
	test_point_set(TEST_POINT_RPM_HOOKS_DONE, stale_surprise, &d);
	ret = rpm_sleep(f, true);
	test_point_set(TEST_POINT_RPM_HOOKS_DONE, NULL, NULL);
	test_point_set(TEST_POINT_BO_D3COLD_BACKUP, NULL, NULL);
	print_message("suspend: %d, store landed before the removal: %d, removed in window: %d\n",
		      ret, d.stored, d.removed_in_window);
	assert_true(d.stored);
	assert_true(d.removed_in_window);
	info = fx_wait_removed(f->dev, BOUND_MS);
	storer_stop(s);
	ret = ugpu_bo_read(bo, 0, &w, 8);
	print_message("removal: adopted %" PRIu64 ", lost %" PRIu64 "; read %d, first word 0x%016" PRIx64
		      " (the program stored 0x5151515151515151)\n",
		      (uint64_t)info.bos_adopted, (uint64_t)info.bos_lost, ret, w);
	/* Either the BO is reported lost (the device went with the only copy
	 * of the last store: the backup predates it), or what is kept is what
	 * the program last wrote. Kept-but-older is silent data loss. */
	if (info.bos_lost == 1) {
		assert_int_equal(ret, -ENODATA);
		assert_int_equal(info.bos_adopted, 0);
	} else {
		assert_int_equal(ret, 0);
		assert_int_equal(w, 0x5151515151515151ull);
	}
	ugpu_bo_put(bo);
}

/* The same window with an orderly removal (ugpu_device_unplug()) whose copy
 * fails: the device is awake and reachable, the removal's wake took a
 * reference at once (suspend aborted), but the aborted suspend has not
 * dropped its backups yet; the removal falls back to the stale backup and
 * reports success (status 0, nothing lost). */
struct orderly {
	struct fx *f;
	struct storer *s;
	struct ugpu_bo *bo;
	int backup_hits;
	bool stored;
	bool removed_in_window;
	pthread_t th;
	bool started;
	int unplug_ret;
};

static void orderly_after_backup(void *arg, enum test_point_id id, void *obj)
{
	struct orderly *d = arg;

	(void)id;
	if (obj != d->bo || d->backup_hits++)
		return;
	d->stored = storer_store(d->s, 0x5151515151515151ull, 5000);
}

static void *unplug_main(void *arg)
{
	struct orderly *d = arg;

	d->unplug_ret = ugpu_device_unplug(d->f->dev);
	return NULL;
}

static void orderly_unplug(void *arg, enum test_point_id id, void *obj)
{
	struct orderly *d = arg;
	uint64_t t0 = fx_now_ms();

	(void)id, (void)obj;
	/* Every copy the removal queues fails (a flaky link, an engine hang). */
	if (sim_inject(d->f->sim, 0, SIM_INJECT_CMD, 1, true))
		return;
	if (pthread_create(&d->th, NULL, unplug_main, d))
		return;
	d->started = true;
	while (!device_is_removed(d->f->dev) && fx_now_ms() - t0 < BOUND_MS)
		usleep(500);
	d->removed_in_window = device_is_removed(d->f->dev);
}

static void test_orderly_removal_copy_failure_adopts_stale_backup(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "pinned-mapped");
	struct storer *s = &the_storer;
	struct orderly d = { .f = f, .s = s, .bo = bo };
	struct ugpu_unplug_info info;
	uint64_t *p, w = 0;
	int ret;

	assert_non_null(bo);
	assert_int_equal(ugpu_bo_map(bo, (void **)&p), 0);
	pat_fill(p, MIB, 12);
	storer_start(s, p);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);

	test_point_set(TEST_POINT_BO_D3COLD_BACKUP, orderly_after_backup, &d);
	test_point_set(TEST_POINT_RPM_HOOKS_DONE, orderly_unplug, &d);
	ret = rpm_sleep(f, true);
	test_point_set(TEST_POINT_RPM_HOOKS_DONE, NULL, NULL);
	test_point_set(TEST_POINT_BO_D3COLD_BACKUP, NULL, NULL);
	assert_true(d.started);
	pthread_join(d.th, NULL);
	sim_inject_clear(f->sim, 0);
	print_message("suspend: %d, store landed: %d, removed in window: %d, unplug: %d\n", ret,
		      d.stored, d.removed_in_window, d.unplug_ret);
	assert_true(d.stored);
	assert_true(d.removed_in_window);
	info = fx_wait_removed(f->dev, BOUND_MS);
	storer_stop(s);
	ret = ugpu_bo_read(bo, 0, &w, 8);
	print_message("removal: status %d, moved %" PRIu64 ", adopted %" PRIu64 ", lost %" PRIu64
		      "; read %d, first word 0x%016" PRIx64 " (the program stored 0x5151515151515151)\n",
		      info.status, (uint64_t)info.bos_moved, (uint64_t)info.bos_adopted,
		      (uint64_t)info.bos_lost, ret, w);
	/* The copy failed and VRAM was never lost (the suspend was abandoned):
	 * no backup may stand in for it; the loss is reported. */
	assert_int_equal(info.bos_lost, 1);
	assert_int_equal(info.bos_adopted, 0);
	assert_int_equal(info.status, -EIO);
	assert_int_equal(d.unplug_ret, -EIO);
	assert_int_equal(ret, -ENODATA);
	ugpu_bo_put(bo);
}

/* ---- 2. rpm stats during the D3cold hook phase ----------------------------- */

struct slow_hook {
	atomic_int entered;
	unsigned int ms;
};

/* The BO hook's D3cold backup phase, made long (as a large eviction or
 * backup would be): the manager lock is held meanwhile. */
static void slow_backup(void *arg, enum test_point_id id, void *obj)
{
	struct slow_hook *h = arg;

	(void)id, (void)obj;
	if (atomic_fetch_add(&h->entered, 1))
		return;
	usleep(h->ms * 1000);
}

struct stats_probe {
	struct fx *f;
	struct slow_hook *h;
	uint64_t took_ms;
	int ret;
	enum ugpu_rpm_state state;
};

static void *stats_main(void *arg)
{
	struct stats_probe *sp = arg;
	struct ugpu_rpm_stats st = { .size = sizeof(st) };
	uint64_t t0 = fx_now_ms();

	while (!atomic_load(&sp->h->entered) && fx_now_ms() - t0 < BOUND_MS)
		usleep(200);
	usleep(20 * 1000); /* well inside the hook phase */
	t0 = fx_now_ms();
	sp->ret = ugpu_device_rpm_stats(sp->f->dev, &st);
	sp->took_ms = fx_now_ms() - t0;
	sp->state = st.state;
	return NULL;
}

static void test_rpm_stats_waits_for_d3cold_hooks(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "pinned");
	struct slow_hook h = { .ms = 1000 };
	struct stats_probe sp = { .f = f, .h = &h };
	pthread_t th;

	assert_non_null(bo);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	test_point_set(TEST_POINT_BO_D3COLD_BACKUP, slow_backup, &h);
	assert_int_equal(pthread_create(&th, NULL, stats_main, &sp), 0);
	assert_int_equal(rpm_sleep(f, true), 0);
	pthread_join(th, NULL);
	test_point_set(TEST_POINT_BO_D3COLD_BACKUP, NULL, NULL);
	print_message("ugpu_device_rpm_stats() during the D3cold hooks took %" PRIu64
		      " ms (state %s)\n",
		      sp.took_ms, ugpu_rpm_state_name(sp.state));
	ugpu_bo_put(bo);
	assert_int_equal(sp.ret, 0);
	/* rpm.h: "It never waits for a power transition in progress." */
	assert_true(sp.took_ms < 200);
}

/* The same without an injected delay: a D3cold suspend that evicts 192 MiB
 * while another thread polls the stats. */
struct poller {
	struct fx *f;
	atomic_int stop;
	uint64_t max_ms, calls;
};

static void *poll_main(void *arg)
{
	struct poller *pl = arg;

	while (!atomic_load(&pl->stop)) {
		struct ugpu_rpm_stats st = { .size = sizeof(st) };
		uint64_t t0 = fx_now_ms(), dt;

		ugpu_device_rpm_stats(pl->f->dev, &st);
		dt = fx_now_ms() - t0;
		if (dt > pl->max_ms)
			pl->max_ms = dt;
		pl->calls++;
		usleep(1000);
	}
	return NULL;
}

static int setup_big(void **state)
{
	struct fx *f;

	if (fx_setup_dev(state, 256 * MIB, 0))
		return -1;
	f = *state;
	ugpu_device_rpm_set_autosuspend_delay(f->dev, -1);
	return 0;
}

static void test_rpm_stats_latency_during_d3cold_eviction(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bos[12];
	struct poller pl = { .f = f };
	uint64_t t0, took;
	pthread_t th;
	unsigned int i;

	for (i = 0; i < 12; i++) {
		bos[i] = bo_new(f->dev, 16 * MIB, 0, V, S, "evictable");
		assert_non_null(bos[i]);
	}
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	assert_int_equal(pthread_create(&th, NULL, poll_main, &pl), 0);
	usleep(20 * 1000);
	t0 = fx_now_ms();
	assert_int_equal(rpm_sleep(f, true), 0);
	took = fx_now_ms() - t0;
	usleep(20 * 1000);
	atomic_store(&pl.stop, 1);
	pthread_join(th, NULL);
	print_message("D3cold suspend evicting 192 MiB took %" PRIu64 " ms; ugpu_device_rpm_stats() max %" PRIu64
		      " ms over %" PRIu64 " calls\n",
		      took, pl.max_ms, pl.calls);
	for (i = 0; i < 12; i++)
		ugpu_bo_put(bos[i]);
	assert_true(pl.max_ms < 20);
}

/* ---- 4. an aborted D3cold suspend goes on evicting ------------------------- */

/* docs/runtime-pm.md: "a get takes its reference at once and marks the
 * suspend aborted; the hooks stop at the next BO, undo". The BO hook never
 * looks at the abort: it evicts (and later restores) everything anyway. */
struct abort_evict {
	struct storer *s;
	struct ugpu_bo *first;
	int hits;
	bool stored;
};

static void abort_at_first_backup(void *arg, enum test_point_id id, void *obj)
{
	struct abort_evict *a = arg;

	(void)id;
	if (obj != a->first || a->hits++)
		return;
	a->stored = storer_store(a->s, 0x4242424242424242ull, 5000);
}

static void test_aborted_d3cold_keeps_evicting(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *first = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "pinned-first");
	struct ugpu_bo *rest[4];
	struct storer *s = &the_storer;
	struct abort_evict a = { .s = s, .first = first };
	struct ugpu_rpm_stats st0 = { .size = sizeof(st0) }, st1 = { .size = sizeof(st1) };
	uint64_t *p;
	unsigned int i;
	int ret;

	assert_non_null(first);
	for (i = 0; i < 4; i++) {
		rest[i] = bo_new(f->dev, 2 * MIB, 0, V, S, "unpinned");
		assert_non_null(rest[i]);
	}
	assert_int_equal(ugpu_bo_map(first, (void **)&p), 0);
	p[0] = 1;
	storer_start(s, p);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	assert_int_equal(ugpu_device_rpm_stats(f->dev, &st0), 0);
	test_point_set(TEST_POINT_BO_D3COLD_BACKUP, abort_at_first_backup, &a);
	ret = rpm_sleep(f, true);
	test_point_set(TEST_POINT_BO_D3COLD_BACKUP, NULL, NULL);
	assert_int_equal(ugpu_device_rpm_stats(f->dev, &st1), 0);
	storer_stop(s);
	print_message("suspend %d (aborted by a store at the first BO); BOs evicted after the abort: %" PRIu64
		      "\n",
		      ret, st1.bo_evicted - st0.bo_evicted);
	for (i = 0; i < 4; i++)
		ugpu_bo_put(rest[i]);
	ugpu_bo_put(first);
	assert_true(a.stored);
	assert_int_equal(ret, -EBUSY);
	assert_int_equal(st1.bo_evicted - st0.bo_evicted, 0);
}

/* ---- 3. a wake failing with -ENODEV is not a license to use a dead BAR ---- */

/* Holds the host-suspend lock, as a transition in progress would, until
 * told to let go after @ms: the removal takes it first, so it waits. */
struct holder {
	pthread_mutex_t *lock;
	atomic_int held;
	atomic_int release;
	int ms;
};

static void *hold_main(void *arg)
{
	struct holder *h = arg;
	uint64_t t0;

	pthread_mutex_lock(h->lock);
	atomic_store(&h->held, 1);
	while (!atomic_load(&h->release))
		usleep(200);
	for (t0 = fx_now_ms(); fx_now_ms() - t0 < (uint64_t)h->ms;)
		usleep(1000);
	pthread_mutex_unlock(h->lock);
	return NULL;
}

/*
 * The device disappears while asleep in D3cold, and a write comes before its
 * removal could run (a host-suspend transition holds the removal back, for
 * 300 ms here). The write must not go to the dead BAR and report success
 * (the removal would then keep the BO from a backup without it): it waits
 * for the removal, which keeps the BO from its D3cold backup (VRAM really
 * was lost), and then lands in the system copy.
 */
static void test_write_after_failed_wake_enodev(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "pinned");
	struct holder h = { .lock = &f->dev->pm->lock, .ms = 300 };
	struct ugpu_unplug_info info;
	uint64_t w = 0x6262626262626262ull, r = 0, t0;
	pthread_t th;
	int wret, rret;

	assert_non_null(bo);
	assert_int_equal(bo_fill(bo, MIB, 41), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	assert_int_equal(rpm_sleep(f, true), 0);
	assert_int_equal(pthread_create(&th, NULL, hold_main, &h), 0);
	while (!atomic_load(&h.held))
		usleep(200);
	assert_int_equal(sim_unplug_surprise(f->sim, 0), 0);
	for (t0 = fx_now_ms(); !vfio_dev_is_gone(f->dev->vdev) && fx_now_ms() - t0 < BOUND_MS;)
		usleep(500);
	assert_true(vfio_dev_is_gone(f->dev->vdev));
	atomic_store(&h.release, 1); /* lets go 300 ms from now */
	wret = ugpu_bo_write(bo, 0, &w, sizeof(w));
	rret = ugpu_bo_read(bo, 0, &r, sizeof(r));
	pthread_join(th, NULL);
	info = fx_wait_removed(f->dev, BOUND_MS);
	print_message("asleep in D3cold, device gone: ugpu_bo_write() = %d, ugpu_bo_read() = %d "
		      "(read 0x%016" PRIx64 "); removal: adopted %" PRIu64 ", lost %" PRIu64 "\n",
		      wret, rret, r, (uint64_t)info.bos_adopted, (uint64_t)info.bos_lost);
	assert_int_equal(wret, 0);
	assert_int_equal(rret, 0);
	assert_int_equal(r, w);
	assert_int_equal(info.bos_adopted, 1);
	assert_int_equal(info.bos_lost, 0);
	ugpu_bo_put(bo);
}

/* ---- 5. the removal watcher's "is it dead?" probe during a D3cold entry --- */

/* Main power is off, the published state still says D3hot: linger, as a
 * platform whose power-off takes a while, so the watcher probes meanwhile. */
static void slow_power_off(void *arg, enum test_point_id id, void *obj)
{
	(void)arg, (void)id, (void)obj;
	usleep(300 * 1000);
}

static int setup_cfg_dead(void **state)
{
	struct ugpu_context_opts copts = { .size = sizeof(copts), .log_level = UGPU_LOG_ERROR };
	struct sim_opts o;
	struct fx *f = calloc(1, sizeof(*f));

	sim_opts_init(&o);
	o.vram_size = 32 * MIB;
	o.cfg_dead_in_d3cold = true; /* config space reads all-ones in D3cold */
	if (!f || sim_start(&o, &f->sim) || ugpu_context_create(&copts, &f->ctx))
		return -1;
	snprintf(f->uri, sizeof(f->uri), "vfio-user:%s", sim_socket_path(f->sim, 0));
	if (ugpu_device_open(f->ctx, f->uri, &f->dev))
		return -1;
	*state = f;
	ugpu_device_rpm_set_autosuspend_delay(f->dev, -1);
	return 0;
}

/*
 * A power transition publishes D3hot, cuts main power, then publishes
 * D3cold. A probe that read the state without the power lock found "D3hot"
 * in between, read the powered-off device's all-ones and declared it gone.
 */
static void test_no_false_removal_during_d3cold_entry(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, MIB, UGPU_BO_PINNED, V, S, "pinned");
	int i;

	assert_non_null(bo);
	assert_int_equal(bo_fill(bo, MIB, 7), 0);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	test_point_set(TEST_POINT_POWER_OFF, slow_power_off, NULL);
	for (i = 0; i < 3 && !ugpu_device_is_gone(f->dev); i++) {
		int ret, tries = 0;

		/* -EBUSY is a suspend abandoned because something needed the
		 * device meanwhile (rpm.h); on a loaded machine (CI's TSan
		 * run) the watcher's probe can land in the window: try again,
		 * bounded. What this test is about is no false removal. */
		while ((ret = rpm_sleep(f, true)) == -EBUSY && ++tries < 50)
			usleep(10000);
		assert_int_equal(ret, 0);
		assert_int_equal(ugpu_device_rpm_get(f->dev), 0);
		ugpu_device_rpm_put(f->dev);
	}
	test_point_set(TEST_POINT_POWER_OFF, NULL, NULL);
	assert_false(ugpu_device_is_gone(f->dev));
	assert_int_equal(bo_verify(bo, MIB, 7), -1);
	ugpu_bo_put(bo);
}

/* ---- 6. a fault listed while a suspend's release ran ------------------------ */

/*
 * A fault on BO X takes its reference (aborting a suspend whose hook is
 * running) and lists X; the hook, already past its abort check, takes X off
 * the list and "releases" a mapping that is not there yet; then the fault
 * maps VRAM. fault_end must list X again: else the next suspend leaves X's
 * mapping live while the device sleeps.
 */
struct relist {
	struct ugpu_bo *x;
	volatile uint64_t *p;
	pthread_t toucher;
	atomic_int fired;
	atomic_int listed; /* the fault parked after listing X */
	atomic_int go; /* let the fault map */
};

static void *relist_touch(void *arg)
{
	struct relist *r = arg;

	r->p[0] = 0x7171717171717171ull;
	return NULL;
}

/* The hook is about to pop the next listed BO: make X's fault list it now. */
static void relist_before_pop(void *arg, enum test_point_id id, void *obj)
{
	struct relist *r = arg;
	uint64_t t0 = fx_now_ms();

	(void)id, (void)obj;
	if (atomic_fetch_add(&r->fired, 1))
		return;
	if (pthread_create(&r->toucher, NULL, relist_touch, r))
		return;
	while (!atomic_load(&r->listed) && fx_now_ms() - t0 < BOUND_MS)
		usleep(200);
}

/* X is listed, its mapping not made yet: hold the fault here. */
static void relist_hold_fault(void *arg, enum test_point_id id, void *obj)
{
	struct relist *r = arg;
	uint64_t t0 = fx_now_ms();

	(void)id;
	if (obj != r->x)
		return;
	atomic_store(&r->listed, 1);
	while (!atomic_load(&r->go) && fx_now_ms() - t0 < BOUND_MS)
		usleep(200);
}

static void test_fault_listed_during_release_is_listed_again(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *x = bo_new(f->dev, MIB, 0, V, S, "x");
	struct relist r = { .x = x };
	struct cpu_map_info mi;
	uint64_t t0;
	void *p;
	int ret;

	assert_non_null(x);
	assert_int_equal(ugpu_bo_map(x, &p), 0); /* never touched: placeholder */
	r.p = p;
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	test_point_set(TEST_POINT_BO_FAULT_LISTED, relist_hold_fault, &r);
	test_point_set(TEST_POINT_BO_RELEASE_NEXT, relist_before_pop, &r);
	/* Nothing is listed when the hook looks first: X's fault lists it
	 * then, and the hook pops X. */
	ret = rpm_sleep(f, false); /* aborted by X's fault */
	test_point_set(TEST_POINT_BO_RELEASE_NEXT, NULL, NULL);
	assert_true(atomic_load(&r.listed));
	atomic_store(&r.go, 1);
	pthread_join(r.toucher, NULL);
	test_point_set(TEST_POINT_BO_FAULT_LISTED, NULL, NULL);
	assert_int_equal(ret, -EBUSY);
	cpu_map_query(x->map, &mi);
	assert_int_equal(mi.state, CPU_MAP_MAPPED);
	/* The next suspend must release X's mapping before the device sleeps. */
	for (t0 = fx_now_ms(); (ret = rpm_sleep(f, false)) == -EBUSY && fx_now_ms() - t0 < BOUND_MS;)
		usleep(1000);
	assert_int_equal(ret, 0);
	cpu_map_query(x->map, &mi);
	assert_int_not_equal(mi.state, CPU_MAP_MAPPED);
	assert_int_equal(((volatile uint64_t *)p)[0], 0x7171717171717171ull);
	ugpu_bo_put(x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_surprise_during_aborted_d3cold_adopts_stale_backup,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_orderly_removal_copy_failure_adopts_stale_backup,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_rpm_stats_waits_for_d3cold_hooks, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_rpm_stats_latency_during_d3cold_eviction,
						setup_big, teardown),
		cmocka_unit_test_setup_teardown(test_aborted_d3cold_keeps_evicting, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_after_failed_wake_enodev, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_false_removal_during_d3cold_entry,
						setup_cfg_dead, teardown),
		cmocka_unit_test_setup_teardown(test_fault_listed_during_release_is_listed_again,
						setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
