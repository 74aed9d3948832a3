/* SPDX-License-Identifier: MIT */
/*
 * ugpud restarts without losing its clients' BOs (docs/daemon.md,
 * "Restart"). What a SIGKILLed daemon leaves behind is what systemd's fd
 * store holds for it (FDSTORE=1 with FDNAME=, handed back as LISTEN_FDS with
 * LISTEN_FDNAMES):
 *
 *   ugpud-vram-<dev>-<boot>   an embedded reference device's VRAM memfd
 *   ugpud-sys-<boot>-<n>      the system memfd of a BO in system memory
 *   ugpud-table-<boot>-<seq>  the table: devices, sessions, their BOs with
 *                             handle, size, placements, flags, pins, and
 *                             where the bytes are (VRAM extents or a sys name)
 *
 * The table is a new sealed memfd each time it changes, stored (and waited
 * for with BARRIER=1) before the previous one is removed, and a memfd a table names is stored before the
 * table and removed after the next: a kill at any point leaves one complete
 * table whose memory is all in the store. The loop records after every
 * request (persist_sync()), so the table is current at request boundaries;
 * a move the driver makes on its own threads (runtime PM, host suspend) is
 * recorded at the next request or tick (1 s).
 *
 * A restarted daemon makes each BO again on its (new) device and copies its
 * bytes from the stored memfds, except a mapped BO, which takes its stored
 * memfd (the client's mapping) as its memory; VRAM contents are only
 * readable where the daemon embeds the device (sim): a BO recorded in
 * another device's VRAM is reported lost. VMs and queues are not restored.
 *
 * Threading: the loop's thread only (as all of struct ugpud).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <ugpu/rpm.h>
#include <ugpu/ugpu.h>

#include "base/clock.h"
#include "mm/vram.h"
#include "tools/ugpu-sim/sim.h"
#include "tools/ugpud/ugpud.h"

#define TABLE_MAGIC "UGPUDTB1"
#define NAME_PREFIX "ugpud-"
#define COPY_CHUNK (1u << 20)
/* how long a stored table waits for systemd to have processed it */
#define BARRIER_MS 1000

struct tbl_hdr {
	char magic[8];
	uint32_t boot;
	uint32_t ndevs;
	uint64_t seq;
	uint64_t body_len;
	uint64_t sum; /* FNV-1a 64 of the body */
};

struct tbl_dev {
	char uri[128];
};

enum { REC_SESSION = 1, REC_BO = 2 };

struct tbl_session {
	uint32_t kind;
	uint32_t id;
	uint64_t token;
	uint32_t uid;
	uint32_t device;
	uint32_t nslots;
	uint32_t pad;
	char name[32];
};

/* followed by @next struct bo_extent */
struct tbl_bo {
	uint32_t kind;
	uint32_t slot;
	uint32_t gen;
	uint32_t flags;
	uint64_t bytes;
	uint64_t vram_charge;
	uint32_t placements[2];
	uint32_t pins;
	uint32_t where;
	uint32_t next;
	uint32_t state; /* TBL_BO_* */
	char store_name[64];
};

/* tbl_bo.state: the client has the BO's memfd (a map or a create's lease):
 * it is in system memory, its bytes in the stored memfd, which the restored
 * BO takes as its memory, so that the client's mapping stays the BO's */
#define TBL_BO_MAPPED 1u
/* tbl_bo.state: a restart before could not keep the client's mapping
 * (struct ugpud_slot @map_detached): still so after the next one */
#define TBL_BO_DETACHED 2u

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

/* A growing buffer. */
struct buf {
	unsigned char *p;
	size_t len, cap;
	bool failed;
};

