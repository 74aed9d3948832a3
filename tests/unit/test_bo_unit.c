/* SPDX-License-Identifier: MIT */
/*
 * The BO layer (mm/bo.c, move.c, vram.c, backup.c, evacuate.c) on a fake
 * device: no ugpu-sim, no socket, no kernel VFIO.
 *
 * The fake device: the test is the transport (struct fake_vdev: "VRAM" is a
 * memfd exposed as BAR2, DMA maps are counted), fills in what the
 * "transport" step would have (vdev, profile, vram_size) and brings up the
 * registered steps the BO layer needs by name (device_steps_up():
 * vram-map, dma, bo-mgr, vram-mm, engines). The engines step makes the real
 * CPU engine over the fake VRAM; the test adds fake blitters (struct
 * fake_engine) that queue commands like a ring, run them with the CPU
 * engine when a batch ends or someone waits, and fail the Nth command on
 * request (fault injection by countdown). Each blitter's "ring" is driver
 * memory from dev->kmem, as engines_setup() gives the sim engines, so
 * driver BOs are saved early, counted at removals and freed by the engines
 * step's teardown. Host suspend is driven through dev->pm->mem in the order
 * src/suspend.c runs it, with power-off = poisoning the fake VRAM; removal
 * through dev->unplug_mem in the order src/unplug.c runs it.
 *
 * After every step bo_mgr_check(dev, strict) must pass, and check() adds
 * what the manager cannot see by itself: the fake IOMMU holds exactly the
 * BOs' system memory and backups, VRAM used is exactly what BOs hold, no
 * engine is left plugged or with queued work, no copy used an unmapped IOVA.
 *
 * test_random drives a seeded random sequence of all of it against a model
 * with a shadow copy of every BO; it prints its seed, and UGPU_SEED=N (or
 * UGPU_TEST_SEED=N, as the other unit tests) replays it.
 * UGPU_TEST_LOG=1 echoes the driver's log.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <ugpu/bo.h>
#include <ugpu/device.h>
#include <ugpu/pm.h>
#include <ugpu/unplug.h>

#include "bo_util.h"
#include "engines/engine.h"
#include "log_capture.h"
#include "mm/bo.h"
#include "mm/vram.h"
#include "rng.h"
#include "base/sysmem.h"
#include "src/device.h"
#include "src/suspend.h"
#include "src/unplug.h"
#include "vfio/dma.h"

#define KiB 1024ull
#define MiB (1024ull * KiB)
/* Each fake blitter's "ring" (a driver BO at the top of VRAM). */
#define FAKE_RING_BYTES (8 * KiB)

/* ---- the fake transport ---- */

/*
 * struct fake_vdev - the transport: BAR2 ("VRAM") is a memfd that the
 * vram-map step and CPU mappings map; DMA maps are only counted (the CPU
 * engine finds the memory through the DMA space's own record).
 * Locking: @lock protects the counters; @bar2 is set before bring-up.
 */
struct fake_vdev {
	struct vfio_dev dev; /* first: the transport head */
	struct sysmem bar2;
	pthread_mutex_t lock;
	unsigned int mmaps;
	unsigned int dma_maps;
	uint64_t dma_bytes;
};

static struct fake_vdev *fake_of(struct vfio_dev *d)
{
	return (struct fake_vdev *)d;
}

static int fake_region_mmap(struct vfio_dev *d, uint32_t index, uint64_t off, size_t len, int prot,
			    void **addr)
{
	struct fake_vdev *fv = fake_of(d);
	void *p;

	if (index != VFIO_REGION_BAR2 || off + len > fv->bar2.size)
		return -EINVAL;
	p = mmap(NULL, len, prot, MAP_SHARED, fv->bar2.fd, (off_t)off);
	if (p == MAP_FAILED)
		return -errno;
	pthread_mutex_lock(&fv->lock);
	fv->mmaps++;
	pthread_mutex_unlock(&fv->lock);
	*addr = p;
	return 0;
}

static int fake_region_munmap(struct vfio_dev *d, void *addr, size_t len)
{
	struct fake_vdev *fv = fake_of(d);

	pthread_mutex_lock(&fv->lock);
	fv->mmaps--;
	pthread_mutex_unlock(&fv->lock);
	return munmap(addr, len) ? -errno : 0;
}

static int fake_region_fd(struct vfio_dev *d, uint32_t index, int *fd, uint64_t *fd_off)
{
	if (index != VFIO_REGION_BAR2)
		return -ENOTSUP;
	*fd = fake_of(d)->bar2.fd;
	*fd_off = 0;
	return 0;
}

static int fake_iommu_info(struct vfio_dev *d, struct vfio_iommu_info *info)
{
	(void)d;
	memset(info, 0, sizeof(*info));
	info->pgsize_mask = 4096;
	info->nr_ranges = 1;
	info->ranges[0].start = 1ull << 20;
	info->ranges[0].end = (1ull << 40) - 1;
	return 0;
}

static int fake_dma_map(struct vfio_dev *d, uint64_t iova, uint64_t size, void *vaddr, int fd,
			uint64_t fd_off, uint32_t prot)
{
	struct fake_vdev *fv = fake_of(d);

	(void)iova, (void)vaddr, (void)fd, (void)fd_off, (void)prot;
	if (vfio_dev_is_gone(d))
		return -ENODEV;
	pthread_mutex_lock(&fv->lock);
	fv->dma_maps++;
	fv->dma_bytes += size;
	pthread_mutex_unlock(&fv->lock);
	return 0;
}

static int fake_dma_unmap(struct vfio_dev *d, uint64_t iova, uint64_t size, uint64_t *unmapped)
{
	struct fake_vdev *fv = fake_of(d);

	(void)iova;
	pthread_mutex_lock(&fv->lock);
	fv->dma_maps--;
	fv->dma_bytes -= size;
	pthread_mutex_unlock(&fv->lock);
	*unmapped = size;
	return 0;
}

/* Only what the steps brought up and the BO layer call. */
static const struct vfio_transport_ops fake_vdev_ops = {
	.name = "fake",
	.region_mmap = fake_region_mmap,
	.region_munmap = fake_region_munmap,
	.region_fd = fake_region_fd,
	.iommu_info = fake_iommu_info,
	.dma_map = fake_dma_map,
	.dma_unmap = fake_dma_unmap,
};

static const struct device_profile fake_profile = {
	.name = "fake",
	.vram_region = VFIO_REGION_BAR2,
	.reg_region = -1,
};

/* ---- fault injection ---- */

enum fault_kind {
	FAULT_EXEC, /* accepted, then fails: waits answer -EIO until reset */
	FAULT_SUBMIT, /* refused: engine_copy() answers -EIO */
	FAULT_HANG, /* never completes: waits answer -ETIMEDOUT until reset */
	FAULT_NKINDS,
};

/*
 * Countdown over every copy command the fake blitters get (SQLite's
 * test_vfs): the @at-th from arming fails (@always: and each one after);
 * with @gone the device also stops answering then. Locking: @lock.
 */
static struct {
	pthread_mutex_t lock;
	unsigned long at; /* 0: off */
	bool always;
	enum fault_kind kind;
	bool gone;
	struct vfio_dev *vdev;
	unsigned long cmds; /* copy commands submitted */
	unsigned long fired; /* commands failed by injection */
	unsigned long real_errors; /* copies the CPU engine refused: a bad address */
} fault = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void fault_arm(unsigned long at, bool always, enum fault_kind kind, bool gone)
{
	pthread_mutex_lock(&fault.lock);
	fault.at = at;
	fault.always = always;
	fault.kind = kind;
	fault.gone = gone;
	pthread_mutex_unlock(&fault.lock);
}

static void fault_clear(void)
{
	fault_arm(0, false, FAULT_EXEC, false);
}

static unsigned long fault_fired(void)
{
	unsigned long n;

	pthread_mutex_lock(&fault.lock);
	n = fault.fired;
	pthread_mutex_unlock(&fault.lock);
	return n;
}

static bool fault_armed(void)
{
	bool on;

	pthread_mutex_lock(&fault.lock);
	on = fault.at != 0;
	pthread_mutex_unlock(&fault.lock);
	return on;
}

/* Count one command; true (and how) when the injection fails it. */
static bool fault_take(enum fault_kind *kind)
{
	bool hit = false;

	pthread_mutex_lock(&fault.lock);
	fault.cmds++;
	if (fault.at == 1) {
		hit = true;
		*kind = fault.kind;
		fault.fired++;
		if (!fault.always)
			fault.at = 0;
		if (fault.gone && fault.vdev)
			vfio_dev_set_gone(fault.vdev);
	} else if (fault.at) {
		fault.at--;
	}
	pthread_mutex_unlock(&fault.lock);
	return hit;
}

/* ---- the fake blitter ---- */

#define FAKE_QUEUE 64 /* commands the fake ring holds */

struct fake_cmd {
	struct engine_addr dst, src;
	uint64_t size, fence;
	bool fail;
	enum fault_kind kind;
};

/*
 * struct fake_engine - a blitter without a device. Commands queue like on a
 * ring and run (by the CPU engine, over the same fake VRAM and DMA space)
 * only when the last batch ends, the ring fills, or someone waits or idles:
 * a caller that used a destination before its wait, or freed a source
 * before the copy ran, is caught. A failed command stops the engine until
 * engine_reset(), which drops what is queued; waits for failed or dropped
 * fences answer -EIO (-ETIMEDOUT for a hang), never blocking.
 * Locking: @lock protects everything.
 */
struct fake_engine {
	pthread_mutex_t lock;
	struct engine *cpu;
	struct fake_cmd q[FAKE_QUEUE];
	unsigned int nq;
	unsigned int plugged;
	uint64_t seqno; /* last fence handed out */
	uint64_t bad; /* first fence that failed since the last reset; 0: none */
	bool hung;
	uint64_t dead_lo, dead_hi; /* fences the last reset dropped */
};

static struct fake_engine *fe_of(struct engine *e)
{
	return e->priv;
}

/* Run the queue. Engine lock held. */
static void fake_run(struct fake_engine *fe)
{
	unsigned int i;

	for (i = 0; i < fe->nq && !fe->bad; i++) {
		struct fake_cmd *c = &fe->q[i];

		if (c->fail) {
			fe->bad = c->fence;
			fe->hung = c->kind == FAULT_HANG;
		} else if (engine_copy(fe->cpu, c->dst, c->src, c->size, NULL)) {
			fe->bad = c->fence; /* a bad address from the BO layer */
			pthread_mutex_lock(&fault.lock);
			fault.real_errors++;
			pthread_mutex_unlock(&fault.lock);
		}
	}
	fe->nq = 0; /* after a failure nothing runs until reset, which drops it */
}

static int fake_status(struct fake_engine *fe, uint64_t fence)
{
	if (fe->dead_lo && fence >= fe->dead_lo && fence <= fe->dead_hi)
		return -EIO;
	if (fe->bad && fence >= fe->bad)
		return fe->hung ? -ETIMEDOUT : -EIO;
	return 0;
}

static int fake_init(struct engine *e)
{
	struct fake_engine *fe = calloc(1, sizeof(*fe));
	int ret;

	if (!fe)
		return -ENOMEM;
	ret = engine_create(e->ctx, &engine_cpu_ops, &e->cfg, &fe->cpu);
	if (ret) {
		free(fe);
		return ret;
	}
	pthread_mutex_init(&fe->lock, NULL);
	snprintf(e->name, sizeof(e->name), "fake%u", e->cfg.index);
	e->priv = fe;
	return 0;
}

static void fake_fini(struct engine *e)
{
	struct fake_engine *fe = fe_of(e);

	engine_destroy(fe->cpu);
	pthread_mutex_destroy(&fe->lock);
	free(fe);
}

static int fake_copy(struct engine *e, struct engine_addr dst, struct engine_addr src,
		     uint64_t size, uint64_t *fence_out)
{
	struct fake_engine *fe = fe_of(e);
	enum fault_kind kind = FAULT_EXEC;
	bool fail = fault_take(&kind);

	if (fail && kind == FAULT_SUBMIT)
		return -EIO;
	pthread_mutex_lock(&fe->lock);
	if (fe->nq == FAKE_QUEUE)
		fake_run(fe);
	fe->q[fe->nq++] = (struct fake_cmd){ dst, src, size, ++fe->seqno, fail, kind };
	if (fence_out)
		*fence_out = fe->seqno;
	if (!fe->plugged)
		fake_run(fe);
	pthread_mutex_unlock(&fe->lock);
	return 0;
}

static int fake_wait(struct engine *e, uint64_t fence, int timeout_ms)
{
	struct fake_engine *fe = fe_of(e);
	int ret = -EINVAL;

	(void)timeout_ms;
	pthread_mutex_lock(&fe->lock);
	if (fence <= fe->seqno) {
		fake_run(fe);
		ret = fake_status(fe, fence);
	}
	pthread_mutex_unlock(&fe->lock);
	return ret;
}

static int fake_idle(struct engine *e, int timeout_ms)
{
	struct fake_engine *fe = fe_of(e);
	int ret;

	(void)timeout_ms;
	pthread_mutex_lock(&fe->lock);
	fake_run(fe);
	ret = fe->bad ? fake_status(fe, fe->bad) : 0;
	pthread_mutex_unlock(&fe->lock);
	return ret;
}

static int fake_reset(struct engine *e)
{
	struct fake_engine *fe = fe_of(e);

	pthread_mutex_lock(&fe->lock);
	if (fe->bad || fe->nq) {
		fe->dead_lo = fe->bad ? fe->bad : fe->q[0].fence;
		fe->dead_hi = fe->seqno;
	}
	fe->nq = 0;
	fe->bad = 0;
	fe->hung = false;
	pthread_mutex_unlock(&fe->lock);
	return 0;
}

static uint64_t fake_completed(struct engine *e)
{
	struct fake_engine *fe = fe_of(e);
	uint64_t done;

	pthread_mutex_lock(&fe->lock);
	done = fe->bad ? fe->bad - 1 : fe->nq ? fe->q[0].fence - 1 : fe->seqno;
	pthread_mutex_unlock(&fe->lock);
	return done;
}

static int fake_plug(struct engine *e, bool on)
{
	struct fake_engine *fe = fe_of(e);

	pthread_mutex_lock(&fe->lock);
	if (on)
		fe->plugged++;
	else if (fe->plugged && !--fe->plugged)
		fake_run(fe);
	pthread_mutex_unlock(&fe->lock);
	return 0;
}

static const struct engine_ops fake_engine_ops = {
	.name = "fake",
	.init = fake_init,
	.fini = fake_fini,
	.copy = fake_copy,
	.fill = NULL, /* the BO layer does not fill */
	.wait = fake_wait,
	.idle = fake_idle,
	.reset = fake_reset,
	.completed = fake_completed,
	.plug = fake_plug,
};

/* ---- the fixture ---- */

struct fx {
	struct ugpu_context *ctx;
	struct fake_vdev *fv;
	struct ugpu_device *dev;
	unsigned int blitters;
	bool closed;
	/* what check() prints when it fails (the random test's step) */
	char where[160];
	/* what went wrong inside a suspend window: reported once the window
	 * (which holds the manager lock) is closed, so that a failing test
	 * does not leave the lock held for the teardown */
	char window_err[160];
};

