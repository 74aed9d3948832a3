/* SPDX-License-Identifier: MIT */
/*
 * Device removal: the watcher thread, the removal sequence, the public
 * unplug API (include/ugpu/unplug.h). Design and guarantees: docs/unplug.md.
 *
 * The removal, always on the watcher thread:
 *   1. take the host-suspend lock (bounded): no suspend/resume transition
 *      runs during a removal, and one in progress finishes first;
 *   2. orderly removal only: wake the device through runtime PM (bounded);
 *   3. take the BO manager lock (bounded): no new submission, no BO changes
 *      place; every submission path runs under it and waits for its own
 *      fences, so what remains in flight is drained by engine_idle();
 *   4. every user BO in VRAM goes to system memory with the blitter (pinned
 *      ones too: they become system BOs, still pinned); on a surprise
 *      removal, or when a copy fails, a BO with a valid host-suspend backup
 *      adopts it, any other VRAM BO is marked lost; driver (KERNEL) BOs are
 *      device resources and die;
 *   5. every DMA mapping a BO holds is removed from the transport;
 *   6. dev->removed is set (BO paths now refuse VRAM and map nothing), the
 *      manager lock is dropped, and device_teardown(DEVICE) releases the
 *      device's resources in the reverse order of bring-up, closing the
 *      transport last.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <ugpu/unplug.h>

#include "engines/engine.h"
#include "mm/bo.h"
#include "mm/bo_rpm.h"
#include "mm/cpu_map.h"
#include "src/device.h"
#include "src/base/clock.h"
#include "src/base/log.h"
#include "src/vfio/pci_cfg.h"
#include "src/rpm.h"
#include "src/unplug.h"

/*
 * struct unplug - per device, context lifetime (freed by ugpu_device_close).
 *
 * Locking: @lock protects @stop, @api_request, @surprise_request, @info,
 * @fn/@user and @obs/@obs_arg; @cond signals removal progress to
 * ugpu_device_unplug() callers. @state is atomic (read without the lock by
 * ugpu_device_is_gone()) and written under @lock. The watcher thread is the
 * only one that runs a removal; @lock is never held across one.
 */
struct unplug {
	struct ugpu_device *dev;
	pthread_t thread;
	int wake_fd; /* eventfd: stop, API and injected requests */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	bool api_request;
	bool surprise_request;
	unsigned int postponed; /* removals given up on (lock timeouts) */
	int state; /* enum ugpu_unplug_state, atomic */
	struct ugpu_unplug_info info;
	ugpu_removal_fn fn;
	void *user;
	void (*obs)(void *arg, struct ugpu_device *dev, const char *step);
	void *obs_arg;
};

static int lock_bounded(pthread_mutex_t *m, int ms)
{
	struct timespec ts;

	ts = deadline_after_ms((uint64_t)ms);
	return -pthread_mutex_timedlock(m, &ts);
}

static enum ugpu_unplug_state state_get(struct unplug *u)
{
	return (enum ugpu_unplug_state)__atomic_load_n(&u->state, __ATOMIC_ACQUIRE);
}

/* ---- the transport's tombstone ---------------------------------------------- */

static void tomb_close(struct vfio_dev *dev)
{
	(void)dev;
}

static int tomb_region_info(struct vfio_dev *dev, uint32_t index, struct vfio_dev_region_info *info)
{
	(void)dev, (void)index, (void)info;
	return -ENODEV;
}

static int tomb_region_read(struct vfio_dev *dev, uint32_t index, uint64_t off, void *buf,
			    size_t len)
{
	(void)dev, (void)index, (void)off, (void)buf, (void)len;
	return -ENODEV;
}

static int tomb_region_write(struct vfio_dev *dev, uint32_t index, uint64_t off, const void *buf,
			     size_t len)
{
	(void)dev, (void)index, (void)off, (void)buf, (void)len;
	return -ENODEV;
}

static int tomb_region_mmap(struct vfio_dev *dev, uint32_t index, uint64_t off, size_t len, int prot,
			    void **addr)
{
	(void)dev, (void)index, (void)off, (void)len, (void)prot, (void)addr;
	return -ENODEV;
}

static int tomb_region_munmap(struct vfio_dev *dev, void *addr, size_t len)
{
	(void)dev, (void)addr, (void)len;
	return -ENODEV;
}

