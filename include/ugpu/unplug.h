/* SPDX-License-Identifier: MIT */
/*
 * Device removal: a device can go away while it is used, politely (the
 * kernel's removal request, the REQ irq, or ugpu_device_unplug()) or by
 * surprise (it stops answering). ugpu then keeps the context's objects: every
 * buffer object (BO) that can be saved is moved to system memory and stays
 * valid, with its CPU mapping; the device's own resources are released. See
 * docs/unplug.md.
 */
#ifndef UGPU_UNPLUG_H
#define UGPU_UNPLUG_H

#include <ugpu/bo.h>
#include <ugpu/device.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Where a device is in its removal. */
enum ugpu_unplug_state {
	UGPU_UNPLUG_PRESENT = 0, /**< in use */
	UGPU_UNPLUG_REMOVING = 1, /**< removal under way (BOs being moved out) */
	UGPU_UNPLUG_REMOVED = 2, /**< device resources released; BOs live on */
};

/** Why a device was removed. */
enum ugpu_unplug_kind {
	UGPU_UNPLUG_NONE = 0,
	UGPU_UNPLUG_REQUEST = 1, /**< the kernel/device asked (REQ irq) */
	UGPU_UNPLUG_API = 2, /**< ugpu_device_unplug() */
	UGPU_UNPLUG_SURPRISE = 3, /**< the device stopped answering */
};

/**
 * struct ugpu_unplug_info - what ugpu_device_unplug_info() reports.
 * @size: set by the caller to sizeof(struct ugpu_unplug_info).
 * @state: UGPU_UNPLUG_*.
 * @kind: why (UGPU_UNPLUG_NONE while present).
 * @status: 0 when every BO kept its data, -EIO when some lost it (see
 *          @bos_lost), -ENODEV for a surprise removal.
 * @detect_us: for a surprise removal, the microseconds from the first sign
 *          the watcher could see (transport flagged gone) to the start of
 *          the removal; 0 otherwise.
 * @removal_us: from the start of the removal to the device's resources
 *          released.
 * @bos_moved: BOs moved from VRAM to system memory by the removal.
 * @bytes_moved: their bytes.
 * @bos_adopted: VRAM BOs whose host-suspend backup became their system copy.
 * @bos_lost: BOs whose contents were only in VRAM and are lost (their
 *          ugpu_bo_info.lost is set; list them with ugpu_device_lost_bos()).
 * @bytes_lost: their bytes.
 * @kernel_bos: the driver's own BOs (engine rings) released with the
 *          device. BOs a program created (UGPU_BO_KERNEL ones included) are
 *          the program's: they are moved, adopted or counted lost above.
 * @reqs: removal requests (REQ irqs) seen.
 * @bos_to_peer: BOs the removal moved into the VRAM of another device of
 *          the context (one with a fabric link to this one and room for
 *          them; include/ugpu/fabric.h): they belong to that device now.
 * @bytes_to_peer: their bytes.
 */
struct ugpu_unplug_info {
	size_t size;
	enum ugpu_unplug_state state;
	enum ugpu_unplug_kind kind;
	int status;
	uint64_t detect_us;
	uint64_t removal_us;
	uint64_t bos_moved;
	uint64_t bytes_moved;
	uint64_t bos_adopted;
	uint64_t bos_lost;
	uint64_t bytes_lost;
	uint64_t kernel_bos;
	uint64_t reqs;
	uint64_t bos_to_peer;
	uint64_t bytes_to_peer;
};

/**
 * typedef ugpu_removal_fn - told when a device has been removed.
 * @user: the pointer given with the callback.
 * @dev: the device (its context resources still usable).
 * @kind: why it was removed.
 * @status: as ugpu_unplug_info.status.
 *
 * Context: called once, on ugpu's removal thread, after the device's
 * resources are released. It may call BO functions and the queries below;
 * it must not call ugpu_device_close() or ugpu_device_unplug() on @dev.
 */
typedef void (*ugpu_removal_fn)(void *user, struct ugpu_device *dev, enum ugpu_unplug_kind kind,
				int status);

