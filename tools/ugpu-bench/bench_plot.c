/* SPDX-License-Identifier: MIT */
/*
 * ugpu-bench plot [--in FILE] --out FILE.png: draw benchmark results.
 *
 * Reads the JSON lines the benchmarks print (stdin by default), picks the
 * benchmark they came from, and has gnuplot (Debian's gnuplot-nox) draw it
 * to a PNG:
 *   copy     throughput against transfer size per direction, with the
 *            memcpy line measured in the same run (log scale);
 *   suspend  prepare, critical window and resume against a memcpy of the
 *            same bytes, per shape (incremental lines: critical window
 *            against dirty percentage per VRAM size, with the full one);
 *   exec, uffd, svm latency cases: p50 and p99 per case; rpm: touch p50/p99,
 *   the raw uffd round trip, the wake and the target per CPU placement;
 *   p2p: direct, through system memory, memcpy, peer and local reads;
 *   svm-race: the move's window, a racing store's wait and memcpy per
 *   mechanism;
 *   svm throughput cases, buddy: GB/s or ops/s per case.
 *
 *   ugpu-bench copy | ugpu-bench plot --out copy.png
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/wait.h>

#include <json-c/json.h>

#include "tools/ugpu-bench/bench.h"

#define MAX_ROWS 512

static const char *in_path, *out_path;

static const struct cli_opt plot_opts[] = {
	{ .name = "in", .kind = CLI_STR, .dst = &in_path, .arg = "FILE",
	  .help = "the benchmark's JSON lines (default: standard input)" },
	{ .name = "out", .kind = CLI_STR, .dst = &out_path, .arg = "FILE",
	  .help = "the PNG to write; required" },
	{ 0 },
};

static const struct cli_cmd plot_cli = {
	.prog = "ugpu-bench plot",
	.args = "",
	.summary = "draw a benchmark's JSON lines to a PNG (gnuplot)",
	.about = "Reads what 'ugpu-bench NAME' printed and draws it: copy bandwidth against size\n"
		 "with the memcpy line, suspend phases against memcpy, latency cases as p50/p99.\n"
		 "Example: ugpu-bench copy | ugpu-bench plot --out copy.png",
	.opts = plot_opts,
};

struct rows {
	json_object *r[MAX_ROWS];
	size_t n;
	char bench[32];
};

static double num(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_double(v) : 0.0;
}

static const char *str(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

static int has(json_object *o, const char *key)
{
	return json_object_object_get_ex(o, key, NULL);
}

/* The rows of the first benchmark in the input (others are ignored). */
static int read_rows(FILE *in, struct rows *rs)
{
	char line[4096];

	while (fgets(line, sizeof(line), in)) {
		json_object *o = json_tokener_parse(line);
		const char *b;

		if (!o)
			continue; /* a progress or log line */
		b = str(o, "bench");
		if (!b || (rs->bench[0] && strcmp(b, rs->bench)) || rs->n == MAX_ROWS) {
			json_object_put(o);
			continue;
		}
		if (!rs->bench[0])
			snprintf(rs->bench, sizeof(rs->bench), "%s", b);
		rs->r[rs->n++] = o;
	}
	return rs->n ? 0 : -ENODATA;
}

static void header(FILE *g, const char *title)
{
	/* noenhanced: names such as vram_to_sys are text, not subscripts */
	fprintf(g, "set terminal png size 1000,600 font ',10' noenhanced\nset output '%s'\n",
		out_path);
	fprintf(g, "set title '%s'\nset grid\nset key outside right top\n", title);
}

