/* SPDX-License-Identifier: MIT */
/*
 * Verified and incremental host-suspend backups (docs/suspend.md,
 * "Incremental backups" and "Verified backups"), against the reference
 * device, which loses VRAM in D3cold:
 *  - a backup damaged while the device is suspended (or while it waits,
 *    prepared, for the window) is caught at resume, which names the BO and
 *    the first damaged chunk, and returns -EBADMSG;
 *  - what each kind of writer stores after prepare (the API's writes, GPU
 *    kernels on writable binds, CPU stores into a mapping, a migration into
 *    VRAM by the copy engine) is in VRAM after resume, byte for byte, and the
 *    window copies only what those writers touched (64 KiB chunks); a
 *    mapping that could not be tracked gets its BO copied whole;
 *  - nothing can write a BO while the device is suspended: the writes wait
 *    (a CPU store, a kernel) or are refused (-EBUSY), and every backup
 *    checks clean at resume.
 */
#include <inttypes.h>
#include <pthread.h>

#include <ugpu/vm.h>

#include "integration/test_bo_common.h"
#include "engines/engine.h"
#include "mm/backup_track.h"

#define MiB (1ull << 20)
#define KiB (1ull << 10)
#define VA0 0x100000000ull
#define WAIT_MS 10000

static int setup(void **state)
{
	return fx_setup_vram_no_autosuspend(state, 64 * MiB);
}

/* ---- what resume reports ------------------------------------------------------ */

struct report {
	int n;
	char name[32];
	uint64_t off, size;
};

static void on_corrupt(void *user, const char *bo_name, uint64_t off, uint64_t size)
{
	struct report *r = user;

	if (!r->n++)
		snprintf(r->name, sizeof(r->name), "%s", bo_name);
	r->off = off;
	r->size = size;
}

static uint32_t bo_corrupt(struct ugpu_bo *bo)
{
	struct ugpu_bo_info i = { .size = sizeof(i) };

	assert_int_equal(ugpu_bo_query(bo, &i), 0);
	return i.corrupt;
}

static struct ugpu_pm_stats pm_stats(struct fx *f)
{
	struct ugpu_pm_stats st = { .size = sizeof(st) };

	assert_int_equal(ugpu_device_pm_stats(f->dev, &st), 0);
	return st;
}

/* Flip one byte of @bo's backup, as a stray write or bad memory would. The
 * backup is the driver's: reached through the internal BO (tests only). */
static void damage_backup(struct ugpu_bo *bo, uint64_t off)
{
	assert_true(bo->backup.mem.fd >= 0);
	assert_true(off < bo->size);
	((uint8_t *)bo->backup.mem.vaddr)[off] ^= 0x5a;
}

/* A backup damaged while the device is suspended: resume finds it before
 * the bytes go back, names the BO, restores every other BO intact. */
static void test_damaged_in_window(void **state)
{
	struct fx *f = *state;
	struct report rep = { 0 };
	struct ugpu_pm_opts po = { .size = sizeof(po), .user = &rep, .corrupt = on_corrupt };
	struct ugpu_bo *victim, *good;
	uint8_t b;

	assert_int_equal(ugpu_device_pm_set_opts(f->dev, &po), 0);
	victim = bo_new(f->dev, 1 * MiB, UGPU_BO_PINNED, V, N, "victim");
	good = bo_new(f->dev, 2 * MiB, UGPU_BO_PINNED, V, N, "good");
	assert_non_null(victim);
	assert_non_null(good);
	assert_int_equal(bo_fill(victim, 1 * MiB, 11), 0);
	assert_int_equal(bo_fill(good, 2 * MiB, 12), 0);

	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	damage_backup(victim, 3 * BACKUP_CHUNK + 100);
	assert_int_equal(ugpu_device_resume(f->dev), -EBADMSG);

	/* Resumed all the same; the report names the BO and the chunk. */
	assert_int_equal(pm_stats(f).state, UGPU_PM_ACTIVE);
	assert_int_equal(pm_stats(f).corrupt, 1);
	assert_int_equal(rep.n, 1);
	assert_string_equal(rep.name, "victim");
	assert_int_equal(rep.off, 3 * BACKUP_CHUNK);
	assert_int_equal(rep.size, 1 * MiB);
	assert_int_equal(bo_corrupt(victim), 1);
	assert_int_equal(bo_corrupt(good), 0);
	assert_int_equal(bo_verify(good, 2 * MiB, 12), -1);
	/* The victim holds what its backup held: the flipped byte and no
	 * other difference. */
	assert_int_equal(bo_verify(victim, 1 * MiB, 11), 3 * BACKUP_CHUNK + 100);
	assert_int_equal(ugpu_bo_read(victim, 3 * BACKUP_CHUNK + 100, &b, 1), 0);
	assert_int_equal(b, pat(11, 3 * BACKUP_CHUNK + 100) ^ 0x5a);

	/* A cycle without damage reports nothing. */
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	assert_int_equal(pm_stats(f).corrupt, 0);
	assert_int_equal(rep.n, 1);
	assert_int_equal(bo_verify(good, 2 * MiB, 12), -1);
	ugpu_bo_put(victim);
	ugpu_bo_put(good);
}

