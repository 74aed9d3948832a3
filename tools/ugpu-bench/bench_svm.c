/* SPDX-License-Identifier: MIT */
/*
 * ugpu-bench svm [--mib N] [--n N] [--fault-ahead N] [--placement P]: shared virtual memory (docs/svm.md) on
 * the reference device, against baselines measured in the same run. One JSON
 * object per line:
 *   {"bench":"svm","case":"gpu_fault_2m","mib":M,"gbps":A,"migrate_gbps":C,"memcpy_gbps":B,
 *    "cpu_gbps":D,"memcpy_cpu_gbps":E,"fault_ahead":F}
 *       one READ_SUM kernel over M MiB of process memory (2 MiB ranges), each
 *       range faulted into VRAM on the way: A is bytes over the kernel's
 *       submit-to-fence time (faults, copies and the kernel's own reads), C
 *       bytes over the fault-to-mapped time SVM counted (svm_2M_migrate_us);
 *       B is memcpy of the same bytes between two populated buffers. D and E
 *       are the same bytes over the CPU time the whole process (every
 *       thread, the device's engines included) spent on each: the cost,
 *       much less disturbed than the wall time when other work runs. F is
 *       the stream prefetcher's depth in 2 MiB ranges (the driver's
 *       default, or --fault-ahead): ranges moved ahead of the kernel count
 *       in C too.
 *   {"bench":"svm","case":"cpu_fault_2m","mib":M,"gbps":A,"memcpy_gbps":B,"cpu_gbps":D,"memcpy_cpu_gbps":E}
 *       the CPU reads one word of each of those ranges (now in VRAM), each
 *       touch bringing its 2 MiB back before it returns.
 *   {"bench":"svm","case":"gpu_fault_64m","gbps":A,"memcpy_gbps":B}
 *       the same as gpu_fault_2m over 64 MiB (IGT's size).
 *   {"bench":"svm","case":"cpu_fault_4k","placement":P,"cpus":S,"n":N,"p50_us":A,"p99_us":B,
 *    "uffd_p50_us":C,"uffd_interleaved_p50_us":I,"uffd_loop_p50_us":L,"ok":T}
 *       a CPU read of a 4 KiB range that a GPU atomic moved into VRAM, until
 *       its data is there; C is the raw userfaultfd round trip (a handler
 *       thread answering with UFFDIO_COPY) in the same run and the same CPU
 *       placement P (one-cpu, two-cpu, free: bench.h; a fresh device for
 *       each, --placement picks one): the smaller p50 of one raw fault
 *       right before each touch (I) and 64 back to back (L). T: the
 *       target, A <= 2 x C. Printed last, after gpu_fault_4k.
 *   {"bench":"svm","case":"gpu_fault_4k","n":N,"p50_us":A,"p99_us":B,"exec_p50_us":C}
 *       submit-to-fence of a READ_SUM kernel whose 4 KiB range is not mapped
 *       yet (used in place); C the same kernel once mapped.
 * Every measured pass runs after a warm-up pass over the same memory (VRAM
 * pages of the device model allocated, page tables built), and every result
 * is checked byte-exact. The device's engines are threads of this process:
 * run it on a quiet machine.
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
#define PAGE 4096ull
#define SVM_WAIT_MS 60000
/* Longer than SVM's timeslice (5 ms): a CPU touch sooner would wait it out. */
#define AFTER_TIMESLICE_NS 20000000ull

#define sb bench_mirror

static int run_kernel(struct sb *b, enum ugpu_kernel_op op, const void *p, uint64_t bytes,
		      uint64_t value, uint64_t *sum, uint64_t *ns)
{
	struct ugpu_kernel k = { .size = sizeof(k), .op = op, .va = (uintptr_t)p, .bytes = bytes,
				 .value = value };
	struct ugpu_kernel_result r = { .size = sizeof(r) };
	uint64_t fence, t0 = bench_ns();
	int ret;

	ret = ugpu_queue_submit(b->q, &k, &fence);
	if (!ret)
		ret = ugpu_fence_wait(b->q, fence, SVM_WAIT_MS, &r);
	if (ns)
		*ns = bench_ns() - t0;
	if (!ret && r.status)
		ret = r.status;
	if (sum)
		*sum = r.sum;
	return ret;
}

