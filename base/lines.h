/* SPDX-License-Identifier: MIT */
/*
 * Read a text file line by line without the C library's stdio (which
 * allocates its FILE and buffer from the C library's heap): for /proc files
 * read on the fault-handling paths of shared virtual memory, whose threads
 * must not touch memory a range may have taken away (base/alloc.h). The
 * buffer is the caller's (on its stack).
 *
 *	struct lines lr;
 *	char *line;
 *	if (lines_open(&lr, "/proc/self/maps") == 0) {
 *		while ((line = lines_next(&lr)))
 *			...;
 *		lines_close(&lr);
 *	}
 *
 * A line longer than the buffer is returned cut at the buffer's size, and
 * the rest of it skipped.
 */
#ifndef UGPU_BASE_LINES_H
#define UGPU_BASE_LINES_H

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

struct lines {
	int fd;
	size_t len; /* bytes in buf */
	size_t pos; /* start of the next line */
	int eof;
	char buf[4096];
};

static inline int lines_open(struct lines *lr, const char *path)
{
	lr->fd = open(path, O_RDONLY | O_CLOEXEC);
	lr->len = lr->pos = 0;
	lr->eof = 0;
	return lr->fd < 0 ? -errno : 0;
}

static inline void lines_close(struct lines *lr)
{
	if (lr->fd >= 0)
		close(lr->fd);
	lr->fd = -1;
}

/* The next line without its newline (valid until the next call), or NULL at
 * the end of the file or on a read error. */
static inline char *lines_next(struct lines *lr)
{
	for (;;) {
		char *start = lr->buf + lr->pos;
		char *nl = memchr(start, '\n', lr->len - lr->pos);
		ssize_t r;

		if (nl) {
			*nl = '\0';
			lr->pos = (size_t)(nl - lr->buf) + 1;
			return start;
		}
		if (lr->eof) {
			if (lr->pos == lr->len)
				return NULL;
			/* a last line without a newline */
			if (lr->len == sizeof(lr->buf))
				lr->len--;
			lr->buf[lr->len] = '\0';
			lr->pos = lr->len;
			return start;
		}
		/* keep the partial line, read more behind it */
		memmove(lr->buf, start, lr->len - lr->pos);
		lr->len -= lr->pos;
		lr->pos = 0;
		if (lr->len == sizeof(lr->buf)) { /* longer than the buffer: cut it */
			lr->buf[lr->len - 1] = '\0';
			lr->pos = lr->len;
			/* skip to the end of the overlong line */
			for (;;) {
				char c;

				r = read(lr->fd, &c, 1);
				if (r <= 0 || c == '\n')
					break;
			}
			lr->len = lr->pos = 0;
			if (r <= 0)
				lr->eof = 1;
			return lr->buf;
		}
		do
			r = read(lr->fd, lr->buf + lr->len, sizeof(lr->buf) - lr->len);
		while (r < 0 && errno == EINTR);
		if (r <= 0)
			lr->eof = 1;
		else
			lr->len += (size_t)r;
	}
}

#endif /* UGPU_BASE_LINES_H */
