/* SPDX-License-Identifier: MIT */
/*
 * Black-box: a hostile vfio-user client against a live reference device.
 *
 * Each iteration is one session that starts as a well-behaved client would
 * (VERSION, region and irq info, interrupts, DMA windows with and without an
 * fd, rings, descriptors through DMA windows, the exec engine through SYSTEM
 * page-table entries, power transitions, reset) and mutates it as it goes,
 * driven by one seed: bits flipped in headers and payloads, sizes that lie,
 * messages cut short or dropped, random commands and flags, fds swapped for
 * ones that cannot serve (a memfd smaller than its window or truncated after
 * DMA_MAP, an eventfd at its maximum, a full pipe, a pipe without a reader, a
 * regular file, /dev/null, too many fds), in-band DMA answered wrongly or not
 * at all, garbage descriptors, and an abrupt hang-up at a random point. The
 * engines run for real while it does.
 *
 * The device must survive every session (a crash ends this process) and keep
 * serving: after each session a well-behaved client, the driver itself, opens
 * the device and copies through its blitter.
 *
 * Seeded: the seed is printed; UGPU_BLACKBOX_SEED=N replays a run,
 * UGPU_BLACKBOX_ITERS=N sets its length (default 20).
 */
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

#include <cmocka.h>

#include <ugpu/device.h>

#include "engines/engine.h"
#include "mm/vram.h"
#include "src/device.h"
#include "test_sim_client.h"

#define VRAM (4u << 20)
#define WIN_IOVA 0x10000000ull /* window with an fd */
#define WIN_SIZE (64u << 10)
#define INB_IOVA 0x20000000ull /* window without an fd (in-band) */
#define INB_SIZE (64u << 10)
#define RING 0x1000u /* engine 0's ring in VRAM */

struct rng {
	uint64_t s;
};

static uint64_t rnd(struct rng *r)
{
	/* xorshift64* */
	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	return r->s * 0x2545f4914f6cdd1dull;
}

static bool chance(struct rng *r, unsigned pct)
{
	return rnd(r) % 100 < pct;
}

/* One hostile session. */
struct hs {
	struct rng *r;
	struct tc c;
	unsigned mutate_pct; /* how often a message is mutated */
	bool calm_start; /* the set-up (up to the DMA windows) goes unmutated */
	uint16_t id;
	int win_fd; /* the memfd behind WIN_IOVA */
	uint8_t *vram; /* the VRAM mapping, when GET_REGION_INFO gave one */
	uint8_t inband[INB_SIZE];
	bool over; /* hung up */
};

/* An fd to pass instead of the right one, or the right one (@good). */
static int hostile_fd(struct hs *h, int good, int *extra, int *nextra)
{
	int p[2], fd;

	*nextra = 0;
	switch (rnd(h->r) % 9) {
	case 0: /* a memfd smaller than any window */
		fd = memfd_create("hostile", MFD_CLOEXEC);
		if (fd >= 0 && ftruncate(fd, 4096) < 0) {
			close(fd);
			fd = -1;
		}
		return fd;
	case 1: { /* an eventfd one below its maximum */
		uint64_t v = 0xfffffffffffffffeull;

		fd = eventfd(0, EFD_CLOEXEC);
		if (fd >= 0 && write(fd, &v, sizeof(v)) != sizeof(v)) {
			close(fd);
			fd = -1;
		}
		return fd;
	}
	case 2: /* a full pipe, its reader closed or not */
		if (pipe2(p, O_CLOEXEC | O_NONBLOCK))
			return -1;
		{
			char junk[4096] = { 0 };

			while (write(p[1], junk, sizeof(junk)) > 0)
				;
		}
		fcntl(p[1], F_SETFL, 0);
		if (chance(h->r, 50)) {
			close(p[0]);
		} else {
			extra[0] = p[0]; /* kept until the end of the session */
			*nextra = -1;
		}
		return p[1];
	case 3: { /* a regular file, maybe not on tmpfs */
		char path[] = "/var/tmp/ugpu-hostile-XXXXXX";

		fd = mkostemp(path, O_CLOEXEC);
		if (fd >= 0) {
			unlink(path);
			if (ftruncate(fd, WIN_SIZE) < 0) {
				close(fd);
				fd = -1;
			}
		}
		return fd;
	}
	case 4:
		return open("/dev/null", O_RDWR | O_CLOEXEC);
	case 5: /* the right one and many more */
		for (int i = 0; i < 12; i++)
			extra[(*nextra)++] = eventfd(0, EFD_CLOEXEC);
		return good >= 0 ? dup(good) : eventfd(0, EFD_CLOEXEC);
	case 6: /* a socket */
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p))
			return -1;
		close(p[1]);
		return p[0];
	default:
		return good >= 0 ? dup(good) : -1;
	}
}

