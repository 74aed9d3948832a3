/* SPDX-License-Identifier: MIT */
/*
 * The tombstone transport: a stand-in for a closed transport. Every op
 * answers -ENODEV (releases do nothing); the name and context are kept for
 * log lines; the gone flag is set. A device's dev->vdev is swapped to one
 * when its transport closes (src/device.c).
 */
#ifndef UGPU_VFIO_TOMBSTONE_H
#define UGPU_VFIO_TOMBSTONE_H

#include "vfio/transport.h"

/* tombstone_init() - make @t a stand-in for the closed transport @from
 * (may be NULL): same name and context, every op -ENODEV, gone. */
void tombstone_init(struct vfio_dev *t, const struct vfio_dev *from);

#endif
