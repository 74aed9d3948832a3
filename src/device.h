/* SPDX-License-Identifier: MIT */
/* The device object shared by the internal modules. */
#ifndef UGPU_SRC_DEVICE_H
#define UGPU_SRC_DEVICE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <ugpu/device.h>
#include <ugpu/rpm.h>
#include <ugpu/vm.h>

#include "engines/engine.h"
#include "base/list.h"
#include "base/stats.h"
#include "vfio/dma.h"
#include "vfio/transport.h"

struct bo_mgr;
struct exec_engine;
struct host_pm;
struct remote;
struct rpm;
struct unplug;
struct unplug_mem_ops;
struct vm_mgr;

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
 * struct device_kmem_ops - memory for the device's own structures (engine
 * rings and fence pages): pinned, contiguous VRAM saved and restored by the
 * CPU around power loss, before the engines exist. The memory layer (mm/)
 * installs it in its bring-up step (dev->kmem), before the engines step
 * uses it; the device layer never allocates VRAM itself.
 * @alloc: @size bytes named @name, placed top-down (away from where objects
 *         go); returns 0 with *@obj (to free) and its VRAM offset and CPU
 *         address, or -errno. Called from bring-up only.
 * @release: release what @alloc returned; never needs the device to answer.
 */
struct device_kmem_ops {
	int (*alloc)(struct ugpu_device *dev, uint64_t size, const char *name, void **obj,
		     uint64_t *vram_offset);
	void (*release)(struct ugpu_device *dev, void *obj);
};

/*
 * struct ugpu_device - one claimed device.
 *
 * Lifetimes: everything here belongs to the device and is released by
 * ugpu_device_close() in the reverse order of device_open()'s bring-up; the
 * struct itself lives on while BO handles hold it (@refs).
 *
 * Locking: @lock serialises power transitions and protects @pmcsr;
 * @power_state is written under it with atomic stores and read without it
 * (device_power_state()), so a query never waits for a transition.
 * @pub_lock is the device's publication lock, a leaf: it protects the swap
 * of @vdev to the tombstone when the transport closes, the publication of
 * @rpm (set at bring-up, unpublished by the teardown) and @rpm_last; take it
 * to read those two pointers from a thread that may race a removal. The
 * identity fields, @name, @dma, the engines and @vram are set up during
 * open, read-only after, and torn down by close or removal.
 */
struct ugpu_device {
	struct ugpu_context *ctx;
	struct vfio_dev *vdev;
	const struct device_profile *profile;
	pthread_mutex_t lock;
	pthread_mutex_t pub_lock;
	/* for log lines: the transport's name, kept after it closes */
	char name[128];

	/* identity, read-only after open */
	uint16_t vendor_id;
	uint16_t device_id;
	uint32_t class_code;
	uint64_t vram_size;
	uint32_t num_copy_engines;
	uint32_t caps; /* UGPU_DEVICE_CAP_* */
	uint32_t fabric_id;
	/* the fabric (src/fabric.c): which fabric (FABRIC_UID; 0 alone), and
	 * the nodes reachable / reachable by a fast link (bit n: node n) */
	uint64_t fabric_uid;
	uint32_t fabric_peers;
	uint32_t fabric_fast;
	int pm_cap; /* config offset of the PM capability, 0 if none */
	int pwr_cap; /* config offset of the reference device's power block, 0 if none */
	uint32_t wake_latency_us;

	/* the VRAM BAR mapping */
	void *vram;
	/* bytes of VRAM allocated now (atomic; kept by the memory layer, read
	 * by runtime PM to choose D3cold) */
	uint64_t vram_used;

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

	/* Memory for the device's own structures (installed by mm/). */
	const struct device_kmem_ops *kmem;

