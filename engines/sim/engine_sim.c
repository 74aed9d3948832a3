/* SPDX-License-Identifier: MIT */
/*
 * The sim engine: drives one copy engine of the reference device
 * (docs/reference-device.md, "Copy engine n").
 *
 * The ring and a fence page live in VRAM the caller reserved
 * (cfg.ring_offset: ring_size bytes of ring, then 4 KiB of fence page).
 * Descriptors are written through the VRAM BAR mapping; the doorbell is a
 * BAR0 RING_TAIL write. Every fence handed out is a FENCE descriptor that
 * writes its seqno to the fence page and raises the engine's MSI-X vector, so
 * completion is a memory read and sleeping is a poll() on an eventfd; the
 * SEQNO register is the fallback when the fence page cannot be trusted (e.g.
 * VRAM poisoned by D3cold).
 *
 * Errors: the device stops on a failing descriptor and raises the shared
 * error vector (2). Two engines share that vector, so this backend does not
 * claim it: a waiter whose poll slice passes without progress reads STATUS
 * (one register read per slice), which bounds error detection to one slice.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "engines/engine.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/refdev.h"
#include "base/test_point.h"
#include "vfio/transport.h"

/* Copy engine registers (BAR0), docs/reference-device.md. */
#define CE_BASE(n) (0x1000u + (n) * 0x100u)
#define CE_RING_BASE 0x00
#define CE_RING_SIZE 0x08
#define CE_RING_HEAD 0x0c
#define CE_RING_TAIL 0x10
#define CE_CTRL 0x14
#define CE_CTRL_ENABLE (1u << 0)
#define CE_CTRL_RESET (1u << 1)
#define CE_STATUS 0x18
#define CE_STATUS_IDLE (1u << 0)
#define CE_STATUS_ERROR (1u << 1)
#define CE_STATUS_ENABLED (1u << 2)
#define CE_ERROR 0x1c
#define CE_ERROR_HEAD 0x20
#define CE_SEQNO 0x28

#define CE_NUM_MAX 2
#define CE_RING_MIN 4096u
#define CE_RING_MAX (1u << 20)
#define CE_DESC_MAX_SIZE (1ull << 30)
#define CE_FENCE_PAGE 4096u

enum { OP_NOP = 0, OP_COPY = 1, OP_FILL = 2, OP_FENCE = 3, OP_COPY_SUM = 4, OP_COPY_LIST = 5 };
#define FENCE_F_IRQ (1u << 0)
#define FENCE_NO_WRITE (~0ull)

struct ce_desc {
	uint32_t opcode;
	uint32_t flags;
	uint64_t src;
	uint64_t dst;
	uint64_t size;
	uint64_t value;
	uint32_t src_space;
	uint32_t dst_space;
	uint32_t src_peer;
	uint32_t dst_peer;
	uint64_t reserved;
};
_Static_assert(sizeof(struct ce_desc) == 64, "descriptor is 64 bytes");
#define DESC_SIZE ((uint32_t)sizeof(struct ce_desc))

/* COPY_LIST (1.4): its entries follow it in the ring, two a slot. */
struct ce_list_entry {
	uint64_t src;
	uint64_t dst;
	uint64_t size;
	uint64_t reserved;
};
_Static_assert(sizeof(struct ce_list_entry) * 2 == sizeof(struct ce_desc), "two entries a slot");
#define CE_LIST_MAX 1024u /* the device's bound on entries */
#define CE_LIST_NO_SUM (~0ull)

/* Slice of a wait between STATUS checks; a fence irq ends it early. */
#define WAIT_SLICE_MS 2

/*
 * struct sim_engine - backend state.
 *
 * Locking: @lock protects the submission side (@tail, @head, ring writes and
 * the doorbell) and the error/reset state (@failed, @lost_upto, @error_logged,
 * @submitted). It is never held across a sleep: back-pressure and waits drop
 * it. @completed is read and raised (never lowered except by reset, under
 * @lock) with atomics so waiters poll without the lock. @efd may be read by
 * several waiters; one consumes a wakeup and the others finish their slice.
 */
struct sim_engine {
	pthread_mutex_t lock;
	struct vfio_dev *dev;
	uint32_t regs; /* BAR0 offset of this engine's registers */
	char *map; /* our mapping of ring + fence page, or NULL if cfg.vram */
	size_t map_len;
	char *ring;
	uint64_t *fence_page; /* first 8 bytes of the fence page */
	uint64_t fence_off; /* VRAM offset of the fence page */
	/* The sum slots after the fence page (ENGINE_SUM_AREA): @nsums of
	 * them when the device has COPY_SUM, else 0. Written by the device,
	 * read by sim_sums() after the copy's fence (no lock). */
	const uint8_t *sums;
	uint64_t sums_off;
	uint32_t nsums;
	uint32_t list_max; /* entries of a COPY_LIST (CAPS bit 6), else 0 */
	uint32_t ring_size;
	uint64_t tail; /* bytes written since the last reset (not wrapped) */
	uint64_t head; /* bytes known consumed by the engine (not wrapped) */
	uint64_t submitted; /* last fence handed out */
	uint64_t completed; /* atomic: highest fence known complete */
	uint64_t lost_upto; /* fences in (completed, lost_upto] died with an error */
	uint64_t fence_tail; /* @tail right after the last FENCE descriptor */
	uint64_t rung; /* @tail as of the last doorbell */
	uint64_t rerung; /* @rung as last rung again by recover_doorbell() */
	unsigned plugged; /* engine_plug() depth: doorbells are deferred */
	/* Ring position after each fence not yet known complete, to advance
	 * @head without reading RING_HEAD. Indexed by seqno % @nslots. */
	uint64_t *fence_pos;
	uint32_t nslots;
	bool failed; /* STATUS.ERROR seen; nothing runs until reset */
	bool error_logged;
	int efd; /* eventfd on MSI-X vector cfg.index */
};

