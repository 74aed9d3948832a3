/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim exec queues (reference-device.md "GPU virtual memory and the exec
 * queues"): VERSION 1.1 and NUM_EXEC_QUEUES, queue 0's 1.0 alias, kernels on
 * several VMs at once, a fault on one queue while the others complete, the 1.0
 * fault slot shared by queues, the fault ring serviced in batches, a full ring
 * that stalls without losing a fault, abort of one queue, fences and
 * EXEC_DONE, and D3hot / D3cold / reset / surprise removal with queues busy.
 *
 * Each queue n has its own address space: tables at TBL(n), 128 data pages at
 * DATA(n, i). VA_A (and, for long kernels, everything from VA_LONG to
 * 512 GiB) maps the data pages; VA_B maps nothing until a test fixes its
 * faults.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "test_sim_client.h"

#define VRAM (16u << 20)
#define NQ 4 /* the default */
#define TBL(n) (0x100000ull + (n) * 0x8000ull) /* root, L3, L2, L1A, L1B, L2LONG */
#define T_ROOT 0x0000ull
#define T_L3 0x1000ull
#define T_L2 0x2000ull
#define T_L1A 0x3000ull
#define T_L1B 0x4000ull
#define T_L2LONG 0x5000ull
#define NDATA 128
/* Eight queues' data pages; queues 8 and up share them. */
#define DATA(n, i) (0x400000ull + ((n) % 8) * 0x80000ull + (i) * 0x1000ull)
#define VA_A 0x40000000ull /* root[0] -> L3[1] -> L2[0] -> L1A */
#define VA_B 0x40200000ull /* L2[1] -> L1B: unmapped */
/* VA_LONG up to 512 GiB: L2[2..511] and L3[2..511] -> L2LONG -> L1A: aliases
 * of the data pages, for kernels that run long. */
#define VA_LONG 0x40400000ull
#define FENCES 0xbff000ull
#define RING 0xc00000ull
#define V 1ull
#define W 2ull

/* BAR0. */
enum { R_VERSION = 0x4, R_CAPS = 0x8, R_NUM_QUEUES = 0x24, R_VM_CTRL = 0x2000, R_VM_ROOT = 0x2008,
       R_OP = 0x2100, R_VA = 0x2108, R_SIZE = 0x2110, R_VALUE = 0x2118, R_START = 0x2120,
       R_STATUS = 0x2124, R_PROGRESS = 0x2130, R_FSTATUS = 0x2200, R_FVA = 0x2208,
       R_FACCESS = 0x2210, R_FREPLY = 0x2214, R_FQUEUE = 0x2218, R_RING_BASE = 0x3000,
       R_RING_SIZE = 0x3008, R_RING_CTRL = 0x300c, R_RING_STATUS = 0x3010, R_PUT = 0x3014,
       R_GET = 0x3018, R_DEPTH = 0x301c, R_REPLAY = 0x3020, R_ABORT = 0x3028, R_DONE = 0x3030,
       R_BUSY = 0x3038 };
/* Queue block registers. */
enum { Q_VM_CTRL = 0x00, Q_VM_ROOT = 0x08, Q_TLB_INVAL = 0x10, Q_FREPLY = 0x14, Q_OP = 0x40,
       Q_VA = 0x48, Q_SIZE = 0x50, Q_VALUE = 0x58, Q_START = 0x60, Q_STATUS = 0x64,
       Q_RESULT = 0x68, Q_PROGRESS = 0x70, Q_FENCE_ADDR = 0x78, Q_FENCE_VALUE = 0x80,
       Q_SEQNO = 0x88, Q_LAUNCH = 0x90, Q_FAULT_PAGES = 0x94 };
enum { ST_IDLE = 0, ST_RUNNING = 1, ST_STALLED = 2, ST_DONE = 3, ST_ABORTED = 4, ST_ERROR = 5 };
enum { OP_READ = 1, OP_WRITE = 2, OP_ATOMIC = 3 };
enum { VEC_ERROR = 2, VEC_FAULT = 3, VEC_EXEC = 4 };
#define PMCSR 0x44
#define PWR_CTL 0x64
#define WAIT_MS 20000 /* generous: sanitizers on two shared cores */

static uint64_t qreg(unsigned n, unsigned r)
{
	return 0x4000ull + n * 0x100ull + r;
}

struct fx {
	struct sim *sim;
	struct tc c;
	uint8_t *vram;
	int efd[5];
};

struct entry {
	uint64_t va;
	uint32_t queue, access, launch, flags;
};

static uint64_t ld64(struct fx *f, uint64_t off)
{
	return __atomic_load_n((uint64_t *)(f->vram + off), __ATOMIC_ACQUIRE);
}

static void st64(struct fx *f, uint64_t off, uint64_t v)
{
	__atomic_store_n((uint64_t *)(f->vram + off), v, __ATOMIC_RELEASE);
}

static int fx_setup_n(void **state, unsigned nq)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct sim_opts o;

	sim_opts_init(&o);
	o.vram_size = VRAM;
	o.exec_queues = nq;
	assert_int_equal(tc_sim_open(&o, "queues", &f->sim, &f->c, &f->vram), 0);
	assert_int_equal(tc_msix_eventfds(&f->c, f->efd, 5), 0);
	*state = f;
	return 0;
}

static int fx_setup(void **state)
{
	return fx_setup_n(state, NQ);
}

static int fx_setup_64(void **state)
{
	return fx_setup_n(state, 64);
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	uint64_t t0 = tc_now_ms();

	tc_close(&f->c);
	munmap(f->vram, VRAM);
	for (int v = 0; v < 5; v++)
		close(f->efd[v]);
	sim_stop(f->sim); /* bounded even with queues busy, stalled or paused */
	assert_true(tc_now_ms() - t0 < 10000);
	free(f);
	return 0;
}

