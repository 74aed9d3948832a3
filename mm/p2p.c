/* SPDX-License-Identifier: MIT */
/*
 * Peer access in place: windows onto a peer's VRAM in a device's DMA space
 * (mm/p2p.h; docs/multi-device.md). The binds that use them are mm/vm_peer.c's
 * and mm/vm_svm.c's.
 *
 * Locking: a device's windows are under its BO manager lock (struct
 * bo_mgr.p2p). The exporter's @p2p_gone flag is set before its windows are
 * revoked, and a window is made only under the importer's lock with the
 * flag clear: so a revocation, which takes each importer's lock, sees every
 * window made before it, and none is made after.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

#include "mm/bo.h"
#include "base/sysmem.h"
#include "mm/p2p.h"
#include "mm/vm.h"
#include "base/clock.h"
#include "base/log.h"
#include "src/device.h"

#define NWIN (sizeof(((struct bo_mgr *)0)->p2p) / sizeof(((struct bo_mgr *)0)->p2p[0]))

static struct p2p_win *win_find(struct bo_mgr *m, struct ugpu_device *peer)
{
	for (size_t i = 0; i < NWIN; i++)
		if (m->p2p[i].refs && m->p2p[i].peer == peer)
			return &m->p2p[i];
	return NULL;
}

int p2p_win_get_locked(struct ugpu_device *dev, struct ugpu_device *peer, void *vaddr, int fd,
		       uint64_t fd_off, uint64_t *iova)
{
	struct bo_mgr *m = dev->bo_mgr;
	struct p2p_win *w = win_find(m, peer);
	int ret;

	if (device_is_removed(dev) || __atomic_load_n(&peer->p2p_gone, __ATOMIC_ACQUIRE))
		return -ENODEV;
	if (w && w->revoked)
		return -ENODEV; /* the peer is going: its last binds still hold it */
	if (!w) {
		for (size_t i = 0; i < NWIN && !w; i++)
			if (!m->p2p[i].refs)
				w = &m->p2p[i];
		if (!w)
			return -ENOSPC;
		/* vfio type1 does peer-to-peer exactly so: the peer's BAR mmap
		 * is DMA-mapped like memory (vfio-user: the same as a file) */
		ret = dma_map(&dev->dma, vaddr, peer->vram_size, fd, fd_off,
			      VFIO_DMA_READ | VFIO_DMA_WRITE, &w->iova);
		if (ret) {
			log_err(dev->ctx, "%s: cannot map the VRAM of %s into its DMA space: %s",
				dev->name, peer->name, ugpu_strerror(ret));
			return ret;
		}
		w->peer = peer;
		w->size = peer->vram_size;
		w->revoked = false;
		device_get(peer);
		log_info(dev->ctx, "%s: the VRAM of %s (%" PRIu64 " MiB) is mapped at IOVA 0x%" PRIx64,
			 dev->name, peer->name, peer->vram_size >> 20, w->iova);
	}
	w->refs++;
	*iova = w->iova;
	return 0;
}

void p2p_win_put(struct ugpu_device *dev, struct ugpu_device *peer)
{
	struct bo_mgr *m = dev->bo_mgr;
	struct p2p_win *w;
	bool last = false;

	bo_mgr_lock(m);
	w = win_find(m, peer);
	if (w && !--w->refs) {
		if (!w->revoked && !device_is_removed(dev))
			dma_unmap(&dev->dma, w->iova, w->size);
		w->peer = NULL;
		last = true;
	}
	pthread_mutex_unlock(&m->lock);
	if (last)
		device_put(peer);
}

/* Unmap @w (manager lock held): its binds' entries are zeroed already. */
static void win_revoke_locked(struct ugpu_device *dev, struct p2p_win *w)
{
	int ret;

	if (w->revoked)
		return;
	ret = device_is_removed(dev) ? 0 : dma_unmap(&dev->dma, w->iova, w->size);
	if (ret && ret != -ENODEV)
		log_warn(dev->ctx, "%s: unmapping the window onto %s failed: %s", dev->name,
			 w->peer->name, ugpu_strerror(ret));
	w->revoked = true;
}

/* ---- staging for moves through system memory ---------------------------- */

static void stage_drop_locked(struct ugpu_device *dev, struct p2p_stage *st)
{
	if (st->iova && !device_is_removed(dev))
		dma_unmap(&dev->dma, st->iova, st->mem.size);
	if (st->peer_iova && !device_is_removed(st->peer))
		dma_unmap(&st->peer->dma, st->peer_iova, st->mem.size);
	sysmem_destroy(&st->mem);
	*st = (struct p2p_stage){ .mem = { .fd = -1 } };
}

