/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim: GPU virtual memory (4-level page tables in VRAM, a TLB) and the
 * exec engine with its single-entry fault queue.
 *
 * The exec thread runs one kernel a page at a time. Translation (TLB lookup,
 * table walk) and all register state are under dev->lock; the access to the
 * page itself runs with the lock dropped (exec.busy set). A missing or
 * read-only leaf stalls the kernel: the fault is queued (vector 3) and the
 * thread sleeps until FAULT_REPLY. exec.gen changes on resets (D3cold exit,
 * device reset): a kernel that sees it change is gone.
 */
#include <errno.h>
#include <string.h>

#include "sim_internal.h"

enum { ACC_READ = 0, ACC_WRITE = 1, ACC_ATOMIC = 2 };
enum { TR_OK = 0, TR_FAULT = 1, TR_ERROR = 2 };

void vm_tlb_invalidate(struct sim_dev *dev)
{
	memset(dev->exec.tlb, 0, sizeof(dev->exec.tlb));
}

void exec_kick(struct sim_dev *dev)
{
	pthread_cond_broadcast(&dev->exec.cond);
}

void exec_reset_locked(struct sim_dev *dev)
{
	struct sim_exec *x = &dev->exec;

	x->vm_ctrl = 0;
	x->vm_root = 0;
	vm_tlb_invalidate(dev);
	x->op = 0;
	x->va = x->size = x->value = 0;
	x->status = EXEC_IDLE;
	x->result = x->progress = 0;
	x->start_req = false;
	x->fault_pending = false;
	x->fault_va = 0;
	x->fault_access = 0;
	x->fault_reply = 0;
	x->gen++;
	pthread_cond_broadcast(&x->cond);
}

static uint64_t vram_load64(struct sim_dev *dev, uint64_t off)
{
	return __atomic_load_n((uint64_t *)(dev->vram + off), __ATOMIC_ACQUIRE);
}

