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
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <ugpu/vm.h>

#include "mm/bo.h"
#include "mm/uffd.h"
#include "mm/vm.h"
#include "base/clock.h"
#include "base/list.h"
#include "base/log.h"
#include "src/device.h"
#include "src/rpm.h"
#include "vfio/dma.h"
#include "svm/svm.h"

#define SVM_MAX_MAPS 8

enum where {
	R_CPU = 0, /* in process memory; the GPU maps nothing */
	R_INPLACE, /* in process memory, mapped for the device (DMA) */
	R_VRAM, /* in a device's VRAM; the CPU's pages are gone */
};

/* One device attached (the "svm" bring-up step), with its counters. */
struct svm_dev {
	struct list_link link; /* svm->devs */
	struct ugpu_device *dev;
	struct ugpu_svm_stats st;
	uint64_t vram_ranges; /* ranges in its VRAM: a runtime-PM reference while > 0 */
	bool rpm_held;
};

/* Where a range is mapped in a VM (its PTEs). */
struct svm_map {
	struct ugpu_vm *vm;
	uint64_t gpu_va;
};

/*
 * struct svm_range - [start, start + size) of the process, aligned to size.
 * Locking: every field under svm->lock; @busy (a migration, a map or a drop
 * works on it with the lock dropped) is waited for on svm->cond, and only
 * its owner changes @where, @bo, @iova, @sd and @maps/@nmaps: @bo and
 * @iova without the lock (only the owner reads them), the others under it
 * (others look for a device or a VM in them).
 */
struct svm_range {
	uint64_t start, size;
	enum where where;
	bool busy;
	bool self_zap; /* its owner is zapping its pages: the REMOVE event is ours */
	bool gc_pending; /* the process unmapped, freed or moved (some of) it */
	bool back_queued; /* a CPU touch asked for it back */
	bool writable; /* the CPU mapping is */
	struct svm_dev *sd; /* R_VRAM / R_INPLACE: whose */
	struct svm_dev *first; /* the device whose fault made it (counters) */
	struct ugpu_bo *bo; /* R_VRAM: contiguous VRAM */
	uint64_t iova; /* R_INPLACE: its DMA address on sd's device */
	uint64_t vram_at_ns;
	struct svm_map maps[SVM_MAX_MAPS];
	unsigned int nmaps;
};

enum work_kind { W_FAULTS, W_BACK, W_GC };
enum gc_kind { GC_UNMAP, GC_REMOVE, GC_REMAP };

struct svm_work {
	struct list_link link;
	enum work_kind kind;
	struct vm_fault *f; /* W_FAULTS */
	size_t n;
	uint64_t start, end; /* W_BACK: the range; W_GC: the span */
	enum gc_kind gc;
	uint64_t to; /* GC_REMAP: where [start, end) went */
};

/* A span of process memory registered with our userfaultfd. */
struct region {
	uint64_t start, end;
};

/*
 * struct svm - the process's shared virtual memory (one per process).
 * Locking: @lock protects everything below it except the counters' owners
 * (struct svm_dev, also under @lock); @cond signals a range no longer busy,
 * new work, and the worker going idle.
 */
#define SVM_REMAP_PENDING 64

struct svm {
	struct ugpu_context *ctx;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct list_link devs;
	unsigned int ndevs;

	struct svm_range **r; /* sorted by start, disjoint */
	size_t n, cap;
	struct region *reg;
	size_t nreg, capreg;

	struct uffd *u; /* opened by the first mirror VM */
	int uffd_err; /* why it could not be (sticky) */
	uint64_t features;
	bool have_move, have_wp;
	uintptr_t staging; /* SVM_2M, registered: where UFFDIO_MOVE puts pages */
	int pagemap_fd;

	struct list_link work; /* GC items first */
	pthread_t worker;
	bool worker_up, stop;
	struct ugpu_vm *cur_vm; /* the VM the worker's current item serves */
	unsigned int gc_inflight; /* GC items queued or running */
	bool forking;
	/* Where mremap moved ranges whose GC has not run yet: a CPU touch
	 * there must wait for the data (the kernel released the mremapping
	 * thread as soon as the event was read), not get a fresh page. */
	struct { uint64_t start, end; } remap[SVM_REMAP_PENDING];
	unsigned int nremap;
};

static struct svm *g_svm;
static pthread_mutex_t g_svm_lock = PTHREAD_MUTEX_INITIALIZER;

static void *zero_page;

/* ---- small helpers ------------------------------------------------------------- */

static uint64_t ms_to_ns(uint64_t ms)
{
	return ms * 1000000ull;
}

static void sleep_until_ns(uint64_t when)
{
	uint64_t now = now_ns();

	if (when > now) {
		struct timespec ts = ns_to_timespec(when - now);

		nanosleep(&ts, NULL);
	}
}

static struct svm_dev *sd_of(struct svm *s, struct ugpu_device *dev)
{
	list_for_each(l, &s->devs) {
		struct svm_dev *sd = list_entry(l, struct svm_dev, link);

		if (sd->dev == dev)
			return sd;
	}
	return NULL;
}

static void size_count(struct ugpu_svm_stats *st, uint64_t size, int what, uint64_t us)
{
	uint64_t *c[3][3] = {
		{ &st->svm_4K_pagefault_count, &st->svm_64K_pagefault_count, &st->svm_2M_pagefault_count },
		{ &st->svm_4K_migrate_count, &st->svm_64K_migrate_count, &st->svm_2M_migrate_count },
		{ &st->svm_4K_migrate_us, &st->svm_64K_migrate_us, &st->svm_2M_migrate_us },
	};
	int i = size >= SVM_2M ? 2 : size >= SVM_64K ? 1 : 0;

	if (what == 0)
		(*c[0][i])++;
	else {
		(*c[1][i])++;
		*c[2][i] += us;
	}
}

/* ---- ranges ---------------------------------------------------------------------- */

