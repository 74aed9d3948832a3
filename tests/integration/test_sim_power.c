/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim power states: D3hot keeps VRAM, D3cold poisons it and resets the
 * engines, BAR0 reads all-ones in D3, the wake latency is honoured, a wake
 * can be failed by injection, and DEVICE_RESET.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "test_sim_client.h"

#define VRAM (2u << 20)
#define WAKE_US 30000u
#define PMCSR 0x44
#define PWR_CTL 0x64
#define PWR_STATE 0x68
#define WAKE_LAT 0x6c

struct fx {
	struct sim *sim;
	struct tc c;
	uint8_t *vram;
};

static int fx_setup_lat(void **state, unsigned lat)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct sim_opts o;

	sim_opts_init(&o);
	o.vram_size = VRAM;
	o.wake_latency_us = lat;
	assert_int_equal(tc_sim_open(&o, "power", &f->sim, &f->c, &f->vram), 0);
	*state = f;
	return 0;
}

static int fx_setup(void **state)
{
	return fx_setup_lat(state, 0);
}

static int fx_setup_slow_wake(void **state)
{
	return fx_setup_lat(state, WAKE_US);
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	tc_close(&f->c);
	munmap(f->vram, VRAM);
	sim_stop(f->sim);
	free(f);
	return 0;
}

static void pattern(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 13 + 5);
}

static void test_d3hot_keeps_vram(void **state)
{
	struct fx *f = *state;
	uint8_t buf[64];
	uint64_t v;

	pattern(f->vram, VRAM);
	assert_int_equal(tc_wr64(&f->c, 0x1000, 0x10000), 0); /* engine ring regs */
	assert_int_equal(tc_wr32(&f->c, 0x1008, 4096), 0);
	assert_int_equal(tc_cfg_wr32(&f->c, PMCSR, 3), 0);
	assert_int_equal(tc_cfg32(&f->c, PMCSR) & 3, 3);
	assert_int_equal(tc_cfg32(&f->c, PWR_STATE), 3);
	assert_int_equal(tc_rd32(&f->c, 0x0), 0xffffffffu);
	assert_int_equal(tc_rd64(&f->c, 0x10), ~0ull);
	assert_int_equal(tc_region_rw(&f->c, 2, 0, buf, sizeof(buf), false), -EIO);
	/* Writes are dropped. */
	assert_int_equal(tc_wr32(&f->c, 0x40, 0x1234), 0);
	/* D1/D2 refused. */
	assert_int_equal(tc_cfg_wr32(&f->c, PMCSR, 1), 0);
	assert_int_equal(tc_cfg32(&f->c, PMCSR) & 3, 3);
	assert_int_equal(tc_cfg_wr32(&f->c, PMCSR, 0), 0);
	assert_int_equal(tc_cfg32(&f->c, PWR_STATE), 0);
	assert_int_equal(tc_rd32(&f->c, 0x0), 0x55475055);
	assert_int_equal(tc_rd32(&f->c, 0x40), 0);
	assert_int_equal(tc_rd64(&f->c, 0x1000), 0x10000); /* survives D3hot */
	for (size_t i = 0; i < VRAM; i += 4093)
		assert_int_equal(f->vram[i], (uint8_t)(i * 13 + 5));
	assert_int_equal(tc_region_rw(&f->c, 2, 8, &v, 8, false), 0);
	assert_memory_equal(&v, f->vram + 8, 8);
	/* PWR_CTL outside D3hot is ignored. */
	assert_int_equal(tc_cfg_wr32(&f->c, PWR_CTL, 1), 0);
	assert_int_equal(tc_cfg32(&f->c, PWR_CTL) & 1, 0);
	assert_int_equal(tc_cfg32(&f->c, PWR_STATE), 0);
}

