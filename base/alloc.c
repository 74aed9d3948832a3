// SPDX-License-Identifier: MIT
/*
 * The driver's own heap (base/alloc.h says why).
 *
 * One reservation of address space (PROT_NONE, nothing committed) holds every
 * allocation, so "is this ours" is a range check and no range of shared
 * virtual memory can cover driver objects: the reservation is a mapping of
 * its own, marked MADV_NOHUGEPAGE (its VMA flags then differ from a
 * program's anonymous memory, so the kernel never merges the two into one
 * mapping) and the SVM code keeps its ranges out of it (ugpu_mem_span()).
 *
 * Small blocks (header included, up to 32 KiB) come from power-of-two size
 * classes, carved out of 256 KiB slabs and kept on a free list per class
 * when freed. Larger ones are runs of whole pages, with a page of header in
 * front (so aligned_alloc() up to a page is free), kept on a free list of
 * runs when freed (their pages returned to the kernel with MADV_DONTNEED);
 * a run is reused by the first allocation it fits, split when much larger.
 *
 * Locking: one mutex (g_lock) over the free lists and the bump pointer. The
 * driver allocates on control paths (objects, work items), not per byte:
 * one lock is enough and keeps the code small.
 */
#include "base/alloc.h"

/* This file is where the C library's allocator is called: the build
 * force-includes base/alloc.h, so undo its redirections here. */
#undef malloc
#undef calloc
#undef realloc
#undef aligned_alloc
#undef strdup
#undef free

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef UGPU_LIBC_HEAP

#define RESERVE (64ull << 30) /* address space, not memory */
#define PAGE 4096ul
#define SLAB (256ul << 10)
#define MIN_SHIFT 4 /* 16-byte blocks */
#define MAX_SHIFT 15 /* 32 KiB blocks */
#define NCLASS (MAX_SHIFT - MIN_SHIFT + 1)
#define MAGIC 0x75677075u /* "ugpu" */
#define LARGE 0xffffffffu

struct hdr { /* 16 bytes before every block: keeps 16-byte alignment */
	uint32_t magic;
	uint32_t cls; /* size class, or LARGE */
	uint64_t size; /* small: the class's usable bytes; large: the run's bytes */
};

