/* SPDX-License-Identifier: MIT */
/*
 * CPU mappings that follow a buffer object, managed with userfaultfd.
 *
 * The userspace counterpart of TTM's fault-driven CPU mappings
 * (drm_vma_node_unmap + the .fault handler): an object gets a fixed virtual
 * address range for its whole life; what that range maps is decided at fault
 * time by asking the object's owner where its bytes live *now* (a VRAM BAR at
 * the object's VRAM offset, or the object's system memfd). Moving the object
 * invalidates the range; the next CPU touch faults and maps the new backing.
 * See docs/cpu-mappings.md for the design, the race it avoids and why.
 *
 * Mechanism in one paragraph: an unmapped range is an anonymous placeholder
 * registered with the manager's userfaultfd (missing mode). A fault is read by
 * the manager's handler thread, which mmap(MAP_FIXED|MAP_SHARED)s every extent
 * of the backing over the range and wakes the faulting thread. Invalidation
 * never maps an unregistered page over the range: it registers a fresh
 * placeholder elsewhere and mremap(MREMAP_FIXED)s it over the range, which
 * swaps the mappings atomically under the kernel's mmap lock (this needs
 * UFFD_FEATURE_EVENT_REMAP, so the invalidating thread waits until the handler
 * thread has read the REMAP event; that is why the handler thread itself may
 * never invalidate).
 *
 * Release (cpu_map_release()) is the lighter step runtime PM needs: the
 * object stays where it is, only the CPU must stop reaching it until the next
 * fault has woken the device. When the backing is a shmem file (a memfd, the
 * reference device's VRAM BAR), the backing's own mapping is registered in
 * missing + minor mode and its page-table entries are zapped: the next access
 * faults, the handler calls fault_begin and unregisters the range, and the
 * faulting thread continues on the same mapping - no mmap() on the fault path.
 * Other backings (a vfio-pci BAR cannot be registered) are invalidated.
 *
 * Threading: every function may be called from any thread EXCEPT the
 * manager's handler thread (i.e. from inside an owner callback), where the
 * calls that change mappings return -EDEADLK instead of deadlocking.
 * Calls on one map are serialised internally; cpu_map_destroy() must not race
 * with other calls on the same map (the owner's reference guarantees it).
 */
#ifndef UGPU_MM_CPU_MAP_H
#define UGPU_MM_CPU_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct stat_hist;

struct ugpu_context;
struct cpu_map_mgr;
struct cpu_map;

/*
 * struct cpu_map_extent - where a run of an object's bytes lives.
 * @fd: a file that can be mmap(MAP_SHARED)ped read/write (a memfd, the VRAM
 *      BAR memfd of the reference device, a vfio device fd). The manager only
 *      borrows it for the mmap() call; the mapping keeps the file alive.
 * @fd_offset: offset of the run in @fd; page aligned.
 * @len: bytes of the run, > 0; page aligned unless it reaches the end of the
 *       object. Longer than the rest of the object is fine (clipped).
 */
struct cpu_map_extent {
	int fd;
	uint64_t fd_offset;
	uint64_t len;
};

/*
 * struct cpu_map_owner_ops - what the manager asks of the object's owner.
 *
 * All callbacks run on the manager's handler thread. While one runs, no other
 * fault of the same manager is served, so they must be quick and bounded.
 * They must not call cpu_map_invalidate/block/unblock/destroy (-EDEADLK) and
 * must not wait for a lock that a caller of those functions holds across the
 * call (the caller may be waiting for the handler thread).
 *
 * @resolve: required. Describe the current backing of the object at byte
 *           @offset (page aligned, < the map's size) in @ext. Called with the
 *           map's lock held: it must not sleep and must not call into
 *           cpu_map. It needs no lock of its own for the placement: the owner
 *           changes the placement only between cpu_map_block() and
 *           cpu_map_unblock(), and the map lock orders those writes before
 *           this call. Returns 0 or -errno (e.g. -ENODEV: the object lost its
 *           contents); on error the faulting thread gets SIGBUS (see
 *           cpu_map_create()).
 * @fault_begin: may be NULL. Called before @resolve for a fault that will map
 *           the object, without any cpu_map lock held; the runtime-PM layer
 *           takes a device-awake reference here (and may wake the device,
 *           bounded). A negative return is handled like a @resolve failure.
 *           It may decide from the backing as it is now: if the owner
 *           blocks the map (to change the backing) while it runs, the
 *           manager calls @fault_end and then @fault_begin again before it
 *           maps, so the decision and the mapping see the same backing.
 *           -EINPROGRESS is not a failure: the owner says it is about to
 *           change the backing itself (a removal will block the map, move
 *           or drop the object and unblock it): the fault parks as on a
 *           blocked map until the next block, unblock or invalidate, then
 *           runs again from the start; if none comes within the await
 *           timeout (cpu_map_set_await_timeout(); by default the block
 *           timeout) the thread gets SIGBUS as for a stuck move.
 * @fault_end: may be NULL. Called once after every @fault_begin that
 *           returned 0, when the mapping is in place (or failed), before the
 *           faulting thread is woken; drops what @fault_begin took. No
 *           cpu_map lock held, except for a range released in place
 *           (cpu_map_release()), where it runs under the map's lock just
 *           before the range is given back: it must not wait for anything
 *           that a caller of cpu_map_release() may hold.
 */
