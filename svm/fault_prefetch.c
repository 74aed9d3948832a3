/* SPDX-License-Identifier: MIT */
/*
 * Shared virtual memory: the prefetchers a GPU fault drives, run by the
 * worker after it served the fault (svm/fault.c): the tree prefetcher
 * (fault_prefetch(): the rest of a 2 MiB block most of whose 64 KiB pieces
 * came in) and the stream prefetcher (fault_ahead(): the next 2 MiB ranges
 * of a kernel walking a mapping upwards). docs/svm.md, "Learned behaviour".
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "base/alloc.h"
#include "base/ownmem.h"
#include "base/test_point.h"
#include "mm/bo.h"
#include "mm/bo_rpm.h"
#include "mm/vram.h"
#include "mm/vm.h"
#include "src/device.h"
#include "src/remote.h"
#include "src/suspend.h"
#include "svm/svm.h"

/*
 * May a prefetcher move memory of mapping @v that the GPU has not asked
 * for? Not in the brk heap or a program's or library's .bss (the anonymous
 * mapping right after a file's): the driver's own objects and globals live
 * there, and moving pieces the GPU never asked for would take them from
 * under its threads (the open heap/.bss finding, made likelier;
 * test_svm_matrix bss-free-each saw neighbours moved).
 */
static bool prefetch_may_touch(const struct vma *v)
{
	struct vma prev;

	if (!strcmp(v->what, "[heap]"))
		return false;
	return !(v->start && !vma_lookup(v->start - 1, &prev) && prev.end == v->start &&
		 prev.what[0] == '/');
}

/*
 * The fault prefetcher (UVM's tree prefetcher, one level): @f was served
 * into VRAM as a 64 KiB range (its 2 MiB block cannot be one range: the
 * CPU mapping or the advice ends inside it), in memory of the program's
 * own (not the heap or a .bss, which hold the driver's data too). When most of the block's
 * 64 KiB pieces that the mapping holds are in VRAM, the others follow now,
 * in one go, instead of one fault each.
 */
void fault_prefetch(struct svm *s, const struct vm_fault *f)
{
	uint64_t block = f->va & ~(SVM_2M - 1), lo, hi, in = 0, n = 0, p;
	struct svm_range *r;
	struct svm_dev *sd;
	unsigned int pct;
	struct vma v;
	size_t i;

	pthread_mutex_lock(&s->lock);
	sd = sd_of(s, f->vm->dev);
	r = range_find(s, f->va);
	if (!sd || !sd->tune.fault_prefetch_enable || !r || r->size != SVM_64K ||
	    r->where != R_VRAM || r->sd != sd) {
		pthread_mutex_unlock(&s->lock);
		return;
	}
	pct = sd->tune.fault_prefetch_pct;
	for (i = range_lower(s, block); i < s->n && s->r[i]->start < block + SVM_2M; i++)
		if (s->r[i]->where == R_VRAM && s->r[i]->sd == sd)
			in += s->r[i]->size / SVM_64K;
	pthread_mutex_unlock(&s->lock);
	if (vma_lookup(f->va, &v) || !prefetch_may_touch(&v))
		return;
	lo = v.start > block ? (v.start + SVM_64K - 1) & ~(SVM_64K - 1) : block;
	hi = v.end < block + SVM_2M ? v.end & ~(SVM_64K - 1) : block + SVM_2M;
	if (hi <= lo || in * 100 < (uint64_t)pct * ((hi - lo) / SVM_64K))
		return;
	for (p = lo; p < hi; p += SVM_64K) {
		struct vm_fault pf = *f;
		bool done;

		pthread_mutex_lock(&s->lock);
		r = range_find(s, p);
		done = r && r->where == R_VRAM;
		pthread_mutex_unlock(&s->lock);
		if (done)
			continue;
		pf.va = p;
		pf.access = UGPU_ACCESS_READ;
		if (serve(s, &pf, SERVE_FAULT_PREFETCH, NULL))
			break;
		pthread_mutex_lock(&s->lock);
		r = range_find(s, p);
		n += r && r->where == R_VRAM; /* (advice may keep it in place) */
		pthread_mutex_unlock(&s->lock);
	}
	pthread_mutex_lock(&s->lock);
	sd->st.svm_fault_prefetch_count += n;
	pthread_mutex_unlock(&s->lock);
}

