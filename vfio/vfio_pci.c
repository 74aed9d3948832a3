/* SPDX-License-Identifier: MIT */
/*
 * Kernel vfio-pci transport: legacy container/group with the type1 (v2)
 * IOMMU backend.
 *
 * Open sequence: /dev/vfio/vfio (container) -> API version -> type1v2
 * extension -> /dev/vfio/<group> -> GROUP_GET_STATUS (viable?) ->
 * GROUP_SET_CONTAINER -> SET_IOMMU(type1v2) -> IOMMU_GET_INFO (page sizes,
 * IOVA ranges, DMA_AVAIL) -> GROUP_GET_DEVICE_FD -> device, region and irq
 * info -> probe low-power features. Nothing is DMA-mapped before SET_IOMMU.
 *
 * All kernel calls are plain ioctls/pread/pwrite on fds that are valid for
 * the device's whole life, and the kernel serialises them itself; the only
 * shared state of our own is the list of mmaps and the mapped-bytes counter
 * (struct vp_dev.lock), and the gone flag (atomic, transport.h).
 *
 * A device removed under us: the kernel answers ENODEV. The first such
 * answer marks the device gone (vfio_pci_kernel_err()), so the core's removal
 * watcher sees it at once instead of at its next config-space probe, and
 * from then on the calls that would reach the device fail with -ENODEV
 * without asking the kernel (transport.h's contract); the ones that release
 * our own resources (munmap, DMA unmap, disabling interrupts) still run.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/vfio.h>

#include "base/log.h"
#include "vfio/pci_bind.h"
#include "vfio/vfio_pci.h"

#define VP_MAX_REGIONS VFIO_PCI_NUM_REGIONS
#define VP_MAX_IRQS VFIO_PCI_NUM_IRQS
#define VP_INFO_MAX 4096

_Static_assert((int)VFIO_REGION_BAR0 == (int)VFIO_PCI_BAR0_REGION_INDEX, "region index");
_Static_assert((int)VFIO_REGION_CONFIG == (int)VFIO_PCI_CONFIG_REGION_INDEX, "config index");
_Static_assert((int)VFIO_IRQ_MSIX == (int)VFIO_PCI_MSIX_IRQ_INDEX, "msix index");
_Static_assert((int)VFIO_IRQ_REQ == (int)VFIO_PCI_REQ_IRQ_INDEX, "req index");

/*
 * struct vp_dev - one device opened through vfio-pci.
 * Locking: @lock protects @mmaps and @mapped_bytes. Everything else is set
 * during open and read-only after.
 */
struct vp_dev {
	struct vfio_dev dev; /* must be first */
	int container;
	int group;
	int device;
	int group_id;
	uint32_t flags; /* VFIO_DEVICE_FLAGS_* */
	struct vfio_dev_region_info regions[VP_MAX_REGIONS];
	uint64_t region_off[VP_MAX_REGIONS]; /* device-fd offset of each region */
	struct vfio_dev_irq_info irqs[VP_MAX_IRQS];
	struct vfio_iommu_info iommu;
	bool lp_entry, lp_wakeup, lp_exit; /* probed low-power features */
	pthread_mutex_t lock;
	struct vfio_mmap_rec *mmaps;
	uint64_t mapped_bytes;
};

static struct vp_dev *to_vp(struct vfio_dev *dev)
{
	return (struct vp_dev *)dev;
}

/* ---- parsers (pure, unit-tested) ----------------------------------------- */

