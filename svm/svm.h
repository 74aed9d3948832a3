/* SPDX-License-Identifier: MIT */
/*
 * Shared virtual memory, internal side (the public face is the mirror mode
 * of include/ugpu/vm.h and ugpu_device_svm_stats(); design: docs/svm.md).
 *
 * One process-wide state (struct svm) owns a userfaultfd, the ranges of
 * process memory the GPU has touched, and a worker thread; every device
 * with exec queues attaches to it at bring-up (the "svm" step) and hands it
 * the GPU faults of its mirror VMs (mm/vm.h, struct vm_svm_ops).
 *
 * Files: svm.c the process-wide state, fork, the ops mm/ calls, the
 * device's step and the public API; range.c the ranges and the process's
 * memory; migrate.c moving a range; gc.c collecting dropped ones; fault.c
 * the worker thread; handler.c the userfaultfd handler thread; policy.c
 * the advice (ugpu_svm_advise(), ugpu_svm_query()); prefetch.c the
 * asynchronous prefetch; peer.c ranges across devices (moves over the
 * fabric, a peer's VRAM used in place, a removal's ranges to peers).
 *
 * A device served by ugpud joins at its first mirror VM or tuning call
 * (svm_attach(), no bring-up step; mm/vm_remote.c hands over the faults
 * the daemon kept, and its prefetches; svm_vm_enter() finds the state for
 * advice and query through the VM): its
 * ranges' VRAM is a staging BO of the daemon's, filled and read back
 * through the BO's memfd, and every range moves (docs/daemon.md, "SVM for
 * clients"); the branches are on device_is_remote().
 *
 * Locks (outer first): the worker's work (no lock) → a range's busy flag
 * (under svm->lock, waited on with svm->cond) → VM and BO manager locks
 * (mm/) → svm->lock (only briefly, never across a copy, an ioctl that
 * waits, or a call into mm/); svm->pool_lock is a leaf (a slot's state). The userfaultfd handler thread waits only
 * briefly and bounded (a mover's check under the event lock; a zap on the
 * write-protection path, svm/handler.c wait_zap_locked()): it answers at
 * once, parks the faulting thread (no wake) or queues work.
 */
#ifndef UGPU_SVM_SVM_H
#define UGPU_SVM_SVM_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ugpu/svm.h>

#include "base/list.h"
#include "mm/uffd.h"
#include "mm/vm.h"

/* Range sizes, largest first (xe's default: 2 MiB, 64 KiB, 4 KiB). */
#define SVM_2M (2ull << 20)
#define SVM_64K (64ull << 10)
#define SVM_4K 4096ull
/* Ranges of this size or more move to VRAM on their first GPU fault;
 * smaller ones are used where they are (xe's policy). */
#define SVM_MIGRATE_MIN SVM_64K
/* struct ugpu_svm_tuning fault_ahead: 2 MiB ranges ahead, at most */
#define SVM_FAULT_AHEAD_MAX 16
/* A range that reached VRAM stays there at least this long before a CPU
 * touch takes it back (xe's default timeslice), so the two sides do not
 * ping-pong. */
#define SVM_TIMESLICE_MS 5
/* The page pool's slots (struct svm): 512 MiB of address space, reserved
 * without backing; what it holds is bounded by the 2 MiB ranges in VRAM
 * (pool_trim()). */
#define SVM_POOL_SLOTS 256
enum pool_slot { POOL_EMPTY, POOL_FULL, POOL_BUSY };

/* A GPU atomic needs its range in VRAM: a move that fails is tried again
 * this many times, after 1, 2, 4 timeslices (xe's policy), before the
 * kernel is aborted. */
#define SVM_ATOMIC_RETRIES 3

/* While ranges hold a device awake, the worker looks this often whether
 * the device is otherwise idle past its autosuspend delay: the ranges then
 * go back into the process so that runtime PM can put it to sleep. */
#define SVM_IDLE_POLL_MS 20

/* A copy back from VRAM that fails leaves the range in VRAM (nothing is
 * lost; the next touch tries again). Where the range must leave VRAM (the
 * device goes, a bind covers it, the process unmapped part of it) it is
 * tried this many times, SVM_COPY_RETRY_MS apart, before the bytes are
 * declared lost (poisoned, logged, counted). */
#define SVM_COPY_TRIES 5
#define SVM_COPY_RETRY_MS 10

