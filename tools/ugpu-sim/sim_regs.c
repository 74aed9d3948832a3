/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim: BAR0, the register file (reference-device.md "BAR0 registers").
 *
 * Runs on the server thread. Register state lives in the engine, queue and
 * fault-queue structs under dev->lock; writes that must wait for an engine
 * (CTRL.RESET) drop the lock and wait with srv_wait(). 64-bit registers take one 8-byte access or
 * two 4-byte accesses to their halves; an 8-byte access elsewhere is two
 * 4-byte accesses.
 */
#include <errno.h>
#include <string.h>

#include "sim_internal.h"

/* The exec queue register @off belongs to, with its offset in the queue's
 * block in *reg (the 1.0 block is a window onto queue 0); NULL when @off is
 * no queue register, or one of a queue the device does not have. */
static struct sim_queue *queue_of(struct sim_dev *dev, uint64_t off, unsigned *reg)
{
	if (off >= REG_Q0_VM_ALIAS && off < REG_Q0_VM_ALIAS_END) {
		*reg = (unsigned)(off - REG_Q0_VM_ALIAS);
		return &dev->q[0];
	}
	if (off >= REG_Q0_EXEC_ALIAS && off < REG_Q0_EXEC_ALIAS_END) {
		*reg = (unsigned)(off - REG_Q0_EXEC_ALIAS) + Q_EXEC_OP;
		return &dev->q[0];
	}
	if (off < REG_Q_BASE || off >= REG_Q_BASE + (uint64_t)dev->nq * REG_Q_STRIDE)
		return NULL;
	*reg = (unsigned)((off - REG_Q_BASE) % REG_Q_STRIDE);
	return &dev->q[(off - REG_Q_BASE) / REG_Q_STRIDE];
}

/* Storage of queue @q's writable 64-bit register @reg, or NULL. */
static uint64_t *queue_reg64_rw(struct sim_queue *q, unsigned reg)
{
	switch (reg) {
	case Q_VM_ROOT:
		return &q->vm_root;
	case Q_EXEC_VA:
		return &q->va;
	case Q_EXEC_SIZE:
		return &q->size;
	case Q_EXEC_VALUE:
		return &q->value;
	case Q_FENCE_ADDR:
		return &q->fence_addr;
	case Q_FENCE_VALUE:
		return &q->fence_value;
	}
	return NULL;
}

static bool queue_reg64_get(struct sim_queue *q, unsigned reg, uint64_t *v)
{
	uint64_t *rw = queue_reg64_rw(q, reg);

	if (rw) {
		*v = *rw;
		return true;
	}
	switch (reg) {
	case Q_EXEC_RESULT:
		*v = q->result;
		return true;
	case Q_EXEC_PROGRESS:
		*v = q->progress;
		return true;
	case Q_SEQNO:
		*v = q->seqno;
		return true;
	}
	return false;
}

static uint32_t queue_read32(struct sim_queue *q, unsigned reg)
{
	switch (reg) {
	case Q_VM_CTRL:
		return q->vm_ctrl;
	case Q_EXEC_OP:
		return q->op;
	case Q_EXEC_STATUS:
		return q->status;
	case Q_LAUNCH:
		return q->launch;
	case Q_FAULT_PAGES:
		return q->naside;
	}
	return 0;
}

static void queue_write32(struct sim_queue *q, unsigned reg, uint32_t v)
{
	switch (reg) {
	case Q_VM_CTRL:
		q->vm_ctrl = v & 1u;
		break;
	case Q_TLB_INVAL:
		if (v & 1u) {
			vm_tlb_invalidate(q);
			/* The write completes once no access through a dropped
			 * translation is in flight (regs_write waits). */
			q->dev->tlb_wait |= 1ull << q->idx;
			q->tlb_page = q->pages_done;
		}
		break;
	case Q_FAULT_REPLY:
		fault_reply(q, v);
		break;
	case Q_EXEC_OP:
		q->op = v;
		break;
	case Q_EXEC_START:
		if (v & 1u)
			exec_start(q);
		break;
	}
}

/* A 4-byte write of @v to half @hi of FAULT_REPLAY or FAULT_ABORT: @reply
 * to every queue whose bit is set. */
static void queue_mask_write(struct sim_dev *dev, bool hi, uint32_t v, uint32_t reply)
{
	for (unsigned b = 0; b < 32; b++) {
		unsigned n = b + (hi ? 32u : 0u);

		if ((v >> b) & 1u && n < dev->nq)
			fault_reply(&dev->q[n], reply);
	}
}

