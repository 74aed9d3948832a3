/* SPDX-License-Identifier: MIT */
/*
 * Device removal: the watcher thread, the removal sequence, the public
 * unplug API (include/ugpu/unplug.h). Design and guarantees: docs/unplug.md.
 *
 * The removal, always on the watcher thread:
 *   1. take the host-suspend lock (bounded): no suspend/resume transition
 *      runs during a removal, and one in progress finishes first;
 *   2. orderly removal only: wake the device through runtime PM (bounded);
 *      a device unreadable (surprise, or a wake that failed): a runtime
 *      D3cold suspend in its hooks finishes them first (bounded);
 *   3. lock the memory layer (bounded): no new submission, no BO changes
 *      place; every submission path runs under it and waits for its own
 *      fences, so what remains in flight is drained by engine_idle();
 *   4. an unreadable device's runtime D3cold suspend between its hooks and
 *      its power step gives its backups to the removal (rpm_claim_backups());
 *      the memory layer moves every BO of the program out of VRAM
 *      (struct unplug_mem_ops, mm/evacuate.c): with the engines, or adopted
 *      from a host-suspend or D3cold backup, or marked lost and counted;
 *   5. every DMA mapping a BO holds is removed from the transport;
 *   6. dev->removed is set (BO paths now refuse VRAM and map nothing), CPU
 *      mappings are held, the lock is dropped, and device_teardown(DEVICE)
 *      releases the device's resources in the reverse order of bring-up,
 *      closing the transport last; then the mappings fault to system memory;
 *   7. what step 4 kept from backups moves on to a peer's VRAM with room.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <ugpu/unplug.h>

#include "engines/engine.h"
#include "engines/exec.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/test_point.h"
#include "src/device.h"
#include "src/remote.h"
#include "src/rpm.h"
#include "src/suspend.h"
#include "src/unplug.h"
#include "vfio/pci_cfg.h"

/*
 * struct unplug - per device, context lifetime (freed by ugpu_device_close).
 *
 * Locking: @lock protects @stop, @api_request, @surprise_request, @info,
 * @fn/@user and @obs/@obs_arg; @cond signals removal progress to
 * ugpu_device_unplug() callers. @state is atomic (read without the lock by
 * ugpu_device_is_gone()) and written under @lock. The watcher thread is the
 * only one that runs a removal; @lock is never held across one.
 */
struct unplug {
	struct ugpu_device *dev;
	pthread_t thread;
	int wake_fd; /* eventfd: stop, API and injected requests */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	bool api_request;
	bool surprise_request;
	unsigned int postponed; /* removals given up on (lock timeouts) */
	int state; /* enum ugpu_unplug_state, atomic */
	struct ugpu_unplug_info info;
	ugpu_removal_fn fn;
	void *user;
	void (*obs)(void *arg, struct ugpu_device *dev, const char *step);
	void *obs_arg;
};

static int lock_bounded(pthread_mutex_t *m, int ms)
{
	struct timespec ts;

	ts = deadline_after_ms((uint64_t)ms);
	return -pthread_mutex_timedlock(m, &ts);
}

static enum ugpu_unplug_state state_get(struct unplug *u)
{
	return (enum ugpu_unplug_state)__atomic_load_n(&u->state, __ATOMIC_ACQUIRE);
}

/* ---- the removal ------------------------------------------------------------- */

void unplug_mem_register(struct ugpu_device *dev, const struct unplug_mem_ops *ops, void *arg)
{
	dev->unplug_mem = ops;
	dev->unplug_mem_arg = arg;
}

