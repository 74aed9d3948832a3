/* SPDX-License-Identifier: MIT */
/*
 * Buffer objects, internal side (the public API is include/ugpu/bo.h; the
 * design, locking and invariants are in docs/bo.md).
 *
 * One BO manager per device (dev->bo_mgr) owns the LRU of evictable BOs, the
 * list of every live BO (kernel and user), the CPU-mapping manager and the
 * host-suspend state (src/suspend.c works on the same structures).
 */
#ifndef UGPU_MM_BO_H
#define UGPU_MM_BO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <ugpu/bo.h>
#include <ugpu/pm.h>

#include "mm/buddy.h"
#include "mm/vm.h"
#include "base/list.h"
#include "base/sysmem.h"

struct ugpu_device;
struct cpu_map;
struct cpu_map_mgr;
struct backup_track;
struct spill;
struct engine;
struct rpm;

/*
 * struct bo_sys - system memory the device reaches by DMA: a sysmem memfd and
 * its IOVA in dev->dma. Used for a BO's SYSTEM placement and for suspend
 * backups. @mem.fd is -1 when empty.
 */
struct bo_sys {
	struct sysmem mem;
	uint64_t iova;
};

/*
 * struct ugpu_bo - one buffer object.
 *
 * Locking: @refcount is atomic. @touched is atomic (set by the CPU-fault path,
 * which may not take the manager lock). Everything else that changes after
 * creation (@placement, @vram, @sys, @backup, @pin_count, @lru, @lost,
 * @discarded, @map/@map_addr, @map_blocked, @backup_prepared, @track and the
 * track's sums, @corrupt) is protected by the manager's @lock (the track's
 * dirty bits are atomic: mm/backup_track.h). @moving: its copy runs with
 * the manager lock let go (bo_move_locked_release()); under @lock. The CPU-map resolve() callback reads @placement,
 * @vram and @sys without that lock: they change only between cpu_map_block()
 * and cpu_map_unblock() of the BO's map, which orders them (cpu_map.h).
 */
struct ugpu_bo {
	int refcount;
	/* The device whose manager holds the BO. Changes only under both
	 * managers' locks (a move to another device, mm/peer.c), by an atomic
	 * store: read it under the manager lock, or with bo_dev() and then
	 * bo_lock() (which checks it again under the lock). */
	struct ugpu_device *dev;
	uint64_t size; /* page rounded */
	uint32_t flags; /* UGPU_BO_* */
	enum ugpu_placement placements[UGPU_BO_MAX_PLACEMENTS];
	unsigned int nplacements;
	/* The placements the program asked for. A removal rewrites
	 * @placements (mm/evacuate.c: system memory first, VRAM answering
	 * -ENODEV); a move to another device that is present brings these
	 * back (mm/peer.c). Set at creation, read-only afterwards. */
	enum ugpu_placement user_placements[UGPU_BO_MAX_PLACEMENTS];
	unsigned int user_nplacements;
	unsigned int buddy_flags; /* extra buddy flags for VRAM (kernel: top-down) */
	char name[32];

	enum ugpu_placement placement; /* where the bytes are now; NONE = lost */
	bool moving; /* an unlocked move's copy runs (struct bo_mgr, @moving) */
	/* VRAM blocks while placement == VRAM (points to @own_blocks). */
	struct buddy_list *vram;
	struct buddy_list own_blocks;
	struct bo_sys sys; /* while placement == SYSTEM */

	bool no_clear; /* BO_KERNEL_NO_CLEAR: its first placement in VRAM is not
			* cleared (set at creation, read once under the lock) */
	bool speculative; /* BO_KERNEL_SPECULATIVE: until its first placement */
	bool driver_owned; /* made by the driver (bo_create_kernel): a device
			    * resource, not the program's (removal drops it) */
	bool svm; /* a shared-virtual-memory range's VRAM (bo_mark_svm()):
		   * evicted by handing it back to svm/ (struct bo_svm_ops) */
	uint32_t pin_count;
	struct list_link all; /* mgr->all: every live BO */
	struct list_link lru; /* mgr->lru iff placement == VRAM && !pin_count */
	int touched; /* atomic: used since last looked at by eviction (second chance) */
	bool lost;
	/* A removal kept it from a backup (mm/evacuate.c): it was in VRAM and
	 * is in system memory now, its placements switched to system first;
	 * a move on to a peer's VRAM gives it back @user_placements
	 * (mm/peer.c). Manager lock. */
	bool survivor;
	uint32_t discarded; /* suspends that discarded a NO_RESTORE BO's contents */