static void window_fail(struct fx *f, const char *fmt, const char *name)
{
	if (!f->window_err[0])
		snprintf(f->window_err, sizeof(f->window_err), fmt, name);
}

static void check(struct fx *f);

/* The steps the BO layer needs: every one but the transport (the test is the
 * transport) and those that need a real device (irqs, runtime PM, the
 * removal watcher). */
static const char *const mm_steps[] = { "vram-map", "dma", "bo-mgr", "vram-mm", "engines", NULL };

/*
 * A fake device with @user_vram bytes of VRAM for BOs, plus one ring per
 * blitter at the top (buddy roots: @user_vram, then the rings'), and
 * @blitters fake copy engines (0: the CPU engine does every copy).
 */
static struct fx *fx_new(uint64_t user_vram, unsigned int blitters)
{
	struct ugpu_context_opts co = {
		.size = sizeof(co),
		.log_fn = log_capture,
		.log_level = UGPU_LOG_DEBUG,
	};
	struct fx *f = calloc(1, sizeof(*f));
	struct fake_vdev *fv = calloc(1, sizeof(*fv));
	uint64_t vram = user_vram + blitters * FAKE_RING_BYTES;
	unsigned int i;

	assert_non_null(f);
	assert_non_null(fv);
	log_echo = getenv("UGPU_TEST_LOG") != NULL;
	log_clear();
	assert_int_equal(ugpu_context_create(&co, &f->ctx), 0);
	fv->dev.ops = &fake_vdev_ops;
	snprintf(fv->dev.name, sizeof(fv->dev.name), "fake0");
	pthread_mutex_init(&fv->lock, NULL);
	assert_int_equal(sysmem_create(f->ctx, vram, "fake-vram", &fv->bar2), 0);
	f->fv = fv;
	f->blitters = blitters;

	/* What the transport step would have found. */
	assert_int_equal(device_new(f->ctx, "fake0", &f->dev), 0);
	f->dev->vdev = &fv->dev;
	f->dev->profile = &fake_profile;
	f->dev->vram_size = vram;
	assert_int_equal(device_steps_up(f->dev, "fake0", mm_steps), 0);
	assert_non_null(f->dev->vram);
	assert_non_null(f->dev->cpu);

	/* The blitters, each on its ring in driver memory as engines_setup()
	 * does for the sim engines; the engines step's teardown frees both. */
	for (i = 0; i < blitters; i++) {
		struct engine_cfg cfg = {
			.size = sizeof(cfg),
			.vram = f->dev->vram,
			.vram_size = vram,
			.dma = &f->dev->dma,
			.index = i,
		};

		assert_int_equal(f->dev->kmem->alloc(f->dev, FAKE_RING_BYTES, i ? "ring1" : "ring0",
						     &f->dev->ring_obj[i], &f->dev->ring_offset[i]),
				 0);
		assert_int_equal(bo_fill(f->dev->ring_obj[i], FAKE_RING_BYTES, 0x7100 + i), 0);
		assert_int_equal(engine_create(f->ctx, &fake_engine_ops, &cfg, &f->dev->copy[i]), 0);
	}
	fault_clear();
	pthread_mutex_lock(&fault.lock);
	fault.vdev = &fv->dev;
	fault.real_errors = 0;
	pthread_mutex_unlock(&fault.lock);
	check(f);
	return f;
}

static void fx_free(struct fx *f)
{
	struct fake_vdev *fv = f->fv;

	if (!f->closed)
		ugpu_device_close(f->dev);
	/* Everything the steps mapped was unmapped again. */
	assert_int_equal(fv->mmaps, 0);
	assert_int_equal(fv->dma_maps, 0);
	assert_int_equal(fv->dma_bytes, 0);
	fault_clear();
	pthread_mutex_lock(&fault.lock);
	fault.vdev = NULL;
	pthread_mutex_unlock(&fault.lock);
	sysmem_destroy(&fv->bar2);
	pthread_mutex_destroy(&fv->lock);
	free(fv);
	ugpu_context_destroy(f->ctx);
	free(f);
}

static int setup(void **state)
{
	*state = fx_new(1 * MiB, 2);
	return 0;
}

static int setup_cpu_only(void **state)
{
	*state = fx_new(1 * MiB, 0);
	return 0;
}

static int teardown(void **state)
{
	fx_free(*state);
	return 0;
}

static struct ugpu_device_mem stats_of(struct fx *f)
{
	struct ugpu_device_mem st = { .size = sizeof(st) };

	assert_int_equal(ugpu_device_mem_stats(f->dev, &st), 0);
	return st;
}

static void fail_check(struct fx *f, const char *what)
{
	pthread_mutex_lock(&log_lock);
	fprintf(stderr, "---- driver log (most recent last) ----\n%s----\n", log_text);
	pthread_mutex_unlock(&log_lock);
	fail_msg("%s%s%s", f->where, f->where[0] ? ": " : "", what);
}

/*
 * The invariants, after every step: the manager's own checker (strict: the
 * buddy allocator has allocated exactly what BOs hold), and what it cannot
 * see: the fake IOMMU holds exactly the BOs' system memory and backups (no
 * leaked or missing DMA map), the statistics add up, no blitter is left
 * plugged or with work queued, and no copy used a bad address.
 */
static void check(struct fx *f)
{
	struct ugpu_device_mem st;
	bool removed = device_is_removed(f->dev);
	uint64_t dma_bytes;
	unsigned int i;

	if (bo_mgr_check(f->dev, true))
		fail_check(f, "bo_mgr_check() failed (its reason is the last 'bo check:' line)");
	st = stats_of(f);
	if (st.vram_used != st.vram_kernel + st.vram_bos)
		fail_check(f, "VRAM used is not what driver and program BOs hold");
	if (st.vram_used + st.vram_free != (removed ? 0 : f->dev->vram_size))
		fail_check(f, "VRAM used + free is not the VRAM size");
	if (st.bos_vram + st.bos_system + st.bos_lost != st.bos)
		fail_check(f, "BOs by placement do not add up");
	pthread_mutex_lock(&f->fv->lock);
	dma_bytes = f->fv->dma_bytes;
	pthread_mutex_unlock(&f->fv->lock);
	if (dma_bytes != (removed ? 0 : st.system_bytes + st.backup_bytes))
		fail_check(f, "DMA-mapped bytes are not the BOs' system memory plus backups");
	for (i = 0; i < DEVICE_MAX_ENGINES; i++) {
		struct engine *e = f->dev->copy[i];
		bool busy;

		if (!e)
			continue;
		pthread_mutex_lock(&fe_of(e)->lock);
		busy = fe_of(e)->plugged || fe_of(e)->nq;
		pthread_mutex_unlock(&fe_of(e)->lock);
		if (busy)
			fail_check(f, "a blitter was left plugged or with queued work");
	}
	pthread_mutex_lock(&fault.lock);
	i = (unsigned int)fault.real_errors;
	pthread_mutex_unlock(&fault.lock);
	if (i)
		fail_check(f, "a copy used an address the DMA space does not map");
}

/* ---- helpers ---- */

static struct ugpu_bo *mk(struct fx *f, uint64_t bytes, uint32_t flags, enum ugpu_placement p0,
			  enum ugpu_placement p1, const char *name)
{
	struct ugpu_bo *bo = bo_new(f->dev, bytes, flags, p0, p1, name);

	assert_non_null(bo);
	check(f);
	return bo;
}

static struct ugpu_bo_info info_of(struct ugpu_bo *bo)
{
	struct ugpu_bo_info i = { .size = sizeof(i) };

	assert_int_equal(ugpu_bo_query(bo, &i), 0);
	return i;
}

static void fill(struct fx *f, struct ugpu_bo *bo, uint32_t seed)
{
	assert_int_equal(bo_fill(bo, info_of(bo).bytes, seed), 0);
	check(f);
}

/* The BO holds pattern @seed (read through ugpu_bo_read: bumps it on the LRU). */
static void expect_pat(struct ugpu_bo *bo, uint32_t seed)
{
	int64_t at = bo_verify(bo, info_of(bo).bytes, seed);

	if (at != -1)
		fail_msg("BO holds not pattern %u: first difference at %lld", seed, (long long)at);
}

static void put(struct fx *f, struct ugpu_bo *bo)
{
	ugpu_bo_put(bo);
	check(f);
}

/* @n BOs of @bytes, the i-th filled with pattern @seed + i. */
static void mk_n(struct fx *f, struct ugpu_bo **v, unsigned int n, uint64_t bytes, uint32_t flags,
		 enum ugpu_placement p0, enum ugpu_placement p1, uint32_t seed)
{
	unsigned int i;

	for (i = 0; i < n; i++) {
		v[i] = mk(f, bytes, flags, p0, p1, "bo");
		fill(f, v[i], seed + i);
	}
}

/* Each of @n BOs (NULL ones skipped) still holds pattern @seed + i; put. */
static void put_n(struct fx *f, struct ugpu_bo **v, unsigned int n, uint32_t seed)
{
	unsigned int i;

	for (i = 0; i < n; i++)
		if (v[i]) {
			expect_pat(v[i], seed + i);
			put(f, v[i]);
		}
}

static unsigned int nblocks(const struct ugpu_bo *bo)
{
	struct buddy_block *b;
	unsigned int n = 0;

	buddy_list_for_each(b, bo->vram)
		n++;
	return n;
}

/* One run of VRAM, block after block (white box). */
static bool is_contiguous(const struct ugpu_bo *bo)
{
	struct buddy_block *b;
	uint64_t next = UINT64_MAX;

	buddy_list_for_each(b, bo->vram) {
		if (next != UINT64_MAX && buddy_block_offset(b) != next)
			return false;
		next = buddy_block_offset(b) + vram_block_size(b);
	}
	return true;
}

/* A copy of the bytes a VRAM BO has in the fake VRAM now (white box: no
 * lock, no LRU bump; for use inside a suspend window, which owns the
 * manager). The caller frees it. */
static uint8_t *vram_copy(struct fx *f, const struct ugpu_bo *bo)
{
	uint8_t *out = malloc(bo->size);
	struct buddy_block *b;
	uint64_t pos = 0;

	if (!out)
		abort(); /* not an assertion: the window holds the manager lock */
	buddy_list_for_each(b, bo->vram) {
		memcpy(out + pos, (uint8_t *)f->dev->vram + buddy_block_offset(b), vram_block_size(b));
		pos += vram_block_size(b);
	}
	return out;
}

static bool all_poison(const uint8_t *p, uint64_t n)
{
	uint64_t i, w;

	for (i = 0; i + 8 <= n; i += 8) {
		memcpy(&w, p + i, 8);
		if (w != POISON)
			return false;
	}
	return true;
}

/* Power off: the fake VRAM forgets everything. */
static void power_off(struct fx *f)
{
	uint64_t *w = f->dev->vram;
	uint64_t i;

	for (i = 0; i < f->dev->vram_size / 8; i++)
		w[i] = POISON;
}

/* A CPU mapping is possible here (userfaultfd), or the test using it is
 * skipped: test_bo_map_race and test_dataloss cover mappings against the
 * reference device. */
static bool maps_work(struct ugpu_bo *bo)
{
	void *p;
	int ret = ugpu_bo_map(bo, &p);

	if (ret == -ENOSYS)
		return false;
	assert_int_equal(ret, 0);
	assert_int_equal(ugpu_bo_unmap(bo), 0);
	return true;
}

/* ---- host suspend through dev->pm->mem, as src/suspend.c runs it ---- */

struct pm_run {
	struct pm_count evict, backup, missing, save_late, save_early, restore_early, restore_late;
	uint64_t discarded;
	bool cpu_fallback; /* the blitter restore failed, the CPU redid it */
};

static const struct pm_mem_ops *pm_ops(struct fx *f, void **arg)
{
	*arg = f->dev->pm->mem_arg;
	return f->dev->pm->mem;
}

static enum ugpu_pm_state pm_state(struct fx *f)
{
	void *arg;

	return pm_ops(f, &arg)->state(arg);
}

/* ugpu_device_suspend_prepare(): begin, evict, backup, end; checked after each. */
static int do_prepare(struct fx *f, struct pm_run *r)
{
	void *arg;
	const struct pm_mem_ops *mem = pm_ops(f, &arg);
	int ret;

	pthread_mutex_lock(&f->dev->pm->lock);
	ret = mem->prepare_begin(arg);
	if (ret) {
		pthread_mutex_unlock(&f->dev->pm->lock);
		return ret;
	}
	check(f);
	ret = mem->prepare_evict(arg, &r->evict);
	check(f);
	if (!ret) {
		ret = mem->prepare_backup(arg, &r->backup);
		check(f);
	}
	mem->prepare_end(arg, ret);
	pthread_mutex_unlock(&f->dev->pm->lock);
	check(f);
	return ret;
}

static void engines_quiesce(struct fx *f)
{
	unsigned int k;

	for (k = 0; k < DEVICE_MAX_ENGINES; k++)
		if (f->dev->copy[k] && engine_idle(f->dev->copy[k], 5000))
			engine_reset(f->dev->copy[k]);
}

/* Inside the window: every backup holds its BO's VRAM bytes and is valid. */
static void backups_match_vram(struct fx *f)
{
	struct bo_mgr *m = f->dev->bo_mgr;

	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);
		uint8_t *v;

		if (bo->backup.mem.fd < 0)
			continue;
		if (!bo->backup_valid)
			window_fail(f, "the backup of BO '%s' is not valid after the save", bo->name);
		v = vram_copy(f, bo);
		if (memcmp(v, bo->backup.mem.vaddr, bo->size))
			window_fail(f, "the backup of BO '%s' does not hold its VRAM bytes", bo->name);
		free(v);
	}
}

/* Open the suspend (@for_resume false) or resume window as src/suspend.c
 * does: the host-suspend lock, then window_begin. */
static const struct pm_mem_ops *window_open(struct fx *f, bool for_resume, void **arg,
					    enum ugpu_pm_state *was, int *ret)
{
	const struct pm_mem_ops *mem = pm_ops(f, arg);

	f->window_err[0] = 0;
	pthread_mutex_lock(&f->dev->pm->lock);
	*ret = mem->window_begin(*arg, for_resume, was);
	if (*ret)
		pthread_mutex_unlock(&f->dev->pm->lock);
	return mem;
}

/* Close it; then report what went wrong inside, and check. */
static void window_close(struct fx *f, const struct pm_mem_ops *mem, void *arg)
{
	mem->window_end(arg);
	pthread_mutex_unlock(&f->dev->pm->lock);
	if (f->window_err[0])
		fail_check(f, f->window_err);
	check(f);
}

/*
 * ugpu_device_suspend(): the window with alloc_missing, hold_maps, the
 * blitters' save, the CPU's save, then power-off (VRAM poisoned) and
 * suspended; on a failure, recover. Checked after the window (the checker
 * takes the manager lock, which the window holds).
 */
static int do_suspend(struct fx *f, struct pm_run *r)
{
	enum ugpu_pm_state was;
	void *arg;
	int ret;
	const struct pm_mem_ops *mem = window_open(f, false, &arg, &was, &ret);

	if (ret)
		return ret;
	ret = mem->alloc_missing(arg, &r->missing);
	if (!ret)
		ret = mem->hold_maps(arg);
	if (!ret) {
		engines_quiesce(f);
		ret = mem->save(arg, false, &r->save_late);
	}
	if (!ret)
		ret = mem->save(arg, true, &r->save_early);
	if (!ret) {
		backups_match_vram(f);
		power_off(f);
		mem->suspended(arg);
	} else {
		engines_quiesce(f);
		mem->recover(arg, was);
	}
	window_close(f, mem, arg);
	return ret;
}