static void test_d3cold_poisons(void **state)
{
	struct fx *f = *state;
	struct sim_state st;

	pattern(f->vram, VRAM);
	assert_int_equal(tc_wr64(&f->c, 0x1000, 0x10000), 0);
	assert_int_equal(tc_wr32(&f->c, 0x1008, 4096), 0);
	assert_int_equal(tc_wr32(&f->c, 0x2000, 1), 0);
	assert_int_equal(tc_cfg_wr32(&f->c, PMCSR, 3), 0);
	assert_int_equal(tc_cfg_wr32(&f->c, PWR_CTL, 1), 0);
	assert_int_equal(tc_cfg32(&f->c, PWR_STATE), 4);
	assert_int_equal(tc_cfg32(&f->c, PWR_CTL) & 1, 1);
	sim_state(f->sim, 0, &st);
	assert_int_equal(st.power, SIM_POWER_D3COLD);
	/* No main power: PMCSR does nothing, and reset is refused. */
	assert_int_equal(tc_cfg_wr32(&f->c, PMCSR, 0), 0);
	assert_int_equal(tc_cfg32(&f->c, PWR_STATE), 4);
	assert_int_equal(tc_call(&f->c, VFU_CMD_DEVICE_RESET, NULL, 0, NULL, 0, NULL, 0, tc_r()), -EIO);
	/* Power back: D3hot with VRAM poisoned, then D0. */
	assert_int_equal(tc_cfg_wr32(&f->c, PWR_CTL, 0), 0);
	assert_int_equal(tc_cfg32(&f->c, PWR_STATE), 3);
	assert_int_equal(tc_cfg_wr32(&f->c, PMCSR, 0), 0);
	assert_int_equal(tc_cfg32(&f->c, PWR_STATE), 0);
	for (size_t i = 0; i < VRAM; i += 8) {
		uint64_t v;

		memcpy(&v, f->vram + i, 8);
		if (v != 0xdeadbeefdeadbeefull)
			fail_msg("VRAM word at 0x%zx is 0x%llx, not poison", i, (unsigned long long)v);
	}
	assert_int_equal(tc_rd64(&f->c, 0x1000), 0);
	assert_int_equal(tc_rd32(&f->c, 0x1008), 0);
	assert_int_equal(tc_rd32(&f->c, 0x2000), 0);
	assert_int_equal(tc_rd32(&f->c, 0x0), 0x55475055);
}

/*
 * Poison follows the VRAM that held data: a page written before D3cold reads
 * poison after it, a page never touched (never allocated) still reads zero,
 * and every page touched after the first cycle is poisoned by the second.
 */
static void test_d3cold_poisons_written_pages(void **state)
{
	struct fx *f = *state;

	memset(f->vram + 4096, 0x5a, 4096);
	for (int cycle = 0; cycle < 2; cycle++) {
		assert_int_equal(tc_cfg_wr32(&f->c, PMCSR, 3), 0);
		assert_int_equal(tc_cfg_wr32(&f->c, PWR_CTL, 1), 0);
		assert_int_equal(tc_cfg32(&f->c, PWR_STATE), 4);
		assert_int_equal(tc_cfg_wr32(&f->c, PWR_CTL, 0), 0);
		assert_int_equal(tc_cfg_wr32(&f->c, PMCSR, 0), 0);
		assert_int_equal(tc_cfg32(&f->c, PWR_STATE), 0);
		for (size_t i = 0; i < VRAM; i += 8) {
			/* Reading a hole through a shared mapping allocates the
			 * page: after cycle 0's check every page holds data. */
			bool written = cycle || (i >= 4096 && i < 8192);
			uint64_t v, want = written ? 0xdeadbeefdeadbeefull : 0;

			memcpy(&v, f->vram + i, 8);
			if (v != want)
				fail_msg("cycle %d: word at 0x%zx is 0x%llx, not 0x%llx", cycle, i,
					 (unsigned long long)v, (unsigned long long)want);
		}
		/* The next cycle poisons what is written now. */
		memset(f->vram + 3 * 4096, 0x33, VRAM - 3 * 4096);
	}
}

