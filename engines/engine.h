/* SPDX-License-Identifier: MIT */
/*
 * Copy engines: one ops table, several backends (engines/<name>/).
 *
 * An engine moves bytes between VRAM offsets, IOVAs (system memory mapped
 * through the device's DMA space, vfio/dma.h) and peer VRAM, and orders
 * its work with fences. A fence is a 64-bit sequence number per engine,
 * strictly increasing from 1; waiting for fence F waits for every command
 * submitted before F. Fence 0 is always complete.
 *
 * Backends (choose one explicitly at creation; nothing picks for you):
 *  - engine_sim_ops (engines/sim): one copy engine of the reference device,
 *    driven through its ring, doorbell, fences and MSI-X (docs/reference-device.md).
 *  - engine_cpu_ops (engines/cpu): memcpy through the VRAM BAR mapping; for
 *    early restore (before engines are up) and devices without a blitter.
 *
 * Errors are -errno: -EINVAL (bad arguments, named in a log line), -EIO (the
 * engine failed a command: the command is named in a log line and the engine
 * runs nothing until engine_reset()), -ETIMEDOUT (a bounded wait ran out),
 * -EOPNOTSUPP (the backend cannot do that), -ENODEV (the device is gone).
 */
#ifndef UGPU_ENGINES_ENGINE_H
#define UGPU_ENGINES_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ugpu_context;
struct vfio_dev;
struct dma_space;
struct engine;

/* Address spaces; the numbers are the reference device's descriptor encoding. */
enum engine_space {
	ENGINE_VRAM = 0, /* offset into this device's VRAM */
	ENGINE_IOVA = 1, /* device address mapped through the DMA space */
	ENGINE_PEER = 2, /* offset into the VRAM of fabric node @peer */
};

struct engine_addr {
	enum engine_space space;
	uint32_t peer; /* ENGINE_PEER: fabric node id; else 0 */
	uint64_t addr;
};

/* One chunk of a copy list (engine_copy_list()): @len bytes (> 0, at most
 * ENGINE_CHUNK_MAX) from @src to @dst, offsets in the list's spaces. */
struct engine_chunk {
	uint64_t dst, src, len;
};
#define ENGINE_CHUNK_MAX (1ull << 30)
/* copy_list without checksums. */
#define ENGINE_NO_SUM UINT32_MAX

static inline struct engine_addr engine_vram(uint64_t off)
{
	return (struct engine_addr){ .space = ENGINE_VRAM, .addr = off };
}
static inline struct engine_addr engine_iova(uint64_t iova)
{
	return (struct engine_addr){ .space = ENGINE_IOVA, .addr = iova };
}
static inline struct engine_addr engine_peer(uint32_t node, uint64_t off)
{
	return (struct engine_addr){ .space = ENGINE_PEER, .peer = node, .addr = off };
}

/*
 * struct engine_cfg - what an engine drives. Zero what you do not use; @size
 * is sizeof(struct engine_cfg) as the caller compiled it (the struct grows at
 * its end).
 */
struct engine_cfg {
	size_t size;
	/* The device. Required by sim; cpu needs it only when @vram is NULL. */
	struct vfio_dev *dev;
	/* The caller's mapping of all of VRAM (BAR2), or NULL: the engine maps
	 * what it needs itself (and unmaps it at destroy). */
	void *vram;
	/* Bytes of VRAM. 0: the engine reads it from the BAR2 region info. */
	uint64_t vram_size;
	/* The device's DMA space: cpu resolves IOVAs through it (NULL: IOVA
	 * addresses fail with -EFAULT). sim does not need it. */
	struct dma_space *dma;
	/* sim: which copy engine of the device (0 or 1). */
	uint32_t index;
	/* sim: VRAM the caller reserved for the engine: the ring at
	 * @ring_offset (4 KiB aligned) of @ring_size bytes (power of two,
	 * 4 KiB .. 1 MiB), then one 4 KiB fence page and the sum slots
	 * (ENGINE_SUM_AREA); see engine_sim_vram_bytes(). */
	uint64_t ring_offset;
	uint32_t ring_size;
	/* Bound for waits the caller cannot bound itself (ring full, reset,
	 * idle at destroy); 0 = 5000 ms. */
	int timeout_ms;
};

/*
 * struct engine_ops - one backend. Members marked "may be NULL" are optional;
 * the engine_*() wrappers answer -EOPNOTSUPP (or do nothing) for them.
 * Every op except init/fini may be called from several threads at once; each
 * backend serialises internally and documents how next to its state.
 */
