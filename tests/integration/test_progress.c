/* SPDX-License-Identifier: MIT */
/*
 * Progress of long operations (ugpu_context_set_progress()), against the
 * reference device: host-suspend prepare (eviction, backups), the window's
 * copies, resume's copies, an eviction to make room, an orderly removal and
 * an SVM prefetch each report a first report (done 0), done that never
 * decreases and never passes the total, and a last report whose done is what
 * the operation moved; the size filter and unsetting the hook hold; the
 * tools' line says what the bar shows.
 */
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>

#include <ugpu/vm.h>

#include "integration/test_bo_common.h"
#include "kernel_util.h"
#include "tools/common/progress_bar.h"

#define MiB (1ull << 20)
#define MAX_REPORTS 100000

struct rec {
	pthread_mutex_t lock;
	struct ugpu_progress r[MAX_REPORTS];
	char dev[32]; /* the device named by the last report */
	size_t n;
};

static struct rec rec = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void on_progress(void *user, const struct ugpu_progress *p)
{
	struct rec *r = user;

	pthread_mutex_lock(&r->lock);
	if (r->n < MAX_REPORTS) {
		r->r[r->n] = *p;
		r->r[r->n++].device = NULL; /* valid only during the call */
	}
	if (p->device)
		snprintf(r->dev, sizeof(r->dev), "%s", p->device);
	pthread_mutex_unlock(&r->lock);
}

static void rec_reset(void)
{
	pthread_mutex_lock(&rec.lock);
	rec.n = 0;
	rec.dev[0] = '\0';
	pthread_mutex_unlock(&rec.lock);
}

/*
 * The reports of one operation @op (the @nth of that kind, from 0) are well
 * formed: first done 0 and not finished, done never decreasing and never past
 * the total, one last report finished. Returns that last report.
 */
static struct ugpu_progress op_check(enum ugpu_progress_op op, int nth)
{
	struct ugpu_progress last = { 0 };
	int seen = -1;
	uint64_t done = 0;
	bool open = false;

	for (size_t i = 0; i < rec.n; i++) {
		const struct ugpu_progress *p = &rec.r[i];

		if (p->op != op)
			continue;
		if (!open) {
			seen++;
			if (seen == nth) {
				assert_int_equal(p->done, 0);
				assert_int_equal(p->finished, 0);
			}
			open = true;
			done = 0;
		}
		if (seen == nth) {
			assert_true(p->done >= done);
			assert_true(p->done <= p->total);
			done = p->done;
			last = *p;
		}
		if (p->finished) {
			open = false;
			if (seen == nth)
				return last;
		}
	}
	fail_msg("operation %s #%d: %s", ugpu_progress_op_name(op), nth,
		 seen < nth ? "not reported" : "never finished");
	return last;
}

static int op_count(enum ugpu_progress_op op)
{
	int n = 0;

	for (size_t i = 0; i < rec.n; i++)
		n += rec.r[i].op == op && rec.r[i].finished;
	return n;
}

static struct ugpu_bo *bo_make(struct fx *f, uint64_t bytes, bool pinned, uint8_t fill)
{
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = bytes,
				  .placements = { UGPU_PLACEMENT_VRAM, UGPU_PLACEMENT_SYSTEM },
				  .flags = pinned ? UGPU_BO_PINNED : 0, .name = "progress" };
	struct ugpu_bo *bo;
	uint8_t *buf = malloc(bytes);

	assert_non_null(buf);
	if (pinned)
		o.placements[1] = 0;
	assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), 0);
	memset(buf, fill, bytes);
	assert_int_equal(ugpu_bo_write(bo, 0, buf, bytes), 0);
	free(buf);
	return bo;
}

static void bo_check(struct ugpu_bo *bo, uint64_t bytes, uint8_t fill)
{
	uint8_t *buf = malloc(bytes);

	assert_non_null(buf);
	assert_int_equal(ugpu_bo_read(bo, 0, buf, bytes), 0);
	for (uint64_t i = 0; i < bytes; i++)
		if (buf[i] != fill)
			fail_msg("byte %" PRIu64 " is 0x%02x, not 0x%02x", i, buf[i], fill);
	free(buf);
}

static int setup(void **state)
{
	rec_reset();
	return fx_setup_vram_no_autosuspend(state, 64 * MiB);
}

/* A suspend cycle: prepare evicts the unpinned BOs and backs up the pinned
 * ones, the window copies what was written since, resume copies back. */
