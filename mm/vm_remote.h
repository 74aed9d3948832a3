/* SPDX-License-Identifier: MIT */
/*
 * GPU VMs, queues and kernels of a device served by ugpud (mm layer): the
 * public calls of mm/vm.c and mm/submit.c hand a remote device's objects
 * here. Each is a request; the objects live in the daemon, named by handles
 * of this connection (docs/daemon.md). A fence wait is answered by the
 * daemon when the fence's eventfd fires (its loop watches it through
 * io_uring) or after a slice of UGPUD_WAIT_SLICE_MS; ugpu_fence_wait() asks
 * again until the kernel ends or the caller's timeout passes.
 */
#ifndef UGPU_MM_VM_REMOTE_H
#define UGPU_MM_VM_REMOTE_H

#include <pthread.h>
#include <stdbool.h>

#include <ugpu/vm.h>

#include "mm/vm.h"
#include "src/remote.h"

static inline bool vm_is_remote(const struct ugpu_vm *vm)
{
	return device_is_remote(vm->dev);
}

int vm_remote_create(struct ugpu_device *dev, const struct ugpu_vm_opts *opts,
		     struct ugpu_vm **out);
int vm_remote_destroy(struct ugpu_vm *vm);
int vm_remote_bind(struct ugpu_vm *vm, struct ugpu_bo *bo, uint64_t bo_offset, uint64_t va,
		   uint64_t bytes, uint32_t flags);
int vm_remote_unbind(struct ugpu_vm *vm, uint64_t va, uint64_t bytes);
int vm_remote_query(struct ugpu_vm *vm, struct ugpu_vm_info *info);
int vm_remote_queue_create(struct ugpu_vm *vm, const struct ugpu_queue_opts *opts,
			   struct ugpu_queue **out);
int vm_remote_queue_destroy(struct ugpu_queue *q);
int vm_remote_submit(struct ugpu_queue *q, const struct ugpu_kernel *k, uint64_t *fence);
/* ugpu_fence_eventfd() through the daemon: its eventfd for the fence. */
int vm_remote_fence_eventfd(struct ugpu_queue *q, uint64_t fence, int *fd);
int vm_remote_fence_wait(struct ugpu_queue *q, uint64_t fence, int timeout_ms,
			 struct ugpu_kernel_result *res);
int vm_remote_queue_query(struct ugpu_queue *q, struct ugpu_queue_info *info);

/*
 * Mirror VMs through ugpud (docs/daemon.md, "SVM for clients"): shared
 * virtual memory (svm/, a layer above) registers these at load.
 * @attach: a mirror VM of remote @dev is being made: @dev joins the
 *          process's shared virtual memory (once; again is a no-op);
 *          *@arg gets what @ops take. 0 or -errno.
 * @ops:    as for a local device's mirror VMs (mm/vm.h); @faults gets the
 *          faults the daemon handed over (struct vm_fault with @vmm NULL),
 *          answered with vm_faults_done() as usual.
 */
struct vm_remote_svm_hooks {
	int (*attach)(struct ugpu_device *dev, void **arg);
	const struct vm_svm_ops *ops;
};
void vm_remote_svm_register(const struct vm_remote_svm_hooks *h);

/*
 * struct vm_remote_svm - a remote mirror VM's side here.
 * @arg: the hooks' arg for it. @out: faults handed to @ops->faults and not
 * answered yet; the fence wait that fetched them waits on @cond until they
 * are (the answering thread needs the connection it would hold). @lock
 * guards @out; a leaf.
 */
struct vm_remote_svm {
	void *arg;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int out;
	unsigned int fetching; /* fetches of its faults in flight; under @lock */
	/* the thread that serves the VM's faults when they come
	 * (UGPUD_SVM_FAULT_FD), or NULL (an older daemon: fence waits alone
	 * serve them; or stopped); see vm_remote.c's struct poller. Under
	 * vm_remote.c's pollers_lock. */
	struct poller *poller;
};

/* Stop the fault pollers of remote @dev's mirror VMs (its close: shared
 * virtual memory lets go of the device next). No lock held. */
void vm_remote_pollers_stop(struct ugpu_device *dev);

/* The answers to @n faults of remote mirror VM @f[0].vm (vm_faults_done()
 * hands them here): UGPUD_SVM_FAULT_DONE. */
void vm_remote_faults_done(const struct vm_fault *f, const int *status, size_t n);
/* vm_svm_map() / vm_svm_unmap() of a remote mirror VM: UGPUD_SVM_MAP of
 * @bo (the daemon moves it to VRAM and maps it; no @iova: memory in
 * place is not mapped through ugpud, -EOPNOTSUPP) and UGPUD_SVM_UNMAP.
 * The unmap returns the number of maps removed, or -errno. */
int vm_remote_svm_map(struct ugpu_vm *vm, uint64_t va, uint64_t len, struct ugpu_bo *bo,
		      unsigned int flags);
int vm_remote_svm_unmap(struct ugpu_vm *vm, uint64_t va, uint64_t len);
/* ugpu_vm_prefetch() of remote mirror VM @vm (span checked): the hooks'
 * @ops->prefetch on the caller's thread, as for a local device; its moves
 * are the fault path's requests. -ENODEV once the device is closed. */
int vm_remote_prefetch(struct ugpu_vm *vm, uint64_t va, uint64_t len, bool to_vram);

/* mm/submit.c keeps struct ugpu_queue to itself: a remote queue is made,
 * read and freed through these. */
struct ugpu_queue *queue_remote_new(struct ugpu_vm *vm, uint32_t handle);
void queue_remote_free(struct ugpu_queue *q);
uint32_t queue_remote_handle(const struct ugpu_queue *q);
struct ugpu_vm *queue_vm(const struct ugpu_queue *q);

#endif
