/* SPDX-License-Identifier: MIT */
/*
 * Shared virtual memory: the userfaultfd handler thread (mm/uffd.c runs it).
 * It waits only for a zap of ours, bounded (wait_zap_locked()): a CPU
 * touch is answered at once (a small range in VRAM brought back right
 * here when nothing needs a wait: back_on_handler_locked()), parked (no
 * wake) until the range's owner wakes it, or queued for the worker; unmap,
 * free and move events mark the ranges and queue their collection.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <ugpu/vm.h>

#include "base/clock.h"
#include "base/list.h"
#include "base/log.h"
#include "base/test_point.h"
#include "mm/bo.h"
#include "mm/uffd.h"
#include "mm/vm.h"
#include "src/device.h"
#include "src/rpm.h"
#include "svm/svm.h"
#include "vfio/dma.h"

/* ---- the userfaultfd handler thread: answer at once, never wait ----------------------- */

static void on_cpu_fault(struct svm *s, uint64_t addr, uint64_t flags, uint32_t tid)
{
	uint64_t page = addr & ~(SVM_4K - 1);
	struct svm_range *r;
	bool own;
	int ret;

	pthread_mutex_lock(&s->lock);
	r = range_find(s, page);
	/* the owner's own read of a page the process freed meanwhile: what a
	 * first touch gets (the free's collection drops it after) */
	own = r && r->busy && r->reader && tid && (uint32_t)r->reader == tid;
	if (!own && ((r && ((r->busy && !r->populating) || r->gc_pending)) ||
	    (!r && remap_pending_locked(s, page)))) {
		/* moving, waiting to be dropped, or where an mremap's data is
		 * still to arrive: whoever owns it wakes the addresses when
		 * done, and the thread faults again */
		pthread_mutex_unlock(&s->lock);
		return;
	}
	/* in VRAM: it comes back; a store to a read-mostly range: its VRAM
	 * copy goes first (the store waits) */
	if (!own && r && ((r->where == R_VRAM && !(flags & UFFD_PAGEFAULT_FLAG_WP)) ||
		  (r->where == R_DUP && (flags & UFFD_PAGEFAULT_FLAG_WP)))) {
		/* a small range, nothing to wait for: served right here */
		if (r->where == R_VRAM && back_on_handler_locked(s, r))
			return;
		if (!r->back_queued) {
			struct svm_work *w = calloc(1, sizeof(*w));

			if (w) {
				r->back_queued = true;
				w->kind = W_BACK;
				w->start = r->start;
				work_queue(s, w);
			} else {
				/* no memory for the item: the thread faults
				 * again (and asks again) rather than sleep on
				 * work nobody queued */
				pthread_mutex_unlock(&s->lock);
				uffd_wake(s->u, page, SVM_4K);
				return;
			}
		}
		pthread_mutex_unlock(&s->lock);
		return;
	}
	pthread_mutex_unlock(&s->lock);
	if (flags & UFFD_PAGEFAULT_FLAG_WP) {
		/* a stale protection (its range is not moving): lift it */
		uffd_wp(s->u, page, SVM_4K, false);
		return;
	}
	/* Not ours to serve (no range, or one in process memory): the page
	 * the kernel would have given it. */
	if (flags & UFFD_PAGEFAULT_FLAG_WRITE)
		ret = uffd_copy(s->u, page, zero_page, SVM_4K, true);
	else
		ret = uffd_zeropage(s->u, page, SVM_4K);
	if (ret == -EEXIST || ret == -EAGAIN)
		uffd_wake(s->u, page, SVM_4K);
	else if (ret && ret != -ENOENT)
		log_warn(s->ctx, "svm: resolving a CPU fault at 0x%" PRIx64 " failed: %s", addr,
			 ugpu_strerror(ret));
}

/* Our own zap's REMOVE event was read (its madvise goes on now): read
 * nothing more until the madvise returned, so that an unmap meanwhile keeps
 * its thread waiting for its event, not mapping and filling new memory at
 * the address the madvise is about to look up again (svm/migrate.c
 * take_pages()). Reads are one message at a time meanwhile, so nothing read
 * with ours let a thread go. @r stays: its owner waits in uffd_sync() for
 * this read's handling. Not when the zapper sleeps on an event again: a
 * repeat REMOVE after a split of the mapping, or ours still queued behind
 * a free of exactly the range that was taken for ours (the review: each
 * held the handler for its whole bound). Bounded (200 ms, then warned): a
 * zapper's way out of its madvise waits for nothing of ours, and one that
 * only a busy machine keeps from running must still be seen when it
 * repeats its REMOVE (20 ms, given up, made the repeat a free). */
static void wait_zap_locked(struct svm *s, struct svm_range *r)
{
	uint64_t deadline = now_ns() + 200000000ull;

	while (r->zapping) {
		struct timespec ts = monotonic_deadline_after_ms(1);

		if (uffd_zapper_state(r->zap_tid) == ZAPPER_EVENT_WAIT) {
			/* Its next REMOVE, a part, is ours: the repeat for the
			 * mapping after the one it zapped, which starts where
			 * that one ends (at or after, past a hole). A free of
			 * another thread inside the range may be queued before
			 * it: starting lower, it is the process's (the review:
			 * taken for the repeat, the freed words read the old
			 * bytes, test_free_before_zap_repeat). */
			struct vma v;
			uint64_t from = r->zap_repeat_after ? r->zap_repeat_after : r->start;

			if (!vma_lookup(from, &v) && v.end < r->start + r->size) {
				r->zap_repeat = true;
				r->zap_repeat_after = v.end;
			}
			return;
		}
		if (now_ns() >= deadline) {
			log_warn(s->ctx, "svm: the zap of [0x%" PRIx64 ", +0x%" PRIx64 ") took over 200 ms: reading events again (a repeat of its REMOVE would be taken for a free)",
				 r->start, r->size);
			return;
		}
		pthread_cond_timedwait(&s->cond, &s->lock, &ts);
	}
}

