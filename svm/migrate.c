/* SPDX-License-Identifier: MIT */
/*
 * Shared virtual memory: moving a range. Into VRAM without losing a CPU
 * store (UFFDIO_MOVE or write protection), back with UFFDIO_COPY, mapped in
 * place for DMA, into and out of VMs (the collection of ranges whose memory
 * the process unmapped, freed or moved is svm/gc.c's). Every function here
 * works on a range its caller owns (svm/svm.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
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
#include "src/remote.h"
#include "src/rpm.h"
#include "src/suspend.h"
#include "svm/svm.h"
#include "vfio/dma.h"

/* ---- the runtime-PM reference held while a device's VRAM holds ranges ---------------- */

void vram_ranges_inc(struct svm *s, struct svm_dev *sd)
{
	bool get;

	pthread_mutex_lock(&s->lock);
	/* a remote device's power is the daemon's: no reference here */
	get = !sd->vram_ranges++ && !sd->rpm_held && !device_is_remote(sd->dev);
	if (get) {
		sd->rpm_held = true;
		pthread_cond_signal(&s->work_cond); /* an idle candidate now */
	}
	pthread_mutex_unlock(&s->lock);
	/* The device is awake (a kernel runs): this only keeps it so. D3cold
	 * would lose the ranges (docs/svm.md, "Power"). */
	if (get && rpm_get_dev(sd->dev)) {
		pthread_mutex_lock(&s->lock);
		sd->rpm_held = false;
		pthread_mutex_unlock(&s->lock);
	}
}

static void vram_ranges_dec(struct svm *s, struct svm_dev *sd)
{
	bool put;

	pthread_mutex_lock(&s->lock);
	put = !--sd->vram_ranges && sd->rpm_held;
	if (put)
		sd->rpm_held = false;
	pthread_mutex_unlock(&s->lock);
	if (put)
		rpm_put_dev(sd->dev);
}

/* ---- moving a range ------------------------------------------------------------------ */

/* Remove every GPU map of @r (PTEs zapped, TLBs dropped: no kernel reaches
 * what they pointed at afterwards). @r owned. */
void range_unmap_gpu(struct svm *s, struct svm_range *r)
{
	unsigned int i, n = r->nmaps;

	for (i = 0; i < n; i++) {
		struct svm_map *m = &r->maps[i];

		/* its page tables are unreachable while host-suspended (resume
		 * would bring back what we cleared): after resume */
		bo_pm_wait_awake(m->vm->dev);
		vm_svm_unmap(m->vm, m->gpu_va, r->size);
		if (r->sd) {
			pthread_mutex_lock(&s->lock);
			r->sd->st.svm_tlb_inval_count++;
			pthread_mutex_unlock(&s->lock);
		}
	}
	pthread_mutex_lock(&s->lock);
	r->nmaps = 0;
	if (r->rearm) {
		r->rearm = false;
		s->nrearm--;
	}
	pthread_mutex_unlock(&s->lock);
}

static bool gc_pending(struct svm *s, struct svm_range *r);

/*
 * Before an ioctl placing [@dst, +@len) of @r's bytes back in the process:
 * take the event hold, then check again, under it, that the process still
 * wants them there. A followed copy (a collection's): its decision still
 * holds, else -ESTALE (decide again). Any other way back (a touch, an
 * eviction, fork, suspend): no event marked @r since the caller looked,
 * else -ENOENT (the caller looks again; the collection copies what is left).
 * The review found the way back's pooled move and whole-span copy filling
 * pages freed after the caller's check (test_svm test_copy_back_after_free).
 * 0: the hold is taken; uffd_events_release() after the ioctl.
 */
static int copy_guard_enter(struct svm *s, struct svm_range *r, const struct svm_follow *f,
			    uint64_t dst, uint64_t len)
{
	uffd_events_hold(s->u);
	if (f ? f->holds(s, f, dst, len) : !gc_pending(s, r))
		return 0;
	uffd_events_release(s->u);
	return f ? -ESTALE : -ENOENT;
}

/*
 * @r's only copy was in the VRAM of a device that went away by surprise, or
 * that could not be copied back when it had to leave (@why): [dst, +len) of
 * the process can never hold its data again. It must fail
 * loudly (SIGBUS through UFFDIO_POISON; an inaccessible mapping, SIGSEGV,
 * where the kernel lacks it), never read as zeroes or as what the dead
 * device's BAR returns. Logged with the address and counted. -ENODATA.
 */
static int range_lost(struct svm *s, struct svm_range *r, uint64_t len, uint64_t dst,
		      const struct svm_follow *f, const char *why)
{
	uint64_t deadline = now_ns() + ms_to_ns(2000);
	int ret;

	/* A collection's loss goes where its decision says, checked again
	 * under the event hold as its copies are (the review: a free of the
	 * destination after the decision was poisoned, SIGBUS where zeroes
	 * belong): -ESTALE, decide again. UFFDIO_POISON fails with EAGAIN
	 * while an event is being reported, as the copies do: tried again,
	 * never taken for a missing feature (the fence below would cover
	 * whatever the process has just mapped there). */
	for (;;) {
		if (f) {
			ret = copy_guard_enter(s, r, f, dst, len);
			if (ret)
				return ret;
		}
		ret = (s->features & UFFD_FEATURE_POISON) ? uffd_poison(s->u, dst, len) : -EOPNOTSUPP;
		if (f)
			uffd_events_release(s->u);
		if (ret != -EAGAIN || now_ns() >= deadline)
			break;
		sleep_until_ns(now_ns() + 100000);
	}
	if (ret && ret != -ENOENT && ret != -EAGAIN &&
	    mmap((void *)dst, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
		 -1, 0) == MAP_FAILED)
		log_err(s->ctx, "svm: cannot fence [0x%" PRIx64 ", +0x%" PRIx64 ") after its loss: %s", dst,
			len, ugpu_strerror(-errno));
	log_err(s->ctx, "svm: [0x%" PRIx64 ", +0x%" PRIx64 ") was only in the VRAM of %s, and %s: its contents are LOST (CPU touches raise %s)",
		dst, len, r->sd->dev->name, why, ret ? "SIGSEGV" : "SIGBUS");
	pthread_mutex_lock(&s->lock);
	r->sd->st.svm_lost_count++;
	r->sd->st.svm_lost_bytes += len;
	pthread_mutex_unlock(&s->lock);
	return -ENODATA;
}

#if defined(__SANITIZE_THREAD__)
/* ThreadSanitizer's annotations (its runtime defines them) */
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
#endif

/*
 * Copy bytes whose last stores something ThreadSanitizer cannot see put in
 * order before our reads: the kernel (pages the CPU can no longer store
 * to: moved away with UFFDIO_MOVE, or write-protected) or the device (VRAM
 * after the kernel ended, or after a TLB drop that waited for accesses in
 * flight). In a TSan build this thread's accesses are ignored for the
 * copy. (Relaxed 8-byte atomic loads, as before, were not reported either,
 * but made each 2 MiB many times slower under TSan, and test_thrashing's
 * rounds outgrew its 50 ms lapse on a busy machine.) UFFDIO_COPY read VRAM
 * in the kernel before, unseen by TSan too.
 */
