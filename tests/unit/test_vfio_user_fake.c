/* SPDX-License-Identifier: MIT */
/*
 * The vfio-user client against small fake servers on a socketpair: the happy
 * paths byte-exact (region I/O split into chunks, sparse mmap, eventfds,
 * in-band DMA both ways, DMA window accounting) and every error path the
 * client promises: malformed replies (-EPROTO), a server that dies (-ENODEV,
 * fast), one that never answers (-ETIMEDOUT), an incompatible version, and
 * max_dma_maps (-ENOSPC). Nothing may hang or crash.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <ugpu/ugpu.h>

#include "vfio/transport.h"
#include "vfio/vfio_user.h"
#include "vfio/vfio_user_proto.h"
#include "test_log.h"

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the fake server ---------------------------------------------------- */

enum fake_mode {
	FAKE_GOOD,
	FAKE_BAD_SIZE, /* reply to the trigger read with a wrong payload size */
	FAKE_BAD_ID, /* ... with another msg_id */
	FAKE_BAD_CMD, /* ... naming another command */
	FAKE_BAD_FLAGS, /* ... with unknown flag bits */
	FAKE_TOO_MANY_FDS, /* ... carrying 3 fds */
	FAKE_ERR_PAYLOAD, /* ... an error reply (EACCES) with a payload */
	FAKE_ERR, /* ... an error reply (EACCES) */
	FAKE_ERR_ODD, /* ... an error reply with an errno Linux does not have */
	FAKE_TRUNCATED, /* ... a header promising more than is ever sent */
	FAKE_BAD_FRAME, /* ... a size field below the header size */
	FAKE_DIE, /* close the socket after reading the trigger read */
	FAKE_SILENT, /* never answer the trigger read (answer everything else) */
	FAKE_LATE, /* answer the trigger read after 3x the client timeout */
};

/* How the fake answers a VERSION that offers twin-socket mode. */
enum fake_twin {
	TWIN_OFF, /* ignores the offer */
	TWIN_ON, /* takes it: a socket pair, its end passed with fd_index 0 */
	TWIN_ON_UNASKED, /* as TWIN_ON even when the client did not offer */
	TWIN_NO_FD, /* says supported, passes no fd */
	TWIN_PIPE, /* says supported, passes a pipe */
	TWIN_FD_ONLY, /* passes an fd without saying twin_socket */
};

#define FAKE_SCRATCH 0x40 /* BAR0 offset whose read triggers the mode */
#define FAKE_DMA_DOORBELL 0x100 /* BAR0: 16-byte write {iova, len}: in-band DMA test */
#define FAKE_DMA_BAD 0x110 /* BAR0: 8-byte write iova: DMA_READ of it, status at 0x118 */
#define FAKE_VRAM_SIZE (4u << 20)
#define FAKE_TIMEOUT_MS 300

struct fake {
	int fd;
	pthread_t thr;
	enum fake_mode mode;
	enum fake_twin twin;
	int twin_fd; /* our end of the twin socket, or -1 */
	int twin_requests; /* in-band requests sent on it */
	uint16_t major;
	const char *json;
	uint32_t max_xfer; /* advertised max_data_xfer_size; requests above it fail */
	uint32_t max_dma_maps;
	int trigger_fds[3];
	uint8_t bar0[0x10000];
	uint8_t cfg[256];
	int vram_fd;
	uint8_t *vram;
	int region2_fd; /* the fd GET_REGION_INFO(2) passes: vram_fd unless a test swaps it */
	uint64_t region2_off; /* and its mmap offset */
	int irq_fds[5]; /* MSI-X vectors */
	uint16_t next_id;
	/* results, read by the test after fake_stop() (join) */
	int nr_maps;
	int max_seen_count;
	int over_xfer;
	int dma_bad_status;
	bool joined;
};

static int fake_recv(struct fake *f, struct vfu_hdr *h, uint8_t **body, int *fds, int *nfds)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * 8)];
		struct cmsghdr a;
	} cm;
	struct iovec iov = { .iov_base = h, .iov_len = sizeof(*h) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
			      .msg_controllen = sizeof(cm.b) };
	struct pollfd pfd = { .fd = f->fd, .events = POLLIN };
	struct cmsghdr *c;
	size_t got = 0, len;
	ssize_t n;

	*nfds = 0;
	*body = NULL;
	/* the client always sends a whole message quickly; 10 s bounds a bug */
	if (poll(&pfd, 1, 10000) <= 0)
		return -1;
	n = recvmsg(f->fd, &msg, MSG_WAITALL);
	if (n != (ssize_t)sizeof(*h))
		return -1;
	for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		int cnt = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));

		memcpy(fds + *nfds, CMSG_DATA(c), sizeof(int) * cnt);
		*nfds += cnt;
	}
	len = h->size - sizeof(*h);
	if (len) {
		*body = malloc(len);
		while (got < len) {
			n = recv(f->fd, *body + got, len - got, MSG_WAITALL);
			if (n <= 0) {
				free(*body);
				*body = NULL;
				return -1;
			}
			got += (size_t)n;
		}
	}
	return 0;
}

static void fake_send(struct fake *f, uint16_t id, uint16_t cmd, uint32_t flags, uint32_t err,
		      const void *p, size_t len, const int *fds, int nfds)
{
	struct vfu_hdr h = { .msg_id = id, .cmd = cmd, .size = (uint32_t)(sizeof(h) + len),
			     .flags = flags, .error = err };
	struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)p, len } };
	union {
		char b[CMSG_SPACE(sizeof(int) * 8)];
		struct cmsghdr a;
	} cm;
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };

	if (nfds) {
		struct cmsghdr *c;

		memset(&cm, 0, sizeof(cm));
		msg.msg_control = cm.b;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	/* blocking socket, the client reads concurrently: whole message */
	(void)sendmsg(f->fd, &msg, MSG_NOSIGNAL);
}

static void fake_reply(struct fake *f, const struct vfu_hdr *req, const void *p, size_t len)
{
	fake_send(f, req->msg_id, req->cmd, VFU_F_TYPE_REPLY, 0, p, len, NULL, 0);
}

static void fake_error(struct fake *f, const struct vfu_hdr *req, int err)
{
	fake_send(f, req->msg_id, req->cmd, VFU_F_TYPE_REPLY | VFU_F_ERROR, (uint32_t)err, NULL, 0,
		  NULL, 0);
}

static int fake_dma_on(struct fake *f, uint16_t cmd, uint64_t iova, void *data, uint64_t count);

/* The fake's own in-band DMA request; returns the client's reply. In
 * twin-socket mode it travels on the twin socket (fake_send/fake_recv work on
 * f->fd, so it is swapped in for the exchange; the fake is single-threaded). */
