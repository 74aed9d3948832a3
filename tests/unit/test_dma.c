/* SPDX-License-Identifier: MIT */
/*
 * The DMA space (vfio/dma.c) against an in-memory fake transport that
 * behaves like an IOMMU: it records mappings, refuses overlaps and mappings
 * past its limit, checks every map lies in its IOVA ranges, and can be told to
 * unmap short or to fail.
 *
 * The random test prints its seed; UGPU_TEST_SEED=N replays it.
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/context.h"
#include "base/sysmem.h"
#include "vfio/dma.h"

#define PAGE 4096ull
#define FAKE_MAX_MAPS 4096

/* --- the fake IOMMU ---------------------------------------------------- */

struct fake_map {
	uint64_t iova, size;
	void *vaddr;
	int fd;
	uint64_t fd_off;
	uint32_t prot;
};

/* Locking: @lock protects everything; the transport ops take it. */
struct fake_dev {
	struct vfio_dev dev; /* first: the transport head */
	pthread_mutex_t lock;
	struct vfio_iommu_info info;
	int info_ret; /* what iommu_info returns */
	struct fake_map maps[FAKE_MAX_MAPS];
	unsigned nr;
	unsigned map_calls, unmap_calls;
	unsigned range_violations; /* maps outside every IOVA range */
	uint64_t short_next; /* next unmap reports this many bytes fewer */
	int unmap_err; /* next unmap fails with this */
};

static struct fake_dev *fake(struct vfio_dev *d)
{
	return (struct fake_dev *)d;
}

static int fake_iommu_info(struct vfio_dev *d, struct vfio_iommu_info *info)
{
	struct fake_dev *f = fake(d);

	if (f->info_ret)
		return f->info_ret;
	*info = f->info;
	return 0;
}

static bool fake_in_ranges(struct fake_dev *f, uint64_t iova, uint64_t size)
{
	uint32_t r;

	for (r = 0; r < f->info.nr_ranges; r++)
		if (iova >= f->info.ranges[r].start && iova + size - 1 <= f->info.ranges[r].end)
			return true;
	return f->info.nr_ranges == 0;
}

static int fake_dma_map(struct vfio_dev *d, uint64_t iova, uint64_t size, void *vaddr, int fd,
			uint64_t fd_off, uint32_t prot)
{
	struct fake_dev *f = fake(d);
	unsigned i;
	int ret = 0;

	pthread_mutex_lock(&f->lock);
	f->map_calls++;
	if (!fake_in_ranges(f, iova, size))
		f->range_violations++;
	for (i = 0; i < f->nr; i++)
		if (iova < f->maps[i].iova + f->maps[i].size && f->maps[i].iova < iova + size) {
			ret = -EEXIST;
			goto out;
		}
	if ((f->info.max_mappings && f->nr >= f->info.max_mappings) || f->nr >= FAKE_MAX_MAPS) {
		ret = -ENOSPC;
		goto out;
	}
	f->maps[f->nr++] = (struct fake_map){ iova, size, vaddr, fd, fd_off, prot };
out:
	pthread_mutex_unlock(&f->lock);
	return ret;
}

/* Like type1: removes every mapping fully inside the range. */
static int fake_dma_unmap(struct vfio_dev *d, uint64_t iova, uint64_t size, uint64_t *unmapped)
{
	struct fake_dev *f = fake(d);
	uint64_t done = 0;
	unsigned i;
	int ret = 0;

	pthread_mutex_lock(&f->lock);
	f->unmap_calls++;
	if (f->unmap_err) {
		ret = f->unmap_err;
		f->unmap_err = 0;
		goto out;
	}
	if (f->short_next) {
		/* The IOMMU kept part of it: nothing is removed from the record. */
		*unmapped = size - f->short_next;
		f->short_next = 0;
		goto out;
	}
	for (i = 0; i < f->nr;) {
		if (f->maps[i].iova >= iova && f->maps[i].iova + f->maps[i].size <= iova + size) {
			done += f->maps[i].size;
			f->maps[i] = f->maps[--f->nr];
		} else {
			i++;
		}
	}
	*unmapped = done;
out:
	pthread_mutex_unlock(&f->lock);
	return ret;
}

static const struct vfio_transport_ops fake_ops = {
	.name = "fake",
	.iommu_info = fake_iommu_info,
	.dma_map = fake_dma_map,
	.dma_unmap = fake_dma_unmap,
};

static const struct vfio_transport_ops fake_pinning_ops = {
	.name = "vfio-pci-fake", /* pins pages like the kernel transport */
	.iommu_info = fake_iommu_info,
	.dma_map = fake_dma_map,
	.dma_unmap = fake_dma_unmap,
};

static struct fake_dev *fake_new(uint32_t max_mappings)
{
	struct fake_dev *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->dev.ops = &fake_ops;
	snprintf(f->dev.name, sizeof(f->dev.name), "fake0");
	pthread_mutex_init(&f->lock, NULL);
	f->info.pgsize_mask = PAGE | (2ull << 20);
	f->info.max_mappings = max_mappings;
	f->info.nr_ranges = 1;
	f->info.ranges[0].start = 0;
	f->info.ranges[0].end = (1ull << 48) - 1;
	return f;
}

