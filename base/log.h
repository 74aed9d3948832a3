/* SPDX-License-Identifier: MIT */
/* Internal logging: every module logs through its context's hook. */
#ifndef UGPU_SRC_LOG_H
#define UGPU_SRC_LOG_H

#include <ugpu/ugpu.h>

/*
 * log_msg() - format one line and hand it to @ctx's hook.
 * @ctx may be NULL (early errors, modules without a context): the message then
 * goes to stderr when its level passes UGPU_LOG (default WARN).
 */
void log_msg(struct ugpu_context *ctx, enum ugpu_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Resolve UGPU_LOG_DEFAULT to a concrete level. */
enum ugpu_log_level log_default_level(void);

#define log_err(ctx, ...) log_msg((ctx), UGPU_LOG_ERROR, __VA_ARGS__)
#define log_warn(ctx, ...) log_msg((ctx), UGPU_LOG_WARN, __VA_ARGS__)
#define log_info(ctx, ...) log_msg((ctx), UGPU_LOG_INFO, __VA_ARGS__)
#define log_dbg(ctx, ...) log_msg((ctx), UGPU_LOG_DEBUG, __VA_ARGS__)

#endif
