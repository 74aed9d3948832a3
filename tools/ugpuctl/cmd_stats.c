/* SPDX-License-Identifier: MIT */
/*
 * ugpuctl stats [--json | --prometheus] URI: every counter of a device
 * (include/ugpu/stats.h), as a table, as JSON (one object per counter), or
 * in the Prometheus text format (tools/common/prom.h).
 *
 * It opens the device like any owner: a device another process holds is
 * refused (-EBUSY, with the holder); the daemon serves its own devices'
 * counters to clients.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <ugpu/device.h>
#include <ugpu/stats.h>

#include "tools/common/prom.h"
#include "tools/ugpuctl/ugpuctl.h"

static bool as_json, as_prom;

static const struct cli_opt stats_opts[] = {
	{ .name = "json", .kind = CLI_FLAG, .dst = &as_json,
	  .help = "one JSON object per line: name, value, kind, unit, group, help "
		  "(histograms: sum, buckets)" },
	{ .name = "prometheus", .kind = CLI_FLAG, .dst = &as_prom,
	  .help = "the Prometheus text exposition format 0.0.4" },
	{ 0 },
};

static const struct cli_cmd stats_cli = {
	.prog = "ugpuctl stats",
	.args = "URI",
	.summary = "print every counter of a device (table, --json or --prometheus)",
	.about = "Opens the device (vfio-user:PATH or pci:BDF) and prints its counters: memory,\n"
		 "shared virtual memory, host suspend, runtime PM (docs/stats.md).",
	.opts = stats_opts,
	.min_pos = 1,
	.max_pos = 1,
};

static const char *const unit_names[] = { "", "bytes", "KiB", "ns", "us", "ms" };

static const char *unit_name(uint32_t u)
{
	return u < sizeof(unit_names) / sizeof(unit_names[0]) ? unit_names[u] : "?";
}

static const char *kind_name(uint32_t k)
{
	return k == UGPU_STAT_COUNTER ? "counter" : k == UGPU_STAT_HISTOGRAM ? "histogram" : "gauge";
}

/* The bound of the first bucket holding fraction @q of histogram @st's
 * observations (UINT64_MAX: past the last bound; 0: no observations). */
static uint64_t quantile_le(const struct ugpu_stat *st, double q)
{
	if (!st->value)
		return 0;
	for (unsigned b = 0; b < st->buckets; b++)
		if ((double)st->bucket[b] >= q * (double)st->value)
			return ugpu_stat_bucket_le(st, b);
	return UINT64_MAX;
}

static void print_le(uint64_t le, const char *unit)
{
	if (le == UINT64_MAX)
		printf("more");
	else
		printf("<= %llu %s", (unsigned long long)le, unit);
}

/* A histogram as JSON members: "sum" and "buckets" (cumulative, the last
 * one's "le" null for +Inf). */
static void json_histogram(const struct ugpu_stat *st)
{
	printf(",\"sum\":%llu,\"buckets\":[", (unsigned long long)st->sum);
	for (unsigned b = 0; b < st->buckets; b++) {
		uint64_t le = ugpu_stat_bucket_le(st, b);

		if (le == UINT64_MAX)
			printf("%s{\"le\":null,\"count\":%llu}", b ? "," : "",
			       (unsigned long long)st->bucket[b]);
		else
			printf("%s{\"le\":%llu,\"count\":%llu}", b ? "," : "", (unsigned long long)le,
			       (unsigned long long)st->bucket[b]);
	}
	printf("]");
}

static int print_stats(const char *uri, struct ugpu_device *dev)
{
	struct ugpu_stat st = { .size = sizeof(st) };
	unsigned i;
	int ret;

	if (as_prom) {
		char label[512];

		const char *labels[1] = { label };

		ret = prom_label(label, sizeof(label), "device", uri);
		return ret ? ret : prom_write(stdout, &dev, labels, 1);
	}
	for (i = 0; (ret = ugpu_device_stat(dev, i, &st)) != -ENOENT; i++) {
		if (ret == -EOPNOTSUPP)
			continue; /* not reported for this device (ugpud's clients) */
		if (ret)
			return ret;
		if (as_json) {
			printf("{\"name\":");
			ugpuctl_json_str(st.name);
			printf(",\"value\":%llu,\"kind\":\"%s\",\"unit\":", (unsigned long long)st.value,
			       kind_name(st.kind));
			ugpuctl_json_str(unit_name(st.unit));
			printf(",\"group\":");
			ugpuctl_json_str(st.group);
			printf(",\"help\":");
			ugpuctl_json_str(st.help);
			if (st.kind == UGPU_STAT_HISTOGRAM)
				json_histogram(&st);
			printf("}\n");
		} else {
			printf("%-5s %-28s %20llu %-5s %s", st.group, st.name,
			       (unsigned long long)st.value, unit_name(st.unit), st.help);
			if (st.kind == UGPU_STAT_HISTOGRAM && st.value) {
				/* one line per counter: the distribution in short */
				printf(" [%llu observed, sum %llu %s; half ", (unsigned long long)st.value,
				       (unsigned long long)st.sum, unit_name(st.unit));
				print_le(quantile_le(&st, 0.5), unit_name(st.unit));
				printf(", 99%% ");
				print_le(quantile_le(&st, 0.99), unit_name(st.unit));
				printf("]");
			}
			printf("\n");
		}
	}
	return 0;
}

static int run_stats(int argc, char **argv)
{
	struct ugpu_context *ctx = NULL;
	struct ugpu_device *dev = NULL;
	char *uri;
	unsigned npos;
	int ret;

	ret = cli_parse(&stats_cli, argc, argv, &uri, &npos);
	if (ret != CLI_CONTINUE)
		return ret;
	if (as_json && as_prom)
		return cli_usage_error(stats_cli.prog, "give one of --json and --prometheus");
	if (ugpuctl_open(stats_cli.prog, uri, &ctx, &dev)) {
		ugpu_context_destroy(ctx);
		return 1;
	}
	ret = print_stats(uri, dev);
	if (ret)
		fprintf(stderr, "%s: reading the counters of %s: %s\n", stats_cli.prog, uri,
			ugpu_strerror(ret));
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	return ret ? 1 : 0;
}

const struct ugpuctl_cmd ugpuctl_cmd_stats = {
	.cli = &stats_cli,
	.name = "stats",
	.run = run_stats,
};
