/* SPDX-License-Identifier: MIT */
/*
 * Buffer objects against the reference device: creation and validation,
 * references, pinning, byte-exact migration both ways (contiguous and
 * scattered), CPU read/write, CPU mappings that follow moves, a failed
 * copy that leaves the BO intact, and eviction under pressure with the
 * invariant checker after every operation.
 */
#include <pthread.h>

#include "integration/test_bo_common.h"
#include "base/test_point.h"
#include "mm/vram.h"

#define MiB (1ull << 20)

static int setup(void **state)
{
	return fx_setup_vram(state, 16 * MiB);
}

static void check(struct fx *f)
{
	assert_int_equal(bo_mgr_check(f->dev, true), 0);
}

static void test_create_validation(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = 4096 };
	struct ugpu_bo_info info = { .size = sizeof(info) };
	struct ugpu_bo *bo = NULL;

	assert_int_equal(ugpu_bo_create(NULL, &o, &bo), -EINVAL);
	assert_int_equal(ugpu_bo_create(f->dev, NULL, &bo), -EINVAL);
	o.bytes = 0;
	assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), -EINVAL);
	o.bytes = 4096;
	o.flags = 1u << 20;
	assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), -EINVAL);
	o.flags = UGPU_BO_NO_RESTORE | UGPU_BO_LATE_RESTORE | UGPU_BO_KERNEL;
	assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), -EINVAL);
	o.flags = UGPU_BO_LATE_RESTORE; /* without KERNEL */
	assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), -EINVAL);
	o.flags = 0;
	o.placements[0] = (enum ugpu_placement)7;
	assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), -EINVAL);
	o.placements[0] = V;
	o.placements[1] = V; /* repeated */
	assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), -EINVAL);
	o.placements[0] = N;
	o.placements[1] = S; /* a gap */
	assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), -EINVAL);
	o.placements[0] = V;
	o.placements[1] = N;
	o.bytes = 32 * MiB; /* bigger than VRAM, VRAM only */
	assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), -ENOSPC);
	assert_null(bo);
	check(f);

	/* Defaults: {VRAM, SYSTEM}; size page rounded; zeroed. */
	memset(&o, 0, sizeof(o));
	o.size = sizeof(o);
	o.bytes = 5000;
	o.name = "five-thousand";
	assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), 0);
	assert_int_equal(ugpu_bo_query(bo, &info), 0);
	assert_int_equal(info.bytes, 8192);
	assert_int_equal(info.placement, V);
	assert_int_equal(info.pin_count, 0);
	assert_false(info.cpu_mapped);
	assert_false(info.lost);
	{
		uint8_t buf[8192], zero[8192] = { 0 };

		assert_int_equal(ugpu_bo_read(bo, 0, buf, sizeof(buf)), 0);
		assert_memory_equal(buf, zero, sizeof(buf));
		assert_int_equal(ugpu_bo_read(bo, 1, buf, 8192), -EINVAL);
		assert_int_equal(ugpu_bo_write(bo, 8193, buf, 0), -EINVAL);
		assert_int_equal(ugpu_bo_write(bo, 8192, buf, 0), 0);
	}
	/* Too-large SYSTEM fallback works when VRAM cannot hold it. */
	{
		struct ugpu_bo *big = bo_new(f->dev, 32 * MiB, 0, V, S, "big");

		assert_non_null(big);
		assert_int_equal(bo_where(big), S);
		check(f);
		ugpu_bo_put(big);
	}
	ugpu_bo_put(bo);
	check(f);
}

