/* SPDX-License-Identifier: MIT */
/*
 * PCI discovery and vfio-pci binding against a fake sysfs tree: listing,
 * IOMMU groups and their viability, the bind/unbind write sequence (with a
 * tiny "kernel" thread that reacts to drivers_probe as the real one does),
 * the errors that tell a person what to do, the memlock decision, and the
 * ugpuctl CLI on the same tree.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "vfio/pci_bind.h"
#include "vfio/pci_discover.h"
#include "unit/vfio_fake_sysfs.h"

static struct fake_sysfs fs;
static struct pci_paths paths;

static int setup(void **state)
{
	(void)state;
	fake_sysfs_init(&fs);
	paths.sysfs = fs.sys;
	paths.dev = fs.dev;
	paths.proc = fs.proc;
	paths.state = fs.state;
	/* a GPU with its audio function in group 7, an NVMe in group 3, a
	 * device with no IOMMU group */
	fake_sysfs_device(&fs, "0000:01:00.0", 0x10de, 0x2204, 0x030000, 7, "nouveau");
	fake_sysfs_device(&fs, "0000:01:00.1", 0x10de, 0x1aef, 0x040300, 7, "snd_hda_intel");
	fake_sysfs_device(&fs, "0000:02:00.0", 0x144d, 0xa808, 0x010802, 3, "nvme");
	fake_sysfs_device(&fs, "0000:00:1f.0", 0x8086, 0x1234, 0x060100, -1, NULL);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	fake_sysfs_destroy(&fs);
	return 0;
}

static void test_bdf_normalize(void **state)
{
	char out[PCI_BDF_LEN];

	(void)state;
	assert_int_equal(pci_bdf_normalize("01:00.0", out), 0);
	assert_string_equal(out, "0000:01:00.0");
	assert_int_equal(pci_bdf_normalize("0001:ab:1f.7", out), 0);
	assert_string_equal(out, "0001:ab:1f.7");
	assert_int_equal(pci_bdf_normalize("0000:01:00.8", out), -EINVAL);
	assert_int_equal(pci_bdf_normalize("0000:01:20.0", out), -EINVAL);
	assert_int_equal(pci_bdf_normalize("01:00.0x", out), -EINVAL);
	assert_int_equal(pci_bdf_normalize("gpu0", out), -EINVAL);
	assert_int_equal(pci_bdf_normalize("", out), -EINVAL);
}

static void test_list_and_describe(void **state)
{
	struct pci_dev_desc *v, d;
	size_t n;

	(void)state;
	assert_int_equal(pci_list_sysfs(&paths, &v, &n), 0);
	assert_int_equal(n, 4);
	/* sorted by address */
	assert_string_equal(v[0].bdf, "0000:00:1f.0");
	assert_string_equal(v[1].bdf, "0000:01:00.0");
	assert_int_equal(v[1].vendor, 0x10de);
	assert_int_equal(v[1].device, 0x2204);
	assert_int_equal(v[1].class_code, 0x030000);
	assert_int_equal(v[1].iommu_group, 7);
	assert_string_equal(v[1].driver, "nouveau");
	assert_int_equal(v[0].iommu_group, -1);
	assert_string_equal(v[0].driver, "");
	assert_string_equal(v[3].bdf, "0000:02:00.0");
	assert_int_equal(v[3].iommu_group, 3);
	free(v);

	assert_int_equal(pci_describe(&paths, "02:00.0", &d), 0);
	assert_string_equal(d.driver, "nvme");
	assert_int_equal(pci_describe(&paths, "0000:09:00.0", &d), -ENODEV);
	assert_int_equal(pci_iommu_group(&paths, "0000:00:1f.0"), -ENOENT);
	assert_int_equal(pci_iommu_group(&paths, "0000:09:00.0"), -ENODEV);
}

static void test_list_empty_tree(void **state)
{
	struct pci_paths none = { .sysfs = "/nonexistent-sysfs", .dev = "/dev" };
	struct pci_dev_desc *v;
	size_t n = 99;

	(void)state;
	assert_int_equal(pci_list_sysfs(&none, &v, &n), 0);
	assert_int_equal(n, 0);
	free(v);
}

