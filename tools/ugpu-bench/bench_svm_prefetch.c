/* SPDX-License-Identifier: MIT */
/*
 * ugpu-bench svm-prefetch [--mib N] [--n N] [--rounds N]: shared virtual
 * memory's policy (docs/svm.md, "Prefetch" and "Learned behaviour") on the
 * reference device, against baselines measured in the same run. One JSON
 * object per line:
 *   {"bench":"svm-prefetch","case":"to_vram","mib":M,"n":N,"gbps":A,"memcpy_gbps":B}
 *       ugpu_vm_prefetch() of M MiB of process memory (2 MiB ranges) into
 *       VRAM, N times (IGT's prefetch-benchmark: 64 MiB x 128); A is the
 *       bytes moved over the time of those calls, B memcpy of M MiB; with
 *       "cpu_gbps" and "memcpy_cpu_gbps" the same over the CPU time the
 *       whole process spent (every thread): the cost, much less disturbed
 *       than the wall time when other work runs.
 *   {"bench":"svm-prefetch","case":"to_system","mib":M,"n":N,"gbps":A,"memcpy_gbps":B}
 *       the same back into the process, after each of those (the 5 ms
 *       timeslice a range stays in VRAM is waited out before, untimed).
 *   {"bench":"svm-prefetch","case":"thrash","rounds":R,"on_ms":A,"off_ms":B,"migrations_on":C,"migrations_off":D}
 *       the ping-pong workload (false sharing: a kernel reads the first
 *       64 KiB of a 2 MiB buffer, the CPU writes its last word), R rounds,
 *       with thrashing control and without: wall time and 2 MiB moves.
 * Every pass is checked: each prefetch moved every byte (the query's
 * residency), the data sums right after the round trips, each kernel read
 * the right sum. The device's engines are threads of this process: run it
 * on a quiet machine.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <ugpu/device.h>
#include <ugpu/rpm.h>
#include <ugpu/svm.h>
#include <ugpu/vm.h>

#include "tools/ugpu-bench/bench.h"
#include "tools/ugpu-sim/sim.h"

#define MIB (1ull << 20)
#define KIB (1ull << 10)
#define WAIT_MS 60000

#define pb bench_mirror

/* Where [p, +bytes) is: the bytes in this device's VRAM, or in the process. */
static int residency(struct pb *b, const void *p, uint64_t bytes, uint64_t *vram, uint64_t *sys)
{
	uint64_t va = (uintptr_t)p, end = va + bytes;

	*vram = *sys = 0;
	while (va < end) {
		struct ugpu_svm_span_info i = { .size = sizeof(i) };
		int ret = ugpu_svm_query(b->vm, va, end - va, &i);

		if (ret)
			return ret;
		*vram += i.vram_bytes;
		*sys += i.system_bytes;
		va += i.bytes;
	}
	return 0;
}