/* Serve (or sabotage) what the device asks: in-band DMA requests. */
static void serve(struct hs *h, int fd, struct tc_reply *r)
{
	struct vfu_dma_access a;
	int mode = (int)(rnd(h->r) % 10);

	if ((r->hdr.flags & VFU_F_TYPE_MASK) != VFU_F_TYPE_COMMAND || r->len < sizeof(a))
		return;
	memcpy(&a, r->body, sizeof(a));
	if (mode == 0)
		return; /* never answered: the engine's wait is bounded */
	if (mode == 1) {
		tc_send_on(fd, r->hdr.cmd, r->hdr.msg_id, VFU_F_TYPE_REPLY | VFU_F_ERROR, NULL, 0,
			   NULL, 0, NULL, 0);
		return;
	}
	if (mode == 2) { /* a reply of the wrong size */
		tc_send_on(fd, r->hdr.cmd, r->hdr.msg_id, VFU_F_TYPE_REPLY, &a, sizeof(a) - 3, NULL,
			   0, NULL, 0);
		return;
	}
	if (a.addr < INB_IOVA || a.count > INB_SIZE || a.addr - INB_IOVA > INB_SIZE - a.count) {
		tc_send_on(fd, r->hdr.cmd, r->hdr.msg_id, VFU_F_TYPE_REPLY | VFU_F_ERROR, NULL, 0,
			   NULL, 0, NULL, 0);
		return;
	}
	if (r->hdr.cmd == VFU_CMD_DMA_READ)
		tc_send_on(fd, r->hdr.cmd, r->hdr.msg_id, VFU_F_TYPE_REPLY, &a, sizeof(a),
			   h->inband + (a.addr - INB_IOVA), a.count, NULL, 0);
	else
		tc_send_on(fd, r->hdr.cmd, r->hdr.msg_id, VFU_F_TYPE_REPLY, &a, sizeof(a), NULL, 0,
			   NULL, 0);
}

/* Read whatever the device sent within @ms (replies are not checked: the
 * point is that the device keeps going). */
static void drain(struct hs *h, int ms)
{
	static struct tc_reply r;
	uint64_t end = tc_now_ms() + (uint64_t)ms;

	while (!h->over && tc_now_ms() < end) {
		struct pollfd p[2] = { { .fd = h->c.fd, .events = POLLIN },
				       { .fd = h->c.twin, .events = POLLIN } };
		int n = poll(p, h->c.twin >= 0 ? 2 : 1, (int)(end - tc_now_ms()) + 1);

		if (n <= 0)
			return;
		for (int i = 0; i < 2; i++) {
			int fd = i ? h->c.twin : h->c.fd;

			if (!p[i].revents || (i && h->c.twin < 0))
				continue;
			if (tc_recv_on(fd, &r, 200)) {
				h->over = true; /* the device closed on us */
				return;
			}
			if (r.nfds && !h->vram && r.hdr.cmd == VFU_CMD_DEVICE_GET_REGION_INFO) {
				void *v = mmap(NULL, VRAM, PROT_READ | PROT_WRITE, MAP_SHARED, r.fds[0], 0);

				if (v != MAP_FAILED)
					h->vram = v;
			}
			if (r.nfds && !i && h->c.twin < 0 && r.hdr.cmd == VFU_CMD_VERSION) {
				h->c.twin = r.fds[0]; /* twin-socket mode */
				r.fds[0] = -1;
			}
			for (int k = 0; k < r.nfds; k++)
				if (r.fds[k] >= 0)
					close(r.fds[k]);
			r.nfds = 0;
			serve(h, fd, &r);
		}
	}
}

