/* SPDX-License-Identifier: MIT */
/*
 * A device served by ugpud (src layer): ugpu_device_open(ctx, "ugpud:...")
 * makes a struct ugpu_device whose calls go over the daemon's socket instead
 * of reaching hardware (protocol: src/ugpud_proto.h, docs/daemon.md).
 *
 * Such a device has no bring-up steps: dev->remote is set and everything
 * else in the device object stays empty. Public calls check
 * device_is_remote() first and either go through remote_call() (device
 * query, memory stats, BOs: mm/bo_remote.c) or return -EOPNOTSUPP.
 *
 * Locking: struct remote's @lock serialises calls: one request in flight per
 * connection, its reply read by the caller's thread. It is a leaf: nothing
 * else is taken under it.
 */
#ifndef UGPU_SRC_REMOTE_H
#define UGPU_SRC_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <ugpu/device.h>
#include <ugpu/unplug.h>

#include "src/device.h"

/* A device served by ugpud is opened by a URI that starts so. */
#define REMOTE_URI_PREFIX "ugpud:"

/* Every call waits this long for its reply at most (then -ETIMEDOUT). */
#define REMOTE_TIMEOUT_MS 30000

static inline bool device_is_remote(const struct ugpu_device *dev)
{
	return dev->remote != NULL;
}

/*
 * remote_open() - connect @dev (fresh from device_new()) to the daemon
 * @uri names ("ugpud:SOCKET" or "ugpud:SOCKET?device=N") and say hello.
 * Returns: 0; -EINVAL (malformed URI); -ENOENT / -ECONNREFUSED / -ENOTSOCK
 * (nothing serves there); -EACCES (the daemon's policy refused this user);
 * -EPROTONOSUPPORT (the daemon speaks another protocol version); -ENODEV
 * (no such device index); -EPROTO (a malformed reply); -ETIMEDOUT; -ENOMEM.
 */
int remote_open(struct ugpu_device *dev, const char *uri);

/* The daemon's id of this connection (its client list shows it). */
uint32_t remote_client_id(struct ugpu_device *dev);

/* How many devices the daemon serves (indexes 0 .. n-1 for ?device=N). */
uint32_t remote_devices(struct ugpu_device *dev);

/* Disconnect (the daemon then releases every BO of the connection). Later
 * calls on @dev's BOs return -ENODEV. */
void remote_close(struct ugpu_device *dev);

/*
 * Events the daemon sent about the device (UGPUD_EVENT: host suspend,
 * removal), read with the replies of calls. remote_is_gone(): a removal
 * event came. remote_set_removal_callback(): @fn is called once, on the
 * thread of the call that read the removal event, after that call's
 * request is done and no lock of the connection is held (it may call BO
 * functions). remote_is_suspended(): between the SUSPENDED and RESUMED
 * events.
 */
bool remote_is_gone(struct ugpu_device *dev);
bool remote_is_suspended(struct ugpu_device *dev);
void remote_set_removal_callback(struct ugpu_device *dev, ugpu_removal_fn fn, void *user);

/* remote_close() has not been called (the daemon may still be gone). */
bool remote_is_open(struct ugpu_device *dev);

/* A layer above that keeps state per remote device (svm/: a mirror VM's
 * ranges) lets go of @dev in @fn, which remote_close() calls first, while
 * the connection still serves requests. Set once at load. */
void remote_set_close_hook(void (*fn)(struct ugpu_device *dev));

/* Free what remote_open() made (from device_put()). */
void remote_free(struct ugpu_device *dev);

/*
 * remote_call() - one request and its reply.
 * @req, @req_len: the fixed part of the request (may be 0).
 * @data, @data_len: bytes after it (UGPUD_BO_WRITE), or NULL/0.
 * @rep, @rep_cap: where the reply's body goes; @rep_len (may be NULL) gets
 *                 its length. A body longer than @rep_cap is -EPROTO.
 * Returns: the reply's result (0 or the daemon's -errno, whose message is
 * logged); -ENODEV when the connection is closed or the daemon is gone;
 * -ETIMEDOUT after REMOTE_TIMEOUT_MS; -EPROTO for a malformed reply.
 */
int remote_call(struct ugpu_device *dev, uint16_t op, const void *req, size_t req_len,
		const void *data, size_t data_len, void *rep, size_t rep_cap, size_t *rep_len);

/*
 * remote_post() - send a request whose reply is not waited for: a BO's
 * destroy, whose result its caller ignores anyway. The daemon serves it in
 * order before anything this connection sends later, so every later call
 * sees its effect; its reply is read (and dropped, an error logged) by the
 * next call's receive. At most REMOTE_MAX_POSTED go unanswered: the next
 * post then waits for their replies first. A post the daemon may not have
 * served when the connection broke is sent again after a resume (only
 * requests that are harmless twice are posted: a BO handle carries its
 * generation, so a second destroy is -ENOENT, never another BO's).
 * Returns 0 (sent), -ENODEV (closed or the daemon gone), -errno.
 */
#define REMOTE_MAX_POSTED 32
int remote_post(struct ugpu_device *dev, uint16_t op, const void *req, size_t req_len);

/* Sessions this connection took back after a daemon's restart so far. */
uint32_t remote_resumes(struct ugpu_device *dev);
/*
 * remote_same_daemon() - is the daemon that answered while remote_resumes()
 * was @resumes still the one this connection talks to, as far as can be
 * told without a request: no resume since, and nothing waiting on the
 * socket (the end a dead daemon leaves, or a reply or event read ahead of
 * it). False when not known: the caller asks the daemon instead.
 */
bool remote_same_daemon(struct ugpu_device *dev, uint32_t resumes);

/* remote_call() for a reply that brings one fd (UGPUD_BO_MAP): *@rep_fd
 * gets it (close-on-exec, the caller's); a successful reply without it is
 * -EMFILE (the kernel dropped it: no room for another fd in this process;
 * the request was done), with more than one -EPROTO. */
int remote_call_fd(struct ugpu_device *dev, uint16_t op, const void *req, size_t req_len,
		   void *rep, size_t rep_cap, size_t *rep_len, int *rep_fd);
/* remote_call_fd() for a reply that may bring one fd or none (*@rep_fd -1);
 * @resumes (may be NULL) gets remote_resumes() as of the reply: the daemon
 * that answered. */
int remote_call_maybe_fd(struct ugpu_device *dev, uint16_t op, const void *req, size_t req_len,
			 void *rep, size_t rep_cap, size_t *rep_len, int *rep_fd,
			 uint32_t *resumes);

/* remote_call() for a reply of exactly @rep_len bytes (else -EPROTO). */
int remote_get(struct ugpu_device *dev, uint16_t op, const void *req, size_t req_len, void *rep,
	       size_t rep_len);

/* Copy @full (the whole public struct a call fills) into the caller's
 * @out, as far as the caller's @out_size (its size field) reaches. */
static inline void remote_fill(void *out, size_t out_size, const void *full, size_t full_size)
{
	memcpy(out, full, out_size < full_size ? out_size : full_size);
}

/* ugpu_device_query() and ugpu_device_mem_stats() of a remote device
 * (arguments checked by the caller). */
int remote_query(struct ugpu_device *dev, struct ugpu_device_info *info);
int remote_mem_stats(struct ugpu_device *dev, struct ugpu_device_mem *st);

#endif
