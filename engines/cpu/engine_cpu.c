/* SPDX-License-Identifier: MIT */
/*
 * The cpu engine: copies by memcpy through the VRAM BAR mapping and the DMA
 * space's record of which process memory backs an IOVA. Work is done inside
 * copy()/fill(), so fences complete at once. Used to restore kernel objects
 * before the device's engines are up, and for devices without a blitter.
 * Peer VRAM is not reachable this way (-EOPNOTSUPP).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "engines/engine.h"
#include "base/log.h"
#include "vfio/dma.h"
#include "vfio/transport.h"

/*
 * Locking: @vram, @vram_owned are set at init and read-only after. @seqno is
 * the last fence handed out, atomically incremented; a fence is complete when
 * handed out because the work is done before copy() returns.
 */
struct cpu_engine {
	char *vram;
	bool vram_owned; /* we mapped BAR2 ourselves and unmap it at fini */
	uint64_t seqno;
};

static struct cpu_engine *cpu(struct engine *e)
{
	return e->priv;
}

static int cpu_init(struct engine *e)
{
	struct cpu_engine *c;
	struct vfio_dev_region_info ri;
	void *p;
	int ret;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	snprintf(e->name, sizeof(e->name), "cpu");
	if (e->cfg.vram) {
		c->vram = e->cfg.vram;
		if (!e->cfg.vram_size) {
			log_err(e->ctx, "engine cpu: a VRAM mapping was given without its size");
			ret = -EINVAL;
			goto out_free;
		}
	} else {
		if (!e->cfg.dev) {
			log_err(e->ctx, "engine cpu: needs a device or a VRAM mapping");
			ret = -EINVAL;
			goto out_free;
		}
		memset(&ri, 0, sizeof(ri));
		ret = e->cfg.dev->ops->region_info(e->cfg.dev, VFIO_REGION_BAR2, &ri);
		if (ret < 0 || ri.size == 0 || !(ri.flags & VFIO_REGION_F_MMAP)) {
			log_err(e->ctx, "engine cpu: %s: VRAM BAR (region 2) is absent or not mappable (%d)",
				e->cfg.dev->name, ret);
			ret = ret < 0 ? ret : -ENODEV;
			goto out_free;
		}
		ret = e->cfg.dev->ops->region_mmap(e->cfg.dev, VFIO_REGION_BAR2, 0, ri.size,
						   PROT_READ | PROT_WRITE, &p);
		if (ret < 0) {
			log_err(e->ctx, "engine cpu: %s: mmap of the VRAM BAR failed: %d",
				e->cfg.dev->name, ret);
			goto out_free;
		}
		c->vram = p;
		c->vram_owned = true;
		if (!e->cfg.vram_size || e->cfg.vram_size > ri.size)
			e->cfg.vram_size = ri.size;
	}
	e->priv = c;
	return 0;

out_free:
	free(c);
	return ret;
}

static void cpu_fini(struct engine *e)
{
	struct cpu_engine *c = cpu(e);

	if (c->vram_owned)
		e->cfg.dev->ops->region_munmap(e->cfg.dev, c->vram, e->cfg.vram_size);
	free(c);
	e->priv = NULL;
}

/* Process address and contiguous length of @a for @need access. */
static int resolve(struct engine *e, const char *op, const char *role, struct engine_addr a,
		   uint64_t size, uint32_t need, char **p, uint64_t *len)
{
	struct cpu_engine *c = cpu(e);
	void *v;
	int ret;

	switch (a.space) {
	case ENGINE_VRAM:
		*p = c->vram + a.addr; /* bounds checked by engine_copy/engine_fill */
		*len = size;
		return 0;
	case ENGINE_IOVA:
		ret = e->cfg.dma ? dma_space_lookup(e->cfg.dma, a.addr, need, &v, len) : -EFAULT;
		if (ret < 0) {
			log_err(e->ctx,
				"engine cpu: %s %s IOVA 0x%" PRIx64 " is not mapped for %s (%d)", op,
				role, a.addr, need == VFIO_DMA_WRITE ? "device writes" : "device reads",
				ret);
			return -EFAULT;
		}
		*p = v;
		return 0;
	case ENGINE_PEER:
		log_err(e->ctx, "engine cpu: %s %s PEER node %u: peer VRAM is not reachable by CPU",
			op, role, a.peer);
		return -EOPNOTSUPP;
	}
	return -EINVAL;
}

