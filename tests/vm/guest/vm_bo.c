/* SPDX-License-Identifier: MIT */
/*
 * Guest test "bo": buffer objects on kernel vfio-pci, with ivshmem-plain as a
 * VRAM-only device (CPU engine, no blitter, no PM capability).
 *
 *  - BOs are created past the VRAM this test may use, so the oldest unpinned
 *    ones are evicted to system memory (DMA-mapped through the vIOMMU) and
 *    come back; every BO reads back byte-exact;
 *  - a CPU mapping (userfaultfd) follows its BO from VRAM to system memory
 *    and back; writes through it land;
 *  - a host-suspend cycle (prepare, suspend: the device goes to the deepest
 *    state it has — VFIO low power —, resume) restores every BO byte-exact.
 *
 * The BAR is shared with the other guest tests' slices (vm_test.h): all of
 * VRAM outside [16, 32) MiB is reserved first, so BOs live only there.
 */
#include "vm_dev.h"

#include <ugpu/bo.h>
#include <ugpu/device.h>
#include <ugpu/pm.h>

#include "mm/vram.h"
#include "src/device.h"

#define BO_SEED 0x424f3031ull /* "BO01" */
#define BO_LEN (4ull << 20)
#define NBO 6 /* 24 MiB of BOs for 16 MiB of VRAM */
#define FREE_OFF (16ull << 20)
#define FREE_END (32ull << 20)

static uint64_t buf[BO_LEN / 8];

static void fill(uint64_t seed)
{
	for (uint64_t i = 0; i < BO_LEN / 8; i++)
		buf[i] = vm_pattern(seed, i);
}

static bool check(const uint64_t *p, uint64_t seed)
{
	for (uint64_t i = 0; i < BO_LEN / 8; i++)
		if (p[i] != vm_pattern(seed, i))
			return false;
	return true;
}

static bool bo_ok(struct ugpu_bo *bo, uint64_t seed)
{
	return ugpu_bo_read(bo, 0, buf, BO_LEN) == 0 && check(buf, seed);
}

static enum ugpu_placement where(struct ugpu_bo *bo)
{
	struct ugpu_bo_info bi = { .size = sizeof(bi) };

	return ugpu_bo_query(bo, &bi) ? UGPU_PLACEMENT_NONE : bi.placement;
}

/* Reserve [start, end) of VRAM so no BO is placed there. */
static void reserve(struct ugpu_device *dev, struct buddy_list *l, uint64_t start, uint64_t end)
{
	int rc;

	rc = vram_alloc_range(dev, start, end, end - start, 4096, BUDDY_RANGE_ALLOCATION, l);
	VM_REQUIRE(rc == 0, "reserve VRAM [%llu, %llu) MiB -> %d", (unsigned long long)(start >> 20),
		   (unsigned long long)(end >> 20), rc);
}

