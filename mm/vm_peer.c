/* SPDX-License-Identifier: MIT */
/*
 * Peer binds: ugpu_vm_bind() of another device's BO, used in place through
 * this device's window onto the peer's VRAM BAR (the window is mm/p2p.c's;
 * docs/multi-device.md). The BO is pinned in its VRAM and its device held
 * awake while bound; a peer that goes has its entries zeroed first
 * (vm_peer_revoke_locked()). The page tables and the bind list are
 * mm/vm.c's (mm/vm_bind.h); locks: mm/vm.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

#include "mm/bo.h"
#include "mm/bo_rpm.h"
#include "mm/p2p.h"
#include "mm/vm.h"
#include "mm/vm_bind.h"
#include "mm/vram.h"
#include "base/log.h"
#include "src/device.h"

/* One run of the peer BO's VRAM that the bind maps: byte @bo_off of the BO
 * is at the peer's VRAM offset @vram_off for @len bytes. */
struct peer_seg {
	uint64_t bo_off, vram_off, len;
};

/* The runs of [@off, +@bytes) of @bo (in VRAM; its manager lock held). */
static size_t peer_segs_locked(const struct ugpu_bo *bo, uint64_t off, uint64_t bytes,
			       struct peer_seg *segs, size_t max)
{
	struct buddy_block *blk;
	uint64_t pos = 0, end = off + bytes;
	size_t n = 0;

	buddy_list_for_each(blk, bo->vram) {
		uint64_t bsz = vram_block_size(blk), s = pos, e = pos + bsz;

		if (s < off)
			s = off;
		if (e > end)
			e = end;
		if (s < e) {
			if (n == max)
				return max + 1;
			segs[n++] = (struct peer_seg){ .bo_off = s,
						       .vram_off = buddy_block_offset(blk) + s - pos,
						       .len = e - s };
		}
		pos += bsz;
	}
	return n;
}

#define PEER_SEGS_MAX 64

/* mm/vm.h */
int peer_bar_get_locked(struct ugpu_device *peer, void **vaddr, int *fd, uint64_t *fd_off)
{
	int ret = peer->vdev->ops->region_fd(peer->vdev, peer->profile->vram_region, fd, fd_off);

	if (!ret) {
		*fd = fcntl(*fd, F_DUPFD_CLOEXEC, 0);
		ret = *fd < 0 ? -errno : 0;
	}
	*vaddr = peer->vram;
	return ret;
}

/*
 * ugpu_vm_bind() of a BO of another device: the BO is pinned in its VRAM
 * (one pin per run of its blocks), its device held awake, and @vm's
 * device maps the peer's VRAM BAR into its DMA space (a window, made once):
 * each run is an iova bind into that window.
 */
