/* SPDX-License-Identifier: MIT */
/*
 * vfio-user wire format (qemu docs/interop/vfio-user.rst, version 0.1), as
 * both sides of this project use it: the client transport
 * (vfio/vfio_user.c) and the reference device (tools/ugpu-sim/).
 * Written from the specification; only what the project uses. Checked field
 * by field against the specification text (sizes are asserted at the end).
 *
 * Every message is a 16-byte header followed by a command-specific payload,
 * host-endian. A reply repeats the command's msg_id and cmd with type REPLY;
 * an error reply (VFU_F_ERROR) carries the header only. Requests that have an
 * "argsz" field set it to the largest reply payload they accept; the reply's
 * argsz is the size the full reply needs (it may be larger: then the payload
 * is cut and the caller asks again with a bigger buffer).
 */
#ifndef UGPU_VFIO_USER_PROTO_H
#define UGPU_VFIO_USER_PROTO_H

#include <stdint.h>

#define VFU_VERSION_MAJOR 0
#define VFU_VERSION_MINOR 1

enum vfu_cmd {
	VFU_CMD_VERSION = 1,
	VFU_CMD_DMA_MAP = 2,
	VFU_CMD_DMA_UNMAP = 3,
	VFU_CMD_DEVICE_GET_INFO = 4,
	VFU_CMD_DEVICE_GET_REGION_INFO = 5,
	VFU_CMD_DEVICE_GET_REGION_IO_FDS = 6,
	VFU_CMD_DEVICE_GET_IRQ_INFO = 7,
	VFU_CMD_DEVICE_SET_IRQS = 8,
	VFU_CMD_REGION_READ = 9,
	VFU_CMD_REGION_WRITE = 10,
	VFU_CMD_DMA_READ = 11,
	VFU_CMD_DMA_WRITE = 12,
	VFU_CMD_DEVICE_RESET = 13,
	/* 14 is unassigned in the specification. Neither side of this project
	 * implements the two below; a server answers them with an error. */
	VFU_CMD_REGION_WRITE_MULTI = 15,
	VFU_CMD_DEVICE_FEATURE = 16,
	VFU_CMD_MAX,
};

/*
 * VERSION capabilities: the JSON string is an object with one member,
 * "capabilities", itself an object with these optional numbers. Absent
 * members take the defaults below (specification values).
 *   {"capabilities":{"max_msg_fds":8,"max_data_xfer_size":1048576,
 *                    "max_dma_maps":65535,"pgsizes":4096}}
 * max_msg_fds: fds the sender can receive in one message.
 * max_data_xfer_size: largest "count" the sender accepts in REGION_READ/WRITE
 *   and DMA_READ/WRITE (each side limits what its peer sends it).
 * max_dma_maps: DMA windows the server keeps at once.
 * pgsizes: page sizes or'ed together; the smallest is the DMA alignment.
 */
#define VFU_DEFAULT_MAX_MSG_FDS 1u
#define VFU_DEFAULT_MAX_DATA_XFER (1u << 20)
#define VFU_DEFAULT_MAX_DMA_MAPS 65535u
#define VFU_DEFAULT_PGSIZES 4096ull

/* Header flags. */
#define VFU_F_TYPE_MASK 0xfu
#define VFU_F_TYPE_COMMAND 0x0u
#define VFU_F_TYPE_REPLY 0x1u
#define VFU_F_NO_REPLY (1u << 4)
#define VFU_F_ERROR (1u << 5)

struct vfu_hdr {
	uint16_t msg_id;
	uint16_t cmd;
	uint32_t size; /* whole message, header included */
	uint32_t flags;
	uint32_t error; /* errno, valid with VFU_F_ERROR */
} __attribute__((packed));

struct vfu_version {
	uint16_t major;
	uint16_t minor;
	/* followed by a NUL-terminated JSON capabilities string */
} __attribute__((packed));

#define VFU_DMA_F_READ (1u << 0)
#define VFU_DMA_F_WRITE (1u << 1)

struct vfu_dma_map {
	uint32_t argsz;
	uint32_t flags;
	uint64_t offset; /* into the fd passed with the message */
	uint64_t addr; /* IOVA */
	uint64_t size;
} __attribute__((packed));

/* The specification (0.1) says DMA_UNMAP flags are unused and must be 0;
 * this bit is libvfio-user's "unmap all" extension. This project never sends
 * it and ugpu-sim may refuse it. */
#define VFU_DMA_UNMAP_F_ALL (1u << 1)

/* DMA_MAP: one fd in the ancillary data (offset is into it), or none: the
 * server then reaches the memory with DMA_READ/DMA_WRITE. No reply payload.
 * Mapping over an existing window fails with EEXIST. */

/* DMA_UNMAP: addr/size must match one earlier DMA_MAP exactly. The server
 * drops all references (including in-flight DMA) before replying, and the
 * reply payload echoes this struct, so the client learns how much was
 * unmapped from the reply's size. */
struct vfu_dma_unmap {
	uint32_t argsz;
	uint32_t flags;
	uint64_t addr;
	uint64_t size;
} __attribute__((packed));

