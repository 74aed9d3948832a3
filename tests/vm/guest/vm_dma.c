/* SPDX-License-Identifier: MIT */
/*
 * Guest test "dma": device DMA through the kernel vfio-pci transport, with a
 * real (virtual) IOMMU enforcing the mappings.
 *
 *  - iommu_info: IOVA ranges (edu's 256 MiB window inside one), page sizes,
 *    the DMA_AVAIL mapping limit;
 *  - dma_map of a memfd-backed buffer (sysmem); edu copies RAM -> edu -> RAM
 *    (2 KiB at IOVA 1 MiB), completion MSI delivered to an eventfd through
 *    set_irqs; data byte-exact;
 *  - dma_unmap reports the whole size unmapped; a partial unmap of a mapping
 *    is refused (type1v2 does not split) and leaves it whole;
 *  - the IOMMU blocks DMA to an IOVA never mapped and to one just unmapped:
 *    the memory behind it does not change;
 *  - peer to peer: the ivshmem BAR2 mmap is dma_map'ed for edu, which reads
 *    it and writes it; the host checks the written part in its file;
 *  - the driver's DMA space (vfio/dma.h) on top of this transport: an
 *    allocated IOVA edu can reach, a round trip through it, a clean unmap and
 *    nothing left mapped at fini;
 *  - reset of a device without one (edu) is -ENOTSUP.
 */
#include "base/sysmem.h"
#include "vfio/dma.h"
#include "vm_dev.h"

#define BUF_IOVA (1ull << 20)
#define BUF_SIZE (16u << 10)
#define P2P_IOVA (64ull << 20)
#define P2P_SIZE (2u << 20)
#define P2P_SEED 0x50325057ull /* "P2PW" */

static struct vfio_dev *edu;
static int msi_fd = -1;

/* One edu transfer, reported; returns true when the engine completed. */
static bool dma(uint64_t src, uint64_t dst, bool to_ram, bool want_irq, const char *what)
{
	return vm_edu_xfer(edu, msi_fd, src, dst, to_ram, want_irq, what);
}

static void check_iommu_info(void)
{
	struct vfio_iommu_info info;
	bool edu_window = false;
	int rc;

	memset(&info, 0, sizeof(info));
	rc = edu->ops->iommu_info(edu, &info);
	VM_REQUIRE(rc == 0, "iommu_info -> %d", rc);
	vm_note("iommu: page sizes %#llx, max mappings %u, %u IOVA range(s)",
		(unsigned long long)info.pgsize_mask, info.max_mappings, info.nr_ranges);
	for (uint32_t i = 0; i < info.nr_ranges && i < VFIO_IOVA_RANGES_MAX; i++) {
		vm_note("  range %u: %#llx-%#llx", i, (unsigned long long)info.ranges[i].start,
			(unsigned long long)info.ranges[i].end);
		if (info.ranges[i].start <= BUF_IOVA && info.ranges[i].end >= EDU_IOVA_LIMIT - 1)
			edu_window = true;
	}
	VM_CHECK(info.pgsize_mask & 4096, "4 KiB IOMMU pages supported");
	VM_CHECK(info.nr_ranges >= 1, "at least one IOVA range");
	VM_CHECK(edu_window, "[1 MiB, 256 MiB) (edu's DMA window) is inside one IOVA range");
	VM_CHECK(info.max_mappings > 0, "DMA_AVAIL reported: %u mappings", info.max_mappings);
}

