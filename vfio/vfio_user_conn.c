/* SPDX-License-Identifier: MIT */
/*
 * vfio-user client: the connection (qemu docs/interop/vfio-user.rst, 0.1).
 *
 * Threading model:
 *  - One reader thread owns the receive side of the socket(s). It reads whole
 *    messages, routes replies to the caller waiting for that msg_id, and
 *    serves the server's own requests (DMA_READ / DMA_WRITE for windows
 *    mapped without an fd) itself, so a caller blocked in DMA_UNMAP while the
 *    server drains in-band DMA cannot deadlock.
 *  - Twin-socket mode (offered in VERSION unless turned off; the server
 *    decides): the server's requests and our replies to them travel on a
 *    second socket the server passes with its VERSION reply. The reader
 *    watches both; replies to server requests go back on the socket the
 *    request came from, under that socket's own send lock, so serving
 *    in-band DMA never queues behind a caller's large REGION_WRITE.
 *  - Callers send under @send_lock (one whole message at a time, so
 *    messages never interleave on the stream) and wait for their reply on
 *    @cond with a bound (@timeout_ms). A reply that comes after its caller
 *    gave up finds no pending entry and is dropped with a log line.
 *  - A hang-up (EOF, ECONNRESET, EPIPE) or a broken stream (a size field
 *    that cannot be framed, a message cut short) marks the device dead:
 *    pending calls complete at once (-ENODEV, or -EPROTO for a broken
 *    stream), later calls fail with -ENODEV without touching the socket.
 *
 * Lock order: @lock, @send_lock and @twin_send_lock are never held together
 * (each path drops one before taking another), so they cannot deadlock. None
 * is held across a wait on the peer, except a send lock around one bounded
 * send.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/sock.h"
#include "vfio/vfio_user_internal.h"

void vu_close_fds(int *fds, int n)
{
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/* ---- death ------------------------------------------------------------ */

/* Caller holds @lock. Completes every pending call with @err. */
void vu_mark_dead_locked(struct vu_dev *vu, int err, const char *why)
{
	struct vu_pending *p;

	if (!vu->dead) {
		if (why && __atomic_load_n(&vu->negotiated, __ATOMIC_ACQUIRE))
			log_err(vu->dev.ctx, "%s: %s; device is gone", vu->dev.name, why);
		else if (why) /* open reports a refusal itself */
			log_dbg(vu->dev.ctx, "%s: %s before VERSION was answered", vu->dev.name, why);
		vu->dead = true;
		vu->dead_err = err;
		vfio_dev_set_gone(&vu->dev);
	}
	for (p = vu->pending; p; p = p->next) {
		if (!p->done) {
			p->done = true;
			p->err = err;
		}
	}
	pthread_cond_broadcast(&vu->cond);
}

void vu_mark_dead(struct vu_dev *vu, int err, const char *why)
{
	pthread_mutex_lock(&vu->lock);
	vu_mark_dead_locked(vu, err, why);
	pthread_mutex_unlock(&vu->lock);
}

bool vu_is_dead(struct vu_dev *vu)
{
	bool dead;

	pthread_mutex_lock(&vu->lock);
	dead = vu->dead;
	pthread_mutex_unlock(&vu->lock);
	return dead;
}

/* ---- sending ---------------------------------------------------------- */

/*
 * Send one whole message within the timeout. A message only partly written
 * leaves the stream unusable: the device is then marked dead.
 * Returns 0, -ENODEV (peer gone), -ETIMEDOUT (peer not reading).
 */
int vu_send(struct vu_dev *vu, bool twin, const struct vfu_hdr *hdr, const void *payload,
	    size_t len, const int *fds, int nfds)
{
	pthread_mutex_t *lock = twin ? &vu->twin_send_lock : &vu->send_lock;
	int fd = twin ? vu->twin : vu->sock;
	struct iovec iov[2] = {
		{ .iov_base = (void *)hdr, .iov_len = sizeof(*hdr) },
		{ .iov_base = (void *)payload, .iov_len = len },
	};
	size_t total = sizeof(*hdr) + len, sent;
	int ret;

	if (nfds > VFU_MAX_FDS)
		return -EINVAL;
	pthread_mutex_lock(lock);
	ret = sock_send(fd, iov, 2, fds, nfds, now_ns() + (uint64_t)vu_timeout(vu) * 1000000u, &sent);
	pthread_mutex_unlock(lock);
	if (ret == -ECONNRESET)
		ret = -ENODEV;

	if (ret == -ENODEV) {
		vu_mark_dead(vu, -ENODEV, "server hung up (send failed)");
	} else if (ret && sent > 0) {
		char why[128];

		snprintf(why, sizeof(why), "%s message cut after %zu of %zu bytes (%s)",
			 vu_cmd_name(hdr->cmd), sent, total, strerror(-ret));
		vu_mark_dead(vu, -ENODEV, why);
	} else if (ret) {
		log_err(vu->dev.ctx, "%s: cannot send %s: %s", vu->dev.name, vu_cmd_name(hdr->cmd),
			strerror(-ret));
	}
	return ret;
}

