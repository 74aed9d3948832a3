/* SPDX-License-Identifier: MIT */
/*
 * Moving buffer objects: the LRU, eviction to make room in VRAM, byte-exact
 * moves between VRAM and system memory by the copy engine, and the system
 * memory BOs and backups live in. Locking: the manager lock (mm/bo.h) is
 * held by every caller, across a whole move, copy included.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/mman.h>

#include "engines/engine.h"
#include "base/test_point.h"
#include "mm/bo.h"
#include "mm/bo_rpm.h"
#include "mm/cpu_map.h"
#include "mm/vram.h"
#include "base/log.h"
#include "base/progress.h"
#include "src/device.h"
#include "src/remote.h"

#define PAGE_SIZE_BO 4096u
/* Largest single engine descriptor we queue (the device takes up to 1 GiB). */
#define COPY_CHUNK (256ull << 20)

static struct bo_mgr *mgr_of(struct ugpu_device *dev)
{
	return dev->bo_mgr;
}

/* ---- the LRU ---------------------------------------------------------------- */

#define bo_of_lru(link) list_entry(link, struct ugpu_bo, lru)

void bo_lru_del_locked(struct ugpu_bo *bo)
{
	if (list_linked(&bo->lru)) {
		list_del(&bo->lru);
		mgr_of(bo->dev)->nr_lru--;
	}
}

/* Put @bo at the most-recently-used end if it belongs on the LRU at all. */
void bo_lru_update_locked(struct ugpu_bo *bo)
{
	struct bo_mgr *m = mgr_of(bo->dev);

	bo_lru_del_locked(bo);
	if (bo->placement == UGPU_PLACEMENT_VRAM && !bo->pin_count) {
		list_add_tail(&m->lru, &bo->lru);
		m->nr_lru++;
	}
}

/* ---- helpers -------------------------------------------------------------- */

int bo_copy_timeout_ms(uint64_t bytes)
{
	return 5000 + (int)(bytes >> 28) * 1000;
}

unsigned int bo_map_block_timeout_ms(const struct ugpu_bo *bo)
{
	return (unsigned int)bo_copy_timeout_ms(bo->size) + BO_BLOCK_SLACK_MS;
}

int bo_copy_range_queue(struct engine *e, const struct buddy_list *blocks, uint64_t off,
			uint64_t len, uint64_t iova, bool to_vram, uint64_t *fence)
{
	struct buddy_block *b;
	uint64_t start = 0, done = 0;
	int ret = 0;

	engine_plug(e);
	buddy_list_for_each(b, blocks) {
		/* Block sizes are chunk << order; the list does not carry the mm,
		 * so derive the size from the order with the 4 KiB chunk all
		 * device VRAM managers use. */
		uint64_t bsz = (uint64_t)BUDDY_MIN_CHUNK << buddy_block_order(b);
		uint64_t boff = buddy_block_offset(b), pos;

		if (done >= len)
			break;
		if (off + done >= start + bsz) {
			start += bsz;
			continue;
		}
		pos = off + done - start;
		while (pos < bsz && done < len) {
			uint64_t n = bsz - pos;

			if (n > len - done)
				n = len - done;
			if (n > COPY_CHUNK)
				n = COPY_CHUNK;
			if (to_vram)
				ret = engine_copy(e, engine_vram(boff + pos), engine_iova(iova + done), n,
						  fence);
			else
				ret = engine_copy(e, engine_iova(iova + done), engine_vram(boff + pos), n,
						  fence);
			if (ret)
				goto out;
			pos += n;
			done += n;
		}
		start += bsz;
	}
out:
	{
		int r = engine_unplug(e);

		if (!ret)
			ret = r;
	}
	return ret;
}

int bo_copy_queue(struct engine *e, const struct buddy_list *blocks, uint64_t size, uint64_t iova,
		  bool to_vram, uint64_t *fence)
{
	return bo_copy_range_queue(e, blocks, 0, size, iova, to_vram, fence);
}

int bo_sys_alloc_locked(struct ugpu_device *dev, uint64_t size, const char *name, bool backup,
			struct bo_sys *out)
{
	struct bo_mgr *m = mgr_of(dev);
	int ret;

