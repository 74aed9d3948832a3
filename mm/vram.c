/* SPDX-License-Identifier: MIT */
/* The device's VRAM manager (see vram.h). */
#include <errno.h>
#include <pthread.h>

#include "mm/bo.h"
#include "mm/vram.h"
#include "base/log.h"
#include "src/device.h"

static void buddy_log(void *arg, const char *msg)
{
	struct ugpu_device *dev = arg;

	log_err(dev->ctx, "%s: VRAM: %s", dev->name, msg);
}

/* Held-back blocks count as free: no BO lives in them any more (what they
 * hold is only what a restart record may still read). */
static void used_sync_locked(struct ugpu_device *dev, struct bo_mgr *m)
{
	__atomic_store_n(&dev->vram_used,
			 m->vram_ready ? m->vram_mm.size - m->vram_mm.avail - m->vram_held_bytes : 0,
			 __ATOMIC_RELAXED);
}

static uint64_t list_bytes(const struct buddy_list *l)
{
	const struct buddy_block *b;
	uint64_t n = 0;

	buddy_list_for_each(b, l)
		n += vram_block_size(b);
	return n;
}

/* Give the held-back blocks of @l to the allocator (dirty: what they held
 * is not known to be zero). */
static void held_free_locked(struct ugpu_device *dev, struct bo_mgr *m, struct buddy_list *l)
{
	uint64_t n = list_bytes(l);

	if (!n)
		return;
	m->vram_held_bytes -= n;
	if (m->vram_ready)
		buddy_free_list(&m->vram_mm, l, 0);
	used_sync_locked(dev, m);
}

int vram_alloc_range(struct ugpu_device *dev, uint64_t start, uint64_t end, uint64_t size,
		     uint64_t min_block, unsigned int flags, struct buddy_list *out)
{
	struct bo_mgr *m = dev->bo_mgr;
	int ret = -ENODEV;

	pthread_mutex_lock(&m->vram_lock);
	if (m->vram_ready) {
		ret = buddy_alloc_blocks(&m->vram_mm, start, end, size, min_block, out, flags);
		used_sync_locked(dev, m);
	}
	pthread_mutex_unlock(&m->vram_lock);
	return ret;
}

int vram_alloc(struct ugpu_device *dev, uint64_t size, uint64_t min_block, unsigned int flags,
	       struct buddy_list *out)
{
	return vram_alloc_range(dev, 0, dev->vram_size, size, min_block, flags & ~BUDDY_RANGE_ALLOCATION,
				out);
}

void vram_free(struct ugpu_device *dev, struct buddy_list *blocks, unsigned int flags)
{
	struct bo_mgr *m = dev->bo_mgr;

	pthread_mutex_lock(&m->vram_lock);
	if (m->vram_ready && m->vram_holding) {
		m->vram_held_bytes += list_bytes(blocks);
		buddy_list_splice_tail(&m->vram_held, blocks);
		used_sync_locked(dev, m);
	} else if (m->vram_ready) {
		buddy_free_list(&m->vram_mm, blocks, flags);
		used_sync_locked(dev, m);
	}
	pthread_mutex_unlock(&m->vram_lock);
}

void vram_hold_frees(struct ugpu_device *dev, bool on)
{
	struct bo_mgr *m = dev->bo_mgr;

	pthread_mutex_lock(&m->vram_lock);
	m->vram_holding = on;
	if (!on) {
		held_free_locked(dev, m, &m->vram_sealed);
		held_free_locked(dev, m, &m->vram_held);
	}
	pthread_mutex_unlock(&m->vram_lock);
}

void vram_hold_strict(struct ugpu_device *dev, void (*want)(void *arg), void *arg)
{
	struct bo_mgr *m = dev->bo_mgr;

	pthread_mutex_lock(&m->vram_lock);
	m->vram_want = want;
	m->vram_want_arg = arg;
	pthread_mutex_unlock(&m->vram_lock);
}

/* vram_refusing(): this thread's calls opted in (a count: nested calls) */
static _Thread_local unsigned int refusing;

void vram_refusing(bool on)
{
	if (on)
		refusing++;
	else if (refusing)
		refusing--;
}