/* ---- receiving (reader thread only) ---------------------------------- */

/* True once close() asked the reader to stop. */
static bool vu_stopping(struct vu_dev *vu)
{
	bool stop;

	pthread_mutex_lock(&vu->lock);
	stop = vu->stopping;
	pthread_mutex_unlock(&vu->lock);
	return stop;
}

/* The reader's wake fd is readable (sock_wait.woken): close() asked it to
 * stop, or a twin socket is there to watch (seen after this message). */
static int vu_woken(void *arg)
{
	struct vu_dev *vu = arg;
	uint64_t v;

	if (vu_stopping(vu))
		return -ECANCELED;
	if (read(vu->wake_fd, &v, sizeof(v)) < 0) {
		/* EAGAIN: drained already */
	}
	return 0;
}

/* The body length a vfio-user header gives (sock_body_len_fn): -EPROTO for
 * a size that cannot be framed. */
static int64_t vu_body_len(const void *hdr, void *arg)
{
	const struct vfu_hdr *h = hdr;

	(void)arg;
	if (h->size < sizeof(*h) || h->size > VFU_MAX_MSG)
		return -EPROTO;
	return (int64_t)(h->size - sizeof(*h));
}

/* Answer a server request on the socket it came by (@twin): an error
 * (header only) or a success with @payload. */
void vu_reply(struct vu_dev *vu, bool twin, const struct vfu_hdr *req, int err,
	      const void *payload, size_t len)
{
	struct vfu_hdr h = {
		.msg_id = req->msg_id,
		.cmd = req->cmd,
		.size = (uint32_t)(sizeof(h) + (err ? 0 : len)),
		.flags = VFU_F_TYPE_REPLY | (err ? VFU_F_ERROR : 0),
		.error = (uint32_t)err,
	};

	if (req->flags & VFU_F_NO_REPLY)
		return;
	vu_send(vu, twin, &h, err ? NULL : payload, err ? 0 : len, NULL, 0);
}

/* Hand a reply to the caller waiting for it; validate what the reader can. */
static void vu_route_reply(struct vu_dev *vu, const struct vfu_hdr *h, void *body, size_t len,
			   int *fds, int nfds, bool ctrunc)
{
	struct vu_log l = vu_log_of(vu);
	struct vu_pending *p;

	pthread_mutex_lock(&vu->lock);
	for (p = vu->pending; p; p = p->next)
		if (!p->done && p->msg_id == h->msg_id)
			break;
	if (!p) {
		uint64_t n = ++vu->stray_replies;

		pthread_mutex_unlock(&vu->lock);
		if (n <= 10 || !(n % 1000))
			log_err(vu->dev.ctx, "%s: reply %s with msg_id %u matches no request (late or bogus); dropped (%" PRIu64 " so far%s)",
				vu->dev.name, vu_cmd_name(h->cmd), h->msg_id, n,
				n == 10 ? "; from here one in 1000 is logged" : "");
		vu_close_fds(fds, nfds);
		free(body);
		return;
	}
	p->done = true;
	p->err = vu_reply_status(&l, p->cmd, h, len, ctrunc || nfds > VU_RECV_FDS);
	if (p->err == 0) {
		p->reply = body;
		p->reply_len = len;
		body = NULL;
		memcpy(p->fds, fds, sizeof(int) * nfds);
		p->nfds = nfds;
		nfds = 0;
	}
	pthread_cond_broadcast(&vu->cond);
	pthread_mutex_unlock(&vu->lock);
	vu_close_fds(fds, nfds);
	free(body);
}

/*
 * Read one whole message from @fd (its start is ready) and act on it.
 * Returns 0, or -1 once the device is dead (the reader then ends).
 */