int p2p_stage_get_locked(struct ugpu_device *dev, struct ugpu_device *peer, uint64_t *iova,
			 uint64_t *peer_iova)
{
	struct bo_mgr *m = dev->bo_mgr;
	struct p2p_stage *st = NULL;
	size_t i;
	int ret;

	/* @dev going is fine (its removal sends BOs to peers through here;
	 * its own release drops the buffer); @peer going is not: its
	 * revocation, which takes @dev's lock, must find every buffer mapped
	 * into it */
	if (device_is_removed(dev) || device_is_removed(peer) ||
	    __atomic_load_n(&peer->p2p_gone, __ATOMIC_ACQUIRE))
		return -ENODEV;
	for (i = 0; i < NWIN && !st; i++)
		if (m->stage[i].peer == peer)
			st = &m->stage[i];
	if (!st) {
		for (i = 0; i < NWIN && !st; i++)
			if (!m->stage[i].peer)
				st = &m->stage[i];
		if (!st)
			return -ENOSPC;
		ret = sysmem_create(dev->ctx, P2P_STAGE_BYTES, "ugpu-p2p-stage", &st->mem);
		if (ret)
			return ret;
		st->peer = peer;
		ret = dma_map_sysmem(&dev->dma, &st->mem, VFIO_DMA_READ | VFIO_DMA_WRITE, &st->iova);
		if (!ret)
			ret = dma_map_sysmem(&peer->dma, &st->mem, VFIO_DMA_READ | VFIO_DMA_WRITE,
					     &st->peer_iova);
		if (ret) {
			log_err(dev->ctx, "%s: no staging buffer for moves to %s: %s", dev->name,
				peer->name, ugpu_strerror(ret));
			stage_drop_locked(dev, st);
			return ret;
		}
	}
	*iova = st->iova;
	*peer_iova = st->peer_iova;
	return 0;
}

void p2p_revoke_exporter(struct ugpu_device *exporter)
{
	struct ugpu_device *v[16];
	unsigned int n, i;

	__atomic_store_n(&exporter->p2p_gone, 1, __ATOMIC_RELEASE);
	n = device_others_get(exporter, v, 16);
	for (i = 0; i < n; i++) {
		struct ugpu_device *dev = v[i];
		struct bo_mgr *m = dev->bo_mgr;
		struct p2p_win *w;
		struct rpm *held = NULL, **peer_held = NULL;
		size_t npeer_held = 0;
		uint64_t binds;
		bool live;

		bo_mgr_lock(m);
		for (size_t k = 0; k < NWIN; k++)
			if (m->stage[k].peer == exporter)
				stage_drop_locked(dev, &m->stage[k]);
		w = win_find(m, exporter);
		live = w && !w->revoked;
		pthread_mutex_unlock(&m->lock);
		if (!live) {
			device_put(dev); /* no window onto it: nothing to wake for */
			continue;
		}
		/* its page tables are in its VRAM: awake to write them (not
		 * when its own removal found it unreadable: that one may be
		 * waiting for ours, and there is nothing to wake) */
		if (device_vram_lost(dev) || bo_rpm_hold(dev, &held))
			held = NULL; /* gone meanwhile: nothing to write */
		bo_mgr_lock(m);
		w = win_find(m, exporter);
		if (w && !w->revoked) {
			binds = device_is_removed(dev) ? 0
						       : vm_peer_revoke_locked(dev, exporter, &peer_held,
									       &npeer_held);
			win_revoke_locked(dev, w);
			log_info(dev->ctx, "%s: %s is going: %" PRIu64 " peer binds into its VRAM revoked",
				 dev->name, exporter->name, binds);
		}
		pthread_mutex_unlock(&m->lock);
		/* the exporter's removal waits for its runtime-PM users */
		for (size_t k = 0; k < npeer_held; k++)
			bo_rpm_release(peer_held[k]);
		free(peer_held);
		bo_rpm_release(held);
		/* its kernels held for the exporter's suspend run now (and
		 * fault on the revoked binds) */
		vm_sched_release_held(dev);
		device_put(dev);
	}
}

int p2p_hold_importers(struct ugpu_device *exporter)
{
	uint64_t until = now_us() + P2P_HOLD_WAIT_MS * 1000ull;

	/* sequentially consistent against vm_peer_enter_locked(): raise,
	 * then read, on both sides */
	__atomic_store_n(&exporter->p2p_held, 1, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&exporter->p2p_users, __ATOMIC_SEQ_CST)) {
		if (now_us() >= until) {
			p2p_unhold(exporter);
			log_err(exporter->ctx, "%s: kernels of other devices still read its VRAM in place after %d ms: no suspend",
				exporter->name, P2P_HOLD_WAIT_MS);
			return -ETIMEDOUT;
		}
		usleep(500);
	}
	return 0;
}

void p2p_unhold(struct ugpu_device *exporter)
{
	__atomic_store_n(&exporter->p2p_held, 0, __ATOMIC_SEQ_CST);
}

void p2p_kick_importers(struct ugpu_device *exporter)
{
	struct ugpu_device *v[16];
	unsigned int n, i;

	if (__atomic_load_n(&exporter->p2p_held, __ATOMIC_SEQ_CST))
		return;
	n = device_others_get(exporter, v, 16);
	for (i = 0; i < n; i++) {
		vm_sched_release_held(v[i]);
		device_put(v[i]);
	}
}

void p2p_release_importer_locked(struct ugpu_device *dev)
{
	struct bo_mgr *m = dev->bo_mgr;

	for (size_t i = 0; i < NWIN; i++) {
		if (m->p2p[i].refs)
			win_revoke_locked(dev, &m->p2p[i]);
		if (m->stage[i].peer)
			stage_drop_locked(dev, &m->stage[i]);
	}
}

void p2p_importer_let_go(struct ugpu_device *dev)
{
	struct bo_mgr *m = dev->bo_mgr;
	struct rpm **held = NULL;
	size_t nheld = 0;

	bo_mgr_lock(m);
	vm_peer_let_go_locked(dev, &held, &nheld);
	pthread_mutex_unlock(&m->lock);
	for (size_t k = 0; k < nheld; k++)
		bo_rpm_release(held[k]);
	free(held);
	if (nheld)
		log_info(dev->ctx, "%s: gone: its %zu peer binds hold their exporters awake no longer",
			 dev->name, nheld);
}