static int tomb_region_fd(struct vfio_dev *dev, uint32_t index, int *fd, uint64_t *fd_off)
{
	(void)dev, (void)index, (void)fd, (void)fd_off;
	return -ENODEV;
}

static int tomb_irq_info(struct vfio_dev *dev, uint32_t index, struct vfio_dev_irq_info *info)
{
	(void)dev, (void)index, (void)info;
	return -ENODEV;
}

static int tomb_set_irqs(struct vfio_dev *dev, uint32_t index, uint32_t start, uint32_t count,
			 const int *fds)
{
	(void)dev, (void)index, (void)start, (void)count, (void)fds;
	return -ENODEV;
}

static int tomb_iommu_info(struct vfio_dev *dev, struct vfio_iommu_info *info)
{
	(void)dev, (void)info;
	return -ENODEV;
}

static int tomb_dma_map(struct vfio_dev *dev, uint64_t iova, uint64_t size, void *vaddr, int fd,
			uint64_t fd_off, uint32_t prot)
{
	(void)dev, (void)iova, (void)size, (void)vaddr, (void)fd, (void)fd_off, (void)prot;
	return -ENODEV;
}

static int tomb_dma_unmap(struct vfio_dev *dev, uint64_t iova, uint64_t size, uint64_t *unmapped)
{
	(void)dev, (void)iova, (void)size, (void)unmapped;
	return -ENODEV;
}

static int tomb_reset(struct vfio_dev *dev)
{
	(void)dev;
	return -ENODEV;
}

/* Every op answers -ENODEV: the device is gone and so is its transport. */
static const struct vfio_transport_ops tomb_ops = {
	.name = "removed",
	.close = tomb_close,
	.region_info = tomb_region_info,
	.region_read = tomb_region_read,
	.region_write = tomb_region_write,
	.region_mmap = tomb_region_mmap,
	.region_munmap = tomb_region_munmap,
	.region_fd = tomb_region_fd,
	.irq_info = tomb_irq_info,
	.set_irqs = tomb_set_irqs,
	.iommu_info = tomb_iommu_info,
	.dma_map = tomb_dma_map,
	.dma_unmap = tomb_dma_unmap,
	.reset = tomb_reset,
	.low_power_enter = NULL,
	.low_power_exit = NULL,
};

void unplug_tombstone_init(struct vfio_dev *t, const struct vfio_dev *from)
{
	memset(t, 0, sizeof(*t));
	t->ops = &tomb_ops;
	t->gone = 1;
	if (from) {
		t->ctx = from->ctx;
		memcpy(t->name, from->name, sizeof(t->name));
		t->name[sizeof(t->name) - 1] = '\0';
	}
}

/* ---- evacuation (BO manager lock held) --------------------------------------- */

struct removal {
	struct unplug *u;
	bool surprise; /* the device cannot be reached: nothing is copied from it */
	bool suspended; /* host-suspended: VRAM is powered off, backups hold it */
	struct ugpu_unplug_info st; /* counters being gathered */
};

static bool is_ring(struct ugpu_device *dev, struct ugpu_bo *bo)
{
	unsigned int i;

	for (i = 0; i < DEVICE_MAX_ENGINES; i++)
		if (dev->ring_bo[i] == bo)
			return true;
	return false;
}

/*
 * From now on @bo prefers system memory (pin keeps it there); VRAM stays in
 * its list so that asking for VRAM says -ENODEV ("the device is gone")
 * rather than -EINVAL ("never allowed").
 */
static void only_system(struct ugpu_bo *bo)
{
	bo->placements[0] = UGPU_PLACEMENT_SYSTEM;
	bo->placements[1] = UGPU_PLACEMENT_VRAM;
	bo->nplacements = 2;
}

/* Where a BO's contents go when its VRAM cannot be copied from. */
enum drop_to {
	DROP_LOST, /* nowhere: the contents are lost */
	DROP_TO_BACKUP, /* its valid host-suspend backup becomes its system copy */
	DROP_TO_SYS, /* @sys (filled by the caller) becomes its system copy */
};

