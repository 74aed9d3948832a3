/* SPDX-License-Identifier: MIT */
/*
 * CPU mappings that follow a buffer object (see cpu_map.h and
 * docs/cpu-mappings.md). The invariant everything rests on: the range of a
 * map is, at every instant, either a mapping of the backing the owner last
 * resolved (possibly registered with our userfaultfd and emptied: released
 * in place), or an anonymous placeholder registered with our userfaultfd. It
 * is never an unregistered anonymous mapping, because a store into one of
 * those lands on a throw-away page and is silently lost.
 */
#include <errno.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "mm/cpu_map.h"
#include "mm/uffd.h"
#include "base/clock.h"
#include "base/list.h"
#include "base/log.h"
#include "base/stats.h"

#define CPU_MAP_DEFAULT_BLOCK_TIMEOUT_MS 10000u
/* The handler's poll period: how late a stop request or a block timeout is
 * noticed at worst. */
#define CPU_MAP_TICK_MS 50
/* Destroy waits for an owner callback in slices of this, warning each time. */
#define CPU_MAP_DESTROY_WARN_MS 2000

/*
 * struct cpu_map - one object's range.
 *
 * Locking (order: @op_lock -> mgr->lock -> @lock):
 * - @op_lock serialises the calls that change the range from owner threads
 *   (invalidate, block, unblock, destroy). It is held across mremap(), which
 *   waits for the handler thread; the handler never takes it.
 * - @lock protects @state, @blocked, @gen, @parked, @parked_since_ns, @awaiting,
 *   @inflight, @mapped, @faults, @invalidations, @block_timeout_ms, the
 *   write tracking (@wp, @wp_chunk, @wp_dirty), and the
 *   owner's placement as seen by
 *   ops->resolve (called under it). The handler holds it while it maps the
 *   backing, so a state change by an owner thread is ordered against a fault
 *   being served. It is never held across mremap() or an owner hook other
 *   than resolve.
 * - @link belongs to mgr->lock. @ops, @owner, @addr, @size, @name are
 *   immutable after creation. @mgr changes only in cpu_map_rehome(), with
 *   the map blocked, under @op_lock and @lock (the handler reads it under
 *   @lock; owner threads read it in their calls on the map, which the
 *   owner serialises with its rehome like with destroy).
 */
#define map_of(l) list_entry(l, struct cpu_map, link)

struct cpu_map {
	struct cpu_map_mgr *mgr;
	const struct cpu_map_owner_ops *ops;
	void *owner;
	uintptr_t addr;
	size_t size;
	char name[48];

	struct list_link link; /* on mgr->maps */

	pthread_mutex_t op_lock;
	pthread_mutex_t lock;
	pthread_cond_t idle; /* signalled when @inflight drops to 0 */
	enum cpu_map_state state;
	unsigned int blocked;
	/* Bumped by every block and unblock: the owner may have changed the
	 * backing in between, so a fault_begin decided before is stale. */
	uint64_t gen;
	unsigned int block_timeout_ms; /* 0: the manager's */
	unsigned int await_timeout_ms; /* 0: as the block timeout */
	unsigned int parked;
	uint64_t parked_since_ns;
	/* Parked faults wait for a change the owner promised (fault_begin
	 * said -EINPROGRESS) rather than for an unblock; cleared with @parked. */
	bool awaiting;
	unsigned int inflight; /* handler between fault_begin and fault_end */
	/* CPU_MAP_ERROR: [@fail_off, size) fails loudly once @fenced; until
	 * then (the kernel said -EAGAIN: a non-cooperative event pending) the
	 * next fault fences it. */
	bool fenced;
	size_t fail_off;
	uint64_t mapped;
	uint64_t faults;
	uint64_t invalidations;
	/* Write tracking (cpu_map_wp_start()): one bit per @wp_chunk bytes
	 * written since the start. */
	enum { WP_OFF, WP_ON, WP_ENDED, WP_LOST } wp;
	uint64_t wp_chunk;
	uint64_t *wp_dirty;
};

/*
 * struct cpu_map_mgr - one userfaultfd, one handler thread, many maps.
 *
 * Locking: @lock protects the map list (@maps) and @nmaps. The counters are
 * atomics (relaxed: they are statistics, not synchronisation). Everything
 * else is immutable between create and destroy.
 * @release_in_place: the kernel has UFFD_FEATURE_MINOR_SHMEM and the
 *           options did not ask for release by invalidation.
 */
struct cpu_map_mgr {
	struct ugpu_context *ctx;
	struct uffd *u; /* the fd and its handler thread (mm/uffd.h) */
	uint64_t features;
	unsigned int block_timeout_ms;
	size_t page;
	bool release_in_place;
	struct stat_hist *fault_hist; /* may be NULL; lock-free (base/stats.h) */

	pthread_mutex_t lock;
	struct list_link maps; /* struct cpu_map */
	uint64_t nmaps;

	atomic_uint_fast64_t fault_events, faults, stale_faults, parked_faults;
	atomic_uint_fast64_t invalidations, errors, block_timeouts, remap_events, releases;
	atomic_uint_fast64_t mapped_bytes;
};

/* The calls that would wait for the handler thread refuse on it. */
static bool on_handler_thread(const struct cpu_map_mgr *mgr)
{
	return uffd_on_handler(mgr->u);
}

