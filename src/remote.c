/* SPDX-License-Identifier: MIT */
/*
 * A device served by ugpud: the client end of the protocol (see remote.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/sock.h"
#include "src/remote.h"
#include "src/ugpud_proto.h"

/*
 * struct remote - the connection of one remote device.
 * @fd: the socket; -1 once closed. Under @lock.
 * @dead: the daemon went away (or the stream broke): every call is -ENODEV.
 *        Under @lock.
 * @seq: the next request's sequence number. Under @lock.
 * @info: the device as the hello described it; read-only after open.
 * @client_id: the daemon's id for this connection; read-only after open.
 * @devices: how many devices the daemon serves (its hello); read-only after
 *           open.
 * @buf: the reply being read. Under @lock.
 * @sa: the daemon's socket; @index, @name: the device index and program
 *      name of the hello; read-only after open.
 * @token: the session's token (UGPUD_SESSION; 0: the daemon keeps no
 *         sessions over a restart). Under @lock.
 * @gone, @suspended: what the daemon's events said (UGPUD_EV_REMOVED;
 *         between UGPUD_EV_SUSPENDED and UGPUD_EV_RESUMED). Written under
 *         @lock, read atomically without it.
 * @removal_fn, @removal_user: ugpu_device_set_removal_callback(); under
 *         @lock. @removal_due: the removal event came and the callback has
 *         not been called yet (@removal_kind, @removal_status); under @lock.
 * @resumes: sessions taken back after a daemon's restart; under @lock.
 * @posted: requests sent by remote_post() whose replies have not been read,
 *          oldest first, @nposted of them; under @lock. Replies come in
 *          order, so the reply of any later request means they were all
 *          served.
 */
struct remote {
	pthread_mutex_t lock;
	int fd;
	bool dead;
	uint32_t seq;
	struct ugpud_dev_info info;
	uint32_t client_id;
	uint32_t devices;
	struct sockaddr_un sa;
	uint32_t index;
	char name[32];
	uint64_t token;
	uint32_t resumes;
	bool gone;
	bool suspended;
	ugpu_removal_fn removal_fn;
	void *removal_user;
	bool removal_due;
	int removal_kind;
	int removal_status;
	struct posted {
		uint16_t op;
		uint32_t seq;
		uint8_t len;
		unsigned char req[32];
	} posted[REMOTE_MAX_POSTED];
	unsigned int nposted;
	struct ugpu_context *log_ctx; /* the device's context; read-only after open */
	unsigned char buf[UGPUD_MAX_MSG];
};

/* How long a call waits for a restarted daemon to take its session back. */
#define REMOTE_RESUME_MS 15000

#define URI_DEVICE "?device="

/* Split "ugpud:SOCKET[?device=N]" into @path and @index. */
static int uri_parse(struct ugpu_context *ctx, const char *uri, struct sockaddr_un *sa,
		     uint32_t *index)
{
	const char *path = uri + strlen(REMOTE_URI_PREFIX);
	const char *sel = strstr(path, URI_DEVICE);
	size_t plen = sel ? (size_t)(sel - path) : strlen(path);

	*index = 0;
	if (sel) {
		const char *n = sel + strlen(URI_DEVICE);
		char *end;
		unsigned long v;

		errno = 0;
		v = strtoul(n, &end, 10);
		if (*n < '0' || *n > '9' || *end || errno || v > UINT32_MAX) {
			log_err(ctx, "%s: the device selector must be ?device=N (a number)", uri);
			return -EINVAL;
		}
		*index = (uint32_t)v;
	}
	if (!plen || plen >= sizeof(sa->sun_path)) {
		log_err(ctx, "%s: the socket path must be 1..%zu bytes", uri,
			sizeof(sa->sun_path) - 1);
		return -EINVAL;
	}
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, path, plen);
	return 0;
}