/* ugpu_vm_prefetch() logs its progress every this many bytes. */
#define SVM_PREFETCH_NOTE (64ull << 20)

#define SVM_MAX_MAPS 8

/* Devices attached at once (an svm_dev's id is a bit in accessed-by masks). */
#define SVM_MAX_DEVS 64

/*
 * struct svm_attrs - the advice on a span of the process's memory
 * (ugpu_svm_advise(), include/ugpu/svm.h; docs/svm.md, "Policy").
 * @pref: SVM_PREF_DEFAULT (the faulting device's VRAM), SVM_PREF_SYSTEM,
 *        or the id of the svm_dev meant.
 * @migration, @atomic: enum ugpu_svm_migration / ugpu_svm_atomic.
 * @read_mostly: GPU reads get a copy in VRAM, the CPU keeps its pages.
 * @accessed_by: bit per svm_dev id: that device maps the pages where they
 *        are and never moves them on its faults.
 * @last_prefetch: enum ugpu_svm_loc (not policy: a range may cross it).
 */
#define SVM_PREF_DEFAULT (-1)
#define SVM_PREF_SYSTEM (-2)
struct svm_attrs {
	int pref;
	uint8_t migration, atomic;
	bool read_mostly;
	uint64_t accessed_by;
	uint8_t last_prefetch;
};

/* [start, end) with advice other than the defaults; svm->as is sorted,
 * disjoint, and neighbours with equal advice are merged. */
struct attr_span {
	uint64_t start, end;
	struct svm_attrs a;
};

enum where {
	R_CPU = 0, /* in process memory; the GPU maps nothing */
	R_INPLACE, /* in process memory, mapped for the device (DMA) */
	R_VRAM, /* in a device's VRAM; the CPU's pages are gone */
	R_DUP, /* read-mostly: in the process (pages write-protected) and a
		* copy in a device's VRAM (@bo), mapped read-only */
};

/* One device attached (the "svm" bring-up step), with its counters. */
struct svm_dev {
	struct list_link link; /* svm->devs */
	struct ugpu_device *dev;
	unsigned int id; /* < SVM_MAX_DEVS, unique among attached devices */
	struct ugpu_svm_stats st;
	uint64_t vram_ranges; /* ranges in its VRAM: a runtime-PM reference while > 0 */
	bool rpm_held;
	uint64_t active_ns; /* the last GPU fault served for it */
	uint64_t denied_log_ns; /* the last atomic refused by policy, logged */
	struct ugpu_svm_tuning tune; /* ugpu_svm_set_tuning() */
	/* svm/peer.c: another device's fault or removal is placing a range
	 * in this one's VRAM (@peer_users); svm_down() sets @going (no new
	 * users) and waits for them (svm->cond) before it takes the ranges
	 * home. Both under svm->lock. */
	unsigned int peer_users;
	bool going;
};

/* Where a range is mapped in a VM (its PTEs). */
struct svm_map {
	struct ugpu_vm *vm;
	uint64_t gpu_va;
	bool writable; /* its PTEs are (on a device without NO_ATOMIC an
			* atomic-CPU span maps read-only until a GPU write
			* asks: atomics then fault) */
	bool no_atomic; /* its PTEs carry NO_ATOMIC: device atomics fault */
};

/*
 * struct svm_range - [start, start + size) of the process, aligned to size.
 * Locking: every field under svm->lock; @busy (a migration, a map or a drop
 * works on it with the lock dropped) is waited for on svm->cond, and only
 * its owner changes @where, @bo, @iova, @sd and @maps/@nmaps: @bo and
 * @iova without the lock (only the owner reads them), the others under it
 * (others look for a device or a VM in them).
 */