/* The blitters' rings (driver BOs) hold what fx_new() wrote. */
static void rings_expect(struct fx *f)
{
	unsigned int i;

	for (i = 0; i < f->blitters; i++)
		expect_pat(f->dev->ring_obj[i], 0x7100 + i);
}

/* Inside the resume window, after the early restore: the early kernel BOs
 * are back, everything else still reads the power-off poison. */
static void only_early_restored(struct fx *f)
{
	struct bo_mgr *m = f->dev->bo_mgr;

	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);
		bool early = (bo->flags & UGPU_BO_KERNEL) && !(bo->flags & UGPU_BO_LATE_RESTORE);
		uint8_t *v;

		if (bo->placement != UGPU_PLACEMENT_VRAM)
			continue;
		v = vram_copy(f, bo);
		if (early && memcmp(v, bo->backup.mem.vaddr, bo->size))
			window_fail(f, "early BO '%s' not restored by the early (CPU) restore", bo->name);
		if (!early && !all_poison(v, bo->size))
			window_fail(f, "BO '%s' restored before the late restore", bo->name);
		free(v);
	}
}

/* ugpu_device_resume(): early restore by CPU, engines reset, blitter
 * restore (redone by CPU when it fails), finish. */
static int do_resume(struct fx *f, struct pm_run *r)
{
	struct pm_count fin = { 0 };
	enum ugpu_pm_state was;
	unsigned int k;
	void *arg;
	int ret;
	const struct pm_mem_ops *mem = window_open(f, true, &arg, &was, &ret);

	if (ret)
		return ret;
	if (was != UGPU_PM_SUSPENDED)
		window_fail(f, "%s", "resume window opened on a device not suspended");
	ret = mem->restore(arg, true, false, &r->restore_early);
	if (ret)
		window_fail(f, "%s", "the early restore (the CPU engine) failed");
	only_early_restored(f);
	for (k = 0; k < DEVICE_MAX_ENGINES; k++)
		if (f->dev->copy[k])
			engine_reset(f->dev->copy[k]);
	ret = mem->restore(arg, false, false, &r->restore_late);
	if (ret) {
		r->cpu_fallback = true;
		ret = mem->restore(arg, false, true, &r->restore_late);
	}
	if (!ret)
		mem->finish(arg, &fin, &r->discarded);
	window_close(f, mem, arg);
	if (!ret)
		rings_expect(f);
	return ret;
}

static int do_cancel(struct fx *f, bool *prepared)
{
	void *arg;
	const struct pm_mem_ops *mem = pm_ops(f, &arg);
	int ret;

	pthread_mutex_lock(&f->dev->pm->lock);
	ret = mem->cancel(arg, prepared);
	pthread_mutex_unlock(&f->dev->pm->lock);
	check(f);
	return ret;
}

/* ---- removal through dev->unplug_mem, as src/unplug.c runs it ---- */

/*
 * Evacuate (the engines idled first unless @surprise or host-suspended),
 * drop DMA maps, mark removed, detach, tear down the device's steps (the
 * engines step frees the rings), release the maps. *@surprise_out: whether
 * the removal ended as a surprise (the device stopped answering).
 */
static struct unplug_counts do_remove(struct fx *f, bool surprise, bool *surprise_out)
{
	const struct unplug_mem_ops *mem = f->dev->unplug_mem;
	void *arg = f->dev->unplug_mem_arg;
	struct unplug_counts c = { 0 };
	bool suspended;

	pthread_mutex_lock(&f->dev->pm->lock);
	assert_int_equal(mem->lock(arg, 1000), 0);
	suspended = mem->host_suspended(arg);
	if (!surprise && !suspended)
		engines_quiesce(f);
	mem->evacuate(arg, &surprise, &c);
	mem->dma_release(arg);
	__atomic_store_n(&f->dev->removed, 1, __ATOMIC_RELEASE);
	mem->detach(arg);
	mem->unlock(arg);
	device_teardown(f->dev, DEVICE_LIFE_DEVICE);
	mem->maps_release(arg);
	pthread_mutex_unlock(&f->dev->pm->lock);
	check(f);
	if (surprise_out)
		*surprise_out = surprise;
	return c;
}

/* ---- a population of every kind ---- */

#define POP_N K_NKINDS

/* One BO of each kind (bo_util.h), 16, 32 or 64 KiB: one buddy block, so
 * one copy command, each. Mapped kinds are filled through their mapping
 * when CPU mappings work. */
static void pop_new(struct fx *f, struct obj *o, bool with_maps)
{
	int i;

	for (i = 0; i < POP_N; i++) {
		enum kind k = (enum kind)i;

		o[i].kind = k;
		o[i].size = (16 * KiB) << (i % 3);
		o[i].seed = 0x500 + (uint32_t)i;
		o[i].map = NULL;
		o[i].bo = mk(f, o[i].size, kinds[k].flags, kinds[k].p0, kinds[k].p1, kinds[k].name);
		if (with_maps && (k == K_MAPPED_PINNED || k == K_MAPPED_UNPINNED)) {
			assert_int_equal(ugpu_bo_map(o[i].bo, (void **)&o[i].map), 0);
			pat_fill(o[i].map, o[i].size, o[i].seed);
			check(f);
		} else {
			fill(f, o[i].bo, o[i].seed);
		}
	}
}

/* Each BO holds its pattern (through its mapping too), except the kinds in
 * @skip (a bit per kind). */
static void pop_expect(struct obj *o, unsigned int skip)
{
	int i;

	for (i = 0; i < POP_N; i++) {
		if (!o[i].bo || (skip & (1u << o[i].kind)))
			continue;
		expect_pat(o[i].bo, o[i].seed);
		if (o[i].map && pat_check(o[i].map, o[i].size, o[i].seed) != -1)
			fail_msg("the mapping of BO '%s' lost bytes", kinds[o[i].kind].name);
	}
}

static void pop_put(struct fx *f, struct obj *o)
{
	int i;

	for (i = 0; i < POP_N; i++)
		if (o[i].bo)
			put(f, o[i].bo);
}

static bool pop_maps(struct fx *f)
{
	struct ugpu_bo *probe = mk(f, 4096, 0, S, N, "probe");
	bool ok = maps_work(probe);

	put(f, probe);
	return ok;
}

#define KIND(k) (1u << (k))

/* ---- creation ---- */

static bool flags_valid(uint32_t fl)
{
	if (fl & ~UGPU_BO_FLAGS_ALL)
		return false;
	if ((fl & UGPU_BO_NO_RESTORE) && (fl & UGPU_BO_LATE_RESTORE))
		return false;
	return !(fl & UGPU_BO_LATE_RESTORE) || (fl & UGPU_BO_KERNEL);
}

/* Every placement list and every flag combination: valid ones land in their
 * first placement, pinned or not as asked, zero-filled (VRAM is dirtied
 * first: a new VRAM BO must not show an earlier owner's bytes) and usable;
 * refused ones (-EINVAL) leave nothing behind. */
static void test_create_every_combination(void **state)
{
	static const enum ugpu_placement lists[][2] = { { N, N }, { V, N }, { S, N }, { V, S }, { S, V } };
	struct fx *f = *state;
	uint64_t zero[3 * 4096 / 8];
	unsigned int l;
	uint32_t fl;

	memset(zero, 0, sizeof(zero));
	memset(f->dev->vram, 0xa5, f->dev->vram_size - f->blitters * FAKE_RING_BYTES);
	for (l = 0; l < sizeof(lists) / sizeof(lists[0]); l++) {
		for (fl = 0; fl <= UGPU_BO_FLAGS_ALL + 1; fl++) {
			struct ugpu_bo_opts o = {
				.size = sizeof(o),
				.bytes = 10000, /* rounded up to 3 pages */
				.placements = { lists[l][0], lists[l][1] },
				.flags = fl,
				.name = "combo",
			};
			uint64_t got[3 * 4096 / 8];
			struct ugpu_bo_info info;
			struct ugpu_bo *bo = NULL;
			int ret = ugpu_bo_create(f->dev, &o, &bo);

			check(f);
			if (!flags_valid(fl)) {
				assert_int_equal(ret, -EINVAL);
				assert_null(bo);
				assert_int_equal(stats_of(f).bos, 0);
				continue;
			}
			assert_int_equal(ret, 0);
			info = info_of(bo);
			assert_int_equal(info.bytes, 3 * 4096);
			assert_int_equal(info.placement, lists[l][0] == N ? V : lists[l][0]);
			assert_int_equal(info.flags, fl);
			assert_int_equal(info.pin_count, (fl & UGPU_BO_PINNED) ? 1 : 0);
			assert_false(info.lost || info.has_backup || info.cpu_mapped);
			if (info.placement == V && (fl & UGPU_BO_CONTIGUOUS))
				assert_true(is_contiguous(bo));
			assert_int_equal(ugpu_bo_read(bo, 0, got, sizeof(got)), 0);
			assert_memory_equal(got, zero, sizeof(got));
			fill(f, bo, fl);
			expect_pat(bo, fl);
			check(f);
			put(f, bo);
			assert_int_equal(stats_of(f).bos, 0);
		}
	}
}

/* Refused options and arguments: -EINVAL, and nothing created. */
static void test_create_invalid(void **state)
{
	static const enum ugpu_placement bad[][2] = {
		{ N, V }, /* a placement after an empty one */
		{ V, V }, /* repeated */
		{ S, S },
		{ (enum ugpu_placement)3, N }, /* unknown */
		{ V, (enum ugpu_placement)7 },
	};
	struct fx *f = *state;
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = 4096 };
	struct ugpu_bo *bo = NULL;
	unsigned int i;

	assert_int_equal(ugpu_bo_create(NULL, &o, &bo), -EINVAL);
	assert_int_equal(ugpu_bo_create(f->dev, NULL, &bo), -EINVAL);
	assert_int_equal(ugpu_bo_create(f->dev, &o, NULL), -EINVAL);
	o.bytes = 0;
	assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), -EINVAL);
	o.bytes = UINT64_MAX;
	assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), -EINVAL);
	assert_true(log_has("bad size"));
	o.bytes = 4096;
	o.flags = UGPU_BO_FLAGS_ALL + 1;
	assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), -EINVAL);
	assert_true(log_has("unknown flags"));
	o.flags = UGPU_BO_KERNEL | UGPU_BO_LATE_RESTORE | UGPU_BO_NO_RESTORE;
	assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), -EINVAL);
	o.flags = UGPU_BO_LATE_RESTORE;
	assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), -EINVAL);
	o.flags = 0;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		o.placements[0] = bad[i][0];
		o.placements[1] = bad[i][1];
		assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), -EINVAL);
		check(f);
	}
	/* The options' size must reach past bytes. */
	o.placements[0] = o.placements[1] = N;
	o.size = offsetof(struct ugpu_bo_opts, bytes);
	assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), -EINVAL);
	assert_null(bo);
	assert_int_equal(stats_of(f).bos, 0);
	check(f);

	/* A caller that knows only bytes (or half of placements) gets the
	 * defaults for the rest: {VRAM, SYSTEM}, no flags. */
	o.placements[0] = S;
	o.flags = UGPU_BO_PINNED;
	o.size = offsetof(struct ugpu_bo_opts, placements) + sizeof(o.placements[0]);
	assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), 0);
	assert_int_equal(info_of(bo).placement, V);
	assert_int_equal(info_of(bo).pin_count, 0);
	put(f, bo);
}

/* ---- reads and writes ---- */

/*
 * Leave VRAM with only isolated free pages: pinned 4 KiB fillers everywhere,
 * then those at odd pages put. Returns the fillers left (NULL at the holes),
 * @n of them.
 */
static struct ugpu_bo **fragment(struct fx *f, unsigned int *n, uint32_t flags,
				 enum ugpu_placement p1)
{
	unsigned int i, cnt = (unsigned int)(stats_of(f).vram_free / 4096);
	struct ugpu_bo **v = calloc(cnt, sizeof(*v));

	assert_non_null(v);
	mk_n(f, v, cnt, 4096, flags | UGPU_BO_PINNED, V, p1, 0x1000);
	assert_int_equal(stats_of(f).vram_free, 0);
	for (i = 0; i < cnt; i++)
		if ((info_of(v[i]).vram_offset / 4096) & 1) {
			put(f, v[i]);
			v[i] = NULL;
		}
	*n = cnt;
	return v;
}

static void fragment_put(struct fx *f, struct ugpu_bo **v, unsigned int n)
{
	put_n(f, v, n, 0x1000);
	free(v);
}

/* Writes and reads at offsets that cross pages and blocks, in a scattered
 * VRAM BO and in system memory, against a shadow; bounds refused. */
static void test_write_read_offsets(void **state)
{
	static const struct {
		uint64_t off, len;
	} rw[] = { { 0, 16384 }, { 1, 4095 }, { 4095, 2 }, { 8191, 4098 }, { 16383, 1 },
		   { 5000, 9000 }, { 16384, 0 }, { 0, 0 }, { 12288, 4096 } };
	struct fx *f = *state;
	uint8_t shadow[16384], buf[16384];
	struct ugpu_bo *bo, **fill_v;
	unsigned int nf, i, round;

	fill_v = fragment(f, &nf, 0, N);
	bo = mk(f, 16384, 0, V, S, "scattered");
	assert_int_equal(nblocks(bo), 4);
	assert_false(is_contiguous(bo));
	memset(shadow, 0, sizeof(shadow));
	for (round = 0; round < 3; round++) {
		enum ugpu_placement where = round == 1 ? S : V;

		assert_int_equal(ugpu_bo_migrate(bo, where), 0);
		check(f);
		assert_int_equal(info_of(bo).placement, where);
		for (i = 0; i < sizeof(rw) / sizeof(rw[0]); i++) {
			pat_fill(buf, rw[i].len, round * 100 + i);
			assert_int_equal(ugpu_bo_write(bo, rw[i].off, buf, rw[i].len), 0);
			memcpy(shadow + rw[i].off, buf, rw[i].len);
			check(f);
			memset(buf, 0, sizeof(buf));
			assert_int_equal(ugpu_bo_read(bo, rw[i].off, buf, rw[i].len), 0);
			assert_memory_equal(buf, shadow + rw[i].off, rw[i].len);
			assert_int_equal(ugpu_bo_read(bo, 0, buf, sizeof(buf)), 0);
			assert_memory_equal(buf, shadow, sizeof(buf));
		}
		/* Outside the BO, wrapping, NULL: refused, nothing written. */
		assert_int_equal(ugpu_bo_write(bo, 16385, buf, 0), -EINVAL);
		assert_int_equal(ugpu_bo_write(bo, 16383, buf, 2), -EINVAL);
		assert_int_equal(ugpu_bo_write(bo, 1, buf, SIZE_MAX), -EINVAL);
		assert_int_equal(ugpu_bo_read(bo, UINT64_MAX, buf, 1), -EINVAL);
		assert_int_equal(ugpu_bo_write(bo, 0, NULL, 1), -EINVAL);
		assert_int_equal(ugpu_bo_read(bo, 0, NULL, 0), 0);
		assert_int_equal(ugpu_bo_read(NULL, 0, buf, 1), -EINVAL);
		assert_int_equal(ugpu_bo_read(bo, 0, buf, sizeof(buf)), 0);
		assert_memory_equal(buf, shadow, sizeof(buf));
		check(f);
	}
	put(f, bo);
	fragment_put(f, fill_v, nf);
}

