/* SPDX-License-Identifier: MIT */
/*
 * The small harness shared by the guest test programs (tests/vm/guest/vm_*.c).
 *
 * cmocka has no static archive in Debian and the guest has no shared
 * libraries, so the guest tests check with these macros instead. Output is
 * one line per check ("  ok   ..." / "  FAIL ... (file:line)"); the exit
 * status is 0 (all passed), 1 (a check failed), 77 (something the test needs
 * is absent: e.g. the device is not there on a real machine).
 *
 * Devices come from the environment, so the same binaries run in the VM
 * (tests/vm/init sets them) and on a real machine:
 *   UGPU_VM_SHM   BDF of an ivshmem-plain device bound to vfio-pci (shared
 *                 by the tests in slices, see the layout below)
 *   UGPU_VM_SHM1  BDF of a second ivshmem-plain device bound to vfio-pci,
 *                 used whole by one test (unplug_bo) so that both hot-unplug
 *                 tests run in one boot
 *   UGPU_VM_EDU   BDF of a QEMU edu device bound to vfio-pci
 *   UGPU_VM_HOST  set when the VM runner (tests/vm/run.py) watches the
 *                 console and serves "@@HOST" requests (unplug, memfd checks);
 *                 its replies come on the guest's /dev/ttyS1. "manual": a
 *                 person does what the requests ask (e.g. removes the device
 *                 on a real machine) and nobody answers on ttyS1
 */
