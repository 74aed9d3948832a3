/* SPDX-License-Identifier: MIT */
/*
 * Whole messages with fds over a stream socket (see sock.h).
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/sock.h"

/* The errors that mean the peer is gone. */
static int sock_err(int err)
{
	return (err == EPIPE || err == ECONNRESET || err == ENOTCONN) ? -ECONNRESET : -err;
}

/* Poll @fd for @ev (and @w's wake fd) until the deadline. Returns 0 when
 * @fd is ready (or in error: the next call says which), or -errno. */
static int sock_poll(int fd, short ev, uint64_t deadline_ns, const struct sock_wait *w)
{
	for (;;) {
		struct pollfd p[2] = { { .fd = fd, .events = ev },
				       { .fd = w ? w->wake_fd : -1, .events = POLLIN } };
		uint64_t now = now_ns();
		int ret;

		if (now >= deadline_ns)
			return -ETIMEDOUT;
		/* round up: a wait never ends just before its deadline */
		ret = poll(p, p[1].fd >= 0 ? 2 : 1, (int)((deadline_ns - now + 999999) / 1000000));
		if (ret < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (ret > 0 && p[1].fd >= 0 && p[1].revents) {
			ret = w->woken ? w->woken(w->arg) : 0;
			if (ret)
				return ret;
		}
		if (p[0].revents)
			return 0;
	}
}

int sock_send(int fd, struct iovec *iov, int iovcnt, const int *fds, int nfds,
	      uint64_t deadline_ns, size_t *sent)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * SOCK_MAX_FDS)];
		struct cmsghdr align;
	} cm;
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)iovcnt };
	size_t done = 0;
	int ret = 0;

	if (sent)
		*sent = 0;
	if (nfds < 0 || nfds > SOCK_MAX_FDS || iovcnt < 1)
		return -EINVAL;
	if (nfds > 0) {
		struct cmsghdr *c;

		memset(&cm, 0, sizeof(cm));
		msg.msg_control = cm.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
	}
	/* skip empty parts, so an empty tail never looks like work left */
	while (msg.msg_iovlen && !msg.msg_iov[msg.msg_iovlen - 1].iov_len)
		msg.msg_iovlen--;
	while (msg.msg_iovlen) {
		ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				ret = sock_err(errno);
				break;
			}
			ret = sock_poll(fd, POLLOUT, deadline_ns, NULL);
			if (ret)
				break;
			continue;
		}
		if (n == 0) {
			ret = -ECONNRESET; /* no progress on a stream: treat as gone */
			break;
		}
		done += (size_t)n;
		/* the fds went with the first byte */
		msg.msg_control = NULL;
		msg.msg_controllen = 0;
		while (msg.msg_iovlen && (size_t)n >= msg.msg_iov->iov_len) {
			n -= (ssize_t)msg.msg_iov->iov_len;
			msg.msg_iov++;
			msg.msg_iovlen--;
		}
		if (msg.msg_iovlen) {
			msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + n;
			msg.msg_iov->iov_len -= (size_t)n;
		}
	}
	if (sent)
		*sent = done;
	return ret;
}

void sock_fds_close(struct sock_fds *in)
{
	for (int i = 0; i < in->n; i++)
		close(in->fds[i]);
	in->n = 0;
}

/* How many fds @in takes: its @max within [0, SOCK_MAX_FDS]. */
static int sock_fds_max(const struct sock_fds *in)
{
	return in->max < 0 ? 0 : in->max < SOCK_MAX_FDS ? in->max : SOCK_MAX_FDS;
}

void sock_take_fds(struct msghdr *msg, struct sock_fds *in)
{
	int max = sock_fds_max(in);

	if (msg->msg_flags & MSG_CTRUNC)
		in->ctrunc = true;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
		int cnt;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		cnt = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (int k = 0; k < cnt; k++) {
			int cfd;

			memcpy(&cfd, CMSG_DATA(c) + (size_t)k * sizeof(int), sizeof(int));
			if (in->n < max) {
				in->fds[in->n++] = cfd;
			} else {
				close(cfd);
				in->ctrunc = true;
			}
		}
	}
}

/* One recvmsg() of up to @len bytes into @buf with @flags, the fds that
 * come kept in @in. Returns what recvmsg() returned (errno set when < 0). */
