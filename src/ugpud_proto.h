/* SPDX-License-Identifier: MIT */
/*
 * The ugpud protocol: what the daemon (tools/ugpud/) and its clients
 * (src/remote.c, behind ugpu_device_open("ugpud:...")) say to each other over
 * a SOCK_SEQPACKET UNIX socket. One header shared by both ends, as
 * libvfio-user's include/vfio-user.h is. docs/daemon.md describes it in
 * prose; this file is the contract.
 *
 * Every record is one message: a struct ugpud_hdr, then @len bytes of body
 * (the record's length must be exactly sizeof(hdr) + @len). Requests carry
 * no fds (one that comes with fds is refused, the fds closed). A client
 * sends a request and waits for its reply (same @op and @seq); a reply
 * with @result < 0 is an error whose body, when present, is a one-line
 * message (NUL-terminated text) naming what was wrong.
 *
 * The first request must be UGPUD_HELLO with UGPUD_PROTO_VERSION; the
 * daemon refuses other versions with -EPROTONOSUPPORT (and says which it
 * speaks), and any other request before the hello with -EPROTO. A client the
 * policy refuses (SO_PEERCRED against --allow-user/--allow-group) gets one
 * unsolicited UGPUD_HELLO reply with -EACCES and is disconnected.
 *
 * All integers are in the host's byte order (a UNIX socket never leaves the
 * host); structs are laid out with explicit padding, checked below.
 */
#ifndef UGPU_SRC_UGPUD_PROTO_H
#define UGPU_SRC_UGPUD_PROTO_H

#include <stdint.h>

#define UGPUD_PROTO_VERSION 1u
#define UGPUD_MAGIC 0x64757067u /* "gpud" in memory on little-endian */

/* Most bytes of BO data one read or write carries (the client splits). */
#define UGPUD_MAX_DATA (64u << 10)
/* The longest record either side accepts: a header, the largest fixed
 * request or reply, and UGPUD_MAX_DATA. */
#define UGPUD_MAX_MSG (sizeof(struct ugpud_hdr) + 256u + UGPUD_MAX_DATA)
/* Longest error message in a reply, NUL included. */
#define UGPUD_MAX_ERRMSG 200u