static int svm_stats(struct sb *b, struct ugpu_svm_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->size = sizeof(*st);
	return ugpu_device_svm_stats(b->dev, st);
}

void *bench_map_2m(size_t bytes)
{
	size_t len = bytes + 2 * MIB;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uintptr_t a;

	if (p == MAP_FAILED)
		return NULL;
	a = ((uintptr_t)p + 2 * MIB - 1) & ~(uintptr_t)(2 * MIB - 1);
	if (a > (uintptr_t)p)
		munmap(p, a - (uintptr_t)p);
	if ((uintptr_t)p + len > a + bytes)
		munmap((void *)(a + bytes), (uintptr_t)p + len - (a + bytes));
	return (void *)a;
}

uint64_t bench_memcpy_ns(size_t bytes, uint64_t *cpu_ns)
{
	char *src = malloc(bytes), *dst = malloc(bytes);
	uint64_t best = UINT64_MAX, best_cpu = UINT64_MAX;

	if (!src || !dst) {
		free(src);
		free(dst);
		return 0;
	}
	memset(src, 1, bytes);
	memset(dst, 2, bytes);
	for (int i = 0; i < 3; i++) {
		uint64_t c0 = bench_cpu_ns(), t0 = bench_ns();

		memcpy(dst, src, bytes);
		t0 = bench_ns() - t0;
		c0 = bench_cpu_ns() - c0;
		if (t0 < best)
			best = t0;
		if (c0 < best_cpu)
			best_cpu = c0;
	}
	if (memcmp(dst, src, bytes))
		best = 0;
	if (cpu_ns)
		*cpu_ns = best_cpu;
	free(src);
	free(dst);
	return best;
}

static uint64_t fill(uint64_t *w, size_t bytes, uint64_t seed)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < bytes / 8; i++) {
		w[i] = seed * 0x9e3779b97f4a7c15ull + i;
		sum += w[i];
	}
	return sum;
}

/*
 * GPU faults over @bytes of fresh data, then CPU touches bringing it back;
 * @pass_ns[0] the kernel, [1] the touches, @migrate_us what SVM counted for
 * the 2 MiB moves.
 */
static int fault_pass(struct sb *b, uint64_t *w, size_t bytes, uint64_t seed, uint64_t pass_ns[2],
		      uint64_t pass_cpu[2], uint64_t *migrate_us)
{
	struct ugpu_svm_stats s0, s1;
	uint64_t want = fill(w, bytes, seed), sum = 0, x = 0;
	int ret;

	ret = svm_stats(b, &s0);
	pass_cpu[0] = bench_cpu_ns();
	if (!ret)
		ret = run_kernel(b, UGPU_KERNEL_READ_SUM, w, bytes, 0, &sum, &pass_ns[0]);
	pass_cpu[0] = bench_cpu_ns() - pass_cpu[0];
	if (!ret)
		ret = svm_stats(b, &s1);
	if (ret)
		return ret;
	if (sum != want) {
		fprintf(stderr, "ugpu-bench svm: the kernel summed 0x%llx, the data sums to 0x%llx\n",
			(unsigned long long)sum, (unsigned long long)want);
		return -EIO;
	}
	if (s1.svm_2M_migrate_count - s0.svm_2M_migrate_count != bytes / (2 * MIB)) {
		fprintf(stderr, "ugpu-bench svm: %llu of %zu ranges moved to VRAM (is VRAM too small?)\n",
			(unsigned long long)(s1.svm_2M_migrate_count - s0.svm_2M_migrate_count),
			(size_t)(bytes / (2 * MIB)));
		return -ENOSPC;
	}
	*migrate_us = s1.svm_2M_migrate_us - s0.svm_2M_migrate_us;
	{
		struct timespec ts = { 0, (long)AFTER_TIMESLICE_NS };

		nanosleep(&ts, NULL);
	}
	{
		uint64_t t0 = bench_ns();

		pass_cpu[1] = bench_cpu_ns();
		for (size_t off = 0; off < bytes; off += 2 * MIB)
			x += __atomic_load_n(&w[off / 8], __ATOMIC_RELAXED);
		pass_ns[1] = bench_ns() - t0;
	}
	(void)x;
	/* The last touch returns once its data is back; SVM's bookkeeping of
	 * that range (VRAM freed) ends just after. */
	for (int i = 0; (ret = svm_stats(b, &s0)) == 0 && s0.svm_vram_bytes && i < 2000; i++)
		usleep(1000);
	pass_cpu[1] = bench_cpu_ns() - pass_cpu[1]; /* the bookkeeping too */
	if (!ret && s0.svm_vram_bytes) {
		fprintf(stderr, "ugpu-bench svm: %llu bytes still in VRAM after the CPU read them\n",
			(unsigned long long)s0.svm_vram_bytes);
		return -EIO;
	}
	for (size_t i = 0; !ret && i < bytes / 8; i++)
		if (w[i] != seed * 0x9e3779b97f4a7c15ull + i) {
			fprintf(stderr, "ugpu-bench svm: word %zu came back wrong\n", i);
			ret = -EIO;
		}
	return ret;
}

