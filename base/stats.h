/* SPDX-License-Identifier: MIT */
/*
 * The stats registry behind include/ugpu/stats.h. Each part of the driver
 * declares one group: a function that takes a snapshot of its counters into
 * a struct of its own (usually the public struct its per-area call fills),
 * and a table naming each counter with its offset in that struct. The group
 * registers itself when the library is loaded (STATS_GROUP below), so adding
 * a counter is a line in its module's table and nothing else.
 *
 * Locking: the list of groups is built by constructors before main() and
 * before any thread of ours exists, and only read afterwards: no lock.
 */
#ifndef UGPU_BASE_STATS_H
#define UGPU_BASE_STATS_H

#include <stddef.h>
#include <stdint.h>

#include <ugpu/stats.h>

struct ugpu_device;

/*
 * A latency histogram: UGPU_STAT_BUCKETS buckets with fixed power-of-two
 * bounds (bucket i: values <= 2^i units; the last: the rest) and the sum.
 * Locking: none; every field is an atomic updated with relaxed operations,
 * so recording from any thread costs two atomic adds and takes no lock. A
 * reader may see a bucket and the sum of different moments (the counts are
 * read one by one), never a torn value.
 */
struct stat_hist {
	_Atomic uint64_t n[UGPU_STAT_BUCKETS];
	_Atomic uint64_t sum;
};

/* A copy of a struct stat_hist (per-bucket, not cumulative counts): what a
 * group's snapshot holds for a STAT_HIST counter. */
struct stat_hist_snap {
	uint64_t n[UGPU_STAT_BUCKETS];
	uint64_t sum;
};

void stat_hist_add(struct stat_hist *h, uint64_t value);
void stat_hist_read(struct stat_hist *h, struct stat_hist_snap *out);

struct stat_desc {
	const char *name;
	const char *help;
	uint8_t kind; /* enum ugpu_stat_kind */
	uint8_t unit; /* enum ugpu_stat_unit */
	uint8_t width; /* 1 (bool), 4 or 8 bytes at @offset; histograms: 0 */
	size_t offset; /* histograms: of a struct stat_hist_snap */
};

#define STAT_U64(type, field, kind_, unit_, help_)                                              \
	{ .name = #field, .help = help_, .kind = kind_, .unit = unit_, .width = 8,             \
	  .offset = offsetof(type, field) }
/* The same with a name other than the field's. */
#define STAT_NAMED(name_, type, field, kind_, unit_, help_)                                     \
	{ .name = name_, .help = help_, .kind = kind_, .unit = unit_,                           \
	  .width = sizeof(((type *)0)->field), .offset = offsetof(type, field) }

/* A histogram: @field is a struct stat_hist_snap of the snapshot. */
#define STAT_HIST(name_, type, field, unit_, help_)                                             \
	{ .name = name_, .help = help_, .kind = UGPU_STAT_HISTOGRAM, .unit = unit_, .width = 0, \
	  .offset = offsetof(type, field) }

struct stat_group {
	const char *name; /* "mem", "svm", ... */
	size_t snap_size; /* bytes snapshot() fills */
	/* Fill @buf (snap_size bytes, zeroed, with a leading size_t set to
	 * snap_size as the public structs expect); 0 or -errno. Must not wake
	 * the device. */
	int (*snapshot)(struct ugpu_device *dev, void *buf);
	const struct stat_desc *descs;
	unsigned n;
	struct stat_group *next; /* the registry's list */
};

void stats_register(struct stat_group *g);

/*
 * Define group @var_ called @name_, whose snapshot is a @type_ filled by
 * @snapshot_ and whose counters are the array @descs_, and register it when
 * the library is loaded.
 */
#define STATS_GROUP(var_, name_, type_, snapshot_, descs_)                                      \
	static struct stat_group var_ = {                                                       \
		.name = name_,                                                                  \
		.snap_size = sizeof(type_),                                                     \
		.snapshot = snapshot_,                                                          \
		.descs = descs_,                                                                \
		.n = sizeof(descs_) / sizeof((descs_)[0]),                                      \
	};                                                                                      \
	__attribute__((constructor)) static void stats_register_##var_(void)                    \
	{                                                                                       \
		stats_register(&var_);                                                          \
	}

#endif /* UGPU_BASE_STATS_H */
