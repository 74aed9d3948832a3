/* SPDX-License-Identifier: MIT */
/*
 * vfio-user client transport (qemu docs/interop/vfio-user.rst, 0.1): open
 * (connect, negotiate, read the device's regions and irqs), the region, irq
 * and reset ops, close. The connection and its reader thread are in
 * vfio_user_conn.c (the threading model and lock rules are written there),
 * DMA in vfio_user_dma.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "vfio/vfio_user.h"
#include "vfio/vfio_user_caps.h"
#include "vfio/vfio_user_internal.h"

/* ---- open-time negotiation -------------------------------------------- */

/* The server turned twin-socket mode on and passed @fd: it must be a stream
 * socket; the reader watches it from now on. Returns 0 or -EPROTO. */
static int vu_twin_adopt(struct vu_dev *vu, int fd)
{
	struct vu_log l = vu_log_of(vu);
	uint64_t one = 1;
	int fl;

	if (vu_twin_fd_check(&l, fd))
		return -EPROTO;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		log_err(vu->dev.ctx, "%s: cannot make the twin socket non-blocking: %s", vu->dev.name,
			strerror(errno));
		return -EPROTO;
	}
	pthread_mutex_lock(&vu->lock);
	vu->twin = fd;
	pthread_mutex_unlock(&vu->lock);
	if (write(vu->wake_fd, &one, sizeof(one)) < 0) {
		/* the counter is not near saturation: cannot fail */
	}
	log_dbg(vu->dev.ctx, "%s: twin-socket mode: the server's requests come on their own socket",
		vu->dev.name);
	return 0;
}

static int vu_negotiate(struct vu_dev *vu)
{
	struct vu_log l = vu_log_of(vu);
	char json[160];
	uint8_t buf[sizeof(struct vfu_version) + sizeof(json)];
	struct vfu_version ver = { .major = VFU_VERSION_MAJOR, .minor = VFU_VERSION_MINOR };
	struct vu_negotiated neg;
	struct vu_reply r;
	int n, ret;

	struct vfu_caps mine = { .max_msg_fds = VU_RECV_FDS,
				 .max_data_xfer_size = VFU_MAX_DATA_XFER,
				 .twin_supported = vu->offer_twin,
				 .twin_fd_index = -1 }; /* the limits of DMA are the server's to say */

	n = vfu_caps_format(&mine, json, sizeof(json));
	if (n < 0)
		return n;
	memcpy(buf, &ver, sizeof(ver));
	memcpy(buf + sizeof(ver), json, (size_t)n + 1);
	ret = vu_call(vu, VFU_CMD_VERSION, buf, sizeof(ver) + (size_t)n + 1, NULL, 0, VU_RECV_FDS,
		      &r);
	if (ret == -EBUSY)
		log_err(vu->dev.ctx, "%s: in use: the device is held by another client (the server answered EBUSY; its log names the holder)",
			vu->dev.name);
	else if (ret == -ENODEV)
		log_err(vu->dev.ctx, "%s: the server closed the connection instead of answering VERSION: it does not speak vfio-user %u.%u, or refuses this client",
			vu->dev.name, VFU_VERSION_MAJOR, VFU_VERSION_MINOR);
	if (ret)
		return ret;
	ret = vu_version_parse(&l, r.data, r.len, r.nfds, vu->offer_twin, &neg);
	if (ret)
		goto out_release;
	if (neg.twin_fd_index >= 0) {
		ret = vu_twin_adopt(vu, r.fds[neg.twin_fd_index]);
		if (ret)
			goto out_release;
		r.fds[neg.twin_fd_index] = -1; /* ours now */
	}
	vu->max_msg_fds = neg.max_msg_fds;
	vu->max_xfer = neg.max_xfer;
	vu->max_dma_maps = neg.max_dma_maps;
	vu->pgsizes = neg.pgsizes;
	log_dbg(vu->dev.ctx, "%s: vfio-user %u.%u, max_msg_fds %u, max_xfer %u, max_dma_maps %u, pgsizes 0x%" PRIx64,
		vu->dev.name, neg.major, neg.minor, vu->max_msg_fds, vu->max_xfer, vu->max_dma_maps,
		vu->pgsizes);
out_release:
	vu_reply_release(&r);
	return ret;
}