	/* CPU mapping, created by ugpu_bo_map(); NULL when none. */
	struct cpu_map *map;
	void *map_addr;
	bool map_blocked; /* suspend holds a cpu_map_block() */
	/* Runtime PM (mm/bo_rpm.c), under its lock; all-zero = not listed.
	 * @rpm_mapped: on its list of VRAM BOs a fault mapped since the last
	 * release. @rpm_evicted: on its list of BOs D3cold evicted, to move
	 * back after the wake. Two links: a BO can be on both (evicted, then
	 * pinned back into VRAM and touched). */
	struct list_link rpm_mapped;
	struct list_link rpm_evicted;

	/* Host-suspend backup of a VRAM BO (mm/backup.c); mem.fd -1 when none
	 * or when it is @spilled: then it lives in the manager's spill file
	 * (mm/spill.h) from byte @spill_off on. bo_has_backup() says either. */
	struct bo_sys backup;
	bool spilled;
	uint64_t spill_off;
	bool backup_prepared; /* made by prepare (else by suspend itself) */
	bool backup_valid; /* holds the contents from the suspend copy */
	/* The backup's chunk checksums and dirty bits (mm/backup_track.h);
	 * non-NULL exactly when the backup exists. */
	struct backup_track *track;
	uint32_t corrupt; /* resumes that found this BO's backup damaged */

	/* GPU VMs (mm/vm.c), under the manager lock: the binds of this BO
	 * (struct vm_bind.bo_link), and a counter bumped by every change of
	 * backing (bo_set_placement()) so a bind knows its PTEs are stale. */
	struct list_link binds;
	uint64_t backing_gen;

	/* A BO of a device served by ugpud (mm/bo_remote.h): its handle on the
	 * connection; read-only. Nothing above but @refcount, @dev, @size,
	 * @flags, @name and @map_addr (bo_remote.c: written by the map or
	 * unmap that claimed the BO, @map_busy) is used then, and @lease_fd
	 * below. */
	uint32_t remote_handle;
	bool map_busy; /* a map or unmap of it runs (bo_remote.c's map lock) */
	/* A remote BO made in system memory whose create brought its memfd
	 * (UGPUD_CREATE_FD: the daemon holds it there as for a map), not
	 * mapped yet: the fd and remote_resumes() then; -1 when none. Taken
	 * with an atomic exchange (bo_remote.c lease_take()), no lock. */
	int lease_fd;
	uint32_t lease_resumes;
	/* Set once at creation, never changed: a BO of a device served by
	 * ugpud (mm/bo_remote.h). Read without a lock: @dev itself may change
	 * under the BO manager locks (a move to another device, mm/peer.c),
	 * but never between a remote device and a local one. */
	bool remote;
	/* Exports of the system memory (bo_sys_export()), under the manager
	 * lock: while > 0 the BO stays in system memory (moves are -EBUSY). */
	uint32_t sys_holds;
};

/* Host-suspend states (ugpu_pm_stats.state). */
enum bo_pm_state {
	BO_PM_ACTIVE = UGPU_PM_ACTIVE,
	BO_PM_PREPARED = UGPU_PM_PREPARED,
	BO_PM_SUSPENDED = UGPU_PM_SUSPENDED,
};

