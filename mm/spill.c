/* SPDX-License-Identifier: MIT */
/* The spill file of host-suspend backups: see spill.h and docs/suspend.md. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <liburing.h>

#include "engines/engine.h"
#include "mm/backup_track.h"
#include "mm/bo.h"
#include "mm/spill.h"
#include "base/log.h"
#include "base/test_point.h"
#include "src/device.h"

/* O_DIRECT transfers are rounded up to this (the file regions are
 * SPILL_ALIGN long, so the tail of a rounded write is the region's own). */
#define SPILL_IO_ALIGN 4096ull
/* A file read or write that does not complete in this long is an error
 * (every wait is bounded); generous: a slow disk writes 4 MiB in < 1 s. */
#define SPILL_IO_TIMEOUT_MS 30000

/*
 * struct spill - see spill.h (locking: the manager lock, one user).
 * Per staging slot: @slot_busy while an I/O is in flight on it (its
 * user_data is the slot), of @slot_piece, a write when @slot_write.
 * @err: the first I/O of the current pass that failed.
 */
struct spill {
	struct ugpu_device *dev;
	int fd;
	bool direct;
	bool fixed; /* staging registered with the ring: *_FIXED operations */
	char path[PATH_MAX];
	struct io_uring ring;
	struct bo_sys staging;
	uint64_t slot; /* bytes per staging slot: SPILL_SLOT, less when memory is short */
	uint64_t end; /* first free byte of the file */
	bool slot_busy[SPILL_SLOTS];
	bool slot_write[SPILL_SLOTS];
	const struct spill_piece *slot_piece[SPILL_SLOTS];
	unsigned int inflight;
	int err;
};

static uint64_t round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

int spill_pieces_add(const struct spill *s, struct spill_pieces *p, struct ugpu_bo *bo,
		     uint64_t off, uint64_t len)
{
	while (len) {
		uint64_t n = len < s->slot ? len : s->slot;

		if (p->n == p->cap) {
			size_t cap = p->cap ? 2 * p->cap : 64;
			struct spill_piece *v = realloc(p->v, cap * sizeof(*v));

			if (!v)
				return -ENOMEM;
			p->v = v;
			p->cap = cap;
		}
		p->v[p->n++] = (struct spill_piece){ .bo = bo, .off = off, .len = n };
		off += n;
		len -= n;
	}
	return 0;
}

/* What the C library calls @err (-errno): file errors read better so than
 * with ugpu_strerror(), which words ENOSPC for device memory. */
static const char *file_strerror(int err, char *buf, size_t len)
{
	return strerror_r(-err, buf, len);
}

/* ENOSPC and EDQUOT are "full"; every other failure of the file is -EIO,
 * with the real reason in the log line the caller writes. */
static int file_err(int err)
{
	return err == -ENOSPC || err == -EDQUOT ? -ENOSPC : -EIO;
}

