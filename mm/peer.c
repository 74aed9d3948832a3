/* SPDX-License-Identifier: MIT */
/*
 * Moving a BO from one device to another device's VRAM (include/ugpu/bo.h:
 * ugpu_bo_migrate_device(); docs/multi-device.md).
 *
 * Over a fast fabric link the source device's copy engine writes the
 * destination's VRAM directly (PEER addresses); otherwise, or when asked,
 * the bytes go through system memory: the source's engine copies them out
 * into a buffer mapped in both devices' DMA spaces and the destination's
 * engine copies them in (a BO already in system memory is copied in from
 * where it is). Then the BO changes managers: it leaves the source's lists
 * and counters and joins the destination's, and bo->dev changes.
 *
 * Locking: both managers' locks, the lower device index first
 * (device_lock_first()); each device's runtime-PM reference is taken before
 * either (bo_rpm_hold(): a sleeping destination is woken before the copy
 * reaches its VRAM). bo->dev changes only with both held.
 * A CPU-mapped BO's map is blocked for the copy, handed to the destination
 * device's map manager (cpu_map_rehome(), under both locks, before bo->dev
 * changes: the runtime-PM fault hooks of one fault then always see one
 * device), and unblocked once bo->dev is the destination. Neither map
 * handler takes a manager lock, so holding both across that is safe.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include <ugpu/fabric.h>

#include "engines/engine.h"
#include "mm/bo.h"
#include "mm/bo_remote.h"
#include "mm/bo_rpm.h"
#include "mm/cpu_map.h"
#include "mm/p2p.h"
#include "mm/peer.h"
#include "mm/vm.h"
#include "mm/vram.h"
#include "src/unplug.h"
#include "base/log.h"
#include "src/device.h"

/* Largest single engine descriptor we queue (as mm/move.c). */
#define COPY_CHUNK (256ull << 20)
/* A direct copy this large or larger is split between two copy engines
 * (copy_to_peer()), at a multiple of PEER_SPLIT_ALIGN. */
#define PEER_SPLIT_MIN (1ull << 20)
#define PEER_SPLIT_ALIGN (64ull << 10)

/* The block of @l holding byte @off of the list, and where in it (*@pos);
 * NULL when the list holds @off bytes or fewer. */
static struct buddy_block *block_at(const struct buddy_list *l, uint64_t off, uint64_t *pos)
{
	struct buddy_block *b = buddy_list_first(l);

	while (b && off >= vram_block_size(b)) {
		off -= vram_block_size(b);
		b = buddy_list_next(l, b);
	}
	*pos = off;
	return b;
}

/*
 * Queue copies of bytes [@off, +@size) of @src (this device's VRAM blocks)
 * to the same bytes of @dst (blocks in the VRAM of fabric node @node) on
 * @e, walking both lists together. *@fence gets the last fence.
 */
static int copy_blocks_to_peer(struct engine *e, const struct buddy_list *src,
			       const struct buddy_list *dst, uint32_t node, uint64_t off,
			       uint64_t size, uint64_t *fence)
{
	uint64_t s_pos, d_pos, done = 0;
	struct buddy_block *s = block_at(src, off, &s_pos), *d = block_at(dst, off, &d_pos);
	int ret = 0;

	engine_plug(e);
	while (done < size && s && d) {
		uint64_t s_left = vram_block_size(s) - s_pos, d_left = vram_block_size(d) - d_pos;
		uint64_t n = s_left < d_left ? s_left : d_left;

		if (n > size - done)
			n = size - done;
		if (n > COPY_CHUNK)
			n = COPY_CHUNK;
		ret = engine_copy(e, engine_peer(node, buddy_block_offset(d) + d_pos),
				  engine_vram(buddy_block_offset(s) + s_pos), n, fence);
		if (ret)
			break;
		done += n;
		s_pos += n;
		d_pos += n;
		if (s_pos == vram_block_size(s)) {
			s = buddy_list_next(src, s);
			s_pos = 0;
		}
		if (d_pos == vram_block_size(d)) {
			d = buddy_list_next(dst, d);
			d_pos = 0;
		}
	}
	{
		int r = engine_unplug(e);

		if (!ret)
			ret = r;
	}
	if (!ret && done < size)
		ret = -EINVAL; /* the lists hold less than @size: a bug */
	return ret;
}

