/* SPDX-License-Identifier: MIT */
/*
 * The memory layer's part of host suspend (src/suspend.h, struct
 * pm_mem_ops): evictions before the window, backups of the VRAM BOs that
 * must survive, their copies in the window and back at resume. The state
 * machine, the phases' timing and the power state are src/suspend.c's; this
 * file owns every BO field it changes. docs/suspend.md has the sequence.
 *
 * Locking: the host-suspend lock (src) is held around every op. Prepare's
 * ops take the manager lock per BO, so unpin and destroy interleave with
 * them; the window (window_begin .. window_end) holds the manager lock for
 * its whole run: unpin and destroy wait, and nothing moves under the copies.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "engines/engine.h"
#include "mm/bo.h"
#include "mm/cpu_map.h"
#include "base/log.h"
#include "src/device.h"
#include "src/suspend.h"

/* Must survive the suspend: a VRAM BO not marked NO_RESTORE. */
static bool needs_backup(const struct ugpu_bo *bo)
{
	return bo->placement == UGPU_PLACEMENT_VRAM && !(bo->flags & UGPU_BO_NO_RESTORE);
}

/* Saved and restored by CPU, before the engines exist: early kernel BOs. */
static bool is_early(const struct ugpu_bo *bo)
{
	return (bo->flags & UGPU_BO_KERNEL) && !(bo->flags & UGPU_BO_LATE_RESTORE);
}

static void backup_drop(struct ugpu_device *dev, struct ugpu_bo *bo)
{
	bo_sys_free(dev, &bo->backup);
	bo->backup_prepared = bo->backup_valid = false;
}

/* Free every backup; the state goes back to ACTIVE. Manager lock held. */
static void unprepare_locked(struct bo_mgr *m)
{
	bo_for_each(l, &m->all)
		backup_drop(m->dev, bo_of_all(l));
	m->pm_state = BO_PM_ACTIVE;
}

/* Allocate @bo's backup and, with @populate, fill it with the blitter.
 * Manager lock held. */
static int backup_make_locked(struct ugpu_device *dev, struct ugpu_bo *bo, bool populate)
{
	struct engine *e = device_copy_engine(dev);
	uint64_t fence = 0;
	int ret;

	ret = bo_sys_alloc_locked(dev, bo->size, bo->name, true, &bo->backup);
	if (ret)
		return ret;
	if (!populate)
		return 0;
	ret = bo_copy_queue(e, bo->vram, bo->size, bo->backup.iova, false, &fence);
	if (!ret)
		ret = engine_wait(e, fence, bo_copy_timeout_ms(bo->size));
	if (ret) {
		log_err(dev->ctx, "%s: filling the backup of BO '%s' failed: %s", dev->name,
			bo->name, ugpu_strerror(ret));
		engine_reset(e);
		backup_drop(dev, bo);
		return -EIO;
	}
	return 0;
}

/* ---- prepare ---------------------------------------------------------------- */

static int prepare_begin(void *arg)
{
	struct bo_mgr *m = arg;
	int ret;

	pthread_mutex_lock(&m->lock);
	if (m->pm_state != BO_PM_ACTIVE) {
		pthread_mutex_unlock(&m->lock);
		return -EBUSY;
	}
	ret = bo_snapshot_locked(m, &m->prep_bos, &m->prep_n);
	/* From here on unpin drops backups and suspend knows prepare ran. */
	if (!ret)
		m->pm_state = BO_PM_PREPARED;
	pthread_mutex_unlock(&m->lock);
	return ret;
}

/* Evict what is not pinned, shared-virtual-memory ranges included (back into
 * the process); BOs that may only live in VRAM stay and get a backup (and a
 * range that is busy now). One BO per lock hold: unpin/destroy interleave. */
