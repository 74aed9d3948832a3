/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim internals: shared between the sim_*.c files of this folder only.
 *
 * Threads of one device:
 *   - the server thread (sim_server.c): owns the listening and client sockets
 *     for reading, runs every client command (sim_commands.c: config/BAR
 *     accesses, irq set-up, reset; sim_dma.c: DMA map), raises REQ on its
 *     timer, and routes the client's replies to in-band DMA requests back to
 *     the thread that asked (sim_dma.c);
 *   - two copy-engine threads (sim_engine.c);
 *   - one thread per exec queue (sim_vm.c).
 * Plus, per struct sim, an optional control-socket thread (sim_control.c).
 *
 * Locking (see struct sim_dev): all device state (config space, registers,
 * engine and exec state, DMA map table, irq fds, injection counters, flags) is
 * under dev->lock. Engines take it briefly to pick up and retire a descriptor,
 * never while moving data. VRAM bytes themselves are unlocked, like real
 * memory: ordering between the driver and the engines comes from the doorbell
 * and the fence/interrupt. dev->send_lock serialises writes to the client
 * socket (replies from the server thread, DMA_READ/WRITE from engines when
 * there is no twin socket) and guards client_fd against close; dev->twin_lock
 * does the same for the twin socket (DMA_READ/WRITE in twin-socket mode).
 * Lock order: never hold two devices' locks; send_lock and twin_lock are
 * never held together, nor with dev->lock.
 */
#ifndef UGPU_SIM_INTERNAL_H
#define UGPU_SIM_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <sys/un.h>

#include "sim.h"
#include "vfio/vfio_user_proto.h"

#define SIM_NUM_CE 2
#define SIM_MSIX_VECTORS 5
#define SIM_BAR0_SIZE 0x10000u
#define SIM_CFG_SIZE 256u
#define SIM_NUM_REGIONS 9u
#define SIM_NUM_IRQS 5u
#define SIM_PAGE 4096u
#define SIM_IOVA_LIMIT (1ull << 48)
#define SIM_INBAND_TIMEOUT_MS 5000
#define SIM_IO_TIMEOUT_MS 5000
#define SIM_TLB_ENTRIES 64
/* IOVA ranges in use at once: two per copy engine (source and destination),
 * one per exec queue. */
#define SIM_MAX_INFLIGHT (2 * SIM_NUM_CE + SIM_MAX_EXEC_QUEUES)
#define SIM_FAULT_DEPTH 64 /* pages of one kernel waiting for a reply, ring on */
#define SIM_FAULT_ENTRY 32 /* bytes per fault-ring entry */
#define SIM_FAULT_RING_MIN 64u /* entries */
#define SIM_FAULT_RING_MAX 65536u
#define SIM_MAX_REFUSED 4 /* second clients waiting for their EBUSY answer */
#define SIM_REFUSE_MS 1000 /* how long one may take to send its first header */
#define SIM_SLOW_LINK_BPS (1ull << 30) /* bytes/s over a slow fabric link */

/* IRQ indexes (the VFIO PCI ones). */
enum { SIM_IRQ_INTX = 0, SIM_IRQ_MSI = 1, SIM_IRQ_MSIX = 2, SIM_IRQ_ERR = 3, SIM_IRQ_REQ = 4 };

/* MSI-X vectors (reference-device.md). */
enum { SIM_VEC_CE0 = 0, SIM_VEC_CE1 = 1, SIM_VEC_ERROR = 2, SIM_VEC_FAULT = 3, SIM_VEC_EXEC = 4 };

