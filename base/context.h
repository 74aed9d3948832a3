/* SPDX-License-Identifier: MIT */
/* The context object, shared by the internal modules. */
#ifndef UGPU_SRC_CONTEXT_H
#define UGPU_SRC_CONTEXT_H

#include <pthread.h>
#include <stdint.h>

#include <ugpu/ugpu.h>

#include "base/list.h"

/*
 * struct ugpu_context - owner of devices and buffer objects.
 *
 * Locking: @log_lock protects the log hook triple (@log_fn, @log_user,
 * @log_level); it is held while the hook runs so a replaced hook is never
 * called after ugpu_context_set_log() returns.
 * @dev_lock protects @devices (the context's open devices, linked by
 * struct ugpu_device.ctx_link, src/fabric.c) and @dev_seq (the next
 * device's index); a leaf: nothing is taken under it but a device's
 * reference count. A device is on the list from the end of its open to the
 * start of its close, so a device found there under the lock holds its
 * open reference and may be device_get() there.
 * @progress_lock protects the progress hook and its two settings
 * (ugpu_context_set_progress(), base/progress.c); held while the hook runs
 * (so a replaced hook is never called after the setter returns); a leaf,
 * taken with device locks held.
 */
struct ugpu_context {
	pthread_mutex_t log_lock;
	ugpu_log_fn log_fn;
	void *log_user;
	enum ugpu_log_level log_level;

	pthread_mutex_t dev_lock;
	struct list_link devices;
	uint32_t dev_seq;

	pthread_mutex_t progress_lock;
	ugpu_progress_fn progress_fn;
	void *progress_user;
	uint64_t progress_min_bytes;
	uint64_t progress_interval_ns;
	uint64_t progress_gen; /* bumped by every ugpu_context_set_progress() */
};

#endif
