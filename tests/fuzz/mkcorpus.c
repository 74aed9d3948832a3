/* SPDX-License-Identifier: MIT */
/*
 * Writes the seed corpora of the two vfio-user fuzz targets (format:
 * fuzz_input.h) into tests/fuzz/corpus/<target>/:
 *   - fuzz_sim_request: valid client sessions (open, interrupts, DMA windows,
 *     power and reset, rings, malformed messages);
 *   - fuzz_client_reply: what ugpu-sim really answered to the driver's open
 *     sequence (the sessions run through fuzz_sim_request's own harness and
 *     its replies are recorded, fds described by kind), plus DMA requests
 *     and replies to the calls the target makes after open.
 * Usage: fuzz_mkcorpus OUT_DIR   (the corpus is checked in; rerun this when
 * the protocol changes and commit the result).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/fuzz/fuzz_input.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
extern void (*fz_sim_observe)(const uint8_t *msg, size_t len, const int *fds, int nfds);

struct out {
	uint8_t *buf;
	size_t len, cap;
};

static void put(struct out *o, const void *p, size_t n)
{
	if (o->len + n > o->cap) {
		o->cap = (o->len + n) * 2;
		o->buf = realloc(o->buf, o->cap);
		if (!o->buf)
			abort();
	}
	memcpy(o->buf + o->len, p, n);
	o->len += n;
}

static uint16_t next_id;

/* One record: fd byte, header, payload (@a then @b). */
static void msg(struct out *o, uint8_t spec, uint16_t cmd, uint32_t flags, const void *a, size_t al,
		const void *b, size_t bl)
{
	struct vfu_hdr h = { .msg_id = next_id++, .cmd = cmd, .flags = flags,
			     .size = (uint32_t)(sizeof(h) + al + bl) };

	put(o, &spec, 1);
	put(o, &h, sizeof(h));
	if (al)
		put(o, a, al);
	if (bl)
		put(o, b, bl);
}

static void cmd(struct out *o, uint8_t spec, uint16_t c, const void *a, size_t al, const void *b,
		size_t bl)
{
	msg(o, spec, c, VFU_F_TYPE_COMMAND, a, al, b, bl);
}

static void version(struct out *o, bool twin)
{
	static const char plain[] = "{\"capabilities\":{\"max_msg_fds\":16,\"max_data_xfer_size\":1048576}}";
	static const char with_twin[] = "{\"capabilities\":{\"max_msg_fds\":16,\"max_data_xfer_size\":1048576,"
					"\"twin_socket\":{\"supported\":true}}}";
	struct vfu_version v = { .major = 0, .minor = 1 };

	cmd(o, 0, VFU_CMD_VERSION, &v, sizeof(v), twin ? with_twin : plain,
	    twin ? sizeof(with_twin) : sizeof(plain));
}

static void rw(struct out *o, bool write, uint32_t region, uint64_t off, const void *data,
	       uint32_t count)
{
	struct vfu_region_access a = { .offset = off, .region = region, .count = count };

	cmd(o, 0, write ? VFU_CMD_REGION_WRITE : VFU_CMD_REGION_READ, &a, sizeof(a),
	    write ? data : NULL, write ? count : 0);
}

static void wr32(struct out *o, uint32_t region, uint64_t off, uint32_t v)
{
	rw(o, true, region, off, &v, 4);
}

/* The driver's open: VERSION, DEVICE_GET_INFO, 9 regions, 5 irq indexes. */
static void open_sequence(struct out *o, bool twin)
{
	struct vfu_device_info di = { .argsz = sizeof(di) };

	version(o, twin);
	cmd(o, 0, VFU_CMD_DEVICE_GET_INFO, &di, sizeof(di), NULL, 0);
	for (uint32_t i = 0; i < 9; i++) {
		struct vfu_region_info ri = { .argsz = 512, .index = i };

		cmd(o, 0, VFU_CMD_DEVICE_GET_REGION_INFO, &ri, sizeof(ri), NULL, 0);
	}
	for (uint32_t i = 0; i < 5; i++) {
		struct vfu_irq_info ii = { .argsz = sizeof(ii), .index = i };

		cmd(o, 0, VFU_CMD_DEVICE_GET_IRQ_INFO, &ii, sizeof(ii), NULL, 0);
	}
}