static void fake_free(struct fake_dev *f)
{
	pthread_mutex_destroy(&f->lock);
	free(f);
}

static unsigned fake_count(struct fake_dev *f)
{
	unsigned n;

	pthread_mutex_lock(&f->lock);
	n = f->nr;
	pthread_mutex_unlock(&f->lock);
	return n;
}

static struct fake_map *fake_find(struct fake_dev *f, uint64_t iova)
{
	unsigned i;

	for (i = 0; i < f->nr; i++)
		if (iova >= f->maps[i].iova && iova < f->maps[i].iova + f->maps[i].size)
			return &f->maps[i];
	return NULL;
}

/* --- log capture --------------------------------------------------------- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_text[16384];

static void capture(void *user, enum ugpu_log_level level, const char *msg)
{
	(void)user;
	(void)level;
	pthread_mutex_lock(&log_lock);
	if (strlen(log_text) + strlen(msg) + 2 < sizeof(log_text)) {
		strcat(log_text, msg);
		strcat(log_text, "\n");
	}
	pthread_mutex_unlock(&log_lock);
}

static bool logged(const char *needle)
{
	bool r;

	pthread_mutex_lock(&log_lock);
	r = strstr(log_text, needle) != NULL;
	pthread_mutex_unlock(&log_lock);
	return r;
}

static struct ugpu_context *ctx_new(void)
{
	struct ugpu_context_opts o = { .size = sizeof(o), .log_fn = capture,
				       .log_level = UGPU_LOG_DEBUG };
	struct ugpu_context *ctx;

	log_text[0] = 0;
	assert_int_equal(ugpu_context_create(&o, &ctx), 0);
	return ctx;
}

/* --- invariants --------------------------------------------------------- */

/* The space's view and the IOMMU's agree: same number of mappings, every
 * mapping in range, page aligned, and no two overlapping. */
static void check_space(struct dma_space *s, struct fake_dev *f)
{
	struct dma_space_stats st;
	unsigned i, j;

	dma_space_stats(s, &st);
	pthread_mutex_lock(&f->lock);
	assert_int_equal(st.mappings, f->nr);
	assert_int_equal(f->range_violations, 0);
	for (i = 0; i < f->nr; i++) {
		assert_int_equal(f->maps[i].iova % PAGE, 0);
		assert_int_equal(f->maps[i].size % PAGE, 0);
		assert_true(f->maps[i].iova >= PAGE); /* IOVA page 0 is never handed out */
		for (j = i + 1; j < f->nr; j++)
			assert_false(f->maps[i].iova < f->maps[j].iova + f->maps[j].size &&
				     f->maps[j].iova < f->maps[i].iova + f->maps[i].size);
	}
	pthread_mutex_unlock(&f->lock);
}

/* --- tests ----------------------------------------------------------------- */

static void test_map_unmap_basic(void **state)
{
	struct ugpu_context *ctx = ctx_new();
	struct fake_dev *f = fake_new(0);
	struct dma_space s;
	struct sysmem m;
	struct fake_map *fm;
	uint64_t iova, len;
	void *v;

	(void)state;
	assert_int_equal(sysmem_create(ctx, 3 * PAGE - 100, "t", &m), 0);
	assert_int_equal(m.size, 3 * PAGE); /* rounded to the page */
	assert_true(m.fd >= 0);
	assert_int_equal(dma_space_init(ctx, &f->dev, &s), 0);
	assert_int_equal(dma_map_sysmem(&s, &m, VFIO_DMA_READ | VFIO_DMA_WRITE, &iova), 0);
	assert_int_equal(iova % PAGE, 0);
	assert_int_equal(dma_space_count(&s), 1);

	fm = fake_find(f, iova);
	assert_non_null(fm);
	assert_int_equal(fm->iova, iova);
	assert_int_equal(fm->size, m.size);
	assert_ptr_equal(fm->vaddr, m.vaddr);
	assert_int_equal(fm->fd, m.fd);
	assert_int_equal(fm->fd_off, 0);
	assert_int_equal(fm->prot, VFIO_DMA_READ | VFIO_DMA_WRITE);

	assert_int_equal(dma_space_lookup(&s, iova + PAGE + 8, VFIO_DMA_WRITE, &v, &len), 0);
	assert_ptr_equal(v, (char *)m.vaddr + PAGE + 8);
	assert_int_equal(len, 2 * PAGE - 8);
	assert_int_equal(dma_space_lookup(&s, iova + m.size, VFIO_DMA_READ, &v, &len), -EFAULT);

	/* Wrong size is not the buffer. */
	assert_int_equal(dma_unmap(&s, iova, PAGE), -ENOENT);
	assert_int_equal(dma_unmap(&s, iova, m.size), 0);
	assert_int_equal(dma_space_count(&s), 0);
	assert_int_equal(fake_count(f), 0);
	assert_int_equal(dma_unmap(&s, iova, m.size), -ENOENT);
	assert_int_equal(dma_space_fini(&s), 0);
	sysmem_destroy(&m);
	sysmem_destroy(&m); /* idempotent */
	fake_free(f);
	ugpu_context_destroy(ctx);
}