/* ---- pin and unpin ---- */

static void test_pin_unpin(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *a = mk(f, 8192, 0, V, S, "a");
	struct ugpu_bo *b = mk(f, 8192, 0, V, S, "b");
	struct ugpu_bo *c = mk(f, 8192, 0, S, V, "c");
	struct ugpu_bo *d = mk(f, 8192, UGPU_BO_PINNED, V, S, "d");
	uint64_t moves;

	fill(f, a, 1);
	fill(f, b, 2);
	/* Pinned where it is; pins count; a pinned BO does not move away. */
	assert_int_equal(ugpu_bo_pin(a), 0);
	check(f);
	assert_int_equal(ugpu_bo_pin(a), 0);
	check(f);
	assert_int_equal(info_of(a).pin_count, 2);
	assert_int_equal(ugpu_bo_migrate(a, S), -EBUSY);
	assert_int_equal(ugpu_bo_migrate(a, V), 0);
	check(f);
	assert_int_equal(ugpu_bo_unpin(a), 0);
	check(f);
	assert_int_equal(ugpu_bo_unpin(a), 0);
	check(f);
	assert_int_equal(ugpu_bo_unpin(a), -EINVAL);
	assert_int_equal(info_of(a).pin_count, 0);

	/* Pinning an evicted BO brings it back to its first placement. */
	assert_int_equal(ugpu_bo_migrate(b, S), 0);
	check(f);
	moves = stats_of(f).moves;
	assert_int_equal(ugpu_bo_pin(b), 0);
	check(f);
	assert_int_equal(info_of(b).placement, V);
	assert_int_equal(stats_of(f).moves, moves + 1);
	expect_pat(b, 2);
	assert_int_equal(ugpu_bo_unpin(b), 0);
	check(f);

	/* First placement SYSTEM: pinned there. */
	assert_int_equal(ugpu_bo_pin(c), 0);
	check(f);
	assert_int_equal(info_of(c).placement, S);
	assert_int_equal(ugpu_bo_migrate(c, V), -EBUSY);
	assert_int_equal(ugpu_bo_unpin(c), 0);
	check(f);

	/* Created pinned; unpinned it joins the LRU (the checker knows). */
	assert_int_equal(info_of(d).pin_count, 1);
	assert_int_equal(ugpu_bo_unpin(d), 0);
	check(f);

	assert_int_equal(ugpu_bo_pin(NULL), -EINVAL);
	assert_int_equal(ugpu_bo_unpin(NULL), -EINVAL);
	expect_pat(a, 1);
	put(f, a);
	put(f, b);
	put(f, c);
	put(f, d);
}

/* ---- migration ---- */

static void test_migrate_both_ways(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *v_only = mk(f, 4096, 0, V, N, "v-only");
	struct ugpu_bo *s_only = mk(f, 4096, 0, S, N, "s-only");
	struct ugpu_bo *bo[2];
	struct ugpu_device_mem st;
	unsigned int i, r;

	bo[0] = mk(f, 28 * KiB, 0, V, S, "blocks"); /* 16 + 8 + 4 KiB */
	bo[1] = mk(f, 28 * KiB, UGPU_BO_CONTIGUOUS, V, S, "contiguous");
	assert_int_equal(nblocks(bo[0]), 3);
	for (i = 0; i < 2; i++) {
		fill(f, bo[i], 10 + i);
		for (r = 0; r < 4; r++) {
			enum ugpu_placement to = r & 1 ? V : S;

			st = stats_of(f);
			assert_int_equal(ugpu_bo_migrate(bo[i], to), 0);
			check(f);
			assert_int_equal(info_of(bo[i]).placement, to);
			assert_int_equal(stats_of(f).moves, st.moves + 1);
			assert_int_equal(stats_of(f).moved_bytes, st.moved_bytes + 28 * KiB);
			expect_pat(bo[i], 10 + i + r);
			fill(f, bo[i], 10 + i + r + 1);
			if (to == V && i == 1)
				assert_true(is_contiguous(bo[i]));
			/* Already there: no move. */
			assert_int_equal(ugpu_bo_migrate(bo[i], to), 0);
			assert_int_equal(stats_of(f).moves, st.moves + 1);
			check(f);
		}
	}
	/* Not allowed there, not a placement, no BO. */
	assert_int_equal(ugpu_bo_migrate(v_only, S), -EINVAL);
	assert_int_equal(ugpu_bo_migrate(s_only, V), -EINVAL);
	assert_int_equal(ugpu_bo_migrate(bo[0], N), -EINVAL);
	assert_int_equal(ugpu_bo_migrate(bo[0], (enum ugpu_placement)3), -EINVAL);
	assert_int_equal(ugpu_bo_migrate(NULL, V), -EINVAL);
	check(f);
	for (i = 0; i < 2; i++)
		put(f, bo[i]);
	put(f, v_only);
	put(f, s_only);
}

/* ugpud's restart record (bo_backing_record()): the VRAM extents cover the
 * BO once, in order, merged where adjacent; nothing is filled while the
 * backing did not change; in system memory the memfd holds the BO's bytes. */
static void test_backing_record(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = mk(f, 28 * KiB, 0, V, S, "record");
	struct bo_extent ext[4];
	enum ugpu_placement where = N;
	uint64_t gen = UINT64_MAX, gen0, sum = 0;
	unsigned char want[28 * KiB], got[28 * KiB];
	size_t n = 0;
	int fd = -1;

	assert_int_equal(bo_backing_record(bo, &gen, &where, ext, 4, &n, &fd), 0);
	assert_int_equal(where, V);
	assert_int_equal(fd, -1);
	assert_true(n >= 1 && n <= (size_t)nblocks(bo));
	assert_int_equal(ext[0].offset, bo_vram_offset(bo));
	for (size_t i = 0; i < n; i++)
		sum += ext[i].bytes;
	assert_int_equal(sum, 28 * KiB);
	gen0 = gen;
	/* unchanged: nothing filled */
	assert_int_equal(bo_backing_record(bo, &gen, &where, ext, 4, &n, &fd), 1);
	assert_int_equal(gen, gen0);
	/* too little room: the count says so */
	gen = UINT64_MAX;
	assert_int_equal(bo_backing_record(bo, &gen, &where, ext, 0, &n, &fd), 0);
	assert_true(n >= 1);
	fill(f, bo, 77);
	assert_int_equal(ugpu_bo_migrate(bo, S), 0);
	assert_int_equal(bo_backing_record(bo, &gen, &where, ext, 4, &n, &fd), 0);
	assert_true(gen != gen0);
	assert_int_equal(where, S);
	assert_int_equal(n, 0);
	assert_true(fd >= 0);
	assert_int_equal(ugpu_bo_read(bo, 0, want, sizeof(want)), 0);
	assert_int_equal(pread(fd, got, sizeof(got), 0), (ssize_t)sizeof(got));
	assert_memory_equal(got, want, sizeof(got));
	close(fd);
	check(f);
	put(f, bo);
}

/* ---- eviction ---- */

/* Touched through its CPU mapping, as an application would: the fault
 * handler sets the BO's second-chance bit. Without userfaultfd, set the bit
 * the way bo_resolve() does (the eviction policy is what is tested here). */
static void cpu_touch(struct fx *f, struct ugpu_bo *bo)
{
	volatile uint8_t *p;
	int ret = ugpu_bo_map(bo, (void **)&p);

	if (ret == -ENOSYS) {
		__atomic_store_n(&bo->touched, 1, __ATOMIC_RELAXED);
		return;
	}
	assert_int_equal(ret, 0);
	(void)p[0];
	assert_int_equal(ugpu_bo_unmap(bo), 0);
	check(f);
}

/*
 * VRAM holds four 256 KiB BOs. LRU order follows create, write, read and
 * pin; a BO touched through its mapping gets a second chance; when every
 * candidate was touched the first is taken anyway; pinned BOs are never
 * evicted; evicted BOs keep their bytes.
 */
static void test_evict_lru_order(void **state)
{
	struct fx *f = *state;
	const uint64_t q = 256 * KiB;
	struct ugpu_bo *a, *b, *c, *d, *e, *g, *h, *i, *j, *k;
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = 4096, .placements = { V } };
	struct ugpu_device_mem st;
	uint8_t x = 0;

	a = mk(f, q, 0, V, S, "a");
	b = mk(f, q, 0, V, S, "b");
	c = mk(f, q, 0, V, S, "c");
	d = mk(f, q, 0, V, S, "d");
	fill(f, a, 1);
	fill(f, b, 2);
	fill(f, c, 3);
	fill(f, d, 4);
	assert_int_equal(stats_of(f).vram_free, 0);

	/* A write bumps a: LRU b, c, d, a. */
	assert_int_equal(ugpu_bo_write(a, 0, &x, 0), 0);
	check(f);
	e = mk(f, q, 0, V, S, "e");
	st = stats_of(f);
	assert_int_equal(st.evictions, 1);
	assert_int_equal(st.evicted_bytes, q);
	assert_int_equal(bo_where(b), S);
	assert_int_equal(bo_where(a), V);
	assert_int_equal(bo_where(c), V);
	assert_int_equal(bo_where(d), V);
	assert_int_equal(bo_where(e), V);
	expect_pat(b, 2); /* not on the LRU: reading it changes nothing */

	/* LRU c, d, a, e. A read bumps c, a pin takes d off: a, e, c. */
	assert_int_equal(ugpu_bo_read(c, 0, &x, 1), 0);
	assert_int_equal(ugpu_bo_pin(d), 0);
	check(f);
	g = mk(f, 2 * q, 0, V, S, "g"); /* evicts a, then e */
	assert_int_equal(stats_of(f).evictions, 3);
	assert_int_equal(bo_where(a), S);
	assert_int_equal(bo_where(e), S);
	assert_int_equal(bo_where(c), V);
	assert_int_equal(bo_where(d), V);

	/* LRU c, g. c touched through its mapping: g goes instead. */
	cpu_touch(f, c);
	h = mk(f, q, 0, V, S, "h");
	assert_int_equal(stats_of(f).evictions, 4);
	assert_int_equal(bo_where(g), S);
	assert_int_equal(bo_where(c), V);

	/* LRU c, h, both touched: a full circle, then the first, c. */
	cpu_touch(f, c);
	cpu_touch(f, h);
	i = mk(f, 2 * q, 0, V, S, "i");
	assert_int_equal(stats_of(f).evictions, 5);
	assert_int_equal(bo_where(c), S);
	assert_int_equal(bo_where(h), V);

	/* VRAM: d (pinned), h and i. Pin those too: nothing can be evicted. A
	 * BO that may live in system memory goes there; a VRAM-only one cannot
	 * be placed (and nothing moved trying). */
	assert_int_equal(ugpu_bo_pin(h), 0);
	assert_int_equal(ugpu_bo_pin(i), 0);
	check(f);
	st = stats_of(f);
	j = mk(f, q, 0, V, S, "j");
	assert_int_equal(bo_where(j), S);
	assert_int_equal(ugpu_bo_create(f->dev, &o, &k), -ENOSPC);
	check(f);
	assert_int_equal(stats_of(f).evictions, st.evictions);
	assert_int_equal(stats_of(f).moves, st.moves);
	assert_int_equal(bo_where(d), V);
	assert_int_equal(bo_where(i), V);

	expect_pat(a, 1);
	expect_pat(b, 2);
	expect_pat(c, 3);
	expect_pat(d, 4);
	put(f, a);
	put(f, b);
	put(f, c);
	put(f, d);
	put(f, e);
	put(f, g);
	put(f, h);
	put(f, i);
	put(f, j);
}

/* BOs that may only live in VRAM are never eviction victims. */
static void test_evict_vram_only_stay(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *v[4], *x, *y = NULL;
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = 4096, .placements = { V } };

	mk_n(f, v, 4, 256 * KiB, 0, V, N, 20);
	assert_int_equal(ugpu_bo_create(f->dev, &o, &y), -ENOSPC);
	check(f);
	x = mk(f, 4096, 0, V, S, "x");
	assert_int_equal(bo_where(x), S);
	assert_int_equal(stats_of(f).evictions, 0);
	put_n(f, v, 4, 20);
	put(f, x);
}

/*
 * BO_KERNEL_SPECULATIVE (mm/bo.h: the SVM stream prefetcher's VRAM): with VRAM full of unpinned BOs it gets no VRAM and evicts nothing
 * (-ENOSPC, or its next placement); the same driver BO without the flag
 * evicts one. The flag is the driver's: a program's BO cannot have it.
 */
static void test_kernel_no_evict(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *v[4], *x = NULL;
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = 4096, .placements = { V } };

	mk_n(f, v, 4, 256 * KiB, 0, V, S, 20); /* evictable */
	assert_int_equal(bo_create_kernel(f->dev, &o, BO_KERNEL_SPECULATIVE, &x), -ENOSPC);
	assert_null(x);
	check(f);
	assert_int_equal(stats_of(f).evictions, 0);
	o.placements[1] = S;
	assert_int_equal(bo_create_kernel(f->dev, &o, BO_KERNEL_SPECULATIVE, &x), 0);
	assert_int_equal(bo_where(x), S);
	assert_int_equal(stats_of(f).evictions, 0);
	put(f, x);
	o.placements[1] = N;
	assert_int_equal(bo_create_kernel(f->dev, &o, 0, &x), 0);
	assert_int_equal(bo_where(x), V);
	assert_int_equal(stats_of(f).evictions, 1);
	put(f, x);
	put_n(f, v, 4, 20);
}

/* An eviction whose copy fails: the new BO is not made, the victim stays in
 * VRAM with its bytes, the failure is counted; the next try works. */
static void test_evict_copy_failure(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = 256 * KiB, .placements = { V } };
	unsigned long fired = fault_fired();
	struct ugpu_bo *v[4], *x = NULL;

	mk_n(f, v, 4, 256 * KiB, 0, V, S, 30);
	fault_arm(1, false, FAULT_EXEC, false);
	assert_int_equal(ugpu_bo_create(f->dev, &o, &x), -EIO);
	check(f);
	assert_int_equal(fault_fired(), fired + 1);
	assert_null(x);
	assert_int_equal(stats_of(f).copy_failures, 1);
	assert_int_equal(stats_of(f).evictions, 0);
	assert_int_equal(stats_of(f).bos, 4);
	assert_int_equal(bo_where(v[0]), V);
	assert_true(log_has("stays where it was"));
	assert_int_equal(ugpu_bo_create(f->dev, &o, &x), 0);
	check(f);
	assert_int_equal(bo_where(v[0]), S);
	put_n(f, v, 4, 30);
	put(f, x);
}

/* ---- contiguous ---- */

