/* SPDX-License-Identifier: MIT */
/*
 * ugpud: a client's life — who may connect, its handle table, and the
 * release of everything it held when it goes (see ugpud.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "mm/bo.h"
#include "tools/ugpud/ugpud.h"

bool client_policy(const struct ugpud *d, const struct ucred *cred, const gid_t *groups,
		   int ngroups, char *why, size_t n)
{
	if (cred->uid == 0 || cred->uid == d->self_uid)
		return true;
	for (unsigned int i = 0; i < d->n_allow_uid; i++)
		if (cred->uid == d->allow_uid[i])
			return true;
	for (unsigned int i = 0; i < d->n_allow_gid; i++) {
		if (cred->gid == d->allow_gid[i])
			return true;
		for (int k = 0; k < ngroups; k++)
			if (groups[k] == d->allow_gid[i])
				return true;
	}
	snprintf(why, n,
		 "uid %u (pid %d) may not use this ugpud: it serves root, uid %u and the users "
		 "and groups of its --allow-user/--allow-group options",
		 (unsigned int)cred->uid, (int)cred->pid, (unsigned int)d->self_uid);
	return false;
}

struct client *client_new(struct ugpud *d, int fd, const struct ucred *cred)
{
	struct client *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->id = ++d->next_id;
	c->fd = fd;
	c->pid = cred->pid;
	c->uid = cred->uid;
	c->gid = cred->gid;
	c->admin = cred->uid == 0 || cred->uid == d->self_uid;
	c->wait_fd = -1;
	/* the session's token: only its own uid may resume it, and only by
	 * knowing it */
	while (!c->token)
		if (getrandom(&c->token, sizeof(c->token), 0) != sizeof(c->token))
			c->token = ((uint64_t)rand() << 32) ^ (uint64_t)rand() ^ (uint64_t)c->id;
	snprintf(c->name, sizeof(c->name), "?");
	list_init(&c->link);
	return c;
}

struct client *client_find(struct ugpud *d, uint32_t id)
{
	list_for_each(l, &d->clients) {
		struct client *c = list_entry(l, struct client, link);

		if (c->id == id)
			return c;
	}
	return NULL;
}

struct ugpud_slot *client_slot(struct client *c, uint32_t handle, enum slot_kind kind)
{
	uint32_t idx = handle & 0xffffu;
	struct ugpud_slot *s;

	if (!idx || idx > c->nslots)
		return NULL;
	s = &c->slots[idx - 1];
	if (s->kind != kind || s->gen != (uint16_t)(handle >> 16))
		return NULL;
	return s;
}

struct ugpud_slot *client_slot_new(struct ugpud *d, struct client *c, enum slot_kind kind,
				   uint32_t *handle, int *err)
{
	uint32_t i;

	if (c->nobjs >= d->max_bos) {
		*err = -EMFILE;
		return NULL;
	}
	if (c->nobjs == c->nslots) {
		uint32_t n = c->nslots ? c->nslots * 2 : 16;
		struct ugpud_slot *s;

		if (n > UGPUD_HANDLE_SLOTS)
			n = UGPUD_HANDLE_SLOTS;
		if (n <= c->nslots) {
			*err = -EMFILE;
			return NULL;
		}
		s = realloc(c->slots, n * sizeof(*s));
		if (!s) {
			*err = -ENOMEM;
			return NULL;
		}
		memset(s + c->nslots, 0, (n - c->nslots) * sizeof(*s));
		c->slots = s;
		c->nslots = n;
	}
	for (i = 0; i < c->nslots && c->slots[i].kind != SLOT_FREE; i++)
		;
	c->slots[i].kind = kind;
	c->slots[i].persist_gen = UINT64_MAX;
	c->slots[i].store_name[0] = '\0';
	c->slots[i].pins = 0;
	d->persist_dirty = true;
	c->slots[i].gen++; /* a handle of the slot's last object is stale now */
	c->nobjs++;
	*handle = ((uint32_t)c->slots[i].gen << 16) | (i + 1);
	return &c->slots[i];
}

int client_slot_add(struct ugpud *d, struct client *c, struct ugpu_bo *bo, uint64_t bytes,
		    uint64_t vram_charge, uint32_t *handle)
{
	int err = 0;
	struct ugpud_slot *s = client_slot_new(d, c, SLOT_BO, handle, &err);

	if (!s)
		return err;
	s->bo = bo;
	s->bytes = bytes;
	s->vram_charge = vram_charge;
	c->nbos++;
	c->bytes += bytes;
	c->vram_charged += vram_charge;
	return 0;
}

/* Keep @s's BO, which it held alone, for @c's next create of its shape,
 * or put it. */
