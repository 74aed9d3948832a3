/* SPDX-License-Identifier: MIT */
/*
 * Spilled host-suspend backups (docs/suspend.md, "Spill"), against the
 * reference device, which loses VRAM in D3cold:
 *  - backups over ugpu_pm_opts.backup_mem_limit, and those whose memory
 *    cannot be allocated, go to a file in ugpu_pm_opts.spill_dir; after
 *    resume every BO holds its bytes exactly; the window writes only the
 *    chunks written since prepare (API and CPU stores); the file is gone
 *    after resume and after cancel;
 *  - a spill file damaged while the device sleeps is caught at resume:
 *    -EBADMSG, the BO and the chunk named;
 *  - a write of the file failing (injected -EIO / -ENOSPC, or a real full
 *    tmpfs) fails prepare or suspend cleanly: the error says what, nothing
 *    is lost, the file is removed;
 *  - a filesystem refusing O_DIRECT: the file goes through the page cache,
 *    said in the log; no memory for the full staging: a smaller one;
 *  - a removal while suspended keeps the spilled BOs (read back).
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <ugpu/unplug.h>

#include "integration/test_bo_common.h"
#include "base/test_point.h"
#include "log_capture.h"
#include "mm/backup_track.h"
#include "mm/bo.h"

#define MiB (1ull << 20)
#define KiB (1ull << 10)
#define NBO 4

struct sfx {
	struct fx fx; /* first: fx_teardown() frees it */
	char dir[64];
	int nbo;
	struct ugpu_bo *bo[NBO];
	uint8_t *model[NBO];
};

/* The reference device, a log the test reads (info level), a fresh spill
 * directory, and four pinned patterned BOs of 1, 2, 3, 4 MiB. */
static int setup(void **state)
{
	struct ugpu_context_opts copts = { .size = sizeof(copts), .log_fn = log_capture,
					   .log_level = UGPU_LOG_INFO };
	struct sfx *s = calloc(1, sizeof(*s));
	struct fx *f = &s->fx;
	struct sim_opts o;
	char name[8];
	int i;

	log_echo = getenv("UGPU_TEST_LOG") != NULL;
	log_clear();
	sim_opts_init(&o);
	o.vram_size = 64 * MiB;
	fx_watchdog_arm(fx_test_bound_s(), "a spill test did not finish within its bound\n");
	if (sim_start(&o, &f->sim) || ugpu_context_create(&copts, &f->ctx))
		return -1;
	snprintf(f->uri, sizeof(f->uri), "vfio-user:%s", sim_socket_path(f->sim, 0));
	if (ugpu_device_open(f->ctx, f->uri, &f->dev) ||
	    ugpu_device_rpm_set_autosuspend_delay(f->dev, -1))
		return -1;
	snprintf(s->dir, sizeof(s->dir), "/tmp/ugpu-spill-test-XXXXXX");
	if (!mkdtemp(s->dir))
		return -1;
	s->nbo = NBO;
	for (i = 0; i < NBO; i++) {
		uint64_t sz = (uint64_t)(i + 1) * MiB;

		snprintf(name, sizeof(name), "bo%d", i);
		s->bo[i] = bo_new(f->dev, sz, UGPU_BO_PINNED | UGPU_BO_CPU_ACCESS, V, N, name);
		s->model[i] = malloc(sz);
		if (!s->bo[i] || !s->model[i] || bo_fill(s->bo[i], sz, 100 + i))
			return -1;
		pat_fill(s->model[i], sz, 100 + i);
	}
	*state = s;
	return 0;
}

static int teardown(void **state)
{
	struct sfx *s = *state;
	int i;

	test_point_clear_all();
	for (i = 0; i < NBO; i++) {
		ugpu_bo_put(s->bo[i]);
		free(s->model[i]);
	}
	umount2(s->dir, MNT_DETACH); /* the tiny tmpfs, if one was mounted */
	rmdir(s->dir);
	return fx_teardown(state);
}

static uint64_t bo_size(int i)
{
	return (uint64_t)(i + 1) * MiB;
}

static void set_spill(struct sfx *s, uint64_t limit)
{
	struct ugpu_pm_opts po = { .size = sizeof(po), .backup_mem_limit = limit,
				   .spill_dir = s->dir };

	assert_int_equal(ugpu_device_pm_set_opts(s->fx.dev, &po), 0);
}

static struct ugpu_pm_stats pm_stats(struct sfx *s)
{
	struct ugpu_pm_stats st = { .size = sizeof(st) };

