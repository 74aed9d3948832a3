/* SPDX-License-Identifier: MIT */
/*
 * Host suspend and resume with pinned-object backup (include/ugpu/pm.h,
 * docs/suspend.md): the xe/i915 sequence in userspace.
 *
 * prepare  evict unpinned BOs; allocate + fill backups of VRAM BOs
 * suspend  allocate missed backups; hold VRAM CPU mappings; quiesce engines;
 *          blitter copies (user + late kernel BOs) spread over the copy
 *          engines; CPU copies (early kernel BOs: the engine rings); D3cold
 * resume   D0; CPU-restore early kernel BOs; re-initialise the engines on
 *          their restored rings; blitter-restore the rest (CPU fallback);
 *          free backups; release the mappings
 *
 * Locking: bo_mgr.pm_lock is held across each transition. prepare takes the
 * manager lock per BO, so unpin/destroy interleave with it; suspend and
 * resume hold the manager lock for their whole run (the critical window:
 * unpin/destroy wait for it, and nothing moves under the copies).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ugpu/pm.h>
#include <ugpu/rpm.h>

#include "engines/engine.h"
#include "mm/bo.h"
#include "mm/cpu_map.h"
#include "src/device.h"
#include "src/base/clock.h"
#include "src/base/log.h"
#include "src/rpm.h"
#include "src/base/test_point.h"

static const char *const phase_names[UGPU_PM_PHASE_COUNT] = {
	[UGPU_PM_PHASE_PREPARE_EVICT] = "prepare-evict",
	[UGPU_PM_PHASE_PREPARE_BACKUP] = "prepare-backup",
	[UGPU_PM_PHASE_SUSPEND_ALLOC] = "suspend-alloc",
	[UGPU_PM_PHASE_SUSPEND_QUIESCE] = "suspend-quiesce",
	[UGPU_PM_PHASE_SUSPEND_BLIT] = "suspend-blit",
	[UGPU_PM_PHASE_SUSPEND_CPU] = "suspend-cpu",
	[UGPU_PM_PHASE_SUSPEND_POWER] = "suspend-power",
	[UGPU_PM_PHASE_RESUME_POWER] = "resume-power",
	[UGPU_PM_PHASE_RESUME_EARLY] = "resume-early",
	[UGPU_PM_PHASE_RESUME_ENGINES] = "resume-engines",
	[UGPU_PM_PHASE_RESUME_LATE] = "resume-late",
	[UGPU_PM_PHASE_RESUME_UNPREPARE] = "resume-unprepare",
};

UGPU_API const char *ugpu_pm_phase_name(enum ugpu_pm_phase phase)
{
	if ((unsigned int)phase >= UGPU_PM_PHASE_COUNT)
		return "?";
	return phase_names[phase];
}

/* End of a phase: stats, log, callback. Manager lock held. */
static void phase_end(struct ugpu_device *dev, enum ugpu_pm_phase ph, uint64_t bos,
		      uint64_t bytes, uint64_t t0, int err)
{
	struct bo_mgr *m = dev->bo_mgr;
	uint64_t ns = now_ns() - t0;

	m->pm_stats.phase_ns[ph] = ns;
	m->pm_stats.phase_bos[ph] = bos;
	m->pm_stats.phase_bytes[ph] = bytes;
	if (err)
		log_err(dev->ctx, "%s: %s failed after %.3f ms: %s", dev->vdev->name,
			phase_names[ph], ns / 1e6, ugpu_strerror(err));
	else
		log_info(dev->ctx, "%s: %s: %" PRIu64 " BOs, %" PRIu64 " bytes, %.3f ms",
			 dev->vdev->name, phase_names[ph], bos, bytes, ns / 1e6);
	if (m->pm_opts.progress)
		m->pm_opts.progress(m->pm_opts.user, ph, bos, bytes, ns, err);
}

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

/* Snapshot of every live BO, each with a reference. Manager lock held. */
static int snapshot_locked(struct bo_mgr *m, struct ugpu_bo ***out, size_t *n)
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

static void snapshot_put(struct ugpu_bo **v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		ugpu_bo_put(v[i]);
	free(v);
}

/* Free every backup; the state goes back to ACTIVE. Manager lock held. */
static void unprepare_locked(struct ugpu_device *dev)
{
	struct bo_mgr *m = dev->bo_mgr;

	bo_for_each(l, &m->all)
		backup_drop(dev, bo_of_all(l));
	m->pm_state = BO_PM_ACTIVE;
}

