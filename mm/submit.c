/* SPDX-License-Identifier: MIT */
/*
 * Submission: queues of kernels on a VM, the scheduler that runs them on the
 * device's hardware exec queues, fences and results (include/ugpu/vm.h;
 * design: docs/vm.md; locks: mm/vm.h).
 *
 * A queue runs its kernels one at a time, in order. The scheduler keeps the
 * queues that have a kernel waiting and none running on vmm->runnable and
 * puts the first of them on a free hardware queue (sched_kick()), from the
 * submitting thread and from the exec engine's thread when a kernel ends; a
 * queue that just ran goes to the back, so hardware queues are shared
 * round-robin by any number of software queues and VMs.
 *
 * Every kernel holds a runtime-PM reference from its submission to its end,
 * so the device neither sleeps under it nor between two kernels of a busy
 * queue. Host suspend and removal stop the launches (exec_block()) and wait
 * for the running kernels; waiting kernels stay queued across a host suspend
 * and run after resume, and are cancelled by a removal.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <ugpu/fabric.h>

#include "engines/exec.h"
#include "mm/bo.h"
#include "mm/bo_rpm.h"
#include "mm/vm.h"
#include "mm/vm_remote.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/ownmem.h"
#include "src/device.h"
#include "src/rpm.h"

/* Bound for ugpu_queue_destroy() to wait for the running kernel. */
#define QUEUE_DESTROY_TIMEOUT_MS 10000

struct q_kernel {
	enum ugpu_kernel_op op;
	uint64_t va, bytes, value;
	uint64_t seqno;
};

struct q_result {
	int32_t status;
	uint32_t access;
	uint64_t sum, fault_va, run_ns;
};

/* An eventfd a caller waits on: ours is a dup, written and closed when the
 * fence completes (the caller closes its own whenever it likes). */
struct q_efd {
	struct q_efd *next;
	uint64_t fence;
	int fd;
};

/*
 * struct ugpu_queue. Everything below @cond is under vmm->lock.
 */
struct ugpu_queue {
	struct ugpu_vm *vm;
	struct vm_mgr *vmm;
	struct ugpu_device *dev;
	char name[32];
	pthread_cond_t cond; /* a kernel of this queue completed */

	struct list_link link; /* vmm->queues */
	struct list_link runnable; /* vmm->runnable */
	struct q_kernel *pend; /* ring of UGPU_QUEUE_DEPTH */
	uint32_t pend_head, pend_n;
	uint64_t submitted, completed;
	bool running;
	struct q_kernel run;
	uint32_t slot, launch; /* where it runs, and its LAUNCH tag there */
	bool faulted;
	int fault_status; /* what the fence says when it was aborted (-EFAULT) */
	uint64_t fault_va;
	uint32_t fault_access;
	struct q_result *res; /* UGPU_QUEUE_RESULTS, by seqno */
	struct q_efd *efds;
	bool destroying;
	bool zombie; /* destroy timed out: freed when its kernel ends */
	/* the devices whose p2p_users its running kernel raised (peer binds
	 * of its VM: vm_peer_enter_locked()); dropped when it ends */
	struct ugpu_device *peers[UGPU_MAX_PEERS];
	unsigned int npeers;
	uint32_t remote_handle; /* a ugpud client's queue (mm/vm_remote.h); read-only */
};

struct ugpu_queue *queue_remote_new(struct ugpu_vm *vm, uint32_t handle)
{
	struct ugpu_queue *q = calloc(1, sizeof(*q));

	if (!q)
		return NULL;
	q->vm = vm;
	q->dev = vm->dev;
	q->remote_handle = handle;
	__atomic_add_fetch(&vm->nqueues, 1, __ATOMIC_RELEASE); /* a remote VM's: atomic */
	return q;
}

void queue_remote_free(struct ugpu_queue *q)
{
	__atomic_sub_fetch(&q->vm->nqueues, 1, __ATOMIC_RELEASE);
	free(q);
}

uint32_t queue_remote_handle(const struct ugpu_queue *q)
{
	return q->remote_handle;
}

