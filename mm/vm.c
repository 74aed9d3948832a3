/* SPDX-License-Identifier: MIT */
/*
 * GPU VMs: address spaces, their page tables and the binds of BOs into them
 * (include/ugpu/vm.h; design: docs/vm.md; locks: mm/vm.h).
 *
 * Page tables are 4 KiB tables of 512 entries (docs/reference-device.md),
 * carved out of pinned kernel BOs of PT_CHUNK_TABLES tables each: VRAM that
 * never moves, saved and restored by the CPU around power loss before
 * anything runs (like xe's page-table BOs). The host side mirrors the tree
 * (struct vm_pt) so that no walk reads VRAM.
 *
 * A bind writes its leaf entries from where its BO lives now (a VRAM offset,
 * or an IOVA with the SYSTEM bit). When the BO moves, bo_set_placement()
 * marks the VMs it is bound in dirty, and the next launch on such a VM
 * rewrites the stale binds' entries under the BO manager lock and drops the
 * hardware queue's TLB (a newer page-table generation) before the kernel
 * starts. A BO bound in a VM with a running kernel is not moved: eviction
 * skips it, ugpu_bo_migrate() answers -EBUSY, and host suspend and removal
 * stop the kernels first.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mm/bo.h"
#include "mm/bo_rpm.h"
#include "mm/p2p.h"
#include "mm/vm.h"
#include "mm/vm_bind.h"
#include "mm/vm_remote.h"
#include "mm/vram.h"
#include "base/log.h"
#include "base/ownmem.h"
#include "src/device.h"
#include "src/remote.h"

#define PT_ENTRIES 512u
#define PT_CHUNK_TABLES 16u
#define VM_PAGE 4096ull
#define VA_LIMIT (1ull << UGPU_VM_VA_BITS)

/*
 * struct vm_pt - one table. @used counts the entries in use: child tables
 * (upper levels), or pages covered by a bind (leaves; a bind of a lost BO
 * still covers its pages with invalid entries). @child: upper levels only.
 */
struct vm_pt {
	uint64_t off;
	uint64_t *cpu;
	uint32_t used;
	uint32_t pidx;
	struct vm_pt *parent;
	struct vm_pt **child;
};

struct pt_chunk {
	struct ugpu_bo *bo;
	struct vm_pt t[PT_CHUNK_TABLES];
	struct vm_pt *child[PT_CHUNK_TABLES][PT_ENTRIES];
};

static struct bo_mgr *mgr_of(struct ugpu_device *dev)
{
	return dev->bo_mgr;
}

/* One entry of a table of @vm. SVM unmaps clear entries without waking the
 * device: while it sleeps in D3cold the store goes to the tables' backup
 * too, atomically with a resume's restore (bo_rpm_store_u64()). Manager lock. */
static void pte_store(struct ugpu_vm *vm, uint64_t *p, uint64_t v)
{
	bo_rpm_store_u64(vm->dev, p, v);
}

/* ---- the table pool ---------------------------------------------------------- */

/* Add a chunk of tables. vm->lock held, manager lock not (BO creation). */
static int pool_grow(struct ugpu_vm *vm)
{
	struct ugpu_device *dev = vm->dev;
	struct bo_mgr *m = mgr_of(dev);
	struct ugpu_bo_opts o = {
		.size = sizeof(o),
		.bytes = PT_CHUNK_TABLES * VM_PAGE,
		.placements = { UGPU_PLACEMENT_VRAM },
		.flags = UGPU_BO_KERNEL | UGPU_BO_PINNED | UGPU_BO_CONTIGUOUS,
		.name = "page-tables",
	};
	struct pt_chunk *c = calloc(1, sizeof(*c));
	struct pt_chunk **nc = NULL;
	struct vm_pt **nf = NULL;
	uint64_t base;
	unsigned int i;
	int ret;

	if (!c)
		return -ENOMEM;
	ret = bo_create_kernel(dev, &o, BUDDY_TOPDOWN_ALLOCATION, &c->bo);
	if (ret) {
		free(c);
		return ret;
	}
	base = bo_vram_offset(c->bo);
	for (i = 0; i < PT_CHUNK_TABLES; i++) {
		c->t[i].off = base + i * VM_PAGE;
		c->t[i].cpu = (uint64_t *)((char *)dev->vram + c->t[i].off);
		c->t[i].child = c->child[i];
	}
	bo_mgr_lock(m);
	if (vm->dead || m->closed) {
		ret = -ENODEV;
		goto out_unlock;
	}
	if (vm->nchunks == vm->cap_chunks) {
		size_t cap = vm->cap_chunks ? 2 * vm->cap_chunks : 4;

		nc = realloc(vm->chunks, cap * sizeof(*nc));
		if (!nc) {
			ret = -ENOMEM;
			goto out_unlock;
		}
		vm->chunks = nc;
		vm->cap_chunks = cap;
	}
	/* Room for every table of every chunk: the ones in use come back to
	 * the free list when their binds go (pt_give() never grows it). */
	if ((vm->nchunks + 1) * PT_CHUNK_TABLES > vm->cap_free) {
		size_t cap = vm->cap_free ? 2 * vm->cap_free : 32;

		while (cap < (vm->nchunks + 1) * PT_CHUNK_TABLES)
			cap *= 2;
		nf = realloc(vm->free_pt, cap * sizeof(*nf));
		if (!nf) {
			ret = -ENOMEM;
			goto out_unlock;
		}
		vm->free_pt = nf;
		vm->cap_free = cap;
	}
	vm->chunks[vm->nchunks++] = c;
	for (i = PT_CHUNK_TABLES; i-- > 0;)
		vm->free_pt[vm->nfree++] = &c->t[i];
	pthread_mutex_unlock(&m->lock);
	return 0;

out_unlock:
	pthread_mutex_unlock(&m->lock);
	ugpu_bo_put(c->bo);
	free(c);
	return ret;
}

