/* SPDX-License-Identifier: MIT */
/*
 * ugpuctl suspend | resume.
 *
 * The BOs a suspend must save live in the process that owns the device, so a
 * separate CLI process cannot suspend someone else's device. What these do,
 * honestly (docs/suspend.md):
 *
 *   ugpuctl suspend [--fill-mib N] [--hold-ms MS] [--no-prepare] URI
 *       opens the device itself and runs one full, self-contained cycle:
 *       N MiB of pinned BOs with a known pattern (default 16) plus the
 *       driver's own kernel BOs, prepare, suspend (the device goes to D3cold
 *       and loses VRAM), hold, resume, byte-check; prints every phase with
 *       its timing. For hosts without logind and for checking a device.
 *   ugpuctl resume URI
 *       wakes a device left in D3 (e.g. by an owner that died suspended):
 *       opening it brings it to D0; prints the power state.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ugpu/bo.h>
#include <ugpu/pm.h>

#include "tools/ugpuctl/ugpuctl.h"

static void progress(void *user, enum ugpu_pm_phase ph, uint64_t bos, uint64_t bytes, uint64_t ns,
		     int err)
{
	(void)user;
	printf("  %-17s %6llu BOs %12llu bytes %9.3f ms%s%s\n", ugpu_pm_phase_name(ph),
	       (unsigned long long)bos, (unsigned long long)bytes, ns / 1e6, err ? "  FAILED: " : "",
	       err ? ugpu_strerror(err) : "");
}

#define MAX_FILL_MIB 65536 /* 64 GiB: more than any device this runs on */
#define MAX_HOLD_MS 3600000 /* an hour */

static uint64_t fill_mib = 16, hold_ms;
static bool no_prepare;

static const struct cli_opt suspend_opts[] = {
	{ .name = "fill-mib", .kind = CLI_UINT, .dst = &fill_mib, .arg = "N",
	  .help = "MiB of pinned BOs with a known pattern", .max = MAX_FILL_MIB },
	{ .name = "hold-ms", .kind = CLI_UINT, .dst = &hold_ms, .arg = "MS",
	  .help = "time spent suspended", .max = MAX_HOLD_MS },
	{ .name = "no-prepare", .kind = CLI_FLAG, .dst = &no_prepare,
	  .help = "skip the prepare phase (backups allocated inside the window)" },
	{ 0 },
};

static const struct cli_cmd suspend_cli = {
	.prog = "ugpuctl suspend",
	.args = "URI",
	.summary = "run one suspend/resume cycle (own pinned BOs) and print its phases",
	.about = "Opens the device (vfio-user:PATH or pci:BDF), fills pinned BOs, then prepare,\n"
		 "suspend (D3cold: VRAM is lost), hold, resume and a byte check; every phase\n"
		 "with its timing (docs/suspend.md).",
	.opts = suspend_opts,
	.min_pos = 1,
	.max_pos = 1,
};