enum ugpud_op {
	UGPUD_HELLO = 1, /* ugpud_hello_req -> ugpud_hello_rep */
	UGPUD_DEV_QUERY = 2, /* - -> ugpud_dev_info */
	UGPUD_MEM_STATS = 3, /* - -> ugpud_mem */
	UGPUD_BO_CREATE = 4, /* ugpud_bo_create_req -> ugpud_bo_create_rep (+ memfd) */
	UGPUD_BO_DESTROY = 5, /* ugpud_bo_req -> - */
	UGPUD_BO_READ = 6, /* ugpud_bo_req (offset, len) -> len bytes */
	UGPUD_BO_WRITE = 7, /* ugpud_bo_req (offset, len) + len bytes -> - */
	UGPUD_BO_QUERY = 8, /* ugpud_bo_req -> ugpud_bo_info */
	UGPUD_BO_PIN = 9, /* ugpud_bo_req -> - */
	UGPUD_BO_UNPIN = 10, /* ugpud_bo_req -> - */
	UGPUD_BO_MIGRATE = 11, /* ugpud_bo_req (arg = placement) -> - */
	UGPUD_CLIENTS = 12, /* - -> ugpud_clients_rep (admin) */
	UGPUD_KILL = 13, /* ugpud_kill_req -> - (admin) */
	UGPUD_BO_MAP = 14, /* ugpud_bo_req -> ugpud_bo_map_rep + the BO's memfd */
	UGPUD_BO_UNMAP = 15, /* ugpud_bo_req -> - */
	UGPUD_VM_CREATE = 16, /* ugpud_vm_create_req -> ugpud_handle_rep */
	UGPUD_VM_DESTROY = 17, /* ugpud_obj_req -> - */
	UGPUD_VM_BIND = 18, /* ugpud_vm_bind_req -> - */
	UGPUD_VM_UNBIND = 19, /* ugpud_vm_bind_req (bo, bo_offset, flags 0) -> - */
	UGPUD_VM_QUERY = 20, /* ugpud_obj_req -> ugpud_vm_info */
	UGPUD_QUEUE_CREATE = 21, /* ugpud_queue_create_req -> ugpud_handle_rep */
	UGPUD_QUEUE_DESTROY = 22, /* ugpud_obj_req -> - */
	UGPUD_SUBMIT = 23, /* ugpud_submit_req -> ugpud_fence_rep */
	UGPUD_FENCE_WAIT = 24, /* ugpud_fence_req -> ugpud_kernel_result, or -EAGAIN */
	UGPUD_QUEUE_QUERY = 25, /* ugpud_obj_req -> ugpud_queue_info */
	UGPUD_SESSION = 26, /* - -> ugpud_session_rep */
	UGPUD_RESUME = 27, /* ugpud_resume_req (instead of a hello) -> ugpud_hello_rep */
	UGPUD_DEVICE_PM = 28, /* ugpud_device_pm_req -> - (admin) */
	UGPUD_EVENT = 29, /* daemon -> client, unsolicited: ugpud_event (seq 0) */
	UGPUD_DEV_ACTIVITY = 30, /* - -> ugpud_dev_activity (the connection's device) */
	/* Shared virtual memory of a client (docs/daemon.md, "SVM for
	 * clients"): added to version 1 as the ops above were (an older
	 * daemon answers -EOPNOTSUPP). Numbered from 40 so that ops another
	 * change adds after 30 meanwhile do not collide on the wire. */
	UGPUD_SVM_VM_CREATE = 40, /* ugpud_svm_vm_create_req -> ugpud_handle_rep */
	UGPUD_SVM_FAULTS = 41, /* ugpud_obj_req (a mirror VM) -> n x ugpud_svm_fault */
	UGPUD_SVM_FAULT_DONE = 42, /* ugpud_svm_done_req + n x ugpud_svm_fault -> - */
	UGPUD_SVM_MAP = 43, /* ugpud_svm_map_req -> - */
	UGPUD_SVM_UNMAP = 44, /* ugpud_svm_map_req (vm, bo) -> - */
	/* Added to version 1 likewise (an older daemon: -EOPNOTSUPP). */
	UGPUD_FENCE_EVENTFD = 45, /* ugpud_fence_req (timeout_ms 0) -> - + an eventfd */
	UGPUD_OP_MAX
};

/*
 * struct ugpud_hdr - every record starts with it.
 * @magic: UGPUD_MAGIC.
 * @op: enum ugpud_op.
 * @flags: 0 (reserved).
 * @seq: chosen by the client, echoed in the reply.
 * @result: replies: 0 or a negative errno; requests: 0.
 * @len: bytes of body after the header.
 */
struct ugpud_hdr {
	uint32_t magic;
	uint16_t op;
	uint16_t flags;
	uint32_t seq;
	int32_t result;
	uint32_t len;
	uint32_t pad;
};

/*
 * struct ugpud_hello_req - the first request.
 * @version: UGPUD_PROTO_VERSION as the client speaks it.
 * @device: which of the daemon's devices this connection uses (its index in
 *          the order of ugpud's --device options).
 * @name: the client program's name, for ugpuctl (need not be terminated).
 */
struct ugpud_hello_req {
	uint32_t version;
	uint32_t device;
	char name[32];
};

/* struct ugpud_dev_info - ugpu_device_info on the wire. */
struct ugpud_dev_info {
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
	uint32_t power_state;
};