/* Enough free tables for @need more; -ENODEV once the VM is dead. vm->lock
 * held; manager lock not. */
static int pool_reserve(struct ugpu_vm *vm, size_t need)
{
	struct bo_mgr *m = mgr_of(vm->dev);
	size_t have;
	bool dead;
	int ret;

	for (;;) {
		bo_mgr_lock(m);
		have = vm->nfree;
		dead = vm->dead;
		pthread_mutex_unlock(&m->lock);
		if (dead)
			return -ENODEV;
		if (have >= need)
			return 0;
		ret = pool_grow(vm);
		if (ret)
			return ret;
	}
}

/* Tables a bind of [va, va + bytes) may need at most (leaves, then the two
 * levels above them; the root exists). */
static size_t tables_needed(uint64_t va, uint64_t bytes)
{
	uint64_t last = va + bytes - 1;

	return (size_t)(((last >> 21) - (va >> 21) + 1) + ((last >> 30) - (va >> 30) + 1) +
			((last >> 39) - (va >> 39) + 1));
}

/* Manager lock held; pool_reserve() made sure there is one. */
static struct vm_pt *pt_take(struct ugpu_vm *vm)
{
	struct vm_pt *t = vm->free_pt[--vm->nfree];

	t->used = 0;
	t->parent = NULL;
	vm->tables++;
	return t;
}

/* Back to the pool; its entries are all zero again. Manager lock held. */
static void pt_give(struct ugpu_vm *vm, struct vm_pt *t)
{
	vm->free_pt[vm->nfree++] = t;
	vm->tables--;
}

/* ---- walking ------------------------------------------------------------------- */

/* The leaf table for @va, made with its parents if @create. Manager lock. */
static struct vm_pt *leaf_get(struct ugpu_vm *vm, uint64_t va, bool create)
{
	struct vm_pt *t = vm->root;
	int level;

	for (level = 3; level > 0; level--) {
		uint32_t idx = (uint32_t)(va >> (12 + 9 * level)) & (PT_ENTRIES - 1);
		struct vm_pt *c = t->child[idx];

		if (!c) {
			if (!create)
				return NULL;
			c = pt_take(vm);
			c->parent = t;
			c->pidx = idx;
			t->child[idx] = c;
			pte_store(vm, &t->cpu[idx], c->off | PTE_VALID);
			t->used++;
		}
		t = c;
	}
	return t;
}

/* Give back @t and the parents it empties (never the root). */
static void pt_release_empty(struct ugpu_vm *vm, struct vm_pt *t)
{
	while (t != vm->root && !t->used) {
		struct vm_pt *p = t->parent;

		p->child[t->pidx] = NULL;
		pte_store(vm, &p->cpu[t->pidx], 0);
		p->used--;
		pt_give(vm, t);
		t = p;
	}
}

/* Where the bytes of a BO are, page by page, in increasing offsets. */
struct backing_it {
	const struct ugpu_bo *bo;
	enum ugpu_placement placement;
	struct buddy_block *b;
	uint64_t bstart, bsize;
};

static void backing_init(struct backing_it *it, const struct ugpu_bo *bo)
{
	it->bo = bo;
	it->placement = bo ? bo->placement : UGPU_PLACEMENT_NONE;
	it->b = it->placement == UGPU_PLACEMENT_VRAM ? buddy_list_first(bo->vram) : NULL;
	it->bstart = 0;
	it->bsize = it->b ? vram_block_size(it->b) : 0;
}

/* The leaf entry for byte @off of the BO (non-decreasing across calls). */
static uint64_t backing_pte(struct backing_it *it, uint64_t off, uint64_t wr)
{
	switch (it->placement) {
	case UGPU_PLACEMENT_VRAM:
		while (it->b && off >= it->bstart + it->bsize) {
			it->bstart += it->bsize;
			it->b = buddy_list_next(it->bo->vram, it->b);
			it->bsize = it->b ? vram_block_size(it->b) : 0;
		}
		if (!it->b)
			return 0;
		return ((buddy_block_offset(it->b) + off - it->bstart) & PTE_ADDR_MASK) | PTE_VALID |
		       wr;
	case UGPU_PLACEMENT_SYSTEM:
		return ((it->bo->sys.iova + off) & PTE_ADDR_MASK) | PTE_VALID | PTE_SYSTEM | wr;
	default:
		return 0; /* lost: every access faults */
	}
}

/* The run of [@va, @end) inside one leaf table: its first entry in *@idx,
 * its length returned. */
static uint32_t leaf_span(uint64_t va, uint64_t end, uint32_t *idx)
{
	uint32_t n;

	*idx = (uint32_t)(va >> 12) & (PT_ENTRIES - 1);
	n = PT_ENTRIES - *idx;
	if ((end - va) / VM_PAGE < n)
		n = (uint32_t)((end - va) / VM_PAGE);
	return n;
}

/*
 * Write @b's leaf entries from its BO's backing now. @fresh: a new bind
 * (tables are made and its pages counted). Manager lock held; the device
 * in D0 (CPU stores to VRAM).
 */
