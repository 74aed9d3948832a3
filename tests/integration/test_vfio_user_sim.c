/* SPDX-License-Identifier: MIT */
/*
 * The vfio-user client against the reference device (ugpu-sim, in process):
 * identity through config space and BAR0, VRAM through mmap and through
 * REGION_READ byte-exact, MSI-X and REQ eventfds, DMA by fd and in-band with
 * a real copy engine, max_dma_maps, surprise removal.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "vfio/transport.h"
#include "vfio/vfio_user.h"
#include "tools/ugpu-sim/sim.h"

#define VRAM (4u << 20)

struct fix {
	struct sim *sim;
	struct vfio_dev *dev;
	bool single_socket; /* VFIO_USER_NO_TWIN_SOCKET */
};

static int setup_opts(void **state, uint32_t flags)
{
	struct vfio_user_opts vo = { .size = sizeof(vo), .flags = flags };
	struct fix *f = calloc(1, sizeof(*f));
	struct sim_opts o;
	int ret;

	sim_opts_init(&o);
	o.vram_size = VRAM;
	o.max_dma_maps = 8;
	o.req_interval_ms = 100;
	ret = sim_start(&o, &f->sim);
	if (ret) {
		fprintf(stderr, "sim_start: %s\n", strerror(-ret));
		free(f);
		return -1;
	}
	ret = vfio_user_open_opts(NULL, sim_socket_path(f->sim, 0), &vo, &f->dev);
	if (ret) {
		fprintf(stderr, "vfio_user_open: %s\n", strerror(-ret));
		sim_stop(f->sim);
		free(f);
		return -1;
	}
	f->single_socket = flags & VFIO_USER_NO_TWIN_SOCKET;
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_opts(state, 0);
}

static int setup_single_socket(void **state)
{
	return setup_opts(state, VFIO_USER_NO_TWIN_SOCKET);
}

static int teardown(void **state)
{
	struct fix *f = *state;

	if (f->dev)
		f->dev->ops->close(f->dev);
	sim_stop(f->sim);
	free(f);
	return 0;
}

static bool wait_efd(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint64_t v;

	if (poll(&p, 1, ms) != 1)
		return false;
	return read(fd, &v, 8) == 8 && v >= 1;
}

static void test_identity_and_regions(void **state)
{
	struct fix *f = *state;
	struct vfio_dev_region_info ri;
	struct vfio_dev_irq_info ii;
	struct vfio_iommu_info io;
	uint32_t v;
	uint64_t v64;

	assert_int_equal(f->dev->ops->region_info(f->dev, VFIO_REGION_BAR0, &ri), 0);
	assert_int_equal(ri.size, 0x10000);
	assert_false(ri.flags & VFIO_REGION_F_MMAP);
	assert_int_equal(f->dev->ops->region_info(f->dev, VFIO_REGION_BAR2, &ri), 0);
	assert_int_equal(ri.size, VRAM);
	assert_true(ri.flags & VFIO_REGION_F_MMAP);
	assert_int_equal(f->dev->ops->region_info(f->dev, VFIO_REGION_CONFIG, &ri), 0);
	assert_int_equal(ri.size, 256);
	assert_int_equal(vfio_read32(f->dev, VFIO_REGION_CONFIG, 0, &v), 0);
	assert_int_equal(v, 0x00015547);
	assert_int_equal(vfio_read32(f->dev, VFIO_REGION_BAR0, 0, &v), 0);
	assert_int_equal(v, 0x55475055);
	assert_int_equal(vfio_read64(f->dev, VFIO_REGION_BAR0, 0x10, &v64), 0);
	assert_int_equal(v64, VRAM);
	assert_int_equal(vfio_write32(f->dev, VFIO_REGION_BAR0, 0x40, 0xa5a5f00d), 0);
	assert_int_equal(vfio_read32(f->dev, VFIO_REGION_BAR0, 0x40, &v), 0);
	assert_int_equal(v, 0xa5a5f00d);
	assert_int_equal(f->dev->ops->irq_info(f->dev, VFIO_IRQ_MSIX, &ii), 0);
	assert_int_equal(ii.count, 5);
	assert_int_equal(f->dev->ops->irq_info(f->dev, VFIO_IRQ_REQ, &ii), 0);
	assert_int_equal(ii.count, 1);
	assert_int_equal(f->dev->ops->iommu_info(f->dev, &io), 0);
	assert_int_equal(io.max_mappings, 8);
	assert_int_equal(io.ranges[0].end, (1ull << 48) - 1);
}