/* RAM -> edu -> RAM, then IOMMU enforcement, on a memfd-backed buffer. */
static void check_ram_dma(void)
{
	struct sysmem mem;
	uint8_t *b;
	uint64_t unmapped = 0;
	bool same, untouched;
	int rc;

	rc = sysmem_create(NULL, BUF_SIZE, "vm-dma", &mem);
	VM_REQUIRE(rc == 0, "sysmem_create(16 KiB) -> %d", rc);
	b = mem.vaddr;
	for (uint32_t i = 0; i < 4096; i++)
		b[i] = (uint8_t)(i * 7 + 3);
	rc = edu->ops->dma_map(edu, BUF_IOVA, BUF_SIZE, b, mem.fd, 0, VFIO_DMA_READ | VFIO_DMA_WRITE);
	VM_REQUIRE(rc == 0, "dma_map(memfd buffer, iova %#llx, 16 KiB) -> %d", BUF_IOVA, rc);

	if (dma(BUF_IOVA, EDU_BUF, false, true, "RAM->edu") &&
	    dma(EDU_BUF, BUF_IOVA + 4096, true, true, "edu->RAM")) {
		same = memcmp(b, b + 4096, EDU_XFER_MAX) == 0;
		untouched = true;
		for (uint32_t i = EDU_XFER_MAX; i < 4096; i++)
			untouched &= b[4096 + i] == 0;
		VM_CHECK(same && untouched,
			 "round trip RAM->edu->RAM: %u bytes identical, nothing past them written",
			 EDU_XFER_MAX);
	}

	/* Never mapped: the vIOMMU faults the write; the mapped buffer stays as it was. */
	memset(b + 8192, 0xee, 4096);
	dma(EDU_BUF, 8ull << 20, true, false, "edu->unmapped IOVA 8 MiB");
	untouched = true;
	for (uint32_t i = 0; i < 4096; i++)
		untouched &= b[8192 + i] == 0xee;
	VM_CHECK(untouched, "DMA to a never-mapped IOVA changed no mapped memory");

	/* type1v2 unmaps whole mappings only: a middle page is refused. */
	rc = edu->ops->dma_unmap(edu, BUF_IOVA + 4096, 4096, &unmapped);
	VM_CHECK(rc < 0 || unmapped == 0,
		 "partial dma_unmap of one page inside the mapping refused (rc %d, unmapped %llu)", rc,
		 (unsigned long long)unmapped);

	unmapped = 0;
	rc = edu->ops->dma_unmap(edu, BUF_IOVA, BUF_SIZE, &unmapped);
	VM_CHECK(rc == 0 && unmapped == BUF_SIZE, "dma_unmap -> %d, %llu bytes unmapped (want %u)",
		 rc, (unsigned long long)unmapped, BUF_SIZE);

	/* Just unmapped: the old IOVA no longer reaches the buffer. */
	memset(b + 4096, 0, 4096);
	dma(EDU_BUF, BUF_IOVA + 4096, true, false, "edu->IOVA after its unmap");
	untouched = true;
	for (uint32_t i = 0; i < 4096; i++)
		untouched &= b[4096 + i] == 0;
	VM_CHECK(untouched, "DMA to an unmapped IOVA did not reach the buffer (IOMMU enforces)");
	sysmem_destroy(&mem);
}

/* edu reads and writes the ivshmem BAR through the IOMMU (peer to peer). */
static void check_p2p(const char *shm_bdf)
{
	struct vfio_dev *shm = vm_open_as(shm_bdf, VM_IVSHMEM_ID, "ivshmem-plain");
	struct sysmem mem;
	volatile uint8_t *win;
	uint64_t *ram, unmapped = 0;
	void *bar = NULL;
	size_t bad;
	int rc;

	rc = sysmem_create(NULL, 8192, "vm-p2p", &mem);
	VM_REQUIRE(rc == 0, "sysmem_create(8 KiB) -> %d", rc);
	ram = mem.vaddr;
	rc = edu->ops->dma_map(edu, BUF_IOVA, 8192, ram, mem.fd, 0, VFIO_DMA_READ | VFIO_DMA_WRITE);
	VM_REQUIRE(rc == 0, "dma_map(RAM buffer) -> %d", rc);
	rc = shm->ops->region_mmap(shm, VFIO_REGION_BAR2, 0, VM_SHM_SIZE, PROT_READ | PROT_WRITE,
				   &bar);
	VM_REQUIRE(rc == 0, "region_mmap(ivshmem BAR2) -> %d", rc);
	win = (volatile uint8_t *)bar + VM_SHM_P2P_OFF;

	/* Another device's BAR mapping as DMA memory: the type1 way to P2P. */
	rc = edu->ops->dma_map(edu, P2P_IOVA, P2P_SIZE, (void *)win, -1, 0,
			       VFIO_DMA_READ | VFIO_DMA_WRITE);
	if (VM_CHECK(rc == 0, "dma_map of the ivshmem BAR2 mmap (2 MiB) for edu at iova %#llx -> %d",
		     P2P_IOVA, rc)) {
		/* peer read: ivshmem -> edu -> RAM */
		for (uint32_t i = 0; i < EDU_XFER_MAX; i++)
			win[0x10000 + i] = (uint8_t)(0xa5 ^ (i * 13));
		if (dma(P2P_IOVA + 0x10000, EDU_BUF, false, true, "P2P ivshmem->edu") &&
		    dma(EDU_BUF, BUF_IOVA, true, true, "edu->RAM")) {
			bad = 0;
			for (uint32_t i = 0; i < EDU_XFER_MAX; i++)
				bad += ((uint8_t *)ram)[i] != (uint8_t)(0xa5 ^ (i * 13));
			VM_CHECK(bad == 0, "P2P read: the ivshmem bytes reached RAM (%zu differ)", bad);
		}
		/* peer write: RAM -> edu -> ivshmem, then checked by mmap and by the host */
		for (uint32_t i = 0; i < EDU_XFER_MAX / 8; i++)
			ram[512 + i] = vm_pattern(P2P_SEED, i);
		if (dma(BUF_IOVA + 4096, EDU_BUF, false, true, "RAM->edu") &&
		    dma(EDU_BUF, P2P_IOVA + 0x20000, true, true, "P2P edu->ivshmem")) {
			bad = 0;
			for (uint32_t i = 0; i < EDU_XFER_MAX / 8; i++)
				bad += ((volatile uint64_t *)(win + 0x20000))[i] != vm_pattern(P2P_SEED, i);
			VM_CHECK(bad == 0, "P2P write: edu's data visible through the BAR2 mmap (%zu differ)",
				 bad);
			vm_host("check-vram %#llx %#x %#llx", VM_SHM_P2P_OFF + 0x20000, EDU_XFER_MAX,
				P2P_SEED);
		}
		rc = edu->ops->dma_unmap(edu, P2P_IOVA, P2P_SIZE, &unmapped);
		VM_CHECK(rc == 0 && unmapped == P2P_SIZE, "dma_unmap of the P2P window -> %d, %llu bytes",
			 rc, (unsigned long long)unmapped);
	}
	rc = edu->ops->dma_unmap(edu, BUF_IOVA, 8192, &unmapped);
	VM_CHECK(rc == 0 && unmapped == 8192, "dma_unmap of the RAM buffer -> %d", rc);
	VM_CHECK(shm->ops->region_munmap(shm, bar, VM_SHM_SIZE) == 0, "region_munmap(ivshmem BAR2)");
	sysmem_destroy(&mem);
	shm->ops->close(shm);
}