static void bind_write_locked(struct ugpu_vm *vm, struct vm_bind *b, bool fresh)
{
	uint64_t wr = ((b->flags & UGPU_BIND_READONLY) ? 0 : PTE_WRITABLE) |
		      ((b->flags & VM_BIND_NO_ATOMIC) ? PTE_NO_ATOMIC : 0);
	uint64_t va = b->va, end = b->va + b->bytes, off = b->bo_offset;
	struct backing_it it;

	backing_init(&it, b->bo);
	while (va < end) {
		struct vm_pt *leaf = leaf_get(vm, va, fresh);
		uint32_t idx, n = leaf_span(va, end, &idx), i;

		if (leaf) {
			for (i = 0; i < n; i++)
				pte_store(vm, &leaf->cpu[idx + i],
					  b->bo ? backing_pte(&it, off + i * VM_PAGE, wr)
						: ((b->iova + off + i * VM_PAGE) & PTE_ADDR_MASK) |
							  PTE_VALID | PTE_SYSTEM | wr);
			if (fresh)
				leaf->used += n;
		}
		va += n * VM_PAGE;
		off += n * VM_PAGE;
	}
	b->gen = b->bo ? b->bo->backing_gen : 0;
}

/* Clear @b's entries and give back the tables it empties. Manager lock. */
void vm_bind_clear_locked(struct ugpu_vm *vm, struct vm_bind *b)
{
	uint64_t va = b->va, end = b->va + b->bytes;

	while (va < end) {
		struct vm_pt *leaf = leaf_get(vm, va, false);
		uint32_t idx, n = leaf_span(va, end, &idx), i;

		if (leaf) {
			for (i = 0; i < n; i++)
				pte_store(vm, &leaf->cpu[idx + i], 0);
			leaf->used -= n;
			pt_release_empty(vm, leaf);
		}
		va += n * VM_PAGE;
	}
}

uint64_t vm_next_gen_locked(struct ugpu_vm *vm)
{
	return vm->pt_gen = ++vm->vmm->pt_gen;
}

/* ---- what BO moves do -------------------------------------------------------- */

bool vm_bo_busy_locked(const struct ugpu_bo *bo)
{
	list_for_each(l, &bo->binds) {
		struct vm_bind *b = list_entry(l, struct vm_bind, bo_link);

		if (__atomic_load_n(&b->vm->active, __ATOMIC_ACQUIRE))
			return true;
	}
	return false;
}

void vm_bo_moved_locked(struct ugpu_bo *bo)
{
	list_for_each(l, &bo->binds)
		list_entry(l, struct vm_bind, bo_link)->vm->dirty = true;
}

/* Zero @b's leaf entries; the tables keep counting them until the unbind
 * (a table reservation may run concurrently under the VM lock only).
 * Manager lock held, device in D0. */
void vm_bind_zero_locked(struct ugpu_vm *vm, struct vm_bind *b)
{
	uint64_t a, end;

	for (a = b->va, end = b->va + b->bytes; a < end;) {
		struct vm_pt *leaf = leaf_get(vm, a, false);
		uint32_t idx, cnt = leaf_span(a, end, &idx), j;

		for (j = 0; leaf && j < cnt; j++)
			pte_store(vm, &leaf->cpu[idx + j], 0);
		a += (uint64_t)cnt * VM_PAGE;
	}
}

unsigned int vm_bo_orphan_binds_locked(struct ugpu_bo *bo)
{
	unsigned int n = 0;

	list_for_each_safe(l, &bo->binds) {
		struct vm_bind *b = list_entry(l, struct vm_bind, bo_link);

		if (!b->vm->dead && !device_is_removed(b->vm->dev)) {
			vm_bind_zero_locked(b->vm, b);
			vm_next_gen_locked(b->vm);
		}
		b->orphaned = true;
		list_del(&b->bo_link);
		n++;
	}
	return n;
}

bool vm_peer_enter_locked(struct ugpu_vm *vm, struct ugpu_device **peers, unsigned int max,
			  unsigned int *n)
{
	bool held = false;
	unsigned int i;

	*n = 0;
	if (!vm->npeer)
		return true;
	list_for_each(l, &vm->binds) {
		struct vm_bind *b = list_entry(l, struct vm_bind, vm_link);

		if (!(b->flags & VM_BIND_PEER) || b->revoked)
			continue;
		for (i = 0; i < *n && peers[i] != b->peer_dev; i++)
			;
		if (i < *n || *n == max)
			continue;
		peers[(*n)++] = b->peer_dev;
		/* raised before the flag is read (sequentially consistent on
		 * both sides): a suspend that set the flag either sees this
		 * count and waits, or this sees its flag */
		__atomic_add_fetch(&b->peer_dev->p2p_users, 1, __ATOMIC_SEQ_CST);
	}
	for (i = 0; i < *n; i++)
		held |= __atomic_load_n(&peers[i]->p2p_held, __ATOMIC_SEQ_CST) != 0;
	if (held) {
		vm_peer_leave(peers, *n);
		*n = 0;
	}
	return !held;
}

void vm_peer_leave(struct ugpu_device **peers, unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		__atomic_sub_fetch(&peers[i]->p2p_users, 1, __ATOMIC_SEQ_CST);
}

void vm_revalidate_locked(struct ugpu_vm *vm)
{
	uint64_t n = 0;

	if (!vm->dirty || vm->dead)
		return;
	list_for_each(l, &vm->binds) {
		struct vm_bind *b = list_entry(l, struct vm_bind, vm_link);

		if (b->bo && !b->orphaned && b->gen != b->bo->backing_gen) {
			bind_write_locked(vm, b, false);
			n += b->bytes / VM_PAGE;
		}
	}
	vm->dirty = false;
	if (n) {
		vm_next_gen_locked(vm);
		vm->vmm->revalidations++;
		vm->vmm->ptes_rewritten += n;
		log_dbg(vm->dev->ctx, "%s: VM '%s': %" PRIu64 " PTEs rewritten after moves",
			vm->dev->name, vm->name, n);
	}
}

