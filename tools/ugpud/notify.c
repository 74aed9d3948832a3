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

int notify_send(const char *state)
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
	if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen) < 0)
		ret = -errno;
	close(fd);
	return ret;
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
	unsigned long pid = env_ulong("LISTEN_PID");
	unsigned long n = env_ulong("LISTEN_FDS");
	int got = 0;

	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (pid != (unsigned long)getpid() || !n)
		return 0;
	for (unsigned long i = 0; i < n && n < 1024; i++) {
		int fd = LISTEN_FDS_START + (int)i;

		/* ours to keep across nothing: no exec leaves the daemon */
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		if (got < max)
			fds[got++] = fd;
		else
			close(fd);
	}
	return got;
}