/* Wait for *@fence after a queueing that returned @ret (a pointer: the
 * queueing sets it, and an argument's order of evaluation is unspecified). */
static int copy_wait(struct engine *e, int ret, const uint64_t *fence, uint64_t size)
{
	if (!ret)
		ret = engine_wait(e, *fence, bo_copy_timeout_ms(size));
	if (ret)
		engine_reset(e);
	return ret;
}

/*
 * The first @size bytes of @src (this device's VRAM blocks) into @dst
 * (blocks in the VRAM of fabric node @node, a fast link away) by @dev's copy
 * engines. A copy of PEER_SPLIT_MIN or more is split in two halves, one per
 * engine: the two run at once (on the reference device, two threads on two
 * CPUs; one engine moved 2 MiB BOs at 7.0 GB/s against 11.9 for memcpy).
 * On a failure every engine used is reset. 0 or -errno.
 */
static int copy_to_peer(struct ugpu_device *dev, const struct buddy_list *src,
			const struct buddy_list *dst, uint32_t node, uint64_t size)
{
	struct engine *es[2] = { device_copy_engine(dev), dev->copy[1] };
	uint64_t fence[2] = { 0, 0 }, half = size;
	int n = es[1] && size >= PEER_SPLIT_MIN ? 2 : 1, ret = 0, r;

	if (n == 2)
		half = (size / 2 + PEER_SPLIT_ALIGN - 1) & ~(PEER_SPLIT_ALIGN - 1);
	/* both queued before either is waited for */
	for (int k = 0; k < n && !ret; k++)
		ret = copy_blocks_to_peer(es[k], src, dst, node, k ? half : 0,
					  k ? size - half : half, &fence[k]);
	for (int k = 0; k < n; k++) {
		r = fence[k] ? engine_wait(es[k], fence[k], bo_copy_timeout_ms(size)) : 0;
		if (!ret)
			ret = r;
	}
	if (ret)
		for (int k = 0; k < n; k++)
			engine_reset(es[k]);
	return ret;
}

/* @dev's engine copies @size bytes from @iova (its DMA space) into @blocks. */
static int copy_in(struct ugpu_device *dev, const struct buddy_list *blocks, uint64_t size,
		   uint64_t iova)
{
	struct engine *e = device_copy_engine(dev);
	uint64_t fence = 0;

	return copy_wait(e, bo_copy_queue(e, blocks, size, iova, true, &fence), &fence, size);
}

/*
 * Through system memory: @bo's bytes into @dst's @blocks. From VRAM through
 * the source's staging buffer for @dst (mapped in both DMA spaces, made
 * once: mm/p2p.c), chunk by chunk, out by the source's engine and in by the
 * destination's; from system memory straight from the BO's pages, mapped
 * into @dst's DMA space for the copy. Both locks held.
 */
static int copy_via_system(struct ugpu_bo *bo, struct ugpu_device *dst,
			   const struct buddy_list *blocks)
{
	struct ugpu_device *src = bo->dev;
	uint64_t iova_dst = 0;
	int ret, r;

	if (bo->placement == UGPU_PLACEMENT_VRAM) {
		struct engine *es = device_copy_engine(src), *ed = device_copy_engine(dst);
		uint64_t iova_src, off, fence = 0;

		ret = p2p_stage_get_locked(src, dst, &iova_src, &iova_dst);
		for (off = 0; !ret && off < bo->size; off += P2P_STAGE_BYTES) {
			uint64_t n = bo->size - off < P2P_STAGE_BYTES ? bo->size - off : P2P_STAGE_BYTES;

			ret = copy_wait(es, bo_copy_range_queue(es, bo->vram, off, n, iova_src, false,
								&fence),
					&fence, n);
			if (!ret)
				ret = copy_wait(ed, bo_copy_range_queue(ed, blocks, off, n, iova_dst, true,
									&fence),
						&fence, n);
		}
		return ret;
	}
	ret = dma_map_sysmem(&dst->dma, &bo->sys.mem, VFIO_DMA_READ | VFIO_DMA_WRITE, &iova_dst);
	if (ret)
		return ret;
	ret = copy_in(dst, blocks, bo->size, iova_dst);
	r = dma_unmap(&dst->dma, iova_dst, bo->sys.mem.size);
	return ret ? ret : r;
}