static void test_bad_args(void **state)
{
	struct ugpu_context *ctx = ctx_new();
	struct fake_dev *f = fake_new(0);
	struct dma_space s;
	struct sysmem m;
	uint64_t iova;

	(void)state;
	assert_int_equal(sysmem_create(ctx, 0, "t", &m), -EINVAL);
	assert_int_equal(m.fd, -1);
	assert_int_equal(sysmem_create(ctx, 4 * PAGE, "t", &m), 0);
	assert_int_equal(dma_space_init(ctx, &f->dev, &s), 0);
	assert_int_equal(dma_map(&s, (char *)m.vaddr + 8, PAGE, -1, 0, VFIO_DMA_READ, &iova), -EINVAL);
	assert_int_equal(dma_map(&s, m.vaddr, PAGE + 1, -1, 0, VFIO_DMA_READ, &iova), -EINVAL);
	assert_int_equal(dma_map(&s, m.vaddr, 0, -1, 0, VFIO_DMA_READ, &iova), -EINVAL);
	assert_int_equal(dma_map(&s, m.vaddr, PAGE, m.fd, 12, VFIO_DMA_READ, &iova), -EINVAL);
	assert_int_equal(dma_map(&s, m.vaddr, PAGE, -1, 0, 0, &iova), -EINVAL);
	assert_int_equal(dma_map(&s, m.vaddr, PAGE, -1, 0, 0x80, &iova), -EINVAL);
	assert_true(logged("not aligned to the IOMMU page"));
	assert_int_equal(f->map_calls, 0);

	/* Fixed IOVAs: outside the ranges, misaligned, overlapping. */
	assert_int_equal(dma_map_at(&s, 1ull << 48, m.vaddr, PAGE, m.fd, 0, VFIO_DMA_READ), -ERANGE);
	assert_int_equal(dma_map_at(&s, 0x10010, m.vaddr, PAGE, m.fd, 0, VFIO_DMA_READ), -EINVAL);
	assert_int_equal(dma_map_at(&s, 0x10000, m.vaddr, 2 * PAGE, m.fd, 0, VFIO_DMA_READ), 0);
	assert_int_equal(dma_map_at(&s, 0x11000, (char *)m.vaddr + 2 * PAGE, PAGE, m.fd, 2 * PAGE,
				    VFIO_DMA_READ),
			 -EEXIST);
	assert_int_equal(dma_unmap(&s, 0x10000, 2 * PAGE), 0);
	check_space(&s, f);
	assert_int_equal(dma_space_fini(&s), 0);
	sysmem_destroy(&m);
	fake_free(f);
	ugpu_context_destroy(ctx);
}

/* Nothing is mapped before the IOMMU is set up. */
static void test_not_ready(void **state)
{
	struct ugpu_context *ctx = ctx_new();
	struct fake_dev *f = fake_new(0);
	struct dma_space s;
	struct sysmem m;
	uint64_t iova;

	(void)state;
	assert_int_equal(sysmem_create(ctx, PAGE, "t", &m), 0);
	memset(&s, 0, sizeof(s));
	assert_int_equal(dma_map_sysmem(&s, &m, VFIO_DMA_READ, &iova), -ENXIO);
	assert_int_equal(dma_space_count(&s), 0);

	f->info_ret = -ENODEV; /* e.g. the container has no IOMMU set */
	assert_int_equal(dma_space_init(ctx, &f->dev, &s), -ENODEV);
	assert_true(logged("IOMMU not set up"));
	assert_int_equal(dma_map_sysmem(&s, &m, VFIO_DMA_READ, &iova), -ENXIO);
	assert_int_equal(dma_map_at(&s, 0x10000, m.vaddr, PAGE, m.fd, 0, VFIO_DMA_READ), -ENXIO);
	assert_int_equal(dma_unmap(&s, 0x10000, PAGE), -ENXIO);
	assert_int_equal(f->map_calls, 0);
	assert_int_equal(dma_space_fini(&s), 0);

	/* A range that is empty is a broken IOMMU description. */
	f->info_ret = 0;
	f->info.ranges[0].start = 0x2000;
	f->info.ranges[0].end = 0x1000;
	assert_int_equal(dma_space_init(ctx, &f->dev, &s), -EINVAL);
	assert_int_equal(dma_map_sysmem(&s, &m, VFIO_DMA_READ, &iova), -ENXIO);
	assert_int_equal(f->map_calls, 0);
	sysmem_destroy(&m);
	fake_free(f);
	ugpu_context_destroy(ctx);
}

/* IOVAs stay inside the IOMMU's ranges, and a buffer too big for any range
 * is refused rather than straddling two. */