static void test_suspend_cycle(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *pin[3], *mov[2];
	struct ugpu_progress p;
	uint8_t b = 0x77;

	assert_int_equal(ugpu_context_set_progress(f->ctx, on_progress, &rec, 0, 0), 0);
	for (int i = 0; i < 3; i++)
		pin[i] = bo_make(f, 4 * MiB, true, (uint8_t)(0x10 + i));
	for (int i = 0; i < 2; i++)
		mov[i] = bo_make(f, 2 * MiB, false, (uint8_t)(0x20 + i));
	rec_reset();
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	p = op_check(UGPU_PROGRESS_EVICT, 0);
	assert_int_equal(p.total, 4 * MiB);
	assert_int_equal(p.done, 4 * MiB);
	assert_int_equal(p.err, 0);
	/* the pinned BOs and the driver's own (rings, page tables) */
	p = op_check(UGPU_PROGRESS_BACKUP, 0);
	assert_in_range(p.total, 12 * MiB, 13 * MiB);
	assert_int_equal(p.done, p.total);
	/* the device's name in the logs: its URI (cut to the record's size) */
	assert_true(rec.dev[0] && !strncmp(rec.dev, f->uri, strlen(rec.dev)));
	/* one byte written after prepare: the window copies its 64 KiB chunk */
	assert_int_equal(ugpu_bo_write(pin[1], 5, &b, 1), 0);
	rec_reset();
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	p = op_check(UGPU_PROGRESS_BACKUP, 0);
	assert_in_range(p.total, 64 * 1024, MiB - 1);
	assert_int_equal(p.done, p.total);
	rec_reset();
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	p = op_check(UGPU_PROGRESS_RESTORE, 0);
	assert_in_range(p.total, 12 * MiB, 13 * MiB);
	assert_int_equal(p.done, p.total);
	assert_int_equal(p.err, 0);
	for (int i = 0; i < 3; i++) {
		if (i == 1) {
			uint8_t got;

			assert_int_equal(ugpu_bo_read(pin[1], 5, &got, 1), 0);
			assert_int_equal(got, 0x77);
			assert_int_equal(ugpu_bo_write(pin[1], 5, &(uint8_t){ 0x11 }, 1), 0);
		}
		bo_check(pin[i], 4 * MiB, (uint8_t)(0x10 + i));
		ugpu_bo_put(pin[i]);
	}
	for (int i = 0; i < 2; i++) {
		bo_check(mov[i], 2 * MiB, (uint8_t)(0x20 + i));
		ugpu_bo_put(mov[i]);
	}
}

/* A BO that needs room: the evictions it causes are one operation over the
 * bytes it needs; many small BOs give many steps. */
static void test_evict_for_room(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *small[96], *big;
	struct ugpu_progress p;
	size_t steps = 0;

	for (int i = 0; i < 96; i++)
		small[i] = bo_make(f, 512 * 1024, false, (uint8_t)i);
	assert_int_equal(ugpu_context_set_progress(f->ctx, on_progress, &rec, 0, 0), 0);
	rec_reset();
	big = bo_make(f, 32 * MiB, false, 0xb1);
	p = op_check(UGPU_PROGRESS_EVICT, 0);
	assert_int_equal(p.total, 32 * MiB);
	assert_true(p.done > 0 && p.done <= 32 * MiB);
	assert_int_equal(p.err, 0);
	for (size_t i = 0; i < rec.n; i++)
		steps += rec.r[i].op == UGPU_PROGRESS_EVICT && !rec.r[i].finished;
	assert_true(steps > 8); /* every 512 KiB BO is a step (interval 0) */
	bo_check(big, 32 * MiB, 0xb1);
	for (int i = 0; i < 96; i++) {
		bo_check(small[i], 512 * 1024, (uint8_t)i);
		ugpu_bo_put(small[i]);
	}
	ugpu_bo_put(big);
}

/* A small BO that needs a big victim out: the eviction's total grows to what
 * it moved, so a filter above the room needed still shows it. */
