/* SPDX-License-Identifier: MIT */
/*
 * Shared virtual memory of ugpud's clients (docs/daemon.md, "SVM for
 * clients"): a client's mirror VM is made here with vm_create_forwarded(),
 * so its GPU faults come to these ops instead of the daemon's own shared
 * virtual memory (which would mirror the daemon's memory). They wait in the
 * VM's struct fwd_vm until the client fetches them (UGPUD_SVM_FAULTS); the
 * client's library serves them from its own memory, with its own
 * userfaultfd (svm/, as in one process), and sends back staging BOs to map
 * (UGPUD_SVM_MAP: moved to VRAM, mapped at the range's address) and
 * the answers (UGPUD_SVM_FAULT_DONE). A CPU touch in the client takes a
 * range back: UGPUD_SVM_UNMAP, then the BO's memfd (UGPUD_BO_MAP).
 *
 * The daemon never reads or maps a client's memory: what reaches the
 * device is what the client copied into its own BOs.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "mm/bo_rpm.h"
#include "mm/vm.h"
#include "mm/vm_remote.h"
#include "tools/ugpud/ugpud.h"

/* Faults one mirror VM keeps (fetched or not) before more abort their
 * kernels: a kernel waits on its faults, so this bounds a client that
 * never fetches them without bounding one that does. */
#define FWD_MAX_FAULTS 1024u

/*
 * struct fwd_vm - a client's mirror VM in the daemon.
 * @pend: faults not fetched yet; @given: fetched, not answered yet.
 * @efd: an eventfd written when a fault arrives (a fence wait on the VM's
 *       queues watches it, so it ends early: svm_wait_fd()).
 * @wait_efd: the fence eventfd of the client's fence wait on one of its
 *       queues, kept open while that wait watches it (-1: none; loop
 *       thread only).
 * @closing: a queue of the VM is being destroyed: its faults are answered
 *       -EFAULT at once (the client may be gone; a kernel waiting on its
 *       faults would hold the destroy, and the loop, for its 10 s bound).
 * Locking: @lock guards @pend, @npend, @given, @ngiven, @closing; a leaf,
 * dropped before vm_faults_done() (libugpu's exec thread adds under it).
 */
struct fwd_vm {
	pthread_mutex_t lock;
	bool closing;
	struct vm_fault pend[FWD_MAX_FAULTS];
	size_t npend;
	struct vm_fault given[FWD_MAX_FAULTS];
	size_t ngiven;
	int efd;
	int wait_efd;
};

/* libugpu's exec thread: keep them for the client, wake its fence wait. */
static void fwd_faults(void *arg, const struct vm_fault *f, size_t n)
{
	struct fwd_vm *fv = arg;
	size_t i, over = 0;
	uint64_t one = 1;

	pthread_mutex_lock(&fv->lock);
	for (i = 0; i < n; i++) {
		if (!fv->closing && fv->npend + fv->ngiven < FWD_MAX_FAULTS)
			fv->pend[fv->npend++] = f[i];
		else
			over++;
	}
	pthread_mutex_unlock(&fv->lock);
	for (i = n - over; i < n; i++) /* the ones not kept: the tail */
		vm_fault_done(&f[i], -EFAULT);
	if (write(fv->efd, &one, sizeof(one)) < 0) {
		/* the counter is at its maximum: it is readable already */
	}
}

/* Answer every fault kept (their kernels are aborted; a no-op for one that
 * ended). */
static void fwd_abort(struct fwd_vm *fv)
{
	struct vm_fault *f = malloc(2 * FWD_MAX_FAULTS * sizeof(*f));
	size_t i, n = 0;

	pthread_mutex_lock(&fv->lock);
	for (i = 0; f && i < fv->npend; i++)
		f[n++] = fv->pend[i];
	for (i = 0; f && i < fv->ngiven; i++)
		f[n++] = fv->given[i];
	fv->npend = fv->ngiven = 0;
	pthread_mutex_unlock(&fv->lock);
	for (i = 0; i < n; i++)
		vm_fault_done(&f[i], -EFAULT);
	free(f);
}

/* The VM goes (its queues went first, so its kernels ended). */
static void fwd_vm_gone(void *arg, struct ugpu_vm *vm)
{
	(void)vm;
	fwd_abort(arg);
}


static int fwd_vm_new(void *arg, struct ugpu_vm *vm)
{
	(void)arg;
	(void)vm;
	return 0;
}

static void fwd_sync(void *arg)
{
	(void)arg; /* the client syncs its own memory before it submits */
}

