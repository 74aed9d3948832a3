/* SPDX-License-Identifier: MIT */
/*
 * The driver's own heap. Force-included into every source of the library and
 * of the in-process reference device (CMake's -include), so their
 * malloc/calloc/realloc/aligned_alloc/strdup/free come from base/alloc.c
 * instead of the C library's heap.
 *
 * Why: with shared virtual memory a program's kernels run on its malloc'd
 * memory, and a range moved into VRAM is unmapped from the process until a
 * CPU touch brings it home through the driver's fault handler. Were the
 * driver's own objects (ranges, work items, VMs, queues, the allocator's
 * metadata) in the same heap pages as the program's data, a 2 MiB range could
 * take them along: a driver thread would then fault on its own data while it
 * holds a lock the fault handler needs, and hang. The driver's heap lives in
 * mappings of its own that no range ever covers (docs/svm.md, "Memory kinds").
 *
 * Memory the C library allocated itself (realpath(NULL), a library's own
 * objects) may still be passed to free(): it goes back to the C library.
 *
 * Sanitizer builds (ASan) keep the C library's allocator, so that use after
 * free and leaks in the driver stay visible to the sanitizer.
 *
 * aligned_alloc() takes alignments up to a page (the driver needs 64). A
 * program that links both libugpu.so and the reference device's archive
 * (ugpu-demo) has two such heaps, one per binary, each freeing only its own
 * blocks; nothing crosses between them.
 */
#ifndef UGPU_BASE_ALLOC_H
#define UGPU_BASE_ALLOC_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

void *ugpu_mem_alloc(size_t size);
void *ugpu_mem_zalloc(size_t n, size_t size);
void *ugpu_mem_realloc(void *p, size_t size);
void *ugpu_mem_aligned(size_t align, size_t size);
char *ugpu_mem_strdup(const char *s);
void ugpu_mem_free(void *p);

/* Is @p inside the driver's heap (reserved address space)? */
int ugpu_mem_owns(const void *p);
/* The driver heap's reserved span, for the SVM code: ranges never cover it.
 * *@start = *@end = 0 before the first allocation. */
void ugpu_mem_span(unsigned long *start, unsigned long *end);

#ifndef UGPU_LIBC_HEAP
#define malloc(n) ugpu_mem_alloc(n)
#define calloc(n, s) ugpu_mem_zalloc(n, s)
#define realloc(p, n) ugpu_mem_realloc(p, n)
#define aligned_alloc(a, n) ugpu_mem_aligned(a, n)
#define strdup(s) ugpu_mem_strdup(s)
#define free(p) ugpu_mem_free(p)
#endif

#endif /* UGPU_BASE_ALLOC_H */
