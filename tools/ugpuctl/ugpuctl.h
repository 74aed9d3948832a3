/* SPDX-License-Identifier: MIT */
/* ugpuctl subcommands: each lives in its own cmd_<name>.c and is listed in
 * main.c's cmds[] table. */
#ifndef UGPU_TOOLS_UGPUCTL_H
#define UGPU_TOOLS_UGPUCTL_H

#include "vfio/pci_discover.h"

/*
 * struct ugpuctl_cmd - one subcommand.
 * @name: what the user types.
 * @args: argument synopsis for --help ("" if none).
 * @help: one line.
 * @run: argv[0] is the subcommand name. Returns the process exit code:
 *       0 done, 1 failed (a message was printed), 2 usage error.
 */
struct ugpuctl_cmd {
	const char *name;
	const char *args;
	const char *help;
	int (*run)(int argc, char **argv);
};

/* Paths for sysfs and /dev: the real ones, or UGPU_SYSFS_ROOT / UGPU_DEV_ROOT
 * from the environment (tests point them at a fake tree). */
const struct pci_paths *ugpuctl_paths(void);

extern const struct ugpuctl_cmd ugpuctl_cmd_list;
extern const struct ugpuctl_cmd ugpuctl_cmd_bind;
extern const struct ugpuctl_cmd ugpuctl_cmd_unbind;
extern const struct ugpuctl_cmd ugpuctl_cmd_suspend;
extern const struct ugpuctl_cmd ugpuctl_cmd_resume;
extern const struct ugpuctl_cmd ugpuctl_cmd_unplug;

#endif
