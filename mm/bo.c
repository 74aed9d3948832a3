/* SPDX-License-Identifier: MIT */
/*
 * Buffer objects: the manager, creation and placement, pinning, the public
 * API, and CPU mappings that follow the object (mm/cpu_map); moves and
 * eviction are mm/move.c, memory shared with another process (ugpud)
 * mm/bo_export.c. The design
 * and its invariants are in docs/bo.md; the locking rule next to struct
 * bo_mgr (mm/bo.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/stats.h"
#include "base/test_point.h"
#include "engines/engine.h"
#include "mm/bo.h"
#include "mm/bo_remote.h"
#include "mm/bo_rpm.h"
#include "mm/cpu_map.h"
#include "mm/p2p.h"
#include "mm/vram.h"
#include "base/log.h"
#include "src/device.h"
#include "src/rpm.h"
#include "src/unplug.h"

#define PAGE_SIZE_BO 4096u

/* ---- helpers -------------------------------------------------------------- */

static struct bo_mgr *mgr_of(struct ugpu_device *dev)
{
	return dev->bo_mgr;
}

static uint64_t blocks_bytes(const struct buddy_list *l)
{
	struct buddy_block *b;
	uint64_t n = 0;

	buddy_list_for_each(b, l)
		n += vram_block_size(b);
	return n;
}

uint64_t bo_vram_offset(const struct ugpu_bo *bo)
{
	struct buddy_block *b = buddy_list_first(bo->vram);

	return b ? buddy_block_offset(b) : 0;
}

/* ---- CPU mappings ---------------------------------------------------------- */

/* Runs on the cpu_map handler thread under the map lock: no manager lock. */
static int bo_resolve(void *owner, uint64_t offset, struct cpu_map_extent *ext)
{
	struct ugpu_bo *bo = owner;
	struct bo_mgr *m = mgr_of(bo->dev);
	struct buddy_block *b;
	uint64_t pos = 0;

	__atomic_store_n(&bo->touched, 1, __ATOMIC_RELAXED);
	switch (bo->placement) {
	case UGPU_PLACEMENT_VRAM:
		buddy_list_for_each(b, bo->vram) {
			uint64_t bsz = (uint64_t)BUDDY_MIN_CHUNK << buddy_block_order(b);

			if (offset < pos + bsz) {
				ext->fd = m->vram_fd;
				ext->fd_offset = m->vram_fd_off + buddy_block_offset(b) + (offset - pos);
				ext->len = bsz - (offset - pos);
				return 0;
			}
			pos += bsz;
		}
		return -EFAULT;
	case UGPU_PLACEMENT_SYSTEM:
		ext->fd = bo->sys.mem.fd;
		ext->fd_offset = offset;
		ext->len = bo->size - offset;
		return 0;
	default:
		return -ENODEV;
	}
}

static const struct cpu_map_owner_ops bo_map_ops = {
	.resolve = bo_resolve,
	/* runtime PM: a VRAM fault wakes the device (mm/bo_rpm.c) */
	.fault_begin = bo_rpm_fault_begin,
	.fault_end = bo_rpm_fault_end,
};

/* ---- manager ---------------------------------------------------------------- */

/* ---- kernel memory for the device's own structures (dev->kmem) ---------------- */

static int kmem_alloc(struct ugpu_device *dev, uint64_t size, const char *name, void **obj,
		      uint64_t *vram_offset)
{
	struct ugpu_bo_opts o = {
		.size = sizeof(o),
		.bytes = size,
		.placements = { UGPU_PLACEMENT_VRAM },
		.flags = UGPU_BO_KERNEL | UGPU_BO_PINNED | UGPU_BO_CONTIGUOUS,
		.name = name,
	};
	struct ugpu_bo *bo;
	int ret;

	/* Top-down: the end of VRAM holds the driver's own structures,
	 * objects grow from the start. */
	ret = bo_create_kernel(dev, &o, BUDDY_TOPDOWN_ALLOCATION, &bo);
	if (ret)
		return ret;
	*obj = bo;
	*vram_offset = bo_vram_offset(bo);
	return 0;
}

static void kmem_free(struct ugpu_device *dev, void *obj)
{
	(void)dev;
	ugpu_bo_put(obj);
}

static const struct device_kmem_ops bo_kmem_ops = {
	.alloc = kmem_alloc,
	.release = kmem_free,
};

/* ---- manager ---------------------------------------------------------------- */

static int bo_mgr_init(struct ugpu_device *dev, const char *uri)
{
	struct bo_mgr *m = calloc(1, sizeof(*m));

	(void)uri;
	if (!m)
		return -ENOMEM;
	m->dev = dev;
	pthread_mutex_init(&m->lock, NULL);
	pthread_mutex_init(&m->vram_lock, NULL);
	buddy_list_init(&m->vram_held);
	buddy_list_init(&m->vram_sealed);
	pthread_cond_init(&m->pm_cond, NULL);
	pthread_cond_init(&m->moved, NULL);
	list_init(&m->all);
	list_init(&m->lru);
	m->vram_fd = -1;
	for (size_t i = 0; i < sizeof(m->stage) / sizeof(m->stage[0]); i++)
		m->stage[i].mem.fd = -1;
	m->pm_state = BO_PM_ACTIVE;
	dev->bo_mgr = m;
	dev->kmem = &bo_kmem_ops;
	backup_register(dev);
	evacuate_register(dev);
	return 0;
}

static void bo_release_locked(struct ugpu_bo *bo)
{
	struct ugpu_device *dev = bo->dev;
	struct bo_mgr *m = mgr_of(dev);

	if (bo->map) {
		/* Never called on the handler thread, so this cannot -EDEADLK;
		 * a blocked map (suspend) is destroyed all the same. */
		cpu_map_destroy(bo->map);
		bo->map = NULL;
		bo->map_addr = NULL;
	}
	/* After the map is gone: no fault can list it again. */
	bo_rpm_forget(bo);
	bo_lru_del_locked(bo);
	if (list_linked(&bo->all)) {
		list_del(&bo->all);
		m->nr_bos--;
	}
	if (bo->placement == UGPU_PLACEMENT_VRAM) {
		vram_free(dev, bo->vram, 0);
		m->vram_bytes -= bo->size;
	} else if (bo->placement == UGPU_PLACEMENT_SYSTEM) {
		bo_sys_free(dev, &bo->sys);
		m->sys_bytes -= bo->size;
	}
	bo_backup_drop(dev, bo);
	bo_set_placement(bo, UGPU_PLACEMENT_NONE);
}