UGPU_API int ugpu_device_pm_set_opts(struct ugpu_device *dev, const struct ugpu_pm_opts *opts)
{
	struct ugpu_pm_opts o = { .size = sizeof(o) };
	struct bo_mgr *m;

	if (!dev || (opts && opts->size < sizeof(opts->size)))
		return -EINVAL;
	if (opts)
		memcpy(&o, opts, opts->size < sizeof(o) ? opts->size : sizeof(o));
	m = dev->bo_mgr;
	pthread_mutex_lock(&m->lock);
	m->pm_opts = o;
	pthread_mutex_unlock(&m->lock);
	return 0;
}

UGPU_API int ugpu_device_pm_stats(struct ugpu_device *dev, struct ugpu_pm_stats *st)
{
	struct ugpu_pm_stats s;
	struct bo_mgr *m;

	if (!dev || !st || st->size < sizeof(st->size))
		return -EINVAL;
	m = dev->bo_mgr;
	pthread_mutex_lock(&m->lock);
	s = m->pm_stats;
	s.state = m->pm_state;
	pthread_mutex_unlock(&m->lock);
	s.size = st->size;
	memcpy(st, &s, st->size < sizeof(s) ? st->size : sizeof(s));
	return 0;
}

/* ---- prepare ----------------------------------------------------------------- */

/* Allocate and fill @bo's backup with the blitter. Manager lock held. */
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
		log_err(dev->ctx, "%s: filling the backup of BO '%s' failed: %s", dev->vdev->name,
			bo->name, ugpu_strerror(ret));
		engine_reset(e);
		backup_drop(dev, bo);
		return -EIO;
	}
	return 0;
}

/*
 * The runtime-PM reference a host-suspend cycle holds from prepare until
 * resume or cancel (see prepare). Through the public calls: they never hold
 * the manager lock across rpm_get() (a runtime suspend's hooks take it) and
 * tolerate a removal (-ENODEV, and a put that does nothing). Called without
 * the manager lock.
 */
static int host_pm_get(struct ugpu_device *dev)
{
	int ret = ugpu_device_rpm_get(dev);

	return ret == -ENODEV ? 0 : ret;
}

static void host_pm_put(struct ugpu_device *dev)
{
	ugpu_device_rpm_put(dev);
}

UGPU_API int ugpu_device_suspend_prepare(struct ugpu_device *dev)
{
	struct ugpu_bo **v = NULL;
	uint64_t t_all, t0, nbo = 0, bytes = 0;
	struct bo_mgr *m;
	size_t n = 0, i;
	int ret;

	if (!dev)
		return -EINVAL;
	m = dev->bo_mgr;
	/*
	 * Host suspend owns the device's power from prepare until resume (or
	 * cancel): it holds a runtime-PM reference all that time, so runtime
	 * PM neither sleeps the device under it nor disagrees with it about the
	 * power state afterwards. prepare also needs the device awake to evict.
	 */
	ret = host_pm_get(dev);
	if (ret)
		return ret;
	pthread_mutex_lock(&m->pm_lock);
	test_point(TEST_POINT_PM_PREPARE);
	if (device_is_removed(dev)) { /* unplugged (src/unplug.c) */
		pthread_mutex_unlock(&m->pm_lock);
		host_pm_put(dev);
		return -ENODEV;
	}
	pthread_mutex_lock(&m->lock);
	if (m->pm_state != BO_PM_ACTIVE) {
		pthread_mutex_unlock(&m->lock);
		pthread_mutex_unlock(&m->pm_lock);
		host_pm_put(dev); /* the reference the earlier prepare took stays */
		return -EBUSY;
	}
	ret = snapshot_locked(m, &v, &n);
	/* From here on unpin drops backups and suspend knows prepare ran. */
	if (!ret)
		m->pm_state = BO_PM_PREPARED;
	pthread_mutex_unlock(&m->lock);
	if (ret)
		goto out_unlock_pm;
	t_all = t0 = now_ns();

	/* Evict what is not pinned; BOs that may only live in VRAM stay and
	 * get a backup below. One BO per lock hold: unpin/destroy interleave. */
	for (i = 0; i < n && !ret; i++) {
		struct ugpu_bo *bo = v[i];

		pthread_mutex_lock(&m->lock);
		if (bo->placement == UGPU_PLACEMENT_VRAM && !bo->pin_count &&
		    bo->nplacements > 1 && __atomic_load_n(&bo->refcount, __ATOMIC_ACQUIRE) > 1) {
			ret = bo_move_locked(bo, UGPU_PLACEMENT_SYSTEM);
			if (!ret) {
				nbo++;
				bytes += bo->size;
			}
		}
		pthread_mutex_unlock(&m->lock);
	}
	pthread_mutex_lock(&m->lock);
	phase_end(dev, UGPU_PM_PHASE_PREPARE_EVICT, nbo, bytes, t0, ret);
	pthread_mutex_unlock(&m->lock);
	if (ret)
		goto out_fail;

	t0 = now_ns();
	nbo = bytes = 0;
	for (i = 0; i < n && !ret; i++) {
		struct ugpu_bo *bo = v[i];

		pthread_mutex_lock(&m->lock);
		/* Still alive for the user (not only our reference), still in
		 * VRAM, and not already backed up. */
		if (needs_backup(bo) && bo->backup.mem.fd < 0 &&
		    __atomic_load_n(&bo->refcount, __ATOMIC_ACQUIRE) > 1) {
			ret = backup_make_locked(dev, bo, true);
			if (!ret) {
				bo->backup_prepared = true;
				nbo++;
				bytes += bo->size;
			}
		}
		pthread_mutex_unlock(&m->lock);
	}
	pthread_mutex_lock(&m->lock);
	m->pm_stats.backups_prepared = nbo;
	phase_end(dev, UGPU_PM_PHASE_PREPARE_BACKUP, nbo, bytes, t0, ret);
	m->pm_stats.prepare_ns = now_ns() - t_all;
	pthread_mutex_unlock(&m->lock);
	if (ret)
		goto out_fail;
	snapshot_put(v, n);
	pthread_mutex_unlock(&m->pm_lock);
	return 0;

out_fail:
	pthread_mutex_lock(&m->lock);
	unprepare_locked(dev);
	m->pm_stats.failures++;
	pthread_mutex_unlock(&m->lock);
	snapshot_put(v, n);
out_unlock_pm:
	pthread_mutex_unlock(&m->pm_lock);
	host_pm_put(dev);
	return ret;
}

