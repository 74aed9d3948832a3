/* SPDX-License-Identifier: MIT */
/*
 * A tiny raw vfio-user client for the ugpu-sim device-model tests. It is
 * deliberately independent of the driver's transport (vfio/vfio_user.c):
 * these tests check the device against the protocol, not against our client.
 *
 * While it waits for a reply (tc_call) or an eventfd (tc_wait_irq) it serves
 * the device's in-band DMA_READ/DMA_WRITE requests from tc.inband_mem, the
 * memory the test mapped without an fd at tc.inband_iova. In twin-socket mode
 * (tc_version_twin) those requests come, and are answered, on tc.twin.
 */
#ifndef TEST_SIM_CLIENT_H
#define TEST_SIM_CLIENT_H

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/sock.h"
#include "vfio/vfio_user_proto.h"
#include "tools/ugpu-sim/sim.h"

#define TC_TIMEOUT_MS 5000

struct tc {
	int fd;
	int twin; /* twin socket, or -1 */
	uint16_t next_id;
	uint8_t *inband_mem;
	uint64_t inband_iova, inband_size;
	unsigned inband_served;
	unsigned inband_on_main, inband_on_twin; /* where the requests came */
	bool inband_fail; /* answer in-band requests with an error */
	/* keep the first in-band request that comes on the main socket while
	 * waiting for a reply unanswered in @held (a test that holds a device
	 * access in flight; answer it with tc_serve()) */
	bool inband_hold, have_held;
	struct tc_reply *held;
};

struct tc_reply {
	struct vfu_hdr hdr;
	uint8_t body[VFU_MAX_MSG];
	size_t len;
	int fds[VFU_MAX_FDS];
	int nfds;
};

static inline uint64_t tc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Send @len raw bytes, @fds on the first (the library's framing, bounded at
 * a minute: a peer that stops reading fails the test, it does not hang it). */
static inline int tc_send_raw_on(int fd, const void *buf, size_t len, const int *fds, int nfds)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

	return sock_send(fd, &iov, 1, fds, nfds, tc_now_ms() * 1000000ull + 60000000000ull, NULL);
}

static inline int tc_send_raw(struct tc *c, const void *buf, size_t len, const int *fds, int nfds)
{
	return tc_send_raw_on(c->fd, buf, len, fds, nfds);
}

static inline int tc_send_on(int fd, uint16_t cmd, uint16_t id, uint32_t flags, const void *b1,
			     size_t l1, const void *b2, size_t l2, const int *fds, int nfds)
{
	size_t len = sizeof(struct vfu_hdr) + l1 + l2;
	uint8_t *buf = malloc(len);
	struct vfu_hdr h = { .msg_id = id, .cmd = cmd, .size = (uint32_t)len, .flags = flags };
	int ret;

	if (!buf)
		return -ENOMEM;
	memcpy(buf, &h, sizeof(h));
	if (l1)
		memcpy(buf + sizeof(h), b1, l1);
	if (l2)
		memcpy(buf + sizeof(h) + l1, b2, l2);
	ret = tc_send_raw_on(fd, buf, len, fds, nfds);
	free(buf);
	return ret;
}

static inline int tc_send(struct tc *c, uint16_t cmd, uint16_t id, uint32_t flags, const void *b1,
			  size_t l1, const void *b2, size_t l2, const int *fds, int nfds)
{
	return tc_send_on(c->fd, cmd, id, flags, b1, l1, b2, l2, fds, nfds);
}

/* Read exactly @len bytes from @fd by @deadline (ms); fds that come along go
 * into @fds (up to @max, counted in *@nfds; the rest are closed), or are
 * closed when @fds is NULL. */
static inline int tc_read_fds(int fd, void *buf, size_t len, uint64_t deadline, int *fds, int *nfds,
			      int max)
{
	uint8_t *b = buf;

	while (len) {
		union {
			char b[CMSG_SPACE(sizeof(int) * 16)];
			struct cmsghdr a;
		} cb;
		struct iovec iov = { .iov_base = b, .iov_len = len };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b,
				     .msg_controllen = sizeof(cb.b) };
		struct pollfd p = { .fd = fd, .events = POLLIN };
		uint64_t now = tc_now_ms();
		ssize_t n;

		if (now >= deadline)
			return -ETIMEDOUT;
		if (poll(&p, 1, (int)(deadline - now)) <= 0)
			continue;
		n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			return -errno;
		}
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));

			for (int i = 0; i < k; i++) {
				int f;

				memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				if (fds && *nfds < max)
					fds[(*nfds)++] = f;
				else
					close(f);
			}
		}
		b += n;
		len -= (size_t)n;
	}
	return 0;
}

