/* SPDX-License-Identifier: MIT */
/*
 * Guest test "svm": the CPU side of shared virtual memory on Debian 12's
 * kernel 6.1, which has no UFFDIO_MOVE (6.8) and no UFFDIO_POISON (6.6):
 * ranges move to VRAM by the write-protect path, and every userfaultfd
 * mechanism SVM relies on (missing faults, write protection, UFFDIO_COPY,
 * the unmap/remove/remap events) runs on that kernel for real, not forced
 * by UGPU_SVM_NO_MOVE on a newer one.
 *
 * The guest has no device with a GPU VM (ivshmem and edu are memory and a
 * DMA engine), so the GPU side is the reference device embedded in this
 * process (ugpu-sim over vfio-user on a UNIX socket), as in the host tests.
 * Each check is data read back byte-exact and the counters of what moved.
 */
#include "vm_test.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#include <ugpu/device.h>
#include <ugpu/vm.h>

#include "kernel_util.h"
#include "tools/ugpu-sim/sim.h"

#define MIB (1ull << 20)
#define KIB (1ull << 10)
#define SVM_SEED 0x53564d31ull /* "SVM1" */

static struct ugpu_device *dev;
static struct ugpu_queue *q;

static int kernel(enum ugpu_kernel_op op, const void *p, uint64_t bytes, uint64_t value,
		  struct ugpu_kernel_result *r)
{
	return run_kernel(q, op, p, bytes, value, 60000, r);
}

static struct ugpu_svm_stats stats(void)
{
	struct ugpu_svm_stats st = { .size = sizeof(st) };

	VM_CHECK_RC(ugpu_device_svm_stats(dev, &st), "ugpu_device_svm_stats");
	return st;
}

static uint64_t count_wrong(const uint64_t *w, uint64_t words, uint64_t seed, uint64_t add)
{
	uint64_t bad = 0;

	for (uint64_t i = 0; i < words; i++)
		bad += w[i] != vm_pattern(seed, i) + add;
	return bad;
}

/* 2 MiB to VRAM on the GPU's first touch (write protection: 6.1 has no
 * UFFDIO_MOVE), back on the CPU's, both byte-exact; GPU writes land. */
static void to_vram_and_back(void)
{
	uint64_t *buf = map_anon(2 * MIB, 2 * MIB), words = 2 * MIB / 8, sum = 0;
	struct ugpu_kernel_result r;
	struct ugpu_svm_stats st;

	for (uint64_t i = 0; i < words; i++) {
		buf[i] = vm_pattern(SVM_SEED, i);
		sum += buf[i];
	}
	VM_CHECK(kernel(UGPU_KERNEL_READ_SUM, buf, 2 * MIB, 0, &r) == 0 && r.sum == sum,
		 "a GPU read of 2 MiB of malloc-like memory sums it right");
	st = stats();
	VM_CHECK(st.svm_2M_migrate_count >= 1 && st.svm_vram_bytes >= 2 * MIB,
		 "the range moved to VRAM (%llu 2 MiB moves, %llu bytes in VRAM)",
		 (unsigned long long)st.svm_2M_migrate_count, (unsigned long long)st.svm_vram_bytes);
	VM_CHECK(count_wrong(buf, words, SVM_SEED, 0) == 0, "the CPU reads it back byte-exact");
	st = stats();
	vm_note("after the read: %llu CPU faults, %llu KiB copied back, %llu evicted, %llu idle, %llu bytes in VRAM\n",
		(unsigned long long)st.svm_cpu_fault_count, (unsigned long long)st.svm_cpu_copy_kb,
		(unsigned long long)st.svm_evict_count, (unsigned long long)st.svm_idle_release_count,
		(unsigned long long)st.svm_vram_bytes);
	VM_CHECK(st.svm_cpu_fault_count >= 1, "by a CPU fault that brought it back");
	VM_CHECK(kernel(UGPU_KERNEL_ATOMIC_ADD, buf, 2 * MIB, 3, &r) == 0,
		 "a GPU atomic add over it runs");
	VM_CHECK(count_wrong(buf, words, SVM_SEED, 3) == 0, "every word has the add");
	munmap(buf, 2 * MIB);
}

