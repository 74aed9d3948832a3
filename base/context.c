/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/context.h"
#include "base/log.h"

UGPU_API int ugpu_context_create(const struct ugpu_context_opts *opts,
				 struct ugpu_context **out)
{
	struct ugpu_context_opts o = { 0 };
	struct ugpu_context *ctx;

	if (!out)
		return -EINVAL;
	if (opts) {
		/* Grown structs: copy what the caller knows, zero the rest. */
		if (opts->size < sizeof(opts->size))
			return -EINVAL;
		memcpy(&o, opts, opts->size < sizeof(o) ? opts->size : sizeof(o));
		if (o.log_level < UGPU_LOG_DEFAULT || o.log_level > UGPU_LOG_DEBUG)
			return -EINVAL;
	}

	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	pthread_mutex_init(&ctx->log_lock, NULL);
	pthread_mutex_init(&ctx->dev_lock, NULL);
	pthread_mutex_init(&ctx->progress_lock, NULL);
	list_init(&ctx->devices);
	ctx->log_fn = o.log_fn;
	ctx->log_user = o.log_user;
	ctx->log_level = o.log_level == UGPU_LOG_DEFAULT ? log_default_level() : o.log_level;
	*out = ctx;
	return 0;
}

UGPU_API void ugpu_context_destroy(struct ugpu_context *ctx)
{
	if (!ctx)
		return;
	pthread_mutex_destroy(&ctx->progress_lock);
	pthread_mutex_destroy(&ctx->dev_lock);
	pthread_mutex_destroy(&ctx->log_lock);
	free(ctx);
}

UGPU_API int ugpu_context_set_log(struct ugpu_context *ctx, ugpu_log_fn fn, void *user,
				  enum ugpu_log_level level)
{
	if (!ctx || level < UGPU_LOG_DEFAULT || level > UGPU_LOG_DEBUG)
		return -EINVAL;
	pthread_mutex_lock(&ctx->log_lock);
	ctx->log_fn = fn;
	ctx->log_user = user;
	__atomic_store_n(&ctx->log_level,
			 level == UGPU_LOG_DEFAULT ? log_default_level() : level, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&ctx->log_lock);
	return 0;
}
