/* SPDX-License-Identifier: MIT */
/*
 * Host suspend and resume (include/ugpu/pm.h, docs/suspend.md): the xe/i915
 * sequence in userspace. This file runs the state machine and the phases;
 * what each phase does to buffer objects is the memory layer's
 * (src/suspend.h, struct pm_mem_ops; mm/backup.c).
 *
 * prepare  evict unpinned BOs; allocate + fill backups of VRAM BOs
 * suspend  allocate missed backups; hold VRAM CPU mappings; quiesce engines;
 *          blitter copies (user + late kernel BOs) spread over the copy
 *          engines; CPU copies (early kernel BOs: the engine rings); D3cold
 * resume   D0; CPU-restore early kernel BOs; re-initialise the engines on
 *          their restored rings; blitter-restore the rest (CPU fallback);
 *          free backups; release the mappings
 *
 * Locking: struct host_pm.lock is held across each transition; the memory
 * layer's window (mem->window_begin .. window_end) across suspend and
 * resume, so unpin/destroy wait and nothing moves under the copies.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ugpu/pm.h>
#include <ugpu/rpm.h>

#include "base/stats.h"
#include "engines/engine.h"
#include "engines/exec.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/test_point.h"
#include "src/device.h"
#include "src/remote.h"
#include "src/rpm.h"
#include "src/suspend.h"

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

int host_pm_init(struct ugpu_device *dev)
{
	struct host_pm *pm = calloc(1, sizeof(*pm));

	if (!pm)
		return -ENOMEM;
	pthread_mutex_init(&pm->lock, NULL);
	pthread_mutex_init(&pm->stats_lock, NULL);
	pm->opts.size = sizeof(pm->opts);
	pm->stats.size = sizeof(pm->stats);
	dev->pm = pm;
	return 0;
}

bool host_pm_try_enter(struct ugpu_device *dev)
{
	return dev->pm && !pthread_mutex_trylock(&dev->pm->lock);
}

void host_pm_leave(struct ugpu_device *dev)
{
	pthread_mutex_unlock(&dev->pm->lock);
}

void host_pm_free(struct ugpu_device *dev)
{
	struct host_pm *pm = dev->pm;

	if (!pm)
		return;
	pthread_mutex_destroy(&pm->stats_lock);
	pthread_mutex_destroy(&pm->lock);
	free(pm);
	dev->pm = NULL;
}

void pm_mem_register(struct ugpu_device *dev, const struct pm_mem_ops *ops, void *arg)
{
	dev->pm->mem = ops;
	dev->pm->mem_arg = arg;
}

/* End of a phase: stats, log, callback. The callback runs with the
 * host-suspend lock (and in the window the memory layer's lock) held. */
static void phase_end(struct ugpu_device *dev, enum ugpu_pm_phase ph, const struct pm_count *c,
		      uint64_t t0, int err)
{
	struct host_pm *pm = dev->pm;
	uint64_t ns = now_ns() - t0;
	struct ugpu_pm_opts o;

	pthread_mutex_lock(&pm->stats_lock);
	pm->stats.phase_ns[ph] = ns;
	pm->stats.phase_bos[ph] = c ? c->bos : 0;
	pm->stats.phase_bytes[ph] = c ? c->bytes : 0;
	o = pm->opts;
	pthread_mutex_unlock(&pm->stats_lock);
	if (err)
		log_err(dev->ctx, "%s: %s failed after %.3f ms: %s", dev->name, phase_names[ph],
			ns / 1e6, ugpu_strerror(err));
	else
		log_info(dev->ctx, "%s: %s: %" PRIu64 " BOs, %" PRIu64 " bytes, %.3f ms", dev->name,
			 phase_names[ph], c ? c->bos : 0, c ? c->bytes : 0, ns / 1e6);
	if (o.progress)
		o.progress(o.user, ph, c ? c->bos : 0, c ? c->bytes : 0, ns, err);
}

