/* SPDX-License-Identifier: MIT */
/*
 * The exec engine: the reference device's exec queues, GPU VM roots, fault
 * ring and kernel fences (docs/reference-device.md, "GPU virtual memory and
 * the exec queues", layout 1.1). This is the hardware end only: it starts a
 * kernel on a free hardware queue with a given page-table root, tells its
 * client when a kernel ends and which pages faulted, and sends fault
 * replies. What a VM is, which queue runs what and in which order, and what
 * a fault means belong to the client (mm/submit.c, mm/vm.c).
 *
 * Memory: the caller reserves EXEC_MEM_BYTES of VRAM (kernel memory,
 * restored early on resume): the fault ring (EXEC_FAULT_RING_ENTRIES
 * entries of 32 bytes), then one fence word per hardware queue. A kernel's
 * end is seen as its fence in that memory (no register read), then one
 * EXEC_STATUS read says how it ended.
 *
 * Interrupts: the engine's thread waits on MSI-X vectors 2 (error), 3 (fault)
 * and 4 (kernel ended). Copy engines do not read vector 2 (engines/sim), so
 * the exec engine owns it.
 *
 * Power: registers are lost in D3cold and by host suspend; exec_hw_lost()
 * says so, and the next launch programs them again (fault ring, VM roots).
 * Launches need the device in D0: the client holds a runtime-PM reference
 * for every kernel from launch to end (src/rpm.h).
 */
#ifndef UGPU_ENGINES_EXEC_H
#define UGPU_ENGINES_EXEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ugpu_context;
struct vfio_dev;
struct exec_engine;

#define EXEC_FAULT_RING_ENTRIES 256u
#define EXEC_FAULT_ENTRY_BYTES 32u
#define EXEC_MAX_QUEUES 64u
/* Fault ring, then the fence words (8 bytes per queue), in one 4 KiB page. */
#define EXEC_MEM_BYTES ((uint64_t)EXEC_FAULT_RING_ENTRIES * EXEC_FAULT_ENTRY_BYTES + 4096)

/* Kernel ops: the device's EXEC_OP encoding. */
enum exec_op {
	EXEC_OP_READ = 1,
	EXEC_OP_WRITE = 2,
	EXEC_OP_ATOMIC_ADD = 3,
};

/* Fault access: the device's encoding. */
enum exec_access {
	EXEC_ACCESS_READ = 0,
	EXEC_ACCESS_WRITE = 1,
	EXEC_ACCESS_ATOMIC = 2,
};

/*
 * struct exec_launch - one kernel to start.
 * @root: VRAM offset of the VM's root table.
 * @pt_gen: the VM's page-table generation: the slot's cached translations
 *          are dropped (TLB_INVAL) unless it last invalidated at @pt_gen or
 *          later for this same root. Generations come from one counter per
 *          device, so a new VM at a freed root never inherits a stale TLB.
 * @tag: the client's, handed back in struct exec_end and exec_fault.
 */
struct exec_launch {
	enum exec_op op;
	uint64_t va;
	uint64_t bytes;
	uint64_t value;
	uint64_t root;
	uint64_t pt_gen;
	void *tag;
};

/* How a kernel ended (struct exec_end.how). */
enum exec_how {
	EXEC_END_DONE = 0,
	EXEC_END_ABORTED = 1, /* the client aborted it after a fault */
	EXEC_END_ERROR = 2, /* the device refused or failed it (EXEC_STATUS 5) */
	EXEC_END_CANCELLED = 3, /* the device is gone or stopped answering: abandoned */
};

struct exec_end {
	void *tag;
	uint32_t slot;
	enum exec_how how;
	uint64_t result; /* EXEC_OP_READ: the sum */
	uint64_t run_ns; /* launch to the end being seen */
};

struct exec_fault {
	void *tag; /* the kernel's (exec_launch.tag) */
	uint32_t slot;
	uint32_t launch; /* the kernel's LAUNCH tag (exec_fault_resolve()) */
	enum exec_access access;
	uint64_t va;
};

/*
 * struct exec_client - the layer that uses the engine. Callbacks run on the
 * engine's thread with no engine lock held; they may call exec_launch(),
 * exec_fault_reply() and take the client's locks.
 * @ended: a kernel ended (or was abandoned); its slot is free again.
 * @faults: a batch of faults of running kernels (stale entries, of kernels
 *          that ended, are dropped before). The client answers each slot
 *          with exec_fault_reply(), now or later.
 * @kick: launches are possible again (exec_unblock(), exec_hw_lost() and
 *          the end of a launch that found every slot busy are not needed:
 *          @ended covers those). May be NULL.
 */
struct exec_client {
	void (*ended)(void *arg, const struct exec_end *e);
	void (*faults)(void *arg, const struct exec_fault *f, size_t n);
	void (*kick)(void *arg);
	void *arg;
};

/*
 * struct exec_cfg - what the engine drives.
 * @dev: the device (BAR0 registers).
 * @vram: the CPU mapping of VRAM; @mem_offset: the VRAM offset of the
 *        EXEC_MEM_BYTES the caller reserved (4 KiB aligned).
 * @irq_fd: eventfds of MSI-X vectors 2, 3 and 4 (the caller's; not closed).
 * @name: for logs.
 */