static int fake_dma(struct fake *f, uint16_t cmd, uint64_t iova, void *data, uint64_t count)
{
	int main_fd = f->fd, ret;

	if (f->twin_fd < 0)
		return fake_dma_on(f, cmd, iova, data, count);
	f->fd = f->twin_fd;
	f->twin_requests++;
	ret = fake_dma_on(f, cmd, iova, data, count);
	f->fd = main_fd;
	return ret;
}

static int fake_dma_on(struct fake *f, uint16_t cmd, uint64_t iova, void *data, uint64_t count)
{
	struct vfu_dma_access acc = { .addr = iova, .count = count };
	uint8_t *msg = malloc(sizeof(acc) + count);
	struct vfu_hdr h;
	uint8_t *body;
	int fds[8], nfds, ret = 0;
	uint16_t id = f->next_id++;

	memcpy(msg, &acc, sizeof(acc));
	if (cmd == VFU_CMD_DMA_WRITE)
		memcpy(msg + sizeof(acc), data, count);
	fake_send(f, id, cmd, VFU_F_TYPE_COMMAND, 0, msg,
		  sizeof(acc) + (cmd == VFU_CMD_DMA_WRITE ? count : 0), NULL, 0);
	free(msg);
	if (fake_recv(f, &h, &body, fds, &nfds))
		return -EPIPE;
	if (h.msg_id != id || h.cmd != cmd || (h.flags & VFU_F_TYPE_MASK) != VFU_F_TYPE_REPLY)
		ret = -EBADMSG;
	else if (h.flags & VFU_F_ERROR)
		ret = -(int)h.error;
	else if (cmd == VFU_CMD_DMA_READ) {
		if (h.size != sizeof(h) + sizeof(acc) + count)
			ret = -EBADMSG;
		else
			memcpy(data, body + sizeof(acc), count);
	} else if (h.size != sizeof(h) + sizeof(acc)) {
		ret = -EBADMSG;
	}
	free(body);
	return ret;
}

static void fake_region_info(struct fake *f, const struct vfu_hdr *h, const uint8_t *body)
{
	struct vfu_region_info req, ri = { 0 };
	uint8_t buf[sizeof(ri) + sizeof(struct vfu_sparse_mmap) + 2 * 16];
	size_t len = sizeof(ri);
	int fd = -1;

	memcpy(&req, body, sizeof(req));
	ri.index = req.index;
	ri.argsz = sizeof(ri);
	switch (req.index) {
	case 0:
		ri.size = sizeof(f->bar0);
		ri.flags = VFU_REGION_F_READ | VFU_REGION_F_WRITE;
		break;
	case 2: {
		struct vfu_sparse_mmap sm = {
			.hdr = { .id = VFU_REGION_CAP_SPARSE_MMAP, .version = 1, .next = 0 },
			.nr_areas = 2,
		};
		uint64_t areas[4] = { 0, 1u << 20, 2u << 20, 2u << 20 };

		ri.size = FAKE_VRAM_SIZE;
		ri.flags = VFU_REGION_F_READ | VFU_REGION_F_WRITE | VFU_REGION_F_MMAP |
			   VFU_REGION_F_CAPS;
		ri.cap_offset = sizeof(ri);
		ri.argsz = sizeof(buf);
		memcpy(buf + sizeof(ri), &sm, sizeof(sm));
		memcpy(buf + sizeof(ri) + sizeof(sm), areas, sizeof(areas));
		fd = f->region2_fd;
		ri.offset = f->region2_off;
		/* honour argsz: a short buffer gets the head and the needed size */
		len = req.argsz >= sizeof(buf) ? sizeof(buf) : sizeof(ri);
		if (len == sizeof(ri))
			ri.cap_offset = 0, ri.flags &= ~VFU_REGION_F_CAPS;
		break;
	}
	case 7:
		ri.size = sizeof(f->cfg);
		ri.flags = VFU_REGION_F_READ | VFU_REGION_F_WRITE;
		break;
	}
	memcpy(buf, &ri, sizeof(ri));
	fake_send(f, h->msg_id, h->cmd, VFU_F_TYPE_REPLY, 0, buf, len, fd >= 0 ? &fd : NULL,
		  fd >= 0 ? 1 : 0);
}

static uint8_t *fake_region_ptr(struct fake *f, uint32_t region, uint64_t off, uint32_t count)
{
	switch (region) {
	case 0:
		return off + count <= sizeof(f->bar0) ? f->bar0 + off : NULL;
	case 2:
		return off + count <= FAKE_VRAM_SIZE ? f->vram + off : NULL;
	case 7:
		return off + count <= sizeof(f->cfg) ? f->cfg + off : NULL;
	}
	return NULL;
}

