/* SPDX-License-Identifier: MIT */
/*
 * The cpu engine (engines/cpu) and the common engine layer (engines/engine.c)
 * without a device: "VRAM" is a memfd the fake transport exposes as BAR2, and
 * system memory goes through a real DMA space over a fake IOMMU.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "engines/engine.h"
#include "base/context.h"
#include "base/sysmem.h"
#include "vfio/dma.h"

#define PAGE 4096ull
#define VRAM_SIZE (1ull << 20)

/* --- a fake device: BAR2 is a memfd, DMA is recorded ---------------------- */

struct fake_dev {
	struct vfio_dev dev;
	struct sysmem bar2;
	unsigned mmaps; /* live region_mmap()s */
	unsigned nmaps; /* live DMA mappings */
};

static struct fake_dev *fake(struct vfio_dev *d)
{
	return (struct fake_dev *)d;
}

static int fake_region_info(struct vfio_dev *d, uint32_t index, struct vfio_dev_region_info *ri)
{
	memset(ri, 0, sizeof(*ri));
	ri->index = index;
	if (index == VFIO_REGION_BAR2) {
		ri->size = fake(d)->bar2.size;
		ri->flags = VFIO_REGION_F_READ | VFIO_REGION_F_WRITE | VFIO_REGION_F_MMAP;
	}
	return 0;
}

static int fake_region_mmap(struct vfio_dev *d, uint32_t index, uint64_t off, size_t len, int prot,
			    void **addr)
{
	void *p;

	if (index != VFIO_REGION_BAR2)
		return -EINVAL;
	p = mmap(NULL, len, prot, MAP_SHARED, fake(d)->bar2.fd, (off_t)off);
	if (p == MAP_FAILED)
		return -errno;
	fake(d)->mmaps++;
	*addr = p;
	return 0;
}

static int fake_region_munmap(struct vfio_dev *d, void *addr, size_t len)
{
	fake(d)->mmaps--;
	return munmap(addr, len) ? -errno : 0;
}

static int fake_iommu_info(struct vfio_dev *d, struct vfio_iommu_info *info)
{
	(void)d;
	memset(info, 0, sizeof(*info));
	info->pgsize_mask = PAGE;
	info->max_mappings = 100;
	info->nr_ranges = 1;
	info->ranges[0].end = (1ull << 48) - 1;
	return 0;
}

static int fake_dma_map(struct vfio_dev *d, uint64_t iova, uint64_t size, void *vaddr, int fd,
			uint64_t fd_off, uint32_t prot)
{
	(void)iova, (void)size, (void)vaddr, (void)fd, (void)fd_off, (void)prot;
	fake(d)->nmaps++;
	return 0;
}

static int fake_dma_unmap(struct vfio_dev *d, uint64_t iova, uint64_t size, uint64_t *unmapped)
{
	(void)iova;
	fake(d)->nmaps--;
	*unmapped = size;
	return 0;
}

static const struct vfio_transport_ops fake_ops = {
	.name = "fake",
	.region_info = fake_region_info,
	.region_mmap = fake_region_mmap,
	.region_munmap = fake_region_munmap,
	.iommu_info = fake_iommu_info,
	.dma_map = fake_dma_map,
	.dma_unmap = fake_dma_unmap,
};

/* --- fixture ----------------------------------------------------------------- */

static char log_text[8192];

static void capture(void *user, enum ugpu_log_level level, const char *msg)
{
	(void)user;
	(void)level;
	if (strlen(log_text) + strlen(msg) + 2 < sizeof(log_text)) {
		strcat(log_text, msg);
		strcat(log_text, "\n");
	}
}

struct fx {
	struct ugpu_context *ctx;
	struct fake_dev fd;
	struct dma_space dma;
	struct sysmem sys; /* 4 pages, mapped read-write as two merged buffers */
	uint64_t sys_iova;
	struct sysmem ro; /* 1 page, mapped read-only */
	uint64_t ro_iova;
	struct engine *e;
	char *vram;
};

static void fill_random(void *p, size_t n, unsigned seed)
{
	unsigned char *b = p;
	size_t i;

	for (i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		b[i] = (unsigned char)(seed >> 16);
	}
}