static inline int tc_read_full(int fd, void *buf, size_t len, uint64_t deadline)
{
	return tc_read_fds(fd, buf, len, deadline, NULL, NULL, 0);
}

/* Receive one message (any type) from @fd. */
static inline int tc_recv_on(int fd, struct tc_reply *r, int timeout_ms)
{
	uint64_t deadline = tc_now_ms() + (uint64_t)timeout_ms;
	union {
		char b[CMSG_SPACE(sizeof(int) * VFU_MAX_FDS)];
		struct cmsghdr a;
	} cb;
	struct iovec iov = { .iov_base = &r->hdr, .iov_len = sizeof(r->hdr) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b,
			     .msg_controllen = sizeof(cb.b) };
	struct pollfd p = { .fd = fd, .events = POLLIN };
	ssize_t n;
	int ret;

	r->nfds = 0;
	r->len = 0;
	if (poll(&p, 1, timeout_ms) <= 0)
		return -ETIMEDOUT;
	n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	if (n == 0)
		return -ECONNRESET;
	if (n < 0)
		return -errno;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));

			memcpy(r->fds + r->nfds, CMSG_DATA(cm), sizeof(int) * (size_t)k);
			r->nfds += k;
		}
	if (n < (ssize_t)sizeof(r->hdr)) {
		ret = tc_read_full(fd, (uint8_t *)&r->hdr + n, sizeof(r->hdr) - (size_t)n, deadline);
		if (ret)
			return ret;
	}
	if (r->hdr.size < sizeof(r->hdr) || r->hdr.size > VFU_MAX_MSG)
		return -EPROTO;
	r->len = r->hdr.size - sizeof(r->hdr);
	return tc_read_full(fd, r->body, r->len, deadline);
}

static inline int tc_recv(struct tc *c, struct tc_reply *r, int timeout_ms)
{
	return tc_recv_on(c->fd, r, timeout_ms);
}

/* Answer a DMA_READ/DMA_WRITE request from the device, on the socket @fd it
 * came by. */
static inline int tc_serve_on(struct tc *c, int fd, struct tc_reply *r)
{
	struct vfu_dma_access a;
	bool ok;

	if (fd == c->twin)
		c->inband_on_twin++;
	else
		c->inband_on_main++;
	if (r->len < sizeof(a))
		return -EPROTO;
	memcpy(&a, r->body, sizeof(a));
	ok = !c->inband_fail && c->inband_mem && a.addr >= c->inband_iova &&
	     a.count <= c->inband_size && a.addr - c->inband_iova <= c->inband_size - a.count;
	c->inband_served++;
	if (!ok)
		return tc_send_on(fd, r->hdr.cmd, r->hdr.msg_id, VFU_F_TYPE_REPLY | VFU_F_ERROR, NULL,
				  0, NULL, 0, NULL, 0);
	if (r->hdr.cmd == VFU_CMD_DMA_READ)
		return tc_send_on(fd, r->hdr.cmd, r->hdr.msg_id, VFU_F_TYPE_REPLY, &a, sizeof(a),
				  c->inband_mem + (a.addr - c->inband_iova), a.count, NULL, 0);
	if (r->len != sizeof(a) + a.count)
		return -EPROTO;
	memcpy(c->inband_mem + (a.addr - c->inband_iova), r->body + sizeof(a), a.count);
	return tc_send_on(fd, r->hdr.cmd, r->hdr.msg_id, VFU_F_TYPE_REPLY, &a, sizeof(a), NULL, 0,
			  NULL, 0);
}

/* Answer a request that came on the main socket (one tc_recv() read). */
static inline int tc_serve(struct tc *c, struct tc_reply *r)
{
	return tc_serve_on(c, c->fd, r);
}

