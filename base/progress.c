/* SPDX-License-Identifier: MIT */
#include <errno.h>

#include "base/clock.h"
#include "base/context.h"
#include "base/progress.h"

UGPU_API int ugpu_context_set_progress(struct ugpu_context *ctx, ugpu_progress_fn fn, void *user,
				       uint64_t min_bytes, unsigned int interval_ms)
{
	if (!ctx)
		return -EINVAL;
	pthread_mutex_lock(&ctx->progress_lock);
	ctx->progress_fn = fn;
	ctx->progress_user = user;
	ctx->progress_min_bytes = min_bytes;
	ctx->progress_interval_ns = (uint64_t)interval_ms * 1000000u;
	ctx->progress_gen++;
	pthread_mutex_unlock(&ctx->progress_lock);
	return 0;
}

UGPU_API const char *ugpu_progress_op_name(enum ugpu_progress_op op)
{
	switch (op) {
	case UGPU_PROGRESS_EVICT:
		return "evict";
	case UGPU_PROGRESS_BACKUP:
		return "backup";
	case UGPU_PROGRESS_RESTORE:
		return "restore";
	case UGPU_PROGRESS_REMOVAL:
		return "removal";
	case UGPU_PROGRESS_PREFETCH:
		return "prefetch";
	}
	return "?";
}

static void report(struct progress *pr, uint64_t now)
{
	struct ugpu_context *ctx = pr->ctx;

	pr->last = now;
	pr->p.elapsed_ns = now - pr->t0;
	pthread_mutex_lock(&ctx->progress_lock);
	if (ctx->progress_fn && ctx->progress_gen == pr->gen)
		ctx->progress_fn(ctx->progress_user, &pr->p);
	pthread_mutex_unlock(&ctx->progress_lock);
}

void progress_begin(struct progress *pr, struct ugpu_context *ctx, enum ugpu_progress_op op,
		    const char *device, uint64_t total)
{
	*pr = (struct progress){ .ctx = ctx };
	if (!ctx)
		return;
	pthread_mutex_lock(&ctx->progress_lock);
	pr->hooked = ctx->progress_fn != NULL;
	pr->min_bytes = ctx->progress_min_bytes;
	pr->interval_ns = ctx->progress_interval_ns;
	pr->gen = ctx->progress_gen;
	pthread_mutex_unlock(&ctx->progress_lock);
	if (!pr->hooked)
		return;
	pr->p = (struct ugpu_progress){ .op = op, .device = device, .total = total };
	pr->t0 = now_ns();
	pr->on = total >= pr->min_bytes;
	if (pr->on)
		report(pr, pr->t0);
}

void progress_add(struct progress *pr, uint64_t bytes)
{
	uint64_t now;

	if (!pr->hooked || !bytes)
		return;
	pr->p.done = bytes > pr->p.total - pr->p.done ? pr->p.total : pr->p.done + bytes;
	if (!pr->on)
		return;
	now = now_ns();
	if (now - pr->last >= pr->interval_ns)
		report(pr, now);
}

void progress_grow(struct progress *pr, uint64_t total)
{
	if (!pr->hooked || total <= pr->p.total)
		return;
	pr->p.total = total;
	if (!pr->on && total >= pr->min_bytes) {
		pr->on = true;
		report(pr, now_ns());
	}
}

void progress_end(struct progress *pr, int err)
{
	pr->hooked = false;
	if (!pr->on)
		return;
	pr->p.finished = 1;
	pr->p.err = err;
	report(pr, now_ns());
	pr->on = false;
}
