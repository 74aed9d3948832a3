/* SPDX-License-Identifier: MIT */
/*
 * GPU VMs and submission, internal side (public API: include/ugpu/vm.h;
 * design, locking and the life of a kernel: docs/vm.md).
 *
 * mm/vm.c: VMs, their page tables (pinned kernel BOs in VRAM, carved into
 * 4 KiB tables), binds, and what BO moves do to them; mm/vm_peer.c: binds
 * of another device's BO; mm/vm_svm.c: shared virtual memory's maps (the
 * steps the three share: mm/vm_bind.h). mm/submit.c: queues,
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

#include "base/list.h"

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
#define PTE_NO_ATOMIC (1ull << 3) /* leaf, VERSION 1.2: an atomic through it faults */
#define PTE_ADDR_MASK 0x000ffffffffff000ull

/* vm_bind.flags beyond UGPU_BIND_*: made by shared virtual memory (svm/),
 * not by the program: invisible to ugpu_vm_unbind() and ugpu_vm_query(). */
#define VM_BIND_SVM (1u << 31)
/* vm_bind.flags: a peer bind (mm/p2p.c): @iova is in this device's window
 * onto @peer_dev's VRAM BAR; the bind holds a reference, a pin and a
 * runtime-PM reference of @peer_bo. Visible to the program like its own. */
#define VM_BIND_PEER (1u << 30)
/* vm_bind.flags: the leaves carry PTE_NO_ATOMIC (shared virtual memory's
 * maps of a span whose device atomics must fault; vm_svm_map()). */
#define VM_BIND_NO_ATOMIC (1u << 29)

/*
 * One bind: [va, va + bytes) of the VM maps [bo_offset, +bytes) of @bo; or,
 * with @bo NULL (shared virtual memory using process memory in place), the
 * contiguous device addresses [iova, +bytes) of the process's pages.
 */
struct vm_bind {
	struct list_link vm_link; /* vm->binds, sorted by @va */
	struct list_link bo_link; /* bo->binds (when @bo) */
	struct ugpu_vm *vm;
	struct ugpu_bo *bo; /* holds a reference; or NULL */
	uint64_t iova; /* when !@bo */
	uint64_t va, bytes, bo_offset;
	uint32_t flags; /* UGPU_BIND_*, VM_BIND_SVM, VM_BIND_PEER */
	uint64_t gen; /* bo->backing_gen its PTEs were written for */
	/* VM_BIND_PEER: the peer's BO and device, and its runtime-PM
	 * reference; @revoked (manager lock): the peer is going, the entries
	 * were zeroed (the tables still count them until the unbind). */
	struct ugpu_bo *peer_bo;
	struct ugpu_device *peer_dev;
	struct rpm *peer_rpm;
	bool revoked;
	/* @orphaned (manager lock of the VM's device): @bo left this device
	 * with its removal (vm_bo_orphan_binds_locked()): the entries were
	 * zeroed, the bind is off bo->binds and is never written again; it
	 * keeps its reference of @bo until the unbind or the VM's destroy. */
	bool orphaned;
};

/*
 * vm_peer_revoke_locked() (mm/vm_peer.c) - zero the entries of every peer bind of
 * @importer's VMs into @exporter's VRAM and drop the TLBs at the next
 * launch: from now on a kernel touching them faults. The binds' runtime-PM
 * references of @exporter are handed to the caller (*@held, *@nheld; it
 * releases them without the lock and frees the array): @exporter's
 * removal waits for them. @importer's manager lock held, @importer awake.
 * Returns how many binds were revoked.
 */
uint64_t vm_peer_revoke_locked(struct ugpu_device *importer, struct ugpu_device *exporter,
			       struct rpm ***held, size_t *nheld);
/*
 * vm_peer_let_go_locked() (mm/vm_peer.c) - @importer is removed or closed:
 * its kernels run no more, so its peer binds stop holding their exporters
 * awake. Their runtime-PM references are handed to the caller as above
 * (entries and pins stay until the program unbinds: nothing is written to
 * the gone device). Manager lock of @importer. Returns how many were handed
 * over.
 */