/* Value of the 64-bit register at @off (8-aligned), if there is one. */
static bool reg64_get(struct sim_dev *dev, uint64_t off, uint64_t *v)
{
	struct sim_queue *q;
	unsigned reg;

	if (off >= REG_CE_BASE && off < REG_CE_BASE + SIM_NUM_CE * REG_CE_STRIDE) {
		struct sim_ce *ce = &dev->ce[(off - REG_CE_BASE) / REG_CE_STRIDE];

		switch ((off - REG_CE_BASE) % REG_CE_STRIDE) {
		case CE_RING_BASE:
			*v = ce->ring_base;
			return true;
		case CE_SEQNO:
			*v = ce->seqno;
			return true;
		}
		return false;
	}
	q = queue_of(dev, off, &reg);
	if (q)
		return queue_reg64_get(q, reg, v);
	switch (off) {
	case REG_VRAM_SIZE:
		*v = dev->vram_size;
		return true;
	case REG_FABRIC_UID:
		*v = dev->sim->fabric_uid;
		return true;
	case REG_FAULT_VA:
		*v = dev->fslot.va;
		return true;
	case REG_FAULT_RING_BASE:
		*v = dev->fring.base;
		return true;
	case REG_EXEC_DONE:
		*v = dev->exec_done;
		return true;
	case REG_EXEC_BUSY:
		*v = exec_busy_mask(dev);
		return true;
	}
	return false;
}

/* Storage of a writable 64-bit register at @off (8-aligned), or NULL. */
static uint64_t *reg64_rw(struct sim_dev *dev, uint64_t off)
{
	struct sim_queue *q;
	unsigned reg;

	if (off >= REG_CE_BASE && off < REG_CE_BASE + SIM_NUM_CE * REG_CE_STRIDE) {
		struct sim_ce *ce = &dev->ce[(off - REG_CE_BASE) / REG_CE_STRIDE];

		return (off - REG_CE_BASE) % REG_CE_STRIDE == CE_RING_BASE ? &ce->ring_base : NULL;
	}
	q = queue_of(dev, off, &reg);
	if (q)
		return queue_reg64_rw(q, reg);
	return off == REG_FAULT_RING_BASE ? &dev->fring.base : NULL;
}

static uint32_t fabric_mask(struct sim_dev *dev, bool fast_only)
{
	uint32_t m = 0;

	for (unsigned n = 0; n < dev->sim->ndev; n++) {
		if (n == dev->id)
			continue;
		if (fast_only && fabric_is_slow(dev, n))
			continue;
		m |= 1u << n;
	}
	return m;
}

static uint32_t read32(struct sim_dev *dev, uint64_t off)
{
	struct sim_queue *q;
	unsigned reg;
	uint64_t v64;

	if (reg64_get(dev, off & ~7ull, &v64))
		return (off & 4) ? (uint32_t)(v64 >> 32) : (uint32_t)v64;
	if (off >= REG_CE_BASE && off < REG_CE_BASE + SIM_NUM_CE * REG_CE_STRIDE) {
		struct sim_ce *ce = &dev->ce[(off - REG_CE_BASE) / REG_CE_STRIDE];

		switch ((off - REG_CE_BASE) % REG_CE_STRIDE) {
		case CE_RING_SIZE:
			return ce->ring_size;
		case CE_RING_HEAD:
			return ce->head;
		case CE_RING_TAIL:
			return ce->tail;
		case CE_CTRL:
			return ce->enabled ? CE_CTRL_ENABLE : 0;
		case CE_STATUS:
			return ce_status(ce);
		case CE_ERROR:
			return ce->error_code;
		case CE_ERROR_HEAD:
			return ce->error_head;
		}
		return 0;
	}
	q = queue_of(dev, off, &reg);
	if (q)
		return queue_read32(q, reg);
	if (off >= REG_MSIX_TABLE && off < REG_MSIX_TABLE + sizeof(dev->msix_table)) {
		uint32_t v;

		memcpy(&v, &dev->msix_table[off - REG_MSIX_TABLE], 4);
		return v;
	}
	if (off == REG_MSIX_PBA) {
		uint32_t v = 0;

		for (unsigned i = 0; i < SIM_MSIX_VECTORS; i++)
			if (dev->irq_pending[2][i])
				v |= 1u << i;
		return v;
	}
	switch (off) {
	case REG_ID:
		return SIM_ID;
	case REG_VERSION:
		return SIM_VERSION_MAJOR | dev->sim->opts.version_minor;
	case REG_CAPS:
		return 0x3u | SIM_CAPS_QUEUES | (dev->sim->ndev > 1 ? 0x4u : 0) |
		       (dev->sim->opts.version_minor >= 2 ? SIM_CAPS_NO_ATOMIC : 0) |
		       (dev->sim->opts.version_minor >= 3 ? SIM_CAPS_COPY_SUM : 0) |
		       (dev->sim->opts.version_minor >= 4 ? SIM_CAPS_COPY_LIST : 0);
	case REG_NUM_ENGINES:
		return SIM_NUM_CE;
	case REG_FABRIC_ID:
		return dev->id;
	case REG_FABRIC_PEERS:
		return fabric_mask(dev, false);
	case REG_FABRIC_FAST:
		return fabric_mask(dev, true);
	case REG_SCRATCH:
		return dev->scratch;
	case REG_NUM_EXEC_QUEUES:
		return dev->nq;
	case REG_FAULT_STATUS:
		return dev->fslot.busy ? 1u : 0u;
	case REG_FAULT_ACCESS:
		return dev->fslot.access;
	case REG_FAULT_QUEUE:
		return dev->fslot.queue;
	case REG_FAULT_RING_SIZE:
		return dev->fring.size;
	case REG_FAULT_RING_CTRL:
		return dev->fring.enabled ? FRING_CTRL_ENABLE : 0;
	case REG_FAULT_RING_STATUS:
		return (dev->fring.enabled ? FRING_STATUS_ENABLED : 0) |
		       (dev->fring.error ? FRING_STATUS_ERROR : 0);
	case REG_FAULT_PUT:
		return dev->fring.put;
	case REG_FAULT_GET:
		return dev->fring.get;
	case REG_FAULT_DEPTH:
		return SIM_FAULT_DEPTH;
	}
	return 0;
}