/* Send one request; lock held. */
static int remote_send(struct remote *r, uint16_t op, uint32_t seq, const void *req,
		       size_t req_len, const void *data, size_t data_len)
{
	struct ugpud_hdr h = {
		.magic = UGPUD_MAGIC,
		.op = op,
		.seq = seq,
		.len = (uint32_t)(req_len + data_len),
	};
	struct iovec iov[3] = {
		{ .iov_base = &h, .iov_len = sizeof(h) },
		{ .iov_base = (void *)req, .iov_len = req_len },
		{ .iov_base = (void *)data, .iov_len = data_len },
	};

	return sock_send(r->fd, iov, 3, NULL, 0, now_ns() + REMOTE_TIMEOUT_MS * 1000000ull, NULL);
}

/* An event of the daemon about the device; lock held. */
static void remote_on_event(struct remote *r, const void *body)
{
	struct ugpud_event ev;

	memcpy(&ev, body, sizeof(ev));
	switch (ev.kind) {
	case UGPUD_EV_SUSPENDED:
		__atomic_store_n(&r->suspended, true, __ATOMIC_RELAXED);
		break;
	case UGPUD_EV_RESUMED:
		__atomic_store_n(&r->suspended, false, __ATOMIC_RELAXED);
		break;
	case UGPUD_EV_REMOVED:
		if (__atomic_load_n(&r->gone, __ATOMIC_RELAXED))
			break;
		__atomic_store_n(&r->suspended, false, __ATOMIC_RELAXED);
		__atomic_store_n(&r->gone, true, __ATOMIC_RELAXED);
		r->removal_due = true;
		r->removal_kind = (int)ev.arg;
		r->removal_status = ev.status;
		break;
	case UGPUD_EV_STOPPING: /* a clean stop keeps no session: no resume */
		r->token = 0;
		break;
	default: /* a newer daemon's: nothing to do with it here */
		break;
	}
}

/* The error reply of a posted request (nobody waits for it): logged. */
static void log_posted_error(struct remote *r, const struct ugpud_hdr *h)
{
	size_t k = h->len < UGPUD_MAX_ERRMSG ? h->len : UGPUD_MAX_ERRMSG;
	char msg[UGPUD_MAX_ERRMSG + 1];

	memcpy(msg, r->buf + sizeof(*h), k);
	msg[k] = '\0';
	log_err(r->log_ctx, "ugpud: op %u (not waited for): %s", h->op,
			k ? msg : ugpu_strerror(h->result));
}

/*
 * Read replies until the one for @op/@seq; lock held. Returns its header in
 * @h and its body in r->buf + sizeof(*h). A reply to an older request (one
 * that timed out) is skipped.
 */
static int remote_recv(struct remote *r, uint16_t op, uint32_t seq, struct ugpud_hdr *h,
		       int *fd)
{
	struct sock_wait w = { .deadline_ns = now_ns() + REMOTE_TIMEOUT_MS * 1000000ull,
			       .wake_fd = -1 };

	for (;;) {
		struct sock_fds in = { .max = 1 };
		size_t len = 0;
		int ret = sock_recv_packet(r->fd, r->buf, sizeof(r->buf), &len, &in, &w);

		/* @ctrunc: fds came that this process had no room for (the
		 * kernel dropped them); the record itself is whole, and read
		 * as one without its fd (the callers say what that means) */
		if (!ret && len < sizeof(*h))
			ret = -EPROTO;
		if (!ret) {
			memcpy(h, r->buf, sizeof(*h));
			if (h->magic != UGPUD_MAGIC || h->len != len - sizeof(*h) || h->result > 0)
				ret = -EPROTO;
		}
		if (!ret && h->op == op && h->seq == seq) {
			r->nposted = 0; /* every earlier request was answered */
			/* an fd only where the caller takes one (and the call
			 * succeeded) */
			if (fd && !h->result) {
				if (in.n > 1) {
					sock_fds_close(&in);
					return -EPROTO;
				}
				*fd = in.n ? in.fds[0] : -1;
				return 0;
			}
			sock_fds_close(&in);
			return 0;
		}
		sock_fds_close(&in);
		if (!ret && h->op == UGPUD_EVENT && h->len == sizeof(struct ugpud_event)) {
			remote_on_event(r, r->buf + sizeof(*h));
			continue;
		}
		if (ret)
			return ret == -EMSGSIZE ? -EPROTO : ret;
		if ((int32_t)(h->seq - seq) > 0)
			return -EPROTO; /* a reply to something never asked */
		if (h->result < 0 && r->nposted) /* a posted request's: nobody waits for it */
			log_posted_error(r, h);
	}
}

