/* SPDX-License-Identifier: MIT */
/*
 * Several devices in one context: the links between them and their pagemap
 * owner groups (docs/multi-device.md).
 *
 * Each device's VRAM is a pagemap. Devices of one context that sit on one
 * fabric reach each other's VRAM with their copy engines; a fast link makes
 * that the way to move memory between them, and devices joined by fast links
 * (directly or through others) form one owner group, the idea of the
 * kernel's drm_pagemap owner: memory of one group's devices is usable by the
 * others without a detour through system memory. A slow link still carries
 * peer copies, but ugpu moves memory over it through system memory, and it
 * does not join owner groups. Devices on different fabrics, or of different
 * contexts, have no link. A removed device has no link any more.
 */
#ifndef UGPU_FABRIC_H
#define UGPU_FABRIC_H

#include <ugpu/device.h>

#ifdef __cplusplus
extern "C" {
#endif

/** What joins two devices. */
enum ugpu_link {
	UGPU_LINK_NONE = 0, /**< no path between them: memory moves through system memory */
	UGPU_LINK_SLOW = 1, /**< a slow fabric link: moves go through system memory */
	UGPU_LINK_FAST = 2, /**< a fast fabric link: moves go directly, peer to peer */
};

/**
 * ugpu_device_link() - the link between two devices.
 * @a: a device.
 * @b: another device of the same context.
 * @out: the link on success.
 *
 * Returns: 0; -EINVAL (NULL argument, or @a == @b); -EXDEV when @a and @b
 * belong to different contexts. A removed or closing device answers 0 with
 * UGPU_LINK_NONE.
 * Context: any thread; a snapshot.
 */
UGPU_API int ugpu_device_link(struct ugpu_device *a, struct ugpu_device *b, enum ugpu_link *out);

#define UGPU_MAX_PEERS 16

/**
 * struct ugpu_peer - one other device of the context (ugpu_device_peers()).
 * @dev: its handle (the one its opener holds; valid while it is open).
 * @link: the link to it.
 * @fabric_id: its node id in its fabric.
 * @same_owner: it is in the same owner group.
 */
struct ugpu_peer {
	struct ugpu_device *dev;
	enum ugpu_link link;
	uint32_t fabric_id;
	bool same_owner;
};

/**
 * struct ugpu_device_peers - a device's place among the context's devices.
 * @size: set by the caller to sizeof(struct ugpu_device_peers).
 * @owner: the device's pagemap owner group: a number that devices joined by
 *         fast links (directly or through others) share and no other device
 *         of the context has; a device alone is a group of its own.
 * @total: the other open devices of the context.
 * @count: how many of them @peers lists (at most UGPU_MAX_PEERS), in the
 *         order they were opened.
 * @peers: the other devices, with their links (UGPU_LINK_NONE included).
 */
struct ugpu_device_peers {
	size_t size;
	uint32_t owner;
	uint32_t total;
	uint32_t count;
	struct ugpu_peer peers[UGPU_MAX_PEERS];
};

/**
 * ugpu_device_peers() - the other devices of @dev's context, their links to
 * @dev and @dev's owner group.
 * @dev: the device (open; a removed device has no links and a group of its
 *       own).
 * @out: filled up to @out->size bytes.
 *
 * Returns: 0; -EINVAL (NULL argument, or @out->size too small to hold the
 * size field).
 * Context: any thread; a snapshot.
 */
UGPU_API int ugpu_device_peers(struct ugpu_device *dev, struct ugpu_device_peers *out);

#ifdef __cplusplus
}
#endif

#endif /* UGPU_FABRIC_H */