struct ugpu_vm *queue_vm(const struct ugpu_queue *q)
{
	return q->vm;
}

static const char *access_name(uint32_t a)
{
	return a == UGPU_ACCESS_WRITE ? "write" : a == UGPU_ACCESS_ATOMIC ? "atomic" : "read";
}

/*
 * @seqno (the next in order) completed with @r: its runtime-PM reference is
 * dropped first, so a caller that saw the fence complete finds the device
 * idle as far as this kernel goes (rpm_put() only arms the autosuspend
 * timer: it may be called under this lock). vmm->lock held.
 */
static void complete_locked(struct ugpu_queue *q, uint64_t seqno, const struct q_result *r)
{
	struct q_efd **pp = &q->efds;

	if (q->vmm->rpm)
		rpm_put(q->vmm->rpm);
	q->res[seqno % UGPU_QUEUE_RESULTS] = *r;
	q->completed = seqno;
	q->vmm->completed++;
	if (r->status == -ECANCELED)
		q->vmm->cancelled++;
	pthread_cond_broadcast(&q->cond);
	while (*pp) {
		struct q_efd *e = *pp;

		if (e->fence <= seqno) {
			uint64_t one = 1;

			if (write(e->fd, &one, sizeof(one)) < 0) {
				/* cannot fail: the counter is far from overflow */
			}
			close(e->fd);
			*pp = e->next;
			free(e);
		} else {
			pp = &e->next;
		}
	}
}

static struct q_kernel pend_pop(struct ugpu_queue *q)
{
	struct q_kernel k = q->pend[q->pend_head];

	q->pend_head = (q->pend_head + 1) % UGPU_QUEUE_DEPTH;
	q->pend_n--;
	return k;
}

/* Cancel what waits on @q (not what runs). Returns the completions.
 * vmm->lock held. */
static unsigned int cancel_pending_locked(struct ugpu_queue *q)
{
	struct q_result r = { .status = -ECANCELED };
	unsigned int n = 0;

	while (q->pend_n) {
		struct q_kernel k = pend_pop(q);

		complete_locked(q, k.seqno, &r);
		n++;
	}
	if (list_linked(&q->runnable))
		list_del(&q->runnable);
	return n;
}

static void queue_free(struct ugpu_queue *q)
{
	struct ugpu_device *dev = q->dev;

	while (q->efds) {
		struct q_efd *e = q->efds;

		q->efds = e->next;
		close(e->fd);
		free(e);
	}
	pthread_cond_destroy(&q->cond);
	free(q->pend);
	free(q->res);
	free(q);
	device_put(dev);
}

/* ---- the scheduler ----------------------------------------------------------------- */

void vm_sched_release_held(struct ugpu_device *dev)
{
	struct vm_mgr *vmm = dev->vm_mgr;
	bool any;

	if (!vmm)
		return;
	pthread_mutex_lock(&vmm->lock);
	any = !list_empty(&vmm->held);
	while (!list_empty(&vmm->held)) {
		struct list_link *l = list_first(&vmm->held);

		list_del(l);
		list_add_tail(&vmm->runnable, l);
	}
	pthread_mutex_unlock(&vmm->lock);
	if (any)
		sched_kick(vmm);
}

