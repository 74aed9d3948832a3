/* SPDX-License-Identifier: MIT */
/*
 * ugpuctl status [--json] DEVICE | --control PATH [--dev N] | --daemon SOCKET
 *
 * A read-only look at a device: it never opens the device, so it neither
 * claims it from its owner nor wakes it from a sleep.
 *   DEVICE (pci:BDF or BDF): what the kernel says in sysfs: ids, driver,
 *       IOMMU group, PCI power state, runtime-PM status, and which process
 *       holds it through VFIO.
 *   --control PATH: a reference device's own view through its control
 *       socket (ugpu-sim --control PATH): power state, engines, queues,
 *       whether a client is connected, DMA mappings, faults.
 *   --daemon SOCKET: what ugpud serves: for each of its devices the name,
 *       power state, VRAM use by kind (through the daemon, as a client)
 *       and the clients using it (the admin CLIENTS request: root or the
 *       daemon's user; others see the devices without the clients).
 * The driver's own counters (VRAM by kind, migrations, ...) live in the
 * process that owns the device: `ugpuctl stats` for a device nobody holds,
 * --daemon for the daemon's.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <ugpu/device.h>

#include "src/remote.h"
#include "src/ugpud_proto.h"
#include "tools/ugpuctl/ugpuctl.h"
#include "vfio/pci_bind.h"

#define MAX_DEV 15

static bool as_json;
static const char *control;
static const char *daemon_sock;
static uint64_t dev_index;

static const struct cli_opt status_opts[] = {
	{ .name = "json", .kind = CLI_FLAG, .dst = &as_json, .help = "one JSON object" },
	{ .name = "control", .kind = CLI_STR, .dst = &control, .arg = "PATH",
	  .help = "a reference device's control socket (ugpu-sim --control PATH)" },
	{ .name = "dev", .kind = CLI_UINT, .dst = &dev_index, .arg = "N",
	  .help = "with --control: which device of a multi-device ugpu-sim", .max = MAX_DEV },
	{ .name = "daemon", .kind = CLI_STR, .dst = &daemon_sock, .arg = "SOCKET",
	  .help = "what ugpud serves on SOCKET: its devices (power, VRAM by kind) and clients" },
	{ 0 },
};

static const struct cli_cmd status_cli = {
	.prog = "ugpuctl status",
	.args = "[pci:BDF]",
	.summary = "a read-only look at a device (sysfs, a reference device's control socket, ugpud)",
	.about = "Never opens the device: neither claims it nor wakes it. For pci:BDF: ids, driver,\n"
		 "IOMMU group, power state, runtime-PM status, VFIO holder (sysfs and /proc).\n"
		 "With --control PATH instead: the reference device's state from its control socket.\n"
		 "With --daemon SOCKET: ugpud's devices (name, power state, VRAM by kind) and their\n"
		 "clients (the clients need root or the daemon's user).",
	.opts = status_opts,
	.min_pos = 0,
	.max_pos = 1,
};

struct kv {
	const char *key;
	char val[256];
	bool number; /* JSON: unquoted */
};

static void print_kv(const struct kv *kv, size_t n)
{
	size_t i;

	if (!as_json) {
		for (i = 0; i < n; i++)
			printf("%-16s %s\n", kv[i].key, kv[i].val[0] ? kv[i].val : "-");
		return;
	}
	putchar('{');
	for (i = 0; i < n; i++) {
		printf("%s", i ? "," : "");
		ugpuctl_json_str(kv[i].key);
		putchar(':');
		if (kv[i].number)
			printf("%s", kv[i].val[0] ? kv[i].val : "null");
		else
			ugpuctl_json_str(kv[i].val);
	}
	printf("}\n");
}

static void sysfs_attr(const char *bdf, const char *leaf, char *out, size_t len)
{
	char path[512];

	out[0] = '\0';
	if (!pci_dev_path(ugpuctl_paths(), bdf, leaf, path, sizeof(path)) &&
	    pci_read_attr(path, out, len))
		out[0] = '\0'; /* an older kernel, or no runtime PM: unknown */
}

