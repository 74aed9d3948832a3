/* SPDX-License-Identifier: MIT */
/*
 * Host suspend and resume of a device: the userspace counterpart of the
 * xe/i915 PM notifier + .suspend/.resume with pinned-object backup.
 * See docs/suspend.md.
 *
 * State machine:
 *
 *     ACTIVE --prepare--> PREPARED --suspend--> SUSPENDED --resume--> ACTIVE
 *       |  ^                 |                     (resume failing stays
 *       |  +----cancel-------+                      SUSPENDED: retry it)
 *       +-----------suspend (without prepare)-----> SUSPENDED
 *
 * - prepare (while the rest of the process still runs): evicts every
 *   unpinned BO from VRAM to system memory, and allocates AND fills the
 *   system backup of every VRAM BO that must survive (not NO_RESTORE), so
 *   the suspend window allocates nothing and writes into memory that is
 *   already faulted in.
 * - suspend (the critical window): holds CPU faults on VRAM mappings, quiesces
 *   the engines, copies user and late-restore BOs into their backups with the
 *   blitter, copies the early kernel BOs (engine rings) with the CPU,
 *   allocates any backup prepare missed, and puts the device in D3cold (VRAM
 *   is lost).
 * - resume: D0; the early kernel BOs are restored by CPU; the engines are
 *   re-initialised on their restored rings; late and user BOs are restored by
 *   the blitter; backups are freed; CPU mappings work again.
 * - cancel (unprepare) frees every backup of a prepare that is not followed
 *   by a (successful) suspend.
 */
#ifndef UGPU_PM_H
#define UGPU_PM_H

#include <ugpu/device.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Host-suspend state of a device (struct ugpu_pm_stats.state). */
enum ugpu_pm_state {
	UGPU_PM_ACTIVE = 0,
	UGPU_PM_PREPARED = 1,
	UGPU_PM_SUSPENDED = 2,
};

/** Phases reported to the progress callback and timed in the stats. */
enum ugpu_pm_phase {
	UGPU_PM_PHASE_PREPARE_EVICT = 0, /**< unpinned BOs VRAM -> system */
	UGPU_PM_PHASE_PREPARE_BACKUP, /**< backups allocated and filled */
	UGPU_PM_PHASE_SUSPEND_ALLOC, /**< backups prepare missed */
	UGPU_PM_PHASE_SUSPEND_QUIESCE, /**< engines idle */
	UGPU_PM_PHASE_SUSPEND_BLIT, /**< user + late-restore BOs by blitter */
	UGPU_PM_PHASE_SUSPEND_CPU, /**< early kernel BOs by CPU */
	UGPU_PM_PHASE_SUSPEND_POWER, /**< D3cold */
	UGPU_PM_PHASE_RESUME_POWER, /**< D0 */
	UGPU_PM_PHASE_RESUME_EARLY, /**< early kernel BOs by CPU */
	UGPU_PM_PHASE_RESUME_ENGINES, /**< engines re-initialised */
	UGPU_PM_PHASE_RESUME_LATE, /**< late + user BOs by blitter */
	UGPU_PM_PHASE_RESUME_UNPREPARE, /**< backups freed, mappings released */
	UGPU_PM_PHASE_COUNT
};

/**
 * typedef ugpu_pm_progress_fn - called at the end of each phase.
 * @user: ugpu_pm_opts.user.
 * @phase: the phase that ended.
 * @bos: BOs the phase handled.
 * @bytes: bytes it copied (or allocated, for the allocation phases).
 * @ns: how long it took.
 * @err: 0, or the -errno the phase failed with (the transition then stops).
 *
 * Context: called from the thread running the transition with device locks
 * held: it must be quick and must not call back into ugpu for this device.
 */
typedef void (*ugpu_pm_progress_fn)(void *user, enum ugpu_pm_phase phase, uint64_t bos,
				    uint64_t bytes, uint64_t ns, int err);

/**
 * typedef ugpu_pm_corrupt_fn - resume found a damaged backup.
 * @user: ugpu_pm_opts.user.
 * @bo_name: the BO's name (ugpu_bo_opts.name).
 * @offset: the first damaged byte: the start of the first 64 KiB chunk of
 *          the backup whose checksum did not match.
 * @size: the BO's size.
 *
 * The BO was restored from that backup all the same (it is the only copy):
 * its contents are damaged from @offset on, somewhere. ugpu_device_resume()
 * then returns -EBADMSG.
 * Context: as ugpu_pm_progress_fn.
 */
