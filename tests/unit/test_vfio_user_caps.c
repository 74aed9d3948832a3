/* SPDX-License-Identifier: MIT */
/*
 * The vfio-user VERSION capabilities (vfio/vfio_user_caps.c): what both
 * ends accept, what they refuse and why, and that what one end writes the
 * other reads back.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "vfio/vfio_user_caps.h"
#include "vfio/vfio_user_proto.h"

static int parse(const char *s, struct vfu_caps *caps, const char **why)
{
	vfu_caps_init(caps);
	*why = NULL;
	return vfu_caps_parse(s, strlen(s) + 1, caps, why);
}

/* Nothing, or only white space: the specification's defaults. */
static void test_defaults(void **state)
{
	static const char *const empty[] = { "", " \t\r\n", "{}", "{\"other\":[1,{\"a\":null}]}" };
	struct vfu_caps c;
	const char *why;

	(void)state;
	for (size_t i = 0; i < sizeof(empty) / sizeof(empty[0]); i++) {
		assert_int_equal(parse(empty[i], &c, &why), 0);
		assert_int_equal(c.max_msg_fds, VFU_DEFAULT_MAX_MSG_FDS);
		assert_int_equal(c.max_data_xfer_size, VFU_DEFAULT_MAX_DATA_XFER);
		assert_int_equal(c.max_dma_maps, VFU_DEFAULT_MAX_DMA_MAPS);
		assert_int_equal(c.pgsizes, VFU_DEFAULT_PGSIZES);
		assert_false(c.twin_supported);
		assert_int_equal(c.twin_fd_index, -1);
	}
}

static void test_members(void **state)
{
	static const char s[] = " {\"capabilities\" : {\"max_msg_fds\":8,\"max_data_xfer_size\":4096,"
				"\"max_dma_maps\":7,\"pgsizes\":18446744073709551615,\"x\":{\"y\":[]},"
				"\"twin_socket\":{\"supported\":true,\"fd_index\":0,\"z\":1}},\"q\":\"}\"} ";
	struct vfu_caps c;
	const char *why;

	(void)state;
	assert_int_equal(parse(s, &c, &why), 0);
	assert_int_equal(c.max_msg_fds, 8);
	assert_int_equal(c.max_data_xfer_size, 4096);
	assert_int_equal(c.max_dma_maps, 7);
	assert_true(c.pgsizes == UINT64_MAX);
	assert_true(c.twin_supported);
	assert_int_equal(c.twin_fd_index, 0);
	/* Several NULs at the end are allowed. */
	vfu_caps_init(&c);
	{
		static const char nuls[] = "{\"capabilities\":{\"max_msg_fds\":3}}\0\0";

		assert_int_equal(vfu_caps_parse(nuls, sizeof(nuls), &c, NULL), 0);
	}
	/* ... and none at all (the string's bytes end where the JSON does) */
	{
		static const char tight[3] = { ' ', '{', '}' };

		assert_int_equal(vfu_caps_parse(tight, sizeof(tight), &c, NULL), 0);
		assert_int_equal(vfu_caps_parse(tight, 1, &c, NULL), 0);
	}
	assert_int_equal(c.max_msg_fds, 3);
}

/* A key inside a string is text. */
static void test_key_in_string(void **state)
{
	struct vfu_caps c;
	const char *why;

	(void)state;
	assert_int_equal(parse("{\"capabilities\":{\"note\":\"\\\"max_data_xfer_size\\\":4\"}}", &c, &why), 0);
	assert_int_equal(c.max_data_xfer_size, VFU_DEFAULT_MAX_DATA_XFER);
}

