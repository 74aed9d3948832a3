/* SPDX-License-Identifier: MIT */
/*
 * Guest test "rpm": runtime power management on kernel vfio-pci.
 *
 * ivshmem-plain has no PM capability, so the driver's runtime suspend uses
 * VFIO's low-power feature. Entering it zaps every BAR mapping, and a touch
 * of a zapped mapping raises SIGBUS without waking the device — so the
 * driver releases the CPU mappings of VRAM BOs before entry, and a CPU touch
 * then faults into the driver (userfaultfd), which wakes the device (low-power
 * exit) and maps the BO again. (A BAR mapping is VM_PFNMAP: userfaultfd
 * cannot register it, so the release is the placeholder swap, not the
 * in-place release the reference device's memfd VRAM gets.)
 *
 *  - map a VRAM BO, write it, let the device autosuspend: it is in low power;
 *  - read and write through the same mapping: no SIGBUS, the device wakes
 *    through the driver, the data is intact;
 *  - repeated cycles keep every write.
 */
#include <setjmp.h>
#include <signal.h>

#include "vm_dev.h"

#include <ugpu/bo.h>
#include <ugpu/device.h>
#include <ugpu/rpm.h>

#include "mm/bo.h"
#include "mm/cpu_map.h"
#include "mm/vram.h"
#include "src/device.h"

#define RPM_SEED 0x52504d31ull /* "RPM1" */
#define RPM_LEN (1ull << 20)
#define FREE_OFF (16ull << 20)
#define FREE_END (32ull << 20)

static void on_sigbus(int sig)
{
	(void)sig;
	printf("  FAIL SIGBUS: a touch reached a zapped BAR mapping\n");
	fflush(stdout);
	_exit(1);
}

static bool wait_state(struct ugpu_device *dev, enum ugpu_rpm_state want, int ms)
{
	struct ugpu_rpm_stats st = { .size = sizeof(st) };
	double end = vm_now() + ms / 1e3;

	do {
		if (!ugpu_device_rpm_stats(dev, &st) && st.state == want)
			return true;
		usleep(2000);
	} while (vm_now() < end);
	return false;
}

int main(void)
{
	const char *bdf = vm_bdf("UGPU_VM_SHM");
	struct ugpu_context_opts copts = { .size = sizeof(copts), .log_level = UGPU_LOG_WARN };
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = RPM_LEN,
				  .placements = { UGPU_PLACEMENT_VRAM },
				  .flags = UGPU_BO_CPU_ACCESS };
	struct ugpu_rpm_stats st = { .size = sizeof(st) };
	struct sigaction sa = { .sa_handler = on_sigbus };
	struct ugpu_device_info info = { .size = sizeof(info) };
	struct ugpu_context *ctx;
	struct ugpu_device *dev;
	struct ugpu_bo *bo;
	struct buddy_list low, high;
	volatile uint64_t *map = NULL;
	int rc, cycle, ok;
	char uri[64];

	sigaction(SIGBUS, &sa, NULL);
	snprintf(uri, sizeof(uri), "pci:%s", bdf);
	VM_REQUIRE(ugpu_context_create(&copts, &ctx) == 0, "context");
	rc = ugpu_device_open(ctx, uri, &dev);
	VM_REQUIRE(rc == 0, "ugpu_device_open(%s) -> %d (%s)", uri, rc, ugpu_strerror(rc));
	/* Keep BOs in this test's slice of the shared BAR. */
	buddy_list_init(&low);
	buddy_list_init(&high);
	rc = vram_alloc_range(dev, 0, FREE_OFF, FREE_OFF, 4096, BUDDY_RANGE_ALLOCATION, &low);
	if (!rc)
		rc = vram_alloc_range(dev, FREE_END, dev->vram_size,
					dev->vram_size - FREE_END, 4096, BUDDY_RANGE_ALLOCATION, &high);
	VM_REQUIRE(rc == 0, "reserve VRAM outside [16, 32) MiB -> %d", rc);

	rc = ugpu_bo_create(dev, &o, &bo);
	VM_REQUIRE(rc == 0, "create a VRAM BO -> %d (%s)", rc, ugpu_strerror(rc));
	rc = ugpu_bo_map(bo, (void **)&map);
	VM_REQUIRE(rc == 0, "map it -> %d (%s)", rc, ugpu_strerror(rc));
	for (uint64_t i = 0; i < RPM_LEN / 8; i++)
		map[i] = vm_pattern(RPM_SEED, i);

	VM_CHECK_RC(ugpu_device_rpm_set_autosuspend_delay(dev, 50), "autosuspend delay 50 ms");
	VM_CHECK_RC(ugpu_device_rpm_allow(dev, true), "allow runtime suspend");
	ok = 1;
	for (cycle = 0; cycle < 5; cycle++) {
		if (!wait_state(dev, UGPU_RPM_SUSPENDED, 5000)) {
			ok = 0;
			VM_CHECK(0, "cycle %d: the device did not autosuspend", cycle);
			break;
		}
		VM_CHECK_RC(ugpu_device_query(dev, &info), "query");
		if (info.power_state != UGPU_POWER_D3HOT)
			ok = 0;
		if (!cycle) {
			struct cpu_map_info mi;

			/* A vfio-pci BAR mapping cannot be registered with
			 * userfaultfd: the release replaced it by a placeholder. */
			cpu_map_query(bo->map, &mi);
			VM_CHECK(mi.state == CPU_MAP_UNMAPPED,
				 "the BAR mapping was released by invalidation (map state %s)",
				 cpu_map_state_name(mi.state));
		}
		/* Touch while asleep: a read, then a write of this cycle's mark. */
		if (map[cycle] != (cycle ? (uint64_t)(cycle - 1) * 3 + 1 : vm_pattern(RPM_SEED, 0)))
			ok = 0;
		map[cycle + 1] = (uint64_t)cycle * 3 + 1;
		VM_CHECK_RC(ugpu_device_rpm_stats(dev, &st), "stats");
		if (st.state != UGPU_RPM_ACTIVE && st.state != UGPU_RPM_RESUMING)
			ok = 0;
	}
	VM_CHECK(ok, "%d cycles: autosuspend into VFIO low power (D3hot), a CPU touch wakes the device through the driver, every write kept",
		 cycle);
	VM_CHECK_RC(ugpu_device_rpm_stats(dev, &st), "stats");
	VM_CHECK(st.suspends >= 5 && st.resumes >= 5, "%llu suspends, %llu resumes, last wake %llu us",
		 (unsigned long long)st.suspends, (unsigned long long)st.resumes,
		 (unsigned long long)st.wake_last_us);
	VM_CHECK_RC(ugpu_device_rpm_allow(dev, false), "forbid runtime suspend (wakes it)");
	ok = map[0] == vm_pattern(RPM_SEED, 0);
	for (uint64_t i = 6; i < RPM_LEN / 8; i++)
		ok &= map[i] == vm_pattern(RPM_SEED, i);
	VM_CHECK(ok, "the rest of the BO is byte-exact");

	VM_CHECK_RC(ugpu_bo_unmap(bo), "unmap");
	ugpu_bo_put(bo);
	vram_free(dev, &low, 0);
	vram_free(dev, &high, 0);
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	return vm_finish();
}