	out->mem.fd = -1;
	out->mem.vaddr = NULL;
	out->iova = 0;
#ifdef UGPU_TEST_HOOKS
	if (backup && m->fail_backup_at) {
		if (m->fail_backup_at == 1) {
			if (!m->fail_backup_always)
				m->fail_backup_at = 0;
			log_err(dev->ctx, "%s: backup of BO '%s' (%" PRIu64 " bytes): injected allocation failure",
				dev->name, name, size);
			return -ENOMEM;
		}
		m->fail_backup_at--;
	}
#else
	(void)m;
#endif
	ret = sysmem_create(dev->ctx, size, name, &out->mem);
	if (ret)
		return ret;
	if (device_is_removed(dev))
		return 0; /* unplug: no device to map it for (iova 0) */
	ret = dma_map_sysmem(&dev->dma, &out->mem, VFIO_DMA_READ | VFIO_DMA_WRITE, &out->iova);
	if (ret == -ENODEV && !backup) {
		/* The device went away and its removal has not finished: the
		 * memory is good without a mapping (the removal drops every
		 * mapping anyway); a copy that needs the IOVA fails on its own.
		 * A backup without its mapping is useless: that fails. */
		log_dbg(dev->ctx, "%s: the device is gone: system memory of BO '%s' left unmapped",
			dev->name, name);
		out->iova = 0;
		return 0;
	}
	if (ret) {
		log_err(dev->ctx, "%s: cannot map %" PRIu64 " bytes of system memory for BO '%s': %s",
			dev->name, size, name, ugpu_strerror(ret));
		sysmem_destroy(&out->mem);
		return ret;
	}
	if (backup) {
		/* A backup is written in the suspend window: fault its pages in
		 * now so the copy there runs at memcpy speed. */
		if (madvise(out->mem.vaddr, out->mem.size, MADV_POPULATE_WRITE))
			memset(out->mem.vaddr, 0, out->mem.size);
	}
	return 0;
}

void bo_sys_free(struct ugpu_device *dev, struct bo_sys *s)
{
	int ret;

	if (s->mem.fd < 0)
		return;
	/* iova 0: never mapped, or unmapped by the removal (src/unplug.c) */
	ret = s->iova ? dma_unmap(&dev->dma, s->iova, s->mem.size) : 0;
	if (ret && ret != -ENODEV)
		log_warn(dev->ctx, "%s: DMA unmap of a BO's system memory failed: %s",
			 dev->name, ugpu_strerror(ret));
	sysmem_destroy(&s->mem);
	s->mem.fd = -1;
	s->iova = 0;
}

/* ---- eviction and moves ---------------------------------------------------- */

/* May leave VRAM now: allowed in system memory (or a shared-virtual-memory
 * range, which goes back to the process), and no GPU kernel uses it. */
static bool evictable(const struct ugpu_bo *bo, const struct ugpu_bo *except)
{
	return bo != except &&
	       (bo_placement_allowed(bo, UGPU_PLACEMENT_SYSTEM) || bo_svm_evictable_locked(bo)) &&
	       !vm_bo_busy_locked(bo);
}

void bo_svm_register(struct ugpu_device *dev, const struct bo_svm_ops *ops, void *arg)
{
	struct bo_mgr *m = mgr_of(dev);

	bo_mgr_lock(m);
	m->svm_ops = ops;
	m->svm_arg = arg;
	pthread_mutex_unlock(&m->lock);
}

const struct bo_svm_ops *bo_svm_ops_get(struct bo_mgr *m, void **arg)
{
	const struct bo_svm_ops *ops;

	bo_mgr_lock(m);
	ops = m->svm_ops;
	*arg = m->svm_arg;
	pthread_mutex_unlock(&m->lock);
	return ops;
}

void bo_mark_svm(struct ugpu_bo *bo)
{
	struct bo_mgr *m = mgr_of(bo->dev);

	bo_mgr_lock(m);
	bo->svm = true;
	pthread_mutex_unlock(&m->lock);
}