/* A bind of the client's own over a range's map: refused (its library
 * takes the range back before it binds there). */
static int fwd_punch(void *arg, struct ugpu_vm *vm, uint64_t va, uint64_t len)
{
	(void)arg;
	(void)vm;
	(void)va;
	(void)len;
	return -EBUSY;
}

static int fwd_prefetch(void *arg, struct ugpu_vm *vm, uint64_t va, uint64_t len, bool to_vram)
{
	(void)arg;
	(void)vm;
	(void)va;
	(void)len;
	(void)to_vram;
	return -EOPNOTSUPP;
}

static const struct vm_svm_ops fwd_ops = {
	.vm_new = fwd_vm_new,
	.sync = fwd_sync,
	.faults = fwd_faults,
	.punch = fwd_punch,
	.vm_gone = fwd_vm_gone,
	.prefetch = fwd_prefetch,
};

static struct fwd_vm *fwd_of(struct ugpu_vm *vm)
{
	return vm->fwd == &fwd_ops ? vm->fwd_arg : NULL;
}

struct fwd_vm *svm_queue_closing(struct ugpu_queue *q, struct fwd_vm *open)
{
	struct fwd_vm *fv = open ? open : fwd_of(queue_vm(q));

	if (!fv)
		return NULL;
	pthread_mutex_lock(&fv->lock);
	fv->closing = !open;
	pthread_mutex_unlock(&fv->lock);
	if (!open)
		fwd_abort(fv);
	return fv;
}

void svm_fwd_free(struct fwd_vm *fv)
{
	if (!fv)
		return;
	if (fv->wait_efd >= 0)
		close(fv->wait_efd);
	close(fv->efd);
	pthread_mutex_destroy(&fv->lock);
	free(fv);
}

/* The map of BO slot @s goes (its PTEs, the TLBs dropped). */
static void map_drop(struct ugpud_slot *s)
{
	if (!s->svm_vm)
		return;
	vm_svm_unmap(s->svm_vm, s->svm_va, s->svm_bytes);
	s->svm_vm = NULL;
	s->svm_va = s->svm_bytes = 0;
}

void svm_slot_drop(struct client *c, struct ugpud_slot *s)
{
	if (s->kind == SLOT_BO) {
		map_drop(s);
		return;
	}
	if (s->kind != SLOT_VM || !fwd_of(s->vm))
		return;
	for (uint32_t i = 0; i < c->nslots; i++)
		if (c->slots[i].kind == SLOT_BO && c->slots[i].svm_vm == s->vm)
			map_drop(&c->slots[i]);
}

int svm_fault_fd(struct fwd_vm *fv)
{
	return fcntl(fv->efd, F_DUPFD_CLOEXEC, 0);
}

int svm_wait_fd(struct ugpu_queue *q, int efd, int *wait_fd)
{
	struct fwd_vm *fv = fwd_of(queue_vm(q));
	struct epoll_event ev = { .events = EPOLLIN };
	bool pending;
	int ep;

	/* *@wait_fd is set only when the wait goes on (0 returned): on 1 or
	 * an error the caller closes @efd, and a number left in *@wait_fd
	 * was closed again at the client's release, whatever had been given
	 * that number meanwhile (a newly accepted client's socket: its hello
	 * read a reset, test_ugpud under load) */
	if (!fv) {
		*wait_fd = efd;
		return 0;
	}
	pthread_mutex_lock(&fv->lock);
	pending = fv->npend != 0;
	pthread_mutex_unlock(&fv->lock);
	if (pending)
		return 1;
	/* both the fence and the VM's faults end the wait */
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		return -errno;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) || epoll_ctl(ep, EPOLL_CTL_ADD, fv->efd, &ev)) {
		int ret = -errno;

		close(ep);
		return ret;
	}
	if (fv->wait_efd >= 0)
		close(fv->wait_efd);
	fv->wait_efd = efd; /* open while the epoll watches it */
	*wait_fd = ep;
	return 0;
}

void svm_wait_done(struct ugpu_queue *q)
{
	struct fwd_vm *fv = fwd_of(queue_vm(q));

	if (fv && fv->wait_efd >= 0) {
		close(fv->wait_efd);
		fv->wait_efd = -1;
	}
}

int svm_vm_create(struct ugpu_device *dev, const struct ugpu_vm_opts *o, struct ugpu_vm **vm,
		  struct fwd_vm **fwd)
{
	struct fwd_vm *fv = calloc(1, sizeof(*fv));
	int ret;

