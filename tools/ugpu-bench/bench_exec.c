/* SPDX-License-Identifier: MIT */
/*
 * ugpu-bench exec [--n N]: submit-to-fence latency of kernels on the
 * reference device (include/ugpu/vm.h), against its floors measured in the
 * same run:
 *   socket_rtt   a raw round trip of 8 bytes over a UNIX socketpair between
 *                two threads (what any vfio-user message costs at least)
 *   reg_read     one BAR0 register read through the driver's transport (a
 *                vfio-user REGION_READ: the device's real round trip)
 *   empty        ugpu_queue_submit() of a 0-byte kernel to ugpu_fence_wait()
 *                returning, one at a time
 *   write_4k     the same for a WRITE kernel over a bound 4 KiB VRAM page
 * One JSON object per line:
 *   {"bench":"exec","case":"empty","n":N,"p50_us":A,"p99_us":B}
 * The device runs in this process (its engines are threads): run it on a
 * quiet machine.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ugpu/bo.h>
#include <ugpu/device.h>
#include <ugpu/vm.h>

#include "src/device.h"
#include "tools/ugpu-bench/bench.h"
#include "tools/ugpu-sim/sim.h"

#define VA 0x100000000ull

static void report(const char *name, uint64_t *ns, size_t n)
{
	qsort(ns, n, sizeof(*ns), bench_cmp_u64);
	printf("{\"bench\":\"exec\",\"case\":\"%s\",\"n\":%zu,\"p50_us\":%.2f,\"p99_us\":%.2f}\n", name,
	       n, ns[n / 2] / 1000.0, ns[n * 99 / 100] / 1000.0);
	fflush(stdout);
}

static void *echo(void *arg)
{
	int fd = *(int *)arg;
	uint64_t v;

	while (read(fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
		if (write(fd, &v, sizeof(v)) != (ssize_t)sizeof(v))
			break;
	return NULL;
}

static int socket_rtt(uint64_t *ns, size_t n)
{
	int sv[2];
	pthread_t t;
	size_t i;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return -errno;
	if (pthread_create(&t, NULL, echo, &sv[1])) {
		close(sv[0]);
		close(sv[1]);
		return -EAGAIN;
	}
	for (i = 0; i < n; i++) {
		uint64_t v = i, t0 = bench_ns();

		if (write(sv[0], &v, sizeof(v)) != (ssize_t)sizeof(v) ||
		    read(sv[0], &v, sizeof(v)) != (ssize_t)sizeof(v))
			break;
		ns[i] = bench_ns() - t0;
	}
	shutdown(sv[0], SHUT_RDWR);
	pthread_join(t, NULL);
	close(sv[0]);
	close(sv[1]);
	return i == n ? 0 : -EIO;
}

static int kernels(struct ugpu_queue *q, const struct ugpu_kernel *k, uint64_t *ns, size_t n)
{
	struct ugpu_kernel_result r = { .size = sizeof(r) };
	size_t i;
	int ret;

	for (i = 0; i < n; i++) {
		uint64_t fence, t0 = bench_ns();

		ret = ugpu_queue_submit(q, k, &fence);
		if (!ret)
			ret = ugpu_fence_wait(q, fence, 10000, &r);
		if (!ret && r.status)
			ret = r.status;
		if (ret)
			return ret;
		ns[i] = bench_ns() - t0;
	}
	return 0;
}

int bench_exec(int argc, char **argv)
{
	struct ugpu_context_opts co = { .size = sizeof(co), .log_level = UGPU_LOG_ERROR };
	struct ugpu_bo_opts bo_opts = { .size = sizeof(bo_opts), .bytes = 4096,
					.placements = { UGPU_PLACEMENT_VRAM },
					.name = "bench" };
	struct ugpu_kernel k = { .size = sizeof(k) };
	struct ugpu_context *ctx = NULL;
	struct ugpu_device *dev = NULL;
	struct ugpu_queue *q = NULL;
	struct ugpu_vm *vm = NULL;
	struct ugpu_bo *bo = NULL;
	struct sim *sim = NULL;
	struct sim_opts so;
	uint64_t *ns;
	uint64_t nopt = 2000;
	const struct cli_opt opts[] = {
		{ .name = "n", .kind = CLI_UINT, .dst = &nopt, .arg = "N",
		  .help = "submissions measured", .min = 100, .max = 10000000 },
		{ 0 },
	};
	const struct cli_cmd cli = {
		.prog = "ugpu-bench exec", .args = "",
		.summary = "kernel submit-to-fence latency (empty, 4 KiB write) vs socket and register round trips",
		.opts = opts };
	size_t n, i;
	char uri[256];
	int ret = cli_parse(&cli, argc, argv, NULL, NULL);

	if (ret != CLI_CONTINUE)
		return ret;
	n = (size_t)nopt;
	ns = calloc(n, sizeof(*ns));
	if (!ns)
		return 1;
	sim_opts_init(&so);
	so.vram_size = 64ull << 20;
	ret = sim_start(&so, &sim);
	if (!ret)
		ret = ugpu_context_create(&co, &ctx);
	if (!ret) {
		snprintf(uri, sizeof(uri), "vfio-user:%s", sim_socket_path(sim, 0));
		ret = ugpu_device_open(ctx, uri, &dev);
	}
	/* The device stays awake: this measures submission, not wakes. */
	if (!ret)
		ret = ugpu_device_rpm_get(dev);
	if (!ret)
		ret = ugpu_vm_create(dev, NULL, &vm);
	if (!ret)
		ret = ugpu_queue_create(vm, NULL, &q);
	if (!ret)
		ret = ugpu_bo_create(dev, &bo_opts, &bo);
	if (!ret)
		ret = ugpu_vm_bind(vm, bo, 0, VA, 4096, 0);
	if (ret) {
		fprintf(stderr, "ugpu-bench exec: setup failed: %s\n", ugpu_strerror(ret));
		goto out;
	}

	ret = socket_rtt(ns, n);
	if (!ret)
		report("socket_rtt", ns, n);
	for (i = 0; i < n && !ret; i++) {
		uint32_t v;
		uint64_t t0 = bench_ns();

		ret = device_reg_read32(dev, 0x40 /* SCRATCH */, &v);
		ns[i] = bench_ns() - t0;
	}
	if (!ret)
		report("reg_read", ns, n);

	k.op = UGPU_KERNEL_WRITE;
	k.va = VA;
	k.bytes = 0;
	if (!ret)
		ret = kernels(q, &k, ns, n / 10); /* warm up */
	if (!ret)
		ret = kernels(q, &k, ns, n);
	if (!ret)
		report("empty", ns, n);
	k.bytes = 4096;
	k.value = 0x5a5a5a5a5a5a5a5aull;
	if (!ret)
		ret = kernels(q, &k, ns, n);
	if (!ret)
		report("write_4k", ns, n);
	if (!ret) {
		uint64_t w[512];

		ret = ugpu_bo_read(bo, 0, w, sizeof(w));
		for (i = 0; !ret && i < 512; i++)
			if (w[i] != k.value)
				ret = -EIO;
	}
	if (ret)
		fprintf(stderr, "ugpu-bench exec: %s\n", ugpu_strerror(ret));
out:
	ugpu_queue_destroy(q);
	ugpu_vm_destroy(vm);
	ugpu_bo_put(bo);
	if (dev)
		ugpu_device_rpm_put(dev);
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	sim_stop(sim);
	free(ns);
	return ret ? 1 : 0;
}
