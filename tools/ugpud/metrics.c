// SPDX-License-Identifier: MIT
/*
 * ugpud's Prometheus endpoint: GET /metrics on a loopback HTTP port answers
 * every counter of every device the daemon serves, in the text exposition
 * format 0.0.4 (tools/common/prom.c names them), one sample per device
 * labelled with its URI. HTTP is libmicrohttpd's (Debian's libmicrohttpd),
 * on a thread of its own.
 *
 * Threads and data: the endpoint's thread reads d->devs[] (filled before it
 * starts, unchanged until it stops: metrics_stop() comes before the devices
 * go down) and the devices' counters through ugpu_device_stat(), which any
 * thread may call. It touches nothing of the event loop's (clients, queues):
 * the per-client figures are a copy the loop makes when asked
 * (struct client_view, below).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tools/common/prom.h"
#include "tools/ugpud/ugpud.h"

/* One client's figures as the loop copied them. */
struct client_fig {
	uint32_t id;
	pid_t pid;
	uid_t uid;
	uint32_t device;
	char name[32];
	uint32_t bos;
	uint64_t bytes, vram_charged, requests;
};

/* How long a scrape waits for the loop's copy of the clients; a loop that
 * does not answer (stopping, or wedged: the watchdog's business) leaves the
 * clients out of that scrape. */
#define CLIENTS_WAIT_MS 500

/*
 * struct client_view - the clients as the endpoint shows them. A scrape sets
 * @want and wakes the loop through d->ev_fd; the loop (metrics_publish())
 * copies every connected client into @c, bumps @gen and signals @cond.
 * Locking: @lock guards every field; the loop writes under it, the
 * endpoint's thread reads under it. Nothing else is taken under @lock.
 */
struct client_view {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool want;
	uint64_t gen;
	struct client_fig *c;
	unsigned int n, cap;
	uint64_t quota;
};

struct metrics {
	struct MHD_Daemon *mhd;
	struct client_view view;
	struct ugpud *d;
	char labels[UGPUD_MAX_DEVICES][256];
	const char *label_of[UGPUD_MAX_DEVICES];
	struct ugpu_device *dev_of[UGPUD_MAX_DEVICES];
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned int status, char *body,
			     size_t len, enum MHD_ResponseMemoryMode mode, const char *type)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
	enum MHD_Result ret;

	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", type);
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

void metrics_publish(struct ugpud *d)
{
	struct metrics *m = d->metrics;
	struct client_view *v;
	unsigned int n = 0;

	if (!m)
		return;
	v = &m->view;
	pthread_mutex_lock(&v->lock);
	if (!v->want) {
		pthread_mutex_unlock(&v->lock);
		return;
	}
	if (v->cap < d->nclients) {
		struct client_fig *c = realloc(v->c, d->nclients * sizeof(*c));

		if (c) {
			v->c = c;
			v->cap = d->nclients;
		}
	}
	list_for_each(l, &d->clients) {
		const struct client *o = list_entry(l, struct client, link);
		struct client_fig *f;

		if (!o->hello)
			continue; /* not a client of a device yet */
		if (n == v->cap)
			break; /* out of memory: the ones that fit */
		f = &v->c[n++];
		f->id = o->id;
		f->pid = o->pid;
		f->uid = o->uid;
		f->device = o->device;
		memcpy(f->name, o->name, sizeof(f->name));
		f->name[sizeof(f->name) - 1] = '\0';
		f->bos = o->nbos;
		f->bytes = o->bytes;
		f->vram_charged = o->vram_charged;
		f->requests = o->requests;
	}
	v->n = n;
	v->quota = d->vram_quota;
	v->want = false;
	v->gen++;
	pthread_cond_broadcast(&v->cond);
	pthread_mutex_unlock(&v->lock);
}

