/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/log.h"
#include "vfio/dma.h"

/* One IOMMU mapping held by the transport. */
struct dma_seg {
	uint64_t iova;
	uint64_t size;
	char *vaddr;
	int fd; /* -1: none */
	uint64_t fd_off;
	uint32_t prot; /* VFIO_DMA_READ | VFIO_DMA_WRITE */
	uint32_t nbufs; /* caller buffers inside; 0 only when @stuck */
	/* An unmap failed or was partial: the IOVA stays reserved, fini retries. */
	bool stuck;
	/* Made by merging: may cover memory no buffer uses any more. */
	bool merged;
};

/* One caller buffer, inside exactly one dma_seg. */
struct dma_buf {
	uint64_t iova;
	uint64_t size;
	uint32_t prot;
};

/* How many leaked buffers fini names before it only counts. */
#define DMA_LEAK_LOG_MAX 16

static uint64_t align_up(uint64_t v, uint64_t a)
{
	uint64_t r = (v + a - 1) & ~(a - 1);

	return r < v ? UINT64_MAX & ~(a - 1) : r; /* saturate instead of wrapping */
}

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* --- sorted arrays ------------------------------------------------------ */

/* Index of the first mapping that ends after @iova (nr_segs if none). */
static size_t seg_first_after(const struct dma_space *s, uint64_t iova)
{
	size_t lo = 0, hi = s->nr_segs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct dma_seg *g = &s->segs[mid];

		if (g->iova + (g->size - 1) < iova)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The mapping containing @iova, or NULL. */
static struct dma_seg *seg_containing(struct dma_space *s, uint64_t iova)
{
	size_t i = seg_first_after(s, iova);

	if (i < s->nr_segs && s->segs[i].iova <= iova)
		return &s->segs[i];
	return NULL;
}

/* Is [iova, iova+size) free of every mapping? @size > 0, no wrap. */
static bool iova_is_free(const struct dma_space *s, uint64_t iova, uint64_t size)
{
	size_t i = seg_first_after(s, iova);

	/* segs[i] is the first mapping ending at or after @iova: free iff it
	 * starts after the whole range. */
	return i == s->nr_segs || (s->segs[i].iova > iova && s->segs[i].iova - iova >= size);
}

/* Is [iova, iova+size) inside one allowed IOVA range? */
static bool iova_in_ranges(const struct dma_space *s, uint64_t iova, uint64_t size)
{
	uint32_t r;

	if (size == 0 || iova + (size - 1) < iova)
		return false;
	for (r = 0; r < s->info.nr_ranges; r++)
		if (iova >= s->info.ranges[r].start && iova + (size - 1) <= s->info.ranges[r].end)
			return true;
	return false;
}

static size_t buf_first_after(const struct dma_space *s, uint64_t iova)
{
	size_t lo = 0, hi = s->nr_bufs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct dma_buf *b = &s->bufs[mid];

		if (b->iova + (b->size - 1) < iova)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int reserve(struct dma_space *s)
{
	if (s->nr_segs + 2 > s->cap_segs) {
		size_t cap = s->cap_segs ? s->cap_segs * 2 : 64;
		void *p = realloc(s->segs, cap * sizeof(*s->segs));

		if (!p)
			return -ENOMEM;
		s->segs = p;
		s->cap_segs = cap;
	}
	if (s->nr_bufs + 1 > s->cap_bufs) {
		size_t cap = s->cap_bufs ? s->cap_bufs * 2 : 64;
		void *p = realloc(s->bufs, cap * sizeof(*s->bufs));

		if (!p)
			return -ENOMEM;
		s->bufs = p;
		s->cap_bufs = cap;
	}
	return 0;
}

/* Capacity is reserved beforehand, so bookkeeping never fails after the
 * transport has mapped something. */
static void seg_insert(struct dma_space *s, const struct dma_seg *g)
{
	size_t i = seg_first_after(s, g->iova);

	memmove(&s->segs[i + 1], &s->segs[i], (s->nr_segs - i) * sizeof(*s->segs));
	s->segs[i] = *g;
	s->nr_segs++;
	s->nr_merged += g->merged;
	s->mapped_bytes += g->size;
}

static void seg_remove(struct dma_space *s, struct dma_seg *g)
{
	size_t i = (size_t)(g - s->segs);

	s->mapped_bytes -= g->size;
	s->nr_merged -= g->merged;
	memmove(&s->segs[i], &s->segs[i + 1], (s->nr_segs - i - 1) * sizeof(*s->segs));
	s->nr_segs--;
}

static void buf_insert(struct dma_space *s, uint64_t iova, uint64_t size, uint32_t prot)
{
	size_t i = buf_first_after(s, iova);

	memmove(&s->bufs[i + 1], &s->bufs[i], (s->nr_bufs - i) * sizeof(*s->bufs));
	s->bufs[i] = (struct dma_buf){ .iova = iova, .size = size, .prot = prot };
	s->nr_bufs++;
}

/* --- memlock --------------------------------------------------------------- */

static bool has_cap_ipc_lock(void)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];

	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data) != 0)
		return false;
	return data[CAP_TO_INDEX(CAP_IPC_LOCK)].effective & CAP_TO_MASK(CAP_IPC_LOCK);
}

