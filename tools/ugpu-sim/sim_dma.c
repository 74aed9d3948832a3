/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim: DMA to the client's memory. DMA_MAP/DMA_UNMAP of its windows
 * (mmapped when they come with an fd), and the in-band DMA_READ/DMA_WRITE
 * requests engine threads send for windows without one: each waits on a
 * struct sim_pending until the server thread routes the client's reply to
 * it (srv_route_reply) or the client goes (srv_pending_fail_all).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <linux/magic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <unistd.h>

#include "sim_internal.h"

/* ---- in-band DMA (engine threads) ------------------------------------------ */

static void pending_unlink(struct sim_dev *dev, struct sim_pending *p)
{
	for (struct sim_pending **pp = &dev->pending; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	p->queued = false;
}

void srv_pending_fail_all(struct sim_dev *dev, int err)
{
	while (dev->pending) {
		struct sim_pending *p = dev->pending;

		dev->pending = p->next;
		p->queued = false;
		p->done = true;
		p->err = err;
	}
	pthread_cond_broadcast(&dev->inband_cond);
}

static int inband_one(struct sim_dev *dev, uint64_t iova, uint8_t *buf, size_t n, bool write)
{
	struct sim_pending p = { .addr = iova, .buf = buf, .len = n };
	struct vfu_dma_access acc = { .addr = iova, .count = n };
	struct vfu_hdr h = { .flags = VFU_F_TYPE_COMMAND };
	struct timespec ts;
	int ret;

	pthread_mutex_lock(&dev->lock);
	if (!dev->connected || dev->stop) {
		pthread_mutex_unlock(&dev->lock);
		return -ENODEV;
	}
	p.msg_id = dev->next_msg_id++;
	p.cmd = write ? VFU_CMD_DMA_WRITE : VFU_CMD_DMA_READ;
	p.queued = true;
	p.next = dev->pending;
	dev->pending = &p;
	dev->cnt_inband++;
	pthread_mutex_unlock(&dev->lock);

	h.msg_id = p.msg_id;
	h.cmd = p.cmd;
	ret = srv_send(dev, true, &h, &acc, sizeof(acc), write ? buf : NULL, write ? n : 0, NULL, 0);

	pthread_mutex_lock(&dev->lock);
	if (ret && p.queued) {
		pending_unlink(dev, &p);
		pthread_mutex_unlock(&dev->lock);
		return ret;
	}
	sim_deadline(&ts, SIM_INBAND_TIMEOUT_MS);
	while (!p.done) {
		if (p.queued && pthread_cond_timedwait(&dev->inband_cond, &dev->lock, &ts) == ETIMEDOUT &&
		    p.queued) {
			pending_unlink(dev, &p);
			p.done = true;
			p.err = ETIMEDOUT;
			srv_log(dev, "client did not answer DMA_%s of 0x%" PRIx64 " within %d ms",
				write ? "WRITE" : "READ", iova, SIM_INBAND_TIMEOUT_MS);
		} else if (!p.queued && !p.done) {
			/* Claimed by the server thread: it is copying the data
			 * now and will mark it done shortly. */
			sim_deadline(&ts, 1000);
			pthread_cond_timedwait(&dev->inband_cond, &dev->lock, &ts);
		}
	}
	pthread_mutex_unlock(&dev->lock);
	return -p.err;
}

int srv_dma_inband(struct sim_dev *dev, uint64_t iova, void *buf, uint64_t len, bool write)
{
	uint8_t *b = buf;
	size_t max;

	pthread_mutex_lock(&dev->lock);
	max = dev->peer_max_xfer ? dev->peer_max_xfer : VFU_MAX_DATA_XFER;
	pthread_mutex_unlock(&dev->lock);
	if (max > VFU_MAX_DATA_XFER)
		max = VFU_MAX_DATA_XFER;
	while (len) {
		size_t n = len < max ? (size_t)len : max;
		int ret = inband_one(dev, iova, b, n, write);

		if (ret)
			return ret;
		iova += n;
		b += n;
		len -= n;
	}
	return 0;
}

/* Server thread: a reply to one of our DMA_READ/WRITE requests. */
void srv_route_reply(struct sim_dev *dev, struct sim_msg *m)
{
	struct sim_pending *p;
	int err = 0;

	pthread_mutex_lock(&dev->lock);
	for (p = dev->pending; p; p = p->next)
		if (p->msg_id == m->hdr.msg_id && p->cmd == m->hdr.cmd)
			break;
	if (!p) {
		pthread_mutex_unlock(&dev->lock);
		srv_log(dev, "reply to unknown request (msg_id %u cmd %u) dropped", m->hdr.msg_id,
			m->hdr.cmd);
		return;
	}
	pending_unlink(dev, p); /* claimed: the engine waits for done */
	pthread_mutex_unlock(&dev->lock);

	if (m->hdr.flags & VFU_F_ERROR) {
		err = m->hdr.error ? (int)m->hdr.error : EIO;
	} else if (p->cmd == VFU_CMD_DMA_READ) {
		struct vfu_dma_access acc;

		if (m->len < sizeof(acc) + p->len) {
			err = EPROTO;
		} else {
			memcpy(&acc, m->body, sizeof(acc));
			if (acc.addr != p->addr || acc.count != p->len)
				err = EPROTO;
			else if (sim_guarded_memmove(dev, p->buf, m->body + sizeof(acc), p->len))
				err = EFAULT; /* p->buf is another window's memory, truncated */
		}
	} else if (m->len < 12) {
		/* DMA_WRITE reply: address + count (the spec's table says a 4-byte
		 * count; accept both). */
		err = EPROTO;
	}
	if (err == EPROTO)
		srv_log(dev, "malformed reply to DMA_%s (msg_id %u)",
			p->cmd == VFU_CMD_DMA_READ ? "READ" : "WRITE", m->hdr.msg_id);
	pthread_mutex_lock(&dev->lock);
	p->err = err;
	p->done = true;
	pthread_cond_broadcast(&dev->inband_cond);
	pthread_mutex_unlock(&dev->lock);
}

/*
 * The fd of a DMA window must be memory that cannot stall an engine: a memfd,
 * tmpfs or hugetlbfs file (a file on a disk or FUSE file system could block a
 * page fault for as long as its server likes), and it must cover
 * [@off, @off + @size) now. A client can still truncate it later: the engines
 * reach it under the SIGBUS guard (sim_guard.c). Returns 0 or -EINVAL (logged).
 */
static int dma_fd_check(struct sim_dev *dev, int fd, uint64_t off, uint64_t size)
{
	struct statfs fs;
	struct stat st;

	if (fstat(fd, &st) < 0 || fstatfs(fd, &fs) < 0) {
		srv_log(dev, "DMA_MAP: cannot stat the fd: %s", strerror(errno));
		return -EINVAL;
	}
	if (!S_ISREG(st.st_mode) ||
	    (fs.f_type != TMPFS_MAGIC && fs.f_type != HUGETLBFS_MAGIC)) {
		srv_log(dev, "DMA_MAP: the fd is not a memfd, tmpfs or hugetlbfs file (mode 0%o, "
			"file system 0x%lx)", (unsigned)st.st_mode, (unsigned long)fs.f_type);
		return -EINVAL;
	}
	if (off > UINT64_MAX - size || (uint64_t)st.st_size < off + size) {
		srv_log(dev, "DMA_MAP: the fd holds %lld bytes; the window needs [0x%" PRIx64
			", 0x%" PRIx64 ")", (long long)st.st_size, off, off + size);
		return -EINVAL;
	}
	return 0;
}

void srv_cmd_dma_map(struct sim_dev *dev, struct sim_msg *m)
{
	struct vfu_dma_map r;
	struct sim_dma_map nm = { 0 };
	size_t pos;
	int err = EINVAL;

	if (m->len < sizeof(r)) {
		srv_log(dev, "DMA_MAP: %zu-byte payload, need %zu", m->len, sizeof(r));
		goto out_err;
	}
	memcpy(&r, m->body, sizeof(r));
	if (r.argsz < sizeof(r) || (r.flags & ~(VFU_DMA_F_READ | VFU_DMA_F_WRITE)) || !r.flags ||
	    m->nfds > 1) {
		srv_log(dev, "DMA_MAP: bad argsz %u, flags 0x%x or %d fds", r.argsz, r.flags, m->nfds);
		goto out_err;
	}
	if (!r.size || (r.addr | r.size) & (SIM_PAGE - 1) || r.addr + r.size < r.addr ||
	    r.addr + r.size > SIM_IOVA_LIMIT || (m->nfds && (r.offset & (SIM_PAGE - 1)))) {
		srv_log(dev, "DMA_MAP: bad window iova 0x%" PRIx64 " size 0x%" PRIx64
			" offset 0x%" PRIx64 " (4 KiB aligned, inside [0, 2^48))",
			r.addr, r.size, r.offset);
		goto out_err;
	}
	nm.iova = r.addr;
	nm.size = r.size;
	nm.prot = r.flags;
	if (m->nfds && dma_fd_check(dev, m->fds[0], r.offset, r.size))
		goto out_err;
	if (m->nfds) {
		int prot = PROT_READ | ((r.flags & VFU_DMA_F_WRITE) ? PROT_WRITE : 0);
		void *p = mmap(NULL, r.size, prot, MAP_SHARED, m->fds[0], (off_t)r.offset);

		if (p == MAP_FAILED) {
			err = errno;
			srv_log(dev, "DMA_MAP: mmap of the fd (size 0x%" PRIx64 " offset 0x%" PRIx64
				") failed: %s", r.size, r.offset, strerror(err));
			goto out_err;
		}
		nm.host = p;
	}
	pthread_mutex_lock(&dev->lock);
	if (dev->nmaps >= dev->max_dma_maps) {
		pthread_mutex_unlock(&dev->lock);
		srv_log(dev, "DMA_MAP: %zu windows, max_dma_maps reached", dev->nmaps);
		err = ENOSPC;
		goto out_unmap;
	}
	for (pos = 0; pos < dev->nmaps && dev->maps[pos].iova < nm.iova; pos++)
		;
	if ((pos < dev->nmaps && dev->maps[pos].iova < nm.iova + nm.size) ||
	    (pos > 0 && dev->maps[pos - 1].iova + dev->maps[pos - 1].size > nm.iova)) {
		pthread_mutex_unlock(&dev->lock);
		srv_log(dev, "DMA_MAP: iova 0x%" PRIx64 " size 0x%" PRIx64 " overlaps a window",
			r.addr, r.size);
		err = EEXIST;
		goto out_unmap;
	}
	if (dev->nmaps == dev->maps_cap) {
		size_t cap = dev->maps_cap ? dev->maps_cap * 2 : 16;
		struct sim_dma_map *n = realloc(dev->maps, cap * sizeof(*n));

		if (!n) {
			pthread_mutex_unlock(&dev->lock);
			err = ENOMEM;
			goto out_unmap;
		}
		dev->maps = n;
		dev->maps_cap = cap;
	}
	memmove(&dev->maps[pos + 1], &dev->maps[pos], (dev->nmaps - pos) * sizeof(nm));
	dev->maps[pos] = nm;
	dev->nmaps++;
	pthread_mutex_unlock(&dev->lock);
	srv_reply(dev, m, NULL, 0, NULL, 0, NULL, 0);
	return;

out_unmap:
	if (nm.host)
		munmap(nm.host, nm.size);
out_err:
	srv_reply_err(dev, m, err);
}

static bool unmap_range_quiet(struct sim_dev *dev)
{
	return !inflight_overlaps(dev, dev->wait_start, dev->wait_end);
}

void srv_cmd_dma_unmap(struct sim_dev *dev, struct sim_msg *m)
{
	struct vfu_dma_unmap r;
	uint64_t start, end, unmapped = 0;
	struct sim_dma_map *gone = NULL;
	size_t first, cnt = 0;

	if (m->len < sizeof(r)) {
		srv_log(dev, "DMA_UNMAP: %zu-byte payload, need %zu", m->len, sizeof(r));
		srv_reply_err(dev, m, EINVAL);
		return;
	}
	memcpy(&r, m->body, sizeof(r));
	if (r.argsz < sizeof(r) || (r.flags & ~VFU_DMA_UNMAP_F_ALL) || m->nfds) {
		srv_log(dev, "DMA_UNMAP: bad argsz %u, flags 0x%x or %d fds", r.argsz, r.flags,
			m->nfds);
		srv_reply_err(dev, m, EINVAL);
		return;
	}
	if (r.flags & VFU_DMA_UNMAP_F_ALL) {
		if (r.addr || r.size) {
			srv_log(dev, "DMA_UNMAP: ALL with a range");
			srv_reply_err(dev, m, EINVAL);
			return;
		}
		start = 0;
		end = UINT64_MAX;
	} else {
		start = r.addr;
		end = r.addr + r.size;
		if (!r.size || end < start) {
			srv_log(dev, "DMA_UNMAP: bad range 0x%" PRIx64 " + 0x%" PRIx64, r.addr, r.size);
			srv_reply_err(dev, m, EINVAL);
			return;
		}
	}
	dev->wait_start = start;
	dev->wait_end = end;
	for (;;) {
		pthread_mutex_lock(&dev->lock);
		/* Windows must lie wholly inside the range: no partial unmap. */
		for (first = 0; first < dev->nmaps && dev->maps[first].iova + dev->maps[first].size <= start;
		     first++)
			;
		if (first < dev->nmaps && dev->maps[first].iova < start) {
			pthread_mutex_unlock(&dev->lock);
			goto out_partial;
		}
		for (cnt = 0; first + cnt < dev->nmaps && dev->maps[first + cnt].iova < end; cnt++) {
			struct sim_dma_map *mm = &dev->maps[first + cnt];

			if (end - mm->iova < mm->size) {
				pthread_mutex_unlock(&dev->lock);
				goto out_partial;
			}
		}
		if (!cnt) {
			pthread_mutex_unlock(&dev->lock);
			if (r.flags & VFU_DMA_UNMAP_F_ALL)
				break;
			srv_log(dev, "DMA_UNMAP: no window at 0x%" PRIx64 " + 0x%" PRIx64, r.addr,
				r.size);
			srv_reply_err(dev, m, ENOENT);
			return;
		}
		if (!inflight_overlaps(dev, start, end)) {
			gone = malloc(cnt * sizeof(*gone));
			if (!gone) {
				pthread_mutex_unlock(&dev->lock);
				srv_reply_err(dev, m, ENOMEM);
				return;
			}
			memcpy(gone, &dev->maps[first], cnt * sizeof(*gone));
			memmove(&dev->maps[first], &dev->maps[first + cnt],
				(dev->nmaps - first - cnt) * sizeof(*gone));
			dev->nmaps -= cnt;
			pthread_mutex_unlock(&dev->lock);
			break;
		}
		pthread_mutex_unlock(&dev->lock);
		/* An engine is on this range: wait for it, serving its in-band
		 * requests meanwhile. */
		if (srv_wait(dev, unmap_range_quiet, 10000)) {
			srv_reply_err(dev, m, EBUSY);
			return;
		}
	}
	for (size_t i = 0; gone && i < cnt; i++) {
		if (gone[i].host)
			munmap(gone[i].host, gone[i].size);
		unmapped += gone[i].size;
	}
	free(gone);
	if (!(r.flags & VFU_DMA_UNMAP_F_ALL))
		r.size = unmapped;
	srv_reply(dev, m, &r, sizeof(r), NULL, 0, NULL, 0);
	return;

out_partial:
	srv_log(dev, "DMA_UNMAP: 0x%" PRIx64 " + 0x%" PRIx64 " splits a window", r.addr, r.size);
	srv_reply_err(dev, m, EINVAL);
}
