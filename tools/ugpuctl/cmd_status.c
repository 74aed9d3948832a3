/* SPDX-License-Identifier: MIT */
/*
 * ugpuctl status [--json] DEVICE | --control PATH [--dev N]
 *
 * A read-only look at a device: it never opens the device, so it neither
 * claims it from its owner nor wakes it from a sleep.
 *   DEVICE (pci:BDF or BDF): what the kernel says in sysfs: ids, driver,
 *       IOMMU group, PCI power state, runtime-PM status, and which process
 *       holds it through VFIO.
 *   --control PATH: a reference device's own view through its control
 *       socket (ugpu-sim --control PATH): power state, engines, queues,
 *       whether a client is connected, DMA mappings, faults.
 * The driver's own counters (VRAM by kind, migrations, ...) live in the
 * process that owns the device: `ugpuctl stats` for a device nobody holds.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tools/ugpuctl/ugpuctl.h"
#include "vfio/pci_bind.h"

#define MAX_DEV 15

static bool as_json;
static const char *control;
static uint64_t dev_index;

static const struct cli_opt status_opts[] = {
	{ .name = "json", .kind = CLI_FLAG, .dst = &as_json, .help = "one JSON object" },
	{ .name = "control", .kind = CLI_STR, .dst = &control, .arg = "PATH",
	  .help = "a reference device's control socket (ugpu-sim --control PATH)" },
	{ .name = "dev", .kind = CLI_UINT, .dst = &dev_index, .arg = "N",
	  .help = "with --control: which device of a multi-device ugpu-sim", .max = MAX_DEV },
	{ 0 },
};

static const struct cli_cmd status_cli = {
	.prog = "ugpuctl status",
	.args = "[pci:BDF]",
	.summary = "a read-only look at a device (sysfs, or a reference device's control socket)",
	.about = "Never opens the device: neither claims it nor wakes it. For pci:BDF: ids, driver,\n"
		 "IOMMU group, power state, runtime-PM status, VFIO holder (sysfs and /proc).\n"
		 "With --control PATH instead: the reference device's state from its control socket.",
	.opts = status_opts,
	.min_pos = 0,
	.max_pos = 1,
};

struct kv {
	const char *key;
	char val[256];
	bool number; /* JSON: unquoted */
};

static void print_kv(const struct kv *kv, size_t n)
{
	size_t i;

	if (!as_json) {
		for (i = 0; i < n; i++)
			printf("%-16s %s\n", kv[i].key, kv[i].val[0] ? kv[i].val : "-");
		return;
	}
	putchar('{');
	for (i = 0; i < n; i++) {
		printf("%s", i ? "," : "");
		ugpuctl_json_str(kv[i].key);
		putchar(':');
		if (kv[i].number)
			printf("%s", kv[i].val[0] ? kv[i].val : "null");
		else
			ugpuctl_json_str(kv[i].val);
	}
	printf("}\n");
}

static void sysfs_attr(const char *bdf, const char *leaf, char *out, size_t len)
{
	char path[512];

	out[0] = '\0';
	if (!pci_dev_path(ugpuctl_paths(), bdf, leaf, path, sizeof(path)) &&
	    pci_read_attr(path, out, len))
		out[0] = '\0'; /* an older kernel, or no runtime PM: unknown */
}