int vfio_pci_parse_region(const void *buf, size_t len, struct vfio_dev_region_info *info,
			  uint64_t *offset)
{
	const uint8_t *b = buf;
	struct vfio_region_info kri;
	uint32_t off;
	int hops = 0;

	if (len < sizeof(kri))
		return -EPROTO;
	memcpy(&kri, b, sizeof(kri));
	memset(info, 0, sizeof(*info));
	info->index = kri.index;
	info->size = kri.size;
	info->flags = kri.flags & (VFIO_REGION_F_READ | VFIO_REGION_F_WRITE | VFIO_REGION_F_MMAP);
	*offset = kri.offset;
	if (!(kri.flags & VFIO_REGION_INFO_FLAG_CAPS))
		return 0;
	for (off = kri.cap_offset; off; hops++) {
		struct vfio_info_cap_header h;

		if (hops > 16 || off < sizeof(kri) || off > len || len - off < sizeof(h))
			return -EPROTO;
		memcpy(&h, b + off, sizeof(h));
		if (h.id == VFIO_REGION_INFO_CAP_SPARSE_MMAP) {
			struct vfio_region_info_cap_sparse_mmap sm;

			if (len - off < sizeof(sm))
				return -EPROTO;
			memcpy(&sm, b + off, sizeof(sm));
			if (sm.nr_areas > (len - off - sizeof(sm)) / sizeof(struct vfio_region_sparse_mmap_area))
				return -EPROTO;
			if (sm.nr_areas > VFIO_SPARSE_MAX)
				return -E2BIG;
			for (uint32_t i = 0; i < sm.nr_areas; i++) {
				struct vfio_region_sparse_mmap_area a;

				memcpy(&a, b + off + sizeof(sm) + i * sizeof(a), sizeof(a));
				if (a.offset > kri.size || a.size > kri.size - a.offset)
					return -EPROTO;
				info->sparse[i].offset = a.offset;
				info->sparse[i].size = a.size;
			}
			info->nr_sparse = sm.nr_areas;
		}
		off = h.next;
	}
	return 0;
}

int vfio_pci_parse_iommu(const void *buf, size_t len, struct vfio_iommu_info *info)
{
	const uint8_t *b = buf;
	struct vfio_iommu_type1_info ki;
	uint32_t off;
	int hops = 0;

	if (len < sizeof(ki))
		return -EPROTO;
	memcpy(&ki, b, sizeof(ki));
	memset(info, 0, sizeof(*info));
	info->pgsize_mask = (ki.flags & VFIO_IOMMU_INFO_PGSIZES) ? ki.iova_pgsizes : 4096;
	/* no IOVA-range capability: the whole 64-bit space */
	info->nr_ranges = 1;
	info->ranges[0].start = 0;
	info->ranges[0].end = UINT64_MAX;
	if (!(ki.flags & VFIO_IOMMU_INFO_CAPS))
		return 0;
	for (off = ki.cap_offset; off; hops++) {
		struct vfio_info_cap_header h;

		if (hops > 16 || off < sizeof(ki) || off > len || len - off < sizeof(h))
			return -EPROTO;
		memcpy(&h, b + off, sizeof(h));
		if (h.id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
			struct vfio_iommu_type1_info_cap_iova_range r;
			uint32_t n;

			if (len - off < sizeof(r))
				return -EPROTO;
			memcpy(&r, b + off, sizeof(r));
			if (r.nr_iovas > (len - off - sizeof(r)) / sizeof(struct vfio_iova_range))
				return -EPROTO;
			/* keep the first VFIO_IOVA_RANGES_MAX: using fewer is safe */
			n = r.nr_iovas < VFIO_IOVA_RANGES_MAX ? r.nr_iovas : VFIO_IOVA_RANGES_MAX;
			for (uint32_t i = 0; i < n; i++) {
				struct vfio_iova_range ir;

				memcpy(&ir, b + off + sizeof(r) + i * sizeof(ir), sizeof(ir));
				info->ranges[i].start = ir.start;
				info->ranges[i].end = ir.end;
			}
			info->nr_ranges = n;
		} else if (h.id == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL) {
			struct vfio_iommu_type1_info_dma_avail a;

			if (len - off < sizeof(a))
				return -EPROTO;
			memcpy(&a, b + off, sizeof(a));
			info->max_mappings = a.avail;
		}
		off = h.next;
	}
	return 0;
}

/* ---- discovery half (no ioctls; unit-tested on a fake tree) -------------- */