#define VFU_DEV_F_RESET (1u << 0)
#define VFU_DEV_F_PCI (1u << 1)

struct vfu_device_info {
	uint32_t argsz;
	uint32_t flags;
	uint32_t num_regions;
	uint32_t num_irqs;
} __attribute__((packed));

#define VFU_REGION_F_READ (1u << 0)
#define VFU_REGION_F_WRITE (1u << 1)
#define VFU_REGION_F_MMAP (1u << 2)
#define VFU_REGION_F_CAPS (1u << 3)

/* GET_REGION_INFO: the request sets argsz (room for the reply payload incl.
 * capabilities) and index, everything else 0. With VFU_REGION_F_MMAP the
 * reply carries one fd; mmap it at @offset (+ a sparse area's offset). */
struct vfu_region_info {
	uint32_t argsz;
	uint32_t flags;
	uint32_t index;
	uint32_t cap_offset;
	uint64_t size;
	uint64_t offset; /* into the fd passed with the reply, for mmap */
} __attribute__((packed));

/* Region capability chain (the VFIO info-cap layout); cap_offset and next
 * count from the start of struct vfu_region_info (the payload start). */
struct vfu_cap_hdr {
	uint16_t id;
	uint16_t version;
	uint32_t next; /* offset from the start of the region info; 0 ends */
} __attribute__((packed));

#define VFU_REGION_CAP_SPARSE_MMAP 1 /* version 1 */
#define VFU_REGION_CAP_TYPE 2

struct vfu_sparse_mmap {
	struct vfu_cap_hdr hdr;
	uint32_t nr_areas;
	uint32_t reserved;
	struct {
		uint64_t offset;
		uint64_t size;
	} areas[];
} __attribute__((packed));

struct vfu_irq_info {
	uint32_t argsz;
	uint32_t flags;
	uint32_t index;
	uint32_t count;
} __attribute__((packed));

/* SET_IRQS flags: the VFIO_IRQ_SET_* values. */
#define VFU_IRQ_SET_DATA_NONE (1u << 0)
#define VFU_IRQ_SET_DATA_BOOL (1u << 1)
#define VFU_IRQ_SET_DATA_EVENTFD (1u << 2)
#define VFU_IRQ_SET_ACTION_MASK (1u << 3)
#define VFU_IRQ_SET_ACTION_UNMASK (1u << 4)
#define VFU_IRQ_SET_ACTION_TRIGGER (1u << 5)

/* SET_IRQS: argsz is the request payload size (20 + data). With
 * DATA_EVENTFD the fds travel as ancillary data, one per vector in
 * [start, start+count); none de-assigns. count 0 with DATA_NONE disables the
 * whole index. No reply payload. */
struct vfu_irq_set {
	uint32_t argsz;
	uint32_t flags;
	uint32_t index;
	uint32_t start;
	uint32_t count;
} __attribute__((packed));

struct vfu_region_access {
	uint64_t offset;
	uint32_t region;
	uint32_t count;
	/* followed by count bytes of data (write request / read reply) */
} __attribute__((packed));

/* DMA_READ / DMA_WRITE, server -> client. The reply to DMA_WRITE is this
 * struct without data. (The specification's table gives that reply's count
 * as 4 bytes; qemu and libvfio-user send the same 16-byte struct as
 * everywhere else, and so does this project.) */
struct vfu_dma_access {
	uint64_t addr;
	uint64_t count;
	/* followed by count bytes of data (write request / read reply) */
} __attribute__((packed));

/* Limits this project enforces on both sides. */
#define VFU_MAX_FDS 8
#define VFU_MAX_DATA_XFER (1u << 20)
#define VFU_MAX_MSG (VFU_MAX_DATA_XFER + 4096)

_Static_assert(sizeof(struct vfu_hdr) == 16, "vfio-user header is 16 bytes");
_Static_assert(sizeof(struct vfu_version) == 4, "version payload head");
_Static_assert(sizeof(struct vfu_dma_map) == 32, "DMA_MAP payload is 32 bytes");
_Static_assert(sizeof(struct vfu_dma_unmap) == 24, "DMA_UNMAP payload is 24 bytes");
_Static_assert(sizeof(struct vfu_device_info) == 16, "DEVICE_GET_INFO payload");
_Static_assert(sizeof(struct vfu_region_info) == 32, "GET_REGION_INFO payload");
_Static_assert(sizeof(struct vfu_cap_hdr) == 8, "cap header");
_Static_assert(sizeof(struct vfu_sparse_mmap) == 16, "sparse mmap cap head");
_Static_assert(sizeof(struct vfu_irq_info) == 16, "GET_IRQ_INFO payload");
_Static_assert(sizeof(struct vfu_irq_set) == 20, "SET_IRQS payload head");
_Static_assert(sizeof(struct vfu_region_access) == 16, "REGION_READ/WRITE head");
_Static_assert(sizeof(struct vfu_dma_access) == 16, "DMA_READ/WRITE head");

#endif
