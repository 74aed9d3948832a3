/* SPDX-License-Identifier: MIT */
/*
 * The memory layer's part of host suspend (src/suspend.h, struct
 * pm_mem_ops): evictions before the window, backups of the VRAM BOs that
 * must survive, their copies in the window and back at resume. The state
 * machine, the phases' timing and the power state are src/suspend.c's; this
 * file owns every BO field it changes. docs/suspend.md has the sequence.
 *
 * Locking: the host-suspend lock (src) is held around every op. Prepare's
 * ops take the manager lock per BO, so unpin and destroy interleave with
 * them; the window (window_begin .. window_end) holds the manager lock for
 * its whole run: unpin and destroy wait, and nothing moves under the copies.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "engines/engine.h"
#include "mm/backup_track.h"
#include "mm/bo.h"
#include "mm/p2p.h"
#include "mm/cpu_map.h"
#include "mm/spill.h"
#include "mm/vram.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/progress.h"
#include "src/device.h"
#include "src/suspend.h"

/* Must survive the suspend: a VRAM BO not marked NO_RESTORE. */
static bool needs_backup(const struct ugpu_bo *bo)
{
	return bo->placement == UGPU_PLACEMENT_VRAM && !(bo->flags & UGPU_BO_NO_RESTORE);
}

/* Saved and restored by CPU, before the engines exist: early kernel BOs. */
static bool is_early(const struct ugpu_bo *bo)
{
	return (bo->flags & UGPU_BO_KERNEL) && !(bo->flags & UGPU_BO_LATE_RESTORE);
}

/* @bo's backup left the spill file (freed, or read back into memory): the
 * last one out closes the file, which removes it. */
static void spill_put_locked(struct bo_mgr *m, struct ugpu_bo *bo)
{
	bo->spilled = false;
	if (!--m->spill_bos) {
		spill_close(m->spill);
		m->spill = NULL;
	}
}

void bo_backup_free_locked(struct ugpu_device *dev, struct ugpu_bo *bo)
{
	struct bo_mgr *m = dev->bo_mgr;

	if (bo->backup.mem.fd >= 0)
		m->backup_mem -= bo->backup.mem.size;
	bo_sys_free(dev, &bo->backup);
	if (bo->spilled)
		spill_put_locked(m, bo);
	track_free(bo->track);
	bo->track = NULL;
	bo->backup_prepared = bo->backup_valid = false;
}

void bo_backup_drop(struct ugpu_device *dev, struct ugpu_bo *bo)
{
	/* CPU stores need no tracking any more: lift the protection. */
	if (bo->track && bo->map)
		cpu_map_wp_stop(bo->map, NULL, NULL);
	bo_backup_free_locked(dev, bo);
}

int bo_backup_unspill_locked(struct ugpu_device *dev, struct ugpu_bo *bo)
{
	struct bo_mgr *m = dev->bo_mgr;
	struct bo_sys sys;
	int ret;

	if (!bo->spilled)
		return 0;
	ret = bo_sys_alloc_locked(dev, bo->size, bo->name, false, &sys);
	if (ret)
		return ret;
	ret = spill_load(m->spill, bo, sys.mem.vaddr);
	if (ret) {
		bo_sys_free(dev, &sys);
		return ret;
	}
	spill_put_locked(m, bo);
	bo->backup = sys;
	m->backup_mem += sys.mem.size;
	return 0;
}

void bo_backup_dirty_locked(struct ugpu_bo *bo, uint64_t off, uint64_t len)
{
	if (bo->track)
		track_mark(bo->track, off, len);
}

/* Free every backup; the state goes back to ACTIVE. Manager lock held. */
static void unprepare_locked(struct bo_mgr *m)
{
	bo_for_each(l, &m->all)
		bo_backup_drop(m->dev, bo_of_all(l));
	m->pm_state = BO_PM_ACTIVE;
}

/* The engine of the spill passes: the first blitter, or the CPU engine. */
static struct engine *spill_engine(struct ugpu_device *dev, bool force_cpu)
{
	return force_cpu || !dev->copy[0] ? dev->cpu : dev->copy[0];
}

/*
 * @bo's backup goes to the spill file in @dir (opened on the first one):
 * a region of it reserved. Manager lock held.
 */
static int backup_spill_locked(struct bo_mgr *m, struct ugpu_bo *bo, const char *dir)
{
	int ret;

	if (!m->spill) {
		ret = spill_open(m->dev, dir, &m->spill);
		if (ret)
			return ret;
	}
	ret = spill_reserve(m->spill, bo->name, bo->size, &bo->spill_off);
	if (ret) {
		if (!m->spill_bos) {
			spill_close(m->spill);
			m->spill = NULL;
		}
		return ret;
	}
	bo->spilled = true;
	m->spill_bos++;
	log_dbg(m->dev->ctx, "%s: the backup of BO '%s' (%" PRIu64 " bytes) goes to the spill file",
		m->dev->name, bo->name, bo->size);
	return 0;
}

/*
 * Allocate @bo's backup and its track and, with @populate, fill it with the
 * blitter and hash it (outside the window: prepare). Without @populate the
 * track asks for a whole copy. The backup goes to the spill file instead
 * when spill is on (ugpu_pm_opts.spill_dir) and it would not fit under the
 * memory limit or its memory cannot be had (kernel BOs never: the CPU
 * restores the early ones before the engines exist, and all are small).
 * *@spilled: bytes prepare wrote to the spill file. Manager lock held.
 */