static void test_group_viability(void **state)
{
	char why[512];

	(void)state;
	/* the audio function still has its driver: not viable, and we say who */
	assert_int_equal(pci_group_check(&paths, "0000:01:00.0", why, sizeof(why)), -EBUSY);
	assert_non_null(strstr(why, "IOMMU group 7"));
	assert_non_null(strstr(why, "0000:01:00.1 (bound to snd_hda_intel)"));
	/* the same device itself does not count, only the others */
	assert_null(strstr(why, "0000:01:00.0 (bound"));
	fake_sysfs_set_driver(&fs, "0000:01:00.1", "vfio-pci");
	assert_int_equal(pci_group_check(&paths, "0000:01:00.0", why, sizeof(why)), 0);
	fake_sysfs_set_driver(&fs, "0000:01:00.1", "");
	assert_int_equal(pci_group_check(&paths, "0000:01:00.0", why, sizeof(why)), 0);
	fake_sysfs_set_driver(&fs, "0000:01:00.1", "snd_hda_intel");
	/* no IOMMU at all */
	assert_int_equal(pci_group_check(&paths, "0000:00:1f.0", why, sizeof(why)), -ENOENT);
	assert_non_null(strstr(why, "intel_iommu=on"));
}

/*
 * The kernel's part of a bind: a write of a BDF to drivers/X/unbind detaches
 * X from it; a write to drivers_probe binds the device to its
 * driver_override, or, with none, to the driver whose id table matches it
 * (natural_driver()). It consumes each write (the file is emptied) and logs
 * what it did, so a test can say what the kernel was told.
 */
struct fake_kernel {
	pthread_t th;
	int stop;
	const char *refuse; /* a BDF vfio-pci refuses */
	pthread_mutex_t lock;
	char log[2048]; /* "probe BDF->DRIVER;" per probe, under @lock */
};

static struct fake_kernel kern;

static const char *natural_driver(const char *bdf)
{
	static const char *const table[][2] = {
		{ "0000:01:00.0", "nouveau" },
		{ "0000:01:00.1", "snd_hda_intel" },
		{ "0000:02:00.0", "nvme" },
		{ "0000:03:00.0", "virtio-pci" },
	};

	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (!strcmp(table[i][0], bdf))
			return table[i][1];
	return "";
}

static void kernel_log(struct fake_kernel *k, const char *fmt, const char *a, const char *b)
{
	pthread_mutex_lock(&k->lock);
	snprintf(k->log + strlen(k->log), sizeof(k->log) - strlen(k->log), fmt, a, b);
	pthread_mutex_unlock(&k->lock);
}

static void kernel_unbinds(struct fake_kernel *k)
{
	char p[PATH_MAX + 64], bdf[64];
	struct pci_dev_desc d;
	struct dirent *e;
	DIR *dir;

	snprintf(p, sizeof(p), "%s/bus/pci/drivers", fs.sys);
	dir = opendir(p);
	while (dir && (e = readdir(dir))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/bus/pci/drivers/%s/unbind", fs.sys, e->d_name);
		fs_read(p, bdf, sizeof(bdf));
		if (!bdf[0])
			continue;
		fs_write(p, "");
		if (pci_describe(&paths, bdf, &d) == 0 && !strcmp(d.driver, e->d_name)) {
			fake_sysfs_set_driver(&fs, bdf, "");
			kernel_log(k, "unbind %s from %s;", bdf, e->d_name);
		}
	}
	if (dir)
		closedir(dir);
}

static void *kernel_main(void *arg)
{
	struct fake_kernel *k = arg;
	char p[PATH_MAX + 64], probe[64], ovr[64];

	while (!__atomic_load_n(&k->stop, __ATOMIC_ACQUIRE)) {
		const char *want;

		kernel_unbinds(k);
		snprintf(p, sizeof(p), "%s/bus/pci/drivers_probe", fs.sys);
		fs_read(p, probe, sizeof(probe));
		if (!probe[0]) {
			usleep(2000);
			continue;
		}
		fs_write(p, "");
		snprintf(p, sizeof(p), "%s/bus/pci/devices/%s/driver_override", fs.sys, probe);
		fs_read(p, ovr, sizeof(ovr));
		ovr[strcspn(ovr, "\n")] = '\0';
		want = ovr[0] && strcmp(ovr, "(null)") ? ovr : natural_driver(probe);
		if (k->refuse && !strcmp(k->refuse, probe) && !strcmp(want, "vfio-pci"))
			want = "";
		if (want[0])
			fake_sysfs_set_driver(&fs, probe, want);
		kernel_log(k, "probe %s->%s;", probe, want[0] ? want : "none");
	}
	return NULL;
}

