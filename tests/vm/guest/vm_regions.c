/* SPDX-License-Identifier: MIT */
/*
 * Guest test "regions": the kernel vfio-pci transport opens real devices
 * (container, group, type1) and describes them right; the ivshmem BAR2 mmap
 * reaches the host's memory.
 *
 *  - vfio_pci_open() of ivshmem-plain and edu; counts of regions and irqs;
 *  - region_info of every region: sizes and flags of the BARs and config
 *    space, sparse areas (if any) inside their region;
 *  - config space through region_read: the expected vendor/device ids;
 *  - irq_info: ivshmem-plain has INTx and one REQ vector, no MSI;
 *    edu has MSI;
 *  - BAR2 mmap of ivshmem: the pattern the host wrote into the memory-backend
 *    file before boot is there (mmap and region_read agree), and a pattern
 *    written through the mmap reads back through region_read and is checked
 *    by the host in the file after the run (@@HOST check-vram);
 *  - bad calls fail cleanly: an unknown region index is an error or an absent
 *    region, a read past a region's end and an mmap of the (non-mappable)
 *    config region are errors.
 */
#include "vm_dev.h"

#define GUEST_SEED 0x5245474eull /* "REGN" */

static const char *region_name(uint32_t i)
{
	static const char *const names[] = { "BAR0", "BAR1", "BAR2", "BAR3", "BAR4",
					     "BAR5", "ROM",  "CONFIG", "VGA" };

	return i < sizeof(names) / sizeof(names[0]) ? names[i] : "?";
}

/* Vectors of irq @index; a failing irq_info is a failed check and counts 0. */
static uint32_t irq_count(struct vfio_dev *dev, uint32_t index)
{
	struct vfio_dev_irq_info ii;
	int rc;

	memset(&ii, 0, sizeof(ii));
	rc = dev->ops->irq_info(dev, index, &ii);
	if (!VM_CHECK(rc == 0, "%s irq_info(%u) -> %d", dev->name, index, rc))
		return 0;
	VM_CHECK(ii.index == index, "irq_info(%u) reports index %u", index, ii.index);
	return ii.count;
}

/* Describe every region; returns BAR/config info through @out (VFIO_REGION_MAX). */
static void check_regions(struct vfio_dev *dev, struct vfio_dev_region_info *out)
{
	for (uint32_t i = 0; i < dev->num_regions && i < VFIO_REGION_MAX; i++) {
		struct vfio_dev_region_info *ri = &out[i];
		int rc;

		memset(ri, 0, sizeof(*ri));
		rc = dev->ops->region_info(dev, i, ri);
		if (!VM_CHECK(rc == 0, "%s region_info(%u %s) -> %d", dev->name, i, region_name(i), rc))
			continue;
		VM_CHECK(ri->index == i, "region %u reports index %u", i, ri->index);
		if (!ri->size)
			continue;
		vm_note("%s region %u (%s): size %#llx flags%s%s%s, %u sparse area(s)", dev->name, i,
			region_name(i), (unsigned long long)ri->size,
			ri->flags & VFIO_REGION_F_READ ? " READ" : "",
			ri->flags & VFIO_REGION_F_WRITE ? " WRITE" : "",
			ri->flags & VFIO_REGION_F_MMAP ? " MMAP" : "", ri->nr_sparse);
		VM_CHECK(ri->nr_sparse <= VFIO_SPARSE_MAX, "region %u: sparse count %u bounded", i,
			 ri->nr_sparse);
		for (uint32_t s = 0; s < ri->nr_sparse && s < VFIO_SPARSE_MAX; s++) {
			const struct vfio_sparse_area *a = &ri->sparse[s];

			vm_note("  sparse %u: %#llx+%#llx", s, (unsigned long long)a->offset,
				(unsigned long long)a->size);
			VM_CHECK(a->size && a->offset + a->size <= ri->size,
				 "region %u sparse area %u lies inside the region", i, s);
		}
	}
}

