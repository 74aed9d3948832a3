/* SPDX-License-Identifier: MIT */
/*
 * Whole messages with fds over a stream socket (base layer): the one piece of
 * framing the vfio-user client (vfio/), ugpu-sim's server and the daemon
 * use. The daemon's SOCK_SEQPACKET records need no framing: sock_send() sends
 * one, sock_recv_packet() reads one. A message is a fixed-size header that says how long its body is, then
 * the body; fds ride SCM_RIGHTS on its first byte.
 *
 * Everything is bounded by an absolute CLOCK_MONOTONIC deadline (now_ns(),
 * base/clock.h) and works on blocking and non-blocking sockets alike (it
 * never blocks outside poll()). EINTR is retried. No logging, no global
 * state; thread-safe as long as one thread reads and one thread writes a
 * socket at a time (callers hold their own send lock).
 *
 * Errors: -ECONNRESET when the peer is gone (EOF, ECONNRESET, EPIPE,
 * ENOTCONN), -ETIMEDOUT at the deadline, -EINVAL for bad arguments, other
 * -errno from the socket calls.
 */
#ifndef UGPU_BASE_SOCK_H
#define UGPU_BASE_SOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* Most fds one message carries, either way (the kernel's SCM_MAX_FD is 253). */
#define SOCK_MAX_FDS 16

/*
 * sock_send() - send all of @iov (one message) on @fd, @fds (may be NULL when
 * @nfds is 0) on its first byte.
 * @iov: rewritten as it is consumed (a copy of the caller's header/body list)
 * @sent: if not NULL, gets the bytes that went out, also on failure: a message
 *        cut after its first byte leaves the stream out of step, which the
 *        caller must treat as a broken connection
 * Returns: 0; -EINVAL (@nfds < 0 or > SOCK_MAX_FDS, @iovcnt < 1);
 * -ECONNRESET; -ETIMEDOUT; -errno.
 */
int sock_send(int fd, struct iovec *iov, int iovcnt, const int *fds, int nfds,
	      uint64_t deadline_ns, size_t *sent);

/*
 * struct sock_wait - how a receive waits.
 * @deadline_ns: CLOCK_MONOTONIC bound for the whole receive
 * @wake_fd: polled with the socket when >= 0 (an eventfd another thread
 *           pokes); then @woken runs
 * @woken: called when @wake_fd is readable: returns 0 to go on waiting (it
 *         should drain @wake_fd), or -errno to give up with it (what was
 *         read so far is lost: the stream is then out of step)
 * @arg: for @woken
 */
struct sock_wait {
	uint64_t deadline_ns;
	int wake_fd;
	int (*woken)(void *arg);
	void *arg;
};

/*
 * struct sock_fds - fds that came with a message.
 * @fds: the first @n of them are open, owned by the caller (close-on-exec)
 * @max: how many the caller takes (<= SOCK_MAX_FDS); the control buffer is
 *       sized for it
 * @ctrunc: more fds came than @max (those were closed: by the kernel, which
 *          then sets MSG_CTRUNC, or here), or the kernel cut the control data
 */
struct sock_fds {
	int fds[SOCK_MAX_FDS];
	int n;
	int max;
	bool ctrunc;
};

/* Close every fd in @in and forget them. */
void sock_fds_close(struct sock_fds *in);

/*
 * sock_recv() - read exactly @len bytes from @fd into @buf, adding the fds
 * that come with them to @in.
 * Returns: 0; -ECONNRESET; -ETIMEDOUT; what @w->woken returned; -errno.
 */
int sock_recv(int fd, void *buf, size_t len, struct sock_fds *in, const struct sock_wait *w);

/*
 * sock_body_len_fn - how long the body after header @hdr is, or a negative
 * errno when the header cannot be framed (the stream is then out of step).
 */
typedef int64_t (*sock_body_len_fn)(const void *hdr, void *arg);

/*
 * struct sock_msg - a received message.
 * @body: allocated from the driver's heap (base/alloc.h), @len bytes (NULL
 *        when @len is 0 or the body was dropped); release it with
 *        sock_body_free() (free() in code built with base/alloc.h)
 * @len: the body's length as the header gives it
 * @dropped: the body was longer than the caller's limit: it was read and
 *           thrown away, so the stream stays in step
 */
struct sock_msg {
	void *body;
	size_t len;
	bool dropped;
	struct sock_fds in;
};

/*
 * sock_recv_msg() - read one message: @hdr_len bytes into @hdr, then the body
 * @body_len says (a body over @max_body is dropped, see struct sock_msg).
 * @out: @out->in.max says how many fds to take; the rest is filled here. On
 *       failure nothing in @out is left to free or close.
 * Returns: 0; what @body_len returned; -ENOMEM; what sock_recv() returns.
 */
int sock_recv_msg(int fd, void *hdr, size_t hdr_len, sock_body_len_fn body_len, void *arg,
		  size_t max_body, const struct sock_wait *w, struct sock_msg *out);

/* sock_body_free() - release a struct sock_msg's @body (NULL is a no-op):
 * for callers built without the driver's heap (tools, tests). */
void sock_body_free(void *body);
/*
 * sock_take_fds() - keep the fds of @msg's SCM_RIGHTS messages in @in (up to
 * @in->max; the rest are closed and @in->ctrunc set, as it is when the kernel
 * set MSG_CTRUNC). For callers that receive themselves (ugpud's io_uring
 * loop reads its clients' records with IORING_OP_RECVMSG).
 */
void sock_take_fds(struct msghdr *msg, struct sock_fds *in);

/*
 * sock_recv_packet() - read one record of a SOCK_SEQPACKET socket (one
 * message, whatever its length: there is no header to frame it) into @buf,
 * with its fds into @in.
 * @len: gets the record's length (also when it was longer than @cap)
 * Returns: 0; -EMSGSIZE when the record was longer than @cap (it was read
 * and dropped; the fds that came with it are in @in); -ECONNRESET (peer gone:
 * an empty record reads as that too); -ETIMEDOUT; what @w->woken returned;
 * -errno.
 */
int sock_recv_packet(int fd, void *buf, size_t cap, size_t *len, struct sock_fds *in,
		     const struct sock_wait *w);

/*
 * sock_wait_accepting() - wait (polling every 10 ms, at most @ms) until a
 * SOCK_SEQPACKET UNIX socket at @path accepts a connection (a daemon just
 * started listens). Returns true when it did.
 */
bool sock_wait_accepting(const char *path, unsigned int ms);

#endif
