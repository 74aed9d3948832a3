/* SPDX-License-Identifier: MIT */
/*
 * One userfaultfd and the thread that reads it: the plumbing CPU mappings
 * (mm/cpu_map.c) and shared virtual memory build on. It opens the fd
 * (/dev/userfaultfd, else the syscall), negotiates features, and runs a
 * handler thread that hands every message to its owner and calls it once a
 * tick; the owner decides what a fault means. The registration and
 * resolution ioctls are thin wrappers that keep -errno end to end.
 * docs/cpu-mappings.md has the userfaultfd facts this is written against.
 *
 * Threading: every function may be called from any thread. The owner's
 * callbacks run on the handler thread only (uffd_on_handler() is true
 * there): an owner must never wait on that thread for something only the
 * handler can do (reading an event).
 */
#ifndef UGPU_MM_UFFD_H
#define UGPU_MM_UFFD_H

#include <linux/userfaultfd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Debian 12's uapi headers predate these (Linux 6.1 / 6.6); the ABI is fixed. */
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1 /* Linux 5.11 */
#endif

/* The group the shipped udev rule (dist/udev/70-ugpu-userfaultfd.rules) lets open
 * /dev/userfaultfd, as kvm does for /dev/kvm. */
#define UFFD_GROUP "userfaultfd"
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
struct uffdio_poison {
	struct uffdio_range range;
	__u64 mode;
	__s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, 0x08, struct uffdio_poison)
#endif

/* ... and these (Linux 6.8): moving anonymous pages between registered
 * ranges. */
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
struct uffdio_move {
	__u64 dst;
	__u64 src;
	__u64 len;
#define UFFDIO_MOVE_MODE_DONTWAKE ((__u64)1 << 0)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES ((__u64)1 << 1)
	__u64 mode;
	__s64 move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, 0x05, struct uffdio_move)
#endif

struct ugpu_context;
struct uffd;

/*
 * struct uffd_owner_ops - what the handler thread calls.
 * @msg: one message read from the fd (UFFD_EVENT_PAGEFAULT, _REMAP, ...).
 *       Messages are handled one at a time, in order.
 * @tick: may be NULL. Called once per tick (uffd_create()'s @tick_ms) and
 *       after a batch of messages when a tick is due.
 */
struct uffd_owner_ops {
	void (*msg)(void *owner, const struct uffd_msg *m);
	void (*tick)(void *owner);
};

/*
 * uffd_create() - open a userfaultfd with the features @need (every one
 * required) and those of @want the kernel offers, and start its handler.
 * Without /dev/userfaultfd access, CAP_SYS_PTRACE or
 * vm.unprivileged_userfaultfd=1 it falls back to a userfaultfd that traps
 * user-mode faults only (UFFD_USER_MODE_ONLY), and logs once per process
 * what that costs (kernel-mode accesses to registered memory fail with
 * EFAULT) and how to grant full access. With UGPU_UFFD_USER_MODE_ONLY set in
 * the environment it takes the user-mode-only one at once (tests; trying as
 * root what an ordinary user gets).
 * Returns: 0 with *@out set; -EPERM/-ENOSYS (no usable userfaultfd, not even
 * a user-mode one; logged with what to enable); -EOPNOTSUPP (a feature of
 * @need is missing); -ENOMEM; another -errno.
 */
int uffd_create(struct ugpu_context *ctx, const char *who, uint64_t need, uint64_t want,
		const struct uffd_owner_ops *ops, void *owner, unsigned int tick_ms,
		struct uffd **out);

/* uffd_destroy() - stop and join the handler, close the fd. NULL-safe. Not
 * from the handler thread (logged and leaked). */
void uffd_destroy(struct uffd *u);

/* What the kernel offers (uffd_probe()) and what an fd was opened with. */
int uffd_probe(uint64_t *features);
uint64_t uffd_features(const struct uffd *u);
/* True when @u traps user-mode faults only (see uffd_create()). */
bool uffd_is_user_mode_only(const struct uffd *u);

/*
 * uffd_sync() - return once every message read from @u so far has been
 * handled. A thread that an unmap, free or move released (the kernel lets
 * it go once its event is read) calls this to know its event was acted on.
 * No-op on the handler thread or with NULL.
 */
void uffd_sync(struct uffd *u);