static void test_vram_mmap_and_region_io(void **state)
{
	struct fix *f = *state;
	uint8_t *map = NULL, *buf = malloc(VRAM);

	assert_int_equal(f->dev->ops->region_mmap(f->dev, VFIO_REGION_BAR2, 0, VRAM,
						  PROT_READ | PROT_WRITE, (void **)&map),
			 0);
	for (size_t i = 0; i < VRAM; i++)
		map[i] = (uint8_t)(i * 31 + (i >> 16));
	/* the whole VRAM through REGION_READ: several max_data_xfer chunks */
	assert_int_equal(f->dev->ops->region_read(f->dev, VFIO_REGION_BAR2, 0, buf, VRAM), 0);
	assert_memory_equal(buf, map, VRAM);
	memset(buf, 0x6b, 3 * 4096);
	assert_int_equal(f->dev->ops->region_write(f->dev, VFIO_REGION_BAR2, 8192, buf, 3 * 4096), 0);
	assert_memory_equal(map + 8192, buf, 3 * 4096);
	assert_int_equal(f->dev->ops->region_munmap(f->dev, map, VRAM), 0);
	free(buf);
}

/*
 * Posted writes (region_write_posted: REGION_WRITE with NO_REPLY): no
 * reply is waited for, and the server applies them in order with what
 * follows, so a read after a run of them sees every one. Bad accesses are
 * refused before anything is sent.
 */
static void test_posted_writes(void **state)
{
	struct fix *f = *state;
	uint8_t *map = NULL;
	uint32_t v = 0;

	assert_non_null(f->dev->ops->region_write_posted);
	for (uint32_t i = 0; i < 4096; i++)
		assert_int_equal(vfio_write32_posted(f->dev, VFIO_REGION_BAR2, 65536 + 4ull * i,
						     0xc0de0000u + i),
				 0);
	/* a read after them, on the same socket: the last one is there */
	assert_int_equal(vfio_read32(f->dev, VFIO_REGION_BAR2, 65536 + 4ull * 4095, &v), 0);
	assert_int_equal(v, 0xc0de0000u + 4095);
	assert_int_equal(f->dev->ops->region_mmap(f->dev, VFIO_REGION_BAR2, 0, VRAM,
						  PROT_READ | PROT_WRITE, (void **)&map),
			 0);
	for (uint32_t i = 0; i < 4096; i++)
		assert_int_equal(((uint32_t *)(map + 65536))[i], 0xc0de0000u + i);
	assert_int_equal(f->dev->ops->region_munmap(f->dev, map, VRAM), 0);
	/* refused here: too long, empty, past the region, no such region */
	{
		uint8_t b[16] = { 0 };

		assert_int_equal(f->dev->ops->region_write_posted(f->dev, VFIO_REGION_BAR2, 0, b, 16),
				 -EINVAL);
		assert_int_equal(f->dev->ops->region_write_posted(f->dev, VFIO_REGION_BAR2, 0, b, 0),
				 -EINVAL);
		assert_int_equal(f->dev->ops->region_write_posted(f->dev, VFIO_REGION_BAR2, VRAM, b,
								  4),
				 -EINVAL);
		assert_int_equal(vfio_write32_posted(f->dev, 99, 0, 1), -EINVAL);
	}
}

/* Put one COPY (+ FENCE with irq) on engine 0 and wait for the vector. */
static void copy_vram_to_iova(struct fix *f, uint8_t *map, uint64_t src, uint64_t iova,
			      uint64_t size, int efd, uint64_t seq)
{
	uint64_t ring = 0x100000;
	uint64_t desc[16] = { 0 };
	uint32_t tail = (uint32_t)(((seq - 1) * 128) % 4096), status;

	/* COPY */
	desc[0] = 1;
	desc[1] = src;
	desc[2] = iova;
	desc[3] = size;
	desc[5] = (uint64_t)1 << 32; /* src_space 0 VRAM, dst_space 1 IOVA */
	/* FENCE, raise vector 0 */
	desc[8] = 3 | ((uint64_t)1 << 32);
	desc[10] = ~0ull;
	desc[12] = seq;
	memcpy(map + ring + tail, desc, sizeof(desc));
	if (seq == 1) {
		assert_int_equal(vfio_write64(f->dev, 0, 0x1000, ring), 0);
		assert_int_equal(vfio_write32(f->dev, 0, 0x1008, 4096), 0);
		assert_int_equal(vfio_write32(f->dev, 0, 0x1014, 1), 0);
	}
	assert_int_equal(vfio_write32(f->dev, 0, 0x1010, (tail + 128) % 4096), 0);
	assert_true(wait_efd(efd, 5000));
	assert_int_equal(vfio_read32(f->dev, 0, 0x1018, &status), 0);
	assert_false(status & 2);
}