typedef void (*ugpu_pm_corrupt_fn)(void *user, const char *bo_name, uint64_t offset,
				   uint64_t size);

/*
 * Kernels keep running between prepare and suspend (ugpu_pm_opts.flags).
 * Without it, prepare stops launches until resume or cancel (a kernel
 * submitted meanwhile waits). With it, prepare stops them only while it
 * copies, suspend stops them again (waiting for running ones), and a kernel
 * launched in between marks the ranges of the BOs it has writable binds on
 * to be copied again in the window.
 */
#define UGPU_PM_KERNELS_RUN (1u << 0)
#define UGPU_PM_FLAGS_ALL 0x1u

/**
 * struct ugpu_pm_opts - suspend options (ugpu_device_pm_set_opts()).
 * @size: sizeof(struct ugpu_pm_opts) as the caller compiled it.
 * @progress: phase callback, or NULL.
 * @user: passed to @progress and @corrupt.
 * @corrupt: damaged-backup report, or NULL (the log names the BO anyway).
 * @flags: UGPU_PM_* bits.
 * @backup_mem_limit: bytes of system memory the backups may take; 0: no
 *        limit. With @spill_dir, a backup that would go over it is written
 *        to the spill file instead (a limit smaller than every BO sends them
 *        all there); without @spill_dir it is ignored.
 * @spill_dir: a directory for the spill file, or NULL: no spill (a backup
 *        that cannot be allocated fails prepare or suspend, as always).
 *        Copied (up to PATH_MAX) by ugpu_device_pm_set_opts(). With it, the
 *        backups over @backup_mem_limit, and those whose allocation fails,
 *        go to one file there ("ugpu-spill-PID-DEVICE-XXXXXX"), opened with
 *        O_DIRECT where the filesystem takes it (else through the page
 *        cache, said in the log) and written and read through io_uring. The
 *        file exists while a backup is in it: it is removed after resume,
 *        on cancel, on a failed prepare, and at close (a crash leaves it).
 *        Kernel BOs (UGPU_BO_KERNEL) are never spilled. See docs/suspend.md
 *        "Spill".
 */
struct ugpu_pm_opts {
	size_t size;
	ugpu_pm_progress_fn progress;
	void *user;
	ugpu_pm_corrupt_fn corrupt;
	uint32_t flags;
	uint64_t backup_mem_limit;
	const char *spill_dir;
};

/**
 * struct ugpu_pm_stats - the last cycle's figures and running totals.
 * @size: set by the caller to sizeof(struct ugpu_pm_stats).
 * @state: enum ugpu_pm_state now.
 * @phase_ns: duration of each phase the last time it ran.
 * @phase_bos, @phase_bytes: what each phase handled the last time it ran.
 * @prepare_ns: the last prepare, whole.
 * @critical_ns: the last suspend, whole (the critical window).
 * @resume_ns: the last resume, whole.
 * @backups_prepared: backups the last prepare made.
 * @backups_missed: backups the last suspend had to allocate itself.
 * @discarded: NO_RESTORE BOs whose contents the last suspend dropped.
 * @cycles: completed suspend/resume cycles.
 * @failures: transitions that failed (and were recovered).
 * @corrupt: backups the last resume found damaged (checksum mismatch).
 * @spilled_bos: backups in the spill file when the last suspend ended.
 * @spill_prepare_bytes: bytes the last prepare wrote to the spill file.
 * @spill_window_bytes: bytes the last suspend window wrote to it.
 * @spill_window_ns: of the last window, the time its spill pass took
 *        (copies into the staging buffers and the file writes, overlapped).
 * @spill_read_bytes: bytes the last resume read back from it.
 * @spill_bytes: running total of bytes written to spill files.
 */
