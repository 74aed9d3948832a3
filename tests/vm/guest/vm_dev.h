/* SPDX-License-Identifier: MIT */
/*
 * Device helpers for the guest tests, all through the driver's transport
 * (vfio/transport.h): opening, config space, and QEMU's edu device.
 */
#ifndef UGPU_TESTS_VM_GUEST_VM_DEV_H
#define UGPU_TESTS_VM_GUEST_VM_DEV_H

#include <sys/eventfd.h>
#include <sys/mman.h>

#include "vfio/transport.h"
#include "vm_test.h"

#define VM_IVSHMEM_ID 0x11101af4u /* device << 16 | vendor */
#define VM_EDU_ID 0x11e81234u

/* PCI config space (offsets inside the config region). */
#define VM_PCI_COMMAND 0x04
#define VM_PCI_COMMAND_MEMORY (1u << 1)
#define VM_PCI_COMMAND_MASTER (1u << 2)

/*
 * QEMU's edu device (docs/specs/edu.rst in QEMU): BAR0 registers, a 4 KiB
 * buffer at 0x40000 that DMA moves to/from a bus address, an MSI on
 * completion. Its DMA mask is 28 bits: bus addresses must be below 256 MiB.
 * QEMU 7.2 aborts the VM on a transfer that ends exactly at the end of the
 * buffer (an off-by-one in edu_check_range), so transfers stay at 2 KiB.
 * Every transfer takes ~100 ms (a timer in the model).
 */
#define EDU_REG_ID 0x00 /* 0x010000ed */
#define EDU_REG_LIVE 0x04 /* reads back the complement of what was written */
#define EDU_REG_IRQ_STATUS 0x24
#define EDU_REG_IRQ_ACK 0x64
#define EDU_REG_DMA_SRC 0x80
#define EDU_REG_DMA_DST 0x88
#define EDU_REG_DMA_CNT 0x90
#define EDU_REG_DMA_CMD 0x98
#define EDU_BUF 0x40000
#define EDU_CMD_RUN 1u
#define EDU_CMD_TO_RAM 2u /* edu buffer -> bus address; else bus address -> buffer */
#define EDU_CMD_IRQ 4u
#define EDU_IOVA_LIMIT (256ull << 20)
#define EDU_XFER_MAX 2048u

/* Open @bdf through the kernel vfio-pci transport, or stop the test. */
static inline struct vfio_dev *vm_open(const char *bdf)
{
	struct vfio_dev *dev = NULL;
	double t0 = vm_now();
	int rc = vfio_pci_open(NULL, bdf, &dev);

	VM_REQUIRE(rc == 0 && dev, "vfio_pci_open(%s) -> %d (%s) in %.0f ms", bdf, rc,
		   rc ? strerror(-rc) : "ok", (vm_now() - t0) * 1e3);
	return dev;
}

static inline uint32_t vm_cfg_id(struct vfio_dev *dev);

/*
 * Open @bdf and make sure it is the device the test is written for (@id:
 * device << 16 | vendor); anything else is a skip, so a test run on a real
 * machine never writes patterns into some other device's BAR.
 */
static inline struct vfio_dev *vm_open_as(const char *bdf, uint32_t id, const char *what)
{
	struct vfio_dev *dev = vm_open(bdf);
	uint32_t got = vm_cfg_id(dev);

	if (got != id) {
		dev->ops->close(dev);
		printf("  SKIP %s is %04x:%04x, not %s (%04x:%04x)\n", bdf, got & 0xffff, got >> 16,
		       what, id & 0xffff, id >> 16);
		fflush(stdout);
		exit(77);
	}
	return dev;
}

static inline int vm_cfg_read16(struct vfio_dev *dev, uint32_t off, uint16_t *val)
{
	return dev->ops->region_read(dev, VFIO_REGION_CONFIG, off, val, sizeof(*val));
}

static inline int vm_cfg_write16(struct vfio_dev *dev, uint32_t off, uint16_t val)
{
	return dev->ops->region_write(dev, VFIO_REGION_CONFIG, off, &val, sizeof(val));
}

/* vendor | device << 16 from config space, 0 on error. */
static inline uint32_t vm_cfg_id(struct vfio_dev *dev)
{
	uint32_t id = 0;

	if (dev->ops->region_read(dev, VFIO_REGION_CONFIG, 0, &id, sizeof(id)))
		return 0;
	return id;
}