static int backup_make_locked(struct ugpu_device *dev, struct ugpu_bo *bo, bool populate,
			      uint64_t *spilled)
{
	struct engine *e = device_copy_engine(dev);
	struct bo_mgr *m = dev->bo_mgr;
	char dir[PATH_MAX];
	uint64_t fence = 0, limit;
	bool can_spill;
	int ret;

	pm_spill_config(dev, dir, sizeof(dir), &limit);
	can_spill = dir[0] && !(bo->flags & UGPU_BO_KERNEL);
	if (can_spill && limit && m->backup_mem + bo->size > limit) {
		ret = backup_spill_locked(m, bo, dir);
	} else {
		ret = bo_sys_alloc_locked(dev, bo->size, bo->name, true, &bo->backup);
		if (ret && ret != -ENODEV && can_spill) {
			log_info(dev->ctx, "%s: no memory for the backup of BO '%s' (%s): spilling it",
				 dev->name, bo->name, ugpu_strerror(ret));
			ret = backup_spill_locked(m, bo, dir);
		}
	}
	if (ret)
		return ret;
	if (!bo->spilled)
		m->backup_mem += bo->backup.mem.size;
	bo->track = track_new(bo->size);
	if (!bo->track) {
		bo_backup_drop(dev, bo);
		return -ENOMEM;
	}
	bo->track->whole = !populate;
	if (!populate)
		return 0;
	/* CPU stores are tracked from before the copy: one racing with it is
	 * seen and copied again. Where the mapping cannot be tracked (not
	 * mapped now, a backing userfaultfd cannot protect), hold_maps()
	 * finds out and the BO is copied whole. */
	if (bo->map)
		cpu_map_wp_start(bo->map, BACKUP_CHUNK);
	if (bo->spilled) {
		struct spill_pieces p = { 0 };

		ret = spill_pieces_add(m->spill, &p, bo, 0, bo->size);
		if (!ret)
			ret = spill_save(m->spill, spill_engine(dev, false), p.v, p.n, spilled);
		free(p.v);
		if (ret) {
			bo_backup_drop(dev, bo);
			return ret;
		}
		bo->track->gen = bo->backing_gen;
		return 0;
	}
	ret = bo_copy_queue(e, bo->vram, bo->size, bo->backup.iova, false, &fence);
	if (!ret)
		ret = engine_wait(e, fence, bo_copy_timeout_ms(bo->size));
	if (ret) {
		log_err(dev->ctx, "%s: filling the backup of BO '%s' failed: %s", dev->name,
			bo->name, ugpu_strerror(ret));
		engine_reset(e);
		bo_backup_drop(dev, bo);
		return -EIO;
	}
	track_hash(bo->track, bo->backup.mem.vaddr, 0, bo->size);
	bo->track->gen = bo->backing_gen;
	return 0;
}

/* ---- prepare ---------------------------------------------------------------- */

static int prepare_begin(void *arg)
{
	struct bo_mgr *m = arg;
	int ret;

	bo_mgr_lock(m);
	if (m->pm_state != BO_PM_ACTIVE) {
		pthread_mutex_unlock(&m->lock);
		return -EBUSY;
	}
	ret = bo_snapshot_locked(m, &m->prep_bos, &m->prep_n);
	/* From here on unpin drops backups and suspend knows prepare ran. */
	if (!ret)
		m->pm_state = BO_PM_PREPARED;
	pthread_mutex_unlock(&m->lock);
	return ret;
}

static void svm_suspend_prepare(struct bo_mgr *m);

/* Prepare moves @bo to system memory: in VRAM, movable, and still alive
 * for the user (not only prepare's reference). Manager lock held. */
static bool evict_candidate(struct ugpu_bo *bo)
{
	return bo->placement == UGPU_PLACEMENT_VRAM && !bo->pin_count && bo->nplacements > 1 &&
	       __atomic_load_n(&bo->refcount, __ATOMIC_ACQUIRE) > 1;
}

/* What prepare_evict() takes out of VRAM: those, and SVM ranges' VRAM. */
static bool evict_planned(struct ugpu_bo *bo)
{
	return evict_candidate(bo) || bo_svm_evictable_locked(bo);
}

/* Prepare still to fill a backup for @bo (alive, in VRAM, none yet). */
static bool backup_candidate(struct ugpu_bo *bo)
{
	return needs_backup(bo) && !bo_has_backup(bo) &&
	       __atomic_load_n(&bo->refcount, __ATOMIC_ACQUIRE) > 1;
}

/* The bytes of prepare's BOs @pick selects now: a step's progress total. */
static uint64_t prep_bytes(struct bo_mgr *m, bool (*pick)(struct ugpu_bo *bo))
{
	uint64_t sum = 0;

	bo_mgr_lock(m);
	for (size_t i = 0; i < m->prep_n; i++)
		if (pick(m->prep_bos[i]))
			sum += m->prep_bos[i]->size;
	pthread_mutex_unlock(&m->lock);
	return sum;
}

/* Evict what is not pinned, shared-virtual-memory ranges included (back into
 * the process); BOs that may only live in VRAM stay and get a backup (and a
 * range that is busy now). One BO per lock hold: unpin/destroy interleave. */
static int prepare_evict(void *arg, struct pm_count *c)
{
	struct bo_mgr *m = arg;
	struct progress pr;
	int ret = 0;
	size_t i;

	svm_suspend_prepare(m);
	progress_begin(&pr, m->dev->ctx, UGPU_PROGRESS_EVICT, m->dev->name,
		       prep_bytes(m, evict_planned));
	for (i = 0; i < m->prep_n && !ret; i++) {
		struct ugpu_bo *bo = m->prep_bos[i];
		uint64_t moved = 0;

		bo_mgr_lock(m);
		if (evict_candidate(bo)) {
			ret = bo_move_locked(bo, UGPU_PLACEMENT_SYSTEM);
			if (!ret)
				moved = bo->size;
		} else if (bo_svm_evictable_locked(bo) && !bo_evict_locked(bo)) {
			moved = bo->size;
		}
		pthread_mutex_unlock(&m->lock);
		c->bos += moved != 0;
		c->bytes += moved;
		progress_add(&pr, moved);
	}
	progress_end(&pr, ret);
	return ret;
}

static int prepare_backup(void *arg, struct pm_count *c)
{
	struct bo_mgr *m = arg;
	struct progress pr;
	int ret = 0;
	size_t i;

	progress_begin(&pr, m->dev->ctx, UGPU_PROGRESS_BACKUP, m->dev->name,
		       prep_bytes(m, backup_candidate));
	for (i = 0; i < m->prep_n && !ret; i++) {
		struct ugpu_bo *bo = m->prep_bos[i];
		uint64_t made = 0;

		bo_mgr_lock(m);
		if (backup_candidate(bo)) {
			ret = backup_make_locked(m->dev, bo, true, &c->spill_bytes);
			if (!ret) {
				bo->backup_prepared = true;
				c->bos++;
				made = bo->size;
				c->spill_bos += bo->spilled;
			}
		}
		pthread_mutex_unlock(&m->lock);
		c->bytes += made;
		progress_add(&pr, made);
	}
	progress_end(&pr, ret);
	return ret;
}

