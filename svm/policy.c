/* SPDX-License-Identifier: MIT */
/*
 * Shared virtual memory: advice (include/ugpu/svm.h, docs/svm.md
 * "Policy"). What a program says about spans of its memory is kept as a
 * sorted list of spans (struct attr_span, under svm->lock) with the
 * defaults everywhere else: advising part of a span splits it, neighbours
 * that end up equal merge, an unmap resets what it covers. A range never
 * crosses a change of advice (svm/fault.c asks attr_uniform_locked() when
 * it sizes one), so each range has one policy.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <ugpu/svm.h>
#include <ugpu/vm.h>

#include "src/remote.h"
#include "base/log.h"
#include "mm/bo.h"
#include "mm/uffd.h"
#include "mm/vm.h"
#include "mm/vm_remote.h"
#include "src/device.h"
#include "svm/svm.h"

static const struct svm_attrs attrs_default = {
	.pref = SVM_PREF_DEFAULT,
	.migration = UGPU_SVM_MIGRATE_ALL_PAGES,
	.atomic = UGPU_SVM_ATOMIC_UNDEFINED,
	.last_prefetch = UGPU_SVM_LOC_NONE,
};

/* Same policy (what decides where pages go and how they are mapped). */
static bool policy_eq(const struct svm_attrs *a, const struct svm_attrs *b)
{
	return a->pref == b->pref && a->migration == b->migration && a->atomic == b->atomic &&
	       a->read_mostly == b->read_mostly && a->accessed_by == b->accessed_by;
}

static bool attrs_eq(const struct svm_attrs *a, const struct svm_attrs *b)
{
	return policy_eq(a, b) && a->last_prefetch == b->last_prefetch;
}