struct svm_range {
	uint64_t start, size;
	enum where where;
	bool busy;
	bool self_zap; /* its owner is zapping its pages: the REMOVE event is ours */
	bool zapping; /* its owner's madvise of that zap has not returned: the
		       * handler, having read the event, waits for it (cond) */
	pid_t zap_tid; /* the zapping thread, while @zapping */
	bool zap_repeat; /* it was seen waiting on an event after ours */
	uint64_t zap_repeat_after; /* ... for a repeat from here on (the end of
				    * the mapping its zap went through), or 0 */
	uint64_t zap_unmapped_from; /* the lowest start of an unmap or move of
				     * its rest seen while its zap is armed */
	bool gc_pending; /* the process unmapped, freed or moved (some of) it */
	bool back_queued; /* a CPU touch asked for it back */
	bool writable; /* the CPU mapping is */
	bool in_place_only; /* shared memory: other mappings see these pages */
	bool populating; /* its owner makes its pages present (R_CPU): a
			  * fault there gets a fresh page, it is not parked */
	/* The owner's thread while it reads or populates the range's pages
	 * itself (read_owned(), populate_owned()), else 0: a fault of that
	 * thread there (the process freed the page meanwhile) is answered
	 * with the page a first touch gets, even when the range waits for its
	 * collection: parked, it would wait for its own thread (found with a
	 * free during the write-protection path's copy). */
	pid_t reader;
	bool advised_in_place; /* R_INPLACE because advice (or a pin) said so */
	/* Thrashing (owner only, svm/fault.c): migrations counted since
	 * @thr_first_ns; throttled once (held in VRAM @hold_ms after it
	 * arrives); pinned to system memory until @pinned_until_ns. */
	uint32_t thr_events;
	bool throttled;
	uint32_t hold_ms;
	uint64_t thr_first_ns, pinned_until_ns;
	bool rearm; /* atomic policy CPU, mapped writable for a GPU write on a
		     * device without NO_ATOMIC: its maps go before the next
		     * kernel is submitted */
	struct svm_dev *sd; /* R_VRAM / R_INPLACE: whose */
	struct svm_dev *first; /* the device whose fault made it (counters) */
	struct ugpu_bo *bo; /* R_VRAM, R_DUP: contiguous VRAM */
	uint64_t iova; /* R_INPLACE: its DMA address on sd's device */
	uint64_t vram_at_ns;
	struct svm_map maps[SVM_MAX_MAPS];
	unsigned int nmaps;
};

/* @r holds VRAM (@bo): its only copy, or a read-mostly one. */
static inline bool range_has_vram(const struct svm_range *r)
{
	return r->where == R_VRAM || r->where == R_DUP;
}

enum work_kind { W_FAULTS, W_BACK, W_GC, W_PUT };
enum gc_kind { GC_UNMAP, GC_REMOVE, GC_REMAP };

struct svm_work {
	struct list_link link;
	enum work_kind kind;
	struct vm_fault *f; /* W_FAULTS */
	size_t n;
	uint64_t start, end; /* W_BACK: the range; W_GC: the span */
	enum gc_kind gc;
	uint64_t to; /* GC_REMAP: where [start, end) went */
	uint64_t seq; /* W_GC: the order of its event (svm.gc_seq) */
	struct list_link run; /* W_GC: on svm.gc_running while it runs, then maybe svm.gc_done */
	struct ugpu_bo *bo; /* W_PUT: an evicted range's BO, to put */
	struct svm_dev *sd; /* W_PUT: whose VRAM it was */
};

/* A span of process memory registered with our userfaultfd. */
struct region {
	uint64_t start, end;
	bool wp; /* registered for write protection too (read-mostly needs it) */
};

/*
 * struct svm - the process's shared virtual memory (one per process).
 * Locking: @lock protects everything below it except the counters' owners
 * (struct svm_dev, also under @lock); @cond signals a range no longer busy,
 * new work, and the worker going idle. @work_cond (with @lock) wakes the
 * idle worker only: new work, @stop, or a device starting to hold ranges
 * (idle_candidate_locked()); before, the worker waited on @cond and woke at
 * every range released (two per 2 MiB moved by a prefetch), preempting the
 * mover and taking @lock from it, to find nothing to do.
 */
#define SVM_REMAP_PENDING 64

struct svm {
	struct ugpu_context *ctx;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_cond_t work_cond;
	struct list_link devs;
	unsigned int ndevs;

	struct svm_range **r; /* sorted by start, disjoint */
	size_t n, cap;
	struct region *reg;
	size_t nreg, capreg;

