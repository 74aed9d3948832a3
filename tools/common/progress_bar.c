/* SPDX-License-Identifier: MIT */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "tools/common/progress_bar.h"

#define BAR_WIDTH 24
#define DRAW_AFTER_MS 250 /* shorter operations are not drawn on a terminal */
#define SUMMARY_AFTER_MS 1000 /* not a terminal: the summary of longer ones */

/* Reports of operations on different devices come from different threads:
 * one line at a time. */
static pthread_mutex_t draw_lock = PTHREAD_MUTEX_INITIALIZER;

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
	snprintf(buf, len, "%-8s %-10s [%s] %3u%% %s/%s %.2f GB/s %.1f s%s%s",
		 ugpu_progress_op_name(p->op), p->device ? p->device : "?", bar, pct, done, total,
		 secs > 0 ? p->done / secs / 1e9 : 0.0, secs,
		 p->finished ? (p->err ? ": FAILED: " : ": done") : "",
		 p->finished && p->err ? ugpu_strerror(p->err) : "");
}

void progress_bar(void *user, const struct ugpu_progress *p)
{
	FILE *f = user ? user : stderr;
	uint64_t ms = p->elapsed_ns / 1000000u;
	bool tty = isatty(fileno(f));
	char line[256];

	if (tty ? ms < DRAW_AFTER_MS : !p->finished || ms < SUMMARY_AFTER_MS)
		return;
	progress_bar_format(p, line, sizeof(line));
	pthread_mutex_lock(&draw_lock);
	if (tty)
		fprintf(f, "\r\033[K  %s%s", line, p->finished ? "\n" : "");
	else
		fprintf(f, "  %s\n", line);
	fflush(f);
	pthread_mutex_unlock(&draw_lock);
}

int progress_bar_install(struct ugpu_context *ctx)
{
	return ugpu_context_set_progress(ctx, progress_bar, NULL, 16ull << 20, 100);
}