/* Send one message, mutated or not; then read what came back. */
static void say(struct hs *h, uint16_t cmd, const void *payload, size_t len, int fd)
{
	size_t total = sizeof(struct vfu_hdr) + len;
	uint8_t *buf = malloc(total + 64);
	struct vfu_hdr hd = { .msg_id = h->id++, .cmd = cmd, .size = (uint32_t)total,
			      .flags = VFU_F_TYPE_COMMAND };
	int fds[16], nfds = 0, extra[16], nextra = 0, keep = -1;

	if (h->over || !buf) {
		free(buf);
		return;
	}
	if (fd >= 0)
		fds[nfds++] = fd;
	memcpy(buf, &hd, sizeof(hd));
	if (len)
		memcpy(buf + sizeof(hd), payload, len);
	if (chance(h->r, h->mutate_pct) && !(h->calm_start && cmd != VFU_CMD_REGION_WRITE &&
					      h->id < 12)) {
		switch (rnd(h->r) % 8) {
		case 0: /* bits anywhere */
			for (int i = 0, n = 1 + (int)(rnd(h->r) % 4); i < n; i++)
				buf[rnd(h->r) % total] ^= (uint8_t)(1u << (rnd(h->r) % 8));
			break;
		case 1: /* a size that lies */
			hd.size = (uint32_t)(rnd(h->r) % 2 ? rnd(h->r) % 64 : total + rnd(h->r) % 4096);
			memcpy(buf, &hd, sizeof(hd));
			break;
		case 2: /* cut short, then gone */
			total = rnd(h->r) % total;
			h->over = true;
			break;
		case 3: /* another command, other flags */
			hd.cmd = (uint16_t)(rnd(h->r) % 20);
			hd.flags = (uint32_t)(rnd(h->r) % 64);
			memcpy(buf, &hd, sizeof(hd));
			break;
		case 4: /* dropped */
			total = 0;
			break;
		case 5: /* NO_REPLY */
			hd.flags |= VFU_F_NO_REPLY;
			memcpy(buf, &hd, sizeof(hd));
			break;
		default: { /* the fds */
			int bad = hostile_fd(h, fd, extra, &nextra);

			nfds = 0;
			if (bad >= 0)
				fds[nfds++] = bad;
			if (nextra < 0) {
				keep = extra[0];
				nextra = 0;
			}
			for (int i = 0; i < nextra && nfds < 16; i++)
				if (extra[i] >= 0)
					fds[nfds++] = extra[i];
			break;
		}
		}
	}
	if (total && tc_send_raw_on(h->c.fd, buf, total, fds, nfds))
		h->over = true;
	for (int i = 0; i < nfds; i++) /* all ours but the caller's @fd */
		if (fds[i] != fd)
			close(fds[i]);
	free(buf);
	drain(h, 15);
	if (keep >= 0)
		close(keep);
}

static void wr32(struct hs *h, uint32_t region, uint64_t off, uint32_t v)
{
	uint8_t m[sizeof(struct vfu_region_access) + 4];
	struct vfu_region_access a = { .offset = off, .region = region, .count = 4 };

	memcpy(m, &a, sizeof(a));
	memcpy(m + sizeof(a), &v, 4);
	say(h, VFU_CMD_REGION_WRITE, m, sizeof(m), -1);
}

static void wr64(struct hs *h, uint64_t off, uint64_t v)
{
	wr32(h, 0, off, (uint32_t)v);
	wr32(h, 0, off + 4, (uint32_t)(v >> 32));
}

/* A descriptor into engine 0's ring (through the VRAM mapping). */
static void desc(struct hs *h, unsigned slot, uint32_t op, uint64_t src, uint32_t ss, uint64_t dst,
		 uint32_t ds, uint64_t size, uint64_t value)
{
	uint64_t d[8] = { op | (uint64_t)(op == 3) << 32, src, dst, size, value,
			  ss | (uint64_t)ds << 32, 0, 0 };

	if (!h->vram)
		return;
	if (chance(h->r, h->mutate_pct)) /* garbage */
		for (int i = 0; i < 8; i++)
			d[i] = chance(h->r, 50) ? rnd(h->r) : d[i];
	memcpy(h->vram + RING + slot * 64, d, sizeof(d));
}