	struct uffd *u; /* opened by the first mirror VM */
	int uffd_err; /* why it could not be (sticky) */
	uint64_t features;
	bool have_move, have_wp;
	/*
	 * The page pool (svm/migrate.c, docs/svm.md "Costs"): SVM_POOL_SLOTS
	 * slots of SVM_2M in one registered, MADV_DONTFORK area. A move into
	 * VRAM takes an empty slot as its staging area (UFFDIO_MOVE puts the
	 * range's pages there); when all 512 pages were there the slot keeps
	 * them (full) instead of freeing them, and a 2 MiB copy back copies
	 * VRAM into a full slot's pages and moves them into the range, instead
	 * of UFFDIO_COPY allocating 512 fresh ones. Each slot is used by one
	 * owner at a time (busy): two moves into the same area lost a range's
	 * pages (test_svm_policy's prefetch race).
	 * Locking: @pool_lock protects @pool_state and @pool_nfull only; it is
	 * a leaf lock (nothing else is taken, no copy or ioctl is made, while
	 * it is held), so any thread may take it, the BO manager's lock held
	 * (eviction) or not. @pool_cond: a slot stopped being busy.
	 */
	uintptr_t pool; /* 0 without UFFDIO_MOVE */
	uint8_t pool_state[SVM_POOL_SLOTS]; /* enum pool_slot */
	unsigned int pool_nfull;
	pthread_mutex_t pool_lock;
	pthread_cond_t pool_cond;
	int pagemap_fd;

	struct list_link work; /* GC items first */
	pthread_t worker;
	bool worker_up, stop;
	struct ugpu_vm *cur_vm; /* the VM the worker's current item serves */
	struct svm_dev *cur_sd; /* the device whose W_PUT the worker runs */
	unsigned int gc_inflight; /* GC items queued or running */
	uint64_t gc_seq; /* the last GC item's svm_work.seq */
	struct list_link gc_running; /* GC items taken off @work, running */
	/* GC items that ended while an earlier one (lower seq) was still
	 * queued or running: that one's copy back follows them
	 * (moved_to_locked()), so they stay here, by svm_work.run, until
	 * every earlier item ended (gc_item_done_locked()). Under @lock. */
	struct list_link gc_done;
	bool forking;
	/* Where mremap moved ranges whose GC has not run yet: a CPU touch
	 * there must wait for the data (the kernel released the mremapping
	 * thread as soon as the event was read), not get a fresh page. */
	struct { uint64_t start, end; } remap[SVM_REMAP_PENDING];
	unsigned int nremap;
	/* Counts the unmap/free/move events handled: what was decided from
	 * the process's mappings with the lock dropped is decided again when
	 * it changed meanwhile (mmu_interval_read_retry's rule). */
	uint64_t event_seq;

	/* Advice (svm/policy.c): sorted, disjoint, merged spans. */
	struct attr_span *as;
	size_t nas;
	unsigned int nrearm; /* ranges with @rearm set */
};

/* One line of /proc/self/maps. */
struct vma {
	uint64_t start, end;
	bool readable, writable, shared, anon;
	char what[64]; /* the path or [tag], for messages */
};

/* The process's state (svm/svm.c): created by the first device's step,
 * freed with the last; g_svm_lock guards the pointer and the bring-up. */
extern struct svm *g_svm;
extern pthread_mutex_t g_svm_lock;
/* A page of zeroes: a write fault's answer where nothing moved. */
extern void *zero_page;

/* svm/range.c */
uint64_t ms_to_ns(uint64_t ms);
/* When @r, in VRAM, may go home to the CPU: its timeslice after it arrived,
 * or longer while throttled for thrashing (@hold_ms). */
uint64_t range_home_at_ns(const struct svm_range *r);
void sleep_until_ns(uint64_t when);
struct svm_dev *sd_of(struct svm *s, struct ugpu_device *dev);
void size_count(struct ugpu_svm_stats *st, uint64_t size, int what, uint64_t us);
size_t range_lower(struct svm *s, uint64_t addr);
struct svm_range *range_find(struct svm *s, uint64_t addr);
bool range_overlaps(struct svm *s, uint64_t start, uint64_t end);
int range_insert(struct svm *s, struct svm_range *r);
void range_remove(struct svm *s, struct svm_range *r);
bool range_own(struct svm *s, struct svm_range *r);
void range_release(struct svm *s, struct svm_range *r);
void range_done(struct svm *s, struct svm_range *r);
void range_unmap_vms(struct svm *s, struct svm_range *r, bool (*match)(const struct ugpu_vm *, const void *), const void *arg);
void range_set(struct svm *s, struct svm_range *r, enum where w, struct svm_dev *sd);
int vma_lookup(uint64_t addr, struct vma *out);
/* The same from /proc/self/maps's text alone (the fallback before Linux
 * 6.11; tests compare the two). */