/* Serve in-band requests waiting on the twin socket, without blocking. */
static inline int tc_serve_twin(struct tc *c)
{
	for (;;) {
		struct pollfd p = { .fd = c->twin, .events = POLLIN };
		struct tc_reply *r;
		int ret;

		if (c->twin < 0 || poll(&p, 1, 0) <= 0)
			return 0;
		r = malloc(sizeof(*r));
		if (!r)
			return -ENOMEM;
		ret = tc_recv_on(c->twin, r, 1000);
		if (!ret && (r->hdr.flags & VFU_F_TYPE_MASK) == VFU_F_TYPE_COMMAND)
			ret = tc_serve_on(c, c->twin, r);
		else if (!ret)
			ret = -EPROTO; /* nothing else may come this way */
		for (int i = 0; i < r->nfds; i++)
			close(r->fds[i]);
		free(r);
		if (ret)
			return ret;
	}
}

/* Wait for the reply to @id, serving device requests meanwhile. Returns 0,
 * the reply's -errno, or a transport -errno. */
static inline int tc_wait_reply(struct tc *c, uint16_t id, uint16_t cmd, struct tc_reply *r)
{
	uint64_t deadline = tc_now_ms() + TC_TIMEOUT_MS;

	for (;;) {
		struct pollfd p[2] = { { .fd = c->fd, .events = POLLIN },
				       { .fd = c->twin, .events = POLLIN } };
		uint64_t now = tc_now_ms();
		int ret;

		if (now >= deadline)
			return -ETIMEDOUT;
		if (poll(p, c->twin >= 0 ? 2 : 1, (int)(deadline - now)) <= 0)
			continue;
		if (c->twin >= 0 && p[1].revents) {
			ret = tc_serve_twin(c);
			if (ret)
				return ret;
			continue;
		}
		ret = tc_recv(c, r, (int)(deadline - now));
		if (ret)
			return ret;
		if ((r->hdr.flags & VFU_F_TYPE_MASK) == VFU_F_TYPE_COMMAND) {
			if (c->inband_hold && !c->have_held && c->held) {
				memcpy(c->held, r, sizeof(*r));
				c->have_held = true;
				continue;
			}
			ret = tc_serve_on(c, c->fd, r);
			if (ret)
				return ret;
			continue;
		}
		if (r->hdr.msg_id != id || r->hdr.cmd != cmd)
			return -EPROTO;
		if (r->hdr.flags & VFU_F_ERROR)
			return -(int)(r->hdr.error ? r->hdr.error : EIO);
		return 0;
	}
}

static inline int tc_call(struct tc *c, uint16_t cmd, const void *b1, size_t l1, const void *b2,
			  size_t l2, const int *fds, int nfds, struct tc_reply *r)
{
	uint16_t id = c->next_id++;
	int ret = tc_send(c, cmd, id, VFU_F_TYPE_COMMAND, b1, l1, b2, l2, fds, nfds);

	if (ret)
		return ret;
	return tc_wait_reply(c, id, cmd, r);
}

static inline struct tc_reply *tc_r(void)
{
	static struct tc_reply r;

	for (int i = 0; i < r.nfds; i++)
		close(r.fds[i]);
	r.nfds = 0;
	return &r;
}

static inline int tc_version(struct tc *c, char *caps, size_t capslen)
{
	static const char mine[] = "{\"capabilities\":{\"max_msg_fds\":8,\"max_data_xfer_size\":1048576}}";
	struct vfu_version v = { .major = 0, .minor = 1 };
	struct tc_reply *r = tc_r();
	int ret = tc_call(c, VFU_CMD_VERSION, &v, sizeof(v), mine, sizeof(mine), NULL, 0, r);

	if (ret)
		return ret;
	if (r->len < sizeof(v) + 1)
		return -EPROTO;
	if (caps) {
		size_t n = r->len - sizeof(v);

		if (n >= capslen)
			n = capslen - 1;
		memcpy(caps, r->body + sizeof(v), n);
		caps[n] = '\0';
	}
	return 0;
}

/* VERSION offering twin-socket mode; on success c->twin is the socket the
 * device passed (it must pass one: ugpu-sim accepts the offer). */
static inline int tc_version_twin(struct tc *c)
{
	static const char mine[] = "{\"capabilities\":{\"max_msg_fds\":8,"
				   "\"twin_socket\":{\"supported\":true}}}";
	struct vfu_version v = { .major = 0, .minor = 1 };
	struct tc_reply *r = tc_r();
	int ret = tc_call(c, VFU_CMD_VERSION, &v, sizeof(v), mine, sizeof(mine), NULL, 0, r);

	if (ret)
		return ret;
	if (r->nfds != 1 || r->len < sizeof(v) + 1 ||
	    !strstr((const char *)r->body + sizeof(v), "\"twin_socket\":{\"supported\":true,\"fd_index\":0}"))
		return -EPROTO;
	c->twin = r->fds[0];
	r->nfds = 0;
	return 0;
}

