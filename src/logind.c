/* SPDX-License-Identifier: MIT */
/*
 * The host-suspend notifier for systemd hosts: systemd-logind's
 * PrepareForSleep signal with a "delay" sleep inhibitor (sd-bus), the
 * userspace counterpart of the kernel's PM_SUSPEND_PREPARE/POST_SUSPEND
 * notifier. See docs/suspend.md.
 *
 *   start: take a delay inhibitor (logind waits for us, up to its
 *          InhibitDelayMaxSec, before sleeping), subscribe to the signal.
 *   PrepareForSleep(true):  prepare + suspend the device, then close the
 *          inhibitor fd: logind goes on with the sleep.
 *   PrepareForSleep(false): resume the device if that suspend was ours,
 *          take a new inhibitor (unless one is still held).
 *
 * Without libsystemd at build time, or without a system bus / logind at run
 * time, ugpu_logind_start() says so (-ENOTSUP / -ENOENT) and the API calls
 * (or `ugpuctl suspend`) are the way to drive suspend.
 *
 * Threading: one thread per notifier serves the bus; it polls with a 200 ms
 * bound and checks the stop flag, so stop is bounded too.
 */
#include <errno.h>
#include <stdlib.h>

#include <ugpu/pm.h>

#include "src/device.h"
#include "src/remote.h"
#include "base/log.h"

#ifdef UGPU_HAVE_SYSTEMD
#include <pthread.h>
#include <fcntl.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

/*
 * struct ugpu_logind - one notifier.
 * @dev: the device it suspends, or NULL when @fn is told instead
 * (ugpu_logind_watch()). @ctx: for logging.
 * Locking: @stop is atomic; everything else is used only by the bus thread
 * after start (start and stop own it before/after the thread).
 */
struct ugpu_logind {
	struct ugpu_context *ctx;
	struct ugpu_device *dev;
	ugpu_sleep_fn fn;
	void *user;
	sd_bus *bus;
	sd_bus_slot *slot;
	int inhibit_fd;
	int ours; /* the device is SUSPENDED by our PrepareForSleep(true) */
	pthread_t thread;
	int stop;
};

static int inhibit_take(struct ugpu_logind *ln)
{
	sd_bus_error err = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	int fd, ret;

	ret = sd_bus_call_method(ln->bus, "org.freedesktop.login1", "/org/freedesktop/login1",
				 "org.freedesktop.login1.Manager", "Inhibit", &err, &reply, "ssss",
				 "sleep", "ugpu", "saving GPU memory before sleep", "delay");
	if (ret < 0) {
		log_warn(ln->ctx, "logind: no sleep inhibitor: %s",
			 err.message ? err.message : ugpu_strerror(ret));
		sd_bus_error_free(&err);
		return ret;
	}
	ret = sd_bus_message_read(reply, "h", &fd);
	if (ret >= 0) {
		ln->inhibit_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
		ret = ln->inhibit_fd < 0 ? -errno : 0;
	}
	sd_bus_message_unref(reply);
	return ret;
}

static void inhibit_drop(struct ugpu_logind *ln)
{
	if (ln->inhibit_fd >= 0)
		close(ln->inhibit_fd);
	ln->inhibit_fd = -1;
}

static int on_prepare_for_sleep(sd_bus_message *m, void *user, sd_bus_error *err)
{
	struct ugpu_logind *ln = user;
	struct ugpu_pm_stats st = { .size = sizeof(st) };
	int start = 0, ret = 0;

	(void)err;
	if (sd_bus_message_read(m, "b", &start) < 0)
		return 0;
	if (ln->fn) { /* the program suspends its devices itself */
		log_info(ln->ctx, "logind: PrepareForSleep(%s)", start ? "true" : "false");
		ln->fn(ln->user, start);
		if (start)
			inhibit_drop(ln);
		else if (ln->inhibit_fd < 0)
			inhibit_take(ln); /* as below: one inhibitor at most */
		return 0;
	}
	ugpu_device_pm_stats(ln->dev, &st);
	if (start) {
		bool prepared_here = false;

		/*
		 * VRAM is lost over the sleep, so the device must be SUSPENDED
		 * whatever state the application left it in: a prepare of its
		 * own is completed, a suspend of its own is left alone (and so
		 * is not undone at wake-up: @ours stays 0). The application may
		 * be in the middle of a transition of its own when the signal
		 * comes: ours then waits for it and finds the device PREPARED or
		 * SUSPENDED (-EBUSY), which is where we were going, not a
		 * failure. Only a prepare of our own is ever cancelled.
		 */
		log_info(ln->dev->ctx, "logind: PrepareForSleep(true): suspending the device");
		ln->ours = 0;
		if (st.state == UGPU_PM_ACTIVE) {
			ret = ugpu_device_suspend_prepare(ln->dev);
			prepared_here = !ret;
			if (ret == -EBUSY) {
				ugpu_device_pm_stats(ln->dev, &st);
				ret = st.state == UGPU_PM_ACTIVE ? -EBUSY : 0;
			}
		}
		if (!ret && st.state != UGPU_PM_SUSPENDED) {
			ret = ugpu_device_suspend(ln->dev);
			if (ret == -EBUSY) {
				/* The application suspended it meanwhile. */
				ugpu_device_pm_stats(ln->dev, &st);
				ret = st.state == UGPU_PM_SUSPENDED ? 0 : -EBUSY;
			} else if (!ret) {
				ln->ours = 1;
			}
		}
		if (ret) {
			log_err(ln->dev->ctx, "logind: device suspend failed (%s); the host sleeps with the device on",
				ugpu_strerror(ret));
			if (prepared_here)
				ugpu_device_suspend_cancel(ln->dev);
			ln->ours = 0;
		}
		inhibit_drop(ln); /* let the host sleep either way */
	} else {
		log_info(ln->dev->ctx, "logind: PrepareForSleep(false): resuming the device");
		if (ln->ours && st.state == UGPU_PM_SUSPENDED) {
			ret = ugpu_device_resume(ln->dev);
			/* A failed wake is retried once; -EBADMSG resumed (the
			 * damaged backups were reported). */
			if (ret && ret != -EBADMSG)
				ret = ugpu_device_resume(ln->dev);
			if (ret)
				log_err(ln->dev->ctx, "logind: resume failed: %s", ugpu_strerror(ret));
		}
		ln->ours = 0;
		/*
		 * Re-arm for the next sleep, after the resume. A false with no
		 * true before it (the notifier started while logind was
		 * already sleeping, or the sleep was aborted) finds the
		 * inhibitor still held: a second one would never be closed and
		 * logind would wait InhibitDelayMaxSec on every later sleep.
		 */
		if (ln->inhibit_fd < 0)
			inhibit_take(ln);
	}
	return 0;
}