struct engine_ops {
	/* Backend name for logs ("sim", "cpu"). */
	const char *name;
	/* Set up @e (e->ctx and e->cfg are filled) and store private state in
	 * e->priv. Returns 0 or -errno; on failure nothing is left to fini. */
	int (*init)(struct engine *e);
	/* Release everything init made. Waits (bounded by cfg.timeout_ms) for
	 * submitted work first. Never fails. */
	void (*fini)(struct engine *e);
	/* Queue a copy of @size bytes (> 0) from @src to @dst. @fence_out: the
	 * fence that completes with it, or NULL when the caller does not need one
	 * (then only a later fence or idle tells completion). */
	int (*copy)(struct engine *e, struct engine_addr dst, struct engine_addr src, uint64_t size,
		    uint64_t *fence_out);
	/* Queue a fill of @size bytes (> 0, multiple of 8, @dst 8-aligned) with the
	 * 64-bit @pattern. @fence_out as for copy. May be NULL. */
	int (*fill)(struct engine *e, struct engine_addr dst, uint64_t pattern, uint64_t size,
		    uint64_t *fence_out);
	/* Wait up to @timeout_ms (>= 0) for @fence. 0 when complete; -ETIMEDOUT;
	 * -EIO when the engine failed before reaching it (the failing command is
	 * logged once); -EINVAL for a fence never handed out. */
	int (*wait)(struct engine *e, uint64_t fence, int timeout_ms);
	/* Wait up to @timeout_ms for everything submitted. Errors as wait. */
	int (*idle)(struct engine *e, int timeout_ms);
	/* Recover from an error (or a hang): the engine drops what was queued
	 * (waits on those fences return -EIO) and accepts work again. May be
	 * NULL (the backend cannot fail). */
	int (*reset)(struct engine *e);
	/* Highest fence known complete (no device access beyond a memory read).
	 * May be NULL. */
	uint64_t (*completed)(struct engine *e);
	/* Queue a copy of @size bytes (> 0) from VRAM at @src_vram to @dst that
	 * also writes the XXH3-64 of each ENGINE_SUM_PIECE of it (the last one
	 * may be shorter) into the engine's sum slots @slot, @slot + 1, ...;
	 * read them with sums once the fence completed. -ENOSPC when the slots
	 * run past sum_slots. May be NULL (no such copy: hash on the CPU). */
	int (*copy_sum)(struct engine *e, struct engine_addr dst, uint64_t src_vram, uint64_t size,
			uint32_t slot, uint64_t *fence_out);
	/* How many sum slots the engine has (0: copy_sum is refused). May be
	 * NULL. */
	uint32_t (*sum_slots)(struct engine *e);
	/* Sum slots [@slot, @slot + @n) into @out. May be NULL. */
	void (*sums)(struct engine *e, uint32_t slot, uint32_t n, uint64_t *out);
	/* Queue one command that copies each of the @n chunks @c (a gather /
	 * scatter list: n ≤ list_max) from @src to @dst, the chunks' offsets
	 * added to @src.addr and @dst.addr (the spaces and peers are the
	 * list's). With @slot other than ENGINE_NO_SUM (and @src in VRAM), it
	 * writes the XXH3-64 of each ENGINE_SUM_PIECE of each chunk, counted
	 * from the chunk's start, into the sum slots from @slot on: chunk 0's
	 * pieces first, then chunk 1's, ... (as copy_sum per chunk). -ENOSPC
	 * when the slots run past sum_slots. @fence_out as for copy. May be
	 * NULL (no lists: one copy per chunk). */
	int (*copy_list)(struct engine *e, struct engine_addr dst, struct engine_addr src,
			 const struct engine_chunk *c, uint32_t n, uint32_t slot,
			 uint64_t *fence_out);
	/* The most chunks one copy_list takes (0: none). May be NULL. */
	uint32_t (*list_max)(struct engine *e);
	/* Start (@on) or end a batch: while at least one batch is open, queued
	 * commands reach the device only when the ring fills, when anyone waits
	 * or idles, or when the last batch ends (one doorbell per batch instead
	 * of one per command). Nests. Returns the doorbell's error at the end:
	 * a doorbell posted (the sim backend over vfio-user) fails here only
	 * when it cannot be sent; what the device made of it shows at the
	 * wait. May be NULL (the backend has no doorbell to save). */
	int (*plug)(struct engine *e, bool on);
};

/*
 * struct engine - one engine instance.
 * Locking: the fields here are written only by engine_create() and read-only
 * afterwards; the backend's state behind @priv has its own lock.
 */
