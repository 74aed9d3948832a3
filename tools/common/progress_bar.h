/* SPDX-License-Identifier: MIT */
/*
 * The tools' drawing of the library's progress reports
 * (ugpu_context_set_progress()): a bar on stderr when stderr is a terminal,
 * for operations that run long enough to be worth one (DRAW_AFTER_MS), kept
 * up to date in place and left as a summary line when the operation ends;
 * when stderr is not a terminal, only that summary line, for operations that
 * took a second or more. Public API only, so ugpu-demo may use it.
 */
#ifndef UGPU_TOOLS_PROGRESS_BAR_H
#define UGPU_TOOLS_PROGRESS_BAR_H

#include <stdio.h>

#include <ugpu/ugpu.h>

/* The ugpu_progress_fn; @user: NULL (stderr) or a FILE * to draw on. */
void progress_bar(void *user, const struct ugpu_progress *p);

/* Draw @ctx's long operations on stderr (16 MiB and more, redrawn at most
 * every 100 ms). Returns ugpu_context_set_progress()'s result. */
int progress_bar_install(struct ugpu_context *ctx);

/* One line of @p into @buf (no newline, no terminal codes): what the bar
 * shows, for the drawing and for tests. */
void progress_bar_format(const struct ugpu_progress *p, char *buf, size_t len);

/* Take a bar off the screen before printing something else to the terminal
 * (the next report draws it again). */
void progress_bar_clear(void);

/* A ugpu_log_fn printing as the library's default does ("ugpu LEVEL: ..."
 * on stderr), after taking a bar off the screen. */
void progress_bar_log(void *user, enum ugpu_log_level level, const char *msg);

/* What starts each line this prints (a daemon's "ugpud: "); "" by default.
 * @p must outlive the drawing. */
void progress_bar_set_prefix(const char *p);

#endif
