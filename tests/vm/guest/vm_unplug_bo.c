/* SPDX-License-Identifier: MIT */
/*
 * Guest test "unplug_bo": the driver's own removal on kernel vfio-pci.
 *
 * The second ivshmem-plain (UGPU_VM_SHM1, all of its VRAM is this test's)
 * opened with ugpu_device_open("pci:BDF") (profile "ivshmem": VRAM-only, CPU
 * engine). BOs with patterns are placed in VRAM (one pinned, one CPU-mapped);
 * the host finds each pattern in that device's memory-backend file at the
 * BO's VRAM offset (so the data really lived in the device). The host is
 * asked for QMP device_del; the kernel raises REQ; the driver's watcher moves
 * every BO to system memory, removes its DMA mappings, unmaps the BAR and
 * closes the device, and the device leaves (the host sees DEVICE_DELETED).
 * The BOs then read back byte-exact from system memory, through ugpu_bo_read
 * and through the CPU mapping.
 *
 * Its own device, so "unplug" (which removes UGPU_VM_SHM) runs in the same
 * boot (docs/testing.md); the removal sequence is in docs/unplug.md.
 */
#include <pthread.h>
#include <sys/stat.h>

#include "vm_dev.h"

#include <ugpu/bo.h>
#include <ugpu/unplug.h>

#define UBO_SEED 0x55424f31ull /* "UBO1" */
#define UBO_N 4
#define UBO_LEN (1ull << 20)

static char host_reply[128];
static int host_rc;

static void *host_unplug(void *arg)
{
	(void)arg;
	host_rc = vm_host_call(host_reply, sizeof(host_reply), 25000, "unplug ivshmem1");
	return NULL;
}

static bool present(const char *bdf)
{
	char p[256];
	struct stat st;

	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s", bdf);
	return stat(p, &st) == 0;
}

static bool check_words(const void *p, uint64_t seed, uint64_t len)
{
	const uint64_t *w = p;

	for (uint64_t i = 0; i < len / 8; i++)
		if (w[i] != vm_pattern(seed, i))
			return false;
	return true;
}

