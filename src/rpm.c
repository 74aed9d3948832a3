/* SPDX-License-Identifier: MIT */
/*
 * Runtime power management (see src/rpm.h for the contract and
 * docs/runtime-pm.md for the design).
 *
 * State machine (rpm->state, under rpm->lock):
 *
 *   ACTIVE --(usage 0, delay expired)--> SUSPENDING --(hooks done, nobody
 *   needed the device: "committed", device_set_power(D3))--> SUSPENDED
 *   SUSPENDED --(rpm_get)--> RESUMING --(D0, resume hooks)--> ACTIVE
 *   SUSPENDING --(a get raced the hooks, or a hook vetoed)--> ACTIVE
 *
 * The one rule that keeps it deadlock-free with CPU mappings: the suspend
 * hooks invalidate cpu_map ranges, which waits for the cpu_map handler
 * thread; that thread calls rpm_get() from fault_begin. So rpm_get() never
 * waits for suspend hooks: during the hook phase the device is still in D0,
 * and a get simply takes its reference and marks the suspend aborted (the
 * same outcome as the kernel's rpm_suspend() seeing usage_count > 0 after
 * ->runtime_suspend()). Only the short committed phase (one power
 * transition, no hooks), a wake by another thread, and the resume hooks
 * of a suspend whose D3cold power step failed (CPU copies back into VRAM
 * at most: its backups must stay current for a removal until they ran)
 * make a get wait, and none of them needs the handler thread. Likewise a wake runs only the quick
 * resume hooks; anything that moves mapped objects (D3cold restore) is
 * deferred to the rpm thread.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/stats.h"
#include "engines/exec.h"
#include "src/device.h"
#include "src/remote.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/list.h"
#include "src/rpm.h"
#include "base/test_point.h"

struct rpm_hook {
	const struct rpm_hook_ops *ops;
	void *arg;
	struct list_link link; /* on rpm->hooks */
};

#define hook_of(l) list_entry(l, struct rpm_hook, link)

/*
 * struct rpm - runtime PM of one device.
 *
 * Locking: @lock protects everything below it except the hook list. It is
 * never held across a power transition or a hook. @hooks_lock protects the
 * hook list and is held while hooks run (so unregister waits for them);
 * order: hooks_lock -> lock (a hook may call rpm_get()), lock -> dev->lock
 * (a leaf); dev->pub_lock -> lock (rpm_user_enter()). @cond signals state changes to waiting
 * getters; @timer_cond wakes the rpm thread. @allow_lock serialises
 * rpm_allow() only.
 *
 * Lifetime against removal: the public calls find the rpm through dev->rpm
 * under the device's publication lock (where removal unpublishes it) and count
 * themselves in @api_users (under @lock) before letting go of that lock;
 * rpm_fini() waits (bounded) for @api_users to reach 0 (@cond) so that no
 * call is still using the device when its teardown goes on. Freeing is
 * counted, not timed: @refs (under @lock) counts the owner, each public call
 * inside and each module holding a pointer (rpm_ref()); the last
 * rpm_unref() frees. @dead (under @lock): rpm_fini() ran; gets answer
 * -ENODEV, puts do nothing. The hook list is changed with both @hooks_lock
 * and @lock held, so either one keeps it stable (rpm_stats() walks it under
 * @lock, never waiting for a transition).
 */
struct rpm {
	struct ugpu_device *dev;
	struct ugpu_context *ctx;
	pthread_mutex_t allow_lock;
	pthread_mutex_t hooks_lock;
	struct list_link hooks; /* struct rpm_hook, registration order */

	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_cond_t timer_cond;
	pthread_t thread;
	bool thread_started;
	bool stop;
	unsigned int api_users; /* public calls inside (see above) */
	unsigned int refs;
	bool dead;
	struct ugpu_rpm_stats retired; /* BO fields of unregistered hooks */

	enum ugpu_rpm_state state;
	bool committed; /* SUSPENDING past the point of no return */
	/* SUSPENDING: its power step failed (abandoned past the point of no
	 * return, the hooks' resume not run yet), or a removal claimed the
	 * backups between its hooks and its power step (rpm_claim_backups());
	 * backups still current, and gets wait for the hooks' resume */
	bool power_failed;
	bool hooks_done; /* SUSPENDING: every hook's suspend ran and succeeded */
	enum ugpu_power_state target; /* of the suspend in progress (SUSPENDING) */
	bool abort; /* a get arrived while the suspend hooks ran */
	bool has_cb; /* @cb_thread is making the current transition */
	pthread_t cb_thread;
	uint32_t usage; /* includes the one reference "not allowed" holds */
	/* The application's own references (ugpu_device_rpm_get() not yet
	 * put), within @usage: its put never takes one the driver holds. */
	uint32_t app_refs;
	bool allowed;
	int delay_ms;
	uint64_t threshold;
	unsigned int n_evicting; /* hooks with evicts_vram */
	unsigned int n_restore; /* hooks with a restore callback */
	bool armed; /* usage dropped to 0 since the last suspend */
	uint64_t last_busy_ns;
	uint64_t timer_at_ns; /* when the rpm thread's wait ends; 0: not waiting */
	bool vetoed; /* the last attempt was vetoed: retry >= 50 ms later */
	bool restore_pending;
	enum ugpu_power_state sleep_state;
	uint64_t suspended_since_ns;

	/* counters (struct ugpu_rpm_stats) */
	uint64_t suspends, suspends_d3cold, resumes, aborted, errors;
	uint64_t wake_last_us, wake_max_us, wake_total_us, resume_last_us, suspend_last_us;
	uint64_t suspended_ns;
};

static bool is_cb_thread(const struct rpm *rpm)
{
	return rpm->has_cb && pthread_equal(rpm->cb_thread, pthread_self());
}

static void cb_set(struct rpm *rpm)
{
	rpm->has_cb = true;
	rpm->cb_thread = pthread_self();
}

static const char *pstate_name(enum ugpu_power_state s)
{
	return s == UGPU_POWER_D3COLD ? "D3cold" : s == UGPU_POWER_D3HOT ? "D3hot" : "D0";
}