void pm_report_corrupt(struct ugpu_device *dev, const char *bo_name, uint64_t off, uint64_t size)
{
	struct host_pm *pm = dev->pm;
	struct ugpu_pm_opts o;

	pthread_mutex_lock(&pm->stats_lock);
	o = pm->opts;
	pthread_mutex_unlock(&pm->stats_lock);
	log_err(dev->ctx, "%s: the suspend backup of BO '%s' (%" PRIu64 " bytes) is damaged from byte %" PRIu64 " on (checksum mismatch); restored from it anyway",
		dev->name, bo_name, size, off);
	if (o.corrupt)
		o.corrupt(o.user, bo_name, off, size);
}

/* Do kernels run between prepare and suspend (UGPU_PM_KERNELS_RUN)? */
static bool pm_kernels_run(struct host_pm *pm)
{
	bool on;

	pthread_mutex_lock(&pm->stats_lock);
	on = pm->opts.flags & UGPU_PM_KERNELS_RUN;
	pthread_mutex_unlock(&pm->stats_lock);
	return on;
}

static void stat_set(struct host_pm *pm, uint64_t *field, uint64_t v)
{
	pthread_mutex_lock(&pm->stats_lock);
	*field = v;
	pthread_mutex_unlock(&pm->stats_lock);
}

/* A spill figure of the last run, also added to the running total. */
static void stat_spill(struct host_pm *pm, uint64_t *field, uint64_t bytes)
{
	pthread_mutex_lock(&pm->stats_lock);
	*field = bytes;
	pm->stats.spill_bytes += bytes;
	pthread_mutex_unlock(&pm->stats_lock);
}

static void stat_inc(struct host_pm *pm, uint64_t *field)
{
	pthread_mutex_lock(&pm->stats_lock);
	(*field)++;
	pthread_mutex_unlock(&pm->stats_lock);
}

/* The memory layer's ops, or -ENODEV before it registered (not reached:
 * it registers at bring-up) or after close. */
static int pm_ready(struct ugpu_device *dev, const struct pm_mem_ops **mem, void **arg)
{
	if (!dev || !dev->pm)
		return -EINVAL;
	*mem = dev->pm->mem;
	*arg = dev->pm->mem_arg;
	return *mem ? 0 : -ENODEV;
}

UGPU_API int ugpu_device_pm_set_opts(struct ugpu_device *dev, const struct ugpu_pm_opts *opts)
{
	if (dev && device_is_remote(dev))
		return -EOPNOTSUPP; /* not served through ugpud yet */
	struct ugpu_pm_opts o = { .size = sizeof(o) };
	size_t dlen = 0;

	if (!dev || !dev->pm || (opts && opts->size < sizeof(opts->size)))
		return -EINVAL;
	if (opts)
		memcpy(&o, opts, opts->size < sizeof(o) ? opts->size : sizeof(o));
	if (o.flags & ~UGPU_PM_FLAGS_ALL)
		return -EINVAL;
	if (o.spill_dir) {
		dlen = strnlen(o.spill_dir, PATH_MAX);
		if (!dlen)
			return -EINVAL;
		if (dlen >= PATH_MAX)
			return -ENAMETOOLONG;
	}
	pthread_mutex_lock(&dev->pm->stats_lock);
	if (o.spill_dir) {
		memcpy(dev->pm->spill_dir, o.spill_dir, dlen + 1);
		o.spill_dir = dev->pm->spill_dir;
	} else {
		dev->pm->spill_dir[0] = '\0';
	}
	dev->pm->opts = o;
	pthread_mutex_unlock(&dev->pm->stats_lock);
	return 0;
}

void pm_spill_config(struct ugpu_device *dev, char *dir, size_t dirlen, uint64_t *limit)
{
	struct host_pm *pm = dev->pm;

	pthread_mutex_lock(&pm->stats_lock);
	snprintf(dir, dirlen, "%s", pm->spill_dir);
	*limit = pm->opts.backup_mem_limit;
	pthread_mutex_unlock(&pm->stats_lock);
}

