/* SPDX-License-Identifier: MIT */
/*
 * Test points: named places in the driver where a test can run code of its
 * own (a delay, a wait for another thread) to make a narrow window between a
 * decision and its effect reproducible. Off unless a test arms one; an
 * unarmed point costs one relaxed atomic load. They exist only in builds
 * with UGPU_TEST_HOOKS (the internal archive tests and tools link); the
 * installed libugpu.so.0 is built without them and has none.
 *
 * Context: test_point_set() from any thread; the callback runs on whatever
 * thread reaches the point, with whatever locks that code holds there (see
 * each point), so it must not call back into the driver.
 */
#ifndef UGPU_SRC_TEST_POINT_H
#define UGPU_SRC_TEST_POINT_H

enum test_point_id {
	/* mm/bo_rpm.c, cpu_map handler thread, no lock: a CPU fault on a BO
	 * read its placement (VRAM: it will take a runtime-PM reference and
	 * list the BO; else neither), before it acts on it. */
	TEST_POINT_BO_FAULT_DECIDED,
	/* mm/bo_rpm.c, runtime-suspend hook, manager lock held: a D3cold
	 * backup of a BO that may not leave VRAM was just copied. */
	TEST_POINT_BO_D3COLD_BACKUP,
	/* src/rpm.c, the rpm thread, no lock: a deferred restore after a
	 * D3cold (or an abandoned D3cold suspend) is about to run. */
	TEST_POINT_RPM_RESTORE,
	/* src/rpm.c, the suspending thread, no lock: every suspend hook ran
	 * and succeeded, before the engines are quiesced and the suspend is
	 * committed (or aborted because someone took a reference). */
	TEST_POINT_RPM_HOOKS_DONE,
	/* src/rpm.c, the suspending thread, hook lock held: a suspend was
	 * vetoed, aborted or failed, before the hooks that ran are undone
	 * (their resume hooks called). */
	TEST_POINT_RPM_ABANDONED,
	/* src/suspend.c, ugpu_device_suspend_prepare(), host-suspend lock held
	 * (not the manager lock): the lock was just taken; the state is still
	 * what it was (ACTIVE for a prepare that will succeed). */
	TEST_POINT_PM_PREPARE,
	/* mm/bo_rpm.c, cpu_map handler thread, no lock: a fault on a VRAM BO
	 * took its reference and listed the BO, before the mapping is made. */
	TEST_POINT_BO_FAULT_LISTED,
	/* mm/bo_rpm.c, runtime-suspend hook, manager lock held: about to take
	 * the next BO off the mapped list to release its mapping. */
	TEST_POINT_BO_RELEASE_NEXT,
	/* src/power.c, device lock held: main power was just cut on the way
	 * to D3cold; the state published is still D3hot. */
	TEST_POINT_POWER_OFF,
	/* engines/sim/exec_sim.c, the exec engine's thread, no lock: it woke
	 * up (an interrupt, a poll slice) and is about to look for ended
	 * kernels and faults. Blocking here keeps ended kernels "running" for
	 * the driver (their VMs busy) for as long as a test needs. */
	TEST_POINT_EXEC_SCAN,
	/* engines/sim/exec_sim.c, the exec engine's thread, no lock: it
	 * collected a batch of faults and/or ends and is about to hand it to
	 * the client. @obj: the batch's faults (struct exec_fault *), NULL
	 * when it has none. */
	TEST_POINT_EXEC_DELIVER,
	/* svm/svm.c, the worker thread, no lock, the range owned: a range's
	 * pages were just taken from the process (moved to the staging area,
	 * or write-protected) and are not in VRAM yet. */
	TEST_POINT_SVM_TAKEN,
	/* svm/migrate.c take_pages(), the thread moving the range (@obj,
	 * struct svm_range) into VRAM, no lock, the range owned: its pages
	 * are write-protected (the UFFDIO_MOVE-less path) and the ones present
	 * were listed; their bytes are about to be read into VRAM. */
	TEST_POINT_SVM_WP_COPY,
	/* svm/migrate.c svm_evict(), the evicting thread, manager lock held:
	 * the range (@obj) is owned, its maps and bytes not yet moved. */
	TEST_POINT_SVM_EVICT,
	/* svm/fault.c idle_release(), the worker, no lock: it picked the
	 * device (@obj, struct svm_dev) and marked it as its own. */
	TEST_POINT_SVM_IDLE,
	/* svm/svm.c svm_down(), g_svm_lock held: the device's (@obj) queued
	 * work is done, its ranges not yet brought home. */
	TEST_POINT_SVM_QUIESCED,
	/* src/suspend.c resume, host-suspend lock held, the window begun
	 * (manager lock held): the device was just set to D0, nothing is
	 * restored yet (the reference device poisons VRAM on leaving D3cold). */
	TEST_POINT_PM_RESUMED_D0,
	/* svm/migrate.c, any thread bringing a range back, no lock, the range
	 * owned: about to copy a range's bytes back from VRAM. @obj: an int
	 * the callback may set to a -errno to make this copy fail (fault
	 * injection: the copy back must never lose the bytes). */
	TEST_POINT_SVM_COPY_BACK,
	/* svm/migrate.c take_pages(), the range's owner, no lock: a range's
	 * pages were taken (in the staging area, or write-protected) and are
	 * about to be copied into VRAM. @obj: an int the callback may set to a
	 * -errno to make this copy fail (fault injection: the pages must go
	 * back where they were, every byte). */
	TEST_POINT_SVM_COPY_IN,
	/* mm/spill.c, host-suspend thread, manager lock held: the spill file
	 * is about to be created with O_DIRECT. @obj: an int the callback may
	 * set to a -errno for that open to fail with (-EINVAL: as a filesystem
	 * without O_DIRECT refuses it). */
	TEST_POINT_SPILL_OPEN,
	/* mm/spill.c, host-suspend thread, manager lock held: a write (or a
	 * read) of the spill file completed. @obj: an int the callback may set
	 * to a -errno for it to count as failed with (-EIO, -ENOSPC). */
	TEST_POINT_SPILL_WRITE,
	TEST_POINT_SPILL_READ,
	/* mm/spill.c, host-suspend thread, manager lock held: the spill
	 * file's staging is about to be allocated (4 slots of 4 MiB, halved
	 * on each failure down to 256 KiB). @obj: an int the callback may set
	 * to a -errno for this allocation to fail with. */
	TEST_POINT_SPILL_STAGING,
	/* svm/migrate.c gc_range(), the collecting thread, no lock, the range
	 * (@obj, struct svm_range) owned and in VRAM: about to copy back what
	 * the process still has of it. */
	TEST_POINT_SVM_GC_COPY,
	/* svm/svm.c ops_prefetch(), the prefetching thread, no lock: a span of
	 * several 2 MiB pieces is about to be moved. @obj: an int, 1 when a
	 * helper thread will move pieces too (a CPU looks free), else 0; the
	 * callback may change it (a test forces the two-thread path). */
	TEST_POINT_SVM_PREFETCH_SPLIT,
	/* svm/migrate.c take_pages(), the thread moving the range (@obj,
	 * struct svm_range) into VRAM, no lock, the range owned: copied on
	 * the write-protection path, about to be zapped (madvise). */
	TEST_POINT_SVM_ZAP,
	/* svm/handler.c on_event(), the handler thread, no lock: an unmap,
	 * free or move event was just read (its thread may go on already) and
	 * is about to be handled. @obj: a uint64_t[3], its start, end and
	 * enum gc_kind. */
	TEST_POINT_SVM_EVENT,
	/* mm/bo.c ugpu_bo_migrate() and ugpu_bo_pin(), the moving thread, no
	 * lock, its runtime-PM use still held: the BO (@obj) is in VRAM now
	 * and the system memory it left is about to be freed. */
	TEST_POINT_BO_OLD_FREE,
	/* mm/move.c move_locked(), an unlocked move (migrate, pin), the
	 * moving thread, no lock: the copy is queued and the BO (@obj) marked
	 * moving; the wait for the copy follows. */
	TEST_POINT_BO_MOVE_COPY,
	/* mm/bo.c bo_lock_common() of a taker that waits only for its own
	 * BO's move (bo_rw(), ugpu_bo_query(), bo_sys_export(),
	 * bo_sys_release()), its thread, no lock: it read the BO's device
	 * (@obj the BO) and is about to take that device's manager lock. */
	TEST_POINT_BO_LOCK_OWN,
	/* svm/migrate.c range_to_vram(), the thread moving the range into
	 * VRAM, no lock, the range owned: its VRAM BO was just made, before
	 * its pages are taken and copied. @obj: a uint64_t, the range's start.
	 * (A host suspend that backed up that VRAM now would miss the copy.) */
	TEST_POINT_SVM_VRAM_MADE,
	/* svm/fault.c fault_ahead(), the worker, no lock: a range is about to
	 * be moved ahead (its mapping looked up), before the host-suspend lock
	 * is tried. @obj: a uint64_t, the range's start. */
	TEST_POINT_SVM_AHEAD,
	/* src/unplug.c removal_run(), the removing thread, no lock: a surprise
	 * removal has marked the device's VRAM lost, before it stops peers
	 * and takes the host-suspend lock. */
	TEST_POINT_UNPLUG_MARKED,
	/* engines/sim/engine_sim.c ring_doorbell(), the engine's lock held: a
	 * posted doorbell is about to be sent. @obj: a bool; set true, the
	 * doorbell is not sent (as if the device had dropped it). */
	TEST_POINT_ENGINE_DOORBELL,
	/* svm/fault.c back_on_handler_locked(), the userfaultfd handler
	 * thread, no lock: a CPU touch of a small range in VRAM was just
	 * served on the handler thread itself (not by the worker). @obj: the
	 * range's start (uint64_t *). */
	TEST_POINT_SVM_BACK_ON_HANDLER,
	/* src/rpm.c do_suspend(), the suspending thread, hooks lock held: a
	 * hook's suspend returned 0 (it dropped its own locks), before the
	 * next hook or the suspend saying its hooks are done. */
	TEST_POINT_RPM_HOOK_RETURNED,
	/* mm/evacuate.c evacuate_one(), the removing thread, BO manager lock
	 * held: a runtime-PM D3cold backup holds @obj (the BO) and is about
	 * to be adopted. */
	TEST_POINT_UNPLUG_ADOPTING,
	TEST_POINT_COUNT
};

/* @obj: what the point is about (the BO for the BO points), or NULL. */
#ifdef UGPU_TEST_HOOKS
typedef void (*test_point_fn)(void *arg, enum test_point_id id, void *obj);

extern int test_points_armed; /* number of armed points (atomic) */

/* Arm @id with @fn(@arg), or disarm it with @fn NULL. */
void test_point_set(enum test_point_id id, test_point_fn fn, void *arg);
void test_point_run(enum test_point_id id, void *obj);
/* Disarm every point (a test's teardown: its callbacks' arguments may have
 * lived on a stack that a failed assertion left). */
void test_point_clear_all(void);

static inline void test_point_obj(enum test_point_id id, void *obj)
{
	if (__builtin_expect(__atomic_load_n(&test_points_armed, __ATOMIC_RELAXED), 0))
		test_point_run(id, obj);
}

static inline void test_point(enum test_point_id id)
{
	test_point_obj(id, NULL);
}

#else /* the installed library: no test points at all */
static inline void test_point_obj(enum test_point_id id, void *obj)
{
	(void)id, (void)obj;
}

static inline void test_point(enum test_point_id id)
{
	(void)id;
}
#endif

#endif