static void stat_add(atomic_uint_fast64_t *c, uint64_t v)
{
	atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

static void stat_sub(atomic_uint_fast64_t *c, uint64_t v)
{
	atomic_fetch_sub_explicit(c, v, memory_order_relaxed);
}

const char *cpu_map_state_name(enum cpu_map_state state)
{
	switch (state) {
	case CPU_MAP_UNMAPPED: return "unmapped";
	case CPU_MAP_MAPPED: return "mapped";
	case CPU_MAP_INVALIDATING: return "invalidating";
	case CPU_MAP_ERROR: return "error";
	case CPU_MAP_DEAD: return "dead";
	case CPU_MAP_RELEASED: return "released";
	}
	return "?";
}

/* --- fault side (handler thread) ---------------------------------------- */

/*
 * mmap() for the handler's own mappings over a faulting range, as a raw
 * syscall on purpose: ThreadSanitizer models an intercepted mmap() as a store
 * to the whole range by the calling thread, which it then reports as racing
 * with the faulting thread's access. The kernel orders the two (the faulting
 * thread resumes only after UFFDIO_WAKE, like memory written by a device), an
 * edge TSan cannot see. Returns the address or MAP_FAILED with errno set.
 */
static void *handler_mmap(uintptr_t addr, size_t len, int prot, int flags, int fd, uint64_t off)
{
	long r = syscall(SYS_mmap, addr, len, prot, flags, fd, off);

	return r == -1 ? MAP_FAILED : (void *)r;
}

/*
 * UFFDIO_POISON of [addr, +len). One ioctl covers one VMA only (-ENOENT
 * when the range crosses into another: a mapping made of several backing
 * extents is several VMAs), so a refused range is halved until each piece
 * lies in one VMA. Pages already present (-EEXIST) are left: they are the
 * backing's own. Returns 0 when every page is poisoned or present.
 */
static int poison_range(struct cpu_map_mgr *mgr, uintptr_t addr, size_t len)
{
	size_t half;
	int r = uffd_poison(mgr->u, addr, len);

	if (r == -EEXIST && len == mgr->page)
		return 0;
	if ((r != -ENOENT && r != -EEXIST) || len <= mgr->page)
		return r;
	half = (len / 2 + mgr->page - 1) & ~(mgr->page - 1);
	r = poison_range(mgr, addr, half);
	if (!r)
		r = poison_range(mgr, addr + half, len - half);
	return r;
}

/*
 * Make [off, size) of @map fail loudly: SIGBUS through UFFDIO_POISON, or
 * where the kernel lacks it (or it fails) an inaccessible mapping (SIGSEGV).
 * Never a page that reads as something the object does not hold, never a
 * writable throw-away page. Map lock held.
 */
static void map_fail_range(struct cpu_map *map, size_t off)
{
	struct cpu_map_mgr *mgr = map->mgr;
	size_t len = map->size - off;
	bool done = false;

	if (map->state != CPU_MAP_ERROR)
		stat_add(&mgr->errors, 1);
	map->state = CPU_MAP_ERROR;
	map->fail_off = off;
	map->fenced = true;
	if (!len)
		return;
	if (mgr->features & UFFD_FEATURE_POISON) {
		int r = poison_range(mgr, map->addr + off, len);

		if (r == -EAGAIN) {
			/* The mm is changing (an mremap or unmap whose event
			 * this thread has not read yet): try again at the next
			 * fault, after the event; the woken thread faults again. */
			map->fenced = false;
			return;
		}
		done = r == 0;
		if (!done)
			log_warn(mgr->ctx, "cpu_map: object '%s': UFFDIO_POISON failed: %d; accesses get SIGSEGV instead",
				 map->name, r);
	}
	if (!done && handler_mmap(map->addr + off, len, PROT_NONE,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == MAP_FAILED)
		log_err(mgr->ctx, "cpu_map: object '%s': cannot fence the range after an error: %d",
			map->name, -errno);
}

/* Map every extent of the owner's current backing over the placeholder.
 * Map lock held; state UNMAPPED, not blocked. */
static void map_backing(struct cpu_map *map)
{
	struct cpu_map_mgr *mgr = map->mgr;
	size_t off = 0;
	int ret = 0;

	while (off < map->size) {
		struct cpu_map_extent ext = { .fd = -1 };
		uint64_t len;
		void *p;

		ret = map->ops->resolve(map->owner, off, &ext);
		if (ret < 0) {
			log_err(mgr->ctx,
				"cpu_map: object '%s': no backing at offset %#zx (%d): CPU accesses get SIGBUS until it is invalidated",
				map->name, off, ret);
			break;
		}
		if (ext.fd < 0 || ext.len == 0 || ext.fd_offset % mgr->page ||
		    (ext.len % mgr->page && ext.len < map->size - off)) {
			log_err(mgr->ctx,
				"cpu_map: object '%s': resolve gave a bad extent at %#zx (fd %d, offset %#llx, len %#llx)",
				map->name, off, ext.fd, (unsigned long long)ext.fd_offset,
				(unsigned long long)ext.len);
			ret = -EINVAL;
			break;
		}
		len = ext.len < map->size - off ? ext.len : map->size - off;
		/* Replaces the placeholder pages in one step: an access sees
		 * either the registered placeholder (and faults) or the backing. */
		p = handler_mmap(map->addr + off, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
				 ext.fd, ext.fd_offset);
		if (p == MAP_FAILED) {
			ret = -errno;
			log_err(mgr->ctx, "cpu_map: object '%s': mmap of fd %d at %#llx failed: %d",
				map->name, ext.fd, (unsigned long long)ext.fd_offset, ret);
			break;
		}
		madvise(p, len, MADV_DONTFORK);
		map->mapped += len;
		stat_add(&mgr->mapped_bytes, len);
		off += len;
	}
	if (ret < 0) {
		map_fail_range(map, off);
		return;
	}
	map->state = CPU_MAP_MAPPED;
	map->faults++;
	stat_add(&mgr->faults, 1);
}

/*
 * Give a range released in place back to the CPU. Unregistering wakes the
 * threads waiting in a fault on it (the kernel does so for missing-mode
 * ranges, so that nobody hangs on a range that stopped being tracked); they
 * retry on the backing's own mapping, which never went away. Should the
 * unregister fail, the backing is mapped over the range instead (the
 * caller's wake then does the waking). Map lock held, state RELEASED.
 * Returns whether the waiters were woken.
 */
static bool map_unrelease(struct cpu_map *map)
{
	struct cpu_map_mgr *mgr = map->mgr;
	int r = uffd_unregister(mgr->u, map->addr, map->size);

	if (r == 0) {
		map->state = CPU_MAP_MAPPED;
		map->faults++;
		stat_add(&mgr->faults, 1);
		return true;
	}
	log_warn(mgr->ctx, "cpu_map: object '%s': unregistering the released range failed: %d; mapping it again",
		 map->name, r);
	stat_sub(&mgr->mapped_bytes, map->mapped);
	map->mapped = 0;
	map_backing(map);
	return false;
}

static void map_park(struct cpu_map *map)
{
	if (!map->parked++)
		map->parked_since_ns = now_ns();
	stat_add(&map->mgr->parked_faults, 1);
}

static void handle_fault(struct cpu_map_mgr *mgr, uintptr_t fault_addr)
{
	uintptr_t page_addr = fault_addr & ~(uintptr_t)(mgr->page - 1);
	uintptr_t addr;
	size_t size;
	struct cpu_map *map;
	bool begun = false, stale = false, woken = false;
	uint64_t begun_gen = 0, begun_inval = 0;
	int begin_err = 0;

	stat_add(&mgr->fault_events, 1);
	pthread_mutex_lock(&mgr->lock);
	map = NULL;
	list_for_each(l, &mgr->maps) {
		struct cpu_map *m = map_of(l);

		if (page_addr >= m->addr && page_addr - m->addr < m->size) {
			map = m;
			break;
		}
	}
	if (!map) {
		/* Destroyed meanwhile: the woken thread finds PROT_NONE or
		 * nothing and gets SIGSEGV, which is the documented outcome. */
		pthread_mutex_unlock(&mgr->lock);
		stat_add(&mgr->stale_faults, 1);
		uffd_wake(mgr->u, page_addr, mgr->page);
		return;
	}
	/* Taken before the list lock is dropped: destroy unlinks under the
	 * list lock, then waits for this lock and for @inflight. */
	pthread_mutex_lock(&map->lock);
	pthread_mutex_unlock(&mgr->lock);
	addr = map->addr;
	size = map->size;

	for (;;) {
		if (map->awaiting) {
			/* Another fault of the range already heard that the
			 * owner will change the backing: wait with it (asleep,
			 * see below), without asking the owner again. */
			map_park(map);
			woken = true;
			break;
		}
		if (map->state == CPU_MAP_INVALIDATING ||
		    (map->state == CPU_MAP_UNMAPPED && map->blocked)) {
			/* Whoever ends the invalidation or the block wakes the
			 * whole range; the thread then faults again. */
			map_park(map);
			break;
		}
		if (map->state == CPU_MAP_ERROR && !map->fenced) {
			map_fail_range(map, map->fail_off); /* the last try said -EAGAIN */
			break;
		}
		if (map->state != CPU_MAP_UNMAPPED && map->state != CPU_MAP_RELEASED) {
			/* MAPPED: several threads faulted at once and an earlier
			 * message mapped it. ERROR: the range is poisoned and the
			 * retry gets SIGBUS. DEAD: SIGSEGV after destroy. */
			stale = true;
			break;
		}
		if (begin_err == -EINPROGRESS) {
			/* The owner will change the backing (block or
			 * invalidate, which wake the range). If it already
			 * did since fault_begin, decide again; else wait for
			 * it, bounded like a blocked map (check_block_timeouts). */
			begin_err = 0;
			if (map->gen != begun_gen || map->invalidations != begun_inval)
				continue;
			/* Not woken here (a woken thread would fault again at
			 * once, and ask the owner again, in a loop): every
			 * block, unblock, invalidate or timeout wakes the
			 * whole range, and the thread sleeps in the kernel
			 * from its fault until one does. */
			map->awaiting = true;
			map_park(map);
			woken = true;
			break;
		}
		if (begin_err) {
			log_err(mgr->ctx,
				"cpu_map: object '%s': fault_begin failed (%d): CPU accesses get SIGBUS until it is invalidated",
				map->name, begin_err);
			map_fail_range(map, 0);
			break;
		}
		if (begun && map->gen != begun_gen) {
			/* The owner blocked and unblocked the map while
			 * fault_begin ran: it decided on a backing that may
			 * not be the one resolve() would map now (a move in
			 * between). End it and decide again, so the decision
			 * and the mapping see the same backing. */
			pthread_mutex_unlock(&map->lock);
			map->ops->fault_end(map->owner);
			pthread_mutex_lock(&map->lock);
			begun = false;
			if (!--map->inflight)
				pthread_cond_broadcast(&map->idle);
			continue;
		}
		if (map->ops->fault_begin && !begun) {
			int ret;

			map->inflight++;
			begun_gen = map->gen;
			begun_inval = map->invalidations;
			pthread_mutex_unlock(&map->lock);
			ret = map->ops->fault_begin(map->owner);
			pthread_mutex_lock(&map->lock);
			if (ret < 0) {
				begin_err = ret;
				if (!--map->inflight)
					pthread_cond_broadcast(&map->idle);
			} else {
				begun = true;
			}
			continue; /* the state may have changed meanwhile */
		}
		if (map->state == CPU_MAP_RELEASED) {
			/* Unregistering wakes the faulting thread, and it must
			 * not run before fault_end (a test that touches, then
			 * suspends, would find the device still referenced). So
			 * fault_end runs first, under the map lock: a suspend
			 * that starts now releases this map again, which waits
			 * for this lock, so the thread's access lands before
			 * that release or faults again. */
			if (begun) {
				map->ops->fault_end(map->owner);
				begun = false;
				if (!--map->inflight)
					pthread_cond_broadcast(&map->idle);
			}
			woken = map_unrelease(map);
		} else {
			map_backing(map);
			if (map->wp == WP_ENDED)
				map->wp = WP_LOST; /* a fresh, untracked mapping */
		}
		break;
	}
	if (begun) {
		pthread_mutex_unlock(&map->lock);
		map->ops->fault_end(map->owner);
		pthread_mutex_lock(&map->lock);
		if (!--map->inflight)
			pthread_cond_broadcast(&map->idle);
	}
	pthread_mutex_unlock(&map->lock);
	/* @map may be freed from here on; only the copies are used. */
	if (stale)
		stat_add(&mgr->stale_faults, 1);
	if (!woken)
		uffd_wake(mgr->u, addr, size);
}

/* A fault waiting on a blocked map for too long gets SIGBUS: the owner's
 * move is stuck, and a hang would be worse than a loud error. */
static void check_block_timeouts(struct cpu_map_mgr *mgr)
{
	uint64_t now = now_ns();
	struct cpu_map *map;

	pthread_mutex_lock(&mgr->lock);
	list_for_each(l, &mgr->maps) {
		map = map_of(l);
		unsigned int ms;

		pthread_mutex_lock(&map->lock);
		ms = map->block_timeout_ms ? map->block_timeout_ms : mgr->block_timeout_ms;
		if (map->awaiting && map->await_timeout_ms)
			ms = map->await_timeout_ms;
		if (((map->blocked && map->state == CPU_MAP_UNMAPPED) || map->awaiting) &&
		    map->parked && now - map->parked_since_ns >= (uint64_t)ms * 1000000ull) {
			log_err(mgr->ctx,
				"cpu_map: object '%s': a CPU access waited %u ms for %s; it gets SIGBUS",
				map->name, ms,
				map->awaiting ? "its owner to change the backing as it said it would"
					      : "a move that did not finish");
			stat_add(&mgr->block_timeouts, 1);
			map->parked = 0;
			map->awaiting = false;
			map_fail_range(map, 0); /* poison wakes the waiters */
			if (!map->fenced) /* -EAGAIN: they fault again, and fence it */
				uffd_wake(mgr->u, map->addr, map->size);
		}
		pthread_mutex_unlock(&map->lock);
	}
	pthread_mutex_unlock(&mgr->lock);
}

/*
 * A store into a write-protected page of a tracked map: note its chunk,
 * lift the protection of the whole chunk (so the next stores there cost
 * nothing) and let the thread go. A map whose tracking stopped meanwhile
 * only lifts the page's protection, if any is left (its waker retries).
 */
static void handle_wp_fault(struct cpu_map_mgr *mgr, uintptr_t fault_addr)
{
	uintptr_t page_addr = fault_addr & ~(uintptr_t)(mgr->page - 1);
	uintptr_t start = page_addr;
	size_t len = mgr->page;
	struct cpu_map *map = NULL;

	stat_add(&mgr->fault_events, 1);
	pthread_mutex_lock(&mgr->lock);
	list_for_each(l, &mgr->maps) {
		struct cpu_map *m = map_of(l);

		if (page_addr >= m->addr && page_addr - m->addr < m->size) {
			map = m;
			break;
		}
	}
	if (map)
		pthread_mutex_lock(&map->lock);
	pthread_mutex_unlock(&mgr->lock);
	if (map && map->wp == WP_ON) {
		uint64_t c = (page_addr - map->addr) / map->wp_chunk;

		__atomic_fetch_or(&map->wp_dirty[c / 64], 1ull << (c % 64), __ATOMIC_RELAXED);
		start = map->addr + c * map->wp_chunk;
		len = map->size - c * map->wp_chunk < map->wp_chunk ? map->size - c * map->wp_chunk
								   : map->wp_chunk;
	}
	/* Under the map lock: stop cannot unregister the range meanwhile. */
	if (uffd_wp(mgr->u, start, len, false))
		uffd_wake(mgr->u, page_addr, mgr->page);
	if (map)
		pthread_mutex_unlock(&map->lock);
}

/* The handler thread's entry points (mm/uffd.h). */
static void on_msg(void *owner, const struct uffd_msg *m)
{
	struct cpu_map_mgr *mgr = owner;

	switch (m->event) {
	case UFFD_EVENT_PAGEFAULT:
		if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)
			handle_wp_fault(mgr, (uintptr_t)m->arg.pagefault.address);
		else if (mgr->fault_hist) {
			uint64_t t0 = now_ns();

			handle_fault(mgr, (uintptr_t)m->arg.pagefault.address);
			stat_hist_add(mgr->fault_hist, (now_ns() - t0) / 1000);
		} else {
			handle_fault(mgr, (uintptr_t)m->arg.pagefault.address);
		}
		break;
	case UFFD_EVENT_REMAP:
		/* Reading it is the answer: the invalidating thread's
		 * mremap() returns. */
		stat_add(&mgr->remap_events, 1);
		break;
	default:
		log_warn(mgr->ctx, "cpu_map: unexpected userfaultfd event %#x", m->event);
		break;
	}
}

static void on_tick(void *owner)
{
	check_block_timeouts(owner);
}

static const struct uffd_owner_ops cpu_map_uffd_ops = {
	.msg = on_msg,
	.tick = on_tick,
};

/* --- manager ------------------------------------------------------------- */

int cpu_map_mgr_create(struct ugpu_context *ctx, const struct cpu_map_mgr_opts *opts,
		       struct cpu_map_mgr **out)
{
	struct cpu_map_mgr *mgr;
	uint64_t want;
	long page = sysconf(_SC_PAGESIZE);
	unsigned int tick = CPU_MAP_TICK_MS;
	int ret;

	if (!out || (opts && opts->size < offsetof(struct cpu_map_mgr_opts, block_timeout_ms) +
					      sizeof(opts->block_timeout_ms))) {
		log_err(ctx, "cpu_map: bad manager arguments (out %p, opts size %zu)", (void *)out,
			opts ? opts->size : 0);
		return -EINVAL;
	}
	mgr = calloc(1, sizeof(*mgr));
	if (!mgr)
		return -ENOMEM;
	mgr->ctx = ctx;
	mgr->fault_hist = opts && opts->size > offsetof(struct cpu_map_mgr_opts, fault_hist)
				  ? opts->fault_hist
				  : NULL;
	mgr->page = page > 0 ? (size_t)page : 4096;
	mgr->block_timeout_ms = opts && opts->block_timeout_ms ? opts->block_timeout_ms
							      : CPU_MAP_DEFAULT_BLOCK_TIMEOUT_MS;
	if (tick > mgr->block_timeout_ms / 4)
		tick = mgr->block_timeout_ms / 4 + 1;
	list_init(&mgr->maps);
	ret = pthread_mutex_init(&mgr->lock, NULL);
	if (ret) {
		free(mgr);
		return -ret;
	}
	/* EVENT_REMAP keeps a placeholder registered across mremap (the
	 * race-free invalidation). EVENT_UNMAP/REMOVE stay off on purpose:
	 * with them, the handler's own mmap(MAP_FIXED) over a placeholder
	 * would wait for the handler to read the event - a self-deadlock.
	 * MINOR_SHMEM: release in place (cpu_map_release()). */
	want = UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_POISON | UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
	if (!(opts && opts->size >= offsetof(struct cpu_map_mgr_opts, release_by_invalidate) +
					    sizeof(opts->release_by_invalidate) &&
	      opts->release_by_invalidate))
		want |= UFFD_FEATURE_MINOR_SHMEM;
	ret = uffd_create(ctx, "cpu_map", UFFD_FEATURE_EVENT_REMAP, want, &cpu_map_uffd_ops, mgr,
			  tick, &mgr->u);
	if (ret) {
		pthread_mutex_destroy(&mgr->lock);
		free(mgr);
		return ret;
	}
	/* Published under the list lock: the handler reads @u (a stale
	 * fault's wake) after taking it, and a fault reaches the handler
	 * through the kernel, an edge ThreadSanitizer cannot see (a map
	 * handed over by cpu_map_rehome() faults there before it is listed). */
	pthread_mutex_lock(&mgr->lock);
	mgr->features = uffd_features(mgr->u);
	mgr->release_in_place = mgr->features & UFFD_FEATURE_MINOR_SHMEM;
	pthread_mutex_unlock(&mgr->lock);
	*out = mgr;
	return 0;
}

void cpu_map_mgr_destroy(struct cpu_map_mgr *mgr)
{
	if (!mgr)
		return;
	if (on_handler_thread(mgr)) {
		log_err(mgr->ctx, "cpu_map: manager destroyed from its own handler thread; leaked");
		return;
	}
	for (;;) {
		struct cpu_map *map;

		pthread_mutex_lock(&mgr->lock);
		map = list_empty(&mgr->maps) ? NULL : map_of(list_first(&mgr->maps));
		pthread_mutex_unlock(&mgr->lock);
		if (!map)
			break;
		log_warn(mgr->ctx, "cpu_map: object '%s' still mapped when its manager goes", map->name);
		cpu_map_destroy(map);
	}
	uffd_destroy(mgr->u);
	pthread_mutex_destroy(&mgr->lock);
	free(mgr);
}

void cpu_map_mgr_stats(struct cpu_map_mgr *mgr, struct cpu_map_stats *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&mgr->lock);
	out->maps = mgr->nmaps;
	pthread_mutex_unlock(&mgr->lock);
	out->fault_events = atomic_load(&mgr->fault_events);
	out->faults = atomic_load(&mgr->faults);
	out->stale_faults = atomic_load(&mgr->stale_faults);
	out->parked_faults = atomic_load(&mgr->parked_faults);
	out->invalidations = atomic_load(&mgr->invalidations);
	out->errors = atomic_load(&mgr->errors);
	out->block_timeouts = atomic_load(&mgr->block_timeouts);
	out->remap_events = atomic_load(&mgr->remap_events);
	out->releases = atomic_load(&mgr->releases);
	out->mapped_bytes = atomic_load(&mgr->mapped_bytes);
	out->features = mgr->features;
	out->user_mode_only = uffd_is_user_mode_only(mgr->u);
}

