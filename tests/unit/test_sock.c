/* SPDX-License-Identifier: MIT */
/*
 * Message framing with fd passing (base/sock.c), over socketpairs: whole
 * messages out of short reads, fds kept or closed, truncated control data,
 * too many fds, signals in the middle of a wait, a peer that goes, a peer
 * that stalls, a body too long to keep, a wake-up that cancels; and whole
 * SOCK_SEQPACKET records (sock_recv_packet(), ugpud's protocol): exact
 * lengths, an oversized record refused and the next one intact, fds kept or
 * closed, a peer that goes, a deadline.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/clock.h"
#include "base/sock.h"

/* The test's own framing: a length and a tag, then the body. */
struct thdr {
	uint32_t len;
	uint32_t tag;
};

static int64_t thdr_len(const void *hdr, void *arg)
{
	const struct thdr *h = hdr;

	(void)arg;
	return h->len == UINT32_MAX ? -EBADMSG : (int64_t)h->len;
}

static struct sock_wait wait_ms(unsigned ms)
{
	return (struct sock_wait){ .deadline_ns = now_ns() + ms * 1000000ull, .wake_fd = -1 };
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n - 1; /* the directory's own fd */
}

static void pair(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
}

static int send_msg(int fd, uint32_t tag, const void *body, uint32_t len, const int *fds, int nfds)
{
	struct thdr h = { .len = len, .tag = tag };
	struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)body, len } };

	return sock_send(fd, iov, 2, fds, nfds, now_ns() + 1000000000ull, NULL);
}

/* A message with a body and two fds comes out whole; the fds work. */
static void test_round_trip(void **state)
{
	int sv[2], p[2];
	struct thdr h;
	struct sock_msg m = { .in.max = 4 };
	struct sock_wait w = wait_ms(1000);
	char c = 0;

	(void)state;
	pair(sv);
	assert_int_equal(pipe(p), 0);
	assert_int_equal(send_msg(sv[0], 7, "hello", 5, p, 2), 0);
	assert_int_equal(sock_recv_msg(sv[1], &h, sizeof(h), thdr_len, NULL, 64, &w, &m), 0);
	assert_int_equal(h.tag, 7);
	assert_int_equal(m.len, 5);
	assert_false(m.dropped);
	assert_memory_equal(m.body, "hello", 5);
	assert_int_equal(m.in.n, 2);
	assert_false(m.in.ctrunc);
	assert_int_equal(write(m.in.fds[1], "x", 1), 1);
	assert_int_equal(read(m.in.fds[0], &c, 1), 1);
	assert_int_equal(c, 'x');
	sock_body_free(m.body);
	sock_fds_close(&m.in);
	/* an empty body */
	assert_int_equal(send_msg(sv[0], 8, NULL, 0, NULL, 0), 0);
	assert_int_equal(sock_recv_msg(sv[1], &h, sizeof(h), thdr_len, NULL, 64, &w, &m), 0);
	assert_int_equal(h.tag, 8);
	assert_int_equal(m.len, 0);
	assert_null(m.body);
	close(p[0]);
	close(p[1]);
	close(sv[0]);
	close(sv[1]);
}

/* Bytes that trickle in (a header cut in two, a body in pieces) make one
 * message. */
struct trickle {
	int fd;
	const uint8_t *buf;
	size_t len;
	/* if not NULL: write nothing until *@after is non-zero (atomic), so
	 * the reader is known to be waiting when the bytes come */
	const int *after;
};

static void *trickle_main(void *arg)
{
	struct trickle *t = arg;

	for (int i = 0; t->after && !__atomic_load_n(t->after, __ATOMIC_ACQUIRE) && i < 5000; i++)
		usleep(1000);
	for (size_t i = 0; i < t->len; i += 3) {
		size_t k = t->len - i < 3 ? t->len - i : 3;

		usleep(2000);
		assert_int_equal(write(t->fd, t->buf + i, k), (ssize_t)k);
	}
	return NULL;
}