/* copy: GB/s against bytes, one line per direction, memcpy dashed. */
static void plot_copy(FILE *g, const struct rows *rs)
{
	const char *dirs[8];
	size_t nd = 0, i, d;

	for (i = 0; i < rs->n; i++) {
		const char *dir = str(rs->r[i], "dir");

		for (d = 0; d < nd && strcmp(dirs[d], dir); d++)
			;
		if (d == nd && nd < 8 && dir)
			dirs[nd++] = dir;
	}
	header(g, "ugpu-bench copy: copy engine against memcpy");
	fprintf(g, "set logscale x 2\nset format x '%%.0b %%BB'\n"
		   "set xlabel 'transfer size'\nset ylabel 'GB/s'\n");
	for (d = 0; d < nd; d++) {
		fprintf(g, "$d%zu << EOD\n", d);
		for (i = 0; i < rs->n; i++)
			if (!strcmp(str(rs->r[i], "dir") ? str(rs->r[i], "dir") : "", dirs[d]))
				fprintf(g, "%.0f %.3f %.3f\n", num(rs->r[i], "bytes"),
					num(rs->r[i], "gbps"), num(rs->r[i], "memcpy_gbps"));
		fprintf(g, "EOD\n");
	}
	fprintf(g, "plot ");
	for (d = 0; d < nd; d++)
		fprintf(g, "%s$d%zu using 1:2 with linespoints lw 2 title '%s', "
			   "$d%zu using 1:3 with lines dt 2 title 'memcpy (%s run)'",
			d ? ", " : "", d, dirs[d], d, dirs[d]);
	fprintf(g, "\n");
}

/* Clustered bars: one cluster per row (its label from @label_key), one bar
 * per key of @keys that the rows have. -ENODATA (nothing written) when the
 * rows have none of them. */
static int plot_bars(FILE *g, const struct rows *rs, const char *title, const char *ylabel,
		     const char *label_key, const char *const *keys, size_t nkeys)
{
	size_t i, k, used = 0;
	const char *cols[8];

	for (k = 0; k < nkeys && used < 8; k++)
		for (i = 0; i < rs->n; i++)
			if (has(rs->r[i], keys[k])) {
				cols[used++] = keys[k];
				break;
			}
	if (!used)
		return -ENODATA;
	header(g, title);
	fprintf(g, "set style data histograms\nset style histogram clustered gap 1\n"
		   "set style fill solid 0.8 border -1\nset ylabel '%s'\nset xtics rotate by -30\n"
		   "set yrange [0:*]\n",
		ylabel);
	fprintf(g, "$d << EOD\n");
	for (i = 0; i < rs->n; i++) {
		const char *l = str(rs->r[i], label_key);

		fprintf(g, "\"%s\"", l ? l : "?");
		for (k = 0; k < used; k++)
			fprintf(g, " %.4f", num(rs->r[i], cols[k]));
		fprintf(g, "\n");
	}
	fprintf(g, "EOD\nplot ");
	for (k = 0; k < used; k++)
		fprintf(g, "%s$d using %zu%s title '%s'", k ? ", " : "", k + 2,
			k ? "" : ":xtic(1)", cols[k]);
	fprintf(g, "\n");
	return 0;
}

/* suspend --incremental: critical window against dirty percentage. */
static void plot_incremental(FILE *g, const struct rows *rs)
{
	double sizes[8];
	size_t ns = 0, i, s;

	for (i = 0; i < rs->n; i++) {
		double v = num(rs->r[i], "vram_mib");

		for (s = 0; s < ns && sizes[s] != v; s++)
			;
		if (s == ns && ns < 8)
			sizes[ns++] = v;
	}
	header(g, "ugpu-bench suspend --incremental: critical window against what changed");
	fprintf(g, "set xlabel 'dirty since prepare (%%)'\nset ylabel 'critical window (ms)'\n");
	for (s = 0; s < ns; s++) {
		fprintf(g, "$d%zu << EOD\n", s);
		for (i = 0; i < rs->n; i++)
			if (num(rs->r[i], "vram_mib") == sizes[s])
				fprintf(g, "%.1f %.3f %.3f\n", num(rs->r[i], "dirty_pct"),
					num(rs->r[i], "critical_ms"), num(rs->r[i], "full_critical_ms"));
		fprintf(g, "EOD\n");
	}
	fprintf(g, "plot ");
	for (s = 0; s < ns; s++)
		fprintf(g, "%s$d%zu using 1:2 with linespoints lw 2 title '%.0f MiB incremental', "
			   "$d%zu using 1:3 with lines dt 2 title '%.0f MiB full'",
			s ? ", " : "", s, sizes[s], s, sizes[s]);
	fprintf(g, "\n");
}

