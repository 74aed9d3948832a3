/* SPDX-License-Identifier: MIT */
/*
 * Soak: UGPU_SOAK_CYCLES (default 1000) suspend/resume cycles with a random
 * BO population (every kind, created, rewritten, unpinned and destroyed
 * between cycles) and random injected faults (a blitter descriptor failing
 * in suspend or resume, a backup allocation failing in prepare or suspend,
 * a failed wake), and writes between prepare and suspend (through the API
 * and mappings, over random ranges or scattered over every other 64 KiB
 * chunk: the window copies only the chunks the dirty tracking marked, runs
 * apart as copy lists, and every backup's checksums are checked at
 * resume). Half the cycles spill: a spill directory and a random memory
 * limit for the backups, so some (or all) of them go to the file; faults
 * then include a failing write of the file in prepare or in the window, and
 * the backup allocation failures spill instead of failing. After every
 * cycle every BO except NO_RESTORE ones must hold what was last written to
 * it: 0 bytes lost, and the spill file is gone. Prints its seed;
 * UGPU_SOAK_SEED replays one.
 */
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "base/test_point.h"

#include "integration/test_bo_common.h"

#define MiB (1ull << 20)
#define MAXB 24
#define SOAK_CHUNK (64ull << 10) /* the backups' dirty-tracking chunk */

static int setup(void **state)
{
	return fx_setup_vram(state, 16 * MiB);
}

struct sbo {
	struct ugpu_bo *bo;
	uint64_t size;
	uint32_t flags;
	uint8_t *map;
	uint8_t *model; /* what the BO must hold */
};

static uint64_t rng;
static uint32_t rnd(uint32_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng % n);
}

static const uint32_t kind_flags[] = {
	UGPU_BO_KERNEL | UGPU_BO_PINNED,
	UGPU_BO_KERNEL | UGPU_BO_LATE_RESTORE | UGPU_BO_PINNED,
	UGPU_BO_PINNED,
	UGPU_BO_PINNED | UGPU_BO_NO_RESTORE,
	0,
	UGPU_BO_CPU_ACCESS,
	UGPU_BO_PINNED | UGPU_BO_CPU_ACCESS | UGPU_BO_CONTIGUOUS,
};

/* Write pattern @seed over [off, off+len) of the BO (through its mapping
 * or the API) and of its model. */
static void write_range(struct sbo *b, uint64_t off, uint64_t len, uint32_t seed)
{
	uint64_t i;

	for (i = 0; i < len; i++)
		b->model[off + i] = pat(seed, i);
	if (b->map && rnd(2))
		memcpy(b->map + off, b->model + off, len);
	else
		assert_int_equal(ugpu_bo_write(b->bo, off, b->model + off, len), 0);
}

static void rewrite(struct sbo *b, uint32_t seed)
{
	write_range(b, 0, b->size, seed);
}

static void sbo_put(struct sbo *b)
{
	ugpu_bo_put(b->bo);
	free(b->model);
	b->bo = NULL;
	b->model = NULL;
}

static uint64_t lost_bytes(struct sbo *b)
{
	uint8_t *buf;
	uint64_t i, lost = 0;

	if (b->flags & UGPU_BO_NO_RESTORE)
		return 0;
	buf = malloc(b->size);
	assert_non_null(buf);
	assert_int_equal(ugpu_bo_read(b->bo, 0, buf, b->size), 0);
	for (i = 0; i < b->size; i++)
		lost += buf[i] != b->model[i];
	free(buf);
	return lost;
}

/* Fail the Nth spill-file write from now (test point). */
static int write_fail_at;

static void fail_write(void *arg, enum test_point_id id, void *obj)
{
	(void)arg;
	(void)id;
	if (write_fail_at && !--write_fail_at)
		*(int *)obj = rnd(2) ? -EIO : -ENOSPC;
}

static bool dir_empty(const char *dir)
{
	struct dirent *d;
	DIR *dp = opendir(dir);
	bool empty = true;

	assert_non_null(dp);
	while ((d = readdir(dp)))
		if (d->d_name[0] != '.')
			empty = false;
	closedir(dp);
	return empty;
}

