/* SPDX-License-Identifier: MIT */
/* PCI configuration space through a transport's config region. */
#ifndef UGPU_SRC_PCI_CFG_H
#define UGPU_SRC_PCI_CFG_H

#include <stdint.h>

struct vfio_dev;

#define PCI_CFG_VENDOR_ID 0x00
#define PCI_CFG_DEVICE_ID 0x02
#define PCI_CFG_COMMAND 0x04
#define PCI_CFG_STATUS 0x06
#define PCI_CFG_CLASS_REV 0x08
#define PCI_CFG_CAP_PTR 0x34

#define PCI_COMMAND_MEMORY (1u << 1)
#define PCI_COMMAND_MASTER (1u << 2)
#define PCI_STATUS_CAP_LIST (1u << 4)

#define PCI_CAP_ID_PM 0x01
#define PCI_CAP_ID_VNDR 0x09
#define PCI_CAP_ID_MSIX 0x11

#define PCI_PM_CTRL 4 /* PMCSR, from the PM capability */
#define PCI_PM_CTRL_STATE_MASK 0x3u
#define PCI_PM_CTRL_PME_STATUS 0x8000u /* write 1 to clear */

int pci_cfg_read8(struct vfio_dev *dev, uint32_t off, uint8_t *val);
int pci_cfg_read16(struct vfio_dev *dev, uint32_t off, uint16_t *val);
int pci_cfg_read32(struct vfio_dev *dev, uint32_t off, uint32_t *val);
int pci_cfg_write16(struct vfio_dev *dev, uint32_t off, uint16_t val);
int pci_cfg_write32(struct vfio_dev *dev, uint32_t off, uint32_t val);

/*
 * pci_cfg_find_cap() - walk the capability list for @id.
 * Returns the capability's offset (> 0), 0 when absent, or -errno. A list
 * that loops or points outside the header is -EPROTO (a broken device).
 */
int pci_cfg_find_cap(struct vfio_dev *dev, uint8_t id);

#endif