int vma_lookup_maps(uint64_t addr, struct vma *out);
unsigned int vma_page_kb(uint64_t start);
int pages_present(struct svm *s, uint64_t addr, size_t n, bool *present);
void region_drop(struct svm *s, uint64_t start, uint64_t end);
int region_add(struct svm *s, uint64_t start, uint64_t end, bool wp);
/* Every page of [start, end) is in a region registered for write
 * protection. Lock held. */
bool region_wp_locked(struct svm *s, uint64_t start, uint64_t end);
int region_register(struct svm *s, uint64_t start, uint64_t end, uint64_t seq);
bool in_vram_of(const struct svm_range *r, const void *sd);
struct svm_range *own_first(struct svm *s, uint64_t lo, uint64_t hi, bool (*want)(const struct svm_range *, const void *), const void *arg);

/* svm/migrate.c */
void range_unmap_gpu(struct svm *s, struct svm_range *r);
int range_to_cpu(struct svm *s, struct svm_range *r);
int range_to_cpu_must(struct svm *s, struct svm_range *r);
int range_to_vram(struct svm *s, struct svm_range *r, struct svm_dev *sd, unsigned int bo_flags);
int range_in_place(struct svm *s, struct svm_range *r, struct svm_dev *sd);
int range_dup(struct svm *s, struct svm_range *r, struct svm_dev *sd);
void dup_drop(struct svm *s, struct svm_range *r);
void range_unmap_dma(struct svm *s, struct svm_range *r);
int range_map_vm(struct svm *s, struct svm_range *r, struct ugpu_vm *vm, bool writable,
		 bool no_atomic);
void range_destroy(struct svm *s, struct svm_range *r);

/*
 * A collection's copy back follows the process's later unmaps, frees and
 * mremaps (svm/gc.c): it decided that the bytes of @orig go to @to. The
 * kernel lets an unmapping or freeing thread go, and zap its pages, as soon
 * as our handler *reads* its event, before the handler has marked
 * anything: a decision made once and acted on later put old bytes into
 * pages just freed (test_svm_model test_mremap_then_free_new_place: an
 * mremap, then at once a free of the new place). So each ioctl of such a
 * copy runs under uffd_events_hold() after the copy asked @holds() again
 * there (lock not held): an event read before is handled, one not read yet
 * makes the ioctl fail with EAGAIN (the kernel's mmap_changing), and the
 * decision holds for what the ioctl does.
 */
struct svm_follow {
	uint64_t seq; /* the event being collected */
	uint64_t orig, to; /* the process's [orig, ...) goes to [to, ...) */
	/* [dst, +len) of [to, ...) is still where those bytes go */
	bool (*holds)(struct svm *s, const struct svm_follow *f, uint64_t dst, uint64_t len);
};

/* Copy [off, +len) of @r (owned, in VRAM) back to the process at @dst,
 * trying SVM_COPY_TRIES times; then the bytes are lost (poisoned, logged,
 * counted). For what must leave VRAM now. @f: a collection's decision, each
 * ioctl checked against it (-ESTALE: decide again), or NULL (-ENOENT once an
 * event marked @r). 0, -ENOENT (the process unmapped @dst), -ESTALE or
 * -ENODATA (lost). */
int copy_back_must(struct svm *s, struct svm_range *r, uint64_t off, uint64_t len, uint64_t dst,
		   const struct svm_follow *f);

/* svm/gc.c: the collection of what the process unmapped, freed or moved */
void gc_item_done_locked(struct svm *s, struct svm_work *w);
bool gc_remap_target_locked(struct svm *s, uint64_t start, uint64_t end);
bool remap_pending_locked(struct svm *s, uint64_t addr);
void gc_run(struct svm *s, const struct svm_work *w);

/* svm/migrate.c, shared with svm/peer.c */
int range_bo_create(struct svm_range *r, struct svm_dev *sd, const char *name,
		    unsigned int bo_flags, struct ugpu_bo **bo);
void range_free_vram(struct svm *s, struct svm_range *r);
void vram_ranges_inc(struct svm *s, struct svm_dev *sd);

/* svm/peer.c: several devices (docs/svm.md, "Several devices") */
/* The peer advice @a names as the preferred location for @sd's faults, in
 * @sd's owner group, with a use counted (peer_put()); NULL: @sd's own
 * VRAM. No lock held. */