/* Index of the first range that ends after @addr. Lock held. */
static size_t range_lower(struct svm *s, uint64_t addr)
{
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (s->r[mid]->start + s->r[mid]->size <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static struct svm_range *range_find(struct svm *s, uint64_t addr)
{
	size_t i = range_lower(s, addr);

	return i < s->n && s->r[i]->start <= addr ? s->r[i] : NULL;
}

static bool range_overlaps(struct svm *s, uint64_t start, uint64_t end)
{
	size_t i = range_lower(s, start);

	return i < s->n && s->r[i]->start < end;
}

static int range_insert(struct svm *s, struct svm_range *r)
{
	size_t i = range_lower(s, r->start);

	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 64;
		struct svm_range **nr = realloc(s->r, cap * sizeof(*nr));

		if (!nr)
			return -ENOMEM;
		s->r = nr;
		s->cap = cap;
	}
	memmove(&s->r[i + 1], &s->r[i], (s->n - i) * sizeof(*s->r));
	s->r[i] = r;
	s->n++;
	return 0;
}

static void range_remove(struct svm *s, struct svm_range *r)
{
	size_t i = range_lower(s, r->start);

	if (i < s->n && s->r[i] == r) {
		memmove(&s->r[i], &s->r[i + 1], (s->n - i - 1) * sizeof(*s->r));
		s->n--;
	}
}

/* Wait until @r is not busy, then own it. Returns false when it went
 * away meanwhile (the caller looks it up again). Lock held. */
static bool range_own(struct svm *s, struct svm_range *r)
{
	uint64_t start = r->start;

	while (r->busy) {
		pthread_cond_wait(&s->cond, &s->lock);
		if (range_find(s, start) != r)
			return false;
	}
	r->busy = true;
	return true;
}

static void range_release(struct svm *s, struct svm_range *r)
{
	r->busy = false;
	pthread_cond_broadcast(&s->cond);
}

/* The owner says where @r is now. */
static void range_set(struct svm *s, struct svm_range *r, enum where w, struct svm_dev *sd)
{
	pthread_mutex_lock(&s->lock);
	r->where = w;
	r->sd = sd;
	pthread_mutex_unlock(&s->lock);
}

/* ---- the process's memory ----------------------------------------------------------- */

/* One line of /proc/self/maps. */
struct vma {
	uint64_t start, end;
	bool readable, writable, shared, anon;
	char what[64]; /* the path or [tag], for messages */
};

/* The CPU mapping holding @addr, from /proc/self/maps: 0, or -ENOENT. */
static int vma_lookup(uint64_t addr, struct vma *out)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	int ret = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long a, b, off, ino;
		char perms[8], devs[16], path[256] = "";

		if (sscanf(line, "%llx-%llx %7s %llx %15s %llu %255[^\n]", &a, &b, perms, &off, devs,
			   &ino, path) < 6)
			continue;
		if (addr < a || addr >= b)
			continue;
		out->start = a;
		out->end = b;
		out->readable = perms[0] == 'r';
		out->writable = perms[1] == 'w';
		out->shared = perms[3] == 's';
		/* Anonymous: no inode, and not a special mapping. */
		out->anon = ino == 0 && (!path[0] || !strcmp(path, "[heap]") ||
					 !strncmp(path, "[stack", 6) || !strncmp(path, "[anon:", 6));
		/* for messages: the path's first characters are enough */
		strncpy(out->what, path[0] ? path : "anonymous", sizeof(out->what) - 1);
		out->what[sizeof(out->what) - 1] = 0;
		ret = 0;
		break;
	}
	fclose(f);
	return ret;
}

/* Which of the @n pages from @addr hold data (present or swapped), from
 * /proc/self/pagemap; the others are holes (never touched, or dropped). */
static int pages_present(struct svm *s, uint64_t addr, size_t n, bool *present)
{
	uint64_t buf[512];
	size_t done = 0;

	while (done < n) {
		size_t k = n - done > 512 ? 512 : n - done, i;
		ssize_t r = pread(s->pagemap_fd, buf, k * 8, (off_t)((addr / SVM_4K + done) * 8));

		if (r != (ssize_t)(k * 8))
			return r < 0 ? -errno : -EIO;
		for (i = 0; i < k; i++)
			present[done + i] = (buf[i] >> 62) & 3; /* bit 63 present, 62 swapped */
		done += k;
	}
	return 0;
}

/* Is [start, end) inside what we registered? Lock held. */
static bool region_covers(struct svm *s, uint64_t start, uint64_t end)
{
	size_t i;

	for (i = 0; i < s->nreg; i++)
		if (s->reg[i].start <= start && end <= s->reg[i].end)
			return true;
	return false;
}

static void region_drop(struct svm *s, uint64_t start, uint64_t end)
{
	size_t i = 0;

	while (i < s->nreg) {
		struct region *g = &s->reg[i];

		if (g->end <= start || g->start >= end) {
			i++;
		} else if (g->start >= start && g->end <= end) {
			*g = s->reg[--s->nreg];
		} else if (g->start < start && g->end > end) {
			/* the middle goes: keep the left, add the right */
			uint64_t right = g->end;

			g->end = start;
			if (s->nreg < s->capreg)
				s->reg[s->nreg++] = (struct region){ end, right };
			i++;
		} else if (g->start < start) {
			g->end = start;
			i++;
		} else {
			g->start = end;
			i++;
		}
	}
}

static int region_add(struct svm *s, uint64_t start, uint64_t end)
{
	if (s->nreg == s->capreg) {
		size_t cap = s->capreg ? 2 * s->capreg : 16;
		struct region *nr = realloc(s->reg, cap * sizeof(*nr));

		if (!nr)
			return -ENOMEM;
		s->reg = nr;
		s->capreg = cap;
	}
	s->reg[s->nreg++] = (struct region){ start, end };
	return 0;
}