/* Each refusal names what was wrong. */
static void test_refused(void **state)
{
	static const struct {
		const char *s;
		const char *why;
	} bad[] = {
		{ "{\"capabilities\":{\"max_msg_fds\":\"eight\"}}", "max_msg_fds" },
		{ "{\"capabilities\":{\"max_data_xfer_size\":-1}}", "max_data_xfer_size" },
		{ "{\"capabilities\":{\"max_dma_maps\":1.5}}", "max_dma_maps" },
		{ "{\"capabilities\":{\"pgsizes\":1e3}}", "pgsizes" },
		{ "{\"capabilities\":{\"max_msg_fds\":true}}", "max_msg_fds" },
		{ "{\"capabilities\":{\"twin_socket\":true}}", "\"twin_socket\" is not an object" },
		{ "{\"capabilities\":{\"twin_socket\":{\"supported\":1}}}",
		  "\"twin_socket\".\"supported\" is not a boolean" },
		{ "{\"capabilities\":{\"twin_socket\":{\"fd_index\":-2}}}",
		  "\"twin_socket\".\"fd_index\" is not a non-negative integer" },
		{ "{\"capabilities\":[]}", "\"capabilities\" is not an object" },
		{ "[1]", "the top level is not an object" },
		{ "{\"capabilities\":{\"max_msg_fds\":8", "the JSON ends early" },
		{ "{\"capabilities\":{\"max_data_xfer_size\":", "the JSON ends early" },
		{ "{\"a\":1} x", "not valid JSON" },
		{ "{} {}", "not valid JSON" },
		{ "{\"a\":1,}", "not valid JSON" },
		{ "{\"a\":01}", "not valid JSON" },
		{ "{\"a\":[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}", "nested too deeply" },
	};
	struct vfu_caps c;
	const char *why;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(parse(bad[i].s, &c, &why), -EPROTO);
		assert_non_null(why);
		assert_string_equal(why, bad[i].why);
	}
	/* A NUL inside the string, not at its end. */
	assert_int_equal(vfu_caps_parse("{}\0{}", 6, &c, &why), -EPROTO);
	assert_string_equal(why, "a NUL byte inside the string");
}

/* What one end writes, the other reads back; a client leaves the DMA limits
 * out, a server's twin_socket carries the fd index. */
static void test_format_round_trip(void **state)
{
	struct vfu_caps out = { .max_msg_fds = 16, .max_data_xfer_size = 1 << 20, .twin_supported = true,
				.twin_fd_index = -1 };
	struct vfu_caps in;
	char buf[256];
	const char *why;
	int n;

	(void)state;
	n = vfu_caps_format(&out, buf, sizeof(buf));
	assert_string_equal(buf, "{\"capabilities\":{\"max_msg_fds\":16,\"max_data_xfer_size\":1048576,"
				 "\"twin_socket\":{\"supported\":true}}}");
	assert_int_equal(n, (int)strlen(buf));
	assert_int_equal(parse(buf, &in, &why), 0);
	assert_int_equal(in.max_msg_fds, 16);
	assert_int_equal(in.max_dma_maps, VFU_DEFAULT_MAX_DMA_MAPS);
	assert_true(in.twin_supported);
	assert_int_equal(in.twin_fd_index, -1);

	out = (struct vfu_caps){ .max_msg_fds = 8, .max_data_xfer_size = 4096, .max_dma_maps = 65535,
				 .pgsizes = 4096, .twin_supported = true, .twin_fd_index = 0 };
	n = vfu_caps_format(&out, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(parse(buf, &in, &why), 0);
	assert_int_equal(in.max_msg_fds, out.max_msg_fds);
	assert_int_equal(in.max_data_xfer_size, out.max_data_xfer_size);
	assert_int_equal(in.max_dma_maps, out.max_dma_maps);
	assert_int_equal(in.pgsizes, out.pgsizes);
	assert_true(in.twin_supported);
	assert_int_equal(in.twin_fd_index, 0);

	out.twin_supported = false;
	out.twin_fd_index = -1;
	n = vfu_caps_format(&out, buf, sizeof(buf));
	assert_null(strstr(buf, "twin_socket"));
	assert_int_equal(vfu_caps_format(&out, buf, (size_t)n), -ENOSPC);
	assert_int_equal(vfu_caps_format(&out, buf, (size_t)n + 1), n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_members),
		cmocka_unit_test(test_key_in_string),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_format_round_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