static int prepare_evict(void *arg, struct pm_count *c)
{
	struct bo_mgr *m = arg;
	int ret = 0;
	size_t i;

	for (i = 0; i < m->prep_n && !ret; i++) {
		struct ugpu_bo *bo = m->prep_bos[i];

		pthread_mutex_lock(&m->lock);
		if (bo->placement == UGPU_PLACEMENT_VRAM && !bo->pin_count &&
		    bo->nplacements > 1 && __atomic_load_n(&bo->refcount, __ATOMIC_ACQUIRE) > 1) {
			ret = bo_move_locked(bo, UGPU_PLACEMENT_SYSTEM);
			if (!ret) {
				c->bos++;
				c->bytes += bo->size;
			}
		} else if (bo_svm_evictable_locked(bo) && !bo_evict_locked(bo)) {
			c->bos++;
			c->bytes += bo->size;
		}
		pthread_mutex_unlock(&m->lock);
	}
	return ret;
}

static int prepare_backup(void *arg, struct pm_count *c)
{
	struct bo_mgr *m = arg;
	int ret = 0;
	size_t i;

	for (i = 0; i < m->prep_n && !ret; i++) {
		struct ugpu_bo *bo = m->prep_bos[i];

		pthread_mutex_lock(&m->lock);
		/* Still alive for the user (not only our reference), still in
		 * VRAM, and not already backed up. */
		if (needs_backup(bo) && bo->backup.mem.fd < 0 &&
		    __atomic_load_n(&bo->refcount, __ATOMIC_ACQUIRE) > 1) {
			ret = backup_make_locked(m->dev, bo, true);
			if (!ret) {
				bo->backup_prepared = true;
				c->bos++;
				c->bytes += bo->size;
			}
		}
		pthread_mutex_unlock(&m->lock);
	}
	return ret;
}

static void prepare_end(void *arg, int err)
{
	struct bo_mgr *m = arg;

	if (err) {
		pthread_mutex_lock(&m->lock);
		unprepare_locked(m);
		pthread_mutex_unlock(&m->lock);
	}
	bo_snapshot_put(m->prep_bos, m->prep_n);
	m->prep_bos = NULL;
	m->prep_n = 0;
}

static int cancel(void *arg, bool *prepared)
{
	struct bo_mgr *m = arg;
	int ret = 0;

	pthread_mutex_lock(&m->lock);
	*prepared = m->pm_state == BO_PM_PREPARED;
	if (m->pm_state == BO_PM_SUSPENDED)
		ret = -EBUSY;
	else
		unprepare_locked(m);
	pthread_mutex_unlock(&m->lock);
	return ret;
}

/* ---- the window -------------------------------------------------------------- */

static int window_begin(void *arg, bool for_resume, enum ugpu_pm_state *was)
{
	struct bo_mgr *m = arg;

	pthread_mutex_lock(&m->lock);
	*was = (enum ugpu_pm_state)m->pm_state;
	if (for_resume != (m->pm_state == BO_PM_SUSPENDED)) {
		pthread_mutex_unlock(&m->lock);
		return -EBUSY;
	}
	return 0;
}

static void window_end(void *arg)
{
	struct bo_mgr *m = arg;

	pthread_mutex_unlock(&m->lock);
}

static int alloc_missing(void *arg, struct pm_count *c)
{
	struct bo_mgr *m = arg;
	int ret;

	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (needs_backup(bo) && bo->backup.mem.fd < 0) {
			ret = backup_make_locked(m->dev, bo, false);
			if (ret)
				return ret;
			c->bos++;
			c->bytes += bo->size;
		}
	}
	return 0;
}

/* The stores made until here are in VRAM and get copied; a touch from now
 * on waits for resume. */
static int hold_maps(void *arg)
{
	struct bo_mgr *m = arg;
	int ret;

	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (bo->placement == UGPU_PLACEMENT_VRAM && bo->map && !bo->map_blocked) {
			ret = cpu_map_block(bo->map);
			if (ret) {
				log_err(m->dev->ctx, "%s: cannot hold the CPU mapping of BO '%s': %s",
					m->dev->name, bo->name, ugpu_strerror(ret));
				return ret;
			}
			bo->map_blocked = true;
		}
	}
	return 0;
}