/* Build queue @n's address space in VRAM and point the queue at it. */
static void vm_build(struct fx *f, unsigned n)
{
	uint64_t t = TBL(n);

	memset(f->vram + t, 0, 0x6000);
	st64(f, t + T_ROOT + 0 * 8, (t + T_L3) | V);
	st64(f, t + T_L3 + 1 * 8, (t + T_L2) | V);
	st64(f, t + T_L2 + 0 * 8, (t + T_L1A) | V);
	st64(f, t + T_L2 + 1 * 8, (t + T_L1B) | V);
	for (unsigned i = 2; i < 512; i++) {
		st64(f, t + T_L2 + i * 8, (t + T_L1A) | V);
		st64(f, t + T_L3 + i * 8, (t + T_L2LONG) | V);
	}
	for (unsigned i = 0; i < 512; i++)
		st64(f, t + T_L2LONG + i * 8, (t + T_L1A) | V);
	for (unsigned i = 0; i < 512; i++)
		st64(f, t + T_L1A + i * 8, DATA(n, i % NDATA) | V | W);
	assert_int_equal(tc_wr64(&f->c, qreg(n, Q_VM_ROOT), t), 0);
	assert_int_equal(tc_wr32(&f->c, qreg(n, Q_VM_CTRL), 1), 0);
	assert_int_equal(tc_wr32(&f->c, qreg(n, Q_TLB_INVAL), 1), 0);
}

/* Map VA_B's page @i for queue @n (what a driver does for a fault). */
static void fix(struct fx *f, unsigned n, unsigned i)
{
	st64(f, TBL(n) + T_L1B + i * 8ull, DATA(n, i) | V | W);
}

static void fill(struct fx *f, unsigned n, uint64_t v)
{
	for (unsigned i = 0; i < NDATA * 512; i++)
		st64(f, DATA(n, 0) + i * 8ull, v);
}

/* Write queue @n's kernel registers (EXEC_START latches them). */
static void program(struct fx *f, unsigned n, uint32_t op, uint64_t va, uint64_t size,
		    uint64_t value, uint64_t fence_addr, uint64_t fence)
{
	assert_int_equal(tc_wr32(&f->c, qreg(n, Q_OP), op), 0);
	assert_int_equal(tc_wr64(&f->c, qreg(n, Q_VA), va), 0);
	assert_int_equal(tc_wr64(&f->c, qreg(n, Q_SIZE), size), 0);
	assert_int_equal(tc_wr64(&f->c, qreg(n, Q_VALUE), value), 0);
	assert_int_equal(tc_wr64(&f->c, qreg(n, Q_FENCE_ADDR), fence_addr), 0);
	assert_int_equal(tc_wr64(&f->c, qreg(n, Q_FENCE_VALUE), fence), 0);
}

static void kernel_f(struct fx *f, unsigned n, uint32_t op, uint64_t va, uint64_t size,
		     uint64_t value, uint64_t fence_addr, uint64_t fence)
{
	program(f, n, op, va, size, value, fence_addr, fence);
	assert_int_equal(tc_wr32(&f->c, qreg(n, Q_START), 1), 0);
}

static void kernel(struct fx *f, unsigned n, uint32_t op, uint64_t va, uint64_t size,
		   uint64_t value)
{
	kernel_f(f, n, op, va, size, value, ~0ull, 0);
}

/* Poll a register until (value & mask) == want; bounded. */
static bool wait_reg(struct fx *f, uint64_t off, bool wide, uint64_t mask, uint64_t want)
{
	uint64_t deadline = tc_now_ms() + WAIT_MS;

	do {
		uint64_t v = wide ? tc_rd64(&f->c, off) : tc_rd32(&f->c, off);

		if ((v & mask) == want)
			return true;
		usleep(500);
	} while (tc_now_ms() < deadline);
	return false;
}

static bool wait_status(struct fx *f, unsigned n, uint32_t st)
{
	return wait_reg(f, qreg(n, Q_STATUS), false, ~0ull, st);
}

static bool wait_done(struct fx *f, uint64_t mask)
{
	return wait_reg(f, R_DONE, true, mask, mask);
}

static void ring_on(struct fx *f, uint32_t size)
{
	memset(f->vram + RING, 0, (size_t)size * 32);
	assert_int_equal(tc_wr64(&f->c, R_RING_BASE, RING), 0);
	assert_int_equal(tc_wr32(&f->c, R_RING_SIZE, size), 0);
	assert_int_equal(tc_wr32(&f->c, R_RING_CTRL, 1), 0);
	assert_int_equal(tc_rd32(&f->c, R_RING_STATUS), 1);
}

static struct entry ring_entry(struct fx *f, uint32_t size, uint32_t count)
{
	uint64_t e = RING + (uint64_t)(count & (size - 1)) * 32;
	struct entry r;

	r.flags = __atomic_load_n((uint32_t *)(f->vram + e + 20), __ATOMIC_ACQUIRE);
	r.va = __atomic_load_n((uint64_t *)(f->vram + e), __ATOMIC_RELAXED);
	r.queue = __atomic_load_n((uint32_t *)(f->vram + e + 8), __ATOMIC_RELAXED);
	r.access = __atomic_load_n((uint32_t *)(f->vram + e + 12), __ATOMIC_RELAXED);
	r.launch = __atomic_load_n((uint32_t *)(f->vram + e + 16), __ATOMIC_RELAXED);
	return r;
}

/* The device's identity and layout: VERSION 1.4, NUM_EXEC_QUEUES, queue
 * blocks that exist and those that do not, queue 0's 1.0 alias. */