/* --- device steps (no rpm lock held) ----------------------------------- */

/* Engines must be idle before D3: a doorbell in D3 is dropped. */
static int engines_quiesce(struct rpm *rpm)
{
	struct ugpu_device *dev = rpm->dev;
	int i, ret;

	for (i = 0; i < DEVICE_MAX_ENGINES; i++) {
		if (!dev->copy[i])
			continue;
		ret = engine_idle(dev->copy[i], RPM_IDLE_TIMEOUT_MS);
		if (ret == -ETIMEDOUT) {
			log_warn(rpm->ctx, "%s: runtime suspend: engine %s still busy after %d ms",
				 dev->name, dev->copy[i]->name, RPM_IDLE_TIMEOUT_MS);
			return -EBUSY;
		}
		/* An engine stopped on an error is idle enough to sleep; its
		 * owner resets it. */
	}
	return 0;
}

/* D3cold resets every engine register: re-program the rings; the exec
 * queues are programmed again at their next launch. */
static void engines_reinit(struct rpm *rpm)
{
	struct ugpu_device *dev = rpm->dev;
	int i, ret;

	if (dev->exec)
		exec_hw_lost(dev->exec);
	for (i = 0; i < DEVICE_MAX_ENGINES; i++) {
		if (!dev->copy[i])
			continue;
		ret = engine_reset(dev->copy[i]);
		if (ret)
			log_err(rpm->ctx, "%s: engine %s did not come back after D3cold: %s",
				dev->name, dev->copy[i]->name, ugpu_strerror(ret));
	}
}

static uint64_t vram_used(struct ugpu_device *dev)
{
	return __atomic_load_n(&dev->vram_used, __ATOMIC_RELAXED);
}

static enum ugpu_power_state current_power(struct ugpu_device *dev)
{
	return device_power_state(dev);
}

/* D3cold when the device can, some hook evicts, and little VRAM is used
 * (xe_pm_d3cold_allowed_toggle()). Called with rpm->lock held. */
static enum ugpu_power_state choose_target(struct rpm *rpm)
{
	struct ugpu_device *dev = rpm->dev;

	if ((dev->caps & UGPU_DEVICE_CAP_D3COLD) && rpm->n_evicting && rpm->threshold &&
	    vram_used(dev) < rpm->threshold)
		return UGPU_POWER_D3COLD;
	return UGPU_POWER_D3HOT;
}

/* --- suspend ------------------------------------------------------------ */

/*
 * Called with rpm->lock held, state ACTIVE, usage 0, allowed; returns with
 * it held. Returns 0 (SUSPENDED), -EBUSY (vetoed or raced: back to ACTIVE),
 * or an error (back to ACTIVE, device in D0 if it could be woken).
 */
static int do_suspend(struct rpm *rpm)
{
	struct ugpu_device *dev = rpm->dev;
	enum ugpu_power_state target = choose_target(rpm), reached;
	struct rpm_hook *h, *ran_last = NULL;
	uint64_t t0 = now_ns();
	bool stop = false;
	int ret = 0, wret;

	rpm->state = UGPU_RPM_SUSPENDING;
	rpm->committed = false;
	rpm->power_failed = false;
	rpm->hooks_done = false;
	rpm->abort = false;
	rpm->target = target;
	cb_set(rpm);
	pthread_mutex_unlock(&rpm->lock);

	pthread_mutex_lock(&rpm->hooks_lock);
	list_for_each(l, &rpm->hooks) {
		h = hook_of(l);

		pthread_mutex_lock(&rpm->lock);
		stop = rpm->abort;
		pthread_mutex_unlock(&rpm->lock);
		if (stop)
			break;
		/* A failing hook is undone too: it may have done part of
		 * its work (evicted some objects). */
		ran_last = h;
		if (h->ops->suspend) {
			ret = h->ops->suspend(h->arg, target);
			if (ret) {
				if (ret != -EBUSY && ret != -EAGAIN)
					log_err(rpm->ctx, "%s: runtime suspend hook %s failed: %s",
						dev->name, h->ops->name, ugpu_strerror(ret));
				break;
			}
			test_point(TEST_POINT_RPM_HOOK_RETURNED);
		}
	}
	if (!ret && !stop) {
		/* every hook ran: a removal waiting for that may look now
		 * (rpm_wait_hooks_settled(), rpm_claim_backups()) */
		pthread_mutex_lock(&rpm->lock);
		rpm->hooks_done = true;
		pthread_cond_broadcast(&rpm->cond);
		pthread_mutex_unlock(&rpm->lock);
		test_point(TEST_POINT_RPM_HOOKS_DONE);
		ret = engines_quiesce(rpm);
	}

	pthread_mutex_lock(&rpm->lock);
	if (!ret && (rpm->usage || rpm->abort))
		ret = -EAGAIN; /* someone needed the device meanwhile */
	if (!ret && rpm->power_failed)
		ret = -ENODEV; /* a removal claimed the backups: no power step */
	if (ret && !rpm->power_failed)
		rpm->hooks_done = false; /* abandoning: nothing to claim (an
					  * access may have written VRAM) */
	if (!ret) {
		/* Point of no return: from here a get waits for D3 and wakes. */
		rpm->committed = true;
		pthread_mutex_unlock(&rpm->lock);
		ret = device_set_power(dev, target);
		reached = current_power(dev);
		if (ret) {
			log_err(rpm->ctx, "%s: runtime suspend to %s failed: %s", dev->name,
				pstate_name(target), ugpu_strerror(ret));
			wret = device_set_power(dev, UGPU_POWER_D0);
			if (wret)
				log_err(rpm->ctx, "%s: cannot wake the device after a failed suspend: %s",
					dev->name, ugpu_strerror(wret));
			else if (reached == UGPU_POWER_D3COLD)
				engines_reinit(rpm);
		}
		pthread_mutex_lock(&rpm->lock);
		rpm->committed = false;
		/* Nothing reached VRAM since the hooks (a get waited for the
		 * power step): what they backed up is current until the hooks'
		 * resume runs (rpm_power_step_failed()). */
		rpm->power_failed = ret != 0 && target == UGPU_POWER_D3COLD;
	} else {
		reached = UGPU_POWER_D0;
	}
	if (!ret) {
		rpm->state = UGPU_RPM_SUSPENDED;
		rpm->sleep_state = target;
		rpm->suspended_since_ns = now_ns();
		rpm->suspends++;
		if (target == UGPU_POWER_D3COLD)
			rpm->suspends_d3cold++;
		rpm->suspend_last_us = (rpm->suspended_since_ns - t0) / 1000;
		rpm->armed = false;
		rpm->vetoed = false;
		rpm->has_cb = false;
		pthread_cond_broadcast(&rpm->cond);
		pthread_mutex_unlock(&rpm->hooks_lock);
		log_dbg(rpm->ctx, "%s: runtime suspended to %s", dev->name,
			pstate_name(target));
		return 0;
	}

	/* Abandoned: the hooks that ran undo what they did. */
	pthread_mutex_unlock(&rpm->lock);
	test_point(TEST_POINT_RPM_ABANDONED);
	for (struct list_link *l = ran_last ? &ran_last->link : &rpm->hooks; l != &rpm->hooks;
	     l = l->prev)
		if ((h = hook_of(l))->ops->resume)
			h->ops->resume(h->arg, reached == UGPU_POWER_D3COLD ? UGPU_POWER_D3COLD
									    : UGPU_POWER_D0);
	pthread_mutex_lock(&rpm->lock);
	pthread_mutex_unlock(&rpm->hooks_lock);
	rpm->state = UGPU_RPM_ACTIVE;
	rpm->has_cb = false;
	if (ret == -EBUSY || ret == -EAGAIN) {
		rpm->aborted++;
		/* Vetoed: try again after the delay, never in a loop. */
		rpm->vetoed = ret == -EBUSY;
		rpm->armed = rpm->usage == 0;
		rpm->last_busy_ns = now_ns();
		ret = -EBUSY;
	} else {
		/* A hard error: stay awake until the next put re-arms. */
		rpm->errors++;
		rpm->armed = false;
	}
	/* Objects a D3cold hook already evicted come back later, as after a
	 * real D3cold (they are intact in system memory meanwhile). */
	if (target == UGPU_POWER_D3COLD && ran_last && rpm->n_restore)
		rpm->restore_pending = true;
	pthread_cond_broadcast(&rpm->cond);
	pthread_cond_signal(&rpm->timer_cond);
	return ret;
}