int spill_open(struct ugpu_device *dev, const char *dir, struct spill **out)
{
	struct spill *s = calloc(1, sizeof(*s));
	struct iovec iov[SPILL_SLOTS];
	char tag[33], ebuf[64];
	unsigned int i;
	int ret, fd, inj = 0;

	if (!s)
		return -ENOMEM;
	s->dev = dev;
	s->fd = -1;
	/* The device's name may be a socket path: keep it readable. */
	for (i = 0; dev->name[i] && i < sizeof(tag) - 1; i++)
		tag[i] = (dev->name[i] >= '0' && dev->name[i] <= '9') ||
					 (dev->name[i] >= 'a' && dev->name[i] <= 'z') ||
					 (dev->name[i] >= 'A' && dev->name[i] <= 'Z')
				 ? dev->name[i]
				 : '_';
	tag[i] = '\0';
	if ((size_t)snprintf(s->path, sizeof(s->path), "%s/ugpu-spill-%d-%s-XXXXXX", dir,
			     (int)getpid(), tag) >= sizeof(s->path)) {
		log_err(dev->ctx, "%s: spill directory '%s': name too long", dev->name, dir);
		free(s);
		return -EIO;
	}
	/* O_DIRECT first; a filesystem without it refuses the open (EINVAL). */
	test_point_obj(TEST_POINT_SPILL_OPEN, &inj);
	fd = inj ? (errno = -inj, -1) : mkostemp(s->path, O_CLOEXEC | O_DIRECT);
	if (fd >= 0) {
		s->direct = true;
	} else if (errno == EINVAL) {
		/* a failed mkostemp() may leave its template filled in */
		memcpy(s->path + strlen(s->path) - 6, "XXXXXX", 6);
		fd = mkostemp(s->path, O_CLOEXEC);
		if (fd >= 0)
			log_info(dev->ctx, "%s: the filesystem of '%s' takes no O_DIRECT: the spill file goes through the page cache",
				 dev->name, dir);
	}
	if (fd < 0) {
		ret = -errno;
		log_err(dev->ctx, "%s: cannot create the spill file in '%s': %s", dev->name, dir,
			file_strerror(ret, ebuf, sizeof(ebuf)));
		free(s);
		return file_err(ret);
	}
	s->fd = fd;
	ret = io_uring_queue_init(2 * SPILL_SLOTS, &s->ring, 0);
	if (ret) {
		log_err(dev->ctx, "%s: spill file: no io_uring: %s", dev->name, ugpu_strerror(ret));
		goto out_file;
	}
	/* Spilling is for when memory is short: a smaller staging moves the
	 * same bytes in more pieces. */
	for (s->slot = SPILL_SLOT; s->slot >= SPILL_SLOT_MIN; s->slot /= 2) {
		inj = 0;
		test_point_obj(TEST_POINT_SPILL_STAGING, &inj);
		ret = inj ? inj
			  : bo_sys_alloc_locked(dev, SPILL_SLOTS * s->slot, "ugpu-spill-staging",
						false, &s->staging);
		if (!ret)
			break;
	}
	if (ret) {
		log_err(dev->ctx, "%s: spill file: no staging memory (%" PRIu64 " KiB): %s",
			dev->name, (uint64_t)(SPILL_SLOTS * SPILL_SLOT_MIN >> 10), ugpu_strerror(ret));
		goto out_ring;
	}
	if (s->slot < SPILL_SLOT)
		log_warn(dev->ctx, "%s: spill file: memory is short: staging of %" PRIu64 " KiB, not %" PRIu64,
			 dev->name, SPILL_SLOTS * s->slot >> 10, (uint64_t)(SPILL_SLOTS * SPILL_SLOT >> 10));
	/* Registered buffers spare the kernel a page walk per I/O; they count
	 * against RLIMIT_MEMLOCK, so an ordinary user may not get them. */
	for (i = 0; i < SPILL_SLOTS; i++) {
		iov[i].iov_base = (char *)s->staging.mem.vaddr + i * s->slot;
		iov[i].iov_len = s->slot;
	}
	s->fixed = io_uring_register_buffers(&s->ring, iov, SPILL_SLOTS) == 0;
	log_info(dev->ctx, "%s: spill file %s (%s%s)", dev->name, s->path,
		 s->direct ? "O_DIRECT" : "page cache", s->fixed ? ", registered buffers" : "");
	*out = s;
	return 0;

out_ring:
	io_uring_queue_exit(&s->ring);
out_file:
	close(s->fd);
	unlink(s->path);
	free(s);
	return -EIO;
}

void spill_close(struct spill *s)
{
	char ebuf[64];

	if (!s)
		return;
	if (s->fixed)
		io_uring_unregister_buffers(&s->ring);
	io_uring_queue_exit(&s->ring);
	bo_sys_free(s->dev, &s->staging);
	if (unlink(s->path))
		log_warn(s->dev->ctx, "%s: cannot remove the spill file %s: %s", s->dev->name,
			 s->path, file_strerror(-errno, ebuf, sizeof(ebuf)));
	close(s->fd);
	log_info(s->dev->ctx, "%s: spill file %s removed", s->dev->name, s->path);
	free(s);
}