/*
 * Register [start, end) (inside one CPU mapping) with our userfaultfd, for
 * missing faults (and write protection, where the kernel has it): from now
 * on a touch of a page that is not there comes to us, and so do its unmap,
 * free and move events. Not from the handler thread.
 */
static int region_register(struct svm *s, uint64_t start, uint64_t end)
{
	uint64_t mode = UFFDIO_REGISTER_MODE_MISSING | (s->have_wp ? UFFDIO_REGISTER_MODE_WP : 0);
	int ret;

	pthread_mutex_lock(&s->lock);
	if (region_covers(s, start, end)) {
		pthread_mutex_unlock(&s->lock);
		return 0;
	}
	pthread_mutex_unlock(&s->lock);
	ret = uffd_register(s->u, start, end - start, mode);
	if (ret == -EINVAL && s->have_wp) /* this memory cannot be write-protected */
		ret = uffd_register(s->u, start, end - start, UFFDIO_REGISTER_MODE_MISSING);
	if (ret)
		return ret;
	pthread_mutex_lock(&s->lock);
	ret = region_add(s, start, end);
	pthread_mutex_unlock(&s->lock);
	return ret;
}

/* ---- the runtime-PM reference held while a device's VRAM holds ranges ---------------- */

static void vram_ranges_inc(struct svm *s, struct svm_dev *sd)
{
	bool get;

	pthread_mutex_lock(&s->lock);
	get = !sd->vram_ranges++ && !sd->rpm_held;
	if (get)
		sd->rpm_held = true;
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
static void range_unmap_gpu(struct svm *s, struct svm_range *r)
{
	unsigned int i, n = r->nmaps;

	for (i = 0; i < n; i++) {
		struct svm_map *m = &r->maps[i];

		vm_svm_unmap(m->vm, m->gpu_va, r->size);
		if (r->sd) {
			pthread_mutex_lock(&s->lock);
			r->sd->st.svm_tlb_inval_count++;
			pthread_mutex_unlock(&s->lock);
		}
	}
	pthread_mutex_lock(&s->lock);
	r->nmaps = 0;
	pthread_mutex_unlock(&s->lock);
}

/*
 * Copy [off, +len) of @r's VRAM back into the process at @dst (which must
 * have no pages there: the range is registered and its pages were taken).
 * UFFDIO_COPY reads the VRAM mapping and maps fresh pages atomically; the
 * threads waiting on them wake.
 */
static int range_copy_back(struct svm *s, struct svm_range *r, uint64_t off, uint64_t len,
			   uint64_t dst)
{
	const char *src = (const char *)r->sd->dev->vram + bo_vram_offset(r->bo) + off;
	uint64_t i, deadline = now_ns() + ms_to_ns(2000);
	int ret;

	/* -EAGAIN: an unmap or move of the process is being reported; the
	 * handler thread reads it and the ioctl works again. */
	while ((ret = uffd_copy(s->u, dst, src, len, true)) == -EAGAIN && now_ns() < deadline)
		sleep_until_ns(now_ns() + 100000);

	if (ret == -EEXIST) {
		/* Some pages are there after all: page by page, keeping them. */
		ret = 0;
		for (i = 0; i < len && !ret; i += SVM_4K) {
			ret = uffd_copy(s->u, dst + i, src + i, SVM_4K, true);
			if (ret == -EEXIST)
				ret = 0;
		}
	}
	if (!ret) {
		pthread_mutex_lock(&s->lock);
		r->sd->st.svm_cpu_copy_kb += len >> 10;
		pthread_mutex_unlock(&s->lock);
	}
	return ret;
}

static void range_free_vram(struct svm *s, struct svm_range *r)
{
	struct svm_dev *sd = r->sd;

	ugpu_bo_put(r->bo);
	r->bo = NULL;
	pthread_mutex_lock(&s->lock);
	sd->st.svm_vram_bytes -= r->size;
	pthread_mutex_unlock(&s->lock);
	vram_ranges_dec(s, sd);
}

/* Bring @r (owned, in VRAM) back into process memory. */
static int range_to_cpu(struct svm *s, struct svm_range *r)
{
	int ret;

	sleep_until_ns(r->vram_at_ns + ms_to_ns(SVM_TIMESLICE_MS));
	range_unmap_gpu(s, r);
	ret = range_copy_back(s, r, 0, r->size, r->start);
	if (ret && ret != -ENOENT)
		log_err(s->ctx, "svm: bringing [0x%" PRIx64 ", +0x%" PRIx64 ") back from VRAM failed: %s",
			r->start, r->size, ugpu_strerror(ret));
	range_free_vram(s, r);
	range_set(s, r, R_CPU, NULL);
	return ret;
}

/*
 * Copy one page the CPU can no longer store to (moved away, or
 * write-protected). For write protection, what orders the CPU's last stores
 * before our reads is the kernel (UFFDIO_WRITEPROTECT returns after the TLB
 * flush; a later store faults and waits for us), which ThreadSanitizer cannot
 * see: in a TSan build, read with relaxed atomic loads, which it does not
 * report against the process's own atomic stores (the tests' racers). The
 * bytes copied are the same.
 */
static void copy_page(char *dst, const char *src)
{
#ifdef __SANITIZE_THREAD__
	for (size_t i = 0; i < SVM_4K; i += sizeof(uint64_t)) {
		uint64_t v = __atomic_load_n((const uint64_t *)(src + i), __ATOMIC_RELAXED);

		memcpy(dst + i, &v, sizeof(v));
	}
#else
	memcpy(dst, src, SVM_4K);
#endif
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
	int ret = -EOPNOTSUPP;

	if (!present)
		return -ENOMEM;
	if (s->have_move && s->staging && r->size <= SVM_2M) {
		uint64_t deadline = now_ns() + ms_to_ns(2000);

		while ((ret = uffd_move(s->u, s->staging, r->start, r->size, true, &moved)) == -EAGAIN &&
		       !moved && now_ns() < deadline)
			sleep_until_ns(now_ns() + 100000);
		if (!ret)
			ret = pages_present(s, s->staging, npages, present);
		if (!ret) {
			size_t k, np = 0;

			for (k = 0; k < npages; k++)
				np += present[k];
			log_dbg(s->ctx, "svm: moved [0x%" PRIx64 ", +0x%" PRIx64 "): %zu bytes moved, %zu of %zu pages present",
				r->start, r->size, moved, np, npages);
			fill_vram(vram, (const char *)s->staging, present, npages);
			madvise((void *)s->staging, r->size, MADV_DONTNEED);
			goto out;
		}
		if (moved) {
			/* Part of it moved and the rest refused: put it back. */
			size_t back = 0;

			uffd_move(s->u, r->start, s->staging, r->size, true, &back);
		}
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
	ret = pages_present(s, r->start, npages, present);
	if (!ret) {
		size_t k, np = 0;

		for (k = 0; k < npages; k++)
			np += present[k];
		log_dbg(s->ctx, "svm: write-protected [0x%" PRIx64 ", +0x%" PRIx64 "): %zu of %zu pages present",
			r->start, r->size, np, npages);
		fill_vram(vram, (const char *)r->start, present, npages);
		pthread_mutex_lock(&s->lock);
		r->self_zap = true;
		pthread_mutex_unlock(&s->lock);
		madvise((void *)r->start, r->size, MADV_DONTNEED);
		/* madvise returned once the handler read the REMOVE event, not
		 * once it acted on it: it must see @self_zap when it does. */
		uffd_sync(s->u);
		pthread_mutex_lock(&s->lock);
		r->self_zap = false;
		pthread_mutex_unlock(&s->lock);
	} else {
		uffd_wp(s->u, r->start, r->size, false);
	}
out:
	free(present);
	return ret;
}

/* Move @r (owned, R_CPU) into @sd's VRAM. */
static int range_to_vram(struct svm *s, struct svm_range *r, struct svm_dev *sd)
{
	struct ugpu_bo_opts o = {
		.size = sizeof(o),
		.bytes = r->size,
		.placements = { UGPU_PLACEMENT_VRAM },
		.flags = UGPU_BO_KERNEL | UGPU_BO_LATE_RESTORE | UGPU_BO_CONTIGUOUS,
		.name = "svm",
	};
	uint64_t t0 = now_ns();
	struct ugpu_bo *bo;
	int ret;

	ret = bo_create_kernel(sd->dev, &o, 0, &bo);
	if (ret)
		return ret;
	ret = take_pages(s, r, (char *)sd->dev->vram + bo_vram_offset(bo));
	if (ret) {
		ugpu_bo_put(bo);
		return ret;
	}
	r->bo = bo;
	r->vram_at_ns = now_ns();
	range_set(s, r, R_VRAM, sd);
	vram_ranges_inc(s, sd);
	pthread_mutex_lock(&s->lock);
	sd->st.svm_device_copy_kb += r->size >> 10;
	sd->st.svm_vram_bytes += r->size;
	size_count(&sd->st, r->size, 1, (now_ns() - t0) / 1000);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* Map @r (owned, R_CPU) for @sd's device where it is. */
static int range_in_place(struct svm *s, struct svm_range *r, struct svm_dev *sd)
{
	uint64_t iova;
	int ret;

	/* Every page present before the device may reach it: a DMA access
	 * must never be the first touch of a page (it would fault into us). */
	if (madvise((void *)r->start, r->size, r->writable ? MADV_POPULATE_WRITE : MADV_POPULATE_READ))
		return -errno;
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

static void range_unmap_dma(struct svm *s, struct svm_range *r)
{
	if (r->where == R_INPLACE) {
		dma_unmap(&r->sd->dev->dma, r->iova, r->size);
		range_set(s, r, R_CPU, NULL);
	}
}

/* Map @r (owned, VRAM or in place) in @vm at its address. */
static int range_map_vm(struct svm *s, struct svm_range *r, struct ugpu_vm *vm)
{
	unsigned int i;
	int ret;

	for (i = 0; i < r->nmaps; i++)
		if (r->maps[i].vm == vm && r->maps[i].gpu_va == r->start)
			return 0;
	if (r->nmaps == SVM_MAX_MAPS)
		return -ENOSPC;
	ret = vm_svm_map(vm, r->start, r->size, r->where == R_VRAM ? r->bo : NULL,
			 r->where == R_VRAM ? 0 : r->iova, r->writable);
	if (!ret) {
		pthread_mutex_lock(&s->lock);
		r->maps[r->nmaps++] = (struct svm_map){ vm, r->start };
		pthread_mutex_unlock(&s->lock);
	}
	return ret;
}

/* Drop @r (owned) for good: GPU maps, DMA map, VRAM (its bytes with it). */
static void range_destroy(struct svm *s, struct svm_range *r)
{
	range_unmap_gpu(s, r);
	range_unmap_dma(s, r);
	if (r->where == R_VRAM)
		range_free_vram(s, r);
	pthread_mutex_lock(&s->lock);
	range_remove(s, r);
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	free(r);
}

/* ---- garbage collection: the process unmapped, freed or moved memory ----------------- */

/*
 * @r (owned, gc_pending) lost [start, end) of its memory (@gc), or saw it
 * move to @to (GC_REMAP). What is still the process's goes back there (from
 * VRAM), then the range goes. The CPU touches parked on it wake after.
 */
static void gc_range(struct svm *s, struct svm_range *r, uint64_t start, uint64_t end,
		     enum gc_kind gc, uint64_t to)
{
	uint64_t rs = r->start, re = r->start + r->size;

	range_unmap_gpu(s, r);
	if (r->where == R_VRAM) {
		uint64_t a = rs > start ? rs : start, b = re < end ? re : end;

		int e1 = 0, e2 = 0, e3 = 0;

		/* the part outside the event stays where it was */
		if (rs < a)
			e1 = range_copy_back(s, r, 0, a - rs, rs);
		if (b < re)
			e2 = range_copy_back(s, r, b - rs, re - b, b);
		/* a moved part goes with its mapping */
		if (gc == GC_REMAP && a < b)
			e3 = range_copy_back(s, r, a - rs, b - a, to + (a - start));
		if ((e1 && e1 != -ENOENT) || (e2 && e2 != -ENOENT) || (e3 && e3 != -ENOENT))
			log_err(s->ctx, "svm: keeping the bytes of [0x%" PRIx64 ", +0x%" PRIx64 ") around a %s failed: %s",
				rs, r->size, gc == GC_REMAP ? "move" : "free",
				ugpu_strerror(e1 ? e1 : e2 ? e2 : e3));
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

/* A GC item ended: count it, and let CPU touches of the addresses an
 * mremap moved data to go on (the data is there now). Lock held. */
static void gc_item_done_locked(struct svm *s, const struct svm_work *w)
{
	s->gc_inflight--;
	if (w->gc != GC_REMAP)
		return;
	for (unsigned int i = 0; i < s->nremap; i++)
		if (s->remap[i].start == w->to && s->remap[i].end == w->to + (w->end - w->start)) {
			s->remap[i] = s->remap[--s->nremap];
			break;
		}
	uffd_wake(s->u, w->to, w->end - w->start);
}

static bool remap_pending_locked(struct svm *s, uint64_t addr)
{
	for (unsigned int i = 0; i < s->nremap; i++)
		if (addr >= s->remap[i].start && addr < s->remap[i].end)
			return true;
	return false;
}

/* The first range starting in [lo, hi) for which @want(r, @arg) holds,
 * owned (after waiting for its owner if it had one), or NULL when none is
 * left. */
static struct svm_range *own_first(struct svm *s, uint64_t lo, uint64_t hi,
				   bool (*want)(const struct svm_range *, const void *), const void *arg)
{
	for (;;) {
		struct svm_range *r = NULL;
		size_t i;

		pthread_mutex_lock(&s->lock);
		for (i = range_lower(s, lo); i < s->n && s->r[i]->start < hi && !r; i++)
			if (want(s->r[i], arg))
				r = s->r[i];
		if (r && !range_own(s, r)) {
			pthread_mutex_unlock(&s->lock);
			continue;
		}
		pthread_mutex_unlock(&s->lock);
		return r;
	}
}

static bool gc_wanted(const struct svm_range *r, const void *arg)
{
	(void)arg;
	return r->gc_pending;
}

static void gc_run(struct svm *s, uint64_t start, uint64_t end, enum gc_kind gc, uint64_t to)
{
	struct svm_range *r;

	while ((r = own_first(s, start, end, gc_wanted, NULL)))
		gc_range(s, r, start, end, gc, to);
}

/* ---- the worker -------------------------------------------------------------------- */

static void work_queue(struct svm *s, struct svm_work *w)
{
	/* GC first: a fault or a touch must see memory the process freed as
	 * freed. */
	if (w->kind == W_GC) {
		list_add(&s->work, &w->link);
		s->gc_inflight++;
	} else {
		list_add_tail(&s->work, &w->link);
	}
	pthread_cond_broadcast(&s->cond);
}

/* Run the queued GC items now (the worker, before serving a fault that
 * found a range waiting for one). Lock held; dropped meanwhile. */
static void gc_drain_locked(struct svm *s)
{
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
			return;
		list_del(&w->link);
		pthread_mutex_unlock(&s->lock);
		gc_run(s, w->start, w->end, w->gc, w->to);
		pthread_mutex_lock(&s->lock);
		gc_item_done_locked(s, w);
		free(w);
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

		if ((fitting & (1u << i)) && !range_overlaps(s, a, a + range_sizes[i]))
			return range_sizes[i];
	}
	return 0;
}

/* Serve one GPU fault: 0, or the status its kernel is aborted with. */
static int serve_fault(struct svm *s, const struct vm_fault *f)
{
	uint64_t va = f->va & ~(SVM_4K - 1);
	struct svm_dev *sd;
	struct svm_range *r;
	struct vma v;
	int ret;

	pthread_mutex_lock(&s->lock);
	sd = sd_of(s, f->vm->dev);
	if (!sd) {
		pthread_mutex_unlock(&s->lock);
		return -EFAULT;
	}
	sd->st.svm_pagefault_count++;
again:
	r = range_find(s, va);
	if (r && r->gc_pending) {
		gc_drain_locked(s);
		goto again;
	}
	if (!r) {
		uint64_t size;

		pthread_mutex_unlock(&s->lock);
		ret = vma_lookup(va, &v);
		if (ret) {
			log_err(s->ctx, "svm: GPU %s at 0x%" PRIx64 ": nothing is mapped there in the process",
				f->access == UGPU_ACCESS_READ ? "read" : f->access == UGPU_ACCESS_WRITE ? "write" : "atomic",
				f->va);
			return -EFAULT;
		}
		if ((f->access != UGPU_ACCESS_READ && !v.writable) || !v.readable) {
			log_err(s->ctx, "svm: GPU %s at 0x%" PRIx64 ": the process's mapping (%s) does not allow it",
				f->access == UGPU_ACCESS_READ ? "read" : "write", f->va, v.what);
			return -EFAULT;
		}
		if (!v.anon || v.shared) {
			log_err(s->ctx, "svm: GPU access at 0x%" PRIx64 ": %s %s memory is not supported yet (private anonymous memory is: malloc, mmap MAP_PRIVATE|MAP_ANONYMOUS, the stack)",
				f->va, v.shared ? "shared" : "file-backed", v.what);
			return -EFAULT;
		}
		/* Registered over the whole mapping (inside the span): its
		 * touches, frees and moves come to us from now on. */
		{
			uint64_t lo = v.start > f->vm->mirror_start ? v.start : f->vm->mirror_start;
			uint64_t hi = v.end < f->vm->mirror_start + f->vm->mirror_size
					      ? v.end
					      : f->vm->mirror_start + f->vm->mirror_size;

			ret = region_register(s, lo, hi);
		}
		if (ret) {
			log_err(s->ctx, "svm: cannot register [0x%" PRIx64 ", 0x%" PRIx64 ") (%s) with userfaultfd: %s",
				v.start, v.end, v.what, ugpu_strerror(ret));
			return -EFAULT;
		}
		{
			unsigned int fitting = sizes_fitting(va, &v, f->vm);

			pthread_mutex_lock(&s->lock);
			if (range_find(s, va))
				goto again;
			size = pick_size(s, va, fitting);
		}
		r = size ? calloc(1, sizeof(*r)) : NULL;
		if (r) {
			r->start = va & ~(size - 1);
			r->size = size;
			r->writable = v.writable;
			r->where = R_CPU;
			r->first = sd;
		}
		if (!r || range_insert(s, r)) {
			pthread_mutex_unlock(&s->lock);
			free(r);
			return -EFAULT;
		}
	}
	if (!range_own(s, r))
		goto again;
	size_count(&sd->st, r->size, 0, 0);
	pthread_mutex_unlock(&s->lock);

	ret = 0;
	if (r->where != R_CPU && r->sd != sd) {
		/* in another device's VRAM or DMA space: back to the CPU first
		 * (peer access and migration are not built yet) */
		if (r->where == R_VRAM)
			ret = range_to_cpu(s, r);
		else {
			range_unmap_gpu(s, r);
			range_unmap_dma(s, r);
		}
	}
	if (!ret && r->where == R_CPU) {
		bool forking;

		pthread_mutex_lock(&s->lock);
		forking = s->forking;
		pthread_mutex_unlock(&s->lock);
		if ((r->size >= SVM_MIGRATE_MIN || f->access == UGPU_ACCESS_ATOMIC) && r->writable &&
		    !forking)
			ret = range_to_vram(s, r, sd);
		else
			ret = -EAGAIN;
		/* Atomics: VRAM may free up (or the fork end): try again
		 * after a doubling timeslice, a bounded number of times. */
		for (int k = 0; ret && f->access == UGPU_ACCESS_ATOMIC && r->writable &&
				k < SVM_ATOMIC_RETRIES; k++) {
			sleep_until_ns(now_ns() + ms_to_ns((uint64_t)SVM_TIMESLICE_MS << k));
			pthread_mutex_lock(&s->lock);
			forking = s->forking;
			pthread_mutex_unlock(&s->lock);
			ret = forking ? -EAGAIN : range_to_vram(s, r, sd);
		}
		if (ret) {
			if (f->access == UGPU_ACCESS_ATOMIC) {
				log_err(s->ctx, "svm: GPU atomic at 0x%" PRIx64 ": the range [0x%" PRIx64 ", +0x%" PRIx64 ") cannot move to VRAM (%s, %d tries over %d ms): atomics need it there",
					f->va, r->start, r->size, ugpu_strerror(ret),
					r->writable ? SVM_ATOMIC_RETRIES + 1 : 1,
					r->writable ? SVM_TIMESLICE_MS * ((1 << SVM_ATOMIC_RETRIES) - 1) : 0);
				ret = -EACCES;
				goto out;
			}
			ret = range_in_place(s, r, sd);
		}
	}
	if (!ret)
		ret = range_map_vm(s, r, f->vm);
	if (ret && ret != -EACCES) {
		log_err(s->ctx, "svm: GPU fault at 0x%" PRIx64 " could not be served: %s", f->va,
			ugpu_strerror(ret));
		ret = -EFAULT;
	}
out:
	{
		uint64_t start = r->start, size = r->size;

		pthread_mutex_lock(&s->lock);
		range_release(s, r); /* @r may go from here on */
		pthread_mutex_unlock(&s->lock);
		/* CPU touches parked while it moved try again now. */
		uffd_wake(s->u, start, size);
	}
	return ret;
}

static void do_back(struct svm *s, uint64_t start)
{
	struct svm_range *r;

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
	pthread_mutex_unlock(&s->lock);
	if (r->where == R_VRAM && !r->gc_pending) {
		struct svm_dev *sd = r->sd;

		range_to_cpu(s, r);
		pthread_mutex_lock(&s->lock);
		sd->st.svm_cpu_fault_count++;
		pthread_mutex_unlock(&s->lock);
	}
	{
		uint64_t size = r->size;

		pthread_mutex_lock(&s->lock);
		range_release(s, r); /* @r may go from here on */
		pthread_mutex_unlock(&s->lock);
		uffd_wake(s->u, start, size);
	}
}

static void *worker_main(void *arg)
{
	struct svm *s = arg;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		struct svm_work *w;

		while (!s->stop && list_empty(&s->work))
			pthread_cond_wait(&s->cond, &s->lock);
		if (s->stop && list_empty(&s->work))
			break;
		w = list_entry(list_first(&s->work), struct svm_work, link);
		list_del(&w->link);
		s->cur_vm = w->kind == W_FAULTS ? w->f[0].vm : NULL;
		pthread_mutex_unlock(&s->lock);
		switch (w->kind) {
		case W_FAULTS: {
			int *st = calloc(w->n, sizeof(*st));

			for (size_t i = 0; i < w->n; i++) {
				int ret = serve_fault(s, &w->f[i]);

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
			free(st);
			free(w->f);
			break;
		}
		case W_BACK:
			do_back(s, w->start);
			break;
		case W_GC:
			gc_run(s, w->start, w->end, w->gc, w->to);
			break;
		}
		pthread_mutex_lock(&s->lock);
		if (w->kind == W_GC)
			gc_item_done_locked(s, w);
		free(w);
		s->cur_vm = NULL;
		pthread_cond_broadcast(&s->cond);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* ---- the userfaultfd handler thread: answer at once, never wait ----------------------- */

static void on_cpu_fault(struct svm *s, uint64_t addr, uint64_t flags)
{
	uint64_t page = addr & ~(SVM_4K - 1);
	struct svm_range *r;
	int ret;

	pthread_mutex_lock(&s->lock);
	r = range_find(s, page);
	if ((r && (r->busy || r->gc_pending)) || (!r && remap_pending_locked(s, page))) {
		/* moving, waiting to be dropped, or where an mremap's data is
		 * still to arrive: whoever owns it wakes the addresses when
		 * done, and the thread faults again */
		pthread_mutex_unlock(&s->lock);
		return;
	}
	if (r && r->where == R_VRAM && !(flags & UFFD_PAGEFAULT_FLAG_WP)) {
		if (!r->back_queued) {
			struct svm_work *w = calloc(1, sizeof(*w));

			if (w) {
				r->back_queued = true;
				w->kind = W_BACK;
				w->start = r->start;
				work_queue(s, w);
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

/* The process unmapped (@gc GC_UNMAP), freed (GC_REMOVE) or moved
 * (GC_REMAP, to @to) [start, end): mark the ranges, queue the work. The
 * unmapping thread continues when we return (it waited for the read). */
static void on_event(struct svm *s, uint64_t start, uint64_t end, enum gc_kind gc, uint64_t to)
{
	bool any = false;
	size_t i;

	pthread_mutex_lock(&s->lock);
	for (i = range_lower(s, start); i < s->n && s->r[i]->start < end; i++) {
		struct svm_range *r = s->r[i];

		if (gc == GC_REMOVE && r->self_zap)
			continue; /* our own MADV_DONTNEED of a range we moved */
		r->gc_pending = true;
		any = true;
	}
	if (gc != GC_REMOVE)
		region_drop(s, start, end);
	if (gc == GC_REMAP)
		region_add(s, to, to + (end - start));
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
	pthread_mutex_unlock(&s->lock);
}

static void on_msg(void *owner, const struct uffd_msg *m)
{
	struct svm *s = owner;

	switch (m->event) {
	case UFFD_EVENT_PAGEFAULT:
		on_cpu_fault(s, m->arg.pagefault.address, m->arg.pagefault.flags);
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

static const struct uffd_owner_ops svm_uffd_ops = { .msg = on_msg };

/* ---- the process-wide state ---------------------------------------------------------- */

static void fork_prepare(void);
static void fork_done(void);

/* Open the userfaultfd and start the worker (the first mirror VM). Lock
 * g_svm_lock held. */
static int svm_start(struct svm *s)
{
	uint64_t want = UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_REMAP |
			UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_MOVE | UFFD_FEATURE_THREAD_ID;
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
	if (s->have_move) {
		/* a 2 MiB-aligned registered area for pages moved out */
		void *p = mmap(NULL, 2 * SVM_2M, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

		if (p != MAP_FAILED) {
			uintptr_t a = ((uintptr_t)p + SVM_2M - 1) & ~(uintptr_t)(SVM_2M - 1);

			madvise((void *)a, SVM_2M, MADV_DONTFORK);
			err = uffd_register(s->u, a, SVM_2M, UFFDIO_REGISTER_MODE_MISSING);
			if (!err)
				s->staging = a;
		}
		if (!s->staging)
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
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &ca);
	pthread_condattr_destroy(&ca);
	list_init(&s->devs);
	list_init(&s->work);
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
		pthread_mutex_unlock(&s->lock);
		pthread_join(s->worker, NULL);
	}
	/* Ranges left are in process memory (the devices took theirs back):
	 * unregister the memory so the process's touches are its own again,
	 * then stop the handler thread, which reads the ranges and may still
	 * be queueing work; only then free both. */
	for (i = 0; i < s->nreg; i++)
		uffd_unregister(s->u, s->reg[i].start, s->reg[i].end - s->reg[i].start);
	uffd_destroy(s->u);
	list_for_each_safe(l, &s->work) {
		struct svm_work *w = list_entry(l, struct svm_work, link);

		free(w->f);
		free(w);
	}
	for (i = 0; i < s->n; i++)
		free(s->r[i]);
	if (s->staging)
		munmap((void *)s->staging, SVM_2M);
	if (s->pagemap_fd >= 0)
		close(s->pagemap_fd);
	free(s->r);
	free(s->reg);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* ---- fork: the child must not find zeroes where the parent's pages were in VRAM --------- */

/* Every range in VRAM comes back before fork() copies the address space;
 * none goes there again until it returned. The child does not use the
 * device (docs/svm.md, "fork"). */
static void fork_prepare(void)
{
	struct svm *s;

	pthread_mutex_lock(&g_svm_lock);
	s = g_svm;
	if (!s || !s->u) {
		pthread_mutex_unlock(&g_svm_lock);
		return;
	}
	pthread_mutex_lock(&s->lock);
	s->forking = true;
	for (;;) {
		struct svm_range *r = NULL;
		size_t i;

		for (i = 0; i < s->n; i++)
			if (s->r[i]->where == R_VRAM) {
				r = s->r[i];
				break;
			}
		if (!r)
			break;
		if (!range_own(s, r))
			continue;
		pthread_mutex_unlock(&s->lock);
		if (r->where == R_VRAM)
			range_to_cpu(s, r);
		pthread_mutex_lock(&s->lock);
		range_release(s, r);
	}
	pthread_mutex_unlock(&s->lock);
	/* g_svm_lock stays held across fork(): released by fork_done() */
}

static void fork_done(void)
{
	struct svm *s = g_svm;

	if (s && s->u) {
		pthread_mutex_lock(&s->lock);
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

static void ops_faults(void *arg, const struct vm_fault *f, size_t n)
{
	struct svm *s = arg;
	struct svm_work *w = calloc(1, sizeof(*w));
	struct vm_fault *copy = calloc(n, sizeof(*copy));

	if (!w || !copy) {
		size_t i;

		free(w);
		free(copy);
		for (i = 0; i < n; i++)
			vm_fault_done(&f[i], -EFAULT);
		return;
	}
	memcpy(copy, f, n * sizeof(*f));
	w->kind = W_FAULTS;
	w->f = copy;
	w->n = n;
	pthread_mutex_lock(&s->lock);
	work_queue(s, w);
	pthread_mutex_unlock(&s->lock);
}

static bool maps_vm(const struct svm_range *r, const void *vm)
{
	for (unsigned int k = 0; k < r->nmaps; k++)
		if (r->maps[k].vm == vm)
			return true;
	return false;
}

/* The ranges of [va, +len) leave @vm (some of them, their process memory
 * stays the process's): for a bind there. */
static int ops_punch(void *arg, struct ugpu_vm *vm, uint64_t va, uint64_t len)
{
	struct svm *s = arg;

	for (;;) {
		struct svm_range *r = own_first(s, va, va + len, maps_vm, vm);

		if (!r)
			return 0;
		if (r->where == R_VRAM)
			range_to_cpu(s, r);
		else
			range_unmap_gpu(s, r);
		{
			uint64_t start = r->start, size = r->size;

			pthread_mutex_lock(&s->lock);
			range_release(s, r);
			pthread_mutex_unlock(&s->lock);
			uffd_wake(s->u, start, size);
		}
	}
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
		unsigned int k;

		if (!r)
			return;
		for (k = 0; k < r->nmaps;) {
			if (r->maps[k].vm == vm) {
				vm_svm_unmap(vm, r->maps[k].gpu_va, r->size);
				pthread_mutex_lock(&s->lock);
				r->maps[k] = r->maps[--r->nmaps];
				pthread_mutex_unlock(&s->lock);
			} else {
				k++;
			}
		}
		{
			uint64_t start = r->start, size = r->size;

			pthread_mutex_lock(&s->lock);
			range_release(s, r);
			pthread_mutex_unlock(&s->lock);
			/* CPU touches parked while we owned it go on (review:
			 * without this they waited until the device closed). */
			uffd_wake(s->u, start, size);
		}
	}
}

/* A kernel is being submitted: what the process freed or moved before is
 * dropped from the GPU's view first (the events were read, the work may
 * still be queued). */
static void ops_sync(void *arg)
{
	struct svm *s = arg;

	uffd_sync(s->u); /* events already read are marked and queued */
	pthread_mutex_lock(&s->lock);
	while (s->gc_inflight && s->worker_up)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

static const struct vm_svm_ops svm_vm_ops = {
	.vm_new = ops_vm_new,
	.sync = ops_sync,
	.faults = ops_faults,
	.punch = ops_punch,
	.vm_gone = ops_vm_gone,
};

/* ---- the device's step ------------------------------------------------------------------ */

static int svm_up(struct ugpu_device *dev, const char *uri)
{
	struct svm_dev *sd;

	(void)uri;
	if (!dev->exec || !dev->vm_mgr)
		return 0; /* no GPU VM: nothing to mirror */
	sd = calloc(1, sizeof(*sd));
	if (!sd)
		return -ENOMEM;
	sd->dev = dev;
	sd->st.size = sizeof(sd->st);
	pthread_mutex_lock(&g_svm_lock);
	if (!g_svm)
		g_svm = svm_new(dev->ctx);
	if (!g_svm) {
		pthread_mutex_unlock(&g_svm_lock);
		free(sd);
		return -ENOMEM;
	}
	pthread_mutex_lock(&g_svm->lock);
	list_add_tail(&g_svm->devs, &sd->link);
	g_svm->ndevs++;
	pthread_mutex_unlock(&g_svm->lock);
	vm_svm_register(dev, &svm_vm_ops, g_svm);
	pthread_mutex_unlock(&g_svm_lock);
	return 0;
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

	/* First the VM manager stops calling us (and waits for the calls
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
	for (;;) {
		struct svm_range *r = NULL;
		size_t i;
		unsigned int k;

		pthread_mutex_lock(&s->lock);
		for (i = 0; i < s->n && !r; i++) {
			if (s->r[i]->sd == sd)
				r = s->r[i];
			for (k = 0; k < s->r[i]->nmaps && !r; k++)
				if (s->r[i]->maps[k].vm->dev == dev)
					r = s->r[i];
		}
		if (r && !range_own(s, r)) {
			pthread_mutex_unlock(&s->lock);
			continue;
		}
		pthread_mutex_unlock(&s->lock);
		if (!r)
			break;
		for (k = 0; k < r->nmaps;) {
			if (r->maps[k].vm->dev == dev) {
				vm_svm_unmap(r->maps[k].vm, r->maps[k].gpu_va, r->size);
				pthread_mutex_lock(&s->lock);
				r->maps[k] = r->maps[--r->nmaps];
				pthread_mutex_unlock(&s->lock);
			} else {
				k++;
			}
		}
		if (r->where == R_VRAM && r->sd == sd)
			range_to_cpu(s, r);
		else if (r->sd == sd)
			range_unmap_dma(s, r);
		{
			uint64_t start = r->start, size = r->size;

			pthread_mutex_lock(&s->lock);
			range_release(s, r);
			pthread_mutex_unlock(&s->lock);
			uffd_wake(s->u, start, size);
		}
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
	pthread_mutex_unlock(&s->lock);
	if (sd->rpm_held)
		rpm_put_dev(dev);
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

/* ---- the public API ---------------------------------------------------------------------- */

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
	o.size = st->size;
	memcpy(st, &o, st->size < sizeof(o) ? st->size : sizeof(o));
	return 0;
}