static void test_short_reads(void **state)
{
	uint8_t wire[sizeof(struct thdr) + 40];
	struct thdr h = { .len = 40, .tag = 3 };
	struct sock_msg m = { .in.max = 1 };
	struct sock_wait w = wait_ms(5000);
	struct trickle t;
	pthread_t th;
	int sv[2];

	(void)state;
	pair(sv);
	memcpy(wire, &h, sizeof(h));
	for (int i = 0; i < 40; i++)
		wire[sizeof(h) + i] = (uint8_t)i;
	t = (struct trickle){ .fd = sv[0], .buf = wire, .len = sizeof(wire) };
	assert_int_equal(pthread_create(&th, NULL, trickle_main, &t), 0);
	memset(&h, 0, sizeof(h));
	assert_int_equal(sock_recv_msg(sv[1], &h, sizeof(h), thdr_len, NULL, 64, &w, &m), 0);
	pthread_join(th, NULL);
	assert_int_equal(h.tag, 3);
	assert_int_equal(m.len, 40);
	assert_memory_equal(m.body, wire + sizeof(h), 40);
	assert_int_equal(m.in.n, 0);
	sock_body_free(m.body);
	close(sv[0]);
	close(sv[1]);
}

/* More fds than the receiver takes: the kernel truncates the control data
 * (MSG_CTRUNC); the receiver gets what it asked for, nothing leaks. */
static void test_ctrunc(void **state)
{
	int sv[2], fds[5], before;
	struct sock_msg m = { .in.max = 2 };
	struct sock_wait w = wait_ms(1000);
	struct thdr h;

	(void)state;
	pair(sv);
	for (int i = 0; i < 5; i++)
		fds[i] = eventfd(0, EFD_CLOEXEC);
	assert_int_equal(send_msg(sv[0], 1, "ab", 2, fds, 5), 0);
	for (int i = 0; i < 5; i++)
		close(fds[i]);
	before = count_fds();
	assert_int_equal(sock_recv_msg(sv[1], &h, sizeof(h), thdr_len, NULL, 64, &w, &m), 0);
	assert_true(m.in.ctrunc);
	assert_int_equal(m.in.n, 2);
	assert_int_equal(count_fds(), before + 2);
	sock_fds_close(&m.in);
	assert_int_equal(count_fds(), before);
	sock_body_free(m.body);
	/* a receiver that takes none */
	m = (struct sock_msg){ .in.max = 0 };
	fds[0] = eventfd(0, EFD_CLOEXEC);
	assert_int_equal(send_msg(sv[0], 2, NULL, 0, fds, 1), 0);
	close(fds[0]);
	assert_int_equal(sock_recv_msg(sv[1], &h, sizeof(h), thdr_len, NULL, 64, &w, &m), 0);
	assert_true(m.in.ctrunc);
	assert_int_equal(m.in.n, 0);
	assert_int_equal(count_fds(), before);
	close(sv[0]);
	close(sv[1]);
}

/* A sender cannot pass more than SOCK_MAX_FDS: refused, nothing sent. */
static void test_too_many_fds(void **state)
{
	int sv[2], fds[SOCK_MAX_FDS + 1];
	struct thdr h = { 0 };
	struct iovec iov = { &h, sizeof(h) };
	struct sock_wait w = wait_ms(50);
	struct sock_fds in = { .max = SOCK_MAX_FDS };
	size_t sent = 1;

	(void)state;
	pair(sv);
	for (int i = 0; i <= SOCK_MAX_FDS; i++)
		fds[i] = 0;
	assert_int_equal(sock_send(sv[0], &iov, 1, fds, SOCK_MAX_FDS + 1, now_ns() + 1000000000ull, &sent),
			 -EINVAL);
	assert_int_equal(sent, 0);
	assert_int_equal(sock_send(sv[0], &iov, 1, fds, -1, now_ns() + 1000000000ull, NULL), -EINVAL);
	assert_int_equal(sock_recv(sv[1], &h, sizeof(h), &in, &w), -ETIMEDOUT);
	/* SOCK_MAX_FDS is allowed, and all of them arrive */
	assert_int_equal(sock_send(sv[0], &iov, 1, fds, SOCK_MAX_FDS, now_ns() + 1000000000ull, NULL), 0);
	w = wait_ms(1000);
	assert_int_equal(sock_recv(sv[1], &h, sizeof(h), &in, &w), 0);
	assert_int_equal(in.n, SOCK_MAX_FDS);
	assert_false(in.ctrunc);
	sock_fds_close(&in);
	close(sv[0]);
	close(sv[1]);
}

