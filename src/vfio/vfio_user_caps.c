/* SPDX-License-Identifier: MIT */
/*
 * vfio-user VERSION capabilities: a small JSON reader for the one object the
 * protocol sends (see vfio_user_caps.h). It reads what JSON allows and skips
 * what it does not know; only the members below are interpreted.
 */
#include <errno.h>
#include <string.h>

#include "src/vfio/vfio_user_caps.h"
#include "src/vfio/vfio_user_proto.h"

#define JS_MAX_DEPTH 16

void vfu_caps_init(struct vfu_caps *caps)
{
	caps->max_msg_fds = VFU_DEFAULT_MAX_MSG_FDS;
	caps->max_data_xfer_size = VFU_DEFAULT_MAX_DATA_XFER;
	caps->max_dma_maps = VFU_DEFAULT_MAX_DMA_MAPS;
	caps->pgsizes = VFU_DEFAULT_PGSIZES;
	caps->twin_supported = false;
	caps->twin_fd_index = -1;
}

struct js {
	const char *p;
	const char *end;
};

static void js_ws(struct js *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

/* Parse a string; the first @cap-1 bytes land in @out (escapes kept raw:
 * we only compare plain keys). */
static int js_string(struct js *j, char *out, size_t cap)
{
	size_t n = 0;

	js_ws(j);
	if (j->p >= j->end || *j->p != '"')
		return -EPROTO;
	j->p++;
	while (j->p < j->end && *j->p != '"') {
		if (*j->p == '\\') {
			if (++j->p >= j->end)
				return -EPROTO;
		} else if ((unsigned char)*j->p < 0x20) {
			return -EPROTO;
		}
		if (out && n + 1 < cap)
			out[n++] = *j->p;
		j->p++;
	}
	if (j->p >= j->end)
		return -EPROTO;
	j->p++;
	if (out)
		out[n] = '\0';
	return 0;
}

/* A JSON number; *@v gets it if it is a non-negative integer that fits. */
static int js_number(struct js *j, uint64_t *v, bool *is_uint)
{
	uint64_t acc = 0;
	bool ok = true, digits = false;

	if (j->p < j->end && *j->p == '-') {
		ok = false;
		j->p++;
	}
	while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
		unsigned d = (unsigned)(*j->p - '0');

		digits = true;
		if (acc > (UINT64_MAX - d) / 10)
			ok = false;
		else
			acc = acc * 10 + d;
		j->p++;
	}
	if (!digits)
		return -EPROTO;
	while (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E' || *j->p == '+' ||
				 *j->p == '-' || (*j->p >= '0' && *j->p <= '9'))) {
		ok = false;
		j->p++;
	}
	*v = acc;
	*is_uint = ok;
	return 0;
}

static int js_skip(struct js *j, int depth);

static int js_object(struct js *j, int depth, int (*member)(struct js *, const char *, int, void *),
		     void *arg)
{
	char key[64];
	int ret;

	if (depth > JS_MAX_DEPTH)
		return -EPROTO;
	js_ws(j);
	if (j->p >= j->end || *j->p != '{')
		return -EPROTO;
	j->p++;
	js_ws(j);
	if (j->p < j->end && *j->p == '}') {
		j->p++;
		return 0;
	}
	for (;;) {
		ret = js_string(j, key, sizeof(key));
		if (ret)
			return ret;
		js_ws(j);
		if (j->p >= j->end || *j->p != ':')
			return -EPROTO;
		j->p++;
		ret = member ? member(j, key, depth + 1, arg) : js_skip(j, depth + 1);
		if (ret)
			return ret;
		js_ws(j);
		if (j->p < j->end && *j->p == ',') {
			j->p++;
			continue;
		}
		if (j->p < j->end && *j->p == '}') {
			j->p++;
			return 0;
		}
		return -EPROTO;
	}
}

