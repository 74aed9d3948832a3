/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim: the client's commands (qemu docs/interop/vfio-user.rst 0.1):
 * VERSION, device/region/irq info, SET_IRQS, region read/write, reset, and
 * the dispatch of every received message (srv_handle_msg). Every request is
 * validated (sizes, argsz, indexes, fd counts); a bad one gets an error reply
 * with an errno and a line on stderr. Server thread.
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
#include "vfio/vfio_user_caps.h"

/* ---- commands ----------------------------------------------------------------- */

/*
 * Twin-socket mode: a fresh socket pair; our end becomes dev->twin_fd (in-band
 * DMA requests go there from now on), the other goes to the client with the
 * VERSION reply. Once per session: a second VERSION that asks again is
 * refused (the client's twin socket would no longer be ours).
 */
static int twin_start(struct sim_dev *dev, int *peer_end)
{
	int sv[2];

	pthread_mutex_lock(&dev->twin_lock);
	if (dev->twin_fd >= 0) {
		pthread_mutex_unlock(&dev->twin_lock);
		srv_log(dev, "VERSION: twin-socket mode is already set up in this session");
		return -EINVAL;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		int err = -errno;

		pthread_mutex_unlock(&dev->twin_lock);
		srv_log(dev, "VERSION: cannot create the twin socket pair: %s", strerror(-err));
		return err;
	}
	dev->twin_fd = sv[0];
	pthread_mutex_unlock(&dev->twin_lock);
	*peer_end = sv[1];
	return 0;
}

static void cmd_version(struct sim_dev *dev, struct sim_msg *m)
{
	struct vfu_caps caps, ours;
	struct vfu_version v;
	const char *why;
	char mine[256];
	int n, peer_end = -1;

	if (m->len < sizeof(v)) {
		srv_log(dev, "VERSION: %zu-byte payload, need %zu", m->len, sizeof(v));
		srv_reply_err(dev, m, EINVAL);
		return;
	}
	memcpy(&v, m->body, sizeof(v));
	if (v.major != VFU_VERSION_MAJOR) {
		/* The specification: a server that cannot support the proposed
		 * version closes the connection. */
		srv_log(dev, "VERSION: major %u not supported (we speak %u): closing the connection",
			v.major, VFU_VERSION_MAJOR);
		srv_shutdown_client(dev);
		return;
	}
	vfu_caps_init(&caps);
	if (m->len > sizeof(v)) {
		uint64_t xfer;

		if (m->body[m->len - 1] != '\0') {
			srv_log(dev, "VERSION: capabilities string not NUL-terminated");
			srv_reply_err(dev, m, EINVAL);
			return;
		}
		n = vfu_caps_parse((const char *)m->body + sizeof(v), m->len - sizeof(v), &caps, &why);
		if (n) {
			srv_log(dev, "VERSION: capabilities are not JSON of the expected shape: %s",
				n == -ENOMEM ? "out of memory" : why);
			srv_reply_err(dev, m, n == -ENOMEM ? ENOMEM : EINVAL);
			return;
		}
		xfer = caps.max_data_xfer_size;
		if (xfer < 8) {
			srv_log(dev, "VERSION: max_data_xfer_size %" PRIu64 " too small", xfer);
			srv_reply_err(dev, m, EINVAL);
			return;
		}
		pthread_mutex_lock(&dev->lock);
		dev->peer_max_xfer = xfer > VFU_MAX_DATA_XFER ? VFU_MAX_DATA_XFER : (uint32_t)xfer;
		pthread_mutex_unlock(&dev->lock);
	}
	if (v.minor > VFU_VERSION_MINOR)
		v.minor = VFU_VERSION_MINOR;
	/* Our capabilities; twin_socket only when the client offered it (the
	 * reply's list must be a subset of the proposal), and then we take it. */
	ours = (struct vfu_caps){ .max_msg_fds = VFU_MAX_FDS,
				  .max_data_xfer_size = VFU_MAX_DATA_XFER,
				  .max_dma_maps = dev->max_dma_maps,
				  .pgsizes = SIM_PAGE,
				  .twin_supported = caps.twin_supported,
				  .twin_fd_index = caps.twin_supported ? 0 : -1 };
	n = vfu_caps_format(&ours, mine, sizeof(mine));
	if (n < 0) {
		srv_log(dev, "VERSION: cannot write our capabilities: %s", strerror(-n));
		srv_reply_err(dev, m, -n);
		return;
	}
	if (caps.twin_supported && twin_start(dev, &peer_end)) {
		srv_reply_err(dev, m, EINVAL);
		return;
	}
	dev->versioned = true;
	srv_reply(dev, m, &v, sizeof(v), mine, (size_t)n + 1, peer_end >= 0 ? &peer_end : NULL,
	      peer_end >= 0 ? 1 : 0);
	if (peer_end >= 0)
		close(peer_end); /* the client has its copy (or the send failed and it is dropped) */
}