static int vu_get_device_info(struct vu_dev *vu)
{
	struct vu_log l = vu_log_of(vu);
	struct vfu_device_info di = { .argsz = sizeof(di) };
	struct vu_reply r;
	int ret;

	ret = vu_call(vu, VFU_CMD_DEVICE_GET_INFO, &di, sizeof(di), NULL, 0, 0, &r);
	if (ret)
		return ret;
	ret = vu_device_info_parse(&l, r.data, r.len, &vu->flags, &vu->dev.num_regions,
				   &vu->dev.num_irqs);
	vu_reply_release(&r);
	return ret;
}

static int vu_get_region_info(struct vu_dev *vu, uint32_t index)
{
	struct vu_log l = vu_log_of(vu);
	struct vu_region *reg = &vu->regions[index];
	struct vfu_region_info ri;
	uint32_t argsz = 512;
	struct vu_reply r;
	int ret;

	for (int attempt = 0;; attempt++) {
		ri = (struct vfu_region_info){ .argsz = argsz, .index = index };
		ret = vu_call(vu, VFU_CMD_DEVICE_GET_REGION_INFO, &ri, sizeof(ri), NULL, 0, 1, &r);
		if (ret)
			return ret;
		ret = vu_region_info_parse(&l, index, argsz, attempt == 0, r.data, r.len, r.nfds,
					   &reg->info, &reg->mmap_offset);
		if (ret <= 0)
			break;
		argsz = (uint32_t)ret; /* ask again with room for the capabilities */
		vu_reply_release(&r);
	}
	if (ret == 0 && (reg->info.flags & VFIO_REGION_F_MMAP) && reg->info.size) {
		/* Before anything maps it: a file shorter than the region would
		 * SIGBUS the first touch (the ring set-up's memset). */
		ret = vu_region_fd_check(&l, r.fds[0], &reg->info, reg->mmap_offset);
		if (ret == 0) {
			reg->fd = r.fds[0];
			r.nfds = 0;
		}
	}
	vu_reply_release(&r);
	return ret;
}

static int vu_get_irq_info(struct vu_dev *vu, uint32_t index)
{
	struct vu_log l = vu_log_of(vu);
	struct vfu_irq_info ii = { .argsz = sizeof(ii), .index = index };
	struct vu_reply r;
	int ret;

	ret = vu_call(vu, VFU_CMD_DEVICE_GET_IRQ_INFO, &ii, sizeof(ii), NULL, 0, 0, &r);
	if (ret)
		return ret;
	ret = vu_irq_info_parse(&l, index, r.data, r.len, &vu->irqs[index]);
	vu_reply_release(&r);
	return ret;
}

/* ---- ops -------------------------------------------------------------- */

static void vu_close(struct vfio_dev *dev);

static int vu_region_info(struct vfio_dev *dev, uint32_t index, struct vfio_dev_region_info *info)
{
	struct vu_dev *vu = to_vu(dev);

	if (!info)
		return -EINVAL;
	if (index >= VU_MAX_REGIONS || index >= dev->num_regions) {
		memset(info, 0, sizeof(*info));
		info->index = index;
		return 0;
	}
	*info = vu->regions[index].info;
	return 0;
}

static int vu_region_check(struct vu_dev *vu, uint32_t index, uint64_t off, size_t len, uint32_t need)
{
	const struct vfio_dev_region_info *ri;

	if (index >= vu->dev.num_regions)
		return -EINVAL;
	ri = &vu->regions[index].info;
	if (!(ri->flags & need) || off > ri->size || len > ri->size - off)
		return -EINVAL;
	return 0;
}

static int vu_region_read(struct vfio_dev *dev, uint32_t index, uint64_t off, void *buf, size_t len)
{
	struct vu_dev *vu = to_vu(dev);
	struct vu_log l = vu_log_of(vu);
	size_t done = 0;
	int ret;

	if (!buf && len)
		return -EINVAL;
	ret = vu_region_check(vu, index, off, len, VFIO_REGION_F_READ);
	if (ret)
		return ret;
	while (done < len) {
		uint32_t chunk = (uint32_t)(len - done > vu->max_xfer ? vu->max_xfer : len - done);
		struct vfu_region_access ra = { .offset = off + done, .region = index, .count = chunk };
		struct vu_reply r;

		ret = vu_call(vu, VFU_CMD_REGION_READ, &ra, sizeof(ra), NULL, 0, 0, &r);
		if (ret)
			return ret;
		ret = vu_region_read_check(&l, index, ra.offset, chunk, r.data, r.len);
		if (ret) {
			vu_reply_release(&r);
			return ret;
		}
		memcpy((uint8_t *)buf + done, (uint8_t *)r.data + sizeof(ra), chunk);
		vu_reply_release(&r);
		done += chunk;
	}
	return 0;
}