static void test_version_and_layout(void **state)
{
	struct fx *f = *state;
	struct sim_opts o;
	struct sim *s;

	assert_int_equal(tc_rd32(&f->c, R_VERSION), 0x00010004);
	assert_true(tc_rd32(&f->c, R_CAPS) & (1u << 3));
	assert_int_equal(tc_rd32(&f->c, R_NUM_QUEUES), NQ);
	assert_int_equal(tc_rd32(&f->c, R_DEPTH), 64);
	/* Reset values. */
	for (unsigned n = 0; n < NQ; n++) {
		assert_int_equal(tc_rd32(&f->c, qreg(n, Q_STATUS)), ST_IDLE);
		assert_int_equal(tc_rd64(&f->c, qreg(n, Q_FENCE_ADDR)), ~0ull);
		assert_int_equal(tc_rd32(&f->c, qreg(n, Q_LAUNCH)), 0);
	}
	assert_int_equal(tc_rd32(&f->c, R_RING_STATUS), 0);
	assert_int_equal(tc_rd64(&f->c, R_DONE), 0);
	/* The 1.0 block is queue 0: the same registers, both ways. */
	assert_int_equal(tc_wr64(&f->c, R_VM_ROOT, 0x123000), 0);
	assert_int_equal(tc_rd64(&f->c, qreg(0, Q_VM_ROOT)), 0x123000);
	assert_int_equal(tc_wr64(&f->c, qreg(0, Q_VA), 0x4000), 0);
	assert_int_equal(tc_rd64(&f->c, R_VA), 0x4000);
	assert_int_equal(tc_rd64(&f->c, 0x2138), ~0ull); /* queue 0's FENCE_ADDR through the window */
	/* Queues are separate. */
	assert_int_equal(tc_wr64(&f->c, qreg(1, Q_VM_ROOT), 0x456000), 0);
	assert_int_equal(tc_rd64(&f->c, qreg(1, Q_VM_ROOT)), 0x456000);
	assert_int_equal(tc_rd64(&f->c, qreg(2, Q_VM_ROOT)), 0);
	assert_int_equal(tc_rd64(&f->c, R_VM_ROOT), 0x123000);
	/* A queue the device does not have: reads 0, writes ignored. */
	assert_int_equal(tc_wr64(&f->c, qreg(NQ, Q_VM_ROOT), 0x789000), 0);
	assert_int_equal(tc_rd64(&f->c, qreg(NQ, Q_VM_ROOT)), 0);
	assert_int_equal(tc_rd64(&f->c, qreg(NQ, Q_FENCE_ADDR)), 0);

	/* The option: 1..64, 0 is the default, more is refused. */
	sim_opts_init(&o);
	assert_int_equal(o.exec_queues, 4);
	o.exec_queues = 65;
	assert_int_equal(sim_start(&o, &s), -EINVAL);
}

/* 64 queues: the last block works, EXEC_DONE's high half, the state line. */
static void test_64_queues(void **state)
{
	struct fx *f = *state;
	struct sim_state st;
	char line[1024];

	assert_int_equal(tc_rd32(&f->c, R_NUM_QUEUES), 64);
	vm_build(f, 63);
	vm_build(f, 40);
	kernel(f, 63, OP_WRITE, VA_A, 8, 5);
	kernel(f, 40, OP_READ, VA_A, 0, 0);
	assert_true(wait_done(f, (1ull << 63) | (1ull << 40)));
	assert_int_equal(ld64(f, DATA(63, 0)), 5);
	assert_int_equal(tc_rd32(&f->c, qreg(63, Q_STATUS)), ST_DONE);
	assert_int_equal(tc_rd64(&f->c, R_BUSY), 0);
	/* RW1C, a 4-byte write to the high half. */
	assert_int_equal(tc_wr32(&f->c, R_DONE + 4, 1u << (40 - 32)), 0);
	assert_int_equal(tc_rd64(&f->c, R_DONE), 1ull << 63);
	assert_int_equal(tc_wr64(&f->c, R_DONE, ~0ull), 0);
	assert_int_equal(tc_rd64(&f->c, R_DONE), 0);
	assert_int_equal(sim_state(f->sim, 0, &st), 0);
	assert_int_equal(st.exec_queues, 64);
	assert_int_equal(st.queue_status[63], ST_DONE);
	assert_int_equal(sim_state_line(f->sim, 0, line, sizeof(line)), 0);
	assert_non_null(strstr(line, "exec=idle"));
	assert_non_null(strstr(line, ",done faultq=off"));
	assert_non_null(strstr(line, "queues=idle,idle,"));
}

/* Kernels on four queues, each in its own address space, run at the same
 * time and each sees its own memory. */