struct svm_dev *peer_pref_get(struct svm *s, struct svm_dev *sd, const struct svm_attrs *a);
void peer_put(struct svm *s, struct svm_dev *p);
/* @r (owned, R_VRAM elsewhere) into @to's VRAM over a fast link. */
int range_to_peer(struct svm *s, struct svm_range *r, struct svm_dev *to);
/* @r (owned, R_CPU) into VRAM in the fallback order: @pd's (may be NULL),
 * then @sd's. */
int peer_to_vram(struct svm *s, struct svm_range *r, struct svm_dev *pd, struct svm_dev *sd);
/* @r (owned) is held by another device than @sd, whose fault it serves
 * (@pd: the advised peer or NULL): 0 when it is now where @sd maps it
 * (@sd's VRAM, or a peer's in @sd's owner group, used in place), 1 when
 * it is in the process (R_CPU: the usual path goes on; *@want_vram may be
 * cleared), or range_to_cpu()'s error. */
int peer_place(struct svm *s, struct svm_range *r, struct svm_dev *sd, struct svm_dev *pd,
	       const struct svm_attrs *a, bool atomic_vram, bool *want_vram);
/* Map @r (owned, in a peer's VRAM) in @vm in place (vm_svm_map_peer());
 * when the peer is going or out of the group now, @r comes home and is
 * mapped in place in the process's memory instead. */
int range_map_peer(struct svm *s, struct svm_range *r, struct ugpu_vm *vm, bool writable);
/* struct bo_svm_ops.to_peers: an orderly removal of @dev sends the ranges
 * in its VRAM to peers with room (fast links directly, slow ones through
 * the process). */
void svm_to_peers(void *arg, struct ugpu_device *dev);

/* svm/svm.c: the state serving mirror VM @vm (local or through ugpud)
 * with a call counted, or NULL; svm_vm_leave() after. No lock held. */
struct svm *svm_vm_enter(struct ugpu_vm *vm);
void svm_vm_leave(struct ugpu_vm *vm);
/* @dev joins the process's shared virtual memory (@remote: served by
 * ugpud, joined by its first mirror VM or its tuning); again is a no-op. */
int svm_attach(struct ugpu_device *dev, bool remote);

/* svm/policy.c */
bool svm_span_ok(const struct ugpu_vm *vm, uint64_t va, uint64_t bytes);
void attr_get_locked(struct svm *s, uint64_t addr, struct svm_attrs *a, uint64_t *end);
bool attr_uniform_locked(struct svm *s, uint64_t start, uint64_t end);
void attr_reset_locked(struct svm *s, uint64_t start, uint64_t end);
int attr_set_prefetch_locked(struct svm *s, uint64_t start, uint64_t end, uint8_t loc);
void rearm_all(struct svm *s);

/* svm/handler.c: what the userfaultfd handler thread does with each message */
extern const struct uffd_owner_ops svm_uffd_ops;

int svm_evict(void *arg, struct ugpu_bo *bo);
int range_back_nowait_locked(struct svm *s, struct svm_range *r, struct svm_work *w,
			     bool from_handler);
bool back_on_handler_locked(struct svm *s, struct svm_range *r);
void evicted_put(struct svm *s, struct svm_work *w);
/* Empty the page pool's full slots beyond what the ranges in VRAM would
 * take back (svm/migrate.c). Any thread, no lock held. */
void pool_trim(struct svm *s);

/* svm/fault.c */
enum serve_why {
	SERVE_FAULT, /* a GPU fault */
	SERVE_PREFETCH, /* ugpu_vm_prefetch() */
	SERVE_FAULT_PREFETCH, /* the fault prefetcher: the rest of a 2 MiB block */
	SERVE_FAULT_AHEAD, /* the stream prefetcher: the next 2 MiB ranges of a walk */
};
int serve(struct svm *s, const struct vm_fault *f, enum serve_why why, uint64_t *end);
/* The prefetchers a served GPU fault @f drives (svm/fault_prefetch.c), on
 * the worker, no lock held: fault_prefetch() the rest of @f's 2 MiB block
 * when most of its 64 KiB pieces are in VRAM, fault_ahead() the next 2 MiB
 * ranges of a walk upwards. */
void fault_prefetch(struct svm *s, const struct vm_fault *f);
void fault_ahead(struct svm *s, const struct vm_fault *f);
void tuning_default(struct ugpu_svm_tuning *t);
void work_queue(struct svm *s, struct svm_work *w);
void gc_wait(struct svm *s);
void *worker_main(void *arg);

#endif