static int js_skip(struct js *j, int depth)
{
	uint64_t v;
	bool u;

	if (depth > JS_MAX_DEPTH)
		return -EPROTO;
	js_ws(j);
	if (j->p >= j->end)
		return -EPROTO;
	switch (*j->p) {
	case '{':
		return js_object(j, depth, NULL, NULL);
	case '[':
		j->p++;
		js_ws(j);
		if (j->p < j->end && *j->p == ']') {
			j->p++;
			return 0;
		}
		for (;;) {
			int ret = js_skip(j, depth + 1);

			if (ret)
				return ret;
			js_ws(j);
			if (j->p < j->end && *j->p == ',') {
				j->p++;
				continue;
			}
			if (j->p < j->end && *j->p == ']') {
				j->p++;
				return 0;
			}
			return -EPROTO;
		}
	case '"':
		return js_string(j, NULL, 0);
	case 't':
		if (j->end - j->p >= 4 && !memcmp(j->p, "true", 4)) {
			j->p += 4;
			return 0;
		}
		return -EPROTO;
	case 'f':
		if (j->end - j->p >= 5 && !memcmp(j->p, "false", 5)) {
			j->p += 5;
			return 0;
		}
		return -EPROTO;
	case 'n':
		if (j->end - j->p >= 4 && !memcmp(j->p, "null", 4)) {
			j->p += 4;
			return 0;
		}
		return -EPROTO;
	default:
		return js_number(j, &v, &u);
	}
}

/* "true" or "false". */
static int js_bool(struct js *j, bool *v)
{
	js_ws(j);
	if (j->end - j->p >= 4 && !memcmp(j->p, "true", 4)) {
		j->p += 4;
		*v = true;
		return 0;
	}
	if (j->end - j->p >= 5 && !memcmp(j->p, "false", 5)) {
		j->p += 5;
		*v = false;
		return 0;
	}
	return -EPROTO;
}

/* A non-negative integer member. */
static int js_uint(struct js *j, uint64_t *v)
{
	bool is_uint;
	int ret;

	js_ws(j);
	ret = js_number(j, v, &is_uint);
	return ret ? ret : is_uint ? 0 : -EPROTO;
}

static int twin_member(struct js *j, const char *key, int depth, void *arg)
{
	struct vfu_caps *caps = arg;
	uint64_t v;
	int ret;

	if (!strcmp(key, "supported"))
		return js_bool(j, &caps->twin_supported);
	if (!strcmp(key, "fd_index")) {
		ret = js_uint(j, &v);
		if (ret || v > INT64_MAX)
			return -EPROTO;
		caps->twin_fd_index = (int64_t)v;
		return 0;
	}
	return js_skip(j, depth);
}

static int caps_member(struct js *j, const char *key, int depth, void *arg)
{
	struct vfu_caps *caps = arg;
	uint64_t *dst = NULL;

	if (!strcmp(key, "max_msg_fds"))
		dst = &caps->max_msg_fds;
	else if (!strcmp(key, "max_data_xfer_size"))
		dst = &caps->max_data_xfer_size;
	else if (!strcmp(key, "max_dma_maps"))
		dst = &caps->max_dma_maps;
	else if (!strcmp(key, "pgsizes"))
		dst = &caps->pgsizes;
	else if (!strcmp(key, "twin_socket"))
		return js_object(j, depth, twin_member, arg);
	if (!dst)
		return js_skip(j, depth);
	return js_uint(j, dst);
}

static int top_member(struct js *j, const char *key, int depth, void *arg)
{
	if (!strcmp(key, "capabilities"))
		return js_object(j, depth, caps_member, arg);
	return js_skip(j, depth);
}

int vfu_caps_parse(const char *s, size_t len, struct vfu_caps *caps)
{
	struct js j = { .p = s, .end = s + len };
	int ret;

	while (j.end > j.p && j.end[-1] == '\0')
		j.end--;
	if (memchr(s, '\0', (size_t)(j.end - j.p)))
		return -EPROTO;
	js_ws(&j);
	if (j.p == j.end)
		return 0;
	ret = js_object(&j, 0, top_member, caps);
	if (ret)
		return ret;
	js_ws(&j);
	return j.p == j.end ? 0 : -EPROTO;
}