static void buf_add(struct buf *b, const void *data, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		unsigned char *p;

		while (cap < b->len + n)
			cap *= 2;
		p = realloc(b->p, cap);
		if (!p) {
			b->failed = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
}

static void store_remove(const char *name)
{
	int ret = notify_store(-1, name);

	if (ret)
		ugpud_log("fd store: cannot remove %s: %s", name, strerror(-ret));
}

/* Bring @s's record up to date; true when it changed. */
static bool slot_sync(struct ugpud *d, struct ugpud_slot *s)
{
	uint64_t gen = s->persist_gen, gen0 = gen;
	enum ugpu_placement where = UGPU_PLACEMENT_NONE;
	size_t n = 0;
	int fd = -1, ret;

	for (;;) {
		ret = bo_backing_record(s->bo, &gen, &where, s->ext, s->ext_cap, &n, &fd);
		if (ret || n <= s->ext_cap)
			break;
		/* more extents than room: grow and ask again */
		struct bo_extent *e = realloc(s->ext, n * sizeof(*e));

		if (!e) {
			ret = -ENOMEM;
			break;
		}
		s->ext = e;
		s->ext_cap = n;
		gen = s->persist_gen;
	}
	if (ret == 1)
		return false;
	if (ret < 0) {
		/* a table without this BO's record would lose it: none */
		ugpud_log("restart record: a BO's backing cannot be read: %s", strerror(-ret));
		d->persist_store_failed = true;
		return false;
	}
	client_forget_store(d, s); /* the old memfd goes after the next table */
	s->persist_gen = gen;
	s->where = (uint32_t)where;
	s->next = n;
	if (fd >= 0) {
		char name[64];

		snprintf(name, sizeof(name), NAME_PREFIX "sys-%u-%u", d->boot, ++d->sys_names);
		ret = notify_store(fd, name);
		close(fd);
		if (ret) {
			/* a table naming it would lose the BO at a restart:
			 * none is written (the stored one still names where
			 * it was, held), and the next walk tries again */
			ugpud_log("fd store: cannot store %s: %s", name, strerror(-ret));
			s->persist_gen = gen0;
			d->persist_store_failed = true;
		} else {
			snprintf(s->store_name, sizeof(s->store_name), "%s", name);
		}
	}
	return true;
}

static void add_client(struct buf *b, struct client *c)
{
	struct tbl_session r = { .kind = REC_SESSION, .id = c->id, .token = c->token,
				 .uid = c->uid, .device = c->device, .nslots = c->nslots };

	if (!c->hello)
		return;
	memcpy(r.name, c->name, sizeof(r.name));
	buf_add(b, &r, sizeof(r));
	for (uint32_t i = 0; i < c->nslots; i++) {
		struct ugpud_slot *s = &c->slots[i];
		struct tbl_bo o = { .kind = REC_BO, .slot = i, .gen = s->gen, .flags = s->flags,
				    .bytes = s->bytes, .vram_charge = s->vram_charge,
				    .placements = { s->placements[0], s->placements[1] },
				    .pins = s->pins, .where = s->where,
				    .state = (s->mapped ? TBL_BO_MAPPED : 0) |
					     (s->map_detached ? TBL_BO_DETACHED : 0) };

		if (s->kind != SLOT_BO)
			continue;
		if (s->where == UGPU_PLACEMENT_VRAM)
			o.next = (uint32_t)s->next;
		memcpy(o.store_name, s->store_name, sizeof(o.store_name));
		buf_add(b, &o, sizeof(o));
		if (o.next)
			buf_add(b, s->ext, o.next * sizeof(*s->ext));
	}
}

/* Write the table into a new sealed memfd and store it; the previous one
 * and the memfds no longer named go after it. */
static int write_table(struct ugpud *d)
{
	struct buf b = { 0 };
	struct tbl_hdr h = { .magic = TABLE_MAGIC, .boot = d->boot, .ndevs = d->ndevs,
			     .seq = d->table_seq + 1 };
	char name[64];
	int fd, ret = 0;

	buf_add(&b, &h, sizeof(h));
	for (unsigned int i = 0; i < d->ndevs; i++) {
		struct tbl_dev t = { { 0 } };

		snprintf(t.uri, sizeof(t.uri), "%s", d->devs[i].uri);
		buf_add(&b, &t, sizeof(t));
	}
	list_for_each(l, &d->clients)
		add_client(&b, list_entry(l, struct client, link));
	list_for_each(l, &d->detached)
		add_client(&b, list_entry(l, struct client, link));
	if (b.failed) {
		free(b.p);
		return -ENOMEM;
	}
	h.body_len = b.len - sizeof(h);
	h.sum = fnv1a(b.p + sizeof(h), h.body_len);
	memcpy(b.p, &h, sizeof(h));
	fd = memfd_create("ugpud-table", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0) {
		free(b.p);
		return -errno;
	}
	if (write(fd, b.p, b.len) != (ssize_t)b.len ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL))
		ret = -errno ? -errno : -EIO;
	free(b.p);
	snprintf(name, sizeof(name), NAME_PREFIX "table-%u-%" PRIu64, d->boot, h.seq);
	if (!ret)
		ret = notify_store(fd, name);
	close(fd);
	/* The replies go out after this: systemd must have the table (and the
	 * memfds stored before it) by then, since it attributes a message to
	 * the unit by its sender, who may be dead when it reads a late one. */
	if (!ret)
		ret = notify_barrier(BARRIER_MS);
	if (ret) {
		ugpud_log("fd store: the table was not stored: %s", strerror(-ret));
		return ret;
	}
	if (d->table_name[0])
		store_remove(d->table_name);
	snprintf(d->table_name, sizeof(d->table_name), "%s", name);
	d->table_seq = h.seq;
	for (size_t i = 0; i < d->ndrop; i++)
		store_remove(d->drop_names[i]);
	d->ndrop = 0;
	return 0;
}

