/* SPDX-License-Identifier: MIT */
/* The device object shared by the internal modules. */
#ifndef UGPU_SRC_DEVICE_H
#define UGPU_SRC_DEVICE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <ugpu/device.h>
#include <ugpu/rpm.h>

#include "engines/engine.h"
#include "mm/buddy.h"
#include "src/vfio/dma.h"
#include "src/vfio/transport.h"

struct bo_mgr;
struct ugpu_bo;
struct rpm;
struct unplug;

#define DEVICE_MAX_ENGINES 2
/* Ring size of each copy engine: 64 KiB = 1024 descriptors. */
#define DEVICE_RING_SIZE (64u << 10)

/*
 * struct device_profile - how ugpu drives one kind of device. Chosen by PCI
 * id when the device is opened; an unknown id is refused.
 * @name: shown in ugpu_device_info.profile.
 * @vendor_id, @device_id: the PCI ids it matches.
 * @vram_region: the region index of device memory (mmap-able BAR).
 * @reg_region: the register BAR, or -1 when the device has none the driver
 *              uses.
 * @probe: checks the device is what it claims and fills vram_size, engine
 *         count, caps; may be NULL (then vram_size is the VRAM region size).
 */
struct device_profile {
	const char *name;
	uint16_t vendor_id;
	uint16_t device_id;
	uint32_t vram_region;
	int reg_region;
	int (*probe)(struct ugpu_device *dev);
};

/*
 * struct ugpu_device - one claimed device.
 *
 * Lifetimes: everything here belongs to the device and is released by
 * ugpu_device_close() in the reverse order of device_open()'s bring-up.
 *
 * Locking: @lock protects @pmcsr and serialises power transitions;
 * @power_state is written under it with atomic stores and read without it
 * (device_power_state()), so a query never waits for a transition.
 * @vram_lock protects @vram_mm (the buddy allocator is not thread-safe) and
 * is a leaf lock. The identity fields, @dma, the engines and @vram are set
 * up during open, read-only after, and torn down by close.
 */
struct ugpu_device {
	struct ugpu_context *ctx;
	struct vfio_dev *vdev;
	const struct device_profile *profile;
	pthread_mutex_t lock;

	/* identity, read-only after open */
	uint16_t vendor_id;
	uint16_t device_id;
	uint32_t class_code;
	uint64_t vram_size;
	uint32_t num_copy_engines;
	uint32_t caps; /* UGPU_DEVICE_CAP_* */
	uint32_t fabric_id;
	int pm_cap; /* config offset of the PM capability, 0 if none */
	int pwr_cap; /* config offset of the reference device's power block, 0 if none */
	uint32_t wake_latency_us;

	/* the VRAM BAR mapping */
	void *vram;

	/* interrupts: one eventfd per MSI-X vector (-1 unused), and REQ */
	int msix_fds[8];
	uint32_t num_msix;
	int req_fd;

	enum ugpu_power_state power_state;
	/* PMCSR as last read (under @lock): the bits a transition writes back
	 * around the state field, so a wake needs no read before its write. */
	uint16_t pmcsr;

	/* DMA: the device's IOVA space (has its own lock) */
	struct dma_space dma;
	bool dma_ready;

	/* VRAM manager: every VRAM placement goes through it */
	pthread_mutex_t vram_lock;
	struct buddy_mm vram_mm;
	bool vram_mm_ready;

	/* copy engines: @copy[i] drives the device's engine i; its ring and
	 * fence page live in VRAM blocks @ring_blocks[i] (reserved top-down,
	 * away from where objects go). @cpu copies through the BAR mapping and
	 * always exists. */
	struct engine *copy[DEVICE_MAX_ENGINES];
	struct buddy_list ring_blocks[DEVICE_MAX_ENGINES];
	struct engine *cpu;

	/* Buffer objects (mm/bo.h): LRU, every live BO (the kernel BOs below
	 * included), CPU-mapping manager, host-suspend state; its own locks.
	 * @ring_bo[i] is the pinned KERNEL BO holding copy engine i's ring and
	 * fence page: its VRAM blocks are kept in @ring_blocks[i]. It is
	 * restored early, by CPU, on resume. */
	struct bo_mgr *bo_mgr;
	struct ugpu_bo *ring_bo[DEVICE_MAX_ENGINES];