static void test_queues_run_concurrently(void **state)
{
	struct fx *f = *state;
	const uint64_t size = 256ull << 20;
	bool overlap = false;

	for (unsigned n = 0; n < NQ; n++) {
		vm_build(f, n);
		fill(f, n, n + 1);
	}
	for (int round = 0; round < 3 && !overlap; round++) {
		assert_int_equal(tc_wr64(&f->c, R_DONE, ~0ull), 0);
		/* Program every queue, then start them back to back. */
		for (unsigned n = 0; n < NQ; n++)
			program(f, n, OP_READ, VA_LONG, size, 0, FENCES + n * 8,
				(uint64_t)round * 16 + n + 1);
		for (unsigned n = 0; n < NQ; n++)
			assert_int_equal(tc_wr32(&f->c, qreg(n, Q_START), 1), 0);
		uint64_t deadline = tc_now_ms() + WAIT_MS;

		/* Sample: two queues part-way at once means they ran together. */
		while (tc_rd64(&f->c, R_DONE) != (1ull << NQ) - 1) {
			unsigned mid = 0;

			assert_true(tc_now_ms() < deadline);
			for (unsigned n = 0; n < NQ; n++) {
				uint64_t p = tc_rd64(&f->c, qreg(n, Q_PROGRESS));

				mid += p > 0 && p < size;
			}
			if (mid >= 2)
				overlap = true;
		}
		for (unsigned n = 0; n < NQ; n++) {
			assert_int_equal(tc_rd32(&f->c, qreg(n, Q_STATUS)), ST_DONE);
			assert_int_equal(tc_rd64(&f->c, qreg(n, Q_RESULT)), (size / 8) * (n + 1));
			/* The fence, in VRAM and in SEQNO. */
			assert_int_equal(ld64(f, FENCES + n * 8), (uint64_t)round * 16 + n + 1);
			assert_int_equal(tc_rd64(&f->c, qreg(n, Q_SEQNO)), (uint64_t)round * 16 + n + 1);
			assert_int_equal(tc_rd32(&f->c, qreg(n, Q_LAUNCH)), (uint32_t)round + 1);
		}
	}
	assert_true(overlap);
	assert_true(tc_wait_irq(&f->c, f->efd[VEC_EXEC], 1000) >= 1);
}

/* The ring off (1.0 fault slot): a fault on queue 1 stalls queue 1 only;
 * queue 0, driven through the 1.0 block, and queue 2 complete meanwhile. */
static void test_fault_on_one_queue(void **state)
{
	struct fx *f = *state;

	for (unsigned n = 0; n < 3; n++)
		vm_build(f, n);
	kernel(f, 1, OP_WRITE, VA_B, 3 * 4096, 0x11);
	assert_true(tc_wait_irq(&f->c, f->efd[VEC_FAULT], 5000) >= 1);
	assert_true(wait_status(f, 1, ST_STALLED));
	assert_int_equal(tc_rd32(&f->c, R_FSTATUS), 1);
	assert_int_equal(tc_rd32(&f->c, R_FQUEUE), 1);
	assert_int_equal(tc_rd64(&f->c, R_FVA), VA_B);
	assert_int_equal(tc_rd32(&f->c, R_FACCESS), 1);
	assert_int_equal(tc_rd32(&f->c, qreg(1, Q_FAULT_PAGES)), 1);
	/* Queue 0 through the 1.0 registers, queue 2 through its block. */
	assert_int_equal(tc_wr32(&f->c, R_OP, OP_WRITE), 0);
	assert_int_equal(tc_wr64(&f->c, R_VA, VA_A), 0);
	assert_int_equal(tc_wr64(&f->c, R_SIZE, 8192), 0);
	assert_int_equal(tc_wr64(&f->c, R_VALUE, 0x22), 0);
	assert_int_equal(tc_wr32(&f->c, R_START, 1), 0);
	kernel(f, 2, OP_ATOMIC, VA_A, 4096, 3);
	assert_true(wait_done(f, 0x5));
	assert_int_equal(tc_rd32(&f->c, R_STATUS), ST_DONE);
	assert_int_equal(tc_rd64(&f->c, R_PROGRESS), 8192);
	assert_int_equal(ld64(f, DATA(0, 1) + 4088), 0x22);
	assert_int_equal(ld64(f, DATA(2, 0) + 8), 3);
	assert_int_equal(tc_rd32(&f->c, qreg(1, Q_STATUS)), ST_STALLED);
	assert_int_equal(tc_rd64(&f->c, R_DONE) & 2, 0);
	/* In order with the slot: one page at a time, each fixed and replayed
	 * through queue 1's own FAULT_REPLY. */
	for (unsigned i = 0; i < 3; i++) {
		if (i) {
			assert_true(wait_reg(f, R_FSTATUS, false, 1, 1));
			assert_int_equal(tc_rd64(&f->c, R_FVA), VA_B + i * 4096ull);
		}
		assert_int_equal(tc_rd64(&f->c, qreg(1, Q_PROGRESS)), i * 4096ull);
		fix(f, 1, i);
		assert_int_equal(tc_wr32(&f->c, qreg(1, Q_FREPLY), 1), 0);
	}
	assert_true(wait_done(f, 0x2));
	assert_int_equal(tc_rd32(&f->c, qreg(1, Q_STATUS)), ST_DONE);
	assert_int_equal(tc_rd32(&f->c, R_FSTATUS), 0);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(ld64(f, DATA(1, i) + 4000), 0x11);
}

/* The slot holds one fault: queues that fault while it is taken stall until
 * it is free, and none of their faults is lost. */
static void test_slot_shared(void **state)
{
	struct fx *f = *state;
	uint64_t done = 0;
	struct sim_state st;

	for (unsigned n = 0; n < 3; n++) {
		vm_build(f, n);
		kernel(f, n, OP_WRITE, VA_B + n * 4096ull, 8, 0x30 + n);
	}
	for (unsigned k = 0; k < 3; k++) {
		unsigned q;

		assert_true(wait_reg(f, R_FSTATUS, false, 1, 1));
		q = tc_rd32(&f->c, R_FQUEUE);
		assert_true(q < 3 && !(done & (1ull << q)));
		assert_int_equal(tc_rd64(&f->c, R_FVA), VA_B + q * 4096ull);
		/* Every queue not done is stalled: the one in the slot with its
		 * page set aside, the others waiting for the slot. */
		for (unsigned n = 0; n < 3; n++) {
			if (done & (1ull << n))
				continue;
			assert_true(wait_status(f, n, ST_STALLED));
			assert_int_equal(tc_rd32(&f->c, qreg(n, Q_FAULT_PAGES)), n == q ? 1 : 0);
		}
		assert_int_equal(tc_rd64(&f->c, R_BUSY), 0x7 & ~done);
		sim_state(f->sim, 0, &st);
		assert_int_equal(st.faults, k + 1);
		fix(f, q, q);
		assert_int_equal(tc_wr32(&f->c, R_FREPLY, 1), 0);
		assert_true(wait_done(f, 1ull << q));
		done |= 1ull << q;
	}
	for (unsigned n = 0; n < 3; n++)
		assert_int_equal(ld64(f, DATA(n, n)), 0x30 + n);
	assert_int_equal(tc_rd32(&f->c, R_FSTATUS), 0);
}