void vm_launch_writes_locked(struct ugpu_vm *vm)
{
	list_for_each(l, &vm->binds) {
		struct vm_bind *b = list_entry(l, struct vm_bind, vm_link);

		if (b->bo && !b->orphaned && !(b->flags & UGPU_BIND_READONLY))
			bo_backup_dirty_locked(b->bo, b->bo_offset, b->bytes);
	}
}

uint64_t vm_root_offset(const struct ugpu_vm *vm)
{
	return vm->root->off;
}

/* Take @vm's page tables away (to free outside the locks). Manager lock. */
static void tables_steal_locked(struct ugpu_vm *vm, struct pt_chunk ***chunks, size_t *n)
{
	*chunks = vm->chunks;
	*n = vm->nchunks;
	vm->chunks = NULL;
	vm->nchunks = vm->cap_chunks = 0;
	free(vm->free_pt);
	vm->free_pt = NULL;
	vm->nfree = vm->cap_free = 0;
	vm->root = NULL;
	vm->tables = 0;
	vm->dead = true;
}

static void chunks_free(struct pt_chunk **chunks, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		ugpu_bo_put(chunks[i]->bo);
		free(chunks[i]);
	}
	free(chunks);
}

void vm_release_tables_all(struct vm_mgr *vmm)
{
	struct bo_mgr *m = mgr_of(vmm->dev);
	struct {
		struct pt_chunk **c;
		size_t n;
	} *v = NULL;
	size_t nv = 0, i = 0;

	bo_mgr_lock(m);
	pthread_mutex_lock(&vmm->lock);
	list_for_each(l, &vmm->vms)
		nv++;
	v = nv ? calloc(nv, sizeof(*v)) : NULL;
	list_for_each(l, &vmm->vms) {
		struct ugpu_vm *vm = list_entry(l, struct ugpu_vm, link);

		if (v) {
			tables_steal_locked(vm, &v[i].c, &v[i].n);
			i++;
		} else {
			/* No memory for the list: the tables leak, the VM is
			 * dead all the same. */
			vm->dead = true;
			vm->root = NULL;
		}
	}
	pthread_mutex_unlock(&vmm->lock);
	pthread_mutex_unlock(&m->lock);
	for (i = 0; v && i < nv; i++)
		chunks_free(v[i].c, v[i].n);
	free(v);
}

/* ---- the public API ----------------------------------------------------------------- */

/* The VM manager of @dev, with the reason when there is no usable one. */
static int vmm_usable(struct ugpu_device *dev, struct vm_mgr **out)
{
	struct vm_mgr *vmm = dev->vm_mgr;
	int ret = 0;

	if (!vmm)
		return -ENODEV;
	pthread_mutex_lock(&vmm->lock);
	if (vmm->closed || device_is_removed(dev))
		ret = -ENODEV;
	else if (!vmm->attached)
		ret = -EOPNOTSUPP; /* no exec queues on this device */
	pthread_mutex_unlock(&vmm->lock);
	*out = vmm;
	return ret;
}

static void vm_free(struct ugpu_vm *vm)
{
	pthread_mutex_destroy(&vm->lock);
	free(vm->free_pt);
	free(vm);
}

static int vm_create(struct ugpu_device *dev, const struct ugpu_vm_opts *opts,
		     const struct vm_svm_ops *fwd, void *fwd_arg, struct ugpu_vm **out);

UGPU_API int ugpu_vm_create(struct ugpu_device *dev, const struct ugpu_vm_opts *opts,
			    struct ugpu_vm **out)
{
	if (dev && out && device_is_remote(dev))
		return vm_remote_create(dev, opts, out);
	return vm_create(dev, opts, NULL, NULL, out);
}

int vm_create_forwarded(struct ugpu_device *dev, const struct ugpu_vm_opts *opts,
			const struct vm_svm_ops *ops, void *arg, struct ugpu_vm **out)
{
	if (!dev || !out || !ops || !opts || device_is_remote(dev))
		return -EINVAL;
	if (opts->size < offsetof(struct ugpu_vm_opts, flags) + sizeof(opts->flags) ||
	    !(opts->flags & UGPU_VM_MIRROR))
		return -EINVAL;
	return vm_create(dev, opts, ops, arg, out);
}

