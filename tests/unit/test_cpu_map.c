/* SPDX-License-Identifier: MIT */
/*
 * mm/cpu_map: CPU mappings that follow an object across moves, with plain
 * memfds standing in for VRAM and system memory.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/userfaultfd.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "mm/cpu_map.h"

#define PAGE 4096u

/* A fake owner: its placement is one fd (+ offset); a test "moves" it. */
struct owner {
	int fd;
	uint64_t fd_offset;
	int fail;                   /* resolve returns this when < 0 */
	unsigned int begin_delay_ms;
	_Atomic(struct cpu_map *) self; /* for the re-entrancy check */
	atomic_int begins, ends, resolves;
	atomic_int reentry_ret;     /* what cpu_map_invalidate said from a hook */
	atomic_int in_begin;
};

static int owner_resolve(void *o, uint64_t offset, struct cpu_map_extent *ext)
{
	struct owner *ow = o;

	atomic_fetch_add(&ow->resolves, 1);
	if (ow->fail < 0)
		return ow->fail;
	ext->fd = ow->fd;
	ext->fd_offset = ow->fd_offset + offset;
	ext->len = UINT64_MAX / 2; /* the rest of the object */
	return 0;
}

static int owner_begin(void *o)
{
	struct owner *ow = o;
	struct cpu_map *self = atomic_load(&ow->self);

	atomic_fetch_add(&ow->begins, 1);
	if (self)
		atomic_store(&ow->reentry_ret, cpu_map_invalidate(self));
	atomic_store(&ow->in_begin, 1);
	if (ow->begin_delay_ms)
		usleep(ow->begin_delay_ms * 1000u);
	atomic_store(&ow->in_begin, 0);
	return 0;
}

static void owner_end(void *o)
{
	atomic_fetch_add(&((struct owner *)o)->ends, 1);
}

static const struct cpu_map_owner_ops plain_ops = { .resolve = owner_resolve };
static const struct cpu_map_owner_ops hooked_ops = {
	.resolve = owner_resolve, .fault_begin = owner_begin, .fault_end = owner_end,
};

static int memfd_new(size_t size)
{
	int fd = memfd_create("test-cpu-map", MFD_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	return fd;
}

static void fd_fill(int fd, size_t size, uint8_t seed)
{
	uint8_t *buf = malloc(size);
	size_t i;

	assert_non_null(buf);
	for (i = 0; i < size; i++)
		buf[i] = (uint8_t)(seed + i * 7 + i / PAGE);
	assert_int_equal(pwrite(fd, buf, size, 0), (ssize_t)size);
	free(buf);
}

static void fd_copy(int dst, int src, size_t size)
{
	uint8_t *buf = malloc(size);

	assert_non_null(buf);
	assert_int_equal(pread(src, buf, size, 0), (ssize_t)size);
	assert_int_equal(pwrite(dst, buf, size, 0), (ssize_t)size);
	free(buf);
}

static void assert_mem_eq_fd(const void *mem, int fd, size_t size)
{
	uint8_t *buf = malloc(size);

	assert_non_null(buf);
	assert_int_equal(pread(fd, buf, size, 0), (ssize_t)size);
	assert_memory_equal(mem, buf, size);
	free(buf);
}

static uint64_t ms_since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (uint64_t)(t1.tv_sec - t0->tv_sec) * 1000u +
	       (uint64_t)((t1.tv_nsec - t0->tv_nsec) / 1000000);
}

static struct cpu_map_mgr *mgr_new_opts(unsigned int block_timeout_ms, bool release_by_invalidate)
{
	struct cpu_map_mgr_opts opts = {
		.size = sizeof(opts),
		.block_timeout_ms = block_timeout_ms,
		.release_by_invalidate = release_by_invalidate,
	};
	struct cpu_map_mgr *mgr = NULL;
	int ret = cpu_map_mgr_create(NULL, &opts, &mgr);

	if (ret == -EPERM || ret == -ENOSYS || ret == -EOPNOTSUPP) {
		fprintf(stderr, "no usable userfaultfd with EVENT_REMAP (%d)\n", ret);
		exit(77);
	}
	assert_int_equal(ret, 0);
	return mgr;
}

static struct cpu_map_mgr *mgr_new(unsigned int block_timeout_ms)
{
	return mgr_new_opts(block_timeout_ms, false);
}

/*
 * A test of what a syscall touching a map does (the kernel's access faults
 * and waits like the CPU's) needs the full userfaultfd. An ordinary user's
 * process has the user-mode-only one (mm/uffd.h), where such a syscall gets
 * EFAULT at once: test_user_mode_only specifies that. Skips (destroying
 * @mgr) when @mgr has the user-mode-only one.
 */
static void need_kernel_faults(struct cpu_map_mgr *mgr)
{
	struct cpu_map_stats st;

	cpu_map_mgr_stats(mgr, &st);
	if (!st.user_mode_only)
		return;
	print_message("skipped: kernel-mode faults need the full userfaultfd; this process has the user-mode-only one (not root, no /dev/userfaultfd access)\n");
	cpu_map_mgr_destroy(mgr);
	skip();
}

static void test_args(void **state)
{
	struct cpu_map_mgr *mgr = mgr_new(0);
	struct cpu_map_owner_ops no_resolve = { 0 };
	struct cpu_map_owner_ops half_hooks = { .resolve = owner_resolve, .fault_begin = owner_begin };
	struct owner ow = { .fd = -1 };
	struct cpu_map *map;
	void *addr;

	(void)state;
	assert_int_equal(cpu_map_create(mgr, &no_resolve, &ow, PAGE, "x", &map, &addr), -EINVAL);
	assert_int_equal(cpu_map_create(mgr, &half_hooks, &ow, PAGE, "x", &map, &addr), -EINVAL);
	assert_int_equal(cpu_map_create(mgr, &plain_ops, &ow, 0, "x", &map, &addr), -EINVAL);
	assert_int_equal(cpu_map_create(mgr, &plain_ops, &ow, 100, "x", &map, &addr), 0);
	assert_int_equal(cpu_map_unblock(map), -EINVAL);
	/* nothing mapped yet: invalidate and release are no-ops */
	assert_int_equal(cpu_map_invalidate(map), 0);
	assert_int_equal(cpu_map_release(map), 0);
	assert_int_equal(cpu_map_release(NULL), -EINVAL);
	assert_int_equal(cpu_map_destroy(map), 0);
	cpu_map_mgr_destroy(mgr);
}