	/* copy engines: @copy[i] drives the device's engine i; its ring and
	 * fence page live in kernel memory @ring_obj[i] at VRAM offset
	 * @ring_offset[i] (dev->kmem: restored early, by CPU, on resume). @cpu
	 * copies through the BAR mapping and always exists. */
	struct engine *copy[DEVICE_MAX_ENGINES];
	void *ring_obj[DEVICE_MAX_ENGINES];
	uint64_t ring_offset[DEVICE_MAX_ENGINES];
	struct engine *cpu;

	/* The exec queues (engines/exec.h): NULL when the device has none (no
	 * GPU VM, or a 1.0 layout). Their fault ring and fences live in kernel
	 * memory @exec_obj. Device lifetime. */
	struct exec_engine *exec;
	void *exec_obj;

	/* The memory layer's per-device state (mm/bo.h, mm/vm.h), opaque here. */
	struct bo_mgr *bo_mgr;
	struct vm_mgr *vm_mgr;

	/* Host suspend (src/suspend.h): lock, stats, options; context
	 * lifetime (queries work after a removal). */
	struct host_pm *pm;

	/* Runtime PM (src/rpm.h): refcounted get/put, autosuspend; its own
	 * locks. Published under @pub_lock. */
	struct rpm *rpm;
	/* The runtime-PM stats as they were when @rpm was torn down
	 * (rpm_fini()), so that ugpu_device_rpm_stats() still answers after a
	 * removal; @rpm_last.size is 0 until then. Under @pub_lock. */
	struct ugpu_rpm_stats rpm_last;
	/* Shared virtual memory's counters when its step went (svm/), so that
	 * ugpu_device_svm_stats() still answers after a removal (what was
	 * lost); @svm_last.size is 0 until then. Under @pub_lock. */
	struct ugpu_svm_stats svm_last;
	/* Latency histograms (base/stats.h), kept for the device's lifetime:
	 * runtime-PM wakes (src/rpm.c), GPU faults served by SVM (svm/) and
	 * CPU faults on BO mappings served by the userfaultfd handler
	 * (mm/cpu_map.c), and how long SVM keeps a range's pages out of the
	 * CPU's reach while it moves them into VRAM (svm/migrate.c: a CPU
	 * store racing the move waits at least that long). Lock-free (atomic
	 * buckets). */
	struct stat_hist rpm_wake_hist;
	struct stat_hist svm_fault_hist;
	struct stat_hist svm_window_hist;
	struct stat_hist bo_fault_hist;

	/* Removal (src/unplug.h): the REQ watcher and removal state; its own
	 * lock. @steps_up: bit i set while the i-th bring-up component is up
	 * (written by open, close and the removal path, which never run
	 * concurrently: close joins the watcher first). @removed: atomic, set
	 * (never cleared) once the device's own resources are released or
	 * being released, under the memory layer's lock (the removal holds it
	 * through its ops): from then on only context resources (BOs in system
	 * memory) may be used. @gone_vdev: what @vdev points to after the
	 * transport is closed, so late calls get -ENODEV. */
	struct unplug *unplug;
	const struct unplug_mem_ops *unplug_mem; /* set once by mm at bring-up */
	void *unplug_mem_arg;
	uint32_t steps_up;
	int removed;
	/* atomic, set (never cleared) as soon as a removal knows the device
	 * cannot be read any more (a surprise, or a wake that failed): what
	 * was only in its VRAM is lost, and nothing is copied from it. */
	int vram_lost;
	/* atomic, set (never cleared) when peers must stop mapping this
	 * device's VRAM (its removal or close revokes their windows,
	 * mm/p2p.c): no new window is made after it, and no BO moves into
	 * its VRAM from another device (mm/peer.c) */
	int p2p_gone;
	/* Peer binds through this device's host suspend (mm/p2p.c,
	 * p2p_hold_importers()), both atomic: @p2p_held is set while a
	 * host-suspend cycle has this device's VRAM off (suspend .. resume):
	 * other devices' kernels on VMs with peer binds into it are held;
	 * @p2p_users counts those kernels running now (raised before they
	 * read @p2p_held, Dekker style, so the suspend waits for every one
	 * that did not see it). */
	int p2p_held;
	int p2p_users;
	struct vfio_dev gone_vdev;

