/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim as a vfio-user server: negotiation, regions, registers, config
 * space, validation of malformed requests, one client at a time, disconnect
 * cleanup, removal (request and surprise) and the control socket.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "test_sim_client.h"

#define VRAM (4u << 20)

struct fx {
	struct sim *sim;
	struct tc c;
	char path[108];
	char ctl[108];
};

static int fx_setup_opts(void **state, unsigned max_maps, bool control)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct sim_opts o;

	sim_opts_init(&o);
	tc_sock_path(f->path, sizeof(f->path), "proto");
	o.socket_path = f->path;
	o.vram_size = VRAM;
	o.req_interval_ms = 20;
	if (max_maps)
		o.max_dma_maps = max_maps;
	if (control) {
		snprintf(f->ctl, sizeof(f->ctl), "/tmp/ugpu-test-ctl-%d.sock", (int)getpid());
		o.control_path = f->ctl;
	}
	assert_int_equal(sim_start(&o, &f->sim), 0);
	assert_int_equal(tc_connect(f->path, &f->c), 0);
	*state = f;
	return 0;
}

static int fx_setup(void **state)
{
	return fx_setup_opts(state, 0, false);
}

static int fx_setup_small_maps(void **state)
{
	return fx_setup_opts(state, 4, false);
}

static int fx_setup_control(void **state)
{
	return fx_setup_opts(state, 0, true);
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	tc_close(&f->c);
	sim_stop(f->sim);
	free(f);
	return 0;
}

static void test_version(void **state)
{
	struct fx *f = *state;
	struct vfu_version v = { .major = 0, .minor = 7 };
	struct tc_reply *r = tc_r();
	char caps[512];

	/* A fresh connection: the reply names our limits. */
	tc_close(&f->c);
	assert_int_equal(tc_connect_raw(f->path, &f->c), 0);
	assert_int_equal(tc_version(&f->c, caps, sizeof(caps)), 0);
	assert_non_null(strstr(caps, "\"max_msg_fds\":8"));
	assert_non_null(strstr(caps, "\"max_data_xfer_size\":1048576"));
	assert_non_null(strstr(caps, "\"max_dma_maps\":65535"));
	assert_non_null(strstr(caps, "\"pgsizes\":4096"));
	/* A newer minor is answered with ours; another major is refused. */
	assert_int_equal(tc_call(&f->c, VFU_CMD_VERSION, &v, sizeof(v), NULL, 0, NULL, 0, r), 0);
	memcpy(&v, r->body, sizeof(v));
	assert_int_equal(v.major, 0);
	assert_int_equal(v.minor, 1);
	/* The capabilities are JSON, read as JSON: a key inside a string is
	 * text, broken JSON is refused. */
	{
		static const char quoted[] = "{\"capabilities\":{\"note\":\"\\\"max_data_xfer_size\\\":4\"}}";
		static const char broken[] = "{\"capabilities\":{\"max_data_xfer_size\":";

		v.minor = 1;
		assert_int_equal(tc_call(&f->c, VFU_CMD_VERSION, &v, sizeof(v), quoted, sizeof(quoted),
					 NULL, 0, tc_r()),
				 0);
		assert_int_equal(tc_call(&f->c, VFU_CMD_VERSION, &v, sizeof(v), broken, sizeof(broken),
					 NULL, 0, tc_r()),
				 -EINVAL);
	}
	/* Another major: the specification has the server close the
	 * connection (no reply). */
	v.major = 1;
	assert_int_equal(tc_call(&f->c, VFU_CMD_VERSION, &v, sizeof(v), NULL, 0, NULL, 0, tc_r()),
			 -ECONNRESET);
	tc_close(&f->c);
	assert_int_equal(tc_connect(f->path, &f->c), 0);
}