int main(void)
{
	const char *bdf = vm_bdf("UGPU_VM_SHM");
	struct ugpu_context_opts copts = { .size = sizeof(copts), .log_level = UGPU_LOG_WARN };
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = BO_LEN,
				  .placements = { UGPU_PLACEMENT_VRAM, UGPU_PLACEMENT_SYSTEM },
				  .flags = UGPU_BO_CPU_ACCESS };
	struct ugpu_pm_stats st = { .size = sizeof(st) };
	struct ugpu_context *ctx;
	struct ugpu_device *dev;
	struct ugpu_bo *bos[NBO];
	struct buddy_list low, high;
	uint64_t *map = NULL;
	int i, rc, in_vram = 0, ok;
	char uri[64];

	snprintf(uri, sizeof(uri), "pci:%s", bdf);
	VM_REQUIRE(ugpu_context_create(&copts, &ctx) == 0, "context");
	rc = ugpu_device_open(ctx, uri, &dev);
	VM_REQUIRE(rc == 0, "ugpu_device_open(%s) -> %d (%s)", uri, rc, ugpu_strerror(rc));
	buddy_list_init(&low);
	buddy_list_init(&high);
	reserve(dev, &low, 0, FREE_OFF);
	reserve(dev, &high, FREE_END, dev->vram_size);

	for (i = 0; i < NBO; i++) {
		o.flags = UGPU_BO_CPU_ACCESS | (i == 0 ? UGPU_BO_PINNED : 0);
		rc = ugpu_bo_create(dev, &o, &bos[i]);
		VM_REQUIRE(rc == 0, "create BO %d -> %d (%s)", i, rc, ugpu_strerror(rc));
		fill(BO_SEED + (uint64_t)i);
		VM_CHECK_RC(ugpu_bo_write(bos[i], 0, buf, BO_LEN), "write pattern");
	}
	for (i = 0; i < NBO; i++)
		in_vram += where(bos[i]) == UGPU_PLACEMENT_VRAM;
	VM_CHECK(in_vram < NBO && in_vram > 0, "%d BOs for 16 MiB of VRAM: %d in VRAM, %d evicted",
		 NBO, in_vram, NBO - in_vram);
	VM_CHECK(where(bos[0]) == UGPU_PLACEMENT_VRAM, "the pinned BO stays in VRAM");
	ok = 1;
	for (i = 0; i < NBO; i++)
		ok &= bo_ok(bos[i], BO_SEED + (uint64_t)i);
	VM_CHECK(ok, "every BO byte-exact, in VRAM or evicted");

	/* A CPU mapping follows its BO both ways. */
	rc = ugpu_bo_map(bos[NBO - 1], (void **)&map);
	VM_REQUIRE(rc == 0, "ugpu_bo_map -> %d (%s)", rc, ugpu_strerror(rc));
	VM_CHECK(check(map, BO_SEED + NBO - 1), "mapping reads the BO (%s)",
		 where(bos[NBO - 1]) == UGPU_PLACEMENT_VRAM ? "VRAM" : "system");
	rc = ugpu_bo_migrate(bos[NBO - 1], UGPU_PLACEMENT_SYSTEM);
	VM_CHECK(rc == 0 && where(bos[NBO - 1]) == UGPU_PLACEMENT_SYSTEM, "migrate to system -> %d",
		 rc);
	map[1] = 0x1234;
	rc = ugpu_bo_migrate(bos[NBO - 1], UGPU_PLACEMENT_VRAM);
	VM_CHECK(rc == 0 && where(bos[NBO - 1]) == UGPU_PLACEMENT_VRAM,
		 "migrate back to VRAM (evicting another) -> %d", rc);
	VM_CHECK(map[1] == 0x1234, "the write made in system memory moved with the BO");
	map[1] = vm_pattern(BO_SEED + NBO - 1, 1);
	VM_CHECK(check(map, BO_SEED + NBO - 1), "mapping byte-exact in VRAM");

	/* Host suspend: backups, the device's deepest state, restore. */
	rc = ugpu_device_suspend_prepare(dev);
	VM_CHECK(rc == 0, "suspend prepare -> %d (%s)", rc, ugpu_strerror(rc));
	rc = ugpu_device_suspend(dev);
	VM_CHECK(rc == 0, "suspend (VFIO low power) -> %d (%s)", rc, ugpu_strerror(rc));
	rc = ugpu_device_resume(dev);
	VM_CHECK(rc == 0, "resume -> %d (%s)", rc, ugpu_strerror(rc));
	VM_CHECK_RC(ugpu_device_pm_stats(dev, &st), "pm stats");
	vm_note("prepare %.2f ms, critical window %.2f ms, resume %.2f ms", st.prepare_ns / 1e6,
		st.critical_ns / 1e6, st.resume_ns / 1e6);
	ok = 1;
	for (i = 0; i < NBO; i++)
		ok &= bo_ok(bos[i], BO_SEED + (uint64_t)i);
	VM_CHECK(ok, "every BO byte-exact after the suspend cycle");
	VM_CHECK(check(map, BO_SEED + NBO - 1), "the CPU mapping still works after resume");

	VM_CHECK_RC(ugpu_bo_unmap(bos[NBO - 1]), "unmap");
	for (i = 0; i < NBO; i++)
		ugpu_bo_put(bos[i]);
	vram_free(dev, &low, 0);
	vram_free(dev, &high, 0);
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	return vm_finish();
}