	/* The context's device list (ctx->devices, under ctx->dev_lock; the
	 * "fabric" step links it at the end of open and unlinks it first at
	 * close) and the device's index in its context (set once, before it is
	 * listed; orders the BO manager locks of two devices: lower first). */
	struct list_link ctx_link;
	uint32_t ctx_index;

	/* References to this object (atomic): one for the open device, one per
	 * live BO handle (BOs outlive ugpu_device_close(), include/ugpu/
	 * device.h). The last device_put() frees the struct and what close left
	 * of the components (their free hooks). */
	unsigned int refs;

	/* A device served by ugpud (src/remote.h): the connection, set by open
	 * before the device is handed out and freed by the last device_put();
	 * NULL for a device this process drives itself. Such a device has no
	 * bring-up step up, and only the calls src/remote.h lists reach it. */
	struct remote *remote;
};

/* device_get()/device_put() - keep the device object (not the device: close
 * still releases every resource) alive for a BO handle. */
void device_get(struct ugpu_device *dev);
void device_put(struct ugpu_device *dev);

/* Lifetimes of the bring-up steps: DEVICE resources die with the device
 * (removal releases them), CONTEXT ones outlive it until
 * ugpu_device_close(). */
enum device_lifetime {
	DEVICE_LIFE_DEVICE = 1,
	DEVICE_LIFE_CONTEXT = 2,
	DEVICE_LIFE_ALL = 3,
};

/*
 * The bring-up order: the one place it is written. Each layer contributes
 * its steps as components (below), and the device brings them up in this
 * order and tears them down in the reverse. A layer above the device layer
 * (mm/) registers its own steps: the device never calls up into it.
 */
enum device_step_order {
	DEVICE_STEP_TRANSPORT = 10, /* src: open, identify, D0 */
	DEVICE_STEP_VRAM_MAP = 20, /* src: the VRAM BAR mapping */
	DEVICE_STEP_IRQS = 30, /* src: MSI-X and REQ eventfds */
	DEVICE_STEP_DMA = 40, /* src: the IOVA space */
	DEVICE_STEP_BO_MGR = 50, /* mm: BO manager (context lifetime); installs dev->kmem */
	DEVICE_STEP_VM_MGR = 52, /* mm: VM and queue bookkeeping (context lifetime) */
	DEVICE_STEP_VRAM_MM = 55, /* mm: the VRAM allocator */
	DEVICE_STEP_BO_CLOSE = 57, /* mm: at close, live BOs give their memory back (context lifetime) */
	DEVICE_STEP_ENGINES = 70, /* src: copy engines on rings from dev->kmem */
	DEVICE_STEP_EXEC = 75, /* src: the exec queues, fault ring from dev->kmem */
	DEVICE_STEP_RPM = 80, /* src: runtime PM */
	DEVICE_STEP_BO_RPM = 90, /* mm: the BO runtime-PM hooks */
	DEVICE_STEP_VM_EXEC = 95, /* mm: the scheduler on the exec queues */
	DEVICE_STEP_SVM = 97, /* svm: shared virtual memory for mirror VMs */
	DEVICE_STEP_UNPLUG = 100, /* src: the removal watcher (context lifetime) */
	DEVICE_STEP_FABRIC = 105, /* src: listed among the context's devices (context lifetime) */
};

/*
 * struct device_component - one bring-up step.
 * @name: for logs and the teardown observer (unplug_step_note()).
 * @order: enum device_step_order.
 * @life: DEVICE_LIFE_DEVICE when what it holds dies with the device (the
 *        removal undoes it), DEVICE_LIFE_CONTEXT when it outlives the device
 *        until ugpu_device_close().
 * @up: bring it up; cleans up after itself on failure. May be NULL.
 * @down: undo it; never needs the device to answer. May be NULL.
 * @release: may be NULL. Free what @down left for BO handles that outlive
 *        close: called when the device object itself goes (device_put()).
 * @link: the registry's (device.c), sorted by @order.
 */