	assert_int_equal(ugpu_device_pm_stats(s->fx.dev, &st), 0);
	return st;
}

/* Entries in the spill directory; *@name gets the last one's path. */
static int dir_files(struct sfx *s, char *name, size_t len)
{
	struct dirent *d;
	DIR *dp = opendir(s->dir);
	int n = 0;

	assert_non_null(dp);
	while ((d = readdir(dp))) {
		if (d->d_name[0] == '.')
			continue;
		n++;
		if (name && (size_t)snprintf(name, len, "%s/%s", s->dir, d->d_name) >= len)
			fail_msg("path too long");
	}
	closedir(dp);
	return n;
}

/* Every BO holds its model, byte for byte (through the API). */
static void check_all(struct sfx *s)
{
	uint8_t *buf = malloc(4 * MiB);
	int i;

	assert_non_null(buf);
	for (i = 0; i < s->nbo; i++) {
		assert_int_equal(ugpu_bo_read(s->bo[i], 0, buf, bo_size(i)), 0);
		if (memcmp(buf, s->model[i], bo_size(i)))
			fail_msg("BO %d differs from what was written", i);
	}
	free(buf);
	assert_int_equal(bo_mgr_check(s->fx.dev, true), 0);
}

/* Write @len bytes of 0x5a ^ @seed at @off of BO @i (API) and its model. */
static void poke(struct sfx *s, int i, uint64_t off, uint64_t len, uint8_t seed)
{
	uint8_t *p = malloc(len);

	memset(p, 0x5a ^ seed, len);
	assert_int_equal(ugpu_bo_write(s->bo[i], off, p, len), 0);
	memcpy(s->model[i] + off, p, len);
	free(p);
}

/* Over the limit: the BOs that do not fit go to the file; the window writes
 * only what was written since prepare (API, CPU stores); resume restores
 * every byte; the file is gone. Then a suspend without prepare spills in
 * the window, and a cancel removes the file too. */
static void test_spill_roundtrip(void **state)
{
	struct sfx *s = *state;
	struct ugpu_pm_stats st;
	uint8_t *map;

	/* 10 MiB of user BOs, 3 MiB (+ the small kernel BOs) allowed in
	 * memory: bo0 (1 MiB) fits, bo1 (2 MiB) fits, bo2 and bo3 spill. */
	set_spill(s, 3 * MiB + 512 * KiB);
	assert_int_equal(ugpu_bo_map(s->bo[3], (void **)&map), 0);
	/* mapped now (a first touch): prepare can track its stores */
	assert_memory_equal(map, s->model[3], 4 * MiB);
	assert_int_equal(ugpu_device_suspend_prepare(s->fx.dev), 0);
	st = pm_stats(s);
	assert_int_equal(st.spill_prepare_bytes, 7 * MiB);
	assert_int_equal(dir_files(s, NULL, 0), 1);
	assert_true(log_has("O_DIRECT"));

	/* after prepare: one API write into bo2 over a chunk boundary, CPU
	 * stores into bo3, one into bo0 (in memory) */
	poke(s, 2, 64 * KiB - 10, 20, 1);
	memset(map + 3 * MiB + 5, 0x11, 100);
	memset(s->model[3] + 3 * MiB + 5, 0x11, 100);
	poke(s, 0, 0, 1, 2);
	assert_int_equal(ugpu_device_suspend(s->fx.dev), 0);
	st = pm_stats(s);
	assert_int_equal(st.spilled_bos, 2);
	assert_int_equal(st.spill_window_bytes, 3 * BACKUP_CHUNK);
	assert_int_equal(ugpu_device_resume(s->fx.dev), 0);
	assert_int_equal(pm_stats(s).spill_read_bytes, 7 * MiB);
	assert_int_equal(dir_files(s, NULL, 0), 0);
	check_all(s);

	/* no prepare: the window makes the backups and spills them itself */
	poke(s, 3, 4 * MiB - 1, 1, 3);
	assert_int_equal(ugpu_device_suspend(s->fx.dev), 0);
	assert_int_equal(pm_stats(s).spill_window_bytes, 7 * MiB);
	assert_int_equal(dir_files(s, NULL, 0), 1);
	assert_int_equal(ugpu_device_resume(s->fx.dev), 0);
	assert_int_equal(dir_files(s, NULL, 0), 0);
	check_all(s);

	/* cancel removes the file */
	assert_int_equal(ugpu_device_suspend_prepare(s->fx.dev), 0);
	assert_int_equal(dir_files(s, NULL, 0), 1);
	assert_int_equal(ugpu_device_suspend_cancel(s->fx.dev), 0);
	assert_int_equal(dir_files(s, NULL, 0), 0);
	check_all(s);
	assert_true(pm_stats(s).spill_bytes >= 14 * MiB + 3 * BACKUP_CHUNK);
}

