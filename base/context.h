/* SPDX-License-Identifier: MIT */
/* The context object, shared by the internal modules. */
#ifndef UGPU_SRC_CONTEXT_H
#define UGPU_SRC_CONTEXT_H

#include <pthread.h>

#include <ugpu/ugpu.h>

/*
 * struct ugpu_context - owner of devices and buffer objects.
 *
 * Locking: @log_lock protects the log hook triple (@log_fn, @log_user,
 * @log_level); it is held while the hook runs so a replaced hook is never
 * called after ugpu_context_set_log() returns. Nothing else in the context is
 * shared yet.
 */
struct ugpu_context {
	pthread_mutex_t log_lock;
	ugpu_log_fn log_fn;
	void *log_user;
	enum ugpu_log_level log_level;
};

#endif
