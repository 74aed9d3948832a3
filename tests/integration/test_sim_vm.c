/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim GPU VM and exec engine: page-table walks, faults with replay and
 * abort, TLB caching and invalidation, SYSTEM (IOVA) leaves.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "test_sim_client.h"

#define VRAM (4u << 20)
#define VA_BASE 0x40000000ull /* root[0] -> L3[1] -> L2[0] -> leaf table */
#define T_ROOT 0x100000ull
#define T_L3 0x101000ull
#define T_L2 0x102000ull
#define T_L1 0x103000ull
#define PG(n) (0x200000ull + (n) * 0x1000ull)
#define V 1ull
#define W 2ull
#define S 4ull
#define NA 8ull /* NO_ATOMIC (1.2) */

enum { R_VERSION = 0x0004, R_CAPS = 0x0008, R_VM_CTRL = 0x2000, R_VM_ROOT = 0x2008, R_TLB_INVAL = 0x2010, R_OP = 0x2100,
       R_VA = 0x2108, R_SIZE = 0x2110, R_VALUE = 0x2118, R_START = 0x2120, R_STATUS = 0x2124,
       R_RESULT = 0x2128, R_PROGRESS = 0x2130, R_FSTATUS = 0x2200, R_FVA = 0x2208,
       R_FACCESS = 0x2210, R_FREPLY = 0x2214 };

struct fx {
	struct sim *sim;
	struct tc c;
	uint8_t *vram;
	int efd[5];
};

static void put64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

static void leaf(struct fx *f, unsigned idx, uint64_t pte)
{
	put64(f->vram + T_L1 + idx * 8, pte);
}

/* @minor: the VERSION minor the device models (0: the newest). */
static int fx_setup_minor(void **state, unsigned minor)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct sim_opts o;

	sim_opts_init(&o);
	o.vram_size = VRAM;
	if (minor)
		o.version_minor = minor;
	assert_int_equal(tc_sim_open(&o, "vm", &f->sim, &f->c, &f->vram), 0);
	assert_int_equal(tc_msix_eventfds(&f->c, f->efd, 5), 0);
	memset(f->vram + T_ROOT, 0, 0x4000);
	put64(f->vram + T_ROOT + 0 * 8, T_L3 | V);
	put64(f->vram + T_L3 + 1 * 8, T_L2 | V);
	put64(f->vram + T_L2 + 0 * 8, T_L1 | V);
	assert_int_equal(tc_wr64(&f->c, R_VM_ROOT, T_ROOT), 0);
	assert_int_equal(tc_wr32(&f->c, R_VM_CTRL, 1), 0);
	*state = f;
	return 0;
}

static int fx_setup(void **state)
{
	return fx_setup_minor(state, 0);
}

static int fx_setup_v11(void **state)
{
	return fx_setup_minor(state, 1);
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	tc_close(&f->c);
	munmap(f->vram, VRAM);
	for (int v = 0; v < 5; v++)
		close(f->efd[v]);
	sim_stop(f->sim);
	free(f);
	return 0;
}

static void kernel(struct fx *f, uint32_t op, uint64_t va, uint64_t size, uint64_t value)
{
	assert_int_equal(tc_wr32(&f->c, R_OP, op), 0);
	assert_int_equal(tc_wr64(&f->c, R_VA, va), 0);
	assert_int_equal(tc_wr64(&f->c, R_SIZE, size), 0);
	assert_int_equal(tc_wr64(&f->c, R_VALUE, value), 0);
	assert_int_equal(tc_wr32(&f->c, R_START, 1), 0);
}

/* Run to completion (done expected); returns RESULT. */
static uint64_t run(struct fx *f, uint32_t op, uint64_t va, uint64_t size, uint64_t value)
{
	kernel(f, op, va, size, value);
	assert_true(tc_wait_irq(&f->c, f->efd[4], 5000) >= 1);
	assert_int_equal(tc_rd32(&f->c, R_STATUS), 3);
	assert_int_equal(tc_rd64(&f->c, R_PROGRESS), size);
	return tc_rd64(&f->c, R_RESULT);
}

