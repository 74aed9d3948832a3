/* SPDX-License-Identifier: MIT */
/*
 * Guest test "peer": the driver's own peer access in place on kernel
 * vfio-pci, with two devices opened through the device layer.
 *
 * Both ivshmem-plain devices are opened with ugpu_device_open("pci:BDF")
 * (profile "ivshmem": VRAM-only) in one context: shm0 (UGPU_VM_SHM) is the
 * exporter, shm1 (UGPU_VM_SHM1) the importer. The driver maps the
 * exporter's VRAM BAR into the importer's DMA space with the functions a
 * peer bind uses (peer_bar_get_locked(), p2p_win_get_locked(), mm/p2p.c):
 * MAP_DMA of the BAR's mmap, which type1 maps by PFN (VM_PFNMAP).
 *
 * ivshmem has no DMA engine, so QEMU's edu stands in for the importer's:
 * it is opened into the importer's container (vfio_pci_open_shared()), one
 * IOVA space behind the vIOMMU, so it reaches exactly what the importer's
 * DMA space maps, at the IOVAs the driver chose:
 *
 *  - edu reads the exporter's VRAM through the window (bytes written by the
 *    CPU through the exporter's own VRAM mapping reach RAM byte-exact) and
 *    writes it (the bytes land in the exporter's VRAM: checked through its
 *    mapping, and by the host in shm0's memory-backend file);
 *  - the importer's CPU engine reads the peer's VRAM through the same
 *    window into its own VRAM (the IOVA path a copy engine takes);
 *  - a BO moves from one device's VRAM to the other's and back with
 *    ugpu_bo_migrate_device(): ivshmem has no fabric, so through system
 *    memory (the staging buffer mapped into both DMA spaces, each device's
 *    CPU engine copying), and UGPU_MIGRATE_DIRECT is -ENOLINK; byte-exact,
 *    in the exporter's VRAM where the host finds it;
 *  - the exporter's close revokes the window (p2p_revoke_exporter()): the
 *    importer's DMA space no longer holds it, its CPU engine refuses the
 *    IOVA, no new window is made onto it, and edu's write to the old IOVA is
 *    blocked by the IOMMU: the exporter's memory does not change (checked
 *    after reopening shm0, and by the host).
 *
 * Its slice of shm0 is VM_SHM_PEER_OFF (vm_test.h; the window checks in
 * its first MiB, the moved BO in its second); of shm1 the first 2 MiB and
 * the moved BO (unplug_bo, which runs later, takes all of shm1 afresh).
 */
#include "vm_dev.h"

#include <ugpu/bo.h>
#include <ugpu/device.h>

#include "mm/bo.h"
#include "mm/p2p.h"
#include "mm/vm.h"
#include "mm/vram.h"
#include "src/device.h"
#include "vfio/vfio_pci.h"

#define PEER_LEN (1ull << 20) /* the window checks' part of the slice */
#define MOVE_LEN (1ull << 20) /* then the moved BO's */
#define RD_OFF 0x0ull /* in the exporter's slice: CPU writes, edu reads */
#define WR_OFF 0x10000ull /* edu writes, then (revoked) tries again */
#define ENG_OFF 0x20000ull /* the importer's CPU engine reads 64 KiB here */
#define ENG_LEN 0x10000ull
#define SEED_RD 0x50455231ull /* "PER1" */
#define SEED_WR 0x50455232ull
#define SEED_LATE 0x50455233ull /* written after the revocation: must not land */
#define SEED_ENG 0x50455234ull
#define SEED_MOVE 0x50455235ull

static struct vfio_dev *edu;
static int msi_fd = -1;
static uint64_t buf[MOVE_LEN / 8];

static bool edu_dma(uint64_t src, uint64_t dst, bool to_ram, bool want_irq, const char *what)
{
	return vm_edu_xfer(edu, msi_fd, src, dst, to_ram, want_irq, what);
}

static bool words_are(const volatile void *p, uint64_t seed, uint64_t len)
{
	const volatile uint64_t *w = p;

	for (uint64_t i = 0; i < len / 8; i++)
		if (w[i] != vm_pattern(seed, i))
			return false;
	return true;
}

