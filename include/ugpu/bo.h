/* SPDX-License-Identifier: MIT */
/*
 * Buffer objects: device-reachable memory that lives in VRAM or in system
 * memory and moves between them (eviction, suspend, unplug) without losing a
 * byte. A BO's CPU mapping follows it: when it moves, the mapping is
 * invalidated and the next touch maps wherever it lives now.
 *
 * Calls that may touch the device (create, pin and migrate that move, read
 * and write of a VRAM BO) first wake it if it sleeps (runtime PM). A wake
 * that fails gives -EIO or -ETIMEDOUT, or another -errno the transport
 * reported; a device found gone makes the call wait (bounded) for its
 * removal and then use the BO's system copy (or say -ENODATA if the removal
 * lost it), or -ENODEV when the removal did not finish in time.
 *
 * BOs of a device opened through ugpud ("ugpud:SOCKET", docs/daemon.md) live
 * in the daemon: each call is a request on the connection, and its errors
 * are the daemon's answer (the same codes as here) or the connection's:
 * -ENODEV when the daemon went away or the device was closed, -ETIMEDOUT
 * when it did not answer within 30 s, -EPROTO for a malformed answer.
 * ugpu_bo_create() there may also return -EDQUOT (the BO would pass the
 * connection's VRAM quota: ugpud --vram-quota) or -EMFILE (the connection
 * holds the most BOs ugpud allows, --max-bos); the KERNEL and LATE_RESTORE
 * flags are refused (-EINVAL). While the daemon has the device
 * host-suspended, calls that need it (create, read, write, pin, unpin,
 * migrate, map) are -EAGAIN until its resume, and so are they while a step
 * of a host-suspend cycle or a removal that an administrator asked for
 * runs (ugpuctl daemon-pm; a prepare may take 5 s); the other calls wait
 * for that step to end. A daemon that keeps its sessions (ugpud
 * --fd-store) holds VRAM a BO left until its restart record no longer
 * names it: a create, migrate or pin that needs that VRAM is -EAGAIN when
 * the daemon cannot store the record (logged there). When a daemon that keeps its
 * sessions (ugpud --fd-store) restarts, the library connects again and
 * takes its session back within 15 s: BOs keep their handles and bytes, and
 * a read, write, query, migrate or unmap that was in flight is sent again
 * (an unmap the dead daemon did then answers 0); a create, pin, unpin or map
 * in flight is -ECONNRESET (done or not: not known; the BOs are back, retry
 * what is needed; a map is undone). A mapping made before the restart stays
 * the BO's memory, both ways, unless the restarted daemon cannot take that
 * memory back (logged at the resume with their count): then the BO holds
 * the bytes of the restart, the mapping no longer reaches it, and every
 * call on it but ugpu_bo_unmap(), ugpu_bo_query() and ugpu_bo_put(), a
 * bind of it included, returns -ESTALE until it is unmapped; a new map is
 * its memory again. docs/daemon.md, "Restart". A BO the daemon made in system memory comes with its memory
 * (one open fd in this process until the BO is mapped or put, at most 64
 * at a time; past that none): ugpu_bo_map() of it then usually asks the
 * daemon nothing (and is not -EAGAIN then); migrate, pin and binds give
 * that memory back first and behave as for any BO not mapped.
 */
#ifndef UGPU_BO_H
#define UGPU_BO_H

#include <ugpu/device.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ugpu_bo;

/** Where a BO's pages can live. */
enum ugpu_placement {
	UGPU_PLACEMENT_NONE = 0,
	UGPU_PLACEMENT_VRAM = 1, /**< device memory, through the buddy allocator */
	UGPU_PLACEMENT_SYSTEM = 2, /**< memfd-backed system memory mapped for device DMA */
};

/* BO flags (struct ugpu_bo_opts.flags). */
#define UGPU_BO_PINNED (1u << 0) /**< created pinned: never evicted */
#define UGPU_BO_CPU_ACCESS (1u << 1) /**< will be mapped by the CPU */
#define UGPU_BO_CONTIGUOUS (1u << 2) /**< one contiguous VRAM range */
#define UGPU_BO_KERNEL (1u << 3) /**< a driver object (rings, page tables): restored early, by CPU */
#define UGPU_BO_NO_RESTORE (1u << 4) /**< contents may be lost over suspend */
#define UGPU_BO_LATE_RESTORE (1u << 5) /**< restored by the blitter after the engines (with KERNEL) */
#define UGPU_BO_FLAGS_ALL 0x3fu

