/* SPDX-License-Identifier: MIT */
/*
 * Shared virtual memory: the ranges (sorted, disjoint, never split), the
 * process's memory as /proc/self/maps and /proc/self/pagemap show it, and
 * the spans registered with our userfaultfd. svm/svm.h has the structures
 * and the locks; docs/svm.md the design.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <ugpu/vm.h>

#include "base/lines.h"
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

/* ---- small helpers ------------------------------------------------------------- */

uint64_t ms_to_ns(uint64_t ms)
{
	return ms * 1000000ull;
}

uint64_t range_home_at_ns(const struct svm_range *r)
{
	return r->vram_at_ns + ms_to_ns(r->hold_ms > SVM_TIMESLICE_MS ? r->hold_ms : SVM_TIMESLICE_MS);
}

void sleep_until_ns(uint64_t when)
{
	uint64_t now = now_ns();

	if (when > now) {
		struct timespec ts = ns_to_timespec(when - now);

		nanosleep(&ts, NULL);
	}
}

struct svm_dev *sd_of(struct svm *s, struct ugpu_device *dev)
{
	list_for_each(l, &s->devs) {
		struct svm_dev *sd = list_entry(l, struct svm_dev, link);

		if (sd->dev == dev)
			return sd;
	}
	return NULL;
}

void size_count(struct ugpu_svm_stats *st, uint64_t size, int what, uint64_t us)
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
size_t range_lower(struct svm *s, uint64_t addr)
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

struct svm_range *range_find(struct svm *s, uint64_t addr)
{
	size_t i = range_lower(s, addr);

	return i < s->n && s->r[i]->start <= addr ? s->r[i] : NULL;
}

bool range_overlaps(struct svm *s, uint64_t start, uint64_t end)
{
	size_t i = range_lower(s, start);

	return i < s->n && s->r[i]->start < end;
}

int range_insert(struct svm *s, struct svm_range *r)
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

void range_remove(struct svm *s, struct svm_range *r)
{
	size_t i = range_lower(s, r->start);

	if (i < s->n && s->r[i] == r) {
		memmove(&s->r[i], &s->r[i + 1], (s->n - i - 1) * sizeof(*s->r));
		s->n--;
	}
}

/* Wait until @r is not busy, then own it. Returns false when it went
 * away meanwhile (the caller looks it up again). Lock held. */
bool range_own(struct svm *s, struct svm_range *r)
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

void range_release(struct svm *s, struct svm_range *r)
{
	r->busy = false;
	pthread_cond_broadcast(&s->cond);
}

/* The owner lets @r go (it may be freed by others from here on); the CPU
 * touches parked on it while it was owned fault again. No lock held. */
void range_done(struct svm *s, struct svm_range *r)
{
	uint64_t start = r->start, size = r->size;

	pthread_mutex_lock(&s->lock);
	range_release(s, r);
	pthread_mutex_unlock(&s->lock);
	uffd_wake(s->u, start, size);
}

/* Remove @r's maps in the VMs @match picks (PTEs zapped, TLB dropped).
 * @r owned. */
void range_unmap_vms(struct svm *s, struct svm_range *r,
			    bool (*match)(const struct ugpu_vm *, const void *), const void *arg)
{
	for (unsigned int k = 0; k < r->nmaps;) {
		if (match(r->maps[k].vm, arg)) {
			vm_svm_unmap(r->maps[k].vm, r->maps[k].gpu_va, r->size);
			pthread_mutex_lock(&s->lock);
			r->maps[k] = r->maps[--r->nmaps];
			pthread_mutex_unlock(&s->lock);
		} else {
			k++;
		}
	}
}

/* The owner says where @r is now. */
void range_set(struct svm *s, struct svm_range *r, enum where w, struct svm_dev *sd)
{
	pthread_mutex_lock(&s->lock);
	r->where = w;
	r->sd = sd;
	pthread_mutex_unlock(&s->lock);
}

/* ---- the process's memory ----------------------------------------------------------- */

/* What an anonymous mapping is: no inode, and not a special mapping. */
static bool vma_is_anon(uint64_t ino, const char *path)
{
	return ino == 0 && (!path[0] || !strcmp(path, "[heap]") || !strncmp(path, "[stack", 6) ||
			    !strncmp(path, "[anon:", 6));
}

static void vma_fill(struct vma *out, uint64_t start, uint64_t end, bool r, bool w, bool shared,
		     uint64_t ino, const char *path)
{
	out->start = start;
	out->end = end;
	out->readable = r;
	out->writable = w;
	out->shared = shared;
	out->anon = vma_is_anon(ino, path);
	/* for messages: the path's first characters are enough */
	strncpy(out->what, path[0] ? path : "anonymous", sizeof(out->what) - 1);
	out->what[sizeof(out->what) - 1] = 0;
}

