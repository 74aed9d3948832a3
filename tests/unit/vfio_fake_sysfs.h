/* SPDX-License-Identifier: MIT */
/*
 * A fake sysfs + /dev tree in a temporary directory, shaped like the kernel's
 * for what vfio/ reads: bus/pci/devices/BDF/{vendor,device,class,
 * driver_override, driver -> drivers/X, iommu_group -> kernel/iommu_groups/N},
 * bus/pci/drivers/X/unbind, bus/pci/drivers_probe,
 * kernel/iommu_groups/N/devices/BDF, class devices below a device (a disk, a
 * network interface), and a /proc with mountinfo, swaps and processes' fds.
 * Used by the test_vfio_* unit tests.
 */
#ifndef UGPU_TESTS_VFIO_FAKE_SYSFS_H
#define UGPU_TESTS_VFIO_FAKE_SYSFS_H

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct fake_sysfs {
	char root[256]; /* the tmpdir */
	char sys[300]; /* root/sys */
	char dev[300]; /* root/dev */
	char proc[300]; /* root/proc: self/mountinfo, swaps, PID/{comm,fd/N} */
	char state[300]; /* root/run/ugpu: ugpuctl bind's records */
};

static inline void fs_mkdirs(const char *path)
{
	char tmp[PATH_MAX];
	size_t n = strlen(path);

	if (n >= sizeof(tmp))
		abort();
	memcpy(tmp, path, n + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			mkdir(tmp, 0755);
			*p = '/';
		}
	}
	mkdir(tmp, 0755);
}

static inline void fs_write(const char *path, const char *val)
{
	FILE *f = fopen(path, "w");

	if (!f)
		abort();
	fputs(val, f);
	fclose(f);
}

static inline void fs_read(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");
	size_t n = 0;

	buf[0] = '\0';
	if (!f)
		return;
	n = fread(buf, 1, len - 1, f);
	buf[n] = '\0';
	fclose(f);
}

static inline void fake_sysfs_init(struct fake_sysfs *fs)
{
	char p[PATH_MAX + 64];

	snprintf(fs->root, sizeof(fs->root), "/tmp/ugpu-fake-sysfs-XXXXXX");
	if (!mkdtemp(fs->root))
		abort();
	snprintf(fs->sys, sizeof(fs->sys), "%s/sys", fs->root);
	snprintf(fs->dev, sizeof(fs->dev), "%s/dev", fs->root);
	snprintf(fs->proc, sizeof(fs->proc), "%s/proc", fs->root);
	snprintf(fs->state, sizeof(fs->state), "%s/run/ugpu", fs->root);
	snprintf(p, sizeof(p), "%s/self", fs->proc);
	fs_mkdirs(p);
	snprintf(p, sizeof(p), "%s/self/mountinfo", fs->proc);
	fs_write(p, "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n");
	snprintf(p, sizeof(p), "%s/swaps", fs->proc);
	fs_write(p, "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n");
	snprintf(p, sizeof(p), "%s/run", fs->root);
	fs_mkdirs(p); /* run/ugpu itself is made by the first bind */
	snprintf(p, sizeof(p), "%s/bus/pci/devices", fs->sys);
	fs_mkdirs(p);
	snprintf(p, sizeof(p), "%s/bus/pci/drivers", fs->sys);
	fs_mkdirs(p);
	snprintf(p, sizeof(p), "%s/bus/pci/drivers_probe", fs->sys);
	fs_write(p, "");
	snprintf(p, sizeof(p), "%s/kernel/iommu_groups", fs->sys);
	fs_mkdirs(p);
	fs_mkdirs(fs->dev);
}

static inline void fake_sysfs_driver(struct fake_sysfs *fs, const char *drv)
{
	char p[PATH_MAX + 64];

	snprintf(p, sizeof(p), "%s/bus/pci/drivers/%s", fs->sys, drv);
	fs_mkdirs(p);
	snprintf(p, sizeof(p), "%s/bus/pci/drivers/%s/unbind", fs->sys, drv);
	fs_write(p, "");
}

