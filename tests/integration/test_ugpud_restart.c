/* SPDX-License-Identifier: MIT */
/*
 * ugpud restarts without losing its clients' data (docs/daemon.md,
 * "Restart"). The test plays systemd: it binds $NOTIFY_SOCKET, keeps what
 * the daemon stores there (FDSTORE=1 / FDSTOREREMOVE=1 with FDNAME=), holds
 * the listening socket as a .socket unit does, closes the fd of any other
 * message (which is what answers BARRIER=1), and after SIGKILLing ugpud
 * under load starts it again with the socket and the stored fds as
 * LISTEN_FDS / LISTEN_FDNAMES.
 *  - killed_under_load_and_restarted: two client processes keep writing,
 *    reading back and migrating their BOs (VRAM-only, system-only, and one
 *    moved both ways) while ugpud is SIGKILLed and restarted; their calls
 *    resume on their own and every BO is byte-exact at the end (a BO made
 *    in system memory before the restarts then mapped: the restored BO's
 *    memory, not the memfd its create brought); the restart
 *    time is printed; three times in a row (a restored daemon's table is
 *    restored again). A client that died with the daemon has its session
 *    restored and released when --resume-timeout passes. A clean stop
 *    then leaves nothing of ours in the store.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <ugpu/bo.h>
#include <ugpu/device.h>
#include <ugpu/vm.h>

#include "base/clock.h"

#define MAX_STORE 256
#define CLIENTS 2
#define RESTARTS 3
#define NBO 4 /* BOs per client */

/* The fd store and readiness as "systemd" (this test) keeps them.
 * Locking: @lock guards the store and @ready; the harness thread writes,
 * the test reads. @stop is atomic. */
static struct {
	pthread_mutex_t lock;
	int fds[MAX_STORE];
	char names[MAX_STORE][64];
	int n;
	unsigned int ready; /* READY=1 seen */
	unsigned int suppressed; /* fds of a description stored already */
	int nfd; /* the notify socket; set before the thread starts */
	int stop; /* atomic */
} store = { .lock = PTHREAD_MUTEX_INITIALIZER };

static char line_value(const char *msg, const char *key, char *out, size_t n)
{
	const char *p = strstr(msg, key);
	size_t k = 0;

	if (!p)
		return 0;
	p += strlen(key);
	while (*p && *p != '\n' && k + 1 < n)
		out[k++] = *p++;
	out[k] = '\0';
	return 1;
}

static void *harness(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&store.stop, __ATOMIC_RELAXED)) {
		struct pollfd p = { .fd = store.nfd, .events = POLLIN };
		char msg[512], name[64] = "";
		union {
			char b[CMSG_SPACE(sizeof(int) * 4)];
			struct cmsghdr align;
		} ctrl;
		struct iovec iov = { .iov_base = msg, .iov_len = sizeof(msg) - 1 };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl.b,
				    .msg_controllen = sizeof(ctrl.b) };
		struct cmsghdr *cm;
		int fd = -1;
		ssize_t r;

		if (poll(&p, 1, 50) <= 0)
			continue;
		r = recvmsg(store.nfd, &m, MSG_CMSG_CLOEXEC);
		if (r <= 0)
			continue;
		msg[r] = '\0';
		for (cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm))
			if (cm->cmsg_type == SCM_RIGHTS)
				memcpy(&fd, CMSG_DATA(cm), sizeof(int));
		line_value(msg, "FDNAME=", name, sizeof(name));
		pthread_mutex_lock(&store.lock);
		if (strstr(msg, "READY=1"))
			store.ready++;
		/* systemd keeps one entry per open file description: a second
		 * fd of one already stored is suppressed, under whatever name
		 * (service_add_fd_store(), same_fd()) */
		for (int i = 0; fd >= 0 && strstr(msg, "FDSTORE=1") && i < store.n; i++)
			if (syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, fd, store.fds[i]) == 0) {
				store.suppressed++;
				close(fd);
				fd = -1;
			}
		if (strstr(msg, "FDSTORE=1") && fd >= 0 && store.n < MAX_STORE) {
			store.fds[store.n] = fd;
			snprintf(store.names[store.n++], 64, "%s", name);
			fd = -1;
		}
		if (strstr(msg, "FDSTOREREMOVE=1")) {
			for (int i = 0; i < store.n; i++) {
				if (strcmp(store.names[i], name))
					continue;
				close(store.fds[i]);
				store.fds[i] = store.fds[store.n - 1];
				memcpy(store.names[i], store.names[store.n - 1], 64);
				store.n--;
				i--;
			}
		}
		pthread_mutex_unlock(&store.lock);
		if (fd >= 0)
			close(fd);
	}
	return NULL;
}

static unsigned int ready_count(void)
{
	unsigned int n;

	pthread_mutex_lock(&store.lock);
	n = store.ready;
	pthread_mutex_unlock(&store.lock);
	return n;
}

static int store_count(const char *prefix)
{
	int k = 0;

	pthread_mutex_lock(&store.lock);
	for (int i = 0; i < store.n; i++)
		k += !strncmp(store.names[i], prefix, strlen(prefix));
	pthread_mutex_unlock(&store.lock);
	return k;
}

/* Options the next spawn() adds (NULL-terminated). */
static const char *spawn_extra[8];
static const char *spawn_device = "sim:64M";
/* An environment entry the next spawn() adds (NULL: none). */
static const char *spawn_env;

/* Start ugpud as systemd would: @lfd as its socket, the store's fds after
 * it. Waits (bounded) for READY=1; its pid. */