static void test_ranges(void **state)
{
	struct ugpu_context *ctx = ctx_new();
	struct fake_dev *f = fake_new(0);
	struct dma_space s;
	struct sysmem m;
	uint64_t iova[8];
	int i;

	(void)state;
	f->info.nr_ranges = 2;
	f->info.ranges[0].start = 0; /* page 0 is skipped: 15 pages usable */
	f->info.ranges[0].end = 0xffff;
	f->info.ranges[1].start = 0x100000;
	f->info.ranges[1].end = 0x13ffff; /* 256 KiB */
	assert_int_equal(sysmem_create(ctx, 256 * 1024, "t", &m), 0);
	assert_int_equal(dma_space_init(ctx, &f->dev, &s), 0);

	/* 32 KiB buffers: one fits in range 0 (after page 0), 8 in range 1 */
	for (i = 0; i < 8; i++) {
		assert_int_equal(dma_map(&s, m.vaddr, 32 * 1024, m.fd, 0, VFIO_DMA_READ, &iova[i]), 0);
		assert_true((iova[i] >= PAGE && iova[i] + 32 * 1024 - 1 <= 0xffff) ||
			    (iova[i] >= 0x100000 && iova[i] + 32 * 1024 - 1 <= 0x13ffff));
		check_space(&s, f);
	}
	{
		uint64_t x;

		/* Range 0 took one buffer (page 0 skipped), range 1 seven so far:
		 * one more fits there, then none anywhere. */
		assert_int_equal(dma_map(&s, m.vaddr, 32 * 1024, m.fd, 0, VFIO_DMA_READ, &x), 0);
		assert_int_equal(dma_map(&s, m.vaddr, 32 * 1024, m.fd, 0, VFIO_DMA_READ, &x), -ENOSPC);
		assert_true(logged("no free IOVA range"));
		/* 16 KiB still fits in range 0's tail. */
		assert_int_equal(dma_map(&s, m.vaddr, 16 * 1024, m.fd, 0, VFIO_DMA_READ, &x), 0);
		assert_true(x + 16 * 1024 - 1 <= 0xffff);
		check_space(&s, f);
	}
	assert_int_equal(dma_space_fini(&s), 10); /* all leaked on purpose */
	assert_int_equal(fake_count(f), 0);
	sysmem_destroy(&m);
	fake_free(f);
	ugpu_context_destroy(ctx);
}

/* The mapping limit is enforced with a clear error, and freeing one makes
 * room again. */
static void test_limit(void **state)
{
	struct ugpu_context *ctx = ctx_new();
	struct fake_dev *f = fake_new(8);
	struct dma_space s;
	struct sysmem m[9];
	uint64_t iova[9];
	int i;

	(void)state;
	assert_int_equal(dma_space_init(ctx, &f->dev, &s), 0);
	for (i = 0; i < 9; i++)
		assert_int_equal(sysmem_create(ctx, PAGE, "t", &m[i]), 0);
	for (i = 0; i < 8; i++)
		assert_int_equal(dma_map_sysmem(&s, &m[i], VFIO_DMA_READ, &iova[i]), 0);
	assert_int_equal(dma_map_sysmem(&s, &m[8], VFIO_DMA_READ, &iova[8]), -ENOSPC);
	assert_true(logged("mapping limit reached (8 of 8"));
	assert_int_equal(f->map_calls, 8); /* refused before asking the IOMMU */
	assert_int_equal(dma_space_count(&s), 8);
	assert_int_equal(dma_unmap(&s, iova[3], PAGE), 0);
	assert_int_equal(dma_map_sysmem(&s, &m[8], VFIO_DMA_READ, &iova[8]), 0);
	check_space(&s, f);
	for (i = 0; i < 9; i++)
		if (i != 3)
			assert_int_equal(dma_unmap(&s, iova[i], PAGE), 0);
	assert_int_equal(dma_space_fini(&s), 0);
	for (i = 0; i < 9; i++)
		sysmem_destroy(&m[i]);
	fake_free(f);
	ugpu_context_destroy(ctx);
}

/* Pieces contiguous in one fd become one IOMMU mapping, so even a limit of
 * one mapping holds many buffers; the mapping goes with its last buffer. */
