/* SPDX-License-Identifier: MIT */
/*
 * What shared virtual memory (svm/) does to GPU VMs: its handling of mirror
 * VMs (vm_svm_register(), entered around each use), and its maps: binds
 * made by SVM, not by the program (VM_BIND_SVM), of a range's VRAM, of the
 * process's own pages in place, or of a peer's VRAM through a window; and
 * their unmaps, with or without waking the device. The page tables and the
 * bind list are mm/vm.c's (mm/vm_bind.h); locks: mm/vm.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "engines/exec.h"
#include "mm/bo.h"
#include "mm/p2p.h"
#include "mm/vm.h"
#include "mm/vm_bind.h"
#include "mm/vm_remote.h"
#include "src/device.h"

/* ---- mirror VMs' handling ------------------------------------------------------------- */

const struct vm_svm_ops *vm_ops_enter(struct ugpu_vm *vm, void **arg)
{
	if (vm->fwd) {
		*arg = vm->fwd_arg;
		return vm->fwd;
	}
	return vm_svm_enter(vm->vmm, arg);
}

void vm_ops_leave(struct ugpu_vm *vm)
{
	if (!vm->fwd)
		vm_svm_leave(vm->vmm);
}

/* Shared virtual memory lets go of mirror VM @vm (when it still serves the
 * device: its teardown already let go of every VM). */
void vm_svm_gone(struct vm_mgr *vmm, struct ugpu_vm *vm)
{
	void *sarg;
	const struct vm_svm_ops *sops;

	(void)vmm;
	sops = vm_ops_enter(vm, &sarg);
	if (sops) {
		sops->vm_gone(sarg, vm);
		vm_ops_leave(vm);
	}
}

void vm_svm_register(struct ugpu_device *dev, const struct vm_svm_ops *ops, void *arg)
{
	struct vm_mgr *vmm = dev->vm_mgr;

	pthread_mutex_lock(&vmm->lock);
	vmm->svm = ops;
	vmm->svm_arg = arg;
	while (!ops && vmm->svm_users)
		pthread_cond_wait(&vmm->svm_cond, &vmm->lock);
	pthread_mutex_unlock(&vmm->lock);
}

const struct vm_svm_ops *vm_svm_enter(struct vm_mgr *vmm, void **arg)
{
	const struct vm_svm_ops *ops;

	pthread_mutex_lock(&vmm->lock);
	ops = vmm->svm;
	if (ops) {
		vmm->svm_users++;
		*arg = vmm->svm_arg;
	}
	pthread_mutex_unlock(&vmm->lock);
	return ops;
}

void vm_svm_leave(struct vm_mgr *vmm)
{
	pthread_mutex_lock(&vmm->lock);
	if (!--vmm->svm_users)
		pthread_cond_broadcast(&vmm->svm_cond);
	pthread_mutex_unlock(&vmm->lock);
}

bool vm_can_deny_atomics(const struct ugpu_vm *vm)
{
	const struct vm_mgr *vmm = vm->dev->vm_mgr;

	return vmm && __atomic_load_n(&vmm->no_atomic, __ATOMIC_RELAXED);
}

/* Put map @b (its target set) at [@va, +@len) of @vm before @at, with
 * VM_BIND_SVM and @flags, and count it. vm->lock and the manager lock. */
static void svm_map_insert_locked(struct ugpu_vm *vm, struct list_link *at, struct vm_bind *b,
				  uint64_t va, uint64_t len, uint32_t flags)
{
	b->va = va;
	b->bytes = len;
	b->flags = VM_BIND_SVM | flags;
	vm_bind_insert_locked(vm, at, b);
	vm->svm_maps++;
	vm->svm_bytes += len;
}

int vm_svm_map(struct ugpu_vm *vm, uint64_t va, uint64_t len, struct ugpu_bo *bo, uint64_t iova,
	       unsigned int flags)
{
	struct ugpu_device *dev = vm->dev;
	struct bo_mgr *m;
	struct vm_bind *b;
	struct list_link *at;
	int ret;

	if (vm_is_remote(vm))
		return vm_remote_svm_map(vm, va, len, bo, flags);
	m = dev->bo_mgr;
	b = calloc(1, sizeof(*b));

	if ((flags & VM_SVM_NO_ATOMIC) && !vm_can_deny_atomics(vm)) {
		free(b);
		return -EOPNOTSUPP;
	}
	if (!b)
		return -ENOMEM;
	ret = vm_bind_begin(vm, m, va, len, &at);
	if (ret)
		goto out_unlock_vm;
	if (bo && bo->placement != UGPU_PLACEMENT_VRAM)
		ret = -EINVAL;
	if (!ret) {
		b->bo = bo;
		b->iova = iova;
		svm_map_insert_locked(vm, at, b, va, len,
				      ((flags & VM_SVM_WRITABLE) ? 0 : UGPU_BIND_READONLY) |
					      ((flags & VM_SVM_NO_ATOMIC) ? VM_BIND_NO_ATOMIC : 0));
		b = NULL;
	}
	pthread_mutex_unlock(&m->lock);
out_unlock_vm:
	pthread_mutex_unlock(&vm->lock);
	free(b);
	return ret;
}