static pid_t spawn(const char *notify_path, int lfd)
{
	const char *dir = getenv("UGPU_BUILD_DIR");
	char bin[512], names[MAX_STORE * 65 + 64], e_notify[160], e_fds[32], e_names[sizeof(names) + 32];
	int fds[MAX_STORE + 1], n = 0;
	unsigned int ready0 = ready_count();
	uint64_t t0;
	pid_t pid;

	if (!dir)
		exit(77);
	snprintf(bin, sizeof(bin), "%s/ugpud", dir);
	if (access(bin, X_OK))
		exit(77);
	fds[n++] = lfd;
	snprintf(names, sizeof(names), "ugpud.socket");
	pthread_mutex_lock(&store.lock);
	for (int i = 0; i < store.n; i++) {
		fds[n++] = store.fds[i];
		strcat(names, ":");
		strcat(names, store.names[i]);
	}
	pthread_mutex_unlock(&store.lock);
	snprintf(e_notify, sizeof(e_notify), "NOTIFY_SOCKET=%s", notify_path);
	snprintf(e_fds, sizeof(e_fds), "LISTEN_FDS=%d", n);
	snprintf(e_names, sizeof(e_names), "LISTEN_FDNAMES=%s", names);
	pid = fork();
	if (pid < 0)
		return -1;
	if (!pid) {
		char e_pid[32];
		char *envp[] = { e_notify, e_fds, e_names, e_pid, (char *)spawn_env, NULL };

		/* out of the way first, then to 3.. in order */
		for (int i = 0; i < n; i++)
			fds[i] = fcntl(fds[i], F_DUPFD, 1000);
		for (int i = 0; i < n; i++)
			if (dup2(fds[i], 3 + i) != 3 + i)
				_exit(126);
		snprintf(e_pid, sizeof(e_pid), "LISTEN_PID=%d", (int)getpid());
		char *argv[16] = { bin, "--device", (char *)spawn_device, "--fd-store", "--metrics", "off",
				   "--resume-timeout", "2" };

		for (int i = 0, a = 8; spawn_extra[i] && a < 15; i++)
			argv[a++] = (char *)spawn_extra[i];
		execve(bin, argv, envp);
		_exit(127);
	}
	for (t0 = now_ms(); now_ms() - t0 < 15000; usleep(2000))
		if (ready_count() > ready0)
			return pid;
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return -1;
}

static void pattern(unsigned char *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (unsigned char)(seed >> 16);
	}
}

/* A client under load: BOs of four kinds written, read back and moved until
 * @stop_fd is readable; then every byte is checked against its shadow. The
 * fourth is mapped all along: stores through the mapping must reach the BO
 * (its reads) and its writes the mapping, across every restart.
 * Exit codes name the failing step. */
static int client(const char *uri, uint32_t seed, int ready_fd, int stop_fd)
{
	static const uint64_t sizes[NBO] = { 1 << 20, 512 << 10, 256 << 10, 256 << 10 };
	static const enum ugpu_placement pl[NBO][2] = {
		{ UGPU_PLACEMENT_VRAM, UGPU_PLACEMENT_NONE },
		{ UGPU_PLACEMENT_SYSTEM, UGPU_PLACEMENT_NONE },
		{ UGPU_PLACEMENT_VRAM, UGPU_PLACEMENT_SYSTEM },
		{ UGPU_PLACEMENT_VRAM, UGPU_PLACEMENT_SYSTEM },
	};
	struct ugpu_context *ctx;
	struct ugpu_device *dev;
	struct ugpu_bo *bo[NBO];
	unsigned char *shadow[NBO], chunk[4096], back[4096], *mapped;
	void *maddr;
	unsigned long rounds = 0;

	if (ugpu_context_create(NULL, &ctx) || ugpu_device_open(ctx, uri, &dev))
		return 10;
	for (int k = 0; k < NBO; k++) {
		struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = sizes[k],
					  .placements = { pl[k][0], pl[k][1] } };

		shadow[k] = malloc(sizes[k]);
		pattern(shadow[k], sizes[k], seed + (uint32_t)k);
		if (ugpu_bo_create(dev, &o, &bo[k]) || ugpu_bo_write(bo[k], 0, shadow[k], sizes[k]))
			return 11;
	}
	if (ugpu_bo_map(bo[3], &maddr))
		return 20;
	mapped = maddr;
	if (write(ready_fd, "r", 1) != 1)
		return 12;
	for (;;) {
		struct pollfd p = { .fd = stop_fd, .events = POLLIN };
		int k = (int)(rounds % NBO);
		uint64_t off = (rounds * 4096 * 7) % sizes[k];

		if (poll(&p, 1, 0) > 0)
			break;
		pattern(chunk, sizeof(chunk), seed ^ (uint32_t)rounds);
		if (k == 3 && rounds / NBO % 2) {
			/* a store through the mapping, read through the daemon */
			memcpy(mapped + off, chunk, sizeof(chunk));
			memcpy(shadow[k] + off, chunk, sizeof(chunk));
			if (ugpu_bo_read(bo[k], off, back, sizeof(back)))
				return 14;
			if (memcmp(back, chunk, sizeof(chunk)))
				return 21;
			rounds++;
			continue;
		}
		if (ugpu_bo_write(bo[k], off, chunk, sizeof(chunk)))
			return 13;
		memcpy(shadow[k] + off, chunk, sizeof(chunk));
		if (ugpu_bo_read(bo[k], off, back, sizeof(back)) || memcmp(back, chunk, sizeof(chunk)))
			return 14;
		if (k == 3 && memcmp(mapped + off, chunk, sizeof(chunk)))
			return 22; /* the daemon's write, not seen through the mapping */
		if (rounds % 16 == 5 &&
		    ugpu_bo_migrate(bo[2], (rounds / 16) % 2 ? UGPU_PLACEMENT_VRAM : UGPU_PLACEMENT_SYSTEM))
			return 15;
		rounds++;
	}
	/* bo[1], made in system memory before the restarts, came with the
	 * first daemon's memfd (UGPUD_CREATE_FD): a map now must reach the
	 * restored BO, coherent both ways, not that memfd */
	{
		unsigned char *p;
		void *addr;

		if (ugpu_bo_map(bo[1], &addr))
			return 18;
		p = addr;
		if (memcmp(p, shadow[1], sizes[1]))
			return 19;
		memset(p + 8192, (int)(seed & 0xff), 4096);
		memset(shadow[1] + 8192, (int)(seed & 0xff), 4096);
	}
	if (memcmp(mapped, shadow[3], sizes[3]))
		return 23;
	if (ugpu_bo_unmap(bo[3]))
		return 24; /* the restored daemon knows it is mapped */
	for (int k = 0; k < NBO; k++) {
		unsigned char *all = malloc(sizes[k]);

		if (ugpu_bo_read(bo[k], 0, all, sizes[k]))
			return 16;
		if (memcmp(all, shadow[k], sizes[k])) {
			uint64_t o = 0;

			while (all[o] == shadow[k][o])
				o++;
			fprintf(stderr, "  client %u: BO %d differs at byte %llu (0x%02x, expected 0x%02x) after %lu rounds\n",
				seed, k, (unsigned long long)o, all[o], shadow[k][o], rounds);
			return 17;
		}
		free(all);
		ugpu_bo_put(bo[k]);
	}
	fprintf(stderr, "  client %u: %lu rounds, %d BOs byte-exact\n", seed, rounds, NBO);
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	return 0;
}