#define UGPU_BO_MAX_PLACEMENTS 2

/**
 * struct ugpu_bo_opts - how to create a BO.
 * @size: sizeof(struct ugpu_bo_opts) as the caller compiled it; it must
 *        reach past @bytes, and fields past it read as zero.
 * @bytes: size of the object, > 0; rounded up to the page size.
 * @placements: allowed placements in order of preference; the first that
 *              can be satisfied (after evicting, for VRAM) is used. Unused
 *              entries are UGPU_PLACEMENT_NONE. All NONE means {VRAM, SYSTEM}.
 * @flags: UGPU_BO_* bits.
 * @name: for logs and reports (copied); may be NULL.
 */
struct ugpu_bo_opts {
	size_t size;
	uint64_t bytes;
	enum ugpu_placement placements[UGPU_BO_MAX_PLACEMENTS];
	uint32_t flags;
	const char *name;
};

/**
 * struct ugpu_bo_info - what ugpu_bo_query() reports.
 * @size: set by the caller to sizeof(struct ugpu_bo_info).
 * @bytes: object size.
 * @placement: where the pages are now.
 * @vram_offset: device address in VRAM when @placement is VRAM and the BO is
 *               contiguous (else the first block's offset).
 * @flags: UGPU_BO_* bits.
 * @pin_count: pins held.
 * @cpu_mapped: a CPU mapping exists (through ugpud: this process mapped it).
 * @lost: the contents were lost and the BO has no backing (a surprise
 *        removal took the only copy); reads and writes fail with -ENODATA.
 * @discarded: how many host suspends dropped the contents of this
 *        NO_RESTORE BO (it keeps its VRAM, which holds whatever the device
 *        left there; the BO stays usable).
 * @has_backup: a host-suspend backup is held (prepared or suspended).
 * @corrupt: how many resumes found this BO's backup damaged (its checksum
 *        did not match) and restored it anyway (ugpu_device_resume()
 *        returned -EBADMSG).
 */
struct ugpu_bo_info {
	size_t size;
	uint64_t bytes;
	enum ugpu_placement placement;
	uint64_t vram_offset;
	uint32_t flags;
	uint32_t pin_count;
	bool cpu_mapped;
	bool lost;
	uint32_t discarded;
	bool has_backup;
	uint32_t corrupt;
};

/**
 * ugpu_bo_create() - create a BO on @dev.
 * @dev: the device.
 * @opts: options.
 * @out: the BO, holding one reference, on success.
 *
 * A BO whose first placement is VRAM evicts unpinned BOs (least recently
 * used first) to system memory when VRAM is short; contents are zero.
 *
 * Returns: 0; -EINVAL (bad size, flags, placements; NULL argument);
 * -ENOSPC when no allowed placement can hold it even after eviction
 * (nothing is lost); -ENOMEM; -ENODEV when the device is gone and SYSTEM is
 * not allowed; -EBUSY when the device is host-suspended (no VRAM until
 * resume) and SYSTEM is not allowed; -EIO when an eviction copy failed (the
 * victim keeps its data) or the device did not wake from runtime suspend;
 * -ETIMEDOUT when another thread's power transition did not finish in time;
 * through ugpud also -EDQUOT, -EMFILE, -EPROTO (see the top of this file).
 * Context: any thread.
 */
UGPU_API int ugpu_bo_create(struct ugpu_device *dev, const struct ugpu_bo_opts *opts,
			    struct ugpu_bo **out);

/** ugpu_bo_get() - take a reference. Context: any thread. */
UGPU_API void ugpu_bo_get(struct ugpu_bo *bo);

/**
 * ugpu_bo_put() - drop a reference; the last one destroys the BO (its CPU
 * mapping, if any, is removed; pins are dropped). NULL is a no-op. Also
 * valid after ugpu_device_close() of the BO's device (the last put then
 * frees the handle).
 * Context: any thread; the caller must not use @bo afterwards.
 */
UGPU_API void ugpu_bo_put(struct ugpu_bo *bo);