/* --- get / put ---------------------------------------------------------- */

/* Wake from SUSPENDED; called with rpm->lock held, returns with it held. */
static int do_resume(struct rpm *rpm)
{
	struct ugpu_device *dev = rpm->dev;
	enum ugpu_power_state from = rpm->sleep_state;
	struct rpm_hook *h;
	uint64_t t0, t1, t2, wake_us;
	int ret;

	rpm->state = UGPU_RPM_RESUMING;
	cb_set(rpm);
	rpm->usage++;
	pthread_mutex_unlock(&rpm->lock);

	pthread_mutex_lock(&rpm->hooks_lock);
	t0 = now_ns();
	ret = device_set_power(dev, UGPU_POWER_D0);
	t1 = now_ns();
	if (!ret) {
		/* Memory first (kernel objects such as the rings), then the
		 * engines on it: xe's restore_kernel before gt_resume. */
		for (struct list_link *l = rpm->hooks.prev; l != &rpm->hooks; l = l->prev)
			if ((h = hook_of(l))->ops->resume)
				h->ops->resume(h->arg, from);
		if (from == UGPU_POWER_D3COLD)
			engines_reinit(rpm);
	}
	t2 = now_ns();
	pthread_mutex_lock(&rpm->lock);
	pthread_mutex_unlock(&rpm->hooks_lock);
	rpm->has_cb = false;
	if (ret) {
		log_err(rpm->ctx, "%s: runtime resume from %s failed: %s", dev->name,
			pstate_name(from), ugpu_strerror(ret));
		rpm->state = UGPU_RPM_SUSPENDED;
		rpm->usage--;
		rpm->errors++;
		pthread_cond_broadcast(&rpm->cond);
		return ret;
	}
	wake_us = (t1 - t0) / 1000;
	rpm->state = UGPU_RPM_ACTIVE;
	rpm->resumes++;
	rpm->wake_last_us = wake_us;
	rpm->wake_total_us += wake_us;
	stat_hist_add(&dev->rpm_wake_hist, wake_us);
	if (wake_us > rpm->wake_max_us)
		rpm->wake_max_us = wake_us;
	rpm->resume_last_us = (t2 - t0) / 1000;
	rpm->suspended_ns += t1 - rpm->suspended_since_ns;
	if (from == UGPU_POWER_D3COLD && rpm->n_restore) {
		rpm->restore_pending = true;
		pthread_cond_signal(&rpm->timer_cond);
	}
	pthread_cond_broadcast(&rpm->cond);
	log_dbg(rpm->ctx, "%s: runtime resumed from %s in %llu us", dev->name,
		pstate_name(from), (unsigned long long)wake_us);
	return 0;
}

int rpm_get(struct rpm *rpm)
{
	uint64_t deadline = now_ns() + RPM_WAIT_TIMEOUT_MS * 1000000ull;
	int ret = 0;

	pthread_mutex_lock(&rpm->lock);
	for (;;) {
		if (rpm->dead) {
			ret = -ENODEV;
			break;
		}
		if (rpm->state == UGPU_RPM_ACTIVE || is_cb_thread(rpm)) {
			rpm->usage++;
			break;
		}
		if (rpm->state == UGPU_RPM_SUSPENDING && !rpm->committed && !rpm->power_failed) {
			/* Still in D0: take the reference, the suspend aborts.
			 * (Not after a failed power step: until its hooks'
			 * resume has run, what they backed up may be the
			 * removal's to keep, and VRAM must stay as it was;
			 * a review of 2026-12-07 wrote VRAM in that window.) */
			rpm->usage++;
			rpm->abort = true;
			break;
		}
		if (rpm->state == UGPU_RPM_SUSPENDED) {
			ret = do_resume(rpm);
			break;
		}
		/* Another thread is changing the power state: wait for it. */
		if (now_ns() >= deadline) {
			log_err(rpm->ctx, "%s: runtime PM transition did not finish in %d ms",
				rpm->dev->name, RPM_WAIT_TIMEOUT_MS);
			ret = -ETIMEDOUT;
			break;
		}
		struct timespec ts = ns_to_timespec(deadline);

		pthread_cond_timedwait(&rpm->cond, &rpm->lock, &ts);
	}
	pthread_mutex_unlock(&rpm->lock);
	return ret;
}