static void sync_client(struct ugpud *d, struct client *c)
{
	/* A device's power step (on a worker) holds its BO manager's lock
	 * through each move: its clients' BOs are recorded after it (their
	 * requests wait for it too, loop.c), as they were when the step ran
	 * on the loop. */
	if (d->devs[c->device].pm_busy)
		return;
	for (uint32_t i = 0; i < c->nslots; i++)
		if (c->slots[i].kind == SLOT_BO && slot_sync(d, &c->slots[i]))
			d->persist_dirty = true;
}

/* The devices' move and eviction counts together: a change means some BO's
 * backing may have moved outside any request of ours. */
static uint64_t devices_moves(struct ugpud *d)
{
	uint64_t n = 0;

	for (unsigned int i = 0; i < d->ndevs; i++) {
		struct ugpu_device_mem m = { .size = sizeof(m) };

		if (d->devs[i].pm_busy)
			continue; /* its step holds its locks: after it (below) */
		if (!ugpu_device_mem_stats(d->devs[i].dev, &m))
			n += m.moves + m.evictions + m.bos + m.bos_lost;
	}
	return n;
}

void persist_sync(struct ugpud *d)
{
	uint64_t moves, now;

	if (!d->fd_store)
		return;
	/* Walk every BO only when something may have moved: a request that
	 * can move or make BOs (serve.c sets @persist_dirty), the devices'
	 * counters, or once a second whatever they say. */
	if (__atomic_exchange_n(&d->vram_wanted, 0, __ATOMIC_ACQ_REL))
		d->persist_dirty = true; /* a BO waits for held VRAM */
	moves = devices_moves(d);
	now = now_ms();
	if (!d->persist_dirty && moves == d->persist_moves && now < d->persist_walk_ms + 1000)
		return;
	/* after a BO that could not be recorded, a walk a second at most
	 * (each walk stores that BO's memfd again, and logs) */
	if (d->persist_unstored_ms && now < d->persist_unstored_ms + 1000)
		return;
	d->persist_moves = moves;
	d->persist_walk_ms = now;
	/* VRAM freed before this walk is written by no other BO until the
	 * table the walk makes is stored (mm/vram.h): the table before it may
	 * still name those blocks for a BO that moved out of them (a migrate
	 * on a worker, then another client's move into the blocks it left:
	 * a kill between them restored that BO with the other's bytes) */
	for (unsigned int i = 0; i < d->ndevs; i++)
		if (d->devs[i].vram_held && !d->devs[i].pm_busy)
			vram_held_seal(d->devs[i].dev);
	list_for_each(l, &d->clients)
		sync_client(d, list_entry(l, struct client, link));
	list_for_each(l, &d->detached)
		sync_client(d, list_entry(l, struct client, link));
	if (d->persist_store_failed) {
		d->persist_store_failed = false;
		d->persist_dirty = true;
		d->persist_unstored_ms = now;
		return; /* a BO's memfd is not stored: the old table stays */
	}
	d->persist_unstored_ms = 0;
	if (d->persist_dirty && !write_table(d))
		d->persist_dirty = false;
	if (d->persist_dirty)
		return; /* not stored: what is sealed stays held */
	for (unsigned int i = 0; i < d->ndevs; i++)
		if (d->devs[i].vram_held && !d->devs[i].pm_busy)
			vram_sealed_release(d->devs[i].dev);
}