int vm_svm_map_peer(struct ugpu_vm *vm, uint64_t va, uint64_t len, struct ugpu_bo *bo,
		    bool writable)
{
	struct ugpu_device *dev = vm->dev, *peer = bo_dev(bo);
	struct bo_mgr *m = dev->bo_mgr, *pm = peer->bo_mgr;
	struct vm_bind *b;
	struct list_link *at;
	uint64_t fd_off = 0, off = 0, win;
	void *vaddr = NULL;
	int ret, fd = -1;

	/* drm_pagemap's rule, as for a peer bind: in place only within an
	 * owner group */
	if (peer == dev || !device_same_owner(dev, peer))
		return -ENOLINK;
	bo_mgr_lock(pm);
	if (pm->closed || device_is_removed(peer) ||
	    __atomic_load_n(&peer->p2p_gone, __ATOMIC_ACQUIRE))
		ret = -ENODEV;
	else if (bo->placement != UGPU_PLACEMENT_VRAM || !(bo->flags & UGPU_BO_CONTIGUOUS) ||
		 bo->size < len)
		ret = -EINVAL;
	else
		ret = peer_bar_get_locked(peer, &vaddr, &fd, &fd_off);
	if (!ret)
		off = bo_vram_offset(bo);
	pthread_mutex_unlock(&pm->lock);
	if (ret)
		return ret;
	b = calloc(1, sizeof(*b));
	if (!b) {
		close(fd);
		return -ENOMEM;
	}
	ret = vm_bind_begin(vm, m, va, len, &at);
	if (ret)
		goto out_unlock_vm;
	ret = p2p_win_get_locked(dev, peer, vaddr, fd, fd_off, &win);
	if (!ret) {
		b->iova = win + off;
		b->peer_dev = peer;
		list_init(&b->bo_link);
		svm_map_insert_locked(vm, at, b, va, len,
				      VM_BIND_PEER | (writable ? 0 : UGPU_BIND_READONLY));
		b = NULL;
	}
	pthread_mutex_unlock(&m->lock);
out_unlock_vm:
	pthread_mutex_unlock(&vm->lock);
	free(b);
	close(fd);
	return ret;
}

bool vm_span_unbound(struct ugpu_vm *vm, uint64_t va, uint64_t len)
{
	struct list_link *at;
	bool free_ = true;

	if (vm_is_remote(vm))
		return true; /* the daemon's binds: a map over one is refused there (-EEXIST) */
	pthread_mutex_lock(&vm->lock);
	at = vm_bind_after(vm, va);
	if (at != &vm->binds && list_entry(at, struct vm_bind, vm_link)->va < va + len)
		free_ = false;
	pthread_mutex_unlock(&vm->lock);
	return free_;
}

/* vm_svm_unmap()'s work: @vm->lock and the manager lock held; the binds
 * removed go to @gone (freed by the caller). */
static int svm_unmap_locked(struct ugpu_vm *vm, uint64_t va, uint64_t len, struct list_link *gone)
{
	struct ugpu_device *dev = vm->dev;
	struct vm_mgr *vmm = vm->vmm;
	struct list_link *at;
	uint64_t end = va + len, gen = 0, root = 0;
	int n = 0;

	at = vm_bind_after(vm, va);
	while (at != &vm->binds) {
		struct vm_bind *b = list_entry(at, struct vm_bind, vm_link);

		at = at->next;
		if (b->va >= end)
			break;
		if (!(b->flags & VM_BIND_SVM) || b->va < va || b->va + b->bytes > end)
			continue;
		if (!vm->dead && !device_is_removed(dev))
			vm_bind_clear_locked(vm, b);
		list_del(&b->vm_link);
		if (b->bo)
			list_del(&b->bo_link);
		list_add_tail(gone, &b->vm_link);
		if (b->flags & VM_BIND_PEER)
			vm->npeer--;
		vm->svm_maps--;
		vm->svm_bytes -= b->bytes;
		n++;
	}
	if (n && !vm->dead) {
		gen = vm_next_gen_locked(vm);
		root = vm_root_offset(vm);
	}
	/* Still under the manager lock: no launch picks the old entries up
	 * between the clear and the flush (a launch takes this lock and
	 * drops a stale TLB by generation). */
	if (gen && !device_is_removed(dev) && vmm->exec &&
	    __atomic_load_n(&vm->active, __ATOMIC_ACQUIRE))
		exec_tlb_flush(vmm->exec, root, gen);
	return n;
}

int vm_svm_unmap(struct ugpu_vm *vm, uint64_t va, uint64_t len)
{
	struct bo_mgr *m;
	struct list_link gone;
	int n;

	if (vm_is_remote(vm)) {
		n = vm_remote_svm_unmap(vm, va, len);
		return n < 0 ? 0 : n; /* the daemon or the VM went: nothing maps there */
	}
	m = vm->dev->bo_mgr;
	list_init(&gone);
	pthread_mutex_lock(&vm->lock);
	bo_mgr_lock(m);
	n = svm_unmap_locked(vm, va, len, &gone);
	pthread_mutex_unlock(&m->lock);
	pthread_mutex_unlock(&vm->lock);
	vm_binds_free(&gone);
	return n;
}

int vm_svm_unmap_evicting(struct ugpu_vm *vm, uint64_t va, uint64_t len, bool idle_only)
{
	struct list_link gone;
	int n;

	if (pthread_mutex_trylock(&vm->lock))
		return -EBUSY;
	/* the manager lock held: 0 stays 0 until it is let go (mm/vm.h) */
	if (idle_only && __atomic_load_n(&vm->active, __ATOMIC_ACQUIRE)) {
		pthread_mutex_unlock(&vm->lock);
		return -EBUSY;
	}
	list_init(&gone);
	n = svm_unmap_locked(vm, va, len, &gone);
	pthread_mutex_unlock(&vm->lock);
	vm_binds_free(&gone); /* not the BOs' last references: the ranges hold theirs */
	return n;
}