/*
 * ugpu_device_close(): every BO still alive loses its memory and mapping
 * now; its handle stays until its last put (which then only frees it) and
 * every other BO call answers -ENODEV (include/ugpu/device.h). This is its
 * own step, above the VRAM allocator's, so the VRAM goes back before the
 * allocator is finished (which reports whatever is still allocated as a
 * leak). A removal does not run it: the removal evacuates or loses each BO
 * itself and the handles stay usable. The manager lives on with the device
 * object until the last handle is put (bo_mgr_free(), from device_put()).
 */
static void bo_close_release(struct ugpu_device *dev)
{
	struct bo_mgr *m = mgr_of(dev);
	uint64_t n = 0;

	if (!m)
		return;
	/* peers stop reaching this VRAM, and this device its peers' */
	p2p_revoke_exporter(dev);
	bo_mgr_lock(m);
	p2p_release_importer_locked(dev);
	while (list_linked(&m->all)) {
		struct ugpu_bo *bo = bo_of_all(m->all.next);

		log_dbg(dev->ctx, "%s: BO '%s' (%" PRIu64 " bytes) still alive at close: memory freed, the handle answers -ENODEV",
			dev->name, bo->name, bo->size);
		bo_release_locked(bo);
		n++;
	}
	m->closed = true;
	pthread_cond_broadcast(&m->pm_cond);
	pthread_mutex_unlock(&m->lock);
	/* its kernels are gone (the VM-exec step came first): its binds of
	 * peers' BOs keep those peers awake no longer */
	p2p_importer_let_go(dev);
	if (n)
		log_info(dev->ctx, "%s: %" PRIu64 " BOs still alive at close: their memory is freed, their handles answer -ENODEV until put",
			 dev->name, n);
}

static struct device_component bo_close_component = {
	.name = "bo-close",
	.order = DEVICE_STEP_BO_CLOSE,
	.life = DEVICE_LIFE_CONTEXT,
	.down = bo_close_release,
};
DEVICE_COMPONENT(bo_close_component)

/* After bo-close: nothing is left to release; the fault handler goes. */
static void bo_mgr_fini(struct ugpu_device *dev)
{
	struct bo_mgr *m = mgr_of(dev);

	if (!m)
		return;
	bo_close_release(dev); /* a close that failed before bo-close was up */
	cpu_map_mgr_destroy(m->maps);
	m->maps = NULL;
}

static void bo_mgr_free(struct ugpu_device *dev)
{
	struct bo_mgr *m = mgr_of(dev);

	if (!m)
		return;
	pthread_mutex_destroy(&m->vram_lock);
	pthread_cond_destroy(&m->pm_cond);
	pthread_cond_destroy(&m->moved);
	pthread_mutex_destroy(&m->lock);
	free(m);
	dev->bo_mgr = NULL;
}

static struct device_component bo_mgr_component = {
	.name = "bo-mgr",
	.order = DEVICE_STEP_BO_MGR,
	.life = DEVICE_LIFE_CONTEXT,
	.up = bo_mgr_init,
	.down = bo_mgr_fini,
	.release = bo_mgr_free,
};
DEVICE_COMPONENT(bo_mgr_component)

#ifdef UGPU_TEST_HOOKS
void bo_mgr_inject_backup_failure(struct ugpu_device *dev, unsigned long n, bool always)
{
	struct bo_mgr *m = mgr_of(dev);

	bo_mgr_lock(m);
	m->fail_backup_at = n;
	m->fail_backup_always = always;
	pthread_mutex_unlock(&m->lock);
}

/* Read when a device's cpu_map manager is created (atomic: tests may set it
 * from any thread). */
static bool test_release_by_invalidate;

void bo_test_release_by_invalidate(bool on)
{
	__atomic_store_n(&test_release_by_invalidate, on, __ATOMIC_RELAXED);
}
#else
static const bool test_release_by_invalidate;
#endif

void bo_mgr_get_stats(struct ugpu_device *dev, struct bo_mgr_stats *st)
{
	struct bo_mgr *m = mgr_of(dev);

	memset(st, 0, sizeof(*st));
	bo_mgr_lock(m);
	st->bos = m->nr_bos;
	st->lru = m->nr_lru;
	st->vram_bytes = m->vram_bytes;
	st->sys_bytes = m->sys_bytes;
	st->evictions = m->evictions;
	st->evicted_bytes = m->evicted_bytes;
	st->moves = m->moves;
	st->moved_bytes = m->moved_bytes;
	st->copy_failures = m->copy_failures;
	st->backup_cpu_sums = m->backup_cpu_sums;
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (bo_has_backup(bo))
			st->backups++;
		if (bo->backup.mem.fd >= 0)
			st->backup_bytes += bo->backup.mem.size;
	}
	pthread_mutex_unlock(&m->lock);
}

#define CHECK(cond, ...)                                                 \
	do {                                                             \
		if (!(cond)) {                                           \
			log_err(dev->ctx, "bo check: " __VA_ARGS__);     \
			ret = -EINVAL;                                   \
			goto out;                                        \
		}                                                        \
	} while (0)