/* Signals while a receive waits (poll fails with EINTR) do not end it. */
static void on_usr1(int sig)
{
	(void)sig;
}

struct sig_rx {
	int fd;
	int ret;
	struct thdr h;
	struct sock_msg m;
	volatile int done;
};

static void *sig_rx_main(void *arg)
{
	struct sig_rx *r = arg;
	struct sock_wait w = wait_ms(5000);

	r->m.in.max = 1;
	r->ret = sock_recv_msg(r->fd, &r->h, sizeof(r->h), thdr_len, NULL, 64, &w, &r->m);
	__atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void test_eintr(void **state)
{
	struct sigaction sa = { .sa_handler = on_usr1 }, old;
	struct sig_rx r = { 0 };
	pthread_t th;
	int sv[2];

	(void)state;
	pair(sv);
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0; /* no SA_RESTART: interrupted calls fail with EINTR */
	assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);
	r.fd = sv[1];
	assert_int_equal(pthread_create(&th, NULL, sig_rx_main, &r), 0);
	for (int i = 0; i < 20; i++) {
		pthread_kill(th, SIGUSR1);
		usleep(2000);
	}
	assert_int_equal(write(sv[0], "\x04\0\0\0\x09\0", 6), 6); /* half a message */
	for (int i = 0; i < 20; i++) {
		pthread_kill(th, SIGUSR1);
		usleep(2000);
	}
	assert_false(__atomic_load_n(&r.done, __ATOMIC_ACQUIRE));
	assert_int_equal(write(sv[0], "\0\0wxyz", 6), 6);
	pthread_join(th, NULL);
	sigaction(SIGUSR1, &old, NULL);
	assert_int_equal(r.ret, 0);
	assert_int_equal(r.h.tag, 9);
	assert_int_equal(r.m.len, 4);
	assert_memory_equal(r.m.body, "wxyz", 4);
	sock_body_free(r.m.body);
	close(sv[0]);
	close(sv[1]);
}

/* A peer that closes: before a message, in its header, in its body; and a
 * send to a peer that has gone. */
static void test_peer_closed(void **state)
{
	static const char *const parts[] = { "", "\x08\0", "\x08\0\0\0\x01\0\0\0abc" };
	struct sock_wait w;
	struct thdr h = { 0 };
	int sv[2], before = count_fds();

	(void)state;
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		struct sock_msg m = { .in.max = 1 };
		size_t n = i == 0 ? 0 : i == 1 ? 2 : 11;
		int efd = eventfd(0, EFD_CLOEXEC);

		pair(sv);
		if (n) {
			struct iovec iov = { (void *)parts[i], n };

			assert_int_equal(sock_send(sv[0], &iov, 1, &efd, 1, now_ns() + 1000000000ull, NULL), 0);
		}
		close(efd);
		close(sv[0]);
		w = wait_ms(1000);
		assert_int_equal(sock_recv_msg(sv[1], &h, sizeof(h), thdr_len, NULL, 64, &w, &m), -ECONNRESET);
		assert_null(m.body);
		assert_int_equal(m.in.n, 0);
		close(sv[1]);
	}
	assert_int_equal(count_fds(), before); /* the fd that came with a cut message is closed */
	pair(sv);
	close(sv[1]);
	assert_int_equal(send_msg(sv[0], 1, "x", 1, NULL, 0), -ECONNRESET);
	close(sv[0]);
}

/* A peer that stops in the middle of a message: the deadline ends the wait;
 * a sender whose peer does not read times out too, saying how far it got. */