static void test_fault_replay(void **state)
{
	struct fx *f = *state;

	leaf(f, 0, PG(0) | V | W);
	kernel(f, 2, VA_BASE, 8192, 0x77);
	/* Page 1 is unmapped: the kernel stalls after page 0. */
	assert_true(tc_wait_irq(&f->c, f->efd[3], 5000) >= 1);
	assert_int_equal(tc_rd32(&f->c, R_STATUS), 2);
	assert_int_equal(tc_rd32(&f->c, R_FSTATUS), 1);
	assert_int_equal(tc_rd64(&f->c, R_FVA), VA_BASE + 4096);
	assert_int_equal(tc_rd32(&f->c, R_FACCESS), 1);
	assert_int_equal(tc_rd64(&f->c, R_PROGRESS), 4096);
	assert_int_equal(get64(f->vram + PG(0) + 4088), 0x77);
	/* Fix the tables, invalidate, replay: the kernel resumes at page 1. */
	memset(f->vram + PG(0), 0, 8); /* resumed, not restarted: stays 0 */
	leaf(f, 1, PG(1) | V | W);
	assert_int_equal(tc_wr32(&f->c, R_TLB_INVAL, 1), 0);
	assert_int_equal(tc_wr32(&f->c, R_FREPLY, 1), 0);
	assert_true(tc_wait_irq(&f->c, f->efd[4], 5000) >= 1);
	assert_int_equal(tc_rd32(&f->c, R_STATUS), 3);
	assert_int_equal(tc_rd32(&f->c, R_FSTATUS), 0);
	assert_int_equal(get64(f->vram + PG(0)), 0);
	for (int i = 1; i < 512; i++)
		assert_int_equal(get64(f->vram + PG(0) + i * 8), 0x77);
	for (int i = 0; i < 512; i++)
		assert_int_equal(get64(f->vram + PG(1) + i * 8), 0x77);
	assert_int_equal(get64(f->vram + PG(2)), 0); /* nothing past the range */
	/* READ sums, ATOMIC_ADD adds. */
	assert_int_equal(run(f, 1, VA_BASE, 8192, 0), 1023ull * 0x77);
	run(f, 3, VA_BASE + 4096, 4096, 5);
	assert_int_equal(get64(f->vram + PG(1) + 8), 0x7c);
	assert_int_equal(get64(f->vram + PG(0) + 8), 0x77);
	/* A read-only leaf: reads pass, writes and atomics fault. */
	leaf(f, 1, PG(1) | V);
	assert_int_equal(tc_wr32(&f->c, R_TLB_INVAL, 1), 0);
	assert_int_equal(run(f, 1, VA_BASE + 4096, 16, 0), 0x7cull * 2);
	kernel(f, 3, VA_BASE + 4096, 16, 1);
	assert_true(tc_wait_irq(&f->c, f->efd[3], 5000) >= 1);
	assert_int_equal(tc_rd32(&f->c, R_FACCESS), 2);
	leaf(f, 1, PG(1) | V | W);
	/* A REPLAY drops the queue's cached translations itself (no TLB_INVAL
	 * written): the stale read-only entry is gone, the atomic goes
	 * through (before, it faulted again until a TLB_INVAL). */
	assert_int_equal(tc_wr32(&f->c, R_FREPLY, 1), 0);
	assert_true(tc_wait_irq(&f->c, f->efd[4], 5000) >= 1);
	assert_int_equal(tc_rd32(&f->c, R_STATUS), 3);
	assert_int_equal(get64(f->vram + PG(1)), 0x7d);
}

static void test_fault_abort(void **state)
{
	struct fx *f = *state;
	struct sim_state st;

	kernel(f, 1, VA_BASE + 0x10000, 64, 0);
	assert_true(tc_wait_irq(&f->c, f->efd[3], 5000) >= 1);
	assert_int_equal(tc_rd64(&f->c, R_FVA), VA_BASE + 0x10000);
	assert_int_equal(tc_rd32(&f->c, R_FACCESS), 0);
	assert_int_equal(tc_wr32(&f->c, R_FREPLY, 2), 0);
	assert_true(tc_wait_irq(&f->c, f->efd[4], 5000) >= 1);
	assert_int_equal(tc_rd32(&f->c, R_STATUS), 4);
	assert_int_equal(tc_rd32(&f->c, R_FSTATUS), 0);
	assert_int_equal(tc_rd64(&f->c, R_PROGRESS), 0);
	sim_state(f->sim, 0, &st);
	assert_int_equal(st.faults, 1);
	/* A new kernel runs after an abort. */
	leaf(f, 0, PG(0) | V | W);
	memset(f->vram + PG(0), 0, 4096);
	run(f, 2, VA_BASE, 64, 3);
	assert_int_equal(get64(f->vram + PG(0) + 56), 3);
}