static int vu_read_one(struct vu_dev *vu, int fd, bool twin)
{
	/* The message has started: the rest must follow within half the call
	 * bound, so a stalled message is reported as a broken stream (-EPROTO)
	 * before the waiting caller's own timeout fires. */
	struct sock_wait w = {
		.deadline_ns = now_ns() + (uint64_t)(vu_timeout(vu) + 1) / 2 * 1000000u,
		.wake_fd = vu->wake_fd,
		.woken = vu_woken,
		.arg = vu,
	};
	struct sock_msg m = { .in.max = VU_RECV_FDS };
	struct vfu_hdr h;
	int *fds = m.in.fds;
	int nfds;
	uint8_t *body;
	size_t len;
	char why[160];
	int ret;

	ret = sock_recv_msg(fd, &h, sizeof(h), vu_body_len, NULL, VFU_MAX_MSG - sizeof(h), &w, &m);
	if (ret == -EPROTO) {
		snprintf(why, sizeof(why), "message %s claims size %u (must be %zu..%u): stream broken",
			 vu_cmd_name(h.cmd), h.size, sizeof(h), (unsigned)VFU_MAX_MSG);
		vu_mark_dead(vu, -EPROTO, why);
		return -1;
	}
	if (ret) {
		if (ret == -ECANCELED) {
			vu_mark_dead(vu, -ENODEV, NULL);
		} else if (ret == -ECONNRESET) {
			vu_mark_dead(vu, -ENODEV, twin ? "server hung up (twin socket)" : "server hung up");
		} else if (ret == -ETIMEDOUT) {
			vu_mark_dead(vu, -EPROTO, "message cut short (stalled mid-message)");
		} else if (ret == -ENOMEM) {
			vu_mark_dead(vu, -ENOMEM, "out of memory for a message");
		} else {
			snprintf(why, sizeof(why), "socket read failed: %s", strerror(-ret));
			vu_mark_dead(vu, -ENODEV, why);
		}
		return -1;
	}
	body = m.body;
	len = m.len;
	nfds = m.in.n;

	switch (h.flags & VFU_F_TYPE_MASK) {
	case VFU_F_TYPE_REPLY:
		/* Replies to our calls come on the main socket; the twin socket
		 * carries only the server's requests (our replies go out on it). */
		if (twin) {
			log_err(vu->dev.ctx, "%s: reply %s (msg_id %u) on the twin socket, which carries only the server's requests; dropped",
				vu->dev.name, vu_cmd_name(h.cmd), h.msg_id);
			vu_close_fds(fds, nfds);
			free(body);
			break;
		}
		vu_route_reply(vu, &h, body, len, fds, nfds, m.in.ctrunc);
		break;
	case VFU_F_TYPE_COMMAND:
		vu_close_fds(fds, nfds);
		if (h.cmd == VFU_CMD_DMA_READ || h.cmd == VFU_CMD_DMA_WRITE) {
			vu_serve_dma(vu, twin, &h, body, len);
		} else {
			log_err(vu->dev.ctx, "%s: server sent command %u (%s), which a client does not serve",
				vu->dev.name, h.cmd, vu_cmd_name(h.cmd));
			vu_reply(vu, twin, &h, ENOSYS, NULL, 0);
		}
		free(body);
		break;
	default:
		log_err(vu->dev.ctx, "%s: message msg_id %u has bad type %u in flags 0x%x; dropped",
			vu->dev.name, h.msg_id, h.flags & VFU_F_TYPE_MASK, h.flags);
		vu_close_fds(fds, nfds);
		free(body);
		break;
	}
	return vu_is_dead(vu) ? -1 : 0;
}

void *vu_reader(void *arg)
{
	struct vu_dev *vu = arg;

	for (;;) {
		struct pollfd pfd[3];
		bool stop;
		int twin, pr;

		pthread_mutex_lock(&vu->lock);
		stop = vu->stopping;
		twin = vu->twin;
		pthread_mutex_unlock(&vu->lock);
		if (stop) {
			vu_mark_dead(vu, -ENODEV, NULL);
			break;
		}
		pfd[0] = (struct pollfd){ .fd = vu->wake_fd, .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = vu->sock, .events = POLLIN };
		pfd[2] = (struct pollfd){ .fd = twin, .events = POLLIN };
		pr = poll(pfd, twin >= 0 ? 3 : 2, VU_READER_TICK_MS);
		if (pr < 0 && errno != EINTR) {
			char why[96];

			snprintf(why, sizeof(why), "poll on the socket failed: %s", strerror(errno));
			vu_mark_dead(vu, -ENODEV, why);
			break;
		}
		if (pr <= 0)
			continue;
		if (pfd[0].revents) {
			uint64_t v;

			if (read(vu->wake_fd, &v, sizeof(v)) < 0) {
				/* EAGAIN: drained already */
			}
			continue; /* re-read stopping and twin */
		}
		if (twin >= 0 && pfd[2].revents && vu_read_one(vu, twin, true))
			break;
		if (pfd[1].revents && vu_read_one(vu, vu->sock, false))
			break;
	}
	return NULL;
}

