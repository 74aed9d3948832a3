/* SPDX-License-Identifier: MIT */
/*
 * ugpu devices: open a GPU through one of the VFIO transports, query it,
 * close it.
 */
#ifndef UGPU_DEVICE_H
#define UGPU_DEVICE_H

#include <ugpu/ugpu.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ugpu_device;

/** PCI power states as ugpu tracks them. */
enum ugpu_power_state {
	UGPU_POWER_D0 = 0,
	UGPU_POWER_D3HOT = 3,
	UGPU_POWER_D3COLD = 4, /**< main power cut: VRAM contents are lost */
};

/** Capability bits of struct ugpu_device_info.caps. */
#define UGPU_DEVICE_CAP_COPY_ENGINE (1u << 0) /**< has a blitter (else CPU copies) */
#define UGPU_DEVICE_CAP_GPUVM (1u << 1) /**< GPU page tables + recoverable faults */
#define UGPU_DEVICE_CAP_FABRIC (1u << 2) /**< peer-to-peer copies to other devices */
#define UGPU_DEVICE_CAP_D3COLD (1u << 3) /**< can cut main power (VRAM lost) */

/**
 * struct ugpu_device_info - what ugpu_device_query() reports.
 * @size: set by the caller to sizeof(struct ugpu_device_info).
 * @name: the device as opened ("vfio-user:/run/gpu.sock", "0000:01:00.0").
 * @transport: "vfio-user" or "vfio-pci".
 * @profile: the device profile ugpu drives it with ("ugpu-sim", "ivshmem").
 * @vendor_id: PCI vendor id.
 * @device_id: PCI device id.
 * @class_code: PCI class code (24 bits).
 * @vram_size: bytes of device memory.
 * @num_copy_engines: blitters the driver uses (0 when copies go through the CPU).
 * @caps: UGPU_DEVICE_CAP_* bits.
 * @fabric_id: node id in the device's fabric (0 when alone).
 * @power_state: current power state.
 */
struct ugpu_device_info {
	size_t size;
	char name[128];
	char transport[16];
	char profile[32];
	uint16_t vendor_id;
	uint16_t device_id;
	uint32_t class_code;
	uint64_t vram_size;
	uint32_t num_copy_engines;
	uint32_t caps;
	uint32_t fabric_id;
	enum ugpu_power_state power_state;
};

/**
 * ugpu_device_open() - claim a device and bring it up.
 * @ctx: the owning context.
 * @uri: which device: "vfio-user:PATH" (a vfio-user server's socket, e.g. the
 *       reference device ugpu-sim), "pci:DDDD:BB:DD.F" / "DDDD:BB:DD.F" (a
 *       device bound to vfio-pci), or "ugpud:SOCKET" / "ugpud:SOCKET?device=N"
 *       (device N, default 0, of the daemon ugpud listening on SOCKET).
 * @out: the device on success.
 *
 * Through ugpud the daemon owns the device and this process is one of its
 * clients (docs/daemon.md): ugpu_device_query() (transport "ugpud"),
 * ugpu_device_mem_stats() (the device's figures, every client's BOs
 * counted), the BO calls of <ugpu/bo.h> (ugpu_bo_map() maps the BO in
 * system memory, see there) and GPU VMs and submission (<ugpu/vm.h>, but
 * for mirror VMs) are served; every other call that takes the device or one
 * of its objects returns -EOPNOTSUPP (each says so). The capabilities leave
 * out what is not served (UGPU_DEVICE_CAP_FABRIC). When
 * the daemon goes away, calls return -ENODEV.
 *
 * Bring-up: open the transport, identify the device by its PCI ids (an
 * unknown device is refused), enable memory decoding and bus mastering, put
 * it in D0, map its VRAM, route its interrupts, set up DMA and its copy
 * engines.
 *
 * Returns: 0; -EINVAL for a malformed @uri or NULL arguments; -ENOENT when
 * nothing is at @uri; -ENOTSOCK when a vfio-user path is not a socket;
 * -ECONNREFUSED when nobody listens on the socket; -ETIMEDOUT when the peer
 * does not answer the vfio-user handshake within 5 s (a socket that does not
 * speak vfio-user); -EPROTO for a malformed reply; -ENODEV when the device is
 * not one ugpu supports or stops answering; -EBUSY when another process holds
 * it, or a previous owner's GPU kernels still run on it after 2 s; -EACCES /
 * -EPERM without the rights to open it; through ugpud also -EACCES (the
 * daemon's policy does not serve this user), -EPROTONOSUPPORT (it speaks
 * another protocol version), -ENODEV (it has no device N); other -errno from
 * the transport (each failure is also logged with what to do about it).
 * Context: any thread; devices are independent of each other.
 */