static void check_ivshmem_info(struct vfio_dev *dev, const struct vfio_dev_region_info *r)
{
	const uint32_t rw = VFIO_REGION_F_READ | VFIO_REGION_F_WRITE;
	uint32_t id = vm_cfg_id(dev), n;

	VM_CHECK(r[VFIO_REGION_BAR0].size == 256 && (r[VFIO_REGION_BAR0].flags & rw) == rw,
		 "ivshmem BAR0 (registers): 256 bytes, read/write");
	VM_CHECK(r[VFIO_REGION_BAR2].size == VM_SHM_SIZE &&
			 (r[VFIO_REGION_BAR2].flags & (rw | VFIO_REGION_F_MMAP)) ==
				 (rw | VFIO_REGION_F_MMAP),
		 "ivshmem BAR2 (shared memory): 64 MiB, read/write/mmap (size %#llx flags %#x)",
		 (unsigned long long)r[VFIO_REGION_BAR2].size, r[VFIO_REGION_BAR2].flags);
	VM_CHECK(r[VFIO_REGION_CONFIG].size >= 256 &&
			 (r[VFIO_REGION_CONFIG].flags & rw) == rw &&
			 !(r[VFIO_REGION_CONFIG].flags & VFIO_REGION_F_MMAP),
		 "config region: >= 256 bytes, read/write, not mmap-able (size %#llx)",
		 (unsigned long long)r[VFIO_REGION_CONFIG].size);
	VM_CHECK(id == VM_IVSHMEM_ID, "ivshmem config ids %#010x", id);

	vm_note("ivshmem INTx: %u vector(s)", irq_count(dev, VFIO_IRQ_INTX));
	n = irq_count(dev, VFIO_IRQ_MSI);
	VM_CHECK(n == 0, "ivshmem-plain has no MSI (count %u)", n);
	n = irq_count(dev, VFIO_IRQ_REQ);
	VM_CHECK(n == 1, "ivshmem REQ (removal request): 1 vector (count %u)", n);
}

static void check_edu_info(struct vfio_dev *dev, const struct vfio_dev_region_info *r)
{
	uint32_t id = vm_cfg_id(dev), n;

	VM_CHECK(r[VFIO_REGION_BAR0].size == (1u << 20) &&
			 (r[VFIO_REGION_BAR0].flags & VFIO_REGION_F_MMAP),
		 "edu BAR0: 1 MiB, mmap-able (size %#llx flags %#x)",
		 (unsigned long long)r[VFIO_REGION_BAR0].size, r[VFIO_REGION_BAR0].flags);
	VM_CHECK(id == VM_EDU_ID, "edu config ids %#010x", id);
	n = irq_count(dev, VFIO_IRQ_MSI);
	VM_CHECK(n >= 1, "edu MSI: %u vector(s)", n);
	n = irq_count(dev, VFIO_IRQ_MSIX);
	VM_CHECK(n == 0, "edu has no MSI-X (count %u)", n);
}

/* Bad calls get an error, not a crash. */
static void check_bad_calls(struct vfio_dev *dev, const struct vfio_dev_region_info *r)
{
	struct vfio_dev_region_info ri;
	uint32_t v;
	void *p = NULL;
	int rc;

	memset(&ri, 0xff, sizeof(ri));
	rc = dev->ops->region_info(dev, 1000, &ri);
	VM_CHECK(rc < 0 || ri.size == 0, "region_info(index 1000): error or absent (rc %d, size %#llx)",
		 rc, rc ? 0ull : (unsigned long long)ri.size);
	rc = dev->ops->region_read(dev, VFIO_REGION_BAR0, r[VFIO_REGION_BAR0].size, &v, sizeof(v));
	VM_CHECK(rc < 0, "region_read past the end of BAR0 fails -> %d", rc);
	rc = dev->ops->region_mmap(dev, VFIO_REGION_CONFIG, 0, 4096, PROT_READ, &p);
	VM_CHECK(rc < 0, "region_mmap of the config region fails -> %d", rc);
	if (rc == 0)
		dev->ops->region_munmap(dev, p, 4096);
}

/* Compare @n words at @off of BAR2 read through region_read with vm_pattern(seed). */
static size_t region_read_mismatches(struct vfio_dev *dev, uint64_t off, size_t n, uint64_t seed)
{
	static uint64_t chunk[8192];
	size_t bad = 0;

	for (size_t i = 0; i < n; i += 8192) {
		size_t k = n - i < 8192 ? n - i : 8192;
		int rc = dev->ops->region_read(dev, VFIO_REGION_BAR2, off + 8 * i, chunk, 8 * k);

		if (rc)
			return n;
		for (size_t j = 0; j < k; j++)
			bad += chunk[j] != vm_pattern(seed, i + j);
	}
	return bad;
}

