/* SPDX-License-Identifier: MIT */
/*
 * Intrusive doubly linked lists, one implementation for the whole driver
 * (base layer): a struct list_link in the object, a struct list_link as the
 * head. An unlinked link is either zeroed (calloc) or points to itself
 * (list_init(), and after list_del()); list_linked() tells both apart from a
 * linked one. Callers provide the locking (each list states its lock).
 */
#ifndef UGPU_BASE_LIST_H
#define UGPU_BASE_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list_link {
	struct list_link *next, *prev;
};

#define LIST_HEAD_INIT(name) { &(name), &(name) }

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#define list_entry(link, type, member) container_of(link, type, member)

static inline void list_init(struct list_link *l)
{
	l->next = l->prev = l;
}

/* On a list (not zeroed, not pointing to itself). */
static inline bool list_linked(const struct list_link *l)
{
	return l->next && l->next != l;
}

/* For a head: no entries. */
static inline bool list_empty(const struct list_link *h)
{
	return h->next == h;
}

static inline void list_add_tail(struct list_link *h, struct list_link *l)
{
	l->prev = h->prev;
	l->next = h;
	h->prev->next = l;
	h->prev = l;
}

static inline void list_add(struct list_link *h, struct list_link *l)
{
	l->next = h->next;
	l->prev = h;
	h->next->prev = l;
	h->next = l;
}

/* Unlink and point to itself (list_linked() is false afterwards). */
static inline void list_del(struct list_link *l)
{
	l->prev->next = l->next;
	l->next->prev = l->prev;
	list_init(l);
}

/* Move every entry of @from to the end of @to; @from ends empty. */
static inline void list_splice_tail(struct list_link *to, struct list_link *from)
{
	if (list_empty(from))
		return;
	from->next->prev = to->prev;
	to->prev->next = from->next;
	from->prev->next = to;
	to->prev = from->prev;
	list_init(from);
}

#define list_first(h) ((h)->next)

/* Iterate @pos (a struct list_link *) over @head; @pos must not be removed. */
#define list_for_each(pos, head) \
	for (struct list_link *pos = (head)->next; pos != (head); pos = pos->next)

/* The same where the loop may remove @pos. */
#define list_for_each_safe(pos, head)                                                 \
	for (struct list_link *pos = (head)->next, *pos##_next = pos->next; pos != (head); \
	     pos = pos##_next, pos##_next = pos->next)

#endif