/*
 * struct ugpud_hello_rep - the daemon's answer to a hello.
 * @version: the protocol version the daemon speaks.
 * @client_id: this connection's id (ugpuctl clients / kill).
 * @devices: how many devices the daemon serves.
 * @vram_quota: bytes of VRAM-capable BOs this client may hold (0: no quota).
 * @info: the device the connection uses.
 */
struct ugpud_hello_rep {
	uint32_t version;
	uint32_t client_id;
	uint32_t devices;
	/* RESUME: how many of the session's mapped BOs the restarted daemon
	 * could not keep on the memory the client maps (restored as copies:
	 * their requests but UNMAP, QUERY and DESTROY are -ESTALE until an
	 * UNMAP); 0 in a HELLO reply */
	uint32_t maps_detached;
	uint64_t vram_quota;
	struct ugpud_dev_info info;
};

/*
 * struct ugpud_dev_activity - what the connection's device is doing, for
 * `ugpuctl status --daemon`: @vms and @queues the clients of the device hold
 * (a queue runs on the device's exec queues, round-robin); SVM's counters
 * (faults served, ranges moved into VRAM at any size, CPU faults that
 * brought ranges back, VRAM held by ranges). Counters the device does not
 * have read 0.
 */
struct ugpud_dev_activity {
	uint32_t vms;
	uint32_t queues;
	uint64_t svm_faults;
	uint64_t svm_migrations;
	uint64_t svm_cpu_faults;
	uint64_t svm_vram_bytes;
};

/* struct ugpud_mem - ugpu_device_mem on the wire, field for field after
 * @size, plus the connection's own use. */
struct ugpud_mem {
	uint64_t vram_size, vram_used, vram_free, vram_kernel, vram_bos, system_bytes,
		backup_bytes, bos, bos_vram, bos_system, bos_lost, evictions, evicted_bytes,
		moves, moved_bytes, copy_failures;
	uint64_t client_bos; /* BOs this connection holds */
	uint64_t client_bytes; /* their bytes */
	uint64_t client_vram_charged; /* bytes counted against its VRAM quota */
	uint64_t client_vram_quota; /* 0: none */
};

/*
 * struct ugpud_bo_create_req - ugpu_bo_opts on the wire.
 * @want: UGPUD_CREATE_FD or 0 (a daemon before it ignored the field, which
 *        was padding: no fd then).
 */
struct ugpud_bo_create_req {
	uint64_t bytes;
	uint32_t placements[2];
	uint32_t flags;
	uint32_t want;
	char name[32];
};

/* Answer with the new BO's memfd when it was made in system memory, held
 * there as UGPUD_BO_MAP holds it (the same fd, sealed the same way;
 * UGPUD_BO_UNMAP lets go): the client maps it without another request. */
#define UGPUD_CREATE_FD 1u

/*
 * struct ugpud_bo_create_rep - the new BO's handle (per connection).
 * @got: UGPUD_CREATE_FD when the reply brings the BO's memfd (as
 *       UGPUD_BO_MAP's would: the BO is mapped for the daemon), else 0.
 */
struct ugpud_bo_create_rep {
	uint32_t handle;
	uint32_t got;
	uint64_t bytes;
};

/*
 * struct ugpud_bo_req - a request about one BO.
 * @handle: from UGPUD_BO_CREATE on this connection.
 * @arg: UGPUD_BO_MIGRATE: the placement; else 0.
 * @offset, @len: UGPUD_BO_READ / UGPUD_BO_WRITE: the range (@len <=
 *                UGPUD_MAX_DATA); else 0.
 */
struct ugpud_bo_req {
	uint32_t handle;
	uint32_t arg;
	uint64_t offset;
	uint64_t len;
};

/*
 * struct ugpud_bo_map_rep - UGPUD_BO_MAP's answer, with one fd: the BO's
 * system memory (the daemon moved it there and holds it there until
 * UGPUD_BO_UNMAP or the BO's end), sealed against shrink, grow and new seals.
 * @size: bytes to map (the BO's size).
 */
