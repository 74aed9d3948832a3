/* SPDX-License-Identifier: MIT */
/*
 * Runtime power management of one device: the userspace counterpart of the
 * kernel's runtime PM (pm_runtime_get_sync / pm_runtime_put_autosuspend and a
 * driver's .runtime_suspend/.runtime_resume), as xe uses it.
 *
 * Every path that needs the device awake (register access, engine work, a
 * CPU mapping of VRAM being established) holds a reference: rpm_get() returns
 * with the device in D0, waking it if needed; rpm_put() drops it, and when the
 * last one goes the autosuspend timer is armed. When it expires with no
 * reference held, the rpm thread runs the registered "suspend" hooks (which
 * release CPU mappings of VRAM, and for D3cold evict VRAM to system memory),
 * idles the engines and puts the device in D3hot, or D3cold when VRAM use is
 * below the threshold and a hook promised to evict. The next rpm_get() wakes
 * it and runs the "resume" hooks. See docs/runtime-pm.md.
 *
 * Which paths must hold a reference (the contract other modules follow):
 *  - engine submissions and waits on dev->copy[] (the BO layer's moves and
 *    evictions: rpm_get() before queuing, rpm_put() after the fence);
 *  - device_reg_*() accesses and region_read/write of VRAM;
 *  - CPU access to VRAM through dev->vram (the CPU engine, BO read/write);
 *  - every CPU mapping fault that maps VRAM (cpu_map fault_begin/fault_end).
 * A path that finds the device asleep without holding one is a bug: D3 drops
 * doorbells and BAR0 writes (docs/reference-device.md).
 *
 * Threading: every function may be called from any thread, including the
 * cpu_map handler thread (rpm_get() from there never waits for a suspend in
 * progress: see the state machine in rpm.c).
 */
#ifndef UGPU_SRC_RPM_H
#define UGPU_SRC_RPM_H

#include <stdbool.h>
#include <stdint.h>

#include <ugpu/rpm.h>

struct ugpu_device;
struct rpm;
struct rpm_hook;

/* Defaults. xe: pm_runtime_set_autosuspend_delay(dev, 1000) in
 * xe_pm_runtime_init(), DEFAULT_VRAM_THRESHOLD 300 (MB) in xe_pm.h. */
#define RPM_DEFAULT_AUTOSUSPEND_MS 1000
#define RPM_DEFAULT_D3COLD_THRESHOLD (300ull << 20)
/* Bound for a waiter of a power transition another thread is making. */
#define RPM_WAIT_TIMEOUT_MS 10000
/* Bound for a wake made by the caller itself: a few config accesses, each
 * bounded by the transport's request timeout, and the quick resume hooks. */
#define RPM_WAKE_BOUND_MS 15000
/* Bound for the engines to go idle before the device sleeps. */
#define RPM_IDLE_TIMEOUT_MS 1000
/* Bound for rpm_fini() to wait for public calls still inside (each is
 * bounded by RPM_WAIT_TIMEOUT_MS and the hooks' own bounds). */
#define RPM_FINI_USERS_TIMEOUT_MS (3 * RPM_WAIT_TIMEOUT_MS)

/*
 * struct rpm_hook_ops - what a module does around runtime suspend.
 *
 * @name: for logs.
 * @suspend: may be NULL. Called before the device leaves D0, on the thread
 *           that suspends (the rpm thread, or a caller of rpm_suspend_now()),
 *           never on the cpu_map handler thread: it may invalidate or block
 *           CPU mappings and may use the engines (rpm_get() from inside it
 *           succeeds at once). @target is UGPU_POWER_D3HOT or
 *           UGPU_POWER_D3COLD (VRAM will be lost: move it to system memory).
 *           Returns 0, or -EBUSY to veto (retried after the autosuspend
 *           delay), or another -errno (suspend abandoned until the next put).
 *           On failure, the hooks that already ran, and the failing one
 *           (it may have done part of its work), get @resume with
 *           UGPU_POWER_D0 ("nothing was lost"), in reverse order.
 * @resume:  may be NULL. Called after the device is back in D0 (in reverse
 *           registration order) with the state it came from, on the thread
 *           that woke it, WHICH MAY BE THE cpu_map HANDLER THREAD: it must be
 *           quick and must not call cpu_map_invalidate/block/unblock/destroy
 *           (they return -EDEADLK there). Anything that moves mapped objects
 *           belongs in @restore.
 * @restore: may be NULL. Called after a wake from D3cold on the rpm thread,
 *           with a reference held; may move objects back to VRAM (cpu_map
 *           block/unblock allowed). The device may have been touched before
 *           it runs: objects evicted by @suspend are then still in system
 *           memory and used from there.
 * @stats: may be NULL. Adds the module's counters into the BO fields of
 *           @st (ugpu_device_rpm_stats()). Called with the rpm lock held,
 *           also while a transition runs: it must only take leaf locks of
 *           its own. Called once more by rpm_hook_unregister(), into the
 *           totals the rpm keeps, so counters survive the hook.
 * @evicts_vram: this hook's @suspend moves every VRAM object of its module
 *           to system memory when @target is D3cold. D3cold is chosen only
 *           when at least one registered hook says so (otherwise a device with
 *           data in VRAM would lose it).
 *
 * Hooks run with the rpm hook lock held: they must not register or
 * unregister hooks, and nothing may hold a lock a hook takes while calling
 * rpm_hook_unregister().
 */