int main(void)
{
	const char *bdf = vm_bdf("UGPU_VM_SHM1");
	struct ugpu_device_info info = { .size = sizeof(info) };
	struct ugpu_context_opts copts = { .size = sizeof(copts), .log_level = UGPU_LOG_INFO };
	struct ugpu_unplug_info ui = { .size = sizeof(ui) };
	struct ugpu_context *ctx;
	struct ugpu_device *dev;
	struct ugpu_bo *bo[UBO_N];
	uint64_t *buf;
	void *map = NULL;
	pthread_t host_thread;
	double t0, t1;
	char uri[64];
	int rc, i;

	if (!vm_has_host())
		vm_skip("needs the VM runner to hot-unplug the device (UGPU_VM_HOST unset)");
	snprintf(uri, sizeof(uri), "pci:%s", bdf);
	VM_REQUIRE(ugpu_context_create(&copts, &ctx) == 0, "context");
	rc = ugpu_device_open(ctx, uri, &dev);
	VM_REQUIRE(rc == 0, "ugpu_device_open(%s) -> %d", uri, rc);
	VM_REQUIRE(ugpu_device_query(dev, &info) == 0 && !strcmp(info.profile, "ivshmem"),
		   "%s is driven with the ivshmem profile (%s)", bdf, info.profile);
	vm_note("%s: %llu MiB of VRAM", bdf, (unsigned long long)(info.vram_size >> 20));
	buf = malloc(UBO_LEN);
	VM_REQUIRE(buf != NULL, "buffer");

	for (i = 0; i < UBO_N; i++) {
		struct ugpu_bo_opts o = {
			.size = sizeof(o),
			.bytes = UBO_LEN,
			.placements = { UGPU_PLACEMENT_VRAM },
			.flags = (i == 0 ? UGPU_BO_PINNED : 0) | (i == 1 ? UGPU_BO_CPU_ACCESS : 0),
			.name = "vm-unplug",
		};
		struct ugpu_bo_info bi = { .size = sizeof(bi) };

		rc = ugpu_bo_create(dev, &o, &bo[i]);
		VM_REQUIRE(rc == 0, "BO %d in VRAM -> %d", i, rc);
		for (uint64_t w = 0; w < UBO_LEN / 8; w++)
			buf[w] = vm_pattern(UBO_SEED + (uint64_t)i, w);
		VM_CHECK_RC(ugpu_bo_write(bo[i], 0, buf, UBO_LEN), "fill BO");
		rc = ugpu_bo_query(bo[i], &bi);
		VM_CHECK(rc == 0 && bi.placement == UGPU_PLACEMENT_VRAM &&
				 bi.vram_offset + UBO_LEN <= info.vram_size,
			 "BO %d is in VRAM before the unplug (offset 0x%llx, rc %d)", i,
			 (unsigned long long)bi.vram_offset, rc);
		/* A power-of-two BO in a fresh buddy allocator is one block: the
		 * host checks the device's memory at its offset after the run. */
		vm_host("check-vram %#llx %#llx %#llx ivshmem1", (unsigned long long)bi.vram_offset,
			UBO_LEN, (unsigned long long)(UBO_SEED + (uint64_t)i));
	}
	VM_CHECK_RC(ugpu_bo_map(bo[1], &map), "map BO 1");
	VM_CHECK(map && check_words(map, UBO_SEED + 1, UBO_LEN), "BO 1 readable through its mapping");

	t0 = vm_now();
	rc = pthread_create(&host_thread, NULL, host_unplug, NULL);
	VM_REQUIRE(rc == 0, "thread for the host's answer -> %d", rc);
	/* The driver handles REQ by itself: wait for it to finish (bounded). */
	for (;;) {
		rc = ugpu_device_unplug_info(dev, &ui);
		if (rc)
			VM_REQUIRE(rc == 0, "ugpu_device_unplug_info -> %d", rc);
		if (ui.state == UGPU_UNPLUG_REMOVED || vm_now() - t0 > 20.0)
			break;
		usleep(5000);
	}
	t1 = vm_now();
	VM_REQUIRE(ui.state == UGPU_UNPLUG_REMOVED, "driver removed the device after the REQ (%.0f ms)",
		   (t1 - t0) * 1e3);
	vm_note("removed %.0f ms after the unplug request: %llu BOs (%llu bytes) moved, status %d, removal %llu us, REQs %llu",
		(t1 - t0) * 1e3, (unsigned long long)ui.bos_moved,
		(unsigned long long)ui.bytes_moved, ui.status, (unsigned long long)ui.removal_us,
		(unsigned long long)ui.reqs);
	VM_CHECK(ui.kind == UGPU_UNPLUG_REQUEST && ui.status == 0 && ui.bos_moved == UBO_N &&
			 ui.bos_lost == 0,
		 "orderly removal: %d BOs moved, none lost", UBO_N);
	while (present(bdf) && vm_now() - t1 < 10.0)
		usleep(20000);
	VM_CHECK(!present(bdf), "device left the guest %.0f ms after the removal",
		 (vm_now() - t1) * 1e3);
	pthread_join(host_thread, NULL);
	if (vm_host_manual())
		vm_note("UGPU_VM_HOST=manual: the hypervisor's side of the removal is not checked");
	else
		VM_CHECK(host_rc == 0 && strncmp(host_reply, "deleted ", 8) == 0,
			 "host: QMP DEVICE_DELETED (reply \"%s\", rc %d)", host_rc ? "" : host_reply,
			 host_rc);

	/* The BOs outlived the device, byte-exact, in system memory. */
	for (i = 0; i < UBO_N; i++) {
		struct ugpu_bo_info bi = { .size = sizeof(bi) };

		VM_CHECK(ugpu_bo_query(bo[i], &bi) == 0 && bi.placement == UGPU_PLACEMENT_SYSTEM &&
				 !bi.lost,
			 "BO %d in system memory after the unplug", i);
		memset(buf, 0, UBO_LEN);
		VM_CHECK(ugpu_bo_read(bo[i], 0, buf, UBO_LEN) == 0 &&
				 check_words(buf, UBO_SEED + (uint64_t)i, UBO_LEN),
			 "BO %d byte-exact after the unplug", i);
	}
	VM_CHECK(check_words(map, UBO_SEED + 1, UBO_LEN), "BO 1's mapping reads the system copy");
	VM_CHECK(ugpu_device_is_gone(dev), "ugpu_device_is_gone");
	for (i = 0; i < UBO_N; i++)
		ugpu_bo_put(bo[i]);
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	free(buf);
	return vm_finish();
}
