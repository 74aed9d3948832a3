/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim: the vfio-user server side (qemu docs/interop/vfio-user.rst 0.1).
 *
 * One server thread per device owns the listening socket and reads the client
 * socket. It runs client commands in order and replies. Engines send their
 * own DMA_READ/DMA_WRITE requests on the same socket (under send_lock); the
 * server thread routes the replies back by msg_id (struct sim_pending). When a
 * command must wait for the engines (DMA_UNMAP of a busy range, reset, D3
 * entry) the server thread keeps routing replies in srv_wait() and parks any
 * command that arrives meanwhile on a backlog, so an engine blocked on an
 * in-band transfer can always finish.
 *
 * Every request is validated (sizes, argsz, indexes, fd counts); a bad one
 * gets an error reply with an errno and a line on stderr. One client at a
 * time: a second connection is accepted and closed at once. A client that
 * disconnects loses its DMA windows and irq eventfds.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <linux/magic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <unistd.h>

#include "sim_internal.h"
#include "src/base/sock.h"
#include "src/vfio/vfio_user_caps.h"

#define srv_log(dev, fmt, ...) \
	fprintf(stderr, "ugpu-sim[%u]: " fmt "\n", (dev)->id, ##__VA_ARGS__)

/* ---- socket I/O (framing: src/base/sock.c) ---------------------------------- */

void srv_msg_free(struct sim_msg *m)
{
	if (!m)
		return;
	for (int i = 0; i < m->nfds; i++)
		if (m->fds[i] >= 0)
			close(m->fds[i]);
	free(m->body);
	free(m);
}

size_t srv_msg_frame(struct sim_msg *m)
{
	m->len = 0;
	if (m->hdr.size < sizeof(m->hdr)) {
		m->bad = EINVAL;
		return 0;
	}
	if (m->hdr.size > VFU_MAX_MSG) {
		m->bad = E2BIG;
		return m->hdr.size - sizeof(m->hdr);
	}
	m->len = m->hdr.size - sizeof(m->hdr);
	return m->len;
}

/* How long the body after @m's header is (sock_body_len_fn); a header that
 * cannot be answered normally marks @m bad (srv_msg_frame). */
static int64_t recv_body_len(const void *hdr, void *arg)
{
	(void)hdr; /* it is the header of @arg */
	return (int64_t)srv_msg_frame(arg);
}

/* Read one message. Returns 0 with *out, or -errno (connection unusable). */
static int recv_msg(int fd, struct sim_msg **out)
{
	struct sock_wait w = { .deadline_ns = sim_now_ns() + SIM_IO_TIMEOUT_MS * 1000000ull,
			       .wake_fd = -1 };
	struct sock_msg in = { .in.max = VFU_MAX_FDS };
	struct sim_msg *m;
	int ret;

	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	/* A body over VFU_MAX_MSG is read and dropped to stay in step, and
	 * answered E2BIG (srv_msg_frame set m->bad). */
	ret = sock_recv_msg(fd, &m->hdr, sizeof(m->hdr), recv_body_len, m,
			    VFU_MAX_MSG - sizeof(m->hdr), &w, &in);
	if (ret) {
		free(m);
		return ret;
	}
	if (in.in.ctrunc && !m->bad)
		m->bad = EINVAL; /* more fds than max_msg_fds */
	m->body = in.body;
	memcpy(m->fds, in.in.fds, sizeof(int) * (size_t)in.in.n);
	m->nfds = in.in.n;
	*out = m;
	return 0;
}

/* Send a message (fds on its first byte). send_lock held. */
static int send_locked(int fd, struct iovec *iov, int iovcnt, const int *fds, int nfds)
{
	return sock_send(fd, iov, iovcnt, fds, nfds,
			 sim_now_ns() + SIM_IO_TIMEOUT_MS * 1000000ull, NULL);
}

void srv_shutdown_client(struct sim_dev *dev)
{
	pthread_mutex_lock(&dev->send_lock);
	if (dev->client_fd >= 0)
		shutdown(dev->client_fd, SHUT_RDWR);
	dev->client_broken = true;
	pthread_mutex_unlock(&dev->send_lock);
	pthread_mutex_lock(&dev->twin_lock);
	if (dev->twin_fd >= 0)
		shutdown(dev->twin_fd, SHUT_RDWR);
	pthread_mutex_unlock(&dev->twin_lock);
}

/*
 * Send one message. Replies go on the main socket; our own requests
 * (@request: in-band DMA) go on the twin socket when there is one. A send that
 * fails, or that the client does not let through within SIM_IO_TIMEOUT_MS,
 * leaves that stream cut mid-message: the client is dropped (its sockets shut
 * down; the server thread sees EOF and disconnects it) rather than sent the
 * rest of a message it would misparse.
 */
static int srv_send(struct sim_dev *dev, bool request, struct vfu_hdr *hdr, const void *b1,
		    size_t l1, const void *b2, size_t l2, const int *fds, int nfds)
{
	struct iovec iov[3];
	bool on_twin = false, first_failure = false;
	int cnt = 0, ret = -ENOTCONN;

	hdr->size = (uint32_t)(sizeof(*hdr) + l1 + l2);
	iov[cnt].iov_base = hdr;
	iov[cnt++].iov_len = sizeof(*hdr);
	if (l1) {
		iov[cnt].iov_base = (void *)b1;
		iov[cnt++].iov_len = l1;
	}
	if (l2) {
		iov[cnt].iov_base = (void *)b2;
		iov[cnt++].iov_len = l2;
	}
	if (dev->tx_hook)
		return dev->tx_hook(dev, request, iov, cnt, fds, nfds);
	if (request) {
		pthread_mutex_lock(&dev->twin_lock);
		if (dev->twin_fd >= 0) {
			on_twin = true;
			ret = send_locked(dev->twin_fd, iov, cnt, fds, nfds);
		}
		pthread_mutex_unlock(&dev->twin_lock);
	}
	if (!on_twin) {
		pthread_mutex_lock(&dev->send_lock);
		if (dev->client_fd >= 0)
			ret = send_locked(dev->client_fd, iov, cnt, fds, nfds);
		pthread_mutex_unlock(&dev->send_lock);
	}
	if (ret && ret != -ENOTCONN) {
		pthread_mutex_lock(&dev->send_lock);
		first_failure = !dev->client_broken;
		pthread_mutex_unlock(&dev->send_lock);
	}
	if (first_failure) {
		srv_log(dev, "sending a message of command %u on the %s socket failed (%s): dropping the client",
			hdr->cmd, on_twin ? "twin" : "main", strerror(-ret));
		srv_shutdown_client(dev);
	}
	return ret;
}

static void reply(struct sim_dev *dev, const struct sim_msg *m, const void *b1, size_t l1,
		  const void *b2, size_t l2, const int *fds, int nfds)
{
	struct vfu_hdr h = { .msg_id = m->hdr.msg_id, .cmd = m->hdr.cmd, .flags = VFU_F_TYPE_REPLY };

	if (m->hdr.flags & VFU_F_NO_REPLY)
		return;
	srv_send(dev, false, &h, b1, l1, b2, l2, fds, nfds);
}

static void reply_err(struct sim_dev *dev, const struct sim_msg *m, int err)
{
	struct vfu_hdr h = { .msg_id = m->hdr.msg_id,
			     .cmd = m->hdr.cmd,
			     .flags = VFU_F_TYPE_REPLY | VFU_F_ERROR,
			     .error = (uint32_t)err };

	if (m->hdr.flags & VFU_F_NO_REPLY)
		return;
	srv_send(dev, false, &h, NULL, 0, NULL, 0, NULL, 0);
}

/* ---- in-band DMA (engine threads) ------------------------------------------ */

static void pending_unlink(struct sim_dev *dev, struct sim_pending *p)
{
	for (struct sim_pending **pp = &dev->pending; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	p->queued = false;
}

static void pending_fail_all(struct sim_dev *dev, int err)
{
	while (dev->pending) {
		struct sim_pending *p = dev->pending;

		dev->pending = p->next;
		p->queued = false;
		p->done = true;
		p->err = err;
	}
	pthread_cond_broadcast(&dev->inband_cond);
}

static int inband_one(struct sim_dev *dev, uint64_t iova, uint8_t *buf, size_t n, bool write)
{
	struct sim_pending p = { .addr = iova, .buf = buf, .len = n };
	struct vfu_dma_access acc = { .addr = iova, .count = n };
	struct vfu_hdr h = { .flags = VFU_F_TYPE_COMMAND };
	struct timespec ts;
	int ret;

	pthread_mutex_lock(&dev->lock);
	if (!dev->connected || dev->stop) {
		pthread_mutex_unlock(&dev->lock);
		return -ENODEV;
	}
	p.msg_id = dev->next_msg_id++;
	p.cmd = write ? VFU_CMD_DMA_WRITE : VFU_CMD_DMA_READ;
	p.queued = true;
	p.next = dev->pending;
	dev->pending = &p;
	dev->cnt_inband++;
	pthread_mutex_unlock(&dev->lock);

	h.msg_id = p.msg_id;
	h.cmd = p.cmd;
	ret = srv_send(dev, true, &h, &acc, sizeof(acc), write ? buf : NULL, write ? n : 0, NULL, 0);

	pthread_mutex_lock(&dev->lock);
	if (ret && p.queued) {
		pending_unlink(dev, &p);
		pthread_mutex_unlock(&dev->lock);
		return ret;
	}
	sim_deadline(&ts, SIM_INBAND_TIMEOUT_MS);
	while (!p.done) {
		if (p.queued && pthread_cond_timedwait(&dev->inband_cond, &dev->lock, &ts) == ETIMEDOUT &&
		    p.queued) {
			pending_unlink(dev, &p);
			p.done = true;
			p.err = ETIMEDOUT;
			srv_log(dev, "client did not answer DMA_%s of 0x%" PRIx64 " within %d ms",
				write ? "WRITE" : "READ", iova, SIM_INBAND_TIMEOUT_MS);
		} else if (!p.queued && !p.done) {
			/* Claimed by the server thread: it is copying the data
			 * now and will mark it done shortly. */
			sim_deadline(&ts, 1000);
			pthread_cond_timedwait(&dev->inband_cond, &dev->lock, &ts);
		}
	}
	pthread_mutex_unlock(&dev->lock);
	return -p.err;
}

int srv_dma_inband(struct sim_dev *dev, uint64_t iova, void *buf, uint64_t len, bool write)
{
	uint8_t *b = buf;
	size_t max;

	pthread_mutex_lock(&dev->lock);
	max = dev->peer_max_xfer ? dev->peer_max_xfer : VFU_MAX_DATA_XFER;
	pthread_mutex_unlock(&dev->lock);
	if (max > VFU_MAX_DATA_XFER)
		max = VFU_MAX_DATA_XFER;
	while (len) {
		size_t n = len < max ? (size_t)len : max;
		int ret = inband_one(dev, iova, b, n, write);

		if (ret)
			return ret;
		iova += n;
		b += n;
		len -= n;
	}
	return 0;
}

/* Server thread: a reply to one of our DMA_READ/WRITE requests. */
static void route_reply(struct sim_dev *dev, struct sim_msg *m)
{
	struct sim_pending *p;
	int err = 0;

	pthread_mutex_lock(&dev->lock);
	for (p = dev->pending; p; p = p->next)
		if (p->msg_id == m->hdr.msg_id && p->cmd == m->hdr.cmd)
			break;
	if (!p) {
		pthread_mutex_unlock(&dev->lock);
		srv_log(dev, "reply to unknown request (msg_id %u cmd %u) dropped", m->hdr.msg_id,
			m->hdr.cmd);
		return;
	}
	pending_unlink(dev, p); /* claimed: the engine waits for done */
	pthread_mutex_unlock(&dev->lock);

	if (m->hdr.flags & VFU_F_ERROR) {
		err = m->hdr.error ? (int)m->hdr.error : EIO;
	} else if (p->cmd == VFU_CMD_DMA_READ) {
		struct vfu_dma_access acc;

		if (m->len < sizeof(acc) + p->len) {
			err = EPROTO;
		} else {
			memcpy(&acc, m->body, sizeof(acc));
			if (acc.addr != p->addr || acc.count != p->len)
				err = EPROTO;
			else if (sim_guarded_memmove(dev, p->buf, m->body + sizeof(acc), p->len))
				err = EFAULT; /* p->buf is another window's memory, truncated */
		}
	} else if (m->len < 12) {
		/* DMA_WRITE reply: address + count (the spec's table says a 4-byte
		 * count; accept both). */
		err = EPROTO;
	}
	if (err == EPROTO)
		srv_log(dev, "malformed reply to DMA_%s (msg_id %u)",
			p->cmd == VFU_CMD_DMA_READ ? "READ" : "WRITE", m->hdr.msg_id);
	pthread_mutex_lock(&dev->lock);
	p->err = err;
	p->done = true;
	pthread_cond_broadcast(&dev->inband_cond);
	pthread_mutex_unlock(&dev->lock);
}

/* ---- waiting on the server thread ------------------------------------------ */

static void backlog_push(struct sim_dev *dev, struct sim_msg *m)
{
	m->next = NULL;
	if (dev->backlog_tail)
		dev->backlog_tail->next = m;
	else
		dev->backlog_head = m;
	dev->backlog_tail = m;
}

static struct sim_msg *backlog_pop(struct sim_dev *dev)
{
	struct sim_msg *m = dev->backlog_head;

	if (m) {
		dev->backlog_head = m->next;
		if (!dev->backlog_head)
			dev->backlog_tail = NULL;
	}
	return m;
}

/* A command on the twin socket, which carries only our requests and the
 * client's replies: the client broke the protocol. */
static void twin_command(struct sim_dev *dev, struct sim_msg *m)
{
	srv_log(dev, "command %u on the twin socket (it carries only the server's requests); dropped",
		m->hdr.cmd);
	srv_msg_free(m);
}

/* The connection broke: fail in-band requests so engines move on. */
static void mark_client_dead(struct sim_dev *dev)
{
	dev->client_dead = true;
	pthread_mutex_lock(&dev->lock);
	dev->connected = false;
	pending_fail_all(dev, ENODEV);
	pthread_mutex_unlock(&dev->lock);
}

int srv_wait(struct sim_dev *dev, bool (*pred)(struct sim_dev *dev), unsigned ms)
{
	uint64_t deadline = sim_now_ns() + (uint64_t)ms * 1000000ull;

	for (;;) {
		struct pollfd p[2];
		bool ok;

		pthread_mutex_lock(&dev->lock);
		ok = pred(dev);
		pthread_mutex_unlock(&dev->lock);
		if (ok)
			return 0;
		if (sim_now_ns() >= deadline) {
			srv_log(dev, "engines did not quiesce within %u ms", ms);
			return -ETIMEDOUT;
		}
		if (dev->client_fd < 0 || dev->client_dead) {
			usleep(1000);
			continue;
		}
		p[0] = (struct pollfd){ .fd = dev->client_fd, .events = POLLIN };
		p[1] = (struct pollfd){ .fd = dev->twin_fd, .events = POLLIN };
		if (poll(p, dev->twin_fd >= 0 ? 2 : 1, 1) > 0) {
			for (int i = 0; i < 2; i++) {
				struct sim_msg *m;

				if (!p[i].revents)
					continue;
				if (recv_msg(p[i].fd, &m)) {
					mark_client_dead(dev);
					break;
				}
				if ((m->hdr.flags & VFU_F_TYPE_MASK) == VFU_F_TYPE_REPLY) {
					route_reply(dev, m);
					srv_msg_free(m);
				} else if (i == 0) {
					backlog_push(dev, m); /* a command: served after the wait */
				} else {
					twin_command(dev, m);
				}
			}
		}
	}
}

/* ---- commands ----------------------------------------------------------------- */

/*
 * Twin-socket mode: a fresh socket pair; our end becomes dev->twin_fd (in-band
 * DMA requests go there from now on), the other goes to the client with the
 * VERSION reply. Once per session: a second VERSION that asks again is
 * refused (the client's twin socket would no longer be ours).
 */
static int twin_start(struct sim_dev *dev, int *peer_end)
{
	int sv[2];

	pthread_mutex_lock(&dev->twin_lock);
	if (dev->twin_fd >= 0) {
		pthread_mutex_unlock(&dev->twin_lock);
		srv_log(dev, "VERSION: twin-socket mode is already set up in this session");
		return -EINVAL;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		int err = -errno;

		pthread_mutex_unlock(&dev->twin_lock);
		srv_log(dev, "VERSION: cannot create the twin socket pair: %s", strerror(-err));
		return err;
	}
	dev->twin_fd = sv[0];
	pthread_mutex_unlock(&dev->twin_lock);
	*peer_end = sv[1];
	return 0;
}

static void cmd_version(struct sim_dev *dev, struct sim_msg *m)
{
	struct vfu_caps caps, ours;
	struct vfu_version v;
	const char *why;
	char mine[256];
	int n, peer_end = -1;

	if (m->len < sizeof(v)) {
		srv_log(dev, "VERSION: %zu-byte payload, need %zu", m->len, sizeof(v));
		reply_err(dev, m, EINVAL);
		return;
	}
	memcpy(&v, m->body, sizeof(v));
	if (v.major != VFU_VERSION_MAJOR) {
		/* The specification: a server that cannot support the proposed
		 * version closes the connection. */
		srv_log(dev, "VERSION: major %u not supported (we speak %u): closing the connection",
			v.major, VFU_VERSION_MAJOR);
		srv_shutdown_client(dev);
		return;
	}
	vfu_caps_init(&caps);
	if (m->len > sizeof(v)) {
		uint64_t xfer;

		if (m->body[m->len - 1] != '\0') {
			srv_log(dev, "VERSION: capabilities string not NUL-terminated");
			reply_err(dev, m, EINVAL);
			return;
		}
		n = vfu_caps_parse((const char *)m->body + sizeof(v), m->len - sizeof(v), &caps, &why);
		if (n) {
			srv_log(dev, "VERSION: capabilities are not JSON of the expected shape: %s",
				n == -ENOMEM ? "out of memory" : why);
			reply_err(dev, m, n == -ENOMEM ? ENOMEM : EINVAL);
			return;
		}
		xfer = caps.max_data_xfer_size;
		if (xfer < 8) {
			srv_log(dev, "VERSION: max_data_xfer_size %" PRIu64 " too small", xfer);
			reply_err(dev, m, EINVAL);
			return;
		}
		pthread_mutex_lock(&dev->lock);
		dev->peer_max_xfer = xfer > VFU_MAX_DATA_XFER ? VFU_MAX_DATA_XFER : (uint32_t)xfer;
		pthread_mutex_unlock(&dev->lock);
	}
	if (v.minor > VFU_VERSION_MINOR)
		v.minor = VFU_VERSION_MINOR;
	/* Our capabilities; twin_socket only when the client offered it (the
	 * reply's list must be a subset of the proposal), and then we take it. */
	ours = (struct vfu_caps){ .max_msg_fds = VFU_MAX_FDS,
				  .max_data_xfer_size = VFU_MAX_DATA_XFER,
				  .max_dma_maps = dev->max_dma_maps,
				  .pgsizes = SIM_PAGE,
				  .twin_supported = caps.twin_supported,
				  .twin_fd_index = caps.twin_supported ? 0 : -1 };
	n = vfu_caps_format(&ours, mine, sizeof(mine));
	if (n < 0) {
		srv_log(dev, "VERSION: cannot write our capabilities: %s", strerror(-n));
		reply_err(dev, m, -n);
		return;
	}
	if (caps.twin_supported && twin_start(dev, &peer_end)) {
		reply_err(dev, m, EINVAL);
		return;
	}
	dev->versioned = true;
	reply(dev, m, &v, sizeof(v), mine, (size_t)n + 1, peer_end >= 0 ? &peer_end : NULL,
	      peer_end >= 0 ? 1 : 0);
	if (peer_end >= 0)
		close(peer_end); /* the client has its copy (or the send failed and it is dropped) */
}

static void cmd_device_info(struct sim_dev *dev, struct sim_msg *m)
{
	struct vfu_device_info in, out = { .argsz = sizeof(out),
					   .flags = VFU_DEV_F_RESET | VFU_DEV_F_PCI,
					   .num_regions = SIM_NUM_REGIONS,
					   .num_irqs = SIM_NUM_IRQS };

	if (m->len < sizeof(in)) {
		srv_log(dev, "DEVICE_GET_INFO: %zu-byte payload, need %zu", m->len, sizeof(in));
		reply_err(dev, m, EINVAL);
		return;
	}
	memcpy(&in, m->body, sizeof(in));
	if (in.argsz < sizeof(out)) {
		srv_log(dev, "DEVICE_GET_INFO: argsz %u < %zu", in.argsz, sizeof(out));
		reply_err(dev, m, EINVAL);
		return;
	}
	reply(dev, m, &out, sizeof(out), NULL, 0, NULL, 0);
}

static uint64_t region_size(struct sim_dev *dev, uint32_t index)
{
	switch (index) {
	case 0:
		return SIM_BAR0_SIZE;
	case 2:
		return dev->vram_size;
	case 7:
		return SIM_CFG_SIZE;
	}
	return 0;
}

static void cmd_region_info(struct sim_dev *dev, struct sim_msg *m)
{
	struct vfu_region_info in, out;

	if (m->len < sizeof(in)) {
		srv_log(dev, "GET_REGION_INFO: %zu-byte payload, need %zu", m->len, sizeof(in));
		reply_err(dev, m, EINVAL);
		return;
	}
	memcpy(&in, m->body, sizeof(in));
	if (in.argsz < sizeof(out) || in.index >= SIM_NUM_REGIONS) {
		srv_log(dev, "GET_REGION_INFO: bad argsz %u or index %u", in.argsz, in.index);
		reply_err(dev, m, EINVAL);
		return;
	}
	memset(&out, 0, sizeof(out));
	out.argsz = sizeof(out);
	out.index = in.index;
	out.size = region_size(dev, in.index);
	if (out.size)
		out.flags = VFU_REGION_F_READ | VFU_REGION_F_WRITE;
	if (in.index == 2) {
		out.flags |= VFU_REGION_F_MMAP;
		reply(dev, m, &out, sizeof(out), NULL, 0, &dev->vram_fd, 1);
		return;
	}
	reply(dev, m, &out, sizeof(out), NULL, 0, NULL, 0);
}

static const uint32_t irq_counts[SIM_NUM_IRQS] = { 1, 0, SIM_MSIX_VECTORS, 1, 1 };

static void cmd_irq_info(struct sim_dev *dev, struct sim_msg *m)
{
	struct vfu_irq_info in, out;

	if (m->len < sizeof(in)) {
		srv_log(dev, "GET_IRQ_INFO: %zu-byte payload, need %zu", m->len, sizeof(in));
		reply_err(dev, m, EINVAL);
		return;
	}
	memcpy(&in, m->body, sizeof(in));
	if (in.argsz < sizeof(out) || in.index >= SIM_NUM_IRQS) {
		srv_log(dev, "GET_IRQ_INFO: bad argsz %u or index %u", in.argsz, in.index);
		reply_err(dev, m, EINVAL);
		return;
	}
	out.argsz = sizeof(out);
	out.index = in.index;
	out.count = irq_counts[in.index];
	out.flags = out.count ? (1u << 0) | (1u << 1) : 0; /* EVENTFD | MASKABLE */
	reply(dev, m, &out, sizeof(out), NULL, 0, NULL, 0);
}

static void irq_set_fd(struct sim_dev *dev, uint32_t index, uint32_t vec, int fd)
{
	/* Lock held: engines signal under the lock, so the old fd is not in
	 * use while it is closed. */
	if (dev->irq_fd[index][vec] >= 0)
		close(dev->irq_fd[index][vec]);
	dev->irq_fd[index][vec] = fd;
	if (fd < 0) {
		dev->irq_masked[index][vec] = false;
		dev->irq_pending[index][vec] = false;
	}
}

static void cmd_set_irqs(struct sim_dev *dev, struct sim_msg *m)
{
	struct vfu_irq_set s;
	uint32_t dtype, atype, max;
	const uint8_t *data;
	size_t dlen;

	if (m->len < sizeof(s)) {
		srv_log(dev, "SET_IRQS: %zu-byte payload, need %zu", m->len, sizeof(s));
		goto out_inval;
	}
	memcpy(&s, m->body, sizeof(s));
	dtype = s.flags & (VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_DATA_BOOL | VFU_IRQ_SET_DATA_EVENTFD);
	atype = s.flags & (VFU_IRQ_SET_ACTION_MASK | VFU_IRQ_SET_ACTION_UNMASK |
			   VFU_IRQ_SET_ACTION_TRIGGER);
	if (s.argsz < sizeof(s) || s.argsz > m->len || s.index >= SIM_NUM_IRQS ||
	    __builtin_popcount(dtype) != 1 || __builtin_popcount(atype) != 1 ||
	    (s.flags & ~(dtype | atype))) {
		srv_log(dev, "SET_IRQS: bad argsz %u, index %u or flags 0x%x", s.argsz, s.index,
			s.flags);
		goto out_inval;
	}
	max = irq_counts[s.index];
	data = m->body + sizeof(s);
	dlen = s.argsz - sizeof(s);
	if (dtype == VFU_IRQ_SET_DATA_NONE && atype == VFU_IRQ_SET_ACTION_TRIGGER && s.count == 0) {
		if (s.start || m->nfds || dlen) {
			srv_log(dev, "SET_IRQS: disable with start %u, %d fds, %zu data bytes", s.start,
				m->nfds, dlen);
			goto out_inval;
		}
		pthread_mutex_lock(&dev->lock);
		for (uint32_t v = 0; v < SIM_MSIX_VECTORS; v++)
			irq_set_fd(dev, s.index, v, -1);
		pthread_mutex_unlock(&dev->lock);
		reply(dev, m, NULL, 0, NULL, 0, NULL, 0);
		return;
	}
	if (!s.count || s.start >= max || s.count > max - s.start) {
		srv_log(dev, "SET_IRQS: vectors [%u, +%u) outside index %u's %u", s.start, s.count,
			s.index, max);
		goto out_inval;
	}
	if (dtype == VFU_IRQ_SET_DATA_EVENTFD) {
		int32_t want[SIM_MSIX_VECTORS];
		int used = 0;

		if (atype != VFU_IRQ_SET_ACTION_TRIGGER) {
			srv_log(dev, "SET_IRQS: mask/unmask eventfds are not supported");
			reply_err(dev, m, ENOTSUP);
			return;
		}
		if (dlen == 4ull * s.count) {
			/* Optional int32 per vector (as the kernel ioctl): >= 0
			 * takes the next passed fd in order, -1 de-assigns. */
			memcpy(want, data, dlen);
			for (uint32_t i = 0; i < s.count; i++)
				if (want[i] >= 0)
					used++;
			if (used != m->nfds) {
				srv_log(dev, "SET_IRQS: %d fds for %d non-negative entries", m->nfds, used);
				goto out_inval;
			}
		} else if (dlen == 0 && (m->nfds == (int)s.count || m->nfds == 0)) {
			for (uint32_t i = 0; i < s.count; i++)
				want[i] = m->nfds ? 0 : -1;
		} else {
			srv_log(dev, "SET_IRQS: %d fds and %zu data bytes for %u vectors", m->nfds, dlen,
				s.count);
			goto out_inval;
		}
		for (int i = 0; i < m->nfds; i++)
			if (irq_fd_adopt(dev, m->fds[i]))
				goto out_inval;
		pthread_mutex_lock(&dev->lock);
		used = 0;
		for (uint32_t i = 0; i < s.count; i++) {
			int fd = -1;

			if (want[i] >= 0) {
				fd = m->fds[used];
				m->fds[used++] = -1; /* ours now */
			}
			irq_set_fd(dev, s.index, s.start + i, fd);
		}
		pthread_mutex_unlock(&dev->lock);
		reply(dev, m, NULL, 0, NULL, 0, NULL, 0);
		return;
	}
	if (m->nfds || (dtype == VFU_IRQ_SET_DATA_BOOL ? dlen != s.count : dlen != 0)) {
		srv_log(dev, "SET_IRQS: %d fds / %zu data bytes do not match the data type", m->nfds,
			dlen);
		goto out_inval;
	}
	pthread_mutex_lock(&dev->lock);
	for (uint32_t i = 0; i < s.count; i++) {
		uint32_t v = s.start + i;

		if (dtype == VFU_IRQ_SET_DATA_BOOL && !data[i])
			continue;
		if (atype == VFU_IRQ_SET_ACTION_TRIGGER) {
			sim_irq_raise(dev, s.index, v);
		} else if (atype == VFU_IRQ_SET_ACTION_MASK) {
			dev->irq_masked[s.index][v] = true;
		} else {
			dev->irq_masked[s.index][v] = false;
			if (dev->irq_pending[s.index][v]) {
				dev->irq_pending[s.index][v] = false;
				dev->cnt_irqs--; /* counted when first raised */
				sim_irq_raise(dev, s.index, v);
			}
		}
	}
	pthread_mutex_unlock(&dev->lock);
	reply(dev, m, NULL, 0, NULL, 0, NULL, 0);
	return;

out_inval:
	reply_err(dev, m, EINVAL);
}

static int vram_access(struct sim_dev *dev, uint64_t off, void *buf, size_t len, bool write)
{
	bool ok;

	if (off > dev->vram_size || len > dev->vram_size - off)
		return -EINVAL;
	pthread_mutex_lock(&dev->lock);
	ok = dev->power == SIM_POWER_D0 && pci_mem_enabled(dev);
	pthread_mutex_unlock(&dev->lock);
	if (!ok)
		return -EIO;
	if (!len)
		return 0; /* a zero-byte access is a no-op (and buf may be NULL) */
	if (write)
		memcpy(dev->vram + off, buf, len);
	else
		memcpy(buf, dev->vram + off, len);
	return 0;
}

static void cmd_region_rw(struct sim_dev *dev, struct sim_msg *m, bool write)
{
	struct vfu_region_access a;
	uint8_t *data = NULL;
	int ret;

	if (m->len < sizeof(a)) {
		srv_log(dev, "REGION_%s: %zu-byte payload, need %zu", write ? "WRITE" : "READ",
			m->len, sizeof(a));
		reply_err(dev, m, EINVAL);
		return;
	}
	memcpy(&a, m->body, sizeof(a));
	if (a.count > VFU_MAX_DATA_XFER || m->len != sizeof(a) + (write ? a.count : 0)) {
		srv_log(dev, "REGION_%s: count %u does not fit the %zu-byte payload (max %u)",
			write ? "WRITE" : "READ", a.count, m->len, VFU_MAX_DATA_XFER);
		reply_err(dev, m, EINVAL);
		return;
	}
	if (write) {
		data = m->body + sizeof(a);
	} else if (a.count) {
		data = malloc(a.count);
		if (!data) {
			reply_err(dev, m, ENOMEM);
			return;
		}
	}
	switch (a.region) {
	case 0:
		ret = write ? regs_write(dev, a.offset, data, a.count) :
			      regs_read(dev, a.offset, data, a.count);
		break;
	case 2:
		ret = vram_access(dev, a.offset, data, a.count, write);
		break;
	case 7:
		ret = write ? pci_cfg_write(dev, a.offset, data, a.count) :
			      pci_cfg_read(dev, a.offset, data, a.count);
		break;
	default:
		ret = -EINVAL;
	}
	if (ret) {
		if (ret == -EINVAL)
			srv_log(dev, "REGION_%s: bad access region %u offset 0x%" PRIx64 " count %u",
				write ? "WRITE" : "READ", a.region, a.offset, a.count);
		reply_err(dev, m, -ret);
	} else {
		reply(dev, m, &a, sizeof(a), write ? NULL : data, write ? 0 : a.count, NULL, 0);
	}
	if (!write)
		free(data);
}

/*
 * The fd of a DMA window must be memory that cannot stall an engine: a memfd,
 * tmpfs or hugetlbfs file (a file on a disk or FUSE file system could block a
 * page fault for as long as its server likes), and it must cover
 * [@off, @off + @size) now. A client can still truncate it later: the engines
 * reach it under the SIGBUS guard (sim_guard.c). Returns 0 or -EINVAL (logged).
 */
static int dma_fd_check(struct sim_dev *dev, int fd, uint64_t off, uint64_t size)
{
	struct statfs fs;
	struct stat st;

	if (fstat(fd, &st) < 0 || fstatfs(fd, &fs) < 0) {
		srv_log(dev, "DMA_MAP: cannot stat the fd: %s", strerror(errno));
		return -EINVAL;
	}
	if (!S_ISREG(st.st_mode) ||
	    (fs.f_type != TMPFS_MAGIC && fs.f_type != HUGETLBFS_MAGIC)) {
		srv_log(dev, "DMA_MAP: the fd is not a memfd, tmpfs or hugetlbfs file (mode 0%o, "
			"file system 0x%lx)", (unsigned)st.st_mode, (unsigned long)fs.f_type);
		return -EINVAL;
	}
	if (off > UINT64_MAX - size || (uint64_t)st.st_size < off + size) {
		srv_log(dev, "DMA_MAP: the fd holds %lld bytes; the window needs [0x%" PRIx64
			", 0x%" PRIx64 ")", (long long)st.st_size, off, off + size);
		return -EINVAL;
	}
	return 0;
}

static void cmd_dma_map(struct sim_dev *dev, struct sim_msg *m)
{
	struct vfu_dma_map r;
	struct sim_dma_map nm = { 0 };
	size_t pos;
	int err = EINVAL;

	if (m->len < sizeof(r)) {
		srv_log(dev, "DMA_MAP: %zu-byte payload, need %zu", m->len, sizeof(r));
		goto out_err;
	}
	memcpy(&r, m->body, sizeof(r));
	if (r.argsz < sizeof(r) || (r.flags & ~(VFU_DMA_F_READ | VFU_DMA_F_WRITE)) || !r.flags ||
	    m->nfds > 1) {
		srv_log(dev, "DMA_MAP: bad argsz %u, flags 0x%x or %d fds", r.argsz, r.flags, m->nfds);
		goto out_err;
	}
	if (!r.size || (r.addr | r.size) & (SIM_PAGE - 1) || r.addr + r.size < r.addr ||
	    r.addr + r.size > SIM_IOVA_LIMIT || (m->nfds && (r.offset & (SIM_PAGE - 1)))) {
		srv_log(dev, "DMA_MAP: bad window iova 0x%" PRIx64 " size 0x%" PRIx64
			" offset 0x%" PRIx64 " (4 KiB aligned, inside [0, 2^48))",
			r.addr, r.size, r.offset);
		goto out_err;
	}
	nm.iova = r.addr;
	nm.size = r.size;
	nm.prot = r.flags;
	if (m->nfds && dma_fd_check(dev, m->fds[0], r.offset, r.size))
		goto out_err;
	if (m->nfds) {
		int prot = PROT_READ | ((r.flags & VFU_DMA_F_WRITE) ? PROT_WRITE : 0);
		void *p = mmap(NULL, r.size, prot, MAP_SHARED, m->fds[0], (off_t)r.offset);

		if (p == MAP_FAILED) {
			err = errno;
			srv_log(dev, "DMA_MAP: mmap of the fd (size 0x%" PRIx64 " offset 0x%" PRIx64
				") failed: %s", r.size, r.offset, strerror(err));
			goto out_err;
		}
		nm.host = p;
	}
	pthread_mutex_lock(&dev->lock);
	if (dev->nmaps >= dev->max_dma_maps) {
		pthread_mutex_unlock(&dev->lock);
		srv_log(dev, "DMA_MAP: %zu windows, max_dma_maps reached", dev->nmaps);
		err = ENOSPC;
		goto out_unmap;
	}
	for (pos = 0; pos < dev->nmaps && dev->maps[pos].iova < nm.iova; pos++)
		;
	if ((pos < dev->nmaps && dev->maps[pos].iova < nm.iova + nm.size) ||
	    (pos > 0 && dev->maps[pos - 1].iova + dev->maps[pos - 1].size > nm.iova)) {
		pthread_mutex_unlock(&dev->lock);
		srv_log(dev, "DMA_MAP: iova 0x%" PRIx64 " size 0x%" PRIx64 " overlaps a window",
			r.addr, r.size);
		err = EEXIST;
		goto out_unmap;
	}
	if (dev->nmaps == dev->maps_cap) {
		size_t cap = dev->maps_cap ? dev->maps_cap * 2 : 16;
		struct sim_dma_map *n = realloc(dev->maps, cap * sizeof(*n));

		if (!n) {
			pthread_mutex_unlock(&dev->lock);
			err = ENOMEM;
			goto out_unmap;
		}
		dev->maps = n;
		dev->maps_cap = cap;
	}
	memmove(&dev->maps[pos + 1], &dev->maps[pos], (dev->nmaps - pos) * sizeof(nm));
	dev->maps[pos] = nm;
	dev->nmaps++;
	pthread_mutex_unlock(&dev->lock);
	reply(dev, m, NULL, 0, NULL, 0, NULL, 0);
	return;

out_unmap:
	if (nm.host)
		munmap(nm.host, nm.size);
out_err:
	reply_err(dev, m, err);
}

static bool unmap_range_quiet(struct sim_dev *dev)
{
	return !inflight_overlaps(dev, dev->wait_start, dev->wait_end);
}

static void cmd_dma_unmap(struct sim_dev *dev, struct sim_msg *m)
{
	struct vfu_dma_unmap r;
	uint64_t start, end, unmapped = 0;
	struct sim_dma_map *gone = NULL;
	size_t first, cnt = 0;

	if (m->len < sizeof(r)) {
		srv_log(dev, "DMA_UNMAP: %zu-byte payload, need %zu", m->len, sizeof(r));
		reply_err(dev, m, EINVAL);
		return;
	}
	memcpy(&r, m->body, sizeof(r));
	if (r.argsz < sizeof(r) || (r.flags & ~VFU_DMA_UNMAP_F_ALL) || m->nfds) {
		srv_log(dev, "DMA_UNMAP: bad argsz %u, flags 0x%x or %d fds", r.argsz, r.flags,
			m->nfds);
		reply_err(dev, m, EINVAL);
		return;
	}
	if (r.flags & VFU_DMA_UNMAP_F_ALL) {
		if (r.addr || r.size) {
			srv_log(dev, "DMA_UNMAP: ALL with a range");
			reply_err(dev, m, EINVAL);
			return;
		}
		start = 0;
		end = UINT64_MAX;
	} else {
		start = r.addr;
		end = r.addr + r.size;
		if (!r.size || end < start) {
			srv_log(dev, "DMA_UNMAP: bad range 0x%" PRIx64 " + 0x%" PRIx64, r.addr, r.size);
			reply_err(dev, m, EINVAL);
			return;
		}
	}
	dev->wait_start = start;
	dev->wait_end = end;
	for (;;) {
		pthread_mutex_lock(&dev->lock);
		/* Windows must lie wholly inside the range: no partial unmap. */
		for (first = 0; first < dev->nmaps && dev->maps[first].iova + dev->maps[first].size <= start;
		     first++)
			;
		if (first < dev->nmaps && dev->maps[first].iova < start) {
			pthread_mutex_unlock(&dev->lock);
			goto out_partial;
		}
		for (cnt = 0; first + cnt < dev->nmaps && dev->maps[first + cnt].iova < end; cnt++) {
			struct sim_dma_map *mm = &dev->maps[first + cnt];

			if (end - mm->iova < mm->size) {
				pthread_mutex_unlock(&dev->lock);
				goto out_partial;
			}
		}
		if (!cnt) {
			pthread_mutex_unlock(&dev->lock);
			if (r.flags & VFU_DMA_UNMAP_F_ALL)
				break;
			srv_log(dev, "DMA_UNMAP: no window at 0x%" PRIx64 " + 0x%" PRIx64, r.addr,
				r.size);
			reply_err(dev, m, ENOENT);
			return;
		}
		if (!inflight_overlaps(dev, start, end)) {
			gone = malloc(cnt * sizeof(*gone));
			if (!gone) {
				pthread_mutex_unlock(&dev->lock);
				reply_err(dev, m, ENOMEM);
				return;
			}
			memcpy(gone, &dev->maps[first], cnt * sizeof(*gone));
			memmove(&dev->maps[first], &dev->maps[first + cnt],
				(dev->nmaps - first - cnt) * sizeof(*gone));
			dev->nmaps -= cnt;
			pthread_mutex_unlock(&dev->lock);
			break;
		}
		pthread_mutex_unlock(&dev->lock);
		/* An engine is on this range: wait for it, serving its in-band
		 * requests meanwhile. */
		if (srv_wait(dev, unmap_range_quiet, 10000)) {
			reply_err(dev, m, EBUSY);
			return;
		}
	}
	for (size_t i = 0; gone && i < cnt; i++) {
		if (gone[i].host)
			munmap(gone[i].host, gone[i].size);
		unmapped += gone[i].size;
	}
	free(gone);
	if (!(r.flags & VFU_DMA_UNMAP_F_ALL))
		r.size = unmapped;
	reply(dev, m, &r, sizeof(r), NULL, 0, NULL, 0);
	return;

out_partial:
	srv_log(dev, "DMA_UNMAP: 0x%" PRIx64 " + 0x%" PRIx64 " splits a window", r.addr, r.size);
	reply_err(dev, m, EINVAL);
}

static bool all_quiet(struct sim_dev *dev)
{
	return !ce_any_busy(dev) && !exec_any_busy(dev);
}

int sim_device_reset(struct sim_dev *dev)
{
	pthread_mutex_lock(&dev->lock);
	if (dev->power == SIM_POWER_D3COLD) {
		pthread_mutex_unlock(&dev->lock);
		return -EIO; /* no main power: nothing to reset */
	}
	for (unsigned i = 0; i < SIM_NUM_CE; i++)
		dev->ce[i].enabled = false;
	exec_hold(dev);
	pthread_mutex_unlock(&dev->lock);
	srv_wait(dev, all_quiet, 10000);
	pthread_mutex_lock(&dev->lock);
	for (unsigned i = 0; i < SIM_NUM_CE; i++)
		ce_reset_locked(&dev->ce[i], true);
	exec_reset_locked(dev);
	pci_reset(dev);
	dev->scratch = 0;
	memset(dev->msix_table, 0, sizeof(dev->msix_table));
	pthread_mutex_unlock(&dev->lock);
	return 0;
}

void srv_handle_msg(struct sim_dev *dev, struct sim_msg *m)
{
	if ((m->hdr.flags & VFU_F_TYPE_MASK) == VFU_F_TYPE_REPLY) {
		route_reply(dev, m);
		return;
	}
	if ((m->hdr.flags & VFU_F_TYPE_MASK) != VFU_F_TYPE_COMMAND) {
		srv_log(dev, "message type %u unknown", m->hdr.flags & VFU_F_TYPE_MASK);
		reply_err(dev, m, EINVAL);
		return;
	}
	if (m->bad) {
		srv_log(dev, "malformed message (cmd %u, size %u, %d fds)", m->hdr.cmd, m->hdr.size,
			m->nfds);
		reply_err(dev, m, m->bad);
		return;
	}
	if (!dev->versioned && m->hdr.cmd != VFU_CMD_VERSION) {
		srv_log(dev, "command %u before VERSION", m->hdr.cmd);
		reply_err(dev, m, EINVAL);
		return;
	}
	/* Only these commands carry fds. */
	if (m->nfds && m->hdr.cmd != VFU_CMD_DMA_MAP && m->hdr.cmd != VFU_CMD_DEVICE_SET_IRQS) {
		srv_log(dev, "command %u with %d unexpected fds", m->hdr.cmd, m->nfds);
		reply_err(dev, m, EINVAL);
		return;
	}
	switch (m->hdr.cmd) {
	case VFU_CMD_VERSION:
		cmd_version(dev, m);
		break;
	case VFU_CMD_DMA_MAP:
		cmd_dma_map(dev, m);
		break;
	case VFU_CMD_DMA_UNMAP:
		cmd_dma_unmap(dev, m);
		break;
	case VFU_CMD_DEVICE_GET_INFO:
		cmd_device_info(dev, m);
		break;
	case VFU_CMD_DEVICE_GET_REGION_INFO:
		cmd_region_info(dev, m);
		break;
	case VFU_CMD_DEVICE_GET_IRQ_INFO:
		cmd_irq_info(dev, m);
		break;
	case VFU_CMD_DEVICE_SET_IRQS:
		cmd_set_irqs(dev, m);
		break;
	case VFU_CMD_REGION_READ:
		cmd_region_rw(dev, m, false);
		break;
	case VFU_CMD_REGION_WRITE:
		cmd_region_rw(dev, m, true);
		break;
	case VFU_CMD_DEVICE_RESET: {
		int ret = sim_device_reset(dev);

		if (ret)
			reply_err(dev, m, -ret);
		else
			reply(dev, m, NULL, 0, NULL, 0, NULL, 0);
		break;
	}
	default:
		srv_log(dev, "command %u not supported", m->hdr.cmd);
		reply_err(dev, m, ENOSYS);
	}
}

/* ---- connection lifetime ---------------------------------------------------- */

static void close_listener(struct sim_dev *dev)
{
	if (dev->listen_fd >= 0) {
		close(dev->listen_fd);
		dev->listen_fd = -1;
		unlink(dev->path);
	}
}

/* Close a client socket under the lock that guards its sends. */
static void sock_close(pthread_mutex_t *lock, int *fd)
{
	pthread_mutex_lock(lock);
	if (*fd >= 0) {
		shutdown(*fd, SHUT_RDWR);
		close(*fd);
		*fd = -1;
	}
	pthread_mutex_unlock(lock);
}

void srv_disconnect(struct sim_dev *dev)
{
	uint64_t deadline = sim_now_ns() + 10000ull * 1000000ull;
	struct sim_msg *m;
	bool gone = false;

	sock_close(&dev->send_lock, &dev->client_fd);
	sock_close(&dev->twin_lock, &dev->twin_fd);
	pthread_mutex_lock(&dev->lock);
	dev->connected = false;
	pending_fail_all(dev, ENODEV);
	pthread_mutex_unlock(&dev->lock);

	/* Drop the client's DMA windows once no engine is inside one (their
	 * in-band transfers fail at once now), and its interrupt eventfds. */
	for (;;) {
		pthread_mutex_lock(&dev->lock);
		if (!inflight_any(dev) || sim_now_ns() >= deadline) {
			if (inflight_any(dev))
				srv_log(dev, "engines still on DMA windows at disconnect; dropping them");
			for (size_t i = 0; i < dev->nmaps; i++)
				if (dev->maps[i].host)
					munmap(dev->maps[i].host, dev->maps[i].size);
			dev->nmaps = 0;
			for (unsigned i = 0; i < SIM_NUM_IRQS; i++)
				for (unsigned v = 0; v < SIM_MSIX_VECTORS; v++)
					irq_set_fd(dev, i, v, -1);
			if (dev->req_active && !dev->removed)
				dev->removed = true;
			gone = dev->removed;
			pthread_mutex_unlock(&dev->lock);
			break;
		}
		pthread_mutex_unlock(&dev->lock);
		usleep(1000);
	}
	while ((m = backlog_pop(dev)))
		srv_msg_free(m);
	dev->versioned = false;
	dev->client_dead = false;
	if (gone)
		close_listener(dev);
}

/*
 * A connection while a client is attached: one client at a time. Rather than
 * close it blind (which its client reads as "device gone"), answer its first
 * message with an EBUSY error reply, then close it. It is parked here until
 * that message comes, at most SIM_REFUSE_MS; with every slot taken, the oldest
 * is closed without an answer.
 */
static void refuse_park(struct sim_dev *dev, int fd)
{
	unsigned slot = 0;

	for (unsigned i = 0; i < SIM_MAX_REFUSED; i++) {
		if (dev->refused[i].fd < 0) {
			slot = i;
			break;
		}
		if (dev->refused[i].deadline_ns < dev->refused[slot].deadline_ns)
			slot = i;
	}
	if (dev->refused[slot].fd >= 0)
		close(dev->refused[slot].fd);
	dev->refused[slot].fd = fd;
	dev->refused[slot].deadline_ns = sim_now_ns() + SIM_REFUSE_MS * 1000000ull;
}

/* Slot @i's connection sent something (or hung up): answer EBUSY, close. */
static void refuse_answer(struct sim_dev *dev, unsigned i)
{
	struct vfu_hdr h;
	ssize_t n = recv(dev->refused[i].fd, &h, sizeof(h), MSG_DONTWAIT);

	if (n == (ssize_t)sizeof(h)) {
		struct vfu_hdr e = { .msg_id = h.msg_id, .cmd = h.cmd, .size = sizeof(e),
				     .flags = VFU_F_TYPE_REPLY | VFU_F_ERROR, .error = EBUSY };

		if (send(dev->refused[i].fd, &e, sizeof(e), MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
			/* its loss: it is closed either way */
		}
		srv_log(dev, "second client refused (EBUSY): one client at a time");
	} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		return; /* a header cut in pieces: wait for the rest, until the deadline */
	}
	close(dev->refused[i].fd);
	dev->refused[i].fd = -1;
}

/* Close parked connections past their deadline (all with @all). Returns the
 * poll timeout (ms) until the next deadline, at most @cap. */
static int refuse_expire(struct sim_dev *dev, bool all, int cap)
{
	uint64_t now = sim_now_ns();

	for (unsigned i = 0; i < SIM_MAX_REFUSED; i++) {
		if (dev->refused[i].fd < 0)
			continue;
		if (all || now >= dev->refused[i].deadline_ns) {
			close(dev->refused[i].fd);
			dev->refused[i].fd = -1;
		} else if ((dev->refused[i].deadline_ns - now) / 1000000ull + 1 < (uint64_t)cap) {
			cap = (int)((dev->refused[i].deadline_ns - now) / 1000000ull + 1);
		}
	}
	return cap;
}

static void client_attach(struct sim_dev *dev, int fd);

static void srv_accept(struct sim_dev *dev)
{
	int fd = accept4(dev->listen_fd, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return;
	if (dev->client_fd >= 0) {
		refuse_park(dev, fd);
		return;
	}
	client_attach(dev, fd);
}

/* @fd is our client from now on. */
static void client_attach(struct sim_dev *dev, int fd)
{
	pthread_mutex_lock(&dev->send_lock);
	dev->client_fd = fd;
	dev->client_broken = false;
	pthread_mutex_unlock(&dev->send_lock);
	pthread_mutex_lock(&dev->lock);
	dev->connected = true;
	dev->peer_max_xfer = VFU_MAX_DATA_XFER;
	pthread_mutex_unlock(&dev->lock);
	dev->versioned = false;
	dev->client_dead = false;
}

static void *srv_thread(void *arg)
{
	struct sim_dev *dev = arg;
	bool surprise_done = false;

	for (;;) {
		struct pollfd p[4 + SIM_MAX_REFUSED];
		int np = 0, timeout = 1000, ret;
		int ci = -1, ti = -1, li = -1, ri = -1;
		bool stop, surprise;
		struct sim_msg *m;

		pthread_mutex_lock(&dev->lock);
		stop = dev->stop;
		surprise = dev->surprise;
		if (dev->req_active && !dev->removed && !surprise) {
			uint64_t now = sim_now_ns();

			if (!dev->connected) {
				dev->removed = true; /* nobody to ask: gone at once */
			} else {
				if (now >= dev->req_next_ns) {
					sim_irq_raise(dev, SIM_IRQ_REQ, 0);
					dev->req_next_ns =
						now + (uint64_t)dev->sim->opts.req_interval_ms * 1000000ull;
				}
				timeout = (int)((dev->req_next_ns - now) / 1000000ull) + 1;
				if (timeout > 1000)
					timeout = 1000;
			}
		}
		if (dev->removed && !dev->connected && dev->listen_fd >= 0 && dev->client_fd < 0) {
			pthread_mutex_unlock(&dev->lock);
			close_listener(dev);
			pthread_mutex_lock(&dev->lock);
		}
		pthread_mutex_unlock(&dev->lock);
		if (stop)
			break;
		if (surprise && !surprise_done) {
			surprise_done = true;
			srv_disconnect(dev);
			close_listener(dev);
			continue;
		}
		if (dev->client_dead) {
			srv_disconnect(dev);
			continue;
		}
		m = backlog_pop(dev);
		if (m) {
			srv_handle_msg(dev, m);
			srv_msg_free(m);
			continue;
		}

		p[np].fd = dev->wake_fd;
		p[np++].events = POLLIN;
		if (dev->client_fd >= 0) {
			ci = np;
			p[np].fd = dev->client_fd;
			p[np++].events = POLLIN;
		}
		if (dev->twin_fd >= 0) {
			ti = np;
			p[np].fd = dev->twin_fd;
			p[np++].events = POLLIN;
		}
		if (dev->listen_fd >= 0) {
			li = np;
			p[np].fd = dev->listen_fd;
			p[np++].events = POLLIN;
		}
		timeout = refuse_expire(dev, false, timeout);
		ri = np;
		for (unsigned i = 0; i < SIM_MAX_REFUSED; i++) {
			p[np].fd = dev->refused[i].fd; /* -1: poll skips it */
			p[np++].events = POLLIN;
		}
		ret = poll(p, (nfds_t)np, timeout);
		if (ret <= 0)
			continue;
		if (p[0].revents & POLLIN) {
			uint64_t v;

			if (read(dev->wake_fd, &v, sizeof(v)) < 0) {
				/* EAGAIN: someone else drained it */
			}
		}
		for (unsigned i = 0; i < SIM_MAX_REFUSED; i++)
			if (dev->refused[i].fd >= 0 && p[ri + (int)i].revents)
				refuse_answer(dev, i);
		if (ci >= 0 && p[ci].revents) {
			if (recv_msg(dev->client_fd, &m)) {
				srv_disconnect(dev);
			} else {
				srv_handle_msg(dev, m);
				srv_msg_free(m);
			}
			continue; /* serve the client before a new connection */
		}
		if (ti >= 0 && p[ti].revents) {
			/* Only replies to our in-band requests come this way (they
			 * normally arrive while an engine waits, outside srv_wait). */
			if (recv_msg(dev->twin_fd, &m)) {
				srv_disconnect(dev);
			} else if ((m->hdr.flags & VFU_F_TYPE_MASK) == VFU_F_TYPE_REPLY) {
				route_reply(dev, m);
				srv_msg_free(m);
			} else {
				twin_command(dev, m);
			}
			continue;
		}
		if (li >= 0 && (p[li].revents & POLLIN))
			srv_accept(dev);
	}
	refuse_expire(dev, true, 0);
	if (dev->client_fd >= 0)
		srv_disconnect(dev);
	return NULL;
}

void srv_wake(struct sim_dev *dev)
{
	uint64_t one = 1;

	if (dev->wake_fd >= 0 && write(dev->wake_fd, &one, sizeof(one)) < 0) {
		/* counter saturated: already awake */
	}
}

static int listen_on(struct sim_dev *dev)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, ret;

	memcpy(sa.sun_path, dev->path, strlen(dev->path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		ret = -errno;
		if (ret == -EADDRINUSE) {
			/* A stale socket file from a dead server is reused; a live
			 * one is not. */
			int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
			bool live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0;

			if (probe >= 0)
				close(probe);
			if (!live && unlink(dev->path) == 0 &&
			    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
				goto out_listen;
		}
		fprintf(stderr, "ugpu-sim: cannot bind %s: %s\n", dev->path, strerror(-ret));
		close(fd);
		return ret;
	}
out_listen:
	if (listen(fd, 4) < 0) {
		ret = -errno;
		close(fd);
		unlink(dev->path);
		return ret;
	}
	dev->listen_fd = fd;
	return 0;
}

/* --fd=N: serve a connected stream socket; there is no listener. */
static int adopt_client(struct sim_dev *dev, int fd)
{
	int type = 0;
	socklen_t tl = sizeof(type);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_STREAM) {
		fprintf(stderr, "ugpu-sim: fd %d is not a connected stream socket\n", fd);
		return -ENOTSOCK;
	}
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	client_attach(dev, fd);
	return 0;
}

int srv_start(struct sim_dev *dev)
{
	int ret;

	dev->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (dev->wake_fd < 0)
		return -errno;
	if (dev->sim->opts.client_fd >= 0)
		ret = adopt_client(dev, dev->sim->opts.client_fd);
	else
		ret = listen_on(dev);
	if (ret)
		return ret;
	ret = sim_thread_create(&dev->srv_thread, srv_thread, dev);
	if (ret) {
		close_listener(dev);
		return ret;
	}
	dev->srv_started = true;
	return 0;
}

void srv_stop(struct sim_dev *dev)
{
	struct sim_msg *m;

	if (dev->srv_started) {
		pthread_join(dev->srv_thread, NULL);
		dev->srv_started = false;
	}
	close_listener(dev);
	while ((m = backlog_pop(dev)))
		srv_msg_free(m);
	if (dev->wake_fd >= 0) {
		close(dev->wake_fd);
		dev->wake_fd = -1;
	}
}