static void test_merge(void **state)
{
	struct ugpu_context *ctx = ctx_new();
	struct fake_dev *f = fake_new(1);
	const uint32_t rw = VFIO_DMA_READ | VFIO_DMA_WRITE;
	struct dma_space s;
	struct sysmem m;
	uint64_t iova[16], len;
	struct fake_map *fm;
	char *base;
	void *v;
	int i;

	(void)state;
	assert_int_equal(sysmem_create(ctx, 16 * PAGE, "pool", &m), 0);
	base = m.vaddr;
	assert_int_equal(dma_space_init(ctx, &f->dev, &s), 0);
	for (i = 0; i < 16; i++) {
		assert_int_equal(dma_map(&s, base + i * PAGE, PAGE, m.fd, i * PAGE,
					 rw | DMA_MAP_F_MERGE, &iova[i]),
				 0);
		if (i)
			assert_int_equal(iova[i], iova[i - 1] + PAGE);
		assert_int_equal(dma_space_count(&s), 1);
		check_space(&s, f);
	}
	fm = fake_find(f, iova[0]);
	assert_non_null(fm);
	assert_int_equal(fm->iova, iova[0]);
	assert_int_equal(fm->size, 16 * PAGE);
	assert_ptr_equal(fm->vaddr, base);
	assert_int_equal(fm->fd_off, 0);
	for (i = 0; i < 16; i++) {
		assert_int_equal(dma_space_lookup(&s, iova[i] + 16, VFIO_DMA_READ, &v, &len), 0);
		assert_ptr_equal(v, base + i * PAGE + 16);
		assert_int_equal(len, PAGE - 16); /* only to the end of that buffer */
	}

	/* Without the flag, a second mapping is over the limit. */
	{
		struct sysmem o;
		unsigned calls;
		uint64_t x;

		assert_int_equal(sysmem_create(ctx, PAGE, "other", &o), 0);
		assert_int_equal(dma_map_sysmem(&s, &o, rw, &x), -ENOSPC);
		/* Different permissions never merge. */
		assert_int_equal(dma_unmap(&s, iova[15], PAGE), 0);
		assert_int_equal(dma_map(&s, base + 15 * PAGE, PAGE, m.fd, 15 * PAGE,
					 VFIO_DMA_READ | DMA_MAP_F_MERGE, &x),
				 -ENOSPC);
		/* The merged mapping still covers that page: no IOMMU call. */
		calls = f->map_calls;
		assert_int_equal(dma_map(&s, base + 15 * PAGE, PAGE, m.fd, 15 * PAGE, rw, &x), 0);
		assert_int_equal(x, iova[15]);
		assert_int_equal(f->map_calls, calls);
		sysmem_destroy(&o);
	}

	/* A released buffer inside a merged mapping is no longer reachable by
	 * lookup, but the mapping stays until the last buffer goes. */
	for (i = 0; i < 15; i++) {
		assert_int_equal(dma_unmap(&s, iova[i], PAGE), 0);
		assert_int_equal(dma_space_lookup(&s, iova[i], VFIO_DMA_READ, &v, &len), -EFAULT);
		assert_int_equal(dma_space_count(&s), 1);
		assert_int_equal(fake_count(f), 1);
	}
	assert_int_equal(dma_unmap(&s, iova[15], PAGE), 0);
	assert_int_equal(dma_space_count(&s), 0);
	assert_int_equal(fake_count(f), 0);
	assert_int_equal(dma_space_fini(&s), 0);
	sysmem_destroy(&m);
	fake_free(f);
	ugpu_context_destroy(ctx);
}

/* Merging backwards and filling a hole between two neighbours. */
static void test_merge_backward_and_hole(void **state)
{
	struct ugpu_context *ctx = ctx_new();
	struct fake_dev *f = fake_new(0);
	const uint32_t rw = VFIO_DMA_READ | VFIO_DMA_WRITE | DMA_MAP_F_MERGE;
	struct dma_space s;
	struct sysmem m, filler;
	uint64_t a, b, c, fi;
	struct fake_map *fm;
	char *base;

	(void)state;
	assert_int_equal(sysmem_create(ctx, 3 * PAGE, "pool", &m), 0);
	assert_int_equal(sysmem_create(ctx, PAGE, "filler", &filler), 0);
	base = m.vaddr;
	assert_int_equal(dma_space_init(ctx, &f->dev, &s), 0);

	/* Backward: B is mapped first after a filler; A (before B in the fd)
	 * takes the filler's IOVA once it is free and merges into B. */
	assert_int_equal(dma_map_sysmem(&s, &filler, rw, &fi), 0);
	assert_int_equal(dma_map(&s, base + PAGE, PAGE, m.fd, PAGE, rw, &b), 0);
	assert_int_equal(b, fi + PAGE);
	assert_int_equal(dma_unmap(&s, fi, PAGE), 0);
	assert_int_equal(dma_map(&s, base, PAGE, m.fd, 0, rw, &a), 0);
	assert_int_equal(a, b - PAGE);
	assert_int_equal(dma_space_count(&s), 1);
	check_space(&s, f);
	assert_int_equal(dma_unmap(&s, a, PAGE), 0);
	assert_int_equal(dma_unmap(&s, b, PAGE), 0);
	assert_int_equal(fake_count(f), 0);

	/* Hole: A and C are mapped with a filler between; B merges all three. */
	assert_int_equal(dma_map(&s, base, PAGE, m.fd, 0, rw, &a), 0);
	assert_int_equal(dma_map_sysmem(&s, &filler, rw, &fi), 0);
	assert_int_equal(fi, a + PAGE);
	assert_int_equal(dma_map(&s, base + 2 * PAGE, 1 * PAGE, m.fd, 2 * PAGE, rw, &c), 0);
	assert_int_equal(c, a + 2 * PAGE);
	assert_int_equal(dma_space_count(&s), 3);
	assert_int_equal(dma_unmap(&s, fi, PAGE), 0);
	assert_int_equal(dma_map(&s, base + PAGE, PAGE, m.fd, PAGE, rw, &b), 0);
	assert_int_equal(b, a + PAGE);
	assert_int_equal(dma_space_count(&s), 1);
	fm = fake_find(f, a);
	assert_non_null(fm);
	assert_int_equal(fm->size, 3 * PAGE);
	check_space(&s, f);

	/* The merged mapping holds three buffers: fini reports all three. */
	assert_int_equal(dma_space_fini(&s), 3);
	assert_int_equal(fake_count(f), 0);
	sysmem_destroy(&m);
	sysmem_destroy(&filler);
	fake_free(f);
	ugpu_context_destroy(ctx);
}

