/* SPDX-License-Identifier: MIT */
/*
 * GPU virtual memory and submission: address spaces whose page tables the
 * driver builds, buffer objects bound into them, and kernels submitted
 * against them with fences. The userspace counterpart of a GPU driver's
 * VM_CREATE / VM_BIND / EXEC_QUEUE_CREATE / EXEC ioctls (xe's), on the
 * reference device's GPU VM and exec queues (docs/reference-device.md).
 * See docs/vm.md.
 *
 * A VM's page tables live in pinned kernel BOs in VRAM: restored early, by
 * CPU, after host suspend and runtime D3cold, like xe's. A bound BO keeps
 * working when it moves (eviction, migration, host suspend, D3cold, orderly
 * removal): its page-table entries are rewritten and the translations cached
 * by the device dropped before the device runs another kernel on the VM. A
 * BO bound in a VM is not moved while a kernel runs on that VM.
 *
 * Devices without a GPU VM (UGPU_DEVICE_CAP_GPUVM clear, e.g. the ivshmem
 * profile) answer -EOPNOTSUPP to ugpu_vm_create().
 *
 * Through ugpud ("ugpud:SOCKET", docs/daemon.md) VMs, binds, queues,
 * submission, fence waits and queries are served by the daemon, each a
 * request on the connection (errors as ugpu_bo.h's top says for BOs); a
 * kernel's fault is reported to its own client only. Mirror VMs are served
 * (their GPU faults handed to the client, which serves them from its own
 * memory while it waits on a fence of the VM's queues; docs/daemon.md,
 * "SVM for clients"; a daemon older than that answers -EOPNOTSUPP), with
 * ugpu_vm_prefetch(), the advice of <ugpu/svm.h> (but what would use
 * pages in place: -EREMOTE) and ugpu_device_svm_stats() (this process's
 * counters). ugpu_fence_eventfd() gives the daemon's eventfd for the fence
 * (a daemon older than that: -EOPNOTSUPP). ugpu_fence_wait() asks
 * the daemon, which answers when the fence completes (its loop watches the
 * fence's eventfd) or after 100 ms at most; the library asks again until
 * the caller's timeout. While the daemon has the device host-suspended,
 * create, bind, unbind and submit are -EAGAIN until its resume (and while
 * an administrator's power step on it runs, as for BOs); a create or bind
 * whose page tables need VRAM the daemon holds for its restart record is
 * -EAGAIN when it cannot store that record (<ugpu/bo.h>). VMs, queues
 * and fences do not survive a restart of the daemon (their page tables and
 * kernels lived in the device): their handles are then -ENOENT, and a
 * create or submit in flight when it died is -ECONNRESET. A bind of a BO
 * whose mapping the restart could not keep is -ESTALE until that BO is
 * unmapped (<ugpu/bo.h>).
 */
#ifndef UGPU_VM_H
#define UGPU_VM_H

#include <stdbool.h>

#include <ugpu/bo.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ugpu_vm;
struct ugpu_queue;

/* GPU virtual addresses are 48 bits wide and mapped in 4 KiB pages. */
#define UGPU_VM_VA_BITS 48
#define UGPU_VM_PAGE_SIZE 4096u

/* VM flags (struct ugpu_vm_opts.flags). */
#define UGPU_VM_MIRROR (1u << 0) /**< shared virtual memory: GPU VA == CPU VA over a span */
#define UGPU_VM_FLAGS_ALL 0x1u

/**
 * struct ugpu_vm_opts - how to create a VM.
 * @size: sizeof(struct ugpu_vm_opts) as the caller compiled it (fields past
 *        it read as zero; it must reach past @flags).
 * @flags: UGPU_VM_* bits.
 * @mirror_start: with UGPU_VM_MIRROR: the first address of the process's CPU
 *        address space that the GPU sees at the same address; page aligned.
 * @mirror_size: its length in bytes; page aligned, > 0, within the 48-bit
 *        range. BOs bound inside the span punch holes in it (xe's
 *        CPU-address-mirror binds).
 * @name: for logs (copied); may be NULL.
 */
struct ugpu_vm_opts {
	size_t size;
	uint32_t flags;
	uint64_t mirror_start;
	uint64_t mirror_size;
	const char *name;
};