static void prepare_end(void *arg, int err)
{
	struct bo_mgr *m = arg;

	if (err) {
		bo_mgr_lock(m);
		unprepare_locked(m);
		pthread_mutex_unlock(&m->lock);
	}
	bo_snapshot_put(m->prep_bos, m->prep_n);
	m->prep_bos = NULL;
	m->prep_n = 0;
}

static int cancel(void *arg, bool *prepared)
{
	struct bo_mgr *m = arg;
	int ret = 0;

	bo_mgr_lock(m);
	*prepared = m->pm_state == BO_PM_PREPARED;
	if (m->pm_state == BO_PM_SUSPENDED)
		ret = -EBUSY;
	else
		unprepare_locked(m);
	pthread_mutex_unlock(&m->lock);
	return ret;
}

/* ---- the window -------------------------------------------------------------- */

/* Shared virtual memory's ranges go home before a host suspend (their VRAM
 * would otherwise be a kernel BO backed up behind the back of the svm
 * worker, which may touch it while the device sleeps). */
static void svm_suspend_prepare(struct bo_mgr *m)
{
	void *sarg;
	const struct bo_svm_ops *sops = bo_svm_ops_get(m, &sarg);

	if (sops && sops->suspend_prepare)
		sops->suspend_prepare(sarg, m->dev);
}

static int window_begin(void *arg, bool for_resume, enum ugpu_pm_state *was)
{
	struct bo_mgr *m = arg;

	if (!for_resume)
		svm_suspend_prepare(m); /* a suspend without prepare, or ranges since */
	bo_mgr_lock(m);
	*was = (enum ugpu_pm_state)m->pm_state;
	if (for_resume != (m->pm_state == BO_PM_SUSPENDED)) {
		pthread_mutex_unlock(&m->lock);
		return -EBUSY;
	}
	return 0;
}

static void window_end(void *arg)
{
	struct bo_mgr *m = arg;

	pthread_mutex_unlock(&m->lock);
	/* Resumed, or the suspend failed: other devices' kernels held for
	 * this device's suspend (peer binds into its VRAM) go on. */
	p2p_kick_importers(m->dev);
}

static int alloc_missing(void *arg, struct pm_count *c)
{
	struct bo_mgr *m = arg;
	int ret;

	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (needs_backup(bo) && !bo_has_backup(bo)) {
			ret = backup_make_locked(m->dev, bo, false, NULL);
			if (ret)
				return ret;
			c->bos++;
			c->bytes += bo->size;
		}
	}
	return 0;
}

static void cpu_wrote(void *arg, uint64_t off, uint64_t len)
{
	track_mark(arg, off, len);
}

void backup_map_going(struct ugpu_bo *bo)
{
	if (bo->track && bo->map && !cpu_map_wp_stop(bo->map, cpu_wrote, bo->track))
		bo->track->whole = true;
}

/*
 * The stores made until here are in VRAM and get copied; a touch from now
 * on waits for resume. Then the chunks CPU stores dirtied since prepare go
 * to the track (the block ended the write tracking with every store seen);
 * a mapping whose stores were not all seen makes its BO whole.
 */
static int hold_maps(void *arg)
{
	struct bo_mgr *m = arg;
	int ret;

	/* Other devices' kernels reading this VRAM in place (peer binds)
	 * first: none may run while it is off. */
	ret = p2p_hold_importers(m->dev);
	if (ret)
		return ret;

	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (bo->placement == UGPU_PLACEMENT_VRAM && bo->map && !bo->map_blocked) {
			ret = cpu_map_block(bo->map);
			if (ret) {
				log_err(m->dev->ctx, "%s: cannot hold the CPU mapping of BO '%s': %s",
					m->dev->name, bo->name, ugpu_strerror(ret));
				return ret;
			}
			bo->map_blocked = true;
			if (bo->track && !cpu_map_wp_stop(bo->map, cpu_wrote, bo->track))
				bo->track->whole = true;
		}
	}
	return 0;
}

static unsigned int nr_copy_engines(struct ugpu_device *dev)
{
	unsigned int n = 0;

	while (n < DEVICE_MAX_ENGINES && dev->copy[n])
		n++;
	return n;
}

/*
 * copy_all_locked() rings an engine's doorbell after this many descriptors
 * (copies, or runs of copies joined into one) or bytes queued to it: early enough that the engine starts while the rest is
 * being queued, rarely enough that doorbells (a register write each, a
 * socket round trip over vfio-user) cost little next to the copies. The last
 * copy of each such batch carries a fence, so the CPU can hash what an
 * engine finished while the engine goes on with the next batch.
 */
#define COPY_BATCH_DESCS 128
#define COPY_BATCH_BYTES (8ull << 20)
/* Chunks of one copy list (engine_copy_list()): a batch of 64 KiB runs. */
#define COPY_LIST_CHUNKS ((uint32_t)(COPY_BATCH_BYTES / BACKUP_CHUNK))

/* The BOs one copy_all_locked() pass handles. */
static bool copy_selected(const struct ugpu_bo *bo, bool early, bool restore)
{
	if (bo->placement != UGPU_PLACEMENT_VRAM || bo->backup.mem.fd < 0 || is_early(bo) != early)
		return false;
	return !restore || bo->backup_valid;
}

/*
 * Must the save copy @bo whole? Yes unless every writer since the backup was
 * filled was tracked: kernel BOs (rings, page tables: written by the driver
 * through the BAR, never tracked), backups suspend allocated itself (empty),
 * a BO whose backing changed, or one marked whole (a CPU mapping whose
 * stores were not all seen: hold_maps()).
 */
static bool save_whole(const struct ugpu_bo *bo)
{
	const struct backup_track *t = bo->track;

	return (bo->flags & UGPU_BO_KERNEL) || t->whole || t->gen != bo->backing_gen;
}

/* The engine the next copy goes to: the least loaded by bytes. */
static unsigned int least_loaded(const uint64_t *load, unsigned int ne)
{
	unsigned int k, best = 0;

	for (k = 1; k < ne; k++)
		if (load[k] < load[best])
			best = k;
	return best;
}

/*
 * struct copy_run - one copy of a pass: bytes [@off, @off+@len) of @bo, on
 * engine @k; @fence: the fence of the batch it ends (0 inside a batch),
 * @wait: the fence that covers it (of the first batch end at or after it on
 * its engine). @vram: the VRAM address of the run when it lies in one block
 * of the BO (else NO_VRAM); @joined: it continues the previous run in both
 * VRAM and IOVA, and goes out in the same descriptor and chunk; @listed: it
 * is a chunk of its own in the previous run's descriptor, a copy list
 * (runs_plan()). Local to one pass (the window's thread).
 */
