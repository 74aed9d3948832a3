/* SPDX-License-Identifier: MIT */
/*
 * ugpuctl clients | kill: talk to ugpud (docs/daemon.md).
 *
 *   ugpuctl clients SOCKET        the daemon's clients: id, pid, uid, device,
 *                                 BOs, bytes, VRAM counted against the quota,
 *                                 requests served, program name
 *   ugpuctl kill SOCKET ID        disconnect client ID; the daemon releases
 *                                 everything it held
 *   ugpuctl daemon-pm SOCKET DEVICE ACTION
 *                                 a host-suspend step of a served device for
 *                                 all its clients (UGPUD_DEVICE_PM): prepare,
 *                                 suspend, resume, cancel, or sleep (prepare
 *                                 then suspend, what ugpud --logind does)
 *
 * All are administrator requests: root or the daemon's own user (others
 * get "Operation not permitted" from the daemon). ugpuctl connects as a
 * client itself, so it appears in the list (marked "(this ugpuctl)").
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ugpu/device.h>

#include "base/clock.h"
#include "src/remote.h"
#include "src/ugpud_proto.h"
#include "tools/ugpuctl/ugpuctl.h"

/* "ugpud:SOCKET" from a socket path (a full ugpud: URI is taken too). */
static int daemon_open(const char *prog, const char *sock, struct ugpu_context **ctx,
		       struct ugpu_device **dev)
{
	char uri[160];

	if (!strncmp(sock, REMOTE_URI_PREFIX, strlen(REMOTE_URI_PREFIX)))
		snprintf(uri, sizeof(uri), "%s", sock);
	else
		snprintf(uri, sizeof(uri), "%s%s", REMOTE_URI_PREFIX, sock);
	return ugpuctl_open(prog, uri, ctx, dev);
}

static bool clients_json;

static const struct cli_opt clients_opts[] = {
	{ .name = "json", .kind = CLI_FLAG, .dst = &clients_json,
	  .help = "one JSON object per client, one per line" },
	{ 0 },
};

static const struct cli_cmd clients_cli = {
	.prog = "ugpuctl clients",
	.args = "SOCKET",
	.summary = "list ugpud's clients with their memory and requests",
	.about = "SOCKET is ugpud's socket (e.g. /run/ugpud/ugpud.sock). Needs root or the\n"
		 "daemon's user.",
	.opts = clients_opts,
	.min_pos = 1,
	.max_pos = 1,
};

static int run_clients(int argc, char **argv)
{
	static _Alignas(8) unsigned char buf[UGPUD_MAX_DATA];
	struct ugpud_clients_rep *r = (void *)buf;
	struct ugpu_context *ctx = NULL;
	struct ugpu_device *dev = NULL;
	unsigned npos;
	char *sock;
	size_t got = 0;
	int rc = cli_parse(&clients_cli, argc, argv, &sock, &npos), ret;

	if (rc != CLI_CONTINUE)
		return rc;
	if (daemon_open(clients_cli.prog, sock, &ctx, &dev))
		return 1;
	ret = remote_call(dev, UGPUD_CLIENTS, NULL, 0, NULL, 0, buf, sizeof(buf), &got);
	if (!ret && (got < sizeof(*r) || got != sizeof(*r) + r->count * sizeof(r->c[0])))
		ret = -EPROTO;
	if (ret) {
		fprintf(stderr, "%s: %s: %s\n", clients_cli.prog, sock, ugpu_strerror(ret));
		rc = 1;
		goto out;
	}
	if (clients_json) {
		for (uint32_t i = 0; i < r->count; i++) {
			const struct ugpud_client_info *c = &r->c[i];
			char name[sizeof(c->name) + 1];

			snprintf(name, sizeof(name), "%.*s", (int)sizeof(c->name), c->name);
			printf("{\"id\":%u,\"pid\":%u,\"uid\":%u,\"gid\":%u,\"device\":%u,"
			       "\"bos\":%u,\"bytes\":%llu,\"vram_charged\":%llu,\"requests\":%llu,"
			       "\"name\":",
			       c->id, c->pid, c->uid, c->gid, c->device, c->bos,
			       (unsigned long long)c->bytes, (unsigned long long)c->vram_charged,
			       (unsigned long long)c->requests);
			ugpuctl_json_str(name);
			printf(",\"self\":%s}\n", c->id == remote_client_id(dev) ? "true" : "false");
		}
		if (r->total > r->count)
			fprintf(stderr, "%s: %u more clients not listed\n", clients_cli.prog,
				r->total - r->count);
		rc = 0;
		goto out;
	}
	printf("%6s %8s %6s %6s %6s %12s %12s %10s  %s\n", "ID", "PID", "UID", "DEVICE", "BOS",
	       "BYTES", "VRAM-QUOTA", "REQUESTS", "NAME");
	for (uint32_t i = 0; i < r->count; i++) {
		const struct ugpud_client_info *c = &r->c[i];

		printf("%6u %8u %6u %6u %6u %12llu %12llu %10llu  %.31s%s\n", c->id, c->pid, c->uid,
		       c->device, c->bos, (unsigned long long)c->bytes,
		       (unsigned long long)c->vram_charged, (unsigned long long)c->requests,
		       c->name, c->id == remote_client_id(dev) ? " (this ugpuctl)" : "");
	}
	if (r->total > r->count)
		printf("(%u more not listed)\n", r->total - r->count);
	rc = 0;
out:
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	return rc;
}