/* --- maps ---------------------------------------------------------------- */

int cpu_map_create(struct cpu_map_mgr *mgr, const struct cpu_map_owner_ops *ops, void *owner,
		   size_t size, const char *name, struct cpu_map **out_map, void **out_addr)
{
	struct cpu_map *map;
	size_t rounded;
	int ret = 0;

	if (!mgr || !ops || !ops->resolve || !out_map || !out_addr || !size ||
	    size > SIZE_MAX / 2 || !ops->fault_begin != !ops->fault_end) {
		log_err(mgr ? mgr->ctx : NULL,
			"cpu_map: bad map arguments for '%s' (size %zu; resolve required, fault_begin/end in pairs)",
			name ? name : "?", size);
		return -EINVAL;
	}
	rounded = (size + mgr->page - 1) & ~(mgr->page - 1);
	map = calloc(1, sizeof(*map));
	if (!map)
		return -ENOMEM;
	map->mgr = mgr;
	map->ops = ops;
	map->owner = owner;
	map->size = rounded;
	snprintf(map->name, sizeof(map->name), "%s", name ? name : "unnamed");
	map->state = CPU_MAP_UNMAPPED;
	if (pthread_mutex_init(&map->op_lock, NULL) || pthread_mutex_init(&map->lock, NULL) ||
	    pthread_cond_init(&map->idle, NULL)) {
		/* glibc's init of default attributes cannot fail */
		free(map);
		return -ENOMEM;
	}
	map->addr = uffd_placeholder(mgr->u, rounded, &ret);
	if (!map->addr) {
		log_err(mgr->ctx, "cpu_map: reserving %zu bytes for object '%s' failed: %d", rounded,
			map->name, ret);
		goto out_free_map;
	}
	pthread_mutex_lock(&mgr->lock);
	list_add(&mgr->maps, &map->link);
	mgr->nmaps++;
	pthread_mutex_unlock(&mgr->lock);
	*out_map = map;
	*out_addr = (void *)map->addr;
	return 0;

out_free_map:
	pthread_cond_destroy(&map->idle);
	pthread_mutex_destroy(&map->lock);
	pthread_mutex_destroy(&map->op_lock);
	free(map);
	return ret;
}