/*
 * With only isolated free pages, a contiguous BO does not fit while its
 * neighbours are pinned, a scattered one does; unpinned neighbours are
 * evicted until a contiguous run is free. A contiguous BO stays contiguous
 * across moves; one larger than VRAM is refused without evicting anything.
 */
static void test_contiguous(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo_opts o = {
		.size = sizeof(o), .bytes = 8192, .placements = { V }, .flags = UGPU_BO_CONTIGUOUS,
	};
	struct ugpu_bo **fill_v, *x = NULL, *sc, *fb, *big;
	unsigned int nf, i;

	fill_v = fragment(f, &nf, 0, S);
	assert_int_equal(ugpu_bo_create(f->dev, &o, &x), -ENOSPC);
	check(f);
	fb = mk(f, 8192, UGPU_BO_CONTIGUOUS, V, S, "fallback");
	assert_int_equal(bo_where(fb), S);
	sc = mk(f, 64 * KiB, 0, V, N, "scattered");
	assert_int_equal(nblocks(sc), 16);
	assert_false(is_contiguous(sc));
	fill(f, sc, 40);
	put(f, sc);

	/* Unpinned, the fillers can make room. */
	for (i = 0; i < nf; i++)
		if (fill_v[i]) {
			assert_int_equal(ugpu_bo_unpin(fill_v[i]), 0);
			check(f);
		}
	big = mk(f, 64 * KiB, UGPU_BO_CONTIGUOUS, V, N, "contiguous");
	assert_true(is_contiguous(big));
	assert_true(stats_of(f).evictions > 0);
	fill(f, big, 41);
	assert_int_equal(ugpu_bo_migrate(fb, V), 0);
	check(f);
	assert_true(is_contiguous(fb));

	/* Larger than VRAM: refused before anything is evicted. */
	o.bytes = 2 * MiB;
	{
		uint64_t ev = stats_of(f).evictions;

		assert_int_equal(ugpu_bo_create(f->dev, &o, &x), -ENOSPC);
		check(f);
		assert_int_equal(stats_of(f).evictions, ev);
	}
	expect_pat(big, 41);
	put(f, big);
	put(f, fb);
	fragment_put(f, fill_v, nf);
}

/* ---- copy failures ---- */

/*
 * A move whose Nth copy fails, each way the engine can fail (refused,
 * failed, hung): -EIO, the BO where it was with its bytes, the destination
 * freed (the checker and the DMA count say so), the failure counted, the
 * engine reset so that the next move works. A pin that has to move fails
 * the same way and does not pin.
 */
static void test_move_copy_failure(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo = mk(f, 28 * KiB, 0, V, S, "victim"); /* three blocks: three copies */
	unsigned long fired0 = fault_fired();
	struct ugpu_device_mem st;
	unsigned int kind, dir;

	fill(f, bo, 50);
	for (kind = 0; kind < FAULT_NKINDS; kind++) {
		for (dir = 0; dir < 2; dir++) {
			enum ugpu_placement from = dir ? S : V, to = dir ? V : S;

			log_clear();
			st = stats_of(f);
			fault_arm(2, false, (enum fault_kind)kind, false);
			assert_int_equal(ugpu_bo_migrate(bo, to), -EIO);
			check(f);
			assert_int_equal(fault_fired() - fired0, kind * 2 + dir + 1);
			assert_int_equal(info_of(bo).placement, from);
			assert_int_equal(stats_of(f).copy_failures, st.copy_failures + 1);
			assert_int_equal(stats_of(f).moves, st.moves);
			assert_int_equal(stats_of(f).vram_used, st.vram_used);
			assert_int_equal(stats_of(f).system_bytes, st.system_bytes);
			assert_true(log_has("stays where it was"));
			expect_pat(bo, 50);
			assert_int_equal(ugpu_bo_migrate(bo, to), 0);
			check(f);
			expect_pat(bo, 50);
		}
	}
	/* Every copy failing: every try fails, until the fault goes. */
	fault_arm(1, true, FAULT_EXEC, false);
	assert_int_equal(ugpu_bo_migrate(bo, S), -EIO);
	assert_int_equal(ugpu_bo_migrate(bo, S), -EIO);
	check(f);
	fault_clear();
	assert_int_equal(ugpu_bo_migrate(bo, S), 0);
	check(f);

	/* Pin must move it back to VRAM: fails, not pinned. */
	fault_arm(1, false, FAULT_SUBMIT, false);
	assert_int_equal(ugpu_bo_pin(bo), -EIO);
	check(f);
	assert_int_equal(info_of(bo).pin_count, 0);
	assert_int_equal(info_of(bo).placement, S);
	expect_pat(bo, 50);
	put(f, bo);
}

/* ---- destroy ---- */

/* The last put frees whatever backs the BO, wherever it is. */
static void test_destroy_each_placement(void **state)
{
	struct fx *f = *state;
	struct ugpu_device_mem st0 = stats_of(f), st;
	struct ugpu_bo *v = mk(f, 64 * KiB, 0, V, S, "vram");
	struct ugpu_bo *s = mk(f, 64 * KiB, 0, S, N, "system");
	struct ugpu_bo *p = mk(f, 64 * KiB, UGPU_BO_PINNED, V, N, "pinned");
	struct ugpu_bo *r = mk(f, 4096, 0, V, S, "ref");
	struct pm_run run = { 0 };
	bool prepared;

	put(f, v);
	assert_int_equal(stats_of(f).vram_used, st0.vram_used + 64 * KiB + 4096);
	put(f, s);
	assert_int_equal(stats_of(f).system_bytes, 0);
	assert_int_equal(ugpu_bo_pin(p), 0);
	put(f, p); /* pins die with it */
	assert_int_equal(stats_of(f).vram_used, st0.vram_used + 4096);

	/* Another reference keeps it. */
	ugpu_bo_get(r);
	put(f, r);
	assert_int_equal(info_of(r).bytes, 4096);
	put(f, r);
	st = stats_of(f);
	assert_int_equal(st.bos, 0);
	assert_int_equal(st.vram_used, st0.vram_used);

	/* With a prepared backup: the backup goes too. */
	p = mk(f, 64 * KiB, UGPU_BO_PINNED, V, N, "prepared");
	assert_int_equal(do_prepare(f, &run), 0);
	assert_true(info_of(p).has_backup);
	assert_int_equal(stats_of(f).backup_bytes, 64 * KiB + f->blitters * FAKE_RING_BYTES);
	put(f, p);
	assert_int_equal(stats_of(f).backup_bytes, f->blitters * FAKE_RING_BYTES);
	assert_int_equal(do_cancel(f, &prepared), 0);
	assert_true(prepared);
	assert_int_equal(stats_of(f).backup_bytes, 0);

	/* While suspended: its VRAM and its backup (the only copy) go. */
	p = mk(f, 64 * KiB, UGPU_BO_PINNED, V, N, "suspended");
	s = mk(f, 64 * KiB, 0, S, N, "system");
	memset(&run, 0, sizeof(run));
	assert_int_equal(do_suspend(f, &run), 0);
	put(f, p);
	put(f, s);
	assert_int_equal(stats_of(f).backup_bytes, f->blitters * FAKE_RING_BYTES);
	assert_int_equal(do_resume(f, &run), 0);
	assert_int_equal(run.discarded, 0);
	st = stats_of(f);
	assert_int_equal(st.bos, 0);
	assert_int_equal(st.vram_used, st0.vram_used);
	assert_int_equal(st.backup_bytes, 0);
}

/* ---- statistics ---- */

static void test_mem_stats(void **state)
{
	struct fx *f = *state;
	struct ugpu_device_mem st = stats_of(f), part;
	struct ugpu_bo *a, *b, *c, *d;
	struct pm_run run = { 0 };
	bool prepared;

	assert_int_equal(st.vram_size, 1 * MiB + 2 * FAKE_RING_BYTES);
	assert_int_equal(st.vram_used, 2 * FAKE_RING_BYTES);
	assert_int_equal(st.vram_kernel, 2 * FAKE_RING_BYTES); /* the rings */
	assert_int_equal(st.vram_bos + st.bos + st.system_bytes + st.backup_bytes, 0);

	a = mk(f, 64 * KiB, 0, V, N, "a");
	b = mk(f, 32 * KiB, UGPU_BO_PINNED, V, S, "b");
	c = mk(f, 16 * KiB, 0, S, N, "c");
	d = mk(f, 8 * KiB, 0, V, S, "d");
	st = stats_of(f);
	assert_int_equal(st.bos, 4);
	assert_int_equal(st.bos_vram, 3);
	assert_int_equal(st.bos_system, 1);
	assert_int_equal(st.bos_lost, 0);
	assert_int_equal(st.vram_bos, 104 * KiB);
	assert_int_equal(st.vram_used, 104 * KiB + 2 * FAKE_RING_BYTES);
	assert_int_equal(st.vram_free, 1 * MiB - 104 * KiB);
	assert_int_equal(st.system_bytes, 16 * KiB);

	assert_int_equal(ugpu_bo_migrate(d, S), 0);
	st = stats_of(f);
	assert_int_equal(st.moves, 1);
	assert_int_equal(st.moved_bytes, 8 * KiB);
	assert_int_equal(st.bos_system, 2);
	assert_int_equal(st.system_bytes, 24 * KiB);
	fault_arm(1, false, FAULT_HANG, false);
	assert_int_equal(ugpu_bo_migrate(d, V), -EIO);
	assert_int_equal(stats_of(f).copy_failures, 1);
	check(f);

	/* Backups: a and b (in VRAM, not evictable) and the rings. */
	assert_int_equal(do_prepare(f, &run), 0);
	assert_int_equal(stats_of(f).backup_bytes, 96 * KiB + 2 * FAKE_RING_BYTES);
	assert_int_equal(do_cancel(f, &prepared), 0);
	assert_int_equal(stats_of(f).backup_bytes, 0);

	/* The size rule: only what the caller's struct holds is written. */
	memset(&part, 0xab, sizeof(part));
	part.size = offsetof(struct ugpu_device_mem, vram_used);
	assert_int_equal(ugpu_device_mem_stats(f->dev, &part), 0);
	assert_int_equal(part.vram_size, st.vram_size);
	assert_int_equal(part.vram_used, 0xababababababababull);
	part.size = 0;
	assert_int_equal(ugpu_device_mem_stats(f->dev, &part), -EINVAL);
	assert_int_equal(ugpu_device_mem_stats(NULL, &st), -EINVAL);
	assert_int_equal(ugpu_device_mem_stats(f->dev, NULL), -EINVAL);
	put(f, a);
	put(f, b);
	put(f, c);
	put(f, d);
}

/* ---- host suspend ---- */

static bool has_backup(struct ugpu_bo *bo)
{
	return info_of(bo).has_backup;
}

/* The kinds that keep VRAM and a backup over a suspend (not evictable, not
 * NO_RESTORE), and those of them saved early, by CPU. */
#define KINDS_BACKED                                                                      \
	(KIND(K_KERNEL) | KIND(K_USER_PINNED) | KIND(K_LATE) | KIND(K_VRAM_ONLY) |       \
	 KIND(K_MAPPED_PINNED))
#define KINDS_EVICTABLE (KIND(K_UNPINNED) | KIND(K_MAPPED_UNPINNED))

/* After a resume: NO_RESTORE lost its contents (VRAM was poisoned), was
 * counted as discarded once, and everything else is intact. */
static void expect_after_resume(struct obj *o)
{
	uint8_t *buf = malloc(o[K_NORESTORE].size);

	assert_non_null(buf);
	pop_expect(o, KIND(K_NORESTORE));
	assert_int_equal(info_of(o[K_NORESTORE].bo).discarded, 1);
	assert_int_equal(ugpu_bo_read(o[K_NORESTORE].bo, 0, buf, o[K_NORESTORE].size), 0);
	assert_true(all_poison(buf, o[K_NORESTORE].size));
	free(buf);
}

/* While suspended: VRAM cannot be reached, system memory can. */
static void expect_suspended(struct fx *f, struct obj *o)
{
	struct ugpu_bo_opts vo = { .size = sizeof(vo), .bytes = 4096, .placements = { V } };
	struct ugpu_bo *x = NULL;
	struct pm_run r = { 0 };
	uint8_t b = 0;
	bool prepared;

	assert_int_equal(pm_state(f), UGPU_PM_SUSPENDED);
	assert_int_equal(ugpu_bo_read(o[K_VRAM_ONLY].bo, 0, &b, 1), -EBUSY);
	assert_int_equal(ugpu_bo_write(o[K_USER_PINNED].bo, 0, &b, 1), -EBUSY);
	expect_pat(o[K_SYSTEM_PINNED].bo, o[K_SYSTEM_PINNED].seed);
	assert_int_equal(ugpu_bo_create(f->dev, &vo, &x), -EBUSY);
	x = mk(f, 4096, 0, V, S, "while-suspended");
	assert_int_equal(bo_where(x), S);
	assert_int_equal(ugpu_bo_migrate(x, V), -EBUSY);
	assert_int_equal(ugpu_bo_pin(x), -EBUSY); /* would move it to VRAM */
	put(f, x);
	/* Unpinned while suspended, a BO keeps its backup (the only copy). */
	assert_int_equal(ugpu_bo_unpin(o[K_USER_PINNED].bo), 0);
	check(f);
	assert_true(has_backup(o[K_USER_PINNED].bo));
	assert_int_equal(ugpu_bo_pin(o[K_USER_PINNED].bo), 0);
	check(f);
	assert_int_equal(do_prepare(f, &r), -EBUSY);
	assert_int_equal(do_suspend(f, &r), -EBUSY);
	assert_int_equal(do_cancel(f, &prepared), -EBUSY);
}

/* prepare (evict, back up), suspend (save late then early, power off),
 * resume (early by CPU, late by the blitters), with the counts of each
 * phase, a check after each step and the bytes after. */
static void test_suspend_prepared(void **state)
{
	struct fx *f = *state;
	struct obj o[POP_N];
	struct pm_run r = { 0 };
	unsigned int i;

	pop_new(f, o, pop_maps(f));
	assert_int_equal(do_prepare(f, &r), 0);
	assert_int_equal(pm_state(f), UGPU_PM_PREPARED);
	assert_int_equal(r.evict.bos, 2);
	assert_int_equal(r.evict.bytes, o[K_UNPINNED].size + o[K_MAPPED_UNPINNED].size);
	assert_int_equal(r.backup.bos, 5 + f->blitters);
	for (i = 0; i < POP_N; i++) {
		assert_int_equal(has_backup(o[i].bo), !!(KINDS_BACKED & KIND(i)));
		assert_int_equal(bo_where(o[i].bo),
				 (KINDS_EVICTABLE | KIND(K_SYSTEM_PINNED)) & KIND(i) ? S : V);
	}
	pop_expect(o, 0);

	assert_int_equal(do_suspend(f, &r), 0);
	assert_int_equal(r.missing.bos, 0);
	assert_int_equal(r.save_late.bos, 4);
	assert_int_equal(r.save_early.bos, 1 + f->blitters);
	expect_suspended(f, o);

	assert_int_equal(do_resume(f, &r), 0);
	assert_int_equal(pm_state(f), UGPU_PM_ACTIVE);
	assert_int_equal(r.restore_early.bos, 1 + f->blitters);
	assert_int_equal(r.restore_late.bos, 4);
	assert_false(r.cpu_fallback);
	assert_int_equal(r.discarded, 1);
	assert_int_equal(stats_of(f).backup_bytes, 0);
	expect_after_resume(o);
	assert_int_equal(do_resume(f, &r), -EBUSY);
	pop_put(f, o);
}

