/* SPDX-License-Identifier: MIT */
/*
 * ugpud: one process owns the node's devices and serves client processes
 * over a SOCK_SEQPACKET UNIX socket (docs/daemon.md). Its parts:
 *   main.c    options, devices, the listening socket, systemd's protocols
 *   notify.c  sd_notify (READY/STATUS/WATCHDOG) and socket activation
 *             (LISTEN_FDS), written here: no libsystemd needed
 *   loop.c    the io_uring event loop: accepts, reads requests, sends replies
 *   client.c  a client's life: SO_PEERCRED policy, handles, release
 *   serve.c   one request -> one reply, no I/O (what tests/fuzz drives)
 *   svm.c     clients' mirror VMs: their GPU faults kept for them, their
 *             ranges' staging BOs mapped (docs/daemon.md, "SVM for clients")
 *   persist.c restart without losing client data: the BO table and the
 *             memory behind it kept in systemd's fd store, read back
 *   sleep.c   --logind: host sleep suspends every device (the notifier's
 *             thread asks, the loop does it)
 *   metrics.c the Prometheus endpoint (its own thread; the clients'
 *             figures copied by the loop on request)
 *
 * Threading: one loop thread owns struct ugpud, every struct client and
 * their handle tables: only it touches them (libugpu runs its own threads
 * under the devices, behind its API), no lock is taken for them. Slow
 * requests (struct ugpud_job) run on worker threads that see the job alone,
 * handed over under the pool's lock (loop.c); the removal callback, on
 * libugpu's thread, only sets atomics in struct ugpud_dev and writes an
 * eventfd.
 */
#ifndef UGPU_TOOLS_UGPUD_H
#define UGPU_TOOLS_UGPUD_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <ugpu/bo.h>
#include <ugpu/device.h>
#include <ugpu/vm.h>

#include "base/list.h"
#include "mm/bo.h"
#include "mm/vram.h"
#include "base/sock.h"
#include "src/ugpud_proto.h"

#define UGPUD_MAX_DEVICES 16
/* BOs a client's pool keeps at most (struct client, @pool), each of at most
 * BO_RECYCLE_MAX bytes: 16 MiB of system memory per client. */
#define UGPUD_POOL_MAX 16
#define UGPUD_MAX_ALLOW 16
/* worker threads for slow requests (--workers) */
#define UGPUD_MAX_WORKERS 16
/* Handles: (generation << 16) | (slot + 1); so at most 65535 BOs a client. */
#define UGPUD_HANDLE_SLOTS 65535u

struct sim;
struct fwd_vm;

/* One device the daemon owns. @sim: the embedded reference device behind
 * it ("sim" URIs), or NULL. @suspended: host-suspended by UGPUD_DEVICE_PM
 * (requests that need the device are -EAGAIN). @pm_busy: an administrator's
 * UGPUD_DEVICE_PM step runs on a worker (loop thread only; requests that
 * need the device are -EAGAIN meanwhile, another step -EBUSY). @removed: set by the removal
 * callback (libugpu's removal thread: atomic, then d->ev_fd is written),
 * with @removed_kind/@removed_status; @removal_told: the loop told the
 * clients (loop thread only). */
struct ugpud_dev {
	char uri[128];
	struct ugpu_device *dev;
	struct sim *sim;
	bool suspended;
	bool pm_busy;
	int removed;
	int removed_kind;
	int removed_status;
	bool removal_told;
	/* suspended by the daemon for a host sleep (logind), to be resumed at
	 * the wake; loop thread only */
	bool sleep_ours;
	/* its VRAM's frees are held back for the restart table (persist.c;
	 * mm/vram.h); loop thread only */
	bool vram_held;
};

/* What a handle names. */
enum slot_kind { SLOT_FREE = 0, SLOT_BO, SLOT_VM, SLOT_QUEUE };

/* One object of a client: @gen is the generation its handle carries (a
 * stale handle of a freed slot finds another generation: -ENOENT). BOs,
 * VMs and queues share the table; @kind says which pointer is used. */