static void copy_unseen(void *dst, const void *src, size_t len)
{
#if defined(__SANITIZE_THREAD__)
	AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
#endif
	memcpy(dst, src, len);
#if defined(__SANITIZE_THREAD__)
	AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
#endif
}

/* Copy one page the CPU can no longer store to (moved away into a pool
 * slot): copy_unseen(). */
#if defined(__SANITIZE_ADDRESS__)
/* A page of the process is copied whole, redzones between its objects
 * included: not a checked access (the scenario matrix's ASan run aborted on
 * a global's redzone). */
__attribute__((no_sanitize_address))
#endif
static void copy_page(char *dst, const char *src)
{
#if defined(__SANITIZE_ADDRESS__)
	for (size_t i = 0; i < SVM_4K; i += sizeof(uint64_t)) {
		uint64_t v = __atomic_load_n((const uint64_t *)(src + i), __ATOMIC_RELAXED);

		memcpy(dst + i, &v, sizeof(v));
	}
#else
	copy_unseen(dst, src, SVM_4K);
#endif
}

/* ---- the page pool (struct svm) ------------------------------------------------------ */

static uintptr_t slot_addr(const struct svm *s, int slot)
{
	return s->pool + (uint64_t)slot * SVM_2M;
}

/* A slot of state @want made busy, or -1 if there is none. */
static int slot_take(struct svm *s, enum pool_slot want)
{
	int i, slot = -1;

	pthread_mutex_lock(&s->pool_lock);
	for (i = 0; i < SVM_POOL_SLOTS && slot < 0; i++)
		if (s->pool_state[i] == want)
			slot = i;
	if (slot >= 0) {
		s->pool_state[slot] = POOL_BUSY;
		if (want == POOL_FULL)
			s->pool_nfull--;
	}
	pthread_mutex_unlock(&s->pool_lock);
	return slot;
}

/* Give @slot (busy, ours) back as it is: @full when it holds 512 pages of
 * ours, else it must hold none. */
static void slot_release(struct svm *s, int slot, bool full)
{
	pthread_mutex_lock(&s->pool_lock);
	s->pool_state[slot] = full ? POOL_FULL : POOL_EMPTY;
	s->pool_nfull += full;
	pthread_cond_broadcast(&s->pool_cond);
	pthread_mutex_unlock(&s->pool_lock);
}

/* Give @slot (busy, ours) back: @full when it holds 512 pages of ours, else
 * whatever it holds is freed first. MADV_DONTNEED of the pool (registered
 * with our userfaultfd) is a REMOVE event: this thread waits until the
 * handler thread has read it, and meanwhile every UFFDIO_MOVE or COPY of
 * another thread fails with EAGAIN (and retries 100 µs later). */
static void slot_put(struct svm *s, int slot, bool full)
{
	if (!full)
		madvise((void *)slot_addr(s, slot), SVM_2M, MADV_DONTNEED);
	slot_release(s, slot, full);
}

/* A slot to move pages into: an empty one, else a full one emptied (its
 * pages freed), else the first that stops being busy. */
static int slot_take_staging(struct svm *s)
{
	for (;;) {
		int slot = slot_take(s, POOL_EMPTY);

		if (slot < 0 && (slot = slot_take(s, POOL_FULL)) >= 0)
			madvise((void *)slot_addr(s, slot), SVM_2M, MADV_DONTNEED);
		if (slot >= 0)
			return slot;
		pthread_mutex_lock(&s->pool_lock);
		for (int i = 0; i < SVM_POOL_SLOTS; i++)
			if (s->pool_state[i] != POOL_BUSY)
				goto again;
		pthread_cond_wait(&s->pool_cond, &s->pool_lock);
	again:
		pthread_mutex_unlock(&s->pool_lock);
	}
}

/*
 * The pool holds no more pages than the 2 MiB ranges in VRAM would take
 * back: full slots beyond that (their ranges were freed, evicted, or came
 * back another way) are emptied. Any thread, no lock held.
 */
void pool_trim(struct svm *s)
{
	uint64_t in_vram = 0;

	if (!s->pool)
		return;
	pthread_mutex_lock(&s->lock);
	list_for_each(l, &s->devs)
		in_vram += list_entry(l, struct svm_dev, link)->st.svm_vram_bytes;
	pthread_mutex_unlock(&s->lock);
	for (;;) {
		int slot;

		pthread_mutex_lock(&s->pool_lock);
		slot = (uint64_t)s->pool_nfull * SVM_2M > in_vram ? 0 : -1;
		pthread_mutex_unlock(&s->pool_lock);
		if (slot < 0 || (slot = slot_take(s, POOL_FULL)) < 0)
			return;
		slot_put(s, slot, false);
	}
}

/*
 * Copy back a whole 2 MiB from VRAM at @src to the process at @dst through a
 * full slot: its pages get the bytes, then UFFDIO_MOVE puts them in place
 * (the places are empty; a touch of a page moved already finds its data,
 * one of a page not yet moved still faults and waits) and the threads
 * waiting there are woken. Returns how many bytes went so (0: no full
 * slot); the caller copies the rest, and sees the error that stopped the
 * move (a page there after all, the process unmapped @dst) on its own.
 */
static uint64_t copy_back_pooled(struct svm *s, struct svm_range *r, uint64_t dst, const char *src,
				 const struct svm_follow *f)
{
	uint64_t deadline = now_ns() + ms_to_ns(2000);
	int slot = s->pool ? slot_take(s, POOL_FULL) : -1;
	size_t moved = 0;
	uintptr_t a;
	int ret;

	if (slot < 0)
		return 0;
	a = slot_addr(s, slot);
	copy_unseen((void *)a, src, SVM_2M);
	for (;;) {
		ret = copy_guard_enter(s, r, f, dst + moved, SVM_2M - moved);
		if (ret)
			break; /* the caller's copy finds out too */
		ret = uffd_move(s->u, dst + moved, a + moved, SVM_2M - moved, false, &moved);
		uffd_events_release(s->u);
		if (ret != -EAGAIN || now_ns() >= deadline)
			break;
		sleep_until_ns(now_ns() + 100000);
	}
	if (moved)
		uffd_wake(s->u, dst, moved);
	/* all moved: the slot is empty as it is (no MADV_DONTNEED, no REMOVE
	 * event: one handler round trip less a move); else what is left goes */
	if (moved == SVM_2M)
		slot_release(s, slot, false);
	else
		slot_put(s, slot, false);
	return moved;
}

/* Where this process's CPU reaches @bo's bytes: @sd's VRAM through the BAR,
 * or through ugpud the daemon's BO, its memfd mapped here (the daemon holds
 * it in system memory while mapped); bo_view_end() ends that mapping. */
static int bo_view(struct svm_dev *sd, struct ugpu_bo *bo, char **p)
{
	void *view;
	int ret;

	if (!device_is_remote(sd->dev)) {
		*p = (char *)sd->dev->vram + bo_vram_offset(bo);
		return 0;
	}
	ret = ugpu_bo_map(bo, &view);
	if (!ret)
		*p = view;
	return ret;
}