bool rpm_suspend_aborted(struct rpm *rpm)
{
	bool a;

	pthread_mutex_lock(&rpm->lock);
	a = rpm->state == UGPU_RPM_SUSPENDING && rpm->abort;
	pthread_mutex_unlock(&rpm->lock);
	return a;
}

bool rpm_vram_lost(struct rpm *rpm)
{
	bool lost;

	pthread_mutex_lock(&rpm->lock);
	switch (rpm->state) {
	case UGPU_RPM_SUSPENDED:
	case UGPU_RPM_RESUMING:
		lost = rpm->sleep_state == UGPU_POWER_D3COLD;
		break;
	case UGPU_RPM_SUSPENDING:
		lost = (rpm->committed || rpm->power_failed) && rpm->target == UGPU_POWER_D3COLD;
		break;
	default:
		lost = false;
	}
	pthread_mutex_unlock(&rpm->lock);
	return lost;
}

int rpm_wait_hooks_settled(struct rpm *rpm, int ms)
{
	uint64_t deadline = now_ns() + (uint64_t)ms * 1000000ull;
	int ret = 0;

	pthread_mutex_lock(&rpm->lock);
	while (!rpm->dead && rpm->state == UGPU_RPM_SUSPENDING && !rpm->hooks_done && !rpm->abort) {
		struct timespec ts;

		if (now_ns() >= deadline) {
			ret = -ETIMEDOUT;
			break;
		}
		ts = ns_to_timespec(deadline);
		pthread_cond_timedwait(&rpm->cond, &rpm->lock, &ts);
	}
	pthread_mutex_unlock(&rpm->lock);
	return ret;
}

bool rpm_claim_backups(struct rpm *rpm)
{
	bool claimed;

	pthread_mutex_lock(&rpm->lock);
	/* Past its hooks, not committed, no get let in since the hooks (it
	 * would have set @abort, or hold @usage): what they backed up is
	 * current. From here gets wait for the hooks' resume and the power
	 * step is skipped (do_suspend()), as after a failed power step. */
	if (rpm->state == UGPU_RPM_SUSPENDING && rpm->target == UGPU_POWER_D3COLD &&
	    rpm->hooks_done && !rpm->committed && !rpm->abort && !rpm->usage)
		rpm->power_failed = true;
	claimed = rpm->state == UGPU_RPM_SUSPENDING && rpm->power_failed;
	pthread_mutex_unlock(&rpm->lock);
	return claimed;
}

bool rpm_power_step_failed(struct rpm *rpm)
{
	bool failed;

	pthread_mutex_lock(&rpm->lock);
	failed = rpm->state == UGPU_RPM_SUSPENDING && rpm->power_failed;
	pthread_mutex_unlock(&rpm->lock);
	return failed;
}

bool rpm_get_if_active(struct rpm *rpm)
{
	bool ok;

	pthread_mutex_lock(&rpm->lock);
	ok = !rpm->dead && (rpm->state == UGPU_RPM_ACTIVE || is_cb_thread(rpm));
	if (ok)
		rpm->usage++;
	pthread_mutex_unlock(&rpm->lock);
	return ok;
}

/*
 * Called with rpm->lock held. While runtime suspend is not allowed, one
 * reference is the "not allowed" hold (rpm_allow()), not a caller's: a put
 * that would take it is unbalanced too.
 */
static void put_locked(struct rpm *rpm)
{
	if (rpm->usage <= (uint32_t)!rpm->allowed) {
		log_err(rpm->ctx, "%s: runtime PM put without a get (ignored)",
			rpm->dev->name);
		return;
	}
	if (--rpm->usage == 0) {
		rpm->armed = true;
		rpm->last_busy_ns = now_ns();
		/* Wake the rpm thread only if it would otherwise sleep past the
		 * new due time (as the kernel re-arms its autosuspend timer only
		 * when it would fire too late): a waiting thread wakes by
		 * @timer_at_ns and recomputes, a running one recomputes before
		 * it waits. This put is the last step of a CPU fault before the
		 * faulting thread is woken; a futex wake of another thread there
		 * cost ~10 us a fault. */
		if (rpm->allowed && rpm->delay_ms >= 0 && rpm->timer_at_ns &&
		    rpm->timer_at_ns > rpm->last_busy_ns + (uint64_t)rpm->delay_ms * 1000000ull)
			pthread_cond_signal(&rpm->timer_cond);
	}
}

void rpm_put(struct rpm *rpm)
{
	pthread_mutex_lock(&rpm->lock);
	if (!rpm->dead) /* the references died with rpm_fini() */
		put_locked(rpm);
	pthread_mutex_unlock(&rpm->lock);
}

int rpm_suspend_now(struct rpm *rpm)
{
	int ret;

	pthread_mutex_lock(&rpm->lock);
	if (rpm->state == UGPU_RPM_SUSPENDED)
		ret = 0;
	else if (!rpm->allowed)
		ret = -EPERM;
	else if (rpm->state != UGPU_RPM_ACTIVE || rpm->usage)
		ret = -EBUSY;
	else
		ret = do_suspend(rpm);
	pthread_mutex_unlock(&rpm->lock);
	return ret;
}

bool rpm_is_suspended(struct rpm *rpm)
{
	bool s;

	pthread_mutex_lock(&rpm->lock);
	s = rpm->state == UGPU_RPM_SUSPENDED;
	pthread_mutex_unlock(&rpm->lock);
	return s;
}

/* --- the rpm thread ----------------------------------------------------- */