size_t vm_peer_let_go_locked(struct ugpu_device *importer, struct rpm ***held, size_t *nheld);

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
	uint64_t svm_maps, svm_bytes; /* shared virtual memory's (VM_BIND_SVM) */
	uint64_t npeer; /* binds with VM_BIND_PEER (a launch checks their peers) */

	unsigned int active; /* atomic: kernels running on it */

	/* Under vmm->lock. */
	struct list_link link; /* vmm->vms */
	unsigned int nqueues; /* a remote VM's: atomic (mm/submit.c queue_remote_new()) */
	/* the device is gone: no page tables any more. Set under the BO
	 * manager lock and vmm->lock: read under either (vm->lock is not
	 * enough: the removal's teardown does not take it) */
	bool dead;

	/* A VM of a device served by ugpud (mm/vm_remote.h): its handle on the
	 * connection; nothing above but @dev, @name, @flags and the mirror
	 * span is used then, and @svm_remote (mm/vm_remote.c's state of a
	 * remote mirror VM, or NULL). */
	uint32_t remote_handle;
	struct vm_remote_svm *svm_remote;

	/* A mirror VM made by vm_create_forwarded(): these ops serve its
	 * faults instead of the device's shared virtual memory (ugpud hands
	 * them to the client that owns the VM). Set at creation, read-only. */
	const struct vm_svm_ops *fwd;
	void *fwd_arg;
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
	/* queues whose next kernel waits for a peer's host suspend to end
	 * (its VM has peer binds into a device with p2p_held set); put back
	 * on @runnable by vm_sched_release_held() */
	struct list_link held;
	uint64_t pt_gen; /* under the BO manager lock */
	/* the device side, while attached (the "vm-exec" step is up) */
	struct exec_engine *exec;
	struct rpm *rpm; /* rpm_ref()'d while attached */
	bool attached;
	bool closed;
	/* The device's leaves honour PTE_NO_ATOMIC (exec_has_no_atomic()): a
	 * property of the device, stored when it is first attached and never
	 * cleared; read with relaxed atomics, no lock. */
	bool no_atomic;
	/* counters (vmm->lock) */
	uint64_t submitted, completed, faulted, cancelled, revalidations, ptes_rewritten;
	/* launches that waited for a peer's host suspend (vm_peer_enter_locked()) */
	uint64_t peer_held;
	/* Shared virtual memory's handling of mirror VMs (vm_svm_register()),
	 * set before any VM exists, cleared when svm/ lets go of the device
	 * (its step goes down before the VMs do). Under @lock; a call into
	 * the ops is counted in @svm_users (vm_svm_enter()/vm_svm_leave()) and
	 * clearing waits on @svm_cond until no call is inside. */
	const struct vm_svm_ops *svm;
	void *svm_arg;
	unsigned int svm_users;
	pthread_cond_t svm_cond;
	/* The queue running on each hardware queue and its kernel's LAUNCH
	 * tag (under @lock): how a fault's answer finds its kernel. */
	struct ugpu_queue *on_slot[64];
	uint32_t slot_launch[64];
};

/*
 * A GPU fault of a kernel on a mirror VM, inside the mirror span and
 * outside every bind: shared virtual memory's to serve (svm/). @vm stays
 * valid until svm's vm_gone() for it returns.
 */
struct vm_fault {
	struct ugpu_vm *vm;
	struct vm_mgr *vmm;
	uint32_t slot, launch;
	uint64_t va;
	enum ugpu_access access;
};

/*
 * struct vm_svm_ops - what shared virtual memory does for mirror VMs.
 * @vm_new: a mirror VM is being created: 0, or why it cannot be served
 *          (-EPERM / -ENOSYS: no usable userfaultfd, logged with what to
 *          enable). No lock held.
 * @sync:   a kernel is being submitted on a mirror VM: return once what
 *          the process unmapped, freed or moved before is out of the GPU's
 *          view. No lock held.
 * @faults: a batch of faults (exec thread, no lock held): queue the work
 *          and answer each with vm_fault_done(), from any thread.
 * @punch:  a bind of the program's is about to cover [va, +len) of a
 *          mirror VM's span: the ranges there leave it first (their bytes
 *          back in process memory). No lock held. Returns 0 or -errno.
 * @vm_gone: @vm is being destroyed: forget it, and return only when no
 *          work in progress uses it. No lock held.
 * @prefetch: ugpu_vm_prefetch() of [va, +len) of @vm's span (checked):
 *          into VRAM (@to_vram) or back into the process, on the caller's
 *          thread. No lock held; the device held awake.
 */
struct vm_svm_ops {
	int (*vm_new)(void *arg, struct ugpu_vm *vm);
	void (*sync)(void *arg);
	void (*faults)(void *arg, const struct vm_fault *f, size_t n);
	int (*punch)(void *arg, struct ugpu_vm *vm, uint64_t va, uint64_t len);
	void (*vm_gone)(void *arg, struct ugpu_vm *vm);
	int (*prefetch)(void *arg, struct ugpu_vm *vm, uint64_t va, uint64_t len, bool to_vram);
};

/* ---- mm/vm.c ----------------------------------------------------------------- */

/* A kernel runs on a VM @bo is bound in: it must not move. Manager lock. */
bool vm_bo_busy_locked(const struct ugpu_bo *bo);
/* @bo's backing changed: the VMs it is bound in rewrite its PTEs before
 * their next kernel. Manager lock (called by bo_set_placement()). */
