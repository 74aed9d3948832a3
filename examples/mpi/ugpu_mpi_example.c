/* SPDX-License-Identifier: MIT */
/*
 * ugpu from an MPI program: each rank opens a device, runs kernels on
 * ordinary malloc'd memory (shared virtual memory) and on a buffer object it
 * maps, and exchanges both with MPI straight from that memory:
 *
 *   1. ring: a kernel adds (rank + 1) to every word of a malloc'd buffer
 *      (its pages move into VRAM); the rank sends the buffer to its right
 *      neighbour with MPI_Sendrecv, receiving its left neighbour's into a
 *      second malloc'd buffer that a kernel had also moved into VRAM. MPI
 *      reads and writes those pages itself (Open MPI's shared-memory
 *      transport copies between processes with process_vm_readv/writev);
 *      each page comes back to system memory on that touch.
 *   2. allreduce: a kernel writes (rank + 1) into every word of a BO bound
 *      in a VM; MPI_Allreduce sums the BO's CPU mapping across ranks into a
 *      malloc'd buffer; a READ_SUM kernel on that buffer and the CPU both
 *      check every word is 1 + 2 + ... + size.
 * Every rank checks its results word by word and the job fails if any
 * rank's do not match.
 *
 * Usage: mpirun -np N ugpu-mpi-example URI [URI...]
 *   rank r opens URI number (r mod the number of URIs): its own device
 *   (one ugpu-sim socket per rank) or devices shared by several ranks.
 * Public API only, as any program would be written (docs/mpi.md).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>
#include <ugpu/bo.h>
#include <ugpu/device.h>
#include <ugpu/ugpu.h>
#include <ugpu/vm.h>

#define RING_BYTES (4u << 20) /* 4 MiB: two 2 MiB ranges each way */
#define BO_BYTES (1u << 20)
#define BO_VA 0x100000000ull /* where the BO is bound in its (non-mirror) VM */
#define WAIT_MS 30000

static int rank;

static int fail(const char *what, int err)
{
	fprintf(stderr, "rank %d: %s: %s\n", rank, what, ugpu_strerror(err));
	return err ? err : -EIO;
}

/* Every rank takes part in every exchange: before one, all ranks learn
 * whether all are ready, so a rank that failed cannot leave the others
 * waiting. Returns 1 when every rank's @ok is 1. */
static int all_ok(int ok)
{
	int all = 0;

	MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
	return all;
}

/* Run one kernel to its end: the submission's or the wait's error, else how
 * the kernel ended. */
static int kernel(struct ugpu_queue *q, enum ugpu_kernel_op op, uint64_t va, uint64_t bytes,
		  uint64_t value, uint64_t *sum)
{
	struct ugpu_kernel k = { .size = sizeof(k), .op = op, .va = va, .bytes = bytes,
				 .value = value };
	struct ugpu_kernel_result r = { .size = sizeof(r) };
	uint64_t fence;
	int ret = ugpu_queue_submit(q, &k, &fence);

	if (!ret)
		ret = ugpu_fence_wait(q, fence, WAIT_MS, &r);
	if (!ret)
		ret = r.status;
	if (!ret && sum)
		*sum = r.sum;
	return ret;
}