struct unmapper {
	pthread_t t;
	struct ugpu_bo *bo;
	int ret;
};

static void *unmapper_fn(void *arg)
{
	struct unmapper *um = arg;

	um->ret = ugpu_bo_unmap(um->bo);
	return NULL;
}

/* What a failed check leaves running: killed by the teardown, so that the
 * daemon and the clients, which share the test's output, do not keep ctest
 * waiting for it past the failure. */
static pid_t live_pids[CLIENTS + 2];

static void live_set(int i, pid_t pid)
{
	live_pids[i] = pid;
}

/* spawn(), asserted, the daemon's pid the one killed at a failure. */
static pid_t spawn_live(const char *notify_path, int lfd)
{
	pid_t d = spawn(notify_path, lfd);

	assert_true(d > 0);
	live_set(CLIENTS, d);
	return d;
}

/* The store's notify socket at @ns and the daemon's listening socket at
 * @ls (named by @tag), the store's harness thread started (@th). */
static int store_and_socket(const char *tag, struct sockaddr_un *ns, struct sockaddr_un *ls,
			    pthread_t *th)
{
	int lfd;

	snprintf(ns->sun_path, sizeof(ns->sun_path), "/tmp/ugpud-%s-notify-%d", tag, (int)getpid());
	snprintf(ls->sun_path, sizeof(ls->sun_path), "/tmp/ugpud-%s-%d.sock", tag, (int)getpid());
	unlink(ns->sun_path);
	unlink(ls->sun_path);
	__atomic_store_n(&store.stop, 0, __ATOMIC_RELAXED);
	store.nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(store.nfd, (struct sockaddr *)ns, sizeof(*ns)), 0);
	lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)ls, sizeof(*ls)), 0);
	assert_int_equal(listen(lfd, 8), 0);
	assert_int_equal(pthread_create(th, NULL, harness, NULL), 0);
	return lfd;
}

static int teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(live_pids) / sizeof(live_pids[0]); i++)
		if (live_pids[i] > 0) {
			kill(live_pids[i], SIGKILL);
			waitpid(live_pids[i], NULL, 0);
			live_pids[i] = 0;
		}
	return 0;
}

/* A clean stop of daemon @d empties the store (nothing stale for the next
 * start); then the harness thread @th and the sockets go. */
static void stop_and_end(pid_t d, pthread_t th, int lfd, const struct sockaddr_un *ns,
			 const struct sockaddr_un *ls)
{
	int st;

	assert_int_equal(kill(d, SIGTERM), 0);
	assert_int_equal(waitpid(d, &st, 0), d);
	live_set(CLIENTS, 0);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	usleep(100000);
	assert_int_equal(store_count("ugpud-"), 0);
	__atomic_store_n(&store.stop, 1, __ATOMIC_RELAXED);
	pthread_join(th, NULL);
	close(lfd);
	close(store.nfd);
	unlink(ls->sun_path);
	unlink(ns->sun_path);
}