void sched_kick(struct vm_mgr *vmm)
{
	struct bo_mgr *m = vmm->dev->bo_mgr;
	bool any;

	pthread_mutex_lock(&vmm->lock);
	any = vmm->attached && !list_empty(&vmm->runnable);
	pthread_mutex_unlock(&vmm->lock);
	if (!any)
		return;
	/* The manager lock: no BO moves between the revalidation of the
	 * VM's PTEs and the launch (mm/vm.h). */
	bo_mgr_lock(m);
	pthread_mutex_lock(&vmm->lock);
	/*
	 * Host-suspended: the device sleeps (VRAM must not be touched) and
	 * resume puts the page tables back from their backups, so PTEs
	 * rewritten now would be lost while their binds count as current.
	 * Nothing could launch anyway (exec_hold()); resume kicks again.
	 */
	while (vmm->attached && !list_empty(&vmm->runnable) && m->pm_state != BO_PM_SUSPENDED) {
		struct ugpu_queue *q = list_entry(list_first(&vmm->runnable), struct ugpu_queue,
						  runnable);
		struct q_kernel *k = &q->pend[q->pend_head];
		struct ugpu_vm *vm = q->vm;
		struct exec_launch l;
		uint32_t slot, launch;
		int ret;

		if (vm->dead) {
			cancel_pending_locked(q);
			continue;
		}
		/* A peer its binds read in place is host-suspended (its VRAM
		 * is off): the queue waits for that peer's resume. */
		if (!vm_peer_enter_locked(vm, q->peers, UGPU_MAX_PEERS, &q->npeers)) {
			list_del(&q->runnable);
			list_add_tail(&vmm->held, &q->runnable);
			vmm->peer_held++;
			continue;
		}
		vm_revalidate_locked(vm);
		/* Between prepare and suspend (UGPU_PM_KERNELS_RUN): the
		 * backups of what it may write are stale. */
		if (m->pm_state == BO_PM_PREPARED)
			vm_launch_writes_locked(vm);
		l = (struct exec_launch){ .op = (enum exec_op)k->op, .va = k->va, .bytes = k->bytes,
					  .value = k->value, .root = vm_root_offset(vm),
					  .pt_gen = vm->pt_gen, .tag = q };
		ret = exec_launch(vmm->exec, &l, &slot, &launch);
		if (ret) {
			vm_peer_leave(q->peers, q->npeers);
			q->npeers = 0;
		}
		if (ret == -EBUSY || ret == -EAGAIN)
			break; /* every hardware queue busy, or launches stopped */
		list_del(&q->runnable);
		if (ret) {
			struct q_result r = { .status = -EIO };
			struct q_kernel dead = pend_pop(q);

			complete_locked(q, dead.seqno, &r);
			if (q->pend_n)
				list_add_tail(&vmm->runnable, &q->runnable);
			continue;
		}
		q->run = pend_pop(q);
		q->running = true;
		q->slot = slot;
		q->launch = launch;
		q->faulted = false;
		q->fault_status = 0;
		if (slot < 64) {
			vmm->on_slot[slot] = q;
			vmm->slot_launch[slot] = launch;
		}
		__atomic_add_fetch(&vm->active, 1, __ATOMIC_ACQ_REL);
	}
	pthread_mutex_unlock(&vmm->lock);
	pthread_mutex_unlock(&m->lock);
}

/* A kernel ended (the exec engine's thread). */
static void on_ended(void *arg, const struct exec_end *e)
{
	struct vm_mgr *vmm = arg;
	struct ugpu_queue *q = e->tag;
	struct q_result r = { .run_ns = e->run_ns };
	bool free_q = false;

	pthread_mutex_lock(&vmm->lock);
	if (q->running && q->slot == e->slot) {
		switch (e->how) {
		case EXEC_END_DONE:
			r.status = 0;
			if (q->run.op == UGPU_KERNEL_READ_SUM)
				r.sum = e->result;
			break;
		case EXEC_END_ABORTED:
			r.status = q->faulted ? (q->fault_status ? q->fault_status : -EFAULT) : -EIO;
			break;
		case EXEC_END_ERROR:
			r.status = -EIO;
			break;
		default:
			r.status = -ECANCELED;
			break;
		}
		if (q->faulted) {
			r.fault_va = q->fault_va;
			r.access = q->fault_access;
		}
		q->running = false;
		if (q->slot < 64 && vmm->on_slot[q->slot] == q)
			vmm->on_slot[q->slot] = NULL;
		__atomic_sub_fetch(&q->vm->active, 1, __ATOMIC_ACQ_REL);
		vm_peer_leave(q->peers, q->npeers);
		q->npeers = 0;
		complete_locked(q, q->run.seqno, &r);
		if (q->zombie) {
			/* Its destroy gave up waiting: nothing else may run. */
			cancel_pending_locked(q);
			list_del(&q->link);
			q->vm->nqueues--;
			free_q = true;
		} else if (q->pend_n && !q->destroying && !list_linked(&q->runnable)) {
			list_add_tail(&vmm->runnable, &q->runnable);
		}
	}
	pthread_mutex_unlock(&vmm->lock);
	if (free_q)
		queue_free(q);
}