/*
 * Change @bo's backing away from VRAM without a copy from the device: to its
 * valid host-suspend backup, to system memory the caller filled, or to
 * nothing (lost). The CPU mapping is blocked across the change like any
 * move, so a fault maps the new backing, or gets SIGBUS for a lost BO
 * (bo_resolve() answers -ENODEV for no backing).
 */
static void vram_drop_locked(struct ugpu_device *dev, struct ugpu_bo *bo, enum drop_to to,
			     struct sysmem *sys)
{
	struct bo_mgr *m = dev->bo_mgr;
	bool blocked = false;

	if (bo->map) {
		int r = cpu_map_block(bo->map);

		if (r)
			log_err(dev->ctx, "%s: cannot block the CPU mapping of BO '%s': %s",
				dev->vdev->name, bo->name, ugpu_strerror(r));
		blocked = !r;
	}
	bo_lru_del_locked(bo);
	bo_rpm_forget(bo);
	device_vram_free(dev, bo->vram, 0);
	m->vram_bytes -= bo->size;
	if (to != DROP_LOST) {
		if (to == DROP_TO_BACKUP) {
			bo->sys = bo->backup;
			bo->backup.mem.fd = -1;
			bo->backup.mem.vaddr = NULL;
			bo->backup.iova = 0;
		} else {
			bo->sys.mem = *sys; /* not mapped for a device: iova 0 */
			bo->sys.iova = 0;
			sys->fd = -1;
		}
		bo->placement = UGPU_PLACEMENT_SYSTEM;
		m->sys_bytes += bo->size;
		only_system(bo);
	} else {
		bo_sys_free(dev, &bo->backup);
		bo->placement = UGPU_PLACEMENT_NONE;
		bo->lost = true;
	}
	bo->backup_prepared = bo->backup_valid = false;
	if (bo->map) {
		if (blocked)
			cpu_map_unblock(bo->map);
		/* A host suspend held faults on it until resume, which will not
		 * come for this device: let them through now. */
		if (bo->map_blocked)
			cpu_map_unblock(bo->map);
		bo->map_blocked = false;
	}
}

static void evacuate_one(struct removal *r, struct ugpu_bo *bo)
{
	struct ugpu_device *dev = r->u->dev;
	bool has_backup = bo->backup.mem.fd >= 0 && bo->backup_valid;
	int ret;

	if (bo->placement != UGPU_PLACEMENT_VRAM)
		return; /* system memory is kept; a lost BO stays lost */
	if (bo->driver_owned) {
		/* Rings, page tables: device resources. The rings go with their
		 * engines; anything else of the driver's is dropped here. A BO
		 * the program created with UGPU_BO_KERNEL is the program's and
		 * is kept like any other (below). */
		r->st.kernel_bos++;
		if (!is_ring(dev, bo))
			vram_drop_locked(dev, bo, DROP_LOST, NULL);
		return;
	}
	if (!r->surprise && !r->suspended) {
		enum ugpu_placement saved[UGPU_BO_MAX_PLACEMENTS];
		unsigned int n = bo->nplacements;

		memcpy(saved, bo->placements, sizeof(saved));
		only_system(bo);
		ret = bo_move_locked(bo, UGPU_PLACEMENT_SYSTEM);
		if (!ret) {
			r->st.bos_moved++;
			r->st.bytes_moved += bo->size;
			return;
		}
		memcpy(bo->placements, saved, sizeof(saved));
		bo->nplacements = n;
		log_err(dev->ctx, "%s: removal: BO '%s' could not be moved to system memory: %s",
			dev->vdev->name, bo->name, ugpu_strerror(ret));
		if (vfio_dev_is_gone(dev->vdev)) {
			log_err(dev->ctx, "%s: removal: the device stopped answering; what is still in VRAM is lost",
				dev->vdev->name);
			r->surprise = true;
		}
	}
	if (has_backup) {
		vram_drop_locked(dev, bo, DROP_TO_BACKUP, NULL);
		r->st.bos_adopted++;
		log_warn(dev->ctx, "%s: removal: BO '%s' (%" PRIu64 " bytes) kept from its suspend backup",
			 dev->vdev->name, bo->name, bo->size);
		return;
	}
	/* The device sleeps in runtime D3cold (or its wake failed): the
	 * runtime-PM backup holds what VRAM lost. */
	if (bo_rpm_take_backup(bo, NULL)) {
		struct sysmem sys;

		if (!sysmem_create(dev->ctx, bo->size, bo->name, &sys)) {
			bo_rpm_take_backup(bo, sys.vaddr);
			vram_drop_locked(dev, bo, DROP_TO_SYS, &sys);
			r->st.bos_adopted++;
			log_warn(dev->ctx, "%s: removal: BO '%s' (%" PRIu64 " bytes) kept from its runtime-PM (D3cold) backup",
				 dev->vdev->name, bo->name, bo->size);
			return;
		}
		log_err(dev->ctx, "%s: removal: no system memory to keep BO '%s' from its runtime-PM backup",
			dev->vdev->name, bo->name);
	}
	vram_drop_locked(dev, bo, DROP_LOST, NULL);
	r->st.bos_lost++;
	r->st.bytes_lost += bo->size;
	log_err(dev->ctx, "%s: removal: BO '%s' (%" PRIu64 " bytes) was only in VRAM: its contents are LOST (reads fail with -ENODATA, CPU touches raise SIGBUS)",
		dev->vdev->name, bo->name, bo->size);
}

