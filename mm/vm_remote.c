/* SPDX-License-Identifier: MIT */
/*
 * GPU VMs, queues and kernels of a device served by ugpud (see vm_remote.h).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/ownmem.h"
#include "mm/bo.h"
#include "mm/bo_remote.h"
#include "mm/vm_remote.h"
#include "src/ugpud_proto.h"

/* The hooks of shared virtual memory (svm/ registers them at load); written
 * once before main() runs, read-only afterwards. */
static const struct vm_remote_svm_hooks *svm_hooks;

void vm_remote_svm_register(const struct vm_remote_svm_hooks *h)
{
	svm_hooks = h;
}

static int obj_call(struct ugpu_device *dev, uint16_t op, uint32_t handle);
static int svm_serve_faults(struct ugpu_vm *vm, uint64_t deadline);

/*
 * struct poller - serves a remote mirror VM's GPU faults when they come,
 * so a kernel does not wait for its program to enter a fence wait: a
 * thread polls the VM's fault eventfd (a duplicate of the daemon's,
 * UGPUD_SVM_FAULT_FD; never read here: the daemon resets it at each
 * fetch) and fetches and serves them as a fence wait does. @stop_fd ends
 * it. Listed on @pollers (under @pollers_lock) from its start until one
 * stop takes it off: the VM's destroy or its device's close, whichever
 * comes first, joins it.
 */
struct poller {
	struct list_link link;
	struct ugpu_vm *vm;
	int fault_fd, stop_fd;
	pthread_t thread;
};

static pthread_mutex_t pollers_lock = PTHREAD_MUTEX_INITIALIZER;
static struct list_link pollers = LIST_HEAD_INIT(pollers);

static void *poller_main(void *arg)
{
	struct poller *p = arg;

	ownmem_thread_note(); /* serves SVM faults on this thread (base/ownmem.h) */
	for (;;) {
		struct pollfd fds[2] = { { .fd = p->fault_fd, .events = POLLIN },
					 { .fd = p->stop_fd, .events = POLLIN } };

		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (fds[1].revents || (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)))
			break;
		/* the answers waited for at most as long as a fence wait's
		 * slice is: the stop waits no longer for this */
		if ((fds[0].revents & POLLIN) &&
		    svm_serve_faults(p->vm, now_ns() + 2000ull * 1000000ull) < 0)
			break; /* the daemon went: nothing comes any more */
	}
	return NULL;
}

/* Start @vm's poller on @fault_fd (taken over, closed on failure). */
static void poller_start(struct ugpu_vm *vm, int fault_fd)
{
	struct poller *p = calloc(1, sizeof(*p));

	if (p) {
		p->vm = vm;
		p->fault_fd = fault_fd;
		p->stop_fd = eventfd(0, EFD_CLOEXEC);
	}
	if (!p || p->stop_fd < 0 || pthread_create(&p->thread, NULL, poller_main, p)) {
		/* fence waits serve the faults alone, as with an older daemon */
		if (p && p->stop_fd >= 0)
			close(p->stop_fd);
		free(p);
		close(fault_fd);
		return;
	}
	pthread_mutex_lock(&pollers_lock);
	vm->svm_remote->poller = p;
	list_add_tail(&pollers, &p->link);
	pthread_mutex_unlock(&pollers_lock);
}

static void poller_join(struct poller *p)
{
	uint64_t one = 1;

	if (write(p->stop_fd, &one, sizeof(one)) < 0) {
		/* an eventfd at 0 takes 1 */
	}
	pthread_join(p->thread, NULL);
	close(p->stop_fd);
	close(p->fault_fd);
	free(p);
}

/* Stop @vm's poller, if it still has one (the device's close may have
 * taken it: then @poller is NULL). */
static void poller_stop(struct ugpu_vm *vm)
{
	struct poller *p = NULL;

	if (!vm->svm_remote)
		return;
	pthread_mutex_lock(&pollers_lock);
	p = vm->svm_remote->poller;
	if (p) {
		list_del(&p->link);
		vm->svm_remote->poller = NULL;
	}
	pthread_mutex_unlock(&pollers_lock);
	if (p)
		poller_join(p);
}

