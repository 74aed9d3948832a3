/* SPDX-License-Identifier: MIT */
/*
 * GPU VMs and submission, internal side (public API: include/ugpu/vm.h;
 * design, locking and the life of a kernel: docs/vm.md).
 *
 * mm/vm.c: VMs, their page tables (pinned kernel BOs in VRAM, carved into
 * 4 KiB tables), binds, and what BO moves do to them. mm/submit.c: queues,
 * the scheduler that puts their kernels on the device's hardware exec
 * queues (engines/exec.h), fences and results.
 *
 * Locks, outermost first:
 *   vm->lock          serialises binds, unbinds and destroy of one VM;
 *   the BO manager lock (mm/bo.h)
 *                     every PTE write, the bind lists (vm->binds and
 *                     bo->binds), vm->dirty, vm->pt_gen, vmm->pt_gen, and
 *                     every kernel launch (so a BO never moves between the
 *                     check that its VMs' PTEs are current and the launch);
 *   vmm->lock         the scheduler: queues, their pending kernels,
 *                     results and fences, the runnable list, vm->nqueues,
 *                     the VM list, vmm->attached;
 *   the exec engine's own locks (engines/exec.h).
 * vm->active is atomic: raised under the BO manager lock (launch), lowered
 * without it (a kernel's end). So a path that holds the manager lock and
 * reads 0 knows no kernel runs on the VM and none starts until it unlocks.
 */
#ifndef UGPU_MM_VM_H
#define UGPU_MM_VM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <ugpu/vm.h>

#include "src/base/list.h"

struct ugpu_device;
struct ugpu_bo;
struct exec_engine;
struct rpm;
struct vm_pt;
struct pt_chunk;

/* Leaf and table entries (docs/reference-device.md). */
#define PTE_VALID (1ull << 0)
#define PTE_WRITABLE (1ull << 1)
#define PTE_SYSTEM (1ull << 2)
#define PTE_ADDR_MASK 0x000ffffffffff000ull

/* One bind: [va, va + bytes) of the VM maps [bo_offset, +bytes) of @bo. */
struct vm_bind {
	struct list_link vm_link; /* vm->binds, sorted by @va */
	struct list_link bo_link; /* bo->binds */
	struct ugpu_vm *vm;
	struct ugpu_bo *bo; /* holds a reference */
	uint64_t va, bytes, bo_offset;
	uint32_t flags; /* UGPU_BIND_* */
	uint64_t gen; /* bo->backing_gen its PTEs were written for */
};

struct ugpu_vm {
	struct ugpu_device *dev;
	struct vm_mgr *vmm;
	char name[32];
	uint32_t flags;
	uint64_t mirror_start, mirror_size;
	pthread_mutex_t lock;

	/* Under the BO manager lock (and @lock to change). */
	struct list_link binds;
	struct vm_pt *root;
	struct pt_chunk **chunks;
	size_t nchunks, cap_chunks;
	struct vm_pt **free_pt;
	size_t nfree, cap_free;
	uint64_t pt_gen;
	bool dirty; /* a bound BO moved since its PTEs were written */
	uint64_t nbinds, bound_bytes, tables;

	unsigned int active; /* atomic: kernels running on it */

	/* Under vmm->lock. */
	struct list_link link; /* vmm->vms */
	unsigned int nqueues;
	bool dead; /* the device is gone: no page tables any more */
};

/*
 * struct vm_mgr - per device (dev->vm_mgr); context lifetime: freed when the
 * device object goes (handles of VMs and queues hold it).
 */
struct vm_mgr {
	struct ugpu_device *dev;
	pthread_mutex_t lock;
	struct list_link vms;
	struct list_link queues; /* every live queue (zombies included) */
	struct list_link runnable; /* queues with a pending kernel and none running */
	uint64_t pt_gen; /* under the BO manager lock */
	/* the device side, while attached (the "vm-exec" step is up) */
	struct exec_engine *exec;
	struct rpm *rpm; /* rpm_ref()'d while attached */
	bool attached;
	bool closed;
	/* counters (vmm->lock) */
	uint64_t submitted, completed, faulted, cancelled, revalidations, ptes_rewritten;
};

/* ---- mm/vm.c ----------------------------------------------------------------- */

/* A kernel runs on a VM @bo is bound in: it must not move. Manager lock. */
bool vm_bo_busy_locked(const struct ugpu_bo *bo);
/* @bo's backing changed: the VMs it is bound in rewrite its PTEs before
 * their next kernel. Manager lock (called by bo_set_placement()). */
void vm_bo_moved_locked(struct ugpu_bo *bo);
/* Rewrite the PTEs of binds whose BO moved. Manager lock; device in D0. */
void vm_revalidate_locked(struct ugpu_vm *vm);
/* VRAM offset of @vm's root table. */
uint64_t vm_root_offset(const struct ugpu_vm *vm);
/* The device is gone (vm-exec step down): free every VM's page tables;
 * VMs answer -ENODEV from now on. vmm->lock not held. */
void vm_release_tables_all(struct vm_mgr *vmm);

/* ---- mm/submit.c --------------------------------------------------------------- */

/* Launch what can run now. Takes the manager lock and vmm->lock: call with
 * neither held. */
void sched_kick(struct vm_mgr *vmm);

#endif