static void bo_view_end(struct svm_dev *sd, struct ugpu_bo *bo)
{
	if (device_is_remote(sd->dev))
		ugpu_bo_unmap(bo);
}

static int range_copy_back_from(struct svm *s, struct svm_range *r, const char *src, uint64_t len,
				uint64_t dst, const struct svm_follow *f, uint64_t counted,
				uint64_t deadline);

/*
 * Copy [off, +len) of @r's VRAM back into the process at @dst (which must
 * have no pages there: the range is registered and its pages were taken).
 * UFFDIO_COPY reads the VRAM mapping and maps fresh pages atomically; the
 * threads waiting on them wake. The device must be awake and not
 * host-suspended (the callers wait: bo_pm_wait_awake(); svm_evict() runs
 * where no suspend can be).
 */
static int range_copy_back(struct svm *s, struct svm_range *r, uint64_t off, uint64_t len,
			   uint64_t dst, const struct svm_follow *f)
{
	uint64_t deadline = now_ns() + ms_to_ns(2000), counted = len;
	char *view;
	int ret;

	/* through ugpud the range's maps went first (the daemon's BO moves
	 * to system memory for the view) */
	ret = bo_view(r->sd, r->bo, &view);
	if (ret)
		return ret;
	ret = range_copy_back_from(s, r, view + off, len, dst, f, counted, deadline);
	bo_view_end(r->sd, r->bo);
	return ret;
}

static int range_copy_back_from(struct svm *s, struct svm_range *r, const char *src, uint64_t len,
				uint64_t dst, const struct svm_follow *f, uint64_t counted,
				uint64_t deadline)
{
	uint64_t i;
	int ret;

	if (device_vram_lost(r->sd->dev))
		return range_lost(s, r, len, dst, f, "the device went away by surprise");
	{
		int inject = 0;

		test_point_obj(TEST_POINT_SVM_COPY_BACK, &inject);
		if (inject)
			return inject;
	}

	/* Counted before the copy wakes the threads waiting for it (what they
	 * read next is consistent with the counters); taken back if it fails. */
	pthread_mutex_lock(&s->lock);
	r->sd->st.svm_cpu_copy_kb += len >> 10;
	pthread_mutex_unlock(&s->lock);
	/* A whole 2 MiB goes through the page pool if it can (no page
	 * allocated); what did not is copied. */
	if (len == SVM_2M && !(dst & (SVM_2M - 1))) {
		uint64_t done = copy_back_pooled(s, r, dst, src, f);

		dst += done;
		src += done;
		len -= done;
		if (!len)
			return 0;
	}
	/* -EAGAIN: an unmap or move of the process is being reported; the
	 * handler thread reads it and the ioctl works again. */
	for (;;) {
		ret = copy_guard_enter(s, r, f, dst, len);
		if (ret)
			goto out;
		ret = uffd_copy(s->u, dst, src, len, true);
		uffd_events_release(s->u);
		if (ret != -EAGAIN || now_ns() >= deadline)
			break;
		sleep_until_ns(now_ns() + 100000);
	}

	if (ret == -EEXIST || (ret == -ENOENT && len > SVM_4K)) {
		/* Some pages are there after all (keep them), or the span is
		 * not one registered mapping any more: the process split it
		 * meanwhile (an mprotect, an madvise of a part: UFFDIO_COPY
		 * wants one mapping, and the range came back all zero before,
		 * test_svm test_split_while_in_vram) or unmapped or freed a
		 * part. Page by page, each under the event lock while no event
		 * marked the range (outside its collection, which copies only
		 * what is left by design): a free or an unmap read since the
		 * caller's check must not get the old bytes back (the review:
		 * test_copy_back_after_free_and_unmap). -ENOENT when any page
		 * had no place or the range was marked: the caller looks
		 * again. */
		bool missing = false;

		ret = 0;
		for (i = 0; i < len && !ret; i += SVM_4K) {
			for (;;) {
				ret = copy_guard_enter(s, r, f, dst + i, SVM_4K);
				if (ret)
					goto out; /* -ESTALE, or -ENOENT: marked */
				ret = uffd_copy(s->u, dst + i, src + i, SVM_4K, true);
				uffd_events_release(s->u);
				if (ret != -EAGAIN || now_ns() >= deadline)
					break;
				sleep_until_ns(now_ns() + 100000);
			}
			if (ret == -EEXIST || ret == -ENOENT) {
				missing |= ret == -ENOENT;
				ret = 0;
			}
		}
		if (!ret && missing)
			ret = -ENOENT;
	}
out:
	if (ret) {
		pthread_mutex_lock(&s->lock);
		r->sd->st.svm_cpu_copy_kb -= counted >> 10;
		pthread_mutex_unlock(&s->lock);
	}
	return ret;
}

void range_free_vram(struct svm *s, struct svm_range *r)
{
	struct svm_dev *sd = r->sd;

	ugpu_bo_put(r->bo);
	r->bo = NULL;
	pthread_mutex_lock(&s->lock);
	sd->st.svm_vram_bytes -= r->size;
	pthread_mutex_unlock(&s->lock);
	vram_ranges_dec(s, sd);
	pool_trim(s);
}

/* svm/svm.h */
int copy_back_must(struct svm *s, struct svm_range *r, uint64_t off, uint64_t len, uint64_t dst,
		   const struct svm_follow *f)
{
	int ret = 0;

	for (int k = 0; k < SVM_COPY_TRIES; k++) {
		if (k)
			sleep_until_ns(now_ns() + ms_to_ns(SVM_COPY_RETRY_MS));
		ret = range_copy_back(s, r, off, len, dst, f);
		if (!ret || ret == -ENOENT || ret == -ENODATA || ret == -ESTALE)
			return ret;
	}
	log_err(s->ctx, "svm: [0x%" PRIx64 ", +0x%" PRIx64 ") could not be copied back from VRAM in %d tries (%s), and must leave it",
		dst, len, SVM_COPY_TRIES, ugpu_strerror(ret));
	return range_lost(s, r, len, dst, f, "the copy back kept failing");
}

/* An unmap, free or move of the process marked @r since it was owned. */
static bool gc_pending(struct svm *s, struct svm_range *r)
{
	bool pending;

	pthread_mutex_lock(&s->lock);
	pending = r->gc_pending;
	pthread_mutex_unlock(&s->lock);
	return pending;
}

/* Bring @r (owned, in VRAM) back into process memory. On a failed copy it
 * stays in VRAM, nothing lost, and the error is returned (the next touch
 * tries again); -ENOENT (unmapped meanwhile) and -ENODATA (lost with the
 * device, logged) leave it out of VRAM. */