/**
 * ugpu_bo_pin() - keep the BO where it is (moving it to its first
 * placement first if it was evicted). Pinned BOs are never evicted.
 * Returns: 0; -EINVAL (NULL); -ENOSPC / -EIO / -ETIMEDOUT as
 * ugpu_bo_create() when it had to move; -EBUSY when it had to move into
 * VRAM while the device is host-suspended, or had to move while it is
 * bound in a GPU VM on which a kernel runs now (include/ugpu/vm.h), or
 * through ugpud while mapped (docs/daemon.md);
 * -ENODATA when its contents were lost (pinned already or not; before the
 * other reasons below); -ENODEV when it had to move into VRAM of a removed
 * device, or the device was closed; -EOVERFLOW past 2^31 pins.
 * Context: any thread.
 */
UGPU_API int ugpu_bo_pin(struct ugpu_bo *bo);

/**
 * ugpu_bo_unpin() - drop one pin. Dropping the last pin also drops a
 * host-suspend backup prepare made (not while the device is suspended: the
 * backup then holds the only copy until resume).
 * Returns: 0; -EINVAL when the BO is not pinned (or NULL); -ENODEV after
 * the device was closed.
 * Context: any thread.
 */
UGPU_API int ugpu_bo_unpin(struct ugpu_bo *bo);

/**
 * ugpu_bo_migrate() - move the BO's contents to @placement with the copy
 * engine (or the CPU when the device has none). Byte-exact; CPU mappings are
 * invalidated first and fault to the new place afterwards.
 * Returns: 0; -EINVAL (placement not allowed for this BO, NULL); -EBUSY
 * (pinned elsewhere, bound in a GPU VM on which a kernel runs now
 * (include/ugpu/vm.h), the device is host-suspended, or through ugpud a
 * move out of system memory while mapped); -ENOSPC; -EIO (copy
 * failed: the BO stays where it was, intact; or the device did not wake);
 * -ETIMEDOUT (a power transition did not finish in time); -ENODATA (its
 * contents were lost); -ENODEV (VRAM asked of a gone device, or the device
 * was closed).
 * Context: any thread.
 */
UGPU_API int ugpu_bo_migrate(struct ugpu_bo *bo, enum ugpu_placement placement);

/* ugpu_bo_migrate_device() flags: which path the bytes take. */
#define UGPU_MIGRATE_DIRECT (1u << 0) /**< over the fabric only, a slow link too: -ENOLINK when no link joins them */
#define UGPU_MIGRATE_VIA_SYSTEM (1u << 1) /**< through system memory even over a fast link */
#define UGPU_MIGRATE_FLAGS_ALL 0x3u

/**
 * ugpu_bo_migrate_device() - move the BO into the VRAM of another device
 * of the same context; the BO then belongs to @dst (its calls, its VRAM,
 * its eviction, ugpu_device_mem_stats() of @dst count it).
 * @bo: the BO (in VRAM or system memory of its device).
 * @dst: the device to move it to. @dst equal to the BO's device (at the
 *       moment of the call: another thread may have moved it there) is
 *       ugpu_bo_migrate(@bo, UGPU_PLACEMENT_VRAM), whatever @flags say.
 * @flags: 0, or one UGPU_MIGRATE_* bit.
 *
 * With a fast link (include/ugpu/fabric.h) between the two and the BO in
 * VRAM, the BO's device copies it straight into @dst's VRAM over the
 * fabric; otherwise (a slow link, no link, a BO in system memory, or
 * UGPU_MIGRATE_VIA_SYSTEM) the bytes go through system memory, copied out
 * by the BO's device and in by @dst. A slow link is used directly only
 * when asked (UGPU_MIGRATE_DIRECT): through system memory is the faster
 * path there on the reference device (docs/multi-device.md). Byte-exact; @dst evicts its own
 * unpinned BOs (least recently used first) to make room. Both devices are
 * woken from runtime suspend first. A CPU mapping (ugpu_bo_map()) follows
 * the BO: same address, stores before and after the move land in the BO,
 * a touch during the move waits for it. A BO of a removed device (in system
 * memory) may move to a device that is still there.
 *
 * Returns: 0; -EINVAL (NULL, unknown or both flags, VRAM not among the
 * BO's placements, a driver object);
 * -EXDEV (@dst belongs to another context); -EBUSY (the BO is pinned or
 * bound in a GPU VM; or a host-suspend cycle is open on either device; or,
 * inside ugpud, a client maps its memory);
 * -ENOSYS (the BO is CPU-mapped and @dst has no usable userfaultfd for its
 * mapping); -ENOLINK
 * (UGPU_MIGRATE_DIRECT with no link at all, with the BO outside VRAM, or
 * with no copy engine on the BO's device); -ENOSPC (@dst's VRAM cannot hold
 * it even after eviction); -ENODATA (its contents were lost); -ENODEV (@dst
 * is removed, being removed, or closed, the BO's device was closed, or it is being removed
 * and its removal is moving the BO now); -EIO (a copy failed: the BO stays
 * where it was, intact; or a device did not wake); -ETIMEDOUT (a power
 * transition did not finish in time); -ENOMEM; -EOPNOTSUPP (a BO or
 * device served by ugpud: not moved between devices through the daemon).
 * Context: any thread.
 */
