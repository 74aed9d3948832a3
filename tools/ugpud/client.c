/* SPDX-License-Identifier: MIT */
/*
 * ugpud: a client's life — who may connect, its handle table, and the
 * release of everything it held when it goes (see ugpud.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

struct ugpud_slot *client_slot(struct client *c, uint32_t handle)
{
	uint32_t idx = handle & 0xffffu;
	struct ugpud_slot *s;

	if (!idx || idx > c->nslots)
		return NULL;
	s = &c->slots[idx - 1];
	if (!s->bo || s->gen != (uint16_t)(handle >> 16))
		return NULL;
	return s;
}

int client_slot_add(struct ugpud *d, struct client *c, struct ugpu_bo *bo, uint64_t bytes,
		    uint64_t vram_charge, uint32_t *handle)
{
	uint32_t i;

	if (c->nbos >= d->max_bos)
		return -EMFILE;
	if (c->nbos == c->nslots) {
		uint32_t n = c->nslots ? c->nslots * 2 : 16;
		struct ugpud_slot *s;

		if (n > UGPUD_HANDLE_SLOTS)
			n = UGPUD_HANDLE_SLOTS;
		if (n <= c->nslots)
			return -EMFILE;
		s = realloc(c->slots, n * sizeof(*s));
		if (!s)
			return -ENOMEM;
		memset(s + c->nslots, 0, (n - c->nslots) * sizeof(*s));
		c->slots = s;
		c->nslots = n;
	}
	for (i = 0; i < c->nslots && c->slots[i].bo; i++)
		;
	c->slots[i].bo = bo;
	c->slots[i].gen++; /* a handle of the slot's last BO is stale now */
	c->slots[i].bytes = bytes;
	c->slots[i].vram_charge = vram_charge;
	c->nbos++;
	c->bytes += bytes;
	c->vram_charged += vram_charge;
	*handle = ((uint32_t)c->slots[i].gen << 16) | (i + 1);
	return 0;
}

void client_slot_drop(struct ugpud *d, struct client *c, struct ugpud_slot *s)
{
	if (s->mapped)
		bo_sys_release(s->bo);
	s->mapped = false;
	ugpu_bo_put(s->bo);
	s->bo = NULL;
	c->nbos--;
	c->bytes -= s->bytes;
	c->vram_charged -= s->vram_charge;
	d->released_bos++;
}

void client_release(struct ugpud *d, struct client *c)
{
	for (uint32_t i = 0; i < c->nslots; i++)
		if (c->slots[i].bo)
			client_slot_drop(d, c, &c->slots[i]);
	free(c->slots);
	c->slots = NULL;
	c->nslots = 0;
}