/* A short unmap is an error, the IOVA stays reserved, and fini retries. */
static void test_partial_unmap(void **state)
{
	struct ugpu_context *ctx = ctx_new();
	struct fake_dev *f = fake_new(0);
	struct dma_space s;
	struct sysmem m;
	uint64_t iova, again;

	(void)state;
	assert_int_equal(sysmem_create(ctx, 4 * PAGE, "t", &m), 0);
	assert_int_equal(dma_space_init(ctx, &f->dev, &s), 0);
	assert_int_equal(dma_map_sysmem(&s, &m, VFIO_DMA_READ, &iova), 0);
	f->short_next = PAGE;
	assert_int_equal(dma_unmap(&s, iova, m.size), -EIO);
	assert_true(logged("partial unmap"));
	assert_int_equal(dma_space_count(&s), 1); /* still (partly) mapped */
	assert_int_equal(fake_count(f), 1);
	/* The IOVA is not handed out again while it may still be mapped. */
	assert_int_equal(dma_map_sysmem(&s, &m, VFIO_DMA_READ, &again), 0);
	assert_true(again >= iova + m.size || again + m.size <= iova);
	assert_int_equal(dma_unmap(&s, again, m.size), 0);
	/* A transport error is reported too, and also keeps the IOVA. */
	{
		uint64_t x;

		assert_int_equal(dma_map_sysmem(&s, &m, VFIO_DMA_READ, &x), 0);
		f->unmap_err = -ETIMEDOUT;
		assert_int_equal(dma_unmap(&s, x, m.size), -ETIMEDOUT);
		assert_int_equal(dma_space_count(&s), 2);
	}
	log_text[0] = 0;
	assert_int_equal(dma_space_fini(&s), 2);
	assert_true(logged("survived a failed unmap"));
	assert_int_equal(fake_count(f), 0);
	sysmem_destroy(&m);
	fake_free(f);
	ugpu_context_destroy(ctx);
}

/* A device that is gone has no mappings left: tracking is dropped. */
static void test_unmap_device_gone(void **state)
{
	struct ugpu_context *ctx = ctx_new();
	struct fake_dev *f = fake_new(0);
	struct dma_space s;
	struct sysmem m;
	uint64_t iova;

	(void)state;
	assert_int_equal(sysmem_create(ctx, PAGE, "t", &m), 0);
	assert_int_equal(dma_space_init(ctx, &f->dev, &s), 0);
	assert_int_equal(dma_map_sysmem(&s, &m, VFIO_DMA_READ, &iova), 0);
	f->unmap_err = -ENODEV;
	assert_int_equal(dma_unmap(&s, iova, PAGE), -ENODEV);
	assert_int_equal(dma_space_count(&s), 0);
	assert_int_equal(dma_space_fini(&s), 0);
	sysmem_destroy(&m);
	fake_free(f);
	ugpu_context_destroy(ctx);
}

/* fini names and counts what the caller left mapped, and unmaps it. */
static void test_fini_reports_leaks(void **state)
{
	struct ugpu_context *ctx = ctx_new();
	struct fake_dev *f = fake_new(0);
	struct dma_space s;
	struct sysmem m[3];
	uint64_t iova[3];
	char needle[128];
	int i;

	(void)state;
	assert_int_equal(dma_space_init(ctx, &f->dev, &s), 0);
	for (i = 0; i < 3; i++) {
		assert_int_equal(sysmem_create(ctx, PAGE, "t", &m[i]), 0);
		assert_int_equal(dma_map_sysmem(&s, &m[i], VFIO_DMA_WRITE, &iova[i]), 0);
	}
	assert_int_equal(dma_unmap(&s, iova[1], PAGE), 0);
	assert_int_equal(dma_space_fini(&s), 2);
	snprintf(needle, sizeof(needle), "still mapped at teardown: iova 0x%" PRIx64, iova[2]);
	assert_true(logged(needle));
	assert_int_equal(fake_count(f), 0);
	assert_int_equal(dma_space_count(&s), 0);
	for (i = 0; i < 3; i++)
		sysmem_destroy(&m[i]);
	fake_free(f);
	ugpu_context_destroy(ctx);
}

/* Read-only buffers do not serve writes. */
static void test_lookup_permissions(void **state)
{
	struct ugpu_context *ctx = ctx_new();
	struct fake_dev *f = fake_new(0);
	struct dma_space s;
	struct sysmem m;
	uint64_t iova, len;
	void *v;

	(void)state;
	assert_int_equal(sysmem_create(ctx, PAGE, "t", &m), 0);
	assert_int_equal(dma_space_init(ctx, &f->dev, &s), 0);
	assert_int_equal(dma_map_sysmem(&s, &m, VFIO_DMA_READ, &iova), 0);
	assert_int_equal(dma_space_lookup(&s, iova, VFIO_DMA_READ, &v, &len), 0);
	assert_int_equal(dma_space_lookup(&s, iova, VFIO_DMA_WRITE, &v, &len), -EFAULT);
	assert_int_equal(dma_space_lookup(&s, 0, VFIO_DMA_READ, &v, &len), -EFAULT);
	assert_int_equal(dma_unmap(&s, iova, PAGE), 0);
	assert_int_equal(dma_space_fini(&s), 0);
	sysmem_destroy(&m);
	fake_free(f);
	ugpu_context_destroy(ctx);
}

