/* SPDX-License-Identifier: MIT */
/*
 * The VFIO transport table: how the driver speaks to one PCI device.
 *
 * Two implementations fill it: kernel vfio-pci (vfio/vfio_pci.c, legacy
 * container/group + type1; an iommufd/cdev variant can be added as a third
 * table) and the vfio-user client (vfio/vfio_user.c). Nothing above
 * vfio/ knows which one it is talking to: it holds a struct vfio_dev and
 * calls through dev->ops.
 *
 * Every call returns 0 or a negative errno. -ENODEV means the device is gone
 * (removed, server dead); -ETIMEDOUT means it did not answer within the
 * transport's bound; -EPROTO means it answered nonsense. No call blocks
 * without a bound.
 */
#ifndef UGPU_VFIO_TRANSPORT_H
#define UGPU_VFIO_TRANSPORT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ugpu_context;
struct vfio_dev;

/* VFIO PCI region and irq indexes (same numbers as linux/vfio.h). */
enum {
	VFIO_REGION_BAR0 = 0,
	VFIO_REGION_BAR2 = 2,
	VFIO_REGION_CONFIG = 7,
	VFIO_REGION_MAX = 9,
};
enum {
	VFIO_IRQ_INTX = 0,
	VFIO_IRQ_MSI = 1,
	VFIO_IRQ_MSIX = 2,
	VFIO_IRQ_ERR = 3,
	VFIO_IRQ_REQ = 4,
	VFIO_IRQ_MAX = 5,
};

#define VFIO_REGION_F_READ (1u << 0)
#define VFIO_REGION_F_WRITE (1u << 1)
#define VFIO_REGION_F_MMAP (1u << 2)

#define VFIO_SPARSE_MAX 8

struct vfio_sparse_area {
	uint64_t offset;
	uint64_t size;
};

struct vfio_dev_region_info {
	uint32_t index;
	uint32_t flags; /* VFIO_REGION_F_* */
	uint64_t size; /* 0: region absent */
	/* Sparse mmap capability: only these parts may be mmap'd. nr == 0 with
	 * VFIO_REGION_F_MMAP means the whole region may. */
	uint32_t nr_sparse;
	struct vfio_sparse_area sparse[VFIO_SPARSE_MAX];
};

struct vfio_dev_irq_info {
	uint32_t index;
	uint32_t count; /* vectors; 0: not supported */
	uint32_t flags; /* VFIO_IRQ_INFO_* bits as the kernel defines them */
};

/* What the IOMMU behind the device allows. */
#define VFIO_IOVA_RANGES_MAX 8
struct vfio_iommu_info {
	uint64_t pgsize_mask; /* supported page sizes; smallest is the alignment */
	uint32_t max_mappings; /* DMA_AVAIL / max_dma_maps; 0 = unknown */
	uint32_t nr_ranges;
	struct {
		uint64_t start;
		uint64_t end; /* inclusive, as the kernel reports it */
	} ranges[VFIO_IOVA_RANGES_MAX];
};

#define VFIO_DMA_READ (1u << 0) /* device may read */
#define VFIO_DMA_WRITE (1u << 1) /* device may write */

/*
 * struct vfio_transport_ops - one transport's implementation.
 *
 * All members are required unless marked "may be NULL". Calls on one
 * vfio_dev may come from several threads: each implementation serialises what
 * it must internally and says how next to its own struct.
 */
struct vfio_transport_ops {
	/* Name for logs: "vfio-pci", "vfio-user". */
	const char *name;
	/* Release everything: unmap mmaps made through region_mmap that are still
	 * there, disable irqs, close fds, free @dev. Never needs the device to
	 * answer (a dead device still closes). */
	void (*close)(struct vfio_dev *dev);
	/* Region description (size 0 when the device has no such region). */
	int (*region_info)(struct vfio_dev *dev, uint32_t index, struct vfio_dev_region_info *info);
	/* Read/write @len bytes at @off; 1/2/4/8-byte accesses are single
	 * device accesses, longer ones may be split. */
	int (*region_read)(struct vfio_dev *dev, uint32_t index, uint64_t off, void *buf, size_t len);
	int (*region_write)(struct vfio_dev *dev, uint32_t index, uint64_t off, const void *buf,
			    size_t len);
	/* A write of 1-8 bytes the caller does not wait for, as PCI posts a
	 * memory write: 0 once it is on its way (-ENODEV when the device is
	 * gone, -EINVAL for a bad access). The device applies it in order
	 * with every access of this transport that follows; an error the
	 * device meets is not reported (it drops the write, as a PCI device
	 * does): the caller learns what happened from a register read or a
	 * fence. Only for writes whose effect is observed that way (a
	 * doorbell). Optional: NULL where region_write is as cheap (vfio-pci:
	 * a pwrite the kernel turns into a posted MMIO write);
	 * vfio_write32_posted() falls back to it. */
	int (*region_write_posted)(struct vfio_dev *dev, uint32_t index, uint64_t off,
				   const void *buf, size_t len);
	/* Map [off, off+len) of a mappable region; *addr gets the mapping. */
	int (*region_mmap)(struct vfio_dev *dev, uint32_t index, uint64_t off, size_t len, int prot,
			   void **addr);
	int (*region_munmap)(struct vfio_dev *dev, void *addr, size_t len);
	/* The fd and fd offset through which region @index can be mmap'd (the
	 * byte at region offset X is at *fd_off + X of *fd). The fd stays owned
	 * by the transport and valid until close(). Used by CPU mappings that
	 * must re-map pieces of VRAM themselves. -ENOTSUP for a region that is
	 * not mmap-able. */
	int (*region_fd)(struct vfio_dev *dev, uint32_t index, int *fd, uint64_t *fd_off);
	int (*irq_info)(struct vfio_dev *dev, uint32_t index, struct vfio_dev_irq_info *info);
	/* Route vectors [start, start+count) of irq @index to eventfds; an fd of
	 * -1 disconnects that vector; count 0 disables the whole index. */
	int (*set_irqs)(struct vfio_dev *dev, uint32_t index, uint32_t start, uint32_t count,
			const int *fds);
	int (*iommu_info)(struct vfio_dev *dev, struct vfio_iommu_info *info);
	/* Make [vaddr, vaddr+size) reachable by the device at @iova. @fd/@fd_off
	 * name the same memory for transports that pass memory by fd (vfio-user);
	 * fd -1 means "no fd" (vfio-user then serves DMA in-band). vfio-pci
	 * ignores the fd and pins @vaddr. -ENOSPC at the IOMMU's mapping limit
	 * (DMA_AVAIL / max_dma_maps), -EEXIST when @iova overlaps a mapping. */
	int (*dma_map)(struct vfio_dev *dev, uint64_t iova, uint64_t size, void *vaddr, int fd,
		       uint64_t fd_off, uint32_t prot);
	/* Unmap; *unmapped gets the bytes the IOMMU actually unmapped (callers
	 * check it: a partial unmap is an error). vfio-user unmaps whole
	 * mappings only: a range that would split one is -EINVAL. */
	int (*dma_unmap)(struct vfio_dev *dev, uint64_t iova, uint64_t size, uint64_t *unmapped);
	/* Function-level reset; -ENOTSUP when the device has none. */
	int (*reset)(struct vfio_dev *dev);
	/* Kernel low-power state (VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY/EXIT). May
	 * be NULL: the transport has none and callers use PCI PM through config
	 * space. @wake_fd: eventfd signalled when the kernel wakes the device
	 * itself, or -1. */
	int (*low_power_enter)(struct vfio_dev *dev, int wake_fd);
	int (*low_power_exit)(struct vfio_dev *dev);
};