static void session(struct hs *h, const char *path)
{
	static const char caps[] = "{\"capabilities\":{\"max_msg_fds\":8,\"twin_socket\":{\"supported\":true}}}";
	static const char plain[] = "{\"capabilities\":{\"max_msg_fds\":8}}";
	bool twin = chance(h->r, 50);
	uint8_t vbuf[4 + sizeof(caps)];
	struct vfu_version v = { .major = 0, .minor = 1 };
	struct vfu_device_info di = { .argsz = sizeof(di) };
	struct vfu_region_info ri = { .argsz = sizeof(ri), .index = 2 };
	struct vfu_dma_map dm = { .argsz = sizeof(dm), .flags = VFU_DMA_F_READ | VFU_DMA_F_WRITE,
				  .addr = WIN_IOVA, .size = WIN_SIZE };
	struct vfu_dma_unmap du = { .argsz = sizeof(du), .addr = WIN_IOVA, .size = WIN_SIZE };
	struct vfu_irq_set is = { .argsz = sizeof(is),
				  .flags = VFU_IRQ_SET_DATA_EVENTFD | VFU_IRQ_SET_ACTION_TRIGGER,
				  .index = 2, .count = 1 };
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	assert_int_equal(tc_connect_raw(path, &h->c), 0);
	h->win_fd = memfd_create("window", MFD_CLOEXEC);
	assert_int_equal(ftruncate(h->win_fd, WIN_SIZE), 0);

	memcpy(vbuf, &v, sizeof(v));
	memcpy(vbuf + sizeof(v), twin ? caps : plain, twin ? sizeof(caps) : sizeof(plain));
	say(h, VFU_CMD_VERSION, vbuf, sizeof(v) + (twin ? sizeof(caps) : sizeof(plain)), -1);
	say(h, VFU_CMD_DEVICE_GET_INFO, &di, sizeof(di), -1);
	say(h, VFU_CMD_DEVICE_GET_REGION_INFO, &ri, sizeof(ri), -1);
	for (uint32_t vec = 0; vec < 5; vec++) {
		is.start = vec;
		say(h, VFU_CMD_DEVICE_SET_IRQS, &is, sizeof(is), efd);
	}
	if (chance(h->r, 30)) {
		/* engine 0's vector on an fd that cannot take a write */
		uint64_t v = 0xfffffffffffffffeull;
		int stuck = eventfd(0, EFD_CLOEXEC);

		if (write(stuck, &v, sizeof(v)) != sizeof(v))
			fail_msg("eventfd");
		is.start = 0;
		say(h, VFU_CMD_DEVICE_SET_IRQS, &is, sizeof(is), stuck);
		close(stuck);
	}
	say(h, VFU_CMD_DMA_MAP, &dm, sizeof(dm), h->win_fd);
	dm.addr = INB_IOVA;
	dm.size = INB_SIZE;
	say(h, VFU_CMD_DMA_MAP, &dm, sizeof(dm), -1);
	if (chance(h->r, 30)) /* the window's file shrinks under the device */
		assert_int_equal(ftruncate(h->win_fd, 4096), 0);

	/* Engine 0: ring at RING, copies between VRAM and both windows. */
	wr64(h, 0x1000, RING);
	wr32(h, 0, 0x1008, 4096);
	wr32(h, 0, 0x1014, 1);
	desc(h, 0, 1, WIN_IOVA + 0x8000, 1, 0x100000, 0, 0x8000, 0);
	desc(h, 1, 1, 0x100000, 0, INB_IOVA, 1, 0x4000, 0);
	desc(h, 2, 2, 0, 0, INB_IOVA + 0x4000, 1, 0x1000, 0x5a5a5a5a5a5a5a5aull);
	desc(h, 3, 3, 0, 0, ~0ull, 0, 0, 7);
	wr32(h, 0, 0x1010, 4 * 64);
	/* The exec engine through a SYSTEM leaf into the fd window. */
	if (h->vram) {
		uint64_t *t = (uint64_t *)(h->vram + 0x200000);

		memset(t, 0, 4 * 4096);
		t[0] = 0x201000 | 1;
		t[512] = 0x202000 | 1;
		t[1024] = 0x203000 | 1;
		t[1536] = (WIN_IOVA + 0x8000) | 7;
		t[1537] = (WIN_IOVA + 0x9000) | 7;
	}
	wr64(h, 0x2008, 0x200000);
	wr32(h, 0, 0x2000, 1);
	wr32(h, 0, 0x2010, 1);
	wr32(h, 0, 0x2100, 3);
	wr64(h, 0x2108, 0);
	wr64(h, 0x2110, 8192);
	wr64(h, 0x2118, 1);
	wr32(h, 0, 0x2120, 1);
	drain(h, 20);
	/* Interrupts raised by request, onto whatever fds the vectors have. */
	{
		struct vfu_irq_set t = { .argsz = sizeof(t),
					 .flags = VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_TRIGGER,
					 .index = 2, .start = 0, .count = 5 };

		say(h, VFU_CMD_DEVICE_SET_IRQS, &t, sizeof(t), -1);
	}
	/* Random register writes, power transitions, reset, unmap. */
	for (int i = 0, n = (int)(rnd(h->r) % 6); i < n; i++)
		wr32(h, 0, (rnd(h->r) % 0x10000) & ~3ull, (uint32_t)rnd(h->r));
	if (chance(h->r, 40)) {
		wr32(h, 7, 0x44, 3);
		if (chance(h->r, 50))
			wr32(h, 7, 0x64, 1);
	}
	if (chance(h->r, 50))
		say(h, VFU_CMD_DEVICE_RESET, NULL, 0, -1);
	say(h, VFU_CMD_DMA_UNMAP, &du, sizeof(du), -1);
	drain(h, 20);

	tc_close(&h->c);
	if (h->vram)
		munmap(h->vram, VRAM);
	close(h->win_fd);
	close(efd);
}