/**
 * ugpu_vm_create() - create a GPU address space on @dev.
 * @dev: the device.
 * @opts: options (NULL: a plain VM).
 * @out: the VM on success.
 *
 * A mirror VM's kernels use the process's memory in the span directly:
 * GPU faults there move it into VRAM (or map it where it is) and CPU
 * touches bring it back (shared virtual memory, docs/svm.md).
 * Returns: 0; -EINVAL (NULL, bad flags, a mirror span that is empty,
 * unaligned or past the 48-bit range, @opts->size too small); -EOPNOTSUPP
 * (the device has no GPU VM); -EPERM / -ENOSYS (a mirror VM, and no usable
 * userfaultfd: the log line says what to enable — access to
 * /dev/userfaultfd, or vm.unprivileged_userfaultfd=1); -ENOSPC / -ENOMEM
 * (no VRAM or memory for the page tables); -ENODEV (the device is gone);
 * -EIO / -ETIMEDOUT (the device did not wake).
 * Context: any thread.
 * Through ugpud: -EOPNOTSUPP for UGPU_VM_MIRROR from a daemon that does not
 * serve mirror VMs (see the top of this file).
 */
UGPU_API int ugpu_vm_create(struct ugpu_device *dev, const struct ugpu_vm_opts *opts,
			    struct ugpu_vm **out);

/**
 * ugpu_vm_destroy() - unbind everything and free the VM and its page tables.
 * @vm: the VM, or NULL (no-op).
 * Returns: 0; -EBUSY while queues of the VM exist (destroy them first).
 * Context: any thread; no other thread may use @vm during or after.
 */
UGPU_API int ugpu_vm_destroy(struct ugpu_vm *vm);

/* Bind flags. */
#define UGPU_BIND_READONLY (1u << 0) /**< kernels may read, a write faults */
#define UGPU_BIND_FLAGS_ALL 0x1u

/**
 * ugpu_vm_bind() - map [@bo_offset, +@bytes) of @bo at GPU address @va.
 * @vm: the VM.
 * @bo: the BO (the bind holds a reference until unbound); a BO of @vm's
 *      device, or of another device of the same context and owner group
 *      (include/ugpu/fabric.h: joined by fast links): a peer's BO is
 *      used in place (peer access: @vm's device maps the peer's VRAM BAR
 *      into its DMA space, as vfio type1 does peer-to-peer). The bind then
 *      pins the BO where it is (its first placement, which must be VRAM)
 *      and keeps the peer awake until the unbind; if the peer is removed
 *      or closed first, the bind is revoked before anything of the peer
 *      moves (a kernel touching it then faults, -EFAULT) and only the
 *      unbind is left to do.
 * @bo_offset: offset in the BO; page aligned.
 * @va: GPU virtual address; page aligned.
 * @bytes: length; page aligned, > 0, within the BO and the 48-bit range.
 * @flags: UGPU_BIND_* bits.
 *
 * The pages are mapped wherever the BO lives (VRAM, or system memory through
 * the IOMMU) and follow it when it moves. A bind inside a mirror VM's span
 * takes precedence over the mirror there.
 * Returns: 0; -EINVAL (NULL, unaligned, empty, past the BO or the VA range,
 * unknown flags, overlapping another bind; a BO of a device outside
 * @vm's device's owner group, or removed; a peer's BO whose first
 * placement is not VRAM): nothing is changed; -EXDEV (a BO of another
 * context); -ENODATA (the BO's contents were lost); -EBUSY (the
 * device is host-suspended: its page tables cannot be written until
 * resume; a peer's BO that had to move to be pinned while bound in a VM
 * on which a kernel runs); -ENOSPC / -ENOMEM (page tables; VRAM for a
 * peer's BO to be pinned in; a peer's BO in more than 64 pieces of VRAM);
 * -ENODEV (the device, or the peer, is gone or going); -EOVERFLOW (a
 * peer's BO past 2^31 pins); -EIO / -ETIMEDOUT (a device did not wake).
 * Context: any thread; binds and unbinds of one VM are serialised.
 */
UGPU_API int ugpu_vm_bind(struct ugpu_vm *vm, struct ugpu_bo *bo, uint64_t bo_offset,
			  uint64_t va, uint64_t bytes, uint32_t flags);

