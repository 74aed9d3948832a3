/* SPDX-License-Identifier: MIT */
/*
 * The exec engine on the reference device (engines/exec.h;
 * docs/reference-device.md, layout 1.1).
 *
 * Ends: every queue's FENCE_ADDR points at its word in our memory and
 * FENCE_VALUE is 1; the word is cleared by the CPU before each launch, so a
 * word that reads 1 is an ended kernel, seen with a memory read. Then one
 * EXEC_STATUS read (and RESULT for a read kernel) says how it ended. A launch
 * is the EXEC_START write plus the registers that changed since the last
 * launch on that queue (op, VA, size, value, root, TLB).
 *
 * Faults: the ring is zeroed before it is enabled, so an entry is new when
 * its PHASE bit matches the pass (no PUT read); a batch ends with one GET
 * write.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "engines/exec.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/refdev.h"
#include "base/test_point.h"
#include "vfio/transport.h"

/* BAR0, docs/reference-device.md */
#define REG_VERSION 0x0004
#define REG_CAPS 0x0008
#define CAPS_GPUVM (1u << 1)
#define CAPS_QUEUES (1u << 3)
#define CAPS_NO_ATOMIC (1u << 4)
#define REG_NUM_EXEC_QUEUES 0x0024
#define FR_BASE 0x3000
#define FR_SIZE 0x3008
#define FR_CTRL 0x300c
#define FR_STATUS 0x3010
#define FR_STATUS_ENABLED (1u << 0)
#define FR_GET 0x3018
#define FR_REPLAY 0x3020
#define FR_ABORT 0x3028
#define REG_EXEC_BUSY 0x3038
#define Q_BASE(n) (0x4000u + (n) * 0x100u)
#define Q_VM_CTRL 0x00
#define Q_VM_ROOT 0x08
#define Q_TLB_INVAL 0x10
#define Q_FAULT_REPLY 0x14
#define Q_FAULT_REPLY_ABORT 2u
#define Q_OP 0x40
#define Q_VA 0x48
#define Q_SIZE 0x50
#define Q_VALUE 0x58
#define Q_START 0x60
#define Q_STATUS 0x64
#define Q_RESULT 0x68
#define Q_FENCE_ADDR 0x78
#define Q_FENCE_VALUE 0x80
#define Q_LAUNCH 0x90
enum { ST_IDLE = 0, ST_RUNNING = 1, ST_STALLED = 2, ST_DONE = 3, ST_ABORTED = 4, ST_ERROR = 5 };

#define NO_ROOT (~0ull)
/* A running kernel's end is looked for at least this often, interrupts or
 * not (a lost interrupt costs latency, never a hang). */
#define SAFETY_POLL_MS 100

/*
 * struct exec_slot - one hardware queue as the driver last programmed it.
 * Under x->lock. @root/@op/@va/@bytes/@value mirror the registers (NO_ROOT
 * / op 0: unknown, write them). @launch mirrors LAUNCH. @dead: a kernel was
 * abandoned on it and may still run: unusable until the registers reset.
 */
struct exec_slot {
	bool running;
	bool dead;
	void *tag;
	enum exec_op op_running;
	uint64_t t0;
	uint32_t launch;
	uint64_t root;
	uint64_t inval_gen;
	uint32_t op;
	uint64_t va, bytes, value;
};

/*
 * struct exec_engine. Locking: @lock protects the slots, @blocked,
 * @need_program, @fault_get, the stats and every register sequence (so a
 * launch never interleaves with a reprogram). @cb_lock is held by the
 * thread around callbacks and by exec_set_client() to change @client.
 * Order: @cb_lock, then @lock; callbacks run with @cb_lock only.
 */
struct exec_engine {
	struct ugpu_context *ctx;
	struct vfio_dev *dev;
	char name[64];
	char *mem; /* CPU address of the ring; fence words follow */
	uint64_t mem_offset;
	uint64_t *fences;
	uint32_t nq;
	bool no_atomic; /* VERSION 1.2 (CAPS bit 4): leaves honour NO_ATOMIC; set at create */
	int irq_fd[3];
	int stop_fd;
	pthread_t thread;
	bool thread_up;