static int setup(void **state)
{
	struct ugpu_context_opts o = { .size = sizeof(o), .log_fn = capture,
				       .log_level = UGPU_LOG_DEBUG };
	struct engine_cfg cfg = { .size = sizeof(cfg) };
	struct fx *f = calloc(1, sizeof(*f));
	uint64_t second;

	assert_non_null(f);
	log_text[0] = 0;
	assert_int_equal(ugpu_context_create(&o, &f->ctx), 0);
	f->fd.dev.ops = &fake_ops;
	snprintf(f->fd.dev.name, sizeof(f->fd.dev.name), "fake");
	assert_int_equal(sysmem_create(f->ctx, VRAM_SIZE, "vram", &f->fd.bar2), 0);
	assert_int_equal(dma_space_init(f->ctx, &f->fd.dev, &f->dma), 0);
	assert_int_equal(sysmem_create(f->ctx, 4 * PAGE, "sys", &f->sys), 0);
	assert_int_equal(sysmem_create(f->ctx, PAGE, "ro", &f->ro), 0);
	/* Two buffers, one IOMMU mapping: copies must cross buffer limits. */
	assert_int_equal(dma_map(&f->dma, f->sys.vaddr, 2 * PAGE, f->sys.fd, 0,
				 VFIO_DMA_READ | VFIO_DMA_WRITE | DMA_MAP_F_MERGE, &f->sys_iova),
			 0);
	assert_int_equal(dma_map(&f->dma, (char *)f->sys.vaddr + 2 * PAGE, 2 * PAGE, f->sys.fd,
				 2 * PAGE, VFIO_DMA_READ | VFIO_DMA_WRITE | DMA_MAP_F_MERGE, &second),
			 0);
	assert_int_equal(second, f->sys_iova + 2 * PAGE);
	assert_int_equal(dma_map_sysmem(&f->dma, &f->ro, VFIO_DMA_READ, &f->ro_iova), 0);

	cfg.dev = &f->fd.dev;
	cfg.dma = &f->dma;
	assert_int_equal(engine_create(f->ctx, &engine_cpu_ops, &cfg, &f->e), 0);
	assert_int_equal(f->e->cfg.vram_size, VRAM_SIZE); /* from the region info */
	assert_int_equal(f->fd.mmaps, 1);
	f->vram = f->fd.bar2.vaddr; /* the same memfd: what the engine wrote */
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	engine_destroy(f->e);
	assert_int_equal(f->fd.mmaps, 0);
	assert_int_equal(dma_unmap(&f->dma, f->sys_iova, 2 * PAGE), 0);
	assert_int_equal(dma_unmap(&f->dma, f->sys_iova + 2 * PAGE, 2 * PAGE), 0);
	assert_int_equal(dma_unmap(&f->dma, f->ro_iova, PAGE), 0);
	assert_int_equal(dma_space_fini(&f->dma), 0);
	assert_int_equal(f->fd.nmaps, 0);
	sysmem_destroy(&f->sys);
	sysmem_destroy(&f->ro);
	sysmem_destroy(&f->fd.bar2);
	ugpu_context_destroy(f->ctx);
	free(f);
	return 0;
}

/* --- tests ------------------------------------------------------------------- */

static void test_vram_to_vram(void **state)
{
	struct fx *f = *state;
	uint64_t fence = 0;

	fill_random(f->vram + 1000, 5000, 1);
	assert_int_equal(engine_copy(f->e, engine_vram(300000), engine_vram(1000), 5000, &fence), 0);
	assert_true(fence > 0);
	assert_int_equal(engine_wait(f->e, fence, 0), 0);
	assert_true(engine_fence_is_done(f->e, fence));
	assert_memory_equal(f->vram + 300000, f->vram + 1000, 5000);

	/* Overlapping ranges behave like memmove. */
	{
		char ref[4096];

		fill_random(f->vram + 8192, 4096, 2);
		memcpy(ref, f->vram + 8192, sizeof(ref));
		assert_int_equal(engine_copy(f->e, engine_vram(8192 + 100), engine_vram(8192), 4096,
					     NULL),
				 0);
		assert_memory_equal(f->vram + 8192 + 100, ref, 4096);
	}
}

static void test_vram_sys_both_ways(void **state)
{
	struct fx *f = *state;
	char *sys = f->sys.vaddr;
	uint64_t fence;

	/* VRAM -> system across the two buffers of the merged mapping. */
	fill_random(f->vram + 65536, 4 * PAGE, 3);
	memset(sys, 0, 4 * PAGE);
	assert_int_equal(engine_copy(f->e, engine_iova(f->sys_iova + 10), engine_vram(65536),
				     4 * PAGE - 20, &fence),
			 0);
	assert_int_equal(engine_wait(f->e, fence, 100), 0);
	assert_memory_equal(sys + 10, f->vram + 65536, 4 * PAGE - 20);
	assert_int_equal(sys[0], 0);
	assert_int_equal(sys[4 * PAGE - 1], 0);

	/* System -> VRAM, and system -> system. */
	fill_random(sys, 4 * PAGE, 4);
	assert_int_equal(engine_copy(f->e, engine_vram(131072), engine_iova(f->sys_iova), 4 * PAGE,
				     &fence),
			 0);
	assert_memory_equal(f->vram + 131072, sys, 4 * PAGE);
	assert_int_equal(engine_copy(f->e, engine_iova(f->sys_iova), engine_iova(f->ro_iova), PAGE,
				     NULL),
			 0);
	assert_memory_equal(sys, f->ro.vaddr, PAGE);
}

