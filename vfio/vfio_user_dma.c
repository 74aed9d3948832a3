/* SPDX-License-Identifier: MIT */
/*
 * vfio-user client: DMA. The windows we told the server about (vu_dev.dma,
 * under vu_dev.lock), DMA_MAP/DMA_UNMAP, the IOMMU's description, and the
 * server's in-band DMA_READ/DMA_WRITE requests for windows mapped without an
 * fd, served by the reader thread against our own memory.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "vfio/vfio_user_internal.h"

/* Find the window holding [addr, addr+count) whole. Caller holds @lock. */
static struct vu_dma *vu_dma_find_locked(struct vu_dev *vu, uint64_t addr, uint64_t count)
{
	for (uint32_t i = 0; i < vu->nr_dma; i++) {
		struct vu_dma *d = &vu->dma[i];

		if (addr >= d->iova && addr - d->iova < d->size && count <= d->size - (addr - d->iova))
			return d;
	}
	return NULL;
}

/* Serve DMA_READ / DMA_WRITE from the server against our own memory. */
void vu_serve_dma(struct vu_dev *vu, bool twin, const struct vfu_hdr *h,
		  const uint8_t *body, size_t len)
{
	struct vu_log l = vu_log_of(vu);
	struct vfu_dma_access acc;
	struct vu_dma *d;
	uint8_t *out = NULL;
	size_t out_len = 0;
	int err;

	err = vu_dma_request_parse(&l, h, body, len, &acc);
	if (err) {
		vu_reply(vu, twin, h, err, NULL, 0);
		return;
	}
	if (h->cmd == VFU_CMD_DMA_READ) {
		out_len = sizeof(acc) + acc.count;
		out = malloc(out_len);
		if (!out) {
			vu_reply(vu, twin, h, ENOMEM, NULL, 0);
			return;
		}
		memcpy(out, &acc, sizeof(acc));
	}

	pthread_mutex_lock(&vu->lock);
	d = vu_dma_find_locked(vu, acc.addr, acc.count);
	if (!d || !d->vaddr) {
		err = EFAULT;
	} else if (h->cmd == VFU_CMD_DMA_READ) {
		if (!(d->prot & VFIO_DMA_READ))
			err = EPERM;
		else
			memcpy(out + sizeof(acc), d->vaddr + (acc.addr - d->iova), acc.count);
	} else {
		if (!(d->prot & VFIO_DMA_WRITE))
			err = EPERM;
		else
			memcpy(d->vaddr + (acc.addr - d->iova), body + sizeof(acc), acc.count);
	}
	pthread_mutex_unlock(&vu->lock);

	if (err) {
		log_err(vu->dev.ctx, "%s: server %s iova 0x%" PRIx64 "+%" PRIu64 ": %s",
			vu->dev.name, vu_cmd_name(h->cmd), acc.addr, acc.count,
			err == EFAULT ? "not inside one mapped window" : "window lacks that permission");
		vu_reply(vu, twin, h, err, NULL, 0);
	} else if (h->cmd == VFU_CMD_DMA_READ) {
		vu_reply(vu, twin, h, 0, out, out_len);
	} else {
		vu_reply(vu, twin, h, 0, &acc, sizeof(acc));
	}
	free(out);
}

int vu_iommu_info(struct vfio_dev *dev, struct vfio_iommu_info *info)
		  {
		  struct vu_dev *vu = to_vu(dev);
		  
		  if (!info)
		return -EINVAL;
	memset(info, 0, sizeof(*info));
	info->pgsize_mask = vu->pgsizes;
	info->max_mappings = vu->max_dma_maps;
	info->nr_ranges = 1;
	info->ranges[0].start = 0;
	info->ranges[0].end = VU_IOVA_LIMIT - 1;
	return 0;
}