/* Record the first reason @q's kernel is aborted. vmm->lock held. */
static void fault_note_locked(struct vm_mgr *vmm, struct ugpu_queue *q, uint64_t va, uint32_t access,
			      int status, const char *why)
{
	if (q->faulted)
		return;
	q->faulted = true;
	q->fault_status = status;
	q->fault_va = va;
	q->fault_access = access;
	vmm->faulted++;
	log_warn(vmm->dev->ctx, "%s: queue '%s' (VM '%s'): kernel %" PRIu64 " faulted: %s at GPU VA 0x%" PRIx64 " (%s): aborted",
		 vmm->dev->name, q->name, q->vm->name, q->run.seqno, access_name(access), va, why);
}

/* Is @va (a fault of @vm) shared virtual memory's to serve? */
static bool svm_serves(const struct vm_mgr *vmm, const struct ugpu_vm *vm, uint64_t va)
{
	return (vmm->svm || vm->fwd) && (vm->flags & UGPU_VM_MIRROR) && va >= vm->mirror_start &&
	       va - vm->mirror_start < vm->mirror_size;
}

/*
 * Faults of running kernels (the exec engine's thread). In a mirror VM's
 * span they go to shared virtual memory (svm/), which answers each with
 * vm_fault_done(). Elsewhere nothing is bound, or a write hit a read-only
 * bind: the kernel is aborted, and the first fault is what its fence
 * reports.
 */
static void on_faults(void *arg, const struct exec_fault *f, size_t n)
{
	struct vm_mgr *vmm = arg;
	struct vm_fault *sv = NULL;
	uint64_t abort = 0;
	size_t i, nsv = 0;

	pthread_mutex_lock(&vmm->lock);
	for (i = 0; i < n; i++) {
		struct ugpu_queue *q = f[i].tag;

		if (!q->running || q->slot != f[i].slot)
			continue;
		if (svm_serves(vmm, q->vm, f[i].va)) {
			if (!sv)
				sv = calloc(n, sizeof(*sv));
			if (sv) {
				sv[nsv++] = (struct vm_fault){ .vm = q->vm, .vmm = vmm, .slot = f[i].slot,
							       .launch = f[i].launch, .va = f[i].va,
							       .access = (enum ugpu_access)f[i].access };
				continue;
			}
		}
		fault_note_locked(vmm, q, f[i].va, (uint32_t)f[i].access, -EFAULT,
				  f[i].access == EXEC_ACCESS_READ ? "nothing bound there"
								  : "nothing bound there, or bound read-only");
		abort |= 1ull << f[i].slot;
	}
	pthread_mutex_unlock(&vmm->lock);
	if (abort)
		exec_fault_reply(vmm->exec, 0, abort);
	if (nsv) {
		void *sarg;
		const struct vm_svm_ops *sops;
		size_t k = 0;

		/* forwarded VMs' faults (ugpud's clients) go to their own
		 * ops, the others together to shared virtual memory */
		for (i = 0; i < nsv; i++) {
			if (sv[i].vm->fwd)
				sv[i].vm->fwd->faults(sv[i].vm->fwd_arg, &sv[i], 1);
			else
				sv[k++] = sv[i];
		}
		nsv = k;
		sops = nsv ? vm_svm_enter(vmm, &sarg) : NULL;
		if (sops) {
			sops->faults(sarg, sv, nsv);
			vm_svm_leave(vmm);
		} else {
			for (i = 0; i < nsv; i++) /* svm let go meanwhile */
				vm_fault_done(&sv[i], -EFAULT);
		}
	}
	free(sv);
}

static bool same_kernel(const struct vm_fault *a, const struct vm_fault *b)
{
	return a->vmm == b->vmm && a->slot == b->slot && a->launch == b->launch;
}