/*
 * Swap a fresh registered placeholder over the range. @op_lock held, map
 * lock not held (mremap waits for the handler thread, which may need it).
 */
static int map_invalidate_locked(struct cpu_map *map)
{
	struct cpu_map_mgr *mgr = map->mgr;
	enum cpu_map_state prev;
	uintptr_t ph;
	bool wake;
	int ret = 0;

	pthread_mutex_lock(&map->lock);
	prev = map->state;
	if (prev == CPU_MAP_UNMAPPED) {
		pthread_mutex_unlock(&map->lock);
		return 0;
	}
	/* From here faults on the range wait: the handler must neither map
	 * the backing nor poison while the VMAs change under us. Every store
	 * so far faulted (tracking is complete up to here); the swap takes the
	 * protected mapping away. */
	map->state = CPU_MAP_INVALIDATING;
	if (map->wp == WP_ON)
		map->wp = WP_ENDED;
	pthread_mutex_unlock(&map->lock);

	ph = uffd_placeholder(mgr->u, map->size, &ret);
	if (ph) {
		/*
		 * The atomic step: the old mapping and the registered
		 * placeholder trade places under the mmap write lock, and the
		 * TLB shootdown is done before mremap returns, so a store is
		 * either in the old backing or faults. EVENT_REMAP keeps the
		 * registration with the moved VMA; mremap returns once the
		 * handler thread read the REMAP message.
		 */
		if (mremap((void *)ph, map->size, map->size, MREMAP_MAYMOVE | MREMAP_FIXED,
			   (void *)map->addr) == MAP_FAILED) {
			ret = -errno;
			munmap((void *)ph, map->size);
		}
	}
	if (ret < 0)
		log_err(mgr->ctx, "cpu_map: invalidating object '%s' failed: %d; still mapped",
			map->name, ret);

	pthread_mutex_lock(&map->lock);
	if (ret < 0) {
		map->state = prev;
	} else {
		map->state = CPU_MAP_UNMAPPED;
		stat_sub(&mgr->mapped_bytes, map->mapped);
		map->mapped = 0;
		map->invalidations++;
		stat_add(&mgr->invalidations, 1);
	}
	wake = !map->blocked;
	if (wake) {
		map->parked = 0;
		map->awaiting = false;
	}
	pthread_mutex_unlock(&map->lock);
	if (wake)
		uffd_wake(mgr->u, map->addr, map->size);
	return ret;
}