static void test_refcount_and_pin(void **state)
{
	struct fx *f = *state;
	struct bo_mgr_stats st;
	struct ugpu_bo *bo = bo_new(f->dev, MiB, 0, V, S, "rc");

	assert_non_null(bo);
	bo_mgr_get_stats(f->dev, &st);
	assert_int_equal(st.vram_bytes, MiB + FX_KERNEL_VRAM); /* + the driver's kernel BOs */
	ugpu_bo_get(bo);
	ugpu_bo_put(bo);
	assert_int_equal(bo_where(bo), V); /* still alive */

	assert_int_equal(ugpu_bo_unpin(bo), -EINVAL);
	assert_int_equal(ugpu_bo_pin(bo), 0);
	assert_int_equal(ugpu_bo_pin(bo), 0);
	assert_int_equal(ugpu_bo_migrate(bo, S), -EBUSY); /* pinned in VRAM */
	check(f);
	assert_int_equal(ugpu_bo_unpin(bo), 0);
	assert_int_equal(ugpu_bo_unpin(bo), 0);
	assert_int_equal(ugpu_bo_unpin(bo), -EINVAL);
	check(f);

	/* Pin of an evicted BO brings it back to its first placement. */
	assert_int_equal(bo_fill(bo, MiB, 3), 0);
	assert_int_equal(ugpu_bo_migrate(bo, S), 0);
	assert_int_equal(bo_where(bo), S);
	assert_int_equal(ugpu_bo_pin(bo), 0);
	assert_int_equal(bo_where(bo), V);
	assert_int_equal(bo_verify(bo, MiB, 3), -1);
	assert_int_equal(ugpu_bo_unpin(bo), 0);

	/* A VRAM-only BO may not go to system memory. */
	{
		struct ugpu_bo *vo = bo_new(f->dev, 4096, 0, V, N, "vram-only");

		assert_int_equal(ugpu_bo_migrate(vo, S), -EINVAL);
		ugpu_bo_put(vo);
	}
	ugpu_bo_put(bo);
	bo_mgr_get_stats(f->dev, &st);
	assert_int_equal(st.vram_bytes, FX_KERNEL_VRAM);
	assert_int_equal(st.bos, FX_KERNEL_BOS);
	check(f);
}

/* A migrate held in its unlocked copy by a test point (@entered, then
 * until @release or 3 s). */
struct held_move {
	struct ugpu_bo *bo;
	int entered, release, ret;
};

static void held_move_hook(void *arg, enum test_point_id id, void *obj)
{
	struct held_move *h = arg;
	uint64_t t0 = fx_now_ms();

	(void)id;
	if (obj != h->bo)
		return;
	__atomic_store_n(&h->entered, 1, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&h->release, __ATOMIC_ACQUIRE) && fx_now_ms() - t0 < 3000)
		usleep(1000);
}

static void *held_move_fn(void *arg)
{
	struct held_move *h = arg;

	h->ret = ugpu_bo_migrate(h->bo, V);
	return NULL;
}

/* What ugpud calls on its loop does not wait for another BO's unlocked
 * copy (it held every client up for each worker's copy, the review of
 * 2026-12-07): ugpu_device_mem_stats() (after every request; it sees the
 * move not yet done), ugpu_bo_query(), the export of a BO in system
 * memory (a map), an export refused anyway (a VRAM-only BO, a pinned one)
 * and the release of an export (an unmap). */