int range_to_cpu(struct svm *s, struct svm_range *r)
{
	int ret;

	if (r->where == R_DUP) {
		dup_drop(s, r); /* the process has the bytes */
		return 0;
	}

	bo_pm_wait_awake(r->sd->dev); /* its VRAM is unreachable while host-suspended */
	/* the timeslice, or longer for a range throttled for thrashing */
	sleep_until_ns(range_home_at_ns(r));
	range_unmap_gpu(s, r);
	ret = range_copy_back(s, r, 0, r->size, r->start, NULL);
	if (ret == -ENOENT && gc_pending(s, r))
		return -EAGAIN; /* stays: the collection copies it where it went */
	if (ret && ret != -ENOENT && ret != -ENODATA) {
		log_err(s->ctx, "svm: bringing [0x%" PRIx64 ", +0x%" PRIx64 ") back from VRAM failed: %s: it stays there, nothing lost (the next touch tries again)",
			r->start, r->size, ugpu_strerror(ret));
		return ret;
	}
	range_free_vram(s, r);
	range_set(s, r, R_CPU, NULL);
	return ret;
}

/* The same where @r must leave VRAM now (the device goes, a bind covers
 * it): a copy that keeps failing loses the bytes, loudly. */
int range_to_cpu_must(struct svm *s, struct svm_range *r)
{
	if (r->where == R_DUP) {
		dup_drop(s, r);
		return 0;
	}
	bo_pm_wait_awake(r->sd->dev);
	sleep_until_ns(r->vram_at_ns + ms_to_ns(SVM_TIMESLICE_MS));
	range_unmap_gpu(s, r);
	if (copy_back_must(s, r, 0, r->size, r->start, NULL) == -ENOENT && gc_pending(s, r))
		return -EAGAIN; /* stays: the collection copies it where it went */
	range_free_vram(s, r);
	range_set(s, r, R_CPU, NULL);
	return 0;
}


/*
 * Copy the @present pages of the process's [src, +npages pages) into @vram
 * (zeroes for the others) with process_vm_readv(), not by reading them
 * here: the process may unmap them meanwhile (a prefetch racing a free),
 * and a read here would then kill it with SIGSEGV (found by
 * test_svm_policy's prefetch race as an ordinary user); the call fails
 * with -EFAULT instead. Pages write-protected or read-mostly stay the
 * process's, so this is how their bytes are read. 0 or -errno.
 */
static int read_process(char *vram, uint64_t src, const bool *present, size_t npages)
{
	struct iovec local[64], remote[64];
	size_t i = 0;

	while (i < npages) {
		size_t n = 0, want = 0;
		ssize_t got;

		for (; i < npages && n < 64; i++) {
			if (!present[i]) {
				memset(vram + i * SVM_4K, 0, SVM_4K);
				continue;
			}
			local[n] = (struct iovec){ vram + i * SVM_4K, SVM_4K };
			remote[n] = (struct iovec){ (void *)(uintptr_t)(src + i * SVM_4K), SVM_4K };
			n++;
			want += SVM_4K;
		}
		if (!n)
			continue;
		got = process_vm_readv(getpid(), local, n, remote, n, 0);
		if (got != (ssize_t)want)
			return got < 0 ? -errno : -EFAULT;
	}
	return 0;
}

/* The process's pages of @r are gone (moved or zapped): which of them held
 * data is in @present. Copy them from @src into VRAM at @vram, zero the
 * holes. */
static void fill_vram(char *vram, const char *src, const bool *present, size_t npages)
{
	size_t i;

	for (i = 0; i < npages; i++) {
		if (present[i])
			copy_page(vram + i * SVM_4K, src + i * SVM_4K);
		else
			memset(vram + i * SVM_4K, 0, SVM_4K);
	}
}

static size_t count_present(const bool *present, size_t npages)
{
	size_t k, n = 0;

	for (k = 0; k < npages; k++)
		n += present[k];
	return n;
}

/*
 * The first @moved bytes of @r moved to the staging area and the rest was
 * refused (a page shared with a forked child, a pinned one): each goes back
 * before anything else happens to the range. Moved back first (their
 * places are empty: a touch there waits for us); a page that cannot be is
 * copied back; only a page whose place the process unmapped meanwhile is
 * dropped. The caller empties @staging afterwards. @r owned; @present is
 * scratch space for @npages.
 */
static void staging_put_back(struct svm *s, struct svm_range *r, uintptr_t staging, size_t moved,
			     bool *present, size_t npages)
{
	uint64_t deadline = now_ns() + ms_to_ns(2000);
	size_t back = 0, k, lost = 0;
	int ret = 0;

	while (back < moved &&
	       (ret = uffd_move(s->u, r->start + back, staging + back, moved - back, true,
				&back)) == -EAGAIN &&
	       now_ns() < deadline)
		sleep_until_ns(now_ns() + 100000);
	if (ret && !pages_present(s, staging, npages, present)) {
		for (k = 0; k < npages; k++) {
			uint64_t off = k * SVM_4K;

			if (!present[k])
				continue;
			while ((ret = uffd_copy(s->u, r->start + off, (const void *)(staging + off),
						SVM_4K, false)) == -EAGAIN &&
			       now_ns() < deadline)
				sleep_until_ns(now_ns() + 100000);
			lost += ret && ret != -EEXIST;
		}
	}
	if (lost)
		log_err(s->ctx, "svm: %zu pages of [0x%" PRIx64 ", +0x%" PRIx64 ") could not go back after a refused move (the process unmapped them?)",
			lost, r->start, r->size);
}

/* The owner of @r marks its thread as @r's reader (0: none), under the
 * lock the handler reads it with. */
static void set_reader(struct svm *s, struct svm_range *r, pid_t tid)
{
	pthread_mutex_lock(&s->lock);
	r->reader = tid;
	pthread_mutex_unlock(&s->lock);
}

/* read_process() of @r's pages by its owner, this thread marked as the
 * range's reader: a page the process frees meanwhile (MADV_DONTNEED) faults
 * into our userfaultfd, and the handler answers this thread with a zero
 * page instead of parking it on the range it owns itself (a hang: test_svm
 * test_free_during_wp_copy). The free's collection drops that part after. */
static int read_owned(struct svm *s, struct svm_range *r, char *vram, const bool *present,
		      size_t npages)
{
	int ret;

	set_reader(s, r, gettid());
	ret = read_process(vram, r->start, present, npages);
	set_reader(s, r, 0);
	return ret;
}

/*
 * The zap failed part way: the madvise zaps mapping after mapping and
 * stops at one it cannot zap (mlock'd: EINVAL; a hole: ENOMEM), and the
 * process may lock or unmap a part while it waits for its event. The
 * pages it took are put back from the copy just made in VRAM (write
 * protection kept them unchanged), each under the event hold while no
 * event marked the range; a page still there (-EEXIST) or no longer
 * mapped (-ENOENT) is left. The review: an mlock of the upper half during
 * the zap, and the lower half read zero (test_svm test_mlock_during_zap).
 * 0; -ENOENT when an event marked the range first (its collection finds
 * no VRAM copy: what was not put back reads zero), or the copy's error.
 */