static void kernel_start(const char *refuse)
{
	memset(&kern, 0, sizeof(kern));
	kern.refuse = refuse;
	pthread_mutex_init(&kern.lock, NULL);
	pthread_create(&kern.th, NULL, kernel_main, &kern);
}

static void kernel_stop(void)
{
	__atomic_store_n(&kern.stop, 1, __ATOMIC_RELEASE);
	pthread_join(kern.th, NULL);
	pthread_mutex_destroy(&kern.lock);
}

static bool kernel_saw(const char *what)
{
	bool r;

	pthread_mutex_lock(&kern.lock);
	r = strstr(kern.log, what) != NULL;
	pthread_mutex_unlock(&kern.lock);
	return r;
}

/* A device's driver_override, driver and bind record, for "nothing changed". */
struct dev_snapshot {
	char override[64], driver[64];
	bool recorded;
};

static void snapshot(const char *bdf, struct dev_snapshot *s)
{
	char p[PATH_MAX + 64];
	struct pci_dev_desc d;

	snprintf(p, sizeof(p), "%s/bus/pci/devices/%s/driver_override", fs.sys, bdf);
	fs_read(p, s->override, sizeof(s->override));
	assert_int_equal(pci_describe(&paths, bdf, &d), 0);
	snprintf(s->driver, sizeof(s->driver), "%s", d.driver);
	snprintf(p, sizeof(p), "%s/%s.driver", fs.state, bdf);
	s->recorded = access(p, F_OK) == 0;
}

static void assert_unchanged(const char *bdf, const struct dev_snapshot *before)
{
	struct dev_snapshot now;

	snapshot(bdf, &now);
	assert_string_equal(now.override, before->override);
	assert_string_equal(now.driver, before->driver);
	assert_int_equal(now.recorded, before->recorded);
}

/* @bdf is on @drv, its driver_override cleared and its bind record gone. */
static void assert_given_back(const char *bdf, const char *drv)
{
	char p[PATH_MAX + 64], val[64];
	struct pci_dev_desc d;

	assert_int_equal(pci_describe(&paths, bdf, &d), 0);
	assert_string_equal(d.driver, drv);
	snprintf(p, sizeof(p), "%s/bus/pci/devices/%s/driver_override", fs.sys, bdf);
	fs_read(p, val, sizeof(val));
	assert_string_equal(val, "\n"); /* a lone newline clears the override */
	snprintf(p, sizeof(p), "%s/%s.driver", fs.state, bdf);
	assert_int_equal(access(p, F_OK), -1);
}

static int bind1(const char *bdf, unsigned flags, char *why, size_t len)
{
	const char *v[] = { bdf };

	return pci_bind_vfio(&paths, v, 1, flags, why, len);
}

static void test_bind_needs_vfio_module(void **state)
{
	struct dev_snapshot before;
	char why[512];

	(void)state;
	snapshot("0000:02:00.0", &before);
	assert_int_equal(bind1("0000:02:00.0", 0, why, sizeof(why)), -ENOENT);
	assert_non_null(strstr(why, "modprobe vfio-pci"));
	assert_unchanged("0000:02:00.0", &before);
	assert_int_equal(bind1("0000:09:00.0", 0, why, sizeof(why)), -ENODEV);
	assert_non_null(strstr(why, "no PCI device 0000:09:00.0"));
	assert_int_equal(bind1("nvme0", 0, why, sizeof(why)), -EINVAL);
}