static int ring(struct ugpu_device *dev, int size)
{
	struct ugpu_vm_opts vo = { .size = sizeof(vo), .flags = UGPU_VM_MIRROR,
				   .mirror_start = 0x10000, .mirror_size = (1ull << 47) - 0x20000,
				   .name = "mpi-svm" };
	const size_t words = RING_BYTES / 8;
	int right = (rank + 1) % size, left = (rank + size - 1) % size;
	struct ugpu_queue *q = NULL;
	struct ugpu_vm *vm = NULL;
	uint64_t *send = NULL, *recv = NULL;
	size_t i;
	int ret;

	send = malloc(RING_BYTES);
	recv = malloc(RING_BYTES);
	if (!send || !recv) {
		ret = fail("malloc", -ENOMEM);
		goto out_sync;
	}
	ret = ugpu_vm_create(dev, &vo, &vm);
	if (ret) {
		fail("ugpu_vm_create (mirror)", ret);
		goto out_sync;
	}
	ret = ugpu_queue_create(vm, NULL, &q);
	if (ret) {
		fail("ugpu_queue_create", ret);
		goto out_sync;
	}
	for (i = 0; i < words; i++)
		send[i] = ((uint64_t)rank << 32) + i;
	/* Both buffers into VRAM: the add moves @send, the write moves @recv
	 * (its contents are about to be replaced by MPI anyway). */
	ret = kernel(q, UGPU_KERNEL_ATOMIC_ADD, (uintptr_t)send, RING_BYTES, (uint64_t)rank + 1, NULL);
	if (!ret)
		ret = kernel(q, UGPU_KERNEL_WRITE, (uintptr_t)recv, RING_BYTES, ~0ull, NULL);
	if (ret)
		fail("kernel on malloc'd memory", ret);
out_sync:
	if (!all_ok(!ret)) {
		ret = ret ? ret : -ECANCELED;
		goto out;
	}
	MPI_Sendrecv(send, (int)words, MPI_UINT64_T, right, 1, recv, (int)words, MPI_UINT64_T, left,
		     1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
	for (i = 0; i < words; i++) {
		uint64_t want = ((uint64_t)left << 32) + i + (uint64_t)left + 1;

		if (recv[i] != want) {
			fprintf(stderr, "rank %d: ring: word %zu from rank %d is %#" PRIx64
					", expected %#" PRIx64 "\n",
				rank, i, left, recv[i], want);
			ret = -EIO;
			goto out;
		}
	}
out:
	ugpu_queue_destroy(q);
	ugpu_vm_destroy(vm);
	free(send);
	free(recv);
	return ret;
}

static int allreduce(struct ugpu_device *dev, int size)
{
	struct ugpu_vm_opts vo = { .size = sizeof(vo), .name = "mpi-bo" };
	struct ugpu_vm_opts mo = { .size = sizeof(mo), .flags = UGPU_VM_MIRROR,
				   .mirror_start = 0x10000, .mirror_size = (1ull << 47) - 0x20000,
				   .name = "mpi-check" };
	struct ugpu_bo_opts bo_opts = { .size = sizeof(bo_opts), .bytes = BO_BYTES,
					.placements = { UGPU_PLACEMENT_VRAM, UGPU_PLACEMENT_SYSTEM } };
	const size_t words = BO_BYTES / 8;
	const uint64_t want = (uint64_t)size * (uint64_t)(size + 1) / 2;
	struct ugpu_queue *q = NULL, *mq = NULL;
	struct ugpu_vm *vm = NULL, *mvm = NULL;
	struct ugpu_bo *bo = NULL;
	uint64_t *map = NULL, *sum = NULL, gpu_sum = 0;
	size_t i;
	int ret;

	sum = malloc(BO_BYTES);
	ret = sum ? ugpu_bo_create(dev, &bo_opts, &bo) : -ENOMEM;
	if (!ret)
		ret = ugpu_vm_create(dev, &vo, &vm);
	if (!ret)
		ret = ugpu_vm_bind(vm, bo, 0, BO_VA, BO_BYTES, 0);
	if (!ret)
		ret = ugpu_queue_create(vm, NULL, &q);
	if (!ret)
		ret = kernel(q, UGPU_KERNEL_WRITE, BO_VA, BO_BYTES, (uint64_t)rank + 1, NULL);
	if (!ret)
		ret = ugpu_bo_map(bo, (void **)&map);
	if (ret)
		fail("BO, bind and kernel", ret);
	if (!all_ok(!ret)) {
		ret = ret ? ret : -ECANCELED;
		goto out;
	}
	/* MPI reads the BO through its CPU mapping. */
	MPI_Allreduce(map, sum, (int)words, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
	for (i = 0; i < words; i++) {
		if (sum[i] != want) {
			fprintf(stderr, "rank %d: allreduce: word %zu is %" PRIu64 ", expected %" PRIu64 "\n",
				rank, i, sum[i], want);
			ret = -EIO;
			goto out;
		}
	}
	/* ... and a kernel reads the result where MPI left it. */
	ret = ugpu_vm_create(dev, &mo, &mvm);
	if (!ret)
		ret = ugpu_queue_create(mvm, NULL, &mq);
	if (!ret)
		ret = kernel(mq, UGPU_KERNEL_READ_SUM, (uintptr_t)sum, BO_BYTES, 0, &gpu_sum);
	if (ret) {
		fail("READ_SUM kernel on the result", ret);
		goto out;
	}
	if (gpu_sum != want * words) {
		fprintf(stderr, "rank %d: the GPU sums the result to %" PRIu64 ", expected %" PRIu64 "\n",
			rank, gpu_sum, want * words);
		ret = -EIO;
	}
out:
	ugpu_queue_destroy(mq);
	ugpu_vm_destroy(mvm);
	if (map)
		ugpu_bo_unmap(bo);
	ugpu_queue_destroy(q);
	ugpu_vm_destroy(vm);
	ugpu_bo_put(bo);
	free(sum);
	return ret;
}

int main(int argc, char **argv)
{
	struct ugpu_context *ctx = NULL;
	struct ugpu_device *dev = NULL;
	int size, ret, ok;
	const char *uri;

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	if (argc < 2) {
		if (!rank)
			fprintf(stderr, "usage: mpirun -np N %s URI [URI...]\n", argv[0]);
		MPI_Finalize();
		return 2;
	}
	uri = argv[1 + rank % (argc - 1)];
	ret = ugpu_context_create(NULL, &ctx);
	if (!ret)
		ret = ugpu_device_open(ctx, uri, &dev);
	if (ret)
		fail(uri, ret);
	ok = all_ok(!ret) && all_ok(!ring(dev, size)) && all_ok(!allreduce(dev, size));
	if (!rank)
		printf("%s: %d ranks, ring over malloc'd memory in VRAM and allreduce from mapped BOs%s\n",
		       ok ? "ok" : "FAILED", size, ok ? ", every word as expected" : "");
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	MPI_Finalize();
	return ok ? 0 : 1;
}