static void words_fill(volatile void *p, uint64_t seed, uint64_t len)
{
	volatile uint64_t *w = p;

	for (uint64_t i = 0; i < len / 8; i++)
		w[i] = vm_pattern(seed, i);
}

static struct ugpu_device *open_ivshmem(struct ugpu_context *ctx, const char *bdf)
{
	struct ugpu_device_info info = { .size = sizeof(info) };
	struct ugpu_device *dev;
	struct vfio_dev *probe;
	char uri[64];
	int rc;

	/* never the device layer on anything but ivshmem (this test writes
	 * into its VRAM): another device is a skip */
	probe = vm_open_as(bdf, VM_IVSHMEM_ID, "ivshmem-plain");
	probe->ops->close(probe);
	snprintf(uri, sizeof(uri), "pci:%s", bdf);
	rc = ugpu_device_open(ctx, uri, &dev);
	VM_REQUIRE(rc == 0, "ugpu_device_open(%s) -> %d (%s)", uri, rc, ugpu_strerror(rc));
	rc = ugpu_device_query(dev, &info);
	VM_REQUIRE(rc == 0 && !strcmp(info.profile, "ivshmem") &&
			   !strcmp(info.transport, "vfio-pci"),
		   "%s: profile %s on %s, %llu MiB of VRAM", bdf, info.profile, info.transport,
		   (unsigned long long)(info.vram_size >> 20));
	return dev;
}

/* The window, as a peer bind makes it: the exporter's BAR under its
 * manager lock, then the window under the importer's. */
static int window_get(struct ugpu_device *imp, struct ugpu_device *exp, uint64_t *iova)
{
	void *vaddr = NULL;
	uint64_t fd_off = 0;
	int fd = -1, rc;

	pthread_mutex_lock(&exp->bo_mgr->lock);
	/* as the bind: a closed exporter's transport is gone; the window
	 * layer is still asked, with no BAR, and must refuse */
	rc = exp->bo_mgr->closed ? 0 : peer_bar_get_locked(exp, &vaddr, &fd, &fd_off);
	pthread_mutex_unlock(&exp->bo_mgr->lock);
	if (rc)
		return rc;
	pthread_mutex_lock(&imp->bo_mgr->lock);
	rc = p2p_win_get_locked(imp, exp, vaddr, fd, fd_off, iova);
	pthread_mutex_unlock(&imp->bo_mgr->lock);
	if (fd >= 0)
		close(fd);
	return rc;
}

/* Reserve [@start, @end) of @dev's VRAM so no BO is placed there. */
static void reserve(struct ugpu_device *dev, struct buddy_list *l, uint64_t start, uint64_t end)
{
	int rc = vram_alloc_range(dev, start, end, end - start, 4096, BUDDY_RANGE_ALLOCATION, l);

	VM_REQUIRE(rc == 0, "reserve VRAM [%llu, %llu) MiB of %s -> %d",
		   (unsigned long long)(start >> 20), (unsigned long long)(end >> 20), dev->name, rc);
}

static struct ugpu_bo_info bo_where(struct ugpu_bo *bo)
{
	struct ugpu_bo_info bi = { .size = sizeof(bi) };

	if (ugpu_bo_query(bo, &bi))
		bi.placement = UGPU_PLACEMENT_NONE;
	return bi;
}

/*
 * A BO moves importer -> exporter -> importer by ugpu_bo_migrate_device().
 * The exporter's VRAM outside the move's part of the slice is reserved, so
 * the BO lands there.
 */