static void test_bind_sequence(void **state)
{
	char why[512] = "", p[PATH_MAX + 64], val[64], back[64];
	struct pci_dev_desc d;

	(void)state;
	fake_sysfs_driver(&fs, "vfio-pci");
	kernel_start(NULL);
	assert_int_equal(bind1("02:00.0", 0, why, sizeof(why)), 0);
	/* what the kernel was told, in order: override, unbind, probe */
	snprintf(p, sizeof(p), "%s/bus/pci/devices/0000:02:00.0/driver_override", fs.sys);
	fs_read(p, val, sizeof(val));
	assert_string_equal(val, "vfio-pci");
	assert_true(kernel_saw("unbind 0000:02:00.0 from nvme;probe 0000:02:00.0->vfio-pci;"));
	assert_int_equal(pci_describe(&paths, "0000:02:00.0", &d), 0);
	assert_string_equal(d.driver, "vfio-pci");
	/* the driver it had is recorded for the give-back */
	snprintf(p, sizeof(p), "%s/0000:02:00.0.driver", fs.state);
	fs_read(p, val, sizeof(val));
	assert_string_equal(val, "nvme");
	/* bound already: nothing to do */
	assert_int_equal(bind1("0000:02:00.0", 0, why, sizeof(why)), 0);

	/* unbind: the driver told to let go, the device back on nvme, the
	 * override cleared, the record gone */
	assert_int_equal(pci_unbind_vfio(&paths, "0000:02:00.0", 0, back, sizeof(back), why,
					 sizeof(why)), 0);
	assert_string_equal(back, "nvme");
	assert_true(kernel_saw("unbind 0000:02:00.0 from vfio-pci;probe 0000:02:00.0->nvme;"));
	assert_given_back("0000:02:00.0", "nvme");
	assert_int_equal(pci_unbind_vfio(&paths, "0000:09:00.0", 0, back, sizeof(back), why,
					 sizeof(why)), -ENODEV);
	kernel_stop();
}

/* The record wins over the id table: a device bound from pci-stub goes back
 * to pci-stub; one bound from no driver is left without one; one without a
 * record goes to whatever the kernel's probe picks. */
static void test_unbind_gives_back_the_recorded_driver(void **state)
{
	char why[512] = "", back[64];
	struct pci_dev_desc d;

	(void)state;
	fake_sysfs_driver(&fs, "vfio-pci");
	fake_sysfs_set_driver(&fs, "0000:02:00.0", "pci-stub");
	fake_sysfs_device(&fs, "0000:05:00.0", 0x1af4, 0x1000, 0x020000, 5, NULL);
	kernel_start(NULL);
	assert_int_equal(bind1("0000:02:00.0", 0, why, sizeof(why)), 0);
	assert_int_equal(bind1("0000:05:00.0", 0, why, sizeof(why)), 0);
	assert_int_equal(pci_unbind_vfio(&paths, "0000:02:00.0", 0, back, sizeof(back), why,
					 sizeof(why)), 0);
	assert_string_equal(back, "pci-stub");
	assert_int_equal(pci_describe(&paths, "0000:02:00.0", &d), 0);
	assert_string_equal(d.driver, "pci-stub");
	assert_int_equal(pci_unbind_vfio(&paths, "0000:05:00.0", 0, back, sizeof(back), why,
					 sizeof(why)), 0);
	assert_string_equal(back, "");
	assert_false(kernel_saw("probe 0000:05:00.0->none;"));

	/* a bind that failed after the unbind left the device without a driver,
	 * and the record: unbind still gives it back */
	{
		char rp[PATH_MAX + 64];

		fake_sysfs_set_driver(&fs, "0000:02:00.0", "");
		snprintf(rp, sizeof(rp), "%s/0000:02:00.0.driver", fs.state);
		fs_write(rp, "pci-stub");
		assert_int_equal(pci_unbind_vfio(&paths, "0000:02:00.0", 0, back, sizeof(back), why,
						 sizeof(why)), 0);
		assert_string_equal(back, "pci-stub");
		assert_int_equal(access(rp, F_OK), -1);
	}

	/* no record (bound by another tool): the kernel's choice, nvme */
	fake_sysfs_set_driver(&fs, "0000:02:00.0", "vfio-pci");
	assert_int_equal(pci_unbind_vfio(&paths, "0000:02:00.0", 0, back, sizeof(back), why,
					 sizeof(why)), 0);
	assert_string_equal(back, "nvme");
	kernel_stop();
}