static int run_suspend(int argc, char **argv)
{
	struct ugpu_pm_opts po = { .size = sizeof(po), .progress = progress };
	struct ugpu_pm_stats st = { .size = sizeof(st) };
	struct ugpu_context *ctx = NULL;
	struct ugpu_device *dev = NULL;
	struct ugpu_bo **bo = NULL;
	unsigned long hold, i, n = 0;
	bool prepare;
	uint64_t *buf = NULL, w;
	char *uri;
	unsigned npos;
	int ret, rc = 1;

	ret = cli_parse(&suspend_cli, argc, argv, &uri, &npos);
	if (ret != CLI_CONTINUE)
		return ret;
	hold = (unsigned long)hold_ms;
	prepare = !no_prepare;
	if (ugpuctl_open(suspend_cli.prog, uri, &ctx, &dev))
		goto out;
	ugpu_device_pm_set_opts(dev, &po);
	n = (unsigned long)fill_mib;
	bo = calloc(n ? n : 1, sizeof(*bo));
	buf = malloc(1u << 20);
	if (!bo || !buf)
		goto out;
	for (i = 0; i < n; i++) {
		struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = 1u << 20,
					  .placements = { UGPU_PLACEMENT_VRAM },
					  .flags = UGPU_BO_PINNED, .name = "ugpuctl" };

		ret = ugpu_bo_create(dev, &o, &bo[i]);
		if (ret) {
			fprintf(stderr, "ugpuctl: BO %lu: %s\n", i, ugpu_strerror(ret));
			goto out;
		}
		for (w = 0; w < (1u << 17); w++)
			buf[w] = w * 0x9e3779b97f4a7c15ull ^ i;
		ugpu_bo_write(bo[i], 0, buf, 1u << 20);
	}
	printf("%s: %lu MiB of pinned BOs\n", uri, n);
	if (prepare && (ret = ugpu_device_suspend_prepare(dev))) {
		fprintf(stderr, "ugpuctl: prepare failed: %s\n", ugpu_strerror(ret));
		goto out;
	}
	ret = ugpu_device_suspend(dev);
	if (ret) {
		fprintf(stderr, "ugpuctl: suspend failed: %s\n", ugpu_strerror(ret));
		ugpu_device_suspend_cancel(dev);
		goto out;
	}
	if (hold) {
		struct timespec ts = { .tv_sec = (time_t)(hold / 1000),
				       .tv_nsec = (long)(hold % 1000) * 1000000 };

		nanosleep(&ts, NULL);
	}
	ret = ugpu_device_resume(dev);
	if (ret) {
		fprintf(stderr, "ugpuctl: resume failed: %s; retrying once\n", ugpu_strerror(ret));
		ret = ugpu_device_resume(dev);
		if (ret)
			goto out;
	}
	for (i = 0; i < n; i++) {
		ugpu_bo_read(bo[i], 0, buf, 1u << 20);
		for (w = 0; w < (1u << 17); w++)
			if (buf[w] != (w * 0x9e3779b97f4a7c15ull ^ i)) {
				fprintf(stderr, "ugpuctl: BO %lu lost bytes over suspend\n", i);
				goto out;
			}
	}
	ugpu_device_pm_stats(dev, &st);
	printf("%s: prepare %.3f ms, critical window %.3f ms, resume %.3f ms; %lu MiB byte-exact\n",
	       uri, prepare ? st.prepare_ns / 1e6 : 0.0, st.critical_ns / 1e6, st.resume_ns / 1e6, n);
	rc = 0;
out:
	for (i = 0; bo && i < n; i++)
		ugpu_bo_put(bo[i]);
	free(bo);
	free(buf);
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	return rc;
}

static const struct cli_cmd resume_cli = {
	.prog = "ugpuctl resume",
	.args = "URI",
	.summary = "wake a device left in D3 (opening it brings it to D0)",
	.min_pos = 1,
	.max_pos = 1,
};

static int run_resume(int argc, char **argv)
{
	struct ugpu_device_info info = { .size = sizeof(info) };
	struct ugpu_context *ctx = NULL;
	struct ugpu_device *dev = NULL;
	char *uri;
	unsigned npos;
	int rc = cli_parse(&resume_cli, argc, argv, &uri, &npos);

	if (rc != CLI_CONTINUE)
		return rc;
	rc = 1;
	if (!ugpuctl_open(resume_cli.prog, uri, &ctx, &dev) && !ugpu_device_query(dev, &info)) {
		printf("%s: power state D%s\n", uri,
		       info.power_state == UGPU_POWER_D0 ? "0" : "3");
		rc = info.power_state == UGPU_POWER_D0 ? 0 : 1;
	}
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	return rc;
}

const struct ugpuctl_cmd ugpuctl_cmd_suspend = { .cli = &suspend_cli, .name = "suspend",
						 .run = run_suspend };
const struct ugpuctl_cmd ugpuctl_cmd_resume = { .cli = &resume_cli, .name = "resume",
						.run = run_resume };