/* Write and read through the mapping land byte-exact in the backing. */
static void test_map_read_write(void **state)
{
	const size_t size = 5 * PAGE;
	struct cpu_map_mgr *mgr = mgr_new(0);
	struct owner ow = { 0 };
	struct cpu_map_info info;
	struct cpu_map_stats st;
	struct cpu_map *map;
	uint8_t *p;
	size_t i;

	(void)state;
	ow.fd = memfd_new(size);
	fd_fill(ow.fd, size, 3);
	assert_int_equal(cpu_map_create(mgr, &plain_ops, &ow, size, "bo-a", &map, (void **)&p), 0);
	cpu_map_query(map, &info);
	assert_int_equal(info.state, CPU_MAP_UNMAPPED);
	assert_int_equal(info.size, size);

	assert_mem_eq_fd(p, ow.fd, size);
	for (i = 0; i < size; i += 97)
		p[i] = (uint8_t)~p[i];
	assert_mem_eq_fd(p, ow.fd, size);

	cpu_map_query(map, &info);
	assert_int_equal(info.state, CPU_MAP_MAPPED);
	assert_int_equal(info.faults, 1); /* whole object mapped on first touch */
	cpu_map_mgr_stats(mgr, &st);
	assert_int_equal(st.maps, 1);
	assert_int_equal(st.mapped_bytes, size);
	assert_int_equal(st.faults, 1);

	assert_int_equal(cpu_map_destroy(map), 0);
	cpu_map_mgr_stats(mgr, &st);
	assert_int_equal(st.maps, 0);
	assert_int_equal(st.mapped_bytes, 0);
	close(ow.fd);
	cpu_map_mgr_destroy(mgr);
}

/* A move: block, copy A->B, switch, unblock; the range then is B. */
static void test_move(void **state)
{
	const size_t size = 3 * PAGE;
	struct cpu_map_mgr *mgr = mgr_new(0);
	struct owner ow = { 0 };
	struct cpu_map_info info;
	struct cpu_map_stats st;
	struct cpu_map *map;
	uint8_t *p, a0;
	int fd_a, fd_b, fd_c;

	(void)state;
	fd_a = memfd_new(size);
	fd_b = memfd_new(size);
	fd_c = memfd_new(2 * size);
	fd_fill(fd_a, size, 1);
	ow.fd = fd_a;
	assert_int_equal(cpu_map_create(mgr, &plain_ops, &ow, size, "bo-move", &map, (void **)&p), 0);
	p[10] = 0x5a;
	assert_int_equal(pread(fd_a, &a0, 1, 10), 1);
	assert_int_equal(a0, 0x5a);

	assert_int_equal(cpu_map_block(map), 0);
	cpu_map_query(map, &info);
	assert_int_equal(info.state, CPU_MAP_UNMAPPED);
	assert_int_equal(info.blocked, 1);
	fd_copy(fd_b, fd_a, size);
	ow.fd = fd_b;
	assert_int_equal(cpu_map_unblock(map), 0);

	assert_mem_eq_fd(p, fd_b, size);
	p[20] = 0xa5;
	assert_int_equal(pread(fd_b, &a0, 1, 20), 1);
	assert_int_equal(a0, 0xa5);
	assert_int_equal(pread(fd_a, &a0, 1, 20), 1);
	assert_int_not_equal(a0, 0xa5); /* the old backing is not reached */

	/* Into the middle of a bigger "VRAM" file at a page-aligned offset;
	 * the placement changes only while blocked (the contract). */
	fd_fill(fd_c, 2 * size, 9);
	assert_int_equal(cpu_map_block(map), 0);
	ow.fd = fd_c;
	ow.fd_offset = PAGE;
	assert_int_equal(cpu_map_unblock(map), 0);
	/* a plain invalidate: the next touch re-resolves the same backing */
	assert_int_equal(cpu_map_invalidate(map), 0);
	{
		uint8_t *want = malloc(size);

		assert_non_null(want);
		assert_int_equal(pread(fd_c, want, size, PAGE), (ssize_t)size);
		assert_memory_equal(p, want, size);
		free(want);
	}
	cpu_map_query(map, &info);
	/* block+unblock with no touch in between: the second block had
	 * nothing mapped, so only 2 of 3 invalidations replaced a mapping */
	assert_int_equal(info.invalidations, 2);
	assert_int_equal(info.faults, 3);
	cpu_map_mgr_stats(mgr, &st);
	assert_int_equal(st.remap_events, 2);
	assert_int_equal(cpu_map_destroy(map), 0);
	close(fd_a);
	close(fd_b);
	close(fd_c);
	cpu_map_mgr_destroy(mgr);
}

/*
 * The zero-page race. Writers store increasing values into their own slot
 * and re-read it every time; the main thread moves the object thousands of
 * times. A store landing on a throw-away page shows up as a re-read that
 * goes back in time, or as a final backing missing the last store.
 */
#define RACE_WRITERS 4
#define RACE_PAGES 4

struct race_writer {
	pthread_t thread;
	volatile uint64_t *slot;
	atomic_bool *stop;
	uint64_t last;
	uint64_t bad;       /* re-reads that did not return the last store */
	uint64_t bad_seen;
};

static void *race_writer_main(void *arg)
{
	struct race_writer *w = arg;
	uint64_t v = 0;

	while (!atomic_load_explicit(w->stop, memory_order_relaxed)) {
		uint64_t r;

		*w->slot = ++v;
		r = *w->slot;
		if (r != v) {
			if (!w->bad++)
				w->bad_seen = r;
			v = r; /* keep going from what the memory says */
		}
	}
	w->last = v;
	return NULL;
}