struct ugpu_pm_stats {
	size_t size;
	uint32_t state;
	uint64_t phase_ns[UGPU_PM_PHASE_COUNT];
	uint64_t phase_bos[UGPU_PM_PHASE_COUNT];
	uint64_t phase_bytes[UGPU_PM_PHASE_COUNT];
	uint64_t prepare_ns;
	uint64_t critical_ns;
	uint64_t resume_ns;
	uint64_t backups_prepared;
	uint64_t backups_missed;
	uint64_t discarded;
	uint64_t cycles;
	uint64_t failures;
	uint64_t corrupt;
	uint64_t spilled_bos;
	uint64_t spill_prepare_bytes;
	uint64_t spill_window_bytes;
	uint64_t spill_window_ns;
	uint64_t spill_read_bytes;
	uint64_t spill_bytes;
};

/**
 * ugpu_device_pm_set_opts() - set the callbacks and flags.
 * @dev: the device.
 * @opts: copied (up to @opts->size); NULL resets to none. @flags take
 *        effect at the next prepare; @backup_mem_limit and @spill_dir at the
 *        next backup made.
 * Returns: 0, or -EINVAL (NULL @dev, @opts->size too small, unknown flags,
 * an empty @spill_dir), -ENAMETOOLONG (@spill_dir of PATH_MAX bytes or
 * more).
 * Context: any thread; not from inside the callback.
 * -EOPNOTSUPP: a device (or BO) opened through "ugpud:" (not served by the daemon yet).
 */
UGPU_API int ugpu_device_pm_set_opts(struct ugpu_device *dev, const struct ugpu_pm_opts *opts);

/**
 * ugpu_device_suspend_prepare() - the PM-notifier step: evict unpinned BOs,
 * pre-allocate and fill the backups of the VRAM BOs that must survive.
 * @dev: the device, ACTIVE.
 *
 * BOs may be unpinned or destroyed concurrently: an unpin drops the backup
 * prepare made, a destroy frees it.
 * Returns: 0 (PREPARED); -EBUSY when not ACTIVE; -ENOMEM / -ENOSPC when a
 * backup or eviction target cannot be allocated (-ENOSPC also when the
 * spill file's filesystem is full), -EIO when an eviction or populate copy
 * failed, or the spill file could not be created or written (the log says
 * why): every backup prepare made is freed again, the spill file removed, the state
 * stays ACTIVE, no BO lost (evicted ones stay in system memory); -ENODEV
 * when the device is gone, also when it vanished during the call (then its
 * removal follows: include/ugpu/unplug.h); -ETIMEDOUT when GPU kernels
 * still run after 5 s (include/ugpu/vm.h).
 * Context: any thread; serialised with the other transitions.
 * -EOPNOTSUPP: a device (or BO) opened through "ugpud:" (not served by the daemon yet).
 */
UGPU_API int ugpu_device_suspend_prepare(struct ugpu_device *dev);

/**
 * ugpu_device_suspend() - the critical window: back up and power off (D3cold).
 * @dev: the device, PREPARED (or ACTIVE: everything is allocated now; slow).
 *
 * CPU mappings of VRAM BOs are held (a touch waits, see docs/suspend.md)
 * until resume. Unpin/destroy from other threads wait for the call to end.
 * Returns: 0 (SUSPENDED); -EBUSY when already SUSPENDED; -ENOMEM when a
 * missed backup, or the window's list of copies (a few bytes per run of
 * dirty chunks), cannot be allocated; -ENOSPC when the spill file's
 * filesystem is full; -EIO / -ETIMEDOUT when a copy, a write of the spill
 * file or the power-off failed, or GPU kernels still ran after 5 s; -ENODEV when the
 * device is gone (also when it vanished during the call). On error the
 * device is back in D0 with its engines
 * reset, the backups this call allocated are freed (those of prepare are
 * kept: cancel or suspend again), nothing is lost.
 * Context: any thread; serialised with the other transitions.
 * -EOPNOTSUPP: a device (or BO) opened through "ugpud:" (not served by the daemon yet).
 */
UGPU_API int ugpu_device_suspend(struct ugpu_device *dev);

/**
 * ugpu_device_resume() - power on and restore.
 * @dev: the device, SUSPENDED.
 *
 * Every backup is checked against the checksums taken when it was written
 * (XXH3 per 64 KiB chunk) before its bytes go back to VRAM.
 * Returns: 0 (ACTIVE: every BO except NO_RESTORE ones holds its contents,
 * mappings and engines work); -EBUSY when not SUSPENDED; -EIO when the
 * device does not wake, or the spill file cannot be read back (state stays
 * SUSPENDED, every backup kept: call again); -EBADMSG when resumed (ACTIVE, as for 0) but at least one backup
 * failed its check: each such BO was restored from its damaged backup and is
 * named in the log and to ugpu_pm_opts.corrupt, counted in
 * ugpu_pm_stats.corrupt and ugpu_bo_info.corrupt. A restore copy failing
 * on the blitter is redone by the CPU.
 * Context: any thread; serialised with the other transitions.
 * -EOPNOTSUPP: a device (or BO) opened through "ugpud:" (not served by the daemon yet).
 */
