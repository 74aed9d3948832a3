/* SPDX-License-Identifier: MIT */
/*
 * The memory layer's part of a device removal (src/unplug.h, struct
 * unplug_mem_ops): every BO of the program leaves VRAM (moved by the
 * engines, or adopted from a backup, or marked lost), every DMA mapping goes,
 * and CPU mappings are held while the device is torn down. Also the public
 * list of lost BOs. The removal sequence itself is src/unplug.c's; this file
 * owns every BO field it changes. docs/unplug.md has the guarantees.
 *
 * Locking: the removal holds the host-suspend lock and, between lock and
 * unlock, the manager lock: no BO changes place meanwhile.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <ugpu/unplug.h>

#include "engines/engine.h"
#include "mm/backup_track.h"
#include "mm/bo.h"
#include "mm/bo_rpm.h"
#include "mm/cpu_map.h"
#include "mm/p2p.h"
#include "mm/peer.h"
#include "mm/vram.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/progress.h"
#include "base/test_point.h"
#include "src/device.h"
#include "src/remote.h"
#include "src/suspend.h"
#include "src/unplug.h"

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
static void vram_drop_locked(struct bo_mgr *m, struct ugpu_bo *bo, enum drop_to to,
			     struct sysmem *sys)
{
	struct ugpu_device *dev = m->dev;
	bool blocked = false;

	if (bo->map) {
		int r = cpu_map_block(bo->map);

		if (r)
			log_err(dev->ctx, "%s: cannot block the CPU mapping of BO '%s': %s",
				dev->name, bo->name, ugpu_strerror(r));
		blocked = !r;
	}
	bo_lru_del_locked(bo);
	bo_rpm_forget(bo);
	vram_free(dev, bo->vram, 0);
	m->vram_bytes -= bo->size;
	if (to != DROP_LOST) {
		/* offered to a peer's VRAM after the teardown (survivors_to_peers) */
		bo->survivor = true;
		if (to == DROP_TO_BACKUP) {
			uint64_t bad;

			/* The backup becomes the BO's only copy: check it as a
			 * resume would. */
			if (bo->track && track_verify(bo->track, bo->backup.mem.vaddr, &bad)) {
				bo->corrupt++;
				pm_report_corrupt(dev, bo->name, bad, bo->size);
			}
			m->backup_mem -= bo->backup.mem.size;
			bo->sys = bo->backup;
			bo->backup.mem.fd = -1;
			bo->backup.mem.vaddr = NULL;
			bo->backup.iova = 0;
		} else {
			bo->sys.mem = *sys; /* not mapped for a device: iova 0 */
			bo->sys.iova = 0;
			sys->fd = -1;
		}
		bo_set_placement(bo, UGPU_PLACEMENT_SYSTEM);
		m->sys_bytes += bo->size;
		only_system(bo);
	} else {
		bo_set_placement(bo, UGPU_PLACEMENT_NONE);
		bo->lost = true;
	}
	bo_backup_drop(dev, bo);
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

struct evac {
	struct bo_mgr *m;
	bool *surprise; /* the device cannot be reached: nothing is copied from it */
	bool suspended; /* host-suspended: VRAM is powered off, backups hold it */
	struct unplug_counts *c;
};