static void removal_run(struct unplug *u, enum ugpu_unplug_kind kind, uint64_t healthy_us)
{
	struct ugpu_device *dev = u->dev;
	const struct unplug_mem_ops *mem = dev->unplug_mem;
	void *arg = dev->unplug_mem_arg;
	struct unplug_counts c = { 0 };
	bool surprise = kind == UGPU_UNPLUG_SURPRISE, suspended, held_rpm = false;
	uint64_t t0 = now_us();
	ugpu_removal_fn fn;
	void *user;
	unsigned int i;
	int ret, status;

	pthread_mutex_lock(&u->lock);
	__atomic_store_n(&u->state, UGPU_UNPLUG_REMOVING, __ATOMIC_RELEASE);
	u->info.kind = kind;
	if (surprise)
		u->info.detect_us = t0 - healthy_us;
	pthread_mutex_unlock(&u->lock);
	if (surprise) {
		__atomic_store_n(&dev->vram_lost, 1, __ATOMIC_RELEASE);
		log_err(dev->ctx, "%s: the device is gone (surprise removal): releasing it; BOs only in VRAM are lost",
			dev->name);
		test_point(TEST_POINT_UNPLUG_MARKED);
	}
	else
		log_warn(dev->ctx, "%s: removal %s: moving every BO to system memory and releasing the device",
			 dev->name, kind == UGPU_UNPLUG_API ? "asked by the application" : "requested");

	/* 0. Peers stop reaching this device's VRAM before anything moves. */
	if (mem->revoke_peers)
		mem->revoke_peers(arg);

	/* 1. No host-suspend transition during the removal. */
	ret = lock_bounded(&dev->pm->lock, UNPLUG_LOCK_TIMEOUT_MS);
	if (ret) {
		log_err(dev->ctx, "%s: removal postponed: a host suspend transition holds the device for more than %d ms (%s); retried on the next request",
			dev->name, UNPLUG_LOCK_TIMEOUT_MS, ugpu_strerror(ret));
		goto out_postpone;
	}
	ret = mem->lock(arg, UNPLUG_LOCK_TIMEOUT_MS);
	if (ret) {
		pthread_mutex_unlock(&dev->pm->lock);
		goto out_postpone;
	}
	suspended = mem->host_suspended(arg);
	mem->unlock(arg);

	/* 2. Awake for the copies (not while host-suspended: the backups
	 * hold VRAM then, and the host is asleep). */
	if (!surprise && !suspended && dev->rpm) {
		ret = rpm_get(dev->rpm);
		if (ret) {
			log_err(dev->ctx, "%s: removal: the device did not wake (%s); what is only in VRAM is lost",
				dev->name, ugpu_strerror(ret));
			surprise = true;
			__atomic_store_n(&dev->vram_lost, 1, __ATOMIC_RELEASE);
		} else {
			held_rpm = true;
		}
	}

	/* 2b. The device cannot be read: a runtime D3cold suspend still in
	 * its hooks finishes them (they need the BO manager lock, not held
	 * here); no new one gets past them from now on (bo_rpm_suspend()
	 * vetoes once VRAM is lost). Its backups are claimed under the lock
	 * (step 4), so that a postponed removal claims nothing. */
	if (surprise && dev->rpm &&
	    rpm_wait_hooks_settled(dev->rpm, UNPLUG_LOCK_TIMEOUT_MS))
		log_warn(dev->ctx, "%s: removal: a runtime suspend's hooks still run after %d ms",
			 dev->name, UNPLUG_LOCK_TIMEOUT_MS);

	/* 3. Stop submissions; drain what is in flight. GPU kernels first,
	 * without the memory layer's lock (the exec engine's thread takes it
	 * to hand over an end): none may write a BO while it moves. A dead or
	 * sleeping device runs nothing any more: what it ran is abandoned. */
	if (dev->exec) {
		ret = exec_block(dev->exec, surprise || suspended ? 0 : UNPLUG_IDLE_TIMEOUT_MS);
		if (ret) {
			if (!surprise && !suspended)
				log_err(dev->ctx, "%s: removal: GPU kernels still run after %d ms: abandoned",
					dev->name, UNPLUG_IDLE_TIMEOUT_MS);
			exec_abandon(dev->exec);
		}
	}
	/* 3b. What can go to a peer's VRAM goes there (it takes the memory
	 * layers' locks itself), while the device still answers. */
	if (!surprise && !suspended && mem->to_peers)
		mem->to_peers(arg, &c);
	ret = mem->lock(arg, UNPLUG_LOCK_TIMEOUT_MS);
	if (ret) {
		log_err(dev->ctx, "%s: removal postponed: BO work holds the device for more than %d ms (%s)",
			dev->name, UNPLUG_LOCK_TIMEOUT_MS, ugpu_strerror(ret));
		if (dev->exec)
			exec_unblock(dev->exec);
		if (held_rpm)
			rpm_put(dev->rpm);
		pthread_mutex_unlock(&dev->pm->lock);
		goto out_postpone;
	}
	if (!surprise && !suspended) {
		for (i = 0; i < DEVICE_MAX_ENGINES; i++) {
			if (!dev->copy[i])
				continue;
			ret = engine_idle(dev->copy[i], UNPLUG_IDLE_TIMEOUT_MS);
			if (ret) {
				log_err(dev->ctx, "%s: removal: engine %s did not finish its work in %d ms (%s): cancelled",
					dev->name, dev->copy[i]->name, UNPLUG_IDLE_TIMEOUT_MS,
					ugpu_strerror(ret));
				engine_reset(dev->copy[i]);
			}
		}
	}

	/* 4. Every BO of the program out of VRAM; first, when the device
	 * cannot be read, a runtime D3cold suspend between its hooks and its
	 * power step gives its backups to the removal (docs/unplug.md). */
	if (surprise && dev->rpm)
		rpm_claim_backups(dev->rpm);
	mem->evacuate(arg, &surprise, &c);

	/* 5. Nothing mapped for the device any more. */
	mem->dma_release(arg);

	/* 6. From here BO paths refuse VRAM and map nothing for the device
	 * (they check dev->removed under the memory layer's lock). */
	__atomic_store_n(&dev->removed, 1, __ATOMIC_RELEASE);
	mem->detach(arg);
	mem->unlock(arg);
	if (held_rpm)
		rpm_put(dev->rpm);
	device_teardown(dev, DEVICE_LIFE_DEVICE);
	mem->maps_release(arg);
	pthread_mutex_unlock(&dev->pm->lock);

	/* 7. What was kept from backups goes on to a peer's VRAM when one has
	 * room, like an orderly removal's BOs (from system memory: the copy
	 * is the peer's). */
	if (c.bos_adopted && mem->survivors_to_peers)
		mem->survivors_to_peers(arg, &c);
	if (mem->peer_binds_release)
		mem->peer_binds_release(arg);

	status = surprise ? -ENODEV : c.bos_lost ? -EIO : 0;
	pthread_mutex_lock(&u->lock);
	u->info.status = status;
	u->info.removal_us = now_us() - t0;
	u->info.bos_moved = c.bos_moved;
	u->info.bytes_moved = c.bytes_moved;
	u->info.bos_to_peer = c.bos_to_peer;
	u->info.bytes_to_peer = c.bytes_to_peer;
	u->info.bos_adopted = c.bos_adopted;
	u->info.bos_lost = c.bos_lost;
	u->info.bytes_lost = c.bytes_lost;
	u->info.kernel_bos = c.kernel_bos;
	__atomic_store_n(&u->state, UGPU_UNPLUG_REMOVED, __ATOMIC_RELEASE);
	fn = u->fn;
	user = u->user;
	pthread_cond_broadcast(&u->cond);
	pthread_mutex_unlock(&u->lock);

	log_warn(dev->ctx, "%s: removed (%s) in %" PRIu64 " ms: %" PRIu64 " BOs (%" PRIu64 " bytes) moved to peers, %" PRIu64 " (%" PRIu64 " bytes) to system memory, %" PRIu64 " kept from backups, %" PRIu64 " lost (%" PRIu64 " bytes)",
		 dev->name, ugpu_unplug_kind_name(kind), (now_us() - t0) / 1000, c.bos_to_peer,
		 c.bytes_to_peer, c.bos_moved, c.bytes_moved, c.bos_adopted, c.bos_lost,
		 c.bytes_lost);
	if (fn)
		fn(user, dev, kind, status);
	return;

out_postpone:
	/* An orderly removal that found the device unreadable (its wake
	 * failed) and is postponed: VRAM is open again until the next try,
	 * as it was before (a surprise one's device is gone: it stays closed) */
	if (kind != UGPU_UNPLUG_SURPRISE)
		__atomic_store_n(&dev->vram_lost, 0, __ATOMIC_RELEASE);
	pthread_mutex_lock(&u->lock);
	__atomic_store_n(&u->state, UGPU_UNPLUG_PRESENT, __ATOMIC_RELEASE);
	u->info.kind = UGPU_UNPLUG_NONE;
	u->postponed++;
	pthread_cond_broadcast(&u->cond);
	pthread_mutex_unlock(&u->lock);
}