/* Remove every DMA mapping the BOs hold: the device must not reach memory
 * that lives on, and the transport must be left with nothing mapped. */
static void dma_release_locked(struct ugpu_device *dev)
{
	struct bo_mgr *m = dev->bo_mgr;

	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (bo->sys.mem.fd >= 0 && bo->sys.iova) {
			int ret = dma_unmap(&dev->dma, bo->sys.iova, bo->sys.mem.size);

			if (ret && ret != -ENODEV)
				log_warn(dev->ctx, "%s: removal: DMA unmap of BO '%s' failed: %s",
					 dev->vdev->name, bo->name, ugpu_strerror(ret));
			bo->sys.iova = 0;
		}
		/* Backups (a prepared host suspend; rings' backups) have no use
		 * past the device. */
		bo_sys_free(dev, &bo->backup);
		bo->backup_prepared = bo->backup_valid = false;
	}
}

/*
 * CPU faults and the runtime-PM teardown. The BO fault hooks (mm/bo_rpm.c)
 * run on the cpu_map handler thread and use the BO runtime-PM state that
 * the "bo-rpm" teardown step frees, while the application's threads keep
 * touching their mappings through the removal. So, before the device
 * teardown: block every mapping (a fault then parks without calling the
 * hooks) and make the handler thread finish whatever fault it is handling
 * (a barrier: an invalidation returns only once the handler has read its
 * event, i.e. after every earlier fault was handled, hooks included).
 * After the teardown the mappings are unblocked and fault to system memory.
 * bo_rpm_detach() is itself safe against running hooks now (it unpublishes
 * its state and waits for them); the hold and barrier stay as belt and
 * braces, and keep every fault parked for the whole device teardown.
 */
static int barrier_resolve(void *owner, uint64_t offset, struct cpu_map_extent *ext)
{
	ext->fd = (int)(intptr_t)owner;
	ext->fd_offset = offset;
	ext->len = 4096 - offset;
	return 0;
}

static const struct cpu_map_owner_ops barrier_ops = { .resolve = barrier_resolve };

static void handler_barrier(struct ugpu_device *dev, struct cpu_map_mgr *maps)
{
	struct cpu_map *map;
	void *addr;
	int fd;

	fd = memfd_create("ugpu-unplug-barrier", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, 4096)) {
		log_warn(dev->ctx, "%s: removal: no memfd for the fault barrier", dev->vdev->name);
		if (fd >= 0)
			close(fd);
		return;
	}
	if (!cpu_map_create(maps, &barrier_ops, (void *)(intptr_t)fd, 4096, "unplug-barrier", &map,
			    &addr)) {
		(void)*(volatile char *)addr; /* mapped by the handler */
		if (cpu_map_invalidate(map))
			log_warn(dev->ctx, "%s: removal: fault barrier failed", dev->vdev->name);
		cpu_map_destroy(map);
	}
	close(fd);
}

/* Manager lock held. */
static void maps_hold_locked(struct ugpu_device *dev)
{
	struct bo_mgr *m = dev->bo_mgr;

	if (!m->maps)
		return;
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (bo->map && !bo->map_blocked && !cpu_map_block(bo->map))
			bo->map_blocked = true;
	}
	handler_barrier(dev, m->maps);
}

