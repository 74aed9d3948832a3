/* SPDX-License-Identifier: MIT */
/*
 * TEMPORARY smoke check of the VM stage's plumbing, with raw VFIO ioctls:
 * the container opens, speaks the expected API and has type1v2, and both
 * devices' groups are viable. It exists only until src/vfio/vfio_pci.c
 * lands; vm_regions then proves the same through the driver's transport and
 * this file is deleted.
 */
#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>

#include "vm_test.h"

static void check_group(int container, const char *bdf, bool first)
{
	char path[256], link[256];
	struct vfio_group_status st = { .argsz = sizeof(st) };
	ssize_t n;
	int group;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", bdf);
	n = readlink(path, link, sizeof(link) - 1);
	if (!VM_CHECK(n > 0, "%s: iommu_group link", bdf))
		return;
	link[n] = '\0';
	snprintf(path, sizeof(path), "/dev/vfio/%s", strrchr(link, '/') + 1);
	group = open(path, O_RDWR | O_CLOEXEC);
	if (!VM_CHECK(group >= 0, "open %s: %s", path, group < 0 ? strerror(errno) : "ok"))
		return;
	n = ioctl(group, VFIO_GROUP_GET_STATUS, &st);
	VM_CHECK(n == 0 && (st.flags & VFIO_GROUP_FLAGS_VIABLE), "%s viable (flags 0x%x)", path,
		 st.flags);
	VM_CHECK(ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) == 0, "%s SET_CONTAINER", path);
	if (first)
		VM_CHECK(ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) == 0,
			 "SET_IOMMU(type1v2)");
	close(group);
}

int main(void)
{
	const char *shm = vm_bdf("UGPU_VM_SHM");
	const char *edu = vm_bdf("UGPU_VM_EDU");
	int c = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);

	VM_REQUIRE(c >= 0, "open /dev/vfio/vfio: %s", c < 0 ? strerror(errno) : "ok");
	VM_CHECK(ioctl(c, VFIO_GET_API_VERSION) == VFIO_API_VERSION, "VFIO API version %d",
		 VFIO_API_VERSION);
	VM_CHECK(ioctl(c, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) == 1, "type1v2 extension");
	check_group(c, edu, true);
	check_group(c, shm, false);
	close(c);
	return vm_finish();
}