/* The message of an error reply (body: NUL-terminated text), or "". */
static const char *reply_msg(struct remote *r, const struct ugpud_hdr *h, char *buf, size_t n)
{
	size_t k = h->len < n - 1 ? h->len : n - 1;

	memcpy(buf, r->buf + sizeof(*h), k);
	buf[k] = '\0';
	return buf;
}

/* A request the daemon may have served before it died can be sent again
 * after a resume without changing what it does. */
static bool op_is_repeatable(uint16_t op)
{
	switch (op) {
	case UGPUD_DEV_QUERY:
	case UGPUD_MEM_STATS:
	case UGPUD_BO_READ:
	case UGPUD_BO_WRITE:
	case UGPUD_BO_QUERY:
	case UGPUD_BO_MIGRATE:
	case UGPUD_VM_QUERY:
	case UGPUD_QUEUE_QUERY:
	case UGPUD_FENCE_WAIT:
	case UGPUD_CLIENTS:
		return true;
	default:
		return false;
	}
}

/*
 * The connection broke: connect again (the daemon may be restarting; bounded
 * by REMOTE_RESUME_MS) and take the session back with UGPUD_RESUME. Lock
 * held. 0, or -errno (the session is gone: the caller marks it dead).
 */
static int remote_resume(struct ugpu_device *dev)
{
	struct remote *r = dev->remote;
	struct ugpud_resume_req req = { .version = UGPUD_PROTO_VERSION, .device = r->index,
					.token = r->token };
	uint64_t deadline = now_ms() + REMOTE_RESUME_MS;
	unsigned int backoff = 5;
	struct ugpud_hdr h;
	int ret = -ECONNREFUSED;

	/* What the daemon sent before it went is still readable: a clean
	 * stop's event says there is nothing to resume. */
	for (;;) {
		ssize_t n = recv(r->fd, r->buf, sizeof(r->buf), MSG_DONTWAIT);

		if (n < (ssize_t)sizeof(h))
			break;
		memcpy(&h, r->buf, sizeof(h));
		if (h.magic == UGPUD_MAGIC && h.op == UGPUD_EVENT &&
		    h.len == sizeof(struct ugpud_event) && (size_t)n == sizeof(h) + h.len)
			remote_on_event(r, r->buf + sizeof(h));
	}
	if (!r->token)
		return -ECONNRESET;
	req.token = r->token;
	memcpy(req.name, r->name, sizeof(req.name));
	while (now_ms() < deadline) {
		int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

		if (fd < 0)
			return -errno;
		if (connect(fd, (struct sockaddr *)&r->sa, sizeof(r->sa))) {
			ret = -errno;
			close(fd);
			usleep(backoff * 1000);
			backoff = backoff < 200 ? backoff * 2 : 200;
			continue;
		}
		close(r->fd);
		r->fd = fd;
		ret = remote_send(r, UGPUD_RESUME, 0, &req, sizeof(req), NULL, 0);
		if (!ret)
			ret = remote_recv(r, UGPUD_RESUME, 0, &h, NULL);
		if (!ret && h.result)
			ret = h.result;
		if (!ret && h.len != sizeof(struct ugpud_hello_rep))
			ret = -EPROTO;
		if (ret == -ECONNRESET || ret == -EPIPE) { /* it died again: once more */
			usleep(backoff * 1000);
			continue;
		}
		if (ret) {
			log_err(dev->ctx, "%s: the daemon did not take the session back: %s", dev->name,
				ret == -ENOENT ? "it has none of ours (ended by a kill, or not kept "
						 "over its restart)"
					       : ugpu_strerror(ret));
			return ret;
		}
		log_info(dev->ctx, "%s: session of client %u resumed after the daemon's restart",
			 dev->name, r->client_id);
		{
			struct ugpud_hello_rep rep;

			memcpy(&rep, r->buf + sizeof(h), sizeof(rep));
			if (rep.maps_detached)
				log_err(dev->ctx, "%s: the restarted daemon could not keep %u of this "
					"process's mapped BOs on the memory it maps: those mappings no "
					"longer reach their BOs (stores made through them since the "
					"restart are not in the BOs); their calls answer -ESTALE until "
					"they are unmapped (docs/daemon.md, Restart)",
					dev->name, rep.maps_detached);
		}
		r->resumes++;
		return 0;
	}
	log_err(dev->ctx, "%s: no daemon came back within %u ms: %s", dev->name, REMOTE_RESUME_MS,
		ugpu_strerror(ret));
	return ret;
}