/*
 * Evict @victim: to system memory, or for a shared-virtual-memory range
 * back into the process (svm/ copies it; its VRAM is freed here and the BO
 * is left with no backing until svm/ puts it). -EBUSY: svm/ cannot now.
 */
bool bo_pm_active(struct ugpu_device *dev)
{
	struct bo_mgr *m;
	bool active;

	if (device_is_remote(dev))
		return true; /* the daemon's power state: its requests say -EAGAIN */
	m = mgr_of(dev);
	bo_mgr_lock(m);
	active = m->pm_state == BO_PM_ACTIVE;
	pthread_mutex_unlock(&m->lock);
	return active;
}

void bo_pm_wait_awake(struct ugpu_device *dev)
{
	struct bo_mgr *m;

	if (device_is_remote(dev))
		return;
	m = mgr_of(dev);
	bo_mgr_lock(m);
	while (m->pm_state == BO_PM_SUSPENDED && !m->closed && !device_is_removed(dev))
		pthread_cond_wait(&m->pm_cond, &m->lock);
	pthread_mutex_unlock(&m->lock);
}

bool bo_svm_evictable_locked(const struct ugpu_bo *bo)
{
	return bo->svm && mgr_of(bo->dev)->svm_ops && bo->placement == UGPU_PLACEMENT_VRAM;
}

int bo_evict_locked(struct ugpu_bo *victim)
{
	struct bo_mgr *m = mgr_of(victim->dev);
	int ret;

	if (!victim->svm)
		return bo_move_locked(victim, UGPU_PLACEMENT_SYSTEM);
	ret = m->svm_ops->evict(m->svm_arg, victim);
	if (ret)
		return ret;
	bo_rpm_forget(victim);
	bo_lru_del_locked(victim);
	vram_free(m->dev, victim->vram, 0);
	m->vram_bytes -= victim->size;
	/* a host-suspend backup of it has nothing left to restore */
	bo_backup_free_locked(m->dev, victim);
	bo_set_placement(victim, UGPU_PLACEMENT_NONE);
	return 0;
}

/*
 * The least recently used BO that can go to system memory, other than
 * @except, and not in use by a running GPU kernel. Second chance: a BO touched through its CPU mapping since the
 * last look (the fault path cannot take the manager lock to bump it) goes
 * to the MRU end once instead.
 */
static struct ugpu_bo *lru_pick(struct bo_mgr *m, struct ugpu_bo *except)
{
	uint64_t budget = 2 * m->nr_lru + 1;
	struct list_link *l = m->lru.next;

	while (l != &m->lru && budget--) {
		struct ugpu_bo *bo = bo_of_lru(l);
		struct list_link *next = l->next;

		if (evictable(bo, except)) {
			if (!__atomic_exchange_n(&bo->touched, 0, __ATOMIC_RELAXED))
				return bo;
			list_del(&bo->lru);
			list_add_tail(&m->lru, &bo->lru);
			if (next == &m->lru)
				next = m->lru.next;
		}
		l = next;
	}
	/* Everything was touched: take the first candidate anyway. */
	for (l = m->lru.next; l != &m->lru; l = l->next) {
		struct ugpu_bo *bo = bo_of_lru(l);

		if (evictable(bo, except))
			return bo;
	}
	return NULL;
}

/* VRAM for @bo, evicting unpinned BOs in LRU order until it fits. */
int bo_vram_alloc_evict_locked(struct ugpu_bo *bo, struct buddy_list *out)
{
	return bo_vram_alloc_evict_on_locked(bo->dev, bo, out);
}

static int evict_for_locked(struct ugpu_device *dev, struct ugpu_bo *bo, unsigned int flags,
			    struct buddy_list *out, struct progress *pr);

int bo_vram_alloc_evict_on_locked(struct ugpu_device *dev, struct ugpu_bo *bo,
				  struct buddy_list *out)
{
	unsigned int flags = bo->buddy_flags;
	struct progress pr;
	int ret;