static int zap_undo(struct svm *s, struct svm_range *r, const char *vram, const bool *present,
		    size_t npages)
{
	for (size_t i = 0; i < npages; i++) {
		uint64_t dst = r->start + i * SVM_4K, deadline = now_ns() + ms_to_ns(2000);
		int ret;

		if (!present[i])
			continue; /* nothing was there to take */
		for (;;) {
			ret = copy_guard_enter(s, r, NULL, dst, SVM_4K);
			if (ret)
				return ret;
			ret = uffd_copy(s->u, dst, vram + i * SVM_4K, SVM_4K, true);
			uffd_events_release(s->u);
			if (ret != -EAGAIN || now_ns() >= deadline)
				break;
			sleep_until_ns(now_ns() + 100000);
		}
		if (ret && ret != -EEXIST && ret != -ENOENT)
			return ret;
	}
	return 0;
}

/* Fault injection (test point TEST_POINT_SVM_COPY_IN): 0, or the -errno
 * the copy into VRAM is to fail with. */
static int copy_in_injected(void)
{
	int inject = 0;

	test_point_obj(TEST_POINT_SVM_COPY_IN, &inject);
	return inject;
}

/*
 * Take @r's pages away from the CPU and put their bytes into @bo's VRAM,
 * with no moment where a CPU store could be lost: either the pages are
 * moved out atomically (UFFDIO_MOVE, Linux 6.8) and a touch meanwhile faults
 * to us and waits, or they are write-protected first (a store waits), copied
 * and then zapped. @r owned.
 */
static int take_pages(struct svm *s, struct svm_range *r, char *vram)
{
	size_t npages = r->size / SVM_4K, moved = 0;
	bool *present = calloc(npages, sizeof(*present));
	bool zap_guarded = false;
	int ret = -EOPNOTSUPP;

	if (!present)
		return -ENOMEM;
	if (s->have_move && s->pool && r->size <= SVM_2M) {
		uint64_t deadline = now_ns() + ms_to_ns(2000);
		int slot = slot_take_staging(s);
		uintptr_t staging = slot_addr(s, slot);

		for (;;) {
			/* The check and the move under the handler's event
			 * lock: UFFDIO_MOVE takes pages from whatever
			 * anonymous mapping is at the address, and an unmap
			 * lets its thread go (to map and fill new memory
			 * there) once its event is read, before the handler
			 * marked the range. Under the lock the unmap is either
			 * marked before the check or comes after the move (a
			 * move with its event unread fails with EAGAIN). The
			 * new mapping's pages were taken and then dropped
			 * with the old range before (test_svm
			 * test_remap_during_prefetch). */
			uffd_events_hold(s->u);
			ret = gc_pending(s, r) ? -ENOENT
					       : uffd_move(s->u, staging, r->start, r->size, true, &moved);
			uffd_events_release(s->u);
			if (ret != -EAGAIN || moved || now_ns() >= deadline)
				break;
			sleep_until_ns(now_ns() + 100000);
		}
		if (ret == -ENOENT && !moved) {
			/* being collected: nothing was taken, nothing to
			 * move (the collection drops the range) */
			slot_put(s, slot, false);
			goto out;
		}
		if (!ret) {
			test_point(TEST_POINT_SVM_TAKEN);
			ret = pages_present(s, staging, npages, present);
		}
		if (!ret)
			ret = copy_in_injected();
		if (!ret) {
			size_t n = count_present(present, npages);

			log_dbg(s->ctx, "svm: moved [0x%" PRIx64 ", +0x%" PRIx64 "): %zu bytes moved, %zu of %zu pages present",
				r->start, r->size, moved, n, npages);
			fill_vram(vram, (const char *)staging, present, npages);
			/* a whole 2 MiB of pages stays in the pool for a copy
			 * back; anything else is freed */
			slot_put(s, slot, n == SVM_2M / SVM_4K);
			goto out;
		}
		if (moved)
			staging_put_back(s, r, staging, moved, present, npages);
		slot_put(s, slot, false);
		log_dbg(s->ctx, "svm: UFFDIO_MOVE of [0x%" PRIx64 ", +0x%" PRIx64 ") refused (%s): write protection instead",
			r->start, r->size, ugpu_strerror(ret));
	}
	if (!s->have_wp) {
		ret = -EOPNOTSUPP;
		goto out;
	}
	{
		uint64_t deadline = now_ns() + ms_to_ns(2000);

		while ((ret = uffd_wp(s->u, r->start, r->size, true)) == -EAGAIN && now_ns() < deadline)
			sleep_until_ns(now_ns() + 100000);
	}
	if (ret)
		goto out;
	test_point(TEST_POINT_SVM_TAKEN);
	ret = pages_present(s, r->start, npages, present);
	if (!ret)
		ret = copy_in_injected();
	if (!ret) {
		log_dbg(s->ctx, "svm: write-protected [0x%" PRIx64 ", +0x%" PRIx64 "): %zu of %zu pages present",
			r->start, r->size, count_present(present, npages), npages);
		test_point_obj(TEST_POINT_SVM_WP_COPY, r);
		ret = read_owned(s, r, vram, present, npages);
	}
	if (!ret) {
		/*
		 * The zap acts on whatever is mapped at the address: a range
		 * the process unmapped since (its event handled: checked under
		 * the handler's event lock) is not zapped, for a new mapping
		 * may be there already. The lock cannot be held across the
		 * madvise, and the madvise is a window: the kernel drops the
		 * mmap lock, queues our REMOVE, waits until it is read, then
		 * looks the address up again and zaps what is there then. An
		 * unmap waits for its own event to be read before its thread
		 * goes on (to map and fill new memory there), so the handler
		 * (mm/uffd.h uffd_zap_begin()) reads nothing until this thread
		 * is inside the madvise, one message at a time after, and on
		 * reading ours waits for the madvise to return before it reads
		 * the next. test_svm test_remap_during_prefetch, write-
		 * protection variant: one run in three lost the new mapping
		 * before, to the wait inside the madvise and to the moment
		 * between the check and the madvise. What stays open is
		 * another thread mapping the address freed by an unmap whose
		 * thread still waits (docs/svm.md, "Collections that run
		 * late").
		 */
		uffd_events_hold(s->u);
		pthread_mutex_lock(&s->lock);
		if (r->gc_pending) {
			ret = -ENOENT;
		} else {
			r->self_zap = true;
			r->zapping = true;
			r->zap_tid = gettid();
			r->zap_repeat = false;
			r->zap_repeat_after = 0;
			r->zap_unmapped_from = UINT64_MAX;
		}
		pthread_mutex_unlock(&s->lock);
		if (!ret)
			zap_guarded = !uffd_zap_begin(s->u);
		uffd_events_release(s->u);
	}
	if (!ret) {
		test_point_obj(TEST_POINT_SVM_ZAP, r);
		ret = madvise((void *)r->start, r->size, MADV_DONTNEED) ? -errno : 0;
		if (zap_guarded)
			uffd_zap_returned(s->u);
		pthread_mutex_lock(&s->lock);
		r->zapping = false;
		r->zap_tid = 0;
		pthread_cond_broadcast(&s->cond);
		pthread_mutex_unlock(&s->lock);
		/* madvise returned once the handler read the REMOVE event, not
		 * once it acted on it: it must see @self_zap when it does. */
		if (!ret)
			uffd_sync(s->u);
		if (zap_guarded)
			uffd_zap_end(s->u);
		pthread_mutex_lock(&s->lock);
		r->self_zap = false;
		r->zap_repeat = false;
		r->zap_repeat_after = 0;
		pthread_mutex_unlock(&s->lock);
		if (ret) {
			/* mlock'd memory cannot be zapped (EINVAL): its pages
			 * stay the process's, so the range stays where it is
			 * (used in place) instead of a copy in VRAM that the
			 * CPU would never see again (found by the scenario
			 * matrix: every GPU store was lost to the CPU) */
			log_dbg(s->ctx, "svm: [0x%" PRIx64 ", +0x%" PRIx64 ") cannot be taken from the process (%s, mlock'd?): used in place",
				r->start, r->size, ugpu_strerror(ret));
			int undo = zap_undo(s, r, vram, present, npages);

			if (undo)
				log_err(s->ctx, "svm: [0x%" PRIx64 ", +0x%" PRIx64 ") could not be zapped whole (%s), and putting back what the zap took failed (%s%s): those pages read zero",
					r->start, r->size, ugpu_strerror(ret), ugpu_strerror(undo),
					undo == -ENOENT ? ": the process unmapped, freed or moved part of it meanwhile" : "");
			uffd_wp(s->u, r->start, r->size, false);
		}
	} else {
		uffd_wp(s->u, r->start, r->size, false);
	}
out:
	free(present);
	return ret;
}