/* Take @bo off @src's manager and give it to @dst's, in @blocks of its
 * VRAM (which it now owns). Both locks held. */
static void rehome_locked(struct ugpu_bo *bo, struct ugpu_device *dst, struct buddy_list *blocks)
{
	struct ugpu_device *src = bo->dev;
	struct bo_mgr *ms = src->bo_mgr, *md = dst->bo_mgr;

	bo_rpm_forget(bo); /* off the source's runtime-PM lists */
	bo_lru_del_locked(bo);
	list_del(&bo->all);
	ms->nr_bos--;
	if (bo->placement == UGPU_PLACEMENT_VRAM) {
		vram_free(src, bo->vram, 0);
		ms->vram_bytes -= bo->size;
	} else {
		bo_sys_free(src, &bo->sys);
		ms->sys_bytes -= bo->size;
	}
	ms->peer_out++;

	device_get(dst); /* the handle's reference moves (the caller puts @src's) */
	__atomic_store_n(&bo->dev, dst, __ATOMIC_RELEASE);
	buddy_list_splice_tail(bo->vram, blocks);
	bo_set_placement(bo, UGPU_PLACEMENT_VRAM);
	/* A survivor of a removal (placements rewritten to system memory
	 * first) is the BO the program made again, on a device that has
	 * VRAM: a VRAM-only BO is VRAM-only here (found by test_model: host
	 * suspend's prepare sent it to system memory). */
	if (bo->user_nplacements) {
		memcpy(bo->placements, bo->user_placements, sizeof(bo->placements));
		bo->nplacements = bo->user_nplacements;
	}
	bo->survivor = false;
	list_add_tail(&md->all, &bo->all);
	md->nr_bos++;
	md->vram_bytes += bo->size;
	md->moves++;
	md->moved_bytes += bo->size;
	md->peer_in++;
	md->peer_bytes += bo->size;
	bo_lru_update_locked(bo);
}