struct device_component {
	const char *name;
	unsigned int order;
	enum device_lifetime life;
	int (*up)(struct ugpu_device *dev, const char *uri);
	void (*down)(struct ugpu_device *dev);
	void (*release)(struct ugpu_device *dev);
	struct list_link link;
};

/*
 * device_component_register() - add @c to the bring-up sequence (at load
 * time, through DEVICE_COMPONENT(); the registry is not locked: registration
 * happens before any device is opened). At most DEVICE_MAX_COMPONENTS.
 */
#define DEVICE_MAX_COMPONENTS 32
void device_component_register(struct device_component *c);
#define DEVICE_COMPONENT(c)                                                          \
	static void __attribute__((constructor)) c##_register(void)                 \
	{                                                                            \
		device_component_register(&(c));                                     \
	}

/*
 * device_new() - a device object with no step up: @ctx, @name (for logs),
 * its locks and host-suspend state, one reference (the open device's).
 * ugpu_device_open() starts from it; so do unit tests that build a device
 * by hand (tests/unit/test_bo_unit.c fills in what the transport step would
 * have: vdev, profile, vram_size). The last device_put() frees it.
 * Returns: 0 or -ENOMEM.
 * Context: any thread.
 */
int device_new(struct ugpu_context *ctx, const char *name, struct ugpu_device **out);

/*
 * device_steps_up() - bring up the registered steps named in @only (a
 * NULL-terminated list; NULL: every step), in the registered order, each
 * marked up so that device_teardown() undoes exactly those. ugpu_device_open()
 * brings up every step; a unit test brings up a subset on a hand-built device
 * (e.g. the memory layer over a fake transport, without "transport").
 * @uri: passed to each step's up (for its logs).
 * Returns: 0; -ENOENT when a name in @only is not a registered step; or the
 * failing step's -errno. On failure every step brought up is torn down again.
 * Context: not concurrently with another open/close/teardown of @dev.
 */
int device_steps_up(struct ugpu_device *dev, const char *uri, const char *const *only);

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

/* True once a removal found the device unreadable (its VRAM is lost). */
static inline bool device_vram_lost(struct ugpu_device *dev)
{
	return __atomic_load_n(&dev->vram_lost, __ATOMIC_ACQUIRE) != 0;
}

/* True once removal has started releasing the device's resources. */
static inline bool device_is_removed(struct ugpu_device *dev)
{
	return __atomic_load_n(&dev->removed, __ATOMIC_ACQUIRE) != 0;
}

/*
 * The fabric (src/fabric.c). device_link(): the link between two devices
 * of one context (enum ugpu_link; NONE when either is removed).
 * device_peers_get() - the open devices of @dev's context that have a link
 * to it, fast links first (then in the order they were opened), at most
 * @max, each with a device reference (device_put() each). Returns how many.
 * device_lock_first(): of two devices, the one whose BO manager lock is
 * taken first.
 * Context: any thread, no lock held (takes the context's device lock).
 */
int device_link(struct ugpu_device *a, struct ugpu_device *b);
unsigned int device_peers_get(struct ugpu_device *dev, struct ugpu_device **out, unsigned int max);
/* device_others_get() - the same for every other open device of the
 * context, linked or not, in the order they were opened. */
/* device_same_owner() - @a and @b are open, not removed, and in one owner
 * group (joined by fast links, directly or through others). No lock held. */
bool device_same_owner(struct ugpu_device *a, struct ugpu_device *b);
unsigned int device_others_get(struct ugpu_device *dev, struct ugpu_device **out, unsigned int max);
static inline bool device_lock_first(const struct ugpu_device *a, const struct ugpu_device *b)
{
	return a->ctx_index < b->ctx_index;
}

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