struct copy_run {
	struct ugpu_bo *bo;
	uint64_t off, len, vram;
	unsigned int k;
	uint64_t fence, wait;
	uint32_t sum_slot; /* its first sum slot on engine @k, or NO_SUM */
	bool batch_end, joined, listed;
	/* @sum_wrap: the first run of a descriptor whose sums start again
	 * from slot 0 of engine @k (runs_plan()): what the engine summed
	 * before is read first (sums_reap()); @summed: its sums are read */
	bool sum_wrap, summed;
};

#define NO_SUM UINT32_MAX
_Static_assert(BACKUP_CHUNK == ENGINE_SUM_PIECE, "an engine's sum pieces are the backup's chunks");

#define NO_VRAM UINT64_MAX

/* The VRAM address of [off, off+len) of @bo when one block holds it all. */
static uint64_t run_vram(const struct ugpu_bo *bo, uint64_t off, uint64_t len)
{
	const struct buddy_block *b;
	uint64_t start = 0, bsz;

	buddy_list_for_each(b, bo->vram) {
		bsz = vram_block_size(b);
		if (off < start + bsz)
			return off + len <= start + bsz ? buddy_block_offset(b) + off - start : NO_VRAM;
		start += bsz;
	}
	return NO_VRAM;
}

struct copy_runs {
	struct copy_run *v;
	size_t n, cap;
};

/* Add the copy of [off, off+len) of @bo, cut in runs of at most
 * COPY_BATCH_BYTES (a multiple of the chunk): runs_plan() joins them back
 * into descriptors of that size and spreads those over the engines, so one
 * big BO is copied by every engine, not by the one its single run went to. */
static int runs_add(struct copy_runs *r, struct ugpu_bo *bo, uint64_t off, uint64_t len)
{
	while (len) {
		uint64_t n = len < COPY_BATCH_BYTES ? len : COPY_BATCH_BYTES;

		if (r->n == r->cap) {
			size_t cap = r->cap ? 2 * r->cap : 256;
			struct copy_run *v = realloc(r->v, cap * sizeof(*v));

			if (!v)
				return -ENOMEM;
			r->v = v;
			r->cap = cap;
		}
		r->v[r->n++] = (struct copy_run){ .bo = bo, .off = off, .len = n,
						  .vram = run_vram(bo, off, n), .sum_slot = NO_SUM };
		off += n;
		len -= n;
	}
	return 0;
}

/* The copies a pass makes of @bo, each handed to @add: the whole BO, or
 * (save of a tracked BO) its runs of dirty chunks (none for a clean one). */
static int bo_copies(struct ugpu_bo *bo, bool restore,
		     int (*add)(void *arg, struct ugpu_bo *bo, uint64_t off, uint64_t len),
		     void *arg)
{
	uint64_t off, len, from;
	int ret = 0;

	if (restore || save_whole(bo))
		return add(arg, bo, 0, bo->size);
	for (from = 0; !ret && track_next_dirty(bo->track, from, &off, &len); from = off + len)
		ret = add(arg, bo, off, len);
	return ret;
}

static int runs_add_cb(void *arg, struct ugpu_bo *bo, uint64_t off, uint64_t len)
{
	return runs_add(arg, bo, off, len);
}

/* The copies of one pass (bo_copies()). *@nbos: the BOs of the pass. */
static int runs_collect(struct bo_mgr *m, bool early, bool restore, struct copy_runs *r,
			uint64_t *nbos)
{
	int ret;

	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (!copy_selected(bo, early, restore))
			continue;
		(*nbos)++;
		ret = bo_copies(bo, restore, runs_add_cb, r);
		if (ret)
			return ret;
	}
	return 0;
}

/* Does @c continue @p in VRAM and in IOVA (one descriptor can carry both)?
 * With @sums (the engines checksum what they copy, per ENGINE_SUM_PIECE of
 * the descriptor), only after a run of whole chunks: the pieces must be the
 * chunks of each run's BO. */
static bool run_continues(const struct copy_run *p, const struct copy_run *c, bool sums)
{
	return p->vram != NO_VRAM && c->vram != NO_VRAM && p->vram + p->len == c->vram &&
	       p->bo->backup.iova + p->off + p->len == c->bo->backup.iova + c->off &&
	       (!sums || p->len % BACKUP_CHUNK == 0);
}

/* Does run @i of @r go out in the descriptor of run @i - 1? */
static bool run_in_prev_desc(const struct copy_runs *r, size_t i)
{
	return r->v[i].joined || r->v[i].listed;
}

/* Sum slots descriptor [@i, @j) of @r takes (one per chunk of each run). */
static uint64_t desc_pieces(const struct copy_runs *r, size_t i, size_t j)
{
	uint64_t n = 0;

	for (size_t q = i; q < j; q++)
		n += (r->v[q].len + BACKUP_CHUNK - 1) / BACKUP_CHUNK;
	return n;
}

/* Would descriptor [@i, @j) run past the @slots sum slots its engine has
 * (*@used of them taken)? Then it starts again from slot 0 (marked
 * sum_wrap). Counted for every descriptor, summed or not: a wrap comes
 * early, never late. */
static bool sums_wrap(struct copy_runs *r, size_t i, size_t j, uint32_t slots, uint64_t *used)
{
	uint64_t n = desc_pieces(r, i, j);
	bool wrap = *used && *used + n > slots;

	r->v[i].sum_wrap = wrap;
	*used = wrap ? n : *used + n;
	return wrap;
}

/*
 * Plan a pass: with @merge (blitters), runs that continue each other in
 * VRAM and IOVA are joined into one descriptor of up to COPY_BATCH_BYTES
 * (small BOs created together have adjacent VRAM, and their backups,
 * allocated in the same order by prepare, adjacent IOVA: 2,048 BOs of
 * 64 KiB go out as 16 descriptors instead of 2,048, each a ring slot, a
 * fence check and an IOVA lookup on the engine's side). With @list_max
 * (the engines take copy lists: engine_copy_list()), runs that do not
 * continue each other go into the same descriptor as chunks of a list, up
 * to @list_max chunks and COPY_BATCH_BYTES: every other 64 KiB chunk of a
 * BO dirty, or small BOs made at different times, cost what one big copy
 * costs in descriptors. Then each descriptor goes to the least loaded
 * engine by bytes, and the batches are cut (COPY_BATCH_*, counted in
 * descriptors) at descriptor ends. With @slots (the fewest sum slots of the
 * pass's engines; 0 without sums), a descriptor that would run past its
 * engine's slots starts them again from 0 (sum_wrap), and the engine's
 * descriptor before it ends a batch: its fence says when the slots may be
 * read and used again (sums_reap()). Without this, a pass of more chunks
 * than the slots (8,192 a blitter: 512 MiB) was hashed by the CPU beyond
 * them, on the CPUs the copies share.
 */