int vfio_pci_locate(const struct pci_paths *p, const char *bdf_in, char *group_path, size_t len,
		    int *group, char *why, size_t why_len)
{
	char bdf[PCI_BDF_LEN], path[512];
	struct pci_dev_desc d;
	struct stat st;
	int g;

	if (pci_bdf_normalize(bdf_in, bdf)) {
		snprintf(why, why_len, "'%s' is not a PCI address (expected DDDD:BB:DD.F)", bdf_in);
		return -EINVAL;
	}
	snprintf(path, sizeof(path), "%s/vfio/vfio", p->dev);
	if (stat(path, &st)) {
		snprintf(why, why_len, "no VFIO in this kernel (%s missing): load vfio-pci (modprobe vfio-pci)",
			 path);
		return -ENOENT;
	}
	if (pci_describe(p, bdf, &d)) {
		snprintf(why, why_len, "no PCI device %s", bdf);
		return -ENODEV;
	}
	g = pci_iommu_group(p, bdf);
	if (g < 0) {
		snprintf(why, why_len,
			 "%s has no IOMMU group: no IOMMU; enable intel_iommu=on / amd_iommu=on on the kernel command line",
			 bdf);
		return -ENOENT;
	}
	if (strcmp(d.driver, "vfio-pci")) {
		snprintf(why, why_len, "%s is bound to %s, not vfio-pci: ugpuctl bind %s", bdf,
			 d.driver[0] ? d.driver : "no driver", bdf);
		return -EBUSY;
	}
	snprintf(group_path, len, "%s/vfio/%d", p->dev, g);
	*group = g;
	return 0;
}

/* ---- errors ---------------------------------------------------------------- */

int vfio_pci_kernel_err(struct vfio_dev *dev, int err)
{
	if (err <= 0)
		err = EIO; /* a caller bug; never report success for a failure */
	if (err == ENODEV && !vfio_dev_is_gone(dev)) {
		log_err(dev->ctx, "%s: the kernel says the device is gone (ENODEV)", dev->name);
		vfio_dev_set_gone(dev);
	}
	return -err;
}

/* ---- ops ------------------------------------------------------------------ */

static int vp_region_info(struct vfio_dev *dev, uint32_t index, struct vfio_dev_region_info *info)
{
	if (!info)
		return -EINVAL;
	if (index >= dev->num_regions) {
		memset(info, 0, sizeof(*info));
		info->index = index;
		return 0;
	}
	*info = to_vp(dev)->regions[index];
	return 0;
}

static int vp_region_check(struct vp_dev *vp, uint32_t index, uint64_t off, size_t len,
			   uint32_t need)
{
	const struct vfio_dev_region_info *ri;

	if (index >= vp->dev.num_regions)
		return -EINVAL;
	ri = &vp->regions[index];
	if (!(ri->flags & need) || off > ri->size || len > ri->size - off)
		return -EINVAL;
	return 0;
}

/* One pread/pwrite for 1/2/4/8 bytes (one device access); loop otherwise. */
static int vp_rw(struct vp_dev *vp, uint32_t index, uint64_t off, void *buf, size_t len, bool wr)
{
	size_t done = 0;
	int ret = vp_region_check(vp, index, off, len, wr ? VFIO_REGION_F_WRITE : VFIO_REGION_F_READ);

	if (ret)
		return ret;
	if (vfio_dev_is_gone(&vp->dev))
		return -ENODEV;
	while (done < len) {
		off_t pos = (off_t)(vp->region_off[index] + off + done);
		ssize_t n = wr ? pwrite(vp->device, (const uint8_t *)buf + done, len - done, pos)
			       : pread(vp->device, (uint8_t *)buf + done, len - done, pos);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = vfio_pci_kernel_err(&vp->dev, errno);
			log_err(vp->dev.ctx, "%s: %s region %u at 0x%" PRIx64 " (%zu bytes) failed: %s",
				vp->dev.name, wr ? "write to" : "read of", index, off + done, len - done,
				strerror(-ret));
			return ret;
		}
		if (n == 0)
			return -EIO;
		done += (size_t)n;
	}
	return 0;
}

static int vp_region_read(struct vfio_dev *dev, uint32_t index, uint64_t off, void *buf, size_t len)
{
	return buf || !len ? vp_rw(to_vp(dev), index, off, buf, len, false) : -EINVAL;
}

static int vp_region_write(struct vfio_dev *dev, uint32_t index, uint64_t off, const void *buf,
			   size_t len)
{
	return buf || !len ? vp_rw(to_vp(dev), index, off, (void *)buf, len, true) : -EINVAL;
}

static int vp_region_fd(struct vfio_dev *dev, uint32_t index, int *fd, uint64_t *fd_off)
{
	struct vp_dev *vp = to_vp(dev);

	if (!fd || !fd_off || index >= VP_MAX_REGIONS || index >= dev->num_regions)
		return -EINVAL;
	if (!(vp->regions[index].flags & VFIO_REGION_F_MMAP))
		return -ENOTSUP;
	*fd = vp->device;
	*fd_off = vp->region_off[index];
	return 0;
}