static inline int tc_connect_raw(const char *path, struct tc *c)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	memset(c, 0, sizeof(*c));
	c->twin = -1;
	c->next_id = 1;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -errno;
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int ret = -errno;

		close(c->fd);
		c->fd = -1;
		return ret;
	}
	return 0;
}

static inline int tc_connect(const char *path, struct tc *c)
{
	int ret = tc_connect_raw(path, c);

	if (ret)
		return ret;
	ret = tc_version(c, NULL, 0);
	if (ret) {
		close(c->fd);
		c->fd = -1;
	}
	return ret;
}

static inline void tc_close(struct tc *c)
{
	if (c->fd >= 0)
		close(c->fd);
	if (c->twin >= 0)
		close(c->twin);
	c->fd = -1;
	c->twin = -1;
}

static inline int tc_region_rw(struct tc *c, uint32_t region, uint64_t off, void *buf, uint32_t len,
			       bool write)
{
	struct vfu_region_access a = { .offset = off, .region = region, .count = len };
	struct tc_reply *r = tc_r();
	int ret;

	ret = tc_call(c, write ? VFU_CMD_REGION_WRITE : VFU_CMD_REGION_READ, &a, sizeof(a),
		      write ? buf : NULL, write ? len : 0, NULL, 0, r);
	if (ret)
		return ret;
	if (!write) {
		if (r->len != sizeof(a) + len)
			return -EPROTO;
		memcpy(buf, r->body + sizeof(a), len);
	}
	return 0;
}

static inline uint32_t tc_rd32(struct tc *c, uint64_t off)
{
	uint32_t v = 0xbadbad;

	if (tc_region_rw(c, 0, off, &v, 4, false))
		return 0xbadbad;
	return v;
}

static inline uint64_t tc_rd64(struct tc *c, uint64_t off)
{
	uint64_t v = 0xbadbad;

	if (tc_region_rw(c, 0, off, &v, 8, false))
		return 0xbadbad;
	return v;
}

static inline int tc_wr32(struct tc *c, uint64_t off, uint32_t v)
{
	return tc_region_rw(c, 0, off, &v, 4, true);
}

static inline int tc_wr64(struct tc *c, uint64_t off, uint64_t v)
{
	return tc_region_rw(c, 0, off, &v, 8, true);
}

static inline uint32_t tc_cfg32(struct tc *c, uint64_t off)
{
	uint32_t v = 0xbadbad;

	if (tc_region_rw(c, 7, off, &v, 4, false))
		return 0xbadbad;
	return v;
}

static inline int tc_cfg_wr32(struct tc *c, uint64_t off, uint32_t v)
{
	return tc_region_rw(c, 7, off, &v, 4, true);
}

/* Region info; *fd gets the passed fd (or -1). */
static inline int tc_region_info(struct tc *c, uint32_t index, struct vfu_region_info *out, int *fd)
{
	struct vfu_region_info in = { .argsz = sizeof(in), .index = index };
	struct tc_reply *r = tc_r();
	int ret = tc_call(c, VFU_CMD_DEVICE_GET_REGION_INFO, &in, sizeof(in), NULL, 0, NULL, 0, r);

	if (fd)
		*fd = -1;
	if (ret)
		return ret;
	if (r->len < sizeof(*out))
		return -EPROTO;
	memcpy(out, r->body, sizeof(*out));
	if (fd && r->nfds) {
		*fd = r->fds[0];
		r->fds[0] = r->fds[--r->nfds];
	}
	return 0;
}

/* Route vector @vec of @index to @efd. */
static inline int tc_set_irq(struct tc *c, uint32_t index, uint32_t vec, int efd)
{
	struct vfu_irq_set s = { .argsz = sizeof(s),
				 .flags = VFU_IRQ_SET_DATA_EVENTFD | VFU_IRQ_SET_ACTION_TRIGGER,
				 .index = index,
				 .start = vec,
				 .count = 1 };

	return tc_call(c, VFU_CMD_DEVICE_SET_IRQS, &s, sizeof(s), NULL, 0, &efd, 1, tc_r());
}