/* A chunk prepare backed up and nobody wrote since is not copied again in
 * the window: damage to it between prepare and suspend is caught too. */
static void test_damaged_after_prepare(void **state)
{
	struct fx *f = *state;
	struct report rep = { 0 };
	struct ugpu_pm_opts po = { .size = sizeof(po), .user = &rep, .corrupt = on_corrupt };
	struct ugpu_bo *bo = bo_new(f->dev, 4 * MiB, UGPU_BO_PINNED, V, N, "waits");

	assert_non_null(bo);
	assert_int_equal(ugpu_device_pm_set_opts(f->dev, &po), 0);
	assert_int_equal(bo_fill(bo, 4 * MiB, 21), 0);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	damage_backup(bo, 4 * MiB - 1);
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	assert_int_equal(ugpu_device_resume(f->dev), -EBADMSG);
	assert_int_equal(rep.n, 1);
	assert_string_equal(rep.name, "waits");
	assert_int_equal(rep.off, 4 * MiB - BACKUP_CHUNK);
	assert_int_equal(bo_corrupt(bo), 1);
	ugpu_bo_put(bo);
}

/* ---- incremental: every writer after prepare ---------------------------------- */

static uint64_t blit_bytes;
static void on_phase(void *user, enum ugpu_pm_phase ph, uint64_t bos, uint64_t bytes, uint64_t ns,
		     int err)
{
	(void)user, (void)bos, (void)ns;
	if (ph == UGPU_PM_PHASE_SUSPEND_BLIT && !err)
		blit_bytes = bytes;
}

static struct ugpu_queue *queue_on(struct fx *f, struct ugpu_vm **vm)
{
	struct ugpu_vm_opts vo = { .size = sizeof(vo), .name = "incr" };
	struct ugpu_queue_opts qo = { .size = sizeof(qo), .name = "incr" };
	struct ugpu_queue *q = NULL;

	assert_int_equal(ugpu_vm_create(f->dev, &vo, vm), 0);
	assert_int_equal(ugpu_queue_create(*vm, &qo, &q), 0);
	return q;
}

/* Run a WRITE kernel of @value over [va, +bytes) to its end. */
static void kernel_write(struct ugpu_queue *q, uint64_t va, uint64_t bytes, uint64_t value)
{
	struct ugpu_kernel k = { .size = sizeof(k), .op = UGPU_KERNEL_WRITE, .va = va,
				 .bytes = bytes, .value = value };
	struct ugpu_kernel_result r = { .size = sizeof(r) };
	uint64_t fence;

	assert_int_equal(ugpu_queue_submit(q, &k, &fence), 0);
	assert_int_equal(ugpu_fence_wait(q, fence, WAIT_MS, &r), 0);
	assert_int_equal(r.status, 0);
}

static void words_set(void *p, uint64_t bytes, uint64_t v)
{
	uint64_t i;

	for (i = 0; i < bytes / 8; i++)
		((uint64_t *)p)[i] = v;
}

/* The BO holds @model exactly. */
static void bo_equals(struct ugpu_bo *bo, const void *model, uint64_t bytes)
{
	void *buf = malloc(bytes);

	assert_non_null(buf);
	assert_int_equal(ugpu_bo_read(bo, 0, buf, bytes), 0);
	assert_memory_equal(buf, model, bytes);
	free(buf);
}

struct incr {
	struct ugpu_bo *api, *kern, *mapped, *clean, *moved;
	uint8_t *m_api, *m_kern, *m_mapped, *m_clean, *m_moved;
	void *map;
	struct ugpu_vm *vm;
	struct ugpu_queue *q;
};

#define BO_BYTES (4 * MiB)

static uint8_t *model_new(struct ugpu_bo *bo, uint32_t seed)
{
	uint8_t *m = malloc(BO_BYTES);

	assert_non_null(m);
	pat_fill(m, BO_BYTES, seed);
	assert_int_equal(ugpu_bo_write(bo, 0, m, BO_BYTES), 0);
	return m;
}