static unsigned int nr_copy_engines(struct ugpu_device *dev)
{
	unsigned int n = 0;

	while (n < DEVICE_MAX_ENGINES && dev->copy[n])
		n++;
	return n;
}

/*
 * copy_all_locked() rings an engine's doorbell after this many BOs or bytes
 * queued to it: early enough that the engine starts while the rest is being
 * queued, rarely enough that doorbells (a register write each, a socket round
 * trip over vfio-user) cost little next to the copies.
 */
#define COPY_BATCH_BOS 128
#define COPY_BATCH_BYTES (8ull << 20)

/* The BOs one copy_all_locked() pass handles. */
static bool copy_selected(const struct ugpu_bo *bo, bool early, bool restore)
{
	if (bo->placement != UGPU_PLACEMENT_VRAM || bo->backup.mem.fd < 0 || is_early(bo) != early)
		return false;
	return !restore || bo->backup_valid;
}

/* The engine the next BO goes to: the least loaded by bytes. */
static unsigned int least_loaded(const uint64_t *load, unsigned int ne)
{
	unsigned int k, best = 0;

	for (k = 1; k < ne; k++)
		if (load[k] < load[best])
			best = k;
	return best;
}

/*
 * Copy every selected BO between VRAM and its backup, spread over the copy
 * engines by bytes, and wait for all (bounded). @early: the early kernel
 * BOs, copied by the CPU engine; else the rest, by the blitters (the CPU
 * engine when the device has none, or @force_cpu).
 * Returns 0 or the first -errno; engines that failed are reset.
 */
static int copy_all_locked(struct bo_mgr *m, bool early, bool restore, bool force_cpu,
			   struct pm_count *c)
{
	struct ugpu_device *dev = m->dev;
	struct engine *es[DEVICE_MAX_ENGINES];
	const struct ugpu_bo *last[DEVICE_MAX_ENGINES] = { NULL };
	uint64_t fence[DEVICE_MAX_ENGINES] = { 0 }, load[DEVICE_MAX_ENGINES] = { 0 };
	uint64_t pend[DEVICE_MAX_ENGINES] = { 0 }, pend_bos[DEVICE_MAX_ENGINES] = { 0 };
	unsigned int ne, k;
	int ret = 0, r;

	ne = early || force_cpu ? 0 : nr_copy_engines(dev);
	if (!ne) {
		es[0] = dev->cpu;
		ne = 1;
	} else {
		for (k = 0; k < ne; k++)
			es[k] = dev->copy[k];
	}
	/*
	 * Only each engine's last copy asks for a fence: an engine runs its
	 * ring in order, so that fence covers every copy before it. A fence
	 * per BO would double the descriptors (a ring holds 1023), raise an
	 * interrupt per BO and wake the waiter for each. A dry run of the
	 * (deterministic) assignment finds each engine's last BO.
	 */
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (!copy_selected(bo, early, restore))
			continue;
		k = least_loaded(load, ne);
		load[k] += bo->size;
		last[k] = bo;
	}
	memset(load, 0, sizeof(load));
	for (k = 0; k < ne; k++)
		engine_plug(es[k]);
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (!copy_selected(bo, early, restore))
			continue;
		k = least_loaded(load, ne);
		ret = bo_copy_queue(es[k], bo->vram, bo->size, bo->backup.iova, restore,
				    bo == last[k] ? &fence[k] : NULL);
		if (ret)
			break;
		load[k] += bo->size;
		c->bytes += bo->size;
		c->bos++;
		/* Short batches: a plugged engine starts nothing, so one batch
		 * for the whole pass would leave the engines idle while we
		 * queue. A doorbell per COPY_BATCH_* costs a register write. */
		pend[k] += bo->size;
		if (++pend_bos[k] >= COPY_BATCH_BOS || pend[k] >= COPY_BATCH_BYTES) {
			ret = engine_unplug(es[k]);
			engine_plug(es[k]);
			if (ret)
				break;
			pend[k] = pend_bos[k] = 0;
		}
	}
	for (k = 0; k < ne; k++) {
		r = engine_unplug(es[k]);
		if (!ret)
			ret = r;
	}
	for (k = 0; k < ne; k++) {
		/* On an early failure the last BO was never queued: idle the
		 * engine instead, so nothing still runs into the backups. */
		if (fence[k])
			r = engine_wait(es[k], fence[k], bo_copy_timeout_ms(load[k]));
		else
			r = load[k] ? engine_idle(es[k], bo_copy_timeout_ms(load[k])) : 0;
		if (r) {
			engine_reset(es[k]);
			if (!ret)
				ret = r;
		}
	}
	return ret;
}

