/* SPDX-License-Identifier: MIT */
/*
 * The driver's ugpu_device_open() against vfio-user servers it does not
 * control: one that serves another client, one that is not a device ugpu has
 * a profile for, one whose VRAM fd does not cover VRAM, and a black-box
 * server that mutates a live session's replies (seeded). The reference device
 * sits behind a man in the middle (vu_proxy.h) that makes it foreign or
 * hostile. The driver must return an error that says what was wrong and never
 * crash or hang.
 *
 * UGPU_BLACKBOX_SEED=N replays a black-box run (it prints its seed);
 * UGPU_BLACKBOX_ITERS=N sets its length (default 40 opens).
 */
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

#include <cmocka.h>

#include <ugpu/device.h>
#include <ugpu/ugpu.h>

#include "test_log.h"
#include "tools/ugpu-sim/sim.h"
#include "vu_proxy.h"

#define VRAM (16u << 20)

/* ---- fixture: ugpu-sim, a proxy in front of it, a context ----------------- */

struct fx {
	struct sim *sim;
	struct vp proxy;
	bool proxy_on;
	char proxy_path[108];
	char uri[128];
	struct ugpu_context *ctx;
};

static int setup(void **state)
{
	struct ugpu_context_opts co = { .size = sizeof(co), .log_fn = log_hook,
					.log_level = UGPU_LOG_WARN };
	struct fx *f = calloc(1, sizeof(*f));
	struct sim_opts o;

	sim_opts_init(&o);
	o.vram_size = VRAM;
	assert_int_equal(sim_start(&o, &f->sim), 0);
	snprintf(f->proxy_path, sizeof(f->proxy_path), "/tmp/ugpu-test-proxy-%d.sock", (int)getpid());
	assert_int_equal(ugpu_context_create(&co, &f->ctx), 0);
	log_clear();
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	if (f->proxy_on)
		vp_stop(&f->proxy);
	ugpu_context_destroy(f->ctx);
	sim_stop(f->sim);
	free(f);
	return 0;
}

static void proxy_on(struct fx *f, vp_mutate_fn fn, void *arg)
{
	assert_int_equal(vp_start(&f->proxy, f->proxy_path, sim_socket_path(f->sim, 0), fn, arg), 0);
	f->proxy_on = true;
	snprintf(f->uri, sizeof(f->uri), "vfio-user:%s", f->proxy_path);
}

/* Wait until the device has no client (the last session's end reached it). */
static void wait_no_client(struct fx *f)
{
	struct sim_state st = { 0 };

	for (int i = 0; i < 400; i++) {
		assert_int_equal(sim_state(f->sim, 0, &st), 0);
		if (!st.client)
			return;
		usleep(5000);
	}
	fail_msg("the device kept its client for 2 s after the session ended");
}

/* ---- a device held by another client ------------------------------------- */

static void test_held_by_another_client(void **state)
{
	struct fx *f = *state;
	struct ugpu_device *a = NULL, *b = NULL;
	char uri[128];

	snprintf(uri, sizeof(uri), "vfio-user:%s", sim_socket_path(f->sim, 0));
	assert_int_equal(ugpu_device_open(f->ctx, uri, &a), 0);
	log_clear();
	assert_int_equal(ugpu_device_open(f->ctx, uri, &b), -EBUSY);
	assert_null(b);
	assert_true(log_has("held by another client"));
	ugpu_device_close(a);
	wait_no_client(f);
	assert_int_equal(ugpu_device_open(f->ctx, uri, &b), 0);
	ugpu_device_close(b);
}

/* ---- a device without a ugpu profile -------------------------------------- */

/* Config-space reads of the vendor/device ids answer 1234:5678. */
static void foreign_ids(void *arg, bool to_client, struct vp_msg *m)
{
	static const uint8_t ids[4] = { 0x34, 0x12, 0x78, 0x56 };
	struct vfu_region_access a;

	(void)arg;
	if (!to_client || m->hdr.cmd != VFU_CMD_REGION_READ || (m->hdr.flags & VFU_F_ERROR) ||
	    m->len < sizeof(a))
		return;
	memcpy(&a, m->body, sizeof(a));
	if (a.region != 7 || m->len != sizeof(a) + a.count)
		return;
	for (uint32_t i = 0; i < a.count; i++)
		if (a.offset + i < 4)
			m->body[sizeof(a) + i] = ids[a.offset + i];
}

static void test_no_profile(void **state)
{
	struct fx *f = *state;
	struct ugpu_device *d = NULL;

	proxy_on(f, foreign_ids, NULL);
	assert_int_equal(ugpu_device_open(f->ctx, f->uri, &d), -ENODEV);
	assert_null(d);
	assert_true(log_has("PCI device 1234:5678 (class 030200) has no ugpu profile"));
	/* Its own message: not the one for a device that went away. */
	pthread_mutex_lock(&log_mu);
	assert_null(strstr(log_buf, "device is gone"));
	pthread_mutex_unlock(&log_mu);
}

