/* SPDX-License-Identifier: MIT */
/*
 * ugpu/stats.h - every counter of a device, enumerable by name.
 *
 * Each part of the driver registers its own counters (memory, shared
 * virtual memory, host suspend, runtime PM, ...) under its own names (xe's
 * where xe has one, e.g. svm_pagefault_count). A program lists them by index
 * or reads one by name, so a counter added in a later release is one more
 * index, never a changed struct: the ABI stays as it is. The per-area calls
 * (ugpu_device_mem_stats(), ugpu_device_svm_stats(), ...) read the same
 * values.
 */
#ifndef UGPU_STATS_H
#define UGPU_STATS_H

#include <stddef.h>
#include <stdint.h>

#include <ugpu/ugpu.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ugpu_device;

/* What a value is: a counter only grows (until the device is closed); a
 * gauge is a current level and goes up and down; a histogram counts
 * observations (latencies) in buckets: @value is how many there were, @sum
 * their total and @bucket[] the cumulative counts (struct ugpu_stat). A
 * program built against a release without histograms sees kind 2 with
 * @value the number of observations. */
enum ugpu_stat_kind {
	UGPU_STAT_COUNTER = 0,
	UGPU_STAT_GAUGE = 1,
	UGPU_STAT_HISTOGRAM = 2,
};

/* The unit of a value as the driver keeps it. */
enum ugpu_stat_unit {
	UGPU_STAT_UNIT_NONE = 0, /* a count of events or objects, or a state number */
	UGPU_STAT_UNIT_BYTES = 1,
	UGPU_STAT_UNIT_KIB = 2, /* KiB (xe's *_kb counters) */
	UGPU_STAT_UNIT_NS = 3,
	UGPU_STAT_UNIT_US = 4,
	UGPU_STAT_UNIT_MS = 5,
};

/**
 * struct ugpu_stat - one counter (ugpu_device_stat(), ugpu_device_stat_find()).
 * @size: set by the caller to sizeof(struct ugpu_stat).
 * @name: its name: [a-zA-Z0-9_], lower case but for sizes as xe spells them
 *        (svm_2M_migrate_count); unique; a static string, valid while the
 *        library is loaded.
 * @help: one line saying what it counts (static, like @name).
 * @group: the part of the driver that registered it: "mem", "svm", "pm",
 *         "rpm", ... (static).
 * @kind: enum ugpu_stat_kind.
 * @unit: enum ugpu_stat_unit.
 * @value: its value when read (a histogram: the number of observations).
 *
 * Histograms only (zero for the other kinds; added after the first release,
 * filled when @size covers them):
 * @buckets: how many entries of @bucket are used (at most UGPU_STAT_BUCKETS).
 *           The bounds are fixed powers of two of @unit: entry i counts the
 *           observations <= 2^i (1, 2, 4, ... units), the last entry
 *           (@buckets - 1) every observation (+Inf), so it equals @value.
 * @sum: the observations summed, in @unit.
 * @bucket: cumulative counts as above (never decreasing with i), read in
 *          one snapshot with @value.
 */
#define UGPU_STAT_BUCKETS 24 /* 1 us .. 2^22 us (4.2 s), then +Inf */

struct ugpu_stat {
	size_t size;
	const char *name;
	const char *help;
	const char *group;
	uint32_t kind;
	uint32_t unit;
	uint64_t value;
	/* since histograms */
	uint32_t buckets;
	uint64_t sum;
	uint64_t bucket[UGPU_STAT_BUCKETS];
};

/**
 * ugpu_stat_bucket_le() - the upper bound of bucket @i of a histogram, in
 * its unit: 2^@i, or UINT64_MAX for the last bucket (+Inf) and past it.
 * @st: a histogram read by ugpu_device_stat() or ugpu_device_stat_find().
 * @i: 0 .. @st->buckets - 1.
 * Returns: the bound (no errors: a @st that is not a histogram, or NULL,
 * gives UINT64_MAX).
 * Context: any thread; pure.
 */
UGPU_API uint64_t ugpu_stat_bucket_le(const struct ugpu_stat *st, unsigned int i);

/**
 * ugpu_device_stat() - read the @index-th counter of @dev.
 * @dev: the device.
 * @index: 0, 1, ... in a fixed order for this library (a program iterates
 *         from 0 until -ENOENT).
 * @st: filled in; @st->size set by the caller.
 *
 * Counters of one group are read together (one consistent snapshot of that
 * group per call); different calls are different moments.
 *
 * Returns: 0; -ENOENT when @index is past the last counter; -EINVAL for NULL
 * arguments or @st->size smaller than the first release's struct;
 * -EOPNOTSUPP for a counter a device served by ugpud does not report
 * (host suspend and runtime PM are the daemon's: skip it and go on).
 * Context: any thread; reads only (never wakes a sleeping device).
 */
UGPU_API int ugpu_device_stat(struct ugpu_device *dev, unsigned int index, struct ugpu_stat *st);

/**
 * ugpu_device_stat_find() - read the counter called @name.
 * Returns: 0; -ENOENT when @dev has no counter of that name; -EINVAL for
 * NULL arguments or @st->size too small; -EOPNOTSUPP as ugpu_device_stat().
 * Context: any thread; reads only.
 */
UGPU_API int ugpu_device_stat_find(struct ugpu_device *dev, const char *name, struct ugpu_stat *st);

#ifdef __cplusplus
}
#endif

#endif /* UGPU_STATS_H */