struct engine {
	const struct engine_ops *ops;
	struct ugpu_context *ctx;
	struct engine_cfg cfg; /* copied at creation (zero-extended) */
	char name[32]; /* "sim0", "cpu" for logs */
	void *priv;
};

extern const struct engine_ops engine_sim_ops;
extern const struct engine_ops engine_cpu_ops;

/* VRAM bytes the sim engine needs at cfg.ring_offset for @ring_size. */
/* The sum slots of copy_sum: 8 bytes each, 8,192 of them (the sums of
 * 512 MiB of copies queued at once; a longer pass reads them and uses them
 * again, mm/backup.c sums_reap()). */
#define ENGINE_SUM_PIECE (64u << 10)
#define ENGINE_SUM_AREA (64u << 10)

static inline uint64_t engine_sim_vram_bytes(uint32_t ring_size)
{
	return (uint64_t)ring_size + 4096 + ENGINE_SUM_AREA;
}

/*
 * engine_create() - create an engine with the backend @ops.
 * @ctx: for logs; may be NULL.
 * @cfg: see struct engine_cfg; copied.
 * Returns: 0 with *@out set; -EINVAL (bad cfg: named in a log line),
 * -ENOMEM, or the backend's init error.
 * Context: any thread.
 */
int engine_create(struct ugpu_context *ctx, const struct engine_ops *ops,
		  const struct engine_cfg *cfg, struct engine **out);

/* engine_destroy() - fini and free; NULL is a no-op. No other call on @e
 * may run concurrently or after. */
void engine_destroy(struct engine *e);

/* Validated wrappers around the ops (arguments checked here once, so every
 * backend sees sane sizes and spaces). Context: any thread. */
int engine_copy(struct engine *e, struct engine_addr dst, struct engine_addr src, uint64_t size,
		uint64_t *fence_out);
int engine_fill(struct engine *e, struct engine_addr dst, uint64_t pattern, uint64_t size,
		uint64_t *fence_out);
/* copy_sum (engine_ops): -EOPNOTSUPP when the engine has none. */
int engine_copy_sum(struct engine *e, struct engine_addr dst, uint64_t src_vram, uint64_t size,
		    uint32_t slot, uint64_t *fence_out);
/* The engine's sum slots; 0 when it has no copy_sum. */
uint32_t engine_sum_slots(struct engine *e);
/* copy_list (engine_ops): -EOPNOTSUPP when the engine has none, -EINVAL
 * for a bad chunk (named in a log line), -ENOSPC (sum slots). */
int engine_copy_list(struct engine *e, struct engine_addr dst, struct engine_addr src,
		     const struct engine_chunk *c, uint32_t n, uint32_t slot, uint64_t *fence_out);
/* The most chunks one engine_copy_list() takes; 0 when the engine has no
 * lists (then copy chunk by chunk). */
uint32_t engine_list_max(struct engine *e);
/* Sum slots [@slot, @slot + @n) (within engine_sum_slots()) into @out. */
void engine_sums(struct engine *e, uint32_t slot, uint32_t n, uint64_t *out);
#ifdef UGPU_TEST_HOOKS
/* A sim engine offers at most @n sum slots from now on (a pass of a few
 * MiB then uses them again, as 512 MiB does). Not while a copy runs. */
void engine_sim_test_limit_sums(struct engine *e, uint32_t n);
#endif
int engine_wait(struct engine *e, uint64_t fence, int timeout_ms);
int engine_idle(struct engine *e, int timeout_ms);
int engine_reset(struct engine *e);
/*
 * engine_plug()/engine_unplug() - batch submissions (see engine_ops.plug):
 * commands queued in between are started together at unplug, or earlier
 * when the ring fills or someone waits. Keep batches short: work queued in a
 * batch does not start until then. Context: any thread; nests per engine.
 * Returns: 0 or the doorbell's -errno (unplug: only a doorbell that could
 * not be sent, when it is posted; the device's own errors show at the wait).
 */
void engine_plug(struct engine *e);
int engine_unplug(struct engine *e);
/* True when @fence is known complete (never blocks). A fence queued inside
 * a still-open batch is not started, so polling it alone never ends it. */
bool engine_fence_is_done(struct engine *e, uint64_t fence);

/* "VRAM", "IOVA", "PEER" (or "?") for log lines. */
const char *engine_space_name(enum engine_space space);

/* Bounded wall-clock helpers shared by backends. */
/* Milliseconds left until @deadline_ms (0 when past), capped to INT32_MAX. */
int engine_ms_left(uint64_t deadline_ms);

#endif