struct cpu_map_owner_ops {
	int (*resolve)(void *owner, uint64_t offset, struct cpu_map_extent *ext);
	int (*fault_begin)(void *owner);
	void (*fault_end)(void *owner);
};

/*
 * struct cpu_map_mgr_opts - manager options; may grow (starts with @size).
 * @size: sizeof(struct cpu_map_mgr_opts) as compiled by the caller.
 * @block_timeout_ms: how long a fault may wait for a blocked map
 *           (cpu_map_block()) before the faulting thread gets SIGBUS and an
 *           error naming the object is logged; 0 means 10000.
 * @release_by_invalidate: make cpu_map_release() always invalidate, as it
 *           must for backings userfaultfd cannot register (tests use it to
 *           run that path on memfds).
 */
struct cpu_map_mgr_opts {
	size_t size;
	unsigned int block_timeout_ms;
	bool release_by_invalidate;
	/* where the handler records how long it took to serve each missing-page
	 * fault, in microseconds (the read message to the faulting thread's
	 * wake); NULL: not recorded. Must outlive the manager. */
	struct stat_hist *fault_hist;
};

/*
 * enum cpu_map_state - what a map's range currently is (cpu_map_query()).
 * @CPU_MAP_UNMAPPED: a registered placeholder: the next access faults.
 * @CPU_MAP_MAPPED: the backing the owner last resolved is mapped.
 * @CPU_MAP_RELEASED: released in place (cpu_map_release()): the backing's
 *           mapping is there but registered and empty, so the next access
 *           faults; the backing has not changed since it was mapped.
 * @CPU_MAP_INVALIDATING: a placeholder is being swapped in; faults wait.
 * @CPU_MAP_ERROR: resolving failed (or a blocked fault timed out): accesses
 *           outside what was mapped get SIGBUS until the next invalidate or
 *           unblock.
 * @CPU_MAP_DEAD: being destroyed.
 */
enum cpu_map_state {
	CPU_MAP_UNMAPPED,
	CPU_MAP_MAPPED,
	CPU_MAP_INVALIDATING,
	CPU_MAP_ERROR,
	CPU_MAP_DEAD,
	CPU_MAP_RELEASED,
};

/*
 * struct cpu_map_stats - manager-wide counters (cpu_map_mgr_stats()).
 * @maps: live maps.
 * @fault_events: page-fault messages read from the userfaultfd.
 * @faults: faults that mapped an object's backing.
 * @stale_faults: messages for a range already mapped (several threads
 *           faulting at once) or for no map (destroyed); answered by a wake.
 * @parked_faults: faults that had to wait for a block or an invalidation.
 * @invalidations: invalidations that replaced a mapping (not no-ops).
 * @errors: failed resolves, failed mmaps and block timeouts.
 * @block_timeouts: the subset of @errors that were block timeouts.
 * @remap_events: REMAP messages read (one per invalidation).
 * @releases: cpu_map_release() calls that released a mapping in place
 *           (the others invalidated and count in @invalidations).
 * @mapped_bytes: bytes of backing currently mapped, all maps.
 * @features: the userfaultfd features in use (UFFD_FEATURE_*).
 */
struct cpu_map_stats {
	uint64_t maps;
	uint64_t fault_events;
	uint64_t faults;
	uint64_t stale_faults;
	uint64_t parked_faults;
	uint64_t invalidations;
	uint64_t errors;
	uint64_t block_timeouts;
	uint64_t remap_events;
	uint64_t releases;
	uint64_t mapped_bytes;
	uint64_t features;
	/* the userfaultfd traps user-mode faults only: the kernel's accesses to
	 * a map (read(2) into it, pwrite(2) from it) fail with EFAULT instead of
	 * faulting (mm/uffd.h) */
	bool user_mode_only;
};

/*
 * struct cpu_map_info - one map's state (cpu_map_query()), a snapshot.
 */