/* BAR0 registers. */
#define REG_ID 0x0000
#define REG_VERSION 0x0004
#define REG_CAPS 0x0008
#define REG_NUM_ENGINES 0x000c
#define REG_VRAM_SIZE 0x0010
#define REG_FABRIC_ID 0x0018
#define REG_FABRIC_PEERS 0x001c
#define REG_FABRIC_FAST 0x0020
#define REG_FABRIC_UID 0x0028 /* 64-bit */
#define REG_SCRATCH 0x0040
#define REG_CE_BASE 0x1000
#define REG_CE_STRIDE 0x100
#define CE_RING_BASE 0x00
#define CE_RING_SIZE 0x08
#define CE_RING_HEAD 0x0c
#define CE_RING_TAIL 0x10
#define CE_CTRL 0x14
#define CE_STATUS 0x18
#define CE_ERROR 0x1c
#define CE_ERROR_HEAD 0x20
#define CE_SEQNO 0x28
#define REG_NUM_EXEC_QUEUES 0x0024
/* The 1.0 exec block: windows onto queue 0's registers. */
#define REG_Q0_VM_ALIAS 0x2000 /* 0x2000-0x203f: queue 0 +0x00-+0x3f */
#define REG_Q0_VM_ALIAS_END 0x2040
#define REG_Q0_EXEC_ALIAS 0x2100 /* 0x2100-0x217f: queue 0 +0x40-+0xbf */
#define REG_Q0_EXEC_ALIAS_END 0x2180
/* The fault slot (the ring off). */
#define REG_FAULT_STATUS 0x2200
#define REG_FAULT_VA 0x2208
#define REG_FAULT_ACCESS 0x2210
#define REG_FAULT_REPLY 0x2214
#define REG_FAULT_QUEUE 0x2218
/* The fault ring and the queue-wide registers. */
#define REG_FAULT_RING_BASE 0x3000
#define REG_FAULT_RING_SIZE 0x3008
#define REG_FAULT_RING_CTRL 0x300c
#define REG_FAULT_RING_STATUS 0x3010
#define REG_FAULT_PUT 0x3014
#define REG_FAULT_GET 0x3018
#define REG_FAULT_DEPTH 0x301c
#define REG_FAULT_REPLAY 0x3020
#define REG_FAULT_ABORT 0x3028
#define REG_EXEC_DONE 0x3030
#define REG_EXEC_BUSY 0x3038
/* Exec queue n at REG_Q_BASE + n * REG_Q_STRIDE. */
#define REG_Q_BASE 0x4000
#define REG_Q_STRIDE 0x100
#define Q_VM_CTRL 0x00
#define Q_VM_ROOT 0x08
#define Q_TLB_INVAL 0x10
#define Q_FAULT_REPLY 0x14
#define Q_EXEC_OP 0x40
#define Q_EXEC_VA 0x48
#define Q_EXEC_SIZE 0x50
#define Q_EXEC_VALUE 0x58
#define Q_EXEC_START 0x60
#define Q_EXEC_STATUS 0x64
#define Q_EXEC_RESULT 0x68
#define Q_EXEC_PROGRESS 0x70
#define Q_FENCE_ADDR 0x78
#define Q_FENCE_VALUE 0x80
#define Q_SEQNO 0x88
#define Q_LAUNCH 0x90
#define Q_FAULT_PAGES 0x94
#define REG_MSIX_TABLE 0x8000
#define REG_MSIX_PBA 0x9000

#define SIM_ID 0x55475055u
#define SIM_VERSION_MAJOR 0x00010000u
#define SIM_VERSION_MINOR 4u /* 1.1: exec queues, fault ring, fences; 1.2: NO_ATOMIC; 1.3: COPY_SUM; 1.4: COPY_LIST */
#define SIM_CAPS_QUEUES (1u << 3)
#define SIM_CAPS_NO_ATOMIC (1u << 4)
#define SIM_CAPS_COPY_SUM (1u << 5) /* 1.3: the COPY_SUM descriptor */
#define SIM_CAPS_COPY_LIST (1u << 6) /* 1.4: the COPY_LIST descriptor */

#define CE_CTRL_ENABLE (1u << 0)
#define CE_CTRL_RESET (1u << 1)
#define CE_STATUS_IDLE (1u << 0)
#define CE_STATUS_ERROR (1u << 1)
#define CE_STATUS_ENABLED (1u << 2)