static int vp_region_mmap(struct vfio_dev *dev, uint32_t index, uint64_t off, size_t len, int prot,
			  void **addr)
{
	struct vp_dev *vp = to_vp(dev);
	void *p;
	int ret;

	if (!addr || index >= dev->num_regions || index >= VP_MAX_REGIONS)
		return -EINVAL;
	ret = vfio_region_mmap_check(dev, &vp->regions[index], off, len);
	if (ret)
		return ret;
	if (vfio_dev_is_gone(dev))
		return -ENODEV;
	p = mmap(NULL, len, prot, MAP_SHARED, vp->device, (off_t)(vp->region_off[index] + off));
	if (p == MAP_FAILED) {
		int err = vfio_pci_kernel_err(dev, errno);

		log_err(dev->ctx, "%s: mmap of region %u failed: %s", dev->name, index, strerror(-err));
		return err;
	}
	ret = vfio_mmap_track(&vp->mmaps, &vp->lock, p, len);
	if (ret) {
		munmap(p, len);
		return ret;
	}
	*addr = p;
	return 0;
}

static int vp_region_munmap(struct vfio_dev *dev, void *addr, size_t len)
{
	struct vp_dev *vp = to_vp(dev);

	return vfio_mmap_untrack(&vp->mmaps, &vp->lock, addr, len);
}

static int vp_irq_info(struct vfio_dev *dev, uint32_t index, struct vfio_dev_irq_info *info)
{
	if (!info)
		return -EINVAL;
	if (index >= dev->num_irqs) {
		memset(info, 0, sizeof(*info));
		info->index = index;
		return 0;
	}
	*info = to_vp(dev)->irqs[index];
	return 0;
}

static int vp_set_irqs(struct vfio_dev *dev, uint32_t index, uint32_t start, uint32_t count,
		       const int *fds)
{
	struct vp_dev *vp = to_vp(dev);
	struct vfio_irq_set *s;
	size_t sz = sizeof(*s) + sizeof(int32_t) * count;
	int ret = 0;

	if (index >= dev->num_irqs)
		return -EINVAL;
	if (count && (!fds || start > vp->irqs[index].count || count > vp->irqs[index].count - start))
		return -EINVAL;
	if (count && vfio_dev_is_gone(dev))
		return -ENODEV; /* disabling still goes to the kernel */
	s = calloc(1, sz);
	if (!s)
		return -ENOMEM;
	s->argsz = (uint32_t)sz;
	s->index = index;
	s->start = start;
	s->count = count;
	/* count 0 + DATA_NONE disables the index; -1 in the array disconnects
	 * that vector (the kernel understands -1 here) */
	s->flags = VFIO_IRQ_SET_ACTION_TRIGGER | (count ? VFIO_IRQ_SET_DATA_EVENTFD : VFIO_IRQ_SET_DATA_NONE);
	if (count)
		memcpy(s->data, fds, sizeof(int32_t) * count);
	if (ioctl(vp->device, VFIO_DEVICE_SET_IRQS, s)) {
		ret = vfio_pci_kernel_err(dev, errno);
		log_err(dev->ctx, "%s: SET_IRQS index %u [%u+%u] failed: %s", dev->name, index, start,
			count, strerror(-ret));
	}
	free(s);
	return ret;
}

static int vp_iommu_info(struct vfio_dev *dev, struct vfio_iommu_info *info)
{
	if (!info)
		return -EINVAL;
	*info = to_vp(dev)->iommu;
	return 0;
}

static bool vp_iova_ok(const struct vfio_iommu_info *io, uint64_t iova, uint64_t size)
{
	for (uint32_t i = 0; i < io->nr_ranges; i++)
		if (iova >= io->ranges[i].start && iova + size - 1 <= io->ranges[i].end)
			return true;
	return false;
}

