/* SPDX-License-Identifier: MIT */
/*
 * One GPU kernel, run to its end: the tests' way to make a device touch
 * memory (include/ugpu/vm.h); and the memory they run on. Public API only.
 */
#ifndef UGPU_TESTS_KERNEL_UTIL_H
#define UGPU_TESTS_KERNEL_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

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

/* Exactly [a, a + @bytes) of private anonymous memory, @a aligned to
 * @align (a power of two): the memory shared virtual memory's tests run
 * kernels on. A PROT_NONE page stays on each side, so the kernel never
 * merges the buffer with a neighbouring anonymous mapping: shared virtual
 * memory registers the whole mapping a buffer is in (docs/svm.md, "What is
 * registered"), and a sanitizer's runtime memory merged into it hung every
 * thread under TSan. Aborts when the process has no address space left. */
static inline void *map_anon(size_t bytes, size_t align)
{
	size_t guard = 4096, len = bytes + align + 2 * guard;
	char *p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uintptr_t a;

	if (p == MAP_FAILED) {
		perror("map_anon");
		abort();
	}
	a = ((uintptr_t)p + guard + align - 1) & ~(uintptr_t)(align - 1);
	if (mprotect((void *)a, bytes, PROT_READ | PROT_WRITE)) {
		perror("map_anon");
		abort();
	}
	if (a - guard > (uintptr_t)p)
		munmap(p, a - guard - (uintptr_t)p);
	if ((uintptr_t)p + len > a + bytes + guard)
		munmap((void *)(a + bytes + guard), (uintptr_t)p + len - (a + bytes + guard));
	return (void *)a;
}

#endif
