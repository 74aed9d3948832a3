/* SPDX-License-Identifier: MIT */
/*
 * vfio-user VERSION capabilities (see vfio_user_caps.h): json-c reads and
 * writes the JSON; this file says which members mean what.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include <json-c/json.h>

#include "vfio/vfio_user_caps.h"
#include "vfio/vfio_user_proto.h"

/* Nesting the tokenizer accepts (objects and arrays, the outer object is 1):
 * a bound on its recursion, far above the 2 levels the protocol uses. */
#define CAPS_MAX_DEPTH 17

void vfu_caps_init(struct vfu_caps *caps)
{
	caps->max_msg_fds = VFU_DEFAULT_MAX_MSG_FDS;
	caps->max_data_xfer_size = VFU_DEFAULT_MAX_DATA_XFER;
	caps->max_dma_maps = VFU_DEFAULT_MAX_DMA_MAPS;
	caps->pgsizes = VFU_DEFAULT_PGSIZES;
	caps->twin_supported = false;
	caps->twin_fd_index = -1;
}

static int caps_fail(const char **why, const char *what)
{
	if (why)
		*why = what;
	return -EPROTO;
}

/* A non-negative integer (json-c saturates a larger one at UINT64_MAX). */
static int caps_uint(struct json_object *v, uint64_t *out)
{
	if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
		return -EPROTO;
	*out = json_object_get_uint64(v);
	return 0;
}

static int caps_twin(struct json_object *twin, struct vfu_caps *caps, const char **why)
{
	struct json_object *v;
	uint64_t idx;

	if (!json_object_is_type(twin, json_type_object))
		return caps_fail(why, "\"twin_socket\" is not an object");
	if (json_object_object_get_ex(twin, "supported", &v)) {
		if (!json_object_is_type(v, json_type_boolean))
			return caps_fail(why, "\"twin_socket\".\"supported\" is not a boolean");
		caps->twin_supported = json_object_get_boolean(v);
	}
	if (json_object_object_get_ex(twin, "fd_index", &v)) {
		if (caps_uint(v, &idx) || idx > INT64_MAX)
			return caps_fail(why, "\"twin_socket\".\"fd_index\" is not a non-negative integer");
		caps->twin_fd_index = (int64_t)idx;
	}
	return 0;
}

static int caps_read(struct json_object *top, struct vfu_caps *caps, const char **why)
{
	static const struct {
		const char *key;
		size_t off;
	} nums[] = {
		{ "max_msg_fds", offsetof(struct vfu_caps, max_msg_fds) },
		{ "max_data_xfer_size", offsetof(struct vfu_caps, max_data_xfer_size) },
		{ "max_dma_maps", offsetof(struct vfu_caps, max_dma_maps) },
		{ "pgsizes", offsetof(struct vfu_caps, pgsizes) },
	};
	struct json_object *obj, *v;

	if (!json_object_is_type(top, json_type_object))
		return caps_fail(why, "the top level is not an object");
	if (!json_object_object_get_ex(top, "capabilities", &obj))
		return 0;
	if (!json_object_is_type(obj, json_type_object))
		return caps_fail(why, "\"capabilities\" is not an object");
	for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
		if (!json_object_object_get_ex(obj, nums[i].key, &v))
			continue;
		if (caps_uint(v, (uint64_t *)((char *)caps + nums[i].off))) {
			if (why)
				*why = nums[i].key; /* names the member that is not a count */
			return -EPROTO;
		}
	}
	if (json_object_object_get_ex(obj, "twin_socket", &v))
		return caps_twin(v, caps, why);
	return 0;
}

/* Only JSON white space in [@s, @s + @len) (which need not end in a NUL). */
static bool caps_is_blank(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!memchr(" \t\r\n", s[i], 4))
			return false;
	return true;
}

int vfu_caps_parse(const char *s, size_t len, struct vfu_caps *caps, const char **why)
{
	struct json_tokener *tok;
	struct json_object *top;
	size_t end;
	int ret;

	while (len && s[len - 1] == '\0')
		len--;
	if (memchr(s, '\0', len))
		return caps_fail(why, "a NUL byte inside the string");
	if (caps_is_blank(s, len))
		return 0; /* nothing (or only white space): no capabilities */
	if (len > INT32_MAX)
		return caps_fail(why, "too long");
	tok = json_tokener_new_ex(CAPS_MAX_DEPTH);
	if (!tok)
		return -ENOMEM;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	top = json_tokener_parse_ex(tok, s, (int)len);
	end = json_tokener_get_parse_end(tok);
	if (!top) {
		enum json_tokener_error e = json_tokener_get_error(tok);

		ret = caps_fail(why, e == json_tokener_continue ? "the JSON ends early" :
				     e == json_tokener_error_depth ? "nested too deeply" :
								     "not valid JSON");
	} else if (end != len) {
		/* strict mode already refuses all but white space after the
		 * object: a safety net should a tokenizer stop short */
		ret = caps_fail(why, "text after the JSON object");
	} else {
		ret = caps_read(top, caps, why);
	}
	json_object_put(top);
	json_tokener_free(tok);
	return ret;
}

/* Add @v (NULL: its allocation failed) as @obj's member @key; @v is @obj's
 * from then on, or freed. */
static int caps_add(struct json_object *obj, const char *key, struct json_object *v)
{
	if (!v || json_object_object_add(obj, key, v)) {
		json_object_put(v);
		return -ENOMEM;
	}
	return 0;
}

int vfu_caps_format(const struct vfu_caps *caps, char *buf, size_t cap)
{
	struct json_object *top = json_object_new_object();
	struct json_object *obj = json_object_new_object();
	struct json_object *twin;
	const char *s;
	size_t n;
	int ret = -ENOMEM;

	if (!top) {
		json_object_put(obj);
		return -ENOMEM;
	}
	if (caps_add(top, "capabilities", obj))
		goto out_put;
	if (caps_add(obj, "max_msg_fds", json_object_new_uint64(caps->max_msg_fds)) ||
	    caps_add(obj, "max_data_xfer_size", json_object_new_uint64(caps->max_data_xfer_size)) ||
	    (caps->max_dma_maps &&
	     caps_add(obj, "max_dma_maps", json_object_new_uint64(caps->max_dma_maps))) ||
	    (caps->pgsizes && caps_add(obj, "pgsizes", json_object_new_uint64(caps->pgsizes))))
		goto out_put;
	if (caps->twin_supported) {
		twin = json_object_new_object();
		if (caps_add(obj, "twin_socket", twin) ||
		    caps_add(twin, "supported", json_object_new_boolean(1)) ||
		    (caps->twin_fd_index >= 0 &&
		     caps_add(twin, "fd_index", json_object_new_uint64((uint64_t)caps->twin_fd_index))))
			goto out_put;
	}
	s = json_object_to_json_string_length(top, JSON_C_TO_STRING_PLAIN, &n);
	if (!s)
		goto out_put;
	if (n + 1 > cap || n > INT32_MAX) {
		ret = -ENOSPC;
		goto out_put;
	}
	memcpy(buf, s, n + 1);
	ret = (int)n;
out_put:
	json_object_put(top);
	return ret;
}