static int vp_dma_map(struct vfio_dev *dev, uint64_t iova, uint64_t size, void *vaddr, int fd,
		      uint64_t fd_off, uint32_t prot)
{
	struct vp_dev *vp = to_vp(dev);
	uint64_t align = vp->iommu.pgsize_mask & -vp->iommu.pgsize_mask;
	struct vfio_iommu_type1_dma_map m = {
		.argsz = sizeof(m),
		.flags = ((prot & VFIO_DMA_READ) ? VFIO_DMA_MAP_FLAG_READ : 0) |
			 ((prot & VFIO_DMA_WRITE) ? VFIO_DMA_MAP_FLAG_WRITE : 0),
		.vaddr = (uintptr_t)vaddr,
		.iova = iova,
		.size = size,
	};
	char why[384];
	int ret;

	(void)fd;
	(void)fd_off; /* type1 pins by virtual address */
	if (!vaddr || !size || iova + size < iova || ((iova | size | (uintptr_t)vaddr) & (align - 1)) ||
	    !m.flags) {
		log_err(dev->ctx, "%s: MAP_DMA iova 0x%" PRIx64 " size 0x%" PRIx64 ": needs a vaddr, prot, and 0x%" PRIx64 " alignment",
			dev->name, iova, size, align);
		return -EINVAL;
	}
	if (!vp_iova_ok(&vp->iommu, iova, size)) {
		log_err(dev->ctx, "%s: MAP_DMA iova 0x%" PRIx64 "+0x%" PRIx64 " is outside the IOMMU's usable ranges",
			dev->name, iova, size);
		return -EINVAL;
	}
	if (vfio_dev_is_gone(dev))
		return -ENODEV;
	pthread_mutex_lock(&vp->lock);
	ret = vfio_check_memlock(vp->mapped_bytes + size, why, sizeof(why));
	pthread_mutex_unlock(&vp->lock);
	if (ret) {
		log_err(dev->ctx, "%s: %s", dev->name, why);
		return ret;
	}
	if (ioctl(vp->container, VFIO_IOMMU_MAP_DMA, &m)) {
		ret = vfio_pci_kernel_err(dev, errno);
		if (ret == -ENOSPC)
			log_err(dev->ctx, "%s: MAP_DMA: no DMA mappings left (DMA_AVAIL, %u at open); merge mappings",
				dev->name, vp->iommu.max_mappings);
		else
			log_err(dev->ctx, "%s: MAP_DMA iova 0x%" PRIx64 "+0x%" PRIx64 " failed: %s",
				dev->name, iova, size, strerror(-ret));
		return ret;
	}
	pthread_mutex_lock(&vp->lock);
	vp->mapped_bytes += size;
	pthread_mutex_unlock(&vp->lock);
	return 0;
}

static int vp_dma_unmap(struct vfio_dev *dev, uint64_t iova, uint64_t size, uint64_t *unmapped)
{
	struct vp_dev *vp = to_vp(dev);
	struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof(u), .iova = iova, .size = size };
	int ret = 0;

	if (!unmapped || !size)
		return -EINVAL;
	*unmapped = 0;
	if (ioctl(vp->container, VFIO_IOMMU_UNMAP_DMA, &u)) {
		ret = vfio_pci_kernel_err(dev, errno);
		log_err(dev->ctx, "%s: UNMAP_DMA iova 0x%" PRIx64 "+0x%" PRIx64 " failed: %s", dev->name,
			iova, size, strerror(-ret));
		return ret;
	}
	/* the kernel writes back how much it really unmapped */
	*unmapped = u.size;
	pthread_mutex_lock(&vp->lock);
	vp->mapped_bytes -= u.size < vp->mapped_bytes ? u.size : vp->mapped_bytes;
	pthread_mutex_unlock(&vp->lock);
	return 0;
}

static int vp_reset(struct vfio_dev *dev)
{
	struct vp_dev *vp = to_vp(dev);

	if (!(vp->flags & VFIO_DEVICE_FLAGS_RESET))
		return -ENOTSUP;
	if (vfio_dev_is_gone(dev))
		return -ENODEV;
	return ioctl(vp->device, VFIO_DEVICE_RESET) ? vfio_pci_kernel_err(dev, errno) : 0;
}

static int vp_feature(struct vp_dev *vp, uint32_t flags, const void *data, size_t len)
{
	uint8_t buf[sizeof(struct vfio_device_feature) + 16];
	struct vfio_device_feature *f = (struct vfio_device_feature *)buf;

	memset(buf, 0, sizeof(buf));
	f->argsz = (uint32_t)(sizeof(*f) + len);
	f->flags = flags;
	if (len)
		memcpy(f->data, data, len);
	if (vfio_dev_is_gone(&vp->dev))
		return -ENODEV;
	return ioctl(vp->device, VFIO_DEVICE_FEATURE, f) ? vfio_pci_kernel_err(&vp->dev, errno) : 0;
}

