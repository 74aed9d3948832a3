/* SPDX-License-Identifier: MIT */
/*
 * The input format of the vfio-user fuzz targets, shared with the corpus
 * generator (mkcorpus.c).
 *
 * An input is a sequence of records. Each record is one byte that says which
 * file descriptors travel with the message (they are made for real: memfds,
 * eventfds, pipes, sockets), then one vfio-user message exactly as it would be
 * on the socket: its header's size field frames it, as on the wire. A record
 * cut short ends the input, as a peer that hangs up mid-message would.
 *
 * The fd byte: bits 2:0 the kind, bits 7:3 an argument (0..31):
 *   0 none
 *   1 a memfd of arg * 4 KiB (DMA windows), sealing allowed
 *   2 a memfd of arg * 64 KiB (region fds: 16 is 1 MiB of VRAM)
 *   3 an eventfd whose counter is arg, or one below its maximum for arg 31
 *   4 a pipe's write end; arg bit 0: filled up, bit 1: its reader closed
 *   5 one end of a stream socket pair (a twin socket)
 *   6 /dev/null (a character device)
 *   7 arg % 8 + 1 eventfds
 */
#ifndef UGPU_FUZZ_INPUT_H
#define UGPU_FUZZ_INPUT_H

#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vfio/vfio_user_proto.h"

enum { FZ_NONE = 0, FZ_MEMFD_4K = 1, FZ_MEMFD_64K = 2, FZ_EVENTFD = 3, FZ_PIPE = 4,
       FZ_SOCKET = 5, FZ_DEVNULL = 6, FZ_EVENTFDS = 7 };

#define FZ_SPEC(kind, arg) ((uint8_t)((kind) | ((arg) << 3)))
#define FZ_MAX_FDS 8

struct fz {
	const uint8_t *p;
	size_t left;
};

/* One record: the fd byte, the header, and the bytes after the header that
 * are present (@avail of them). */
struct fz_rec {
	uint8_t spec;
	struct vfu_hdr hdr;
	const uint8_t *rest;
	size_t avail;
};

/* The next record; false at the end (no full header left). The caller decides
 * how many of rec->avail bytes the message takes and calls fz_consume(). */
static inline bool fz_next(struct fz *in, struct fz_rec *rec)
{
	if (in->left < 1 + sizeof(rec->hdr))
		return false;
	rec->spec = in->p[0];
	memcpy(&rec->hdr, in->p + 1, sizeof(rec->hdr));
	in->p += 1 + sizeof(rec->hdr);
	in->left -= 1 + sizeof(rec->hdr);
	rec->rest = in->p;
	rec->avail = in->left;
	return true;
}

static inline void fz_consume(struct fz *in, size_t n)
{
	in->p += n;
	in->left -= n;
}

/* Fds that stay with the harness while a message is handled (pipe readers,
 * socket peers), closed afterwards. */
struct fz_keep {
	int fds[FZ_MAX_FDS];
	int n;
};

static inline void fz_keep_add(struct fz_keep *k, int fd)
{
	if (k->n < FZ_MAX_FDS)
		k->fds[k->n++] = fd;
	else
		close(fd);
}

static inline void fz_keep_close(struct fz_keep *k)
{
	for (int i = 0; i < k->n; i++)
		close(k->fds[i]);
	k->n = 0;
}

/* Make the fds @spec asks for into @fds (at most FZ_MAX_FDS). Returns how
 * many; the caller owns them. */
static inline int fz_make_fds(uint8_t spec, int *fds, struct fz_keep *keep)
{
	unsigned kind = spec & 7, arg = spec >> 3;
	int n = 0, p[2];

	switch (kind) {
	case FZ_MEMFD_4K:
	case FZ_MEMFD_64K:
		fds[0] = memfd_create("fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (fds[0] < 0)
			return 0;
		if (ftruncate(fds[0], (off_t)arg * (kind == FZ_MEMFD_4K ? 4096 : 65536)) < 0) {
			close(fds[0]);
			return 0;
		}
		return 1;
	case FZ_EVENTFD: {
		uint64_t v = arg == 31 ? 0xfffffffffffffffeull : arg;

		fds[0] = eventfd(0, EFD_CLOEXEC);
		if (fds[0] < 0)
			return 0;
		if (v && write(fds[0], &v, sizeof(v)) != sizeof(v)) {
			/* cannot happen below the maximum */
		}
		return 1;
	}
	case FZ_PIPE:
		if (pipe2(p, O_CLOEXEC | O_NONBLOCK))
			return 0;
		if (arg & 1) {
			char junk[4096] = { 0 };

			while (write(p[1], junk, sizeof(junk)) > 0)
				;
		}
		fcntl(p[1], F_SETFL, 0); /* as a hostile peer passes it: blocking */
		if (arg & 2)
			close(p[0]);
		else
			fz_keep_add(keep, p[0]);
		fds[0] = p[1];
		return 1;
	case FZ_SOCKET:
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p))
			return 0;
		fz_keep_add(keep, p[1]);
		fds[0] = p[0];
		return 1;
	case FZ_DEVNULL:
		fds[0] = open("/dev/null", O_RDWR | O_CLOEXEC);
		return fds[0] >= 0;
	case FZ_EVENTFDS:
		for (unsigned i = 0; i < arg % 8 + 1; i++) {
			fds[n] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
			if (fds[n] >= 0)
				n++;
		}
		return n;
	}
	return 0;
}

#endif
