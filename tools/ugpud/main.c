/* SPDX-License-Identifier: MIT */
/*
 * ugpud: claim the devices, listen, serve until SIGTERM (docs/daemon.md).
 *
 *   ugpud --device URI [--device URI...] [--socket PATH] [options]
 *
 * URI is what ugpu_device_open() takes ("vfio-user:PATH", "pci:BDF"), or
 * "sim" / "sim:SIZE": the reference device embedded in the daemon with SIZE
 * of VRAM (default 256M), for tests and demos. Started by systemd with a
 * .socket unit, it serves the socket it is handed (LISTEN_FDS) instead.
 */
#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <ugpu/ugpu.h>
#include <ugpu/rpm.h>
#include <ugpu/unplug.h>

#include "tools/common/cli.h"
#include "tools/common/progress_bar.h"
#include "tools/ugpu-sim/sim.h"
#include "tools/ugpud/ugpud.h"

#define DEFAULT_SOCKET "/run/ugpud/ugpud.sock"
#define LISTEN_BACKLOG 128
/* fds systemd may hand back: the socket unit's and the fd store's */
#define UGPUD_MAX_INHERITED 16384

static struct ugpud daemon_state;
static const char *dev_uris[UGPUD_MAX_DEVICES];
static unsigned int n_dev_uris;

void ugpud_log(const char *fmt, ...)
{
	va_list ap;

	progress_bar_clear();
	fputs("ugpud: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int opt_device(const char *val, void *dst)
{
	(void)dst;
	if (n_dev_uris == UGPUD_MAX_DEVICES || !*val || strlen(val) >= sizeof(daemon_state.devs[0].uri))
		return -EINVAL;
	dev_uris[n_dev_uris++] = val;
	return 0;
}

static int opt_user(const char *val, void *dst)
{
	struct ugpud *d = dst;
	struct passwd *pw = getpwnam(val);
	uint64_t n;

	if (d->n_allow_uid == UGPUD_MAX_ALLOW)
		return -EINVAL;
	if (pw)
		n = pw->pw_uid;
	else if (cli_strtou64(val, &n) || n >= UINT32_MAX)
		return -EINVAL;
	d->allow_uid[d->n_allow_uid++] = (uid_t)n;
	return 0;
}

static int opt_group(const char *val, void *dst)
{
	struct ugpud *d = dst;
	struct group *gr = getgrnam(val);
	uint64_t n;

	if (d->n_allow_gid == UGPUD_MAX_ALLOW)
		return -EINVAL;
	if (gr)
		n = gr->gr_gid;
	else if (cli_strtou64(val, &n) || n >= UINT32_MAX)
		return -EINVAL;
	d->allow_gid[d->n_allow_gid++] = (gid_t)n;
	return 0;
}

/* Open device @i from its URI (embedding the reference device for "sim"). */
static int device_up(struct ugpud *d, unsigned int i, const char *uri)
{
	struct ugpud_dev *u = &d->devs[i];
	char path[160];
	int ret;

	snprintf(u->uri, sizeof(u->uri), "%s", uri);
	if (!strcmp(uri, "sim") || !strncmp(uri, "sim:", 4)) {
		struct sim_opts so;
		uint64_t vram = 256ull << 20;

		if (uri[3] == ':' && (cli_strtosize(uri + 4, 1ull << 20, &vram) || vram < (16ull << 20) ||
				      (vram & (vram - 1)))) {
			ugpud_log("%s: SIZE must be a power of two of at least 16M", uri);
			return -EINVAL;
		}
		sim_opts_init(&so);
		so.vram_size = vram;
		ret = sim_start(&so, &u->sim);
		if (ret) {
			ugpud_log("%s: the embedded reference device did not start: %s", uri,
				  strerror(-ret));
			return ret;
		}
		snprintf(path, sizeof(path), "vfio-user:%s", sim_socket_path(u->sim, 0));
		uri = path;
	}
	ret = ugpu_device_open(d->ctx, uri, &u->dev);
	if (ret) {
		ugpud_log("%s: cannot claim the device: %s", u->uri, ugpu_strerror(ret));
		sim_stop(u->sim);
		u->sim = NULL;
		return ret;
	}
	return 0;
}

/* libugpu's removal thread: flag the device, wake the loop (which tells
 * the clients: loop.c). */
static void on_removed(void *user, struct ugpu_device *dev, enum ugpu_unplug_kind kind, int status)
{
	struct ugpud *d = user;
	uint64_t one = 1;

	for (unsigned int i = 0; i < d->ndevs; i++) {
		struct ugpud_dev *u = &d->devs[i];

		if (u->dev != dev)
			continue;
		u->removed_kind = (int)kind;
		u->removed_status = status;
		__atomic_store_n(&u->removed, 1, __ATOMIC_RELEASE);
	}
	if (d->ev_fd >= 0 && write(d->ev_fd, &one, sizeof(one)) < 0)
		ugpud_log("removal: the loop was not woken: %s", strerror(errno));
}

static void devices_down(struct ugpud *d)
{
	for (unsigned int i = 0; i < d->ndevs; i++) {
		ugpu_device_close(d->devs[i].dev);
		sim_stop(d->devs[i].sim);
	}
	d->ndevs = 0;
}

/* A socket systemd handed over must be a listening SOCK_SEQPACKET one. */
static int check_inherited(int fd)
{
	int type = 0, acc = 0;
	socklen_t l1 = sizeof(type), l2 = sizeof(acc);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l1) ||
	    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l2))
		return -errno;
	if (type != SOCK_SEQPACKET || !acc) {
		ugpud_log("the socket systemd passed is not a listening SOCK_SEQPACKET socket "
			  "(ListenSequentialPacket= in the .socket unit)");
		return -EINVAL;
	}
	return 0;
}