static void test_readers_beside_move(void **state)
{
	struct fx *f = *state;
	struct ugpu_device_mem m = { .size = sizeof(m) };
	struct ugpu_bo_info qi = { .size = sizeof(qi) };
	struct held_move h = { .bo = bo_new(f->dev, 4 * MiB, 0, V, S, "held") };
	struct ugpu_bo *other = bo_new(f->dev, 64 << 10, 0, S, V, "other");
	struct ugpu_bo *vonly = bo_new(f->dev, 64 << 10, 0, V, N, "vram-only");
	struct ugpu_bo *pinned = bo_new(f->dev, 64 << 10, UGPU_BO_PINNED, V, S, "pinned");
	uint64_t t0, took, took_q, took_x, took_r, xsize;
	int xfd = -1, rv, rp;
	pthread_t t;

	assert_non_null(h.bo);
	assert_non_null(other);
	assert_non_null(vonly);
	assert_non_null(pinned);
	assert_int_equal(ugpu_bo_migrate(h.bo, S), 0);
	assert_int_equal(bo_fill(h.bo, 4 * MiB, 9), 0);
	test_point_set(TEST_POINT_BO_MOVE_COPY, held_move_hook, &h);
	assert_int_equal(pthread_create(&t, NULL, held_move_fn, &h), 0);
	while (!__atomic_load_n(&h.entered, __ATOMIC_ACQUIRE))
		usleep(100);
	t0 = fx_now_ms();
	assert_int_equal(ugpu_device_mem_stats(f->dev, &m), 0);
	took = fx_now_ms() - t0;
	t0 = fx_now_ms();
	assert_int_equal(ugpu_bo_query(other, &qi), 0);
	took_q = fx_now_ms() - t0;
	t0 = fx_now_ms();
	assert_int_equal(bo_sys_export(other, &xfd, &xsize), 0);
	took_x = fx_now_ms() - t0;
	t0 = fx_now_ms();
	rv = bo_sys_export(vonly, &xfd, &xsize);
	rp = bo_sys_export(pinned, &xfd, &xsize);
	bo_sys_release(other);
	took_r = fx_now_ms() - t0;
	__atomic_store_n(&h.release, 1, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	test_point_set(TEST_POINT_BO_MOVE_COPY, NULL, NULL);
	print_message("during a held move: mem stats %llu ms, query %llu ms, export %llu ms, "
		      "refused exports and a release %llu ms\n",
		      (unsigned long long)took, (unsigned long long)took_q,
		      (unsigned long long)took_x, (unsigned long long)took_r);
	/* the hook holds the copy 3 s */
	assert_true(took < 1000);
	assert_true(took_q < 1000);
	assert_true(took_x < 1000);
	assert_true(took_r < 1000);
	assert_int_equal(rv, -EINVAL);
	assert_int_equal(rp, -EBUSY);
	assert_int_equal(m.bos_system, 2); /* "held" not switched yet, and "other" */
	assert_int_equal(ugpu_bo_migrate(other, V), 0); /* the hold was let go */
	assert_int_equal(qi.placement, S);
	assert_true(xfd >= 0);
	assert_int_equal(xsize, 64 << 10);
	close(xfd);
	ugpu_bo_put(other);
	ugpu_bo_put(vonly);
	ugpu_bo_put(pinned);
	assert_int_equal(h.ret, 0);
	assert_int_equal(bo_where(h.bo), V);
	assert_int_equal(bo_verify(h.bo, 4 * MiB, 9), -1);
	ugpu_bo_put(h.bo);
	check(f);
}

/* Migrations both ways are byte-exact, for contiguous and scattered BOs. */
static void test_migrate_byte_exact(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *holes[8], *bo, *cbo;
	struct ugpu_bo_info info = { .size = sizeof(info) };
	int i, round;

	/* Fragment VRAM so the next BO is made of several blocks. */
	for (i = 0; i < 8; i++)
		holes[i] = bo_new(f->dev, 512 << 10, 0, V, S, "hole");
	for (i = 0; i < 8; i += 2) {
		ugpu_bo_put(holes[i]);
		holes[i] = NULL;
	}
	bo = bo_new(f->dev, 3 * MiB + 4096, 0, V, S, "scattered");
	cbo = bo_new(f->dev, 2 * MiB, UGPU_BO_CONTIGUOUS, V, S, "contig");
	assert_non_null(bo);
	assert_non_null(cbo);
	assert_true(buddy_list_first(bo->vram) != buddy_list_last(bo->vram));
	assert_int_equal(bo_fill(bo, 3 * MiB + 4096, 77), 0);
	assert_int_equal(bo_fill(cbo, 2 * MiB, 78), 0);
	for (round = 0; round < 4; round++) {
		assert_int_equal(ugpu_bo_migrate(bo, S), 0);
		assert_int_equal(ugpu_bo_migrate(cbo, S), 0);
		check(f);
		assert_int_equal(bo_where(bo), S);
		assert_int_equal(bo_verify(bo, 3 * MiB + 4096, 77), -1);
		assert_int_equal(bo_verify(cbo, 2 * MiB, 78), -1);
		assert_int_equal(ugpu_bo_migrate(bo, V), 0);
		assert_int_equal(ugpu_bo_migrate(cbo, V), 0);
		check(f);
		assert_int_equal(bo_where(bo), V);
		assert_int_equal(bo_verify(bo, 3 * MiB + 4096, 77), -1);
		assert_int_equal(bo_verify(cbo, 2 * MiB, 78), -1);
	}
	/* The contiguous BO is one run. */
	assert_int_equal(ugpu_bo_query(cbo, &info), 0);
	{
		struct buddy_block *b;
		uint64_t next = info.vram_offset;

		buddy_list_for_each(b, cbo->vram) {
			assert_int_equal(buddy_block_offset(b), next);
			next += vram_block_size(b);
		}
		assert_int_equal(next - info.vram_offset, 2 * MiB);
	}
	/* Migrate to where it is: no-op. */
	assert_int_equal(ugpu_bo_migrate(bo, V), 0);
	assert_int_equal(ugpu_bo_migrate(bo, N), -EINVAL);
	for (i = 0; i < 8; i++)
		ugpu_bo_put(holes[i]);
	ugpu_bo_put(bo);
	ugpu_bo_put(cbo);
	check(f);
}

/* A CPU mapping follows the BO: stores before a move are in the new
 * backing, stores after land there too. */
static void test_map_follows_moves(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo_info info = { .size = sizeof(info) };
	const uint64_t sz = 2 * MiB + 8192;
	struct ugpu_bo *bo = bo_new(f->dev, sz, UGPU_BO_CPU_ACCESS, V, S, "mapped");
	uint8_t *p, *p2;
	int round;

	assert_non_null(bo);
	assert_int_equal(ugpu_bo_map(bo, (void **)&p), 0);
	assert_int_equal(ugpu_bo_map(bo, (void **)&p2), 0);
	assert_ptr_equal(p, p2);
	assert_int_equal(ugpu_bo_query(bo, &info), 0);
	assert_true(info.cpu_mapped);
	pat_fill(p, sz, 5);
	assert_int_equal(bo_verify(bo, sz, 5), -1); /* the store went to VRAM */
	for (round = 0; round < 6; round++) {
		enum ugpu_placement to = round & 1 ? V : S;

		assert_int_equal(ugpu_bo_migrate(bo, to), 0);
		check(f);
		assert_int_equal(pat_check(p, sz, 5 + (uint32_t)round), -1);
		pat_fill(p, sz, 6 + (uint32_t)round); /* store into the new backing */
		assert_int_equal(bo_verify(bo, sz, 6 + (uint32_t)round), -1);
	}
	assert_int_equal(ugpu_bo_unmap(bo), 0);
	assert_int_equal(ugpu_bo_unmap(bo), -EINVAL);
	ugpu_bo_put(bo);
	check(f);
}

/* A copy that fails leaves the BO where it was with its bytes; the engine
 * works afterwards. */
static void test_copy_failure_keeps_bo(void **state)
{
	struct fx *f = *state;
	struct bo_mgr_stats st;
	struct ugpu_bo *bo = bo_new(f->dev, MiB, 0, V, S, "victim");

	assert_int_equal(bo_fill(bo, MiB, 9), 0);
	assert_int_equal(sim_inject(f->sim, 0, SIM_INJECT_CMD, 1, false), 0);
	assert_int_equal(ugpu_bo_migrate(bo, S), -EIO);
	assert_int_equal(bo_where(bo), V);
	assert_int_equal(bo_verify(bo, MiB, 9), -1);
	check(f);
	bo_mgr_get_stats(f->dev, &st);
	assert_int_equal(st.copy_failures, 1);
	assert_int_equal(ugpu_bo_migrate(bo, S), 0);
	assert_int_equal(bo_verify(bo, MiB, 9), -1);
	/* and back, with a failure on the way in */
	assert_int_equal(sim_inject(f->sim, 0, SIM_INJECT_DMA, 1, false), 0);
	assert_int_equal(ugpu_bo_migrate(bo, V), -EIO);
	assert_int_equal(bo_where(bo), S);
	assert_int_equal(bo_verify(bo, MiB, 9), -1);
	check(f);
	assert_int_equal(ugpu_bo_migrate(bo, V), 0);
	assert_int_equal(bo_verify(bo, MiB, 9), -1);
	ugpu_bo_put(bo);
	check(f);
}

/*
 * Eviction under pressure: 1 MiB BOs beyond VRAM. The oldest unpinned BOs go
 * first, pinned ones never; every BO keeps its bytes across repeated
 * evictions; the invariants hold after every operation.
 */
#define NB 40
static void test_eviction_pressure(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo[NB];
	struct bo_mgr_stats st;
	int i, round;

	for (i = 0; i < NB; i++) {
		uint32_t flags = (i % 5 == 0) ? UGPU_BO_PINNED : 0;

		bo[i] = bo_new(f->dev, MiB, flags, V, S, "press");
		assert_non_null(bo[i]);
		assert_int_equal(bo_fill(bo[i], MiB, 1000 + (uint32_t)i), 0);
		check(f);
	}
	/* 16 MiB minus the rings: 15 BOs fit. The pinned ones stayed; of the
	 * others, the most recently made are in VRAM. */
	for (i = 0; i < NB; i++)
		if (i % 5 == 0)
			assert_int_equal(bo_where(bo[i]), V);
	assert_int_equal(bo_where(bo[1]), S); /* oldest unpinned: evicted first */
	assert_int_equal(bo_where(bo[NB - 1]), V);
	bo_mgr_get_stats(f->dev, &st);
	assert_true(st.evictions >= NB - 15);

	/* Bring every BO into VRAM in turn: each one evicts another. */
	for (round = 0; round < 3; round++) {
		for (i = 0; i < NB; i++) {
			assert_int_equal(ugpu_bo_migrate(bo[i], V), 0);
			check(f);
		}
		for (i = 0; i < NB; i++)
			assert_int_equal(bo_verify(bo[i], MiB, 1000 + (uint32_t)i), -1);
	}
	/* LRU: touching BO 2 by a read makes it the last candidate. */
	for (i = 0; i < NB; i++)
		if (i % 5)
			ugpu_bo_migrate(bo[i], S);
	for (i = 1; i < 9; i++)
		if (i % 5)
			assert_int_equal(ugpu_bo_migrate(bo[i], V), 0);
	assert_int_equal(bo_verify(bo[1], MiB, 1001), -1); /* bump 1 */
	{
		struct ugpu_bo *x = bo_new(f->dev, MiB, 0, V, S, "x"), *y;

		/* VRAM: 8 pinned + 7 (1..8 minus 5) = 15: full. x evicts 2. */
		assert_int_equal(bo_where(x), V);
		assert_int_equal(bo_where(bo[2]), S);
		assert_int_equal(bo_where(bo[1]), V);
		y = bo_new(f->dev, MiB, 0, V, S, "y");
		assert_int_equal(bo_where(bo[3]), S);
		check(f);
		ugpu_bo_put(x);
		ugpu_bo_put(y);
	}
	for (i = 0; i < NB; i++)
		ugpu_bo_put(bo[i]);
	check(f);
}

/* Nothing evictable: -ENOSPC and nothing lost. */
static void test_enospc(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *pinned[15], *bo, *vo;
	int i, n = 0;

	for (i = 0; i < 15; i++) {
		pinned[i] = bo_new(f->dev, MiB, UGPU_BO_PINNED, V, N, "pinned");
		if (!pinned[i])
			break;
		assert_int_equal(bo_fill(pinned[i], MiB, 50 + (uint32_t)i), 0);
		n++;
	}
	assert_int_equal(n, 15);
	{
		struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = MiB, .placements = { V } };

		assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), -ENOSPC);
	}
	/* a VRAM-only unpinned BO cannot be evicted either */
	ugpu_bo_put(pinned[14]);
	vo = bo_new(f->dev, MiB, 0, V, N, "unevictable");
	assert_non_null(vo);
	{
		struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = MiB, .placements = { V } };

		assert_int_equal(ugpu_bo_create(f->dev, &o, &bo), -ENOSPC);
	}
	/* and with SYSTEM allowed it lands there */
	bo = bo_new(f->dev, MiB, 0, V, S, "fallback");
	assert_int_equal(bo_where(bo), S);
	assert_int_equal(ugpu_bo_migrate(bo, V), -ENOSPC);
	assert_int_equal(bo_where(bo), S);
	check(f);
	for (i = 0; i < 14; i++) {
		assert_int_equal(bo_verify(pinned[i], MiB, 50 + (uint32_t)i), -1);
		ugpu_bo_put(pinned[i]);
	}
	ugpu_bo_put(vo);
	ugpu_bo_put(bo);
	check(f);
}

