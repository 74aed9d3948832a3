/* SPDX-License-Identifier: MIT */
/*
 * Runtime PM of buffer objects: what the device must do with BOs before it
 * sleeps and after it wakes (src/rpm.h hooks), and the CPU-fault side.
 *
 *  - A BO joins the "VRAM-mapped" list when a CPU fault is about to map it in
 *    VRAM (bo_rpm_fault_begin, which also takes a runtime-PM reference and so
 *    wakes a sleeping device); it leaves it when it moves out of VRAM or is
 *    unmapped (bo_rpm_unmapped), destroyed (bo_rpm_forget), both called by
 *    mm/bo.c under the manager lock, or when runtime suspend releases its
 *    mapping.
 *  - Runtime suspend first releases (cpu_map_release) the mapping of every BO
 *    on the list, so that from then on a CPU store faults and takes a
 *    reference (which aborts the suspend) instead of reaching VRAM; then, for
 *    D3cold, it evicts every unpinned VRAM BO that may live in system memory
 *    (put on the "evicted" list, moved back by the rpm thread after the wake)
 *    and backs up the rest (pinned, VRAM-only) by CPU, restored right after
 *    the wake, before anyone else runs on the device. Those backups are the
 *    only copy while the device sleeps: only destroying the BO drops them
 *    (bo_rpm_forget), and a removal adopts them (bo_rpm_take_backup).
 *
 * Locking: struct bo_rpm's lock protects both lists (every BO's rpm_mapped
 * and rpm_evicted links), the backups and the counters; it is a leaf, taken
 * inside the manager lock and on the cpu_map handler thread (which never
 * takes the manager lock), and inside the rpm lock (stats).
 */
#ifndef UGPU_MM_BO_RPM_H
#define UGPU_MM_BO_RPM_H

#include <stdbool.h>
#include <stdint.h>

#include "src/rpm.h"

struct ugpu_device;
struct ugpu_bo;

/* bo_rpm_attach() - register the BO runtime-PM hooks with dev->rpm (after
 * rpm_init() and bo_mgr_init()). Returns 0, -ENOMEM. */
int bo_rpm_attach(struct ugpu_device *dev);
/*
 * bo_rpm_detach() - unregister and free (before rpm_fini()). NULL-safe.
 * Safe while the application touches its mappings: the state is unpublished
 * first; hooks that start later find no state and map nothing from VRAM.
 * The state is freed by the last of detach and the fault hooks already
 * using it (counted: never freed under a hook), together with a reference
 * a fault took and had not dropped yet. Detach waits for such hooks up to
 * BO_RPM_DETACH_WAIT_MS so that the teardown after it does not race a wake.
 * Context: not on the cpu_map handler thread; takes the manager lock (not
 * held by the caller).
 */
void bo_rpm_detach(struct ugpu_device *dev);
/* A fault hook waits up to RPM_WAIT_TIMEOUT_MS for another thread's
 * transition, then may wake the device itself (RPM_WAKE_BOUND_MS). */
#define BO_RPM_DETACH_WAIT_MS (RPM_WAIT_TIMEOUT_MS + RPM_WAKE_BOUND_MS)

/* cpu_map owner hooks for BO maps (mm/bo.c's bo_map_ops). Run on the
 * cpu_map handler thread; never take the manager lock. fault_begin fails
 * with -ENODEV for a BO still in VRAM once the device has been removed, and
 * answers -EINPROGRESS (the fault waits for the removal, which blocks the
 * map) when the device is gone but the removal has not given the BO its
 * new backing yet (docs/unplug.md). */
int bo_rpm_fault_begin(void *bo);
void bo_rpm_fault_end(void *bo);

/* bo_rpm_unmapped() - @bo left VRAM or lost its CPU mapping: no suspend
 * has a mapping of it to release. Its D3cold backups stay (they may be the
 * only copy). Manager lock held. */
