/* SPDX-License-Identifier: MIT */
/*
 * The driver's own heap (base/alloc.c), called directly (this test is built
 * without the force-included redirection, so its own malloc is the C
 * library's):
 *  - every size class and large sizes: blocks do not overlap, keep what is
 *    written, are 16-byte aligned, zeroed by zalloc also when reused;
 *  - realloc keeps the contents growing and shrinking; aligned up to a page;
 *  - every block lies inside ugpu_mem_span(), which is a mapping of its own
 *    in /proc/self/maps (never merged with a neighbour);
 *  - a pointer the C library allocated goes back to it through
 *    ugpu_mem_free() / ugpu_mem_realloc();
 *  - large runs are reused after free (the address space does not grow
 *    with a free/alloc cycle);
 *  - four threads allocating and freeing at once (TSan in its build) keep
 *    every block's pattern.
 * In ASan builds the heap is the C library's (UGPU_LIBC_HEAP): only the
 * behaviour, not the placement, is checked there.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

/* this file's own malloc/free stay the C library's */
#define UGPU_LIBC_HEAP
#include "base/alloc.h"
#include "rng.h"

static void fill(unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(seed * 131u + i * 7u);
}

static int check(const unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (unsigned char)(seed * 131u + i * 7u))
			return 0;
	return 1;
}

static int placed(void)
{
	unsigned long s, e;

	ugpu_mem_span(&s, &e);
	return s != 0;
}

static void test_sizes(void **state)
{
	static const size_t sizes[] = { 1, 8, 15, 16, 17, 100, 1000, 4080, 4096, 32752, 32753,
					65536, 100000, 1 << 20, (3 << 20) + 5 };
	void *p[sizeof(sizes) / sizeof(sizes[0])][4];
	unsigned long s = 0, e = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		for (int k = 0; k < 4; k++) {
			p[i][k] = ugpu_mem_alloc(sizes[i]);
			assert_non_null(p[i][k]);
			assert_int_equal((uintptr_t)p[i][k] % 16, 0);
			fill(p[i][k], sizes[i], (unsigned)(i * 4 + k));
		}
	ugpu_mem_span(&s, &e);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		for (int k = 0; k < 4; k++) {
			assert_true(check(p[i][k], sizes[i], (unsigned)(i * 4 + k)));
			if (placed()) {
				assert_true(ugpu_mem_owns(p[i][k]));
				assert_true((unsigned long)p[i][k] >= s &&
					    (unsigned long)p[i][k] + sizes[i] <= e);
			}
		}
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		for (int k = 0; k < 4; k++)
			ugpu_mem_free(p[i][k]);
	ugpu_mem_free(NULL);
}

static void test_zalloc_reused(void **state)
{
	unsigned char *a, *b;

	(void)state;
	for (size_t n = 24; n <= (1u << 20); n *= 4) {
		a = ugpu_mem_alloc(n);
		assert_non_null(a);
		memset(a, 0xa5, n);
		ugpu_mem_free(a);
		b = ugpu_mem_zalloc(1, n);
		assert_non_null(b);
		for (size_t i = 0; i < n; i++)
			assert_int_equal(b[i], 0);
		ugpu_mem_free(b);
	}
	assert_null(ugpu_mem_zalloc(SIZE_MAX / 2, 4)); /* overflow */
}

static void test_realloc_aligned_strdup(void **state)
{
	unsigned char *p = NULL;
	char *d;
	void *a;

	(void)state;
	for (size_t n = 1; n <= (2u << 20); n = n * 3 + 1) {
		size_t keep = n / 3;

		p = ugpu_mem_realloc(p, n);
		assert_non_null(p);
		if (keep)
			assert_true(check(p, keep, 9));
		fill(p, n, 9);
	}
	p = ugpu_mem_realloc(p, 10); /* shrink: keeps the first bytes */
	assert_true(check(p, 10, 9));
	assert_null(ugpu_mem_realloc(p, 0)); /* frees */
	for (size_t al = 1; al <= 4096; al *= 2) {
		a = ugpu_mem_aligned(al, 100);
		assert_non_null(a);
		assert_int_equal((uintptr_t)a % al, 0);
		fill(a, 100, 3);
		assert_true(check(a, 100, 3));
		ugpu_mem_free(a);
	}
	assert_null(ugpu_mem_aligned(3, 100));
	d = ugpu_mem_strdup("driver heap");
	assert_string_equal(d, "driver heap");
	ugpu_mem_free(d);
}

/* A block of the C library's goes back to it (ASan would catch a mismatch). */
static void test_foreign(void **state)
{
	char *p = malloc(64), *q = malloc(32);

	(void)state;
	assert_non_null(p);
	assert_non_null(q);
	memset(p, 0, 64);
	assert_false(ugpu_mem_owns(p));
	strcpy(q, "libc");
	ugpu_mem_free(p);
	q = ugpu_mem_realloc(q, 4096);
	assert_string_equal(q, "libc");
	assert_false(ugpu_mem_owns(q));
	free(q);
}