static bool is_conn_lost(int ret)
{
	return ret == -ECONNRESET || ret == -EPIPE || ret == -ENOTCONN;
}

/* After a resume: the posted requests the dead daemon may not have served,
 * sent again (each is harmless twice). Lock held. */
static int repost(struct remote *r)
{
	for (unsigned int i = 0; i < r->nposted; i++) {
		struct posted *p = &r->posted[i];
		int ret;

		p->seq = ++r->seq;
		ret = remote_send(r, p->op, p->seq, p->req, p->len, NULL, 0);
		if (ret)
			return ret;
	}
	return 0;
}

/* remote_call() and remote_call_fd() in one. */
static int remote_call_common(struct ugpu_device *dev, uint16_t op, const void *req,
			      size_t req_len, const void *data, size_t data_len, void *rep,
			      size_t rep_cap, size_t *rep_len, int *rep_fd, uint32_t *resumes)
{
	struct remote *r = dev->remote;
	struct ugpud_hdr h;
	uint32_t seq;
	int ret;

	pthread_mutex_lock(&r->lock);
	if (r->fd < 0 || r->dead) {
		ret = -ENODEV;
		goto out;
	}
	for (int attempt = 0;; attempt++) {
		bool sent;

		seq = ++r->seq;
		ret = remote_send(r, op, seq, req, req_len, data, data_len);
		sent = !ret;
		if (!ret)
			ret = remote_recv(r, op, seq, &h, rep_fd);
		/* The daemon went: after a restart it may have our session. */
		if (!is_conn_lost(ret) || !r->token || attempt == 2 || remote_resume(dev) ||
		    repost(r))
			break;
		if (sent && !op_is_repeatable(op)) {
			log_err(dev->ctx, "%s: the daemon restarted while op %u was in flight: its "
				"BOs are back, whether this request was done is not known",
				dev->name, op);
			ret = -ECONNRESET;
			goto out;
		}
	}
	if (ret) {
		/* A broken or out-of-step stream is not used again. */
		r->dead = true;
		log_err(dev->ctx, "%s: %s", dev->name,
			ret == -ECONNRESET ? "the daemon went away" : ugpu_strerror(ret));
		if (ret == -ECONNRESET)
			ret = -ENODEV;
		goto out;
	}
	if (h.result < 0) {
		char msg[UGPUD_MAX_ERRMSG];

		ret = h.result;
		if (h.len)
			log_err(dev->ctx, "%s: %s", dev->name, reply_msg(r, &h, msg, sizeof(msg)));
		goto out;
	}
	if (h.len > rep_cap) {
		if (rep_fd && *rep_fd >= 0)
			close(*rep_fd);
		if (rep_fd)
			*rep_fd = -1;
		ret = -EPROTO;
		goto out;
	}
	if (h.len)
		memcpy(rep, r->buf + sizeof(h), h.len);
	if (rep_len)
		*rep_len = h.len;
	ret = 0;
out:
	{
		ugpu_removal_fn fn = r->removal_due ? r->removal_fn : NULL;
		void *user = r->removal_user;
		int kind = r->removal_kind, status = r->removal_status;

		if (fn)
			r->removal_due = false;
		if (resumes) /* the daemon that answered */
			*resumes = r->resumes;
		pthread_mutex_unlock(&r->lock);
		if (fn)
			fn(user, dev, (enum ugpu_unplug_kind)kind, status);
	}
	return ret;
}

bool remote_is_open(struct ugpu_device *dev)
{
	struct remote *r = dev->remote;
	bool open;

	pthread_mutex_lock(&r->lock);
	open = r->fd >= 0;
	pthread_mutex_unlock(&r->lock);
	return open;
}

bool remote_is_gone(struct ugpu_device *dev)
{
	return __atomic_load_n(&dev->remote->gone, __ATOMIC_RELAXED);
}

