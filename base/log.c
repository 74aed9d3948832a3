/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/context.h"
#include "base/log.h"

static const char *const level_names[] = {
	[UGPU_LOG_ERROR] = "error",
	[UGPU_LOG_WARN] = "warn",
	[UGPU_LOG_INFO] = "info",
	[UGPU_LOG_DEBUG] = "debug",
};

enum ugpu_log_level log_default_level(void)
{
	const char *env = getenv("UGPU_LOG");
	int l;

	if (env)
		for (l = UGPU_LOG_ERROR; l <= UGPU_LOG_DEBUG; l++)
			if (!strcasecmp(env, level_names[l]))
				return (enum ugpu_log_level)l;
	return UGPU_LOG_WARN;
}

static void log_stderr(enum ugpu_log_level level, const char *msg)
{
	fprintf(stderr, "ugpu %s: %s\n", level_names[level], msg);
}

void log_msg(struct ugpu_context *ctx, enum ugpu_log_level level, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	if (level < UGPU_LOG_ERROR || level > UGPU_LOG_DEBUG)
		level = UGPU_LOG_ERROR;
	if (!ctx) {
		if (level > log_default_level())
			return;
	} else {
		/* Racy peek to skip formatting; re-checked under the lock. */
		if (level > __atomic_load_n(&ctx->log_level, __ATOMIC_RELAXED))
			return;
	}

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);

	if (!ctx) {
		log_stderr(level, buf);
		return;
	}
	pthread_mutex_lock(&ctx->log_lock);
	if (level <= ctx->log_level) {
		if (ctx->log_fn)
			ctx->log_fn(ctx->log_user, level, buf);
		else
			log_stderr(level, buf);
	}
	pthread_mutex_unlock(&ctx->log_lock);
}