static void test_dma_fd_and_inband(void **state)
{
	struct fix *f = *state;
	uint8_t *map = NULL;
	int efd[5], memfd;
	uint8_t *sys, *plain = aligned_alloc(4096, 1 << 20);
	uint32_t cmd;
	uint64_t unmapped, v;

	for (int i = 0; i < 5; i++)
		efd[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	assert_int_equal(f->dev->ops->set_irqs(f->dev, VFIO_IRQ_MSIX, 0, 5, efd), 0);
	/* memory space + bus master */
	assert_int_equal(vfio_read32(f->dev, VFIO_REGION_CONFIG, 4, &cmd), 0);
	assert_int_equal(f->dev->ops->region_write(f->dev, VFIO_REGION_CONFIG, 4,
						   &(uint16_t){ (uint16_t)(cmd | 6) }, 2),
			 0);
	assert_int_equal(f->dev->ops->region_mmap(f->dev, VFIO_REGION_BAR2, 0, VRAM,
						  PROT_READ | PROT_WRITE, (void **)&map),
			 0);
	for (size_t i = 0; i < (1 << 20); i++)
		map[0x200000 + i] = (uint8_t)(i * 17 + 3);

	/* by fd: the device maps our memfd */
	memfd = memfd_create("sys", MFD_CLOEXEC);
	assert_int_equal(ftruncate(memfd, 2 << 20), 0);
	sys = mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	assert_true(sys != MAP_FAILED);
	assert_int_equal(f->dev->ops->dma_map(f->dev, 0x40000000, 1 << 20, sys + (1 << 20), memfd,
					      1 << 20, VFIO_DMA_READ | VFIO_DMA_WRITE),
			 0);
	copy_vram_to_iova(f, map, 0x200000, 0x40000000, 1 << 20, efd[0], 1);
	assert_memory_equal(sys + (1 << 20), map + 0x200000, 1 << 20);

	/* in-band: no fd, the device sends DMA_WRITE messages we serve */
	memset(plain, 0, 1 << 20);
	assert_int_equal(f->dev->ops->dma_map(f->dev, 0x50000000, 1 << 20, plain, -1, 0,
					      VFIO_DMA_READ | VFIO_DMA_WRITE),
			 0);
	copy_vram_to_iova(f, map, 0x200000, 0x50000000, 1 << 20, efd[0], 2);
	assert_memory_equal(plain, map + 0x200000, 1 << 20);

	assert_int_equal(f->dev->ops->dma_unmap(f->dev, 0x40000000, 1 << 20, &unmapped), 0);
	assert_int_equal(unmapped, 1 << 20);
	assert_int_equal(f->dev->ops->dma_unmap(f->dev, 0x50000000, 1 << 20, &unmapped), 0);
	assert_int_equal(unmapped, 1 << 20);
	(void)v;
	/* The client offers twin-socket mode unless told not to, and ugpu-sim
	 * takes it: the DMA_WRITEs above came on the twin socket. */
	{
		struct sim_state st;

		assert_int_equal(sim_state(f->sim, 0, &st), 0);
		assert_true(st.inband > 0);
		assert_int_equal(st.twin, !f->single_socket);
	}
	for (int i = 0; i < 5; i++)
		close(efd[i]);
	munmap(sys, 2 << 20);
	close(memfd);
	free(plain);
}

static void test_dma_fd_and_inband_single_socket(void **state)
{
	test_dma_fd_and_inband(state);
}

static void test_max_dma_maps(void **state)
{
	struct fix *f = *state;
	uint8_t *mem = aligned_alloc(4096, 16 * 4096);
	uint64_t unmapped;

	for (int i = 0; i < 8; i++)
		assert_int_equal(f->dev->ops->dma_map(f->dev, 0x10000 * (uint64_t)(i + 1), 4096,
						      mem + 4096 * i, -1, 0, VFIO_DMA_READ),
				 0);
	assert_int_equal(f->dev->ops->dma_map(f->dev, 0x900000, 4096, mem, -1, 0, VFIO_DMA_READ),
			 -ENOSPC);
	assert_int_equal(f->dev->ops->dma_unmap(f->dev, 0, 1ull << 40, &unmapped), 0);
	assert_int_equal(unmapped, 8 * 4096);
	free(mem);
}

static void test_req_and_surprise(void **state)
{
	struct fix *f = *state;
	int req = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	uint32_t v;
	struct timespec a, b;

	assert_int_equal(f->dev->ops->set_irqs(f->dev, VFIO_IRQ_REQ, 0, 1, &req), 0);
	assert_int_equal(sim_unplug_request(f->sim, 0), 0);
	assert_true(wait_efd(req, 2000));
	/* a second removal, sudden: every call fails fast from now on */
	assert_int_equal(sim_unplug_surprise(f->sim, 0), 0);
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < 100; i++) {
		int r = vfio_read32(f->dev, 0, 0, &v);

		if (r == -ENODEV)
			break;
		assert_int_equal(r, 0);
		usleep(1000);
	}
	assert_int_equal(vfio_read32(f->dev, 0, 0, &v), -ENODEV);
	clock_gettime(CLOCK_MONOTONIC, &b);
	assert_true(b.tv_sec - a.tv_sec < 3);
	assert_true(vfio_user_is_dead(f->dev));
	close(req);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_identity_and_regions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vram_mmap_and_region_io, setup, teardown),
		cmocka_unit_test_setup_teardown(test_posted_writes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dma_fd_and_inband, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dma_fd_and_inband_single_socket,
						setup_single_socket, teardown),
		cmocka_unit_test_setup_teardown(test_max_dma_maps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_req_and_surprise, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