/**
 * ugpu_vm_prefetch() - move [@va, +@bytes) of mirror VM @vm's span where
 * kernels will want it, now, instead of on their faults (xe's prefetch
 * bind, cudaMemPrefetchAsync): @to UGPU_PLACEMENT_VRAM makes the ranges
 * there (docs/svm.md), moves each into VRAM whatever its size, and maps it
 * in @vm; UGPU_PLACEMENT_SYSTEM brings every range in VRAM there back into
 * the process. Synchronous; a span of several 2 MiB pieces is moved by the
 * calling thread and, when a CPU looks free (no more threads runnable than
 * CPUs online), a helper thread, a piece at a time each; large spans
 * log their progress every 64 MiB (<ugpu/svm.h> has the asynchronous form). Memory the process unmapped or
 * freed before the call is seen as such; the span's last prefetch location
 * is kept for ugpu_svm_query(). An explicit prefetch to VRAM moves ranges
 * whatever their advice says (a read-mostly range gets its VRAM copy).
 * Returns: 0; -EINVAL (NULL, not a mirror VM, empty, not 4 KiB aligned,
 * outside the mirror span, another @to); -EFAULT (part of the span is not
 * mapped in the process, or is memory shared virtual memory cannot use:
 * what came before it was moved; of what comes after it, the pieces the
 * helper thread had taken may have moved too); -ENOSPC (VRAM was full
 * even after eviction: those ranges are used in place, as on a fault);
 * -EAGAIN (SYSTEM: a copy back failed, logged; its range stays in VRAM,
 * nothing lost); -ENODEV (the device is gone); -EIO / -ETIMEDOUT (the
 * device did not wake).
 * Through ugpud ranges move into the daemon's VRAM as a GPU fault moves
 * them (docs/daemon.md): a range that cannot get there (shared or file
 * memory, which cannot move, VRAM full, a failed request) is -EFAULT,
 * since nothing can be used in place; -ENODEV once the device is closed.
 * Context: any thread.
 */
UGPU_API int ugpu_vm_prefetch(struct ugpu_vm *vm, uint64_t va, uint64_t bytes,
			      enum ugpu_placement to);

/**
 * ugpu_vm_unbind() - remove the binds that [@va, +@bytes) covers.
 * The range must cover whole binds (at least one).
 * The BOs' references are dropped. After the device is gone unbinding still
 * works (nothing is written to the device).
 * Returns: 0; -EINVAL (NULL, unaligned, a bind only partly covered, no bind
 * in the range): nothing is changed; -EBUSY (a kernel is running on the VM:
 * wait for its fence first; or the device is host-suspended); -EIO /
 * -ETIMEDOUT (the device did not wake).
 * Context: any thread.
 */
UGPU_API int ugpu_vm_unbind(struct ugpu_vm *vm, uint64_t va, uint64_t bytes);

/**
 * struct ugpu_vm_info - what ugpu_vm_query() reports.
 * @size: set by the caller to sizeof(struct ugpu_vm_info).
 * @flags, @mirror_start, @mirror_size: as created.
 * @binds, @bound_bytes: binds now and the bytes they cover.
 * @page_tables: 4 KiB tables in use (the root included); @page_table_bytes:
 *          VRAM held for tables (used and free).
 * @pt_gen: page-table generation: changes with every bind, unbind and
 *          rewrite of entries after a bound BO moved.
 * @queues: queues on the VM.
 * @dead: the device is gone: the VM has no page tables any more; only
 *          ugpu_vm_destroy() and ugpu_vm_query() remain useful.
 */
struct ugpu_vm_info {
	size_t size;
	uint32_t flags;
	uint64_t mirror_start, mirror_size;
	uint64_t binds, bound_bytes;
	uint64_t page_tables, page_table_bytes;
	uint64_t pt_gen;
	uint32_t queues;
	bool dead;
};

/**
 * ugpu_vm_query() - describe @vm.
 * Returns: 0, or -EINVAL (NULL, @info->size too small).
 * Context: any thread.
 */
UGPU_API int ugpu_vm_query(struct ugpu_vm *vm, struct ugpu_vm_info *info);

/**
 * struct ugpu_queue_opts - how to create a queue.
 * @size: sizeof(struct ugpu_queue_opts) as the caller compiled it.
 * @name: for logs (copied); may be NULL.
 */
struct ugpu_queue_opts {
	size_t size;
	const char *name;
};

/**
 * ugpu_queue_create() - a submission queue that runs kernels on @vm, one at
 * a time and in order. Queues share the device's hardware exec queues
 * round-robin (docs/vm.md): any number of queues, on any number of VMs,
 * may exist; as many kernels run at once as the device has exec queues.
 * @vm: the VM (it cannot be destroyed while it has queues).
 * @opts: options, or NULL.
 * @out: the queue on success.
 * Returns: 0; -EINVAL (NULL, @opts->size too small); -ENOMEM; -ENODEV (the
 * device is gone).
 * Context: any thread.
 */