static void test_wake_latency(void **state)
{
	struct fx *f = *state;
	uint64_t t0, dt;

	assert_int_equal(tc_cfg32(&f->c, WAKE_LAT), WAKE_US);
	assert_int_equal(tc_cfg_wr32(&f->c, PMCSR, 3), 0);
	t0 = tc_now_ms();
	assert_int_equal(tc_cfg_wr32(&f->c, PMCSR, 0), 0);
	dt = tc_now_ms() - t0;
	assert_true(dt >= WAKE_US / 1000);
	assert_int_equal(tc_cfg32(&f->c, PWR_STATE), 0);
	/* Entering D3 is not delayed. */
	t0 = tc_now_ms();
	assert_int_equal(tc_cfg_wr32(&f->c, PMCSR, 3), 0);
	assert_true(tc_now_ms() - t0 < WAKE_US / 1000);
	assert_int_equal(tc_cfg_wr32(&f->c, PMCSR, 0), 0);
}

static void test_wake_injection(void **state)
{
	struct fx *f = *state;

	assert_int_equal(sim_inject(f->sim, 0, SIM_INJECT_WAKE, 2, false), 0);
	for (int k = 0; k < 2; k++) {
		assert_int_equal(tc_cfg_wr32(&f->c, PMCSR, 3), 0);
		assert_int_equal(tc_cfg_wr32(&f->c, PMCSR, 0), 0);
		if (k == 0) {
			assert_int_equal(tc_cfg32(&f->c, PWR_STATE), 0);
		} else {
			/* The second wake is failed: still D3. */
			assert_int_equal(tc_cfg32(&f->c, PWR_STATE), 3);
			assert_int_equal(tc_cfg32(&f->c, PMCSR) & 3, 3);
			assert_int_equal(tc_rd32(&f->c, 0), 0xffffffffu);
			assert_int_equal(tc_cfg_wr32(&f->c, PMCSR, 0), 0);
			assert_int_equal(tc_cfg32(&f->c, PWR_STATE), 0);
		}
	}
	/* always: every wake fails until cleared. */
	assert_int_equal(sim_inject(f->sim, 0, SIM_INJECT_WAKE, 1, true), 0);
	assert_int_equal(tc_cfg_wr32(&f->c, PMCSR, 3), 0);
	for (int k = 0; k < 3; k++) {
		assert_int_equal(tc_cfg_wr32(&f->c, PMCSR, 0), 0);
		assert_int_equal(tc_cfg32(&f->c, PWR_STATE), 3);
	}
	assert_int_equal(sim_inject_clear(f->sim, 0), 0);
	assert_int_equal(tc_cfg_wr32(&f->c, PMCSR, 0), 0);
	assert_int_equal(tc_cfg32(&f->c, PWR_STATE), 0);
}

static void test_device_reset(void **state)
{
	struct fx *f = *state;

	pattern(f->vram, 4096);
	assert_int_equal(tc_wr32(&f->c, 0x40, 99), 0);
	assert_int_equal(tc_wr64(&f->c, 0x1000, 0x10000), 0);
	assert_int_equal(tc_wr32(&f->c, 0x1008, 4096), 0);
	assert_int_equal(tc_wr32(&f->c, 0x1014, 1), 0);
	assert_int_equal(tc_cfg_wr32(&f->c, 0x4, 0), 0); /* memory decode off */
	assert_int_equal(tc_rd32(&f->c, 0x0), 0xffffffffu);
	assert_int_equal(tc_call(&f->c, VFU_CMD_DEVICE_RESET, NULL, 0, NULL, 0, NULL, 0, tc_r()), 0);
	assert_int_equal(tc_cfg32(&f->c, 0x4) & 0x6, 0x6);
	assert_int_equal(tc_rd32(&f->c, 0x40), 0);
	assert_int_equal(tc_rd64(&f->c, 0x1000), 0);
	assert_int_equal(tc_rd32(&f->c, 0x1018), 1); /* idle, disabled */
	assert_int_equal(f->vram[100], (uint8_t)(100 * 13 + 5)); /* VRAM kept */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_d3hot_keeps_vram, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_d3cold_poisons, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_d3cold_poisons_written_pages, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_wake_latency, fx_setup_slow_wake, fx_teardown),
		cmocka_unit_test_setup_teardown(test_wake_injection, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_device_reset, fx_setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