/* Misbehave on the trigger read as the mode says. Returns false to stop. */
static bool fake_trigger(struct fake *f, const struct vfu_hdr *h, const struct vfu_region_access *ra)
{
	uint8_t buf[sizeof(*ra) + 8];
	struct vfu_hdr bad;

	memcpy(buf, ra, sizeof(*ra));
	memset(buf + sizeof(*ra), 0xab, 8);
	switch (f->mode) {
	case FAKE_BAD_SIZE:
		fake_reply(f, h, buf, sizeof(*ra) + 2);
		return true;
	case FAKE_BAD_ID:
		fake_send(f, (uint16_t)(h->msg_id + 77), h->cmd, VFU_F_TYPE_REPLY, 0, buf,
			  sizeof(*ra) + ra->count, NULL, 0);
		return true;
	case FAKE_BAD_CMD:
		fake_send(f, h->msg_id, VFU_CMD_REGION_WRITE, VFU_F_TYPE_REPLY, 0, buf,
			  sizeof(*ra) + ra->count, NULL, 0);
		return true;
	case FAKE_BAD_FLAGS:
		fake_send(f, h->msg_id, h->cmd, VFU_F_TYPE_REPLY | 0x100, 0, buf,
			  sizeof(*ra) + ra->count, NULL, 0);
		return true;
	case FAKE_TOO_MANY_FDS:
		fake_send(f, h->msg_id, h->cmd, VFU_F_TYPE_REPLY, 0, buf, sizeof(*ra) + ra->count,
			  f->trigger_fds, 3);
		return true;
	case FAKE_ERR_PAYLOAD:
		fake_send(f, h->msg_id, h->cmd, VFU_F_TYPE_REPLY | VFU_F_ERROR, EACCES, buf,
			  sizeof(*ra) + ra->count, NULL, 0);
		return true;
	case FAKE_ERR:
		fake_error(f, h, EACCES);
		return true;
	case FAKE_ERR_ODD:
		fake_error(f, h, 2929);
		return true;
	case FAKE_TRUNCATED:
		bad = (struct vfu_hdr){ .msg_id = h->msg_id, .cmd = h->cmd, .size = 200,
					.flags = VFU_F_TYPE_REPLY };
		(void)send(f->fd, &bad, sizeof(bad), MSG_NOSIGNAL);
		(void)send(f->fd, buf, 8, MSG_NOSIGNAL);
		return true; /* then keep serving: the client must give up on its own */
	case FAKE_BAD_FRAME:
		bad = (struct vfu_hdr){ .msg_id = h->msg_id, .cmd = h->cmd, .size = 8,
					.flags = VFU_F_TYPE_REPLY };
		(void)send(f->fd, &bad, sizeof(bad), MSG_NOSIGNAL);
		return true;
	case FAKE_DIE:
		return false;
	case FAKE_SILENT:
		return true;
	case FAKE_LATE:
		usleep(3 * FAKE_TIMEOUT_MS * 1000);
		fake_reply(f, h, buf, sizeof(*ra) + ra->count);
		return true;
	case FAKE_GOOD:
		break;
	}
	return true;
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	struct vfu_hdr h;
	uint8_t *body;
	int fds[8], nfds;

	while (fake_recv(f, &h, &body, fds, &nfds) == 0) {
		bool keep = true;

		switch (h.cmd) {
		case VFU_CMD_VERSION: {
			char json[320];
			uint8_t buf[4 + sizeof(json)];
			struct vfu_version v = { .major = f->major, .minor = 1 };
			bool offered = h.size > sizeof(h) + 4 &&
				       memmem(body + 4, h.size - sizeof(h) - 4, "twin_socket", 11);
			int n, pass = -1;
			const char *twin_json = "";

			if (f->json)
				n = snprintf(json, sizeof(json), "%s", f->json);
			else
				n = 0;
			if ((offered && f->twin != TWIN_OFF) || f->twin == TWIN_ON_UNASKED ||
			    f->twin == TWIN_FD_ONLY) {
				int sv[2];

				twin_json = ",\"twin_socket\":{\"supported\":true,\"fd_index\":0}";
				if (f->twin == TWIN_PIPE) {
					assert_int_equal(pipe2(sv, O_CLOEXEC), 0);
					close(sv[0]);
					pass = sv[1];
				} else if (f->twin != TWIN_NO_FD) {
					assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
					f->twin_fd = sv[0];
					pass = sv[1];
				}
				if (f->twin == TWIN_FD_ONLY)
					twin_json = "";
			}
			if (!f->json)
				n = snprintf(json, sizeof(json),
					     "{\"capabilities\":{\"max_msg_fds\":2,\"max_data_xfer_size\":%u,"
					     "\"max_dma_maps\":%u,\"pgsizes\":4096%s,"
					     "\"migration\":{\"pgsize\":4096,\"x\":[1,true,null,\"s\\\"\"]}}}",
					     f->max_xfer, f->max_dma_maps, twin_json);
			memcpy(buf, &v, sizeof(v));
			memcpy(buf + 4, json, (size_t)n + 1);
			fake_send(f, h.msg_id, h.cmd, VFU_F_TYPE_REPLY, 0, buf, 4 + (size_t)n + 1,
				  pass >= 0 ? &pass : NULL, pass >= 0 ? 1 : 0);
			if (pass >= 0)
				close(pass);
			break;
		}
		case VFU_CMD_DEVICE_GET_INFO: {
			struct vfu_device_info di = { .argsz = sizeof(di),
						      .flags = VFU_DEV_F_PCI | VFU_DEV_F_RESET,
						      .num_regions = 9, .num_irqs = 5 };

			fake_reply(f, &h, &di, sizeof(di));
			break;
		}
		case VFU_CMD_DEVICE_GET_REGION_INFO:
			fake_region_info(f, &h, body);
			break;
		case VFU_CMD_DEVICE_GET_IRQ_INFO: {
			struct vfu_irq_info ii;

			memcpy(&ii, body, sizeof(ii));
			ii.argsz = sizeof(ii);
			ii.flags = 1; /* EVENTFD */
			ii.count = ii.index == 2 ? 5 : (ii.index == 1 ? 0 : 1);
			fake_reply(f, &h, &ii, sizeof(ii));
			break;
		}
		case VFU_CMD_DEVICE_SET_IRQS: {
			struct vfu_irq_set is;

			memcpy(&is, body, sizeof(is));
			if (is.index == 2 && (is.flags & VFU_IRQ_SET_DATA_EVENTFD)) {
				for (uint32_t i = 0; i < is.count; i++) {
					int v = is.start + i;

					if (f->irq_fds[v] >= 0)
						close(f->irq_fds[v]);
					f->irq_fds[v] = i < (uint32_t)nfds ? fds[i] : -1;
				}
				nfds = 0;
				/* fire each vector this message connected, once */
				for (uint32_t v = is.start; v < is.start + is.count; v++) {
					uint64_t one = 1;

					if (f->irq_fds[v] >= 0 && write(f->irq_fds[v], &one, 8) != 8)
						abort();
				}
			}
			fake_reply(f, &h, NULL, 0);
			break;
		}
		case VFU_CMD_REGION_READ:
		case VFU_CMD_REGION_WRITE: {
			struct vfu_region_access ra;
			uint8_t *p;

			memcpy(&ra, body, sizeof(ra));
			if ((int)ra.count > f->max_seen_count)
				f->max_seen_count = (int)ra.count;
			if (ra.count > f->max_xfer) {
				f->over_xfer++;
				fake_error(f, &h, EINVAL);
				break;
			}
			if (h.cmd == VFU_CMD_REGION_READ && ra.region == 0 && ra.offset == FAKE_SCRATCH &&
			    f->mode != FAKE_GOOD) {
				keep = fake_trigger(f, &h, &ra);
				break;
			}
			p = fake_region_ptr(f, ra.region, ra.offset, ra.count);
			if (!p) {
				fake_error(f, &h, EINVAL);
				break;
			}
			if (h.cmd == VFU_CMD_REGION_WRITE) {
				memcpy(p, body + sizeof(ra), ra.count);
				if (ra.region == 0 && ra.offset == FAKE_DMA_DOORBELL && ra.count == 16) {
					uint64_t iova, len;
					uint8_t *tmp;
					int r1, r2;

					memcpy(&iova, p, 8);
					memcpy(&len, p + 8, 8);
					tmp = malloc(len);
					/* read the first half, write it back xor'd after it */
					r1 = fake_dma(f, VFU_CMD_DMA_READ, iova, tmp, len);
					for (uint64_t i = 0; i < len; i++)
						tmp[i] ^= 0x5a;
					r2 = r1 ? r1 : fake_dma(f, VFU_CMD_DMA_WRITE, iova + len, tmp, len);
					free(tmp);
					memcpy(f->bar0 + 0x120, &r2, 4);
				}
				if (ra.region == 0 && ra.offset == FAKE_DMA_BAD && ra.count == 8) {
					uint64_t iova;
					uint8_t tmp[64];

					memcpy(&iova, p, 8);
					f->dma_bad_status = fake_dma(f, VFU_CMD_DMA_READ, iova, tmp, sizeof(tmp));
				}
				fake_reply(f, &h, &ra, sizeof(ra));
			} else {
				uint8_t *out = malloc(sizeof(ra) + ra.count);

				memcpy(out, &ra, sizeof(ra));
				memcpy(out + sizeof(ra), p, ra.count);
				fake_reply(f, &h, out, sizeof(ra) + ra.count);
				free(out);
			}
			break;
		}
		case VFU_CMD_DMA_MAP: {
			struct vfu_dma_map dm;

			memcpy(&dm, body, sizeof(dm));
			if (f->nr_maps >= (int)f->max_dma_maps) {
				fake_error(f, &h, ENOSPC);
				break;
			}
			f->nr_maps++;
			fake_reply(f, &h, NULL, 0);
			break;
		}
		case VFU_CMD_DMA_UNMAP: {
			f->nr_maps--;
			fake_reply(f, &h, body, sizeof(struct vfu_dma_unmap));
			break;
		}
		case VFU_CMD_DEVICE_RESET:
			memset(f->bar0, 0, sizeof(f->bar0));
			fake_reply(f, &h, NULL, 0);
			break;
		default:
			fake_error(f, &h, ENOSYS);
			break;
		}
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		free(body);
		if (!keep)
			break;
	}
	close(f->fd);
	f->fd = -1;
	return NULL;
}