/*
 * PROCMAP_QUERY (Linux 6.11, include/uapi/linux/fs.h): the kernel looks
 * the mapping up by address and answers in one ioctl on /proc/self/maps,
 * instead of printing every mapping up to it for us to parse. Defined here
 * for older headers (Debian 12's are 6.1); the layout is the kernel's ABI.
 */
struct vma_query {
	uint64_t size, query_flags, query_addr;
	uint64_t vma_start, vma_end, vma_flags, vma_page_size, vma_offset, inode;
	uint32_t dev_major, dev_minor, vma_name_size, build_id_size;
	uint64_t vma_name_addr, build_id_addr;
};
#define VMA_QUERY_IOCTL _IOWR('f', 17, struct vma_query)
#define VMA_QUERY_READABLE 0x01
#define VMA_QUERY_WRITABLE 0x02
#define VMA_QUERY_SHARED 0x08

/* The kernel does not answer PROCMAP_QUERY (ENOTTY, EINVAL: before 6.11,
 * as the VM stage's 6.1): the maps are parsed from then on. */
static bool vma_query_missing;

/* @addr's mapping by PROCMAP_QUERY: 0, -ENOENT, or -ENOTTY when the kernel
 * has no such query. */
static int vma_query(uint64_t addr, struct vma *out)
{
	char path[256] = "";
	struct vma_query q = { .size = sizeof(q), .query_addr = addr,
			       .vma_name_size = sizeof(path), .vma_name_addr = (uintptr_t)path };
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC), ret = 0, rc;

	if (fd < 0)
		return -errno;
	rc = ioctl(fd, VMA_QUERY_IOCTL, &q);
	if (rc && errno == ENAMETOOLONG) {
		/* a file's path longer than ours: asked again without it */
		q.vma_name_size = 0;
		q.vma_name_addr = 0;
		snprintf(path, sizeof(path), "a file with a long path");
		rc = ioctl(fd, VMA_QUERY_IOCTL, &q);
	}
	if (rc)
		ret = errno == ENOENT ? -ENOENT : -ENOTTY;
	close(fd);
	if (ret)
		return ret;
	path[sizeof(path) - 1] = 0;
	vma_fill(out, q.vma_start, q.vma_end, q.vma_flags & VMA_QUERY_READABLE,
		 q.vma_flags & VMA_QUERY_WRITABLE, q.vma_flags & VMA_QUERY_SHARED, q.inode, path);
	return 0;
}

/* The CPU mapping holding @addr: 0, or -ENOENT. By PROCMAP_QUERY where the
 * kernel has it, else from /proc/self/maps, read without stdio: this runs
 * on the fault paths, which must not use the C library's heap
 * (base/lines.h). Parsing the maps took a fifth of the CPU time of
 * `ugpu-bench svm` (a process with many mappings: every fault read them up
 * to its own). */
int vma_lookup(uint64_t addr, struct vma *out)
{
	if (!__atomic_load_n(&vma_query_missing, __ATOMIC_RELAXED)) {
		int ret = vma_query(addr, out);

		if (ret != -ENOTTY)
			return ret;
		__atomic_store_n(&vma_query_missing, true, __ATOMIC_RELAXED);
	}
	return vma_lookup_maps(addr, out);
}

int vma_lookup_maps(uint64_t addr, struct vma *out)
{
	struct lines lr;
	char *line;
	int ret = lines_open(&lr, "/proc/self/maps");

	if (ret)
		return ret;
	ret = -ENOENT;
	while ((line = lines_next(&lr))) {
		unsigned long long a, b, off, ino;
		char perms[8], devs[16], path[256] = "";

		if (sscanf(line, "%llx-%llx %7s %llx %15s %llu %255[^\n]", &a, &b, perms, &off, devs,
			   &ino, path) < 6)
			continue;
		if (addr < a || addr >= b)
			continue;
		vma_fill(out, a, b, perms[0] == 'r', perms[1] == 'w', perms[3] == 's', ino, path);
		ret = 0;
		break;
	}
	lines_close(&lr);
	return ret;
}

/* The kernel page size of the mapping starting at @start, in KiB
 * (/proc/self/smaps): 4, or more for hugetlbfs; 0 when not found. */
unsigned int vma_page_kb(uint64_t start)
{
	struct lines lr;
	char *line;
	bool in = false;
	unsigned int kb = 0;

	if (lines_open(&lr, "/proc/self/smaps"))
		return 0;
	while ((line = lines_next(&lr))) {
		unsigned long long a, b;

		if (sscanf(line, "%llx-%llx ", &a, &b) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			if (in)
				break;
			in = a == start;
		} else if (in && sscanf(line, "KernelPageSize: %u kB", &kb) == 1) {
			break;
		}
	}
	lines_close(&lr);
	return kb;
}

