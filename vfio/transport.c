/* SPDX-License-Identifier: MIT */
/*
 * Helpers common to every transport: fixed-size register accesses, and the
 * region-mmap rules and bookkeeping.
 *
 * A 4- or 8-byte access goes through region_read/region_write as one call of
 * that size, which both transports turn into a single device access (one
 * pread/pwrite of that size on vfio-pci, one REGION_READ/WRITE message on
 * vfio-user): registers with side effects see exactly one access.
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/log.h"

#include "vfio/transport.h"

static int vfio_check(struct vfio_dev *dev, uint32_t index)
{
	if (!dev || !dev->ops)
		return -EINVAL;
	if (index >= dev->num_regions)
		return -EINVAL;
	return 0;
}

int vfio_read32(struct vfio_dev *dev, uint32_t index, uint64_t off, uint32_t *val)
{
	int ret = vfio_check(dev, index);

	if (ret)
		return ret;
	if (!val)
		return -EINVAL;
	return dev->ops->region_read(dev, index, off, val, sizeof(*val));
}

int vfio_write32(struct vfio_dev *dev, uint32_t index, uint64_t off, uint32_t val)
{
	int ret = vfio_check(dev, index);

	if (ret)
		return ret;
	return dev->ops->region_write(dev, index, off, &val, sizeof(val));
}

int vfio_write32_posted(struct vfio_dev *dev, uint32_t index, uint64_t off, uint32_t val)
{
	int ret = vfio_check(dev, index);

	if (ret)
		return ret;
	if (dev->ops->region_write_posted)
		return dev->ops->region_write_posted(dev, index, off, &val, sizeof(val));
	return dev->ops->region_write(dev, index, off, &val, sizeof(val));
}

int vfio_read64(struct vfio_dev *dev, uint32_t index, uint64_t off, uint64_t *val)
{
	int ret = vfio_check(dev, index);

	if (ret)
		return ret;
	if (!val)
		return -EINVAL;
	return dev->ops->region_read(dev, index, off, val, sizeof(*val));
}

int vfio_write64(struct vfio_dev *dev, uint32_t index, uint64_t off, uint64_t val)
{
	int ret = vfio_check(dev, index);

	if (ret)
		return ret;
	return dev->ops->region_write(dev, index, off, &val, sizeof(val));
}

int vfio_region_mmap_check(struct vfio_dev *dev, const struct vfio_dev_region_info *ri,
			   uint64_t off, size_t len)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint32_t i;

	if (!(ri->flags & VFIO_REGION_F_MMAP)) {
		log_err(dev->ctx, "%s: region %u is not mappable", dev->name, ri->index);
		return -EINVAL;
	}
	if (!len || off % page || off > ri->size || len > ri->size - off) {
		log_err(dev->ctx, "%s: region %u [0x%" PRIx64 "+0x%zx] is misaligned or outside its 0x%" PRIx64 " bytes",
			dev->name, ri->index, off, len, ri->size);
		return -EINVAL;
	}
	if (!ri->nr_sparse)
		return 0;
	for (i = 0; i < ri->nr_sparse; i++) {
		const struct vfio_sparse_area *a = &ri->sparse[i];

		if (off >= a->offset && off - a->offset <= a->size && len <= a->size - (off - a->offset))
			return 0;
	}
	log_err(dev->ctx, "%s: region %u [0x%" PRIx64 "+0x%zx] is not inside one sparse-mmap area",
		dev->name, ri->index, off, len);
	return -EINVAL;
}

int vfio_mmap_track(struct vfio_mmap_rec **head, pthread_mutex_t *lock, void *addr, size_t len)
{
	struct vfio_mmap_rec *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	m->addr = addr;
	m->len = len;
	pthread_mutex_lock(lock);
	m->next = *head;
	*head = m;
	pthread_mutex_unlock(lock);
	return 0;
}

int vfio_mmap_untrack(struct vfio_mmap_rec **head, pthread_mutex_t *lock, void *addr, size_t len)
{
	struct vfio_mmap_rec **mp, *m = NULL;

	pthread_mutex_lock(lock);
	for (mp = head; *mp; mp = &(*mp)->next) {
		if ((*mp)->addr == addr && (*mp)->len == len) {
			m = *mp;
			*mp = m->next;
			break;
		}
	}
	pthread_mutex_unlock(lock);
	if (!m)
		return -EINVAL;
	munmap(m->addr, m->len);
	free(m);
	return 0;
}

void vfio_mmap_release_all(struct vfio_mmap_rec **head)
{
	struct vfio_mmap_rec *m;

	while ((m = *head)) {
		*head = m->next;
		munmap(m->addr, m->len);
		free(m);
	}
}