	/* Runtime PM (src/rpm.h): refcounted get/put, autosuspend; its own
	 * locks. Set up last in open, torn down first in close. */
	struct rpm *rpm;
	/* The runtime-PM stats as they were when @rpm was torn down
	 * (rpm_fini()), so that ugpu_device_rpm_stats() still answers after a
	 * removal; @rpm_last.size is 0 until then. Written and read under the
	 * BO manager lock, like @rpm is unpublished. */
	struct ugpu_rpm_stats rpm_last;

	/* Removal (src/unplug.h): the REQ watcher and removal state; its own
	 * lock. @steps_up: bit i set while bring-up step i of device.c's
	 * step table is up (written by open, close and the removal path, which
	 * never run concurrently: close joins the watcher first). @removed:
	 * atomic, set (never cleared) under the BO manager lock once the
	 * device's own resources are released or being released: from then on
	 * only context resources (BOs in system memory) may be used.
	 * @gone_vdev: what dev->vdev points to after the transport is closed,
	 * so late log lines and calls get -ENODEV instead of a dangling
	 * pointer. */
	struct unplug *unplug;
	uint32_t steps_up;
	int removed;
	struct vfio_dev gone_vdev;

	/* References to this object (atomic): one for the open device, one per
	 * live BO handle (BOs outlive ugpu_device_close(), include/ugpu/
	 * device.h). The last device_put() frees what close left: the BO
	 * manager's shell and this struct. */
	unsigned int refs;
};

/* device_get()/device_put() - keep the device object (not the device: close
 * still releases every resource) alive for a BO handle. */
void device_get(struct ugpu_device *dev);
void device_put(struct ugpu_device *dev);

/* Lifetimes of the bring-up steps (device.c): DEVICE resources die with
 * the device (removal releases them), CONTEXT ones outlive it until
 * ugpu_device_close(). */
enum device_lifetime {
	DEVICE_LIFE_DEVICE = 1,
	DEVICE_LIFE_CONTEXT = 2,
	DEVICE_LIFE_ALL = 3,
};

/*
 * device_teardown() - undo, in the reverse order of bring-up, every step
 * that is up and whose lifetime is in @which (a DEVICE_LIFE_* mask). The
 * one teardown order shared by ugpu_device_close() (ALL) and the removal
 * path (DEVICE). Calls unplug_step_note() before each step.
 * Context: not concurrently with open/close/another teardown of @dev.
 */
void device_teardown(struct ugpu_device *dev, unsigned int which);

/* The power state now (the last one a transition reached); never blocks. */
static inline enum ugpu_power_state device_power_state(struct ugpu_device *dev)
{
	return __atomic_load_n(&dev->power_state, __ATOMIC_ACQUIRE);
}

/* True once removal has started releasing the device's resources. */
static inline bool device_is_removed(struct ugpu_device *dev)
{
	return __atomic_load_n(&dev->removed, __ATOMIC_ACQUIRE) != 0;
}

/*
 * device_vram_alloc() / device_vram_free() - the VRAM manager under
 * vram_lock. Arguments as buddy_alloc_blocks() / buddy_free_list().
 */
int device_vram_alloc(struct ugpu_device *dev, uint64_t size, uint64_t min_block,
		      unsigned int flags, struct buddy_list *out);
void device_vram_free(struct ugpu_device *dev, struct buddy_list *blocks, unsigned int flags);

/* The engine to use for bulk copies: a blitter when there is one, else the
 * CPU engine. */
struct engine *device_copy_engine(struct ugpu_device *dev);

/* Register access through the profile's register BAR. */
int device_reg_read32(struct ugpu_device *dev, uint32_t off, uint32_t *val);
int device_reg_write32(struct ugpu_device *dev, uint32_t off, uint32_t val);
int device_reg_read64(struct ugpu_device *dev, uint32_t off, uint64_t *val);
int device_reg_write64(struct ugpu_device *dev, uint32_t off, uint64_t val);

/*
 * device_set_power() - move the device to @state (src/power.c).
 * D0 <-> D3hot through PMCSR; D3cold by cutting main power (the reference
 * device's platform power block) or, where the transport has it, the
 * kernel's low-power state. Waking verifies the device really is in D0.
 * Returns: 0; -EOPNOTSUPP when the device cannot reach @state; -EIO when the
 * device did not take the state (e.g. a wake that failed); transport -errno.
 * Context: takes dev->lock.
 */
int device_set_power(struct ugpu_device *dev, enum ugpu_power_state state);

/* device_power_probe() - find the PM and platform power capabilities and
 * read the current state. Called once during open. */
int device_power_probe(struct ugpu_device *dev);

#endif