void vm_faults_done(const struct vm_fault *f, const int *status, size_t n)
{
	if (n && vm_is_remote(f[0].vm)) { /* ugpud's, handed over (mm/vm_remote.c) */
		vm_remote_faults_done(f, status, n);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		struct vm_mgr *vmm = f[i].vmm;
		struct exec_engine *x;
		bool seen = false, current;
		int st = 0;

		for (size_t j = 0; j < i && !seen; j++)
			seen = same_kernel(&f[j], &f[i]);
		if (seen)
			continue; /* answered with the first of its kernel's faults */
		pthread_mutex_lock(&vmm->lock);
		current = f[i].slot < 64 && vmm->on_slot[f[i].slot] &&
			  vmm->slot_launch[f[i].slot] == f[i].launch;
		for (size_t k = i; k < n; k++) {
			if (!status[k] || !same_kernel(&f[k], &f[i]))
				continue;
			if (!st)
				st = status[k];
			if (current)
				fault_note_locked(vmm, vmm->on_slot[f[k].slot], f[k].va,
						  (uint32_t)f[k].access, status[k],
						  status[k] == -EACCES ? "the memory's policy refuses this access"
								       : "no memory there");
		}
		x = vmm->attached ? vmm->exec : NULL;
		/* One answer per kernel: a replay (one TLB drop) for all its
		 * faults, or the abort. Under the lock: the engine outlives it
		 * (vm-exec down). */
		if (current && x)
			exec_fault_resolve(x, f[i].slot, f[i].launch, st == 0);
		pthread_mutex_unlock(&vmm->lock);
	}
}

void vm_fault_done(const struct vm_fault *f, int status)
{
	vm_faults_done(f, &status, 1);
}

static void on_kick(void *arg)
{
	sched_kick(arg);
}

/* ---- the public API ------------------------------------------------------------------ */

UGPU_API int ugpu_queue_create(struct ugpu_vm *vm, const struct ugpu_queue_opts *opts,
			       struct ugpu_queue **out)
{
	struct ugpu_queue_opts o = { .size = sizeof(o) };
	struct vm_mgr *vmm;
	struct ugpu_queue *q;
	pthread_condattr_t ca;
	int ret = 0;

	ownmem_thread_note(); /* its stack is the driver's too now (base/ownmem.h) */

	if (!vm || !out || (opts && opts->size < sizeof(opts->size)))
		return -EINVAL;
	*out = NULL;
	if (vm_is_remote(vm))
		return vm_remote_queue_create(vm, opts, out);
	if (opts) {
		memcpy(&o, opts, opts->size < sizeof(o) ? opts->size : sizeof(o));
		if (opts->size < offsetof(struct ugpu_queue_opts, name) + sizeof(o.name))
			o.name = NULL;
	}
	vmm = vm->vmm;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->pend = calloc(UGPU_QUEUE_DEPTH, sizeof(*q->pend));
	q->res = calloc(UGPU_QUEUE_RESULTS, sizeof(*q->res));
	if (!q->pend || !q->res) {
		free(q->pend);
		free(q->res);
		free(q);
		return -ENOMEM;
	}
	q->vm = vm;
	q->vmm = vmm;
	q->dev = vm->dev;
	snprintf(q->name, sizeof(q->name), "%s", o.name ? o.name : "queue");
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&q->cond, &ca);
	pthread_condattr_destroy(&ca);
	list_init(&q->runnable);
	pthread_mutex_lock(&vmm->lock);
	if (vmm->closed || !vmm->attached || vm->dead)
		ret = -ENODEV;
	else {
		list_add_tail(&vmm->queues, &q->link);
		vm->nqueues++;
	}
	pthread_mutex_unlock(&vmm->lock);
	if (ret) {
		pthread_cond_destroy(&q->cond);
		free(q->pend);
		free(q->res);
		free(q);
		return ret;
	}
	device_get(q->dev);
	*out = q;
	return 0;
}

