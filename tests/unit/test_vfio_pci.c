/* SPDX-License-Identifier: MIT */
/*
 * Kernel vfio-pci transport, the parts that are honest to test without VFIO:
 * the discovery half of open on a fake sysfs + /dev tree (each failure says
 * what to do), the first ioctl refusing a file that is not a container, and
 * the parsers of the kernel's region and IOMMU capability chains fed with
 * buffers laid out with <linux/vfio.h>'s own structs. The ioctl sequence
 * itself runs in the VM stage against the real kernel.
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
#include <unistd.h>

#include <cmocka.h>

#include <linux/vfio.h>

#include <ugpu/ugpu.h>

#include "vfio/vfio_pci.h"
#include "unit/vfio_fake_sysfs.h"

static struct fake_sysfs fs;
static struct pci_paths paths;
static char last_log[1024];
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

static void log_hook(void *user, enum ugpu_log_level level, const char *msg)
{
	(void)user;
	(void)level;
	pthread_mutex_lock(&log_mu);
	snprintf(last_log, sizeof(last_log), "%s", msg);
	pthread_mutex_unlock(&log_mu);
}

static int setup(void **state)
{
	(void)state;
	fake_sysfs_init(&fs);
	paths.sysfs = fs.sys;
	paths.dev = fs.dev;
	fake_sysfs_device(&fs, "0000:03:00.0", 0x5547, 0x0001, 0x030200, 7, "vfio-pci");
	fake_sysfs_device(&fs, "0000:04:00.0", 0x144d, 0xa808, 0x010802, 3, "nvme");
	fake_sysfs_device(&fs, "0000:05:00.0", 0x8086, 0x1234, 0x030000, -1, "vfio-pci");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	fake_sysfs_destroy(&fs);
	return 0;
}

static void add_container(void)
{
	char p[512];

	snprintf(p, sizeof(p), "%s/vfio", fs.dev);
	fs_mkdirs(p);
	snprintf(p, sizeof(p), "%s/vfio/vfio", fs.dev);
	fs_write(p, "");
}

static void test_locate_errors(void **state)
{
	char gp[512], why[640];
	int g = -1;

	(void)state;
	assert_int_equal(vfio_pci_locate(&paths, "0000:03:00.0", gp, sizeof(gp), &g, why, sizeof(why)),
			 -ENOENT);
	assert_non_null(strstr(why, "no VFIO in this kernel"));
	assert_non_null(strstr(why, "load vfio-pci"));
	add_container();
	assert_int_equal(vfio_pci_locate(&paths, "0000:09:00.0", gp, sizeof(gp), &g, why, sizeof(why)),
			 -ENODEV);
	assert_int_equal(vfio_pci_locate(&paths, "0000:05:00.0", gp, sizeof(gp), &g, why, sizeof(why)),
			 -ENOENT);
	assert_non_null(strstr(why, "no IOMMU"));
	assert_non_null(strstr(why, "intel_iommu=on"));
	assert_int_equal(vfio_pci_locate(&paths, "0000:04:00.0", gp, sizeof(gp), &g, why, sizeof(why)),
			 -EBUSY);
	assert_non_null(strstr(why, "bound to nvme"));
	assert_non_null(strstr(why, "ugpuctl bind 0000:04:00.0"));
	assert_int_equal(vfio_pci_locate(&paths, "bogus", gp, sizeof(gp), &g, why, sizeof(why)), -EINVAL);
	assert_int_equal(vfio_pci_locate(&paths, "03:00.0", gp, sizeof(gp), &g, why, sizeof(why)), 0);
	assert_int_equal(g, 7);
	snprintf(why, sizeof(why), "%s/vfio/7", fs.dev);
	assert_string_equal(gp, why);
}

static void test_open_logs_and_refuses_non_container(void **state)
{
	struct ugpu_context_opts o = { .size = sizeof(o), .log_fn = log_hook, .log_level = UGPU_LOG_WARN };
	struct ugpu_context *ctx;
	struct vfio_dev *dev = NULL;

	(void)state;
	assert_int_equal(ugpu_context_create(&o, &ctx), 0);
	assert_int_equal(vfio_pci_open_paths(ctx, &paths, "0000:03:00.0", &dev), -ENOENT);
	assert_non_null(strstr(last_log, "no VFIO in this kernel"));
	/* a plain file where the container should be: the first ioctl says so */
	add_container();
	assert_int_equal(vfio_pci_open_paths(ctx, &paths, "0000:03:00.0", &dev), -ENOTTY);
	assert_non_null(strstr(last_log, "is not a VFIO container"));
	assert_null(dev);
	/* the real host: no VFIO here (or, in the VM, no such device) */
	{
		int ret = vfio_pci_open(ctx, "0000:ff:1f.7", &dev);

		assert_true(ret == -ENOENT || ret == -ENODEV);
	}
	assert_null(dev);
	ugpu_context_destroy(ctx);
}