static void cmd_device_info(struct sim_dev *dev, struct sim_msg *m)
{
	struct vfu_device_info in, out = { .argsz = sizeof(out),
					   .flags = VFU_DEV_F_RESET | VFU_DEV_F_PCI,
					   .num_regions = SIM_NUM_REGIONS,
					   .num_irqs = SIM_NUM_IRQS };

	if (m->len < sizeof(in)) {
		srv_log(dev, "DEVICE_GET_INFO: %zu-byte payload, need %zu", m->len, sizeof(in));
		srv_reply_err(dev, m, EINVAL);
		return;
	}
	memcpy(&in, m->body, sizeof(in));
	if (in.argsz < sizeof(out)) {
		srv_log(dev, "DEVICE_GET_INFO: argsz %u < %zu", in.argsz, sizeof(out));
		srv_reply_err(dev, m, EINVAL);
		return;
	}
	srv_reply(dev, m, &out, sizeof(out), NULL, 0, NULL, 0);
}

static uint64_t region_size(struct sim_dev *dev, uint32_t index)
{
	switch (index) {
	case 0:
		return SIM_BAR0_SIZE;
	case 2:
		return dev->vram_size;
	case 7:
		return SIM_CFG_SIZE;
	}
	return 0;
}

static void cmd_region_info(struct sim_dev *dev, struct sim_msg *m)
{
	struct vfu_region_info in, out;

	if (m->len < sizeof(in)) {
		srv_log(dev, "GET_REGION_INFO: %zu-byte payload, need %zu", m->len, sizeof(in));
		srv_reply_err(dev, m, EINVAL);
		return;
	}
	memcpy(&in, m->body, sizeof(in));
	if (in.argsz < sizeof(out) || in.index >= SIM_NUM_REGIONS) {
		srv_log(dev, "GET_REGION_INFO: bad argsz %u or index %u", in.argsz, in.index);
		srv_reply_err(dev, m, EINVAL);
		return;
	}
	memset(&out, 0, sizeof(out));
	out.argsz = sizeof(out);
	out.index = in.index;
	out.size = region_size(dev, in.index);
	if (out.size)
		out.flags = VFU_REGION_F_READ | VFU_REGION_F_WRITE;
	if (in.index == 2) {
		out.flags |= VFU_REGION_F_MMAP;
		srv_reply(dev, m, &out, sizeof(out), NULL, 0, &dev->vram_fd, 1);
		return;
	}
	srv_reply(dev, m, &out, sizeof(out), NULL, 0, NULL, 0);
}

static const uint32_t irq_counts[SIM_NUM_IRQS] = { 1, 0, SIM_MSIX_VECTORS, 1, 1 };

static void cmd_irq_info(struct sim_dev *dev, struct sim_msg *m)
{
	struct vfu_irq_info in, out;

	if (m->len < sizeof(in)) {
		srv_log(dev, "GET_IRQ_INFO: %zu-byte payload, need %zu", m->len, sizeof(in));
		srv_reply_err(dev, m, EINVAL);
		return;
	}
	memcpy(&in, m->body, sizeof(in));
	if (in.argsz < sizeof(out) || in.index >= SIM_NUM_IRQS) {
		srv_log(dev, "GET_IRQ_INFO: bad argsz %u or index %u", in.argsz, in.index);
		srv_reply_err(dev, m, EINVAL);
		return;
	}
	out.argsz = sizeof(out);
	out.index = in.index;
	out.count = irq_counts[in.index];
	out.flags = out.count ? (1u << 0) | (1u << 1) : 0; /* EVENTFD | MASKABLE */
	srv_reply(dev, m, &out, sizeof(out), NULL, 0, NULL, 0);
}