/* Point BDF's driver link at @drv ("" removes it). */
static inline void fake_sysfs_set_driver(struct fake_sysfs *fs, const char *bdf, const char *drv)
{
	char link[PATH_MAX + 64], target[PATH_MAX + 64];

	snprintf(link, sizeof(link), "%s/bus/pci/devices/%s/driver", fs->sys, bdf);
	unlink(link);
	if (drv && drv[0]) {
		fake_sysfs_driver(fs, drv);
		snprintf(target, sizeof(target), "../../drivers/%s", drv);
		if (symlink(target, link))
			abort();
	}
}

/* A device; @group < 0: no IOMMU group; @drv NULL or "": unbound. */
static inline void fake_sysfs_device(struct fake_sysfs *fs, const char *bdf, unsigned vendor,
				     unsigned device, unsigned cls, int group, const char *drv)
{
	char d[PATH_MAX + 64], p[PATH_MAX + 128], v[32];

	snprintf(d, sizeof(d), "%s/bus/pci/devices/%s", fs->sys, bdf);
	fs_mkdirs(d);
	snprintf(p, sizeof(p), "%s/vendor", d);
	snprintf(v, sizeof(v), "0x%04x\n", vendor);
	fs_write(p, v);
	snprintf(p, sizeof(p), "%s/device", d);
	snprintf(v, sizeof(v), "0x%04x\n", device);
	fs_write(p, v);
	snprintf(p, sizeof(p), "%s/class", d);
	snprintf(v, sizeof(v), "0x%06x\n", cls);
	fs_write(p, v);
	snprintf(p, sizeof(p), "%s/driver_override", d);
	fs_write(p, "(null)\n");
	if (group >= 0) {
		char g[PATH_MAX + 64], t[PATH_MAX + 64];

		snprintf(g, sizeof(g), "%s/kernel/iommu_groups/%d/devices", fs->sys, group);
		fs_mkdirs(g);
		snprintf(p, sizeof(p), "%s/%s", g, bdf);
		snprintf(t, sizeof(t), "../../../../bus/pci/devices/%s", bdf);
		if (symlink(t, p))
			abort();
		snprintf(p, sizeof(p), "%s/iommu_group", d);
		snprintf(t, sizeof(t), "../../../../kernel/iommu_groups/%d", group);
		if (symlink(t, p))
			abort();
	}
	fake_sysfs_set_driver(fs, bdf, drv);
}

/*
 * A class device below @bdf at @rel (e.g. "nvme/nvme0/nvme0n1"), of
 * @subsystem ("block", "net"), with attribute @attr = @val (NULL: none).
 * Returns nothing; aborts on failure as the rest does.
 */
static inline void fake_sysfs_class_dev(struct fake_sysfs *fs, const char *bdf, const char *rel,
					const char *subsystem, const char *attr, const char *val)
{
	char d[PATH_MAX + 64], p[PATH_MAX + 128], t[128];

	snprintf(d, sizeof(d), "%s/bus/pci/devices/%s/%s", fs->sys, bdf, rel);
	fs_mkdirs(d);
	snprintf(p, sizeof(p), "%s/subsystem", d);
	snprintf(t, sizeof(t), "../../../../class/%s", subsystem);
	unlink(p);
	if (symlink(t, p))
		abort();
	if (attr) {
		snprintf(p, sizeof(p), "%s/%s", d, attr);
		fs_write(p, val);
	}
}

/* A process @pid named @comm with fd @fd open on @target. */
static inline void fake_proc_fd(struct fake_sysfs *fs, int pid, const char *comm, int fd,
				const char *target)
{
	char p[PATH_MAX + 64];

	snprintf(p, sizeof(p), "%s/%d/fd", fs->proc, pid);
	fs_mkdirs(p);
	snprintf(p, sizeof(p), "%s/%d/comm", fs->proc, pid);
	fs_write(p, comm);
	snprintf(p, sizeof(p), "%s/%d/fd/%d", fs->proc, pid, fd);
	unlink(p);
	if (symlink(target, p))
		abort();
}

static inline void fake_sysfs_destroy(struct fake_sysfs *fs)
{
	char cmd[PATH_MAX + 32];

	if (strncmp(fs->root, "/tmp/ugpu-fake-sysfs-", 21))
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fs->root);
	if (system(cmd))
		fprintf(stderr, "could not remove %s\n", fs->root);
}

#endif