void bo_rpm_unmapped(struct ugpu_bo *bo);
/* bo_rpm_forget() - @bo is being destroyed: off every list, its D3cold
 * backups dropped. Manager lock held. */
void bo_rpm_forget(struct ugpu_bo *bo);
/*
 * bo_rpm_take_backup() - does a D3cold backup hold all of @bo's VRAM
 * contents (the device sleeps in D3cold, or is being woken)? With @dst
 * (@bo->size bytes), copy it there in BO order and drop it: the caller
 * adopts it (a removal that cannot read VRAM). Manager lock held.
 */
bool bo_rpm_take_backup(struct ugpu_bo *bo, void *dst);
/*
 * bo_rpm_get() - rpm_get(@rpm) for an access that may reach @dev's VRAM
 * (a CPU touch, a BO copy, a GPU kernel). -ENODEV as well, without waking
 * the device, once a removal found @dev unreadable (device_vram_lost(),
 * also on a device that still answers) or when a suspend abandoned because
 * @dev went away kept its D3cold backups for the removal: nothing may reach
 * VRAM until the removal has run (a store there would pass the backup the
 * removal adopts), although the runtime-PM state says awake.
 * bo_rpm_get_if_active(): the same for rpm_get_if_active().
 * Those accesses take their reference through one of these two only. Any
 * thread, no lock.
 */
int bo_rpm_get(struct ugpu_device *dev, struct rpm *rpm);
bool bo_rpm_get_if_active(struct ugpu_device *dev, struct rpm *rpm);

/*
 * bo_rpm_store_u64() - store @v at @p, in VRAM (dev->vram) of a pinned BO (a
 * GPU VM's page table), without waking the device: a D3cold backup that
 * holds that offset gets it too, so the resume's restore does not bring
 * back what was there before. Before, an SVM unmap while the device slept
 * in D3cold cleared entries in VRAM only; the restore brought them back,
 * and a table given back as empty came back full (found by test_svm_model:
 * a kernel read through a stale entry whose DMA mapping was gone, or
 * through a table reused for other addresses). The store and the backup's
 * copy are made together under the list lock, which the resume holds
 * across its restore: a store made in VRAM first and noted after could
 * fall on both sides of a resume, which restored the older entry over it
 * and dropped the backups before the note (test_svm_model under TSan).
 * Manager lock held (it orders this against the suspend's backups).
 */
void bo_rpm_store_u64(struct ugpu_device *dev, uint64_t *p, uint64_t v);

/* Counters for tests and tools. */
struct bo_rpm_stats {
	uint64_t listed; /* BOs on the VRAM-mapped list now */
	uint64_t released; /* mappings released by runtime suspends */
	uint64_t wake_faults; /* CPU faults that took a runtime-PM reference */
	uint64_t evicted; /* BOs moved to system for D3cold */
	uint64_t restored; /* of those, moved back after the wake */
	uint64_t backed_up; /* BOs copied by CPU for D3cold (pinned, VRAM-only) */
};
void bo_rpm_get_stats(struct ugpu_device *dev, struct bo_rpm_stats *out);

/*
 * Test fault injection (process-wide): while the gate is closed, every
 * bo_rpm_fault_begin() that is about to take a runtime-PM reference parks
 * where a slow wake would keep it, holding the BO runtime-PM state, until
 * the gate opens (or BO_RPM_TEST_GATE_TIMEOUT_MS pass).
 * bo_rpm_test_parked() - how many hooks are parked there now.
 */
#define BO_RPM_TEST_GATE_TIMEOUT_MS 10000
#ifdef UGPU_TEST_HOOKS
void bo_rpm_test_gate(bool closed);
unsigned int bo_rpm_test_parked(void);
/* Tests: how long bo_rpm_detach() waits for fault hooks (0: the default),
 * to show that a hook outliving the wait still finds its state. */
void bo_rpm_test_set_detach_wait(unsigned int ms);
#endif

#endif
