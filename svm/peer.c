/* SPDX-License-Identifier: MIT */
/*
 * Shared virtual memory across devices (docs/svm.md, "Several devices";
 * docs/multi-device.md): a range in one device's VRAM that another device
 * of its owner group faults on moves over the fabric (the source's copy
 * engine writes the destination's VRAM: no detour through the process), or
 * is used in place through the faulting device's window onto the peer's
 * VRAM; a preferred location naming a peer puts ranges there (fallback
 * order: that peer, the faulting device's VRAM, system memory); a removal
 * sends the removed device's ranges to a peer with room.
 *
 * Devices outside the faulting device's owner group (a slow link, another
 * fabric, a removed device) never see each other's VRAM: a range there
 * comes back into the process first, as with one device.
 *
 * Locks: as svm.h. A peer's struct svm_dev is kept alive while it is used
 * here by its @peer_users count (under svm->lock); svm_down() marks it
 * @going and waits for the count to drop before it takes its ranges home.
 */
#include <errno.h>
#include <inttypes.h>

#include <ugpu/device.h>
#include <ugpu/fabric.h>

#include "base/clock.h"
#include "base/log.h"
#include "mm/bo.h"
#include "mm/peer.h"
#include "mm/vm.h"
#include "src/device.h"
#include "src/rpm.h"
#include "svm/svm.h"

/* @p is in use here: svm_down() waits before it takes its ranges home.
 * Lock held; false when it is going. */
static bool peer_hold_locked(struct svm_dev *p)
{
	if (p->going)
		return false;
	p->peer_users++;
	return true;
}

void peer_put(struct svm *s, struct svm_dev *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&s->lock);
	if (!--p->peer_users)
		pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

struct svm_dev *peer_pref_get(struct svm *s, struct svm_dev *sd, const struct svm_attrs *a)
{
	struct svm_dev *p = NULL;