UGPU_API int ugpu_device_open(struct ugpu_context *ctx, const char *uri, struct ugpu_device **out);

/**
 * ugpu_device_close() - release a device and every device resource.
 * @dev: the device, or NULL (no-op).
 *
 * Never needs the device to answer: a removed or dead device still closes.
 *
 * Buffer objects still alive lose their memory here: their CPU mappings are
 * removed (a later touch of the old address is an ordinary SIGSEGV) and their
 * VRAM and system memory are freed. The handles stay valid until their last
 * ugpu_bo_put(): every other BO call on them returns -ENODEV from then on, and
 * ugpu_bo_put() frees the handle. So drop or copy out what you need first;
 * a BO used after close fails cleanly instead of touching freed memory.
 * Context: no other thread may use @dev during or after the call; other
 * threads may still hold (and put) BO handles of @dev, but must not be inside
 * a BO call during the close.
 */
UGPU_API void ugpu_device_close(struct ugpu_device *dev);

/**
 * ugpu_device_query() - describe a device.
 * @dev: the device.
 * @info: filled up to @info->size bytes.
 *
 * Returns: 0, or -EINVAL for NULL arguments or @info->size too small to
 * hold the size field.
 * Context: any thread.
 */
UGPU_API int ugpu_device_query(struct ugpu_device *dev, struct ugpu_device_info *info);

/**
 * struct ugpu_device_mem - device memory use (ugpu_device_mem_stats()).
 * @size: set by the caller to sizeof(struct ugpu_device_mem).
 * @vram_size: bytes of VRAM the driver manages.
 * @vram_used: bytes of VRAM allocated (every BO, the driver's own included).
 * @vram_free: @vram_size - @vram_used (0 once the device is removed).
 * @vram_kernel: bytes of VRAM held by the driver's own objects (engine rings).
 * @vram_bos: bytes of VRAM held by the program's BOs.
 * @system_bytes: bytes of system memory held by BOs placed there.
 * @backup_bytes: bytes of host-suspend backups held now.
 * @bos: live BOs of the program; @bos_vram, @bos_system, @bos_lost split them
 *       by where their contents are now.
 * @evictions: BOs evicted from VRAM to make room; @evicted_bytes their bytes.
 * @moves: BO moves (evictions, migrations, pins, suspend, removal).
 * @moved_bytes: their bytes.
 * @copy_failures: moves whose copy failed (the BO stayed where it was).
 * @peer_out: BOs that moved from this device to another
 *        (ugpu_bo_migrate_device(), or a removal moving them to a peer).
 * @peer_in: BOs that came to this device's VRAM from another; of them
 *        @peer_direct came directly over the fabric (the source device's
 *        copy engine), @peer_via_system through system memory.
 * @peer_bytes: bytes of the BOs that came (@peer_in).
 */
struct ugpu_device_mem {
	size_t size;
	uint64_t vram_size;
	uint64_t vram_used;
	uint64_t vram_free;
	uint64_t vram_kernel;
	uint64_t vram_bos;
	uint64_t system_bytes;
	uint64_t backup_bytes;
	uint64_t bos;
	uint64_t bos_vram;
	uint64_t bos_system;
	uint64_t bos_lost;
	uint64_t evictions;
	uint64_t evicted_bytes;
	uint64_t moves;
	uint64_t moved_bytes;
	uint64_t copy_failures;
	uint64_t peer_out;
	uint64_t peer_in;
	uint64_t peer_direct;
	uint64_t peer_via_system;
	uint64_t peer_bytes;
};

/**
 * ugpu_device_mem_stats() - how much VRAM is used and free, and where the
 * program's BOs are.
 * @dev: the device (also after a removal: VRAM then reads 0 used, 0 free).
 * @st: filled up to @st->size bytes.
 *
 * Returns: 0, or -EINVAL for NULL arguments or @st->size too small to hold
 * the size field.
 * Context: any thread; a snapshot (never wakes a sleeping device).
 */
UGPU_API int ugpu_device_mem_stats(struct ugpu_device *dev, struct ugpu_device_mem *st);

#ifdef __cplusplus
}
#endif

#endif /* UGPU_DEVICE_H */