static struct fake *fake_start(enum fake_mode mode, int *client_fd)
{
	struct fake *f = calloc(1, sizeof(*f));
	int sv[2];

	assert_non_null(f);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	f->fd = sv[1];
	*client_fd = sv[0];
	f->mode = mode;
	f->twin_fd = -1;
	f->major = VFU_VERSION_MAJOR;
	f->max_xfer = 64 * 1024;
	f->max_dma_maps = 65535;
	for (int i = 0; i < 5; i++)
		f->irq_fds[i] = -1;
	for (int i = 0; i < 3; i++)
		f->trigger_fds[i] = eventfd(0, EFD_CLOEXEC);
	f->vram_fd = memfd_create("fake-vram", MFD_CLOEXEC);
	assert_true(f->vram_fd >= 0);
	assert_int_equal(ftruncate(f->vram_fd, FAKE_VRAM_SIZE), 0);
	f->region2_fd = f->vram_fd;
	f->vram = mmap(NULL, FAKE_VRAM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, f->vram_fd, 0);
	assert_true(f->vram != MAP_FAILED);
	for (uint32_t i = 0; i < FAKE_VRAM_SIZE; i++)
		f->vram[i] = (uint8_t)(i * 7 + (i >> 12));
	return f;
}

static void fake_run(struct fake *f)
{
	assert_int_equal(pthread_create(&f->thr, NULL, fake_main, f), 0);
}

/* Wait for the fake to finish (the client must have closed first). */
static void fake_join(struct fake *f)
{
	if (!f->joined)
		pthread_join(f->thr, NULL);
	f->joined = true;
}

static void fake_stop(struct fake *f)
{
	fake_join(f);
	for (int i = 0; i < 5; i++)
		if (f->irq_fds[i] >= 0)
			close(f->irq_fds[i]);
	for (int i = 0; i < 3; i++)
		close(f->trigger_fds[i]);
	if (f->fd >= 0)
		close(f->fd);
	if (f->twin_fd >= 0)
		close(f->twin_fd);
	munmap(f->vram, FAKE_VRAM_SIZE);
	if (f->region2_fd != f->vram_fd)
		close(f->region2_fd);
	close(f->vram_fd);
	free(f);
}

/* ---- fixtures ----------------------------------------------------------- */

struct t {
	struct ugpu_context *ctx;
	struct fake *f;
	struct vfio_dev *dev;
};

static struct ugpu_context *make_ctx(void)
{
	struct ugpu_context_opts o = { .size = sizeof(o), .log_fn = log_hook,
				       .log_level = UGPU_LOG_WARN };
	struct ugpu_context *ctx = NULL;

	assert_int_equal(ugpu_context_create(&o, &ctx), 0);
	log_clear();
	return ctx;
}

static int open_fake(struct t *t, enum fake_mode mode, void (*tweak)(struct fake *))
{
	struct vfio_user_opts o = { .size = sizeof(o), .timeout_ms = FAKE_TIMEOUT_MS };
	int cfd;

	t->ctx = make_ctx();
	t->f = fake_start(mode, &cfd);
	if (tweak)
		tweak(t->f);
	fake_run(t->f);
	return vfio_user_open_fd(t->ctx, cfd, "fake", &o, &t->dev);
}

static void close_all(struct t *t)
{
	if (t->dev)
		t->dev->ops->close(t->dev);
	fake_stop(t->f);
	ugpu_context_destroy(t->ctx);
}

/* ---- happy paths -------------------------------------------------------- */

static void test_open_and_info(void **state)
{
	struct t t = { 0 };
	struct vfio_dev_region_info ri;
	struct vfio_dev_irq_info ii;
	struct vfio_iommu_info io;

	(void)state;
	assert_int_equal(open_fake(&t, FAKE_GOOD, NULL), 0);
	assert_string_equal(t.dev->ops->name, "vfio-user");
	assert_int_equal(t.dev->num_regions, 9);
	assert_int_equal(t.dev->num_irqs, 5);
	assert_int_equal(t.dev->ops->region_info(t.dev, 0, &ri), 0);
	assert_int_equal(ri.size, 0x10000);
	assert_int_equal(ri.flags, VFIO_REGION_F_READ | VFIO_REGION_F_WRITE);
	/* the sparse capability did not fit the first argsz: the client asks again */
	assert_int_equal(t.dev->ops->region_info(t.dev, 2, &ri), 0);
	assert_int_equal(ri.size, FAKE_VRAM_SIZE);
	assert_true(ri.flags & VFIO_REGION_F_MMAP);
	assert_int_equal(ri.nr_sparse, 2);
	assert_int_equal(ri.sparse[0].offset, 0);
	assert_int_equal(ri.sparse[0].size, 1u << 20);
	assert_int_equal(ri.sparse[1].offset, 2u << 20);
	assert_int_equal(ri.sparse[1].size, 2u << 20);
	assert_int_equal(t.dev->ops->region_info(t.dev, 5, &ri), 0);
	assert_int_equal(ri.size, 0);
	assert_int_equal(t.dev->ops->irq_info(t.dev, VFIO_IRQ_MSIX, &ii), 0);
	assert_int_equal(ii.count, 5);
	assert_int_equal(t.dev->ops->iommu_info(t.dev, &io), 0);
	assert_int_equal(io.pgsize_mask, 4096);
	assert_int_equal(io.max_mappings, 65535);
	assert_int_equal(io.nr_ranges, 1);
	assert_int_equal(io.ranges[0].start, 0);
	assert_int_equal(io.ranges[0].end, (1ull << 48) - 1);
	assert_null(t.dev->ops->low_power_enter);
	assert_int_equal(t.dev->ops->reset(t.dev), 0);
	close_all(&t);
}