static struct sim_engine *se(struct engine *e)
{
	return e->priv;
}

static int kick(struct engine *e);
static void head_from_fences(struct sim_engine *s);

static int reg_read32(struct engine *e, uint32_t reg, uint32_t *v)
{
	struct sim_engine *s = se(e);

	return s->dev->ops->region_read(s->dev, VFIO_REGION_BAR0, s->regs + reg, v, 4);
}

static int reg_write32(struct engine *e, uint32_t reg, uint32_t v)
{
	struct sim_engine *s = se(e);

	return s->dev->ops->region_write(s->dev, VFIO_REGION_BAR0, s->regs + reg, &v, 4);
}

static int reg_read64(struct engine *e, uint32_t reg, uint64_t *v)
{
	struct sim_engine *s = se(e);

	return s->dev->ops->region_read(s->dev, VFIO_REGION_BAR0, s->regs + reg, v, 8);
}

static int reg_write64(struct engine *e, uint32_t reg, uint64_t v)
{
	struct sim_engine *s = se(e);

	return s->dev->ops->region_write(s->dev, VFIO_REGION_BAR0, s->regs + reg, &v, 8);
}

static void sleep_us(long us)
{
	struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000 };

	nanosleep(&ts, NULL);
}

static const char *op_name(uint32_t op)
{
	switch (op) {
	case OP_NOP:
		return "NOP";
	case OP_COPY:
		return "COPY";
	case OP_COPY_SUM:
		return "COPY_SUM";
	case OP_COPY_LIST:
		return "COPY_LIST";
	case OP_FILL:
		return "FILL";
	case OP_FENCE:
		return "FENCE";
	}
	return "UNKNOWN";
}

static const char *err_name(uint32_t code)
{
	static const char *const names[] = { "none", "ERR_OPCODE", "ERR_BOUNDS", "ERR_DMA",
					     "ERR_PEER", "ERR_INJECTED" };

	return code < sizeof(names) / sizeof(names[0]) ? names[code] : "ERR_UNKNOWN";
}

static const char *space_name(uint32_t space)
{
	return space <= ENGINE_PEER ? engine_space_name((enum engine_space)space) : "?";
}

/* --- completion -------------------------------------------------------------- */

static uint64_t completed_get(struct sim_engine *s)
{
	return __atomic_load_n(&s->completed, __ATOMIC_ACQUIRE);
}