int bo_mgr_check(struct ugpu_device *dev, bool strict)
{
	struct bo_mgr *m = mgr_of(dev);
	uint64_t vram = 0, sys = 0, nbos = 0, nlru = 0, used, backup_mem = 0, spilled = 0;
	int ret = 0;

	bo_mgr_lock(m);
	CHECK(vram_check(dev) == 0, "buddy allocator inconsistent");
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);
		struct buddy_block *b;

		nbos++;
		CHECK(!(bo->lost && bo->placement != UGPU_PLACEMENT_NONE),
		      "BO '%s' is lost but has a backing", bo->name);
		CHECK(bo->placement != UGPU_PLACEMENT_NONE || bo->lost,
		      "BO '%s' has no backing but is not lost", bo->name);
		if (bo->placement == UGPU_PLACEMENT_VRAM) {
			CHECK(!buddy_list_is_empty(bo->vram), "VRAM BO '%s' has no blocks", bo->name);
			buddy_list_for_each(b, bo->vram)
				CHECK(buddy_block_is_allocated(b),
				      "VRAM BO '%s': block at 0x%" PRIx64 " not allocated", bo->name,
				      buddy_block_offset(b));
			CHECK(blocks_bytes(bo->vram) == bo->size,
			      "VRAM BO '%s': blocks hold %" PRIu64 " bytes, BO is %" PRIu64, bo->name,
			      blocks_bytes(bo->vram), bo->size);
			CHECK(bo->sys.mem.fd < 0, "VRAM BO '%s' also has system memory", bo->name);
			vram += bo->size;
		} else {
			CHECK(buddy_list_is_empty(bo->vram), "BO '%s' outside VRAM holds blocks",
			      bo->name);
			CHECK(!bo_has_backup(bo), "BO '%s' outside VRAM has a backup", bo->name);
		}
		if (bo->placement == UGPU_PLACEMENT_SYSTEM) {
			CHECK(bo->sys.mem.fd >= 0 && (bo->sys.iova || device_is_removed(dev)) &&
				      bo->sys.mem.size >= bo->size,
			      "SYSTEM BO '%s' has no mapped system memory", bo->name);
			sys += bo->size;
		}
		CHECK(list_linked(&bo->lru) ==
			      (bo->placement == UGPU_PLACEMENT_VRAM && bo->pin_count == 0),
		      "BO '%s' (%s, %u pins) is %son the LRU", bo->name,
		      bo->placement == UGPU_PLACEMENT_VRAM ? "VRAM" : "not VRAM", bo->pin_count,
		      list_linked(&bo->lru) ? "" : "not ");
		if (bo_has_backup(bo)) {
			CHECK(m->pm_state != BO_PM_ACTIVE, "BO '%s' has a backup while active",
			      bo->name);
			CHECK(!(bo->flags & UGPU_BO_NO_RESTORE), "NO_RESTORE BO '%s' has a backup",
			      bo->name);
		}
		CHECK(!(bo->spilled && bo->backup.mem.fd >= 0),
		      "BO '%s' has a backup in memory and one spilled", bo->name);
		CHECK(!(bo->spilled && (bo->flags & UGPU_BO_KERNEL)), "kernel BO '%s' spilled",
		      bo->name);
		if (bo->backup.mem.fd >= 0)
			backup_mem += bo->backup.mem.size;
		spilled += bo->spilled;
		CHECK(bo_has_backup(bo) == (bo->track != NULL),
		      "BO '%s': a backup %s a write track", bo->name,
		      bo->track ? "missing, with" : "without");
	}
	bo_for_each(l, &m->lru)
		nlru++;
	CHECK(nbos == m->nr_bos, "%" PRIu64 " BOs listed, %" PRIu64 " counted", nbos, m->nr_bos);
	CHECK(nlru == m->nr_lru, "%" PRIu64 " BOs on the LRU, %" PRIu64 " counted", nlru, m->nr_lru);
	CHECK(vram == m->vram_bytes, "BOs hold %" PRIu64 " VRAM bytes, counter says %" PRIu64, vram,
	      m->vram_bytes);
	CHECK(sys == m->sys_bytes, "BOs hold %" PRIu64 " system bytes, counter says %" PRIu64, sys,
	      m->sys_bytes);
	CHECK(backup_mem == m->backup_mem,
	      "backups hold %" PRIu64 " bytes of memory, counter says %" PRIu64, backup_mem,
	      m->backup_mem);
	CHECK(spilled == m->spill_bos, "%" PRIu64 " backups spilled, counter says %" PRIu64, spilled,
	      m->spill_bos);
	CHECK((m->spill != NULL) == (spilled > 0), "the spill file is %s with %" PRIu64 " backups in it",
	      m->spill ? "open" : "closed", spilled);
	{
		uint64_t avail;

		vram_usage(dev, &used, &avail);
	}
	CHECK(used >= vram, "buddy has %" PRIu64 " bytes allocated, BOs hold %" PRIu64, used, vram);
	CHECK(!strict || used == vram,
	      "buddy has %" PRIu64 " bytes allocated, BOs hold %" PRIu64 " (strict)", used, vram);
out:
	pthread_mutex_unlock(&m->lock);
	return ret;
}

/* ---- snapshots ---------------------------------------------------------------- */

int bo_snapshot_locked(struct bo_mgr *m, struct ugpu_bo ***out, size_t *n)
{
	struct ugpu_bo **v;
	size_t i = 0;

	v = calloc(m->nr_bos ? m->nr_bos : 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);
		int rc = __atomic_load_n(&bo->refcount, __ATOMIC_RELAXED);

		/* A BO whose last reference is being dropped is still listed
		 * until its put gets the lock: never take a reference from 0. */
		do {
			if (!rc)
				break;
		} while (!__atomic_compare_exchange_n(&bo->refcount, &rc, rc + 1, false,
						      __ATOMIC_ACQUIRE, __ATOMIC_RELAXED));
		if (rc)
			v[i++] = bo;
	}
	*out = v;
	*n = i;
	return 0;
}

void bo_snapshot_put(struct ugpu_bo **v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		ugpu_bo_put(v[i]);
	free(v);
}

/* ---- creation and the public API ------------------------------------------- */

static int opts_check(struct ugpu_device *dev, const struct ugpu_bo_opts *o, struct ugpu_bo *bo)
{
	unsigned int i, n = 0;
	bool seen_none = false;

	if (!o->bytes || o->bytes > (UINT64_MAX >> 1)) {
		log_err(dev->ctx, "ugpu_bo_create: bad size %" PRIu64, o->bytes);
		return -EINVAL;
	}
	if (o->flags & ~UGPU_BO_FLAGS_ALL) {
		log_err(dev->ctx, "ugpu_bo_create: unknown flags 0x%x", o->flags & ~UGPU_BO_FLAGS_ALL);
		return -EINVAL;
	}
	if ((o->flags & UGPU_BO_NO_RESTORE) && (o->flags & UGPU_BO_LATE_RESTORE)) {
		log_err(dev->ctx, "ugpu_bo_create: NO_RESTORE and LATE_RESTORE exclude each other");
		return -EINVAL;
	}
	if ((o->flags & UGPU_BO_LATE_RESTORE) && !(o->flags & UGPU_BO_KERNEL)) {
		log_err(dev->ctx, "ugpu_bo_create: LATE_RESTORE is for KERNEL BOs (user BOs are always restored by the blitter)");
		return -EINVAL;
	}
	for (i = 0; i < UGPU_BO_MAX_PLACEMENTS; i++) {
		enum ugpu_placement p = o->placements[i];

		if (p == UGPU_PLACEMENT_NONE) {
			seen_none = true;
			continue;
		}
		if ((p != UGPU_PLACEMENT_VRAM && p != UGPU_PLACEMENT_SYSTEM) || seen_none) {
			log_err(dev->ctx, "ugpu_bo_create: placement %u is %s", i,
				seen_none ? "after an empty one" : "unknown");
			return -EINVAL;
		}
		if (n && bo->placements[0] == p) {
			log_err(dev->ctx, "ugpu_bo_create: placement %u repeats an earlier one", i);
			return -EINVAL;
		}
		bo->placements[n++] = p;
	}
	if (!n) {
		bo->placements[n++] = UGPU_PLACEMENT_VRAM;
		bo->placements[n++] = UGPU_PLACEMENT_SYSTEM;
	}
	bo->nplacements = n;
	memcpy(bo->user_placements, bo->placements, sizeof(bo->user_placements));
	bo->user_nplacements = n;
	return 0;
}