static void test_device_and_regions(void **state)
{
	struct fx *f = *state;
	struct vfu_device_info di = { .argsz = sizeof(di) };
	struct vfu_region_info ri = { 0 };
	struct tc_reply *r = tc_r();
	uint8_t *vram, buf[256];
	int fd;

	assert_int_equal(tc_call(&f->c, VFU_CMD_DEVICE_GET_INFO, &di, sizeof(di), NULL, 0, NULL, 0, r), 0);
	memcpy(&di, r->body, sizeof(di));
	assert_int_equal(di.num_regions, 9);
	assert_int_equal(di.num_irqs, 5);
	assert_true(di.flags & VFU_DEV_F_PCI);
	assert_true(di.flags & VFU_DEV_F_RESET);

	assert_int_equal(tc_region_info(&f->c, 0, &ri, &fd), 0);
	assert_int_equal(ri.size, 0x10000);
	assert_false(ri.flags & VFU_REGION_F_MMAP);
	assert_int_equal(fd, -1);
	assert_int_equal(tc_region_info(&f->c, 7, &ri, NULL), 0);
	assert_int_equal(ri.size, 256);
	assert_int_equal(tc_region_info(&f->c, 1, &ri, NULL), 0);
	assert_int_equal(ri.size, 0);
	assert_int_equal(tc_region_info(&f->c, 9, &ri, NULL), -EINVAL);

	assert_int_equal(tc_region_info(&f->c, 2, &ri, &fd), 0);
	assert_int_equal(ri.size, VRAM);
	assert_true(ri.flags & VFU_REGION_F_MMAP);
	assert_true(fd >= 0);
	vram = mmap(NULL, VRAM, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)ri.offset);
	assert_true(vram != MAP_FAILED);
	close(fd);

	/* Write through the mapping, read with REGION_READ, and back. */
	for (int i = 0; i < 256; i++)
		vram[VRAM - 4096 + i] = (uint8_t)(i * 7 + 1);
	assert_int_equal(tc_region_rw(&f->c, 2, VRAM - 4096, buf, 256, false), 0);
	assert_memory_equal(buf, vram + VRAM - 4096, 256);
	memset(buf, 0x5a, sizeof(buf));
	assert_int_equal(tc_region_rw(&f->c, 2, 12345, buf, 100, true), 0);
	for (int i = 0; i < 100; i++)
		assert_int_equal(vram[12345 + i], 0x5a);
	/* Past the end. */
	assert_int_equal(tc_region_rw(&f->c, 2, VRAM - 8, buf, 16, false), -EINVAL);
	munmap(vram, VRAM);
}

static void test_registers_and_config(void **state)
{
	struct fx *f = *state;
	uint32_t cap;
	unsigned n = 0;

	assert_int_equal(tc_rd32(&f->c, 0x0), 0x55475055);
	assert_int_equal(tc_rd32(&f->c, 0x4), 0x00010004); /* 1.4 (test_sim_queues, test_sim_vm) */
	assert_int_equal(tc_rd32(&f->c, 0x8) & 3u, 3u);
	assert_int_equal(tc_rd32(&f->c, 0xc), 2);
	assert_int_equal(tc_rd64(&f->c, 0x10), VRAM);
	assert_int_equal(tc_rd32(&f->c, 0x10), VRAM); /* low half */
	assert_int_equal(tc_rd32(&f->c, 0x18), 0);
	assert_int_equal(tc_wr32(&f->c, 0x40, 0xcafef00d), 0);
	assert_int_equal(tc_rd32(&f->c, 0x40), 0xcafef00d);
	/* Read-only registers ignore writes. */
	assert_int_equal(tc_wr32(&f->c, 0x0, 0), 0);
	assert_int_equal(tc_rd32(&f->c, 0x0), 0x55475055);
	/* 64-bit register through its halves. */
	assert_int_equal(tc_wr32(&f->c, 0x1000, 0x1000), 0);
	assert_int_equal(tc_wr32(&f->c, 0x1004, 0x1), 0);
	assert_int_equal(tc_rd64(&f->c, 0x1000), 0x100001000ull);

	assert_int_equal(tc_cfg32(&f->c, 0x0), 0x00015547);
	assert_int_equal(tc_cfg32(&f->c, 0x8) >> 8, 0x030200);
	assert_int_equal(tc_cfg32(&f->c, 0x2c), 0x00015547);
	assert_true(tc_cfg32(&f->c, 0x4) & (1u << 20)); /* capabilities list */
	/* Walk the capability list: PM, MSI-X, vendor. */
	cap = tc_cfg32(&f->c, 0x34) & 0xff;
	while (cap && n < 8) {
		uint32_t hdr = tc_cfg32(&f->c, cap);
		static const uint32_t want_id[] = { 0x01, 0x11, 0x09 };
		static const uint32_t want_at[] = { 0x40, 0x50, 0x60 };

		assert_true(n < 3);
		assert_int_equal(cap, want_at[n]);
		assert_int_equal(hdr & 0xff, want_id[n]);
		if (n == 1)
			assert_int_equal((hdr >> 16) & 0x7ff, 4); /* 5 vectors */
		cap = (hdr >> 8) & 0xff;
		n++;
	}
	assert_int_equal(n, 3);
	assert_int_equal(tc_cfg32(&f->c, 0x54), 0x8000);
	assert_int_equal(tc_cfg32(&f->c, 0x58), 0x9000);
	assert_int_equal(tc_cfg32(&f->c, 0x44) & 0xb, 0x8); /* D0, No_Soft_Reset */
	assert_int_equal(tc_cfg32(&f->c, 0x68), 0); /* PWR_STATE D0 */
	/* BAR sizing. */
	assert_int_equal(tc_cfg_wr32(&f->c, 0x10, 0xffffffff), 0);
	assert_int_equal(tc_cfg32(&f->c, 0x10), 0xffff0000);
	assert_int_equal(tc_cfg_wr32(&f->c, 0x18, 0xffffffff), 0);
	assert_int_equal(tc_cfg32(&f->c, 0x18), (uint32_t)~(VRAM - 1) | 0xc);
	/* Vendor/device are read-only. */
	assert_int_equal(tc_cfg_wr32(&f->c, 0x0, 0), 0);
	assert_int_equal(tc_cfg32(&f->c, 0x0), 0x00015547);
}

