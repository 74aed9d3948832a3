/* SPDX-License-Identifier: MIT */
/*
 * vfio-user client transport (qemu docs/interop/vfio-user.rst, 0.1).
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

#include "src/base/clock.h"
#include "src/base/log.h"
#include "src/base/sock.h"
#include "src/vfio/transport.h"
#include "src/vfio/vfio_user.h"
#include "src/vfio/vfio_user_caps.h"
#include "src/vfio/vfio_user_msg.h"
#include "src/vfio/vfio_user_proto.h"

/* How often the idle reader re-checks for close (it is also woken by
 * @wake_fd, so this only bounds the wait). */
#define VU_READER_TICK_MS 1000
#define VU_IOVA_LIMIT (1ull << 48)

/* A caller waiting for one reply. Lives on the caller's stack; linked into
 * vu_dev.pending under vu_dev.lock until the caller unlinks it. */
struct vu_pending {
	uint16_t msg_id;
	uint16_t cmd;
	bool done;
	int err; /* set by the reader: 0, -errno from the reply, -EPROTO, -ENODEV */
	void *reply; /* payload, malloc'd, owned by the caller once done */
	size_t reply_len;
	int fds[VU_RECV_FDS];
	int nfds;
	struct vu_pending *next;
};

/* A DMA window as the client told the server about it. */
struct vu_dma {
	uint64_t iova;
	uint64_t size;
	uint8_t *vaddr;
	uint32_t prot; /* VFIO_DMA_READ/WRITE */
	bool has_fd;
};

struct vu_region {
	struct vfio_dev_region_info info;
	uint64_t mmap_offset; /* offset into @fd for mmap */
	int fd; /* -1 when not mappable */
};

/*
 * struct vu_dev - one vfio-user connection.
 *
 * Locking:
 *  - @lock protects @pending, @next_id, @dead, @dead_err, @dma*, @mmaps.
 *    The reader holds it while copying in-band DMA data, so a window removed
 *    from @dma is never touched again.
 *  - @send_lock serialises writes to @sock, @twin_send_lock to @twin.
 *  - @twin is set once, under @lock, when VERSION turns twin-socket mode on;
 *    the reader reads it under @lock; close() closes it after the reader is
 *    joined.
 *  - @regions, @irqs, @caps and @flags are written during open, before any
 *    other thread sees the device, and read-only after.
 *  - @timeout_ms is read/written atomically.
 */
struct vu_dev {
	struct vfio_dev dev; /* must be first */
	int sock;
	int twin; /* twin socket (server requests), or -1 */
	bool offer_twin; /* propose twin-socket mode in VERSION */
	int wake_fd; /* eventfd: wakes the reader (close, or a new twin to watch) */
	bool stopping; /* under @lock */
	pthread_t reader;
	bool reader_started;
	int timeout_ms;

	pthread_mutex_t send_lock;
	pthread_mutex_t twin_send_lock;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* CLOCK_MONOTONIC; signalled when a pending completes */
	struct vu_pending *pending;
	uint16_t next_id;
	bool dead;
	int dead_err;

	struct vu_dma *dma;
	uint32_t nr_dma;
	uint32_t cap_dma;
	struct vfio_mmap_rec *mmaps;

	/* negotiated */
	uint32_t max_msg_fds; /* the server accepts this many fds per message */
	uint32_t max_xfer; /* largest count we send to the server */
	uint32_t max_dma_maps;
	uint64_t pgsizes;
	uint32_t flags; /* VFU_DEV_F_* */

	struct vu_region regions[VU_MAX_REGIONS];
	struct vfio_dev_irq_info irqs[VU_MAX_IRQS];
};

static struct vu_dev *to_vu(struct vfio_dev *dev)
{
	return (struct vu_dev *)dev;
}

/* Log target for the message checks of vfio_user_msg.c. */
static struct vu_log vu_log_of(struct vu_dev *vu)
{
	return (struct vu_log){ .ctx = vu->dev.ctx, .name = vu->dev.name };
}

static int vu_timeout(struct vu_dev *vu)
{
	return __atomic_load_n(&vu->timeout_ms, __ATOMIC_RELAXED);
}