static int bench_big(struct sb *b, size_t mib, const char *gpu_case, const char *cpu_case)
{
	size_t bytes = mib * MIB;
	uint64_t *w = bench_map_2m(bytes);
	uint64_t ns[2], cpu[2], mig_us, copy_ns, copy_cpu = 0;
	struct ugpu_svm_tuning t = { .size = sizeof(t) };
	int ret;

	if (!w)
		return -ENOMEM;
	ret = ugpu_svm_get_tuning(b->dev, &t); /* the stream prefetcher's depth, printed */
	if (ret) {
		munmap(w, bytes);
		return ret;
	}
	ret = fault_pass(b, w, bytes, 1, ns, cpu, &mig_us); /* warm-up */
	if (!ret)
		ret = fault_pass(b, w, bytes, 2, ns, cpu, &mig_us);
	copy_ns = ret ? 0 : bench_memcpy_ns(bytes, &copy_cpu);
	if (!ret) {
		printf("{\"bench\":\"svm\",\"case\":\"%s\",\"mib\":%zu,\"gbps\":%.2f,\"migrate_gbps\":%.2f,\"memcpy_gbps\":%.2f,\"cpu_gbps\":%.2f,\"memcpy_cpu_gbps\":%.2f,\"fault_ahead\":%u}\n",
		       gpu_case, mib, bench_gbps(bytes, ns[0]), bench_gbps(bytes, mig_us * 1000), bench_gbps(bytes, copy_ns),
		       bench_gbps(bytes, cpu[0]), bench_gbps(bytes, copy_cpu), t.fault_ahead);
		if (cpu_case)
			printf("{\"bench\":\"svm\",\"case\":\"%s\",\"mib\":%zu,\"gbps\":%.2f,\"memcpy_gbps\":%.2f,\"cpu_gbps\":%.2f,\"memcpy_cpu_gbps\":%.2f}\n",
			       cpu_case, mib, bench_gbps(bytes, ns[1]), bench_gbps(bytes, copy_ns),
			       bench_gbps(bytes, cpu[1]), bench_gbps(bytes, copy_cpu));
		fflush(stdout);
	}
	munmap(w, bytes);
	return ret;
}

/* @n pages, each its own mapping (a PROT_NONE page between two keeps them
 * from merging), so each is a 4 KiB range. */