/* RLIMIT_MEMLOCK is checked before a pinning transport is asked. Needs
 * CAP_IPC_LOCK dropped from the effective set (we can put it back). */
static bool set_ipc_lock(bool on)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];

	memset(d, 0, sizeof(d));
	if (syscall(SYS_capget, &hdr, d))
		return false;
	if (on)
		d[CAP_TO_INDEX(CAP_IPC_LOCK)].effective |= CAP_TO_MASK(CAP_IPC_LOCK);
	else
		d[CAP_TO_INDEX(CAP_IPC_LOCK)].effective &= ~CAP_TO_MASK(CAP_IPC_LOCK);
	return syscall(SYS_capset, &hdr, d) == 0;
}

static bool cap_ipc_lock_effective(void)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];

	memset(d, 0, sizeof(d));
	if (syscall(SYS_capget, &hdr, d))
		return false;
	return d[CAP_TO_INDEX(CAP_IPC_LOCK)].effective & CAP_TO_MASK(CAP_IPC_LOCK);
}

static void test_memlock(void **state)
{
	struct ugpu_context *ctx = ctx_new();
	struct fake_dev *f = fake_new(0);
	struct rlimit old, low;
	struct dma_space s;
	struct sysmem m;
	uint64_t iova;
	bool had_cap;

	(void)state;
	had_cap = cap_ipc_lock_effective();
	if (had_cap && (!set_ipc_lock(false) || cap_ipc_lock_effective())) {
		print_message("skip: cannot drop CAP_IPC_LOCK, so RLIMIT_MEMLOCK does not apply\n");
		ugpu_context_destroy(ctx);
		fake_free(f);
		skip();
	}
	f->dev.ops = &fake_pinning_ops;
	assert_int_equal(sysmem_create(ctx, 64 * PAGE, "t", &m), 0);
	assert_int_equal(getrlimit(RLIMIT_MEMLOCK, &old), 0);
	low = old;
	low.rlim_cur = 16 * PAGE;
	if (low.rlim_max != RLIM_INFINITY && low.rlim_max < low.rlim_cur)
		low.rlim_cur = low.rlim_max;
	assert_int_equal(setrlimit(RLIMIT_MEMLOCK, &low), 0);

	assert_int_equal(dma_space_init(ctx, &f->dev, &s), 0);
	assert_true(s.pins);
	assert_int_equal(dma_map_sysmem(&s, &m, VFIO_DMA_READ, &iova), -ENOMEM);
	assert_true(logged("RLIMIT_MEMLOCK too low"));
	assert_true(logged("ulimit -l"));
	assert_int_equal(f->map_calls, 0);
	assert_int_equal(dma_memlock_check(ctx, 1ull << 40), -ENOMEM);
	/* A small buffer fits under the limit. */
	assert_int_equal(dma_map(&s, m.vaddr, PAGE, m.fd, 0, VFIO_DMA_READ, &iova), 0);
	assert_int_equal(dma_unmap(&s, iova, PAGE), 0);

	assert_int_equal(setrlimit(RLIMIT_MEMLOCK, &old), 0);
	if (had_cap)
		assert_true(set_ipc_lock(true));
	assert_int_equal(dma_space_fini(&s), 0);
	sysmem_destroy(&m);
	fake_free(f);
	ugpu_context_destroy(ctx);
}

/* Random maps/unmaps, with and without merging, checking after each step
 * that the space and the IOMMU agree and every live buffer resolves to the
 * memory it was mapped from. */
struct live {
	uint64_t iova, size;
	char *vaddr;
};