	pthread_mutex_t lock;
	pthread_cond_t cond; /* slots ended; blocked changes */
	struct exec_slot slot[EXEC_MAX_QUEUES];
	unsigned int blocked;
	bool need_program;
	bool kick_pending;
	bool stop;
	uint32_t fault_get;
	struct exec_stats st;
	struct exec_fault *fbuf; /* the thread's batch */
	uint32_t *flaunch; /* LAUNCH of each fault's kernel in @fbuf */
	unsigned int inflight; /* batches collected and not yet delivered */
	struct exec_end stash[EXEC_MAX_QUEUES]; /* abandoned by exec_hw_lost() */
	size_t nstash;

	pthread_mutex_t cb_lock;
	struct exec_client client;
	bool has_client;
};

static int rd32(struct exec_engine *x, uint32_t off, uint32_t *v)
{
	return x->dev->ops->region_read(x->dev, VFIO_REGION_BAR0, off, v, 4);
}

static int wr32(struct exec_engine *x, uint32_t off, uint32_t v)
{
	return x->dev->ops->region_write(x->dev, VFIO_REGION_BAR0, off, &v, 4);
}

static int rd64(struct exec_engine *x, uint32_t off, uint64_t *v)
{
	return x->dev->ops->region_read(x->dev, VFIO_REGION_BAR0, off, v, 8);
}

static int wr64(struct exec_engine *x, uint32_t off, uint64_t v)
{
	return x->dev->ops->region_write(x->dev, VFIO_REGION_BAR0, off, &v, 8);
}

/*
 * CPU stores to VRAM (PTEs, fence words, the zeroed ring) before the register
 * write that makes the device look at them. GCC's ThreadSanitizer refuses
 * __atomic_thread_fence() (-Werror=tsan); under it a sequentially consistent
 * read-modify-write stands in (a full barrier on every target we build for,
 * and the register write itself is a system call).
 */
#if defined(__SANITIZE_THREAD__)
#define UGPU_EXEC_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UGPU_EXEC_TSAN 1
#endif
#endif