/* 1.2: a NO_ATOMIC leaf lets reads and writes through and faults atomics
 * (access 2); abort ends the kernel with nothing added. */
static void test_no_atomic_leaf(void **state)
{
	struct fx *f = *state;

	assert_int_equal(tc_rd32(&f->c, R_VERSION), 0x00010004);
	assert_true(tc_rd32(&f->c, R_CAPS) & (1u << 4));
	memset(f->vram + PG(0), 0, 4096);
	leaf(f, 0, PG(0) | V | W | NA);
	assert_int_equal(tc_wr32(&f->c, R_TLB_INVAL, 1), 0);
	run(f, 2, VA_BASE, 4096, 9);
	assert_int_equal(run(f, 1, VA_BASE, 4096, 0), 9ull * 512);
	kernel(f, 3, VA_BASE, 4096, 1);
	assert_true(tc_wait_irq(&f->c, f->efd[3], 5000) >= 1);
	assert_int_equal(tc_rd32(&f->c, R_STATUS), 2);
	assert_int_equal(tc_rd64(&f->c, R_FVA), VA_BASE);
	assert_int_equal(tc_rd32(&f->c, R_FACCESS), 2);
	assert_int_equal(tc_wr32(&f->c, R_FREPLY, 2), 0);
	assert_true(tc_wait_irq(&f->c, f->efd[4], 5000) >= 1);
	assert_int_equal(tc_rd32(&f->c, R_STATUS), 4);
	for (int i = 0; i < 512; i++)
		assert_int_equal(get64(f->vram + PG(0) + i * 8), 9);
	/* the bit cleared (and the TLB dropped): the atomic runs */
	leaf(f, 0, PG(0) | V | W);
	assert_int_equal(tc_wr32(&f->c, R_TLB_INVAL, 1), 0);
	run(f, 3, VA_BASE, 4096, 1);
	for (int i = 0; i < 512; i++)
		assert_int_equal(get64(f->vram + PG(0) + i * 8), 10);
}

/* A 1.1 device (--version-minor 1) says so and ignores bit 3. */
static void test_no_atomic_ignored_by_v11(void **state)
{
	struct fx *f = *state;

	assert_int_equal(tc_rd32(&f->c, R_VERSION), 0x00010001);
	assert_false(tc_rd32(&f->c, R_CAPS) & (1u << 4));
	memset(f->vram + PG(0), 0, 4096);
	leaf(f, 0, PG(0) | V | W | NA);
	assert_int_equal(tc_wr32(&f->c, R_TLB_INVAL, 1), 0);
	run(f, 3, VA_BASE, 4096, 4);
	for (int i = 0; i < 512; i++)
		assert_int_equal(get64(f->vram + PG(0) + i * 8), 4);
}

static void test_tlb(void **state)
{
	struct fx *f = *state;

	for (int i = 0; i < 512; i++) {
		put64(f->vram + PG(2) + i * 8, 1);
		put64(f->vram + PG(3) + i * 8, 2);
	}
	leaf(f, 0, PG(2) | V);
	assert_int_equal(tc_wr32(&f->c, R_TLB_INVAL, 1), 0);
	assert_int_equal(run(f, 1, VA_BASE, 4096, 0), 512);
	/* The PTE changes; the cached translation is used until invalidated. */
	leaf(f, 0, PG(3) | V);
	assert_int_equal(run(f, 1, VA_BASE, 4096, 0), 512);
	assert_int_equal(tc_wr32(&f->c, R_TLB_INVAL, 1), 0);
	assert_int_equal(run(f, 1, VA_BASE, 4096, 0), 1024);
}

/*
 * TLB_INVAL completes only when no access through a dropped translation is
 * in flight: a queue on a page of an in-band window (its DMA_READ waits for
 * this client) holds the invalidation's reply back until that page is done.
 * What a driver relies on before it copies a page the GPU may be writing.
 */