static void killed_under_load_and_restarted(void **state)
{
	struct sockaddr_un ns = { .sun_family = AF_UNIX }, ls = { .sun_family = AF_UNIX };
	char uri[160];
	int lfd, ready[2], stop[2], st;
	pid_t d, kids[CLIENTS], orphan;
	pthread_t th;
	uint64_t t0, t_ready;
	char c;

	(void)state;
	snprintf(ns.sun_path, sizeof(ns.sun_path), "/tmp/ugpud-rs-notify-%d", (int)getpid());
	snprintf(ls.sun_path, sizeof(ls.sun_path), "/tmp/ugpud-rs-%d.sock", (int)getpid());
	unlink(ns.sun_path);
	unlink(ls.sun_path);
	store.nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(store.nfd, (struct sockaddr *)&ns, sizeof(ns)), 0);
	lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&ls, sizeof(ls)), 0);
	assert_int_equal(chmod(ls.sun_path, 0666), 0);
	assert_int_equal(listen(lfd, 64), 0);
	assert_int_equal(pthread_create(&th, NULL, harness, NULL), 0);
	d = spawn_live(ns.sun_path, lfd);
	snprintf(uri, sizeof(uri), "ugpud:%s", ls.sun_path);
	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(stop), 0);
	for (int i = 0; i < CLIENTS; i++) {
		kids[i] = fork();
		assert_true(kids[i] >= 0);
		if (!kids[i]) {
			close(lfd);
			_exit(client(uri, 100u + (uint32_t)i, ready[1], stop[0]));
		}
		live_set(i, kids[i]);
	}
	for (int i = 0; i < CLIENTS; i++)
		assert_int_equal(read(ready[0], &c, 1), 1);
	usleep(300000);
	/* the table and the VRAM are in the store while it serves */
	assert_true(store_count("ugpud-table-") >= 1);
	assert_int_equal(store_count("ugpud-vram-"), 1);
	assert_true(store_count("ugpud-sys-") >= CLIENTS); /* the system-only BOs */
	/* an orphan: a third client that holds a BO and dies with the daemon;
	 * its session, restored, is released when its time to resume ends */
	orphan = fork();
	assert_true(orphan >= 0);
	if (!orphan) {
		struct ugpu_context *ctx;
		struct ugpu_device *dev;
		struct ugpu_bo *bo;
		struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = 4 << 20 };

		if (ugpu_context_create(NULL, &ctx) || ugpu_device_open(ctx, uri, &dev) ||
		    ugpu_bo_create(dev, &o, &bo) || write(ready[1], "o", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	live_set(CLIENTS + 1, orphan);
	assert_int_equal(read(ready[0], &c, 1), 1);
	usleep(50000);
	for (int round = 0; round < RESTARTS; round++) {
		usleep(150000);
		assert_int_equal(kill(d, SIGKILL), 0);
		assert_int_equal(waitpid(d, &st, 0), d);
		if (!round) {
			kill(orphan, SIGKILL);
			waitpid(orphan, NULL, 0);
			live_set(CLIENTS + 1, 0);
		}
		t0 = now_us();
		d = spawn_live(ns.sun_path, lfd);
		t_ready = now_us() - t0;
		fprintf(stderr, "  ugpud SIGKILLed under load (%d of %d): restarted, BOs restored, "
			"READY in %llu ms\n", round + 1, RESTARTS,
			(unsigned long long)(t_ready / 1000));
	}
	/* the orphan's 4 MiB go once its time to resume (2 s) has passed */
	{
		struct ugpu_context *ctx;
		struct ugpu_device *dev;
		struct ugpu_device_mem m = { .size = sizeof(m) };
		uint64_t bos = 0;

		assert_int_equal(ugpu_context_create(NULL, &ctx), 0);
		assert_int_equal(ugpu_device_open(ctx, uri, &dev), 0);
		assert_int_equal(ugpu_device_mem_stats(dev, &m), 0);
		assert_int_equal(m.bos, NBO * CLIENTS + 1); /* the orphan's is back too */
		for (t0 = now_ms(); now_ms() - t0 < 5000; usleep(20000)) {
			assert_int_equal(ugpu_device_mem_stats(dev, &m), 0);
			bos = m.bos;
			if (bos == NBO * CLIENTS)
				break;
		}
		assert_int_equal(bos, NBO * CLIENTS);
		ugpu_device_close(dev);
		ugpu_context_destroy(ctx);
	}
	usleep(300000); /* the clients go on through the new daemon */
	assert_int_equal(write(stop[1], "s", 1), 1);
	for (int i = 0; i < CLIENTS; i++) {
		assert_int_equal(waitpid(kids[i], &st, 0), kids[i]);
		live_set(i, 0);
		if (!WIFEXITED(st) || WEXITSTATUS(st))
			fail_msg("client %d ended with status 0x%x (exit codes: client() in the test)",
				 i, st);
	}
	/* an unmap in flight when the daemon dies: the restarted daemon
	 * restores the map's hold, and the library asks again (the review of
	 * the restart's adoption: the hold was left, the BO stuck in system
	 * memory, migrate and pin -EBUSY for good) */
	{
		struct ugpu_context *ctx;
		struct ugpu_device *dev;
		struct ugpu_bo *bo;
		struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = 64 << 10,
					  .placements = { UGPU_PLACEMENT_VRAM, UGPU_PLACEMENT_SYSTEM } };
		struct ugpu_bo_info bi = { .size = sizeof(bi) };
		struct unmapper um;
		void *addr;

		assert_int_equal(ugpu_context_create(NULL, &ctx), 0);
		assert_int_equal(ugpu_device_open(ctx, uri, &dev), 0);
		assert_int_equal(ugpu_bo_create(dev, &o, &bo), 0);
		assert_int_equal(ugpu_bo_map(bo, &addr), 0);
		memset(addr, 0x3c, 64 << 10);
		usleep(100000); /* recorded: the table says mapped */
		assert_int_equal(kill(d, SIGSTOP), 0);
		um.bo = bo;
		assert_int_equal(pthread_create(&um.t, NULL, unmapper_fn, &um), 0);
		usleep(100000); /* the unmap is sent, unanswered */
		assert_int_equal(kill(d, SIGKILL), 0);
		assert_int_equal(waitpid(d, &st, 0), d);
		d = spawn_live(ns.sun_path, lfd);
		pthread_join(um.t, NULL);
		assert_int_equal(um.ret, 0);
		assert_int_equal(ugpu_bo_query(bo, &bi), 0);
		assert_false(bi.cpu_mapped);
		assert_int_equal(ugpu_bo_migrate(bo, UGPU_PLACEMENT_VRAM), 0); /* no hold left */
		{
			unsigned char back[4096], want[4096];

			memset(want, 0x3c, sizeof(want));
			assert_int_equal(ugpu_bo_read(bo, 60 << 10, back, sizeof(back)), 0);
			assert_memory_equal(back, want, sizeof(want));
		}
		ugpu_bo_put(bo);
		ugpu_device_close(dev);
		ugpu_context_destroy(ctx);
	}
	/* a mapped BO whose memfd the restarted daemon cannot take back (the
	 * store hands back another memfd under its name: a copy of the bytes,
	 * one page longer): restored as a copy, which the client's mapping
	 * does not reach. Told: the resume logs it, every call on the BO but
	 * unmap, query and put is -ESTALE until it is unmapped; then a new
	 * map is the BO's memory again (before, the mapping diverged from the
	 * BO silently) */
	{
		struct ugpu_context *ctx;
		struct ugpu_device *dev;
		struct ugpu_bo *bo;
		struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = 64 << 10,
					  .placements = { UGPU_PLACEMENT_VRAM, UGPU_PLACEMENT_SYSTEM } };
		unsigned char back[4096], want[4096], *m;
		int swapped = 0;
		void *addr;

		assert_int_equal(ugpu_context_create(NULL, &ctx), 0);
		assert_int_equal(ugpu_device_open(ctx, uri, &dev), 0);
		assert_int_equal(ugpu_bo_create(dev, &o, &bo), 0);
		assert_int_equal(ugpu_bo_map(bo, &addr), 0);
		m = addr;
		memset(m, 0x5e, 64 << 10);
		usleep(100000); /* recorded: the table says mapped, its memfd stored */
		assert_int_equal(kill(d, SIGKILL), 0);
		assert_int_equal(waitpid(d, &st, 0), d);
		pthread_mutex_lock(&store.lock);
		for (int i = 0; i < store.n; i++) {
			struct stat sb;
			int nfd;
			char *buf;

			if (strncmp(store.names[i], "ugpud-sys-", 10))
				continue;
			assert_int_equal(fstat(store.fds[i], &sb), 0);
			nfd = memfd_create("not-the-client-s", MFD_CLOEXEC);
			assert_true(nfd >= 0);
			buf = malloc((size_t)sb.st_size);
			assert_non_null(buf);
			assert_int_equal(pread(store.fds[i], buf, (size_t)sb.st_size, 0), sb.st_size);
			assert_int_equal(pwrite(nfd, buf, (size_t)sb.st_size, 0), sb.st_size);
			assert_int_equal(ftruncate(nfd, sb.st_size + 4096), 0);
			free(buf);
			close(store.fds[i]);
			store.fds[i] = nfd;
			swapped++;
		}
		pthread_mutex_unlock(&store.lock);
		assert_int_equal(swapped, 1); /* only this BO's is in system memory */
		memset(m + 4096, 0x77, 4096); /* after the copy: not in the BO */
		d = spawn_live(ns.sun_path, lfd);
		assert_int_equal(ugpu_bo_read(bo, 0, back, sizeof(back)), -ESTALE);
		usleep(100000); /* recorded */
		assert_int_equal(kill(d, SIGKILL), 0); /* a second restart: still told */
		assert_int_equal(waitpid(d, &st, 0), d);
		d = spawn_live(ns.sun_path, lfd);
		assert_int_equal(ugpu_bo_write(bo, 0, back, sizeof(back)), -ESTALE);
		assert_int_equal(ugpu_bo_migrate(bo, UGPU_PLACEMENT_VRAM), -ESTALE);
		assert_int_equal(ugpu_bo_unmap(bo), 0);
		memset(want, 0x5e, sizeof(want));
		assert_int_equal(ugpu_bo_read(bo, 4096, back, sizeof(back)), 0);
		assert_memory_equal(back, want, sizeof(want)); /* the restart's bytes */
		assert_int_equal(ugpu_bo_map(bo, &addr), 0);
		m = addr;
		assert_memory_equal(m + 4096, want, sizeof(want));
		memset(m + 8192, 0x42, 4096);
		memset(want, 0x42, sizeof(want));
		assert_int_equal(ugpu_bo_read(bo, 8192, back, sizeof(back)), 0);
		assert_memory_equal(back, want, sizeof(want)); /* coherent again */
		assert_int_equal(ugpu_bo_unmap(bo), 0);
		ugpu_bo_put(bo);
		ugpu_device_close(dev);
		ugpu_context_destroy(ctx);
	}
	stop_and_end(d, th, lfd, &ns, &ls);
}

