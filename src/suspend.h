/* SPDX-License-Identifier: MIT */
/*
 * Host suspend, internal side (public API: include/ugpu/pm.h; design:
 * docs/suspend.md). src/suspend.c runs the state machine: the host-suspend
 * lock, the runtime-PM reference a cycle holds, the phases with their
 * timing, statistics and progress callback, the engines and the power
 * state. What happens to buffer objects in each phase is the memory layer's
 * (mm/backup.c), reached through the ops it registers: the xe split, where
 * xe_pm.c calls xe_bo_evict_all() and xe_bo_restore_early()/_late() and
 * never walks BO lists itself.
 */
#ifndef UGPU_SRC_SUSPEND_H
#define UGPU_SRC_SUSPEND_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <ugpu/pm.h>

struct ugpu_device;

/* What one phase of the memory layer handled; @corrupt: backups a restore
 * found damaged (each reported with pm_report_corrupt()); @spill_*: its
 * part that went through the spill file: backups in it, bytes written (or
 * read, for a restore), and the time the spill pass took. */
struct pm_count {
	uint64_t bos;
	uint64_t bytes;
	uint64_t corrupt;
	uint64_t spill_bos;
	uint64_t spill_bytes;
	uint64_t spill_ns;
};

/*
 * struct pm_mem_ops - the memory layer's part of each host-suspend step.
 * All are called with the host-suspend lock held (struct host_pm.lock), from
 * the thread running the transition; @arg is what was registered.
 *
 * Prepare (the rest of the process still runs; each op takes the memory
 * layer's locks as it needs and lets BOs be unpinned or destroyed between):
 * @prepare_begin: ACTIVE -> PREPARED; -EBUSY when not ACTIVE.
 * @prepare_evict: move what may live in system memory out of VRAM.
 * @prepare_backup: allocate and fill the backup of each VRAM BO that must
 *           survive.
 * @prepare_end: prepare is over (drops what prepare_begin pinned); @err != 0:
 *           it failed: every backup is freed and the state is ACTIVE again.
 * @cancel: free every backup, state ACTIVE; -EBUSY when SUSPENDED. *@prepared
 *           says whether the state was PREPARED (a cycle was open).
 *
 * The suspend window: @window_begin locks the memory layer (nothing moves,
 * unpin and destroy wait) and says the state it found (-EBUSY when it is
 * SUSPENDED and @for_resume is false, or not SUSPENDED and @for_resume is
 * true); @window_end unlocks. Between them:
 * @alloc_missing: backups prepare did not make (no prepare, or BOs pinned,
 *           created or moved into VRAM since).
 * @hold_maps: block the CPU mappings of VRAM BOs (a touch waits for resume).
 * @save: copy into the backups: @early the kernel objects restored by CPU
 *           before the engines exist (by the CPU engine), else the rest (by
 *           the blitters). Returns 0 or the first -errno; engines that failed
 *           are reset.
 * @suspended: the device is off: state SUSPENDED, backups hold VRAM.
 * @recover: a suspend failed before power-off: release the maps, drop the
 *           backups this window allocated, state back to @was.
 * @restore: check each backup against its checksums (not with @force_cpu:
 *           that redoes a pass that checked), then copy the backups back
 *           (@early: by CPU; else by the blitters, or the CPU engine with
 *           @force_cpu). A damaged backup is restored anyway, reported
 *           (pm_report_corrupt()) and counted in @c->corrupt.
 * @finish: resume is done: free the backups, count NO_RESTORE BOs whose
 *           contents are gone (@c->bos: backups freed; *@discarded), release
 *           the maps, state ACTIVE.
 * @state: the state now (any lock).
 */
struct pm_mem_ops {
	int (*prepare_begin)(void *arg);
	int (*prepare_evict)(void *arg, struct pm_count *c);
	int (*prepare_backup)(void *arg, struct pm_count *c);
	void (*prepare_end)(void *arg, int err);
	int (*cancel)(void *arg, bool *prepared);
	int (*window_begin)(void *arg, bool for_resume, enum ugpu_pm_state *was);
	void (*window_end)(void *arg);
	int (*alloc_missing)(void *arg, struct pm_count *c);
	int (*hold_maps)(void *arg);
	int (*save)(void *arg, bool early, struct pm_count *c);
	void (*suspended)(void *arg);
	void (*recover)(void *arg, enum ugpu_pm_state was);
	int (*restore)(void *arg, bool early, bool force_cpu, struct pm_count *c);
	void (*finish)(void *arg, struct pm_count *c, uint64_t *discarded);
	enum ugpu_pm_state (*state)(void *arg);
};

/*
 * struct host_pm - per device, context lifetime (stats survive a removal).
 * Locking: @lock serialises the transitions (prepare, suspend, resume,
 * cancel) and the removal (src/unplug.c takes it first); it is the
 * outermost lock of the driver. @stats_lock (a leaf) protects @opts and
 * @stats. @mem/@mem_arg are set once by the memory layer's bring-up step
 * (pm_mem_register()), before any transition can run.
 */
struct host_pm {
	pthread_mutex_t lock;
	pthread_mutex_t stats_lock;
	struct ugpu_pm_opts opts; /* .spill_dir points to @spill_dir */
	char spill_dir[PATH_MAX];
	struct ugpu_pm_stats stats;
	const struct pm_mem_ops *mem;
	void *mem_arg;
	/* Under @lock: the cycle holds the exec queues blocked (no kernel
	 * starts, none runs) from prepare, or suspend, until resume or cancel. */
	bool exec_held;
};

/* host_pm_init()/host_pm_free() - with the device object (device.c). */
int host_pm_init(struct ugpu_device *dev);
void host_pm_free(struct ugpu_device *dev);

/*
 * pm_report_corrupt() - a backup failed its check at resume: log it and tell
 * the application (ugpu_pm_opts.corrupt). @off: the first damaged byte of
 * the BO @bo_name, of @size bytes. Called by @restore, window held.
 */
void pm_report_corrupt(struct ugpu_device *dev, const char *bo_name, uint64_t off, uint64_t size);

/*
 * pm_spill_config() - the spill options now (ugpu_pm_opts.spill_dir and
 * .backup_mem_limit): @dir gets the directory ("" when spill is off, always
 * NUL-terminated), *@limit the limit (0: none). Takes @stats_lock (a leaf):
 * callable under the memory layer's locks.
 */
void pm_spill_config(struct ugpu_device *dev, char *dir, size_t dirlen, uint64_t *limit);

#ifdef UGPU_TEST_HOOKS
/* A test's bound (ms) on the wait for running kernels before a transition
 * gives up with -ETIMEDOUT; 0 (the default): 5 s. The daemon's fuzz target
 * sets it: inputs that leave a kernel running, then prepare, cost 5 s each
 * and held a run at 8 executions a second. */
extern int pm_exec_idle_ms_test;
#endif

/* pm_mem_register() - the memory layer's ops (mm/backup.c), at bring-up. */
void pm_mem_register(struct ugpu_device *dev, const struct pm_mem_ops *ops, void *arg);

/*
 * host_pm_try_enter() / host_pm_leave() - hold off the host-suspend
 * transitions and the removal without waiting: true when none runs now
 * (@lock taken), and none starts until host_pm_leave(). For speculative
 * work that must not overlap one and may simply not happen (SVM's stream
 * prefetcher, svm/fault.c): the holder waits for nothing a transition
 * does, and holds it only for a bounded time. Called with no other driver
 * lock held (@lock is the outermost).
 */
bool host_pm_try_enter(struct ugpu_device *dev);
void host_pm_leave(struct ugpu_device *dev);

#endif