int cpu_map_invalidate(struct cpu_map *map)
{
	int ret;

	if (!map)
		return -EINVAL;
	if (on_handler_thread(map->mgr))
		return -EDEADLK;
	pthread_mutex_lock(&map->op_lock);
	ret = map_invalidate_locked(map);
	pthread_mutex_unlock(&map->op_lock);
	return ret;
}

/*
 * Register the backing's own mapping in missing + minor mode, then zap its
 * page-table entries: from the registration on, an access to a page that is
 * not mapped faults to the handler (present shmem pages as minor faults,
 * holes as missing ones), which waits for the map lock we hold; stores before
 * the zap are in the backing. MADV_DONTNEED does not wait for the handler:
 * EVENT_REMOVE is off. Map lock held, state MAPPED. Returns 0, or -errno with
 * the range still MAPPED and unregistered (-EINVAL: a backing userfaultfd
 * cannot register, such as a vfio-pci BAR).
 */
static int map_release_in_place(struct cpu_map *map)
{
	struct cpu_map_mgr *mgr = map->mgr;
	int ret;

	/* The registration below replaces the write protection: tracking
	 * stops here, incomplete from now on. */
	if (map->wp == WP_ON) {
		uffd_wp(mgr->u, map->addr, map->size, false);
		map->wp = WP_LOST;
	}

	ret = uffd_register(mgr->u, map->addr, map->size,
			    UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR);
	if (ret < 0)
		return ret;
	if (madvise((void *)map->addr, map->size, MADV_DONTNEED) < 0) {
		ret = -errno;
		int r = uffd_unregister(mgr->u, map->addr, map->size);

		if (r)
			log_err(mgr->ctx, "cpu_map: object '%s': unregistering after a failed release failed: %d",
				map->name, r);
		return ret;
	}
	map->state = CPU_MAP_RELEASED;
	return 0;
}