static void check_bar2(struct vfio_dev *dev)
{
	volatile uint64_t *m = NULL;
	void *p = NULL;
	size_t n, bad = 0;
	double t0;
	int rc;

	rc = dev->ops->region_mmap(dev, VFIO_REGION_BAR2, 0, VM_SHM_SIZE, PROT_READ | PROT_WRITE,
				   &p);
	if (!VM_CHECK(rc == 0 && p, "region_mmap(BAR2, 64 MiB) -> %d", rc))
		return;
	m = p;

	/* Host -> guest: what the host wrote into the file before boot. */
	n = VM_SHM_HOST_LEN / 8;
	for (size_t i = 0; i < n; i++)
		bad += m[VM_SHM_HOST_OFF / 8 + i] != vm_pattern(VM_SHM_HOST_SEED, i);
	VM_CHECK(bad == 0, "host's pattern at %#llx seen through the BAR2 mmap (%zu/%zu words differ)",
		 VM_SHM_HOST_OFF, bad, n);
	bad = region_read_mismatches(dev, VM_SHM_HOST_OFF, n, VM_SHM_HOST_SEED);
	VM_CHECK(bad == 0, "host's pattern read through region_read (%zu/%zu words differ)", bad, n);

	/* Guest -> host: write through the mapping, read back both ways. */
	n = VM_SHM_GUEST_LEN / 8;
	t0 = vm_now();
	for (size_t i = 0; i < n; i++)
		m[VM_SHM_GUEST_OFF / 8 + i] = vm_pattern(GUEST_SEED, i);
	bad = 0;
	for (size_t i = 0; i < n; i++)
		bad += m[VM_SHM_GUEST_OFF / 8 + i] != vm_pattern(GUEST_SEED, i);
	VM_CHECK(bad == 0, "wrote and read back %llu MiB through the BAR2 mmap in %.2f s",
		 VM_SHM_GUEST_LEN >> 20, vm_now() - t0);
	t0 = vm_now();
	bad = region_read_mismatches(dev, VM_SHM_GUEST_OFF, n, GUEST_SEED);
	VM_CHECK(bad == 0, "region_read of the same %llu MiB agrees in %.2f s (%zu words differ)",
		 VM_SHM_GUEST_LEN >> 20, vm_now() - t0, bad);
	vm_host("check-vram %#llx %#llx %#llx", VM_SHM_GUEST_OFF, VM_SHM_GUEST_LEN, GUEST_SEED);

	/* region_write lands in the same memory the mapping shows. */
	{
		uint64_t w = 0xfeedc0dedeadbeefull;

		rc = dev->ops->region_write(dev, VFIO_REGION_BAR2, VM_SHM_HOST_OFF - 8, &w, 8);
		VM_CHECK(rc == 0 && m[VM_SHM_HOST_OFF / 8 - 1] == w,
			 "region_write of BAR2 is visible through the mmap");
	}
	rc = dev->ops->region_munmap(dev, p, VM_SHM_SIZE);
	VM_CHECK(rc == 0, "region_munmap(BAR2) -> %d", rc);
}

int main(void)
{
	const char *shm_bdf = vm_bdf("UGPU_VM_SHM");
	const char *edu_bdf = vm_bdf("UGPU_VM_EDU");
	struct vfio_dev_region_info r[VFIO_REGION_MAX];
	struct vfio_dev *shm, *edu;

	shm = vm_open_as(shm_bdf, VM_IVSHMEM_ID, "ivshmem-plain");
	VM_CHECK(strcmp(shm->ops->name, "vfio-pci") == 0, "transport is \"%s\"", shm->ops->name);
	VM_CHECK(shm->num_regions >= VFIO_REGION_MAX && shm->num_irqs >= VFIO_IRQ_MAX,
		 "ivshmem: %u regions, %u irq indexes", shm->num_regions, shm->num_irqs);
	check_regions(shm, r);
	check_ivshmem_info(shm, r);
	check_bad_calls(shm, r);
	check_bar2(shm);

	/* A second device, in its own group, open at the same time. */
	edu = vm_open_as(edu_bdf, VM_EDU_ID, "edu");
	VM_CHECK(edu->num_regions >= VFIO_REGION_MAX && edu->num_irqs >= VFIO_IRQ_MAX,
		 "edu: %u regions, %u irq indexes", edu->num_regions, edu->num_irqs);
	check_regions(edu, r);
	check_edu_info(edu, r);
	edu->ops->close(edu);
	shm->ops->close(shm);
	return vm_finish();
}