UGPU_API int ugpu_queue_create(struct ugpu_vm *vm, const struct ugpu_queue_opts *opts,
			       struct ugpu_queue **out);

/**
 * ugpu_queue_destroy() - cancel the queue's waiting kernels (their fences
 * complete with -ECANCELED), wait up to 10 s for the running one, then free
 * the queue.
 * @q: the queue, or NULL (no-op).
 * Returns: 0; -ETIMEDOUT (the running kernel did not end in time: the queue
 * is freed when it does, and its VM cannot be destroyed until then).
 * Context: any thread; no other thread may use @q during or after.
 */
UGPU_API int ugpu_queue_destroy(struct ugpu_queue *q);

/** What a kernel does over [va, va + bytes) (reference-device kernels). */
enum ugpu_kernel_op {
	UGPU_KERNEL_READ_SUM = 1, /**< sum the u64 words (ugpu_kernel_result.sum) */
	UGPU_KERNEL_WRITE = 2, /**< store @value to every u64 word */
	UGPU_KERNEL_ATOMIC_ADD = 3, /**< add @value to every u64 word, atomically */
};

/**
 * struct ugpu_kernel - one kernel.
 * @size: sizeof(struct ugpu_kernel) as the caller compiled it.
 * @op: enum ugpu_kernel_op.
 * @va: first GPU address; 8-byte aligned.
 * @bytes: length; a multiple of 8 (0 completes at once).
 * @value: WRITE / ATOMIC_ADD operand.
 */
struct ugpu_kernel {
	size_t size;
	enum ugpu_kernel_op op;
	uint64_t va;
	uint64_t bytes;
	uint64_t value;
};

/** How a kernel touched memory (ugpu_kernel_result.fault_access). */
enum ugpu_access {
	UGPU_ACCESS_READ = 0,
	UGPU_ACCESS_WRITE = 1,
	UGPU_ACCESS_ATOMIC = 2,
};

/**
 * ugpu_queue_submit() - queue @k on @q; returns at once.
 * @q: the queue.
 * @k: the kernel (copied).
 * @fence: its fence on success: the queue's sequence number for it,
 *         increasing by one per submission from 1.
 * A kernel submitted while the device is host-suspended (from prepare to
 * resume) waits and runs after resume.
 * Returns: 0; -EINVAL (NULL, unknown op, unaligned @va or @bytes, a range
 * past the VA range, @k->size not reaching @value, a queue being
 * destroyed); -EAGAIN (UGPU_QUEUE_DEPTH kernels of @q have not ended);
 * -ENODEV (the device is gone); -EIO / -ETIMEDOUT (the device did not
 * wake).
 * Context: any thread; submissions to one queue are ordered by the calls.
 */
#define UGPU_QUEUE_DEPTH 1024
UGPU_API int ugpu_queue_submit(struct ugpu_queue *q, const struct ugpu_kernel *k,
			       uint64_t *fence);

/**
 * struct ugpu_kernel_result - how a kernel ended.
 * @size: set by the caller to sizeof(struct ugpu_kernel_result).
 * @status: 0 completed; -EFAULT: it touched a GPU address no bind covers, or
 *          wrote through a read-only bind, or (mirror VMs) process memory
 *          that is not mapped, not accessible that way, or of a kind shared
 *          virtual memory cannot use (regular file mappings, hugetlbfs:
 *          docs/svm.md, "Memory kinds"), and was aborted (@fault_va,
 *          @fault_access say where and how; other queues ran on); -EACCES:
 *          an atomic on memory whose policy refuses device atomics, or
 *          (mirror VMs) one that cannot get the VRAM atomics need (VRAM
 *          full after the retries, or shared memory, which stays in place);
 *          -ECANCELED: its queue was destroyed, or the device removed, before
 *          it ran to the end; -EIO: the device reported an error.
 * @sum: UGPU_KERNEL_READ_SUM: the sum of the words read.
 * @fault_va: the faulting GPU address (page aligned), when @status is
 *          -EFAULT or -EACCES.
 * @fault_access: how it was touched.
 * @run_ns: from the kernel's start on the device to its end.
 */
struct ugpu_kernel_result {
	size_t size;
	int status;
	uint64_t sum;
	uint64_t fault_va;
	enum ugpu_access fault_access;
	uint64_t run_ns;
};