enum { SIM_ERR_OPCODE = 1, SIM_ERR_BOUNDS = 2, SIM_ERR_DMA = 3, SIM_ERR_PEER = 4, SIM_ERR_INJECTED = 5 };
enum { SIM_OP_NOP = 0, SIM_OP_COPY = 1, SIM_OP_FILL = 2, SIM_OP_FENCE = 3, SIM_OP_COPY_SUM = 4,
       SIM_OP_COPY_LIST = 5 };
/* COPY_SUM: a checksum (XXH3-64) per piece of this many bytes. */
#define SIM_SUM_PIECE (64u << 10)
/* COPY_LIST: at most this many entries, two per ring slot after the
 * descriptor; value ~0: no sums. */
#define SIM_LIST_MAX 1024u
#define SIM_LIST_NO_SUM (~0ull)

/* One entry of a COPY_LIST, as the ring holds it (32 bytes). */
struct sim_list_entry {
	uint64_t src;
	uint64_t dst;
	uint64_t size;
	uint64_t reserved;
};
_Static_assert(sizeof(struct sim_list_entry) == 32, "a list entry is 32 bytes");
enum { SIM_SPACE_VRAM = 0, SIM_SPACE_IOVA = 1, SIM_SPACE_PEER = 2 };

enum { EXEC_IDLE = 0, EXEC_RUNNING = 1, EXEC_STALLED = 2, EXEC_DONE = 3, EXEC_ABORTED = 4,
       EXEC_ERROR = 5 };
enum { EXEC_OP_READ = 1, EXEC_OP_WRITE = 2, EXEC_OP_ATOMIC = 3 };
enum { ACC_READ = 0, ACC_WRITE = 1, ACC_ATOMIC = 2 };
enum { FAULT_REPLY_NONE = 0, FAULT_REPLY_REPLAY = 1, FAULT_REPLY_ABORT = 2 };
#define FRING_CTRL_ENABLE (1u << 0)
#define FRING_STATUS_ENABLED (1u << 0)
#define FRING_STATUS_ERROR (1u << 1)
#define FENCE_NONE (~0ull)

#define PTE_VALID (1ull << 0)
#define PTE_WRITABLE (1ull << 1)
#define PTE_SYSTEM (1ull << 2)
#define PTE_NO_ATOMIC (1ull << 3) /* 1.2, leaf only: an atomic through it faults */
#define PTE_ADDR_MASK 0x000ffffffffff000ull

/* Config space layout. */
#define CFG_COMMAND 0x04
#define CFG_CMD_MEM (1u << 1)
#define CFG_CMD_MASTER (1u << 2)
#define CFG_CMD_RESET_VALUE (CFG_CMD_MEM | CFG_CMD_MASTER)
#define CFG_PM_CAP 0x40
#define CFG_PMCSR 0x44
#define CFG_MSIX_CAP 0x50
#define CFG_VNDR_CAP 0x60
#define CFG_PWR_CTL 0x64
#define CFG_PWR_STATE 0x68
#define CFG_WAKE_LAT 0x6c

struct sim_desc {
	uint32_t opcode;
	uint32_t flags;
	uint64_t src;
	uint64_t dst;
	uint64_t size;
	uint64_t value;
	uint32_t src_space;
	uint32_t dst_space;
	uint32_t src_peer;
	uint32_t dst_peer;
	uint64_t reserved;
};
_Static_assert(sizeof(struct sim_desc) == 64, "descriptor is 64 bytes");

/* One DMA_MAP window. host is the server's mmap of the client's fd, or NULL
 * when the window has no fd (reached with in-band DMA_READ/WRITE). */
struct sim_dma_map {
	uint64_t iova;
	uint64_t size;
	uint32_t prot; /* VFU_DMA_F_* */
	uint8_t *host;
};