UGPU_API int ugpu_queue_destroy(struct ugpu_queue *q)
{
	struct vm_mgr *vmm;
	struct timespec dl;

	if (!q)
		return 0;
	if (device_is_remote(q->dev))
		return vm_remote_queue_destroy(q);
	vmm = q->vmm;
	dl = monotonic_deadline_after_ms(QUEUE_DESTROY_TIMEOUT_MS);
	pthread_mutex_lock(&vmm->lock);
	/* Nothing more starts; what waits is cancelled after the running
	 * kernel ended: fences complete in order (completing a later one
	 * first would complete the running kernel's fence, and signal its
	 * eventfds, while it still runs). */
	q->destroying = true;
	if (list_linked(&q->runnable))
		list_del(&q->runnable);
	while (q->running)
		if (pthread_cond_timedwait(&q->cond, &vmm->lock, &dl) == ETIMEDOUT)
			break;
	if (q->running) {
		q->zombie = true;
		pthread_mutex_unlock(&vmm->lock);
		log_err(q->dev->ctx, "%s: queue '%s': its kernel still runs after %d ms; the queue goes when it ends",
			q->dev->name, q->name, QUEUE_DESTROY_TIMEOUT_MS);
		return -ETIMEDOUT; /* on_ended() cancels the rest */
	}
	cancel_pending_locked(q);
	list_del(&q->link);
	q->vm->nqueues--;
	pthread_mutex_unlock(&vmm->lock);
	queue_free(q);
	return 0;
}

static int kernel_check(struct ugpu_device *dev, const struct ugpu_kernel *k)
{
	if (k->size < offsetof(struct ugpu_kernel, value) + sizeof(k->value)) {
		log_err(dev->ctx, "ugpu_queue_submit: kernel.size %zu does not reach the value field",
			k->size);
		return -EINVAL;
	}
	if (k->op != UGPU_KERNEL_READ_SUM && k->op != UGPU_KERNEL_WRITE &&
	    k->op != UGPU_KERNEL_ATOMIC_ADD) {
		log_err(dev->ctx, "ugpu_queue_submit: unknown kernel op %d", (int)k->op);
		return -EINVAL;
	}
	if ((k->va | k->bytes) & 7 || k->va >= (1ull << UGPU_VM_VA_BITS) ||
	    k->bytes > (1ull << UGPU_VM_VA_BITS) - k->va) {
		log_err(dev->ctx, "ugpu_queue_submit: [0x%" PRIx64 ", +0x%" PRIx64 ") is not 8-byte aligned or past the VA range",
			k->va, k->bytes);
		return -EINVAL;
	}
	return 0;
}

UGPU_API int ugpu_queue_submit(struct ugpu_queue *q, const struct ugpu_kernel *k, uint64_t *fence)
{
	struct vm_mgr *vmm;
	struct rpm *rpm;
	int ret;

	ownmem_thread_note();
	if (!q || !k || !fence)
		return -EINVAL;
	if (device_is_remote(q->dev))
		return vm_remote_submit(q, k, fence);
	ret = kernel_check(q->dev, k);
	if (ret)
		return ret;
	vmm = q->vmm;
	if ((q->vm->flags & UGPU_VM_MIRROR) && !q->vm->fwd) {
		void *sarg;
		const struct vm_svm_ops *sops = vm_svm_enter(vmm, &sarg);

		if (sops) {
			sops->sync(sarg); /* frees and moves before it count */
			vm_svm_leave(vmm);
		}
	}
	/* The kernel's runtime-PM reference, taken with no lock held: it may
	 * wake the device (the resume hooks take the BO manager lock). */
	ret = rpm_user_enter(q->dev, &rpm);
	if (ret)
		return -ENODEV;
	ret = bo_rpm_get(q->dev, rpm); /* no kernel writes VRAM behind kept backups */
	if (ret) {
		rpm_user_leave(rpm);
		return ret;
	}
	pthread_mutex_lock(&vmm->lock);
	if (vmm->closed || !vmm->attached || q->vm->dead || rpm != vmm->rpm) {
		ret = -ENODEV;
	} else if (q->destroying) {
		ret = -EINVAL;
	} else if (q->pend_n + (q->running ? 1u : 0u) >= UGPU_QUEUE_DEPTH) {
		ret = -EAGAIN;
	} else {
		struct q_kernel *n = &q->pend[(q->pend_head + q->pend_n) % UGPU_QUEUE_DEPTH];

		*n = (struct q_kernel){ .op = k->op, .va = k->va, .bytes = k->bytes,
					.value = k->value, .seqno = ++q->submitted };
		q->pend_n++;
		*fence = n->seqno;
		vmm->submitted++;
		if (!q->running && !list_linked(&q->runnable))
			list_add_tail(&vmm->runnable, &q->runnable);
	}
	pthread_mutex_unlock(&vmm->lock);
	if (ret)
		rpm_put(rpm); /* nothing queued: nothing will put it */
	rpm_user_leave(rpm);
	if (!ret)
		sched_kick(vmm);
	return ret;
}

