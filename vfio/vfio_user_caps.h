/* SPDX-License-Identifier: MIT */
/*
 * vfio-user VERSION capabilities: the JSON object both ends send after the
 * version numbers. One parser for both sides of this project (the client,
 * vfio/vfio_user.c, and the reference device, tools/ugpu-sim/), so what
 * one accepts the other accepts too, and both are fuzzed through it; one
 * writer, so both send what the other reads. json-c does the JSON.
 *
 * No logging and no global state: callers log with the reason returned.
 */
#ifndef UGPU_VFIO_USER_CAPS_H
#define UGPU_VFIO_USER_CAPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * struct vfu_caps - what a VERSION message's capabilities say. Members that
 * are absent keep the values vfu_caps_init() gave them (the specification's
 * defaults).
 * @twin_supported: "twin_socket": {"supported": true}
 * @twin_fd_index: "twin_socket": {"fd_index": N}, or -1 when absent (only a
 *                 server's reply carries it)
 */
struct vfu_caps {
	uint64_t max_msg_fds;
	uint64_t max_data_xfer_size;
	uint64_t max_dma_maps;
	uint64_t pgsizes;
	bool twin_supported;
	int64_t twin_fd_index;
};

/* The specification's defaults; twin mode off, no fd index. */
void vfu_caps_init(struct vfu_caps *caps);

/*
 * vfu_caps_parse() - parse the capabilities string in [@s, @s + @len): NUL
 * bytes at its end are allowed, none inside. Empty (or only white space)
 * means "no capabilities". Strict JSON (json-c's JSON_TOKENER_STRICT),
 * nested at most 17 deep, nothing but white space after the object.
 * Unknown members are skipped; a known one of the wrong type (a negative or
 * fractional number, "supported" not a boolean, "twin_socket" not an object)
 * is an error. A count past 2^64 - 1 reads as 2^64 - 1 (json-c saturates).
 * @why: if not NULL, gets a short static phrase naming what was wrong (the
 *       member's name when a count is not one) on -EPROTO.
 * Returns: 0, -EPROTO (@caps then partly filled), or -ENOMEM.
 */
int vfu_caps_parse(const char *s, size_t len, struct vfu_caps *caps, const char **why);

/*
 * vfu_caps_format() - write @caps as a VERSION capabilities string into
 * @buf (NUL-terminated): max_msg_fds and max_data_xfer_size always,
 * max_dma_maps and pgsizes when not 0 (a client leaves them 0: they are the
 * server's to say), "twin_socket" when @caps->twin_supported, with
 * "fd_index" when @caps->twin_fd_index >= 0 (a server's reply).
 * Returns: the string's length without the NUL, -ENOSPC if @cap is too
 * small, or -ENOMEM.
 */
int vfu_caps_format(const struct vfu_caps *caps, char *buf, size_t cap);

#endif
