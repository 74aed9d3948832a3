/* SPDX-License-Identifier: MIT */
/*
 * ugpud's request handling (tools/ugpud/serve.c) in this process, with the
 * daemon's real state (the reference device embedded, opened through
 * libugpu as ugpud opens it; clients made as the loop makes them), for the
 * windows a test cannot reach through a socket: the test plays the loop and
 * the worker, so it decides what happens between a job's end and its
 * answer.
 *  - map_ends_during_power_step: a map of a BO in VRAM whose move (on the
 *    worker) ends while a power step of the device began, or while it is
 *    host-suspended, is answered -EAGAIN without an fd and without a hold;
 *    the BO stays in system memory and the next map is served at once.
 *  - fence_wait_answered_keeps_no_fd: a fence wait on a mirror VM's queue
 *    whose GPU faults wait is answered -EAGAIN at once and leaves the
 *    client no wait fd (one left there was closed twice: the second close
 *    hit another client's socket); the VM's fault eventfd
 *    (UGPUD_SVM_FAULT_FD) is readable while the fault waits, not after its
 *    fetch.
 *  - create_fd_and_pool: a create that asks for the memfd gets it when the
 *    BO is made in system memory (sealed, held: a migrate is -EBUSY until
 *    the unmap) and not when it is made in VRAM; a destroyed BO's memory
 *    goes to the same client's next create of its shape, zeroed, and never
 *    to another client's (checked by the memfd's inode).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <ugpu/bo.h>
#include <ugpu/device.h>
#include <ugpu/vm.h>

#include "base/clock.h"
#include "tools/ugpu-sim/sim.h"
#include "tools/ugpud/ugpud.h"

static struct ugpud d;
static struct sim *sim;
static _Alignas(8) unsigned char rep[UGPUD_MAX_MSG];
static uint32_t seq;

/* The worker's hand-off: the test runs each job itself (job_run()) and
 * answers it (serve_job_done()) when it chooses. */
static void offload(struct ugpud *dd, struct client *c)
{
	(void)dd;
	(void)c;
}

static int setup(void **state)
{
	struct sim_opts so;
	char uri[160];

	(void)state;
	sim_opts_init(&so);
	so.vram_size = 64ull << 20;
	if (sim_start(&so, &sim) || ugpu_context_create(NULL, &d.ctx))
		return -1;
	snprintf(uri, sizeof(uri), "vfio-user:%s", sim_socket_path(sim, 0));
	if (ugpu_device_open(d.ctx, uri, &d.devs[0].dev))
		return -1;
	d.ndevs = 1;
	list_init(&d.clients);
	list_init(&d.detached);
	d.max_clients = 8;
	d.max_bos = 256;
	d.offload = offload;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	ugpu_device_close(d.devs[0].dev);
	ugpu_context_destroy(d.ctx);
	sim_stop(sim);
	return 0;
}

static struct client *client_up(uid_t uid)
{
	struct ucred cred = { .pid = getpid(), .uid = uid, .gid = uid };
	struct client *c = client_new(&d, -1, &cred);

	assert_non_null(c);
	list_add_tail(&d.clients, &c->link);
	d.nclients++;
	return c;
}

static void client_down(struct client *c)
{
	client_release(&d, c);
	list_del(&c->link);
	d.nclients--;
	client_free(c);
}

/* One record of @c served as the loop serves it; a job is run as a
 * worker would and answered at once. The result; the reply's body in
 * @body (@n bytes at most), the fd it brought in *@fd (-1: none). */
static int call(struct client *c, uint16_t op, const void *req, size_t len, void *body, size_t n,
		int *fd)
{
	static _Alignas(8) unsigned char msg[UGPUD_MAX_MSG];
	struct ugpud_hdr h = { .magic = UGPUD_MAGIC, .op = op, .seq = ++seq, .len = (uint32_t)len };
	size_t rl;
	int f = -1;

	memcpy(msg, &h, sizeof(h));
	if (len)
		memcpy(msg + sizeof(h), req, len);
	rl = serve_request(&d, c, msg, sizeof(h) + len, false, 0, rep, &f);
	if (!rl && c->job_busy) {
		job_run(&c->job);
		rl = serve_job_done(&d, c, rep, &f);
	}
	assert_true(rl >= sizeof(h));
	memcpy(&h, rep, sizeof(h));
	assert_int_equal(h.seq, seq);
	if (body && !h.result)
		memcpy(body, rep + sizeof(h), h.len < n ? h.len : n);
	if (fd)
		*fd = f;
	else
		assert_int_equal(f, -1);
	return h.result;
}