/* Start RACE_WRITERS writers, each on its own slot of the range at @p. */
/* Let the writers map and store into the current backing, so every move
 * races with live stores: back once @map has faulted more than @cycles
 * times (bounded: about 50 ms). */
static void wait_writers_faulted(struct cpu_map *map, unsigned int cycles)
{
	struct cpu_map_info info;

	for (unsigned int spins = 0; spins < 50000; spins++) {
		cpu_map_query(map, &info);
		if (info.faults > cycles)
			return;
		sched_yield();
	}
}

static void race_writers_start(struct race_writer *w, uint8_t *p, atomic_bool *stop)
{
	unsigned int i;

	for (i = 0; i < RACE_WRITERS; i++) {
		w[i] = (struct race_writer){ .stop = stop };
		w[i].slot = (volatile uint64_t *)(p + (i % RACE_PAGES) * PAGE + (i / RACE_PAGES) * 64);
		assert_int_equal(pthread_create(&w[i].thread, NULL, race_writer_main, &w[i]), 0);
	}
}

/* Stop them; every writer's last store must be in @fd, none lost on the way. */
static void race_writers_stop_check(struct race_writer *w, atomic_bool *stop, int fd)
{
	unsigned int i;

	atomic_store(stop, true);
	for (i = 0; i < RACE_WRITERS; i++)
		assert_int_equal(pthread_join(w[i].thread, NULL), 0);
	for (i = 0; i < RACE_WRITERS; i++) {
		uint64_t final;
		off_t off = (off_t)((i % RACE_PAGES) * PAGE + (i / RACE_PAGES) * 64);

		assert_int_equal(pread(fd, &final, sizeof(final), off), (ssize_t)sizeof(final));
		if (w[i].bad || final != w[i].last)
			fail_msg("writer %u: %llu lost stores (first re-read %llu), last %llu, backing has %llu",
				 i, (unsigned long long)w[i].bad, (unsigned long long)w[i].bad_seen,
				 (unsigned long long)w[i].last, (unsigned long long)final);
		assert_true(w[i].last > 0);
	}
}

static void test_race_move_vs_writes(void **state)
{
	const size_t size = RACE_PAGES * PAGE;
	struct cpu_map_mgr *mgr = mgr_new(0);
	struct race_writer w[RACE_WRITERS];
	struct owner ow = { 0 };
	struct cpu_map_stats st;
	struct cpu_map *map;
	struct timespec t0;
	atomic_bool stop = false;
	uint8_t *p;
	unsigned int cycles = 0;

	(void)state;
	ow.fd = memfd_new(size);
	assert_int_equal(cpu_map_create(mgr, &plain_ops, &ow, size, "bo-race", &map, (void **)&p), 0);
	race_writers_start(w, p, &stop);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* thousands of moves, capped in time for slow (sanitizer) builds */
	while (cycles < 3000 && ms_since(&t0) < 6000) {
		int nfd = memfd_new(size), old = ow.fd;

		wait_writers_faulted(map, cycles);
		assert_int_equal(cpu_map_block(map), 0);
		fd_copy(nfd, old, size);
		ow.fd = nfd;
		assert_int_equal(cpu_map_unblock(map), 0);
		close(old);
		cycles++;
	}
	race_writers_stop_check(w, &stop, ow.fd);
	cpu_map_mgr_stats(mgr, &st);
	print_message("race: %u moves, %llu faults, %llu parked, %llu stale\n", cycles,
		      (unsigned long long)st.faults, (unsigned long long)st.parked_faults,
		      (unsigned long long)st.stale_faults);
	assert_true(cycles >= 200);
	assert_true(st.faults > 0);
	assert_int_equal(st.errors, 0);
	assert_int_equal(cpu_map_destroy(map), 0);
	close(ow.fd);
	cpu_map_mgr_destroy(mgr);
}

/* Many threads fault on many objects at once while they are invalidated. */
#define MANY_OBJS 16
#define MANY_THREADS 6

struct many {
	uint8_t *addr[MANY_OBJS];
	int fd[MANY_OBJS];
	atomic_int bad;
	atomic_bool stop;
};

static void *many_reader(void *arg)
{
	struct many *m = arg;
	unsigned int round = 0, o;

	while (!atomic_load(&m->stop) || round < 3) {
		for (o = 0; o < MANY_OBJS; o++) {
			size_t pg = (round + o) % 4;
			uint8_t want = (uint8_t)(o * 13 + pg * PAGE * 7 + pg);

			/* fd_fill's pattern, byte 0 of each page */
			if (m->addr[o][pg * PAGE] != want)
				atomic_fetch_add(&m->bad, 1);
		}
		round++;
	}
	return NULL;
}

static void test_many_threads_many_objects(void **state)
{
	struct cpu_map_mgr *mgr = mgr_new(0);
	struct owner ow[MANY_OBJS];
	struct cpu_map *map[MANY_OBJS];
	pthread_t th[MANY_THREADS];
	struct cpu_map_stats st;
	struct many m = { 0 };
	unsigned int i, o, k;

	(void)state;
	for (o = 0; o < MANY_OBJS; o++) {
		ow[o] = (struct owner){ .fd = memfd_new(4 * PAGE) };
		fd_fill(ow[o].fd, 4 * PAGE, (uint8_t)(o * 13));
		assert_int_equal(cpu_map_create(mgr, &plain_ops, &ow[o], 4 * PAGE, "bo-many",
						&map[o], (void **)&m.addr[o]),
				 0);
	}
	for (i = 0; i < MANY_THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, many_reader, &m), 0);
	for (k = 0; k < 50; k++)
		for (o = 0; o < MANY_OBJS; o++)
			assert_int_equal(cpu_map_invalidate(map[o]), 0);
	atomic_store(&m.stop, true);
	for (i = 0; i < MANY_THREADS; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(atomic_load(&m.bad), 0);
	cpu_map_mgr_stats(mgr, &st);
	assert_int_equal(st.errors, 0);
	assert_true(st.faults >= MANY_OBJS);
	for (o = 0; o < MANY_OBJS; o++) {
		assert_int_equal(cpu_map_destroy(map[o]), 0);
		close(ow[o].fd);
	}
	cpu_map_mgr_destroy(mgr);
}