static void test_region_io_chunked(void **state)
{
	struct t t = { 0 };
	size_t len = 3u << 20;
	uint8_t *buf = malloc(len), *back = malloc(len);
	uint32_t v32;
	uint64_t v64;

	(void)state;
	assert_int_equal(open_fake(&t, FAKE_GOOD, NULL), 0);
	/* 3 MiB through a server that takes 64 KiB per message */
	assert_int_equal(t.dev->ops->region_read(t.dev, 2, 4096, buf, len), 0);
	for (size_t i = 0; i < len; i++)
		if (buf[i] != (uint8_t)((i + 4096) * 7 + ((i + 4096) >> 12)))
			fail_msg("VRAM byte %zu differs", i);
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(i ^ (i >> 8) ^ 0x33);
	assert_int_equal(t.dev->ops->region_write(t.dev, 2, 12345, buf, len), 0);
	assert_int_equal(t.dev->ops->region_read(t.dev, 2, 12345, back, len), 0);
	assert_memory_equal(buf, back, len);
	/* fixed-size helpers: one access each */
	assert_int_equal(vfio_write32(t.dev, 0, 0x40, 0xdeadbeef), 0);
	assert_int_equal(vfio_read32(t.dev, 0, 0x40, &v32), 0);
	assert_int_equal(v32, 0xdeadbeef);
	assert_int_equal(vfio_write64(t.dev, 0, 0x48, 0x0123456789abcdefull), 0);
	assert_int_equal(vfio_read64(t.dev, 0, 0x48, &v64), 0);
	assert_int_equal(v64, 0x0123456789abcdefull);
	/* out of bounds / absent region are refused without a message */
	assert_int_equal(t.dev->ops->region_read(t.dev, 0, 0x10000 - 2, &v32, 4), -EINVAL);
	assert_int_equal(t.dev->ops->region_read(t.dev, 5, 0, &v32, 4), -EINVAL);
	close_all(&t);
	/* after join: the server never saw a count above what it advertised */
	free(buf);
	free(back);
}

static void test_chunk_limit_respected(void **state)
{
	struct t t = { 0 };
	uint8_t *buf = malloc(1u << 20);
	int max_seen, over;

	(void)state;
	assert_int_equal(open_fake(&t, FAKE_GOOD, NULL), 0);
	assert_int_equal(t.dev->ops->region_read(t.dev, 2, 0, buf, 1u << 20), 0);
	t.dev->ops->close(t.dev);
	t.dev = NULL;
	fake_join(t.f);
	max_seen = t.f->max_seen_count;
	over = t.f->over_xfer;
	assert_int_equal(max_seen, 64 * 1024);
	assert_int_equal(over, 0);
	close_all(&t);
	free(buf);
}

static void test_mmap_sparse(void **state)
{
	struct t t = { 0 };
	void *p = NULL, *q = NULL;
	uint8_t back[64];

	(void)state;
	assert_int_equal(open_fake(&t, FAKE_GOOD, NULL), 0);
	assert_int_equal(t.dev->ops->region_mmap(t.dev, 2, 2u << 20, 1u << 20,
						 PROT_READ | PROT_WRITE, &p),
			 0);
	/* the mapping is the server's memfd at the region offset: byte-exact */
	assert_int_equal(((uint8_t *)p)[5], (uint8_t)(((2u << 20) + 5) * 7 + (((2u << 20) + 5) >> 12)));
	memset((uint8_t *)p + 4096, 0xc3, 64);
	assert_int_equal(t.dev->ops->region_read(t.dev, 2, (2u << 20) + 4096, back, 64), 0);
	for (int i = 0; i < 64; i++)
		assert_int_equal(back[i], 0xc3);
	/* not inside one sparse area: refused */
	assert_int_equal(t.dev->ops->region_mmap(t.dev, 2, 1u << 20, 4096, PROT_READ, &q), -EINVAL);
	assert_int_equal(t.dev->ops->region_mmap(t.dev, 2, (1u << 20) - 4096, 8192, PROT_READ, &q),
			 -EINVAL);
	/* BAR0 is not mappable */
	assert_int_equal(t.dev->ops->region_mmap(t.dev, 0, 0, 4096, PROT_READ, &q), -EINVAL);
	/* one mapping explicitly unmapped, one left for close() */
	assert_int_equal(t.dev->ops->region_mmap(t.dev, 2, 0, 8192, PROT_READ, &q), 0);
	assert_int_equal(t.dev->ops->region_munmap(t.dev, q, 8192), 0);
	assert_int_equal(t.dev->ops->region_munmap(t.dev, q, 8192), -EINVAL);
	close_all(&t);
}

static void test_irqs_eventfd(void **state)
{
	struct t t = { 0 };
	int efd[5];
	uint64_t v;

	(void)state;
	assert_int_equal(open_fake(&t, FAKE_GOOD, NULL), 0);
	for (int i = 0; i < 5; i++)
		efd[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	/* the server takes 2 fds per message: 5 vectors need 3 messages */
	assert_int_equal(t.dev->ops->set_irqs(t.dev, VFIO_IRQ_MSIX, 0, 5, efd), 0);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(read(efd[i], &v, 8), 8);
		assert_true(v >= 1);
	}
	/* -1 disconnects vector 3 only */
	int mix[5] = { efd[0], efd[1], efd[2], -1, efd[4] };
	assert_int_equal(t.dev->ops->set_irqs(t.dev, VFIO_IRQ_MSIX, 0, 5, mix), 0);
	assert_int_equal(read(efd[3], &v, 8), -1);
	assert_int_equal(read(efd[4], &v, 8), 8);
	/* more vectors than the index has */
	assert_int_equal(t.dev->ops->set_irqs(t.dev, VFIO_IRQ_MSIX, 3, 3, efd), -EINVAL);
	assert_int_equal(t.dev->ops->set_irqs(t.dev, VFIO_IRQ_MSIX, 0, 0, NULL), 0);
	close_all(&t);
	for (int i = 0; i < 5; i++)
		close(efd[i]);
}

/* In-band DMA both ways, with the fake's requests on the main socket or, in
 * twin-socket mode (@tweak), on the twin socket. */
