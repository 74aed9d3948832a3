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

/* unplug_init()/unplug_fini() - the "unplug" bring-up step (context
 * lifetime): start the watcher; stop and join it (waits for a removal in
 * progress, which is bounded). */
int unplug_init(struct ugpu_device *dev);
void unplug_fini(struct ugpu_device *dev);

/* unplug_step_note() - device_teardown() is about to undo step @step; calls
 * the test observer set with unplug_set_step_observer(). */
void unplug_step_note(struct ugpu_device *dev, const char *step);

/* Tests: @fn(arg, dev, step) is called before each teardown step (on the
 * thread running the teardown: the watcher for a removal). */
void unplug_set_step_observer(struct ugpu_device *dev,
			      void (*fn)(void *arg, struct ugpu_device *dev, const char *step),
			      void *arg);

/* unplug_tombstone_init() - make @t a stand-in for the closed transport
 * @from: same name and context, every op -ENODEV, gone flag set. */
void unplug_tombstone_init(struct vfio_dev *t, const struct vfio_dev *from);

/* Tests: ask the watcher to run a surprise removal now (as if the device had
 * stopped answering). Returns 0 or -EINVAL. */
int unplug_inject_surprise(struct ugpu_device *dev);

#endif