/*
 * struct vfio_dev - the common head of every transport's device struct.
 * Implementations embed it first and own everything else.
 */
struct vfio_dev {
	const struct vfio_transport_ops *ops;
	/* Set (never cleared) once the transport knows the device is gone: the
	 * server hung up, the kernel reported removal, reads return all-ones.
	 * Every later call fails with -ENODEV. Read with vfio_dev_is_gone(). */
	int gone;
	struct ugpu_context *ctx; /* for logs; may be NULL */
	char name[64]; /* "vfio-user:/path" or "0000:00:03.0" */
	uint32_t num_regions;
	uint32_t num_irqs;
};

static inline bool vfio_dev_is_gone(struct vfio_dev *dev)
{
	return __atomic_load_n(&dev->gone, __ATOMIC_ACQUIRE) != 0;
}

static inline void vfio_dev_set_gone(struct vfio_dev *dev)
{
	__atomic_store_n(&dev->gone, 1, __ATOMIC_RELEASE);
}

/*
 * Common region-mmap bookkeeping (vfio/transport.c), shared by the
 * transports so the rules and the cleanup are written once.
 *
 * vfio_region_mmap_check() - may [@off, @off + @len) of the region @ri
 * describes be mmap'd? Page-aligned, inside the region, mappable, and inside
 * one sparse-mmap area when the region has them. Logs why not.
 * Returns: 0 or -EINVAL.
 *
 * struct vfio_mmap_rec - one mapping a transport handed out, so close() can
 * undo what the caller left. The list is protected by the transport's lock,
 * passed in.
 */
struct vfio_mmap_rec {
	void *addr;
	size_t len;
	struct vfio_mmap_rec *next;
};

int vfio_region_mmap_check(struct vfio_dev *dev, const struct vfio_dev_region_info *ri,
			   uint64_t off, size_t len);
/* Record a mapping. Returns 0 or -ENOMEM (the caller then unmaps it). */
int vfio_mmap_track(struct vfio_mmap_rec **head, pthread_mutex_t *lock, void *addr, size_t len);
/* Forget and munmap a recorded mapping. Returns 0, or -EINVAL when @addr and
 * @len are not one the transport handed out (nothing is unmapped). */
int vfio_mmap_untrack(struct vfio_mmap_rec **head, pthread_mutex_t *lock, void *addr, size_t len);
/* munmap every recorded mapping (close: no other thread uses the device). */
void vfio_mmap_release_all(struct vfio_mmap_rec **head);

/* Open helpers, one per transport. */
int vfio_user_open(struct ugpu_context *ctx, const char *socket_path, struct vfio_dev **out);
int vfio_pci_open(struct ugpu_context *ctx, const char *bdf, struct vfio_dev **out);

/* Convenience wrappers for the common fixed-size accesses. */
int vfio_read32(struct vfio_dev *dev, uint32_t index, uint64_t off, uint32_t *val);
int vfio_write32(struct vfio_dev *dev, uint32_t index, uint64_t off, uint32_t val);
/* A posted 4-byte write (region_write_posted, or region_write where the
 * transport has none). */
int vfio_write32_posted(struct vfio_dev *dev, uint32_t index, uint64_t off, uint32_t val);
int vfio_read64(struct vfio_dev *dev, uint32_t index, uint64_t off, uint64_t *val);
int vfio_write64(struct vfio_dev *dev, uint32_t index, uint64_t off, uint64_t val);

#endif