/* An eviction copy failing: the allocation fails with -EIO, the victim
 * keeps its bytes in VRAM. */
static void test_eviction_copy_failure(void **state)
{
	struct fx *f = *state;
	struct ugpu_bo *bo[15], *x = NULL;
	int i;

	for (i = 0; i < 15; i++) {
		bo[i] = bo_new(f->dev, MiB, 0, V, S, "full");
		assert_int_equal(bo_fill(bo[i], MiB, 300 + (uint32_t)i), 0);
	}
	assert_int_equal(sim_inject(f->sim, 0, SIM_INJECT_CMD, 1, false), 0);
	{
		struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = MiB };

		assert_int_equal(ugpu_bo_create(f->dev, &o, &x), -EIO);
	}
	check(f);
	for (i = 0; i < 15; i++) {
		assert_int_equal(bo_where(bo[i]), V);
		assert_int_equal(bo_verify(bo[i], MiB, 300 + (uint32_t)i), -1);
	}
	x = bo_new(f->dev, MiB, 0, V, S, "x");
	assert_int_equal(bo_where(x), V);
	assert_int_equal(bo_verify(bo[0], MiB, 300), -1);
	ugpu_bo_put(x);
	for (i = 0; i < 15; i++)
		ugpu_bo_put(bo[i]);
	check(f);
}

