/* SPDX-License-Identifier: MIT */
/*
 * BOs of a device served by ugpud: each call is one request (reads and
 * writes one per UGPUD_MAX_DATA bytes). See bo_remote.h.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mm/bo_remote.h"
#include "src/ugpud_proto.h"

/* The CPU mappings of remote BOs. A map or an unmap claims its BO
 * (@map_busy, under @map_lock; another map or unmap of the same BO waits on
 * @map_cond) and makes its request and its mmap/munmap with the lock
 * dropped, so two threads never map one BO twice, and a map waiting for a
 * slow daemon (a BO's move out of VRAM) holds up no map of another BO (it
 * held this lock through its request before: every map of the process
 * waited, leased ones too). @map_addr is written by the claimant with
 * atomic stores (ugpu_bo_query() reads it without the lock). Nothing else
 * is taken under @map_lock. A map or unmap of the same BO from a removal
 * callback called inside that BO's own map would wait for itself. */
static pthread_mutex_t map_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t map_cond = PTHREAD_COND_INITIALIZER;

/* Claim @bo for a map or an unmap: the lock is not held on return. */
static void map_claim(struct ugpu_bo *bo)
{
	pthread_mutex_lock(&map_lock);
	while (bo->map_busy)
		pthread_cond_wait(&map_cond, &map_lock);
	bo->map_busy = true;
	pthread_mutex_unlock(&map_lock);
}

static void map_unclaim(struct ugpu_bo *bo)
{
	pthread_mutex_lock(&map_lock);
	bo->map_busy = false;
	pthread_cond_broadcast(&map_cond);
	pthread_mutex_unlock(&map_lock);
}

/* Leases held (struct ugpu_bo, @lease_fd) in this process, each an open fd:
 * a create asks for one only while fewer than REMOTE_MAX_LEASES are.
 * Atomic. */
#define REMOTE_MAX_LEASES 64
static unsigned int leases;

/* Claim @bo's lease: its fd (the caller's now), or -1 when it has none or
 * another thread claimed it. Lock-free: no library lock is held across the
 * requests that follow (a removal callback called inside one may call
 * into the library, review of 2026-12-07). */
static int lease_take(struct ugpu_bo *bo)
{
	int fd = __atomic_exchange_n(&bo->lease_fd, -1, __ATOMIC_ACQ_REL);

	if (fd >= 0)
		__atomic_sub_fetch(&leases, 1, __ATOMIC_RELAXED);
	return fd;
}

/* Tell the daemon to let go of the hold its create took for @bo's lease
 * (posted: served before anything this connection sends next). A restarted
 * daemon restores that hold with the BO (docs/daemon.md, "Restart"), so
 * this goes to it too. */
static void lease_unmap(struct ugpu_bo *bo)
{
	struct ugpud_bo_req req = { .handle = bo->remote_handle };

	(void)remote_post(bo->dev, UGPUD_BO_UNMAP, &req, sizeof(req));
}

void bo_remote_lease_drop(struct ugpu_bo *bo)
{
	int fd = lease_take(bo);

	if (fd < 0)
		return;
	close(fd);
	lease_unmap(bo);
}

int bo_remote_create(struct ugpu_device *dev, const struct ugpu_bo_opts *opts,
		     struct ugpu_bo **out)
{
	struct ugpud_bo_create_req req = {
		.bytes = opts->bytes,
		.placements = { opts->placements[0], opts->placements[1] },
		.flags = opts->flags,
	};
	struct ugpud_bo_create_rep rep;
	struct ugpu_bo *bo;
	uint32_t resumes = 0;
	size_t got = 0;
	int ret, fd = -1;

