/* SPDX-License-Identifier: MIT */
/*
 * Log capture for tests that check the driver names what was wrong: pass
 * log_hook as a context's log_fn, then ask log_has("words"). Header-only (each
 * test file is its own executable).
 */
#ifndef UGPU_TEST_LOG_H
#define UGPU_TEST_LOG_H

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <ugpu/ugpu.h>

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_buf[16384];

static inline void log_hook(void *user, enum ugpu_log_level level, const char *msg)
{
	(void)user;
	(void)level;
	pthread_mutex_lock(&log_mu);
	if (strlen(log_buf) + strlen(msg) + 2 < sizeof(log_buf)) {
		strcat(log_buf, msg);
		strcat(log_buf, "\n");
	}
	pthread_mutex_unlock(&log_mu);
}

/* True when a captured line contains @needle; else prints what was logged. */
static inline bool log_has(const char *needle)
{
	bool r;

	pthread_mutex_lock(&log_mu);
	r = strstr(log_buf, needle) != NULL;
	if (!r)
		fprintf(stderr, "log lacks \"%s\"; log was:\n%s", needle, log_buf);
	pthread_mutex_unlock(&log_mu);
	return r;
}

static inline void log_clear(void)
{
	pthread_mutex_lock(&log_mu);
	log_buf[0] = '\0';
	pthread_mutex_unlock(&log_mu);
}

#endif