static void incr_setup(struct fx *f, struct incr *s)
{
	s->api = bo_new(f->dev, BO_BYTES, UGPU_BO_PINNED, V, N, "api");
	s->kern = bo_new(f->dev, BO_BYTES, UGPU_BO_PINNED, V, N, "kern");
	s->mapped = bo_new(f->dev, BO_BYTES, UGPU_BO_PINNED, V, N, "mapped");
	s->clean = bo_new(f->dev, BO_BYTES, UGPU_BO_PINNED, V, N, "clean");
	s->moved = bo_new(f->dev, BO_BYTES, 0, V, S, "moved");
	s->m_api = model_new(s->api, 31);
	s->m_kern = model_new(s->kern, 32);
	s->m_mapped = model_new(s->mapped, 33);
	s->m_clean = model_new(s->clean, 34);
	s->m_moved = model_new(s->moved, 35);
	assert_int_equal(ugpu_bo_map(s->mapped, &s->map), 0);
	/* Mapped now (a first touch): prepare can track its stores. */
	assert_memory_equal(s->map, s->m_mapped, BO_BYTES);
	s->q = queue_on(f, &s->vm);
	/* 1 MiB of "kern" bound writable, the rest read-only: a kernel marks
	 * what it may write, no more. */
	assert_int_equal(ugpu_vm_bind(s->vm, s->kern, 0, VA0, 1 * MiB, 0), 0);
	assert_int_equal(ugpu_vm_bind(s->vm, s->kern, 1 * MiB, VA0 + 1 * MiB, 3 * MiB,
				      UGPU_BIND_READONLY),
			 0);
}

static void incr_check(struct incr *s)
{
	bo_equals(s->api, s->m_api, BO_BYTES);
	bo_equals(s->kern, s->m_kern, BO_BYTES);
	bo_equals(s->mapped, s->m_mapped, BO_BYTES);
	assert_memory_equal(s->map, s->m_mapped, BO_BYTES);
	bo_equals(s->clean, s->m_clean, BO_BYTES);
	bo_equals(s->moved, s->m_moved, BO_BYTES);
}

static void incr_free(struct incr *s)
{
	assert_int_equal(ugpu_queue_destroy(s->q), 0);
	assert_int_equal(ugpu_vm_destroy(s->vm), 0);
	ugpu_bo_put(s->api);
	ugpu_bo_put(s->kern);
	ugpu_bo_put(s->mapped);
	ugpu_bo_put(s->clean);
	ugpu_bo_put(s->moved);
	free(s->m_api);
	free(s->m_kern);
	free(s->m_mapped);
	free(s->m_clean);
	free(s->m_moved);
}

/*
 * Each writer after prepare, then suspend/resume: every byte is back. The
 * window's blitter bytes, against a cycle with no writes after prepare, grow
 * by exactly what the tracked writers touched: the chunk of the API write,
 * the writable MiB of the kernel's VM, the two chunks the CPU stores span,
 * the BO migrated into VRAM whole.
 */
static void test_writers_after_prepare(void **state)
{
	struct fx *f = *state;
	struct ugpu_pm_opts po = { .size = sizeof(po), .progress = on_phase,
				   .flags = UGPU_PM_KERNELS_RUN };
	struct incr s;
	uint64_t base, v = 0x1122334455667788ull;
	uint8_t patch[100];

	assert_int_equal(ugpu_device_pm_set_opts(f->dev, &po), 0);
	incr_setup(f, &s);

	/* Baseline: nothing written after prepare (the moved BO stays in
	 * system memory: prepare evicted it). */
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	base = blit_bytes;
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	incr_check(&s);

	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	/* the API */
	memset(patch, 0xa5, sizeof(patch));
	assert_int_equal(ugpu_bo_write(s.api, 2 * MiB + 10, patch, sizeof(patch)), 0);
	memcpy(s.m_api + 2 * MiB + 10, patch, sizeof(patch));
	/* a kernel (launches run on: UGPU_PM_KERNELS_RUN) */
	kernel_write(s.q, VA0 + 64 * KiB, 128 * KiB, v);
	words_set(s.m_kern + 64 * KiB, 128 * KiB, v);
	/* the CPU, through the mapping (write-protect faults), across a chunk
	 * boundary */
	memset((uint8_t *)s.map + 3 * MiB - 100, 0x3c, 5000);
	memset(s.m_mapped + 3 * MiB - 100, 0x3c, 5000);
	/* the copy engine: a migration into VRAM, then a write */
	assert_int_equal(ugpu_bo_migrate(s.moved, V), 0);
	assert_int_equal(ugpu_bo_pin(s.moved), 0);
	memset(patch, 0x77, sizeof(patch));
	assert_int_equal(ugpu_bo_write(s.moved, 100, patch, sizeof(patch)), 0);
	memcpy(s.m_moved + 100, patch, sizeof(patch));

	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	assert_int_equal(pm_stats(f).backups_missed, 1); /* "moved" */
	assert_int_equal(blit_bytes - base, BACKUP_CHUNK + 1 * MiB + 2 * BACKUP_CHUNK + BO_BYTES);
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	incr_check(&s);
	assert_int_equal(ugpu_bo_unpin(s.moved), 0);
	incr_free(&s);
}