static char *map_4k_ranges(size_t n)
{
	char *p = mmap(NULL, 2 * n * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (mprotect(p + (2 * i + 1) * PAGE, PAGE, PROT_NONE)) {
			munmap(p, 2 * n * PAGE);
			return NULL;
		}
	return p;
}

static void report_lat(const char *name, uint64_t *ns, size_t n, const char *extra_name,
		       double extra)
{
	qsort(ns, n, sizeof(*ns), bench_cmp_u64);
	printf("{\"bench\":\"svm\",\"case\":\"%s\",\"n\":%zu,\"p50_us\":%.2f,\"p99_us\":%.2f,\"%s\":%.2f}\n",
	       name, n, ns[n / 2] / 1000.0, ns[n * 99 / 100] / 1000.0, extra_name, extra);
	fflush(stdout);
}

#define RAW_LOOP 64 /* back-to-back raw faults of the loop baseline */

/*
 * A GPU atomic moves each 4 KiB range into VRAM; then one CPU read each,
 * until its data is there. The raw userfaultfd round trip is measured in
 * the same placement two ways, as ugpu-bench rpm does: one raw fault right
 * before each touch (same moment, same idle history) and RAW_LOOP back to
 * back; the smaller p50 is the baseline. @m was opened, and @raw created,
 * after the placement's affinity was set (their threads inherit it).
 */
static int bench_cpu_4k(struct sb *b, struct uffd_raw *raw, size_t n, const char *placement,
			const char *cpus)
{
	char *p = map_4k_ranges(n);
	uint64_t *ns = calloc(n, sizeof(*ns)), *raw_ns = calloc(n, sizeof(*raw_ns)), loop[RAW_LOOP];
	double base, inter, looped;
	int ret = 0;

	if (!p || !ns || !raw_ns) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < RAW_LOOP && !ret; i++)
		ret = uffd_raw_touch(raw, &loop[i]);
	for (int pass = 0; pass < 2 && !ret; pass++) { /* warm-up, then measured */
		struct ugpu_svm_stats st;

		for (size_t i = 0; i < n && !ret; i++) {
			uint64_t *w = (uint64_t *)(p + 2 * i * PAGE);

			w[0] = i;
			ret = run_kernel(b, UGPU_KERNEL_ATOMIC_ADD, w, PAGE, 1000, NULL, NULL);
		}
		if (!ret)
			ret = svm_stats(b, &st);
		if (!ret && st.svm_vram_bytes != n * PAGE) {
			fprintf(stderr, "ugpu-bench svm: %llu of %zu bytes of 4 KiB ranges in VRAM\n",
				(unsigned long long)st.svm_vram_bytes, (size_t)(n * PAGE));
			ret = -EIO;
		}
		if (ret)
			break;
		{
			struct timespec ts = { 0, (long)AFTER_TIMESLICE_NS };

			nanosleep(&ts, NULL);
		}
		for (size_t i = 0; i < n; i++) {
			volatile uint64_t *w = (volatile uint64_t *)(p + 2 * i * PAGE);
			uint64_t t0, v;

			if (pass && (ret = uffd_raw_touch(raw, &raw_ns[i])))
				break;
			t0 = bench_ns();
			v = w[0];
			ns[i] = bench_ns() - t0;
			if (v != i + 1000) {
				fprintf(stderr, "ugpu-bench svm: 4 KiB range %zu read 0x%llx\n", i,
					(unsigned long long)v);
				ret = -EIO;
				break;
			}
		}
	}
	if (!ret) {
		qsort(ns, n, sizeof(*ns), bench_cmp_u64);
		qsort(raw_ns, n, sizeof(*raw_ns), bench_cmp_u64);
		qsort(loop, RAW_LOOP, sizeof(*loop), bench_cmp_u64);
		inter = raw_ns[n / 2] / 1000.0;
		looped = loop[RAW_LOOP / 2] / 1000.0;
		base = inter < looped ? inter : looped; /* the stricter baseline */
		printf("{\"bench\":\"svm\",\"case\":\"cpu_fault_4k\",\"placement\":\"%s\","
		       "\"cpus\":\"%s\",\"n\":%zu,\"p50_us\":%.2f,\"p99_us\":%.2f,"
		       "\"uffd_p50_us\":%.2f,\"uffd_interleaved_p50_us\":%.2f,"
		       "\"uffd_loop_p50_us\":%.2f,\"ok\":%s}\n",
		       placement, cpus, n, ns[n / 2] / 1000.0, ns[n * 99 / 100] / 1000.0, base, inter,
		       looped, ns[n / 2] / 1000.0 <= 2 * base ? "true" : "false");
		fflush(stdout);
	}
out:
	if (p)
		munmap(p, 2 * n * PAGE);
	free(ns);
	free(raw_ns);
	return ret;
}

/* cpu_fault_4k in each CPU placement asked for (-1: all), each on a
 * reference device of its own opened after the placement's affinity was
 * set (bench.h). */