/* The DMA space the rest of the driver uses, over the kernel transport. */
static void check_dma_space(void)
{
	struct dma_space space;
	struct sysmem mem;
	uint64_t iova = 0;
	uint8_t *b;
	int rc;

	rc = dma_space_init(NULL, edu, &space);
	VM_REQUIRE(rc == 0, "dma_space_init over vfio-pci -> %d", rc);
	rc = sysmem_create(NULL, 8192, "vm-dma-space", &mem);
	VM_REQUIRE(rc == 0, "sysmem_create(8 KiB) -> %d", rc);
	b = mem.vaddr;
	for (uint32_t i = 0; i < EDU_XFER_MAX; i++)
		b[i] = (uint8_t)(i * 29 + 1);
	rc = dma_map_sysmem(&space, &mem, VFIO_DMA_READ | VFIO_DMA_WRITE, &iova);
	if (VM_CHECK(rc == 0 && iova + 8192 <= EDU_IOVA_LIMIT,
		     "dma_map_sysmem -> %d, iova %#llx (edu reaches < 256 MiB)", rc,
		     (unsigned long long)iova)) {
		if (dma(iova, EDU_BUF, false, true, "dma space: RAM->edu") &&
		    dma(EDU_BUF, iova + 4096, true, true, "dma space: edu->RAM"))
			VM_CHECK(memcmp(b, b + 4096, EDU_XFER_MAX) == 0,
				 "round trip through a dma-space IOVA: %u bytes identical", EDU_XFER_MAX);
		rc = dma_unmap(&space, iova, 8192);
		VM_CHECK(rc == 0, "dma_unmap -> %d", rc);
	}
	rc = dma_space_fini(&space);
	VM_CHECK(rc == 0, "dma_space_fini: %d mapping(s) left", rc);
	sysmem_destroy(&mem);
}

int main(void)
{
	const char *edu_bdf = vm_bdf("UGPU_VM_EDU");
	const char *shm_bdf = getenv("UGPU_VM_SHM");
	uint32_t id = 0, live = 0;
	int rc;

	edu = vm_open_as(edu_bdf, VM_EDU_ID, "edu");
	check_iommu_info();

	rc = vfio_read32(edu, VFIO_REGION_BAR0, EDU_REG_ID, &id);
	VM_REQUIRE(rc == 0 && (id & 0xffff) == 0x00ed, "edu identification register %#010x (rc %d)",
		   id, rc);
	rc = vfio_write32(edu, VFIO_REGION_BAR0, EDU_REG_LIVE, 0x12345678);
	rc = rc ? rc : vfio_read32(edu, VFIO_REGION_BAR0, EDU_REG_LIVE, &live);
	VM_CHECK(rc == 0 && live == ~0x12345678u, "edu liveness register inverts (%#x)", live);
	VM_REQUIRE(vm_enable_bus_master(edu) == 0, "bus mastering on through the config region");

	msi_fd = eventfd(0, EFD_CLOEXEC);
	VM_REQUIRE(msi_fd >= 0, "eventfd");
	rc = edu->ops->set_irqs(edu, VFIO_IRQ_MSI, 0, 1, &msi_fd);
	VM_REQUIRE(rc == 0, "set_irqs(MSI, vector 0 -> eventfd) -> %d", rc);

	check_ram_dma();
	if (shm_bdf && *shm_bdf)
		check_p2p(shm_bdf);
	else
		vm_note("UGPU_VM_SHM unset: peer-to-peer part not run");

	check_dma_space();

	rc = edu->ops->reset(edu);
	VM_CHECK(rc == -ENOTSUP, "reset of edu (which has none) -> %d (%s), want -ENOTSUP", rc,
		 rc ? strerror(-rc) : "ok");
	VM_CHECK(edu->ops->set_irqs(edu, VFIO_IRQ_MSI, 0, 0, NULL) == 0, "set_irqs(MSI, count 0) disables");
	edu->ops->close(edu);
	close(msi_fd);
	return vm_finish();
}
