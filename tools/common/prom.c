// SPDX-License-Identifier: MIT
/* The Prometheus exposition of a device's counters (prom.h). */
#include "tools/common/prom.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <ugpu/stats.h>

static int ends_with(const char *s, size_t n, const char *suffix)
{
	size_t k = strlen(suffix);

	return n >= k && !memcmp(s + n - k, suffix, k);
}

int prom_name(const struct ugpu_stat *st, char *buf, size_t len, double *value)
{
	const char *unit_suffix = "";
	size_t n = strlen(st->name);
	double v = (double)st->value;
	int w;

	/* Drop the unit the driver counts in; say the base unit instead. */
	switch (st->unit) {
	case UGPU_STAT_UNIT_KIB:
		if (ends_with(st->name, n, "_kb"))
			n -= 3;
		v *= 1024.0;
		unit_suffix = "_bytes";
		break;
	case UGPU_STAT_UNIT_NS:
	case UGPU_STAT_UNIT_US:
	case UGPU_STAT_UNIT_MS:
		if (ends_with(st->name, n, "_ns") || ends_with(st->name, n, "_us") ||
		    ends_with(st->name, n, "_ms"))
			n -= 3;
		v /= st->unit == UGPU_STAT_UNIT_NS ? 1e9 : st->unit == UGPU_STAT_UNIT_US ? 1e6 : 1e3;
		unit_suffix = "_seconds";
		break;
	case UGPU_STAT_UNIT_BYTES:
		if (ends_with(st->name, n, "_bytes"))
			n -= 6;
		unit_suffix = "_bytes";
		break;
	default:
		break;
	}
	/* A counter of events is NAME_total, not NAME_count_total. */
	if (st->kind == UGPU_STAT_COUNTER && !*unit_suffix && ends_with(st->name, n, "_count"))
		n -= 6;
	/* a histogram's samples add _bucket, _sum and _count to its name */
	w = snprintf(buf, len, "ugpu_%.*s%s%s", (int)n, st->name, unit_suffix,
		     st->kind == UGPU_STAT_COUNTER ? "_total" : "");
	if (w < 0 || (size_t)w >= len)
		return -ENAMETOOLONG;
	*value = v;
	return 0;
}

/* The factor from @st's unit to its base unit. */
static double unit_scale(const struct ugpu_stat *st)
{
	switch (st->unit) {
	case UGPU_STAT_UNIT_KIB:
		return 1024.0;
	case UGPU_STAT_UNIT_NS:
		return 1e-9;
	case UGPU_STAT_UNIT_US:
		return 1e-6;
	case UGPU_STAT_UNIT_MS:
		return 1e-3;
	default:
		return 1.0;
	}
}

/* One device's samples of histogram @st called @name: cumulative
 * NAME_bucket{le=...} (the last one le="+Inf"), NAME_sum, NAME_count. */
static void write_histogram(FILE *out, const struct ugpu_stat *st, const char *name,
			    const char *label)
{
	const char *sep = label && *label ? "," : "";
	double scale = unit_scale(st);

	if (!label)
		label = "";
	for (unsigned b = 0; b < st->buckets; b++) {
		uint64_t le = ugpu_stat_bucket_le(st, b);

		if (le == UINT64_MAX)
			fprintf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, label, sep,
				(unsigned long long)st->bucket[b]);
		else
			fprintf(out, "%s_bucket{%s%sle=\"%.10g\"} %llu\n", name, label, sep,
				(double)le * scale, (unsigned long long)st->bucket[b]);
	}
	if (*label) {
		fprintf(out, "%s_sum{%s} %.17g\n", name, label, (double)st->sum * scale);
		fprintf(out, "%s_count{%s} %llu\n", name, label, (unsigned long long)st->value);
	} else {
		fprintf(out, "%s_sum %.17g\n", name, (double)st->sum * scale);
		fprintf(out, "%s_count %llu\n", name, (unsigned long long)st->value);
	}
}

int prom_label(char *buf, size_t len, const char *name, const char *value)
{
	size_t o;
	int w = snprintf(buf, len, "%s=\"", name);

	if (w < 0 || (size_t)w >= len)
		return -ENAMETOOLONG;
	o = (size_t)w;
	for (const char *c = value; *c; c++) {
		const char *esc = *c == '\\' ? "\\\\" : *c == '"' ? "\\\"" : *c == '\n' ? "\\n" : NULL;
		size_t k = esc ? 2 : 1;

		if (o + k + 2 > len)
			return -ENAMETOOLONG;
		memcpy(buf + o, esc ? esc : c, k);
		o += k;
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return 0;
}

int prom_write(FILE *out, struct ugpu_device *const *devs, const char *const *labels, size_t n)
{
	struct ugpu_stat st = { .size = sizeof(st) };
	unsigned i;
	int ret;

	/* the devices list the same counters at the same indexes: the first
	 * one names them */
	for (i = 0; n && (ret = ugpu_device_stat(devs[0], i, &st)) != -ENOENT; i++) {
		bool head = false;

		for (size_t k = 0; k < n; k++) {
			char name[128];
			double v;

			ret = ugpu_device_stat(devs[k], i, &st);
			if (ret == -EOPNOTSUPP)
				continue; /* not reported for this device (ugpud's clients) */
			if (ret)
				return ret;
			ret = prom_name(&st, name, sizeof(name), &v);
			if (ret)
				return ret;
			if (!head)
				fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, st.help, name,
					st.kind == UGPU_STAT_COUNTER	 ? "counter"
					: st.kind == UGPU_STAT_HISTOGRAM ? "histogram"
									 : "gauge");
			head = true;
			if (st.kind == UGPU_STAT_HISTOGRAM)
				write_histogram(out, &st, name, labels ? labels[k] : NULL);
			else if (labels && labels[k] && *labels[k])
				fprintf(out, "%s{%s} %.17g\n", name, labels[k], v);
			else
				fprintf(out, "%s %.17g\n", name, v);
		}
	}
	return 0;
}