/* An IOVA range an engine is accessing; DMA_UNMAP of an overlapping window
 * waits until it is released. */
struct sim_inflight {
	bool used;
	uint64_t start, end; /* [start, end) */
};

/* Copy engine. Registers and state under dev->lock; the thread owns "running
 * a descriptor" (busy) and drops the lock while it moves data. */
struct sim_ce {
	struct sim_dev *dev;
	unsigned idx;
	pthread_t thread;
	bool thread_started;
	pthread_cond_t cond; /* doorbell, enable, power, stop */
	uint64_t ring_base; /* as written */
	uint32_t ring_size;
	uint64_t l_base; /* latched on ENABLE 0->1 */
	uint32_t l_size;
	uint32_t head, tail;
	bool enabled;
	bool error;
	uint32_t error_code, error_head;
	uint64_t seqno;
	bool busy; /* a descriptor is executing (lock dropped) */
	/* The entries of the COPY_LIST this engine runs: copied out of the
	 * ring under dev->lock when it starts, then read by the engine's
	 * thread alone while it moves the bytes. */
	struct sim_list_entry list[SIM_LIST_MAX];
};

struct sim_tlb_entry {
	bool valid;
	uint64_t vpn;
	uint64_t pte;
};

/* A kernel as EXEC_START latched it. */
struct sim_kernel {
	uint32_t op;
	uint64_t va, size, value;
	uint64_t fence_addr, fence_value;
};

/* One exec queue: a VM, a kernel, and where that kernel stands. Under
 * dev->lock; the queue's thread owns "working on a page" (busy) and drops the
 * lock while it touches the page. */
struct sim_queue {
	struct sim_dev *dev;
	unsigned idx;
	pthread_t thread;
	bool thread_started;
	pthread_cond_t cond; /* start, fault reply, room in the fault queue, power, stop */
	/* Registers. */
	uint32_t vm_ctrl;
	uint64_t vm_root;
	struct sim_tlb_entry tlb[SIM_TLB_ENTRIES];
	uint32_t op;
	uint64_t va, size, value;
	uint64_t fence_addr, fence_value;
	uint32_t status;
	uint64_t result, progress, seqno;
	uint32_t launch;
	/* The running kernel. Its pages are work items: next is the first page
	 * never tried; aside[] the pages whose faults are queued, in fault
	 * order; retry[rhead..nretry) those a REPLAY released, tried first. The
	 * two lists together never hold more than SIM_FAULT_DEPTH pages. */
	struct sim_kernel k;
	uint64_t next;
	uint64_t aside[SIM_FAULT_DEPTH];
	unsigned naside;
	uint64_t retry[SIM_FAULT_DEPTH];
	unsigned rhead, nretry;
	bool wait_room; /* a fault found the ring (or the slot) full */
	uint32_t reply; /* FAULT_REPLY_*, taken by the thread between pages */
	bool start_req;
	uint64_t gen; /* bumped by resets: a running kernel that sees it change ends */
	bool busy; /* working on a page with the lock dropped */
	uint64_t pages_done; /* pages ended (busy cleared): counts up */
	/* TLB_INVAL waits for the page in flight when it was written, the
	 * one whose pages_done was this, not for the pages after it. */
	uint64_t tlb_page;
};

/* The fault ring in VRAM (reference-device.md "Page faults"). */
struct sim_fault_ring {
	uint64_t base; /* as written */
	uint32_t size;
	uint64_t l_base; /* latched on ENABLE 0->1 */
	uint32_t l_size;
	bool enabled;
	bool error;
	uint32_t put, get; /* free-running */
};

/* The 1.0 fault slot, used while the ring is off. */
struct sim_fault_slot {
	bool busy;
	unsigned queue;
	uint64_t va;
	uint32_t access;
};

/* A received message. */
struct sim_msg {
	struct sim_msg *next;
	struct vfu_hdr hdr;
	uint8_t *body; /* hdr.size - 16 bytes (NULL when empty or dropped) */
	size_t len;
	int fds[VFU_MAX_FDS];
	int nfds;
	int bad; /* errno to reply with before looking at the body (E2BIG) */
};