int cpu_map_release(struct cpu_map *map)
{
	struct cpu_map_mgr *mgr;
	int ret = -EOPNOTSUPP;

	if (!map)
		return -EINVAL;
	mgr = map->mgr;
	if (on_handler_thread(mgr))
		return -EDEADLK;
	pthread_mutex_lock(&map->op_lock);
	pthread_mutex_lock(&map->lock);
	if (map->state == CPU_MAP_UNMAPPED || map->state == CPU_MAP_RELEASED) {
		pthread_mutex_unlock(&map->lock);
		pthread_mutex_unlock(&map->op_lock);
		return 0;
	}
	if (map->state == CPU_MAP_MAPPED && mgr->release_in_place) {
		ret = map_release_in_place(map);
		if (ret < 0 && ret != -EINVAL)
			log_warn(mgr->ctx, "cpu_map: object '%s': release in place failed: %d; invalidating",
				 map->name, ret);
	}
	pthread_mutex_unlock(&map->lock);
	if (ret == 0)
		stat_add(&mgr->releases, 1);
	else
		ret = map_invalidate_locked(map);
	pthread_mutex_unlock(&map->op_lock);
	return ret;
}

int cpu_map_block(struct cpu_map *map)
{
	bool wake = false;
	int ret;

	if (!map)
		return -EINVAL;
	if (on_handler_thread(map->mgr))
		return -EDEADLK;
	pthread_mutex_lock(&map->op_lock);
	/* Blocked before the swap, so a fault right after it waits. */
	pthread_mutex_lock(&map->lock);
	map->blocked++;
	map->gen++;
	pthread_mutex_unlock(&map->lock);
	ret = map_invalidate_locked(map);
	if (ret < 0) {
		pthread_mutex_lock(&map->lock);
		if (!--map->blocked) {
			map->parked = 0;
			map->awaiting = false;
			wake = true;
		}
		pthread_mutex_unlock(&map->lock);
		if (wake)
			uffd_wake(map->mgr->u, map->addr, map->size);
	}
	pthread_mutex_unlock(&map->op_lock);
	return ret;
}