/*
 * Failure paths that deliver a signal run in a child, which reports what it
 * saw through its exit code. A bounded wait in the parent turns a hang into
 * a failure.
 */
static volatile uintptr_t child_lo, child_hi;

static void child_sig(int sig, siginfo_t *si, void *uc)
{
	uintptr_t a = (uintptr_t)si->si_addr;

	(void)uc;
	_exit(a >= child_lo && a < child_hi ? (sig == SIGBUS ? 40 : 41) : 42);
}

static void child_catch(void *addr, size_t size)
{
	struct sigaction sa = { .sa_sigaction = child_sig, .sa_flags = SA_SIGINFO };

	child_lo = (uintptr_t)addr;
	child_hi = child_lo + size;
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);
}

static int run_child(void (*fn)(void), unsigned int timeout_ms)
{
	struct timespec t0;
	pid_t pid;
	int status;

	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (!pid) {
		fn();
		_exit(1); /* fn returned: no signal came */
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		assert_true(r >= 0);
		if (r == pid)
			break;
		if (ms_since(&t0) > timeout_ms) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			fail_msg("child hung for %u ms", timeout_ms);
		}
		usleep(2000);
	}
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void *touch_main(void *arg)
{
	volatile uint8_t *p = arg;

	p[PAGE + 1] = 7;
	return NULL;
}

/* A thread waits in a fault on a blocked map; destroy must not leave it
 * asleep: it gets SIGSEGV. */
static void child_destroy_parked(void)
{
	struct cpu_map_mgr *mgr = mgr_new(0);
	struct owner ow = { 0 };
	struct cpu_map_info info;
	struct cpu_map *map;
	pthread_t th;
	void *p;
	int i;

	ow.fd = memfd_new(2 * PAGE);
	if (cpu_map_create(mgr, &plain_ops, &ow, 2 * PAGE, "bo-destroy", &map, &p) ||
	    cpu_map_block(map))
		_exit(2);
	child_catch(p, 2 * PAGE);
	pthread_create(&th, NULL, touch_main, p);
	for (i = 0; i < 2000; i++) {
		cpu_map_query(map, &info);
		if (info.parked)
			break;
		usleep(1000);
	}
	if (!info.parked)
		_exit(3);
	cpu_map_destroy(map);
	pthread_join(th, NULL);
}

static void test_destroy_with_parked_fault(void **state)
{
	(void)state;
	assert_int_equal(run_child(child_destroy_parked, 10000), 41); /* SIGSEGV in range */
}

/* The handler is inside fault_begin when the map is destroyed: destroy
 * waits for the hook pair to finish; the faulting thread gets SIGSEGV. */
static struct owner slow_owner;

static void child_destroy_inflight(void)
{
	struct cpu_map_mgr *mgr = mgr_new(0);
	struct timespec t0;
	struct cpu_map *map;
	pthread_t th;
	void *p;
	int i;

	slow_owner.fd = memfd_new(2 * PAGE);
	slow_owner.begin_delay_ms = 300;
	if (cpu_map_create(mgr, &hooked_ops, &slow_owner, 2 * PAGE, "bo-inflight", &map, &p))
		_exit(2);
	child_catch(p, 2 * PAGE);
	pthread_create(&th, NULL, touch_main, p);
	for (i = 0; i < 2000 && !atomic_load(&slow_owner.in_begin); i++)
		usleep(1000);
	if (!atomic_load(&slow_owner.in_begin))
		_exit(3);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	cpu_map_destroy(map);
	if (atomic_load(&slow_owner.ends) != atomic_load(&slow_owner.begins))
		_exit(4); /* a hook would run after destroy returned */
	if (ms_since(&t0) < 100)
		_exit(5); /* did not wait for the hook */
	pthread_join(th, NULL);
}

static void test_destroy_with_inflight_fault(void **state)
{
	(void)state;
	assert_int_equal(run_child(child_destroy_inflight, 10000), 41);
}

/* resolve fails: the faulting thread gets SIGBUS at the address. */
static void child_resolve_fails(void)
{
	struct cpu_map_mgr *mgr = mgr_new(0);
	struct owner ow = { .fd = -1, .fail = -ENODEV };
	struct cpu_map *map;
	pthread_t th;
	void *p;

	if (cpu_map_create(mgr, &plain_ops, &ow, 2 * PAGE, "bo-lost", &map, &p))
		_exit(2);
	child_catch(p, 2 * PAGE);
	pthread_create(&th, NULL, touch_main, p);
	pthread_join(th, NULL);
}

static void test_resolve_failure_sigbus(void **state)
{
	struct cpu_map_mgr *mgr = mgr_new(0);
	struct cpu_map_stats st;

	(void)state;
	cpu_map_mgr_stats(mgr, &st);
	cpu_map_mgr_destroy(mgr);
	/* SIGBUS needs UFFDIO_POISON; without it the fallback is a read-only
	 * zero page, so a store gets SIGSEGV. Either way: loud, in range. */
	assert_int_equal(run_child(child_resolve_fails, 10000),
			 (st.features & (1u << 14)) ? 40 : 41);
}

/*
 * The same failure seen from the kernel side (a syscall reading the range
 * gets EFAULT, no signal), then recovery: the owner restores a backing and
 * invalidates; the next access works.
 */