/* An in-band DMA request an engine is waiting on (under dev->lock). */
struct sim_pending {
	struct sim_pending *next;
	uint16_t msg_id;
	uint16_t cmd;
	uint64_t addr;
	uint8_t *buf; /* DMA_READ: where the reply data goes */
	size_t len;
	bool queued; /* on dev->pending: not yet claimed by a reply or failed */
	bool done;
	int err;
};

struct sim_inject {
	bool armed;
	bool always;
	uint64_t countdown; /* events until the failing one; 1 = next */
};

struct sim_dev {
	struct sim *sim;
	unsigned id;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];

	/* Everything below is under lock unless marked otherwise. */
	pthread_mutex_t lock;

	/* VRAM: fd and mapping immutable while the device lives; bytes unlocked. */
	int vram_fd;
	uint8_t *vram;
	uint64_t vram_size;

	uint8_t cfg[SIM_CFG_SIZE];
	uint8_t cfg_wmask[SIM_CFG_SIZE];
	enum sim_power_state power;
	uint8_t msix_table[SIM_MSIX_VECTORS * 16];
	uint32_t scratch;

	/* Interrupts: eventfds from SET_IRQS, -1 when not set. */
	int irq_fd[SIM_NUM_IRQS][SIM_MSIX_VECTORS];
	bool irq_masked[SIM_NUM_IRQS][SIM_MSIX_VECTORS];
	bool irq_pending[SIM_NUM_IRQS][SIM_MSIX_VECTORS];

	struct sim_dma_map *maps; /* sorted by iova, non-overlapping */
	size_t nmaps, maps_cap;
	unsigned max_dma_maps;
	struct sim_inflight inflight[SIM_MAX_INFLIGHT];

	struct sim_ce ce[SIM_NUM_CE];
	struct sim_queue *q; /* nq exec queues; the array lives as long as the device */
	unsigned nq;
	uint64_t exec_done; /* EXEC_DONE */
	bool exec_held; /* exec_hold(): queues pause between pages until the reset */
	struct sim_fault_ring fring;
	struct sim_fault_slot fslot;

	struct sim_inject inj[SIM_INJECT_KINDS];

	/* Server. listen_fd/wake_fd: server thread (wake_fd written by anyone).
	 * client_fd: written under send_lock; closed by the server thread under
	 * send_lock; read only by the server thread. */
	pthread_t srv_thread;
	bool srv_started;
	int listen_fd;
	int wake_fd;
	pthread_mutex_t send_lock;
	int client_fd;
	bool client_broken; /* under send_lock: a send failed, client_fd is shut down */
	/* Test seam: when set (before any message, by the fuzz target on a
	 * detached device), every message the server sends goes here instead of
	 * a socket. Returns 0 or -errno as a send would. */
	int (*tx_hook)(struct sim_dev *dev, bool request, const struct iovec *iov, int cnt,
		       const int *fds, int nfds);
	/* Twin-socket mode (the client offered it in VERSION): our end of the
	 * socket pair for server-to-client requests (in-band DMA) and their
	 * replies, or -1. Written under twin_lock (set by the server thread in
	 * VERSION, closed by it on disconnect); read by the server thread. */
	pthread_mutex_t twin_lock;
	int twin_fd;
	bool connected; /* under lock: a client is attached */
	uint32_t peer_max_xfer; /* client's max_data_xfer_size (under lock) */
	uint16_t next_msg_id;
	struct sim_pending *pending;
	pthread_cond_t inband_cond;
	/* server thread only */
	bool versioned;
	bool client_dead; /* read failed inside srv_wait; disconnect pending */
	uint64_t wait_start, wait_end; /* range srv_wait's unmap predicate checks */
	uint64_t tlb_wait; /* queues whose TLB_INVAL waits for their page (lock) */
	struct sim_msg *backlog_head, *backlog_tail;
	/* Connections refused while a client is attached: each gets an EBUSY
	 * error reply to its first message, then is closed (fd -1: free). */
	struct {
		int fd;
		uint64_t deadline_ns;
	} refused[SIM_MAX_REFUSED];

	/* Removal. */
	bool req_active;
	uint64_t req_next_ns;
	bool removed;
	bool surprise; /* the server thread must drop the client now */
	bool stop;

	/* Counters. */
	uint64_t cnt_descs, cnt_irqs, cnt_reqs, cnt_faults, cnt_inband;
	uint64_t cnt_lists; /* COPY_LIST descriptors completed */
	uint64_t cnt_irq_drops; /* interrupts whose fd write failed (full, closed) */
};