	if (!fv)
		return -ENOMEM;
	fv->wait_efd = -1;
	fv->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fv->efd < 0) {
		ret = -errno;
		free(fv);
		return ret;
	}
	pthread_mutex_init(&fv->lock, NULL);
	ret = vm_create_forwarded(dev, o, &fwd_ops, fv, vm);
	if (ret) {
		svm_fwd_free(fv);
		return ret;
	}
	*fwd = fv;
	return 0;
}

/* Hand over the faults waiting (each once). */
static size_t faults_fetch(struct fwd_vm *fv, const struct ugpud_hdr *h, void *rep)
{
	struct ugpud_svm_fault *w = (void *)((char *)rep + sizeof(struct ugpud_hdr));
	uint64_t v;
	size_t n = 0;

	if (read(fv->efd, &v, sizeof(v)) < 0) {
		/* nothing was signalled: the list says what there is */
	}
	pthread_mutex_lock(&fv->lock);
	while (fv->npend && n < UGPUD_SVM_MAX_FAULTS) {
		struct vm_fault *f = &fv->pend[--fv->npend];

		w[n++] = (struct ugpud_svm_fault){ .va = f->va, .access = (uint32_t)f->access,
						   .slot = f->slot, .launch = f->launch };
		fv->given[fv->ngiven++] = *f;
	}
	/* more than one answer holds: still readable for the client's poll
	 * (UGPUD_SVM_FAULT_FD) */
	if (fv->npend) {
		uint64_t one = 1;

		if (write(fv->efd, &one, sizeof(one)) < 0) {
			/* the counter is full: readable anyway */
		}
	}
	pthread_mutex_unlock(&fv->lock);
	return serve_reply(rep, h->op, h->seq, 0, n * sizeof(*w));
}

/* The client's answers: each must be a fault it was handed. */
static size_t faults_done(struct fwd_vm *fv, const struct ugpud_hdr *h, const void *body, void *rep)
{
	struct ugpud_svm_done_req req;
	const struct ugpud_svm_fault *w;
	struct vm_fault f[UGPUD_SVM_MAX_FAULTS];
	int st[UGPUD_SVM_MAX_FAULTS];
	size_t k = 0, missing = 0;

	memcpy(&req, body, sizeof(req));
	if (req.n > UGPUD_SVM_MAX_FAULTS ||
	    h->len != sizeof(req) + (size_t)req.n * sizeof(struct ugpud_svm_fault))
		return serve_error(rep, h->op, h->seq, -EINVAL,
				   "fault done: %u answers in %u bytes (at most %u, %zu bytes each)",
				   req.n, h->len, UGPUD_SVM_MAX_FAULTS, sizeof(struct ugpud_svm_fault));
	w = (const void *)((const char *)body + sizeof(req));
	pthread_mutex_lock(&fv->lock);
	for (uint32_t i = 0; i < req.n; i++) {
		struct ugpud_svm_fault a;
		size_t j;

		memcpy(&a, &w[i], sizeof(a));
		for (j = 0; j < fv->ngiven; j++)
			if (fv->given[j].va == a.va && fv->given[j].slot == a.slot &&
			    fv->given[j].launch == a.launch)
				break;
		if (j == fv->ngiven) {
			missing++;
			continue;
		}
		f[k] = fv->given[j];
		/* only what the device knows: replay, or abort as a fault */
		st[k++] = a.status == 0 ? 0 : a.status == -EACCES ? -EACCES : -EFAULT;
		fv->given[j] = fv->given[--fv->ngiven];
	}
	pthread_mutex_unlock(&fv->lock);
	if (k)
		vm_faults_done(f, st, k);
	if (missing)
		return serve_error(rep, h->op, h->seq, -ENOENT,
				   "fault done: %zu of %u answers are for faults not handed over", missing,
				   req.n);
	return serve_reply(rep, h->op, h->seq, 0, 0);
}

