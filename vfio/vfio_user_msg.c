/* SPDX-License-Identifier: MIT */
/*
 * vfio-user client: judging what the server sent (see vfio_user_msg.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "base/log.h"
#include "vfio/vfio_user_caps.h"
#include "vfio/vfio_user_msg.h"

/* Sanity bounds on what DEVICE_GET_INFO may claim. */
#define VU_SANE_REGIONS 64
#define VU_SANE_IRQS 64

static const char *const vu_cmd_names[VFU_CMD_MAX] = {
	[VFU_CMD_VERSION] = "VERSION",
	[VFU_CMD_DMA_MAP] = "DMA_MAP",
	[VFU_CMD_DMA_UNMAP] = "DMA_UNMAP",
	[VFU_CMD_DEVICE_GET_INFO] = "DEVICE_GET_INFO",
	[VFU_CMD_DEVICE_GET_REGION_INFO] = "GET_REGION_INFO",
	[VFU_CMD_DEVICE_GET_REGION_IO_FDS] = "GET_REGION_IO_FDS",
	[VFU_CMD_DEVICE_GET_IRQ_INFO] = "GET_IRQ_INFO",
	[VFU_CMD_DEVICE_SET_IRQS] = "SET_IRQS",
	[VFU_CMD_REGION_READ] = "REGION_READ",
	[VFU_CMD_REGION_WRITE] = "REGION_WRITE",
	[VFU_CMD_DMA_READ] = "DMA_READ",
	[VFU_CMD_DMA_WRITE] = "DMA_WRITE",
	[VFU_CMD_DEVICE_RESET] = "DEVICE_RESET",
	[VFU_CMD_REGION_WRITE_MULTI] = "REGION_WRITE_MULTI",
	[VFU_CMD_DEVICE_FEATURE] = "DEVICE_FEATURE",
};

const char *vu_cmd_name(unsigned int cmd)
{
	if (cmd < VFU_CMD_MAX && vu_cmd_names[cmd])
		return vu_cmd_names[cmd];
	return "unknown command";
}

int vu_reply_status(const struct vu_log *l, uint16_t req_cmd, const struct vfu_hdr *h,
		    size_t len, bool fds_cut)
{
	if (h->cmd != req_cmd) {
		log_err(l->ctx, "%s: reply to %s (msg_id %u) says command %u", l->name,
			vu_cmd_name(req_cmd), h->msg_id, h->cmd);
		return -EPROTO;
	}
	if (h->flags & ~(VFU_F_TYPE_MASK | VFU_F_ERROR)) {
		log_err(l->ctx, "%s: reply to %s has unknown flags 0x%x", l->name,
			vu_cmd_name(req_cmd), h->flags);
		return -EPROTO;
	}
	if (fds_cut) {
		log_err(l->ctx, "%s: reply to %s carried more than %d fds", l->name,
			vu_cmd_name(req_cmd), VU_RECV_FDS);
		return -EPROTO;
	}
	if (!(h->flags & VFU_F_ERROR))
		return 0;
	/* The specification forbids payload in an error reply, but some
	 * servers send one: the errno they give is still the best answer.
	 * Error 0 with the flag is allowed (failed, reason unknown); an errno
	 * Linux does not have is as good as none (the caller would pass a
	 * meaningless number up). */
	if (len)
		log_err(l->ctx,
			"%s: error reply to %s carries %zu payload bytes, which the specification forbids; keeping its errno %u",
			l->name, vu_cmd_name(req_cmd), len, h->error);
	if (h->error > EHWPOISON) {
		log_err(l->ctx, "%s: error reply to %s gives errno %u, which Linux does not have; -EIO",
			l->name, vu_cmd_name(req_cmd), h->error);
		return -EIO;
	}
	if (h->error == 0)
		return -EIO;
	return -(int)h->error;
}