static void test_irq_info(void **state)
{
	struct fx *f = *state;
	static const uint32_t want[] = { 1, 0, 5, 1, 1 };

	for (uint32_t i = 0; i < 5; i++) {
		struct vfu_irq_info in = { .argsz = sizeof(in), .index = i }, out;
		struct tc_reply *r = tc_r();

		assert_int_equal(tc_call(&f->c, VFU_CMD_DEVICE_GET_IRQ_INFO, &in, sizeof(in), NULL, 0,
					 NULL, 0, r), 0);
		memcpy(&out, r->body, sizeof(out));
		assert_int_equal(out.count, want[i]);
	}
	{
		struct vfu_irq_info in = { .argsz = sizeof(in), .index = 5 };

		assert_int_equal(tc_call(&f->c, VFU_CMD_DEVICE_GET_IRQ_INFO, &in, sizeof(in), NULL, 0,
					 NULL, 0, tc_r()), -EINVAL);
	}
}

static void test_malformed(void **state)
{
	struct fx *f = *state;
	struct tc_reply *r;
	struct vfu_region_info ri = { .argsz = 8, .index = 0 };
	struct vfu_region_access a = { .offset = 0, .region = 0, .count = 2 };
	struct vfu_irq_set s = { .argsz = sizeof(s),
				 .flags = VFU_IRQ_SET_DATA_EVENTFD | VFU_IRQ_SET_ACTION_TRIGGER,
				 .index = 2, .start = 4, .count = 2 };
	struct vfu_hdr h;
	uint8_t junk[64] = { 0 };
	int efd = eventfd(0, EFD_CLOEXEC);
	uint32_t v = 0;

	/* Unknown command. */
	assert_int_equal(tc_call(&f->c, 99, NULL, 0, NULL, 0, NULL, 0, tc_r()), -ENOSYS);
	/* Short payloads and bad argsz. */
	assert_int_equal(tc_call(&f->c, VFU_CMD_DEVICE_GET_REGION_INFO, &ri, 4, NULL, 0, NULL, 0,
				 tc_r()), -EINVAL);
	assert_int_equal(tc_call(&f->c, VFU_CMD_DEVICE_GET_REGION_INFO, &ri, sizeof(ri), NULL, 0,
				 NULL, 0, tc_r()), -EINVAL);
	assert_int_equal(tc_call(&f->c, VFU_CMD_DEVICE_GET_INFO, junk, 3, NULL, 0, NULL, 0, tc_r()),
			 -EINVAL);
	/* BAR0 accesses must be 4 or 8 bytes, aligned, inside. */
	assert_int_equal(tc_call(&f->c, VFU_CMD_REGION_READ, &a, sizeof(a), NULL, 0, NULL, 0, tc_r()),
			 -EINVAL);
	assert_int_equal(tc_region_rw(&f->c, 0, 2, &v, 4, false), -EINVAL);
	assert_int_equal(tc_region_rw(&f->c, 0, 0x10000, &v, 4, false), -EINVAL);
	assert_int_equal(tc_region_rw(&f->c, 5, 0, &v, 4, false), -EINVAL);
	/* REGION_WRITE whose count disagrees with its payload. */
	a.count = 4;
	assert_int_equal(tc_call(&f->c, VFU_CMD_REGION_WRITE, &a, sizeof(a), junk, 8, NULL, 0,
				 tc_r()), -EINVAL);
	/* Oversized count. */
	a.region = 2;
	a.count = VFU_MAX_DATA_XFER + 1;
	assert_int_equal(tc_call(&f->c, VFU_CMD_REGION_READ, &a, sizeof(a), NULL, 0, NULL, 0, tc_r()),
			 -EINVAL);
	/* SET_IRQS past the vectors, fd count mismatch, bad flags. */
	assert_int_equal(tc_call(&f->c, VFU_CMD_DEVICE_SET_IRQS, &s, sizeof(s), NULL, 0, &efd, 1,
				 tc_r()), -EINVAL);
	s.start = 0;
	assert_int_equal(tc_call(&f->c, VFU_CMD_DEVICE_SET_IRQS, &s, sizeof(s), NULL, 0, &efd, 1,
				 tc_r()), -EINVAL);
	s.flags |= VFU_IRQ_SET_DATA_BOOL;
	assert_int_equal(tc_call(&f->c, VFU_CMD_DEVICE_SET_IRQS, &s, sizeof(s), NULL, 0, NULL, 0,
				 tc_r()), -EINVAL);
	s.flags = VFU_IRQ_SET_DATA_EVENTFD | VFU_IRQ_SET_ACTION_TRIGGER;
	s.index = 7;
	assert_int_equal(tc_call(&f->c, VFU_CMD_DEVICE_SET_IRQS, &s, sizeof(s), NULL, 0, NULL, 0,
				 tc_r()), -EINVAL);
	/* An fd on a command that takes none. */
	assert_int_equal(tc_call(&f->c, VFU_CMD_DEVICE_RESET, NULL, 0, NULL, 0, &efd, 1, tc_r()),
			 -EINVAL);
	/* DMA_MAP: unaligned, outside 2^48, bad flags. */
	assert_int_equal(tc_dma_map(&f->c, 0x1001, 0x1000, -1, 0, VFU_DMA_F_READ), -EINVAL);
	assert_int_equal(tc_dma_map(&f->c, 1ull << 48, 0x1000, -1, 0, VFU_DMA_F_READ), -EINVAL);
	assert_int_equal(tc_dma_map(&f->c, 0x1000, 0x1000, -1, 0, 0x80), -EINVAL);
	/* A message header claiming less than a header. */
	h = (struct vfu_hdr){ .msg_id = 77, .cmd = VFU_CMD_DEVICE_GET_INFO, .size = 8 };
	assert_int_equal(tc_send_raw(&f->c, &h, sizeof(h), NULL, 0), 0);
	r = tc_r();
	assert_int_equal(tc_wait_reply(&f->c, 77, VFU_CMD_DEVICE_GET_INFO, r), -EINVAL);
	/* A message larger than the maximum is drained and refused. */
	{
		size_t big = VFU_MAX_MSG + 4096;
		uint8_t *b = calloc(1, big);

		h = (struct vfu_hdr){ .msg_id = 78, .cmd = VFU_CMD_REGION_WRITE, .size = (uint32_t)big };
		memcpy(b, &h, sizeof(h));
		assert_int_equal(tc_send_raw(&f->c, b, big, NULL, 0), 0);
		free(b);
		assert_int_equal(tc_wait_reply(&f->c, 78, VFU_CMD_REGION_WRITE, tc_r()), -E2BIG);
	}
	/* Still alive and in sync. */
	assert_int_equal(tc_rd32(&f->c, 0), 0x55475055);
	close(efd);
}