static void check_moves(struct ugpu_device *exp, struct ugpu_device *imp)
{
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = MOVE_LEN,
				  .placements = { UGPU_PLACEMENT_VRAM }, .name = "vm-peer-move" };
	struct ugpu_device_mem st = { .size = sizeof(st) };
	const uint64_t lo = VM_SHM_PEER_OFF + PEER_LEN, hi = lo + MOVE_LEN;
	struct buddy_list below, above;
	struct ugpu_bo_info bi;
	struct ugpu_bo *bo;
	int rc;

	buddy_list_init(&below);
	buddy_list_init(&above);
	reserve(exp, &below, 0, VM_SHM_PEER_OFF);
	reserve(exp, &above, hi, exp->vram_size);
	rc = ugpu_bo_create(imp, &o, &bo);
	VM_REQUIRE(rc == 0, "a 1 MiB BO in the importer's VRAM -> %d (%s)", rc, ugpu_strerror(rc));
	words_fill(buf, SEED_MOVE, MOVE_LEN);
	VM_CHECK_RC(ugpu_bo_write(bo, 0, buf, MOVE_LEN), "fill the BO");

	rc = ugpu_bo_migrate_device(bo, exp, UGPU_MIGRATE_DIRECT);
	VM_CHECK(rc == -ENOLINK, "UGPU_MIGRATE_DIRECT between two ivshmem (no fabric) -> %d (%s)",
		 rc, ugpu_strerror(rc));
	rc = ugpu_bo_migrate_device(bo, exp, 0);
	bi = bo_where(bo);
	VM_CHECK(rc == 0 && bi.placement == UGPU_PLACEMENT_VRAM && bi.vram_offset == lo,
		 "moved into the exporter's VRAM through system memory -> %d (at 0x%llx)", rc,
		 (unsigned long long)bi.vram_offset);
	if (!rc && bi.vram_offset == lo) {
		VM_CHECK(words_are((char *)exp->vram + lo, SEED_MOVE, MOVE_LEN),
			 "the BO's bytes are in the exporter's VRAM (read through its mapping)");
		vm_host("check-vram %#llx %#llx %#llx", (unsigned long long)lo,
			(unsigned long long)MOVE_LEN, SEED_MOVE);
	}
	rc = ugpu_device_mem_stats(exp, &st);
	VM_CHECK(rc == 0 && st.peer_in == 1 && st.peer_via_system == 1 && st.peer_bytes == MOVE_LEN,
		 "the exporter counts it: peer_in %llu, via system %llu, %llu bytes",
		 (unsigned long long)st.peer_in, (unsigned long long)st.peer_via_system,
		 (unsigned long long)st.peer_bytes);

	rc = ugpu_bo_migrate_device(bo, imp, 0);
	bi = bo_where(bo);
	VM_CHECK(rc == 0 && bi.placement == UGPU_PLACEMENT_VRAM, "and back to the importer -> %d", rc);
	memset(buf, 0, MOVE_LEN);
	VM_CHECK(ugpu_bo_read(bo, 0, buf, MOVE_LEN) == 0 && words_are(buf, SEED_MOVE, MOVE_LEN),
		 "byte-exact after the round trip");
	ugpu_bo_put(bo);
	vram_free(exp, &below, 0);
	vram_free(exp, &above, 0);
}

static int cpu_copy(struct ugpu_device *dev, struct engine_addr dst, struct engine_addr src,
		    uint64_t len)
{
	uint64_t fence;
	int rc = engine_copy(dev->cpu, dst, src, len, &fence);

	return rc ? rc : engine_wait(dev->cpu, fence, 5000);
}