static void test_resolve_failure_recovers(void **state)
{
	const size_t size = 2 * PAGE;
	struct cpu_map_mgr *mgr = mgr_new(0);
	struct owner ow = { .fd = -1, .fail = -ENODEV };
	struct cpu_map_info info;
	struct cpu_map_stats st;
	struct cpu_map *map;
	uint8_t *p;
	int sink = memfd_new(size);

	(void)state;
	need_kernel_faults(mgr);
	assert_int_equal(cpu_map_create(mgr, &plain_ops, &ow, size, "bo-lost", &map, (void **)&p), 0);
	errno = 0;
	assert_int_equal(pwrite(sink, p, size, 0), -1);
	assert_int_equal(errno, EFAULT);
	cpu_map_query(map, &info);
	assert_int_equal(info.state, CPU_MAP_ERROR);
	cpu_map_mgr_stats(mgr, &st);
	assert_int_equal(st.errors, 1);

	ow.fd = memfd_new(size);
	fd_fill(ow.fd, size, 77);
	ow.fail = 0;
	assert_int_equal(cpu_map_invalidate(map), 0);
	cpu_map_query(map, &info);
	assert_int_equal(info.state, CPU_MAP_UNMAPPED);
	assert_mem_eq_fd(p, ow.fd, size);
	assert_int_equal(cpu_map_destroy(map), 0);
	close(ow.fd);
	close(sink);
	cpu_map_mgr_destroy(mgr);
}

/*
 * What an ordinary user gets (UGPU_UFFD_USER_MODE_ONLY asks for it as root
 * too): the program's own accesses fault in the backing as always, while a
 * syscall reading a map that is not mapped yet gets EFAULT at once, no fault
 * and no error state; once the program has touched the map, the kernel's
 * accesses work.
 */
static void test_user_mode_only(void **state)
{
	const size_t size = 2 * PAGE;
	struct cpu_map_mgr *mgr;
	struct owner ow = { 0 };
	struct cpu_map_info info;
	struct cpu_map_stats st;
	struct cpu_map *map;
	uint8_t *p;
	int sink = memfd_new(size);

	(void)state;
	assert_int_equal(setenv("UGPU_UFFD_USER_MODE_ONLY", "1", 1), 0);
	mgr = mgr_new(200);
	assert_int_equal(unsetenv("UGPU_UFFD_USER_MODE_ONLY"), 0);
	cpu_map_mgr_stats(mgr, &st);
	assert_true(st.user_mode_only);
	ow.fd = memfd_new(size);
	fd_fill(ow.fd, size, 9);
	assert_int_equal(cpu_map_create(mgr, &plain_ops, &ow, size, "bo-user", &map, (void **)&p), 0);
	errno = 0;
	assert_int_equal(pwrite(sink, p, size, 0), -1);
	assert_int_equal(errno, EFAULT);
	cpu_map_query(map, &info);
	assert_int_equal(info.state, CPU_MAP_UNMAPPED);
	assert_int_equal(info.faults, 0);
	cpu_map_mgr_stats(mgr, &st);
	assert_int_equal(st.errors, 0);
	/* the program's own read faults the backing in */
	assert_mem_eq_fd(p, ow.fd, size);
	cpu_map_query(map, &info);
	assert_int_equal(info.state, CPU_MAP_MAPPED);
	assert_int_equal(pwrite(sink, p, size, 0), (ssize_t)size);
	assert_mem_eq_fd(p, sink, size);
	assert_int_equal(cpu_map_destroy(map), 0);
	close(ow.fd);
	close(sink);
	cpu_map_mgr_destroy(mgr);
}

/* A move that never ends: the waiting access fails after the bound, and the
 * map works again once unblocked. */
struct pwrite_job {
	int fd;
	void *src;
	size_t len;
	ssize_t ret;
	int err;
};

static void *pwrite_main(void *arg)
{
	struct pwrite_job *j = arg;

	j->ret = pwrite(j->fd, j->src, j->len, 0);
	j->err = errno;
	return NULL;
}

/* Block @map, then have another thread pwrite(2) from it (a kernel access
 * of the blocked range) into a fresh memfd; the milliseconds it took. */
static uint64_t pwrite_while_blocked(struct cpu_map *map, uint8_t *p, size_t size,
				     struct pwrite_job *job)
{
	struct timespec t0;
	pthread_t th;