/* Map every other page of VA_B below @pages from @first on, in every queue,
 * invalidate, and replay every queue with one FAULT_REPLAY write. */
static void fix_and_replay(struct fx *f, unsigned pages, unsigned first)
{
	for (unsigned n = 0; n < NQ; n++) {
		for (unsigned i = first; i < pages; i += 2)
			fix(f, n, i);
		assert_int_equal(tc_wr32(&f->c, qreg(n, Q_TLB_INVAL), 1), 0);
	}
	assert_int_equal(tc_wr64(&f->c, R_REPLAY, (1ull << NQ) - 1), 0);
}

/* 128 faults from four queues in the ring, serviced as one batch, with a
 * partial replay in between (unfixed pages fault again: duplicates). */
static void test_ring_batch(void **state)
{
	struct fx *f = *state;
	const unsigned pages = 32, total = NQ * pages;
	bool seen[NQ][32];
	uint32_t put;

	memset(seen, 0, sizeof(seen));
	ring_on(f, 256);
	for (unsigned n = 0; n < NQ; n++) {
		vm_build(f, n);
		kernel_f(f, n, OP_WRITE, VA_B, pages * 4096ull, 0x40 + n, FENCES + n * 8, 100 + n);
	}
	assert_true(wait_reg(f, R_PUT, false, ~0ull, total));
	for (unsigned n = 0; n < NQ; n++) {
		assert_true(wait_status(f, n, ST_STALLED));
		assert_int_equal(tc_rd32(&f->c, qreg(n, Q_FAULT_PAGES)), pages);
	}
	assert_int_equal(tc_rd32(&f->c, R_FSTATUS), 0); /* the slot is not used */
	assert_true(tc_efd_take(f->efd[VEC_FAULT]) >= 1);
	/* One batch: read every entry, consume them all with one GET write. */
	for (uint32_t c = 0; c < total; c++) {
		struct entry e = ring_entry(f, 256, c);
		unsigned page = (unsigned)((e.va - VA_B) / 4096);

		assert_int_equal(e.flags, 1); /* PHASE: first pass */
		assert_true(e.queue < NQ);
		assert_int_equal(e.access, 1);
		assert_int_equal(e.launch, 1);
		assert_int_equal(e.va & 4095, 0);
		assert_true(page < pages && !seen[e.queue][page]);
		seen[e.queue][page] = true;
	}
	assert_int_equal(tc_wr32(&f->c, R_GET, total), 0);
	/* Fix even pages only, replay everyone: odd pages fault again. */
	fix_and_replay(f, pages, 0);
	assert_true(wait_reg(f, R_PUT, false, ~0ull, total + total / 2));
	for (unsigned n = 0; n < NQ; n++) {
		assert_true(wait_status(f, n, ST_STALLED));
		assert_int_equal(tc_rd32(&f->c, qreg(n, Q_FAULT_PAGES)), pages / 2);
		assert_int_equal(tc_rd64(&f->c, qreg(n, Q_PROGRESS)), pages / 2 * 4096ull);
	}
	for (uint32_t c = total; c < total + total / 2; c++) {
		struct entry e = ring_entry(f, 256, c);

		assert_int_equal((e.va - VA_B) / 4096 % 2, 1);
	}
	/* Second batch: the rest. */
	put = tc_rd32(&f->c, R_PUT);
	assert_int_equal(tc_wr32(&f->c, R_GET, put), 0);
	fix_and_replay(f, pages, 1);
	assert_true(wait_done(f, (1ull << NQ) - 1));
	for (unsigned n = 0; n < NQ; n++) {
		assert_int_equal(tc_rd32(&f->c, qreg(n, Q_STATUS)), ST_DONE);
		assert_int_equal(tc_rd64(&f->c, qreg(n, Q_PROGRESS)), pages * 4096ull);
		assert_int_equal(ld64(f, FENCES + n * 8), 100 + n);
		for (unsigned i = 0; i < pages; i++) {
			assert_int_equal(ld64(f, DATA(n, i)), 0x40 + n);
			assert_int_equal(ld64(f, DATA(n, i) + 4088), 0x40 + n);
		}
	}
	assert_int_equal(tc_rd32(&f->c, R_PUT), put); /* nothing more */
}

/* The smallest ring, 128 faults: the ring fills, the faulting queues stall,
 * nothing is overwritten or lost, and the rest arrives as the driver frees
 * entries (the second pass with PHASE 0). */