static void hello(struct client *c)
{
	struct ugpud_hello_req r = { .version = UGPUD_PROTO_VERSION };

	assert_int_equal(call(c, UGPUD_HELLO, &r, sizeof(r), NULL, 0, NULL), 0);
}

static uint32_t create(struct client *c, uint64_t bytes, uint32_t p0, uint32_t p1, uint32_t want,
		       int *fd)
{
	struct ugpud_bo_create_req r = { .bytes = bytes, .placements = { p0, p1 }, .want = want };
	struct ugpud_bo_create_rep out = { 0 };

	assert_int_equal(call(c, UGPUD_BO_CREATE, &r, sizeof(r), &out, sizeof(out), fd), 0);
	assert_int_not_equal(out.handle, 0);
	if (fd)
		assert_int_equal(out.got == UGPUD_CREATE_FD, *fd >= 0);
	return out.handle;
}

static int bo_op(struct client *c, uint16_t op, uint32_t handle, uint32_t arg)
{
	struct ugpud_bo_req r = { .handle = handle, .arg = arg };

	return call(c, op, &r, sizeof(r), NULL, 0, NULL);
}

static uint32_t placement(struct client *c, uint32_t handle)
{
	struct ugpud_bo_req r = { .handle = handle };
	struct ugpud_bo_info i = { 0 };

	assert_int_equal(call(c, UGPUD_BO_QUERY, &r, sizeof(r), &i, sizeof(i), NULL), 0);
	return i.placement;
}

static void map_ends_during_power_step(void **state)
{
	const size_t n = 1 << 20;
	struct client *c = client_up(0);
	unsigned char *want = malloc(n), *p;
	static _Alignas(8) unsigned char msg[UGPUD_MAX_MSG];
	struct ugpud_bo_req mr = { 0 };
	struct ugpud_hdr h;
	uint32_t bo;
	size_t rl;
	int fd;

	(void)state;
	hello(c);
	bo = create(c, n, UGPU_PLACEMENT_VRAM, UGPU_PLACEMENT_SYSTEM, 0, NULL);
	for (size_t i = 0; i < n; i++)
		want[i] = (unsigned char)(i * 7 + 3);
	for (size_t off = 0; off < n; off += UGPUD_MAX_DATA) {
		struct {
			struct ugpud_bo_req r;
			unsigned char data[UGPUD_MAX_DATA];
		} w = { .r = { .handle = bo, .offset = off, .len = UGPUD_MAX_DATA } };

		memcpy(w.data, want + off, UGPUD_MAX_DATA);
		assert_int_equal(call(c, UGPUD_BO_WRITE, &w, sizeof(w), NULL, 0, NULL), 0);
	}
	assert_int_equal(placement(c, bo), UGPU_PLACEMENT_VRAM);

	/* the map's move runs on the worker; a power step begins (then a
	 * host suspend) before the loop answers it */
	for (int round = 0; round < 2; round++) {
		mr.handle = bo;
		h = (struct ugpud_hdr){ .magic = UGPUD_MAGIC, .op = UGPUD_BO_MAP, .seq = ++seq,
					.len = sizeof(mr) };
		memcpy(msg, &h, sizeof(h));
		memcpy(msg + sizeof(h), &mr, sizeof(mr));
		fd = -1;
		rl = serve_request(&d, c, msg, sizeof(h) + sizeof(mr), false, 0, rep, &fd);
		assert_int_equal(rl, 0);
		assert_true(c->job_busy);
		job_run(&c->job);
		if (round)
			d.devs[0].suspended = true;
		else
			d.devs[0].pm_busy = true;
		rl = serve_job_done(&d, c, rep, &fd);
		d.devs[0].pm_busy = false;
		d.devs[0].suspended = false;
		assert_true(rl >= sizeof(h));
		memcpy(&h, rep, sizeof(h));
		assert_int_equal(h.result, -EAGAIN);
		assert_non_null(strstr((char *)rep + sizeof(h),
				       round ? "host-suspended" : "changing its power state"));
		assert_int_equal(fd, -1); /* no memfd went out */
		/* no hold either: an unmap finds nothing to undo, and the BO,
		 * in system memory now, may move */
		assert_int_equal(placement(c, bo), UGPU_PLACEMENT_SYSTEM);
		assert_int_equal(bo_op(c, UGPUD_BO_UNMAP, bo, 0), -EINVAL);
		assert_int_equal(bo_op(c, UGPUD_BO_MIGRATE, bo, UGPU_PLACEMENT_VRAM), 0);
		assert_int_equal(placement(c, bo), UGPU_PLACEMENT_VRAM);
	}
	/* once the step is over the map goes through, byte-exact */
	assert_int_equal(call(c, UGPUD_BO_MAP, &mr, sizeof(mr), NULL, 0, &fd), 0);
	assert_true(fd >= 0);
	p = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0);
	assert_true(p != MAP_FAILED);
	assert_memory_equal(p, want, n);
	munmap(p, n);
	close(fd);
	assert_int_equal(bo_op(c, UGPUD_BO_MIGRATE, bo, UGPU_PLACEMENT_VRAM), -EBUSY); /* held */
	assert_int_equal(bo_op(c, UGPUD_BO_UNMAP, bo, 0), 0);
	assert_int_equal(bo_op(c, UGPUD_BO_MIGRATE, bo, UGPU_PLACEMENT_VRAM), 0);
	free(want);
	client_down(c);
}