static void session_open(struct out *o)
{
	uint8_t data[64] = { 1, 2, 3, 4 };

	open_sequence(o, true);
	rw(o, false, 7, 0, NULL, 4);
	wr32(o, 7, 4, 0x6);
	rw(o, false, 0, 0, NULL, 4);
	wr32(o, 0, 0x40, 0xcafef00d);
	rw(o, false, 0, 0x40, NULL, 4);
	rw(o, false, 0, 0x10, NULL, 8);
	rw(o, true, 2, 0x1000, data, sizeof(data));
	rw(o, false, 2, 0x1000, NULL, sizeof(data));
}

static void session_irqs(struct out *o)
{
	struct vfu_irq_set s = { .argsz = sizeof(s),
				 .flags = VFU_IRQ_SET_DATA_EVENTFD | VFU_IRQ_SET_ACTION_TRIGGER,
				 .index = 2, .start = 0, .count = 5 };
	int32_t sel[2] = { 0, -1 };
	uint8_t yes = 1;

	version(o, false);
	cmd(o, FZ_SPEC(FZ_EVENTFDS, 4), VFU_CMD_DEVICE_SET_IRQS, &s, sizeof(s), NULL, 0);
	s = (struct vfu_irq_set){ .argsz = sizeof(s), .index = 2, .start = 2, .count = 1,
				  .flags = VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_TRIGGER };
	cmd(o, 0, VFU_CMD_DEVICE_SET_IRQS, &s, sizeof(s), NULL, 0);
	s.flags = VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_MASK;
	cmd(o, 0, VFU_CMD_DEVICE_SET_IRQS, &s, sizeof(s), NULL, 0);
	s.flags = VFU_IRQ_SET_DATA_BOOL | VFU_IRQ_SET_ACTION_TRIGGER;
	s.argsz = sizeof(s) + 1;
	cmd(o, 0, VFU_CMD_DEVICE_SET_IRQS, &s, sizeof(s), &yes, 1);
	s.flags = VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_UNMASK;
	s.argsz = sizeof(s);
	cmd(o, 0, VFU_CMD_DEVICE_SET_IRQS, &s, sizeof(s), NULL, 0);
	/* an eventfd one below its maximum, then a full pipe: triggers must
	 * not block (issue 12, find 3) */
	s = (struct vfu_irq_set){ .argsz = sizeof(s), .index = 2, .start = 3, .count = 1,
				  .flags = VFU_IRQ_SET_DATA_EVENTFD | VFU_IRQ_SET_ACTION_TRIGGER };
	cmd(o, FZ_SPEC(FZ_EVENTFD, 31), VFU_CMD_DEVICE_SET_IRQS, &s, sizeof(s), NULL, 0);
	s.start = 4;
	cmd(o, FZ_SPEC(FZ_PIPE, 1), VFU_CMD_DEVICE_SET_IRQS, &s, sizeof(s), NULL, 0);
	s.flags = VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_TRIGGER;
	s.start = 3;
	s.count = 2;
	cmd(o, 0, VFU_CMD_DEVICE_SET_IRQS, &s, sizeof(s), NULL, 0);
	/* per-vector selection with an int32 array, then REQ, then all off */
	s = (struct vfu_irq_set){ .argsz = sizeof(s) + sizeof(sel), .index = 2, .start = 0,
				  .count = 2,
				  .flags = VFU_IRQ_SET_DATA_EVENTFD | VFU_IRQ_SET_ACTION_TRIGGER };
	cmd(o, FZ_SPEC(FZ_EVENTFD, 0), VFU_CMD_DEVICE_SET_IRQS, &s, sizeof(s), sel, sizeof(sel));
	s = (struct vfu_irq_set){ .argsz = sizeof(s), .index = 4, .start = 0, .count = 1,
				  .flags = VFU_IRQ_SET_DATA_EVENTFD | VFU_IRQ_SET_ACTION_TRIGGER };
	cmd(o, FZ_SPEC(FZ_EVENTFD, 0), VFU_CMD_DEVICE_SET_IRQS, &s, sizeof(s), NULL, 0);
	s = (struct vfu_irq_set){ .argsz = sizeof(s), .index = 2,
				  .flags = VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_TRIGGER };
	cmd(o, 0, VFU_CMD_DEVICE_SET_IRQS, &s, sizeof(s), NULL, 0);
}

