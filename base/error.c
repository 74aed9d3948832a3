/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include <ugpu/ugpu.h>

/*
 * Codes ugpu gives a specific meaning; everything else falls back to the C
 * library's description (strerrordesc_np is thread-safe and static, unlike
 * strerror).
 */
static const struct {
	int err;
	const char *text;
} ugpu_errors[] = {
	{ ENODEV, "device is gone (removed or not answering)" },
	{ ENOSPC, "out of device memory (nothing left to evict)" },
	{ ETIMEDOUT, "the device did not answer in time" },
	{ EPROTO, "the device sent a malformed reply" },
	{ EIO, "device or engine error" },
	{ EBUSY, "object or device is busy (pinned, mapped or in use)" },
	{ ESHUTDOWN, "the device is suspended" },
	{ ENOLINK, "no fast fabric link between the devices" },
	{ EXDEV, "the objects belong to different contexts" },
	{ EREMOTE, "served by ugpud, which cannot reach this process's memory in place" },
};

UGPU_API const char *ugpu_strerror(int err)
{
	const char *s;
	size_t i;

	if (err == 0)
		return "success";
	if (err == INT_MIN)
		return "unknown error"; /* -INT_MIN does not exist */
	if (err < 0)
		err = -err;
	for (i = 0; i < sizeof(ugpu_errors) / sizeof(ugpu_errors[0]); i++)
		if (ugpu_errors[i].err == err)
			return ugpu_errors[i].text;
	s = strerrordesc_np(err);
	return s ? s : "unknown error";
}