UGPU_API int ugpu_device_resume(struct ugpu_device *dev);

/**
 * ugpu_device_suspend_cancel() - unprepare: free every backup after a prepare
 * (or a failed suspend) that will not be followed by a suspend.
 * Returns: 0 (ACTIVE; also when already ACTIVE); -EBUSY when SUSPENDED.
 * Context: any thread; serialised with the other transitions.
 * -EOPNOTSUPP: a device (or BO) opened through "ugpud:" (not served by the daemon yet).
 */
UGPU_API int ugpu_device_suspend_cancel(struct ugpu_device *dev);

/**
 * ugpu_device_pm_stats() - the state and the last phases' figures.
 * Returns: 0, or -EINVAL (NULL, @st->size too small).
 * Context: any thread.
 * -EOPNOTSUPP: a device (or BO) opened through "ugpud:" (not served by the daemon yet).
 */
UGPU_API int ugpu_device_pm_stats(struct ugpu_device *dev, struct ugpu_pm_stats *st);

/** ugpu_pm_phase_name() - "prepare-evict", ... for logs. Context: any thread. */
UGPU_API const char *ugpu_pm_phase_name(enum ugpu_pm_phase phase);

struct ugpu_logind;

/**
 * ugpu_logind_start() - follow systemd-logind's PrepareForSleep signal:
 * take a "delay" sleep inhibitor; on PrepareForSleep(true) bring the device
 * to SUSPENDED (prepare + suspend; a device the application already
 * suspended is left as it is), then release the inhibitor so the host
 * sleeps; on PrepareForSleep(false) resume the device if that suspend was
 * the notifier's own, and take an inhibitor again unless one is still held.
 * A thread of its own serves the bus.
 * @dev: the device.
 * @out: the notifier on success.
 * Returns: 0; -ENOTSUP when libugpu was built without libsystemd; -ENOENT
 * when there is no system bus or no logind on it (use the API calls then);
 * other -errno from sd-bus.
 * Context: any thread.
 * -EOPNOTSUPP: a device (or BO) opened through "ugpud:" (not served by the daemon yet).
 */
UGPU_API int ugpu_logind_start(struct ugpu_device *dev, struct ugpu_logind **out);

/**
 * ugpu_sleep_fn - told of the host's sleep by ugpu_logind_watch(), on the
 * notifier's thread. @sleeping true: the host is about to sleep (it waits,
 * up to logind's InhibitDelayMaxSec, until this call returns: the inhibitor
 * is released then); false: it woke (a new inhibitor is taken after the
 * call).
 */
typedef void (*ugpu_sleep_fn)(void *user, bool sleeping);

/**
 * ugpu_logind_watch() - ugpu_logind_start() for a program that runs the
 * suspend of its devices itself (ugpud does it for all of its own): the
 * same "delay" inhibitor and PrepareForSleep signal, but instead of
 * suspending a device the notifier calls @fn with @user and lets the host
 * sleep when it returns. Stopped with ugpu_logind_stop().
 * @ctx: the context (logging).
 * @fn, @user: what to call.
 * @out: the notifier on success.
 * Returns: 0; -EINVAL (NULL @ctx, @fn or @out); -ENOMEM; -ENOTSUP when
 * libugpu was built without libsystemd; -ENOENT when there is no system bus
 * or no logind on it; other -errno from sd-bus.
 * Context: any thread.
 */
UGPU_API int ugpu_logind_watch(struct ugpu_context *ctx, ugpu_sleep_fn fn, void *user,
			       struct ugpu_logind **out);

/** ugpu_logind_stop() - stop the notifier (bounded); NULL is a no-op. */
UGPU_API void ugpu_logind_stop(struct ugpu_logind *ln);

#ifdef __cplusplus
}
#endif

#endif /* UGPU_PM_H */