static int vp_low_power_enter(struct vfio_dev *dev, int wake_fd)
{
	struct vp_dev *vp = to_vp(dev);
	int ret;

	if (wake_fd >= 0) {
		struct vfio_device_low_power_entry_with_wakeup w = { .wakeup_eventfd = wake_fd };

		if (!vp->lp_wakeup)
			return -ENOTSUP;
		ret = vp_feature(vp, VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP,
				 &w, sizeof(w));
	} else {
		if (!vp->lp_entry)
			return -ENOTSUP;
		ret = vp_feature(vp, VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY, NULL, 0);
	}
	if (ret)
		log_err(dev->ctx, "%s: LOW_POWER_ENTRY failed: %s", dev->name, strerror(-ret));
	return ret;
}

static int vp_low_power_exit(struct vfio_dev *dev)
{
	struct vp_dev *vp = to_vp(dev);

	if (!vp->lp_exit)
		return -ENOTSUP;
	return vp_feature(vp, VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_LOW_POWER_EXIT, NULL, 0);
}

static void vp_close(struct vfio_dev *dev)
{
	struct vp_dev *vp = to_vp(dev);

	if (!dev)
		return;
	vfio_mmap_release_all(&vp->mmaps);
	/* closing the device and group fds drops the DMA mappings with the
	 * container; the kernel needs nothing from the device for that */
	if (vp->device >= 0)
		close(vp->device);
	if (vp->group >= 0)
		close(vp->group);
	if (vp->container >= 0)
		close(vp->container);
	pthread_mutex_destroy(&vp->lock);
	free(vp);
}

static const struct vfio_transport_ops vp_ops = {
	.name = "vfio-pci",
	.close = vp_close,
	.region_info = vp_region_info,
	.region_read = vp_region_read,
	.region_write = vp_region_write,
	.region_mmap = vp_region_mmap,
	.region_fd = vp_region_fd,
	.region_munmap = vp_region_munmap,
	.irq_info = vp_irq_info,
	.set_irqs = vp_set_irqs,
	.iommu_info = vp_iommu_info,
	.dma_map = vp_dma_map,
	.dma_unmap = vp_dma_unmap,
	.reset = vp_reset,
	.low_power_enter = vp_low_power_enter,
	.low_power_exit = vp_low_power_exit,
};

/* ---- open ----------------------------------------------------------------- */

/* An ioctl that returns an info struct with caps: grow until argsz fits. */
static int vp_info_ioctl(int fd, unsigned long req, void *head, size_t head_len, void **out,
			 size_t *out_len)
{
	uint32_t argsz = (uint32_t)head_len;
	uint8_t *buf = NULL;

	for (int i = 0; i < 3; i++) {
		uint8_t *nb = realloc(buf, argsz);

		if (!nb) {
			free(buf);
			return -ENOMEM;
		}
		buf = nb;
		memset(buf, 0, argsz);
		memcpy(buf, head, head_len);
		memcpy(buf, &argsz, sizeof(argsz)); /* every VFIO info struct starts with argsz */
		if (ioctl(fd, req, buf)) {
			int err = -errno;

			free(buf);
			return err;
		}
		uint32_t need;

		memcpy(&need, buf, sizeof(need));
		if (need <= argsz || need > VP_INFO_MAX) {
			*out = buf;
			*out_len = argsz;
			return 0;
		}
		argsz = need;
	}
	free(buf);
	return -EPROTO;
}

static int vp_open_fd(struct ugpu_context *ctx, const struct pci_paths *p, const char *path, int *fd)
{
	char who[256];

	*fd = open(path, O_RDWR | O_CLOEXEC);
	if (*fd >= 0)
		return 0;
	if (errno == EACCES || errno == EPERM) {
		log_err(ctx, "vfio-pci: cannot open %s: permission denied; run as root or give this user the file (chown/udev rule)",
			path);
		return -EPERM;
	}
	if (errno == EBUSY) {
		if (pci_path_holders(p, path, who, sizeof(who)) > 0)
			log_err(ctx, "vfio-pci: %s is in use by %s: one process owns a device (stop it, or use the daemon)",
				path, who);
		else
			log_err(ctx, "vfio-pci: %s is in use by another process: one process owns a device (stop it, or use the daemon)",
				path);
		return -EBUSY;
	}
	log_err(ctx, "vfio-pci: cannot open %s: %s", path, strerror(errno));
	return -errno;
}

