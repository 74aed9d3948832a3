/* SPDX-License-Identifier: MIT */
/* ugpuctl list / bind / unbind: PCI devices and vfio-pci (vfio/pci_bind.h
 * says what bind checks and how unbind gives a device back). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/ugpuctl/ugpuctl.h"
#include "vfio/pci_bind.h"

static bool list_json;

static const struct cli_opt list_opts[] = {
	{ .name = "json", .kind = CLI_FLAG, .dst = &list_json,
	  .help = "one JSON object per device, one per line" },
	{ 0 },
};

static const struct cli_cmd list_cli = {
	.prog = "ugpuctl list",
	.args = "",
	.summary = "PCI devices: address, ids, class, IOMMU group, driver",
	.opts = list_opts,
};

static int run_list(int argc, char **argv)
{
	struct pci_dev_desc *v;
	size_t n;
	int ret = cli_parse(&list_cli, argc, argv, NULL, NULL);

	if (ret != CLI_CONTINUE)
		return ret;
	/* the sysfs walk when pointed at another tree, libpciaccess otherwise */
	if (getenv("UGPU_SYSFS_ROOT"))
		ret = pci_list_sysfs(ugpuctl_paths(), &v, &n);
	else
		ret = pci_list(&v, &n);
	if (ret) {
		fprintf(stderr, "ugpuctl list: %s\n", strerror(-ret));
		return 1;
	}
	if (list_json) {
		for (size_t i = 0; i < n; i++) {
			printf("{\"bdf\":");
			ugpuctl_json_str(v[i].bdf);
			printf(",\"vendor\":\"%04x\",\"device\":\"%04x\",\"class\":\"%06x\","
			       "\"iommu_group\":",
			       v[i].vendor, v[i].device, v[i].class_code);
			if (v[i].iommu_group >= 0)
				printf("%d", v[i].iommu_group);
			else
				printf("null");
			printf(",\"driver\":");
			if (v[i].driver[0])
				ugpuctl_json_str(v[i].driver);
			else
				printf("null");
			printf("}\n");
		}
		free(v);
		return 0;
	}
	if (n == 0) {
		printf("no PCI devices found (in a container /sys/bus/pci may be empty)\n");
		free(v);
		return 0;
	}
	printf("%-13s %-9s %-6s %-5s %s\n", "BDF", "ID", "CLASS", "GROUP", "DRIVER");
	for (size_t i = 0; i < n; i++) {
		char group[16];

		if (v[i].iommu_group >= 0)
			snprintf(group, sizeof(group), "%d", v[i].iommu_group);
		else
			snprintf(group, sizeof(group), "-");
		printf("%-13s %04x:%04x %06x %-5s %s\n", v[i].bdf, v[i].vendor, v[i].device,
		       v[i].class_code, group, v[i].driver[0] ? v[i].driver : "-");
	}
	free(v);
	return 0;
}

#define MAX_BIND 16

static bool bind_force;

static const struct cli_opt bind_opts[] = {
	{ .name = "force", .kind = CLI_FLAG, .dst = &bind_force,
	  .help = "bind although the device is in use or its group will not be viable" },
	{ 0 },
};

static const struct cli_cmd bind_cli = {
	.prog = "ugpuctl bind",
	.args = "BDF...",
	.summary = "hand devices to vfio-pci, checking everything first",
	.about = "Checks each device before changing anything: vfio-pci is loaded, the device has an\n"
		 "IOMMU group, the group will be viable (the devices of one group can be bound\n"
		 "together), the device is not in use (mounted filesystems, swap, dm/md holders, a\n"
		 "network interface that is up), and this user may write sysfs. Then it records\n"
		 "the driver the device had (/run/ugpu/BDF.driver, for unbind), sets\n"
		 "driver_override, unbinds and probes.",
	.opts = bind_opts,
	.min_pos = 1,
	.max_pos = MAX_BIND,
};

static int run_bind(int argc, char **argv)
{
	char why[1024] = "", *bdfs[MAX_BIND];
	unsigned n;
	int ret = cli_parse(&bind_cli, argc, argv, bdfs, &n);

	if (ret != CLI_CONTINUE)
		return ret;
	ret = pci_bind_vfio(ugpuctl_paths(), (const char *const *)bdfs, n,
			    bind_force ? PCI_BIND_FORCE : 0, why, sizeof(why));
	if (ret) {
		fprintf(stderr, "ugpuctl bind: %s\n", why[0] ? why : strerror(-ret));
		return ret == -EINVAL ? CLI_EXIT_USAGE : 1;
	}
	for (unsigned i = 0; i < n; i++) {
		printf("%s bound to vfio-pci\n", bdfs[i]);
		why[0] = '\0';
		if (pci_group_check(ugpuctl_paths(), bdfs[i], why, sizeof(why)))
			fprintf(stderr, "ugpuctl bind: warning: %s\n", why);
	}
	return 0;
}

static bool unbind_force;

static const struct cli_opt unbind_opts[] = {
	{ .name = "force", .kind = CLI_FLAG, .dst = &unbind_force,
	  .help = "unbind although the device is held open or is not on vfio-pci" },
	{ 0 },
};

static const struct cli_cmd unbind_cli = {
	.prog = "ugpuctl unbind",
	.args = "BDF",
	.summary = "give a device on vfio-pci back to the driver it had before bind",
	.about = "Refuses a device that is not on vfio-pci, and one a process holds open through\n"
		 "VFIO (it names the process). Gives the device back to the driver recorded by\n"
		 "ugpuctl bind (driver_override, unbind, probe, then driver_override cleared);\n"
		 "without a record, clears driver_override and lets the kernel probe.",
	.opts = unbind_opts,
	.min_pos = 1,
	.max_pos = 1,
};

static int run_unbind(int argc, char **argv)
{
	char why[1024] = "", back[64], *bdf;
	unsigned n;
	int ret = cli_parse(&unbind_cli, argc, argv, &bdf, &n);

	if (ret != CLI_CONTINUE)
		return ret;
	ret = pci_unbind_vfio(ugpuctl_paths(), bdf, unbind_force ? PCI_BIND_FORCE : 0, back,
			      sizeof(back), why, sizeof(why));
	if (ret) {
		fprintf(stderr, "ugpuctl unbind: %s\n", why[0] ? why : strerror(-ret));
		return ret == -EINVAL ? CLI_EXIT_USAGE : 1;
	}
	if (back[0])
		printf("%s unbound from vfio-pci, back on %s\n", bdf, back);
	else
		printf("%s unbound, left without a driver\n", bdf);
	return 0;
}

const struct ugpuctl_cmd ugpuctl_cmd_list = { .cli = &list_cli, .name = "list", .run = run_list };
const struct ugpuctl_cmd ugpuctl_cmd_bind = { .cli = &bind_cli, .name = "bind", .run = run_bind };
const struct ugpuctl_cmd ugpuctl_cmd_unbind = { .cli = &unbind_cli, .name = "unbind",
						.run = run_unbind };