/* No limit, but the memory of a backup cannot be had: that one spills. */
static void test_spill_alloc_failure(void **state)
{
	struct sfx *s = *state;
	uint64_t kernel;

	/* How many backups come before the user BOs (kernel BOs first). */
	assert_int_equal(ugpu_device_suspend_prepare(s->fx.dev), 0);
	kernel = pm_stats(s).backups_prepared - NBO;
	assert_int_equal(ugpu_device_suspend_cancel(s->fx.dev), 0);

	/* Without a spill directory the failure fails prepare, as always. */
	bo_mgr_inject_backup_failure(s->fx.dev, kernel + 2, false);
	assert_int_equal(ugpu_device_suspend_prepare(s->fx.dev), -ENOMEM);
	assert_int_equal(pm_stats(s).state, UGPU_PM_ACTIVE);

	set_spill(s, 0);
	bo_mgr_inject_backup_failure(s->fx.dev, kernel + 2, false); /* bo1's */
	assert_int_equal(ugpu_device_suspend_prepare(s->fx.dev), 0);
	bo_mgr_inject_backup_failure(s->fx.dev, 0, false);
	assert_int_equal(pm_stats(s).spill_prepare_bytes, 2 * MiB);
	assert_true(log_has("no memory for the backup of BO 'bo1'"));
	poke(s, 1, 100, 1, 4);
	assert_int_equal(ugpu_device_suspend(s->fx.dev), 0);
	assert_int_equal(pm_stats(s).spilled_bos, 1);
	assert_int_equal(pm_stats(s).spill_window_bytes, BACKUP_CHUNK);
	assert_int_equal(ugpu_device_resume(s->fx.dev), 0);
	assert_int_equal(dir_files(s, NULL, 0), 0);
	check_all(s);
}

/* A byte of the file flipped while the device sleeps: resume names the BO
 * and the chunk, -EBADMSG; the others are intact. */
struct report {
	int n;
	char name[32];
	uint64_t off;
};

static void on_corrupt(void *user, const char *bo_name, uint64_t off, uint64_t size)
{
	struct report *r = user;

	(void)size;
	if (!r->n++)
		snprintf(r->name, sizeof(r->name), "%s", bo_name);
	r->off = off;
}

static void test_spill_corrupt(void **state)
{
	struct sfx *s = *state;
	struct report rep = { 0 };
	struct ugpu_pm_opts po = { .size = sizeof(po), .backup_mem_limit = 1,
				   .spill_dir = s->dir, .user = &rep, .corrupt = on_corrupt };
	char path[PATH_MAX];
	uint64_t at = 2 * MiB + 70 * KiB;
	uint8_t b;
	int fd;

	assert_int_equal(ugpu_device_pm_set_opts(s->fx.dev, &po), 0);
	assert_int_equal(ugpu_device_suspend_prepare(s->fx.dev), 0);
	assert_int_equal(ugpu_device_suspend(s->fx.dev), 0);
	assert_int_equal(pm_stats(s).spilled_bos, NBO);
	assert_int_equal(dir_files(s, path, sizeof(path)), 1);
	/* bo2's byte @at, where its backup lies in the file (internal) */
	assert_true(s->bo[2]->spilled);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, (off_t)(s->bo[2]->spill_off + at)), 1);
	b ^= 0x40;
	assert_int_equal(pwrite(fd, &b, 1, (off_t)(s->bo[2]->spill_off + at)), 1);
	close(fd);

	assert_int_equal(ugpu_device_resume(s->fx.dev), -EBADMSG);
	assert_int_equal(pm_stats(s).state, UGPU_PM_ACTIVE);
	assert_int_equal(pm_stats(s).corrupt, 1);
	assert_int_equal(rep.n, 1);
	assert_string_equal(rep.name, "bo2");
	assert_int_equal(rep.off, at / BACKUP_CHUNK * BACKUP_CHUNK);
	assert_true(log_has("BO 'bo2'"));
	assert_int_equal(dir_files(s, NULL, 0), 0);
	/* restored from what the file held: that byte, nothing else */
	s->model[2][at] ^= 0x40;
	check_all(s);
}

/* ---- write failures ------------------------------------------------------------ */

struct inject {
	int countdown; /* the Nth I/O fails ... */
	int err; /* ... with this */
	int seen;
};