/* An embedded device's VRAM is what a restart reads BOs back from, and a
 * D3cold wake overwrites it (the reference device poisons its VRAM, as
 * real VRAM loses its contents): with --fd-store such a device sleeps in
 * D3hot only. Before (the review of the held-back VRAM): a BO that runtime
 * PM evicted for D3cold was restored from blocks the wake had poisoned. */
static void fd_store_sleeps_in_d3hot(void **state)
{
	struct sockaddr_un ns = { .sun_family = AF_UNIX }, ls = { .sun_family = AF_UNIX };
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = 1 << 20,
				  .placements = { UGPU_PLACEMENT_VRAM, UGPU_PLACEMENT_SYSTEM } };
	struct ugpu_device_info info = { .size = sizeof(info) };
	static unsigned char buf[1 << 20], back[1 << 20];
	struct ugpu_context *ctx;
	struct ugpu_device *dev;
	struct ugpu_bo *bo;
	char uri[160];
	pthread_t th;
	pid_t d;
	int lfd, st;

	(void)state;
	lfd = store_and_socket("rs3", &ns, &ls, &th);
	spawn_extra[0] = "--autosuspend";
	spawn_extra[1] = "20";
	d = spawn_live(ns.sun_path, lfd);
	snprintf(uri, sizeof(uri), "ugpud:%s", ls.sun_path);
	assert_int_equal(ugpu_context_create(NULL, &ctx), 0);
	assert_int_equal(ugpu_device_open(ctx, uri, &dev), 0);
	assert_int_equal(ugpu_bo_create(dev, &o, &bo), 0);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (unsigned char)(i * 7 + 3);
	assert_int_equal(ugpu_bo_write(bo, 0, buf, sizeof(buf)), 0);
	usleep(400000); /* idle: it sleeps */
	assert_int_equal(ugpu_device_query(dev, &info), 0);
	fprintf(stderr, "  idle with --fd-store: power state %d\n", (int)info.power_state);
	assert_int_equal(info.power_state, UGPU_POWER_D3HOT);
	assert_int_equal(kill(d, SIGKILL), 0);
	assert_int_equal(waitpid(d, &st, 0), d);
	d = spawn_live(ns.sun_path, lfd);
	assert_int_equal(ugpu_bo_read(bo, 0, back, sizeof(back)), 0);
	assert_memory_equal(back, buf, sizeof(buf));
	ugpu_bo_put(bo);
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	spawn_extra[0] = NULL;
	stop_and_end(d, th, lfd, &ns, &ls);
}