static void run_inband_dma(void (*tweak)(struct fake *))
{
	struct t t = { 0 };
	size_t half = 200 * 1024;
	uint8_t *mem = aligned_alloc(4096, 2 * 256 * 1024);
	uint64_t db[2] = { 0x100000, half };
	uint64_t unmapped = 0, bad = 0x900000;
	uint32_t status;

	assert_int_equal(open_fake(&t, FAKE_GOOD, tweak), 0);
	for (size_t i = 0; i < half; i++)
		mem[i] = (uint8_t)(i * 13 + 1);
	memset(mem + half, 0, half);
	/* no fd: the server reaches this memory with DMA_READ/DMA_WRITE */
	assert_int_equal(t.dev->ops->dma_map(t.dev, 0x100000, 2 * 256 * 1024, mem, -1, 0,
					     VFIO_DMA_READ | VFIO_DMA_WRITE),
			 0);
	assert_int_equal(t.dev->ops->region_write(t.dev, 0, FAKE_DMA_DOORBELL, db, sizeof(db)), 0);
	assert_int_equal(vfio_read32(t.dev, 0, 0x120, &status), 0);
	assert_int_equal(status, 0);
	for (size_t i = 0; i < half; i++)
		if (mem[half + i] != (uint8_t)((i * 13 + 1) ^ 0x5a))
			fail_msg("in-band DMA byte %zu wrong", i);
	/* a DMA_READ outside every window is refused with EFAULT */
	assert_int_equal(t.dev->ops->region_write(t.dev, 0, FAKE_DMA_BAD, &bad, 8), 0);
	assert_int_equal(t.dev->ops->dma_unmap(t.dev, 0x100000, 2 * 256 * 1024, &unmapped), 0);
	assert_int_equal(unmapped, 2 * 256 * 1024);
	/* after the unmap the same range is refused too */
	bad = 0x100000;
	assert_int_equal(t.dev->ops->region_write(t.dev, 0, FAKE_DMA_BAD, &bad, 8), 0);
	t.dev->ops->close(t.dev);
	t.dev = NULL;
	fake_join(t.f);
	assert_int_equal(t.f->dma_bad_status, -EFAULT);
	assert_int_equal(t.f->twin_requests, tweak ? 4 : 0);
	close_all(&t);
	free(mem);
}

static void test_inband_dma(void **state)
{
	(void)state;
	run_inband_dma(NULL);
}

static void twin_on(struct fake *f)
{
	f->twin = TWIN_ON;
}

static void test_inband_dma_twin(void **state)
{
	(void)state;
	run_inband_dma(twin_on);
}

static void test_dma_windows(void **state)
{
	struct t t = { 0 };
	uint8_t *mem = aligned_alloc(4096, 64 * 4096);
	uint64_t unmapped;
	int memfd = memfd_create("dma", MFD_CLOEXEC);

	(void)state;
	assert_int_equal(ftruncate(memfd, 64 * 4096), 0);
	assert_int_equal(open_fake(&t, FAKE_GOOD, NULL), 0);
	/* with an fd */
	assert_int_equal(t.dev->ops->dma_map(t.dev, 0x10000, 0x4000, NULL, memfd, 0x2000,
					     VFIO_DMA_READ),
			 0);
	assert_int_equal(t.dev->ops->dma_map(t.dev, 0x14000, 0x4000, mem, -1, 0, VFIO_DMA_WRITE), 0);
	/* overlap, misalignment, outside the 48-bit space, no prot */
	assert_int_equal(t.dev->ops->dma_map(t.dev, 0x12000, 0x1000, mem, -1, 0, VFIO_DMA_READ),
			 -EEXIST);
	assert_int_equal(t.dev->ops->dma_map(t.dev, 0x20100, 0x1000, mem, -1, 0, VFIO_DMA_READ),
			 -EINVAL);
	assert_int_equal(t.dev->ops->dma_map(t.dev, 1ull << 48, 0x1000, mem, -1, 0, VFIO_DMA_READ),
			 -EINVAL);
	assert_int_equal(t.dev->ops->dma_map(t.dev, 0x30000, 0x1000, mem, -1, 0, 0), -EINVAL);
	/* an unmap that would split a window is refused, nothing unmapped */
	assert_int_equal(t.dev->ops->dma_unmap(t.dev, 0x10000, 0x2000, &unmapped), -EINVAL);
	assert_int_equal(unmapped, 0);
	/* one unmap covering both windows: the total is reported */
	assert_int_equal(t.dev->ops->dma_unmap(t.dev, 0x10000, 0x8000, &unmapped), 0);
	assert_int_equal(unmapped, 0x8000);
	/* nothing there: 0 bytes, like type1 */
	assert_int_equal(t.dev->ops->dma_unmap(t.dev, 0x10000, 0x8000, &unmapped), 0);
	assert_int_equal(unmapped, 0);
	close_all(&t);
	close(memfd);
	free(mem);
}

static void four_maps(struct fake *f)
{
	f->max_dma_maps = 4;
}

static void test_max_dma_maps(void **state)
{
	struct t t = { 0 };
	uint8_t *mem = aligned_alloc(4096, 8 * 4096);
	struct vfio_iommu_info io;
	uint64_t unmapped;

	(void)state;
	assert_int_equal(open_fake(&t, FAKE_GOOD, four_maps), 0);
	assert_int_equal(t.dev->ops->iommu_info(t.dev, &io), 0);
	assert_int_equal(io.max_mappings, 4);
	for (int i = 0; i < 4; i++)
		assert_int_equal(t.dev->ops->dma_map(t.dev, 0x1000 * (uint64_t)(2 * i), 0x1000,
						     mem + 4096 * i, -1, 0, VFIO_DMA_READ),
				 0);
	log_clear();
	assert_int_equal(t.dev->ops->dma_map(t.dev, 0x100000, 0x1000, mem, -1, 0, VFIO_DMA_READ),
			 -ENOSPC);
	assert_true(log_has("max_dma_maps"));
	assert_int_equal(t.dev->ops->dma_unmap(t.dev, 0x2000, 0x1000, &unmapped), 0);
	assert_int_equal(unmapped, 0x1000);
	assert_int_equal(t.dev->ops->dma_map(t.dev, 0x100000, 0x1000, mem, -1, 0, VFIO_DMA_READ), 0);
	close_all(&t);
	free(mem);
}

/* ---- malformed replies -------------------------------------------------- */

struct bad_case {
	enum fake_mode mode;
	int err;
	const char *log;
	bool dead_after;
};

static void run_bad(const struct bad_case *c)
{
	struct t t = { 0 };
	uint32_t v = 0;
	int64_t t0;

	assert_int_equal(open_fake(&t, c->mode, NULL), 0);
	log_clear();
	t0 = mono_ms();
	assert_int_equal(vfio_read32(t.dev, 0, FAKE_SCRATCH, &v), c->err);
	/* bounded: at most the timeout plus slack */
	assert_true(mono_ms() - t0 < 4 * FAKE_TIMEOUT_MS);
	if (c->log)
		assert_true(log_has(c->log));
	if (c->dead_after) {
		assert_true(vfio_user_is_dead(t.dev));
		t0 = mono_ms();
		assert_int_equal(vfio_read32(t.dev, 0, 0x44, &v), -ENODEV);
		assert_int_equal(vfio_write32(t.dev, 0, 0x44, 1), -ENODEV);
		assert_true(mono_ms() - t0 < 50);
	} else {
		/* the stream is intact: the next call works */
		assert_false(vfio_user_is_dead(t.dev));
		assert_int_equal(vfio_write32(t.dev, 0, 0x44, 0x1234), 0);
		assert_int_equal(vfio_read32(t.dev, 0, 0x44, &v), 0);
		assert_int_equal(v, 0x1234);
	}
	close_all(&t);
}