struct sim {
	struct sim_opts opts; /* copy, with defaults applied */
	char base_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	unsigned ndev;
	struct sim_dev *devs[SIM_MAX_DEVICES];
	uint32_t slow[SIM_MAX_DEVICES]; /* symmetric slow-link matrix, immutable */
	uint64_t fabric_uid; /* FABRIC_UID: random, non-zero with > 1 device; immutable */
	struct sim_control *control;
};

/* Threads of the device: created with SIGPIPE blocked, so an interrupt write
 * into a pipe whose reader is gone fails with EPIPE instead of killing the
 * process (sim_core.c). Returns 0 or -errno. */
int sim_thread_create(pthread_t *t, void *(*fn)(void *), void *arg);

/* Time. */
uint64_t sim_now_ns(void);
void sim_deadline(struct timespec *ts, unsigned ms); /* CLOCK_MONOTONIC + ms */
void sim_cond_init(pthread_cond_t *c); /* monotonic clock */

/* sim_pci.c: config space and power. */
void pci_init(struct sim_dev *dev);
void pci_reset(struct sim_dev *dev); /* lock held: FLR values */
int pci_cfg_read(struct sim_dev *dev, uint64_t off, void *buf, size_t len);
/* Server thread, lock not held (power transitions may wait). */
int pci_cfg_write(struct sim_dev *dev, uint64_t off, const void *buf, size_t len);
bool pci_mem_enabled(struct sim_dev *dev); /* lock held */
bool pci_master_enabled(struct sim_dev *dev); /* lock held */

/* sim_regs.c: BAR0. Server thread; lock not held. */
int regs_read(struct sim_dev *dev, uint64_t off, void *buf, size_t len);
int regs_write(struct sim_dev *dev, uint64_t off, const void *buf, size_t len);

/* sim_engine.c: copy engines and DMA windows. */
int ce_start_threads(struct sim_dev *dev);
void ce_stop_threads(struct sim_dev *dev);
/* Lock held; engine not busy. @full: power-on values (D3cold, device reset);
 * else CTRL.RESET (ring registers and SEQNO kept). */
void ce_reset_locked(struct sim_ce *ce, bool full);
bool ce_any_busy(struct sim_dev *dev); /* lock held */
void ce_kick(struct sim_dev *dev); /* lock held: re-check run conditions */
uint32_t ce_status(const struct sim_ce *ce); /* lock held */
/* Injection countdown (lock held): true when this event must fail. */
bool sim_inject_hit(struct sim_dev *dev, enum sim_inject_kind kind);
/* Raise interrupt @index/@vec (lock held). Never blocks: the fds are
 * non-blocking (irq_fd_adopt); a write that fails is counted and dropped. */
void sim_irq_raise(struct sim_dev *dev, unsigned index, unsigned vec);
/* Check that @fd may carry interrupts (an eventfd or other anonymous inode, a
 * pipe or a socket: nothing whose write can sleep on I/O) and make it
 * non-blocking. Returns 0 or -EINVAL (logged). */