static void run_restore(struct rpm *rpm)
{
	struct rpm_hook *h;

	test_point(TEST_POINT_RPM_RESTORE);
	pthread_mutex_lock(&rpm->hooks_lock);
	for (struct list_link *l = rpm->hooks.prev; l != &rpm->hooks; l = l->prev)
		if ((h = hook_of(l))->ops->restore)
			h->ops->restore(h->arg);
	pthread_mutex_unlock(&rpm->hooks_lock);
}

/*
 * Runs the autosuspend timer and deferred restores. Every wait is bounded
 * (1 s at most) so a missed signal costs at most that, never a hang.
 */
static void *rpm_thread(void *arg)
{
	struct rpm *rpm = arg;

	pthread_mutex_lock(&rpm->lock);
	while (!rpm->stop) {
		uint64_t now = now_ns(), wake_at = now + 1000000000ull;

		if (rpm->restore_pending && rpm->state == UGPU_RPM_ACTIVE) {
			rpm->restore_pending = false;
			rpm->usage++;
			pthread_mutex_unlock(&rpm->lock);
			run_restore(rpm);
			pthread_mutex_lock(&rpm->lock);
			put_locked(rpm);
			continue;
		}
		if (rpm->state == UGPU_RPM_ACTIVE && rpm->armed && !rpm->usage && rpm->allowed &&
		    rpm->delay_ms >= 0) {
			uint64_t due = rpm->last_busy_ns + (uint64_t)rpm->delay_ms * 1000000ull;

			if (rpm->vetoed && due < rpm->last_busy_ns + 50000000ull)
				due = rpm->last_busy_ns + 50000000ull;
			if (now >= due) {
				rpm->armed = false;
				do_suspend(rpm);
				continue;
			}
			if (due < wake_at)
				wake_at = due;
		}
		struct timespec ts = ns_to_timespec(wake_at);

		rpm->timer_at_ns = wake_at;
		pthread_cond_timedwait(&rpm->timer_cond, &rpm->lock, &ts);
		rpm->timer_at_ns = 0;
	}
	pthread_mutex_unlock(&rpm->lock);
	return NULL;
}

/* --- setup -------------------------------------------------------------- */

static int cond_init_mono(pthread_cond_t *c)
{
	pthread_condattr_t a;
	int ret;

	ret = pthread_condattr_init(&a);
	if (ret)
		return -ret;
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	ret = pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
	return -ret;
}

int rpm_init(struct ugpu_device *dev, struct rpm **out)
{
	struct rpm *rpm;
	int ret;

	rpm = calloc(1, sizeof(*rpm));
	if (!rpm)
		return -ENOMEM;
	rpm->dev = dev;
	rpm->ctx = dev->ctx;
	rpm->state = UGPU_RPM_ACTIVE;
	rpm->usage = 1; /* "not allowed" holds one */
	list_init(&rpm->hooks);
	rpm->delay_ms = RPM_DEFAULT_AUTOSUSPEND_MS;
	rpm->threshold = RPM_DEFAULT_D3COLD_THRESHOLD;
	rpm->sleep_state = UGPU_POWER_D0;
	rpm->refs = 1; /* the owner's, dropped by rpm_fini() */
	pthread_mutex_init(&rpm->allow_lock, NULL);
	pthread_mutex_init(&rpm->hooks_lock, NULL);
	pthread_mutex_init(&rpm->lock, NULL);
	ret = cond_init_mono(&rpm->cond);
	if (ret)
		goto out_mutexes;
	ret = cond_init_mono(&rpm->timer_cond);
	if (ret)
		goto out_cond;
	ret = -pthread_create(&rpm->thread, NULL, rpm_thread, rpm);
	if (ret) {
		log_err(dev->ctx, "%s: cannot start the runtime PM thread: %s", dev->name,
			ugpu_strerror(ret));
		goto out_timer_cond;
	}
	rpm->thread_started = true;
	*out = rpm;
	return 0;

out_timer_cond:
	pthread_cond_destroy(&rpm->timer_cond);
out_cond:
	pthread_cond_destroy(&rpm->cond);
out_mutexes:
	pthread_mutex_destroy(&rpm->lock);
	pthread_mutex_destroy(&rpm->hooks_lock);
	pthread_mutex_destroy(&rpm->allow_lock);
	free(rpm);
	return ret;
}

/*
 * Wait for the public calls that found @rpm before it was unpublished. Each
 * is bounded by its own waits (RPM_WAIT_TIMEOUT_MS for a transition), so
 * this bound is only passed by a bug. Returns false then.
 */
static bool api_users_drain(struct rpm *rpm)
{
	uint64_t deadline = now_ns() + RPM_FINI_USERS_TIMEOUT_MS * 1000000ull;
	bool drained;

	pthread_mutex_lock(&rpm->lock);
	while (rpm->api_users && now_ns() < deadline) {
		struct timespec ts = ns_to_timespec(deadline);

		pthread_cond_timedwait(&rpm->cond, &rpm->lock, &ts);
	}
	drained = rpm->api_users == 0;
	pthread_mutex_unlock(&rpm->lock);
	return drained;
}

/* Keep the last stats in the device: they outlive the rpm (a removal). */
static void stats_keep(struct rpm *rpm)
{
	struct ugpu_device *dev = rpm->dev;
	struct ugpu_rpm_stats s;

	rpm_stats(rpm, &s);
	pthread_mutex_lock(&dev->pub_lock);
	dev->rpm_last = s;
	pthread_mutex_unlock(&dev->pub_lock);
}

static void rpm_free(struct rpm *rpm)
{
	list_for_each_safe(l, &rpm->hooks) {
		struct rpm_hook *h = hook_of(l);

		log_warn(rpm->ctx, "%s: runtime PM hook %s still registered at close",
			 rpm->dev->name, h->ops->name);
		free(h);
	}
	pthread_cond_destroy(&rpm->timer_cond);
	pthread_cond_destroy(&rpm->cond);
	pthread_mutex_destroy(&rpm->lock);
	pthread_mutex_destroy(&rpm->hooks_lock);
	pthread_mutex_destroy(&rpm->allow_lock);
	free(rpm);
}