static void test_random(void **state)
{
	struct ugpu_context *ctx = ctx_new();
	struct fake_dev *f = fake_new(256);
	const char *env = getenv("UGPU_TEST_SEED");
	unsigned seed = env ? (unsigned)strtoul(env, NULL, 0) : (unsigned)time(NULL);
	enum { POOL_PAGES = 512, MAXL = 512 };
	struct live *live = calloc(MAXL, sizeof(*live));
	unsigned nlive = 0, step, i;
	bool *used = calloc(POOL_PAGES, 1);
	struct dma_space s;
	struct sysmem m;

	(void)state;
	printf("test_random seed %u (UGPU_TEST_SEED=%u replays)\n", seed, seed);
	srand(seed);
	assert_int_equal(sysmem_create(ctx, POOL_PAGES * PAGE, "pool", &m), 0);
	assert_int_equal(dma_space_init(ctx, &f->dev, &s), 0);
	for (step = 0; step < 4000; step++) {
		if (nlive && (rand() % 3 == 0 || nlive == MAXL)) {
			unsigned k = (unsigned)rand() % nlive;
			uint64_t p0 = (uint64_t)(live[k].vaddr - (char *)m.vaddr) / PAGE;

			assert_int_equal(dma_unmap(&s, live[k].iova, live[k].size), 0);
			for (i = 0; i < live[k].size / PAGE; i++)
				used[p0 + i] = false;
			live[k] = live[--nlive];
		} else {
			unsigned pages = 1 + (unsigned)rand() % 4;
			unsigned p0 = (unsigned)rand() % (POOL_PAGES - pages);
			uint32_t fl = VFIO_DMA_READ | VFIO_DMA_WRITE |
				      (rand() % 2 ? DMA_MAP_F_MERGE : 0);
			uint64_t iova;
			int ret;

			for (i = 0; i < pages; i++)
				if (used[p0 + i])
					break;
			if (i < pages)
				continue; /* each page is in at most one buffer */
			ret = dma_map(&s, (char *)m.vaddr + p0 * PAGE, pages * PAGE, m.fd,
				      p0 * PAGE, fl, &iova);
			if (ret == -ENOSPC)
				continue; /* at the limit: allowed, checked below */
			assert_int_equal(ret, 0);
			for (i = 0; i < pages; i++)
				used[p0 + i] = true;
			live[nlive++] = (struct live){ iova, pages * PAGE,
						       (char *)m.vaddr + p0 * PAGE };
		}
		check_space(&s, f);
		assert_true(dma_space_count(&s) <= 256);
		for (i = 0; i < nlive; i++) {
			uint64_t len;
			void *v;
			uint64_t off = (uint64_t)(rand() % (int)(live[i].size / 8)) * 8;

			assert_int_equal(dma_space_lookup(&s, live[i].iova + off, VFIO_DMA_WRITE, &v, &len),
					 0);
			assert_ptr_equal(v, live[i].vaddr + off);
			assert_int_equal(len, live[i].size - off);
		}
	}
	for (i = 0; i < nlive; i++)
		assert_int_equal(dma_unmap(&s, live[i].iova, live[i].size), 0);
	assert_int_equal(fake_count(f), 0);
	assert_int_equal(dma_space_fini(&s), 0);
	sysmem_destroy(&m);
	free(live);
	free(used);
	fake_free(f);
	ugpu_context_destroy(ctx);
}

/* Several threads map and unmap at once (run under TSan too). */
struct thr_arg {
	struct dma_space *s;
	struct ugpu_context *ctx;
	int fails;
};

static void *thr_main(void *p)
{
	struct thr_arg *a = p;
	struct sysmem m;
	int i;

	if (sysmem_create(a->ctx, 8 * PAGE, "thr", &m)) {
		a->fails++;
		return NULL;
	}
	for (i = 0; i < 300; i++) {
		uint64_t iova[8], len;
		void *v;
		int k;

		for (k = 0; k < 8; k++)
			if (dma_map(a->s, (char *)m.vaddr + k * PAGE, PAGE, m.fd, k * PAGE,
				    VFIO_DMA_READ | VFIO_DMA_WRITE | (i & 1 ? DMA_MAP_F_MERGE : 0),
				    &iova[k]))
				a->fails++;
		for (k = 0; k < 8; k++)
			if (dma_space_lookup(a->s, iova[k], VFIO_DMA_READ, &v, &len) ||
			    v != (char *)m.vaddr + k * PAGE)
				a->fails++;
		for (k = 0; k < 8; k++)
			if (dma_unmap(a->s, iova[k], PAGE))
				a->fails++;
	}
	sysmem_destroy(&m);
	return NULL;
}

static void test_threads(void **state)
{
	struct ugpu_context *ctx = ctx_new();
	struct fake_dev *f = fake_new(0);
	struct thr_arg a[4];
	pthread_t t[4];
	struct dma_space s;
	int i;

	(void)state;
	assert_int_equal(dma_space_init(ctx, &f->dev, &s), 0);
	for (i = 0; i < 4; i++) {
		a[i] = (struct thr_arg){ .s = &s, .ctx = ctx };
		assert_int_equal(pthread_create(&t[i], NULL, thr_main, &a[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(a[i].fails, 0);
	}
	check_space(&s, f);
	assert_int_equal(fake_count(f), 0);
	assert_int_equal(dma_space_fini(&s), 0);
	fake_free(f);
	ugpu_context_destroy(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_map_unmap_basic),
		cmocka_unit_test(test_bad_args),
		cmocka_unit_test(test_not_ready),
		cmocka_unit_test(test_ranges),
		cmocka_unit_test(test_limit),
		cmocka_unit_test(test_merge),
		cmocka_unit_test(test_merge_backward_and_hole),
		cmocka_unit_test(test_partial_unmap),
		cmocka_unit_test(test_unmap_device_gone),
		cmocka_unit_test(test_fini_reports_leaks),
		cmocka_unit_test(test_lookup_permissions),
		cmocka_unit_test(test_memlock),
		cmocka_unit_test(test_random),
		cmocka_unit_test(test_threads),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
