/* SPDX-License-Identifier: MIT */
/*
 * vfio-user client: everything the driver decides about a message the server
 * sent, as pure functions of the bytes (and fds) received. The transport
 * (vfio_user.c) owns sockets, threads and waiting; it calls these to judge
 * each reply and each server request. Keeping them apart from the socket lets
 * the fuzz target (tests/fuzz/fuzz_client_reply.c) call exactly what the
 * transport calls, on a byte buffer.
 *
 * Every function logs one line naming what was wrong (through @l) and
 * returns 0 or a negative errno (-EPROTO for a malformed message unless said
 * otherwise). None blocks, allocates or keeps state.
 */
#ifndef UGPU_VFIO_USER_MSG_H
#define UGPU_VFIO_USER_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vfio/transport.h"
#include "vfio/vfio_user_proto.h"

/* Where log lines go and what they call the device. */
struct vu_log {
	struct ugpu_context *ctx;
	const char *name;
};

/* Regions and irq indexes the client keeps; a server announcing more gets the
 * rest reported as absent. */
#define VU_MAX_REGIONS 16
#define VU_MAX_IRQS 8
/* Largest GET_REGION_INFO reply accepted (region info + capabilities). */
#define VU_REGION_INFO_MAX 4096
/* fds the reader can receive in one message: more than any reply may carry. */
#define VU_RECV_FDS 16

const char *vu_cmd_name(unsigned int cmd);

/*
 * vu_reply_status() - judge the header of the reply to @req_cmd (its msg_id
 * already matched): the command it names, its flags, whether the kernel had
 * to drop fds (@fds_cut), and the error field. An error reply that carries
 * payload breaks the specification; some servers send one, so its errno is
 * kept (the violation is logged).
 * Returns: 0 (a success reply: the payload is the caller's), the reply's
 * -errno (-EIO when it gives none, or one Linux does not have), or -EPROTO.
 */
int vu_reply_status(const struct vu_log *l, uint16_t req_cmd, const struct vfu_hdr *h,
		    size_t len, bool fds_cut);

/* What the VERSION exchange settled. */
struct vu_negotiated {
	uint16_t major, minor;
	uint32_t max_msg_fds; /* fds the server takes per message (<= VFU_MAX_FDS) */
	uint32_t max_xfer; /* largest count we send (<= VFU_MAX_DATA_XFER) */
	uint32_t max_dma_maps;
	uint64_t pgsizes;
	int twin_fd_index; /* index into the reply's fds of the twin socket, or -1 */
};

/*
 * vu_version_parse() - the VERSION reply's payload and fd count. @twin_offered:
 * we proposed twin-socket mode; a server that turns it on anyway, or says it
 * is on without naming one of the @nfds fds, is refused, as are fds without
 * twin-socket mode, another major, a higher minor than ours, bad JSON and
 * zero limits.
 * Returns: 0 or -EPROTO.
 */
int vu_version_parse(const struct vu_log *l, const void *data, size_t len, int nfds,
		     bool twin_offered, struct vu_negotiated *out);

/* The twin socket a VERSION reply passed must be a stream socket.
 * Returns: 0 or -EPROTO. */
int vu_twin_fd_check(const struct vu_log *l, int fd);

/* DEVICE_GET_INFO reply: flags, region and irq counts (clamped to what we
 * keep). Returns: 0 or -EPROTO. */
int vu_device_info_parse(const struct vu_log *l, const void *data, size_t len, uint32_t *flags,
			 uint32_t *num_regions, uint32_t *num_irqs);

/*
 * vu_region_info_parse() - a GET_REGION_INFO(@index) reply asked with @argsz.
 * Fills @info and *@mmap_off. Returns 0, a positive argsz when the
 * capabilities did not fit and the caller should ask once more with that
 * size (only when @retry_ok), or -EPROTO / -E2BIG. @nfds must be 1 for a
 * mappable region of non-zero size and 0 otherwise.
 */
int vu_region_info_parse(const struct vu_log *l, uint32_t index, uint32_t argsz, bool retry_ok,
			 const void *data, size_t len, int nfds, struct vfio_dev_region_info *info,
			 uint64_t *mmap_off);

/*
 * vu_region_fd_check() - may the driver mmap @fd for region @info at
 * @mmap_off? A regular file (a memfd) must hold every byte the region (or its
 * sparse areas) maps: a shorter file would SIGBUS the driver on first touch.
 * The file is sealed against shrinking first when it allows (F_SEAL_SHRINK),
 * then checked, so the server cannot truncate it under our mappings later
 * (nor between the check and the seal); when it cannot be sealed that
 * remaining risk is logged (debug). A character or block
 * device is left to its own mmap, which refuses ranges it cannot back; any
 * other kind of fd cannot be mapped and is refused.
 * Returns: 0, -EPROTO, or -errno from fstat.
 */
int vu_region_fd_check(const struct vu_log *l, int fd, const struct vfio_dev_region_info *info,
		       uint64_t mmap_off);

/* GET_IRQ_INFO(@index) reply. Returns: 0 or -EPROTO. */
int vu_irq_info_parse(const struct vu_log *l, uint32_t index, const void *data, size_t len,
		      struct vfio_dev_irq_info *out);

/* REGION_READ reply for (@index, @off, @count): the echo and @count bytes
 * after it. Returns: 0 or -EPROTO. */
int vu_region_read_check(const struct vu_log *l, uint32_t index, uint64_t off, uint32_t count,
			 const void *data, size_t len);

/* REGION_WRITE reply: the request's access struct echoed. */
int vu_region_write_check(const struct vu_log *l, const struct vfu_region_access *req,
			  const void *data, size_t len);

/* DMA_UNMAP reply for [@iova, +@size): the echo; *@unmapped gets its size
 * (no more than asked). Returns: 0 or -EPROTO. */
int vu_dma_unmap_check(const struct vu_log *l, uint64_t iova, uint64_t size, const void *data,
		       size_t len, uint64_t *unmapped);

/*
 * vu_dma_request_parse() - a DMA_READ/DMA_WRITE request from the server:
 * *@acc gets its access; its count is non-zero, within VFU_MAX_DATA_XFER
 * and matches the payload (DMA_WRITE carries the data, DMA_READ nothing).
 * Returns: 0, or a positive errno to answer the server with (EINVAL).
 */
int vu_dma_request_parse(const struct vu_log *l, const struct vfu_hdr *h, const void *body,
			 size_t len, struct vfu_dma_access *acc);

#endif