void rpm_ref(struct rpm *rpm)
{
	pthread_mutex_lock(&rpm->lock);
	rpm->refs++;
	pthread_mutex_unlock(&rpm->lock);
}

void rpm_unref(struct rpm *rpm)
{
	unsigned int left;

	pthread_mutex_lock(&rpm->lock);
	left = --rpm->refs;
	pthread_mutex_unlock(&rpm->lock);
	/* Unpublished and nobody else holds it: nobody can lock it now. */
	if (!left)
		rpm_free(rpm);
}

void rpm_fini(struct rpm *rpm)
{
	int ret;

	if (!rpm)
		return;
	pthread_mutex_lock(&rpm->lock);
	rpm->stop = true;
	pthread_cond_signal(&rpm->timer_cond);
	pthread_mutex_unlock(&rpm->lock);
	if (rpm->thread_started)
		pthread_join(rpm->thread, NULL);
	if (!api_users_drain(rpm))
		log_err(rpm->ctx, "%s: runtime PM: a public call is still inside after %d ms; it frees the runtime-PM state when it leaves",
			rpm->dev->name, RPM_FINI_USERS_TIMEOUT_MS);

	/* Leave the device awake for whoever opens it next (xe:
	 * xe_pm_runtime_fini() does pm_runtime_get_sync()). A device that does
	 * not answer is only logged: teardown never depends on it. */
	if (rpm_is_suspended(rpm)) {
		ret = rpm_get(rpm);
		if (ret)
			log_warn(rpm->ctx, "%s: left asleep at close: %s", rpm->dev->name,
				 ugpu_strerror(ret));
	}
	stats_keep(rpm);
	pthread_mutex_lock(&rpm->lock);
	rpm->dead = true;
	pthread_cond_broadcast(&rpm->cond); /* waiters in rpm_get() see it */
	pthread_mutex_unlock(&rpm->lock);
	rpm_unref(rpm);
}

/* --- settings, hooks, stats --------------------------------------------- */

void rpm_set_autosuspend_delay(struct rpm *rpm, int delay_ms)
{
	pthread_mutex_lock(&rpm->lock);
	rpm->delay_ms = delay_ms < 0 ? -1 : delay_ms;
	pthread_cond_signal(&rpm->timer_cond);
	pthread_mutex_unlock(&rpm->lock);
}

void rpm_set_d3cold_threshold(struct rpm *rpm, uint64_t bytes)
{
	pthread_mutex_lock(&rpm->lock);
	rpm->threshold = bytes;
	pthread_mutex_unlock(&rpm->lock);
}

int rpm_allow(struct rpm *rpm, bool allow)
{
	bool was;
	int ret = 0;

	pthread_mutex_lock(&rpm->allow_lock);
	pthread_mutex_lock(&rpm->lock);
	was = rpm->allowed;
	pthread_mutex_unlock(&rpm->lock);
	if (allow && !was) {
		pthread_mutex_lock(&rpm->lock);
		rpm->allowed = true;
		put_locked(rpm);
		pthread_mutex_unlock(&rpm->lock);
	} else if (!allow && was) {
		ret = rpm_get(rpm);
		if (!ret) {
			pthread_mutex_lock(&rpm->lock);
			rpm->allowed = false;
			pthread_mutex_unlock(&rpm->lock);
		}
	}
	pthread_mutex_unlock(&rpm->allow_lock);
	return ret;
}

int rpm_hook_register(struct rpm *rpm, const struct rpm_hook_ops *ops, void *arg,
		      struct rpm_hook **out)
{
	struct rpm_hook *h;

	if (!rpm || !ops || !ops->name || !out)
		return -EINVAL;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->ops = ops;
	h->arg = arg;
	pthread_mutex_lock(&rpm->hooks_lock);
	pthread_mutex_lock(&rpm->lock);
	list_add_tail(&rpm->hooks, &h->link);
	rpm->n_evicting += ops->evicts_vram;
	rpm->n_restore += ops->restore != NULL;
	pthread_mutex_unlock(&rpm->lock);
	pthread_mutex_unlock(&rpm->hooks_lock);
	*out = h;
	return 0;
}

void rpm_hook_unregister(struct rpm *rpm, struct rpm_hook *h)
{
	if (!rpm || !h)
		return;
	pthread_mutex_lock(&rpm->hooks_lock);
	pthread_mutex_lock(&rpm->lock);
	list_del(&h->link);
	rpm->n_evicting -= h->ops->evicts_vram;
	rpm->n_restore -= h->ops->restore != NULL;
	if (h->ops->stats) {
		uint64_t listed = rpm->retired.bo_mappings_listed;

		h->ops->stats(h->arg, &rpm->retired);
		rpm->retired.bo_mappings_listed = listed; /* a gauge, not a total */
	}
	pthread_mutex_unlock(&rpm->lock);
	pthread_mutex_unlock(&rpm->hooks_lock);
	free(h);
}

void rpm_stats(struct rpm *rpm, struct ugpu_rpm_stats *o)
{
	struct rpm_hook *h;
	uint64_t susp_ns;

	memset(o, 0, sizeof(*o));
	o->size = sizeof(*o);
	pthread_mutex_lock(&rpm->lock);
	o->state = rpm->state;
	o->allowed = rpm->allowed;
	o->autosuspend_delay_ms = rpm->delay_ms;
	o->d3cold_threshold = rpm->threshold;
	o->usage = rpm->usage - !rpm->allowed;
	o->suspends = rpm->suspends;
	o->suspends_d3cold = rpm->suspends_d3cold;
	o->resumes = rpm->resumes;
	o->aborted = rpm->aborted;
	o->errors = rpm->errors;
	o->wake_last_us = rpm->wake_last_us;
	o->wake_max_us = rpm->wake_max_us;
	o->wake_total_us = rpm->wake_total_us;
	o->resume_last_us = rpm->resume_last_us;
	o->suspend_last_us = rpm->suspend_last_us;
	susp_ns = rpm->suspended_ns;
	if (rpm->state == UGPU_RPM_SUSPENDED)
		susp_ns += now_ns() - rpm->suspended_since_ns;
	o->suspended_us = susp_ns / 1000;
	o->bo_mappings_released = rpm->retired.bo_mappings_released;
	o->bo_wake_faults = rpm->retired.bo_wake_faults;
	o->bo_evicted = rpm->retired.bo_evicted;
	o->bo_restored = rpm->retired.bo_restored;
	o->bo_backed_up = rpm->retired.bo_backed_up;
	list_for_each(l, &rpm->hooks)
		if ((h = hook_of(l))->ops->stats)
			h->ops->stats(h->arg, o);
	pthread_mutex_unlock(&rpm->lock);
	o->power_state = current_power(rpm->dev);
}