static void evacuate_one(struct evac *e, struct ugpu_bo *bo)
{
	struct ugpu_device *dev = e->m->dev;
	bool has_backup = bo_has_backup(bo) && bo->backup_valid;
	int ret;

	if (bo->placement != UGPU_PLACEMENT_VRAM)
		return; /* system memory is kept; a lost BO stays lost */
	if (bo->driver_owned) {
		/* Rings, page tables: device resources, freed by their owners
		 * with the device. A BO the program created with UGPU_BO_KERNEL
		 * is the program's and is kept like any other (below). */
		e->c->kernel_bos++;
		return;
	}
	if (!*e->surprise && !e->suspended) {
		enum ugpu_placement saved[UGPU_BO_MAX_PLACEMENTS];
		unsigned int n = bo->nplacements;

		memcpy(saved, bo->placements, sizeof(saved));
		only_system(bo);
		ret = bo_move_locked(bo, UGPU_PLACEMENT_SYSTEM);
		if (!ret) {
			e->c->bos_moved++;
			e->c->bytes_moved += bo->size;
			return;
		}
		memcpy(bo->placements, saved, sizeof(saved));
		bo->nplacements = n;
		log_err(dev->ctx, "%s: removal: BO '%s' could not be moved to system memory: %s",
			dev->name, bo->name, ugpu_strerror(ret));
		if (vfio_dev_is_gone(dev->vdev)) {
			log_err(dev->ctx, "%s: removal: the device stopped answering; what is still in VRAM is lost",
				dev->name);
			*e->surprise = true;
		}
	}
	/* A spilled backup is read back into memory first: the device's
	 * file is removed with its last backup. */
	if (has_backup && bo->spilled && (ret = bo_backup_unspill_locked(dev, bo))) {
		log_err(dev->ctx, "%s: removal: the spilled backup of BO '%s' cannot be read back: %s",
			dev->name, bo->name, ugpu_strerror(ret));
		has_backup = false;
	}
	if (has_backup) {
		vram_drop_locked(e->m, bo, DROP_TO_BACKUP, NULL);
		e->c->bos_adopted++;
		log_warn(dev->ctx, "%s: removal: BO '%s' (%" PRIu64 " bytes) kept from its suspend backup",
			 dev->name, bo->name, bo->size);
		return;
	}
	/* The device sleeps in runtime D3cold (or its wake failed): the
	 * runtime-PM backup holds what VRAM lost. */
	if (bo_rpm_take_backup(bo, NULL)) {
		struct sysmem sys;
		int r;

		test_point_obj(TEST_POINT_UNPLUG_ADOPTING, bo);
		r = sysmem_create(dev->ctx, bo->size, bo->name, &sys);

		/* the copy checks again: a backup gone between the look and
		 * the copy is not adopted as zeroes (a review, 2026-12-07) */
		if (!r && bo_rpm_take_backup(bo, sys.vaddr)) {
			vram_drop_locked(e->m, bo, DROP_TO_SYS, &sys);
			e->c->bos_adopted++;
			log_warn(dev->ctx, "%s: removal: BO '%s' (%" PRIu64 " bytes) kept from its runtime-PM (D3cold) backup",
				 dev->name, bo->name, bo->size);
			return;
		}
		if (!r)
			sysmem_destroy(&sys);
		log_err(dev->ctx, "%s: removal: %s BO '%s' from its runtime-PM backup",
			dev->name, r ? "no system memory to keep" : "the backup went while keeping",
			bo->name);
	}
	vram_drop_locked(e->m, bo, DROP_LOST, NULL);
	e->c->bos_lost++;
	e->c->bytes_lost += bo->size;
	log_err(dev->ctx, "%s: removal: BO '%s' (%" PRIu64 " bytes) was only in VRAM: its contents are LOST (reads fail with -ENODATA, CPU touches raise SIGBUS)",
		dev->name, bo->name, bo->size);
}

/* ---- ops ---------------------------------------------------------------------- */

static int evac_lock(void *arg, int timeout_ms)
{
	struct bo_mgr *m = arg;
	struct timespec ts = deadline_after_ms((uint64_t)timeout_ms);
	int ret = -pthread_mutex_timedlock(&m->lock, &ts);

	/* as bo_mgr_lock(): no move in its unlocked copy (mm/bo.h) */
	if (!ret && (ret = bo_mgr_wait_moves_locked(m, &ts)))
		pthread_mutex_unlock(&m->lock);
	return ret;
}

static void evac_unlock(void *arg)
{
	struct bo_mgr *m = arg;

	pthread_mutex_unlock(&m->lock);
}

static bool host_suspended(void *arg)
{
	struct bo_mgr *m = arg;

	return m->pm_state == BO_PM_SUSPENDED;
}

static void evacuate(void *arg, bool *surprise, struct unplug_counts *c)
{
	struct bo_mgr *m = arg;
	struct evac e = { .m = m, .surprise = surprise, .c = c };
	uint64_t total = 0, before;
	struct progress pr;

	e.suspended = m->pm_state == BO_PM_SUSPENDED;
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (bo->placement == UGPU_PLACEMENT_VRAM && !bo->driver_owned)
			total += bo->size;
	}
	progress_begin(&pr, m->dev->ctx, UGPU_PROGRESS_REMOVAL, m->dev->name, total);
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		before = bo->placement == UGPU_PLACEMENT_VRAM && !bo->driver_owned ? bo->size : 0;
		evacuate_one(&e, bo);
		progress_add(&pr, before);
	}
	progress_end(&pr, c->bos_lost ? -EIO : 0);
}

/* Remove every DMA mapping the BOs hold: the device must not reach memory
 * that lives on, and the transport must be left with nothing mapped. */
static void dma_release(void *arg)
{
	struct bo_mgr *m = arg;
	struct ugpu_device *dev = m->dev;

	p2p_release_importer_locked(dev); /* its windows onto peers */

	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (bo->sys.mem.fd >= 0 && bo->sys.iova) {
			int ret = dma_unmap(&dev->dma, bo->sys.iova, bo->sys.mem.size);

			if (ret && ret != -ENODEV)
				log_warn(dev->ctx, "%s: removal: DMA unmap of BO '%s' failed: %s",
					 dev->name, bo->name, ugpu_strerror(ret));
			bo->sys.iova = 0;
		}
		/* Backups (a prepared host suspend; rings' backups) have no use
		 * past the device. */
		bo_backup_drop(dev, bo);
	}
}