UGPU_API int ugpu_device_suspend_cancel(struct ugpu_device *dev)
{
	struct bo_mgr *m;
	bool held;
	int ret = 0;

	if (!dev)
		return -EINVAL;
	m = dev->bo_mgr;
	pthread_mutex_lock(&m->pm_lock);
	pthread_mutex_lock(&m->lock);
	held = m->pm_state == BO_PM_PREPARED;
	if (m->pm_state == BO_PM_SUSPENDED)
		ret = -EBUSY;
	else
		unprepare_locked(dev);
	pthread_mutex_unlock(&m->lock);
	pthread_mutex_unlock(&m->pm_lock);
	if (!ret && held)
		host_pm_put(dev);
	if (!ret)
		log_info(dev->ctx, "%s: suspend cancelled; backups freed", dev->vdev->name);
	return ret;
}

/* ---- suspend ----------------------------------------------------------------- */

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
static int copy_all_locked(struct ugpu_device *dev, bool early, bool restore, bool force_cpu,
			   uint64_t *nbo, uint64_t *nbytes)
{
	struct bo_mgr *m = dev->bo_mgr;
	struct engine *es[DEVICE_MAX_ENGINES];
	const struct ugpu_bo *last[DEVICE_MAX_ENGINES] = { NULL };
	uint64_t fence[DEVICE_MAX_ENGINES] = { 0 }, load[DEVICE_MAX_ENGINES] = { 0 };
	uint64_t pend[DEVICE_MAX_ENGINES] = { 0 }, pend_bos[DEVICE_MAX_ENGINES] = { 0 };
	uint64_t total = 0;
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
	*nbo = *nbytes = 0;
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
		total += bo->size;
		(*nbo)++;
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
	*nbytes = total;
	return ret;
}

/* Undo a suspend that failed before D3cold stuck. Manager lock held. */
static void suspend_recover_locked(struct ugpu_device *dev, enum bo_pm_state was)
{
	struct bo_mgr *m = dev->bo_mgr;
	unsigned int k;

	for (k = 0; k < DEVICE_MAX_ENGINES; k++)
		if (dev->copy[k] && engine_idle(dev->copy[k], 1000))
			engine_reset(dev->copy[k]);
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (bo->map_blocked) {
			cpu_map_unblock(bo->map);
			bo->map_blocked = false;
		}
		if (!bo->backup_prepared)
			backup_drop(dev, bo);
		bo->backup_valid = false;
	}
	m->pm_state = was;
	m->pm_stats.failures++;
}