/* The per-client figures: ask the loop for a copy (bounded wait), write it. */
static void write_clients(FILE *f, struct metrics *m)
{
	static const struct {
		const char *name, *type, *help;
	} fam[] = {
		{ "ugpud_client_bos", "gauge", "BOs the client holds" },
		{ "ugpud_client_bo_bytes", "gauge", "bytes of the client's BOs" },
		{ "ugpud_client_vram_charged_bytes", "gauge",
		  "bytes of VRAM-capable BOs counted against the client's quota" },
		{ "ugpud_client_requests_total", "counter", "requests the client sent" },
	};
	struct client_view *v = &m->view;
	struct timespec until;
	uint64_t gen;
	bool fresh = true;
	uint64_t one = 1;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_nsec += CLIENTS_WAIT_MS * 1000000L;
	until.tv_sec += until.tv_nsec / 1000000000L;
	until.tv_nsec %= 1000000000L;
	pthread_mutex_lock(&v->lock);
	gen = v->gen;
	v->want = true;
	if (m->d->ev_fd < 0 || write(m->d->ev_fd, &one, sizeof(one)) < 0)
		fresh = false;
	while (fresh && v->gen == gen)
		if (pthread_cond_timedwait(&v->cond, &v->lock, &until)) {
			fresh = false;
			break;
		}
	if (!fresh) { /* no copy: no client figures rather than stale ones */
		pthread_mutex_unlock(&v->lock);
		return;
	}
	fprintf(f, "# HELP ugpud_clients clients connected (past their hello)\n"
		   "# TYPE ugpud_clients gauge\nugpud_clients %u\n", v->n);
	fprintf(f, "# HELP ugpud_client_vram_quota_bytes the VRAM quota of each client (0: none)\n"
		   "# TYPE ugpud_client_vram_quota_bytes gauge\nugpud_client_vram_quota_bytes %llu\n",
		(unsigned long long)v->quota);
	for (size_t k = 0; k < sizeof(fam) / sizeof(fam[0]); k++) {
		fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", fam[k].name, fam[k].help, fam[k].name,
			fam[k].type);
		for (unsigned int i = 0; i < v->n; i++) {
			const struct client_fig *c = &v->c[i];
			char name[3 * sizeof(c->name) + 16];
			uint64_t val = k == 0 ? c->bos : k == 1 ? c->bytes : k == 2 ? c->vram_charged
								       : c->requests;

			if (prom_label(name, sizeof(name), "name", c->name))
				snprintf(name, sizeof(name), "name=\"?\"");
			fprintf(f, "%s{client=\"%u\",pid=\"%d\",uid=\"%u\",device=\"%u\",%s} %llu\n",
				fam[k].name, c->id, (int)c->pid, (unsigned int)c->uid, c->device, name,
				(unsigned long long)val);
		}
	}
	pthread_mutex_unlock(&v->lock);
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *c, const char *url,
			      const char *method, const char *version, const char *upload,
			      size_t *upload_size, void **con_cls)
{
	static char not_found[] = "ugpud: metrics are at /metrics\n";
	static char not_allowed[] = "ugpud: GET only\n";
	struct metrics *m = cls;
	char *buf = NULL;
	size_t len = 0;
	FILE *f;
	int ret;

	(void)version;
	(void)upload;
	(void)upload_size;
	(void)con_cls;
	if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
		return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, not_allowed, sizeof(not_allowed) - 1,
			     MHD_RESPMEM_PERSISTENT, "text/plain");
	if (strcmp(url, "/metrics"))
		return reply(c, MHD_HTTP_NOT_FOUND, not_found, sizeof(not_found) - 1,
			     MHD_RESPMEM_PERSISTENT, "text/plain");
	/* open_memstream's buffer is the C library's: libmicrohttpd frees it
	 * (MHD_RESPMEM_MUST_FREE) with the C library's free() */
	f = open_memstream(&buf, &len);
	if (!f)
		return MHD_NO;
	fprintf(f, "# HELP ugpud_up 1 while the daemon serves\n# TYPE ugpud_up gauge\nugpud_up 1\n");
	fprintf(f, "# HELP ugpud_devices devices the daemon serves\n# TYPE ugpud_devices gauge\n"
		   "ugpud_devices %u\n", m->d->ndevs);
	write_clients(f, m);
	ret = prom_write(f, m->dev_of, m->label_of, m->d->ndevs);
	if (fclose(f) || ret) {
		(free)(buf);
		return MHD_NO;
	}
	return reply(c, MHD_HTTP_OK, buf, len, MHD_RESPMEM_MUST_FREE,
		     "text/plain; version=0.0.4; charset=utf-8");
}

static void metrics_free(struct metrics *m)
{
	pthread_cond_destroy(&m->view.cond);
	pthread_mutex_destroy(&m->view.lock);
	free(m->view.c);
	free(m);
}

int metrics_start(struct ugpud *d, const char *where, struct metrics **out)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	const union MHD_DaemonInfo *info;
	char host[64];
	const char *colon = strrchr(where, ':');
	struct metrics *m;
	unsigned long port;
	char *end;

	*out = NULL;
	if (!colon || (size_t)(colon - where) >= sizeof(host))
		return -EINVAL;
	memcpy(host, where, (size_t)(colon - where));
	host[colon - where] = '\0';
	port = strtoul(colon + 1, &end, 10);
	if (!colon[1] || *end || port > 65535 || inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return -EINVAL;
	sa.sin_port = htons((uint16_t)port);
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->d = d;
	pthread_mutex_init(&m->view.lock, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&m->view.cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	for (unsigned int i = 0; i < d->ndevs; i++) {
		prom_label(m->labels[i], sizeof(m->labels[i]), "device", d->devs[i].uri);
		m->label_of[i] = m->labels[i];
		m->dev_of[i] = d->devs[i].dev;
	}
	m->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
				  answer, m, MHD_OPTION_SOCK_ADDR, &sa,
				  MHD_OPTION_CONNECTION_LIMIT, 16u, MHD_OPTION_CONNECTION_TIMEOUT,
				  10u, MHD_OPTION_END);
	if (!m->mhd) {
		metrics_free(m);
		return -EADDRINUSE;
	}
	info = MHD_get_daemon_info(m->mhd, MHD_DAEMON_INFO_BIND_PORT);
	ugpud_log("metrics on http://%s:%u/metrics", host, info ? info->port : (unsigned)port);
	*out = m;
	return 0;
}

void metrics_stop(struct metrics *m)
{
	if (!m)
		return;
	MHD_stop_daemon(m->mhd);
	metrics_free(m);
}
