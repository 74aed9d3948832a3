/* SPDX-License-Identifier: MIT */
/*
 * Helpers common to every transport: fixed-size register accesses.
 *
 * A 4- or 8-byte access goes through region_read/region_write as one call of
 * that size, which both transports turn into a single device access (one
 * pread/pwrite of that size on vfio-pci, one REGION_READ/WRITE message on
 * vfio-user): registers with side effects see exactly one access.
 */
#include <errno.h>
#include <stddef.h>

#include "src/vfio/transport.h"

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