static void runs_plan(struct copy_runs *r, unsigned int ne, bool merge, bool sums,
		      uint32_t list_max, uint32_t slots)
{
	uint64_t load[DEVICE_MAX_ENGINES] = { 0 }, pend[DEVICE_MAX_ENGINES] = { 0 };
	uint64_t pend_n[DEVICE_MAX_ENGINES] = { 0 }, used[DEVICE_MAX_ENGINES] = { 0 }, ext = 0;
	size_t last[DEVICE_MAX_ENGINES];
	uint32_t chunks = 0;
	unsigned int k;
	size_t i, j;

	for (i = 0; i < r->n; i++) {
		struct copy_run *c = &r->v[i];
		bool fits = i && ext + c->len <= COPY_BATCH_BYTES;

		c->joined = merge && fits && run_continues(c - 1, c, sums);
		c->listed = !c->joined && merge && fits && chunks < list_max &&
			    c->vram != NO_VRAM && c[-1].vram != NO_VRAM;
		ext = run_in_prev_desc(r, i) ? ext + c->len : c->len;
		chunks = c->joined ? chunks : c->listed ? chunks + 1 : 1;
	}
	for (k = 0; k < ne; k++)
		last[k] = SIZE_MAX;
	for (i = 0; i < r->n; i = j) {
		ext = r->v[i].len;
		for (j = i + 1; j < r->n && run_in_prev_desc(r, j); j++)
			ext += r->v[j].len;
		k = least_loaded(load, ne);
		for (size_t q = i; q < j; q++)
			r->v[q].k = k;
		if (slots && sums_wrap(r, i, j, slots, &used[k]) && last[k] != SIZE_MAX) {
			/* the fence the wrap waits for: the engine's last
			 * descriptor so far ends a batch */
			r->v[last[k]].batch_end = true;
			pend[k] = pend_n[k] = 0;
		}
		load[k] += ext;
		pend[k] += ext;
		last[k] = j - 1;
		if (++pend_n[k] >= COPY_BATCH_DESCS || pend[k] >= COPY_BATCH_BYTES) {
			r->v[j - 1].batch_end = true;
			pend[k] = pend_n[k] = 0;
		}
	}
	for (k = 0; k < ne; k++)
		if (last[k] != SIZE_MAX)
			r->v[last[k]].batch_end = true;
}

/*
 * struct copy_pass - the copies of one pass between VRAM and the backups in
 * memory: queued by pass_start(), waited for (and, for a save, hashed) by
 * pass_end(), so that other work (the spill pass) can run on the CPU and on
 * a spare engine in between. Local to one pass (the window's thread).
 * @ret: the first error of queueing (pass_end() still waits for what was
 * queued).
 */
struct copy_pass {
	struct bo_mgr *m;
	struct engine *es[DEVICE_MAX_ENGINES];
	unsigned int ne;
	bool restore;
	struct copy_runs r;
	size_t queued;
	uint64_t load[DEVICE_MAX_ENGINES];
	uint32_t slot[DEVICE_MAX_ENGINES]; /* each engine's next free sum slot */
	/* each engine's last queued run that ends a batch (SIZE_MAX: none),
	 * and the first run whose sums sums_reap() has not looked at */
	size_t last_end[DEVICE_MAX_ENGINES], sum_from[DEVICE_MAX_ENGINES];
	bool failed[DEVICE_MAX_ENGINES]; /* a wait on the engine failed: reset it */
	bool sums; /* the engines checksum the copies (engine_copy_sum()) */
	uint32_t list_max; /* chunks of a copy list on every engine (0: no lists) */
	struct progress pr;
	int ret;
};

/*
 * Runs [@i, @j) of a pass went out as one descriptor that checksums them
 * from their engine's next free sum slot on: each run's chunks are the
 * descriptor's next pieces (a joined run follows whole chunks,
 * run_continues(); a listed one starts a chunk of the list, whose pieces
 * count from its start), so each run notes its first slot.
 */
static void note_sum_slots(struct copy_pass *p, size_t i, size_t j)
{
	uint32_t *slot = &p->slot[p->r.v[i].k];

	for (size_t q = i; q < j; q++) {
		p->r.v[q].sum_slot = *slot;
		*slot += (uint32_t)((p->r.v[q].len + BACKUP_CHUNK - 1) / BACKUP_CHUNK);
	}
}

/*
 * Queue runs [@i, @j) of a pass, planned into one descriptor with more than
 * one chunk (runs_plan()), as one copy list: a chunk for each run that does
 * not continue the one before. With sums, the engine checksums each chunk
 * and each run notes its first sum slot; when the slots are all taken, the
 * list goes without (the CPU hashes those runs, run_sums()).
 */
static int queue_list(struct copy_pass *p, size_t i, size_t j, uint64_t *fence)
{
	struct engine_chunk ch[COPY_LIST_CHUNKS];
	struct copy_run *v = p->r.v;
	unsigned int k = v[i].k;
	struct engine *e = p->es[k];
	struct engine_addr vram = engine_vram(0), iova = engine_iova(0);
	uint32_t n = 0;
	size_t q;

	for (q = i; q < j; q++) {
		uint64_t a = v[q].bo->backup.iova + v[q].off;

		if (v[q].joined) {
			ch[n - 1].len += v[q].len;
			continue;
		}
		ch[n++] = p->restore ? (struct engine_chunk){ .dst = v[q].vram, .src = a, .len = v[q].len }
				     : (struct engine_chunk){ .dst = a, .src = v[q].vram, .len = v[q].len };
	}
	if (p->restore)
		return engine_copy_list(e, vram, iova, ch, n, ENGINE_NO_SUM, fence);
	if (p->sums && !engine_copy_list(e, iova, vram, ch, n, p->slot[k], fence)) {
		note_sum_slots(p, i, j);
		return 0;
	}
	return engine_copy_list(e, iova, vram, ch, n, ENGINE_NO_SUM, fence);
}