UGPU_API int ugpu_device_pm_stats(struct ugpu_device *dev, struct ugpu_pm_stats *st)
{
	if (dev && device_is_remote(dev))
		return -EOPNOTSUPP; /* not served through ugpud yet */
	const struct pm_mem_ops *mem;
	struct ugpu_pm_stats s;
	void *arg;

	if (!dev || !st || st->size < sizeof(st->size) || pm_ready(dev, &mem, &arg) == -EINVAL)
		return -EINVAL;
	pthread_mutex_lock(&dev->pm->stats_lock);
	s = dev->pm->stats;
	pthread_mutex_unlock(&dev->pm->stats_lock);
	s.state = mem ? mem->state(arg) : UGPU_PM_ACTIVE;
	s.size = st->size;
	memcpy(st, &s, st->size < sizeof(s) ? st->size : sizeof(s));
	return 0;
}

/*
 * The runtime-PM reference a host-suspend cycle holds from prepare until
 * resume or cancel (see prepare). Through the public calls: they never hold
 * a lock across rpm_get() that a runtime suspend's hooks take, and tolerate
 * a removal (-ENODEV, and a put that does nothing). Taken before the
 * host-suspend lock.
 */
static int host_rpm_get(struct ugpu_device *dev)
{
	int ret = rpm_get_dev(dev);

	return ret == -ENODEV ? 0 : ret;
}

static void host_rpm_put(struct ugpu_device *dev)
{
	rpm_put_dev(dev);
}

/*
 * GPU kernels: a cycle stops new launches and waits for the running kernels
 * before anything moves (prepare evicts, suspend copies; a kernel writing a
 * BO being copied would lose its stores). Kernels submitted meanwhile wait
 * and run after resume. Called with the host-suspend lock held and NOT the
 * memory layer's: the exec engine's thread may need it to hand over an end.
 */
#define PM_EXEC_IDLE_MS 5000
#ifdef UGPU_TEST_HOOKS
int pm_exec_idle_ms_test;
#define EXEC_IDLE_MS (pm_exec_idle_ms_test ? pm_exec_idle_ms_test : PM_EXEC_IDLE_MS)
#else
#define EXEC_IDLE_MS PM_EXEC_IDLE_MS
#endif
#define PM_EXEC_SLICE_MS 20

/*
 * The wait goes in slices, so that a device that vanished is noticed: a
 * kernel on it never ends, and the removal that would abandon it waits for
 * the host-suspend lock this caller holds (so the transition answers
 * -ENODEV at once, as pm.h says, instead of -ETIMEDOUT after 5 s; found by
 * the model test: a notifier's prepare, a kernel, a surprise removal). The
 * block stays raised across the slices (each is a nested block and
 * unblock), so nothing launches in between.
 */
static int exec_hold(struct ugpu_device *dev, bool *took)
{
	struct host_pm *pm = dev->pm;
	int ret, waited = PM_EXEC_SLICE_MS;

	*took = false;
	if (pm->exec_held || !dev->exec)
		return 0;
	ret = exec_block(dev->exec, PM_EXEC_SLICE_MS);
	while (ret && waited < EXEC_IDLE_MS && !vfio_dev_is_gone(dev->vdev)) {
		ret = exec_block(dev->exec, PM_EXEC_SLICE_MS);
		exec_unblock(dev->exec);
		waited += PM_EXEC_SLICE_MS;
	}
	if (ret) {
		exec_unblock(dev->exec);
		if (vfio_dev_is_gone(dev->vdev)) {
			log_err(dev->ctx, "%s: the device vanished with GPU kernels on it: no suspend",
				dev->name);
			return -ENODEV;
		}
		log_err(dev->ctx, "%s: GPU kernels still run after %d ms: no suspend", dev->name,
			EXEC_IDLE_MS);
		return -ETIMEDOUT;
	}
	pm->exec_held = *took = true;
	return 0;
}