/* --- public API -----------------------------------------------------------
 *
 * dev->rpm is unpublished under the device's publication lock by the
 * removal (and by close) before rpm_fini(): a public call looks it up under
 * that lock and counts itself in @api_users (and @refs) before letting go,
 * so the rpm cannot be freed under it (rpm_fini() drains them, the last
 * rpm_unref() frees). The lock is never held across the call itself.
 */

/* The device's rpm with a user reference (rpm_user_leave() drops it).
 * Returns 0, -EINVAL (no device, or one being closed), -ENODEV (removed). */
int rpm_user_enter(struct ugpu_device *dev, struct rpm **out)
{
	struct rpm *rpm;

	if (!dev)
		return -EINVAL;
	pthread_mutex_lock(&dev->pub_lock);
	rpm = dev->rpm;
	if (rpm) {
		pthread_mutex_lock(&rpm->lock);
		rpm->api_users++;
		rpm->refs++;
		pthread_mutex_unlock(&rpm->lock);
	}
	pthread_mutex_unlock(&dev->pub_lock);
	if (!rpm)
		return device_is_removed(dev) ? -ENODEV : -EINVAL;
	*out = rpm;
	return 0;
}

void rpm_user_leave(struct rpm *rpm)
{
	pthread_mutex_lock(&rpm->lock);
	if (!--rpm->api_users)
		pthread_cond_broadcast(&rpm->cond);
	pthread_mutex_unlock(&rpm->lock);
	rpm_unref(rpm);
}

/*
 * The stats rpm_fini() kept in the device. Between the removal unpublishing
 * dev->rpm and rpm_fini() keeping them there is a short gap (the rpm thread
 * is joined, public calls drain): wait for them, bounded by what rpm_fini()
 * itself may wait.
 */
static int last_stats(struct ugpu_device *dev, struct ugpu_rpm_stats *out)
{
	uint64_t deadline = now_ns() + (RPM_FINI_USERS_TIMEOUT_MS + RPM_WAIT_TIMEOUT_MS) * 1000000ull;

	for (;;) {
		bool kept;

		pthread_mutex_lock(&dev->pub_lock);
		kept = dev->rpm_last.size != 0;
		if (kept)
			*out = dev->rpm_last;
		pthread_mutex_unlock(&dev->pub_lock);
		if (kept)
			return 0;
		if (now_ns() >= deadline)
			return -ETIMEDOUT;
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	}
}

int rpm_get_dev(struct ugpu_device *dev)
{
	struct rpm *rpm;
	int ret = rpm_user_enter(dev, &rpm);

	if (ret)
		return ret;
	ret = rpm_get(rpm);
	rpm_user_leave(rpm);
	return ret;
}

void rpm_put_dev(struct ugpu_device *dev)
{
	struct rpm *rpm;

	/* After a removal the reference died with the device: nothing to do. */
	if (rpm_user_enter(dev, &rpm))
		return;
	rpm_put(rpm);
	rpm_user_leave(rpm);
}

/* The application's references are counted apart (@app_refs): a put
 * without a get of its own is refused even while the driver holds
 * references (host suspend, kernels, copies), which it must not drop. */
UGPU_API int ugpu_device_rpm_get(struct ugpu_device *dev)
{
	if (dev && device_is_remote(dev))
		return -EOPNOTSUPP; /* not served through ugpud yet */
	struct rpm *rpm;
	int ret = rpm_user_enter(dev, &rpm);

	if (ret)
		return ret;
	ret = rpm_get(rpm);
	if (!ret) {
		pthread_mutex_lock(&rpm->lock);
		rpm->app_refs++;
		pthread_mutex_unlock(&rpm->lock);
	}
	rpm_user_leave(rpm);
	return ret;
}

UGPU_API void ugpu_device_rpm_put(struct ugpu_device *dev)
{
	if (dev && device_is_remote(dev))
		return; /* not served through ugpud yet */
	struct rpm *rpm;

	/* After a removal the reference died with the device: nothing to do. */
	if (rpm_user_enter(dev, &rpm))
		return;
	pthread_mutex_lock(&rpm->lock);
	if (!rpm->app_refs) {
		if (!rpm->dead)
			log_err(rpm->ctx, "%s: ugpu_device_rpm_put() without a ugpu_device_rpm_get() (ignored)",
				rpm->dev->name);
	} else {
		rpm->app_refs--;
		if (!rpm->dead)
			put_locked(rpm);
	}
	pthread_mutex_unlock(&rpm->lock);
	rpm_user_leave(rpm);
}

UGPU_API int ugpu_device_rpm_allow(struct ugpu_device *dev, bool allow)
{
	if (dev && device_is_remote(dev))
		return -EOPNOTSUPP; /* not served through ugpud yet */
	struct rpm *rpm;
	int ret = rpm_user_enter(dev, &rpm);

	if (ret)
		return ret;
	ret = rpm_allow(rpm, allow);
	rpm_user_leave(rpm);
	return ret;
}

UGPU_API int ugpu_device_rpm_set_autosuspend_delay(struct ugpu_device *dev, int delay_ms)
{
	if (dev && device_is_remote(dev))
		return -EOPNOTSUPP; /* not served through ugpud yet */
	struct rpm *rpm;
	int ret = rpm_user_enter(dev, &rpm);

	if (ret)
		return ret;
	rpm_set_autosuspend_delay(rpm, delay_ms);
	rpm_user_leave(rpm);
	return 0;
}