struct ugpud_slot {
	enum slot_kind kind;
	struct ugpu_bo *bo;
	struct ugpu_vm *vm;
	struct ugpu_queue *q;
	uint16_t gen;
	uint64_t bytes;
	uint64_t vram_charge; /* counted against the VRAM quota */
	bool mapped; /* the client has its memfd: the BO is held in system memory */
	/* restored by a restart as a copy, its memfd (the client's mapping)
	 * not adopted: the mapping no longer reaches the BO, and every request
	 * on it but UNMAP, QUERY and DESTROY is -ESTALE until the UNMAP */
	bool map_detached;
	/* SLOT_VM: a mirror VM's forwarded faults (svm.c), or NULL. SLOT_BO:
	 * a range's staging BO mapped at [@svm_va, +@svm_bytes) of mirror VM
	 * @svm_vm, or @svm_vm NULL. */
	struct fwd_vm *fwd;
	struct ugpu_vm *svm_vm;
	uint64_t svm_va, svm_bytes;
	/* what a restarted daemon needs to make the BO again (persist.c) */
	uint32_t placements[2];
	uint32_t flags;
	uint32_t pins; /* pins of this client, each undone by an unpin */
	/* the backing as persist.c last recorded it: @persist_gen the BO's
	 * backing generation then (UINT64_MAX: never recorded), @where its
	 * placement, @ext/@next its VRAM extents (@ext_cap room), @store_name
	 * the fd store's name of its system memfd ("" when none) */
	uint64_t persist_gen;
	uint32_t where;
	struct bo_extent *ext;
	size_t next, ext_cap;
	char store_name[64];
};

/*
 * struct ugpud_job - a request served on a worker thread (loop.c) so that it
 * does not hold up the loop: BO_MIGRATE and BO_PIN, which may copy the
 * whole BO, BO_MAP of a BO in VRAM (the worker moves it to system memory,
 * serve_job_done() exports it), and DEVICE_PM, whose prepare may wait 5 s for kernels (@dev,
 * @handle the device's index, @arg the action). serve.c fills it on the
 * loop thread (with a BO reference of its own), a worker runs job_run()
 * (libugpu only, nothing of the daemon's state), and serve_job_done()
 * answers on the loop thread (and tells the clients). Handed over
 * under the pool's lock in both directions (loop.c), so each side sees the
 * other's writes.
 */
/* VRAM_CALL()'s count of one request's calls: made, and refused with the
 * table then not stored. */
struct vram_tries {
	unsigned int calls, unstored;
};

struct ugpud_job {
	uint16_t op;
	uint32_t seq;
	uint32_t handle;
	uint32_t arg;
	struct ugpu_bo *bo;
	struct ugpu_device *dev;
	int result;
	struct vram_tries tries; /* vram_retry() */
	struct client *c;
	struct ugpud_job *next; /* the pool's queues */
};

/* What loop.c keeps per client for io_uring (opaque to serve.c). */
struct client_io;

/*
 * struct client - one connection.
 * @id: unique in this daemon's life (ugpuctl clients / kill).
 * @pid, @uid, @gid: SO_PEERCRED at accept.
 * @device: the device chosen at hello (valid when @hello).
 * @slots: the handle table, @nslots entries (grown by doubling); @nobjs
 *         used, @nbos of them BOs.
 * @bytes, @vram_charged: what its BOs hold; @requests served.
 * @admin: may list and kill clients (root, or the daemon's own user).
 */
