/* SPDX-License-Identifier: MIT */
/*
 * Shared virtual memory: the collection of ranges whose memory the process
 * unmapped, freed or moved (munmap, MADV_DONTNEED/free, mremap). The
 * handler (svm/handler.c) marks the ranges and queues one item per event,
 * in the order they happened; a worker takes each range the item covers,
 * copies back from VRAM what the process still has (where later events
 * moved it: struct svm_follow) and drops the range. Finished items stay
 * visible to earlier ones until those end (svm.gc_done).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>

#include "base/list.h"
#include "base/test_point.h"
#include "mm/bo.h"
#include "mm/uffd.h"
#include "svm/svm.h"

/*
 * Where the bytes the process had at @addr are now: each unmap, free or
 * mremap it made after the event being collected, still queued as a GC item
 * (in the order they happened), moved them on or let them go. *@run: how
 * many bytes from @addr (at most @len) went the same way; *@gone: a later
 * unmap or free took them (nothing is to be copied there: the pages read
 * zeroes or belong to a new mapping). Lock held.
 */
static uint64_t moved_to_locked(struct svm *s, uint64_t seq, uint64_t addr, uint64_t len,
				uint64_t *run, bool *gone)
{
	*run = len;
	*gone = false;
	for (;;) {
		struct svm_work *w = NULL;

		/* the next event after @seq, queued or being collected by
		 * another thread (gc_drain_locked()) */
		list_for_each(l, &s->work) {
			struct svm_work *c = list_entry(l, struct svm_work, link);

			if (c->kind == W_GC && c->seq > seq && (!w || c->seq < w->seq))
				w = c;
		}
		list_for_each(l, &s->gc_running) {
			struct svm_work *c = list_entry(l, struct svm_work, run);

			if (c->seq > seq && (!w || c->seq < w->seq))
				w = c;
		}
		/* or one that ended already, while this one was running */
		list_for_each(l, &s->gc_done) {
			struct svm_work *c = list_entry(l, struct svm_work, run);

			if (c->seq > seq && (!w || c->seq < w->seq))
				w = c;
		}
		if (!w)
			return addr;
		seq = w->seq;
		if (addr >= w->start && addr < w->end) {
			if (w->end - addr < *run)
				*run = w->end - addr;
			if (w->gc != GC_REMAP) {
				*gone = true;
				return addr;
			}
			addr = w->to + (addr - w->start);
		} else if (addr < w->start && addr + *run > w->start) {
			*run = w->start - addr; /* the rest goes another way */
		}
	}
}

/*
 * copy_back_must() of what @r holds for the process's [dst, +len), to
 * where those bytes are now: a collection runs after the events it
 * follows, and a later mremap may have moved the memory meanwhile, a later
 * free or unmap let it go. Before, the bytes went to the old address: no
 * longer mapped, they were dropped (found by test_svm_model: a range in
 * VRAM, a free of pages in its middle, an mremap of the buffer: the rest
 * of it read zeroes); freed again, the old bytes came back where zeroes
 * belong (a free of part of a range, then of all of it).
 */
static bool follow_holds(struct svm *s, const struct svm_follow *f, uint64_t dst, uint64_t len)
{
	uint64_t run, to;
	bool gone;

	pthread_mutex_lock(&s->lock);
	to = moved_to_locked(s, f->seq, f->orig + (dst - f->to), len, &run, &gone);
	pthread_mutex_unlock(&s->lock);
	return !gone && to == dst && run == len;
}

static void copy_back_followed(struct svm *s, uint64_t seq, struct svm_range *r, uint64_t off,
			       uint64_t len, uint64_t dst)
{
	/* A free or unmap zaps its pages once its event was read: the events
	 * read so far handled (queued), the zaps already done are known */
	uffd_sync(s->u);
	while (len) {
		uint64_t run, to;
		bool synced = false, gone;

		for (;;) {
			struct svm_follow f = { .seq = seq, .orig = dst, .holds = follow_holds };
			int ret;

			pthread_mutex_lock(&s->lock);
			to = moved_to_locked(s, seq, dst, len, &run, &gone);
			pthread_mutex_unlock(&s->lock);
			if (gone)
				break;
			/* each ioctl checks this decision again (struct
			 * svm_follow): -ESTALE, an event came between: decide
			 * again */
			f.to = to;
			ret = copy_back_must(s, r, off, run, to, &f);
			if (ret == -ESTALE)
				continue;
			if (ret != -ENOENT || synced)
				break;
			/* not mapped there: the move may be an event the
			 * handler has read (the mremap returned) but not
			 * queued yet; once it is, look again (pages already
			 * copied are kept: -EEXIST) */
			uffd_sync(s->u);
			synced = true;
		}
		off += run;
		dst += run;
		len -= run;
	}
}