/* Bus mastering is off after vfio-pci binds: a DMA device needs it on. */
static inline int vm_enable_bus_master(struct vfio_dev *dev)
{
	uint16_t cmd;
	int rc = vm_cfg_read16(dev, VM_PCI_COMMAND, &cmd);

	if (rc)
		return rc;
	rc = vm_cfg_write16(dev, VM_PCI_COMMAND,
			    cmd | VM_PCI_COMMAND_MASTER | VM_PCI_COMMAND_MEMORY);
	if (rc)
		return rc;
	rc = vm_cfg_read16(dev, VM_PCI_COMMAND, &cmd);
	if (rc)
		return rc;
	return (cmd & VM_PCI_COMMAND_MASTER) ? 0 : -EIO;
}

/*
 * One edu transfer of @cnt bytes from @src to @dst (one of them EDU_BUF),
 * waiting at most 3 s for the completion MSI on @msi_fd (-1: poll only) and
 * for the RUN bit to clear. *irq_seen tells whether the MSI came.
 * Returns 0, -ETIMEDOUT when the engine never finished, or a transport -errno.
 */
static inline int vm_edu_dma(struct vfio_dev *dev, int msi_fd, uint64_t src, uint64_t dst,
			     uint32_t cnt, bool to_ram, bool *irq_seen, double *ms)
{
	uint64_t ev = 0;
	uint32_t cmd = EDU_CMD_RUN | EDU_CMD_IRQ | (to_ram ? EDU_CMD_TO_RAM : 0);
	uint32_t status = 0;
	double t0;
	int rc;

	*irq_seen = false;
	/* 4-byte writes: the addresses are below 4 GiB, and edu takes them whole. */
	if ((rc = vfio_write32(dev, VFIO_REGION_BAR0, EDU_REG_DMA_SRC, (uint32_t)src)) ||
	    (rc = vfio_write32(dev, VFIO_REGION_BAR0, EDU_REG_DMA_DST, (uint32_t)dst)) ||
	    (rc = vfio_write32(dev, VFIO_REGION_BAR0, EDU_REG_DMA_CNT, cnt)))
		return rc;
	t0 = vm_now();
	rc = vfio_write32(dev, VFIO_REGION_BAR0, EDU_REG_DMA_CMD, cmd);
	if (rc)
		return rc;
	if (msi_fd >= 0)
		*irq_seen = vm_wait_eventfd(msi_fd, 3000, &ev) == 0;
	for (;;) {
		rc = vfio_read32(dev, VFIO_REGION_BAR0, EDU_REG_DMA_CMD, &cmd);
		if (rc)
			return rc;
		if (!(cmd & EDU_CMD_RUN))
			break;
		if (vm_now() - t0 > 3.0)
			return -ETIMEDOUT;
		usleep(5000);
	}
	*ms = (vm_now() - t0) * 1e3;
	rc = vfio_read32(dev, VFIO_REGION_BAR0, EDU_REG_IRQ_STATUS, &status);
	if (rc)
		return rc;
	return vfio_write32(dev, VFIO_REGION_BAR0, EDU_REG_IRQ_ACK, status);
}

/*
 * One edu transfer of EDU_XFER_MAX bytes, reported as a check named @what:
 * the engine must finish; the completion MSI must arrive when @want_irq
 * (else it is only noted: a transfer the IOMMU blocked may or may not
 * raise it). Returns true when the engine finished.
 */
static inline bool vm_edu_xfer(struct vfio_dev *edu, int msi_fd, uint64_t src, uint64_t dst,
			       bool to_ram, bool want_irq, const char *what)
{
	bool irq;
	double ms = 0;
	int rc = vm_edu_dma(edu, msi_fd, src, dst, EDU_XFER_MAX, to_ram, &irq, &ms);

	if (!VM_CHECK(rc == 0, "%s: %#llx -> %#llx, %u bytes, engine done in %.0f ms (rc %d)", what,
		      (unsigned long long)src, (unsigned long long)dst, EDU_XFER_MAX, ms, rc))
		return false;
	if (want_irq)
		VM_CHECK(irq, "%s: completion MSI arrived on the eventfd", what);
	else
		vm_note("%s: completion MSI %s", what, irq ? "arrived" : "did not arrive");
	return true;
}

#endif