static uint64_t next_fence(struct cpu_engine *c)
{
	return __atomic_add_fetch(&c->seqno, 1, __ATOMIC_ACQ_REL);
}

static int cpu_copy(struct engine *e, struct engine_addr dst, struct engine_addr src, uint64_t size,
		    uint64_t *fence_out)
{
	/* Resolve both sides fully before moving a byte: a bad address fails
	 * the command without a partial effect, as the device does. */
	uint64_t done = 0;
	int ret;

	while (done < size) {
		struct engine_addr d = dst, s = src;
		uint64_t dl, sl, n;
		char *dp, *sp;

		d.addr += done;
		s.addr += done;
		ret = resolve(e, "COPY", "dst", d, size - done, VFIO_DMA_WRITE, &dp, &dl);
		if (ret)
			return ret;
		ret = resolve(e, "COPY", "src", s, size - done, VFIO_DMA_READ, &sp, &sl);
		if (ret)
			return ret;
		n = size - done;
		n = dl < n ? dl : n;
		n = sl < n ? sl : n;
		done += n;
	}
	for (done = 0; done < size;) {
		struct engine_addr d = dst, s = src;
		uint64_t dl, sl, n;
		char *dp, *sp;

		d.addr += done;
		s.addr += done;
		if (resolve(e, "COPY", "dst", d, size - done, VFIO_DMA_WRITE, &dp, &dl) ||
		    resolve(e, "COPY", "src", s, size - done, VFIO_DMA_READ, &sp, &sl))
			return -EFAULT; /* unmapped under us: the caller broke ordering */
		n = size - done;
		n = dl < n ? dl : n;
		n = sl < n ? sl : n;
		memmove(dp, sp, n);
		done += n;
	}
	if (fence_out)
		*fence_out = next_fence(cpu(e));
	return 0;
}

static int cpu_fill(struct engine *e, struct engine_addr dst, uint64_t pattern, uint64_t size,
		    uint64_t *fence_out)
{
	uint64_t done = 0;

	while (done < size) {
		struct engine_addr d = dst;
		uint64_t dl, n, i;
		char *dp;
		int ret;

		d.addr += done;
		ret = resolve(e, "FILL", "dst", d, size - done, VFIO_DMA_WRITE, &dp, &dl);
		if (ret)
			return ret;
		n = dl < size - done ? dl : size - done;
		/* Byte copies of the pattern keep unaligned IOVA buffers safe; the
		 * compiler turns this into word stores when it can. */
		for (i = 0; i < n; i += 8)
			memcpy(dp + i, &pattern, n - i < 8 ? n - i : 8);
		done += n;
	}
	if (fence_out)
		*fence_out = next_fence(cpu(e));
	return 0;
}

static int cpu_wait(struct engine *e, uint64_t fence, int timeout_ms)
{
	(void)timeout_ms;
	if (fence > __atomic_load_n(&cpu(e)->seqno, __ATOMIC_ACQUIRE)) {
		log_err(e->ctx, "engine cpu: wait for fence %" PRIu64 " that was never handed out",
			fence);
		return -EINVAL;
	}
	return 0;
}

static int cpu_idle(struct engine *e, int timeout_ms)
{
	(void)e;
	(void)timeout_ms;
	return 0;
}

static uint64_t cpu_completed(struct engine *e)
{
	return __atomic_load_n(&cpu(e)->seqno, __ATOMIC_ACQUIRE);
}

const struct engine_ops engine_cpu_ops = {
	.name = "cpu",
	.init = cpu_init,
	.fini = cpu_fini,
	.copy = cpu_copy,
	.fill = cpu_fill,
	.wait = cpu_wait,
	.idle = cpu_idle,
	.reset = NULL, /* nothing can get stuck */
	.completed = cpu_completed,
};