/* Bytes this process has locked now (VmLck: where vfio type1 charges its
 * pins); 0 when unreadable. */
static uint64_t vm_locked_bytes(void)
{
	char line[256];
	uint64_t kb = 0;
	FILE *f = fopen("/proc/self/status", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmLck: %" SCNu64 " kB", &kb) == 1)
			break;
	fclose(f);
	return kb * 1024;
}

int dma_memlock_check(struct ugpu_context *ctx, uint64_t more)
{
	struct rlimit rl;
	uint64_t locked;

	if (has_cap_ipc_lock())
		return 0;
	if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
		return 0;
	locked = vm_locked_bytes();
	if (more <= (uint64_t)rl.rlim_cur && locked <= (uint64_t)rl.rlim_cur - more)
		return 0;
	log_err(ctx,
		"dma: RLIMIT_MEMLOCK too low to pin DMA memory: need %" PRIu64 " KiB locked (%" PRIu64
		" KiB already + %" PRIu64 " KiB new), limit is %" PRIu64 " KiB; raise it "
		"(ulimit -l, LimitMEMLOCK= in the systemd unit, /etc/security/limits.conf) "
		"or grant CAP_IPC_LOCK",
		(locked + more + 1023) / 1024, locked / 1024, (more + 1023) / 1024,
		(uint64_t)rl.rlim_cur / 1024);
	return -ENOMEM;
}

/* --- init / fini -------------------------------------------------------------- */

static bool transport_pins(const struct vfio_dev *dev)
{
	const char *n = dev->ops->name ? dev->ops->name : "";

	return !strncmp(n, "vfio-pci", 8) || !strncmp(n, "iommufd", 7);
}

int dma_space_init(struct ugpu_context *ctx, struct vfio_dev *dev, struct dma_space *space)
{
	long host_page = sysconf(_SC_PAGESIZE);
	struct vfio_iommu_info info;
	uint64_t page;
	uint32_t r;
	int ret;

	memset(space, 0, sizeof(*space));
	space->ctx = ctx;
	space->dev = dev;
	if (!dev || !dev->ops || !dev->ops->iommu_info || !dev->ops->dma_map || !dev->ops->dma_unmap) {
		log_err(ctx, "dma: device has no DMA ops; cannot set up its IOVA space");
		return -EINVAL;
	}

	memset(&info, 0, sizeof(info));
	ret = dev->ops->iommu_info(dev, &info);
	if (ret < 0) {
		log_err(ctx, "dma: %s: IOMMU info unavailable (%d): IOMMU not set up, mapping nothing",
			dev->name, ret);
		return ret;
	}

	/* The smallest IOMMU page is the alignment, but never below the host
	 * page: pages are pinned (or mmap'd by the device) whole. */
	page = info.pgsize_mask & -info.pgsize_mask;
	if (host_page <= 0)
		host_page = 4096;
	if (page == 0) {
		log_warn(ctx, "dma: %s: IOMMU reports no page sizes; assuming %ld", dev->name,
			 host_page);
		page = (uint64_t)host_page;
	}
	if (page < (uint64_t)host_page)
		page = (uint64_t)host_page;
	if (!is_pow2(page) || page > (1ull << 30)) {
		log_err(ctx, "dma: %s: IOMMU minimum page 0x%" PRIx64 " is unusable", dev->name, page);
		return -EINVAL;
	}

	if (info.nr_ranges > VFIO_IOVA_RANGES_MAX) {
		log_err(ctx, "dma: %s: IOMMU reports %u IOVA ranges, more than the %d it may",
			dev->name, info.nr_ranges, VFIO_IOVA_RANGES_MAX);
		return -EINVAL;
	}
	if (info.nr_ranges == 0) {
		/* No IOVA-range capability: the IOMMU allows everything. */
		info.nr_ranges = 1;
		info.ranges[0].start = 0;
		info.ranges[0].end = UINT64_MAX;
	}
	for (r = 0; r < info.nr_ranges; r++) {
		if (info.ranges[r].start > info.ranges[r].end) {
			log_err(ctx, "dma: %s: IOVA range %u is empty (0x%" PRIx64 "-0x%" PRIx64 ")",
				dev->name, r, info.ranges[r].start, info.ranges[r].end);
			return -EINVAL;
		}
	}

	space->info = info;
	space->page = page;
	space->pins = transport_pins(dev);
	space->next_iova = page; /* never hand out IOVA page 0 */
	pthread_mutex_init(&space->lock, NULL);
	space->ready = true;
	log_dbg(ctx, "dma: %s: IOVA space ready: page 0x%" PRIx64 ", %u range(s), max %u mappings%s",
		dev->name, page, info.nr_ranges, info.max_mappings,
		space->pins ? ", pinning (RLIMIT_MEMLOCK applies)" : "");
	return 0;
}

/* Ask the transport to drop one IOMMU mapping; 0 only if all of it went. */
static int seg_unmap_hw(struct dma_space *s, const struct dma_seg *g)
{
	uint64_t unmapped = 0;
	int ret;

	ret = s->dev->ops->dma_unmap(s->dev, g->iova, g->size, &unmapped);
	if (ret < 0) {
		/* -ENODEV: the device is gone, and its mappings with it */
		if (ret == -ENODEV)
			log_dbg(s->ctx, "dma: %s: unmap of iova 0x%" PRIx64 ": the device is gone",
				s->dev->name, g->iova);
		else
			log_err(s->ctx, "dma: %s: unmap of iova 0x%" PRIx64 " size 0x%" PRIx64 " failed: %d",
				s->dev->name, g->iova, g->size, ret);
		return ret;
	}
	if (unmapped != g->size) {
		log_err(s->ctx,
			"dma: %s: partial unmap at iova 0x%" PRIx64 ": the IOMMU unmapped 0x%" PRIx64
			" of 0x%" PRIx64 " bytes",
			s->dev->name, g->iova, unmapped, g->size);
		return -EIO;
	}
	return 0;
}

int dma_space_fini(struct dma_space *space)
{
	size_t i;
	int leaked;

	if (!space->ready)
		return 0;
	pthread_mutex_lock(&space->lock);
	leaked = (int)space->nr_bufs;
	for (i = 0; i < space->nr_segs; i++) {
		if (space->segs[i].stuck && space->segs[i].nbufs == 0) {
			log_warn(space->ctx,
				 "dma: %s: mapping at iova 0x%" PRIx64 " size 0x%" PRIx64
				 " survived a failed unmap; retrying",
				 space->dev->name, space->segs[i].iova, space->segs[i].size);
			leaked++;
		}
	}
	for (i = 0; i < space->nr_bufs; i++) {
		if (i < DMA_LEAK_LOG_MAX)
			log_warn(space->ctx,
				 "dma: %s: buffer still mapped at teardown: iova 0x%" PRIx64
				 " size 0x%" PRIx64,
				 space->dev->name, space->bufs[i].iova, space->bufs[i].size);
	}
	if (space->nr_bufs > DMA_LEAK_LOG_MAX)
		log_warn(space->ctx, "dma: %s: ... %zu more buffers still mapped", space->dev->name,
			 space->nr_bufs - DMA_LEAK_LOG_MAX);
	/* Stuck mappings are retried too: a partial unmap may leave a rest. */
	for (i = 0; i < space->nr_segs; i++)
		(void)seg_unmap_hw(space, &space->segs[i]);
	free(space->segs);
	free(space->bufs);
	space->segs = NULL;
	space->bufs = NULL;
	space->nr_segs = space->cap_segs = space->nr_bufs = space->cap_bufs = 0;
	space->mapped_bytes = 0;
	space->nr_merged = 0;
	space->ready = false;
	pthread_mutex_unlock(&space->lock);
	pthread_mutex_destroy(&space->lock);
	return leaked;
}

/* --- map ------------------------------------------------------------------- */

static int check_args(struct dma_space *s, void *vaddr, uint64_t size, int fd, uint64_t fd_off,
		      uint32_t flags)
{
	uint32_t prot = flags & (VFIO_DMA_READ | VFIO_DMA_WRITE);

	if (!s->ready) {
		log_err(s->ctx, "dma: IOVA space not ready (IOMMU not set up); refusing to map");
		return -ENXIO;
	}
	if (flags & ~(VFIO_DMA_READ | VFIO_DMA_WRITE | DMA_MAP_F_MERGE)) {
		log_err(s->ctx, "dma: %s: unknown map flags 0x%x", s->dev->name, flags);
		return -EINVAL;
	}
	if (!prot) {
		log_err(s->ctx, "dma: %s: map without read or write permission", s->dev->name);
		return -EINVAL;
	}
	if (size == 0 || (size & (s->page - 1)) || ((uintptr_t)vaddr & (s->page - 1)) ||
	    (fd >= 0 && (fd_off & (s->page - 1)))) {
		log_err(s->ctx,
			"dma: %s: map of vaddr %p size 0x%" PRIx64 " fd offset 0x%" PRIx64
			" not aligned to the IOMMU page 0x%" PRIx64,
			s->dev->name, vaddr, size, fd_off, s->page);
		return -EINVAL;
	}
	if (!vaddr || (uintptr_t)vaddr + (size - 1) < (uintptr_t)vaddr) {
		log_err(s->ctx, "dma: %s: bad map address %p size 0x%" PRIx64, s->dev->name, vaddr,
			size);
		return -EINVAL;
	}
	return 0;
}

static int limit_check(struct dma_space *s)
{
	uint32_t max = s->info.max_mappings;

	if (max && s->nr_segs >= max) {
		log_err(s->ctx,
			"dma: %s: IOMMU mapping limit reached (%zu of %u mappings in use); map larger "
			"buffers, merge contiguous ones (DMA_MAP_F_MERGE) or raise the limit "
			"(vfio_iommu_type1 dma_entry_limit)",
			s->dev->name, s->nr_segs, max);
		return -ENOSPC;
	}
	return 0;
}

/* Find a free, aligned IOVA for @size inside one allowed range. */
static int iova_alloc(struct dma_space *s, uint64_t size, uint64_t *out)
{
	uint64_t cand = align_up(s->next_iova, s->page);
	uint32_t r;

	/* Next-fit first: buffers come and go in rough order, and it keeps the
	 * sorted-array inserts at the tail. */
	if (iova_in_ranges(s, cand, size) && iova_is_free(s, cand, size)) {
		*out = cand;
		return 0;
	}
	for (r = 0; r < s->info.nr_ranges; r++) {
		uint64_t start = s->info.ranges[r].start, end = s->info.ranges[r].end;
		size_t i;

		cand = align_up(start < s->page ? s->page : start, s->page);
		while (cand <= end && size - 1 <= end - cand) {
			i = seg_first_after(s, cand);
			if (i == s->nr_segs ||
			    (s->segs[i].iova >= cand && s->segs[i].iova - cand >= size)) {
				*out = cand;
				return 0;
			}
			if (s->segs[i].iova + (s->segs[i].size - 1) == UINT64_MAX)
				break; /* the last mapping reaches the top */
			cand = align_up(s->segs[i].iova + s->segs[i].size, s->page);
		}
	}
	log_err(s->ctx, "dma: %s: no free IOVA range of 0x%" PRIx64 " bytes", s->dev->name, size);
	return -ENOSPC;
}

static int hw_map(struct dma_space *s, const struct dma_seg *g)
{
	int ret = s->dev->ops->dma_map(s->dev, g->iova, g->size, g->vaddr, g->fd, g->fd_off, g->prot);

	if (ret < 0)
		log_err(s->ctx,
			"dma: %s: map of iova 0x%" PRIx64 " size 0x%" PRIx64 " (vaddr %p) failed: %d",
			s->dev->name, g->iova, g->size, (void *)g->vaddr, ret);
	return ret;
}

/* A mapping the new buffer continues (@prev) or that continues it (!@prev):
 * same fd, same permission, contiguous in the fd and in the process. */
static struct dma_seg *merge_candidate(struct dma_space *s, char *vaddr, uint64_t size, int fd,
				       uint64_t fd_off, uint32_t prot, bool prev)
{
	size_t i;

	for (i = 0; i < s->nr_segs; i++) {
		struct dma_seg *g = &s->segs[i];

		if (g->stuck || g->fd != fd || g->prot != prot)
			continue;
		if (prev && g->fd_off + g->size == fd_off && g->vaddr + g->size == vaddr &&
		    iova_in_ranges(s, g->iova, g->size + size) &&
		    iova_is_free(s, g->iova + g->size, size))
			return g;
		if (!prev && fd_off + size == g->fd_off && vaddr + size == g->vaddr)
			return g;
	}
	return NULL;
}

/* True when no caller buffer overlaps [iova, iova+size). */
static bool bufs_are_free(const struct dma_space *s, uint64_t iova, uint64_t size)
{
	size_t i = buf_first_after(s, iova);

	return i == s->nr_bufs || (s->bufs[i].iova > iova && s->bufs[i].iova - iova >= size);
}

/* A mapping that already maps this memory (same fd range, same process
 * address, same permission) at an IOVA no buffer uses. */
static struct dma_seg *covering_seg(struct dma_space *s, char *vaddr, uint64_t size, int fd,
				    uint64_t fd_off, uint32_t prot)
{
	size_t i;

	if (!s->nr_merged)
		return NULL; /* only merged mappings outlive one of their buffers */
	for (i = 0; i < s->nr_segs; i++) {
		struct dma_seg *g = &s->segs[i];
		uint64_t d = fd_off - g->fd_off;

		if (!g->merged || g->stuck || g->fd != fd || g->prot != prot || fd_off < g->fd_off ||
		    d > g->size || size > g->size - d || g->vaddr + d != vaddr)
			continue;
		if (bufs_are_free(s, g->iova + d, size))
			return g;
	}
	return NULL;
}

/*
 * Merge the new buffer with @p (ends where it starts) and/or @n (starts where
 * it ends) into one IOMMU mapping. The neighbours are briefly unmapped (see
 * DMA_MAP_F_MERGE). On failure the neighbours are put back as they were.
 */
static int map_merged(struct dma_space *s, struct dma_seg *p, struct dma_seg *n, char *vaddr,
		      uint64_t size, int fd, uint64_t fd_off, uint32_t prot, uint64_t *iova)
{
	struct dma_seg u, sp = { 0 }, sn = { 0 };
	uint64_t buf_iova = p ? p->iova + p->size : n->iova - size;
	int ret;

	if (p)
		sp = *p;
	if (n)
		sn = *n;
	u = (struct dma_seg){
		.iova = p ? sp.iova : buf_iova,
		.size = (p ? sp.size : 0) + size + (n ? sn.size : 0),
		.vaddr = p ? sp.vaddr : vaddr,
		.fd = fd,
		.fd_off = p ? sp.fd_off : fd_off,
		.prot = prot,
		.nbufs = (p ? sp.nbufs : 0) + 1 + (n ? sn.nbufs : 0),
		.merged = true,
	};

	if (p && (ret = seg_unmap_hw(s, &sp)) < 0) {
		p->stuck = true; /* in an unknown state: never merge into it again */
		return ret;
	}
	if (n && (ret = seg_unmap_hw(s, &sn)) < 0) {
		n->stuck = true;
		goto out_restore_prev;
	}
	ret = hw_map(s, &u);
	if (ret < 0)
		goto out_restore_next;

	/* Remove the higher index first so the lower pointer stays valid. */
	if (p && n && n > p) {
		seg_remove(s, n);
		seg_remove(s, p);
	} else {
		if (p)
			seg_remove(s, p);
		if (n)
			seg_remove(s, n);
	}
	seg_insert(s, &u);
	buf_insert(s, buf_iova, size, prot);
	*iova = buf_iova;
	return 0;

out_restore_next:
	if (n && hw_map(s, &sn) < 0) {
		log_err(s->ctx, "dma: %s: lost mapping iova 0x%" PRIx64 " while merging", s->dev->name,
			sn.iova);
		n->stuck = true;
	}
out_restore_prev:
	if (p && hw_map(s, &sp) < 0) {
		log_err(s->ctx, "dma: %s: lost mapping iova 0x%" PRIx64 " while merging", s->dev->name,
			sp.iova);
		p->stuck = true;
	}
	return ret;
}

static int map_locked(struct dma_space *s, bool fixed, uint64_t iova, void *vaddr, uint64_t size,
		      int fd, uint64_t fd_off, uint32_t flags, uint64_t *out)
{
	uint32_t prot = flags & (VFIO_DMA_READ | VFIO_DMA_WRITE);
	struct dma_seg g;
	int ret;

	ret = reserve(s);
	if (ret < 0)
		return ret;
	if (s->pins) {
		ret = dma_memlock_check(s->ctx, size);
		if (ret < 0)
			return ret;
	}

	if (!fixed && fd >= 0) {
		/* Memory that a merged mapping still covers (a buffer of it was
		 * unmapped and is mapped again) needs no IOMMU work at all. */
		struct dma_seg *g = covering_seg(s, vaddr, size, fd, fd_off, prot);

		if (g) {
			uint64_t at = g->iova + (fd_off - g->fd_off);

			g->nbufs++;
			buf_insert(s, at, size, prot);
			*out = at;
			return 0;
		}
	}
	if (!fixed && (flags & DMA_MAP_F_MERGE) && fd >= 0) {
		struct dma_seg *p = merge_candidate(s, vaddr, size, fd, fd_off, prot, true);
		struct dma_seg *n = merge_candidate(s, vaddr, size, fd, fd_off, prot, false);

		/* The successor must sit right after the new buffer's IOVA. */
		if (n && p && n->iova != p->iova + p->size + size)
			n = NULL;
		if (n && !p &&
		    (n->iova < size + s->page || !iova_in_ranges(s, n->iova - size, size + n->size) ||
		     !iova_is_free(s, n->iova - size, size)))
			n = NULL;
		if (p || n)
			return map_merged(s, p, n, vaddr, size, fd, fd_off, prot, out);
	}

	ret = limit_check(s);
	if (ret < 0)
		return ret;
	if (fixed) {
		if (!iova_in_ranges(s, iova, size)) {
			log_err(s->ctx,
				"dma: %s: iova 0x%" PRIx64 " size 0x%" PRIx64
				" is outside the IOMMU's IOVA ranges",
				s->dev->name, iova, size);
			return -ERANGE;
		}
		if (iova & (s->page - 1)) {
			log_err(s->ctx, "dma: %s: iova 0x%" PRIx64 " not aligned to 0x%" PRIx64,
				s->dev->name, iova, s->page);
			return -EINVAL;
		}
		if (!iova_is_free(s, iova, size)) {
			log_err(s->ctx,
				"dma: %s: iova 0x%" PRIx64 " size 0x%" PRIx64 " overlaps a mapping",
				s->dev->name, iova, size);
			return -EEXIST;
		}
	} else {
		ret = iova_alloc(s, size, &iova);
		if (ret < 0)
			return ret;
	}

	g = (struct dma_seg){ .iova = iova, .size = size, .vaddr = vaddr, .fd = fd,
			      .fd_off = fd >= 0 ? fd_off : 0, .prot = prot, .nbufs = 1 };
	ret = hw_map(s, &g);
	if (ret < 0)
		return ret;
	seg_insert(s, &g);
	buf_insert(s, iova, size, prot);
	if (!fixed)
		s->next_iova = iova + size;
	if (out)
		*out = iova;
	return 0;
}

int dma_map(struct dma_space *space, void *vaddr, uint64_t size, int fd, uint64_t fd_off,
	    uint32_t flags, uint64_t *iova)
{
	int ret = check_args(space, vaddr, size, fd, fd_off, flags);

	if (ret < 0)
		return ret;
	if (!iova)
		return -EINVAL;
	pthread_mutex_lock(&space->lock);
	ret = map_locked(space, false, 0, vaddr, size, fd, fd_off, flags, iova);
	pthread_mutex_unlock(&space->lock);
	return ret;
}

int dma_map_at(struct dma_space *space, uint64_t iova, void *vaddr, uint64_t size, int fd,
	       uint64_t fd_off, uint32_t flags)
{
	int ret = check_args(space, vaddr, size, fd, fd_off, flags & ~DMA_MAP_F_MERGE);

	if (ret < 0)
		return ret;
	pthread_mutex_lock(&space->lock);
	ret = map_locked(space, true, iova, vaddr, size, fd, fd_off, flags & ~DMA_MAP_F_MERGE, NULL);
	pthread_mutex_unlock(&space->lock);
	return ret;
}

int dma_map_sysmem(struct dma_space *space, const struct sysmem *mem, uint32_t flags,
		   uint64_t *iova)
{
	return dma_map(space, mem->vaddr, mem->size, mem->fd, 0, flags, iova);
}

/* --- unmap / lookup ------------------------------------------------------- */

int dma_unmap(struct dma_space *space, uint64_t iova, uint64_t size)
{
	struct dma_seg *g;
	size_t i;
	int ret = 0;

	if (!space->ready) {
		log_err(space->ctx, "dma: IOVA space not ready; nothing to unmap at 0x%" PRIx64, iova);
		return -ENXIO;
	}
	pthread_mutex_lock(&space->lock);
	i = buf_first_after(space, iova);
	if (i == space->nr_bufs || space->bufs[i].iova != iova || space->bufs[i].size != size) {
		log_err(space->ctx,
			"dma: %s: no buffer mapped at iova 0x%" PRIx64 " with size 0x%" PRIx64,
			space->dev->name, iova, size);
		ret = -ENOENT;
		goto out_unlock;
	}
	g = seg_containing(space, iova);
	memmove(&space->bufs[i], &space->bufs[i + 1], (space->nr_bufs - i - 1) * sizeof(*space->bufs));
	space->nr_bufs--;
	if (!g || --g->nbufs > 0)
		goto out_unlock; /* a merged mapping lives on until its last buffer goes */

	ret = seg_unmap_hw(space, g);
	if (ret == -ENODEV) {
		/* The device is gone and its IOMMU mappings with it. */
		seg_remove(space, g);
	} else if (ret < 0) {
		g->stuck = true;
	} else {
		seg_remove(space, g);
	}
out_unlock:
	pthread_mutex_unlock(&space->lock);
	return ret;
}

int dma_space_lookup(struct dma_space *space, uint64_t iova, uint32_t need, void **vaddr,
		     uint64_t *len)
{
	const struct dma_buf *b;
	const struct dma_seg *g;
	size_t i;
	int ret = -EFAULT;

	if (!space->ready)
		return -ENXIO;
	pthread_mutex_lock(&space->lock);
	i = buf_first_after(space, iova);
	if (i == space->nr_bufs)
		goto out_unlock;
	b = &space->bufs[i];
	if (b->iova > iova || (b->prot & need) != need)
		goto out_unlock;
	g = seg_containing(space, iova);
	if (!g)
		goto out_unlock;
	*vaddr = g->vaddr + (iova - g->iova);
	*len = b->iova + b->size - iova;
	ret = 0;
out_unlock:
	pthread_mutex_unlock(&space->lock);
	return ret;
}

size_t dma_space_count(struct dma_space *space)
{
	size_t n;

	if (!space->ready)
		return 0;
	pthread_mutex_lock(&space->lock);
	n = space->nr_segs;
	pthread_mutex_unlock(&space->lock);
	return n;
}

void dma_space_stats(struct dma_space *space, struct dma_space_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (!space->ready)
		return;
	pthread_mutex_lock(&space->lock);
	st->mappings = space->nr_segs;
	st->buffers = space->nr_bufs;
	st->mapped_bytes = space->mapped_bytes;
	st->max_mappings = space->info.max_mappings;
	st->page = space->page;
	pthread_mutex_unlock(&space->lock);
}