/* Index of the first span that ends after @addr. Lock held. */
static size_t span_lower(struct svm *s, uint64_t addr)
{
	size_t lo = 0, hi = s->nas;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (s->as[mid].end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The advice at @addr; *@end (may be NULL): where it stops being the same
 * (UINT64_MAX past the last span). Lock held. */
void attr_get_locked(struct svm *s, uint64_t addr, struct svm_attrs *a, uint64_t *end)
{
	size_t i = span_lower(s, addr);

	if (i < s->nas && s->as[i].start <= addr) {
		*a = s->as[i].a;
		if (end)
			*end = s->as[i].end;
		return;
	}
	*a = attrs_default;
	if (end)
		*end = i < s->nas ? s->as[i].start : UINT64_MAX;
}

/* One policy over [start, end) (a range may be made there). Lock held. */
bool attr_uniform_locked(struct svm *s, uint64_t start, uint64_t end)
{
	struct svm_attrs first, a;
	uint64_t at = start, e;

	attr_get_locked(s, at, &first, &e);
	while (e < end) {
		at = e;
		attr_get_locked(s, at, &a, &e);
		if (!policy_eq(&a, &first))
			return false;
	}
	return true;
}

/*
 * Apply @fn to the advice over [start, end), splitting the spans at its
 * edges and filling the gaps with the defaults first; then drop the spans
 * left at the defaults and merge equal neighbours. Lock held (no wait:
 * the handler thread calls this for unmaps). -ENOMEM leaves the list as
 * it was.
 */
static int attr_apply_locked(struct svm *s, uint64_t start, uint64_t end,
			     void (*fn)(struct svm_attrs *, const void *), const void *arg)
{
	struct attr_span *n = malloc((2 * s->nas + 3) * sizeof(*n));
	size_t i, k = 0, out = 0;
	uint64_t at = start;

	if (!n)
		return -ENOMEM;
	for (i = 0; i < s->nas && s->as[i].end <= start; i++)
		n[k++] = s->as[i];
	if (i < s->nas && s->as[i].start < start) /* straddles @start */
		n[k++] = (struct attr_span){ s->as[i].start, start, s->as[i].a };
	for (; i < s->nas && s->as[i].start < end; i++) {
		struct attr_span *o = &s->as[i];
		uint64_t lo = o->start > start ? o->start : start;
		uint64_t hi = o->end < end ? o->end : end;

		if (at < lo) {
			n[k] = (struct attr_span){ at, lo, attrs_default };
			fn(&n[k++].a, arg);
		}
		n[k] = (struct attr_span){ lo, hi, o->a };
		fn(&n[k++].a, arg);
		at = hi;
		if (o->end > end) { /* straddles @end */
			n[k++] = (struct attr_span){ end, o->end, o->a };
			i++;
			break;
		}
	}
	if (at < end) {
		n[k] = (struct attr_span){ at, end, attrs_default };
		fn(&n[k++].a, arg);
	}
	for (; i < s->nas; i++)
		n[k++] = s->as[i];
	/* normalise */
	for (i = 0; i < k; i++) {
		if (attrs_eq(&n[i].a, &attrs_default))
			continue;
		if (out && n[out - 1].end == n[i].start && attrs_eq(&n[out - 1].a, &n[i].a))
			n[out - 1].end = n[i].end;
		else
			n[out++] = n[i];
	}
	free(s->as);
	s->as = n;
	s->nas = out;
	return 0;
}

static void set_default(struct svm_attrs *a, const void *arg)
{
	(void)arg;
	*a = attrs_default;
}

/* The process unmapped [start, end) (the handler thread): its advice goes.
 * Lock held. */
void attr_reset_locked(struct svm *s, uint64_t start, uint64_t end)
{
	size_t i = span_lower(s, start);

	if (i >= s->nas || s->as[i].start >= end)
		return; /* nothing advised there */
	if (attr_apply_locked(s, start, end, set_default, NULL))
		log_err(s->ctx, "svm: out of memory resetting the advice on [0x%" PRIx64 ", 0x%" PRIx64 "): memory mapped there later inherits it",
			start, end);
}

static void set_prefetch(struct svm_attrs *a, const void *arg)
{
	a->last_prefetch = *(const uint8_t *)arg;
}

int attr_set_prefetch_locked(struct svm *s, uint64_t start, uint64_t end, uint8_t loc)
{
	return attr_apply_locked(s, start, end, set_prefetch, &loc);
}

/* ---- ugpu_svm_advise() ------------------------------------------------------------ */

struct advice {
	enum ugpu_svm_attr attr;
	uint32_t value;
	unsigned int id; /* ACCESSED_BY, PREFERRED_LOC DEVICE: whose */
	bool explicit_dev; /* PREFERRED_LOC DEVICE named a device */
};

static void set_advice(struct svm_attrs *a, const void *arg)
{
	const struct advice *v = arg;

	switch (v->attr) {
	case UGPU_SVM_ATTR_PREFERRED_LOC:
		a->pref = v->value == UGPU_SVM_LOC_SYSTEM ? SVM_PREF_SYSTEM
			  : v->explicit_dev		  ? (int)v->id
							  : SVM_PREF_DEFAULT;
		break;
	case UGPU_SVM_ATTR_MIGRATION:
		a->migration = (uint8_t)v->value;
		break;
	case UGPU_SVM_ATTR_ATOMIC:
		a->atomic = (uint8_t)v->value;
		break;
	case UGPU_SVM_ATTR_READ_MOSTLY:
		a->read_mostly = v->value != 0;
		break;
	case UGPU_SVM_ATTR_ACCESSED_BY:
		if (v->value)
			a->accessed_by |= 1ull << v->id;
		else
			a->accessed_by &= ~(1ull << v->id);
		break;
	}
}

/* Would @v change anything over [start, end)? Lock held. */
static bool advice_changes_locked(struct svm *s, uint64_t start, uint64_t end,
				  const struct advice *v)
{
	uint64_t at = start, e;

	while (at < end) {
		struct svm_attrs a, b;

		attr_get_locked(s, at, &a, &e);
		b = a;
		set_advice(&b, v);
		if (!policy_eq(&a, &b))
			return true;
		at = e;
	}
	return false;
}

static bool advice_valid(const struct ugpu_svm_advice *adv)
{
	switch (adv->attr) {
	case UGPU_SVM_ATTR_PREFERRED_LOC:
		return adv->value == UGPU_SVM_LOC_DEVICE || adv->value == UGPU_SVM_LOC_SYSTEM;
	case UGPU_SVM_ATTR_MIGRATION:
		return adv->value <= UGPU_SVM_MIGRATE_ONLY_SYSTEM_PAGES;
	case UGPU_SVM_ATTR_ATOMIC:
		return adv->value <= UGPU_SVM_ATOMIC_CPU;
	case UGPU_SVM_ATTR_READ_MOSTLY:
	case UGPU_SVM_ATTR_ACCESSED_BY:
		return adv->value <= 1;
	}
	return false;
}

/* The checks every public call on a span of a mirror VM makes. */
bool svm_span_ok(const struct ugpu_vm *vm, uint64_t va, uint64_t bytes)
{
	return (vm->flags & UGPU_VM_MIRROR) && bytes && !((va | bytes) & (SVM_4K - 1)) &&
	       va >= vm->mirror_start && va - vm->mirror_start < vm->mirror_size &&
	       bytes <= vm->mirror_size - (va - vm->mirror_start);
}

/*
 * Register every mapping [va, end) covers with our userfaultfd (so that its
 * unmap resets the advice), as a GPU fault would: -EFAULT when a page is
 * not mapped or its memory is of a kind shared virtual memory cannot use.
 */
static int register_span(struct svm *s, struct ugpu_vm *vm, uint64_t va, uint64_t end)
{
	uint64_t span_end = vm->mirror_start + vm->mirror_size;

	while (va < end) {
		uint64_t seq, lo, hi;
		struct vma v;
		int ret;

		pthread_mutex_lock(&s->lock);
		seq = s->event_seq;
		pthread_mutex_unlock(&s->lock);
		if (vma_lookup(va, &v)) {
			log_err(s->ctx, "ugpu_svm_advise: nothing is mapped at 0x%" PRIx64 " in the process", va);
			return -EFAULT;
		}
		if (ugpu_mem_owns((const void *)(uintptr_t)va)) { /* base/alloc.h */
			log_err(s->ctx, "ugpu_svm_advise: 0x%" PRIx64 " is the driver's own memory", va);
			return -EFAULT;
		}
		if ((!v.anon || v.shared) && vma_page_kb(v.start) > 4) {
			log_err(s->ctx, "ugpu_svm_advise: 0x%" PRIx64 " is huge-page memory (%s): not supported yet",
				va, v.what);
			return -EFAULT;
		}
		lo = v.start > vm->mirror_start ? v.start : vm->mirror_start;
		hi = v.end < span_end ? v.end : span_end;
		ret = region_register(s, lo, hi, seq);
		if (ret == -EAGAIN)
			continue; /* the mappings changed meanwhile: look again */
		if (ret) {
			log_err(s->ctx, "ugpu_svm_advise: 0x%" PRIx64 " (%s) cannot be watched by userfaultfd (%s): only private and shmem memory can be advised",
				va, v.what, ugpu_strerror(ret));
			return -EFAULT;
		}
		va = v.end;
	}
	return 0;
}

/* The process's state for a call on @vm, with the call counted (leave with
 * svm_vm_leave()), and every unmap reported so far handled (its advice
 * reset, its ranges collected): -ENODEV when the device let go of shared
 * virtual memory. Collected, not only queued: an advice changing at the
 * edge of a range brings the range home, and a range of memory the process
 * had unmapped and mapped again at the same place, still waiting for its
 * collection, brought its stale bytes into the new mapping (found by
 * test_svm_model: munmap, mmap at the same address, advice on a few pages,
 * and a kernel then read the old contents). */
static int svm_enter_synced(struct ugpu_vm *vm, struct svm **out)
{
	*out = svm_vm_enter(vm);
	if (!*out)
		return -ENODEV;
	uffd_sync((*out)->u);
	gc_wait(*out);
	return 0;
}

static bool overlaps(const struct svm_range *r, const void *arg)
{
	(void)r;
	(void)arg;
	return true;
}

/*
 * The advice on [start, end) changed: the GPU's maps of the ranges inside
 * go (the next access faults and follows it); a range that straddles an
 * edge of the change goes whole, its bytes back in the process (a range
 * has one policy; the next fault makes ones that fit). No lock held.
 */
static void advice_invalidate(struct svm *s, struct svm_dev *sd, uint64_t start, uint64_t end)
{
	uint64_t next = start, n = 0;
	struct svm_range *r;

	while (next < end && (r = own_first(s, next, end, overlaps, NULL))) {
		bool fits;
		uint64_t rs = r->start, size = r->size;

		pthread_mutex_lock(&s->lock);
		fits = attr_uniform_locked(s, rs, rs + size);
		pthread_mutex_unlock(&s->lock);
		next = rs + size;
		if (fits) {
			if (r->nmaps) {
				range_unmap_gpu(s, r);
				n++;
			}
			range_done(s, r);
			continue;
		}
		n++;
		if (r->where == R_VRAM && range_to_cpu_must(s, r) == -EAGAIN) {
			range_done(s, r); /* its collection takes it out of VRAM */
			gc_wait(s);
			next = rs;
			continue;
		}
		range_destroy(s, r);
		uffd_wake(s->u, rs, size);
	}
	pthread_mutex_lock(&s->lock);
	sd->st.svm_advise_inval_count += n;
	pthread_mutex_unlock(&s->lock);
}

/*
 * Through ugpud every range a GPU fault or a prefetch touches moves into a
 * staging BO of the daemon's, which the VM maps in VRAM: the daemon cannot
 * reach this process's pages, so nothing is used where it is (docs/daemon.md,
 * "SVM for clients"). Advice that asks for pages used in place is refused
 * with -EREMOTE and a line naming it, not taken and ignored: a preferred
 * location in system memory and accessed-by (this device maps them where
 * they are). Read-mostly is served: its copy is a staging BO of the
 * daemon's like a moved range's, and the process's pages stay here,
 * write-protected by this process's userfaultfd, whose handler drops the
 * copy through the daemon before a store goes on (range_dup(),
 * dup_drop()). Setting those to their defaults, the migration policy (one
 * device: the same either way) and the atomic policies (ranges are in VRAM
 * whenever the device maps them; CPU: a device atomic faults on the
 * read-only map and is refused, as on a device without NO_ATOMIC) are
 * served.
 */
static int remote_advice_ok(struct ugpu_vm *vm, uint64_t va, uint64_t bytes,
			    const struct ugpu_svm_advice *adv)
{
	const char *what = NULL;

	if (adv->attr == UGPU_SVM_ATTR_PREFERRED_LOC && adv->value == UGPU_SVM_LOC_SYSTEM)
		what = "a preferred location in system memory";
	else if (adv->attr == UGPU_SVM_ATTR_ACCESSED_BY && adv->value)
		what = "accessed-by";
	if (!what)
		return 0;
	log_err(vm->dev->ctx, "ugpu_svm_advise: %s on [0x%" PRIx64 ", +0x%" PRIx64 ") of VM '%s' refused: %s is served by ugpud, which cannot reach this process's pages, so they cannot be used in place (every range moves)",
		what, va, bytes, vm->name, vm->dev->name);
	return -EREMOTE;
}

UGPU_API int ugpu_svm_advise(struct ugpu_vm *vm, uint64_t va, uint64_t bytes,
			     const struct ugpu_svm_advice *adv)
{
	struct advice v = { 0 };
	bool peer;
	struct svm_dev *sd;
	struct rpm *held;
	struct svm *s;
	bool changed;
	int ret;

	if (!vm || !adv || adv->size < offsetof(struct ugpu_svm_advice, device) + sizeof(adv->device))
		return -EINVAL;
	if (!svm_span_ok(vm, va, bytes) || !advice_valid(adv)) {
		log_err(vm->dev->ctx, "ugpu_svm_advise: [0x%" PRIx64 ", +0x%" PRIx64 ") attribute %d value %u: not a mirror VM, empty, not 4 KiB aligned, outside the mirror span, or an unknown attribute or value",
			va, bytes, (int)adv->attr, adv->value);
		return -EINVAL;
	}
	peer = adv->device && adv->device != vm->dev &&
	       (adv->attr == UGPU_SVM_ATTR_ACCESSED_BY ||
		(adv->attr == UGPU_SVM_ATTR_PREFERRED_LOC && adv->value == UGPU_SVM_LOC_DEVICE));
	if (peer && adv->device->ctx != vm->dev->ctx) {
		log_err(vm->dev->ctx, "ugpu_svm_advise: %s belongs to another context than VM '%s'",
			adv->device->name, vm->name);
		return -EXDEV;
	}
	/* Another device: only one that VM's device reaches over a fast link
	 * (one owner group, drm_pagemap's rule): its VRAM is then used in
	 * place or reached by moves over the fabric (svm/peer.c). Over a
	 * slow link every access would go through the process. */
	if (peer && !device_same_owner(vm->dev, adv->device)) {
		log_err(vm->dev->ctx, "ugpu_svm_advise: %s names %s, which %s's owner group does not hold (no fast link joins them, or it is removed)",
			adv->attr == UGPU_SVM_ATTR_ACCESSED_BY ? "accessed-by" : "the preferred location",
			adv->device->name, vm->dev->name);
		return -ENOLINK;
	}
	if (vm_is_remote(vm)) {
		ret = remote_advice_ok(vm, va, bytes, adv);
		if (ret)
			return ret;
	}
	ret = svm_enter_synced(vm, &s);
	if (ret)
		return ret;
	ret = register_span(s, vm, va, va + bytes);
	if (ret)
		goto out_leave;
	v.attr = adv->attr;
	v.value = adv->value;
	v.explicit_dev = adv->device != NULL;
	pthread_mutex_lock(&s->lock);
	sd = sd_of(s, vm->dev);
	if (!sd) {
		pthread_mutex_unlock(&s->lock);
		ret = -ENODEV;
		goto out_leave;
	}
	v.id = sd->id;
	if (adv->attr == UGPU_SVM_ATTR_READ_MOSTLY && adv->value &&
	    !region_wp_locked(s, va, va + bytes)) {
		/* without write protection a CPU store cannot be stopped
		 * while the device holds a copy: refused, not a silent
		 * no-op (the range would move as usual) */
		pthread_mutex_unlock(&s->lock);
		log_err(vm->dev->ctx, "ugpu_svm_advise: read-mostly on [0x%" PRIx64 ", +0x%" PRIx64 ") refused: %s, so CPU stores could not be held while the device has a copy",
			va, bytes,
			s->have_wp ? "this kernel's userfaultfd cannot write-protect that kind of memory"
				   : "this kernel's userfaultfd has no write protection");
		ret = -EOPNOTSUPP;
		goto out_leave;
	}
	if (peer) {
		struct svm_dev *p = sd_of(s, adv->device);

		if (!p) { /* no GPU VM there, or it let go of shared virtual memory */
			pthread_mutex_unlock(&s->lock);
			ret = -ENODEV;
			goto out_leave;
		}
		v.id = p->id;
	}
	changed = advice_changes_locked(s, va, va + bytes, &v);
	if (changed)
		ret = attr_apply_locked(s, va, va + bytes, set_advice, &v);
	if (changed && !ret)
		sd->st.svm_advise_count++;
	pthread_mutex_unlock(&s->lock);
	if (!changed || ret)
		goto out_leave; /* the same value: nothing to invalidate */
	ret = bo_rpm_hold(vm->dev, &held); /* page tables are written */
	if (ret)
		goto out_leave;
	advice_invalidate(s, sd, va, va + bytes);
	bo_rpm_release(held);
out_leave:
	svm_vm_leave(vm);
	return ret;
}

/* ---- ugpu_svm_query() -------------------------------------------------------------- */

UGPU_API int ugpu_svm_query(struct ugpu_vm *vm, uint64_t va, uint64_t bytes,
			    struct ugpu_svm_span_info *info)
{
	struct ugpu_svm_span_info o = { .size = sizeof(o) };
	struct svm_attrs a;
	struct svm_dev *sd;
	uint64_t end, e, covered = 0;
	struct svm *s;
	size_t i;

	if (!vm || !info || info->size < offsetof(struct ugpu_svm_span_info, system_bytes) + 8 ||
	    !svm_span_ok(vm, va, bytes))
		return -EINVAL;
	if (svm_enter_synced(vm, &s))
		return -ENODEV;
	pthread_mutex_lock(&s->lock);
	/* where pages are is told once no range there is on its way (a
	 * touch's copy back wakes the thread before its owner lets go) */
	for (i = range_lower(s, va); i < s->n && s->r[i]->start < va + bytes;) {
		if (s->r[i]->busy) {
			pthread_cond_wait(&s->cond, &s->lock);
			i = range_lower(s, va);
		} else {
			i++;
		}
	}
	sd = sd_of(s, vm->dev);
	attr_get_locked(s, va, &a, &e);
	/* as far as the same advice goes */
	end = va + bytes;
	while (e < end) {
		struct svm_attrs b;
		uint64_t e2;

		attr_get_locked(s, e, &b, &e2);
		if (!attrs_eq(&a, &b)) {
			end = e;
			break;
		}
		e = e2;
	}
	o.start = va;
	o.bytes = end - va;
	o.preferred_loc = a.pref == SVM_PREF_SYSTEM ? UGPU_SVM_LOC_SYSTEM : UGPU_SVM_LOC_DEVICE;
	o.preferred_device = NULL;
	if (a.pref >= 0) {
		list_for_each(l, &s->devs) {
			struct svm_dev *d = list_entry(l, struct svm_dev, link);

			if ((int)d->id == a.pref)
				o.preferred_device = d->dev;
		}
	}
	o.migration = (enum ugpu_svm_migration)a.migration;
	o.atomic = (enum ugpu_svm_atomic)a.atomic;
	o.read_mostly = a.read_mostly;
	o.accessed_by = sd && (a.accessed_by & (1ull << sd->id));
	o.last_prefetch = (enum ugpu_svm_loc)a.last_prefetch;
	for (i = range_lower(s, va); i < s->n && s->r[i]->start < end; i++) {
		const struct svm_range *r = s->r[i];
		uint64_t lo = r->start > va ? r->start : va;
		uint64_t hi = r->start + r->size < end ? r->start + r->size : end;

		if (r->where == R_VRAM && r->sd == sd)
			o.vram_bytes += hi - lo;
		else if (r->where == R_VRAM)
			o.other_vram_bytes += hi - lo;
		else if (r->where == R_DUP)
			o.dup_bytes += hi - lo;
		else
			continue;
		covered += hi - lo;
	}
	o.system_bytes = o.bytes - covered;
	pthread_mutex_unlock(&s->lock);
	svm_vm_leave(vm);
	o.size = info->size;
	memcpy(info, &o, info->size < sizeof(o) ? info->size : sizeof(o));
	return 0;
}

/* ---- the atomic-CPU policy --------------------------------------------------------- */

static bool wants_rearm(const struct svm_range *r, const void *arg)
{
	(void)arg;
	return r->rearm;
}

/*
 * A kernel is being submitted: atomic-CPU ranges a GPU write had mapped
 * writable lose their maps, so that the next kernel's first access faults
 * again (a device atomic on them is then refused: the reference device's
 * PTEs have no atomic-deny bit, only a read-only one). No lock held.
 */
void rearm_all(struct svm *s)
{
	struct svm_range *r;
	uint64_t next = 0;

	pthread_mutex_lock(&s->lock);
	if (!s->nrearm) {
		pthread_mutex_unlock(&s->lock);
		return;
	}
	pthread_mutex_unlock(&s->lock);
	while ((r = own_first(s, next, UINT64_MAX, wants_rearm, NULL))) {
		next = r->start + r->size;
		range_unmap_gpu(s, r); /* clears @rearm */
		range_done(s, r);
	}
}

/* ---- tuning ------------------------------------------------------------------------ */

/* @dev's attachment, g_svm_lock and its lock held on success. */
static int tuning_dev(struct ugpu_device *dev, struct svm_dev **out)
{
	if (!(dev->caps & UGPU_DEVICE_CAP_GPUVM))
		return -EOPNOTSUPP;
	/* a device served by ugpud joins at its first mirror VM: its tuning
	 * may come first (a closed one is not open: -ENODEV below) */
	if (device_is_remote(dev) && remote_is_open(dev)) {
		int ret = svm_attach(dev, true);

		if (ret)
			return ret;
	}
	pthread_mutex_lock(&g_svm_lock);
	*out = g_svm ? (pthread_mutex_lock(&g_svm->lock), sd_of(g_svm, dev)) : NULL;
	if (!*out) {
		if (g_svm)
			pthread_mutex_unlock(&g_svm->lock);
		pthread_mutex_unlock(&g_svm_lock);
		return -ENODEV;
	}
	return 0;
}

static void tuning_done(void)
{
	pthread_mutex_unlock(&g_svm->lock);
	pthread_mutex_unlock(&g_svm_lock);
}

UGPU_API int ugpu_svm_get_tuning(struct ugpu_device *dev, struct ugpu_svm_tuning *t)
{
	struct ugpu_svm_tuning o;
	struct svm_dev *sd;
	int ret;

	if (!dev || !t || t->size < offsetof(struct ugpu_svm_tuning, fault_prefetch_pct) + 4)
		return -EINVAL;
	ret = tuning_dev(dev, &sd);
	if (ret)
		return ret;
	o = sd->tune;
	tuning_done();
	o.size = t->size;
	memcpy(t, &o, t->size < sizeof(o) ? t->size : sizeof(o));
	return 0;
}

UGPU_API int ugpu_svm_set_tuning(struct ugpu_device *dev, const struct ugpu_svm_tuning *t)
{
	struct svm_dev *sd;
	int ret;

	if (!dev || !t || t->size < offsetof(struct ugpu_svm_tuning, fault_prefetch_pct) + 4 ||
	    t->thrash_threshold < 2 || t->thrash_threshold > 255 || !t->thrash_lapse_us ||
	    t->thrash_lapse_us > 10000000 || t->thrash_throttle_ms > 10000 || !t->thrash_pin_ms ||
	    t->thrash_pin_ms > 60000 || !t->fault_prefetch_pct || t->fault_prefetch_pct > 100 ||
	    (t->size >= offsetof(struct ugpu_svm_tuning, fault_ahead) + 4 &&
	     t->fault_ahead > SVM_FAULT_AHEAD_MAX))
		return -EINVAL;
	ret = tuning_dev(dev, &sd);
	if (ret)
		return ret;
	/* what the caller's struct has; newer fields it lacks stay */
	memcpy(&sd->tune, t, t->size < sizeof(sd->tune) ? t->size : sizeof(sd->tune));
	sd->tune.size = sizeof(sd->tune);
	tuning_done();
	return 0;
}