static void inject_io(void *arg, enum test_point_id id, void *obj)
{
	struct inject *in = arg;

	(void)id;
	if (++in->seen == in->countdown)
		*(int *)obj = in->err;
}

/* A write failing in prepare or in the window: the call fails with the
 * error, the log names the BO, nothing is lost, the file is removed. */
static void test_spill_write_failure(void **state)
{
	struct sfx *s = *state;
	struct inject in = { .countdown = 2, .err = -EIO };

	set_spill(s, 1);
	/* prepare: state ACTIVE again, no file */
	test_point_set(TEST_POINT_SPILL_WRITE, inject_io, &in);
	assert_int_equal(ugpu_device_suspend_prepare(s->fx.dev), -EIO);
	test_point_set(TEST_POINT_SPILL_WRITE, NULL, NULL);
	assert_int_equal(pm_stats(s).state, UGPU_PM_ACTIVE);
	assert_true(log_has("spill file"));
	assert_true(log_has("failed: "));
	assert_int_equal(dir_files(s, NULL, 0), 0);
	check_all(s);

	/* the window, -ENOSPC: back to PREPARED, device in D0, nothing lost;
	 * suspend again works; after resume the data are whole */
	assert_int_equal(ugpu_device_suspend_prepare(s->fx.dev), 0);
	poke(s, 3, 0, 3 * BACKUP_CHUNK, 5);
	poke(s, 2, 0, BACKUP_CHUNK, 6);
	in = (struct inject){ .countdown = 2, .err = -ENOSPC };
	test_point_set(TEST_POINT_SPILL_WRITE, inject_io, &in);
	assert_int_equal(ugpu_device_suspend(s->fx.dev), -ENOSPC);
	test_point_set(TEST_POINT_SPILL_WRITE, NULL, NULL);
	assert_int_equal(pm_stats(s).state, UGPU_PM_PREPARED);
	check_all(s);
	poke(s, 1, 5, 1, 7);
	assert_int_equal(ugpu_device_suspend(s->fx.dev), 0);
	assert_int_equal(ugpu_device_resume(s->fx.dev), 0);
	check_all(s);
	assert_int_equal(dir_files(s, NULL, 0), 0);

	/* the window, -EIO, then cancel: file gone, data whole */
	assert_int_equal(ugpu_device_suspend_prepare(s->fx.dev), 0);
	poke(s, 0, 0, 1, 8);
	in = (struct inject){ .countdown = 1, .err = -EIO };
	test_point_set(TEST_POINT_SPILL_WRITE, inject_io, &in);
	assert_int_equal(ugpu_device_suspend(s->fx.dev), -EIO);
	test_point_set(TEST_POINT_SPILL_WRITE, NULL, NULL);
	assert_int_equal(ugpu_device_suspend_cancel(s->fx.dev), 0);
	assert_int_equal(dir_files(s, NULL, 0), 0);
	check_all(s);
}

/* A real full filesystem: a 1 MiB tmpfs (root only, in a mount namespace of
 * the test's own). The room is reserved when the backup is made, so prepare
 * fails with -ENOSPC, and so does a suspend without prepare. */
static void test_spill_tiny_fs(void **state)
{
	struct sfx *s = *state;

	if (geteuid() != 0 || unshare(CLONE_NEWNS) ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
	    mount("tmpfs", s->dir, "tmpfs", 0, "size=1m")) {
		print_message("skipped: a 1 MiB tmpfs needs root (mount namespace)\n");
		skip();
	}
	set_spill(s, 1);
	assert_int_equal(ugpu_device_suspend_prepare(s->fx.dev), -ENOSPC);
	assert_true(log_has("no room for the backup of BO"));
	assert_true(log_has("No space left on device"));
	assert_int_equal(pm_stats(s).state, UGPU_PM_ACTIVE);
	assert_int_equal(dir_files(s, NULL, 0), 0);
	check_all(s);
	assert_int_equal(ugpu_device_suspend(s->fx.dev), -ENOSPC);
	assert_int_equal(pm_stats(s).state, UGPU_PM_ACTIVE);
	assert_int_equal(dir_files(s, NULL, 0), 0);
	check_all(s);
}

/* A filesystem refusing O_DIRECT (injected: the open fails with EINVAL as
 * theirs does): the file goes through the page cache, the log says so. */
static void inject_open(void *arg, enum test_point_id id, void *obj)
{
	(void)arg;
	(void)id;
	*(int *)obj = -EINVAL;
}