int vu_version_parse(const struct vu_log *l, const void *data, size_t len, int nfds,
		     bool twin_offered, struct vu_negotiated *out)
{
	struct vfu_version ver;
	struct vfu_caps caps;
	const char *why;
	int ret;

	if (len < sizeof(ver)) {
		log_err(l->ctx, "%s: VERSION reply of %zu bytes is too short", l->name, len);
		return -EPROTO;
	}
	memcpy(&ver, data, sizeof(ver));
	if (ver.major != VFU_VERSION_MAJOR) {
		log_err(l->ctx, "%s: server speaks vfio-user %u.%u, we need major %u", l->name,
			ver.major, ver.minor, VFU_VERSION_MAJOR);
		return -EPROTO;
	}
	if (ver.minor > VFU_VERSION_MINOR) {
		log_err(l->ctx, "%s: server answered minor %u above the %u we proposed", l->name,
			ver.minor, VFU_VERSION_MINOR);
		return -EPROTO;
	}
	vfu_caps_init(&caps);
	ret = vfu_caps_parse((const char *)data + sizeof(ver), len - sizeof(ver), &caps, &why);
	if (ret) {
		log_err(l->ctx, "%s: VERSION capabilities are not valid JSON of the expected shape: %s",
			l->name, ret == -ENOMEM ? "out of memory" : why);
		return ret;
	}
	if (caps.max_data_xfer_size == 0 || caps.pgsizes == 0 || caps.max_dma_maps == 0) {
		log_err(l->ctx,
			"%s: VERSION capabilities give a zero max_data_xfer_size, pgsizes or max_dma_maps",
			l->name);
		return -EPROTO;
	}
	out->twin_fd_index = -1;
	if (caps.twin_supported) {
		/* The capability list must be a subset of what we proposed, and
		 * a server that says yes must hand over the socket. */
		if (!twin_offered) {
			log_err(l->ctx, "%s: server turned on twin-socket mode, which we did not offer",
				l->name);
			return -EPROTO;
		}
		if (caps.twin_fd_index < 0 || caps.twin_fd_index >= nfds) {
			log_err(l->ctx,
				"%s: server says twin-socket mode is on but its fd_index %" PRId64
				" names none of the %d fds it passed",
				l->name, caps.twin_fd_index, nfds);
			return -EPROTO;
		}
		out->twin_fd_index = (int)caps.twin_fd_index;
	} else if (nfds) {
		log_err(l->ctx, "%s: VERSION reply carries %d fds without twin-socket mode", l->name,
			nfds);
		return -EPROTO;
	}
	out->major = ver.major;
	out->minor = ver.minor;
	out->max_msg_fds = caps.max_msg_fds > VFU_MAX_FDS ? VFU_MAX_FDS : (uint32_t)caps.max_msg_fds;
	out->max_xfer = caps.max_data_xfer_size > VFU_MAX_DATA_XFER ?
				VFU_MAX_DATA_XFER :
				(uint32_t)caps.max_data_xfer_size;
	out->max_dma_maps = caps.max_dma_maps > UINT32_MAX ? UINT32_MAX : (uint32_t)caps.max_dma_maps;
	out->pgsizes = caps.pgsizes;
	return 0;
}

int vu_twin_fd_check(const struct vu_log *l, int fd)
{
	int type = 0;
	socklen_t tl = sizeof(type);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_STREAM) {
		log_err(l->ctx, "%s: the twin socket the server passed is not a stream socket", l->name);
		return -EPROTO;
	}
	return 0;
}

int vu_device_info_parse(const struct vu_log *l, const void *data, size_t len, uint32_t *flags,
			 uint32_t *num_regions, uint32_t *num_irqs)
{
	struct vfu_device_info di;

	if (len != sizeof(di)) {
		log_err(l->ctx, "%s: DEVICE_GET_INFO reply is %zu bytes, expected %zu", l->name, len,
			sizeof(di));
		return -EPROTO;
	}
	memcpy(&di, data, sizeof(di));
	if (di.num_regions > VU_SANE_REGIONS || di.num_irqs > VU_SANE_IRQS) {
		log_err(l->ctx, "%s: device claims %u regions and %u irq types", l->name,
			di.num_regions, di.num_irqs);
		return -EPROTO;
	}
	*flags = di.flags;
	*num_regions = di.num_regions < VU_MAX_REGIONS ? di.num_regions : VU_MAX_REGIONS;
	*num_irqs = di.num_irqs < VU_MAX_IRQS ? di.num_irqs : VU_MAX_IRQS;
	return 0;
}

/* Walk the capability chain of a region info reply. */
static int region_caps_parse(const struct vu_log *l, const uint8_t *data, size_t len,
			     uint32_t cap_offset, struct vfio_dev_region_info *info)
{
	uint32_t off = cap_offset;
	int hops = 0;

	while (off) {
		struct vfu_cap_hdr ch;

		if (++hops > 16 || off < sizeof(struct vfu_region_info) || off > len ||
		    len - off < sizeof(ch)) {
			log_err(l->ctx, "%s: region %u capability at offset %u is outside the reply (%zu bytes) or loops",
				l->name, info->index, off, len);
			return -EPROTO;
		}
		memcpy(&ch, data + off, sizeof(ch));
		if (ch.id == VFU_REGION_CAP_SPARSE_MMAP) {
			struct vfu_sparse_mmap sm;
			uint32_t i;

			if (len - off < sizeof(sm)) {
				log_err(l->ctx, "%s: region %u sparse-mmap capability is truncated",
					l->name, info->index);
				return -EPROTO;
			}
			memcpy(&sm, data + off, sizeof(sm));
			if (sm.nr_areas > (len - off - sizeof(sm)) / 16) {
				log_err(l->ctx, "%s: region %u sparse-mmap claims %u areas beyond the reply",
					l->name, info->index, sm.nr_areas);
				return -EPROTO;
			}
			if (sm.nr_areas > VFIO_SPARSE_MAX) {
				log_err(l->ctx, "%s: region %u has %u sparse-mmap areas, we keep %d",
					l->name, info->index, sm.nr_areas, VFIO_SPARSE_MAX);
				return -E2BIG;
			}
			for (i = 0; i < sm.nr_areas; i++) {
				struct vfio_sparse_area *a = &info->sparse[i];

				memcpy(a, data + off + sizeof(sm) + i * 16, 16);
				if (a->size == 0 || a->offset > info->size ||
				    a->size > info->size - a->offset) {
					log_err(l->ctx, "%s: region %u sparse area %u [0x%" PRIx64 "+0x%" PRIx64 "] is outside the region",
						l->name, info->index, i, a->offset, a->size);
					return -EPROTO;
				}
			}
			info->nr_sparse = sm.nr_areas;
		}
		off = ch.next;
	}
	return 0;
}

