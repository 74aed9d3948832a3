/* SPDX-License-Identifier: MIT */
/* One userfaultfd and its handler thread (see uffd.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "mm/uffd.h"
#include "base/clock.h"
#include "base/log.h"

#define UFFD_MSG_BATCH 32
#define UFFD_ZAPPERS 32

/*
 * struct uffd - immutable between create and destroy, apart from the
 * handler thread's own state.
 */
struct uffd {
	struct ugpu_context *ctx;
	char who[32];
	int fd;
	int stopfd;
	pthread_t thread;
	uint64_t features;
	bool user_mode_only; /* UFFD_USER_MODE_ONLY: kernel-mode accesses EFAULT */
	unsigned int tick_ms;
	const struct uffd_owner_ops *ops;
	void *owner;
	/* Reads started and reads whose messages were all handled (under
	 * @seq_lock): uffd_sync() waits for the second to catch up. */
	pthread_mutex_t seq_lock;
	pthread_cond_t seq_cond;
	uint64_t reads_started, reads_done;
	bool stopped;
	/* Held for writing by the handler thread across one read and the
	 * handling of its messages; for reading by uffd_events_hold()'s
	 * callers (a check and an ioctl that must not straddle an event's
	 * read and its handling). Never taken with the owner's locks held
	 * before it. Prefers the writer. */
	pthread_rwlock_t events_lock;
	/* > 0: the handler reads one message at a time (zaps under way);
	 * changed under @events_lock read-held, read with it write-held. */
	atomic_uint singly;
	/* Threads between uffd_zap_begin() and uffd_zap_returned(): the
	 * handler reads nothing until each is inside its call (under
	 * @seq_lock). */
	pid_t zappers[UFFD_ZAPPERS];
	bool zap_guard; /* /proc tells where a thread sleeps (set at create) */
	atomic_bool busy_logged;
};

/* Set on a handler thread: the calls that would wait for it can refuse. */
static _Thread_local const struct uffd *tls_handler;

bool uffd_on_handler(const struct uffd *u)
{
	return tls_handler == u;
}

/*
 * A userfaultfd, the best this process may have: /dev/userfaultfd is the
 * access-controlled way in (kernel >= 6.1); without it the syscall needs
 * CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1 for full faults; anyone
 * may have one that traps user-mode faults only (UFFD_USER_MODE_ONLY, Linux
 * 5.11). *@user_only says which.
 */
static int uffd_open(bool *user_only)
{
	int dev, fd;

	*user_only = false;
	/* what an ordinary user gets, on request (tests; trying it as root) */
	if (getenv("UGPU_UFFD_USER_MODE_ONLY"))
		goto user_mode_only;
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev >= 0) {
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
		close(dev);
		if (fd >= 0)
			return fd;
	}
	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd >= 0 || (errno != EPERM && errno != EACCES))
		return fd < 0 ? -errno : fd;
user_mode_only:
	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd < 0)
		return -errno;
	*user_only = true;
	return fd;
}

/* Said once per process: what a user-mode-only userfaultfd costs, and how
 * an administrator grants the full one. */
static void warn_user_mode_only(struct ugpu_context *ctx)
{
	static bool said;

	if (__atomic_exchange_n(&said, true, __ATOMIC_ACQ_REL))
		return;
	log_warn(ctx, "userfaultfd: user-mode faults only (no access to /dev/userfaultfd, vm.unprivileged_userfaultfd=0): "
		      "this program's own accesses to CPU mappings and shared virtual memory work, but the kernel's fail with EFAULT "
		      "(read(2)/write(2) with such memory as the buffer, another process's process_vm_readv as MPI shared-memory transports do). "
		      "Full access: add the user to group " UFFD_GROUP " (udev rule 70-ugpu-userfaultfd.rules; docs/cpu-mappings.md), "
		      "or sysctl vm.unprivileged_userfaultfd=1");
}

/* UFFDIO_API can be done once per fd, so ask on a throw-away one. */
int uffd_probe(uint64_t *features)
{
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	bool user_only;
	int fd = uffd_open(&user_only), ret = 0;

	if (fd < 0)
		return fd;
	if (ioctl(fd, UFFDIO_API, &api) < 0)
		ret = -errno;
	else
		*features = api.features;
	close(fd);
	return ret;
}