static void test_stall(void **state)
{
	struct sock_msg m = { .in.max = 1 };
	struct sock_wait w = wait_ms(30);
	struct thdr h;
	static uint8_t big[1 << 20];
	struct iovec iov = { big, sizeof(big) };
	uint64_t t0;
	size_t sent = 0;
	int sv[2];

	(void)state;
	pair(sv);
	assert_int_equal(write(sv[0], "\x10\0\0\0\0\0\0\0ab", 10), 10);
	t0 = now_ns();
	assert_int_equal(sock_recv_msg(sv[1], &h, sizeof(h), thdr_len, NULL, 64, &w, &m), -ETIMEDOUT);
	assert_true(now_ns() - t0 >= 30000000ull);
	assert_null(m.body);
	close(sv[1]);
	close(sv[0]);

	pair(sv);
	assert_int_equal(sock_send(sv[0], &iov, 1, NULL, 0, now_ns() + 30000000ull, &sent), -ETIMEDOUT);
	assert_true(sent > 0 && sent < sizeof(big));
	close(sv[0]);
	close(sv[1]);
}

/* A header the framing refuses, and a body over the limit: the first is the
 * caller's error (fds closed), the second is dropped and the stream stays
 * in step. */
static void test_bad_frames(void **state)
{
	struct sock_msg m = { .in.max = 1 };
	struct sock_wait w = wait_ms(1000);
	struct thdr h = { .len = UINT32_MAX };
	struct iovec iov = { &h, sizeof(h) };
	char body[100];
	int sv[2], efd, before = count_fds();

	(void)state;
	pair(sv);
	efd = eventfd(0, EFD_CLOEXEC);
	assert_int_equal(sock_send(sv[0], &iov, 1, &efd, 1, now_ns() + 1000000000ull, NULL), 0);
	close(efd);
	assert_int_equal(sock_recv_msg(sv[1], &h, sizeof(h), thdr_len, NULL, 64, &w, &m), -EBADMSG);
	assert_int_equal(m.in.n, 0);
	assert_int_equal(count_fds(), before + 2);

	memset(body, 'z', sizeof(body));
	assert_int_equal(send_msg(sv[0], 5, body, sizeof(body), NULL, 0), 0);
	assert_int_equal(send_msg(sv[0], 6, "ok", 2, NULL, 0), 0);
	assert_int_equal(sock_recv_msg(sv[1], &h, sizeof(h), thdr_len, NULL, 64, &w, &m), 0);
	assert_true(m.dropped);
	assert_int_equal(m.len, sizeof(body));
	assert_null(m.body);
	assert_int_equal(sock_recv_msg(sv[1], &h, sizeof(h), thdr_len, NULL, 64, &w, &m), 0);
	assert_int_equal(h.tag, 6);
	assert_memory_equal(m.body, "ok", 2);
	sock_body_free(m.body);
	close(sv[0]);
	close(sv[1]);
}

/* The wake fd: a poke that is drained lets the wait go on; one the caller
 * turns into an error ends it. */
struct waker {
	int efd;
	int calls;
	int give_up_after;
};

static int woken(void *arg)
{
	struct waker *k = arg;
	uint64_t v;

	assert_int_equal(read(k->efd, &v, sizeof(v)), (ssize_t)sizeof(v));
	return __atomic_add_fetch(&k->calls, 1, __ATOMIC_RELEASE) > k->give_up_after ? -ECANCELED
										: 0;
}

static void test_wake(void **state)
{
	static const uint8_t rest[] = "cd";
	struct waker k = { .efd = eventfd(0, EFD_CLOEXEC), .give_up_after = 1 };
	struct sock_wait w = { .deadline_ns = now_ns() + 5000000000ull, .wake_fd = k.efd, .woken = woken,
			       .arg = &k };
	struct sock_fds in = { .max = 0 };
	struct trickle t;
	uint64_t one = 1;
	pthread_t th;
	char buf[4];
	int sv[2];

	(void)state;
	pair(sv);
	/* a poke while half the bytes are there: drained, the wait goes on
	 * (the rest comes only once the poke was seen: no race with the
	 * reader's first receive) */
	assert_int_equal(write(k.efd, &one, sizeof(one)), (ssize_t)sizeof(one));
	assert_int_equal(write(sv[0], "ab", 2), 2);
	t = (struct trickle){ .fd = sv[0], .buf = rest, .len = 2, .after = &k.calls };
	assert_int_equal(pthread_create(&th, NULL, trickle_main, &t), 0);
	assert_int_equal(sock_recv(sv[1], buf, sizeof(buf), &in, &w), 0);
	pthread_join(th, NULL);
	assert_int_equal(k.calls, 1);
	assert_memory_equal(buf, "abcd", 4);
	/* a poke the caller gives up on */
	assert_int_equal(write(k.efd, &one, sizeof(one)), (ssize_t)sizeof(one));
	assert_int_equal(write(sv[0], "ab", 2), 2);
	assert_int_equal(sock_recv(sv[1], buf, sizeof(buf), &in, &w), -ECANCELED);
	assert_int_equal(k.calls, 2);
	close(k.efd);
	close(sv[0]);
	close(sv[1]);
}