static size_t map(struct ugpud *d, struct client *c, const struct ugpud_hdr *h,
		  const struct ugpud_svm_map_req *req, struct ugpu_vm *vm, void *rep)
{
	struct ugpud_slot *bs = client_slot(c, req->bo, SLOT_BO);
	struct ugpu_device *dev = vm->dev;
	struct rpm *held;
	int ret;

	if (!bs)
		return serve_error(rep, h->op, h->seq, -ENOENT, "svm map: client %u has no BO 0x%x",
				   c->id, req->bo);
	if (req->bytes != bs->bytes || !req->bytes || ((req->va | req->bytes) & 4095) ||
	    req->va < vm->mirror_start || req->va - vm->mirror_start >= vm->mirror_size ||
	    req->bytes > vm->mirror_size - (req->va - vm->mirror_start))
		return serve_error(rep, h->op, h->seq, -EINVAL,
				   "svm map: [0x%llx, +0x%llx) is not the whole BO (0x%llx bytes), page aligned, inside the mirror span",
				   (unsigned long long)req->va, (unsigned long long)req->bytes,
				   (unsigned long long)bs->bytes);
	if (bs->svm_vm || bs->mapped)
		return serve_error(rep, h->op, h->seq, -EBUSY,
				   "svm map: BO 0x%x is %s", req->bo,
				   bs->svm_vm ? "mapped for a range already" : "mapped by the client's CPU");
	ret = bo_rpm_hold(dev, &held);
	if (ret)
		return serve_error(rep, h->op, h->seq, ret, "svm map: %s", ugpu_strerror(ret));
	/* Not pinned: like any bound BO it may be evicted later, and its
	 * map follows it (the VM's PTEs are rewritten before the next
	 * kernel); a pin would move it back to its first placement, system
	 * memory, where the client made it to fill it. */
	VRAM_CALL(d, ret, ugpu_bo_migrate(bs->bo, UGPU_PLACEMENT_VRAM));
	/* its page tables too (a failed map leaves nothing half-done) */
	if (!ret)
		VRAM_CALL(d, ret,
			  vm_svm_map(vm, req->va, req->bytes, bs->bo, 0,
				     (req->flags & UGPUD_SVM_WRITABLE) ? VM_SVM_WRITABLE : 0));
	bo_rpm_release(held);
	if (ret)
		return serve_error(rep, h->op, h->seq, ret, "svm map of BO 0x%x at 0x%llx: %s", req->bo,
				   (unsigned long long)req->va, ugpu_strerror(ret));
	bs->svm_vm = vm;
	bs->svm_va = req->va;
	bs->svm_bytes = req->bytes;
	return serve_reply(rep, h->op, h->seq, 0, 0);
}

static size_t unmap(struct client *c, const struct ugpud_hdr *h, const struct ugpud_svm_map_req *req,
		    struct ugpu_vm *vm, void *rep)
{
	struct ugpud_handle_rep r = { 0 };

	for (uint32_t i = 0; i < c->nslots; i++) {
		struct ugpud_slot *s = &c->slots[i];

		if (s->kind == SLOT_BO && s->svm_vm == vm && s->svm_va >= req->va &&
		    s->svm_va - req->va < req->bytes &&
		    s->svm_bytes <= req->bytes - (s->svm_va - req->va)) {
			map_drop(s);
			r.handle++;
		}
	}
	memcpy((char *)rep + sizeof(struct ugpud_hdr), &r, sizeof(r));
	return serve_reply(rep, h->op, h->seq, 0, sizeof(r));
}

size_t svm_serve(struct ugpud *d, struct client *c, const struct ugpud_hdr *h, const void *body,
		 void *rep)
{
	size_t want = h->op == UGPUD_SVM_FAULTS     ? sizeof(struct ugpud_obj_req)
		      : h->op == UGPUD_SVM_FAULT_DONE ? sizeof(struct ugpud_svm_done_req)
						      : sizeof(struct ugpud_svm_map_req);
	struct ugpud_slot *vs;
	struct fwd_vm *fv;
	uint32_t handle;

	if (h->op == UGPUD_SVM_FAULT_DONE ? h->len < want : h->len != want)
		return serve_error(rep, h->op, h->seq, -EINVAL, "svm op %u: %u bytes of body, expected %zu",
				   h->op, h->len, want);
	(void)d;
	memcpy(&handle, body, sizeof(handle)); /* every other request starts with the VM */
	vs = client_slot(c, handle, SLOT_VM);
	fv = vs ? fwd_of(vs->vm) : NULL;
	if (!fv)
		return serve_error(rep, h->op, h->seq, vs ? -EINVAL : -ENOENT,
				   "svm op %u: client %u has no %sVM 0x%x", h->op, c->id,
				   vs ? "mirror " : "", handle);
	switch (h->op) {
	case UGPUD_SVM_FAULTS:
		return faults_fetch(fv, h, rep);
	case UGPUD_SVM_FAULT_DONE:
		return faults_done(fv, h, body, rep);
	default: {
		struct ugpud_svm_map_req req;

		memcpy(&req, body, sizeof(req));
		return h->op == UGPUD_SVM_MAP ? map(d, c, h, &req, vs->vm, rep)
					      : unmap(c, h, &req, vs->vm, rep);
	}
	}
}
