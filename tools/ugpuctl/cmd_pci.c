/* SPDX-License-Identifier: MIT */
/* ugpuctl list / bind / unbind: PCI devices and vfio-pci. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/ugpuctl/ugpuctl.h"

static int run_list(int argc, char **argv)
{
	struct pci_dev_desc *v;
	size_t n;
	int ret;

	(void)argv;
	if (argc != 1) {
		fprintf(stderr, "usage: ugpuctl list\n");
		return 2;
	}
	/* the sysfs walk when pointed at another tree, libpciaccess otherwise */
	if (getenv("UGPU_SYSFS_ROOT"))
		ret = pci_list_sysfs(ugpuctl_paths(), &v, &n);
	else
		ret = pci_list(&v, &n);
	if (ret) {
		fprintf(stderr, "ugpuctl list: %s\n", strerror(-ret));
		return 1;
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

static int run_bind(int argc, char **argv)
{
	char why[768] = "";
	int ret;

	if (argc != 2) {
		fprintf(stderr, "usage: ugpuctl bind BDF\n");
		return 2;
	}
	ret = pci_bind_vfio(ugpuctl_paths(), argv[1], why, sizeof(why));
	if (ret) {
		fprintf(stderr, "ugpuctl bind: %s\n", why[0] ? why : strerror(-ret));
		return 1;
	}
	printf("%s bound to vfio-pci\n", argv[1]);
	why[0] = '\0';
	ret = pci_group_check(ugpuctl_paths(), argv[1], why, sizeof(why));
	if (ret)
		fprintf(stderr, "ugpuctl bind: warning: %s\n", why[0] ? why : strerror(-ret));
	return 0;
}

static int run_unbind(int argc, char **argv)
{
	char why[768] = "";
	int ret;

	if (argc != 2) {
		fprintf(stderr, "usage: ugpuctl unbind BDF\n");
		return 2;
	}
	ret = pci_unbind_vfio(ugpuctl_paths(), argv[1], why, sizeof(why));
	if (ret) {
		fprintf(stderr, "ugpuctl unbind: %s\n", why[0] ? why : strerror(-ret));
		return 1;
	}
	printf("%s unbound\n", argv[1]);
	return 0;
}

const struct ugpuctl_cmd ugpuctl_cmd_list = {
	.name = "list",
	.args = "",
	.help = "PCI devices: address, ids, class, IOMMU group, driver",
	.run = run_list,
};

const struct ugpuctl_cmd ugpuctl_cmd_bind = {
	.name = "bind",
	.args = "BDF",
	.help = "hand a device to vfio-pci (driver_override + reprobe)",
	.run = run_bind,
};

const struct ugpuctl_cmd ugpuctl_cmd_unbind = {
	.name = "unbind",
	.args = "BDF",
	.help = "release a device: clear driver_override and unbind",
	.run = run_unbind,
};
