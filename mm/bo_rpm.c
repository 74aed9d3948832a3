/* SPDX-License-Identifier: MIT */
/*
 * Runtime PM of buffer objects (see mm/bo_rpm.h and docs/runtime-pm.md).
 *
 * Why releasing is race-free: cpu_map_release() registers the mapping with
 * the userfaultfd before it zaps it (or, for a backing that cannot be
 * registered, swaps a registered placeholder over it atomically; see
 * docs/cpu-mappings.md), so a store racing the release lands in VRAM before
 * the zap, or faults after it. The
 * fault then runs bo_rpm_fault_begin(), whose rpm_get() either wakes the
 * device (after the suspend) or, during the suspend hooks, marks the suspend
 * aborted (device still in D0) - it never lands on a throw-away page and
 * never waits for the hook that is waiting for the handler thread.
 *
 * Why detach is safe against the fault hooks: see "lifetime" below.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mm/bo.h"
#include "mm/bo_rpm.h"
#include "mm/cpu_map.h"
#include "mm/vram.h"
#include "src/device.h"
#include "base/clock.h"
#include "base/log.h"
#include "src/rpm.h"
#include "base/test_point.h"

/* A CPU copy of one VRAM block of a BO that cannot leave VRAM. */
struct bo_rpm_backup {
	struct ugpu_bo *bo;
	uint64_t offset;
	uint64_t len;
	void *data;
};

/*
 * struct bo_rpm - per device. Locking: see mm/bo_rpm.h. @fault_ref is only
 * touched by the cpu_map handler thread (faults are served one at a time),
 * and by bo_rpm_free() once no hook can reach it any more. @rpm: the
 * device's runtime PM, with a reference of ours (it outlives us).
 */
struct bo_rpm {
	struct ugpu_device *dev;
	struct rpm *rpm;
	struct rpm_hook *hook;
	pthread_mutex_t lock;
	struct list_link mapped; /* VRAM BOs a fault mapped since the last release */
	struct list_link evicted; /* BOs moved to system for D3cold, to move back */
	struct bo_rpm_backup *backups;
	/* @nbackups: changed under @lock (atomic stores: bo_rpm_store_u64()
	 * reads it without the lock, under the manager lock, which every
	 * addition holds; drops are release stores) */
	size_t nbackups, cap_backups;
	/* A suspend abandoned because the device went away kept its backups
	 * for the removal to adopt (bo_rpm_resume()); set under @lock (an
	 * atomic store), read without it (bo_rpm_get()). */
	bool gone_kept;
	bool fault_ref;
	/* Counters (struct bo_rpm_stats), atomics: read without any lock by
	 * the stats op, which runs under the rpm lock and must never wait for
	 * a copy. @listed mirrors the length of @mapped. */
	struct bo_rpm_stats st;
};

static void st_add(uint64_t *c, int64_t v)
{
	__atomic_add_fetch(c, (uint64_t)v, __ATOMIC_RELAXED);
}