static void vp_probe_low_power(struct vp_dev *vp)
{
	uint32_t probe = VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET;

	vp->lp_entry = vp_feature(vp, probe | VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY, NULL, 0) == 0;
	vp->lp_wakeup = vp_feature(vp, probe | VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP, NULL, 0) == 0;
	vp->lp_exit = vp_feature(vp, probe | VFIO_DEVICE_FEATURE_LOW_POWER_EXIT, NULL, 0) == 0;
}

/*
 * The open sequence. @share: NULL for a container of the device's own; else
 * a device whose container the group joins (type1 then already has its
 * IOMMU set, and the mappings made through either device are one IOVA
 * space).
 */
static int vp_open(struct ugpu_context *ctx, const struct pci_paths *p, const char *bdf_in,
		   struct vp_dev *share, struct vfio_dev **out)
{
	char bdf[PCI_BDF_LEN], gpath[512], cpath[512], why[640];
	struct vfio_group_status gs = { .argsz = sizeof(gs) };
	struct vfio_device_info di = { .argsz = sizeof(di) };
	struct vfio_iommu_type1_info ii = { .argsz = sizeof(ii) };
	struct vp_dev *vp;
	void *buf;
	size_t len;
	int ret, g;

	if (!p || !out)
		return -EINVAL;
	ret = vfio_pci_locate(p, bdf_in, gpath, sizeof(gpath), &g, why, sizeof(why));
	if (ret) {
		log_err(ctx, "vfio-pci: %s", why);
		return ret;
	}
	pci_bdf_normalize(bdf_in, bdf);
	vp = calloc(1, sizeof(*vp));
	if (!vp)
		return -ENOMEM;
	vp->dev.ops = &vp_ops;
	vp->dev.ctx = ctx;
	snprintf(vp->dev.name, sizeof(vp->dev.name), "%s", bdf);
	vp->container = vp->group = vp->device = -1;
	vp->group_id = g;
	pthread_mutex_init(&vp->lock, NULL);