static int vm_create(struct ugpu_device *dev, const struct ugpu_vm_opts *opts,
		     const struct vm_svm_ops *fwd, void *fwd_arg, struct ugpu_vm **out)
{
	struct ugpu_vm_opts o = { .size = sizeof(o) };
	struct pt_chunk **chunks = NULL;
	struct vm_mgr *vmm;
	struct bo_mgr *m;
	struct ugpu_vm *vm;
	size_t nchunks = 0;
	uint64_t root_off = 0;
	int ret;

	if (!dev || !out)
		return -EINVAL;
	*out = NULL;
	if (opts) {
		if (opts->size < offsetof(struct ugpu_vm_opts, flags) + sizeof(opts->flags)) {
			log_err(dev->ctx, "ugpu_vm_create: opts.size %zu does not reach the flags field",
				opts->size);
			return -EINVAL;
		}
		memcpy(&o, opts, opts->size < sizeof(o) ? opts->size : sizeof(o));
#define OPT_WHOLE(f)                                                             \
	do {                                                                     \
		if (opts->size < offsetof(struct ugpu_vm_opts, f) + sizeof(o.f)) \
			memset(&o.f, 0, sizeof(o.f));                            \
	} while (0)
		OPT_WHOLE(mirror_start);
		OPT_WHOLE(mirror_size);
		OPT_WHOLE(name);
#undef OPT_WHOLE
	}
	if (o.flags & ~UGPU_VM_FLAGS_ALL) {
		log_err(dev->ctx, "ugpu_vm_create: unknown flags 0x%x", o.flags & ~UGPU_VM_FLAGS_ALL);
		return -EINVAL;
	}
	if (o.flags & UGPU_VM_MIRROR) {
		if (!o.mirror_size || ((o.mirror_start | o.mirror_size) & (VM_PAGE - 1)) ||
		    o.mirror_start >= VA_LIMIT || o.mirror_size > VA_LIMIT - o.mirror_start) {
			log_err(dev->ctx, "ugpu_vm_create: mirror span [0x%" PRIx64 ", +0x%" PRIx64
				") is empty, not page aligned or past the %u-bit range",
				o.mirror_start, o.mirror_size, UGPU_VM_VA_BITS);
			return -EINVAL;
		}
	} else if (o.mirror_start || o.mirror_size) {
		log_err(dev->ctx, "ugpu_vm_create: a mirror span without UGPU_VM_MIRROR");
		return -EINVAL;
	}
	if (!(dev->caps & UGPU_DEVICE_CAP_GPUVM)) {
		log_err(dev->ctx, "ugpu_vm_create: %s has no GPU VM (profile %s)", dev->name,
			dev->profile ? dev->profile->name : "?");
		return -EOPNOTSUPP;
	}
	ret = vmm_usable(dev, &vmm);
	if (ret)
		return ret;
	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return -ENOMEM;
	vm->dev = dev;
	vm->vmm = vmm;
	vm->flags = o.flags;
	vm->mirror_start = o.mirror_start;
	vm->mirror_size = o.mirror_size;
	snprintf(vm->name, sizeof(vm->name), "%s", o.name ? o.name : "vm");
	pthread_mutex_init(&vm->lock, NULL);
	list_init(&vm->binds);
	list_init(&vm->link);
	vm->fwd = fwd;
	vm->fwd_arg = fwd_arg;

	if ((vm->flags & UGPU_VM_MIRROR) && !fwd) {
		void *sarg;
		const struct vm_svm_ops *sops = vm_svm_enter(vmm, &sarg);

		ret = sops ? sops->vm_new(sarg, vm) : -EOPNOTSUPP;
		if (sops)
			vm_svm_leave(vmm);
		if (ret) {
			vm_free(vm);
			return ret;
		}
	}
	m = mgr_of(dev);
	pthread_mutex_lock(&vm->lock);
	ret = pool_reserve(vm, 1);
	if (!ret) {
		bo_mgr_lock(m);
		vm->root = pt_take(vm);
		vm_next_gen_locked(vm);
		pthread_mutex_unlock(&m->lock);
	}
	pthread_mutex_unlock(&vm->lock);
	if (ret)
		goto out_free;

	/* Published only while attached: the removal frees the tables of
	 * the VMs on the list, so one added after it must not get there. */
	bo_mgr_lock(m);
	pthread_mutex_lock(&vmm->lock);
	if (!vmm->attached || vmm->closed) {
		ret = -ENODEV;
		tables_steal_locked(vm, &chunks, &nchunks);
	} else {
		list_add_tail(&vmm->vms, &vm->link);
		/* read now: once the locks are dropped a removal may take
		 * the tables away (vm->root becomes NULL) */
		root_off = vm->root->off;
	}
	pthread_mutex_unlock(&vmm->lock);
	pthread_mutex_unlock(&m->lock);
	if (ret)
		goto out_free;
	device_get(dev);
	log_dbg(dev->ctx, "%s: VM '%s' created (root table at VRAM 0x%" PRIx64 "%s)", dev->name,
		vm->name, root_off, (vm->flags & UGPU_VM_MIRROR) ? ", mirror" : "");
	*out = vm;
	return 0;

out_free:
	if (!chunks) {
		bo_mgr_lock(m);
		tables_steal_locked(vm, &chunks, &nchunks);
		pthread_mutex_unlock(&m->lock);
	}
	chunks_free(chunks, nchunks);
	if (vm->flags & UGPU_VM_MIRROR)
		vm_svm_gone(vmm, vm);
	vm_free(vm);
	return ret;
}

/* Free binds taken off their lists (linked on @gone by vm_link), dropping
 * their BOs' references. No lock held (a last put takes the manager's). */
void vm_binds_free(struct list_link *gone)
{
	list_for_each_safe(l, gone) {
		struct vm_bind *b = list_entry(l, struct vm_bind, vm_link);

		if (b->bo)
			ugpu_bo_put(b->bo);
		if (b->flags & VM_BIND_PEER) {
			p2p_win_put(b->vm->dev, b->peer_dev);
			if (b->peer_bo) { /* (shared virtual memory's holds none) */
				ugpu_bo_unpin(b->peer_bo);
				ugpu_bo_put(b->peer_bo);
			}
			bo_rpm_release(b->peer_rpm);
		}
		free(b);
	}
}

