/* SPDX-License-Identifier: MIT */
/*
 * Shared virtual memory: the worker thread. It serves the GPU's faults (find
 * or make the range, move it or map it in place, map it in the VM), brings
 * ranges back for CPU touches, and runs the garbage collection the handler
 * thread queued, in the order the events came.
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

#include <ugpu/svm.h>
#include <ugpu/vm.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/list.h"
#include "base/log.h"
#include "base/ownmem.h"
#include "base/test_point.h"
#include "mm/bo.h"
#include "mm/uffd.h"
#include "mm/vram.h"
#include "mm/vm.h"
#include "src/device.h"
#include "src/remote.h"
#include "src/rpm.h"
#include "src/suspend.h"
#include "svm/svm.h"
#include "vfio/dma.h"

/* ---- the worker -------------------------------------------------------------------- */

/* A device whose ranges hold it awake (runtime PM would find nothing else
 * keeping it up). Lock held. */
static struct svm_dev *idle_candidate_locked(struct svm *s)
{
	list_for_each(l, &s->devs) {
		struct svm_dev *sd = list_entry(l, struct svm_dev, link);

		if (sd->rpm_held)
			return sd;
	}
	return NULL;
}


/*
 * Runtime PM and shared virtual memory: ranges in a device's VRAM hold a
 * runtime-PM reference (D3cold would lose them). When that reference is the
 * only one left (runtime PM allowed, nothing else using the device) and no
 * GPU fault was served for the autosuspend delay, the ranges go back into
 * the process, the reference with the last of them, and runtime PM may put
 * the device to sleep, D3cold included. The next kernel faults them in
 * again. Lock not held; the device is marked as the worker's (@cur_sd), so
 * a closing device waits for this.
 */