/* ---- a VRAM fd that does not cover VRAM (issue 12, find 4) ---------------- */

/* GET_REGION_INFO(2) passes an empty memfd instead of VRAM. */
static void empty_vram_fd(void *arg, bool to_client, struct vp_msg *m)
{
	struct vfu_region_info ri;

	(void)arg;
	if (!to_client || m->hdr.cmd != VFU_CMD_DEVICE_GET_REGION_INFO || m->nfds != 1 ||
	    m->len < sizeof(ri))
		return;
	memcpy(&ri, m->body, sizeof(ri));
	if (ri.index != 2)
		return;
	close(m->fds[0]);
	m->fds[0] = memfd_create("hostile-vram", MFD_CLOEXEC);
}

static void test_vram_fd_short(void **state)
{
	struct fx *f = *state;
	struct ugpu_device *d = NULL;

	proxy_on(f, empty_vram_fd, NULL);
	/* Before the fix the ring set-up's memset died of SIGBUS here. */
	assert_int_equal(ugpu_device_open(f->ctx, f->uri, &d), -EPROTO);
	assert_null(d);
	assert_true(log_has("region 2: the server's fd holds 0 bytes"));
}

/* ---- black box: a server whose replies are mutated at random ------------- */

struct bb {
	uint64_t s; /* xorshift64* state */
	unsigned pct; /* how often a reply is mutated */
	unsigned mutated; /* how many were (under bb_mu: the proxy thread writes) */
};

static pthread_mutex_t bb_mu = PTHREAD_MUTEX_INITIALIZER;

static uint64_t bb_rnd(struct bb *b)
{
	b->s ^= b->s >> 12;
	b->s ^= b->s << 25;
	b->s ^= b->s >> 27;
	return b->s * 0x2545f4914f6cdd1dull;
}

/* An fd a hostile server might pass instead of the right one. */
static int bb_fd(struct bb *b)
{
	int p[2], fd;

	switch (bb_rnd(b) % 6) {
	case 0:
		return memfd_create("bb-empty", MFD_CLOEXEC);
	case 1:
		fd = memfd_create("bb-small", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (fd >= 0 && ftruncate(fd, (off_t)(bb_rnd(b) % (8u << 20))) < 0) {
			close(fd);
			fd = -1;
		}
		return fd;
	case 2:
		if (pipe2(p, O_CLOEXEC))
			return -1;
		close(p[1]);
		return p[0];
	case 3:
		return open("/dev/null", O_RDWR | O_CLOEXEC);
	case 4:
		return eventfd(0, EFD_CLOEXEC);
	default:
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p))
			return -1;
		close(p[1]);
		return p[0];
	}
}

static void bb_mutate(void *arg, bool to_client, struct vp_msg *m)
{
	struct bb *b = arg;
	size_t total = sizeof(m->hdr) + m->len;

	if (!to_client)
		return;
	pthread_mutex_lock(&bb_mu);
	if (bb_rnd(b) % 100 >= b->pct) {
		pthread_mutex_unlock(&bb_mu);
		return;
	}
	b->mutated++;
	switch (bb_rnd(b) % 10) {
	case 0: /* bits in the header */
		((uint8_t *)&m->hdr)[bb_rnd(b) % sizeof(m->hdr)] ^= (uint8_t)(1u << (bb_rnd(b) % 8));
		break;
	case 1: /* bits in the payload */
		for (int i = 0, n = 1 + (int)(bb_rnd(b) % 8); m->len && i < n; i++)
			m->body[bb_rnd(b) % m->len] ^= (uint8_t)(1u << (bb_rnd(b) % 8));
		break;
	case 2: /* payload cut, size kept consistent */
		m->len = m->len ? bb_rnd(b) % m->len : 0;
		m->hdr.size = (uint32_t)(sizeof(m->hdr) + m->len);
		break;
	case 3: /* an error reply, with or without payload */
		m->hdr.flags |= VFU_F_ERROR;
		m->hdr.error = (uint32_t)(bb_rnd(b) % 5000);
		if (bb_rnd(b) % 2) {
			m->len = 0;
			m->hdr.size = sizeof(m->hdr);
		}
		break;
	case 4: /* dropped: the caller times out */
		m->drop = true;
		break;
	case 5: /* another msg_id or command */
		if (bb_rnd(b) % 2)
			m->hdr.msg_id = (uint16_t)bb_rnd(b);
		else
			m->hdr.cmd = (uint16_t)(bb_rnd(b) % 20);
		break;
	case 6: /* a size that lies: the stream breaks */
		m->raw = malloc(total);
		if (m->raw) {
			memcpy(m->raw, &m->hdr, sizeof(m->hdr));
			memcpy(m->raw + sizeof(m->hdr), m->body, m->len);
			m->raw_len = bb_rnd(b) % total;
			((struct vfu_hdr *)m->raw)->size = (uint32_t)(bb_rnd(b) % 2 ? bb_rnd(b) : total + 64);
			if (m->raw_len < sizeof(m->hdr))
				m->raw_len = sizeof(m->hdr);
		}
		break;
	default: { /* the fds: swapped, dropped or one too many */
		int fd = bb_fd(b);

		if (m->nfds && bb_rnd(b) % 3) {
			close(m->fds[0]);
			m->fds[0] = fd;
		} else if (m->nfds && bb_rnd(b) % 2) {
			close(m->fds[--m->nfds]);
			if (fd >= 0)
				close(fd);
		} else if (fd >= 0 && m->nfds < VP_MAX_FDS) {
			m->fds[m->nfds++] = fd;
		} else if (fd >= 0) {
			close(fd);
		}
		break;
	}
	}
	pthread_mutex_unlock(&bb_mu);
}

