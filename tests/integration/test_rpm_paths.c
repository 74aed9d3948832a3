/* SPDX-License-Identifier: MIT */
/*
 * Every BO path that touches the device holds a runtime-PM reference: with
 * the device runtime-suspended, creating a VRAM BO, migrating, pinning,
 * reading and writing a VRAM BO, and a host-suspend cycle all wake it first
 * and work — and the device goes back to sleep afterwards (no reference
 * leaks). Paths that need no device (a system-only BO) do not wake it.
 */
#include <time.h>

#include <ugpu/rpm.h>

#include "test_bo_common.h"

static int setup(void **state)
{
	struct fx *f;

	if (fx_setup_vram(state, 32u << 20))
		return -1;
	f = *state;
	ugpu_device_rpm_set_d3cold_threshold(f->dev, 0); /* D3hot */
	ugpu_device_rpm_set_autosuspend_delay(f->dev, 20);
	return 0;
}

static uint64_t resumes(struct ugpu_device *dev)
{
	struct ugpu_rpm_stats st = { .size = sizeof(st) };

	assert_int_equal(ugpu_device_rpm_stats(dev, &st), 0);
	return st.resumes;
}

/* Wait (bounded) until the device sleeps: proves nobody holds a reference. */
static void wait_asleep(struct fx *f)
{
	struct ugpu_rpm_stats st = { .size = sizeof(st) };
	struct sim_state ss;
	int i;

	for (i = 0; i < 2500; i++) {
		assert_int_equal(ugpu_device_rpm_stats(f->dev, &st), 0);
		if (st.state == UGPU_RPM_SUSPENDED)
			break;
		nanosleep(&(struct timespec){ .tv_nsec = 2000000 }, NULL);
	}
	assert_int_equal(st.state, UGPU_RPM_SUSPENDED);
	assert_int_equal(st.usage, 0);
	assert_int_equal(sim_state(f->sim, 0, &ss), 0);
	assert_int_equal(ss.power, SIM_POWER_D3HOT);
}

static struct ugpu_bo *bo_vram(struct ugpu_device *dev, uint32_t flags, bool sys_too)
{
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = 1 << 20,
				  .placements = { UGPU_PLACEMENT_VRAM,
						  sys_too ? UGPU_PLACEMENT_SYSTEM : UGPU_PLACEMENT_NONE },
				  .flags = flags };
	struct ugpu_bo *bo = NULL;

	assert_int_equal(ugpu_bo_create(dev, &o, &bo), 0);
	return bo;
}

static void test_paths_wake(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo_info bi = { .size = sizeof(bi) };
	unsigned char buf[4096], back[4096];
	struct ugpu_bo *a, *b;
	uint64_t r;
	size_t i;

	for (i = 0; i < sizeof(buf); i++)
		buf[i] = (unsigned char)(i * 13 + 5);
	assert_int_equal(ugpu_device_rpm_allow(f->dev, true), 0);
	wait_asleep(f);

	/* create: the BO is zeroed through the BAR */
	r = resumes(f->dev);
	a = bo_vram(f->dev, 0, true);
	assert_true(resumes(f->dev) > r);
	wait_asleep(f);

	/* write and read of a VRAM BO go through the BAR */
	r = resumes(f->dev);
	assert_int_equal(ugpu_bo_write(a, 4096, buf, sizeof(buf)), 0);
	assert_true(resumes(f->dev) > r);
	wait_asleep(f);
	r = resumes(f->dev);
	assert_int_equal(ugpu_bo_read(a, 4096, back, sizeof(back)), 0);
	assert_memory_equal(buf, back, sizeof(buf));
	assert_true(resumes(f->dev) > r);
	wait_asleep(f);

	/* migrate: the blitter runs (a halted engine would fail the copy) */
	r = resumes(f->dev);
	assert_int_equal(ugpu_bo_migrate(a, UGPU_PLACEMENT_SYSTEM), 0);
	assert_true(resumes(f->dev) > r);
	assert_int_equal(ugpu_bo_query(a, &bi), 0);
	assert_int_equal(bi.placement, UGPU_PLACEMENT_SYSTEM);
	wait_asleep(f);

	/* a BO in system memory is read without waking the device */
	r = resumes(f->dev);
	memset(back, 0, sizeof(back));
	assert_int_equal(ugpu_bo_read(a, 4096, back, sizeof(back)), 0);
	assert_memory_equal(buf, back, sizeof(buf));
	assert_int_equal(resumes(f->dev), r);

	/* pin moves it back to VRAM: wakes */
	assert_int_equal(ugpu_bo_pin(a), 0);
	assert_true(resumes(f->dev) > r);
	assert_int_equal(ugpu_bo_query(a, &bi), 0);
	assert_int_equal(bi.placement, UGPU_PLACEMENT_VRAM);
	wait_asleep(f);

	/* a host-suspend cycle holds the device from prepare to resume, then
	 * lets it sleep again */
	b = bo_vram(f->dev, UGPU_BO_PINNED, false);
	assert_int_equal(ugpu_bo_write(b, 0, buf, sizeof(buf)), 0);
	wait_asleep(f);
	r = resumes(f->dev);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_true(resumes(f->dev) > r);
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	assert_int_equal(ugpu_bo_read(b, 0, back, sizeof(back)), 0);
	assert_memory_equal(buf, back, sizeof(buf));
	assert_int_equal(ugpu_bo_read(a, 4096, back, sizeof(back)), 0);
	assert_memory_equal(buf, back, sizeof(buf));
	wait_asleep(f);

	/* a cancelled cycle drops its reference too */
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(ugpu_device_suspend_cancel(f->dev), 0);
	wait_asleep(f);

	assert_int_equal(ugpu_bo_unpin(a), 0);
	ugpu_bo_put(a);
	ugpu_bo_put(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_paths_wake, setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