static void idle_release(struct svm *s)
{
	struct ugpu_rpm_stats st = { .size = sizeof(st) };
	struct svm_dev *sd;
	struct svm_range *r;
	struct rpm *rpm;
	bool go;

	pthread_mutex_lock(&s->lock);
	sd = idle_candidate_locked(s);
	if (sd)
		s->cur_sd = sd;
	pthread_mutex_unlock(&s->lock);
	if (!sd)
		return;
	test_point_obj(TEST_POINT_SVM_IDLE, sd);
	go = !rpm_user_enter(sd->dev, &rpm);
	if (go) {
		rpm_stats(rpm, &st);
		rpm_user_leave(rpm);
		go = st.allowed && st.autosuspend_delay_ms >= 0 && st.usage <= 1 &&
		     st.state == UGPU_RPM_ACTIVE &&
		     now_ns() - sd->active_ns >= ms_to_ns((uint64_t)st.autosuspend_delay_ms);
	}
	if (go) {
		uint64_t n = 0;

		while ((r = own_first(s, 0, UINT64_MAX, in_vram_of, sd))) {
			bool failed = range_to_cpu(s, r) && r->where == R_VRAM;

			range_done(s, r);
			if (failed)
				break; /* stays (logged); the device stays awake */
			n++;
		}
		log_dbg(s->ctx, "svm: %s idle for %d ms: %" PRIu64 " ranges back in the process, so that it may sleep",
			sd->dev->name, st.autosuspend_delay_ms, n);
		pthread_mutex_lock(&s->lock);
		sd->st.svm_idle_release_count += n;
		pthread_mutex_unlock(&s->lock);
	}
	pthread_mutex_lock(&s->lock);
	s->cur_sd = NULL;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

void work_queue(struct svm *s, struct svm_work *w)
{
	/* GC first: a fault or a touch must see memory the process freed as
	 * freed. Among themselves in the order the events came: an mremap
	 * reports the move and then the unmap of the old place, and the move
	 * must copy the data out before the unmap drops it (run newest first,
	 * the unmap dropped every byte). */
	if (w->kind == W_GC) {
		struct list_link *before = &s->work;

		list_for_each(l, &s->work)
			if (list_entry(l, struct svm_work, link)->kind != W_GC) {
				before = l;
				break;
			}
		list_add_tail(before, &w->link);
		w->seq = ++s->gc_seq;
		s->gc_inflight++;
	} else {
		list_add_tail(&s->work, &w->link);
	}
	pthread_cond_broadcast(&s->cond);
	pthread_cond_signal(&s->work_cond);
}

/* Run the queued GC items now (before serving a fault that found a range
 * waiting for one): whether there was one. Lock held; dropped meanwhile. */
static bool gc_drain_locked(struct svm *s)
{
	bool ran = false;

	for (;;) {
		struct svm_work *w = NULL;

		list_for_each(l, &s->work) {
			struct svm_work *c = list_entry(l, struct svm_work, link);

			if (c->kind == W_GC) {
				w = c;
				break;
			}
		}
		if (!w)
			return ran;
		ran = true;
		list_del(&w->link);
		list_add_tail(&s->gc_running, &w->run);
		pthread_mutex_unlock(&s->lock);
		gc_run(s, w);
		pthread_mutex_lock(&s->lock);
		gc_item_done_locked(s, w); /* frees it, or keeps it a while */
		pthread_cond_broadcast(&s->cond);
	}
}

static const uint64_t range_sizes[] = { SVM_2M, SVM_64K, SVM_4K };

/* The sizes around @va that fit its CPU mapping, the VM's mirror span and
 * the VM's binds (a bind punches a hole in the mirror): bit i for
 * range_sizes[i]. No lock held (asks mm/). */
static unsigned int sizes_fitting(uint64_t va, const struct vma *v, struct ugpu_vm *vm)
{
	uint64_t lo = v->start > vm->mirror_start ? v->start : vm->mirror_start;
	uint64_t hi = v->end < vm->mirror_start + vm->mirror_size ? v->end
								    : vm->mirror_start + vm->mirror_size;
	unsigned int ok = 0, i;

	for (i = 0; i < 3; i++) {
		uint64_t a = va & ~(range_sizes[i] - 1);

		if (a >= lo && a + range_sizes[i] <= hi && vm_span_unbound(vm, a, range_sizes[i]))
			ok |= 1u << i;
	}
	return ok;
}

/* The largest of @fitting that overlaps no range. Lock held. */
static uint64_t pick_size(struct svm *s, uint64_t va, unsigned int fitting)
{
	unsigned int i;

	for (i = 0; i < 3; i++) {
		uint64_t a = va & ~(range_sizes[i] - 1);

		/* one policy per range: it never crosses a change of advice */
		if ((fitting & (1u << i)) && !range_overlaps(s, a, a + range_sizes[i]) &&
		    attr_uniform_locked(s, a, a + range_sizes[i]))
			return range_sizes[i];
	}
	return 0;
}

void tuning_default(struct ugpu_svm_tuning *t)
{
	*t = (struct ugpu_svm_tuning){
		.size = sizeof(*t),
		.thrash_enable = true,
		.thrash_threshold = 3,
		.thrash_lapse_us = 50000,
		.thrash_throttle_ms = 20,
		.thrash_pin_ms = 150,
		.fault_prefetch_enable = true,
		.fault_prefetch_pct = 51,
		.fault_ahead = 2, /* the depth measured (docs/svm.md, "Learned behaviour") */
	};
}

/*
 * Thrashing (UVM's detection, with thresholds in struct ugpu_svm_tuning):
 * @r (owned) just migrated for @sd's fault or a CPU touch. Enough
 * migrations within the lapse make it thrashing: the first time it is
 * throttled (a CPU touch leaves it in VRAM longer, so each side gets more
 * done per round trip); found thrashing again while throttled, it is
 * pinned to system memory for a while (the device maps it in place, both
 * sides use it where it is, nothing moves). Counted in @sd's stats.
 */
static void thrash_note(struct svm *s, struct svm_range *r, struct ugpu_device *dev)
{
	uint64_t now = now_ns();
	struct ugpu_svm_tuning t;
	struct svm_dev *sd;

	/* looked up again: a range back in the process is no longer held by
	 * its device, whose close may have detached it meanwhile (the review
	 * of 2026-12-07) */
	pthread_mutex_lock(&s->lock);
	sd = sd_of(s, dev);
	if (!sd) {
		pthread_mutex_unlock(&s->lock);
		return;
	}
	t = sd->tune;
	if (!t.thrash_enable) {
		pthread_mutex_unlock(&s->lock);
		return;
	}
	if (r->pinned_until_ns && now >= r->pinned_until_ns) {
		/* a pin ended: a new episode starts from nothing */
		r->pinned_until_ns = 0;
		r->throttled = false;
		r->hold_ms = 0;
	}
	if (now - r->thr_first_ns > (uint64_t)t.thrash_lapse_us * 1000) {
		r->thr_first_ns = now;
		r->thr_events = 0;
	}
	if (++r->thr_events >= t.thrash_threshold) {
		r->thr_events = 0;
		r->thr_first_ns = now;
		sd->st.svm_thrash_detect_count++;
		if (!r->throttled) {
			r->throttled = true;
			r->hold_ms = t.thrash_throttle_ms;
			sd->st.svm_thrash_throttle_count++;
		} else {
			r->hold_ms = 0; /* the CPU may take it home at once */
			r->pinned_until_ns = now + ms_to_ns(t.thrash_pin_ms);
			sd->st.svm_thrash_pin_count++;
			log_dbg(s->ctx, "svm: [0x%" PRIx64 ", +0x%" PRIx64 ") thrashes between the CPU and %s: pinned to system memory for %u ms",
				r->start, r->size, sd->dev->name, t.thrash_pin_ms);
		}
	}
	pthread_mutex_unlock(&s->lock);
}

/* The kernel whose fault @f is still runs (mm/'s rule: its queue is on
 * the slot with the same launch tag). A fault read after its kernel ended
 * (the replay of an earlier fault of the same range already let the page
 * through) is stale: served, it would map a range again for nobody — and
 * writable, for an atomic-CPU span, behind the submission that dropped
 * such maps (found by test_svm_policy: an atomic slipped through). */
static bool fault_current(const struct vm_fault *f)
{
	struct vm_mgr *vmm = f->vmm;
	bool cur;

	if (f->slot >= 64 || !vmm)
		return true; /* not a device fault (a prefetch's), or the daemon's (it checks) */
	pthread_mutex_lock(&vmm->lock);
	cur = vmm->on_slot[f->slot] && vmm->slot_launch[f->slot] == f->launch;
	pthread_mutex_unlock(&vmm->lock);
	return cur;
}

/* Serve one GPU fault: 0, or the status its kernel is aborted with. */
/*
 * Serve one GPU fault: 0, or the status its kernel is aborted with. With
 * @prefetch (ugpu_vm_prefetch(), on the caller's thread) the same work
 * without a fault: VRAM is wanted whatever the range's size, not counted
 * as a fault; *@end (may be NULL) says where the range ends, 0 if none.
 */
int serve(struct svm *s, const struct vm_fault *f, enum serve_why why, uint64_t *end)
{
	/* an explicit prefetch wants VRAM whatever the advice; the fault
	 * prefetcher does what a fault would (advice included) */
	bool prefetch = why == SERVE_PREFETCH;
	uint64_t va = f->va & ~(SVM_4K - 1);
	struct svm_dev *sd, *pd = NULL;
	bool atomic_vram, stay, want_vram, guard, deny, pinned, own, peer_inplace, wr = true;
	bool created = false; /* this call made the range */
	/* what goes wrong for the stream prefetcher is no error of anyone's */
	enum ugpu_log_level el = why == SERVE_FAULT_AHEAD ? UGPU_LOG_DEBUG : UGPU_LOG_ERROR;
	const char *own_what = NULL;
	struct svm_range *r;
	struct svm_attrs a;
	struct vma v;
	int ret;

	if (end)
		*end = 0;
	if (why == SERVE_FAULT && !fault_current(f))
		return 0; /* stale: its kernel ended; nothing to answer */
	pthread_mutex_lock(&s->lock);
	sd = sd_of(s, f->vm->dev);
	if (!sd) {
		pthread_mutex_unlock(&s->lock);
		return -EFAULT;
	}
	if (why == SERVE_PREFETCH)
		sd->st.svm_prefetch_count++;
	else if (why == SERVE_FAULT)
		sd->st.svm_pagefault_count++;
again:
	r = range_find(s, va);
	if (why == SERVE_FAULT_AHEAD && r && (r->gc_pending || r->busy)) {
		/* The stream prefetcher never waits: not for a collection
		 * (which may wait for a host-suspended device to resume,
		 * while it holds the host-suspend lock the resume needs:
		 * review of 2026-12-07), nor for another owner. */
		pthread_mutex_unlock(&s->lock);
		return -EAGAIN;
	}
	if (r && r->gc_pending) {
		/* Its collection is queued (run it here) or running on
		 * another thread (the worker, or a prefetch's serve()): wait
		 * for that one with the lock dropped. (Before: a prefetch
		 * looped here holding the lock while the worker's collection
		 * of the range waited for it, found by test_svm_policy's
		 * prefetch race.) */
		if (!gc_drain_locked(s)) {
			struct timespec ts = monotonic_deadline_after_ms(10);

			pthread_cond_timedwait(&s->cond, &s->lock, &ts);
		}
		goto again;
	}
	if (!r) {
		uint64_t size, seq = s->event_seq;

		pthread_mutex_unlock(&s->lock);
		ret = vma_lookup(va, &v);
		if (ret) {
			log_msg(s->ctx, el, "svm: %s at 0x%" PRIx64 ": nothing is mapped there in the process",
				why == SERVE_PREFETCH ? "prefetch"
				: f->access == UGPU_ACCESS_READ ? "GPU read"
				: f->access == UGPU_ACCESS_WRITE ? "GPU write" : "GPU atomic",
				f->va);
			return -EFAULT;
		}
		/* The driver's own heap (base/alloc.h) is never a range: a
		 * range there would take the driver's objects away from it. */
		if (ugpu_mem_owns((const void *)(uintptr_t)va) ||
		    (s->pool && va >= s->pool && va < s->pool + SVM_POOL_SLOTS * SVM_2M)) {
			log_msg(s->ctx, el, "svm: GPU access at 0x%" PRIx64 ": that is the driver's own memory, not the program's",
				f->va);
			return -EFAULT;
		}
		if ((f->access != UGPU_ACCESS_READ && !v.writable) || !v.readable) {
			log_msg(s->ctx, el, "svm: GPU %s at 0x%" PRIx64 ": the process's mapping (%s) does not allow it",
				f->access == UGPU_ACCESS_READ ? "read" : "write", f->va, v.what);
			return -EFAULT;
		}
		/* Shared or file-backed memory is used where it is (other
		 * mappings see the same pages: it never moves), provided our
		 * userfaultfd can watch it (shmem: memfd, MAP_SHARED anonymous,
		 * tmpfs): its unmap and free events must reach us, or the
		 * device could keep a mapping of pages the process let go. */
		if (!v.anon || v.shared) {
			unsigned int kb = vma_page_kb(v.start);

			if (kb > 4) {
				log_msg(s->ctx, el, "svm: GPU access at 0x%" PRIx64 ": hugetlbfs memory (%s, %u KiB pages) is refused: shared virtual memory moves and maps 4 KiB pages (use transparent huge pages, MADV_HUGEPAGE, or a BO)",
					f->va, v.what, kb);
				return -EFAULT;
			}
		}
		/* Registered over the whole mapping (inside the span): its
		 * touches, frees and moves come to us from now on. */
		{
			uint64_t lo = v.start > f->vm->mirror_start ? v.start : f->vm->mirror_start;
			uint64_t hi = v.end < f->vm->mirror_start + f->vm->mirror_size
					      ? v.end
					      : f->vm->mirror_start + f->vm->mirror_size;

			ret = region_register(s, lo, hi, seq);
		}
		if (ret == -EAGAIN) {
			pthread_mutex_lock(&s->lock);
			goto again;
		}
		if (ret == -EINVAL && (!v.anon || v.shared)) {
			log_msg(s->ctx, el, "svm: GPU access at 0x%" PRIx64 ": %s is a file mapping userfaultfd cannot watch (only shmem: memfd, tmpfs, MAP_SHARED anonymous), so the device may not map it; use a BO, or private or shmem memory",
				f->va, v.what);
			return -EFAULT;
		}
		if (ret == -EBUSY) {
			/* another userfaultfd serves it: a BO's CPU mapping
			 * (the driver's own, mm/cpu_map.c) or another library's */
			log_msg(s->ctx, el, "svm: GPU access at 0x%" PRIx64 ": [0x%" PRIx64 ", 0x%" PRIx64 ") is served by another userfaultfd (a BO's CPU mapping from ugpu_bo_map(), or another library's): it is not process memory the GPU may mirror; bind the BO instead",
				f->va, v.start, v.end);
			return -EFAULT;
		}
		if (ret) {
			log_msg(s->ctx, el, "svm: cannot register [0x%" PRIx64 ", 0x%" PRIx64 ") (%s) with userfaultfd: %s",
				v.start, v.end, v.what, ugpu_strerror(ret));
			return -EFAULT;
		}
		{
			unsigned int fitting = sizes_fitting(va, &v, f->vm);

			pthread_mutex_lock(&s->lock);
			/* another fault made it, or the mapping changed since
			 * the lookup (a range of memory no longer mapped would
			 * stay, and a later mapping there would inherit it) */
			if (range_find(s, va) || s->event_seq != seq)
				goto again;
			size = pick_size(s, va, fitting);
		}
		r = size ? calloc(1, sizeof(*r)) : NULL;
		if (r) {
			r->start = va & ~(size - 1);
			r->size = size;
			r->writable = v.writable;
			r->in_place_only = !v.anon || v.shared;
			r->where = R_CPU;
			r->first = sd;
			if (ownmem_overlaps(r->start, r->start + size, &own_what))
				log_dbg(s->ctx, "svm: [0x%" PRIx64 ", +0x%" PRIx64 ") holds %s: used in place, never moved",
					r->start, size, own_what);
		}
		if (!r || range_insert(s, r)) {
			pthread_mutex_unlock(&s->lock);
			free(r);
			return -EFAULT;
		}
		created = true;
	}
	if (!range_own(s, r))
		goto again;
	/* A range in the process whose CPU mapping was split since it was
	 * made (an mprotect, madvise or mlock of a part sends no event) is
	 * made again to fit, as advice does at its edges: moved whole, its
	 * zap went through several mappings at once, their REMOVE events were
	 * taken for the process's frees and every byte was lost (the review
	 * of 2026-12-07, test_split_then_back_to_vram, both paths). */
	if (!created && r->where == R_CPU && !r->nmaps && r->size > SVM_4K) {
		uint64_t start = r->start, size = r->size;
		bool fits;

		pthread_mutex_unlock(&s->lock);
		fits = !vma_lookup(start, &v) && v.start <= start && v.end >= start + size &&
		       !!v.writable == !!r->writable;
		if (!fits) {
			log_dbg(s->ctx, "svm: [0x%" PRIx64 ", +0x%" PRIx64 ") no longer lies in one mapping: made again to fit",
				start, size);
			range_destroy(s, r);
			uffd_wake(s->u, start, size);
			pthread_mutex_lock(&s->lock);
			goto again;
		}
		pthread_mutex_lock(&s->lock);
	}
	if (why == SERVE_FAULT)
		size_count(&sd->st, r->size, 0, 0);
	if (f->access != UGPU_ACCESS_READ && !r->writable) {
		/* a read made it where the mapping was read-only: a write is
		 * aborted, not replayed forever on the read-only entries (found
		 * by the scenario matrix: the kernel never ended) */
		pthread_mutex_unlock(&s->lock); /* range_done() takes it */
		log_msg(s->ctx, el, "svm: GPU %s at 0x%" PRIx64 ": the process's mapping was read-only when the GPU first used it",
			f->access == UGPU_ACCESS_WRITE ? "write" : "atomic", f->va);
		ret = -EFAULT;
		goto out;
	}
	attr_get_locked(s, va, &a, NULL);
	if (f->access == UGPU_ACCESS_ATOMIC && a.atomic == UGPU_SVM_ATOMIC_CPU) {
		bool say = now_ns() - sd->denied_log_ns >= ms_to_ns(1000);

		sd->st.svm_atomic_denied_count++;
		if (say)
			sd->denied_log_ns = now_ns();
		pthread_mutex_unlock(&s->lock);
		/* once a second: a kernel's pages fault by the dozen */
		if (say)
			log_msg(s->ctx, el, "svm: GPU atomic at 0x%" PRIx64 ": the span's atomic policy is CPU (ugpu_svm_advise): device atomics are refused there, the kernel is aborted",
				f->va);
		ret = -EACCES;
		goto out;
	}
	/*
	 * Where the range should be for this access (docs/svm.md, "Policy"):
	 * an atomic needs VRAM unless the policy lets the device do it
	 * anywhere; otherwise accessed-by maps it where it is, a preferred
	 * system location keeps it in the process, and by default ranges of
	 * 64 KiB or more move. An explicit prefetch moves it whatever.
	 */
	/*
	 * The driver's own memory (its .data/.bss, the stacks of threads
	 * running its code: base/ownmem.h) never leaves the CPU: a thread
	 * touching it with a lock the worker needs would wait for the worker
	 * forever (the matrix's bss-cpu-untouched and stack-threads-many
	 * hangs). It is used in place, atomics too (as with the atomic policy
	 * DEVICE: the device's atomics on system memory), and never copied.
	 */
	own = ownmem_overlaps(r->start, r->start + r->size, NULL);
	atomic_vram = f->access == UGPU_ACCESS_ATOMIC && a.atomic != UGPU_SVM_ATOMIC_DEVICE && !own;
	/* a range pinned for thrashing stays where it is, as advised so */
	pinned = now_ns() < r->pinned_until_ns;
	stay = (a.accessed_by & (1ull << sd->id)) || a.pref == SVM_PREF_SYSTEM || pinned || own;
	want_vram = !own && (prefetch || atomic_vram || (!stay && r->size >= SVM_MIGRATE_MIN));
	/* through ugpud nothing is used in place (the daemon cannot reach
	 * the process's pages): every range moves */
	if (device_is_remote(sd->dev))
		want_vram = !own;
	sd->active_ns = now_ns();
	if (r->bo) /* used: a second chance on the eviction LRU */
		__atomic_store_n(&r->bo->touched, 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&s->lock);

	ret = 0;
	/* a peer named as the preferred location (svm/peer.c); atomics need
	 * the faulting device's own VRAM */
	pd = atomic_vram ? NULL : peer_pref_get(s, sd, &a);
	if (why == SERVE_FAULT_AHEAD) {
		/* The stream prefetcher moves only the plain case: a 2 MiB
		 * range of the program's memory, in the process, under the
		 * default policy, not prefetched to system memory last, into
		 * VRAM that is free now (no eviction for it). Anything else
		 * waits for a fault of its own; a range made here for nothing
		 * goes again (left, nothing would drop it: a bind beside it
		 * would find it in the way, review of 2026-12-07). */
		bool forking, collected;

		pthread_mutex_lock(&s->lock);
		forking = s->forking;
		pthread_mutex_unlock(&s->lock);
		if (r->where != R_CPU || r->size != SVM_2M || pd || stay || own || !want_vram ||
		    a.read_mostly || a.atomic == UGPU_SVM_ATOMIC_CPU ||
		    a.last_prefetch == UGPU_SVM_LOC_SYSTEM || !r->writable || r->in_place_only ||
		    forking || !bo_pm_active(sd->dev) || device_is_remote(sd->dev))
			ret = -EAGAIN;
		else
			ret = range_to_vram(s, r, sd, BO_KERNEL_SPECULATIVE);
		if (!ret) {
			/* not held the timeslice: no kernel asked for it yet,
			 * and a CPU store there (a buffer being filled while
			 * the GPU reads the one before) takes it back at once */
			r->vram_at_ns = 0;
			goto map;
		}
		pthread_mutex_lock(&s->lock);
		collected = r->gc_pending;
		pthread_mutex_unlock(&s->lock);
		if (created && r->where == R_CPU && !r->nmaps && !collected) {
			uint64_t start = r->start, size = r->size;

			/* the advised peer's hold goes too: a device's close
			 * waits for its holds (svm_down()), and one left here
			 * held it for ever (test_svm_model seed
			 * 1796646283195220: its teardown hung) */
			peer_put(s, pd);
			range_destroy(s, r);
			uffd_wake(s->u, start, size);
			return ret;
		}
		goto out;
	}
	if (r->where != R_CPU && r->sd != sd) {
		/* held by another device: moved here or to the advised peer
		 * over the fabric, used in place from a peer of the owner
		 * group, or back into the process first (svm/peer.c) */
		ret = peer_place(s, r, sd, pd, &a, atomic_vram, &want_vram);
		if (ret == 1)
			ret = 0;
	} else if (r->where == R_DUP &&
		   (f->access != UGPU_ACCESS_READ || !a.read_mostly || !r->writable)) {
		/* a GPU write or atomic to a read-mostly copy (or the advice
		 * went): one copy again, the process's, then as any range */
		dup_drop(s, r);
	} else if (r->where == R_VRAM && !want_vram && a.pref == SVM_PREF_SYSTEM &&
		   !(a.accessed_by & (1ull << sd->id))) {
		/* advised to system memory since it moved here: it goes home
		 * and is used there (or, when its copy back fails, where it
		 * is: advice is a preference, the kernel must not abort) */
		ret = range_to_cpu(s, r);
		if (ret && ret != -EAGAIN && r->where == R_VRAM)
			ret = 0;
	} else if (r->where == R_INPLACE && r->writable && !r->in_place_only && !own &&
		   (prefetch || (r->advised_in_place && !stay && r->size >= SVM_MIGRATE_MIN) ||
		    (atomic_vram && (a.atomic == UGPU_SVM_ATOMIC_GLOBAL || stay)))) {
		/* in place (no VRAM then, or advised so), VRAM wanted now: it
		 * moves (an atomic under the default policy and advice keeps
		 * the old rule: in place is accepted; memory that cannot move
		 * stays, or every fault of the batch would unmap it again) */
		range_unmap_gpu(s, r);
		range_unmap_dma(s, r);
	}
	if (!ret && r->where == R_CPU) {
		bool forking;

		pthread_mutex_lock(&s->lock);
		forking = s->forking;
		pthread_mutex_unlock(&s->lock);
		/* no VRAM while a host-suspend cycle is open: prepare brought
		 * the ranges home and they stay there until resume */
		bool movable = r->writable && !r->in_place_only && !own && bo_pm_active(sd->dev);

		/* Read-mostly: a GPU read gets a copy in VRAM, the process
		 * keeps its pages (where write protection can guard them) */
		if (a.read_mostly && f->access == UGPU_ACCESS_READ && movable && !forking &&
		    !range_dup(s, r, sd))
			ret = 0;
		else if (want_vram && movable && !forking) {
			ret = peer_to_vram(s, r, pd, sd);
			if (!ret && why == SERVE_FAULT)
				thrash_note(s, r, sd->dev);
		} else {
			ret = -EAGAIN;
		}
		bool collected = false;

		if (ret == -ENOENT) {
			pthread_mutex_lock(&s->lock);
			collected = r->gc_pending;
			pthread_mutex_unlock(&s->lock);
		}
		if (collected) {
			/* the process unmapped or freed it while it was being
			 * taken (take_pages() saw its event): not used in
			 * place where something else may be mapped now, nor
			 * retried; its collection runs, then the address is
			 * looked up again (found by review: range_in_place()
			 * populated and DMA-mapped the new mapping under the
			 * old range) */
			peer_put(s, pd);
			pd = NULL;
			range_done(s, r);
			pthread_mutex_lock(&s->lock);
			goto again;
		}
		/* Atomics: VRAM may free up (or the fork end): try again
		 * after a doubling timeslice, a bounded number of times. */
		for (int k = 0; ret && atomic_vram && movable && k < SVM_ATOMIC_RETRIES; k++) {
			sleep_until_ns(now_ns() + ms_to_ns((uint64_t)SVM_TIMESLICE_MS << k));
			pthread_mutex_lock(&s->lock);
			forking = s->forking;
			pthread_mutex_unlock(&s->lock);
			ret = forking ? -EAGAIN : range_to_vram(s, r, sd, 0);
		}
		if (ret) {
			if (atomic_vram) {
				log_msg(s->ctx, el, "svm: GPU atomic at 0x%" PRIx64 ": the range [0x%" PRIx64 ", +0x%" PRIx64 ") cannot move to VRAM (%s, %d tries over %d ms): atomics need it there",
					f->va, r->start, r->size,
					r->in_place_only ? "shared memory stays where it is" : ugpu_strerror(ret),
					movable ? SVM_ATOMIC_RETRIES + 1 : 1,
					movable ? SVM_TIMESLICE_MS * ((1 << SVM_ATOMIC_RETRIES) - 1) : 0);
				ret = -EACCES;
				goto out;
			}
			ret = range_in_place(s, r, sd);
			/* in place because advised so (not for want of VRAM):
			 * advice to the contrary later moves it */
			if (!ret)
				r->advised_in_place = stay && !prefetch;
			if (!ret && pinned && !prefetch) {
				pthread_mutex_lock(&s->lock);
				sd->st.svm_thrash_in_place_count++;
				pthread_mutex_unlock(&s->lock);
			}
		}
	}
	/*
	 * Where a device atomic must fault (atomic policy CPU: refused above;
	 * or a range advised to stay in place whose atomics need VRAM: moved
	 * above): a device whose leaves have the NO_ATOMIC bit (reference
	 * device 1.2; xe's atomic policy relies on the same in hardware) gets
	 * maps carrying it, and reads and writes go on. A 1.1 device has no
	 * such bit: an atomic faults only on a missing or read-only entry, so
	 * the range is mapped read-only unless a GPU write asks; then writable
	 * until the next kernel is submitted (rearm_all()), and a kernel
	 * queued before that escapes the policy (docs/svm.md).
	 */
map:
	peer_inplace = range_has_vram(r) && r->sd != sd;
	guard = a.atomic == UGPU_SVM_ATOMIC_CPU ||
		(r->where == R_INPLACE && stay && !own && a.atomic != UGPU_SVM_ATOMIC_DEVICE) ||
		/* used in place in a peer's VRAM (svm/peer.c): an atomic must
		 * fault, to take the range into this device's own */
		(peer_inplace && a.atomic != UGPU_SVM_ATOMIC_DEVICE);
	/* NO_ATOMIC where the device has it, except on a peer's VRAM mapped
	 * in place (that map is read-only until a write asks, svm/peer.c) */
	deny = guard && !peer_inplace && vm_can_deny_atomics(f->vm);
	wr = !guard || deny || f->access == UGPU_ACCESS_WRITE;
	if (!ret && guard && !deny && wr && why == SERVE_FAULT && !fault_current(f))
		goto out; /* its kernel ended meanwhile: no writable map for nobody */
	if (!ret && guard && !deny && wr && r->writable) {
		pthread_mutex_lock(&s->lock);
		if (!r->rearm) {
			r->rearm = true;
			s->nrearm++;
		}
		pthread_mutex_unlock(&s->lock);
	}
	if (!ret)
		ret = range_map_vm(s, r, f->vm, wr, deny);
	if (ret == -EEXIST && !device_is_remote(sd->dev)) {
		/* A bind came into the range's span after the range was made
		 * and before this map (the bind punches only ranges already
		 * mapped in its VM: the stream prefetcher's move, answered
		 * after the kernel, raced a bind of the program's, and every
		 * later fault of the range failed with EEXIST, the scenario
		 * matrix's malloc-bo-bind under the CI of 852b8a3). The range
		 * goes, its bytes back in the process, and the fault is served
		 * again by one that fits around the bind. */
		uint64_t start = r->start, size = r->size;

		peer_put(s, pd);
		pd = NULL;
		if (range_has_vram(r) && range_to_cpu_must(s, r) == -EAGAIN) {
			range_done(s, r); /* its collection takes it out of VRAM */
		} else {
			range_destroy(s, r);
			uffd_wake(s->u, start, size);
		}
		if (why == SERVE_FAULT_AHEAD)
			return -EAGAIN;
		created = false;
		pthread_mutex_lock(&s->lock);
		goto again;
	}
	if (ret == -EOPNOTSUPP && device_is_remote(sd->dev)) {
		/* range_in_place(): what did not move has nowhere to go */
		log_msg(s->ctx, el, "svm: %s at 0x%" PRIx64 ": the range [0x%" PRIx64 ", +0x%" PRIx64 ") did not move into the daemon's VRAM (%s), and %s is served by ugpud, which cannot use this process's pages in place",
			why == SERVE_PREFETCH ? "prefetch" : "GPU fault", f->va, r->start, r->size,
			r->in_place_only ? "shared or file memory never moves"
			: !r->writable	 ? "a read-only mapping never moves"
			: own		 ? "the driver's own memory never moves"
					 : "no VRAM for it",
			sd->dev->name);
		ret = -EFAULT;
	} else if (ret && ret != -EACCES) {
		log_msg(s->ctx, el, "svm: %s at 0x%" PRIx64 " could not be served: %s",
			why == SERVE_PREFETCH ? "prefetch" : "GPU fault", f->va, ugpu_strerror(ret));
		ret = -EFAULT;
	}
out:
	peer_put(s, pd);
	if (end)
		*end = r->start + r->size;
	range_done(s, r);
	return ret;
}

static void do_back(struct svm *s, uint64_t start)
{
	struct svm_range *r;
	bool back;

	pthread_mutex_lock(&s->lock);
	r = range_find(s, start);
	if (!r) {
		pthread_mutex_unlock(&s->lock);
		uffd_wake(s->u, start, SVM_4K);
		return;
	}
	if (!range_own(s, r)) {
		pthread_mutex_unlock(&s->lock);
		uffd_wake(s->u, start, SVM_4K);
		return;
	}
	r->back_queued = false;
	back = range_has_vram(r) && !r->gc_pending;
	/* counted before the copy wakes the touching thread: what it reads
	 * next is consistent with the counters (a read-mostly copy dropped
	 * for a store is counted as such, in dup_drop()) */
	if (back && r->where == R_VRAM)
		r->sd->st.svm_cpu_fault_count++;
	pthread_mutex_unlock(&s->lock);
	{
		struct ugpu_device *dev = r->sd ? r->sd->dev : NULL;
		bool was_vram = r->where == R_VRAM;

		if (back && range_to_cpu(s, r) && r->where == R_VRAM)
			/* the copy failed, the range stays in VRAM (logged): the
			 * woken thread faults again and asks again, not at once */
			sleep_until_ns(now_ns() + ms_to_ns(1));
		else if (back && was_vram && r->where == R_CPU)
			thrash_note(s, r, dev);
	}
	range_done(s, r);
}

/*
 * The handler thread's own service of a CPU touch of @r (found in VRAM,
 * s->lock held): a 4 KiB range whose timeslice is over comes back here, at
 * once, without the hand-off to the worker and back (one thread wake-up
 * less: the 4 KiB touch cost about two raw userfaultfd round trips with
 * every thread on one CPU, docs/svm.md "Costs"). Only when nothing needs a
 * wait: the handler thread must never wait, or the events it alone reads
 * would stall whoever waits for them. So the host-suspend lock, the BO
 * manager lock (no unlocked move in its window, no host-suspend cycle
 * open: read under it, not through bo_pm_active(), which waits for the
 * lock and deadlocked the handler against an eviction waiting for the
 * events lock, the review of 2026-12-07) and the VMs' locks are only
 * tried; the device must be awake (a hold taken only if so); no kernel may
 * run on a VM mapping it (no TLB flush); and the copy is one UFFDIO_COPY
 * of one page, all or nothing: a range of several pages copied in part
 * and let go would have its VRAM mapped again by another owner while the
 * process holds newer pages (the same review), so larger ranges take the
 * worker's way. True: served (counted, woken; s->lock released). False:
 * nothing changed, s->lock still held, the worker's way follows
 * (do_back()).
 */
bool back_on_handler_locked(struct svm *s, struct svm_range *r)
{
	struct svm_dev *sd = r->sd;
	struct ugpu_device *dev;
	struct rpm *held = NULL;
	struct svm_work *w;
	int ret = -EBUSY;

	if (r->where != R_VRAM || r->size != SVM_4K || r->busy || r->gc_pending ||
	    r->back_queued || s->forking || !sd || device_is_remote(sd->dev))
		return false;
	if (now_ns() < range_home_at_ns(r))
		return false; /* the timeslice first: the worker sleeps it out */
	for (unsigned int k = 0; k < r->nmaps; k++)
		if (r->maps[k].vm->dev != sd->dev)
			return false; /* a peer maps it: svm/peer.c's locks */
	w = calloc(1, sizeof(*w)); /* the BO's put, for the worker */
	if (!w)
		return false;
	dev = sd->dev;
	r->busy = true;
	/* counted before the copy wakes the touching thread, as do_back() */
	sd->st.svm_cpu_fault_count++;
	pthread_mutex_unlock(&s->lock);
	if (host_pm_try_enter(dev)) {
		if (!device_vram_lost(dev) && !bo_rpm_hold_if_awake(dev, &held)) {
			struct bo_mgr *m = dev->bo_mgr;

			if (bo_mgr_trylock(m)) {
				if (m->pm_state == BO_PM_ACTIVE)
					ret = range_back_nowait_locked(s, r, w, true);
				pthread_mutex_unlock(&m->lock);
			}
			bo_rpm_release(held);
		}
		host_pm_leave(dev);
	}
	if (ret) {
		/* nothing of it is in the process: it stays as it was (the
		 * maps that went stay gone: the next GPU access faults) */
		free(w);
		pthread_mutex_lock(&s->lock);
		sd->st.svm_cpu_fault_count--; /* still its device's: owned, in VRAM */
		range_release(s, r);
		return false;
	}
	thrash_note(s, r, dev);
	{
		uint64_t start = r->start;

		range_done(s, r);
		test_point_obj(TEST_POINT_SVM_BACK_ON_HANDLER, &start);
	}
	return true;
}

/*
 * The range a fault of the batch was just served in. The device sets
 * aside up to 64 pages before it stalls, so a batch holds many faults of
 * one range: the first serves them all (it moved and mapped the whole
 * range), the rest are answered without a second look. A fault answered
 * so that was not in fact covered (its range left meanwhile, or a stale
 * fault's service mapped nothing) only faults again after the replay.
 */
struct served {
	const struct ugpu_vm *vm;
	uint64_t start, end;
	enum ugpu_access access;
};

static void served_note(struct svm *s, struct served *last, const struct vm_fault *f)
{
	struct svm_range *r;

	pthread_mutex_lock(&s->lock);
	r = range_find(s, f->va);
	*last = r ? (struct served){ f->vm, r->start, r->start + r->size, f->access }
		  : (struct served){ 0 };
	pthread_mutex_unlock(&s->lock);
}

/* @f is in the range @last served for the same VM, and asks no more
 * (a read after a write or atomic, a write after an atomic): counted as
 * a fault of that range, answered with the batch. */
static bool fault_covered(struct svm *s, const struct served *last, const struct vm_fault *f)
{
	struct svm_dev *sd;

	if (!last->vm || last->vm != f->vm || f->va < last->start || f->va >= last->end ||
	    f->access > last->access)
		return false;
	pthread_mutex_lock(&s->lock);
	sd = sd_of(s, f->vm->dev);
	if (sd) {
		sd->st.svm_pagefault_count++;
		size_count(&sd->st, last->end - last->start, 0, 0);
	}
	pthread_mutex_unlock(&s->lock);
	return true;
}

void *worker_main(void *arg)
{
	struct svm *s = arg;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		struct svm_work *w;

		while (!s->stop && list_empty(&s->work)) {
			if (!idle_candidate_locked(s)) {
				pthread_cond_wait(&s->work_cond, &s->lock);
				continue;
			}
			struct timespec ts = monotonic_deadline_after_ms(SVM_IDLE_POLL_MS);

			if (pthread_cond_timedwait(&s->work_cond, &s->lock, &ts) == ETIMEDOUT &&
			    list_empty(&s->work) && !s->stop) {
				pthread_mutex_unlock(&s->lock);
				idle_release(s);
				pthread_mutex_lock(&s->lock);
			}
		}
		if (s->stop && list_empty(&s->work))
			break;
		w = list_entry(list_first(&s->work), struct svm_work, link);
		list_del(&w->link);
		if (w->kind == W_GC)
			list_add_tail(&s->gc_running, &w->run);
		s->cur_vm = w->kind == W_FAULTS ? w->f[0].vm : NULL;
		s->cur_sd = w->kind == W_PUT ? w->sd : NULL;
		pthread_mutex_unlock(&s->lock);
		switch (w->kind) {
		case W_FAULTS: {
			int *st = calloc(w->n, sizeof(*st));

			struct served last = { 0 };

			for (size_t i = 0; i < w->n; i++) {
				uint64_t t0 = now_ns();
				int ret;

				if (fault_covered(s, &last, &w->f[i])) {
					/* served too, by the first: its own time is the look */
					stat_hist_add(&w->f[i].vm->dev->svm_fault_hist, (now_ns() - t0) / 1000);
					if (st)
						st[i] = 0;
					else
						vm_fault_done(&w->f[i], 0);
					continue;
				}
				ret = serve(s, &w->f[i], SERVE_FAULT, NULL);
				/* the service time of one GPU fault (its device
				 * outlives its pending faults) */
				stat_hist_add(&w->f[i].vm->dev->svm_fault_hist, (now_ns() - t0) / 1000);
				if (!ret)
					served_note(s, &last, &w->f[i]);

				if (!ret)
					fault_prefetch(s, &w->f[i]);

				if (ret) {
					struct svm_dev *sd;

					pthread_mutex_lock(&s->lock);
					sd = sd_of(s, w->f[i].vm->dev);
					if (sd)
						sd->st.svm_abort_count++;
					pthread_mutex_unlock(&s->lock);
				}
				if (st)
					st[i] = ret;
				else
					vm_fault_done(&w->f[i], ret); /* no memory to batch */
			}
			/* One replay per kernel for the whole batch: each costs
			 * the device a TLB drop. */
			if (st)
				vm_faults_done(w->f, st, w->n);
			/* then the stream prefetcher, while the kernel goes
			 * on: once per 2 MiB block the batch faulted in (its
			 * faults come in address order, a block's together) */
			for (size_t i = 0; st && i < w->n; i++)
				if (!st[i] && (i + 1 == w->n || w->f[i + 1].vm != w->f[i].vm ||
					       (w->f[i + 1].va ^ w->f[i].va) >= SVM_2M))
					fault_ahead(s, &w->f[i]);
			free(st);
			free(w->f);
			break;
		}
		case W_BACK:
			do_back(s, w->start);
			break;
		case W_GC:
			gc_run(s, w);
			break;
		case W_PUT:
			evicted_put(s, w);
			break;
		}
		pthread_mutex_lock(&s->lock);
		if (w->kind == W_GC)
			gc_item_done_locked(s, w); /* frees it, or keeps it a while */
		else
			free(w);
		s->cur_vm = NULL;
		s->cur_sd = NULL;
		pthread_cond_broadcast(&s->cond);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}