static void sleep_ms(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static int bench_round_trips(struct pb *b, size_t mib, size_t n)
{
	size_t bytes = mib * MIB;
	uint64_t *w = bench_map_2m(bytes), sum = 0, check = 0, vram, sys, t_v = 0, t_s = 0, mc;
	uint64_t c_v = 0, c_s = 0, mc_cpu = 0;
	int ret = 0;

	if (!w)
		return -ENOMEM;
	for (size_t i = 0; i < bytes / 8; i++) {
		w[i] = i * 0x9e3779b97f4a7c15ull;
		sum += w[i];
	}
	/* a warm-up round trip: the device model's VRAM pages, the tables */
	ret = ugpu_vm_prefetch(b->vm, (uintptr_t)w, bytes, UGPU_PLACEMENT_VRAM);
	if (!ret) {
		sleep_ms(6);
		ret = ugpu_vm_prefetch(b->vm, (uintptr_t)w, bytes, UGPU_PLACEMENT_SYSTEM);
	}
	for (size_t k = 0; k < n && !ret; k++) {
		uint64_t t0 = bench_ns(), c0 = bench_cpu_ns();

		ret = ugpu_vm_prefetch(b->vm, (uintptr_t)w, bytes, UGPU_PLACEMENT_VRAM);
		t_v += bench_ns() - t0;
		c_v += bench_cpu_ns() - c0;
		if (!ret)
			ret = residency(b, w, bytes, &vram, &sys);
		if (!ret && vram != bytes) {
			fprintf(stderr, "ugpu-bench svm-prefetch: %llu of %zu bytes reached VRAM\n",
				(unsigned long long)vram, bytes);
			ret = -EIO;
		}
		if (ret)
			break;
		sleep_ms(6); /* the timeslice a range stays in VRAM */
		t0 = bench_ns();
		c0 = bench_cpu_ns();
		ret = ugpu_vm_prefetch(b->vm, (uintptr_t)w, bytes, UGPU_PLACEMENT_SYSTEM);
		t_s += bench_ns() - t0;
		c_s += bench_cpu_ns() - c0;
		if (!ret)
			ret = residency(b, w, bytes, &vram, &sys);
		if (!ret && sys != bytes) {
			fprintf(stderr, "ugpu-bench svm-prefetch: %llu of %zu bytes came back\n",
				(unsigned long long)sys, bytes);
			ret = -EIO;
		}
	}
	for (size_t i = 0; !ret && i < bytes / 8; i++)
		check += w[i];
	if (!ret && check != sum) {
		fprintf(stderr, "ugpu-bench svm-prefetch: the data sums to 0x%llx after the round trips, 0x%llx before\n",
			(unsigned long long)check, (unsigned long long)sum);
		ret = -EIO;
	}
	munmap(w, bytes);
	if (ret)
		return ret;
	mc = bench_memcpy_ns(bytes, &mc_cpu);
	printf("{\"bench\":\"svm-prefetch\",\"case\":\"to_vram\",\"mib\":%zu,\"n\":%zu,\"gbps\":%.2f,\"memcpy_gbps\":%.2f,\"cpu_gbps\":%.2f,\"memcpy_cpu_gbps\":%.2f}\n",
	       mib, n, bench_gbps((uint64_t)bytes * n, t_v), bench_gbps(bytes, mc),
	       bench_gbps((uint64_t)bytes * n, c_v), bench_gbps(bytes, mc_cpu));
	printf("{\"bench\":\"svm-prefetch\",\"case\":\"to_system\",\"mib\":%zu,\"n\":%zu,\"gbps\":%.2f,\"memcpy_gbps\":%.2f,\"cpu_gbps\":%.2f,\"memcpy_cpu_gbps\":%.2f}\n",
	       mib, n, bench_gbps((uint64_t)bytes * n, t_s), bench_gbps(bytes, mc),
	       bench_gbps((uint64_t)bytes * n, c_s), bench_gbps(bytes, mc_cpu));
	fflush(stdout);
	return 0;
}

/* The ping-pong workload, @rounds, with thrashing control @on: wall time
 * and the 2 MiB moves it took. */
static int pingpong(struct pb *b, bool on, size_t rounds, uint64_t *ms, uint64_t *moves)
{
	struct ugpu_svm_tuning t = { .size = sizeof(t) };
	struct ugpu_svm_stats s0 = { .size = sizeof(s0) }, s1 = { .size = sizeof(s1) };
	uint64_t bytes = 2 * MIB, gpu = 64 * KIB, sum = 0, last = bytes / 8 - 1, t0;
	uint64_t *w = bench_map_2m(bytes);
	int ret;

	if (!w)
		return -ENOMEM;
	for (uint64_t i = 0; i < bytes / 8; i++) {
		w[i] = i + 1;
		if (i < gpu / 8)
			sum += w[i];
	}
	ret = ugpu_svm_get_tuning(b->dev, &t);
	t.thrash_enable = on;
	if (!ret)
		ret = ugpu_svm_set_tuning(b->dev, &t);
	if (!ret)
		ret = ugpu_device_svm_stats(b->dev, &s0);
	t0 = bench_ns();
	for (size_t k = 0; k < rounds && !ret; k++) {
		struct ugpu_kernel kr = { .size = sizeof(kr), .op = UGPU_KERNEL_READ_SUM,
					  .va = (uintptr_t)w, .bytes = gpu };
		struct ugpu_kernel_result r = { .size = sizeof(r) };
		uint64_t fence;

		ret = ugpu_queue_submit(b->q, &kr, &fence);
		if (!ret)
			ret = ugpu_fence_wait(b->q, fence, WAIT_MS, &r);
		if (!ret && (r.status || r.sum != sum)) {
			fprintf(stderr, "ugpu-bench svm-prefetch: round %zu: status %d, sum 0x%llx want 0x%llx\n",
				k, r.status, (unsigned long long)r.sum, (unsigned long long)sum);
			ret = -EIO;
		}
		w[last]++; /* the CPU's side */
	}
	*ms = (bench_ns() - t0) / 1000000;
	if (!ret)
		ret = ugpu_device_svm_stats(b->dev, &s1);
	*moves = s1.svm_2M_migrate_count - s0.svm_2M_migrate_count;
	if (!ret && w[last] != bytes / 8 + rounds) {
		fprintf(stderr, "ugpu-bench svm-prefetch: the CPU's word reads %llu\n",
			(unsigned long long)w[last]);
		ret = -EIO;
	}
	munmap(w, bytes);
	return ret;
}

static int bench_thrash(struct pb *b, size_t rounds)
{
	uint64_t on_ms, off_ms, on_moves, off_moves;
	int ret = pingpong(b, false, rounds, &off_ms, &off_moves);

	if (!ret)
		ret = pingpong(b, true, rounds, &on_ms, &on_moves);
	if (ret)
		return ret;
	printf("{\"bench\":\"svm-prefetch\",\"case\":\"thrash\",\"rounds\":%zu,\"on_ms\":%llu,\"off_ms\":%llu,\"migrations_on\":%llu,\"migrations_off\":%llu}\n",
	       rounds, (unsigned long long)on_ms, (unsigned long long)off_ms,
	       (unsigned long long)on_moves, (unsigned long long)off_moves);
	fflush(stdout);
	return 0;
}

int bench_svm_prefetch(int argc, char **argv)
{
	struct pb b = { 0 };
	uint64_t mib_opt = 64, n_opt = 128, rounds_opt = 50;
	const struct cli_opt opts[] = {
		{ .name = "mib", .kind = CLI_UINT, .dst = &mib_opt, .arg = "N",
		  .help = "MiB prefetched each time (even)", .min = 2, .max = 16384 },
		{ .name = "n", .kind = CLI_UINT, .dst = &n_opt, .arg = "N",
		  .help = "round trips (VRAM and back) timed", .min = 1, .max = 100000 },
		{ .name = "rounds", .kind = CLI_UINT, .dst = &rounds_opt, .arg = "N",
		  .help = "ping-pong rounds of the thrash case", .min = 10, .max = 100000 },
		{ 0 },
	};
	const struct cli_cmd cli = {
		.prog = "ugpu-bench svm-prefetch", .args = "",
		.summary = "shared virtual memory policy: prefetch to VRAM and back vs memcpy; ping-pong with and without thrashing control",
		.opts = opts };
	int ret = cli_parse(&cli, argc, argv, NULL, NULL);

	if (ret != CLI_CONTINUE)
		return ret;
	if (mib_opt & 1)
		return cli_usage_error(cli.prog, "--mib: %" PRIu64 " is odd; expected an even number",
				       mib_opt);
	ret = bench_mirror_open(&b, mib_opt * MIB, "bench-svm-prefetch");
	if (ret) {
		fprintf(stderr, "ugpu-bench svm-prefetch: setup failed: %s\n", ugpu_strerror(ret));
		return 1;
	}
	ret = bench_round_trips(&b, (size_t)mib_opt, (size_t)n_opt);
	if (!ret)
		ret = bench_thrash(&b, (size_t)rounds_opt);
	if (ret)
		fprintf(stderr, "ugpu-bench svm-prefetch: %s\n", ugpu_strerror(ret));
	bench_mirror_close(&b);
	return ret ? 1 : 0;
}