#ifndef UGPU_TESTS_VM_GUEST_VM_TEST_H
#define UGPU_TESTS_VM_GUEST_VM_TEST_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/*
 * Layout of the 64 MiB ivshmem BAR2 (the host's memory-backend file), so that
 * tests sharing the device in one guest never step on each other's data.
 */
#define VM_SHM_SIZE (64ull << 20)
#define VM_SHM_GUEST_OFF (0ull) /* guest writes, host checks after the run */
#define VM_SHM_GUEST_LEN (8ull << 20)
#define VM_SHM_HOST_OFF (32ull << 20) /* host writes before boot, guest checks */
#define VM_SHM_HOST_LEN (1ull << 20)
#define VM_SHM_HOST_SEED 0x484f5354ull /* "HOST"; tests/vm/run.py uses the same */
#define VM_SHM_LOWPOWER_OFF (40ull << 20)
#define VM_SHM_P2P_OFF (48ull << 20) /* 2 MiB window mapped for edu */
#define VM_SHM_PEER_OFF (52ull << 20) /* 2 MiB: the driver's peer window (vm_peer.c) */
#define VM_SHM_UNPLUG_OFF (60ull << 20)
/* The second ivshmem's BAR2 in the VM (tests/vm/run.py: SHM1_SIZE). */
#define VM_SHM1_SIZE (32ull << 20)

static int vm_failures;

/* Word @i of the pattern @seed; tests/vm/run.py computes the same. */
static inline uint64_t vm_pattern(uint64_t seed, uint64_t i)
{
	uint64_t v = (i + 1) * 0x9E3779B97F4A7C15ull + seed;

	return v ^ (v >> 29);
}

static inline double vm_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void vm_vprint(const char *tag, const char *fmt, va_list ap)
{
	fputs(tag, stdout);
	vprintf(fmt, ap);
	fflush(stdout);
}

/* A line of information, not a check. */
__attribute__((format(printf, 1, 2))) static inline void vm_note(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vm_vprint("  ..   ", fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

__attribute__((format(printf, 4, 5))) static inline bool vm_check_at(bool ok, const char *file,
								      int line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vm_vprint(ok ? "  ok   " : "  FAIL ", fmt, ap);
	va_end(ap);
	if (!ok) {
		printf(" (%s:%d)", file, line);
		vm_failures++;
	}
	putchar('\n');
	fflush(stdout);
	return ok;
}

/* Record a check; evaluates to its truth so a test can stop what depends on it. */
#define VM_CHECK(cond, ...) vm_check_at(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
/* A check the rest of the program cannot go on without. */
#define VM_REQUIRE(cond, ...)                                          \
	do {                                                           \
		if (!vm_check_at(!!(cond), __FILE__, __LINE__, __VA_ARGS__)) \
			exit(vm_finish());                              \
	} while (0)
/* A transport call returning 0/-errno. */
#define VM_CHECK_RC(expr, what)                                                         \
	({                                                                              \
		int vm_rc_ = (expr);                                                    \
		VM_CHECK(vm_rc_ == 0, "%s -> %d (%s)", (what), vm_rc_,                    \
			 vm_rc_ ? strerror(-vm_rc_) : "ok");                               \
		vm_rc_;                                                                 \
	})

/* Verdict line + exit status. */
static inline int vm_finish(void)
{
	printf("  %s (%d failed check%s)\n", vm_failures ? "FAILED" : "PASSED", vm_failures,
	       vm_failures == 1 ? "" : "s");
	fflush(stdout);
	return vm_failures ? 1 : 0;
}

__attribute__((noreturn)) static inline void vm_skip(const char *why)
{
	printf("  SKIP %s\n", why);
	fflush(stdout);
	exit(77);
}

/* BDF from @var, or skip the test when it is unset. */
static inline const char *vm_bdf(const char *var)
{
	const char *v = getenv(var);

	if (!v || !*v) {
		printf("  SKIP %s is not set (BDF of the device bound to vfio-pci)\n", var);
		fflush(stdout);
		exit(77);
	}
	return v;
}

/* True when the VM runner serves @@HOST requests. */
static inline bool vm_has_host(void)
{
	const char *v = getenv("UGPU_VM_HOST");

	return v && *v;
}

/* True when a person, not the runner, acts on the requests (no replies). */
static inline bool vm_host_manual(void)
{
	const char *v = getenv("UGPU_VM_HOST");

	return v && !strcmp(v, "manual");
}

/* Send one request line to the host side (only meaningful under the runner). */
__attribute__((format(printf, 1, 2))) static inline void vm_host(const char *fmt, ...)
{
	va_list ap;

	fputs("@@HOST ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

/*
 * A request that needs the host's answer: the reply is one line on the
 * guest's ttyS1 (tests/vm/run.py writes it). Anything stale on the channel is
 * dropped first. @reply gets the line without its newline.
 * Returns 0, -ETIMEDOUT when no full line came within @timeout_ms, -ENOTCONN
 * at once under UGPU_VM_HOST=manual (the request is printed for a person), or
 * -errno.
 */
__attribute__((format(printf, 4, 5))) static inline int
vm_host_call(char *reply, size_t len, int timeout_ms, const char *fmt, ...)
{
	char junk[256];
	size_t got = 0;
	double end = vm_now() + timeout_ms / 1e3;
	va_list ap;
	int fd;

	if (vm_host_manual()) {
		fputs("@@HOST ", stdout);
		va_start(ap, fmt);
		vprintf(fmt, ap);
		va_end(ap);
		puts("\n  ..   UGPU_VM_HOST=manual: do what the line above asks, now");
		fflush(stdout);
		return -ENOTCONN;
	}
	fd = open("/dev/ttyS1", O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	while (read(fd, junk, sizeof(junk)) > 0)
		;
	fputs("@@HOST ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int left = (int)((end - vm_now()) * 1e3);
		ssize_t n;

		if (left <= 0 || poll(&p, 1, left) == 0) {
			close(fd);
			return -ETIMEDOUT;
		}
		n = read(fd, reply + got, len - 1 - got);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0) {
			int err = n < 0 ? -errno : -EIO;

			close(fd);
			return err;
		}
		got += (size_t)n;
		reply[got] = '\0';
		if (strchr(reply, '\n') || got == len - 1) {
			reply[strcspn(reply, "\r\n")] = '\0';
			close(fd);
			return 0;
		}
	}
}

/*
 * Wait at most @timeout_ms for eventfd @fd; *val gets its counter.
 * Returns 0, -ETIMEDOUT or -errno.
 */
static inline int vm_wait_eventfd(int fd, int timeout_ms, uint64_t *val)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int r;

	do
		r = poll(&p, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	if (r == 0)
		return -ETIMEDOUT;
	if (read(fd, val, sizeof(*val)) != (ssize_t)sizeof(*val))
		return -errno;
	return 0;
}

#endif