static void test_unbind_refuses_a_foreign_driver(void **state)
{
	char why[512] = "", back[64], p[PATH_MAX + 64], val[64];
	struct dev_snapshot before;

	(void)state;
	fake_sysfs_device(&fs, "0000:03:00.0", 0x1af4, 0x1000, 0x020000, 4, "virtio-pci");
	snapshot("0000:03:00.0", &before);
	assert_int_equal(pci_unbind_vfio(&paths, "0000:03:00.0", 0, back, sizeof(back), why,
					 sizeof(why)), -EBUSY);
	assert_non_null(strstr(why, "bound to virtio-pci, not vfio-pci"));
	assert_non_null(strstr(why, "--force"));
	assert_unchanged("0000:03:00.0", &before);
	snprintf(p, sizeof(p), "%s/bus/pci/drivers/virtio-pci/unbind", fs.sys);
	fs_read(p, val, sizeof(val));
	assert_string_equal(val, "");
	/* --force: off its driver, and nothing probes it back */
	kernel_start(NULL);
	assert_int_equal(pci_unbind_vfio(&paths, "0000:03:00.0", PCI_BIND_FORCE, back, sizeof(back),
					 why, sizeof(why)), 0);
	assert_true(kernel_saw("unbind 0000:03:00.0 from virtio-pci;"));
	assert_false(kernel_saw("probe 0000:03:00.0"));
	kernel_stop();
}

static void test_unbind_refuses_a_held_device(void **state)
{
	char why[512] = "", back[64], who[256], grp[PATH_MAX];
	struct dev_snapshot before;

	(void)state;
	fake_sysfs_driver(&fs, "vfio-pci");
	fake_sysfs_set_driver(&fs, "0000:02:00.0", "vfio-pci");
	snprintf(grp, sizeof(grp), "%s/vfio/3", fs.dev);
	fake_proc_fd(&fs, 4242, "ugpu-demo\n", 7, grp);
	fake_proc_fd(&fs, 4243, "bash\n", 1, "/dev/pts/0");
	assert_int_equal(pci_holders(&paths, "0000:02:00.0", who, sizeof(who)), 1);
	assert_string_equal(who, "pid 4242 (ugpu-demo)");
	assert_int_equal(pci_holders(&paths, "0000:01:00.0", who, sizeof(who)), 0);
	snapshot("0000:02:00.0", &before);
	assert_int_equal(pci_unbind_vfio(&paths, "0000:02:00.0", 0, back, sizeof(back), why,
					 sizeof(why)), -EBUSY);
	assert_non_null(strstr(why, "in use by pid 4242 (ugpu-demo)"));
	assert_unchanged("0000:02:00.0", &before);
	kernel_start(NULL);
	assert_int_equal(pci_unbind_vfio(&paths, "0000:02:00.0", PCI_BIND_FORCE, back, sizeof(back),
					 why, sizeof(why)), 0);
	assert_string_equal(back, "nvme");
	kernel_stop();
}

static void test_bind_refuses_a_group_that_would_not_be_viable(void **state)
{
	const char *both[] = { "0000:01:00.0", "01:00.1" };
	struct dev_snapshot a, b;
	struct pci_dev_desc d;
	char why[1024];

	(void)state;
	fake_sysfs_driver(&fs, "vfio-pci");
	snapshot("0000:01:00.0", &a);
	snapshot("0000:01:00.1", &b);
	/* the GPU alone: its audio function keeps the group from vfio */
	assert_int_equal(bind1("0000:01:00.0", 0, why, sizeof(why)), -EBUSY);
	assert_non_null(strstr(why, "0000:01:00.1 (bound to snd_hda_intel)"));
	assert_non_null(strstr(why, "bind them together"));
	assert_int_equal(bind1("0000:01:00.0", 0, NULL, 0), -EBUSY); /* @why may be NULL */
	assert_unchanged("0000:01:00.0", &a);
	assert_unchanged("0000:01:00.1", &b);
	/* the group together is fine */
	kernel_start(NULL);
	assert_int_equal(pci_bind_vfio(&paths, both, 2, 0, why, sizeof(why)), 0);
	assert_int_equal(pci_describe(&paths, "0000:01:00.1", &d), 0);
	assert_string_equal(d.driver, "vfio-pci");
	assert_int_equal(pci_group_check(&paths, "0000:01:00.0", why, sizeof(why)), 0);
	kernel_stop();
}

