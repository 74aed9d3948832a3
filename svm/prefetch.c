/* SPDX-License-Identifier: MIT */
/*
 * Shared virtual memory: asynchronous prefetch (ugpu_svm_prefetch_async(),
 * include/ugpu/svm.h). A thread of its own runs ugpu_vm_prefetch() over the
 * span in 2 MiB pieces: progress is the pieces done, a cancel takes effect
 * between pieces, and each piece is the synchronous prefetch (ranges owned
 * one by one: a CPU touch, a free or another prefetch of the same memory
 * waits for the range being moved, never for the whole span).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <ugpu/svm.h>
#include <ugpu/vm.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/ownmem.h"
#include "mm/vm.h"
#include "mm/vm_remote.h"
#include "src/device.h"
#include "svm/svm.h"

/* What the thread asks of ugpu_vm_prefetch() at a time: 8 ranges of 2 MiB,
 * so that each call is long enough for its helper thread (svm/svm.c: spans
 * of two pieces or more), where 2 MiB a call never had one; and short
 * enough (about 2 ms of copying) that a cancel or a progress query waits
 * little. */
#define PREFETCH_PIECE (8 * SVM_2M)
#define PREFETCH_EFDS 8

/*
 * struct ugpu_svm_prefetch - one asynchronous prefetch.
 * Locking: @lock guards @done, @finished, @status, @cancel and @efd; @cond
 * signals @finished. The rest is set before the thread starts.
 */
struct ugpu_svm_prefetch {
	struct ugpu_vm *vm;
	uint64_t va, bytes;
	enum ugpu_placement to;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t done;
	bool finished, cancel;
	int status;
	int efd[PREFETCH_EFDS]; /* our dups of the callers' eventfds, -1 free */
};

