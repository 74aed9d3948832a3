/* SPDX-License-Identifier: MIT */
/*
 * The copy engines against the reference device (ugpu-sim in process) through
 * the vfio-user client: the sim backend on both of the device's engines and
 * the cpu backend, with system memory mapped through the DMA space.
 *
 * VRAM layout used here (64 MiB):
 *   0x000000  engine 0 ring (64 KiB) + fence page
 *   0x020000  engine 1 ring (64 KiB) + fence page
 *   0x040000  small-ring engine (4 KiB) + fence page  (wrap test)
 *   0x100000  data
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
#include <xxhash.h>

#include "engines/engine.h"
#include "base/clock.h"
#include "base/context.h"
#include "base/test_point.h"
#include "base/sysmem.h"
#include "vfio/dma.h"
#include "vfio/transport.h"
#include "tools/ugpu-sim/sim.h"

#include "log_capture.h"

#define VRAM_SIZE (64ull << 20)
#define RING0 0x000000ull
#define RING1 0x020000ull
#define RING_SMALL 0x040000ull
#define DATA 0x100000ull
#define SYS_SIZE (8ull << 20)
#define WAIT_MS 5000

/* --- fixture ------------------------------------------------------------------- */

struct fx {
	struct ugpu_context *ctx;
	struct sim *sim;
	struct vfio_dev *dev;
	struct dma_space dma;
	char *vram; /* whole BAR2, for checking */
	struct sysmem sys;
	uint64_t sys_iova;
	struct engine *ce0, *ce1;
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

static int make_engine(struct fx *f, uint32_t index, uint64_t ring, uint32_t ring_size,
		       struct engine **out)
{
	struct engine_cfg cfg = {
		.size = sizeof(cfg),
		.dev = f->dev,
		.index = index,
		.ring_offset = ring,
		.ring_size = ring_size,
		.timeout_ms = WAIT_MS,
	};