/* Frees held back for a record that lags (mm/vram.h; ugpud's restart
 * table): a BO's VRAM, freed by its move out, is not handed to the next BO
 * until the blocks are sealed and released; a BO that needs them (no other
 * room) gets them at once. */
static uint64_t vram_at(struct ugpu_bo *bo)
{
	struct ugpu_bo_info i = { .size = sizeof(i) };

	assert_int_equal(ugpu_bo_query(bo, &i), 0);
	assert_int_equal(i.placement, UGPU_PLACEMENT_VRAM);
	return i.vram_offset;
}

static void test_vram_held_frees(void **state)
{
	struct fx *f = *state;
	struct ugpu_device_mem m0 = { .size = sizeof(m0) }, m1 = { .size = sizeof(m1) };
	struct ugpu_bo *a, *b, *c, *big;
	uint64_t a_at;

	vram_hold_frees(f->dev, true);
	a = bo_new(f->dev, MiB, 0, V, S, "a");
	assert_non_null(a);
	a_at = vram_at(a);
	assert_int_equal(ugpu_device_mem_stats(f->dev, &m0), 0);
	assert_int_equal(ugpu_bo_migrate(a, S), 0);
	/* held, and counted as free */
	assert_int_equal(ugpu_device_mem_stats(f->dev, &m1), 0);
	assert_true(m1.vram_free == m0.vram_free + MiB);
	b = bo_new(f->dev, MiB, 0, V, S, "b");
	assert_non_null(b);
	assert_true(vram_at(b) != a_at); /* not a's old blocks */
	vram_held_seal(f->dev);
	vram_sealed_release(f->dev);
	c = bo_new(f->dev, MiB, 0, V, S, "c");
	assert_non_null(c);
	assert_true(vram_at(c) == a_at); /* given back: the allocator's first choice again */
	/* no room but what is held: a BO that would otherwise evict takes it
	 * at once, a speculative one (the SVM prefetcher's) never does (the
	 * review: it landed in the held blocks) */
	ugpu_bo_put(c);
	ugpu_bo_put(b);
	assert_int_equal(ugpu_bo_migrate(a, V), 0);
	a_at = vram_at(a);
	assert_int_equal(ugpu_device_mem_stats(f->dev, &m1), 0);
	big = bo_new(f->dev, m1.vram_free, 0, V, N, "big");
	assert_non_null(big);
	assert_int_equal(ugpu_bo_migrate(a, S), 0); /* its MiB held */
	{
		struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = MiB,
					  .placements = { UGPU_PLACEMENT_VRAM } };
		struct ugpu_bo *spec = NULL;

		assert_int_equal(bo_create_kernel(f->dev, &o, BO_KERNEL_SPECULATIVE, &spec),
				 -ENOSPC);
	}
	b = bo_new(f->dev, MiB, 0, V, N, "needs-it");
	assert_non_null(b);
	assert_true(vram_at(b) == a_at);
	ugpu_bo_put(b);
	ugpu_bo_put(big);
	ugpu_bo_put(a);
	vram_hold_frees(f->dev, false);
	assert_int_equal(vram_check(f->dev), 0);
}