static int save(void *arg, bool early, struct pm_count *c)
{
	struct bo_mgr *m = arg;
	int ret = copy_all_locked(m, early, false, false, c);

	if (!ret && early) {
		/* Everything that has a backup now holds the contents. */
		bo_for_each(l, &m->all) {
			struct ugpu_bo *bo = bo_of_all(l);

			if (bo->backup.mem.fd >= 0)
				bo->backup_valid = true;
		}
	}
	return ret;
}

static void suspended(void *arg)
{
	struct bo_mgr *m = arg;

	m->pm_state = BO_PM_SUSPENDED;
}

static void maps_release_locked(struct bo_mgr *m)
{
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (bo->map_blocked) {
			cpu_map_unblock(bo->map);
			bo->map_blocked = false;
		}
	}
}

static void recover(void *arg, enum ugpu_pm_state was)
{
	struct bo_mgr *m = arg;

	maps_release_locked(m);
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (!bo->backup_prepared)
			backup_drop(m->dev, bo);
		bo->backup_valid = false;
	}
	m->pm_state = (enum bo_pm_state)was;
}

static int restore(void *arg, bool early, bool force_cpu, struct pm_count *c)
{
	struct bo_mgr *m = arg;

	memset(c, 0, sizeof(*c));
	return copy_all_locked(m, early, true, force_cpu, c);
}

static void finish(void *arg, struct pm_count *c, uint64_t *discarded)
{
	struct bo_mgr *m = arg;

	*discarded = 0;
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (bo->placement == UGPU_PLACEMENT_VRAM && (bo->flags & UGPU_BO_NO_RESTORE)) {
			bo->discarded++;
			(*discarded)++;
		} else if (bo->placement == UGPU_PLACEMENT_VRAM && !bo->backup_valid) {
			/* Cannot happen by construction; say so loudly if it does. */
			log_err(m->dev->ctx, "%s: BO '%s' had no backup over suspend",
				m->dev->name, bo->name);
		}
		if (bo->backup.mem.fd >= 0)
			c->bos++;
		backup_drop(m->dev, bo);
	}
	maps_release_locked(m);
	m->pm_state = BO_PM_ACTIVE;
}

/* Not from inside a window (it takes the manager lock). */
static enum ugpu_pm_state state(void *arg)
{
	struct bo_mgr *m = arg;
	enum bo_pm_state s;

	pthread_mutex_lock(&m->lock);
	s = m->pm_state;
	pthread_mutex_unlock(&m->lock);
	return (enum ugpu_pm_state)s;
}

static const struct pm_mem_ops backup_pm_ops = {
	.prepare_begin = prepare_begin,
	.prepare_evict = prepare_evict,
	.prepare_backup = prepare_backup,
	.prepare_end = prepare_end,
	.cancel = cancel,
	.window_begin = window_begin,
	.window_end = window_end,
	.alloc_missing = alloc_missing,
	.hold_maps = hold_maps,
	.save = save,
	.suspended = suspended,
	.recover = recover,
	.restore = restore,
	.finish = finish,
	.state = state,
};

void backup_register(struct ugpu_device *dev)
{
	pm_mem_register(dev, &backup_pm_ops, dev->bo_mgr);
}