	if (bo->flags & UGPU_BO_CONTIGUOUS)
		flags |= BUDDY_CONTIGUOUS_ALLOCATION;
	if (bo->size > dev->vram_size)
		return -ENOSPC;
	ret = vram_alloc(dev, bo->size, PAGE_SIZE_BO, flags, out);
	if (ret != -ENOSPC || bo->speculative)
		return ret;
	/* VRAM held back for a restart record (mm/vram.h) before anything is
	 * evicted: an eviction would free into it too */
	ret = vram_held_claim(dev, bo->size);
	if (ret < 0)
		return ret;
	if (ret) {
		ret = vram_alloc(dev, bo->size, PAGE_SIZE_BO, flags, out);
		if (ret != -ENOSPC)
			return ret;
	}
	/* Evictions: reported as one operation over the bytes it needs. */
	progress_begin(&pr, dev->ctx, UGPU_PROGRESS_EVICT, dev->name, bo->size);
	ret = evict_for_locked(dev, bo, flags, out, &pr);
	progress_end(&pr, ret);
	return ret;
}

/* Evict until @bo's VRAM can be had (bo_vram_alloc_evict_on_locked()). */
static int evict_for_locked(struct ugpu_device *dev, struct ugpu_bo *bo, unsigned int flags,
			    struct buddy_list *out, struct progress *pr)
{
	struct bo_mgr *m = mgr_of(dev);
	uint64_t evicted = 0;
	int ret;

	for (uint64_t refused = 0;;) {
		struct ugpu_bo *victim;

		victim = lru_pick(m, bo);
		if (!victim)
			return -ENOSPC;
		log_dbg(dev->ctx, "%s: evicting BO '%s' (%" PRIu64 " bytes) for '%s'",
			dev->name, victim->name, victim->size, bo->name);
		ret = bo_evict_locked(victim);
		if (ret == -EBUSY && victim->svm) {
			/* its range is busy: the next one (each refusal sends
			 * it to the MRU end; bounded by the LRU's length) */
			if (++refused > m->nr_lru)
				return -ENOSPC;
			bo_lru_update_locked(victim);
			continue;
		}
		if (ret)
			return ret;
		m->evictions++;
		m->evicted_bytes += victim->size;
		evicted += victim->size;
		progress_grow(pr, evicted); /* victims larger than the room needed */
		progress_add(pr, victim->size);
		/* the victim's VRAM, when held back (refused: once the
		 * evictions made room enough, the record first, -ERESTART) */
		ret = vram_held_claim(dev, bo->size);
		if (ret < 0)
			return ret;
		ret = vram_alloc(dev, bo->size, PAGE_SIZE_BO, flags, out);
		if (ret != -ENOSPC)
			return ret;
	}
}

/* bo_move_locked(); @release: let go of the manager lock while the copy
 * runs (struct bo_mgr, "Unlocked moves"), and hand the old system memory of
 * a move to VRAM to the caller in *@release (freed without the lock). */