bool remote_is_suspended(struct ugpu_device *dev)
{
	return __atomic_load_n(&dev->remote->suspended, __ATOMIC_RELAXED);
}

void remote_set_removal_callback(struct ugpu_device *dev, ugpu_removal_fn fn, void *user)
{
	struct remote *r = dev->remote;

	pthread_mutex_lock(&r->lock);
	r->removal_fn = fn;
	r->removal_user = user;
	pthread_mutex_unlock(&r->lock);
}

int remote_open(struct ugpu_device *dev, const char *uri)
{
	struct ugpud_hello_req hello = { .version = UGPUD_PROTO_VERSION };
	struct ugpud_hello_rep rep;
	struct sockaddr_un sa;
	struct remote *r;
	struct ugpud_hdr h;
	struct stat st;
	uint32_t index;
	const char *prog = program_invocation_short_name;
	int ret;

	ret = uri_parse(dev->ctx, uri, &sa, &index);
	if (ret)
		return ret;
	if (stat(sa.sun_path, &st))
		return -errno;
	if (!S_ISSOCK(st.st_mode))
		return -ENOTSOCK;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	pthread_mutex_init(&r->lock, NULL);
	r->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (r->fd < 0) {
		ret = -errno;
		goto out_free;
	}
	if (connect(r->fd, (struct sockaddr *)&sa, sizeof(sa))) {
		ret = -errno;
		log_err(dev->ctx, "%s: cannot connect to the daemon: %s", uri, ugpu_strerror(ret));
		goto out_close;
	}
	hello.device = index;
	snprintf(hello.name, sizeof(hello.name), "%s", prog ? prog : "?");
	/* The hello is seq 0: a refusal the daemon sends before reading it
	 * (SO_PEERCRED policy) comes as hello seq 0 too. */
	ret = remote_send(r, UGPUD_HELLO, 0, &hello, sizeof(hello), NULL, 0);
	/* A refused peer's socket may be closed before the hello goes out
	 * (the send then fails), with the refusal queued for us: read it. */
	if (!ret || ret == -ECONNRESET)
		ret = remote_recv(r, UGPUD_HELLO, 0, &h, NULL);
	/* If it closed with our hello unread, the first receive reports the
	 * reset (and clears it); the refusal is behind it. */
	if (ret == -ECONNRESET)
		ret = remote_recv(r, UGPUD_HELLO, 0, &h, NULL);
	if (ret) {
		log_err(dev->ctx, "%s: no hello from the daemon: %s", uri, ugpu_strerror(ret));
		if (ret == -ECONNRESET)
			ret = -EPROTO;
		goto out_close;
	}
	if (h.result < 0) {
		char msg[UGPUD_MAX_ERRMSG];

		ret = h.result;
		log_err(dev->ctx, "%s: the daemon refused the connection: %s", uri,
			h.len ? reply_msg(r, &h, msg, sizeof(msg)) : ugpu_strerror(ret));
		goto out_close;
	}
	if (h.len != sizeof(rep)) {
		ret = -EPROTO;
		goto out_close;
	}
	memcpy(&rep, r->buf + sizeof(h), sizeof(rep));
	r->info = rep.info;
	r->info.name[sizeof(r->info.name) - 1] = '\0';
	r->info.transport[sizeof(r->info.transport) - 1] = '\0';
	r->info.profile[sizeof(r->info.profile) - 1] = '\0';
	r->client_id = rep.client_id;
	r->devices = rep.devices;
	dev->vendor_id = rep.info.vendor_id;
	dev->device_id = rep.info.device_id;
	dev->class_code = rep.info.class_code;
	dev->vram_size = rep.info.vram_size;
	dev->num_copy_engines = rep.info.num_copy_engines;
	/* Only what a client can use through the daemon: no fabric (peer
	 * copies) yet (docs/daemon.md). */
	dev->caps = rep.info.caps & ~UGPU_DEVICE_CAP_FABRIC;
	dev->fabric_id = rep.info.fabric_id;
	r->sa = sa;
	r->index = index;
	r->log_ctx = dev->ctx;
	memcpy(r->name, hello.name, sizeof(r->name));
	{
		struct ugpud_session_rep sr;

		r->seq = 1;
		/* an older daemon has no sessions (-EOPNOTSUPP): no resume then */
		if (!remote_send(r, UGPUD_SESSION, 1, NULL, 0, NULL, 0) &&
		    !remote_recv(r, UGPUD_SESSION, 1, &h, NULL) && !h.result && h.len == sizeof(sr)) {
			memcpy(&sr, r->buf + sizeof(h), sizeof(sr));
			r->token = sr.token;
		}
	}
	dev->remote = r;
	log_info(dev->ctx, "%s: client %u of ugpud (protocol %u), device %u: %s", uri,
		 rep.client_id, rep.version, index, r->info.name);
	return 0;

out_close:
	close(r->fd);
out_free:
	pthread_mutex_destroy(&r->lock);
	free(r);
	return ret;
}