int bo_move_to_device_locked(struct ugpu_bo *bo, struct ugpu_device *dst, uint32_t flags)
{
	struct ugpu_device *src = bo->dev;
	struct bo_mgr *ms = src->bo_mgr, *md = dst->bo_mgr;
	bool quiet = flags & BO_PEER_EVACUATE;
	struct buddy_list blocks;
	bool direct;
	int link, ret;

	/* @dst's removal or close has begun (p2p_gone: its peers' windows are
	 * being revoked): nothing more goes into its VRAM */
	if (ms->closed || md->closed || device_is_removed(dst) ||
	    __atomic_load_n(&dst->p2p_gone, __ATOMIC_ACQUIRE))
		return -ENODEV;
	/* A removal sends pinned BOs too: the device they were pinned on is
	 * going, and a peer's VRAM keeps the pin's promise (VRAM, no move
	 * until unpinned) better than system memory; the pin moves with it
	 * (a peer bind's pin as well: the removal revoked that bind first).
	 * CPU-mapped ones too (their map follows them, below), and GPU-bound
	 * ones: their binds are in the removed device's VMs, which die with
	 * it; they are orphaned before the move (vm_bo_orphan_binds_locked()). */
	if (quiet && (bo->driver_owned || bo->svm ||
		      ((flags & BO_PEER_SURVIVOR)
			       ? !bo->survivor || bo->placement != UGPU_PLACEMENT_SYSTEM
			       : bo->placement != UGPU_PLACEMENT_VRAM)))
		return -EAGAIN; /* not one a removal sends to a peer */
	/* Its memfd is mapped by a ugpud client (bo_sys_export()): the client's
	 * stores would go to memory the BO left. A removal leaves it in system
	 * memory (a survivor the daemon exported between the removal's steps
	 * 6 and 7, the review of 2026-12-07); a migrate is refused as
	 * move_locked() refuses it. */
	if (bo->sys_holds)
		return quiet ? -EAGAIN : -EBUSY;
	if (bo->driver_owned || bo->svm || !bo_placement_allowed(bo, UGPU_PLACEMENT_VRAM)) {
		log_err(src->ctx, "%s: BO '%s' may not move to the VRAM of %s (%s)", src->name,
			bo->name, dst->name,
			bo->driver_owned ? "a driver object" : "VRAM is not among its placements");
		return -EINVAL;
	}
	if (bo->placement == UGPU_PLACEMENT_NONE)
		return -ENODATA;
	if (!quiet && (bo->pin_count || list_linked(&bo->binds))) {
		log_err(src->ctx, "%s: BO '%s' cannot move to %s while it is %s", src->name, bo->name,
			dst->name, bo->pin_count ? "pinned" : "bound in a GPU VM");
		return -EBUSY;
	}
	if (quiet && vm_bo_busy_locked(bo))
		return -EBUSY; /* a kernel still runs on it (the removal stopped them) */
	if (ms->pm_state != BO_PM_ACTIVE || md->pm_state != BO_PM_ACTIVE)
		return -EBUSY; /* a host-suspend cycle is open on one of them */

	/* The path (docs/multi-device.md, "Which path a move takes"): over a
	 * fast link directly; over a slow one through system memory, which
	 * is faster on the reference device (two local copies at memory
	 * speed against one throttled to the link's 1 GiB/s: `ugpu-bench
	 * p2p`, the slow-link line), unless the caller asks for the link
	 * (UGPU_MIGRATE_DIRECT: it may know the system copy is the scarcer
	 * resource, e.g. memory bandwidth the host's own work needs). */
	link = device_link(src, dst);
	direct = bo->placement == UGPU_PLACEMENT_VRAM &&
		 (link == UGPU_LINK_FAST || (link == UGPU_LINK_SLOW && (flags & UGPU_MIGRATE_DIRECT))) &&
		 !device_is_removed(src) && src->num_copy_engines > 0 &&
		 !(flags & UGPU_MIGRATE_VIA_SYSTEM);
	if ((flags & UGPU_MIGRATE_DIRECT) && !direct) {
		log_err(src->ctx, "%s: BO '%s' cannot move directly to %s: %s", src->name, bo->name,
			dst->name,
			bo->placement != UGPU_PLACEMENT_VRAM ? "it is not in VRAM"
			: link == UGPU_LINK_NONE	     ? "no fabric link joins them"
							     : "no copy engine");
		return -ENOLINK;
	}
	if (bo->placement == UGPU_PLACEMENT_VRAM && device_is_removed(src))
		return -ENODEV; /* its removal is moving it right now */

	buddy_list_init(&blocks);
	if (flags & BO_PEER_EVACUATE) {
		/* a removal takes only free room: the peer's own BOs stay */
		unsigned int bf = bo->buddy_flags;

		if (bo->flags & UGPU_BO_CONTIGUOUS)
			bf |= BUDDY_CONTIGUOUS_ALLOCATION;
		ret = vram_alloc(dst, bo->size, 4096, bf, &blocks);
	} else {
		ret = bo_vram_alloc_evict_on_locked(dst, bo, &blocks);
	}
	if (ret)
		return ret;
	/* A CPU-mapped BO: its map follows it (docs/multi-device.md, "CPU
	 * mappings follow the BO"). Blocked for the copy like any move; then
	 * handed to @dst's map manager (its address kept) before bo->dev
	 * changes, so every fault's hooks see one device; unblocked once the
	 * BO is @dst's. */
	if (bo->map) {
		ret = bo_maps_get_locked(dst);
		if (!ret)
			ret = cpu_map_block(bo->map);
		if (ret) {
			log_err(src->ctx, "%s: BO '%s' cannot take its CPU mapping to %s: %s",
				src->name, bo->name, dst->name, ugpu_strerror(ret));
			vram_free(dst, &blocks, 0);
			return ret;
		}
	}
	if (direct) {
		ret = copy_to_peer(src, bo->vram, &blocks, dst->fabric_id, bo->size);
	} else {
		ret = copy_via_system(bo, dst, &blocks);
	}
	if (ret) {
		log_err(src->ctx, "%s: moving BO '%s' to %s %s failed (%s); it stays where it was",
			src->name, bo->name, dst->name, direct ? "over the fabric" : "through system memory",
			ugpu_strerror(ret));
		ms->copy_failures++;
		ret = -EIO;
		goto out_unblock;
	}
	if (bo->map) {
		ret = cpu_map_rehome(bo->map, md->maps);
		if (ret)
			goto out_unblock; /* the BO stays, its map with it */
	}
	if (quiet && list_linked(&bo->binds))
		log_info(src->ctx, "%s: removal: BO '%s': %u binds in its VMs orphaned", src->name,
			 bo->name, vm_bo_orphan_binds_locked(bo));
	log_dbg(src->ctx, "%s: BO '%s' (%" PRIu64 " bytes) moved to %s %s", src->name, bo->name,
		bo->size, dst->name, direct ? "over the fabric" : "through system memory");
	rehome_locked(bo, dst, &blocks);
	if (bo->map) {
		int r = cpu_map_unblock(bo->map);

		if (r)
			log_err(dst->ctx, "%s: unblocking the CPU mapping of BO '%s' failed: %s",
				dst->name, bo->name, ugpu_strerror(r));
	}
	if (direct)
		md->peer_direct++;
	else
		md->peer_via_system++;
	return 0;

out_unblock:
	if (bo->map)
		cpu_map_unblock(bo->map);
	vram_free(dst, &blocks, 0);
	return ret;
}

