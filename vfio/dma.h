/* SPDX-License-Identifier: MIT */
/*
 * DMA space: the IOVA address space of one device, on top of its transport.
 *
 * The space hands out IOVAs for buffers (aligned to the IOMMU's smallest
 * page, inside the IOVA ranges the IOMMU allows, never IOVA page 0 so a
 * forgotten address is never valid), maps them through dev->ops->dma_map and
 * unmaps them through dev->ops->dma_unmap, checking the size the IOMMU says it
 * unmapped (a partial unmap is silent in VFIO; here it is -EIO).
 *
 * Two levels are tracked:
 *  - a *buffer* is what a caller mapped with dma_map()/dma_map_at() and will
 *    unmap with dma_unmap() (same iova and size);
 *  - an *IOMMU mapping* is what the transport holds. It covers one buffer, or
 *    several buffers that were merged because their memory is contiguous in
 *    the same fd (DMA_MAP_F_MERGE). Only IOMMU mappings count against the
 *    IOMMU's limit (vfio type1 DMA_AVAIL, default 65,535; the vfio-user
 *    device's max_dma_maps). A merged IOMMU mapping is removed when its last
 *    buffer is unmapped: splitting it would need an unmap/remap window during
 *    which the other buffers are unreachable. Mapping such a released part
 *    again reuses its IOVA without asking the IOMMU.
 *
 * Kernel transports pin the pages they map and charge them to RLIMIT_MEMLOCK;
 * the space checks the limit before every map there (unless the process has
 * CAP_IPC_LOCK) and says how much is needed and how to raise it, instead of
 * letting the kernel fail with a bare ENOMEM.
 */
#ifndef UGPU_SRC_VFIO_DMA_H
#define UGPU_SRC_VFIO_DMA_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/sysmem.h"
#include "vfio/transport.h"

struct ugpu_context;

/*
 * Flag for dma_map(), next to VFIO_DMA_READ/VFIO_DMA_WRITE: the new buffer may
 * be merged with an already mapped buffer whose memory continues it in the
 * same fd (and at the same virtual address), by remapping that neighbour as
 * one bigger IOMMU mapping. The caller guarantees that no device access to
 * the neighbour is in flight during the call: it is briefly unmapped.
 */
#define DMA_MAP_F_MERGE (1u << 8)

struct dma_seg; /* one IOMMU mapping (dma.c) */
struct dma_buf; /* one caller buffer (dma.c) */

/*
 * struct dma_space - the IOVA space of one device.
 *
 * Locking: @lock protects everything below it; every dma_* call on a ready
 * space takes it for its whole duration, transport calls included (so a map
 * and an unmap of the same IOVA never cross). It is a leaf lock apart from the
 * transport's own internal locks; never call dma_* from inside a transport
 * op. dma_space_init() and dma_space_fini() must not run concurrently with any
 * other call on the same space.
 */
struct dma_space {
	pthread_mutex_t lock;
	struct ugpu_context *ctx;
	struct vfio_dev *dev;
	/* Set only once init got the IOMMU's description: no map before. */
	bool ready;
	/* The transport pins pages (kernel vfio): RLIMIT_MEMLOCK applies. */
	bool pins;
	struct vfio_iommu_info info;
	uint64_t page; /* smallest IOMMU page: alignment of IOVA, vaddr, size */
	/* IOMMU mappings, sorted by iova, non-overlapping. */
	struct dma_seg *segs;
	size_t nr_segs, cap_segs;
	/* Caller buffers, sorted by iova, non-overlapping. */
	struct dma_buf *bufs;
	size_t nr_bufs, cap_bufs;
	uint64_t mapped_bytes; /* sum of IOMMU mapping sizes */
	size_t nr_merged; /* mappings made by merging (may have unused parts) */
	uint64_t next_iova; /* next-fit hint for the allocator */
};

/* Numbers for tests and stats. */
struct dma_space_stats {
	size_t mappings; /* IOMMU mappings held (what counts against the limit) */
	size_t buffers; /* caller buffers mapped */
	uint64_t mapped_bytes;
	uint32_t max_mappings; /* the IOMMU's limit, 0 = unknown */
	uint64_t page; /* IOVA alignment */
};

/*
 * dma_space_init() - read what the IOMMU behind @dev allows and make the
 * space ready.
 * @ctx: for logs; may be NULL.
 * @dev: the device; its transport must have set up its IOMMU (vfio-pci: the
 *       container has SET_IOMMU; vfio-user: the session is negotiated).
 * @space: caller-owned storage, initialised here.
 *
 * Returns: 0; -EINVAL on a bad IOMMU description (no usable range, absurd
 * page size); or the -errno of ops->iommu_info, in which case the IOMMU is
 * taken as not set up and the space stays unusable (every map fails).
 * Context: not concurrently with other calls on @space.
 */
