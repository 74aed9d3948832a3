/* SPDX-License-Identifier: MIT */
/*
 * One GPU kernel, run to its end: the tests' way to make a device touch
 * memory (include/ugpu/vm.h). Public API only.
 */
#ifndef UGPU_TESTS_KERNEL_UTIL_H
#define UGPU_TESTS_KERNEL_UTIL_H

#include <stdint.h>
#include <string.h>

#include <ugpu/vm.h>

/* Submit @op over [@p, +@bytes) (with @value) on @q and wait up to
 * @wait_ms: the submission's or the wait's error, else how the kernel
 * ended (@r->status); @r filled. */
static inline int run_kernel(struct ugpu_queue *q, enum ugpu_kernel_op op, const void *p,
			     uint64_t bytes, uint64_t value, int wait_ms,
			     struct ugpu_kernel_result *r)
{
	struct ugpu_kernel k = { .size = sizeof(k), .op = op, .va = (uintptr_t)p, .bytes = bytes,
				 .value = value };
	uint64_t fence;
	int ret;

	memset(r, 0, sizeof(*r));
	r->size = sizeof(*r);
	ret = ugpu_queue_submit(q, &k, &fence);
	if (!ret)
		ret = ugpu_fence_wait(q, fence, wait_ms, r);
	return ret ? ret : r->status;
}

#endif
