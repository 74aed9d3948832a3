/* SPDX-License-Identifier: MIT */
/*
 * Device bring-up and teardown against the reference device: identity,
 * power states (D3hot keeps VRAM, D3cold loses it), engines usable after
 * open, nothing left on the device after close, bad URIs refused.
 */
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "test_bo_common.h"
#include "mm/vram.h"

static int setup(void **state)
{
	return fx_setup_vram(state, 16u << 20);
}

static void test_identity(void **state)
{
	struct fx *f = *state;
	struct ugpu_device_info info = { .size = sizeof(info) };

	assert_int_equal(ugpu_device_query(f->dev, &info), 0);
	assert_string_equal(info.transport, "vfio-user");
	assert_string_equal(info.profile, "ugpu-sim");
	assert_int_equal(info.vendor_id, 0x5547);
	assert_int_equal(info.device_id, 0x0001);
	assert_int_equal(info.class_code, 0x030200);
	assert_int_equal(info.vram_size, 16u << 20);
	assert_int_equal(info.num_copy_engines, 2);
	assert_true(info.caps & UGPU_DEVICE_CAP_COPY_ENGINE);
	assert_true(info.caps & UGPU_DEVICE_CAP_GPUVM);
	assert_true(info.caps & UGPU_DEVICE_CAP_D3COLD);
	assert_int_equal(info.power_state, UGPU_POWER_D0);
	assert_non_null(strstr(info.name, sim_socket_path(f->sim, 0)));

	/* A caller that knows only the size field gets nothing else written. */
	struct ugpu_device_info small = { .size = sizeof(size_t) };
	memset((char *)&small + sizeof(size_t), 0x5a, sizeof(small) - sizeof(size_t));
	assert_int_equal(ugpu_device_query(f->dev, &small), 0);
	assert_int_equal((unsigned char)small.name[0], 0x5a);
	assert_int_equal(ugpu_device_query(f->dev, NULL), -EINVAL);
}

/* The rings live in VRAM reserved top-down; the engine copies byte-exact. */
static void test_engines_up(void **state)
{
	struct fx *f = *state;
	struct ugpu_device *d = f->dev;
	unsigned char *v = d->vram;
	struct engine *e = device_copy_engine(d);
	struct buddy_list l;
	uint64_t fence, a, b;
	size_t i;

	assert_ptr_equal(e, d->copy[0]);
	assert_non_null(d->copy[1]);
	assert_non_null(d->cpu);
	assert_true(d->ring_offset[0] >= d->vram_size / 2);

	buddy_list_init(&l);
	assert_int_equal(vram_alloc(d, 2 << 20, 4096, BUDDY_CONTIGUOUS_ALLOCATION, &l), 0);
	a = buddy_block_offset(buddy_list_first(&l));
	b = a + (1 << 20);
	for (i = 0; i < (1 << 20); i++)
		v[a + i] = (unsigned char)(i * 7 + 3);
	assert_int_equal(engine_copy(e, engine_vram(b), engine_vram(a), 1 << 20, &fence), 0);
	assert_int_equal(engine_wait(e, fence, 5000), 0);
	assert_memory_equal(v + a, v + b, 1 << 20);
	vram_free(d, &l, 0);
}

static void fill_vram(struct ugpu_device *d, uint64_t off, size_t len, unsigned char seed)
{
	unsigned char *v = d->vram;
	size_t i;

	for (i = 0; i < len; i++)
		v[off + i] = (unsigned char)(seed + i);
}

static int check_vram(struct ugpu_device *d, uint64_t off, size_t len, unsigned char seed)
{
	unsigned char *v = d->vram;
	size_t i;

	for (i = 0; i < len; i++)
		if (v[off + i] != (unsigned char)(seed + i))
			return 0;
	return 1;
}