static void test_parse_region_sparse(void **state)
{
	uint8_t buf[256] = { 0 };
	struct vfio_region_info kri = {
		.argsz = sizeof(buf),
		.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE |
			 VFIO_REGION_INFO_FLAG_MMAP | VFIO_REGION_INFO_FLAG_CAPS,
		.index = 0,
		.cap_offset = 64,
		.size = 1 << 24,
		.offset = 0x10000000000ull,
	};
	struct vfio_info_cap_header other = { .id = 99, .version = 1, .next = 64 + 32 };
	struct vfio_region_info_cap_sparse_mmap sm = {
		.header = { .id = VFIO_REGION_INFO_CAP_SPARSE_MMAP, .version = 1, .next = 0 },
		.nr_areas = 2,
	};
	struct vfio_region_sparse_mmap_area a[2] = { { 0, 0x3000 }, { 0x4000, 0xffc000 } };
	struct vfio_dev_region_info info;
	uint64_t off;

	(void)state;
	/* an unknown capability first, then the sparse one: the chain is walked */
	memcpy(buf, &kri, sizeof(kri));
	memcpy(buf + 64, &other, sizeof(other));
	memcpy(buf + 96, &sm, sizeof(sm));
	memcpy(buf + 96 + sizeof(sm), a, sizeof(a));
	assert_int_equal(vfio_pci_parse_region(buf, sizeof(buf), &info, &off), 0);
	assert_int_equal(info.size, 1 << 24);
	assert_int_equal(off, 0x10000000000ull);
	assert_int_equal(info.flags, VFIO_REGION_F_READ | VFIO_REGION_F_WRITE | VFIO_REGION_F_MMAP);
	assert_int_equal(info.nr_sparse, 2);
	assert_int_equal(info.sparse[0].size, 0x3000);
	assert_int_equal(info.sparse[1].offset, 0x4000);
	assert_int_equal(info.sparse[1].size, 0xffc000);

	/* an area beyond the region */
	a[1].size = 0x1000000;
	memcpy(buf + 96 + sizeof(sm), a, sizeof(a));
	assert_int_equal(vfio_pci_parse_region(buf, sizeof(buf), &info, &off), -EPROTO);
	/* a chain that loops */
	other.next = 64;
	memcpy(buf + 64, &other, sizeof(other));
	assert_int_equal(vfio_pci_parse_region(buf, sizeof(buf), &info, &off), -EPROTO);
	/* a capability past the end */
	kri.cap_offset = 250;
	memcpy(buf, &kri, sizeof(kri));
	assert_int_equal(vfio_pci_parse_region(buf, sizeof(buf), &info, &off), -EPROTO);
	/* more areas than we keep */
	kri.cap_offset = 64;
	memcpy(buf, &kri, sizeof(kri));
	sm.nr_areas = 9;
	sm.header.next = 0;
	memcpy(buf + 64, &sm, sizeof(sm));
	memset(buf + 64 + sizeof(sm), 0, sizeof(buf) - 64 - sizeof(sm));
	assert_int_equal(vfio_pci_parse_region(buf, sizeof(buf), &info, &off), -E2BIG);
	/* too short for the head */
	assert_int_equal(vfio_pci_parse_region(buf, 8, &info, &off), -EPROTO);
}

static void test_parse_iommu(void **state)
{
	uint8_t buf[256] = { 0 };
	struct vfio_iommu_type1_info ki = {
		.argsz = sizeof(buf),
		.flags = VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS,
		.iova_pgsizes = 0x40201000ull,
		.cap_offset = 32,
	};
	struct vfio_iommu_type1_info_cap_iova_range r = {
		.header = { .id = VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, .version = 1, .next = 128 },
		.nr_iovas = 2,
	};
	struct vfio_iova_range ranges[2] = { { 0, 0xfedfffff }, { 0xfef00000, (1ull << 39) - 1 } };
	struct vfio_iommu_type1_info_dma_avail av = {
		.header = { .id = VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, .version = 1, .next = 0 },
		.avail = 65535,
	};
	struct vfio_iommu_info io;

	(void)state;
	memcpy(buf, &ki, sizeof(ki));
	memcpy(buf + 32, &r, sizeof(r));
	memcpy(buf + 32 + sizeof(r), ranges, sizeof(ranges));
	memcpy(buf + 128, &av, sizeof(av));
	assert_int_equal(vfio_pci_parse_iommu(buf, sizeof(buf), &io), 0);
	assert_int_equal(io.pgsize_mask, 0x40201000ull);
	assert_int_equal(io.max_mappings, 65535);
	assert_int_equal(io.nr_ranges, 2);
	assert_int_equal(io.ranges[0].end, 0xfedfffff);
	assert_int_equal(io.ranges[1].start, 0xfef00000);
	assert_int_equal(io.ranges[1].end, (1ull << 39) - 1);

	/* an old kernel: no caps -> whole space, count unknown */
	ki.flags = VFIO_IOMMU_INFO_PGSIZES;
	memcpy(buf, &ki, sizeof(ki));
	assert_int_equal(vfio_pci_parse_iommu(buf, sizeof(buf), &io), 0);
	assert_int_equal(io.nr_ranges, 1);
	assert_int_equal(io.ranges[0].end, UINT64_MAX);
	assert_int_equal(io.max_mappings, 0);
	/* a range count that does not fit the buffer */
	ki.flags = VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS;
	memcpy(buf, &ki, sizeof(ki));
	r.nr_iovas = 1000;
	memcpy(buf + 32, &r, sizeof(r));
	assert_int_equal(vfio_pci_parse_iommu(buf, sizeof(buf), &io), -EPROTO);
}