/* Place a new BO in the first placement that works. Manager lock held. */
static int bo_place_locked(struct ugpu_bo *bo)
{
	struct ugpu_device *dev = bo->dev;
	struct bo_mgr *m = mgr_of(dev);
	int ret = -ENOSPC;
	unsigned int i;

	for (i = 0; i < bo->nplacements; i++) {
		if (bo->placements[i] == UGPU_PLACEMENT_VRAM) {
			struct buddy_block *b;

			if (m->pm_state == BO_PM_SUSPENDED) {
				ret = -EBUSY;
				continue;
			}
			if (device_is_removed(dev)) {
				ret = -ENODEV; /* unplugged: SYSTEM next, if allowed */
				continue;
			}
			ret = bo_vram_alloc_evict_locked(bo, bo->vram);
			if (ret == -ENOSPC)
				continue;
			if (ret)
				return ret;
			/* Contents are zero: clear through the BAR (the blocks
			 * may hold a previous owner's bytes), unless the driver
			 * writes them all first (BO_KERNEL_NO_CLEAR). */
			if (!bo->no_clear)
				buddy_list_for_each(b, bo->vram)
					memset((char *)dev->vram + buddy_block_offset(b), 0,
					       vram_block_size(b));
			bo_set_placement(bo, UGPU_PLACEMENT_VRAM);
			m->vram_bytes += bo->size;
			return 0;
		}
		ret = bo_sys_alloc_locked(dev, bo->size, bo->name, false, &bo->sys);
		if (ret)
			return ret;
		bo_set_placement(bo, UGPU_PLACEMENT_SYSTEM);
		m->sys_bytes += bo->size;
		return 0;
	}
	return ret;
}

/*
 * Runtime PM: every public path that may touch the device (a copy, the BAR)
 * holds a runtime-PM reference while it does, so the device is awake and
 * cannot autosuspend under it. The reference is taken BEFORE the manager
 * lock and dropped after it: a runtime suspend runs its hooks with the hook
 * lock held and they take the manager lock, so rpm_get() (which may run the
 * resume hooks) must never be called with the manager lock held. The rpm
 * object is pinned between the two with rpm_user_enter()/leave(), which
 * keeps it valid through a concurrent removal. Internal helpers
 * (bo_move_locked() and friends) take no reference: their callers hold one,
 * or are the runtime-suspend hook itself, which runs while the device is
 * still in D0. No runtime PM (device bring-up) or a removed device gives no
 * reference and needs none: a removed device's BOs live in system memory,
 * and VRAM paths fail with -ENODEV on their own.
 * Manager lock NOT held.
 */
int bo_rpm_hold(struct ugpu_device *dev, struct rpm **held)
{
	struct rpm *rpm;
	int ret;

	*held = NULL;
	if (rpm_user_enter(dev, &rpm))
		return 0; /* -EINVAL: no runtime PM (yet); -ENODEV: removed */
	ret = bo_rpm_get(dev, rpm);
	if (!ret) {
		*held = rpm; /* pinned until bo_rpm_release() */
		return 0;
	}
	rpm_user_leave(rpm);
	if (ret != -ENODEV)
		return ret;
	if (device_is_removed(dev))
		return 0; /* BOs live in system memory now: no reference needed */
	/*
	 * The device went away (asleep, or while waking) and its removal has
	 * not run yet: VRAM cannot be reached, and going on would read or
	 * write a dead BAR. Once the removal is done the BO is in system
	 * memory (or reported lost): the caller looks again under the lock.
	 */
	return unplug_wait_removed(dev, UNPLUG_API_TIMEOUT_MS) ? -ENODEV : 0;
}

int bo_rpm_hold_if_awake(struct ugpu_device *dev, struct rpm **held)
{
	struct rpm *rpm;
	int ret;

	*held = NULL;
	ret = rpm_user_enter(dev, &rpm);
	if (ret == -EINVAL)
		return 0; /* no runtime PM (yet): nothing to hold */
	if (ret)
		return ret;
	if (bo_rpm_get_if_active(dev, rpm)) {
		*held = rpm;
		return 0;
	}
	rpm_user_leave(rpm);
	return -EAGAIN;
}

void bo_rpm_release(struct rpm *held)
{
	if (held) {
		rpm_put(held);
		rpm_user_leave(held);
	}
}

void bo_mgr_lock(struct bo_mgr *m)
{
	pthread_mutex_lock(&m->lock);
	bo_mgr_wait_moves_locked(m, NULL);
}

bool bo_mgr_trylock(struct bo_mgr *m)
{
	if (pthread_mutex_trylock(&m->lock))
		return false;
	if (m->moving) {
		pthread_mutex_unlock(&m->lock);
		return false;
	}
	return true;
}

int bo_mgr_wait_moves_locked(struct bo_mgr *m, const struct timespec *deadline)
{
	while (m->moving) {
		if (!deadline)
			pthread_cond_wait(&m->moved, &m->lock);
		else if (pthread_cond_timedwait(&m->moved, &m->lock, deadline) == ETIMEDOUT)
			return m->moving ? -ETIMEDOUT : 0;
	}
	return 0;
}

/* bo_lock(); @own_only: wait only while @bo itself is moving, not for
 * another BO's unlocked move (bo_rw(), struct bo_mgr). */
static int bo_lock_common(struct ugpu_bo *bo, struct rpm **held, struct bo_mgr **out,
			  bool own_only)
{
	for (;;) {
		struct ugpu_device *dev = bo_dev(bo);
		struct bo_mgr *m = mgr_of(dev);
		int ret;

		if (held) {
			ret = bo_rpm_hold(dev, held);
			if (ret)
				return ret;
		}
		if (own_only) {
			test_point_obj(TEST_POINT_BO_LOCK_OWN, bo);
			pthread_mutex_lock(&m->lock);
			/* @moving is this manager's only while the BO is its
			 * own: one that went to another device meanwhile may
			 * be moving there, signalled on that one's @moved
			 * (waiting here hung until some move of this device
			 * ended: the review of 2026-12-07) */
			while (bo->dev == dev && bo->moving)
				pthread_cond_wait(&m->moved, &m->lock);
		} else {
			bo_mgr_lock(m);
		}
		if (bo->dev == dev) {
			*out = m;
			return 0;
		}
		/* moved to another device meanwhile: that one's lock */
		pthread_mutex_unlock(&m->lock);
		if (held)
			bo_rpm_release(*held);
	}
}