void srv_irq_set_fd(struct sim_dev *dev, uint32_t index, uint32_t vec, int fd)
{
	/* Lock held: engines signal under the lock, so the old fd is not in
	 * use while it is closed. */
	if (dev->irq_fd[index][vec] >= 0)
		close(dev->irq_fd[index][vec]);
	dev->irq_fd[index][vec] = fd;
	if (fd < 0) {
		dev->irq_masked[index][vec] = false;
		dev->irq_pending[index][vec] = false;
	}
}

static void cmd_set_irqs(struct sim_dev *dev, struct sim_msg *m)
{
	struct vfu_irq_set s;
	uint32_t dtype, atype, max;
	const uint8_t *data;
	size_t dlen;

	if (m->len < sizeof(s)) {
		srv_log(dev, "SET_IRQS: %zu-byte payload, need %zu", m->len, sizeof(s));
		goto out_inval;
	}
	memcpy(&s, m->body, sizeof(s));
	dtype = s.flags & (VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_DATA_BOOL | VFU_IRQ_SET_DATA_EVENTFD);
	atype = s.flags & (VFU_IRQ_SET_ACTION_MASK | VFU_IRQ_SET_ACTION_UNMASK |
			   VFU_IRQ_SET_ACTION_TRIGGER);
	if (s.argsz < sizeof(s) || s.argsz > m->len || s.index >= SIM_NUM_IRQS ||
	    __builtin_popcount(dtype) != 1 || __builtin_popcount(atype) != 1 ||
	    (s.flags & ~(dtype | atype))) {
		srv_log(dev, "SET_IRQS: bad argsz %u, index %u or flags 0x%x", s.argsz, s.index,
			s.flags);
		goto out_inval;
	}
	max = irq_counts[s.index];
	data = m->body + sizeof(s);
	dlen = s.argsz - sizeof(s);
	if (dtype == VFU_IRQ_SET_DATA_NONE && atype == VFU_IRQ_SET_ACTION_TRIGGER && s.count == 0) {
		if (s.start || m->nfds || dlen) {
			srv_log(dev, "SET_IRQS: disable with start %u, %d fds, %zu data bytes", s.start,
				m->nfds, dlen);
			goto out_inval;
		}
		pthread_mutex_lock(&dev->lock);
		for (uint32_t v = 0; v < SIM_MSIX_VECTORS; v++)
			srv_irq_set_fd(dev, s.index, v, -1);
		pthread_mutex_unlock(&dev->lock);
		srv_reply(dev, m, NULL, 0, NULL, 0, NULL, 0);
		return;
	}
	if (!s.count || s.start >= max || s.count > max - s.start) {
		srv_log(dev, "SET_IRQS: vectors [%u, +%u) outside index %u's %u", s.start, s.count,
			s.index, max);
		goto out_inval;
	}
	if (dtype == VFU_IRQ_SET_DATA_EVENTFD) {
		int32_t want[SIM_MSIX_VECTORS];
		int used = 0;

		if (atype != VFU_IRQ_SET_ACTION_TRIGGER) {
			srv_log(dev, "SET_IRQS: mask/unmask eventfds are not supported");
			srv_reply_err(dev, m, ENOTSUP);
			return;
		}
		if (dlen == 4ull * s.count) {
			/* Optional int32 per vector (as the kernel ioctl): >= 0
			 * takes the next passed fd in order, -1 de-assigns. */
			memcpy(want, data, dlen);
			for (uint32_t i = 0; i < s.count; i++)
				if (want[i] >= 0)
					used++;
			if (used != m->nfds) {
				srv_log(dev, "SET_IRQS: %d fds for %d non-negative entries", m->nfds, used);
				goto out_inval;
			}
		} else if (dlen == 0 && (m->nfds == (int)s.count || m->nfds == 0)) {
			for (uint32_t i = 0; i < s.count; i++)
				want[i] = m->nfds ? 0 : -1;
		} else {
			srv_log(dev, "SET_IRQS: %d fds and %zu data bytes for %u vectors", m->nfds, dlen,
				s.count);
			goto out_inval;
		}
		for (int i = 0; i < m->nfds; i++)
			if (irq_fd_adopt(dev, m->fds[i]))
				goto out_inval;
		pthread_mutex_lock(&dev->lock);
		used = 0;
		for (uint32_t i = 0; i < s.count; i++) {
			int fd = -1;

			if (want[i] >= 0) {
				fd = m->fds[used];
				m->fds[used++] = -1; /* ours now */
			}
			srv_irq_set_fd(dev, s.index, s.start + i, fd);
		}
		pthread_mutex_unlock(&dev->lock);
		srv_reply(dev, m, NULL, 0, NULL, 0, NULL, 0);
		return;
	}
	if (m->nfds || (dtype == VFU_IRQ_SET_DATA_BOOL ? dlen != s.count : dlen != 0)) {
		srv_log(dev, "SET_IRQS: %d fds / %zu data bytes do not match the data type", m->nfds,
			dlen);
		goto out_inval;
	}
	pthread_mutex_lock(&dev->lock);
	for (uint32_t i = 0; i < s.count; i++) {
		uint32_t v = s.start + i;

		if (dtype == VFU_IRQ_SET_DATA_BOOL && !data[i])
			continue;
		if (atype == VFU_IRQ_SET_ACTION_TRIGGER) {
			sim_irq_raise(dev, s.index, v);
		} else if (atype == VFU_IRQ_SET_ACTION_MASK) {
			dev->irq_masked[s.index][v] = true;
		} else {
			dev->irq_masked[s.index][v] = false;
			if (dev->irq_pending[s.index][v]) {
				dev->irq_pending[s.index][v] = false;
				dev->cnt_irqs--; /* counted when first raised */
				sim_irq_raise(dev, s.index, v);
			}
		}
	}
	pthread_mutex_unlock(&dev->lock);
	srv_reply(dev, m, NULL, 0, NULL, 0, NULL, 0);
	return;

out_inval:
	srv_reply_err(dev, m, EINVAL);
}