static int status_pci(const char *arg)
{
	const struct pci_paths *p = ugpuctl_paths();
	const char *bdf_in = strncmp(arg, "pci:", 4) ? arg : arg + 4;
	struct pci_dev_desc d;
	struct kv kv[9];
	char bdf[PCI_BDF_LEN];
	size_t n = 0;
	int ret;

	if (pci_bdf_normalize(bdf_in, bdf))
		return cli_usage_error(status_cli.prog, "'%s' is not pci:BDF (DDDD:BB:DD.F)", arg);
	ret = pci_describe(p, bdf, &d);
	if (ret) {
		fprintf(stderr, "%s: no PCI device %s (%s)\n", status_cli.prog, bdf, strerror(-ret));
		return 1;
	}
	memset(kv, 0, sizeof(kv));
	kv[n].key = "device";
	snprintf(kv[n++].val, sizeof(kv[0].val), "%s", d.bdf);
	kv[n].key = "id";
	snprintf(kv[n++].val, sizeof(kv[0].val), "%04x:%04x", d.vendor, d.device);
	kv[n].key = "class";
	snprintf(kv[n++].val, sizeof(kv[0].val), "%06x", d.class_code);
	kv[n].key = "driver";
	snprintf(kv[n++].val, sizeof(kv[0].val), "%s", d.driver);
	kv[n].key = "iommu_group";
	kv[n].number = true;
	if (d.iommu_group >= 0)
		snprintf(kv[n].val, sizeof(kv[0].val), "%d", d.iommu_group);
	n++;
	kv[n].key = "power_state";
	sysfs_attr(bdf, "power_state", kv[n++].val, sizeof(kv[0].val));
	kv[n].key = "runtime_status";
	sysfs_attr(bdf, "power/runtime_status", kv[n++].val, sizeof(kv[0].val));
	kv[n].key = "held_by";
	if (!strcmp(d.driver, "vfio-pci") && pci_holders(p, bdf, kv[n].val, sizeof(kv[0].val)) <= 0)
		snprintf(kv[n].val, sizeof(kv[0].val), "nobody");
	n++;
	kv[n].key = "usable";
	snprintf(kv[n++].val, sizeof(kv[0].val), "%s",
		 !strcmp(d.driver, "vfio-pci") ? "yes (on vfio-pci)" :
		 d.iommu_group < 0	       ? "no (no IOMMU group)" :
						 "after ugpuctl bind");
	print_kv(kv, n);
	return 0;
}

/* The control socket's "state" reply: "ok power=D0 ce0=idle ..." */
static int status_control(void)
{
	struct kv kv[24];
	char line[32], reply[1024], *save = NULL, *tok;
	size_t n = 0;
	int ret;

	snprintf(line, sizeof(line), "dev %u state", (unsigned)dev_index);
	ret = ugpuctl_control_call(control, line, reply, sizeof(reply));
	if (ret) {
		if (ret == -EIO)
			fprintf(stderr, "%s: %s: %s\n", status_cli.prog, control, reply);
		return 1;
	}
	memset(kv, 0, sizeof(kv));
	for (tok = strtok_r(reply, " ", &save); tok && n < sizeof(kv) / sizeof(kv[0]);
	     tok = strtok_r(NULL, " ", &save)) {
		char *eq = strchr(tok, '=');
		const char *c;

		if (!eq)
			continue; /* the leading "ok" */
		*eq = '\0';
		kv[n].key = tok;
		snprintf(kv[n].val, sizeof(kv[0].val), "%s", eq + 1);
		kv[n].number = eq[1] != '\0';
		for (c = eq + 1; *c; c++)
			if (*c < '0' || *c > '9')
				kv[n].number = false;
		n++;
	}
	if (!n) {
		fprintf(stderr, "%s: %s: unexpected reply '%s'\n", status_cli.prog, control, reply);
		return 1;
	}
	print_kv(kv, n);
	return 0;
}

/* ---- --daemon SOCKET ---------------------------------------------------------------- */

#define MAX_DAEMON_DEV 64

static const char *power_name(uint32_t p)
{
	return p == UGPU_POWER_D0	? "D0"
	       : p == UGPU_POWER_D3HOT	? "D3hot"
	       : p == UGPU_POWER_D3COLD ? "D3cold"
					: "?";
}

/* One device's memory as "key value" pairs: VRAM by kind, then the rest;
 * then BO traffic (moves: migrations, evictions, pins, suspend, removal). */
#define MEM_FIELDS(X)                                                                           \
	X(vram_size) X(vram_used) X(vram_free) X(vram_bos) X(vram_kernel) X(system_bytes)     \
	X(backup_bytes) X(bos) X(bos_vram) X(bos_system) X(moves) X(evictions)                \
	X(copy_failures)