UGPU_API int ugpu_vm_destroy(struct ugpu_vm *vm)
{
	struct ugpu_device *dev;
	struct vm_mgr *vmm;
	struct bo_mgr *m;
	struct pt_chunk **chunks = NULL;
	struct list_link gone;
	size_t nchunks = 0;

	if (!vm)
		return 0;
	if (vm_is_remote(vm))
		return vm_remote_destroy(vm);
	dev = vm->dev;
	vmm = vm->vmm;
	m = mgr_of(dev);
	pthread_mutex_lock(&vmm->lock);
	if (vm->nqueues) {
		pthread_mutex_unlock(&vmm->lock);
		log_err(dev->ctx, "ugpu_vm_destroy: VM '%s' still has %u queues", vm->name,
			vm->nqueues);
		return -EBUSY;
	}
	pthread_mutex_unlock(&vmm->lock);
	/* Shared virtual memory lets go of it first (its work may use it). */
	if (vm->flags & UGPU_VM_MIRROR)
		vm_svm_gone(vmm, vm);

	list_init(&gone);
	pthread_mutex_lock(&vm->lock);
	bo_mgr_lock(m);
	pthread_mutex_lock(&vmm->lock);
	list_del(&vm->link);
	pthread_mutex_unlock(&vmm->lock);
	list_for_each_safe(l, &vm->binds) {
		struct vm_bind *b = list_entry(l, struct vm_bind, vm_link);

		if (b->bo)
			list_del(&b->bo_link);
		list_del(&b->vm_link);
		list_add_tail(&gone, &b->vm_link);
	}
	tables_steal_locked(vm, &chunks, &nchunks);
	pthread_mutex_unlock(&m->lock);
	pthread_mutex_unlock(&vm->lock);

	vm_binds_free(&gone);
	chunks_free(chunks, nchunks);
	vm_free(vm);
	device_put(dev);
	return 0;
}

/* Whether a bind may go in now. vm->lock and m->lock held. */
static int bind_allowed_locked(struct ugpu_vm *vm, struct bo_mgr *m)
{
	if (m->closed || device_is_removed(vm->dev) || vm->dead)
		return -ENODEV;
	if (m->pm_state == BO_PM_SUSPENDED)
		return -EBUSY;
	return 0;
}

/* Put @b (its BO, range and flags set) in @vm's sorted list before @at and
 * write its entries. vm->lock and m->lock held. */
void vm_bind_insert_locked(struct ugpu_vm *vm, struct list_link *at, struct vm_bind *b)
{
	b->vm = vm;
	if (b->bo) {
		ugpu_bo_get(b->bo);
		list_add_tail(&b->bo->binds, &b->bo_link);
	}
	list_add_tail(at, &b->vm_link); /* before @at: sorted */
	if (b->flags & VM_BIND_PEER)
		vm->npeer++;
	bind_write_locked(vm, b, true);
	vm_next_gen_locked(vm);
}

/* The first bind that ends after @va (binds are sorted and disjoint), or
 * the head. */
struct list_link *vm_bind_after(struct ugpu_vm *vm, uint64_t va)
{
	list_for_each(l, &vm->binds)
		if (list_entry(l, struct vm_bind, vm_link)->va + list_entry(l, struct vm_bind, vm_link)->bytes > va)
			return l;
	return &vm->binds;
}

/*
 * The start of a bind of [@va, +@len) in @vm: @vm's lock taken, nothing
 * bound there (-EEXIST), page tables reserved, then the manager lock @m
 * taken and the VM allowed to bind. On 0 both locks are held; on an error
 * only @vm's (the caller unlocks it). *@at: where the bind goes.
 */
int vm_bind_begin(struct ugpu_vm *vm, struct bo_mgr *m, uint64_t va, uint64_t len,
		      struct list_link **at)
{
	int ret;

	pthread_mutex_lock(&vm->lock);
	*at = vm_bind_after(vm, va);
	if (*at != &vm->binds && list_entry(*at, struct vm_bind, vm_link)->va < va + len)
		return -EEXIST;
	ret = pool_reserve(vm, tables_needed(va, len)); /* -ENODEV when dead (read under m->lock) */
	if (ret)
		return ret;
	bo_mgr_lock(m);
	ret = bind_allowed_locked(vm, m);
	if (ret)
		pthread_mutex_unlock(&m->lock);
	return ret;
}