/* A well-behaved client (the driver) is served after the hostile session. */
static void well_behaved(struct sim *sim)
{
	struct ugpu_context_opts co = { .size = sizeof(co), .log_level = UGPU_LOG_ERROR };
	struct ugpu_context *ctx;
	struct ugpu_device *dev;
	struct sim_state st = { 0 };
	struct buddy_list l;
	struct engine *e;
	uint64_t fence, a;
	char uri[160];

	/* The device ends the hostile session (engines leave its windows,
	 * in-band waits are failed) within its own bounds. */
	for (int i = 0; i < 1200; i++) {
		assert_int_equal(sim_state(sim, 0, &st), 0);
		if (!st.client)
			break;
		usleep(10000);
	}
	assert_false(st.client);
	assert_int_equal(ugpu_context_create(&co, &ctx), 0);
	snprintf(uri, sizeof(uri), "vfio-user:%s", sim_socket_path(sim, 0));
	assert_int_equal(ugpu_device_open(ctx, uri, &dev), 0);
	/* The blitter works: a VRAM to VRAM copy, byte-exact. */
	e = device_copy_engine(dev);
	buddy_list_init(&l);
	assert_int_equal(vram_alloc(dev, 128 << 10, 4096, BUDDY_CONTIGUOUS_ALLOCATION, &l), 0);
	a = buddy_block_offset(buddy_list_first(&l));
	for (int i = 0; i < (64 << 10); i++)
		((uint8_t *)dev->vram)[a + i] = (uint8_t)(i * 13 + 1);
	assert_int_equal(engine_copy(e, engine_vram(a + (64 << 10)), engine_vram(a), 64 << 10, &fence),
			 0);
	assert_int_equal(engine_wait(e, fence, 5000), 0);
	assert_memory_equal((uint8_t *)dev->vram + a, (uint8_t *)dev->vram + a + (64 << 10), 64 << 10);
	vram_free(dev, &l, 0);
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
}

static void test_hostile_sessions(void **state)
{
	const char *env_seed = getenv("UGPU_BLACKBOX_SEED");
	const char *env_iters = getenv("UGPU_BLACKBOX_ITERS");
	uint64_t seed = env_seed ? strtoull(env_seed, NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)getpid();
	unsigned iters = env_iters ? (unsigned)atoi(env_iters) : 20;
	struct rng r = { .s = seed ? seed : 1 };
	struct sim_opts o;
	struct sim *sim;
	char path[108];

	(void)state;
	printf("# hostile client: seed %" PRIu64 " (UGPU_BLACKBOX_SEED=%" PRIu64 " replays), %u sessions\n",
	       seed, seed, iters);
	fflush(stdout);
	sim_opts_init(&o);
	tc_sock_path(path, sizeof(path), "hostile-client");
	o.socket_path = path;
	o.vram_size = VRAM;
	assert_int_equal(sim_start(&o, &sim), 0);
	for (unsigned i = 0; i < iters; i++) {
		struct hs *h = calloc(1, sizeof(*h));

		h->r = &r;
		h->mutate_pct = 5 + (unsigned)(rnd(&r) % 30);
		h->calm_start = chance(&r, 50);
		session(h, path);
		free(h);
		well_behaved(sim);
	}
	/* What the sessions made the device do (a run that never reaches the
	 * engines would prove little). */
	{
		struct sim_state st;

		assert_int_equal(sim_state(sim, 0, &st), 0);
		printf("# hostile client: %u sessions, the device ran %" PRIu64 " descriptors, sent %" PRIu64
		       " in-band requests, dropped %" PRIu64 " interrupts, queued %" PRIu64 " faults\n",
		       iters, st.descs, st.inband, st.irq_drops, st.faults);
	}
	sim_stop(sim);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hostile_sessions),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
