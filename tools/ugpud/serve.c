/* SPDX-License-Identifier: MIT */
/*
 * ugpud: one request in, one reply out (see ugpud.h). No I/O here, so a
 * fuzz target drives it directly (tests/fuzz/fuzz_ugpud_request.c). Every
 * request gets a reply; a bad one gets an error and a one-line message that
 * names what was wrong, and the connection goes on (SOCK_SEQPACKET keeps
 * the stream in step whatever one record held).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <ugpu/ugpu.h>
#include <ugpu/stats.h>
#include <ugpu/unplug.h>

#include "mm/bo.h"
#include "tools/ugpud/ugpud.h"

/* BO flags a client may ask for: the driver's own kinds (KERNEL,
 * LATE_RESTORE) are not for clients. */
#define CLIENT_BO_FLAGS (UGPU_BO_PINNED | UGPU_BO_CPU_ACCESS | UGPU_BO_CONTIGUOUS | \
			 UGPU_BO_NO_RESTORE)

static size_t reply_hdr(void *rep, uint16_t op, uint32_t seq, int result, size_t body)
{
	struct ugpud_hdr h = {
		.magic = UGPUD_MAGIC,
		.op = op,
		.seq = seq,
		.result = result,
		.len = (uint32_t)body,
	};

	memcpy(rep, &h, sizeof(h));
	return sizeof(h) + body;
}

size_t serve_reply(void *rep, uint16_t op, uint32_t seq, int result, size_t body)
{
	return reply_hdr(rep, op, seq, result, body);
}

size_t serve_error(void *rep, uint16_t op, uint32_t seq, int err, const char *fmt, ...)
{
	char *msg = (char *)rep + sizeof(struct ugpud_hdr);
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, UGPUD_MAX_ERRMSG, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if (n >= (int)UGPUD_MAX_ERRMSG)
		n = UGPUD_MAX_ERRMSG - 1;
	return reply_hdr(rep, op ? op : UGPUD_HELLO, seq, err, (size_t)n + 1);
}

/* The body of a reply: right after its header. */
static void *rep_body(void *rep)
{
	return (char *)rep + sizeof(struct ugpud_hdr);
}

static void dev_info_wire(const struct ugpu_device_info *i, struct ugpud_dev_info *w)
{
	memset(w, 0, sizeof(*w));
	snprintf(w->name, sizeof(w->name), "%s", i->name);
	snprintf(w->transport, sizeof(w->transport), "%s", i->transport);
	snprintf(w->profile, sizeof(w->profile), "%s", i->profile);
	w->vendor_id = i->vendor_id;
	w->device_id = i->device_id;
	w->class_code = i->class_code;
	w->vram_size = i->vram_size;
	w->num_copy_engines = i->num_copy_engines;
	w->caps = i->caps;
	w->fabric_id = i->fabric_id;
	w->power_state = (uint32_t)i->power_state;
}

/* The answer to a hello or a resume of @c (its device chosen): the session
 * starts (@name: the program's, as the request gave it). */
/* @maps_detached: struct ugpud_hello_rep's (a resume's). */
static size_t hello_reply(struct ugpud *d, struct client *c, const struct ugpud_hdr *h,
			  const char *name, uint32_t maps_detached, void *rep)
{
	struct ugpud_hello_rep r = { .version = UGPUD_PROTO_VERSION, .maps_detached = maps_detached };
	struct ugpu_device_info info = { .size = sizeof(info) };
	int ret = ugpu_device_query(d->devs[c->device].dev, &info);

	if (ret)
		return serve_error(rep, h->op, h->seq, ret, "device %u cannot be queried: %s",
				   c->device, ugpu_strerror(ret));
	c->hello = true;
	memcpy(c->name, name, sizeof(c->name) - 1);
	c->name[sizeof(c->name) - 1] = '\0';
	for (char *p = c->name; *p; p++)
		if (*p < 0x20 || *p > 0x7e)
			*p = '?'; /* printed by ugpuctl: no control characters */
	r.client_id = c->id;
	r.devices = d->ndevs;
	r.vram_quota = d->vram_quota;
	dev_info_wire(&info, &r.info);
	memcpy(rep_body(rep), &r, sizeof(r));
	return reply_hdr(rep, h->op, h->seq, 0, sizeof(r));
}

static size_t do_hello(struct ugpud *d, struct client *c, const struct ugpud_hdr *h,
		       const void *body, void *rep)
{
	struct ugpud_hello_req req;

	if (c->hello)
		return serve_error(rep, h->op, h->seq, -EPROTO, "hello: this connection said hello already");
	if (h->len != sizeof(req))
		return serve_error(rep, h->op, h->seq, -EPROTO,
				   "hello: %u bytes of body, protocol %u's hello has %zu", h->len,
				   UGPUD_PROTO_VERSION, sizeof(req));
	memcpy(&req, body, sizeof(req));
	if (req.version != UGPUD_PROTO_VERSION)
		return serve_error(rep, h->op, h->seq, -EPROTONOSUPPORT,
				   "ugpud speaks protocol version %u; the client asked for %u",
				   UGPUD_PROTO_VERSION, req.version);
	if (req.device >= d->ndevs)
		return serve_error(rep, h->op, h->seq, -ENODEV,
				   "no device %u: this ugpud serves %u (numbered from 0)", req.device,
				   d->ndevs);
	c->device = req.device;
	return hello_reply(d, c, h, req.name, 0, rep);
}

/* UGPUD_RESUME: a connection takes its session back after a restart. */
static size_t do_resume(struct ugpud *d, struct client *c, const struct ugpud_hdr *h,
			const void *body, void *rep)
{
	struct ugpud_resume_req req;
	uint32_t detached = 0;
	int ret;

	if (c->hello)
		return serve_error(rep, h->op, h->seq, -EPROTO,
				   "resume: this connection has a session already");
	if (h->len != sizeof(req))
		return serve_error(rep, h->op, h->seq, -EPROTO, "resume: %u bytes of body, expected %zu",
				   h->len, sizeof(req));
	memcpy(&req, body, sizeof(req));
	if (req.version != UGPUD_PROTO_VERSION)
		return serve_error(rep, h->op, h->seq, -EPROTONOSUPPORT,
				   "ugpud speaks protocol version %u; the client asked for %u",
				   UGPUD_PROTO_VERSION, req.version);
	ret = client_resume(d, c, req.token);
	if (ret == -EACCES)
		return serve_error(rep, h->op, h->seq, ret,
				   "resume: that session belongs to another user");
	if (ret)
		return serve_error(rep, h->op, h->seq, ret,
				   "resume: no such session (not kept over the restart, or not "
				   "resumed in time)");
	for (uint32_t i = 0; i < c->nslots; i++)
		detached += c->slots[i].kind == SLOT_BO && c->slots[i].map_detached;
	return hello_reply(d, c, h, req.name, detached, rep);
}