static void test_bad_size(void **s)
{
	(void)s;
	run_bad(&(struct bad_case){ FAKE_BAD_SIZE, -EPROTO, "REGION_READ(0, 0x40, 4) reply is 18 bytes", false });
}

static void test_bad_msg_id(void **s)
{
	(void)s;
	/* the stray reply is dropped and named; the caller times out */
	run_bad(&(struct bad_case){ FAKE_BAD_ID, -ETIMEDOUT, "matches no request", false });
}

static void test_bad_cmd(void **s)
{
	(void)s;
	run_bad(&(struct bad_case){ FAKE_BAD_CMD, -EPROTO, "says command 10", false });
}

static void test_bad_flags(void **s)
{
	(void)s;
	run_bad(&(struct bad_case){ FAKE_BAD_FLAGS, -EPROTO, "unknown flags 0x101", false });
}

static void test_too_many_fds(void **s)
{
	(void)s;
	run_bad(&(struct bad_case){ FAKE_TOO_MANY_FDS, -EPROTO, "carried 3 fds", false });
}

static void test_error_with_payload(void **s)
{
	(void)s;
	/* The specification forbids it, some servers do it: the errno (EACCES
	 * here) is kept, the violation logged, the stream goes on. */
	run_bad(&(struct bad_case){ FAKE_ERR_PAYLOAD, -EACCES, "error reply to REGION_READ carries 20 payload bytes", false });
}

static void test_error_reply(void **s)
{
	(void)s;
	run_bad(&(struct bad_case){ FAKE_ERR, -EACCES, NULL, false });
}

static void test_error_reply_odd_errno(void **s)
{
	(void)s;
	/* a number that means nothing is not passed up as if it did */
	run_bad(&(struct bad_case){ FAKE_ERR_ODD, -EIO, "errno 2929, which Linux does not have", false });
}

static void test_truncated(void **s)
{
	(void)s;
	run_bad(&(struct bad_case){ FAKE_TRUNCATED, -EPROTO, "cut short", true });
}

static void test_bad_frame(void **s)
{
	(void)s;
	run_bad(&(struct bad_case){ FAKE_BAD_FRAME, -EPROTO, "claims size 8", true });
}

static void test_server_dies(void **s)
{
	(void)s;
	run_bad(&(struct bad_case){ FAKE_DIE, -ENODEV, "hung up", true });
}

static void test_server_silent(void **s)
{
	(void)s;
	run_bad(&(struct bad_case){ FAKE_SILENT, -ETIMEDOUT, "no reply to REGION_READ", false });
}

static void test_late_reply_dropped(void **s)
{
	struct t t = { 0 };
	uint32_t v;

	(void)s;
	assert_int_equal(open_fake(&t, FAKE_LATE, NULL), 0);
	assert_int_equal(vfio_read32(t.dev, 0, FAKE_SCRATCH, &v), -ETIMEDOUT);
	/* the fake is still asleep; the next call waits behind it and is
	 * answered after the stale reply, which must be dropped, not taken */
	vfio_user_set_timeout(t.dev, 5000);
	assert_int_equal(vfio_write32(t.dev, 0, 0x44, 0x77), 0);
	assert_int_equal(vfio_read32(t.dev, 0, 0x44, &v), 0);
	assert_int_equal(v, 0x77);
	assert_true(log_has("matches no request"));
	close_all(&t);
}

/* ---- region fds that do not cover their region ---------------------------- */

static void vram_empty_memfd(struct fake *f)
{
	f->region2_fd = memfd_create("empty", MFD_CLOEXEC);
}

static void vram_far_offset(struct fake *f)
{
	f->region2_off = 1ull << 40;
}

static void vram_pipe(struct fake *f)
{
	int p[2];

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	close(p[1]);
	f->region2_fd = p[0];
}