uint32_t remote_client_id(struct ugpu_device *dev)
{
	return dev->remote->client_id;
}

uint32_t remote_devices(struct ugpu_device *dev)
{
	return dev->remote->devices;
}

/* Set once at load by a layer above (svm/), read-only afterwards. */
static void (*close_hook)(struct ugpu_device *dev);

void remote_set_close_hook(void (*fn)(struct ugpu_device *dev))
{
	close_hook = fn;
}

void remote_close(struct ugpu_device *dev)
{
	struct remote *r = dev->remote;

	if (close_hook)
		close_hook(dev); /* still connected: it may make requests */
	pthread_mutex_lock(&r->lock);
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
	pthread_mutex_unlock(&r->lock);
}

void remote_free(struct ugpu_device *dev)
{
	struct remote *r = dev->remote;

	if (!r)
		return;
	if (r->fd >= 0)
		close(r->fd);
	pthread_mutex_destroy(&r->lock);
	free(r);
	dev->remote = NULL;
}

uint32_t remote_resumes(struct ugpu_device *dev)
{
	struct remote *r = dev->remote;
	uint32_t n;

	pthread_mutex_lock(&r->lock);
	n = r->resumes;
	pthread_mutex_unlock(&r->lock);
	return n;
}

bool remote_same_daemon(struct ugpu_device *dev, uint32_t resumes)
{
	struct remote *r = dev->remote;
	bool same;
	char b;

	pthread_mutex_lock(&r->lock);
	/* Nothing waiting on the socket: not its end (a daemon that died),
	 * nor anything read ahead of it. Anything there: not known here. */
	same = r->fd >= 0 && !r->dead && r->resumes == resumes &&
	       recv(r->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) < 0 &&
	       (errno == EAGAIN || errno == EWOULDBLOCK);
	pthread_mutex_unlock(&r->lock);
	return same;
}

int remote_post(struct ugpu_device *dev, uint16_t op, const void *req, size_t req_len)
{
	struct remote *r = dev->remote;
	struct posted *p;
	int ret = 0;

	if (req_len > sizeof(p->req))
		return -EINVAL;
	pthread_mutex_lock(&r->lock);
	if (r->fd < 0 || r->dead) {
		ret = -ENODEV;
		goto out;
	}
	/* Their replies first, so the socket buffers stay bounded: the last
	 * one's reply means all were served (remote_recv() forgets them). A
	 * daemon gone meanwhile: resumed, they are sent again and waited for. */
	for (int attempt = 0; r->nposted == REMOTE_MAX_POSTED; attempt++) {
		struct posted *last = &r->posted[r->nposted - 1];
		struct ugpud_hdr h;

		ret = remote_recv(r, last->op, last->seq, &h, NULL);
		if (ret && (!is_conn_lost(ret) || !r->token || attempt == 2 || remote_resume(dev) ||
			    repost(r)))
			goto out_dead;
	}
	p = &r->posted[r->nposted];
	p->op = op;
	p->len = (uint8_t)req_len;
	memcpy(p->req, req, req_len);
	for (int attempt = 0;; attempt++) {
		p->seq = ++r->seq;
		ret = remote_send(r, op, p->seq, req, req_len, NULL, 0);
		if (!ret) {
			r->nposted++;
			break;
		}
		if (!is_conn_lost(ret) || !r->token || attempt == 2 || remote_resume(dev) ||
		    repost(r))
			goto out_dead;
	}
	goto out;
out_dead:
	r->dead = true;
	log_err(dev->ctx, "%s: %s", dev->name,
		is_conn_lost(ret) ? "the daemon went away" : ugpu_strerror(ret));
	ret = -ENODEV;
out:
	pthread_mutex_unlock(&r->lock);
	return ret;
}