/*
 * struct bo_mgr - the device's memory layer: the BO manager, the VRAM
 * manager, the host-suspend and removal state of the BOs.
 *
 * Locking: the host-suspend lock (src/suspend.h) is taken outside @lock by
 * every transition and the removal. @lock protects the lists, every BO's
 * placement state (see struct ugpu_bo), @pm_state, @prep_*, the counters and
 * the injection countdown. @lock is held across a whole move, copy included,
 * so a BO never changes under a copy (the exception: unlocked moves, below); it is never taken by the CPU-map
 * handler thread (resolve() does not take it), so holding it across
 * cpu_map_block() cannot deadlock. Inside @lock: @vram_lock (mm/vram.h,
 * a leaf), the DMA space lock, dev->lock (device_set_power), engine locks.
 *
 * Unlocked moves: an explicit migrate (ugpu_bo_migrate()), and a pin's
 * move back to the first placement (ugpu_bo_pin()), lets go of @lock
 * while its copy runs (bo_move_locked_release()), with the BO marked
 * @moving and @moving counted here. Everything that takes @lock takes it
 * with bo_mgr_lock(), which waits (on @moved) until no move is in that
 * window: for all of them the manager behaves as if the mover held the lock
 * throughout, as before. The exceptions, which take @lock plainly and
 * wait only while their own BO is moving: a CPU read or write of another
 * BO (bo_rw(): it touches only that BO's own backing and its LRU link),
 * ugpu_bo_query() (reads the BO's fields) and bo_sys_export() of a BO
 * already in system memory (its hold and memfd); and
 * ugpu_device_mem_stats(), which only reads (a move in its window shows as
 * not yet done, its destination allocated). So one client's large migrate no longer holds up another's small
 * reads and writes on the same device (docs/bo.md, "Unlocked moves").
 * A mover holds no lock during the copy and retakes @lock plainly, so the
 * waiters cannot deadlock with it; at most one move per device is in the
 * window (a second mover waits in bo_mgr_lock()).
 */
struct bo_mgr {
	struct ugpu_device *dev;
	pthread_mutex_t lock;
	unsigned int moving; /* moves in their unlocked copy (0 or 1), under @lock */
	pthread_cond_t moved; /* broadcast (under @lock) when one ends */
	struct list_link all;
	struct list_link lru; /* head = least recently used */
	uint64_t nr_bos;
	uint64_t nr_lru;
	uint64_t vram_bytes; /* bytes of VRAM held by BOs */
	uint64_t sys_bytes; /* bytes of SYSTEM placements */

	/* CPU mappings: created on the first ugpu_bo_map(). */
	struct cpu_map_mgr *maps;
	int vram_fd; /* VRAM region fd for mappings, with its offset */
	uint64_t vram_fd_off;

	/* counters (ugpu_bo_mgr_stats) */
	uint64_t evictions, evicted_bytes, moves, moved_bytes, copy_failures;
	/* moves between devices (mm/peer.c): BOs that left for another device,
	 * that came from one (directly over the fabric, or through system
	 * memory), and the bytes that came */
	uint64_t peer_out, peer_in, peer_direct, peer_via_system, peer_bytes;

	/* peer windows (mm/p2p.c): a peer's VRAM BAR mapped into this
	 * device's DMA space for peer binds, one per peer, under @lock.
	 * @refs: peer binds using it (each holds the window, and the window
	 * a device reference of @peer); @revoked: unmapped already (the peer
	 * is going, or this device is), waiting for its binds to go. */
	struct p2p_win {
		struct ugpu_device *peer;
		uint64_t iova, size;
		unsigned int refs;
		bool revoked;
	} p2p[16];
	/* staging for moves to a peer through system memory (mm/p2p.c): one
	 * buffer per peer, mapped in this device's DMA space (@iova) and the
	 * peer's (@peer_iova), made at the first such move; under @lock (and
	 * the peer's manager lock while a move uses it); dropped when either
	 * device goes */
	struct p2p_stage {
		struct ugpu_device *peer;
		struct sysmem mem;
		uint64_t iova, peer_iova;
	} stage[16];

	/* fault injection: fail the Nth backup allocation (countdown; 0 = off) */
	unsigned long fail_backup_at;
	bool fail_backup_always;

	/* host suspend (mm/backup.c): the state, and the BOs a prepare works
	 * on (each with a reference, between prepare_begin and prepare_end) */
	enum bo_pm_state pm_state;
	struct ugpu_bo **prep_bos;
	size_t prep_n;
	/* the backups in memory (@backup_mem bytes, against the spill limit)
	 * and the spill file (mm/spill.h), open exactly while @spill_bos > 0 */
	uint64_t backup_mem;
	uint64_t backup_cpu_sums; /* bo_mgr_stats */
	struct spill *spill;
	uint64_t spill_bos;

	/* the VRAM manager (mm/vram.h): @vram_ready while the "vram-mm" step
	 * is up; it and the fields below under @vram_lock */
	pthread_mutex_t vram_lock;
	struct buddy_mm vram_mm;
	bool vram_ready;
	/* frees held back (vram_hold_frees()): while @vram_holding, freed
	 * blocks go to @vram_held (@vram_held_bytes with @vram_sealed) */
	bool vram_holding;
	struct buddy_list vram_held, vram_sealed;
	uint64_t vram_held_bytes;
	/* vram_hold_strict(): set, the program's BOs never take held-back
	 * blocks (-ERESTART) and @vram_want is told (with @vram_want_arg) */
	void (*vram_want)(void *arg);
	void *vram_want_arg;