static void close_fds(int *fds, int n)
{
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/* ---- death ------------------------------------------------------------ */

/* Caller holds @lock. Completes every pending call with @err. */
static void vu_mark_dead_locked(struct vu_dev *vu, int err, const char *why)
{
	struct vu_pending *p;

	if (!vu->dead) {
		if (why)
			log_err(vu->dev.ctx, "%s: %s; device is gone", vu->dev.name, why);
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

static void vu_mark_dead(struct vu_dev *vu, int err, const char *why)
{
	pthread_mutex_lock(&vu->lock);
	vu_mark_dead_locked(vu, err, why);
	pthread_mutex_unlock(&vu->lock);
}

static bool vu_is_dead(struct vu_dev *vu)
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
static int vu_send(struct vu_dev *vu, bool twin, const struct vfu_hdr *hdr, const void *payload,
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
static void vu_reply(struct vu_dev *vu, bool twin, const struct vfu_hdr *req, int err,
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

/* Find the window holding [addr, addr+count) whole. Caller holds @lock. */
static struct vu_dma *vu_dma_find_locked(struct vu_dev *vu, uint64_t addr, uint64_t count)
{
	for (uint32_t i = 0; i < vu->nr_dma; i++) {
		struct vu_dma *d = &vu->dma[i];

		if (addr >= d->iova && addr - d->iova < d->size && count <= d->size - (addr - d->iova))
			return d;
	}
	return NULL;
}

/* Serve DMA_READ / DMA_WRITE from the server against our own memory. */
static void vu_serve_dma(struct vu_dev *vu, bool twin, const struct vfu_hdr *h,
			 const uint8_t *body, size_t len)
{
	struct vu_log l = vu_log_of(vu);
	struct vfu_dma_access acc;
	struct vu_dma *d;
	uint8_t *out = NULL;
	size_t out_len = 0;
	int err;

	err = vu_dma_request_parse(&l, h, body, len, &acc);
	if (err) {
		vu_reply(vu, twin, h, err, NULL, 0);
		return;
	}
	if (h->cmd == VFU_CMD_DMA_READ) {
		out_len = sizeof(acc) + acc.count;
		out = malloc(out_len);
		if (!out) {
			vu_reply(vu, twin, h, ENOMEM, NULL, 0);
			return;
		}
		memcpy(out, &acc, sizeof(acc));
	}

	pthread_mutex_lock(&vu->lock);
	d = vu_dma_find_locked(vu, acc.addr, acc.count);
	if (!d || !d->vaddr) {
		err = EFAULT;
	} else if (h->cmd == VFU_CMD_DMA_READ) {
		if (!(d->prot & VFIO_DMA_READ))
			err = EPERM;
		else
			memcpy(out + sizeof(acc), d->vaddr + (acc.addr - d->iova), acc.count);
	} else {
		if (!(d->prot & VFIO_DMA_WRITE))
			err = EPERM;
		else
			memcpy(d->vaddr + (acc.addr - d->iova), body + sizeof(acc), acc.count);
	}
	pthread_mutex_unlock(&vu->lock);

	if (err) {
		log_err(vu->dev.ctx, "%s: server %s iova 0x%" PRIx64 "+%" PRIu64 ": %s",
			vu->dev.name, vu_cmd_name(h->cmd), acc.addr, acc.count,
			err == EFAULT ? "not inside one mapped window" : "window lacks that permission");
		vu_reply(vu, twin, h, err, NULL, 0);
	} else if (h->cmd == VFU_CMD_DMA_READ) {
		vu_reply(vu, twin, h, 0, out, out_len);
	} else {
		vu_reply(vu, twin, h, 0, &acc, sizeof(acc));
	}
	free(out);
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
		pthread_mutex_unlock(&vu->lock);
		log_err(vu->dev.ctx, "%s: reply %s with msg_id %u matches no request (late or bogus); dropped",
			vu->dev.name, vu_cmd_name(h->cmd), h->msg_id);
		close_fds(fds, nfds);
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
	close_fds(fds, nfds);
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
			close_fds(fds, nfds);
			free(body);
			break;
		}
		vu_route_reply(vu, &h, body, len, fds, nfds, m.in.ctrunc);
		break;
	case VFU_F_TYPE_COMMAND:
		close_fds(fds, nfds);
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
		close_fds(fds, nfds);
		free(body);
		break;
	}
	return vu_is_dead(vu) ? -1 : 0;
}

static void *vu_reader(void *arg)
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

struct vu_reply {
	void *data; /* malloc'd payload; free with free() */
	size_t len;
	int fds[VU_RECV_FDS];
	int nfds;
};

static void vu_reply_release(struct vu_reply *r)
{
	free(r->data);
	r->data = NULL;
	close_fds(r->fds, r->nfds);
	r->nfds = 0;
}

/*
 * Send @cmd with @payload (and @fds) and wait for the reply.
 * @max_fds: fds the reply may carry; more is -EPROTO.
 * @rep: filled on success (caller releases); may be NULL when the caller
 *       expects an empty reply (a non-empty one is then -EPROTO).
 * Returns 0, -errno from the server's error reply, -EPROTO, -ETIMEDOUT,
 * -ENODEV.
 */
static int vu_call(struct vu_dev *vu, uint16_t cmd, const void *payload, size_t len,
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
	/* ids are ours; skip any still waited on so routing stays unambiguous */
	for (;;) {
		struct vu_pending *q;

		p.msg_id = vu->next_id++;
		for (q = vu->pending; q; q = q->next)
			if (q->msg_id == p.msg_id)
				break;
		if (!q)
			break;
	}
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
		close_fds(p.fds, p.nfds);
		return ret;
	}
	rep->data = p.reply;
	rep->len = p.reply_len;
	memcpy(rep->fds, p.fds, sizeof(int) * p.nfds);
	rep->nfds = p.nfds;
	return 0;
}

/* ---- open-time negotiation -------------------------------------------- */

/* The server turned twin-socket mode on and passed @fd: it must be a stream
 * socket; the reader watches it from now on. Returns 0 or -EPROTO. */
static int vu_twin_adopt(struct vu_dev *vu, int fd)
{
	struct vu_log l = vu_log_of(vu);
	uint64_t one = 1;
	int fl;

	if (vu_twin_fd_check(&l, fd))
		return -EPROTO;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		log_err(vu->dev.ctx, "%s: cannot make the twin socket non-blocking: %s", vu->dev.name,
			strerror(errno));
		return -EPROTO;
	}
	pthread_mutex_lock(&vu->lock);
	vu->twin = fd;
	pthread_mutex_unlock(&vu->lock);
	if (write(vu->wake_fd, &one, sizeof(one)) < 0) {
		/* the counter is not near saturation: cannot fail */
	}
	log_dbg(vu->dev.ctx, "%s: twin-socket mode: the server's requests come on their own socket",
		vu->dev.name);
	return 0;
}

static int vu_negotiate(struct vu_dev *vu)
{
	struct vu_log l = vu_log_of(vu);
	char json[160];
	uint8_t buf[sizeof(struct vfu_version) + sizeof(json)];
	struct vfu_version ver = { .major = VFU_VERSION_MAJOR, .minor = VFU_VERSION_MINOR };
	struct vu_negotiated neg;
	struct vu_reply r;
	int n, ret;

	struct vfu_caps mine = { .max_msg_fds = VU_RECV_FDS,
				 .max_data_xfer_size = VFU_MAX_DATA_XFER,
				 .twin_supported = vu->offer_twin,
				 .twin_fd_index = -1 }; /* the limits of DMA are the server's to say */

	n = vfu_caps_format(&mine, json, sizeof(json));
	if (n < 0)
		return n;
	memcpy(buf, &ver, sizeof(ver));
	memcpy(buf + sizeof(ver), json, (size_t)n + 1);
	ret = vu_call(vu, VFU_CMD_VERSION, buf, sizeof(ver) + (size_t)n + 1, NULL, 0, VU_RECV_FDS,
		      &r);
	if (ret == -EBUSY)
		log_err(vu->dev.ctx, "%s: the device is held by another client (the server answered EBUSY)",
			vu->dev.name);
	else if (ret == -ENODEV)
		log_err(vu->dev.ctx, "%s: the server closed the connection instead of answering VERSION: it does not speak vfio-user %u.%u, or refuses this client",
			vu->dev.name, VFU_VERSION_MAJOR, VFU_VERSION_MINOR);
	if (ret)
		return ret;
	ret = vu_version_parse(&l, r.data, r.len, r.nfds, vu->offer_twin, &neg);
	if (ret)
		goto out_release;
	if (neg.twin_fd_index >= 0) {
		ret = vu_twin_adopt(vu, r.fds[neg.twin_fd_index]);
		if (ret)
			goto out_release;
		r.fds[neg.twin_fd_index] = -1; /* ours now */
	}
	vu->max_msg_fds = neg.max_msg_fds;
	vu->max_xfer = neg.max_xfer;
	vu->max_dma_maps = neg.max_dma_maps;
	vu->pgsizes = neg.pgsizes;
	log_dbg(vu->dev.ctx, "%s: vfio-user %u.%u, max_msg_fds %u, max_xfer %u, max_dma_maps %u, pgsizes 0x%" PRIx64,
		vu->dev.name, neg.major, neg.minor, vu->max_msg_fds, vu->max_xfer, vu->max_dma_maps,
		vu->pgsizes);
out_release:
	vu_reply_release(&r);
	return ret;
}

static int vu_get_device_info(struct vu_dev *vu)
{
	struct vu_log l = vu_log_of(vu);
	struct vfu_device_info di = { .argsz = sizeof(di) };
	struct vu_reply r;
	int ret;

	ret = vu_call(vu, VFU_CMD_DEVICE_GET_INFO, &di, sizeof(di), NULL, 0, 0, &r);
	if (ret)
		return ret;
	ret = vu_device_info_parse(&l, r.data, r.len, &vu->flags, &vu->dev.num_regions,
				   &vu->dev.num_irqs);
	vu_reply_release(&r);
	return ret;
}

static int vu_get_region_info(struct vu_dev *vu, uint32_t index)
{
	struct vu_log l = vu_log_of(vu);
	struct vu_region *reg = &vu->regions[index];
	struct vfu_region_info ri;
	uint32_t argsz = 512;
	struct vu_reply r;
	int ret;

	for (int attempt = 0;; attempt++) {
		ri = (struct vfu_region_info){ .argsz = argsz, .index = index };
		ret = vu_call(vu, VFU_CMD_DEVICE_GET_REGION_INFO, &ri, sizeof(ri), NULL, 0, 1, &r);
		if (ret)
			return ret;
		ret = vu_region_info_parse(&l, index, argsz, attempt == 0, r.data, r.len, r.nfds,
					   &reg->info, &reg->mmap_offset);
		if (ret <= 0)
			break;
		argsz = (uint32_t)ret; /* ask again with room for the capabilities */
		vu_reply_release(&r);
	}
	if (ret == 0 && (reg->info.flags & VFIO_REGION_F_MMAP) && reg->info.size) {
		/* Before anything maps it: a file shorter than the region would
		 * SIGBUS the first touch (the ring set-up's memset). */
		ret = vu_region_fd_check(&l, r.fds[0], &reg->info, reg->mmap_offset);
		if (ret == 0) {
			reg->fd = r.fds[0];
			r.nfds = 0;
		}
	}
	vu_reply_release(&r);
	return ret;
}

static int vu_get_irq_info(struct vu_dev *vu, uint32_t index)
{
	struct vu_log l = vu_log_of(vu);
	struct vfu_irq_info ii = { .argsz = sizeof(ii), .index = index };
	struct vu_reply r;
	int ret;

	ret = vu_call(vu, VFU_CMD_DEVICE_GET_IRQ_INFO, &ii, sizeof(ii), NULL, 0, 0, &r);
	if (ret)
		return ret;
	ret = vu_irq_info_parse(&l, index, r.data, r.len, &vu->irqs[index]);
	vu_reply_release(&r);
	return ret;
}

/* ---- ops -------------------------------------------------------------- */

static void vu_close(struct vfio_dev *dev);

static int vu_region_info(struct vfio_dev *dev, uint32_t index, struct vfio_dev_region_info *info)
{
	struct vu_dev *vu = to_vu(dev);

	if (!info)
		return -EINVAL;
	if (index >= VU_MAX_REGIONS || index >= dev->num_regions) {
		memset(info, 0, sizeof(*info));
		info->index = index;
		return 0;
	}
	*info = vu->regions[index].info;
	return 0;
}

static int vu_region_check(struct vu_dev *vu, uint32_t index, uint64_t off, size_t len, uint32_t need)
{
	const struct vfio_dev_region_info *ri;

	if (index >= vu->dev.num_regions)
		return -EINVAL;
	ri = &vu->regions[index].info;
	if (!(ri->flags & need) || off > ri->size || len > ri->size - off)
		return -EINVAL;
	return 0;
}

static int vu_region_read(struct vfio_dev *dev, uint32_t index, uint64_t off, void *buf, size_t len)
{
	struct vu_dev *vu = to_vu(dev);
	struct vu_log l = vu_log_of(vu);
	size_t done = 0;
	int ret;

	if (!buf && len)
		return -EINVAL;
	ret = vu_region_check(vu, index, off, len, VFIO_REGION_F_READ);
	if (ret)
		return ret;
	while (done < len) {
		uint32_t chunk = (uint32_t)(len - done > vu->max_xfer ? vu->max_xfer : len - done);
		struct vfu_region_access ra = { .offset = off + done, .region = index, .count = chunk };
		struct vu_reply r;

		ret = vu_call(vu, VFU_CMD_REGION_READ, &ra, sizeof(ra), NULL, 0, 0, &r);
		if (ret)
			return ret;
		ret = vu_region_read_check(&l, index, ra.offset, chunk, r.data, r.len);
		if (ret) {
			vu_reply_release(&r);
			return ret;
		}
		memcpy((uint8_t *)buf + done, (uint8_t *)r.data + sizeof(ra), chunk);
		vu_reply_release(&r);
		done += chunk;
	}
	return 0;
}

static int vu_region_write(struct vfio_dev *dev, uint32_t index, uint64_t off, const void *buf,
			   size_t len)
{
	struct vu_dev *vu = to_vu(dev);
	struct vu_log l = vu_log_of(vu);
	uint8_t *msg;
	size_t done = 0;
	int ret;

	if (!buf && len)
		return -EINVAL;
	ret = vu_region_check(vu, index, off, len, VFIO_REGION_F_WRITE);
	if (ret)
		return ret;
	msg = malloc(sizeof(struct vfu_region_access) + (len < vu->max_xfer ? len : vu->max_xfer));
	if (!msg)
		return -ENOMEM;
	while (done < len) {
		uint32_t chunk = (uint32_t)(len - done > vu->max_xfer ? vu->max_xfer : len - done);
		struct vfu_region_access ra = { .offset = off + done, .region = index, .count = chunk };
		struct vu_reply r;

		memcpy(msg, &ra, sizeof(ra));
		memcpy(msg + sizeof(ra), (const uint8_t *)buf + done, chunk);
		ret = vu_call(vu, VFU_CMD_REGION_WRITE, msg, sizeof(ra) + chunk, NULL, 0, 0, &r);
		if (ret)
			break;
		ret = vu_region_write_check(&l, &ra, r.data, r.len);
		vu_reply_release(&r);
		if (ret)
			break;
		done += chunk;
	}
	free(msg);
	return ret;
}

static int vu_region_fd(struct vfio_dev *dev, uint32_t index, int *fd, uint64_t *fd_off)
{
	struct vu_dev *vu = to_vu(dev);
	const struct vu_region *reg;

	if (!fd || !fd_off || index >= dev->num_regions)
		return -EINVAL;
	reg = &vu->regions[index];
	if (!(reg->info.flags & VFIO_REGION_F_MMAP) || reg->fd < 0)
		return -ENOTSUP;
	*fd = reg->fd;
	*fd_off = reg->mmap_offset;
	return 0;
}

static int vu_region_mmap(struct vfio_dev *dev, uint32_t index, uint64_t off, size_t len, int prot,
			  void **addr)
{
	struct vu_dev *vu = to_vu(dev);
	const struct vu_region *reg;
	void *p;
	int ret;

	if (!addr || index >= dev->num_regions)
		return -EINVAL;
	reg = &vu->regions[index];
	ret = vfio_region_mmap_check(dev, &reg->info, off, len);
	if (ret)
		return ret;
	if (reg->fd < 0) {
		log_err(dev->ctx, "%s: region %u came without an fd to map", dev->name, index);
		return -EINVAL;
	}
	if (vu_is_dead(vu))
		return -ENODEV;
	p = mmap(NULL, len, prot, MAP_SHARED, reg->fd, (off_t)(reg->mmap_offset + off));
	if (p == MAP_FAILED) {
		int err = -errno;

		log_err(dev->ctx, "%s: mmap of region %u [0x%" PRIx64 "+0x%zx] failed: %s", dev->name,
			index, off, len, strerror(-err));
		return err;
	}
	ret = vfio_mmap_track(&vu->mmaps, &vu->lock, p, len);
	if (ret) {
		munmap(p, len);
		return ret;
	}
	*addr = p;
	return 0;
}

static int vu_region_munmap(struct vfio_dev *dev, void *addr, size_t len)
{
	struct vu_dev *vu = to_vu(dev);

	return vfio_mmap_untrack(&vu->mmaps, &vu->lock, addr, len);
}

static int vu_irq_info(struct vfio_dev *dev, uint32_t index, struct vfio_dev_irq_info *info)
{
	struct vu_dev *vu = to_vu(dev);

	if (!info)
		return -EINVAL;
	if (index >= dev->num_irqs) {
		memset(info, 0, sizeof(*info));
		info->index = index;
		return 0;
	}
	*info = vu->irqs[index];
	return 0;
}

/* One SET_IRQS message: [start, start+count) to @fds (count fds), or with
 * @fds NULL and @assign false de-assign that range. */
static int vu_set_irqs_one(struct vu_dev *vu, uint32_t index, uint32_t start, uint32_t count,
			   const int *fds, bool disable_all)
{
	struct vfu_irq_set is = {
		.argsz = sizeof(is),
		.flags = VFU_IRQ_SET_ACTION_TRIGGER |
			 (disable_all ? VFU_IRQ_SET_DATA_NONE : VFU_IRQ_SET_DATA_EVENTFD),
		.index = index,
		.start = start,
		.count = count,
	};

	return vu_call(vu, VFU_CMD_DEVICE_SET_IRQS, &is, sizeof(is), fds, fds ? (int)count : 0, 0,
		       NULL);
}

static int vu_set_irqs(struct vfio_dev *dev, uint32_t index, uint32_t start, uint32_t count,
		       const int *fds)
{
	struct vu_dev *vu = to_vu(dev);
	uint32_t i = 0;
	int ret;

	if (index >= dev->num_irqs)
		return -EINVAL;
	if (count == 0)
		return vu_set_irqs_one(vu, index, 0, 0, NULL, true);
	if (!fds || start > vu->irqs[index].count || count > vu->irqs[index].count - start)
		return -EINVAL;
	/* fds travel as ancillary data, which cannot say "-1": send runs of
	 * real fds (at most max_msg_fds each) and runs of -1 as de-assigns. */
	while (i < count) {
		uint32_t j = i;

		if (fds[i] < 0) {
			while (j < count && fds[j] < 0)
				j++;
			ret = vu_set_irqs_one(vu, index, start + i, j - i, NULL, false);
		} else {
			uint32_t lim = vu->max_msg_fds ? vu->max_msg_fds : 1;

			while (j < count && fds[j] >= 0 && j - i < lim)
				j++;
			ret = vu_set_irqs_one(vu, index, start + i, j - i, fds + i, false);
		}
		if (ret)
			return ret;
		i = j;
	}
	return 0;
}

static int vu_iommu_info(struct vfio_dev *dev, struct vfio_iommu_info *info)
{
	struct vu_dev *vu = to_vu(dev);

	if (!info)
		return -EINVAL;
	memset(info, 0, sizeof(*info));
	info->pgsize_mask = vu->pgsizes;
	info->max_mappings = vu->max_dma_maps;
	info->nr_ranges = 1;
	info->ranges[0].start = 0;
	info->ranges[0].end = VU_IOVA_LIMIT - 1;
	return 0;
}

static int vu_dma_map(struct vfio_dev *dev, uint64_t iova, uint64_t size, void *vaddr, int fd,
		      uint64_t fd_off, uint32_t prot)
{
	struct vu_dev *vu = to_vu(dev);
	uint64_t align = vu->pgsizes & -vu->pgsizes;
	struct vfu_dma_map dm = {
		.argsz = sizeof(dm),
		.flags = ((prot & VFIO_DMA_READ) ? VFU_DMA_F_READ : 0) |
			 ((prot & VFIO_DMA_WRITE) ? VFU_DMA_F_WRITE : 0),
		.offset = fd >= 0 ? fd_off : 0,
		.addr = iova,
		.size = size,
	};
	struct vu_dma *d;
	uint32_t i;
	int ret;

	if (!size || (iova | size) & (align - 1) || iova >= VU_IOVA_LIMIT ||
	    size > VU_IOVA_LIMIT - iova || !(prot & (VFIO_DMA_READ | VFIO_DMA_WRITE)) ||
	    (prot & ~(VFIO_DMA_READ | VFIO_DMA_WRITE))) {
		log_err(dev->ctx, "%s: DMA_MAP iova 0x%" PRIx64 " size 0x%" PRIx64 " prot %u: not aligned to 0x%" PRIx64 ", outside [0, 2^48) or bad prot",
			dev->name, iova, size, prot, align);
		return -EINVAL;
	}
	if (fd < 0 && !vaddr) {
		log_err(dev->ctx, "%s: DMA_MAP without fd needs a vaddr to serve in-band DMA", dev->name);
		return -EINVAL;
	}

	/* Reserve the window in our table first: it must be servable as soon
	 * as the server may issue DMA_READ/WRITE for it. */
	pthread_mutex_lock(&vu->lock);
	if (vu->dead) {
		pthread_mutex_unlock(&vu->lock);
		return -ENODEV;
	}
	for (i = 0; i < vu->nr_dma; i++) {
		d = &vu->dma[i];
		if (iova < d->iova + d->size && d->iova < iova + size) {
			pthread_mutex_unlock(&vu->lock);
			log_err(dev->ctx, "%s: DMA_MAP iova 0x%" PRIx64 "+0x%" PRIx64 " overlaps a mapped window", dev->name, iova, size);
			return -EEXIST;
		}
	}
	if (vu->nr_dma >= vu->max_dma_maps) {
		pthread_mutex_unlock(&vu->lock);
		log_err(dev->ctx, "%s: DMA_MAP refused: the server allows %u windows (max_dma_maps); merge mappings",
			dev->name, vu->max_dma_maps);
		return -ENOSPC;
	}
	if (vu->nr_dma == vu->cap_dma) {
		uint32_t ncap = vu->cap_dma ? vu->cap_dma * 2 : 16;
		struct vu_dma *nd = realloc(vu->dma, ncap * sizeof(*nd));

		if (!nd) {
			pthread_mutex_unlock(&vu->lock);
			return -ENOMEM;
		}
		vu->dma = nd;
		vu->cap_dma = ncap;
	}
	vu->dma[vu->nr_dma++] = (struct vu_dma){ .iova = iova, .size = size, .vaddr = vaddr,
						 .prot = prot, .has_fd = fd >= 0 };
	pthread_mutex_unlock(&vu->lock);

	ret = vu_call(vu, VFU_CMD_DMA_MAP, &dm, sizeof(dm), fd >= 0 ? &fd : NULL, fd >= 0 ? 1 : 0, 0,
		      NULL);
	if (ret) {
		pthread_mutex_lock(&vu->lock);
		for (i = 0; i < vu->nr_dma; i++) {
			if (vu->dma[i].iova == iova) {
				vu->dma[i] = vu->dma[--vu->nr_dma];
				break;
			}
		}
		pthread_mutex_unlock(&vu->lock);
		if (ret != -ENODEV)
			log_err(dev->ctx, "%s: DMA_MAP iova 0x%" PRIx64 "+0x%" PRIx64 " failed: %s",
				dev->name, iova, size, strerror(-ret));
	}
	return ret;
}

/* Unmap one window exactly as it was mapped; drop it from the table in any
 * case (after an error or timeout the server state is unknown, and the
 * caller is about to reuse the memory: it must never be served again). */
static int vu_dma_unmap_one(struct vu_dev *vu, uint64_t iova, uint64_t size, uint64_t *unmapped)
{
	struct vfu_dma_unmap du = { .argsz = sizeof(du), .addr = iova, .size = size };
	struct vu_log l = vu_log_of(vu);
	struct vu_reply r;
	uint64_t got;
	uint32_t i;
	int ret;

	ret = vu_call(vu, VFU_CMD_DMA_UNMAP, &du, sizeof(du), NULL, 0, 0, &r);
	if (ret == 0) {
		ret = vu_dma_unmap_check(&l, iova, size, r.data, r.len, &got);
		if (ret == 0)
			*unmapped += got;
		vu_reply_release(&r);
	}
	pthread_mutex_lock(&vu->lock);
	for (i = 0; i < vu->nr_dma; i++) {
		if (vu->dma[i].iova == iova) {
			vu->dma[i] = vu->dma[--vu->nr_dma];
			break;
		}
	}
	pthread_mutex_unlock(&vu->lock);
	return ret;
}

static int vu_dma_unmap(struct vfio_dev *dev, uint64_t iova, uint64_t size, uint64_t *unmapped)
{
	struct vu_dev *vu = to_vu(dev);
	uint64_t done = 0;
	int ret = 0;

	if (!unmapped || !size || iova + size < iova)
		return -EINVAL;
	*unmapped = 0;
	/* Like type1: unmap every window inside [iova, iova+size); a window
	 * straddling an end cannot be split (vfio-user unmaps whole windows). */
	for (;;) {
		uint64_t wi = 0, ws = 0;
		bool found = false;
		uint32_t i;

		pthread_mutex_lock(&vu->lock);
		if (vu->dead) {
			pthread_mutex_unlock(&vu->lock);
			ret = -ENODEV;
			break;
		}
		for (i = 0; i < vu->nr_dma; i++) {
			struct vu_dma *d = &vu->dma[i];

			if (d->iova < iova + size && iova < d->iova + d->size) {
				if (d->iova < iova || d->iova + d->size > iova + size) {
					pthread_mutex_unlock(&vu->lock);
					log_err(dev->ctx, "%s: DMA_UNMAP 0x%" PRIx64 "+0x%" PRIx64 " would split the window 0x%" PRIx64 "+0x%" PRIx64,
						dev->name, iova, size, d->iova, d->size);
					*unmapped = done;
					return -EINVAL;
				}
				wi = d->iova;
				ws = d->size;
				found = true;
				break;
			}
		}
		pthread_mutex_unlock(&vu->lock);
		if (!found)
			break;
		ret = vu_dma_unmap_one(vu, wi, ws, &done);
		if (ret)
			break;
	}
	*unmapped = done;
	return ret;
}

static int vu_reset(struct vfio_dev *dev)
{
	struct vu_dev *vu = to_vu(dev);

	if (!(vu->flags & VFU_DEV_F_RESET))
		return -ENOTSUP;
	return vu_call(vu, VFU_CMD_DEVICE_RESET, NULL, 0, NULL, 0, 0, NULL);
}

static const struct vfio_transport_ops vu_ops = {
	.name = "vfio-user",
	.close = vu_close,
	.region_info = vu_region_info,
	.region_read = vu_region_read,
	.region_write = vu_region_write,
	.region_mmap = vu_region_mmap,
	.region_munmap = vu_region_munmap,
	.region_fd = vu_region_fd,
	.irq_info = vu_irq_info,
	.set_irqs = vu_set_irqs,
	.iommu_info = vu_iommu_info,
	.dma_map = vu_dma_map,
	.dma_unmap = vu_dma_unmap,
	.reset = vu_reset,
	.low_power_enter = NULL, /* vfio-user has none: PCI PM through config space */
	.low_power_exit = NULL,
};

/* ---- lifetime ----------------------------------------------------------- */

static void vu_close(struct vfio_dev *dev)
{
	struct vu_dev *vu = to_vu(dev);
	uint64_t one = 1;
	ssize_t wr;

	if (!dev)
		return;
	if (vu->reader_started) {
		/* Wake the reader, then make sure it never waits on a live peer. */
		pthread_mutex_lock(&vu->lock);
		vu->stopping = true;
		pthread_mutex_unlock(&vu->lock);
		wr = write(vu->wake_fd, &one, sizeof(one));
		(void)wr;
		shutdown(vu->sock, SHUT_RDWR);
		if (vu->twin >= 0)
			shutdown(vu->twin, SHUT_RDWR);
		pthread_join(vu->reader, NULL);
	}
	vu_mark_dead(vu, -ENODEV, NULL);
	vfio_mmap_release_all(&vu->mmaps);
	for (uint32_t i = 0; i < VU_MAX_REGIONS; i++)
		if (vu->regions[i].fd >= 0)
			close(vu->regions[i].fd);
	if (vu->sock >= 0)
		close(vu->sock);
	if (vu->twin >= 0)
		close(vu->twin);
	if (vu->wake_fd >= 0)
		close(vu->wake_fd);
	free(vu->dma);
	pthread_cond_destroy(&vu->cond);
	pthread_mutex_destroy(&vu->lock);
	pthread_mutex_destroy(&vu->send_lock);
	pthread_mutex_destroy(&vu->twin_send_lock);
	free(vu);
}

static int vu_timeout_from(const struct vfio_user_opts *opts)
{
	const char *env;

	if (opts && opts->size >= offsetof(struct vfio_user_opts, timeout_ms) + sizeof(int) &&
	    opts->timeout_ms > 0)
		return opts->timeout_ms;
	env = getenv("UGPU_VFIO_USER_TIMEOUT_MS");
	if (env && atoi(env) > 0)
		return atoi(env);
	return VFIO_USER_DEFAULT_TIMEOUT_MS;
}

/* Offer twin-socket mode unless the options or UGPU_VFIO_USER_TWIN_SOCKET=0
 * say no. */
static bool vu_twin_from(const struct vfio_user_opts *opts)
{
	const char *env;

	if (opts && opts->size >= offsetof(struct vfio_user_opts, flags) + sizeof(uint32_t) &&
	    (opts->flags & VFIO_USER_NO_TWIN_SOCKET))
		return false;
	env = getenv("UGPU_VFIO_USER_TWIN_SOCKET");
	return !(env && !strcmp(env, "0"));
}

int vfio_user_open_fd(struct ugpu_context *ctx, int fd, const char *name,
		      const struct vfio_user_opts *opts, struct vfio_dev **out)
{
	pthread_condattr_t ca;
	struct vu_dev *vu;
	int ret, fl;

	if (fd < 0 || !out) {
		if (fd >= 0)
			close(fd);
		return -EINVAL;
	}
	vu = calloc(1, sizeof(*vu));
	if (!vu) {
		close(fd);
		return -ENOMEM;
	}
	vu->dev.ops = &vu_ops;
	vu->dev.ctx = ctx;
	snprintf(vu->dev.name, sizeof(vu->dev.name), "vfio-user:%s", name ? name : "?");
	vu->sock = fd;
	vu->twin = -1;
	vu->wake_fd = -1;
	vu->offer_twin = vu_twin_from(opts);
	vu->timeout_ms = vu_timeout_from(opts);
	vu->max_msg_fds = VFU_DEFAULT_MAX_MSG_FDS;
	vu->max_xfer = VFU_DEFAULT_MAX_DATA_XFER;
	vu->max_dma_maps = VFU_DEFAULT_MAX_DMA_MAPS;
	vu->pgsizes = VFU_DEFAULT_PGSIZES;
	for (int i = 0; i < VU_MAX_REGIONS; i++)
		vu->regions[i].fd = -1;
	pthread_mutex_init(&vu->lock, NULL);
	pthread_mutex_init(&vu->send_lock, NULL);
	pthread_mutex_init(&vu->twin_send_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&vu->cond, &ca);
	pthread_condattr_destroy(&ca);

	vu->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vu->wake_fd < 0) {
		ret = -errno;
		goto out_close;
	}
	/* Non-blocking: every read and write below waits in poll() with a bound. */
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		ret = -errno;
		goto out_close;
	}
	ret = pthread_create(&vu->reader, NULL, vu_reader, vu);
	if (ret) {
		ret = -ret;
		goto out_close;
	}
	vu->reader_started = true;

	ret = vu_negotiate(vu);
	if (ret)
		goto out_close;
	ret = vu_get_device_info(vu);
	if (ret)
		goto out_close;
	for (uint32_t i = 0; i < vu->dev.num_regions; i++) {
		ret = vu_get_region_info(vu, i);
		if (ret)
			goto out_close;
	}
	for (uint32_t i = 0; i < vu->dev.num_irqs; i++) {
		ret = vu_get_irq_info(vu, i);
		if (ret)
			goto out_close;
	}
	*out = &vu->dev;
	return 0;