/* SOCK_SEQPACKET records: one receive is one record, whatever its size. */
static void test_packets(void **state)
{
	unsigned char big[3000], buf[1024];
	struct sock_wait w = wait_ms(2000);
	int sv[2], fds[2], before;
	size_t len = 0;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	before = count_fds();
	memset(big, 0xab, sizeof(big));
	/* a record in three parts arrives as one */
	{
		struct iovec iov[3] = { { big, 10 }, { big + 10, 20 }, { big + 30, 5 } };

		assert_int_equal(sock_send(sv[0], iov, 3, NULL, 0, w.deadline_ns, NULL), 0);
	}
	{
		struct sock_fds in = { .max = 0 };

		assert_int_equal(sock_recv_packet(sv[1], buf, sizeof(buf), &len, &in, &w), 0);
		assert_int_equal(len, 35);
		assert_int_equal(in.n, 0);
	}
	/* longer than the buffer: refused with its real length, dropped, and
	 * its fds still handed over (for the caller to close); the next record
	 * is intact */
	{
		struct iovec iov = { big, sizeof(big) };
		struct iovec iov2 = { "next", 4 };
		struct sock_fds in = { .max = 2 };

		assert_int_equal(pipe(fds), 0);
		assert_int_equal(sock_send(sv[0], &iov, 1, fds, 2, w.deadline_ns, NULL), 0);
		close(fds[0]);
		close(fds[1]);
		assert_int_equal(sock_send(sv[0], &iov2, 1, NULL, 0, w.deadline_ns, NULL), 0);
		assert_int_equal(sock_recv_packet(sv[1], buf, sizeof(buf), &len, &in, &w), -EMSGSIZE);
		assert_int_equal(len, sizeof(big));
		assert_int_equal(in.n, 2);
		sock_fds_close(&in);
		assert_int_equal(sock_recv_packet(sv[1], buf, sizeof(buf), &len, &in, &w), 0);
		assert_int_equal(len, 4);
		assert_memory_equal(buf, "next", 4);
	}
	/* fds where the caller takes none: closed, and said */
	{
		struct iovec iov = { "x", 1 };
		struct sock_fds in = { .max = 0 };

		assert_int_equal(pipe(fds), 0);
		assert_int_equal(sock_send(sv[0], &iov, 1, fds, 2, w.deadline_ns, NULL), 0);
		close(fds[0]);
		close(fds[1]);
		assert_int_equal(sock_recv_packet(sv[1], buf, sizeof(buf), &len, &in, &w), 0);
		assert_int_equal(in.n, 0);
		assert_true(in.ctrunc);
	}
	assert_int_equal(count_fds(), before);
	/* nothing comes: the deadline */
	{
		struct sock_wait shortw = wait_ms(30);
		struct sock_fds in = { .max = 0 };
		uint64_t t0 = now_ms();

		assert_int_equal(sock_recv_packet(sv[1], buf, sizeof(buf), &len, &in, &shortw),
				 -ETIMEDOUT);
		assert_true(now_ms() - t0 >= 29);
	}
	/* the peer goes */
	close(sv[0]);
	{
		struct sock_fds in = { .max = 0 };

		assert_int_equal(sock_recv_packet(sv[1], buf, sizeof(buf), &len, &in, &w), -ECONNRESET);
	}
	close(sv[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_short_reads),
		cmocka_unit_test(test_ctrunc),
		cmocka_unit_test(test_too_many_fds),
		cmocka_unit_test(test_eintr),
		cmocka_unit_test(test_peer_closed),
		cmocka_unit_test(test_stall),
		cmocka_unit_test(test_bad_frames),
		cmocka_unit_test(test_wake),
		cmocka_unit_test(test_packets),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