struct ugpud_bo_map_rep {
	uint64_t size;
};

/* struct ugpud_bo_info - ugpu_bo_info on the wire. */
struct ugpud_bo_info {
	uint64_t bytes;
	uint64_t vram_offset;
	uint32_t placement;
	uint32_t flags;
	uint32_t pin_count;
	uint32_t discarded;
	uint32_t corrupt;
	uint8_t cpu_mapped;
	uint8_t lost;
	uint8_t has_backup;
	uint8_t pad;
};

/*
 * GPU VMs and queues. Their handles share the connection's table with its
 * BOs: a handle of one kind given where another is expected is -ENOENT, as
 * an unknown one is.
 */
struct ugpud_obj_req {
	uint32_t handle;
	uint32_t pad;
};

/* @got: UGPUD_SVM_VM_CREATE: UGPUD_SVM_FAULT_FD when the reply brings the
 * VM's fault eventfd; else 0. */
struct ugpud_handle_rep {
	uint32_t handle;
	uint32_t got;
};

/* Answer UGPUD_SVM_VM_CREATE with an eventfd that is readable while the
 * VM has faults the client has not fetched (a duplicate of the daemon's:
 * poll it, never read or write it), so the client serves them when they
 * come rather than only inside a fence wait. */
#define UGPUD_SVM_FAULT_FD 1u

/* @flags: UGPU_VM_* (UGPU_VM_MIRROR is not served: -EOPNOTSUPP). */
struct ugpud_vm_create_req {
	uint32_t flags;
	uint32_t pad;
	char name[32];
};

/* UGPUD_SVM_VM_CREATE: a mirror VM (UGPU_VM_MIRROR in @flags) whose GPU
 * faults inside [@mirror_start, +@mirror_size) are kept for the client
 * (UGPUD_SVM_FAULTS), which serves them from its own memory. @want:
 * UGPUD_SVM_FAULT_FD or 0 (padding before it: a daemon before it sends
 * nothing). */
struct ugpud_svm_vm_create_req {
	uint32_t flags;
	uint32_t want;
	char name[32];
	uint64_t mirror_start;
	uint64_t mirror_size;
};

/*
 * struct ugpud_svm_fault - one GPU fault of a client's mirror VM.
 * UGPUD_SVM_FAULTS hands the pending ones over (at most UGPUD_SVM_MAX_FAULTS,
 * each once); UGPUD_SVM_FAULT_DONE answers them (@status: 0, the kernel
 * tries again; -EFAULT / -EACCES, it is aborted), @slot and @launch
 * echoed: an answer the daemon did not hand over is -ENOENT.
 */
struct ugpud_svm_fault {
	uint64_t va;
	uint32_t access; /* enum ugpu_access */
	uint32_t slot;
	uint32_t launch;
	int32_t status;
};
#define UGPUD_SVM_MAX_FAULTS 256u

struct ugpud_svm_done_req {
	uint32_t vm;
	uint32_t n;
};

/* UGPUD_SVM_MAP: @bo (the client's, @bytes long) moves to VRAM and maps
 * [@va, +@bytes) of mirror VM @vm (writable when @flags has
 * UGPUD_SVM_WRITABLE); a BO holds one such map, which follows it if it is
 * evicted. UGPUD_SVM_UNMAP: the maps of BOs inside [@va, +@bytes) of @vm
 * go (@bo and @flags 0); the reply (ugpud_handle_rep) counts them. */
struct ugpud_svm_map_req {
	uint32_t vm;
	uint32_t bo;
	uint64_t va;
	uint64_t bytes;
	uint32_t flags;
	uint32_t pad;
};
#define UGPUD_SVM_WRITABLE (1u << 0)

/* UGPUD_VM_BIND: @bo's [@bo_offset, +@bytes) at @va of @vm with @flags
 * (UGPU_BIND_*); UGPUD_VM_UNBIND: [@va, +@bytes) of @vm (@bo, @bo_offset and
 * @flags 0). */
