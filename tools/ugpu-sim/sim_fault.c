/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim: the fault queue (reference-device.md "Page faults"). With the
 * ring on, faults are 32-byte entries appended to a ring in VRAM that the
 * driver consumes in batches (FAULT_PUT/FAULT_GET); with it off (at reset),
 * the 1.0 slot reports one fault at a time in registers. Either way a fault
 * that finds no room is not dropped: fault_post() fails, and the queue stalls
 * on that page until fault_has_room() (sim_vm.c). Replies are per queue.
 *
 * Everything here runs with dev->lock held: by the queue threads posting
 * faults and by the server thread writing registers.
 */
#include <string.h>

#include "sim_internal.h"

void fault_reset_locked(struct sim_dev *dev)
{
	memset(&dev->fring, 0, sizeof(dev->fring));
	memset(&dev->fslot, 0, sizeof(dev->fslot));
}

unsigned fault_depth(struct sim_dev *dev)
{
	return dev->fring.enabled ? SIM_FAULT_DEPTH : 1;
}

bool fault_has_room(struct sim_dev *dev)
{
	if (dev->fring.enabled)
		return dev->fring.put - dev->fring.get < dev->fring.l_size;
	return !dev->fslot.busy;
}

static void vram_store32(struct sim_dev *dev, uint64_t off, uint32_t v, int order)
{
	__atomic_store_n((uint32_t *)(dev->vram + off), v, order);
}

static void vram_store64(struct sim_dev *dev, uint64_t off, uint64_t v)
{
	__atomic_store_n((uint64_t *)(dev->vram + off), v, __ATOMIC_RELAXED);
}

/* Write the entry for count put: every field, then flags (with PHASE) last,
 * so a driver polling PHASE sees a whole entry. */
static void ring_write(struct sim_dev *dev, struct sim_queue *q, uint64_t va, uint32_t acc)
{
	struct sim_fault_ring *r = &dev->fring;
	uint64_t e = r->l_base + (uint64_t)(r->put & (r->l_size - 1)) * SIM_FAULT_ENTRY;
	uint32_t phase = ((r->put / r->l_size) & 1u) ? 0u : 1u;

	vram_store64(dev, e + 0, va);
	vram_store32(dev, e + 8, q->idx, __ATOMIC_RELAXED);
	vram_store32(dev, e + 12, acc, __ATOMIC_RELAXED);
	vram_store32(dev, e + 16, q->launch, __ATOMIC_RELAXED);
	vram_store64(dev, e + 24, 0);
	vram_store32(dev, e + 20, phase, __ATOMIC_RELEASE);
	r->put++;
}

bool fault_post(struct sim_queue *q, uint64_t va, uint32_t acc)
{
	struct sim_dev *dev = q->dev;

	if (!fault_has_room(dev))
		return false;
	if (dev->fring.enabled) {
		ring_write(dev, q, va, acc);
	} else {
		dev->fslot.busy = true;
		dev->fslot.queue = q->idx;
		dev->fslot.va = va;
		dev->fslot.access = acc;
	}
	dev->cnt_faults++;
	sim_irq_raise(dev, SIM_IRQ_MSIX, SIM_VEC_FAULT);
	return true;
}

void fault_reply(struct sim_queue *q, uint32_t v)
{
	struct sim_dev *dev = q->dev;

	if (v == FAULT_REPLY_REPLAY && !q->naside)
		return;
	if (v == FAULT_REPLY_ABORT && !q->naside && !q->wait_room)
		return;
	if (v != FAULT_REPLY_REPLAY && v != FAULT_REPLY_ABORT)
		return;
	if (!dev->fring.enabled && dev->fslot.busy && dev->fslot.queue == q->idx) {
		dev->fslot.busy = false;
		exec_kick(dev); /* a queue may be waiting for the slot */
	}
	if (q->reply != FAULT_REPLY_ABORT)
		q->reply = v;
	/* A REPLAY drops the queue's cached translations itself (as a
	 * TLB_INVAL, without its wait: the pages set aside are not in
	 * flight), so a driver replying after new entries sends one write,
	 * not two (reference-device.md, "Replies"). */
	if (v == FAULT_REPLY_REPLAY)
		vm_tlb_invalidate(q);
	pthread_cond_broadcast(&q->cond);
}

static bool ring_valid(const struct sim_fault_ring *r, uint64_t vram_size)
{
	uint32_t s = r->size;

	return !(r->base & (SIM_PAGE - 1)) && s >= SIM_FAULT_RING_MIN && s <= SIM_FAULT_RING_MAX &&
	       !(s & (s - 1)) && r->base <= vram_size &&
	       (uint64_t)s * SIM_FAULT_ENTRY <= vram_size - r->base;
}

void fault_ring_ctrl(struct sim_dev *dev, uint32_t v)
{
	struct sim_fault_ring *r = &dev->fring;
	bool on = v & FRING_CTRL_ENABLE;

	if (on == r->enabled || exec_any_active(dev))
		return; /* no edge, or a queue runs: ignored */
	if (!on) {
		r->enabled = false;
		return;
	}
	if (!ring_valid(r, dev->vram_size)) {
		r->error = true;
		sim_irq_raise(dev, SIM_IRQ_MSIX, SIM_VEC_ERROR);
		return;
	}
	r->error = false;
	r->enabled = true;
	memset(&dev->fslot, 0, sizeof(dev->fslot)); /* empty: no queue is stalled */
	r->l_base = r->base;
	r->l_size = r->size;
	r->put = r->get = 0;
}

void fault_ring_get(struct sim_dev *dev, uint32_t v)
{
	struct sim_fault_ring *r = &dev->fring;

	if (!r->enabled || v - r->get > r->put - r->get)
		return; /* not between GET and PUT: ignored */
	r->get = v;
	exec_kick(dev); /* queues may be waiting for room */
}