/* Without prepare the window backs up everything itself. */
static void test_suspend_unprepared(void **state)
{
	struct fx *f = *state;
	struct obj o[POP_N];
	struct pm_run r = { 0 };

	pop_new(f, o, pop_maps(f));
	assert_int_equal(do_suspend(f, &r), 0);
	assert_int_equal(r.missing.bos, 7 + f->blitters);
	assert_int_equal(r.save_late.bos, 6);
	assert_int_equal(r.save_early.bos, 1 + f->blitters);
	expect_suspended(f, o);
	assert_int_equal(do_resume(f, &r), 0);
	assert_int_equal(r.restore_late.bos, 6);
	assert_int_equal(r.discarded, 1);
	assert_int_equal(bo_where(o[K_UNPINNED].bo), V);
	expect_after_resume(o);
	pop_put(f, o);
}

/* Each way a suspend can fail leaves the BOs intact, in VRAM, and the state
 * where it was; prepared backups survive a failed window, others do not;
 * a failed blitter restore is redone by the CPU. */
static void test_suspend_failures(void **state)
{
	struct fx *f = *state;
	unsigned long fired0 = fault_fired();
	struct obj o[POP_N];
	struct pm_run r;
	bool prepared;
	unsigned int i;

	pop_new(f, o, false);

	/* Prepare: an eviction copy fails. */
	memset(&r, 0, sizeof(r));
	fault_arm(1, false, FAULT_EXEC, false);
	assert_int_equal(do_prepare(f, &r), -EIO);
	assert_int_equal(pm_state(f), UGPU_PM_ACTIVE);
	assert_int_equal(bo_where(o[K_UNPINNED].bo), V);
	assert_int_equal(stats_of(f).backup_bytes, 0);
	pop_expect(o, 0);

	/* Prepare: a backup copy fails (two evictions, then the first backup). */
	memset(&r, 0, sizeof(r));
	fault_arm(3, false, FAULT_SUBMIT, false);
	assert_int_equal(do_prepare(f, &r), -EIO);
	assert_int_equal(fault_fired() - fired0, 2);
	assert_int_equal(pm_state(f), UGPU_PM_ACTIVE);
	assert_int_equal(stats_of(f).backup_bytes, 0);
	pop_expect(o, 0);

	/* Prepare: the second backup cannot be allocated. */
	memset(&r, 0, sizeof(r));
	bo_mgr_inject_backup_failure(f->dev, 2, false);
	assert_int_equal(do_prepare(f, &r), -ENOMEM);
	assert_true(log_has("injected allocation failure"));
	assert_int_equal(pm_state(f), UGPU_PM_ACTIVE);
	assert_int_equal(stats_of(f).backup_bytes, 0);

	/* Suspend without prepare: a backup cannot be allocated. */
	for (i = 0; i < POP_N; i++)
		if (KINDS_EVICTABLE & KIND(i))
			assert_int_equal(ugpu_bo_migrate(o[i].bo, V), 0);
	check(f);
	bo_mgr_inject_backup_failure(f->dev, 3, false);
	assert_int_equal(do_suspend(f, &r), -ENOMEM);
	assert_int_equal(pm_state(f), UGPU_PM_ACTIVE);
	assert_int_equal(stats_of(f).backup_bytes, 0);
	pop_expect(o, 0);

	/* Suspend without prepare: the blitter's save fails. */
	fault_arm(2, false, FAULT_EXEC, false);
	assert_int_equal(do_suspend(f, &r), -EIO);
	assert_int_equal(pm_state(f), UGPU_PM_ACTIVE);
	assert_int_equal(stats_of(f).backup_bytes, 0);
	pop_expect(o, 0);

	/* Prepared, then the save hangs: back to PREPARED with the prepared
	 * backups; the next suspend works. */
	memset(&r, 0, sizeof(r));
	assert_int_equal(do_prepare(f, &r), 0);
	fault_arm(1, false, FAULT_HANG, false);
	assert_int_equal(do_suspend(f, &r), -ETIMEDOUT);
	assert_int_equal(pm_state(f), UGPU_PM_PREPARED);
	for (i = 0; i < POP_N; i++)
		assert_int_equal(has_backup(o[i].bo), !!(KINDS_BACKED & KIND(i)));
	pop_expect(o, 0);

	/* An unpin while prepared drops that backup; the window makes it again. */
	assert_int_equal(ugpu_bo_unpin(o[K_USER_PINNED].bo), 0);
	check(f);
	assert_false(has_backup(o[K_USER_PINNED].bo));
	memset(&r, 0, sizeof(r));
	assert_int_equal(do_suspend(f, &r), 0);
	assert_int_equal(r.missing.bos, 1);

	/* Resume: the blitter restore fails; the CPU restores instead. */
	fault_arm(1, false, FAULT_SUBMIT, false);
	assert_int_equal(do_resume(f, &r), 0);
	assert_true(r.cpu_fallback);
	expect_after_resume(o);
	assert_int_equal(ugpu_bo_pin(o[K_USER_PINNED].bo), 0);

	/* Cancel: from ACTIVE (nothing to do), from PREPARED; the states a
	 * transition may not start from. */
	assert_int_equal(do_cancel(f, &prepared), 0);
	assert_false(prepared);
	assert_int_equal(do_prepare(f, &r), 0);
	assert_int_equal(do_prepare(f, &r), -EBUSY);
	assert_int_equal(do_resume(f, &r), -EBUSY);
	assert_int_equal(do_cancel(f, &prepared), 0);
	assert_true(prepared);
	assert_int_equal(pm_state(f), UGPU_PM_ACTIVE);
	assert_int_equal(stats_of(f).backup_bytes, 0);
	pop_put(f, o);
}

/* ---- removal ---- */

static uint64_t pop_bytes(struct obj *o, unsigned int kinds_mask)
{
	uint64_t n = 0;
	int i;

	for (i = 0; i < POP_N; i++)
		if (kinds_mask & KIND(i))
			n += o[i].size;
	return n;
}

#define KINDS_IN_VRAM (((1u << POP_N) - 1) & ~KIND(K_SYSTEM_PINNED))

/* After a removal: VRAM is gone for good, system memory works. */
static void expect_removed(struct fx *f)
{
	struct ugpu_bo_opts vo = { .size = sizeof(vo), .bytes = 4096, .placements = { V } };
	struct ugpu_device_mem st = stats_of(f);
	struct ugpu_bo *x = NULL;

	assert_int_equal(st.vram_used + st.vram_free, 0);
	assert_int_equal(ugpu_bo_create(f->dev, &vo, &x), -ENODEV);
	x = mk(f, 4096, 0, V, S, "after");
	assert_int_equal(bo_where(x), S);
	fill(f, x, 77);
	assert_int_equal(ugpu_bo_migrate(x, V), -ENODEV);
	assert_int_equal(ugpu_bo_migrate(x, S), 0);
	expect_pat(x, 77);
	put(f, x);
}

/* Orderly: every program BO moved to system memory with its bytes (pinned
 * ones too); the rings are the driver's (counted, freed by their owner);
 * afterwards a BO that preferred VRAM prefers system memory. */