struct cpu_map_info {
	void *addr;
	size_t size;
	enum cpu_map_state state;
	unsigned int blocked;      /* cpu_map_block() nesting depth */
	unsigned int parked;       /* faults waiting for the unblock */
	uint64_t faults;           /* faults that mapped a backing */
	uint64_t invalidations;    /* invalidations that replaced a mapping */
	unsigned int block_timeout_ms; /* how long a fault waits for a block */
};

/*
 * cpu_map_mgr_create() - open a userfaultfd and start its handler thread.
 * @ctx: for logs; may be NULL.
 * @opts: may be NULL for defaults.
 * @out: the manager on success; untouched on failure.
 *
 * Opens the userfaultfd through /dev/userfaultfd (USERFAULTFD_IOC_NEW) and
 * falls back to the userfaultfd(2) syscall. Needs UFFD_FEATURE_EVENT_REMAP;
 * uses UFFD_FEATURE_THREAD_ID and UFFD_FEATURE_POISON when present.
 *
 * Returns: 0; -EINVAL (bad opts); -EPERM/-ENOSYS (no usable userfaultfd: not
 * root, no /dev/userfaultfd access and vm.unprivileged_userfaultfd=0);
 * -EOPNOTSUPP (the kernel lacks EVENT_REMAP); -ENOMEM; another -errno.
 */
int cpu_map_mgr_create(struct ugpu_context *ctx, const struct cpu_map_mgr_opts *opts,
		       struct cpu_map_mgr **out);

/*
 * cpu_map_mgr_destroy() - stop the handler thread and close the userfaultfd.
 * Maps still alive are destroyed first (with a warning naming each).
 * Safe with NULL. Not from the handler thread.
 */
void cpu_map_mgr_destroy(struct cpu_map_mgr *mgr);

/* cpu_map_mgr_stats() - a snapshot of @mgr's counters into @out. */
void cpu_map_mgr_stats(struct cpu_map_mgr *mgr, struct cpu_map_stats *out);

/*
 * cpu_map_create() - reserve a CPU address range for an object.
 * @mgr: the manager.
 * @ops: the owner's callbacks (must outlive the map); @ops->resolve required.
 * @owner: passed back to @ops.
 * @size: object size in bytes, > 0; the range is page rounded.
 * @name: names the object in logs (copied, truncated); may be NULL.
 * @map: the map on success.
 * @addr: the range's start on success; stays valid until cpu_map_destroy().
 *
 * Nothing is mapped until the first touch. The range is MADV_DONTFORK: a
 * child process does not inherit it (see docs/cpu-mappings.md).
 *
 * Returns: 0, -EINVAL (bad argument), -ENOMEM, or -errno of mmap/register.
 */
int cpu_map_create(struct cpu_map_mgr *mgr, const struct cpu_map_owner_ops *ops, void *owner,
		   size_t size, const char *name, struct cpu_map **map, void **addr);

/*
 * cpu_map_invalidate() - drop the mapping of the current backing.
 *
 * When this returns 0, no CPU access can reach the backing mapped before the
 * call: every store made through the range before or during the call is in
 * that backing, and the next access faults and maps whatever @resolve says
 * then. A no-op when nothing is mapped.
 *
 * Returns: 0; -EDEADLK (called from the handler thread); -ENOMEM or -errno of
 * mmap/UFFDIO_REGISTER/mremap: the old mapping is then still in place and the
 * owner must not move the object.
 * Context: may block until the handler thread has read the REMAP event, i.e.
 * for as long as an owner callback runs.
 */
int cpu_map_invalidate(struct cpu_map *map);

/*
 * cpu_map_release() - stop CPU accesses to the current backing until the next
 * fault, without changing the backing (runtime PM before the device sleeps).
 *
 * When this returns 0, every store made through the range before or during
 * the call is in the backing, and the next access faults and runs
 * @fault_begin before it continues. For a shmem backing the mapping is
 * released in place (missing + minor registration, MADV_DONTNEED) and the
 * fault only unregisters it; otherwise, or with
 * cpu_map_mgr_opts.release_by_invalidate, this is cpu_map_invalidate(). The
 * owner must not change the placement without cpu_map_block() (which replaces
 * a released mapping like a mapped one). A no-op when nothing is mapped.
 *
 * Returns: as cpu_map_invalidate().
 * Context: as cpu_map_invalidate(); the in-place release does not wait for
 * the handler thread.
 */
int cpu_map_release(struct cpu_map *map);

/*
 * cpu_map_block() - invalidate, and hold faults on the range until
 * cpu_map_unblock(). The owner's move sequence is
 *     cpu_map_block() -> copy old backing to new -> update what @resolve
 *     returns -> cpu_map_unblock()
 * and a thread touching the range meanwhile waits, then sees the new backing.
 * Nests (a counter): the range stays blocked until every block is undone.
 * A fault waiting longer than the manager's block_timeout_ms gets SIGBUS.
 *
 * Returns: as cpu_map_invalidate(); on error the map is not blocked.
 */