UGPU_API int ugpu_vm_bind(struct ugpu_vm *vm, struct ugpu_bo *bo, uint64_t bo_offset, uint64_t va,
			  uint64_t bytes, uint32_t flags)
{
	struct ugpu_device *dev;
	struct vm_bind *b;
	struct bo_mgr *m;
	struct list_link *at;
	struct rpm *held;
	bool moved = false;
	int ret;

	if (!vm || !bo)
		return -EINVAL;
	if (vm_is_remote(vm))
		return vm_remote_bind(vm, bo, bo_offset, va, bytes, flags);
	dev = vm->dev;
	if (flags & ~UGPU_BIND_FLAGS_ALL) {
		log_err(dev->ctx, "ugpu_vm_bind: unknown flags 0x%x", flags & ~UGPU_BIND_FLAGS_ALL);
		return -EINVAL;
	}
	if (!bytes || ((va | bytes | bo_offset) & (VM_PAGE - 1)) || va >= VA_LIMIT ||
	    bytes > VA_LIMIT - va || bo_offset > bo->size || bytes > bo->size - bo_offset) {
		log_err(dev->ctx, "ugpu_vm_bind: [0x%" PRIx64 ", +0x%" PRIx64 ") at BO offset 0x%" PRIx64
			" of '%s' (%" PRIu64 " bytes): empty, not page aligned, past the BO or past the %u-bit VA range",
			va, bytes, bo_offset, bo->name, bo->size, UGPU_VM_VA_BITS);
		return -EINVAL;
	}
	if (bo_dev(bo) != dev) /* a peer's BO, in place */
		return vm_bind_peer(vm, bo, bo_offset, va, bytes, flags);
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	m = mgr_of(dev);
	ret = bo_rpm_hold(dev, &held);
	if (ret) {
		free(b);
		return ret;
	}
	for (;;) {
		bool svm_there = false;
		struct list_link *l;

		pthread_mutex_lock(&vm->lock);
		at = vm_bind_after(vm, va);
		for (l = at; l != &vm->binds; l = l->next) {
			struct vm_bind *o = list_entry(l, struct vm_bind, vm_link);

			if (o->va >= va + bytes)
				break;
			if (o->flags & VM_BIND_SVM) {
				svm_there = true;
				continue;
			}
			log_err(dev->ctx, "ugpu_vm_bind: [0x%" PRIx64 ", +0x%" PRIx64 ") overlaps the bind at [0x%" PRIx64 ", +0x%" PRIx64 ") of VM '%s'",
				va, bytes, o->va, o->bytes, vm->name);
			ret = -EINVAL;
			goto out_unlock_vm;
		}
		if (!svm_there)
			break;
		/* Shared virtual memory maps some of it: the bind punches a
		 * hole in the mirror, so those ranges go first. */
		pthread_mutex_unlock(&vm->lock);
		{
			void *sarg;
			const struct vm_svm_ops *sops = vm_ops_enter(vm, &sarg);

			ret = sops ? sops->punch(sarg, vm, va, bytes) : -ENODEV;
			if (sops)
				vm_ops_leave(vm);
		}
		if (ret) {
			bo_rpm_release(held);
			free(b);
			return ret;
		}
	}
	ret = pool_reserve(vm, tables_needed(va, bytes)); /* -ENODEV when dead */
	if (ret)
		goto out_unlock_vm;
	bo_mgr_lock(m);
	ret = bind_allowed_locked(vm, m);
	/* moved to another device since it was looked at (mm/peer.c): under
	 * this lock it cannot leave; if it left, bind it as a peer's */
	moved = !ret && bo->dev != dev;
	if (moved)
		ret = -EAGAIN;
	if (!ret && bo->placement == UGPU_PLACEMENT_NONE)
		ret = -ENODATA;
	if (!ret) {
		b->bo = bo;
		b->va = va;
		b->bytes = bytes;
		b->bo_offset = bo_offset;
		b->flags = flags;
		vm_bind_insert_locked(vm, at, b);
		vm->nbinds++;
		vm->bound_bytes += bytes;
		b = NULL;
	}
	pthread_mutex_unlock(&m->lock);
out_unlock_vm:
	pthread_mutex_unlock(&vm->lock);
	bo_rpm_release(held);
	free(b);
	if (moved)
		return vm_bind_peer(vm, bo, bo_offset, va, bytes, flags);
	return ret;
}

UGPU_API int ugpu_vm_prefetch(struct ugpu_vm *vm, uint64_t va, uint64_t bytes,
			      enum ugpu_placement to)
{
	const struct vm_svm_ops *sops;
	struct ugpu_device *dev;
	struct rpm *held;
	void *sarg;
	int ret;

	ownmem_thread_note(); /* runs SVM moves on this thread (base/ownmem.h) */

	if (!vm)
		return -EINVAL;
	if (vm->fwd)
		return -EOPNOTSUPP; /* the daemon's side of a client's mirror VM */
	dev = vm->dev;
	if (!(vm->flags & UGPU_VM_MIRROR) || !bytes || ((va | bytes) & (VM_PAGE - 1)) ||
	    va < vm->mirror_start || va - vm->mirror_start >= vm->mirror_size ||
	    bytes > vm->mirror_size - (va - vm->mirror_start) ||
	    (to != UGPU_PLACEMENT_VRAM && to != UGPU_PLACEMENT_SYSTEM)) {
		log_err(dev->ctx, "ugpu_vm_prefetch: [0x%" PRIx64 ", +0x%" PRIx64 ") to %d: not a mirror VM, empty, not page aligned, outside the mirror span, or not VRAM/SYSTEM",
			va, bytes, (int)to);
		return -EINVAL;
	}
	if (vm_is_remote(vm)) /* the client's own shared virtual memory, moves through the daemon */
		return vm_remote_prefetch(vm, va, bytes, to == UGPU_PLACEMENT_VRAM);
	ret = bo_rpm_hold(dev, &held); /* awake while ranges move */
	if (ret)
		return ret;
	sops = vm_svm_enter(vm->vmm, &sarg);
	ret = sops ? sops->prefetch(sarg, vm, va, bytes, to == UGPU_PLACEMENT_VRAM) : -ENODEV;
	if (sops)
		vm_svm_leave(vm->vmm);
	bo_rpm_release(held);
	return ret;
}