/* Contiguous VRAM of @sd for @r: a kernel BO (restored late, like xe's),
 * not cleared first: take_pages(), range_dup() and a peer's move
 * (svm/peer.c) write every byte of it (zeroes where the process had no
 * page) before it is mapped anywhere, and free it when they fail. */
int range_bo_create(struct svm_range *r, struct svm_dev *sd, const char *name,
		    unsigned int bo_flags, struct ugpu_bo **bo)
{
	if (device_is_remote(sd->dev)) {
		/* a staging BO of the daemon's: made in system memory (its
		 * memfd is mapped here to fill it), moved to VRAM when mapped
		 * in the VM (UGPUD_SVM_MAP) */
		struct ugpu_bo_opts ro = {
			.size = sizeof(ro),
			.bytes = r->size,
			.placements = { UGPU_PLACEMENT_SYSTEM, UGPU_PLACEMENT_VRAM },
			.name = name,
		};

		return ugpu_bo_create(sd->dev, &ro, bo);
	}

	struct ugpu_bo_opts o = {
		.size = sizeof(o),
		.bytes = r->size,
		.placements = { UGPU_PLACEMENT_VRAM },
		.flags = UGPU_BO_KERNEL | UGPU_BO_LATE_RESTORE | UGPU_BO_CONTIGUOUS,
		.name = name,
	};

	return bo_create_kernel(sd->dev, &o, BO_KERNEL_NO_CLEAR | bo_flags, bo);
}

/* Move @r (owned, R_CPU) into @sd's VRAM; @bo_flags: BO_KERNEL_SPECULATIVE
 * or 0 (mm/bo.h). */
