/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engines/engine.h"
#include "base/clock.h"
#include "base/log.h"

const char *engine_space_name(enum engine_space space)
{
	switch (space) {
	case ENGINE_VRAM:
		return "VRAM";
	case ENGINE_IOVA:
		return "IOVA";
	case ENGINE_PEER:
		return "PEER";
	}
	return "?";
}

int engine_ms_left(uint64_t deadline_ms)
{
	uint64_t now = now_ms();

	if (now >= deadline_ms)
		return 0;
	return deadline_ms - now > INT32_MAX ? INT32_MAX : (int)(deadline_ms - now);
}

int engine_create(struct ugpu_context *ctx, const struct engine_ops *ops,
		  const struct engine_cfg *cfg, struct engine **out)
{
	struct engine *e;
	int ret;

	if (!ops || !cfg || !out || !ops->init || !ops->fini || !ops->copy || !ops->wait ||
	    !ops->idle) {
		log_err(ctx, "engine: create without a complete backend, config or result pointer");
		return -EINVAL;
	}
	if (cfg->size < sizeof(cfg->size) || cfg->size > sizeof(*cfg)) {
		log_err(ctx, "engine: config size %zu is not one this library knows", cfg->size);
		return -EINVAL;
	}
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->ops = ops;
	e->ctx = ctx;
	memcpy(&e->cfg, cfg, cfg->size);
	e->cfg.size = sizeof(e->cfg);
	if (e->cfg.timeout_ms <= 0)
		e->cfg.timeout_ms = 5000;
	snprintf(e->name, sizeof(e->name), "%s", ops->name ? ops->name : "engine");
	ret = ops->init(e);
	if (ret < 0) {
		free(e);
		return ret;
	}
	*out = e;
	return 0;
}

void engine_destroy(struct engine *e)
{
	if (!e)
		return;
	e->ops->fini(e);
	free(e);
}

/* Reject what no backend could do, with a line naming the bad argument. */
static int check_addr(struct engine *e, const char *what, const char *role,
		      struct engine_addr a, uint64_t size)
{
	if (a.space != ENGINE_VRAM && a.space != ENGINE_IOVA && a.space != ENGINE_PEER) {
		log_err(e->ctx, "engine %s: %s %s has bad address space %d", e->name, what, role,
			(int)a.space);
		return -EINVAL;
	}
	if (a.addr + (size - 1) < a.addr) {
		log_err(e->ctx, "engine %s: %s %s %s 0x%" PRIx64 " + 0x%" PRIx64 " wraps", e->name,
			what, role, engine_space_name(a.space), a.addr, size);
		return -EINVAL;
	}
	if (a.space == ENGINE_VRAM && e->cfg.vram_size &&
	    (a.addr >= e->cfg.vram_size || size > e->cfg.vram_size - a.addr)) {
		log_err(e->ctx,
			"engine %s: %s %s VRAM 0x%" PRIx64 " + 0x%" PRIx64
			" is past the end of VRAM (0x%" PRIx64 ")",
			e->name, what, role, a.addr, size, e->cfg.vram_size);
		return -EINVAL;
	}
	return 0;
}

int engine_copy(struct engine *e, struct engine_addr dst, struct engine_addr src, uint64_t size,
		uint64_t *fence_out)
{
	int ret;

	if (size == 0) {
		log_err(e->ctx, "engine %s: copy of 0 bytes", e->name);
		return -EINVAL;
	}
	ret = check_addr(e, "copy", "dst", dst, size);
	if (!ret)
		ret = check_addr(e, "copy", "src", src, size);
	if (ret)
		return ret;
	return e->ops->copy(e, dst, src, size, fence_out);
}

int engine_fill(struct engine *e, struct engine_addr dst, uint64_t pattern, uint64_t size,
		uint64_t *fence_out)
{
	int ret;

	if (!e->ops->fill)
		return -EOPNOTSUPP;
	if (size == 0 || (size & 7) || (dst.addr & 7)) {
		log_err(e->ctx,
			"engine %s: fill of 0x%" PRIx64 " bytes at %s 0x%" PRIx64
			": size must be a non-zero multiple of 8 and the address 8-aligned",
			e->name, size, engine_space_name(dst.space), dst.addr);
		return -EINVAL;
	}
	ret = check_addr(e, "fill", "dst", dst, size);
	if (ret)
		return ret;
	return e->ops->fill(e, dst, pattern, size, fence_out);
}