/* -ENODATA: nothing in @rs this knows how to draw (nothing written). */
static int plot_rows(FILE *g, const struct rows *rs)
{
	static const char *const lat[] = { "p50_us", "p99_us", "raw_p50_us" };
	static const char *const rpm[] = { "touch_p50_us", "touch_p99_us", "uffd_p50_us", "wake_us",
					    "target_us" };
	static const char *const tput[] = { "gbps", "migrate_gbps", "memcpy_gbps" };
	static const char *const phases[] = { "prepare_ms", "critical_ms", "resume_ms", "memcpy_ms",
					       "noprep_critical_ms" };
	static const char *const ops[] = { "ops_per_s" };
	static const char *const p2p[] = { "direct_gbps", "via_system_gbps", "memcpy_gbps",
					    "peer_gbps", "local_gbps" };
	static const char *const race[] = { "window_mean_us", "store_wait_p50_us", "store_wait_p99_us",
					     "memcpy_us" };
	char title[96];

	snprintf(title, sizeof(title), "ugpu-bench %s", rs->bench);
	if (!strcmp(rs->bench, "copy")) {
		plot_copy(g, rs);
		return 0;
	}
	if (!strcmp(rs->bench, "suspend") && has(rs->r[0], "dirty_pct")) {
		plot_incremental(g, rs);
		return 0;
	}
	if (!strcmp(rs->bench, "suspend"))
		return plot_bars(g, rs, "ugpu-bench suspend: phases against a memcpy of the same bytes",
				 "ms", "shape", phases, 5);
	if (!strcmp(rs->bench, "buddy"))
		return plot_bars(g, rs, title, "operations/s", "workload", ops, 1);
	if (!strcmp(rs->bench, "rpm"))
		return plot_bars(g, rs, "ugpu-bench rpm: touching a mapping of a sleeping device",
				 "microseconds", "placement", rpm, 5);
	if (!strcmp(rs->bench, "p2p"))
		return plot_bars(g, rs, "ugpu-bench p2p: device to device, direct and through system memory",
				 "GB/s", "case", p2p, 5);
	if (!strcmp(rs->bench, "svm-race"))
		return plot_bars(g, rs, "ugpu-bench svm-race: a CPU store racing a move into VRAM",
				 "microseconds", "mechanism", race, 4);
	if (has(rs->r[0], "gbps"))
		return plot_bars(g, rs, title, "GB/s", "case", tput, 3);
	return plot_bars(g, rs, title, "microseconds", has(rs->r[0], "case") ? "case" : "placement",
			 lat, 3);
}

int bench_plot(int argc, char **argv)
{
	struct rows rs = { .n = 0 };
	FILE *in = stdin, *g;
	int ret, st;

	ret = cli_parse(&plot_cli, argc, argv, NULL, NULL);
	if (ret != CLI_CONTINUE)
		return ret;
	if (!out_path)
		return cli_usage_error(plot_cli.prog, "--out FILE is required");
	if (in_path && !(in = fopen(in_path, "re"))) {
		fprintf(stderr, "%s: cannot read %s: %s\n", plot_cli.prog, in_path, strerror(errno));
		return 1;
	}
	ret = read_rows(in, &rs);
	if (in != stdin)
		fclose(in);
	if (ret) {
		fprintf(stderr, "%s: no benchmark results in the input (JSON lines with \"bench\")\n",
			plot_cli.prog);
		return 1;
	}
	/* gnuplot reads the script (data inline) from a pipe; its own errors
	 * go to our stderr. */
	g = popen("gnuplot", "w");
	if (!g) {
		fprintf(stderr, "%s: cannot run gnuplot (apt-get install gnuplot-nox): %s\n",
			plot_cli.prog, strerror(errno));
		ret = 1;
		goto out;
	}
	if (plot_rows(g, &rs)) {
		pclose(g);
		fprintf(stderr, "%s: nothing in these %s results that it knows how to draw\n",
			plot_cli.prog, rs.bench);
		ret = 1;
		goto out;
	}
	st = pclose(g);
	if (st) {
		fprintf(stderr, "%s: gnuplot failed (exit %d; apt-get install gnuplot-nox)\n",
			plot_cli.prog, st == -1 ? -1 : WEXITSTATUS(st));
		ret = 1;
		goto out;
	}
	printf("%s: %zu %s results drawn\n", out_path, rs.n, rs.bench);
out:
	for (size_t i = 0; i < rs.n; i++)
		json_object_put(rs.r[i]);
	return ret;
}
