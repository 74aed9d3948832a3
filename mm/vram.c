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

static void used_sync_locked(struct ugpu_device *dev, struct bo_mgr *m)
{
	__atomic_store_n(&dev->vram_used, m->vram_ready ? m->vram_mm.size - m->vram_mm.avail : 0,
			 __ATOMIC_RELAXED);
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
	if (m->vram_ready) {
		buddy_free_list(&m->vram_mm, blocks, flags);
		used_sync_locked(dev, m);
	}
	pthread_mutex_unlock(&m->vram_lock);
}

void vram_usage(struct ugpu_device *dev, uint64_t *used, uint64_t *avail)
{
	struct bo_mgr *m = dev->bo_mgr;

	pthread_mutex_lock(&m->vram_lock);
	*used = m->vram_ready ? m->vram_mm.size - m->vram_mm.avail : 0;
	*avail = m->vram_ready ? m->vram_mm.avail : 0;
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