static void result_out(const struct q_result *r, struct ugpu_kernel_result *res)
{
	struct ugpu_kernel_result o = {
		.size = res->size,
		.status = r->status,
		.sum = r->sum,
		.fault_va = r->fault_va,
		.fault_access = (enum ugpu_access)r->access,
		.run_ns = r->run_ns,
	};

	memcpy(res, &o, res->size < sizeof(o) ? res->size : sizeof(o));
}

UGPU_API int ugpu_fence_wait(struct ugpu_queue *q, uint64_t fence, int timeout_ms,
			     struct ugpu_kernel_result *res)
{
	struct vm_mgr *vmm;
	struct timespec dl;
	int ret = 0;

	ownmem_thread_note();
	if (!q || !fence || timeout_ms < 0 || (res && res->size < sizeof(res->size)))
		return -EINVAL;
	if (device_is_remote(q->dev))
		return vm_remote_fence_wait(q, fence, timeout_ms, res);
	vmm = q->vmm;
	dl = monotonic_deadline_after_ms((uint64_t)timeout_ms);
	pthread_mutex_lock(&vmm->lock);
	if (fence > q->submitted) {
		pthread_mutex_unlock(&vmm->lock);
		return -EINVAL;
	}
	while (q->completed < fence && !ret) {
		if (!timeout_ms) {
			ret = -EAGAIN;
			break;
		}
		if (pthread_cond_timedwait(&q->cond, &vmm->lock, &dl) == ETIMEDOUT &&
		    q->completed < fence)
			ret = -ETIMEDOUT;
	}
	if (!ret && q->completed - fence >= UGPU_QUEUE_RESULTS)
		ret = -ESTALE;
	else if (!ret && res)
		result_out(&q->res[fence % UGPU_QUEUE_RESULTS], res);
	pthread_mutex_unlock(&vmm->lock);
	return ret;
}

UGPU_API int ugpu_fence_eventfd(struct ugpu_queue *q, uint64_t fence, int *fd)
{
	struct vm_mgr *vmm;
	struct q_efd *e;
	int efd, ret = 0;

	if (!q || !fence || !fd)
		return -EINVAL;
	if (device_is_remote(q->dev))
		return vm_remote_fence_eventfd(q, fence, fd); /* the daemon's, handed over */
	vmm = q->vmm;
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (efd < 0)
		return -errno;
	e = calloc(1, sizeof(*e));
	if (!e) {
		close(efd);
		return -ENOMEM;
	}
	e->fence = fence;
	e->fd = -1;
	pthread_mutex_lock(&vmm->lock);
	if (fence > q->submitted) {
		ret = -EINVAL;
	} else if (q->completed >= fence) {
		uint64_t one = 1;

		if (write(efd, &one, sizeof(one)) < 0)
			ret = -errno;
	} else {
		e->fd = fcntl(efd, F_DUPFD_CLOEXEC, 0);
		if (e->fd < 0) {
			ret = -errno;
		} else {
			e->next = q->efds;
			q->efds = e;
			e = NULL;
		}
	}
	pthread_mutex_unlock(&vmm->lock);
	free(e);
	if (ret) {
		close(efd);
		return ret;
	}
	*fd = efd;
	return 0;
}