	snprintf(cpath, sizeof(cpath), "%s/vfio/vfio", p->dev);
	if (share) {
		if (share->group_id == g) {
			log_err(ctx, "vfio-pci: %s is in IOMMU group %d with %s: a group is opened once",
				bdf, g, share->dev.name);
			ret = -EBUSY;
			goto out_close;
		}
		/* our own reference: @share may close first */
		vp->container = fcntl(share->container, F_DUPFD_CLOEXEC, 0);
		ret = vp->container < 0 ? -errno : 0;
	} else {
		ret = vp_open_fd(ctx, p, cpath, &vp->container);
	}
	if (ret)
		goto out_close;
	ret = ioctl(vp->container, VFIO_GET_API_VERSION);
	if (ret != VFIO_API_VERSION) {
		log_err(ctx, "vfio-pci: %s is not a VFIO container of API %d (got %d: %s)", cpath,
			VFIO_API_VERSION, ret, ret < 0 ? strerror(errno) : "wrong version");
		ret = ret < 0 ? -errno : -EPROTO;
		goto out_close;
	}
	if (ioctl(vp->container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) <= 0) {
		log_err(ctx, "vfio-pci: the kernel has no type1v2 IOMMU backend (load vfio_iommu_type1)");
		ret = -ENOTSUP;
		goto out_close;
	}
	ret = vp_open_fd(ctx, p, gpath, &vp->group);
	if (ret)
		goto out_close;
	if (ioctl(vp->group, VFIO_GROUP_GET_STATUS, &gs)) {
		ret = -errno;
		log_err(ctx, "vfio-pci: GROUP_GET_STATUS on %s: %s", gpath, strerror(-ret));
		goto out_close;
	}
	if (!(gs.flags & VFIO_GROUP_FLAGS_VIABLE)) {
		if (pci_group_check(p, bdf, why, sizeof(why)) == 0)
			snprintf(why, sizeof(why), "IOMMU group %d of %s is not viable: bind every device of the group to vfio-pci",
				 g, bdf);
		log_err(ctx, "vfio-pci: %s", why);
		ret = -EBUSY;
		goto out_close;
	}
	if (ioctl(vp->group, VFIO_GROUP_SET_CONTAINER, &vp->container)) {
		ret = -errno;
		log_err(ctx, "vfio-pci: GROUP_SET_CONTAINER: %s", strerror(-ret));
		goto out_close;
	}
	if (!share && ioctl(vp->container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)) {
		ret = -errno;
		log_err(ctx, "vfio-pci: SET_IOMMU(type1v2): %s", strerror(-ret));
		goto out_close;
	}
	ret = vp_info_ioctl(vp->container, VFIO_IOMMU_GET_INFO, &ii, sizeof(ii), &buf, &len);
	if (ret) {
		log_err(ctx, "vfio-pci: IOMMU_GET_INFO: %s", strerror(-ret));
		goto out_close;
	}
	ret = vfio_pci_parse_iommu(buf, len, &vp->iommu);
	free(buf);
	if (ret) {
		log_err(ctx, "vfio-pci: IOMMU_GET_INFO capabilities are malformed");
		goto out_close;
	}
	vp->device = ioctl(vp->group, VFIO_GROUP_GET_DEVICE_FD, bdf);
	if (vp->device < 0) {
		ret = -errno;
		log_err(ctx, "vfio-pci: GET_DEVICE_FD(%s): %s", bdf, strerror(-ret));
		goto out_close;
	}
	if (ioctl(vp->device, VFIO_DEVICE_GET_INFO, &di)) {
		ret = -errno;
		log_err(ctx, "vfio-pci: DEVICE_GET_INFO(%s): %s", bdf, strerror(-ret));
		goto out_close;
	}
	vp->flags = di.flags;
	vp->dev.num_regions = di.num_regions < VP_MAX_REGIONS ? di.num_regions : VP_MAX_REGIONS;
	vp->dev.num_irqs = di.num_irqs < VP_MAX_IRQS ? di.num_irqs : VP_MAX_IRQS;
	for (uint32_t i = 0; i < vp->dev.num_regions; i++) {
		struct vfio_region_info kri = { .argsz = sizeof(kri), .index = i };

		ret = vp_info_ioctl(vp->device, VFIO_DEVICE_GET_REGION_INFO, &kri, sizeof(kri), &buf, &len);
		if (ret == -EINVAL) { /* e.g. VGA region on a non-VGA device: absent */
			vp->regions[i].index = i;
			continue;
		}
		if (ret) {
			log_err(ctx, "vfio-pci: GET_REGION_INFO(%u): %s", i, strerror(-ret));
			goto out_close;
		}
		ret = vfio_pci_parse_region(buf, len, &vp->regions[i], &vp->region_off[i]);
		free(buf);
		if (ret) {
			log_err(ctx, "vfio-pci: region %u capabilities are malformed", i);
			goto out_close;
		}
	}
	for (uint32_t i = 0; i < vp->dev.num_irqs; i++) {
		struct vfio_irq_info kii = { .argsz = sizeof(kii), .index = i };

		if (ioctl(vp->device, VFIO_DEVICE_GET_IRQ_INFO, &kii)) {
			vp->irqs[i].index = i;
			continue;
		}
		vp->irqs[i] = (struct vfio_dev_irq_info){ .index = i, .count = kii.count, .flags = kii.flags };
	}
	vp_probe_low_power(vp);
	*out = &vp->dev;
	return 0;

out_close:
	vp_close(&vp->dev);
	return ret;
}

int vfio_pci_open_paths(struct ugpu_context *ctx, const struct pci_paths *p, const char *bdf,
			struct vfio_dev **out)
{
	return vp_open(ctx, p, bdf, NULL, out);
}

int vfio_pci_open_shared(struct ugpu_context *ctx, const char *bdf, struct vfio_dev *with,
			 struct vfio_dev **out)
{
	if (!with || with->ops != &vp_ops)
		return -EINVAL;
	return vp_open(ctx, &pci_default_paths, bdf, to_vp(with), out);
}

int vfio_pci_open(struct ugpu_context *ctx, const char *bdf, struct vfio_dev **out)
{
	return vfio_pci_open_paths(ctx, &pci_default_paths, bdf, out);
}