static void test_tlb_inval_waits_for_the_page(void **state)
{
	struct fx *f = *state;
	struct vfu_region_access a = { .offset = R_TLB_INVAL, .region = 0, .count = 4 };
	uint8_t mem[4096];
	uint32_t one = 1;
	struct tc_reply *r = tc_r();
	uint16_t id;
	bool page_done = false;

	memset(mem, 0, sizeof(mem));
	f->c.inband_mem = mem;
	f->c.inband_iova = 0x20000000;
	f->c.inband_size = sizeof(mem);
	assert_int_equal(tc_dma_map(&f->c, 0x20000000, 4096, -1, 0, VFU_DMA_F_READ | VFU_DMA_F_WRITE),
			 0);
	leaf(f, 7, 0x20000000 | V | W | S);
	assert_int_equal(tc_wr32(&f->c, R_TLB_INVAL, 1), 0);
	/* WRITE: DMA_READ, then DMA_WRITE. Its DMA_READ stays unanswered
	 * (held, also if it comes while we wait for a register reply). */
	r = calloc(1, sizeof(*r)); /* tc_r()'s buffer is reused by every call */
	assert_non_null(r);
	f->c.held = r;
	f->c.have_held = false;
	f->c.inband_hold = true;
	kernel(f, 2, VA_BASE + 7 * 4096, 4096, 0x77);
	if (!f->c.have_held) {
		assert_int_equal(tc_recv(&f->c, r, 5000), 0);
		f->c.have_held = true;
	}
	f->c.inband_hold = false;
	/* The queue is on the page now, waiting for our answer to its DMA_READ. */
	assert_int_equal(r->hdr.cmd, VFU_CMD_DMA_READ);
	/* The invalidation is sent while the page is in flight: no reply yet. */
	id = f->c.next_id++;
	assert_int_equal(tc_send(&f->c, VFU_CMD_REGION_WRITE, id, VFU_F_TYPE_COMMAND, &a, sizeof(a),
				 &one, 4, NULL, 0),
			 0);
	{
		struct tc_reply r2;

		assert_int_equal(tc_recv(&f->c, &r2, 300), -ETIMEDOUT);
	}
	/* Answer the page's accesses; only then does the invalidation end. */
	assert_int_equal(tc_serve(&f->c, r), 0);
	free(r);
	f->c.held = NULL;
	for (;;) {
		r = tc_r();
		assert_int_equal(tc_recv(&f->c, r, 5000), 0);
		if ((r->hdr.flags & VFU_F_TYPE_MASK) == VFU_F_TYPE_COMMAND) {
			page_done = r->hdr.cmd == VFU_CMD_DMA_WRITE;
			assert_int_equal(tc_serve(&f->c, r), 0);
			continue;
		}
		assert_int_equal(r->hdr.msg_id, id); /* the TLB_INVAL reply */
		break;
	}
	assert_true(page_done); /* its store landed before the reply */
	assert_true(get64(mem) == 0x77);
	assert_true(tc_wait_irq(&f->c, f->efd[4], 5000) >= 1);
	assert_int_equal(tc_rd32(&f->c, R_STATUS), 3);
	f->c.inband_mem = NULL;
}

static void test_system_leaf(void **state)
{
	struct fx *f = *state;
	int mfd = memfd_create("sys", MFD_CLOEXEC);
	uint8_t *sys;

	assert_int_equal(ftruncate(mfd, 8192), 0);
	sys = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	for (int i = 0; i < 1024; i++)
		put64(sys + i * 8, (uint64_t)i);
	assert_int_equal(tc_dma_map(&f->c, 0x10000000, 8192, mfd, 0,
				    VFU_DMA_F_READ | VFU_DMA_F_WRITE), 0);
	leaf(f, 4, 0x10000000 | V | W | S);
	leaf(f, 5, 0x10001000 | V | W | S);
	assert_int_equal(tc_wr32(&f->c, R_TLB_INVAL, 1), 0);
	run(f, 3, VA_BASE + 4 * 4096, 8192, 100);
	for (int i = 0; i < 1024; i++)
		assert_int_equal(get64(sys + i * 8), (uint64_t)i + 100);
	/* A SYSTEM leaf with no window behind it: the kernel errors (vector 2). */
	leaf(f, 6, 0x30000000 | V | W | S);
	kernel(f, 1, VA_BASE + 6 * 4096, 8, 0);
	assert_true(tc_wait_irq(&f->c, f->efd[2], 5000) >= 1);
	assert_int_equal(tc_rd32(&f->c, R_STATUS), 5);
	munmap(sys, 8192);
	close(mfd);
}