/* ---- the watcher ------------------------------------------------------------- */

/* All-ones config reads (or a transport that says so): a dead PCI device.
 * Skipped in D3cold, where real hardware may not answer config reads. */
static bool probe_dead(struct ugpu_device *dev)
{
	enum ugpu_power_state ps;
	uint16_t vendor = 0;
	int ret;

	/* Under the power lock: a transition publishes D3hot before it cuts
	 * main power, and a probe between the two would read a powered-off
	 * device's all-ones as death. The watcher may wait for a transition. */
	pthread_mutex_lock(&dev->lock);
	ps = device_power_state(dev);
	ret = ps == UGPU_POWER_D3COLD ? 0 : pci_cfg_read16(dev->vdev, PCI_CFG_VENDOR_ID, &vendor);
	pthread_mutex_unlock(&dev->lock);
	if (ps == UGPU_POWER_D3COLD)
		return false;
	if (ret == -ENODEV || (!ret && vendor == 0xffff)) {
		log_err(dev->ctx, "%s: config space %s: the device is gone", dev->name,
			ret ? "is unreachable" : "reads all-ones");
		vfio_dev_set_gone(dev->vdev);
		return true;
	}
	return false;
}

static void *watcher(void *arg)
{
	struct unplug *u = arg;
	struct ugpu_device *dev = u->dev;
	uint64_t healthy = now_us(), next_probe = healthy + UNPLUG_PROBE_MS * 1000ull;

	for (;;) {
		bool present = state_get(u) == UGPU_UNPLUG_PRESENT;
		struct pollfd pfd[2] = {
			{ .fd = u->wake_fd, .events = POLLIN },
			{ .fd = present ? dev->req_fd : -1, .events = POLLIN },
		};
		enum ugpu_unplug_kind kind = UGPU_UNPLUG_NONE;
		bool stop, api, inject;
		uint64_t v, now;

		if (poll(pfd, 2, present ? UNPLUG_POLL_MS : 1000) > 0 && (pfd[0].revents & POLLIN)) {
			if (read(u->wake_fd, &v, sizeof(v)) < 0) {
				/* EAGAIN: drained already */
			}
		}
		pthread_mutex_lock(&u->lock);
		stop = u->stop;
		api = u->api_request;
		inject = u->surprise_request;
		u->api_request = u->surprise_request = false;
		pthread_mutex_unlock(&u->lock);
		if (stop)
			break;
		if (!present) {
			if (api) {
				pthread_mutex_lock(&u->lock);
				pthread_cond_broadcast(&u->cond);
				pthread_mutex_unlock(&u->lock);
			}
			continue;
		}
		now = now_us();
		if (pfd[1].revents & POLLIN) {
			if (read(dev->req_fd, &v, sizeof(v)) == sizeof(v)) {
				pthread_mutex_lock(&u->lock);
				u->info.reqs += v;
				pthread_mutex_unlock(&u->lock);
				kind = UGPU_UNPLUG_REQUEST;
			}
		}
		if (inject || vfio_dev_is_gone(dev->vdev)) {
			kind = UGPU_UNPLUG_SURPRISE;
		} else if (kind == UGPU_UNPLUG_NONE && api) {
			kind = UGPU_UNPLUG_API;
		} else if (kind == UGPU_UNPLUG_NONE && now >= next_probe) {
			next_probe = now + UNPLUG_PROBE_MS * 1000ull;
			if (probe_dead(dev))
				kind = UGPU_UNPLUG_SURPRISE;
		}
		if (kind != UGPU_UNPLUG_NONE)
			removal_run(u, kind, healthy);
		else
			healthy = now;
	}
	return NULL;
}