int remote_call(struct ugpu_device *dev, uint16_t op, const void *req, size_t req_len,
		const void *data, size_t data_len, void *rep, size_t rep_cap, size_t *rep_len)
{
	return remote_call_common(dev, op, req, req_len, data, data_len, rep, rep_cap, rep_len,
				  NULL, NULL);
}

int remote_call_fd(struct ugpu_device *dev, uint16_t op, const void *req, size_t req_len,
		   void *rep, size_t rep_cap, size_t *rep_len, int *rep_fd)
{
	int ret = remote_call_maybe_fd(dev, op, req, req_len, rep, rep_cap, rep_len, rep_fd, NULL);

	/* answered, without its fd: the kernel dropped it for want of room
	 * in this process (RLIMIT_NOFILE) */
	return !ret && *rep_fd < 0 ? -EMFILE : ret;
}

int remote_call_maybe_fd(struct ugpu_device *dev, uint16_t op, const void *req, size_t req_len,
			 void *rep, size_t rep_cap, size_t *rep_len, int *rep_fd,
			 uint32_t *resumes)
{
	*rep_fd = -1;
	return remote_call_common(dev, op, req, req_len, NULL, 0, rep, rep_cap, rep_len, rep_fd,
				  resumes);
}

int remote_get(struct ugpu_device *dev, uint16_t op, const void *req, size_t req_len, void *rep,
	       size_t rep_len)
{
	size_t got = 0;
	int ret = remote_call(dev, op, req, req_len, NULL, 0, rep, rep_len, &got);

	return ret ? ret : got != rep_len ? -EPROTO : 0;
}

int remote_query(struct ugpu_device *dev, struct ugpu_device_info *info)
{
	struct ugpu_device_info i = { 0 };
	struct ugpud_dev_info w;
	int ret;

	ret = remote_get(dev, UGPUD_DEV_QUERY, NULL, 0, &w, sizeof(w));
	if (ret)
		return ret;
	i.size = info->size;
	snprintf(i.name, sizeof(i.name), "%s", dev->name);
	snprintf(i.transport, sizeof(i.transport), "ugpud");
	w.profile[sizeof(w.profile) - 1] = '\0';
	snprintf(i.profile, sizeof(i.profile), "%s", w.profile);
	i.vendor_id = w.vendor_id;
	i.device_id = w.device_id;
	i.class_code = w.class_code;
	i.vram_size = w.vram_size;
	i.num_copy_engines = w.num_copy_engines;
	i.caps = dev->caps;
	i.fabric_id = w.fabric_id;
	i.power_state = (enum ugpu_power_state)w.power_state;
	remote_fill(info, info->size, &i, sizeof(i));
	return 0;
}

int remote_mem_stats(struct ugpu_device *dev, struct ugpu_device_mem *st)
{
	struct ugpu_device_mem s = { 0 };
	struct ugpud_mem w;
	int ret;

	ret = remote_get(dev, UGPUD_MEM_STATS, NULL, 0, &w, sizeof(w));
	if (ret)
		return ret;
	s.size = st->size;
	s.vram_size = w.vram_size;
	s.vram_used = w.vram_used;
	s.vram_free = w.vram_free;
	s.vram_kernel = w.vram_kernel;
	s.vram_bos = w.vram_bos;
	s.system_bytes = w.system_bytes;
	s.backup_bytes = w.backup_bytes;
	s.bos = w.bos;
	s.bos_vram = w.bos_vram;
	s.bos_system = w.bos_system;
	s.bos_lost = w.bos_lost;
	s.evictions = w.evictions;
	s.evicted_bytes = w.evicted_bytes;
	s.moves = w.moves;
	s.moved_bytes = w.moved_bytes;
	s.copy_failures = w.copy_failures;
	remote_fill(st, st->size, &s, sizeof(s));
	return 0;
}