uint64_t spill_slot_bytes(const struct spill *s)
{
	return s->slot;
}

const char *spill_path(const struct spill *s)
{
	return s->path;
}

bool spill_is_direct(const struct spill *s)
{
	return s->direct;
}

int spill_reserve(struct spill *s, const char *name, uint64_t size, uint64_t *off)
{
	uint64_t len = round_up(size, SPILL_ALIGN);
	int ret = posix_fallocate(s->fd, (off_t)s->end, (off_t)len);
	char ebuf[64];

	/* A filesystem that cannot preallocate writes on demand: a full one
	 * is then found by the writes. */
	if (ret && ret != EOPNOTSUPP && ret != EINVAL) {
		log_err(s->dev->ctx, "%s: spill file %s: no room for the backup of BO '%s' (%" PRIu64 " bytes): %s",
			s->dev->name, s->path, name, size, file_strerror(-ret, ebuf, sizeof(ebuf)));
		return file_err(-ret);
	}
	*off = s->end;
	s->end += len;
	return 0;
}

static void *slot_addr(struct spill *s, unsigned int slot)
{
	return (char *)s->staging.mem.vaddr + slot * s->slot;
}

/* Queue a read or write of piece @p through @slot. */
static int io_submit_slot(struct spill *s, const struct spill_piece *p, unsigned int slot,
			  bool write)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
	uint64_t foff = p->bo->spill_off + p->off;
	unsigned int len = (unsigned int)round_up(p->len, SPILL_IO_ALIGN);
	int ret;

	if (!sqe)
		return -EIO; /* cannot happen: at most SPILL_SLOTS in flight */
	if (write && s->fixed)
		io_uring_prep_write_fixed(sqe, s->fd, slot_addr(s, slot), len, foff, (int)slot);
	else if (write)
		io_uring_prep_write(sqe, s->fd, slot_addr(s, slot), len, foff);
	else if (s->fixed)
		io_uring_prep_read_fixed(sqe, s->fd, slot_addr(s, slot), len, foff, (int)slot);
	else
		io_uring_prep_read(sqe, s->fd, slot_addr(s, slot), len, foff);
	io_uring_sqe_set_data64(sqe, slot);
	ret = io_uring_submit(&s->ring);
	if (ret < 0) {
		log_err(s->dev->ctx, "%s: spill file %s: io_uring submit failed: %s", s->dev->name,
			s->path, ugpu_strerror(ret));
		return -EIO;
	}
	s->slot_busy[slot] = true;
	s->slot_write[slot] = write;
	s->slot_piece[slot] = p;
	s->inflight++;
	return 0;
}

/* The result @res of the I/O of piece @p, with the test points' injected
 * failure: 0, or -errno (a short transfer: -ENOSPC for a write, the
 * filesystem is full; -EIO for a read, the file is shorter than written). */
static int io_result(struct spill *s, const struct spill_piece *p, int res, bool write)
{
	char ebuf[64];
	int inj = 0;

	test_point_obj(write ? TEST_POINT_SPILL_WRITE : TEST_POINT_SPILL_READ, &inj);
	if (inj)
		res = inj;
	if (res >= 0 && (uint64_t)res < p->len)
		res = write ? -ENOSPC : -EIO;
	if (res < 0) {
		log_err(s->dev->ctx, "%s: spill file %s: %s %" PRIu64 " bytes of BO '%s' at byte %" PRIu64 " failed: %s",
			s->dev->name, s->path, write ? "writing" : "reading", p->len, p->bo->name,
			p->off, file_strerror(res, ebuf, sizeof(ebuf)));
		return write ? file_err(res) : -EIO;
	}
	return 0;
}