	/* runtime PM of the BOs (mm/bo_rpm.c); NULL when not attached.
	 * @rpm_hooks: cpu_map fault hooks of mm/bo_rpm.c between reading @rpm
	 * and their last use of it (atomic). @rpm_zombie: the state a detach
	 * unpublished while hooks still used it; whoever finds the count at 0
	 * with @rpm NULL frees it (counted, never freed under a hook). */
	struct bo_rpm *rpm;
	unsigned int rpm_hooks;
	struct bo_rpm *rpm_zombie;
	/* ugpu_device_close() released every BO's memory: BO calls answer
	 * -ENODEV, the last put frees the handle (under @lock). */
	bool closed;
	/* shared virtual memory's eviction of its ranges (bo_svm_register());
	 * under @lock */
	const struct bo_svm_ops *svm_ops;
	void *svm_arg;
	/* broadcast (under @lock) when @pm_state leaves SUSPENDED, and on
	 * removal and close: bo_pm_wait_awake() waits on it */
	pthread_cond_t pm_cond;
};

/*
 * struct bo_svm_ops - shared virtual memory's part in eviction: its ranges'
 * VRAM (BOs marked with bo_mark_svm()) sits on the same LRU as the
 * program's BOs, and eviction picks from both in LRU order.
 * @evict: @bo was picked: bring its range's bytes back into process memory
 *         and unmap it from the GPU, then return 0: the manager frees the
 *         VRAM, and svm/ puts its reference on @bo later (never here).
 *         -EBUSY: not now (the range is busy, a VM lock is taken): the next
 *         victim is tried. Called with the manager lock held: it must not
 *         take it, nor wait for anything that takes it (VM locks only with
 *         trylock).
 */
struct bo_svm_ops {
	int (*evict)(void *arg, struct ugpu_bo *bo);
	/* Host suspend is starting (prepare, or a suspend without one), the
	 * kernels held: every range in @dev's VRAM goes back into the process,
	 * each owner waited for. No manager lock held. */
	void (*suspend_prepare)(void *arg, struct ugpu_device *dev);
	/* An orderly removal of @dev (awake, its kernels stopped, before its
	 * BOs go to peers): ranges in its VRAM go to peers' VRAM with room.
	 * No manager lock held. May be NULL. */
	void (*to_peers)(void *arg, struct ugpu_device *dev);
};

/* No host-suspend cycle is open on @dev (prepare .. resume): shared virtual
 * memory may move ranges into its VRAM. Takes the manager lock. A device
 * served by ugpud: true (the daemon answers -EAGAIN while suspended). */
bool bo_pm_active(struct ugpu_device *dev);
/* Wait while @dev is host-suspended (its VRAM and page tables unreachable
 * until resume); returns at once once it is removed or closed, or at once
 * for a device served by ugpud. Takes the manager lock; call with no lock
 * held. */
void bo_pm_wait_awake(struct ugpu_device *dev);

/* Install (or with @ops NULL remove) shared virtual memory's eviction for
 * @dev's BOs. Takes the manager lock: when it returns no @evict runs. */
void bo_svm_register(struct ugpu_device *dev, const struct bo_svm_ops *ops, void *arg);
/* The ops installed for @m's device (NULL: none) and their *@arg, read
 * under the manager lock; call one with no lock held. */
const struct bo_svm_ops *bo_svm_ops_get(struct bo_mgr *m, void **arg);
/* @bo (a kernel BO in VRAM) holds a shared-virtual-memory range. */
void bo_mark_svm(struct ugpu_bo *bo);
/* Evict @bo (in VRAM, evictable): to system memory, or a shared-virtual-
 * memory range back into the process (-EBUSY: not now). Manager lock. */
int bo_evict_locked(struct ugpu_bo *bo);
/* @bo is a shared-virtual-memory range that svm/ can take back now. */
bool bo_svm_evictable_locked(const struct ugpu_bo *bo);

