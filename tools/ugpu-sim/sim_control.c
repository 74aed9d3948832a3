/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim: the control socket. One text command per line, one reply line
 * ("ok ..." or "err ..."); commands are those of sim_control_exec(). A thread
 * of its own serves up to CTL_MAX_CONNS connections at once; it touches
 * devices only through the public API (which takes each device's lock).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "sim_internal.h"

#define CTL_MAX_CONNS 8
#define CTL_LINE_MAX 256

struct ctl_conn {
	int fd;
	size_t len;
	char buf[CTL_LINE_MAX];
};

/* Owned by the control thread, except stop_fd (written by control_stop). */
struct sim_control {
	struct sim *sim;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int listen_fd;
	int stop_fd;
	pthread_t thread;
	struct ctl_conn conns[CTL_MAX_CONNS];
};

int sim_control_exec(struct sim *sim, const char *line, char *reply, size_t len)
{
	char w[5][32] = { { 0 } };
	unsigned dev = 0;
	int n, i = 0, ret = 0;

	n = sscanf(line, "%31s %31s %31s %31s %31s", w[0], w[1], w[2], w[3], w[4]);
	if (n >= 2 && !strcmp(w[0], "dev")) {
		char *end;
		unsigned long v = strtoul(w[1], &end, 10);

		if (*end || v >= sim_num_devices(sim)) {
			snprintf(reply, len, "err no device %s", w[1]);
			return -EINVAL;
		}
		dev = (unsigned)v;
		i = 2;
		n -= 2;
	}
	if (n < 1) {
		snprintf(reply, len, "err empty command");
		return -EINVAL;
	}
	if (!strcmp(w[i], "state") && n == 1) {
		char s[1024]; /* 64 queues' status words fit */

		ret = sim_state_line(sim, dev, s, sizeof(s));
		if (!ret) {
			snprintf(reply, len, "ok %s", s);
			return 0;
		}
	} else if (!strcmp(w[i], "devices") && n == 1) {
		snprintf(reply, len, "ok %u", sim_num_devices(sim));
		return 0;
	} else if (!strcmp(w[i], "unplug") && n == 2) {
		if (!strcmp(w[i + 1], "request"))
			ret = sim_unplug_request(sim, dev);
		else if (!strcmp(w[i + 1], "surprise"))
			ret = sim_unplug_surprise(sim, dev);
		else
			goto out_usage;
	} else if (!strcmp(w[i], "inject") && n == 2 && !strcmp(w[i + 1], "clear")) {
		ret = sim_inject_clear(sim, dev);
	} else if (!strcmp(w[i], "inject") && n == 4) {
		enum sim_inject_kind kind;
		char *end;
		unsigned long cnt = strtoul(w[i + 2], &end, 10);
		bool always;

		if (!strcmp(w[i + 1], "cmd"))
			kind = SIM_INJECT_CMD;
		else if (!strcmp(w[i + 1], "dma"))
			kind = SIM_INJECT_DMA;
		else if (!strcmp(w[i + 1], "wake"))
			kind = SIM_INJECT_WAKE;
		else
			goto out_usage;
		if (*end || !cnt || cnt > 0xffffffffu)
			goto out_usage;
		if (!strcmp(w[i + 3], "once"))
			always = false;
		else if (!strcmp(w[i + 3], "always"))
			always = true;
		else
			goto out_usage;
		ret = sim_inject(sim, dev, kind, (unsigned)cnt, always);
	} else {
		goto out_usage;
	}
	if (ret) {
		snprintf(reply, len, "err %s", strerror(-ret));
		return ret;
	}
	snprintf(reply, len, "ok");
	return 0;

out_usage:
	snprintf(reply, len,
		 "err usage: [dev N] unplug request|surprise | inject cmd|dma|wake N once|always | "
		 "inject clear | state | devices");
	return -EINVAL;
}

static void conn_close(struct ctl_conn *c)
{
	close(c->fd);
	c->fd = -1;
	c->len = 0;
}

static void conn_input(struct sim_control *ctl, struct ctl_conn *c)
{
	ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, MSG_DONTWAIT);
	char *nl;

	if (n <= 0) {
		if (n < 0 && errno == EAGAIN)
			return;
		conn_close(c);
		return;
	}
	c->len += (size_t)n;
	c->buf[c->len] = '\0';
	while ((nl = strchr(c->buf, '\n'))) {
		char reply[1152];
		size_t rl;

		*nl = '\0';
		if (nl > c->buf && nl[-1] == '\r')
			nl[-1] = '\0';
		sim_control_exec(ctl->sim, c->buf, reply, sizeof(reply) - 1);
		rl = strlen(reply);
		reply[rl++] = '\n';
		if (send(c->fd, reply, rl, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)rl) {
			conn_close(c);
			return;
		}
		c->len -= (size_t)(nl + 1 - c->buf);
		memmove(c->buf, nl + 1, c->len + 1);
	}
	if (c->len == sizeof(c->buf) - 1) {
		const char *e = "err line too long\n";

		if (send(c->fd, e, strlen(e), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
			/* closing anyway */
		}
		conn_close(c);
	}
}

static void *control_thread(void *arg)
{
	struct sim_control *ctl = arg;

	for (;;) {
		struct pollfd p[2 + CTL_MAX_CONNS];
		int map[2 + CTL_MAX_CONNS];
		int np = 0;

		p[np].fd = ctl->stop_fd;
		p[np++].events = POLLIN;
		p[np].fd = ctl->listen_fd;
		p[np++].events = POLLIN;
		for (int i = 0; i < CTL_MAX_CONNS; i++) {
			if (ctl->conns[i].fd >= 0) {
				map[np] = i;
				p[np].fd = ctl->conns[i].fd;
				p[np++].events = POLLIN;
			}
		}
		if (poll(p, (nfds_t)np, 1000) <= 0)
			continue;
		if (p[0].revents)
			break;
		for (int k = 2; k < np; k++)
			if (p[k].revents)
				conn_input(ctl, &ctl->conns[map[k]]);
		if (p[1].revents & POLLIN) {
			int fd = accept4(ctl->listen_fd, NULL, NULL, SOCK_CLOEXEC);
			int i;

			if (fd < 0)
				continue;
			for (i = 0; i < CTL_MAX_CONNS && ctl->conns[i].fd >= 0; i++)
				;
			if (i == CTL_MAX_CONNS) {
				const char *e = "err too many control connections\n";

				if (send(fd, e, strlen(e), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
					/* closing anyway */
				}
				close(fd);
				continue;
			}
			ctl->conns[i].fd = fd;
			ctl->conns[i].len = 0;
		}
	}
	return NULL;
}

int control_start(struct sim *sim, const char *path, struct sim_control **out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct sim_control *ctl;
	int ret;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "ugpu-sim: control path too long: %s\n", path);
		return -ENAMETOOLONG;
	}
	ctl = calloc(1, sizeof(*ctl));
	if (!ctl)
		return -ENOMEM;
	ctl->sim = sim;
	for (int i = 0; i < CTL_MAX_CONNS; i++)
		ctl->conns[i].fd = -1;
	snprintf(ctl->path, sizeof(ctl->path), "%s", path);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	ctl->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ctl->stop_fd < 0) {
		ret = -errno;
		goto out_free;
	}
	ctl->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ctl->listen_fd < 0) {
		ret = -errno;
		goto out_close_stop;
	}
	unlink(path); /* a stale control socket is ours to replace */
	if (bind(ctl->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(ctl->listen_fd, 4) < 0) {
		ret = -errno;
		fprintf(stderr, "ugpu-sim: cannot listen on %s: %s\n", path, strerror(errno));
		goto out_close_listen;
	}
	ret = sim_thread_create(&ctl->thread, control_thread, ctl);
	if (ret)
		goto out_unlink;
	*out = ctl;
	return 0;

out_unlink:
	unlink(path);
out_close_listen:
	close(ctl->listen_fd);
out_close_stop:
	close(ctl->stop_fd);
out_free:
	free(ctl);
	return ret;
}

void control_stop(struct sim_control *ctl)
{
	uint64_t one = 1;

	if (!ctl)
		return;
	if (write(ctl->stop_fd, &one, sizeof(one)) < 0) {
		/* cannot fail short of overflow */
	}
	pthread_join(ctl->thread, NULL);
	for (int i = 0; i < CTL_MAX_CONNS; i++)
		if (ctl->conns[i].fd >= 0)
			close(ctl->conns[i].fd);
	close(ctl->listen_fd);
	unlink(ctl->path);
	close(ctl->stop_fd);
	free(ctl);
}