static void wake(struct unplug *u)
{
	uint64_t one = 1;

	if (write(u->wake_fd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is saturated, the watcher wakes anyway */
	}
}

int unplug_init(struct ugpu_device *dev)
{
	struct unplug *u = calloc(1, sizeof(*u));
	int ret;

	if (!u)
		return -ENOMEM;
	u->dev = dev;
	u->info.size = sizeof(u->info);
	u->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (u->wake_fd < 0) {
		ret = -errno;
		goto out_free;
	}
	pthread_mutex_init(&u->lock, NULL);
	pthread_cond_init(&u->cond, NULL);
	dev->unplug = u;
	ret = -pthread_create(&u->thread, NULL, watcher, u);
	if (ret) {
		log_err(dev->ctx, "%s: cannot start the removal watcher: %s", dev->name,
			ugpu_strerror(ret));
		goto out_destroy;
	}
	return 0;

out_destroy:
	dev->unplug = NULL;
	pthread_cond_destroy(&u->cond);
	pthread_mutex_destroy(&u->lock);
	close(u->wake_fd);
out_free:
	free(u);
	return ret;
}

void unplug_fini(struct ugpu_device *dev)
{
	struct unplug *u = dev->unplug;

	if (!u)
		return;
	pthread_mutex_lock(&u->lock);
	u->stop = true;
	pthread_mutex_unlock(&u->lock);
	wake(u);
	/* Bounded: a removal in progress has bounded steps. */
	pthread_join(u->thread, NULL);
	dev->unplug = NULL;
	pthread_cond_destroy(&u->cond);
	pthread_mutex_destroy(&u->lock);
	close(u->wake_fd);
	free(u);
}

void unplug_step_note(struct ugpu_device *dev, const char *step)
{
	struct unplug *u = dev->unplug;
	void (*fn)(void *, struct ugpu_device *, const char *);
	void *arg;

	if (!u)
		return;
	pthread_mutex_lock(&u->lock);
	fn = u->obs;
	arg = u->obs_arg;
	pthread_mutex_unlock(&u->lock);
	log_dbg(dev->ctx, "%s: teardown: %s", dev->name, step);
	if (fn)
		fn(arg, dev, step);
}

#ifdef UGPU_TEST_HOOKS
void unplug_set_step_observer(struct ugpu_device *dev,
			      void (*fn)(void *arg, struct ugpu_device *dev, const char *step),
			      void *arg)
{
	struct unplug *u = dev->unplug;

	pthread_mutex_lock(&u->lock);
	u->obs = fn;
	u->obs_arg = arg;
	pthread_mutex_unlock(&u->lock);
}

int unplug_inject_surprise(struct ugpu_device *dev)
{
	struct unplug *u = dev ? dev->unplug : NULL;

	if (!u)
		return -EINVAL;
	pthread_mutex_lock(&u->lock);
	u->surprise_request = true;
	pthread_mutex_unlock(&u->lock);
	wake(u);
	return 0;
}
#endif

/* ---- public API -------------------------------------------------------------- */

UGPU_API int ugpu_device_set_removal_callback(struct ugpu_device *dev, ugpu_removal_fn fn,
					      void *user)
{
	if (dev && device_is_remote(dev)) {
		remote_set_removal_callback(dev, fn, user); /* the daemon's event calls it */
		return 0;
	}
	struct unplug *u;

	if (!dev || !dev->unplug)
		return -EINVAL;
	u = dev->unplug;
	pthread_mutex_lock(&u->lock);
	u->fn = fn;
	u->user = user;
	pthread_mutex_unlock(&u->lock);
	return 0;
}

UGPU_API int ugpu_device_unplug(struct ugpu_device *dev)
{
	if (dev && device_is_remote(dev))
		return -EOPNOTSUPP; /* not served through ugpud yet */
	struct timespec ts;
	struct unplug *u;
	unsigned int postponed;
	int ret = 0;

	if (!dev || !dev->unplug)
		return -EINVAL;
	u = dev->unplug;
	if (pthread_equal(pthread_self(), u->thread))
		return -EDEADLK;
	pthread_mutex_lock(&u->lock);
	postponed = u->postponed;
	if (state_get(u) != UGPU_UNPLUG_REMOVED) {
		u->api_request = true;
		wake(u);
	}
	ts = deadline_after_ms(UNPLUG_API_TIMEOUT_MS);
	while (state_get(u) != UGPU_UNPLUG_REMOVED && ret == 0) {
		ret = -pthread_cond_timedwait(&u->cond, &u->lock, &ts);
		/* The removal was given up on (and will be retried). */
		if (!ret && u->postponed != postponed)
			ret = -ETIMEDOUT;
	}
	if (!ret)
		ret = u->info.status;
	pthread_mutex_unlock(&u->lock);
	return ret;
}

int unplug_wait_removed(struct ugpu_device *dev, int ms)
{
	struct unplug *u = dev->unplug;
	struct timespec ts;
	int ret = 0;

	if (!u)
		return device_is_removed(dev) ? 0 : -ETIMEDOUT;
	if (pthread_equal(pthread_self(), u->thread))
		return -EDEADLK;
	ts = deadline_after_ms((uint64_t)ms);
	pthread_mutex_lock(&u->lock);
	/* The watcher notices a dead transport within UNPLUG_POLL_MS. */
	wake(u);
	while (state_get(u) != UGPU_UNPLUG_REMOVED && !ret)
		ret = -pthread_cond_timedwait(&u->cond, &u->lock, &ts);
	pthread_mutex_unlock(&u->lock);
	return state_get(u) == UGPU_UNPLUG_REMOVED ? 0 : -ETIMEDOUT;
}

UGPU_API bool ugpu_device_is_gone(struct ugpu_device *dev)
{
	if (dev && device_is_remote(dev))
		return remote_is_gone(dev); /* the daemon's removal event */
	if (!dev || !dev->unplug)
		return false;
	return state_get(dev->unplug) != UGPU_UNPLUG_PRESENT;
}

UGPU_API int ugpu_device_unplug_info(struct ugpu_device *dev, struct ugpu_unplug_info *info)
{
	if (dev && device_is_remote(dev))
		return -EOPNOTSUPP; /* not served through ugpud yet */
	struct ugpu_unplug_info i;
	struct unplug *u;
	size_t n;

	if (!dev || !dev->unplug || !info || info->size < sizeof(info->size))
		return -EINVAL;
	u = dev->unplug;
	pthread_mutex_lock(&u->lock);
	i = u->info;
	i.state = state_get(u);
	pthread_mutex_unlock(&u->lock);
	i.size = info->size;
	n = info->size < sizeof(i) ? info->size : sizeof(i);
	memcpy(info, &i, n);
	return 0;
}

UGPU_API const char *ugpu_unplug_state_name(enum ugpu_unplug_state state)
{
	switch (state) {
	case UGPU_UNPLUG_PRESENT:
		return "present";
	case UGPU_UNPLUG_REMOVING:
		return "removing";
	case UGPU_UNPLUG_REMOVED:
		return "removed";
	}
	return "?";
}

UGPU_API const char *ugpu_unplug_kind_name(enum ugpu_unplug_kind kind)
{
	switch (kind) {
	case UGPU_UNPLUG_NONE:
		return "none";
	case UGPU_UNPLUG_REQUEST:
		return "request";
	case UGPU_UNPLUG_API:
		return "api";
	case UGPU_UNPLUG_SURPRISE:
		return "surprise";
	}
	return "?";
}