/*
 * @r (owned, gc_pending) lost [start, end) of its memory (@gc), or saw it
 * move to @to (GC_REMAP). What is still the process's goes back there (from
 * VRAM), then the range goes. The CPU touches parked on it wake after.
 */
static void gc_range(struct svm *s, struct svm_range *r, const struct svm_work *w)
{
	uint64_t start = w->start, end = w->end, to = w->to;
	enum gc_kind gc = w->gc;
	uint64_t rs = r->start, re = r->start + r->size;

	range_unmap_gpu(s, r);
	if (r->where == R_VRAM) {
		uint64_t a = rs > start ? rs : start, b = re < end ? re : end;

		bo_pm_wait_awake(r->sd->dev);
		test_point_obj(TEST_POINT_SVM_GC_COPY, r);
		/* the part outside the event stays where it was; a moved part
		 * goes with its mapping (the range goes: copies that keep
		 * failing lose their bytes, loudly) */
		if (rs < a)
			copy_back_followed(s, w->seq, r, 0, a - rs, rs);
		if (b < re)
			copy_back_followed(s, w->seq, r, b - rs, re - b, b);
		if (gc == GC_REMAP && a < b)
			copy_back_followed(s, w->seq, r, a - rs, b - a, to + (a - start));
	}
	pthread_mutex_lock(&s->lock);
	if (r->first)
		r->first->st.svm_gc_count++;
	pthread_mutex_unlock(&s->lock);
	range_destroy(s, r);
	uffd_wake(s->u, rs, re - rs);
	if (gc == GC_REMAP)
		uffd_wake(s->u, to, end - start);
}

/* The lowest seq of the GC items queued or running, or UINT64_MAX. */
static uint64_t gc_oldest_locked(struct svm *s)
{
	uint64_t oldest = UINT64_MAX;

	list_for_each(l, &s->work) {
		struct svm_work *c = list_entry(l, struct svm_work, link);

		if (c->kind == W_GC && c->seq < oldest)
			oldest = c->seq;
	}
	list_for_each(l, &s->gc_running) {
		struct svm_work *c = list_entry(l, struct svm_work, run);

		if (c->seq < oldest)
			oldest = c->seq;
	}
	return oldest;
}

/* A GC item ended: count it, and let CPU touches of the addresses an
 * mremap moved data to go on (the data is there now). Then free it, or,
 * while an earlier item is still to copy back, keep it on gc_done: that
 * copy back must still see this free, unmap or move (a free of an mremap's
 * new place ran, and ended, before the mremap's collection copied the old
 * bytes there: test_svm_model). Items kept that no earlier one needs any
 * more go. Lock held. */
static void gc_item_free_locked(struct svm *s, struct svm_work *w)
{
	if (w->gc == GC_REMAP) {
		for (unsigned int i = 0; i < s->nremap; i++)
			if (s->remap[i].start == w->to &&
			    s->remap[i].end == w->to + (w->end - w->start)) {
				s->remap[i] = s->remap[--s->nremap];
				break;
			}
		uffd_wake(s->u, w->to, w->end - w->start);
	}
	free(w);
}

void gc_item_done_locked(struct svm *s, struct svm_work *w)
{
	uint64_t oldest;

	list_del(&w->run);
	s->gc_inflight--;
	oldest = gc_oldest_locked(s);
	if (w->seq > oldest)
		list_add_tail(&s->gc_done, &w->run);
	else
		gc_item_free_locked(s, w);
	list_for_each_safe(l, &s->gc_done) {
		struct svm_work *c = list_entry(l, struct svm_work, run);

		if (c->seq < oldest) {
			list_del(&c->run);
			gc_item_free_locked(s, c);
		}
	}
}

/* [start, end) holds (part of) where a collection not ended yet, or
 * ended before an earlier one, may copy bytes: the destination of an
 * mremap. Lock held. */
bool gc_remap_target_locked(struct svm *s, uint64_t start, uint64_t end)
{
	struct list_link *lists[] = { &s->work, &s->gc_running, &s->gc_done };

	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
		list_for_each(l, lists[i]) {
			struct svm_work *c = i ? list_entry(l, struct svm_work, run)
					       : list_entry(l, struct svm_work, link);

			if ((i || c->kind == W_GC) && c->gc == GC_REMAP && c->to < end &&
			    c->to + (c->end - c->start) > start)
				return true;
		}
	return false;
}

bool remap_pending_locked(struct svm *s, uint64_t addr)
{
	for (unsigned int i = 0; i < s->nremap; i++)
		if (addr >= s->remap[i].start && addr < s->remap[i].end)
			return true;
	return false;
}

static bool gc_wanted(const struct svm_range *r, const void *arg)
{
	(void)arg;
	return r->gc_pending;
}

void gc_run(struct svm *s, const struct svm_work *w)
{
	struct svm_range *r;

	while ((r = own_first(s, w->start, w->end, gc_wanted, NULL)))
		gc_range(s, r, w);
}
