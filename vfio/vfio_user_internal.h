/* SPDX-License-Identifier: MIT */
/*
 * The vfio-user client's own header, private to vfio/: the connection
 * object and what its three files call across.
 *   vfio_user.c       the transport: open (negotiation, device, region and
 *                     irq info), the region/irq/reset ops, close
 *   vfio_user_conn.c  the connection: sending, the reader thread, replies
 *                     routed to their callers (vu_call), death
 *   vfio_user_dma.c   DMA: the windows, their ops, and the server's in-band
 *                     DMA_READ/DMA_WRITE served against them
 */
#ifndef UGPU_VFIO_USER_INTERNAL_H
#define UGPU_VFIO_USER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vfio/transport.h"
#include "vfio/vfio_user_msg.h"
#include "vfio/vfio_user_proto.h"

/* How often the idle reader re-checks for close (it is also woken by
 * @wake_fd, so this only bounds the wait). */
#define VU_READER_TICK_MS 1000
/* The IOVA space a vfio-user device offers (the IOMMU is our bookkeeping). */
#define VU_IOVA_LIMIT (1ull << 48)

/* A caller waiting for one reply. Lives on the caller's stack; linked into
 * vu_dev.pending under vu_dev.lock until the caller unlinks it. */
struct vu_pending {
	uint16_t msg_id;
	uint16_t cmd;
	bool done;
	int err; /* set by the reader: 0, -errno from the reply, -EPROTO, -ENODEV */
	void *reply; /* payload, malloc'd, owned by the caller once done */
	size_t reply_len;
	int fds[VU_RECV_FDS];
	int nfds;
	struct vu_pending *next;
};

/* A DMA window as the client told the server about it. */
struct vu_dma {
	uint64_t iova;
	uint64_t size;
	uint8_t *vaddr;
	uint32_t prot; /* VFIO_DMA_READ/WRITE */
	bool has_fd;
};

struct vu_region {
	struct vfio_dev_region_info info;
	uint64_t mmap_offset; /* offset into @fd for mmap */
	int fd; /* -1 when not mappable */
};

/*
 * struct vu_dev - one vfio-user connection.
 *
 * Locking:
 *  - @lock protects @pending, @next_id, @dead, @dead_err, @dma*, @mmaps.
 *    The reader holds it while copying in-band DMA data, so a window removed
 *    from @dma is never touched again.
 *  - @send_lock serialises writes to @sock, @twin_send_lock to @twin.
 *  - @twin is set once, under @lock, when VERSION turns twin-socket mode on;
 *    the reader reads it under @lock; close() closes it after the reader is
 *    joined.
 *  - @regions, @irqs, @caps and @flags are written during open, before any
 *    other thread sees the device, and read-only after.
 *  - @timeout_ms is read/written atomically.
 */
struct vu_dev {
	struct vfio_dev dev; /* must be first */
	int sock;
	int twin; /* twin socket (server requests), or -1 */
	bool offer_twin; /* propose twin-socket mode in VERSION */
	int wake_fd; /* eventfd: wakes the reader (close, or a new twin to watch) */
	bool stopping; /* under @lock */
	pthread_t reader;
	bool reader_started;
	int timeout_ms;

	pthread_mutex_t send_lock;
	pthread_mutex_t twin_send_lock;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* CLOCK_MONOTONIC; signalled when a pending completes */
	struct vu_pending *pending;
	uint16_t next_id;
	/* replies that matched no call (late, bogus, or a server answering a
	 * posted write anyway): the first few are logged, then one in 1000 */
	uint64_t stray_replies;
	bool dead;
	int dead_err;
	/* VERSION succeeded (atomic): a hang-up before it is a refusal that
	 * open reports itself, not a device that went away */
	bool negotiated;

	struct vu_dma *dma;
	uint32_t nr_dma;
	uint32_t cap_dma;
	struct vfio_mmap_rec *mmaps;

	/* negotiated */
	uint32_t max_msg_fds; /* the server accepts this many fds per message */
	uint32_t max_xfer; /* largest count we send to the server */
	uint32_t max_dma_maps;
	uint64_t pgsizes;
	uint32_t flags; /* VFU_DEV_F_* */

	struct vu_region regions[VU_MAX_REGIONS];
	struct vfio_dev_irq_info irqs[VU_MAX_IRQS];
};

/* A reply handed to the caller of vu_call(). */
struct vu_reply {
	void *data; /* malloc'd payload; free with free() */
	size_t len;
	int fds[VU_RECV_FDS];
	int nfds;
};

static inline struct vu_dev *to_vu(struct vfio_dev *dev)
{
	return (struct vu_dev *)dev;
}

/* Log target for the message checks of vfio_user_msg.c. */
static inline struct vu_log vu_log_of(struct vu_dev *vu)
{
	return (struct vu_log){ .ctx = vu->dev.ctx, .name = vu->dev.name };
}

static inline int vu_timeout(struct vu_dev *vu)
{
	return __atomic_load_n(&vu->timeout_ms, __ATOMIC_RELAXED);
}

/* ---- vfio_user_conn.c ---------------------------------------------------- */

/* Close the fds in @fds[0..@n) that are >= 0. */
void vu_close_fds(int *fds, int n);
/* Mark the device dead (the first time, logging @why if not NULL) and
 * complete every pending call with @err. _locked: caller holds @lock. */
void vu_mark_dead_locked(struct vu_dev *vu, int err, const char *why);
void vu_mark_dead(struct vu_dev *vu, int err, const char *why);
bool vu_is_dead(struct vu_dev *vu);
/* Send one whole message on the main socket or (@twin) the twin socket.
 * Returns 0, -ENODEV, -ETIMEDOUT, -errno. */
int vu_send(struct vu_dev *vu, bool twin, const struct vfu_hdr *hdr, const void *payload,
	    size_t len, const int *fds, int nfds);
/* Answer server request @req on the socket it came by: error @err (header
 * only) or success with @payload. */
void vu_reply(struct vu_dev *vu, bool twin, const struct vfu_hdr *req, int err,
	      const void *payload, size_t len);
/* The reader thread (pthread start routine, @arg: the vu_dev). */
void *vu_reader(void *arg);
void vu_reply_release(struct vu_reply *r);
/* The next message id, none of a call still waiting for its reply.
 * @vu->lock held. */
uint16_t vu_next_id_locked(struct vu_dev *vu);
int vu_call(struct vu_dev *vu, uint16_t cmd, const void *payload, size_t len, const int *fds,
	    int nfds, int max_fds, struct vu_reply *rep);

/* ---- vfio_user_dma.c ----------------------------------------------------- */

/* Serve a DMA_READ/DMA_WRITE request of the server (reader thread). */
void vu_serve_dma(struct vu_dev *vu, bool twin, const struct vfu_hdr *h, const uint8_t *body,
		  size_t len);
int vu_iommu_info(struct vfio_dev *dev, struct vfio_iommu_info *info);
int vu_dma_map(struct vfio_dev *dev, uint64_t iova, uint64_t size, void *vaddr, int fd,
	       uint64_t fd_off, uint32_t prot);
int vu_dma_unmap(struct vfio_dev *dev, uint64_t iova, uint64_t size, uint64_t *unmapped);

#endif