struct client {
	struct list_link link; /* ugpud.clients */
	uint32_t id;
	int fd;
	pid_t pid;
	uid_t uid;
	gid_t gid;
	char name[32];
	bool hello;
	bool admin;
	uint32_t device;
	struct ugpud_slot *slots;
	uint32_t nslots;
	uint32_t nobjs;
	uint32_t nbos;
	uint64_t bytes;
	uint64_t vram_charged;
	uint64_t requests;
	struct client_io *io;
	/* A UGPUD_FENCE_WAIT that waits (serve_request() returned 0): the
	 * fence's eventfd, watched by the loop for @wait_ms at most, then
	 * serve_wait_done() answers. @wait_fd -1 when none. */
	int wait_fd;
	uint32_t wait_ms;
	uint16_t wait_op;
	uint32_t wait_seq;
	uint32_t wait_queue;
	uint64_t wait_fence;
	/* the session's token (UGPUD_SESSION / UGPUD_RESUME): nonzero, random */
	uint64_t token;
	/* a request on a worker (serve_request() returned 0, @job_busy) */
	struct ugpud_job job;
	bool job_busy;
	/* loop.c, loop thread: a request (@parked_len bytes in its receive
	 * buffer, @parked_nfds fds came with it) or the client's drop
	 * (@drop_why) waits for its device's power step (serve_must_wait()) */
	bool parked;
	size_t parked_len;
	int parked_nfds;
	const char *drop_why;
	/* BOs it destroyed, kept for its next creates of the same shape
	 * (client_pool_take(); docs/daemon.md, "Costs": the per-client pool): only
	 * this client's, so memory it may still reach (a mapping it kept)
	 * never goes to another; @releasing: its objects are being released,
	 * nothing is kept. Loop thread. */
	struct pooled_bo {
		struct ugpu_bo *bo;
		uint64_t bytes; /* as asked at create */
		uint32_t placements[2];
		uint32_t flags;
	} pool[UGPUD_POOL_MAX];
	unsigned int npool;
	bool releasing;
};

/*
 * struct ugpud - the daemon.
 * @allow_uid/@allow_gid: who may connect besides root and the daemon's own
 *        user (SO_PEERCRED uid; primary or supplementary group).
 * @vram_quota: bytes of VRAM-capable BOs one client may hold; 0: none.
 * @max_clients: clients at once; @max_bos: objects (BOs, VMs, queues) one
 *        client may hold.
 * @kill: disconnect @victim (serve.c's UGPUD_KILL); loop.c's shuts its
 *        socket down so the loop releases it like any client that went.
 */
