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
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

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

/* The kernel's part of a bind: drivers_probe with a driver_override set
 * binds the device to that driver. */
struct fake_kernel {
	const char *bdf;
	volatile int stop;
};

static void *kernel_main(void *arg)
{
	struct fake_kernel *k = arg;
	char p[PATH_MAX + 64], probe[64], ovr[64];

	for (int i = 0; i < 400 && !__atomic_load_n(&k->stop, __ATOMIC_ACQUIRE); i++) {
		snprintf(p, sizeof(p), "%s/bus/pci/drivers_probe", fs.sys);
		fs_read(p, probe, sizeof(probe));
		snprintf(p, sizeof(p), "%s/bus/pci/devices/%s/driver_override", fs.sys, k->bdf);
		fs_read(p, ovr, sizeof(ovr));
		if (!strcmp(probe, k->bdf) && !strcmp(ovr, "vfio-pci")) {
			fake_sysfs_set_driver(&fs, k->bdf, "vfio-pci");
			break;
		}
		usleep(5000);
	}
	return NULL;
}

static void test_bind_needs_vfio_module(void **state)
{
	char why[512];

	(void)state;
	assert_int_equal(pci_bind_vfio(&paths, "0000:02:00.0", why, sizeof(why)), -ENOENT);
	assert_non_null(strstr(why, "modprobe vfio-pci"));
	assert_int_equal(pci_bind_vfio(&paths, "0000:09:00.0", why, sizeof(why)), -ENODEV);
	assert_non_null(strstr(why, "no PCI device 0000:09:00.0"));
	assert_int_equal(pci_bind_vfio(&paths, "nvme0", why, sizeof(why)), -EINVAL);
}

static void test_bind_sequence(void **state)
{
	struct fake_kernel k = { .bdf = "0000:02:00.0" };
	char why[512] = "", p[PATH_MAX + 64], val[64];
	struct pci_dev_desc d;
	pthread_t th;

	(void)state;
	fake_sysfs_driver(&fs, "vfio-pci");
	pthread_create(&th, NULL, kernel_main, &k);
	assert_int_equal(pci_bind_vfio(&paths, "02:00.0", why, sizeof(why)), 0);
	pthread_join(th, NULL);
	/* what the kernel was told, in order: override, unbind, probe */
	snprintf(p, sizeof(p), "%s/bus/pci/devices/0000:02:00.0/driver_override", fs.sys);
	fs_read(p, val, sizeof(val));
	assert_string_equal(val, "vfio-pci");
	snprintf(p, sizeof(p), "%s/bus/pci/drivers/nvme/unbind", fs.sys);
	fs_read(p, val, sizeof(val));
	assert_string_equal(val, "0000:02:00.0");
	snprintf(p, sizeof(p), "%s/bus/pci/drivers_probe", fs.sys);
	fs_read(p, val, sizeof(val));
	assert_string_equal(val, "0000:02:00.0");
	assert_int_equal(pci_describe(&paths, "0000:02:00.0", &d), 0);
	assert_string_equal(d.driver, "vfio-pci");
	/* bound already: nothing to do */
	assert_int_equal(pci_bind_vfio(&paths, "0000:02:00.0", why, sizeof(why)), 0);

	/* unbind: override cleared, the driver told to let go */
	snprintf(p, sizeof(p), "%s/bus/pci/drivers/vfio-pci/unbind", fs.sys);
	fs_write(p, "");
	assert_int_equal(pci_unbind_vfio(&paths, "0000:02:00.0", why, sizeof(why)), 0);
	fs_read(p, val, sizeof(val));
	assert_string_equal(val, "0000:02:00.0");
	snprintf(p, sizeof(p), "%s/bus/pci/devices/0000:02:00.0/driver_override", fs.sys);
	fs_read(p, val, sizeof(val));
	assert_string_equal(val, "\n");
	assert_int_equal(pci_unbind_vfio(&paths, "0000:09:00.0", why, sizeof(why)), -ENODEV);
}

static void test_bind_kernel_refuses(void **state)
{
	char why[512];
	struct timespec a, b;

	(void)state;
	fake_sysfs_driver(&fs, "vfio-pci");
	/* nobody binds it: bounded wait, then a clear error */
	clock_gettime(CLOCK_MONOTONIC, &a);
	assert_int_equal(pci_bind_vfio(&paths, "0000:00:1f.0", why, sizeof(why)), -EIO);
	clock_gettime(CLOCK_MONOTONIC, &b);
	assert_true(b.tv_sec - a.tv_sec < 5);
	assert_non_null(strstr(why, "did not bind to vfio-pci"));
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
	char cmd[PATH_MAX * 2];
	FILE *f;
	size_t n;
	int st;

	snprintf(cmd, sizeof(cmd), "%s/ugpuctl", bd ? bd : ".");
	if (!bd || access(cmd, X_OK))
		return -1;
	snprintf(cmd, sizeof(cmd), "UGPU_SYSFS_ROOT='%s' '%s/ugpuctl' %s 2>&1", fs.sys, bd, args);
	f = popen(cmd, "r");
	n = fread(out, 1, len - 1, f);
	out[n] = '\0';
	st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void test_cli(void **state)
{
	char out[4096];

	(void)state;
	if (run_cli("--help", out, sizeof(out)) < 0)
		skip();
	assert_non_null(strstr(out, "bind BDF"));
	assert_int_equal(run_cli("list", out, sizeof(out)), 0);
	assert_non_null(strstr(out, "0000:01:00.0  10de:2204 030000 7     nouveau"));
	assert_non_null(strstr(out, "0000:00:1f.0  8086:1234 060100 -     -"));
	assert_int_equal(run_cli("bind 0000:09:00.0", out, sizeof(out)), 1);
	assert_non_null(strstr(out, "no PCI device 0000:09:00.0"));
	assert_int_equal(run_cli("bind", out, sizeof(out)), 2);
	assert_int_equal(run_cli("frobnicate", out, sizeof(out)), 2);
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
		cmocka_unit_test(test_memlock),
		cmocka_unit_test_setup_teardown(test_cli, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