static int vram_access(struct sim_dev *dev, uint64_t off, void *buf, size_t len, bool write)
{
	bool ok;

	if (off > dev->vram_size || len > dev->vram_size - off)
		return -EINVAL;
	pthread_mutex_lock(&dev->lock);
	ok = dev->power == SIM_POWER_D0 && pci_mem_enabled(dev);
	pthread_mutex_unlock(&dev->lock);
	if (!ok)
		return -EIO;
	if (!len)
		return 0; /* a zero-byte access is a no-op (and buf may be NULL) */
	if (write)
		memcpy(dev->vram + off, buf, len);
	else
		memcpy(buf, dev->vram + off, len);
	return 0;
}

static void cmd_region_rw(struct sim_dev *dev, struct sim_msg *m, bool write)
{
	struct vfu_region_access a;
	uint8_t *data = NULL;
	int ret;

	if (m->len < sizeof(a)) {
		srv_log(dev, "REGION_%s: %zu-byte payload, need %zu", write ? "WRITE" : "READ",
			m->len, sizeof(a));
		srv_reply_err(dev, m, EINVAL);
		return;
	}
	memcpy(&a, m->body, sizeof(a));
	if (a.count > VFU_MAX_DATA_XFER || m->len != sizeof(a) + (write ? a.count : 0)) {
		srv_log(dev, "REGION_%s: count %u does not fit the %zu-byte payload (max %u)",
			write ? "WRITE" : "READ", a.count, m->len, VFU_MAX_DATA_XFER);
		srv_reply_err(dev, m, EINVAL);
		return;
	}
	if (write) {
		data = m->body + sizeof(a);
	} else if (a.count) {
		data = malloc(a.count);
		if (!data) {
			srv_reply_err(dev, m, ENOMEM);
			return;
		}
	}
	switch (a.region) {
	case 0:
		ret = write ? regs_write(dev, a.offset, data, a.count) :
			      regs_read(dev, a.offset, data, a.count);
		break;
	case 2:
		ret = vram_access(dev, a.offset, data, a.count, write);
		break;
	case 7:
		ret = write ? pci_cfg_write(dev, a.offset, data, a.count) :
			      pci_cfg_read(dev, a.offset, data, a.count);
		break;
	default:
		ret = -EINVAL;
	}
	if (ret) {
		if (ret == -EINVAL)
			srv_log(dev, "REGION_%s: bad access region %u offset 0x%" PRIx64 " count %u",
				write ? "WRITE" : "READ", a.region, a.offset, a.count);
		srv_reply_err(dev, m, -ret);
	} else {
		srv_reply(dev, m, &a, sizeof(a), write ? NULL : data, write ? 0 : a.count, NULL, 0);
	}
	if (!write)
		free(data);
}