/* Which of the @n pages from @addr hold data (present or swapped), from
 * /proc/self/pagemap; the others are holes (never touched, or dropped). */
int pages_present(struct svm *s, uint64_t addr, size_t n, bool *present)
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

void region_drop(struct svm *s, uint64_t start, uint64_t end)
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
				s->reg[s->nreg++] = (struct region){ end, right, g->wp };
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

bool region_wp_locked(struct svm *s, uint64_t start, uint64_t end)
{
	while (start < end) {
		size_t i;

		for (i = 0; i < s->nreg; i++)
			if (s->reg[i].wp && s->reg[i].start <= start && start < s->reg[i].end)
				break;
		if (i == s->nreg)
			return false;
		start = s->reg[i].end;
	}
	return true;
}

int region_add(struct svm *s, uint64_t start, uint64_t end, bool wp)
{
	if (s->nreg == s->capreg) {
		size_t cap = s->capreg ? 2 * s->capreg : 16;
		struct region *nr = realloc(s->reg, cap * sizeof(*nr));

		if (!nr)
			return -ENOMEM;
		s->reg = nr;
		s->capreg = cap;
	}
	s->reg[s->nreg++] = (struct region){ start, end, wp };
	return 0;
}

/*
 * Register [start, end) (inside one CPU mapping) with our userfaultfd, for
 * missing faults (and write protection, where the kernel has it): from now
 * on a touch of a page that is not there comes to us, and so do its unmap,
 * free and move events. -EAGAIN when an event came after @seq (the mapping
 * this was decided from may be gone: the caller looks again). Not from the
 * handler thread.
 */
int region_register(struct svm *s, uint64_t start, uint64_t end, uint64_t seq)
{
	uint64_t mode = UFFDIO_REGISTER_MODE_MISSING | (s->have_wp ? UFFDIO_REGISTER_MODE_WP : 0);
	bool wp = s->have_wp;
	int ret;

	pthread_mutex_lock(&s->lock);
	if (region_covers(s, start, end)) {
		pthread_mutex_unlock(&s->lock);
		return 0;
	}
	pthread_mutex_unlock(&s->lock);
	ret = uffd_register(s->u, start, end - start, mode);
	if (ret == -EINVAL && wp) { /* this memory cannot be write-protected */
		wp = false;
		ret = uffd_register(s->u, start, end - start, UFFDIO_REGISTER_MODE_MISSING);
	}
	if (ret)
		return ret;
	/* UFFDIO_REGISTER does not mind holes: an unmap between the caller's
	 * look-up and the registration (no event: nothing was registered yet)
	 * left one, and a mapping made there after is not registered. Recorded
	 * as ours, a range would be made on it, its pages moved away and never
	 * brought back (the mapping's later touches and our copy back miss
	 * us): test_svm test_remap_by_another_thread_during_prefetch, with the
	 * unmap at the prefetch's very start. Recorded only when one mapping
	 * still covers it all; otherwise the caller looks again. */
	{
		struct vma now;

		if (vma_lookup(start, &now) || now.start > start || now.end < end)
			return -EAGAIN;
	}
	pthread_mutex_lock(&s->lock);
	/* not recorded as ours when an event may have unmapped it since:
	 * a later mapping there would go unregistered */
	ret = s->event_seq != seq ? -EAGAIN : region_add(s, start, end, wp);
	pthread_mutex_unlock(&s->lock);
	return ret;
}

/* The first range starting in [lo, hi) for which @want(r, @arg) holds,
 * owned (after waiting for its owner if it had one, and asking @want again
 * once owned), or NULL when none is left. */
struct svm_range *own_first(struct svm *s, uint64_t lo, uint64_t hi,
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
		if (r && !want(r, arg)) {
			/* its owner meanwhile changed what we chose it for (two
			 * prefetches to system memory: the second found the
			 * range back already, and brought back a range in no
			 * VRAM: a crash the prefetch race test found) */
			uint64_t start = r->start, size = r->size;

			range_release(s, r);
			pthread_mutex_unlock(&s->lock);
			uffd_wake(s->u, start, size);
			continue;
		}
		pthread_mutex_unlock(&s->lock);
		return r;
	}
}

/* own_first() filter: @r is in @sd's VRAM (or has a read-mostly copy there). */
bool in_vram_of(const struct svm_range *r, const void *sd)
{
	return range_has_vram(r) && r->sd == sd;
}