int cpu_map_unblock(struct cpu_map *map)
{
	bool last, failed;
	int ret = 0;

	if (!map)
		return -EINVAL;
	if (on_handler_thread(map->mgr))
		return -EDEADLK;
	pthread_mutex_lock(&map->op_lock);
	pthread_mutex_lock(&map->lock);
	if (!map->blocked) {
		pthread_mutex_unlock(&map->lock);
		pthread_mutex_unlock(&map->op_lock);
		log_err(map->mgr->ctx, "cpu_map: object '%s' unblocked but not blocked", map->name);
		return -EINVAL;
	}
	last = !--map->blocked;
	map->gen++;
	failed = map->state == CPU_MAP_ERROR;
	if (last) {
		map->parked = 0;
		map->awaiting = false;
	}
	pthread_mutex_unlock(&map->lock);
	if (last && failed)
		ret = map_invalidate_locked(map); /* wakes the range */
	else if (last)
		uffd_wake(map->mgr->u, map->addr, map->size);
	pthread_mutex_unlock(&map->op_lock);
	return ret;
}

/* Wait until the handler runs no owner hook (fault_begin .. fault_end) for
 * @map. The hooks are bounded by contract; say so loudly if one is not.
 * Map lock held. */
static void map_wait_idle_locked(struct cpu_map *map, const char *doing)
{
	unsigned int waited_ms = 0;

	while (map->inflight) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += CPU_MAP_DESTROY_WARN_MS / 1000;
		if (pthread_cond_timedwait(&map->idle, &map->lock, &ts) == ETIMEDOUT) {
			waited_ms += CPU_MAP_DESTROY_WARN_MS;
			log_warn(map->mgr->ctx, "cpu_map: %s object '%s': an owner hook has run for %u ms",
				 doing, map->name, waited_ms);
		}
	}
}

int cpu_map_rehome(struct cpu_map *map, struct cpu_map_mgr *to)
{
	struct cpu_map_mgr *from;
	uintptr_t ph;
	int ret = 0;

	if (!map || !to)
		return -EINVAL;
	from = map->mgr;
	if (from == to)
		return 0;
	if (on_handler_thread(from) || on_handler_thread(to))
		return -EDEADLK;
	pthread_mutex_lock(&map->op_lock);
	pthread_mutex_lock(&map->lock);
	if (!map->blocked ||
	    (map->state != CPU_MAP_UNMAPPED && map->state != CPU_MAP_ERROR)) {
		pthread_mutex_unlock(&map->lock);
		pthread_mutex_unlock(&map->op_lock);
		log_err(from->ctx, "cpu_map: object '%s' moved to another manager while not blocked",
			map->name);
		return -EINVAL;
	}
	/* Blocked: the old handler starts no hook for it any more (its faults
	 * park, or are stale); one it started before the block must end
	 * before the owner changes what the hooks read. */
	map_wait_idle_locked(map, "moving");
	pthread_mutex_unlock(&map->lock);

	/* The range becomes a placeholder of the new userfaultfd in one step,
	 * as in an invalidation: the REMAP event goes to the moved VMA's
	 * userfaultfd, so the new handler answers it. */
	ph = uffd_placeholder(to->u, map->size, &ret);
	if (ph && mremap((void *)ph, map->size, map->size, MREMAP_MAYMOVE | MREMAP_FIXED,
			 (void *)map->addr) == MAP_FAILED) {
		ret = -errno;
		munmap((void *)ph, map->size);
	}
	if (ret < 0) {
		pthread_mutex_unlock(&map->op_lock);
		log_err(from->ctx, "cpu_map: moving object '%s' to another manager failed: %d",
			map->name, ret);
		return ret;
	}
	/* A fault read meanwhile by either handler that does not find the map
	 * in its list is answered as stale (a wake), and faults again. */
	pthread_mutex_lock(&from->lock);
	list_del(&map->link);
	from->nmaps--;
	pthread_mutex_unlock(&from->lock);
	pthread_mutex_lock(&to->lock);
	pthread_mutex_lock(&map->lock);
	stat_sub(&from->mapped_bytes, map->mapped);
	map->mapped = 0;
	map->mgr = to;
	map->state = CPU_MAP_UNMAPPED; /* an ERROR's poison went with the old VMA */
	map->fenced = false;
	map->fail_off = 0;
	/* Parked faults sleep on the old userfaultfd: woken below, they fault
	 * on the new placeholder and park with the new handler. */
	map->parked = 0;
	map->awaiting = false;
	pthread_mutex_unlock(&map->lock);
	list_add(&to->maps, &map->link);
	to->nmaps++;
	pthread_mutex_unlock(&to->lock);
	uffd_wake(from->u, map->addr, map->size);
	pthread_mutex_unlock(&map->op_lock);
	return 0;
}