static int vu_region_write(struct vfio_dev *dev, uint32_t index, uint64_t off, const void *buf,
			   size_t len)
{
	struct vu_dev *vu = to_vu(dev);
	struct vu_log l = vu_log_of(vu);
	uint8_t *msg;
	size_t done = 0;
	int ret;

	if (!buf && len)
		return -EINVAL;
	ret = vu_region_check(vu, index, off, len, VFIO_REGION_F_WRITE);
	if (ret)
		return ret;
	msg = malloc(sizeof(struct vfu_region_access) + (len < vu->max_xfer ? len : vu->max_xfer));
	if (!msg)
		return -ENOMEM;
	while (done < len) {
		uint32_t chunk = (uint32_t)(len - done > vu->max_xfer ? vu->max_xfer : len - done);
		struct vfu_region_access ra = { .offset = off + done, .region = index, .count = chunk };
		struct vu_reply r;

		memcpy(msg, &ra, sizeof(ra));
		memcpy(msg + sizeof(ra), (const uint8_t *)buf + done, chunk);
		ret = vu_call(vu, VFU_CMD_REGION_WRITE, msg, sizeof(ra) + chunk, NULL, 0, 0, &r);
		if (ret)
			break;
		ret = vu_region_write_check(&l, &ra, r.data, r.len);
		vu_reply_release(&r);
		if (ret)
			break;
		done += chunk;
	}
	free(msg);
	return ret;
}

/*
 * A REGION_WRITE sent with NO_REPLY (vfio-user's "no reply" flag): no
 * round trip. The server handles this socket's commands in order, so
 * every later access sees it; an error it meets is dropped with the
 * write (docs/reference-device.md, "Posted writes").
 */
static int vu_region_write_posted(struct vfio_dev *dev, uint32_t index, uint64_t off,
				  const void *buf, size_t len)
{
	struct vu_dev *vu = to_vu(dev);
	struct vfu_region_access ra = { .offset = off, .region = index, .count = (uint32_t)len };
	uint8_t msg[sizeof(ra) + 8];
	struct vfu_hdr h;
	int ret;

	if (!buf || !len || len > 8)
		return -EINVAL;
	ret = vu_region_check(vu, index, off, len, VFIO_REGION_F_WRITE);
	if (ret)
		return ret;
	memcpy(msg, &ra, sizeof(ra));
	memcpy(msg + sizeof(ra), buf, len);
	pthread_mutex_lock(&vu->lock);
	if (vu->dead) {
		pthread_mutex_unlock(&vu->lock);
		return -ENODEV;
	}
	/* an id of its own, though no reply names it: a server that replies
	 * anyway is answered with "matches no request" and nothing else */
	h = (struct vfu_hdr){
		.msg_id = vu_next_id_locked(vu),
		.cmd = VFU_CMD_REGION_WRITE,
		.size = (uint32_t)(sizeof(h) + sizeof(ra) + len),
		.flags = VFU_F_TYPE_COMMAND | VFU_F_NO_REPLY,
	};
	pthread_mutex_unlock(&vu->lock);
	return vu_send(vu, false, &h, msg, sizeof(ra) + len, NULL, 0);
}

static int vu_region_fd(struct vfio_dev *dev, uint32_t index, int *fd, uint64_t *fd_off)
{
	struct vu_dev *vu = to_vu(dev);
	const struct vu_region *reg;

	if (!fd || !fd_off || index >= dev->num_regions)
		return -EINVAL;
	reg = &vu->regions[index];
	if (!(reg->info.flags & VFIO_REGION_F_MMAP) || reg->fd < 0)
		return -ENOTSUP;
	*fd = reg->fd;
	*fd_off = reg->mmap_offset;
	return 0;
}

