/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the driver's handling of what a vfio-user server sends.
 *
 * Each input (format: fuzz_input.h) is the server's side of one session; the
 * target plays the client's side the way vfio/vfio_user.c does, calling
 * the same checks (vfio/vfio_user_msg.c) on each message in the same
 * order: the VERSION reply (twin-socket mode offered), DEVICE_GET_INFO, every
 * region's info with its fd checked before use (asked again once when the
 * capabilities did not fit), every irq's info, then replies to REGION_READ,
 * REGION_WRITE and DMA_UNMAP calls in turn. Server requests (DMA_READ/WRITE)
 * may come at any point and are served against a window table, as the reader
 * thread does. A message framed badly ends the session, as it breaks the
 * stream. Whatever the bytes, the checks must not crash, read out of bounds
 * or hang; a region the checks accept must really be mappable for its whole
 * extent (the target maps it and touches its last byte: a SIGBUS here is
 * issue 12's find 4).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <ugpu/ugpu.h>

#include "vfio/vfio_user_msg.h"
#include "tests/fuzz/fuzz_input.h"

/* What the client asks after open, in turn (the corpus answers these). */
#define FZ_READ_REGION 0
#define FZ_READ_OFF 0x40
#define FZ_READ_COUNT 4
#define FZ_UNMAP_IOVA 0x100000
#define FZ_UNMAP_SIZE 0x4000
/* The client's in-band window: IOVA [FZ_WIN_IOVA, + FZ_WIN_SIZE). */
#define FZ_WIN_IOVA 0x200000
#define FZ_WIN_SIZE 0x10000

static struct ugpu_context *ctx;
static uint8_t window[FZ_WIN_SIZE];

static void quiet(void *user, enum ugpu_log_level level, const char *msg)
{
	(void)user;
	(void)level;
	(void)msg;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct ugpu_context_opts o = { .size = sizeof(o), .log_fn = quiet,
				       .log_level = UGPU_LOG_DEBUG };

	(void)argc;
	(void)argv;
	signal(SIGPIPE, SIG_IGN);
	return ugpu_context_create(&o, &ctx) ? 1 : 0;
}

/* One message from the server, framed as the reader frames it. */
struct fz_msg {
	struct vfu_hdr hdr;
	const uint8_t *body;
	size_t len;
	int fds[FZ_MAX_FDS];
	int nfds;
	struct fz_keep keep;
};

static void msg_release(struct fz_msg *m)
{
	for (int i = 0; i < m->nfds; i++)
		close(m->fds[i]);
	m->nfds = 0;
	fz_keep_close(&m->keep);
}

/* Serve a server request against our window, as vu_serve_dma does. */
static void serve(const struct vu_log *l, const struct fz_msg *m)
{
	static uint8_t out[VFU_MAX_DATA_XFER];
	struct vfu_dma_access acc;

	if (vu_dma_request_parse(l, &m->hdr, m->body, m->len, &acc))
		return;
	if (acc.addr < FZ_WIN_IOVA || acc.addr - FZ_WIN_IOVA >= FZ_WIN_SIZE ||
	    acc.count > FZ_WIN_SIZE - (acc.addr - FZ_WIN_IOVA))
		return; /* EFAULT */
	if (m->hdr.cmd == VFU_CMD_DMA_READ)
		memcpy(out, window + (acc.addr - FZ_WIN_IOVA), acc.count);
	else
		memcpy(window + (acc.addr - FZ_WIN_IOVA), m->body + sizeof(acc), acc.count);
}

/*
 * The next reply to @cmd: server requests before it are served. Returns 0
 * with *@m (its status in *@status), or -1 when the session is over (end of
 * input, a message framed badly, or a reply the reader would drop while the
 * caller times out).
 */
static int next_reply(const struct vu_log *l, struct fz *in, uint16_t cmd, struct fz_msg *m,
		      int *status)
{
	struct fz_rec rec;

	for (;;) {
		memset(m, 0, sizeof(*m));
		if (!fz_next(in, &rec))
			return -1;
		if (rec.hdr.size < sizeof(rec.hdr) || rec.hdr.size > VFU_MAX_MSG)
			return -1; /* stream broken: the device is dead */
		m->hdr = rec.hdr;
		m->len = rec.hdr.size - sizeof(rec.hdr);
		if (m->len > rec.avail)
			return -1; /* cut short */
		m->body = rec.rest;
		fz_consume(in, m->len);
		m->nfds = fz_make_fds(rec.spec, m->fds, &m->keep);
		switch (m->hdr.flags & VFU_F_TYPE_MASK) {
		case VFU_F_TYPE_COMMAND:
			if (m->hdr.cmd == VFU_CMD_DMA_READ || m->hdr.cmd == VFU_CMD_DMA_WRITE)
				serve(l, m);
			msg_release(m);
			continue;
		case VFU_F_TYPE_REPLY:
			*status = vu_reply_status(l, cmd, &m->hdr, m->len, false);
			return 0;
		default:
			msg_release(m); /* dropped with a log line */
			continue;
		}
	}
}

/* A region the checks accepted is mapped and its last byte read. */
static void touch_region(const struct vfio_dev_region_info *info, int fd, uint64_t off)
{
	uint64_t lo = 0, hi = info->size;
	uint8_t *p;

	if (info->nr_sparse) {
		lo = info->sparse[0].offset;
		hi = lo + info->sparse[0].size;
	}
	if (hi <= lo || (off + lo) % 4096 || hi - lo > (64u << 20))
		return; /* not one mmap call the driver would make */
	p = mmap(NULL, hi - lo, PROT_READ, MAP_SHARED, fd, (off_t)(off + lo));
	if (p == MAP_FAILED)
		return;
	__atomic_load_n(p + (hi - lo) - 1, __ATOMIC_RELAXED);
	munmap(p, hi - lo);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct vu_log l = { .ctx = ctx, .name = "fuzz" };
	struct fz in = { .p = data, .left = size };
	struct vu_negotiated neg;
	uint32_t flags, nregions, nirqs;
	struct fz_msg m;
	int st;

	/* VERSION, twin-socket mode offered */
	if (next_reply(&l, &in, VFU_CMD_VERSION, &m, &st))
		return 0;
	if (!st && !vu_version_parse(&l, m.body, m.len, m.nfds, true, &neg) &&
	    neg.twin_fd_index >= 0)
		st = vu_twin_fd_check(&l, m.fds[neg.twin_fd_index]);
	msg_release(&m);
	if (st)
		return 0;

	/* DEVICE_GET_INFO */
	if (next_reply(&l, &in, VFU_CMD_DEVICE_GET_INFO, &m, &st))
		return 0;
	if (!st)
		st = vu_device_info_parse(&l, m.body, m.len, &flags, &nregions, &nirqs);
	msg_release(&m);
	if (st)
		return 0;

	for (uint32_t i = 0; i < nregions; i++) {
		struct vfio_dev_region_info info;
		uint32_t argsz = 512;
		uint64_t off;

		for (int attempt = 0;; attempt++) {
			if (next_reply(&l, &in, VFU_CMD_DEVICE_GET_REGION_INFO, &m, &st))
				return 0;
			if (!st)
				st = vu_region_info_parse(&l, i, argsz, attempt == 0, m.body, m.len,
							  m.nfds, &info, &off);
			if (st <= 0)
				break;
			argsz = (uint32_t)st;
			msg_release(&m);
		}
		if (!st && (info.flags & VFIO_REGION_F_MMAP) && info.size) {
			st = vu_region_fd_check(&l, m.fds[0], &info, off);
			if (!st)
				touch_region(&info, m.fds[0], off);
		}
		msg_release(&m);
		if (st)
			return 0;
	}
	for (uint32_t i = 0; i < nirqs; i++) {
		struct vfio_dev_irq_info ii;

		if (next_reply(&l, &in, VFU_CMD_DEVICE_GET_IRQ_INFO, &m, &st))
			return 0;
		if (!st)
			st = vu_irq_info_parse(&l, i, m.body, m.len, &ii);
		msg_release(&m);
		if (st)
			return 0;
	}

	/* Calls after open, in turn; a bad reply fails only that call. */
	for (unsigned call = 0;; call++) {
		static const uint16_t cmds[3] = { VFU_CMD_REGION_READ, VFU_CMD_REGION_WRITE,
						  VFU_CMD_DMA_UNMAP };
		const struct vfu_region_access wr = { .offset = FZ_READ_OFF,
						      .region = FZ_READ_REGION,
						      .count = FZ_READ_COUNT };
		uint16_t cmd = cmds[call % 3];
		uint64_t unmapped;

		if (next_reply(&l, &in, cmd, &m, &st))
			return 0;
		if (!st && cmd == VFU_CMD_REGION_READ &&
		    !vu_region_read_check(&l, FZ_READ_REGION, FZ_READ_OFF, FZ_READ_COUNT, m.body,
					  m.len))
			memcpy(window, m.body + sizeof(wr), FZ_READ_COUNT);
		else if (!st && cmd == VFU_CMD_REGION_WRITE)
			vu_region_write_check(&l, &wr, m.body, m.len);
		else if (!st && cmd == VFU_CMD_DMA_UNMAP)
			vu_dma_unmap_check(&l, FZ_UNMAP_IOVA, FZ_UNMAP_SIZE, m.body, m.len, &unmapped);
		msg_release(&m);
	}
}