static inline int tc_dma_map(struct tc *c, uint64_t iova, uint64_t size, int fd, uint64_t off,
			     uint32_t prot)
{
	struct vfu_dma_map m = { .argsz = sizeof(m), .flags = prot, .offset = off, .addr = iova,
				 .size = size };

	return tc_call(c, VFU_CMD_DMA_MAP, &m, sizeof(m), NULL, 0, fd >= 0 ? &fd : NULL,
		       fd >= 0 ? 1 : 0, tc_r());
}

static inline int tc_dma_unmap(struct tc *c, uint64_t iova, uint64_t size)
{
	struct vfu_dma_unmap u = { .argsz = sizeof(u), .addr = iova, .size = size };

	return tc_call(c, VFU_CMD_DMA_UNMAP, &u, sizeof(u), NULL, 0, NULL, 0, tc_r());
}

/* Wait until eventfd @efd fires, serving in-band DMA meanwhile. Returns the
 * counter value (>0) or 0 on timeout. */
static inline uint64_t tc_wait_irq(struct tc *c, int efd, int timeout_ms)
{
	uint64_t deadline = tc_now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		struct pollfd p[3] = { { .fd = efd, .events = POLLIN }, { .fd = c->fd, .events = POLLIN },
				       { .fd = c->twin, .events = POLLIN } };
		uint64_t now = tc_now_ms(), v;

		if (now >= deadline)
			return 0;
		if (poll(p, c->fd < 0 ? 1 : c->twin >= 0 ? 3 : 2, (int)(deadline - now)) <= 0)
			continue;
		if ((p[0].revents & POLLIN) && read(efd, &v, sizeof(v)) == sizeof(v))
			return v;
		if (c->twin >= 0 && (p[2].revents & POLLIN))
			tc_serve_twin(c);
		if (p[1].revents & POLLIN) {
			struct tc_reply *r = tc_r();

			if (tc_recv(c, r, 100) == 0 &&
			    (r->hdr.flags & VFU_F_TYPE_MASK) == VFU_F_TYPE_COMMAND)
				tc_serve_on(c, c->fd, r);
		}
	}
}

/* Drain an eventfd without waiting; returns its counter. */
static inline uint64_t tc_efd_take(int efd)
{
	uint64_t v = 0;

	if (read(efd, &v, sizeof(v)) != sizeof(v))
		return 0;
	return v;
}

static inline void tc_sock_path(char *buf, size_t len, const char *tag)
{
	snprintf(buf, len, "/tmp/ugpu-test-%s-%d.sock", tag, (int)getpid());
}

/*
 * Start an in-process device with @o (its socket path made from @tag),
 * connect to it and map its VRAM (o->vram_size bytes) at *@vram. Returns 0
 * or -errno, with nothing left running on failure.
 */
static inline int tc_sim_open(struct sim_opts *o, const char *tag, struct sim **sim, struct tc *c,
			      uint8_t **vram)
{
	struct vfu_region_info ri = { 0 };
	char path[108];
	int fd = -1, ret;

	tc_sock_path(path, sizeof(path), tag);
	o->socket_path = path;
	ret = sim_start(o, sim);
	o->socket_path = NULL; /* not kept by sim_start */
	if (ret)
		return ret;
	ret = tc_connect(path, c);
	if (!ret)
		ret = tc_region_info(c, 2, &ri, &fd);
	if (!ret && fd < 0)
		ret = -EPROTO;
	if (!ret) {
		*vram = mmap(NULL, o->vram_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (*vram == MAP_FAILED)
			ret = -errno;
	}
	if (fd >= 0)
		close(fd);
	if (ret) {
		tc_close(c);
		sim_stop(*sim);
		*sim = NULL;
	}
	return ret;
}

/* Route MSI-X vectors 0..@n-1 to new eventfds in @efd. Returns 0 or -errno. */
static inline int tc_msix_eventfds(struct tc *c, int *efd, unsigned n)
{
	for (unsigned v = 0; v < n; v++) {
		int ret;

		efd[v] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (efd[v] < 0)
			return -errno;
		ret = tc_set_irq(c, 2, v, efd[v]);
		if (ret)
			return ret;
	}
	return 0;
}

#endif