int engine_copy_sum(struct engine *e, struct engine_addr dst, uint64_t src_vram, uint64_t size,
		    uint32_t slot, uint64_t *fence_out)
{
	uint64_t pieces = (size + ENGINE_SUM_PIECE - 1) / ENGINE_SUM_PIECE;
	int ret;

	if (!e->ops->copy_sum || !engine_sum_slots(e))
		return -EOPNOTSUPP;
	if (size == 0) {
		log_err(e->ctx, "engine %s: copy of 0 bytes", e->name);
		return -EINVAL;
	}
	if (slot > engine_sum_slots(e) || pieces > engine_sum_slots(e) - slot)
		return -ENOSPC;
	ret = check_addr(e, "copy", "dst", dst, size);
	if (!ret)
		ret = check_addr(e, "copy", "src", engine_vram(src_vram), size);
	if (ret)
		return ret;
	return e->ops->copy_sum(e, dst, src_vram, size, slot, fence_out);
}

int engine_copy_list(struct engine *e, struct engine_addr dst, struct engine_addr src,
		     const struct engine_chunk *c, uint32_t n, uint32_t slot, uint64_t *fence_out)
{
	uint64_t pieces = 0;
	int ret = 0;

	if (!e->ops->copy_list || !engine_list_max(e))
		return -EOPNOTSUPP;
	if (!n || n > engine_list_max(e)) {
		log_err(e->ctx, "engine %s: copy list of %u chunks (1..%u)", e->name, n,
			engine_list_max(e));
		return -EINVAL;
	}
	if (slot != ENGINE_NO_SUM && src.space != ENGINE_VRAM) {
		log_err(e->ctx, "engine %s: a summed copy list reads %s, not VRAM", e->name,
			engine_space_name(src.space));
		return -EINVAL;
	}
	for (uint32_t i = 0; i < n && !ret; i++) {
		struct engine_addr d = dst, s = src;

		if (!c[i].len || c[i].len > ENGINE_CHUNK_MAX) {
			log_err(e->ctx, "engine %s: copy list chunk %u of 0x%" PRIx64
				" bytes (1..1 GiB)", e->name, i, c[i].len);
			return -EINVAL;
		}
		d.addr += c[i].dst;
		s.addr += c[i].src;
		if (d.addr < dst.addr || s.addr < src.addr) {
			log_err(e->ctx, "engine %s: copy list chunk %u's offsets wrap", e->name, i);
			return -EINVAL;
		}
		ret = check_addr(e, "copy list", "dst", d, c[i].len);
		if (!ret)
			ret = check_addr(e, "copy list", "src", s, c[i].len);
		pieces += (c[i].len + ENGINE_SUM_PIECE - 1) / ENGINE_SUM_PIECE;
	}
	if (ret)
		return ret;
	if (slot != ENGINE_NO_SUM &&
	    (slot > engine_sum_slots(e) || pieces > engine_sum_slots(e) - slot))
		return -ENOSPC;
	return e->ops->copy_list(e, dst, src, c, n, slot, fence_out);
}

uint32_t engine_list_max(struct engine *e)
{
	return e->ops->list_max ? e->ops->list_max(e) : 0;
}

uint32_t engine_sum_slots(struct engine *e)
{
	return e->ops->sum_slots ? e->ops->sum_slots(e) : 0;
}

void engine_sums(struct engine *e, uint32_t slot, uint32_t n, uint64_t *out)
{
	if (e->ops->sums)
		e->ops->sums(e, slot, n, out);
}

int engine_wait(struct engine *e, uint64_t fence, int timeout_ms)
{
	return e->ops->wait(e, fence, timeout_ms < 0 ? 0 : timeout_ms);
}

int engine_idle(struct engine *e, int timeout_ms)
{
	return e->ops->idle(e, timeout_ms < 0 ? 0 : timeout_ms);
}

int engine_reset(struct engine *e)
{
	return e->ops->reset ? e->ops->reset(e) : 0;
}

void engine_plug(struct engine *e)
{
	if (e->ops->plug)
		(void)e->ops->plug(e, true);
}

int engine_unplug(struct engine *e)
{
	return e->ops->plug ? e->ops->plug(e, false) : 0;
}

bool engine_fence_is_done(struct engine *e, uint64_t fence)
{
	if (fence == 0)
		return true;
	if (e->ops->completed)
		return e->ops->completed(e) >= fence;
	return e->ops->wait(e, fence, 0) == 0;
}
