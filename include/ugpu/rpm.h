/* SPDX-License-Identifier: MIT */
/*
 * Runtime power management: an idle device goes to sleep (D3hot, or D3cold
 * when little VRAM is in use) after an autosuspend delay and wakes when used
 * or when a CPU mapping of one of its VRAM objects is touched. Modelled on
 * the kernel's runtime PM with autosuspend as the xe driver uses it; see
 * docs/runtime-pm.md.
 */
#ifndef UGPU_RPM_H
#define UGPU_RPM_H

#include <ugpu/device.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Where the runtime-PM state machine is. */
enum ugpu_rpm_state {
	UGPU_RPM_ACTIVE = 0, /**< device in D0 */
	UGPU_RPM_SUSPENDING = 1, /**< suspend hooks running; device still in D0 */
	UGPU_RPM_SUSPENDED = 2, /**< device in D3hot or D3cold */
	UGPU_RPM_RESUMING = 3, /**< a wake is in progress */
};

/**
 * struct ugpu_rpm_stats - what ugpu_device_rpm_stats() reports.
 * @size: set by the caller to sizeof(struct ugpu_rpm_stats).
 * @state: runtime-PM state.
 * @power_state: the device's power state.
 * @allowed: runtime suspend is allowed (ugpu_device_rpm_allow()).
 * @autosuspend_delay_ms: current delay; negative: autosuspend disabled.
 * @d3cold_threshold: bytes; D3cold is used while VRAM use is below it.
 * @usage: references held (not counting the one "not allowed" holds).
 * @suspends: completed suspends (both kinds).
 * @suspends_d3cold: the subset that went to D3cold.
 * @resumes: completed wakes.
 * @aborted: suspends abandoned (a hook vetoed, or someone needed the device
 *           while the hooks ran).
 * @errors: suspends or wakes the device refused.
 * @wake_last_us: D3 -> D0 time of the last wake (the device's transition).
 * @wake_max_us: the longest one.
 * @wake_total_us: sum over @resumes (average = total / resumes).
 * @resume_last_us: the whole last wake including resume hooks.
 * @suspend_last_us: the whole last suspend including hooks.
 * @suspended_us: total time spent suspended, including the current stretch.
 *
 * The BO side (what runtime PM did with buffer objects):
 * @bo_mappings_listed: CPU mappings of VRAM BOs that the next suspend
 *           releases (the ones touched since the last suspend).
 * @bo_mappings_released: CPU mappings released by suspends so far.
 * @bo_wake_faults: CPU touches of released mappings (each took a reference;
 *           those that found the device asleep woke it).
 * @bo_evicted: BOs moved to system memory for D3cold.
 * @bo_restored: of those, BOs moved back to VRAM after the wake.
 * @bo_backed_up: BOs that may not leave VRAM (pinned, VRAM-only) copied to
 *           system memory for D3cold and copied back on the wake.
 */
struct ugpu_rpm_stats {
	size_t size;
	enum ugpu_rpm_state state;
	enum ugpu_power_state power_state;
	bool allowed;
	int32_t autosuspend_delay_ms;
	uint64_t d3cold_threshold;
	uint32_t usage;
	uint64_t suspends;
	uint64_t suspends_d3cold;
	uint64_t resumes;
	uint64_t aborted;
	uint64_t errors;
	uint64_t wake_last_us;
	uint64_t wake_max_us;
	uint64_t wake_total_us;
	uint64_t resume_last_us;
	uint64_t suspend_last_us;
	uint64_t suspended_us;
	uint64_t bo_mappings_listed;
	uint64_t bo_mappings_released;
	uint64_t bo_wake_faults;
	uint64_t bo_evicted;
	uint64_t bo_restored;
	uint64_t bo_backed_up;
};

/**
 * ugpu_device_rpm_get() - hold the device awake; wakes it if it sleeps.
 * @dev: the device.
 *
 * Each successful call must be paired with ugpu_device_rpm_put().
 * Returns: 0; -EINVAL (NULL); -EIO (the device did not wake, nothing held);
 * -ETIMEDOUT (another thread's power transition did not finish in time);
 * -ENODEV (the device is gone, see below).
 * Context: any thread; concurrent callers wake the device once.
 *
 * After a removal (ugpu_device_is_gone(), include/ugpu/unplug.h) runtime PM
 * goes with the device: every ugpu_device_rpm_*() call that acts returns
 * -ENODEV, ugpu_device_rpm_put() does nothing (the references died with the
 * device), and ugpu_device_rpm_stats() keeps reporting the stats as they
 * were when the device was released. A call racing the removal either
 * completes on the device or returns -ENODEV; it never touches freed state.
 * -EOPNOTSUPP: a device (or BO) opened through "ugpud:" (not served by the daemon yet).
 */
