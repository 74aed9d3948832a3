/* SPDX-License-Identifier: MIT */
/*
 * System memory a device may reach by DMA.
 *
 * Backed by a sealable memfd mapped MAP_SHARED, so both transports can hand
 * it to a device: vfio-user passes the fd (the device process mmaps the same
 * pages), kernel vfio-pci pins the pages behind @vaddr. Mapping it for DMA is
 * the DMA space's business (vfio/dma.h); this module only owns memory.
 */
#ifndef UGPU_SRC_SYSMEM_H
#define UGPU_SRC_SYSMEM_H

#include <stddef.h>

struct ugpu_context;

/*
 * struct sysmem - one memfd-backed buffer.
 * @fd: the memfd (close-on-exec, sealing allowed); -1 when empty.
 * @vaddr: the MAP_SHARED mapping of the whole fd, page aligned.
 * @size: bytes, a multiple of the page size.
 *
 * Locking: none. A sysmem is plain data owned by its creator; the memory it
 * describes may be shared with the device and other threads, the struct is
 * not mutated after sysmem_create().
 */
struct sysmem {
	int fd;
	void *vaddr;
	size_t size;
};

/*
 * sysmem_create() - allocate @size bytes (rounded up to the page size) of
 * zeroed, device-reachable system memory.
 * @ctx: for error logs; may be NULL.
 * @size: bytes wanted, > 0.
 * @name: memfd name shown in /proc/PID/fd and maps (debugging); may be NULL.
 * @out: filled on success; set to { .fd = -1 } on failure.
 *
 * Returns: 0, -EINVAL (size 0 or overflowing when rounded), -ENOMEM,
 * -EMFILE/-ENFILE (out of fds) or another -errno from memfd_create/ftruncate/
 * mmap; the failing step is logged.
 * Context: any thread.
 */
int sysmem_create(struct ugpu_context *ctx, size_t size, const char *name, struct sysmem *out);

/*
 * sysmem_adopt() - take memory another owner made (a memfd kept across a
 * restart of ugpud, docs/daemon.md) as a sysmem: the same memory opened
 * again (/proc/self/fd: a new open file description, not a dup), mapped.
 * @size: the bytes the caller expects it to hold, a multiple of the page
 *        size; the file's size must be exactly that.
 * Returns: 0; -EINVAL (@fd not a regular file of @size bytes); -errno of the
 * open, fstat or mmap; @out is set to { .fd = -1 } on failure.
 * Context: any thread.
 */
int sysmem_adopt(struct ugpu_context *ctx, int fd, size_t size, struct sysmem *out);

/*
 * sysmem_destroy() - unmap and close. Safe on a zeroed-by-failure or already
 * destroyed sysmem (fd -1). The caller must have removed any DMA mapping of
 * it first: the device would otherwise keep reaching the pages.
 * Context: any thread; not concurrently with users of the memory.
 */
void sysmem_destroy(struct sysmem *mem);

#endif