/* CPU stores from another thread while the range moves: each lands
 * before the copy or after the range is back, never on a lost page. */
struct racer {
	uint64_t *w;
	int stop;
	uint64_t stores;
};

static void *race_stores(void *arg)
{
	struct racer *rc = arg;

	while (!__atomic_load_n(&rc->stop, __ATOMIC_ACQUIRE)) {
		uint64_t n = rc->stores++;

		__atomic_store_n(&rc->w[(n * 8191) % (2 * MIB / 8)], n + 1, __ATOMIC_RELAXED);
		__atomic_store_n(&rc->w[0], n + 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

static void stores_race_migration(void)
{
	struct racer rc = { .w = map_anon(2 * MIB, 2 * MIB) };
	struct ugpu_kernel_result r;
	pthread_t t;
	uint64_t last;

	memset(rc.w, 0, 2 * MIB);
	VM_REQUIRE(pthread_create(&t, NULL, race_stores, &rc) == 0, "racer thread");
	for (int k = 0; k < 4; k++)
		kernel(UGPU_KERNEL_READ_SUM, rc.w, 2 * MIB, 0, &r);
	__atomic_store_n(&rc.stop, 1, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	last = rc.stores;
	VM_CHECK(rc.w[0] == last, "the racer's last store survived %d migrations (%llu stores)", 4,
		 (unsigned long long)last);
	VM_CHECK(rc.w[((last - 1) * 8191) % (2 * MIB / 8)] == last || ((last - 1) * 8191) % (2 * MIB / 8) == 0,
		 "and so did the store before it");
	munmap(rc.w, 2 * MIB);
}

/* munmap, MADV_DONTNEED and mremap events on 6.1: freed memory is freed for
 * the GPU (a kernel there is aborted), moved memory keeps its bytes. */
static void unmap_free_move(void)
{
	uint64_t *buf = map_anon(2 * MIB, 2 * MIB), *dst = map_anon(2 * MIB, 2 * MIB), *nb;
	struct ugpu_kernel_result r;
	uint64_t words = 2 * MIB / 8;

	for (uint64_t i = 0; i < words; i++)
		buf[i] = vm_pattern(SVM_SEED + 1, i);
	VM_CHECK(kernel(UGPU_KERNEL_READ_SUM, buf, 2 * MIB, 0, &r) == 0, "a range in VRAM");
	nb = mremap(buf, 2 * MIB, 2 * MIB, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
	VM_REQUIRE(nb == dst, "mremap");
	VM_CHECK(count_wrong(nb, words, SVM_SEED + 1, 0) == 0,
		 "after an mremap the new place holds every byte");
	VM_CHECK(madvise(nb, 2 * MIB, MADV_DONTNEED) == 0 && nb[7] == 0,
		 "MADV_DONTNEED frees it (reads zero)");
	munmap(nb, 2 * MIB);
	VM_CHECK(kernel(UGPU_KERNEL_READ_SUM, nb, 4096, 0, &r) == -EFAULT &&
			 r.fault_va == (uintptr_t)nb,
		 "a kernel on unmapped memory is aborted with its address");
	VM_CHECK(stats().svm_gc_count >= 1, "the ranges were collected");
}

/* fork: the child reads the parent's data, not zeroes where it was in VRAM. */
static void fork_reads_data(void)
{
	uint64_t *buf = map_anon(2 * MIB, 2 * MIB), words = 2 * MIB / 8;
	struct ugpu_kernel_result r;
	int status = -1;
	pid_t pid;

	for (uint64_t i = 0; i < words; i++)
		buf[i] = vm_pattern(SVM_SEED + 2, i);
	VM_CHECK(kernel(UGPU_KERNEL_ATOMIC_ADD, buf, 2 * MIB, 1, &r) == 0, "a range in VRAM");
	pid = fork();
	if (pid == 0)
		_exit(count_wrong(buf, words, SVM_SEED + 2, 1) ? 1 : 0);
	VM_REQUIRE(pid > 0, "fork");
	waitpid(pid, &status, 0);
	VM_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child read every word");
	VM_CHECK(count_wrong(buf, words, SVM_SEED + 2, 1) == 0, "and so does the parent");
	munmap(buf, 2 * MIB);
}

/* Small memory is used in place; shared memory too (never moved). */
static void in_place(void)
{
	char *area = mmap(NULL, 6 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t *small = (uint64_t *)(area + 4096), *shared;
	struct ugpu_kernel_result r;

	VM_REQUIRE(area != MAP_FAILED, "mmap");
	mprotect(area, 4096, PROT_NONE);
	mprotect(area + 5 * 4096, 4096, PROT_NONE);
	for (uint64_t i = 0; i < 16 * KIB / 8; i++)
		small[i] = i;
	VM_CHECK(kernel(UGPU_KERNEL_ATOMIC_ADD, small, 8, 0, &r) == 0 ||
			 r.status == -EACCES,
		 "an atomic on 4 KiB ranges runs or is refused cleanly");
	VM_CHECK(kernel(UGPU_KERNEL_WRITE, small, 16 * KIB, 9, &r) == 0 && small[2047] == 9,
		 "16 KiB between guard pages: the GPU's stores are in the process's pages");
	VM_CHECK(stats().svm_in_place_count >= 1, "used in place");
	shared = mmap(NULL, MIB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	VM_REQUIRE(shared != MAP_FAILED, "mmap shared");
	{
		int ret = kernel(UGPU_KERNEL_WRITE, shared, MIB, 4, &r);

		VM_CHECK(ret == 0 && shared[MIB / 8 - 1] == 4,
			 "MAP_SHARED anonymous memory is used in place (%d, %llu)", ret,
			 (unsigned long long)shared[MIB / 8 - 1]);
	}
	munmap(shared, MIB);
	munmap(area, 6 * 4096);
}

int main(void)
{
	struct ugpu_context_opts copts = { .size = sizeof(copts), .log_level = UGPU_LOG_WARN };
	struct ugpu_vm_opts vo = { .size = sizeof(vo), .flags = UGPU_VM_MIRROR,
				   .mirror_start = 0x10000,
				   .mirror_size = (1ull << 47) - 0x20000, .name = "svm" };
	struct ugpu_context *ctx;
	struct ugpu_vm *vm;
	struct sim_opts o;
	struct sim *sim;
	struct utsname u;
	char uri[256];
	double t0 = vm_now();

	uname(&u);
	vm_note("kernel %s: shared virtual memory on the embedded reference device\n", u.release);
	sim_opts_init(&o);
	o.vram_size = 32 * MIB;
	o.exec_queues = 1;
	VM_REQUIRE(sim_start(&o, &sim) == 0, "the embedded reference device starts");
	VM_REQUIRE(ugpu_context_create(&copts, &ctx) == 0, "context");
	snprintf(uri, sizeof(uri), "vfio-user:%s", sim_socket_path(sim, 0));
	VM_REQUIRE(ugpu_device_open(ctx, uri, &dev) == 0, "open %s", uri);
	VM_REQUIRE(ugpu_vm_create(dev, &vo, &vm) == 0,
		   "a mirror VM (needs a usable userfaultfd on this kernel)");
	VM_REQUIRE(ugpu_queue_create(vm, NULL, &q) == 0, "queue");

	to_vram_and_back();
	stores_race_migration();
	unmap_free_move();
	fork_reads_data();
	in_place();

	ugpu_queue_destroy(q);
	ugpu_vm_destroy(vm);
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	sim_stop(sim);
	vm_note("svm: %.1f s\n", vm_now() - t0);
	return vm_finish();
}