static bool all_quiet(struct sim_dev *dev)
{
	return !ce_any_busy(dev) && !exec_any_busy(dev);
}

int sim_device_reset(struct sim_dev *dev)
{
	pthread_mutex_lock(&dev->lock);
	if (dev->power == SIM_POWER_D3COLD) {
		pthread_mutex_unlock(&dev->lock);
		return -EIO; /* no main power: nothing to reset */
	}
	for (unsigned i = 0; i < SIM_NUM_CE; i++)
		dev->ce[i].enabled = false;
	exec_hold(dev);
	pthread_mutex_unlock(&dev->lock);
	srv_wait(dev, all_quiet, 10000);
	pthread_mutex_lock(&dev->lock);
	for (unsigned i = 0; i < SIM_NUM_CE; i++)
		ce_reset_locked(&dev->ce[i], true);
	exec_reset_locked(dev);
	pci_reset(dev);
	dev->scratch = 0;
	memset(dev->msix_table, 0, sizeof(dev->msix_table));
	pthread_mutex_unlock(&dev->lock);
	return 0;
}

void srv_handle_msg(struct sim_dev *dev, struct sim_msg *m)
{
	if ((m->hdr.flags & VFU_F_TYPE_MASK) == VFU_F_TYPE_REPLY) {
		srv_route_reply(dev, m);
		return;
	}
	if ((m->hdr.flags & VFU_F_TYPE_MASK) != VFU_F_TYPE_COMMAND) {
		srv_log(dev, "message type %u unknown", m->hdr.flags & VFU_F_TYPE_MASK);
		srv_reply_err(dev, m, EINVAL);
		return;
	}
	if (m->bad) {
		srv_log(dev, "malformed message (cmd %u, size %u, %d fds)", m->hdr.cmd, m->hdr.size,
			m->nfds);
		srv_reply_err(dev, m, m->bad);
		return;
	}
	if (!dev->versioned && m->hdr.cmd != VFU_CMD_VERSION) {
		srv_log(dev, "command %u before VERSION", m->hdr.cmd);
		srv_reply_err(dev, m, EINVAL);
		return;
	}
	/* Only these commands carry fds. */
	if (m->nfds && m->hdr.cmd != VFU_CMD_DMA_MAP && m->hdr.cmd != VFU_CMD_DEVICE_SET_IRQS) {
		srv_log(dev, "command %u with %d unexpected fds", m->hdr.cmd, m->nfds);
		srv_reply_err(dev, m, EINVAL);
		return;
	}
	switch (m->hdr.cmd) {
	case VFU_CMD_VERSION:
		cmd_version(dev, m);
		break;
	case VFU_CMD_DMA_MAP:
		srv_cmd_dma_map(dev, m);
		break;
	case VFU_CMD_DMA_UNMAP:
		srv_cmd_dma_unmap(dev, m);
		break;
	case VFU_CMD_DEVICE_GET_INFO:
		cmd_device_info(dev, m);
		break;
	case VFU_CMD_DEVICE_GET_REGION_INFO:
		cmd_region_info(dev, m);
		break;
	case VFU_CMD_DEVICE_GET_IRQ_INFO:
		cmd_irq_info(dev, m);
		break;
	case VFU_CMD_DEVICE_SET_IRQS:
		cmd_set_irqs(dev, m);
		break;
	case VFU_CMD_REGION_READ:
		cmd_region_rw(dev, m, false);
		break;
	case VFU_CMD_REGION_WRITE:
		cmd_region_rw(dev, m, true);
		break;
	case VFU_CMD_DEVICE_RESET: {
		int ret = sim_device_reset(dev);

		if (ret)
			srv_reply_err(dev, m, -ret);
		else
			srv_reply(dev, m, NULL, 0, NULL, 0, NULL, 0);
		break;
	}
	default:
		srv_log(dev, "command %u not supported", m->hdr.cmd);
		srv_reply_err(dev, m, ENOSYS);
	}
}
