/* SPDX-License-Identifier: MIT */
/*
 * Shared virtual memory: kernels of mirror VMs run on the process's own
 * memory (malloc, anonymous mmap, the stack). A GPU fault in the mirror span
 * makes a range around the address (2 MiB, 64 KiB or 4 KiB, the largest that
 * stays inside the CPU mapping and overlaps no other range); a range of
 * 64 KiB or more moves into VRAM, a smaller one is mapped where it is. A CPU
 * touch of a range in VRAM brings it back. munmap, MADV_DONTNEED and mremap
 * of mirrored memory drop or move its ranges. docs/svm.md has the design,
 * the userfaultfd mechanisms and why; svm/svm.h the locks.
 *
 * The userspace counterpart of drm_gpusvm / drm_pagemap / xe_svm: where the
 * kernel has mmu notifiers, hmm_range_fault and migrate_vma, this layer has
 * one userfaultfd (CPU faults and the unmap/remove/remap events of the
 * memory it registered), UFFDIO_MOVE or write protection (to take pages
 * away from the CPU without a window where a store is lost), UFFDIO_COPY
 * (to give them back), and the reference device's GPU page tables and
 * recoverable faults.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <ugpu/svm.h>
#include <ugpu/vm.h>

#include "base/stats.h"
#include "base/clock.h"
#include "base/lines.h"
#include "base/list.h"
#include "base/log.h"
#include "base/ownmem.h"
#include "base/progress.h"
#include "base/test_point.h"
#include "mm/bo.h"
#include "mm/uffd.h"
#include "mm/vm.h"
#include "src/device.h"
#include "src/remote.h"
#include "src/rpm.h"
#include "mm/vm_remote.h"
#include "svm/svm.h"
#include "vfio/dma.h"

struct svm *g_svm;
pthread_mutex_t g_svm_lock = PTHREAD_MUTEX_INITIALIZER;

void *zero_page;

/* ---- the process-wide state ---------------------------------------------------------- */

static void fork_prepare(void);
static void fork_done(void);

/* Open the userfaultfd and start the worker (the first mirror VM). Lock
 * g_svm_lock held. */
static int svm_start(struct svm *s)
{
	uint64_t want = UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_REMAP |
			UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_MOVE | UFFD_FEATURE_THREAD_ID |
			UFFD_FEATURE_POISON;
	uint64_t need = UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_REMAP;
	int ret, err = 0;

	if (s->u)
		return 0;
	if (s->uffd_err)
		return s->uffd_err;
	if (!zero_page) {
		zero_page = calloc(1, SVM_4K);
		if (!zero_page)
			return -ENOMEM;
	}
	s->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (s->pagemap_fd < 0) {
		ret = -errno;
		log_err(s->ctx, "svm: cannot open /proc/self/pagemap: %s", ugpu_strerror(ret));
		return ret;
	}
	ret = uffd_create(s->ctx, "svm", need, want, &svm_uffd_ops, s, 1000, &s->u);
	if (ret) {
		log_err(s->ctx, "svm: shared virtual memory needs a userfaultfd (%s): give the process access to /dev/userfaultfd, or set vm.unprivileged_userfaultfd=1",
			ugpu_strerror(ret));
		close(s->pagemap_fd);
		s->pagemap_fd = -1;
		s->uffd_err = ret;
		return ret;
	}
	s->features = uffd_features(s->u);
	s->have_move = (s->features & UFFD_FEATURE_MOVE) != 0;
	s->have_wp = (s->features & UFFD_FEATURE_PAGEFAULT_FLAG_WP) != 0;
	if (getenv("UGPU_SVM_NO_MOVE"))
		s->have_move = false; /* tests: the 6.1 path (docs/svm.md) */
	if (getenv("UGPU_SVM_NO_WP"))
		s->have_wp = false; /* tests: a kernel without write protection */
	if (s->have_move) {
		/* the page pool: a 2 MiB-aligned registered area for pages
		 * moved out (svm.h) */
		uint64_t len = SVM_POOL_SLOTS * SVM_2M;
		void *p = mmap(NULL, len + SVM_2M, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

		if (p != MAP_FAILED) {
			uintptr_t a = ((uintptr_t)p + SVM_2M - 1) & ~(uintptr_t)(SVM_2M - 1);

			/* only the aligned part stays */
			if (a > (uintptr_t)p)
				munmap(p, a - (uintptr_t)p);
			if ((uintptr_t)p + len + SVM_2M > a + len)
				munmap((void *)(a + len), (uintptr_t)p + len + SVM_2M - (a + len));
			madvise((void *)a, len, MADV_DONTFORK);
			err = uffd_register(s->u, a, len, UFFDIO_REGISTER_MODE_MISSING);
			if (!err)
				s->pool = a;
			else
				munmap((void *)a, len);
		}
		if (!s->pool)
			s->have_move = false;
	}
	if (!s->have_move && !s->have_wp) {
		log_err(s->ctx, "svm: this kernel's userfaultfd has neither UFFDIO_MOVE nor write protection: ranges are used in place only");
	}
	ret = -pthread_create(&s->worker, NULL, worker_main, s);
	if (ret) {
		uffd_destroy(s->u);
		s->u = NULL;
		return ret;
	}
	s->worker_up = true;
	{
		static bool atfork_done;

		if (!atfork_done && !pthread_atfork(fork_prepare, fork_done, fork_done))
			atfork_done = true;
	}
	log_info(s->ctx, "svm: userfaultfd with %s%s", s->have_move ? "UFFDIO_MOVE" : "",
		 s->have_wp ? (s->have_move ? " and write protection" : "write protection") : "");
	return 0;
}

static struct svm *svm_new(struct ugpu_context *ctx)
{
	struct svm *s = calloc(1, sizeof(*s));
	pthread_condattr_t ca;

	if (!s)
		return NULL;
	s->ctx = ctx;
	s->pagemap_fd = -1;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->pool_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &ca);
	pthread_cond_init(&s->work_cond, &ca);
	pthread_cond_init(&s->pool_cond, &ca);
	pthread_condattr_destroy(&ca);
	list_init(&s->devs);
	list_init(&s->work);
	list_init(&s->gc_running);
	list_init(&s->gc_done);
	return s;
}

