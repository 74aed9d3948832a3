/* SPDX-License-Identifier: MIT */
/* ugpuctl: the command-line tool. Dispatches to the subcommand table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
};

#define NR_CMDS (sizeof(cmds) / sizeof(cmds[0]))

const struct pci_paths *ugpuctl_paths(void)
{
	static struct pci_paths p;

	p.sysfs = getenv("UGPU_SYSFS_ROOT") ? getenv("UGPU_SYSFS_ROOT") : pci_default_paths.sysfs;
	p.dev = getenv("UGPU_DEV_ROOT") ? getenv("UGPU_DEV_ROOT") : pci_default_paths.dev;
	return &p;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: ugpuctl COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < NR_CMDS; i++) {
		char syn[64];

		snprintf(syn, sizeof(syn), "%s %s", cmds[i]->name, cmds[i]->args);
		fprintf(out, "  %-24s %s\n", syn, cmds[i]->help);
	}
	fprintf(out, "\nenvironment: UGPU_SYSFS_ROOT, UGPU_DEV_ROOT override /sys and /dev\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < NR_CMDS; i++)
		if (!strcmp(argv[1], cmds[i]->name))
			return cmds[i]->run(argc - 1, argv + 1);
	fprintf(stderr, "ugpuctl: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