/**
 * ugpu_device_set_removal_callback() - be told when @dev is removed.
 * @dev: the device.
 * @fn: the callback, or NULL to remove it.
 * @user: passed to @fn.
 *
 * Returns: 0, or -EINVAL for a NULL @dev.
 * Context: any thread; a removal already under way calls whichever callback
 * was set when it finished.
 * Through "ugpud:": the daemon sends a removal event to every client of the
 * device; @fn is called once, on the thread of the first call that reads it
 * (events come with replies: one of the program's, or the library's own
 * thread that serves a mirror VM's GPU faults), after that call's request
 * is done and with no lock of the library held; as in one process it may
 * call BO functions and queries, not destroy VMs or close @dev. @dev's BOs
 * live on in the daemon's system memory as in one process.
 */
UGPU_API int ugpu_device_set_removal_callback(struct ugpu_device *dev, ugpu_removal_fn fn,
					      void *user);

/**
 * ugpu_device_unplug() - remove @dev in order, as if the kernel asked.
 * @dev: the device.
 *
 * Stops new work, lets work in flight finish (bounded), moves the BOs it
 * can into the VRAM of a peer device with a link and room
 * (ugpu_unplug_info.bos_to_peer; not pinned, CPU-mapped or GPU-bound ones:
 * see ugpu_bo_migrate_device()), moves every other BO out
 * of VRAM to system memory (pinned ones included; they stay pinned, in
 * system memory), removes every DMA mapping, releases the device's resources
 * in the reverse order of bring-up and closes the transport. BOs stay valid
 * with their data and their CPU mappings now reach system memory. Afterwards:
 * VRAM allocations fail with -ENODEV (or fall back to system memory when the
 * BO's placements allow it), host suspend fails with -ENODEV, queries work,
 * ugpu_device_close() still has to be called.
 *
 * Returns: 0 when the device is removed (now or before) and every BO kept
 * its data; -EIO when it is removed but some BOs lost their contents;
 * -ENODEV when it was removed by surprise; -ETIMEDOUT when the removal did
 * not finish within 60 s (it goes on); -EDEADLK from a removal callback;
 * -EINVAL for NULL.
 * Context: any thread except the removal callback.
 * -EOPNOTSUPP: a device (or BO) opened through "ugpud:" (not served by the daemon yet).
 */
UGPU_API int ugpu_device_unplug(struct ugpu_device *dev);

/**
 * ugpu_device_is_gone() - has @dev been removed (or is it being removed)?
 * Returns: true from the moment removal starts (for a surprise: when it is
 * detected); false for NULL.
 * Context: any thread; never blocks.
 * On a device opened through "ugpud:": true once a call has read the daemon's
 * removal event (events come with replies).
 */
UGPU_API bool ugpu_device_is_gone(struct ugpu_device *dev);

/**
 * ugpu_device_unplug_info() - the removal state and what it did.
 * @dev: the device.
 * @info: filled up to @info->size bytes.
 * Returns: 0, or -EINVAL.
 * Context: any thread.
 * -EOPNOTSUPP: a device (or BO) opened through "ugpud:" (not served by the daemon yet).
 */
UGPU_API int ugpu_device_unplug_info(struct ugpu_device *dev, struct ugpu_unplug_info *info);

/**
 * ugpu_device_lost_bos() - the BOs of @dev whose contents are lost.
 * @dev: the device.
 * @bos: receives up to @max BOs, each with a reference the caller drops
 *       with ugpu_bo_put(); may be NULL when @max is 0.
 * @max: room in @bos.
 * @count: the number of lost BOs (may exceed @max).
 *
 * A lost BO stays a valid handle: ugpu_bo_read/write fail with -ENODATA,
 * a CPU touch of its mapping raises SIGBUS (see docs/unplug.md).
 * Returns: 0, or -EINVAL.
 * Context: any thread.
 * -EOPNOTSUPP: a device (or BO) opened through "ugpud:" (not served by the daemon yet).
 */
UGPU_API int ugpu_device_lost_bos(struct ugpu_device *dev, struct ugpu_bo **bos, size_t max,
				  size_t *count);

/** "present", "removing", "removed". */
UGPU_API const char *ugpu_unplug_state_name(enum ugpu_unplug_state state);
/** "none", "request", "api", "surprise". */
UGPU_API const char *ugpu_unplug_kind_name(enum ugpu_unplug_kind kind);

#ifdef __cplusplus
}
#endif

#endif /* UGPU_UNPLUG_H */