static void pool_park(struct client *c, struct ugpud_slot *s)
{
	struct ugpu_bo *bo = s->bo;

	if (c->releasing || c->npool == UGPUD_POOL_MAX || s->pins || bo_recycle(bo, NULL)) {
		ugpu_bo_put(bo);
		return;
	}
	c->pool[c->npool++] = (struct pooled_bo){ .bo = bo, .bytes = s->bytes,
						  .placements = { s->placements[0], s->placements[1] },
						  .flags = s->flags };
}

struct ugpu_bo *client_pool_take(struct client *c, uint64_t bytes, const uint32_t placements[2],
				 uint32_t flags, const char *name)
{
	for (unsigned int i = c->npool; i-- > 0;) {
		struct pooled_bo p = c->pool[i];

		if (p.bytes != bytes || p.placements[0] != placements[0] ||
		    p.placements[1] != placements[1] || p.flags != flags)
			continue;
		c->pool[i] = c->pool[--c->npool];
		/* checked again: a removal may have changed it meanwhile */
		if (!bo_recycle(p.bo, name))
			return p.bo;
		ugpu_bo_put(p.bo);
	}
	return NULL;
}

int client_slot_drop(struct ugpud *d, struct client *c, struct ugpud_slot *s)
{
	int ret = 0;

	svm_slot_drop(c, s); /* a range's map, or a mirror VM's maps, first */
	switch (s->kind) {
	case SLOT_BO:
		if (s->mapped)
			bo_sys_release(s->bo);
		s->mapped = false;
		client_forget_store(d, s);
		free(s->ext);
		s->ext = NULL;
		s->ext_cap = 0;
		s->next = 0;
		pool_park(c, s);
		c->nbos--;
		c->bytes -= s->bytes;
		c->vram_charged -= s->vram_charge;
		d->released_bos++;
		break;
	case SLOT_VM:
		ret = ugpu_vm_destroy(s->vm);
		if (!ret) {
			svm_fwd_free(s->fwd);
			s->fwd = NULL;
		}
		break;
	case SLOT_QUEUE: {
		/* a mirror VM's kernels waiting on faults end first (svm.c) */
		struct fwd_vm *fv = svm_queue_closing(s->q, NULL);

		/* -ETIMEDOUT: its kernel did not end in time; the queue is
		 * freed when it does (include/ugpu/vm.h): gone for us either way */
		(void)ugpu_queue_destroy(s->q);
		if (fv)
			svm_queue_closing(NULL, fv);
		break;
	}
	case SLOT_FREE:
		return 0;
	}
	if (ret)
		return ret;
	s->kind = SLOT_FREE;
	d->persist_dirty = true;
	s->bo = NULL;
	s->vm = NULL;
	s->q = NULL;
	c->nobjs--;
	return 0;
}

void client_release(struct ugpud *d, struct client *c)
{
	if (c->wait_fd >= 0)
		close(c->wait_fd);
	c->wait_fd = -1;
	/* queues before their VMs, VMs (and their binds) before the BOs */
	static const enum slot_kind order[] = { SLOT_QUEUE, SLOT_VM, SLOT_BO };

	c->releasing = true;
	for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++)
		for (uint32_t i = 0; i < c->nslots; i++)
			if (c->slots[i].kind == order[k])
				client_slot_drop(d, c, &c->slots[i]);
	while (c->npool)
		ugpu_bo_put(c->pool[--c->npool].bo);
	free(c->slots);
	c->slots = NULL;
	c->nslots = 0;
}

void client_forget_store(struct ugpud *d, struct ugpud_slot *s)
{
	d->persist_dirty = true;
	if (!s->store_name[0])
		return;
	if (d->ndrop == d->drop_cap) {
		size_t n = d->drop_cap ? d->drop_cap * 2 : 16;
		char(*v)[64] = realloc(d->drop_names, n * sizeof(*v));

		if (!v) /* left in the store until the daemon stops: memory, not data */
			return;
		d->drop_names = v;
		d->drop_cap = n;
	}
	memcpy(d->drop_names[d->ndrop++], s->store_name, sizeof(s->store_name));
	s->store_name[0] = '\0';
}

int client_resume(struct ugpud *d, struct client *c, uint64_t token)
{
	list_for_each(l, &d->detached) {
		struct client *s = list_entry(l, struct client, link);

		if (s->token != token)
			continue;
		if (s->uid != c->uid)
			return -EACCES;
		list_del(&s->link);
		d->ndetached--;
		c->id = s->id;
		c->token = s->token;
		c->device = s->device;
		c->slots = s->slots;
		c->nslots = s->nslots;
		c->nobjs = s->nobjs;
		c->nbos = s->nbos;
		c->bytes = s->bytes;
		c->vram_charged = s->vram_charged;
		c->hello = true;
		client_free(s);
		d->persist_dirty = true;
		return 0;
	}
	return -ENOENT;
}

void client_free(struct client *c)
{
	free(c);
}