UGPU_API int ugpu_queue_query(struct ugpu_queue *q, struct ugpu_queue_info *info)
{
	struct ugpu_queue_info i = { .size = sizeof(i) };

	if (!q || !info || info->size < sizeof(info->size))
		return -EINVAL;
	if (device_is_remote(q->dev))
		return vm_remote_queue_query(q, info);
	pthread_mutex_lock(&q->vmm->lock);
	i.submitted = q->submitted;
	i.completed = q->completed;
	i.waiting = q->pend_n;
	i.running = q->running;
	pthread_mutex_unlock(&q->vmm->lock);
	i.size = info->size;
	memcpy(info, &i, info->size < sizeof(i) ? info->size : sizeof(i));
	return 0;
}

/* ---- attach to the device's exec engine ------------------------------------------- */

static int vm_exec_up(struct ugpu_device *dev, const char *uri)
{
	struct vm_mgr *vmm = dev->vm_mgr;
	struct exec_client c = {
		.ended = on_ended,
		.faults = on_faults,
		.kick = on_kick,
		.arg = vmm,
	};

	(void)uri;
	if (!vmm || !dev->exec || !dev->rpm)
		return 0; /* no exec queues: VMs answer -EOPNOTSUPP */
	rpm_ref(dev->rpm);
	pthread_mutex_lock(&vmm->lock);
	vmm->exec = dev->exec;
	vmm->rpm = dev->rpm;
	vmm->attached = true;
	pthread_mutex_unlock(&vmm->lock);
	__atomic_store_n(&vmm->no_atomic, exec_has_no_atomic(dev->exec), __ATOMIC_RELAXED);
	exec_set_client(dev->exec, &c);
	return 0;
}

/* The device is going (removal or close): every kernel not ended is
 * cancelled, every VM loses its page tables. The removal stopped the
 * launches and waited for running kernels before (src/unplug.c). */
static void vm_exec_down(struct ugpu_device *dev)
{
	struct vm_mgr *vmm = dev->vm_mgr;
	struct q_result cancelled = { .status = -ECANCELED };
	struct list_link zombies;
	unsigned int ncancelled = 0;
	struct rpm *rpm;

	if (!vmm || !vmm->exec)
		return;
	exec_set_client(vmm->exec, NULL); /* no callback runs from here on */
	list_init(&zombies);
	pthread_mutex_lock(&vmm->lock);
	vmm->attached = false;
	rpm = vmm->rpm;
	list_for_each_safe(l, &vmm->queues) {
		struct ugpu_queue *q = list_entry(l, struct ugpu_queue, link);

		if (q->running) {
			q->running = false;
			if (q->slot < 64 && vmm->on_slot[q->slot] == q)
				vmm->on_slot[q->slot] = NULL;
			__atomic_sub_fetch(&q->vm->active, 1, __ATOMIC_ACQ_REL);
			vm_peer_leave(q->peers, q->npeers);
			q->npeers = 0;
			complete_locked(q, q->run.seqno, &cancelled);
			ncancelled++;
		}
		ncancelled += cancel_pending_locked(q);
		if (q->zombie) {
			list_del(&q->link);
			q->vm->nqueues--;
			list_add_tail(&zombies, &q->link);
		}
	}
	vmm->exec = NULL;
	vmm->rpm = NULL;
	pthread_mutex_unlock(&vmm->lock);
	if (ncancelled)
		log_warn(dev->ctx, "%s: %u kernels cancelled: the device is going", dev->name, ncancelled);
	list_for_each_safe(l, &zombies)
		queue_free(list_entry(l, struct ugpu_queue, link));
	vm_release_tables_all(vmm);
	rpm_unref(rpm);
}

static struct device_component vm_exec_component = {
	.name = "vm-exec",
	.order = DEVICE_STEP_VM_EXEC,
	.life = DEVICE_LIFE_DEVICE,
	.up = vm_exec_up,
	.down = vm_exec_down,
};
DEVICE_COMPONENT(vm_exec_component)