	return engine_create(f->ctx, &engine_sim_ops, &cfg, out);
}

static int setup(void **state)
{
	struct ugpu_context_opts o = { .size = sizeof(o), .log_fn = log_capture,
				       .log_level = UGPU_LOG_INFO };
	struct sim_opts so;
	struct fx *f = calloc(1, sizeof(*f));
	uint16_t cmd = 0;
	void *p;

	assert_non_null(f);
	log_clear();
	assert_int_equal(ugpu_context_create(&o, &f->ctx), 0);
	sim_opts_init(&so);
	so.vram_size = VRAM_SIZE;
	assert_int_equal(sim_start(&so, &f->sim), 0);
	assert_int_equal(vfio_user_open(f->ctx, sim_socket_path(f->sim, 0), &f->dev), 0);
	/* Memory decoding and bus mastering on: engines may reach IOVAs. */
	assert_int_equal(f->dev->ops->region_read(f->dev, VFIO_REGION_CONFIG, 4, &cmd, 2), 0);
	cmd |= 0x6;
	assert_int_equal(f->dev->ops->region_write(f->dev, VFIO_REGION_CONFIG, 4, &cmd, 2), 0);

	assert_int_equal(dma_space_init(f->ctx, f->dev, &f->dma), 0);
	assert_int_equal(f->dev->ops->region_mmap(f->dev, VFIO_REGION_BAR2, 0, VRAM_SIZE,
						  PROT_READ | PROT_WRITE, &p),
			 0);
	f->vram = p;
	assert_int_equal(sysmem_create(f->ctx, SYS_SIZE, "test-sys", &f->sys), 0);
	assert_int_equal(dma_map_sysmem(&f->dma, &f->sys, VFIO_DMA_READ | VFIO_DMA_WRITE,
					&f->sys_iova),
			 0);
	assert_int_equal(make_engine(f, 0, RING0, 65536, &f->ce0), 0);
	assert_int_equal(make_engine(f, 1, RING1, 65536, &f->ce1), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	struct sim_state st;

	engine_destroy(f->ce0);
	engine_destroy(f->ce1);
	assert_int_equal(dma_unmap(&f->dma, f->sys_iova, f->sys.size), 0);
	/* Nothing left mapped, on our side and on the device's. */
	assert_int_equal(dma_space_fini(&f->dma), 0);
	assert_int_equal(sim_state(f->sim, 0, &st), 0);
	assert_int_equal(st.dma_maps, 0);
	assert_int_equal(f->dev->ops->region_munmap(f->dev, f->vram, VRAM_SIZE), 0);
	f->dev->ops->close(f->dev);
	sim_stop(f->sim);
	sysmem_destroy(&f->sys);
	ugpu_context_destroy(f->ctx);
	free(f);
	return 0;
}

/* --- tests ------------------------------------------------------------------- */

static void test_vram_to_vram(void **state)
{
	struct fx *f = *state;
	static const uint64_t sizes[] = { 1, 63, 4096, 4097, 65536 + 13, 3ull << 20 };
	uint64_t src = DATA, dst = DATA + (16ull << 20), fence, prev = 0;
	size_t i;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint64_t s = src + i * 7, d = dst + i * 3; /* odd offsets too */

		fill_random(f->vram + s, sizes[i], (unsigned)i + 1);
		memset(f->vram + d, 0, sizes[i]);
		assert_int_equal(engine_copy(f->ce0, engine_vram(d), engine_vram(s), sizes[i], &fence),
				 0);
		assert_true(fence > prev);
		prev = fence;
		assert_int_equal(engine_wait(f->ce0, fence, WAIT_MS), 0);
		assert_memory_equal(f->vram + d, f->vram + s, sizes[i]);
	}
}

static void test_vram_sys(void **state)
{
	struct fx *f = *state;
	char *sys = f->sys.vaddr;
	uint64_t fence;

	/* VRAM -> system */
	fill_random(f->vram + DATA, 5ull << 20, 7);
	memset(sys, 0, SYS_SIZE);
	assert_int_equal(engine_copy(f->ce0, engine_iova(f->sys_iova + 4096), engine_vram(DATA),
				     5ull << 20, &fence),
			 0);
	assert_int_equal(engine_wait(f->ce0, fence, WAIT_MS), 0);
	assert_memory_equal(sys + 4096, f->vram + DATA, 5ull << 20);
	assert_int_equal(sys[0], 0);

	/* system -> VRAM */
	fill_random(sys, SYS_SIZE, 8);
	assert_int_equal(engine_copy(f->ce1, engine_vram(DATA + (32ull << 20)),
				     engine_iova(f->sys_iova), SYS_SIZE, &fence),
			 0);
	assert_int_equal(engine_wait(f->ce1, fence, WAIT_MS), 0);
	assert_memory_equal(f->vram + DATA + (32ull << 20), sys, SYS_SIZE);
}

static void test_fill(void **state)
{
	struct fx *f = *state;
	const uint64_t pat = 0xfeedfacecafebeefull;
	uint64_t fence, i, w;

	memset(f->vram + DATA, 0, 1 << 20);
	assert_int_equal(engine_fill(f->ce0, engine_vram(DATA + 8), pat, (1 << 20) - 16, &fence), 0);
	assert_int_equal(engine_fill(f->ce0, engine_iova(f->sys_iova), ~pat, 1 << 20, &fence), 0);
	assert_int_equal(engine_wait(f->ce0, fence, WAIT_MS), 0);
	memcpy(&w, f->vram + DATA, 8);
	assert_int_equal(w, 0);
	for (i = 8; i < (1 << 20) - 8; i += 8) {
		memcpy(&w, f->vram + DATA + i, 8);
		assert_int_equal(w, pat);
	}
	memcpy(&w, f->vram + DATA + (1 << 20) - 8, 8);
	assert_int_equal(w, 0);
	for (i = 0; i < 1 << 20; i += 8) {
		memcpy(&w, (char *)f->sys.vaddr + i, 8);
		assert_int_equal(w, ~pat);
	}
	assert_int_equal(engine_fill(f->ce0, engine_vram(DATA + 4), pat, 64, NULL), -EINVAL);
}

static void test_fences_and_waits(void **state)
{
	struct fx *f = *state;
	uint64_t a, b, c;

	/* Copies without a fence, then one: the fence covers them all. */
	fill_random(f->vram + DATA, 1 << 20, 11);
	assert_int_equal(engine_copy(f->ce0, engine_vram(DATA + (8 << 20)), engine_vram(DATA),
				     1 << 19, NULL),
			 0);
	assert_int_equal(engine_copy(f->ce0, engine_vram(DATA + (8 << 20) + (1 << 19)),
				     engine_vram(DATA + (1 << 19)), 1 << 19, &a),
			 0);
	assert_int_equal(engine_wait(f->ce0, a, WAIT_MS), 0);
	assert_memory_equal(f->vram + DATA + (8 << 20), f->vram + DATA, 1 << 20);
	assert_true(engine_fence_is_done(f->ce0, a));

	/* Fences count up per engine; each engine has its own sequence. */
	assert_int_equal(engine_fill(f->ce0, engine_vram(DATA), 1, 4096, &b), 0);
	assert_int_equal(b, a + 1);
	assert_int_equal(engine_fill(f->ce1, engine_vram(DATA + 8192), 2, 4096, &c), 0);
	assert_int_equal(c, 1);
	assert_int_equal(engine_wait(f->ce0, b, WAIT_MS), 0);
	assert_int_equal(engine_wait(f->ce1, c, WAIT_MS), 0);
	assert_int_equal(engine_wait(f->ce0, 0, 0), 0);
	assert_int_equal(engine_wait(f->ce0, b + 5, 10), -EINVAL);

	/* idle() covers work queued without a fence. */
	memset(f->vram + DATA + (20 << 20), 0, 4096);
	assert_int_equal(engine_fill(f->ce1, engine_vram(DATA + (20 << 20)), 0x4242424242424242ull,
				     4096, NULL),
			 0);
	assert_int_equal(engine_idle(f->ce1, WAIT_MS), 0);
	assert_int_equal((unsigned char)f->vram[DATA + (20 << 20) + 4095], 0x42);
}

static void drop_doorbell(void *arg, enum test_point_id id, void *obj)
{
	int *left = arg;

	(void)id;
	if (*left > 0) {
		(*left)--;
		*(bool *)obj = true;
	}
}

/*
 * The doorbell is a posted write: a device that dropped it (here a test
 * point keeps it from being sent at all) leaves the ring's tail behind
 * ours, and the waiter's slice check rings again instead of waiting out
 * its timeout. Without the check this wait ends in -ETIMEDOUT.
 */
static void test_dropped_doorbell_rung_again(void **state)
{
	struct fx *f = *state;
	int left = 1;
	uint64_t fence, t0;

	fill_random(f->vram + DATA, 1 << 16, 23);
	log_clear();
	test_point_set(TEST_POINT_ENGINE_DOORBELL, drop_doorbell, &left);
	assert_int_equal(engine_copy(f->ce0, engine_vram(DATA + (4 << 20)), engine_vram(DATA),
				     1 << 16, &fence),
			 0);
	t0 = now_ns();
	assert_int_equal(engine_wait(f->ce0, fence, WAIT_MS), 0);
	test_point_set(TEST_POINT_ENGINE_DOORBELL, NULL, NULL);
	assert_int_equal(left, 0); /* one doorbell was dropped */
	assert_true(log_has("ringing again"));
	assert_true(now_ns() - t0 < 1000000000ull); /* a slice or two, not the timeout */
	assert_memory_equal(f->vram + DATA + (4 << 20), f->vram + DATA, 1 << 16);
	/* and the engine goes on as before */
	assert_int_equal(engine_fill(f->ce0, engine_vram(DATA), 7, 4096, &fence), 0);
	assert_int_equal(engine_wait(f->ce0, fence, WAIT_MS), 0);
}

/* The same with nobody waiting: a plugged batch larger than a 4 KiB ring
 * rings the doorbell itself when the ring fills, and a submitter waiting
 * for room finds that doorbell dropped and rings again (the review of
 * 2026-12-07: it waited out its timeout). */
static void test_dropped_doorbell_full_ring(void **state)
{
	struct fx *f = *state;
	struct engine *small;
	int left = 1;
	uint64_t fence = 0, t0;

	engine_destroy(f->ce0);
	f->ce0 = NULL;
	assert_int_equal(make_engine(f, 0, RING_SMALL, 4096, &small), 0);
	fill_random(f->vram + DATA, 128 * 256, 29);
	log_clear();
	t0 = now_ns();
	engine_plug(small);
	test_point_set(TEST_POINT_ENGINE_DOORBELL, drop_doorbell, &left);
	for (unsigned i = 0; i < 128; i++)
		assert_int_equal(engine_copy(small, engine_vram(DATA + (8 << 20) + i * 256ull),
					     engine_vram(DATA + i * 256ull), 256, i == 127 ? &fence : NULL),
				 0);
	test_point_set(TEST_POINT_ENGINE_DOORBELL, NULL, NULL);
	assert_int_equal(engine_unplug(small), 0);
	assert_int_equal(engine_wait(small, fence, WAIT_MS), 0);
	assert_int_equal(left, 0);
	assert_true(log_has("ringing again"));
	assert_true(now_ns() - t0 < 1000000000ull);
	assert_memory_equal(f->vram + DATA + (8 << 20), f->vram + DATA, 128 * 256);
	engine_destroy(small);
}

/* Engine registers (docs/reference-device.md), for the next test. */
#define CE0_CTRL 0x1014u
#define CE0_RING_BASE 0x1000u
#define CE0_RING_SIZE 0x1008u

/* A ring latched again behind the driver's back (ENABLE cleared and set
 * from outside: HEAD = TAIL = 0) with a doorbell lost meanwhile: ringing
 * the driver's tail again would run old, finished descriptors once more
 * (the review of 2026-12-07 saw a finished copy overwrite its destination
 * again). The waiter sees HEAD outside its window and fails with -EIO;
 * the old copy is not replayed. */
static void test_relatched_ring_not_replayed(void **state)
{
	struct fx *f = *state;
	int left = 1;
	uint64_t a, b;

	fill_random(f->vram + DATA, 65536, 31);
	assert_int_equal(engine_copy(f->ce0, engine_vram(DATA + (4 << 20)), engine_vram(DATA), 65536,
				     &a),
			 0);
	assert_int_equal(engine_wait(f->ce0, a, WAIT_MS), 0);
	memset(f->vram + DATA + (4 << 20), 0x5a, 65536); /* the destination reused */
	/* latched again from outside */
	assert_int_equal(vfio_write32(f->dev, VFIO_REGION_BAR0, CE0_CTRL, 0), 0);
	assert_int_equal(vfio_write64(f->dev, VFIO_REGION_BAR0, CE0_RING_BASE, RING0), 0);
	assert_int_equal(vfio_write32(f->dev, VFIO_REGION_BAR0, CE0_RING_SIZE, 65536), 0);
	assert_int_equal(vfio_write32(f->dev, VFIO_REGION_BAR0, CE0_CTRL, 1), 0);
	log_clear();
	test_point_set(TEST_POINT_ENGINE_DOORBELL, drop_doorbell, &left);
	assert_int_equal(engine_fill(f->ce0, engine_vram(DATA + (12 << 20)), 7, 4096, &b), 0);
	test_point_set(TEST_POINT_ENGINE_DOORBELL, NULL, NULL);
	assert_int_equal(engine_wait(f->ce0, b, 500), -EIO);
	assert_true(log_has("latched again"));
	for (int i = 0; i < 65536; i++)
		if ((unsigned char)f->vram[DATA + (4 << 20) + i] != 0x5a)
			fail_msg("byte %d of the reused destination was copied again", i);
	assert_int_equal(engine_reset(f->ce0), 0);
	assert_int_equal(engine_fill(f->ce0, engine_vram(DATA + (12 << 20)), 7, 4096, &b), 0);
	assert_int_equal(engine_wait(f->ce0, b, WAIT_MS), 0);
}

/* Many small copies through a 4 KiB ring (63 usable slots): the ring wraps
 * many times and submission waits for the engine. */
static void test_ring_wrap(void **state)
{
	struct fx *f = *state;
	const unsigned n = 3000, sz = 256;
	struct engine *small;
	uint64_t fence = 0;
	unsigned i;

	engine_destroy(f->ce0); /* the small-ring engine takes engine 0 */
	f->ce0 = NULL;
	assert_int_equal(make_engine(f, 0, RING_SMALL, 4096, &small), 0);
	fill_random(f->vram + DATA, (size_t)n * sz, 21);
	memset(f->vram + DATA + (16 << 20), 0, (size_t)n * sz);
	for (i = 0; i < n; i++) {
		uint64_t *fp = i % 10 == 9 ? &fence : NULL;

		/* The second half is one plugged batch far larger than the ring:
		 * a full ring must ring the doorbell itself. */
		if (i == n / 2)
			engine_plug(small);

		/* Alternate VRAM and system memory destinations. */
		if (i % 2)
			assert_int_equal(engine_copy(small, engine_iova(f->sys_iova + (uint64_t)i * sz),
						     engine_vram(DATA + (uint64_t)i * sz), sz, fp),
					 0);
		else
			assert_int_equal(engine_copy(small,
						     engine_vram(DATA + (16 << 20) + (uint64_t)i * sz),
						     engine_vram(DATA + (uint64_t)i * sz), sz, fp),
					 0);
	}
	assert_int_equal(engine_unplug(small), 0);
	assert_int_equal(engine_idle(small, WAIT_MS), 0);
	assert_int_equal(engine_wait(small, fence, 0), 0);
	assert_int_equal(fence, n / 10);
	for (i = 0; i < n; i++) {
		const char *want = f->vram + DATA + (size_t)i * sz;
		const char *got = i % 2 ? (char *)f->sys.vaddr + (size_t)i * sz :
					  f->vram + DATA + (16 << 20) + (size_t)i * sz;

		assert_memory_equal(got, want, sz);
	}
	engine_destroy(small);
	assert_int_equal(make_engine(f, 0, RING0, 65536, &f->ce0), 0);
}

/* The chunks of list @r: @n of assorted sizes (a byte, part of a piece,
 * whole 64 KiB pieces, a piece and a bit), their sources taken in reverse
 * order from @src_base (at most @max_len each), their destinations packed
 * from 0 with @gap bytes after each. Returns the bytes the destinations
 * span. */
static uint64_t list_chunks(struct engine_chunk *c, uint32_t n, unsigned r, uint64_t src_base,
			    uint64_t max_len, uint64_t gap)
{
	static const uint64_t sizes[] = { 1, 100, 4096, 65536, 65536 + 4096, 2 * 65536 + 8 };
	uint64_t dst = 0;

	for (uint32_t i = 0; i < n; i++) {
		uint64_t len = sizes[(i + r) % (sizeof(sizes) / sizeof(sizes[0]))];

		c[i].len = len < max_len ? len : max_len;
		c[i].src = src_base + (uint64_t)(n - 1 - i) * 0x30000;
		c[i].dst = dst;
		dst += c[i].len + gap;
	}
	return dst;
}

/* Copy lists (the reference device's COPY_LIST, 1.4) through a 4 KiB ring,
 * so that lists wrap around its end and wait for room: each chunk lands at
 * its own destination and nothing between them is touched; the sums are
 * each chunk's own pieces' in order (a list that copied or hashed the
 * wrong chunk fails here); back without sums; then plugged lists far
 * larger than the ring; then the refusals. */
static void test_copy_list(void **state)
{
	struct fx *f = *state;
	struct engine_cfg ccfg = { .size = sizeof(ccfg), .dev = f->dev, .dma = &f->dma };
	struct engine_chunk c[62];
	uint8_t *sys = f->sys.vaddr;
	struct engine *small, *cpu;
	uint64_t fence = 0, span, sums[3 * 62];
	unsigned r;

	assert_int_equal(engine_list_max(f->ce0), 1022); /* 64 KiB ring: half of it */
	assert_int_equal(engine_create(f->ctx, &engine_cpu_ops, &ccfg, &cpu), 0);
	assert_int_equal(engine_list_max(cpu), 0);
	engine_destroy(f->ce0);
	f->ce0 = NULL;
	assert_int_equal(make_engine(f, 0, RING_SMALL, 4096, &small), 0);
	assert_int_equal(engine_list_max(small), 62);
	fill_random(f->vram + DATA, 62 * 0x30000, 41);
	for (r = 0; r < 12; r++) {
		uint32_t n = 1 + (r * 23) % 62, slot = 0;

		span = list_chunks(c, n, r, DATA, UINT64_MAX, 4096);
		assert_true(span <= SYS_SIZE);
		memset(sys, 0xcc, span);
		assert_int_equal(engine_copy_list(small, engine_iova(f->sys_iova), engine_vram(0), c, n,
						  0, &fence),
				 0);
		assert_int_equal(engine_wait(small, fence, WAIT_MS), 0);
		for (uint32_t i = 0; i < n; i++) {
			uint32_t pieces = (uint32_t)((c[i].len + 65535) / 65536);

			assert_memory_equal(sys + c[i].dst, f->vram + c[i].src, c[i].len);
			assert_int_equal(sys[c[i].dst + c[i].len], 0xcc);
			engine_sums(small, slot, pieces, sums);
			for (uint32_t p = 0; p < pieces; p++) {
				uint64_t len = c[i].len - p * 65536ull < 65536 ? c[i].len - p * 65536ull
									     : 65536;

				assert_int_equal(sums[p], XXH3_64bits(f->vram + c[i].src + p * 65536ull,
								      len));
			}
			slot += pieces;
		}
		/* and back, into other VRAM, without sums */
		for (uint32_t i = 0; i < n; i++) {
			uint64_t t = c[i].src;

			c[i].src = c[i].dst;
			c[i].dst = t + (16ull << 20);
		}
		assert_int_equal(engine_copy_list(small, engine_vram(0), engine_iova(f->sys_iova), c, n,
						  ENGINE_NO_SUM, &fence),
				 0);
		assert_int_equal(engine_wait(small, fence, WAIT_MS), 0);
		for (uint32_t i = 0; i < n; i++)
			assert_memory_equal(f->vram + c[i].dst, sys + c[i].src, c[i].len);
	}

	/* Plugged: 40 lists of 62 chunks, each half the ring: a full ring
	 * rings the doorbell itself, never showing the engine half a list. */
	engine_plug(small);
	for (r = 0; r < 40; r++) {
		list_chunks(c, 62, r, DATA, 256, 64);
		for (uint32_t i = 0; i < 62; i++)
			c[i].dst += (uint64_t)r * 62 * (256 + 64);
		assert_int_equal(engine_copy_list(small, engine_iova(f->sys_iova), engine_vram(0), c,
						  62, ENGINE_NO_SUM, r % 8 == 7 ? &fence : NULL),
				 0);
	}
	assert_int_equal(engine_unplug(small), 0);
	assert_int_equal(engine_idle(small, WAIT_MS), 0);
	for (r = 0; r < 40; r++) {
		list_chunks(c, 62, r, DATA, 256, 64);
		for (uint32_t i = 0; i < 62; i++)
			assert_memory_equal(sys + (uint64_t)r * 62 * (256 + 64) + c[i].dst,
					    f->vram + c[i].src, c[i].len);
	}

	/* What the engine refuses before the device sees it. */
	list_chunks(c, 62, 0, DATA, UINT64_MAX, 4096);
	assert_int_equal(engine_copy_list(small, engine_iova(f->sys_iova), engine_vram(0), c, 63,
					  ENGINE_NO_SUM, NULL),
			 -EINVAL);
	assert_int_equal(engine_copy_list(small, engine_iova(f->sys_iova), engine_vram(0), c, 0,
					  ENGINE_NO_SUM, NULL),
			 -EINVAL);
	c[3].len = 0;
	assert_int_equal(engine_copy_list(small, engine_iova(f->sys_iova), engine_vram(0), c, 4,
					  ENGINE_NO_SUM, NULL),
			 -EINVAL);
	c[3].len = 8;
	assert_int_equal(engine_copy_list(small, engine_vram(0), engine_iova(f->sys_iova), c, 4, 0,
					  NULL),
			 -EINVAL); /* sums of system memory */
	assert_int_equal(engine_copy_list(small, engine_iova(f->sys_iova), engine_vram(0), c, 4,
					  engine_sum_slots(small) - 1, NULL),
			 -ENOSPC);
	assert_int_equal(engine_copy_list(cpu, engine_iova(f->sys_iova), engine_vram(0), c, 4,
					  ENGINE_NO_SUM, NULL),
			 -EOPNOTSUPP);
	engine_destroy(cpu);

	/* A failing list: the engine stops on it, names it, and recovers. */
	log_clear();
	assert_int_equal(sim_inject(f->sim, 0, SIM_INJECT_CMD, 1, false), 0);
	assert_int_equal(engine_copy_list(small, engine_iova(f->sys_iova), engine_vram(0), c, 4,
					  ENGINE_NO_SUM, &fence),
			 0);
	assert_int_equal(engine_wait(small, fence, WAIT_MS), -EIO);
	assert_true(log_has("engine sim0: COPY_LIST of 4 entries VRAM -> IOVA"));
	assert_true(log_has("ERR_INJECTED (5)"));
	assert_int_equal(engine_reset(small), 0);
	memset(sys, 0xcc, 4096);
	assert_int_equal(engine_copy_list(small, engine_iova(f->sys_iova), engine_vram(0), c, 4,
					  ENGINE_NO_SUM, &fence),
			 0);
	assert_int_equal(engine_wait(small, fence, WAIT_MS), 0);
	assert_memory_equal(sys + c[0].dst, f->vram + c[0].src, c[0].len);
	engine_destroy(small);
	assert_int_equal(make_engine(f, 0, RING0, 65536, &f->ce0), 0);
}

/* A plugged batch starts only at unplug (or when someone waits, or when the
 * ring fills), and then runs completely. */
static void test_plug(void **state)
{
	struct fx *f = *state;
	uint64_t first = 0, last = 0, fence;
	unsigned i;

	fill_random(f->vram + DATA, 1 << 20, 61);
	memset(f->vram + DATA + (4 << 20), 0, 1 << 20);
	engine_plug(f->ce0);
	for (i = 0; i < 256; i++) {
		assert_int_equal(engine_copy(f->ce0, engine_vram(DATA + (4 << 20) + i * 4096ull),
					     engine_vram(DATA + i * 4096ull), 4096, &fence),
				 0);
		if (!first)
			first = fence;
		last = fence;
	}
	usleep(20000);
	assert_false(engine_fence_is_done(f->ce0, first)); /* nothing rung yet */
	assert_int_equal(engine_unplug(f->ce0), 0);
	assert_int_equal(engine_wait(f->ce0, last, WAIT_MS), 0);
	assert_memory_equal(f->vram + DATA + (4 << 20), f->vram + DATA, 1 << 20);

	/* Waiting inside a batch kicks it rather than waiting forever. */
	engine_plug(f->ce0);
	assert_int_equal(engine_fill(f->ce0, engine_vram(DATA), 9, 4096, &fence), 0);
	assert_int_equal(engine_wait(f->ce0, fence, WAIT_MS), 0);
	assert_int_equal(engine_unplug(f->ce0), 0);
	/* The cpu engine has no batches: plugging is a no-op. */
}

/* A copy to an unmapped IOVA: -EIO, the command named, later work refused
 * until reset, and the engine works again after it. */
static void test_error_and_reset(void **state)
{
	struct fx *f = *state;
	const uint64_t bad = 0x500000000000ull;
	uint64_t before, failing, after;
	char want[128];

	fill_random(f->vram + DATA, 65536, 31);
	assert_int_equal(engine_copy(f->ce0, engine_vram(DATA + (1 << 20)), engine_vram(DATA), 65536,
				     &before),
			 0);
	assert_int_equal(engine_copy(f->ce0, engine_iova(bad), engine_vram(DATA), 4096, &failing), 0);
	assert_int_equal(engine_copy(f->ce0, engine_vram(DATA + (2 << 20)), engine_vram(DATA), 4096,
				     &after),
			 0);
	assert_int_equal(engine_wait(f->ce0, before, WAIT_MS), 0);
	assert_memory_equal(f->vram + DATA + (1 << 20), f->vram + DATA, 65536);
	assert_int_equal(engine_wait(f->ce0, failing, WAIT_MS), -EIO);
	snprintf(want, sizeof(want), "dst=IOVA 0x%" PRIx64 " size=0x1000 failed: ERR_DMA (3)", bad);
	assert_true(log_has("engine sim0: COPY src=VRAM 0x"));
	assert_true(log_has(want));
	assert_int_equal(engine_wait(f->ce0, after, WAIT_MS), -EIO); /* dropped */
	assert_int_equal(engine_copy(f->ce0, engine_vram(DATA), engine_vram(DATA + 8), 8, NULL), -EIO);
	assert_int_equal(engine_idle(f->ce0, 100), -EIO);

	assert_int_equal(engine_reset(f->ce0), 0);
	assert_int_equal(engine_wait(f->ce0, failing, 0), -EIO); /* still lost */
	assert_int_equal(engine_wait(f->ce0, before, 0), 0); /* still done */
	memset(f->vram + DATA + (3 << 20), 0, 65536);
	assert_int_equal(engine_copy(f->ce0, engine_vram(DATA + (3 << 20)), engine_vram(DATA), 65536,
				     &after),
			 0);
	assert_true(after > failing);
	assert_int_equal(engine_wait(f->ce0, after, WAIT_MS), 0);
	assert_memory_equal(f->vram + DATA + (3 << 20), f->vram + DATA, 65536);
}

/* Fault injection by countdown: the Nth descriptor fails with ERR_INJECTED. */
static void test_injected_fault(void **state)
{
	struct fx *f = *state;
	uint64_t a, b;

	/* Each copy with a fence is two descriptors: COPY + FENCE. The third
	 * descriptor from now is the second COPY. */
	assert_int_equal(sim_inject(f->sim, 0, SIM_INJECT_CMD, 3, false), 0);
	assert_int_equal(engine_copy(f->ce1, engine_vram(DATA + 4096), engine_vram(DATA), 4096, &a), 0);
	assert_int_equal(engine_copy(f->ce1, engine_vram(DATA + 8192), engine_vram(DATA), 4096, &b), 0);
	assert_int_equal(engine_wait(f->ce1, a, WAIT_MS), 0);
	assert_int_equal(engine_wait(f->ce1, b, WAIT_MS), -EIO);
	assert_true(log_has("engine sim1: COPY src=VRAM"));
	assert_true(log_has("ERR_INJECTED (5)"));
	assert_int_equal(engine_reset(f->ce1), 0);
	assert_int_equal(engine_copy(f->ce1, engine_vram(DATA + 8192), engine_vram(DATA), 4096, &b), 0);
	assert_int_equal(engine_wait(f->ce1, b, WAIT_MS), 0);

	/* An injected DMA failure names the IOVA side. */
	log_clear();
	assert_int_equal(sim_inject(f->sim, 0, SIM_INJECT_DMA, 1, false), 0);
	assert_int_equal(engine_copy(f->ce1, engine_iova(f->sys_iova), engine_vram(DATA), 4096, &b),
			 0);
	assert_int_equal(engine_wait(f->ce1, b, WAIT_MS), -EIO);
	assert_true(log_has("ERR_DMA (3)"));
	assert_int_equal(engine_reset(f->ce1), 0);
	assert_int_equal(sim_inject_clear(f->sim, 0), 0);
}

/* Both engines at once, from two threads, on disjoint ranges. */
struct par {
	struct fx *f;
	struct engine *e;
	uint64_t base;
	int fails;
};

static void *par_main(void *p)
{
	struct par *a = p;
	uint64_t fence = 0;
	int i;

	for (i = 0; i < 64; i++) {
		uint64_t src = a->base, dst = a->base + (2 << 20) + (uint64_t)(i % 4) * (1 << 20);

		if (engine_copy(a->e, engine_vram(dst), engine_vram(src), 1 << 20, &fence))
			a->fails++;
		if (i % 8 == 7 && engine_wait(a->e, fence, WAIT_MS))
			a->fails++;
	}
	if (engine_idle(a->e, WAIT_MS))
		a->fails++;
	return NULL;
}

static void test_parallel_engines(void **state)
{
	struct fx *f = *state;
	struct par a[2] = {
		{ .f = f, .e = f->ce0, .base = DATA },
		{ .f = f, .e = f->ce1, .base = DATA + (16 << 20) },
	};
	pthread_t t[2];
	int i, k;

	for (i = 0; i < 2; i++)
		fill_random(f->vram + a[i].base, 1 << 20, 40 + (unsigned)i);
	for (i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, par_main, &a[i]), 0);
	for (i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(a[i].fails, 0);
		for (k = 0; k < 4; k++)
			assert_memory_equal(f->vram + a[i].base + (2 << 20) + (uint64_t)k * (1 << 20),
					    f->vram + a[i].base, 1 << 20);
	}
}

