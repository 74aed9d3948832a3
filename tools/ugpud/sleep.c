/* SPDX-License-Identifier: MIT */
/*
 * ugpud and host sleep (--logind): systemd-logind's PrepareForSleep,
 * followed through libugpu's notifier (ugpu_logind_watch(): a "delay"
 * inhibitor, released when our callback returns), drives the suspend of
 * every device the daemon serves. The callback runs on the notifier's
 * thread, but the devices' gate, the clients' events and the power steps
 * are the loop's: so the callback asks the loop (struct ugpud_sleep, the
 * eventfd the removal callback uses) and waits until the loop has done it.
 * The host sleeps only once every device is suspended, as with one process.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <ugpu/pm.h>

#include "base/clock.h"
#include "tools/ugpud/ugpud.h"

/* How long the notifier waits for the loop: logind itself waits at most its
 * InhibitDelayMaxSec (5 s by default) before sleeping anyway. */
#define SLEEP_WAIT_S 60

/*
 * struct ugpud_sleep - the notifier's requests to the loop.
 * @want: the latest request (true: sleep, false: wake); @asked: requests
 * made, @done: requests the loop finished; @stop: the loop is gone, no one
 * answers. Locking: @lock guards @want, @asked, @done and @stop (@cond
 * signalled when @done moves or @stop is set); nothing else is taken under
 * it. @ln is main's (start and stop).
 */
struct ugpud_sleep {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool want;
	uint64_t asked, done;
	bool stop;
	struct ugpu_logind *ln;
};

void host_sleep(struct ugpud *d, bool sleeping)
{
	for (uint32_t i = 0; i < d->ndevs; i++) {
		struct ugpud_dev *u = &d->devs[i];
		uint64_t t0 = now_us();
		bool prepared = false;
		int ret;

		if (__atomic_load_n(&u->removed, __ATOMIC_ACQUIRE))
			continue; /* nothing of it to keep */
		/* an administrator's step runs on a worker: it ends first
		 * (then this cycle goes on from where it left the device) */
		if (u->pm_busy && d->pm_wait)
			d->pm_wait(d, i);
		if (!sleeping) {
			if (!u->sleep_ours)
				continue; /* not ours: an administrator's suspend stays */
			ret = serve_pm_step(d, i, UGPUD_PM_RESUME);
			/* a failed wake is tried once more, as the library's
			 * notifier does; -EBADMSG resumed (damaged backups logged) */
			if (ret && ret != -EBADMSG)
				ret = serve_pm_step(d, i, UGPUD_PM_RESUME);
			u->sleep_ours = false;
			ugpud_log("host woke: device %u resumed in %llu us%s%s", i,
				  (unsigned long long)(now_us() - t0), ret ? ": " : "",
				  ret ? ugpu_strerror(ret) : "");
			continue;
		}
		if (u->suspended)
			continue; /* an administrator suspended it: left so */
		/* -EBUSY: an administrator's prepare came first; completed */
		ret = serve_pm_step(d, i, UGPUD_PM_PREPARE);
		prepared = !ret;
		if (!ret || ret == -EBUSY)
			ret = serve_pm_step(d, i, UGPUD_PM_SUSPEND);
		if (ret) {
			if (prepared)
				serve_pm_step(d, i, UGPUD_PM_CANCEL);
			ugpud_log("host sleeps: device %u not suspended (%s); it sleeps with the device on",
				  i, ugpu_strerror(ret));
			continue;
		}
		u->sleep_ours = true;
		ugpud_log("host sleeps: device %u suspended in %llu us", i,
			  (unsigned long long)(now_us() - t0));
	}
}

/* The notifier's thread: ask the loop, wait until it is done (bounded). */
static void on_sleep(void *user, bool sleeping)
{
	struct ugpud *d = user;
	struct ugpud_sleep *s = d->sleep;
	struct timespec until;
	uint64_t one = 1, mine;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += SLEEP_WAIT_S;
	pthread_mutex_lock(&s->lock);
	s->want = sleeping;
	mine = ++s->asked;
	if (write(d->ev_fd, &one, sizeof(one)) < 0)
		s->stop = true; /* cannot wake the loop: do not wait for it */
	while (s->done < mine && !s->stop)
		if (pthread_cond_timedwait(&s->cond, &s->lock, &until) == ETIMEDOUT) {
			ugpud_log("logind: the loop did not %s the devices within %d s",
				  sleeping ? "suspend" : "resume", SLEEP_WAIT_S);
			break;
		}
	pthread_mutex_unlock(&s->lock);
}

void sleep_poll(struct ugpud *d)
{
	struct ugpud_sleep *s = d->sleep;
	uint64_t asked;
	bool want;

	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	asked = s->asked;
	want = s->want;
	pthread_mutex_unlock(&s->lock);
	if (asked == s->done) /* @done is written by this thread alone */
		return;
	/* several requests since the last look: the latest is what holds */
	host_sleep(d, want);
	pthread_mutex_lock(&s->lock);
	s->done = asked;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

int sleep_start(struct ugpud *d)
{
	struct ugpud_sleep *s = calloc(1, sizeof(*s));
	pthread_condattr_t ca;
	int ret;

	if (!s)
		return -ENOMEM;
	if (d->ev_fd < 0) {
		free(s);
		return -EBADF;
	}
	pthread_mutex_init(&s->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &ca);
	pthread_condattr_destroy(&ca);
	d->sleep = s;
	ret = ugpu_logind_watch(d->ctx, on_sleep, d, &s->ln);
	if (ret) {
		d->sleep = NULL;
		pthread_cond_destroy(&s->cond);
		pthread_mutex_destroy(&s->lock);
		free(s);
	}
	return ret;
}

void sleep_stop(struct ugpud *d)
{
	struct ugpud_sleep *s = d->sleep;

	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stop = true; /* a sleep asked for now is not waited for */
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	ugpu_logind_stop(s->ln);
	d->sleep = NULL;
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	free(s);
}