	snprintf(req.name, sizeof(req.name), "%s", opts->name ? opts->name : "bo");
	bo = calloc(1, sizeof(*bo));
	if (!bo)
		return -ENOMEM;
	/* A BO made in system memory comes with its memfd, so that a map
	 * needs no request of its own (a create says nothing about a map to
	 * come; a lease not mapped is given back before any request that may
	 * move the BO: bo_remote_lease_drop()). Bounded: each is an fd. */
	if (__atomic_add_fetch(&leases, 1, __ATOMIC_RELAXED) <= REMOTE_MAX_LEASES)
		req.want = UGPUD_CREATE_FD;
	else
		__atomic_sub_fetch(&leases, 1, __ATOMIC_RELAXED);
	ret = remote_call_maybe_fd(dev, UGPUD_BO_CREATE, &req, sizeof(req), &rep, sizeof(rep), &got,
				   &fd, &resumes);
	if (!ret && (got != sizeof(rep) || !rep.handle || rep.got & ~req.want ||
		     (fd >= 0 && rep.got != UGPUD_CREATE_FD)))
		ret = -EPROTO;
	if (ret || fd < 0) {
		if (req.want)
			__atomic_sub_fetch(&leases, 1, __ATOMIC_RELAXED);
	}
	if (ret) {
		if (fd >= 0)
			close(fd);
		free(bo);
		return ret;
	}
	bo->lease_resumes = resumes;
	bo->remote_handle = rep.handle;
	bo->dev = dev;
	if (rep.got == UGPUD_CREATE_FD && fd < 0)
		/* held for us, but the fd did not come (no room for one in
		 * this process: the kernel dropped it): let go, no lease */
		lease_unmap(bo);
	bo->lease_fd = fd;
	bo->lease_resumes = resumes;
	bo->refcount = 1;
	bo->remote = true;
	bo->size = rep.bytes;
	bo->flags = opts->flags;
	snprintf(bo->name, sizeof(bo->name), "%s", req.name);
	device_get(dev); /* as a local BO: the handle keeps the device object */
	*out = bo;
	return 0;
}

/* A request about @bo that answers nothing. */
static int bo_remote_simple(struct ugpu_bo *bo, uint16_t op, uint32_t arg)
{
	struct ugpud_bo_req req = { .handle = bo->remote_handle, .arg = arg };

	return remote_call(bo->dev, op, &req, sizeof(req), NULL, 0, NULL, 0, NULL);
}

void bo_remote_release(struct ugpu_bo *bo)
{
	struct ugpu_device *dev = bo->dev;

	/* The last reference: no other thread uses the BO, no lock needed. The
	 * daemon drops its hold with the BO. */
	if (bo->map_addr)
		munmap(bo->map_addr, bo->size);
	{
		int fd = lease_take(bo); /* the destroy ends the daemon's hold */

		if (fd >= 0)
			close(fd);
	}

	/* Not waited for (remote_post()): the daemon serves it before anything
	 * this connection sends later. -ENODEV after close or a daemon gone:
	 * it let go of the BO already. */
	{
		struct ugpud_bo_req req = { .handle = bo->remote_handle };

		(void)remote_post(dev, UGPUD_BO_DESTROY, &req, sizeof(req));
	}
	free(bo);
	device_put(dev);
}

int bo_remote_pin(struct ugpu_bo *bo, bool pin)
{
	bo_remote_lease_drop(bo);
	return bo_remote_simple(bo, pin ? UGPUD_BO_PIN : UGPUD_BO_UNPIN, 0);
}

int bo_remote_migrate(struct ugpu_bo *bo, enum ugpu_placement placement)
{
	bo_remote_lease_drop(bo);
	return bo_remote_simple(bo, UGPUD_BO_MIGRATE, (uint32_t)placement);
}

int bo_remote_rw(struct ugpu_bo *bo, uint64_t offset, void *buf, size_t len, bool write)
{
	char *p = buf;

	if ((!buf && len) || offset > bo->size || len > bo->size - offset)
		return -EINVAL;
	do {
		size_t n = len < UGPUD_MAX_DATA ? len : UGPUD_MAX_DATA, got = 0;
		struct ugpud_bo_req req = { .handle = bo->remote_handle, .offset = offset, .len = n };
		int ret;

		if (write)
			ret = remote_call(bo->dev, UGPUD_BO_WRITE, &req, sizeof(req), p, n, NULL, 0,
					  NULL);
		else
			ret = remote_call(bo->dev, UGPUD_BO_READ, &req, sizeof(req), NULL, 0, p, n,
					  &got);
		if (!ret && !write && got != n)
			ret = -EPROTO;
		if (ret)
			return ret;
		p += n;
		offset += n;
		len -= n;
	} while (len);
	return 0;
}