static void test_evict_total_grows(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *fill, *big, *small;
	struct ugpu_progress p;
	struct ugpu_device_mem m = { .size = sizeof(m) };

	big = bo_make(f, 32 * MiB, false, 0x5b);
	/* the rest of VRAM in one pinned BO: the small one must evict big */
	assert_int_equal(ugpu_device_mem_stats(f->dev, &m), 0);
	fill = bo_make(f, m.vram_free, true, 0x11);
	assert_int_equal(ugpu_device_mem_stats(f->dev, &m), 0);
	assert_int_equal(m.vram_free, 0);
	assert_int_equal(ugpu_context_set_progress(f->ctx, on_progress, &rec, 16 * MiB, 0), 0);
	rec_reset();
	small = bo_make(f, 64 * 1024, false, 0x5c);
	p = op_check(UGPU_PROGRESS_EVICT, 0);
	assert_int_equal(p.total, 32 * MiB);
	assert_int_equal(p.done, 32 * MiB);
	assert_int_equal(p.err, 0);
	bo_check(big, 32 * MiB, 0x5b);
	bo_check(small, 64 * 1024, 0x5c);
	ugpu_bo_put(fill);
	ugpu_bo_put(big);
	ugpu_bo_put(small);
}

/*
 * A hook set while an operation runs gets none of its reports, and the old
 * hook gets none after the set returns. The old hook, at the backups' first
 * step, lets a thread set the new one and stays in the call a while, so the
 * set waits for it and lands in the middle of the operation.
 */
static struct rec rec2 = { .lock = PTHREAD_MUTEX_INITIALIZER };
static struct ugpu_context *swap_ctx;
static sem_t swap_go;
static size_t old_n_at_swap = SIZE_MAX;

static void on_progress_swap(void *user, const struct ugpu_progress *p)
{
	static bool asked;

	on_progress(user, p);
	if (p->op == UGPU_PROGRESS_BACKUP && !p->finished && p->done > 0 && !asked) {
		asked = true;
		sem_post(&swap_go);
		usleep(100000); /* the swapper blocks on the hook lock meanwhile */
	}
}

static void *swapper(void *arg)
{
	(void)arg;
	sem_wait(&swap_go);
	ugpu_context_set_progress(swap_ctx, on_progress, &rec2, 0, 0);
	pthread_mutex_lock(&rec.lock);
	old_n_at_swap = rec.n;
	pthread_mutex_unlock(&rec.lock);
	return NULL;
}

static void test_swap_mid_operation(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo[4];
	pthread_t t;

	for (int i = 0; i < 4; i++)
		bo[i] = bo_make(f, 2 * MiB, true, (uint8_t)i);
	swap_ctx = f->ctx;
	rec2.n = 0;
	sem_init(&swap_go, 0, 0);
	assert_int_equal(pthread_create(&t, NULL, swapper, NULL), 0);
	assert_int_equal(ugpu_context_set_progress(f->ctx, on_progress_swap, &rec, 0, 0), 0);
	rec_reset();
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	pthread_join(t, NULL);
	/* nothing more to the old hook once the set returned: its last report
	 * was the one that let the swap go, not the backups' end */
	assert_int_equal(rec.n, old_n_at_swap);
	assert_false(rec.r[rec.n - 1].finished);
	/* nothing of that operation to the new one */
	for (size_t i = 0; i < rec2.n; i++)
		assert_int_not_equal(rec2.r[i].op, UGPU_PROGRESS_BACKUP);
	assert_int_equal(ugpu_device_suspend_cancel(f->dev), 0);
	sem_destroy(&swap_go);
	for (int i = 0; i < 4; i++)
		ugpu_bo_put(bo[i]);
}

/* Operations under the size filter are not reported; no hook, no reports. */
static void test_filter_and_unset(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo;

	bo = bo_make(f, 4 * MiB, true, 0x42);
	assert_int_equal(ugpu_context_set_progress(f->ctx, on_progress, &rec, 8 * MiB, 0), 0);
	rec_reset();
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(ugpu_device_suspend(f->dev), 0);
	assert_int_equal(ugpu_device_resume(f->dev), 0);
	assert_int_equal(rec.n, 0);
	assert_int_equal(ugpu_context_set_progress(f->ctx, on_progress, &rec, 4 * MiB, 0), 0);
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(ugpu_device_suspend_cancel(f->dev), 0);
	assert_int_equal(op_count(UGPU_PROGRESS_BACKUP), 1);
	assert_int_equal(ugpu_context_set_progress(f->ctx, NULL, NULL, 0, 0), 0);
	rec_reset();
	assert_int_equal(ugpu_device_suspend_prepare(f->dev), 0);
	assert_int_equal(ugpu_device_suspend_cancel(f->dev), 0);
	assert_int_equal(rec.n, 0);
	assert_int_equal(ugpu_context_set_progress(NULL, on_progress, &rec, 0, 0), -EINVAL);
	bo_check(bo, 4 * MiB, 0x42);
	ugpu_bo_put(bo);
}