/* A mapping that was not mapped at prepare (no backing to protect yet) is
 * not tracked: its BO is copied whole, and a store after prepare is kept. */
static void test_untracked_map_whole(void **state)
{
	struct fx *f = *state;
	struct ugpu_pm_opts po = { .size = sizeof(po), .progress = on_phase };
	struct ugpu_bo *bo = bo_new(f->dev, BO_BYTES, UGPU_BO_PINNED, V, N, "late-map");
	uint8_t *model = model_new(bo, 41);
	uint64_t base;
	void *map;

	assert_int_equal(ugpu_device_pm_set_opts(f->dev, &po), 0);
	assert_int_equal(ugpu_bo_map(bo, &map), 0);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	base = blit_bytes;
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	/* Mapped now, and tracked by the next prepare: nothing to copy. */
	assert_memory_equal(map, model, BO_BYTES);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	assert_int_equal(base - blit_bytes, BO_BYTES);
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	/* A new mapping first touched after prepare: untracked, whole. */
	assert_int_equal(ugpu_bo_unmap(bo), 0);
	assert_int_equal(ugpu_bo_map(bo, &map), 0);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	((uint8_t *)map)[12345] = 0x99;
	model[12345] = 0x99;
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	assert_int_equal(blit_bytes, base);
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	bo_equals(bo, model, BO_BYTES);
	ugpu_bo_put(bo);
	free(model);
}

/* A mapping made after prepare (untracked), stored through, and unmapped
 * before the suspend: the BO is copied whole, the store kept. Before, the
 * suspend looked only at the mappings still there and restored the
 * prepare's backup over the store (found by test_model in CI: CREATE, PIN,
 * PREPARE, STORE, UNMAP, SUSPEND). The same with a tracked mapping. */
static void test_map_gone_before_suspend(void **state)
{
	struct fx *f = *state;

	for (int tracked = 0; tracked < 2; tracked++) {
		struct ugpu_bo *bo = bo_new(f->dev, BO_BYTES, UGPU_BO_PINNED, V, N, "gone-map");
		uint8_t *model = model_new(bo, 43 + tracked);
		void *map;

		if (tracked)
			assert_int_equal(ugpu_bo_map(bo, &map), 0);
		assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
		if (!tracked)
			assert_int_equal(ugpu_bo_map(bo, &map), 0);
		memset((uint8_t *)map + 60106, 0xd4, 4631);
		memset(model + 60106, 0xd4, 4631);
		assert_int_equal(ugpu_bo_unmap(bo), 0);
		assert_int_equal(ugpu_device_suspend(f->dev), 0);
		assert_int_equal(ugpu_device_resume(f->dev), 0);
		bo_equals(bo, model, BO_BYTES);
		ugpu_bo_put(bo);
		free(model);
	}
}

/* Without UGPU_PM_KERNELS_RUN a kernel submitted after prepare waits for
 * resume (the existing contract): nothing to track, and it runs after. */
static void test_kernels_wait_by_default(void **state)
{
	struct fx *f = *state;
	struct ugpu_kernel k = { .size = sizeof(k), .op = UGPU_KERNEL_WRITE, .va = VA0,
				 .bytes = 64 * KiB, .value = 7 };
	struct ugpu_kernel_result r = { .size = sizeof(r) };
	struct incr s;
	uint64_t fence;

	incr_setup(f, &s);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(ugpu_queue_submit(s.q, &k, &fence), 0);
	assert_int_equal(ugpu_fence_wait(s.q, fence, 50, &r), -ETIMEDOUT);
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	assert_int_equal(ugpu_fence_wait(s.q, fence, WAIT_MS, &r), 0);
	assert_int_equal(r.status, 0);
	words_set(s.m_kern, 64 * KiB, 7);
	incr_check(&s);
	incr_free(&s);
}

/* ---- CPU stores racing prepare's copy and the window ------------------------------ */

struct racer {
	uint8_t *map, *model;
	uint64_t seed;
	int stop; /* atomic */
	uint64_t stores;
};

/* Store words at random offsets until told to stop: model first, then the
 * mapping, so that after the join the model is what the BO must hold. */
static void *race_thread(void *arg)
{
	struct racer *r = arg;
	uint64_t x = r->seed;

	while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
		uint64_t off, v;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		off = (x % (BO_BYTES / 8)) * 8;
		v = x * 0x9e3779b97f4a7c15ull;
		memcpy(r->model + off, &v, 8);
		memcpy(r->map + off, &v, 8);
		r->stores++;
	}
	return NULL;
}

/*
 * A thread stores into a tracked mapping all through prepare (racing the
 * copy into the backup), between prepare and suspend, into the window
 * (where its store waits) and after resume: whatever it stored is there.
 */