int vu_region_info_parse(const struct vu_log *l, uint32_t index, uint32_t argsz, bool retry_ok,
			 const void *data, size_t len, int nfds, struct vfio_dev_region_info *info,
			 uint64_t *mmap_off)
{
	struct vfu_region_info ri;
	int ret;

	if (len < sizeof(ri)) {
		log_err(l->ctx, "%s: GET_REGION_INFO(%u) reply is %zu bytes, expected at least %zu",
			l->name, index, len, sizeof(ri));
		return -EPROTO;
	}
	memcpy(&ri, data, sizeof(ri));
	if (retry_ok && ri.argsz > argsz && ri.argsz <= VU_REGION_INFO_MAX)
		return (int)ri.argsz; /* the capabilities did not fit: ask again */
	if (ri.index != index || len > argsz) {
		log_err(l->ctx, "%s: GET_REGION_INFO(%u) reply names region %u in %zu bytes (asked for at most %u)",
			l->name, index, ri.index, len, argsz);
		return -EPROTO;
	}
	memset(info, 0, sizeof(*info));
	info->index = index;
	info->size = ri.size;
	info->flags = ri.flags & (VFIO_REGION_F_READ | VFIO_REGION_F_WRITE | VFIO_REGION_F_MMAP);
	*mmap_off = 0;
	if ((ri.flags & VFU_REGION_F_CAPS) && ri.cap_offset) {
		ret = region_caps_parse(l, data, len, ri.cap_offset, info);
		if (ret)
			return ret;
	}
	if ((ri.flags & VFU_REGION_F_MMAP) && ri.size) {
		if (nfds != 1) {
			log_err(l->ctx, "%s: region %u is mappable but the reply carries %d fds",
				l->name, index, nfds);
			return -EPROTO;
		}
		*mmap_off = ri.offset;
	} else if (nfds) {
		log_err(l->ctx, "%s: region %u is not mappable but the reply carries %d fds", l->name,
			index, nfds);
		return -EPROTO;
	}
	return 0;
}

int vu_region_fd_check(const struct vu_log *l, int fd, const struct vfio_dev_region_info *info,
		       uint64_t mmap_off)
{
	uint64_t end = info->size;
	struct stat st;
	bool sealed;
	int seals;

	if (fstat(fd, &st) < 0) {
		int err = -errno;

		log_err(l->ctx, "%s: region %u: cannot fstat the fd the server passed: %s", l->name,
			info->index, strerror(-err));
		return err;
	}
	if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
		return 0; /* a device's mmap refuses what it cannot back */
	if (!S_ISREG(st.st_mode)) {
		log_err(l->ctx, "%s: region %u: the server passed an fd that cannot be mapped (mode 0%o)",
			l->name, info->index, (unsigned)st.st_mode);
		return -EPROTO;
	}
	/* Freeze the size first, then check it: checked first, the server
	 * could truncate the file between the check and the seal. A memfd
	 * created with sealing allowed takes F_SEAL_SHRINK from any writer. */
	seals = fcntl(fd, F_GET_SEALS);
	sealed = seals >= 0 && (seals & F_SEAL_SHRINK);
	if (!sealed && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) == 0) {
		sealed = true;
		if (fstat(fd, &st) < 0) {
			int err = -errno;

			log_err(l->ctx, "%s: region %u: cannot fstat the fd the server passed: %s",
				l->name, info->index, strerror(-err));
			return err;
		}
	}
	if (info->nr_sparse) {
		end = 0;
		for (uint32_t i = 0; i < info->nr_sparse; i++)
			if (info->sparse[i].offset + info->sparse[i].size > end)
				end = info->sparse[i].offset + info->sparse[i].size;
	}
	if (mmap_off > UINT64_MAX - end || st.st_size < 0 || (uint64_t)st.st_size < mmap_off + end) {
		log_err(l->ctx,
			"%s: region %u: the server's fd holds %lld bytes but the region maps [0x%" PRIx64
			", 0x%" PRIx64 ") of it; refusing the device (a touch past the end would be SIGBUS)",
			l->name, info->index, (long long)st.st_size, mmap_off,
			mmap_off > UINT64_MAX - end ? UINT64_MAX : mmap_off + end);
		return -EPROTO;
	}
	if (!sealed)
		log_dbg(l->ctx,
			"%s: region %u: the server's fd cannot be sealed against shrinking: a server that truncates it later would crash this process",
			l->name, info->index);
	return 0;
}

