/* SPDX-License-Identifier: MIT */
/*
 * Moves of BOs between devices (mm/peer.c), for the public call and for a
 * removal that sends a device's BOs to a peer (mm/evacuate.c).
 */
#ifndef UGPU_MM_PEER_H
#define UGPU_MM_PEER_H

#include <stdint.h>

struct ugpu_bo;
struct ugpu_device;
struct unplug_counts;

/* Internal flag beside UGPU_MIGRATE_*: a removal's move to a peer (only
 * BOs in VRAM that may move; only free room on the peer, no eviction
 * there; refusals quiet, -EAGAIN). */
#define BO_PEER_EVACUATE (1u << 31)
/* With BO_PEER_EVACUATE: a removal's survivor (bo->survivor), in system
 * memory of the removed device, offered to a peer's VRAM. */
#define BO_PEER_SURVIVOR (1u << 30)

/*
 * bo_move_to_device_locked() - move @bo (on bo->dev) into @dst's VRAM:
 * directly over a fast link by bo->dev's copy engine, else through system
 * memory (UGPU_MIGRATE_* @flags choose), evicting on @dst as needed; then
 * @bo belongs to @dst (its device reference moves: the caller device_put()s
 * the old device after unlocking). Both managers locked (bo_lock_pair()),
 * both devices awake or removed.
 * Returns: as ugpu_bo_migrate_device(); on error @bo is where it was.
 */
int bo_move_to_device_locked(struct ugpu_bo *bo, struct ugpu_device *dst, uint32_t flags);

/*
 * bo_evacuate_to_peers() - a removal of @dev (awake, its kernels stopped,
 * no manager lock held): each BO of the program in its VRAM that may move
 * goes to the first peer (fast links first) with room for it; counted in
 * @c. The rest stays for the evacuation to system memory.
 * @survivors: instead, after the removal (@dev removed), the BOs it kept
 * from backups (bo->survivor) go from system memory to a peer with room.
 */
void bo_evacuate_to_peers(struct ugpu_device *dev, struct unplug_counts *c, bool survivors);

/*
 * bo_copy_to_peer() - copy all of @src (in its device's VRAM) into @dst (a
 * BO of the same size in the VRAM of another device joined to it by a fast
 * link) with @src's device's copy engine over the fabric (PEER addresses);
 * neither BO changes device. Shared virtual memory moves a range from one
 * device's VRAM to another's with it. Both devices awake; no manager lock
 * held (takes both, in their order).
 * Returns: 0; -EINVAL (same device, sizes differ, not both in VRAM);
 * -ENOLINK (no fast link, or no copy engine); -ENODEV (either is going);
 * -EIO (the copy failed: the engine was reset, @dst holds garbage).
 */
int bo_copy_to_peer(struct ugpu_bo *src, struct ugpu_bo *dst);

/* Lock / unlock the BO managers of two devices, in the one order
 * (device_lock_first(): lower context index first). */
void bo_lock_pair(struct ugpu_device *a, struct ugpu_device *b);
void bo_unlock_pair(struct ugpu_device *a, struct ugpu_device *b);

#endif