struct ugpud {
	struct ugpu_context *ctx;
	struct ugpud_dev devs[UGPUD_MAX_DEVICES];
	unsigned int ndevs;
	struct list_link clients;
	unsigned int nclients;
	uint32_t next_id;
	uid_t self_uid;
	uid_t allow_uid[UGPUD_MAX_ALLOW];
	unsigned int n_allow_uid;
	gid_t allow_gid[UGPUD_MAX_ALLOW];
	unsigned int n_allow_gid;
	uint64_t vram_quota;
	unsigned int max_clients;
	unsigned int max_bos;
	void (*kill)(struct ugpud *d, struct client *victim);
	/* hand @c->job to a worker (loop.c; NULL: slow requests are served
	 * inline, as the fuzz target does) */
	void (*offload)(struct ugpud *d, struct client *c);
	/* run the loop's part of finished jobs until device @device's power
	 * step (ugpud_dev.pm_busy) is done (loop.c; NULL: none runs) */
	void (*pm_wait)(struct ugpud *d, uint32_t device);
	unsigned int workers; /* --workers: 0 serves everything on the loop */
	/* tell every client of device @ev->device (loop.c; NULL: nobody) */
	void (*event)(struct ugpud *d, const struct ugpud_event *ev);
	/* written by the removal callback to wake the loop (eventfd), or -1 */
	int ev_fd;
	uint64_t events_sent, events_dropped;
	/*
	 * Restart (persist.c). @fd_store: --fd-store, persistence on. @boot:
	 * this daemon's boot number (1 + the restored table's). @table_name:
	 * the table in the store now ("" none), @table_seq its number.
	 * @persist_dirty: something the table records changed. @drop_names,
	 * @ndrop: store names to remove once the next table is stored.
	 * @detached: sessions restored from the table and not resumed yet
	 * (struct client without a socket, io NULL), @ndetached of them,
	 * released at @detached_deadline_ms (now_ms()). @resume_timeout_ms:
	 * --resume-timeout.
	 */
	bool fd_store;
	uint32_t boot;
	uint64_t table_seq;
	char table_name[64];
	bool persist_dirty;
	/* a BO's system memfd could not be stored in this walk: its table is
	 * not written (persist.c slot_sync()) */
	bool persist_store_failed;
	uint64_t persist_unstored_ms; /* when that last happened (0: the last walk stored) */
	/* a BO wanted VRAM held back for the table (mm/vram.h's @want, from
	 * any thread: atomic; the loop writes a table) */
	int vram_wanted;
	/*
	 * @vram_retry (persist.c; NULL without --fd-store): @ret came from a
	 * call that may place a BO in VRAM, made inside vram_refusing() while
	 * @t->calls is under VRAM_RETRIES (VRAM_CALL()). When it is -ERESTART
	 * (VRAM held back for the table, mm/vram.h strict mode), the table is
	 * written now (which gives that VRAM back) and true returned: make the
	 * call again. Past VRAM_RETRIES calls, or with the device in a power
	 * step (its BOs are not walked then), the next call is not refused
	 * and takes the held VRAM (logged). A table that cannot be stored
	 * keeps the held VRAM (a BO's only restorable bytes): after
	 * VRAM_UNSTORED such refusals false is returned and the call fails
	 * (VRAM_CALL() makes it -EAGAIN). Loop thread.
	 */
	bool (*vram_retry)(struct ugpud *d, int ret, struct vram_tries *t);
	/* test builds: $UGPUD_TEST_CREATE_DELAY names a file; while it
	 * exists, each BO or VM create sleeps the milliseconds it holds
	 * before the create's table (test_ugpud_restart kills there) */
	const char *test_create_delay;
	/* test builds: $UGPUD_TEST_WINDOW names a file a line is appended to
	 * after each request that left VRAM held for the table given to an
	 * allocation (mm/vram.h's @want told, no table since: a kill now
	 * could read a moved BO from another's bytes) */
	const char *test_window;
	uint64_t persist_moves, persist_walk_ms; /* persist_sync()'s last walk */
	char (*drop_names)[64];
	size_t ndrop, drop_cap;
	uint32_t sys_names;
	struct list_link detached;
	unsigned int ndetached;
	uint64_t resume_timeout_ms;
	uint64_t detached_deadline_ms;
	/* host sleep from logind (sleep.c, --logind), or NULL */
	struct ugpud_sleep *sleep;
	/* the Prometheus endpoint (metrics.c), or NULL: the loop answers its
	 * requests for a copy of the clients (metrics_publish()) */
	struct metrics *metrics;
	/* counters */
	uint64_t accepted;
	uint64_t refused;
	uint64_t released_bos;
};

/* client.c */

/*
 * client_policy() - may the peer with @cred (and supplementary groups
 * @groups, @ngroups of them) connect? Writes the reason into @why when not.
 */
bool client_policy(const struct ugpud *d, const struct ucred *cred, const gid_t *groups,
		   int ngroups, char *why, size_t n);
/* A new client (not linked, no fd yet). NULL: out of memory. */
struct client *client_new(struct ugpud *d, int fd, const struct ucred *cred);
/* Free a client made by client_new() (after client_release(), unlinked):
 * from the driver's heap, so callers built without it (the fuzz target)
 * free it here. */
void client_free(struct client *c);
/* Put every BO @c holds; its handles are gone. */
void client_release(struct ugpud *d, struct client *c);
/* Find @c's object @handle of @kind: NULL when it has none by that handle
 * (or it names another kind). */
struct ugpud_slot *client_slot(struct client *c, uint32_t handle, enum slot_kind kind);
/* Take a free slot for an object of @kind, which the caller fills in:
 * the slot and its handle, or NULL with -EMFILE (max_bos) or -ENOMEM. */
struct ugpud_slot *client_slot_new(struct ugpud *d, struct client *c, enum slot_kind kind,
				   uint32_t *handle, int *err);
/* A BO for a new slot, with its accounting. */
int client_slot_add(struct ugpud *d, struct client *c, struct ugpu_bo *bo, uint64_t bytes,
		    uint64_t vram_charge, uint32_t *handle);