/* Listen on @path: a stale socket nobody serves is replaced; a live one is
 * another daemon's (-EADDRINUSE). */
static int listen_on(const char *path, mode_t mode)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, probe, ret;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		ugpud_log("%s: a socket path has at most %zu bytes", path, sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, strlen(path));
	probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (probe < 0)
		return -errno;
	ret = connect(probe, (struct sockaddr *)&sa, sizeof(sa));
	close(probe);
	if (!ret) {
		ugpud_log("%s: another daemon serves this socket", path);
		return -EADDRINUSE;
	}
	if (errno == ECONNREFUSED)
		unlink(path); /* stale: its daemon is gone */
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || chmod(path, mode) ||
	    listen(fd, LISTEN_BACKLOG)) {
		ret = -errno;
		ugpud_log("%s: cannot listen: %s", path, strerror(-ret));
		close(fd);
		return ret;
	}
	return fd;
}

int main(int argc, char **argv)
{
	struct ugpud *d = &daemon_state;
	const char *socket_path = DEFAULT_SOCKET;
	uint64_t max_clients = 256, max_bos = 4096;
	const char *mode_s = "0660";
	/* loopback by default: the counters are no secret, but nothing is
	 * exposed off the machine unless asked */
	const char *metrics_at = "127.0.0.1:9464";
	struct metrics *metrics = NULL;
	unsigned long mode;
	char *end;
	struct ugpu_context *ctx;
	bool activated = false;
	int listen_fd = -1, ret, inherited[UGPUD_MAX_INHERITED], ninh, nstored = 0;
	static char inh_names[UGPUD_MAX_INHERITED][64];
	uint64_t resume_s = 60, workers = 2;
	uint64_t autosuspend_ms = 0;
	bool logind = false;
	char st[256];
	sigset_t sigs;
	const struct cli_opt opts[] = {
		{ .name = "device", .kind = CLI_CALL, .dst = NULL, .arg = "URI", .call = opt_device,
		  .help = "claim and serve this device (repeatable; clients pick one by its "
			  "index, from 0)",
		  .range = "vfio-user:PATH, pci:BDF, sim or sim:SIZE (embedded reference "
			   "device); at most 16" },
		{ .name = "metrics", .kind = CLI_STR, .dst = &metrics_at, .arg = "ADDR:PORT",
		  .help = "serve Prometheus metrics at http://ADDR:PORT/metrics (IPv4; port 0 picks one; 'off' for none); a port in use is logged, not fatal" },
		{ .name = "socket", .kind = CLI_STR, .dst = &socket_path, .arg = "PATH",
		  .help = "listen here (ignored when systemd passes a socket)" },
		{ .name = "socket-mode", .kind = CLI_STR, .dst = &mode_s, .arg = "MODE",
		  .help = "permissions of the socket file, octal (0000..0777)" },
		{ .name = "allow-user", .kind = CLI_CALL, .dst = d, .arg = "USER", .call = opt_user,
		  .help = "this user may connect besides root and ugpud's own (repeatable)",
		  .range = "a user name or uid; at most 16" },
		{ .name = "allow-group", .kind = CLI_CALL, .dst = d, .arg = "GROUP",
		  .call = opt_group,
		  .help = "members of this group may connect (primary or supplementary; repeatable)",
		  .range = "a group name or gid; at most 16" },
		{ .name = "vram-quota", .kind = CLI_SIZE, .dst = &d->vram_quota, .arg = "SIZE",
		  .help = "bytes of VRAM-capable BOs one client may hold (0: no quota)", .min = 0,
		  .max = 1ull << 48, .unit = 1ull << 20 },
		{ .name = "max-clients", .kind = CLI_UINT, .dst = &max_clients, .arg = "N",
		  .help = "clients served at once; more are refused", .min = 1, .max = 4096 },
		{ .name = "fd-store", .kind = CLI_FLAG, .dst = &d->fd_store,
		  .help = "keep client BOs over a restart in systemd's fd store "
			  "(FileDescriptorStoreMax= in the unit; docs/daemon.md, Restart)" },
		{ .name = "resume-timeout", .kind = CLI_UINT, .dst = &resume_s, .arg = "SECONDS",
		  .help = "after a restart, release a session its client has not resumed by then",
		  .min = 1, .max = 86400 },
		{ .name = "logind", .kind = CLI_FLAG, .dst = &logind,
		  .help = "suspend every device before the host sleeps and resume it after "
			  "(systemd-logind's PrepareForSleep, with a delay inhibitor); without a "
			  "system bus or logind this is logged and the daemon serves on" },
		{ .name = "autosuspend", .kind = CLI_UINT, .dst = &autosuspend_ms, .arg = "MS",
		  .help = "runtime PM: a device no client touched for MS sleeps, and wakes for the "
			  "next request that needs it (0: never sleeps)",
		  .min = 0, .max = 3600000 },
		{ .name = "workers", .kind = CLI_UINT, .dst = &workers, .arg = "N",
		  .help = "threads for slow requests (migrate, pin, device-pm), so that they hold up no "
			  "other client (0: all on the event loop)",
		  .min = 0, .max = UGPUD_MAX_WORKERS },
		{ .name = "max-bos", .kind = CLI_UINT, .dst = &max_bos, .arg = "N",
		  .help = "objects (BOs, VMs, queues) one client may hold", .min = 1,
		  .max = UGPUD_HANDLE_SLOTS },
		{ 0 },
	};
	const struct cli_cmd cmd = {
		.prog = "ugpud",
		.args = "",
		.summary = "serve ugpu devices to client processes over a UNIX socket",
		.about = "Clients open \"ugpud:SOCKET\" (or \"ugpud:SOCKET?device=N\") with "
			 "ugpu_device_open(). Under systemd: socket activation (LISTEN_FDS), "
			 "sd_notify READY/STATUS/WATCHDOG. docs/daemon.md has the protocol.",
		.opts = opts,
	};

	ret = cli_parse(&cmd, argc, argv, NULL, NULL);
	if (ret != CLI_CONTINUE)
		return ret;
	mode = strtoul(mode_s, &end, 8);
	if (!*mode_s || *end || mode > 0777)
		return cli_usage_error(cmd.prog, "--socket-mode: '%s' is not accepted; expected octal 0000..0777",
				       mode_s);
	if (!n_dev_uris)
		return cli_usage_error(cmd.prog, "no --device: a daemon without a device serves nothing");
	list_init(&d->clients);
	list_init(&d->detached);
	d->ev_fd = eventfd(0, EFD_CLOEXEC);
	d->self_uid = getuid();
	d->max_clients = (unsigned int)max_clients;
	d->max_bos = (unsigned int)max_bos;
	signal(SIGPIPE, SIG_IGN);
	/* SIGTERM and SIGINT are read from a signalfd by the loop: blocked
	 * before any thread exists (the devices start theirs), so every
	 * thread inherits the mask and none dies of them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	ret = ugpu_context_create(NULL, &ctx);
	if (ret) {
		ugpud_log("no context: %s", ugpu_strerror(ret));
		return 1;
	}
	/* host suspend, removals and evictions of a second or more: a line in
	 * the log (a bar when run in a terminal) */
	progress_bar_set_prefix("ugpud: ");
	progress_bar_install(ctx);
	d->ctx = ctx;
	for (unsigned int i = 0; i < n_dev_uris; i++) {
		ret = device_up(d, i, dev_uris[i]);
		if (ret)
			goto out_devices;
		d->ndevs++;
		ugpu_device_set_removal_callback(d->devs[i].dev, on_removed, d);
		if (autosuspend_ms) {
			ret = ugpu_device_rpm_set_autosuspend_delay(d->devs[i].dev, (int)autosuspend_ms);
			if (!ret)
				ret = ugpu_device_rpm_allow(d->devs[i].dev, true);
			if (ret) {
				ugpud_log("%s: runtime PM: %s", d->devs[i].uri, ugpu_strerror(ret));
				goto out_devices;
			}
		}
	}
	d->resume_timeout_ms = resume_s * 1000;
	d->workers = (unsigned int)workers;
#ifdef UGPU_TEST_HOOKS
	d->test_create_delay = getenv("UGPUD_TEST_CREATE_DELAY");
	d->test_window = getenv("UGPUD_TEST_WINDOW");
#endif
	/* systemd hands back the socket unit's socket and what the fd store
	 * kept (names "ugpud-...", persist.c), in one list */
	ninh = notify_listen_fds_named(inherited, inh_names, UGPUD_MAX_INHERITED);
	for (int i = 0; i < ninh; i++) {
		if (!strncmp(inh_names[i], "ugpud-", 6) || listen_fd >= 0) {
			inherited[nstored] = inherited[i];
			memmove(inh_names[nstored++], inh_names[i], sizeof(inh_names[0]));
			continue;
		}
		listen_fd = inherited[i];
	}
	ret = persist_start(d, inherited, inh_names, nstored);
	if (ret)
		goto out_devices;
	if (listen_fd >= 0) {
		activated = true;
		ret = check_inherited(listen_fd);
		if (ret)
			goto out_devices;
	} else {
		listen_fd = listen_on(socket_path, (mode_t)mode);
		if (listen_fd < 0) {
			ret = listen_fd;
			goto out_devices;
		}
	}
	if (strcmp(metrics_at, "off")) {
		ret = metrics_start(d, metrics_at, &metrics);
		if (ret == -EINVAL) {
			ugpud_log("--metrics: '%s' is not ADDR:PORT (IPv4) or off", metrics_at);
			goto out_listen;
		}
		if (ret)
			ugpud_log("metrics: cannot listen on %s (%s); serving without them",
				  metrics_at, strerror(-ret));
		d->metrics = metrics;
	}
	if (logind) {
		ret = sleep_start(d);
		if (ret)
			ugpud_log("--logind: not following host sleep (%s); DEVICE_PM still drives it",
				  ret == -ENOENT ? "no system bus or no logind on it" : strerror(-ret));
		else
			ugpud_log("logind: the devices are suspended before the host sleeps");
	}
	ugpud_log("serving %u device(s) on %s%s (protocol %u)", d->ndevs,
		  activated ? "the socket systemd passed" : socket_path, "", UGPUD_PROTO_VERSION);
	snprintf(st, sizeof(st), "READY=1\nSTATUS=serving 0 clients on %u devices", d->ndevs);
	notify_send(st);
	ret = loop_run(d, listen_fd, notify_watchdog_usec());
	sleep_stop(d);
	persist_stop(d);
	d->metrics = NULL; /* the loop is done: nothing publishes any more */
	metrics_stop(metrics);
out_listen:
	close(listen_fd);
	if (!activated)
		unlink(socket_path);
out_devices:
	devices_down(d);
	ugpu_context_destroy(ctx);
	return ret ? 1 : 0;
}