/*
 * Reap one completion (waiting up to the I/O timeout when @block, else only
 * if one is there); a failed one sets @err. Returns 1 when one was reaped,
 * 0 when none (not blocking, or nothing in flight), -ETIMEDOUT, or -EIO (the
 * ring failed).
 */
static int io_reap(struct spill *s, bool block)
{
	struct __kernel_timespec ts = { .tv_sec = SPILL_IO_TIMEOUT_MS / 1000 };
	struct io_uring_cqe *cqe;
	unsigned int slot;
	int ret, res;

	if (!s->inflight)
		return 0;
	ret = block ? io_uring_wait_cqe_timeout(&s->ring, &cqe, &ts)
		    : io_uring_peek_cqe(&s->ring, &cqe);
	if (ret == -EAGAIN && !block)
		return 0;
	if (ret == -ETIME) {
		log_err(s->dev->ctx, "%s: spill file %s: no answer in %d ms", s->dev->name, s->path,
			SPILL_IO_TIMEOUT_MS);
		return -ETIMEDOUT;
	}
	if (ret) {
		log_err(s->dev->ctx, "%s: spill file %s: io_uring wait failed: %s", s->dev->name,
			s->path, ugpu_strerror(ret));
		return -EIO;
	}
	slot = (unsigned int)io_uring_cqe_get_data64(cqe);
	res = cqe->res;
	io_uring_cqe_seen(&s->ring, cqe);
	if (slot >= SPILL_SLOTS || !s->slot_busy[slot])
		return 1; /* not ours: cannot happen */
	s->slot_busy[slot] = false;
	s->inflight--;
	res = io_result(s, s->slot_piece[slot], res, s->slot_write[slot]);
	if (res && !s->err)
		s->err = res;
	return 1;
}

/* Wait until nothing is in flight. Returns 0 or io_reap()'s -errno (then
 * the ring is not usable any more: spill_close() tears it down). */
static int io_drain(struct spill *s)
{
	int ret = 0;

	while (s->inflight && ret >= 0)
		ret = io_reap(s, true);
	return ret < 0 ? ret : 0;
}

/* A failed pass leaves nothing running into (or out of) the staging: the
 * engine idle (or reset), the ring drained. */
static void quiesce(struct spill *s, struct engine *e, bool engine_failed)
{
	if (engine_failed || engine_idle(e, 5000))
		engine_reset(e);
	io_drain(s);
}

static int copy_failed(struct spill *s, struct engine *e, const struct spill_piece *p, int ret)
{
	log_err(s->dev->ctx, "%s: copying %" PRIu64 " bytes of BO '%s' through the spill staging failed: %s",
		s->dev->name, p->len, p->bo->name, ugpu_strerror(ret));
	quiesce(s, e, true);
	return -EIO;
}

/* Reap what completed, without waiting; 0 or io_reap()'s -errno. */
static int io_poll(struct spill *s)
{
	int ret;

	while ((ret = io_reap(s, false)) > 0)
		;
	return ret;
}

int spill_save(struct spill *s, struct engine *e, const struct spill_piece *p, size_t n,
	       uint64_t *bytes)
{
	uint64_t fence[SPILL_SLOTS] = { 0 };
	size_t next = 0, done = 0;
	unsigned int slot;
	int ret = 0;

	s->err = 0;
	while (done < n && !ret && !s->err) {
		/* Fill every free slot: the engine copies ahead of the file. */
		while (!ret && next < n && next - done < SPILL_SLOTS &&
		       !s->slot_busy[next % SPILL_SLOTS]) {
			slot = next % SPILL_SLOTS;
			ret = bo_copy_range_queue(e, p[next].bo->vram, p[next].off, p[next].len,
						  s->staging.iova + slot * s->slot, false,
						  &fence[slot]);
			if (ret)
				return copy_failed(s, e, &p[next], ret);
			next++;
		}
		if (next == done) {
			/* Every slot is being written: wait for one. */
			ret = io_reap(s, true);
			ret = ret > 0 ? 0 : ret;
			continue;
		}
		/* The oldest copy (one engine: copies end in order): hash it,
		 * hand it to the file. */
		slot = done % SPILL_SLOTS;
		ret = engine_wait(e, fence[slot], bo_copy_timeout_ms(p[done].len));
		if (ret)
			return copy_failed(s, e, &p[done], ret);
		track_hash_at(p[done].bo->track, slot_addr(s, slot), p[done].off, p[done].len);
		ret = io_submit_slot(s, &p[done], slot, true);
		if (ret)
			break;
		*bytes += p[done].len;
		done++;
		ret = io_poll(s);
	}
	if (!ret)
		ret = io_drain(s);
	if (!ret)
		ret = s->err;
	if (ret)
		quiesce(s, e, false);
	return ret;
}

