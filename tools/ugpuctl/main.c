/* SPDX-License-Identifier: MIT */
/* ugpuctl: the command-line tool. Dispatches to the subcommand table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ugpu/device.h>
#include <ugpu/ugpu.h>

#include "tools/common/progress_bar.h"
#include "tools/ugpuctl/ugpuctl.h"

/*
 * The subcommands. To add one: define a `const struct ugpuctl_cmd
 * ugpuctl_cmd_<name>` in tools/ugpuctl/cmd_<name>.c, declare it in
 * ugpuctl.h, and add it here (help prints them in this order).
 */
static const struct ugpuctl_cmd *const cmds[] = {
	&ugpuctl_cmd_list,
	&ugpuctl_cmd_bind,
	&ugpuctl_cmd_unbind,
	&ugpuctl_cmd_suspend,
	&ugpuctl_cmd_resume,
	&ugpuctl_cmd_unplug,
	&ugpuctl_cmd_status,
	&ugpuctl_cmd_stats,
	&ugpuctl_cmd_clients,
	&ugpuctl_cmd_kill,
	&ugpuctl_cmd_daemon_pm,
};

#define NR_CMDS (sizeof(cmds) / sizeof(cmds[0]))

const struct pci_paths *ugpuctl_paths(void)
{
	static struct pci_paths p;

	p.sysfs = getenv("UGPU_SYSFS_ROOT") ? getenv("UGPU_SYSFS_ROOT") : pci_default_paths.sysfs;
	p.dev = getenv("UGPU_DEV_ROOT") ? getenv("UGPU_DEV_ROOT") : pci_default_paths.dev;
	p.proc = getenv("UGPU_PROC_ROOT") ? getenv("UGPU_PROC_ROOT") : pci_default_paths.proc;
	p.state = getenv("UGPU_STATE_DIR") ? getenv("UGPU_STATE_DIR") : pci_default_paths.state;
	return &p;
}

/* The driver's first error: the most specific one (what follows it is the
 * same failure seen from further up). */
static void first_error(void *user, enum ugpu_log_level level, const char *msg)
{
	char *buf = user;

	if (level == UGPU_LOG_ERROR && !buf[0])
		snprintf(buf, 512, "%s", msg);
}

int ugpuctl_open(const char *prog, const char *uri, struct ugpu_context **ctx,
		 struct ugpu_device **dev)
{
	static char err[512];
	struct ugpu_context_opts co = { .size = sizeof(co), .log_fn = first_error, .log_user = err,
					.log_level = UGPU_LOG_ERROR };
	int ret;

	err[0] = '\0';
	ret = ugpu_context_create(&co, ctx);
	if (!ret)
		ret = ugpu_device_open(*ctx, uri, dev);
	if (ret)
		fprintf(stderr, "%s: cannot open %s: %s (%s)\n", prog, uri,
			err[0] ? err : ugpu_strerror(ret), ugpu_strerror(ret));
	else { /* opened: what the driver says from now on goes to stderr */
		ugpu_context_set_log(*ctx, progress_bar_log, NULL, UGPU_LOG_DEFAULT);
		progress_bar_install(*ctx);
	}
	return ret;
}

void ugpuctl_json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x80)
			/* control bytes, and bytes that may not be UTF-8
			 * (sysfs names are ASCII; a strange one stays valid
			 * JSON, read as Latin-1) */
			printf("\\u%04x", (unsigned char)*s);
		else
			putchar(*s);
	}
	putchar('"');
}

static void usage(FILE *out)
{
	fprintf(out, "usage: ugpuctl COMMAND [ARGS]\n"
		     "ugpu's control tool: PCI devices and vfio-pci, suspend, unplug, counters, the ugpud\n"
		     "daemon\n\ncommands:\n");
	for (size_t i = 0; i < NR_CMDS; i++) {
		char syn[64];

		snprintf(syn, sizeof(syn), "%s %s", cmds[i]->name, cmds[i]->cli->args);
		fprintf(out, "  %-24s %s\n", syn, cmds[i]->cli->summary);
	}
	fprintf(out, "\n'ugpuctl COMMAND --help' describes a command and its options.\n"
		     "  %-24s %s\n  %-24s %s\n"
		     "\nenvironment: UGPU_SYSFS_ROOT, UGPU_DEV_ROOT, UGPU_PROC_ROOT override /sys, /dev\n"
		     "and /proc; UGPU_STATE_DIR the bind records (default /run/ugpu)\n",
		"-h, --help", "print this help and exit", "--version", "print the version and exit");
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return cli_usage_error("ugpuctl", "missing COMMAND");
	if (cli_is_help(argv[1]) || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (cli_is_version(argv[1])) {
		cli_version("ugpuctl", stdout);
		return 0;
	}
	for (size_t i = 0; i < NR_CMDS; i++)
		if (!strcmp(argv[1], cmds[i]->name))
			return cmds[i]->run(argc - 1, argv + 1);
	return cli_usage_error("ugpuctl", "unknown command '%s'", argv[1]);
}