/*
 * The driver opens the reference device through a server whose replies are
 * mutated at random (seeded). Every open returns 0 or an -errno within its
 * bounds, never crashes; a device that opened anyway is usable and closes;
 * and the unmutated device opens fine afterwards.
 */
static void test_blackbox_server(void **state)
{
	const char *env_seed = getenv("UGPU_BLACKBOX_SEED");
	const char *env_iters = getenv("UGPU_BLACKBOX_ITERS");
	uint64_t seed = env_seed ? strtoull(env_seed, NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)getpid();
	unsigned iters = env_iters ? (unsigned)atoi(env_iters) : 40, opened = 0, failed = 0, mutated;
	unsigned by_errno[4096] = { 0 };
	struct fx *f = *state;
	struct bb b = { .s = seed ? seed : 1 };
	char direct[128];

	printf("# hostile server: seed %" PRIu64 " (UGPU_BLACKBOX_SEED=%" PRIu64 " replays), %u opens\n",
	       seed, seed, iters);
	fflush(stdout);
	/* Short bounds: a dropped reply costs one timeout, not five seconds. */
	setenv("UGPU_VFIO_USER_TIMEOUT_MS", "300", 1);
	proxy_on(f, bb_mutate, &b);
	for (unsigned i = 0; i < iters; i++) {
		struct ugpu_device *d = NULL;
		uint64_t t0 = tc_now_ms();
		int ret;

		pthread_mutex_lock(&bb_mu);
		b.pct = 1 + (unsigned)(bb_rnd(&b) % 12);
		pthread_mutex_unlock(&bb_mu);
		/* half the opens offer twin-socket mode, half do not */
		setenv("UGPU_VFIO_USER_TWIN_SOCKET", i % 2 ? "0" : "1", 1);
		ret = ugpu_device_open(f->ctx, f->uri, &d);
		if (ret == 0) {
			struct ugpu_device_info info = { .size = sizeof(info) };

			assert_int_equal(ugpu_device_query(d, &info), 0);
			ugpu_device_close(d);
			opened++;
		} else {
			assert_true(ret < 0 && ret > -4096);
			assert_null(d);
			by_errno[-ret]++;
			failed++;
		}
		/* Bounded: every wait of the open is (a few timeouts at most). */
		assert_true(tc_now_ms() - t0 < 30000);
		wait_no_client(f);
	}
	unsetenv("UGPU_VFIO_USER_TWIN_SOCKET");
	unsetenv("UGPU_VFIO_USER_TIMEOUT_MS");
	pthread_mutex_lock(&bb_mu); /* the proxy thread may still forward */
	mutated = b.mutated;
	pthread_mutex_unlock(&bb_mu);
	printf("# hostile server: %u opened anyway, %u refused with an error, %u replies mutated; errors:",
	       opened, failed, mutated);
	for (int e = 1; e < 4096; e++)
		if (by_errno[e])
			printf(" %s %u,", strerror(e), by_errno[e]);
	printf("\n");
	/* The device itself is fine: a direct open works. */
	snprintf(direct, sizeof(direct), "vfio-user:%s", sim_socket_path(f->sim, 0));
	{
		struct ugpu_device *d = NULL;

		assert_int_equal(ugpu_device_open(f->ctx, direct, &d), 0);
		ugpu_device_close(d);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_held_by_another_client, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_profile, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vram_fd_short, setup, teardown),
		cmocka_unit_test_setup_teardown(test_blackbox_server, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
