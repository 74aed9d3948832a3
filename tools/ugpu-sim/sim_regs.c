/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim: BAR0, the register file (reference-device.md "BAR0 registers").
 *
 * Runs on the server thread. Register state lives in the engine/exec structs
 * under dev->lock; writes that must wait for an engine (CTRL.RESET) drop the
 * lock and wait with srv_wait(). 64-bit registers take one 8-byte access or
 * two 4-byte accesses to their halves; an 8-byte access elsewhere is two
 * 4-byte accesses.
 */
#include <errno.h>
#include <string.h>

#include "sim_internal.h"

/* Value of the 64-bit register at @off (8-aligned), if there is one. */
static bool reg64_get(struct sim_dev *dev, uint64_t off, uint64_t *v)
{
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
	switch (off) {
	case REG_VRAM_SIZE:
		*v = dev->vram_size;
		return true;
	case REG_VM_ROOT:
		*v = dev->exec.vm_root;
		return true;
	case REG_EXEC_VA:
		*v = dev->exec.va;
		return true;
	case REG_EXEC_SIZE:
		*v = dev->exec.size;
		return true;
	case REG_EXEC_VALUE:
		*v = dev->exec.value;
		return true;
	case REG_EXEC_RESULT:
		*v = dev->exec.result;
		return true;
	case REG_EXEC_PROGRESS:
		*v = dev->exec.progress;
		return true;
	case REG_FAULT_VA:
		*v = dev->exec.fault_va;
		return true;
	}
	return false;
}

/* Storage of a writable 64-bit register at @off (8-aligned), or NULL. */
static uint64_t *reg64_rw(struct sim_dev *dev, uint64_t off)
{
	if (off >= REG_CE_BASE && off < REG_CE_BASE + SIM_NUM_CE * REG_CE_STRIDE) {
		struct sim_ce *ce = &dev->ce[(off - REG_CE_BASE) / REG_CE_STRIDE];

		return (off - REG_CE_BASE) % REG_CE_STRIDE == CE_RING_BASE ? &ce->ring_base : NULL;
	}
	switch (off) {
	case REG_VM_ROOT:
		return &dev->exec.vm_root;
	case REG_EXEC_VA:
		return &dev->exec.va;
	case REG_EXEC_SIZE:
		return &dev->exec.size;
	case REG_EXEC_VALUE:
		return &dev->exec.value;
	}
	return NULL;
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
		return SIM_VERSION;
	case REG_CAPS:
		return 0x3u | (dev->sim->ndev > 1 ? 0x4u : 0);
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
	case REG_VM_CTRL:
		return dev->exec.vm_ctrl;
	case REG_EXEC_OP:
		return dev->exec.op;
	case REG_EXEC_STATUS:
		return dev->exec.status;
	case REG_FAULT_STATUS:
		return dev->exec.fault_pending ? 1u : 0u;
	case REG_FAULT_ACCESS:
		return dev->exec.fault_access;
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
	if (off >= REG_MSIX_TABLE && off < REG_MSIX_TABLE + sizeof(dev->msix_table)) {
		memcpy(&dev->msix_table[off - REG_MSIX_TABLE], &v, 4);
		return;
	}
	switch (off) {
	case REG_SCRATCH:
		dev->scratch = v;
		break;
	case REG_VM_CTRL:
		dev->exec.vm_ctrl = v & 1u;
		break;
	case REG_TLB_INVAL:
		if (v & 1u)
			vm_tlb_invalidate(dev);
		break;
	case REG_EXEC_OP:
		dev->exec.op = v;
		break;
	case REG_EXEC_START:
		if ((v & 1u) && dev->exec.status != EXEC_RUNNING && dev->exec.status != EXEC_STALLED) {
			dev->exec.status = EXEC_RUNNING;
			dev->exec.progress = 0;
			dev->exec.result = 0;
			dev->exec.start_req = true;
			pthread_cond_broadcast(&dev->exec.cond);
		}
		break;
	case REG_FAULT_REPLY:
		if (dev->exec.fault_pending && (v == 1 || v == 2)) {
			dev->exec.fault_reply = v;
			dev->exec.fault_pending = false;
			pthread_cond_broadcast(&dev->exec.cond);
		}
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