static void session_dma(struct out *o)
{
	struct vfu_dma_map m = { .argsz = sizeof(m), .flags = VFU_DMA_F_READ | VFU_DMA_F_WRITE,
				 .offset = 0, .addr = 0x100000, .size = 0x4000 };
	struct vfu_dma_unmap u = { .argsz = sizeof(u), .addr = 0x100000, .size = 0x4000 };

	version(o, true);
	cmd(o, FZ_SPEC(FZ_MEMFD_4K, 4), VFU_CMD_DMA_MAP, &m, sizeof(m), NULL, 0);
	/* the window: 8 KiB over a 4 KiB memfd (refused) */
	m.addr = 0x200000;
	m.size = 0x2000;
	cmd(o, FZ_SPEC(FZ_MEMFD_4K, 1), VFU_CMD_DMA_MAP, &m, sizeof(m), NULL, 0);
	/* without an fd: in-band */
	m.addr = 0x300000;
	m.size = 0x10000;
	cmd(o, 0, VFU_CMD_DMA_MAP, &m, sizeof(m), NULL, 0);
	m.addr = 0x302000; /* overlapping */
	cmd(o, 0, VFU_CMD_DMA_MAP, &m, sizeof(m), NULL, 0);
	cmd(o, 0, VFU_CMD_DMA_UNMAP, &u, sizeof(u), NULL, 0);
	u.addr = 0x300000;
	u.size = 0x1000; /* splits a window */
	cmd(o, 0, VFU_CMD_DMA_UNMAP, &u, sizeof(u), NULL, 0);
	u.size = 0x10000;
	cmd(o, 0, VFU_CMD_DMA_UNMAP, &u, sizeof(u), NULL, 0);
	u = (struct vfu_dma_unmap){ .argsz = sizeof(u), .flags = VFU_DMA_UNMAP_F_ALL };
	cmd(o, 0, VFU_CMD_DMA_UNMAP, &u, sizeof(u), NULL, 0);
}

static void session_power(struct out *o)
{
	version(o, false);
	/* rings and the exec engine (nothing runs: no engine threads here) */
	wr32(o, 0, 0x1000, 0);
	wr32(o, 0, 0x1008, 4096);
	wr32(o, 0, 0x1014, 1);
	wr32(o, 0, 0x1010, 64);
	rw(o, false, 0, 0x1018, NULL, 4);
	wr32(o, 0, 0x1014, 2);
	wr32(o, 0, 0x2000, 1);
	wr32(o, 0, 0x2100, 1);
	wr32(o, 0, 0x2120, 1);
	wr32(o, 0, 0x2214, 2);
	/* D3hot, D3cold, power back, D0, reset */
	wr32(o, 7, 0x44, 0x3);
	rw(o, false, 0, 0, NULL, 4);
	wr32(o, 7, 0x64, 1);
	rw(o, false, 7, 0x68, NULL, 4);
	cmd(o, 0, VFU_CMD_DEVICE_RESET, NULL, 0, NULL, 0);
	wr32(o, 7, 0x64, 0);
	wr32(o, 7, 0x44, 0);
	cmd(o, 0, VFU_CMD_DEVICE_RESET, NULL, 0, NULL, 0);
	rw(o, false, 0, 0, NULL, 4);
}

static void session_malformed(struct out *o)
{
	struct vfu_hdr small = { .msg_id = 7, .cmd = VFU_CMD_DEVICE_GET_INFO, .size = 8 };
	struct vfu_region_access a = { .offset = 0, .region = 2, .count = 0 };
	uint8_t spec = 0;

	version(o, false);
	cmd(o, 0, 99, NULL, 0, NULL, 0);
	put(o, &spec, 1);
	put(o, &small, sizeof(small));
	cmd(o, 0, VFU_CMD_REGION_READ, &a, sizeof(a), NULL, 0); /* count 0 (find 1) */
	msg(o, 0, VFU_CMD_REGION_READ, VFU_F_TYPE_COMMAND | VFU_F_NO_REPLY, &a, sizeof(a), NULL, 0);
	msg(o, 0, VFU_CMD_DMA_READ, VFU_F_TYPE_REPLY, &a, sizeof(a), NULL, 0);
	cmd(o, FZ_SPEC(FZ_EVENTFD, 0), VFU_CMD_DEVICE_RESET, NULL, 0, NULL, 0);
	version(o, true);
	version(o, true); /* twin twice */
}

/* ---- the client's corpus: ugpu-sim's replies, recorded ------------------- */

static struct out *recording;
static bool record_skip_dma_map;