/*
 * A kernel call that fails with ENODEV (the device was removed under us)
 * marks the device gone on that first failure, logged once; other errors
 * are passed through as -errno and leave it alone.
 */
static void test_kernel_err_marks_gone(void **state)
{
	struct ugpu_context_opts o = { .size = sizeof(o), .log_level = UGPU_LOG_ERROR,
				       .log_fn = log_hook };
	struct ugpu_context *ctx;
	struct vfio_dev d;

	(void)state;
	assert_int_equal(ugpu_context_create(&o, &ctx), 0);
	memset(&d, 0, sizeof(d));
	d.ctx = ctx;
	snprintf(d.name, sizeof(d.name), "0000:03:00.0");
	pthread_mutex_lock(&log_mu);
	last_log[0] = '\0';
	pthread_mutex_unlock(&log_mu);

	assert_int_equal(vfio_pci_kernel_err(&d, EINVAL), -EINVAL);
	assert_int_equal(vfio_pci_kernel_err(&d, EIO), -EIO);
	assert_int_equal(vfio_pci_kernel_err(&d, ENOSPC), -ENOSPC);
	assert_int_equal(vfio_pci_kernel_err(&d, EBUSY), -EBUSY);
	assert_false(vfio_dev_is_gone(&d));
	pthread_mutex_lock(&log_mu);
	assert_string_equal(last_log, "");
	pthread_mutex_unlock(&log_mu);

	assert_int_equal(vfio_pci_kernel_err(&d, ENODEV), -ENODEV);
	assert_true(vfio_dev_is_gone(&d));
	pthread_mutex_lock(&log_mu);
	assert_non_null(strstr(last_log, "0000:03:00.0"));
	assert_non_null(strstr(last_log, "gone"));
	last_log[0] = '\0';
	pthread_mutex_unlock(&log_mu);
	/* Once gone, it stays gone and is not logged again. */
	assert_int_equal(vfio_pci_kernel_err(&d, ENODEV), -ENODEV);
	assert_int_equal(vfio_pci_kernel_err(&d, EINVAL), -EINVAL);
	assert_true(vfio_dev_is_gone(&d));
	pthread_mutex_lock(&log_mu);
	assert_string_equal(last_log, "");
	pthread_mutex_unlock(&log_mu);
	/* A caller that lost errno still reports a failure. */
	assert_int_equal(vfio_pci_kernel_err(&d, 0), -EIO);
	ugpu_context_destroy(ctx);
}

/*
 * vfio_pci_open_shared() joins the container of a vfio-pci device only
 * (the guest stage's "peer" test uses it for real): anything else is
 * refused before any file is opened.
 */
static void test_open_shared_needs_vfio_pci(void **state)
{
	static const struct vfio_transport_ops other = { .name = "not-vfio-pci" };
	struct vfio_dev d, *dev = NULL;

	(void)state;
	memset(&d, 0, sizeof(d));
	d.ops = &other;
	assert_int_equal(vfio_pci_open_shared(NULL, "0000:03:00.0", NULL, &dev), -EINVAL);
	assert_int_equal(vfio_pci_open_shared(NULL, "0000:03:00.0", &d, &dev), -EINVAL);
	assert_null(dev);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_locate_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_logs_and_refuses_non_container, setup, teardown),
		cmocka_unit_test(test_parse_region_sparse),
		cmocka_unit_test(test_parse_iommu),
		cmocka_unit_test(test_kernel_err_marks_gone),
		cmocka_unit_test(test_open_shared_needs_vfio_pci),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