static bool persist_vram_retry(struct ugpud *d, int ret, struct vram_tries *t)
{
	if (ret != -ERESTART || t->calls >= VRAM_RETRIES)
		return false; /* (an unrefused call is never -ERESTART) */
	d->persist_dirty = true;
	persist_sync(d);
	if (d->persist_dirty) {
		/* not stored: the held VRAM is the evicted BOs' only copy a
		 * restart can read; it stays held, and the call fails */
		if (++t->unstored < VRAM_UNSTORED)
			return true;
		ugpud_log("the restart table cannot be stored: a request that needs VRAM held for it "
			  "fails (-EAGAIN)");
		return false;
	}
	t->calls++;
	for (unsigned int i = 0; i < d->ndevs && t->calls < VRAM_RETRIES; i++) {
		/* a device in a power step is not walked (nor its VRAM
		 * released) until the step ends */
		if (d->devs[i].pm_busy && d->devs[i].vram_held) {
			ugpud_log("%s: VRAM held back for the restart table given to a BO (its power "
				  "step runs)", d->devs[i].uri);
			t->calls = VRAM_RETRIES;
		}
	}
	if (t->calls == VRAM_RETRIES)
		ugpud_log("a request was refused VRAM held for the restart table %u times: its next "
			  "call takes it", VRAM_RETRIES);
	return true;
}

/* mm/vram.h's @want: from any thread, the BO manager lock held. */
static void vram_want(void *arg)
{
	struct ugpud *d = arg;
	uint64_t one = 1;

	__atomic_store_n(&d->vram_wanted, 1, __ATOMIC_RELEASE);
	if (d->ev_fd >= 0 && write(d->ev_fd, &one, sizeof(one)) < 0) {
		/* the counter is at its most: the loop is woken already */
	}
}

/* ---- restore -------------------------------------------------------------- */

/* The index of @name among the handed-back fds, or -1. */
static int fd_named(const int *fds, char (*names)[64], int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0 && !strcmp(names[i], name))
			return i;
	return -1;
}

/* Copy @len bytes at @src_off of @src into @bo at @dst_off. */
static int copy_in(struct ugpu_bo *bo, uint64_t dst_off, int src, uint64_t src_off, uint64_t len,
		   unsigned char *tmp)
{
	while (len) {
		size_t n = len < COPY_CHUNK ? (size_t)len : COPY_CHUNK;
		ssize_t r = pread(src, tmp, n, (off_t)src_off);
		int ret;

		if (r != (ssize_t)n)
			return r < 0 ? -errno : -ENODATA;
		ret = ugpu_bo_write(bo, dst_off, tmp, n);
		if (ret)
			return ret;
		dst_off += n;
		src_off += n;
		len -= n;
	}
	return 0;
}

