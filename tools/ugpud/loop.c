/* SPDX-License-Identifier: MIT */
/*
 * ugpud's event loop on io_uring (liburing): the listening socket is read
 * with IORING_OP_ACCEPT, every client's requests with IORING_OP_RECVMSG and
 * its replies written with IORING_OP_SENDMSG, the termination signals with
 * IORING_OP_READ of a signalfd. One thread submits and reaps everything.
 *
 * Per client, exactly one request is in flight: its receive, its wait (a
 * fence wait watches the fence's eventfd with IORING_OP_POLL_ADD linked to
 * a timeout of at most UGPUD_WAIT_SLICE_MS), or the send of its reply. So a client's queue in the daemon
 * is one record each way, whatever it sends: what it pipelines waits in its
 * own socket buffer (the kernel's bound), and a client that stops reading
 * its replies stalls only itself. A refused peer gets its error with a
 * non-blocking send and is closed at once.
 */
#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"
#include "tools/ugpud/ugpud.h"

#define RING_ENTRIES 256
/* How long the loop waits for in-flight operations at exit. */
#define EXIT_DRAIN_MS 2000

enum op_kind { OP_ACCEPT, OP_RECV, OP_SEND, OP_SIGNAL, OP_WAIT, OP_WAIT_TIMEOUT, OP_EVENTFD, OP_JOBS };

/* Room for a control message of @n fds: at least CMSG_SPACE(n ints). */
#define CTRL_BYTES(n) (sizeof(struct cmsghdr) + (n) * sizeof(int) + 8)

/* What a completion's user_data points to. */
struct op {
	enum op_kind kind;
	struct client *c;
};

struct client_io {
	struct op recv_op;
	struct op send_op;
	/* a fence wait: a poll of its eventfd linked to a timeout (two
	 * completions; the answer goes when both came) */
	struct op wait_op;
	struct op wait_tmo_op;
	struct __kernel_timespec wait_ts;
	int wait_pending;
	bool busy; /* an operation is in flight */
	struct iovec rx_iov;
	struct msghdr rx_msg;
	union {
		char b[CTRL_BYTES(SOCK_MAX_FDS)];
		size_t align; /* cmsghdr's alignment (its flexible array makes it no member) */
	} ctrl;
	struct iovec tx_iov;
	struct msghdr tx_msg;
	union {
		char b[CTRL_BYTES(1)];
		size_t align;
	} tx_ctrl;
	int tx_fd; /* sent with the reply in flight (UGPUD_BO_MAP), closed after; -1 */
	/* aligned for the wire structs that are read and written in them */
	_Alignas(8) unsigned char rx[UGPUD_MAX_MSG];
	_Alignas(8) unsigned char tx[UGPUD_MAX_MSG];
};

/*
 * The workers: slow requests (struct ugpud_job) run here, off the loop.
 * Locking: @lock guards @todo, @done and @stop; a job is written by one side
 * before it is queued and read by the other after it is taken, both under
 * @lock. The workers touch only the job (libugpu calls on its BO), never a
 * client or the daemon's state. @done_fd (an eventfd) wakes the loop.
 */
struct pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct ugpud_job *todo, **todo_tail;
	struct ugpud_job *done;
	bool stop;
	int done_fd;
	unsigned int n;
	pthread_t threads[UGPUD_MAX_WORKERS];
};

struct loop {
	struct io_uring ring;
	struct pool pool;
	struct op jobs_op;
	uint64_t jobs_count;
	struct ugpud *d;
	int listen_fd;
	struct op accept_op;
	int sig_fd;
	struct op sig_op;
	struct signalfd_siginfo si;
	struct op ev_op;
	uint64_t ev_count;
	bool stop;
};

/* Hand the queued entries to the kernel before the loop's turn ends: the
 * replies among them acknowledge what the restart record holds, so it is
 * brought up to date first (with some hundred clients the queue filled
 * within one turn and replies went out before persist_sync(): the review
 * of the restart's adoption). */
