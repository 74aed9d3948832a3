// SPDX-License-Identifier: MIT
/*
 * The driver's own memory outside its heap (base/ownmem.h says why).
 */
#include "base/ownmem.h"

#include <link.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 4096ull
#define MAX_SEGS 8
/* Threads noted at once; past this a thread's stack goes unnoted (its
 * buffers may then move: the hang this module prevents becomes possible,
 * not likely). */
#define MAX_STACKS 256

struct span {
	uint64_t start, end;
};

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static struct span g_segs[MAX_SEGS]; /* written once under g_once */
static unsigned int g_nsegs;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct span g_stacks[MAX_STACKS]; /* under g_lock */
static unsigned int g_nstacks; /* under g_lock */
static pthread_key_t g_key; /* its destructor forgets a thread's stack */
static bool g_key_ok;

static _Thread_local bool tls_noted;

/* dl_iterate_phdr(): the object whose loaded segments hold this code. */
static int find_self(struct dl_phdr_info *info, size_t size, void *arg)
{
	uint64_t here = (uint64_t)(uintptr_t)arg;
	bool mine = false;

	(void)size;
	for (unsigned int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uint64_t s = info->dlpi_addr + ph->p_vaddr;

		if (ph->p_type == PT_LOAD && here >= s && here < s + ph->p_memsz)
			mine = true;
	}
	if (!mine)
		return 0;
	for (unsigned int i = 0; i < info->dlpi_phnum && g_nsegs < MAX_SEGS; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uint64_t s = info->dlpi_addr + ph->p_vaddr;

		if (ph->p_type == PT_LOAD && (ph->p_flags & PF_W))
			g_segs[g_nsegs++] = (struct span){ s & ~(PAGE - 1),
							   (s + ph->p_memsz + PAGE - 1) & ~(PAGE - 1) };
	}
	return 1;
}

static void forget_stack(void *p)
{
	struct span *sp = p;

	pthread_mutex_lock(&g_lock);
	for (unsigned int i = 0; i < g_nstacks; i++)
		if (g_stacks[i].start == sp->start && g_stacks[i].end == sp->end) {
			g_stacks[i] = g_stacks[--g_nstacks];
			break;
		}
	pthread_mutex_unlock(&g_lock);
	free(sp);
}

static void init_once(void)
{
	dl_iterate_phdr(find_self, (void *)(uintptr_t)&find_self);
	g_key_ok = pthread_key_create(&g_key, forget_stack) == 0;
}

/* The library unloaded (dlclose): threads that outlive it must not run a
 * destructor whose code is gone. */
__attribute__((destructor)) static void ownmem_unload(void)
{
	if (g_key_ok)
		pthread_key_delete(g_key);
	g_key_ok = false;
}

void ownmem_thread_note(void)
{
	pthread_attr_t at;
	struct span *sp;
	void *addr;
	size_t size;

	if (tls_noted)
		return;
	tls_noted = true;
	pthread_once(&g_once, init_once);
	if (pthread_getattr_np(pthread_self(), &at))
		return;
	if (pthread_attr_getstack(&at, &addr, &size)) {
		pthread_attr_destroy(&at);
		return;
	}
	pthread_attr_destroy(&at);
	sp = malloc(sizeof(*sp));
	if (!sp)
		return;
	*sp = (struct span){ (uint64_t)(uintptr_t)addr & ~(PAGE - 1),
			     ((uint64_t)(uintptr_t)addr + size + PAGE - 1) & ~(PAGE - 1) };
	pthread_mutex_lock(&g_lock);
	if (g_nstacks < MAX_STACKS)
		g_stacks[g_nstacks++] = *sp;
	pthread_mutex_unlock(&g_lock);
	/* the main thread never runs the destructor: its stack stays noted */
	if (!g_key_ok || pthread_setspecific(g_key, sp))
		free(sp);
}

bool ownmem_overlaps(uint64_t start, uint64_t end, const char **what)
{
	bool hit = false;

	pthread_once(&g_once, init_once);
	for (unsigned int i = 0; i < g_nsegs; i++)
		if (start < g_segs[i].end && g_segs[i].start < end) {
			if (what)
				*what = "the driver's .data/.bss";
			return true;
		}
	pthread_mutex_lock(&g_lock);
	for (unsigned int i = 0; i < g_nstacks && !hit; i++)
		hit = start < g_stacks[i].end && g_stacks[i].start < end;
	pthread_mutex_unlock(&g_lock);
	if (hit && what)
		*what = "the stack of a thread using the driver";
	return hit;
}