/* The test build's $UGPUD_TEST_WINDOW file (struct ugpud @test_window):
 * named by @tag into @window (64 bytes), the environment entry for the
 * next spawn() in @env (96 bytes); window_check() fails when a request
 * left a window (VRAM held for the table given to an allocation). */
static void window_arm(const char *tag, char *window, char *env)
{
	snprintf(window, 64, "/tmp/ugpud-%s-window-%d", tag, (int)getpid());
	snprintf(env, 96, "UGPUD_TEST_WINDOW=%s", window);
	unlink(window);
}

static void window_check(const char *window)
{
	if (!access(window, F_OK))
		fail_msg("a request left VRAM held for the restart table given to an allocation "
			 "(%s lists the requests)", window);
}

/*
 * Evictions inside requests (mm/vram.h strict hold): a create or migrate
 * that needs another BO's VRAM evicts it, and the evicted BO's old blocks
 * are written by nobody until a table that no longer names them is stored
 * (the daemon writes it inside the request, then tries again). Before, the
 * new BO was placed in them at once, and a kill before the request's table
 * restored the evicted BO from the new one's zeroes. Here every create
 * past the first eight and every migrate evicts, kills come between, and
 * every BO reads back byte-exact; the calls never see the retry.
 */
#define PRESS_BOS 12

static void evictions_inside_requests(void **state)
{
	struct sockaddr_un ns = { .sun_family = AF_UNIX }, ls = { .sun_family = AF_UNIX };
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = 2 << 20,
				  .placements = { UGPU_PLACEMENT_VRAM, UGPU_PLACEMENT_SYSTEM } };
	static unsigned char buf[PRESS_BOS][2 << 20], back[2 << 20];
	struct ugpu_context *ctx;
	struct ugpu_device *dev;
	struct ugpu_bo *bo[PRESS_BOS];
	char uri[160], window[64], env[96];
	pthread_t th;
	pid_t d;
	int lfd, st;

	(void)state;
	lfd = store_and_socket("rs4", &ns, &ls, &th);
	window_arm("rs4", window, env);
	spawn_env = env; /* (no request may leave a window: see no_window_in_svm_maps) */
	spawn_device = "sim:16M";
	d = spawn_live(ns.sun_path, lfd);
	snprintf(uri, sizeof(uri), "ugpud:%s", ls.sun_path);
	assert_int_equal(ugpu_context_create(NULL, &ctx), 0);
	assert_int_equal(ugpu_device_open(ctx, uri, &dev), 0);
	for (int i = 0; i < PRESS_BOS; i++) {
		pattern(buf[i], sizeof(buf[i]), 900u + (uint32_t)i);
		assert_int_equal(ugpu_bo_create(dev, &o, &bo[i]), 0);
		assert_int_equal(ugpu_bo_write(bo[i], 0, buf[i], sizeof(buf[i])), 0);
	}
	for (int round = 0; round < 3; round++) {
		/* each into VRAM in turn: every move evicts another */
		for (int i = 0; i < PRESS_BOS; i++)
			assert_int_equal(ugpu_bo_migrate(bo[(i * 5 + round) % PRESS_BOS],
							 UGPU_PLACEMENT_VRAM), 0);
		assert_int_equal(kill(d, SIGKILL), 0);
		assert_int_equal(waitpid(d, &st, 0), d);
		d = spawn_live(ns.sun_path, lfd);
		for (int i = 0; i < PRESS_BOS; i++) {
			assert_int_equal(ugpu_bo_read(bo[i], 0, back, sizeof(back)), 0);
			if (memcmp(back, buf[i], sizeof(back)))
				fail_msg("restart %d: BO %d differs from what was written", round, i);
		}
	}
	fprintf(stderr, "  %d BOs of 2 MiB in 16 MiB of VRAM, %d migrates evicting, 3 restarts: byte-exact\n",
		PRESS_BOS, 3 * PRESS_BOS);
	for (int i = 0; i < PRESS_BOS; i++)
		ugpu_bo_put(bo[i]);
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	window_check(window);
	spawn_device = "sim:64M";
	spawn_env = NULL;
	stop_and_end(d, th, lfd, &ns, &ls);
}