/* Regression (issue 12, find 2): a SYSTEM leaf into a window whose file the
 * client truncated ends the kernel with an error, not the server (SIGBUS). */
static void test_system_leaf_truncated(void **state)
{
	struct fx *f = *state;
	int mfd = memfd_create("sys", MFD_CLOEXEC);

	assert_int_equal(ftruncate(mfd, 8192), 0);
	assert_int_equal(tc_dma_map(&f->c, 0x10000000, 8192, mfd, 0,
				    VFU_DMA_F_READ | VFU_DMA_F_WRITE), 0);
	assert_int_equal(ftruncate(mfd, 4096), 0);
	leaf(f, 4, 0x10000000 | V | W | S);
	leaf(f, 5, 0x10001000 | V | W | S);
	assert_int_equal(tc_wr32(&f->c, R_TLB_INVAL, 1), 0);
	kernel(f, 2, VA_BASE + 4 * 4096, 8192, 9);
	assert_true(tc_wait_irq(&f->c, f->efd[2], 5000) >= 1);
	assert_int_equal(tc_rd32(&f->c, R_STATUS), 5);
	assert_int_equal(tc_rd64(&f->c, R_PROGRESS), 4096); /* the first page was there */
	/* And again on the same engine thread: the guard must leave it able to
	 * take the next fault (the black-box test found the second one fatal
	 * under ThreadSanitizer, whose handler wrapper blocks SIGBUS). */
	kernel(f, 3, VA_BASE + 5 * 4096, 8, 1);
	assert_true(tc_wait_irq(&f->c, f->efd[2], 5000) >= 1);
	assert_int_equal(tc_rd32(&f->c, R_STATUS), 5);
	kernel(f, 1, VA_BASE + 4 * 4096, 4096, 0);
	assert_true(tc_wait_irq(&f->c, f->efd[4], 5000) >= 1);
	assert_int_equal(tc_rd32(&f->c, R_STATUS), 3);
	assert_int_equal(tc_rd64(&f->c, R_RESULT), 9ull * 512);
	close(mfd);
}

static void test_exec_errors(void **state)
{
	struct fx *f = *state;

	leaf(f, 0, PG(0) | V | W);
	/* Misaligned VA. */
	kernel(f, 1, VA_BASE + 4, 8, 0);
	assert_true(tc_wait_irq(&f->c, f->efd[2], 5000) >= 1);
	assert_int_equal(tc_rd32(&f->c, R_STATUS), 5);
	/* Bad op. */
	kernel(f, 9, VA_BASE, 8, 0);
	assert_true(tc_wait_irq(&f->c, f->efd[2], 5000) >= 1);
	assert_int_equal(tc_rd32(&f->c, R_STATUS), 5);
	/* VM disabled. */
	assert_int_equal(tc_wr32(&f->c, R_VM_CTRL, 0), 0);
	kernel(f, 1, VA_BASE, 8, 0);
	assert_true(tc_wait_irq(&f->c, f->efd[2], 5000) >= 1);
	assert_int_equal(tc_rd32(&f->c, R_STATUS), 5);
	/* Root outside VRAM. */
	assert_int_equal(tc_wr32(&f->c, R_VM_CTRL, 1), 0);
	assert_int_equal(tc_wr64(&f->c, R_VM_ROOT, VRAM), 0);
	kernel(f, 1, VA_BASE, 8, 0);
	assert_true(tc_wait_irq(&f->c, f->efd[2], 5000) >= 1);
	assert_int_equal(tc_rd32(&f->c, R_STATUS), 5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_fault_replay, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_fault_abort, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_no_atomic_leaf, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_no_atomic_ignored_by_v11, fx_setup_v11, fx_teardown),
		cmocka_unit_test_setup_teardown(test_tlb, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_tlb_inval_waits_for_the_page, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_system_leaf, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_system_leaf_truncated, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_exec_errors, fx_setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
