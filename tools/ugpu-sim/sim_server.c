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
 * One client at a time: a second connection is accepted, answered EBUSY and
 * closed. A client that disconnects loses its DMA windows and irq eventfds.
 * This file: the sockets, the server thread, framing (base/sock.c),
 * srv_wait() and the backlog. The commands are in sim_commands.c, DMA (the
 * client's windows and in-band requests) in sim_dma.c.
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
#include "base/sock.h"

/* ---- socket I/O (framing: base/sock.c) ---------------------------------- */

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
int srv_send(struct sim_dev *dev, bool request, struct vfu_hdr *hdr, const void *b1,
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

void srv_reply(struct sim_dev *dev, const struct sim_msg *m, const void *b1, size_t l1,
		  const void *b2, size_t l2, const int *fds, int nfds)
{
	struct vfu_hdr h = { .msg_id = m->hdr.msg_id, .cmd = m->hdr.cmd, .flags = VFU_F_TYPE_REPLY };

	if (m->hdr.flags & VFU_F_NO_REPLY)
		return;
	srv_send(dev, false, &h, b1, l1, b2, l2, fds, nfds);
}

void srv_reply_err(struct sim_dev *dev, const struct sim_msg *m, int err)
{
	struct vfu_hdr h = { .msg_id = m->hdr.msg_id,
			     .cmd = m->hdr.cmd,
			     .flags = VFU_F_TYPE_REPLY | VFU_F_ERROR,
			     .error = (uint32_t)err };

	if (m->hdr.flags & VFU_F_NO_REPLY)
		return;
	srv_send(dev, false, &h, NULL, 0, NULL, 0, NULL, 0);
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
	srv_pending_fail_all(dev, ENODEV);
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
					srv_route_reply(dev, m);
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
	srv_pending_fail_all(dev, ENODEV);
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
					srv_irq_set_fd(dev, i, v, -1);
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
		struct ucred in = { 0 }, held = { 0 };
		socklen_t l1 = sizeof(in), l2 = sizeof(held);

		/* name both ends: whoever was refused asks who has the device */
		getsockopt(dev->refused[i].fd, SOL_SOCKET, SO_PEERCRED, &in, &l1);
		if (dev->client_fd >= 0)
			getsockopt(dev->client_fd, SOL_SOCKET, SO_PEERCRED, &held, &l2);
		srv_log(dev, "second client (pid %d) refused (EBUSY): the device is in use by pid %d; one client at a time",
			(int)in.pid, (int)held.pid);
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
				srv_route_reply(dev, m);
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