struct ugpud_vm_bind_req {
	uint32_t vm;
	uint32_t bo;
	uint64_t bo_offset;
	uint64_t va;
	uint64_t bytes;
	uint32_t flags;
	uint32_t pad;
};

/* ugpu_vm_info on the wire. */
struct ugpud_vm_info {
	uint64_t binds, bound_bytes, page_tables, page_table_bytes, pt_gen;
	uint32_t flags;
	uint32_t queues;
	uint8_t dead;
	uint8_t pad[7];
};

struct ugpud_queue_create_req {
	uint32_t vm;
	uint32_t pad;
	char name[32];
};

/* ugpu_kernel on the wire, for queue @queue. */
struct ugpud_submit_req {
	uint32_t queue;
	uint32_t op;
	uint64_t va;
	uint64_t bytes;
	uint64_t value;
};

struct ugpud_fence_rep {
	uint64_t fence;
};

/* UGPUD_FENCE_WAIT: wait for @fence of @queue, at most @timeout_ms, and at
 * most UGPUD_WAIT_SLICE_MS in one request: -EAGAIN when it has not
 * completed by then (the client asks again until its own timeout). The
 * daemon's loop does not block: it watches the fence's eventfd through
 * io_uring and answers when it fires or the slice ends. */
struct ugpud_fence_req {
	uint32_t queue;
	uint32_t timeout_ms;
	uint64_t fence;
};

/* UGPUD_FENCE_EVENTFD: the reply brings an eventfd that becomes readable
 * when @fence of @queue completes (at once if it has): the daemon's own
 * ugpu_fence_eventfd() on its queue, handed over (it signals that fence
 * and reaches nothing else). @timeout_ms must be 0. */

/* The longest one UGPUD_FENCE_WAIT waits: also how long the daemon may take
 * to notice that a client that waits has gone. */
#define UGPUD_WAIT_SLICE_MS 100u

/* ugpu_kernel_result on the wire. */
struct ugpud_kernel_result {
	int32_t status;
	uint32_t fault_access;
	uint64_t sum;
	uint64_t fault_va;
	uint64_t run_ns;
};

/* ugpu_queue_info on the wire. */
struct ugpud_queue_info {
	uint64_t submitted, completed;
	uint32_t waiting;
	uint8_t running;
	uint8_t pad[3];
};

/* struct ugpud_client_info - one line of UGPUD_CLIENTS. */
struct ugpud_client_info {
	uint32_t id;
	uint32_t pid;
	uint32_t uid;
	uint32_t gid;
	uint32_t device;
	uint32_t bos;
	uint64_t bytes;
	uint64_t vram_charged;
	uint64_t requests;
	char name[32];
};

#define UGPUD_MAX_CLIENT_INFO 256u

/* struct ugpud_clients_rep - the connected clients (the first @count of
 * them, at most UGPUD_MAX_CLIENT_INFO; @total says how many there are). */
struct ugpud_clients_rep {
	uint32_t count;
	uint32_t total;
	struct ugpud_client_info c[];
};

/* struct ugpud_kill_req - disconnect client @id and release all it holds. */
struct ugpud_kill_req {
	uint32_t id;
	uint32_t pad;
};

/*
 * Sessions across a daemon restart (docs/daemon.md, "Restart").
 * UGPUD_SESSION (after the hello) gives the connection's session token (0:
 * the daemon keeps nothing over a restart, it runs without --fd-store). A
 * daemon restarted with its fd store (systemd's FDSTORE) keeps the sessions
 * it had: a client whose connection broke connects again and sends
 * UGPUD_RESUME with the token as its first request instead of a hello; its
 * BOs are back under the same handles (VMs and queues are not: -ENOENT).
 * -ENOENT: no such session (never persisted, or not resumed in time);
 * -EACCES: the session belongs to another uid; -EPROTONOSUPPORT: version.
 */
