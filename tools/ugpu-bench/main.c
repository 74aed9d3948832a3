/* SPDX-License-Identifier: MIT */
/*
 * ugpu-bench: performance checks. Every benchmark measures its baseline
 * (memcpy, raw userfaultfd round trip, ...) in the same run and prints one
 * JSON object per line, so ratios compare like with like on this machine.
 */
#include <stdio.h>
#include <string.h>

#include "tools/ugpu-bench/bench.h"
#include "tools/common/cli.h"

static const struct bench_cmd {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
} benches[] = {
	{ "buddy", bench_buddy, "VRAM buddy allocator: frag, frag-reverse, churn, range" },
	{ "copy", bench_copy, "copy engine throughput vs memcpy (reference device)" },
	{ "exec", bench_exec, "kernel submit-to-fence latency (empty, 4 KiB write) vs socket and register round trips" },
	{ "suspend", bench_suspend, "host suspend/resume of pinned BOs: prepare, critical window, resume vs memcpy" },
	{ "rpm", bench_rpm, "runtime PM: release N mappings, touch-to-data while asleep vs wake + uffd, per CPU placement" },
	{ "svm", bench_svm, "shared virtual memory: GPU faults into VRAM, CPU touches back (2 MiB, 4 KiB) vs memcpy and raw uffd" },
	{ "p2p", bench_p2p, "BO moves between two devices: fabric vs system memory (fast and slow link), peer read in place, vs memcpy" },
	{ "svm-prefetch", bench_svm_prefetch, "SVM policy: prefetch to VRAM and back vs memcpy (64 MiB x 128); ping-pong with and without thrashing control" },
	{ "svm-race", bench_svm_race, "SVM: how long a CPU store racing a move into VRAM waits (the race window), UFFDIO_MOVE and write protection" },
	{ "uffd", bench_uffd, "userfaultfd round trip vs cpu_map fault/invalidate/release" },
	{ "daemon", bench_daemon, "through ugpud: BO create+map+destroy vs a raw SOCK_SEQPACKET round trip; 1-64 clients" },
};

#define NBENCH (sizeof(benches) / sizeof(benches[0]))

static void usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: ugpu-bench all | NAME [OPTIONS]\n"
		   "performance checks, each against its own baseline; one JSON object per line\n\n"
		   "benchmarks:\n");
	for (i = 0; i < NBENCH; i++)
		fprintf(f, "  %-8s %s\n", benches[i].name, benches[i].help);
	fprintf(f, "\n  %-8s %s\n", "plot", "draw a benchmark's JSON lines to a PNG: ugpu-bench copy | ugpu-bench plot --out copy.png");
	fprintf(f, "\n'ugpu-bench NAME --help' gives a benchmark's options, ranges and defaults.\n"
		   "  %-24s %s\n  %-24s %s\n", "-h, --help", "print this help and exit", "--version",
		"print the version and exit");
}

/* A benchmark's answer as an exit code: 0, 1 failed, 2 usage error. */
static int exit_code(int r)
{
	return r == 0 || r == CLI_EXIT_USAGE ? r : 1;
}

int main(int argc, char **argv)
{
	size_t i;
	int ret = 0;

	if (argc < 2)
		return cli_usage_error("ugpu-bench", "missing benchmark NAME (or all)");
	if (cli_is_help(argv[1])) {
		usage(stdout);
		return 0;
	}
	if (cli_is_version(argv[1])) {
		cli_version("ugpu-bench", stdout);
		return 0;
	}
	if (!strcmp(argv[1], "plot"))
		return exit_code(bench_plot(argc - 1, argv + 1));
	if (!strcmp(argv[1], "all")) {
		static const struct cli_cmd all_cli = {
			.prog = "ugpu-bench all",
			.args = "",
			.summary = "every benchmark with its defaults, in the order of 'ugpu-bench --help'",
		};
		int rc = cli_parse(&all_cli, argc - 1, argv + 1, NULL, NULL);

		if (rc != CLI_CONTINUE)
			return rc;
		for (i = 0; i < NBENCH; i++) {
			char *args[] = { (char *)benches[i].name, NULL };

			if (benches[i].fn(1, args))
				ret = 1;
		}
		return ret;
	}
	for (i = 0; i < NBENCH; i++)
		if (!strcmp(argv[1], benches[i].name))
			return exit_code(benches[i].fn(argc - 1, argv + 1));
	return cli_usage_error("ugpu-bench", "unknown benchmark '%s'", argv[1]);
}