/*
 * Regression (issue 12, find 1): a REGION_READ/WRITE of count 0 on VRAM or
 * config space reached memcpy with a NULL buffer and aborted the server under
 * UBSan. A zero-byte access inside a region is a no-op that succeeds; BAR0
 * still takes only 4- and 8-byte accesses.
 */
static void test_region_zero_count(void **state)
{
	static const uint8_t raw[] = { 0x02, 0x00, 0x09, 0x00, 0x20, 0x00, 0x00, 0x00, /* hdr */
				       0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
				       0, 0, 0, 0, 0, 0, 0, 0, /* offset 0 */
				       0x02, 0, 0, 0, 0, 0, 0, 0 }; /* region 2, count 0 */
	struct fx *f = *state;
	struct tc_reply *r = tc_r();
	uint32_t regions[] = { 2, 7 };

	assert_int_equal(tc_send_raw(&f->c, raw, sizeof(raw), NULL, 0), 0);
	assert_int_equal(tc_wait_reply(&f->c, 2, VFU_CMD_REGION_READ, r), 0);
	assert_int_equal(r->len, sizeof(struct vfu_region_access));
	for (unsigned i = 0; i < 2; i++) {
		struct vfu_region_access a = { .offset = 4, .region = regions[i], .count = 0 };

		r = tc_r();
		assert_int_equal(tc_call(&f->c, VFU_CMD_REGION_READ, &a, sizeof(a), NULL, 0, NULL, 0, r),
				 0);
		assert_int_equal(r->len, sizeof(a));
		assert_int_equal(tc_call(&f->c, VFU_CMD_REGION_WRITE, &a, sizeof(a), NULL, 0, NULL, 0,
					 tc_r()),
				 0);
		/* still bounds-checked */
		a.offset = regions[i] == 2 ? VRAM + 1 : 257;
		assert_int_equal(tc_call(&f->c, VFU_CMD_REGION_READ, &a, sizeof(a), NULL, 0, NULL, 0,
					 tc_r()),
				 -EINVAL);
	}
	{
		struct vfu_region_access a = { .offset = 0, .region = 0, .count = 0 };

		assert_int_equal(tc_call(&f->c, VFU_CMD_REGION_READ, &a, sizeof(a), NULL, 0, NULL, 0,
					 tc_r()),
				 -EINVAL);
	}
	assert_int_equal(tc_rd32(&f->c, 0), 0x55475055);
}

