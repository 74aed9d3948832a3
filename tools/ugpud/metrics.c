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
 * thread may call. It touches nothing of the event loop's (clients, queues).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/common/prom.h"
#include "tools/ugpud/ugpud.h"

struct metrics {
	struct MHD_Daemon *mhd;
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
	ret = prom_write(f, m->dev_of, m->label_of, m->d->ndevs);
	if (fclose(f) || ret) {
		(free)(buf);
		return MHD_NO;
	}
	return reply(c, MHD_HTTP_OK, buf, len, MHD_RESPMEM_MUST_FREE,
		     "text/plain; version=0.0.4; charset=utf-8");
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
		free(m);
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
	free(m);
}