int vu_dma_map(struct vfio_dev *dev, uint64_t iova, uint64_t size, void *vaddr, int fd,
	       uint64_t fd_off, uint32_t prot)
{
	struct vu_dev *vu = to_vu(dev);
	uint64_t align = vu->pgsizes & -vu->pgsizes;
	struct vfu_dma_map dm = {
		.argsz = sizeof(dm),
		.flags = ((prot & VFIO_DMA_READ) ? VFU_DMA_F_READ : 0) |
			 ((prot & VFIO_DMA_WRITE) ? VFU_DMA_F_WRITE : 0),
		.offset = fd >= 0 ? fd_off : 0,
		.addr = iova,
		.size = size,
	};
	struct vu_dma *d;
	uint32_t i;
	int ret;

	if (!size || (iova | size) & (align - 1) || iova >= VU_IOVA_LIMIT ||
	    size > VU_IOVA_LIMIT - iova || !(prot & (VFIO_DMA_READ | VFIO_DMA_WRITE)) ||
	    (prot & ~(VFIO_DMA_READ | VFIO_DMA_WRITE))) {
		log_err(dev->ctx, "%s: DMA_MAP iova 0x%" PRIx64 " size 0x%" PRIx64 " prot %u: not aligned to 0x%" PRIx64 ", outside [0, 2^48) or bad prot",
			dev->name, iova, size, prot, align);
		return -EINVAL;
	}
	if (fd < 0 && !vaddr) {
		log_err(dev->ctx, "%s: DMA_MAP without fd needs a vaddr to serve in-band DMA", dev->name);
		return -EINVAL;
	}

	/* Reserve the window in our table first: it must be servable as soon
	 * as the server may issue DMA_READ/WRITE for it. */
	pthread_mutex_lock(&vu->lock);
	if (vu->dead) {
		pthread_mutex_unlock(&vu->lock);
		return -ENODEV;
	}
	for (i = 0; i < vu->nr_dma; i++) {
		d = &vu->dma[i];
		if (iova < d->iova + d->size && d->iova < iova + size) {
			pthread_mutex_unlock(&vu->lock);
			log_err(dev->ctx, "%s: DMA_MAP iova 0x%" PRIx64 "+0x%" PRIx64 " overlaps a mapped window", dev->name, iova, size);
			return -EEXIST;
		}
	}
	if (vu->nr_dma >= vu->max_dma_maps) {
		pthread_mutex_unlock(&vu->lock);
		log_err(dev->ctx, "%s: DMA_MAP refused: the server allows %u windows (max_dma_maps); merge mappings",
			dev->name, vu->max_dma_maps);
		return -ENOSPC;
	}
	if (vu->nr_dma == vu->cap_dma) {
		uint32_t ncap = vu->cap_dma ? vu->cap_dma * 2 : 16;
		struct vu_dma *nd = realloc(vu->dma, ncap * sizeof(*nd));

		if (!nd) {
			pthread_mutex_unlock(&vu->lock);
			return -ENOMEM;
		}
		vu->dma = nd;
		vu->cap_dma = ncap;
	}
	vu->dma[vu->nr_dma++] = (struct vu_dma){ .iova = iova, .size = size, .vaddr = vaddr,
						 .prot = prot, .has_fd = fd >= 0 };
	pthread_mutex_unlock(&vu->lock);

	ret = vu_call(vu, VFU_CMD_DMA_MAP, &dm, sizeof(dm), fd >= 0 ? &fd : NULL, fd >= 0 ? 1 : 0, 0,
		      NULL);
	if (ret) {
		pthread_mutex_lock(&vu->lock);
		for (i = 0; i < vu->nr_dma; i++) {
			if (vu->dma[i].iova == iova) {
				vu->dma[i] = vu->dma[--vu->nr_dma];
				break;
			}
		}
		pthread_mutex_unlock(&vu->lock);
		if (ret != -ENODEV)
			log_err(dev->ctx, "%s: DMA_MAP iova 0x%" PRIx64 "+0x%" PRIx64 " failed: %s",
				dev->name, iova, size, strerror(-ret));
	}
	return ret;
}

/* Unmap one window exactly as it was mapped; drop it from the table in any
 * case (after an error or timeout the server state is unknown, and the
 * caller is about to reuse the memory: it must never be served again). */
static int vu_dma_unmap_one(struct vu_dev *vu, uint64_t iova, uint64_t size, uint64_t *unmapped)
{
	struct vfu_dma_unmap du = { .argsz = sizeof(du), .addr = iova, .size = size };
	struct vu_log l = vu_log_of(vu);
	struct vu_reply r;
	uint64_t got;
	uint32_t i;
	int ret;

	ret = vu_call(vu, VFU_CMD_DMA_UNMAP, &du, sizeof(du), NULL, 0, 0, &r);
	if (ret == 0) {
		ret = vu_dma_unmap_check(&l, iova, size, r.data, r.len, &got);
		if (ret == 0)
			*unmapped += got;
		vu_reply_release(&r);
	}
	pthread_mutex_lock(&vu->lock);
	for (i = 0; i < vu->nr_dma; i++) {
		if (vu->dma[i].iova == iova) {
			vu->dma[i] = vu->dma[--vu->nr_dma];
			break;
		}
	}
	pthread_mutex_unlock(&vu->lock);
	return ret;
}

int vu_dma_unmap(struct vfio_dev *dev, uint64_t iova, uint64_t size, uint64_t *unmapped)
		 {
		 struct vu_dev *vu = to_vu(dev);
		 uint64_t done = 0;
		 int ret = 0;
		 
		 if (!unmapped || !size || iova + size < iova)
		return -EINVAL;
	*unmapped = 0;
	/* Like type1: unmap every window inside [iova, iova+size); a window
	 * straddling an end cannot be split (vfio-user unmaps whole windows). */
	for (;;) {
		uint64_t wi = 0, ws = 0;
		bool found = false;
		uint32_t i;

		pthread_mutex_lock(&vu->lock);
		if (vu->dead) {
			pthread_mutex_unlock(&vu->lock);
			ret = -ENODEV;
			break;
		}
		for (i = 0; i < vu->nr_dma; i++) {
			struct vu_dma *d = &vu->dma[i];

			if (d->iova < iova + size && iova < d->iova + d->size) {
				if (d->iova < iova || d->iova + d->size > iova + size) {
					pthread_mutex_unlock(&vu->lock);
					log_err(dev->ctx, "%s: DMA_UNMAP 0x%" PRIx64 "+0x%" PRIx64 " would split the window 0x%" PRIx64 "+0x%" PRIx64,
						dev->name, iova, size, d->iova, d->size);
					*unmapped = done;
					return -EINVAL;
				}
				wi = d->iova;
				ws = d->size;
				found = true;
				break;
			}
		}
		pthread_mutex_unlock(&vu->lock);
		if (!found)
			break;
		ret = vu_dma_unmap_one(vu, wi, ws, &done);
		if (ret)
			break;
	}
	*unmapped = done;
	return ret;
}