/* A BO from @c's pool for a create of @bytes with @placements and @flags,
 * zeroed and named @name (bo_recycle()), or NULL when the pool has none. */
struct ugpu_bo *client_pool_take(struct client *c, uint64_t bytes, const uint32_t placements[2],
				 uint32_t flags, const char *name);
/* Let go of @slot's object (put the BO — or keep it in @c's pool —, destroy
 * the VM or queue) and free the slot. Returns what the destroy returned: -EBUSY for a VM that still
 * has queues (the slot stays then). */
int client_slot_drop(struct ugpud *d, struct client *c, struct ugpud_slot *slot);
struct client *client_find(struct ugpud *d, uint32_t id);
/* @s's system memfd is no longer recorded: its store name goes once the next
 * table is stored; the table changed. */
void client_forget_store(struct ugpud *d, struct ugpud_slot *s);
/* Take over the detached session with @token (a restarted daemon's, see
 * persist.c) into the new connection @c: its id, device, BOs and handles.
 * Returns 0; -ENOENT (no such session); -EACCES (another uid's). */
int client_resume(struct ugpud *d, struct client *c, uint64_t token);

/* serve.c */

/*
 * serve_request() - answer one record @msg (@len bytes as received) of @c.
 * @oversized: the record was longer than UGPUD_MAX_MSG (@len is its real
 *             length; only the first UGPUD_MAX_MSG bytes are in @msg).
 * @nfds: fds that came with it (already closed by the caller).
 * @rep: room for UGPUD_MAX_MSG bytes: gets the reply record.
 * @rep_fd: gets an fd to send with the reply (UGPUD_BO_MAP), which the
 *          caller closes once sent; else -1.
 * Returns: the reply's length (every request gets one), or 0 when the
 * answer waits: for a fence (@c->wait_fd is then set and the caller calls
 * serve_wait_done() once it is readable or @c->wait_ms have passed), or
 * for a worker (@c->job_busy: d->offload() has the job; serve_job_done()
 * answers).
 */
size_t serve_request(struct ugpud *d, struct client *c, const void *msg, size_t len,
		     bool oversized, int nfds, void *rep, int *rep_fd);

/* A worker's part of a job: the library call. */
void job_run(struct ugpud_job *job);
/* A request of @len bytes of @c that must wait until its device's power
 * step is done (the loop keeps it, and its next ones, until then): one that
 * would call into the device, whose step holds its locks (an eviction
 * holds the BO manager's lock through each move; the loop would wait with
 * every client of every device). What needs the device awake is answered
 * -EAGAIN instead, at once (serve_request()). */
bool serve_must_wait(struct ugpud *d, const struct client *c, const void *msg, size_t len);

/* The answer to @c's finished job into @rep (its length); *@rep_fd: an fd
 * to send with it (BO_MAP), else left alone (the caller's -1). */
size_t serve_job_done(struct ugpud *d, struct client *c, void *rep, int *rep_fd);

/* The answer to @c's waiting UGPUD_FENCE_WAIT into @rep (its length); closes
 * @c->wait_fd. */
size_t serve_wait_done(struct ugpud *d, struct client *c, void *rep);

/* An error record (UGPUD_HELLO seq 0 when @op is 0) with a message, into
 * @rep; its length. Used for refusals at accept too. */