static uint64_t st_get(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

/* List @bo as mapped / take it off, keeping the count. Under r->lock. */
static void mapped_add(struct bo_rpm *r, struct ugpu_bo *bo)
{
	list_add_tail(&r->mapped, &bo->rpm_mapped);
	st_add(&r->st.listed, 1);
}

static void mapped_del(struct bo_rpm *r, struct ugpu_bo *bo)
{
	list_del(&bo->rpm_mapped);
	st_add(&r->st.listed, -1);
}

#define bo_of_mapped(link) list_entry(link, struct ugpu_bo, rpm_mapped)
#define bo_of_evicted(link) list_entry(link, struct ugpu_bo, rpm_evicted)

/* Manager lock held (it orders this read against attach and detach). */
static struct bo_rpm *rpm_of(struct ugpu_device *dev)
{
	return dev->bo_mgr ? __atomic_load_n(&dev->bo_mgr->rpm, __ATOMIC_ACQUIRE) : NULL;
}

static void drop_backups_locked(struct bo_rpm *r, const struct ugpu_bo *bo);

/* The last user of a detached state frees it (see "lifetime" below). */
static void bo_rpm_free(struct bo_rpm *r)
{
	/* A fault that took its reference and whose fault_end found the
	 * state unpublished: the reference is dropped here. */
	if (r->fault_ref)
		rpm_put(r->rpm);
	drop_backups_locked(r, NULL);
	free(r->backups);
	rpm_unref(r->rpm);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

/* ---- lifetime of the state against the fault hooks ------------------------
 *
 * The fault hooks run on the cpu_map handler thread, which never takes the
 * manager lock (its holders wait for the handler), so detach cannot keep
 * them out with it. Instead a hook counts itself in m->rpm_hooks before it
 * reads m->rpm, and stays counted until its last use of what it read.
 * Detach parks the state in m->rpm_zombie, unpublishes m->rpm, and frees the
 * state only if it then finds no hook counted; otherwise the last hook to
 * leave frees it. Both sides store then load with sequentially consistent
 * atomics, so either the hook read NULL (and touches nothing of ours), or
 * detach sees it counted, or the hook, leaving, sees m->rpm NULL. An atomic
 * exchange on m->rpm_zombie makes exactly one of them the freer. Counted,
 * not timed: a hook that takes long (a slow wake) never finds its state
 * freed under it. Detach still waits for the hooks a while (bounded) so that
 * the device teardown after it does not race a wake in progress.
 */
static pthread_mutex_t detach_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t detach_cond = PTHREAD_COND_INITIALIZER;
static unsigned int detach_waiters; /* atomic; written under detach_lock */

static void zombie_reap(struct bo_mgr *m)
{
	struct bo_rpm *z = __atomic_exchange_n(&m->rpm_zombie, NULL, __ATOMIC_SEQ_CST);

	if (z)
		bo_rpm_free(z);
}

static struct bo_rpm *hook_enter(struct bo_mgr *m)
{
	__atomic_add_fetch(&m->rpm_hooks, 1, __ATOMIC_SEQ_CST);
	return __atomic_load_n(&m->rpm, __ATOMIC_SEQ_CST);
}

static void hook_leave(struct bo_mgr *m)
{
	if (__atomic_sub_fetch(&m->rpm_hooks, 1, __ATOMIC_SEQ_CST) == 0 &&
	    !__atomic_load_n(&m->rpm, __ATOMIC_SEQ_CST)) {
		if (__atomic_load_n(&detach_waiters, __ATOMIC_SEQ_CST)) {
			/* Under the lock: detach checks the count under it
			 * before it sleeps, so this wake-up cannot fall
			 * between the two. */
			pthread_mutex_lock(&detach_lock);
			pthread_cond_broadcast(&detach_cond);
			pthread_mutex_unlock(&detach_lock);
		}
		zombie_reap(m);
	}
}

#ifdef UGPU_TEST_HOOKS
/* bo_rpm_test_set_detach_wait(): 0 = BO_RPM_DETACH_WAIT_MS (atomic). */
static unsigned int test_detach_wait_ms;

void bo_rpm_test_set_detach_wait(unsigned int ms)
{
	__atomic_store_n(&test_detach_wait_ms, ms, __ATOMIC_RELAXED);
}

static unsigned int detach_wait_ms(void)
{
	return __atomic_load_n(&test_detach_wait_ms, __ATOMIC_RELAXED);
}
#else
static unsigned int detach_wait_ms(void)
{
	return 0;
}
#endif

/* m->rpm already NULL. Returns true once no hook is counted, false after
 * BO_RPM_DETACH_WAIT_MS (the hook then frees the state when it leaves). */
static bool hooks_drain(struct bo_mgr *m)
{
	unsigned int ms = detach_wait_ms();
	struct timespec ts;
	bool idle;

	if (!ms)
		ms = BO_RPM_DETACH_WAIT_MS;
	ts = deadline_after_ms(ms);
	pthread_mutex_lock(&detach_lock);
	__atomic_add_fetch(&detach_waiters, 1, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&m->rpm_hooks, __ATOMIC_SEQ_CST) &&
	       pthread_cond_timedwait(&detach_cond, &detach_lock, &ts) != ETIMEDOUT)
		;
	idle = __atomic_load_n(&m->rpm_hooks, __ATOMIC_SEQ_CST) == 0;
	__atomic_sub_fetch(&detach_waiters, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&detach_lock);
	return idle;
}

#ifdef UGPU_TEST_HOOKS
/* ---- test fault injection: a gate in bo_rpm_fault_begin() ---------------- */

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int closed; /* atomic: read without the lock by every fault */
	unsigned int parked; /* under @lock */
} gate = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 };

void bo_rpm_test_gate(bool closed)
{
	pthread_mutex_lock(&gate.lock);
	__atomic_store_n(&gate.closed, closed, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&gate.cond);
	pthread_mutex_unlock(&gate.lock);
}

unsigned int bo_rpm_test_parked(void)
{
	unsigned int n;

	pthread_mutex_lock(&gate.lock);
	n = gate.parked;
	pthread_mutex_unlock(&gate.lock);
	return n;
}