static void test_removal_orderly(void **state)
{
	struct fx *f = *state;
	struct obj o[POP_N];
	struct unplug_counts c;
	bool surprise;
	size_t n = 1;
	int i;

	pop_new(f, o, pop_maps(f));
	c = do_remove(f, false, &surprise);
	assert_false(surprise);
	assert_int_equal(c.bos_moved, 8);
	assert_int_equal(c.bytes_moved, pop_bytes(o, KINDS_IN_VRAM));
	assert_int_equal(c.bos_adopted + c.bos_lost + c.bytes_lost, 0);
	assert_int_equal(c.kernel_bos, f->blitters);
	for (i = 0; i < POP_N; i++)
		assert_int_equal(bo_where(o[i].bo), S);
	pop_expect(o, 0);
	assert_int_equal(ugpu_device_lost_bos(f->dev, NULL, 0, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(stats_of(f).bos_system, POP_N);
	/* Pinning keeps it in system memory now. */
	assert_int_equal(ugpu_bo_pin(o[K_UNPINNED].bo), 0);
	check(f);
	assert_int_equal(bo_where(o[K_UNPINNED].bo), S);
	assert_int_equal(ugpu_bo_unpin(o[K_UNPINNED].bo), 0);
	expect_removed(f);
	pop_expect(o, 0);
	pop_put(f, o);
}

/* Surprise: nothing can be copied; what was only in VRAM is lost, reported
 * and counted; system memory is kept. */
static void test_removal_surprise(void **state)
{
	struct fx *f = *state;
	struct obj o[POP_N];
	struct ugpu_bo *lost[POP_N];
	struct unplug_counts c;
	uint8_t b;
	size_t n = 0, k;
	bool surprise;
	int i;

	pop_new(f, o, false);
	c = do_remove(f, true, &surprise);
	assert_true(surprise);
	assert_int_equal(c.bos_lost, 8);
	assert_int_equal(c.bytes_lost, pop_bytes(o, KINDS_IN_VRAM));
	assert_int_equal(c.bos_moved + c.bos_adopted, 0);
	assert_int_equal(c.kernel_bos, f->blitters);
	assert_true(log_has("LOST"));
	for (i = 0; i < POP_N; i++) {
		struct ugpu_bo_info info = info_of(o[i].bo);

		assert_int_equal(info.lost, i != K_SYSTEM_PINNED);
		if (!info.lost)
			continue;
		assert_int_equal(info.placement, N);
		assert_int_equal(ugpu_bo_read(o[i].bo, 0, &b, 1), -ENODATA);
		assert_int_equal(ugpu_bo_write(o[i].bo, 0, &b, 1), -ENODATA);
		/* Pinned: it may not move; else: no VRAM to move to. */
		assert_int_equal(ugpu_bo_migrate(o[i].bo, V), info.pin_count ? -EBUSY : -ENODEV);
	}
	expect_pat(o[K_SYSTEM_PINNED].bo, o[K_SYSTEM_PINNED].seed);
	assert_int_equal(stats_of(f).bos_lost, 8);
	assert_int_equal(ugpu_bo_migrate(o[K_UNPINNED].bo, S), -ENODATA);
	/* Lost: nothing to keep, pinned already or not (bo.h: -ENODATA first). */
	assert_int_equal(ugpu_bo_pin(o[K_UNPINNED].bo), -ENODATA);
	assert_int_equal(ugpu_bo_pin(o[K_KERNEL].bo), -ENODATA);
	assert_int_equal(ugpu_bo_unpin(o[K_KERNEL].bo), 0); /* its own pin still goes */
	check(f);

	/* The public list of lost BOs: each with a reference. */
	assert_int_equal(ugpu_device_lost_bos(f->dev, NULL, 0, &n), 0);
	assert_int_equal(n, 8);
	assert_int_equal(ugpu_device_lost_bos(f->dev, NULL, 1, &n), -EINVAL);
	assert_int_equal(ugpu_device_lost_bos(f->dev, lost, POP_N, &n), 0);
	assert_int_equal(n, 8);
	for (k = 0; k < n; k++) {
		assert_true(info_of(lost[k]).lost);
		put(f, lost[k]);
	}
	expect_removed(f);
	pop_put(f, o); /* destroying lost BOs */
}

/* Orderly, but one copy fails while the device still answers: that BO is
 * reported lost, the others are moved. */
static void test_removal_copy_failure(void **state)
{
	struct fx *f = *state;
	struct obj o[POP_N];
	struct unplug_counts c;
	bool surprise;

	pop_new(f, o, false);
	fault_arm(1, false, FAULT_EXEC, false); /* the first BO's (rings are not copied) */
	c = do_remove(f, false, &surprise);
	assert_false(surprise);
	assert_int_equal(c.bos_lost, 1);
	assert_int_equal(c.bytes_lost, o[K_KERNEL].size);
	assert_int_equal(c.bos_moved, 7);
	assert_true(info_of(o[K_KERNEL].bo).lost);
	assert_true(log_has("could not be moved"));
	assert_int_equal(stats_of(f).copy_failures, 1);
	pop_expect(o, KIND(K_KERNEL));
	pop_put(f, o);
}

/* Orderly, and the device stops answering at the second BO: the removal
 * turns into a surprise and everything still in VRAM is lost. */
static void test_removal_device_stops(void **state)
{
	struct fx *f = *state;
	struct obj o[POP_N];
	struct unplug_counts c;
	bool surprise;

	pop_new(f, o, false);
	fault_arm(2, false, FAULT_EXEC, true);
	c = do_remove(f, false, &surprise);
	assert_true(surprise);
	assert_int_equal(c.bos_moved, 1);
	assert_int_equal(c.bos_lost, 7);
	assert_true(log_has("stopped answering"));
	assert_int_equal(bo_where(o[K_KERNEL].bo), S);
	pop_expect(o, KINDS_IN_VRAM & ~KIND(K_KERNEL));
	pop_put(f, o);
}

/* Host-suspended (VRAM powered off): the valid backups become the BOs'
 * system memory; NO_RESTORE had none and is lost. */
static void removal_while_suspended(struct fx *f, bool surprise)
{
	struct obj o[POP_N];
	struct unplug_counts c;
	struct pm_run r = { 0 };

	pop_new(f, o, pop_maps(f));
	assert_int_equal(do_prepare(f, &r), 0);
	assert_int_equal(do_suspend(f, &r), 0);
	c = do_remove(f, surprise, NULL);
	assert_int_equal(c.bos_adopted, 5);
	assert_int_equal(c.bos_lost, 1);
	assert_int_equal(c.bytes_lost, o[K_NORESTORE].size);
	assert_int_equal(c.bos_moved, 0);
	assert_int_equal(c.kernel_bos, f->blitters);
	assert_true(log_has("kept from its suspend backup"));
	assert_true(info_of(o[K_NORESTORE].bo).lost);
	assert_int_equal(pm_state(f), UGPU_PM_ACTIVE);
	pop_expect(o, KIND(K_NORESTORE));
	expect_removed(f);
	pop_put(f, o);
}

static void test_removal_suspended(void **state)
{
	removal_while_suspended(*state, false);
}

static void test_removal_suspended_surprise(void **state)
{
	removal_while_suspended(*state, true);
}

/* Prepared but not suspended: the prepared backups are not known to hold
 * the latest bytes (the program may have written since), so a surprise
 * does not adopt them. */
static void test_removal_prepared_surprise(void **state)
{
	struct fx *f = *state;
	struct obj o[POP_N];
	struct unplug_counts c;
	struct pm_run r = { 0 };

	pop_new(f, o, false);
	assert_int_equal(do_prepare(f, &r), 0);
	c = do_remove(f, true, NULL);
	assert_int_equal(c.bos_adopted, 0);
	assert_int_equal(c.bos_lost, 6);
	pop_expect(o, KINDS_IN_VRAM & ~KINDS_EVICTABLE);
	assert_int_equal(stats_of(f).backup_bytes, 0);
	pop_put(f, o);
}

/* ---- CPU mappings, close, the CPU engine alone ---- */

/* A mapping follows its BO across moves, both ways, and survives an unmap
 * and a destroy while mapped. */
static void test_cpu_map_follows_moves(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *a = mk(f, 64 * KiB, 0, V, S, "mapped");
	uint8_t *p, *p2;

	if (!maps_work(a)) {
		put(f, a);
		skip();
	}
	assert_int_equal(ugpu_bo_map(a, (void **)&p), 0);
	assert_int_equal(ugpu_bo_map(a, (void **)&p2), 0);
	assert_ptr_equal(p, p2);
	assert_true(info_of(a).cpu_mapped);
	pat_fill(p, 64 * KiB, 60);
	check(f);
	expect_pat(a, 60);
	assert_int_equal(ugpu_bo_migrate(a, S), 0);
	check(f);
	assert_int_equal(pat_check(p, 64 * KiB, 60), -1);
	pat_fill(p, 64 * KiB, 61);
	expect_pat(a, 61);
	assert_int_equal(ugpu_bo_migrate(a, V), 0);
	check(f);
	assert_int_equal(pat_check(p, 64 * KiB, 61), -1);
	assert_int_equal(ugpu_bo_unmap(a), 0);
	assert_int_equal(ugpu_bo_unmap(a), -EINVAL);
	assert_false(info_of(a).cpu_mapped);
	check(f);
	assert_int_equal(ugpu_bo_map(a, (void **)&p), 0);
	assert_int_equal(pat_check(p, 64 * KiB, 61), -1);
	put(f, a); /* mapped */
}

/* Close with BOs alive: their memory is released at once, every call on a
 * handle answers -ENODEV, the last put frees the device object. */
static void test_close_with_live_bos(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *a = mk(f, 64 * KiB, 0, V, S, "a");
	struct ugpu_bo *b = mk(f, 64 * KiB, UGPU_BO_PINNED, S, N, "b");
	struct ugpu_bo_info info = { .size = sizeof(info) };
	void *p;
	uint8_t x = 0;

	fill(f, a, 1);
	fill(f, b, 2);
	ugpu_device_close(f->dev);
	f->closed = true;
	assert_int_equal(bo_mgr_check(f->dev, true), 0);
	assert_int_equal(f->fv->dma_bytes, 0);
	assert_int_equal(f->fv->mmaps, 0);
	assert_int_equal(ugpu_bo_read(a, 0, &x, 1), -ENODEV);
	assert_int_equal(ugpu_bo_write(b, 0, &x, 1), -ENODEV);
	assert_int_equal(ugpu_bo_pin(a), -ENODEV);
	assert_int_equal(ugpu_bo_unpin(b), -ENODEV);
	assert_int_equal(ugpu_bo_migrate(a, S), -ENODEV);
	assert_int_equal(ugpu_bo_map(a, &p), -ENODEV);
	assert_int_equal(ugpu_bo_unmap(a), -ENODEV);
	assert_int_equal(ugpu_bo_query(a, &info), -ENODEV);
	ugpu_bo_put(a);
	assert_int_equal(bo_mgr_check(f->dev, true), 0);
	ugpu_bo_put(b); /* the last reference: the device object goes */
}

/* No blitter: every move, backup and restore is done by the CPU engine. */
static void test_cpu_engine_only(void **state)
{
	struct fx *f = *state;
	struct obj o[POP_N];
	struct pm_run r = { 0 };
	struct unplug_counts c;

	assert_null(f->dev->copy[0]);
	pop_new(f, o, false);
	assert_int_equal(ugpu_bo_migrate(o[K_UNPINNED].bo, S), 0);
	check(f);
	assert_int_equal(ugpu_bo_migrate(o[K_UNPINNED].bo, V), 0);
	check(f);
	assert_int_equal(do_prepare(f, &r), 0);
	assert_int_equal(do_suspend(f, &r), 0);
	assert_int_equal(do_resume(f, &r), 0);
	assert_int_equal(r.restore_late.bos, 4);
	expect_after_resume(o);
	c = do_remove(f, false, NULL);
	assert_int_equal(c.bos_moved, 6); /* prepare evicted the other two */
	assert_int_equal(c.kernel_bos, 0);
	pop_expect(o, KIND(K_NORESTORE));
	pop_put(f, o);
}

/* ---- the randomised sequence ---- */

#define R_BOS 20
#define R_MAX_BYTES (64 * KiB)
#define R_STEPS 4000
#define R_SECONDS 10 /* a bound: a slow build stops early and says so */

static uint64_t g_seed;

/* What the program knows about one BO: the model's side. */
struct rbo {
	struct ugpu_bo *bo;
	uint64_t size;
	uint32_t flags;
	enum ugpu_placement first; /* where a pin puts it (SYSTEM after an evacuation) */
	bool allow_v, allow_s;
	uint32_t pins;
	bool lost;
	uint8_t *shadow;
	enum ugpu_placement was; /* its placement before this step */
};

/* Which placement changes a step may make to BOs it does not name. */
enum r_moves {
	R_MOVES_NONE,
	R_MOVES_EVICT, /* unpinned VRAM BOs that may live in SYSTEM go there */
	R_MOVES_ANY, /* a removal: the step checks them itself */
};

struct rnd {
	struct fx *f;
	struct rng rng;
	struct rbo b[R_BOS];
	unsigned int n;
	enum ugpu_pm_state pm;
	bool removed;
	int ret; /* the last call's, for failure messages */
	unsigned long ops[13], ops_ok[13]; /* per kind of step (the summary line) */
	uint64_t bos_seen; /* sum over steps of live BOs */
	uint8_t buf[R_MAX_BYTES + 4096];
};

static void r_fail(struct rnd *R, const char *cond)
{
	char msg[256];

	snprintf(msg, sizeof(msg), "expected %s (last call returned %d)", cond, R->ret);
	fail_check(R->f, msg);
}

#define R_EXPECT(R, cond)                  \
	do {                               \
		if (!(cond))               \
			r_fail(R, #cond);  \
	} while (0)

static const char *pl_name(enum ugpu_placement p)
{
	return p == V ? "VRAM" : p == S ? "SYSTEM" : "none";
}

static void r_where(struct rnd *R, unsigned long step, const char *op, int i)
{
	struct rbo *b = i >= 0 ? &R->b[i] : NULL;

	snprintf(R->f->where, sizeof(R->f->where),
		 "seed %" PRIu64 " step %lu: %s bo#%d (%" PRIu64 " bytes, flags 0x%x, %s, %u pins)",
		 g_seed, step, op, i, b ? b->size : 0, b ? b->flags : 0,
		 b ? pl_name(b->was) : "-", b ? b->pins : 0);
}

static int r_pick(struct rnd *R)
{
	return R->n ? (int)rng_below(&R->rng, R->n) : -1;
}

static void r_fill_random(struct rnd *R, uint64_t len)
{
	pat_fill(R->buf, len, (uint32_t)rng_next(&R->rng));
}

/* Whole contents against the shadow, unless they cannot be read now. */
static void r_verify_bytes(struct rnd *R, struct rbo *b)
{
	if (b->lost || (R->pm == UGPU_PM_SUSPENDED && bo_where(b->bo) == V))
		return;
	R->ret = ugpu_bo_read(b->bo, 0, R->buf, b->size);
	R_EXPECT(R, R->ret == 0);
	R_EXPECT(R, memcmp(R->buf, b->shadow, b->size) == 0);
}

/* The result of a call that had to move a BO, given the faults it fired. */
static void r_expect_move(struct rnd *R, unsigned long fired, uint64_t cf_delta, bool may_enospc)
{
	if (fired) {
		R_EXPECT(R, R->ret == -EIO);
		R_EXPECT(R, cf_delta == 1);
	} else {
		R_EXPECT(R, cf_delta == 0);
		R_EXPECT(R, R->ret == 0 || (may_enospc && R->ret == -ENOSPC));
	}
}

static bool backup_fault_armed(struct fx *f)
{
	struct bo_mgr *m = f->dev->bo_mgr;
	bool on;

	pthread_mutex_lock(&m->lock);
	on = m->fail_backup_at != 0;
	pthread_mutex_unlock(&m->lock);
	return on;
}

static enum r_moves r_create(struct rnd *R)
{
	static const enum ugpu_placement lists[][2] = { { N, N }, { V, N }, { S, N }, { V, S }, { S, V } };
	unsigned int l = (unsigned int)rng_below(&R->rng, 5);
	struct ugpu_bo_opts o = {
		.size = sizeof(o),
		.bytes = 1 + rng_below(&R->rng, R_MAX_BYTES),
		.placements = { lists[l][0], lists[l][1] },
		.name = "random",
	};
	bool invalid = rng_below(&R->rng, 16) == 0, has_s = l != 1;
	unsigned long fired = fault_fired();
	uint64_t cf = stats_of(R->f).copy_failures;
	struct ugpu_bo *bo = NULL;
	struct rbo *b;

	if (rng_below(&R->rng, 4) == 0)
		o.flags |= UGPU_BO_PINNED;
	if (rng_below(&R->rng, 4) == 0)
		o.flags |= UGPU_BO_CONTIGUOUS;
	if (rng_below(&R->rng, 8) == 0)
		o.flags |= UGPU_BO_CPU_ACCESS;
	if (rng_below(&R->rng, 6) == 0)
		o.flags |= UGPU_BO_KERNEL | (rng_below(&R->rng, 2) ? UGPU_BO_LATE_RESTORE : 0);
	else if (rng_below(&R->rng, 6) == 0)
		o.flags |= UGPU_BO_NO_RESTORE;
	if (invalid)
		o.flags |= UGPU_BO_KERNEL | UGPU_BO_LATE_RESTORE | UGPU_BO_NO_RESTORE;
	R->ret = ugpu_bo_create(R->f->dev, &o, &bo);
	check(R->f);
	fired = fault_fired() - fired;
	if (invalid) {
		R_EXPECT(R, R->ret == -EINVAL);
		return R_MOVES_NONE;
	}
	if (fired || R->ret == -EIO) {
		r_expect_move(R, fired, stats_of(R->f).copy_failures - cf, true);
		return R_MOVES_EVICT;
	}
	if (R->ret) {
		/* Only VRAM was allowed, and there is none to be had. */
		R_EXPECT(R, !has_s);
		R_EXPECT(R, R->ret == (R->pm == UGPU_PM_SUSPENDED ? -EBUSY
				      : R->removed		   ? -ENODEV
							   : -ENOSPC));
		return R_MOVES_EVICT;
	}
	b = &R->b[R->n++];
	memset(b, 0, sizeof(*b));
	b->bo = bo;
	b->size = (o.bytes + 4095) & ~4095ull;
	b->flags = o.flags;
	b->first = l == 0 ? V : lists[l][0];
	b->allow_v = l != 2;
	b->allow_s = has_s;
	b->pins = (o.flags & UGPU_BO_PINNED) ? 1 : 0;
	b->shadow = calloc(1, b->size);
	assert_non_null(b->shadow);
	b->was = bo_where(bo);
	R_EXPECT(R, b->was == (b->was == V ? V : S));
	R_EXPECT(R, b->was == V ? b->allow_v : b->allow_s);
	R_EXPECT(R, !(b->was == V && (R->pm == UGPU_PM_SUSPENDED || R->removed)));
	r_verify_bytes(R, b);
	return R_MOVES_EVICT;
}

static enum r_moves r_destroy(struct rnd *R, int i)
{
	struct rbo *b = &R->b[i];

	put(R->f, b->bo);
	free(b->shadow);
	*b = R->b[--R->n];
	R->ret = 0;
	return R_MOVES_NONE;
}

static enum r_moves r_rw(struct rnd *R, int i, bool write)
{
	struct rbo *b = &R->b[i];
	uint64_t off, len;
	int exp;

	if (rng_below(&R->rng, 4) == 0) {
		off = 0;
		len = b->size;
	} else {
		off = rng_below(&R->rng, b->size + 1);
		len = rng_below(&R->rng, b->size - off + 1);
	}
	if (rng_below(&R->rng, 32) == 0) {
		/* Past the end: refused before anything else. */
		R->ret = write ? ugpu_bo_write(b->bo, b->size - off + 1, R->buf, off + len)
			       : ugpu_bo_read(b->bo, b->size + 1 + off, R->buf, 0);
		R_EXPECT(R, R->ret == -EINVAL);
		check(R->f);
		return R_MOVES_NONE;
	}
	exp = b->lost ? -ENODATA : R->pm == UGPU_PM_SUSPENDED && b->was == V ? -EBUSY : 0;
	if (write) {
		r_fill_random(R, len);
		R->ret = ugpu_bo_write(b->bo, off, R->buf, len);
		if (!R->ret)
			memcpy(b->shadow + off, R->buf, len);
	} else {
		R->ret = ugpu_bo_read(b->bo, off, R->buf, len);
		R_EXPECT(R, R->ret || memcmp(R->buf, b->shadow + off, len) == 0);
	}
	check(R->f);
	R_EXPECT(R, R->ret == exp);
	return R_MOVES_NONE;
}

static enum r_moves r_pin(struct rnd *R, int i)
{
	struct rbo *b = &R->b[i];
	unsigned long fired = fault_fired();
	uint64_t cf = stats_of(R->f).copy_failures;

	R->ret = ugpu_bo_pin(b->bo);
	check(R->f);
	fired = fault_fired() - fired;
	if (b->lost) /* nothing to keep: before every other reason (bo.h) */
		R_EXPECT(R, R->ret == -ENODATA);
	else if (b->pins || b->was == b->first)
		R_EXPECT(R, R->ret == 0);
	else if (b->first == V && R->removed)
		R_EXPECT(R, R->ret == -ENODEV);
	else if (R->pm == UGPU_PM_SUSPENDED)
		R_EXPECT(R, R->ret == -EBUSY);
	else
		r_expect_move(R, fired, stats_of(R->f).copy_failures - cf, b->first == V);
	if (!R->ret) {
		R_EXPECT(R, bo_where(b->bo) == (b->pins ? b->was : b->first));
		b->pins++;
	}
	return b->first == V ? R_MOVES_EVICT : R_MOVES_NONE;
}

static enum r_moves r_unpin(struct rnd *R, int i)
{
	struct rbo *b = &R->b[i];

	R->ret = ugpu_bo_unpin(b->bo);
	check(R->f);
	R_EXPECT(R, R->ret == (b->pins ? 0 : -EINVAL));
	if (!R->ret)
		b->pins--;
	return R_MOVES_NONE;
}

static enum r_moves r_migrate(struct rnd *R, int i)
{
	struct rbo *b = &R->b[i];
	enum ugpu_placement to = rng_below(&R->rng, 2) ? V : S;
	unsigned long fired = fault_fired();
	uint64_t cf = stats_of(R->f).copy_failures;
	bool allowed;

	if (rng_below(&R->rng, 32) == 0)
		to = rng_below(&R->rng, 2) ? N : (enum ugpu_placement)3;
	allowed = (to == V && b->allow_v) || (to == S && b->allow_s);
	R->ret = ugpu_bo_migrate(b->bo, to);
	check(R->f);
	fired = fault_fired() - fired;
	if (!allowed)
		R_EXPECT(R, R->ret == -EINVAL);
	else if (b->pins && b->was != to)
		R_EXPECT(R, R->ret == -EBUSY);
	else if (b->was == to)
		R_EXPECT(R, R->ret == 0);
	else if (to == V && R->removed)
		R_EXPECT(R, R->ret == -ENODEV);
	else if (b->lost)
		R_EXPECT(R, R->ret == -ENODATA);
	else if (R->pm == UGPU_PM_SUSPENDED)
		R_EXPECT(R, R->ret == -EBUSY);
	else
		r_expect_move(R, fired, stats_of(R->f).copy_failures - cf, to == V);
	R_EXPECT(R, bo_where(b->bo) == (R->ret ? b->was : to));
	return to == V ? R_MOVES_EVICT : R_MOVES_NONE;
}

static enum r_moves r_fault(struct rnd *R)
{
	R->ret = 0;
	if (rng_below(&R->rng, 3) == 0) {
		if (!backup_fault_armed(R->f))
			bo_mgr_inject_backup_failure(R->f->dev, 1 + rng_below(&R->rng, 4), false);
	} else if (!fault_armed()) {
		fault_arm(1 + rng_below(&R->rng, 4), false,
			  (enum fault_kind)rng_below(&R->rng, FAULT_NKINDS), false);
	}
	return R_MOVES_NONE;
}

/* The result of a host-suspend step: 0, or the error of the fault it fired. */
static void r_expect_pm(struct rnd *R, unsigned long fired, bool backup_armed)
{
	bool backup_fired = backup_armed && !backup_fault_armed(R->f);

	if (!R->ret) {
		R_EXPECT(R, !fired && !backup_fired);
	} else if (R->ret == -ENOMEM) {
		R_EXPECT(R, backup_fired);
	} else {
		R_EXPECT(R, fired);
		R_EXPECT(R, R->ret == -EIO || R->ret == -ETIMEDOUT);
	}
}

static enum r_moves r_prepare(struct rnd *R)
{
	struct pm_run run = { 0 };
	unsigned long fired = fault_fired();
	bool armed = backup_fault_armed(R->f);
	unsigned int i;

	R->ret = -ENODEV; /* removed: src/suspend.c answers so itself */
	if (R->removed)
		return R_MOVES_NONE;
	R->ret = do_prepare(R->f, &run);
	if (R->pm != UGPU_PM_ACTIVE) {
		R_EXPECT(R, R->ret == -EBUSY);
		return R_MOVES_NONE;
	}
	r_expect_pm(R, fault_fired() - fired, armed);
	R->pm = R->ret ? UGPU_PM_ACTIVE : UGPU_PM_PREPARED;
	R_EXPECT(R, pm_state(R->f) == R->pm);
	for (i = 0; R->pm == UGPU_PM_PREPARED && i < R->n; i++) {
		struct rbo *b = &R->b[i];
		struct ugpu_bo_info info = info_of(b->bo);

		/* Evictable BOs left VRAM; the rest of VRAM is backed up. */
		R_EXPECT(R, !(info.placement == V && !b->pins && b->allow_s));
		R_EXPECT(R, info.has_backup ==
				    (info.placement == V && !(b->flags & UGPU_BO_NO_RESTORE)));
	}
	if (R->ret)
		R_EXPECT(R, stats_of(R->f).backup_bytes == 0);
	return R_MOVES_EVICT;
}

static enum r_moves r_suspend(struct rnd *R)
{
	struct pm_run run = { 0 };
	unsigned long fired = fault_fired();
	bool armed = backup_fault_armed(R->f);
	unsigned int i;

	R->ret = -ENODEV;
	if (R->removed)
		return R_MOVES_NONE;
	R->ret = do_suspend(R->f, &run);
	if (R->pm == UGPU_PM_SUSPENDED) {
		R_EXPECT(R, R->ret == -EBUSY);
		return R_MOVES_NONE;
	}
	r_expect_pm(R, fault_fired() - fired, armed);
	if (R->ret)
		return R_MOVES_NONE; /* recovered: as before */
	R->pm = UGPU_PM_SUSPENDED;
	/* Powered off: what was not backed up is poison now. */
	for (i = 0; i < R->n; i++) {
		struct rbo *b = &R->b[i];
		uint64_t k;

		if (b->was != V || !(b->flags & UGPU_BO_NO_RESTORE))
			continue;
		for (k = 0; k < b->size; k += 8)
			memcpy(b->shadow + k, &(uint64_t){ POISON }, 8);
	}
	return R_MOVES_NONE;
}

static enum r_moves r_resume(struct rnd *R)
{
	struct pm_run run = { 0 };
	unsigned long fired = fault_fired();
	uint64_t discarded = 0;
	unsigned int i;

	R->ret = do_resume(R->f, &run);
	if (R->pm != UGPU_PM_SUSPENDED) {
		R_EXPECT(R, R->ret == -EBUSY);
		return R_MOVES_NONE;
	}
	R_EXPECT(R, R->ret == 0);
	R_EXPECT(R, run.cpu_fallback == (fault_fired() != fired));
	for (i = 0; i < R->n; i++)
		discarded += R->b[i].was == V && (R->b[i].flags & UGPU_BO_NO_RESTORE);
	R_EXPECT(R, run.discarded == discarded);
	R->pm = UGPU_PM_ACTIVE;
	return R_MOVES_NONE;
}

static enum r_moves r_cancel(struct rnd *R)
{
	bool prepared = false;

	R->ret = do_cancel(R->f, &prepared);
	if (R->pm == UGPU_PM_SUSPENDED) {
		R_EXPECT(R, R->ret == -EBUSY);
	} else {
		R_EXPECT(R, R->ret == 0);
		R_EXPECT(R, prepared == (R->pm == UGPU_PM_PREPARED));
		R->pm = UGPU_PM_ACTIVE;
	}
	return R_MOVES_NONE;
}

static enum r_moves r_remove(struct rnd *R)
{
	bool surprise = rng_below(&R->rng, 2), suspended = R->pm == UGPU_PM_SUSPENDED;
	unsigned long fired = fault_fired();
	uint64_t in_vram = 0, no_restore = 0;
	struct unplug_counts c;
	unsigned int i;

	for (i = 0; i < R->n; i++) {
		in_vram += R->b[i].was == V;
		no_restore += R->b[i].was == V && (R->b[i].flags & UGPU_BO_NO_RESTORE);
	}
	c = do_remove(R->f, surprise, NULL);
	fired = fault_fired() - fired;
	R->ret = 0;
	R_EXPECT(R, c.kernel_bos == R->f->blitters);
	if (suspended) {
		R_EXPECT(R, c.bos_lost == no_restore && c.bos_adopted == in_vram - no_restore);
	} else if (surprise) {
		R_EXPECT(R, c.bos_lost == in_vram && c.bos_adopted == 0);
	} else {
		R_EXPECT(R, c.bos_lost == fired && c.bos_adopted == 0);
	}
	R_EXPECT(R, c.bos_moved + c.bos_adopted + c.bos_lost == in_vram);
	for (i = 0; i < R->n; i++) {
		struct rbo *b = &R->b[i];
		struct ugpu_bo_info info = info_of(b->bo);

		if (b->was != V) {
			R_EXPECT(R, info.placement == b->was);
			continue;
		}
		/* Out of VRAM: kept in system memory (and preferring it now), or lost. */
		b->lost = info.lost;
		R_EXPECT(R, info.placement == (b->lost ? N : S));
		if (!b->lost) {
			b->first = S;
			b->allow_s = true; /* even a VRAM-only BO: there is no VRAM */
		}
	}
	R->removed = true;
	R->pm = UGPU_PM_ACTIVE;
	R_EXPECT(R, pm_state(R->f) == UGPU_PM_ACTIVE);
	fault_clear();
	return R_MOVES_ANY;
}

/*
 * After every step: the placement, pins and loss of every BO are what the
 * model says; BOs the step did not name moved only as it may move them;
 * contents match the shadow for the BO it named, for any that moved, and
 * for all of them every 8 steps (in a random order: reads bump the LRU).
 */
static void r_verify(struct rnd *R, int self, enum r_moves moves, bool all)
{
	unsigned int k, start = R->n ? (unsigned int)rng_below(&R->rng, R->n) : 0;

	for (k = 0; k < R->n; k++) {
		unsigned int i = (start + k) % R->n;
		struct rbo *b = &R->b[i];
		struct ugpu_bo_info info = info_of(b->bo);
		bool moved = info.placement != b->was;

		R_EXPECT(R, info.pin_count == b->pins);
		R_EXPECT(R, info.lost == b->lost);
		R_EXPECT(R, b->lost ? info.placement == N
				    : info.placement == V ? b->allow_v : info.placement == S && b->allow_s);
		if (moved && (int)i != self && moves != R_MOVES_ANY)
			R_EXPECT(R, moves == R_MOVES_EVICT && b->was == V && info.placement == S &&
					    !b->pins);
		if (all || moved || (int)i == self)
			r_verify_bytes(R, b);
	}
}

static const char *const r_names[] = { "create", "destroy", "write", "read", "pin", "unpin",
				       "migrate", "fault", "prepare", "suspend", "resume", "cancel",
				       "remove" };

static void r_step(struct rnd *R, unsigned long step, bool remove)
{
	/* Weights: create, destroy, write, read, pin, unpin, migrate, fault,
	 * prepare, suspend, resume, cancel. */
	static const unsigned int w[] = { 14, 6, 14, 8, 6, 6, 18, 4, 2, 2, 3, 1 };
	unsigned int op, total = 0, pick, k;
	enum r_moves moves = R_MOVES_NONE;
	int i = -1;

	for (k = 0; k < R->n; k++)
		R->b[k].was = bo_where(R->b[k].bo);
	for (k = 0; k < sizeof(w) / sizeof(w[0]); k++)
		total += w[k];
	pick = (unsigned int)rng_below(&R->rng, total);
	for (op = 0; pick >= w[op]; op++)
		pick -= w[op];
	if (op >= 1 && op <= 6) {
		i = r_pick(R);
		if (i < 0)
			op = 0; /* nothing to act on: create */
	}
	if (op == 0 && R->n == R_BOS)
		op = 1, i = r_pick(R);
	r_where(R, step, remove ? "remove" : r_names[op], op >= 1 && op <= 6 ? i : -1);
	if (remove) {
		moves = r_remove(R);
		i = -1;
	} else {
		switch (op) {
		case 0: moves = r_create(R); break;
		case 1: moves = r_destroy(R, i); i = -1; break;
		case 2: moves = r_rw(R, i, true); break;
		case 3: moves = r_rw(R, i, false); break;
		case 4: moves = r_pin(R, i); break;
		case 5: moves = r_unpin(R, i); break;
		case 6: moves = r_migrate(R, i); break;
		case 7: moves = r_fault(R); break;
		case 8: moves = r_prepare(R); break;
		case 9: moves = r_suspend(R); break;
		case 10: moves = r_resume(R); break;
		default: moves = r_cancel(R); break;
		}
	}
	op = remove ? 12 : op;
	R->ops[op]++;
	R->ops_ok[op] += R->ret == 0;
	R->bos_seen += R->n;
	check(R->f);
	r_verify(R, i, moves, remove || op >= 8 || step % 8 == 0);
}

static int setup_small(void **state)
{
	*state = fx_new(256 * KiB, 2);
	return 0;
}

/*
 * A seeded random sequence of every operation above against the model,
 * with the checker after every step. About half the seeds include a
 * removal (surprise or orderly, maybe while suspended) somewhere in the
 * run, after which the sequence goes on without VRAM.
 */
static void test_random(void **state)
{
	struct rnd *R = calloc(1, sizeof(*R));
	struct timespec t0, t1;
	unsigned long step, remove_at;
	unsigned int k;

	assert_non_null(R);
	R->f = *state;
	R->rng.s = g_seed;
	R->pm = UGPU_PM_ACTIVE;
	remove_at = (unsigned long)rng_below(&R->rng, 2 * R_STEPS);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (step = 0; step < R_STEPS; step++) {
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (t1.tv_sec - t0.tv_sec >= R_SECONDS) {
			printf("test_random: time bound (%d s) reached after %lu steps\n", R_SECONDS,
			       step);
			break;
		}
		r_step(R, step, step == remove_at);
	}
	/* Wind down: resume or cancel, everything verified, everything put. */
	snprintf(R->f->where, sizeof(R->f->where), "seed %" PRIu64 ": the end", g_seed);
	if (R->pm == UGPU_PM_SUSPENDED)
		R_EXPECT(R, (R->ret = do_resume(R->f, &(struct pm_run){ 0 })) == 0);
	R->ret = do_cancel(R->f, &(bool){ false });
	R_EXPECT(R, R->ret == 0);
	R->pm = UGPU_PM_ACTIVE;
	for (k = 0; k < R->n; k++)
		R->b[k].was = bo_where(R->b[k].bo);
	r_verify(R, -1, R_MOVES_NONE, true);
	printf("test_random: seed %" PRIu64 ": %lu steps, %s, %" PRIu64 " evictions, %" PRIu64
	       " copy failures, %lu faults fired\n",
	       g_seed, step, R->removed ? "removed" : "not removed", stats_of(R->f).evictions,
	       stats_of(R->f).copy_failures, fault_fired());
	printf("test_random: %.1f BOs on average; steps (succeeded/run):",
	       step ? (double)R->bos_seen / (double)step : 0.0);
	for (k = 0; k < sizeof(r_names) / sizeof(r_names[0]); k++)
		printf(" %s %lu/%lu", r_names[k], R->ops_ok[k], R->ops[k]);
	printf("\n");
	while (R->n)
		r_destroy(R, 0);
	R->f->where[0] = 0;
	free(R);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_create_every_combination, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_invalid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_read_offsets, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pin_unpin, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migrate_both_ways, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backing_record, setup, teardown),
		cmocka_unit_test_setup_teardown(test_evict_lru_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_evict_vram_only_stay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_evict_copy_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kernel_no_evict, setup, teardown),
		cmocka_unit_test_setup_teardown(test_contiguous, setup, teardown),
		cmocka_unit_test_setup_teardown(test_move_copy_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_destroy_each_placement, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mem_stats, setup, teardown),
		cmocka_unit_test_setup_teardown(test_suspend_prepared, setup, teardown),
		cmocka_unit_test_setup_teardown(test_suspend_unprepared, setup, teardown),
		cmocka_unit_test_setup_teardown(test_suspend_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_removal_orderly, setup, teardown),
		cmocka_unit_test_setup_teardown(test_removal_surprise, setup, teardown),
		cmocka_unit_test_setup_teardown(test_removal_copy_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_removal_device_stops, setup, teardown),
		cmocka_unit_test_setup_teardown(test_removal_suspended, setup, teardown),
		cmocka_unit_test_setup_teardown(test_removal_suspended_surprise, setup, teardown),
		cmocka_unit_test_setup_teardown(test_removal_prepared_surprise, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cpu_map_follows_moves, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_with_live_bos, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cpu_engine_only, setup_cpu_only, teardown),
		cmocka_unit_test_setup_teardown(test_random, setup_small, teardown),
	};
	const char *env = getenv("UGPU_SEED");

	if (!env)
		env = getenv("UGPU_TEST_SEED");
	g_seed = env ? strtoull(env, NULL, 0)
		     : ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
	printf("test_bo_unit: seed %" PRIu64 " (replay with UGPU_SEED=%" PRIu64 ")\n", g_seed,
	       g_seed);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