static void test_ring_full_stalls(void **state)
{
	struct fx *f = *state;
	const unsigned pages = 64;
	bool seen[2][64];
	uint32_t put;

	memset(seen, 0, sizeof(seen));
	ring_on(f, 64);
	for (unsigned n = 0; n < 2; n++) {
		vm_build(f, n);
		kernel(f, n, OP_ATOMIC, VA_B, pages * 4096ull, 1);
	}
	/* A third queue that does not fault runs to the end regardless. */
	vm_build(f, 2);
	assert_true(wait_reg(f, R_PUT, false, ~0ull, 64));
	assert_true(wait_status(f, 0, ST_STALLED));
	assert_true(wait_status(f, 1, ST_STALLED));
	kernel(f, 2, OP_WRITE, VA_A, 16 * 4096, 9);
	assert_true(wait_done(f, 0x4));
	usleep(50 * 1000);
	assert_int_equal(tc_rd32(&f->c, R_PUT), 64); /* full: no overrun */
	assert_true(tc_rd32(&f->c, qreg(0, Q_FAULT_PAGES)) + tc_rd32(&f->c, qreg(1, Q_FAULT_PAGES)) ==
		    64);
	for (unsigned pass = 0; pass < 2; pass++) {
		for (uint32_t c = pass * 64; c < pass * 64 + 64; c++) {
			struct entry e = ring_entry(f, 64, c);
			unsigned page = (unsigned)((e.va - VA_B) / 4096);

			assert_int_equal(e.flags, pass ? 0 : 1);
			assert_true(e.queue < 2 && page < pages && !seen[e.queue][page]);
			seen[e.queue][page] = true;
			fix(f, e.queue, page);
		}
		assert_int_equal(tc_wr32(&f->c, R_GET, pass * 64 + 64), 0);
		if (!pass)
			assert_true(wait_reg(f, R_PUT, false, ~0ull, 128));
	}
	for (unsigned n = 0; n < 2; n++) {
		assert_true(wait_status(f, n, ST_STALLED));
		assert_int_equal(tc_rd32(&f->c, qreg(n, Q_FAULT_PAGES)), pages);
		assert_int_equal(tc_wr32(&f->c, qreg(n, Q_TLB_INVAL), 1), 0);
	}
	assert_int_equal(tc_wr64(&f->c, R_REPLAY, 0x3), 0);
	assert_true(wait_done(f, 0x3));
	put = tc_rd32(&f->c, R_PUT);
	assert_int_equal(put, 128);
	for (unsigned n = 0; n < 2; n++)
		for (unsigned i = 0; i < pages; i++)
			assert_int_equal(ld64(f, DATA(n, i) + 8 * i), 1);
	/* A GET outside [GET, PUT] is ignored. */
	assert_int_equal(tc_wr32(&f->c, R_GET, 200), 0);
	assert_int_equal(tc_rd32(&f->c, R_GET), 128);
}

/* ABORT ends the faulting queue's kernel only; the others complete. */
static void test_abort_one_queue(void **state)
{
	struct fx *f = *state;
	const uint64_t size = 32ull << 20;

	ring_on(f, 64);
	for (unsigned n = 0; n < 3; n++) {
		vm_build(f, n);
		fill(f, n, 0);
	}
	/* Queue 1: eight pages, page 3 unmapped (the others are fixed now). */
	for (unsigned i = 0; i < 8; i++)
		if (i != 3)
			fix(f, 1, i);
	kernel_f(f, 1, OP_WRITE, VA_B, 8 * 4096, 0x55, FENCES + 8, 77);
	kernel_f(f, 0, OP_ATOMIC, VA_LONG, size, 1, FENCES, 70);
	kernel_f(f, 2, OP_ATOMIC, VA_LONG, size, 2, FENCES + 16, 72);
	assert_true(wait_reg(f, R_PUT, false, ~0ull, 1));
	assert_true(wait_status(f, 1, ST_STALLED));
	/* Pages after the fault ran (the ring on: pages are independent). */
	assert_int_equal(tc_rd64(&f->c, qreg(1, Q_PROGRESS)), 7 * 4096);
	assert_int_equal(ring_entry(f, 64, 0).queue, 1);
	assert_int_equal(ring_entry(f, 64, 0).va, VA_B + 3 * 4096);
	assert_int_equal(tc_wr32(&f->c, R_GET, 1), 0);
	assert_int_equal(tc_wr64(&f->c, R_ABORT, 1ull << 1), 0);
	assert_true(wait_done(f, 0x2));
	assert_int_equal(tc_rd32(&f->c, qreg(1, Q_STATUS)), ST_ABORTED);
	assert_int_equal(ld64(f, FENCES + 8), 77); /* the fence says it ended */
	assert_int_equal(ld64(f, DATA(1, 3)), 0); /* undone */
	assert_int_equal(ld64(f, DATA(1, 4)), 0x55);
	assert_true(tc_wait_irq(&f->c, f->efd[VEC_EXEC], 5000) >= 1);
	/* The others were not touched by it. */
	assert_true(wait_done(f, 0x5));
	for (unsigned n = 0; n < 3; n += 2) {
		uint64_t sum = 0;

		assert_int_equal(tc_rd32(&f->c, qreg(n, Q_STATUS)), ST_DONE);
		for (unsigned i = 0; i < NDATA * 512; i++)
			sum += ld64(f, DATA(n, 0) + i * 8ull);
		assert_int_equal(sum, (size / 8) * (n / 2 + 1));
	}
	/* A stale reply is ignored; queue 1 runs its next kernel. */
	assert_int_equal(tc_wr32(&f->c, qreg(1, Q_FREPLY), 2), 0);
	fix(f, 1, 3);
	assert_int_equal(tc_wr32(&f->c, qreg(1, Q_TLB_INVAL), 1), 0);
	kernel(f, 1, OP_READ, VA_B, 8 * 4096, 0);
	assert_true(wait_status(f, 1, ST_DONE));
	assert_int_equal(tc_rd32(&f->c, qreg(1, Q_LAUNCH)), 2);
}

