/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "base/sysmem.h"

int sysmem_create(struct ugpu_context *ctx, size_t size, const char *name, struct sysmem *out)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t rounded;
	void *p;
	int fd, ret;

	out->fd = -1;
	out->vaddr = NULL;
	out->size = 0;
	if (page <= 0)
		page = 4096;
	if (size == 0 || size > SIZE_MAX - (size_t)page) {
		log_err(ctx, "sysmem: bad size %zu (must be > 0 and fit when page rounded)", size);
		return -EINVAL;
	}
	rounded = (size + (size_t)page - 1) & ~((size_t)page - 1);

	/* Sealing is allowed so a later owner (ugpud handing memory to a client)
	 * can freeze the size: a shrink under a live DMA mapping would SIGBUS. */
	fd = memfd_create(name ? name : "ugpu-sysmem", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0) {
		ret = -errno;
		log_err(ctx, "sysmem: memfd_create(%s) failed: %d", name ? name : "ugpu-sysmem", ret);
		return ret;
	}
	if (ftruncate(fd, (off_t)rounded) < 0) {
		ret = -errno;
		log_err(ctx, "sysmem: ftruncate of memfd to %zu bytes failed: %d", rounded, ret);
		goto out_close_fd;
	}
	p = mmap(NULL, rounded, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		ret = -errno;
		log_err(ctx, "sysmem: mmap of %zu bytes failed: %d", rounded, ret);
		goto out_close_fd;
	}
	out->fd = fd;
	out->vaddr = p;
	out->size = rounded;
	return 0;

out_close_fd:
	close(fd);
	return ret;
}

int sysmem_adopt(struct ugpu_context *ctx, int fd, size_t size, struct sysmem *out)
{
	struct stat st;
	void *p;
	int dup_fd, ret;

	out->fd = -1;
	out->vaddr = NULL;
	out->size = 0;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || !size || (uint64_t)st.st_size != size) {
		log_err(ctx, "sysmem: the memory to adopt is %lld bytes, not %zu",
			(long long)st.st_size, size);
		return -EINVAL;
	}
	/* A new open file description of the same memory, not a dup of
	 * @fd's: systemd's fd store keeps one entry per description and
	 * suppresses a second fd of one it holds, whatever its name, so a dup
	 * stored under a new name would vanish with the old name's removal
	 * (the review of the restart's adoption). */
	{
		char path[64];

		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		dup_fd = open(path, O_RDWR | O_CLOEXEC);
	}
	if (dup_fd < 0)
		return -errno;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, dup_fd, 0);
	if (p == MAP_FAILED) {
		ret = -errno;
		log_err(ctx, "sysmem: mmap of %zu bytes to adopt failed: %d", size, ret);
		close(dup_fd);
		return ret;
	}
	out->fd = dup_fd;
	out->vaddr = p;
	out->size = size;
	return 0;
}

void sysmem_destroy(struct sysmem *mem)
{
	if (!mem)
		return;
	if (mem->vaddr && mem->size)
		munmap(mem->vaddr, mem->size);
	if (mem->fd >= 0)
		close(mem->fd);
	mem->fd = -1;
	mem->vaddr = NULL;
	mem->size = 0;
}