static void test_bind_refuses_a_device_in_use(void **state)
{
	struct dev_snapshot before;
	char why[1024], p[PATH_MAX + 64];

	(void)state;
	fake_sysfs_driver(&fs, "vfio-pci");
	/* an NVMe with a mounted partition, a swap partition and an LVM holder */
	fake_sysfs_class_dev(&fs, "0000:02:00.0", "nvme/nvme0/nvme0n1", "block", "dev", "259:0\n");
	fake_sysfs_class_dev(&fs, "0000:02:00.0", "nvme/nvme0/nvme0n1/nvme0n1p1", "block", "dev",
			     "259:1\n");
	fake_sysfs_class_dev(&fs, "0000:02:00.0", "nvme/nvme0/nvme0n1/nvme0n1p2", "block", "dev",
			     "259:2\n");
	assert_int_equal(pci_in_use(&paths, "0000:02:00.0", why, sizeof(why)), 0);
	snprintf(p, sizeof(p), "%s/self/mountinfo", fs.proc);
	fs_write(p, "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
		    "40 22 259:1 / /data rw,relatime shared:5 - xfs /dev/nvme0n1p1 rw\n");
	snprintf(p, sizeof(p), "%s/swaps", fs.proc);
	fs_write(p, "Filename\tType\tSize\tUsed\tPriority\n/dev/nvme0n1p2 partition\t100\t0\t-2\n");
	snprintf(p, sizeof(p), "%s/bus/pci/devices/0000:02:00.0/nvme/nvme0/nvme0n1/holders/dm-0",
		 fs.sys);
	fs_mkdirs(p);
	snapshot("0000:02:00.0", &before);
	assert_int_equal(bind1("0000:02:00.0", 0, why, sizeof(why)), -EBUSY);
	assert_non_null(strstr(why, "/dev/nvme0n1p1 is mounted on /data"));
	assert_non_null(strstr(why, "/dev/nvme0n1p2 is active swap"));
	assert_non_null(strstr(why, "/dev/nvme0n1 is held by dm-0"));
	assert_non_null(strstr(why, "nothing was changed"));
	assert_unchanged("0000:02:00.0", &before);

	/* a network card whose interface is up, then down */
	fake_sysfs_device(&fs, "0000:03:00.0", 0x1af4, 0x1000, 0x020000, 4, "virtio-pci");
	fake_sysfs_class_dev(&fs, "0000:03:00.0", "virtio0/net/eth0", "net", "flags", "0x1003\n");
	snapshot("0000:03:00.0", &before);
	assert_int_equal(bind1("0000:03:00.0", 0, why, sizeof(why)), -EBUSY);
	assert_non_null(strstr(why, "network interface eth0 is up"));
	assert_unchanged("0000:03:00.0", &before);
	fake_sysfs_class_dev(&fs, "0000:03:00.0", "virtio0/net/eth0", "net", "flags", "0x1002\n");
	assert_int_equal(pci_in_use(&paths, "0000:03:00.0", why, sizeof(why)), 0);

	/* --force goes ahead */
	kernel_start(NULL);
	assert_int_equal(bind1("0000:02:00.0", PCI_BIND_FORCE, why, sizeof(why)), 0);
	kernel_stop();
}

static void test_bind_kernel_refuses(void **state)
{
	char why[512];
	struct timespec a, b;

	(void)state;
	fake_sysfs_driver(&fs, "vfio-pci");
	/* no IOMMU group: refused before anything changes */
	assert_int_equal(bind1("0000:00:1f.0", 0, why, sizeof(why)), -ENOENT);
	assert_non_null(strstr(why, "no IOMMU group"));
	/* nobody binds it: bounded wait, then a clear error */
	fake_sysfs_device(&fs, "0000:06:00.0", 0x8086, 0x5678, 0x030000, 6, NULL);
	kernel_start("0000:06:00.0");
	clock_gettime(CLOCK_MONOTONIC, &a);
	assert_int_equal(bind1("0000:06:00.0", 0, why, sizeof(why)), -EIO);
	clock_gettime(CLOCK_MONOTONIC, &b);
	assert_true(b.tv_sec - a.tv_sec < 5);
	assert_non_null(strstr(why, "did not bind to vfio-pci"));
	assert_non_null(strstr(why, "it is back on no driver, as before"));
	kernel_stop();
}