static void test_cpu_stores_race(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, BO_BYTES, UGPU_BO_PINNED, V, N, "raced");
	struct racer r = { .seed = 0x1234567 };
	pthread_t t;
	int cycle;

	assert_non_null(bo);
	r.model = model_new(bo, 51);
	assert_int_equal(ugpu_bo_map(bo, (void **)&r.map), 0);
	assert_memory_equal(r.map, r.model, BO_BYTES); /* mapped: trackable */
	assert_int_equal(pthread_create(&t, NULL, race_thread, &r), 0);
	for (cycle = 0; cycle < 5; cycle++) {
		assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
		usleep(20 * 1000);
		assert_int_equal(ugpu_device_suspend(f->dev), 0);
		/* The last time, the thread stops in the window (its store
		 * waits for resume): the stores since prepare are only in the
		 * backup's dirty chunks, none written again after resume. */
		if (cycle == 4)
			__atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
		usleep(20 * 1000);
		assert_int_equal(ugpu_device_resume(f->dev), 0);
		usleep(20 * 1000);
	}
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_true(r.stores > 0);
	bo_equals(bo, r.model, BO_BYTES);
	ugpu_bo_put(bo);
	free(r.model);
}

/* ---- nothing writes in the window --------------------------------------------- */

struct storer {
	uint8_t *p;
	int done; /* atomic */
};