/* Counters for tests and tools. */
struct bo_mgr_stats {
	uint64_t bos, lru, vram_bytes, sys_bytes;
	uint64_t evictions, evicted_bytes, moves, moved_bytes, copy_failures;
	uint64_t backups, backup_bytes;
	/* bytes of the blitters' host-suspend saves that the CPU hashed
	 * (engines without sums, or copies that got none), since the start;
	 * the CPU engine's passes and the spill pass are not counted */
	uint64_t backup_cpu_sums;
};

/*
 * The "bo-mgr" bring-up step (context lifetime), registered by mm/bo.c: its
 * up creates the manager and installs the memory layer's ops in the device
 * (kernel memory, host suspend: mm/backup.c, removal: mm/evacuate.c); its
 * down (ugpu_device_close()) releases the memory and mappings of BOs still
 * alive and marks the manager closed (their handles answer -ENODEV); its
 * release frees the manager when the last handle is gone (device_put()).
 */
void backup_register(struct ugpu_device *dev);
/* backup_map_going() - @bo's CPU mapping is about to go (ugpu_bo_unmap())
 * while a prepared host suspend tracks its writes: the chunks its stores
 * dirtied go to the track now, or, when not every store was seen (a
 * mapping made after prepare), the BO is copied whole. Before, the suspend
 * looked only at the mappings still there, and a store through a mapping
 * made after prepare and gone before the suspend was lost (found by
 * test_model in CI). Manager lock held. */
void backup_map_going(struct ugpu_bo *bo);
void evacuate_register(struct ugpu_device *dev);

/* @bo has a host-suspend backup, in memory or spilled to the file. */
static inline bool bo_has_backup(const struct ugpu_bo *bo)
{
	return bo->backup.mem.fd >= 0 || bo->spilled;
}

/* Free @bo's backup (if any) with its track, without touching the CPU
 * mapping's write tracking (bo_backup_drop() does both); manager lock held.
 * The last spilled backup gone closes (and removes) the spill file. */
void bo_backup_free_locked(struct ugpu_device *dev, struct ugpu_bo *bo);

/* A spilled backup of @bo becomes one in memory (read back from the file):
 * for a removal that keeps it as the BO's system copy. Returns 0 (also when
 * not spilled), -ENOMEM, -EIO. Manager lock held. */
int bo_backup_unspill_locked(struct ugpu_device *dev, struct ugpu_bo *bo);

/* Free @bo's host-suspend backup (if any) with its track; manager lock held. */
void bo_backup_drop(struct ugpu_device *dev, struct ugpu_bo *bo);
/* A tracked writer wrote [off, off+len) of @bo (in VRAM): the next suspend
 * copies those chunks again. Manager lock held. */
void bo_backup_dirty_locked(struct ugpu_bo *bo, uint64_t off, uint64_t len);

/* bo_snapshot_locked() - every live BO, each with a reference (never taken
 * from 0). bo_snapshot_put() drops them and frees the array. */
int bo_snapshot_locked(struct bo_mgr *m, struct ugpu_bo ***out, size_t *n);
void bo_snapshot_put(struct ugpu_bo **v, size_t n);

/*
 * bo_create_kernel() - a driver BO: like ugpu_bo_create() with extra
 * @buddy_flags (e.g. BUDDY_TOPDOWN_ALLOCATION), and BO_KERNEL_NO_CLEAR.
 * It is the driver's, not the program's (driver_owned): a removal leaves it
 * to its owner.
 * Context: any thread.
 */
/* Not a buddy flag: the new VRAM is not cleared when the BO is placed (a
 * 2 MiB memset through the BAR under the manager lock), because the caller
 * writes every byte of it before anything can read it: an SVM range's copy
 * (svm/migrate.c). A BO that may land in system memory must not use it. */
#define BO_KERNEL_NO_CLEAR (1u << 31)
/* Not a buddy flag either: speculative VRAM (the SVM stream prefetcher's,
 * svm/fault.c), only if it is free now and the device is awake. No eviction
 * makes room for it (-ENOSPC, or the next placement), and the creation
 * neither wakes the device nor waits for it (-EAGAIN): it never pushes out
 * what is in use, and never stalls on a removal. Its first placement only:
 * later moves of the BO are as any BO's. */
#define BO_KERNEL_SPECULATIVE (1u << 30)
int bo_create_kernel(struct ugpu_device *dev, const struct ugpu_bo_opts *opts,
		     unsigned int buddy_flags, struct ugpu_bo **out);

