/* SPDX-License-Identifier: MIT */
/*
 * Guest test "device": the driver's device layer on kernel vfio-pci, with
 * ivshmem-plain as a VRAM-only device (profile "ivshmem": a memory BAR and
 * the CPU engine).
 *
 *  - ugpu_device_open("pci:BDF") identifies the profile, maps VRAM, sets up
 *    the DMA space through the vIOMMU and the CPU engine;
 *  - VRAM from the driver's buddy allocator (kept inside the slice of the BAR
 *    this test owns), filled from DMA-mapped system memory by the CPU engine,
 *    copied back, byte-exact;
 *  - device_set_power(D3hot) on a device without a PM capability enters the
 *    kernel's low-power state and D0 leaves it; VRAM is intact;
 *  - close leaves no DMA mapping behind (checked before close through the
 *    space, and by reopening the device);
 *  - the profile has no GPU VM: GPU VMs and kernels (include/ugpu/vm.h) are
 *    not tested in the guest, and ugpu_vm_create() says -EOPNOTSUPP.
 */
#include "vm_dev.h"

#include <ugpu/device.h>
#include <ugpu/vm.h>

#include "mm/vram.h"
#include "src/device.h"

#define DEV_SEED 0x44455631ull /* "DEV1" */
#define DEV_OFF (16ull << 20) /* this test's slice: [16, 32) MiB of the BAR */
#define DEV_END (32ull << 20)
#define DEV_LEN (4ull << 20)

static bool check_words(const void *p, uint64_t seed, uint64_t len)
{
	const uint64_t *w = p;

	for (uint64_t i = 0; i < len / 8; i++)
		if (w[i] != vm_pattern(seed, i))
			return false;
	return true;
}

static void fill_words(void *p, uint64_t seed, uint64_t len)
{
	uint64_t *w = p;

	for (uint64_t i = 0; i < len / 8; i++)
		w[i] = vm_pattern(seed, i);
}

int main(void)
{
	const char *bdf = vm_bdf("UGPU_VM_SHM");
	struct ugpu_context_opts copts = { .size = sizeof(copts), .log_level = UGPU_LOG_INFO };
	struct ugpu_device_info info = { .size = sizeof(info) };
	struct ugpu_context *ctx;
	struct ugpu_device *dev;
	struct buddy_list blocks;
	struct sysmem sm = { .fd = -1 };
	uint64_t voff, iova, fence;
	char uri[64];
	int rc;

	snprintf(uri, sizeof(uri), "pci:%s", bdf);
	VM_REQUIRE(ugpu_context_create(&copts, &ctx) == 0, "context");
	rc = ugpu_device_open(ctx, uri, &dev);
	VM_REQUIRE(rc == 0, "ugpu_device_open(%s) -> %d (%s)", uri, rc, ugpu_strerror(rc));
	VM_CHECK_RC(ugpu_device_query(dev, &info), "ugpu_device_query");
	VM_CHECK(!strcmp(info.transport, "vfio-pci"), "transport is %s", info.transport);
	VM_CHECK(!strcmp(info.profile, "ivshmem"), "profile is %s", info.profile);
	VM_CHECK(info.vram_size == VM_SHM_SIZE, "VRAM is %llu MiB",
		 (unsigned long long)(info.vram_size >> 20));
	VM_CHECK(info.num_copy_engines == 0 && dev->cpu && !dev->copy[0],
		 "no blitter: copies go through the CPU engine");
	VM_CHECK(info.power_state == UGPU_POWER_D0, "device in D0");
	{
		struct ugpu_vm *vm = NULL;

		rc = ugpu_vm_create(dev, NULL, &vm);
		VM_CHECK(!(info.caps & UGPU_DEVICE_CAP_GPUVM) && rc == -EOPNOTSUPP && !vm,
			 "no GPU VM on this profile: ugpu_vm_create -> %d (%s)", rc,
			 ugpu_strerror(rc));
	}

	/* VRAM from the allocator, inside this test's slice. */
	buddy_list_init(&blocks);
	rc = vram_alloc_range(dev, DEV_OFF, DEV_END, DEV_LEN, 4096,
			      BUDDY_RANGE_ALLOCATION | BUDDY_CONTIGUOUS_ALLOCATION, &blocks);
	VM_REQUIRE(rc == 0, "buddy range allocation in [16, 32) MiB -> %d", rc);
	voff = buddy_block_offset(buddy_list_first(&blocks));
	VM_CHECK(voff >= DEV_OFF && voff + DEV_LEN <= DEV_END, "VRAM block at 0x%llx",
		 (unsigned long long)voff);

	/* System memory mapped for DMA through the vIOMMU; the CPU engine
	 * resolves its IOVA through the DMA space. */
	VM_REQUIRE(sysmem_create(ctx, DEV_LEN, "vm-device", &sm) == 0, "sysmem");
	rc = dma_map_sysmem(&dev->dma, &sm, VFIO_DMA_READ | VFIO_DMA_WRITE, &iova);
	VM_REQUIRE(rc == 0, "dma_map_sysmem -> %d", rc);
	VM_CHECK(dma_space_count(&dev->dma) == 1, "one IOMMU mapping held");

	fill_words(sm.vaddr, DEV_SEED, DEV_LEN);
	rc = engine_copy(dev->cpu, engine_vram(voff), engine_iova(iova), DEV_LEN, &fence);
	if (!rc)
		rc = engine_wait(dev->cpu, fence, 5000);
	VM_CHECK(rc == 0 && check_words((char *)dev->vram + voff, DEV_SEED, DEV_LEN),
		 "system -> VRAM by the CPU engine, byte-exact (rc %d)", rc);
	memset(sm.vaddr, 0, DEV_LEN);
	rc = engine_copy(dev->cpu, engine_iova(iova), engine_vram(voff), DEV_LEN, &fence);
	if (!rc)
		rc = engine_wait(dev->cpu, fence, 5000);
	VM_CHECK(rc == 0 && check_words(sm.vaddr, DEV_SEED, DEV_LEN),
		 "VRAM -> system by the CPU engine, byte-exact (rc %d)", rc);

	/* Low power: no PM capability, so D3hot is the kernel's low-power
	 * state. Nothing touches the BAR mapping while it is entered. */
	rc = device_set_power(dev, UGPU_POWER_D3HOT);
	VM_CHECK(rc == 0, "D3hot through VFIO low-power entry -> %d", rc);
	VM_CHECK_RC(ugpu_device_query(dev, &info), "query");
	VM_CHECK(info.power_state == UGPU_POWER_D3HOT, "device reports D3hot");
	VM_CHECK(device_set_power(dev, UGPU_POWER_D3COLD) == -EOPNOTSUPP,
		 "D3cold is refused on a device that cannot cut power");
	rc = device_set_power(dev, UGPU_POWER_D0);
	VM_CHECK(rc == 0, "D0 through VFIO low-power exit -> %d", rc);
	VM_CHECK(check_words((char *)dev->vram + voff, DEV_SEED, DEV_LEN),
		 "VRAM intact after low power");

	VM_CHECK_RC(dma_unmap(&dev->dma, iova, sm.size), "dma_unmap");
	VM_CHECK(dma_space_count(&dev->dma) == 0, "no IOMMU mapping left");
	sysmem_destroy(&sm);
	vram_free(dev, &blocks, 0);
	ugpu_device_close(dev);

	/* The device was fully released: it opens again. */
	rc = ugpu_device_open(ctx, uri, &dev);
	VM_CHECK(rc == 0, "reopen after close -> %d", rc);
	if (!rc)
		ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	return vm_finish();
}
