/* SPDX-License-Identifier: MIT */
/*
 * BOs of a device served by ugpud (mm layer): the public BO calls of mm/bo.c
 * hand a remote device's BOs here. Such a BO is a struct ugpu_bo with only
 * @refcount, @dev, @size, @flags, @name, @map_addr and @remote_handle in use: its
 * memory lives in the daemon, named by a handle valid on this connection
 * only (docs/daemon.md).
 */
#ifndef UGPU_MM_BO_REMOTE_H
#define UGPU_MM_BO_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ugpu/bo.h>

#include "mm/bo.h"
#include "src/remote.h"

static inline bool bo_is_remote(const struct ugpu_bo *bo)
{
	return bo->remote;
}

/* ugpu_bo_create() for a remote device; @opts already normalised. */
int bo_remote_create(struct ugpu_device *dev, const struct ugpu_bo_opts *opts,
		     struct ugpu_bo **out);
/* The last put: the daemon destroys the BO (unless the connection is
 * closed: it released everything then), the handle is freed. */
void bo_remote_release(struct ugpu_bo *bo);
/* Give back @bo's lease (the memfd its create brought, not mapped): before
 * any request that may move the BO (pin, migrate, bind, an SVM map), which
 * the daemon's hold would refuse. Nothing when it has none. */
void bo_remote_lease_drop(struct ugpu_bo *bo);
int bo_remote_pin(struct ugpu_bo *bo, bool pin);
int bo_remote_migrate(struct ugpu_bo *bo, enum ugpu_placement placement);
int bo_remote_rw(struct ugpu_bo *bo, uint64_t offset, void *buf, size_t len, bool write);
int bo_remote_query(struct ugpu_bo *bo, struct ugpu_bo_info *info);
/*
 * ugpu_bo_map() / ugpu_bo_unmap() of a remote BO: the daemon moves the BO to
 * system memory, holds it there while mapped, and hands over its memfd
 * (that BO's pages only), which is mapped shared here (docs/daemon.md, "CPU
 * mappings"). Uses @map_addr.
 */
int bo_remote_map(struct ugpu_bo *bo, void **addr);
int bo_remote_unmap(struct ugpu_bo *bo);

#endif