static uint8_t describe_fds(const int *fds, int nfds)
{
	struct stat st;

	if (!nfds || fstat(fds[0], &st))
		return 0;
	if (S_ISSOCK(st.st_mode))
		return FZ_SPEC(FZ_SOCKET, 0);
	if (S_ISREG(st.st_mode)) {
		uint64_t units = (uint64_t)st.st_size / 65536;

		return FZ_SPEC(FZ_MEMFD_64K, units > 31 ? 31 : units);
	}
	return FZ_SPEC(FZ_DEVNULL, 0);
}

static void observe(const uint8_t *m, size_t len, const int *fds, int nfds)
{
	struct vfu_hdr h;
	uint8_t spec = describe_fds(fds, nfds);

	memcpy(&h, m, sizeof(h));
	if (!recording || (record_skip_dma_map && h.cmd == VFU_CMD_DMA_MAP))
		return;
	put(recording, &spec, 1);
	put(recording, m, len);
}

/* A DMA request from the server (into the fuzz target's window). */
static void dma_request(struct out *o, bool write, uint64_t addr, uint32_t count)
{
	struct vfu_dma_access a = { .addr = addr, .count = count };
	uint8_t data[64] = { 9, 8, 7 };

	msg(o, 0, write ? VFU_CMD_DMA_WRITE : VFU_CMD_DMA_READ, VFU_F_TYPE_COMMAND, &a, sizeof(a),
	    write ? data : NULL, write ? count : 0);
}

static void client_session(struct out *c, bool twin)
{
	struct out s = { 0 };
	struct vfu_dma_map m = { .argsz = sizeof(m), .flags = VFU_DMA_F_READ | VFU_DMA_F_WRITE,
				 .addr = 0x100000, .size = 0x4000 };
	struct vfu_dma_unmap u = { .argsz = sizeof(u), .addr = 0x100000, .size = 0x4000 };

	next_id = 0;
	open_sequence(&s, twin);
	/* the calls the fuzz target makes after open: read, write, unmap */
	for (int i = 0; i < 2; i++) {
		rw(&s, false, 0, 0x40, NULL, 4);
		wr32(&s, 0, 0x40, 0x1234);
		cmd(&s, FZ_SPEC(FZ_MEMFD_4K, 4), VFU_CMD_DMA_MAP, &m, sizeof(m), NULL, 0);
		cmd(&s, 0, VFU_CMD_DMA_UNMAP, &u, sizeof(u), NULL, 0);
	}
	recording = c;
	record_skip_dma_map = true;
	LLVMFuzzerTestOneInput(s.buf, s.len);
	recording = NULL;
	free(s.buf);
	/* and the server's own requests, served against the target's window */
	dma_request(c, false, 0x200000, 64);
	dma_request(c, true, 0x200040, 64);
	dma_request(c, false, 0x900000, 64); /* outside every window */
}

static int write_file(const char *dir, const char *target, const char *name, const struct out *o)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s/%s", dir, target, name);
	f = fopen(path, "wb");
	if (!f || fwrite(o->buf, 1, o->len, f) != o->len) {
		fprintf(stderr, "mkcorpus: cannot write %s: %s\n", path, strerror(errno));
		if (f)
			fclose(f);
		return 1;
	}
	fclose(f);
	printf("%s: %zu bytes\n", path, o->len);
	return 0;
}

int main(int argc, char **argv)
{
	static void (*const sessions[])(struct out *) = { session_open, session_irqs, session_dma,
							    session_power, session_malformed };
	static const char *const names[] = { "open", "irqs", "dma", "power", "malformed" };
	int bad = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: fuzz_mkcorpus OUT_DIR (tests/fuzz/corpus)\n");
		return 2;
	}
	LLVMFuzzerInitialize(&argc, &argv);
	for (unsigned i = 0; i < sizeof(sessions) / sizeof(sessions[0]); i++) {
		struct out o = { 0 };

		next_id = 1;
		sessions[i](&o);
		LLVMFuzzerTestOneInput(o.buf, o.len); /* the session must pass its own checks */
		bad |= write_file(argv[1], "fuzz_sim_request", names[i], &o);
		free(o.buf);
	}
	fz_sim_observe = observe;
	for (int twin = 0; twin < 2; twin++) {
		struct out c = { 0 };

		client_session(&c, twin);
		bad |= write_file(argv[1], "fuzz_client_reply", twin ? "open-twin" : "open", &c);
		free(c.buf);
	}
	return bad;
}