UGPU_API int ugpu_device_rpm_get(struct ugpu_device *dev);

/**
 * ugpu_device_rpm_put() - drop what ugpu_device_rpm_get() took; the last
 * reference arms the autosuspend timer. Does nothing once the device is gone.
 * A put without a matching get is logged and ignored: it never takes a
 * reference the driver holds (the usage count never goes below 0).
 * Context: any thread.
 * On a device opened through "ugpud:" it does nothing (not served by the daemon yet).
 */
UGPU_API void ugpu_device_rpm_put(struct ugpu_device *dev);

/**
 * ugpu_device_rpm_allow() - allow runtime suspend, or forbid it (the device
 * is woken and kept in D0). Forbidden after ugpu_device_open(), as the PCI
 * core's power/control defaults to "on".
 * Returns: 0; -EINVAL; -ENODEV (the device is gone); the wake's error when
 * forbidding a sleeping device.
 * Context: any thread.
 * -EOPNOTSUPP: a device (or BO) opened through "ugpud:" (not served by the daemon yet).
 */
UGPU_API int ugpu_device_rpm_allow(struct ugpu_device *dev, bool allow);

/**
 * ugpu_device_rpm_set_autosuspend_delay() - idle time before the device
 * sleeps. Default 1000 ms (as xe). Negative disables autosuspend.
 * Returns: 0, -EINVAL, or -ENODEV (the device is gone).
 * Context: any thread; applies to the next expiry.
 * -EOPNOTSUPP: a device (or BO) opened through "ugpud:" (not served by the daemon yet).
 */
UGPU_API int ugpu_device_rpm_set_autosuspend_delay(struct ugpu_device *dev, int delay_ms);

/**
 * ugpu_device_rpm_set_d3cold_threshold() - use D3cold (VRAM evicted to
 * system memory first, restored after the wake) when fewer than @bytes of
 * VRAM are in use; 0 never uses D3cold. Default 300 MiB (as xe). D3cold
 * also needs a device that can cut main power (UGPU_DEVICE_CAP_D3COLD).
 * Returns: 0, -EINVAL, or -ENODEV (the device is gone). Context: any thread.
 * -EOPNOTSUPP: a device (or BO) opened through "ugpud:" (not served by the daemon yet).
 */
UGPU_API int ugpu_device_rpm_set_d3cold_threshold(struct ugpu_device *dev, uint64_t bytes);

/**
 * ugpu_device_rpm_suspend() - suspend now if nothing holds the device.
 * Returns: 0 (asleep); -EBUSY (in use, or a transition is running);
 * -EPERM (runtime suspend not allowed); -EIO (the device refused); -ENODEV
 * (the device is gone).
 * Context: any thread except from a ugpu callback.
 * -EOPNOTSUPP: a device (or BO) opened through "ugpud:" (not served by the daemon yet).
 */
UGPU_API int ugpu_device_rpm_suspend(struct ugpu_device *dev);

/**
 * ugpu_device_rpm_stats() - runtime-PM state and counters.
 * @stats: filled up to @stats->size bytes.
 *
 * Stats survive a removal: once the device is gone this reports, unchanged
 * from then on, the state and counters as they were when runtime PM was
 * torn down with the device (while that teardown is in progress it waits
 * for it, bounded). It never waits for a power transition in progress.
 * Returns: 0; -EINVAL; -ETIMEDOUT (a removal's teardown of runtime PM did
 * not finish in time). Context: any thread.
 * -EOPNOTSUPP: a device (or BO) opened through "ugpud:" (not served by the daemon yet).
 */
UGPU_API int ugpu_device_rpm_stats(struct ugpu_device *dev, struct ugpu_rpm_stats *stats);

/** ugpu_rpm_state_name() - "active", "suspending", ... (static string). */
UGPU_API const char *ugpu_rpm_state_name(enum ugpu_rpm_state state);

#ifdef __cplusplus
}
#endif

#endif /* UGPU_RPM_H */