/* Make @o's BO again in @c's slot, its bytes from the stored memfds. */
static int restore_bo(struct ugpud *d, struct client *c, const struct tbl_bo *o,
		      const struct bo_extent *ext, int vram_fd, int *fds, char (*names)[64], int n,
		      bool *taken, unsigned char *tmp)
{
	struct ugpu_bo_opts opts = { .size = sizeof(opts), .bytes = o->bytes,
				     .placements = { (enum ugpu_placement)o->placements[0],
						     (enum ugpu_placement)o->placements[1] },
				     .flags = o->flags, .name = "ugpud-restored" };
	struct ugpud_slot *s = &c->slots[o->slot];
	bool mapped = (o->state & TBL_BO_MAPPED) && o->where == UGPU_PLACEMENT_SYSTEM;
	uint32_t pins = o->pins;
	bool detached = (o->state & TBL_BO_DETACHED) != 0;
	struct ugpu_bo *bo;
	uint64_t off = 0;
	bool *adopted = NULL;
	int src = -1, ret;

	if (o->where == UGPU_PLACEMENT_SYSTEM) {
		int i = fd_named(fds, names, n, o->store_name);

		if (i < 0)
			return -ENODATA;
		src = fds[i];
		adopted = &taken[i];
	} else if (o->where == UGPU_PLACEMENT_VRAM) {
		if (vram_fd < 0)
			return -ENODATA; /* the device's VRAM is not ours to read */
	} else {
		return -ENODATA; /* lost before the restart */
	}
	ret = ugpu_bo_create(d->devs[c->device].dev, &opts, &bo);
	if (ret)
		return ret;
	if (mapped) {
		/* the stored memfd is the client's mapping: the BO's memory
		 * from now on, not a copy (the client's stores since the
		 * kill are in it); held in system memory as by the map */
		ret = ugpu_bo_migrate(bo, UGPU_PLACEMENT_SYSTEM);
		if (!ret && *adopted)
			ret = -EEXIST; /* a second record of one memfd: not shared */
		if (!ret)
			ret = bo_sys_adopt(bo, src); /* and held */
		if (!ret)
			*adopted = true;
		if (ret) {
			ugpud_log("restore: client %u's mapped BO 0x%x cannot take its memfd (%s): "
				  "restored as a copy, which the client's mapping does not reach "
				  "(told at its resume; its requests are -ESTALE until it unmaps)",
				  c->id, (o->gen << 16) | (o->slot + 1), ugpu_strerror(ret));
			mapped = false;
			detached = true;
			ret = 0;
		}
	}
	if (mapped) {
		/* its bytes are there */
	} else if (o->where == UGPU_PLACEMENT_SYSTEM) {
		ret = copy_in(bo, 0, src, 0, o->bytes, tmp);
	} else {
		for (uint32_t i = 0; i < o->next && !ret && off < o->bytes; i++) {
			uint64_t len = ext[i].bytes;

			if (len > o->bytes - off)
				len = o->bytes - off;
			ret = copy_in(bo, off, vram_fd, ext[i].offset, len, tmp);
			off += len;
		}
		if (!ret && off < o->bytes)
			ret = -ENODATA;
	}
	for (uint32_t i = 0; i < o->pins && !ret; i++) {
		ret = ugpu_bo_pin(bo);
		if (ret && mapped) {
			/* held for the client's mapping, it cannot go where a
			 * pin would move it (its first placement, when a
			 * removal left it in system memory): kept, unpinned,
			 * rather than lost */
			ugpud_log("restore: client %u's mapped BO 0x%x: %u of %u pins restored (%s)",
				  c->id, (o->gen << 16) | (o->slot + 1), i, o->pins,
				  ugpu_strerror(ret));
			pins = i;
			ret = 0;
			break;
		}
	}
	if (ret) {
		ugpu_bo_put(bo);
		return ret;
	}
	memset(s, 0, sizeof(*s));
	s->kind = SLOT_BO;
	s->bo = bo;
	s->gen = (uint16_t)o->gen;
	s->bytes = o->bytes;
	s->vram_charge = o->vram_charge;
	s->placements[0] = o->placements[0];
	s->placements[1] = o->placements[1];
	s->flags = o->flags;
	s->pins = pins;
	s->mapped = mapped;
	s->map_detached = detached;
	s->persist_gen = UINT64_MAX;
	c->nobjs++;
	c->nbos++;
	c->bytes += o->bytes;
	c->vram_charged += o->vram_charge;
	return 0;
}

/* The table with the highest (boot, seq) that checks out, into @out. */
static int pick_table(int *fds, char (*names)[64], int n, unsigned char **out, size_t *len)
{
	uint32_t best_boot = 0;
	uint64_t best_seq = 0;
	int best = -1;

	for (int i = 0; i < n; i++) {
		unsigned int boot;
		unsigned long long seq;
		struct tbl_hdr h;

		if (sscanf(names[i], NAME_PREFIX "table-%u-%llu", &boot, &seq) != 2)
			continue;
		if (pread(fds[i], &h, sizeof(h), 0) != sizeof(h) || memcmp(h.magic, TABLE_MAGIC, 8) ||
		    h.body_len > (1ull << 32))
			continue;
		if (best < 0 || boot > best_boot || (boot == best_boot && seq > best_seq)) {
			unsigned char *p = malloc(sizeof(h) + h.body_len);

			if (!p)
				return -ENOMEM;
			if (pread(fds[i], p, sizeof(h) + h.body_len, 0) != (ssize_t)(sizeof(h) + h.body_len) ||
			    fnv1a(p + sizeof(h), h.body_len) != h.sum) {
				ugpud_log("fd store: %s is damaged; not used", names[i]);
				free(p);
				continue;
			}
			free(*out);
			*out = p;
			*len = sizeof(h) + h.body_len;
			best = i;
			best_boot = boot;
			best_seq = seq;
		}
	}
	return best;
}