static int status_pci(const char *arg)
{
	const struct pci_paths *p = ugpuctl_paths();
	const char *bdf_in = strncmp(arg, "pci:", 4) ? arg : arg + 4;
	struct pci_dev_desc d;
	struct kv kv[9];
	char bdf[PCI_BDF_LEN];
	size_t n = 0;
	int ret;

	if (pci_bdf_normalize(bdf_in, bdf))
		return cli_usage_error(status_cli.prog, "'%s' is not pci:BDF (DDDD:BB:DD.F)", arg);
	ret = pci_describe(p, bdf, &d);
	if (ret) {
		fprintf(stderr, "%s: no PCI device %s (%s)\n", status_cli.prog, bdf, strerror(-ret));
		return 1;
	}
	memset(kv, 0, sizeof(kv));
	kv[n].key = "device";
	snprintf(kv[n++].val, sizeof(kv[0].val), "%s", d.bdf);
	kv[n].key = "id";
	snprintf(kv[n++].val, sizeof(kv[0].val), "%04x:%04x", d.vendor, d.device);
	kv[n].key = "class";
	snprintf(kv[n++].val, sizeof(kv[0].val), "%06x", d.class_code);
	kv[n].key = "driver";
	snprintf(kv[n++].val, sizeof(kv[0].val), "%s", d.driver);
	kv[n].key = "iommu_group";
	kv[n].number = true;
	if (d.iommu_group >= 0)
		snprintf(kv[n].val, sizeof(kv[0].val), "%d", d.iommu_group);
	n++;
	kv[n].key = "power_state";
	sysfs_attr(bdf, "power_state", kv[n++].val, sizeof(kv[0].val));
	kv[n].key = "runtime_status";
	sysfs_attr(bdf, "power/runtime_status", kv[n++].val, sizeof(kv[0].val));
	kv[n].key = "held_by";
	if (!strcmp(d.driver, "vfio-pci") && pci_holders(p, bdf, kv[n].val, sizeof(kv[0].val)) <= 0)
		snprintf(kv[n].val, sizeof(kv[0].val), "nobody");
	n++;
	kv[n].key = "usable";
	snprintf(kv[n++].val, sizeof(kv[0].val), "%s",
		 !strcmp(d.driver, "vfio-pci") ? "yes (on vfio-pci)" :
		 d.iommu_group < 0	       ? "no (no IOMMU group)" :
						 "after ugpuctl bind");
	print_kv(kv, n);
	return 0;
}

/* The control socket's "state" reply: "ok power=D0 ce0=idle ..." */
static int status_control(void)
{
	struct kv kv[24];
	char line[32], reply[1024], *save = NULL, *tok;
	size_t n = 0;
	int ret;

	snprintf(line, sizeof(line), "dev %u state", (unsigned)dev_index);
	ret = ugpuctl_control_call(control, line, reply, sizeof(reply));
	if (ret) {
		if (ret == -EIO)
			fprintf(stderr, "%s: %s: %s\n", status_cli.prog, control, reply);
		return 1;
	}
	memset(kv, 0, sizeof(kv));
	for (tok = strtok_r(reply, " ", &save); tok && n < sizeof(kv) / sizeof(kv[0]);
	     tok = strtok_r(NULL, " ", &save)) {
		char *eq = strchr(tok, '=');
		const char *c;

		if (!eq)
			continue; /* the leading "ok" */
		*eq = '\0';
		kv[n].key = tok;
		snprintf(kv[n].val, sizeof(kv[0].val), "%s", eq + 1);
		kv[n].number = eq[1] != '\0';
		for (c = eq + 1; *c; c++)
			if (*c < '0' || *c > '9')
				kv[n].number = false;
		n++;
	}
	if (!n) {
		fprintf(stderr, "%s: %s: unexpected reply '%s'\n", status_cli.prog, control, reply);
		return 1;
	}
	print_kv(kv, n);
	return 0;
}

static int run_status(int argc, char **argv)
{
	char *dev = NULL;
	unsigned npos = 0;
	int ret;

	ret = cli_parse(&status_cli, argc, argv, &dev, &npos);
	if (ret != CLI_CONTINUE)
		return ret;
	if (control && npos)
		return cli_usage_error(status_cli.prog, "give either pci:BDF or --control PATH");
	if (control)
		return status_control();
	if (!npos)
		return cli_usage_error(status_cli.prog, "missing argument: pci:BDF (or --control PATH)");
	if (!strncmp(dev, "vfio-user:", 10))
		return cli_usage_error(status_cli.prog,
				       "a vfio-user device is seen only through its owner: use "
				       "--control PATH for ugpu-sim, or ugpuctl stats when nobody holds it");
	return status_pci(dev);
}

const struct ugpuctl_cmd ugpuctl_cmd_status = {
	.cli = &status_cli,
	.name = "status",
	.run = run_status,
};