/**
 * ugpu_fence_wait() - wait until @fence of @q completes, at most @timeout_ms.
 * @q: the queue.
 * @fence: a fence ugpu_queue_submit() returned on @q.
 * @timeout_ms: bound; 0 polls; negative is -EINVAL.
 * @res: filled (up to @res->size) when it completed; may be NULL.
 * Returns: 0 (completed: @res->status says how the kernel ended);
 * -ETIMEDOUT (still pending); -EAGAIN (pending, with @timeout_ms 0);
 * -EINVAL (NULL @q, a fence not yet returned, a bad @timeout_ms); -ESTALE
 * (completed so long ago that its result is no longer kept:
 * UGPU_QUEUE_RESULTS are).
 * Context: any thread; several may wait on one queue.
 */
#define UGPU_QUEUE_RESULTS 1024
UGPU_API int ugpu_fence_wait(struct ugpu_queue *q, uint64_t fence, int timeout_ms,
			     struct ugpu_kernel_result *res);

/**
 * ugpu_fence_eventfd() - an eventfd that becomes readable when @fence of @q
 * completes (at once if it already has). The caller closes it; completions
 * after the close are harmless.
 * Through ugpud the eventfd is the daemon's own for that fence, passed
 * over the socket (it signals that fence and reaches nothing else).
 * Returns: 0 with *@fd set; -EINVAL (NULL, a fence not yet returned);
 * -EMFILE / -ENFILE / -ENOMEM; through ugpud also the request's errors
 * (-ENOENT: the queue is gone, a daemon restart included; -ECONNRESET,
 * -EPIPE; -EOPNOTSUPP from a daemon older than this call there).
 * Context: any thread.
 */
UGPU_API int ugpu_fence_eventfd(struct ugpu_queue *q, uint64_t fence, int *fd);

/**
 * struct ugpu_queue_info - what ugpu_queue_query() reports.
 * @submitted: the last fence handed out; @completed: every fence up to it
 * has completed; @waiting: kernels not started yet; @running: one runs now.
 */
struct ugpu_queue_info {
	size_t size;
	uint64_t submitted, completed;
	uint32_t waiting;
	bool running;
};

/**
 * ugpu_queue_query() - describe @q.
 * Returns: 0, or -EINVAL (NULL, @info->size too small).
 * Context: any thread.
 */
UGPU_API int ugpu_queue_query(struct ugpu_queue *q, struct ugpu_queue_info *info);