static void maps_release(struct ugpu_device *dev)
{
	struct bo_mgr *m = dev->bo_mgr;

	pthread_mutex_lock(&m->lock);
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (bo->map && bo->map_blocked)
			cpu_map_unblock(bo->map);
		bo->map_blocked = false;
	}
	pthread_mutex_unlock(&m->lock);
}

/* ---- the removal ------------------------------------------------------------- */

static void removal_run(struct unplug *u, enum ugpu_unplug_kind kind, uint64_t healthy_us)
{
	struct ugpu_device *dev = u->dev;
	struct bo_mgr *m = dev->bo_mgr;
	struct removal r = { .u = u, .surprise = kind == UGPU_UNPLUG_SURPRISE };
	uint64_t t0 = now_us();
	bool held_rpm = false;
	ugpu_removal_fn fn;
	void *user;
	unsigned int i;
	int ret, status;

	pthread_mutex_lock(&u->lock);
	__atomic_store_n(&u->state, UGPU_UNPLUG_REMOVING, __ATOMIC_RELEASE);
	u->info.kind = kind;
	if (r.surprise)
		u->info.detect_us = t0 - healthy_us;
	pthread_mutex_unlock(&u->lock);
	if (r.surprise)
		log_err(dev->ctx, "%s: the device is gone (surprise removal): releasing it; BOs only in VRAM are lost",
			dev->vdev->name);
	else
		log_warn(dev->ctx, "%s: removal %s: moving every BO to system memory and releasing the device",
			 dev->vdev->name, kind == UGPU_UNPLUG_API ? "asked by the application" : "requested");

	/* 1. No host-suspend transition during the removal. */
	ret = lock_bounded(&m->pm_lock, UNPLUG_LOCK_TIMEOUT_MS);
	if (ret) {
		log_err(dev->ctx, "%s: removal postponed: a host suspend transition holds the device for more than %d ms (%s); retried on the next request",
			dev->vdev->name, UNPLUG_LOCK_TIMEOUT_MS, ugpu_strerror(ret));
		goto out_postpone;
	}
	ret = lock_bounded(&m->lock, UNPLUG_LOCK_TIMEOUT_MS);
	if (ret) {
		pthread_mutex_unlock(&m->pm_lock);
		goto out_postpone;
	}
	r.suspended = m->pm_state == BO_PM_SUSPENDED;
	pthread_mutex_unlock(&m->lock);

	/* 2. Awake for the copies (not while host-suspended: the backups
	 * hold VRAM then, and the host is asleep). */
	if (!r.surprise && !r.suspended && dev->rpm) {
		ret = rpm_get(dev->rpm);
		if (ret) {
			log_err(dev->ctx, "%s: removal: the device did not wake (%s); what is only in VRAM is lost",
				dev->vdev->name, ugpu_strerror(ret));
			r.surprise = true;
		} else {
			held_rpm = true;
		}
	}

	/* 3. Stop submissions; drain what is in flight. */
	ret = lock_bounded(&m->lock, UNPLUG_LOCK_TIMEOUT_MS);
	if (ret) {
		log_err(dev->ctx, "%s: removal postponed: BO work holds the device for more than %d ms (%s)",
			dev->vdev->name, UNPLUG_LOCK_TIMEOUT_MS, ugpu_strerror(ret));
		if (held_rpm)
			rpm_put(dev->rpm);
		pthread_mutex_unlock(&m->pm_lock);
		goto out_postpone;
	}
	if (!r.surprise && !r.suspended) {
		for (i = 0; i < DEVICE_MAX_ENGINES; i++) {
			if (!dev->copy[i])
				continue;
			ret = engine_idle(dev->copy[i], UNPLUG_IDLE_TIMEOUT_MS);
			if (ret) {
				log_err(dev->ctx, "%s: removal: engine %s did not finish its work in %d ms (%s): cancelled",
					dev->vdev->name, dev->copy[i]->name, UNPLUG_IDLE_TIMEOUT_MS,
					ugpu_strerror(ret));
				engine_reset(dev->copy[i]);
			}
		}
	}

	/* 4. Every user BO out of VRAM. */
	bo_for_each(l, &m->all)
		evacuate_one(&r, bo_of_all(l));

	/* 5. Nothing mapped for the device any more. */
	dma_release_locked(dev);

	/* 6. From here BO paths refuse VRAM and DMA-map nothing. */
	m->pm_state = BO_PM_ACTIVE;
	m->vram_fd = -1; /* the transport's fd: closed below */
	__atomic_store_n(&dev->removed, 1, __ATOMIC_RELEASE);
	maps_hold_locked(dev);
	pthread_mutex_unlock(&m->lock);
	if (held_rpm)
		rpm_put(dev->rpm);
	device_teardown(dev, DEVICE_LIFE_DEVICE);
	maps_release(dev);
	pthread_mutex_unlock(&m->pm_lock);

	status = r.surprise ? -ENODEV : r.st.bos_lost ? -EIO : 0;
	pthread_mutex_lock(&u->lock);
	u->info.status = status;
	u->info.removal_us = now_us() - t0;
	u->info.bos_moved = r.st.bos_moved;
	u->info.bytes_moved = r.st.bytes_moved;
	u->info.bos_adopted = r.st.bos_adopted;
	u->info.bos_lost = r.st.bos_lost;
	u->info.bytes_lost = r.st.bytes_lost;
	u->info.kernel_bos = r.st.kernel_bos;
	__atomic_store_n(&u->state, UGPU_UNPLUG_REMOVED, __ATOMIC_RELEASE);
	fn = u->fn;
	user = u->user;
	pthread_cond_broadcast(&u->cond);
	pthread_mutex_unlock(&u->lock);

	log_warn(dev->ctx, "%s: removed (%s) in %" PRIu64 " ms: %" PRIu64 " BOs (%" PRIu64 " bytes) moved to system memory, %" PRIu64 " kept from suspend backups, %" PRIu64 " lost (%" PRIu64 " bytes)",
		 dev->vdev->name, ugpu_unplug_kind_name(kind), (now_us() - t0) / 1000, r.st.bos_moved,
		 r.st.bytes_moved, r.st.bos_adopted, r.st.bos_lost, r.st.bytes_lost);
	if (fn)
		fn(user, dev, kind, status);
	return;

out_postpone:
	pthread_mutex_lock(&u->lock);
	__atomic_store_n(&u->state, UGPU_UNPLUG_PRESENT, __ATOMIC_RELEASE);
	u->info.kind = UGPU_UNPLUG_NONE;
	u->postponed++;
	pthread_cond_broadcast(&u->cond);
	pthread_mutex_unlock(&u->lock);
}