static const struct cli_cmd kill_cli = {
	.prog = "ugpuctl kill",
	.args = "SOCKET ID",
	.summary = "disconnect a ugpud client; the daemon releases all it held",
	.about = "ID is a client id of 'ugpuctl clients'. Needs root or the daemon's user.",
	.min_pos = 2,
	.max_pos = 2,
};

static int run_kill(int argc, char **argv)
{
	struct ugpu_context *ctx = NULL;
	struct ugpu_device *dev = NULL;
	struct ugpud_kill_req k = { 0 };
	char *pos[2];
	unsigned npos;
	uint64_t id;
	int rc = cli_parse(&kill_cli, argc, argv, pos, &npos), ret;

	if (rc != CLI_CONTINUE)
		return rc;
	if (cli_uint(kill_cli.prog, "ID", pos[1], 1, UINT32_MAX, &id))
		return CLI_EXIT_USAGE;
	if (daemon_open(kill_cli.prog, pos[0], &ctx, &dev))
		return 1;
	k.id = (uint32_t)id;
	ret = remote_call(dev, UGPUD_KILL, &k, sizeof(k), NULL, 0, NULL, 0, NULL);
	if (ret)
		fprintf(stderr, "%s: client %u: %s\n", kill_cli.prog, k.id, ugpu_strerror(ret));
	else
		printf("client %u disconnected\n", k.id);
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	return ret ? 1 : 0;
}

static const struct cli_cmd pm_cli = {
	.prog = "ugpuctl daemon-pm",
	.args = "SOCKET DEVICE ACTION",
	.summary = "host-suspend step of a ugpud device for all its clients",
	.about = "DEVICE is the device's index in the daemon (0..15). ACTION: prepare, suspend,\n"
		 "resume, cancel, or sleep (prepare then suspend). While the device is\n"
		 "suspended its clients' requests that need it fail with EAGAIN; they are told\n"
		 "by events. Needs root or the daemon's user.",
	.min_pos = 3,
	.max_pos = 3,
};

static int run_pm(int argc, char **argv)
{
	static const char *const names[] = { [UGPUD_PM_PREPARE] = "prepare",
					     [UGPUD_PM_SUSPEND] = "suspend",
					     [UGPUD_PM_RESUME] = "resume",
					     [UGPUD_PM_CANCEL] = "cancel" };
	struct ugpu_context *ctx = NULL;
	struct ugpu_device *dev = NULL;
	struct ugpud_device_pm_req req = { 0 };
	uint32_t steps[2], nsteps = 0;
	char *pos[3];
	unsigned npos;
	uint64_t index;
	int rc = cli_parse(&pm_cli, argc, argv, pos, &npos), ret = 0;

	if (rc != CLI_CONTINUE)
		return rc;
	if (cli_uint(pm_cli.prog, "DEVICE", pos[1], 0, 15, &index))
		return CLI_EXIT_USAGE;
	if (!strcmp(pos[2], "sleep")) {
		steps[nsteps++] = UGPUD_PM_PREPARE;
		steps[nsteps++] = UGPUD_PM_SUSPEND;
	}
	for (uint32_t a = UGPUD_PM_PREPARE; a <= UGPUD_PM_CANCEL && !nsteps; a++)
		if (!strcmp(pos[2], names[a]))
			steps[nsteps++] = a;
	if (!nsteps) {
		fprintf(stderr, "%s: ACTION '%s': expected prepare, suspend, resume, cancel or sleep\n",
			pm_cli.prog, pos[2]);
		return CLI_EXIT_USAGE;
	}
	if (daemon_open(pm_cli.prog, pos[0], &ctx, &dev))
		return 1;
	req.device = (uint32_t)index;
	for (uint32_t i = 0; i < nsteps && !ret; i++) {
		uint64_t t0 = now_us();

		req.action = steps[i];
		ret = remote_call(dev, UGPUD_DEVICE_PM, &req, sizeof(req), NULL, 0, NULL, 0, NULL);
		if (ret)
			fprintf(stderr, "%s: device %u: %s: %s\n", pm_cli.prog, req.device,
				names[steps[i]], ugpu_strerror(ret));
		else
			printf("device %u: %s done in %.1f ms\n", req.device, names[steps[i]],
			       (double)(now_us() - t0) / 1000.0);
	}
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	return ret ? 1 : 0;
}

const struct ugpuctl_cmd ugpuctl_cmd_clients = { .cli = &clients_cli, .name = "clients",
						 .run = run_clients };
const struct ugpuctl_cmd ugpuctl_cmd_kill = { .cli = &kill_cli, .name = "kill", .run = run_kill };
const struct ugpuctl_cmd ugpuctl_cmd_daemon_pm = { .cli = &pm_cli, .name = "daemon-pm",
						   .run = run_pm };