static int move_locked(struct ugpu_bo *bo, enum ugpu_placement to, struct bo_sys *release)
{
	struct ugpu_device *dev = bo->dev;
	struct bo_mgr *m = mgr_of(dev);
	enum ugpu_placement from = bo->placement;
	struct buddy_list new_blocks;
	struct bo_sys new_sys = { .mem = { .fd = -1 } };
	struct engine *e;
	uint64_t fence = 0;
	int ret;

	if (from == to)
		return 0;
	if (to == UGPU_PLACEMENT_VRAM && device_is_removed(dev))
		return -ENODEV; /* unplugged: src/unplug.c */
	if (!bo_placement_allowed(bo, to)) {
		log_err(dev->ctx, "%s: BO '%s' may not be placed in %s", dev->name, bo->name,
			to == UGPU_PLACEMENT_VRAM ? "VRAM" : "system memory");
		return -EINVAL;
	}
	if (from == UGPU_PLACEMENT_NONE)
		return -ENODATA;
	if (m->pm_state == BO_PM_SUSPENDED)
		return -EBUSY;
	if (bo->sys_holds)
		return -EBUSY; /* its memfd is mapped by a ugpud client (bo_sys_export()) */

	/* Destination first: the map is blocked only for the copy itself. */
	buddy_list_init(&new_blocks);
	if (to == UGPU_PLACEMENT_VRAM)
		ret = bo_vram_alloc_evict_locked(bo, &new_blocks);
	else
		ret = bo_sys_alloc_locked(dev, bo->size, bo->name, false, &new_sys);
	if (ret)
		return ret;

	if (bo->map) {
		ret = cpu_map_block(bo->map);
		if (ret) {
			log_err(dev->ctx, "%s: cannot invalidate the CPU mapping of BO '%s': %s",
				dev->name, bo->name, ugpu_strerror(ret));
			goto out_free_dest;
		}
	}

	e = device_copy_engine(dev);
	if (to == UGPU_PLACEMENT_SYSTEM)
		ret = bo_copy_queue(e, bo->vram, bo->size, new_sys.iova, false, &fence);
	else
		ret = bo_copy_queue(e, &new_blocks, bo->size, bo->sys.iova, true, &fence);
	if (!ret && release) {
		/* Nothing of the manager changes meanwhile but other BOs' CPU
		 * reads and writes: every other taker of the lock waits in
		 * bo_mgr_lock() until @moving drops, bo_rw() of this BO too. */
		bo->moving = true;
		m->moving++;
		pthread_mutex_unlock(&m->lock);
		test_point_obj(TEST_POINT_BO_MOVE_COPY, bo);
		ret = engine_wait(e, fence, bo_copy_timeout_ms(bo->size));
		pthread_mutex_lock(&m->lock);
		bo->moving = false;
		m->moving--;
		pthread_cond_broadcast(&m->moved);
	} else if (!ret) {
		ret = engine_wait(e, fence, bo_copy_timeout_ms(bo->size));
	}
	if (ret) {
		log_err(dev->ctx, "%s: moving BO '%s' to %s failed (%s); it stays where it was",
			dev->name, bo->name, to == UGPU_PLACEMENT_VRAM ? "VRAM" : "system memory",
			ugpu_strerror(ret));
		engine_reset(e);
		m->copy_failures++;
		ret = -EIO;
		goto out_unblock;
	}

	/* Switch: resolve() sees the new backing once the map is unblocked. */
	if (to == UGPU_PLACEMENT_SYSTEM) {
		bo_lru_del_locked(bo);
		bo_rpm_unmapped(bo); /* left VRAM: not released at runtime suspend */
		bo->sys = new_sys;
		new_sys.mem.fd = -1;
		bo_set_placement(bo, UGPU_PLACEMENT_SYSTEM);
		vram_free(dev, bo->vram, 0);
		m->vram_bytes -= bo->size;
		m->sys_bytes += bo->size;
		/* System memory survives suspend: a backup is no longer needed. */
		bo_backup_free_locked(dev, bo);
	} else {
		buddy_list_splice_tail(bo->vram, &new_blocks);
		bo_set_placement(bo, UGPU_PLACEMENT_VRAM);
		if (release) { /* unmapping and freeing it is the caller's, unlocked */
			*release = bo->sys;
			bo->sys.mem.fd = -1;
			bo->sys.iova = 0;
		}
		bo_sys_free(dev, &bo->sys);
		m->sys_bytes -= bo->size;
		m->vram_bytes += bo->size;
		bo_lru_update_locked(bo);
	}
	m->moves++;
	m->moved_bytes += bo->size;

out_unblock:
	if (bo->map) {
		int r = cpu_map_unblock(bo->map);

		if (r)
			log_err(dev->ctx, "%s: unblocking the CPU mapping of BO '%s' failed: %s",
				dev->name, bo->name, ugpu_strerror(r));
	}
out_free_dest:
	if (!buddy_list_is_empty(&new_blocks))
		vram_free(dev, &new_blocks, 0);
	bo_sys_free(dev, &new_sys);
	return ret;
}

int bo_move_locked(struct ugpu_bo *bo, enum ugpu_placement to)
{
	return move_locked(bo, to, NULL);
}

int bo_move_locked_release(struct ugpu_bo *bo, enum ugpu_placement to, struct bo_sys *old)
{
	old->mem.fd = -1;
	old->iova = 0;
	return move_locked(bo, to, old);
}
