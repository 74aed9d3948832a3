/* SPDX-License-Identifier: MIT */
/*
 * test_vma_lookup: svm/range.c's look-up of the CPU mapping holding an
 * address. Where the kernel answers PROCMAP_QUERY (Linux 6.11) vma_lookup()
 * asks it; vma_lookup_maps() parses /proc/self/maps. Both must say the same
 * for every kind of mapping shared virtual memory meets: private anonymous
 * memory (and a piece of it split off by mprotect), shared anonymous and
 * memfd memory, a file mapping (with a path longer than the name buffer
 * too), the heap, the stack, and an address with nothing mapped.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "svm/svm.h"

static void same(uint64_t addr, const char *what)
{
	struct vma a, b;
	int ra, rb;

	memset(&a, 0x55, sizeof(a));
	memset(&b, 0x55, sizeof(b));
	ra = vma_lookup(addr, &a);
	rb = vma_lookup_maps(addr, &b);
	if (ra != rb)
		fail_msg("%s: vma_lookup %d, the maps %d", what, ra, rb);
	if (ra)
		return;
	if (a.start != b.start || a.end != b.end || a.readable != b.readable ||
	    a.writable != b.writable || a.shared != b.shared || a.anon != b.anon)
		fail_msg("%s: [%#llx, %#llx) r%d w%d s%d anon%d against the maps' [%#llx, %#llx) r%d w%d s%d anon%d",
			 what, (unsigned long long)a.start, (unsigned long long)a.end, a.readable,
			 a.writable, a.shared, a.anon, (unsigned long long)b.start,
			 (unsigned long long)b.end, b.readable, b.writable, b.shared, b.anon);
	if (!(addr >= a.start && addr < a.end))
		fail_msg("%s: %#llx is not in [%#llx, %#llx)", what, (unsigned long long)addr,
			 (unsigned long long)a.start, (unsigned long long)a.end);
	/* the path may be cut differently; the start of it agrees */
	if (strncmp(a.what, b.what, 16))
		fail_msg("%s: named '%s', the maps say '%s'", what, a.what, b.what);
}

static void test_kinds(void **state)
{
	const size_t len = 8 << 20;
	char *priv, *shr, *mfd_map, *file_map, *hole;
	int mfd, fd;
	char path[600];
	int on_stack = 0;
	void *heap = malloc(100);

	(void)state;
	priv = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	shr = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(priv != MAP_FAILED && shr != MAP_FAILED);
	same((uintptr_t)priv, "private anonymous");
	same((uintptr_t)priv + len - 1, "private anonymous, last byte");
	/* a piece in the middle made read-only: three mappings */
	assert_int_equal(mprotect(priv + (2 << 20), 1 << 20, PROT_READ), 0);
	same((uintptr_t)priv + (2 << 20) + 5, "the read-only piece");
	same((uintptr_t)priv + (3 << 20), "after the read-only piece");
	same((uintptr_t)shr + 4096, "shared anonymous");

	mfd = memfd_create("vma-test", MFD_CLOEXEC);
	assert_true(mfd >= 0);
	assert_int_equal(ftruncate(mfd, 1 << 20), 0);
	mfd_map = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	assert_true(mfd_map != MAP_FAILED);
	same((uintptr_t)mfd_map, "memfd");

	/* a file whose path is longer than the 256-byte name buffer */
	snprintf(path, sizeof(path), "/tmp/ugpu-vma-%d-%0300d", (int)getpid(), 0);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		/* a file system without such names: a short one */
		snprintf(path, sizeof(path), "/tmp/ugpu-vma-%d", (int)getpid());
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	}
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 8192), 0);
	file_map = mmap(NULL, 8192, PROT_READ, MAP_PRIVATE, fd, 0);
	assert_true(file_map != MAP_FAILED);
	same((uintptr_t)file_map + 4096, "a file");
	unlink(path);

	same((uintptr_t)heap, "the heap (or the driver's own heap)");
	same((uintptr_t)&on_stack, "the stack");

	/* nothing mapped: a hole made by unmapping */
	hole = mmap(NULL, 3 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(hole != MAP_FAILED);
	assert_int_equal(munmap(hole + (1 << 20), 1 << 20), 0);
	same((uintptr_t)hole + (1 << 20) + 100, "an unmapped hole");
	{
		struct vma v;

		assert_int_equal(vma_lookup((uintptr_t)hole + (1 << 20), &v), -ENOENT);
	}

	munmap(hole, 1 << 20);
	munmap(hole + (2 << 20), 1 << 20);
	munmap(file_map, 8192);
	close(fd);
	munmap(mfd_map, 1 << 20);
	close(mfd);
	munmap(priv, len);
	munmap(shr, len);
	free(heap);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kinds),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