static bool ring_valid(const struct sim_ce *ce, uint64_t vram_size)
{
	uint32_t s = ce->ring_size;

	return !(ce->ring_base & (SIM_PAGE - 1)) && s >= 4096 && s <= (1u << 20) && !(s & (s - 1)) &&
	       ce->ring_base <= vram_size && s <= vram_size - ce->ring_base;
}

static void ce_fail_locked(struct sim_dev *dev, struct sim_ce *ce, uint32_t code)
{
	ce->error = true;
	ce->error_code = code;
	ce->error_head = ce->head;
	sim_irq_raise(dev, SIM_IRQ_MSIX, SIM_VEC_ERROR);
}

static bool ces_quiet(struct sim_dev *dev)
{
	return !ce_any_busy(dev);
}

/* Returns true when the caller must reset engine @ce after waiting for it. */
static bool ce_write32(struct sim_dev *dev, struct sim_ce *ce, uint64_t reg, uint32_t v)
{
	switch (reg) {
	case CE_RING_SIZE:
		ce->ring_size = v;
		break;
	case CE_RING_TAIL:
		if (!ce->enabled)
			break; /* no ring latched: dropped */
		if (ce->error)
			break; /* stopped until RESET */
		if (v >= ce->l_size || (v & 63)) {
			ce_fail_locked(dev, ce, SIM_ERR_BOUNDS);
			break;
		}
		ce->tail = v;
		pthread_cond_signal(&ce->cond);
		break;
	case CE_CTRL:
		if (v & CE_CTRL_RESET) {
			ce->enabled = false;
			return true;
		}
		if ((v & CE_CTRL_ENABLE) && !ce->enabled) {
			ce->enabled = true;
			ce->head = ce->tail = 0;
			ce->l_base = ce->ring_base;
			ce->l_size = ce->ring_size;
			if (!ring_valid(ce, dev->vram_size)) {
				ce->l_size = 0;
				ce_fail_locked(dev, ce, SIM_ERR_BOUNDS);
			}
		} else if (!(v & CE_CTRL_ENABLE)) {
			ce->enabled = false;
		}
		break;
	}
	return false;
}