int cpu_map_destroy(struct cpu_map *map)
{
	struct cpu_map_mgr *mgr;

	if (!map)
		return 0;
	mgr = map->mgr;
	if (on_handler_thread(mgr))
		return -EDEADLK;
	pthread_mutex_lock(&map->op_lock);
	pthread_mutex_lock(&mgr->lock);
	list_del(&map->link);
	mgr->nmaps--;
	pthread_mutex_unlock(&mgr->lock);

	pthread_mutex_lock(&map->lock);
	/* Dead first: a fault the handler is serving maps nothing more. */
	map->state = CPU_MAP_DEAD;
	/* The handler may be inside fault_begin/fault_end for this map; the
	 * owner may free its object as soon as we return, so wait. */
	map_wait_idle_locked(map, "destroying");
	stat_sub(&mgr->mapped_bytes, map->mapped);
	map->mapped = 0;
	free(map->wp_dirty);
	map->wp_dirty = NULL;
	map->wp = WP_OFF;
	pthread_mutex_unlock(&map->lock);

	/* PROT_NONE first, then wake: a thread parked on the range retries and
	 * gets SIGSEGV instead of sleeping forever or reaching freed backing. */
	if (mmap((void *)map->addr, map->size, PROT_NONE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == MAP_FAILED)
		log_err(mgr->ctx, "cpu_map: fencing object '%s' before unmapping failed: %d", map->name,
			-errno);
	uffd_wake(mgr->u, map->addr, map->size);
	munmap((void *)map->addr, map->size);
	pthread_mutex_unlock(&map->op_lock);

	pthread_cond_destroy(&map->idle);
	pthread_mutex_destroy(&map->lock);
	pthread_mutex_destroy(&map->op_lock);
	free(map);
	return 0;
}

int cpu_map_wp_start(struct cpu_map *map, uint64_t chunk)
{
	struct cpu_map_mgr *mgr;
	uint64_t n;
	int ret;

	if (!map || !chunk || chunk % map->mgr->page)
		return -EINVAL;
	mgr = map->mgr;
	if (on_handler_thread(mgr))
		return -EDEADLK;
	if (!(mgr->features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM))
		return -EOPNOTSUPP;
	pthread_mutex_lock(&map->op_lock);
	pthread_mutex_lock(&map->lock);
	if (map->state != CPU_MAP_MAPPED || map->wp != WP_OFF) {
		ret = map->wp != WP_OFF ? -EBUSY : -EAGAIN;
		goto out;
	}
	n = (map->size + chunk - 1) / chunk;
	map->wp_dirty = calloc((n + 63) / 64, sizeof(*map->wp_dirty));
	if (!map->wp_dirty) {
		ret = -ENOMEM;
		goto out;
	}
	/* Registering adds write-protect faults to the backing's own mapping
	 * (missing pages are still served by the kernel from the file); the
	 * protection then covers present pages and, through the kernel's
	 * markers, absent ones. Fails on a backing that cannot register (a
	 * vfio-pci BAR): not tracked. */
	ret = uffd_register(mgr->u, map->addr, map->size, UFFDIO_REGISTER_MODE_WP);
	if (!ret) {
		ret = uffd_wp(mgr->u, map->addr, map->size, true);
		if (ret)
			uffd_unregister(mgr->u, map->addr, map->size);
	}
	if (ret) {
		free(map->wp_dirty);
		map->wp_dirty = NULL;
		goto out;
	}
	map->wp_chunk = chunk;
	map->wp = WP_ON;
out:
	pthread_mutex_unlock(&map->lock);
	pthread_mutex_unlock(&map->op_lock);
	return ret;
}

bool cpu_map_wp_stop(struct cpu_map *map, void (*wrote)(void *arg, uint64_t off, uint64_t len),
		     void *arg)
{
	struct cpu_map_mgr *mgr;
	bool complete;
	uint64_t c, n;

	if (!map)
		return false;
	mgr = map->mgr;
	if (on_handler_thread(mgr))
		return false;
	pthread_mutex_lock(&map->op_lock);
	pthread_mutex_lock(&map->lock);
	complete = map->wp == WP_ON || map->wp == WP_ENDED;
	if (map->wp == WP_ON) {
		/* Still the protected mapping: give the CPU its stores back. */
		uffd_wp(mgr->u, map->addr, map->size, false);
		uffd_unregister(mgr->u, map->addr, map->size);
	}
	if (complete && wrote) {
		n = (map->size + map->wp_chunk - 1) / map->wp_chunk;
		for (c = 0; c < n; c++)
			if (__atomic_load_n(&map->wp_dirty[c / 64], __ATOMIC_RELAXED) >> (c % 64) & 1)
				wrote(arg, c * map->wp_chunk, map->wp_chunk);
	}
	free(map->wp_dirty);
	map->wp_dirty = NULL;
	map->wp = WP_OFF;
	pthread_mutex_unlock(&map->lock);
	pthread_mutex_unlock(&map->op_lock);
	return complete;
}

void cpu_map_set_block_timeout(struct cpu_map *map, unsigned int ms)
{
	pthread_mutex_lock(&map->lock);
	map->block_timeout_ms = ms;
	pthread_mutex_unlock(&map->lock);
}

void cpu_map_set_await_timeout(struct cpu_map *map, unsigned int ms)
{
	pthread_mutex_lock(&map->lock);
	map->await_timeout_ms = ms;
	pthread_mutex_unlock(&map->lock);
}

void cpu_map_query(struct cpu_map *map, struct cpu_map_info *out)
{
	memset(out, 0, sizeof(*out));
	out->addr = (void *)map->addr;
	out->size = map->size;
	pthread_mutex_lock(&map->lock);
	out->state = map->state;
	out->blocked = map->blocked;
	out->parked = map->parked;
	out->faults = map->faults;
	out->invalidations = map->invalidations;
	out->block_timeout_ms = map->block_timeout_ms ? map->block_timeout_ms
						      : map->mgr->block_timeout_ms;
	pthread_mutex_unlock(&map->lock);
}