static int sums_reap(struct copy_pass *p, unsigned int k, size_t upto);

/*
 * Queue every selected BO (or, for a save, its dirty chunks), spread over
 * the copy engines by bytes. @early: the early kernel BOs, copied by the CPU
 * engine; else the rest, by the blitters (the CPU engine when the device has
 * none, or @force_cpu). @spare_first: leave the first blitter to the spill
 * pass when there is another one.
 */
static void pass_start(struct bo_mgr *m, struct copy_pass *p, bool early, bool restore,
		       bool force_cpu, bool spare_first, struct pm_count *c)
{
	struct ugpu_device *dev = m->dev;
	unsigned int ne, k, first = 0;
	uint32_t slots;
	size_t i, j;
	int rr;

	memset(p, 0, sizeof(*p));
	p->m = m;
	p->restore = restore;
	ne = early || force_cpu ? 0 : nr_copy_engines(dev);
	if (!ne) {
		p->es[0] = dev->cpu;
		p->ne = 1;
	} else {
		first = spare_first && ne > 1;
		for (k = first; k < ne; k++)
			p->es[k - first] = dev->copy[k];
		p->ne = ne - first;
	}
	/* @c->bos: the BOs whose backup (or VRAM) the pass brings up to date,
	 * clean ones included; @c->bytes: the bytes it copies. */
	p->ret = runs_collect(m, early, restore, &p->r, &c->bos);
	if (p->ret)
		return;
	if (!early) {
		uint64_t total = 0;

		for (i = 0; i < p->r.n; i++)
			total += p->r.v[i].len;
		progress_begin(&p->pr, dev->ctx, restore ? UGPU_PROGRESS_RESTORE : UGPU_PROGRESS_BACKUP,
			       dev->name, total);
	}
	/* A save by blitters that checksum what they copy: the sums come with
	 * the copies, while the bytes are in the engine's hands, and no CPU
	 * pass reads the backups again (docs/suspend.md "Verified backups"). */
	p->sums = !restore && p->es[0] != dev->cpu;
	slots = UINT32_MAX;
	for (k = 0; k < p->ne && p->sums; k++) {
		p->sums = engine_sum_slots(p->es[k]) > 0;
		if (engine_sum_slots(p->es[k]) < slots)
			slots = engine_sum_slots(p->es[k]);
	}
	for (k = 0; k < DEVICE_MAX_ENGINES; k++)
		p->last_end[k] = SIZE_MAX;
	/* Copy lists where every engine of the pass takes them (the
	 * reference device's COPY_LIST, 1.4); else one descriptor a run. */
	p->list_max = p->es[0] != dev->cpu ? COPY_LIST_CHUNKS : 0;
	for (k = 0; k < p->ne && p->list_max; k++)
		if (engine_list_max(p->es[k]) < p->list_max)
			p->list_max = engine_list_max(p->es[k]);
	/* The slots are used again (sums_reap() waits here) only when no
	 * spill pass runs beside this one: it starts once this function
	 * returns, and would wait for most of the memory pass; there the CPU
	 * hashes what goes past the slots, as before. */
	runs_plan(&p->r, p->ne, p->es[0] != dev->cpu, p->sums, p->list_max,
		  p->sums && !spare_first ? slots : 0);
	for (k = 0; k < p->ne; k++)
		engine_plug(p->es[k]);
	for (i = 0; i < p->r.n; i = j) {
		struct copy_run *cr = &p->r.v[i], *end;
		struct ugpu_bo *bo = cr->bo;
		uint64_t ext = cr->len, iova = bo->backup.iova + cr->off;
		struct engine *e = p->es[cr->k];
		uint64_t *fence;
		bool list = false;

		for (j = i + 1; j < p->r.n && run_in_prev_desc(&p->r, j); j++) {
			ext += p->r.v[j].len;
			list |= p->r.v[j].listed;
		}
		end = &p->r.v[j - 1]; /* carries the batch's fence */
		fence = end->batch_end ? &end->fence : NULL;
		if (p->sums && cr->sum_wrap) {
			p->ret = sums_reap(p, cr->k, i);
			if (p->ret)
				break;
		}
		if (list)
			p->ret = queue_list(p, i, j, fence);
		else if (p->sums && cr->vram != NO_VRAM &&
		    !engine_copy_sum(e, engine_iova(iova), cr->vram, ext, p->slot[cr->k], fence))
			note_sum_slots(p, i, j);
		else if (j - i == 1)
			/* not one VRAM block, or the engine's sum slots are
			 * all taken: a plain copy, hashed by the CPU */
			p->ret = bo_copy_range_queue(e, bo->vram, cr->off, cr->len, iova, restore,
						     fence);
		else if (restore)
			p->ret = engine_copy(e, engine_vram(cr->vram), engine_iova(iova), ext, fence);
		else
			p->ret = engine_copy(e, engine_iova(iova), engine_vram(cr->vram), ext, fence);
		if (p->ret)
			break;
		p->queued = j;
		if (end->batch_end)
			p->last_end[cr->k] = j - 1;
		p->load[cr->k] += ext;
		c->bytes += ext;
		/* Short batches: a plugged engine starts nothing, so one batch
		 * for the whole pass would leave the engines idle while we
		 * queue. A doorbell per COPY_BATCH_* costs a register write. */
		if (end->batch_end) {
			p->ret = engine_unplug(e);
			engine_plug(e);
			if (p->ret)
				break;
		}
	}
	for (k = 0; k < p->ne; k++) {
		rr = engine_unplug(p->es[k]);
		if (!p->ret)
			p->ret = rr;
	}
}

/* A finished copy of a save: its chunks' sums into the backup's track, as
 * the engine computed them, else from the backup's bytes. */
static void run_sums(struct copy_pass *p, const struct copy_run *cr)
{
	uint64_t sums[64], done = 0;

	if (cr->sum_slot == NO_SUM) {
		track_hash(cr->bo->track, cr->bo->backup.mem.vaddr, cr->off, cr->len);
		if (p->es[0] != p->m->dev->cpu)
			p->m->backup_cpu_sums += cr->len;
		return;
	}
	while (done < cr->len) {
		uint64_t len = cr->len - done < 64 * BACKUP_CHUNK ? cr->len - done : 64 * BACKUP_CHUNK;
		uint32_t n = (uint32_t)((len + BACKUP_CHUNK - 1) / BACKUP_CHUNK);

		engine_sums(p->es[cr->k], cr->sum_slot + (uint32_t)(done / BACKUP_CHUNK), n, sums);
		track_set_sums(cr->bo->track, cr->off + done, len, sums);
		done += len;
	}
}