static void test_fill(void **state)
{
	struct fx *f = *state;
	const uint64_t pat = 0x0123456789abcdefull;
	uint64_t fence, i, w;

	assert_int_equal(engine_fill(f->e, engine_vram(4096), pat, 8192, &fence), 0);
	for (i = 0; i < 8192; i += 8) {
		memcpy(&w, f->vram + 4096 + i, 8);
		assert_int_equal(w, pat);
	}
	assert_int_equal(engine_fill(f->e, engine_iova(f->sys_iova + 8), ~pat, 4 * PAGE - 16, NULL),
			 0);
	for (i = 8; i < 4 * PAGE - 8; i += 8) {
		memcpy(&w, (char *)f->sys.vaddr + i, 8);
		assert_int_equal(w, ~pat);
	}
	/* Misaligned or partial-word fills are refused before any effect. */
	assert_int_equal(engine_fill(f->e, engine_vram(4), pat, 8, NULL), -EINVAL);
	assert_int_equal(engine_fill(f->e, engine_vram(8), pat, 12, NULL), -EINVAL);
	assert_true(strstr(log_text, "must be a non-zero multiple of 8") != NULL);
}

static void test_fences(void **state)
{
	struct fx *f = *state;
	uint64_t a, b;

	assert_int_equal(engine_copy(f->e, engine_vram(0), engine_vram(64), 64, &a), 0);
	assert_int_equal(engine_fill(f->e, engine_vram(0), 0, 64, &b), 0);
	assert_true(b > a);
	assert_int_equal(engine_wait(f->e, a, 0), 0);
	assert_int_equal(engine_wait(f->e, 0, 0), 0);
	assert_int_equal(engine_wait(f->e, b + 1, 10), -EINVAL); /* never handed out */
	assert_int_equal(engine_idle(f->e, 0), 0);
	assert_int_equal(engine_reset(f->e), 0);
}

static void test_bad_addresses(void **state)
{
	struct fx *f = *state;
	char before[PAGE];

	memset(f->vram, 0x5a, PAGE);
	memcpy(before, f->vram, PAGE);
	/* Not mapped, read-only as a destination, peer, past VRAM, wrap, zero. */
	assert_int_equal(engine_copy(f->e, engine_vram(0), engine_iova(0x700000000000ull), 16, NULL),
			 -EFAULT);
	assert_true(strstr(log_text, "COPY src IOVA 0x700000000000 is not mapped") != NULL);
	assert_int_equal(engine_copy(f->e, engine_iova(f->ro_iova), engine_vram(0), 16, NULL),
			 -EFAULT);
	assert_int_equal(engine_copy(f->e, engine_vram(0), engine_peer(1, 0), 16, NULL),
			 -EOPNOTSUPP);
	assert_int_equal(engine_copy(f->e, engine_vram(VRAM_SIZE - 8), engine_vram(0), 16, NULL),
			 -EINVAL);
	assert_int_equal(engine_copy(f->e, engine_vram(0), engine_vram(UINT64_MAX - 4), 16, NULL),
			 -EINVAL);
	assert_int_equal(engine_copy(f->e, engine_vram(0), engine_vram(8), 0, NULL), -EINVAL);
	assert_int_equal(engine_fill(f->e, engine_iova(f->sys_iova + 4 * PAGE), 0, 8, NULL), -EFAULT);
	/* A source whose tail is unmapped fails before anything is written. */
	assert_int_equal(engine_copy(f->e, engine_vram(0), engine_iova(f->ro_iova), 2 * PAGE, NULL),
			 -EFAULT);
	assert_memory_equal(f->vram, before, PAGE);
}

static void test_create_errors(void **state)
{
	struct fx *f = *state;
	struct engine_cfg cfg = { .size = sizeof(cfg) };
	struct engine *e = NULL;
	char *buf;

	/* Neither a device nor a mapping. */
	assert_int_equal(engine_create(f->ctx, &engine_cpu_ops, &cfg, &e), -EINVAL);
	/* A mapping without its size. */
	cfg.vram = f->vram;
	assert_int_equal(engine_create(f->ctx, &engine_cpu_ops, &cfg, &e), -EINVAL);
	/* A caller-owned mapping is used as is and not unmapped. */
	buf = calloc(1, 65536);
	assert_non_null(buf);
	cfg.vram = buf;
	cfg.vram_size = 65536;
	assert_int_equal(engine_create(f->ctx, &engine_cpu_ops, &cfg, &e), 0);
	assert_int_equal(engine_fill(e, engine_vram(0), 0x1111111111111111ull, 65536, NULL), 0);
	assert_int_equal((unsigned char)buf[65535], 0x11);
	assert_int_equal(engine_copy(e, engine_vram(0), engine_vram(65536 - 8), 16, NULL), -EINVAL);
	/* No DMA space: IOVAs cannot be reached. */
	assert_int_equal(engine_copy(e, engine_vram(0), engine_iova(f->sys_iova), 16, NULL), -EFAULT);
	engine_destroy(e);
	free(buf);
	/* Grown config from a newer caller is refused, not misread. */
	cfg.size = sizeof(cfg) + 8;
	assert_int_equal(engine_create(f->ctx, &engine_cpu_ops, &cfg, &e), -EINVAL);
	engine_destroy(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_vram_to_vram, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vram_sys_both_ways, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fill, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fences, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_addresses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_errors, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