	assert_int_equal(cpu_map_block(map), 0);
	*job = (struct pwrite_job){ .fd = memfd_new(size), .src = p, .len = size };
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(pthread_create(&th, NULL, pwrite_main, job), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	return ms_since(&t0);
}

static void test_block_timeout(void **state)
{
	const size_t size = 2 * PAGE;
	struct cpu_map_mgr *mgr = mgr_new(200);
	struct owner ow = { 0 };
	struct pwrite_job job = { 0 };
	struct cpu_map_stats st;
	struct cpu_map *map;
	uint64_t ms;
	uint8_t *p;

	(void)state;
	need_kernel_faults(mgr);
	ow.fd = memfd_new(size);
	fd_fill(ow.fd, size, 5);
	assert_int_equal(cpu_map_create(mgr, &plain_ops, &ow, size, "bo-stuck", &map, (void **)&p), 0);
	ms = pwrite_while_blocked(map, p, size, &job);
	assert_int_equal(job.ret, -1);
	assert_int_equal(job.err, EFAULT);
	assert_true(ms >= 190 && ms < 5000);
	cpu_map_mgr_stats(mgr, &st);
	assert_int_equal(st.block_timeouts, 1);

	assert_int_equal(cpu_map_unblock(map), 0);
	assert_mem_eq_fd(p, ow.fd, size);
	assert_int_equal(cpu_map_destroy(map), 0);
	close(job.fd);
	close(ow.fd);
	cpu_map_mgr_destroy(mgr);
}

/* A map's own bound overrides the manager's: its owner knows how long its
 * moves may take (a BO: its copy bound), the manager does not. */
static void test_block_timeout_per_map(void **state)
{
	const size_t size = 2 * PAGE;
	struct cpu_map_mgr *mgr = mgr_new(10000);
	struct owner ow = { 0 };
	struct pwrite_job job = { 0 };
	struct cpu_map_info mi;
	struct cpu_map *map;
	uint64_t ms;
	uint8_t *p;

	(void)state;
	need_kernel_faults(mgr);
	ow.fd = memfd_new(size);
	fd_fill(ow.fd, size, 6);
	assert_int_equal(cpu_map_create(mgr, &plain_ops, &ow, size, "bo-own-bound", &map,
					(void **)&p), 0);
	cpu_map_query(map, &mi);
	assert_int_equal(mi.block_timeout_ms, 10000);
	cpu_map_set_block_timeout(map, 300);
	cpu_map_query(map, &mi);
	assert_int_equal(mi.block_timeout_ms, 300);
	ms = pwrite_while_blocked(map, p, size, &job);
	assert_int_equal(job.err, EFAULT);
	assert_true(ms >= 290 && ms < 5000);
	assert_int_equal(cpu_map_unblock(map), 0);
	assert_mem_eq_fd(p, ow.fd, size);
	assert_int_equal(cpu_map_destroy(map), 0);
	close(job.fd);
	close(ow.fd);
	cpu_map_mgr_destroy(mgr);
}

/*
 * The deadlock fact: mremap with EVENT_REMAP waits until the handler reads
 * the event. Invalidating while the handler is busy in an owner hook (for
 * this or another map) must finish once the hook does, and a hook calling
 * back into cpu_map gets -EDEADLK instead of hanging.
 */
struct inval_job {
	struct cpu_map *a, *b;
	int ra, rb;
};

static void *inval_main(void *arg)
{
	struct inval_job *j = arg;

	j->ra = cpu_map_invalidate(j->a);
	j->rb = cpu_map_block(j->b);
	return NULL;
}

static void test_invalidate_while_handler_busy(void **state)
{
	const size_t size = 2 * PAGE;
	struct cpu_map_mgr *mgr = mgr_new(0);
	struct owner slow = { 0 }, other = { 0 };
	struct cpu_map *ms, *mo;
	struct inval_job job;
	struct timespec t0, dl;
	uint8_t *ps, *po;
	pthread_t toucher, inv;
	int i;

	(void)state;
	slow.fd = memfd_new(size);
	other.fd = memfd_new(size);
	fd_fill(slow.fd, size, 11);
	fd_fill(other.fd, size, 22);
	slow.begin_delay_ms = 300;
	assert_int_equal(cpu_map_create(mgr, &hooked_ops, &slow, size, "bo-slow", &ms, (void **)&ps), 0);
	assert_int_equal(cpu_map_create(mgr, &plain_ops, &other, size, "bo-other", &mo, (void **)&po), 0);
	atomic_store(&slow.self, ms);
	assert_mem_eq_fd(po, other.fd, size); /* mapped: invalidate has work */

	assert_int_equal(pthread_create(&toucher, NULL, touch_main, ps), 0);
	for (i = 0; i < 2000 && !atomic_load(&slow.in_begin); i++)
		usleep(1000);
	assert_int_equal(atomic_load(&slow.in_begin), 1);

	job = (struct inval_job){ .a = mo, .b = ms };
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(pthread_create(&inv, NULL, inval_main, &job), 0);
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 5;
	if (pthread_timedjoin_np(inv, NULL, &dl))
		fail_msg("invalidate deadlocked against a busy handler");
	assert_int_equal(job.ra, 0);
	assert_int_equal(job.rb, 0);
	/* the toucher waits for the block; unblock lets it finish */
	assert_int_equal(cpu_map_unblock(ms), 0);
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 5;
	if (pthread_timedjoin_np(toucher, NULL, &dl))
		fail_msg("faulting thread never resumed after unblock");
	assert_int_equal(atomic_load(&slow.reentry_ret), -EDEADLK);
	assert_int_equal(atomic_load(&slow.begins), atomic_load(&slow.ends));
	{
		uint8_t v;

		assert_int_equal(pread(slow.fd, &v, 1, PAGE + 1), 1);
		assert_int_equal(v, 7);
	}
	assert_mem_eq_fd(po, other.fd, size);
	assert_int_equal(cpu_map_destroy(ms), 0);
	assert_int_equal(cpu_map_destroy(mo), 0);
	close(slow.fd);
	close(other.fd);
	cpu_map_mgr_destroy(mgr);
}

/* --- release (runtime PM) ------------------------------------------------ */

static enum cpu_map_state map_state(struct cpu_map *map)
{
	struct cpu_map_info info;