static void test_spill_no_direct(void **state)
{
	struct sfx *s = *state;

	set_spill(s, 1);
	test_point_set(TEST_POINT_SPILL_OPEN, inject_open, NULL);
	assert_int_equal(ugpu_device_suspend_prepare(s->fx.dev), 0);
	test_point_set(TEST_POINT_SPILL_OPEN, NULL, NULL);
	assert_true(log_has("takes no O_DIRECT"));
	poke(s, 3, 1 * MiB, 10, 9);
	assert_int_equal(ugpu_device_suspend(s->fx.dev), 0);
	assert_int_equal(ugpu_device_resume(s->fx.dev), 0);
	assert_int_equal(dir_files(s, NULL, 0), 0);
	check_all(s);
}

/* Fail every call up to the Nth. */
static void inject_upto(void *arg, enum test_point_id id, void *obj)
{
	struct inject *in = arg;

	(void)id;
	if (++in->seen <= in->countdown)
		*(int *)obj = in->err;
}

/* Memory short for the staging too: it shrinks (4 MiB slots, then 2, 1,
 * 512, 256 KiB) and the bytes go in more pieces; with none at all, prepare
 * fails cleanly. */
static void test_spill_staging_short(void **state)
{
	struct sfx *s = *state;
	struct inject in = { .countdown = 2, .err = -ENOMEM };

	set_spill(s, 1);
	/* the 4 and 2 MiB slots cannot be had: 1 MiB ones; prepare writes
	 * bo3 (4 MiB) in four pieces */
	test_point_set(TEST_POINT_SPILL_STAGING, inject_upto, &in);
	assert_int_equal(ugpu_device_suspend_prepare(s->fx.dev), 0);
	test_point_set(TEST_POINT_SPILL_STAGING, NULL, NULL);
	assert_int_equal(in.seen, 3);
	assert_true(log_has("memory is short: staging of 4096 KiB, not 16384"));
	poke(s, 3, 1 * MiB - 10, 20, 10);
	assert_int_equal(ugpu_device_suspend(s->fx.dev), 0);
	assert_int_equal(pm_stats(s).spill_window_bytes, 2 * BACKUP_CHUNK);
	assert_int_equal(ugpu_device_resume(s->fx.dev), 0);
	assert_int_equal(dir_files(s, NULL, 0), 0);
	check_all(s);

	/* none at all: prepare fails, nothing kept */
	in = (struct inject){ .countdown = 100, .err = -ENOMEM };
	test_point_set(TEST_POINT_SPILL_STAGING, inject_upto, &in);
	assert_int_equal(ugpu_device_suspend_prepare(s->fx.dev), -EIO);
	test_point_set(TEST_POINT_SPILL_STAGING, NULL, NULL);
	assert_int_equal(in.seen, 5); /* 4 MiB, 2 MiB, 1 MiB, 512 KiB, 256 KiB */
	assert_true(log_has("no staging memory"));
	assert_int_equal(pm_stats(s).state, UGPU_PM_ACTIVE);
	assert_int_equal(dir_files(s, NULL, 0), 0);
	check_all(s);
}

/* Removed while suspended: the spilled backups are read back and kept as
 * the BOs' system memory; the file goes with the last one. */
static void test_spill_removal(void **state)
{
	struct sfx *s = *state;
	struct ugpu_bo_info bi = { .size = sizeof(bi) };
	struct ugpu_unplug_info ui = { .size = sizeof(ui) };
	int i;

	set_spill(s, 2 * MiB);
	assert_int_equal(ugpu_device_suspend_prepare(s->fx.dev), 0);
	assert_int_equal(ugpu_device_suspend(s->fx.dev), 0);
	assert_true(pm_stats(s).spilled_bos >= 2);
	assert_int_equal(ugpu_device_unplug(s->fx.dev), 0);
	assert_int_equal(ugpu_device_unplug_info(s->fx.dev, &ui), 0);
	assert_int_equal(ui.bos_adopted, NBO);
	assert_int_equal(ui.bos_lost, 0);
	assert_int_equal(dir_files(s, NULL, 0), 0);
	for (i = 0; i < NBO; i++) {
		assert_int_equal(ugpu_bo_query(s->bo[i], &bi), 0);
		assert_int_equal(bi.placement, UGPU_PLACEMENT_SYSTEM);
		assert_false(bi.lost);
	}
	check_all(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_spill_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spill_alloc_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spill_corrupt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spill_write_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spill_no_direct, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spill_staging_short, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spill_removal, setup, teardown),
		/* last: it moves the test into a mount namespace of its own */
		cmocka_unit_test_setup_teardown(test_spill_tiny_fs, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