UGPU_API int ugpu_vm_unbind(struct ugpu_vm *vm, uint64_t va, uint64_t bytes)
{
	struct ugpu_device *dev;
	struct list_link gone, *at;
	struct bo_mgr *m;
	struct rpm *held;
	uint64_t end;
	int ret = 0;

	if (!vm)
		return -EINVAL;
	if (vm_is_remote(vm))
		return vm_remote_unbind(vm, va, bytes);
	dev = vm->dev;
	if (!bytes || ((va | bytes) & (VM_PAGE - 1)) || va >= VA_LIMIT || bytes > VA_LIMIT - va) {
		log_err(dev->ctx, "ugpu_vm_unbind: [0x%" PRIx64 ", +0x%" PRIx64 ") is empty, not page aligned or past the VA range",
			va, bytes);
		return -EINVAL;
	}
	end = va + bytes;
	m = mgr_of(dev);
	list_init(&gone);
	ret = bo_rpm_hold(dev, &held);
	if (ret)
		return ret;
	pthread_mutex_lock(&vm->lock);
	bo_mgr_lock(m);
	/* Whole binds only, at least one. */
	at = vm_bind_after(vm, va);
	{
		struct list_link *l;
		unsigned int n = 0;

		for (l = at; l != &vm->binds; l = l->next) {
			struct vm_bind *b = list_entry(l, struct vm_bind, vm_link);

			if (b->va >= end)
				break;
			if (b->flags & VM_BIND_SVM)
				continue; /* not the program's */
			if (b->va < va || b->va + b->bytes > end) {
				log_err(dev->ctx, "ugpu_vm_unbind: [0x%" PRIx64 ", +0x%" PRIx64 ") covers only part of the bind at [0x%" PRIx64 ", +0x%" PRIx64 ")",
					va, bytes, b->va, b->bytes);
				ret = -EINVAL;
				break;
			}
			n++;
		}
		if (!ret && !n) {
			log_err(dev->ctx, "ugpu_vm_unbind: nothing is bound in [0x%" PRIx64 ", +0x%" PRIx64 ") of VM '%s'",
				va, bytes, vm->name);
			ret = -EINVAL;
		}
	}
	if (!ret && __atomic_load_n(&vm->active, __ATOMIC_ACQUIRE))
		ret = -EBUSY;
	else if (!ret && !vm->dead && m->pm_state == BO_PM_SUSPENDED)
		ret = -EBUSY;
	if (!ret) {
		while (at != &vm->binds) {
			struct vm_bind *b = list_entry(at, struct vm_bind, vm_link);
			struct list_link *next = at->next;

			if (b->va >= end)
				break;
			at = next;
			if (b->flags & VM_BIND_SVM)
				continue;
			if (!vm->dead && !device_is_removed(dev))
				vm_bind_clear_locked(vm, b);
			list_del(&b->vm_link);
			list_del(&b->bo_link);
			list_add_tail(&gone, &b->vm_link);
			if (b->flags & VM_BIND_PEER)
				vm->npeer--;
			vm->nbinds--;
			vm->bound_bytes -= b->bytes;
		}
		if (!vm->dead)
			vm_next_gen_locked(vm);
	}
	pthread_mutex_unlock(&m->lock);
	pthread_mutex_unlock(&vm->lock);
	bo_rpm_release(held);
	vm_binds_free(&gone);
	return ret;
}

UGPU_API int ugpu_vm_query(struct ugpu_vm *vm, struct ugpu_vm_info *info)
{
	struct ugpu_vm_info i = { .size = sizeof(i) };
	struct bo_mgr *m;

	if (!vm || !info || info->size < sizeof(info->size))
		return -EINVAL;
	if (vm_is_remote(vm))
		return vm_remote_query(vm, info);
	m = mgr_of(vm->dev);
	bo_mgr_lock(m);
	i.flags = vm->flags;
	i.mirror_start = vm->mirror_start;
	i.mirror_size = vm->mirror_size;
	i.binds = vm->nbinds;
	i.bound_bytes = vm->bound_bytes;
	i.page_tables = vm->tables;
	i.page_table_bytes = vm->nchunks * PT_CHUNK_TABLES * VM_PAGE;
	i.pt_gen = vm->pt_gen;
	i.dead = vm->dead;
	pthread_mutex_unlock(&m->lock);
	pthread_mutex_lock(&vm->vmm->lock);
	i.queues = vm->nqueues;
	pthread_mutex_unlock(&vm->vmm->lock);
	i.size = info->size;
	memcpy(info, &i, info->size < sizeof(i) ? info->size : sizeof(i));
	return 0;
}


/* ---- the manager ------------------------------------------------------------------- */

static int vm_mgr_up(struct ugpu_device *dev, const char *uri)
{
	struct vm_mgr *vmm = calloc(1, sizeof(*vmm));

	(void)uri;
	if (!vmm)
		return -ENOMEM;
	vmm->dev = dev;
	pthread_mutex_init(&vmm->lock, NULL);
	pthread_cond_init(&vmm->svm_cond, NULL);
	list_init(&vmm->vms);
	list_init(&vmm->queues);
	list_init(&vmm->runnable);
	list_init(&vmm->held);
	dev->vm_mgr = vmm;
	return 0;
}

/* ugpu_device_close(): VM and queue handles answer -ENODEV; their
 * destroy still works (the manager lives until the device object goes). */
static void vm_mgr_down(struct ugpu_device *dev)
{
	struct vm_mgr *vmm = dev->vm_mgr;

	if (!vmm)
		return;
	pthread_mutex_lock(&vmm->lock);
	vmm->closed = true;
	pthread_mutex_unlock(&vmm->lock);
}

static void vm_mgr_release(struct ugpu_device *dev)
{
	struct vm_mgr *vmm = dev->vm_mgr;

	if (!vmm)
		return;
	pthread_cond_destroy(&vmm->svm_cond);
	pthread_mutex_destroy(&vmm->lock);
	free(vmm);
	dev->vm_mgr = NULL;
}

static struct device_component vm_mgr_component = {
	.name = "vm-mgr",
	.order = DEVICE_STEP_VM_MGR,
	.life = DEVICE_LIFE_CONTEXT,
	.up = vm_mgr_up,
	.down = vm_mgr_down,
	.release = vm_mgr_release,
};
DEVICE_COMPONENT(vm_mgr_component)