/* Raise vector @vec of @index through SET_IRQS (DATA_NONE | ACTION_TRIGGER). */
static int tc_trigger(struct tc *c, uint32_t index, uint32_t vec)
{
	struct vfu_irq_set s = { .argsz = sizeof(s),
				 .flags = VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_TRIGGER,
				 .index = index,
				 .start = vec,
				 .count = 1 };

	return tc_call(c, VFU_CMD_DEVICE_SET_IRQS, &s, sizeof(s), NULL, 0, NULL, 0, tc_r());
}

/*
 * Regression (issue 12, find 3): an interrupt fd that cannot take a write (an
 * eventfd whose counter is one below the maximum, a full pipe) blocked the
 * server thread in write() under the device lock for good. Delivery never
 * blocks now: the interrupt is dropped and counted, the device goes on; a pipe
 * without a reader gives EPIPE, not a SIGPIPE that kills the process; fds
 * whose write could sleep on I/O are refused.
 */
static void test_irq_fd_never_blocks(void **state)
{
	struct fx *f = *state;
	uint64_t big = 0xfffffffffffffffeull, v = 0, t0;
	int efd = eventfd(0, EFD_CLOEXEC); /* blocking, as a hostile client passes it */
	int good = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	int mfd = memfd_create("irq", MFD_CLOEXEC);
	struct sim_state st;
	char junk[4096] = { 0 };
	int pfd[2], fl;

	assert_true(efd >= 0 && good >= 0 && mfd >= 0);
	assert_int_equal(write(efd, &big, sizeof(big)), sizeof(big));
	assert_int_equal(tc_set_irq(&f->c, 2, 0, efd), 0);
	t0 = tc_now_ms();
	assert_int_equal(tc_trigger(&f->c, 2, 0), 0);
	assert_true(tc_now_ms() - t0 < 2000);
	/* The device made the fd non-blocking, but the flag is shared with our
	 * copy: clear it again (a hostile client would) and trigger. The
	 * device's write is bounded all the same. */
	assert_true(fcntl(efd, F_GETFL) & O_NONBLOCK);
	assert_int_equal(fcntl(efd, F_SETFL, fcntl(efd, F_GETFL) & ~O_NONBLOCK), 0);
	/* Again and again: the writing thread's backstop timer is made once
	 * and armed for each write. */
	for (int i = 0; i < 3; i++) {
		t0 = tc_now_ms();
		assert_int_equal(tc_trigger(&f->c, 2, 0), 0);
		assert_true(tc_now_ms() - t0 < 2000);
	}

	/* A full pipe (its reader still open), then the same pipe unread. */
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	fl = fcntl(pfd[1], F_GETFL);
	assert_int_equal(fcntl(pfd[1], F_SETFL, fl | O_NONBLOCK), 0);
	while (write(pfd[1], junk, sizeof(junk)) > 0)
		;
	assert_int_equal(fcntl(pfd[1], F_SETFL, fl), 0);
	assert_int_equal(tc_set_irq(&f->c, 2, 1, pfd[1]), 0);
	assert_int_equal(tc_trigger(&f->c, 2, 1), 0);
	close(pfd[0]);
	assert_int_equal(tc_trigger(&f->c, 2, 1), 0);

	/* The other vectors are still delivered, and the drops are counted. */
	assert_int_equal(tc_set_irq(&f->c, 2, 2, good), 0);
	assert_int_equal(tc_trigger(&f->c, 2, 2), 0);
	assert_int_equal(read(good, &v, sizeof(v)), sizeof(v));
	assert_int_equal(v, 1);
	assert_int_equal(sim_state(f->sim, 0, &st), 0);
	assert_true(st.irq_drops >= 4);

	/* A regular file (or anything whose write may sleep) is refused. */
	assert_int_equal(tc_set_irq(&f->c, 2, 3, mfd), -EINVAL);
	assert_int_equal(tc_rd32(&f->c, 0), 0x55475055);
	close(efd);
	close(good);
	close(mfd);
	close(pfd[1]);
}