/* The kernel's refusal comes after the old driver let go: the bind puts the
 * device back on it, and says so. */
static void test_bind_refused_gives_back(void **state)
{
	char why[1024];

	(void)state;
	fake_sysfs_driver(&fs, "vfio-pci");
	fake_sysfs_device(&fs, "0000:03:00.0", 0x1af4, 0x1000, 0x020000, 4, "virtio-pci");
	kernel_start("0000:03:00.0");
	assert_int_equal(bind1("0000:03:00.0", 0, why, sizeof(why)), -EIO);
	assert_non_null(strstr(why, "did not bind to vfio-pci"));
	assert_non_null(strstr(why, "it is back on virtio-pci"));
	assert_true(kernel_saw("unbind 0000:03:00.0 from virtio-pci;probe 0000:03:00.0->none;"
			       "probe 0000:03:00.0->virtio-pci;"));
	kernel_stop();
	assert_given_back("0000:03:00.0", "virtio-pci");
}

static void test_memlock(void **state)
{
	char why[512] = "";

	(void)state;
	assert_int_equal(vfio_memlock_decide(1 << 20, 8 << 20, false, why, sizeof(why)), 0);
	assert_int_equal(vfio_memlock_decide(1ull << 32, UINT64_MAX, false, why, sizeof(why)), 0);
	assert_int_equal(vfio_memlock_decide(1ull << 32, 8 << 20, true, why, sizeof(why)), 0);
	assert_int_equal(vfio_memlock_decide(256ull << 20, 8 << 20, false, why, sizeof(why)), -ENOMEM);
	assert_non_null(strstr(why, "RLIMIT_MEMLOCK is 8192 KiB"));
	assert_non_null(strstr(why, "needs 262144 KiB"));
	assert_non_null(strstr(why, "ulimit -l"));
	/* the live check answers something sane for a tiny need */
	assert_int_equal(vfio_check_memlock(4096, why, sizeof(why)), 0);
}