/* @lost: the exec queues' registers were reset (power was cut). */
static void exec_release(struct ugpu_device *dev, bool lost)
{
	struct host_pm *pm = dev->pm;

	if (!pm->exec_held)
		return;
	pm->exec_held = false;
	if (!dev->exec)
		return; /* removed meanwhile: the engine is gone */
	if (lost)
		exec_hw_lost(dev->exec);
	exec_unblock(dev->exec);
}

/* A transition that failed because the device vanished under it says so
 * (-ENODEV), whatever step noticed first. Host-suspend lock held: the
 * removal, which swaps the transport, cannot run. */
static int gone_or(struct ugpu_device *dev, int ret)
{
	return ret && vfio_dev_is_gone(dev->vdev) ? -ENODEV : ret;
}

/* ---- prepare ----------------------------------------------------------------- */

UGPU_API int ugpu_device_suspend_prepare(struct ugpu_device *dev)
{
	if (dev && device_is_remote(dev))
		return -EOPNOTSUPP; /* not served through ugpud yet */
	const struct pm_mem_ops *mem;
	struct pm_count c = { 0 };
	uint64_t t_all, t0;
	struct host_pm *pm;
	bool took;
	void *arg;
	int ret;

	ret = pm_ready(dev, &mem, &arg);
	if (ret)
		return ret;
	pm = dev->pm;
	/*
	 * Host suspend owns the device's power from prepare until resume (or
	 * cancel): it holds a runtime-PM reference all that time, so runtime
	 * PM neither sleeps the device under it nor disagrees with it about the
	 * power state afterwards. prepare also needs the device awake to evict.
	 */
	ret = host_rpm_get(dev);
	if (ret)
		return ret;
	pthread_mutex_lock(&pm->lock);
	test_point(TEST_POINT_PM_PREPARE);
	if (device_is_removed(dev)) { /* unplugged (src/unplug.c) */
		pthread_mutex_unlock(&pm->lock);
		host_rpm_put(dev);
		return -ENODEV;
	}
	ret = exec_hold(dev, &took);
	if (ret) {
		pthread_mutex_unlock(&pm->lock);
		host_rpm_put(dev);
		return ret;
	}
	ret = mem->prepare_begin(arg);
	if (ret) {
		if (took)
			exec_release(dev, false);
		pthread_mutex_unlock(&pm->lock);
		host_rpm_put(dev); /* an earlier prepare's reference stays */
		return ret;
	}
	t_all = t0 = now_ns();
	ret = mem->prepare_evict(arg, &c);
	phase_end(dev, UGPU_PM_PHASE_PREPARE_EVICT, &c, t0, ret);
	if (!ret) {
		t0 = now_ns();
		memset(&c, 0, sizeof(c));
		ret = mem->prepare_backup(arg, &c);
		stat_set(pm, &pm->stats.backups_prepared, c.bos);
		stat_spill(pm, &pm->stats.spill_prepare_bytes, c.spill_bytes);
		phase_end(dev, UGPU_PM_PHASE_PREPARE_BACKUP, &c, t0, ret);
		stat_set(pm, &pm->stats.prepare_ns, now_ns() - t_all);
	}
	mem->prepare_end(arg, ret);
	if (ret) {
		stat_inc(pm, &pm->stats.failures);
		exec_release(dev, false);
		ret = gone_or(dev, ret);
	} else if (pm_kernels_run(pm)) {
		/* Kernels run on until suspend; the BOs they may write are
		 * marked at each launch (mm/submit.c) and copied again. */
		exec_release(dev, false);
	}
	pthread_mutex_unlock(&pm->lock);
	if (ret)
		host_rpm_put(dev);
	return ret;
}

