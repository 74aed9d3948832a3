/* SPDX-License-Identifier: MIT */
/*
 * The driver's log kept for a test to assert on what it says: log_capture()
 * is a ugpu_log_fn for ugpu_context_opts.log_fn. When the buffer fills, the
 * older half goes (the latest lines are the ones a test asks about). With
 * log_echo set (tests set it from UGPU_TEST_LOG) each line is also printed.
 * Header-only, one capture per test executable.
 * Locking: log_lock; driver threads log too.
 */
#ifndef UGPU_TEST_LOG_CAPTURE_H
#define UGPU_TEST_LOG_CAPTURE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <ugpu/ugpu.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_text[32768];
static bool log_echo;

static inline void log_capture(void *user, enum ugpu_log_level level, const char *msg)
{
	size_t used, n = strlen(msg);

	(void)user;
	(void)level;
	if (n + 2 > sizeof(log_text) / 2)
		n = sizeof(log_text) / 2 - 2;
	pthread_mutex_lock(&log_lock);
	if (log_echo)
		fprintf(stderr, "    log: %s\n", msg);
	used = strlen(log_text);
	if (used + n + 2 > sizeof(log_text)) {
		size_t keep = used / 2;

		memmove(log_text, log_text + used - keep, keep + 1);
		used = keep;
	}
	memcpy(log_text + used, msg, n);
	log_text[used + n] = '\n';
	log_text[used + n + 1] = 0;
	pthread_mutex_unlock(&log_lock);
}

static inline bool log_has(const char *needle)
{
	bool r;

	pthread_mutex_lock(&log_lock);
	r = strstr(log_text, needle) != NULL;
	pthread_mutex_unlock(&log_lock);
	return r;
}

static inline void log_clear(void)
{
	pthread_mutex_lock(&log_lock);
	log_text[0] = 0;
	pthread_mutex_unlock(&log_lock);
}

#endif