static void vram_sealable(struct fake *f)
{
	f->region2_fd = memfd_create("sealable", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	assert_int_equal(ftruncate(f->region2_fd, FAKE_VRAM_SIZE), 0);
}

/*
 * Regression (issue 12, find 4): a GET_REGION_INFO reply whose fd does not
 * cover the region (an empty memfd, an mmap offset far past the end) let the
 * driver map it and die of SIGBUS at the first touch. The fd is checked at
 * open and the device refused with a line that says why; a file that allows
 * it is sealed against shrinking so the server cannot truncate it later.
 */
static void test_region_fd_must_cover(void **s)
{
	static void (*const bad[])(struct fake *) = { vram_empty_memfd, vram_far_offset, vram_pipe };
	static const char *const why[] = { "holds 0 bytes", "refusing the device",
					   "cannot be mapped" };
	struct t t = { 0 };
	int seals;

	(void)s;
	for (unsigned i = 0; i < 3; i++) {
		t = (struct t){ 0 };
		assert_int_equal(open_fake(&t, FAKE_GOOD, bad[i]), -EPROTO);
		assert_null(t.dev);
		assert_true(log_has(why[i]));
		close_all(&t);
	}
	t = (struct t){ 0 };
	assert_int_equal(open_fake(&t, FAKE_GOOD, vram_sealable), 0);
	seals = fcntl(t.f->region2_fd, F_GET_SEALS);
	assert_true(seals >= 0 && (seals & F_SEAL_SHRINK));
	assert_int_equal(ftruncate(t.f->region2_fd, 4096), -1);
	close_all(&t);
}

/* ---- twin-socket negotiation ---------------------------------------------- */

static void twin_unasked(struct fake *f)
{
	f->twin = TWIN_ON_UNASKED;
}

static void twin_no_fd(struct fake *f)
{
	f->twin = TWIN_NO_FD;
}

static void twin_pipe(struct fake *f)
{
	f->twin = TWIN_PIPE;
}

static void twin_fd_only(struct fake *f)
{
	f->twin = TWIN_FD_ONLY;
}

/* A server that gets twin-socket mode wrong is refused at open: the client
 * could miss the server's requests otherwise. */
static void test_twin_inconsistent(void **s)
{
	static void (*const bad[])(struct fake *) = { twin_no_fd, twin_pipe, twin_fd_only };
	static const char *const why[] = { "names none of the 0 fds", "not a stream socket",
					   "1 fds without twin-socket mode" };
	struct vfio_user_opts o = { .size = sizeof(o), .timeout_ms = FAKE_TIMEOUT_MS,
				    .flags = VFIO_USER_NO_TWIN_SOCKET };
	struct t t = { 0 };
	int cfd;

	(void)s;
	for (unsigned i = 0; i < 3; i++) {
		t = (struct t){ 0 };
		assert_int_equal(open_fake(&t, FAKE_GOOD, bad[i]), -EPROTO);
		assert_true(log_has(why[i]));
		close_all(&t);
	}
	/* Turned on although the client did not offer it. */
	t = (struct t){ 0 };
	t.ctx = make_ctx();
	t.f = fake_start(FAKE_GOOD, &cfd);
	twin_unasked(t.f);
	fake_run(t.f);
	assert_int_equal(vfio_user_open_fd(t.ctx, cfd, "fake", &o, &t.dev), -EPROTO);
	assert_true(log_has("which we did not offer"));
	close_all(&t);
	/* Not offered, not used: the fake's requests come on the main socket. */
	t = (struct t){ 0 };
	t.ctx = make_ctx();
	t.f = fake_start(FAKE_GOOD, &cfd);
	twin_on(t.f);
	fake_run(t.f);
	assert_int_equal(vfio_user_open_fd(t.ctx, cfd, "fake", &o, &t.dev), 0);
	assert_int_equal(t.f->twin_fd, -1);
	close_all(&t);
}

/* The server closing its twin socket is the server going away. */
static void test_twin_hangup(void **s)
{
	struct t t = { 0 };
	uint32_t v;

	(void)s;
	assert_int_equal(open_fake(&t, FAKE_GOOD, twin_on), 0);
	assert_true(t.f->twin_fd >= 0);
	shutdown(t.f->twin_fd, SHUT_RDWR);
	for (int i = 0; i < 200 && !vfio_user_is_dead(t.dev); i++)
		usleep(5000);
	assert_true(vfio_user_is_dead(t.dev));
	assert_int_equal(vfio_read32(t.dev, 0, 0x44, &v), -ENODEV);
	assert_true(log_has("server hung up (twin socket)"));
	close_all(&t);
}

/* ---- negotiation -------------------------------------------------------- */

static void major_1(struct fake *f)
{
	f->major = 1;
}

static void bad_json(struct fake *f)
{
	f->json = "{\"capabilities\":{\"max_msg_fds\":\"eight\"}}";
}

static void broken_json(struct fake *f)
{
	f->json = "{\"capabilities\":{\"max_msg_fds\":8";
}

static void no_json(struct fake *f)
{
	f->json = "";
}

static void test_version_major(void **s)
{
	struct t t = { 0 };

	(void)s;
	assert_int_equal(open_fake(&t, FAKE_GOOD, major_1), -EPROTO);
	assert_null(t.dev);
	assert_true(log_has("server speaks vfio-user 1.1"));
	close_all(&t);
}

static void test_version_bad_json(void **s)
{
	struct t t = { 0 };

	(void)s;
	assert_int_equal(open_fake(&t, FAKE_GOOD, bad_json), -EPROTO);
	close_all(&t);
	t = (struct t){ 0 };
	assert_int_equal(open_fake(&t, FAKE_GOOD, broken_json), -EPROTO);
	assert_true(log_has("capabilities"));
	close_all(&t);
}

static void test_version_defaults(void **s)
{
	struct t t = { 0 };
	struct vfio_iommu_info io;

	(void)s;
	/* no capabilities at all: the specification's defaults */
	assert_int_equal(open_fake(&t, FAKE_GOOD, no_json), 0);
	assert_int_equal(t.dev->ops->iommu_info(t.dev, &io), 0);
	assert_int_equal(io.max_mappings, 65535);
	assert_int_equal(io.pgsize_mask, 4096);
	close_all(&t);
}

static void test_open_no_server(void **s)
{
	struct vfio_dev *dev = NULL;

	(void)s;
	assert_int_equal(vfio_user_open(NULL, "/nonexistent/ugpu.sock", &dev), -ENOENT);
	assert_null(dev);
}

/* A server that dies while many threads wait: all fail fast, none hangs. */
struct hammer {
	struct vfio_dev *dev;
	int fails;
};

static void *hammer_main(void *arg)
{
	struct hammer *h = arg;
	uint32_t v;

	for (int i = 0; i < 2000; i++) {
		int r = vfio_read32(h->dev, 0, 0x44, &v);

		if (r) {
			if (r != -ENODEV && r != -EPROTO)
				fail_msg("unexpected %d", r);
			h->fails++;
			break;
		}
	}
	return NULL;
}

static void test_concurrent_then_die(void **s)
{
	struct t t = { 0 };
	struct hammer h[4];
	pthread_t th[4];
	uint32_t v;

	(void)s;
	assert_int_equal(open_fake(&t, FAKE_DIE, NULL), 0);
	for (int i = 0; i < 4; i++) {
		h[i] = (struct hammer){ .dev = t.dev };
		pthread_create(&th[i], NULL, hammer_main, &h[i]);
	}
	usleep(20000);
	/* the trigger read kills the server under the others */
	assert_int_equal(vfio_read32(t.dev, 0, FAKE_SCRATCH, &v), -ENODEV);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(vfio_read32(t.dev, 0, 0x44, &v), -ENODEV);
	close_all(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_and_info),
		cmocka_unit_test(test_region_io_chunked),
		cmocka_unit_test(test_chunk_limit_respected),
		cmocka_unit_test(test_mmap_sparse),
		cmocka_unit_test(test_irqs_eventfd),
		cmocka_unit_test(test_inband_dma),
		cmocka_unit_test(test_inband_dma_twin),
		cmocka_unit_test(test_twin_inconsistent),
		cmocka_unit_test(test_twin_hangup),
		cmocka_unit_test(test_dma_windows),
		cmocka_unit_test(test_max_dma_maps),
		cmocka_unit_test(test_bad_size),
		cmocka_unit_test(test_bad_msg_id),
		cmocka_unit_test(test_bad_cmd),
		cmocka_unit_test(test_bad_flags),
		cmocka_unit_test(test_too_many_fds),
		cmocka_unit_test(test_error_with_payload),
		cmocka_unit_test(test_error_reply),
		cmocka_unit_test(test_error_reply_odd_errno),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_bad_frame),
		cmocka_unit_test(test_server_dies),
		cmocka_unit_test(test_server_silent),
		cmocka_unit_test(test_late_reply_dropped),
		cmocka_unit_test(test_region_fd_must_cover),
		cmocka_unit_test(test_version_major),
		cmocka_unit_test(test_version_bad_json),
		cmocka_unit_test(test_version_defaults),
		cmocka_unit_test(test_open_no_server),
		cmocka_unit_test(test_concurrent_then_die),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