uint64_t uffd_features(const struct uffd *u)
{
	return u->features;
}

bool uffd_is_user_mode_only(const struct uffd *u)
{
	return u->user_mode_only;
}

int uffd_register(struct uffd *u, uintptr_t addr, size_t len, uint64_t mode)
{
	struct uffdio_register reg = {
		.range = { .start = addr, .len = len },
		.mode = mode,
	};

	return ioctl(u->fd, UFFDIO_REGISTER, &reg) < 0 ? -errno : 0;
}

int uffd_unregister(struct uffd *u, uintptr_t addr, size_t len)
{
	struct uffdio_range r = { .start = addr, .len = len };

	return ioctl(u->fd, UFFDIO_UNREGISTER, &r) < 0 ? -errno : 0;
}

void uffd_wake(struct uffd *u, uintptr_t addr, size_t len)
{
	struct uffdio_range r = { .start = addr, .len = len };

	if (ioctl(u->fd, UFFDIO_WAKE, &r) < 0 && errno != ENOENT)
		log_warn(u->ctx, "%s: UFFDIO_WAKE of %#lx+%zu failed: %d", u->who,
			 (unsigned long)addr, len, -errno);
}

int uffd_poison(struct uffd *u, uintptr_t addr, size_t len)
{
	struct uffdio_poison p = { .range = { .start = addr, .len = len } };

	if (!(u->features & UFFD_FEATURE_POISON))
		return -EOPNOTSUPP;
	return ioctl(u->fd, UFFDIO_POISON, &p) < 0 ? -errno : 0;
}

int uffd_copy(struct uffd *u, uintptr_t dst, const void *src, size_t len, bool wake)
{
	struct uffdio_copy c = { .dst = dst, .src = (uintptr_t)src, .len = len,
				 .mode = wake ? 0 : UFFDIO_COPY_MODE_DONTWAKE };

	while (ioctl(u->fd, UFFDIO_COPY, &c) < 0) {
		int err = -errno;

		/* A partial copy says how far it got: go on from there. */
		if (c.copy > 0 && (size_t)c.copy < c.len) {
			c.dst += (uint64_t)c.copy;
			c.src += (uint64_t)c.copy;
			c.len -= (uint64_t)c.copy;
			c.copy = 0;
			continue;
		}
		return err;
	}
	return 0;
}

int uffd_zeropage(struct uffd *u, uintptr_t dst, size_t len)
{
	struct uffdio_zeropage z = { .range = { .start = dst, .len = len } };

	return ioctl(u->fd, UFFDIO_ZEROPAGE, &z) < 0 ? -errno : 0;
}

int uffd_wp(struct uffd *u, uintptr_t addr, size_t len, bool on)
{
	struct uffdio_writeprotect w = { .range = { .start = addr, .len = len },
					 .mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0 };

	return ioctl(u->fd, UFFDIO_WRITEPROTECT, &w) < 0 ? -errno : 0;
}

int uffd_move(struct uffd *u, uintptr_t dst, uintptr_t src, size_t len, bool holes, size_t *moved)
{
	struct uffdio_move m = { .dst = dst, .src = src, .len = len,
				 .mode = UFFDIO_MOVE_MODE_DONTWAKE |
					 (holes ? UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES : 0) };
	int ret = 0;

	if (!(u->features & UFFD_FEATURE_MOVE))
		return -EOPNOTSUPP;
	while (ioctl(u->fd, UFFDIO_MOVE, &m) < 0) {
		ret = -errno;
		if (m.move > 0 && (size_t)m.move < m.len) {
			/* Part of it moved: go on with the rest. */
			if (moved)
				*moved += (size_t)m.move;
			m.dst += (uint64_t)m.move;
			m.src += (uint64_t)m.move;
			m.len -= (uint64_t)m.move;
			m.move = 0;
			ret = 0;
			continue;
		}
		return ret;
	}
	if (moved)
		*moved += (size_t)m.move;
	return 0;
}