/* What runs on it: its engines (from the description), the VMs and queues
 * of the daemon's clients, SVM's faults and migrations (UGPUD_DEV_ACTIVITY). */
#define ACT_FIELDS(X) X(vms) X(queues) X(svm_faults) X(svm_migrations) X(svm_cpu_faults)        \
	X(svm_vram_bytes)

static void print_daemon_dev(unsigned idx, const struct ugpud_dev_info *w,
			     const struct ugpu_device_mem *m, const struct ugpud_dev_activity *a,
			     const struct ugpud_clients_rep *cl, const uint32_t *own, unsigned n_own)
{
	unsigned shown = 0;

	if (as_json) {
		printf("%s{\"index\":%u,\"name\":", idx ? "," : "", idx);
		ugpuctl_json_str(w->name);
		printf(",\"profile\":");
		ugpuctl_json_str(w->profile);
		printf(",\"power_state\":\"%s\"", power_name(w->power_state));
#define X(f) printf(",\"" #f "\":%llu", (unsigned long long)m->f);
		MEM_FIELDS(X)
#undef X
		printf(",\"copy_engines\":%u", w->num_copy_engines);
#define X(f) printf(",\"" #f "\":%llu", (unsigned long long)a->f);
		ACT_FIELDS(X)
#undef X
		printf(",\"clients\":");
		if (!cl) {
			printf("null}");
			return;
		}
		putchar('[');
	} else {
		printf("device %u: %s (%s)\n", idx, w->name, w->profile);
		printf("  %-16s %s\n", "power_state", power_name(w->power_state));
#define X(f) printf("  %-16s %llu\n", #f, (unsigned long long)m->f);
		MEM_FIELDS(X)
#undef X
		printf("  %-16s %u\n", "copy_engines", w->num_copy_engines);
#define X(f) printf("  %-16s %llu\n", #f, (unsigned long long)a->f);
		ACT_FIELDS(X)
#undef X
		if (!cl) {
			printf("  %-16s %s\n", "clients", "- (needs root or the daemon's user)");
			return;
		}
	}
	for (uint32_t i = 0; cl && i < cl->count; i++) {
		const struct ugpud_client_info *c = &cl->c[i];
		char name[sizeof(c->name) + 1];
		bool mine = false;

		if (c->device != idx)
			continue;
		for (unsigned k = 0; k < n_own; k++)
			mine |= c->id == own[k];
		if (mine)
			continue; /* this ugpuctl's own connections */
		snprintf(name, sizeof(name), "%.*s", (int)sizeof(c->name), c->name);
		if (as_json) {
			printf("%s{\"id\":%u,\"pid\":%u,\"uid\":%u,\"bos\":%u,\"bytes\":%llu,"
			       "\"vram_charged\":%llu,\"requests\":%llu,\"name\":",
			       shown ? "," : "", c->id, c->pid, c->uid, c->bos,
			       (unsigned long long)c->bytes, (unsigned long long)c->vram_charged,
			       (unsigned long long)c->requests);
			ugpuctl_json_str(name);
			putchar('}');
		} else {
			if (!shown)
				printf("  clients\n    %6s %8s %6s %6s %12s %12s %10s  %s\n", "ID", "PID",
				       "UID", "BOS", "BYTES", "VRAM-QUOTA", "REQUESTS", "NAME");
			printf("    %6u %8u %6u %6u %12llu %12llu %10llu  %s\n", c->id, c->pid, c->uid,
			       c->bos, (unsigned long long)c->bytes,
			       (unsigned long long)c->vram_charged, (unsigned long long)c->requests,
			       name);
		}
		shown++;
	}
	if (as_json)
		printf("]}");
	else if (!shown)
		printf("  %-16s %s\n", "clients", "none");
}

/*
 * Connect to each device ugpud serves (one connection each, all open at
 * once so that the client list can leave them out), read its description
 * and memory use, then the daemon's client list once. Reads only: no BO,
 * no VM, nothing that wakes a sleeping device.
 */
