/* SPDX-License-Identifier: MIT */
/*
 * Runtime PM of buffer objects: what the device must do with BOs before it
 * sleeps and after it wakes (src/rpm.h hooks), and the CPU-fault side.
 *
 *  - A BO joins the "VRAM-mapped" list when a CPU fault is about to map it in
 *    VRAM (bo_rpm_fault_begin, which also takes a runtime-PM reference and so
 *    wakes a sleeping device); it leaves it when it moves out of VRAM, is
 *    unmapped or destroyed (bo_rpm_forget, called by mm/bo.c under the
 *    manager lock), or when runtime suspend releases its mapping.
 *  - Runtime suspend releases (cpu_map_invalidate) the mapping of every BO
 *    on the list; for D3cold it first evicts every unpinned VRAM BO that may
 *    live in system memory (moved back by the rpm thread after the wake) and
 *    backs up the rest (pinned, VRAM-only) by CPU, restored right after the
 *    wake, before anyone else runs on the device.
 *
 * Locking: struct bo_rpm's lock protects both lists (every BO's rpm_link),
 * the backups and the counters; it is a leaf, taken inside the manager lock
 * and on the cpu_map handler thread (which never takes the manager lock).
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
 * first, then the fault hooks already using it are waited for (bounded by
 * BO_RPM_DETACH_TIMEOUT_MS; past it the state is leaked, never freed under
 * a hook); hooks that start later find no state and map nothing from VRAM.
 * A reference a fault took before and would drop after is dropped here.
 * Context: not on the cpu_map handler thread; takes the manager lock (not
 * held by the caller).
 */
void bo_rpm_detach(struct ugpu_device *dev);
/* A fault hook is bounded by rpm_get() (RPM_WAIT_TIMEOUT_MS) and a wake. */
#define BO_RPM_DETACH_TIMEOUT_MS (2 * RPM_WAIT_TIMEOUT_MS)

/* cpu_map owner hooks for BO maps (mm/bo.c's bo_map_ops). Run on the
 * cpu_map handler thread; never take the manager lock. fault_begin fails
 * with -ENODEV for a BO still in VRAM once the device has been removed. */
int bo_rpm_fault_begin(void *bo);
void bo_rpm_fault_end(void *bo);

/* bo_rpm_forget() - @bo left VRAM, lost its mapping or is being destroyed:
 * take it off the lists and drop its D3cold backups. Manager lock held. */
void bo_rpm_forget(struct ugpu_bo *bo);

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
void bo_rpm_test_gate(bool closed);
unsigned int bo_rpm_test_parked(void);

#endif