int bo_remote_query(struct ugpu_bo *bo, struct ugpu_bo_info *info)
{
	struct ugpud_bo_req req = { .handle = bo->remote_handle };
	struct ugpu_bo_info i = { 0 };
	struct ugpud_bo_info w;
	int ret;

	ret = remote_get(bo->dev, UGPUD_BO_QUERY, &req, sizeof(req), &w, sizeof(w));
	if (ret)
		return ret;
	i.size = info->size;
	i.bytes = w.bytes;
	i.placement = (enum ugpu_placement)w.placement;
	i.vram_offset = w.vram_offset;
	i.flags = w.flags;
	i.pin_count = w.pin_count;
	/* this process's mapping (the daemon's hold for it, or for a lease
	 * not mapped yet, is none) */
	i.cpu_mapped = w.cpu_mapped || __atomic_load_n(&bo->map_addr, __ATOMIC_ACQUIRE);
	i.lost = w.lost;
	i.discarded = w.discarded;
	i.has_backup = w.has_backup;
	i.corrupt = w.corrupt;
	remote_fill(info, info->size, &i, sizeof(i));
	return 0;
}

int bo_remote_map(struct ugpu_bo *bo, void **addr)
{
	struct ugpud_bo_req req = { .handle = bo->remote_handle };
	struct ugpud_bo_map_rep rep;
	size_t got = 0;
	void *p;
	int fd = -1, ret = 0;

	map_claim(bo);
	if (bo->map_addr)
		goto out;
	fd = lease_take(bo);
	if (fd >= 0) {
		/* The create's memfd, held by the daemon since: mapped with no
		 * request, when that daemon still serves this connection. */
		p = remote_same_daemon(bo->dev, bo->lease_resumes)
			    ? mmap(NULL, bo->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
			    : MAP_FAILED;
		close(fd);
		fd = -1;
		if (p != MAP_FAILED) {
			/* the hold is the mapping's now */
			__atomic_store_n(&bo->map_addr, p, __ATOMIC_RELEASE);
			goto out;
		}
		lease_unmap(bo); /* then as without one */
	}
	ret = remote_call_fd(bo->dev, UGPUD_BO_MAP, &req, sizeof(req), &rep, sizeof(rep), &got, &fd);
	if (ret == -EMFILE) /* mapped for us, but no room for the fd here */
		goto out_undo;
	if (ret == -ECONNRESET) {
		/* the daemon died with the map in flight: if it had mapped
		 * it, the restarted one holds it again (docs/daemon.md,
		 * "Restart"); let go, as for a map never made */
		(void)remote_post(bo->dev, UGPUD_BO_UNMAP, &req, sizeof(req));
		goto out_unlock;
	}
	if (ret)
		goto out_unlock;
	if (got != sizeof(rep) || rep.size != bo->size) {
		ret = -EPROTO;
		goto out_undo;
	}
	/* The BO's own pages, shared with the daemon and the device: what a
	 * kernel writes there is what this mapping reads. */
	p = mmap(NULL, bo->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		ret = -errno;
		goto out_undo;
	}
	close(fd);
	__atomic_store_n(&bo->map_addr, p, __ATOMIC_RELEASE);
out:
	*addr = bo->map_addr;
out_unlock:
	map_unclaim(bo);
	return ret;

out_undo:
	if (fd >= 0)
		close(fd);
	(void)remote_call(bo->dev, UGPUD_BO_UNMAP, &req, sizeof(req), NULL, 0, NULL, 0, NULL);
	goto out_unlock;
}

int bo_remote_unmap(struct ugpu_bo *bo)
{
	int ret;

	map_claim(bo);
	if (!bo->map_addr) {
		ret = -EINVAL;
	} else {
		munmap(bo->map_addr, bo->size);
		__atomic_store_n(&bo->map_addr, NULL, __ATOMIC_RELEASE);
		ret = bo_remote_simple(bo, UGPUD_BO_UNMAP, 0);
		if (ret == -ECONNRESET) {
			/* the daemon died with it in flight: done or not, the
			 * restarted one (which restores a map's hold) is asked
			 * again; "not mapped" then says it was done */
			ret = bo_remote_simple(bo, UGPUD_BO_UNMAP, 0);
			if (ret == -EINVAL)
				ret = 0;
		}
	}
	map_unclaim(bo);
	return ret;
}