static void test_soak(void **state)
{
	struct fx *f = *state;
	struct sbo b[MAXB];
	const char *e;
	/* fewer under the sanitizers (TSan's ~9x, ASan's ~3x): make test's
	 * time budget (TSan's 150 were 42 s of it); the Release run soaks the
	 * full 1000, and the sanitizers are after races and bad accesses in
	 * the cycle's code, which every cycle runs */
#if defined(__SANITIZE_THREAD__)
	unsigned long cycles = 80, c;
#elif defined(__SANITIZE_ADDRESS__)
	unsigned long cycles = 300, c;
#else
	unsigned long cycles = 1000, c;
#endif
	uint64_t seed, lost = 0, faults = 0, ok_cycles = 0;
	uint32_t next_seed = 1;
	char dir[64];
	int i;

	e = getenv("UGPU_SOAK_CYCLES");
	if (e)
		cycles = strtoul(e, NULL, 0);
	e = getenv("UGPU_SOAK_SEED");
	seed = e ? strtoull(e, NULL, 0) : (uint64_t)time(NULL);
	printf("soak: seed %llu (UGPU_SOAK_SEED to replay), %lu cycles\n", (unsigned long long)seed,
	       cycles);
	rng = seed * 2654435761u + 1;
	memset(b, 0, sizeof(b));
	/* tmpfs where there is one: the soak writes the file ~1000 times */
	snprintf(dir, sizeof(dir), "%s/ugpu-soak-spill-XXXXXX",
		 access("/dev/shm", W_OK) ? "/tmp" : "/dev/shm");
	assert_non_null(mkdtemp(dir));
	test_point_set(TEST_POINT_SPILL_WRITE, fail_write, NULL);

	for (c = 0; c < cycles; c++) {
		int fault = (int)rnd(10), ret;
		bool prepared = rnd(3) != 0, spill = rnd(2);
		struct ugpu_pm_opts po = { .size = sizeof(po) };

		/* spill: up to 2 MiB of backups in memory (0: no limit, only
		 * failed allocations spill), the rest to the file */
		if (spill) {
			po.spill_dir = dir;
			po.backup_mem_limit = rnd(4) ? (uint64_t)rnd(9) * 256 * 1024 : 0;
		}
		assert_int_equal(ugpu_device_pm_set_opts(f->dev, &po), 0);

		/* mutate the population */
		for (i = 0; i < MAXB; i++) {
			uint32_t r = rnd(10);

			if (!b[i].bo && r < 4) {
				uint32_t fl = kind_flags[rnd(sizeof(kind_flags) / sizeof(kind_flags[0]))];
				enum ugpu_placement p1 =
					(fl & (UGPU_BO_KERNEL | UGPU_BO_NO_RESTORE)) || rnd(4) == 0 ? N : S;

				b[i].size = (uint64_t)(1 + rnd(64)) * 4096;
				b[i].flags = fl;
				b[i].map = NULL;
				b[i].bo = bo_new(f->dev, b[i].size, fl, V, p1, "soak");
				if (!b[i].bo)
					continue; /* VRAM full of pinned BOs: fine */
				if (fl & UGPU_BO_CPU_ACCESS)
					assert_int_equal(ugpu_bo_map(b[i].bo, (void **)&b[i].map), 0);
				b[i].model = malloc(b[i].size);
				assert_non_null(b[i].model);
				rewrite(&b[i], next_seed++);
			} else if (b[i].bo && r == 0) {
				sbo_put(&b[i]);
			} else if (b[i].bo && r == 1) {
				rewrite(&b[i], next_seed++);
			} else if (b[i].bo && r == 2 && (b[i].flags & UGPU_BO_PINNED)) {
				assert_int_equal(ugpu_bo_unpin(b[i].bo), 0);
				b[i].flags &= ~UGPU_BO_PINNED;
			}
		}

		if (prepared) {
			if (fault == 1)
				bo_mgr_inject_backup_failure(f->dev, 1 + rnd(4), false);
			if (fault == 8)
				write_fail_at = 1 + rnd(3);
			ret = ugpu_device_suspend_prepare(f->dev);
			bo_mgr_inject_backup_failure(f->dev, 0, false);
			write_fail_at = 0;
			if (ret) {
				assert_true(ret == -ENOMEM || ret == -EIO || ret == -ENOSPC);
				assert_true(dir_empty(dir));
				faults++;
				prepared = false;
			}
		}
		/* Writes after prepare: only what they touch is copied again.
		 * One range, or a few bytes in every other 64 KiB chunk: runs
		 * that do not continue each other, which the window sends as
		 * copy lists (COPY_LIST), as it does the runs of BOs apart. */
		for (i = 0; prepared && i < MAXB; i++) {
			if (b[i].bo && !rnd(3)) {
				uint64_t off = rnd((uint32_t)b[i].size);

				write_range(&b[i], off, 1 + rnd((uint32_t)(b[i].size - off)),
					    next_seed++);
			} else if (b[i].bo && !rnd(3)) {
				for (uint64_t c = rnd(2) * SOAK_CHUNK; c < b[i].size; c += 2 * SOAK_CHUNK) {
					uint64_t end = b[i].size - c < SOAK_CHUNK ? b[i].size : c + SOAK_CHUNK;
					uint64_t off = c + rnd((uint32_t)(end - c));

					write_range(&b[i], off, 1 + rnd((uint32_t)(end - off)), next_seed++);
				}
			}
		}
		if (fault == 2)
			sim_inject(f->sim, 0, SIM_INJECT_CMD, 1 + rnd(6), false);
		if (fault == 3 && !prepared)
			bo_mgr_inject_backup_failure(f->dev, 1 + rnd(4), false);
		if (fault == 9)
			write_fail_at = 1 + rnd(3);
		ret = ugpu_device_suspend(f->dev);
		sim_inject_clear(f->sim, 0);
		bo_mgr_inject_backup_failure(f->dev, 0, false);
		write_fail_at = 0;
		if (ret) {
			faults++;
			assert_int_equal(bo_mgr_check(f->dev, true), 0);
			/* half the time cancel, half retry */
			if (rnd(2)) {
				assert_int_equal(ugpu_device_suspend_cancel(f->dev), 0);
			} else {
				assert_int_equal(ugpu_device_suspend(f->dev), 0);
				assert_int_equal(ugpu_device_resume(f->dev), 0);
			}
		} else {
			if (fault == 4)
				sim_inject(f->sim, 0, SIM_INJECT_WAKE, 1, false);
			if (fault == 5)
				sim_inject(f->sim, 0, SIM_INJECT_CMD, 1 + rnd(4), false);
			ret = ugpu_device_resume(f->dev);
			if (ret) {
				faults++;
				assert_int_equal(fault, 4);
				sim_inject_clear(f->sim, 0);
				assert_int_equal(ugpu_device_resume(f->dev), 0);
			}
			sim_inject_clear(f->sim, 0);
			ok_cycles++;
		}
		assert_int_equal(bo_mgr_check(f->dev, true), 0);
		if (!dir_empty(dir))
			fail_msg("cycle %lu: the spill file outlived the cycle (seed %llu)", c,
				 (unsigned long long)seed);
		for (i = 0; i < MAXB; i++)
			if (b[i].bo)
				lost += lost_bytes(&b[i]);
		if (lost)
			fail_msg("cycle %lu: %llu bytes lost (seed %llu)", c, (unsigned long long)lost,
				 (unsigned long long)seed);
	}
	{
		struct ugpu_pm_stats st = { .size = sizeof(st) };

		assert_int_equal(ugpu_device_pm_stats(f->dev, &st), 0);
		struct sim_state ss;

		printf("soak: %llu bytes written to spill files\n",
		       (unsigned long long)st.spill_bytes);
		assert_true(cycles < 20 || st.spill_bytes > 0);
		assert_int_equal(sim_state(f->sim, 0, &ss), 0);
		printf("soak: %llu copy lists (COPY_LIST) among %llu descriptors\n",
		       (unsigned long long)ss.lists, (unsigned long long)ss.descs);
		assert_true(cycles < 20 || ss.lists > 0);
	}
	printf("soak: %lu cycles, %llu completed suspends, %llu injected faults hit, 0 bytes lost\n",
	       cycles, (unsigned long long)ok_cycles, (unsigned long long)faults);
	assert_true(faults > 0);
	test_point_set(TEST_POINT_SPILL_WRITE, NULL, NULL);
	assert_int_equal(rmdir(dir), 0);
	for (i = 0; i < MAXB; i++)
		sbo_put(&b[i]);
	assert_int_equal(bo_mgr_check(f->dev, true), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_soak, setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
