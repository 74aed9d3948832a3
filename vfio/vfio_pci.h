/* SPDX-License-Identifier: MIT */
/*
 * Kernel vfio-pci transport: extras beyond vfio/transport.h. The sysfs
 * root and /dev are injectable so the discovery half of the open sequence
 * (and the parsers of the kernel's capability chains) can be tested without
 * VFIO; the ioctls themselves are only ever issued to the real kernel.
 */
#ifndef UGPU_VFIO_VFIO_PCI_H
#define UGPU_VFIO_VFIO_PCI_H

#include <stddef.h>

#include "vfio/pci_discover.h"
#include "vfio/transport.h"

/* vfio_pci_open() with explicit paths (vfio_pci_open uses /sys and /dev). */
int vfio_pci_open_paths(struct ugpu_context *ctx, const struct pci_paths *p, const char *bdf,
			struct vfio_dev **out);

/*
 * vfio_pci_open_shared() - open @bdf into the container of @with (a device
 * opened with vfio_pci_open()) instead of a new one: its IOMMU group joins
 * @with's, and kernel type1 keeps one IOVA space per container, so a DMA
 * mapping made through either device is visible to both (the way QEMU puts
 * a guest's devices in one container). Only one of them may allocate
 * IOVAs (one struct dma_space per container). The container lives until
 * both are closed, in any order.
 * Returns: as vfio_pci_open(); -EINVAL (@with is not a vfio-pci device),
 * -EBUSY (@bdf is in @with's IOMMU group: a group is opened once).
 */
int vfio_pci_open_shared(struct ugpu_context *ctx, const char *bdf, struct vfio_dev *with,
			 struct vfio_dev **out);

/*
 * vfio_pci_locate() - the checks before any ioctl: VFIO present, device
 * exists, has an IOMMU group, is bound to vfio-pci. Fills @group_path
 * ("<dev>/vfio/<N>") and *@group.
 * Returns: 0, -ENOENT (no VFIO / no IOMMU group; @why says what to do),
 * -ENODEV (no such device), -EBUSY (not bound to vfio-pci), -EINVAL (bad BDF).
 */
int vfio_pci_locate(const struct pci_paths *p, const char *bdf, char *group_path, size_t len,
		    int *group, char *why, size_t why_len);

/* Parse a VFIO_DEVICE_GET_REGION_INFO reply (struct vfio_dev_region_info from
 * <linux/vfio.h> + caps) of @len bytes into @info.
 * Returns: 0, -EPROTO (caps outside the buffer or looping), -E2BIG. */
int vfio_pci_parse_region(const void *buf, size_t len, struct vfio_dev_region_info *info,
			  uint64_t *offset);

/* Parse a VFIO_IOMMU_GET_INFO reply (struct vfio_iommu_type1_info + caps).
 * Returns: 0, -EPROTO. */
int vfio_pci_parse_iommu(const void *buf, size_t len, struct vfio_iommu_info *info);

/*
 * vfio_pci_kernel_err() - the -errno an op returns for a kernel call that
 * failed with @err (errno, positive). ENODEV means the device was removed
 * under us: @dev is marked gone (vfio_dev_set_gone(), logged once), so the
 * core's removal watcher sees it on the first failing call. A non-positive
 * @err (a caller bug) becomes -EIO.
 */
int vfio_pci_kernel_err(struct vfio_dev *dev, int err);

#endif