static void *store_thread(void *arg)
{
	struct storer *st = arg;

	st->p[0] = 0xee; /* waits for resume: the mapping is held */
	__atomic_store_n(&st->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/*
 * While suspended, every writer is held off: the API write is refused, a
 * kernel waits, a CPU store into the mapping waits; so the backups are
 * exactly what the window copied (they all check clean at resume), and the
 * held writes land after the restore, on top of it.
 */
static void test_no_write_in_window(void **state)
{
	struct fx *f = *state;
	struct ugpu_pm_opts po = { .size = sizeof(po), .flags = UGPU_PM_KERNELS_RUN };
	struct ugpu_kernel k = { .size = sizeof(k), .op = UGPU_KERNEL_WRITE, .va = VA0,
				 .bytes = 64 * KiB, .value = 9 };
	struct ugpu_kernel_result r = { .size = sizeof(r) };
	struct storer st = { 0 };
	struct incr s;
	pthread_t t;
	uint64_t fence;
	uint8_t x = 1;

	assert_int_equal(ugpu_device_pm_set_opts(f->dev, &po), 0);
	incr_setup(f, &s);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(ugpu_device_suspend(f->dev), 0);

	assert_int_equal(ugpu_bo_write(s.api, 0, &x, 1), -EBUSY);
	assert_int_equal(ugpu_queue_submit(s.q, &k, &fence), 0);
	st.p = (uint8_t *)s.map + 5;
	assert_int_equal(pthread_create(&t, NULL, store_thread, &st), 0);
	usleep(200 * 1000);
	assert_int_equal(ugpu_fence_wait(s.q, fence, 0, &r), -EAGAIN);
	assert_int_equal(__atomic_load_n(&st.done, __ATOMIC_ACQUIRE), 0);

	assert_int_equal(ugpu_device_resume(f->dev), 0); /* every backup checks clean */
	assert_int_equal(pm_stats(f).corrupt, 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(ugpu_fence_wait(s.q, fence, WAIT_MS, &r), 0);
	assert_int_equal(r.status, 0);
	s.m_mapped[5] = 0xee;
	words_set(s.m_kern, 64 * KiB, 9);
	incr_check(&s);
	incr_free(&s);
}

/* Many small BOs: copies adjacent in VRAM and in IOVA go out as one
 * descriptor (docs/suspend.md, "Many small BOs"): 64 BOs of 64 KiB, all
 * written after prepare, take a handful of descriptors each way instead of
 * 64, and every byte comes back; a damaged backup in the middle of a joined
 * copy is still named. */
static uint64_t sim_descs(struct fx *f)
{
	struct sim_state st;

	assert_int_equal(sim_state(f->sim, 0, &st), 0);
	return st.descs;
}

static void test_small_bos_joined(void **state)
{
	struct fx *f = *state;
	struct report rep = { 0 };
	struct ugpu_pm_opts po = { .size = sizeof(po), .user = &rep, .corrupt = on_corrupt };
	struct ugpu_bo *bo[64];
	uint64_t d0;
	int i;

	assert_int_equal(ugpu_device_pm_set_opts(f->dev, &po), 0);
	for (i = 0; i < 64; i++) {
		bo[i] = bo_new(f->dev, 64 * KiB, UGPU_BO_PINNED, V, N, i == 40 ? "small40" : "small");
		assert_non_null(bo[i]);
	}
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	for (i = 0; i < 64; i++)
		assert_int_equal(bo_fill(bo[i], 64 * KiB, 300 + i), 0);
	d0 = sim_descs(f);
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	/* copies and fences, both engines; 64 without joining */
	print_message("window: %" PRIu64 " descriptors\n", sim_descs(f) - d0);
	assert_true(sim_descs(f) - d0 <= 8);
	damage_backup(bo[40], 1000);
	d0 = sim_descs(f);
	assert_int_equal(ugpu_device_resume(f->dev), -EBADMSG);
	/* the ring restore is by CPU; the rest joined again */
	print_message("resume: %" PRIu64 " descriptors\n", sim_descs(f) - d0);
	assert_true(sim_descs(f) - d0 <= 8);
	assert_string_equal(rep.name, "small40");
	assert_int_equal(rep.n, 1);
	for (i = 0; i < 64; i++)
		assert_int_equal(bo_verify(bo[i], 64 * KiB, 300 + i), i == 40 ? 1000 : -1);
	for (i = 0; i < 64; i++)
		ugpu_bo_put(bo[i]);
}

/* Write chunk @c of @bo and of its model @m with pattern @seed. */
static void write_chunk(struct ugpu_bo *bo, uint8_t *m, uint64_t c, uint32_t seed)
{
	for (uint64_t i = 0; i < BACKUP_CHUNK; i++)
		m[c * BACKUP_CHUNK + i] = pat(seed, c * BACKUP_CHUNK + i);
	assert_int_equal(ugpu_bo_write(bo, c * BACKUP_CHUNK, m + c * BACKUP_CHUNK, BACKUP_CHUNK), 0);
}

/* The first byte where @bo differs from @m, or -1. */
static int64_t diff_model(struct ugpu_bo *bo, const uint8_t *m, uint64_t size)
{
	uint8_t *b = malloc(size);
	int64_t at = -1;

	assert_non_null(b);
	assert_int_equal(ugpu_bo_read(bo, 0, b, size), 0);
	for (uint64_t i = 0; i < size && at < 0; i++)
		if (b[i] != m[i])
			at = (int64_t)i;
	free(b);
	return at;
}

/*
 * Chunks that do not continue each other: every other 64 KiB chunk of a
 * BO written after prepare, and small BOs whose VRAM is not adjacent (a
 * NO_RESTORE BO between each two). On a 1.4 device they go to the engines
 * as copy lists (COPY_LIST), a few descriptors for all of them; on a 1.3
 * device (@lists false) one descriptor each, as before. Either way each
 * chunk's backup holds its own bytes and its own checksum: a damaged
 * chunk is named exactly, an undamaged cycle checks clean, and every byte
 * comes back (a list that copied or summed the wrong chunk fails here).
 */
static void listed_chunks(struct fx *f, bool lists)
{
	const uint64_t hsize = 8 * MiB, nch = hsize / BACKUP_CHUNK;
	struct report rep = { 0 };
	struct ugpu_pm_opts po = { .size = sizeof(po), .user = &rep, .corrupt = on_corrupt };
	struct ugpu_bo *half, *small[16], *gap[16];
	uint8_t *m = malloc(hsize);
	struct sim_state st;
	uint64_t d0, l0, c;
	int i;

	assert_non_null(m);
	assert_int_equal(ugpu_device_pm_set_opts(f->dev, &po), 0);
	half = bo_new(f->dev, hsize, UGPU_BO_PINNED, V, N, "half");
	assert_non_null(half);
	pat_fill(m, hsize, 1);
	assert_int_equal(ugpu_bo_write(half, 0, m, hsize), 0);
	for (i = 0; i < 16; i++) {
		small[i] = bo_new(f->dev, 64 * KiB, UGPU_BO_PINNED, V, N, "small");
		gap[i] = bo_new(f->dev, 64 * KiB, UGPU_BO_PINNED | UGPU_BO_NO_RESTORE, V, N, "gap");
		assert_non_null(small[i]);
		assert_non_null(gap[i]);
	}

	for (int round = 0; round < 2; round++) {
		assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
		/* round 0: the even chunks; round 1: the odd ones */
		for (c = (uint64_t)round; c < nch; c += 2)
			write_chunk(half, m, c, 10 + (uint32_t)round);
		for (i = 0; i < 16; i++)
			assert_int_equal(bo_fill(small[i], 64 * KiB, 200 + 16 * (uint32_t)round + (uint32_t)i), 0);
		assert_int_equal(sim_state(f->sim, 0, &st), 0);
		d0 = st.descs;
		l0 = st.lists;
		assert_int_equal(ugpu_device_suspend(f->dev), 0);
		assert_int_equal(sim_state(f->sim, 0, &st), 0);
		print_message("window: %" PRIu64 " descriptors, %" PRIu64 " of them lists\n",
			      st.descs - d0, st.lists - l0);
		if (lists) {
			/* 80 runs: a few lists, their fences, the kernel BOs' copies */
			assert_true(st.lists - l0 >= 1);
			assert_true(st.descs - d0 <= 24);
		} else {
			assert_int_equal(st.lists - l0, 0);
			assert_true(st.descs - d0 >= 80);
		}
		if (!round)
			damage_backup(half, 6 * BACKUP_CHUNK + 5); /* a chunk the window copied */
		assert_int_equal(ugpu_device_resume(f->dev), round ? 0 : -EBADMSG);
		if (!round) {
			assert_int_equal(rep.n, 1);
			assert_string_equal(rep.name, "half");
			assert_int_equal(rep.off, 6 * BACKUP_CHUNK);
			assert_int_equal(diff_model(half, m, hsize), 6 * BACKUP_CHUNK + 5);
			/* put the damaged byte right again for the next round */
			write_chunk(half, m, 6, 10);
		} else {
			assert_int_equal(rep.n, 1); /* nothing new */
		}
		assert_int_equal(diff_model(half, m, hsize), -1);
		for (i = 0; i < 16; i++)
			assert_int_equal(bo_verify(small[i], 64 * KiB, 200 + 16 * (uint32_t)round + (uint32_t)i), -1);
	}
	for (i = 0; i < 16; i++) {
		ugpu_bo_put(small[i]);
		ugpu_bo_put(gap[i]);
	}
	ugpu_bo_put(half);
	free(m);
}

static void test_listed_chunks(void **state)
{
	listed_chunks(*state, true);
}

/* The driver on a 1.3 device: no COPY_LIST (CAPS bit 6), one descriptor a
 * chunk. */
static void test_listed_chunks_v13(void **state)
{
	listed_chunks(*state, false);
}

static int setup_v13(void **state)
{
	struct sim_opts o;

	sim_opts_init(&o);
	o.vram_size = 64 * MiB;
	o.version_minor = 3;
	if (fx_setup_opts(state, &o))
		return -1;
	return ugpu_device_rpm_set_autosuspend_delay(((struct fx *)*state)->dev, -1);
}

/* The fences each copy engine of @f's device has completed. */
static void engine_fences(struct fx *f, uint64_t *out)
{
	for (int k = 0; k < 2; k++) {
		struct engine *e = f->dev->copy[k];

		assert_non_null(e);
		out[k] = e->ops->completed(e);
	}
}

/* One BO of 32 MiB written whole after prepare: its copy is cut in 8 MiB
 * descriptors spread over both copy engines (it went to one engine as one
 * descriptor), and comes back byte for byte. */
static void test_big_bo_both_engines(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = bo_new(f->dev, 32 * MiB, UGPU_BO_PINNED, V, N, "big");
	uint64_t before[2], after[2];

	assert_non_null(bo);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(bo_fill(bo, 32 * MiB, 77), 0);
	engine_fences(f, before);
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	engine_fences(f, after);
	print_message("fences in the window: engine 0 %" PRIu64 ", engine 1 %" PRIu64 "\n",
		      after[0] - before[0], after[1] - before[1]);
	/* two 8 MiB batches each, a fence for each */
	assert_true(after[0] - before[0] >= 2);
	assert_true(after[1] - before[1] >= 2);
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	assert_int_equal(bo_verify(bo, 32 * MiB, 77), -1);
	ugpu_bo_put(bo);
}

/*
 * More chunks than the copy engines have sum slots: with 256 slots an engine
 * (16 MiB of chunks; the device has 8,192, 512 MiB), a 40 MiB BO written
 * whole and every other chunk of an 8 MiB one make 688 chunks in the
 * window. The engines use their slots again once the sums in them are read
 * (runs_plan() ends a batch before each wrap, sums_reap() waits for it), so
 * the CPU hashes nothing; before, every chunk past the slots was hashed by
 * the CPU. A chunk copied after its engine wrapped, damaged, is named
 * exactly, and a clean cycle finds every sum right: a wrap that read a slot
 * after it was used again fails one or the other.
 */
static void test_sums_wrap(void **state)
{
	struct fx *f = *state;
	const uint64_t wsize = 40 * MiB, hsize = 8 * MiB, nch = hsize / BACKUP_CHUNK;
	struct report rep = { 0 };
	struct ugpu_pm_opts po = { .size = sizeof(po), .user = &rep, .corrupt = on_corrupt };
	struct ugpu_bo *whole = bo_new(f->dev, wsize, UGPU_BO_PINNED, V, N, "whole");
	struct ugpu_bo *half = bo_new(f->dev, hsize, UGPU_BO_PINNED, V, N, "half");
	uint8_t *m = malloc(hsize);
	struct bo_mgr_stats s0, s1;

	assert_non_null(whole);
	assert_non_null(half);
	assert_non_null(m);
	assert_int_equal(ugpu_device_pm_set_opts(f->dev, &po), 0);
	for (int k = 0; k < 2; k++)
		engine_sim_test_limit_sums(f->dev->copy[k], 256);
	pat_fill(m, hsize, 3);
	assert_int_equal(ugpu_bo_write(half, 0, m, hsize), 0);
	for (int round = 0; round < 2; round++) {
		assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
		assert_int_equal(bo_fill(whole, wsize, 50 + (uint32_t)round), 0);
		for (uint64_t c = (uint64_t)round; c < nch; c += 2)
			write_chunk(half, m, c, 20 + (uint32_t)round);
		bo_mgr_get_stats(f->dev, &s0);
		assert_int_equal(ugpu_device_suspend(f->dev), 0);
		bo_mgr_get_stats(f->dev, &s1);
		print_message("round %d: the CPU hashed %" PRIu64 " bytes of the window\n", round,
			      s1.backup_cpu_sums - s0.backup_cpu_sums);
		assert_int_equal(s1.backup_cpu_sums - s0.backup_cpu_sums, 0);
		if (!round)
			damage_backup(whole, 600 * BACKUP_CHUNK + 9); /* after its engine wrapped */
		assert_int_equal(ugpu_device_resume(f->dev), round ? 0 : -EBADMSG);
		assert_int_equal(rep.n, 1);
		assert_string_equal(rep.name, "whole");
		assert_int_equal(rep.off, 600 * BACKUP_CHUNK);
		assert_int_equal(diff_model(half, m, hsize), -1);
		if (!round) {
			/* the damaged byte went back to VRAM: the next round
			 * writes the BO whole again */
			continue;
		}
		assert_int_equal(bo_verify(whole, wsize, 51), -1);
	}
	ugpu_bo_put(whole);
	ugpu_bo_put(half);
	free(m);
}

/*
 * The same on a 1.3 device (no copy lists: one 64 KiB descriptor a dirty
 * chunk) with 16 slots an engine: every other chunk of a 16 MiB BO is 128
 * descriptors, about 64 an engine, under every batch limit, so the batch
 * that ends before each wrap is the one runs_plan() ends for it, and each
 * engine wraps three times (sums_reap() from where its last one stopped).
 * Without that batch end the wrap waited for nothing, its descriptors still
 * unrung, and read stale sums (the review: "damaged from byte 0").
 */
static void test_sums_wrap_v13(void **state)
{
	struct fx *f = *state;
	const uint64_t size = 16 * MiB, nch = size / BACKUP_CHUNK;
	struct report rep = { 0 };
	struct ugpu_pm_opts po = { .size = sizeof(po), .user = &rep, .corrupt = on_corrupt };
	struct ugpu_bo *bo = bo_new(f->dev, size, UGPU_BO_PINNED, V, N, "scattered");
	uint8_t *m = malloc(size);
	struct bo_mgr_stats s0, s1;

	assert_non_null(bo);
	assert_non_null(m);
	assert_int_equal(ugpu_device_pm_set_opts(f->dev, &po), 0);
	for (int k = 0; k < 2; k++)
		engine_sim_test_limit_sums(f->dev->copy[k], 16);
	pat_fill(m, size, 5);
	assert_int_equal(ugpu_bo_write(bo, 0, m, size), 0);
	for (int round = 0; round < 2; round++) {
		assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
		for (uint64_t c = (uint64_t)round; c < nch; c += 2)
			write_chunk(bo, m, c, 30 + (uint32_t)round);
		bo_mgr_get_stats(f->dev, &s0);
		assert_int_equal(ugpu_device_suspend(f->dev), 0);
		bo_mgr_get_stats(f->dev, &s1);
		assert_int_equal(s1.backup_cpu_sums - s0.backup_cpu_sums, 0);
		if (!round)
			damage_backup(bo, 250 * BACKUP_CHUNK + 17); /* late: after wraps */
		assert_int_equal(ugpu_device_resume(f->dev), round ? 0 : -EBADMSG);
		assert_int_equal(rep.n, 1);
		assert_string_equal(rep.name, "scattered");
		assert_int_equal(rep.off, 250 * BACKUP_CHUNK);
		if (!round) {
			assert_int_equal(diff_model(bo, m, size), 250 * BACKUP_CHUNK + 17);
			write_chunk(bo, m, 250, 30); /* the damaged byte right again */
		}
		assert_int_equal(diff_model(bo, m, size), -1);
	}
	ugpu_bo_put(bo);
	free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_damaged_in_window, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_damaged_after_prepare, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_writers_after_prepare, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_untracked_map_whole, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_map_gone_before_suspend, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_cpu_stores_race, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_kernels_wait_by_default, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_no_write_in_window, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_small_bos_joined, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_listed_chunks, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_big_bo_both_engines, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_sums_wrap, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_listed_chunks_v13, setup_v13, fx_teardown),
		cmocka_unit_test_setup_teardown(test_sums_wrap_v13, setup_v13, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