uintptr_t uffd_placeholder(struct uffd *u, size_t size, int *err)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		       -1, 0);

	if (p == MAP_FAILED) {
		*err = -errno;
		return 0;
	}
	/* MADV_DONTFORK before registering: a fork in between must not
	 * give the child a registered range nobody serves. */
	if (madvise(p, size, MADV_DONTFORK) < 0) {
		*err = -errno;
		goto out_unmap;
	}
	*err = uffd_register(u, (uintptr_t)p, size, UFFDIO_REGISTER_MODE_MISSING);
	if (*err < 0)
		goto out_unmap;
	return (uintptr_t)p;

out_unmap:
	munmap(p, size);
	return 0;
}

/* ---- the handler thread ------------------------------------------------------ */

/* Read /proc/self/task/@tid/@what into @buf: its length, or -1. */
static ssize_t task_file(pid_t tid, const char *what, char *buf, size_t size)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/self/task/%d/%s", (int)tid, what);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = 0;
	return n;
}

enum zap_state uffd_zapper_state(pid_t tid)
{
	char buf[128];

	if (task_file(tid, "syscall", buf, sizeof(buf)) <= 0)
		return ZAPPER_UNKNOWN;
	if (buf[0] == 'r' || strtol(buf, NULL, 10) != SYS_madvise)
		return ZAPPER_OUTSIDE; /* running, or not (yet) in its madvise */
	/* asleep in its madvise: on an event (its own REMOVE, or a repeat
	 * one after a split) or on the mmap lock */
	if (task_file(tid, "wchan", buf, sizeof(buf)) > 0 && strstr(buf, "userfaultfd"))
		return ZAPPER_EVENT_WAIT;
	return ZAPPER_ASLEEP;
}

/*
 * Before a read: wait until every zapper (uffd_zap_begin()) is asleep in its
 * madvise (it has looked the address up then: it waits for its event, or
 * for the mmap lock behind an unmap that will find nothing there after) or
 * has returned. Reading earlier could let an unmapping thread go on to map
 * and fill new memory that the madvise, still on its way in, then zaps
 * (svm/migrate.c). Asleep in it is not proof that it looked the address up
 * (it may wait for the mmap lock at its start, behind a writer); it is the
 * best /proc tells. Bounded (20 ms): a zapper's path to its madvise waits
 * for nothing of ours, but a preempted zapper must not stall every fault.
 */
static void wait_zappers_inside(struct uffd *u)
{
	uint64_t deadline = 0;

	/* no zap under way (zappers register with @singly raised, under the
	 * event lock we hold): nothing to look at, no lock taken per read */
	if (!atomic_load(&u->singly))
		return;
	for (;;) {
		pid_t tids[UFFD_ZAPPERS];
		size_t n = 0, i;
		bool outside = false;

		pthread_mutex_lock(&u->seq_lock);
		for (i = 0; i < UFFD_ZAPPERS; i++)
			if (u->zappers[i])
				tids[n++] = u->zappers[i];
		pthread_mutex_unlock(&u->seq_lock);
		for (i = 0; i < n && !outside; i++)
			outside = uffd_zapper_state(tids[i]) == ZAPPER_OUTSIDE;
		if (!outside)
			return;
		if (!deadline) {
			deadline = now_ns() + 20000000ull;
		} else if (now_ns() >= deadline) {
			log_warn(u->ctx, "%s: a zapping thread took over 20 ms to reach its madvise: reading on", u->who);
			return;
		}
		{
			struct timespec ts = { .tv_nsec = 20000 };

			nanosleep(&ts, NULL);
		}
	}
}

/* One read's messages are all handled (or none came). */
static void read_done(struct uffd *u, uint64_t seq)
{
	pthread_mutex_lock(&u->seq_lock);
	u->reads_done = seq;
	pthread_cond_broadcast(&u->seq_cond);
	pthread_mutex_unlock(&u->seq_lock);
}

