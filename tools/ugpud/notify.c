/* SPDX-License-Identifier: MIT */
/*
 * ugpud and systemd, without libsystemd: the two small protocols written
 * out (see sd_notify(3) and sd_listen_fds(3) for what they are).
 *
 * - Notification: $NOTIFY_SOCKET names an AF_UNIX datagram socket (a path,
 *   or an abstract name when it starts with '@'); each datagram is
 *   newline-separated VAR=VALUE lines: READY=1 once serving, STATUS=... for
 *   humans, WATCHDOG=1 at least every $WATCHDOG_USEC when $WATCHDOG_PID is
 *   unset or ours.
 * - Socket activation: when $LISTEN_PID is our pid, $LISTEN_FDS fds starting
 *   at 3 are sockets systemd opened for us (the .socket unit's).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "tools/ugpud/ugpud.h"

#define LISTEN_FDS_START 3

/* $NAME as a number for this process: 0 when unset or not ours. */
static unsigned long env_ulong(const char *name)
{
	const char *v = getenv(name);
	char *end;
	unsigned long n;

	if (!v || !*v)
		return 0;
	errno = 0;
	n = strtoul(v, &end, 10);
	return (*end || errno) ? 0 : n;
}

/* Send @state with @fd (-1: none) to $NOTIFY_SOCKET. */
static int notify_send_fd(const char *state, int pass)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len;
	socklen_t salen;
	int fd, ret = 0;

	if (!path || !*path)
		return 0;
	len = strlen(path);
	if (len >= sizeof(sa.sun_path) || (path[0] != '/' && path[0] != '@'))
		return -EINVAL;
	memcpy(sa.sun_path, path, len);
	if (path[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract: no terminating NUL in the length */
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (path[0] == '/'));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	{
		struct iovec iov = { .iov_base = (void *)state, .iov_len = strlen(state) };
		union {
			char b[CMSG_SPACE(sizeof(int))];
			struct cmsghdr align;
		} ctrl;
		struct msghdr m = { .msg_name = &sa, .msg_namelen = salen, .msg_iov = &iov,
				    .msg_iovlen = 1 };

		if (pass >= 0) { /* SCM_RIGHTS: what FDSTORE=1 stores */
			struct cmsghdr *cm;

			memset(&ctrl, 0, sizeof(ctrl));
			m.msg_control = ctrl.b;
			m.msg_controllen = sizeof(ctrl.b);
			cm = CMSG_FIRSTHDR(&m);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(cm), &pass, sizeof(int));
		}
		if (sendmsg(fd, &m, MSG_NOSIGNAL) < 0)
			ret = -errno;
	}
	close(fd);
	return ret;
}

int notify_send(const char *state)
{
	return notify_send_fd(state, -1);
}

int notify_barrier(unsigned int timeout_ms)
{
	struct pollfd p = { .events = POLLIN };
	int pfd[2], ret;

	if (pipe2(pfd, O_CLOEXEC))
		return -errno;
	/* systemd closes the fds of a message that does not store them, after
	 * it has processed every message before it: the read end then sees
	 * the pipe's end (sd_notify_barrier(3)) */
	ret = notify_send_fd("BARRIER=1", pfd[1]);
	close(pfd[1]);
	p.fd = pfd[0];
	if (!ret) {
		ret = poll(&p, 1, (int)timeout_ms);
		ret = ret > 0 ? 0 : ret == 0 ? -ETIMEDOUT : -errno;
	}
	close(pfd[0]);
	return ret;
}

int notify_store(int fd, const char *name)
{
	char msg[128];

	if (!getenv("NOTIFY_SOCKET"))
		return -ENOTCONN;
	snprintf(msg, sizeof(msg), "%s\nFDNAME=%s", fd >= 0 ? "FDSTORE=1" : "FDSTOREREMOVE=1",
		 name);
	return notify_send_fd(msg, fd);
}

uint64_t notify_watchdog_usec(void)
{
	unsigned long pid = env_ulong("WATCHDOG_PID");

	if (pid && pid != (unsigned long)getpid())
		return 0;
	return env_ulong("WATCHDOG_USEC");
}

int notify_listen_fds(int *fds, int max)
{
	return notify_listen_fds_named(fds, NULL, max);
}

int notify_listen_fds_named(int *fds, char (*names)[64], int max)
{
	const char *nv = getenv("LISTEN_FDNAMES");
	char *all = strdup(nv ? nv : "");
	char *save = NULL, *tok;
	unsigned long pid = env_ulong("LISTEN_PID");
	unsigned long n = env_ulong("LISTEN_FDS");
	int got = 0;

	tok = all ? strtok_r(all, ":", &save) : NULL;
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (pid != (unsigned long)getpid() || !n) {
		free(all);
		return 0;
	}
	for (unsigned long i = 0; i < n && n < 1024; i++) {
		int fd = LISTEN_FDS_START + (int)i;

		/* ours to keep across nothing: no exec leaves the daemon */
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		if (got < max) {
			if (names) /* an empty name is a name too: "a::b" */
				snprintf(names[got], 64, "%s", tok ? tok : "");
			fds[got++] = fd;
		} else {
			close(fd);
		}
		tok = tok ? strtok_r(NULL, ":", &save) : NULL;
	}
	free(all);
	return got;
}
