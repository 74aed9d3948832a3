// SPDX-License-Identifier: MIT
/*
 * The stats registry (base/stats.h) and the public calls over it
 * (include/ugpu/stats.h).
 */
#include "base/stats.h"

#include <errno.h>
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

#define UGPU_STAT_SIZE_V1 (offsetof(struct ugpu_stat, value) + sizeof(uint64_t))

static int stat_fill(struct ugpu_device *dev, const struct stat_group *g, unsigned i,
		     struct ugpu_stat *st)
{
	_Alignas(max_align_t) unsigned char buf[STATS_SNAP_MAX];
	const struct stat_desc *d = &g->descs[i];
	size_t want = st->size;
	int ret;

	memset(buf, 0, g->snap_size);
	memcpy(buf, &g->snap_size, sizeof(size_t));
	ret = g->snapshot(dev, buf);
	if (ret)
		return ret;
	memset(st, 0, want);
	st->size = want;
	st->name = d->name;
	st->help = d->help;
	st->group = g->name;
	st->kind = d->kind;
	st->unit = d->unit;
	switch (d->width) {
	case 1: {
		bool v;

		memcpy(&v, buf + d->offset, 1);
		st->value = v;
		break;
	}
	case 4: {
		uint32_t v;

		memcpy(&v, buf + d->offset, 4);
		st->value = v;
		break;
	}
	default:
		memcpy(&st->value, buf + d->offset, 8);
	}
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