int range_to_vram(struct svm *s, struct svm_range *r, struct svm_dev *sd, unsigned int bo_flags)
{
	uint64_t t0 = now_ns(), t_take;
	struct ugpu_bo *bo;
	int ret;

	ret = range_bo_create(r, sd, "svm", bo_flags, &bo);
	if (ret)
		return ret;
	{
		uint64_t start = r->start;

		test_point_obj(TEST_POINT_SVM_VRAM_MADE, &start);
	}
	/* The race window: from here a CPU access to the range faults into
	 * us and waits (its pages are being taken) until the range is in
	 * VRAM, then for its way back (the timeslice first). */
	t_take = now_ns();
	{
		char *view;

		ret = bo_view(sd, bo, &view);
		if (!ret) {
			ret = take_pages(s, r, view);
			bo_view_end(sd, bo);
		}
	}
	if (ret) {
		ugpu_bo_put(bo);
		return ret;
	}
	r->bo = bo;
	r->vram_at_ns = now_ns();
	range_set(s, r, R_VRAM, sd);
	stat_hist_add(&sd->dev->svm_window_hist, (r->vram_at_ns - t_take) / 1000);
	vram_ranges_inc(s, sd);
	if (!device_is_remote(sd->dev))
		bo_mark_svm(bo); /* on the eviction LRU with the BOs from now on */
	pthread_mutex_lock(&s->lock);
	sd->st.svm_device_copy_kb += r->size >> 10;
	sd->st.svm_vram_bytes += r->size;
	size_count(&sd->st, r->size, 1, (now_ns() - t0) / 1000);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/*
 * Make every page of @r present (writable ones for writing), @r populating.
 * MADV_POPULATE_* is a kernel-mode access, which a user-mode-only
 * userfaultfd (an ordinary user's, docs/cpu-mappings.md) answers with
 * EFAULT: there each missing page is filled through our userfaultfd
 * instead (UFFDIO_COPY of a page of zeroes for a writable page,
 * UFFDIO_ZEROPAGE for a read-only one: what the kernel would have given
 * a first touch; a page already there answers -EEXIST and is kept). Not
 * by touching the pages from here, as before: the process may unmap them
 * meanwhile (a prefetch racing a free), and the touch then killed the
 * process with SIGSEGV (found by test_svm_policy's prefetch race run as
 * an ordinary user); the ioctl fails instead (-ENOENT, the range is
 * being collected).
 */
static int populate(struct svm *s, struct svm_range *r)
{
	if (!uffd_is_user_mode_only(s->u))
		return madvise((void *)r->start, r->size,
			       r->writable ? MADV_POPULATE_WRITE : MADV_POPULATE_READ) ? -errno : 0;
	for (uint64_t a = r->start; a < r->start + r->size; a += SVM_4K) {
		int ret = r->writable ? uffd_copy(s->u, a, zero_page, SVM_4K, true)
				      : uffd_zeropage(s->u, a, SVM_4K);

		if (ret == -EAGAIN) { /* an unmap or move is being reported */
			sleep_until_ns(now_ns() + 100000);
			a -= SVM_4K;
			continue;
		}
		if (ret && ret != -EEXIST)
			return ret;
	}
	return 0;
}

/* populate() with @r marked populating: a fault on a page never touched
 * gets a fresh page from the handler instead of being parked on the range
 * we own. */
static int populate_owned(struct svm *s, struct svm_range *r)
{
	int ret;

	pthread_mutex_lock(&s->lock);
	r->populating = true;
	r->reader = gettid(); /* a page freed meanwhile: ours to fill */
	pthread_mutex_unlock(&s->lock);
	ret = populate(s, r);
	pthread_mutex_lock(&s->lock);
	r->populating = false;
	r->reader = 0;
	pthread_mutex_unlock(&s->lock);
	return ret;
}

/*
 * Read-mostly: give @sd's VRAM a copy of @r (owned, R_CPU) and keep the
 * process's pages, write-protected with userfaultfd: CPU reads go on
 * without a fault, a CPU write faults into us and waits until the copy is
 * dropped (dup_drop()). Every page is made present first (write protection
 * ignores pages never populated, Linux < 6.7 has no WP_UNPOPULATED), then
 * protected, then copied: a store before the protection is copied, one
 * after it waits. -EOPNOTSUPP where the memory was registered without
 * write protection (the caller moves or maps it as usual).
 */
int range_dup(struct svm *s, struct svm_range *r, struct svm_dev *sd)
{
	uint64_t deadline = now_ns() + ms_to_ns(2000);
	bool remote = device_is_remote(sd->dev);
	struct ugpu_bo *bo;
	char *vram;
	int ret;

	if (!s->have_wp)
		return -EOPNOTSUPP;
	ret = range_bo_create(r, sd, "svm-dup", 0, &bo);
	if (ret)
		return ret;
	ret = populate_owned(s, r);
	while (!ret && (ret = uffd_wp(s->u, r->start, r->size, true)) == -EAGAIN &&
	       now_ns() < deadline)
		sleep_until_ns(now_ns() + 100000);
	if (ret) {
		ugpu_bo_put(bo);
		return ret == -EINVAL ? -EOPNOTSUPP : ret;
	}
	/* Through ugpud the copy is the daemon's BO, filled through its
	 * memfd as range_to_vram() fills one; the daemon's VM maps it (the
	 * process's CPU stores are seen here, by this process's userfaultfd,
	 * which drops the copy through the daemon first: dup_drop()) */
	ret = bo_view(sd, bo, &vram);
	if (!ret) {
		size_t npages = r->size / SVM_4K;
		bool *all = malloc(npages);

		if (all)
			memset(all, 1, npages); /* every page was made present */
		ret = all ? read_owned(s, r, vram, all, npages) : -ENOMEM;
		free(all);
		bo_view_end(sd, bo);
	}
	if (ret) {
		uffd_wp(s->u, r->start, r->size, false);
		ugpu_bo_put(bo);
		return ret;
	}
	r->bo = bo;
	r->vram_at_ns = now_ns();
	range_set(s, r, R_DUP, sd);
	vram_ranges_inc(s, sd);
	if (!remote)
		bo_mark_svm(bo); /* on the eviction LRU (the daemon evicts its own) */
	pthread_mutex_lock(&s->lock);
	sd->st.svm_device_copy_kb += r->size >> 10;
	sd->st.svm_vram_bytes += r->size;
	sd->st.svm_read_mostly_dup_count++;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/*
 * Drop @r's (owned, R_DUP) VRAM copy: the GPU's maps go first (PTEs zapped,
 * TLBs dropped: no kernel reads the copy afterwards), then the process's
 * pages are writable again (which wakes a CPU store waiting on them). What
 * a CPU write or a GPU write to read-mostly memory does: one copy again.
 */
void dup_drop(struct svm *s, struct svm_range *r)
{
	uint64_t deadline = now_ns() + ms_to_ns(2000);
	int ret;

	range_unmap_gpu(s, r);
	/* counted before the store it lets through: what that thread reads
	 * next is consistent with the counters */
	pthread_mutex_lock(&s->lock);
	r->sd->st.svm_read_mostly_collapse_count++;
	pthread_mutex_unlock(&s->lock);
	while ((ret = uffd_wp(s->u, r->start, r->size, false)) == -EAGAIN && now_ns() < deadline)
		sleep_until_ns(now_ns() + 100000);
	if (ret && ret != -ENOENT)
		log_err(s->ctx, "svm: [0x%" PRIx64 ", +0x%" PRIx64 "): lifting the write protection of a read-mostly range failed: %s",
			r->start, r->size, ugpu_strerror(ret));
	range_free_vram(s, r);
	range_set(s, r, R_CPU, NULL);
}

/* Map @r (owned, R_CPU) for @sd's device where it is. */
int range_in_place(struct svm *s, struct svm_range *r, struct svm_dev *sd)
{
	uint64_t iova;
	int ret;

	if (device_is_remote(sd->dev))
		return -EOPNOTSUPP; /* the daemon cannot reach this process's pages */

	/* Every page present before the device may reach it: a DMA access
	 * must never be the first touch of a page (it would fault into us).
	 * Populating memory never touched faults into our handler, which
	 * must answer (a fresh page) instead of parking the fault on this
	 * range we own: @populating says so. */
	ret = populate_owned(s, r);
	if (ret)
		return ret;
	ret = dma_map(&sd->dev->dma, (void *)r->start, r->size, -1, 0,
		      VFIO_DMA_READ | (r->writable ? VFIO_DMA_WRITE : 0), &iova);
	if (ret)
		return ret;
	r->iova = iova;
	range_set(s, r, R_INPLACE, sd);
	pthread_mutex_lock(&s->lock);
	sd->st.svm_in_place_count++;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

void range_unmap_dma(struct svm *s, struct svm_range *r)
{
	if (r->where == R_INPLACE) {
		dma_unmap(&r->sd->dev->dma, r->iova, r->size);
		range_set(s, r, R_CPU, NULL);
	}
}

/* Map @r (owned, VRAM or in place) in @vm at its address; @writable only
 * where the process's mapping is; @no_atomic: device atomics fault (the
 * device must have the bit: vm_can_deny_atomics()). A map with other
 * permissions goes first (an atomic-CPU span mapped read-only that a GPU
 * write now needs). */
int range_map_vm(struct svm *s, struct svm_range *r, struct ugpu_vm *vm, bool writable,
		 bool no_atomic)
{
	unsigned int i;
	int ret;

	writable = writable && r->writable && r->where != R_DUP; /* a copy is read-only */
	for (i = 0; i < r->nmaps; i++) {
		if (r->maps[i].vm != vm || r->maps[i].gpu_va != r->start)
			continue;
		if (r->maps[i].writable == writable && r->maps[i].no_atomic == no_atomic)
			return 0;
		vm_svm_unmap(vm, r->start, r->size);
		pthread_mutex_lock(&s->lock);
		r->maps[i] = r->maps[--r->nmaps];
		if (r->sd)
			r->sd->st.svm_tlb_inval_count++;
		pthread_mutex_unlock(&s->lock);
		break;
	}
	if (r->nmaps == SVM_MAX_MAPS)
		return -ENOSPC;
	if (range_has_vram(r) && r->sd->dev != vm->dev) /* a peer's VRAM, in place */
		ret = range_map_peer(s, r, vm, writable); /* never NO_ATOMIC (svm/fault.c) */
	else
		ret = vm_svm_map(vm, r->start, r->size, range_has_vram(r) ? r->bo : NULL,
				 range_has_vram(r) ? 0 : r->iova,
				 (writable ? VM_SVM_WRITABLE : 0) | (no_atomic ? VM_SVM_NO_ATOMIC : 0));
	if (!ret) {
		pthread_mutex_lock(&s->lock);
		r->maps[r->nmaps++] = (struct svm_map){ vm, r->start, writable, no_atomic };
		pthread_mutex_unlock(&s->lock);
	}
	return ret;
}

/* Drop @r (owned) for good: GPU maps, DMA map, VRAM (its bytes with it). */
void range_destroy(struct svm *s, struct svm_range *r)
{
	range_unmap_gpu(s, r);
	range_unmap_dma(s, r);
	if (r->where == R_DUP)
		uffd_wp(s->u, r->start, r->size, false); /* what the process still maps */
	if (range_has_vram(r))
		range_free_vram(s, r);
	pthread_mutex_lock(&s->lock);
	range_remove(s, r);
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	free(r);
}

/* ---- eviction: the BO manager picked a range's VRAM (struct bo_svm_ops) ---- */

/*
 * The handler thread's copy back of a 4 KiB range (@r owned, in VRAM, its
 * device awake): one UFFDIO_COPY of the one page, placed whole or not at
 * all (no partial copy, no page-by-page retry: the caller lets @r go when
 * it fails, which is right only when nothing of it is in the process).
 * Injected failures as every copy back (TEST_POINT_SVM_COPY_BACK).
 */
static int copy_back_page_once(struct svm *s, struct svm_range *r)
{
	const char *src = (const char *)r->sd->dev->vram + bo_vram_offset(r->bo);
	int inject = 0, ret;

	test_point_obj(TEST_POINT_SVM_COPY_BACK, &inject);
	if (inject)
		return inject;
	/* no event can mark @r meanwhile: this thread is the one that reads
	 * them (a pending one makes the copy EAGAIN) */
	if (gc_pending(s, r))
		return -ENOENT;
	pthread_mutex_lock(&s->lock);
	r->sd->st.svm_cpu_copy_kb += SVM_4K >> 10;
	pthread_mutex_unlock(&s->lock);
	ret = uffd_copy(s->u, r->start, src, SVM_4K, true);
	if (ret) {
		pthread_mutex_lock(&s->lock);
		r->sd->st.svm_cpu_copy_kb -= SVM_4K >> 10;
		pthread_mutex_unlock(&s->lock);
	}
	return ret;
}

/*
 * @r (owned, in its device's VRAM or a read-mostly copy there; that
 * device's manager lock held) leaves VRAM without waiting for anything:
 * its GPU maps go with their VMs' locks only tried, its bytes go back into
 * the process (UFFDIO_COPY from VRAM, no manager lock needed), and the
 * BO's reference and the runtime-PM count are dropped later by the worker
 * (@w, queued as W_PUT: both take locks we may not take here).
 * @from_handler (the userfaultfd handler thread, a 4 KiB range in VRAM:
 * svm/fault.c back_on_handler_locked()): no map of a VM with a kernel
 * running (its TLB flush waits for the device), and the copy one
 * UFFDIO_COPY of its one page, all or nothing (an unmap or move being
 * reported is an event only this thread can read: -EAGAIN is given up at
 * once, with nothing placed). Otherwise (an eviction) counted as one.
 * 0: @r is in the process (@w queued, @r still owned, svm_vram_bytes
 * counted); else -EBUSY, @w not used, @r where it was (the maps that went
 * stay gone: the next GPU access faults). -EBUSY too when the range cannot
 * go now (collected meanwhile, a VM lock taken, the copy refused).
 */
int range_back_nowait_locked(struct svm *s, struct svm_range *r, struct svm_work *w,
			     bool from_handler)
{
	struct svm_dev *sd;
	int ret;

	for (unsigned int k = 0; k < r->nmaps;) {
		/* a peer's VM maps it in place: its lock is another manager's
		 * (svm/peer.c); that range is in use, not a victim */
		if (r->maps[k].vm->dev != r->sd->dev)
			break;
		if (vm_svm_unmap_evicting(r->maps[k].vm, r->maps[k].gpu_va, r->size,
					  from_handler) < 0)
			break; /* that VM's lock is taken: the maps left stay */
		pthread_mutex_lock(&s->lock);
		r->maps[k] = r->maps[--r->nmaps];
		r->sd->st.svm_tlb_inval_count++;
		pthread_mutex_unlock(&s->lock);
	}
	/* a read-mostly copy has nothing to copy back: the process's pages
	 * only become writable again */
	ret = r->nmaps		? -EBUSY
	      : r->where == R_DUP ? uffd_wp(s->u, r->start, r->size, false)
	      : from_handler	  ? copy_back_page_once(s, r)
				  : range_copy_back(s, r, 0, r->size, r->start, NULL);
	pthread_mutex_lock(&s->lock);
	/* Stays in VRAM when the copy failed, and when an unmap, free or
	 * move of the process came meanwhile (-ENOENT: the old place is
	 * gone): the collection copies the bytes to where the process has
	 * them now (review: an mremap during an eviction lost the range). The
	 * VMs whose maps went fault it in again. */
	if ((ret && (from_handler || (ret != -ENOENT && ret != -ENODATA))) || r->gc_pending) {
		pthread_mutex_unlock(&s->lock);
		return -EBUSY;
	}
	sd = r->sd;
	sd->st.svm_vram_bytes -= r->size;
	if (!from_handler)
		sd->st.svm_evict_count++; /* before the queueing: @w is the worker's then */
	r->where = R_CPU;
	r->sd = NULL;
	w->kind = W_PUT;
	w->bo = r->bo;
	w->sd = sd;
	r->bo = NULL;
	work_queue(s, w);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/*
 * @bo is the VRAM of one of our ranges, picked by the BO manager's LRU to
 * make room (for a BO or another range). The manager lock is held: the
 * range leaves VRAM as range_back_nowait_locked() says. -EBUSY when the
 * range cannot go now (busy, collected, a fork, a VM lock taken, the copy
 * refused): the manager tries its next victim.
 */
int svm_evict(void *arg, struct ugpu_bo *bo)
{
	struct svm *s = arg;
	struct svm_work *w = calloc(1, sizeof(*w));
	struct svm_range *r = NULL;
	uint64_t start, size;
	size_t i;
	int ret;

	if (!w)
		return -EBUSY;
	pthread_mutex_lock(&s->lock);
	for (i = 0; i < s->n && !r; i++)
		if (s->r[i]->bo == bo && range_has_vram(s->r[i]))
			r = s->r[i];
	if (!r || r->busy || r->gc_pending || s->forking) {
		pthread_mutex_unlock(&s->lock);
		free(w);
		return -EBUSY;
	}
	r->busy = true;
	pthread_mutex_unlock(&s->lock);
	test_point_obj(TEST_POINT_SVM_EVICT, r);

	ret = range_back_nowait_locked(s, r, w, false);
	start = r->start;
	size = r->size;
	if (ret)
		free(w);
	pthread_mutex_lock(&s->lock);
	/* CPU touches parked while we owned it fault again (review: they
	 * slept until the device closed) */
	range_release(s, r);
	pthread_mutex_unlock(&s->lock);
	uffd_wake(s->u, start, size);
	return ret;
}

/* The worker's half of an eviction: the BO reference and the runtime-PM
 * count the range held. */
void evicted_put(struct svm *s, struct svm_work *w)
{
	ugpu_bo_put(w->bo);
	vram_ranges_dec(s, w->sd);
	pool_trim(s);
}