int spill_restore(struct spill *s, struct engine *e, const struct spill_piece *p, size_t n,
		  void (*bad)(void *arg, struct ugpu_bo *bo, uint64_t off), void *arg,
		  uint64_t *bytes)
{
	uint64_t fence[SPILL_SLOTS] = { 0 }, bad_off;
	bool copying[SPILL_SLOTS] = { false };
	struct ugpu_bo *reported = NULL;
	size_t next = 0, done = 0;
	unsigned int slot;
	int ret = 0;

	s->err = 0;
	while (done < n && !ret && !s->err) {
		/* Read ahead into every slot whose copy to VRAM is over. */
		while (!ret && next < n && next - done < SPILL_SLOTS) {
			slot = next % SPILL_SLOTS;
			if (copying[slot]) {
				ret = engine_wait(e, fence[slot], bo_copy_timeout_ms(s->slot));
				if (ret)
					return copy_failed(s, e, &p[next - SPILL_SLOTS], ret);
				copying[slot] = false;
			}
			ret = io_submit_slot(s, &p[next], slot, false);
			if (!ret)
				next++;
		}
		slot = done % SPILL_SLOTS;
		while (!ret && s->slot_busy[slot]) {
			ret = io_reap(s, true);
			ret = ret > 0 ? 0 : ret;
		}
		if (ret || s->err)
			break;
		/* Checked before its bytes go back; a damaged piece is
		 * restored all the same (it is the only copy). */
		if (bad && p[done].bo != reported &&
		    track_verify_at(p[done].bo->track, slot_addr(s, slot), p[done].off, p[done].len,
				    &bad_off)) {
			bad(arg, p[done].bo, bad_off);
			reported = p[done].bo;
		}
		ret = bo_copy_range_queue(e, p[done].bo->vram, p[done].off, p[done].len,
					  s->staging.iova + slot * s->slot, true, &fence[slot]);
		if (ret)
			return copy_failed(s, e, &p[done], ret);
		copying[slot] = true;
		*bytes += p[done].len;
		done++;
	}
	for (slot = 0; !ret && !s->err && slot < SPILL_SLOTS; slot++) {
		if (copying[slot] && (ret = engine_wait(e, fence[slot],
							 bo_copy_timeout_ms(s->slot))))
			return copy_failed(s, e, &p[0], ret);
	}
	if (!ret)
		ret = io_drain(s);
	if (!ret)
		ret = s->err;
	if (ret) {
		quiesce(s, e, false);
		return -EIO;
	}
	return 0;
}

int spill_load(struct spill *s, struct ugpu_bo *bo, void *dst)
{
	uint64_t len = round_up(bo->size, SPILL_IO_ALIGN), done = 0;
	char ebuf[64];
	ssize_t r;

	while (done < len) {
		r = pread(s->fd, (char *)dst + done, len - done, (off_t)(bo->spill_off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			log_err(s->dev->ctx, "%s: spill file %s: reading the backup of BO '%s' failed: %s",
				s->dev->name, s->path, bo->name, r ? file_strerror(-errno, ebuf, sizeof(ebuf)) : "short file");
			return -EIO;
		}
		done += (uint64_t)r;
	}
	return 0;
}