UGPU_API int ugpu_device_suspend_cancel(struct ugpu_device *dev)
{
	if (dev && device_is_remote(dev))
		return -EOPNOTSUPP; /* not served through ugpud yet */
	const struct pm_mem_ops *mem;
	bool held = false;
	void *arg;
	int ret;

	ret = pm_ready(dev, &mem, &arg);
	if (ret)
		return ret == -ENODEV ? 0 : ret;
	pthread_mutex_lock(&dev->pm->lock);
	ret = mem->cancel(arg, &held);
	if (!ret)
		exec_release(dev, false);
	pthread_mutex_unlock(&dev->pm->lock);
	if (!ret && held)
		host_rpm_put(dev);
	if (!ret)
		log_info(dev->ctx, "%s: suspend cancelled; backups freed", dev->name);
	return ret;
}

/* ---- suspend ----------------------------------------------------------------- */

UGPU_API int ugpu_device_suspend(struct ugpu_device *dev)
{
	if (dev && device_is_remote(dev))
		return -EOPNOTSUPP; /* not served through ugpud yet */
	const struct pm_mem_ops *mem;
	struct pm_count c = { 0 };
	enum ugpu_pm_state was = UGPU_PM_ACTIVE;
	uint64_t t_all, t0;
	bool keep_ref = false, took = false;
	struct host_pm *pm;
	unsigned int k;
	void *arg;
	int ret;

	ret = pm_ready(dev, &mem, &arg);
	if (ret)
		return ret;
	pm = dev->pm;
	/*
	 * Without prepare, suspend starts the host-suspend cycle itself: it
	 * takes the runtime-PM reference that resume drops (see prepare), and
	 * the device must be awake for the copies. Taken before the locks, as
	 * prepare does; dropped below when prepare already holds one or the
	 * suspend fails.
	 */
	ret = host_rpm_get(dev);
	if (ret)
		return ret;
	pthread_mutex_lock(&pm->lock);
	if (device_is_removed(dev)) { /* unplugged (src/unplug.c) */
		ret = -ENODEV;
		goto out_unlock_pm;
	}
	ret = exec_hold(dev, &took);
	if (ret)
		goto out_unlock_pm;
	ret = mem->window_begin(arg, false, &was);
	if (ret)
		goto out_unlock_pm;
	t_all = t0 = now_ns();

	ret = mem->alloc_missing(arg, &c);
	stat_set(pm, &pm->stats.backups_missed, c.bos);
	phase_end(dev, UGPU_PM_PHASE_SUSPEND_ALLOC, &c, t0, ret);
	if (ret)
		goto out_recover;

	ret = mem->hold_maps(arg);
	if (ret)
		goto out_recover;

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
	phase_end(dev, UGPU_PM_PHASE_SUSPEND_QUIESCE, NULL, t0, ret);
	if (ret)
		goto out_recover;

	t0 = now_ns();
	memset(&c, 0, sizeof(c));
	ret = mem->save(arg, false, &c);
	stat_spill(pm, &pm->stats.spill_window_bytes, c.spill_bytes);
	stat_set(pm, &pm->stats.spill_window_ns, c.spill_ns);
	stat_set(pm, &pm->stats.spilled_bos, c.spill_bos);
	phase_end(dev, UGPU_PM_PHASE_SUSPEND_BLIT, &c, t0, ret);
	if (ret)
		goto out_recover;

	/* The rings last: the blitter ran on them until just now. */
	t0 = now_ns();
	memset(&c, 0, sizeof(c));
	ret = mem->save(arg, true, &c);
	phase_end(dev, UGPU_PM_PHASE_SUSPEND_CPU, &c, t0, ret);
	if (ret)
		goto out_recover;

	t0 = now_ns();
	ret = device_set_power(dev, UGPU_POWER_D3COLD);
	if (ret == -EOPNOTSUPP) {
		/* The device cannot cut its own power (no platform power block:
		 * e.g. ivshmem on vfio-pci). Put it in the deepest state it has;
		 * the host's sleep removes power anyway, so resume restores as if
		 * VRAM was lost. */
		ret = device_set_power(dev, UGPU_POWER_D3HOT);
	}
	phase_end(dev, UGPU_PM_PHASE_SUSPEND_POWER, NULL, t0, ret);
	if (ret) {
		/* D3hot keeps VRAM: come back up and carry on as before. */
		if (device_set_power(dev, UGPU_POWER_D0))
			log_err(dev->ctx, "%s: cannot return to D0 after a failed suspend", dev->name);
		goto out_recover;
	}
	mem->suspended(arg);
	keep_ref = was == UGPU_PM_ACTIVE;
	stat_set(pm, &pm->stats.critical_ns, now_ns() - t_all);
	log_info(dev->ctx, "%s: suspended in %.3f ms", dev->name, (now_ns() - t_all) / 1e6);
	goto out_window;

out_recover:
	for (k = 0; k < DEVICE_MAX_ENGINES; k++)
		if (dev->copy[k] && engine_idle(dev->copy[k], 1000))
			engine_reset(dev->copy[k]);
	mem->recover(arg, was);
	stat_inc(pm, &pm->stats.failures);
out_window:
	mem->window_end(arg);
out_unlock_pm:
	/* A failed suspend that started the cycle ends it; one that
	 * followed a prepare leaves the hold to resume or cancel. */
	if (ret && took)
		exec_release(dev, false);
	ret = gone_or(dev, ret);
	pthread_mutex_unlock(&pm->lock);
	if (!keep_ref)
		host_rpm_put(dev);
	return ret;
}