UGPU_API int ugpu_device_rpm_set_d3cold_threshold(struct ugpu_device *dev, uint64_t bytes)
{
	if (dev && device_is_remote(dev))
		return -EOPNOTSUPP; /* not served through ugpud yet */
	struct rpm *rpm;
	int ret = rpm_user_enter(dev, &rpm);

	if (ret)
		return ret;
	rpm_set_d3cold_threshold(rpm, bytes);
	rpm_user_leave(rpm);
	return 0;
}

UGPU_API int ugpu_device_rpm_suspend(struct ugpu_device *dev)
{
	if (dev && device_is_remote(dev))
		return -EOPNOTSUPP; /* not served through ugpud yet */
	struct rpm *rpm;
	int ret = rpm_user_enter(dev, &rpm);

	if (ret)
		return ret;
	ret = rpm_suspend_now(rpm);
	rpm_user_leave(rpm);
	return ret;
}

UGPU_API int ugpu_device_rpm_stats(struct ugpu_device *dev, struct ugpu_rpm_stats *stats)
{
	if (dev && device_is_remote(dev))
		return -EOPNOTSUPP; /* not served through ugpud yet */
	struct ugpu_rpm_stats s;
	struct rpm *rpm;
	size_t n;
	int ret;

	if (!dev || !stats || stats->size < sizeof(stats->size))
		return -EINVAL;
	ret = rpm_user_enter(dev, &rpm);
	if (!ret) {
		rpm_stats(rpm, &s);
		rpm_user_leave(rpm);
	} else if (ret == -ENODEV) {
		ret = last_stats(dev, &s);
	}
	if (ret)
		return ret;
	s.size = stats->size;
	n = stats->size < sizeof(s) ? stats->size : sizeof(s);
	memcpy(stats, &s, n);
	return 0;
}

UGPU_API const char *ugpu_rpm_state_name(enum ugpu_rpm_state state)
{
	switch (state) {
	case UGPU_RPM_ACTIVE:
		return "active";
	case UGPU_RPM_SUSPENDING:
		return "suspending";
	case UGPU_RPM_SUSPENDED:
		return "suspended";
	case UGPU_RPM_RESUMING:
		return "resuming";
	}
	return "?";
}

/* Counters of this module in the stats registry (base/stats.h): the public
 * struct, then the wake histogram. */
struct rpm_stats_snap {
	struct ugpu_rpm_stats s;
	struct stat_hist_snap wake;
};

static int rpm_stats_snapshot(struct ugpu_device *dev, void *buf)
{
	struct rpm_stats_snap *snap = buf;
	int ret;

	snap->s.size = sizeof(snap->s);
	ret = ugpu_device_rpm_stats(dev, &snap->s);
	if (!ret)
		stat_hist_read(&dev->rpm_wake_hist, &snap->wake);
	return ret;
}

static const struct stat_desc rpm_stats_descs[] = {
	STAT_NAMED("rpm_state", struct ugpu_rpm_stats, state, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_NONE,
		   "runtime-PM state (enum ugpu_rpm_state)"),
	STAT_NAMED("rpm_power_state", struct ugpu_rpm_stats, power_state, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_NONE,
		   "the device's power state (enum ugpu_power_state)"),
	STAT_NAMED("rpm_allowed", struct ugpu_rpm_stats, allowed, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_NONE,
		   "1 when runtime suspend is allowed"),
	STAT_NAMED("rpm_usage", struct ugpu_rpm_stats, usage, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_NONE,
		   "runtime-PM references held"),
	STAT_NAMED("rpm_suspend_count", struct ugpu_rpm_stats, suspends, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "completed runtime suspends"),
	STAT_NAMED("rpm_suspend_d3cold_count", struct ugpu_rpm_stats, suspends_d3cold, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "runtime suspends that went to D3cold"),
	STAT_NAMED("rpm_resume_count", struct ugpu_rpm_stats, resumes, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "completed runtime wakes"),
	STAT_NAMED("rpm_abort_count", struct ugpu_rpm_stats, aborted, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "runtime suspends abandoned"),
	STAT_NAMED("rpm_error_count", struct ugpu_rpm_stats, errors, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "runtime suspends or wakes the device refused"),
	STAT_NAMED("rpm_wake_last_us", struct ugpu_rpm_stats, wake_last_us, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_US,
		   "the last D3 to D0 transition"),
	STAT_NAMED("rpm_wake_max_us", struct ugpu_rpm_stats, wake_max_us, UGPU_STAT_GAUGE, UGPU_STAT_UNIT_US,
		   "the longest D3 to D0 transition"),
	STAT_NAMED("rpm_wake_us", struct ugpu_rpm_stats, wake_total_us, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_US,
		   "D3 to D0 transitions, summed"),
	STAT_NAMED("rpm_suspended_us", struct ugpu_rpm_stats, suspended_us, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_US,
		   "time spent runtime-suspended"),
	STAT_NAMED("rpm_bo_mappings_released", struct ugpu_rpm_stats, bo_mappings_released, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "CPU mappings released by runtime suspends"),
	STAT_NAMED("rpm_bo_wake_fault_count", struct ugpu_rpm_stats, bo_wake_faults, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "CPU touches of released mappings that woke the device"),
	STAT_NAMED("rpm_bo_evict_count", struct ugpu_rpm_stats, bo_evicted, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "BOs moved to system memory for D3cold"),
	STAT_NAMED("rpm_bo_restore_count", struct ugpu_rpm_stats, bo_restored, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "BOs moved back to VRAM after a D3cold wake"),
	STAT_NAMED("rpm_bo_backup_count", struct ugpu_rpm_stats, bo_backed_up, UGPU_STAT_COUNTER, UGPU_STAT_UNIT_NONE,
		   "BOs that may not leave VRAM copied aside for D3cold"),
	STAT_HIST("rpm_wake_latency_us", struct rpm_stats_snap, wake, UGPU_STAT_UNIT_US,
		  "D3 to D0 transitions of runtime wakes"),
};

STATS_GROUP(rpm_stats_group, "rpm", struct rpm_stats_snap, rpm_stats_snapshot, rpm_stats_descs)