UGPU_API int ugpu_device_suspend(struct ugpu_device *dev)
{
	uint64_t t_all, t0, nbo = 0, bytes = 0;
	enum bo_pm_state was;
	bool keep_ref = false;
	struct bo_mgr *m;
	unsigned int k;
	int ret = 0;

	if (!dev)
		return -EINVAL;
	m = dev->bo_mgr;
	/*
	 * Without prepare, suspend starts the host-suspend cycle itself: it
	 * takes the runtime-PM reference that resume drops (see prepare), and
	 * the device must be awake for the copies. Taken before the locks, as
	 * prepare does; dropped below when prepare already holds one or the
	 * suspend fails.
	 */
	ret = host_pm_get(dev);
	if (ret)
		return ret;
	pthread_mutex_lock(&m->pm_lock);
	pthread_mutex_lock(&m->lock);
	was = m->pm_state;
	if (device_is_removed(dev)) { /* unplugged (src/unplug.c) */
		ret = -ENODEV;
		goto out_unlock;
	}
	if (was == BO_PM_SUSPENDED) {
		ret = -EBUSY;
		goto out_unlock;
	}
	t_all = t0 = now_ns();

	/* Backups prepare did not make (no prepare, or BOs pinned, created or
	 * moved into VRAM since): allocated now, in the window. */
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (needs_backup(bo) && bo->backup.mem.fd < 0) {
			ret = backup_make_locked(dev, bo, false);
			if (ret)
				break;
			nbo++;
			bytes += bo->size;
		}
	}
	m->pm_stats.backups_missed = nbo;
	phase_end(dev, UGPU_PM_PHASE_SUSPEND_ALLOC, nbo, bytes, t0, ret);
	if (ret)
		goto out_recover;

	/* Hold CPU access to VRAM: the stores made until here are in VRAM and
	 * get copied; a touch from now on waits for resume. */
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (bo->placement == UGPU_PLACEMENT_VRAM && bo->map && !bo->map_blocked) {
			ret = cpu_map_block(bo->map);
			if (ret) {
				log_err(dev->ctx, "%s: cannot hold the CPU mapping of BO '%s': %s",
					dev->vdev->name, bo->name, ugpu_strerror(ret));
				goto out_recover;
			}
			bo->map_blocked = true;
		}
	}

	t0 = now_ns();
	for (k = 0; k < DEVICE_MAX_ENGINES; k++) {
		if (!dev->copy[k])
			continue;
		int r = engine_idle(dev->copy[k], 5000);

		/* Work someone else queued and that failed is theirs; the engine
		 * is reset so the backup copies can run. */
		if (r && (r = engine_reset(dev->copy[k])) && !ret)
			ret = r;
	}
	phase_end(dev, UGPU_PM_PHASE_SUSPEND_QUIESCE, 0, 0, t0, ret);
	if (ret)
		goto out_recover;

	t0 = now_ns();
	ret = copy_all_locked(dev, false, false, false, &nbo, &bytes);
	phase_end(dev, UGPU_PM_PHASE_SUSPEND_BLIT, nbo, bytes, t0, ret);
	if (ret)
		goto out_recover;

	/* The rings last: the blitter ran on them until just now. */
	t0 = now_ns();
	ret = copy_all_locked(dev, true, false, false, &nbo, &bytes);
	phase_end(dev, UGPU_PM_PHASE_SUSPEND_CPU, nbo, bytes, t0, ret);
	if (ret)
		goto out_recover;
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (bo->backup.mem.fd >= 0)
			bo->backup_valid = true;
	}

	t0 = now_ns();
	ret = device_set_power(dev, UGPU_POWER_D3COLD);
	if (ret == -EOPNOTSUPP) {
		/* The device cannot cut its own power (no platform power block:
		 * e.g. ivshmem on vfio-pci). Put it in the deepest state it has;
		 * the host's sleep removes power anyway, so resume restores as if
		 * VRAM was lost. */
		ret = device_set_power(dev, UGPU_POWER_D3HOT);
	}
	phase_end(dev, UGPU_PM_PHASE_SUSPEND_POWER, 0, 0, t0, ret);
	if (ret) {
		/* D3hot keeps VRAM: come back up and carry on as before. */
		if (device_set_power(dev, UGPU_POWER_D0))
			log_err(dev->ctx, "%s: cannot return to D0 after a failed suspend",
				dev->vdev->name);
		goto out_recover;
	}
	m->pm_state = BO_PM_SUSPENDED;
	keep_ref = was == BO_PM_ACTIVE;
	m->pm_stats.critical_ns = now_ns() - t_all;
	log_info(dev->ctx, "%s: suspended in %.3f ms", dev->vdev->name,
		 m->pm_stats.critical_ns / 1e6);
	goto out_unlock;