#define FILL_MAX 320

/* VRAM full of @dev's client's patterned BOs (pattern seed 700 + index):
 * of 1 MiB, then of 64 KiB, or (@small) all of 64 KiB (a VM's page tables
 * come in 64 KiB); their count. */
static int fill_vram(struct ugpu_device *dev, struct ugpu_bo **bo, uint64_t *sizes, bool small)
{
	static unsigned char buf[1 << 20];
	struct ugpu_bo_opts o = { .size = sizeof(o),
				  .placements = { UGPU_PLACEMENT_VRAM, UGPU_PLACEMENT_SYSTEM } };
	struct ugpu_device_mem m = { .size = sizeof(m) };
	int n;

	for (n = 0; n < FILL_MAX; n++) {
		assert_int_equal(ugpu_device_mem_stats(dev, &m), 0);
		if (m.vram_free < (64 << 10))
			break;
		sizes[n] = small || m.vram_free < (1 << 20) ? 64 << 10 : 1 << 20;
		o.bytes = sizes[n];
		pattern(buf, sizes[n], 700u + (uint32_t)n);
		assert_int_equal(ugpu_bo_create(dev, &o, &bo[n]), 0);
		assert_int_equal(ugpu_bo_write(bo[n], 0, buf, sizes[n]), 0);
	}
	assert_true(n >= 4 && n < FILL_MAX);
	return n;
}

/* Index of the first of fill_vram()'s @n BOs that does not read back as
 * written, or -1. */
static int fill_check(struct ugpu_bo **bo, const uint64_t *sizes, int n)
{
	static unsigned char want[1 << 20], back[1 << 20];

	for (int i = 0; i < n; i++) {
		pattern(want, sizes[i], 700u + (uint32_t)i);
		assert_int_equal(ugpu_bo_read(bo[i], 0, back, sizes[i]), 0);
		if (memcmp(back, want, sizes[i]))
			return i;
	}
	return -1;
}

/*
 * The kill inside the window: another client's create (a BO, then a VM:
 * page tables) evicts this client's BOs, and the daemon is SIGKILLed after
 * the create, before its reply (a test build's delay there,
 * $UGPUD_TEST_CREATE_DELAY). Before the strict hold, the new BO (or the
 * page tables) took the evicted BO's old blocks at once, and the restart
 * read that BO from them: zeroes. Now the table is written before, naming
 * the evicted BO's system memfd.
 */
static void kill_inside_an_evicting_create(void **state)
{
	struct sockaddr_un ns = { .sun_family = AF_UNIX }, ls = { .sun_family = AF_UNIX };
	static struct ugpu_bo *bo[FILL_MAX];
	static uint64_t sizes[FILL_MAX];
	struct ugpu_context *ctx;
	struct ugpu_device *dev;
	int lfd, st, go[2], n, bad;
	char uri[160], delay[64], env[96], c;
	FILE *df;
	pthread_t th;
	pid_t d;

	(void)state;
	lfd = store_and_socket("rs5", &ns, &ls, &th);
	spawn_device = "sim:16M";
	snprintf(delay, sizeof(delay), "/tmp/ugpud-rs5-delay-%d", (int)getpid());
	snprintf(env, sizeof(env), "UGPUD_TEST_CREATE_DELAY=%s", delay);
	unlink(delay);
	spawn_env = env;
	d = spawn_live(ns.sun_path, lfd);
	snprintf(uri, sizeof(uri), "ugpud:%s", ls.sun_path);
	assert_int_equal(ugpu_context_create(NULL, &ctx), 0);
	assert_int_equal(ugpu_device_open(ctx, uri, &dev), 0);
	n = fill_vram(dev, bo, sizes, false);
	for (int round = 0; round < 2; round++) {
		pid_t k;

		df = fopen(delay, "w"); /* the daemon sleeps after creates from now */
		assert_non_null(df);
		fprintf(df, "1500\n");
		fclose(df);
		assert_int_equal(pipe(go), 0);
		k = fork();
		assert_true(k >= 0);
		if (!k) {
			struct ugpu_context *kctx;
			struct ugpu_device *kdev;
			struct ugpu_bo_opts ko = { .size = sizeof(ko), .bytes = 4 << 20,
						   .placements = { UGPU_PLACEMENT_VRAM } };
			struct ugpu_vm_opts vo = { .size = sizeof(vo) };
			struct ugpu_bo *kbo;
			struct ugpu_vm *kvm;

			if (ugpu_context_create(NULL, &kctx) || ugpu_device_open(kctx, uri, &kdev) ||
			    write(go[1], "g", 1) != 1)
				_exit(1);
			/* the daemon dies before answering */
			if (round == 0)
				(void)ugpu_bo_create(kdev, &ko, &kbo);
			else
				(void)ugpu_vm_create(kdev, &vo, &kvm);
			_exit(0);
		}
		assert_int_equal(read(go[0], &c, 1), 1);
		close(go[0]);
		close(go[1]);
		usleep(600000); /* inside the daemon's delay after the create */
		assert_int_equal(kill(d, SIGKILL), 0);
		assert_int_equal(waitpid(d, &st, 0), d);
		kill(k, SIGKILL); /* (it would wait for the daemon to come back) */
		waitpid(k, NULL, 0);
		unlink(delay);
		d = spawn_live(ns.sun_path, lfd);
		bad = fill_check(bo, sizes, n);
		if (bad >= 0)
			fail_msg("killed inside a %s's request: BO %d of %d differs from what was "
				 "written", round ? "VM create" : "BO create", bad, n);
		/* the room is this client's again for the next round */
		for (int i = 0; i < n; i++)
			assert_int_equal(ugpu_bo_migrate(bo[i], UGPU_PLACEMENT_VRAM), 0);
	}
	fprintf(stderr, "  %d BOs filling 16 MiB of VRAM, evicted by another client's BO and VM "
		"creates killed before their tables: byte-exact\n", n);
	for (int i = 0; i < n; i++)
		ugpu_bo_put(bo[i]);
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	spawn_device = "sim:64M";
	spawn_env = NULL;
	stop_and_end(d, th, lfd, &ns, &ls);
}