int bo_lock(struct ugpu_bo *bo, struct rpm **held, struct bo_mgr **out)
{
	return bo_lock_common(bo, held, out, false);
}

void bo_lock_own(struct ugpu_bo *bo, struct bo_mgr **out)
{
	bo_lock_common(bo, NULL, out, true);
}

void bo_unlock(struct bo_mgr *m, struct rpm *held)
{
	pthread_mutex_unlock(&m->lock);
	bo_rpm_release(held);
}

static bool placements_have_vram(const struct ugpu_bo *bo)
{
	unsigned int i;

	for (i = 0; i < bo->nplacements; i++)
		if (bo->placements[i] == UGPU_PLACEMENT_VRAM)
			return true;
	return false;
}

static int bo_create_common(struct ugpu_device *dev, const struct ugpu_bo_opts *opts,
			    unsigned int buddy_flags, bool driver, struct ugpu_bo **out)
{
	struct ugpu_bo_opts o = { 0 };
	struct bo_mgr *m;
	struct ugpu_bo *bo;
	struct rpm *held = NULL;
	int ret;

	if (!dev || !opts || !out)
		return -EINVAL;
	/* Grown structs (ugpu.h): what the caller knows, zero past it. */
	if (opts->size < offsetof(struct ugpu_bo_opts, bytes) + sizeof(opts->bytes)) {
		log_err(dev->ctx, "ugpu_bo_create: opts.size %zu does not reach the bytes field",
			opts->size);
		return -EINVAL;
	}
	memcpy(&o, opts, opts->size < sizeof(o) ? opts->size : sizeof(o));
	/* A field the caller's size covers only in part is absent too. */
#define OPT_WHOLE(f)                                                              \
	do {                                                                      \
		if (opts->size < offsetof(struct ugpu_bo_opts, f) + sizeof(o.f))  \
			memset(&o.f, 0, sizeof(o.f));                             \
	} while (0)
	OPT_WHOLE(placements);
	OPT_WHOLE(flags);
	OPT_WHOLE(name);
#undef OPT_WHOLE
	opts = &o;
	if (device_is_remote(dev))
		return driver ? -EOPNOTSUPP : bo_remote_create(dev, opts, out);
	m = mgr_of(dev);
	bo = calloc(1, sizeof(*bo));
	if (!bo)
		return -ENOMEM;
	ret = opts_check(dev, opts, bo);
	if (ret) {
		free(bo);
		return ret;
	}
	bo->refcount = 1;
	bo->dev = dev;
	bo->size = (opts->bytes + PAGE_SIZE_BO - 1) & ~(uint64_t)(PAGE_SIZE_BO - 1);
	bo->flags = opts->flags;
	bo->driver_owned = driver;
	bo->buddy_flags = buddy_flags & ~(BO_KERNEL_NO_CLEAR | BO_KERNEL_SPECULATIVE);
	bo->no_clear = driver && (buddy_flags & BO_KERNEL_NO_CLEAR);
	bo->speculative = driver && (buddy_flags & BO_KERNEL_SPECULATIVE);
	snprintf(bo->name, sizeof(bo->name), "%s", opts->name ? opts->name : "bo");
	buddy_list_init(&bo->own_blocks);
	bo->vram = &bo->own_blocks;
	bo->sys.mem.fd = -1;
	bo->backup.mem.fd = -1;
	list_init(&bo->all);
	list_init(&bo->lru);
	list_init(&bo->binds);
	if (opts->flags & UGPU_BO_PINNED)
		bo->pin_count = 1;

	ret = !placements_have_vram(bo) ? 0
	      : bo->speculative	       ? bo_rpm_hold_if_awake(dev, &held)
					: bo_rpm_hold(dev, &held);
	if (ret) {
		free(bo);
		return ret;
	}
	bo_mgr_lock(m);
	ret = bo_place_locked(bo);
	bo->speculative = false; /* later placements evict as any BO's */
	if (ret) {
		pthread_mutex_unlock(&m->lock);
		bo_rpm_release(held);
		log_dbg(dev->ctx, "%s: BO '%s' (%" PRIu64 " bytes): %s", dev->name, bo->name,
			bo->size, ugpu_strerror(ret));
		free(bo);
		return ret;
	}
	list_add_tail(&m->all, &bo->all);
	m->nr_bos++;
	bo_lru_update_locked(bo);
	pthread_mutex_unlock(&m->lock);
	bo_rpm_release(held);
	device_get(dev); /* the handle keeps the device object (not the device) */
	*out = bo;
	return 0;
}

int bo_create_kernel(struct ugpu_device *dev, const struct ugpu_bo_opts *opts,
		     unsigned int buddy_flags, struct ugpu_bo **out)
{
	return bo_create_common(dev, opts, buddy_flags, true, out);
}

UGPU_API int ugpu_bo_create(struct ugpu_device *dev, const struct ugpu_bo_opts *opts,
			    struct ugpu_bo **out)
{
	return bo_create_common(dev, opts, 0, false, out);
}

UGPU_API void ugpu_bo_get(struct ugpu_bo *bo)
{
	if (bo)
		__atomic_add_fetch(&bo->refcount, 1, __ATOMIC_RELAXED);
}

UGPU_API void ugpu_bo_put(struct ugpu_bo *bo)
{
	struct ugpu_device *dev;
	struct bo_mgr *m;

	if (!bo || __atomic_sub_fetch(&bo->refcount, 1, __ATOMIC_ACQ_REL))
		return;
	if (bo_is_remote(bo)) {
		bo_remote_release(bo);
		return;
	}
	dev = bo->dev;
	m = mgr_of(dev);
	bo_mgr_lock(m);
	if (!m->closed) /* else close released it already */
		bo_release_locked(bo);
	pthread_mutex_unlock(&m->lock);
	free(bo);
	device_put(dev); /* the BO's reference; may free a closed device */
}

/*
 * bo_unlock() after an unlocked move (ugpu_bo_migrate(), ugpu_bo_pin()):
 * the system memory it left (@old, fd -1 when none) is unmapped for the
 * device and freed without the lock (milliseconds for a large BO), but
 * before the runtime-PM use @held ends: a removal tears the DMA space down
 * only after the runtime-PM users left (rpm_fini(); the review: freed
 * after, the unmap ran on a finalised DMA space).
 */
static void bo_unlock_free(struct bo_mgr *m, struct rpm *held, struct ugpu_bo *bo,
			   struct bo_sys *old)
{
	struct ugpu_device *dev = bo->dev;