int bo_copy_to_peer(struct ugpu_bo *src, struct ugpu_bo *dst)
{
	struct ugpu_device *sdev = bo_dev(src), *ddev = bo_dev(dst);
	int ret;

	if (sdev == ddev || src->size != dst->size)
		return -EINVAL;
	bo_lock_pair(sdev, ddev);
	if (sdev->bo_mgr->closed || ddev->bo_mgr->closed || device_is_removed(sdev) ||
	    device_is_removed(ddev) || __atomic_load_n(&ddev->p2p_gone, __ATOMIC_ACQUIRE))
		ret = -ENODEV;
	else if (src->placement != UGPU_PLACEMENT_VRAM || dst->placement != UGPU_PLACEMENT_VRAM)
		ret = -EINVAL;
	else if (device_link(sdev, ddev) != UGPU_LINK_FAST || !sdev->num_copy_engines)
		ret = -ENOLINK;
	else
		ret = 0;
	if (!ret) {
		ret = copy_to_peer(sdev, src->vram, dst->vram, ddev->fabric_id, src->size);
		if (ret) {
			log_err(sdev->ctx, "%s: copying '%s' to %s over the fabric failed (%s)",
				sdev->name, src->name, ddev->name, ugpu_strerror(ret));
			sdev->bo_mgr->copy_failures++;
			ret = -EIO;
		}
	}
	bo_unlock_pair(sdev, ddev);
	return ret;
}

void bo_lock_pair(struct ugpu_device *a, struct ugpu_device *b)
{
	if (device_lock_first(a, b)) {
		bo_mgr_lock(a->bo_mgr);
		bo_mgr_lock(b->bo_mgr);
	} else {
		bo_mgr_lock(b->bo_mgr);
		bo_mgr_lock(a->bo_mgr);
	}
}

void bo_unlock_pair(struct ugpu_device *a, struct ugpu_device *b)
{
	pthread_mutex_unlock(&a->bo_mgr->lock);
	pthread_mutex_unlock(&b->bo_mgr->lock);
}

/* ugpu_bo_migrate_device() with the internal flags too; @expect: the BO
 * must still be on that device (else -EAGAIN), or NULL. */