/*
 * CPU faults and the runtime-PM teardown. The BO fault hooks (mm/bo_rpm.c)
 * run on the cpu_map handler thread and use the BO runtime-PM state that
 * the "bo-rpm" teardown step detaches, while the application's threads keep
 * touching their mappings through the removal. So, before the device
 * teardown: block every mapping (a fault then parks without calling the
 * hooks) and make the handler thread finish whatever fault it is handling
 * (a barrier: an invalidation returns only once the handler has read its
 * event, i.e. after every earlier fault was handled, hooks included).
 * After the teardown the mappings are unblocked and fault to system memory.
 * bo_rpm_detach() is itself safe against running hooks (counted
 * lifetimes); the hold and barrier keep every fault parked for the whole
 * device teardown.
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
		log_warn(dev->ctx, "%s: removal: no memfd for the fault barrier", dev->name);
		if (fd >= 0)
			close(fd);
		return;
	}
	if (!cpu_map_create(maps, &barrier_ops, (void *)(intptr_t)fd, 4096, "unplug-barrier", &map,
			    &addr)) {
		(void)*(volatile char *)addr; /* mapped by the handler */
		if (cpu_map_invalidate(map))
			log_warn(dev->ctx, "%s: removal: fault barrier failed", dev->name);
		cpu_map_destroy(map);
	}
	close(fd);
}

static void detach(void *arg)
{
	struct bo_mgr *m = arg;

	m->pm_state = BO_PM_ACTIVE;
	pthread_cond_broadcast(&m->pm_cond); /* removed: nobody waits for a resume */
	m->vram_fd = -1; /* the transport's fd: closed by the teardown */
	if (!m->maps)
		return;
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (bo->map && !bo->map_blocked && !cpu_map_block(bo->map)) {
			bo->map_blocked = true;
			/* a touch now waits for the removal, which is bounded
			 * as a whole (not for a move: a long teardown is no
			 * stuck copy, and the BO's data is safe) */
			cpu_map_set_block_timeout(bo->map, UNPLUG_API_TIMEOUT_MS);
		}
	}
	handler_barrier(m->dev, m->maps);
}

static void maps_release(void *arg)
{
	struct bo_mgr *m = arg;

	bo_mgr_lock(m);
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (bo->map && bo->map_blocked) {
			cpu_map_set_block_timeout(bo->map, bo_map_block_timeout_ms(bo));
			cpu_map_unblock(bo->map);
		}
		bo->map_blocked = false;
	}
	pthread_mutex_unlock(&m->lock);
}

static void to_peers(void *arg, struct unplug_counts *c)
{
	struct bo_mgr *m = arg;
	void *sarg;
	const struct bo_svm_ops *sops = bo_svm_ops_get(m, &sarg);

	/* shared virtual memory's ranges first (their VRAM is kernel BOs,
	 * which bo_evacuate_to_peers() leaves) */
	if (sops && sops->to_peers)
		sops->to_peers(sarg, m->dev);
	bo_evacuate_to_peers(m->dev, c, false);
}

static void survivors_to_peers(void *arg, struct unplug_counts *c)
{
	struct bo_mgr *m = arg;

	bo_evacuate_to_peers(m->dev, c, true);
}

static void revoke_peers(void *arg)
{
	struct bo_mgr *m = arg;

	p2p_revoke_exporter(m->dev);
}

static void peer_binds_release(void *arg)
{
	struct bo_mgr *m = arg;

	p2p_importer_let_go(m->dev);
}

static const struct unplug_mem_ops evacuate_ops = {
	.lock = evac_lock,
	.unlock = evac_unlock,
	.host_suspended = host_suspended,
	.evacuate = evacuate,
	.dma_release = dma_release,
	.detach = detach,
	.maps_release = maps_release,
	.to_peers = to_peers,
	.revoke_peers = revoke_peers,
	.survivors_to_peers = survivors_to_peers,
	.peer_binds_release = peer_binds_release,
};

void evacuate_register(struct ugpu_device *dev)
{
	unplug_mem_register(dev, &evacuate_ops, dev->bo_mgr);
}

UGPU_API int ugpu_device_lost_bos(struct ugpu_device *dev, struct ugpu_bo **bos, size_t max,
				  size_t *count)
{
	if (dev && device_is_remote(dev))
		return -EOPNOTSUPP; /* not served through ugpud yet */
	struct bo_mgr *m;
	size_t n = 0;

	if (!dev || !dev->bo_mgr || !count || (max && !bos))
		return -EINVAL;
	m = dev->bo_mgr;
	bo_mgr_lock(m);
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

