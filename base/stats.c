// SPDX-License-Identifier: MIT
/*
 * The stats registry (base/stats.h) and the public calls over it
 * (include/ugpu/stats.h).
 */
#include "base/stats.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include <ugpu/stats.h>

/* Sorted by group name, so the order of indexes does not depend on the link
 * order of the constructors. Built before main(), read-only after (see the
 * header). */
static struct stat_group *stat_groups;

/* The largest snapshot a group may take (checked at registration). */
#define STATS_SNAP_MAX 2048

void stats_register(struct stat_group *g)
{
	struct stat_group **p = &stat_groups;

	if (g->snap_size > STATS_SNAP_MAX || g->snap_size < sizeof(size_t))
		__builtin_trap(); /* a programming error in a module's table */
	while (*p && strcmp((*p)->name, g->name) < 0)
		p = &(*p)->next;
	g->next = *p;
	*p = g;
}

void stat_hist_add(struct stat_hist *h, uint64_t value)
{
	/* the smallest i with value <= 2^i, the last bucket past the bounds */
	unsigned i = value <= 1 ? 0 : 64 - (unsigned)__builtin_clzll(value - 1);

	if (i > UGPU_STAT_BUCKETS - 1)
		i = UGPU_STAT_BUCKETS - 1;
	atomic_fetch_add_explicit(&h->n[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum, value, memory_order_relaxed);
}

void stat_hist_read(struct stat_hist *h, struct stat_hist_snap *out)
{
	for (unsigned i = 0; i < UGPU_STAT_BUCKETS; i++)
		out->n[i] = atomic_load_explicit(&h->n[i], memory_order_relaxed);
	out->sum = atomic_load_explicit(&h->sum, memory_order_relaxed);
}

UGPU_API uint64_t ugpu_stat_bucket_le(const struct ugpu_stat *st, unsigned int i)
{
	if (!st || st->kind != UGPU_STAT_HISTOGRAM || i + 1 >= st->buckets || i >= 64)
		return UINT64_MAX;
	return 1ull << i;
}

#define UGPU_STAT_SIZE_V1 (offsetof(struct ugpu_stat, value) + sizeof(uint64_t))

static int stat_fill(struct ugpu_device *dev, const struct stat_group *g, unsigned i,
		     struct ugpu_stat *st)
{
	_Alignas(max_align_t) unsigned char buf[STATS_SNAP_MAX];
	const struct stat_desc *d = &g->descs[i];
	size_t want = st->size;
	struct ugpu_stat full = { 0 };
	int ret;

	memset(buf, 0, g->snap_size);
	memcpy(buf, &g->snap_size, sizeof(size_t));
	ret = g->snapshot(dev, buf);
	if (ret)
		return ret;
	full.name = d->name;
	full.help = d->help;
	full.group = g->name;
	full.kind = d->kind;
	full.unit = d->unit;
	if (d->kind == UGPU_STAT_HISTOGRAM) {
		struct stat_hist_snap h;
		uint64_t cum = 0;

		memcpy(&h, buf + d->offset, sizeof(h));
		for (unsigned b = 0; b < UGPU_STAT_BUCKETS; b++)
			full.bucket[b] = cum += h.n[b];
		full.buckets = UGPU_STAT_BUCKETS;
		full.value = cum; /* the +Inf bucket: consistent with the others */
		full.sum = h.sum;
	} else if (d->width == 1) {
		bool v;

		memcpy(&v, buf + d->offset, 1);
		full.value = v;
	} else if (d->width == 4) {
		uint32_t v;

		memcpy(&v, buf + d->offset, 4);
		full.value = v;
	} else {
		memcpy(&full.value, buf + d->offset, 8);
	}
	/* the caller's struct may be an older, shorter one */
	full.size = want;
	memset(st, 0, want);
	memcpy(st, &full, want < sizeof(full) ? want : sizeof(full));
	return 0;
}

UGPU_API int ugpu_device_stat(struct ugpu_device *dev, unsigned int index, struct ugpu_stat *st)
{
	const struct stat_group *g;

	if (!dev || !st || st->size < UGPU_STAT_SIZE_V1)
		return -EINVAL;
	for (g = stat_groups; g; g = g->next) {
		if (index < g->n)
			return stat_fill(dev, g, index, st);
		index -= g->n;
	}
	return -ENOENT;
}

UGPU_API int ugpu_device_stat_find(struct ugpu_device *dev, const char *name, struct ugpu_stat *st)
{
	const struct stat_group *g;

	if (!dev || !name || !st || st->size < UGPU_STAT_SIZE_V1)
		return -EINVAL;
	for (g = stat_groups; g; g = g->next)
		for (unsigned i = 0; i < g->n; i++)
			if (!strcmp(g->descs[i].name, name))
				return stat_fill(dev, g, i, st);
	return -ENOENT;
}