static int vu_region_mmap(struct vfio_dev *dev, uint32_t index, uint64_t off, size_t len, int prot,
			  void **addr)
{
	struct vu_dev *vu = to_vu(dev);
	const struct vu_region *reg;
	void *p;
	int ret;

	if (!addr || index >= dev->num_regions)
		return -EINVAL;
	reg = &vu->regions[index];
	ret = vfio_region_mmap_check(dev, &reg->info, off, len);
	if (ret)
		return ret;
	if (reg->fd < 0) {
		log_err(dev->ctx, "%s: region %u came without an fd to map", dev->name, index);
		return -EINVAL;
	}
	if (vu_is_dead(vu))
		return -ENODEV;
	p = mmap(NULL, len, prot, MAP_SHARED, reg->fd, (off_t)(reg->mmap_offset + off));
	if (p == MAP_FAILED) {
		int err = -errno;

		log_err(dev->ctx, "%s: mmap of region %u [0x%" PRIx64 "+0x%zx] failed: %s", dev->name,
			index, off, len, strerror(-err));
		return err;
	}
	ret = vfio_mmap_track(&vu->mmaps, &vu->lock, p, len);
	if (ret) {
		munmap(p, len);
		return ret;
	}
	*addr = p;
	return 0;
}

static int vu_region_munmap(struct vfio_dev *dev, void *addr, size_t len)
{
	struct vu_dev *vu = to_vu(dev);

	return vfio_mmap_untrack(&vu->mmaps, &vu->lock, addr, len);
}

static int vu_irq_info(struct vfio_dev *dev, uint32_t index, struct vfio_dev_irq_info *info)
{
	struct vu_dev *vu = to_vu(dev);

	if (!info)
		return -EINVAL;
	if (index >= dev->num_irqs) {
		memset(info, 0, sizeof(*info));
		info->index = index;
		return 0;
	}
	*info = vu->irqs[index];
	return 0;
}

/* One SET_IRQS message: [start, start+count) to @fds (count fds), or with
 * @fds NULL and @assign false de-assign that range. */
static int vu_set_irqs_one(struct vu_dev *vu, uint32_t index, uint32_t start, uint32_t count,
			   const int *fds, bool disable_all)
{
	struct vfu_irq_set is = {
		.argsz = sizeof(is),
		.flags = VFU_IRQ_SET_ACTION_TRIGGER |
			 (disable_all ? VFU_IRQ_SET_DATA_NONE : VFU_IRQ_SET_DATA_EVENTFD),
		.index = index,
		.start = start,
		.count = count,
	};

	return vu_call(vu, VFU_CMD_DEVICE_SET_IRQS, &is, sizeof(is), fds, fds ? (int)count : 0, 0,
		       NULL);
}

static int vu_set_irqs(struct vfio_dev *dev, uint32_t index, uint32_t start, uint32_t count,
		       const int *fds)
{
	struct vu_dev *vu = to_vu(dev);
	uint32_t i = 0;
	int ret;

	if (index >= dev->num_irqs)
		return -EINVAL;
	if (count == 0)
		return vu_set_irqs_one(vu, index, 0, 0, NULL, true);
	if (!fds || start > vu->irqs[index].count || count > vu->irqs[index].count - start)
		return -EINVAL;
	/* fds travel as ancillary data, which cannot say "-1": send runs of
	 * real fds (at most max_msg_fds each) and runs of -1 as de-assigns. */
	while (i < count) {
		uint32_t j = i;

		if (fds[i] < 0) {
			while (j < count && fds[j] < 0)
				j++;
			ret = vu_set_irqs_one(vu, index, start + i, j - i, NULL, false);
		} else {
			uint32_t lim = vu->max_msg_fds ? vu->max_msg_fds : 1;

			while (j < count && fds[j] >= 0 && j - i < lim)
				j++;
			ret = vu_set_irqs_one(vu, index, start + i, j - i, fds + i, false);
		}
		if (ret)
			return ret;
		i = j;
	}
	return 0;
}

static int vu_reset(struct vfio_dev *dev)
{
	struct vu_dev *vu = to_vu(dev);

	if (!(vu->flags & VFU_DEV_F_RESET))
		return -ENOTSUP;
	return vu_call(vu, VFU_CMD_DEVICE_RESET, NULL, 0, NULL, 0, 0, NULL);
}