struct ugpud_session_rep {
	uint64_t token;
};

struct ugpud_resume_req {
	uint32_t version;
	uint32_t device;
	uint64_t token;
	char name[32];
};

/*
 * Host suspend and removal, for all clients of a device (docs/daemon.md,
 * "Power and removal"). UGPUD_DEVICE_PM (root or ugpud's own user) runs one
 * step of a host-suspend cycle, or an orderly removal, on device @device as
 * ugpu_device_suspend_prepare() / _suspend() / _resume() /
 * _suspend_cancel() / ugpu_device_unplug() do: the same results. The daemon
 * tells every client of the device with a UGPUD_EVENT record; while the
 * device is suspended, requests that need it are -EAGAIN ("device N is
 * host-suspended"); after a removal the BOs live on in system memory and
 * what needs VRAM is -ENODEV, as in one process.
 */
enum ugpud_pm_action {
	UGPUD_PM_PREPARE = 1,
	UGPUD_PM_SUSPEND = 2,
	UGPUD_PM_RESUME = 3,
	UGPUD_PM_CANCEL = 4,
	UGPUD_PM_UNPLUG = 5,
};

struct ugpud_device_pm_req {
	uint32_t action;
	uint32_t device;
};

enum ugpud_event_kind {
	UGPUD_EV_SUSPENDING = 1, /* prepared: a suspend follows */
	UGPUD_EV_SUSPENDED = 2, /* powered off: requests that need it are -EAGAIN */
	UGPUD_EV_RESUMED = 3, /* back (after a resume, or a cancel) */
	UGPUD_EV_REMOVED = 4, /* removed: @arg is ugpu_unplug_kind, @status its status */
	UGPUD_EV_STOPPING = 5, /* the daemon stops (SIGTERM): no session survives it */
};

/* An event about the connection's device. A client reads events with the
 * replies it waits for (they come with seq 0 and never answer a request). */
struct ugpud_event {
	uint32_t kind;
	uint32_t device;
	uint32_t arg;
	int32_t status;
};

_Static_assert(sizeof(struct ugpud_event) == 16, "ugpud_event layout");
_Static_assert(sizeof(struct ugpud_resume_req) == 48, "ugpud_resume_req layout");
_Static_assert(sizeof(struct ugpud_hdr) == 24, "ugpud_hdr layout");
_Static_assert(sizeof(struct ugpud_hello_req) == 40, "ugpud_hello_req layout");
_Static_assert(sizeof(struct ugpud_dev_info) == 208, "ugpud_dev_info layout");
_Static_assert(sizeof(struct ugpud_hello_rep) == 232, "ugpud_hello_rep layout");
_Static_assert(sizeof(struct ugpud_bo_create_req) == 56, "ugpud_bo_create_req layout");
_Static_assert(sizeof(struct ugpud_bo_req) == 24, "ugpud_bo_req layout");
_Static_assert(sizeof(struct ugpud_bo_info) == 40, "ugpud_bo_info layout");
_Static_assert(sizeof(struct ugpud_client_info) == 80, "ugpud_client_info layout");
_Static_assert(sizeof(struct ugpud_vm_bind_req) == 40, "ugpud_vm_bind_req layout");
_Static_assert(sizeof(struct ugpud_vm_info) == 56, "ugpud_vm_info layout");
_Static_assert(sizeof(struct ugpud_submit_req) == 32, "ugpud_submit_req layout");
_Static_assert(sizeof(struct ugpud_kernel_result) == 32, "ugpud_kernel_result layout");
_Static_assert(sizeof(struct ugpud_queue_info) == 24, "ugpud_queue_info layout");
_Static_assert(sizeof(struct ugpud_clients_rep) + UGPUD_MAX_CLIENT_INFO *
		       sizeof(struct ugpud_client_info) <= UGPUD_MAX_DATA,
	       "the clients list fits a record");

#endif