/* Is the REMOVE of [start, end) @r's own zap's? Exactly its span, once; a
 * part of it starting at its start while that is still awaited and an unmap
 * of the rest was seen (the kernel zaps the mapping it finds, shrunk); or a
 * part after the zapper was seen waiting on an event again (the madvise's
 * repeat after a split of the mapping), from the end of the mapping it
 * zapped on. A second REMOVE of exactly the range
 * is the process's free (allocators purge aligned 2 MiB: taken for ours it
 * was never collected, the review before), and so is any other. The
 * repeat's mark is not checked against @zapping: the kernel lets the zapper
 * go when the repeat is read, and its madvise may return before this
 * handling (the upper half of a split range read zero one run in ten under
 * load); the zapper clears the mark once its events were handled. Lock
 * held. */
static bool own_remove_locked(struct svm_range *r, uint64_t start, uint64_t end)
{
	bool exact = start == r->start && end == r->start + r->size;
	bool part = start >= r->start && end <= r->start + r->size && !exact;

	if (r->self_zap && (exact || (part && start == r->start && end == r->zap_unmapped_from))) {
		r->self_zap = false;
		return true;
	}
	if (r->zap_repeat && part && start >= r->zap_repeat_after) {
		r->zap_repeat = false;
		r->zap_repeat_after = start;
		return true;
	}
	return false;
}

/* The process unmapped (@gc GC_UNMAP), freed (GC_REMOVE) or moved
 * (GC_REMAP, to @to) [start, end): mark the ranges, queue the work. The
 * unmapping thread continues when we return (it waited for the read). */
static void on_event(struct svm *s, uint64_t start, uint64_t end, enum gc_kind gc, uint64_t to)
{
	struct svm_range *zap = NULL;
	bool any = false, wp;
	size_t i;
	uint64_t ev[3] = { start, end, gc };

	test_point_obj(TEST_POINT_SVM_EVENT, ev);
	pthread_mutex_lock(&s->lock);
	s->event_seq++;
	for (i = range_lower(s, start); i < s->n && s->r[i]->start < end; i++) {
		struct svm_range *r = s->r[i];

		/* our own MADV_DONTNEED of a range we moved (the process's
		 * free of more is the process's; a second REMOVE of exactly
		 * the range is the process's free, allocators purge aligned
		 * 2 MiB: taken for ours, it was never collected before) */
		if (gc == GC_REMOVE && own_remove_locked(r, start, end)) {
			zap = r;
			continue;
		}
		if (gc != GC_REMOVE && r->self_zap && start > r->start && start < r->zap_unmapped_from)
			r->zap_unmapped_from = start;
		r->gc_pending = true;
		any = true;
	}
	/* the moved mapping keeps its registration, write protection included */
	wp = gc == GC_REMAP && region_wp_locked(s, start, end);
	if (gc != GC_REMOVE) {
		region_drop(s, start, end);
		attr_reset_locked(s, start, end); /* advice goes with the mapping */
	}
	if (gc == GC_REMAP)
		region_add(s, to, to + (end - start), wp);
	/* No range here, but an earlier mremap's collection is still to copy
	 * its bytes here: it must know of this free, unmap or move (queued,
	 * the item is one it follows; test_svm_model: an mremap, then a free
	 * of the new place, and the old bytes came back) */
	if (!any && gc_remap_target_locked(s, start, end))
		any = true;
	if (any) {
		struct svm_work *w = calloc(1, sizeof(*w));

		if (w) {
			*w = (struct svm_work){ .kind = W_GC, .start = start, .end = end, .gc = gc,
						.to = to };
			if (gc == GC_REMAP && s->nremap < SVM_REMAP_PENDING) {
				s->remap[s->nremap].start = to;
				s->remap[s->nremap].end = to + (end - start);
				s->nremap++;
			} else if (gc == GC_REMAP) {
				log_warn(s->ctx, "svm: more than %d mremaps of shared memory in flight: a touch of [0x%" PRIx64 ", +0x%" PRIx64 ") before its data arrives may see zeroes",
					 SVM_REMAP_PENDING, to, end - start);
			}
			work_queue(s, w);
		} else {
			log_err(s->ctx, "svm: out of memory for a garbage-collection item");
		}
	}
	if (zap)
		wait_zap_locked(s, zap);
	pthread_mutex_unlock(&s->lock);
}

static void on_msg(void *owner, const struct uffd_msg *m)
{
	struct svm *s = owner;

	switch (m->event) {
	case UFFD_EVENT_PAGEFAULT:
		on_cpu_fault(s, m->arg.pagefault.address, m->arg.pagefault.flags,
			     m->arg.pagefault.feat.ptid);
		break;
	case UFFD_EVENT_UNMAP:
		on_event(s, m->arg.remove.start, m->arg.remove.end, GC_UNMAP, 0);
		break;
	case UFFD_EVENT_REMOVE:
		on_event(s, m->arg.remove.start, m->arg.remove.end, GC_REMOVE, 0);
		break;
	case UFFD_EVENT_REMAP:
		on_event(s, m->arg.remap.from, m->arg.remap.from + m->arg.remap.len, GC_REMAP,
			 m->arg.remap.to);
		break;
	default:
		break;
	}
}

const struct uffd_owner_ops svm_uffd_ops = { .msg = on_msg };
