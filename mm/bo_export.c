/* SPDX-License-Identifier: MIT */
/*
 * Buffer objects whose memory another process shares (ugpud): a BO's
 * system memory handed out as a sealed memfd and held there
 * (bo_sys_export(), bo_sys_release()), where its bytes are for the
 * daemon's restart record (bo_backing_record()), and a restarted daemon
 * taking a client's memfd back as a BO's memory (bo_sys_adopt()). The
 * locking rule is struct bo_mgr's (mm/bo.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "mm/bo.h"
#include "mm/vm.h"
#include "mm/vram.h"
#include "src/device.h"

int bo_sys_export(struct ugpu_bo *bo, int *fd, uint64_t *size)
{
	struct bo_mgr *m;
	int ret = 0, dup_fd = -1;

	/* In system memory already (ugpud moves a BO in VRAM on a worker
	 * first): only @bo's hold and memfd change, so another BO's unlocked
	 * move does not hold this up (as bo_rw()); a move waits for it as
	 * every other taker of the lock does. */
	bo_lock_own(bo, &m);
	if (!m->closed && bo->placement != UGPU_PLACEMENT_SYSTEM &&
	    bo->placement != UGPU_PLACEMENT_NONE && !bo->pin_count &&
	    bo_placement_allowed(bo, UGPU_PLACEMENT_SYSTEM)) {
		/* a move (the checks below are made again under this lock);
		 * a refusal needs none and is answered under the first */
		pthread_mutex_unlock(&m->lock);
		bo_lock(bo, NULL, &m);
	}
	if (m->closed)
		ret = -ENODEV;
	else if (!bo_placement_allowed(bo, UGPU_PLACEMENT_SYSTEM))
		ret = -EINVAL;
	else if (bo->placement != UGPU_PLACEMENT_SYSTEM)
		ret = (bo->pin_count || vm_bo_busy_locked(bo)) ? -EBUSY
							       : bo_move_locked(bo, UGPU_PLACEMENT_SYSTEM);
	if (!ret) {
		int seals;

		/* Seals belong to the memory, not the fd: a second export
		 * finds them set already. */
		dup_fd = fcntl(bo->sys.mem.fd, F_DUPFD_CLOEXEC, 0);
		seals = dup_fd < 0 ? -1 : fcntl(dup_fd, F_GET_SEALS);
		if (seals < 0 || (!(seals & F_SEAL_SEAL) &&
				  fcntl(dup_fd, F_ADD_SEALS,
					F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0))
			ret = -errno;
	}
	if (!ret) {
		bo->sys_holds++;
		*fd = dup_fd;
		*size = bo->sys.mem.size;
	} else if (dup_fd >= 0) {
		close(dup_fd);
	}
	pthread_mutex_unlock(&m->lock);
	return ret;
}

int bo_sys_adopt(struct ugpu_bo *bo, int fd)
{
	struct ugpu_device *dev;
	struct bo_sys fresh = { .mem = { .fd = -1 } }, old;
	struct bo_mgr *m;
	int ret;

	bo_lock(bo, NULL, &m);
	dev = bo->dev;
	if (m->closed) {
		ret = -ENODEV;
		goto out;
	}
	if (bo->placement != UGPU_PLACEMENT_SYSTEM || bo->sys_holds || bo->map ||
	    bo->pin_count || list_linked(&bo->binds)) {
		ret = -EBUSY;
		goto out;
	}
	ret = sysmem_adopt(dev->ctx, fd, bo->sys.mem.size, &fresh.mem);
	if (ret)
		goto out;
	if (!device_is_removed(dev)) {
		ret = dma_map_sysmem(&dev->dma, &fresh.mem, VFIO_DMA_READ | VFIO_DMA_WRITE,
				     &fresh.iova);
		if (ret) {
			sysmem_destroy(&fresh.mem);
			goto out;
		}
	}
	old = bo->sys;
	bo->sys = fresh;
	bo_set_placement(bo, UGPU_PLACEMENT_SYSTEM); /* a new backing generation */
	bo->sys_holds++; /* held there in the same step: the memory is another's */
	bo_sys_free(dev, &old);
out:
	bo_unlock(m, NULL);
	return ret;
}

int bo_backing_record(struct ugpu_bo *bo, uint64_t *gen, enum ugpu_placement *placement,
	     struct bo_extent *ext, size_t max, size_t *next, int *sys_fd)
{
	struct bo_mgr *m;
	struct buddy_block *b;
	size_t n = 0;
	int ret = 0;

	*sys_fd = -1;
	*next = 0;
	bo_lock(bo, NULL, &m);
	if (m->closed) {
		ret = -ENODEV;
		goto out;
	}
	if (bo->backing_gen == *gen) {
		ret = 1;
		goto out;
	}
	*gen = bo->backing_gen;
	*placement = bo->placement;
	if (bo->placement == UGPU_PLACEMENT_SYSTEM) {
		*sys_fd = fcntl(bo->sys.mem.fd, F_DUPFD_CLOEXEC, 0);
		if (*sys_fd < 0)
			ret = -errno;
	} else if (bo->placement == UGPU_PLACEMENT_VRAM) {
		buddy_list_for_each(b, bo->vram) {
			/* block sizes are chunk << order, the 4 KiB chunk of every
			 * device VRAM manager (as bo_copy_range_queue() reads them) */
			uint64_t off = buddy_block_offset(b);
			uint64_t sz = (uint64_t)BUDDY_MIN_CHUNK << buddy_block_order(b);

			if (n && n <= max && ext[n - 1].offset + ext[n - 1].bytes == off) {
				ext[n - 1].bytes += sz;
				continue;
			}
			if (n < max)
				ext[n] = (struct bo_extent){ .offset = off, .bytes = sz };
			n++;
		}
		*next = n;
	}
out:
	bo_unlock(m, NULL);
	return ret;
}

void bo_sys_release(struct ugpu_bo *bo)
{
	struct bo_mgr *m;

	/* only @bo's hold: not held up by another BO's unlocked move */
	bo_lock_own(bo, &m);
	if (bo->sys_holds)
		bo->sys_holds--;
	pthread_mutex_unlock(&m->lock);
}
