/* SPDX-License-Identifier: MIT */
/*
 * Progress of long operations, reported through the context's hook
 * (ugpu_context_set_progress()).
 *
 * A struct progress lives on the stack of the one thread doing the
 * operation, from progress_begin() to progress_end(): it is that thread's
 * alone (no lock). The hook's settings and generation are read once at
 * begin, under the context's progress_lock; each report takes that lock
 * again and calls the hook only if it is still the one of that generation
 * (an operation goes to one hook, with that hook's filter and interval).
 */
#ifndef UGPU_BASE_PROGRESS_H
#define UGPU_BASE_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

#include <ugpu/ugpu.h>

struct progress {
	struct ugpu_context *ctx;
	struct ugpu_progress p;
	uint64_t t0, last, interval_ns, min_bytes;
	uint64_t gen; /* the hook's generation at begin: reports go to it only */
	bool hooked; /* a hook was set at begin */
	bool on; /* reporting (the total reached the hook's minimum) */
};

/* Start reporting @op on device @device (a name that outlives the
 * operation) over @total bytes: the first report, with done 0, when the
 * hook takes operations of that size. */
void progress_begin(struct progress *pr, struct ugpu_context *ctx, enum ugpu_progress_op op,
		    const char *device, uint64_t total);

/* @bytes more done (clamped to the total); reported when the interval has
 * passed. Nothing for 0. */
void progress_add(struct progress *pr, uint64_t bytes);

/* The operation learnt it handles @total bytes after all (more than it
 * began with: an eviction taking victims larger than the room it needs).
 * Once the total reaches the hook's minimum the operation is reported, its
 * first report carrying what was done so far. */
void progress_grow(struct progress *pr, uint64_t total);

/* The last report, with @err. Safe on a progress never begun if it was
 * zeroed. */
void progress_end(struct progress *pr, int err);

#endif
