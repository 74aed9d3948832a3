/* SPDX-License-Identifier: MIT */
/*
 * Clocks for timing and bounded waits, one place (base layer).
 *
 * now_ns()/now_us()/now_ms() read CLOCK_MONOTONIC: what every duration and
 * deadline in the driver is measured with. deadline_after_ms() gives an
 * absolute CLOCK_REALTIME time for pthread_cond_timedwait() and
 * pthread_mutex_timedlock() (which use the realtime clock unless the
 * condvar was made with CLOCK_MONOTONIC: monotonic_deadline_after_ms()).
 */
#ifndef UGPU_BASE_CLOCK_H
#define UGPU_BASE_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t now_us(void)
{
	return now_ns() / 1000u;
}

static inline uint64_t now_ms(void)
{
	return now_ns() / 1000000u;
}

static inline struct timespec ns_to_timespec(uint64_t ns)
{
	return (struct timespec){ .tv_sec = (time_t)(ns / 1000000000ull),
				  .tv_nsec = (long)(ns % 1000000000ull) };
}

static inline struct timespec clock_deadline_after_ms(clockid_t clk, uint64_t ms)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

/* For pthread_cond_timedwait() on a default condvar and for timedlock. */
static inline struct timespec deadline_after_ms(uint64_t ms)
{
	return clock_deadline_after_ms(CLOCK_REALTIME, ms);
}

/* For a condvar made with pthread_condattr_setclock(CLOCK_MONOTONIC). */
static inline struct timespec monotonic_deadline_after_ms(uint64_t ms)
{
	return clock_deadline_after_ms(CLOCK_MONOTONIC, ms);
}

#endif