/* Strict hold (mm/vram.h; ugpud with --fd-store): inside
 * vram_refusing(), a BO that could only be had from held-back blocks, or
 * by evictions whose freed blocks are held, is refused with -ERESTART once
 * the evictions made room enough, and the blocks keep what they held
 * until the record is written (sealed, released); the owner is told.
 * Before, the BO was given them at once and cleared them: a restart from
 * the stored record read the evicted BO from zeroes (an eviction inside a
 * daemon's request, killed before the request's table). Outside
 * vram_refusing() (calls the owner does not retry) they are taken as
 * before, the owner told. */
static int wants;

static void want(void *arg)
{
	(void)arg;
	__atomic_fetch_add(&wants, 1, __ATOMIC_RELAXED);
}

static int refused_create(struct ugpu_device *dev, const struct ugpu_bo_opts *o,
			  struct ugpu_bo **bo)
{
	int ret;

	vram_refusing(true);
	ret = ugpu_bo_create(dev, o, bo);
	vram_refusing(false);
	return ret;
}

static void test_vram_held_strict(void **state)
{
	struct fx *f = *state;
	struct ugpu_device_mem m = { .size = sizeof(m) };
	struct ugpu_bo *a, *big, *b = NULL, *k = NULL, *small[4];
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = MiB,
				  .placements = { UGPU_PLACEMENT_VRAM, UGPU_PLACEMENT_SYSTEM } };
	unsigned char *pat = malloc(MiB), *back = malloc(MiB);
	uint64_t a_at;
	int ret;

	assert_non_null(pat);
	assert_non_null(back);
	for (size_t i = 0; i < MiB; i++)
		pat[i] = (unsigned char)(i * 7 + 3);
	wants = 0;
	vram_hold_frees(f->dev, true);
	vram_hold_strict(f->dev, want, NULL);
	a = bo_new(f->dev, MiB, 0, V, S, "a");
	assert_non_null(a);
	assert_int_equal(ugpu_bo_write(a, 0, pat, MiB), 0);
	a_at = vram_at(a);
	assert_int_equal(ugpu_device_mem_stats(f->dev, &m), 0);
	big = bo_new(f->dev, m.vram_free, 0, V, N, "big"); /* VRAM full; not evictable */
	assert_non_null(big);
	/* b needs a's room: a is evicted (its bytes copied out), its blocks
	 * held, b refused; a's old blocks still hold a's bytes */
	assert_int_equal(refused_create(f->dev, &o, &b), -ERESTART);
	assert_null(b);
	assert_true(wants >= 1);
	assert_int_equal(ugpu_bo_read(a, 0, back, MiB), 0);
	assert_memory_equal(back, pat, MiB);
	{
		struct ugpu_bo_info i = { .size = sizeof(i) };

		assert_int_equal(ugpu_bo_query(a, &i), 0);
		assert_int_equal(i.placement, UGPU_PLACEMENT_SYSTEM);
	}
	assert_memory_equal((unsigned char *)f->dev->vram + a_at, pat, MiB);
	/* held already: refused again at once, nothing more evicted */
	wants = 0;
	assert_int_equal(refused_create(f->dev, &o, &b), -ERESTART);
	assert_int_equal(wants, 1);
	assert_memory_equal((unsigned char *)f->dev->vram + a_at, pat, MiB);
	/* a driver BO (page tables) inside the call is refused too */
	vram_refusing(true);
	ret = bo_create_kernel(f->dev, &o, 0, &k);
	vram_refusing(false);
	assert_int_equal(ret, -ERESTART);
	/* the record written: the retry gets them */
	vram_held_seal(f->dev);
	vram_sealed_release(f->dev);
	assert_int_equal(refused_create(f->dev, &o, &b), 0);
	assert_true(vram_at(b) == a_at);
	/* a migrate back into VRAM: b evicted, refused the same way */
	vram_refusing(true);
	assert_int_equal(ugpu_bo_migrate(a, V), -ERESTART);
	vram_refusing(false);
	vram_held_seal(f->dev);
	vram_sealed_release(f->dev);
	vram_refusing(true);
	assert_int_equal(ugpu_bo_migrate(a, V), 0);
	vram_refusing(false);
	assert_int_equal(ugpu_bo_read(a, 0, back, MiB), 0);
	assert_memory_equal(back, pat, MiB);
	/* outside vram_refusing() (a call nobody retries) held blocks are
	 * taken as before, the owner told */
	assert_int_equal(ugpu_bo_migrate(a, S), 0);
	wants = 0;
	assert_int_equal(bo_create_kernel(f->dev, &o, 0, &k), 0);
	assert_int_equal(wants, 1);
	ugpu_bo_put(k);
	/* room made of several victims: all evicted in one call, refused
	 * once (not once per victim: one record each) */
	for (int i = 0; i < 4; i++) {
		small[i] = bo_new(f->dev, MiB / 4, 0, V, S, "small");
		assert_non_null(small[i]);
	}
	wants = 0;
	vram_refusing(true);
	ret = ugpu_bo_migrate(a, V);
	vram_refusing(false);
	assert_int_equal(ret, -ERESTART);
	assert_int_equal(wants, 1);
	vram_held_seal(f->dev);
	vram_sealed_release(f->dev);
	vram_refusing(true);
	assert_int_equal(ugpu_bo_migrate(a, V), 0);
	vram_refusing(false);
	for (int i = 0; i < 4; i++)
		ugpu_bo_put(small[i]);
	ugpu_bo_put(b);
	ugpu_bo_put(big);
	ugpu_bo_put(a);
	vram_hold_strict(f->dev, NULL, NULL);
	vram_hold_frees(f->dev, false);
	assert_int_equal(vram_check(f->dev), 0);
	free(pat);
	free(back);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_create_validation, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_vram_held_frees, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_vram_held_strict, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_refcount_and_pin, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_migrate_byte_exact, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_readers_beside_move, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_map_follows_moves, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_copy_failure_keeps_bo, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_eviction_pressure, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_enospc, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_eviction_copy_failure, setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