/* ---- resume ------------------------------------------------------------------ */

UGPU_API int ugpu_device_resume(struct ugpu_device *dev)
{
	if (dev && device_is_remote(dev))
		return -EOPNOTSUPP; /* not served through ugpud yet */
	const struct pm_mem_ops *mem;
	struct pm_count c = { 0 };
	enum ugpu_pm_state was;
	uint64_t t_all, t0, discarded = 0, corrupt = 0;
	struct host_pm *pm;
	unsigned int k;
	void *arg;
	int ret;

	ret = pm_ready(dev, &mem, &arg);
	if (ret)
		return ret == -ENODEV ? -EBUSY : ret;
	pm = dev->pm;
	pthread_mutex_lock(&pm->lock);
	ret = mem->window_begin(arg, true, &was);
	if (ret)
		goto out_unlock_pm;
	t_all = t0 = now_ns();
	ret = device_set_power(dev, UGPU_POWER_D0);
	phase_end(dev, UGPU_PM_PHASE_RESUME_POWER, NULL, t0, ret);
	test_point(TEST_POINT_PM_RESUMED_D0);
	if (ret) {
		log_err(dev->ctx, "%s: the device did not wake: %s; every backup is kept, resume again",
			dev->name, ugpu_strerror(ret));
		goto out_fail;
	}

	/* The engines' rings and fence pages first, by CPU. */
	t0 = now_ns();
	ret = mem->restore(arg, true, false, &c);
	corrupt += c.corrupt;
	phase_end(dev, UGPU_PM_PHASE_RESUME_EARLY, &c, t0, ret);
	if (ret)
		goto out_fail;

	/* D3cold reset the engines' registers: program them again on the
	 * restored rings. */
	t0 = now_ns();
	for (k = 0; k < DEVICE_MAX_ENGINES && !ret; k++)
		if (dev->copy[k])
			ret = engine_reset(dev->copy[k]);
	c.bos = 0;
	for (k = 0; k < DEVICE_MAX_ENGINES; k++)
		c.bos += dev->copy[k] != NULL;
	c.bytes = 0;
	phase_end(dev, UGPU_PM_PHASE_RESUME_ENGINES, &c, t0, ret);
	if (ret)
		goto out_fail;

	t0 = now_ns();
	ret = mem->restore(arg, false, false, &c);
	corrupt += c.corrupt;
	if (ret) {
		log_warn(dev->ctx, "%s: blitter restore failed (%s); restoring by CPU", dev->name,
			 ugpu_strerror(ret));
		stat_inc(pm, &pm->stats.failures);
		ret = mem->restore(arg, false, true, &c);
	}
	stat_set(pm, &pm->stats.spill_read_bytes, c.spill_bytes);
	phase_end(dev, UGPU_PM_PHASE_RESUME_LATE, &c, t0, ret);
	if (ret)
		goto out_fail;

	t0 = now_ns();
	memset(&c, 0, sizeof(c));
	mem->finish(arg, &c, &discarded);
	stat_set(pm, &pm->stats.discarded, discarded);
	c.bytes = 0;
	phase_end(dev, UGPU_PM_PHASE_RESUME_UNPREPARE, &c, t0, 0);
	stat_set(pm, &pm->stats.resume_ns, now_ns() - t_all);
	stat_set(pm, &pm->stats.corrupt, corrupt);
	stat_inc(pm, &pm->stats.cycles);
	log_info(dev->ctx, "%s: resumed in %.3f ms", dev->name, (now_ns() - t_all) / 1e6);
	mem->window_end(arg);
	/* The exec queues' registers were reset with the power: programmed
	 * again at the next launch; kernels that waited start now. */
	exec_release(dev, true);
	pthread_mutex_unlock(&pm->lock);
	host_rpm_put(dev); /* taken by prepare */
	/* Resumed; the damaged backups were reported one by one. */
	return corrupt ? -EBADMSG : 0;

out_fail:
	/* Backups are intact and still valid: a later resume starts over. */
	stat_inc(pm, &pm->stats.failures);
	mem->window_end(arg);
out_unlock_pm:
	pthread_mutex_unlock(&pm->lock);
	return ret;
}

