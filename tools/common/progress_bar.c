/* SPDX-License-Identifier: MIT */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "tools/common/progress_bar.h"

#define BAR_WIDTH 24
#define DRAW_AFTER_MS 250 /* shorter operations are not drawn on a terminal */
#define SUMMARY_AFTER_MS 1000 /* not a terminal: the summary of longer ones */

/*
 * Reports of operations on different devices may come from different
 * threads, and the tools print other lines meanwhile: one terminal line at a
 * time. @owner: the operation whose bar is on the screen (its report's
 * address, stable while it runs), NULL when none; @drawn: the bar is the
 * last thing on the line. Both under @draw_lock.
 */
static pthread_mutex_t draw_lock = PTHREAD_MUTEX_INITIALIZER;
static const struct ugpu_progress *owner;
static bool drawn;
static const char *prefix = "";

static void human(uint64_t bytes, char *buf, size_t len)
{
	if (bytes >= (10ull << 30))
		snprintf(buf, len, "%.1f GiB", bytes / (double)(1ull << 30));
	else if (bytes >= (1ull << 20))
		snprintf(buf, len, "%llu MiB", (unsigned long long)(bytes >> 20));
	else
		snprintf(buf, len, "%llu KiB", (unsigned long long)(bytes >> 10));
}

void progress_bar_format(const struct ugpu_progress *p, char *buf, size_t len)
{
	char bar[BAR_WIDTH + 1], done[32], total[32];
	unsigned int pct = p->total ? (unsigned int)(p->done * 100 / p->total) : 100;
	unsigned int fill = pct * BAR_WIDTH / 100;
	double secs = p->elapsed_ns / 1e9;

	memset(bar, '#', fill);
	memset(bar + fill, '.', BAR_WIDTH - fill);
	bar[BAR_WIDTH] = '\0';
	human(p->done, done, sizeof(done));
	human(p->total, total, sizeof(total));
	/* what matters first: a narrow terminal cuts the end */
	snprintf(buf, len, "%-8s [%s] %3u%% %s/%s%s%s, %.2f GB/s %.1f s  %s",
		 ugpu_progress_op_name(p->op), bar, pct, done, total,
		 p->finished ? (p->err ? " FAILED: " : " done") : "",
		 p->finished && p->err ? ugpu_strerror(p->err) : "",
		 secs > 0 ? p->done / secs / 1e9 : 0.0, secs, p->device ? p->device : "?");
}

/* Columns of the terminal on @fd (80 when it does not say). */
static size_t columns(int fd)
{
	struct winsize ws;

	return ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20 ? ws.ws_col : 80;
}

/* Lock held: take the bar off the screen. */
static void clear_locked(FILE *f)
{
	if (drawn) {
		fputs("\r\033[K", f);
		drawn = false;
	}
}

void progress_bar(void *user, const struct ugpu_progress *p)
{
	FILE *f = user ? user : stderr;
	uint64_t ms = p->elapsed_ns / 1000000u;
	bool tty = isatty(fileno(f));
	char line[512];
	size_t width;

	if (tty ? ms < DRAW_AFTER_MS : !p->finished || ms < SUMMARY_AFTER_MS)
		return;
	progress_bar_format(p, line, sizeof(line));
	pthread_mutex_lock(&draw_lock);
	if (!tty) {
		fprintf(f, "%s%s\n", prefix, line);
	} else if (!owner || owner == p) {
		/* one line that fits: a wrapped line could not be redrawn */
		width = columns(fileno(f)) - 1;
		if (strlen(line) + 2 > width)
			line[width > 2 ? width - 2 : 0] = '\0';
		clear_locked(f);
		fprintf(f, "  %s%s", line, p->finished ? "\n" : "");
		drawn = !p->finished;
		owner = p->finished ? NULL : p;
	} /* else another operation's bar is up: this one waits for its turn */
	fflush(f);
	pthread_mutex_unlock(&draw_lock);
}

void progress_bar_clear(void)
{
	pthread_mutex_lock(&draw_lock);
	clear_locked(stderr);
	fflush(stderr);
	pthread_mutex_unlock(&draw_lock);
}

void progress_bar_log(void *user, enum ugpu_log_level level, const char *msg)
{
	static const char *const names[] = { "?", "error", "warn", "info", "debug" };

	(void)user;
	pthread_mutex_lock(&draw_lock);
	clear_locked(stderr);
	fprintf(stderr, "%sugpu %s: %s\n", prefix,
		(unsigned int)level < sizeof(names) / sizeof(names[0]) ? names[level] : "?", msg);
	fflush(stderr);
	pthread_mutex_unlock(&draw_lock);
}

void progress_bar_set_prefix(const char *p)
{
	prefix = p ? p : "";
}

int progress_bar_install(struct ugpu_context *ctx)
{
	return ugpu_context_set_progress(ctx, progress_bar, NULL, 16ull << 20, 100);
}