/* The CLI on the same tree (skipped when the binary was not built). */
static int run_cli(const char *args, char *out, size_t len)
{
	const char *bd = getenv("UGPU_BUILD_DIR");
	char cmd[PATH_MAX * 3];
	FILE *f;
	size_t n;
	int st;

	snprintf(cmd, sizeof(cmd), "%s/ugpuctl", bd ? bd : ".");
	if (!bd || access(cmd, X_OK))
		return -1;
	snprintf(cmd, sizeof(cmd),
		 "UGPU_SYSFS_ROOT='%s' UGPU_DEV_ROOT='%s' UGPU_PROC_ROOT='%s' UGPU_STATE_DIR='%s' '%s/ugpuctl' %s 2>&1",
		 fs.sys, fs.dev, fs.proc, fs.state, bd, args);
	f = popen(cmd, "r");
	n = fread(out, 1, len - 1, f);
	out[n] = '\0';
	st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void test_cli(void **state)
{
	char out[4096], grp[PATH_MAX];

	(void)state;
	if (run_cli("--help", out, sizeof(out)) < 0)
		skip();
	assert_non_null(strstr(out, "bind BDF"));
	assert_int_equal(run_cli("list", out, sizeof(out)), 0);
	assert_non_null(strstr(out, "0000:01:00.0  10de:2204 030000 7     nouveau"));
	assert_non_null(strstr(out, "0000:00:1f.0  8086:1234 060100 -     -"));
	assert_int_equal(run_cli("list --json", out, sizeof(out)), 0);
	assert_non_null(strstr(out, "{\"bdf\":\"0000:01:00.0\",\"vendor\":\"10de\",\"device\":\"2204\","
				    "\"class\":\"030000\",\"iommu_group\":7,\"driver\":\"nouveau\"}\n"));
	assert_non_null(strstr(out, "{\"bdf\":\"0000:00:1f.0\",\"vendor\":\"8086\",\"device\":\"1234\","
				    "\"class\":\"060100\",\"iommu_group\":null,\"driver\":null}\n"));
	assert_null(strstr(out, "BDF"));
	assert_int_equal(run_cli("bind 0000:09:00.0", out, sizeof(out)), 1);
	assert_non_null(strstr(out, "no PCI device 0000:09:00.0"));
	assert_int_equal(run_cli("bind", out, sizeof(out)), 2);
	assert_int_equal(run_cli("frobnicate", out, sizeof(out)), 2);
	assert_int_equal(run_cli("bind --frob 0000:02:00.0", out, sizeof(out)), 2);
	assert_non_null(strstr(out, "unknown option '--frob'"));

	/* the refusals, each changing nothing, and the give-back */
	fake_sysfs_driver(&fs, "vfio-pci");
	assert_int_equal(run_cli("bind 0000:01:00.0", out, sizeof(out)), 1);
	assert_non_null(strstr(out, "0000:01:00.1 (bound to snd_hda_intel)"));
	assert_int_equal(run_cli("unbind 0000:02:00.0", out, sizeof(out)), 1);
	assert_non_null(strstr(out, "bound to nvme, not vfio-pci"));
	kernel_start(NULL);
	assert_int_equal(run_cli("bind 02:00.0", out, sizeof(out)), 0);
	assert_non_null(strstr(out, "02:00.0 bound to vfio-pci"));
	assert_int_equal(run_cli("unbind 0000:02:00.0", out, sizeof(out)), 0);
	assert_non_null(strstr(out, "0000:02:00.0 unbound from vfio-pci, back on nvme"));
	kernel_stop();

	/* status: read-only, from sysfs and /proc */
	assert_int_equal(run_cli("status 0000:01:00.0", out, sizeof(out)), 0);
	assert_non_null(strstr(out, "id               10de:2204"));
	assert_non_null(strstr(out, "driver           nouveau"));
	assert_non_null(strstr(out, "iommu_group      7"));
	assert_non_null(strstr(out, "usable           after ugpuctl bind"));
	assert_int_equal(run_cli("status --json pci:0000:00:1f.0", out, sizeof(out)), 0);
	assert_non_null(strstr(out, "\"iommu_group\":null"));
	assert_non_null(strstr(out, "\"usable\":\"no (no IOMMU group)\""));
	fake_sysfs_set_driver(&fs, "0000:02:00.0", "vfio-pci");
	snprintf(grp, sizeof(grp), "%s/vfio/3", fs.dev);
	fake_proc_fd(&fs, 4242, "ugpu-demo\n", 7, grp);
	assert_int_equal(run_cli("status 02:00.0", out, sizeof(out)), 0);
	assert_non_null(strstr(out, "held_by          pid 4242 (ugpu-demo)"));
	assert_non_null(strstr(out, "usable           yes (on vfio-pci)"));
	assert_int_equal(run_cli("status 0000:09:00.0", out, sizeof(out)), 1);
	assert_int_equal(run_cli("status vfio-user:/x", out, sizeof(out)), 2);
	assert_non_null(strstr(out, "seen only through its owner"));
	assert_int_equal(run_cli("status --control /x 0000:01:00.0", out, sizeof(out)), 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bdf_normalize),
		cmocka_unit_test_setup_teardown(test_list_and_describe, setup, teardown),
		cmocka_unit_test(test_list_empty_tree),
		cmocka_unit_test_setup_teardown(test_group_viability, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bind_needs_vfio_module, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bind_sequence, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bind_kernel_refuses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bind_refused_gives_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unbind_gives_back_the_recorded_driver, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_unbind_refuses_a_foreign_driver, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unbind_refuses_a_held_device, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bind_refuses_a_group_that_would_not_be_viable,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_bind_refuses_a_device_in_use, setup, teardown),
		cmocka_unit_test(test_memlock),
		cmocka_unit_test_setup_teardown(test_cli, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