/* Counters of this module in the stats registry (base/stats.h). */
static int pm_stats_snapshot(struct ugpu_device *dev, void *buf)
{
	return ugpu_device_pm_stats(dev, buf);
}

static const struct stat_desc pm_stats_descs[] = {
	STAT_NAMED("pm_state", struct ugpu_pm_stats, state, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_NONE,
		   "host-suspend state (enum ugpu_pm_state)"),
	STAT_NAMED("pm_prepare_ns", struct ugpu_pm_stats, prepare_ns, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_NS,
		   "the last host-suspend prepare, whole"),
	STAT_NAMED("pm_critical_ns", struct ugpu_pm_stats, critical_ns, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_NS,
		   "the last host suspend's critical window"),
	STAT_NAMED("pm_resume_ns", struct ugpu_pm_stats, resume_ns, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_NS,
		   "the last resume, whole"),
	STAT_NAMED("pm_backups_prepared", struct ugpu_pm_stats, backups_prepared, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_NONE,
		   "backups the last prepare made"),
	STAT_NAMED("pm_backups_missed", struct ugpu_pm_stats, backups_missed, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_NONE,
		   "backups the last suspend had to allocate itself"),
	STAT_NAMED("pm_discarded", struct ugpu_pm_stats, discarded, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_NONE,
		   "NO_RESTORE BOs whose contents the last suspend dropped"),
	STAT_NAMED("pm_cycle_count", struct ugpu_pm_stats, cycles, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "completed host suspend/resume cycles"),
	STAT_NAMED("pm_failure_count", struct ugpu_pm_stats, failures, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "host-suspend transitions that failed and were recovered"),
	STAT_NAMED("pm_corrupt", struct ugpu_pm_stats, corrupt, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_NONE,
		   "backups the last resume found damaged"),
};

STATS_GROUP(pm_stats_group, "pm", struct ugpu_pm_stats, pm_stats_snapshot, pm_stats_descs)