/* Placement writes are atomic stores (under the manager lock, between
 * cpu_map_block() and unblock): the fault hooks read it without the lock.
 * Every change of a BO's backing goes through here: the VMs it is bound in
 * learn that their PTEs for it are stale (rewritten before their next
 * kernel, mm/vm.c). */
static inline void bo_set_placement(struct ugpu_bo *bo, enum ugpu_placement p)
{
	__atomic_store_n(&bo->placement, p, __ATOMIC_RELAXED);
	bo->backing_gen++;
	if (list_linked(&bo->binds))
		vm_bo_moved_locked(bo);
}

/*
 * bo_rpm_hold() / bo_rpm_release() - a runtime-PM reference for a public
 * path that touches the device (copies, the BAR), taken BEFORE the manager
 * lock and dropped after it; none (and 0) when there is no runtime PM or
 * the device is removed. Returns 0, or rpm_get()'s -EIO / -ETIMEDOUT, or
 * -ENODEV (the device went away and its removal did not finish in time).
 */
int bo_rpm_hold(struct ugpu_device *dev, struct rpm **held);
void bo_rpm_release(struct rpm *held);
/* The same reference only if the device is awake (D0, no suspend started):
 * never wakes it, never waits. 0 with *@held set (NULL: no runtime PM);
 * -EAGAIN when it is not awake; -ENODEV when it is removed. */
int bo_rpm_hold_if_awake(struct ugpu_device *dev, struct rpm **held);

/* The BO's device, read without a lock (it may change: mm/peer.c). */
static inline struct ugpu_device *bo_dev(const struct ugpu_bo *bo)
{
	return __atomic_load_n(&bo->dev, __ATOMIC_ACQUIRE);
}
/*
 * bo_lock() - lock the manager of @bo's device, whichever device that is
 * when the lock is held (a move to another device changes it under both
 * locks). With @held, first take a runtime-PM reference of that device
 * (bo_rpm_hold(); released by bo_unlock()).
 * Returns: 0 with *@out locked; bo_rpm_hold()'s -errno.
 */
int bo_lock(struct ugpu_bo *bo, struct rpm **held, struct bo_mgr **out);
void bo_unlock(struct bo_mgr *m, struct rpm *held);
/* bo_lock_own() - bo_lock() without a runtime-PM reference that waits only
 * while @bo itself is moving, not for another BO's unlocked move (for what
 * changes only @bo's own fields: bo_rw(), its holds). Unlock with
 * pthread_mutex_unlock(&(*@out)->lock). */
void bo_lock_own(struct ugpu_bo *bo, struct bo_mgr **out);

/* VRAM offset of the first block (the whole BO when contiguous). */
uint64_t bo_vram_offset(const struct ugpu_bo *bo);

/*
 * bo_mgr_check() - verify the manager's invariants (tests): every VRAM BO's
 * blocks are allocated in the buddy and sum to its size; SYSTEM BOs have a
 * mapped sysmem; lost BOs have no backing; the LRU holds exactly the
 * unpinned VRAM BOs; the byte counters match; backups exist only while
 * prepared/suspended, never for NO_RESTORE BOs, always with a write track;
 * the buddy allocator's own check passes. @strict: also VRAM used in the
 * buddy == VRAM held by BOs.
 * Returns: 0, or -EINVAL after logging the first violation.
 * Context: any thread; takes the manager lock.
 */
int bo_mgr_check(struct ugpu_device *dev, bool strict);

void bo_mgr_get_stats(struct ugpu_device *dev, struct bo_mgr_stats *st);

#ifdef UGPU_TEST_HOOKS
/* Fault injection: the @n-th backup allocation from now fails with -ENOMEM
 * (@always: that one and every later one); n == 0 clears. */
void bo_mgr_inject_backup_failure(struct ugpu_device *dev, unsigned long n, bool always);

/*
 * bo_test_release_by_invalidate() - CPU-mapping managers created after this
 * call (one per device, at the first ugpu_bo_map()) release mappings for
 * runtime PM by invalidation instead of in place: the path a backing that
 * userfaultfd cannot register takes (a vfio-pci BAR), run on the reference
 * device. Process-wide; for tests.
 */
void bo_test_release_by_invalidate(bool on);
#endif

/* ---- for src/suspend.c (manager lock held unless said otherwise) ---------- */

#define bo_for_each(pos, head) list_for_each(pos, head)
#define bo_of_all(link) list_entry(link, struct ugpu_bo, all)