/* A client that sends but never reads its replies is dropped once a reply
 * cannot be sent within the server's send bound; the device then serves the
 * next client. */
static void test_client_not_reading(void **state)
{
	struct fx *f = *state;
	struct vfu_region_access a = { .offset = 0, .region = 2, .count = VFU_MAX_DATA_XFER };
	struct sim_state st = { 0 };
	uint64_t t0;

	for (int i = 0; i < 8; i++)
		assert_int_equal(tc_send(&f->c, VFU_CMD_REGION_READ, (uint16_t)(100 + i),
					 VFU_F_TYPE_COMMAND, &a, sizeof(a), NULL, 0, NULL, 0),
				 0);
	t0 = tc_now_ms();
	do {
		usleep(20000);
		assert_int_equal(sim_state(f->sim, 0, &st), 0);
	} while (st.client && tc_now_ms() - t0 < 15000);
	assert_false(st.client);
	tc_close(&f->c);
	assert_int_equal(tc_connect(f->path, &f->c), 0);
	assert_int_equal(tc_rd32(&f->c, 0), 0x55475055);
}

/* Twin-socket mode: taken when the client offers it, once per session; the
 * twin socket carries only the device's requests; closing it is leaving. */
static void test_twin_socket(void **state)
{
	static const char offer[] = "{\"capabilities\":{\"twin_socket\":{\"supported\":true}}}";
	struct fx *f = *state;
	struct vfu_version v = { .major = 0, .minor = 1 };
	struct vfu_region_access a = { .offset = 0, .region = 0, .count = 4 };
	struct tc_reply *r;
	struct sim_state st;
	int type = 0;
	socklen_t tl = sizeof(type);

	/* Without the offer there is no twin (fx_setup's VERSION). */
	assert_int_equal(f->c.twin, -1);
	tc_close(&f->c);
	assert_int_equal(tc_connect_raw(f->path, &f->c), 0);
	assert_int_equal(tc_version_twin(&f->c), 0);
	assert_int_equal(getsockopt(f->c.twin, SOL_SOCKET, SO_TYPE, &type, &tl), 0);
	assert_int_equal(type, SOCK_STREAM);
	/* A second VERSION asking again is refused; the session goes on. */
	assert_int_equal(tc_call(&f->c, VFU_CMD_VERSION, &v, sizeof(v), offer, sizeof(offer), NULL,
				 0, tc_r()),
			 -EINVAL);
	/* A command on the twin socket is not served. */
	assert_int_equal(tc_send_on(f->c.twin, VFU_CMD_REGION_READ, 9, VFU_F_TYPE_COMMAND, &a,
				    sizeof(a), NULL, 0, NULL, 0),
			 0);
	r = tc_r();
	assert_int_equal(tc_recv_on(f->c.twin, r, 300), -ETIMEDOUT);
	assert_int_equal(tc_rd32(&f->c, 0), 0x55475055);
	/* Closing the twin socket ends the session. */
	close(f->c.twin);
	f->c.twin = -1;
	for (int i = 0; i < 200; i++) {
		sim_state(f->sim, 0, &st);
		if (!st.client)
			break;
		usleep(5000);
	}
	assert_false(st.client);
	tc_close(&f->c);
	assert_int_equal(tc_connect(f->path, &f->c), 0);
}

