/* SPDX-License-Identifier: MIT */
/*
 * Shared fixture of the shared-virtual-memory tests (test_svm,
 * test_svm_policy): a 64 MiB reference device with runtime PM's autosuspend
 * off, a mirror VM over the whole user address space and one queue on it;
 * each case runs with UFFDIO_MOVE, or with the write-protection path Linux
 * 6.1 has (setup_wp: UGPU_SVM_NO_MOVE), as on a kernel without write
 * protection (setup_no_wp: UGPU_SVM_NO_WP), or on a device of layout 1.1
 * (setup_v11: no NO_ATOMIC leaf bit). Header-only, included by
 * one file of each executable.
 */
#ifndef UGPU_TESTS_SVM_FIXTURE_H
#define UGPU_TESTS_SVM_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include <ugpu/rpm.h>
#include <ugpu/svm.h>
#include <ugpu/vm.h>

#include "kernel_util.h"
#include "test_bo_common.h"

#define MIB (1ull << 20)
#define KIB (1ull << 10)
#define WAIT_MS 20000

struct svm_fx {
	struct fx *f;
	struct ugpu_vm *vm;
	struct ugpu_queue *q;
};

/* The write-protection path instead of UFFDIO_MOVE (set by each setup). */
static bool no_move;

enum svm_fx_flags {
	SVM_FX_WP_PATH = 1 << 0, /* UGPU_SVM_NO_MOVE: Linux 6.1's path */
	SVM_FX_NO_WP = 1 << 1, /* UGPU_SVM_NO_WP: as a kernel without write protection */
};

static inline void svm_fx_env(const char *name, bool on)
{
	if (on)
		setenv(name, "1", 1);
	else
		unsetenv(name);
}

/* @flags: enum svm_fx_flags; @minor: the reference device's VERSION minor
 * (0: the newest). */
static inline int svm_fx_setup(void **state, unsigned int flags, unsigned int minor)
{
	struct svm_fx *s = calloc(1, sizeof(*s));
	struct ugpu_vm_opts o = { .size = sizeof(o), .flags = UGPU_VM_MIRROR,
				  .mirror_start = 0x10000, .mirror_size = (1ull << 47) - 0x20000,
				  .name = "svm" };
	struct sim_opts so;
	void *fx_state;

	no_move = flags & SVM_FX_WP_PATH;
	svm_fx_env("UGPU_SVM_NO_MOVE", no_move);
	svm_fx_env("UGPU_SVM_NO_WP", flags & SVM_FX_NO_WP);
	sim_opts_init(&so);
	so.vram_size = 64 * MIB;
	if (minor)
		so.version_minor = minor;
	if (!s || fx_setup_opts(&fx_state, &so))
		return -1;
	s->f = fx_state;
	ugpu_device_rpm_set_autosuspend_delay(s->f->dev, -1);
	if (ugpu_vm_create(s->f->dev, &o, &s->vm) || ugpu_queue_create(s->vm, NULL, &s->q))
		return -1;
	*state = s;
	return 0;
}

static inline int setup(void **state)
{
	return svm_fx_setup(state, 0, 0);
}

static inline int setup_wp(void **state)
{
	return svm_fx_setup(state, SVM_FX_WP_PATH, 0);
}

static inline int setup_no_wp(void **state)
{
	return svm_fx_setup(state, SVM_FX_NO_WP, 0);
}

static inline int setup_v11(void **state)
{
	return svm_fx_setup(state, 0, 1);
}

static inline int svm_fx_teardown(void **state)
{
	struct svm_fx *s = *state;
	void *fx_state = s->f;

	ugpu_queue_destroy(s->q);
	ugpu_vm_destroy(s->vm);
	free(s);
	no_move = false;
	unsetenv("UGPU_SVM_NO_WP");
	return fx_teardown(&fx_state);
}

static inline int kernel(struct svm_fx *s, enum ugpu_kernel_op op, const void *p, uint64_t bytes,
			 uint64_t value, struct ugpu_kernel_result *r)
{
	return run_kernel(s->q, op, p, bytes, value, WAIT_MS, r);
}

static inline struct ugpu_svm_stats stats(struct svm_fx *s)
{
	struct ugpu_svm_stats st = { .size = sizeof(st) };

	assert_int_equal(ugpu_device_svm_stats(s->f->dev, &st), 0);
	return st;
}

/* The stream prefetcher's depth on the fixture's device (2 by default). */
static inline void svm_fx_ahead(struct svm_fx *s, uint32_t depth)
{
	struct ugpu_svm_tuning t = { .size = sizeof(t) };

	assert_int_equal(ugpu_svm_get_tuning(s->f->dev, &t), 0);
	t.fault_ahead = depth;
	assert_int_equal(ugpu_svm_set_tuning(s->f->dev, &t), 0);
}

#endif