/*
 * The stream prefetcher: @f was served, and its 2 MiB range and the one
 * below it are both in this device's VRAM: a kernel walking a mapping
 * upwards. The next tune.fault_ahead 2 MiB ranges of the same mapping move
 * in now, after the batch's reply, while the kernel reads this one: the
 * copies overlap the kernel's reads instead of stalling it one fault at a
 * time (docs/svm.md, "Learned behaviour"). Bounded: it stops at the end of
 * the mapping or the mirror, at a range that is not plainly movable
 * (serve(), SERVE_FAULT_AHEAD), when VRAM has no free room (it never
 * evicts), and as soon as other work is queued for the worker.
 *
 * Its moves may outlive the kernel that asked for them (it runs after the
 * reply), so they hold off what a running kernel holds off (review of
 * 2026-12-07, both lost a range): a host-suspend transition, which would
 * back up the range's new VRAM before the copy into it ended
 * (host_pm_try_enter(): none runs now, none starts until done; when one
 * runs nothing moves ahead), and a runtime suspend (a reference taken only
 * if the device is awake: speculation never wakes it).
 */
void fault_ahead(struct svm *s, const struct vm_fault *f)
{
	uint64_t next, mirror_end = f->vm->mirror_start + f->vm->mirror_size, used, avail, n = 0;
	struct ugpu_device *dev = f->vm->dev;
	struct svm_range *r, *prev;
	bool entered = false, have_fv = false;
	struct rpm *held = NULL;
	struct svm_dev *sd;
	unsigned int depth;
	struct vma fv;

	pthread_mutex_lock(&s->lock);
	sd = sd_of(s, dev);
	r = range_find(s, f->va);
	depth = sd ? sd->tune.fault_ahead : 0;
	prev = r && r->start >= SVM_2M ? range_find(s, r->start - SVM_2M) : NULL;
	if (!depth || !r || r->size != SVM_2M || r->where != R_VRAM || r->sd != sd || !prev ||
	    prev->size != SVM_2M || prev->where != R_VRAM || prev->sd != sd ||
	    device_is_remote(dev)) {
		pthread_mutex_unlock(&s->lock);
		return;
	}
	next = r->start + SVM_2M;
	pthread_mutex_unlock(&s->lock);
	for (unsigned int k = 0; k < depth; k++, next += SVM_2M) {
		struct vm_fault pf = *f;
		bool busy, in, elsewhere;
		struct vma v;

		if (next + SVM_2M > mirror_end)
			break;
		pthread_mutex_lock(&s->lock);
		busy = s->stop || !list_empty(&s->work);
		r = range_find(s, next);
		in = r && r->where == R_VRAM && r->sd == sd;
		elsewhere = r && r->where != R_CPU && !in;
		pthread_mutex_unlock(&s->lock);
		if (busy)
			break; /* a fault or a CPU touch waits: it goes first */
		if (in)
			continue; /* ahead already (the usual case): nothing to do */
		if (elsewhere)
			break; /* in place, a copy, a peer's: its own fault decides */
		/* the mapping of the faulting range, looked up once and only
		 * when a range is to move (the usual call has none): the walk
		 * stays inside it (the next mapping, even of the same kind,
		 * is someone else's memory: it was the page pool once, moved
		 * into VRAM, and the worker then faulted on its own pool and
		 * waited for itself: review of 2026-12-07, the ASan matrix's
		 * malloc-large hang) */
		if (!have_fv) {
			if (vma_lookup(f->va, &fv))
				break;
			have_fv = true;
		}
		/* the process's private, writable memory of the program's, in
		 * the same mapping as now (looked up for each range: the
		 * process may unmap or remap meanwhile) */
		if (vma_lookup(next, &v) || v.start != fv.start || !v.anon || v.shared ||
		    !v.readable || !v.writable ||
		    next + SVM_2M > v.end || !prefetch_may_touch(&v) ||
		    ugpu_mem_owns((const void *)(uintptr_t)next) ||
		    ownmem_overlaps(next, next + SVM_2M, NULL))
			break;
		vram_usage(dev, &used, &avail);
		if (avail < 2 * SVM_2M)
			break; /* room for a fault's range is kept */
		test_point_obj(TEST_POINT_SVM_AHEAD, &next);
		if (!entered) {
			if (!host_pm_try_enter(dev))
				break; /* a host-suspend transition or a removal runs */
			entered = true;
			/* Between transitions too: a device host-suspended
			 * (its state changes only under the lock now held:
			 * review of 2026-12-07, a resume waited for ever
			 * behind a move that waited for it) */
			if (!bo_pm_active(dev))
				break;
			if (bo_rpm_hold_if_awake(dev, &held))
				break; /* asleep, or going to: speculation never wakes it */
		}
		/* a surprise removal has begun (it takes the lock after
		 * marking VRAM lost): what is in the process stays there */
		if (device_vram_lost(dev))
			break;
		pf.va = next;
		pf.access = UGPU_ACCESS_READ;
		if (serve(s, &pf, SERVE_FAULT_AHEAD, NULL))
			break;
		n++;
	}
	bo_rpm_release(held);
	if (entered)
		host_pm_leave(dev);
	if (n) {
		pthread_mutex_lock(&s->lock);
		sd->st.svm_fault_ahead_count += n;
		pthread_mutex_unlock(&s->lock);
	}
}