static void *bus_thread(void *arg)
{
	struct ugpu_logind *ln = arg;

	while (!__atomic_load_n(&ln->stop, __ATOMIC_ACQUIRE)) {
		int r = sd_bus_process(ln->bus, NULL);

		if (r < 0) {
			log_err(ln->ctx, "logind: bus error: %s; notifier stops", ugpu_strerror(r));
			break;
		}
		if (r == 0)
			sd_bus_wait(ln->bus, 200 * 1000);
	}
	return NULL;
}

/* Either @dev or @fn. */
static int logind_start(struct ugpu_context *ctx, struct ugpu_device *dev, ugpu_sleep_fn fn,
			void *user, struct ugpu_logind **out)
{
	struct ugpu_logind *ln;
	int ret;

	ln = calloc(1, sizeof(*ln));
	if (!ln)
		return -ENOMEM;
	ln->ctx = ctx;
	ln->dev = dev;
	ln->fn = fn;
	ln->user = user;
	ln->inhibit_fd = -1;
	ret = sd_bus_open_system(&ln->bus);
	if (ret < 0) {
		log_info(ctx, "logind: no system bus (%s): use ugpu_device_suspend*() or ugpuctl",
			 ugpu_strerror(ret));
		ret = -ENOENT;
		goto out_free;
	}
	sd_bus_set_method_call_timeout(ln->bus, 2 * 1000 * 1000);
	/* Subscribe before taking the inhibitor: a PrepareForSleep(true)
	 * sent in between is then handled (the device suspends) instead of
	 * missed with an inhibitor held that logind waits on for nothing. */
	ret = sd_bus_match_signal(ln->bus, &ln->slot, "org.freedesktop.login1",
				  "/org/freedesktop/login1", "org.freedesktop.login1.Manager",
				  "PrepareForSleep", on_prepare_for_sleep, ln);
	if (ret < 0)
		goto out_bus;
	ret = inhibit_take(ln);
	if (ret < 0) {
		ret = -ENOENT; /* no logind on this bus */
		goto out_slot;
	}
	ret = -pthread_create(&ln->thread, NULL, bus_thread, ln);
	if (ret)
		goto out_inhibit;
	log_info(ctx, "logind: following PrepareForSleep with a delay inhibitor");
	*out = ln;
	return 0;

out_inhibit:
	inhibit_drop(ln);
out_slot:
	sd_bus_slot_unref(ln->slot);
out_bus:
	sd_bus_flush_close_unref(ln->bus);
out_free:
	free(ln);
	return ret;
}

UGPU_API int ugpu_logind_start(struct ugpu_device *dev, struct ugpu_logind **out)
{
	if (dev && device_is_remote(dev))
		return -EOPNOTSUPP; /* not served through ugpud yet */
	if (!dev || !out)
		return -EINVAL;
	return logind_start(dev->ctx, dev, NULL, NULL, out);
}

UGPU_API int ugpu_logind_watch(struct ugpu_context *ctx, ugpu_sleep_fn fn, void *user,
			       struct ugpu_logind **out)
{
	if (!ctx || !fn || !out)
		return -EINVAL;
	return logind_start(ctx, NULL, fn, user, out);
}

UGPU_API void ugpu_logind_stop(struct ugpu_logind *ln)
{
	if (!ln)
		return;
	__atomic_store_n(&ln->stop, 1, __ATOMIC_RELEASE);
	pthread_join(ln->thread, NULL);
	sd_bus_slot_unref(ln->slot);
	inhibit_drop(ln);
	sd_bus_flush_close_unref(ln->bus);
	free(ln);
}

#else /* !UGPU_HAVE_SYSTEMD */

UGPU_API int ugpu_logind_start(struct ugpu_device *dev, struct ugpu_logind **out)
{
	if (dev && device_is_remote(dev))
		return -EOPNOTSUPP; /* not served through ugpud yet */
	if (!dev || !out)
		return -EINVAL;
	log_info(dev->ctx, "logind: libugpu was built without libsystemd: use ugpu_device_suspend*() or ugpuctl");
	return -ENOTSUP;
}

UGPU_API int ugpu_logind_watch(struct ugpu_context *ctx, ugpu_sleep_fn fn, void *user,
			       struct ugpu_logind **out)
{
	(void)user;
	if (!ctx || !fn || !out)
		return -EINVAL;
	log_info(ctx, "logind: libugpu was built without libsystemd: use ugpu_device_suspend*() or ugpuctl");
	return -ENOTSUP;
}

UGPU_API void ugpu_logind_stop(struct ugpu_logind *ln)
{
	(void)ln;
}

#endif