/* ---- mm/move.c: moves, eviction, the LRU, system memory ------------------ */

/* Move @bo to @to (evicting others for VRAM). Returns as ugpu_bo_migrate(). */
int bo_move_locked(struct ugpu_bo *bo, enum ugpu_placement to);
/* bo_move_locked() that lets go of the manager lock while the copy runs
 * (struct bo_mgr, "Unlocked moves"); the lock is held again on return. For
 * a caller that holds nothing else the copy could need and has checked
 * everything it needs before (ugpu_bo_migrate()). The system memory a move
 * to VRAM left is put in *@old (fd -1 when none), for the caller to free
 * with bo_sys_free() once it let go of the lock. */
int bo_move_locked_release(struct ugpu_bo *bo, enum ugpu_placement to, struct bo_sys *old);

/* Take @m's lock once no move is in its unlocked copy (struct bo_mgr).
 * Every taker of the manager lock but bo_rw() uses it. */
void bo_mgr_lock(struct bo_mgr *m);
/* The same without waiting: true with the lock held, false (not held)
 * when it is taken or a move is in its unlocked copy. */
bool bo_mgr_trylock(struct bo_mgr *m);
/* With @m's lock held: wait until no move is in its unlocked copy (after a
 * wait on another condition of @m->lock, or a timed lock). 0, or
 * -ETIMEDOUT at @deadline (CLOCK_REALTIME; NULL: none; the lock is still
 * held then). */
int bo_mgr_wait_moves_locked(struct bo_mgr *m, const struct timespec *deadline);

/*
 * bo_maps_get_locked() - @dev's CPU-mapping manager (struct bo_mgr.maps),
 * made at the first need: a ugpu_bo_map(), or a mapped BO arriving from
 * another device (mm/peer.c). @dev's manager lock held.
 * Returns: 0; -ENOSYS (no usable userfaultfd); the -errno of the VRAM
 * region's fd or of cpu_map_mgr_create().
 */
int bo_maps_get_locked(struct ugpu_device *dev);

/*
 * bo_sys_export() - hand @bo's memory to another process (ugpud's CPU
 * mappings for clients): move it to system memory if it is not there, hold
 * it there until bo_sys_release() (moves are -EBUSY meanwhile), and give a
 * duplicate of its memfd, sealed so that nobody can shrink or grow it or add
 * seals (a shrink under the device's DMA mapping would fault the device
 * model and the daemon): the fd reaches this BO's pages and nothing else.
 * @fd: gets the new fd (close-on-exec), owned by the caller.
 * @size: gets the memfd's size (the BO's, page rounded).
 * Returns: 0; -EINVAL (SYSTEM not an allowed placement); -EBUSY (pinned
 * elsewhere, or busy under a GPU kernel); -ENODEV; -ENODATA (lost); what the
 * move returns; -errno of the dup or the seals.
 */
int bo_sys_export(struct ugpu_bo *bo, int *fd, uint64_t *size);
/*
 * bo_backing_record() - where @bo's bytes are now (ugpud's restart record).
 * @gen: in: the backing generation the caller saw last; out: the current
 *       one. When they are equal nothing is filled and 1 is returned.
 * @placement: gets the placement (UGPU_PLACEMENT_NONE: lost).
 * @ext, @max: VRAM: the extents (VRAM offset, bytes) in the BO's byte
 *       order, adjacent blocks merged; *@next gets how many (more than
 *       @max: the array was short, only @max filled).
 * @sys_fd: SYSTEM: a duplicate of the backing memfd (close-on-exec, the
 *       caller's); -1 otherwise.
 * Returns: 0; 1 (unchanged); -ENODEV (the device's manager closed);
 * -errno of the dup.
 * Context: takes the manager lock.
 */
struct bo_extent {
	uint64_t offset;
	uint64_t bytes;
};
int bo_backing_record(struct ugpu_bo *bo, uint64_t *gen, enum ugpu_placement *placement,
	     struct bo_extent *ext, size_t max, size_t *next, int *sys_fd);