static bool readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, ms) == 1;
}

static void fence_wait_answered_keeps_no_fd(void **state)
{
	struct client *c = client_up(0);
	struct ugpud_svm_vm_create_req vr = { .flags = UGPU_VM_MIRROR, .want = UGPUD_SVM_FAULT_FD,
					       .mirror_start = 1ull << 32, .mirror_size = 1ull << 32 };
	struct ugpud_handle_rep vm = { 0 }, q = { 0 };
	struct ugpud_queue_create_req qr = { 0 };
	struct ugpud_submit_req sr = { .op = UGPU_KERNEL_READ_SUM, .va = (1ull << 32) + 4096,
				       .bytes = 4096 };
	struct ugpud_fence_rep f = { 0 };
	struct ugpud_fence_req fr = { .timeout_ms = 1 };
	static _Alignas(8) unsigned char msg[UGPUD_MAX_MSG];
	struct ugpud_hdr h;
	uint64_t t0 = now_ms();
	bool at_once = false;

	int efd;

	(void)state;
	hello(c);
	assert_int_equal(call(c, UGPUD_SVM_VM_CREATE, &vr, sizeof(vr), &vm, sizeof(vm), &efd), 0);
	assert_int_equal(vm.got, UGPUD_SVM_FAULT_FD);
	assert_true(efd >= 0);
	assert_false(readable(efd, 0));
	qr.vm = vm.handle;
	assert_int_equal(call(c, UGPUD_QUEUE_CREATE, &qr, sizeof(qr), &q, sizeof(q), NULL), 0);
	/* a kernel on mirrored memory the GPU never saw: it faults, and the
	 * fault waits for this client (which never fetches it here) */
	sr.queue = q.handle;
	assert_int_equal(call(c, UGPUD_SUBMIT, &sr, sizeof(sr), &f, sizeof(f), NULL), 0);
	fr.queue = q.handle;
	fr.fence = f.fence;
	/* waits until the fault is there (each answered at its slice's end),
	 * then answered at once */
	while (!at_once && now_ms() - t0 < 5000) {
		size_t rl;
		int fd = -1;

		h = (struct ugpud_hdr){ .magic = UGPUD_MAGIC, .op = UGPUD_FENCE_WAIT, .seq = ++seq,
					.len = sizeof(fr) };
		memcpy(msg, &h, sizeof(h));
		memcpy(msg + sizeof(h), &fr, sizeof(fr));
		rl = serve_request(&d, c, msg, sizeof(h) + sizeof(fr), false, 0, rep, &fd);
		if (rl) {
			memcpy(&h, rep, sizeof(h));
			assert_int_equal(h.result, -EAGAIN);
			at_once = true;
		} else {
			assert_true(c->wait_fd >= 0);
			usleep(2000);
			rl = serve_wait_done(&d, c, rep);
			assert_true(rl >= sizeof(h));
		}
		assert_int_equal(fd, -1);
		/* answered: nothing is kept to wait on */
		assert_int_equal(c->wait_fd, -1);
	}
	assert_true(at_once);
	/* the VM's fault eventfd says so too, until the client fetches */
	assert_true(readable(efd, 0));
	{
		struct ugpud_obj_req fq = { .handle = vm.handle };
		struct ugpud_svm_fault got[4];

		assert_int_equal(call(c, UGPUD_SVM_FAULTS, &fq, sizeof(fq), got, sizeof(got), NULL),
				 0);
	}
	assert_false(readable(efd, 0));
	close(efd);
	client_down(c); /* aborts the kernel, ends the VM */
}