struct rpm_hook_ops {
	const char *name;
	int (*suspend)(void *arg, enum ugpu_power_state target);
	void (*resume)(void *arg, enum ugpu_power_state from);
	void (*restore)(void *arg);
	void (*stats)(void *arg, struct ugpu_rpm_stats *st);
	bool evicts_vram;
};

/* rpm_init() - runtime PM for @dev (after its engines are up): starts the rpm
 * thread. Runtime suspend is not allowed until rpm_allow(rpm, true).
 * Returns 0, -ENOMEM, or -errno of pthread_create. */
int rpm_init(struct ugpu_device *dev, struct rpm **out);

/*
 * rpm_fini() - stop the rpm thread (joined, bounded by a running transition),
 * wait (bounded) for the public ugpu_device_rpm_*() calls still inside, leave
 * the device in D0 if it can be woken, keep the last stats in dev->rpm_last
 * (under the BO manager lock) for ugpu_device_rpm_stats() after a removal,
 * and drop the owner's reference. From then on rpm_get() answers -ENODEV and
 * rpm_put() does nothing; the object is freed by the last rpm_unref() (a
 * caller still inside, or a module holding it). Safe with NULL.
 * Context: dev->rpm already unpublished (under the BO manager lock, which
 * the caller does not hold).
 */
void rpm_fini(struct rpm *rpm);

/* rpm_ref() / rpm_unref() - keep the rpm object (not the device) alive:
 * a module that keeps a pointer to it holds a reference. */
void rpm_ref(struct rpm *rpm);
void rpm_unref(struct rpm *rpm);

/*
 * rpm_get() - take a reference; returns with the device in D0.
 * Wakes it when suspended (the resume hooks run on this thread), or waits
 * (bounded) for another thread's transition. Concurrent callers wake the
 * device once.
 * Returns: 0; -EIO (the device did not wake: no reference is held);
 * -ETIMEDOUT (another thread's transition took longer than
 * RPM_WAIT_TIMEOUT_MS); -ENODEV (the device is gone).
 */
int rpm_get(struct rpm *rpm);

/*
 * rpm_suspend_aborted() - a suspend is running its hooks and someone took a
 * reference meanwhile: it will be abandoned, so a hook may stop early
 * (return -EAGAIN). Context: any thread; takes the rpm lock (so not with it
 * held; the BO manager lock may be held).
 */
bool rpm_suspend_aborted(struct rpm *rpm);

/*
 * rpm_vram_lost() - is VRAM's content gone with the power: the device sleeps
 * in D3cold (or is being woken from it, before the resume hooks restored
 * it), or a D3cold suspend is past its point of no return (its power step
 * failed included, until its hooks' resume has run)? Then, and only
 * then, what the suspend hooks backed up is the only copy. A suspend still
 * running its hooks (VRAM intact and possibly written since the backups)
 * says false; so does one past its hooks before its power step, unless a
 * removal claimed its backups (rpm_claim_backups()). Context: as
 * rpm_suspend_aborted().
 */
bool rpm_vram_lost(struct rpm *rpm);
/*
 * rpm_wait_hooks_settled() - wait (up to @ms) until a suspend in progress
 * has run all its hooks, is aborted, or is over: a removal that found the
 * device unreadable asks before it looks at the backups (a hook that had
 * just dropped the BO manager lock, its backups taken, had not yet said
 * so: the review of 2026-12-07). 0 or -ETIMEDOUT. Context: no lock a
 * suspend hook takes (the BO manager lock) held.
 *
 * rpm_claim_backups() - for a removal that found the device unreadable
 * (device_vram_lost()): a D3cold suspend past its hooks, not committed,
 * with no get let in since, backed up what VRAM holds. Treat it from now
 * on as one whose power step failed: gets wait for its hooks' resume
 * (which keeps the backups), the power step is skipped, rpm_vram_lost()
 * and rpm_power_step_failed() say true. True if the backups are the
 * removal's that way (claimed now, or the power step failed). Before, a
 * removal in that window found VRAM neither readable nor backed up and
 * reported the BO lost. Context: as rpm_suspend_aborted().
 */