/*
 * Before engine @k's sum slots are used again from 0 (the run at @upto is
 * marked sum_wrap): wait for the fence of its last batch (runs_plan() ended
 * one on the descriptor before) and read the sums of its runs queued so
 * far, which pass_end() then skips. The engine sits idle from that fence
 * until the next doorbell: once per 512 MiB of chunks it sums.
 */
static int sums_reap(struct copy_pass *p, unsigned int k, size_t upto)
{
	size_t e = p->last_end[k];
	int ret;

	/* the other engines' batches so far go out meanwhile */
	for (unsigned int o = 0; o < p->ne; o++) {
		if (o == k)
			continue;
		ret = engine_unplug(p->es[o]);
		engine_plug(p->es[o]);
		if (ret)
			return ret;
	}
	if (e != SIZE_MAX) {
		ret = engine_wait(p->es[k], p->r.v[e].fence, bo_copy_timeout_ms(p->load[k]));
		if (ret) {
			p->failed[k] = true; /* pass_end() resets it, no second wait */
			return ret;
		}
	}
	for (size_t q = p->sum_from[k]; q < upto; q++) {
		struct copy_run *cr = &p->r.v[q];

		if (cr->k == k && cr->sum_slot != NO_SUM) {
			run_sums(p, cr);
			cr->summed = true;
		}
	}
	p->sum_from[k] = upto;
	p->slot[k] = 0;
	return 0;
}

/* A save pass copied a run of @bo (the run before it was of @prev): its
 * backup equals VRAM now. A BO's runs follow each other in a pass
 * (runs_collect(), spill_collect()), so each BO is cleaned once, not once
 * per run (its whole bitmap each time). */
static void backup_saved(struct ugpu_bo *bo, const struct ugpu_bo *prev)
{
	if (bo == prev)
		return;
	track_clean(bo->track);
	bo->track->gen = bo->backing_gen;
}

/*
 * Wait for the pass (bounded), in queue order, hashing each finished copy
 * of a save into its backup's checksums while the engines go on with the
 * next batches; then mark the copied BOs clean. Returns 0 or the first
 * -errno; engines that failed are reset.
 */
static int pass_end(struct copy_pass *p)
{
	uint64_t waited[DEVICE_MAX_ENGINES] = { 0 }, next_wait[DEVICE_MAX_ENGINES] = { 0 };
	struct copy_runs *r = &p->r;
	int ret = p->ret, rr;
	unsigned int k;
	size_t i;

	/* Each copy's covering fence: the next batch end on its engine. */
	for (i = p->queued; i-- > 0;) {
		struct copy_run *cr = &r->v[i];

		if (cr->batch_end)
			next_wait[cr->k] = cr->fence;
		cr->wait = next_wait[cr->k];
	}
	for (i = 0; i < p->queued && !ret; i++) {
		struct copy_run *cr = &r->v[i];

		k = cr->k;
		if (cr->wait != waited[k]) {
			rr = engine_wait(p->es[k], cr->wait, bo_copy_timeout_ms(p->load[k]));
			if (rr) {
				p->failed[k] = true;
				ret = rr;
				break;
			}
			waited[k] = cr->wait;
		}
		if (!p->restore && !cr->summed)
			run_sums(p, cr);
		progress_add(&p->pr, cr->len);
	}
	/* On a failure, nothing may still run into the backups (or VRAM). */
	for (k = 0; k < p->ne; k++) {
		rr = ret && p->load[k] && !p->failed[k]
			     ? engine_idle(p->es[k], bo_copy_timeout_ms(p->load[k]))
			     : 0;
		if (p->failed[k] || rr) {
			engine_reset(p->es[k]);
			if (!ret)
				ret = rr;
		}
	}
	if (!ret && !p->restore) {
		for (i = 0; i < r->n; i++)
			backup_saved(r->v[i].bo, i ? r->v[i - 1].bo : NULL);
	}
	free(r->v);
	r->v = NULL;
	progress_end(&p->pr, ret);
	return ret;
}

/* A pass with nothing in between: queue, wait. */
static int copy_all_locked(struct bo_mgr *m, bool early, bool restore, bool force_cpu,
			   struct pm_count *c)
{
	struct copy_pass p;

	pass_start(m, &p, early, restore, force_cpu, false, c);
	return pass_end(&p);
}

/* The spilled BOs a pass handles (never early ones: kernel BOs do not
 * spill). */
static bool spill_selected(const struct ugpu_bo *bo, bool restore)
{
	return bo->placement == UGPU_PLACEMENT_VRAM && bo->spilled && (!restore || bo->backup_valid);
}

static int pieces_add_cb(void *arg, struct ugpu_bo *bo, uint64_t off, uint64_t len)
{
	struct bo_mgr *m = bo->dev->bo_mgr;

	return spill_pieces_add(m->spill, arg, bo, off, len);
}

/* The pieces of the spilled BOs' part of a pass (bo_copies()), counted into
 * @c. */
static int spill_collect(struct bo_mgr *m, bool restore, struct spill_pieces *p,
			 struct pm_count *c)
{
	int ret;

	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (!spill_selected(bo, restore))
			continue;
		c->bos++;
		c->spill_bos++;
		ret = bo_copies(bo, restore, pieces_add_cb, p);
		if (ret)
			return ret;
	}
	return 0;
}

/*
 * The spilled BOs' part of a save: whole BOs or their runs of dirty chunks,
 * through the staging buffers into the file (mm/spill.h), hashed on the
 * way; then marked clean. Counts into @c (spill_* too).
 */
static int spill_save_pass(struct bo_mgr *m, struct pm_count *c)
{
	struct spill_pieces p = { 0 };
	uint64_t t0 = now_ns(), before = c->spill_bytes;
	size_t i;
	int ret;

	if (!m->spill)
		return 0;
	ret = spill_collect(m, false, &p, c);
	if (!ret)
		ret = spill_save(m->spill, spill_engine(m->dev, false), p.v, p.n, &c->spill_bytes);
	c->bytes += c->spill_bytes - before;
	if (!ret) {
		for (i = 0; i < p.n; i++)
			backup_saved(p.v[i].bo, i ? p.v[i - 1].bo : NULL);
	}
	c->spill_ns = now_ns() - t0;
	free(p.v);
	return ret;
}