static void test_command_before_version(void **state)
{
	struct fx *f = *state;
	struct tc c2;

	tc_close(&f->c);
	assert_int_equal(tc_connect_raw(f->path, &c2), 0);
	{
		struct vfu_device_info di = { .argsz = sizeof(di) };

		assert_int_equal(tc_call(&c2, VFU_CMD_DEVICE_GET_INFO, &di, sizeof(di), NULL, 0, NULL,
					 0, tc_r()), -EINVAL);
	}
	assert_int_equal(tc_version(&c2, NULL, 0), 0);
	assert_int_equal(tc_rd32(&c2, 0), 0x55475055);
	f->c = c2;
}

static void test_dma_map_rules(void **state)
{
	struct fx *f = *state;
	struct sim_state st;
	int mfd = memfd_create("t", MFD_CLOEXEC);

	assert_true(mfd >= 0);
	assert_int_equal(ftruncate(mfd, 1 << 20), 0);
	assert_int_equal(tc_dma_map(&f->c, 0x100000, 0x10000, mfd, 0, VFU_DMA_F_READ), 0);
	assert_int_equal(tc_dma_map(&f->c, 0x108000, 0x10000, -1, 0, VFU_DMA_F_READ), -EEXIST);
	assert_int_equal(tc_dma_map(&f->c, 0x0f8000, 0x10000, -1, 0, VFU_DMA_F_READ), -EEXIST);
	assert_int_equal(tc_dma_map(&f->c, 0x200000, 0x1000, -1, 0, VFU_DMA_F_WRITE), 0);
	assert_int_equal(tc_dma_map(&f->c, 0x300000, 0x1000, -1, 0, VFU_DMA_F_WRITE), 0);
	assert_int_equal(tc_dma_map(&f->c, 0x400000, 0x1000, -1, 0, VFU_DMA_F_WRITE), 0);
	/* max_dma_maps is 4 in this fixture. */
	assert_int_equal(tc_dma_map(&f->c, 0x500000, 0x1000, -1, 0, VFU_DMA_F_WRITE), -ENOSPC);
	/* The fd is past the window size: mmap fails -> error, not crash. */
	assert_int_equal(sim_state(f->sim, 0, &st), 0);
	assert_int_equal(st.dma_maps, 4);
	/* Unmap: exact ok; a piece of a window refused; unknown refused. */
	assert_int_equal(tc_dma_unmap(&f->c, 0x100000, 0x8000), -EINVAL);
	assert_int_equal(tc_dma_unmap(&f->c, 0x900000, 0x1000), -ENOENT);
	assert_int_equal(tc_dma_unmap(&f->c, 0x100000, 0x10000), 0);
	assert_int_equal(tc_dma_map(&f->c, 0x500000, 0x1000, -1, 0, VFU_DMA_F_WRITE), 0);
	/* Disconnect frees every window. */
	tc_close(&f->c);
	for (int i = 0; i < 200; i++) {
		sim_state(f->sim, 0, &st);
		if (!st.client && !st.dma_maps)
			break;
		usleep(5000);
	}
	assert_false(st.client);
	assert_int_equal(st.dma_maps, 0);
	assert_int_equal(tc_connect(f->path, &f->c), 0);
	close(mfd);
}

static void test_one_client(void **state)
{
	struct fx *f = *state;
	struct tc c2;
	struct vfu_version v = { .major = 0, .minor = 1 };

	struct tc_reply *r;

	assert_int_equal(tc_connect_raw(f->path, &c2), 0);
	/* The second client's first message gets EBUSY, then the connection
	 * is closed: it can tell "in use" from "gone". */
	tc_send(&c2, VFU_CMD_VERSION, 7, VFU_F_TYPE_COMMAND, &v, sizeof(v), NULL, 0, NULL, 0);
	r = tc_r();
	assert_int_equal(tc_recv(&c2, r, 2000), 0);
	assert_int_equal(r->hdr.msg_id, 7);
	assert_int_equal(r->hdr.cmd, VFU_CMD_VERSION);
	assert_int_equal(r->hdr.flags, VFU_F_TYPE_REPLY | VFU_F_ERROR);
	assert_int_equal(r->hdr.error, EBUSY);
	assert_int_equal(r->len, 0);
	assert_int_equal(tc_recv(&c2, tc_r(), 2000), -ECONNRESET);
	tc_close(&c2);
	/* One that never says anything is closed after its grace period. */
	assert_int_equal(tc_connect_raw(f->path, &c2), 0);
	assert_int_equal(tc_recv(&c2, tc_r(), 3000), -ECONNRESET);
	tc_close(&c2);
	assert_int_equal(tc_rd32(&f->c, 0), 0x55475055);
}