int main(void)
{
	const char *exp_bdf = vm_bdf("UGPU_VM_SHM");
	const char *imp_bdf = vm_bdf("UGPU_VM_SHM1");
	const char *edu_bdf = vm_bdf("UGPU_VM_EDU");
	struct ugpu_context_opts copts = { .size = sizeof(copts), .log_level = UGPU_LOG_INFO };
	struct ugpu_context *ctx;
	struct ugpu_device *exp, *imp, *again;
	struct buddy_list exp_blocks, imp_blocks;
	struct sysmem ram = { .fd = -1 };
	volatile uint8_t *slice;
	uint64_t win = 0, ram_iova = 0, imp_off, late;
	size_t maps_before;
	void *va;
	uint64_t avail;
	int rc;

	VM_REQUIRE(ugpu_context_create(&copts, &ctx) == 0, "context");
	exp = open_ivshmem(ctx, exp_bdf);
	imp = open_ivshmem(ctx, imp_bdf);

	/* edu in the importer's container: its DMA engine for this test */
	rc = vfio_pci_open_shared(NULL, edu_bdf, imp->vdev, &edu);
	VM_REQUIRE(rc == 0, "vfio_pci_open_shared(%s into %s's container) -> %d (%s)", edu_bdf,
		   imp_bdf, rc, rc ? strerror(-rc) : "ok");
	if (vm_cfg_id(edu) != VM_EDU_ID) {
		edu->ops->close(edu);
		vm_skip("UGPU_VM_EDU is not QEMU's edu");
	}
	VM_REQUIRE(vm_enable_bus_master(edu) == 0, "edu: bus mastering on");
	msi_fd = eventfd(0, EFD_CLOEXEC);
	VM_REQUIRE(msi_fd >= 0 && edu->ops->set_irqs(edu, VFIO_IRQ_MSI, 0, 1, &msi_fd) == 0,
		   "edu: completion MSI -> eventfd");

	/* The driver's VRAM allocators agree on the slices used here. */
	buddy_list_init(&exp_blocks);
	buddy_list_init(&imp_blocks);
	rc = vram_alloc_range(exp, VM_SHM_PEER_OFF, VM_SHM_PEER_OFF + PEER_LEN, PEER_LEN, 4096,
			      BUDDY_RANGE_ALLOCATION | BUDDY_CONTIGUOUS_ALLOCATION, &exp_blocks);
	VM_REQUIRE(rc == 0, "exporter VRAM [%llu, +1) MiB reserved -> %d",
		   (unsigned long long)(VM_SHM_PEER_OFF >> 20), rc);
	rc = vram_alloc_range(imp, 0, PEER_LEN, PEER_LEN, 4096,
			      BUDDY_RANGE_ALLOCATION | BUDDY_CONTIGUOUS_ALLOCATION, &imp_blocks);
	VM_REQUIRE(rc == 0, "importer VRAM [0, 1) MiB reserved -> %d", rc);
	imp_off = buddy_block_offset(buddy_list_first(&imp_blocks));
	slice = (volatile uint8_t *)exp->vram + VM_SHM_PEER_OFF;

	/* A RAM buffer for edu, from the importer's DMA space (the one IOVA
	 * allocator of the container). */
	VM_REQUIRE(sysmem_create(ctx, 8192, "vm-peer", &ram) == 0, "sysmem");
	rc = dma_map_sysmem(&imp->dma, &ram, VFIO_DMA_READ | VFIO_DMA_WRITE, &ram_iova);
	VM_REQUIRE(rc == 0 && ram_iova + ram.size <= EDU_IOVA_LIMIT,
		   "RAM buffer in the importer's DMA space at iova %#llx -> %d",
		   (unsigned long long)ram_iova, rc);

	/* The window. */
	maps_before = dma_space_count(&imp->dma);
	rc = window_get(imp, exp, &win);
	VM_REQUIRE(rc == 0, "the driver maps the exporter's VRAM BAR into the importer's DMA space -> %d (%s)",
		   rc, ugpu_strerror(rc));
	vm_note("window onto %s's VRAM (%llu MiB) at iova %#llx in %s's DMA space", exp_bdf,
		(unsigned long long)(exp->vram_size >> 20), (unsigned long long)win, imp_bdf);
	VM_CHECK(dma_space_count(&imp->dma) == maps_before + 1, "one more IOMMU mapping (%zu -> %zu)",
		 maps_before, dma_space_count(&imp->dma));
	VM_REQUIRE(win + exp->vram_size <= EDU_IOVA_LIMIT,
		   "the window is inside edu's 256 MiB reach (ends at %#llx)",
		   (unsigned long long)(win + exp->vram_size));
	rc = window_get(imp, exp, &late);
	VM_CHECK(rc == 0 && late == win, "a second user of the window gets the same one (iova %#llx)",
		 (unsigned long long)late);
	if (!rc)
		p2p_win_put(imp, exp);

	/* edu reads the peer's VRAM in place. */
	words_fill(slice + RD_OFF, SEED_RD, EDU_XFER_MAX);
	memset(ram.vaddr, 0, ram.size);
	if (edu_dma(win + VM_SHM_PEER_OFF + RD_OFF, EDU_BUF, false, true, "edu <- exporter VRAM (window)") &&
	    edu_dma(EDU_BUF, ram_iova, true, true, "edu -> RAM"))
		VM_CHECK(words_are(ram.vaddr, SEED_RD, EDU_XFER_MAX),
			 "peer read: the exporter's bytes reached RAM byte-exact (%u bytes)", EDU_XFER_MAX);

	/* edu writes it. */
	words_fill((char *)ram.vaddr + 4096, SEED_WR, EDU_XFER_MAX);
	if (edu_dma(ram_iova + 4096, EDU_BUF, false, true, "RAM -> edu") &&
	    edu_dma(EDU_BUF, win + VM_SHM_PEER_OFF + WR_OFF, true, true,
		    "edu -> exporter VRAM (window)")) {
		VM_CHECK(words_are(slice + WR_OFF, SEED_WR, EDU_XFER_MAX),
			 "peer write: edu's bytes are in the exporter's VRAM (read through its mapping)");
		VM_CHECK(slice[WR_OFF + EDU_XFER_MAX] == 0, "nothing written past them");
		vm_host("check-vram %#llx %#x %#llx", VM_SHM_PEER_OFF + WR_OFF, EDU_XFER_MAX, SEED_WR);
	}

	/* The importer's CPU engine through the same window, into its VRAM. */
	words_fill(slice + ENG_OFF, SEED_ENG, ENG_LEN);
	rc = cpu_copy(imp, engine_vram(imp_off), engine_iova(win + VM_SHM_PEER_OFF + ENG_OFF), ENG_LEN);
	VM_CHECK(rc == 0 && words_are((char *)imp->vram + imp_off, SEED_ENG, ENG_LEN),
		 "the importer's CPU engine copies 64 KiB of the peer's VRAM through the window, byte-exact (rc %d)",
		 rc);

	check_moves(exp, imp);

	/* Revocation: the exporter closes: its window and the staging buffers
	 * of the moves go from the importer's DMA space. */
	vram_free(exp, &exp_blocks, 0);
	ugpu_device_close(exp);
	VM_CHECK(dma_space_count(&imp->dma) == maps_before,
		 "the exporter's close revoked the window and dropped the staging buffers: %zu IOMMU mapping(s) left in the importer's space",
		 dma_space_count(&imp->dma));
	VM_CHECK(dma_space_lookup(&imp->dma, win + VM_SHM_PEER_OFF, VFIO_DMA_READ, &va, &avail) == -EFAULT,
		 "the window's IOVA is no longer in the importer's DMA space");
	rc = cpu_copy(imp, engine_vram(imp_off), engine_iova(win + VM_SHM_PEER_OFF + ENG_OFF), 4096);
	VM_CHECK(rc != 0, "the importer's CPU engine refuses the revoked IOVA (rc %d)", rc);
	rc = window_get(imp, exp, &late);
	VM_CHECK(rc == -ENODEV, "no new window onto the closed exporter -> %d (%s)", rc,
		 ugpu_strerror(rc));

	/* edu writes to the revoked IOVA: the vIOMMU blocks it. */
	words_fill((char *)ram.vaddr + 4096, SEED_LATE, EDU_XFER_MAX);
	if (edu_dma(ram_iova + 4096, EDU_BUF, false, true, "RAM -> edu (late pattern)"))
		edu_dma(EDU_BUF, win + VM_SHM_PEER_OFF + WR_OFF, true, false,
			"edu -> revoked window IOVA");
	p2p_win_put(imp, exp); /* the last user: the exporter's object goes */

	again = open_ivshmem(ctx, exp_bdf);
	slice = (volatile uint8_t *)again->vram + VM_SHM_PEER_OFF;
	VM_CHECK(words_are(slice + WR_OFF, SEED_WR, EDU_XFER_MAX),
		 "after the revocation the exporter's VRAM still holds edu's earlier bytes (the late write was blocked)");
	VM_CHECK(words_are(slice + RD_OFF, SEED_RD, EDU_XFER_MAX), "and the rest of the slice is intact");
	ugpu_device_close(again);

	VM_CHECK_RC(dma_unmap(&imp->dma, ram_iova, ram.size), "dma_unmap of the RAM buffer");
	sysmem_destroy(&ram);
	vram_free(imp, &imp_blocks, 0);
	VM_CHECK(edu->ops->set_irqs(edu, VFIO_IRQ_MSI, 0, 0, NULL) == 0, "edu: MSI off");
	edu->ops->close(edu);
	close(msi_fd);
	ugpu_device_close(imp);
	ugpu_context_destroy(ctx);
	return vm_finish();
}