/* Where a slow wake would keep the hook: park while the gate is closed
 * (bounded: a test that forgets to open it gets its faults back). */
static void gate_pass(void)
{
	struct timespec ts;

	if (!__atomic_load_n(&gate.closed, __ATOMIC_ACQUIRE))
		return;
	ts = deadline_after_ms(BO_RPM_TEST_GATE_TIMEOUT_MS);
	pthread_mutex_lock(&gate.lock);
	gate.parked++;
	while (__atomic_load_n(&gate.closed, __ATOMIC_ACQUIRE) &&
	       pthread_cond_timedwait(&gate.cond, &gate.lock, &ts) != ETIMEDOUT)
		;
	gate.parked--;
	pthread_mutex_unlock(&gate.lock);
}
#else
static void gate_pass(void)
{
}
#endif

static bool may_live_in_system(const struct ugpu_bo *bo)
{
	unsigned int i;

	for (i = 0; i < bo->nplacements; i++)
		if (bo->placements[i] == UGPU_PLACEMENT_SYSTEM)
			return true;
	return false;
}

/* ---- CPU faults (handler thread) ----------------------------------------- */

/*
 * The decision "VRAM: take a reference and list the BO" is made from the
 * placement now. It can change before the handler maps (a move blocks and
 * unblocks the map while this runs); cpu_map sees that (the map's
 * generation moved), calls fault_end and this again, so the decision and
 * the mapping always see the same placement (cpu_map.h, @fault_begin).
 */
int bo_rpm_fault_begin(void *owner)
{
	struct ugpu_bo *bo = owner;
	struct ugpu_device *dev = bo->dev;
	struct bo_mgr *m = dev->bo_mgr;
	struct bo_rpm *r = hook_enter(m);
	bool vram = __atomic_load_n(&bo->placement, __ATOMIC_RELAXED) == UGPU_PLACEMENT_VRAM;
	int ret = 0;

	test_point_obj(TEST_POINT_BO_FAULT_DECIDED, bo);
	if (!r) {
		/* Not attached: bring-up or close (the device is held awake), or
		 * detached by a removal, which left nothing in VRAM: a BO that
		 * still says VRAM has nothing to map. */
		if (vram && device_is_removed(dev))
			ret = -ENODEV;
		goto out_leave;
	}
	if (!vram)
		goto out_leave;
	gate_pass();
	ret = bo_rpm_get(dev, r->rpm);
	if (ret && dev->unplug && (ret == -ENODEV || vfio_dev_is_gone(dev->vdev))) {
		/*
		 * The device is gone (surprise removal not yet run, or running):
		 * whether this BO has a copy is the removal's to decide (a
		 * D3cold or host-suspend backup is adopted, else it is lost),
		 * and it blocks the BO's map to do so. Wait for that instead of
		 * failing now: a BO that has a copy must never SIGBUS
		 * (docs/unplug.md); a lost one faults again and gets it then.
		 */
		log_warn(dev->ctx, "%s: CPU touch of BO '%s': the device is gone; the access waits for the removal",
			 dev->name, bo->name);
		ret = -EINPROGRESS;
		goto out_leave;
	}
	if (ret) {
		log_err(dev->ctx, "%s: CPU touch of BO '%s': the device did not wake: %s",
			dev->name, bo->name, ugpu_strerror(ret));
		goto out_leave;
	}
	r->fault_ref = true;
	pthread_mutex_lock(&r->lock);
	if (!list_linked(&bo->rpm_mapped))
		mapped_add(r, bo);
	pthread_mutex_unlock(&r->lock);
	st_add(&r->st.wake_faults, 1);
	test_point_obj(TEST_POINT_BO_FAULT_LISTED, bo);
out_leave:
	hook_leave(m);
	return ret;
}

void bo_rpm_fault_end(void *owner)
{
	struct ugpu_bo *bo = owner;
	struct bo_mgr *m = bo->dev->bo_mgr;
	struct bo_rpm *r = hook_enter(m);

	/* Detached since fault_begin: the freer drops the reference. */
	if (r && r->fault_ref) {
		r->fault_ref = false;
		/*
		 * The mapping is in place now (or failed). List the BO again
		 * if a suspend's hook took it off since fault_begin: that
		 * suspend released a mapping that was not there yet and is
		 * aborted by our reference, and without this the next
		 * suspend, which can start as soon as we put it, would leave
		 * the new mapping live while the device sleeps. A hook that
		 * takes it off after this releases it: that waits for the map
		 * lock (held around an in-place give-back) or finds it mapped.
		 */
		pthread_mutex_lock(&r->lock);
		if (!list_linked(&bo->rpm_mapped) &&
		    __atomic_load_n(&bo->placement, __ATOMIC_RELAXED) == UGPU_PLACEMENT_VRAM)
			mapped_add(r, bo);
		pthread_mutex_unlock(&r->lock);
		rpm_put(r->rpm);
	}
	hook_leave(m);
}