static int restore(struct ugpud *d, int *fds, char (*names)[64], int n)
{
	unsigned char *t = NULL, *tmp;
	bool *taken;
	size_t len = 0, pos;
	struct tbl_hdr h;
	struct client *c = NULL;
	int vram_fd = -1;
	unsigned int sessions = 0, bos = 0, lost = 0;
	uint64_t t0 = now_us();
	int ret = pick_table(fds, names, n, &t, &len);

	if (ret < 0) {
		free(t);
		return ret == -ENOMEM ? ret : 0;
	}
	tmp = malloc(COPY_CHUNK);
	taken = calloc(n ? (size_t)n : 1, sizeof(*taken)); /* memfds adopted */
	if (!tmp || !taken) {
		free(tmp);
		free(taken);
		free(t);
		return -ENOMEM;
	}
	memcpy(&h, t, sizeof(h));
	/* past every boot any stored name carries, the table's and a restore
	 * that died before its own table: a name must never come back (a
	 * removal by name would take the new entry too) */
	d->boot = h.boot + 1;
	for (int i = 0; i < n; i++) {
		unsigned int a, b;

		if ((sscanf(names[i], NAME_PREFIX "vram-%u-%u", &a, &b) == 2 ||
		     sscanf(names[i], NAME_PREFIX "sys-%u-%u", &b, &a) == 2 ||
		     sscanf(names[i], NAME_PREFIX "table-%u-%u", &b, &a) == 2) &&
		    b >= d->boot)
			d->boot = b + 1;
	}
	pos = sizeof(h) + h.ndevs * sizeof(struct tbl_dev);
	while (pos + sizeof(uint32_t) <= len) {
		uint32_t kind;

		memcpy(&kind, t + pos, sizeof(kind));
		if (kind == REC_SESSION && pos + sizeof(struct tbl_session) <= len) {
			struct tbl_session r;
			struct tbl_dev td;
			struct ucred cred = { 0 };
			char vname[64];
			int vi;

			memcpy(&r, t + pos, sizeof(r));
			pos += sizeof(r);
			c = NULL;
			if (r.device >= d->ndevs || r.device >= h.ndevs || !r.nslots ||
			    r.nslots > UGPUD_HANDLE_SLOTS)
				continue;
			memcpy(&td, t + sizeof(h) + r.device * sizeof(td), sizeof(td));
			td.uri[sizeof(td.uri) - 1] = '\0';
			if (strcmp(td.uri, d->devs[r.device].uri)) {
				ugpud_log("restore: client %u used %s, which this ugpud does not serve "
					  "as device %u: its BOs are lost", r.id, td.uri, r.device);
				continue;
			}
			cred.uid = r.uid;
			c = client_new(d, -1, &cred);
			if (c)
				c->slots = calloc(r.nslots, sizeof(*c->slots));
			if (!c || !c->slots) {
				client_free(c);
				ret = -ENOMEM;
				break;
			}
			c->nslots = r.nslots;
			c->id = r.id;
			if (r.id > d->next_id)
				d->next_id = r.id;
			c->token = r.token;
			c->hello = true;
			c->device = r.device;
			memcpy(c->name, r.name, sizeof(c->name));
			c->name[sizeof(c->name) - 1] = '\0';
			c->io = NULL;
			list_add_tail(&d->detached, &c->link);
			d->ndetached++;
			sessions++;
			snprintf(vname, sizeof(vname), NAME_PREFIX "vram-%u-%u", r.device, h.boot);
			vi = fd_named(fds, names, n, vname);
			vram_fd = vi < 0 ? -1 : fds[vi];
		} else if (kind == REC_BO && pos + sizeof(struct tbl_bo) <= len) {
			struct tbl_bo o;
			const struct bo_extent *ext;

			memcpy(&o, t + pos, sizeof(o));
			pos += sizeof(o);
			ext = (const struct bo_extent *)(t + pos);
			if (o.next > (len - pos) / sizeof(*ext))
				break;
			pos += o.next * sizeof(*ext);
			if (!c || o.slot >= c->nslots || c->slots[o.slot].kind != SLOT_FREE)
				continue;
			o.store_name[sizeof(o.store_name) - 1] = '\0';
			ret = restore_bo(d, c, &o, ext, vram_fd, fds, names, n, taken, tmp);
			if (ret) {
				ugpud_log("restore: client %u's BO 0x%x (%" PRIu64 " bytes) is lost: %s",
					  c->id, (o.gen << 16) | (o.slot + 1), o.bytes,
					  ret == -ENODATA ? "its bytes were not in the fd store"
							  : ugpu_strerror(ret));
				c->slots[o.slot].gen = (uint16_t)o.gen; /* a later slot's handle moves on */
				lost++;
				ret = 0;
				continue;
			}
			bos++;
		} else {
			break;
		}
	}
	free(tmp);
	free(taken);
	free(t);
	ugpud_log("restored %u session(s) with %u BO(s) (%u lost) from boot %u's table in %llu ms",
		  sessions, bos, lost, h.boot, (unsigned long long)((now_us() - t0) / 1000));
	d->detached_deadline_ms = now_ms() + d->resume_timeout_ms;
	return ret;
}