void vm_bo_moved_locked(struct ugpu_bo *bo);
/*
 * vm_bo_orphan_binds_locked() - @bo is about to leave its device for a
 * peer's VRAM in that device's removal (mm/peer.c): zero the entries of
 * its binds (all in VMs of its device, whose kernels the removal stopped),
 * drop those VMs' TLBs at any next launch, and take the binds off
 * bo->binds, so that after the move nothing of the old device walks a
 * list the new device's lock guards. The binds stay in their VMs (the
 * program unbinds them, or destroys the VM, later: that touches only the
 * bind itself, under the old device's locks).
 * Lock order: the caller holds both devices' manager locks (bo_lock_pair())
 * and no VM lock; an unbind of one of these binds (vm->lock, then the old
 * device's manager lock) is serialised with this by that manager lock.
 * Device awake (CPU stores to its page tables). Returns the binds orphaned.
 */
unsigned int vm_bo_orphan_binds_locked(struct ugpu_bo *bo);
/*
 * vm_peer_enter_locked() - a launch on @vm: raise p2p_users of every
 * device its peer binds (not revoked) reach, at most @max of them listed in
 * @peers (*@n), then check their p2p_held: if one is held (its host
 * suspend has its VRAM off), drop them again and return false (the kernel
 * waits). Manager lock of @vm's device. vm_peer_leave() drops what it
 * raised, when the kernel ends or did not start.
 */
bool vm_peer_enter_locked(struct ugpu_vm *vm, struct ugpu_device **peers, unsigned int max,
			  unsigned int *n);
void vm_peer_leave(struct ugpu_device **peers, unsigned int n);
/* vm_sched_release_held() - @dev's queues held for a peer go back on its
 * runnable list and the scheduler runs. No lock held. */
void vm_sched_release_held(struct ugpu_device *dev);
/* Rewrite the PTEs of binds whose BO moved. Manager lock; device in D0. */
void vm_revalidate_locked(struct ugpu_vm *vm);
/*
 * A kernel is about to launch on @vm: what it writes is not known, so every
 * range of a BO bound writable in @vm counts as written for the host-suspend
 * backups (bo_backup_dirty_locked()). Manager lock.
 */
void vm_launch_writes_locked(struct ugpu_vm *vm);
/* VRAM offset of @vm's root table. */
uint64_t vm_root_offset(const struct ugpu_vm *vm);
/* The device is gone (vm-exec step down): free every VM's page tables;
 * VMs answer -ENODEV from now on. vmm->lock not held. */
void vm_release_tables_all(struct vm_mgr *vmm);

/*
 * vm_create_forwarded() - ugpu_vm_create() of a mirror VM (UGPU_VM_MIRROR in
 * @opts) whose mirror span is served by @ops (with @arg) rather than by
 * the process's shared virtual memory: ugpud makes its clients' mirror VMs
 * so and hands their faults over (docs/daemon.md, "SVM for clients").
 * @ops->vm_new is not called; @ops->faults gets the faults, @ops->punch a
 * bind over a map, @ops->vm_gone the destroy; @ops->sync and
 * @ops->prefetch are not called (ugpu_vm_prefetch() is -EOPNOTSUPP).
 * Returns: as ugpu_vm_create().
 */
int vm_create_forwarded(struct ugpu_device *dev, const struct ugpu_vm_opts *opts,
			const struct vm_svm_ops *ops, void *arg, struct ugpu_vm **out);

/* ---- mm/vm_svm.c ------------------------------------------------------------- */

/* Install shared virtual memory's ops for @dev's mirror VMs (svm/'s
 * bring-up step, before any VM exists), or with @ops NULL remove them (its
 * teardown): returns once no call is inside them; later calls find none. */
void vm_svm_register(struct ugpu_device *dev, const struct vm_svm_ops *ops, void *arg);
/* The ops with a call counted (and their @arg), or NULL when there are none;
 * vm_svm_leave() after the call. No lock held. */
const struct vm_svm_ops *vm_svm_enter(struct vm_mgr *vmm, void **arg);
void vm_svm_leave(struct vm_mgr *vmm);

/* The ops serving @vm's mirror span (its own forwarded ones, or the
 * device's shared virtual memory's) with a call counted, or NULL; then
 * vm_ops_leave(). No lock held. */
const struct vm_svm_ops *vm_ops_enter(struct ugpu_vm *vm, void **arg);
void vm_ops_leave(struct ugpu_vm *vm);

/* vm_svm_map() @flags */
#define VM_SVM_WRITABLE (1u << 0)
#define VM_SVM_NO_ATOMIC (1u << 1) /* device atomics fault (vm_can_deny_atomics()) */