static const struct vfio_transport_ops vu_ops = {
	.name = "vfio-user",
	.close = vu_close,
	.region_info = vu_region_info,
	.region_read = vu_region_read,
	.region_write = vu_region_write,
	.region_write_posted = vu_region_write_posted,
	.region_mmap = vu_region_mmap,
	.region_munmap = vu_region_munmap,
	.region_fd = vu_region_fd,
	.irq_info = vu_irq_info,
	.set_irqs = vu_set_irqs,
	.iommu_info = vu_iommu_info,
	.dma_map = vu_dma_map,
	.dma_unmap = vu_dma_unmap,
	.reset = vu_reset,
	.low_power_enter = NULL, /* vfio-user has none: PCI PM through config space */
	.low_power_exit = NULL,
};

/* ---- lifetime ----------------------------------------------------------- */

static void vu_close(struct vfio_dev *dev)
{
	struct vu_dev *vu = to_vu(dev);
	uint64_t one = 1;
	ssize_t wr;

	if (!dev)
		return;
	if (vu->reader_started) {
		/* Wake the reader, then make sure it never waits on a live peer. */
		pthread_mutex_lock(&vu->lock);
		vu->stopping = true;
		pthread_mutex_unlock(&vu->lock);
		wr = write(vu->wake_fd, &one, sizeof(one));
		(void)wr;
		shutdown(vu->sock, SHUT_RDWR);
		if (vu->twin >= 0)
			shutdown(vu->twin, SHUT_RDWR);
		pthread_join(vu->reader, NULL);
	}
	vu_mark_dead(vu, -ENODEV, NULL);
	vfio_mmap_release_all(&vu->mmaps);
	for (uint32_t i = 0; i < VU_MAX_REGIONS; i++)
		if (vu->regions[i].fd >= 0)
			close(vu->regions[i].fd);
	if (vu->sock >= 0)
		close(vu->sock);
	if (vu->twin >= 0)
		close(vu->twin);
	if (vu->wake_fd >= 0)
		close(vu->wake_fd);
	free(vu->dma);
	pthread_cond_destroy(&vu->cond);
	pthread_mutex_destroy(&vu->lock);
	pthread_mutex_destroy(&vu->send_lock);
	pthread_mutex_destroy(&vu->twin_send_lock);
	free(vu);
}

static int vu_timeout_from(const struct vfio_user_opts *opts)
{
	const char *env;

	if (opts && opts->size >= offsetof(struct vfio_user_opts, timeout_ms) + sizeof(int) &&
	    opts->timeout_ms > 0)
		return opts->timeout_ms;
	env = getenv("UGPU_VFIO_USER_TIMEOUT_MS");
	if (env && atoi(env) > 0)
		return atoi(env);
	return VFIO_USER_DEFAULT_TIMEOUT_MS;
}

/* Offer twin-socket mode unless the options or UGPU_VFIO_USER_TWIN_SOCKET=0
 * say no. */
static bool vu_twin_from(const struct vfio_user_opts *opts)
{
	const char *env;

	if (opts && opts->size >= offsetof(struct vfio_user_opts, flags) + sizeof(uint32_t) &&
	    (opts->flags & VFIO_USER_NO_TWIN_SOCKET))
		return false;
	env = getenv("UGPU_VFIO_USER_TWIN_SOCKET");
	return !(env && !strcmp(env, "0"));
}