int irq_fd_adopt(struct sim_dev *dev, int fd);
/* DMA windows (lock held). */
struct sim_dma_map *dma_find(struct sim_dev *dev, uint64_t iova);
int dma_check(struct sim_dev *dev, uint64_t iova, uint64_t len, uint32_t prot);
int inflight_add(struct sim_dev *dev, uint64_t start, uint64_t len);
void inflight_del(struct sim_dev *dev, int slot);
bool inflight_overlaps(struct sim_dev *dev, uint64_t start, uint64_t end);
bool inflight_any(struct sim_dev *dev);
/* Move @len bytes between @buf and IOVA @iova (range checked and pinned
 * with inflight_add by the caller). Lock not held. */
int dma_rw(struct sim_dev *dev, uint64_t iova, void *buf, uint64_t len, bool write);

/* sim_guard.c: client memory accesses that survive a truncated file. */
/* Install the process-wide SIGBUS handler (once). Returns 0 or -errno. */
int sim_guard_init(void);
/* Run @fn(@arg); a SIGBUS inside it ends it early and returns -EFAULT
 * (logged for @dev). @fn must take no lock and allocate nothing. */
int sim_guard_run(struct sim_dev *dev, void (*fn)(void *arg), void *arg);
/* memmove under the guard: 0 or -EFAULT. */
int sim_guarded_memmove(struct sim_dev *dev, void *dst, const void *src, size_t n);

/* sim_vm.c: VMs and exec queues. Lock held unless said otherwise. */
int exec_init(struct sim_dev *dev); /* lock not held: dev->nq queues; 0 or -ENOMEM */
void exec_fini(struct sim_dev *dev); /* threads joined */
int exec_start_threads(struct sim_dev *dev); /* lock not held */
void exec_stop_threads(struct sim_dev *dev); /* lock not held; dev->stop set */
/* No queue busy: every queue, the ring and the slot to reset values. */
void exec_reset_locked(struct sim_dev *dev);
/* Take no new kernel and pause the running ones between pages: a reset
 * follows (exec_reset_locked ends the hold). */
void exec_hold(struct sim_dev *dev);
bool exec_any_busy(struct sim_dev *dev); /* a queue is on a page */
bool exec_any_active(struct sim_dev *dev); /* a queue is running or stalled */
uint64_t exec_busy_mask(struct sim_dev *dev); /* EXEC_BUSY */
void exec_kick(struct sim_dev *dev); /* every queue re-checks its conditions */
void exec_start(struct sim_queue *q); /* EXEC_START written with 1 */
void vm_tlb_invalidate(struct sim_queue *q);

/* sim_fault.c: the fault queue, a ring in VRAM or the 1.0 slot. Lock held. */
void fault_reset_locked(struct sim_dev *dev);
/* Pages one kernel may have waiting for a reply: SIM_FAULT_DEPTH with the
 * ring on, 1 with the slot. */
unsigned fault_depth(struct sim_dev *dev);
bool fault_has_room(struct sim_dev *dev);
/* Queue @q's fault at @va for access @acc (ACC_*): true when it was queued
 * (vector 3 raised), false when the ring or the slot is full. */
bool fault_post(struct sim_queue *q, uint64_t va, uint32_t acc);
void fault_reply(struct sim_queue *q, uint32_t v); /* FAULT_REPLY_* for @q */
void fault_ring_ctrl(struct sim_dev *dev, uint32_t v); /* FAULT_RING_CTRL written */
void fault_ring_get(struct sim_dev *dev, uint32_t v); /* FAULT_GET written */

/* sim_core.c: the devices of sim_start() without their threads and sockets,
 * for the fuzz target (tests/fuzz/fuzz_sim_request.c), which drives
 * srv_handle_msg() itself. sim_stop() frees it. */
int sim_create_detached(const struct sim_opts *opts, struct sim **out);