static void write32(struct sim_dev *dev, uint64_t off, uint32_t v, int *reset_ce)
{
	uint64_t *r64 = reg64_rw(dev, off & ~7ull);
	struct sim_queue *q;
	unsigned reg;

	if (r64) {
		if (off & 4)
			*r64 = (*r64 & 0xffffffffull) | ((uint64_t)v << 32);
		else
			*r64 = (*r64 & ~0xffffffffull) | v;
		return;
	}
	if (off >= REG_CE_BASE && off < REG_CE_BASE + SIM_NUM_CE * REG_CE_STRIDE) {
		unsigned idx = (unsigned)((off - REG_CE_BASE) / REG_CE_STRIDE);

		if (ce_write32(dev, &dev->ce[idx], (off - REG_CE_BASE) % REG_CE_STRIDE, v))
			*reset_ce |= 1 << idx;
		return;
	}
	q = queue_of(dev, off, &reg);
	if (q) {
		queue_write32(q, reg, v);
		return;
	}
	if (off >= REG_MSIX_TABLE && off < REG_MSIX_TABLE + sizeof(dev->msix_table)) {
		memcpy(&dev->msix_table[off - REG_MSIX_TABLE], &v, 4);
		return;
	}
	switch (off) {
	case REG_SCRATCH:
		dev->scratch = v;
		break;
	case REG_FAULT_REPLY:
		if (dev->fslot.busy)
			fault_reply(&dev->q[dev->fslot.queue], v);
		break;
	case REG_FAULT_RING_SIZE:
		dev->fring.size = v;
		break;
	case REG_FAULT_RING_CTRL:
		fault_ring_ctrl(dev, v);
		break;
	case REG_FAULT_GET:
		fault_ring_get(dev, v);
		break;
	case REG_FAULT_REPLAY:
	case REG_FAULT_REPLAY + 4:
		queue_mask_write(dev, off & 4, v, FAULT_REPLY_REPLAY);
		break;
	case REG_FAULT_ABORT:
	case REG_FAULT_ABORT + 4:
		queue_mask_write(dev, off & 4, v, FAULT_REPLY_ABORT);
		break;
	case REG_EXEC_DONE:
	case REG_EXEC_DONE + 4:
		dev->exec_done &= ~((uint64_t)v << ((off & 4) ? 32 : 0));
		break;
	}
}

static bool bar0_access_ok(uint64_t off, size_t len)
{
	return (len == 4 || len == 8) && !(off & (len - 1)) && off < SIM_BAR0_SIZE &&
	       len <= SIM_BAR0_SIZE - off;
}

int regs_read(struct sim_dev *dev, uint64_t off, void *buf, size_t len)
{
	uint64_t v;

	if (!bar0_access_ok(off, len))
		return -EINVAL;
	pthread_mutex_lock(&dev->lock);
	if (dev->power != SIM_POWER_D0 || !pci_mem_enabled(dev)) {
		v = ~0ull; /* D3 (or memory decode off): the bus returns all-ones */
	} else if (len == 8) {
		if (!reg64_get(dev, off, &v))
			v = read32(dev, off) | ((uint64_t)read32(dev, off + 4) << 32);
	} else {
		v = read32(dev, off);
	}
	pthread_mutex_unlock(&dev->lock);
	memcpy(buf, &v, len);
	return 0;
}

/* The queues a TLB_INVAL named are done with the page they were on when it
 * was written (later pages use the new translations). Lock held. */
static bool tlb_quiet(struct sim_dev *dev)
{
	for (unsigned i = 0; i < dev->nq; i++)
		if ((dev->tlb_wait & (1ull << i)) && dev->q[i].busy &&
		    dev->q[i].pages_done == dev->q[i].tlb_page)
			return false;
	return true;
}

int regs_write(struct sim_dev *dev, uint64_t off, const void *buf, size_t len)
{
	uint64_t v = 0;
	int reset_ce = 0;

	if (!bar0_access_ok(off, len))
		return -EINVAL;
	memcpy(&v, buf, len);
	pthread_mutex_lock(&dev->lock);
	if (dev->power != SIM_POWER_D0 || !pci_mem_enabled(dev)) {
		pthread_mutex_unlock(&dev->lock);
		return 0; /* dropped */
	}
	if (len == 8) {
		uint64_t *r64 = reg64_rw(dev, off);

		if (r64) {
			*r64 = v;
		} else {
			write32(dev, off, (uint32_t)v, &reset_ce);
			write32(dev, off + 4, (uint32_t)(v >> 32), &reset_ce);
		}
	} else {
		write32(dev, off, (uint32_t)v, &reset_ce);
	}
	pthread_mutex_unlock(&dev->lock);

	if (dev->tlb_wait) {
		/* TLB_INVAL: the page a queue is on may use a dropped
		 * translation; the invalidation is done when it is not. */
		srv_wait(dev, tlb_quiet, 10000);
		pthread_mutex_lock(&dev->lock);
		dev->tlb_wait = 0;
		pthread_mutex_unlock(&dev->lock);
	}
	if (reset_ce) {
		/* RESET stops the engine: let the descriptor it is on finish (ENABLE
		 * is already clear, so it picks up no other), then clear it. */
		srv_wait(dev, ces_quiet, 10000);
		pthread_mutex_lock(&dev->lock);
		for (unsigned i = 0; i < SIM_NUM_CE; i++)
			if (reset_ce & (1 << i))
				ce_reset_locked(&dev->ce[i], false);
		pthread_mutex_unlock(&dev->lock);
	}
	return 0;
}