static int status_daemon(void)
{
	static _Alignas(8) unsigned char buf[UGPUD_MAX_DATA];
	struct ugpud_clients_rep *cl = (void *)buf;
	struct ugpu_device *devs[MAX_DAEMON_DEV] = { 0 };
	struct ugpud_dev_info info[MAX_DAEMON_DEV];
	struct ugpu_device_mem mem[MAX_DAEMON_DEV];
	struct ugpud_dev_activity act[MAX_DAEMON_DEV];
	uint32_t own[MAX_DAEMON_DEV];
	struct ugpu_context *ctx = NULL;
	const char *sock = daemon_sock;
	unsigned n = 1, i;
	char uri[300];
	size_t got = 0;
	int ret = 0, rc = 1;

	if (!strncmp(sock, REMOTE_URI_PREFIX, strlen(REMOTE_URI_PREFIX)))
		sock += strlen(REMOTE_URI_PREFIX);
	if (strchr(sock, '?'))
		return cli_usage_error(status_cli.prog, "--daemon takes the socket, not a device of it");
	for (i = 0; i < n; i++) {
		snprintf(uri, sizeof(uri), "%s%s?device=%u", REMOTE_URI_PREFIX, sock, i);
		if (!i) {
			if (ugpuctl_open(status_cli.prog, uri, &ctx, &devs[0]))
				goto out;
			n = remote_devices(devs[0]);
			if (n > MAX_DAEMON_DEV)
				n = MAX_DAEMON_DEV;
		} else if ((ret = ugpu_device_open(ctx, uri, &devs[i]))) {
			fprintf(stderr, "%s: cannot open %s: %s\n", status_cli.prog, uri,
				ugpu_strerror(ret));
			goto out;
		}
		own[i] = remote_client_id(devs[i]);
		mem[i] = (struct ugpu_device_mem){ .size = sizeof(mem[i]) };
		ret = remote_get(devs[i], UGPUD_DEV_QUERY, NULL, 0, &info[i], sizeof(info[i]));
		if (!ret)
			ret = ugpu_device_mem_stats(devs[i], &mem[i]);
		if (!ret)
			ret = remote_get(devs[i], UGPUD_DEV_ACTIVITY, NULL, 0, &act[i], sizeof(act[i]));
		if (ret) {
			fprintf(stderr, "%s: %s: %s\n", status_cli.prog, uri, ugpu_strerror(ret));
			goto out;
		}
		info[i].name[sizeof(info[i].name) - 1] = '\0';
		info[i].profile[sizeof(info[i].profile) - 1] = '\0';
	}
	ret = remote_call(devs[0], UGPUD_CLIENTS, NULL, 0, NULL, 0, buf, sizeof(buf), &got);
	if (!ret && (got < sizeof(*cl) || got != sizeof(*cl) + cl->count * sizeof(cl->c[0])))
		ret = -EPROTO;
	if (ret && ret != -EPERM && ret != -EACCES) {
		fprintf(stderr, "%s: %s: the client list: %s\n", status_cli.prog, sock,
			ugpu_strerror(ret));
		goto out;
	}
	if (as_json) {
		printf("{\"daemon\":");
		ugpuctl_json_str(sock);
		printf(",\"devices\":[");
	} else {
		printf("daemon %s: %u device%s\n", sock, n, n == 1 ? "" : "s");
	}
	for (i = 0; i < n; i++)
		print_daemon_dev(i, &info[i], &mem[i], &act[i], ret ? NULL : cl, own, n);
	if (as_json)
		printf("]}\n");
	rc = 0;
out:
	for (i = 0; i < n; i++)
		if (devs[i])
			ugpu_device_close(devs[i]);
	ugpu_context_destroy(ctx);
	return rc;
}

static int run_status(int argc, char **argv)
{
	char *dev = NULL;
	unsigned npos = 0;
	int ret;

	ret = cli_parse(&status_cli, argc, argv, &dev, &npos);
	if (ret != CLI_CONTINUE)
		return ret;
	if (!!control + !!daemon_sock + !!npos > 1)
		return cli_usage_error(status_cli.prog,
				       "give one of pci:BDF, --control PATH and --daemon SOCKET");
	if (control)
		return status_control();
	if (daemon_sock)
		return status_daemon();
	if (!npos)
		return cli_usage_error(status_cli.prog,
				       "missing argument: pci:BDF (or --control PATH, --daemon SOCKET)");
	if (!strncmp(dev, "vfio-user:", 10))
		return cli_usage_error(status_cli.prog,
				       "a vfio-user device is seen only through its owner: use "
				       "--control PATH for ugpu-sim, or ugpuctl stats when nobody holds it");
	return status_pci(dev);
}

const struct ugpuctl_cmd ugpuctl_cmd_status = {
	.cli = &status_cli,
	.name = "status",
	.run = run_status,
};