/*
 * vm_svm_map() - map [va, +len) of mirror VM @vm for shared virtual memory:
 * to @bo (its VRAM, from offset 0) or, with @bo NULL, to the device
 * addresses [iova, +len) (the process's pages in place). Read-only unless
 * @flags has VM_SVM_WRITABLE; with VM_SVM_NO_ATOMIC the leaves carry
 * PTE_NO_ATOMIC (only where vm_can_deny_atomics(): else -EOPNOTSUPP). The
 * span must not overlap a bind (the program's or SVM's).
 * Takes @vm's lock and the BO manager lock; the device must be awake.
 * Returns: 0; -EEXIST (something is bound there); -ENODEV (the device is
 * gone); -EBUSY (host-suspended); -ENOSPC / -ENOMEM (page tables);
 * -EOPNOTSUPP (VM_SVM_NO_ATOMIC on a device without the bit).
 */
int vm_svm_map(struct ugpu_vm *vm, uint64_t va, uint64_t len, struct ugpu_bo *bo, uint64_t iova,
	       unsigned int flags);

/* @vm's device refuses an atomic through a leaf with PTE_NO_ATOMIC
 * (reference device 1.2). No lock. */
bool vm_can_deny_atomics(const struct ugpu_vm *vm);

/*
 * vm_svm_map_peer() - the same for a range in a peer's VRAM, used in place:
 * @bo (contiguous, in the VRAM of another device of @vm's owner group) is
 * reached through @vm's device's window onto that peer's VRAM BAR
 * (mm/p2p.c), as a peer bind is. The map holds a window reference, no pin
 * and no reference of @bo: shared virtual memory unmaps it before @bo
 * moves or goes. Like a peer bind it is revoked (entries zeroed) when the
 * peer goes. Takes @bo's device's manager lock, then as vm_svm_map().
 * Returns: as vm_svm_map(); -ENOLINK (not in one owner group); -ENODEV
 * (the peer is going); -EINVAL (@bo not contiguous VRAM, or too small).
 */
int vm_svm_map_peer(struct ugpu_vm *vm, uint64_t va, uint64_t len, struct ugpu_bo *bo,
		    bool writable);

/* No bind of @vm (the program's or SVM's) overlaps [va, +len). Takes
 * @vm's lock. */
bool vm_span_unbound(struct ugpu_vm *vm, uint64_t va, uint64_t len);

/*
 * vm_svm_unmap() - remove shared virtual memory's maps inside [va, +len)
 * of @vm and drop the TLB of every hardware queue running on it: when this
 * returns, no kernel reaches what they pointed at (the device waits for
 * in-flight accesses). Returns the number of maps removed.
 */
int vm_svm_unmap(struct ugpu_vm *vm, uint64_t va, uint64_t len);
/* The same from an eviction (struct bo_svm_ops): the manager lock is held,
 * @vm's lock is only tried (-EBUSY when taken: try another victim).
 * @idle_only: -EBUSY too when a kernel runs on @vm (the TLB flush it
 * would need waits for the device, which the userfaultfd handler thread,
 * svm/fault.c back_from_handler(), must never do). */
int vm_svm_unmap_evicting(struct ugpu_vm *vm, uint64_t va, uint64_t len, bool idle_only);

/* ---- mm/submit.c --------------------------------------------------------------- */

/*
 * vm_fault_done() - shared virtual memory's answer to @f: 0: the pages are
 * mapped now, the kernel tries again; -EFAULT / -EACCES: the kernel is
 * aborted and its fence reports that status with @f's address and access
 * (the first such answer wins). An answer for a kernel that already ended
 * does nothing. Any thread, no lock held.
 */
void vm_fault_done(const struct vm_fault *f, int status);

/* vm_faults_done() - the answers to @n faults at once (@status[i] for
 * @f[i]): each kernel among them gets one answer, a replay when all its
 * faults were served, else the abort with its first failed fault. */
void vm_faults_done(const struct vm_fault *f, const int *status, size_t n);

/* Launch what can run now. Takes the manager lock and vmm->lock: call with
 * neither held. */
void sched_kick(struct vm_mgr *vmm);

/* ---- mm/vm_peer.c ------------------------------------------------------------ */

/*
 * peer_bar_get_locked() - @peer's VRAM BAR, for a window onto it
 * (p2p_win_get_locked()): its mapping (*@vaddr) and the same as a file
 * (*@fd, a dup the caller closes; *@fd_off). The transport is reached only
 * while @peer is not removed: @peer's manager lock held, checked under it.
 * Returns: 0; the transport's region_fd() errors; -EMFILE and other dup
 * errors.
 */
int peer_bar_get_locked(struct ugpu_device *peer, void **vaddr, int *fd, uint64_t *fd_off);

#endif