/* ---- the watcher ------------------------------------------------------------- */

/* All-ones config reads (or a transport that says so): a dead PCI device.
 * Skipped in D3cold, where real hardware may not answer config reads. */
static bool probe_dead(struct ugpu_device *dev)
{
	enum ugpu_power_state ps;
	uint16_t vendor = 0;
	int ret;

	ps = device_power_state(dev);
	if (ps == UGPU_POWER_D3COLD)
		return false;
	ret = pci_cfg_read16(dev->vdev, PCI_CFG_VENDOR_ID, &vendor);
	if (ret == -ENODEV || (!ret && vendor == 0xffff)) {
		log_err(dev->ctx, "%s: config space %s: the device is gone", dev->vdev->name,
			ret ? "is unreachable" : "reads all-ones");
		vfio_dev_set_gone(dev->vdev);
		return true;
	}
	return false;
}

static void *watcher(void *arg)
{
	struct unplug *u = arg;
	struct ugpu_device *dev = u->dev;
	uint64_t healthy = now_us(), next_probe = healthy + UNPLUG_PROBE_MS * 1000ull;

	for (;;) {
		bool present = state_get(u) == UGPU_UNPLUG_PRESENT;
		struct pollfd pfd[2] = {
			{ .fd = u->wake_fd, .events = POLLIN },
			{ .fd = present ? dev->req_fd : -1, .events = POLLIN },
		};
		enum ugpu_unplug_kind kind = UGPU_UNPLUG_NONE;
		bool stop, api, inject;
		uint64_t v, now;

		if (poll(pfd, 2, present ? UNPLUG_POLL_MS : 1000) > 0 && (pfd[0].revents & POLLIN)) {
			if (read(u->wake_fd, &v, sizeof(v)) < 0) {
				/* EAGAIN: drained already */
			}
		}
		pthread_mutex_lock(&u->lock);
		stop = u->stop;
		api = u->api_request;
		inject = u->surprise_request;
		u->api_request = u->surprise_request = false;
		pthread_mutex_unlock(&u->lock);
		if (stop)
			break;
		if (!present) {
			if (api) {
				pthread_mutex_lock(&u->lock);
				pthread_cond_broadcast(&u->cond);
				pthread_mutex_unlock(&u->lock);
			}
			continue;
		}
		now = now_us();
		if (pfd[1].revents & POLLIN) {
			if (read(dev->req_fd, &v, sizeof(v)) == sizeof(v)) {
				pthread_mutex_lock(&u->lock);
				u->info.reqs += v;
				pthread_mutex_unlock(&u->lock);
				kind = UGPU_UNPLUG_REQUEST;
			}
		}
		if (inject || vfio_dev_is_gone(dev->vdev)) {
			kind = UGPU_UNPLUG_SURPRISE;
		} else if (kind == UGPU_UNPLUG_NONE && api) {
			kind = UGPU_UNPLUG_API;
		} else if (kind == UGPU_UNPLUG_NONE && now >= next_probe) {
			next_probe = now + UNPLUG_PROBE_MS * 1000ull;
			if (probe_dead(dev))
				kind = UGPU_UNPLUG_SURPRISE;
		}
		if (kind != UGPU_UNPLUG_NONE)
			removal_run(u, kind, healthy);
		else
			healthy = now;
	}
	return NULL;
}

