/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim: the reference device, in process.
 *
 * sim_start() creates one or more software GPUs (docs/reference-device.md)
 * and serves each on its own vfio-user socket from threads it owns. The
 * functions below mirror the control socket (`--control PATH`) so tests can
 * drive removal, fault injection and inspect state without a second process.
 *
 * Threading: every function may be called from any thread except that
 * sim_stop() must not race with the other calls on the same struct sim.
 * Nothing here blocks without a bound.
 */
#ifndef UGPU_SIM_H
#define UGPU_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIM_MAX_DEVICES 16
#define SIM_MAX_EXEC_QUEUES 64

struct sim;

/*
 * struct sim_opts - how to build the device(s). Initialise with
 * sim_opts_init(); the struct may grow at its end (size says how much the
 * caller knows about).
 */
struct sim_opts {
	size_t size; /* sizeof(struct sim_opts) as the caller compiled it */
	/* Socket path. With devices > 1, device i listens on "<path>.<i>". NULL:
	 * a unique path under $TMPDIR (or /tmp) is made; see sim_socket_path(). */
	const char *socket_path;
	uint64_t vram_size; /* bytes, power of two >= 1 MiB; 0 = 256 MiB */
	unsigned devices; /* 1..SIM_MAX_DEVICES; 0 = 1 */
	unsigned wake_latency_us; /* D3 -> D0 latency (WAKE_LAT_US) */
	/* 0 = 65535, the most a DMA_MAP client may expect: it is the
	 * specification's default and the kernel's (vfio type1 dma_entry_limit),
	 * and QEMU's client takes no more. Larger is refused (-EINVAL). */
	unsigned max_dma_maps;
	unsigned req_interval_ms; /* REQ repeat period; 0 = 10000 */
	const char *control_path; /* control socket, or NULL for none */
	/* slow_links[a] bit b: the link between nodes a and b is slow (the
	 * relation is made symmetric by sim_start). */
	uint32_t slow_links[SIM_MAX_DEVICES];
	/* Config space reads all-ones in D3cold (its identity dwords), as some
	 * hardware does once main power is off: what a driver's "is it dead?"
	 * probe must not mistake for a removal. */
	bool cfg_dead_in_d3cold;
	unsigned exec_queues; /* exec queues per device, 1..SIM_MAX_EXEC_QUEUES; 0 = 4 */
	/* A connected AF_UNIX stream socket to serve instead of listening on a
	 * path (the vfio-user backend convention --fd=N); -1 = listen. One device
	 * only; the device takes the fd over. When that client disconnects there
	 * is nobody left to serve: sim_state().client turns false for good. */
	int client_fd;
	/* The VERSION minor the device models: 4 (0 means 4: the newest, with
	 * the COPY_LIST descriptor, CAPS bit 6), 3 (a 1.3 device: no COPY_LIST;
	 * the COPY_SUM descriptor, CAPS bit 5), 2 (a 1.2 device: no COPY_SUM;
	 * the NO_ATOMIC leaf bit and CAPS bit 4) or 1 (a 1.1 device: bit 3 of
	 * a leaf is ignored, as 1.1 hardware ignores it), so that a driver's
	 * older paths can be tested. Other values are refused (-EINVAL). */
	unsigned version_minor;
};

/* Fill @opts with the defaults above (size set, client_fd -1). */
void sim_opts_init(struct sim_opts *opts);

/*
 * sim_start - create the device(s) and start serving.
 * Returns 0 with *@out set, or -EINVAL (bad option), -ENOMEM, -EADDRINUSE
 * (socket path taken), or another -errno from socket/memfd setup.
 * When it returns, every socket is listening.
 */
int sim_start(const struct sim_opts *opts, struct sim **out);

/* Stop every thread, close every socket (and unlink it), free everything.
 * NULL is a no-op. Bounded: in-flight in-band DMA is failed, not awaited. */
void sim_stop(struct sim *sim);

unsigned sim_num_devices(const struct sim *sim);
/* The socket path of device @dev, or NULL if @dev is out of range. */
const char *sim_socket_path(const struct sim *sim, unsigned dev);

/* Removal request: raise REQ now and every req_interval_ms until the client
 * disconnects; then the device is gone (socket unlinked). -ENODEV if already
 * gone. */
int sim_unplug_request(struct sim *sim, unsigned dev);
/* Surprise removal: the socket is shut down before this returns; engines stop.
 * -ENODEV if already gone. */
int sim_unplug_surprise(struct sim *sim, unsigned dev);

enum sim_inject_kind {
	SIM_INJECT_CMD = 0, /* copy-engine descriptors: fail with ERR_INJECTED */
	SIM_INJECT_DMA = 1, /* IOVA accesses: fail with ERR_DMA */
	SIM_INJECT_WAKE = 2, /* D3 -> D0 PMCSR writes: ignored, state stays D3 */
	SIM_INJECT_KINDS
};
/* Fail the @n-th event of @kind from now (1 = the next); @always: that one and
 * every later one. -EINVAL for n == 0 or a bad kind. */
int sim_inject(struct sim *sim, unsigned dev, enum sim_inject_kind kind, unsigned n, bool always);
int sim_inject_clear(struct sim *sim, unsigned dev);

enum sim_power_state { SIM_POWER_D0 = 0, SIM_POWER_D3HOT = 3, SIM_POWER_D3COLD = 4 };

struct sim_state {
	enum sim_power_state power;
	uint32_t ce_status[2]; /* the STATUS registers (IDLE/ERROR/ENABLED bits) */
	uint32_t ce_error[2]; /* the ERROR registers */
	uint32_t exec_status; /* queue 0's EXEC_STATUS */
	bool client; /* a vfio-user client is connected */
	bool twin; /* ... in twin-socket mode (its DMA requests on a second socket) */
	bool removed; /* unplugged (request completed, or surprise) */
	uint32_t dma_maps; /* live DMA mappings */
	uint64_t descs; /* descriptors completed, both engines */
	uint64_t irqs; /* interrupts signalled (all indexes) */
	uint64_t reqs; /* REQ interrupts raised */
	uint64_t faults; /* GPU page faults queued */
	uint64_t inband; /* in-band DMA_READ/DMA_WRITE messages sent */
	unsigned exec_queues; /* NUM_EXEC_QUEUES */
	uint32_t queue_status[SIM_MAX_EXEC_QUEUES]; /* every queue's EXEC_STATUS */
	bool fault_ring; /* the fault ring is on */
	uint32_t fault_ring_size; /* its entries */
	uint32_t fault_put, fault_get; /* FAULT_PUT, FAULT_GET */
	uint64_t irq_drops; /* interrupts dropped: the client's fd was full or broken */
	uint64_t lists; /* of the descriptors completed, COPY_LISTs (1.4) */
};

int sim_state(struct sim *sim, unsigned dev, struct sim_state *st);
/* Device @dev's VRAM memfd (the device's own fd: do not close it; dup it to
 * keep it), or -1. ugpud keeps a duplicate in systemd's fd store so that a
 * restarted daemon can read what its clients' BOs held in VRAM. */
int sim_vram_fd(struct sim *sim, unsigned dev);
/* The control socket's `state` line (no newline) into @buf. */
int sim_state_line(struct sim *sim, unsigned dev, char *buf, size_t len);

/*
 * Run one control-socket command line (e.g. "inject dma 1 once", optionally
 * prefixed by "dev N ") and write the reply ("ok ..." / "err ...") into @reply.
 * Returns 0 when the reply is "ok", else -errno.
 */
int sim_control_exec(struct sim *sim, const char *line, char *reply, size_t len);

#endif