UGPU_API int ugpu_bo_migrate_device(struct ugpu_bo *bo, struct ugpu_device *dst, uint32_t flags);

/**
 * ugpu_bo_map() - map the BO for the CPU.
 * @bo: the BO.
 * @addr: the address of the mapping (the same for every call until unmap).
 *
 * The mapping is backed lazily: the first touch (and the first touch after
 * every move) faults and maps the BO's current pages. Writes are never lost
 * to a move that races with them. A touch that needs the device awake (the
 * BO in VRAM) when the device does not wake raises SIGBUS (logged), and so
 * does every touch after it until the BO next moves or is unmapped and
 * mapped again (docs/cpu-mappings.md).
 * Returns: 0; -EINVAL (NULL); -ENOMEM; -ENOSYS when userfaultfd is not
 * available; -ENODEV after the device was closed.
 * Context: any thread.
 * Through ugpud (docs/daemon.md): the daemon moves the BO to system memory
 * and holds it there while it is mapped (migrate and pin are -EBUSY until
 * ugpu_bo_unmap() or the last put), and the mapping is of that BO's memory
 * alone; -EINVAL when SYSTEM is not an allowed placement, -EBUSY when it is
 * pinned in VRAM, -EAGAIN while the daemon host-suspends the device or runs
 * a power step on it (try again; an event says when it is suspended),
 * -EMFILE when this process has no room for the BO's fd (RLIMIT_NOFILE).
 */
UGPU_API int ugpu_bo_map(struct ugpu_bo *bo, void **addr);

/**
 * ugpu_bo_unmap() - remove the CPU mapping (the address becomes invalid).
 * The BO and its contents are unaffected, also while the device sleeps.
 * Returns: 0; -EINVAL when not mapped (or NULL); -ENODEV after the device
 * was closed (which removed the mapping already).
 * Context: any thread; no thread may touch the mapping during or after.
 */
UGPU_API int ugpu_bo_unmap(struct ugpu_bo *bo);

/**
 * ugpu_bo_write() / ugpu_bo_read() - copy bytes into / out of the BO wherever
 * it lives (by CPU through the VRAM BAR or system memory).
 * Returns: 0; -EINVAL when [@offset, @offset + @len) is outside the BO (or
 * NULL arguments); -ENODATA when the BO's contents were lost; -EBUSY when the
 * BO is in VRAM and the device is host-suspended; -EIO / -ETIMEDOUT when the
 * device did not wake from runtime suspend; -ENODEV after the device was
 * closed.
 * Context: any thread.
 */
UGPU_API int ugpu_bo_write(struct ugpu_bo *bo, uint64_t offset, const void *buf, size_t len);
UGPU_API int ugpu_bo_read(struct ugpu_bo *bo, uint64_t offset, void *buf, size_t len);

/**
 * ugpu_bo_query() - describe a BO.
 * Returns: 0; -EINVAL (NULL, or @info->size too small to hold the size
 * field); -ENODEV after the device was closed.
 * Context: any thread.
 */
UGPU_API int ugpu_bo_query(struct ugpu_bo *bo, struct ugpu_bo_info *info);

#ifdef __cplusplus
}
#endif

#endif /* UGPU_BO_H */