static void wake(struct unplug *u)
{
	uint64_t one = 1;

	if (write(u->wake_fd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is saturated, the watcher wakes anyway */
	}
}

int unplug_init(struct ugpu_device *dev)
{
	struct unplug *u = calloc(1, sizeof(*u));
	int ret;

	if (!u)
		return -ENOMEM;
	u->dev = dev;
	u->info.size = sizeof(u->info);
	u->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (u->wake_fd < 0) {
		ret = -errno;
		goto out_free;
	}
	pthread_mutex_init(&u->lock, NULL);
	pthread_cond_init(&u->cond, NULL);
	dev->unplug = u;
	ret = -pthread_create(&u->thread, NULL, watcher, u);
	if (ret) {
		log_err(dev->ctx, "%s: cannot start the removal watcher: %s", dev->vdev->name,
			ugpu_strerror(ret));
		goto out_destroy;
	}
	return 0;

out_destroy:
	dev->unplug = NULL;
	pthread_cond_destroy(&u->cond);
	pthread_mutex_destroy(&u->lock);
	close(u->wake_fd);
out_free:
	free(u);
	return ret;
}

void unplug_fini(struct ugpu_device *dev)
{
	struct unplug *u = dev->unplug;

	if (!u)
		return;
	pthread_mutex_lock(&u->lock);
	u->stop = true;
	pthread_mutex_unlock(&u->lock);
	wake(u);
	/* Bounded: a removal in progress has bounded steps. */
	pthread_join(u->thread, NULL);
	dev->unplug = NULL;
	pthread_cond_destroy(&u->cond);
	pthread_mutex_destroy(&u->lock);
	close(u->wake_fd);
	free(u);
}

void unplug_step_note(struct ugpu_device *dev, const char *step)
{
	struct unplug *u = dev->unplug;
	void (*fn)(void *, struct ugpu_device *, const char *);
	void *arg;

	if (!u)
		return;
	pthread_mutex_lock(&u->lock);
	fn = u->obs;
	arg = u->obs_arg;
	pthread_mutex_unlock(&u->lock);
	log_dbg(dev->ctx, "%s: teardown: %s", dev->vdev->name, step);
	if (fn)
		fn(arg, dev, step);
}

void unplug_set_step_observer(struct ugpu_device *dev,
			      void (*fn)(void *arg, struct ugpu_device *dev, const char *step),
			      void *arg)
{
	struct unplug *u = dev->unplug;

	pthread_mutex_lock(&u->lock);
	u->obs = fn;
	u->obs_arg = arg;
	pthread_mutex_unlock(&u->lock);
}

int unplug_inject_surprise(struct ugpu_device *dev)
{
	struct unplug *u = dev ? dev->unplug : NULL;

	if (!u)
		return -EINVAL;
	pthread_mutex_lock(&u->lock);
	u->surprise_request = true;
	pthread_mutex_unlock(&u->lock);
	wake(u);
	return 0;
}

/* ---- public API -------------------------------------------------------------- */

UGPU_API int ugpu_device_set_removal_callback(struct ugpu_device *dev, ugpu_removal_fn fn,
					      void *user)
{
	struct unplug *u;

	if (!dev || !dev->unplug)
		return -EINVAL;
	u = dev->unplug;
	pthread_mutex_lock(&u->lock);
	u->fn = fn;
	u->user = user;
	pthread_mutex_unlock(&u->lock);
	return 0;
}

UGPU_API int ugpu_device_unplug(struct ugpu_device *dev)
{
	struct timespec ts;
	struct unplug *u;
	unsigned int postponed;
	int ret = 0;

	if (!dev || !dev->unplug)
		return -EINVAL;
	u = dev->unplug;
	if (pthread_equal(pthread_self(), u->thread))
		return -EDEADLK;
	pthread_mutex_lock(&u->lock);
	postponed = u->postponed;
	if (state_get(u) != UGPU_UNPLUG_REMOVED) {
		u->api_request = true;
		wake(u);
	}
	ts = deadline_after_ms(UNPLUG_API_TIMEOUT_MS);
	while (state_get(u) != UGPU_UNPLUG_REMOVED && ret == 0) {
		ret = -pthread_cond_timedwait(&u->cond, &u->lock, &ts);
		/* The removal was given up on (and will be retried). */
		if (!ret && u->postponed != postponed)
			ret = -ETIMEDOUT;
	}
	if (!ret)
		ret = u->info.status;
	pthread_mutex_unlock(&u->lock);
	return ret;
}

UGPU_API bool ugpu_device_is_gone(struct ugpu_device *dev)
{
	if (!dev || !dev->unplug)
		return false;
	return state_get(dev->unplug) != UGPU_UNPLUG_PRESENT;
}

UGPU_API int ugpu_device_unplug_info(struct ugpu_device *dev, struct ugpu_unplug_info *info)
{
	struct ugpu_unplug_info i;
	struct unplug *u;
	size_t n;

	if (!dev || !dev->unplug || !info || info->size < sizeof(info->size))
		return -EINVAL;
	u = dev->unplug;
	pthread_mutex_lock(&u->lock);
	i = u->info;
	i.state = state_get(u);
	pthread_mutex_unlock(&u->lock);
	i.size = info->size;
	n = info->size < sizeof(i) ? info->size : sizeof(i);
	memcpy(info, &i, n);
	return 0;
}

UGPU_API int ugpu_device_lost_bos(struct ugpu_device *dev, struct ugpu_bo **bos, size_t max,
				  size_t *count)
{
	struct bo_mgr *m;
	size_t n = 0;

	if (!dev || !dev->bo_mgr || !count || (max && !bos))
		return -EINVAL;
	m = dev->bo_mgr;
	pthread_mutex_lock(&m->lock);
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (!bo->lost || bo->driver_owned)
			continue;
		if (n < max) {
			ugpu_bo_get(bo);
			bos[n] = bo;
		}
		n++;
	}
	pthread_mutex_unlock(&m->lock);
	*count = n;
	return 0;
}

UGPU_API const char *ugpu_unplug_state_name(enum ugpu_unplug_state state)
{
	switch (state) {
	case UGPU_UNPLUG_PRESENT:
		return "present";
	case UGPU_UNPLUG_REMOVING:
		return "removing";
	case UGPU_UNPLUG_REMOVED:
		return "removed";
	}
	return "?";
}

UGPU_API const char *ugpu_unplug_kind_name(enum ugpu_unplug_kind kind)
{
	switch (kind) {
	case UGPU_UNPLUG_NONE:
		return "none";
	case UGPU_UNPLUG_REQUEST:
		return "request";
	case UGPU_UNPLUG_API:
		return "api";
	case UGPU_UNPLUG_SURPRISE:
		return "surprise";
	}
	return "?";
}