static void test_unplug_request(void **state)
{
	struct fx *f = *state;
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	uint64_t total = 0, t0;
	struct sim_state st;
	struct tc c2;

	assert_int_equal(tc_set_irq(&f->c, 4, 0, efd), 0);
	assert_int_equal(sim_unplug_request(f->sim, 0), 0);
	/* REQ repeats every 20 ms until we let go. */
	t0 = tc_now_ms();
	while (total < 3 && tc_now_ms() - t0 < 3000)
		total += tc_wait_irq(&f->c, efd, 500);
	assert_true(total >= 3);
	/* Still answering while the request is pending. */
	assert_int_equal(tc_rd32(&f->c, 0), 0x55475055);
	tc_close(&f->c);
	for (int i = 0; i < 200; i++) {
		sim_state(f->sim, 0, &st);
		if (st.removed && !st.client)
			break;
		usleep(5000);
	}
	assert_true(st.removed);
	assert_true(st.reqs >= 3);
	/* Gone: the socket no longer accepts. */
	for (int i = 0; i < 100 && access(f->path, F_OK) == 0; i++)
		usleep(5000);
	assert_int_not_equal(tc_connect_raw(f->path, &c2), 0);
	assert_int_equal(sim_unplug_request(f->sim, 0), -ENODEV);
	close(efd);
}

static void test_unplug_surprise(void **state)
{
	struct fx *f = *state;
	struct sim_state st;
	struct tc c2;

	assert_int_equal(sim_unplug_surprise(f->sim, 0), 0);
	/* The connection is shut down: the next request sees EOF. */
	assert_int_not_equal(tc_rd32(&f->c, 0), 0x55475055);
	assert_int_equal(sim_state(f->sim, 0, &st), 0);
	assert_true(st.removed);
	for (int i = 0; i < 100 && access(f->path, F_OK) == 0; i++)
		usleep(5000);
	assert_int_not_equal(tc_connect_raw(f->path, &c2), 0);
	assert_int_equal(sim_unplug_surprise(f->sim, 0), -ENODEV);
}

static int ctl_cmd(const char *path, const char *cmd, char *out, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	size_t got = 0;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -1;
	if (send(fd, cmd, strlen(cmd), MSG_NOSIGNAL) < 0)
		return -1;
	while (got < len - 1) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 2000) <= 0)
			break;
		n = recv(fd, out + got, len - 1 - got, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
		if (out[got - 1] == '\n')
			break;
	}
	out[got] = '\0';
	close(fd);
	return 0;
}

static void test_control_socket(void **state)
{
	struct fx *f = *state;
	char out[512];

	assert_int_equal(ctl_cmd(f->ctl, "state\n", out, sizeof(out)), 0);
	assert_true(strncmp(out, "ok power=D0", 11) == 0);
	assert_non_null(strstr(out, "client=yes"));
	assert_int_equal(ctl_cmd(f->ctl, "inject wake 2 always\n", out, sizeof(out)), 0);
	assert_string_equal(out, "ok\n");
	assert_int_equal(ctl_cmd(f->ctl, "inject clear\n", out, sizeof(out)), 0);
	assert_string_equal(out, "ok\n");
	assert_int_equal(ctl_cmd(f->ctl, "inject cmd 0 once\n", out, sizeof(out)), 0);
	assert_true(strncmp(out, "err", 3) == 0);
	assert_int_equal(ctl_cmd(f->ctl, "dev 5 state\n", out, sizeof(out)), 0);
	assert_true(strncmp(out, "err", 3) == 0);
	assert_int_equal(ctl_cmd(f->ctl, "unplug surprise\n", out, sizeof(out)), 0);
	assert_string_equal(out, "ok\n");
	assert_int_not_equal(tc_rd32(&f->c, 0), 0x55475055);
	assert_int_equal(ctl_cmd(f->ctl, "state\n", out, sizeof(out)), 0);
	assert_non_null(strstr(out, "removed=yes"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_version, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_device_and_regions, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_registers_and_config, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_irq_info, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_malformed, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_region_zero_count, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_irq_fd_never_blocks, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_client_not_reading, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_twin_socket, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_command_before_version, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_dma_map_rules, fx_setup_small_maps, fx_teardown),
		cmocka_unit_test_setup_teardown(test_one_client, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_unplug_request, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_unplug_surprise, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_control_socket, fx_setup_control, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