out_close:
	log_err(ctx, "%s: open failed: %s", vu->dev.name, strerror(-ret));
	vu_close(&vu->dev);
	return ret;
}

int vfio_user_open_opts(struct ugpu_context *ctx, const char *socket_path,
			const struct vfio_user_opts *opts, struct vfio_dev **out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int64_t deadline;
	int fd, ret;

	if (!socket_path || !out)
		return -EINVAL;
	if (strlen(socket_path) >= sizeof(sa.sun_path)) {
		log_err(ctx, "vfio-user: socket path '%s' is longer than %zu bytes", socket_path,
			sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);
	{
		struct stat stb;

		/* connect() says "connection refused" for a file that is not a
		 * socket: say what is wrong instead. */
		if (stat(socket_path, &stb) == 0 && !S_ISSOCK(stb.st_mode)) {
			log_err(ctx, "vfio-user: %s is not a socket (a vfio-user server listens on a UNIX socket)",
				socket_path);
			return -ENOTSOCK;
		}
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* A non-blocking AF_UNIX connect fails with EAGAIN while the server's
	 * backlog is full: retry until the bound. */
	deadline = (int64_t)now_ms() + vu_timeout_from(opts);
	for (;;) {
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		ret = -errno;
		if (ret == -EINTR)
			continue;
		if (ret == -EAGAIN && (int64_t)now_ms() < deadline) {
			usleep(1000);
			continue;
		}
		if (ret == -EAGAIN)
			ret = -ETIMEDOUT;
		log_err(ctx, "vfio-user: cannot connect to %s: %s", socket_path, strerror(-ret));
		close(fd);
		return ret;
	}
	return vfio_user_open_fd(ctx, fd, socket_path, opts, out);
}

int vfio_user_open(struct ugpu_context *ctx, const char *socket_path, struct vfio_dev **out)
{
	return vfio_user_open_opts(ctx, socket_path, NULL, out);
}

bool vfio_user_is_dead(struct vfio_dev *dev)
{
	return vu_is_dead(to_vu(dev));
}

void vfio_user_set_timeout(struct vfio_dev *dev, int timeout_ms)
{
	if (dev && timeout_ms > 0)
		__atomic_store_n(&to_vu(dev)->timeout_ms, timeout_ms, __ATOMIC_RELAXED);
}