int rpm_wait_hooks_settled(struct rpm *rpm, int ms);
bool rpm_claim_backups(struct rpm *rpm);
/*
 * rpm_power_step_failed() - is the suspend in progress (its hooks' resume
 * running) one whose D3cold power step failed after the point of no
 * return (or whose backups a removal claimed, rpm_claim_backups())? Then
 * nothing reached VRAM since its hooks backed it up
 * (every get waited), and rpm_vram_lost() said true until now. Not an
 * abort, veto or other quiesce failure: accesses may have written VRAM
 * then. Context: as
 * rpm_suspend_aborted().
 */
bool rpm_power_step_failed(struct rpm *rpm);

/* rpm_get_if_active() - take a reference only if the device is in D0 and no
 * suspend has started; never wakes or waits. */
bool rpm_get_if_active(struct rpm *rpm);

/*
 * rpm_user_enter() / rpm_user_leave() - pin the device's rpm object for a
 * call made without the BO manager lock. The removal unpublishes dev->rpm
 * under that lock and rpm_fini() waits (bounded) for every user to leave, so
 * the object stays valid between enter and leave even if the device is
 * removed meanwhile (rpm_get() then answers -ENODEV; rpm_put() is harmless).
 * Never hold the BO manager lock across rpm_get(): a runtime suspend's hooks
 * take it with the hook lock held.
 * rpm_user_enter() takes the BO manager lock briefly: not with it held.
 * Returns: 0 with *@out set; -ENODEV (removed); -EINVAL (no runtime PM yet:
 * device bring-up, or being closed).
 */
int rpm_user_enter(struct ugpu_device *dev, struct rpm **out);
void rpm_user_leave(struct rpm *rpm);

/* rpm_get_dev() / rpm_put_dev() - rpm_get()/rpm_put() of @dev's runtime PM
 * for a driver path that holds no lock (rpm_user_enter() around each): the
 * references of host suspend. Not the application's (ugpu_device_rpm_get()),
 * which are counted apart. rpm_get_dev(): as rpm_get(), and -ENODEV /
 * -EINVAL as rpm_user_enter(). */
int rpm_get_dev(struct ugpu_device *dev);
void rpm_put_dev(struct ugpu_device *dev);

/* rpm_put() - drop a reference; the last one arms the autosuspend timer.
 * An unbalanced put is logged and ignored. */
void rpm_put(struct rpm *rpm);

/*
 * rpm_suspend_now() - suspend at once if nothing holds a reference (the
 * autosuspend delay is skipped; "allowed" is still required).
 * Not from the cpu_map handler thread (the hooks invalidate mappings).
 * Returns: 0 (suspended, or already); -EBUSY (a reference is held, a
 * transition is running, a hook vetoed, or runtime PM is not allowed);
 * -EPERM: not allowed; a hook's or the device's -errno.
 */
int rpm_suspend_now(struct rpm *rpm);

/* Settings (any thread). @delay_ms < 0 disables autosuspend (as the
 * kernel's negative autosuspend_delay). @bytes 0 never uses D3cold. */
void rpm_set_autosuspend_delay(struct rpm *rpm, int delay_ms);
void rpm_set_d3cold_threshold(struct rpm *rpm, uint64_t bytes);
/* rpm_allow() - allow runtime suspend (kernel: power/control "auto") or
 * forbid it (power/control "on": the device is woken and held awake). */
int rpm_allow(struct rpm *rpm, bool allow);

/* rpm_stats() - a snapshot (all fields of struct ugpu_rpm_stats). */
void rpm_stats(struct rpm *rpm, struct ugpu_rpm_stats *out);

/* rpm_is_suspended() - true in SUSPENDED (device in D3). */
bool rpm_is_suspended(struct rpm *rpm);

/*
 * rpm_hook_register() - add @ops (copied pointer; must outlive the hook)
 * with @arg. Suspend hooks run in registration order, resume hooks in
 * reverse. Returns 0 with *@out set, -EINVAL, -ENOMEM.
 * rpm_hook_unregister() - remove it; waits for a running transition's hooks
 * to finish. Safe with NULL.
 */
int rpm_hook_register(struct rpm *rpm, const struct rpm_hook_ops *ops, void *arg,
		      struct rpm_hook **out);
void rpm_hook_unregister(struct rpm *rpm, struct rpm_hook *hook);

#endif