	pthread_mutex_unlock(&m->lock);
	if (old->mem.fd >= 0)
		test_point_obj(TEST_POINT_BO_OLD_FREE, bo);
	bo_sys_free(dev, old);
	bo_rpm_release(held);
}

UGPU_API int ugpu_bo_pin(struct ugpu_bo *bo)
{
	struct bo_sys old = { .mem = { .fd = -1 } };
	struct bo_mgr *m;
	struct rpm *held;
	int ret = 0;

	if (!bo)
		return -EINVAL;
	if (bo_is_remote(bo))
		return bo_remote_pin(bo, true);
	/* Pinning may move the BO back to its first placement. */
	ret = bo_lock(bo, &held, &m);
	if (ret)
		return ret;
	if (m->closed) {
		ret = -ENODEV;
	} else if (bo->placement == UGPU_PLACEMENT_NONE) {
		ret = -ENODATA; /* lost: nothing to keep (pinned or not) */
	} else if (bo->pin_count >= INT32_MAX) {
		ret = -EOVERFLOW;
	} else {
		/* A move under a running GPU kernel would leave it on stale
		 * PTEs (mm/vm.h): refused, as ugpu_bo_migrate() does. Its copy
		 * lets go of the lock as a migrate's does (others' reads and
		 * writes go on; every other taker waits, so what was checked
		 * here holds when it is pinned below). */
		if (!bo->pin_count && bo->placement != bo->placements[0])
			ret = vm_bo_busy_locked(bo) ? -EBUSY
						    : bo_move_locked_release(bo, bo->placements[0], &old);
		if (!ret) {
			bo->pin_count++;
			bo_lru_del_locked(bo);
		}
	}
	bo_unlock_free(m, held, bo, &old);
	return ret;
}

UGPU_API int ugpu_bo_unpin(struct ugpu_bo *bo)
{
	struct bo_mgr *m;
	int ret = 0;

	if (!bo)
		return -EINVAL;
	if (bo_is_remote(bo))
		return bo_remote_pin(bo, false);
	bo_lock(bo, NULL, &m);
	if (m->closed) {
		ret = -ENODEV;
	} else if (!bo->pin_count) {
		ret = -EINVAL;
	} else if (!--bo->pin_count) {
		bo_lru_update_locked(bo);
		/* A prepared backup is no longer wanted (an unpinned BO is
		 * evicted or backed up at suspend). While suspended the backup
		 * is the only copy: it stays until resume restores it. */
		if (bo_has_backup(bo) && m->pm_state != BO_PM_SUSPENDED)
			bo_backup_drop(bo->dev, bo);
	}
	pthread_mutex_unlock(&m->lock);
	return ret;
}

UGPU_API int ugpu_bo_migrate(struct ugpu_bo *bo, enum ugpu_placement placement)
{
	struct bo_sys old = { .mem = { .fd = -1 } };
	struct bo_mgr *m;
	struct rpm *held;
	int ret;

	if (!bo || (placement != UGPU_PLACEMENT_VRAM && placement != UGPU_PLACEMENT_SYSTEM))
		return -EINVAL;
	if (bo_is_remote(bo))
		return bo_remote_migrate(bo, placement);
	ret = bo_lock(bo, &held, &m);
	if (ret)
		return ret;
	if (m->closed)
		ret = -ENODEV;
	else if (!bo_placement_allowed(bo, placement))
		ret = -EINVAL;
	else if ((bo->pin_count || vm_bo_busy_locked(bo)) && bo->placement != placement)
		ret = -EBUSY;
	else /* others' reads and writes go on during the copy (struct bo_mgr) */
		ret = bo_move_locked_release(bo, placement, &old);
	if (!ret)
		bo_lru_update_locked(bo);
	bo_unlock_free(m, held, bo, &old);
	return ret;
}

int bo_recycle(struct ugpu_bo *bo, const char *name)
{
	struct bo_mgr *m;
	int ret = 0;

	if (bo->size > BO_RECYCLE_MAX)
		return -EFBIG;
	bo_lock_common(bo, NULL, &m, true);
	/* The caller's reference the only one (a bind or a job holds its
	 * own), in system memory as made (its first placement: a BO that
	 * prefers VRAM and was moved out is not what a create gives; review
	 * of 2026-12-07), held and pinned by nobody. */
	if (m->closed || device_is_removed(bo->dev))
		ret = -ENODEV;
	else if (__atomic_load_n(&bo->refcount, __ATOMIC_ACQUIRE) != 1 ||
		 bo->placement != UGPU_PLACEMENT_SYSTEM ||
		 bo->placements[0] != UGPU_PLACEMENT_SYSTEM || bo->pin_count || bo->sys_holds ||
		 bo->map || bo->lost || bo->survivor || bo->discarded || bo->corrupt ||
		 bo->svm || bo->driver_owned || bo->sys.mem.fd < 0 || !bo->sys.mem.vaddr ||
		 bo->nplacements != bo->user_nplacements ||
		 memcmp(bo->placements, bo->user_placements,
			bo->nplacements * sizeof(bo->placements[0])))
		ret = -EBUSY;
	if (!ret && name) {
		/* the same pages (a device holding them pinned sees the zeros) */
		memset(bo->sys.mem.vaddr, 0, bo->sys.mem.size);
		snprintf(bo->name, sizeof(bo->name), "%s", name);
	}
	pthread_mutex_unlock(&m->lock);
	return ret;
}

int bo_maps_get_locked(struct ugpu_device *dev)
{
	struct bo_mgr *m = mgr_of(dev);
	struct cpu_map_mgr_opts o = {
		.size = sizeof(o),
		.release_by_invalidate = __atomic_load_n(&test_release_by_invalidate,
							 __ATOMIC_RELAXED),
		.fault_hist = &dev->bo_fault_hist,
	};
	int ret;

	if (m->maps)
		return 0;
	/* The transport is only reached while the device is not removed:
	 * dev->removed is set under this lock before the transport closes.
	 * Removed: every BO is in system memory. */
	ret = device_is_removed(dev) ? 0
				     : dev->vdev->ops->region_fd(dev->vdev, dev->profile->vram_region,
								&m->vram_fd, &m->vram_fd_off);
	if (ret) {
		log_err(dev->ctx, "%s: VRAM cannot be mapped by the CPU: %s", dev->name,
			ugpu_strerror(ret));
		return ret;
	}
	ret = cpu_map_mgr_create(dev->ctx, &o, &m->maps);
	if (ret) {
		log_err(dev->ctx, "%s: no userfaultfd for CPU mappings: %s", dev->name,
			ugpu_strerror(ret));
		if (ret == -EPERM)
			ret = -ENOSYS;
	}
	return ret;
}