/* The span is a mapping of its own: the /proc/self/maps line holding a
 * block starts and ends inside the span. */
static void test_own_mapping(void **state)
{
	unsigned long s, e, a, b;
	char line[512];
	void *p = ugpu_mem_alloc(100);
	FILE *f;
	int found = 0;

	(void)state;
	if (!placed()) {
		ugpu_mem_free(p);
		skip();
	}
	ugpu_mem_span(&s, &e);
	f = fopen("/proc/self/maps", "re");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%lx-%lx", &a, &b) == 2 && (unsigned long)p >= a &&
		    (unsigned long)p < b) {
			assert_true(a >= s && b <= e);
			found = 1;
		}
	fclose(f);
	assert_true(found);
	ugpu_mem_free(p);
}

/* Freed large runs are reused and merged: a thousand 8 MiB alloc/free
 * cycles stay inside a few runs' worth of address space, and so does a
 * review's loop of mixed sizes (1 MiB, then 40 KiB: split runs must merge
 * again, or the address space grows with every cycle). */
static void test_large_reuse(void **state)
{
	void *first = ugpu_mem_alloc(8u << 20), *p;

	(void)state;
	ugpu_mem_free(first);
	for (int i = 0; i < 1000; i++) {
		p = ugpu_mem_alloc(8u << 20);
		assert_non_null(p);
		((char *)p)[0] = 1;
		((char *)p)[(8u << 20) - 1] = 2;
		if (placed())
			assert_ptr_equal(p, first);
		ugpu_mem_free(p);
	}
	for (int i = 0; i < 4000; i++) {
		void *a = ugpu_mem_alloc(1u << 20), *b;

		assert_non_null(a);
		ugpu_mem_free(a);
		b = ugpu_mem_alloc(40u << 10);
		assert_non_null(b);
		if (placed())
			assert_true((char *)b < (char *)first + (16u << 20));
		ugpu_mem_free(b);
	}
	/* zalloc of a reused large run reads zero without being cleared */
	p = ugpu_mem_alloc(1u << 20);
	memset(p, 0x5a, 1u << 20);
	ugpu_mem_free(p);
	p = ugpu_mem_zalloc(1, 1u << 20);
	for (size_t k = 0; k < (1u << 20); k += 4093)
		assert_int_equal(((unsigned char *)p)[k], 0);
	ugpu_mem_free(p);
	/* size 0: a block of its own */
	p = ugpu_mem_aligned(64, 0);
	first = ugpu_mem_aligned(64, 0);
	assert_non_null(p);
	assert_ptr_not_equal(p, first);
	ugpu_mem_free(p);
	ugpu_mem_free(first);
}

static void *worker(void *arg)
{
	struct rng r = { .s = (uint64_t)(uintptr_t)arg };
	void *held[64] = { 0 };
	size_t len[64] = { 0 };

	for (int i = 0; i < 20000; i++) {
		unsigned k = (unsigned)(rng_next(&r) % 64);

		if (held[k]) {
			if (!check(held[k], len[k], k + (unsigned)(uintptr_t)arg))
				return (void *)1;
			ugpu_mem_free(held[k]);
			held[k] = NULL;
		} else {
			len[k] = 1 + rng_next(&r) % (rng_next(&r) % 8 ? 2048 : 200000);
			held[k] = ugpu_mem_alloc(len[k]);
			if (!held[k])
				return (void *)2;
			fill(held[k], len[k], k + (unsigned)(uintptr_t)arg);
		}
	}
	for (unsigned k = 0; k < 64; k++)
		ugpu_mem_free(held[k]);
	return NULL;
}

/* A fork while other threads allocate: the child can allocate (the lock was
 * not copied held) and the parent's blocks are intact. */
static void *churn(void *arg)
{
	int *stop = arg;

	while (!__atomic_load_n(stop, __ATOMIC_RELAXED))
		ugpu_mem_free(ugpu_mem_alloc(64));
	return NULL;
}

static void test_fork(void **state)
{
	int stop = 0;
	pthread_t t;
	int st;

	(void)state;
	assert_int_equal(pthread_create(&t, NULL, churn, &stop), 0);
	for (int i = 0; i < 20; i++) {
		pid_t pid = fork();

		assert_true(pid >= 0);
		if (!pid) {
			void *p = ugpu_mem_alloc(100);

			_exit(p ? 0 : 1);
		}
		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	pthread_join(t, NULL);
}

static void test_threads(void **state)
{
	pthread_t t[4];
	void *ret;

	(void)state;
	for (uintptr_t i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, worker, (void *)(i + 1)), 0);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(t[i], &ret), 0);
		assert_null(ret);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_zalloc_reused),
		cmocka_unit_test(test_realloc_aligned_strdup),
		cmocka_unit_test(test_foreign),
		cmocka_unit_test(test_own_mapping),
		cmocka_unit_test(test_large_reuse),
		cmocka_unit_test(test_threads),
		cmocka_unit_test(test_fork),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