static void *prefetch_main(void *arg)
{
	struct ugpu_svm_prefetch *p = arg;
	uint64_t va = p->va, end = p->va + p->bytes, note = SVM_PREFETCH_NOTE;
	int status = 0;

	while (va < end) {
		uint64_t piece_end = (va + PREFETCH_PIECE) & ~(PREFETCH_PIECE - 1);
		bool cancel;
		int ret;

		if (piece_end > end)
			piece_end = end;
		pthread_mutex_lock(&p->lock);
		cancel = p->cancel;
		pthread_mutex_unlock(&p->lock);
		if (cancel) {
			status = -ECANCELED;
			break;
		}
		ret = ugpu_vm_prefetch(p->vm, va, piece_end - va, p->to);
		/* soft errors (VRAM full: used in place; a copy back failed:
		 * it stays, nothing lost) do not stop the rest */
		if (ret && !status)
			status = ret;
		if (ret && ret != -ENOSPC && ret != -EAGAIN)
			break;
		va = piece_end;
		pthread_mutex_lock(&p->lock);
		p->done = va - p->va;
		pthread_mutex_unlock(&p->lock);
		if (va - p->va >= note && va < end) {
			log_info(p->vm->dev->ctx, "svm: prefetch of [0x%" PRIx64 ", +%" PRIu64 " MiB) to %s: %" PRIu64 " MiB done",
				 p->va, p->bytes >> 20, p->to == UGPU_PLACEMENT_VRAM ? "VRAM" : "system memory",
				 (va - p->va) >> 20);
			note += SVM_PREFETCH_NOTE;
		}
	}
	pthread_mutex_lock(&p->lock);
	p->status = status;
	p->finished = true;
	for (int i = 0; i < PREFETCH_EFDS; i++) {
		uint64_t one = 1;

		if (p->efd[i] < 0)
			continue;
		if (write(p->efd[i], &one, sizeof(one)) < 0) {
			/* an eventfd counter cannot overflow on one write */
		}
		close(p->efd[i]);
		p->efd[i] = -1;
	}
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

UGPU_API int ugpu_svm_prefetch_async(struct ugpu_vm *vm, uint64_t va, uint64_t bytes,
				     enum ugpu_placement to, struct ugpu_svm_prefetch **out)
{
	struct ugpu_svm_prefetch *p;
	pthread_condattr_t ca;
	int ret;

	ownmem_thread_note();

	if (!vm || !out)
		return -EINVAL;
	if (!svm_span_ok(vm, va, bytes) || (to != UGPU_PLACEMENT_VRAM && to != UGPU_PLACEMENT_SYSTEM)) {
		log_err(vm->dev->ctx, "ugpu_svm_prefetch_async: [0x%" PRIx64 ", +0x%" PRIx64 ") to %d: not a mirror VM, empty, not page aligned, outside the mirror span, or not VRAM/SYSTEM",
			va, bytes, (int)to);
		return -EINVAL;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->vm = vm;
	p->va = va;
	p->bytes = bytes;
	p->to = to;
	for (int i = 0; i < PREFETCH_EFDS; i++)
		p->efd[i] = -1;
	pthread_mutex_init(&p->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cond, &ca);
	pthread_condattr_destroy(&ca);
	ret = -pthread_create(&p->thread, NULL, prefetch_main, p);
	if (ret) {
		pthread_cond_destroy(&p->cond);
		pthread_mutex_destroy(&p->lock);
		free(p);
		return -EAGAIN;
	}
	*out = p;
	return 0;
}

UGPU_API int ugpu_svm_prefetch_wait(struct ugpu_svm_prefetch *p, int timeout_ms,
				    struct ugpu_svm_prefetch_status *st)
{
	struct ugpu_svm_prefetch_status o = { .size = sizeof(o) };
	struct timespec ts;
	int ret = 0;

	if (!p || timeout_ms < 0 || (st && st->size < offsetof(struct ugpu_svm_prefetch_status, status) + sizeof(int)))
		return -EINVAL;
	ts = monotonic_deadline_after_ms((unsigned int)timeout_ms);
	pthread_mutex_lock(&p->lock);
	while (!p->finished && timeout_ms && !ret)
		ret = pthread_cond_timedwait(&p->cond, &p->lock, &ts);
	o.done_bytes = p->done;
	o.total_bytes = p->bytes;
	o.finished = p->finished;
	o.status = p->status;
	pthread_mutex_unlock(&p->lock);
	if (st) {
		o.size = st->size;
		memcpy(st, &o, st->size < sizeof(o) ? st->size : sizeof(o));
	}
	if (o.finished)
		return 0;
	return timeout_ms ? -ETIMEDOUT : -EAGAIN;
}

UGPU_API int ugpu_svm_prefetch_eventfd(struct ugpu_svm_prefetch *p, int *fd)
{
	int efd, ret = 0;

	if (!p || !fd)
		return -EINVAL;
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (efd < 0)
		return -errno;
	pthread_mutex_lock(&p->lock);
	if (p->finished) {
		uint64_t one = 1;

		if (write(efd, &one, sizeof(one)) < 0)
			ret = -errno;
	} else {
		int i;

		for (i = 0; i < PREFETCH_EFDS && p->efd[i] >= 0; i++)
			;
		if (i == PREFETCH_EFDS)
			ret = -ENOMEM;
		else if ((p->efd[i] = fcntl(efd, F_DUPFD_CLOEXEC, 0)) < 0)
			ret = -errno;
	}
	pthread_mutex_unlock(&p->lock);
	if (ret) {
		if (ret == -EBADF || ret == -EINVAL)
			ret = -EMFILE;
		close(efd);
		return ret;
	}
	*fd = efd;
	return 0;
}

UGPU_API void ugpu_svm_prefetch_free(struct ugpu_svm_prefetch *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->cancel = true;
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->thread, NULL);
	for (int i = 0; i < PREFETCH_EFDS; i++)
		if (p->efd[i] >= 0)
			close(p->efd[i]);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