static void submit_early(struct loop *lp)
{
	persist_sync(lp->d);
	io_uring_submit(&lp->ring);
}

static struct io_uring_sqe *get_sqe(struct loop *lp)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&lp->ring);

	if (!sqe) { /* the submission queue is full: hand it to the kernel */
		submit_early(lp);
		sqe = io_uring_get_sqe(&lp->ring);
	}
	return sqe;
}

static void arm_accept(struct loop *lp)
{
	struct io_uring_sqe *sqe = get_sqe(lp);

	io_uring_prep_accept(sqe, lp->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data(sqe, &lp->accept_op);
}

static void arm_signal(struct loop *lp)
{
	struct io_uring_sqe *sqe = get_sqe(lp);

	io_uring_prep_read(sqe, lp->sig_fd, &lp->si, sizeof(lp->si), 0);
	io_uring_sqe_set_data(sqe, &lp->sig_op);
}

static void *worker(void *arg)
{
	struct pool *p = arg;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct ugpud_job *j;
		uint64_t one = 1;

		while (!p->todo && !p->stop)
			pthread_cond_wait(&p->cond, &p->lock);
		if (!p->todo)
			break; /* stopping, nothing left */
		j = p->todo;
		p->todo = j->next;
		if (!p->todo)
			p->todo_tail = &p->todo;
		pthread_mutex_unlock(&p->lock);
		job_run(j);
		pthread_mutex_lock(&p->lock);
		j->next = p->done;
		p->done = j;
		if (write(p->done_fd, &one, sizeof(one)) < 0) {
			/* the counter is at its most: the loop is woken already */
		}
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

static struct loop *the_loop; /* for d->offload (one loop per daemon) */

static void loop_offload(struct ugpud *d, struct client *c)
{
	struct pool *p = &the_loop->pool;

	(void)d;
	c->io->busy = true;
	pthread_mutex_lock(&p->lock);
	c->job.next = NULL;
	*p->todo_tail = &c->job;
	p->todo_tail = &c->job.next;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

static void arm_jobs(struct loop *lp)
{
	struct io_uring_sqe *sqe = get_sqe(lp);

	io_uring_prep_read(sqe, lp->pool.done_fd, &lp->jobs_count, sizeof(lp->jobs_count), 0);
	io_uring_sqe_set_data(sqe, &lp->jobs_op);
}

static void arm_send(struct loop *lp, struct client *c, size_t len, int fd);
static void unpark(struct loop *lp, uint32_t device);

/* Finished jobs: answer their clients. */
static void on_jobs(struct loop *lp)
{
	struct ugpud_job *j;

	pthread_mutex_lock(&lp->pool.lock);
	j = lp->pool.done;
	lp->pool.done = NULL;
	pthread_mutex_unlock(&lp->pool.lock);
	while (j) {
		struct ugpud_job *next = j->next;
		struct client *c = j->c;
		bool pm = j->op == UGPUD_DEVICE_PM;
		uint32_t device = j->handle;
		size_t len;
		int fd = -1;

		c->io->busy = false;
		len = serve_job_done(lp->d, c, c->io->tx, &fd);
		if (!len && c->job_busy) { /* on a worker again */
			j = next;
			continue;
		}
		arm_send(lp, c, len, fd);
		if (pm)
			unpark(lp, device);
		j = next;
	}
}

/* host_sleep() (sleep.c), on the loop: an administrator's step of @device
 * runs on a worker; wait for it here, its answer and the requests it held
 * handled as on_jobs() does. */
static void loop_pm_wait(struct ugpud *d, uint32_t device)
{
	while (d->devs[device].pm_busy) {
		on_jobs(the_loop);
		if (d->devs[device].pm_busy)
			usleep(1000);
	}
}

static int pool_start(struct loop *lp, unsigned int n)
{
	struct pool *p = &lp->pool;

	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	p->todo_tail = &p->todo;
	p->done_fd = eventfd(0, EFD_CLOEXEC);
	if (p->done_fd < 0)
		return -errno;
	for (p->n = 0; p->n < n; p->n++)
		if (pthread_create(&p->threads[p->n], NULL, worker, p))
			break;
	return 0;
}

/* After every job is done (the loop drained its clients). */
static void pool_stop(struct loop *lp)
{
	struct pool *p = &lp->pool;

	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	for (unsigned int i = 0; i < p->n; i++)
		pthread_join(p->threads[i], NULL);
	/* jobs of clients the exit drain gave up on: their BO references go
	 * before the devices do (the clients themselves are left, see
	 * loop_run()) */
	for (struct ugpud_job *j = p->done; j; j = j->next) {
		ugpu_bo_put(j->bo);
		j->bo = NULL;
	}
	p->done = NULL;
	close(p->done_fd);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
}

/* The removal callback's wake-up (d->ev_fd), read through the ring. */
static void arm_eventfd(struct loop *lp)
{
	struct io_uring_sqe *sqe = get_sqe(lp);

	io_uring_prep_read(sqe, lp->d->ev_fd, &lp->ev_count, sizeof(lp->ev_count), 0);
	io_uring_sqe_set_data(sqe, &lp->ev_op);
}

/*
 * d->event: one UGPUD_EVENT record to every client of the device, sent at
 * once without waiting (MSG_DONTWAIT) beside whatever the ring has in
 * flight for it (a record is whole either way). A client whose socket
 * buffer is full (it reads nothing) misses the event, counted; it still
 * gets the clear errors of the device's state.
 */
static void loop_event(struct ugpud *d, const struct ugpud_event *ev)
{
	unsigned char rec[sizeof(struct ugpud_hdr) + sizeof(*ev)];
	struct ugpud_hdr h = { .magic = UGPUD_MAGIC, .op = UGPUD_EVENT, .len = sizeof(*ev) };

	memcpy(rec, &h, sizeof(h));
	memcpy(rec + sizeof(h), ev, sizeof(*ev));
	list_for_each(l, &d->clients) {
		struct client *c = list_entry(l, struct client, link);

		if (!c->hello || c->device != ev->device)
			continue;
		if (send(c->fd, rec, sizeof(rec), MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)sizeof(rec))
			d->events_sent++;
		else
			d->events_dropped++;
	}
	ugpud_log("device %u: event %u told to its clients", ev->device, ev->kind);
}

/* Removals the callback flagged: tell the clients once each. */
static void on_removals(struct ugpud *d)
{
	for (unsigned int i = 0; i < d->ndevs; i++) {
		struct ugpud_dev *u = &d->devs[i];
		struct ugpud_event ev = { .kind = UGPUD_EV_REMOVED, .device = i };

		if (u->removal_told || !__atomic_load_n(&u->removed, __ATOMIC_ACQUIRE))
			continue;
		u->removal_told = true;
		u->suspended = false; /* what is left is served from system memory */
		ev.arg = (uint32_t)u->removed_kind;
		ev.status = u->removed_status;
		loop_event(d, &ev);
	}
}

static void arm_recv(struct loop *lp, struct client *c)
{
	struct client_io *io = c->io;
	struct io_uring_sqe *sqe = get_sqe(lp);

	io->rx_iov = (struct iovec){ .iov_base = io->rx, .iov_len = sizeof(io->rx) };
	io->rx_msg = (struct msghdr){
		.msg_iov = &io->rx_iov,
		.msg_iovlen = 1,
		.msg_control = io->ctrl.b,
		.msg_controllen = CMSG_SPACE(sizeof(int) * SOCK_MAX_FDS),
	};
	/* MSG_TRUNC: the result is the record's real length, so an oversized
	 * one is told apart (and refused) rather than served cut. */
	io_uring_prep_recvmsg(sqe, c->fd, &io->rx_msg, MSG_TRUNC | MSG_CMSG_CLOEXEC);
	io_uring_sqe_set_data(sqe, &io->recv_op);
	io->busy = true;
}

static void arm_send(struct loop *lp, struct client *c, size_t len, int fd)
{
	struct client_io *io = c->io;
	struct io_uring_sqe *sqe = get_sqe(lp);

	io->tx_iov = (struct iovec){ .iov_base = io->tx, .iov_len = len };
	io->tx_msg = (struct msghdr){ .msg_iov = &io->tx_iov, .msg_iovlen = 1 };
	io->tx_fd = fd;
	if (fd >= 0) {
		struct cmsghdr *cm;

		memset(&io->tx_ctrl, 0, sizeof(io->tx_ctrl));
		io->tx_msg.msg_control = io->tx_ctrl.b;
		io->tx_msg.msg_controllen = CMSG_SPACE(sizeof(int));
		cm = CMSG_FIRSTHDR(&io->tx_msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	io_uring_prep_sendmsg(sqe, c->fd, &io->tx_msg, MSG_NOSIGNAL);
	io_uring_sqe_set_data(sqe, &io->send_op);
	io->busy = true;
}

/* Watch @c's fence eventfd for @c->wait_ms at most (serve_request() said
 * the answer waits). */
static void arm_wait(struct loop *lp, struct client *c)
{
	struct client_io *io = c->io;
	struct io_uring_sqe *sqe;

	/* the two linked entries go to the kernel in one submission */
	if (io_uring_sq_space_left(&lp->ring) < 2)
		submit_early(lp);
	sqe = get_sqe(lp);
	io_uring_prep_poll_add(sqe, c->wait_fd, POLLIN);
	sqe->flags |= IOSQE_IO_LINK;
	io_uring_sqe_set_data(sqe, &io->wait_op);
	io->wait_ts = (struct __kernel_timespec){ .tv_sec = c->wait_ms / 1000,
						  .tv_nsec = (long long)(c->wait_ms % 1000) * 1000000 };
	sqe = get_sqe(lp);
	io_uring_prep_link_timeout(sqe, &io->wait_ts, 0);
	io_uring_sqe_set_data(sqe, &io->wait_tmo_op);
	io->wait_pending = 2;
	io->busy = true;
}

/* One of a wait's two completions (the poll fired or was cancelled by its
 * timeout; the timeout fired or was cancelled by the poll). */
static void on_wait(struct loop *lp, struct client *c)
{
	size_t len;

	if (--c->io->wait_pending)
		return;
	c->io->busy = false;
	len = serve_wait_done(lp->d, c, c->io->tx);
	arm_send(lp, c, len, -1);
}

static void status(struct ugpud *d)
{
	char s[160];

	snprintf(s, sizeof(s), "STATUS=serving %u clients on %u devices (%llu refused)",
		 d->nclients, d->ndevs, (unsigned long long)d->refused);
	notify_send(s);
}

/* The client went (EOF, error, killed): release all it held. */
static void client_drop(struct loop *lp, struct client *c, const char *why)
{
	struct ugpud *d = lp->d;
	uint32_t bos = c->nbos;
	uint64_t t0 = now_us();

	client_release(d, c);
	ugpud_log("client %u (pid %d, uid %u, %s) %s: released %u BOs in %llu us", c->id,
		  (int)c->pid, (unsigned int)c->uid, c->name, why, bos,
		  (unsigned long long)(now_us() - t0));
	close(c->fd);
	list_del(&c->link);
	d->nclients--;
	free(c->io);
	client_free(c);
	status(d);
}

static void loop_kill(struct ugpud *d, struct client *victim)
{
	(void)d;
	/* Its pending receive (or send) ends now; the loop drops it there. */
	shutdown(victim->fd, SHUT_RDWR);
	ugpud_log("client %u (pid %d): killed on request", victim->id, (int)victim->pid);
}

/* A refusal: one error record, never waited for; then the socket closes. */
static void refuse(struct ugpud *d, int fd, int err, const char *why)
{
	unsigned char buf[sizeof(struct ugpud_hdr) + UGPUD_MAX_ERRMSG];
	size_t len = serve_error(buf, 0, 0, err, "%s", why);

	if (send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		ugpud_log("refusal not delivered: %s", strerror(errno));
	/* What it sent already is read and dropped (a few records at most):
	 * closing with unread data would make its next read a reset instead
	 * of the refusal. */
	for (int i = 0; i < 8 && recv(fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC) > 0; i++)
		;
	close(fd);
	d->refused++;
	ugpud_log("refused: %s", why);
	status(d);
}

static void on_accept(struct loop *lp, int fd)
{
	struct ugpud *d = lp->d;
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	gid_t groups[64];
	socklen_t glen = sizeof(groups);
	int ngroups = 0;
	char why[UGPUD_MAX_ERRMSG];
	struct client *c;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen)) {
		ugpud_log("SO_PEERCRED: %s; connection closed", strerror(errno));
		close(fd);
		return;
	}
	if (!getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen))
		ngroups = (int)(glen / sizeof(gid_t));
	if (!client_policy(d, &cred, groups, ngroups, why, sizeof(why))) {
		refuse(d, fd, -EACCES, why);
		return;
	}
	if (d->nclients >= d->max_clients) {
		snprintf(why, sizeof(why), "ugpud serves %u clients, its most (--max-clients)",
			 d->nclients);
		refuse(d, fd, -EUSERS, why);
		return;
	}
	c = client_new(d, fd, &cred);
	if (c)
		c->io = calloc(1, sizeof(*c->io));
	if (!c || !c->io) {
		client_free(c);
		refuse(d, fd, -ENOMEM, "ugpud is out of memory");
		return;
	}
	c->io->tx_fd = -1;
	c->io->recv_op = (struct op){ .kind = OP_RECV, .c = c };
	c->io->wait_op = (struct op){ .kind = OP_WAIT, .c = c };
	c->io->wait_tmo_op = (struct op){ .kind = OP_WAIT_TIMEOUT, .c = c };
	c->io->send_op = (struct op){ .kind = OP_SEND, .c = c };
	list_add_tail(&d->clients, &c->link);
	d->nclients++;
	d->accepted++;
	arm_recv(lp, c);
	status(d);
}

/* The client went; while its device's power step runs, the release (which
 * calls into the device) waits for the step's end (unpark()). */
static void drop_or_park(struct loop *lp, struct client *c, const char *why)
{
	if (c->hello && lp->d->devs[c->device].pm_busy) {
		c->parked = true;
		c->drop_why = why;
		return;
	}
	client_drop(lp, c, why);
}

#ifdef UGPU_TEST_HOOKS
/* struct ugpud @test_create_delay and @test_window, after a request. */
static void test_hooks_after(struct ugpud *d, uint16_t op)
{
	unsigned int ms = 0;
	FILE *f;

	if (d->test_window && __atomic_load_n(&d->vram_wanted, __ATOMIC_ACQUIRE)) {
		f = fopen(d->test_window, "a");
		if (f) {
			fprintf(f, "op %u\n", op);
			fclose(f);
		}
	}
	if (!d->test_create_delay || (op != UGPUD_BO_CREATE && op != UGPUD_VM_CREATE))
		return;
	f = fopen(d->test_create_delay, "r");
	if (!f)
		return;
	if (fscanf(f, "%u", &ms) == 1)
		usleep(ms * 1000u);
	fclose(f);
}
#endif

/* Serve the request of @len bytes in @c's receive buffer (@nfds fds came
 * with it, closed already), or keep it until its device's power step is
 * done (serve_must_wait(): no receive is armed meanwhile, so the client's
 * next requests wait in its socket). */
static void serve_rx(struct loop *lp, struct client *c, size_t len, int nfds)
{
	struct client_io *io = c->io;
	int fd;

	if (serve_must_wait(lp->d, c, io->rx, len)) {
		c->parked = true;
		c->parked_len = len;
		c->parked_nfds = nfds;
		return;
	}
	len = serve_request(lp->d, c, io->rx, len, len > sizeof(io->rx), nfds, io->tx, &fd);
#ifdef UGPU_TEST_HOOKS
	test_hooks_after(lp->d, ((const struct ugpud_hdr *)io->rx)->op);
#endif
	if (!len && c->job_busy)
		return; /* on a worker: answered when it is done (on_jobs()) */
	if (!len) { /* a fence wait: answered when it completes or the slice ends */
		arm_wait(lp, c);
		return;
	}
	arm_send(lp, c, len, fd);
}

static void on_recv(struct loop *lp, struct client *c, int res)
{
	struct client_io *io = c->io;
	struct sock_fds in = { .max = SOCK_MAX_FDS };
	int nfds;

	io->busy = false;
	if (res <= 0) {
		drop_or_park(lp, c, res ? "connection error" : "disconnected");
		return;
	}
	sock_take_fds(&io->rx_msg, &in);
	nfds = in.n + (in.ctrunc ? 1 : 0);
	sock_fds_close(&in);
	serve_rx(lp, c, (size_t)res, nfds);
}

/* Device @device's power step is done: what its clients sent meanwhile is
 * served, the drops of those that went are done. */
static void unpark(struct loop *lp, uint32_t device)
{
	list_for_each_safe(l, &lp->d->clients) {
		struct client *c = list_entry(l, struct client, link);

		if (!c->parked || c->device != device)
			continue;
		c->parked = false;
		if (c->drop_why)
			client_drop(lp, c, c->drop_why);
		else
			serve_rx(lp, c, c->parked_len, c->parked_nfds);
	}
}

static void on_send(struct loop *lp, struct client *c, int res)
{
	c->io->busy = false;
	if (c->io->tx_fd >= 0) /* the client has its own now (or never will) */
		close(c->io->tx_fd);
	c->io->tx_fd = -1;
	if (res < 0) {
		drop_or_park(lp, c, res == -EPIPE || res == -ECONNRESET ? "gone" : "send error");
		return;
	}
	arm_recv(lp, c);
}

static void on_cqe(struct loop *lp, struct io_uring_cqe *cqe)
{
	struct op *op = io_uring_cqe_get_data(cqe);

	switch (op->kind) {
	case OP_ACCEPT:
		if (cqe->res >= 0)
			on_accept(lp, cqe->res);
		else if (cqe->res != -EINTR && cqe->res != -ECONNABORTED)
			ugpud_log("accept: %s", strerror(-cqe->res));
		if (!lp->stop)
			arm_accept(lp);
		break;
	case OP_RECV:
		on_recv(lp, op->c, cqe->res);
		break;
	case OP_SEND:
		on_send(lp, op->c, cqe->res);
		break;
	case OP_WAIT:
	case OP_WAIT_TIMEOUT:
		on_wait(lp, op->c);
		break;
	case OP_JOBS:
		on_jobs(lp);
		if (cqe->res >= 0)
			arm_jobs(lp);
		break;
	case OP_EVENTFD:
		on_removals(lp->d);
		sleep_poll(lp->d);
		metrics_publish(lp->d);
		if (!lp->stop && cqe->res >= 0)
			arm_eventfd(lp);
		break;
	case OP_SIGNAL:
		if (cqe->res == sizeof(lp->si)) {
			ugpud_log("signal %u: stopping", lp->si.ssi_signo);
			lp->stop = true;
		} else {
			arm_signal(lp);
		}
		break;
	}
}

/* Wait for completions (at most @timeout_ns) and handle them all. */
static int reap(struct loop *lp, uint64_t timeout_ns)
{
	struct __kernel_timespec ts = { .tv_sec = (long long)(timeout_ns / 1000000000ull),
					.tv_nsec = (long long)(timeout_ns % 1000000000ull) };
	struct io_uring_cqe *cqe;
	unsigned int head, n = 0;
	int ret;

	ret = io_uring_submit_and_wait_timeout(&lp->ring, &cqe, 1, &ts, NULL);
	if (ret < 0 && ret != -ETIME && ret != -EINTR)
		return ret;
	io_uring_for_each_cqe(&lp->ring, head, cqe) {
		on_cqe(lp, cqe);
		n++;
	}
	io_uring_cq_advance(&lp->ring, n);
	return 0;
}

static bool any_busy(struct ugpud *d)
{
	list_for_each(l, &d->clients)
		if (list_entry(l, struct client, link)->io->busy)
			return true;
	return false;
}

int loop_run(struct ugpud *d, int listen_fd, uint64_t watchdog_usec)
{
	/* Static: the kernel writes the signal read's buffer, which must not
	 * be a stack frame that may be gone before the ring is. */
	static struct loop lp;
	uint64_t period_ns = watchdog_usec ? watchdog_usec * 1000 / 2 : 1000000000ull;
	uint64_t next_dog = now_ns() + period_ns, deadline;
	sigset_t sigs;
	int ret;

	lp.d = d;
	lp.listen_fd = listen_fd;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
	lp.sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC);
	if (lp.sig_fd < 0)
		return -errno;
	ret = io_uring_queue_init(RING_ENTRIES, &lp.ring, 0);
	if (ret) {
		close(lp.sig_fd);
		ugpud_log("io_uring: %s", strerror(-ret));
		return ret;
	}
	the_loop = &lp;
	ret = pool_start(&lp, d->workers);
	if (ret) {
		io_uring_queue_exit(&lp.ring);
		close(lp.sig_fd);
		return ret;
	}
	d->offload = d->workers ? loop_offload : NULL;
	d->pm_wait = d->workers ? loop_pm_wait : NULL;
	lp.jobs_op.kind = OP_JOBS;
	arm_jobs(&lp);
	d->kill = loop_kill;
	d->event = loop_event;
	lp.accept_op.kind = OP_ACCEPT;
	lp.sig_op.kind = OP_SIGNAL;
	lp.ev_op.kind = OP_EVENTFD;
	arm_accept(&lp);
	arm_signal(&lp);
	if (d->ev_fd >= 0)
		arm_eventfd(&lp);
	on_removals(d); /* one that came before the loop */
	while (!lp.stop) {
		uint64_t now;

		/* before the replies just prepared go out (reap submits them):
		 * what they acknowledge is in the restart record */
		persist_sync(d);
		persist_expire(d);
		now = now_ns();

		/* the loop wakes at least every period (the watchdog's, or
		 * 1 s for persist_expire()); without a watchdog too, or every
		 * wait after the first second was 0 and an idle daemon spun
		 * on a CPU (test_ugpud idle_daemon_sleeps) */
		if (now >= next_dog) {
			if (watchdog_usec)
				notify_send("WATCHDOG=1");
			next_dog = now + period_ns;
		}
		ret = reap(&lp, next_dog > now ? next_dog - now : 0);
		if (ret) {
			ugpud_log("io_uring wait: %s", strerror(-ret));
			break;
		}
	}
	notify_send("STOPPING=1");
	/* a clean stop keeps no session: the clients need not wait to resume */
	for (unsigned int i = 0; i < d->ndevs; i++)
		loop_event(d, &(struct ugpud_event){ .kind = UGPUD_EV_STOPPING, .device = i });
	/* Every client's pending operation ends once its socket is shut down;
	 * wait (bounded) for them before their buffers go. */
	list_for_each(l, &d->clients)
		shutdown(list_entry(l, struct client, link)->fd, SHUT_RDWR);
	deadline = now_ns() + EXIT_DRAIN_MS * 1000000ull;
	while (any_busy(d) && now_ns() < deadline)
		if (reap(&lp, 100000000ull))
			break;
	while (!list_empty(&d->clients)) {
		struct client *c = list_entry(d->clients.next, struct client, link);

		if (c->io->busy) { /* never drained: its buffer must outlive the ring */
			list_del(&c->link);
			client_release(d, c);
			close(c->fd);
			continue;
		}
		client_drop(&lp, c, "disconnected at exit");
	}
	pool_stop(&lp);
	io_uring_queue_exit(&lp.ring);
	close(lp.sig_fd);
	return 0;
}
