/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: ugpud's request handling (tools/ugpud/serve.c).
 *
 * The daemon's state is real: one device (the reference device embedded
 * in-process, 64 MiB of VRAM) opened through libugpu, as ugpud does, and two
 * clients on it — A an administrator, B not — so handles of one are tried on
 * the other. Each input is a session: a sequence of records
 *
 *   byte 0  bit 0: the client (A or B); bits 1-4: how many fds the loop saw
 *           with the record (it closes them before serving); bit 5: the
 *           record was longer than UGPUD_MAX_MSG (the loop passes its real
 *           length and the part that fits); bit 6: an administrator's power
 *           step of the device runs meanwhile (ugpud_dev.pm_busy): the
 *           record is served as the loop would, kept while
 *           serve_must_wait() says so and served once the step ended
 *   byte 1-2  the record's length, little-endian (at most UGPUD_MAX_MSG)
 *   then that many bytes: the record as it came off the socket
 *
 * served by serve_request() as the loop serves them (a fence wait that
 * would wait is answered at once with serve_wait_done(), as when its slice
 * ends; a slow request's job, which the daemon hands to a worker, is run
 * at once and answered with serve_job_done(), with bit 6 as if a power
 * step of the device began meanwhile). Every reply is checked:
 * a header with the magic, the request's op (HELLO for records too short to
 * have one) and seq, a length that matches, a result <= 0, an error's body a
 * terminated message; an fd only with a successful BO_MAP (it is the BO's
 * memfd, sealed). A KILL of a client disconnects it as the loop would. At
 * the end both clients are released and the device must hold no BO: a
 * request that leaks one is a finding, as is a crash or a sanitizer report.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ugpu/bo.h>
#include <ugpu/device.h>
#include <ugpu/pm.h>

#include "src/suspend.h"
#include "tools/ugpu-sim/sim.h"
#include "tools/ugpud/ugpud.h"

static struct ugpud d;
static struct client *cl[2];
static bool killed[2];
static _Alignas(8) unsigned char rep[UGPUD_MAX_MSG];
static _Alignas(8) unsigned char msg[UGPUD_MAX_MSG];

static void fz_kill(struct ugpud *dd, struct client *victim)
{
	(void)dd;
	for (int i = 0; i < 2; i++)
		if (cl[i] == victim)
			killed[i] = true;
}

/* The daemon's slow requests go to a worker (d->offload): the target runs
 * the job itself once serve_request() returned, as a worker would, and
 * answers it with serve_job_done(), as the loop does. */
static void fz_offload(struct ugpud *dd, struct client *c)
{
	(void)dd;
	(void)c;
}

static struct client *fz_client(int i)
{
	struct ucred cred = { .pid = 1000 + i, .uid = i ? 4242 : 0, .gid = i ? 4242 : 0 };
	struct client *c = client_new(&d, -1, &cred);

	if (!c)
		abort();
	list_add_tail(&d.clients, &c->link);
	d.nclients++;
	return c;
}

static void fz_drop(int i)
{
	client_release(&d, cl[i]);
	list_del(&cl[i]->link);
	d.nclients--;
	client_free(cl[i]);
	cl[i] = NULL;
	killed[i] = false;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct sim_opts so;
	struct sim *sim;
	char uri[160];

	(void)argc;
	(void)argv;
	/* a prepare behind a kernel that never ends gives up after 40 ms, not
	 * 5 s: the same refusal (-ETIMEDOUT), at the rate of the rest */
	pm_exec_idle_ms_test = 40;
	sim_opts_init(&so);
	so.vram_size = 64ull << 20;
	if (sim_start(&so, &sim) || ugpu_context_create(NULL, &d.ctx))
		abort();
	snprintf(uri, sizeof(uri), "vfio-user:%s", sim_socket_path(sim, 0));
	if (ugpu_device_open(d.ctx, uri, &d.devs[0].dev))
		abort();
	d.ndevs = 1;
	list_init(&d.clients);
	list_init(&d.detached);
	d.self_uid = 0;
	d.vram_quota = 16ull << 20;
	d.max_clients = 8;
	d.max_bos = 64;
	d.kill = fz_kill;
	d.offload = fz_offload;
	return 0;
}

