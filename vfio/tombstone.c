/* SPDX-License-Identifier: MIT */
/*
 * The removed device's transport: what dev->vdev points to once the real
 * transport is closed (a removal, or close), so that a late call fails with
 * -ENODEV instead of using a freed transport (see tombstone.h).
 */
#include <errno.h>
#include <string.h>

#include "vfio/tombstone.h"

static void tomb_close(struct vfio_dev *dev)
{
	(void)dev;
}

static int tomb_region_info(struct vfio_dev *dev, uint32_t index, struct vfio_dev_region_info *info)
{
	(void)dev, (void)index, (void)info;
	return -ENODEV;
}

static int tomb_region_read(struct vfio_dev *dev, uint32_t index, uint64_t off, void *buf,
			    size_t len)
{
	(void)dev, (void)index, (void)off, (void)buf, (void)len;
	return -ENODEV;
}

static int tomb_region_write(struct vfio_dev *dev, uint32_t index, uint64_t off, const void *buf,
			     size_t len)
{
	(void)dev, (void)index, (void)off, (void)buf, (void)len;
	return -ENODEV;
}

static int tomb_region_mmap(struct vfio_dev *dev, uint32_t index, uint64_t off, size_t len, int prot,
			    void **addr)
{
	(void)dev, (void)index, (void)off, (void)len, (void)prot, (void)addr;
	return -ENODEV;
}

static int tomb_region_munmap(struct vfio_dev *dev, void *addr, size_t len)
{
	(void)dev, (void)addr, (void)len;
	return -ENODEV;
}

static int tomb_region_fd(struct vfio_dev *dev, uint32_t index, int *fd, uint64_t *fd_off)
{
	(void)dev, (void)index, (void)fd, (void)fd_off;
	return -ENODEV;
}

static int tomb_irq_info(struct vfio_dev *dev, uint32_t index, struct vfio_dev_irq_info *info)
{
	(void)dev, (void)index, (void)info;
	return -ENODEV;
}

static int tomb_set_irqs(struct vfio_dev *dev, uint32_t index, uint32_t start, uint32_t count,
			 const int *fds)
{
	(void)dev, (void)index, (void)start, (void)count, (void)fds;
	return -ENODEV;
}

static int tomb_iommu_info(struct vfio_dev *dev, struct vfio_iommu_info *info)
{
	(void)dev, (void)info;
	return -ENODEV;
}

static int tomb_dma_map(struct vfio_dev *dev, uint64_t iova, uint64_t size, void *vaddr, int fd,
			uint64_t fd_off, uint32_t prot)
{
	(void)dev, (void)iova, (void)size, (void)vaddr, (void)fd, (void)fd_off, (void)prot;
	return -ENODEV;
}

static int tomb_dma_unmap(struct vfio_dev *dev, uint64_t iova, uint64_t size, uint64_t *unmapped)
{
	(void)dev, (void)iova, (void)size, (void)unmapped;
	return -ENODEV;
}

static int tomb_reset(struct vfio_dev *dev)
{
	(void)dev;
	return -ENODEV;
}

/* Every op answers -ENODEV: the device is gone and so is its transport. */
static const struct vfio_transport_ops tomb_ops = {
	.name = "removed",
	.close = tomb_close,
	.region_info = tomb_region_info,
	.region_read = tomb_region_read,
	.region_write = tomb_region_write,
	.region_mmap = tomb_region_mmap,
	.region_munmap = tomb_region_munmap,
	.region_fd = tomb_region_fd,
	.irq_info = tomb_irq_info,
	.set_irqs = tomb_set_irqs,
	.iommu_info = tomb_iommu_info,
	.dma_map = tomb_dma_map,
	.dma_unmap = tomb_dma_unmap,
	.reset = tomb_reset,
	.low_power_enter = NULL,
	.low_power_exit = NULL,
};

void tombstone_init(struct vfio_dev *t, const struct vfio_dev *from)
{
	memset(t, 0, sizeof(*t));
	t->ops = &tomb_ops;
	t->gone = 1;
	if (from) {
		t->ctx = from->ctx;
		memcpy(t->name, from->name, sizeof(t->name));
		t->name[sizeof(t->name) - 1] = '\0';
	}
}