/* Fences, errors, and the fault ring's rules. */
static void test_fences_and_ring_rules(void **state)
{
	struct fx *f = *state;

	vm_build(f, 0);
	vm_build(f, 1);
	/* A bad fence address: error, no fence. */
	assert_int_equal(tc_wr64(&f->c, qreg(0, Q_SEQNO), 0), 0); /* RO: ignored */
	kernel_f(f, 0, OP_READ, VA_A, 8, 0, FENCES + 4, 5);
	assert_true(tc_wait_irq(&f->c, f->efd[VEC_ERROR], 5000) >= 1);
	assert_int_equal(tc_rd32(&f->c, qreg(0, Q_STATUS)), ST_ERROR);
	assert_int_equal(tc_rd64(&f->c, qreg(0, Q_SEQNO)), 0);
	kernel_f(f, 0, OP_READ, VA_A, 8, 0, VRAM, 5);
	assert_true(wait_status(f, 0, ST_ERROR));
	/* Any other error writes the fence: the kernel ended. */
	kernel_f(f, 0, 9, VA_A, 8, 0, FENCES, 6);
	assert_true(wait_status(f, 0, ST_ERROR));
	assert_int_equal(ld64(f, FENCES), 6);
	assert_int_equal(tc_wr64(&f->c, qreg(0, Q_VM_ROOT), VRAM), 0);
	kernel_f(f, 0, OP_READ, VA_A, 8, 0, FENCES, 7);
	assert_true(wait_status(f, 0, ST_ERROR));
	assert_int_equal(ld64(f, FENCES), 7);
	assert_int_equal(tc_rd64(&f->c, qreg(0, Q_SEQNO)), 7);

	/* An invalid ring is refused with vector 2. */
	tc_efd_take(f->efd[VEC_ERROR]);
	assert_int_equal(tc_wr64(&f->c, R_RING_BASE, RING + 8), 0);
	assert_int_equal(tc_wr32(&f->c, R_RING_SIZE, 64), 0);
	assert_int_equal(tc_wr32(&f->c, R_RING_CTRL, 1), 0);
	assert_int_equal(tc_rd32(&f->c, R_RING_STATUS), 2);
	assert_true(tc_wait_irq(&f->c, f->efd[VEC_ERROR], 5000) >= 1);
	assert_int_equal(tc_wr64(&f->c, R_RING_BASE, RING), 0);
	assert_int_equal(tc_wr32(&f->c, R_RING_SIZE, 32), 0); /* below 64 */
	assert_int_equal(tc_wr32(&f->c, R_RING_CTRL, 1), 0);
	assert_int_equal(tc_rd32(&f->c, R_RING_STATUS), 2);
	assert_int_equal(tc_wr32(&f->c, R_RING_SIZE, 65536 * 2), 0);
	assert_int_equal(tc_wr32(&f->c, R_RING_CTRL, 1), 0);
	assert_int_equal(tc_rd32(&f->c, R_RING_STATUS), 2);
	/* No switch while a queue is busy (queue 1 stalled in the slot). */
	kernel(f, 1, OP_READ, VA_B, 8, 0);
	assert_true(wait_status(f, 1, ST_STALLED));
	assert_int_equal(tc_wr32(&f->c, R_RING_SIZE, 64), 0);
	assert_int_equal(tc_wr32(&f->c, R_RING_CTRL, 1), 0);
	assert_int_equal(tc_rd32(&f->c, R_RING_CTRL), 0);
	/* A REPLAY to a queue with nothing set aside is ignored; ABORT ends it. */
	assert_int_equal(tc_wr32(&f->c, qreg(0, Q_FREPLY), 1), 0);
	assert_int_equal(tc_wr32(&f->c, qreg(1, Q_FREPLY), 2), 0);
	assert_true(wait_status(f, 1, ST_ABORTED));
	assert_int_equal(tc_rd32(&f->c, R_FSTATUS), 0);
	assert_int_equal(tc_wr32(&f->c, R_RING_CTRL, 1), 0);
	assert_int_equal(tc_rd32(&f->c, R_RING_STATUS), 1);
	/* The slot is not used with the ring on. */
	assert_int_equal(tc_wr32(&f->c, R_FREPLY, 2), 0);
	assert_int_equal(tc_rd32(&f->c, R_FSTATUS), 0);
}

static void d3hot(struct fx *f)
{
	assert_int_equal(tc_cfg_wr32(&f->c, PMCSR, 3), 0);
	assert_int_equal(tc_rd32(&f->c, 0), 0xffffffffu);
}

static void d0(struct fx *f)
{
	assert_int_equal(tc_cfg_wr32(&f->c, PMCSR, 0), 0);
	assert_int_equal(tc_rd32(&f->c, 0), 0x55475055);
}

static uint64_t data_sum(struct fx *f, unsigned n)
{
	uint64_t sum = 0;

	for (unsigned i = 0; i < NDATA * 512; i++)
		sum += ld64(f, DATA(n, 0) + i * 8ull);
	return sum;
}

/* D3hot pauses every queue between pages and D0 resumes them. */
static void test_d3hot_pauses_queues(void **state)
{
	struct fx *f = *state;
	const uint64_t size = 256ull << 20;
	uint64_t before[NQ];
	struct sim_state st;
	unsigned running = 0;

	for (unsigned n = 0; n < NQ; n++) {
		vm_build(f, n);
		fill(f, n, 0);
	}
	for (unsigned n = 0; n < NQ; n++)
		kernel(f, n, OP_ATOMIC, VA_LONG, size, 1);
	d3hot(f);
	sim_state(f->sim, 0, &st);
	for (unsigned n = 0; n < NQ; n++) {
		running += st.queue_status[n] == ST_RUNNING;
		before[n] = data_sum(f, n);
	}
	assert_true(running >= 1); /* 64 Ki pages each: not done yet */
	usleep(100 * 1000);
	for (unsigned n = 0; n < NQ; n++)
		assert_int_equal(data_sum(f, n), before[n]);
	sim_state(f->sim, 0, &st);
	for (unsigned n = 0; n < NQ; n++)
		assert_true(st.queue_status[n] == ST_RUNNING || st.queue_status[n] == ST_DONE);
	d0(f);
	assert_true(wait_done(f, (1ull << NQ) - 1));
	for (unsigned n = 0; n < NQ; n++) {
		assert_int_equal(tc_rd32(&f->c, qreg(n, Q_STATUS)), ST_DONE);
		assert_int_equal(data_sum(f, n), size / 8);
	}
}