static int save(void *arg, bool early, struct pm_count *c)
{
	struct bo_mgr *m = arg;
	struct copy_pass p;
	int ret, rr;

	if (early || !m->spill) {
		ret = copy_all_locked(m, early, false, false, c);
	} else {
		/* The memory backups on the other blitters while the spill
		 * pass runs on the first one (and the CPU hashes its pieces);
		 * their hashes after it. */
		pass_start(m, &p, false, false, false, true, c);
		ret = spill_save_pass(m, c);
		rr = pass_end(&p);
		ret = ret ? ret : rr;
	}
	if (!ret && early) {
		/* Everything that has a backup now holds the contents. */
		bo_for_each(l, &m->all) {
			struct ugpu_bo *bo = bo_of_all(l);

			if (bo_has_backup(bo))
				bo->backup_valid = true;
		}
	}
	return ret;
}

static void suspended(void *arg)
{
	struct bo_mgr *m = arg;

	m->pm_state = BO_PM_SUSPENDED;
}

static void maps_release_locked(struct bo_mgr *m)
{
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (bo->map_blocked) {
			cpu_map_unblock(bo->map);
			bo->map_blocked = false;
		}
	}
}

static void recover(void *arg, enum ugpu_pm_state was)
{
	struct bo_mgr *m = arg;

	p2p_unhold(m->dev);
	maps_release_locked(m);
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (!bo->backup_prepared)
			bo_backup_drop(m->dev, bo);
		bo->backup_valid = false;
	}
	m->pm_state = (enum bo_pm_state)was;
	pthread_cond_broadcast(&m->pm_cond);
}

/*
 * Check each backup of the pass against its checksums before its bytes go
 * back to VRAM. A damaged backup is restored all the same (it is all there
 * is), reported by name and counted (c->corrupt, bo->corrupt).
 */
static void verify_locked(struct bo_mgr *m, bool early, struct pm_count *c)
{
	uint64_t bad;

	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (!copy_selected(bo, early, true) ||
		    !track_verify(bo->track, bo->backup.mem.vaddr, &bad))
			continue;
		bo->corrupt++;
		c->corrupt++;
		pm_report_corrupt(m->dev, bo->name, bad, bo->size);
	}
}

struct spill_bad {
	struct bo_mgr *m;
	struct pm_count *c;
};

/* A spilled backup failed its check as it was read back (spill_restore()). */
static void spill_bad(void *arg, struct ugpu_bo *bo, uint64_t off)
{
	struct spill_bad *b = arg;

	bo->corrupt++;
	b->c->corrupt++;
	pm_report_corrupt(b->m->dev, bo->name, off, bo->size);
}

/* The spilled BOs' part of a restore: read back, checked (unless
 * @force_cpu: a redo of a pass that checked), copied into VRAM. */
static int spill_restore_pass(struct bo_mgr *m, bool force_cpu, struct pm_count *c)
{
	struct spill_bad b = { .m = m, .c = c };
	struct spill_pieces p = { 0 };
	uint64_t t0 = now_ns();
	int ret;

	if (!m->spill)
		return 0;
	ret = spill_collect(m, true, &p, c);
	if (!ret)
		ret = spill_restore(m->spill, spill_engine(m->dev, force_cpu), p.v, p.n,
				    force_cpu ? NULL : spill_bad, &b, &c->spill_bytes);
	c->bytes += c->spill_bytes;
	c->spill_ns = now_ns() - t0;
	free(p.v);
	return ret;
}

static int restore(void *arg, bool early, bool force_cpu, struct pm_count *c)
{
	struct bo_mgr *m = arg;
	struct copy_pass p;
	int ret, rr;

	memset(c, 0, sizeof(*c));
	/* A CPU redo follows a blitter pass that verified already. */
	if (!force_cpu)
		verify_locked(m, early, c);
	if (early || !m->spill)
		return copy_all_locked(m, early, true, force_cpu, c);
	/* As in save(): the memory backups beside the spill pass. */
	pass_start(m, &p, false, true, force_cpu, true, c);
	ret = spill_restore_pass(m, force_cpu, c);
	rr = pass_end(&p);
	return ret ? ret : rr;
}

static void finish(void *arg, struct pm_count *c, uint64_t *discarded)
{
	struct bo_mgr *m = arg;

	p2p_unhold(m->dev); /* its VRAM is back */
	*discarded = 0;
	bo_for_each(l, &m->all) {
		struct ugpu_bo *bo = bo_of_all(l);

		if (bo->placement == UGPU_PLACEMENT_VRAM && (bo->flags & UGPU_BO_NO_RESTORE)) {
			bo->discarded++;
			(*discarded)++;
		} else if (bo->placement == UGPU_PLACEMENT_VRAM && !bo->backup_valid) {
			/* Cannot happen by construction; say so loudly if it does. */
			log_err(m->dev->ctx, "%s: BO '%s' had no backup over suspend",
				m->dev->name, bo->name);
		}
		if (bo_has_backup(bo))
			c->bos++;
		bo_backup_drop(m->dev, bo);
	}
	maps_release_locked(m);
	m->pm_state = BO_PM_ACTIVE;
	pthread_cond_broadcast(&m->pm_cond);
}

/* Not from inside a window (it takes the manager lock). */
static enum ugpu_pm_state state(void *arg)
{
	struct bo_mgr *m = arg;
	enum bo_pm_state s;

	bo_mgr_lock(m);
	s = m->pm_state;
	pthread_mutex_unlock(&m->lock);
	return (enum ugpu_pm_state)s;
}

static const struct pm_mem_ops backup_pm_ops = {
	.prepare_begin = prepare_begin,
	.prepare_evict = prepare_evict,
	.prepare_backup = prepare_backup,
	.prepare_end = prepare_end,
	.cancel = cancel,
	.window_begin = window_begin,
	.window_end = window_end,
	.alloc_missing = alloc_missing,
	.hold_maps = hold_maps,
	.save = save,
	.suspended = suspended,
	.recover = recover,
	.restore = restore,
	.finish = finish,
	.state = state,
};

void backup_register(struct ugpu_device *dev)
{
	pm_mem_register(dev, &backup_pm_ops, dev->bo_mgr);
}
