/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim: GPU virtual memory (4-level page tables in VRAM, a TLB per
 * queue) and the exec queues (reference-device.md "GPU virtual memory and the
 * exec queues").
 *
 * Each queue has a thread that runs its kernel a page at a time. A page is a
 * work item: translation (TLB lookup, table walk) and all register state are
 * under dev->lock; the access to the page itself runs with the lock dropped
 * (q->busy set). A page that faults is set aside and its fault queued
 * (sim_fault.c); the queue goes on with the next page until it has
 * fault_depth() pages aside or nothing else to do, then stalls until a reply.
 * With the 1.0 fault slot the depth is 1, which makes a kernel run in order
 * and stall at its first fault, as the single 1.0 exec engine did. q->gen
 * changes on resets (D3cold exit, device reset): a kernel that sees it change
 * is gone.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sim_internal.h"

enum { TR_OK = 0, TR_FAULT = 1, TR_ERROR = 2 };

#define EXEC_WAIT_MS 1000 /* re-check period of every wait (stop is also signalled) */

void vm_tlb_invalidate(struct sim_queue *q)
{
	memset(q->tlb, 0, sizeof(q->tlb));
}

void exec_kick(struct sim_dev *dev)
{
	for (unsigned i = 0; i < dev->nq; i++)
		pthread_cond_broadcast(&dev->q[i].cond);
}

bool exec_any_busy(struct sim_dev *dev)
{
	for (unsigned i = 0; i < dev->nq; i++)
		if (dev->q[i].busy)
			return true;
	return false;
}

uint64_t exec_busy_mask(struct sim_dev *dev)
{
	uint64_t m = 0;

	for (unsigned i = 0; i < dev->nq; i++)
		if (dev->q[i].status == EXEC_RUNNING || dev->q[i].status == EXEC_STALLED)
			m |= 1ull << i;
	return m;
}

bool exec_any_active(struct sim_dev *dev)
{
	return exec_busy_mask(dev) != 0;
}

void exec_hold(struct sim_dev *dev)
{
	dev->exec_held = true;
	for (unsigned i = 0; i < dev->nq; i++)
		dev->q[i].start_req = false;
}

/* The running kernel's bookkeeping, emptied. */
static void kernel_clear(struct sim_queue *q)
{
	q->naside = 0;
	q->rhead = q->nretry = 0;
	q->wait_room = false;
	q->reply = FAULT_REPLY_NONE;
}

static void queue_reset(struct sim_queue *q)
{
	q->vm_ctrl = 0;
	q->vm_root = 0;
	vm_tlb_invalidate(q);
	q->op = 0;
	q->va = q->size = q->value = 0;
	q->fence_addr = FENCE_NONE;
	q->fence_value = 0;
	q->status = EXEC_IDLE;
	q->result = q->progress = q->seqno = 0;
	q->launch = 0;
	memset(&q->k, 0, sizeof(q->k));
	q->next = 0;
	kernel_clear(q);
	q->start_req = false;
	q->gen++;
	pthread_cond_broadcast(&q->cond);
}

void exec_reset_locked(struct sim_dev *dev)
{
	for (unsigned i = 0; i < dev->nq; i++)
		queue_reset(&dev->q[i]);
	dev->exec_done = 0;
	dev->exec_held = false;
	fault_reset_locked(dev);
}

void exec_start(struct sim_queue *q)
{
	if (q->status == EXEC_RUNNING || q->status == EXEC_STALLED)
		return; /* ignored while running */
	q->k = (struct sim_kernel){ .op = q->op, .va = q->va, .size = q->size, .value = q->value,
				    .fence_addr = q->fence_addr, .fence_value = q->fence_value };
	q->status = EXEC_RUNNING;
	q->progress = 0;
	q->result = 0;
	q->launch++;
	q->next = q->k.va;
	kernel_clear(q);
	q->start_req = true;
	pthread_cond_broadcast(&q->cond);
}

static uint64_t vram_load64(struct sim_dev *dev, uint64_t off)
{
	return __atomic_load_n((uint64_t *)(dev->vram + off), __ATOMIC_ACQUIRE);
}

/* Translate @va for @acc through @q's VM. On TR_OK *pte is the leaf. */
static int vm_translate(struct sim_queue *q, uint64_t va, unsigned acc, uint64_t *pte)
{
	struct sim_dev *dev = q->dev;
	uint64_t vpn = va >> 12, table, e = 0;
	struct sim_tlb_entry *t = &q->tlb[vpn % SIM_TLB_ENTRIES];

	if (t->valid && t->vpn == vpn) {
		e = t->pte;
	} else {
		table = q->vm_root;
		for (int level = 3; level >= 0; level--) {
			unsigned idx = (unsigned)(va >> (12 + 9 * level)) & 511u;

			if ((table & (SIM_PAGE - 1)) || table > dev->vram_size - SIM_PAGE)
				return TR_ERROR;
			e = vram_load64(dev, table + idx * 8ull);
			if (!(e & PTE_VALID))
				return TR_FAULT;
			table = e & PTE_ADDR_MASK;
		}
		t->valid = true;
		t->vpn = vpn;
		t->pte = e;
	}
	if (acc != ACC_READ && !(e & PTE_WRITABLE))
		return TR_FAULT;
	/* 1.2: a leaf may refuse atomics (the driver's atomic policy); 1.1
	 * ignores the bit */
	if (acc == ACC_ATOMIC && (e & PTE_NO_ATOMIC) && dev->sim->opts.version_minor >= 2)
		return TR_FAULT;
	*pte = e;
	return TR_OK;
}

/* Apply the kernel to @n bytes at host pointer @p (8-aligned). */
static void exec_on(uint8_t *p, uint64_t n, uint32_t op, uint64_t value, uint64_t *sum)
{
	uint64_t *w = (uint64_t *)p;

	for (uint64_t i = 0; i < n / 8; i++) {
		switch (op) {
		case EXEC_OP_READ:
			*sum += __atomic_load_n(&w[i], __ATOMIC_RELAXED);
			break;
		case EXEC_OP_WRITE:
			__atomic_store_n(&w[i], value, __ATOMIC_RELAXED);
			break;
		case EXEC_OP_ATOMIC:
			__atomic_fetch_add(&w[i], value, __ATOMIC_RELAXED);
			break;
		}
	}
}

struct exec_args {
	uint8_t *p;
	uint64_t n;
	uint32_t op;
	uint64_t value;
	uint64_t sum;
};

static void exec_fn(void *arg)
{
	struct exec_args *a = arg;

	exec_on(a->p, a->n, a->op, a->value, &a->sum);
}

/* exec_on() under the guard: a SYSTEM leaf reaches a client's window, whose
 * file the client may have truncated. 0 or -EFAULT. */
static int exec_guarded(struct sim_dev *dev, uint8_t *p, uint64_t n, uint32_t op, uint64_t value,
			uint64_t *sum)
{
	struct exec_args a = { .p = p, .n = n, .op = op, .value = value };
	int ret = sim_guard_run(dev, exec_fn, &a);

	*sum += a.sum;
	return ret;
}

/* The kernel ended with @status: the fence (unless @fence is false: its
 * address was bad), EXEC_DONE, the interrupt. */
static void exec_finish(struct sim_queue *q, uint32_t status, bool fence)
{
	struct sim_dev *dev = q->dev;

	q->status = status;
	kernel_clear(q);
	if (fence) {
		q->seqno = q->k.fence_value;
		if (q->k.fence_addr != FENCE_NONE)
			__atomic_store_n((uint64_t *)(dev->vram + q->k.fence_addr), q->k.fence_value,
					 __ATOMIC_RELEASE);
	}
	dev->exec_done |= 1ull << q->idx;
	sim_irq_raise(dev, SIM_IRQ_MSIX, status == EXEC_ERROR ? SIM_VEC_ERROR : SIM_VEC_EXEC);
}

/* Sleep until @ready holds for @q, the kernel is reset away or the device
 * stops; each sleep is bounded and re-checks. */
static void exec_wait(struct sim_queue *q, uint64_t gen, bool (*ready)(struct sim_queue *q))
{
	struct sim_dev *dev = q->dev;

	while (q->gen == gen && !dev->stop && !ready(q)) {
		struct timespec ts;

		sim_deadline(&ts, EXEC_WAIT_MS);
		pthread_cond_timedwait(&q->cond, &dev->lock, &ts);
	}
}

static bool has_reply(struct sim_queue *q)
{
	return q->reply != FAULT_REPLY_NONE;
}

static bool has_room_or_reply(struct sim_queue *q)
{
	return has_reply(q) || fault_has_room(q->dev);
}

static bool dev_runs(struct sim_queue *q)
{
	return sim_dev_running(q->dev) && !q->dev->exec_held;
}

/* A REPLAY: every page set aside is tried again, in fault order. */
static void kernel_replay(struct sim_queue *q)
{
	if (q->rhead) {
		memmove(q->retry, q->retry + q->rhead, (q->nretry - q->rhead) * sizeof(q->retry[0]));
		q->nretry -= q->rhead;
		q->rhead = 0;
	}
	memcpy(q->retry + q->nretry, q->aside, q->naside * sizeof(q->aside[0]));
	q->nretry += q->naside;
	q->naside = 0;
}

/* Touch the page at @va (@n bytes) through leaf @pte. Drops the lock while it
 * accesses the memory. Returns 0, or -EFAULT/-EIO when the kernel must end in
 * error. *sum gets READ's partial sum. */
static int exec_page(struct sim_queue *q, uint64_t va, uint64_t n, uint64_t pte, unsigned acc,
		     uint64_t *sum)
{
	struct sim_dev *dev = q->dev;
	uint32_t op = q->k.op;
	uint64_t value = q->k.value;
	int slot = -1, ret = 0;
	uint8_t buf[SIM_PAGE];
	uint8_t *p = NULL;

	if (pte & PTE_SYSTEM) {
		uint64_t iova = (pte & PTE_ADDR_MASK) + (va & (SIM_PAGE - 1));
		uint32_t prot = acc == ACC_READ ? VFU_DMA_F_READ : VFU_DMA_F_READ | VFU_DMA_F_WRITE;
		struct sim_dma_map *m;

		if (sim_inject_hit(dev, SIM_INJECT_DMA) || dma_check(dev, iova, n, prot))
			return -EFAULT;
		m = dma_find(dev, iova); /* one page lies in one window: they are page-granular */
		slot = inflight_add(dev, iova, n);
		if (!m->host) {
			/* In-band window: bring the page here, apply, write it back. */
			q->busy = true;
			pthread_mutex_unlock(&dev->lock);
			ret = dma_rw(dev, iova, buf, n, false);
			if (!ret) {
				exec_on(buf, n, op, value, sum);
				if (op != EXEC_OP_READ)
					ret = dma_rw(dev, iova, buf, n, true);
			}
			goto out_retire;
		}
		p = m->host + (iova - m->iova);
	} else {
		uint64_t off = (pte & PTE_ADDR_MASK) + (va & (SIM_PAGE - 1));

		if (off > dev->vram_size || n > dev->vram_size - off)
			return -EFAULT;
		p = dev->vram + off;
	}
	q->busy = true;
	pthread_mutex_unlock(&dev->lock);
	if (pte & PTE_SYSTEM)
		ret = exec_guarded(dev, p, n, op, value, sum); /* a client's window */
	else
		exec_on(p, n, op, value, sum); /* VRAM: ours, sealed */
out_retire:
	pthread_mutex_lock(&dev->lock);
	q->busy = false;
	q->pages_done++;
	inflight_del(dev, slot);
	return ret;
}

/* One step of the running kernel: take a reply, or one page. Lock held on
 * entry and exit. Returns false when the kernel ended (or was reset away). */
static bool exec_step(struct sim_queue *q, uint64_t gen)
{
	struct sim_dev *dev = q->dev;
	uint64_t end = q->k.va + q->k.size, va, pte, n, sum = 0;
	unsigned acc = q->k.op == EXEC_OP_READ ? ACC_READ :
		       q->k.op == EXEC_OP_WRITE ? ACC_WRITE : ACC_ATOMIC;
	bool retry;
	int tr;

	if (q->reply == FAULT_REPLY_ABORT) {
		exec_finish(q, EXEC_ABORTED, true);
		return false;
	}
	if (q->reply == FAULT_REPLY_REPLAY) {
		q->reply = FAULT_REPLY_NONE;
		kernel_replay(q);
	}
	if (q->rhead < q->nretry) {
		va = q->retry[q->rhead];
		retry = true;
	} else if (q->next < end && q->naside < fault_depth(dev)) {
		va = q->next;
		retry = false;
	} else if (!q->naside) {
		exec_finish(q, EXEC_DONE, true);
		return false;
	} else {
		/* Every page left is set aside, or as many as may be. */
		q->status = EXEC_STALLED;
		exec_wait(q, gen, has_reply);
		return true;
	}
	q->status = EXEC_RUNNING;
	tr = vm_translate(q, va, acc, &pte);
	if (tr == TR_ERROR) {
		exec_finish(q, EXEC_ERROR, true);
		return false;
	}
	if (tr == TR_FAULT) {
		if (!fault_post(q, va & ~(uint64_t)(SIM_PAGE - 1), acc)) {
			/* The fault queue is full: stall on this page until
			 * there is room (or a reply), then try it again. */
			q->status = EXEC_STALLED;
			q->wait_room = true;
			exec_wait(q, gen, has_room_or_reply);
			q->wait_room = false;
			return true;
		}
		if (retry)
			q->rhead++;
		else
			q->next = (va & ~(uint64_t)(SIM_PAGE - 1)) + SIM_PAGE;
		q->aside[q->naside++] = va;
		return true;
	}
	n = SIM_PAGE - (va & (SIM_PAGE - 1));
	if (n > end - va)
		n = end - va;
	if (retry)
		q->rhead++;
	else
		q->next = va + n;
	if (exec_page(q, va, n, pte, acc, &sum)) {
		if (q->gen == gen)
			exec_finish(q, EXEC_ERROR, true);
		return false;
	}
	if (q->gen != gen)
		return false;
	q->result += sum;
	q->progress += n;
	return true;
}

/* EXEC_START's checks; false ends the kernel in error at once. *fence_ok:
 * FENCE_ADDR may be written. */
static bool kernel_valid(struct sim_queue *q, bool *fence_ok)
{
	const struct sim_kernel *k = &q->k;
	uint64_t fa = k->fence_addr;

	*fence_ok = fa == FENCE_NONE || (!(fa & 7) && fa <= q->dev->vram_size - 8);
	return *fence_ok && (q->vm_ctrl & 1u) && !(k->va & 7) && !(k->size & 7) &&
	       k->op >= EXEC_OP_READ && k->op <= EXEC_OP_ATOMIC && k->va < (1ull << 48) &&
	       k->size <= (1ull << 48) - k->va;
}

static void *exec_thread(void *arg)
{
	struct sim_queue *q = arg;
	struct sim_dev *dev = q->dev;

	pthread_mutex_lock(&dev->lock);
	while (!dev->stop) {
		uint64_t gen;
		bool fence_ok;

		if (!q->start_req || !sim_dev_running(dev)) {
			struct timespec ts;

			sim_deadline(&ts, EXEC_WAIT_MS);
			pthread_cond_timedwait(&q->cond, &dev->lock, &ts);
			continue;
		}
		q->start_req = false;
		gen = q->gen;
		if (!kernel_valid(q, &fence_ok)) {
			exec_finish(q, EXEC_ERROR, fence_ok);
			continue;
		}
		for (;;) {
			/* Halt between pages while the device is in D3, removed,
			 * or about to be reset. */
			exec_wait(q, gen, dev_runs);
			if (q->gen != gen || dev->stop)
				break;
			if (!exec_step(q, gen))
				break;
		}
	}
	pthread_mutex_unlock(&dev->lock);
	return NULL;
}

int exec_init(struct sim_dev *dev)
{
	dev->q = calloc(dev->nq, sizeof(*dev->q));
	if (!dev->q)
		return -ENOMEM;
	for (unsigned i = 0; i < dev->nq; i++) {
		dev->q[i].dev = dev;
		dev->q[i].idx = i;
		sim_cond_init(&dev->q[i].cond);
	}
	exec_reset_locked(dev); /* no thread yet: nothing to lock against */
	return 0;
}

void exec_fini(struct sim_dev *dev)
{
	if (!dev->q)
		return;
	for (unsigned i = 0; i < dev->nq; i++)
		pthread_cond_destroy(&dev->q[i].cond);
	free(dev->q);
	dev->q = NULL;
}

int exec_start_threads(struct sim_dev *dev)
{
	for (unsigned i = 0; i < dev->nq; i++) {
		int ret = sim_thread_create(&dev->q[i].thread, exec_thread, &dev->q[i]);

		if (ret)
			return ret;
		dev->q[i].thread_started = true;
	}
	return 0;
}

void exec_stop_threads(struct sim_dev *dev)
{
	for (unsigned i = 0; i < dev->nq; i++) {
		if (dev->q[i].thread_started) {
			pthread_join(dev->q[i].thread, NULL);
			dev->q[i].thread_started = false;
		}
	}
}