int vfio_user_open_fd(struct ugpu_context *ctx, int fd, const char *name,
		      const struct vfio_user_opts *opts, struct vfio_dev **out)
{
	pthread_condattr_t ca;
	struct vu_dev *vu;
	int ret, fl;

	if (fd < 0 || !out) {
		if (fd >= 0)
			close(fd);
		return -EINVAL;
	}
	vu = calloc(1, sizeof(*vu));
	if (!vu) {
		close(fd);
		return -ENOMEM;
	}
	vu->dev.ops = &vu_ops;
	vu->dev.ctx = ctx;
	snprintf(vu->dev.name, sizeof(vu->dev.name), "vfio-user:%s", name ? name : "?");
	vu->sock = fd;
	vu->twin = -1;
	vu->wake_fd = -1;
	vu->offer_twin = vu_twin_from(opts);
	vu->timeout_ms = vu_timeout_from(opts);
	vu->max_msg_fds = VFU_DEFAULT_MAX_MSG_FDS;
	vu->max_xfer = VFU_DEFAULT_MAX_DATA_XFER;
	vu->max_dma_maps = VFU_DEFAULT_MAX_DMA_MAPS;
	vu->pgsizes = VFU_DEFAULT_PGSIZES;
	for (int i = 0; i < VU_MAX_REGIONS; i++)
		vu->regions[i].fd = -1;
	pthread_mutex_init(&vu->lock, NULL);
	pthread_mutex_init(&vu->send_lock, NULL);
	pthread_mutex_init(&vu->twin_send_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&vu->cond, &ca);
	pthread_condattr_destroy(&ca);

	vu->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vu->wake_fd < 0) {
		ret = -errno;
		goto out_close;
	}
	/* Non-blocking: every read and write below waits in poll() with a bound. */
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		ret = -errno;
		goto out_close;
	}
	ret = pthread_create(&vu->reader, NULL, vu_reader, vu);
	if (ret) {
		ret = -ret;
		goto out_close;
	}
	vu->reader_started = true;

	ret = vu_negotiate(vu);
	if (ret)
		goto out_close;
	__atomic_store_n(&vu->negotiated, true, __ATOMIC_RELEASE);
	ret = vu_get_device_info(vu);
	if (ret)
		goto out_close;
	for (uint32_t i = 0; i < vu->dev.num_regions; i++) {
		ret = vu_get_region_info(vu, i);
		if (ret)
			goto out_close;
	}
	for (uint32_t i = 0; i < vu->dev.num_irqs; i++) {
		ret = vu_get_irq_info(vu, i);
		if (ret)
			goto out_close;
	}
	*out = &vu->dev;
	return 0;

out_close:
	log_err(ctx, "%s: open failed: %s", vu->dev.name, strerror(-ret));
	vu_close(&vu->dev);
	return ret;
}

int vfio_user_open_opts(struct ugpu_context *ctx, const char *socket_path,
			const struct vfio_user_opts *opts, struct vfio_dev **out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int64_t deadline;
	int fd, ret;

	if (!socket_path || !out)
		return -EINVAL;
	if (strlen(socket_path) >= sizeof(sa.sun_path)) {
		log_err(ctx, "vfio-user: socket path '%s' is longer than %zu bytes", socket_path,
			sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);
	{
		struct stat stb;

		/* connect() says "connection refused" for a file that is not a
		 * socket: say what is wrong instead. */
		if (stat(socket_path, &stb) == 0 && !S_ISSOCK(stb.st_mode)) {
			log_err(ctx, "vfio-user: %s is not a socket (a vfio-user server listens on a UNIX socket)",
				socket_path);
			return -ENOTSOCK;
		}
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* A non-blocking AF_UNIX connect fails with EAGAIN while the server's
	 * backlog is full: retry until the bound. */
	deadline = (int64_t)now_ms() + vu_timeout_from(opts);
	for (;;) {
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		ret = -errno;
		if (ret == -EINTR)
			continue;
		if (ret == -EAGAIN && (int64_t)now_ms() < deadline) {
			usleep(1000);
			continue;
		}
		if (ret == -EAGAIN)
			ret = -ETIMEDOUT;
		log_err(ctx, "vfio-user: cannot connect to %s: %s", socket_path, strerror(-ret));
		close(fd);
		return ret;
	}
	return vfio_user_open_fd(ctx, fd, socket_path, opts, out);
}

int vfio_user_open(struct ugpu_context *ctx, const char *socket_path, struct vfio_dev **out)
{
	return vfio_user_open_opts(ctx, socket_path, NULL, out);
}

bool vfio_user_is_dead(struct vfio_dev *dev)
{
	return vu_is_dead(to_vu(dev));
}

void vfio_user_set_timeout(struct vfio_dev *dev, int timeout_ms)
{
	if (dev && timeout_ms > 0)
		__atomic_store_n(&to_vu(dev)->timeout_ms, timeout_ms, __ATOMIC_RELAXED);
}