static int migrate_device(struct ugpu_bo *bo, struct ugpu_device *dst, uint32_t flags,
			  struct ugpu_device *expect)
{
	struct ugpu_device *src;
	struct rpm *held_src = NULL, *held_dst = NULL;
	int ret;

	for (;;) {
		src = bo_dev(bo);
		if (expect && src != expect)
			return -EAGAIN;
		if (src->ctx != dst->ctx) {
			log_err(dst->ctx, "ugpu_bo_migrate_device: BO '%s' and %s belong to different contexts",
				bo->name, dst->name);
			return -EXDEV;
		}
		if (src == dst) /* no path to choose: its own VRAM (the flags are moot) */
			return ugpu_bo_migrate(bo, UGPU_PLACEMENT_VRAM);
		/* Both awake for the copy (the destination's VRAM is the peer
		 * address: a peer in D3 fails it). */
		ret = bo_rpm_hold(src, &held_src);
		if (ret)
			return ret;
		ret = bo_rpm_hold(dst, &held_dst);
		if (ret) {
			bo_rpm_release(held_src);
			return ret;
		}
		bo_lock_pair(src, dst);
		if (bo->dev == src)
			break;
		/* moved meanwhile: start again from where it is now */
		bo_unlock_pair(src, dst);
		bo_rpm_release(held_dst);
		bo_rpm_release(held_src);
	}
	ret = bo_move_to_device_locked(bo, dst, flags);
	bo_unlock_pair(src, dst);
	bo_rpm_release(held_dst);
	bo_rpm_release(held_src);
	if (!ret)
		device_put(src); /* the handle now holds @dst (rehome_locked()) */
	return ret;
}

UGPU_API int ugpu_bo_migrate_device(struct ugpu_bo *bo, struct ugpu_device *dst, uint32_t flags)
{
	if (!bo || !dst || (flags & ~UGPU_MIGRATE_FLAGS_ALL) ||
	    (flags & UGPU_MIGRATE_FLAGS_ALL) == UGPU_MIGRATE_FLAGS_ALL)
		return -EINVAL;
	/* BOs of ugpud's clients live in the daemon (docs/daemon.md) */
	if (bo_is_remote(bo) || device_is_remote(dst))
		return -EOPNOTSUPP;
	return migrate_device(bo, dst, flags, NULL);
}

void bo_evacuate_to_peers(struct ugpu_device *dev, struct unplug_counts *c, bool survivors)
{
	uint32_t flags = BO_PEER_EVACUATE | (survivors ? BO_PEER_SURVIVOR : 0);
	struct ugpu_device *peers[UGPU_MAX_PEERS];
	struct bo_mgr *m = dev->bo_mgr;
	struct ugpu_bo **v;
	unsigned int np, i;
	size_t n, k;

	/* A survivor is copied in from system memory by the peer's own engine:
	 * nothing is read from the removed device (which has no links any
	 * more), so any other device of the context may take it. */
	np = survivors ? device_others_get(dev, peers, UGPU_MAX_PEERS)
		       : device_peers_get(dev, peers, UGPU_MAX_PEERS);
	if (!np)
		return;
	bo_mgr_lock(m);
	if (bo_snapshot_locked(m, &v, &n))
		n = 0, v = NULL;
	pthread_mutex_unlock(&m->lock);
	for (k = 0; k < n; k++) {
		for (i = 0; i < np; i++) {
			int ret = migrate_device(v[k], peers[i], flags, dev);

			if (!ret) {
				c->bos_to_peer++;
				c->bytes_to_peer += v[k]->size;
				log_info(dev->ctx, "%s: removal: BO '%s' (%" PRIu64 " bytes) moved to %s",
					 dev->name, v[k]->name, v[k]->size, peers[i]->name);
			}
			if (ret != -ENOSPC && ret != -ENODEV && ret != -EBUSY && ret != -EIO)
				break; /* moved, or not one to move: next BO */
			/* no room there, or that peer cannot now: the next peer */
		}
	}
	if (v)
		bo_snapshot_put(v, n);
	for (i = 0; i < np; i++)
		device_put(peers[i]);
}