static void stores_before_mmio(void)
{
#ifdef UGPU_EXEC_TSAN
	static unsigned long word;

	__atomic_fetch_add(&word, 0, __ATOMIC_SEQ_CST);
#else
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

static void wake_thread(struct exec_engine *x)
{
	uint64_t one = 1;

	if (write(x->stop_fd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is already non-zero, the thread wakes. */
	}
}

static uint64_t fence_off(struct exec_engine *x, uint32_t q)
{
	return x->mem_offset + (uint64_t)EXEC_FAULT_RING_ENTRIES * EXEC_FAULT_ENTRY_BYTES + q * 8ull;
}

/* Program what the device lost: fault ring, fences, VM enables. @lock held;
 * the device is in D0 and no queue runs. */
static int program_locked(struct exec_engine *x)
{
	uint32_t st = 0, q;
	int ret;

	memset(x->mem, 0, EXEC_FAULT_RING_ENTRIES * EXEC_FAULT_ENTRY_BYTES);
	for (q = 0; q < x->nq; q++)
		__atomic_store_n(&x->fences[q], 0, __ATOMIC_RELAXED);
	stores_before_mmio();
	if ((ret = wr32(x, FR_CTRL, 0)) || (ret = wr64(x, FR_BASE, x->mem_offset)) ||
	    (ret = wr32(x, FR_SIZE, EXEC_FAULT_RING_ENTRIES)) || (ret = wr32(x, FR_CTRL, 1)) ||
	    (ret = rd32(x, FR_STATUS, &st)))
		return ret;
	if (!(st & FR_STATUS_ENABLED)) {
		log_err(x->ctx, "%s: the fault ring did not enable (status 0x%x)", x->name, st);
		return -EIO;
	}
	x->fault_get = 0;
	for (q = 0; q < x->nq; q++) {
		struct exec_slot *s = &x->slot[q];

		uint32_t launch = 0;

		/* LAUNCH (the tag of fault entries) is 0 after a reset only: a
		 * previous owner of the device left it counting. */
		if ((ret = wr64(x, Q_BASE(q) + Q_FENCE_ADDR, fence_off(x, q))) ||
		    (ret = wr64(x, Q_BASE(q) + Q_FENCE_VALUE, 1)) ||
		    (ret = wr32(x, Q_BASE(q) + Q_VM_CTRL, 1)) ||
		    (ret = rd32(x, Q_BASE(q) + Q_LAUNCH, &launch)))
			return ret;
		*s = (struct exec_slot){ .root = NO_ROOT, .launch = launch };
	}
	x->need_program = false;
	x->st.reprograms++;
	return 0;
}

/* Write @v to @reg unless the register is known to hold it. */
static int wr64_cached(struct exec_engine *x, uint32_t reg, uint64_t *cache, uint64_t v, bool *known)
{
	int ret;

	if (*known && *cache == v)
		return 0;
	ret = wr64(x, reg, v);
	if (!ret)
		*cache = v;
	return ret;
}

int exec_launch(struct exec_engine *x, const struct exec_launch *l, uint32_t *slot_out,
		uint32_t *launch_out)
{
	struct exec_slot *s = NULL;
	uint32_t q, base;
	bool known;
	int ret;

	pthread_mutex_lock(&x->lock);
	if (x->blocked) {
		pthread_mutex_unlock(&x->lock);
		return -EAGAIN;
	}
	if (x->need_program && (ret = program_locked(x))) {
		pthread_mutex_unlock(&x->lock);
		return ret;
	}
	/* A free queue, the one already on this VM first. */
	for (q = 0; q < x->nq; q++) {
		struct exec_slot *c = &x->slot[q];

		if (c->running || c->dead)
			continue;
		if (!s || (c->root == l->root && s->root != l->root))
			s = c;
	}
	if (!s) {
		pthread_mutex_unlock(&x->lock);
		return -EBUSY;
	}
	q = (uint32_t)(s - x->slot);
	base = Q_BASE(q);
	if (s->root != l->root) {
		if ((ret = wr64(x, base + Q_VM_ROOT, l->root)))
			goto fail;
		s->root = l->root;
		s->inval_gen = 0;
		x->st.root_switches++;
	}
	if (s->inval_gen < l->pt_gen || !s->inval_gen) {
		/* PTE stores before the invalidation that makes them seen. */
		stores_before_mmio();
		if ((ret = wr32(x, base + Q_TLB_INVAL, 1)))
			goto fail;
		s->inval_gen = l->pt_gen ? l->pt_gen : 1;
		x->st.tlb_invals++;
	}
	known = s->op != 0;
	if (!known || s->op != (uint32_t)l->op) {
		if ((ret = wr32(x, base + Q_OP, (uint32_t)l->op)))
			goto fail;
		s->op = (uint32_t)l->op;
	}
	if ((ret = wr64_cached(x, base + Q_VA, &s->va, l->va, &known)) ||
	    (ret = wr64_cached(x, base + Q_SIZE, &s->bytes, l->bytes, &known)) ||
	    (ret = wr64_cached(x, base + Q_VALUE, &s->value, l->value, &known)))
		goto fail;
	__atomic_store_n(&x->fences[q], 0, __ATOMIC_RELAXED);
	stores_before_mmio();
	s->running = true;
	s->tag = l->tag;
	s->op_running = l->op;
	s->t0 = now_ns();
	s->launch++;
	ret = wr32(x, base + Q_START, 1);
	if (ret) {
		s->running = false;
		s->launch--;
		goto fail;
	}
	x->st.launches++;
	*launch_out = s->launch;
	pthread_mutex_unlock(&x->lock);
	*slot_out = q;
	return 0;

fail:
	/* What the registers hold is unknown now. */
	s->root = NO_ROOT;
	s->op = 0;
	pthread_mutex_unlock(&x->lock);
	log_err(x->ctx, "%s: launch on queue %u failed: %s", x->name, q, ugpu_strerror(ret));
	return ret;
}

int exec_fault_resolve(struct exec_engine *x, uint32_t slot, uint32_t launch, bool replay)
{
	struct exec_slot *s;
	int ret = 0;

	if (slot >= x->nq)
		return -EINVAL;
	pthread_mutex_lock(&x->lock);
	s = &x->slot[slot];
	if (s->running && s->launch == launch) {
		if (replay) {
			/* The REPLAY drops the queue's TLB itself, and every
			 * entry the driver changed or removed was flushed (and
			 * waited for) when it was (vm_svm_unmap()): one write
			 * (reference-device.md, "Replies"). */
			ret = wr64(x, FR_REPLAY, 1ull << slot);
		} else {
			ret = wr64(x, FR_ABORT, 1ull << slot);
			x->st.aborts++;
		}
	}
	pthread_mutex_unlock(&x->lock);
	return ret;
}

int exec_tlb_flush(struct exec_engine *x, uint64_t root, uint64_t pt_gen)
{
	uint32_t q;
	int ret = 0;

	pthread_mutex_lock(&x->lock);
	for (q = 0; q < x->nq && !ret; q++) {
		struct exec_slot *s = &x->slot[q];

		if (!s->running || s->root != root)
			continue;
		ret = wr32(x, Q_BASE(q) + Q_TLB_INVAL, 1);
		if (!ret && s->inval_gen < pt_gen)
			s->inval_gen = pt_gen;
		x->st.tlb_invals++;
	}
	pthread_mutex_unlock(&x->lock);
	return ret;
}

int exec_fault_reply(struct exec_engine *x, uint64_t replay, uint64_t abort)
{
	int ret = 0;

	pthread_mutex_lock(&x->lock);
	if (replay)
		ret = wr64(x, FR_REPLAY, replay);
	if (abort) {
		int r = wr64(x, FR_ABORT, abort);

		if (!ret)
			ret = r;
		x->st.aborts += (uint64_t)__builtin_popcountll(abort);
	}
	pthread_mutex_unlock(&x->lock);
	return ret;
}

/* ---- the thread ------------------------------------------------------------- */

/* New fault entries, up to @max, into @f (their kernels' LAUNCH into
 * @launch). @lock held. */
static size_t faults_collect_locked(struct exec_engine *x, struct exec_fault *f, uint32_t *launch_of,
				    size_t max)
{
	size_t n = 0;
	uint32_t c = x->fault_get, start = c;

	while (n < max) {
		char *e = x->mem + (size_t)(c % EXEC_FAULT_RING_ENTRIES) * EXEC_FAULT_ENTRY_BYTES;
		uint32_t flags = __atomic_load_n((uint32_t *)(e + 20), __ATOMIC_ACQUIRE);
		uint32_t phase = ((c / EXEC_FAULT_RING_ENTRIES) & 1) == 0;
		uint64_t va;
		uint32_t q, acc, launch;

		if ((flags & 1) != phase)
			break;
		memcpy(&va, e, 8);
		memcpy(&q, e + 8, 4);
		memcpy(&acc, e + 12, 4);
		memcpy(&launch, e + 16, 4);
		c++;
		x->st.faults++;
		if (q >= x->nq || !x->slot[q].running || x->slot[q].launch != launch)
			continue; /* of a kernel that ended */
		launch_of[n] = launch;
		f[n++] = (struct exec_fault){ .tag = x->slot[q].tag, .slot = q, .launch = launch,
					      .access = (enum exec_access)acc, .va = va };
	}
	if (c != start) {
		x->fault_get = c;
		if (wr32(x, FR_GET, c))
			log_warn(x->ctx, "%s: FAULT_GET write failed", x->name);
		x->st.fault_batches++;
	}
	return n;
}

/* Kernels whose fence is written, into @e. @lock held. */
static size_t ends_collect_locked(struct exec_engine *x, struct exec_end *e)
{
	size_t n = 0;
	uint32_t q;

	for (q = 0; q < x->nq; q++) {
		struct exec_slot *s = &x->slot[q];
		uint32_t st = ST_ERROR;
		uint64_t res = 0;

		if (!s->running || __atomic_load_n(&x->fences[q], __ATOMIC_ACQUIRE) != 1)
			continue;
		if (rd32(x, Q_BASE(q) + Q_STATUS, &st))
			st = ST_ERROR;
		if (st == ST_DONE && s->op_running == EXEC_OP_READ && rd64(x, Q_BASE(q) + Q_RESULT, &res))
			st = ST_ERROR;
		e[n] = (struct exec_end){ .tag = s->tag, .slot = q, .result = res,
					  .run_ns = now_ns() - s->t0 };
		switch (st) {
		case ST_DONE:
			e[n].how = EXEC_END_DONE;
			break;
		case ST_ABORTED:
			e[n].how = EXEC_END_ABORTED;
			break;
		default:
			e[n].how = EXEC_END_ERROR;
			x->st.errors++;
			log_err(x->ctx, "%s: the kernel on queue %u ended with status %u", x->name, q, st);
			break;
		}
		s->running = false;
		s->tag = NULL;
		x->st.ends++;
		n++;
	}
	return n;
}

static uint32_t running_locked(struct exec_engine *x)
{
	uint32_t q, n = 0;

	for (q = 0; q < x->nq; q++)
		n += x->slot[q].running;
	return n;
}

/* Abandon every running kernel into @e (they count as cancelled). @lock held. */
static size_t abandon_locked(struct exec_engine *x, struct exec_end *e, bool mark_dead)
{
	size_t n = 0;
	uint32_t q;

	for (q = 0; q < x->nq; q++) {
		struct exec_slot *s = &x->slot[q];

		if (!s->running)
			continue;
		e[n++] = (struct exec_end){ .tag = s->tag, .slot = q, .how = EXEC_END_CANCELLED,
					    .run_ns = now_ns() - s->t0 };
		s->running = false;
		s->tag = NULL;
		s->dead = mark_dead;
		x->st.cancelled++;
	}
	if (n)
		pthread_cond_broadcast(&x->cond);
	return n;
}

/*
 * Keep the faults of @f whose kernel still runs on its slot (same tag, same
 * LAUNCH). The batch was collected under @lock and handed over after it was
 * dropped: meanwhile the kernel may have ended (its end collected in the
 * same pass, or abandoned by another thread, whose ended callback may have
 * let the client free the tag), and its slot may even run another kernel
 * (an abort sent for the old one would end the new one). Called with
 * @cb_lock held: an end reported from now on waits for this batch.
 */
static size_t faults_still_current(struct exec_engine *x, struct exec_fault *f,
				   const uint32_t *launch_of, size_t nf)
{
	size_t i, n = 0;

	pthread_mutex_lock(&x->lock);
	for (i = 0; i < nf; i++) {
		const struct exec_slot *s = &x->slot[f[i].slot];

		if (s->running && s->tag == f[i].tag && s->launch == launch_of[i])
			f[n++] = f[i];
	}
	pthread_mutex_unlock(&x->lock);
	return n;
}

static void deliver(struct exec_engine *x, struct exec_fault *f, size_t nf,
		    const struct exec_end *e, size_t ne, bool kick)
{
	size_t i;

	pthread_mutex_lock(&x->cb_lock);
	if (nf)
		nf = faults_still_current(x, f, x->flaunch, nf);
	if (x->has_client) {
		if (nf && x->client.faults)
			x->client.faults(x->client.arg, f, nf);
		for (i = 0; i < ne; i++)
			x->client.ended(x->client.arg, &e[i]);
		if ((ne || kick) && x->client.kick)
			x->client.kick(x->client.arg);
	} else if (nf) {
		uint64_t abort = 0;

		for (i = 0; i < nf; i++)
			abort |= 1ull << f[i].slot;
		exec_fault_reply(x, 0, abort);
	}
	pthread_mutex_unlock(&x->cb_lock);
}

static void *exec_thread(void *arg)
{
	struct exec_engine *x = arg;
	struct exec_fault *f = x->fbuf;
	struct exec_end e[2 * EXEC_MAX_QUEUES];

	for (;;) {
		struct pollfd p[4];
		int i, np = 0, timeout;
		size_t nf = 0, ne;
		bool kick;
		uint64_t v;

		pthread_mutex_lock(&x->lock);
		timeout = running_locked(x) ? SAFETY_POLL_MS : -1;
		if (x->stop) {
			pthread_mutex_unlock(&x->lock);
			break;
		}
		pthread_mutex_unlock(&x->lock);
		for (i = 0; i < 3; i++)
			if (x->irq_fd[i] >= 0)
				p[np++] = (struct pollfd){ .fd = x->irq_fd[i], .events = POLLIN };
		p[np++] = (struct pollfd){ .fd = x->stop_fd, .events = POLLIN };
		if (poll(p, (nfds_t)np, timeout) < 0 && errno != EINTR)
			break;
		for (i = 0; i < np; i++)
			if (p[i].revents & POLLIN)
				while (read(p[i].fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
					;
		test_point(TEST_POINT_EXEC_SCAN);

		pthread_mutex_lock(&x->lock);
		if (x->stop) {
			pthread_mutex_unlock(&x->lock);
			break;
		}
		/* Faults come only from running kernels, and only while one
		 * runs is the device surely in D0 with its memory ours to read
		 * (a D3cold restore may be rewriting the ring otherwise). */
		nf = running_locked(x) && !x->need_program
			     ? faults_collect_locked(x, f, x->flaunch, EXEC_FAULT_RING_ENTRIES)
			     : 0;
		ne = ends_collect_locked(x, e);
		if (x->nstash) {
			memcpy(&e[ne], x->stash, x->nstash * sizeof(*e));
			ne += x->nstash;
			x->nstash = 0;
		}
		kick = x->kick_pending;
		x->kick_pending = false;
		if (nf || ne || kick)
			x->inflight++;
		pthread_mutex_unlock(&x->lock);
		if (nf || ne || kick) {
			test_point_obj(TEST_POINT_EXEC_DELIVER, nf ? f : NULL);
			deliver(x, f, nf, e, ne, kick);
			pthread_mutex_lock(&x->lock);
			x->inflight--;
			pthread_cond_broadcast(&x->cond);
			pthread_mutex_unlock(&x->lock);
		}
	}
	return NULL;
}

/* ---- lifetime, blocking ---------------------------------------------------------- */

/*
 * Bounds for kernels the driver does not own any more: left on the device
 * by a previous owner (a program that closed or died with kernels on it: the
 * device keeps its state across clients), or still there when the engine
 * goes.
 */
#define QUIESCE_CREATE_MS 2000
#define QUIESCE_DESTROY_MS 1000

/*
 * Wait (at most @timeout_ms) until no exec queue runs or is stalled, aborting
 * every busy queue on the way: a stalled kernel ends at the abort, a running
 * one at its next fault or by itself (an abort of a queue with no fault is
 * ignored, so it is sent again each round). No lock needed: the thread is
 * not running. Returns the queues still busy (0: none), or 0 when the device
 * does not answer (it runs nothing for us any more).
 */
static uint64_t quiesce_queues(struct exec_engine *x, int timeout_ms)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ull;
	uint64_t all = x->nq >= 64 ? ~0ull : (1ull << x->nq) - 1, busy = 0;
	uint32_t q;

	for (;;) {
		if (rd64(x, REG_EXEC_BUSY, &busy))
			return 0;
		busy &= all;
		if (!busy || now_ns() >= deadline)
			return busy;
		for (q = 0; q < x->nq; q++)
			if ((busy >> q) & 1 && wr32(x, Q_BASE(q) + Q_FAULT_REPLY, Q_FAULT_REPLY_ABORT))
				return 0;
		usleep(1000);
	}
}

int exec_create(struct ugpu_context *ctx, const struct exec_cfg *cfg, struct exec_engine **out)
{
	struct exec_engine *x;
	uint32_t version = 0, caps = 0, nq = 0;
	pthread_condattr_t ca;
	int ret, i;

	*out = NULL;
	if (!cfg || !cfg->dev || !cfg->vram || (cfg->mem_offset & 4095))
		return -EINVAL;
	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	x->ctx = ctx;
	x->dev = cfg->dev;
	snprintf(x->name, sizeof(x->name), "%s exec", cfg->name ? cfg->name : "device");
	if ((ret = rd32(x, REG_VERSION, &version)) || (ret = rd32(x, REG_CAPS, &caps)))
		goto out_free;
	if ((version >> 16) != 1 || (version & 0xffff) < 1 || !(caps & CAPS_GPUVM) ||
	    !(caps & CAPS_QUEUES)) {
		log_info(ctx, "%s: no exec queues (VERSION 0x%08x, CAPS 0x%x): GPU VMs unsupported",
			 x->name, version, caps);
		ret = -EOPNOTSUPP;
		goto out_free;
	}
	if ((ret = rd32(x, REG_NUM_EXEC_QUEUES, &nq)))
		goto out_free;
	if (!nq || nq > EXEC_MAX_QUEUES) {
		log_err(ctx, "%s: NUM_EXEC_QUEUES reads %u (1 … %u expected)", x->name, nq,
			EXEC_MAX_QUEUES);
		ret = -EIO;
		goto out_free;
	}
	x->nq = nq;
	x->no_atomic = (version & 0xffff) >= 2 && (caps & CAPS_NO_ATOMIC);
	/* The fault ring can only be (re)enabled, and a queue started, while
	 * no queue is busy: end what a previous owner left running. */
	if (quiesce_queues(x, QUIESCE_CREATE_MS)) {
		log_err(ctx, "%s: exec queues still busy with a previous owner's kernels after %d ms",
			x->name, QUIESCE_CREATE_MS);
		ret = -EBUSY;
		goto out_free;
	}
	x->fbuf = calloc(EXEC_FAULT_RING_ENTRIES, sizeof(*x->fbuf));
	x->flaunch = calloc(EXEC_FAULT_RING_ENTRIES, sizeof(*x->flaunch));
	if (!x->fbuf || !x->flaunch) {
		ret = -ENOMEM;
		goto out_free;
	}
	x->mem_offset = cfg->mem_offset;
	x->mem = (char *)cfg->vram + cfg->mem_offset;
	x->fences = (uint64_t *)(x->mem + EXEC_FAULT_RING_ENTRIES * EXEC_FAULT_ENTRY_BYTES);
	for (i = 0; i < 3; i++)
		x->irq_fd[i] = cfg->irq_fd[i];
	pthread_mutex_init(&x->lock, NULL);
	pthread_mutex_init(&x->cb_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&x->cond, &ca);
	pthread_condattr_destroy(&ca);
	x->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (x->stop_fd < 0) {
		ret = -errno;
		goto out_locks;
	}
	pthread_mutex_lock(&x->lock);
	ret = program_locked(x);
	pthread_mutex_unlock(&x->lock);
	if (ret)
		goto out_fd;
	ret = -pthread_create(&x->thread, NULL, exec_thread, x);
	if (ret)
		goto out_fd;
	x->thread_up = true;
	log_info(ctx, "%s: %u exec queues, fault ring of %u entries", x->name, nq,
		 EXEC_FAULT_RING_ENTRIES);
	*out = x;
	return 0;

out_fd:
	close(x->stop_fd);
out_locks:
	pthread_cond_destroy(&x->cond);
	pthread_mutex_destroy(&x->cb_lock);
	pthread_mutex_destroy(&x->lock);
out_free:
	free(x->flaunch);
	free(x->fbuf);
	free(x);
	return ret;
}

void exec_destroy(struct exec_engine *x)
{
	struct exec_end e[EXEC_MAX_QUEUES];
	size_t n;

	if (!x)
		return;
	pthread_mutex_lock(&x->lock);
	x->stop = true;
	pthread_mutex_unlock(&x->lock);
	if (x->thread_up) {
		wake_thread(x);
		pthread_join(x->thread, NULL);
	}
	pthread_mutex_lock(&x->lock);
	n = abandon_locked(x, e, true);
	pthread_mutex_unlock(&x->lock);
	if (n)
		deliver(x, NULL, 0, e, n, false);
	/* Nothing of ours may stay on the device: nobody would answer its
	 * faults any more, and a stalled queue refuses the next owner's
	 * kernels and ring. Then the fault ring off (ignored while busy). */
	if (quiesce_queues(x, QUIESCE_DESTROY_MS))
		log_warn(x->ctx, "%s: exec queues still busy after %d ms", x->name,
			 QUIESCE_DESTROY_MS);
	wr32(x, FR_CTRL, 0);
	close(x->stop_fd);
	pthread_cond_destroy(&x->cond);
	pthread_mutex_destroy(&x->cb_lock);
	pthread_mutex_destroy(&x->lock);
	free(x->flaunch);
	free(x->fbuf);
	free(x);
}

void exec_set_client(struct exec_engine *x, const struct exec_client *c)
{
	pthread_mutex_lock(&x->cb_lock);
	x->has_client = c != NULL;
	if (c)
		x->client = *c;
	else
		memset(&x->client, 0, sizeof(x->client));
	pthread_mutex_unlock(&x->cb_lock);
}

uint32_t exec_num_queues(const struct exec_engine *x)
{
	return x->nq;
}

bool exec_has_no_atomic(const struct exec_engine *x)
{
	return x->no_atomic;
}

int exec_block(struct exec_engine *x, int timeout_ms)
{
	struct timespec dl = monotonic_deadline_after_ms(timeout_ms > 0 ? (uint64_t)timeout_ms : 0);
	int ret = 0;

	pthread_mutex_lock(&x->lock);
	x->blocked++;
	/* Ended, and their ends handed to the client. */
	while ((running_locked(x) || x->inflight || x->nstash) && ret != ETIMEDOUT)
		ret = pthread_cond_timedwait(&x->cond, &x->lock, &dl);
	ret = running_locked(x) || x->inflight || x->nstash ? -ETIMEDOUT : 0;
	pthread_mutex_unlock(&x->lock);
	return ret;
}

void exec_unblock(struct exec_engine *x)
{
	bool wake = false;

	pthread_mutex_lock(&x->lock);
	if (x->blocked && !--x->blocked) {
		x->kick_pending = true;
		wake = true;
	}
	pthread_mutex_unlock(&x->lock);
	if (wake)
		wake_thread(x); /* the client's kick runs on the thread */
}

void exec_abandon(struct exec_engine *x)
{
	struct exec_end e[EXEC_MAX_QUEUES];
	size_t n;

	pthread_mutex_lock(&x->lock);
	n = abandon_locked(x, e, true);
	pthread_mutex_unlock(&x->lock);
	if (n) {
		log_warn(x->ctx, "%s: %zu kernels abandoned", x->name, n);
		deliver(x, NULL, 0, e, n, false);
	}
}

void exec_hw_lost(struct exec_engine *x)
{
	size_t n;
	uint32_t q;

	pthread_mutex_lock(&x->lock);
	/* Delivered by the thread: the caller may hold any lock. (Nothing
	 * runs here in practice: every kernel holds a runtime-PM reference,
	 * and host suspend blocks and drains first. Room for one full set.) */
	if (x->nstash + running_locked(x) > EXEC_MAX_QUEUES) {
		pthread_mutex_unlock(&x->lock);
		log_err(x->ctx, "%s: power lost twice with kernels running before their ends were delivered", x->name);
		pthread_mutex_lock(&x->lock);
	}
	n = x->nstash + running_locked(x) > EXEC_MAX_QUEUES ? 0 : abandon_locked(x, x->stash + x->nstash, false);
	x->nstash += n;
	for (q = 0; q < x->nq; q++)
		x->slot[q].dead = false;
	x->need_program = true;
	pthread_mutex_unlock(&x->lock);
	if (n) {
		log_err(x->ctx, "%s: the device lost its state with %zu kernels running", x->name, n);
		wake_thread(x);
	}
}

uint32_t exec_busy(struct exec_engine *x)
{
	uint32_t n;

	pthread_mutex_lock(&x->lock);
	n = running_locked(x);
	pthread_mutex_unlock(&x->lock);
	return n;
}

void exec_get_stats(struct exec_engine *x, struct exec_stats *st)
{
	pthread_mutex_lock(&x->lock);
	*st = x->st;
	pthread_mutex_unlock(&x->lock);
}