static int bench_cpu_4k_placed(size_t n, int pick)
{
	struct bench_cpus c;
	int ret = bench_cpus_init(&c);

	if (ret) {
		fprintf(stderr, "ugpu-bench svm: cannot read the CPU affinity\n");
		return ret;
	}
	for (int pl = 0; pl < BENCH_NPLACEMENTS && !ret; pl++) {
		struct uffd_raw *raw = NULL;
		struct sb m;
		char cpus[32];

		if (pick >= 0 && pick != pl)
			continue;
		if (pl == BENCH_TWO_CPU && c.b < 0) {
			fprintf(stderr, "ugpu-bench svm: two-cpu skipped: this process may use one CPU\n");
			continue;
		}
		ret = bench_place_others(&c, pl);
		if (!ret)
			ret = bench_mirror_open(&m, 2 * n * PAGE, "bench-svm-4k");
		if (!ret) {
			ret = uffd_raw_create(n + RAW_LOOP, &raw);
			if (!ret)
				ret = bench_place_self(&c, pl);
			if (!ret)
				ret = bench_cpu_4k(&m, raw, n, bench_placement_names[pl],
						   bench_placement_cpus(&c, pl, cpus, sizeof(cpus)));
			uffd_raw_destroy(raw);
			bench_mirror_close(&m);
		}
		bench_place_restore(&c);
	}
	return ret;
}

static int bench_gpu_4k(struct sb *b, size_t n)
{
	uint64_t *ns = calloc(n, sizeof(*ns)), *mapped = calloc(n, sizeof(*mapped));
	char *p = NULL;
	int ret = 0;

	if (!ns || !mapped) {
		ret = -ENOMEM;
		goto out;
	}
	for (int pass = 0; pass < 2 && !ret; pass++) {
		p = map_4k_ranges(n);
		if (!p) {
			ret = -ENOMEM;
			break;
		}
		for (size_t i = 0; i < n && !ret; i++) {
			uint64_t *w = (uint64_t *)(p + 2 * i * PAGE), sum = 0;

			memset(w, 0, PAGE);
			w[7] = i + 1;
			ret = run_kernel(b, UGPU_KERNEL_READ_SUM, w, PAGE, 0, &sum, &ns[i]);
			if (!ret)
				ret = run_kernel(b, UGPU_KERNEL_READ_SUM, w, PAGE, 0, NULL, &mapped[i]);
			if (!ret && sum != i + 1)
				ret = -EIO;
		}
		munmap(p, 2 * n * PAGE); /* the ranges go with it */
	}
	if (!ret) {
		qsort(mapped, n, sizeof(*mapped), bench_cmp_u64);
		report_lat("gpu_fault_4k", ns, n, "exec_p50_us", mapped[n / 2] / 1000.0);
	}
out:
	free(ns);
	free(mapped);
	return ret;
}

/*
 * The reference device in this process with a mirror VM over the whole
 * address space and a queue on it, awake for the whole run (this measures
 * shared virtual memory, not wakes); VRAM for @bytes at once plus the
 * driver's own objects. Shared with bench_svm_prefetch.c.
 */
int bench_mirror_open(struct bench_mirror *m, uint64_t bytes, const char *name)
{
	struct ugpu_context_opts co = { .size = sizeof(co), .log_level = UGPU_LOG_ERROR };
	struct ugpu_vm_opts vo = { .size = sizeof(vo), .flags = UGPU_VM_MIRROR,
				   .mirror_start = 0x10000, .mirror_size = (1ull << 47) - 0x20000,
				   .name = name };
	struct sim_opts so;
	char uri[256];
	int ret;

	memset(m, 0, sizeof(*m));
	sim_opts_init(&so);
	so.vram_size = 64 * MIB;
	while (so.vram_size < bytes + 64 * MIB)
		so.vram_size *= 2;
	ret = sim_start(&so, &m->sim);
	if (!ret)
		ret = ugpu_context_create(&co, &m->ctx);
	if (!ret) {
		snprintf(uri, sizeof(uri), "vfio-user:%s", sim_socket_path(m->sim, 0));
		ret = ugpu_device_open(m->ctx, uri, &m->dev);
	}
	if (!ret)
		ret = ugpu_device_rpm_get(m->dev);
	if (!ret)
		m->awake = true;
	if (!ret)
		ret = ugpu_vm_create(m->dev, &vo, &m->vm);
	if (!ret)
		ret = ugpu_queue_create(m->vm, NULL, &m->q);
	if (ret)
		bench_mirror_close(m);
	return ret;
}