/* Queues busy in every way: running, stalled on a ring fault, waiting for
 * room; the ring holds entries. @how: leave them through D3cold or reset. */
static void busy_everything(struct fx *f)
{
	ring_on(f, 64);
	for (unsigned n = 0; n < NQ; n++)
		vm_build(f, n);
	kernel(f, 0, OP_READ, VA_LONG, 64ull << 30, 0); /* 16 Mi pages: runs on */
	kernel(f, 1, OP_WRITE, VA_B, 64 * 4096, 1);
	kernel(f, 2, OP_WRITE, VA_B, 64 * 4096, 2);
	assert_true(wait_reg(f, R_PUT, false, ~0ull, 64));
	assert_true(wait_status(f, 1, ST_STALLED));
	assert_true(wait_status(f, 2, ST_STALLED));
	assert_int_equal(tc_rd32(&f->c, qreg(0, Q_STATUS)), ST_RUNNING);
}

static void assert_all_reset(struct fx *f)
{
	for (unsigned n = 0; n < NQ; n++) {
		assert_int_equal(tc_rd32(&f->c, qreg(n, Q_STATUS)), ST_IDLE);
		assert_int_equal(tc_rd64(&f->c, qreg(n, Q_VM_ROOT)), 0);
		assert_int_equal(tc_rd32(&f->c, qreg(n, Q_VM_CTRL)), 0);
		assert_int_equal(tc_rd64(&f->c, qreg(n, Q_FENCE_ADDR)), ~0ull);
		assert_int_equal(tc_rd32(&f->c, qreg(n, Q_FAULT_PAGES)), 0);
		assert_int_equal(tc_rd32(&f->c, qreg(n, Q_LAUNCH)), 0);
	}
	assert_int_equal(tc_rd32(&f->c, R_RING_STATUS), 0);
	assert_int_equal(tc_rd32(&f->c, R_PUT), 0);
	assert_int_equal(tc_rd64(&f->c, R_RING_BASE), 0);
	assert_int_equal(tc_rd64(&f->c, R_DONE), 0);
	assert_int_equal(tc_rd64(&f->c, R_BUSY), 0);
	assert_int_equal(tc_rd32(&f->c, R_FSTATUS), 0);
	/* And the device works again: a kernel on queue 3 (tables rebuilt). */
	vm_build(f, 3);
	kernel(f, 3, OP_WRITE, VA_A, 4096, 0x99);
	assert_true(wait_done(f, 1ull << 3));
	assert_int_equal(ld64(f, DATA(3, 0) + 8), 0x99);
}

static void test_d3cold_with_queues_busy(void **state)
{
	struct fx *f = *state;
	struct sim_state st;

	busy_everything(f);
	d3hot(f);
	assert_int_equal(tc_cfg_wr32(&f->c, PWR_CTL, 1), 0);
	sim_state(f->sim, 0, &st);
	assert_int_equal(st.power, SIM_POWER_D3COLD);
	assert_int_equal(tc_cfg_wr32(&f->c, PWR_CTL, 0), 0);
	sim_state(f->sim, 0, &st);
	for (unsigned n = 0; n < NQ; n++)
		assert_int_equal(st.queue_status[n], ST_IDLE);
	assert_false(st.fault_ring);
	assert_int_equal(ld64(f, RING), 0xdeadbeefdeadbeefull); /* the ring's memory is gone */
	d0(f);
	assert_all_reset(f);
}

static void test_reset_with_queues_busy(void **state)
{
	struct fx *f = *state;

	busy_everything(f);
	assert_int_equal(tc_call(&f->c, VFU_CMD_DEVICE_RESET, NULL, 0, NULL, 0, NULL, 0, tc_r()), 0);
	assert_all_reset(f);
}

/* Surprise removal with queues busy: they stop between pages, the device
 * state says removed, and teardown is bounded (fx_teardown checks). */
static void test_removal_with_queues_busy(void **state)
{
	struct fx *f = *state;
	struct sim_state st;
	char line[512];

	busy_everything(f);
	assert_int_equal(sim_unplug_surprise(f->sim, 0), 0);
	usleep(20 * 1000);
	sim_state(f->sim, 0, &st);
	assert_true(st.removed);
	assert_int_equal(st.queue_status[0], ST_RUNNING); /* paused, not done */
	assert_int_equal(st.queue_status[1], ST_STALLED);
	assert_int_equal(st.fault_put - st.fault_get, 64);
	assert_int_equal(sim_state_line(f->sim, 0, line, sizeof(line)), 0);
	assert_non_null(strstr(line, "queues=running,stalled,stalled,idle faultq=64/64"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_version_and_layout, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_64_queues, fx_setup_64, fx_teardown),
		cmocka_unit_test_setup_teardown(test_queues_run_concurrently, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_fault_on_one_queue, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_slot_shared, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_ring_batch, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_ring_full_stalls, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_abort_one_queue, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_fences_and_ring_rules, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_d3hot_pauses_queues, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_d3cold_with_queues_busy, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_reset_with_queues_busy, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_removal_with_queues_busy, fx_setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
