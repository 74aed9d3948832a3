/* SPDX-License-Identifier: MIT */
/*
 * Shared virtual memory policy: what a program tells the driver about spans
 * of the memory its mirror VMs use (xe's madvise, cudaMemAdvise), what it
 * can read back (xe's QUERY_MEM_RANGE_ATTRS, cudaMemRangeGetAttribute), and
 * prefetch that runs in the background (xe's prefetch bind,
 * cudaMemPrefetchAsync). The mirror VM itself is in <ugpu/vm.h>; the design
 * is docs/svm.md, "Policy".
 *
 * Advice is about the process's memory, not about one VM: it holds for
 * every mirror VM of the process (the ranges are the process's, shared by
 * its mirror VMs). It lives on 4 KiB-aligned spans: advising part of a span
 * splits it, equal neighbours merge again, and unmapping the memory
 * (munmap, or the old place of an mremap) resets it to the defaults.
 */
#ifndef UGPU_SVM_H
#define UGPU_SVM_H

#include <ugpu/vm.h>

#ifdef __cplusplus
extern "C" {
#endif

/** What ugpu_svm_advise() sets (struct ugpu_svm_advice.attr). */
enum ugpu_svm_attr {
	/** value: enum ugpu_svm_loc; where GPU faults put the pages */
	UGPU_SVM_ATTR_PREFERRED_LOC = 1,
	/** value: enum ugpu_svm_migration */
	UGPU_SVM_ATTR_MIGRATION = 2,
	/** value: enum ugpu_svm_atomic */
	UGPU_SVM_ATTR_ATOMIC = 3,
	/** value: 0 or 1: GPU reads get a copy in VRAM, the CPU keeps its pages
	 *  (write-protected: where the kernel cannot, ugpu_svm_advise() refuses 1) */
	UGPU_SVM_ATTR_READ_MOSTLY = 4,
	/** value: 0 or 1: the device maps the pages where they are, never moves them on its faults */
	UGPU_SVM_ATTR_ACCESSED_BY = 5,
};

/** A place for pages. */
enum ugpu_svm_loc {
	UGPU_SVM_LOC_DEVICE = 0, /**< a device's VRAM (the default: the faulting device's) */
	UGPU_SVM_LOC_SYSTEM = 1, /**< the process's memory */
	UGPU_SVM_LOC_NONE = 2, /**< (query only) never prefetched */
};

/** Which pages a migration to the preferred place takes (xe's names). */
enum ugpu_svm_migration {
	UGPU_SVM_MIGRATE_ALL_PAGES = 0, /**< default: wherever they are */
	/** only pages in system memory: a range in another device's VRAM is
	 *  not moved into this one's (it is used from system memory) */
	UGPU_SVM_MIGRATE_ONLY_SYSTEM_PAGES = 1,
};

/** Device atomics on a span (xe's DRM_XE_ATOMIC_*). */
enum ugpu_svm_atomic {
	UGPU_SVM_ATOMIC_UNDEFINED = 0, /**< default: an atomic needs the range in VRAM */
	UGPU_SVM_ATOMIC_DEVICE = 1, /**< device atomics wherever the pages are */
	UGPU_SVM_ATOMIC_GLOBAL = 2, /**< device and CPU atomics: in VRAM */
	/** CPU atomics only: a device atomic aborts its kernel with -EACCES */
	UGPU_SVM_ATOMIC_CPU = 3,
};

/**
 * struct ugpu_svm_advice - one piece of advice.
 * @size: sizeof(struct ugpu_svm_advice) as the caller compiled it.
 * @attr: enum ugpu_svm_attr.
 * @value: its value (see enum ugpu_svm_attr).
 * @device: PREFERRED_LOC with UGPU_SVM_LOC_DEVICE, and ACCESSED_BY: the
 *          device meant; NULL means the VM's own. Another device must be
 *          in the owner group of the VM's device (joined by fast links,
 *          <ugpu/fabric.h>): a preferred location there puts the ranges
 *          the VM's device faults on in that device's VRAM, which the VM's
 *          device then uses in place over the fabric (fallback order: that
 *          device, the VM's device's VRAM, system memory; atomics always
 *          need the faulting device's VRAM); accessed-by makes that device
 *          use the pages where they are on its own faults.
 */
struct ugpu_svm_advice {
	size_t size;
	enum ugpu_svm_attr attr;
	uint32_t value;
	struct ugpu_device *device;
};

/**
 * ugpu_svm_advise() - set one attribute of [@va, +@bytes) of the process's
 * memory, as mirror VM @vm sees it.
 * @vm: a mirror VM (names the device "this device" means).
 * @va: start; 4 KiB aligned, inside @vm's mirror span.
 * @bytes: length; 4 KiB aligned, > 0, inside the span.
 * @adv: the advice.
 *
 * Every page of the span must be mapped in the process, as private or
 * shmem memory (it is registered with the driver's userfaultfd so that its
 * unmap resets the advice). Setting the value an attribute already has
 * changes nothing and invalidates nothing. Changing it drops the GPU's
 * mappings of the ranges inside the span (PTEs zapped, TLB invalidated:
 * the next GPU access faults and follows the new advice) and brings back
 * into the process the ranges that straddle its edges (a range never
 * crosses a change of advice: it is made again to fit). Data is never lost.
 * Returns: 0; -EINVAL (NULL, not a mirror VM, unaligned, empty, outside
 * the span, @adv->size too small, an unknown attribute or value);
 * -EOPNOTSUPP (read-mostly on memory this kernel's userfaultfd cannot
 * write-protect, which a device copy needs: nothing is changed, logged);
 * -EREMOTE (a mirror VM of a device served by ugpud, with advice that
 * would have the device use the pages where they are, which the daemon
 * cannot reach: UGPU_SVM_LOC_SYSTEM as the preferred location,
 * accessed-by 1; nothing is changed, logged. Every other attribute and
 * value is served there, read-mostly included, these two set to their
 * defaults too: docs/daemon.md, "SVM for clients");
 * -ENOLINK (@adv->device is another device outside the owner group of
 * @vm's device: a slow link, no link, or removed); -EXDEV (@adv->device
 * belongs to another context); -EFAULT
 * (part of the span is not mapped in the process, or is memory shared
 * virtual memory cannot use: nothing is changed); -ENOMEM; -ENODEV (the
 * device is gone, or @adv->device has no GPU VM); -EIO / -ETIMEDOUT (the
 * device did not wake to have its page tables written).
 * Context: any thread.
 */
UGPU_API int ugpu_svm_advise(struct ugpu_vm *vm, uint64_t va, uint64_t bytes,
			     const struct ugpu_svm_advice *adv);

/**
 * struct ugpu_svm_span_info - what ugpu_svm_query() reports.
 * @size: set by the caller to sizeof(struct ugpu_svm_span_info).
 * @start, @bytes: the span described: from the queried address, as far as
 *          every attribute below stays the same (at most the queried length).
 * @preferred_loc: enum ugpu_svm_loc; @preferred_device: with
 *          UGPU_SVM_LOC_DEVICE, the device, or NULL for the faulting one.
 * @migration: enum ugpu_svm_migration; @atomic: enum ugpu_svm_atomic.
 * @read_mostly, @accessed_by: as advised (@accessed_by: by @vm's device).
 * @last_prefetch: enum ugpu_svm_loc where the last prefetch of these pages
 *          sent them (UGPU_SVM_LOC_NONE: never).
 * @vram_bytes: of the span, bytes whose only copy is in @vm's device's VRAM
 *          now; @other_vram_bytes: in another device's; @dup_bytes: in
 *          VRAM and in the process both (read-mostly copies);
 *          @system_bytes: the rest, in the process's memory.
 */
struct ugpu_svm_span_info {
	size_t size;
	uint64_t start, bytes;
	enum ugpu_svm_loc preferred_loc;
	struct ugpu_device *preferred_device;
	enum ugpu_svm_migration migration;
	enum ugpu_svm_atomic atomic;
	bool read_mostly, accessed_by;
	enum ugpu_svm_loc last_prefetch;
	uint64_t vram_bytes, other_vram_bytes, dup_bytes, system_bytes;
};

/**
 * ugpu_svm_query() - the advice on [@va, +@bytes) and where its pages are.
 * Describes the first part of the span over which the advice is the same
 * (@info->start = @va, @info->bytes <= @bytes): call again from
 * @va + @info->bytes for the rest.
 * Returns: 0; -EINVAL (NULL, not a mirror VM, unaligned, empty, outside the
 * span, @info->size too small); -ENODEV (the device is gone or, served
 * by ugpud, closed).
 * Context: any thread.
 */
UGPU_API int ugpu_svm_query(struct ugpu_vm *vm, uint64_t va, uint64_t bytes,
			    struct ugpu_svm_span_info *info);

struct ugpu_svm_prefetch;

/**
 * ugpu_svm_prefetch_async() - ugpu_vm_prefetch() on a thread of its own:
 * returns at once with a handle to wait on, poll or read progress from.
 * @vm, @va, @bytes, @to: as ugpu_vm_prefetch() (checked here, the same
 *          way).
 * @out: the handle; free it with ugpu_svm_prefetch_free().
 * The span is prefetched in pieces of 2 MiB (aligned), so progress is
 * visible and a CPU touch, a free or another prefetch of the same memory
 * meanwhile is served between pieces (nothing is lost: each range moves
 * whole, its owner serialising it). @vm must not be destroyed before the
 * handle is freed.
 * Returns: 0; -EINVAL (as ugpu_vm_prefetch(), or NULL @out); -ENOMEM;
 * -EAGAIN (no thread could be started). The prefetch's own result (in
 * struct ugpu_svm_prefetch_status) is one of ugpu_vm_prefetch()'s.
 * Context: any thread.
 */
UGPU_API int ugpu_svm_prefetch_async(struct ugpu_vm *vm, uint64_t va, uint64_t bytes,
				     enum ugpu_placement to, struct ugpu_svm_prefetch **out);

/**
 * struct ugpu_svm_prefetch_status - progress of an asynchronous prefetch.
 * @size: set by the caller to sizeof(struct ugpu_svm_prefetch_status).
 * @done_bytes, @total_bytes: how far it got.
 * @finished: it ended; @status: then, what ugpu_vm_prefetch() would have
 *          returned (the first error; the pieces after it are not done), or
 *          -ECANCELED.
 */
struct ugpu_svm_prefetch_status {
	size_t size;
	uint64_t done_bytes, total_bytes;
	bool finished;
	int status;
};

/**
 * ugpu_svm_prefetch_wait() - wait until @p ends, at most @timeout_ms.
 * @p: the handle.
 * @timeout_ms: bound; 0 polls; negative is -EINVAL.
 * @st: filled (up to @st->size) in every case but -EINVAL; may be NULL.
 * Returns: 0 (ended: @st->status says how); -ETIMEDOUT (still running);
 * -EAGAIN (running, with @timeout_ms 0); -EINVAL (NULL @p, negative
 * @timeout_ms, @st->size too small).
 * Context: any thread; several may wait on one handle.
 */
UGPU_API int ugpu_svm_prefetch_wait(struct ugpu_svm_prefetch *p, int timeout_ms,
				    struct ugpu_svm_prefetch_status *st);

/**
 * ugpu_svm_prefetch_eventfd() - an eventfd that becomes readable when @p
 * ends (at once if it has). The caller closes it.
 * Returns: 0 with *@fd set; -EINVAL (NULL); -EMFILE / -ENFILE / -ENOMEM.
 * Context: any thread.
 */
UGPU_API int ugpu_svm_prefetch_eventfd(struct ugpu_svm_prefetch *p, int *fd);

/**
 * ugpu_svm_prefetch_free() - cancel what is left of @p (the piece being
 * moved completes; the status becomes -ECANCELED if pieces were left),
 * wait for its thread and free the handle.
 * @p: the handle, or NULL (no-op).
 * Context: any thread; no other thread may use @p during or after.
 */
UGPU_API void ugpu_svm_prefetch_free(struct ugpu_svm_prefetch *p);

/**
 * struct ugpu_svm_tuning - what shared virtual memory learns by itself on
 * one device (docs/svm.md, "Learned behaviour"), with its thresholds.
 * @size: sizeof(struct ugpu_svm_tuning) as the caller compiled it.
 * @thrash_enable: detect ranges that migrate back and forth (default on).
 * @thrash_threshold: migrations of one range (to VRAM on a GPU fault, back
 *          on a CPU touch) within @thrash_lapse_us that make it thrashing
 *          (default 3, UVM's); 2 .. 255.
 * @thrash_lapse_us: that window (default 50000: a round trip here costs at
 *          least the 5 ms timeslice, where UVM's 500 us suits hardware
 *          faults); 1 .. 10 s.
 * @thrash_throttle_ms: the first detection throttles the range: a CPU
 *          touch does not take it back from VRAM before this long after it
 *          arrived (default 20); 0 .. 10 s.
 * @thrash_pin_ms: a range detected again while throttled is pinned to
 *          system memory this long: the device maps it in place, CPU and
 *          GPU use it where it is, nothing moves (default 150, UVM's);
 *          1 .. 60 s.
 * @fault_prefetch_enable: when a 2 MiB block is made of 64 KiB ranges
 *          (its CPU mapping or its advice does not allow one 2 MiB range)
 *          and most of them have faulted into VRAM, the rest of the block
 *          follows in one go (default on; UVM's tree prefetcher).
 * @fault_prefetch_pct: "most": the share of the block's 64 KiB pieces
 *          (those its mapping holds) in VRAM that triggers it (default 51,
 *          UVM's); 1 .. 100.
 * @fault_ahead: the stream prefetcher: when a GPU fault is served into a
 *          2 MiB range and the 2 MiB range just below it is in this
 *          device's VRAM too (a kernel walking the memory upwards), up to
 *          this many following 2 MiB ranges of the same CPU mapping move
 *          to VRAM right after the fault is answered, while the kernel
 *          reads (default 2, the depth measured; 0 turns it off; at
 *          most 16). Only ranges
 *          under the default policy (no advice keeping them in place or
 *          elsewhere, not read-mostly, not last prefetched to system
 *          memory), only into free VRAM (it never evicts), only while the
 *          device is awake and no host suspend or removal is under way
 *          (it never wakes or holds up either), never in the brk heap or
 *          a .bss, never through ugpud. Ranges it moved are not held in
 *          VRAM for the timeslice: a CPU touch takes them back at once.
 *          Counted in svm_fault_ahead_count. A caller compiled before this
 *          field (a smaller @size) leaves it as it is.
 */
struct ugpu_svm_tuning {
	size_t size;
	bool thrash_enable;
	uint32_t thrash_threshold;
	uint32_t thrash_lapse_us;
	uint32_t thrash_throttle_ms;
	uint32_t thrash_pin_ms;
	bool fault_prefetch_enable;
	uint32_t fault_prefetch_pct;
	uint32_t fault_ahead;
};

/**
 * ugpu_svm_get_tuning() - @dev's shared virtual memory tuning.
 * A device served by ugpud has its shared virtual memory in this process
 * (docs/daemon.md): its tuning is this process's for it (a range pinned
 * to system memory for thrashing still moves there: nothing is used in
 * place through the daemon; throttling and the fault prefetcher apply).
 * Returns: 0; -EINVAL (NULL, @t->size too small); -EOPNOTSUPP (the device
 * has no GPU VM); -ENODEV (the device is gone, or closed); -ENOMEM /
 * -ENOSPC (served by ugpud, first use: no memory, or more than 64 devices
 * in the process's shared virtual memory).
 * Context: any thread.
 */
UGPU_API int ugpu_svm_get_tuning(struct ugpu_device *dev, struct ugpu_svm_tuning *t);

/**
 * ugpu_svm_set_tuning() - set it (takes effect with the next fault).
 * Returns: 0; -EINVAL (NULL, @t->size too small, a value out of its
 * range: nothing is changed); -EOPNOTSUPP (no GPU VM); -ENODEV (gone);
 * -ENOMEM / -ENOSPC (as ugpu_svm_get_tuning()).
 * Context: any thread.
 */
UGPU_API int ugpu_svm_set_tuning(struct ugpu_device *dev, const struct ugpu_svm_tuning *t);

#ifdef __cplusplus
}
#endif

#endif /* UGPU_SVM_H */