size_t serve_error(void *rep, uint16_t op, uint32_t seq, int err, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* The reply header for @op/@seq with @result and @body bytes after it,
 * into @rep; the record's length. */
size_t serve_reply(void *rep, uint16_t op, uint32_t seq, int result, size_t body);

/* svm.c: clients' mirror VMs (docs/daemon.md, "SVM for clients"). Loop
 * thread, as serve.c. */

/* A client's mirror VM (@o has UGPU_VM_MIRROR) whose faults wait for the
 * client; *@fwd gets their state (svm_fwd_free() after the VM's destroy).
 * Returns: as ugpu_vm_create(); -ENOMEM; -EMFILE (no eventfd). */
int svm_vm_create(struct ugpu_device *dev, const struct ugpu_vm_opts *o, struct ugpu_vm **vm,
		  struct fwd_vm **fwd);
/* UGPUD_SVM_FAULTS .. UGPUD_SVM_UNMAP of @c: the reply's length. */
size_t svm_serve(struct ugpud *d, struct client *c, const struct ugpud_hdr *h, const void *body,
		 void *rep);
/* @s of @c is about to be dropped: a BO's map goes (its PTEs), or a
 * mirror VM's maps all go. */
void svm_slot_drop(struct client *c, struct ugpud_slot *s);
/* Around ugpu_queue_destroy(@q): with @open NULL, a mirror VM's faults
 * kept are answered -EFAULT and new ones too (their kernels end, so the
 * destroy does not wait on a client that may be gone); returns the VM's
 * state (NULL for another VM), to pass back as @open after the destroy. */
struct fwd_vm *svm_queue_closing(struct ugpu_queue *q, struct fwd_vm *open);
/* Free a mirror VM's state, after ugpu_vm_destroy() (NULL: no-op). */
void svm_fwd_free(struct fwd_vm *fv);
/* A duplicate (close-on-exec) of @fv's fault eventfd for its client
 * (UGPUD_SVM_FAULT_FD): readable while faults wait for a fetch. -1 on
 * failure. */
int svm_fault_fd(struct fwd_vm *fv);
/* A fence wait on @q that waits: 1 when @q's VM is a mirror VM with faults
 * pending (answer -EAGAIN at once, @efd untouched); else 0 with *@wait_fd
 * the fd to watch (@efd, or an epoll fd over @efd and the VM's faults:
 * @efd is then kept until svm_wait_done()); or -errno. *@wait_fd is left
 * alone unless 0 is returned. */
int svm_wait_fd(struct ugpu_queue *q, int efd, int *wait_fd);
void svm_wait_done(struct ugpu_queue *q);
/*
 * serve_pm_step() - one step of a host-suspend cycle (UGPUD_PM_PREPARE,
 * _SUSPEND, _RESUME, _CANCEL) or a removal (_UNPLUG) of device @device, with
 * the daemon's gate and the clients' events: what UGPUD_DEVICE_PM does.
 * Returns the libugpu call's result (include/ugpu/pm.h), -EINVAL for another
 * action.
 */
int serve_pm_step(struct ugpud *d, uint32_t device, uint32_t action);
/*
 * sleep.c: logind's PrepareForSleep drives the host sleep of every device
 * on the loop thread. host_sleep(): every device through a host sleep
 * (@sleeping) or back from it: a device not suspended is prepared and
 * suspended (its clients told, its requests -EAGAIN) and resumed at the
 * wake; one an administrator suspended (DEVICE_PM) is left as it is both
 * ways; failures are logged (the host sleeps anyway). sleep_start(): 0, or
 * -errno of ugpu_logind_watch() (-ENOENT: no logind). sleep_poll(): the
 * loop, when d->ev_fd woke it: a sleep or wake asked for is done now.
 * sleep_stop(): after the loop ended (NULL d->sleep: no-op).
 */
void host_sleep(struct ugpud *d, bool sleeping);
int sleep_start(struct ugpud *d);
void sleep_poll(struct ugpud *d);
void sleep_stop(struct ugpud *d);

/* notify.c */

/* Send @state ("READY=1", "STATUS=...", "WATCHDOG=1") to $NOTIFY_SOCKET.
 * Returns 0 (also when it is unset), or -errno. */
int notify_send(const char *state);
/* The watchdog period systemd asked for ($WATCHDOG_USEC for this pid), or 0. */
uint64_t notify_watchdog_usec(void);
/* Socket activation: the fds systemd passed ($LISTEN_PID/$LISTEN_FDS, from
 * fd 3), up to @max into @fds; the variables are unset. Returns how many. */
int notify_listen_fds(int *fds, int max);

/* Store @fd in systemd's fd store under @name (FDSTORE=1; the fd is
 * duplicated by the kernel, the caller keeps its own), or remove every fd of
 * that name (@fd -1: FDSTOREREMOVE=1). 0 or -errno. */
int notify_store(int fd, const char *name);
/* BARRIER=1: wait (at most @timeout_ms) until systemd has processed every
 * message sent before. 0, -ETIMEDOUT, or -errno. */
int notify_barrier(unsigned int timeout_ms);
/* notify_listen_fds() with the names ($LISTEN_FDNAMES, ':'-separated; ""
 * when none came) into @names. */
int notify_listen_fds_named(int *fds, char (*names)[64], int max);

/* persist.c */

/*
 * persist_start() - with --fd-store: restore what the table among @fds
 * (@names, @n of them: the store systemd handed back, not the listening
 * socket) describes — sessions, detached until their clients resume, with
 * their BOs made again byte-exact from the stored VRAM and system memfds —
 * then put this daemon's own VRAM memfds and first table in the store and
 * remove the old entries. Closes @fds. Returns 0 (also when there was
 * nothing to restore) or -errno (persistence off then, logged).
 */
int persist_start(struct ugpud *d, int *fds, char (*names)[64], int n);
/* Record what changed since the last call (BOs made, moved, gone); cheap
 * when nothing did. Called by the loop after each request and on its tick. */
void persist_sync(struct ugpud *d);
static inline bool vram_retry(struct ugpud *d, int ret, struct vram_tries *t)
{
	return ret == -ERESTART && d->vram_retry && d->vram_retry(d, ret, t);
}

/* The calls for one request that VRAM held for the table refuses; the
 * refusals with the table not stored after which it fails. */
#define VRAM_RETRIES 64
#define VRAM_UNSTORED 3

/* @ret = @call (it may place a BO in VRAM, page tables included), on the
 * loop: refused rather than handed VRAM the table still names, and made
 * again once the table is written (vram_retry()); -EAGAIN when the table
 * cannot be stored. */
#define VRAM_CALL(d, ret, call)                                                 \
	do {                                                                    \
		struct vram_tries vram_t_ = { 0 };                              \
		do {                                                            \
			bool vram_refuse_ = vram_t_.calls < VRAM_RETRIES;       \
			if (vram_refuse_)                                       \
				vram_refusing(true);                            \
			(ret) = (call);                                         \
			if (vram_refuse_)                                       \
				vram_refusing(false);                           \
		} while (vram_retry((d), (ret), &vram_t_));                     \
		if ((ret) == -ERESTART) /* the table could not be stored */     \
			(ret) = -EAGAIN;                                        \
	} while (0)
/* Release detached sessions whose time to resume has passed. */
void persist_expire(struct ugpud *d);
/* A clean stop: the store is emptied (nothing to restore next time). */
void persist_stop(struct ugpud *d);

/* loop.c */

/*
 * loop_run() - serve @listen_fd until SIGTERM/SIGINT. @watchdog_usec: send
 * WATCHDOG=1 every half of it (0: never). Returns 0 or -errno (io_uring
 * could not be set up).
 */
int loop_run(struct ugpud *d, int listen_fd, uint64_t watchdog_usec);

/* log lines of the daemon itself (stderr: the journal under systemd) */
void ugpud_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* metrics.c: the Prometheus endpoint. metrics_start() serves GET /metrics
 * on @where ("ADDR:PORT", IPv4; port 0 picks one, logged) from a thread of
 * its own, once the devices are up: 0, -EINVAL (@where malformed),
 * -EADDRINUSE (could not listen), -ENOMEM. metrics_stop() (NULL: no-op)
 * before the devices go down. */
struct metrics;
int metrics_start(struct ugpud *d, const char *where, struct metrics **out);
void metrics_stop(struct metrics *m);
/* The loop thread, when d->ev_fd woke it: if the endpoint asked for the
 * clients (a scrape is waiting), copy their figures for it. Cheap otherwise;
 * @d->metrics NULL: nothing. */
void metrics_publish(struct ugpud *d);

#endif