static void check_reply(const struct ugpud_hdr *req, size_t req_len, size_t len, int fd)
{
	struct ugpud_hdr h;

	if (len < sizeof(h) || len > sizeof(rep))
		__builtin_trap();
	memcpy(&h, rep, sizeof(h));
	if (h.magic != UGPUD_MAGIC || h.len != len - sizeof(h) || h.result > 0 || h.flags)
		__builtin_trap();
	if (req_len >= sizeof(*req) && (h.op != req->op || h.seq != req->seq) && req->op)
		__builtin_trap();
	if (h.result < 0 && h.len && (h.len > UGPUD_MAX_ERRMSG || rep[len - 1] != '\0'))
		__builtin_trap(); /* an error's message is terminated text */
	/* a create's reply says whether it brings the BO's memfd */
	bool create_fd = (!h.result && h.op == UGPUD_BO_CREATE &&
			  h.len == sizeof(struct ugpud_bo_create_rep) &&
			  ((const struct ugpud_bo_create_rep *)(rep + sizeof(h)))->got ==
				  UGPUD_CREATE_FD);
	/* a mirror VM's create: its fault eventfd, when the reply says so */
	bool fault_fd = !h.result && h.op == UGPUD_SVM_VM_CREATE &&
			h.len == sizeof(struct ugpud_handle_rep) &&
			((const struct ugpud_handle_rep *)(rep + sizeof(h)))->got == UGPUD_SVM_FAULT_FD;
	/* a fence's eventfd: always with a successful reply */
	fault_fd |= !h.result && h.op == UGPUD_FENCE_EVENTFD;

	if (fd >= 0 && fault_fd) {
		char path[64], link[64];
		ssize_t k;

		/* an eventfd, not memory */
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		k = readlink(path, link, sizeof(link) - 1);
		if (k < 0 || (link[k] = '\0', strcmp(link, "anon_inode:[eventfd]")))
			__builtin_trap();
		close(fd);
		return;
	}
	if (fault_fd)
		__builtin_trap(); /* says (or must) bring the fd, without it */

	if (fd >= 0) {
		int seals = fcntl(fd, F_GET_SEALS);

		if (h.result || (h.op != UGPUD_BO_MAP && !create_fd) || seals < 0 ||
		    (seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) !=
			    (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL))
			__builtin_trap();
		close(fd);
	} else if (!h.result && h.op == UGPUD_BO_MAP && req_len >= sizeof(*req) &&
		   req->op == UGPUD_BO_MAP) {
		__builtin_trap(); /* a successful map without its fd */
	} else if (create_fd) {
		__builtin_trap(); /* a create that says it brings an fd, without it */
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ugpu_device_mem m = { .size = sizeof(m) };
	bool pm_touched = false;

	for (int i = 0; i < 2; i++)
		cl[i] = fz_client(i);
	while (size >= 3) {
		uint8_t ctl = data[0];
		size_t len = (size_t)data[1] | (size_t)data[2] << 8;
		int who = ctl & 1, nfds = (ctl >> 1) & 15, fd = -1;
		bool oversized = ctl & 0x20, step = ctl & 0x40;
		struct ugpud_hdr req = { 0 };
		size_t rl;

		data += 3;
		size -= 3;
		if (len > size)
			len = size; /* a record cut short: what the socket had */
		memcpy(msg, data, len);
		data += len;
		size -= len;
		if (!cl[who])
			cl[who] = fz_client(who); /* killed: a new connection */
		memcpy(&req, msg, len < sizeof(req) ? len : sizeof(req));
		/* The device's own power-off, power-on and removal are the
		 * suspend and removal tests' business (each takes milliseconds,
		 * and a removal ends the one device for every later input):
		 * here they only flip the daemon's gate, and the request goes on
		 * as an action refused (-EINVAL). Prepare and cancel run. */
		if (len >= sizeof(req) + sizeof(struct ugpud_device_pm_req) &&
		    req.op == UGPUD_DEVICE_PM && req.len == sizeof(struct ugpud_device_pm_req) &&
		    (msg[sizeof(req)] == UGPUD_PM_SUSPEND || msg[sizeof(req)] == UGPUD_PM_RESUME ||
		     msg[sizeof(req)] == UGPUD_PM_UNPLUG)) {
			d.devs[0].suspended = msg[sizeof(req)] == UGPUD_PM_SUSPEND;
			msg[sizeof(req)] = 0;
		}
		if (req.op == UGPUD_DEVICE_PM)
			pm_touched = true;
		/* a step on a worker: what must wait for it is kept (the loop
		 * arms no receive meanwhile) and served when it ended; the rest
		 * is answered now, through the step's gate */
		d.devs[0].pm_busy = step;
		if (step && serve_must_wait(&d, cl[who], msg, len))
			d.devs[0].pm_busy = false;
		rl = serve_request(&d, cl[who], msg, oversized ? len + UGPUD_MAX_MSG : len,
				   oversized, nfds, rep, &fd);
		d.devs[0].pm_busy = false;
		if (!rl && cl[who]->job_busy) {
			/* a worker's job; with bit 6 a power step of the
			 * device began while it ran (a BO job's answer goes
			 * through the step's gate) */
			job_run(&cl[who]->job);
			d.devs[0].pm_busy = step && cl[who]->job.op != UGPUD_DEVICE_PM;
			rl = serve_job_done(&d, cl[who], rep, &fd);
			d.devs[0].pm_busy = false;
		} else if (!rl) { /* a fence wait: the loop would watch the fd; answer now */
			if (cl[who]->wait_fd < 0)
				__builtin_trap(); /* no reply and nothing to wait for */
			rl = serve_wait_done(&d, cl[who], rep);
		}
		check_reply(&req, len, rl, fd);
		/* answered: no wait goes on, so no fd is kept for one (a
		 * number left there was closed twice) */
		if (cl[who]->wait_fd >= 0)
			__builtin_trap();
		for (int i = 0; i < 2; i++)
			if (killed[i])
				fz_drop(i);
	}
	for (int i = 0; i < 2; i++)
		if (cl[i])
			fz_drop(i);
	/* a suspend cycle the input left open ends with the session */
	d.devs[0].suspended = false;
	if (pm_touched)
		(void)ugpu_device_suspend_cancel(d.devs[0].dev); /* -EBUSY when not prepared */
	if (!list_empty(&d.clients) || d.nclients)
		__builtin_trap();
	if (ugpu_device_mem_stats(d.devs[0].dev, &m) || m.bos)
		__builtin_trap(); /* a BO outlived its clients */
	return 0;
}