/* ---- bookkeeping (manager lock held) ------------------------------------- */

static void drop_backups_locked(struct bo_rpm *r, const struct ugpu_bo *bo)
{
	size_t i = 0;

	while (i < r->nbackups) {
		if (bo && r->backups[i].bo != bo) {
			i++;
			continue;
		}
		free(r->backups[i].data);
		r->backups[i] = r->backups[r->nbackups - 1];
		/* release: bo_rpm_store_u64() reads it without the lock */
		__atomic_store_n(&r->nbackups, r->nbackups - 1, __ATOMIC_RELEASE);
	}
}

/* Off the mapped list; @destroy: off every list, backups dropped. */
static void unlist(struct ugpu_bo *bo, bool destroy)
{
	struct bo_rpm *r = rpm_of(bo->dev);

	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	if (list_linked(&bo->rpm_mapped))
		mapped_del(r, bo);
	if (destroy) {
		if (list_linked(&bo->rpm_evicted))
			list_del(&bo->rpm_evicted);
		drop_backups_locked(r, bo);
	}
	pthread_mutex_unlock(&r->lock);
}

void bo_rpm_unmapped(struct ugpu_bo *bo)
{
	unlist(bo, false);
}

void bo_rpm_forget(struct ugpu_bo *bo)
{
	unlist(bo, true);
}

/* Did a suspend abandoned because @dev went away keep its backups for the
 * removal (bo_rpm_get())? */
static bool gone_kept(struct ugpu_device *dev)
{
	struct bo_mgr *m = dev->bo_mgr;
	struct bo_rpm *r;
	bool kept;

	if (!m)
		return false;
	/* counted as a hook: a detach cannot free the state under the read
	 * (callers hold no manager lock) */
	r = hook_enter(m);
	kept = r && __atomic_load_n(&r->gone_kept, __ATOMIC_ACQUIRE);
	hook_leave(m);
	return kept;
}

/* Nothing may reach VRAM: backups kept for the removal, or a removal found
 * the device unreadable (it decides from the backups what each BO keeps; a
 * store in VRAM meanwhile, on a device still there, was lost to the backup
 * adopted after it: the review of 2026-12-07). */
static bool vram_closed(struct ugpu_device *dev)
{
	return device_vram_lost(dev) || gone_kept(dev);
}

int bo_rpm_get(struct ugpu_device *dev, struct rpm *rpm)
{
	int ret;

	if (device_vram_lost(dev))
		return -ENODEV; /* not woken for nothing */
	ret = rpm_get(rpm);
	if (!ret && vram_closed(dev)) {
		rpm_put(rpm); /* awake on paper: VRAM is the removal's */
		ret = -ENODEV;
	}
	return ret;
}

bool bo_rpm_get_if_active(struct ugpu_device *dev, struct rpm *rpm)
{
	if (!rpm_get_if_active(rpm))
		return false;
	if (!vram_closed(dev))
		return true;
	rpm_put(rpm);
	return false;
}

bool bo_rpm_take_backup(struct ugpu_bo *bo, void *dst)
{
	struct bo_rpm *r = rpm_of(bo->dev);
	struct buddy_block *b;
	uint64_t pos = 0;
	bool whole = true, lost;

	/* Only while VRAM really is gone (the device sleeps in D3cold or a
	 * D3cold suspend is past its point of no return) or out of reach
	 * with the backups current (a suspend abandoned because the device
	 * went away kept them): a suspend still in its hooks, or one
	 * abandoned with the device there, left VRAM intact and maybe newer.
	 * (The rpm lock is not taken under ours.) */
	if (!r)
		return false;
	lost = rpm_vram_lost(r->rpm);
	pthread_mutex_lock(&r->lock);
	if (!r->gone_kept && !lost) {
		pthread_mutex_unlock(&r->lock);
		return false;
	}
	buddy_list_for_each(b, bo->vram) {
		uint64_t len = vram_block_size(b);
		size_t i;

		for (i = 0; i < r->nbackups; i++)
			if (r->backups[i].bo == bo && r->backups[i].offset == buddy_block_offset(b))
				break;
		if (i == r->nbackups || r->backups[i].len != len) {
			whole = false;
			break;
		}
		if (dst)
			memcpy((char *)dst + pos, r->backups[i].data, len);
		pos += len;
	}
	whole = whole && pos >= bo->size;
	if (whole && dst)
		drop_backups_locked(r, bo);
	pthread_mutex_unlock(&r->lock);
	return whole;
}