int vm_bind_peer(struct ugpu_vm *vm, struct ugpu_bo *bo, uint64_t bo_offset, uint64_t va,
			uint64_t bytes, uint32_t flags)
{
	struct ugpu_device *dev = vm->dev, *peer;
	struct peer_seg segs[PEER_SEGS_MAX];
	struct vm_bind *b[PEER_SEGS_MAX] = { 0 };
	struct rpm *held = NULL, *peer_held[PEER_SEGS_MAX] = { 0 };
	struct bo_mgr *m = dev->bo_mgr, *pm;
	struct list_link *at;
	size_t nseg = 0, pinned = 0, i;
	void *vaddr = NULL;
	uint64_t fd_off = 0, win;
	int ret, fd = -1;

	peer = bo_dev(bo);
	if (peer == dev) /* it came back meanwhile */
		return ugpu_vm_bind(vm, bo, bo_offset, va, bytes, flags);
	if (peer->ctx != dev->ctx) {
		log_err(dev->ctx, "ugpu_vm_bind: BO '%s' belongs to another context", bo->name);
		return -EXDEV;
	}
	/* drm_pagemap's rule: a device uses memory of another in place only
	 * when they share an owner (here: fast links join them) */
	if (!device_same_owner(dev, peer)) {
		log_err(dev->ctx, "ugpu_vm_bind: BO '%s' belongs to %s, which is not in the owner group of %s (no fast link joins them, or it is removed)",
			bo->name, peer->name, dev->name);
		return -EINVAL;
	}
	/* The peer's BO stays where it is while bound (its move would not
	 * reach this device's page tables): pinned, its device awake. */
	ret = ugpu_bo_pin(bo);
	if (ret)
		return ret;
	pinned = 1;
	ret = bo_lock(bo, NULL, &pm);
	if (ret)
		goto out_unpin;
	if (bo->dev != peer) {
		/* it moved before the pin held it: look again from the top
		 * (pinned now, it stays where it is) */
		pthread_mutex_unlock(&pm->lock);
		ugpu_bo_unpin(bo);
		return ugpu_vm_bind(vm, bo, bo_offset, va, bytes, flags);
	}
	if (pm->closed || device_is_removed(peer)) {
		ret = -ENODEV;
	} else if (bo->placement != UGPU_PLACEMENT_VRAM) {
		log_err(dev->ctx, "ugpu_vm_bind: BO '%s' of %s is not in its VRAM: a peer's BO binds in place only from there",
			bo->name, peer->name);
		ret = -EINVAL;
	} else {
		nseg = peer_segs_locked(bo, bo_offset, bytes, segs, PEER_SEGS_MAX);
		if (nseg > PEER_SEGS_MAX) {
			log_err(dev->ctx, "ugpu_vm_bind: BO '%s' of %s is in more than %d pieces of VRAM",
				bo->name, peer->name, PEER_SEGS_MAX);
			ret = -ENOMEM;
		} else {
			ret = peer_bar_get_locked(peer, &vaddr, &fd, &fd_off);
		}
	}
	pthread_mutex_unlock(&pm->lock);
	if (ret)
		goto out_unpin;
	for (i = 0; i < nseg; i++) {
		if (i && (ret = ugpu_bo_pin(bo)))
			goto out_unpin;
		pinned = i + 1;
		if ((ret = bo_rpm_hold(peer, &peer_held[i])) ||
		    !(b[i] = calloc(1, sizeof(*b[i])))) {
			ret = ret ? ret : -ENOMEM;
			goto out_unpin;
		}
	}
	ret = bo_rpm_hold(dev, &held);
	if (ret)
		goto out_unpin;
	ret = vm_bind_begin(vm, m, va, bytes, &at);
	if (ret == -EEXIST) {
		log_err(dev->ctx, "ugpu_vm_bind: [0x%" PRIx64 ", +0x%" PRIx64 ") overlaps a bind of VM '%s'",
			va, bytes, vm->name);
		ret = -EINVAL;
	}
	if (ret)
		goto out_unlock_vm;
	ret = p2p_win_get_locked(dev, peer, vaddr, fd, fd_off, &win);
	for (i = 0; !ret && i < nseg; i++) {
		if (i)
			p2p_win_get_locked(dev, peer, vaddr, fd, fd_off, &win); /* one per bind */
		b[i]->iova = win + segs[i].vram_off;
		b[i]->va = va + segs[i].bo_off - bo_offset;
		b[i]->bytes = segs[i].len;
		b[i]->flags = flags | VM_BIND_PEER;
		b[i]->peer_bo = bo;
		b[i]->peer_dev = peer;
		b[i]->peer_rpm = peer_held[i];
		ugpu_bo_get(bo);
		list_init(&b[i]->bo_link);
		vm_bind_insert_locked(vm, at, b[i]);
		vm->nbinds++;
		vm->bound_bytes += segs[i].len;
		b[i] = NULL;
		peer_held[i] = NULL;
	}
	pthread_mutex_unlock(&m->lock);
	if (!ret)
		pinned = 0; /* the binds hold the pins now */
out_unlock_vm:
	pthread_mutex_unlock(&vm->lock);
	bo_rpm_release(held);
out_unpin:
	for (i = 0; i < PEER_SEGS_MAX; i++) {
		free(b[i]);
		bo_rpm_release(peer_held[i]);
	}
	for (i = 0; i < pinned; i++)
		ugpu_bo_unpin(bo);
	if (fd >= 0)
		close(fd);
	return ret;
}

/* Hand @b's runtime-PM reference of its exporter to the caller's array
 * (kept by the bind, released at its unbind, when the array cannot grow). */
static void peer_rpm_take(struct vm_bind *b, struct rpm ***held, size_t *nheld, size_t *cap)
{
	if (!b->peer_rpm)
		return;
	if (*nheld == *cap) {
		size_t c = *cap ? 2 * *cap : 16;
		struct rpm **nv = realloc(*held, c * sizeof(*nv));

		if (!nv)
			return;
		*held = nv;
		*cap = c;
	}
	(*held)[(*nheld)++] = b->peer_rpm;
	b->peer_rpm = NULL;
}

uint64_t vm_peer_revoke_locked(struct ugpu_device *importer, struct ugpu_device *exporter,
			       struct rpm ***held, size_t *nheld)
{
	struct vm_mgr *vmm = importer->vm_mgr;
	uint64_t n = 0;
	size_t cap = *nheld;

	if (!vmm)
		return 0;
	pthread_mutex_lock(&vmm->lock);
	list_for_each(l, &vmm->vms) {
		struct ugpu_vm *vm = list_entry(l, struct ugpu_vm, link);
		uint64_t here = 0;

		if (vm->dead)
			continue;
		list_for_each(k, &vm->binds) {
			struct vm_bind *b = list_entry(k, struct vm_bind, vm_link);

			if (!(b->flags & VM_BIND_PEER) || b->peer_dev != exporter || b->revoked)
				continue;
			vm_bind_zero_locked(vm, b);
			b->revoked = true;
			here++;
			peer_rpm_take(b, held, nheld, &cap);
		}
		if (here)
			vm_next_gen_locked(vm);
		n += here;
	}
	pthread_mutex_unlock(&vmm->lock);
	return n;
}

size_t vm_peer_let_go_locked(struct ugpu_device *importer, struct rpm ***held, size_t *nheld)
{
	struct vm_mgr *vmm = importer->vm_mgr;
	size_t cap = *nheld, before = *nheld;

	if (!vmm)
		return 0;
	pthread_mutex_lock(&vmm->lock);
	list_for_each(l, &vmm->vms) {
		struct ugpu_vm *vm = list_entry(l, struct ugpu_vm, link);

		list_for_each(k, &vm->binds) {
			struct vm_bind *b = list_entry(k, struct vm_bind, vm_link);

			if (b->flags & VM_BIND_PEER)
				peer_rpm_take(b, held, nheld, &cap);
		}
	}
	pthread_mutex_unlock(&vmm->lock);
	return *nheld - before;
}