struct run { /* a free large run, stored in its own first page */
	struct run *next;
	size_t bytes;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static char *g_base; /* the reservation; NULL until the first allocation */
static size_t g_top; /* bytes handed out from g_base (bump); starts past the
		      * first page, which stays PROT_NONE so that the mapping
		      * below never merges with ours even where MADV_NOHUGEPAGE
		      * is not available */
static size_t g_committed; /* bytes made read-write so far (<= RESERVE) */
static void *g_free[NCLASS]; /* free blocks per class (next pointer in the block) */
static struct run *g_runs; /* free large runs */
static int g_atfork; /* the fork handlers are registered */

/* fork(): the child gets a copy of g_lock as it was; taken around the fork
 * so that no other thread holds it mid-update (the C library does the same
 * for its own heap). */
static void fork_prepare(void)
{
	pthread_mutex_lock(&g_lock);
}

static void fork_done(void)
{
	pthread_mutex_unlock(&g_lock);
}

static int reserve_locked(void)
{
	void *p;

	if (g_base)
		return 0;
	if (!g_atfork) { /* once: twice would take g_lock twice at a fork */
		if (pthread_atfork(fork_prepare, fork_done, fork_done))
			return -ENOMEM;
		g_atfork = 1;
	}
	p = mmap(NULL, RESERVE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM;
	/* Its own VMA flags: never merged with a neighbouring mapping. */
	madvise(p, RESERVE, MADV_NOHUGEPAGE);
	g_top = g_committed = PAGE;
	__atomic_store_n(&g_base, (char *)p, __ATOMIC_RELEASE);
	return 0;
}

/* @bytes (a multiple of PAGE) of fresh read-write memory from the bump. */
static void *bump_locked(size_t bytes)
{
	char *p;

	if (reserve_locked() || bytes > RESERVE - g_top)
		return NULL;
	p = g_base + g_top;
	if (g_top + bytes > g_committed) {
		if (mprotect(p, bytes, PROT_READ | PROT_WRITE))
			return NULL;
		g_committed = g_top + bytes;
	}
	g_top += bytes;
	return p;
}

static void *small_alloc(unsigned cls)
{
	size_t bsz = 1ul << (cls + MIN_SHIFT);
	struct hdr *h;
	void *b;

	pthread_mutex_lock(&g_lock);
	if (!g_free[cls]) {
		char *slab = bump_locked(SLAB);

		if (!slab) {
			pthread_mutex_unlock(&g_lock);
			return NULL;
		}
		/* thread the slab's blocks onto the free list */
		for (size_t off = SLAB; off >= bsz; off -= bsz) {
			void **blk = (void **)(slab + off - bsz);

			*blk = g_free[cls];
			g_free[cls] = blk;
		}
	}
	b = g_free[cls];
	g_free[cls] = *(void **)b;
	pthread_mutex_unlock(&g_lock);
	h = b;
	h->magic = MAGIC;
	h->cls = cls;
	h->size = bsz - sizeof(*h);
	return h + 1;
}

/* A run of at least @bytes (pages): a free one it fits (split when much
 * larger), else fresh from the bump; its length in *@got. */
static char *run_get_locked(size_t bytes, size_t *got)
{
	for (struct run **pr = &g_runs; *pr; pr = &(*pr)->next) {
		struct run *r = *pr;

		if (r->bytes < bytes)
			continue;
		if (r->bytes - bytes >= 16 * PAGE) { /* keep the tail free */
			struct run *t = (struct run *)((char *)r + bytes);

			t->bytes = r->bytes - bytes;
			t->next = r->next;
			*pr = t;
			*got = bytes;
		} else {
			*pr = r->next;
			*got = r->bytes;
		}
		return (char *)r;
	}
	*got = bytes;
	return bump_locked(bytes);
}

/* Page-aligned memory for @size bytes, after a header page. Fresh and
 * reused runs read as zero past the header page (reused ones were given
 * back with MADV_DONTNEED). */
/*
 * Put the run @r of @bytes back: the free list is kept in address order, a
 * run merges with the free neighbours it touches, and a run that ends at the
 * bump goes back to it, so freeing never leaves address space or list
 * entries behind that only grow (a reviewer's loop of 1 MiB and 40 KiB
 * blocks made 8 GiB read-write in 8,000 cycles before). The links of a
 * merged run are cleared: past its header page a free run reads as zero.
 */
static void run_put_locked(struct run *r, size_t bytes)
{
	struct run **pr = &g_runs, **pprev = NULL;

	while (*pr && *pr < r) {
		pprev = pr;
		pr = &(*pr)->next;
	}
	r->bytes = bytes;
	r->next = *pr;
	*pr = r;
	if (r->next && (char *)r + r->bytes == (char *)r->next) {
		struct run *n = r->next;

		r->bytes += n->bytes;
		r->next = n->next;
		memset(n, 0, sizeof(*n));
	}
	if (pprev && (char *)*pprev + (*pprev)->bytes == (char *)r) {
		struct run *p = *pprev;

		p->bytes += r->bytes;
		p->next = r->next;
		memset(r, 0, sizeof(*r));
		r = p;
		pr = pprev;
	}
	if ((char *)r + r->bytes == g_base + g_top) { /* the last run: back to the bump */
		*pr = r->next;
		g_top = (size_t)((char *)r - g_base);
		memset(r, 0, sizeof(*r));
	}
}

static void *large_alloc(size_t size)
{
	size_t bytes, got = 0;
	struct hdr *h;
	char *run;

	if (size > RESERVE - PAGE)
		return NULL;
	/* at least one page past the header page, also for size 0 (else the
	 * pointer would be the next run's first byte) */
	bytes = (((size ? size : 1) + PAGE - 1) & ~(PAGE - 1)) + PAGE;
	pthread_mutex_lock(&g_lock);
	run = run_get_locked(bytes, &got);
	pthread_mutex_unlock(&g_lock);
	if (!run)
		return NULL;
	h = (struct hdr *)(run + PAGE) - 1;
	h->magic = MAGIC;
	h->cls = LARGE;
	h->size = got;
	return run + PAGE;
}

static unsigned class_of(size_t size)
{
	unsigned cls = 0;

	while ((1ul << (cls + MIN_SHIFT)) - sizeof(struct hdr) < size)
		cls++;
	return cls;
}

static struct hdr *hdr_of(void *p)
{
	return (struct hdr *)p - 1;
}

int ugpu_mem_owns(const void *p)
{
	const char *b = __atomic_load_n(&g_base, __ATOMIC_ACQUIRE);

	return b && (const char *)p >= b && (const char *)p < b + RESERVE;
}

void ugpu_mem_span(unsigned long *start, unsigned long *end)
{
	const char *b = __atomic_load_n(&g_base, __ATOMIC_ACQUIRE);

	*start = b ? (unsigned long)b : 0;
	*end = b ? (unsigned long)(b + RESERVE) : 0;
}

void *ugpu_mem_alloc(size_t size)
{
	void *p;

	if (size <= (1ul << MAX_SHIFT) - sizeof(struct hdr))
		p = small_alloc(class_of(size ? size : 1));
	else
		p = large_alloc(size);
	if (!p)
		errno = ENOMEM;
	return p;
}

void *ugpu_mem_zalloc(size_t n, size_t size)
{
	void *p;

	if (size && n > SIZE_MAX / size) {
		errno = ENOMEM;
		return NULL;
	}
	p = ugpu_mem_alloc(n * size);
	/* small blocks are reused: clear them; a large run reads as zero past
	 * its header page already (fresh, or given back with MADV_DONTNEED and
	 * its links cleared), and clearing it would commit every page */
	if (p && n * size <= (1ul << MAX_SHIFT) - sizeof(struct hdr))
		memset(p, 0, n * size);
	return p;
}

void ugpu_mem_free(void *p)
{
	struct hdr *h;

	if (!p)
		return;
	if (!ugpu_mem_owns(p)) {
		free(p); /* the C library's (e.g. realpath(NULL, ...)) */
		return;
	}
	h = hdr_of(p);
	/* exchanged, so two racing frees of one block cannot both pass */
	if (__atomic_exchange_n(&h->magic, 0, __ATOMIC_RELAXED) != MAGIC)
		__builtin_trap(); /* not a block of ours, or freed twice */
	if (h->cls != LARGE) {
		unsigned cls = h->cls; /* the free-list link overwrites the header */

		if (cls >= NCLASS)
			__builtin_trap();
		pthread_mutex_lock(&g_lock);
		*(void **)h = g_free[cls];
		g_free[cls] = h;
		pthread_mutex_unlock(&g_lock);
	} else {
		struct run *r = (struct run *)((char *)p - PAGE);
		size_t bytes = h->size;

		/* the pages go back to the kernel; the run stays reserved */
		madvise(r, bytes, MADV_DONTNEED);
		pthread_mutex_lock(&g_lock);
		run_put_locked(r, bytes);
		pthread_mutex_unlock(&g_lock);
	}
}

void *ugpu_mem_realloc(void *p, size_t size)
{
	void *n;
	size_t old;

	if (!p)
		return ugpu_mem_alloc(size);
	if (!ugpu_mem_owns(p))
		return realloc(p, size);
	if (!size) {
		ugpu_mem_free(p);
		return NULL;
	}
	if (hdr_of(p)->magic != MAGIC)
		__builtin_trap(); /* freed already */
	/* (a large block shrunk in place keeps its whole run) */
	old = hdr_of(p)->cls == LARGE ? hdr_of(p)->size - PAGE : hdr_of(p)->size;
	if (size <= old)
		return p;
	n = ugpu_mem_alloc(size);
	if (!n)
		return NULL;
	memcpy(n, p, old < size ? old : size);
	ugpu_mem_free(p);
	return n;
}

void *ugpu_mem_aligned(size_t align, size_t size)
{
	void *p;

	if (!align || (align & (align - 1)) || align > PAGE) {
		errno = EINVAL;
		return NULL;
	}
	if (align <= sizeof(struct hdr))
		return ugpu_mem_alloc(size);
	p = large_alloc(size); /* page aligned */
	if (!p)
		errno = ENOMEM;
	return p;
}

char *ugpu_mem_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = ugpu_mem_alloc(n);

	if (d)
		memcpy(d, s, n);
	return d;
}

#else /* UGPU_LIBC_HEAP: sanitizer builds keep the C library's allocator */

int ugpu_mem_owns(const void *p)
{
	(void)p;
	return 0;
}

void ugpu_mem_span(unsigned long *start, unsigned long *end)
{
	*start = *end = 0;
}

void *ugpu_mem_alloc(size_t size)
{
	return malloc(size);
}

void *ugpu_mem_zalloc(size_t n, size_t size)
{
	/* refused here, as the driver's heap does: ASan reports an
	 * overflowing calloc() as an error rather than returning NULL */
	if (size && n > SIZE_MAX / size) {
		errno = ENOMEM;
		return NULL;
	}
	return calloc(n, size);
}

void *ugpu_mem_realloc(void *p, size_t size)
{
	return realloc(p, size);
}

void *ugpu_mem_aligned(size_t align, size_t size)
{
	void *p;
	int r;

	/* the same contract as the driver's heap: any size, a power-of-two
	 * alignment up to a page (C11's aligned_alloc() wants a size that is a
	 * multiple of the alignment, and ASan holds it to that) */
	if (!align || (align & (align - 1)) || align > 4096) {
		errno = EINVAL;
		return NULL;
	}
	if (align <= sizeof(void *))
		return malloc(size);
	r = posix_memalign(&p, align, size ? size : 1);
	if (r) {
		errno = r;
		return NULL;
	}
	return p;
}

char *ugpu_mem_strdup(const char *s)
{
	return strdup(s);
}

void ugpu_mem_free(void *p)
{
	free(p);
}

#endif
