/* SPDX-License-Identifier: MIT */
/* ugpuctl subcommands: each lives in its own cmd_<name>.c and is listed in
 * main.c's cmds[] table. */
#ifndef UGPU_TOOLS_UGPUCTL_H
#define UGPU_TOOLS_UGPUCTL_H

#include "tools/common/cli.h"
#include "vfio/pci_discover.h"

struct ugpu_context;
struct ugpu_device;

/*
 * struct ugpuctl_cmd - one subcommand.
 * @cli: its command line: prog "ugpuctl NAME", synopsis, options (cli.h);
 *       ugpuctl --help lists @cli->args and @cli->summary.
 * @name: what the user types.
 * @run: argv[0] is the subcommand name. Parses with cli_parse(@cli) and
 *       returns the process exit code: 0 done, 1 failed (a message was
 *       printed, once), 2 usage error.
 */
struct ugpuctl_cmd {
	const struct cli_cmd *cli;
	const char *name;
	int (*run)(int argc, char **argv);
};

/* Paths for sysfs, /dev, /proc and the bind records: the real ones, or
 * UGPU_SYSFS_ROOT / UGPU_DEV_ROOT / UGPU_PROC_ROOT / UGPU_STATE_DIR from the
 * environment (tests point them at a fake tree). */
const struct pci_paths *ugpuctl_paths(void);

/*
 * ugpuctl_open() - a context and @uri's device, for the commands that open
 * one. The library's log goes nowhere but into the one message printed on
 * failure ("@prog: cannot open URI: <the driver's first error>"); once the
 * device is open, the log goes to stderr.
 * Returns: 0 or the negative errno (printed).
 */
int ugpuctl_open(const char *prog, const char *uri, struct ugpu_context **ctx,
		 struct ugpu_device **dev);

/*
 * ugpuctl_control_call() - send one command line to a reference device's
 * control socket (ugpu-sim --control PATH) and read its one reply line into
 * @reply (newline stripped), waiting a bounded time. Failures are printed.
 * Returns: 0 for an "ok ..." reply, -EIO for "err ...", or -errno.
 */
int ugpuctl_control_call(const char *path, const char *line, char *reply, size_t len);

/* @s as a JSON string, quotes and escapes included, to stdout. */
void ugpuctl_json_str(const char *s);

extern const struct ugpuctl_cmd ugpuctl_cmd_list;
extern const struct ugpuctl_cmd ugpuctl_cmd_bind;
extern const struct ugpuctl_cmd ugpuctl_cmd_unbind;
extern const struct ugpuctl_cmd ugpuctl_cmd_suspend;
extern const struct ugpuctl_cmd ugpuctl_cmd_resume;
extern const struct ugpuctl_cmd ugpuctl_cmd_unplug;
extern const struct ugpuctl_cmd ugpuctl_cmd_stats;
extern const struct ugpuctl_cmd ugpuctl_cmd_status;
extern const struct ugpuctl_cmd ugpuctl_cmd_clients;
extern const struct ugpuctl_cmd ugpuctl_cmd_kill;
extern const struct ugpuctl_cmd ugpuctl_cmd_daemon_pm;

#endif
