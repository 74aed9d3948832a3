/* SPDX-License-Identifier: MIT */
/*
 * Device removal, internal side (public API: include/ugpu/unplug.h; design:
 * docs/unplug.md).
 *
 * One watcher thread per device (started by the last bring-up step) waits on
 * the REQ eventfd, on requests from ugpu_device_unplug() and for signs that
 * the device is gone (the transport's gone flag, all-ones config reads), and
 * runs every removal itself, so removals never run concurrently and never on
 * a thread that holds a lock the removal needs. Why not the rpm thread: the
 * removal wakes the device through runtime PM and then stops the rpm thread
 * (rpm_fini() joins it).
 */
#ifndef UGPU_SRC_UNPLUG_H
#define UGPU_SRC_UNPLUG_H

#include <stdbool.h>

#include "src/device.h"

/* How often the watcher looks for a device that vanished without a word. */
#define UNPLUG_POLL_MS 10
/* How often it reads config space to see all-ones (a dead PCI device). */
#define UNPLUG_PROBE_MS 250
/* Bound for host-suspend transitions and BO work to let go of the locks the
 * removal needs (they are bounded themselves; this is the backstop). */
#define UNPLUG_LOCK_TIMEOUT_MS 30000
/* Bound for engines to finish work in flight before they are stopped. */
#define UNPLUG_IDLE_TIMEOUT_MS 2000
/* Bound for ugpu_device_unplug() to see the removal finish. */
#define UNPLUG_API_TIMEOUT_MS 60000

/* What the memory layer's part of a removal did (struct ugpu_unplug_info). */
struct unplug_counts {
	uint64_t bos_moved, bytes_moved;
	uint64_t bos_to_peer, bytes_to_peer;
	uint64_t bos_adopted;
	uint64_t bos_lost, bytes_lost;
	uint64_t kernel_bos;
};

/*
 * struct unplug_mem_ops - the memory layer's part of a removal (mm/evacuate.c),
 * registered at bring-up with unplug_mem_register(). Called on the watcher
 * thread with the host-suspend lock held.
 * @lock: lock the memory layer, waiting at most @timeout_ms (-ETIMEDOUT):
 *        no BO changes place until @unlock.
 * Under it:
 * @host_suspended: VRAM is powered off and host-suspend backups hold it.
 * @evacuate: every BO of the program out of VRAM: moved by the engines
 *        unless *@surprise (the device cannot be reached), else adopted from
 *        a backup, else lost; sets *@surprise when the device stops
 *        answering meanwhile. The driver's own objects are counted and left
 *        to their owners.
 * @dma_release: every DMA mapping BOs hold is removed.
 * @detach: the device goes: from now on BO paths refuse VRAM and map
 *        nothing for the device; every CPU mapping is held and the fault
 *        handler flushed, so no fault runs a device hook during the teardown.
 * Without it:
 * @maps_release: after the teardown, the held mappings fault to system
 *        memory again.
 */
struct unplug_mem_ops {
	int (*lock)(void *arg, int timeout_ms);
	void (*unlock)(void *arg);
	bool (*host_suspended)(void *arg);
	void (*evacuate)(void *arg, bool *surprise, struct unplug_counts *c);
	void (*dma_release)(void *arg);
	void (*detach)(void *arg);
	void (*maps_release)(void *arg);
	/* Before @lock, on an orderly removal of an awake device, its GPU
	 * kernels stopped: BOs of the program in VRAM that may move go to the
	 * VRAM of a peer that has a link to the device and room for them
	 * (takes the managers' locks itself); @evacuate then takes the rest to
	 * system memory. May be NULL. */
	void (*to_peers)(void *arg, struct unplug_counts *c);
	/* First of all, no lock held: other devices stop reaching this
	 * device's VRAM (their peer binds into it revoked, their windows onto
	 * it unmapped). May be NULL. */
	void (*revoke_peers)(void *arg);
	/* After the teardown, no lock held, when @evacuate kept BOs from
	 * host-suspend or D3cold backups (a surprise, a device that did not
	 * wake, a host-suspended one): those that were in VRAM go on to a
	 * peer's VRAM as @to_peers sends an orderly removal's (counted in
	 * @c->bos_to_peer too). May be NULL. */
	void (*survivors_to_peers)(void *arg, struct unplug_counts *c);
	/* After the teardown, no lock held: this device's binds of peers'
	 * BOs hold those peers awake no longer (its kernels run no more).
	 * May be NULL. */
	void (*peer_binds_release)(void *arg);
};

/* unplug_mem_register() - at bring-up, before the watcher starts. */
void unplug_mem_register(struct ugpu_device *dev, const struct unplug_mem_ops *ops, void *arg);

/* unplug_init()/unplug_fini() - the "unplug" bring-up step (context
 * lifetime): start the watcher; stop and join it (waits for a removal in
 * progress, which is bounded). */
int unplug_init(struct ugpu_device *dev);
void unplug_fini(struct ugpu_device *dev);

/* unplug_step_note() - device_teardown() is about to undo step @step; calls
 * the test observer set with unplug_set_step_observer(). */
void unplug_step_note(struct ugpu_device *dev, const char *step);

#ifdef UGPU_TEST_HOOKS
/* Tests: @fn(arg, dev, step) is called before each teardown step (on the
 * thread running the teardown: the watcher for a removal). */
void unplug_set_step_observer(struct ugpu_device *dev,
			      void (*fn)(void *arg, struct ugpu_device *dev, const char *step),
			      void *arg);
#endif

/*
 * unplug_wait_removed() - the device stopped answering before its removal
 * ran (a wake failed with -ENODEV): wait for the watcher to finish the
 * removal, at most @ms. Returns 0 once removed, -ETIMEDOUT. Not from the
 * watcher thread (-EDEADLK) or with locks the removal takes.
 */
int unplug_wait_removed(struct ugpu_device *dev, int ms);

#ifdef UGPU_TEST_HOOKS
/* Tests: ask the watcher to run a surprise removal now (as if the device had
 * stopped answering). Returns 0 or -EINVAL. */
int unplug_inject_surprise(struct ugpu_device *dev);
#endif

#endif