int vu_irq_info_parse(const struct vu_log *l, uint32_t index, const void *data, size_t len,
		      struct vfio_dev_irq_info *out)
{
	struct vfu_irq_info ii;

	if (len != sizeof(ii)) {
		log_err(l->ctx, "%s: GET_IRQ_INFO(%u) reply is %zu bytes, expected %zu", l->name,
			index, len, sizeof(ii));
		return -EPROTO;
	}
	memcpy(&ii, data, sizeof(ii));
	if (ii.index != index) {
		log_err(l->ctx, "%s: GET_IRQ_INFO(%u) reply names index %u", l->name, index, ii.index);
		return -EPROTO;
	}
	*out = (struct vfio_dev_irq_info){ .index = index, .count = ii.count, .flags = ii.flags };
	return 0;
}

int vu_region_read_check(const struct vu_log *l, uint32_t index, uint64_t off, uint32_t count,
			 const void *data, size_t len)
{
	struct vfu_region_access got;

	if (len != sizeof(got) + count) {
		log_err(l->ctx, "%s: REGION_READ(%u, 0x%" PRIx64 ", %u) reply is %zu bytes, expected %zu",
			l->name, index, off, count, len, sizeof(got) + count);
		return -EPROTO;
	}
	memcpy(&got, data, sizeof(got));
	if (got.offset != off || got.region != index || got.count != count) {
		log_err(l->ctx, "%s: REGION_READ reply is for region %u offset 0x%" PRIx64 " count %u, asked %u 0x%" PRIx64 " %u",
			l->name, got.region, got.offset, got.count, index, off, count);
		return -EPROTO;
	}
	return 0;
}

int vu_region_write_check(const struct vu_log *l, const struct vfu_region_access *req,
			  const void *data, size_t len)
{
	if (len != sizeof(*req) || memcmp(data, req, sizeof(*req))) {
		log_err(l->ctx, "%s: REGION_WRITE(%u, 0x%" PRIx64 ", %u) reply (%zu bytes) does not echo the request",
			l->name, req->region, req->offset, req->count, len);
		return -EPROTO;
	}
	return 0;
}

int vu_dma_unmap_check(const struct vu_log *l, uint64_t iova, uint64_t size, const void *data,
		       size_t len, uint64_t *unmapped)
{
	struct vfu_dma_unmap got;

	if (len != sizeof(got)) {
		log_err(l->ctx, "%s: DMA_UNMAP reply is %zu bytes, expected the %zu-byte echo", l->name,
			len, sizeof(got));
		return -EPROTO;
	}
	memcpy(&got, data, sizeof(got));
	if (got.addr != iova || got.size > size) {
		log_err(l->ctx, "%s: DMA_UNMAP reply names 0x%" PRIx64 "+0x%" PRIx64 ", asked 0x%" PRIx64 "+0x%" PRIx64,
			l->name, got.addr, got.size, iova, size);
		return -EPROTO;
	}
	*unmapped = got.size;
	return 0;
}

int vu_dma_request_parse(const struct vu_log *l, const struct vfu_hdr *h, const void *body,
			 size_t len, struct vfu_dma_access *acc)
{
	if (len < sizeof(*acc)) {
		log_err(l->ctx, "%s: server %s of %zu bytes is shorter than its header", l->name,
			vu_cmd_name(h->cmd), len);
		return EINVAL;
	}
	memcpy(acc, body, sizeof(*acc));
	if (acc->count == 0 || acc->count > VFU_MAX_DATA_XFER ||
	    (h->cmd == VFU_CMD_DMA_WRITE && len - sizeof(*acc) != acc->count) ||
	    (h->cmd == VFU_CMD_DMA_READ && len != sizeof(*acc))) {
		log_err(l->ctx,
			"%s: server %s at iova 0x%" PRIx64 " count %" PRIu64
			" has a bad size (message payload %zu)",
			l->name, vu_cmd_name(h->cmd), acc->addr, acc->count, len);
		return EINVAL;
	}
	return 0;
}
