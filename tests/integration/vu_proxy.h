/* SPDX-License-Identifier: MIT */
/*
 * A vfio-user man in the middle for tests: it listens on a socket path,
 * forwards each connection to an upstream server (ugpu-sim) message by
 * message, and lets the test change, drop or reframe the messages in either
 * direction, and swap the fds they carry. The driver under test sees a server
 * that is foreign or hostile in exactly the way the test wants.
 *
 * One thread; every wait bounded (100 ms polls, 1 s per message); a session
 * ends when either side hangs up or a forward fails, and the proxy then
 * accepts the next connection. Twin sockets the server passes with VERSION go
 * to the client as they are (the proxy sees only the main socket).
 */
#ifndef TEST_VU_PROXY_H
#define TEST_VU_PROXY_H

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "vfio/vfio_user_proto.h"
#include "test_sim_client.h"

#define VP_MAX_FDS 16
#define VP_IO_MS 1000

/* One message in flight. A mutator may change any field; with @raw set, those
 * bytes are sent instead of header + body (a reframed message). */
struct vp_msg {
	struct vfu_hdr hdr;
	uint8_t *body; /* malloc'd, @len bytes */
	size_t len;
	int fds[VP_MAX_FDS]; /* owned by the proxy: closed after the forward */
	int nfds;
	bool drop; /* do not forward */
	uint8_t *raw; /* malloc'd; freed by the proxy */
	size_t raw_len;
};

/* Called for every message; @to_client: server -> client. */
typedef void (*vp_mutate_fn)(void *arg, bool to_client, struct vp_msg *m);

struct vp {
	char path[108];
	char upstream[108];
	int listen_fd;
	pthread_t thr;
	bool stop; /* atomic */
	vp_mutate_fn mutate;
	void *arg;
	unsigned sessions; /* atomic: connections forwarded so far */
};

static inline bool vp_stopping(struct vp *p)
{
	return __atomic_load_n(&p->stop, __ATOMIC_ACQUIRE);
}

/* Read exactly @len bytes (fds collected into @m) within @deadline. */
static inline int vp_read(int fd, void *buf, size_t len, struct vp_msg *m, uint64_t deadline)
{
	return tc_read_fds(fd, buf, len, deadline, m->fds, &m->nfds, VP_MAX_FDS);
}

/* Send @len bytes, @fds with the first one; the socket's send timeout
 * (VP_IO_MS, vp_session) bounds every wait. */
static inline int vp_write(int fd, const uint8_t *buf, size_t len, const int *fds, int nfds)
{
	return tc_send_raw_on(fd, buf, len, fds, nfds);
}

static inline void vp_msg_release(struct vp_msg *m)
{
	for (int i = 0; i < m->nfds; i++)
		if (m->fds[i] >= 0)
			close(m->fds[i]);
	free(m->body);
	free(m->raw);
	memset(m, 0, sizeof(*m));
}

/* Forward one message from @from to @to. Returns 0 or -errno (session over). */
static inline int vp_forward(struct vp *p, int from, int to, bool to_client)
{
	uint64_t deadline = tc_now_ms() + VP_IO_MS;
	struct vp_msg m;
	uint8_t *out;
	size_t out_len;
	int ret;

	memset(&m, 0, sizeof(m));
	ret = vp_read(from, &m.hdr, sizeof(m.hdr), &m, deadline);
	if (!ret && m.hdr.size >= sizeof(m.hdr) && m.hdr.size <= VFU_MAX_MSG) {
		m.len = m.hdr.size - sizeof(m.hdr);
		m.body = malloc(m.len ? m.len : 1);
		ret = m.body ? vp_read(from, m.body, m.len, &m, deadline) : -ENOMEM;
	}
	if (ret) {
		vp_msg_release(&m);
		return ret;
	}
	if (p->mutate)
		p->mutate(p->arg, to_client, &m);
	if (m.drop) {
		vp_msg_release(&m);
		return 0;
	}
	if (m.raw) {
		ret = vp_write(to, m.raw, m.raw_len, m.fds, m.nfds);
	} else {
		out_len = sizeof(m.hdr) + m.len;
		out = malloc(out_len);
		if (!out) {
			vp_msg_release(&m);
			return -ENOMEM;
		}
		memcpy(out, &m.hdr, sizeof(m.hdr));
		if (m.len)
			memcpy(out + sizeof(m.hdr), m.body, m.len);
		ret = vp_write(to, out, out_len, m.fds, m.nfds);
		free(out);
	}
	vp_msg_release(&m);
	return ret;
}

static inline void vp_session(struct vp *p, int cfd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int sfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	struct timeval tv = { .tv_sec = VP_IO_MS / 1000, .tv_usec = (VP_IO_MS % 1000) * 1000 };

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", p->upstream);
	if (sfd < 0 || connect(sfd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (sfd >= 0)
			close(sfd);
		return;
	}
	/* No send may wait longer than VP_IO_MS. */
	setsockopt(sfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(cfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	__atomic_add_fetch(&p->sessions, 1, __ATOMIC_RELEASE);
	while (!vp_stopping(p)) {
		struct pollfd pf[2] = { { .fd = cfd, .events = POLLIN }, { .fd = sfd, .events = POLLIN } };

		if (poll(pf, 2, 100) <= 0)
			continue;
		if (pf[1].revents && vp_forward(p, sfd, cfd, true))
			break;
		if (pf[0].revents && vp_forward(p, cfd, sfd, false))
			break;
	}
	/* The server must see the end before the next connection. */
	shutdown(sfd, SHUT_RDWR);
	close(sfd);
}

static inline void *vp_main(void *arg)
{
	struct vp *p = arg;

	while (!vp_stopping(p)) {
		struct pollfd pf = { .fd = p->listen_fd, .events = POLLIN };
		int cfd;

		if (poll(&pf, 1, 100) <= 0)
			continue;
		cfd = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (cfd < 0)
			continue;
		vp_session(p, cfd);
		close(cfd);
	}
	return NULL;
}

/* Listen on @path and forward to @upstream, changing messages with @fn. */
static inline int vp_start(struct vp *p, const char *path, const char *upstream, vp_mutate_fn fn,
			   void *arg)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	memset(p, 0, sizeof(*p));
	snprintf(p->path, sizeof(p->path), "%s", path);
	snprintf(p->upstream, sizeof(p->upstream), "%s", upstream);
	p->mutate = fn;
	p->arg = arg;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	unlink(path);
	p->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (p->listen_fd < 0)
		return -errno;
	if (bind(p->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(p->listen_fd, 4) < 0) {
		int ret = -errno;

		close(p->listen_fd);
		return ret;
	}
	return -pthread_create(&p->thr, NULL, vp_main, p);
}

static inline void vp_stop(struct vp *p)
{
	__atomic_store_n(&p->stop, true, __ATOMIC_RELEASE);
	pthread_join(p->thr, NULL);
	close(p->listen_fd);
	unlink(p->path);
}

#endif