static void completed_raise(struct sim_engine *s, uint64_t v)
{
	uint64_t cur = completed_get(s);

	while (v > cur && !__atomic_compare_exchange_n(&s->completed, &cur, v, false,
						       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		;
}

/* Read the fence page. A value above what we handed out is not ours (VRAM
 * lost its contents): ignore it. @limit is a snapshot of @submitted. */
static uint64_t fence_page_poll(struct sim_engine *s, uint64_t limit)
{
	uint64_t v = __atomic_load_n(s->fence_page, __ATOMIC_ACQUIRE);

	if (v <= limit)
		completed_raise(s, v);
	return completed_get(s);
}

/* Decode the failing descriptor into one log line. Called with @lock held
 * once STATUS.ERROR was seen. */
static void report_error(struct engine *e)
{
	struct sim_engine *s = se(e);
	uint32_t code = 0, at = 0;
	struct ce_desc d;
	uint64_t seqno = 0;

	s->failed = true;
	if (reg_read64(e, CE_SEQNO, &seqno) == 0 && seqno <= s->submitted)
		completed_raise(s, seqno);
	/* Everything after the failing descriptor is dropped by the reset. */
	__atomic_store_n(&s->lost_upto, s->submitted, __ATOMIC_RELEASE);
	if (s->error_logged)
		return;
	s->error_logged = true;
	reg_read32(e, CE_ERROR, &code);
	reg_read32(e, CE_ERROR_HEAD, &at);
	at &= (s->ring_size - 1) & ~(DESC_SIZE - 1);
	memcpy(&d, s->ring + at, sizeof(d));
	switch (d.opcode) {
	case OP_COPY:
	case OP_COPY_SUM:
		log_err(e->ctx,
			"engine %s: %s src=%s%s0x%" PRIx64 " dst=%s%s0x%" PRIx64 " size=0x%" PRIx64
			" failed: %s (%u) at ring offset 0x%x",
			e->name, op_name(d.opcode), space_name(d.src_space),
			d.src_space == ENGINE_PEER ? ":" : " ",
			d.src, space_name(d.dst_space), d.dst_space == ENGINE_PEER ? ":" : " ",
			d.dst, d.size, err_name(code), code, at);
		break;
	case OP_FILL:
		log_err(e->ctx,
			"engine %s: FILL dst=%s 0x%" PRIx64 " size=0x%" PRIx64 " pattern=0x%" PRIx64
			" failed: %s (%u) at ring offset 0x%x",
			e->name, space_name(d.dst_space), d.dst, d.size, d.value, err_name(code), code,
			at);
		break;
	case OP_COPY_LIST:
		log_err(e->ctx,
			"engine %s: COPY_LIST of %" PRIu64 " entries %s -> %s sums=0x%" PRIx64
			" failed: %s (%u) at ring offset 0x%x",
			e->name, d.size, space_name(d.src_space), space_name(d.dst_space), d.value,
			err_name(code), code, at);
		break;
	case OP_FENCE:
		log_err(e->ctx,
			"engine %s: FENCE seqno=%" PRIu64 " dst=0x%" PRIx64
			" failed: %s (%u) at ring offset 0x%x",
			e->name, d.value, d.dst, err_name(code), code, at);
		break;
	default:
		log_err(e->ctx, "engine %s: %s (opcode %u) failed: %s (%u) at ring offset 0x%x",
			e->name, op_name(d.opcode), d.opcode, err_name(code), code, at);
		break;
	}
	log_err(e->ctx, "engine %s: stopped on that error; fences %" PRIu64 "..%" PRIu64
		" are lost until reset", e->name, completed_get(s) + 1, s->submitted);
}

/*
 * A posted doorbell the device dropped: it takes no write while it cannot
 * (in D3hot, with memory decoding off: its ring stays latched, the write
 * is lost as a PCI device loses a posted write it cannot take), so the
 * device's RING_TAIL is not the one we rang. Rung again, waiting for the
 * device this time so that an error is seen. Reads are ordered after our
 * earlier writes, so a doorbell still on its way is not taken for a lost
 * one. Only while the engine is enabled (a ring not latched takes no
 * doorbell at all: the engine must be reset, hw_restart()), and only when
 * the device's HEAD lies between what we know it consumed and what we
 * rang: anything else is a ring latched again behind our back, where
 * ringing would run old descriptors again (the review of 2026-12-07):
 * -EIO, the engine needs a reset. A tail that is no ring offset (BAR0
 * reading all-ones: gone to D3 since STATUS was read) is left to the next
 * slice. A re-ring that did not take is -EIO too, so that a device whose
 * RING_TAIL never reads back what was written does not keep a waiter
 * re-ringing every slice until its timeout. @lock held.
 */
static int recover_doorbell(struct engine *e)
{
	struct sim_engine *s = se(e);
	uint32_t mask = s->ring_size - 1, tail = 0, head = 0, want = (uint32_t)(s->rung & mask),
		 from;
	int ret;

	if (!s->rung)
		return 0; /* nothing rung since the last reset */
	head_from_fences(s); /* what the fences say was consumed */
	from = (uint32_t)(s->head & mask);
	ret = reg_read32(e, CE_RING_TAIL, &tail);
	if (ret || tail == want || tail > mask || (tail & (DESC_SIZE - 1)))
		return ret;
	ret = reg_read32(e, CE_RING_HEAD, &head);
	if (ret)
		return ret;
	if (head > mask || ((head - from) & mask) > ((want - from) & mask)) {
		log_err(e->ctx, "engine %s: ring tail 0x%x and head 0x%x are not where the driver left them (head 0x%x, tail 0x%x): the ring was latched again; the engine needs a reset",
			e->name, tail, head, from, want);
		return -EIO;
	}
	if (s->rerung == s->rung) {
		log_err(e->ctx, "engine %s: the doorbell was rung again and the ring tail still reads 0x%x, not 0x%x",
			e->name, tail, want);
		return -EIO;
	}
	log_warn(e->ctx, "engine %s: the device's ring tail is 0x%x, the last doorbell said 0x%x: ringing again",
		 e->name, tail, want);
	s->rerung = s->rung;
	return reg_write32(e, CE_RING_TAIL, want);
}

/* Look at the device: SEQNO, and STATUS for an error; a dropped doorbell
 * when nothing progressed. Takes @lock. */
static int check_device(struct engine *e)
{
	struct sim_engine *s = se(e);
	uint64_t seqno = 0, before;
	uint32_t status = 0;
	int ret;

	pthread_mutex_lock(&s->lock);
	if (s->failed) {
		pthread_mutex_unlock(&s->lock);
		return -EIO;
	}
	before = completed_get(s);
	ret = reg_read32(e, CE_STATUS, &status);
	if (ret == 0 && status == 0xffffffffu)
		ret = -ESHUTDOWN; /* BAR0 reads all-ones: D3 */
	if (ret == 0 && (status & CE_STATUS_ERROR)) {
		report_error(e);
		ret = -EIO;
	} else if (ret == 0 && reg_read64(e, CE_SEQNO, &seqno) == 0 && seqno <= s->submitted) {
		completed_raise(s, seqno);
	}
	/* the doorbell is looked at only when a slice saw no progress at all
	 * (a third register read per slice otherwise) */
	if (ret == 0 && (status & CE_STATUS_ENABLED) && completed_get(s) == before)
		ret = recover_doorbell(e);
	pthread_mutex_unlock(&s->lock);
	return ret;
}

/* Drain the eventfd (non-blocking). */
static void efd_drain(struct sim_engine *s)
{
	uint64_t v;

	if (read(s->efd, &v, sizeof(v)) < 0) {
		/* EAGAIN: another waiter took it. */
	}
}

/* Fence outcome without blocking: 1 done, 0 pending, -EIO lost. */
static int fence_state(struct sim_engine *s, uint64_t fence, uint64_t limit)
{
	if (fence_page_poll(s, limit) >= fence)
		return 1;
	if (fence <= __atomic_load_n(&s->lost_upto, __ATOMIC_ACQUIRE))
		return -EIO;
	return 0;
}

static int sim_wait(struct engine *e, uint64_t fence, int timeout_ms)
{
	struct sim_engine *s = se(e);
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms, limit;
	int st, ret;

	if (fence == 0)
		return 0;
	pthread_mutex_lock(&s->lock);
	limit = s->submitted;
	/* A plugged batch may hold the fence back: waiting implies a kick. */
	ret = s->failed ? 0 : kick(e);
	pthread_mutex_unlock(&s->lock);
	if (ret < 0)
		return ret;
	if (fence > limit) {
		log_err(e->ctx, "engine %s: wait for fence %" PRIu64 " but only %" PRIu64
			" were handed out", e->name, fence, limit);
		return -EINVAL;
	}

	for (;;) {
		struct pollfd pfd = { .fd = s->efd, .events = POLLIN };
		int left, slice;

		st = fence_state(s, fence, limit);
		if (st)
			return st > 0 ? 0 : st;
		left = engine_ms_left(deadline);
		slice = left < WAIT_SLICE_MS ? left : WAIT_SLICE_MS;
		ret = slice > 0 ? poll(&pfd, 1, slice) : 0;
		if (ret > 0) {
			efd_drain(s);
			continue; /* a fence irq: look at the fence page */
		}
		if (ret < 0 && errno != EINTR)
			return -errno;
		/* A slice without an irq: the engine may have stopped on an error,
		 * or the fence page may be unreadable. Ask the device. */
		ret = check_device(e);
		st = fence_state(s, fence, limit);
		if (st)
			return st > 0 ? 0 : st;
		if (ret < 0 && ret != -EIO)
			return ret;
		if (ret == -EIO)
			return -EIO;
		if (!engine_ms_left(deadline)) {
			log_err(e->ctx, "engine %s: fence %" PRIu64 " not reached within %d ms (at %" PRIu64
				")", e->name, fence, timeout_ms, completed_get(s));
			return -ETIMEDOUT;
		}
	}
}

static int sim_plug(struct engine *e, bool on)
{
	struct sim_engine *s = se(e);
	int ret = 0;

	pthread_mutex_lock(&s->lock);
	if (on) {
		s->plugged++;
	} else if (s->plugged && --s->plugged == 0 && !s->failed) {
		ret = kick(e);
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static uint64_t sim_completed(struct engine *e)
{
	struct sim_engine *s = se(e);

	return fence_page_poll(s, __atomic_load_n(&s->submitted, __ATOMIC_ACQUIRE));
}

/* --- submission ------------------------------------------------------------- */

/* Advance @head from completed fences (no device access). @lock held. */
static void head_from_fences(struct sim_engine *s)
{
	uint64_t c = fence_page_poll(s, s->submitted);

	if (c && c + s->nslots > s->submitted) {
		uint64_t pos = s->fence_pos[c % s->nslots];

		if (pos > s->head && pos <= s->tail)
			s->head = pos;
	}
}

static int ring_doorbell(struct engine *e)
{
	struct sim_engine *s = se(e);
	int ret;

	/* The descriptors are in VRAM through our mapping; the device reads
	 * them after it sees the doorbell. The doorbell is a transport call
	 * (a socket message or a pwrite on the device fd): the system call
	 * orders our earlier stores before it, so no explicit fence is needed
	 * (and TSan builds refuse standalone fences). Posted (vfio-user sends
	 * it without waiting for a reply; a vfio-pci pwrite is posted by PCI
	 * anyway): its effect shows in the fences, and a doorbell the device
	 * dropped is found by the waiter's slice check (check_device()). Two
	 * engines' doorbells of one move no longer wait for each other's
	 * round trip (docs/reference-device.md, "Posted writes"). */
	{
		bool drop = false;

		test_point_obj(TEST_POINT_ENGINE_DOORBELL, &drop);
		ret = drop ? 0
			   : vfio_write32_posted(s->dev, VFIO_REGION_BAR0, s->regs + CE_RING_TAIL,
						 (uint32_t)(s->tail & (s->ring_size - 1)));
	}
	if (ret < 0)
		log_err(e->ctx, "engine %s: doorbell write failed: %d", e->name, ret);
	else
		s->rung = s->tail;
	return ret;
}

/* Ring the doorbell if descriptors are waiting for it. @lock held. */
static int kick(struct engine *e)
{
	struct sim_engine *s = se(e);

	return s->rung != s->tail ? ring_doorbell(e) : 0;
}

/*
 * Make room for @nslots descriptor slots (one slot always stays free so
 * HEAD == TAIL means empty). Rings the doorbell for what is queued before
 * sleeping; drops @lock while it sleeps. Bounded by cfg.timeout_ms.
 */
static int ring_room_for(struct engine *e, uint32_t nslots)
{
	const uint64_t need = (uint64_t)nslots * DESC_SIZE;

	struct sim_engine *s = se(e);
	uint64_t deadline = 0, last_head = UINT64_MAX;
	unsigned spins = 0;
	int ret;

	for (;;) {
		uint32_t hw_head = 0, status = 0;
		uint64_t used;

		if (s->failed)
			return -EIO;
		if (s->tail - s->head + need < s->ring_size)
			return 0;
		head_from_fences(s);
		if (s->tail - s->head + need < s->ring_size)
			return 0;
		ret = kick(e); /* the engine must see what it is to drain */
		if (ret < 0)
			return ret;
		ret = reg_read32(e, CE_RING_HEAD, &hw_head);
		if (ret < 0)
			return ret;
		used = (s->tail - hw_head) & (s->ring_size - 1);
		if (s->tail - used > s->head)
			s->head = s->tail - used;
		if (s->tail - s->head + need < s->ring_size)
			return 0;
		ret = reg_read32(e, CE_STATUS, &status);
		if (ret < 0)
			return ret;
		if (status & CE_STATUS_ERROR) {
			report_error(e);
			return -EIO;
		}
		/* no progress since the last look: a doorbell the device dropped
		 * is rung again here too (a full ring has no waiter) */
		if (hw_head == last_head && (status & CE_STATUS_ENABLED) && status != 0xffffffffu) {
			ret = recover_doorbell(e);
			if (ret < 0)
				return ret;
		}
		last_head = hw_head;
		if (!deadline)
			deadline = now_ms() + (uint64_t)e->cfg.timeout_ms;
		else if (!engine_ms_left(deadline)) {
			log_err(e->ctx, "engine %s: ring full for %d ms (head 0x%x, tail 0x%x)", e->name,
				e->cfg.timeout_ms, hw_head,
				(uint32_t)(s->tail & (s->ring_size - 1)));
			return -ETIMEDOUT;
		}
		pthread_mutex_unlock(&s->lock);
		sleep_us(spins++ < 20 ? 20 : 200);
		pthread_mutex_lock(&s->lock);
	}
}

/* Room for one descriptor. */
static int ring_room(struct engine *e)
{
	return ring_room_for(e, 1);
}

static int put_desc(struct engine *e, const struct ce_desc *d)
{
	struct sim_engine *s = se(e);
	int ret = ring_room(e);

	if (ret < 0)
		return ret;
	memcpy(s->ring + (s->tail & (s->ring_size - 1)), d, sizeof(*d));
	s->tail += DESC_SIZE;
	return 0;
}

/* Append a FENCE for the next seqno; @lock held. */
static int put_fence(struct engine *e, uint64_t *fence_out)
{
	struct sim_engine *s = se(e);
	struct ce_desc d = {
		.opcode = OP_FENCE,
		.flags = FENCE_F_IRQ,
		.dst = s->fence_off,
		.value = s->submitted + 1,
	};
	int ret = put_desc(e, &d);

	if (ret < 0)
		return ret;
	__atomic_store_n(&s->submitted, s->submitted + 1, __ATOMIC_RELEASE);
	s->fence_pos[s->submitted % s->nslots] = s->tail;
	s->fence_tail = s->tail;
	*fence_out = s->submitted;
	return 0;
}

static void desc_ep(struct ce_desc *d, bool src, struct engine_addr a, uint64_t off)
{
	if (src) {
		d->src = a.addr + off;
		d->src_space = (uint32_t)a.space;
		d->src_peer = a.peer;
	} else {
		d->dst = a.addr + off;
		d->dst_space = (uint32_t)a.space;
		d->dst_peer = a.peer;
	}
}

/* After queueing descriptors (@ret: how that went): a fence if asked and
 * all went well, then the doorbell unless plugged. Whatever made it into
 * the ring is rung (unless plugged), even on a failure: the engine's view
 * stays consistent with @tail. @lock held. */
static int submit_end(struct engine *e, int ret, uint64_t *fence_out)
{
	struct sim_engine *s = se(e);

	if (!ret && fence_out)
		ret = put_fence(e, fence_out);
	if (!s->plugged || ret < 0) {
		int r = kick(e);

		if (!ret)
			ret = r;
	}
	return ret;
}

/* Queue @op over @size bytes in ≤ 1 GiB descriptors, then a fence if asked. */
static int submit(struct engine *e, uint32_t op, struct engine_addr dst, struct engine_addr src,
		  uint64_t pattern, uint64_t size, uint64_t *fence_out)
{
	struct sim_engine *s = se(e);
	uint64_t off = 0;
	int ret = 0;

	pthread_mutex_lock(&s->lock);
	if (s->failed) {
		log_err(e->ctx, "engine %s: stopped on an error; reset it before queueing %s",
			e->name, op_name(op));
		ret = -EIO;
		goto out_unlock;
	}
	while (off < size) {
		uint64_t n = size - off < CE_DESC_MAX_SIZE ? size - off : CE_DESC_MAX_SIZE;
		struct ce_desc d = { .opcode = op, .size = n, .value = pattern };

		desc_ep(&d, false, dst, off);
		if (op == OP_COPY || op == OP_COPY_SUM)
			desc_ep(&d, true, src, off);
		if (op == OP_COPY_SUM) /* @pattern: the VRAM address of the first sum */
			d.value = pattern + off / ENGINE_SUM_PIECE * 8;
		ret = put_desc(e, &d);
		if (ret < 0)
			goto out_ring;
		off += n;
	}
out_ring:
	ret = submit_end(e, ret, fence_out);
out_unlock:
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static int sim_copy(struct engine *e, struct engine_addr dst, struct engine_addr src, uint64_t size,
		    uint64_t *fence_out)
{
	return submit(e, OP_COPY, dst, src, 0, size, fence_out);
}

static int sim_copy_sum(struct engine *e, struct engine_addr dst, uint64_t src_vram, uint64_t size,
			uint32_t slot, uint64_t *fence_out)
{
	struct sim_engine *s = se(e);

	return submit(e, OP_COPY_SUM, dst, engine_vram(src_vram), s->sums_off + (uint64_t)slot * 8,
		      size, fence_out);
}

/* A COPY_LIST: the descriptor and its entries are written together (room
 * for all of them first), so that no doorbell ever shows the engine part
 * of a list. */
static int sim_copy_list(struct engine *e, struct engine_addr dst, struct engine_addr src,
			 const struct engine_chunk *c, uint32_t n, uint32_t slot,
			 uint64_t *fence_out)
{
	struct sim_engine *s = se(e);
	struct ce_desc d = {
		.opcode = OP_COPY_LIST,
		.size = n,
		.value = slot == ENGINE_NO_SUM ? CE_LIST_NO_SUM : s->sums_off + (uint64_t)slot * 8,
		.src_space = (uint32_t)src.space,
		.dst_space = (uint32_t)dst.space,
		.src_peer = src.peer,
		.dst_peer = dst.peer,
	};
	uint32_t nslots = 1 + (n + 1) / 2, i;
	int ret;

	pthread_mutex_lock(&s->lock);
	if (s->failed) {
		log_err(e->ctx, "engine %s: stopped on an error; reset it before queueing COPY_LIST",
			e->name);
		ret = -EIO;
		goto out_unlock;
	}
	/* a fence after it must fit too: put_fence() would ring the doorbell */
	ret = ring_room_for(e, nslots + (fence_out ? 1 : 0));
	if (ret < 0)
		goto out_ring;
	memcpy(s->ring + (s->tail & (s->ring_size - 1)), &d, sizeof(d));
	for (i = 0; i < nslots - 1; i++) {
		struct ce_list_entry pair[2] = { { 0 } };

		for (uint32_t k = 0; k < 2 && 2 * i + k < n; k++) {
			const struct engine_chunk *ck = &c[2 * i + k];

			pair[k] = (struct ce_list_entry){ .src = src.addr + ck->src,
							  .dst = dst.addr + ck->dst,
							  .size = ck->len };
		}
		memcpy(s->ring + ((s->tail + (uint64_t)(i + 1) * DESC_SIZE) & (s->ring_size - 1)),
		       pair, sizeof(pair));
	}
	s->tail += (uint64_t)nslots * DESC_SIZE;
out_ring:
	ret = submit_end(e, ret, fence_out);
out_unlock:
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static uint32_t sim_list_max(struct engine *e)
{
	return se(e)->list_max;
}

static uint32_t sim_sum_slots(struct engine *e)
{
	return se(e)->nsums;
}

#ifdef UGPU_TEST_HOOKS
void engine_sim_test_limit_sums(struct engine *e, uint32_t n)
{
	if (se(e)->nsums > n)
		se(e)->nsums = n;
}
#endif

static void sim_sums(struct engine *e, uint32_t slot, uint32_t n, uint64_t *out)
{
	const uint8_t *p = se(e)->sums + (uint64_t)slot * 8;

	for (uint32_t i = 0; i < n; i++, p += 8) {
		uint64_t v = 0;

		for (int b = 7; b >= 0; b--)
			v = v << 8 | __atomic_load_n(&p[b], __ATOMIC_RELAXED);
		out[i] = v;
	}
}

static int sim_fill(struct engine *e, struct engine_addr dst, uint64_t pattern, uint64_t size,
		    uint64_t *fence_out)
{
	struct engine_addr none = { 0 };

	return submit(e, OP_FILL, dst, none, pattern, size, fence_out);
}

static int sim_idle(struct engine *e, int timeout_ms)
{
	struct sim_engine *s = se(e);
	uint64_t fence;
	int ret = 0;

	pthread_mutex_lock(&s->lock);
	fence = s->submitted;
	if (s->failed) {
		ret = -EIO;
	} else if (s->fence_tail != s->tail) {
		/* Work queued without a fence: add one to know when it is done. */
		ret = put_fence(e, &fence);
	}
	if (!s->failed) {
		int r = kick(e); /* waiting for unrung work would never end */

		if (!ret)
			ret = r;
	}
	pthread_mutex_unlock(&s->lock);
	if (ret < 0)
		return ret;
	return sim_wait(e, fence, timeout_ms);
}

/* --- reset / init / fini ----------------------------------------------------- */

/* CTRL.RESET, then program the ring and enable. @lock held. */
static int hw_restart(struct engine *e)
{
	struct sim_engine *s = se(e);
	uint64_t deadline = now_ms() + (uint64_t)e->cfg.timeout_ms;
	uint32_t ctrl = 0, status = 0;
	int ret;

	ret = reg_write32(e, CE_CTRL, CE_CTRL_RESET);
	if (ret < 0)
		goto out_err;
	/* RESET self-clears; ENABLE reads 0 once the engine has stopped. */
	for (;;) {
		ret = reg_read32(e, CE_CTRL, &ctrl);
		if (ret < 0)
			goto out_err;
		if (!(ctrl & (CE_CTRL_RESET | CE_CTRL_ENABLE)))
			break;
		if (!engine_ms_left(deadline)) {
			log_err(e->ctx, "engine %s: RESET did not complete within %d ms (CTRL 0x%x)",
				e->name, e->cfg.timeout_ms, ctrl);
			return -ETIMEDOUT;
		}
		sleep_us(100);
	}
	/* The device's ring is empty from here whatever comes next: a restart
	 * that fails later leaves no stale positions behind, which the next
	 * doorbell or recover_doorbell() would take for work still to run
	 * (the review of 2026-12-07). */
	s->tail = s->head = s->fence_tail = s->rung = s->rerung = 0;
	memset(s->fence_pos, 0, s->nslots * sizeof(*s->fence_pos));
	ret = reg_write64(e, CE_RING_BASE, e->cfg.ring_offset);
	if (!ret)
		ret = reg_write32(e, CE_RING_SIZE, s->ring_size);
	if (!ret)
		ret = reg_write32(e, CE_CTRL, CE_CTRL_ENABLE);
	if (!ret)
		ret = reg_read32(e, CE_STATUS, &status);
	if (ret < 0)
		goto out_err;
	if (!(status & CE_STATUS_ENABLED) || (status & CE_STATUS_ERROR)) {
		log_err(e->ctx, "engine %s: did not come up after reset (STATUS 0x%x)", e->name,
			status);
		return -EIO;
	}
	return 0;

out_err:
	log_err(e->ctx, "engine %s: register access during reset failed: %d", e->name, ret);
	return ret;
}

static int sim_reset(struct engine *e)
{
	struct sim_engine *s = se(e);
	uint64_t seqno = 0;
	int ret;

	pthread_mutex_lock(&s->lock);
	/* What ran before the reset stays complete; the rest is lost. */
	if (reg_read64(e, CE_SEQNO, &seqno) == 0 && seqno <= s->submitted)
		completed_raise(s, seqno);
	fence_page_poll(s, s->submitted);
	__atomic_store_n(&s->lost_upto, s->submitted, __ATOMIC_RELEASE);
	ret = hw_restart(e);
	if (ret == 0) {
		/* The fence page keeps counting from here; seed it so a reading
		 * never goes backwards. */
		__atomic_store_n(s->fence_page, completed_get(s), __ATOMIC_RELEASE);
		s->failed = false;
		s->error_logged = false;
		log_info(e->ctx, "engine %s: reset; fences up to %" PRIu64 " completed", e->name,
			 completed_get(s));
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static int sim_init(struct engine *e)
{
	const struct engine_cfg *c = &e->cfg;
	struct vfio_dev *dev = c->dev;
	struct sim_engine *s;
	uint32_t num = 0, caps = 0;
	uint64_t vram = 0;
	void *p;
	int ret;

	snprintf(e->name, sizeof(e->name), "sim%u", c->index);
	if (!dev) {
		log_err(e->ctx, "engine sim: no device given");
		return -EINVAL;
	}
	ret = vfio_read32(dev, VFIO_REGION_BAR0, REFDEV_REG_NUM_ENGINES, &num);
	if (!ret)
		ret = vfio_read64(dev, VFIO_REGION_BAR0, REFDEV_REG_VRAM_SIZE, &vram);
	if (!ret)
		ret = vfio_read32(dev, VFIO_REGION_BAR0, REFDEV_REG_CAPS, &caps);
	if (ret < 0) {
		log_err(e->ctx, "engine %s: %s: cannot read the device's registers: %d", e->name,
			dev->name, ret);
		return ret;
	}
	if (c->index >= num || c->index >= CE_NUM_MAX) {
		log_err(e->ctx, "engine %s: %s has %u copy engines, no engine %u", e->name, dev->name,
			num, c->index);
		return -ENODEV;
	}
	if (c->ring_size < CE_RING_MIN || c->ring_size > CE_RING_MAX ||
	    (c->ring_size & (c->ring_size - 1))) {
		log_err(e->ctx, "engine %s: ring size %u is not a power of two in 4 KiB..1 MiB",
			e->name, c->ring_size);
		return -EINVAL;
	}
	if (!c->vram_size || c->vram_size > vram)
		e->cfg.vram_size = vram;
	if ((c->ring_offset & 4095) || c->ring_offset > e->cfg.vram_size ||
	    engine_sim_vram_bytes(c->ring_size) > e->cfg.vram_size - c->ring_offset) {
		log_err(e->ctx,
			"engine %s: ring at VRAM 0x%" PRIx64 " (+0x%" PRIx64
			" with its fence page) is misaligned or past VRAM (0x%" PRIx64 ")",
			e->name, c->ring_offset, engine_sim_vram_bytes(c->ring_size),
			e->cfg.vram_size);
		return -EINVAL;
	}

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	s->dev = dev;
	s->regs = CE_BASE(c->index);
	s->ring_size = c->ring_size;
	s->nslots = c->ring_size / DESC_SIZE;
	s->fence_off = c->ring_offset + c->ring_size;
	s->efd = -1;
	e->priv = s;
	s->fence_pos = calloc(s->nslots, sizeof(*s->fence_pos));
	if (!s->fence_pos) {
		ret = -ENOMEM;
		goto out_free;
	}

	if (c->vram) {
		s->ring = (char *)c->vram + c->ring_offset;
	} else {
		s->map_len = engine_sim_vram_bytes(c->ring_size);
		ret = dev->ops->region_mmap(dev, VFIO_REGION_BAR2, c->ring_offset, s->map_len,
					    PROT_READ | PROT_WRITE, &p);
		if (ret < 0) {
			log_err(e->ctx, "engine %s: cannot map its ring in the VRAM BAR: %d", e->name,
				ret);
			goto out_free;
		}
		s->map = p;
		s->ring = p;
	}
	s->fence_page = (uint64_t *)(s->ring + c->ring_size);
	s->sums = (const uint8_t *)s->ring + c->ring_size + CE_FENCE_PAGE;
	s->sums_off = s->fence_off + CE_FENCE_PAGE;
	s->nsums = caps & REFDEV_CAPS_COPY_SUM ? ENGINE_SUM_AREA / 8 : 0;
	/* A list takes at most half the ring, so that it always fits beside
	 * what is queued before it once that drains. */
	s->list_max = 0;
	if (caps & REFDEV_CAPS_COPY_LIST)
		s->list_max = s->nslots - 2 < CE_LIST_MAX ? s->nslots - 2 : CE_LIST_MAX;

	s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->efd < 0) {
		ret = -errno;
		log_err(e->ctx, "engine %s: eventfd: %d", e->name, ret);
		goto out_unmap;
	}
	ret = dev->ops->set_irqs(dev, VFIO_IRQ_MSIX, REFDEV_VEC_ENGINE(c->index), 1, &s->efd);
	if (ret < 0) {
		log_err(e->ctx, "engine %s: cannot route MSI-X vector %u to an eventfd: %d", e->name,
			REFDEV_VEC_ENGINE(c->index), ret);
		goto out_close_efd;
	}

	__atomic_store_n(s->fence_page, 0, __ATOMIC_RELEASE);
	pthread_mutex_lock(&s->lock);
	ret = hw_restart(e);
	pthread_mutex_unlock(&s->lock);
	if (ret < 0)
		goto out_unroute;
	log_dbg(e->ctx, "engine %s: ring at VRAM 0x%" PRIx64 " size 0x%x, fence page 0x%" PRIx64,
		e->name, c->ring_offset, c->ring_size, s->fence_off);
	return 0;

out_unroute:
	{
		int none = -1;

		dev->ops->set_irqs(dev, VFIO_IRQ_MSIX, REFDEV_VEC_ENGINE(c->index), 1, &none);
	}
out_close_efd:
	close(s->efd);
out_unmap:
	if (s->map)
		dev->ops->region_munmap(dev, s->map, s->map_len);
out_free:
	free(s->fence_pos);
	pthread_mutex_destroy(&s->lock);
	free(s);
	e->priv = NULL;
	return ret;
}

static void sim_fini(struct engine *e)
{
	struct sim_engine *s = se(e);
	int none = -1;

	/* Let queued work finish (bounded), then stop the engine so it never
	 * touches the ring memory the caller is about to reuse. A dead device
	 * fails these quickly and we carry on. */
	(void)sim_idle(e, e->cfg.timeout_ms);
	(void)reg_write32(e, CE_CTRL, CE_CTRL_RESET);
	s->dev->ops->set_irqs(s->dev, VFIO_IRQ_MSIX, REFDEV_VEC_ENGINE(e->cfg.index), 1, &none);
	close(s->efd);
	if (s->map)
		s->dev->ops->region_munmap(s->dev, s->map, s->map_len);
	free(s->fence_pos);
	pthread_mutex_destroy(&s->lock);
	free(s);
	e->priv = NULL;
}

const struct engine_ops engine_sim_ops = {
	.name = "sim",
	.init = sim_init,
	.fini = sim_fini,
	.copy = sim_copy,
	.copy_sum = sim_copy_sum,
	.sum_slots = sim_sum_slots,
	.sums = sim_sums,
	.copy_list = sim_copy_list,
	.list_max = sim_list_max,
	.fill = sim_fill,
	.wait = sim_wait,
	.idle = sim_idle,
	.reset = sim_reset,
	.completed = sim_completed,
	.plug = sim_plug,
};