int cpu_map_block(struct cpu_map *map);

/*
 * cpu_map_unblock() - undo one cpu_map_block(); at zero, waiting faults retry
 * and map the current backing. If the map is in CPU_MAP_ERROR (a fault timed
 * out or resolving failed), the range is first replaced by a fresh
 * placeholder so the new backing gets its chance.
 *
 * Returns: 0; -EINVAL (not blocked); -EDEADLK (handler thread); or the
 * -errno of that replacement (the map then stays in CPU_MAP_ERROR).
 */
int cpu_map_unblock(struct cpu_map *map);

/*
 * cpu_map_rehome() - hand a blocked map to another manager, its address
 * kept (a BO moving to another device: docs/multi-device.md). From the
 * return on, @to's handler serves the range's faults and calls the owner's
 * hooks; the old manager forgets it. The owner's move sequence is
 *     cpu_map_block() -> copy -> cpu_map_rehome() -> change what the hooks
 *     and @resolve read -> cpu_map_unblock()
 * Waits for a hook the old handler was running for the map (one that began
 * before the block), so the hooks of one fault never straddle the change.
 * A thread touching the range meanwhile waits as on any blocked map, and
 * then faults to @to's handler. The owner serialises this with its other
 * calls on the map (as with cpu_map_destroy()).
 *
 * Returns: 0 (also when @to is the map's manager); -EINVAL (NULL, or the
 * map is not blocked); -EDEADLK (on either handler thread); -ENOMEM or the
 * -errno of mmap/UFFDIO_REGISTER/mremap: the map then stays with its old
 * manager, still blocked.
 */
int cpu_map_rehome(struct cpu_map *map, struct cpu_map_mgr *to);

/*
 * cpu_map_destroy() - unmap and forget the range. Waits for the handler to
 * finish any fault of this map it is serving (owner callbacks are never
 * called after this returns). A thread still touching the range, or waiting
 * in a fault on it (blocked map), gets SIGSEGV: the range is first made
 * PROT_NONE, then those threads are woken, then it is unmapped. Safe with
 * NULL.
 *
 * Returns: 0 or -EDEADLK (handler thread; nothing done).
 */
int cpu_map_destroy(struct cpu_map *map);

/*
 * cpu_map_wp_start() - track CPU stores into the range, per @chunk bytes (a
 * multiple of the page size): the mapping is write-protected, the first
 * store into each chunk faults to the handler, which notes the chunk and
 * lifts the protection of that chunk. The map must be MAPPED (the backing is
 * there); tracking stays complete until the range is invalidated or
 * blocked (the protected mapping goes; later stores fault anyway), and is
 * lost if the map is released in place or mapped afresh after that.
 * Returns: 0; -EAGAIN (not MAPPED now); -EBUSY (already tracking);
 * -EOPNOTSUPP (the kernel cannot write-protect shmem); another -errno from
 * the registration (a backing userfaultfd cannot register). Untracked on
 * error.
 */
int cpu_map_wp_start(struct cpu_map *map, uint64_t chunk);
/*
 * cpu_map_wp_stop() - end the tracking: lift any protection left and, when
 * every store since cpu_map_wp_start() was seen, call @wrote (may be NULL)
 * for each chunk written ([@off, +@len), @len may pass the end) and return
 * true. False: not tracking, or tracking was lost (the caller must assume
 * anything was written). Not from the handler thread (returns false).
 */
bool cpu_map_wp_stop(struct cpu_map *map, void (*wrote)(void *arg, uint64_t off, uint64_t len),
		     void *arg);

/* cpu_map_set_block_timeout() - how long a fault may wait for this map's
 * block (cpu_map_block()) before it gets SIGBUS; 0: the manager's
 * block_timeout_ms. The owner derives it from how long its moves may take. */
void cpu_map_set_block_timeout(struct cpu_map *map, unsigned int ms);
/* cpu_map_set_await_timeout() - how long a fault may wait after fault_begin
 * said -EINPROGRESS (the owner will change the backing) before it gets
 * SIGBUS; 0: as the block timeout. */
void cpu_map_set_await_timeout(struct cpu_map *map, unsigned int ms);

/* cpu_map_query() - a snapshot of @map's state into @out. */
void cpu_map_query(struct cpu_map *map, struct cpu_map_info *out);

/* cpu_map_state_name() - "unmapped", "mapped", ... for logs and tests. */
const char *cpu_map_state_name(enum cpu_map_state state);

#endif