UGPU_API int ugpu_bo_map(struct ugpu_bo *bo, void **addr)
{
	struct ugpu_device *dev;
	struct bo_mgr *m;
	int ret = 0;

	if (!bo || !addr)
		return -EINVAL;
	if (bo_is_remote(bo))
		return bo_remote_map(bo, addr);
	bo_lock(bo, NULL, &m);
	dev = bo->dev;
	if (m->closed) {
		ret = -ENODEV;
		goto out;
	}
	if (bo->map) {
		*addr = bo->map_addr;
		goto out;
	}
	ret = bo_maps_get_locked(dev);
	if (ret)
		goto out;
	ret = cpu_map_create(m->maps, &bo_map_ops, bo, bo->size, bo->name, &bo->map, &bo->map_addr);
	if (ret)
		goto out;
	/* A touch during a move waits for it: never less than the move may
	 * legitimately take (a slow but in-bound copy is not a failure). */
	cpu_map_set_block_timeout(bo->map, bo_map_block_timeout_ms(bo));
	/* a touch of a gone device's BO waits for the removal (fault_begin's
	 * -EINPROGRESS: mm/bo_rpm.c), which is bounded as a whole */
	cpu_map_set_await_timeout(bo->map, UNPLUG_API_TIMEOUT_MS);
	/* A VRAM BO of a suspended device: hold faults until resume. */
	if (m->pm_state == BO_PM_SUSPENDED && bo->placement == UGPU_PLACEMENT_VRAM) {
		ret = cpu_map_block(bo->map);
		if (ret) {
			cpu_map_destroy(bo->map);
			bo->map = NULL;
			bo->map_addr = NULL;
			goto out;
		}
		bo->map_blocked = true;
	}
	*addr = bo->map_addr;
out:
	pthread_mutex_unlock(&m->lock);
	return ret;
}

UGPU_API int ugpu_bo_unmap(struct ugpu_bo *bo)
{
	struct bo_mgr *m;
	int ret = 0;

	if (!bo)
		return -EINVAL;
	if (bo_is_remote(bo))
		return bo_remote_unmap(bo);
	bo_lock(bo, NULL, &m);
	if (m->closed) {
		ret = -ENODEV;
	} else if (!bo->map) {
		ret = -EINVAL;
	} else {
		backup_map_going(bo);
		cpu_map_destroy(bo->map);
		/* No fault can list it again. Only the mapping goes: a D3cold
		 * backup may hold the BO's only copy while the device sleeps. */
		bo_rpm_unmapped(bo);
		bo->map = NULL;
		bo->map_addr = NULL;
		bo->map_blocked = false;
	}
	pthread_mutex_unlock(&m->lock);
	return ret;
}

/* CPU copy between @buf and the BO's bytes [off, off+len). Lock held. */
static int bo_rw_locked(struct ugpu_bo *bo, uint64_t off, void *buf, size_t len, bool write)
{
	struct ugpu_device *dev = bo->dev;
	struct bo_mgr *m = mgr_of(dev);
	struct buddy_block *b;
	uint64_t pos = 0;
	char *p = buf;

	if (bo->placement == UGPU_PLACEMENT_NONE)
		return -ENODATA;
	if (bo->placement == UGPU_PLACEMENT_SYSTEM) {
		if (!len)
			return 0; /* @buf may be NULL then: no memcpy(NULL) */
		if (write)
			memcpy((char *)bo->sys.mem.vaddr + off, buf, len);
		else
			memcpy(buf, (char *)bo->sys.mem.vaddr + off, len);
		return 0;
	}
	if (m->pm_state == BO_PM_SUSPENDED)
		return -EBUSY;
	if (write)
		bo_backup_dirty_locked(bo, off, len);
	buddy_list_for_each(b, bo->vram) {
		uint64_t bsz = vram_block_size(b);

		if (len && off < pos + bsz) {
			uint64_t in = off - pos, n = bsz - in;
			char *v = (char *)dev->vram + buddy_block_offset(b) + in;

			if (n > len)
				n = len;
			if (write)
				memcpy(v, p, n);
			else
				memcpy(p, v, n);
			p += n;
			off += n;
			len -= n;
		}
		pos += bsz;
	}
	return 0;
}

static int bo_rw(struct ugpu_bo *bo, uint64_t offset, void *buf, size_t len, bool write)
{
	struct bo_mgr *m;
	struct rpm *held = NULL;
	int ret;

	if (!bo || (!buf && len) || offset > bo->size || len > bo->size - offset)
		return -EINVAL;
	if (bo_is_remote(bo))
		return bo_remote_rw(bo, offset, buf, len, write);
	/* not held up by another BO's unlocked move (struct bo_mgr): this
	 * touches only @bo's own backing and its LRU link */
	bo_lock_common(bo, NULL, &m, true);
	if (m->closed) {
		pthread_mutex_unlock(&m->lock);
		return -ENODEV;
	}
	/* A BO in VRAM is read and written through the BAR: hold the device
	 * awake. The reference cannot be taken under the lock, so let go, take
	 * it, and look again (the BO may have moved meanwhile, to system memory
	 * or to another device; a reference held for a BO that left VRAM is
	 * merely unneeded). */
	if (bo->placement == UGPU_PLACEMENT_VRAM) {
		pthread_mutex_unlock(&m->lock);
		ret = bo_lock_common(bo, &held, &m, true);
		if (ret)
			return ret;
	}
	ret = m->closed ? -ENODEV : bo_rw_locked(bo, offset, buf, len, write);
	if (!ret && list_linked(&bo->lru)) {
		list_del(&bo->lru);
		list_add_tail(&m->lru, &bo->lru);
	}
	pthread_mutex_unlock(&m->lock);
	bo_rpm_release(held);
	return ret;
}

UGPU_API int ugpu_bo_write(struct ugpu_bo *bo, uint64_t offset, const void *buf, size_t len)
{
	return bo_rw(bo, offset, (void *)buf, len, true);
}

UGPU_API int ugpu_bo_read(struct ugpu_bo *bo, uint64_t offset, void *buf, size_t len)
{
	return bo_rw(bo, offset, buf, len, false);
}