	if (a->pref < 0 || a->pref == (int)sd->id)
		return NULL;
	pthread_mutex_lock(&s->lock);
	list_for_each(l, &s->devs) {
		struct svm_dev *d = list_entry(l, struct svm_dev, link);

		if ((int)d->id == a->pref) {
			p = peer_hold_locked(d) ? d : NULL;
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
	/* advised with a fast link; a link that went (the peer was removed)
	 * leaves the faulting device's own VRAM as the place, and so does a
	 * peer whose removal has begun (its windows revoked, p2p_gone: what
	 * went into its VRAM now would only have to leave again) */
	if (p && (__atomic_load_n(&p->dev->p2p_gone, __ATOMIC_ACQUIRE) ||
		  !device_same_owner(sd->dev, p->dev))) {
		peer_put(s, p);
		p = NULL;
	}
	return p;
}

/* Count a range that arrived in @to's VRAM from a peer's. */
static void count_in(struct svm *s, struct svm_dev *to, uint64_t size, uint64_t t0)
{
	pthread_mutex_lock(&s->lock);
	to->st.svm_peer_migrate_count++;
	to->st.svm_vram_bytes += size;
	size_count(&to->st, size, 1, (now_ns() - t0) / 1000);
	pthread_mutex_unlock(&s->lock);
}

/*
 * Move @r (owned, R_VRAM in another device's VRAM) into @to's VRAM over
 * the fabric: the source's copy engine writes the new VRAM directly, never
 * through the process. The GPU maps go first (no kernel writes the old
 * copy during the copy); the old VRAM goes after. On an error @r stays
 * where it was (its maps gone: the next access faults), nothing lost.
 * -ENOLINK: no fast link; -EBUSY: a host-suspend cycle is open on @to.
 */
int range_to_peer(struct svm *s, struct svm_range *r, struct svm_dev *to)
{
	struct svm_dev *from = r->sd;
	uint64_t t0 = now_ns();
	struct ugpu_bo *bo;
	int ret;

	if (device_link(from->dev, to->dev) != UGPU_LINK_FAST)
		return -ENOLINK;
	if (!bo_pm_active(to->dev))
		return -EBUSY;
	/* the destination awake for the peer writes (the reference device
	 * fails PEER descriptors to a peer in D3); the source is held awake
	 * by its ranges (vram_ranges_inc()) */
	ret = rpm_get_dev(to->dev);
	if (ret)
		return ret;
	ret = range_bo_create(r, to, "svm", 0, &bo);
	if (ret)
		goto out_put;
	bo_pm_wait_awake(from->dev);
	/* the timeslice, as for a move home: two devices' atomics on one
	 * range take turns, not ping-pong per access */
	sleep_until_ns(r->vram_at_ns + ms_to_ns(SVM_TIMESLICE_MS));
	range_unmap_gpu(s, r);
	ret = bo_copy_to_peer(r->bo, bo);
	if (ret) {
		log_err(s->ctx, "svm: [0x%" PRIx64 ", +0x%" PRIx64 ") could not move from %s to %s over the fabric (%s): it stays",
			r->start, r->size, from->dev->name, to->dev->name, ugpu_strerror(ret));
		ugpu_bo_put(bo);
		goto out_put;
	}
	range_free_vram(s, r);
	r->bo = bo;
	r->vram_at_ns = now_ns();
	range_set(s, r, R_VRAM, to);
	vram_ranges_inc(s, to);
	bo_mark_svm(bo);
	count_in(s, to, r->size, t0);
	log_dbg(s->ctx, "svm: [0x%" PRIx64 ", +0x%" PRIx64 ") moved from %s to %s over the fabric",
		r->start, r->size, from->dev->name, to->dev->name);
out_put:
	rpm_put_dev(to->dev);
	return ret;
}

int peer_to_vram(struct svm *s, struct svm_range *r, struct svm_dev *pd, struct svm_dev *sd)
{
	int ret = -ENOSPC;

	if (pd && bo_pm_active(pd->dev) && !rpm_get_dev(pd->dev)) {
		ret = range_to_vram(s, r, pd, 0);
		rpm_put_dev(pd->dev);
		if (!ret) {
			pthread_mutex_lock(&s->lock);
			pd->st.svm_peer_pref_count++;
			pthread_mutex_unlock(&s->lock);
			return 0;
		}
		log_dbg(s->ctx, "svm: [0x%" PRIx64 ", +0x%" PRIx64 ") is advised to %s, which has no room (%s): %s's VRAM instead",
			r->start, r->size, pd->dev->name, ugpu_strerror(ret), sd->dev->name);
	}
	return range_to_vram(s, r, sd, 0);
}

/* @r's VRAM is @x's, and @x still lets its peers in (not going, not
 * revoked, in @sd's owner group). */
static bool usable_in_place(struct svm_dev *x, struct svm_dev *sd)
{
	return !__atomic_load_n(&x->dev->p2p_gone, __ATOMIC_ACQUIRE) &&
	       device_same_owner(x->dev, sd->dev);
}

/*
 * range_to_cpu() of @r, in another device's VRAM, for a GPU fault: a copy
 * that fails is tried again, SVM_COPY_TRIES tries SVM_COPY_RETRY_MS apart,
 * as a collection's is: a transient failure must not abort the kernel
 * (test_svm_model's injected copy failures: one failed copy back aborted a
 * peer's read with -EFAULT). -ENOENT, -ENODATA and -EAGAIN (the process
 * unmapped, the device lost it, a collection takes it) are answers, not
 * failures.
 */
static int to_cpu_retried(struct svm *s, struct svm_range *r)
{
	int ret = range_to_cpu(s, r);

	for (int k = 1; k < SVM_COPY_TRIES && ret && ret != -ENOENT && ret != -ENODATA &&
			ret != -EAGAIN && r->where == R_VRAM;
	     k++) {
		sleep_until_ns(now_ns() + ms_to_ns(SVM_COPY_RETRY_MS));
		ret = range_to_cpu(s, r);
	}
	return ret;
}

int peer_place(struct svm *s, struct svm_range *r, struct svm_dev *sd, struct svm_dev *pd,
	       const struct svm_attrs *a, bool atomic_vram, bool *want_vram)
{
	struct svm_dev *x = r->sd;
	int ret;

	if (r->where == R_DUP) {
		/* another device's read-mostly copy: the process has the
		 * bytes; this device makes its own copy if it wants one */
		dup_drop(s, r);
		return 1;
	}
	if (r->where == R_INPLACE) {
		range_unmap_gpu(s, r);
		range_unmap_dma(s, r);
		return 1;
	}
	/* R_VRAM in @x's. Used where it is: it is where advice wants it
	 * (a preferred location naming @x), or this device is advised to
	 * access it where it is; atomics need it in the faulting device's
	 * VRAM. */
	if (!atomic_vram && (x == pd || (a->accessed_by & (1ull << sd->id))) &&
	    usable_in_place(x, sd))
		return 0;
	if (a->migration == UGPU_SVM_MIGRATE_ONLY_SYSTEM_PAGES && !atomic_vram) {
		/* not taken into this device's VRAM: used from the process */
		*want_vram = false;
		ret = to_cpu_retried(s, r);
		if (ret && r->where == R_VRAM && usable_in_place(x, sd))
			return 0; /* it cannot come home now: used where it is */
		return ret ? ret : 1;
	}
	if (*want_vram || atomic_vram) {
		struct svm_dev *to = !atomic_vram && pd ? pd : sd;

		if (to != x && usable_in_place(x, to) && !range_to_peer(s, r, to))
			return 0;
		if (to != sd && !range_to_peer(s, r, sd))
			return 0; /* the advised peer had no room: here */
	}
	ret = to_cpu_retried(s, r);
	if (ret && r->where == R_VRAM && !atomic_vram && usable_in_place(x, sd))
		return 0; /* it cannot come home now: used where it is */
	return ret ? ret : 1;
}

int range_map_peer(struct svm *s, struct svm_range *r, struct ugpu_vm *vm, bool writable)
{
	int ret = vm_svm_map_peer(vm, r->start, r->size, r->bo, writable);
	struct svm_dev *sd;

	pthread_mutex_lock(&s->lock);
	sd = sd_of(s, vm->dev);
	if (!ret && sd)
		sd->st.svm_peer_map_count++;
	/* the peer's VRAM is in use: its idle release (svm/fault.c) waits
	 * as it would for a fault of its own */
	if (!ret)
		r->sd->active_ns = now_ns();
	pthread_mutex_unlock(&s->lock);
	if ((ret == -ENODEV || ret == -ENOLINK) && sd) {
		/* the peer's removal or close began (its windows revoked), or
		 * a link went, since the range was placed: it comes home and
		 * the device uses it there, as with no peer */
		ret = range_to_cpu(s, r);
		if (!ret)
			ret = range_in_place(s, r, sd);
		if (!ret)
			ret = vm_svm_map(vm, r->start, r->size, NULL, r->iova, writable);
	}
	return ret;
}

/* A range of the device (only its VRAM copy, R_VRAM: a read-mostly copy
 * has the process's pages behind it) from @lo on. */
static bool vram_only_of(const struct svm_range *r, const void *sd)
{
	return r->where == R_VRAM && r->sd == sd;
}

/* @r (owned, in @from's VRAM) into @to's: over a fast link directly, over
 * a slow one through the process (the bytes are there after the first
 * half, so a failed second half loses nothing). @to held. */
static int range_evacuate_one(struct svm *s, struct svm_range *r, struct svm_dev *to)
{
	struct ugpu_device_mem m = { .size = sizeof(m) };
	int ret;

	/* only free room: a removal evicts nothing of the peer's own */
	if (ugpu_device_mem_stats(to->dev, &m) || m.vram_free < r->size)
		return -ENOSPC;
	if (device_link(r->sd->dev, to->dev) == UGPU_LINK_FAST)
		return range_to_peer(s, r, to);
	ret = range_to_cpu(s, r);
	if (ret || !bo_pm_active(to->dev) || rpm_get_dev(to->dev))
		return ret ? ret : -EBUSY;
	ret = range_to_vram(s, r, to, 0);
	rpm_put_dev(to->dev);
	if (ret)
		return 1; /* in the process: svm_down() has nothing left to do */
	pthread_mutex_lock(&s->lock);
	to->st.svm_peer_migrate_count++; /* (range_to_vram() counted the rest) */
	pthread_mutex_unlock(&s->lock);
	return 0;
}

void svm_to_peers(void *arg, struct ugpu_device *dev)
{
	struct ugpu_device *peers[UGPU_MAX_PEERS];
	struct svm_dev *to[UGPU_MAX_PEERS] = { 0 };
	struct svm *s = arg;
	struct svm_range *r;
	struct svm_dev *sd;
	uint64_t lo = 0, n = 0, bytes = 0;
	unsigned int np, i;

	np = device_peers_get(dev, peers, UGPU_MAX_PEERS);
	if (!np)
		return;
	pthread_mutex_lock(&g_svm_lock);
	pthread_mutex_lock(&s->lock);
	sd = sd_of(s, dev);
	for (i = 0; i < np; i++) {
		to[i] = sd_of(s, peers[i]);
		if (to[i] && !peer_hold_locked(to[i]))
			to[i] = NULL;
	}
	pthread_mutex_unlock(&s->lock);
	while (sd && (r = own_first(s, lo, UINT64_MAX, vram_only_of, sd))) {
		uint64_t size = r->size;

		lo = r->start + r->size;
		for (i = 0; i < np; i++) {
			int ret = to[i] ? range_evacuate_one(s, r, to[i]) : -ENODEV;

			if (!ret) {
				n++;
				bytes += size;
				log_info(s->ctx, "svm: removal of %s: [0x%" PRIx64 ", +0x%" PRIx64 ") moved to %s",
					 dev->name, r->start, size, peers[i]->name);
			}
			if (ret != -ENOSPC && ret != -ENODEV && ret != -EBUSY && ret != -ENOLINK &&
			    ret != -EIO)
				break; /* moved, or home: the next range */
		}
		range_done(s, r);
	}
	if (n)
		log_warn(s->ctx, "svm: removal of %s: %" PRIu64 " ranges (%" PRIu64 " bytes) moved to peers' VRAM",
			 dev->name, n, bytes);
	for (i = 0; i < np; i++) {
		if (to[i])
			peer_put(s, to[i]);
		device_put(peers[i]);
	}
	pthread_mutex_unlock(&g_svm_lock);
}
