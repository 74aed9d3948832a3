/* SPDX-License-Identifier: MIT */
#include <errno.h>

#include "vfio/pci_cfg.h"
#include "vfio/transport.h"

static int cfg_read(struct vfio_dev *dev, uint32_t off, void *val, size_t len)
{
	return dev->ops->region_read(dev, VFIO_REGION_CONFIG, off, val, len);
}

int pci_cfg_read8(struct vfio_dev *dev, uint32_t off, uint8_t *val)
{
	return cfg_read(dev, off, val, 1);
}

int pci_cfg_read16(struct vfio_dev *dev, uint32_t off, uint16_t *val)
{
	return cfg_read(dev, off, val, 2);
}

int pci_cfg_read32(struct vfio_dev *dev, uint32_t off, uint32_t *val)
{
	return cfg_read(dev, off, val, 4);
}

int pci_cfg_write16(struct vfio_dev *dev, uint32_t off, uint16_t val)
{
	return dev->ops->region_write(dev, VFIO_REGION_CONFIG, off, &val, 2);
}

int pci_cfg_write32(struct vfio_dev *dev, uint32_t off, uint32_t val)
{
	return dev->ops->region_write(dev, VFIO_REGION_CONFIG, off, &val, 4);
}

int pci_cfg_find_cap(struct vfio_dev *dev, uint8_t id)
{
	uint16_t status;
	uint8_t pos, cap_id;
	int ret, hops;

	ret = pci_cfg_read16(dev, PCI_CFG_STATUS, &status);
	if (ret)
		return ret;
	if (status == 0xffff)
		return -ENODEV; /* all-ones: the device is not answering */
	if (!(status & PCI_STATUS_CAP_LIST))
		return 0;
	ret = pci_cfg_read8(dev, PCI_CFG_CAP_PTR, &pos);
	if (ret)
		return ret;
	/* 48 capabilities fit in the 192 bytes after the header; more is a loop. */
	for (hops = 0; pos && hops < 48; hops++) {
		if (pos < 0x40 || (pos & 3))
			return -EPROTO;
		ret = pci_cfg_read8(dev, pos, &cap_id);
		if (ret)
			return ret;
		if (cap_id == id)
			return pos;
		ret = pci_cfg_read8(dev, pos + 1, &pos);
		if (ret)
			return ret;
	}
	return pos ? -EPROTO : 0;
}