int dma_space_init(struct ugpu_context *ctx, struct vfio_dev *dev, struct dma_space *space);

/*
 * dma_space_fini() - unmap everything still mapped and release the space.
 * Each buffer still mapped is a leak of the caller: it is logged (warning) and
 * counted. Unmap failures are logged; tracking is dropped regardless, as the
 * device is about to be closed.
 *
 * Returns: what was still mapped: the buffers the caller did not unmap plus
 * the IOMMU mappings an earlier unmap failed to remove (0 when everything
 * was cleaned up), never negative. A space that never became ready gives 0.
 * Context: not concurrently with other calls on @space.
 */
int dma_space_fini(struct dma_space *space);

/*
 * dma_map() - allocate an IOVA for [vaddr, vaddr+size) and map it.
 * @vaddr: the memory, aligned to the IOMMU page (space->page).
 * @size: bytes, > 0, a multiple of the IOMMU page.
 * @fd, @fd_off: the same memory as an fd (vfio-user passes it to the device),
 *       @fd_off page aligned; @fd -1 when there is none (vfio-user then serves
 *       DMA in-band, slowly).
 * @flags: VFIO_DMA_READ and/or VFIO_DMA_WRITE (at least one), optionally
 *       DMA_MAP_F_MERGE.
 * @iova: the device address of @vaddr on success.
 *
 * Returns: 0; -EINVAL (misaligned, zero size, no permission, not ready);
 * -ENOSPC when the IOMMU mapping limit is reached or no IOVA range has room;
 * -ENOMEM when RLIMIT_MEMLOCK would be exceeded (pinning transports) or out
 * of memory; the transport's -errno (-ENODEV: device gone).
 * Context: any thread; takes space->lock.
 */
int dma_map(struct dma_space *space, void *vaddr, uint64_t size, int fd, uint64_t fd_off,
	    uint32_t flags, uint64_t *iova);

/*
 * dma_map_at() - as dma_map() but at a caller-chosen @iova (identity maps,
 * tests). Never merges.
 * Returns: as dma_map(); -EEXIST when @iova overlaps a mapping, -ERANGE when
 * it is outside the IOMMU's ranges.
 * Context: any thread; takes space->lock.
 */
int dma_map_at(struct dma_space *space, uint64_t iova, void *vaddr, uint64_t size, int fd,
	       uint64_t fd_off, uint32_t flags);

/*
 * dma_map_sysmem() - dma_map() of a whole sysmem buffer (fd offset 0).
 * Context: any thread; takes space->lock.
 */
int dma_map_sysmem(struct dma_space *space, const struct sysmem *mem, uint32_t flags,
		   uint64_t *iova);

/*
 * dma_unmap() - unmap the buffer mapped at @iova with @size (exactly what
 * dma_map gave / dma_map_at took).
 *
 * Returns: 0; -ENOENT when no buffer has that iova and size; -EIO when the
 * IOMMU unmapped less than the whole mapping (logged; the IOVA stays reserved
 * and dma_space_count() keeps counting it); the transport's -errno. On
 * -ENODEV the device is gone and the mapping with it: tracking is dropped.
 * Context: any thread; takes space->lock.
 */
int dma_unmap(struct dma_space *space, uint64_t iova, uint64_t size);

/*
 * dma_space_lookup() - the CPU address of @iova, for engines that copy by CPU.
 * @iova: a device address inside a mapped buffer.
 * @need: VFIO_DMA_READ and/or VFIO_DMA_WRITE the access needs.
 * @vaddr: the process address of @iova.
 * @len: bytes from @iova to the end of its buffer (contiguous in @vaddr).
 *
 * Returns: 0; -EFAULT when @iova is not inside a mapped buffer or the buffer
 * lacks the permission; -ENXIO when the space is not ready.
 * Context: any thread; takes space->lock. The answer is valid until the
 * buffer is unmapped, which is the caller's to order.
 */
int dma_space_lookup(struct dma_space *space, uint64_t iova, uint32_t need, void **vaddr,
		     uint64_t *len);

/* dma_space_count() - IOMMU mappings currently held (0 for a space that is
 * not ready). Context: any thread; takes space->lock. */
size_t dma_space_count(struct dma_space *space);

/* dma_space_stats() - fill @st. Context: any thread; takes space->lock. */
void dma_space_stats(struct dma_space *space, struct dma_space_stats *st);

/*
 * dma_memlock_check() - would locking @more bytes on top of what this process
 * has locked now (VmLck) stay within RLIMIT_MEMLOCK? Always yes with
 * CAP_IPC_LOCK (the kernel does not charge then) or an infinite limit.
 * Call it up front with the total a plan needs (e.g. before a suspend's
 * backups are mapped).
 * Returns: 0, or -ENOMEM with a log line naming the need, the limit and how
 * to raise it.
 * Context: any thread.
 */
int dma_memlock_check(struct ugpu_context *ctx, uint64_t more);

#endif