/* The last device went: everything goes. g_svm_lock held. */
static void svm_free(struct svm *s)
{
	size_t i;

	if (s->worker_up) {
		pthread_mutex_lock(&s->lock);
		s->stop = true;
		pthread_cond_broadcast(&s->cond);
		pthread_cond_signal(&s->work_cond);
		pthread_mutex_unlock(&s->lock);
		pthread_join(s->worker, NULL);
	}
	/* Ranges left are in process memory (the devices took theirs back):
	 * unregister the memory so the process's touches are its own again,
	 * then stop the handler thread, which reads the ranges and may still
	 * be queueing work; only then free both. */
	for (i = 0;; i++) {
		struct region g;

		/* the handler thread still changes the list (events): one at a
		 * time under the lock; what it adds meanwhile goes with the
		 * userfaultfd's close */
		pthread_mutex_lock(&s->lock);
		if (i >= s->nreg) {
			pthread_mutex_unlock(&s->lock);
			break;
		}
		g = s->reg[i];
		pthread_mutex_unlock(&s->lock);
		uffd_unregister(s->u, g.start, g.end - g.start);
	}
	uffd_destroy(s->u);
	list_for_each_safe(l, &s->work) {
		struct svm_work *w = list_entry(l, struct svm_work, link);

		free(w->f);
		free(w);
	}
	/* GC items kept for earlier ones (empty once the last item ended;
	 * only after the worker and the handler are gone, whose item ends
	 * may still walk the list: the review) */
	list_for_each_safe(l, &s->gc_done)
		free(list_entry(l, struct svm_work, run));
	list_init(&s->gc_done);
	for (i = 0; i < s->n; i++)
		free(s->r[i]);
	if (s->pool)
		munmap((void *)s->pool, SVM_POOL_SLOTS * SVM_2M);
	if (s->pagemap_fd >= 0)
		close(s->pagemap_fd);
	free(s->r);
	free(s->reg);
	free(s->as);
	pthread_cond_destroy(&s->cond);
	pthread_cond_destroy(&s->work_cond);
	pthread_cond_destroy(&s->pool_cond);
	pthread_mutex_destroy(&s->pool_lock);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* Until the collections queued so far ran. No lock held. */
void gc_wait(struct svm *s)
{
	pthread_mutex_lock(&s->lock);
	while (s->gc_inflight && s->worker_up)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

/* ---- fork: the child must not find zeroes where the parent's pages were in VRAM --------- */

/*
 * Every range in VRAM comes back before fork() copies the address space,
 * and no range is half-way anywhere (a migration or a copy back in flight
 * has its pages in a slot of the page pool, which the child does not get, or half
 * copied): one pass in address order waits for each busy range. None goes
 * to VRAM again until fork returned (@forking, read by a fault after it
 * owns its range: one that read it unset owns a range this pass waits for).
 * The child does not use the device (docs/svm.md, "fork").
 *
 * g_svm_lock and s->lock stay held across fork(): in the child no other
 * thread exists to release a lock it held, so the child must not take one;
 * fork_done() (parent and child) only releases them.
 */
static void fork_prepare(void)
{
	struct svm *s;
	uint64_t next = 0;

	pthread_mutex_lock(&g_svm_lock);
	s = g_svm;
	if (!s || !s->u)
		return;
	/* What the process freed or moved before fork() is collected first:
	 * a range of freed memory brought home below would put its old bytes
	 * into the freed pages, for the child and the parent (found by
	 * test_svm_model: a free, then fork; the child read the old bytes).
	 * The worker never takes g_svm_lock. */
	uffd_sync(s->u);
	gc_wait(s);
	pthread_mutex_lock(&s->lock);
	s->forking = true;
	for (;;) {
		struct svm_range *r = NULL;
		size_t i;

		for (i = range_lower(s, next); i < s->n && !r; i++)
			if (s->r[i]->where == R_VRAM || s->r[i]->busy)
				r = s->r[i];
		if (!r)
			break;
		if (!range_own(s, r))
			continue; /* it went: look again from the same place */
		next = r->start + r->size;
		if (r->where == R_VRAM) {
			pthread_mutex_unlock(&s->lock);
			for (int k = 0; k < SVM_COPY_TRIES && range_to_cpu(s, r) && r->where == R_VRAM; k++)
				sleep_until_ns(now_ns() + ms_to_ns(SVM_COPY_RETRY_MS));
			if (r->where == R_VRAM)
				log_err(s->ctx, "svm: fork: [0x%" PRIx64 ", +0x%" PRIx64 ") could not come back from VRAM: the child reads zeroes there (the parent keeps its data)",
					r->start, r->size);
			pthread_mutex_lock(&s->lock);
		}
		range_release(s, r);
	}
}

static void fork_done(void)
{
	struct svm *s = g_svm;

	if (s && s->u) {
		s->forking = false;
		pthread_mutex_unlock(&s->lock);
	}
	pthread_mutex_unlock(&g_svm_lock);
}

/* ---- what mm/ calls (struct vm_svm_ops) ------------------------------------------------- */

static int ops_vm_new(void *arg, struct ugpu_vm *vm)
{
	struct svm *s = arg;
	int ret;

	(void)vm;
	pthread_mutex_lock(&g_svm_lock);
	ret = svm_start(s);
	pthread_mutex_unlock(&g_svm_lock);
	return ret;
}

/* A batch of faults: one work item per VM among them (a VM that goes, or a
 * device that closes, takes its own items out of the queue). */
static void ops_faults(void *arg, const struct vm_fault *f, size_t n)
{
	struct svm *s = arg;
	bool *taken = calloc(n, sizeof(*taken));
	size_t i, j;

	for (i = 0; i < n; i++) {
		struct svm_work *w;
		struct vm_fault *copy;
		size_t k = 0;

		if (taken && taken[i])
			continue;
		w = taken ? calloc(1, sizeof(*w)) : NULL;
		copy = w ? calloc(n - i, sizeof(*copy)) : NULL;
		if (!copy) {
			free(w);
			/* no memory: its kernel is aborted (it may run again) */
			for (j = i; j < n; j++)
				if (!taken || !taken[j]) {
					vm_fault_done(&f[j], -EFAULT);
					if (!taken)
						break;
					taken[j] = true;
				}
			continue;
		}
		for (j = i; j < n; j++)
			if (!taken[j] && f[j].vm == f[i].vm) {
				copy[k++] = f[j];
				taken[j] = true;
			}
		w->kind = W_FAULTS;
		w->f = copy;
		w->n = k;
		pthread_mutex_lock(&s->lock);
		work_queue(s, w);
		pthread_mutex_unlock(&s->lock);
	}
	free(taken);
}

static bool is_vm(const struct ugpu_vm *vm, const void *arg)
{
	return vm == arg;
}

static bool on_dev(const struct ugpu_vm *vm, const void *dev)
{
	return vm->dev == dev;
}

static bool maps_vm(const struct svm_range *r, const void *vm)
{
	for (unsigned int k = 0; k < r->nmaps; k++)
		if (r->maps[k].vm == vm)
			return true;
	return false;
}

/* The ranges of [va, +len) that @vm maps go (their bytes back in process
 * memory, which stays the process's): for a bind there. */
static int ops_punch(void *arg, struct ugpu_vm *vm, uint64_t va, uint64_t len)
{
	struct svm *s = arg;

	for (;;) {
		struct svm_range *r = own_first(s, va, va + len, maps_vm, vm);

		if (!r)
			return 0;
		uint64_t start = r->start, size = r->size;

		/* Gone, not just unmapped: a range is never split, and one
		 * that stayed would keep the size it had before the bind, so
		 * the next fault beside the bind would find a range that
		 * overlaps it and could not be mapped. The next fault makes
		 * one that fits around the bind. */
		if (r->where == R_VRAM && range_to_cpu_must(s, r) == -EAGAIN) {
			range_done(s, r); /* its collection takes it out of VRAM */
			gc_wait(s);
			continue;
		}
		range_destroy(s, r);
		uffd_wake(s->u, start, size);
	}
}

/*
 * A prefetch of a span of several 2 MiB pieces runs on two threads: the
 * caller's and a helper, each taking the next piece in turn (ranges are at
 * most 2 MiB and aligned to their size, so a range lies in one piece). The
 * moves are CPU copies and UFFDIO_MOVEs; one thread left the second CPU
 * idle (issue 16's benchmark: 64 MiB to VRAM and back at 0.60x / 0.49x
 * memcpy on one thread). Each piece is what the one-thread loop did for
 * it: ranges owned one by one, so a CPU touch, a free or another prefetch
 * of the same memory waits for the range being moved, never for the span.
 * Locking: @lock guards @next, @done, @ret, @short_of_vram and @stop;
 * @reported is the caller's thread's alone; the rest is set before the
 * helper starts and read-only after.
 */
struct prefetch_run {
	struct svm *s;
	struct ugpu_vm *vm;
	uint64_t end;
	bool to_vram;
	pthread_mutex_t lock;
	uint64_t next; /* where the next piece starts */
	uint64_t done; /* bytes of the pieces finished */
	uint64_t reported; /* of @done, given to the progress: caller's thread only */
	int ret; /* the first hard error (to VRAM), or -EAGAIN (a range stayed) */
	bool short_of_vram, stop;
};

#define PREFETCH_PIECE SVM_2M
/* Spans of at least this many bytes get the helper thread. */
#define PREFETCH_SPLIT_MIN (2 * PREFETCH_PIECE)

/* [va, piece_end) into VRAM, range by range as faults would make them.
 * 0 or the error that stops the prefetch; *@short_of_vram set when a range
 * that could move stayed for want of VRAM. */
static int piece_to_vram(struct svm *s, struct ugpu_vm *vm, uint64_t va, uint64_t piece_end,
			 bool *short_of_vram, uint64_t *reached)
{
	int ret = 0;

	while (va < piece_end && !ret) {
		struct vm_fault f = { .vm = vm, .vmm = vm->vmm, .slot = UINT32_MAX, .va = va,
				      .access = UGPU_ACCESS_READ };
		uint64_t next;
		struct svm_range *r;

		ret = serve(s, &f, SERVE_PREFETCH, &next);
		if (ret)
			break;
		pthread_mutex_lock(&s->lock);
		r = range_find(s, va);
		*short_of_vram |= r && !range_has_vram(r) && r->writable && !r->in_place_only;
		pthread_mutex_unlock(&s->lock);
		va = next > va ? next : va + SVM_4K;
	}
	*reached = va < piece_end ? va : piece_end;
	return ret;
}

/* own_first() filter: in VRAM, or owned by another thread now (it may be
 * on its way there: waited for, then looked at again). */
static bool in_vram_or_busy(const struct svm_range *r, const void *arg)
{
	(void)arg;
	return r->where == R_VRAM || r->busy;
}

/* Every range in VRAM in [va, piece_end) back into the process: 0, or
 * -EAGAIN when one stays (nothing lost, logged). A range another thread is
 * moving in now (the stream prefetcher's, a fault's) is waited for: left,
 * it would be in VRAM after a prefetch to system memory that said 0
 * (review of 2026-12-07). */
static int piece_to_cpu(struct svm *s, uint64_t va, uint64_t piece_end)
{
	struct svm_range *r;
	int ret = 0;

	while (va < piece_end && (r = own_first(s, va, piece_end, in_vram_or_busy, NULL))) {
		va = r->start + r->size;
		if (r->where == R_VRAM && range_to_cpu(s, r) && r->where == R_VRAM)
			ret = -EAGAIN;
		range_done(s, r);
	}
	return ret;
}

/*
 * Take pieces of @run until none is left or an error stops it. The
 * caller's thread passes its @pr (the helper NULL): after each of its
 * pieces it reports what both threads finished, and logs every
 * SVM_PREFETCH_NOTE bytes.
 */
static void prefetch_pieces(struct prefetch_run *run, struct progress *pr, uint64_t len)
{
	uint64_t note = SVM_PREFETCH_NOTE;

	for (;;) {
		uint64_t va, piece_end, done;
		bool short_of_vram = false, more;
		int ret;

		pthread_mutex_lock(&run->lock);
		va = run->next;
		more = !run->stop && va < run->end;
		if (more) {
			piece_end = (va + PREFETCH_PIECE) & ~(PREFETCH_PIECE - 1);
			if (piece_end > run->end)
				piece_end = run->end;
			run->next = piece_end;
		}
		pthread_mutex_unlock(&run->lock);
		if (!more)
			return;

		uint64_t reached = piece_end;

		ret = run->to_vram ? piece_to_vram(run->s, run->vm, va, piece_end, &short_of_vram, &reached)
				   : piece_to_cpu(run->s, va, piece_end);

		pthread_mutex_lock(&run->lock);
		/* a piece stopped by an error (a hole) counts up to there: the
		 * progress says what moved, not what was tried */
		run->done += reached - va;
		done = run->done;
		run->short_of_vram |= short_of_vram;
		if (ret && (!run->ret || run->ret == -EAGAIN))
			run->ret = ret;
		/* to VRAM the first error ends it, as a fault's would; back,
		 * a range that stays does not keep the others in VRAM */
		if (ret && run->to_vram)
			run->stop = true;
		pthread_mutex_unlock(&run->lock);
		if (!pr)
			continue;
		progress_add(pr, done - run->reported);
		run->reported = done;
		if (run->to_vram && done >= note && len > SVM_PREFETCH_NOTE && done < len) {
			log_info(run->s->ctx, "svm: prefetch to VRAM: %" PRIu64 " of %" PRIu64 " MiB",
				 done >> 20, len >> 20);
			note += SVM_PREFETCH_NOTE;
		}
	}
}

/*
 * Is a CPU likely free for a helper: more than one this process may run on,
 * and fewer threads runnable right now (this one included: the fourth field
 * of /proc/loadavg) than those CPUs, so one is left over. On a machine whose CPUs are all busy a second
 * mover gains nothing and costs: it competes with the device's threads (on
 * the reference device, the server answering the TLB drops and page-table
 * writes of both), and busy-machine runs of svm-prefetch moved 30-60% less
 * per second with it than without. Not the load average: a minute's
 * average still counts the benchmark that ran before on a quiet machine.
 */
static bool spare_cpu(void)
{
	/* the CPUs this process may run on (affinity, cpusets), and
	 * /proc/loadavg read without stdio (its FILE and buffer come from the
	 * C library's heap, which a range may have taken: base/lines.h) */
	cpu_set_t set;
	long n = sched_getaffinity(0, sizeof(set), &set) ? sysconf(_SC_NPROCESSORS_ONLN)
							 : CPU_COUNT(&set);
	struct lines lr;
	char *line;
	int running = 0;

	if (n < 2)
		return false;
	if (lines_open(&lr, "/proc/loadavg"))
		return true; /* cannot tell: the CPUs are there */
	/* "0.52 0.58 0.59 2/135 4242": the fourth field's runnable count,
	 * this thread among them */
	line = lines_next(&lr);
	if (!line || sscanf(line, "%*s %*s %*s %d/", &running) != 1)
		running = 0;
	lines_close(&lr);
	return running < n; /* a CPU is left for the helper */
}

static void *prefetch_helper(void *arg)
{
	ownmem_thread_note(); /* runs SVM moves (base/ownmem.h) */
	prefetch_pieces(arg, NULL, 0);
	return NULL;
}

/* ugpu_vm_prefetch(): [va, +len) of @vm's span (checked by mm/) into VRAM,
 * range by range as faults would make them, or every range in VRAM there
 * back into the process. On the caller's thread, and for a span of several
 * 2 MiB pieces on a helper thread too (struct prefetch_run). */
static int ops_prefetch(void *arg, struct ugpu_vm *vm, uint64_t va, uint64_t len, bool to_vram)
{
	struct svm *s = arg;
	struct prefetch_run run = { .s = s, .vm = vm, .end = va + len, .to_vram = to_vram,
				    .next = va };
	bool helper = false;
	pthread_t thread;
	struct progress pr;
	int ret;

	/* What the process unmapped or freed before this call is seen so
	 * (as for a kernel's submission, ops_sync()): an unmap whose event
	 * was read but not handled yet left its old range in place, and the
	 * prefetch moved the new mapping's pages into it, which the late
	 * collection then dropped (found by test_svm_policy's prefetch race:
	 * a whole 2 MiB buffer read back as zeroes). */
	uffd_sync(s->u);
	gc_wait(s);
	pthread_mutex_lock(&s->lock);
	/* the query's last prefetch location (not policy: nothing to
	 * invalidate); no memory for it only loses that record */
	attr_set_prefetch_locked(s, va, run.end, to_vram ? UGPU_SVM_LOC_DEVICE : UGPU_SVM_LOC_SYSTEM);
	pthread_mutex_unlock(&s->lock);
	progress_begin(&pr, s->ctx, UGPU_PROGRESS_PREFETCH, vm->dev->name, len);
	pthread_mutex_init(&run.lock, NULL);
	if (len >= PREFETCH_SPLIT_MIN) {
		int split = spare_cpu();

		test_point_obj(TEST_POINT_SVM_PREFETCH_SPLIT, &split);
		/* no helper is no error: this thread does every piece */
		if (split)
			helper = !pthread_create(&thread, NULL, prefetch_helper, &run);
	}
	prefetch_pieces(&run, &pr, len);
	if (helper)
		pthread_join(thread, NULL);
	/* what the helper finished after this thread's last piece */
	progress_add(&pr, run.done - run.reported);
	ret = run.ret ? run.ret : run.short_of_vram ? -ENOSPC : 0;
	pthread_mutex_destroy(&run.lock);
	progress_end(&pr, ret);
	return ret;
}

/* @vm goes: no range keeps a map in it, no work serves it. */
static void ops_vm_gone(void *arg, struct ugpu_vm *vm)
{
	struct svm *s = arg;

	pthread_mutex_lock(&s->lock);
	/* faults of its (ended) kernels still queued: nothing to answer */
	list_for_each_safe(l, &s->work) {
		struct svm_work *w = list_entry(l, struct svm_work, link);

		if (w->kind == W_FAULTS && w->f[0].vm == vm) {
			list_del(&w->link);
			free(w->f);
			free(w);
		}
	}
	while (s->cur_vm == vm)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	for (;;) {
		struct svm_range *r = own_first(s, 0, UINT64_MAX, maps_vm, vm);

		if (!r)
			return;
		range_unmap_vms(s, r, is_vm, vm);
		/* CPU touches parked while we owned it go on (review: without
		 * this they waited until the device closed). */
		range_done(s, r);
	}
}

/* A kernel is being submitted: what the process freed or moved before is
 * dropped from the GPU's view first (the events were read, the work may
 * still be queued). */
static void ops_sync(void *arg)
{
	struct svm *s = arg;

	uffd_sync(s->u); /* events already read are marked and queued */
	gc_wait(s);
	rearm_all(s); /* atomic-CPU spans: device atomics fault again */
}

/* Host suspend starts (struct bo_svm_ops): every range in @dev's VRAM
 * comes back into the process, its owner waited for (an eviction under the
 * manager lock could only skip a busy one; review: a range left there was
 * touched by the worker while the device slept). Kernels are held, and
 * serve() moves nothing into VRAM until resume. */
static void svm_suspend_prepare(void *arg, struct ugpu_device *dev)
{
	struct svm *s = arg;
	struct svm_range *r;
	struct svm_dev *sd;
	uint64_t n = 0;

	pthread_mutex_lock(&g_svm_lock);
	/* freed or moved memory collected first, as for fork (a freed range
	 * brought home would put its old bytes into the freed pages) */
	uffd_sync(s->u);
	gc_wait(s);
	pthread_mutex_lock(&s->lock);
	sd = sd_of(s, dev);
	pthread_mutex_unlock(&s->lock);
	while (sd && (r = own_first(s, 0, UINT64_MAX, in_vram_of, sd))) {
		int ret = range_to_cpu(s, r);
		bool stays = ret && r->where == R_VRAM;

		range_done(s, r);
		if (ret == -EAGAIN && stays) {
			gc_wait(s); /* moved or freed meanwhile: collected */
			continue;
		}
		if (stays) {
			log_err(s->ctx, "svm: %s: a range could not leave VRAM before the host suspend: it is backed up with the device's memory",
				dev->name);
			break;
		}
		n++;
	}
	if (sd) {
		pthread_mutex_lock(&s->lock);
		sd->st.svm_evict_count += n;
		pthread_mutex_unlock(&s->lock);
	}
	pthread_mutex_unlock(&g_svm_lock);
}

static const struct bo_svm_ops svm_bo_ops = {
	.evict = svm_evict,
	.suspend_prepare = svm_suspend_prepare,
	.to_peers = svm_to_peers,
};

static const struct vm_svm_ops svm_vm_ops = {
	.vm_new = ops_vm_new,
	.sync = ops_sync,
	.faults = ops_faults,
	.punch = ops_punch,
	.vm_gone = ops_vm_gone,
	.prefetch = ops_prefetch,
};

/* The process's state serving mirror VM @vm, with a call counted: the
 * device's ops for a local device (vm_svm_enter()); for a device served by
 * ugpud, the state its mirror VMs hold (mm/vm_remote.c), while the device
 * is open (its close lets go of the state: svm_down() through the close
 * hook; a call racing ugpu_device_close() is the caller's error, as for
 * every call on the device). NULL: the device let go of shared virtual
 * memory. No lock held. */
struct svm *svm_vm_enter(struct ugpu_vm *vm)
{
	void *arg;

	if (!vm_is_remote(vm))
		return vm_svm_enter(vm->vmm, &arg) ? arg : NULL;
	if (!vm->svm_remote || !remote_is_open(vm->dev))
		return NULL;
	return vm->svm_remote->arg;
}

void svm_vm_leave(struct ugpu_vm *vm)
{
	if (!vm_is_remote(vm))
		vm_svm_leave(vm->vmm);
}

/* ---- the device's step ------------------------------------------------------------------ */

/* @dev joins the process's shared virtual memory (made by the first).
 * @remote: a device served by ugpud: its mirror VMs' faults come from the
 * daemon (mm/vm_remote.c), and its VRAM is reached by its requests; no ops
 * to install in a VM or BO manager. Once: a device already in is left. */
int svm_attach(struct ugpu_device *dev, bool remote)
{
	struct svm_dev *sd;

	pthread_mutex_lock(&g_svm_lock);
	if (g_svm && sd_of(g_svm, dev)) {
		pthread_mutex_unlock(&g_svm_lock);
		return 0;
	}
	sd = calloc(1, sizeof(*sd));
	if (!sd) {
		pthread_mutex_unlock(&g_svm_lock);
		return -ENOMEM;
	}
	sd->dev = dev;
	sd->st.size = sizeof(sd->st);
	tuning_default(&sd->tune);
	if (!g_svm)
		g_svm = svm_new(dev->ctx);
	if (!g_svm) {
		pthread_mutex_unlock(&g_svm_lock);
		free(sd);
		return -ENOMEM;
	}
	pthread_mutex_lock(&g_svm->lock);
	{
		uint64_t used = 0;

		list_for_each(l, &g_svm->devs)
			used |= 1ull << list_entry(l, struct svm_dev, link)->id;
		while (sd->id < SVM_MAX_DEVS && (used & (1ull << sd->id)))
			sd->id++;
	}
	if (sd->id == SVM_MAX_DEVS) {
		pthread_mutex_unlock(&g_svm->lock);
		pthread_mutex_unlock(&g_svm_lock);
		log_err(dev->ctx, "svm: more than %d devices: %s gets no shared virtual memory",
			SVM_MAX_DEVS, dev->name);
		free(sd);
		return remote ? -ENOSPC : 0; /* ugpu_vm_create()'s "no room" */
	}
	list_add_tail(&g_svm->devs, &sd->link);
	g_svm->ndevs++;
	pthread_mutex_unlock(&g_svm->lock);
	if (!remote) {
		vm_svm_register(dev, &svm_vm_ops, g_svm);
		bo_svm_register(dev, &svm_bo_ops, g_svm);
	}
	pthread_mutex_unlock(&g_svm_lock);
	return 0;
}

static int svm_up(struct ugpu_device *dev, const char *uri)
{
	(void)uri;
	if (!dev->exec || !dev->vm_mgr)
		return 0; /* no GPU VM: nothing to mirror */
	return svm_attach(dev, false);
}

/* @r is in @sd's VRAM or DMA space, or mapped in one of its VMs. */
static bool held_by(const struct svm_range *r, const void *arg)
{
	const struct svm_dev *sd = arg;

	if (r->sd == sd)
		return true;
	for (unsigned int k = 0; k < r->nmaps; k++)
		if (r->maps[k].vm->dev == sd->dev)
			return true;
	return false;
}

/*
 * No work for @dev is left once this returns: its faults still queued are
 * answered (their kernels aborted: the device closes) and the worker is not
 * serving one of its VMs. Its ops are unregistered already (no new faults).
 */
static void svm_dev_quiesce(struct svm *s, struct ugpu_device *dev)
{
	struct list_link mine;

	list_init(&mine);
	pthread_mutex_lock(&s->lock);
	list_for_each_safe(l, &s->work) {
		struct svm_work *w = list_entry(l, struct svm_work, link);

		if ((w->kind == W_FAULTS && w->f[0].vm->dev == dev) ||
		    (w->kind == W_PUT && w->sd->dev == dev)) {
			list_del(&w->link);
			list_add_tail(&mine, &w->link);
		}
	}
	while ((s->cur_vm && s->cur_vm->dev == dev) || (s->cur_sd && s->cur_sd->dev == dev))
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	list_for_each_safe(l, &mine) {
		struct svm_work *w = list_entry(l, struct svm_work, link);

		if (w->kind == W_PUT)
			evicted_put(s, w); /* what its evictions left */
		for (size_t i = 0; w->kind == W_FAULTS && i < w->n; i++)
			vm_fault_done(&w->f[i], -EFAULT);
		list_del(&w->link);
		free(w->f);
		free(w);
	}
}

/*
 * The device goes (close or removal): every range it holds comes back into
 * process memory first (an orderly removal still reads VRAM; after a
 * surprise one the reference device's VRAM mapping still reads the last
 * contents), then it detaches; the last device stops the worker.
 */
static void svm_down(struct ugpu_device *dev)
{
	struct svm *s;
	struct svm_dev *sd;

	/* A remote device's fault pollers first: each may be serving
	 * faults through this state, and needs the worker (and the locks
	 * taken below) to finish. */
	if (device_is_remote(dev))
		vm_remote_pollers_stop(dev);
	/* Then the VM manager stops calling us (and waits for the calls
	 * inside, some of which take g_svm_lock): it outlives this step and
	 * what we free below. */
	if (dev->vm_mgr)
		vm_svm_register(dev, NULL, NULL);
	pthread_mutex_lock(&g_svm_lock);
	s = g_svm;
	sd = s ? sd_of(s, dev) : NULL;
	if (!sd) {
		pthread_mutex_unlock(&g_svm_lock);
		return;
	}
	if (!device_is_remote(dev))
		bo_svm_register(dev, NULL, NULL); /* no eviction of its ranges runs from here */
	svm_dev_quiesce(s, dev);
	/* no other device's fault or removal places a range here from now on
	 * (svm/peer.c); the ones doing it finish first, and the loop below
	 * then finds what they placed */
	pthread_mutex_lock(&s->lock);
	sd->going = true;
	while (sd->peer_users)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	test_point_obj(TEST_POINT_SVM_QUIESCED, sd);
	for (;;) {
		struct svm_range *r = own_first(s, 0, UINT64_MAX, held_by, sd);

		if (!r)
			break;
		range_unmap_vms(s, r, on_dev, dev);
		if (range_has_vram(r) && r->sd == sd && range_to_cpu_must(s, r) == -EAGAIN) {
			/* the process moved or freed it meanwhile: its
			 * collection takes it out of VRAM, then look again */
			range_done(s, r);
			gc_wait(s);
			continue;
		}
		if (r->sd == sd && r->where == R_INPLACE)
			range_unmap_dma(s, r);
		range_done(s, r);
	}
	pthread_mutex_lock(&s->lock);
	{
		size_t i;

		for (i = 0; i < s->n; i++)
			if (s->r[i]->first == sd)
				s->r[i]->first = NULL;
	}
	list_del(&sd->link);
	s->ndevs--;
	/* the worker's idle release may have picked it after the quiesce (it
	 * was still listed, holding the device): it is not findable now; wait
	 * for the one in flight (review: a use after free) */
	while (s->cur_sd == sd)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
	if (sd->rpm_held)
		rpm_put_dev(dev);
	sd->st.svm_ranges = sd->st.svm_vram_bytes = 0;
	pthread_mutex_lock(&dev->pub_lock);
	dev->svm_last = sd->st; /* what ugpu_device_svm_stats() answers from now on */
	pthread_mutex_unlock(&dev->pub_lock);
	free(sd);
	if (!s->ndevs) {
		g_svm = NULL;
		svm_free(s);
	}
	pthread_mutex_unlock(&g_svm_lock);
}

static struct device_component svm_component = {
	.name = "svm",
	.order = DEVICE_STEP_SVM,
	.life = DEVICE_LIFE_DEVICE,
	.up = svm_up,
	.down = svm_down,
};
DEVICE_COMPONENT(svm_component)

/* ---- devices served by ugpud (docs/daemon.md, "SVM for clients") ------------------------ */

/* The first mirror VM of a remote device attaches it (mm/vm_remote.c). */
static int remote_attach(struct ugpu_device *dev, void **arg)
{
	int ret = svm_attach(dev, true);

	if (!ret) {
		pthread_mutex_lock(&g_svm_lock);
		*arg = g_svm;
		pthread_mutex_unlock(&g_svm_lock);
	}
	return ret;
}

static const struct vm_remote_svm_hooks svm_remote_hooks = {
	.attach = remote_attach,
	.ops = &svm_vm_ops,
};

/* Its close (ugpu_device_close(), still connected) takes its ranges home,
 * as svm_down() does a local device's at its teardown. */
static void __attribute__((constructor)) svm_remote_register(void)
{
	vm_remote_svm_register(&svm_remote_hooks);
	remote_set_close_hook(svm_down);
}

/* ---- the public API ---------------------------------------------------------------------- */

/* A device served by ugpud answers from this process's counters: its
 * shared virtual memory runs here (docs/daemon.md, "SVM for clients"). */
UGPU_API int ugpu_device_svm_stats(struct ugpu_device *dev, struct ugpu_svm_stats *st)
{
	struct ugpu_svm_stats o = { .size = sizeof(o) };
	struct svm_dev *sd;
	size_t i;

	if (!dev || !st || st->size < sizeof(st->size))
		return -EINVAL;
	if (!(dev->caps & UGPU_DEVICE_CAP_GPUVM))
		return -EOPNOTSUPP;
	pthread_mutex_lock(&g_svm_lock);
	if (g_svm) {
		pthread_mutex_lock(&g_svm->lock);
		sd = sd_of(g_svm, dev);
		if (sd) {
			o = sd->st;
			o.svm_ranges = 0;
			for (i = 0; i < g_svm->n; i++)
				o.svm_ranges += g_svm->r[i]->sd == sd;
		}
		pthread_mutex_unlock(&g_svm->lock);
	}
	pthread_mutex_unlock(&g_svm_lock);
	if (!o.svm_pagefault_count) {
		/* the step went (close, removal): its last counters */
		pthread_mutex_lock(&dev->pub_lock);
		if (dev->svm_last.size)
			o = dev->svm_last;
		pthread_mutex_unlock(&dev->pub_lock);
	}
	o.size = st->size;
	memcpy(st, &o, st->size < sizeof(o) ? st->size : sizeof(o));
	return 0;
}

/* Counters of this module in the stats registry (base/stats.h). */
struct svm_stats_snap {
	struct ugpu_svm_stats s;
	struct stat_hist_snap fault;
	struct stat_hist_snap window;
};

static int svm_stats_snapshot(struct ugpu_device *dev, void *buf)
{
	struct svm_stats_snap *snap = buf;
	int ret;

	snap->s.size = sizeof(snap->s);
	ret = ugpu_device_svm_stats(dev, &snap->s);
	stat_hist_read(&dev->svm_fault_hist, &snap->fault);
	stat_hist_read(&dev->svm_window_hist, &snap->window);

	/* A device without a GPU VM has no shared virtual memory: its SVM
	 * counters read 0 (the buffer comes zeroed), so every device lists the
	 * same names at the same indexes. */
	return ret == -EOPNOTSUPP ? 0 : ret;
}

static const struct stat_desc svm_stats_descs[] = {
	STAT_NAMED("svm_pagefault_count", struct ugpu_svm_stats, svm_pagefault_count, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "GPU page faults on mirrored memory"),
	STAT_NAMED("svm_4K_pagefault_count", struct ugpu_svm_stats, svm_4K_pagefault_count, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "GPU page faults that made or found a 4 KiB range"),
	STAT_NAMED("svm_64K_pagefault_count", struct ugpu_svm_stats, svm_64K_pagefault_count, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "GPU page faults that made or found a 64 KiB range"),
	STAT_NAMED("svm_2M_pagefault_count", struct ugpu_svm_stats, svm_2M_pagefault_count, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "GPU page faults that made or found a 2 MiB range"),
	STAT_NAMED("svm_4K_migrate_count", struct ugpu_svm_stats, svm_4K_migrate_count, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "4 KiB ranges moved"),
	STAT_NAMED("svm_64K_migrate_count", struct ugpu_svm_stats, svm_64K_migrate_count, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "64 KiB ranges moved"),
	STAT_NAMED("svm_2M_migrate_count", struct ugpu_svm_stats, svm_2M_migrate_count, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "2 MiB ranges moved"),
	STAT_NAMED("svm_4K_migrate_us", struct ugpu_svm_stats, svm_4K_migrate_us, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_US,
		   "time moving 4 KiB ranges"),
	STAT_NAMED("svm_64K_migrate_us", struct ugpu_svm_stats, svm_64K_migrate_us, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_US,
		   "time moving 64 KiB ranges"),
	STAT_NAMED("svm_2M_migrate_us", struct ugpu_svm_stats, svm_2M_migrate_us, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_US,
		   "time moving 2 MiB ranges"),
	STAT_NAMED("svm_device_copy_kb", struct ugpu_svm_stats, svm_device_copy_kb, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_KIB,
		   "data moved into VRAM"),
	STAT_NAMED("svm_cpu_copy_kb", struct ugpu_svm_stats, svm_cpu_copy_kb, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_KIB,
		   "data moved back to system memory"),
	STAT_NAMED("svm_tlb_inval_count", struct ugpu_svm_stats, svm_tlb_inval_count, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "GPU TLB invalidations for shared virtual memory"),
	STAT_NAMED("svm_cpu_fault_count", struct ugpu_svm_stats, svm_cpu_fault_count, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "CPU faults on ranges in VRAM"),
	STAT_NAMED("svm_in_place_count", struct ugpu_svm_stats, svm_in_place_count, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "ranges used in place (not moved)"),
	STAT_NAMED("svm_gc_count", struct ugpu_svm_stats, svm_gc_count, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "ranges collected after munmap, free or mremap"),
	STAT_NAMED("svm_abort_count", struct ugpu_svm_stats, svm_abort_count, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "kernels aborted on a fault SVM could not serve"),
	STAT_NAMED("svm_ranges", struct ugpu_svm_stats, svm_ranges, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_NONE,
		   "live ranges"),
	STAT_NAMED("svm_vram_bytes", struct ugpu_svm_stats, svm_vram_bytes, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_BYTES,
		   "VRAM held by ranges"),
	STAT_NAMED("svm_lost_count", struct ugpu_svm_stats, svm_lost_count, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "ranges whose only copy was lost (surprise removal)"),
	STAT_NAMED("svm_lost_bytes", struct ugpu_svm_stats, svm_lost_bytes, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_BYTES,
		   "bytes of the ranges lost"),
	STAT_NAMED("svm_evict_count", struct ugpu_svm_stats, svm_evict_count, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "ranges evicted from VRAM for room"),
	STAT_NAMED("svm_idle_release_count", struct ugpu_svm_stats, svm_idle_release_count, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "ranges sent home so an idle device could sleep"),
	STAT_NAMED("svm_prefetch_count", struct ugpu_svm_stats, svm_prefetch_count, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "ranges prefetched to VRAM"),
	STAT_NAMED("svm_fault_ahead_count", struct ugpu_svm_stats, svm_fault_ahead_count, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "2 MiB ranges the stream prefetcher moved to VRAM ahead of a kernel walking a mapping"),
	STAT_NAMED("svm_peer_migrate_count", struct ugpu_svm_stats, svm_peer_migrate_count, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "ranges that arrived in this device's VRAM from a peer's (over the fabric, or a removal's)"),
	STAT_NAMED("svm_peer_map_count", struct ugpu_svm_stats, svm_peer_map_count, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "GPU faults served by mapping a range in a peer's VRAM in place"),
	STAT_NAMED("svm_peer_pref_count", struct ugpu_svm_stats, svm_peer_pref_count, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "ranges another device's faults put in this device's VRAM, advised to be here"),
	STAT_HIST("svm_pagefault_latency_us", struct svm_stats_snap, fault, UGPU_STAT_UNIT_US,
		  "time serving one GPU page fault (find or make the range, move it, map it)"),
	STAT_HIST("svm_migrate_window_us", struct svm_stats_snap, window, UGPU_STAT_UNIT_US,
		  "time a range's pages were out of the CPU's reach while they moved into VRAM (a racing CPU access waits that long, then for the way back)"),
};

STATS_GROUP(svm_stats_group, "svm", struct svm_stats_snap, svm_stats_snapshot, svm_stats_descs)