/* An orderly removal moves the BOs out of VRAM: one operation over them. */
static void test_removal(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo[4];
	struct ugpu_progress p;

	for (int i = 0; i < 4; i++)
		bo[i] = bo_make(f, 3 * MiB, false, (uint8_t)(0x60 + i));
	assert_int_equal(ugpu_context_set_progress(f->ctx, on_progress, &rec, 0, 0), 0);
	rec_reset();
	assert_int_equal(ugpu_device_unplug(f->dev), 0);
	p = op_check(UGPU_PROGRESS_REMOVAL, 0);
	assert_int_equal(p.total, 12 * MiB);
	assert_int_equal(p.done, 12 * MiB);
	assert_int_equal(p.err, 0);
	for (int i = 0; i < 4; i++) {
		bo_check(bo[i], 3 * MiB, (uint8_t)(0x60 + i));
		ugpu_bo_put(bo[i]);
	}
}

/* An SVM prefetch of a span into VRAM and back: done is the span. */
static void test_prefetch(void **state)
{
	struct fx *f = *state;
	struct ugpu_vm_opts o = { .size = sizeof(o), .flags = UGPU_VM_MIRROR,
				  .mirror_start = 0x10000, .mirror_size = (1ull << 47) - 0x20000,
				  .name = "progress" };
	const size_t bytes = 8 * MiB;
	struct ugpu_progress p;
	struct ugpu_vm *vm;
	uint8_t *buf;

	if (ugpu_vm_create(f->dev, &o, &vm) == -EOPNOTSUPP)
		skip();
	buf = map_anon(bytes, 2 * MiB);
	assert_non_null(buf);
	memset(buf, 0x3c, bytes);
	assert_int_equal(ugpu_context_set_progress(f->ctx, on_progress, &rec, 0, 0), 0);
	rec_reset();
	assert_int_equal(ugpu_vm_prefetch(vm, (uintptr_t)buf, bytes, UGPU_PLACEMENT_VRAM), 0);
	p = op_check(UGPU_PROGRESS_PREFETCH, 0);
	assert_int_equal(p.total, bytes);
	assert_int_equal(p.done, bytes);
	assert_int_equal(p.err, 0);
	assert_int_equal(ugpu_vm_prefetch(vm, (uintptr_t)buf, bytes, UGPU_PLACEMENT_SYSTEM), 0);
	p = op_check(UGPU_PROGRESS_PREFETCH, 1);
	assert_int_equal(p.total, bytes);
	assert_int_equal(p.done, bytes);
	for (size_t i = 0; i < bytes; i++)
		if (buf[i] != 0x3c)
			fail_msg("byte %zu is 0x%02x after the prefetches", i, buf[i]);
	ugpu_vm_destroy(vm);
	munmap(buf, bytes);
}

/* What the tools draw: the operation, the device, the share done, failure. */
static void test_bar_line(void **state)
{
	struct ugpu_progress p = { .op = UGPU_PROGRESS_BACKUP, .device = "ugpu3",
				   .done = 64 * MiB, .total = 256 * MiB,
				   .elapsed_ns = 500000000 };
	char line[256];

	(void)state;
	progress_bar_format(&p, line, sizeof(line));
	assert_non_null(strstr(line, "backup"));
	assert_non_null(strstr(line, "ugpu3"));
	assert_non_null(strstr(line, " 25%"));
	assert_non_null(strstr(line, "64 MiB/256 MiB"));
	assert_non_null(strstr(line, "[######..................]"));
	assert_null(strstr(line, "done"));
	p.finished = 1;
	p.err = -EIO;
	progress_bar_format(&p, line, sizeof(line));
	assert_non_null(strstr(line, "FAILED"));
	assert_string_equal(ugpu_progress_op_name(UGPU_PROGRESS_PREFETCH), "prefetch");
	assert_string_equal(ugpu_progress_op_name((enum ugpu_progress_op)99), "?");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_suspend_cycle, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_evict_for_room, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_filter_and_unset, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_evict_total_grows, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_swap_mid_operation, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_removal, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_prefetch, setup, fx_teardown),
		cmocka_unit_test(test_bar_line),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