struct exec_cfg {
	struct vfio_dev *dev;
	void *vram;
	uint64_t mem_offset;
	int irq_fd[3];
	const char *name;
};

/*
 * exec_create() - probe the exec queues (VERSION 1.1 and CAPS bit 3, else
 * -EOPNOTSUPP), end kernels a previous owner of the device left on it
 * (aborted; bounded wait), enable the fault ring and start the engine's
 * thread.
 * Returns: 0; -EOPNOTSUPP; -ENOMEM; -EBUSY (a previous owner's kernels
 * still run); -EIO / -ENODEV (register access).
 */
int exec_create(struct ugpu_context *ctx, const struct exec_cfg *cfg, struct exec_engine **out);

/* exec_destroy() - stop the thread; kernels still running are reported
 * abandoned (EXEC_END_CANCELLED) to the client first, then aborted on the
 * device (bounded wait) so that none stays there. NULL: no-op. */
void exec_destroy(struct exec_engine *x);

/* exec_set_client() - install (or, with NULL, remove) the client. Removing
 * waits until no callback runs. */
void exec_set_client(struct exec_engine *x, const struct exec_client *c);

uint32_t exec_num_queues(const struct exec_engine *x);

/* exec_has_no_atomic() - the device's leaves honour the NO_ATOMIC bit
 * (VERSION 1.2, CAPS bit 4): an atomic through such a leaf faults while
 * reads and writes go on. Fixed at create; any thread. */
bool exec_has_no_atomic(const struct exec_engine *x);

/*
 * exec_launch() - start @l on a free hardware queue (one whose cached root
 * is @l->root first), programming its VM root and dropping its TLB as
 * needed. *@slot: the queue; *@launch: the kernel's LAUNCH tag there (what
 * its faults carry, and exec_fault_resolve() takes).
 * Returns: 0; -EBUSY (every queue runs a kernel); -EAGAIN (launches are
 * blocked: exec_block()); -ENODEV / -EIO (register access failed: nothing
 * was started).
 * Context: any thread; the device must be in D0.
 */
int exec_launch(struct exec_engine *x, const struct exec_launch *l, uint32_t *slot,
		uint32_t *launch);

/*
 * exec_fault_reply() - REPLAY the queues in @replay (bit n: queue n) and
 * ABORT those in @abort, in one register write each.
 */
int exec_fault_reply(struct exec_engine *x, uint64_t replay, uint64_t abort);

/*
 * exec_fault_resolve() - answer the faults of the kernel that runs on @slot
 * with LAUNCH tag @launch, if it still does (a reply meant for an ended
 * kernel must not reach the next one): @replay: REPLAY (the pages it set
 * aside are tried again; the device drops the queue's TLB with it: the
 * caller flushed, with the wait, every entry it changed or removed); else
 * ABORT it.
 * Returns: 0 (also when that kernel ended: nothing to do); -errno of the
 * register access.
 */
int exec_fault_resolve(struct exec_engine *x, uint32_t slot, uint32_t launch, bool replay);

/*
 * exec_tlb_flush() - page-table entries of the VM at @root changed (its
 * generation is now @pt_gen): every queue running on it drops its TLB now.
 * Each TLB_INVAL returns only when no access through a dropped translation
 * is in flight (docs/reference-device.md), so when this returns no kernel
 * can reach what the old entries pointed at. Queues not running drop theirs
 * at their next launch (exec_launch.pt_gen).
 * Returns: 0; -errno of the register access.
 */
int exec_tlb_flush(struct exec_engine *x, uint64_t root, uint64_t pt_gen);

/*
 * exec_block() - no new launch (exec_launch() answers -EAGAIN) until the
 * matching exec_unblock(); wait up to @timeout_ms for running kernels to
 * end. Nests. Returns: 0 (nothing runs); -ETIMEDOUT (some still run: the
 * block stays, unblock it or abandon them).
 * Context: any thread but the engine's (its callbacks).
 */
int exec_block(struct exec_engine *x, int timeout_ms);
void exec_unblock(struct exec_engine *x);

/* exec_abandon() - report every running kernel as EXEC_END_CANCELLED and
 * forget it (the device is gone, or is about to lose its state). */
void exec_abandon(struct exec_engine *x);

/* exec_hw_lost() - the device's registers went back to reset values (D3cold,
 * host suspend): nothing runs any more; program them again at the next
 * launch. Kernels still recorded as running are abandoned. */
void exec_hw_lost(struct exec_engine *x);

/* exec_busy() - kernels running now (for runtime PM's idle check, logs). */
uint32_t exec_busy(struct exec_engine *x);

struct exec_stats {
	uint64_t launches, ends, aborts, errors, cancelled, faults, fault_batches, tlb_invals,
		root_switches, reprograms;
};
void exec_get_stats(struct exec_engine *x, struct exec_stats *st);

#endif