static bool placements_have_vram(const struct ugpud_bo_create_req *req)
{
	if (!req->placements[0] && !req->placements[1])
		return true; /* none given: {VRAM, SYSTEM} */
	return req->placements[0] == UGPU_PLACEMENT_VRAM || req->placements[1] == UGPU_PLACEMENT_VRAM;
}

static size_t do_bo_create(struct ugpud *d, struct client *c, const struct ugpud_hdr *h,
			   const void *body, void *rep, int *rep_fd)
{
	struct ugpud_bo_create_req req;
	struct ugpud_bo_create_rep r = { 0 };
	struct ugpu_bo_info info = { .size = sizeof(info) };
	struct ugpu_bo_opts o = { .size = sizeof(o) };
	struct ugpu_bo *bo;
	char name[sizeof(req.name)];
	uint64_t bytes, charge;
	int ret;

	if (h->len != sizeof(req))
		return serve_error(rep, h->op, h->seq, -EINVAL, "bo create: %u bytes of body, expected %zu",
				   h->len, sizeof(req));
	memcpy(&req, body, sizeof(req));
	if (req.want & ~UGPUD_CREATE_FD)
		return serve_error(rep, h->op, h->seq, -EINVAL, "bo create: want 0x%x is not known",
				   req.want);
	if (req.flags & ~(uint32_t)CLIENT_BO_FLAGS)
		return serve_error(rep, h->op, h->seq, -EINVAL,
				   "bo create: flags 0x%x are not for clients (allowed: 0x%x)",
				   req.flags & ~(uint32_t)CLIENT_BO_FLAGS, CLIENT_BO_FLAGS);
	if (!req.bytes || req.bytes > (1ull << 48))
		return serve_error(rep, h->op, h->seq, -EINVAL,
				   "bo create: %llu bytes (1..2^48 allowed)", (unsigned long long)req.bytes);
	bytes = (req.bytes + 4095) & ~4095ull;
	charge = placements_have_vram(&req) ? bytes : 0;
	if (d->vram_quota && charge > d->vram_quota - c->vram_charged)
		return serve_error(rep, h->op, h->seq, -EDQUOT,
				   "bo create: %llu more bytes of VRAM-capable BOs pass client %u's quota "
				   "(%llu of %llu held)",
				   (unsigned long long)charge, c->id,
				   (unsigned long long)c->vram_charged,
				   (unsigned long long)d->vram_quota);
	if (c->nobjs >= d->max_bos)
		return serve_error(rep, h->op, h->seq, -EMFILE,
				   "bo create: client %u holds the most objects a client may (%u)",
				   c->id, d->max_bos);
	memcpy(name, req.name, sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	o.bytes = req.bytes;
	o.placements[0] = (enum ugpu_placement)req.placements[0];
	o.placements[1] = (enum ugpu_placement)req.placements[1];
	o.flags = req.flags;
	o.name = name;
	bo = client_pool_take(c, bytes, req.placements, req.flags, name);
	if (bo)
		ret = 0;
	else
		VRAM_CALL(d, ret, ugpu_bo_create(d->devs[c->device].dev, &o, &bo));
	if (ret)
		return serve_error(rep, h->op, h->seq, ret, "bo create: %s", ugpu_strerror(ret));
	ret = ugpu_bo_query(bo, &info);
	if (!ret)
		ret = client_slot_add(d, c, bo, info.bytes, charge ? info.bytes : 0, &r.handle);
	if (ret) {
		ugpu_bo_put(bo);
		return serve_error(rep, h->op, h->seq, ret, "bo create: %s", ugpu_strerror(ret));
	}
	{
		struct ugpud_slot *s = client_slot(c, r.handle, SLOT_BO);

		s->placements[0] = req.placements[0];
		s->placements[1] = req.placements[1];
		s->flags = req.flags;
		/* made in system memory: its memfd now, mapped as by
		 * UGPUD_BO_MAP (never a move for it; without one, the
		 * client's map asks) */
		if ((req.want & UGPUD_CREATE_FD) && info.placement == UGPU_PLACEMENT_SYSTEM &&
		    !bo_sys_export(bo, rep_fd, &bytes)) {
			s->mapped = true;
			r.got = UGPUD_CREATE_FD;
		}
	}
	r.bytes = info.bytes;
	memcpy(rep_body(rep), &r, sizeof(r));
	return reply_hdr(rep, h->op, h->seq, 0, sizeof(r));
}

/* UGPUD_BO_MAP's answer for the BO of @s (@handle): the BO's own memfd, in
 * system memory and held there (moved there first when it was not): the
 * client maps this BO's pages and nothing else. */
static size_t map_reply(struct ugpud_slot *s, uint16_t op, uint32_t seq, uint32_t handle,
			void *rep, int *rep_fd)
{
	struct ugpud_bo_map_rep m = { 0 };
	int fd, ret;

	ret = bo_sys_export(s->bo, &fd, &m.size);
	if (ret)
		return serve_error(rep, op, seq, ret, "BO 0x%x: %s", handle, ugpu_strerror(ret));
	if (s->mapped)
		bo_sys_release(s->bo); /* one hold per slot, however often mapped */
	s->mapped = true;
	*rep_fd = fd;
	memcpy(rep_body(rep), &m, sizeof(m));
	return reply_hdr(rep, op, seq, 0, sizeof(m));
}

/* A request that may copy the whole BO (PIN, MIGRATE, MAP of a BO in VRAM):
 * on a worker when there are any (0 returned: serve_job_done() answers),
 * else here. */
static size_t job_start(struct ugpud *d, struct client *c, const struct ugpud_hdr *h,
			const struct ugpud_bo_req *req, struct ugpu_bo *bo, void *rep, int *rep_fd)
{
	c->job = (struct ugpud_job){ .op = h->op, .seq = h->seq, .handle = req->handle,
				     .arg = req->arg, .bo = bo, .c = c };
	ugpu_bo_get(bo); /* the job's own: the client may go meanwhile */
	c->job_busy = true;
	if (d->offload) {
		d->offload(d, c);
		return 0;
	}
	job_run(&c->job);
	return serve_job_done(d, c, rep, rep_fd);
}

/* A request on a BO whose mapping the restart could not keep (struct
 * ugpud_slot @map_detached). */
static size_t map_detached_error(const struct client *c, const struct ugpud_hdr *h,
				 uint32_t handle, void *rep)
{
	return serve_error(rep, h->op, h->seq, -ESTALE,
			   "BO 0x%x: client %u's mapping from before the daemon's restart no "
			   "longer reaches it (not kept by the restart): unmap, then map again",
			   handle, c->id);
}

/* Requests about one BO (struct ugpud_bo_req). */
static size_t do_bo(struct ugpud *d, struct client *c, const struct ugpud_hdr *h,
		    const void *body, void *rep, int *rep_fd)
{
	struct ugpud_bo_req req;
	struct ugpud_slot *s;
	size_t data = h->len - sizeof(req);
	int ret = 0;

	if (h->len < sizeof(req) || (h->op != UGPUD_BO_WRITE && data))
		return serve_error(rep, h->op, h->seq, -EINVAL, "bo request: %u bytes of body, expected %zu",
				   h->len, sizeof(req));
	memcpy(&req, body, sizeof(req));
	s = client_slot(c, req.handle, SLOT_BO);
	if (!s)
		return serve_error(rep, h->op, h->seq, -ENOENT,
				   "client %u has no BO 0x%x (handles belong to their connection)", c->id,
				   req.handle);
	if (s->map_detached && h->op != UGPUD_BO_UNMAP && h->op != UGPUD_BO_QUERY &&
	    h->op != UGPUD_BO_DESTROY)
		return map_detached_error(c, h, req.handle, rep);
	switch (h->op) {
	case UGPUD_BO_DESTROY:
		client_slot_drop(d, c, s);
		break;
	case UGPUD_BO_READ:
		if (req.len > UGPUD_MAX_DATA)
			return serve_error(rep, h->op, h->seq, -EINVAL, "bo read: %llu bytes, the most is %u",
					   (unsigned long long)req.len, UGPUD_MAX_DATA);
		ret = ugpu_bo_read(s->bo, req.offset, rep_body(rep), (size_t)req.len);
		if (!ret)
			return reply_hdr(rep, h->op, h->seq, 0, (size_t)req.len);
		break;
	case UGPUD_BO_WRITE:
		if (req.len != data)
			return serve_error(rep, h->op, h->seq, -EINVAL,
					   "bo write: says %llu bytes, %zu came",
					   (unsigned long long)req.len, data);
		ret = ugpu_bo_write(s->bo, req.offset, (const char *)body + sizeof(req), data);
		break;
	case UGPUD_BO_QUERY: {
		struct ugpu_bo_info i = { .size = sizeof(i) };
		struct ugpud_bo_info w = { 0 };

		ret = ugpu_bo_query(s->bo, &i);
		if (ret)
			break;
		w.bytes = i.bytes;
		w.vram_offset = i.vram_offset;
		w.placement = (uint32_t)i.placement;
		w.flags = i.flags;
		w.pin_count = i.pin_count;
		w.discarded = i.discarded;
		w.corrupt = i.corrupt;
		w.cpu_mapped = i.cpu_mapped;
		w.lost = i.lost;
		w.has_backup = i.has_backup;
		memcpy(rep_body(rep), &w, sizeof(w));
		return reply_hdr(rep, h->op, h->seq, 0, sizeof(w));
	}
	case UGPUD_BO_MAP: {
		struct ugpu_bo_info i = { .size = sizeof(i) };

		/* In VRAM it first moves to system memory, a copy of the whole
		 * BO: on a worker, as a migrate (the loop and the device's
		 * other BOs go on; bo_sys_export() then finds it there). */
		/* A map the export refuses anyway (pinned, no SYSTEM
		 * placement) stays here too: the migrate would wake a
		 * sleeping device first (its runtime-PM hold), to refuse. */
		if (!d->offload || ugpu_bo_query(s->bo, &i) || i.placement != UGPU_PLACEMENT_VRAM ||
		    i.pin_count || !bo_placement_allowed(s->bo, UGPU_PLACEMENT_SYSTEM))
			return map_reply(s, h->op, h->seq, req.handle, rep, rep_fd);
		return job_start(d, c, h, &req, s->bo, rep, rep_fd);
	}
	case UGPUD_BO_PIN:
	case UGPUD_BO_MIGRATE:
		return job_start(d, c, h, &req, s->bo, rep, rep_fd);
	case UGPUD_BO_UNPIN:
		ret = ugpu_bo_unpin(s->bo);
		if (!ret && s->pins) {
			s->pins--;
			d->persist_dirty = true;
		}
		break;
	case UGPUD_BO_UNMAP:
		if (s->map_detached) {
			/* the client's mapping goes: the BO is coherent again */
			s->map_detached = false;
			d->persist_dirty = true;
			break;
		}
		if (!s->mapped)
			return serve_error(rep, h->op, h->seq, -EINVAL, "BO 0x%x is not mapped",
					   req.handle);
		bo_sys_release(s->bo);
		s->mapped = false;
		break;
	}
	if (ret)
		return serve_error(rep, h->op, h->seq, ret, "BO 0x%x: %s", req.handle,
				   ugpu_strerror(ret));
	return reply_hdr(rep, h->op, h->seq, 0, 0);
}

static size_t gate_refusal(struct ugpud *d, const struct client *c, uint16_t op, uint32_t seq,
			   void *rep);
static int pm_call(struct ugpu_device *dev, uint32_t action);
static void pm_done(struct ugpud *d, uint32_t device, uint32_t action, int ret);
static size_t pm_reply(void *rep, uint16_t op, uint32_t seq, uint32_t device, uint32_t action,
		       int ret);

static void job_call(struct ugpud_job *job);

void job_run(struct ugpud_job *job)
{
	/* a migrate or pin into VRAM: refused rather than handed VRAM the
	 * table still names (serve_job_done() writes it and runs the job
	 * again: VRAM_CALL()) */
	bool refuse = job->op != UGPUD_DEVICE_PM && job->tries.calls < VRAM_RETRIES;

	if (refuse)
		vram_refusing(true);
	job_call(job);
	if (refuse)
		vram_refusing(false);
}

static void job_call(struct ugpud_job *job)
{
	if (job->op == UGPUD_DEVICE_PM)
		job->result = pm_call(job->dev, job->arg);
	else if (job->op == UGPUD_BO_MIGRATE)
		job->result = ugpu_bo_migrate(job->bo, (enum ugpu_placement)job->arg);
	else if (job->op == UGPUD_BO_MAP) /* the export follows on the loop */
		job->result = ugpu_bo_migrate(job->bo, UGPU_PLACEMENT_SYSTEM);
	else
		job->result = ugpu_bo_pin(job->bo);
}

size_t serve_job_done(struct ugpud *d, struct client *c, void *rep, int *rep_fd)
{
	struct ugpud_job *j = &c->job;
	struct ugpud_slot *s;
	int ret = j->result;

	c->job_busy = false;
	/* VRAM held back for the table (vram_retry()): the job
	 * again once the table is written */
	while (j->op != UGPUD_DEVICE_PM && vram_retry(d, ret, &j->tries)) {
		c->job_busy = true;
		if (d->offload) {
			d->offload(d, c);
			return 0; /* answered when done again */
		}
		job_run(j);
		c->job_busy = false;
		ret = j->result;
	}
	j->tries = (struct vram_tries){ 0 };
	if (ret == -ERESTART)
		ret = -EAGAIN; /* the table could not be stored (VRAM_CALL()) */
	if (j->op == UGPUD_DEVICE_PM) {
		d->devs[j->handle].pm_busy = false;
		pm_done(d, j->handle, j->arg, ret);
		return pm_reply(rep, j->op, j->seq, j->handle, j->arg, ret);
	}
	s = client_slot(c, j->handle, SLOT_BO);
	d->persist_dirty = true; /* the BO may sit elsewhere now */
	if (j->op == UGPUD_BO_PIN && !ret) {
		if (s && s->bo == j->bo) {
			s->pins++;
			d->persist_dirty = true;
		} else { /* its slot went meanwhile (a kill): nobody to hold it */
			ugpu_bo_unpin(j->bo);
		}
	}
	ugpu_bo_put(j->bo);
	/* A map's move ended while the device began a power step (or was
	 * host-suspended by --logind): the export would wait on the loop for
	 * the step's lock (an eviction holds it through each move), so it is
	 * answered as the gate answers a map now (the BO stays in system
	 * memory, where the next try finds it). */
	if (j->op == UGPUD_BO_MAP && !ret) {
		size_t len = gate_refusal(d, c, j->op, j->seq, rep);

		if (!len && s && s->bo == j->bo)
			len = map_reply(s, j->op, j->seq, j->handle, rep, rep_fd);
		if (len) {
			j->bo = NULL;
			return len;
		}
		ret = -ENOENT; /* its slot went meanwhile (a kill) */
	}
	j->bo = NULL;
	if (ret)
		return serve_error(rep, j->op, j->seq, ret, "BO 0x%x: %s", j->handle,
				   ugpu_strerror(ret));
	return reply_hdr(rep, j->op, j->seq, 0, 0);
}

/* The body of @h must be exactly @n bytes: else an error reply (returned). */
#define BODY_IS(n, what)                                                                   \
	do {                                                                               \
		if (h->len != (n))                                                         \
			return serve_error(rep, h->op, h->seq, -EINVAL,                    \
					   "%s: %u bytes of body, expected %zu", what, h->len, \
					   (size_t)(n));                                           \
	} while (0)

/* @handle of @kind, or an error reply (returned). */
#define SLOT_OR_ENOENT(s, handle, kind, what)                                                \
	do {                                                                                 \
		(s) = client_slot(c, (handle), (kind));                                      \
		if (!(s))                                                                    \
			return serve_error(rep, h->op, h->seq, -ENOENT,                      \
					   "client %u has no %s 0x%x (handles belong to their " \
					   "connection)",                                            \
					   c->id, what, (handle));                                   \
	} while (0)

/* UGPUD_VM_CREATE, and UGPUD_SVM_VM_CREATE (a mirror VM: svm.c), whose
 * request starts as UGPUD_VM_CREATE's. */
static size_t do_vm_create(struct ugpud *d, struct client *c, const struct ugpud_hdr *h,
			   const void *body, void *rep, int *rep_fd)
{
	struct ugpud_svm_vm_create_req req = { 0 };
	struct ugpu_vm_opts o = { .size = sizeof(o) };
	struct ugpud_handle_rep r = { 0 };
	struct ugpud_slot *s;
	char name[sizeof(req.name)];
	bool mirror = h->op == UGPUD_SVM_VM_CREATE;
	int ret = 0;

	BODY_IS(mirror ? sizeof(req) : sizeof(struct ugpud_vm_create_req),
		mirror ? "mirror vm create" : "vm create");
	memcpy(&req, body, h->len);
	if (!(req.flags & UGPU_VM_MIRROR) != !mirror)
		return serve_error(rep, h->op, h->seq, mirror ? -EINVAL : -EOPNOTSUPP,
				   mirror ? "mirror vm create: UGPU_VM_MIRROR missing"
					  : "vm create: a mirror VM is op %u's", UGPUD_SVM_VM_CREATE);
	if (mirror && (req.want & ~UGPUD_SVM_FAULT_FD))
		return serve_error(rep, h->op, h->seq, -EINVAL,
				   "mirror vm create: want 0x%x is not known", req.want);
	memcpy(name, req.name, sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	o.flags = req.flags;
	o.name = name;
	o.mirror_start = req.mirror_start;
	o.mirror_size = req.mirror_size;
	s = client_slot_new(d, c, SLOT_VM, &r.handle, &ret);
	if (s) {
		VRAM_CALL(d, ret,
			  mirror ? svm_vm_create(d->devs[c->device].dev, &o, &s->vm, &s->fwd)
				 : ugpu_vm_create(d->devs[c->device].dev, &o, &s->vm));
		if (ret) {
			s->kind = SLOT_FREE;
			c->nobjs--;
		}
	}
	if (ret)
		return serve_error(rep, h->op, h->seq, ret, "vm create: %s", ugpu_strerror(ret));
	/* the VM's fault eventfd: the client polls it (none when the dup
	 * fails: it then serves faults inside its fence waits alone) */
	if (mirror && (req.want & UGPUD_SVM_FAULT_FD)) {
		*rep_fd = svm_fault_fd(s->fwd);
		if (*rep_fd >= 0)
			r.got = UGPUD_SVM_FAULT_FD;
	}
	memcpy(rep_body(rep), &r, sizeof(r));
	return reply_hdr(rep, h->op, h->seq, 0, sizeof(r));
}

/* UGPUD_FENCE_EVENTFD: the eventfd of a fence of the client's queue. */
static size_t do_fence_eventfd(struct ugpud *d, struct client *c, const struct ugpud_hdr *h,
			       const void *body, void *rep, int *rep_fd)
{
	struct ugpud_fence_req req;
	struct ugpud_slot *s;
	int ret, efd;

	(void)d;
	BODY_IS(sizeof(req), "fence eventfd");
	memcpy(&req, body, sizeof(req));
	if (req.timeout_ms)
		return serve_error(rep, h->op, h->seq, -EINVAL,
				   "fence eventfd: timeout_ms %u, expected 0", req.timeout_ms);
	SLOT_OR_ENOENT(s, req.queue, SLOT_QUEUE, "queue");
	ret = ugpu_fence_eventfd(s->q, req.fence, &efd);
	if (ret)
		return serve_error(rep, h->op, h->seq, ret, "fence eventfd: %s", ugpu_strerror(ret));
	*rep_fd = efd; /* sent with the reply, then closed here */
	return reply_hdr(rep, h->op, h->seq, 0, 0);
}

static size_t do_queue_create(struct ugpud *d, struct client *c, const struct ugpud_hdr *h,
			      const void *body, void *rep)
{
	struct ugpud_queue_create_req req;
	struct ugpu_queue_opts o = { .size = sizeof(o) };
	struct ugpud_handle_rep r = { 0 };
	struct ugpud_slot *vs, *s;
	struct ugpu_vm *vm;
	char name[sizeof(req.name)];
	int ret = 0;

	BODY_IS(sizeof(req), "queue create");
	memcpy(&req, body, sizeof(req));
	SLOT_OR_ENOENT(vs, req.vm, SLOT_VM, "VM");
	memcpy(name, req.name, sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	o.name = name;
	vm = vs->vm; /* a new slot may grow the table: @vs moves */
	s = client_slot_new(d, c, SLOT_QUEUE, &r.handle, &ret);
	if (s) {
		VRAM_CALL(d, ret, ugpu_queue_create(vm, &o, &s->q));
		if (ret) {
			s->kind = SLOT_FREE;
			c->nobjs--;
		}
	}
	if (ret)
		return serve_error(rep, h->op, h->seq, ret, "queue create: %s", ugpu_strerror(ret));
	memcpy(rep_body(rep), &r, sizeof(r));
	return reply_hdr(rep, h->op, h->seq, 0, sizeof(r));
}

/* The reply to a wait for @fence of @q if it has completed (its length),
 * or 0 when it has not (*@err 0) or the wait failed (*@err the -errno). */
static size_t fence_answer(struct ugpu_queue *q, uint64_t fence, uint16_t op, uint32_t seq,
			   void *rep, int *err)
{
	struct ugpu_kernel_result res = { .size = sizeof(res) };
	struct ugpud_kernel_result w = { 0 };
	int ret = ugpu_fence_wait(q, fence, 0, &res);

	*err = 0;
	if (ret == -EAGAIN || ret == -ETIMEDOUT)
		return 0;
	if (ret) {
		*err = ret;
		return 0;
	}
	w.status = res.status;
	w.fault_access = (uint32_t)res.fault_access;
	w.sum = res.sum;
	w.fault_va = res.fault_va;
	w.run_ns = res.run_ns;
	memcpy(rep_body(rep), &w, sizeof(w));
	return reply_hdr(rep, op, seq, 0, sizeof(w));
}

size_t serve_wait_done(struct ugpud *d, struct client *c, void *rep)
{
	struct ugpud_slot *s = client_slot(c, c->wait_queue, SLOT_QUEUE);
	size_t len = 0;
	int ret = -ENOENT;

	(void)d;
	close(c->wait_fd);
	c->wait_fd = -1;
	if (s)
		svm_wait_done(s->q);
	if (s) /* it cannot have gone: the client sent nothing since */
		len = fence_answer(s->q, c->wait_fence, c->wait_op, c->wait_seq, rep, &ret);
	if (len)
		return len;
	if (ret)
		return serve_error(rep, c->wait_op, c->wait_seq, ret, "%s", ugpu_strerror(ret));
	return reply_hdr(rep, c->wait_op, c->wait_seq, -EAGAIN, 0);
}

/* VMs and queues: everything but their creation. */
static size_t do_vm(struct ugpud *d, struct client *c, const struct ugpud_hdr *h,
		    const void *body, void *rep)
{
	struct ugpud_slot *s, *bs;
	int ret = 0;

	switch (h->op) {
	case UGPUD_VM_DESTROY:
	case UGPUD_VM_QUERY:
	case UGPUD_QUEUE_DESTROY:
	case UGPUD_QUEUE_QUERY: {
		struct ugpud_obj_req req;
		bool vm = h->op == UGPUD_VM_DESTROY || h->op == UGPUD_VM_QUERY;

		BODY_IS(sizeof(req), "request");
		memcpy(&req, body, sizeof(req));
		SLOT_OR_ENOENT(s, req.handle, vm ? SLOT_VM : SLOT_QUEUE, vm ? "VM" : "queue");
		if (h->op == UGPUD_VM_QUERY) {
			struct ugpu_vm_info i = { .size = sizeof(i) };
			struct ugpud_vm_info w = { 0 };

			ret = ugpu_vm_query(s->vm, &i);
			if (ret)
				break;
			w.binds = i.binds;
			w.bound_bytes = i.bound_bytes;
			w.page_tables = i.page_tables;
			w.page_table_bytes = i.page_table_bytes;
			w.pt_gen = i.pt_gen;
			w.flags = i.flags;
			w.queues = i.queues;
			w.dead = i.dead;
			memcpy(rep_body(rep), &w, sizeof(w));
			return reply_hdr(rep, h->op, h->seq, 0, sizeof(w));
		}
		if (h->op == UGPUD_QUEUE_QUERY) {
			struct ugpu_queue_info i = { .size = sizeof(i) };
			struct ugpud_queue_info w = { 0 };

			ret = ugpu_queue_query(s->q, &i);
			if (ret)
				break;
			w.submitted = i.submitted;
			w.completed = i.completed;
			w.waiting = i.waiting;
			w.running = i.running;
			memcpy(rep_body(rep), &w, sizeof(w));
			return reply_hdr(rep, h->op, h->seq, 0, sizeof(w));
		}
		ret = client_slot_drop(d, c, s);
		break;
	}
	case UGPUD_VM_BIND:
	case UGPUD_VM_UNBIND: {
		struct ugpud_vm_bind_req req;

		BODY_IS(sizeof(req), "bind");
		memcpy(&req, body, sizeof(req));
		SLOT_OR_ENOENT(s, req.vm, SLOT_VM, "VM");
		if (h->op == UGPUD_VM_UNBIND) {
			ret = ugpu_vm_unbind(s->vm, req.va, req.bytes);
			break;
		}
		SLOT_OR_ENOENT(bs, req.bo, SLOT_BO, "BO");
		if (bs->map_detached)
			return map_detached_error(c, h, req.bo, rep);
		VRAM_CALL(d, ret, ugpu_vm_bind(s->vm, bs->bo, req.bo_offset, req.va, req.bytes, req.flags));
		break;
	}
	case UGPUD_SUBMIT: {
		struct ugpud_submit_req req;
		struct ugpu_kernel k = { .size = sizeof(k) };
		struct ugpud_fence_rep r = { 0 };

		BODY_IS(sizeof(req), "submit");
		memcpy(&req, body, sizeof(req));
		SLOT_OR_ENOENT(s, req.queue, SLOT_QUEUE, "queue");
		k.op = (enum ugpu_kernel_op)req.op;
		k.va = req.va;
		k.bytes = req.bytes;
		k.value = req.value;
		ret = ugpu_queue_submit(s->q, &k, &r.fence);
		if (ret)
			break;
		memcpy(rep_body(rep), &r, sizeof(r));
		return reply_hdr(rep, h->op, h->seq, 0, sizeof(r));
	}
	case UGPUD_FENCE_WAIT: {
		struct ugpud_fence_req req;
		size_t len;
		int efd;

		BODY_IS(sizeof(req), "fence wait");
		memcpy(&req, body, sizeof(req));
		SLOT_OR_ENOENT(s, req.queue, SLOT_QUEUE, "queue");
		len = fence_answer(s->q, req.fence, h->op, h->seq, rep, &ret);
		if (len || !req.timeout_ms)
			return len ? len : reply_hdr(rep, h->op, h->seq, -EAGAIN, 0);
		/* pending: the loop watches its eventfd, never blocking (and
		 * a mirror VM's faults: svm.c) */
		ret = ugpu_fence_eventfd(s->q, req.fence, &efd);
		if (ret)
			break;
		ret = svm_wait_fd(s->q, efd, &c->wait_fd);
		if (ret) {
			close(efd);
			if (ret > 0)
				return reply_hdr(rep, h->op, h->seq, -EAGAIN, 0);
			break;
		}
		c->wait_ms = req.timeout_ms < UGPUD_WAIT_SLICE_MS ? req.timeout_ms
								   : UGPUD_WAIT_SLICE_MS;
		c->wait_op = h->op;
		c->wait_seq = h->seq;
		c->wait_queue = req.queue;
		c->wait_fence = req.fence;
		return 0;
	}
	}
	if (ret)
		return serve_error(rep, h->op, h->seq, ret, "%s", ugpu_strerror(ret));
	return reply_hdr(rep, h->op, h->seq, 0, 0);
}

/* Requests that need the device awake (refused while it is host-suspended):
 * not queries, not the ends of objects, not administration. */
static bool op_needs_device(uint16_t op)
{
	switch (op) {
	case UGPUD_BO_CREATE:
	case UGPUD_BO_READ:
	case UGPUD_BO_WRITE:
	case UGPUD_BO_PIN:
	case UGPUD_BO_UNPIN:
	case UGPUD_BO_MIGRATE:
	case UGPUD_BO_MAP:
	case UGPUD_VM_CREATE:
	case UGPUD_SVM_VM_CREATE:
	case UGPUD_SVM_MAP:
	case UGPUD_VM_BIND:
	case UGPUD_VM_UNBIND:
	case UGPUD_QUEUE_CREATE:
	case UGPUD_SUBMIT:
		return true;
	default:
		return false;
	}
}

/* The -EAGAIN of an op that needs @c's device while it is host-suspended or
 * in a power step (its length), or 0 when neither. */
static size_t gate_refusal(struct ugpud *d, const struct client *c, uint16_t op, uint32_t seq,
			   void *rep)
{
	if (d->devs[c->device].suspended)
		return serve_error(rep, op, seq, -EAGAIN,
				   "device %u is host-suspended: op %u waits for its resume (an event "
				   "says when)", c->device, op);
	if (d->devs[c->device].pm_busy)
		return serve_error(rep, op, seq, -EAGAIN,
				   "device %u is changing its power state: op %u, try again (an event "
				   "says when it is suspended)", c->device, op);
	return 0;
}

bool serve_must_wait(struct ugpud *d, const struct client *c, const void *msg, size_t len)
{
	struct ugpud_hdr h;

	if (!c->hello || !d->devs[c->device].pm_busy || len < sizeof(h))
		return false;
	memcpy(&h, msg, sizeof(h));
	switch (h.op) {
	case UGPUD_SESSION: /* the daemon's own state only */
	case UGPUD_CLIENTS:
	case UGPUD_KILL:
	case UGPUD_DEVICE_PM: /* -EBUSY (another device's: its own step) */
		return false;
	default:
		return !op_needs_device(h.op); /* those are -EAGAIN now */
	}
}

/* Requests after which a BO may sit elsewhere (or be new, or gone). */
static bool op_may_move(uint16_t op)
{
	switch (op) {
	case UGPUD_BO_READ:
	case UGPUD_BO_WRITE:
	case UGPUD_BO_QUERY:
	case UGPUD_DEV_QUERY:
	case UGPUD_MEM_STATS:
	case UGPUD_DEV_ACTIVITY:
	case UGPUD_VM_QUERY:
	case UGPUD_QUEUE_QUERY:
	case UGPUD_FENCE_WAIT:
	case UGPUD_FENCE_EVENTFD:
	case UGPUD_CLIENTS:
	case UGPUD_SESSION:
	case UGPUD_SVM_FAULTS:
		return false;
	default:
		return true;
	}
}

static void tell(struct ugpud *d, uint32_t device, uint32_t kind, uint32_t arg, int status)
{
	struct ugpud_event ev = { .kind = kind, .device = device, .arg = arg, .status = status };

	if (d->event)
		d->event(d, &ev);
}

/* The libugpu call of a power step (a worker's, or the loop's). */
static int pm_call(struct ugpu_device *dev, uint32_t action)
{
	switch (action) {
	case UGPUD_PM_PREPARE:
		return ugpu_device_suspend_prepare(dev);
	case UGPUD_PM_SUSPEND:
		return ugpu_device_suspend(dev);
	case UGPUD_PM_RESUME:
		return ugpu_device_resume(dev);
	case UGPUD_PM_CANCEL:
		return ugpu_device_suspend_cancel(dev);
	case UGPUD_PM_UNPLUG:
		/* the removal callback tells the clients (loop.c) */
		return ugpu_device_unplug(dev);
	default:
		return -EINVAL;
	}
}

/* The daemon's side of a power step that returned @ret: its gate and the
 * clients' events (loop thread). */
static void pm_done(struct ugpud *d, uint32_t device, uint32_t action, int ret)
{
	struct ugpud_dev *u = &d->devs[device];

	switch (action) {
	case UGPUD_PM_PREPARE:
		if (!ret)
			tell(d, device, UGPUD_EV_SUSPENDING, 0, 0);
		break;
	case UGPUD_PM_SUSPEND:
		/* a removal may have come while a worker ran the step (the
		 * loop told it already): a removed device is not suspended */
		if (!ret && !__atomic_load_n(&u->removed, __ATOMIC_ACQUIRE)) {
			u->suspended = true;
			tell(d, device, UGPUD_EV_SUSPENDED, 0, 0);
		}
		break;
	case UGPUD_PM_RESUME:
		if (!ret || ret == -EBADMSG) { /* -EBADMSG: resumed, a backup was damaged */
			u->suspended = false;
			u->sleep_ours = false;
			tell(d, device, UGPUD_EV_RESUMED, 0, ret);
		}
		break;
	case UGPUD_PM_CANCEL:
		if (!ret)
			tell(d, device, UGPUD_EV_RESUMED, 0, 0);
		break;
	default:
		break;
	}
}

int serve_pm_step(struct ugpud *d, uint32_t device, uint32_t action)
{
	int ret;

	if (d->devs[device].pm_busy)
		return -EBUSY; /* an administrator's step runs on a worker */
	ret = pm_call(d->devs[device].dev, action);
	pm_done(d, device, action, ret);
	return ret;
}

/* The answer to a power step of @device that returned @ret. */
static size_t pm_reply(void *rep, uint16_t op, uint32_t seq, uint32_t device, uint32_t action,
		       int ret)
{
	if (ret == -EINVAL && (action < UGPUD_PM_PREPARE || action > UGPUD_PM_UNPLUG))
		return serve_error(rep, op, seq, -EINVAL,
				   "device pm: action %u (1 prepare, 2 suspend, 3 resume, 4 cancel, "
				   "5 unplug)", action);
	if (ret)
		return serve_error(rep, op, seq, ret, "device %u: %s", device, ugpu_strerror(ret));
	return reply_hdr(rep, op, seq, 0, 0);
}

/* UGPUD_DEVICE_PM: one step of a host-suspend cycle, or a removal, for every
 * client of the device. On a worker when there are workers: a prepare waits
 * up to 5 s for the device's kernels, and on the loop it held up every
 * client of every device that long (found by fuzz_ugpud_request). The
 * device's own clients get -EAGAIN for what needs it meanwhile. */
static size_t do_device_pm(struct ugpud *d, struct client *c, const struct ugpud_hdr *h,
			   const void *body, void *rep)
{
	struct ugpud_device_pm_req req;
	struct ugpud_dev *u;

	if (h->len != sizeof(req))
		return serve_error(rep, h->op, h->seq, -EINVAL, "device pm: %u bytes of body, expected %zu",
				   h->len, sizeof(req));
	memcpy(&req, body, sizeof(req));
	if (req.device >= d->ndevs)
		return serve_error(rep, h->op, h->seq, -ENODEV, "device pm: no device %u", req.device);
	u = &d->devs[req.device];
	if (u->pm_busy)
		return serve_error(rep, h->op, h->seq, -EBUSY,
				   "device %u: another power step is under way", req.device);
	if (d->offload && req.action >= UGPUD_PM_PREPARE && req.action <= UGPUD_PM_UNPLUG) {
		c->job = (struct ugpud_job){ .op = h->op, .seq = h->seq, .handle = req.device,
					     .arg = req.action, .dev = u->dev, .c = c };
		c->job_busy = true;
		u->pm_busy = true;
		d->offload(d, c);
		return 0;
	}
	return pm_reply(rep, h->op, h->seq, req.device, req.action,
			serve_pm_step(d, req.device, req.action));
}

/* A counter of @dev by name; 0 when it has none (no GPU VM: no SVM). */
static uint64_t stat_of(struct ugpu_device *dev, const char *name)
{
	struct ugpu_stat st = { .size = sizeof(st) };

	return ugpu_device_stat_find(dev, name, &st) ? 0 : st.value;
}

static size_t do_dev_activity(struct ugpud *d, struct client *c, const struct ugpud_hdr *h,
			      void *rep)
{
	struct ugpu_device *dev = d->devs[c->device].dev;
	struct ugpud_dev_activity w = { 0 };

	if (h->len)
		return serve_error(rep, h->op, h->seq, -EINVAL, "activity: %u bytes of body, expected 0",
				   h->len);
	list_for_each(l, &d->clients) {
		const struct client *o = list_entry(l, struct client, link);

		if (o->device != c->device)
			continue;
		for (uint32_t i = 0; i < o->nslots; i++) {
			w.vms += o->slots[i].kind == SLOT_VM;
			w.queues += o->slots[i].kind == SLOT_QUEUE;
		}
	}
	w.svm_faults = stat_of(dev, "svm_pagefault_count");
	w.svm_migrations = stat_of(dev, "svm_4K_migrate_count") + stat_of(dev, "svm_64K_migrate_count") +
			   stat_of(dev, "svm_2M_migrate_count");
	w.svm_cpu_faults = stat_of(dev, "svm_cpu_fault_count");
	w.svm_vram_bytes = stat_of(dev, "svm_vram_bytes");
	memcpy(rep_body(rep), &w, sizeof(w));
	return reply_hdr(rep, h->op, h->seq, 0, sizeof(w));
}

static size_t do_mem_stats(struct ugpud *d, struct client *c, const struct ugpud_hdr *h, void *rep)
{
	struct ugpu_device_mem m = { .size = sizeof(m) };
	struct ugpud_mem w = { 0 };
	int ret = ugpu_device_mem_stats(d->devs[c->device].dev, &m);

	if (ret)
		return serve_error(rep, h->op, h->seq, ret, "mem stats: %s", ugpu_strerror(ret));
	w.vram_size = m.vram_size;
	w.vram_used = m.vram_used;
	w.vram_free = m.vram_free;
	w.vram_kernel = m.vram_kernel;
	w.vram_bos = m.vram_bos;
	w.system_bytes = m.system_bytes;
	w.backup_bytes = m.backup_bytes;
	w.bos = m.bos;
	w.bos_vram = m.bos_vram;
	w.bos_system = m.bos_system;
	w.bos_lost = m.bos_lost;
	w.evictions = m.evictions;
	w.evicted_bytes = m.evicted_bytes;
	w.moves = m.moves;
	w.moved_bytes = m.moved_bytes;
	w.copy_failures = m.copy_failures;
	w.client_bos = c->nbos;
	w.client_bytes = c->bytes;
	w.client_vram_charged = c->vram_charged;
	w.client_vram_quota = d->vram_quota;
	memcpy(rep_body(rep), &w, sizeof(w));
	return reply_hdr(rep, h->op, h->seq, 0, sizeof(w));
}

static size_t do_clients(struct ugpud *d, const struct ugpud_hdr *h, void *rep)
{
	/* the body is written with memcpy: @rep need not be aligned for it */
	char *body = rep_body(rep);
	struct ugpud_clients_rep r = { .total = d->nclients };
	uint32_t n = 0;

	list_for_each(l, &d->clients) {
		const struct client *o = list_entry(l, struct client, link);
		struct ugpud_client_info ci = { 0 };

		if (n == UGPUD_MAX_CLIENT_INFO)
			break;
		ci.id = o->id;
		ci.pid = (uint32_t)o->pid;
		ci.uid = o->uid;
		ci.gid = o->gid;
		ci.device = o->device;
		ci.bos = o->nbos;
		ci.bytes = o->bytes;
		ci.vram_charged = o->vram_charged;
		ci.requests = o->requests;
		memcpy(ci.name, o->name, sizeof(ci.name));
		memcpy(body + sizeof(r) + n * sizeof(ci), &ci, sizeof(ci));
		n++;
	}
	r.count = n;
	memcpy(body, &r, sizeof(r));
	return reply_hdr(rep, h->op, h->seq, 0, sizeof(r) + n * sizeof(struct ugpud_client_info));
}

size_t serve_request(struct ugpud *d, struct client *c, const void *msg, size_t len,
		     bool oversized, int nfds, void *rep, int *rep_fd)
{
	struct ugpud_hdr h;
	const void *body = (const char *)msg + sizeof(h);

	*rep_fd = -1;
	c->requests++;
	if (len < sizeof(h))
		return serve_error(rep, 0, 0, -EPROTO, "a record of %zu bytes: shorter than the header (%zu)",
				   len, sizeof(h));
	memcpy(&h, msg, sizeof(h));
	if (h.magic != UGPUD_MAGIC)
		return serve_error(rep, h.op, h.seq, -EPROTO, "bad magic 0x%08x (not a ugpud client?)",
				   h.magic);
	if (oversized)
		return serve_error(rep, h.op, h.seq, -EMSGSIZE, "a record of %zu bytes: the most is %zu",
				   len, UGPUD_MAX_MSG);
	if (h.len != len - sizeof(h) || h.flags || h.result)
		return serve_error(rep, h.op, h.seq, -EPROTO,
				   "malformed header: len %u for %zu bytes of body, flags 0x%x, result %d",
				   h.len, len - sizeof(h), h.flags, h.result);
	if (nfds)
		return serve_error(rep, h.op, h.seq, -EINVAL,
				   "%d fds came with a request: no request takes any (closed)", nfds);
	/* what may move or make BOs: the restart record looks (persist.c) */
	if (op_may_move(h.op))
		d->persist_dirty = true;
	if (h.op == UGPUD_RESUME)
		return do_resume(d, c, &h, body, rep);
	if (!c->hello && h.op != UGPUD_HELLO)
		return serve_error(rep, h.op, h.seq, -EPROTO, "op %u before hello: say hello first", h.op);
	if (op_needs_device(h.op)) {
		size_t len = gate_refusal(d, c, h.op, h.seq, rep);

		if (len)
			return len;
	}
	switch (h.op) {
	case UGPUD_HELLO:
		return do_hello(d, c, &h, body, rep);
	case UGPUD_DEV_QUERY: {
		struct ugpu_device_info info = { .size = sizeof(info) };
		struct ugpud_dev_info w;
		int ret = ugpu_device_query(d->devs[c->device].dev, &info);

		if (ret)
			return serve_error(rep, h.op, h.seq, ret, "query: %s", ugpu_strerror(ret));
		dev_info_wire(&info, &w);
		memcpy(rep_body(rep), &w, sizeof(w));
		return reply_hdr(rep, h.op, h.seq, 0, sizeof(w));
	}
	case UGPUD_MEM_STATS:
		return do_mem_stats(d, c, &h, rep);
	case UGPUD_DEV_ACTIVITY:
		return do_dev_activity(d, c, &h, rep);
	case UGPUD_SESSION: {
		/* 0 without --fd-store: nothing to resume after a restart, so
		 * the client does not try */
		struct ugpud_session_rep r = { .token = d->fd_store ? c->token : 0 };

		if (h.len)
			return serve_error(rep, h.op, h.seq, -EINVAL, "session: %u bytes of body, expected 0",
					   h.len);
		memcpy(rep_body(rep), &r, sizeof(r));
		return reply_hdr(rep, h.op, h.seq, 0, sizeof(r));
	}
	case UGPUD_BO_CREATE:
		return do_bo_create(d, c, &h, body, rep, rep_fd);
	case UGPUD_BO_DESTROY:
	case UGPUD_BO_READ:
	case UGPUD_BO_WRITE:
	case UGPUD_BO_QUERY:
	case UGPUD_BO_PIN:
	case UGPUD_BO_UNPIN:
	case UGPUD_BO_MIGRATE:
	case UGPUD_BO_MAP:
	case UGPUD_BO_UNMAP:
		return do_bo(d, c, &h, body, rep, rep_fd);
	case UGPUD_VM_CREATE:
	case UGPUD_SVM_VM_CREATE:
		return do_vm_create(d, c, &h, body, rep, rep_fd);
	case UGPUD_QUEUE_CREATE:
		return do_queue_create(d, c, &h, body, rep);
	case UGPUD_FENCE_EVENTFD:
		return do_fence_eventfd(d, c, &h, body, rep, rep_fd);
	case UGPUD_VM_DESTROY:
	case UGPUD_VM_BIND:
	case UGPUD_VM_UNBIND:
	case UGPUD_VM_QUERY:
	case UGPUD_QUEUE_DESTROY:
	case UGPUD_SUBMIT:
	case UGPUD_FENCE_WAIT:
	case UGPUD_QUEUE_QUERY:
		return do_vm(d, c, &h, body, rep);
	case UGPUD_SVM_FAULTS:
	case UGPUD_SVM_FAULT_DONE:
	case UGPUD_SVM_MAP:
	case UGPUD_SVM_UNMAP:
		return svm_serve(d, c, &h, body, rep);
	case UGPUD_DEVICE_PM:
		if (!c->admin)
			return serve_error(rep, h.op, h.seq, -EPERM,
					   "suspend, resume and removal are for root and ugpud's own user");
		return do_device_pm(d, c, &h, body, rep);
	case UGPUD_CLIENTS:
	case UGPUD_KILL:
		if (!c->admin)
			return serve_error(rep, h.op, h.seq, -EPERM,
					   "listing and killing clients is for root and ugpud's own user");
		if (h.op == UGPUD_CLIENTS)
			return do_clients(d, &h, rep);
		if (h.len != sizeof(struct ugpud_kill_req))
			return serve_error(rep, h.op, h.seq, -EINVAL, "kill: %u bytes of body, expected %zu",
					   h.len, sizeof(struct ugpud_kill_req));
		{
			struct ugpud_kill_req k;
			struct client *victim;

			memcpy(&k, body, sizeof(k));
			victim = client_find(d, k.id);
			if (!victim)
				return serve_error(rep, h.op, h.seq, -ESRCH, "kill: no client %u", k.id);
			d->kill(d, victim);
		}
		return reply_hdr(rep, h.op, h.seq, 0, 0);
	default:
		return serve_error(rep, h.op, h.seq, -EOPNOTSUPP,
				   "op %u is not a request of protocol %u", h.op, UGPUD_PROTO_VERSION);
	}
}