/* Translate @va for @acc. Lock held. On TR_OK *pte is the leaf. */
static int vm_translate(struct sim_dev *dev, uint64_t va, unsigned acc, uint64_t *pte)
{
	struct sim_exec *x = &dev->exec;
	uint64_t vpn = va >> 12, table, e = 0;
	struct sim_tlb_entry *t = &x->tlb[vpn % SIM_TLB_ENTRIES];

	if (t->valid && t->vpn == vpn) {
		e = t->pte;
	} else {
		table = x->vm_root;
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

static void exec_finish(struct sim_dev *dev, uint32_t status)
{
	dev->exec.status = status;
	sim_irq_raise(dev, SIM_IRQ_MSIX, status == EXEC_ERROR ? SIM_VEC_ERROR : SIM_VEC_EXEC);
}

/* One page of the running kernel. Lock held on entry and exit. Returns false
 * when the kernel ended (or was reset away). */
static bool exec_step(struct sim_dev *dev, uint64_t gen)
{
	struct sim_exec *x = &dev->exec;
	uint64_t va = x->va + x->progress, pte, n, sum = 0;
	unsigned acc = x->op == EXEC_OP_READ ? ACC_READ : x->op == EXEC_OP_WRITE ? ACC_WRITE : ACC_ATOMIC;
	uint32_t op = x->op;
	uint64_t value = x->value;
	int tr, slot = -1, ret = 0;
	uint8_t buf[SIM_PAGE];
	uint8_t *p = NULL;

	tr = vm_translate(dev, va, acc, &pte);
	if (tr == TR_ERROR) {
		exec_finish(dev, EXEC_ERROR);
		return false;
	}
	if (tr == TR_FAULT) {
		x->fault_pending = true;
		x->fault_va = va & ~(uint64_t)(SIM_PAGE - 1);
		x->fault_access = acc;
		x->fault_reply = 0;
		x->status = EXEC_STALLED;
		dev->cnt_faults++;
		sim_irq_raise(dev, SIM_IRQ_MSIX, SIM_VEC_FAULT);
		while (!x->fault_reply && x->gen == gen && !dev->stop) {
			struct timespec ts;

			sim_deadline(&ts, 1000);
			pthread_cond_timedwait(&x->cond, &dev->lock, &ts);
		}
		if (x->gen != gen || dev->stop)
			return false;
		if (x->fault_reply == 2) {
			x->fault_reply = 0;
			exec_finish(dev, EXEC_ABORTED);
			return false;
		}
		x->fault_reply = 0;
		x->status = EXEC_RUNNING;
		return true; /* replay: translate again */
	}
	n = SIM_PAGE - (va & (SIM_PAGE - 1));
	if (n > x->size - x->progress)
		n = x->size - x->progress;
	if (pte & PTE_SYSTEM) {
		uint64_t iova = (pte & PTE_ADDR_MASK) + (va & (SIM_PAGE - 1));
		uint32_t prot = acc == ACC_READ ? VFU_DMA_F_READ : VFU_DMA_F_READ | VFU_DMA_F_WRITE;
		struct sim_dma_map *m;

		if (sim_inject_hit(dev, SIM_INJECT_DMA) || dma_check(dev, iova, n, prot)) {
			exec_finish(dev, EXEC_ERROR);
			return false;
		}
		m = dma_find(dev, iova); /* one page lies in one window: they are page-granular */
		slot = inflight_add(dev, iova, n);
		if (m->host) {
			p = m->host + (iova - m->iova);
		} else {
			/* In-band window: bring the page here, apply, write it back. */
			x->busy = true;
			pthread_mutex_unlock(&dev->lock);
			ret = dma_rw(dev, iova, buf, n, false);
			if (!ret) {
				exec_on(buf, n, op, value, &sum);
				if (op != EXEC_OP_READ)
					ret = dma_rw(dev, iova, buf, n, true);
			}
			pthread_mutex_lock(&dev->lock);
			goto out_retire;
		}
	} else {
		uint64_t off = (pte & PTE_ADDR_MASK) + (va & (SIM_PAGE - 1));

		if (off > dev->vram_size || n > dev->vram_size - off) {
			exec_finish(dev, EXEC_ERROR);
			return false;
		}
		p = dev->vram + off;
	}
	x->busy = true;
	pthread_mutex_unlock(&dev->lock);
	ret = exec_guarded(dev, p, n, op, value, &sum);
	pthread_mutex_lock(&dev->lock);
out_retire:
	x->busy = false;
	inflight_del(dev, slot);
	if (x->gen != gen)
		return false;
	if (ret) {
		exec_finish(dev, EXEC_ERROR);
		return false;
	}
	x->result += sum;
	x->progress += n;
	if (x->progress >= x->size) {
		exec_finish(dev, EXEC_DONE);
		return false;
	}
	return true;
}

static void *exec_thread(void *arg)
{
	struct sim_dev *dev = arg;
	struct sim_exec *x = &dev->exec;

	pthread_mutex_lock(&dev->lock);
	while (!dev->stop) {
		uint64_t gen;

		if (!x->start_req || !sim_dev_running(dev)) {
			struct timespec ts;

			sim_deadline(&ts, 1000);
			pthread_cond_timedwait(&x->cond, &dev->lock, &ts);
			continue;
		}
		x->start_req = false;
		gen = x->gen;
		if (!(x->vm_ctrl & 1u) || (x->va & 7) || (x->size & 7) ||
		    x->op < EXEC_OP_READ || x->op > EXEC_OP_ATOMIC || x->va >= (1ull << 48) ||
		    x->size > (1ull << 48) - x->va) {
			exec_finish(dev, EXEC_ERROR);
			continue;
		}
		if (!x->size) {
			exec_finish(dev, EXEC_DONE);
			continue;
		}
		for (;;) {
			/* Halt between pages while the device is in D3 or removed. */
			while (x->gen == gen && !dev->stop && !sim_dev_running(dev)) {
				struct timespec ts;

				sim_deadline(&ts, 1000);
				pthread_cond_timedwait(&x->cond, &dev->lock, &ts);
			}
			if (x->gen != gen || dev->stop)
				break;
			if (!exec_step(dev, gen))
				break;
		}
	}
	pthread_mutex_unlock(&dev->lock);
	return NULL;
}

int exec_start_thread(struct sim_dev *dev)
{
	int ret = sim_thread_create(&dev->exec.thread, exec_thread, dev);

	if (ret)
		return ret;
	dev->exec.thread_started = true;
	return 0;
}

void exec_stop_thread(struct sim_dev *dev)
{
	if (dev->exec.thread_started) {
		pthread_join(dev->exec.thread, NULL);
		dev->exec.thread_started = false;
	}
}