int vram_held_claim(struct ugpu_device *dev, uint64_t need)
{
	struct bo_mgr *m = dev->bo_mgr;
	void (*want)(void *arg);
	bool refuse;
	void *arg;
	uint64_t n;

	pthread_mutex_lock(&m->vram_lock);
	n = m->vram_held_bytes;
	want = m->vram_want;
	arg = m->vram_want_arg;
	refuse = want && refusing;
	if (n && refuse && m->vram_ready && m->vram_mm.avail + n < need) {
		/* short even with them: evict more before the record */
		pthread_mutex_unlock(&m->vram_lock);
		return 0;
	}
	if (n && !refuse) {
		held_free_locked(dev, m, &m->vram_sealed);
		held_free_locked(dev, m, &m->vram_held);
	}
	pthread_mutex_unlock(&m->vram_lock);
	if (!n)
		return 0;
	if (want)
		want(arg);
	if (refuse)
		return -ERESTART;
	log_dbg(dev->ctx, "%s: VRAM: %llu held-back bytes given back for a BO that needs them",
		dev->name, (unsigned long long)n);
	return 1;
}

bool vram_give_back_held(struct ugpu_device *dev)
{
	struct bo_mgr *m = dev->bo_mgr;
	uint64_t n;

	pthread_mutex_lock(&m->vram_lock);
	n = m->vram_held_bytes;
	held_free_locked(dev, m, &m->vram_sealed);
	held_free_locked(dev, m, &m->vram_held);
	pthread_mutex_unlock(&m->vram_lock);
	return n != 0;
}

void vram_held_seal(struct ugpu_device *dev)
{
	struct bo_mgr *m = dev->bo_mgr;

	pthread_mutex_lock(&m->vram_lock);
	buddy_list_splice_tail(&m->vram_sealed, &m->vram_held);
	pthread_mutex_unlock(&m->vram_lock);
}

void vram_sealed_release(struct ugpu_device *dev)
{
	struct bo_mgr *m = dev->bo_mgr;

	pthread_mutex_lock(&m->vram_lock);
	held_free_locked(dev, m, &m->vram_sealed);
	pthread_mutex_unlock(&m->vram_lock);
}

void vram_usage(struct ugpu_device *dev, uint64_t *used, uint64_t *avail)
{
	struct bo_mgr *m = dev->bo_mgr;

	pthread_mutex_lock(&m->vram_lock);
	*used = m->vram_ready ? m->vram_mm.size - m->vram_mm.avail - m->vram_held_bytes : 0;
	*avail = m->vram_ready ? m->vram_mm.avail + m->vram_held_bytes : 0;
	pthread_mutex_unlock(&m->vram_lock);
}

int vram_check(struct ugpu_device *dev)
{
	struct bo_mgr *m = dev->bo_mgr;
	int ret = 0;

	pthread_mutex_lock(&m->vram_lock);
	if (m->vram_ready)
		ret = buddy_check(&m->vram_mm) ? -EINVAL : 0;
	pthread_mutex_unlock(&m->vram_lock);
	return ret;
}

/* ---- the "vram-mm" bring-up step ------------------------------------------------ */

static int vram_mm_up(struct ugpu_device *dev, const char *uri)
{
	struct bo_mgr *m = dev->bo_mgr;
	int ret;

	ret = buddy_init(&m->vram_mm, dev->vram_size, BUDDY_MIN_CHUNK);
	if (ret) {
		log_err(dev->ctx, "%s: cannot manage %llu bytes of VRAM: %s", uri,
			(unsigned long long)dev->vram_size, ugpu_strerror(ret));
		return ret;
	}
	buddy_set_log(&m->vram_mm, buddy_log, dev);
	pthread_mutex_lock(&m->vram_lock);
	m->vram_ready = true;
	used_sync_locked(dev, m);
	pthread_mutex_unlock(&m->vram_lock);
	return 0;
}

static void vram_mm_down(struct ugpu_device *dev)
{
	struct bo_mgr *m = dev->bo_mgr;
	int leaks;

	pthread_mutex_lock(&m->vram_lock);
	if (!m->vram_ready) {
		pthread_mutex_unlock(&m->vram_lock);
		return;
	}
	m->vram_holding = false;
	held_free_locked(dev, m, &m->vram_sealed);
	held_free_locked(dev, m, &m->vram_held);
	leaks = buddy_fini(&m->vram_mm);
	m->vram_ready = false;
	used_sync_locked(dev, m);
	pthread_mutex_unlock(&m->vram_lock);
	if (leaks > 0)
		log_warn(dev->ctx, "%s: %d VRAM blocks were still allocated at close", dev->name,
			 leaks);
}

static struct device_component vram_mm_component = {
	.name = "vram-mm",
	.order = DEVICE_STEP_VRAM_MM,
	.life = DEVICE_LIFE_DEVICE,
	.up = vram_mm_up,
	.down = vram_mm_down,
};
DEVICE_COMPONENT(vram_mm_component)