void vm_remote_pollers_stop(struct ugpu_device *dev)
{
	for (;;) {
		struct poller *p = NULL;

		pthread_mutex_lock(&pollers_lock);
		list_for_each(l, &pollers) {
			struct poller *q = list_entry(l, struct poller, link);

			if (q->vm->dev == dev) {
				p = q;
				list_del(&p->link);
				p->vm->svm_remote->poller = NULL;
				break;
			}
		}
		pthread_mutex_unlock(&pollers_lock);
		if (!p)
			return;
		poller_join(p);
	}
}

/* The mirror side of a new remote mirror VM: the process's shared virtual
 * memory takes the device on and checks its userfaultfd. */
static int svm_remote_new(struct ugpu_vm *vm)
{
	struct vm_remote_svm *rs;
	int ret;

	if (!svm_hooks)
		return -EOPNOTSUPP;
	rs = calloc(1, sizeof(*rs));
	if (!rs)
		return -ENOMEM;
	pthread_mutex_init(&rs->lock, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&rs->cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	ret = svm_hooks->attach(vm->dev, &rs->arg);
	if (!ret)
		ret = svm_hooks->ops->vm_new(rs->arg, vm);
	if (ret) {
		pthread_cond_destroy(&rs->cond);
		pthread_mutex_destroy(&rs->lock);
		free(rs);
		return ret;
	}
	vm->svm_remote = rs;
	return 0;
}

static void svm_remote_free(struct vm_remote_svm *rs)
{
	pthread_cond_destroy(&rs->cond);
	pthread_mutex_destroy(&rs->lock);
	free(rs);
}

int vm_remote_create(struct ugpu_device *dev, const struct ugpu_vm_opts *opts,
		     struct ugpu_vm **out)
{
	struct ugpud_svm_vm_create_req req = { 0 };
	struct ugpud_handle_rep rep;
	struct ugpu_vm_opts o = { .size = sizeof(o) };
	struct ugpu_vm *vm;
	size_t got = 0;
	int ret, fault_fd = -1;

	if (opts) {
		if (opts->size < offsetof(struct ugpu_vm_opts, flags) + sizeof(opts->flags))
			return -EINVAL;
		memcpy(&o, opts, opts->size < sizeof(o) ? opts->size : sizeof(o));
		if (opts->size < offsetof(struct ugpu_vm_opts, name) + sizeof(o.name))
			o.name = NULL;
		if (opts->size < offsetof(struct ugpu_vm_opts, mirror_size) + sizeof(o.mirror_size))
			o.mirror_start = o.mirror_size = 0;
	}
	req.flags = o.flags;
	req.mirror_start = o.mirror_start;
	req.mirror_size = o.mirror_size;
	snprintf(req.name, sizeof(req.name), "%s", o.name ? o.name : "vm");
	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return -ENOMEM;
	/* A mirror VM is its own request (added to version 1 later: an older
	 * daemon answers -EOPNOTSUPP); the daemon checks the span. */
	if (o.flags & UGPU_VM_MIRROR) {
		req.want = UGPUD_SVM_FAULT_FD;
		ret = remote_call_maybe_fd(dev, UGPUD_SVM_VM_CREATE, &req, sizeof(req), &rep,
					   sizeof(rep), &got, &fault_fd, NULL);
		/* (told it comes, but not here: no room for an fd in this
		 * process; fence waits serve the faults alone then) */
		if (!ret && (got != sizeof(rep) || rep.got & ~req.want ||
			     (fault_fd >= 0 && rep.got != UGPUD_SVM_FAULT_FD)))
			ret = -EPROTO;
		if (ret && fault_fd >= 0)
			close(fault_fd);
	} else
		ret = remote_get(dev, UGPUD_VM_CREATE, &req, offsetof(struct ugpud_svm_vm_create_req, mirror_start),
				 &rep, sizeof(rep));
	if (ret) {
		free(vm);
		return ret;
	}
	vm->dev = dev;
	vm->flags = o.flags;
	vm->mirror_start = o.mirror_start;
	vm->mirror_size = o.mirror_size;
	vm->remote_handle = rep.handle;
	snprintf(vm->name, sizeof(vm->name), "%s", req.name);
	if (o.flags & UGPU_VM_MIRROR) {
		ret = svm_remote_new(vm);
		if (ret) {
			if (fault_fd >= 0)
				close(fault_fd);
			(void)obj_call(dev, UGPUD_VM_DESTROY, rep.handle);
			free(vm);
			return ret;
		}
		if (fault_fd >= 0)
			poller_start(vm, fault_fd);
	}
	device_get(dev); /* the handle keeps the device object, as a BO's does */
	*out = vm;
	return 0;
}

static int obj_call(struct ugpu_device *dev, uint16_t op, uint32_t handle)
{
	struct ugpud_obj_req req = { .handle = handle };

	return remote_call(dev, op, &req, sizeof(req), NULL, 0, NULL, 0, NULL);
}

int vm_remote_destroy(struct ugpu_vm *vm)
{
	struct ugpu_device *dev = vm->dev;
	int ret;

	/* Shared virtual memory lets go of it first: its ranges' maps go
	 * (requests on the connection) while the VM is still there. After
	 * ugpu_device_close() it let go of the whole device already (and
	 * its state may be freed). */
	/* It has queues: the daemon refuses (-EBUSY); refused here first, so
	 * the VM keeps its poller and its shared virtual memory (review of
	 * 2026-12-07) */
	if (__atomic_load_n(&vm->nqueues, __ATOMIC_ACQUIRE))
		return -EBUSY;
	poller_stop(vm); /* no fault is served for it from here */
	if (vm->svm_remote && remote_is_open(dev))
		svm_hooks->ops->vm_gone(vm->svm_remote->arg, vm);
	ret = obj_call(dev, UGPUD_VM_DESTROY, vm->remote_handle);

	/* -EBUSY: it has queues, the VM stays; -ENODEV: the daemon let go
	 * of it already (closed or gone) */
	if (ret && ret != -ENODEV)
		return ret;
	if (vm->svm_remote)
		svm_remote_free(vm->svm_remote);
	free(vm);
	device_put(dev);
	return 0;
}

int vm_remote_bind(struct ugpu_vm *vm, struct ugpu_bo *bo, uint64_t bo_offset, uint64_t va,
		   uint64_t bytes, uint32_t flags)
{
	struct ugpud_vm_bind_req req = {
		.vm = vm->remote_handle,
		.bo = bo->remote_handle,
		.bo_offset = bo_offset,
		.va = va,
		.bytes = bytes,
		.flags = flags,
	};

	if (bo->dev != vm->dev)
		return -EINVAL; /* another connection's BO: its handle means nothing here */
	bo_remote_lease_drop(bo); /* a bind may move it */
	return remote_call(vm->dev, UGPUD_VM_BIND, &req, sizeof(req), NULL, 0, NULL, 0, NULL);
}

int vm_remote_unbind(struct ugpu_vm *vm, uint64_t va, uint64_t bytes)
{
	struct ugpud_vm_bind_req req = { .vm = vm->remote_handle, .va = va, .bytes = bytes };

	return remote_call(vm->dev, UGPUD_VM_UNBIND, &req, sizeof(req), NULL, 0, NULL, 0, NULL);
}

int vm_remote_query(struct ugpu_vm *vm, struct ugpu_vm_info *info)
{
	struct ugpud_obj_req req = { .handle = vm->remote_handle };
	struct ugpu_vm_info i = { 0 };
	struct ugpud_vm_info w;
	int ret = remote_get(vm->dev, UGPUD_VM_QUERY, &req, sizeof(req), &w, sizeof(w));

	if (ret)
		return ret;
	i.size = info->size;
	i.flags = w.flags;
	i.binds = w.binds;
	i.bound_bytes = w.bound_bytes;
	i.page_tables = w.page_tables;
	i.page_table_bytes = w.page_table_bytes;
	i.pt_gen = w.pt_gen;
	i.queues = w.queues;
	i.dead = w.dead;
	remote_fill(info, info->size, &i, sizeof(i));
	return 0;
}

int vm_remote_queue_create(struct ugpu_vm *vm, const struct ugpu_queue_opts *opts,
			   struct ugpu_queue **out)
{
	struct ugpud_queue_create_req req = { .vm = vm->remote_handle };
	struct ugpud_handle_rep rep;
	const char *name = NULL;
	struct ugpu_queue *q;
	int ret;

	if (opts && opts->size >= offsetof(struct ugpu_queue_opts, name) + sizeof(opts->name))
		name = opts->name;
	snprintf(req.name, sizeof(req.name), "%s", name ? name : "queue");
	ret = remote_get(vm->dev, UGPUD_QUEUE_CREATE, &req, sizeof(req), &rep, sizeof(rep));
	if (ret)
		return ret;
	q = queue_remote_new(vm, rep.handle);
	if (!q) {
		(void)obj_call(vm->dev, UGPUD_QUEUE_DESTROY, rep.handle);
		return -ENOMEM;
	}
	*out = q;
	return 0;
}

int vm_remote_queue_destroy(struct ugpu_queue *q)
{
	int ret = obj_call(queue_vm(q)->dev, UGPUD_QUEUE_DESTROY, queue_remote_handle(q));

	if (ret && ret != -ENODEV)
		return ret;
	queue_remote_free(q);
	return 0;
}

int vm_remote_submit(struct ugpu_queue *q, const struct ugpu_kernel *k, uint64_t *fence)
{
	struct ugpud_submit_req req = {
		.queue = queue_remote_handle(q),
		.op = (uint32_t)k->op,
		.va = k->va,
		.bytes = k->bytes,
		.value = k->value,
	};
	struct ugpud_fence_rep rep;
	int ret;

	if (k->size < offsetof(struct ugpu_kernel, value) + sizeof(k->value))
		return -EINVAL;
	/* frees and moves before it count (a closed device: -ENODEV below) */
	if (queue_vm(q)->svm_remote && remote_is_open(queue_vm(q)->dev))
		svm_hooks->ops->sync(queue_vm(q)->svm_remote->arg);
	ret = remote_get(queue_vm(q)->dev, UGPUD_SUBMIT, &req, sizeof(req), &rep, sizeof(rep));
	if (!ret)
		*fence = rep.fence;
	return ret;
}

/*
 * Fetch the faults the daemon keeps for mirror VM @vm, hand them to shared
 * virtual memory and wait (until @deadline, now_ns()) for their answers.
 * Returns how many were served, or -errno (the fetch failed).
 */
/* Wait (@rs->lock held) until no fetch of @rs's faults is in flight and
 * every fault fetched is answered, or @deadline (now_ns()). */
static void served_wait_locked(struct vm_remote_svm *rs, uint64_t deadline)
{
	while (rs->fetching || rs->out) {
		struct timespec ts = monotonic_deadline_after_ms(
			now_ns() >= deadline ? 1 : (deadline - now_ns()) / 1000000 + 1);

		if (pthread_cond_timedwait(&rs->cond, &rs->lock, &ts) == ETIMEDOUT &&
		    now_ns() >= deadline)
			break; /* answered later; the caller's timeout says so */
	}
}

static int svm_serve_faults(struct ugpu_vm *vm, uint64_t deadline)
{
	struct vm_remote_svm *rs = vm->svm_remote;
	struct ugpud_obj_req req = { .handle = vm->remote_handle };
	struct ugpud_svm_fault *w = malloc(UGPUD_SVM_MAX_FAULTS * sizeof(*w));
	struct vm_fault *f = calloc(UGPUD_SVM_MAX_FAULTS, sizeof(*f));
	size_t len = 0, n, i;
	int ret;

	if (!w || !f) {
		free(w);
		free(f);
		return -ENOMEM;
	}
	/* Two fetchers (the poller, a fence wait): what one fetched, the
	 * other waits for (served_wait_locked()) rather than ask the daemon
	 * to wait on the fence meanwhile, which would hold the connection
	 * a whole slice against the requests that serve them (review of
	 * 2026-12-07: 100 ms per fault) */
	pthread_mutex_lock(&rs->lock);
	rs->fetching++;
	pthread_mutex_unlock(&rs->lock);
	ret = remote_call(vm->dev, UGPUD_SVM_FAULTS, &req, sizeof(req), NULL, 0, w,
			  UGPUD_SVM_MAX_FAULTS * sizeof(*w), &len);
	n = len / sizeof(*w);
	if (!ret && len % sizeof(*w))
		ret = -EPROTO;
	if (ret)
		n = 0;
	for (i = 0; i < n; i++)
		f[i] = (struct vm_fault){ .vm = vm, .vmm = NULL, .slot = w[i].slot,
					  .launch = w[i].launch, .va = w[i].va,
					  .access = (enum ugpu_access)w[i].access };
	pthread_mutex_lock(&rs->lock);
	rs->out += (unsigned int)n;
	rs->fetching--;
	pthread_cond_broadcast(&rs->cond);
	pthread_mutex_unlock(&rs->lock);
	if (n)
		svm_hooks->ops->faults(rs->arg, f, n);
	pthread_mutex_lock(&rs->lock);
	if (!ret)
		served_wait_locked(rs, deadline);
	pthread_mutex_unlock(&rs->lock);
	free(w);
	free(f);
	return ret ? ret : (int)n;
}

void vm_remote_faults_done(const struct vm_fault *f, const int *status, size_t n)
{
	struct ugpu_vm *vm = f[0].vm;
	struct vm_remote_svm *rs = vm->svm_remote;
	struct ugpud_svm_done_req req = { .vm = vm->remote_handle };
	struct ugpud_svm_fault *w = calloc(n ? n : 1, sizeof(*w));
	size_t i, at;

	for (at = 0; w && at < n; at += req.n) {
		req.n = (uint32_t)(n - at < UGPUD_SVM_MAX_FAULTS ? n - at : UGPUD_SVM_MAX_FAULTS);
		for (i = 0; i < req.n; i++)
			w[i] = (struct ugpud_svm_fault){ .va = f[at + i].va,
							 .access = (uint32_t)f[at + i].access,
							 .slot = f[at + i].slot,
							 .launch = f[at + i].launch,
							 .status = status[at + i] };
		/* an error (the daemon or the kernel went) leaves the kernel
		 * to the daemon: it ends with its queue */
		(void)remote_call(vm->dev, UGPUD_SVM_FAULT_DONE, &req, sizeof(req), w,
				  req.n * sizeof(*w), NULL, 0, NULL);
	}
	free(w);
	if (!rs)
		return;
	pthread_mutex_lock(&rs->lock);
	rs->out = rs->out > n ? rs->out - (unsigned int)n : 0;
	pthread_cond_broadcast(&rs->cond);
	pthread_mutex_unlock(&rs->lock);
}

int vm_remote_svm_map(struct ugpu_vm *vm, uint64_t va, uint64_t len, struct ugpu_bo *bo,
		      unsigned int flags)
{
	struct ugpud_svm_map_req req = {
		.vm = vm->remote_handle,
		.bo = bo ? bo->remote_handle : 0,
		.va = va,
		.bytes = len,
		.flags = (flags & VM_SVM_WRITABLE) ? UGPUD_SVM_WRITABLE : 0,
	};

	if (!bo || (flags & VM_SVM_NO_ATOMIC))
		return -EOPNOTSUPP;
	if (bo->dev != vm->dev)
		return -EINVAL;
	bo_remote_lease_drop(bo); /* the map moves it to VRAM */
	return remote_call(vm->dev, UGPUD_SVM_MAP, &req, sizeof(req), NULL, 0, NULL, 0, NULL);
}

int vm_remote_svm_unmap(struct ugpu_vm *vm, uint64_t va, uint64_t len)
{
	struct ugpud_svm_map_req req = { .vm = vm->remote_handle, .va = va, .bytes = len };
	struct ugpud_handle_rep rep;
	int ret = remote_get(vm->dev, UGPUD_SVM_UNMAP, &req, sizeof(req), &rep, sizeof(rep));

	return ret ? ret : (int)rep.handle; /* how many maps went */
}

int vm_remote_prefetch(struct ugpu_vm *vm, uint64_t va, uint64_t len, bool to_vram)
{
	if (!vm->svm_remote || !remote_is_open(vm->dev))
		return -ENODEV;
	return svm_hooks->ops->prefetch(vm->svm_remote->arg, vm, va, len, to_vram);
}

int vm_remote_fence_eventfd(struct ugpu_queue *q, uint64_t fence, int *fd)
{
	struct ugpud_fence_req req = { .queue = queue_remote_handle(q), .fence = fence };
	size_t got = 0;
	int efd = -1, ret;

	ret = remote_call_fd(queue_vm(q)->dev, UGPUD_FENCE_EVENTFD, &req, sizeof(req), NULL, 0, &got,
			     &efd);
	if (ret)
		return ret; /* -EMFILE: answered, but no room for the fd here */
	if (got) {
		close(efd);
		return -EPROTO;
	}
	*fd = efd;
	return 0;
}

int vm_remote_fence_wait(struct ugpu_queue *q, uint64_t fence, int timeout_ms,
			 struct ugpu_kernel_result *res)
{
	struct ugpud_fence_req req = { .queue = queue_remote_handle(q), .fence = fence };
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ull;
	struct ugpud_kernel_result w;
	int ret;

	/* The daemon waits (without blocking anyone) at most a slice per
	 * request: ask again until our own deadline. */
	for (;;) {
		struct vm_remote_svm *rs = queue_vm(q)->svm_remote;
		uint64_t now;

		/* faults another thread fetched (the poller) are answered
		 * first: the daemon's wait would hold the connection their
		 * service needs */
		if (rs) {
			pthread_mutex_lock(&rs->lock);
			served_wait_locked(rs, deadline);
			pthread_mutex_unlock(&rs->lock);
		}
		now = now_ns();

		req.timeout_ms = now >= deadline ? 0
						 : (uint32_t)((deadline - now + 999999) / 1000000);
		ret = remote_get(queue_vm(q)->dev, UGPUD_FENCE_WAIT, &req, sizeof(req), &w,
				 sizeof(w));
		if (ret != -EAGAIN)
			break;
		/* A mirror VM's kernel may wait for its faults: the daemon
		 * answers early when it has some, served here (this thread
		 * holds no lock of the connection now). */
		if (queue_vm(q)->svm_remote && remote_is_open(queue_vm(q)->dev)) {
			int sret = svm_serve_faults(queue_vm(q), deadline);

			if (sret < 0)
				return sret;
			if (sret > 0)
				continue;
		}
		if (!timeout_ms)
			return -EAGAIN;
		if (now_ns() >= deadline)
			return -ETIMEDOUT;
	}
	if (ret)
		return ret;
	if (res) {
		struct ugpu_kernel_result r = { 0 };

		r.size = res->size;
		r.status = w.status;
		r.sum = w.sum;
		r.fault_va = w.fault_va;
		r.fault_access = (enum ugpu_access)w.fault_access;
		r.run_ns = w.run_ns;
		remote_fill(res, res->size, &r, sizeof(r));
	}
	return 0;
}

int vm_remote_queue_query(struct ugpu_queue *q, struct ugpu_queue_info *info)
{
	struct ugpud_obj_req req = { .handle = queue_remote_handle(q) };
	struct ugpu_queue_info i = { 0 };
	struct ugpud_queue_info w;
	int ret = remote_get(queue_vm(q)->dev, UGPUD_QUEUE_QUERY, &req, sizeof(req), &w, sizeof(w));

	if (ret)
		return ret;
	i.size = info->size;
	i.submitted = w.submitted;
	i.completed = w.completed;
	i.waiting = w.waiting;
	i.running = w.running;
	remote_fill(info, info->size, &i, sizeof(i));
	return 0;
}