/**
 * struct ugpu_svm_stats - shared virtual memory on one device (mirror VMs;
 * docs/svm.md), under xe's names. Counters since the device was opened.
 * @size: set by the caller to sizeof(struct ugpu_svm_stats).
 * @svm_pagefault_count: GPU faults served (each entry of a fault batch).
 * @svm_4K_pagefault_count, @svm_64K_pagefault_count, @svm_2M_pagefault_count:
 *          of those, by the size of the range that served them.
 * @svm_4K_migrate_count, ...: ranges moved to VRAM, by size;
 * @svm_4K_migrate_us, ...: the time those moves took (fault to mapped).
 * @svm_device_copy_kb: bytes copied into VRAM; @svm_cpu_copy_kb: back.
 * @svm_tlb_inval_count: device TLB drops for shared virtual memory.
 * @svm_cpu_fault_count: CPU touches that brought a range back from VRAM.
 * @svm_in_place_count: ranges the GPU used where they are (smaller than
 *          64 KiB, or no VRAM left).
 * @svm_gc_count: ranges dropped because the process unmapped or freed
 *          their memory.
 * @svm_abort_count: faults answered with an error (the kernel aborted).
 * @svm_ranges: ranges alive now; @svm_vram_bytes: of them in VRAM now.
 * @svm_lost_count, @svm_lost_bytes: ranges (and their bytes) whose only
 *          copy was in this device's VRAM when it went away by surprise, or
 *          could not be copied back (five failed tries) when they had to
 *          leave it (the device closed or was removed, a bind covered them):
 *          their memory raises SIGBUS on a CPU touch from then on (SIGSEGV
 *          on a kernel without UFFDIO_POISON, Linux 6.6), and each is logged
 *          with its address and size. Still answered after the removal.
 * @svm_evict_count: ranges evicted from VRAM to make room (for a BO or
 *          another range: one LRU for both), their bytes back in process
 *          memory.
 * @svm_prefetch_count: ranges ugpu_vm_prefetch() made or moved to VRAM.
 * @svm_idle_release_count: ranges brought back into the process because
 *          they alone kept the device awake past its autosuspend delay
 *          (runtime PM allowed): the device may then sleep, D3cold included.
 * @svm_advise_count: ugpu_svm_advise() calls that changed the advice (one
 *          that sets the value already there is not counted).
 * @svm_advise_inval_count: ranges whose GPU maps a change of advice
 *          dropped (or that went whole, straddling the edge of a change).
 * @svm_atomic_denied_count: device atomics refused by the atomic policy
 *          UGPU_SVM_ATOMIC_CPU (include/ugpu/svm.h): kernels aborted with
 *          -EACCES.
 * @svm_read_mostly_dup_count: read-mostly ranges given a copy in VRAM
 *          (the process keeping its pages, write-protected).
 * @svm_read_mostly_collapse_count: such copies dropped: a CPU write, a GPU
 *          write or atomic, advice, eviction or the device going.
 * @svm_thrash_detect_count: times a range was found thrashing (struct
 *          ugpu_svm_tuning); @svm_thrash_throttle_count: of them, throttled
 *          (held in VRAM longer); @svm_thrash_pin_count: pinned to system
 *          memory; @svm_thrash_in_place_count: GPU faults served in place
 *          because their range was pinned.
 * @svm_fault_prefetch_count: 64 KiB ranges moved to VRAM by the fault
 *          prefetcher (the rest of a mostly-faulted 2 MiB block).
 * @svm_peer_migrate_count: ranges that arrived in this device's VRAM from
 *          another device's: over the fabric when the two share an owner
 *          group (a fault or atomic of this device, or of a third advised
 *          to put them here), or from a removed device (docs/svm.md,
 *          "Several devices").
 * @svm_peer_map_count: this device's GPU faults served by mapping a range
 *          in a peer's VRAM in place (through its window onto the peer).
 * @svm_peer_pref_count: ranges another device's faults put into this
 *          device's VRAM because advice named it the preferred location.
 * @svm_fault_ahead_count: 2 MiB ranges moved to VRAM by the stream
 *          prefetcher, ahead of a kernel walking a mapping upwards
 *          (struct ugpu_svm_tuning, @fault_ahead), before it faulted on
 *          them.
 */
struct ugpu_svm_stats {
	size_t size;
	uint64_t svm_pagefault_count;
	uint64_t svm_4K_pagefault_count, svm_64K_pagefault_count, svm_2M_pagefault_count;
	uint64_t svm_4K_migrate_count, svm_64K_migrate_count, svm_2M_migrate_count;
	uint64_t svm_4K_migrate_us, svm_64K_migrate_us, svm_2M_migrate_us;
	uint64_t svm_device_copy_kb, svm_cpu_copy_kb;
	uint64_t svm_tlb_inval_count;
	uint64_t svm_cpu_fault_count;
	uint64_t svm_in_place_count;
	uint64_t svm_gc_count;
	uint64_t svm_abort_count;
	uint64_t svm_ranges, svm_vram_bytes;
	uint64_t svm_lost_count, svm_lost_bytes;
	uint64_t svm_evict_count;
	uint64_t svm_idle_release_count;
	uint64_t svm_prefetch_count;
	uint64_t svm_advise_count, svm_advise_inval_count;
	uint64_t svm_atomic_denied_count;
	uint64_t svm_read_mostly_dup_count, svm_read_mostly_collapse_count;
	uint64_t svm_thrash_detect_count, svm_thrash_throttle_count, svm_thrash_pin_count;
	uint64_t svm_thrash_in_place_count;
	uint64_t svm_fault_prefetch_count;
	uint64_t svm_peer_migrate_count, svm_peer_map_count, svm_peer_pref_count;
	uint64_t svm_fault_ahead_count;
};

/**
 * ugpu_device_svm_stats() - shared virtual memory's counters for @dev.
 * A device opened through "ugpud:" answers this process's counters for it
 * (its shared virtual memory runs in the client: docs/daemon.md); zero
 * before its first mirror VM.
 * Returns: 0; -EINVAL (NULL, @st->size too small); -EOPNOTSUPP (the device
 * has no GPU VM).
 * Context: any thread.
 */
UGPU_API int ugpu_device_svm_stats(struct ugpu_device *dev, struct ugpu_svm_stats *st);

#ifdef __cplusplus
}
#endif

#endif /* UGPU_VM_H */