	cpu_map_query(map, &info);
	return info.state;
}

/*
 * Release in place on a memfd: the mapping stays, every access faults once
 * (fault_begin runs: the device would wake) and continues on the same
 * backing - for a present page and for a hole alike. A move after a release
 * replaces the released mapping like a mapped one.
 */
static void test_release_in_place(void **state)
{
	const size_t size = 4 * PAGE;
	struct cpu_map_mgr *mgr = mgr_new(0);
	struct owner ow = { 0 };
	struct cpu_map_stats st;
	struct cpu_map *map;
	uint8_t *p, v;
	int nfd, old;

	(void)state;
	ow.fd = memfd_new(size);
	fd_fill(ow.fd, 3 * PAGE, 5); /* the last page stays a hole */
	assert_int_equal(cpu_map_create(mgr, &hooked_ops, &ow, size, "bo-rel", &map, (void **)&p), 0);
	assert_mem_eq_fd(p, ow.fd, size);
	assert_int_equal(atomic_load(&ow.begins), 1);

	assert_int_equal(cpu_map_release(map), 0);
	assert_int_equal(map_state(map), CPU_MAP_RELEASED);
	assert_int_equal(cpu_map_release(map), 0); /* no-op */
	cpu_map_mgr_stats(mgr, &st);
	assert_true(st.features & UFFD_FEATURE_MINOR_SHMEM);
	assert_int_equal(st.releases, 1);
	assert_int_equal(st.invalidations, 0);
	assert_int_equal(st.mapped_bytes, size); /* the mapping is still there */

	/* A read of a present page faults, wakes, and sees the backing. */
	assert_mem_eq_fd(p, ow.fd, size);
	assert_int_equal(atomic_load(&ow.begins), 2);
	assert_int_equal(atomic_load(&ow.ends), 2);
	assert_int_equal(map_state(map), CPU_MAP_MAPPED);

	/* A store into the hole faults too and lands in the backing. */
	assert_int_equal(cpu_map_release(map), 0);
	p[3 * PAGE + 5] = 0xa7;
	assert_int_equal(atomic_load(&ow.begins), 3);
	assert_int_equal(pread(ow.fd, &v, 1, 3 * PAGE + 5), 1);
	assert_int_equal(v, 0xa7);

	/* Released, then moved: the next touch maps the new backing. */
	assert_int_equal(cpu_map_release(map), 0);
	nfd = memfd_new(size);
	old = ow.fd;
	assert_int_equal(cpu_map_block(map), 0);
	assert_int_equal(map_state(map), CPU_MAP_UNMAPPED);
	fd_copy(nfd, old, size);
	ow.fd = nfd;
	assert_int_equal(cpu_map_unblock(map), 0);
	p[PAGE] = (uint8_t)~p[PAGE];
	assert_mem_eq_fd(p, nfd, size);
	assert_int_equal(pread(old, &v, 1, PAGE), 1);
	assert_int_not_equal(v, p[PAGE]); /* the old backing is left alone */
	cpu_map_mgr_stats(mgr, &st);
	assert_int_equal(st.releases, 3);
	assert_int_equal(st.invalidations, 1);
	assert_int_equal(st.errors, 0);

	/* Destroyed while released: nothing leaks (ASan). */
	assert_int_equal(cpu_map_release(map), 0);
	assert_int_equal(cpu_map_destroy(map), 0);
	cpu_map_mgr_stats(mgr, &st);
	assert_int_equal(st.mapped_bytes, 0);
	close(old);
	close(nfd);
	cpu_map_mgr_destroy(mgr);
}

/* Release where the backing cannot be registered in place (forced by the
 * option, and with a file on a disk file system when the working directory
 * is on one): the mapping is invalidated instead, with the same outcome for
 * the CPU. */
static void release_by_invalidation(struct cpu_map_mgr *mgr, int fd, size_t size)
{
	struct owner ow = { .fd = fd };
	struct cpu_map_stats st;
	struct cpu_map *map;
	uint8_t *p;

	fd_fill(fd, size, 9);
	assert_int_equal(cpu_map_create(mgr, &hooked_ops, &ow, size, "bo-inv", &map, (void **)&p), 0);
	assert_mem_eq_fd(p, fd, size);
	assert_int_equal(cpu_map_release(map), 0);
	assert_int_equal(map_state(map), CPU_MAP_UNMAPPED);
	cpu_map_mgr_stats(mgr, &st);
	assert_int_equal(st.releases, 0);
	assert_int_equal(st.invalidations, 1);
	p[7] = 0x3c;
	assert_int_equal(atomic_load(&ow.begins), 2);
	assert_mem_eq_fd(p, fd, size);
	assert_int_equal(cpu_map_destroy(map), 0);
}

static void test_release_by_invalidation_option(void **state)
{
	struct cpu_map_mgr *mgr = mgr_new_opts(0, true);
	struct cpu_map_stats st;
	int fd = memfd_new(2 * PAGE);

	(void)state;
	cpu_map_mgr_stats(mgr, &st);
	assert_false(st.features & UFFD_FEATURE_MINOR_SHMEM);
	release_by_invalidation(mgr, fd, 2 * PAGE);
	close(fd);
	cpu_map_mgr_destroy(mgr);
}

static void test_release_non_shmem_falls_back(void **state)
{
	struct cpu_map_mgr *mgr;
	struct statfs sfs;
	int fd;

	(void)state;
	fd = open(".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0 || fstatfs(fd, &sfs) || sfs.f_type == TMPFS_MAGIC) {
		if (fd >= 0)
			close(fd);
		skip(); /* needs a working directory on a disk file system */
	}
	assert_int_equal(ftruncate(fd, 2 * PAGE), 0);
	mgr = mgr_new(0);
	release_by_invalidation(mgr, fd, 2 * PAGE);
	close(fd);
	cpu_map_mgr_destroy(mgr);
}

/*
 * Writers store into a mapping while the main thread releases it and plays
 * a sleeping device: fault_begin waits until it "wakes". While it sleeps,
 * nothing may reach the backing; afterwards every store must be there.
 */
struct sleepy {
	struct owner base; /* first: the ops get a struct owner * */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool asleep;
	unsigned int waits;
};

static int sleepy_begin(void *o)
{
	struct sleepy *s = o;
	struct timespec dl;

	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 5;
	pthread_mutex_lock(&s->lock);
	if (s->asleep)
		s->waits++;
	while (s->asleep && pthread_cond_timedwait(&s->cond, &s->lock, &dl) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&s->lock);
	atomic_fetch_add(&s->base.begins, 1);
	return 0;
}

static const struct cpu_map_owner_ops sleepy_ops = {
	.resolve = owner_resolve, .fault_begin = sleepy_begin, .fault_end = owner_end,
};

static uint64_t slots_sum(int fd)
{
	uint64_t buf[RACE_PAGES * PAGE / 8], h = 0;
	size_t i;

	assert_int_equal(pread(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	for (i = 0; i < sizeof(buf) / 8; i++)
		h = h * 31 + buf[i];
	return h;
}

static void test_race_release_vs_writes(void **state)
{
	const size_t size = RACE_PAGES * PAGE;
	struct cpu_map_mgr *mgr = mgr_new(0);
	struct race_writer w[RACE_WRITERS];
	struct sleepy sl = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
	struct cpu_map_stats st;
	struct cpu_map *map;
	struct timespec t0;
	atomic_bool stop = false;
	uint8_t *p;
	unsigned int cycles = 0;

	(void)state;
	sl.base.fd = memfd_new(size);
	assert_int_equal(cpu_map_create(mgr, &sleepy_ops, &sl, size, "bo-sleepy", &map, (void **)&p), 0);
	race_writers_start(w, p, &stop);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (cycles < 400 && ms_since(&t0) < 3000) {
		uint64_t before, after;
		unsigned int spins;

		/* Let the writers map and store again (bounded: 50 ms). */
		for (spins = 0; spins < 50000; spins++) {
			if (map_state(map) == CPU_MAP_MAPPED && slots_sum(sl.base.fd) != 0)
				break;
			sched_yield();
		}
		/* Asleep before the release: a fault right after it waits. */
		pthread_mutex_lock(&sl.lock);
		sl.asleep = true;
		pthread_mutex_unlock(&sl.lock);
		assert_int_equal(cpu_map_release(map), 0);
		before = slots_sum(sl.base.fd);
		usleep(200);
		after = slots_sum(sl.base.fd);
		if (before != after)
			fail_msg("cycle %u: a store reached the backing while the device slept", cycles);
		pthread_mutex_lock(&sl.lock);
		sl.asleep = false;
		pthread_cond_broadcast(&sl.cond);
		pthread_mutex_unlock(&sl.lock);
		cycles++;
	}
	race_writers_stop_check(w, &stop, sl.base.fd);
	cpu_map_mgr_stats(mgr, &st);
	print_message("release race: %u releases, %u faults waited for a wake, %llu stale\n",
		      cycles, sl.waits, (unsigned long long)st.stale_faults);
	assert_true(cycles >= 100);
	assert_true(sl.waits >= cycles / 2); /* the writers did touch while asleep */
	assert_int_equal(st.errors, 0);
	assert_int_equal(cpu_map_destroy(map), 0);
	close(sl.base.fd);
	cpu_map_mgr_destroy(mgr);
}

/*
 * A map handed back and forth between two managers (cpu_map_rehome(): a BO
 * moving to another device) while writers store into it, each move also a
 * change of backing: no store lost, the address kept, every fault_begin
 * ended, each manager counting the map only while it has it and serving
 * faults while it does. A rehome needs a blocked map.
 */
static void test_rehome_race(void **state)
{
	const size_t size = RACE_PAGES * PAGE;
	struct cpu_map_mgr *mgr[2] = { mgr_new(0), mgr_new(0) };
	struct race_writer w[RACE_WRITERS];
	struct owner ow = { 0 };
	struct cpu_map_stats st[2];
	struct cpu_map *map;
	struct timespec t0;
	atomic_bool stop = false;
	uint8_t *p;
	unsigned int cycles = 0, at = 0;

	(void)state;
	ow.fd = memfd_new(size);
	assert_int_equal(cpu_map_create(mgr[0], &hooked_ops, &ow, size, "bo-rehome", &map,
					(void **)&p),
			 0);
	assert_int_equal(cpu_map_rehome(map, mgr[1]), -EINVAL); /* not blocked */
	assert_int_equal(cpu_map_rehome(map, mgr[0]), 0); /* its own: nothing to do */
	race_writers_start(w, p, &stop);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (cycles < 1000 && ms_since(&t0) < 4000) {
		int nfd = memfd_new(size), old = ow.fd;
		struct cpu_map_info info;

		wait_writers_faulted(map, cycles);
		assert_int_equal(cpu_map_block(map), 0);
		fd_copy(nfd, old, size);
		at = 1 - at;
		assert_int_equal(cpu_map_rehome(map, mgr[at]), 0);
		ow.fd = nfd;
		assert_int_equal(cpu_map_unblock(map), 0);
		cpu_map_query(map, &info);
		assert_ptr_equal(info.addr, p);
		close(old);
		cycles++;
	}
	race_writers_stop_check(w, &stop, ow.fd);
	cpu_map_mgr_stats(mgr[0], &st[0]);
	cpu_map_mgr_stats(mgr[1], &st[1]);
	print_message("rehome: %u moves, faults %llu + %llu, parked %llu + %llu, stale %llu + %llu\n",
		      cycles, (unsigned long long)st[0].faults, (unsigned long long)st[1].faults,
		      (unsigned long long)st[0].parked_faults, (unsigned long long)st[1].parked_faults,
		      (unsigned long long)st[0].stale_faults, (unsigned long long)st[1].stale_faults);
	assert_true(cycles >= 50);
	assert_true(st[0].faults > 0 && st[1].faults > 0);
	assert_int_equal(st[0].errors + st[1].errors, 0);
	assert_int_equal(st[at].maps, 1);
	assert_int_equal(st[1 - at].maps, 0);
	assert_int_equal(atomic_load(&ow.begins), atomic_load(&ow.ends));
	assert_int_equal(cpu_map_destroy(map), 0);
	close(ow.fd);
	cpu_map_mgr_destroy(mgr[0]);
	cpu_map_mgr_destroy(mgr[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_args),
		cmocka_unit_test(test_map_read_write),
		cmocka_unit_test(test_move),
		cmocka_unit_test(test_race_move_vs_writes),
		cmocka_unit_test(test_many_threads_many_objects),
		cmocka_unit_test(test_destroy_with_parked_fault),
		cmocka_unit_test(test_destroy_with_inflight_fault),
		cmocka_unit_test(test_resolve_failure_sigbus),
		cmocka_unit_test(test_resolve_failure_recovers),
		cmocka_unit_test(test_user_mode_only),
		cmocka_unit_test(test_block_timeout),
		cmocka_unit_test(test_block_timeout_per_map),
		cmocka_unit_test(test_invalidate_while_handler_busy),
		cmocka_unit_test(test_release_in_place),
		cmocka_unit_test(test_release_by_invalidation_option),
		cmocka_unit_test(test_release_non_shmem_falls_back),
		cmocka_unit_test(test_race_release_vs_writes),
		cmocka_unit_test(test_rehome_race),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
