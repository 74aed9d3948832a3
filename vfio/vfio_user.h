/* SPDX-License-Identifier: MIT */
/*
 * vfio-user client: extras beyond the transport table (vfio/transport.h).
 * vfio_user_open() there is the plain entry point; these let tests and the
 * in-process reference device choose the reply timeout or hand over an
 * already-connected socket.
 */
#ifndef UGPU_VFIO_VFIO_USER_H
#define UGPU_VFIO_VFIO_USER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vfio/transport.h"

/* Default bound on every request/reply round trip; the environment variable
 * UGPU_VFIO_USER_TIMEOUT_MS overrides it when no option is given. */
#define VFIO_USER_DEFAULT_TIMEOUT_MS 5000

/* Do not offer twin-socket mode (see vfio_user_opts.flags). */
#define VFIO_USER_NO_TWIN_SOCKET (1u << 0)

/*
 * struct vfio_user_opts - options for vfio_user_open_opts().
 * @size: sizeof(struct vfio_user_opts) as the caller compiled it.
 * @timeout_ms: bound on each round trip (and on sending one message); 0 takes
 *              the default.
 * @flags: VFIO_USER_NO_TWIN_SOCKET: propose a single socket only. By default
 *         the client offers twin-socket mode (the server's DMA requests on a
 *         socket of their own) and the server decides; the environment
 *         variable UGPU_VFIO_USER_TWIN_SOCKET=0 turns the offer off too.
 */
struct vfio_user_opts {
	size_t size;
	int timeout_ms;
	uint32_t flags;
};

/*
 * vfio_user_open_opts() - connect to the server at @socket_path and set up
 * the device (VERSION, DEVICE_GET_INFO, every region and irq info).
 *
 * Returns: 0, -ENOENT/-ECONNREFUSED (no server there), -ETIMEDOUT, -EPROTO
 * (the server answered nonsense or an incompatible version), -EBUSY (the
 * server serves another client), -ENODEV (it hung up), -ENOMEM.
 */
int vfio_user_open_opts(struct ugpu_context *ctx, const char *socket_path,
			const struct vfio_user_opts *opts, struct vfio_dev **out);

/*
 * vfio_user_open_fd() - as vfio_user_open_opts() over a connected AF_UNIX
 * stream socket @fd (e.g. one end of a socketpair). The device takes @fd
 * over on success and on failure. @name is used for logs.
 */
int vfio_user_open_fd(struct ugpu_context *ctx, int fd, const char *name,
		      const struct vfio_user_opts *opts, struct vfio_dev **out);

/* True once the server hung up or broke the stream: every call then fails
 * with -ENODEV. @dev must come from a vfio_user_open*() function. */
bool vfio_user_is_dead(struct vfio_dev *dev);

/* Change the round-trip bound of an open device (ms, > 0). */
void vfio_user_set_timeout(struct vfio_dev *dev, int timeout_ms);

#endif