/* ---- request/reply ---------------------------------------------------- */

void vu_reply_release(struct vu_reply *r)
{
	free(r->data);
	r->data = NULL;
	vu_close_fds(r->fds, r->nfds);
	r->nfds = 0;
}

uint16_t vu_next_id_locked(struct vu_dev *vu)
{
	/* ids are ours; skip any still waited on so routing stays unambiguous */
	for (;;) {
		uint16_t id = vu->next_id++;
		struct vu_pending *q;

		for (q = vu->pending; q; q = q->next)
			if (q->msg_id == id)
				break;
		if (!q)
			return id;
	}
}

/*
 * Send @cmd with @payload (and @fds) and wait for the reply.
 * @max_fds: fds the reply may carry; more is -EPROTO.
 * @rep: filled on success (caller releases); may be NULL when the caller
 *       expects an empty reply (a non-empty one is then -EPROTO).
 * Returns 0, -errno from the server's error reply, -EPROTO, -ETIMEDOUT,
 * -ENODEV.
 */
int vu_call(struct vu_dev *vu, uint16_t cmd, const void *payload, size_t len,
	    const int *fds, int nfds, int max_fds, struct vu_reply *rep)
{
	struct vu_pending p = { .cmd = cmd };
	struct vu_pending **pp;
	struct vfu_hdr h;
	struct timespec ts;
	int ret;

	if (rep)
		memset(rep, 0, sizeof(*rep));
	if (sizeof(h) + len > VFU_MAX_MSG)
		return -EMSGSIZE;

	pthread_mutex_lock(&vu->lock);
	if (vu->dead) {
		pthread_mutex_unlock(&vu->lock);
		return -ENODEV;
	}
	p.msg_id = vu_next_id_locked(vu);
	p.next = vu->pending;
	vu->pending = &p;
	pthread_mutex_unlock(&vu->lock);

	h = (struct vfu_hdr){
		.msg_id = p.msg_id,
		.cmd = cmd,
		.size = (uint32_t)(sizeof(h) + len),
		.flags = VFU_F_TYPE_COMMAND,
	};
	ret = vu_send(vu, false, &h, payload, len, fds, nfds);

	pthread_mutex_lock(&vu->lock);
	if (ret == 0) {
		ts = monotonic_deadline_after_ms((uint64_t)vu_timeout(vu));
		while (!p.done) {
			if (pthread_cond_timedwait(&vu->cond, &vu->lock, &ts) == ETIMEDOUT && !p.done) {
				ret = -ETIMEDOUT;
				break;
			}
		}
		if (p.done)
			ret = p.err;
	}
	for (pp = &vu->pending; *pp; pp = &(*pp)->next) {
		if (*pp == &p) {
			*pp = p.next;
			break;
		}
	}
	pthread_mutex_unlock(&vu->lock);

	if (ret == -ETIMEDOUT)
		log_err(vu->dev.ctx, "%s: no reply to %s (msg_id %u) within %d ms", vu->dev.name,
			vu_cmd_name(cmd), p.msg_id, vu_timeout(vu));
	if (ret == 0 && p.nfds > max_fds) {
		log_err(vu->dev.ctx, "%s: reply to %s carried %d fds, at most %d expected",
			vu->dev.name, vu_cmd_name(cmd), p.nfds, max_fds);
		ret = -EPROTO;
	}
	if (ret == 0 && !rep && p.reply_len) {
		log_err(vu->dev.ctx, "%s: reply to %s carries %zu unexpected payload bytes",
			vu->dev.name, vu_cmd_name(cmd), p.reply_len);
		ret = -EPROTO;
	}
	if (ret || !rep) {
		free(p.reply);
		vu_close_fds(p.fds, p.nfds);
		return ret;
	}
	rep->data = p.reply;
	rep->len = p.reply_len;
	memcpy(rep->fds, p.fds, sizeof(int) * p.nfds);
	rep->nfds = p.nfds;
	return 0;
}