/*
 * No window in SVM maps: a client's kernels fault on its malloc'd memory
 * in 12 regions a GiB apart, with the daemon's VRAM full of the client's
 * BOs. Each fault's range is copied into a staging BO the daemon moves to
 * VRAM and maps (UGPUD_SVM_MAP): the move evicts, and every few regions
 * the map's page tables need a new 64 KiB chunk, which evicts too. No
 * request may leave VRAM held for the table given to an allocation (the
 * test build's $UGPUD_TEST_WINDOW file stays absent): the second review
 * saw the map's page tables take an evicted BO's blocks, a kill then
 * reading that BO from page-table bytes.
 */
static void no_window_in_svm_maps(void **state)
{
	struct sockaddr_un ns = { .sun_family = AF_UNIX }, ls = { .sun_family = AF_UNIX };
	static struct ugpu_bo *bo[FILL_MAX];
	static uint64_t sizes[FILL_MAX];
	struct ugpu_vm_opts vo = { .size = sizeof(vo), .flags = UGPU_VM_MIRROR,
				   .mirror_start = 0x10000ull,
				   .mirror_size = (1ull << 47) - 0x20000ull, .name = "svm" };
	const size_t regions = 12, gib = 1ull << 30, touch = 64 << 10;
	struct ugpu_context *ctx;
	struct ugpu_device *dev;
	struct ugpu_vm *vm;
	struct ugpu_queue *q;
	char uri[160], window[64], env[96];
	unsigned char *span;
	pthread_t th;
	pid_t d;
	int lfd, n;

	(void)state;
	lfd = store_and_socket("rs6", &ns, &ls, &th);
	window_arm("rs6", window, env);
	spawn_device = "sim:16M";
	spawn_env = env;
	d = spawn_live(ns.sun_path, lfd);
	snprintf(uri, sizeof(uri), "ugpud:%s", ls.sun_path);
	assert_int_equal(ugpu_context_create(NULL, &ctx), 0);
	assert_int_equal(ugpu_device_open(ctx, uri, &dev), 0);
	n = fill_vram(dev, bo, sizes, true);
	assert_int_equal(ugpu_vm_create(dev, &vo, &vm), 0);
	assert_int_equal(ugpu_queue_create(vm, NULL, &q), 0);
	/* a mapping of 64 KiB each (its range's size: the staging BOs stay
	 * small; bound BOs are busy while the VM's kernel runs), in a
	 * reservation the kernel placed (TSan refuses fixed addresses of
	 * our own choosing) */
	span = mmap(NULL, regions * gib, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		    -1, 0);
	assert_true(span != MAP_FAILED);
	for (size_t i = 0; i < regions; i++)
		assert_true(mmap(span + i * gib, touch, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == span + i * gib);
	for (size_t i = 0; i < regions; i++) {
		struct ugpu_kernel k = { .size = sizeof(k), .op = UGPU_KERNEL_READ_SUM,
					 .va = (uintptr_t)(span + i * gib), .bytes = touch };
		struct ugpu_kernel_result r = { .size = sizeof(r) };
		uint64_t fence = 0, sum = 0;

		for (size_t w = 0; w < touch / 8; w++) {
			((uint64_t *)(span + i * gib))[w] = i * 1000003u + w;
			sum += i * 1000003u + w;
		}
		assert_int_equal(ugpu_queue_submit(q, &k, &fence), 0);
		assert_int_equal(ugpu_fence_wait(q, fence, 10000, &r), 0);
		assert_int_equal(r.status, 0);
		assert_true(r.sum == sum);
	}
	window_check(window);
	assert_int_equal(fill_check(bo, sizes, n), -1);
	fprintf(stderr, "  %zu SVM regions a GiB apart faulted beside %d BOs of 64 KiB filling "
		"16 MiB of VRAM: no request opened a window\n", regions, n);
	munmap(span, regions * gib);
	assert_int_equal(ugpu_queue_destroy(q), 0);
	assert_int_equal(ugpu_vm_destroy(vm), 0);
	for (int i = 0; i < n; i++)
		ugpu_bo_put(bo[i]);
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	spawn_device = "sim:64M";
	spawn_env = NULL;
	stop_and_end(d, th, lfd, &ns, &ls);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(killed_under_load_and_restarted, teardown),
		cmocka_unit_test_teardown(fd_store_sleeps_in_d3hot, teardown),
		cmocka_unit_test_teardown(evictions_inside_requests, teardown),
		cmocka_unit_test_teardown(kill_inside_an_evicting_create, teardown),
		cmocka_unit_test_teardown(no_window_in_svm_maps, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