int persist_start(struct ugpud *d, int *fds, char (*names)[64], int n)
{
	int ret = 0;

	d->boot = 1;
	if (d->fd_store && !getenv("NOTIFY_SOCKET")) {
		ugpud_log("--fd-store: no $NOTIFY_SOCKET (not under systemd): nothing is kept "
			  "over a restart");
		d->fd_store = false;
	}
	/* An embedded device's VRAM is what a restart reads BOs back from, and
	 * a D3cold wake overwrites it (as real VRAM loses its contents): a BO
	 * that runtime PM moved out for D3cold would be restored from poison
	 * if the daemon died before the next table. Such a device sleeps in
	 * D3hot only (its VRAM kept). */
	for (unsigned int i = 0; d->fd_store && i < d->ndevs; i++) {
		if (!d->devs[i].sim)
			continue;
		ret = ugpu_device_rpm_set_d3cold_threshold(d->devs[i].dev, 0);
		if (ret)
			return ret;
		ugpud_log("%s: --fd-store: runtime PM uses D3hot only (a restart reads this VRAM back)",
			  d->devs[i].uri);
	}
	if (d->fd_store)
		ret = restore(d, fds, names, n);
	else if (n)
		ugpud_log("%d stored fd(s) handed back without --fd-store: closed", n);
	if (d->fd_store) {
		for (unsigned int i = 0; i < d->ndevs && !ret; i++) {
			char name[64];
			int fd = d->devs[i].sim ? sim_vram_fd(d->devs[i].sim, 0) : -1;

			snprintf(name, sizeof(name), NAME_PREFIX "vram-%u-%u", i, d->boot);
			if (fd >= 0)
				ret = notify_store(fd, name);
		}
		/* VRAM a restart reads back (an embedded device's): frees are
		 * held back until the table no longer names them */
		for (unsigned int i = 0; i < d->ndevs && !ret; i++) {
			if (d->devs[i].sim) {
				vram_hold_frees(d->devs[i].dev, true);
				vram_hold_strict(d->devs[i].dev, vram_want, d);
				d->devs[i].vram_held = true;
				d->vram_retry = persist_vram_retry;
			}
		}
		d->persist_dirty = true;
		persist_sync(d);
		if (ret || d->persist_dirty) {
			ugpud_log("fd store: %s; nothing is kept over a restart",
				  ret ? strerror(-ret) : "the table was not stored");
			d->fd_store = false;
			for (unsigned int i = 0; i < d->ndevs; i++) {
				if (d->devs[i].vram_held) {
					vram_hold_strict(d->devs[i].dev, NULL, NULL);
					vram_hold_frees(d->devs[i].dev, false);
				}
				d->vram_retry = NULL;
				d->devs[i].vram_held = false;
			}
		}
	}
	/* the old entries go once ours are in (a kill before leaves both) */
	for (int i = 0; i < n; i++) {
		if (d->fd_store && !strncmp(names[i], NAME_PREFIX, strlen(NAME_PREFIX)))
			store_remove(names[i]);
		close(fds[i]);
	}
	return ret;
}

void persist_expire(struct ugpud *d)
{
	if (!d->ndetached || now_ms() < d->detached_deadline_ms)
		return;
	while (!list_empty(&d->detached)) {
		struct client *c = list_entry(d->detached.next, struct client, link);

		ugpud_log("client %u did not come back within %llu ms of the restart: releasing its "
			  "%u BOs", c->id, (unsigned long long)d->resume_timeout_ms, c->nbos);
		list_del(&c->link);
		client_release(d, c);
		client_free(c);
	}
	d->ndetached = 0;
	persist_sync(d);
}

void persist_stop(struct ugpud *d)
{
	char name[64];

	if (!d->fd_store)
		return;
	d->detached_deadline_ms = 0;
	persist_expire(d);
	persist_sync(d);
	for (unsigned int i = 0; i < d->ndevs; i++) {
		snprintf(name, sizeof(name), NAME_PREFIX "vram-%u-%u", i, d->boot);
		store_remove(name);
	}
	if (d->table_name[0])
		store_remove(d->table_name);
	d->table_name[0] = '\0';
}