/* The inode of the memory behind @fd. */
static ino_t ino(int fd)
{
	struct stat st;

	assert_int_equal(fstat(fd, &st), 0);
	return st.st_ino;
}

static void create_fd_and_pool(void **state)
{
	const size_t n = 64 << 10;
	struct client *a = client_up(0), *b = client_up(4242);
	unsigned char *p, *zero = calloc(1, n);
	uint32_t ha, hb, hv;
	ino_t ia, ib;
	int fa, fb, fv, seals;

	(void)state;
	hello(a);
	hello(b);
	/* made in VRAM: no fd, whatever is asked */
	hv = create(a, n, UGPU_PLACEMENT_VRAM, UGPU_PLACEMENT_SYSTEM, UGPUD_CREATE_FD, &fv);
	assert_int_equal(fv, -1);
	assert_int_equal(placement(a, hv), UGPU_PLACEMENT_VRAM);
	/* unknown wants are refused */
	{
		struct ugpud_bo_create_req r = { .bytes = n, .want = 2 };

		assert_int_equal(call(a, UGPUD_BO_CREATE, &r, sizeof(r), NULL, 0, NULL), -EINVAL);
	}
	/* made in system memory: its memfd, sealed, held until the unmap */
	ha = create(a, n, UGPU_PLACEMENT_SYSTEM, UGPU_PLACEMENT_VRAM, UGPUD_CREATE_FD, &fa);
	assert_true(fa >= 0);
	seals = fcntl(fa, F_GET_SEALS);
	assert_int_equal(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL),
			 F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	assert_int_equal(bo_op(a, UGPUD_BO_MIGRATE, ha, UGPU_PLACEMENT_VRAM), -EBUSY);
	p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, fa, 0);
	assert_true(p != MAP_FAILED);
	memset(p, 0x5a, n);
	ia = ino(fa);
	/* not asked: none */
	hb = create(b, n, UGPU_PLACEMENT_SYSTEM, UGPU_PLACEMENT_VRAM, 0, &fb);
	assert_int_equal(fb, -1);
	assert_int_equal(bo_op(b, UGPUD_BO_DESTROY, hb, 0), 0);

	/* A destroys its BO (keeping its mapping, as a hostile client may) */
	assert_int_equal(bo_op(a, UGPUD_BO_DESTROY, ha, 0), 0);
	/* B's next BO of that shape is other memory */
	hb = create(b, n, UGPU_PLACEMENT_SYSTEM, UGPU_PLACEMENT_VRAM, UGPUD_CREATE_FD, &fb);
	assert_true(fb >= 0);
	ib = ino(fb);
	assert_true(ib != ia);
	assert_int_equal(p[0], 0x5a);
	/* A's is the same memory, zeroed before A has it */
	ha = create(a, n, UGPU_PLACEMENT_SYSTEM, UGPU_PLACEMENT_VRAM, UGPUD_CREATE_FD, &fa);
	assert_true(fa >= 0);
	assert_true(ino(fa) == ia);
	assert_memory_equal(p, zero, n);
	/* another shape does not take it */
	assert_int_equal(bo_op(a, UGPUD_BO_UNMAP, ha, 0), 0);
	assert_int_equal(bo_op(a, UGPUD_BO_DESTROY, ha, 0), 0);
	{
		uint32_t h2 = create(a, 2 * n, UGPU_PLACEMENT_SYSTEM, UGPU_PLACEMENT_VRAM,
				     UGPUD_CREATE_FD, &fv);

		assert_true(fv >= 0);
		assert_true(ino(fv) != ia);
		close(fv);
		assert_int_equal(bo_op(a, UGPUD_BO_DESTROY, h2, 0), 0);
	}
	munmap(p, n);
	close(fa);
	close(fb);
	client_down(b);
	client_down(a);
	/* the pools went with their clients */
	{
		struct ugpu_device_mem m = { .size = sizeof(m) };

		assert_int_equal(ugpu_device_mem_stats(d.devs[0].dev, &m), 0);
		assert_int_equal(m.bos, 0);
	}
	free(zero);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(map_ends_during_power_step),
		cmocka_unit_test(fence_wait_answered_keeps_no_fd),
		cmocka_unit_test(create_fd_and_pool),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
