/* SPDX-License-Identifier: MIT */
/*
 * Private to mm/vm*.c: the bind list and page-table steps that the program's
 * binds (mm/vm.c), peer binds (mm/vm_peer.c) and shared virtual memory's maps
 * (mm/vm_svm.c) share. Each is described where it is defined (mm/vm.c);
 * the locks named are those of mm/vm.h: vm->lock, then the BO manager's
 * (m->lock), then the VM manager's.
 */
#ifndef UGPU_MM_VM_BIND_H
#define UGPU_MM_VM_BIND_H

#include <stdint.h>

#include "base/list.h"

struct bo_mgr;
struct ugpu_bo;
struct ugpu_vm;
struct vm_bind;
struct vm_mgr;

/* Start a bind of [@va, +@len): on 0 vm->lock and m->lock held, on an error
 * only vm->lock; *@at is where the bind goes in the sorted list. */
int vm_bind_begin(struct ugpu_vm *vm, struct bo_mgr *m, uint64_t va, uint64_t len,
		  struct list_link **at);
/* The first bind that ends after @va, or the list head. vm->lock. */
struct list_link *vm_bind_after(struct ugpu_vm *vm, uint64_t va);
/* Link @b before @at and write its entries. vm->lock and m->lock. */
void vm_bind_insert_locked(struct ugpu_vm *vm, struct list_link *at, struct vm_bind *b);
/* Clear @b's entries and give back the tables it empties. m->lock. */
void vm_bind_clear_locked(struct ugpu_vm *vm, struct vm_bind *b);
/* Zero @b's entries, tables still counting them. m->lock, device in D0. */
void vm_bind_zero_locked(struct ugpu_vm *vm, struct vm_bind *b);
/* A newer page-table generation of @vm (queues drop their TLB). m->lock. */
uint64_t vm_next_gen_locked(struct ugpu_vm *vm);
/* Free binds taken off their lists (linked by vm_link). No lock held. */
void vm_binds_free(struct list_link *gone);

/* mm/vm_peer.c: ugpu_vm_bind() of another device's BO. No lock held. */
int vm_bind_peer(struct ugpu_vm *vm, struct ugpu_bo *bo, uint64_t bo_offset, uint64_t va,
		 uint64_t bytes, uint32_t flags);
/* mm/vm_svm.c: shared virtual memory lets go of mirror VM @vm. No lock held. */
void vm_svm_gone(struct vm_mgr *vmm, struct ugpu_vm *vm);

#endif