void bo_rpm_store_u64(struct ugpu_device *dev, uint64_t *p, uint64_t v)
{
	struct bo_rpm *r = rpm_of(dev);
	uint64_t off = (uint64_t)((char *)p - (char *)dev->vram), end = off + sizeof(v);
	size_t i;

	/* Nothing backed up (the device is awake): the common case, no lock.
	 * Backups are added under the manager lock, which the caller holds,
	 * so none appears meanwhile; a resume drops them with a release store
	 * after its copies, so reading 0 here orders our store after them. */
	if (!r || !__atomic_load_n(&r->nbackups, __ATOMIC_ACQUIRE)) {
		__atomic_store_n(p, v, __ATOMIC_RELAXED);
		return;
	}
	/* The store and its note under the list lock, which bo_rpm_resume()
	 * holds across its copies and the drop: either the resume copies back
	 * a backup that has the store, or it ran first and the store lands
	 * after its copy. (Storing to VRAM first and noting after let a resume
	 * in between overwrite the store with the older backup and then drop
	 * the backups, so the note found none: a cleared entry came back.) */
	pthread_mutex_lock(&r->lock);
	__atomic_store_n(p, v, __ATOMIC_RELAXED);
	for (i = 0; i < r->nbackups; i++) {
		const struct bo_rpm_backup *k = &r->backups[i];
		uint64_t a = off > k->offset ? off : k->offset;
		uint64_t b = end < k->offset + k->len ? end : k->offset + k->len;

		if (a < b) /* the part of the store inside this block */
			memcpy((char *)k->data + (a - k->offset), (const char *)&v + (a - off), b - a);
	}
	pthread_mutex_unlock(&r->lock);
}

/* ---- suspend / resume / restore ------------------------------------------ */

/*
 * Copy @bo's VRAM blocks by CPU into new backups. The copies are made
 * without the list lock (a fault on another BO takes it, and must not wait
 * for a copy); only the insertion takes it. Manager lock held.
 */