/*
 * uffd_events_hold() / uffd_events_release() - keep @u's handler from
 * reading messages meanwhile (it holds the other side of the lock across
 * each read and the handling of what it read). An unmap, free or move
 * releases its thread as soon as its event is *read*; a caller that checks
 * what the handler marks on such events and then acts on the process's
 * memory with an ioctl holds this across both, so the event is either
 * handled before the check or read after the ioctl. Only around ioctls that
 * never wait for the handler (UFFDIO_MOVE: with an event unread it fails
 * with EAGAIN): never across a touch of registered memory, an madvise or
 * an mremap, whose completion needs the handler to read. No-op on the
 * handler thread or with NULL.
 */
void uffd_events_hold(struct uffd *u);
void uffd_events_release(struct uffd *u);

/*
 * uffd_zap_begin() / uffd_zap_returned() / uffd_zap_end() - around an
 * madvise(MADV_DONTNEED) of registered memory whose completion must not
 * overtake the process's unmaps (svm/migrate.c, the write-protection
 * path). The kernel lets an unmapping thread go once its event is read;
 * the madvise drops the mmap lock, queues its REMOVE event, waits for it to
 * be read and then zaps whatever is mapped at the address by then. Between
 * begin and end the handler reads one message at a time (nothing read with
 * the madvise's event lets another thread go); between begin and returned
 * it reads nothing until the calling thread sleeps inside its madvise (it
 * has looked the address up). The owner's handling of the REMOVE event then
 * waits until the madvise returned before it returns itself. Call begin
 * with uffd_events_hold() held (no read under way ignores it), returned
 * right after the madvise, end after uffd_sync(). begin: 0, -EBUSY when
 * too many threads zap at once (logged once), or -EOPNOTSUPP when /proc
 * does not say where threads sleep (logged at create): the caller goes
 * without.
 */
int uffd_zap_begin(struct uffd *u);
/* Where a zapping thread is, from /proc/self/task/TID/{syscall,wchan}:
 * unknown (unreadable), outside its madvise (running, or not there yet),
 * asleep in it on an event (ours or a repeat after a split of the mapping),
 * or asleep in it otherwise (the mmap lock). */
enum zap_state { ZAPPER_UNKNOWN, ZAPPER_OUTSIDE, ZAPPER_EVENT_WAIT, ZAPPER_ASLEEP };
enum zap_state uffd_zapper_state(pid_t tid);
void uffd_zap_returned(struct uffd *u);
void uffd_zap_end(struct uffd *u);

/* True on @u's handler thread. */
bool uffd_on_handler(const struct uffd *u);

/* The ioctls, as 0 or -errno. */
int uffd_register(struct uffd *u, uintptr_t addr, size_t len, uint64_t mode);
int uffd_unregister(struct uffd *u, uintptr_t addr, size_t len);
/* Wake the threads waiting on [@addr, +@len); harmless when none wait or the
 * range is no longer registered (they retry and fault afresh). */
void uffd_wake(struct uffd *u, uintptr_t addr, size_t len);
/* Make [@addr, +@len) raise SIGBUS (needs UFFD_FEATURE_POISON). */
int uffd_poison(struct uffd *u, uintptr_t addr, size_t len);

/*
 * Filling and protecting, for shared virtual memory (svm/). Each returns 0
 * or -errno (-EEXIST: a page is there already; -EAGAIN: the mm is changing,
 * try again after the pending event; -ENOENT: not registered any more).
 * uffd_copy(): [@dst, +@len) from @src (any readable user memory, e.g. a
 *   BAR mapping); @wake false leaves the waiters asleep.
 * uffd_zeropage(): map the zero page (a read fault's answer).
 * uffd_wp(): write-protect (@on) or unprotect (and wake) the range.
 * uffd_move(): move the pages of [@src, +@len) to @dst (Linux 6.8,
 *   UFFD_FEATURE_MOVE); @holes: pages @src lacks are skipped. *@moved: bytes.
 */
int uffd_copy(struct uffd *u, uintptr_t dst, const void *src, size_t len, bool wake);
int uffd_zeropage(struct uffd *u, uintptr_t dst, size_t len);
int uffd_wp(struct uffd *u, uintptr_t addr, size_t len, bool on);
int uffd_move(struct uffd *u, uintptr_t dst, uintptr_t src, size_t len, bool holes, size_t *moved);

/*
 * uffd_placeholder() - a fresh anonymous range of @size bytes registered
 * for missing faults, MADV_DONTFORK (a child does not inherit a registered
 * range nobody serves). Returns its address, or 0 with *@err set.
 */
uintptr_t uffd_placeholder(struct uffd *u, size_t size, int *err);

#endif