void bench_mirror_close(struct bench_mirror *m)
{
	ugpu_queue_destroy(m->q);
	ugpu_vm_destroy(m->vm);
	if (m->awake)
		ugpu_device_rpm_put(m->dev);
	ugpu_device_close(m->dev);
	ugpu_context_destroy(m->ctx);
	sim_stop(m->sim);
	memset(m, 0, sizeof(*m));
}

int bench_svm(int argc, char **argv)
{
	struct sb b = { 0 };
	uint64_t mib_opt = 256, n_opt = 1000, ahead_opt = UINT64_MAX;
	const char *placement = "all";
	const struct cli_opt opts[] = {
		{ .name = "mib", .kind = CLI_UINT, .dst = &mib_opt, .arg = "N",
		  .help = "MiB of malloc'd memory moved (even)", .min = 64, .max = 65536 },
		{ .name = "n", .kind = CLI_UINT, .dst = &n_opt, .arg = "N",
		  .help = "4 KiB faults measured", .min = 100, .max = 10000000 },
		{ .name = "fault-ahead", .kind = CLI_UINT, .dst = &ahead_opt, .arg = "N",
		  .help = "the stream prefetcher's depth in 2 MiB ranges (struct ugpu_svm_tuning fault_ahead; default: the driver's)",
		  .min = 0, .max = 16 },
		{ .name = "placement", .kind = CLI_STR, .dst = &placement, .arg = "WHERE",
		  .help = "cpu_fault_4k's CPU placement: one-cpu, two-cpu, free or all" },
		{ 0 },
	};
	const struct cli_cmd cli = {
		.prog = "ugpu-bench svm", .args = "",
		.summary = "shared virtual memory: GPU faults into VRAM, CPU touches back vs memcpy and raw uffd",
		.opts = opts };
	size_t mib, n;
	int pick, ret = cli_parse(&cli, argc, argv, NULL, NULL);

	if (ret != CLI_CONTINUE)
		return ret;
	pick = bench_placement_parse(placement);
	if (pick == -EINVAL)
		return cli_usage_error(cli.prog, "--placement: unknown '%s'; expected one-cpu, two-cpu, free or all",
				       placement);
	if (mib_opt & 1)
		return cli_usage_error(cli.prog, "--mib: %" PRIu64 " is odd; expected an even number",
				       mib_opt);
	mib = (size_t)mib_opt;
	n = (size_t)n_opt;
	ret = bench_mirror_open(&b, mib * MIB, "bench-svm");
	if (ret) {
		fprintf(stderr, "ugpu-bench svm: setup failed: %s\n", ugpu_strerror(ret));
		return 1;
	}
	if (ahead_opt != UINT64_MAX) {
		struct ugpu_svm_tuning t = { .size = sizeof(t) };

		ret = ugpu_svm_get_tuning(b.dev, &t);
		t.fault_ahead = (uint32_t)ahead_opt;
		if (!ret)
			ret = ugpu_svm_set_tuning(b.dev, &t);
		if (ret) {
			fprintf(stderr, "ugpu-bench svm: --fault-ahead: %s\n", ugpu_strerror(ret));
			bench_mirror_close(&b);
			return 1;
		}
	}
	ret = bench_big(&b, mib, "gpu_fault_2m", "cpu_fault_2m");
	if (!ret)
		ret = bench_big(&b, 64, "gpu_fault_64m", NULL);
	if (!ret)
		ret = bench_gpu_4k(&b, n);
	bench_mirror_close(&b);
	if (!ret)
		ret = bench_cpu_4k_placed(n, pick);
	if (ret)
		fprintf(stderr, "ugpu-bench svm: %s\n", ugpu_strerror(ret));
	return ret ? 1 : 0;
}