static int backup_bo(struct bo_rpm *r, struct ugpu_bo *bo)
{
	struct ugpu_device *dev = r->dev;
	struct bo_rpm_backup *k;
	struct buddy_block *b;
	size_t n = 0, i;
	int ret = 0;

	buddy_list_for_each(b, bo->vram)
		n++;
	k = calloc(n ? n : 1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	i = 0;
	buddy_list_for_each(b, bo->vram) {
		k[i] = (struct bo_rpm_backup){ .bo = bo, .offset = buddy_block_offset(b),
					       .len = vram_block_size(b) };
		k[i].data = malloc(k[i].len);
		if (!k[i].data) {
			ret = -ENOMEM;
			goto out_free;
		}
		memcpy(k[i].data, (char *)dev->vram + k[i].offset, k[i].len);
		i++;
	}
	/* A device that went during the copy gave what a dead BAR reads
	 * (all-ones on real hardware), not the BO: no backup, the suspend
	 * fails (the re-review of 2026-12-07: adopted as good). */
	if (vfio_dev_is_gone(dev->vdev) || device_vram_lost(dev)) {
		ret = -ENODEV;
		goto out_free;
	}
	pthread_mutex_lock(&r->lock);
	if (r->nbackups + n > r->cap_backups) {
		size_t cap = r->cap_backups ? r->cap_backups : 16;
		void *p;

		while (cap < r->nbackups + n)
			cap *= 2;
		p = realloc(r->backups, cap * sizeof(*r->backups));
		if (!p) {
			pthread_mutex_unlock(&r->lock);
			ret = -ENOMEM;
			goto out_free;
		}
		r->backups = p;
		r->cap_backups = cap;
	}
	memcpy(r->backups + r->nbackups, k, n * sizeof(*k));
	__atomic_store_n(&r->nbackups, r->nbackups + n, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&r->lock);
	free(k);
	st_add(&r->st.backed_up, 1);
	return 0;

out_free:
	while (i--)
		free(k[i].data);
	free(k);
	return ret;
}

/*
 * D3cold loses VRAM: evict what may live in system, back up the rest. Runs
 * after every CPU mapping of a VRAM BO was released: from then on a store
 * through one faults first, takes a reference and so aborts this suspend
 * (rpm.c), instead of landing in VRAM behind the backup's back.
 */
static int evict_all_locked(struct bo_rpm *r, struct bo_mgr *m)
{
	struct ugpu_device *dev = r->dev;
	int ret;

	bo_for_each(pos, &m->all) {
		struct ugpu_bo *bo = bo_of_all(pos);

		/* Someone needs the device: this suspend is abandoned, stop
		 * paying for it (what was evicted comes back, as after any
		 * aborted D3cold). */
		if (rpm_suspend_aborted(r->rpm))
			return -EAGAIN;
		if (bo->placement != UGPU_PLACEMENT_VRAM)
			continue;
		if (!bo->pin_count && may_live_in_system(bo)) {
			ret = bo_move_locked(bo, UGPU_PLACEMENT_SYSTEM);
			if (ret) {
				log_warn(dev->ctx, "%s: D3cold: cannot evict BO '%s': %s",
					 dev->name, bo->name, ugpu_strerror(ret));
				return -EBUSY;
			}
			pthread_mutex_lock(&r->lock);
			if (!list_linked(&bo->rpm_evicted))
				list_add_tail(&r->evicted, &bo->rpm_evicted);
			pthread_mutex_unlock(&r->lock);
			st_add(&r->st.evicted, 1);
			continue;
		}
		ret = backup_bo(r, bo);
		if (ret) {
			log_warn(dev->ctx, "%s: D3cold: no memory to back up BO '%s'",
				 dev->name, bo->name);
			return -EBUSY;
		}
		test_point_obj(TEST_POINT_BO_D3COLD_BACKUP, bo);
	}
	return 0;
}

/* Release the CPU mapping of every BO a fault mapped in VRAM since the last
 * release. Manager lock held. */
static int release_all_locked(struct bo_rpm *r)
{
	struct ugpu_device *dev = r->dev;
	int ret = 0;

	for (;;) {
		struct ugpu_bo *bo;

		if (rpm_suspend_aborted(r->rpm))
			return -EAGAIN; /* abandoned: the rest stays mapped */
		test_point(TEST_POINT_BO_RELEASE_NEXT);
		pthread_mutex_lock(&r->lock);
		if (list_empty(&r->mapped)) {
			pthread_mutex_unlock(&r->lock);
			break;
		}
		bo = bo_of_mapped(r->mapped.next);
		mapped_del(r, bo);
		pthread_mutex_unlock(&r->lock);
		if (!bo->map || bo->placement != UGPU_PLACEMENT_VRAM)
			continue;
		/* Not under the list lock: this may wait for the handler thread. */
		ret = cpu_map_release(bo->map);
		if (ret) {
			log_err(dev->ctx, "%s: cannot release the CPU mapping of BO '%s': %s",
				dev->name, bo->name, ugpu_strerror(ret));
			pthread_mutex_lock(&r->lock);
			mapped_add(r, bo);
			pthread_mutex_unlock(&r->lock);
			break;
		}
		st_add(&r->st.released, 1);
	}
	return ret;
}

static int bo_rpm_suspend(void *arg, enum ugpu_power_state target)
{
	struct bo_rpm *r = arg;
	struct ugpu_device *dev = r->dev;
	struct bo_mgr *m = dev->bo_mgr;
	int ret;

	/* Backups kept for a removal that has not run: the device is gone,
	 * and a second set would only double them (the review). A veto, not
	 * an error: retried after the delay, not logged each time. */
	if (__atomic_load_n(&r->gone_kept, __ATOMIC_ACQUIRE))
		return -EBUSY;
	/* A removal found the device unreadable: a new suspend would take
	 * its backups from VRAM it cannot read, after the removal looked
	 * (the re-review of 2026-12-07). */
	if (device_vram_lost(dev))
		return -EBUSY;
	/* The manager lock keeps every listed BO alive and in place while its
	 * mapping is released; faults do not need it (only the list lock).
	 * Mappings first: a D3cold backup must be taken when no CPU store
	 * can reach VRAM without waking (or keeping) the device. */
	bo_mgr_lock(m);
	ret = release_all_locked(r);
	if (!ret && target == UGPU_POWER_D3COLD)
		ret = evict_all_locked(r, m);
	pthread_mutex_unlock(&m->lock);
	return ret;
}

/* May run on the cpu_map handler thread: CPU copies only, no manager lock.
 * Pinned BOs never move and a destroyed one dropped its backups, so each
 * backup's VRAM range still belongs to its BO. */
static void bo_rpm_resume(void *arg, enum ugpu_power_state from)
{
	struct bo_rpm *r = arg;
	/* the removal's own test when it claimed them (rpm_claim_backups());
	 * and a wake from D3cold while a removal that found the device
	 * unreadable runs (a get that is not a BO access: host suspend, the
	 * application's, SVM): VRAM was lost, the backups are the removal's
	 * (restoring and dropping them lost the BOs: the re-review) */
	bool keep = (rpm_power_step_failed(r->rpm) &&
		     (vfio_dev_is_gone(r->dev->vdev) || device_vram_lost(r->dev))) ||
		    (from == UGPU_POWER_D3COLD && device_vram_lost(r->dev));
	size_t i;

	pthread_mutex_lock(&r->lock);
	if (r->gone_kept) {
		/* a later suspend's hooks refused (bo_rpm_suspend()): the
		 * backups stay the removal's (dropping them here lost the
		 * BOs: the re-review) */
		pthread_mutex_unlock(&r->lock);
		return;
	}
	if (keep) {
		/* Abandoned because the device went away in the power step:
		 * VRAM is out of reach whatever its state, and the backups
		 * hold what it had when the mappings went, which nothing
		 * passed since (every get waited for the power step; from now
		 * on bo_rpm_get() makes accesses wait for the removal):
		 * kept for the removal to adopt (bo_rpm_take_backup()), not
		 * dropped as for a device that is still there (a surprise
		 * removal between the hooks and the power step reported such
		 * BOs lost, test_surprise_during_d3cold_entry_keeps_stores).
		 * Only then: a suspend abandoned for an access (abort, veto)
		 * may have let it write VRAM after the backups (the review). */
		/* (also when the removal took them all already: it is
		 * still running, and VRAM is not for anyone meanwhile) */
		__atomic_store_n(&r->gone_kept, true, __ATOMIC_RELEASE);
		pthread_mutex_unlock(&r->lock);
		return;
	}
	if (from == UGPU_POWER_D3COLD)
		for (i = 0; i < r->nbackups; i++)
			memcpy((char *)r->dev->vram + r->backups[i].offset, r->backups[i].data,
			       r->backups[i].len);
	drop_backups_locked(r, NULL);
	pthread_mutex_unlock(&r->lock);
}

/* rpm thread, reference held: move the D3cold evictees back to VRAM. */
static void bo_rpm_restore(void *arg)
{
	struct bo_rpm *r = arg;
	struct bo_mgr *m = r->dev->bo_mgr;

	if (__atomic_load_n(&r->gone_kept, __ATOMIC_ACQUIRE) || vfio_dev_is_gone(r->dev->vdev))
		return; /* the device went: the evictees stay in system memory */

	bo_mgr_lock(m);
	for (;;) {
		struct ugpu_bo *bo;

		pthread_mutex_lock(&r->lock);
		if (list_empty(&r->evicted)) {
			pthread_mutex_unlock(&r->lock);
			break;
		}
		bo = bo_of_evicted(r->evicted.next);
		list_del(&bo->rpm_evicted);
		pthread_mutex_unlock(&r->lock);
		if (bo->placement != UGPU_PLACEMENT_SYSTEM || bo->pin_count ||
		    bo->placements[0] != UGPU_PLACEMENT_VRAM || vm_bo_busy_locked(bo))
			continue; /* (a GPU kernel uses it from system memory now) */
		/* Best effort: a BO that does not fit stays in system memory,
		 * as an evicted BO does until it is next validated. */
		if (bo_move_locked(bo, UGPU_PLACEMENT_VRAM) == 0)
			st_add(&r->st.restored, 1);
	}
	pthread_mutex_unlock(&m->lock);
}

/* Adds our counters into @st (the BO side of ugpu_rpm_stats). Called under
 * the rpm lock, also during a transition: reads atomics only. */
static void bo_rpm_stats(void *arg, struct ugpu_rpm_stats *st)
{
	struct bo_rpm *r = arg;

	st->bo_mappings_listed += st_get(&r->st.listed);
	st->bo_mappings_released += st_get(&r->st.released);
	st->bo_wake_faults += st_get(&r->st.wake_faults);
	st->bo_evicted += st_get(&r->st.evicted);
	st->bo_restored += st_get(&r->st.restored);
	st->bo_backed_up += st_get(&r->st.backed_up);
}

static const struct rpm_hook_ops bo_rpm_ops = {
	.name = "bo",
	.suspend = bo_rpm_suspend,
	.resume = bo_rpm_resume,
	.restore = bo_rpm_restore,
	.stats = bo_rpm_stats,
	.evicts_vram = true,
};

/* ---- setup ----------------------------------------------------------------- */

int bo_rpm_attach(struct ugpu_device *dev)
{
	struct bo_rpm *r;
	int ret;

	if (!dev->bo_mgr || !dev->rpm)
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->dev = dev;
	r->rpm = dev->rpm;
	rpm_ref(r->rpm);
	pthread_mutex_init(&r->lock, NULL);
	list_init(&r->mapped);
	list_init(&r->evicted);
	ret = rpm_hook_register(r->rpm, &bo_rpm_ops, r, &r->hook);
	if (ret) {
		rpm_unref(r->rpm);
		pthread_mutex_destroy(&r->lock);
		free(r);
		return ret;
	}
	__atomic_store_n(&dev->bo_mgr->rpm, r, __ATOMIC_RELEASE);
	return 0;
}

void bo_rpm_detach(struct ugpu_device *dev)
{
	struct bo_mgr *m = dev->bo_mgr;
	struct bo_rpm *r;

	if (!m || !(r = __atomic_load_n(&m->rpm, __ATOMIC_ACQUIRE)))
		return;
	/* From here until rpm_fini() the device must not sleep: without our
	 * hook nothing would release the CPU mappings first. A reference we
	 * never drop holds it awake (rpm_fini() ends them all). A removed
	 * device is not woken: it is gone, and its data was evacuated. */
	if (!device_is_removed(dev) && rpm_get(r->rpm))
		log_warn(dev->ctx, "%s: the device did not wake for its teardown", dev->name);
	/* No suspend/resume/restore hook runs after this (it waits for one
	 * that is running); our counters go into the rpm's kept totals. */
	rpm_hook_unregister(r->rpm, r->hook);
	/* Under the manager lock: BO code calls bo_rpm_forget() under it, so
	 * no BO leaves the lists unseen between the unpublish and the emptying
	 * below. Waiting for the fault hooks under it is safe: they never take
	 * it, and with our rpm hook gone their rpm_get() waits for nothing that
	 * does (a holder of this lock may wait for the handler thread anyway). */
	bo_mgr_lock(m);
	pthread_mutex_lock(&r->lock);
	while (!list_empty(&r->mapped))
		mapped_del(r, bo_of_mapped(r->mapped.next));
	while (!list_empty(&r->evicted))
		list_del(r->evicted.next);
	pthread_mutex_unlock(&r->lock);
	__atomic_store_n(&m->rpm_zombie, r, __ATOMIC_SEQ_CST);
	__atomic_store_n(&m->rpm, NULL, __ATOMIC_SEQ_CST);
	if (!hooks_drain(m))
		log_warn(dev->ctx, "%s: a CPU fault hook still runs after %d ms; it frees the BO runtime-PM state when it ends",
			 dev->name, BO_RPM_DETACH_WAIT_MS);
	pthread_mutex_unlock(&m->lock);
	/* Free it here unless a hook is still counted (then it does). */
	if (!__atomic_load_n(&m->rpm_hooks, __ATOMIC_SEQ_CST))
		zombie_reap(m);
}

static int bo_rpm_up(struct ugpu_device *dev, const char *uri)
{
	(void)uri;
	return bo_rpm_attach(dev);
}

static struct device_component bo_rpm_component = {
	.name = "bo-rpm",
	.order = DEVICE_STEP_BO_RPM,
	.life = DEVICE_LIFE_DEVICE,
	.up = bo_rpm_up,
	.down = bo_rpm_detach,
};
DEVICE_COMPONENT(bo_rpm_component)

void bo_rpm_get_stats(struct ugpu_device *dev, struct bo_rpm_stats *out)
{
	struct bo_mgr *m = dev->bo_mgr;
	struct bo_rpm *r;

	memset(out, 0, sizeof(*out));
	if (!m)
		return;
	/* Counted like a hook: any thread may ask, even during a detach. */
	r = hook_enter(m);
	if (r) {
		out->listed = st_get(&r->st.listed);
		out->released = st_get(&r->st.released);
		out->wake_faults = st_get(&r->st.wake_faults);
		out->evicted = st_get(&r->st.evicted);
		out->restored = st_get(&r->st.restored);
		out->backed_up = st_get(&r->st.backed_up);
	}
	hook_leave(m);
}