/* sim_server.c (srv_handle_msg and sim_device_reset: sim_commands.c). */
int srv_start(struct sim_dev *dev);
/* The framing rules for a received header (m->hdr): sets m->len (body bytes
 * kept) and m->bad (EINVAL: size below a header; E2BIG: above VFU_MAX_MSG).
 * Returns how many bytes follow the header on the stream (kept or drained). */
size_t srv_msg_frame(struct sim_msg *m);
/* Run one received message: a client command (replied to through
 * srv_send), or a reply to one of our in-band requests. Server thread (or a
 * detached device's only thread). */
void srv_handle_msg(struct sim_dev *dev, struct sim_msg *m);
void srv_msg_free(struct sim_msg *m);
/* End the client's session: close its sockets, drop its DMA windows and irq
 * fds, forget VERSION. Server thread. */
void srv_disconnect(struct sim_dev *dev);
void srv_stop(struct sim_dev *dev); /* joins; dev->stop already set */
void srv_wake(struct sim_dev *dev);
/* Any thread: shut the client's sockets down (main and twin); the server
 * thread then sees EOF and disconnects it. */
void srv_shutdown_client(struct sim_dev *dev);
/* Server thread only: wait (bounded by @ms) until @pred holds, routing the
 * client's replies meanwhile. Returns 0 or -ETIMEDOUT. */
int srv_wait(struct sim_dev *dev, bool (*pred)(struct sim_dev *dev), unsigned ms);
/* Send one message: a reply, or (@request) our own request, which goes on the
 * twin socket when there is one; b1/b2 follow the header (either may be
 * empty). A failed send drops the client. Returns 0 or -errno. */
int srv_send(struct sim_dev *dev, bool request, struct vfu_hdr *hdr, const void *b1, size_t l1,
	     const void *b2, size_t l2, const int *fds, int nfds);
/* Reply to @m (nothing when it asked for no reply): a success with b1/b2
 * and @fds, or an error reply with @err. */
void srv_reply(struct sim_dev *dev, const struct sim_msg *m, const void *b1, size_t l1,
	       const void *b2, size_t l2, const int *fds, int nfds);
void srv_reply_err(struct sim_dev *dev, const struct sim_msg *m, int err);
/* A line on stderr naming the device. */
#define srv_log(dev, fmt, ...) \
	fprintf(stderr, "ugpu-sim[%u]: " fmt "\n", (dev)->id, ##__VA_ARGS__)

/* sim_dma.c. */
/* Engine threads: in-band DMA to the client. Lock not held. */
int srv_dma_inband(struct sim_dev *dev, uint64_t iova, void *buf, uint64_t len, bool write);
/* Server thread: hand the client's reply @m to the engine waiting for it
 * (the caller still frees @m). */
void srv_route_reply(struct sim_dev *dev, struct sim_msg *m);
/* Fail every in-band request still waiting with @err (the client went).
 * dev->lock held. */
void srv_pending_fail_all(struct sim_dev *dev, int err);
void srv_cmd_dma_map(struct sim_dev *dev, struct sim_msg *m);
void srv_cmd_dma_unmap(struct sim_dev *dev, struct sim_msg *m);

/* sim_commands.c. */
/* Point irq @index, vector @vec at eventfd @fd (-1: none, which also clears
 * its mask and pending bits), closing the old one. dev->lock held. */
void srv_irq_set_fd(struct sim_dev *dev, uint32_t index, uint32_t vec, int fd);
/* Server thread: the device state must change as for a reset (lock not held). */
int sim_device_reset(struct sim_dev *dev);

/* sim_fabric.c / sim_core.c */
struct sim_dev *fabric_peer(struct sim_dev *dev, uint32_t node);
bool fabric_is_slow(struct sim_dev *dev, uint32_t node);
/* Power helpers (sim_pci.c) used by the engines: lock held. */
bool sim_dev_running(struct sim_dev *dev); /* D0, not removed, not stopping */

/* sim_control.c */
struct sim_control;
int control_start(struct sim *sim, const char *path, struct sim_control **out);
void control_stop(struct sim_control *ctl);

#endif
