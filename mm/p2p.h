/* SPDX-License-Identifier: MIT */
/*
 * Peer access in place (mm/p2p.c, docs/multi-device.md): a device maps a
 * peer's VRAM BAR into its own DMA space (a window) and its GPU page tables
 * point into it, as kernel vfio type1 does peer-to-peer with a BAR mmap.
 */
#ifndef UGPU_MM_P2P_H
#define UGPU_MM_P2P_H

#include <stdint.h>

struct ugpu_device;

/*
 * p2p_win_get_locked() - @dev's window onto @peer's VRAM, made on first use
 * from @peer's VRAM BAR (@vaddr, its mapping; @fd, @fd_off: the same as a
 * file, for vfio-user) and referenced once more. @dev's manager lock held.
 * Returns: 0 with *@iova (where @peer's VRAM offset 0 is); -ENODEV (@dev or
 * @peer removed, or @peer going); -ENOSPC (no free slot, or the DMA space's
 * own errors).
 */
int p2p_win_get_locked(struct ugpu_device *dev, struct ugpu_device *peer, void *vaddr, int fd,
		       uint64_t fd_off, uint64_t *iova);
/* p2p_win_put() - drop a reference; the last one unmaps the window (unless
 * revoked) and drops the peer's device reference. No lock held. */
void p2p_win_put(struct ugpu_device *dev, struct ugpu_device *peer);
/*
 * p2p_revoke_exporter() - @exporter is going (its removal, or its close):
 * every other device of the context stops reaching its VRAM: their peer
 * binds into it are zeroed (kernels touching them fault) and their windows
 * unmapped. No lock held; wakes each importer for its page tables.
 */
void p2p_revoke_exporter(struct ugpu_device *exporter);

/*
 * Peer binds through @exporter's host suspend (docs/multi-device.md,
 * "Power, each device on its own"). p2p_hold_importers(), in the suspend
 * window (before VRAM goes off): from now on other devices' kernels on VMs
 * with peer binds into @exporter are held (their queues wait,
 * vm_peer_enter_locked()), and it waits, bounded, for the running ones to
 * end. Returns 0, or -ETIMEDOUT (still running after P2P_HOLD_WAIT_MS: the
 * hold is lifted again, the suspend fails). p2p_unhold(): resume done, or
 * the suspend failed. p2p_kick_importers(): with no BO manager lock held,
 * held queues of every other device go back to their schedulers (a no-op
 * while @exporter is still held).
 */
#define P2P_HOLD_WAIT_MS 5000
int p2p_hold_importers(struct ugpu_device *exporter);
void p2p_unhold(struct ugpu_device *exporter);
void p2p_kick_importers(struct ugpu_device *exporter);
/* p2p_release_importer_locked() - @dev's removal or close: its DMA space
 * goes, so do its windows (unmapped now; freed with their last bind) and
 * its staging buffers. Manager lock. */
void p2p_release_importer_locked(struct ugpu_device *dev);
/* p2p_importer_let_go() - after @dev's removal, and at its close, no lock
 * held: its peer binds' runtime-PM references of their exporters are
 * dropped (its kernels run no more; the binds stay until the program
 * unbinds them or destroys their VM). */
void p2p_importer_let_go(struct ugpu_device *dev);

/* Bytes of a staging buffer: a move through system memory goes in chunks
 * of this size. */
#define P2P_STAGE_BYTES (8ull << 20)
/*
 * p2p_stage_get_locked() - @dev's staging buffer for moves to @peer, mapped
 * in both DMA spaces (made on first use). Both managers locked.
 * Returns: 0 with *@iova (in @dev's space) and *@peer_iova; -ENODEV (either
 * is going); -ENOSPC (no free slot); sysmem/DMA errors.
 */
int p2p_stage_get_locked(struct ugpu_device *dev, struct ugpu_device *peer, uint64_t *iova,
			 uint64_t *peer_iova);

#endif