static ssize_t sock_recvmsg_fds(int fd, void *buf, size_t len, struct sock_fds *in, int flags)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * SOCK_MAX_FDS)];
		struct cmsghdr align;
	} cm;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	int max = sock_fds_max(in);
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = max ? cm.b : NULL,
		.msg_controllen = max ? CMSG_SPACE(sizeof(int) * (size_t)max) : 0,
	};
	ssize_t n = recvmsg(fd, &msg, flags | MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

	if (n >= 0)
		sock_take_fds(&msg, in);
	return n;
}

/* Receive something (a record, or part of a stream) into @buf: waits
 * (bounded by @w) until data, the peer's end (-ECONNRESET) or an error.
 * *@n gets what recvmsg() returned. */
static int sock_recv_some(int fd, void *buf, size_t len, struct sock_fds *in, int flags,
			  const struct sock_wait *w, size_t *n)
{
	for (;;) {
		ssize_t r = sock_recvmsg_fds(fd, buf, len, in, flags);
		int ret;

		if (r > 0) {
			*n = (size_t)r;
			return 0;
		}
		if (r == 0)
			return -ECONNRESET;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return sock_err(errno);
		ret = sock_poll(fd, POLLIN, w->deadline_ns, w);
		if (ret)
			return ret;
	}
}

int sock_recv(int fd, void *buf, size_t len, struct sock_fds *in, const struct sock_wait *w)
{
	size_t got = 0, n = 0;

	while (got < len) {
		int ret = sock_recv_some(fd, (char *)buf + got, len - got, in, 0, w, &n);

		if (ret)
			return ret;
		got += n;
	}
	return 0;
}

/* Read and throw away @len bytes (fds that come are still collected). */
static int sock_drain(int fd, size_t len, struct sock_fds *in, const struct sock_wait *w)
{
	char sink[4096];

	while (len) {
		size_t k = len < sizeof(sink) ? len : sizeof(sink);
		int ret = sock_recv(fd, sink, k, in, w);

		if (ret)
			return ret;
		len -= k;
	}
	return 0;
}

int sock_recv_msg(int fd, void *hdr, size_t hdr_len, sock_body_len_fn body_len, void *arg,
		  size_t max_body, const struct sock_wait *w, struct sock_msg *out)
{
	int64_t len;
	int ret;

	out->body = NULL;
	out->len = 0;
	out->dropped = false;
	out->in.n = 0;
	out->in.ctrunc = false;
	ret = sock_recv(fd, hdr, hdr_len, &out->in, w);
	if (ret)
		goto out_close;
	len = body_len(hdr, arg);
	if (len < 0) {
		ret = (int)len;
		goto out_close;
	}
	out->len = (size_t)len;
	if (out->len > max_body) {
		out->dropped = true;
		ret = sock_drain(fd, out->len, &out->in, w);
		if (ret)
			goto out_close;
		return 0;
	}
	if (!out->len)
		return 0;
	out->body = malloc(out->len);
	if (!out->body) {
		ret = -ENOMEM;
		goto out_close;
	}
	ret = sock_recv(fd, out->body, out->len, &out->in, w);
	if (ret)
		goto out_free;
	return 0;

out_free:
	free(out->body);
	out->body = NULL;
out_close:
	sock_fds_close(&out->in);
	return ret;
}

int sock_recv_packet(int fd, void *buf, size_t cap, size_t *len, struct sock_fds *in,
		     const struct sock_wait *w)
{
	/* MSG_TRUNC: the real length of a longer record, not the part copied */
	int ret = sock_recv_some(fd, buf, cap, in, MSG_TRUNC, w, len);

	if (ret)
		return ret;
	return *len > cap ? -EMSGSIZE : 0;
}

void sock_body_free(void *body)
{
	free(body);
}

bool sock_wait_accepting(const char *path, unsigned int ms)
{
	for (uint64_t t0 = now_ms();; usleep(10000)) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		bool ok;

		if (fd < 0)
			return false;
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
		ok = !connect(fd, (struct sockaddr *)&sa, sizeof(sa));
		close(fd);
		if (ok)
			return true;
		if (now_ms() - t0 >= ms)
			return false;
	}
}
