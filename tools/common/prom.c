// SPDX-License-Identifier: MIT
/* The Prometheus exposition of a device's counters (prom.h). */
#include "tools/common/prom.h"

#include <errno.h>
#include <stdbool.h>
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
	w = snprintf(buf, len, "ugpu_%.*s%s%s", (int)n, st->name, unit_suffix,
		     st->kind == UGPU_STAT_COUNTER ? "_total" : "");
	if (w < 0 || (size_t)w >= len)
		return -ENAMETOOLONG;
	*value = v;
	return 0;
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
					st.kind == UGPU_STAT_COUNTER ? "counter" : "gauge");
			head = true;
			if (labels && labels[k] && *labels[k])
				fprintf(out, "%s{%s} %.17g\n", name, labels[k], v);
			else
				fprintf(out, "%s %.17g\n", name, v);
		}
	}
	return 0;
}