/*
 * bo_sys_adopt() - make the memfd @fd @bo's system memory, in place of the
 * memory it has (ugpud's restart: a client still maps the memfd the dead
 * daemon exported, and the restored BO must be that memory, not a copy).
 * @bo must be in system memory, unpinned, unbound, not exported nor mapped
 * here, and @fd exactly its system memory's size. The old memory is freed;
 * the BO's bytes are @fd's from now on, and the BO is held in system memory
 * as by bo_sys_export() (bo_sys_release() ends that), in the same step.
 * Returns: 0; -EBUSY (not so); -EINVAL (@fd's size); -ENODEV (closed);
 * -errno of the dup, mmap or DMA mapping (nothing changed).
 * Context: takes the manager lock.
 */
int bo_sys_adopt(struct ugpu_bo *bo, int fd);
/* Drop one hold of bo_sys_export() (the fds handed out stay valid: they pin
 * the pages they map, not the placement). */
void bo_sys_release(struct ugpu_bo *bo);
/*
 * bo_recycle() - make @bo, in system memory, its first placement, and
 * referenced by the caller alone, a new BO again (ugpud's per-client pool, docs/daemon.md): its
 * memory zeroed in place (the same pages, so a DMA mapping that pins them
 * stays right) and named @name; with @name NULL, only whether it could be
 * (nothing changes). Its size, placements, flags and DMA
 * mapping stay. Only BOs of at most BO_RECYCLE_MAX bytes (the zeroing is
 * done under the manager lock).
 * Returns: 0; -EFBIG (larger); -EBUSY (another reference, pinned, held by
 * an export, not in system memory or system memory not its first
 * placement, lost, changed by a removal or a suspend); -ENODEV (device
 * closed or removed).
 * Context: takes the manager lock (own-only: not held up by another BO's
 * move).
 */
#define BO_RECYCLE_MAX (1ull << 20)
int bo_recycle(struct ugpu_bo *bo, const char *name);
/* VRAM blocks for @bo's size into @out, evicting unpinned BOs (LRU order,
 * second chance for touched ones) until they fit. -ENOSPC when nothing is
 * left to evict; -EIO when an eviction copy failed (the victim is intact). */
int bo_vram_alloc_evict_locked(struct ugpu_bo *bo, struct buddy_list *out);
/* The same in @dev's VRAM (@dev's manager lock held), for @bo that may
 * belong to another device (a move between devices, mm/peer.c). */
int bo_vram_alloc_evict_on_locked(struct ugpu_device *dev, struct ugpu_bo *bo,
				  struct buddy_list *out);

/* May @bo be placed in @p? */
static inline bool bo_placement_allowed(const struct ugpu_bo *bo, enum ugpu_placement p)
{
	unsigned int i;

	for (i = 0; i < bo->nplacements; i++)
		if (bo->placements[i] == p)
			return true;
	return false;
}
/* Allocate (and DMA-map) system memory; counts against the injection hook
 * when @backup. */
int bo_sys_alloc_locked(struct ugpu_device *dev, uint64_t size, const char *name, bool backup,
			struct bo_sys *out);
void bo_sys_free(struct ugpu_device *dev, struct bo_sys *s);
/*
 * Queue copies of the first @size bytes of the VRAM @blocks to (@to_vram
 * false) or from (@to_vram true) the IOVA @iova on engine @e, block by block
 * (chunks of at most 256 MiB); *@fence gets the last fence.
 * Returns 0 or the engine's -errno.
 */
int bo_copy_queue(struct engine *e, const struct buddy_list *blocks, uint64_t size, uint64_t iova,
		  bool to_vram, uint64_t *fence);
/* The same for bytes [@off, @off+@len) of the blocks; @iova is where byte
 * @off goes (or comes from). */
int bo_copy_range_queue(struct engine *e, const struct buddy_list *blocks, uint64_t off,
			uint64_t len, uint64_t iova, bool to_vram, uint64_t *fence);
/* Copy bound for @bytes: 5 s plus 1 s per 256 MiB. */
int bo_copy_timeout_ms(uint64_t bytes);
/* How much longer than its copy bound a CPU touch may wait for a BO's move
 * (cpu_map_set_block_timeout()): the rest of the move and scheduling. */
#define BO_BLOCK_SLACK_MS 5000
/* How long a CPU touch of @bo's mapping may wait for a move of it: its
 * copy bound and the slack (a removal's hold of the mapping waits longer:
 * mm/evacuate.c). */
unsigned int bo_map_block_timeout_ms(const struct ugpu_bo *bo);
void bo_lru_del_locked(struct ugpu_bo *bo);
void bo_lru_update_locked(struct ugpu_bo *bo);

#endif