static void drain(struct uffd *u)
{
	struct uffd_msg msgs[UFFD_MSG_BATCH];

	for (;;) {
		ssize_t n;
		uint64_t seq;
		size_t i, want;

		/* Counted before the read: a thread the read releases (an
		 * unmapping thread waits for its event to be read) and that
		 * then calls uffd_sync() waits for these messages' handling. */
		pthread_mutex_lock(&u->seq_lock);
		seq = ++u->reads_started;
		pthread_mutex_unlock(&u->seq_lock);
		pthread_rwlock_wrlock(&u->events_lock);
		wait_zappers_inside(u);
		want = atomic_load(&u->singly) ? sizeof(msgs[0]) : sizeof(msgs);
		n = read(u->fd, msgs, want);
		if (n < 0) {
			pthread_rwlock_unlock(&u->events_lock);
			read_done(u, seq);
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				log_err(u->ctx, "%s: reading the userfaultfd failed: %d", u->who, -errno);
			return;
		}
		for (i = 0; i < (size_t)n / sizeof(msgs[0]); i++)
			u->ops->msg(u->owner, &msgs[i]);
		pthread_rwlock_unlock(&u->events_lock);
		read_done(u, seq);
		if ((size_t)n < want)
			return;
	}
}

void uffd_events_hold(struct uffd *u)
{
	if (u && !uffd_on_handler(u))
		pthread_rwlock_rdlock(&u->events_lock);
}

void uffd_events_release(struct uffd *u)
{
	if (u && !uffd_on_handler(u))
		pthread_rwlock_unlock(&u->events_lock);
}

int uffd_zap_begin(struct uffd *u)
{
	pid_t me = gettid();
	int ret = -EBUSY;
	size_t i;

	if (!u->zap_guard)
		return -EOPNOTSUPP;
	pthread_mutex_lock(&u->seq_lock);
	for (i = 0; i < UFFD_ZAPPERS; i++)
		if (!u->zappers[i]) {
			u->zappers[i] = me;
			ret = 0;
			break;
		}
	pthread_mutex_unlock(&u->seq_lock);
	if (!ret)
		atomic_fetch_add(&u->singly, 1);
	else if (!atomic_exchange(&u->busy_logged, true))
		log_warn(u->ctx, "%s: more than %d threads zap at once: the rest go without the guard against a racing unmap (logged once)",
			 u->who, UFFD_ZAPPERS);
	return ret;
}

void uffd_zap_returned(struct uffd *u)
{
	pid_t me = gettid();
	size_t i;

	pthread_mutex_lock(&u->seq_lock);
	for (i = 0; i < UFFD_ZAPPERS; i++)
		if (u->zappers[i] == me)
			u->zappers[i] = 0;
	pthread_mutex_unlock(&u->seq_lock);
}

void uffd_zap_end(struct uffd *u)
{
	atomic_fetch_sub(&u->singly, 1);
}

void uffd_sync(struct uffd *u)
{
	uint64_t seq;

	if (!u || uffd_on_handler(u))
		return;
	pthread_mutex_lock(&u->seq_lock);
	seq = u->reads_started;
	while (u->reads_done < seq && !u->stopped)
		pthread_cond_wait(&u->seq_cond, &u->seq_lock);
	pthread_mutex_unlock(&u->seq_lock);
}

static void *handler_main(void *arg)
{
	struct uffd *u = arg;
	uint64_t next_tick = 0;

	tls_handler = u;
	for (;;) {
		struct pollfd pfd[2] = {
			{ .fd = u->fd, .events = POLLIN },
			{ .fd = u->stopfd, .events = POLLIN },
		};
		int n = poll(pfd, 2, (int)u->tick_ms);

		if (n < 0 && errno != EINTR) {
			log_err(u->ctx, "%s: poll on the userfaultfd failed: %d", u->who, -errno);
			break;
		}
		if (n > 0 && pfd[1].revents)
			break;
		if (n > 0 && (pfd[0].revents & POLLIN))
			drain(u);
		if (n > 0 && (pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL))) {
			log_err(u->ctx, "%s: userfaultfd reported an error (revents %#x)", u->who,
				pfd[0].revents);
			break;
		}
		/* Once a tick, not after every message: a tick may lock every
		 * object, and right after a fault's wake that delays the woken
		 * thread when both share a CPU. */
		if (u->ops->tick && now_ns() >= next_tick) {
			u->ops->tick(u->owner);
			next_tick = now_ns() + (uint64_t)u->tick_ms * 1000000ull;
		}
	}
	return NULL;
}