static void test_power_states(void **state)
{
	struct fx *f = *state;
	struct ugpu_device *d = f->dev;
	struct ugpu_device_info info = { .size = sizeof(info) };
	struct sim_state st;
	uint64_t poison;

	fill_vram(d, 4096, 8192, 11);
	assert_int_equal(device_set_power(d, UGPU_POWER_D3HOT), 0);
	assert_int_equal(sim_state(f->sim, 0, &st), 0);
	assert_int_equal(st.power, SIM_POWER_D3HOT);
	assert_int_equal(ugpu_device_query(d, &info), 0);
	assert_int_equal(info.power_state, UGPU_POWER_D3HOT);
	assert_int_equal(device_set_power(d, UGPU_POWER_D0), 0);
	assert_true(check_vram(d, 4096, 8192, 11)); /* D3hot keeps VRAM */

	assert_int_equal(device_set_power(d, UGPU_POWER_D3COLD), 0);
	assert_int_equal(sim_state(f->sim, 0, &st), 0);
	assert_int_equal(st.power, SIM_POWER_D3COLD);
	assert_int_equal(device_set_power(d, UGPU_POWER_D0), 0);
	assert_false(check_vram(d, 4096, 8192, 11)); /* D3cold loses it */
	memcpy(&poison, (char *)d->vram + 4096, 8);
	assert_true(poison == 0xDEADBEEFDEADBEEFull);

	/* A wake that the device refuses is an error, not a silent success. */
	assert_int_equal(device_set_power(d, UGPU_POWER_D3HOT), 0);
	assert_int_equal(sim_inject(f->sim, 0, SIM_INJECT_WAKE, 1, false), 0);
	assert_int_equal(device_set_power(d, UGPU_POWER_D0), -EIO);
	assert_int_equal(device_set_power(d, UGPU_POWER_D0), 0);
	assert_int_equal(device_set_power(d, (enum ugpu_power_state)7), -EINVAL);
}

static void test_bad_uris(void **state)
{
	struct fx *f = *state;
	struct ugpu_device *dev = (void *)0x1;

	assert_int_equal(ugpu_device_open(f->ctx, "bogus", &dev), -EINVAL);
	assert_int_equal(ugpu_device_open(f->ctx, "vfio-user:", &dev), -EINVAL);
	assert_int_equal(ugpu_device_open(f->ctx, "pci:00:03.0", &dev), -EINVAL);
	assert_int_equal(ugpu_device_open(f->ctx, "vfio-user:/nonexistent/sock", &dev), -ENOENT);
	assert_int_equal(ugpu_device_open(NULL, f->uri, &dev), -EINVAL);
	{
		/* A plain file is not a socket; a socket nobody listens on
		 * refuses; each says so (header: ugpu_device_open). */
		char path[64], uri[80];
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int fd;

		snprintf(path, sizeof(path), "/tmp/ugpu-test-notsock-%d", (int)getpid());
		fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
		assert_true(fd >= 0);
		close(fd);
		snprintf(uri, sizeof(uri), "vfio-user:%s", path);
		assert_int_equal(ugpu_device_open(f->ctx, uri, &dev), -ENOTSOCK);
		unlink(path);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		assert_true(fd >= 0);
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
		assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		close(fd); /* bound, never listening */
		assert_int_equal(ugpu_device_open(f->ctx, uri, &dev), -ECONNREFUSED);
		unlink(path);
	}
	assert_ptr_equal(dev, (void *)0x1);
}

/* Close releases every device resource: no DMA mapping and no client are
 * left on the device, and it can be opened again. */
static void test_close_reopen(void **state)
{
	struct fx *f = *state;
	struct sim_state st;

	ugpu_device_close(f->dev);
	f->dev = NULL;
	assert_int_equal(sim_state(f->sim, 0, &st), 0);
	assert_int_equal(st.dma_maps, 0);
	assert_int_equal(ugpu_device_open(f->ctx, f->uri, &f->dev), 0);
}

/* A device that vanished still closes, without hanging. */
static void test_close_after_surprise_removal(void **state)
{
	struct fx *f = *state;

	assert_int_equal(sim_unplug_surprise(f->sim, 0), 0);
	ugpu_device_close(f->dev);
	f->dev = NULL;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_identity, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_engines_up, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_power_states, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_bad_uris, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_close_reopen, setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_close_after_surprise_removal, setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