UGPU_API int ugpu_bo_query(struct ugpu_bo *bo, struct ugpu_bo_info *info)
{
	struct ugpu_bo_info i = { 0 };
	struct bo_mgr *m;
	size_t n;

	if (!bo || !info || info->size < sizeof(info->size))
		return -EINVAL;
	if (bo_is_remote(bo))
		return bo_remote_query(bo, info);
	i.size = info->size;
	/* only @bo's own fields: not held up by another BO's unlocked move */
	bo_lock_common(bo, NULL, &m, true);
	if (m->closed) {
		pthread_mutex_unlock(&m->lock);
		return -ENODEV;
	}
	i.bytes = bo->size;
	i.placement = bo->placement;
	i.vram_offset = bo->placement == UGPU_PLACEMENT_VRAM ? bo_vram_offset(bo) : 0;
	i.flags = bo->flags;
	i.pin_count = bo->pin_count;
	i.cpu_mapped = bo->map != NULL;
	i.lost = bo->lost;
	i.discarded = bo->discarded;
	i.has_backup = bo_has_backup(bo);
	i.corrupt = bo->corrupt;
	pthread_mutex_unlock(&m->lock);
	n = info->size < sizeof(i) ? info->size : sizeof(i);
	memcpy(info, &i, n);
	return 0;
}

UGPU_API int ugpu_device_mem_stats(struct ugpu_device *dev, struct ugpu_device_mem *st)
{
	struct ugpu_device_mem s = { 0 };
	struct bo_mgr *m;
	size_t n;

	if (!dev || !st || st->size < sizeof(st->size))
		return -EINVAL;
	if (device_is_remote(dev))
		return remote_mem_stats(dev, st);
	m = mgr_of(dev);
	s.size = st->size;
	s.vram_size = dev->vram_size;
	/* Plainly, not waiting for a move's unlocked copy (struct bo_mgr,
	 * "Unlocked moves"): nothing of the manager changes during it, and
	 * ugpud reads these on its loop after every request (persist.c). A
	 * read then sees the move's destination allocated, not yet switched. */
	pthread_mutex_lock(&m->lock);
	/* 0 and 0 once removed: the allocator went with the device. */
	vram_usage(dev, &s.vram_used, &s.vram_free);
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (bo->backup.mem.fd >= 0)
			s.backup_bytes += bo->backup.mem.size;
		if (bo->driver_owned) {
			if (bo->placement == UGPU_PLACEMENT_VRAM)
				s.vram_kernel += bo->size;
			continue;
		}
		s.bos++;
		if (bo->placement == UGPU_PLACEMENT_VRAM) {
			s.bos_vram++;
			s.vram_bos += bo->size;
		} else if (bo->placement == UGPU_PLACEMENT_SYSTEM) {
			s.bos_system++;
		} else if (bo->lost) {
			s.bos_lost++;
		}
	}
	s.system_bytes = m->sys_bytes;
	s.evictions = m->evictions;
	s.evicted_bytes = m->evicted_bytes;
	s.moves = m->moves;
	s.moved_bytes = m->moved_bytes;
	s.copy_failures = m->copy_failures;
	s.peer_out = m->peer_out;
	s.peer_in = m->peer_in;
	s.peer_direct = m->peer_direct;
	s.peer_via_system = m->peer_via_system;
	s.peer_bytes = m->peer_bytes;
	pthread_mutex_unlock(&m->lock);
	n = st->size < sizeof(s) ? st->size : sizeof(s);
	memcpy(st, &s, n);
	return 0;
}

/* Counters of this module in the stats registry (base/stats.h): the public
 * struct, then the CPU-fault histogram of BO mappings. */
struct mem_stats_snap {
	struct ugpu_device_mem s;
	struct stat_hist_snap cpu_fault;
};

static int mem_stats_snapshot(struct ugpu_device *dev, void *buf)
{
	struct mem_stats_snap *snap = buf;
	int ret;

	snap->s.size = sizeof(snap->s);
	ret = ugpu_device_mem_stats(dev, &snap->s);
	if (!ret)
		stat_hist_read(&dev->bo_fault_hist, &snap->cpu_fault);
	return ret;
}

static const struct stat_desc mem_stats_descs[] = {
	STAT_NAMED("vram_size_bytes", struct ugpu_device_mem, vram_size, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_BYTES,
		   "VRAM the driver manages"),
	STAT_NAMED("vram_used_bytes", struct ugpu_device_mem, vram_used, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_BYTES,
		   "VRAM allocated, the driver's own objects included"),
	STAT_NAMED("vram_free_bytes", struct ugpu_device_mem, vram_free, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_BYTES,
		   "VRAM not allocated"),
	STAT_NAMED("vram_kernel_bytes", struct ugpu_device_mem, vram_kernel, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_BYTES,
		   "VRAM held by the driver's own objects"),
	STAT_NAMED("vram_bo_bytes", struct ugpu_device_mem, vram_bos, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_BYTES,
		   "VRAM held by the program's BOs"),
	STAT_NAMED("system_bo_bytes", struct ugpu_device_mem, system_bytes, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_BYTES,
		   "system memory held by BOs placed there"),
	STAT_NAMED("backup_bytes", struct ugpu_device_mem, backup_bytes, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_BYTES,
		   "system memory held by host-suspend backups"),
	STAT_NAMED("bos", struct ugpu_device_mem, bos, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_NONE,
		   "live BOs"),
	STAT_NAMED("bos_vram", struct ugpu_device_mem, bos_vram, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_NONE,
		   "live BOs whose contents are in VRAM"),
	STAT_NAMED("bos_system", struct ugpu_device_mem, bos_system, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_NONE,
		   "live BOs whose contents are in system memory"),
	STAT_NAMED("bos_lost", struct ugpu_device_mem, bos_lost, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_NONE,
		   "live BOs whose contents were lost (surprise removal)"),
	STAT_NAMED("bo_evict_count", struct ugpu_device_mem, evictions, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "BOs evicted from VRAM to make room"),
	STAT_NAMED("bo_evict_bytes", struct ugpu_device_mem, evicted_bytes, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_BYTES,
		   "bytes of the BOs evicted"),
	STAT_NAMED("bo_move_count", struct ugpu_device_mem, moves, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "BO moves: evictions, migrations, pins, suspend, removal"),
	STAT_NAMED("bo_move_bytes", struct ugpu_device_mem, moved_bytes, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_BYTES,
		   "bytes of the BO moves"),
	STAT_NAMED("bo_copy_failure_count", struct ugpu_device_mem, copy_failures, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "BO moves whose copy failed (the BO stayed)"),
	STAT_HIST("bo_cpu_fault_latency_us", struct mem_stats_snap, cpu_fault, UGPU_STAT_UNIT_US,
		  "time the userfaultfd handler took to serve a CPU fault on a BO mapping"),
};

STATS_GROUP(mem_stats_group, "mem", struct mem_stats_snap, mem_stats_snapshot, mem_stats_descs)