int uffd_create(struct ugpu_context *ctx, const char *who, uint64_t need, uint64_t want,
		const struct uffd_owner_ops *ops, void *owner, unsigned int tick_ms,
		struct uffd **out)
{
	struct uffdio_api api = { .api = UFFD_API };
	uint64_t avail = 0;
	struct uffd *u;
	int ret;

	ret = uffd_probe(&avail);
	if (ret < 0) {
		log_err(ctx, "%s: no usable userfaultfd (%d), not even one for user-mode faults (Linux >= 5.11): need access to /dev/userfaultfd (group " UFFD_GROUP ") or vm.unprivileged_userfaultfd=1",
			who, ret);
		return ret;
	}
	if ((avail & need) != need) {
		log_err(ctx, "%s: the kernel's userfaultfd lacks features %#llx (has %#llx)", who,
			(unsigned long long)(need & ~avail), (unsigned long long)avail);
		return -EOPNOTSUPP;
	}
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->ctx = ctx;
	snprintf(u->who, sizeof(u->who), "%s", who);
	u->features = need | (want & avail);
	u->tick_ms = tick_ms ? tick_ms : 1000;
	u->ops = ops;
	u->owner = owner;
	pthread_mutex_init(&u->seq_lock, NULL);
	pthread_cond_init(&u->seq_cond, NULL);
	{
		pthread_rwlockattr_t ra;

		pthread_rwlockattr_init(&ra);
		pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
		pthread_rwlock_init(&u->events_lock, &ra);
		pthread_rwlockattr_destroy(&ra);
	}
	u->fd = uffd_open(&u->user_mode_only);
	if (u->fd < 0) {
		ret = u->fd;
		log_err(ctx, "%s: opening a userfaultfd failed: %d", who, ret);
		goto out_free;
	}
	if (u->user_mode_only)
		warn_user_mode_only(ctx);
	api.features = u->features;
	if (ioctl(u->fd, UFFDIO_API, &api) < 0) {
		ret = -errno;
		log_err(ctx, "%s: UFFDIO_API with features %#llx failed: %d", who,
			(unsigned long long)u->features, ret);
		goto out_close_fd;
	}
	/* our own thread runs: /proc must say so, or it tells nothing */
	u->zap_guard = uffd_zapper_state(gettid()) == ZAPPER_OUTSIDE;
	if (!u->zap_guard)
		log_info(ctx, "%s: /proc/self/task/*/syscall is not readable: a process's unmap racing a zap of memory moved to VRAM without UFFDIO_MOVE is not guarded against (docs/svm.md)",
			 who);
	u->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (u->stopfd < 0) {
		ret = -errno;
		goto out_close_fd;
	}
	ret = -pthread_create(&u->thread, NULL, handler_main, u);
	if (ret) {
		log_err(ctx, "%s: starting the fault handler thread failed: %d", who, ret);
		goto out_close_stop;
	}
	*out = u;
	return 0;

out_close_stop:
	close(u->stopfd);
out_close_fd:
	close(u->fd);
out_free:
	pthread_rwlock_destroy(&u->events_lock);
	pthread_cond_destroy(&u->seq_cond);
	pthread_mutex_destroy(&u->seq_lock);
	free(u);
	return ret;
}

void uffd_destroy(struct uffd *u)
{
	uint64_t one = 1;

	if (!u)
		return;
	if (uffd_on_handler(u)) {
		log_err(u->ctx, "%s: destroyed from its own handler thread; leaked", u->who);
		return;
	}
	if (write(u->stopfd, &one, sizeof(one)) != sizeof(one))
		log_err(u->ctx, "%s: waking the handler thread to stop failed: %d", u->who, -errno);
	pthread_join(u->thread, NULL);
	pthread_mutex_lock(&u->seq_lock);
	u->stopped = true;
	pthread_cond_broadcast(&u->seq_cond);
	pthread_mutex_unlock(&u->seq_lock);
	close(u->stopfd);
	close(u->fd);
	pthread_rwlock_destroy(&u->events_lock);
	pthread_cond_destroy(&u->seq_cond);
	pthread_mutex_destroy(&u->seq_lock);
	free(u);
}