/* The cpu engine on the same device: byte-exact against the same layout. */
static void test_cpu_engine(void **state)
{
	struct fx *f = *state;
	struct engine_cfg cfg = { .size = sizeof(cfg), .dev = f->dev, .dma = &f->dma };
	struct engine *cpu;
	uint64_t fence, w;

	assert_int_equal(engine_create(f->ctx, &engine_cpu_ops, &cfg, &cpu), 0);
	fill_random(f->vram + DATA, 3 << 20, 51);
	assert_int_equal(engine_copy(cpu, engine_iova(f->sys_iova + 8), engine_vram(DATA),
				     (3 << 20) - 8, &fence),
			 0);
	assert_int_equal(engine_wait(cpu, fence, 0), 0);
	assert_memory_equal((char *)f->sys.vaddr + 8, f->vram + DATA, (3 << 20) - 8);
	fill_random(f->sys.vaddr, 1 << 20, 52);
	assert_int_equal(engine_copy(cpu, engine_vram(DATA + (10 << 20)), engine_iova(f->sys_iova),
				     1 << 20, NULL),
			 0);
	assert_memory_equal(f->vram + DATA + (10 << 20), f->sys.vaddr, 1 << 20);
	assert_int_equal(engine_fill(cpu, engine_vram(DATA), 0x77, 64, NULL), 0);
	memcpy(&w, f->vram + DATA + 56, 8);
	assert_int_equal(w, 0x77);
	assert_int_equal(engine_copy(cpu, engine_vram(DATA), engine_peer(1, 0), 8, NULL),
			 -EOPNOTSUPP);

	/* What the cpu engine wrote, the sim engine reads (same VRAM). */
	memset(f->sys.vaddr, 0, 4096);
	assert_int_equal(engine_copy(f->ce0, engine_iova(f->sys_iova), engine_vram(DATA + (10 << 20)),
				     4096, &fence),
			 0);
	assert_int_equal(engine_wait(f->ce0, fence, WAIT_MS), 0);
	assert_memory_equal(f->sys.vaddr, f->vram + DATA + (10 << 20), 4096);
	engine_destroy(cpu);
}

static void test_bad_config(void **state)
{
	struct fx *f = *state;
	struct engine *e = NULL;

	assert_int_equal(make_engine(f, 2, RING_SMALL, 4096, &e), -ENODEV);
	assert_int_equal(make_engine(f, 0, RING_SMALL, 3000, &e), -EINVAL);
	assert_int_equal(make_engine(f, 0, RING_SMALL + 8, 4096, &e), -EINVAL);
	assert_int_equal(make_engine(f, 0, VRAM_SIZE - 4096, 4096, &e), -EINVAL);
	assert_true(log_has("past VRAM"));
	assert_null(e);
	/* A copy past VRAM is refused before it reaches the device. */
	assert_int_equal(engine_copy(f->ce0, engine_vram(VRAM_SIZE - 8), engine_vram(DATA), 16, NULL),
			 -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_vram_to_vram, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vram_sys, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fill, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fences_and_waits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ring_wrap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dropped_doorbell_rung_again, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dropped_doorbell_full_ring, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relatched_ring_not_replayed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_plug, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_and_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_injected_fault, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parallel_engines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cpu_engine, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