out_recover:
	suspend_recover_locked(dev, was);
out_unlock:
	pthread_mutex_unlock(&m->lock);
	pthread_mutex_unlock(&m->pm_lock);
	if (!keep_ref)
		host_pm_put(dev);
	return ret;
}

/* ---- resume ------------------------------------------------------------------ */

UGPU_API int ugpu_device_resume(struct ugpu_device *dev)
{
	uint64_t t_all, t0, nbo = 0, bytes = 0;
	struct bo_mgr *m;
	unsigned int k;
	int ret = 0;

	if (!dev)
		return -EINVAL;
	m = dev->bo_mgr;
	pthread_mutex_lock(&m->pm_lock);
	pthread_mutex_lock(&m->lock);
	if (m->pm_state != BO_PM_SUSPENDED) {
		ret = -EBUSY;
		goto out_unlock;
	}
	t_all = t0 = now_ns();
	ret = device_set_power(dev, UGPU_POWER_D0);
	phase_end(dev, UGPU_PM_PHASE_RESUME_POWER, 0, 0, t0, ret);
	if (ret) {
		log_err(dev->ctx, "%s: the device did not wake: %s; every backup is kept, resume again",
			dev->vdev->name, ugpu_strerror(ret));
		m->pm_stats.failures++;
		goto out_unlock;
	}

	/* The engines' rings and fence pages first, by CPU. */
	t0 = now_ns();
	ret = copy_all_locked(dev, true, true, false, &nbo, &bytes);
	phase_end(dev, UGPU_PM_PHASE_RESUME_EARLY, nbo, bytes, t0, ret);
	if (ret)
		goto out_fail;

	/* D3cold reset the engines' registers: program them again on the
	 * restored rings. */
	t0 = now_ns();
	for (k = 0; k < DEVICE_MAX_ENGINES && !ret; k++)
		if (dev->copy[k])
			ret = engine_reset(dev->copy[k]);
	phase_end(dev, UGPU_PM_PHASE_RESUME_ENGINES, nr_copy_engines(dev), 0, t0, ret);
	if (ret)
		goto out_fail;

	t0 = now_ns();
	ret = copy_all_locked(dev, false, true, false, &nbo, &bytes);
	if (ret) {
		log_warn(dev->ctx, "%s: blitter restore failed (%s); restoring by CPU",
			 dev->vdev->name, ugpu_strerror(ret));
		m->pm_stats.failures++;
		ret = copy_all_locked(dev, false, true, true, &nbo, &bytes);
	}
	phase_end(dev, UGPU_PM_PHASE_RESUME_LATE, nbo, bytes, t0, ret);
	if (ret)
		goto out_fail;

	t0 = now_ns();
	nbo = 0;
	m->pm_stats.discarded = 0;
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (bo->placement == UGPU_PLACEMENT_VRAM && (bo->flags & UGPU_BO_NO_RESTORE)) {
			bo->discarded++;
			m->pm_stats.discarded++;
		} else if (bo->placement == UGPU_PLACEMENT_VRAM && !bo->backup_valid) {
			/* Cannot happen by construction; say so loudly if it does. */
			log_err(dev->ctx, "%s: BO '%s' had no backup over suspend", dev->vdev->name,
				bo->name);
		}
		if (bo->backup.mem.fd >= 0)
			nbo++;
		backup_drop(dev, bo);
		if (bo->map_blocked) {
			cpu_map_unblock(bo->map);
			bo->map_blocked = false;
		}
	}
	m->pm_state = BO_PM_ACTIVE;
	phase_end(dev, UGPU_PM_PHASE_RESUME_UNPREPARE, nbo, 0, t0, 0);
	m->pm_stats.resume_ns = now_ns() - t_all;
	m->pm_stats.cycles++;
	log_info(dev->ctx, "%s: resumed in %.3f ms", dev->vdev->name, m->pm_stats.resume_ns / 1e6);
	pthread_mutex_unlock(&m->lock);
	pthread_mutex_unlock(&m->pm_lock);
	host_pm_put(dev); /* taken by prepare */
	return 0;

out_fail:
	/* Backups are intact and still valid: a later resume starts over. */
	m->pm_stats.failures++;
out_unlock:
	pthread_mutex_unlock(&m->lock);
	pthread_mutex_unlock(&m->pm_lock);
	return ret;
}
