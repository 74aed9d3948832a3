/* SPDX-License-Identifier: MIT */
/*
 * test_model — the model-based randomised test of the public API (issue 11),
 * in the manner of FoundationDB's simulation tests and TigerBeetle's VOPR.
 *
 * It is written from include/ugpu/ headers and docs/ only: it includes nothing but
 * the ugpu/ headers, the reference device's control API (tools/ugpu-sim/sim.h) and
 * libc, so it tests what the headers promise, not what the code happens to do.
 * The full design, the replay and long-run commands and what a run covers are
 * in docs/testing.md ("The model test"); in short:
 *
 * Operations. A seed generates a list of operations; each is a kind plus four
 * raw 32-bit parameters that are interpreted against the state at the time it
 * runs (a BO is "parameter modulo the eligible BOs", an op that makes no sense
 * now is skipped), so every sub-list of a list is still a valid run: that is
 * what lets a failure shrink. Kinds: create (every flag combination, valid and
 * refused; every placement list; 4 KiB - 2 MiB, some not page multiples; short
 * options structs), put, get+put, write/read through the API at random
 * offsets (some out of range), map, store through the mapping and load back,
 * unmap, pin, unpin, migrate, host suspend prepare/suspend/resume/cancel from
 * the main thread ("the application"), a notifier cycle on a second thread
 * (standing in for logind: prepare+suspend, hold, resume, as PrepareForSleep
 * does), runtime PM allow/forbid/get/put (and one put too many), autosuspend
 * delay (0-20 ms, or disabled), D3cold threshold (0, half or twice VRAM),
 * ugpu_device_rpm_suspend, sleeps that let autosuspend act, fault injection in
 * the device (copy, DMA, wake; once or always) and its clearing, removal
 * (sim removal request, ugpu_device_unplug sync or from a helper thread,
 * surprise removal; at once or after a delay, optionally after putting the
 * device to sleep, optionally followed at once by a host transition, a
 * runtime suspend, a migration or a create that race it), settling a removal,
 * close, reopen (a fresh reference device), queries of every stats call,
 * ugpu_strerror of odd codes, NULL/short arguments, writer threads on/off;
 * and GPU VMs (include/ugpu/vm.h): VM create/destroy (plain, mirror, short
 * and bad options), queue create/destroy (also with kernels in flight),
 * bind/unbind (good, overlapping, bad), kernels (write, atomic-add,
 * read-sum) over runs of binds, waited for at once or left pending across
 * the ops that follow, faulting ones, bad submissions, fence waits (also by
 * eventfd), results read again, a flood to the queue depth while launches
 * are stopped.
 *
 * Threads. Besides the main thread: NWRITERS writer threads, each owning some
 * mapped BOs and storing sequence numbers through the mappings (then loading
 * them back) while the main thread migrates, pins, suspends, removes; the
 * notifier thread; removal helper threads; and the driver's own threads (the
 * runtime-PM thread starts runtime suspends by itself when the delay expires,
 * the removal watcher runs removals). Every BO has one owner at a time, so the
 * oracle stays exact: writers record what they stored in the BO's shadow and
 * park at a barrier whenever the main thread checks everything.
 *
 * Oracle. A shadow copy of every byte of every BO (a kernel's effect goes
 * into the shadow of the BOs its range maps to when its fence is reaped:
 * the section "GPU VMs, binds, queues and kernels" says why that is exact;
 * a read-sum must match it, -EFAULT must name the first page that faults).
 * After every op the BO it
 * touched is checked byte-exact (ugpu_bo_read, and through the mapping when
 * mapped), every CHECK_EVERY ops and after every power transition, removal,
 * injected fault and notifier cycle every BO is. Every return code must be in
 * the set the header lists for the state the model knows; where the model
 * knows the state exactly the set is one value. Removals: an orderly removal
 * loses nothing (unless the header allows it: NO_RESTORE BOs while host-
 * suspended, or a copy failing under fault injection, then reported), a
 * surprise removal loses only BOs that could have had their only copy in VRAM
 * (none if the device was asleep in runtime D3cold, only NO_RESTORE ones if
 * it was host-suspended), and every lost BO is listed, flagged, reads
 * -ENODATA and its mapping raises SIGBUS; the counts in ugpu_unplug_info and
 * the removal callback agree with the list.
 *
 * Isolation, replay, shrinking. Each seed runs in a forked child (so a crash,
 * a sanitizer report or a hang is a failure like any other, and the parent
 * can go on to shrink it). The child prints `model: seed=N`; UGPU_MODEL_SEED=N
 * replays it, UGPU_MODEL_KEEP=0-3,17,40 keeps only those op indexes. On a
 * failure the parent shrinks the op list (truncate at the failing op, then
 * delta debugging over what is left, each candidate on a fresh context and
 * device, up to 3 tries each because threads make runs inexact) within
 * UGPU_MODEL_SHRINK_SECONDS and prints a replay command and the short trace.
 * UGPU_MODEL_SECONDS / _OPS size a run; _WEIGHTS, _FLAGS, _MAXOPEN focus it.
 *
 * vm.h lists no -EBUSY for ugpu_vm_create(); while host-suspended it gets
 * one (the root table is VRAM, "no VRAM until resume" as for a VRAM-only
 * BO, and as ugpu_vm_bind() says): accepted. A zero-byte kernel "completes at
 * once": also while host-suspended, or after resume? Either. ugpu_fence_wait()
 * with a @res->size too small: -EINVAL (as every other call with a size
 * field) or not (vm.h lists no such -EINVAL)? Either. ugpu_vm_unbind() after
 * close ("after the device is gone unbinding still works" says removal): 0
 * or -ENODEV.
 *
 * Where the headers leave the outcome open, the model accepts each reading
 * (look for "both hold" and the comments at each): which error wins when two
 * apply (lost and gone, pinned and gone, a failing wake before a state error);
 * resume/cancel of a removed device (-EBUSY/0 or -ENODEV); migrating a
 * VRAM-only BO to SYSTEM after a removal moved it there (0 or -EINVAL); a
 * BO put while its removal ran (may count in bos_lost, no longer listed); an
 * orderly removal that cannot wake the device (goes on as a surprise one:
 * status and ugpu_device_unplug() -ENODEV); a CPU touch while the device
 * cannot wake (SIGBUS, until the mapping is unmapped: the headers say
 * nothing; the docs say SIGBUS until invalidated — wrong bytes are never
 * accepted). It reads docs/suspend.md's "prepare takes the runtime-PM
 * reference" as binding (no runtime suspend, no usage below it, while host-
 * prepared or suspended), and NO_RESTORE as "may be lost over host suspend"
 * only, counted by ugpu_bo_info.discarded (runtime D3cold must keep it).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ugpu/bo.h>
#include <ugpu/device.h>
#include <ugpu/pm.h>
#include <ugpu/rpm.h>
#include <ugpu/ugpu.h>
#include <ugpu/unplug.h>
#include <ugpu/vm.h>

#include "tools/ugpu-sim/sim.h"

#define MiB (1024ull * 1024)
#define VRAM_SIZE (8 * MiB)
#define MAXDEV 64 /* devices one run may open, one after the other */
#define MAXBO 40
#define NWRITERS 3
#define CHECK_EVERY 16
#define DEFAULT_OPS 400
/* 10 s under a sanitizer (make test runs it in three builds); long
 * campaigns are run by hand (docs/testing.md) */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define DEFAULT_SECONDS 10
#else
#define DEFAULT_SECONDS 20
#endif
#define DEFAULT_SHRINK_SECONDS 90
#define OP_TIMEOUT_S 60 /* watchdog per op: far above every bound the headers give */
#define SHRINK_OP_TIMEOUT_S 20 /* while shrinking: a hang is known to be one already */

/* ------------------------------------------------------------------------ */
/* Random numbers: splitmix64, so a seed gives the same op list everywhere.  */

struct rng {
	uint64_t s;
};

static uint64_t mix64(uint64_t x)
{
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint64_t rnd64(struct rng *r)
{
	r->s += 0x9e3779b97f4a7c15ull;
	return mix64(r->s);
}

static uint32_t rnd(struct rng *r, uint32_t n)
{
	return n ? (uint32_t)(rnd64(r) % n) : 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_us(unsigned us)
{
	struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (long)(us % 1000000) * 1000 };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* ------------------------------------------------------------------------ */
/* Operations.                                                              */

/* kind, weight (relative frequency in generated lists) */
#define OP_LIST(X)                                                                         \
	X(CREATE, 12) X(CREATE_OLD, 1) X(PUT, 4) X(GETPUT, 1) X(WRITE, 8) X(READ, 4) X(MAP, 3)  \
	X(STORE, 9) X(UNMAP, 3) X(PIN, 4) X(UNPIN, 4) X(MIGRATE, 7) X(XMIGRATE, 3) X(PREPARE, 2) X(SUSPEND, 2) \
	X(RESUME, 3) X(CANCEL, 1) X(NOTIFY, 3) X(NOTIFY_JOIN, 2) X(RPM_ALLOW, 4)                \
	X(RPM_FORBID, 1) X(RPM_GET, 1) X(RPM_PUT, 5) X(RPM_GETPUT, 2) X(RPM_PUT_EXTRA, 1)      \
	X(RPM_DELAY, 3)        \
	X(RPM_THRESH, 2) X(RPM_SUSPEND, 5) X(SLEEP, 14) X(INJECT, 2) X(INJECT_WAKE, 1) X(INJECT_CLEAR, 2)          \
	X(REMOVE, 1) X(SETTLE, 2) X(CLOSE, 1) X(REOPEN, 10) X(QUERY, 3) X(STRERROR, 1)          \
	X(WRITERS, 3) X(CHECK, 1) X(BADARGS, 1)                                                 \
	X(VM_CREATE, 4) X(VM_DESTROY, 1) X(QUEUE_CREATE, 1) X(QUEUE_DESTROY, 1) X(BIND, 14)      \
	X(UNBIND, 4) X(KERNEL, 24) X(KERNEL_FAULT, 4) X(KWAIT, 4) X(FENCE, 2) X(KFLOOD, 1)

enum op_kind {
#define X(n, w) OP_##n,
	OP_LIST(X)
#undef X
	OP_KINDS
};

static const char *const op_names[] = {
#define X(n, w) #n,
	OP_LIST(X)
#undef X
};

static unsigned op_weights[] = {
#define X(n, w) w,
	OP_LIST(X)
#undef X
};

/* UGPU_MODEL_WEIGHTS="CLOSE=0,REMOVE=6": change how often kinds are
 * generated ("*=0,STORE=5,..." sets every kind first); part of what a seed
 * means: replay with the same setting. */
static void weights_parse(const char *s)
{
	while (s && *s) {
		const char *eq = strchr(s, '='), *end;
		unsigned k;

		if (!eq)
			return;
		for (k = 0; k < OP_KINDS; k++)
			if ((eq - s == 1 && *s == '*') ||
			    (strlen(op_names[k]) == (size_t)(eq - s) && !strncasecmp(op_names[k], s, (size_t)(eq - s))))
				op_weights[k] = (unsigned)strtoul(eq + 1, NULL, 10);
		end = strchr(eq, ',');
		s = end ? end + 1 : NULL;
	}
}

struct op {
	uint32_t kind;
	uint32_t a, b, c, d;
};

static void gen_ops(uint64_t seed, int n, struct op *ops)
{
	struct rng r = { .s = seed * 0x2545f4914f6cdd1dull + 1 };
	unsigned total = 0, k;
	int i;

	for (k = 0; k < OP_KINDS; k++)
		total += op_weights[k];
	for (i = 0; i < n; i++) {
		uint32_t w = rnd(&r, total);

		for (k = 0; k < OP_KINDS - 1 && w >= op_weights[k]; k++)
			w -= op_weights[k];
		ops[i].kind = k;
		ops[i].a = (uint32_t)rnd64(&r);
		ops[i].b = (uint32_t)rnd64(&r);
		ops[i].c = (uint32_t)rnd64(&r);
		ops[i].d = (uint32_t)rnd64(&r);
	}
}

/* ------------------------------------------------------------------------ */
/* The model.                                                               */

enum life { D_PRESENT, D_REMOVING, D_REMOVED, D_CLOSED };
enum rm_kind { RM_REQUEST, RM_API, RM_SURPRISE };
#define PM_UNKNOWN (-1) /* a notifier cycle is running: any host-suspend state */
#define INJ_CMD (1u << SIM_INJECT_CMD)
#define INJ_DMA (1u << SIM_INJECT_DMA)
#define INJ_WAKE (1u << SIM_INJECT_WAKE)

struct mdev {
	int id;
	struct sim *sim;
	struct ugpu_device *dev;
	enum life life;
	/* removal */
	int rm_kind;
	bool rm_none; /* surprise while quiesced in runtime D3cold: nothing may be lost */
	bool rm_thread_live;
	int rm_puts; /* BOs that may be lost and were put before the removal settled */
	unsigned rm_inj; /* injections armed when the removal started */
	pthread_t rm_thread;
	unsigned rm_delay_us;
	atomic_int rm_ret;
	atomic_bool rm_ret_valid;
	atomic_int cb_calls, cb_kind, cb_status;
	/* host suspend */
	int pm; /* enum ugpu_pm_state, or PM_UNKNOWN */
	bool main_susp; /* a suspend of the main thread may still hold the device */
	/* runtime PM as the model set it */
	int allowed; /* 1, 0, -1: unknown (a forbid that failed) */
	int delay;
	uint64_t thresh;
	int gets; /* references the main thread holds */
	bool d3cold_ever; /* runtime D3cold may have moved BOs behind our back */
	bool forbid_snap;
	uint64_t forbid_suspends;
	/* fault injection armed in the device (until cleared) */
	unsigned inj;
	/* last stats, kept for the totals */
	struct ugpu_rpm_stats rs;
	struct ugpu_pm_stats ps;
	bool rs_ok, ps_ok, counted;
};

struct mbo {
	bool used;
	int id;
	int dev;
	struct ugpu_bo *bo;
	uint64_t size;
	uint32_t flags;
	int npl;
	enum ugpu_placement pl[2];
	uint8_t *shadow;
	uint8_t *map;
	uint32_t pins;
	int owner; /* 0: the main thread; k: writer k-1 (only while writers run) */
	bool closed; /* its device was closed: every call -ENODEV */
	bool lost; /* confirmed lost by a settled removal */
	bool may_lose; /* a removal in flight may take it */
	bool unknown; /* contents undefined (NO_RESTORE discarded) until re-read */
	bool wake_tainted; /* mapped while wakes failed: a touch may have poisoned the
			    * mapping (SIGBUS) until it is unmapped or moved (bo.h) */
	uint32_t discarded;
	uint64_t orphan_epoch; /* orphan NO_RESTORE: hs_epoch() when last looked at */
	atomic_bool sigbus; /* a writer's touch raised SIGBUS */
	/* GPU VMs */
	uint32_t nbinds; /* binds of it in the model's VMs (each holds a reference) */
	bool orphan; /* the test put it while bound: only binds hold it now, no BO call may name it */
	uint8_t *unk; /* per u64 word: its value is unknown (a kernel that ended early may have
		       * written it); NULL until needed */
	uint64_t nunk; /* words marked in @unk */
};

struct totals {
	uint64_t seeds, ops, skipped, host_cycles, notifier_cycles, rpm_suspends, rpm_d3cold,
		rpm_resumes, rpm_released, rpm_wake_faults, removals_orderly, removals_surprise,
		injections, bytes_verified, writer_stores, lost_allowed, sigbus_allowed, devices,
		bos_created, vms, binds, kernels, kernels_done, kernels_faulted, kernels_other,
		sums_checked, kernel_bytes, floods, xmoves, xtries;
};

/* Shared with the parent (MAP_SHARED, set up before fork). */
struct shared {
	atomic_int cur_op;
	atomic_int failed;
	int fail_op;
	char cls[64];
	char msg[2048];
	struct totals t;
	int finished;
};

static struct shared *shm;
static struct totals T;
static struct ugpu_context *ctx;
static struct mdev devs[MAXDEV];
static int ndevs, cur = -1;
static struct mbo bos[MAXBO];
static int next_bo_id;
static long page_size;
static bool have_uffd = true;
static bool verbose, quiet;
static uint64_t run_seed;
static struct rng grng; /* main-thread choices that are not op parameters */
static int since_check;
static int op_timeout_s = OP_TIMEOUT_S;
static int max_open = 3; /* devices open at once; a reopen closes the oldest (UGPU_MODEL_MAXOPEN) */
/*
 * Valid mirror VMs (shared virtual memory), on by default; UGPU_MODEL_MIRROR=0
 * makes those creations plain VMs (refused mirror spans are still tried).
 * Part of a seed's meaning, like the weights.
 */
static bool mirror_on;

/* ------------------------------------------------------------------------ */
/* Trace and failure.                                                       */

#define RING 48
static char trbuf[768];
static size_t trlen;
static char ring[RING][800];
static int ring_n;
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;

static void tr(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void tr(const char *fmt, ...)
{
	va_list ap;
	int n;

	if (trlen >= sizeof(trbuf) - 1)
		return;
	va_start(ap, fmt);
	n = vsnprintf(trbuf + trlen, sizeof(trbuf) - trlen, fmt, ap);
	va_end(ap);
	if (n > 0)
		trlen = trlen + (size_t)n < sizeof(trbuf) ? trlen + (size_t)n : sizeof(trbuf) - 1;
}

static void tr_end(int idx)
{
	snprintf(ring[ring_n % RING], sizeof(ring[0]), "[%d] %s", idx, trbuf);
	ring_n++;
	if (verbose)
		printf("model:   [%d] %s\n", idx, trbuf);
	trlen = 0;
	trbuf[0] = 0;
}

static void print_ring(void)
{
	int i = ring_n > RING ? ring_n - RING : 0;

	printf("model: the last %d ops before the failure:\n", ring_n - i);
	for (; i < ring_n; i++)
		printf("model:   %s\n", ring[i % RING]);
	if (trlen)
		printf("model:   [%d] %s   <-- failing op\n", atomic_load(&shm->cur_op), trbuf);
}

static _Thread_local bool on_main_thread;

/* A check failed: record, print (with the trace of the ops when on the main
 * thread, the only one that writes it), end the child. Any thread. */
static void fail(const char *cls, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
static void fail(const char *cls, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&fail_lock); /* never released: we exit */
	va_start(ap, fmt);
	vsnprintf(shm->msg, sizeof(shm->msg), fmt, ap);
	va_end(ap);
	snprintf(shm->cls, sizeof(shm->cls), "%s", cls);
	shm->fail_op = atomic_load(&shm->cur_op);
	if (on_main_thread)
		shm->t = T;
	atomic_store(&shm->failed, 1);
	if (!quiet) {
		if (on_main_thread)
			print_ring();
		printf("model: FAIL seed=%" PRIu64 " op=%d [%s]: %s\n", run_seed, shm->fail_op, cls,
		       shm->msg);
	}
	fflush(stdout);
	fflush(stderr);
	_exit(1);
}

/* ------------------------------------------------------------------------ */
/* Touching mappings: a SIGBUS is caught and reported, never fatal.          */

static _Thread_local sigjmp_buf *guard_jb;
static struct sigaction old_bus, old_segv;

/* SIGBUS or SIGSEGV: inside a guarded touch, jump back to it; elsewhere give
 * the signal back to whoever handled it before (a sanitizer, the default). */
static void on_touch_signal(int sig, siginfo_t *si, void *uc)
{
	sigjmp_buf *jb = guard_jb;

	(void)si;
	(void)uc;
	if (jb) {
		guard_jb = NULL;
		siglongjmp(*jb, sig);
	}
	sigaction(sig, sig == SIGBUS ? &old_bus : &old_segv, NULL); /* the access faults again */
}

/* Copy @n bytes between a mapping and memory; false when a touch raised
 * SIGBUS (what a lost BO's mapping does). SIGSEGV on a mapping the model
 * holds is never right: it fails the run. Volatile accesses: the compiler
 * may not merge or drop them. */
static bool touch_copy(volatile uint8_t *dst, const volatile uint8_t *src, size_t n)
{
	sigjmp_buf jb;
	int sig = sigsetjmp(jb, 1);

	if (sig == SIGSEGV)
		fail("sigsegv", "a touch of a BO mapping (%p <- %p, %zu bytes) raised SIGSEGV%s",
		     (void *)dst, (const void *)src, n, on_main_thread ? "" : " in a writer");
	if (sig)
		return false;
	guard_jb = &jb;
	if (((uintptr_t)dst | (uintptr_t)src | n) % 8 == 0) {
		volatile uint64_t *d8 = (volatile uint64_t *)dst;
		const volatile uint64_t *s8 = (const volatile uint64_t *)src;

		for (size_t i = 0; i < n / 8; i++)
			d8[i] = s8[i];
	} else {
		for (size_t i = 0; i < n; i++)
			dst[i] = src[i];
	}
	guard_jb = NULL;
	return true;
}

/* A crash or a sanitizer report: show what the run did before it (best
 * effort; the process is dying anyway). The sanitizers call their death
 * callback after the report; without them a fatal signal does. */
extern void __sanitizer_set_death_callback(void (*cb)(void)) __attribute__((weak));

static void on_death(void)
{
	if (!quiet && !atomic_load(&shm->failed)) {
		print_ring();
		printf("model: the run died during op %d (seed=%" PRIu64 ")\n", atomic_load(&shm->cur_op),
		       run_seed);
	}
	fflush(stdout);
}

static void on_fatal(int sig)
{
	on_death();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void install_death_report(void)
{
	if (__sanitizer_set_death_callback) {
		__sanitizer_set_death_callback(on_death);
		return;
	}
	signal(SIGSEGV, on_fatal); /* chained to by on_touch_signal() */
	signal(SIGBUS, on_fatal);
	signal(SIGABRT, on_fatal);
	signal(SIGFPE, on_fatal);
	signal(SIGILL, on_fatal);
}

static void on_alarm(int sig)
{
	char m[900];
	int n;

	(void)sig;
	n = snprintf(m, sizeof(m),
		     "model: WATCHDOG: seed=%" PRIu64 " op %d did not finish within %d s: %s\n",
		     run_seed, atomic_load(&shm->cur_op), op_timeout_s, trbuf);
	snprintf(shm->cls, sizeof(shm->cls), "hang");
	snprintf(shm->msg, sizeof(shm->msg), "op %d did not finish within %d s: %s",
		 atomic_load(&shm->cur_op), op_timeout_s, trbuf);
	shm->fail_op = atomic_load(&shm->cur_op);
	atomic_store(&shm->failed, 1);
	if (!quiet && n > 0 && write(1, m, (size_t)n) < 0) {
	}
	_exit(3);
}

/* ------------------------------------------------------------------------ */
/* Return-code sets.                                                        */

struct eset {
	int n;
	int v[24];
};

static bool es_has(const struct eset *s, int e)
{
	for (int i = 0; i < s->n; i++)
		if (s->v[i] == e)
			return true;
	return false;
}

static void es_add(struct eset *s, int e)
{
	if (!es_has(s, e) && s->n < (int)(sizeof(s->v) / sizeof(s->v[0])))
		s->v[s->n++] = e;
}

static struct eset es1(int e)
{
	struct eset s = { .n = 1, .v = { e } };

	return s;
}

static const char *ename(int e)
{
	static _Thread_local char buf[4][24];
	static _Thread_local int k;
	char *b;

	switch (-e) {
	case 0: return "0";
	case EINVAL: return "-EINVAL";
	case ENODEV: return "-ENODEV";
	case ENODATA: return "-ENODATA";
	case EBUSY: return "-EBUSY";
	case EIO: return "-EIO";
	case ETIMEDOUT: return "-ETIMEDOUT";
	case ENOSPC: return "-ENOSPC";
	case ENOMEM: return "-ENOMEM";
	case EPERM: return "-EPERM";
	case ENOENT: return "-ENOENT";
	case EDEADLK: return "-EDEADLK";
	case ENOSYS: return "-ENOSYS";
	case EOVERFLOW: return "-EOVERFLOW";
	case EPROTO: return "-EPROTO";
	case EAGAIN: return "-EAGAIN";
	case EFAULT: return "-EFAULT";
	case ECANCELED: return "-ECANCELED";
	case ESTALE: return "-ESTALE";
	case EOPNOTSUPP: return "-EOPNOTSUPP";
	case EACCES: return "-EACCES";
	case ENOLINK: return "-ENOLINK";
	case EXDEV: return "-EXDEV";
	default: break;
	}
	b = buf[k++ % 4];
	snprintf(b, sizeof(buf[0]), "%d", e);
	return b;
}

static const char *es_str(const struct eset *s)
{
	static char buf[256];
	size_t n = 0;

	buf[0] = 0;
	for (int i = 0; i < s->n && n < sizeof(buf) - 24; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s", i ? ", " : "", ename(s->v[i]));
	return buf;
}

static const char *dstate(const struct mdev *d);

/* Fail unless @r is in @s. */
static void expect(int r, const struct eset *s, const struct mdev *d, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void expect(int r, const struct eset *s, const struct mdev *d, const char *fmt, ...)
{
	char what[400];
	va_list ap;

	if (es_has(s, r))
		return;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	fail("errno", "%s returned %s (%s); the header allows {%s} here [%s]", what, ename(r),
	     ugpu_strerror(r), es_str(s), d ? dstate(d) : "-");
}

/* ------------------------------------------------------------------------ */
/* Descriptions.                                                            */

static const char *pl_name(int p)
{
	return p == UGPU_PLACEMENT_VRAM ? "VRAM" : p == UGPU_PLACEMENT_SYSTEM ? "SYSTEM"
		: p == UGPU_PLACEMENT_NONE ? "NONE" : "?";
}

static const char *pm_name(int pm)
{
	return pm == UGPU_PM_ACTIVE ? "active" : pm == UGPU_PM_PREPARED ? "prepared"
		: pm == UGPU_PM_SUSPENDED ? "suspended" : "unknown";
}

static const char *life_name(enum life l)
{
	static const char *const n[] = { "present", "removing", "removed", "closed" };

	return n[l];
}

static const char *rm_name(int k)
{
	return k == RM_REQUEST ? "request" : k == RM_API ? "api" : "surprise";
}

static const char *dstate(const struct mdev *d)
{
	static char buf[4][200];
	static int k;
	char *b = buf[k++ % 4];

	snprintf(b, sizeof(buf[0]),
		 "dev%d %s%s%s, host %s%s, rpm %s delay %d thresh %" PRIu64 " gets %d, inj%s%s%s%s",
		 d->id, life_name(d->life), d->life == D_PRESENT ? "" : " by ",
		 d->life == D_PRESENT ? "" : rm_name(d->rm_kind), pm_name(d->pm),
		 d->main_susp ? " (main)" : "",
		 d->allowed == 1 ? "allowed" : d->allowed == 0 ? "forbidden" : "unknown", d->delay,
		 d->thresh, d->gets, d->inj ? "" : " none", d->inj & INJ_CMD ? " cmd" : "",
		 d->inj & INJ_DMA ? " dma" : "", d->inj & INJ_WAKE ? " wake" : "");
	return b;
}

static const char *bname(const struct mbo *b)
{
	static char buf[4][160];
	static int k;
	char *s = buf[k++ % 4];

	snprintf(s, sizeof(buf[0]), "bo#%d(dev%d %" PRIu64 "B %s%s%s%s%s%s pl=%s%s%s pins=%u%s%s%s%s)",
		 b->id, devs[b->dev].id, b->size, b->flags & UGPU_BO_PINNED ? "P" : "",
		 b->flags & UGPU_BO_CPU_ACCESS ? "C" : "", b->flags & UGPU_BO_CONTIGUOUS ? "G" : "",
		 b->flags & UGPU_BO_KERNEL ? "K" : "", b->flags & UGPU_BO_NO_RESTORE ? "N" : "",
		 b->flags & UGPU_BO_LATE_RESTORE ? "L" : "", pl_name(b->pl[0]),
		 b->npl > 1 ? "," : "", b->npl > 1 ? pl_name(b->pl[1]) : "", b->pins,
		 b->map ? " mapped" : "", b->owner ? " writer" : "", b->closed ? " closed" : "",
		 b->lost ? " lost" : b->may_lose ? " may-lose" : "");
	return s;
}

/* ------------------------------------------------------------------------ */
/* Small model queries.                                                     */

static bool has_pl(const struct mbo *b, enum ugpu_placement p)
{
	for (int i = 0; i < b->npl; i++)
		if (b->pl[i] == p)
			return true;
	return false;
}

static struct mdev *bdev(const struct mbo *b)
{
	return &devs[b->dev];
}

static struct mdev *curdev(void)
{
	return cur >= 0 ? &devs[cur] : NULL;
}

/* The current placement (UGPU_PLACEMENT_NONE if the query fails). */
static enum ugpu_placement placement_of(const struct mbo *b)
{
	struct ugpu_bo_info info = { .size = sizeof(info) };

	if (ugpu_bo_query(b->bo, &info))
		return UGPU_PLACEMENT_NONE;
	return info.placement;
}

/* Host-suspended (for sure, or maybe: a notifier cycle runs). */
static bool host_maybe_suspended(const struct mdev *d)
{
	return d->pm == UGPU_PM_SUSPENDED || d->pm == PM_UNKNOWN;
}

static bool gpu_may_run(const struct mbo *b);
static uint64_t vm_pt_bytes(const struct mdev *d);

/* Bytes of VRAM nothing can evict: pinned or VRAM-only BOs, BOs bound in a
 * VM a kernel may run on, the page tables of VMs, plus the driver's own
 * (rings: a generous guess). Above half of VRAM, -ENOSPC for a VRAM
 * placement is believable; below it, eviction must make room. */
static bool vram_pressure(const struct mdev *d, uint64_t extra, bool contiguous)
{
	uint64_t fixed = 2 * MiB, pt = vm_pt_bytes(d);

	for (int i = 0; i < MAXBO; i++) {
		const struct mbo *b = &bos[i];

		if (!b->used || b->closed || b->lost || &devs[b->dev] != d || !has_pl(b, UGPU_PLACEMENT_VRAM))
			continue;
		if (b->pins || !has_pl(b, UGPU_PLACEMENT_SYSTEM) || gpu_may_run(b))
			fixed += b->size;
	}
	if (contiguous && fixed > 2 * MiB)
		return true; /* pinned blocks may fragment VRAM below any aligned run */
	return fixed + pt + extra > VRAM_SIZE / 2;
}

/* ------------------------------------------------------------------------ */
/* Writer threads.                                                          */

struct writer {
	pthread_t th;
	int id;
	struct rng r;
	int n;
	int slots[MAXBO];
	uint64_t stores;
};

static struct writer W[NWRITERS];
static pthread_mutex_t wlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wcond = PTHREAD_COND_INITIALIZER;
static atomic_int w_pause = 1, w_stop;
static int w_parked; /* under wlock */
static bool writers_running; /* main thread only */

static bool main_owned(const struct mbo *b)
{
	return !writers_running || b->owner == 0;
}

static void writer_drop(struct writer *w, int k)
{
	w->slots[k] = w->slots[--w->n];
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint64_t seq = 0;

	for (;;) {
		if (atomic_load(&w_pause) || atomic_load(&w_stop)) {
			bool stop;

			pthread_mutex_lock(&wlock);
			w_parked++;
			pthread_cond_broadcast(&wcond);
			while (atomic_load(&w_pause) && !atomic_load(&w_stop))
				pthread_cond_wait(&wcond, &wlock);
			w_parked--;
			stop = atomic_load(&w_stop);
			pthread_mutex_unlock(&wlock);
			if (stop)
				return NULL;
			continue;
		}
		if (!w->n) {
			sleep_us(500);
			continue;
		}
		int k = (int)rnd(&w->r, (uint32_t)w->n);
		struct mbo *b = &bos[w->slots[k]];
		uint64_t words = b->size / 8, off = rnd(&w->r, (uint32_t)words);
		uint64_t burst = rnd(&w->r, 8) == 0 ? 1 + rnd(&w->r, 64) : 1, i, v[64];

		if (off + burst > words)
			burst = words - off;
		for (i = 0; i < burst; i++) {
			v[i] = ((uint64_t)(w->id + 1) << 56) | (++seq << 8) | i;
			if (!touch_copy(b->map + 8 * (off + i), (const uint8_t *)&v[i], 8))
				break;
			memcpy(b->shadow + 8 * (off + i), &v[i], 8);
			w->stores++;
		}
		if (i < burst) {
			atomic_store(&b->sigbus, true);
			writer_drop(w, k);
			continue;
		}
		for (i = 0; i < burst; i++) {
			uint64_t got;

			if (!touch_copy((uint8_t *)&got, b->map + 8 * (off + i), 8)) {
				atomic_store(&b->sigbus, true);
				writer_drop(w, k);
				break;
			}
			if (got != v[i])
				fail("bytes",
					    "writer %d stored 0x%016" PRIx64 " at bo#%d+0x%" PRIx64
					    " through the mapping and loaded back 0x%016" PRIx64
					    " (a store was lost)",
					    w->id, v[i], b->id, 8 * (off + i), got);
		}
		switch (rnd(&w->r, 16)) {
		case 0: case 1: case 2: case 3:
			sleep_us(rnd(&w->r, 3000));
			break;
		case 4:
			sleep_us(20000 + rnd(&w->r, 20000)); /* idle: let autosuspend act */
			break;
		default:
			break;
		}
	}
}

static void check_bo(struct mbo *b, const char *why);

/* Park every writer (bounded) and take their BOs back. */
static void writers_pause(void)
{
	struct timespec ts;
	int i;

	if (!writers_running)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 30;
	pthread_mutex_lock(&wlock);
	atomic_store(&w_pause, 1);
	while (w_parked < NWRITERS)
		if (pthread_cond_timedwait(&wcond, &wlock, &ts) == ETIMEDOUT)
			fail("hang", "%d of %d writers did not reach the pause barrier within 30 s "
			     "(a touch of a mapping blocks)", NWRITERS - w_parked, NWRITERS);
	pthread_mutex_unlock(&wlock);
	writers_running = false;
	for (i = 0; i < NWRITERS; i++) {
		T.writer_stores += W[i].stores;
		W[i].stores = 0;
		W[i].n = 0;
	}
	for (i = 0; i < MAXBO; i++) {
		struct mbo *b = &bos[i];

		if (!b->used)
			continue;
		b->owner = 0;
		if (atomic_exchange(&b->sigbus, false)) {
			if (!b->lost && !b->may_lose && !(bdev(b)->inj & INJ_WAKE) && !b->wake_tainted)
				fail("sigbus", "a writer's touch of %s raised SIGBUS; only a lost BO's may [%s]",
				     bname(b), dstate(bdev(b)));
			T.sigbus_allowed++;
		}
	}
}

/* Can the main thread (or a writer) touch this BO's mapping without risking
 * a wait that only a later op of the main thread would end? */
enum touch { T_NO, T_OK, T_MAYBE, T_SIGBUS };

static enum touch touch_mode(const struct mbo *b)
{
	const struct mdev *d = bdev(b);

	if (b->closed || !b->map)
		return T_NO;
	if (b->lost)
		return T_SIGBUS;
	if (d->main_susp || d->pm == UGPU_PM_SUSPENDED) {
		/* the map of a VRAM BO waits for resume, and only we resume */
		if (d->pm == PM_UNKNOWN || placement_of(b) != UGPU_PLACEMENT_SYSTEM)
			return T_NO;
	}
	if (b->may_lose || (d->inj & INJ_WAKE) || b->wake_tainted)
		return T_MAYBE;
	return T_OK;
}

/* Hand some BOs to the writers and let them run. */
static void writers_resume(void)
{
	int i, k = 0;

	if (writers_running || !have_uffd)
		return;
	for (i = 0; i < MAXBO; i++) {
		struct mbo *b = &bos[i];
		void *p;
		int r;

		if (!b->used || b->closed || b->lost || b->may_lose || b->unknown ||
		    (b->flags & UGPU_BO_NO_RESTORE) || bdev(b)->life == D_CLOSED || b->orphan ||
		    b->nbinds || b->nunk || rnd(&grng, 2))
			continue; /* a bound BO is the kernels': never a writer's */
		if (bdev(b)->main_susp || bdev(b)->pm == UGPU_PM_SUSPENDED)
			continue;
		if (!b->map) {
			r = ugpu_bo_map(b->bo, &p);
			expect(r, &(struct eset){ 1, { 0 } }, bdev(b), "ugpu_bo_map(%s)", bname(b));
			b->map = p;
			b->wake_tainted |= (bdev(b)->inj & INJ_WAKE) != 0;
		}
		if (touch_mode(b) != T_OK)
			continue;
		b->owner = 1 + k;
		W[k].slots[W[k].n++] = i;
		k = (k + 1) % NWRITERS;
	}
	pthread_mutex_lock(&wlock);
	atomic_store(&w_pause, 0);
	pthread_cond_broadcast(&wcond);
	pthread_mutex_unlock(&wlock);
	writers_running = true;
}

/* ------------------------------------------------------------------------ */
/* The notifier thread: stands in for logind's PrepareForSleep handling.    */

struct ncall {
	const char *what;
	int ret;
};

static struct {
	bool live;
	pthread_t th;
	int dev;
	int variant; /* 0 prepare+suspend+resume, 1 suspend+resume, 2 prepare+cancel, 3 no hold */
	unsigned hold_us;
	struct ugpu_device *h;
	struct ncall log[16];
	int nlog;
	unsigned inj; /* injections armed at some point of the cycle */
} N;

static void nlog(const char *what, int r)
{
	if (N.nlog < 16)
		N.log[N.nlog++] = (struct ncall){ what, r };
}

static void *notifier_main(void *arg)
{
	int r;

	(void)arg;
	if (N.variant != 1)
		nlog("prepare", ugpu_device_suspend_prepare(N.h));
	if (N.variant == 2) {
		sleep_us(N.hold_us);
		nlog("cancel", ugpu_device_suspend_cancel(N.h));
		return NULL;
	}
	r = ugpu_device_suspend(N.h);
	nlog("suspend", r);
	if (r == 0) {
		if (N.variant != 3)
			sleep_us(N.hold_us);
		/* logind retries a failed wake; a bounded number of times here */
		for (int i = 0; i < 8; i++) {
			r = ugpu_device_resume(N.h);
			nlog("resume", r);
			if (r != -EIO)
				break;
			sleep_us(2000);
		}
	} else if (r != -EBUSY) {
		nlog("cancel", ugpu_device_suspend_cancel(N.h));
	}
	return NULL;
}

static void check_all(const char *why);
struct mdev;
static bool dev_frozen(const struct mdev *d);
static void kern_freeze(struct mdev *d);

static void notifier_join(void)
{
	struct mdev *d;
	int i;

	if (!N.live)
		return;
	pthread_join(N.th, NULL);
	N.live = false;
	d = &devs[N.dev];
	tr(" [notifier:");
	for (i = 0; i < N.nlog; i++) {
		const struct ncall *c = &N.log[i];
		struct eset s = { 0 };

		tr(" %s=%s", c->what, ename(c->ret));
		es_add(&s, 0);
		es_add(&s, -EBUSY);
		if (d->life != D_PRESENT)
			es_add(&s, -ENODEV);
		if (strcmp(c->what, "resume") == 0) {
			if ((N.inj | d->inj) & INJ_WAKE)
				es_add(&s, -EIO);
		} else if (strcmp(c->what, "cancel") != 0 && (N.inj | d->inj)) {
			es_add(&s, -EIO);
			es_add(&s, -ETIMEDOUT);
			es_add(&s, -ENOMEM);
			if (strcmp(c->what, "prepare") == 0)
				es_add(&s, -ENOSPC);
		}
		expect(c->ret, &s, d, "the notifier thread's ugpu_device_%s%s", c->what,
		       strcmp(c->what, "prepare") == 0 ? "" : "()");
	}
	tr("]");
	T.notifier_cycles++;
	if (d->life == D_PRESENT) {
		struct ugpu_pm_stats ps = { .size = sizeof(ps) };

		expect(ugpu_device_pm_stats(d->dev, &ps), &(struct eset){ 1, { 0 } }, d,
		       "ugpu_device_pm_stats");
		d->pm = (int)ps.state;
		d->main_susp = d->pm == UGPU_PM_SUSPENDED;
		if (dev_frozen(d))
			kern_freeze(d); /* its resume failed: launches stay stopped */
	}
	check_all("after a notifier cycle");
}

/* ------------------------------------------------------------------------ */
/* Devices.                                                                 */

static void removal_cb(void *user, struct ugpu_device *dev, enum ugpu_unplug_kind kind, int status)
{
	struct mdev *d = user;

	(void)dev;
	atomic_store(&d->cb_kind, (int)kind);
	atomic_store(&d->cb_status, status);
	atomic_fetch_add(&d->cb_calls, 1);
}

static void dev_snap(struct mdev *d)
{
	struct ugpu_rpm_stats rs = { .size = sizeof(rs) };
	struct ugpu_pm_stats ps = { .size = sizeof(ps) };

	if (d->life == D_CLOSED)
		return;
	if (ugpu_device_rpm_stats(d->dev, &rs) == 0) {
		d->rs = rs;
		d->rs_ok = true;
	}
	if (ugpu_device_pm_stats(d->dev, &ps) == 0) {
		d->ps = ps;
		d->ps_ok = true;
	}
}

static void dev_count(struct mdev *d)
{
	if (d->counted)
		return;
	d->counted = true;
	if (d->rs_ok) {
		T.rpm_suspends += d->rs.suspends;
		T.rpm_d3cold += d->rs.suspends_d3cold;
		T.rpm_resumes += d->rs.resumes;
		T.rpm_released += d->rs.bo_mappings_released;
		T.rpm_wake_faults += d->rs.bo_wake_faults;
	}
	if (d->ps_ok)
		T.host_cycles += d->ps.cycles;
}

static uint64_t thresh_choice(uint32_t x)
{
	return x % 10 < 4 ? 0 : x % 10 < 9 ? 2 * VRAM_SIZE : VRAM_SIZE / 2;
}

/* Open a fresh reference device; @cfg (an op parameter) also sets runtime
 * PM up, most of the time, so that a device spends its life cycling. */
static struct mdev *dev_open(unsigned wake_us, uint32_t cfg)
{
	struct ugpu_rpm_stats rs = { .size = sizeof(rs) };
	struct ugpu_device_info info = { .size = sizeof(info) };
	struct sim_opts so;
	struct mdev *d;
	char uri[300];
	int r;

	if (ndevs >= MAXDEV)
		return NULL;
	d = &devs[ndevs];
	memset(d, 0, sizeof(*d));
	d->id = ndevs;
	sim_opts_init(&so);
	so.vram_size = VRAM_SIZE;
	so.wake_latency_us = wake_us;
	so.cfg_dead_in_d3cold = (cfg >> 16) % 3 == 0; /* must not look like a removal */
	so.exec_queues = 1 + (cfg >> 20) % 4; /* fewer hardware queues than the model's queues, often */
	r = sim_start(&so, &d->sim);
	if (r)
		fail("setup", "sim_start: %s", strerror(-r));
	snprintf(uri, sizeof(uri), "vfio-user:%s", sim_socket_path(d->sim, 0));
	r = ugpu_device_open(ctx, uri, &d->dev);
	if (r)
		fail("setup", "ugpu_device_open(%s): %s", uri, ugpu_strerror(r));
	ndevs++;
	cur = d->id;
	T.devices++;
	d->life = D_PRESENT;
	d->pm = UGPU_PM_ACTIVE;
	d->allowed = 0;
	d->delay = 1000;
	d->thresh = 300 * MiB;
	expect(ugpu_device_set_removal_callback(d->dev, removal_cb, d), &(struct eset){ 1, { 0 } }, d,
	       "ugpu_device_set_removal_callback");
	/* the defaults the headers give */
	expect(ugpu_device_query(d->dev, &info), &(struct eset){ 1, { 0 } }, d, "ugpu_device_query");
	if (info.vram_size != VRAM_SIZE || !(info.caps & UGPU_DEVICE_CAP_D3COLD) ||
	    info.power_state != UGPU_POWER_D0)
		fail("query", "a fresh reference device: vram %" PRIu64 " caps 0x%x power %d",
		     info.vram_size, info.caps, info.power_state);
	expect(ugpu_device_rpm_stats(d->dev, &rs), &(struct eset){ 1, { 0 } }, d, "ugpu_device_rpm_stats");
	if (rs.allowed || rs.autosuspend_delay_ms != 1000 || rs.d3cold_threshold != 300 * MiB ||
	    rs.usage != 0)
		fail("rpm", "after open: allowed %d delay %d threshold %" PRIu64 " usage %u; the header "
		     "says forbidden, 1000 ms, 300 MiB, 0", rs.allowed, rs.autosuspend_delay_ms,
		     rs.d3cold_threshold, rs.usage);
	tr(" -> dev%d (wake %u us%s, %u exec queues)", d->id, wake_us,
	   so.cfg_dead_in_d3cold ? ", config space all-ones in D3cold" : "", so.exec_queues);
	if (cfg % 4) {
		struct eset ok = es1(0);

		d->delay = (int)((cfg >> 2) % 21);
		d->thresh = thresh_choice(cfg >> 8);
		expect(ugpu_device_rpm_set_autosuspend_delay(d->dev, d->delay), &ok, d,
		       "ugpu_device_rpm_set_autosuspend_delay");
		expect(ugpu_device_rpm_set_d3cold_threshold(d->dev, d->thresh), &ok, d,
		       "ugpu_device_rpm_set_d3cold_threshold");
		expect(ugpu_device_rpm_allow(d->dev, true), &ok, d, "ugpu_device_rpm_allow");
		d->allowed = 1;
		d->d3cold_ever = d->thresh != 0;
		tr(", rpm allowed, delay %d ms, D3cold threshold %" PRIu64, d->delay, d->thresh);
	}
	return d;
}

/* ------------------------------------------------------------------------ */
/* GPU VMs, binds, queues and kernels (include/ugpu/vm.h): the model.       */
/*
 * Per device up to VM_PER_DEV VMs, each with up to MAXQ queues and MAXBIND
 * binds (kept sorted by VA) in the model's VA windows. A kernel submitted is
 * pending until the model reaps its fence (in order, per queue); what it did
 * to the shadow is worked out when it is reaped, from the binds and shadow
 * bytes then. That is exact because nothing a kernel sees changes between its
 * run and its reap:
 *  - before the main thread changes (or adopts, or compares) the bytes of a
 *    BO bound in a VM, or binds over the range of a pending kernel, it reaps
 *    the VM's kernels (waiting for them); unless the device is host-prepared
 *    or suspended by the main thread: launches are stopped then ("waits and
 *    runs after resume"), so what did not end before has not run, and runs
 *    after resume on what the model has by then;
 *  - two queues never have pending kernels on the same bytes when one of
 *    them writes: such a submission waits for the other queue, or is skipped;
 *  - writer threads never own a bound BO.
 * A kernel that ends other than completed (-EFAULT, -EIO, -ECANCELED) may have
 * done part of its work: each u64 word it could have written becomes
 * unknown, and the next check reads it back (the rest is still checked).
 */
#define MAXVM 12 /* VMs at once, every device */
#define VM_PER_DEV 3
#define MAXQ 3 /* queues per VM */
#define MAXBIND 24 /* binds per VM */
#define MAXPEND 40 /* kernels not reaped yet, per queue */
#define NHIST 8 /* results kept per queue, to read again */
#define PG 4096ull
#define VA_BASE ((1ull << 39) - 4 * MiB) /* the model's VA window, across a 512 GiB (and so a
					      * 1 GiB and a 2 MiB) boundary of the page tables... */
#define VA_PAGES 2048u /* ...of 8 MiB, */
#define VA_TOP_PAGES 64u /* and a small one at the very top of the 48-bit range */
#define VA_TOP ((1ull << UGPU_VM_VA_BITS) - VA_TOP_PAGES * PG)
#define KMAX_BYTES (256 * 1024ull) /* longest kernel */
#define KWAIT_MS 10000 /* a kernel that can run ends within this */
#define KWAIT_RM_MS 30000 /* ...or the removal in flight cancels it within this */

struct mbind {
	uint64_t va, bytes, off;
	int bo; /* slot in bos[] */
	uint32_t flags;
};

struct mkern {
	uint64_t fence;
	uint32_t n; /* kernels: fences fence .. fence + n - 1 (> 1 only for a flood) */
	bool flood; /* n identical reads (KFLOOD); reaped in parts as they end */
	enum ugpu_kernel_op op;
	uint64_t va, bytes, value;
	unsigned inj; /* injections armed at some point of its life */
	bool rm; /* its device was removed (or closed) at some point of its life */
	bool host; /* a host-suspend transition at some point of its life */
	bool held; /* not ended while launches were stopped by a host suspend the model
		    * knows of: it must not end before resume or cancel */
};

struct mhist {
	uint64_t fence;
	int status;
	uint64_t sum;
};

struct mq {
	struct ugpu_queue *q;
	int id;
	uint64_t submitted; /* fences handed out */
	uint64_t reaped; /* every fence up to it was reaped */
	struct mkern pend[MAXPEND];
	int npend;
	struct mhist hist[NHIST];
	int nhist;
};

struct mvm {
	bool used;
	int id, dev;
	struct ugpu_vm *vm;
	uint32_t flags;
	uint64_t mstart, msize;
	struct mq q[MAXQ];
	int nq;
	struct mbind b[MAXBIND];
	int nb;
	uint64_t unbound_va; /* where the last unbind was (a bind there tests the TLB drop) */
};

static struct mvm vms[MAXVM];
static int next_vm_id, next_q_id;

static const char *kop_name(int op)
{
	return op == UGPU_KERNEL_READ_SUM ? "read-sum" : op == UGPU_KERNEL_WRITE ? "write"
		: op == UGPU_KERNEL_ATOMIC_ADD ? "atomic-add" : "bad-op";
}

static const char *acc_name(int a)
{
	return a == UGPU_ACCESS_READ ? "read" : a == UGPU_ACCESS_WRITE ? "write"
		: a == UGPU_ACCESS_ATOMIC ? "atomic" : "?";
}

/* Launches are stopped: the main thread host-prepared or suspended the
 * device (a kernel not ended then waits for resume or cancel). */
static bool dev_frozen(const struct mdev *d)
{
	return d->life == D_PRESENT && (d->pm == UGPU_PM_PREPARED || d->pm == UGPU_PM_SUSPENDED);
}

/* May the main thread wait for @d's kernels (bounded)? Not while launches
 * are stopped (only the main thread resumes) or a notifier cycle may stop
 * them; a removal in flight cancels what has not ended; after removal or
 * close every kernel has ended. */
static bool dev_can_wait(const struct mdev *d)
{
	if (d->life == D_PRESENT)
		return !dev_frozen(d) && d->pm != PM_UNKNOWN;
	return true;
}

static int vm_pend(const struct mvm *v)
{
	int n = 0;

	for (int i = 0; i < v->nq; i++)
		n += v->q[i].npend;
	return n;
}

/* Kernels submitted on @d and not reaped (each holds a runtime-PM reference
 * until it ends). */
static uint64_t dev_unreaped(const struct mdev *d)
{
	uint64_t n = 0;

	for (int i = 0; i < MAXVM; i++) {
		const struct mvm *v = &vms[i];

		if (!v->used || v->dev != d->id)
			continue;
		for (int j = 0; j < v->nq; j++)
			for (int k = 0; k < v->q[j].npend; k++)
				n += v->q[j].pend[k].n;
	}
	return n;
}

static uint64_t q_unreaped(const struct mq *q)
{
	uint64_t n = 0;

	for (int k = 0; k < q->npend; k++)
		n += q->pend[k].n;
	return n;
}

static bool vm_has_bo(const struct mvm *v, int bo)
{
	for (int i = 0; i < v->nb; i++)
		if (v->b[i].bo == bo)
			return true;
	return false;
}

/* Does [va, +bytes) overlap a bind of @v? */
static bool va_overlap(const struct mvm *v, uint64_t va, uint64_t bytes)
{
	for (int i = 0; i < v->nb; i++)
		if (v->b[i].va < va + bytes && va < v->b[i].va + v->b[i].bytes)
			return true;
	return false;
}

/* ---- unknown words ---- */

static void unk_set(struct mbo *b, uint64_t off, uint64_t len)
{
	if (!len)
		return;
	if (!b->unk) {
		b->unk = calloc(b->size / 8, 1);
		if (!b->unk)
			fail("setup", "out of memory");
	}
	for (uint64_t w = off / 8; w < (off + len + 7) / 8 && w < b->size / 8; w++)
		if (!b->unk[w]) {
			b->unk[w] = 1;
			b->nunk++;
		}
}

/* Words wholly inside [off, +len) are known again. */
static void unk_clear(struct mbo *b, uint64_t off, uint64_t len)
{
	if (!b->nunk)
		return;
	for (uint64_t w = (off + 7) / 8; (w + 1) * 8 <= off + len; w++)
		if (b->unk[w]) {
			b->unk[w] = 0;
			b->nunk--;
		}
}

static bool unk_any(const struct mbo *b, uint64_t off, uint64_t len)
{
	if (b->unknown)
		return true;
	if (!b->nunk || !len)
		return false;
	for (uint64_t w = off / 8; w < (off + len + 7) / 8 && w < b->size / 8; w++)
		if (b->unk[w])
			return true;
	return false;
}

/* A whole-BO "unknown" as per-word marks, so that a kernel can make part of
 * it known again. */
static void unk_expand(struct mbo *b)
{
	if (!b->unknown)
		return;
	unk_set(b, 0, b->size);
	b->unknown = false;
}

/* Adopt what was read back (@got: the whole BO) for every unknown word. */
static void unk_adopt(struct mbo *b, const uint8_t *got)
{
	if (!b->nunk)
		return;
	for (uint64_t w = 0; w < b->size / 8; w++)
		if (b->unk[w]) {
			memcpy(b->shadow + 8 * w, got + 8 * w, 8);
			b->unk[w] = 0;
		}
	b->nunk = 0;
}

static void mbo_free(struct mbo *b)
{
	free(b->shadow);
	free(b->unk);
	memset(b, 0, sizeof(*b));
}

/* A bind of @bo went (unbind, VM destroyed): an orphan goes with its last. */
static void bind_dropped(int bo)
{
	struct mbo *b = &bos[bo];

	if (b->nbinds)
		b->nbinds--;
	if (b->orphan && !b->nbinds) {
		/* freed now: like a put, it may count in bos_lost, no longer listed */
		if (b->may_lose && bdev(b)->life == D_REMOVING)
			bdev(b)->rm_puts++;
		mbo_free(b);
	}
}

/* ---- what a kernel touches ---- */

struct seg {
	int bo;
	uint64_t off, len;
	bool ro;
};

struct kwalk {
	struct seg s[MAXBIND];
	int n;
	bool fault;
	uint64_t fault_va; /* the first page that faults (unbound; or read-only for a write) */
};

static void kern_walk(const struct mvm *v, enum ugpu_kernel_op op, uint64_t va, uint64_t bytes,
		      struct kwalk *w)
{
	uint64_t pos = va, end = va + bytes;
	bool wr = op != UGPU_KERNEL_READ_SUM;

	w->n = 0;
	w->fault = false;
	w->fault_va = 0;
	while (pos < end) {
		const struct mbind *bd = NULL;
		uint64_t next = end, e;

		for (int i = 0; i < v->nb; i++) {
			const struct mbind *x = &v->b[i];

			if (x->va <= pos && pos < x->va + x->bytes) {
				bd = x;
				break;
			}
			if (x->va > pos && x->va < next)
				next = x->va;
		}
		if (!bd) {
			if (!w->fault) {
				w->fault = true;
				w->fault_va = pos & ~(PG - 1);
			}
			pos = next;
			continue;
		}
		e = bd->va + bd->bytes < end ? bd->va + bd->bytes : end;
		if (wr && (bd->flags & UGPU_BIND_READONLY) && !w->fault) {
			w->fault = true;
			w->fault_va = pos & ~(PG - 1);
		}
		if (w->n < MAXBIND)
			w->s[w->n++] = (struct seg){ bd->bo, bd->off + (pos - bd->va), e - pos,
						     (bd->flags & UGPU_BIND_READONLY) != 0 };
		pos = e;
	}
}

static bool walks_overlap(const struct kwalk *a, const struct kwalk *b)
{
	for (int i = 0; i < a->n; i++)
		for (int j = 0; j < b->n; j++)
			if (a->s[i].bo == b->s[j].bo && a->s[i].off < b->s[j].off + b->s[j].len &&
			    b->s[j].off < a->s[i].off + a->s[i].len)
				return true;
	return false;
}

/* Every word a write kernel could have written is unknown now. */
static void walk_unknown(const struct kwalk *w)
{
	for (int i = 0; i < w->n; i++)
		if (!w->s[i].ro)
			unk_set(&bos[w->s[i].bo], w->s[i].off, w->s[i].len);
}

static uint64_t sh64(const struct mbo *b, uint64_t off)
{
	uint64_t x;

	memcpy(&x, b->shadow + off, 8);
	return x;
}

/* A read-sum answered another sum: say what the CPU reads there too, so the
 * report tells a stale translation from bytes that changed. */
static void sum_mismatch(const struct mvm *v, const struct mkern *k, const struct kwalk *w, uint64_t got,
			 uint64_t want)
{
	char m[1200];
	size_t n = 0;

	for (int i = 0; i < w->n && n < sizeof(m) - 200; i++) {
		struct mbo *b = &bos[w->s[i].bo];
		uint64_t shs = 0, cpus = 0;
		uint8_t *buf = malloc(w->s[i].len);
		int r = -ENOMEM;

		for (uint64_t o = 0; o < w->s[i].len; o += 8)
			shs += sh64(b, w->s[i].off + o);
		if (buf && !b->orphan && !b->closed)
			r = ugpu_bo_read(b->bo, w->s[i].off, buf, w->s[i].len);
		if (r == 0)
			for (uint64_t o = 0; o < w->s[i].len; o += 8) {
				uint64_t x;

				memcpy(&x, buf + o, 8);
				cpus += x;
			}
		free(buf);
		n += (size_t)snprintf(m + n, sizeof(m) - n, "; %s [0x%" PRIx64 ", +%" PRIu64
				      "): model sum 0x%" PRIx64 ", CPU reads %s0x%" PRIx64 " (in %s)",
				      bname(b), w->s[i].off, w->s[i].len, shs, r ? "(read failed) " : "",
				      cpus, b->orphan ? "?" : pl_name(placement_of(b)));
	}
	fail("bytes", "a read-sum kernel on VM#%d [0x%" PRIx64 ", +%" PRIu64 ") returned sum 0x%" PRIx64
	     ", the model says 0x%" PRIx64 "%s [%s]", v->id, k->va, k->bytes, got, want, m,
	     dstate(&devs[v->dev]));
}

static void hist_add(struct mq *q, uint64_t fence, int status, uint64_t sum)
{
	if (q->nhist == NHIST) {
		memmove(q->hist, q->hist + 1, (NHIST - 1) * sizeof(q->hist[0]));
		q->nhist--;
	}
	q->hist[q->nhist++] = (struct mhist){ fence, status, sum };
}

/* Kernel @k of @q ended (@res), or its result is gone (@res NULL: -ESTALE):
 * check it against the model and apply it to the shadow. */
/* A count that moves with every host suspend of @d that ended, well or not:
 * a NO_RESTORE BO no BO call may name (an orphan) may have been discarded
 * when it moved. */
static uint64_t hs_epoch(struct mdev *d)
{
	struct ugpu_pm_stats ps = { .size = sizeof(ps) };

	if (d->life == D_CLOSED || ugpu_device_pm_stats(d->dev, &ps))
		return 0;
	return ps.cycles + ps.failures;
}

static void kern_end(struct mvm *v, struct mq *q, const struct mkern *k, uint64_t fence,
		     const struct ugpu_kernel_result *res)
{
	struct mdev *d = &devs[v->dev];
	enum ugpu_access acc = k->op == UGPU_KERNEL_READ_SUM ? UGPU_ACCESS_READ
		: k->op == UGPU_KERNEL_WRITE ? UGPU_ACCESS_WRITE : UGPU_ACCESS_ATOMIC;
	bool wr = k->op != UGPU_KERNEL_READ_SUM, nr = false;
	bool dropped[MAXBIND] = { false };
	struct eset s = { 0 };
	struct kwalk w;
	int st;

	kern_walk(v, k->op, k->va, k->bytes, &w);
	/* NO_RESTORE bytes may have gone with a host suspend in its life */
	for (int i = 0; i < w.n; i++) {
		struct mbo *b = &bos[w.s[i].bo];

		if (!(b->flags & UGPU_BO_NO_RESTORE))
			continue;
		if (k->host || d->pm == PM_UNKNOWN)
			nr = true;
		if (b->orphan) {
			/* its discarded count cannot be asked: a suspend since
			 * it was last looked at may have dropped it */
			uint64_t e = hs_epoch(bdev(b));

			if (e != b->orphan_epoch) {
				b->orphan_epoch = e;
				dropped[i] = true;
				nr = true;
			}
		} else if (!b->closed) {
			struct ugpu_bo_info info = { .size = sizeof(info) };

			if (ugpu_bo_query(b->bo, &info) == 0 && info.discarded != b->discarded) {
				b->discarded = info.discarded;
				dropped[i] = true;
				nr = true;
			}
		}
	}
	if (!res) {
		tr(" [q%d #%" PRIu64 " stale]", q->id, fence);
		if (wr)
			walk_unknown(&w);
		goto out;
	}
	st = res->status;
	es_add(&s, w.fault ? -EFAULT : 0);
	if (k->inj)
		es_add(&s, -EIO); /* "the device reported an error" */
	if (k->rm || d->life != D_PRESENT) {
		es_add(&s, -ECANCELED);
		es_add(&s, -EIO);
	}
	tr(" [q%d #%" PRIu64 " %s %s]", q->id, fence, kop_name(k->op), ename(st));
	expect(st, &s, d, "ugpu_fence_wait(VM#%d q%d, fence %" PRIu64 "): status of a %s kernel on "
	       "[0x%" PRIx64 ", +%" PRIu64 ")%s", v->id, q->id, fence, kop_name(k->op), k->va, k->bytes,
	       w.fault ? " (faults)" : "");
	if (st == -EFAULT && (res->fault_va != w.fault_va || (int)res->fault_access != (int)acc))
		fail("kernel", "a %s kernel on VM#%d [0x%" PRIx64 ", +%" PRIu64 ") faulted at 0x%" PRIx64
		     " (%s); the binds say the first page that faults is 0x%" PRIx64 " (%s) [%s]",
		     kop_name(k->op), v->id, k->va, k->bytes, res->fault_va,
		     acc_name((int)res->fault_access), w.fault_va, acc_name((int)acc), dstate(d));
	if (st == 0)
		T.kernels_done++;
	else if (st == -EFAULT)
		T.kernels_faulted++;
	else
		T.kernels_other++;
	if (st == 0) {
		T.kernel_bytes += k->bytes;
		if (k->op == UGPU_KERNEL_READ_SUM) {
			uint64_t sum = 0;
			bool known = !nr;

			for (int i = 0; i < w.n; i++) {
				const struct mbo *b = &bos[w.s[i].bo];

				known = known && !unk_any(b, w.s[i].off, w.s[i].len);
				for (uint64_t o = 0; o < w.s[i].len; o += 8)
					sum += sh64(b, w.s[i].off + o);
			}
			if (known) {
				T.sums_checked++;
				if (sum != res->sum)
					sum_mismatch(v, k, &w, res->sum, sum);
			} else {
				tr(" (sum unchecked: unknown words)");
			}
		} else {
			for (int i = 0; i < w.n; i++) {
				struct mbo *b = &bos[w.s[i].bo];

				if (k->op == UGPU_KERNEL_WRITE)
					unk_expand(b);
				for (uint64_t o = 0; o < w.s[i].len; o += 8) {
					uint64_t x = k->op == UGPU_KERNEL_WRITE ? k->value
						: sh64(b, w.s[i].off + o) + k->value;

					memcpy(b->shadow + w.s[i].off + o, &x, 8);
				}
				if (k->op == UGPU_KERNEL_WRITE)
					unk_clear(b, w.s[i].off, w.s[i].len);
			}
		}
	} else if (wr) {
		walk_unknown(&w);
	}
	hist_add(q, fence, st, k->op == UGPU_KERNEL_READ_SUM && st == 0 ? res->sum : 0);
out:
	for (int i = 0; i < w.n; i++) {
		struct mbo *b = &bos[w.s[i].bo];

		if (dropped[i])
			b->unknown = true; /* the drop may have come after the kernel */
		else if (nr && wr && (b->flags & UGPU_BO_NO_RESTORE))
			unk_set(b, w.s[i].off, w.s[i].len);
	}
}

/* Wait for @fence through an eventfd; then the fence must poll complete. */
static int wait_efd(struct mvm *v, struct mq *q, uint64_t fence, int ms,
		    struct ugpu_kernel_result *res)
{
	struct pollfd p = { .events = POLLIN };
	int fd = -1, r, n;

	r = ugpu_fence_eventfd(q->q, fence, &fd);
	expect(r, &(struct eset){ 1, { 0 } }, &devs[v->dev], "ugpu_fence_eventfd(VM#%d q%d, %" PRIu64 ")",
	       v->id, q->id, fence);
	p.fd = fd;
	do
		n = poll(&p, 1, ms);
	while (n < 0 && errno == EINTR);
	close(fd);
	r = ugpu_fence_wait(q->q, fence, 0, res);
	if (n > 0 && r == -EAGAIN)
		fail("fence", "the eventfd of fence %" PRIu64 " (VM#%d q%d) became readable and the fence "
		     "polls -EAGAIN", fence, v->id, q->id);
	if (n == 0 && r == 0)
		fail("fence", "fence %" PRIu64 " (VM#%d q%d) completed and its eventfd stayed unreadable "
		     "for %d ms", fence, v->id, q->id, ms);
	return r == -EAGAIN ? -ETIMEDOUT : r;
}

/* Check the results of fences @from..@to of the flood @k (each ended) */
static void flood_results(struct mvm *v, struct mq *q, const struct mkern *k, uint64_t from,
			  uint64_t to)
{
	struct mdev *d = &devs[v->dev];
	struct ugpu_kernel_result res;
	struct kwalk w;
	struct eset fs;
	uint64_t f;
	int r;

	kern_walk(v, k->op, k->va, k->bytes, &w);
	fs = es1(w.fault ? -EFAULT : 0);
	if (k->inj)
		es_add(&fs, -EIO);
	if (k->rm || d->life != D_PRESENT) {
		es_add(&fs, -ECANCELED);
		es_add(&fs, -EIO);
	}
	for (f = from; f <= to; f++) {
		struct eset ws = es1(0);

		memset(&res, 0, sizeof(res));
		res.size = sizeof(res);
		r = ugpu_fence_wait(q->q, f, 0, &res);
		if (q->submitted - f >= UGPU_QUEUE_RESULTS)
			es_add(&ws, -ESTALE);
		expect(r, &ws, d, "ugpu_fence_wait(VM#%d q%d, fence %" PRIu64 " of a flood, 0 ms)",
		       v->id, q->id, f);
		if (r == 0)
			expect(res.status, &fs, d, "ugpu_fence_wait(VM#%d q%d, fence %" PRIu64
			       "): status of a flood kernel", v->id, q->id, f);
	}
}

/*
 * A flood whose last kernel has not ended may have ended its first ones (it
 * ran before launches stopped, or between a notifier's cancel and the next
 * suspend): reap those, so that the kernels counted as not ended
 * (q_unreaped(), "-EAGAIN: UGPU_QUEUE_DEPTH kernels have not ended") are
 * the ones that have not.
 */
static void reap_flood_part(struct mvm *v, struct mq *q)
{
	struct mdev *d = &devs[v->dev];
	struct mkern *k = &q->pend[0];
	uint64_t last = k->fence + k->n - 1, f;

	for (f = k->fence; f < last; f++) {
		struct ugpu_kernel_result res = { .size = sizeof(res) };

		if (ugpu_fence_wait(q->q, f, 0, &res) == -EAGAIN)
			break;
	}
	if (f == k->fence)
		return;
	if (k->held && dev_frozen(d))
		fail("pm", "a flood kernel on VM#%d (fence %" PRIu64 ") ended while the device is "
		     "host-%s: vm.h says it waits and runs after resume [%s]", v->id, k->fence,
		     pm_name(d->pm), dstate(d));
	flood_results(v, q, k, k->fence, f - 1);
	tr(" [q%d flood #%" PRIu64 "-%" PRIu64 " ended]", q->id, k->fence, f - 1);
	k->n -= (uint32_t)(f - k->fence);
	k->fence = f;
	q->reaped = f - 1;
}

/* Reap what ended of @q's kernels, in order: poll each, or wait for it
 * (bounded) when @wait; @how 1: through an eventfd. True when none is left. */
static bool reap_q(struct mvm *v, struct mq *q, bool wait, int how)
{
	struct mdev *d = &devs[v->dev];

	while (q->npend) {
		struct mkern k = q->pend[0];
		uint64_t last = k.fence + k.n - 1;
		struct ugpu_kernel_result res;
		int ms = !wait ? 0 : d->life == D_PRESENT ? KWAIT_MS : KWAIT_RM_MS, r;
		struct eset s = es1(0);

		memset(&res, 0, sizeof(res));
		res.size = sizeof(res);
		if (how == 1 && ms)
			r = wait_efd(v, q, last, ms, &res);
		else
			r = ugpu_fence_wait(q->q, last, ms, &res);
		if (!ms && r == -EAGAIN) {
			if (k.flood)
				reap_flood_part(v, q);
			return false;
		}
		if (ms && r == -ETIMEDOUT)
			fail("hang", "ugpu_fence_wait(VM#%d q%d, fence %" PRIu64 "): a %s kernel on [0x%" PRIx64
			     ", +%" PRIu64 ") did not end within %d ms [%s]", v->id, q->id, last,
			     kop_name(k.op), k.va, k.bytes, ms, dstate(d));
		if (q->submitted - last >= UGPU_QUEUE_RESULTS)
			es_add(&s, -ESTALE);
		expect(r, &s, d, "ugpu_fence_wait(VM#%d q%d, fence %" PRIu64 ", %d ms)", v->id, q->id, last, ms);
		if (k.held && dev_frozen(d) && k.bytes)
			fail("pm", "a %s kernel on VM#%d (fence %" PRIu64 ") ended while the device is "
			     "host-%s: vm.h says it waits and runs after resume [%s]", kop_name(k.op), v->id,
			     last, pm_name(d->pm), dstate(d));
		memmove(q->pend, q->pend + 1, (size_t)(q->npend - 1) * sizeof(q->pend[0]));
		q->npend--;
		if (k.flood) {
			/* a flood of identical reads: each result */
			flood_results(v, q, &k, k.fence, last);
			tr(" [q%d flood #%" PRIu64 "-%" PRIu64 " ended]", q->id, k.fence, last);
		} else {
			kern_end(v, q, &k, last, r == 0 ? &res : NULL);
		}
		q->reaped = last;
	}
	return true;
}

static bool reap_vm(struct mvm *v, bool wait)
{
	bool all = true;

	for (int i = 0; i < v->nq; i++)
		all &= reap_q(v, &v->q[i], wait, 0);
	return all;
}

static void reap_dev(struct mdev *d)
{
	for (int i = 0; i < MAXVM; i++)
		if (vms[i].used && vms[i].dev == d->id && vm_pend(&vms[i]))
			reap_vm(&vms[i], dev_can_wait(d));
}

/* The bytes of @b are the model's to check or change: no kernel that may
 * have touched them is left unreaped, unless launches are stopped (then
 * those left have not run). False if a kernel may be running on it. */
static bool bo_gpu_settle(struct mbo *b)
{
	struct mdev *d = bdev(b);
	bool quiet = true;

	if (!b->nbinds)
		return true;
	for (int i = 0; i < MAXVM; i++) {
		struct mvm *v = &vms[i];

		if (!v->used || !vm_pend(v) || !vm_has_bo(v, (int)(b - bos)))
			continue;
		if (!reap_vm(v, dev_can_wait(d)) && !dev_frozen(d))
			quiet = false;
	}
	return quiet;
}

/* A kernel may run now on a VM @b is bound in: the BO does not move then
 * (migrate and pin answer -EBUSY, eviction skips it). */
static bool gpu_may_run(const struct mbo *b)
{
	if (!b->nbinds || dev_frozen(bdev(b)))
		return false;
	for (int i = 0; i < MAXVM; i++)
		if (vms[i].used && vms[i].dev == b->dev && vm_pend(&vms[i]) &&
		    vm_has_bo(&vms[i], (int)(b - bos)))
			return true;
	return false;
}

/* VRAM the page tables of @d's VMs hold (pinned, contiguous). */
static uint64_t vm_pt_bytes(const struct mdev *d)
{
	uint64_t n = 0;

	for (int i = 0; i < MAXVM; i++) {
		struct ugpu_vm_info vi = { .size = sizeof(vi) };

		if (vms[i].used && vms[i].dev == d->id && ugpu_vm_query(vms[i].vm, &vi) == 0)
			n += vi.page_table_bytes;
	}
	return n;
}

/* Something happened to @d during the life of its pending kernels. */
static void kern_mark(struct mdev *d, unsigned inj, bool rm, bool host, bool unhold)
{
	for (int i = 0; i < MAXVM; i++) {
		struct mvm *v = &vms[i];

		if (!v->used || v->dev != d->id)
			continue;
		for (int j = 0; j < v->nq; j++)
			for (int k = 0; k < v->q[j].npend; k++) {
				struct mkern *kk = &v->q[j].pend[k];

				kk->inj |= inj;
				kk->rm |= rm;
				kk->host |= host;
				if (unhold)
					kk->held = false;
			}
	}
	if (host) /* an orphan cannot be asked whether its NO_RESTORE bytes went */
		for (int i = 0; i < MAXBO; i++)
			if (bos[i].used && bos[i].orphan && bos[i].dev == d->id &&
			    (bos[i].flags & UGPU_BO_NO_RESTORE))
				bos[i].unknown = true;
}

/* Launches were just stopped by a host suspend: what ended before is
 * reaped; the rest must not end until resume or cancel. */
static void kern_freeze(struct mdev *d)
{
	reap_dev(d);
	for (int i = 0; i < MAXVM; i++) {
		struct mvm *v = &vms[i];

		if (!v->used || v->dev != d->id)
			continue;
		for (int j = 0; j < v->nq; j++)
			for (int k = 0; k < v->q[j].npend; k++)
				v->q[j].pend[k].held = true;
	}
}

/* Tables a VM needs for the model's binds: the root, and one per distinct
 * 512 GiB, 1 GiB and 2 MiB region touched (docs/vm.md: emptied tables are
 * given back, the root stays). */
static uint64_t vm_tables(const struct mvm *v)
{
	uint64_t keys[3][MAXBIND * 3];
	int nk[3] = { 0, 0, 0 };
	static const int sh[3] = { 21, 30, 39 };

	for (int i = 0; i < v->nb; i++)
		for (int l = 0; l < 3; l++)
			for (uint64_t x = v->b[i].va >> sh[l]; x <= (v->b[i].va + v->b[i].bytes - 1) >> sh[l];
			     x++) {
				bool have = false;

				for (int j = 0; j < nk[l]; j++)
					have |= keys[l][j] == x;
				if (!have && nk[l] < MAXBIND * 3)
					keys[l][nk[l]++] = x;
			}
	return 1 + (uint64_t)nk[0] + (uint64_t)nk[1] + (uint64_t)nk[2];
}

/* ugpu_vm_query() against the model. */
static void vm_check(struct mvm *v, struct ugpu_vm_info *out)
{
	struct ugpu_vm_info vi;
	struct mdev *d = &devs[v->dev];
	uint64_t bytes = 0;

	memset(&vi, 0, sizeof(vi));
	vi.size = sizeof(vi);
	expect(ugpu_vm_query(v->vm, &vi), &(struct eset){ 1, { 0 } }, d, "ugpu_vm_query(VM#%d)", v->id);
	for (int i = 0; i < v->nb; i++)
		bytes += v->b[i].bytes;
	if (vi.binds != (uint64_t)v->nb || vi.bound_bytes != bytes || vi.queues != (uint32_t)v->nq ||
	    vi.flags != v->flags || vi.mirror_start != v->mstart || vi.mirror_size != v->msize)
		fail("vm", "ugpu_vm_query(VM#%d): %" PRIu64 " binds of %" PRIu64 " bytes, %u queues, flags 0x%x, "
		     "mirror [0x%" PRIx64 ", +0x%" PRIx64 "); the model has %d binds of %" PRIu64 " bytes, %d "
		     "queues, flags 0x%x, mirror [0x%" PRIx64 ", +0x%" PRIx64 ") [%s]", v->id, vi.binds,
		     vi.bound_bytes, vi.queues, vi.flags, vi.mirror_start, vi.mirror_size, v->nb, bytes,
		     v->nq, v->flags, v->mstart, v->msize, dstate(d));
	if ((d->life == D_REMOVED || d->life == D_CLOSED) && !vi.dead)
		fail("vm", "ugpu_vm_query(VM#%d): not dead after its device was %s", v->id,
		     life_name(d->life));
	if (d->life == D_PRESENT && vi.dead)
		fail("vm", "ugpu_vm_query(VM#%d): dead, and its device is present [%s]", v->id, dstate(d));
	if (vi.dead && (vi.page_tables || vi.page_table_bytes))
		fail("vm", "ugpu_vm_query(VM#%d): dead with %" PRIu64 " page tables in %" PRIu64 " bytes",
		     v->id, vi.page_tables, vi.page_table_bytes);
	/* exact while present: an unbind while the device is being removed
	 * writes nothing (vm.h), and the tables go with the removal */
	if (!vi.dead && d->life == D_PRESENT &&
	    (vi.page_tables != vm_tables(v) || vi.page_table_bytes < vi.page_tables * PG))
		fail("vm", "ugpu_vm_query(VM#%d): %" PRIu64 " page tables in %" PRIu64 " bytes; its %d binds "
		     "need %" PRIu64 " tables (docs/vm.md: emptied tables go back, the root stays)", v->id,
		     vi.page_tables, vi.page_table_bytes, v->nb, vm_tables(v));
	if (out)
		*out = vi;
}

/* ugpu_queue_query() against the model. */
static void q_check(struct mvm *v, struct mq *q)
{
	struct ugpu_queue_info qi = { .size = sizeof(qi) };
	struct mdev *d = &devs[v->dev];

	expect(ugpu_queue_query(q->q, &qi), &(struct eset){ 1, { 0 } }, d, "ugpu_queue_query(VM#%d q%d)",
	       v->id, q->id);
	if (qi.submitted != q->submitted || qi.completed < q->reaped || qi.completed > qi.submitted ||
	    (!q->npend && (qi.completed != qi.submitted || qi.waiting || qi.running)) ||
	    qi.waiting + (qi.running ? 1u : 0u) > qi.submitted - qi.completed)
		fail("queue", "ugpu_queue_query(VM#%d q%d): submitted %" PRIu64 " completed %" PRIu64
		     " waiting %u running %d; the model submitted %" PRIu64 ", reaped up to %" PRIu64
		     " (%d pending) [%s]", v->id, q->id, qi.submitted, qi.completed, qi.waiting, qi.running,
		     q->submitted, q->reaped, q->npend, dstate(d));
	if (dev_frozen(d) && qi.running)
		fail("queue", "ugpu_queue_query(VM#%d q%d): a kernel runs while the device is host-%s [%s]",
		     v->id, q->id, pm_name(d->pm), dstate(d));
}

/* ------------------------------------------------------------------------ */
/* Checks.                                                                  */

static void report_mismatch(const struct mbo *b, const uint8_t *got, const char *via,
			    const char *why, enum ugpu_placement p)
{
	uint64_t i, first = UINT64_MAX, last = 0, ndiff = 0;
	bool poison;

	for (i = 0; i < b->size; i++)
		if (got[i] != b->shadow[i]) {
			if (first == UINT64_MAX)
				first = i;
			last = i;
			ndiff++;
		}
	poison = first + 8 <= b->size && got[first & ~7ull] == 0xef && got[(first & ~7ull) + 1] == 0xbe &&
		 got[(first & ~7ull) + 2] == 0xad && got[(first & ~7ull) + 3] == 0xde;
	fail("bytes",
	     "%s: %s read through %s differs from the model: %" PRIu64 " bytes in [0x%" PRIx64
	     ", 0x%" PRIx64 "], first at 0x%" PRIx64 ": expected %02x, got %02x%s; now in %s [%s]",
	     why, bname(b), via, ndiff, first, last, first, b->shadow[first], got[first],
	     poison ? " (the device's D3cold poison: the data stayed in VRAM that lost power)" : "",
	     pl_name(p), dstate(bdev(b)));
}

/* Read-check allowed codes for @b now. */
static struct eset es_bo_access(const struct mbo *b, enum ugpu_placement p)
{
	const struct mdev *d = bdev(b);
	struct eset s = { 0 };

	if (b->closed)
		return es1(-ENODEV);
	if (b->lost)
		return es1(-ENODATA);
	if (d->pm == UGPU_PM_SUSPENDED && d->life == D_PRESENT)
		return es1(p == UGPU_PLACEMENT_VRAM ? -EBUSY : 0);
	es_add(&s, 0);
	if (b->may_lose)
		es_add(&s, -ENODATA);
	if (host_maybe_suspended(d) && has_pl(b, UGPU_PLACEMENT_VRAM))
		es_add(&s, -EBUSY);
	if (d->inj & INJ_WAKE) {
		es_add(&s, -EIO);
		es_add(&s, -ETIMEDOUT);
	}
	return s;
}

/* Check one BO against the model: query, every byte through the API, and
 * through its mapping. */
static void check_bo(struct mbo *b, const char *why)
{
	struct ugpu_bo_info info;
	struct mdev *d = bdev(b);
	struct eset s;
	uint8_t *tmp;
	enum touch tm;
	bool adopt = false;
	int r;

	if (!b->used || b->orphan)
		return;
	memset(&info, 0, sizeof(info));
	info.size = sizeof(info);
	r = ugpu_bo_query(b->bo, &info);
	if (b->closed) {
		expect(r, &(struct eset){ 1, { -ENODEV } }, d, "ugpu_bo_query(%s) after close", bname(b));
		return;
	}
	expect(r, &(struct eset){ 1, { 0 } }, d, "%s: ugpu_bo_query(%s)", why, bname(b));
	if (info.bytes != b->size || info.flags != b->flags || info.pin_count != b->pins ||
	    info.cpu_mapped != (b->map != NULL))
		fail("query", "%s: ugpu_bo_query(%s): bytes %" PRIu64 " flags 0x%x pins %u mapped %d",
		     why, bname(b), info.bytes, info.flags, info.pin_count, info.cpu_mapped);
	if (info.lost) {
		if (!b->lost && !b->may_lose)
			fail("lost", "%s: %s is reported lost, and nothing allowed it to be [%s]", why,
			     bname(b), dstate(d));
		if (info.placement != UGPU_PLACEMENT_NONE)
			fail("query", "%s: lost %s has placement %s", why, bname(b), pl_name(info.placement));
		return;
	}
	if (b->lost)
		fail("lost", "%s: %s was reported lost and is not any more", why, bname(b));
	if (!has_pl(b, info.placement) && !(d->life != D_PRESENT && info.placement == UGPU_PLACEMENT_SYSTEM))
		fail("query", "%s: %s is in %s, not one of its placements", why, bname(b),
		     pl_name(info.placement)); /* a removal moves every BO to SYSTEM */
	if (d->life == D_REMOVED && info.placement != UGPU_PLACEMENT_SYSTEM)
		fail("query", "%s: %s is in %s after its device was removed", why, bname(b),
		     pl_name(info.placement));
	if ((b->flags & UGPU_BO_NO_RESTORE) && info.discarded != b->discarded) {
		b->discarded = info.discarded;
		b->unknown = true;
	}
	if (!main_owned(b) || ((b->flags & UGPU_BO_NO_RESTORE) && d->pm == PM_UNKNOWN))
		return; /* bytes change under a writer / may be discarded right now */
	if (!bo_gpu_settle(b))
		return; /* a kernel may be running on it (a notifier cycle may hold it) */
	adopt = b->unknown;
	tmp = malloc(b->size);
	if (!tmp)
		fail("setup", "out of memory");
	s = es_bo_access(b, info.placement);
	r = ugpu_bo_read(b->bo, 0, tmp, b->size);
	expect(r, &s, d, "%s: ugpu_bo_read(%s, whole, in %s)", why, bname(b), pl_name(info.placement));
	if (r == 0) {
		if (adopt) {
			memcpy(b->shadow, tmp, b->size);
			b->unknown = false;
			adopt = false;
			unk_adopt(b, tmp);
		} else if (unk_adopt(b, tmp), memcmp(tmp, b->shadow, b->size)) {
			report_mismatch(b, tmp, "ugpu_bo_read", why, placement_of(b));
		}
		T.bytes_verified += b->size;
	}
	tm = touch_mode(b);
	if (!adopt && !b->unknown && !b->nunk && (tm == T_OK || tm == T_MAYBE)) {
		if (!touch_copy(tmp, b->map, b->size)) {
			if (tm != T_MAYBE)
				fail("sigbus", "%s: reading %s through its mapping raised SIGBUS [%s]", why,
				     bname(b), dstate(d));
			T.sigbus_allowed++;
		} else if (memcmp(tmp, b->shadow, b->size)) {
			report_mismatch(b, tmp, "its CPU mapping", why, placement_of(b));
		} else {
			T.bytes_verified += b->size;
		}
	}
	free(tmp);
}

/* References nobody but the model can drop: its own gets, and the one a
 * host suspend holds from prepare (or suspend) to resume or cancel
 * (docs/suspend.md). */
static uint32_t usage_floor(const struct mdev *d)
{
	bool host = (d->pm == UGPU_PM_PREPARED || d->pm == UGPU_PM_SUSPENDED) && !N.live;

	return (uint32_t)d->gets + (host ? 1 : 0);
}

/* Device-level checks: query, stats, removal state, runtime-PM bookkeeping. */
static void check_dev(struct mdev *d, bool exact_usage)
{
	struct ugpu_device_info info = { .size = sizeof(info) };
	struct ugpu_unplug_info ui = { .size = sizeof(ui) };
	struct ugpu_rpm_stats rs = { .size = sizeof(rs) };
	struct ugpu_pm_stats ps = { .size = sizeof(ps) };
	struct eset ok = es1(0);

	if (d->life == D_CLOSED)
		return;
	expect(ugpu_device_query(d->dev, &info), &ok, d, "ugpu_device_query");
	if (info.vram_size != VRAM_SIZE)
		fail("query", "ugpu_device_query: vram_size %" PRIu64, info.vram_size);
	expect(ugpu_device_unplug_info(d->dev, &ui), &ok, d, "ugpu_device_unplug_info");
	if ((d->life == D_PRESENT && (ui.state != UGPU_UNPLUG_PRESENT || ugpu_device_is_gone(d->dev))) ||
	    (d->life == D_REMOVED && (ui.state != UGPU_UNPLUG_REMOVED || !ugpu_device_is_gone(d->dev))))
		fail("unplug", "ugpu_device_unplug_info: state %s, is_gone %d [%s]",
		     ugpu_unplug_state_name(ui.state), ugpu_device_is_gone(d->dev), dstate(d));
	expect(ugpu_device_pm_stats(d->dev, &ps), &ok, d, "ugpu_device_pm_stats");
	if (d->life == D_PRESENT && d->pm != PM_UNKNOWN && (int)ps.state != d->pm)
		fail("pm", "ugpu_device_pm_stats: state %s, the model says %s", pm_name((int)ps.state),
		     pm_name(d->pm));
	d->ps = ps;
	d->ps_ok = true;
	expect(ugpu_device_rpm_stats(d->dev, &rs), &ok, d, "ugpu_device_rpm_stats");
	d->rs = rs;
	d->rs_ok = true;
	if (d->life != D_PRESENT)
		return;
	if (d->allowed < 0)
		d->allowed = rs.allowed;
	if ((int)rs.allowed != d->allowed || rs.autosuspend_delay_ms != d->delay ||
	    rs.d3cold_threshold != d->thresh)
		fail("rpm", "ugpu_device_rpm_stats: allowed %d delay %d threshold %" PRIu64
		     "; the model set allowed %d delay %d threshold %" PRIu64,
		     rs.allowed, rs.autosuspend_delay_ms, rs.d3cold_threshold, d->allowed, d->delay,
		     d->thresh);
	if (rs.usage < usage_floor(d) || rs.usage > 1000 + dev_unreaped(d))
		fail("rpm", "ugpu_device_rpm_stats: usage %u while the test holds %d references%s",
		     rs.usage, d->gets, usage_floor(d) > (uint32_t)d->gets ? " and host suspend one" : "");
	if (d->allowed == 0 && d->forbid_snap && rs.suspends != d->forbid_suspends)
		fail("rpm", "runtime suspends went from %" PRIu64 " to %" PRIu64
		     " while runtime PM was forbidden [%s]", d->forbid_suspends, rs.suspends, dstate(d));
	if (d->allowed == 0 && d->pm == UGPU_PM_ACTIVE && !d->main_susp &&
	    (rs.state == UGPU_RPM_SUSPENDED || rs.power_state != UGPU_POWER_D0))
		fail("rpm", "runtime PM forbidden but state %s power %d", ugpu_rpm_state_name(rs.state),
		     rs.power_state);
	if (exact_usage)
		reap_dev(d); /* each kernel holds a reference until it ends */
	if (exact_usage && !writers_running && !N.live && d->pm == UGPU_PM_ACTIVE && !dev_unreaped(d)) {
		/* quiet: only transient driver references may remain, briefly */
		double t0 = now_s();

		while (rs.usage != (uint32_t)d->gets && now_s() - t0 < 0.5) {
			sleep_us(2000);
			expect(ugpu_device_rpm_stats(d->dev, &rs), &ok, d, "ugpu_device_rpm_stats");
		}
		if (rs.usage != (uint32_t)d->gets)
			fail("rpm", "ugpu_device_rpm_stats: usage %u with nothing running; the test "
			     "holds %d [%s]", rs.usage, d->gets, dstate(d));
	}
	{
		struct ugpu_device_mem m = { .size = sizeof(m) };

		expect(ugpu_device_mem_stats(d->dev, &m), &ok, d, "ugpu_device_mem_stats");
		if (m.vram_size != VRAM_SIZE || m.vram_used + m.vram_free != m.vram_size ||
		    m.vram_kernel + m.vram_bos != m.vram_used ||
		    m.bos_vram + m.bos_system + m.bos_lost != m.bos)
			fail("mem", "ugpu_device_mem_stats: size %" PRIu64 " used %" PRIu64 " free %" PRIu64
			     " kernel %" PRIu64 " bos %" PRIu64 "; BOs %" PRIu64 " = %" PRIu64 " vram + %" PRIu64
			     " system + %" PRIu64 " lost",
			     m.vram_size, m.vram_used, m.vram_free, m.vram_kernel, m.vram_bos, m.bos,
			     m.bos_vram, m.bos_system, m.bos_lost);
	}
}

static void check_all(const char *why)
{
	bool was = writers_running;
	int i;

	writers_pause();
	for (i = 0; i < ndevs; i++)
		reap_dev(&devs[i]);
	for (i = 0; i < MAXBO; i++)
		check_bo(&bos[i], why);
	for (i = 0; i < ndevs; i++)
		check_dev(&devs[i], false);
	for (i = 0; i < MAXVM; i++)
		if (vms[i].used) {
			vm_check(&vms[i], NULL);
			for (int j = 0; j < vms[i].nq; j++)
				q_check(&vms[i], &vms[i].q[j]);
		}
	since_check = 0;
	if (was)
		writers_resume();
}

/* ------------------------------------------------------------------------ */
/* Removal.                                                                 */

/* May @b lose its contents in a removal of @kind starting now? */
static bool may_lose_now(const struct mdev *d, const struct mbo *b, int kind, bool racing_suspend)
{
	bool host = d->pm != UGPU_PM_ACTIVE || d->main_susp || racing_suspend || (N.live && N.dev == d->id);

	if (b->closed || b->lost || !has_pl(b, UGPU_PLACEMENT_VRAM))
		return false; /* SYSTEM-only: its bytes were never only in VRAM */
	if (kind == RM_SURPRISE) {
		if (d->rm_none)
			return false;
		if (d->pm == UGPU_PM_SUSPENDED && !racing_suspend && !N.live)
			return (b->flags & UGPU_BO_NO_RESTORE) != 0; /* the rest have backups */
		return true;
	}
	/* orderly: only a NO_RESTORE BO while host-suspended (it has no backup),
	 * or a copy / wake failing under fault injection */
	return d->inj || (host && (b->flags & UGPU_BO_NO_RESTORE));
}

static void *rm_main(void *arg)
{
	struct mdev *d = arg;
	int r;

	if (d->rm_delay_us)
		sleep_us(d->rm_delay_us);
	if (d->rm_kind == RM_REQUEST)
		r = sim_unplug_request(d->sim, 0);
	else if (d->rm_kind == RM_SURPRISE)
		r = sim_unplug_surprise(d->sim, 0);
	else
		r = ugpu_device_unplug(d->dev);
	atomic_store(&d->rm_ret, r);
	atomic_store(&d->rm_ret_valid, true);
	return NULL;
}

/* The removal trigger's return, once the removal is known (@ui). */
static void check_rm_ret(struct mdev *d, int r, const struct ugpu_unplug_info *ui)
{
	struct eset s = { 0 };

	if (d->rm_kind == RM_API) {
		es_add(&s, ui->kind == UGPU_UNPLUG_SURPRISE ? -ENODEV : ui->bos_lost ? -EIO : 0);
		if (d->rm_inj & INJ_WAKE)
			es_add(&s, -ENODEV); /* could not wake it: went on as a surprise */
	} else {
		es_add(&s, 0);
	}
	expect(r, &s, d, d->rm_kind == RM_API ? "ugpu_device_unplug" : "sim_unplug_%s",
	       d->rm_kind == RM_REQUEST ? "request" : "surprise");
}

static int kern_submit(struct mvm *v, struct mq *q, const struct ugpu_kernel *k, const char *bad);

/* After @d is gone (removed or closed): every kernel has ended, its VMs are
 * dead, and "binds, submits and VM creation answer -ENODEV" (docs/vm.md). */
static void vm_gone_checks(struct mdev *d)
{
	struct ugpu_kernel k = { .size = sizeof(k), .op = UGPU_KERNEL_READ_SUM, .va = VA_BASE, .bytes = 8 };
	struct eset nodev = es1(-ENODEV);

	for (int i = 0; i < MAXVM; i++) {
		struct mvm *v = &vms[i];
		struct mbo *b = NULL;
		struct ugpu_queue *q = NULL;
		struct eset s = nodev;
		uint64_t va = VA_TOP;

		if (!v->used || v->dev != d->id)
			continue;
		reap_vm(v, true);
		vm_check(v, NULL);
		if (v->nq)
			kern_submit(v, &v->q[0], &k, "");
		for (int j = 0; j < MAXBO && !b; j++)
			if (bos[j].used && bos[j].dev == d->id && !bos[j].orphan)
				b = &bos[j];
		if (b) {
			if (b->lost)
				es_add(&s, -ENODATA); /* both hold */
			if (va_overlap(v, va, PG))
				es_add(&s, -EINVAL);
			expect(ugpu_vm_bind(v->vm, b->bo, 0, va, PG, 0), &s, d, "ugpu_vm_bind(VM#%d, %s) after "
			       "its device was %s", v->id, bname(b), life_name(d->life));
		}
		expect(ugpu_queue_create(v->vm, NULL, &q), &nodev, d, "ugpu_queue_create(VM#%d) after its "
		       "device was %s", v->id, life_name(d->life));
	}
	if (d->life == D_REMOVED) {
		struct ugpu_vm *vm = NULL;

		expect(ugpu_vm_create(d->dev, NULL, &vm), &nodev, d, "ugpu_vm_create after removal");
	}
}

/* Wait for a removal in flight to finish and check what it did. */
static void settle(struct mdev *d)
{
	struct ugpu_unplug_info ui = { .size = sizeof(ui) };
	struct ugpu_rpm_stats rs1 = { .size = sizeof(rs1) }, rs2 = { .size = sizeof(rs2) };
	struct ugpu_bo *list[MAXBO + 1];
	struct eset ok = es1(0), nodev = es1(-ENODEV);
	size_t count = 0, i;
	uint64_t lost = 0, lost_bytes = 0;
	bool was = writers_running;
	double t0 = now_s();
	int k, want_kind;

	if (d->life != D_REMOVING)
		return;
	tr(" [settle dev%d]", d->id);
	if (N.live && N.dev == d->id)
		notifier_join();
	writers_pause();
	if (d->rm_thread_live) {
		pthread_join(d->rm_thread, NULL);
		d->rm_thread_live = false;
	}
	for (;;) {
		expect(ugpu_device_unplug_info(d->dev, &ui), &ok, d, "ugpu_device_unplug_info");
		if (ui.state == UGPU_UNPLUG_REMOVED)
			break;
		if (now_s() - t0 > 70)
			fail("hang", "the %s removal of dev%d did not finish within 70 s (state %s)",
			     rm_name(d->rm_kind), d->id, ugpu_unplug_state_name(ui.state));
		sleep_us(2000);
	}
	if (!ugpu_device_is_gone(d->dev))
		fail("unplug", "removed but ugpu_device_is_gone() is false");
	want_kind = d->rm_kind == RM_REQUEST ? UGPU_UNPLUG_REQUEST
		: d->rm_kind == RM_API ? UGPU_UNPLUG_API : UGPU_UNPLUG_SURPRISE;
	/* an orderly removal that cannot wake the device goes on as a surprise
	 * one (docs/unplug.md) */
	if ((int)ui.kind != want_kind && !(d->rm_inj && ui.kind == UGPU_UNPLUG_SURPRISE))
		fail("unplug", "unplug_info.kind %s after a %s removal", ugpu_unplug_kind_name(ui.kind),
		     rm_name(d->rm_kind));
	expect(ugpu_device_lost_bos(d->dev, list, MAXBO + 1, &count), &ok, d, "ugpu_device_lost_bos");
	if (count > MAXBO)
		fail("unplug", "ugpu_device_lost_bos: %zu lost, more than the %d BOs that exist", count, MAXBO);
	/* every lost BO is listed, every listed BO is lost and was allowed to be */
	for (k = 0; k < MAXBO; k++) {
		struct mbo *b = &bos[k];
		struct ugpu_bo_info info = { .size = sizeof(info) };
		bool listed = false;

		if (!b->used || b->closed || b->dev != d->id)
			continue;
		for (i = 0; i < count; i++)
			listed |= list[i] == b->bo;
		if (b->orphan) /* only its binds hold it: no call may name it (the list's does) */
			info.lost = listed;
		else
			expect(ugpu_bo_query(b->bo, &info), &ok, d, "ugpu_bo_query(%s) after removal", bname(b));
		if (info.lost != listed)
			fail("unplug", "%s: info.lost %d but %slisted by ugpu_device_lost_bos", bname(b),
			     info.lost, listed ? "" : "not ");
		if (info.lost) {
			if (!b->may_lose && !b->lost)
				fail("lost", "the %s removal lost %s, which the header does not allow "
				     "(status %s, %" PRIu64 " lost) [%s]", rm_name(d->rm_kind), bname(b),
				     ename(ui.status), ui.bos_lost, dstate(d));
			if (!b->lost) {
				lost++;
				lost_bytes += b->size;
			}
			b->lost = true;
		}
		b->may_lose = false;
	}
	for (i = 0; i < count; i++) {
		bool known = false;

		for (k = 0; k < MAXBO; k++)
			known |= bos[k].used && bos[k].bo == list[i];
		if (!known)
			fail("unplug", "ugpu_device_lost_bos lists a BO the program does not have");
		ugpu_bo_put(list[i]);
	}
	/* a BO the program put while the removal ran may be counted, not listed */
	if (ui.bos_lost < count || ui.bos_lost > count + (uint64_t)d->rm_puts)
		fail("unplug", "unplug_info.bos_lost %" PRIu64 " but ugpu_device_lost_bos lists %zu "
		     "(%d BOs that might have been lost were put meanwhile)", ui.bos_lost, count, d->rm_puts);
	if (ui.status != (ui.kind == UGPU_UNPLUG_SURPRISE ? -ENODEV : ui.bos_lost ? -EIO : 0) &&
	    !((d->rm_inj & INJ_WAKE) && ui.status == -ENODEV)) /* gone on as a surprise one */
		fail("unplug", "unplug_info.status %s after a %s removal that lost %" PRIu64 " BOs",
		     ename(ui.status), rm_name(d->rm_kind), ui.bos_lost);
	(void)lost_bytes;
	/* the callback runs once resources are released: maybe just after */
	for (t0 = now_s(); atomic_load(&d->cb_calls) == 0 && now_s() - t0 < 5;)
		sleep_us(1000);
	if (atomic_load(&d->cb_calls) != 1 || atomic_load(&d->cb_kind) != (int)ui.kind ||
	    atomic_load(&d->cb_status) != ui.status)
		fail("unplug", "the removal callback ran %d times (kind %d status %d), expected once "
		     "with kind %d status %d", atomic_load(&d->cb_calls), atomic_load(&d->cb_kind),
		     atomic_load(&d->cb_status), ui.kind, ui.status);
	if (atomic_load(&d->rm_ret_valid))
		check_rm_ret(d, atomic_load(&d->rm_ret), &ui);
	T.lost_allowed += lost;
	if (d->rm_kind == RM_SURPRISE)
		T.removals_surprise++;
	else
		T.removals_orderly++;
	tr(" removed: %" PRIu64 " moved, %" PRIu64 " adopted, %zu lost", ui.bos_moved, ui.bos_adopted,
	   count);
	d->life = D_REMOVED;
	d->pm = UGPU_PM_ACTIVE;
	d->main_susp = false;
	d->gets = 0;
	d->inj = 0;
	/* runtime PM and host suspend went with the device */
	expect(ugpu_device_rpm_stats(d->dev, &rs1), &ok, d, "ugpu_device_rpm_stats after removal");
	expect(ugpu_device_rpm_get(d->dev), &nodev, d, "ugpu_device_rpm_get after removal");
	ugpu_device_rpm_put(d->dev);
	expect(ugpu_device_rpm_allow(d->dev, true), &nodev, d, "ugpu_device_rpm_allow after removal");
	expect(ugpu_device_rpm_suspend(d->dev), &nodev, d, "ugpu_device_rpm_suspend after removal");
	expect(ugpu_device_suspend_prepare(d->dev), &nodev, d, "ugpu_device_suspend_prepare after removal");
	expect(ugpu_device_rpm_stats(d->dev, &rs2), &ok, d, "ugpu_device_rpm_stats after removal");
	if (rs1.suspends != rs2.suspends || rs1.resumes != rs2.resumes || rs1.usage != rs2.usage)
		fail("rpm", "runtime-PM stats changed after the removal");
	{
		struct ugpu_device_mem m = { .size = sizeof(m) };

		expect(ugpu_device_mem_stats(d->dev, &m), &ok, d, "ugpu_device_mem_stats after removal");
		if (m.vram_used || m.vram_free || m.bos_lost != count)
			fail("mem", "after removal: vram used %" PRIu64 " free %" PRIu64 " lost %" PRIu64,
			     m.vram_used, m.vram_free, m.bos_lost);
	}
	dev_snap(d);
	vm_gone_checks(d);
	check_all("after the removal");
	if (was)
		writers_resume();
}

/* ------------------------------------------------------------------------ */
/* BO selection.                                                            */

#define P_OPEN 1u /* device not closed */
#define P_CLOSED 2u /* device closed */
#define P_MAIN 4u /* the main thread may change its bytes or lifetime */
#define P_MAPPED 8u

static struct mbo *pick(uint32_t a, unsigned what)
{
	int idx[MAXBO], n = 0;

	for (int i = 0; i < MAXBO; i++) {
		const struct mbo *b = &bos[i];

		if (!b->used || b->orphan)
			continue;
		if ((what & P_OPEN) && b->closed)
			continue;
		if ((what & P_CLOSED) && !b->closed)
			continue;
		if ((what & P_MAIN) && !main_owned(b))
			continue;
		if ((what & P_MAPPED) && !b->map)
			continue;
		idx[n++] = i;
	}
	return n ? &bos[idx[a % (uint32_t)n]] : NULL;
}

static int live_bos(void)
{
	int n = 0;

	for (int i = 0; i < MAXBO; i++)
		n += bos[i].used;
	return n;
}

static void fill_rand(uint8_t *p, size_t n, uint64_t seed)
{
	struct rng r = { .s = seed };
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t v = rnd64(&r);

		memcpy(p + i, &v, 8);
	}
	for (; i < n; i++)
		p[i] = (uint8_t)rnd64(&r);
}

/* A range inside @b (sometimes the whole BO, sometimes one byte). */
static void pick_range(const struct mbo *b, uint32_t x, uint64_t *off, uint64_t *len)
{
	switch (x % 8) {
	case 0:
		*off = 0;
		*len = b->size;
		return;
	case 1:
		*off = (x >> 3) % b->size;
		*len = 1;
		return;
	default:
		*off = (x >> 3) % b->size;
		*len = 1 + (uint64_t)(x >> 11) % (b->size - *off);
		if (*len > 64 * 1024)
			*len = 1 + *len % (64 * 1024);
		return;
	}
}

/* ------------------------------------------------------------------------ */
/* Operations on BOs.                                                       */

static struct mbo *touched;

/* The op means nothing in this state (a sub-list of ops stays valid). */
static void skip(void)
{
	tr(" skip");
	T.skipped++;
}

static const uint32_t flag_bits[] = {
	UGPU_BO_PINNED, UGPU_BO_CPU_ACCESS, UGPU_BO_CONTIGUOUS,
	UGPU_BO_KERNEL, UGPU_BO_NO_RESTORE, UGPU_BO_LATE_RESTORE,
};
static const unsigned flag_pct[] = { 20, 50, 20, 20, 15, 15 };

/* Codes of a call that may have to move @b into VRAM. */
static void es_move_vram(struct eset *s, const struct mbo *b)
{
	const struct mdev *d = bdev(b);

	if (vram_pressure(d, b->size, b->flags & UGPU_BO_CONTIGUOUS))
		es_add(s, -ENOSPC);
	if (host_maybe_suspended(d) || d->main_susp)
		es_add(s, -EBUSY);
	if (d->life != D_PRESENT)
		es_add(s, -ENODEV);
}

/* While wakes fail, a call that wakes the device before it looks at the BO's
 * state may say so first (the headers give no order between the two). */
static void es_wake_first(struct eset *s)
{
	es_add(s, -EIO);
	es_add(s, -ETIMEDOUT);
}

/* A copy may fail: injected faults, or a device vanishing under it. */
static void es_injected(struct eset *s, const struct mdev *d)
{
	if (d->inj || (d->life == D_REMOVING && d->rm_kind == RM_SURPRISE)) {
		es_add(s, -EIO);
		es_add(s, -ETIMEDOUT);
	}
}

static uint32_t flags_allowed = UGPU_BO_FLAGS_ALL | 0x40; /* UGPU_MODEL_FLAGS */

/* @old: as an older caller would, with a short options struct. */
static void op_create(const struct op *o, bool old)
{
	static const enum ugpu_placement combos[][2] = {
		{ 0, 0 }, { 0, 0 }, { 1, 0 }, { 1, 0 }, { 2, 0 }, { 1, 2 }, { 1, 2 }, { 2, 1 }, { 2, 1 },
		/* refused: */ { 1, 1 }, { 0, 1 }, { 7, 0 }, { 2, 2 },
	};
	struct ugpu_bo_opts opts;
	struct mdev *d = curdev();
	struct mbo *b = NULL;
	struct ugpu_bo *bo = NULL;
	struct eset s = { 0 };
	struct rng r = { .s = o->b };
	uint32_t flags = 0, cls = o->a % 100, x = o->a / 100;
	uint64_t bytes, rounded;
	unsigned pc = o->c % (sizeof(combos) / sizeof(combos[0]));
	bool valid = true, vram_first, sys_ok, short_bytes = false;
	char name[32];
	int i, r2;

	if (!d || d->life == D_CLOSED || live_bos() >= MAXBO) {
		skip();
		return;
	}
	if (cls < 60)
		bytes = 4096ull * (1 + x % 16);
	else if (cls < 90)
		bytes = 4096ull * (16 + x % 80);
	else if (cls < 98)
		bytes = 4096ull * (256 + x % 256);
	else
		bytes = 0;
	if (bytes > 4096 && (x >> 12) % 3 == 0)
		bytes -= 1 + (x >> 14) % 4000; /* not a page multiple */
	for (i = 0; i < 6; i++)
		if (rnd(&r, 100) < flag_pct[i])
			flags |= flag_bits[i];
	if (rnd(&r, 50) == 0)
		flags |= 0x40; /* unknown flag */
	flags &= flags_allowed;
	memset(&opts, 0, sizeof(opts));
	opts.size = sizeof(opts);
	opts.bytes = bytes;
	opts.placements[0] = combos[pc][0];
	opts.placements[1] = combos[pc][1];
	opts.flags = flags;
	snprintf(name, sizeof(name), "model-%d", next_bo_id);
	opts.name = rnd(&r, 4) ? name : NULL;
	switch (old ? o->d % 3 : 3) {
	case 0: /* an older caller: fields past @size read as zero (the
		 * garbage there must be ignored): no flags, no name */
		opts.size = offsetof(struct ugpu_bo_opts, flags);
		opts.flags = 0xdead0000u;
		opts.name = (const char *)1;
		flags = 0;
		break;
	case 1: /* exactly past @bytes: default placements too */
		opts.size = offsetof(struct ugpu_bo_opts, placements);
		opts.placements[0] = (enum ugpu_placement)7;
		opts.placements[1] = (enum ugpu_placement)9;
		opts.flags = 0xdead0000u;
		flags = 0;
		pc = 0;
		short_bytes = true;
		break;
	case 2: /* does not reach past @bytes */
		opts.size = offsetof(struct ugpu_bo_opts, bytes);
		valid = false;
		break;
	default:
		break;
	}
	if (bytes == 0 || (flags & ~UGPU_BO_FLAGS_ALL) ||
	    ((flags & UGPU_BO_NO_RESTORE) && (flags & UGPU_BO_LATE_RESTORE)) ||
	    ((flags & UGPU_BO_LATE_RESTORE) && !(flags & UGPU_BO_KERNEL)) || pc >= 9)
		valid = false;
	rounded = (bytes + (uint64_t)page_size - 1) / (uint64_t)page_size * (uint64_t)page_size;
	tr(" %" PRIu64 "B flags 0x%x pl {%s,%s}", bytes, flags, pl_name(combos[pc][0]),
	   pl_name(combos[pc][1]));
	if (opts.size < sizeof(opts))
		tr(" opts.size %zu", opts.size);
	vram_first = combos[pc][0] != UGPU_PLACEMENT_SYSTEM;
	sys_ok = combos[pc][0] != UGPU_PLACEMENT_VRAM || combos[pc][1] == UGPU_PLACEMENT_SYSTEM;
	if (!valid) {
		es_add(&s, -EINVAL);
	} else {
		es_add(&s, 0);
		es_injected(&s, d);
		if (!sys_ok) {
			if (vram_pressure(d, rounded, flags & UGPU_BO_CONTIGUOUS))
				es_add(&s, -ENOSPC);
			if (host_maybe_suspended(d) || d->main_susp)
				es_add(&s, -EBUSY);
			if (d->life != D_PRESENT)
				es_add(&s, -ENODEV);
			if (d->life == D_REMOVED)
				s = es1(-ENODEV);
		}
	}
	if (short_bytes && valid)
		es_add(&s, -EINVAL); /* "must reach past @bytes": is reaching its end enough? */
	r2 = ugpu_bo_create(d->dev, &opts, &bo);
	tr(" -> %s", ename(r2));
	expect(r2, &s, d, "ugpu_bo_create(%" PRIu64 " B, flags 0x%x, {%s,%s}%s)", bytes, flags,
	       pl_name(combos[pc][0]), pl_name(combos[pc][1]),
	       opts.size < sizeof(opts) ? ", short opts" : "");
	if (r2)
		return;
	for (i = 0; i < MAXBO && !b; i++)
		if (!bos[i].used)
			b = &bos[i];
	if (!b)
		fail("setup", "no free BO slot");
	memset(b, 0, sizeof(*b));
	b->used = true;
	b->id = next_bo_id++;
	b->dev = d->id;
	b->bo = bo;
	b->size = rounded;
	b->flags = flags;
	if (combos[pc][0] == UGPU_PLACEMENT_NONE) { /* none given: {VRAM, SYSTEM} */
		b->npl = 2;
		b->pl[0] = UGPU_PLACEMENT_VRAM;
		b->pl[1] = UGPU_PLACEMENT_SYSTEM;
	} else {
		b->npl = combos[pc][1] ? 2 : 1;
		b->pl[0] = combos[pc][0];
		b->pl[1] = combos[pc][1];
	}
	b->pins = flags & UGPU_BO_PINNED ? 1 : 0;
	b->wake_tainted = (d->inj & INJ_WAKE) != 0;
	b->shadow = calloc(1, rounded);
	if (!b->shadow)
		fail("setup", "out of memory");
	if (d->life == D_REMOVING)
		b->may_lose = may_lose_now(d, b, d->rm_kind, false);
	T.bos_created++;
	tr(" %s", bname(b));
	{
		enum ugpu_placement p = placement_of(b);

		if (!vram_first && p != UGPU_PLACEMENT_SYSTEM)
			fail("query", "%s was created in %s; SYSTEM is its first placement", bname(b), pl_name(p));
		if (d->life == D_REMOVED && p != UGPU_PLACEMENT_SYSTEM)
			fail("query", "%s was created in %s on a removed device", bname(b), pl_name(p));
		if (d->pm == UGPU_PM_SUSPENDED && d->life == D_PRESENT && p == UGPU_PLACEMENT_VRAM)
			fail("query", "%s got VRAM while the device is host-suspended", bname(b));
	}
	touched = b;
}

static void op_put(const struct op *o, bool closed_only)
{
	struct mbo *b = pick(o->a, P_MAIN | (closed_only ? P_CLOSED : 0));

	if (!b) {
		skip();
		return;
	}
	tr(" %s", bname(b));
	/* freed now (not when its binds hold it: bind_dropped() counts it then) */
	if (b->may_lose && bdev(b)->life == D_REMOVING && !b->nbinds)
		bdev(b)->rm_puts++; /* may still count in bos_lost, no longer listed */
	if (b->nbinds && (b->flags & UGPU_BO_NO_RESTORE) && !b->closed) {
		/* an orphan from now on: what suspends did to it is learnt
		 * from here on by the device's count (kern_end()) */
		struct ugpu_bo_info info = { .size = sizeof(info) };

		b->orphan_epoch = hs_epoch(bdev(b));
		if (ugpu_bo_query(b->bo, &info) == 0 && info.discarded != b->discarded) {
			b->discarded = info.discarded;
			b->unknown = true;
		}
	}
	ugpu_bo_put(b->bo);
	if (b->nbinds) {
		/* its binds hold it: kernels still see it (read-sums check it) */
		b->orphan = true;
		if (b->map)
			tr(" (bound: kept by its binds, mapping left)");
		else
			tr(" (bound: kept by its binds)");
		return;
	}
	mbo_free(b);
}

static void op_getput(const struct op *o)
{
	struct mbo *b = pick(o->a, P_OPEN);

	if (!b) {
		skip();
		return;
	}
	tr(" %s", bname(b));
	ugpu_bo_get(b->bo);
	ugpu_bo_put(b->bo);
	touched = b;
}

static void op_rw(const struct op *o, bool write)
{
	struct mbo *b = pick(o->a, write ? P_MAIN : 0);
	struct mdev *d;
	struct eset s;
	uint64_t off, len;
	uint8_t *buf;
	bool bad = false, quiet;
	int r;

	if (!b) {
		skip();
		return;
	}
	d = bdev(b);
	quiet = bo_gpu_settle(b); /* no kernel may be touching it now */
	if (write && !quiet) {
		tr(" %s: skip (a kernel may be running on it)", bname(b));
		T.skipped++;
		return;
	}
	pick_range(b, o->b, &off, &len);
	switch (o->c % 24) {
	case 0: /* past the end */
		len = len > 4096 ? 4096 : len;
		off = b->size - len + 1 + o->d % 64;
		bad = true;
		break;
	case 1: /* offset + len wraps around */
		off = UINT64_MAX - 3;
		len = 8;
		bad = true;
		break;
	default:
		break;
	}
	tr(" %s [0x%" PRIx64 ", +%" PRIu64 ")", bname(b), off, len);
	if (bad) {
		s = es1(-EINVAL);
		if (b->closed)
			es_add(&s, -ENODEV);
		if (b->lost || b->may_lose)
			es_add(&s, -ENODATA);
	} else {
		s = es_bo_access(b, d->pm == UGPU_PM_SUSPENDED && d->life == D_PRESENT ? placement_of(b)
											: UGPU_PLACEMENT_NONE);
	}
	buf = malloc(len);
	if (!buf)
		fail("setup", "out of memory");
	if (write) {
		fill_rand(buf, len, o->d ^ ((uint64_t)o->b << 32));
		r = ugpu_bo_write(b->bo, off, buf, len);
	} else {
		r = ugpu_bo_read(b->bo, off, buf, len);
	}
	tr(" -> %s", ename(r));
	expect(r, &s, d, "ugpu_bo_%s(%s, 0x%" PRIx64 ", %" PRIu64 ")", write ? "write" : "read", bname(b),
	       off, len);
	if (r == 0 && write) {
		memcpy(b->shadow + off, buf, len);
		unk_clear(b, off, len);
	} else if (r == 0 && main_owned(b) && !unk_any(b, off, len) && quiet &&
		   !((b->flags & UGPU_BO_NO_RESTORE) && d->pm == PM_UNKNOWN) &&
		   memcmp(buf, b->shadow + off, len)) {
		uint8_t *whole = calloc(1, b->size);

		if (!whole)
			fail("setup", "out of memory");
		memcpy(whole, b->shadow, b->size);
		memcpy(whole + off, buf, len);
		report_mismatch(b, whole, "ugpu_bo_read (a range)", "read", placement_of(b));
	}
	free(buf);
	touched = b;
}

/* CPU mappings need userfaultfd: say so once, go on without them. */
static void no_uffd(void)
{
	if (have_uffd)
		printf("model: ugpu_bo_map says -ENOSYS (no userfaultfd here): CPU mappings and the "
		       "writer threads are left out of this run\n");
	have_uffd = false;
}

static void op_map(const struct op *o)
{
	struct mbo *b = pick(o->a, P_MAIN);
	void *p = NULL;
	int r;

	if (!b) {
		skip();
		return;
	}
	tr(" %s", bname(b));
	r = ugpu_bo_map(b->bo, &p);
	tr(" -> %s", ename(r));
	if (r == -ENOSYS && !b->closed) {
		no_uffd();
		return;
	}
	{
		struct eset s = es1(b->closed ? -ENODEV : 0);

		if (b->lost || b->may_lose)
			es_add(&s, -ENODATA);
		expect(r, &s, bdev(b), "ugpu_bo_map(%s)", bname(b));
	}
	if (r == 0) {
		if (b->map && p != b->map)
			fail("map", "ugpu_bo_map(%s) gave %p, before %p: the header promises the same "
			     "address until unmap", bname(b), p, (void *)b->map);
		b->map = p;
		b->wake_tainted |= (bdev(b)->inj & INJ_WAKE) != 0;
	}
	touched = b;
}

static void op_store(const struct op *o)
{
	struct mbo *b = pick(o->a, P_MAIN | P_OPEN);
	enum touch tm;
	uint64_t off, len;
	uint8_t *buf, *back;
	void *p;
	int r;

	if (!b || !have_uffd) {
		skip();
		return;
	}
	if (!b->map) {
		struct eset s = es1(0);

		if (b->lost || b->may_lose)
			es_add(&s, -ENODATA);
		r = ugpu_bo_map(b->bo, &p);
		if (r == -ENOSYS) {
			no_uffd();
			return;
		}
		expect(r, &s, bdev(b), "ugpu_bo_map(%s)", bname(b));
		if (r)
			return;
		b->map = p;
		b->wake_tainted |= (bdev(b)->inj & INJ_WAKE) != 0;
	}
	tm = touch_mode(b);
	tr(" %s", bname(b));
	if (!bo_gpu_settle(b)) {
		tr(" (not now: a kernel may be running on it)");
		return;
	}
	if (tm == T_NO) {
		tr(" (not now: host-suspended in VRAM)");
		return;
	}
	if (tm == T_SIGBUS) {
		uint8_t x;

		if (touch_copy(&x, b->map, 1))
			fail("sigbus", "%s is lost but a CPU touch of its mapping did not raise SIGBUS "
			     "(unplug.h)", bname(b));
		tr(" -> SIGBUS as promised");
		return;
	}
	pick_range(b, o->b, &off, &len);
	tr(" [0x%" PRIx64 ", +%" PRIu64 ")", off, len);
	buf = malloc(len);
	back = malloc(len);
	if (!buf || !back)
		fail("setup", "out of memory");
	fill_rand(buf, len, o->c ^ ((uint64_t)o->d << 32));
	if (!touch_copy(b->map + off, buf, len)) {
		if (tm != T_MAYBE)
			fail("sigbus", "a store through the mapping of %s raised SIGBUS [%s]", bname(b),
			     dstate(bdev(b)));
		tr(" -> SIGBUS (allowed now)");
		T.sigbus_allowed++;
		b->unknown = b->unknown || !b->may_lose; /* part of the store may have landed */
		goto out;
	}
	memcpy(b->shadow + off, buf, len);
	unk_clear(b, off, len);
	if (!touch_copy(back, b->map + off, len)) {
		if (tm != T_MAYBE)
			fail("sigbus", "loading back through the mapping of %s raised SIGBUS", bname(b));
		T.sigbus_allowed++;
	} else if (memcmp(back, buf, len)) {
		if ((b->flags & UGPU_BO_NO_RESTORE) && bdev(b)->pm == PM_UNKNOWN) {
			/* a notifier's suspend may have run between the store and
			 * the load (the store waits in the window): NO_RESTORE
			 * bytes may go, as check_bo() allows */
			tr(" (differs: a concurrent suspend may have discarded it)");
			b->unknown = true;
			goto out;
		}
		fail("bytes", "stored %" PRIu64 " bytes at 0x%" PRIx64 " through the mapping of %s and "
		     "loaded back different bytes [%s]", len, off, bname(b), dstate(bdev(b)));
	}
	tr(" ok");
out:
	free(buf);
	free(back);
	touched = b;
}

static void op_unmap(const struct op *o)
{
	struct mbo *b = pick(o->a, P_MAIN);
	struct eset s;
	int r;

	if (!b) {
		skip();
		return;
	}
	tr(" %s", bname(b));
	s = es1(b->closed ? -ENODEV : b->map ? 0 : -EINVAL);
	r = ugpu_bo_unmap(b->bo);
	tr(" -> %s", ename(r));
	expect(r, &s, bdev(b), "ugpu_bo_unmap(%s)", bname(b));
	if (r == 0) {
		b->map = NULL;
		b->wake_tainted = false;
	}
	touched = b;
}

static void op_pin(const struct op *o, bool pin)
{
	struct mbo *b = pick(o->a, 0);
	struct mdev *d;
	struct eset s = { 0 };
	enum ugpu_placement p;
	int r;

	if (!b || (pin && b->pins >= 3)) {
		skip();
		return;
	}
	d = bdev(b);
	tr(" %s", bname(b));
	p = b->closed ? UGPU_PLACEMENT_NONE : placement_of(b);
	if (b->closed) {
		es_add(&s, -ENODEV);
	} else if (!pin) {
		es_add(&s, b->pins ? 0 : -EINVAL);
	} else if (b->lost) {
		es_add(&s, -ENODATA);
		if (d->life != D_PRESENT && b->pl[0] == UGPU_PLACEMENT_VRAM)
			es_add(&s, -ENODEV); /* both hold */
	} else {
		es_add(&s, 0);
		if (b->may_lose)
			es_add(&s, -ENODATA);
		if (p != b->pl[0] || d->life != D_PRESENT || d->d3cold_ever || N.live) {
			/* it may have to move to its first placement */
			if (b->pl[0] == UGPU_PLACEMENT_VRAM)
				es_move_vram(&s, b);
			else if (host_maybe_suspended(d) || d->main_susp)
				es_add(&s, -EBUSY); /* to SYSTEM, as migrate would */
			es_injected(&s, d);
		}
		if (d->life == D_REMOVED && b->pl[0] == UGPU_PLACEMENT_VRAM)
			es_add(&s, -ENODEV);
	}
	if (pin && !b->closed && !b->lost && gpu_may_run(b))
		es_add(&s, -EBUSY); /* it may have to move while a kernel runs on a VM it is bound in */
	if (pin && !b->closed && (d->inj & INJ_WAKE))
		es_wake_first(&s);
	r = pin ? ugpu_bo_pin(b->bo) : ugpu_bo_unpin(b->bo);
	tr(" (in %s) -> %s", pl_name(p), ename(r));
	expect(r, &s, d, "ugpu_bo_%s(%s) in %s", pin ? "pin" : "unpin", bname(b), pl_name(p));
	if (r == 0)
		b->pins += pin ? 1 : -1;
	touched = b;
}

static void op_migrate(const struct op *o)
{
	struct mbo *b = pick(o->a, 0);
	struct mdev *d;
	struct eset s = { 0 };
	enum ugpu_placement to, p;
	uint32_t x = o->b % 20;
	int r;

	if (!b) {
		skip();
		return;
	}
	d = bdev(b);
	to = x < 9 ? UGPU_PLACEMENT_VRAM : x < 18 ? UGPU_PLACEMENT_SYSTEM
		: x == 18 ? UGPU_PLACEMENT_NONE : (enum ugpu_placement)5;
	p = b->closed ? UGPU_PLACEMENT_NONE : placement_of(b);
	tr(" %s %s -> %s", bname(b), pl_name(p), pl_name(to));
	if (b->closed) {
		es_add(&s, -ENODEV);
		if (!has_pl(b, to))
			es_add(&s, -EINVAL);
	} else if (!has_pl(b, to)) {
		es_add(&s, -EINVAL);
		if (b->lost || b->may_lose)
			es_add(&s, -ENODATA);
		if (d->life != D_PRESENT && to == UGPU_PLACEMENT_SYSTEM && !b->lost)
			es_add(&s, 0); /* the removal moved it there: is SYSTEM allowed now? */
	} else if (b->lost) {
		es_add(&s, -ENODATA);
		if (d->life != D_PRESENT && to == UGPU_PLACEMENT_VRAM)
			es_add(&s, -ENODEV); /* both hold */
		if (b->pins)
			es_add(&s, -EBUSY); /* "pinned elsewhere" holds too */
	} else if (d->life == D_REMOVED && to == UGPU_PLACEMENT_VRAM) {
		es_add(&s, -ENODEV);
		if (b->pins)
			es_add(&s, -EBUSY); /* "pinned elsewhere" holds too */
	} else {
		bool quiet_dev = d->life == D_PRESENT && !N.live;

		if (b->may_lose)
			es_add(&s, -ENODATA);
		if (b->pins && p != to && quiet_dev) {
			es_add(&s, -EBUSY);
		} else if (b->pins && p == to && quiet_dev && !d->d3cold_ever) {
			es_add(&s, 0);
		} else {
			es_add(&s, 0);
			if (b->pins)
				es_add(&s, -EBUSY);
			if (to == UGPU_PLACEMENT_VRAM)
				es_move_vram(&s, b);
			else if (host_maybe_suspended(d) || d->main_susp)
				es_add(&s, -EBUSY);
			if (d->life == D_REMOVING)
				es_add(&s, -ENODEV);
			es_injected(&s, d);
		}
		if (d->pm == UGPU_PM_SUSPENDED && d->life == D_PRESENT && to == UGPU_PLACEMENT_VRAM &&
		    p != UGPU_PLACEMENT_VRAM)
			s = es1(-EBUSY);
	}
	if (!b->closed && !b->lost && has_pl(b, to) && gpu_may_run(b))
		es_add(&s, -EBUSY); /* a kernel may run on a VM it is bound in */
	if (!b->closed && (d->inj & INJ_WAKE))
		es_wake_first(&s);
	r = ugpu_bo_migrate(b->bo, to);
	tr(" -> %s", ename(r));
	expect(r, &s, d, "ugpu_bo_migrate(%s, %s) from %s", bname(b), pl_name(to), pl_name(p));
	if (r == 0 && d->life == D_PRESENT && !N.live && !d->d3cold_ever) {
		enum ugpu_placement now = placement_of(b);

		if (now != to)
			fail("query", "ugpu_bo_migrate(%s, %s) returned 0 and the BO is in %s", bname(b),
			     pl_name(to), pl_name(now));
	}
	touched = b;
}

/* A host-suspend cycle may be open on @d (include/ugpu/bo.h's -EBUSY of
 * ugpu_bo_migrate_device()). */
static bool host_cycle_maybe_open(const struct mdev *d)
{
	return d->pm != UGPU_PM_ACTIVE || d->main_susp || (N.live && N.dev == d->id);
}

static bool host_cycle_open(const struct mdev *d)
{
	return d->pm == UGPU_PM_PREPARED || d->pm == UGPU_PM_SUSPENDED;
}

/* ugpu_bo_migrate_device() of a BO to another open device of the context.
 * The model's devices are separate reference devices with no fabric between
 * them: the bytes go through system memory, and UGPU_MIGRATE_DIRECT is
 * -ENOLINK. On success the BO is @dst's from then on (its calls, removal,
 * close); later CHECK ops verify every byte where it went. */
static void op_xmigrate(const struct op *o)
{
	/* mostly open BOs to present devices: the moves that can happen */
	bool likely = o->d % 8 != 0;
	struct mbo *b = pick(o->a, likely ? P_OPEN : 0);
	struct mdev *src, *dst = NULL;
	struct eset s = { 0 };
	uint32_t x = o->c % 8, flags = x < 5 ? 0 : x == 5 ? UGPU_MIGRATE_DIRECT
		: x == 6 ? UGPU_MIGRATE_VIA_SYSTEM : UGPU_MIGRATE_FLAGS_ALL;
	enum ugpu_placement p;
	int r, k, n = 0, cand[MAXDEV];

	if (!b) {
		skip();
		return;
	}
	for (k = 0; k < ndevs; k++)
		if (k != b->dev && devs[k].life != D_CLOSED && (!likely || devs[k].life == D_PRESENT))
			cand[n++] = k;
	if (!n) {
		skip();
		return;
	}
	k = cand[o->b % (uint32_t)n];
	dst = &devs[k];
	src = bdev(b);
	if (likely && b->map && main_owned(b) && (o->d & 2)) {
		/* half the time unmapped first, else the mapping follows */
		struct eset u = es1(0);

		r = ugpu_bo_unmap(b->bo);
		tr(" (unmapped first -> %s)", ename(r));
		expect(r, &u, src, "ugpu_bo_unmap(%s)", bname(b));
		b->map = NULL;
		b->wake_tainted = false;
	}
	p = b->closed ? UGPU_PLACEMENT_NONE : placement_of(b);
	tr(" %s %s -> dev%d%s", bname(b), pl_name(p), dst->id,
	   flags == UGPU_MIGRATE_DIRECT ? " direct" : flags == UGPU_MIGRATE_VIA_SYSTEM ? " via-system"
	   : flags ? " both-flags" : "");
	if (flags == UGPU_MIGRATE_FLAGS_ALL) {
		es_add(&s, -EINVAL);
	} else if (b->closed) {
		es_add(&s, -ENODEV);
		if (dst->inj & INJ_WAKE)
			es_wake_first(&s); /* both are woken before the BO is looked at */
	} else {
		/* every reason that holds may be the one reported (the header
		 * gives no order): nothing holds, then 0 it must be */
		bool any = !has_pl(b, UGPU_PLACEMENT_VRAM);

		if (any)
			es_add(&s, -EINVAL);

		if (b->lost || b->may_lose) {
			es_add(&s, -ENODATA);
			any = b->lost;
		}
		if (b->pins || b->nbinds || gpu_may_run(b) || host_cycle_maybe_open(src) ||
		    host_cycle_maybe_open(dst)) {
			es_add(&s, -EBUSY);
			/* certain: a notifier's cycle (PM_UNKNOWN) may be over */
			any = any || b->pins || b->nbinds || host_cycle_open(src) ||
			      host_cycle_open(dst);
		}
		if (b->map)
			es_add(&s, -ENOSYS); /* the mapping follows if @dst can serve it */
		if (dst->life != D_PRESENT) {
			es_add(&s, -ENODEV);
			/* a removal not yet begun (its delay) or not yet noticed
			 * (a surprise is learnt on the next access) may still
			 * take the BO: it may then be lost with the device */
			any = any || dst->life != D_REMOVING;
		}
		if (src->life == D_REMOVING)
			es_add(&s, -ENODEV); /* its removal may be moving it now */
		if (flags == UGPU_MIGRATE_DIRECT) {
			es_add(&s, -ENOLINK);
			any = true;
		}
		if (vram_pressure(dst, b->size, b->flags & UGPU_BO_CONTIGUOUS))
			es_add(&s, -ENOSPC);
		es_injected(&s, src);
		es_injected(&s, dst);
		if ((src->inj | dst->inj) & INJ_WAKE)
			es_wake_first(&s);
		if (!any)
			es_add(&s, 0);
	}
	r = ugpu_bo_migrate_device(b->bo, dst->dev, flags);
	tr(" -> %s", ename(r));
	T.xtries++;
	expect(r, &s, src, "ugpu_bo_migrate_device(%s, dev%d, 0x%x) from %s [dst %s]", bname(b),
	       dst->id, flags, pl_name(p), dstate(dst));
	if (r == 0) {
		b->dev = k;
		T.xmoves++;
		if (dst->life == D_REMOVING)
			b->may_lose = b->may_lose || may_lose_now(dst, b, dst->rm_kind, false);
		/* the mapping followed it to a device whose wakes fail: a
		 * touch there may poison it, as on its first device */
		if (b->map)
			b->wake_tainted |= (dst->inj & INJ_WAKE) != 0;
		if (dst->life == D_PRESENT && !N.live && !dst->d3cold_ever) {
			enum ugpu_placement now = placement_of(b);

			if (now != UGPU_PLACEMENT_VRAM)
				fail("query", "ugpu_bo_migrate_device(%s, dev%d) returned 0 and the BO is in %s",
				     bname(b), dst->id, pl_name(now));
		}
	}
	touched = b;
}

/* ------------------------------------------------------------------------ */
/* GPU VMs, binds, queues and kernels: the operations.                     */

static int dev_nvms(const struct mdev *d)
{
	int n = 0;

	for (int i = 0; i < MAXVM; i++)
		n += vms[i].used && vms[i].dev == d->id;
	return n;
}

/* A VM: parameter modulo the candidates; @usable: mostly one whose device
 * is present (VMs of removed or closed devices answer -ENODEV to most), and
 * with binds if @binds. */
static struct mvm *vm_pick_b(uint32_t a, bool usable, bool need_q, bool binds)
{
	int idx[3][MAXVM], n[3] = { 0, 0, 0 };

	for (int i = 0; i < MAXVM; i++) {
		const struct mvm *v = &vms[i];
		int tier;

		if (!v->used || (need_q && !v->nq))
			continue;
		tier = devs[v->dev].life != D_PRESENT ? 2 : binds && !v->nb ? 1 : 0;
		idx[tier][n[tier]++] = i;
	}
	if (usable && a % 8)
		for (int t = 0; t < 3; t++)
			if (n[t])
				return &vms[idx[t][(a >> 3) % (uint32_t)n[t]]];
	for (int t = 1; t < 3; t++)
		for (int i = 0; i < n[t]; i++)
			idx[0][n[0]++] = idx[t][i];
	return n[0] ? &vms[idx[0][(a >> 3) % (uint32_t)n[0]]] : NULL;
}

static struct mvm *vm_pick(uint32_t a, bool usable, bool need_q)
{
	return vm_pick_b(a, usable, need_q, false);
}

/* A BO to bind into a VM of device @dev (@other: of another device). */
static struct mbo *bind_bo_pick(uint32_t a, int dev, bool other)
{
	int idx[MAXBO], n = 0;

	for (int i = 0; i < MAXBO; i++) {
		const struct mbo *b = &bos[i];

		if (!b->used || b->orphan || (b->dev == dev) == other)
			continue;
		if (!other && (!main_owned(b) || b->closed))
			continue;
		idx[n++] = i;
	}
	return n ? &bos[idx[a % (uint32_t)n]] : NULL;
}

static void vm_q_create(struct mvm *v, uint32_t x)
{
	struct mdev *d = &devs[v->dev];
	struct ugpu_queue_opts qo = { .size = sizeof(qo), .name = "model-q" };
	struct ugpu_queue *q = NULL;
	struct eset s = { 0 };
	bool valid = true;
	int r;

	switch (x % 8) {
	case 0:
		break;
	case 1: /* an older caller: @name past @size must be ignored */
		qo.size = sizeof(qo.size);
		qo.name = (const char *)1;
		break;
	case 2:
		qo.size = 0;
		valid = false;
		break;
	default:
		break;
	}
	if (!valid)
		es_add(&s, -EINVAL);
	else if (d->life == D_REMOVED || d->life == D_CLOSED)
		es_add(&s, -ENODEV);
	else {
		es_add(&s, 0);
		if (d->life == D_REMOVING)
			es_add(&s, -ENODEV);
	}
	r = ugpu_queue_create(v->vm, x % 8 == 0 ? NULL : &qo, &q);
	tr(" queue%s -> %s", x % 8 == 1 ? " (short opts)" : x % 8 == 2 ? " (opts.size 0)" : "", ename(r));
	expect(r, &s, d, "ugpu_queue_create(VM#%d%s)", v->id, x % 8 == 1 ? ", short opts" : x % 8 == 2 ?
	       ", opts.size 0" : "");
	if (r)
		return;
	v->q[v->nq] = (struct mq){ .q = q, .id = next_q_id++ };
	v->nq++;
}

static void op_vm_create(const struct op *o)
{
	struct mdev *d = curdev();
	struct ugpu_vm_opts opts;
	struct ugpu_vm *vm = NULL;
	struct eset s = { 0 };
	struct mvm *v = NULL;
	uint32_t x = o->b, variant = o->a % 24; /* 7-12: refused */
	bool valid = true, nul = false;
	const char *what = "plain";
	int r;

	for (int i = 0; i < MAXVM && !v; i++)
		if (!vms[i].used)
			v = &vms[i];
	if (!d || d->life == D_CLOSED || dev_nvms(d) >= VM_PER_DEV || !v) {
		skip();
		return;
	}
	memset(&opts, 0, sizeof(opts));
	opts.size = sizeof(opts);
	opts.name = "model-vm";
	switch (variant) {
	case 0: case 1: case 2:
		nul = true;
		break;
	case 3: case 4: case 5: /* mirror: binds in the window punch holes in it */
		if (!mirror_on) {
			what = "plain (UGPU_MODEL_MIRROR=0)";
			break;
		}
		opts.flags = UGPU_VM_MIRROR;
		opts.mirror_start = VA_BASE - PG * (x % 1024);
		opts.mirror_size = PG * (1 + (x >> 10) % (2 * VA_PAGES));
		what = "mirror";
		break;
	case 6: /* an older caller: fields past @flags must be ignored */
		opts.size = offsetof(struct ugpu_vm_opts, flags) + sizeof(opts.flags);
		opts.mirror_start = 0x123;
		opts.mirror_size = 77;
		opts.name = (const char *)1;
		what = "short opts";
		break;
	case 7:
		opts.size = offsetof(struct ugpu_vm_opts, flags);
		valid = false;
		what = "opts not reaching flags";
		break;
	case 8:
		opts.flags = 0x2;
		valid = false;
		what = "unknown flag";
		break;
	case 9:
		opts.flags = UGPU_VM_MIRROR;
		opts.mirror_start = VA_BASE;
		valid = false;
		what = "empty mirror";
		break;
	case 10:
		opts.flags = UGPU_VM_MIRROR;
		opts.mirror_start = VA_BASE + 8;
		opts.mirror_size = PG;
		valid = false;
		what = "unaligned mirror";
		break;
	case 11:
		opts.flags = UGPU_VM_MIRROR;
		opts.mirror_start = (1ull << UGPU_VM_VA_BITS) - PG;
		opts.mirror_size = 2 * PG;
		valid = false;
		what = "mirror past 48 bits";
		break;
	case 12:
		opts.mirror_start = VA_BASE;
		opts.mirror_size = PG;
		valid = false;
		what = "mirror span without the flag";
		break;
	default:
		break;
	}
	if (!valid) {
		es_add(&s, -EINVAL);
	} else if (d->life == D_REMOVED) {
		es_add(&s, -ENODEV);
	} else {
		es_add(&s, 0);
		if (d->life == D_REMOVING) {
			es_add(&s, -ENODEV);
			es_add(&s, -EIO);
			es_add(&s, -ETIMEDOUT);
		}
		if (vram_pressure(d, 16 * PG, true))
			es_add(&s, -ENOSPC); /* a chunk of tables: pinned, contiguous */
		/* Header gap: vm.h does not list -EBUSY for ugpu_vm_create(), but
		 * the root table is VRAM, which a host-suspended device cannot
		 * give (bo.h's -EBUSY "no VRAM until resume"; ugpu_vm_bind() lists
		 * it for the same reason). Accepted while host-suspended. */
		if (host_maybe_suspended(d) || d->life == D_REMOVING)
			es_add(&s, -EBUSY);
		if (d->inj & INJ_WAKE)
			es_wake_first(&s);
		es_injected(&s, d);
	}
	r = ugpu_vm_create(d->dev, nul ? NULL : &opts, &vm);
	tr(" dev%d %s -> %s", d->id, what, ename(r));
	expect(r, &s, d, "ugpu_vm_create(dev%d, %s)", d->id, what);
	if (r) {
		if (vm)
			fail("vm", "ugpu_vm_create failed and set *out");
		return;
	}
	memset(v, 0, sizeof(*v));
	v->used = true;
	v->id = next_vm_id++;
	v->dev = d->id;
	v->vm = vm;
	v->flags = opts.size > offsetof(struct ugpu_vm_opts, flags) && !nul ? opts.flags : 0;
	if (v->flags & UGPU_VM_MIRROR) {
		v->mstart = opts.mirror_start;
		v->msize = opts.mirror_size;
	}
	T.vms++;
	tr(" VM#%d", v->id);
	vm_q_create(v, o->c);
	if (o->c % 4 == 0 && v->nq)
		vm_q_create(v, o->c >> 8);
	vm_check(v, NULL);
}

/* Destroy queue @qi of @v. Kernels not ended are cancelled (those waiting),
 * or waited for (the one running): with launches stopped none has run, so
 * none did anything; otherwise what they may have written is unknown. */
static void q_drop(struct mvm *v, int qi, bool reap_first)
{
	struct mq *q = &v->q[qi];
	struct mdev *d = &devs[v->dev];
	int r;

	if (!reap_q(v, q, reap_first && dev_can_wait(d), 0)) {
		if (!dev_frozen(d))
			for (int k = 0; k < q->npend; k++) {
				struct kwalk w;

				if (q->pend[k].op == UGPU_KERNEL_READ_SUM)
					continue;
				kern_walk(v, q->pend[k].op, q->pend[k].va, q->pend[k].bytes, &w);
				walk_unknown(&w);
			}
		tr(" (q%d: %" PRIu64 " kernels not ended%s)", q->id, q_unreaped(q),
		   dev_frozen(d) ? ", never run" : "");
	}
	r = ugpu_queue_destroy(q->q);
	tr(" q%d destroyed -> %s", q->id, ename(r));
	expect(r, &(struct eset){ 1, { 0 } }, d, "ugpu_queue_destroy(VM#%d q%d)", v->id, q->id);
	memmove(v->q + qi, v->q + qi + 1, (size_t)(v->nq - qi - 1) * sizeof(v->q[0]));
	v->nq--;
}

static void vm_destroy(struct mvm *v, bool busy_first)
{
	struct mdev *d = &devs[v->dev];
	int r;

	if (v->nq && busy_first) {
		r = ugpu_vm_destroy(v->vm);
		tr(" VM#%d with %d queues -> %s", v->id, v->nq, ename(r));
		expect(r, &(struct eset){ 1, { -EBUSY } }, d, "ugpu_vm_destroy(VM#%d) with %d queues",
		       v->id, v->nq);
		vm_check(v, NULL);
	}
	while (v->nq)
		q_drop(v, v->nq - 1, true);
	r = ugpu_vm_destroy(v->vm);
	tr(" VM#%d destroyed -> %s", v->id, ename(r));
	expect(r, &(struct eset){ 1, { 0 } }, d, "ugpu_vm_destroy(VM#%d)", v->id);
	for (int i = 0; i < v->nb; i++)
		bind_dropped(v->b[i].bo);
	memset(v, 0, sizeof(*v));
}

static void vm_destroy_dev(struct mdev *d)
{
	for (int i = 0; i < MAXVM; i++)
		if (vms[i].used && vms[i].dev == d->id)
			vm_destroy(&vms[i], false);
}

static void op_vm_destroy(const struct op *o)
{
	struct mvm *v = vm_pick(o->a, false, false);

	if (!v) {
		skip();
		return;
	}
	vm_destroy(v, o->b % 3 == 0);
}

static void op_queue(const struct op *o, bool create)
{
	struct mvm *v = vm_pick(o->a, true, !create);

	if (!v || (create && v->nq >= MAXQ)) {
		skip();
		return;
	}
	tr(" VM#%d", v->id);
	if (create)
		vm_q_create(v, o->b);
	else
		q_drop(v, (int)(o->b % (uint32_t)v->nq), o->c % 2); /* or destroy it with kernels in flight */
	vm_check(v, NULL);
}

/* A pending kernel of @v covers part of [va, +bytes)? */
static bool pend_overlap(const struct mvm *v, uint64_t va, uint64_t bytes)
{
	for (int i = 0; i < v->nq; i++)
		for (int k = 0; k < v->q[i].npend; k++) {
			const struct mkern *kk = &v->q[i].pend[k];

			if (kk->va < va + bytes && va < kk->va + kk->bytes)
				return true;
		}
	return false;
}

static uint64_t vm_gen(struct mvm *v)
{
	struct ugpu_vm_info vi;

	vm_check(v, &vi);
	return vi.pt_gen;
}

/* @into: this VM (NULL: picked by the op's parameter). */
static void op_bind_in(const struct op *o, struct mvm *into)
{
	struct mvm *v = into ? into : vm_pick(o->a, true, false);
	struct mdev *d;
	struct mbo *b;
	uint32_t variant = o->d % 40, x = o->c, y = o->d >> 6; /* variants 0-8: bad inputs */
	uint64_t off, bytes, va, pages, bo_pages, gen0, gen1;
	uint32_t flags;
	bool valid = true, overlap, late = false; /* late: refused after waking the device */
	struct ugpu_vm *vh;
	struct ugpu_bo *bh;
	const char *bad = "";
	struct eset s = { 0 };
	int r, npend0;

	if (!into && (!v || devs[v->dev].life != D_PRESENT) && curdev() && curdev()->life == D_PRESENT &&
	    !dev_nvms(curdev()) && o->a % 8) {
		/* the current device has no VM: make one first */
		struct op f = { .kind = OP_VM_CREATE, .a = 13 + (o->a >> 3) % 7, .b = o->b >> 4, .c = o->c };

		tr(" (VM_CREATE first:");
		op_vm_create(&f);
		tr(")");
		v = vm_pick(o->a, true, false);
	}
	if (!v || v->nb >= MAXBIND) {
		tr(v ? " (VM full)" : " (no VM)");
		skip();
		return;
	}
	d = &devs[v->dev];
	b = bind_bo_pick(o->b, v->dev, variant == 7);
	if (!b && variant == 7) {
		variant = 39;
		b = bind_bo_pick(o->b, v->dev, false);
	}
	if (!b) {
		tr(" (no BO for VM#%d)", v->id);
		skip();
		return;
	}
	bo_pages = b->size / PG;
	if (x % 4 == 0) {
		off = 0;
		pages = bo_pages;
	} else {
		off = (x >> 2) % bo_pages;
		pages = 1 + (x >> 12) % (bo_pages - off);
	}
	bytes = pages * PG;
	off *= PG;
	flags = (x >> 24) % 6 == 0 ? UGPU_BIND_READONLY : 0;
	switch (y % 20) {
	case 10: /* where a bind was just removed: the device must not use the old translations */
		if (v->unbound_va && v->unbound_va + bytes <= VA_BASE + VA_PAGES * PG) {
			va = v->unbound_va;
			break;
		}
		va = VA_BASE + PG * ((y >> 5) % (VA_PAGES - pages + 1));
		break;
	case 11: case 12: case 13: case 14: case 15: /* right after a bind: kernels span both */
		if (v->nb) {
			const struct mbind *n = &v->b[(y >> 5) % (uint32_t)v->nb];

			va = n->va + n->bytes;
			break;
		}
		/* fall through */
	default:
		va = VA_BASE + PG * ((y >> 5) % (VA_PAGES - pages + 1));
		break;
	case 16: /* at the top of the VA range */
		va = pages <= VA_TOP_PAGES ? VA_TOP + PG * ((y >> 5) % (VA_TOP_PAGES - pages + 1))
					   : VA_BASE + PG * ((y >> 5) % (VA_PAGES - pages + 1));
		break;
	case 17: case 18: case 19: /* over a bind */
		if (v->nb) {
			const struct mbind *n = &v->b[(y >> 5) % (uint32_t)v->nb];

			va = n->va + PG * ((y >> 10) % (n->bytes / PG));
		} else {
			va = VA_BASE + PG * ((y >> 5) % (VA_PAGES - pages + 1));
		}
		break;
	}
	vh = v->vm;
	bh = b->bo;
	switch (variant) {
	case 0: va += 8 * (1 + x % 511); bad = "unaligned va"; break;
	case 1: off += 8; bad = "unaligned BO offset"; break;
	case 2: bytes = 0; bad = "no bytes"; break;
	case 3: bytes -= 8; bad = "unaligned size"; break;
	case 4: bytes = b->size - off + PG; bad = "past the BO"; break;
	case 5: va = (1ull << UGPU_VM_VA_BITS) - PG; bytes = 2 * PG; bad = "past 48 bits";
		if (bytes > b->size - off) { off = 0; }
		if (b->size < 2 * PG) bad = "past 48 bits and the BO";
		break;
	case 6: flags |= 1u << 7; bad = "unknown flag"; break;
	case 7: bad = "a BO of another device"; break;
	case 8:
		if (x & 1)
			vh = NULL;
		else
			bh = NULL;
		bad = x & 1 ? "NULL vm" : "NULL bo";
		break;
	default: break;
	}
	valid = !*bad && va + bytes <= (1ull << UGPU_VM_VA_BITS);
	if (!*bad && !valid)
		bad = "past 48 bits";
	overlap = valid && va_overlap(v, va, bytes);
	if (valid && !overlap && pend_overlap(v, va, bytes) && !reap_vm(v, dev_can_wait(d))) {
		tr(" VM#%d %s at 0x%" PRIx64 ": skip (kernels not ended cover it)", v->id, bname(b), va);
		T.skipped++;
		return;
	}
	tr(" VM#%d %s [0x%" PRIx64 ", +%" PRIu64 ") at 0x%" PRIx64 "%s%s%s", v->id, bname(b), off, bytes, va,
	   flags & UGPU_BIND_READONLY ? " ro" : "", *bad ? " bad: " : overlap ? " overlapping" : "", bad);
	late = overlap; /* the overlap is found after the runtime-PM reference is taken */
	if (!valid || overlap) {
		es_add(&s, -EINVAL);
		if (d->life == D_CLOSED || d->life == D_REMOVED || d->life == D_REMOVING)
			es_add(&s, -ENODEV); /* both hold */
		if (late && (d->inj & INJ_WAKE))
			es_wake_first(&s);
	} else if (d->life == D_CLOSED || d->life == D_REMOVED) {
		es_add(&s, -ENODEV);
		if (b->lost)
			es_add(&s, -ENODATA); /* both hold */
	} else {
		if (d->pm == UGPU_PM_SUSPENDED && d->life == D_PRESENT) {
			es_add(&s, -EBUSY);
		} else {
			es_add(&s, 0);
			if (host_maybe_suspended(d))
				es_add(&s, -EBUSY);
		}
		if (vram_pressure(d, 16 * PG, true))
			es_add(&s, -ENOSPC); /* a chunk of tables */
		if (b->lost || b->may_lose)
			es_add(&s, -ENODATA);
		if (d->life == D_REMOVING) {
			es_add(&s, -ENODEV);
			es_add(&s, -EIO);
			es_add(&s, -ETIMEDOUT);
			es_add(&s, -EBUSY);
		}
		if (d->inj & INJ_WAKE)
			es_wake_first(&s);
		es_injected(&s, d);
	}
	npend0 = vm_pend(v);
	gen0 = vm_gen(v);
	r = ugpu_vm_bind(vh, bh, off, va, bytes, flags);
	tr(" -> %s", ename(r));
	expect(r, &s, d, "ugpu_vm_bind(VM#%d, %s, off 0x%" PRIx64 ", va 0x%" PRIx64 ", %" PRIu64 "%s%s%s)",
	       v->id, bname(b), off, va, bytes, flags & UGPU_BIND_READONLY ? ", ro" : "",
	       *bad ? ": " : overlap ? ": overlapping" : "", bad);
	if (r == 0) {
		int at = 0;

		while (at < v->nb && v->b[at].va < va)
			at++;
		memmove(v->b + at + 1, v->b + at, (size_t)(v->nb - at) * sizeof(v->b[0]));
		v->b[at] = (struct mbind){ va, bytes, off, (int)(b - bos), flags };
		v->nb++;
		b->nbinds++;
		T.binds++;
	}
	gen1 = vm_gen(v);
	if (r == 0 && d->life == D_PRESENT && gen1 <= gen0)
		fail("vm", "ugpu_vm_bind(VM#%d) returned 0 and pt_gen stayed %" PRIu64 " (vm.h: it changes "
		     "with every bind)", v->id, gen1);
	if (r && !npend0 && gen1 != gen0)
		fail("vm", "ugpu_vm_bind(VM#%d) returned %s and pt_gen went from %" PRIu64 " to %" PRIu64
		     " (\"nothing is changed\")", v->id, ename(r), gen0, gen1);
	if (b->dev == v->dev && !b->closed)
		touched = b;
}

static void op_bind(const struct op *o)
{
	op_bind_in(o, NULL);
}

static void op_unbind(const struct op *o)
{
	struct mvm *v = vm_pick(o->a, false, false);
	struct mdev *d;
	uint32_t variant = o->c % 14;
	uint64_t va = VA_BASE, bytes = PG, end, gen0, gen1;
	int first = -1, last = -1, i, r, npend0;
	bool valid, partial = false, shape_bad = false;
	struct eset s = { 0 };

	if (!v) {
		skip();
		return;
	}
	d = &devs[v->dev];
	if (!v->nb && variant < 10)
		variant = 10;
	i = v->nb ? (int)(o->b % (uint32_t)v->nb) : 0;
	switch (variant) {
	default: /* one bind */
		va = v->b[i].va;
		bytes = v->b[i].bytes;
		break;
	case 6: case 7: { /* from bind i to bind j, whole, gaps included */
		int j = i + (int)(o->d % 3);

		if (j >= v->nb)
			j = v->nb - 1;
		va = v->b[i].va;
		bytes = v->b[j].va + v->b[j].bytes - va;
		break;
	}
	case 8: /* part of a bind */
		va = v->b[i].va + (v->b[i].bytes > PG && o->d % 2 ? PG : 0);
		bytes = v->b[i].bytes > PG ? v->b[i].bytes - PG : 2 * PG;
		break;
	case 9: /* a bind and some room around it */
		va = v->b[i].va >= PG ? v->b[i].va - PG : 0;
		bytes = v->b[i].bytes + 2 * PG;
		break;
	case 10: case 11: /* anywhere in the window */
		va = VA_BASE + PG * (o->d % VA_PAGES);
		bytes = PG * (1 + (o->d >> 12) % 64);
		break;
	case 12:
		va = (v->nb ? v->b[i].va : VA_BASE) + 8;
		shape_bad = true;
		break;
	case 13:
		va = v->nb ? v->b[i].va : VA_BASE;
		bytes = 0;
		shape_bad = true;
		break;
	}
	if (va >= (1ull << UGPU_VM_VA_BITS) || bytes > (1ull << UGPU_VM_VA_BITS) - va)
		shape_bad = true; /* past the VA range */
	end = va + bytes;
	/* whole binds only, at least one */
	for (int k = 0; k < v->nb && !shape_bad; k++) {
		const struct mbind *bd = &v->b[k];

		if (bd->va + bd->bytes <= va || bd->va >= end)
			continue;
		if (bd->va < va || bd->va + bd->bytes > end)
			partial = true;
		if (first < 0)
			first = k;
		last = k;
	}
	valid = !shape_bad && !partial && first >= 0;
	if (valid && vm_pend(v) && !reap_vm(v, dev_can_wait(d)) && !dev_frozen(d)) {
		/* a kernel may run on the VM: -EBUSY or not, by timing */
		tr(" VM#%d [0x%" PRIx64 ", +%" PRIu64 "): skip (kernels not ended)", v->id, va, bytes);
		T.skipped++;
		return;
	}
	tr(" VM#%d [0x%" PRIx64 ", +%" PRIu64 ")%s", v->id, va, bytes,
	   shape_bad ? " unaligned or empty" : partial ? " partial" : first < 0 ? " nothing bound" : "");
	if (valid)
		tr(" (%d binds)", last - first + 1);
	if (!valid) {
		es_add(&s, -EINVAL);
		if (!shape_bad) {
			if (d->inj & INJ_WAKE)
				es_wake_first(&s); /* the device is woken before the binds are looked at */
			if (d->life == D_CLOSED)
				es_add(&s, -ENODEV);
		}
	} else if (d->life == D_CLOSED) {
		es_add(&s, 0);
		es_add(&s, -ENODEV); /* vm.h: "after the device is gone unbinding still works"; closed? */
	} else if (d->life == D_REMOVED) {
		es_add(&s, 0);
	} else {
		if (d->pm == UGPU_PM_SUSPENDED && d->life == D_PRESENT) {
			es_add(&s, -EBUSY);
		} else {
			es_add(&s, 0);
			if (host_maybe_suspended(d) || d->life == D_REMOVING)
				es_add(&s, -EBUSY);
		}
		if (d->life == D_REMOVING) {
			es_add(&s, -EIO);
			es_add(&s, -ETIMEDOUT);
			es_add(&s, -ENODEV);
		}
		if (d->inj & INJ_WAKE)
			es_wake_first(&s);
	}
	npend0 = vm_pend(v);
	gen0 = vm_gen(v);
	r = ugpu_vm_unbind(v->vm, va, bytes);
	tr(" -> %s", ename(r));
	expect(r, &s, d, "ugpu_vm_unbind(VM#%d, 0x%" PRIx64 ", %" PRIu64 ")%s", v->id, va, bytes,
	       shape_bad ? ": unaligned or empty" : partial ? ": covers part of a bind" :
	       first < 0 ? ": nothing bound there" : "");
	if (r == 0) {
		v->unbound_va = v->b[first].va;
		for (int k = first; k <= last; k++)
			bind_dropped(v->b[k].bo);
		memmove(v->b + first, v->b + last + 1, (size_t)(v->nb - last - 1) * sizeof(v->b[0]));
		v->nb -= last - first + 1;
	}
	gen1 = vm_gen(v);
	if (r == 0 && d->life == D_PRESENT && gen1 <= gen0)
		fail("vm", "ugpu_vm_unbind(VM#%d) returned 0 and pt_gen stayed %" PRIu64, v->id, gen1);
	if (r && !npend0 && gen1 != gen0)
		fail("vm", "ugpu_vm_unbind(VM#%d) returned %s and pt_gen went from %" PRIu64 " to %" PRIu64
		     " (\"nothing is changed\")", v->id, ename(r), gen0, gen1);
}

/* Submit one kernel on @q; on success it is pending. */
static int kern_submit(struct mvm *v, struct mq *q, const struct ugpu_kernel *k, const char *bad)
{
	struct mdev *d = &devs[v->dev];
	struct eset s = { 0 };
	uint64_t fence = 0;
	bool full = q_unreaped(q) >= UGPU_QUEUE_DEPTH;
	int r;

	if (*bad) {
		es_add(&s, -EINVAL);
		if (d->life != D_PRESENT)
			es_add(&s, -ENODEV); /* both hold */
	} else if (d->life == D_REMOVED || d->life == D_CLOSED) {
		es_add(&s, -ENODEV);
	} else if (full && dev_frozen(d)) {
		es_add(&s, -EAGAIN); /* nothing can end while launches are stopped */
	} else {
		es_add(&s, 0);
		if (full)
			es_add(&s, -EAGAIN);
		if (d->life == D_REMOVING) {
			es_add(&s, -ENODEV);
			es_add(&s, -EIO);
			es_add(&s, -ETIMEDOUT);
		}
		if (d->inj & INJ_WAKE)
			es_wake_first(&s); /* its runtime-PM reference wakes the device */
	}
	r = ugpu_queue_submit(q->q, k, !strcmp(bad, "NULL fence") ? NULL : &fence);
	expect(r, &s, d, "ugpu_queue_submit(VM#%d q%d, %s [0x%" PRIx64 ", +%" PRIu64 ")%s%s)", v->id, q->id,
	       kop_name(k->op), k->va, k->bytes, *bad ? ": " : "", bad);
	if (r)
		return r;
	if (fence != q->submitted + 1)
		fail("fence", "ugpu_queue_submit(VM#%d q%d) gave fence %" PRIu64 " after %" PRIu64
		     " submissions (vm.h: increasing by one from 1)", v->id, q->id, fence, q->submitted);
	q->submitted = fence;
	q->pend[q->npend++] = (struct mkern){
		.fence = fence, .n = 1, .op = k->op, .va = k->va, .bytes = k->bytes, .value = k->value,
		.inj = d->inj, .rm = d->life != D_PRESENT,
		.host = d->pm != UGPU_PM_ACTIVE || d->main_susp || (N.live && N.dev == d->id),
		.held = dev_frozen(d),
	};
	T.kernels++;
	return 0;
}

/* Would a kernel of @op on [va, +bytes) on @q race a pending kernel of
 * another queue on the same bytes (one of them writing)? Those queues are
 * reaped first; true if that cannot be done now. */
static bool kern_race(struct mvm *v, struct mq *q, enum ugpu_kernel_op op, uint64_t va, uint64_t bytes)
{
	struct mdev *d = &devs[v->dev];
	struct kwalk w, w2;

	kern_walk(v, op, va, bytes, &w);
	for (int i = 0; i < MAXVM; i++) {
		struct mvm *v2 = &vms[i];

		if (!v2->used || v2->dev != v->dev)
			continue;
		for (int j = 0; j < v2->nq; j++) {
			struct mq *q2 = &v2->q[j];
			bool race = false;

			if (q2 == q)
				continue;
			for (int k = 0; k < q2->npend && !race; k++) {
				const struct mkern *k2 = &q2->pend[k];

				if (op == UGPU_KERNEL_READ_SUM && k2->op == UGPU_KERNEL_READ_SUM)
					continue;
				kern_walk(v2, k2->op, k2->va, k2->bytes, &w2);
				race = walks_overlap(&w, &w2);
			}
			if (race && !reap_q(v2, q2, dev_can_wait(d), 0))
				return true;
		}
	}
	return false;
}

/* The parameter pick(a, 0) turns into @t. */
static uint32_t pick_pos(const struct mbo *t)
{
	uint32_t n = 0;

	for (int i = 0; i < MAXBO; i++)
		if (bos[i].used && !bos[i].orphan) {
			if (&bos[i] == t)
				return n;
			n++;
		}
	return 0;
}

static void op_kernel(const struct op *o, bool faulty)
{
	struct mvm *v = vm_pick_b(o->a, true, true, !faulty);
	struct mdev *d;
	struct mq *q;
	struct ugpu_kernel k;
	uint32_t x = o->b >> 3, variant = faulty ? o->c % 8 : 8;
	enum ugpu_kernel_op op = (enum ugpu_kernel_op)(1 + o->c % 3);
	const char *bad = "";
	int n = 1, sub = 0;

	if (!v) {
		skip();
		return;
	}
	d = &devs[v->dev];
	q = &v->q[(o->a >> 16) % (uint32_t)v->nq];
	if (q->npend >= MAXPEND - 4 && !reap_q(v, q, dev_can_wait(d), 0)) {
		skip();
		return;
	}
	memset(&k, 0, sizeof(k));
	k.size = sizeof(k);
	if (!v->nb && variant == 8 && devs[v->dev].life == D_PRESENT && o->d % 4) {
		/* nothing bound: bind something first (a valid bind) */
		struct op f = { .kind = OP_BIND, .b = o->b >> 5, .c = o->c >> 3,
				.d = 9 + (o->d >> 2) % 31 + 40 * (o->d >> 12) };

		tr(" (BIND first:");
		op_bind_in(&f, v);
		tr(")");
	}
	if (!v->nb && (variant == 8 || variant == 0))
		variant = 1; /* nothing bound: everything faults */
	if (variant == 8 || variant == 0) {
		/* a run of binds that follow each other, and a range in it */
		int i = (int)(o->b % (uint32_t)v->nb), j = i;
		uint64_t start, end, words;

		while (j + 1 < v->nb && v->b[j + 1].va == v->b[j].va + v->b[j].bytes && j - i < 2 &&
		       (x >> (j - i)) & 1)
			j++;
		start = v->b[i].va;
		end = v->b[j].va + v->b[j].bytes;
		if (variant == 0) { /* and on past its end, where nothing is bound */
			end += PG * (1 + x % 3);
			if (end > 1ull << UGPU_VM_VA_BITS) /* not past the VA range: -EINVAL */
				end = 1ull << UGPU_VM_VA_BITS;
		}
		if (x % 4) {
			words = (end - start) / 8;
			start += 8 * ((x >> 4) % words);
			words = (end - start) / 8;
			end = start + 8 * (1 + (x >> 16) % words);
		}
		if (end - start > KMAX_BYTES)
			end = start + KMAX_BYTES;
		k.va = start;
		k.bytes = end - start;
	} else {
		switch (variant) {
		case 1: case 2: /* anywhere in the window: faults where nothing is bound */
			k.va = VA_BASE + 8 * (x % (VA_PAGES * 512));
			k.bytes = 8 * (1 + (x >> 20) % 2048);
			break;
		case 3: { /* a write to a read-only bind (or a read of it) */
			int i, c = 0;

			for (i = 0; i < v->nb; i++)
				if (v->b[i].flags & UGPU_BIND_READONLY && c++ == (int)(x % 4))
					break;
			if (i == v->nb)
				i = (int)(x % (uint32_t)(v->nb ? v->nb : 1));
			k.va = v->nb ? v->b[i].va : VA_BASE;
			k.bytes = v->nb ? (v->b[i].bytes > KMAX_BYTES ? KMAX_BYTES : v->b[i].bytes) : PG;
			break;
		}
		case 4: /* bad arguments: nothing is queued */
			k.va = VA_BASE;
			k.bytes = 64;
			switch (x % 7) {
			case 0: k.va += 4; bad = "unaligned va"; break;
			case 1: k.bytes = 12; bad = "unaligned size"; break;
			case 2: op = (enum ugpu_kernel_op)7; bad = "unknown op"; break;
			case 3: k.size = offsetof(struct ugpu_kernel, value); bad = "kernel.size short of value"; break;
			case 4: k.va = (1ull << UGPU_VM_VA_BITS) - 8; k.bytes = 16; bad = "past 48 bits"; break;
			case 5: bad = "NULL fence"; break;
			default: k.va = 1ull << UGPU_VM_VA_BITS; bad = "va past 48 bits"; break;
			}
			break;
		case 5: /* nothing to do */
			k.va = v->nb ? v->b[x % (uint32_t)v->nb].va : VA_BASE;
			k.bytes = 0;
			break;
		default: /* the top window */
			k.va = VA_TOP + 8 * (x % (VA_TOP_PAGES * 512));
			k.bytes = 8 * (1 + (x >> 20) % 1024);
			if (k.va + k.bytes > (1ull << UGPU_VM_VA_BITS))
				k.bytes = (1ull << UGPU_VM_VA_BITS) - k.va;
			break;
		}
	}
	if (!faulty && o->d % 8 == 0)
		n = 2 + (int)((o->d >> 3) % 3); /* a chain on one queue: in order */
	if (!*bad && kern_race(v, q, op == UGPU_KERNEL_READ_SUM && n == 1 ? op : UGPU_KERNEL_WRITE, k.va,
			       k.bytes)) {
		tr(" VM#%d q%d: skip (another queue's kernels on the same bytes have not ended)", v->id, q->id);
		T.skipped++;
		return;
	}
	tr(" VM#%d q%d [0x%" PRIx64 ", +%" PRIu64 ")%s%s", v->id, q->id, k.va, k.bytes, *bad ? " bad: " : "",
	   bad);
	if (!faulty && o->d % 16 == 5 && !*bad && k.bytes) {
		/* a read first (the device caches the translations), then one of
		 * the BOs moves, then the kernel: it must not use what was cached */
		struct ugpu_kernel r0 = k;
		struct kwalk w;

		r0.op = UGPU_KERNEL_READ_SUM;
		tr(" read-sum first");
		if (kern_submit(v, q, &r0, "") == 0 && reap_q(v, q, dev_can_wait(d), 0)) {
			kern_walk(v, UGPU_KERNEL_READ_SUM, k.va, k.bytes, &w);
			if (w.n) {
				struct mbo *b = &bos[w.s[(o->d >> 4) % (uint32_t)w.n].bo];

				if (!b->orphan && b->npl == 2) {
					struct op f = { .kind = OP_MIGRATE, .a = pick_pos(b),
							.b = placement_of(b) == UGPU_PLACEMENT_VRAM ? 9 : 0 };

					tr(", then MIGRATE");
					op_migrate(&f);
					tr(", then");
				}
			}
		}
	}
	for (int i = 0; i < n; i++) {
		k.op = op;
		k.value = op == UGPU_KERNEL_WRITE ? mix64(o->c ^ ((uint64_t)o->d << 32) ^ (uint64_t)i)
			: (o->c >> 4) % 4 == 0 ? mix64(o->d + (uint64_t)i) : 1 + (o->c >> 8) % 1000;
		tr(" %s", kop_name(op));
		if (kern_submit(v, q, &k, bad))
			break;
		sub++;
		op = (enum ugpu_kernel_op)(1 + (op + (o->d >> 6)) % 3);
	}
	tr(" (%d submitted%s)", sub, dev_frozen(d) ? ", launches stopped" : "");
	if (!sub)
		return;
	if (o->d % 10 < 6 || faulty) {
		if (reap_q(v, q, dev_can_wait(d), (int)((o->d >> 8) % 2))) {
			struct kwalk w;

			/* check the BO it touched now */
			kern_walk(v, UGPU_KERNEL_READ_SUM, k.va, k.bytes, &w);
			if (w.n && !bos[w.s[0].bo].orphan && main_owned(&bos[w.s[0].bo]))
				touched = &bos[w.s[0].bo];
		}
	}
	q_check(v, q);
}

static void op_kwait(const struct op *o)
{
	struct mvm *v = NULL;
	struct mdev *d;
	int idx[MAXVM], n = 0;

	for (int i = 0; i < MAXVM; i++)
		if (vms[i].used && vm_pend(&vms[i]))
			idx[n++] = i;
	if (!n) {
		skip();
		return;
	}
	v = &vms[idx[o->a % (uint32_t)n]];
	d = &devs[v->dev];
	tr(" VM#%d (%d pending%s)", v->id, vm_pend(v), dev_can_wait(d) ? "" : ", poll only");
	for (int i = 0; i < v->nq; i++) {
		struct mq *q = &v->q[i];

		if (!q->npend)
			continue;
		if (o->b % 3 == 2 && dev_can_wait(d)) {
			/* the last first: fences complete in order, so then every
			 * earlier one polls complete */
			struct mkern *last = &q->pend[q->npend - 1];
			struct ugpu_kernel_result res = { .size = sizeof(res) };
			uint64_t f = last->fence + last->n - 1;
			int r = ugpu_fence_wait(q->q, f, d->life == D_PRESENT ? KWAIT_MS : KWAIT_RM_MS, &res);

			if (r == -ETIMEDOUT)
				fail("hang", "ugpu_fence_wait(VM#%d q%d, fence %" PRIu64 "): did not end within %d ms "
				     "[%s]", v->id, q->id, f, KWAIT_MS, dstate(d));
			if (!reap_q(v, q, false, 0))
				fail("fence", "fence %" PRIu64 " of VM#%d q%d completed and an earlier one polls "
				     "-EAGAIN (queues run in order)", f, v->id, q->id);
		} else {
			reap_q(v, q, dev_can_wait(d), (int)(o->b % 3));
		}
		q_check(v, q);
	}
}

/* Results read again, fences not handed out, bad arguments, queue query. */
static void op_fence(const struct op *o)
{
	struct mvm *v = vm_pick(o->a, false, true);
	struct ugpu_kernel_result res;
	struct eset inv = es1(-EINVAL);
	struct mdev *d;
	struct mq *q;
	int fd = -1, r;

	if (!v) {
		skip();
		return;
	}
	d = &devs[v->dev];
	q = &v->q[o->b % (uint32_t)v->nq];
	tr(" VM#%d q%d (%" PRIu64 " submitted, %d results kept)", v->id, q->id, q->submitted, q->nhist);
	for (int i = 0; i < q->nhist; i++) {
		const struct mhist *h = &q->hist[i];
		struct eset s = es1(0);

		memset(&res, 0, sizeof(res));
		res.size = o->c % 2 ? sizeof(res) : offsetof(struct ugpu_kernel_result, sum);
		if (q->submitted - h->fence >= UGPU_QUEUE_RESULTS)
			es_add(&s, -ESTALE);
		if (q->reaped - h->fence >= UGPU_QUEUE_RESULTS)
			s = es1(-ESTALE);
		r = ugpu_fence_wait(q->q, h->fence, o->c % 3 ? 0 : 5, &res);
		expect(r, &s, d, "ugpu_fence_wait(VM#%d q%d, fence %" PRIu64 ") read again", v->id, q->id,
		       h->fence);
		if (r == 0 && (res.status != h->status ||
			       (res.size == sizeof(res) && res.sum != h->sum) ||
			       (res.size < sizeof(res) && res.sum != 0)))
			fail("fence", "fence %" PRIu64 " of VM#%d q%d read again: status %s sum 0x%" PRIx64
			     " (res.size %zu); first read: status %s sum 0x%" PRIx64, h->fence, v->id, q->id,
			     ename(res.status), res.sum, res.size, ename(h->status), h->sum);
		if (r == 0 && o->d % 4 == 0) {
			struct pollfd p = { .events = POLLIN };

			expect(ugpu_fence_eventfd(q->q, h->fence, &fd), &(struct eset){ 1, { 0 } }, d,
			       "ugpu_fence_eventfd(VM#%d q%d, completed fence %" PRIu64 ")", v->id, q->id, h->fence);
			p.fd = fd;
			if (poll(&p, 1, 0) != 1)
				fail("fence", "the eventfd of completed fence %" PRIu64 " is not readable at once",
				     h->fence);
			close(fd);
		}
	}
	for (int i = 0; i < q->npend && i < 4; i++) {
		/* an eventfd closed before its fence completes: "harmless" */
		expect(ugpu_fence_eventfd(q->q, q->pend[i].fence, &fd), &(struct eset){ 1, { 0 } }, d,
		       "ugpu_fence_eventfd(VM#%d q%d, fence %" PRIu64 " not reaped)", v->id, q->id,
		       q->pend[i].fence);
		close(fd);
	}
	memset(&res, 0, sizeof(res));
	res.size = sizeof(res);
	expect(ugpu_fence_wait(q->q, 0, 0, &res), &inv, d, "ugpu_fence_wait(fence 0)");
	expect(ugpu_fence_wait(q->q, q->submitted + 1 + o->d % 5, 0, &res), &inv, d,
	       "ugpu_fence_wait(a fence not handed out)");
	expect(ugpu_fence_wait(NULL, 1, 0, &res), &inv, d, "ugpu_fence_wait(NULL)");
	if (q->submitted) {
		expect(ugpu_fence_wait(q->q, q->submitted, -1 - (int)(o->d % 100), &res), &inv, d,
		       "ugpu_fence_wait(a negative timeout)");
		struct eset s0 = inv;

		/* vm.h lists no -EINVAL for a @res->size too small (its other
		 * structs' calls do): either */
		res.size = 0;
		es_add(&s0, 0);
		es_add(&s0, -EAGAIN);
		es_add(&s0, -ESTALE);
		expect(ugpu_fence_wait(q->q, q->submitted, 0, &res), &s0, d, "ugpu_fence_wait(res.size 0)");
	}
	expect(ugpu_fence_eventfd(q->q, q->submitted + 1, &fd), &inv, d,
	       "ugpu_fence_eventfd(a fence not handed out)");
	expect(ugpu_fence_eventfd(q->q, 0, &fd), &inv, d, "ugpu_fence_eventfd(fence 0)");
	expect(ugpu_queue_query(q->q, &(struct ugpu_queue_info){ .size = 0 }), &inv, d,
	       "ugpu_queue_query(info.size 0)");
	expect(ugpu_queue_query(NULL, &(struct ugpu_queue_info){ .size = sizeof(struct ugpu_queue_info) }),
	       &inv, d, "ugpu_queue_query(NULL)");
	q_check(v, q);
}

/* While launches are stopped: fill a queue to UGPU_QUEUE_DEPTH with small
 * reads; the next submission is -EAGAIN. They all run after resume. */
static void op_kflood(const struct op *o)
{
	struct mvm *v = vm_pick(o->a, true, true);
	struct ugpu_kernel k = { .size = sizeof(k), .op = UGPU_KERNEL_READ_SUM, .bytes = 8 };
	struct mdev *d;
	struct mq *q;
	uint64_t want, first = 0, i;
	int r;

	if (!v || !dev_frozen(&devs[v->dev])) {
		skip();
		return;
	}
	d = &devs[v->dev];
	q = &v->q[o->b % (uint32_t)v->nq];
	reap_q(v, q, false, 0); /* what ended before launches stopped */
	if (q->npend >= MAXPEND) {
		skip();
		return;
	}
	k.va = v->nb ? v->b[o->c % (uint32_t)v->nb].va : VA_BASE;
	want = UGPU_QUEUE_DEPTH - q_unreaped(q);
	tr(" VM#%d q%d: %" PRIu64 " reads at 0x%" PRIx64, v->id, q->id, want, k.va);
	for (i = 0; i < want; i++) {
		uint64_t f = 0;

		r = ugpu_queue_submit(q->q, &k, &f);
		if (r)
			fail("errno", "ugpu_queue_submit(VM#%d q%d) returned %s after %" PRIu64 " of the %" PRIu64
			     " submissions the queue still has room for [%s]", v->id, q->id, ename(r), i, want,
			     dstate(d));
		if (f != q->submitted + 1)
			fail("fence", "ugpu_queue_submit gave fence %" PRIu64 " after %" PRIu64, f, q->submitted);
		q->submitted = f;
		if (!first)
			first = f;
	}
	r = ugpu_queue_submit(q->q, &k, &(uint64_t){ 0 });
	tr(" then -> %s", ename(r));
	expect(r, &(struct eset){ 1, { -EAGAIN } }, d, "ugpu_queue_submit(VM#%d q%d) with %d kernels not "
	       "ended", v->id, q->id, UGPU_QUEUE_DEPTH);
	if (want) {
		q->pend[q->npend++] = (struct mkern){ .fence = first, .n = (uint32_t)want, .op = k.op,
						      .va = k.va, .bytes = k.bytes, .inj = d->inj,
						      .host = true, .held = true, .flood = true };
		T.kernels += want;
		T.floods++;
	}
	q_check(v, q);
}

/* ------------------------------------------------------------------------ */
/* Host suspend from the main thread ("the application").                  */

static struct mdev *host_dev(void)
{
	struct mdev *d = curdev();

	if (!d || d->life == D_CLOSED)
		return NULL;
	return d;
}

/* Every VRAM BO that must survive holds a backup; unpinned BOs that may live
 * in system memory were evicted (when nothing else moves BOs). */
static void check_prepared(struct mdev *d, const char *after)
{
	if (d->d3cold_ever || N.live || d->life != D_PRESENT)
		return;
	for (int i = 0; i < MAXBO; i++) {
		struct mbo *b = &bos[i];
		struct ugpu_bo_info info = { .size = sizeof(info) };

		if (!b->used || b->closed || b->dev != d->id)
			continue;
		expect(ugpu_bo_query(b->bo, &info), &(struct eset){ 1, { 0 } }, d, "ugpu_bo_query");
		if (!b->pins && has_pl(b, UGPU_PLACEMENT_SYSTEM) && info.placement != UGPU_PLACEMENT_SYSTEM)
			fail("pm", "after %s: unpinned %s is still in %s", after, bname(b),
			     pl_name(info.placement));
		if (info.placement == UGPU_PLACEMENT_VRAM && !(b->flags & UGPU_BO_NO_RESTORE) &&
		    !info.has_backup)
			fail("pm", "after %s: %s is in VRAM without a backup", after, bname(b));
	}
}

static void op_host(const struct op *o, const char *what)
{
	struct mdev *d = host_dev();
	struct eset s = { 0 };
	bool prep = !strcmp(what, "prepare"), susp = !strcmp(what, "suspend"),
	     res = !strcmp(what, "resume");
	int r;

	(void)o;
	if (!d) {
		skip();
		return;
	}
	if (susp)
		writers_pause(); /* a suspended device's VRAM mappings wait for resume */
	if (d->life == D_REMOVED) {
		/* "host suspend fails with -ENODEV" after a removal; resume and
		 * cancel of an ACTIVE device also match "-EBUSY when not
		 * SUSPENDED" and "0 also when already ACTIVE" */
		es_add(&s, -ENODEV);
		if (res)
			es_add(&s, -EBUSY);
		if (!prep && !susp && !res)
			es_add(&s, 0);
	} else {
		int pm = d->pm;

		if (pm == PM_UNKNOWN || d->life == D_REMOVING) {
			es_add(&s, 0);
			es_add(&s, -EBUSY);
		} else if (prep) {
			es_add(&s, pm == UGPU_PM_ACTIVE ? 0 : -EBUSY);
		} else if (susp) {
			es_add(&s, pm == UGPU_PM_SUSPENDED ? -EBUSY : 0);
		} else if (res) {
			es_add(&s, pm == UGPU_PM_SUSPENDED ? 0 : -EBUSY);
		} else {
			es_add(&s, pm == UGPU_PM_SUSPENDED ? -EBUSY : 0);
		}
		if (d->life == D_REMOVING)
			es_add(&s, -ENODEV);
		if (es_has(&s, 0) && (d->inj || (d->life == D_REMOVING && d->rm_kind == RM_SURPRISE))) {
			if (prep || susp) {
				es_add(&s, -EIO);
				es_add(&s, -ETIMEDOUT);
				es_add(&s, -ENOMEM);
				if (prep)
					es_add(&s, -ENOSPC);
			} else if (res && (d->inj & INJ_WAKE)) {
				es_add(&s, -EIO);
			}
		}
	}
	kern_mark(d, 0, false, true, false); /* NO_RESTORE bytes may go under its kernels */
	r = prep ? ugpu_device_suspend_prepare(d->dev) : susp ? ugpu_device_suspend(d->dev)
		: res ? ugpu_device_resume(d->dev) : ugpu_device_suspend_cancel(d->dev);
	tr(" dev%d (%s) -> %s", d->id, pm_name(d->pm), ename(r));
	expect(r, &s, d, "ugpu_device_%s%s", prep ? "suspend_prepare" : susp ? "suspend"
		: res ? "resume" : "suspend_cancel", "");
	if (d->life == D_REMOVING && r == 0) {
		/* raced a removal and won: the state is whatever it did to it */
		d->pm = PM_UNKNOWN;
		d->main_susp |= susp;
		/* the removal finds either side's host-suspend state, as for a
		 * transition that follows the removal at once (op_remove): a
		 * resume or cancel that won freed the backups (a surprise may
		 * lose what is back in VRAM), a prepare or suspend that won
		 * leaves NO_RESTORE BOs without one (an orderly removal too) */
		for (int i = 0; i < MAXBO; i++)
			if (bos[i].used && bos[i].dev == d->id)
				bos[i].may_lose |= may_lose_now(d, &bos[i], d->rm_kind, true);
	}
	if (d->life != D_PRESENT)
		return;
	if (d->pm == PM_UNKNOWN) {
		if (r == 0 && susp)
			d->main_susp = true;
		if (r == 0 && res)
			d->main_susp = false;
		return;
	}
	if (r == 0) {
		d->pm = prep ? UGPU_PM_PREPARED : susp ? UGPU_PM_SUSPENDED : UGPU_PM_ACTIVE;
		d->main_susp = susp;
		if (dev_frozen(d))
			kern_freeze(d); /* launches stopped: what has not ended waits for resume */
		else
			kern_mark(d, 0, false, false, true);
	}
	if (r == 0 && prep)
		check_prepared(d, "prepare");
	if (r == 0 && susp) {
		/* BOs in system memory stay usable; VRAM ones answer -EBUSY */
		check_all("while host-suspended");
	} else if (r == 0 || (r != -EBUSY && d->pm != PM_UNKNOWN)) {
		check_all(r ? "after a failed host-suspend transition" : "after a host-suspend transition");
	}
}

static void op_notify(const struct op *o)
{
	struct mdev *d = host_dev();

	if (!d || N.live || d->life != D_PRESENT) {
		skip();
		return;
	}
	memset(&N, 0, sizeof(N));
	N.dev = d->id;
	N.h = d->dev;
	N.variant = (int)(o->a % 4);
	N.hold_us = o->b % 15000;
	N.inj = d->inj;
	tr(" dev%d variant %d hold %u us", d->id, N.variant, N.hold_us);
	if (pthread_create(&N.th, NULL, notifier_main, NULL))
		fail("setup", "pthread_create");
	N.live = true;
	d->pm = PM_UNKNOWN;
	kern_mark(d, 0, false, true, true);
}

/* ------------------------------------------------------------------------ */
/* Runtime PM.                                                              */

static struct mdev *rpm_dev(void)
{
	struct mdev *d = curdev();

	return d && d->life != D_CLOSED ? d : NULL;
}

/* The base set for an rpm call that acts: -ENODEV once gone. */
static struct eset es_rpm(const struct mdev *d, int ok)
{
	struct eset s = es1(d->life == D_REMOVED ? -ENODEV : ok);

	if (d->life == D_REMOVING)
		es_add(&s, -ENODEV);
	return s;
}

static void op_rpm(const struct op *o)
{
	struct mdev *d = rpm_dev();
	struct eset s;
	int r = 0;

	if (!d) {
		skip();
		return;
	}
	tr(" dev%d", d->id);
	switch (o->kind) {
	case OP_RPM_ALLOW:
	case OP_RPM_FORBID: {
		bool allow = o->kind == OP_RPM_ALLOW;

		s = es_rpm(d, 0);
		if (!allow && d->life != D_REMOVED && (d->inj & INJ_WAKE))
			es_wake_first(&s);
		r = ugpu_device_rpm_allow(d->dev, allow);
		tr(" %s -> %s", allow ? "allow" : "forbid", ename(r));
		expect(r, &s, d, "ugpu_device_rpm_allow(%s)", allow ? "true" : "false");
		/* it took effect (0), or may have (a removal under way) */
		d->allowed = r == 0 ? allow : -1;
		if (d->life != D_PRESENT)
			break;
		if (allow && r == 0 && d->thresh)
			d->d3cold_ever = true;
		d->forbid_snap = false;
		if (!allow && r == 0) {
			struct ugpu_rpm_stats rs = { .size = sizeof(rs) };

			if (ugpu_device_rpm_stats(d->dev, &rs) == 0) {
				d->forbid_snap = true;
				d->forbid_suspends = rs.suspends;
				if ((rs.state == UGPU_RPM_SUSPENDED || rs.power_state != UGPU_POWER_D0) &&
				    d->pm == UGPU_PM_ACTIVE && !d->main_susp)
					fail("rpm", "ugpu_device_rpm_allow(false) returned 0 and the device "
					     "is %s, power %d", ugpu_rpm_state_name(rs.state), rs.power_state);
			}
		}
		break;
	}
	case OP_RPM_GET:
	case OP_RPM_GETPUT: /* a hold kept, or a short one as a driver path takes */
		if (o->kind == OP_RPM_GET && d->gets >= 3) {
			skip();
			return;
		}
		s = es_rpm(d, 0);
		if (d->inj & INJ_WAKE)
			es_wake_first(&s);
		r = ugpu_device_rpm_get(d->dev);
		tr(" get -> %s", ename(r));
		expect(r, &s, d, "ugpu_device_rpm_get");
		if (r == 0 && o->kind == OP_RPM_GETPUT) {
			sleep_us(o->a % 3000);
			ugpu_device_rpm_put(d->dev);
			tr(", put");
		} else if (r == 0 && d->life == D_PRESENT) {
			d->gets++;
		}
		break;
	case OP_RPM_PUT:
		if (!d->gets) {
			skip();
			return;
		}
		ugpu_device_rpm_put(d->dev);
		d->gets--;
		tr(" put");
		break;
	case OP_RPM_PUT_EXTRA:
		if (d->gets || d->life != D_PRESENT) {
			skip();
			return;
		}
		/* "A put without a matching get is logged and ignored: it never
		 * takes a reference the driver holds" (a host suspend's either) */
		ugpu_device_rpm_put(d->dev);
		tr(" put without a get");
		check_dev(d, true);
		if (d->pm == UGPU_PM_PREPARED || d->pm == UGPU_PM_SUSPENDED) {
			r = ugpu_device_rpm_suspend(d->dev);
			s = es1(-EBUSY);
			if (d->allowed != 1)
				es_add(&s, -EPERM);
			expect(r, &s, d, "ugpu_device_rpm_suspend while host-%s, after an extra put",
			       pm_name(d->pm));
		}
		if (d->allowed == 0) {
			r = ugpu_device_rpm_suspend(d->dev);
			s = es1(-EPERM);
			es_add(&s, -EBUSY);
			expect(r, &s, d, "ugpu_device_rpm_suspend while forbidden, after an extra put");
		}
		break;
	case OP_RPM_DELAY: {
		int v = o->a % 20 == 0 ? -1 : (int)(o->a % 21);

		s = es_rpm(d, 0);
		r = ugpu_device_rpm_set_autosuspend_delay(d->dev, v);
		tr(" delay %d -> %s", v, ename(r));
		expect(r, &s, d, "ugpu_device_rpm_set_autosuspend_delay(%d)", v);
		if (r == 0 && d->life == D_PRESENT)
			d->delay = v;
		break;
	}
	case OP_RPM_THRESH: {
		uint64_t v = thresh_choice(o->a);

		s = es_rpm(d, 0);
		r = ugpu_device_rpm_set_d3cold_threshold(d->dev, v);
		tr(" d3cold threshold %" PRIu64 " -> %s", v, ename(r));
		expect(r, &s, d, "ugpu_device_rpm_set_d3cold_threshold(%" PRIu64 ")", v);
		if (r == 0 && d->life == D_PRESENT) {
			d->thresh = v;
			if (v && d->allowed != 0)
				d->d3cold_ever = true;
		}
		break;
	}
	case OP_RPM_SUSPEND:
		if (d->life == D_REMOVED) {
			s = es1(-ENODEV);
		} else if (d->allowed == 0) {
			s = es1(-EPERM);
			es_add(&s, -EBUSY);
		} else if (d->gets || d->pm == UGPU_PM_PREPARED || d->pm == UGPU_PM_SUSPENDED) {
			/* prepare (or a suspend without one) holds a reference until
			 * resume or cancel (docs/suspend.md) */
			s = es1(-EBUSY);
			if (d->allowed < 0)
				es_add(&s, -EPERM);
		} else {
			s = es1(0);
			es_add(&s, -EBUSY); /* a transient reference, or a transition running */
			if (d->allowed < 0)
				es_add(&s, -EPERM);
		}
		if (d->life == D_REMOVING) {
			es_add(&s, -ENODEV);
			es_add(&s, -EBUSY); /* the removal holds it */
			if (d->main_susp || d->pm == PM_UNKNOWN)
				es_add(&s, 0); /* it may have ended the host suspend */
		}
		if (d->inj && d->life != D_REMOVED)
			es_add(&s, -EIO);
		r = ugpu_device_rpm_suspend(d->dev);
		tr(" suspend -> %s", ename(r));
		expect(r, &s, d, "ugpu_device_rpm_suspend");
		if (r == 0)
			check_dev(d, false);
		break;
	default:
		break;
	}
}

/* ------------------------------------------------------------------------ */
/* Fault injection.                                                         */

static void op_inject(const struct op *o)
{
	struct mdev *d = curdev();
	enum sim_inject_kind k = o->kind == OP_INJECT_WAKE ? SIM_INJECT_WAKE
		: (enum sim_inject_kind)(o->a % 2); /* copy descriptors or DMA */
	unsigned n = 1 + o->b % 6;
	bool always = o->c % 4 == 0;
	int r;

	if (!d || d->life != D_PRESENT) {
		skip();
		return;
	}
	if (k == SIM_INJECT_WAKE && always && N.live)
		always = false; /* the notifier's resume must be able to succeed */
	r = sim_inject(d->sim, 0, k, n, always);
	tr(" dev%d %s #%u %s -> %s", d->id, k == SIM_INJECT_CMD ? "cmd" : k == SIM_INJECT_DMA ? "dma" : "wake",
	   n, always ? "always" : "once", ename(r));
	if (r)
		fail("setup", "sim_inject: %s", strerror(-r));
	d->inj |= 1u << k;
	kern_mark(d, 1u << k, false, false, false);
	for (int i = 0; i < MAXBO && k == SIM_INJECT_WAKE; i++)
		if (bos[i].used && bos[i].dev == d->id)
			bos[i].wake_tainted = true; /* mapped now or later while it lasts */
	if (N.live && N.dev == d->id)
		N.inj |= 1u << k;
	T.injections++;
}

static void op_inject_clear(void)
{
	struct mdev *d = curdev();
	int r;

	if (!d || d->life != D_PRESENT || !d->inj) {
		skip();
		return;
	}
	r = sim_inject_clear(d->sim, 0);
	tr(" dev%d -> %s", d->id, ename(r));
	if (r)
		fail("setup", "sim_inject_clear: %s", strerror(-r));
	d->inj = 0;
	/* whatever failed under injection, nothing may be lost */
	check_all("after injected faults were cleared");
}

/* ------------------------------------------------------------------------ */
/* Removal, close, reopen.                                                  */

static void run_op(const struct op *o);

static void op_remove(const struct op *o)
{
	struct mdev *d = curdev();
	int kind = (int)(o->a % 3), follow = (int)(o->d % 8);
	bool pre = o->b % 3 == 0, racing_suspend;
	unsigned delay = o->c % 2 ? 0 : (o->c >> 4) % 3000;

	if (!d || d->life != D_PRESENT) {
		skip();
		return;
	}
	tr(" dev%d %s%s delay %u us", d->id, rm_name(kind), pre ? " (asleep first)" : "", delay);
	if (pre) {
		/* quiesce and put the device to sleep: a removal during runtime D3 */
		writers_pause();
		notifier_join();
		if (d->allowed == 1 && !d->gets && d->pm == UGPU_PM_ACTIVE) {
			int r = ugpu_device_rpm_suspend(d->dev);
			struct eset s = es1(0);

			es_add(&s, -EBUSY);
			if (d->inj)
				es_add(&s, -EIO);
			expect(r, &s, d, "ugpu_device_rpm_suspend");
			tr(" rpm_suspend %s", ename(r));
		}
		if (kind == RM_SURPRISE && d->pm == UGPU_PM_ACTIVE && !d->inj && delay == 0) {
			struct ugpu_rpm_stats rs = { .size = sizeof(rs) };

			/* nothing runs that could wake it: if it sleeps in D3cold now,
			 * every byte is in system memory (evicted or backed up). Only
			 * for a removal at once: a delayed one may find the device
			 * woken by the ops that follow (a racing prepare, a touch) and
			 * a VRAM-only BO restored from its backup, which then goes */
			if (ugpu_device_rpm_stats(d->dev, &rs) == 0 && rs.state == UGPU_RPM_SUSPENDED &&
			    rs.power_state == UGPU_POWER_D3COLD) {
				d->rm_none = true;
				tr(" (in D3cold: nothing may be lost)");
			}
		}
	}
	/* a prepare, suspend or resume racing the removal: the host-suspend
	 * state the removal finds is either side's (a resume that wins frees
	 * the backups: VRAM-only BOs may then be lost by a surprise) */
	racing_suspend = follow == 1 || follow == 2 || follow == 3;
	if (delay == 0 && follow)
		follow = 0; /* nothing to race with an immediate removal */
	for (int i = 0; i < MAXBO; i++)
		if (bos[i].used && bos[i].dev == d->id)
			bos[i].may_lose = may_lose_now(d, &bos[i], kind, racing_suspend && follow);
	d->rm_kind = kind;
	d->rm_inj = d->inj;
	d->rm_delay_us = delay;
	d->life = D_REMOVING;
	kern_mark(d, 0, true, false, true); /* cancelled, or they end first */
	if (delay == 0 && kind == RM_API) {
		int r = ugpu_device_unplug(d->dev); /* checked when it settles */

		tr(" -> %s", ename(r));
		atomic_store(&d->rm_ret, r);
		atomic_store(&d->rm_ret_valid, true);
	} else if (delay == 0) {
		int r = kind == RM_REQUEST ? sim_unplug_request(d->sim, 0) : sim_unplug_surprise(d->sim, 0);

		tr(" -> %s", ename(r));
		if (r)
			fail("setup", "sim_unplug_%s: %s", rm_name(kind), strerror(-r));
	} else {
		if (pthread_create(&d->rm_thread, NULL, rm_main, d))
			fail("setup", "pthread_create");
		d->rm_thread_live = true;
	}
	if (follow) {
		/* race the removal with one more operation of the main thread */
		static const uint32_t kinds[] = { 0, OP_PREPARE, OP_SUSPEND, OP_RESUME, OP_RPM_SUSPEND,
						  OP_MIGRATE, OP_CREATE, OP_WRITE };
		struct op f = { .kind = kinds[follow], .a = o->a >> 3, .b = o->b >> 3, .c = o->c >> 3,
				.d = o->d >> 3 };

		tr(" then %s:", op_names[f.kind]);
		run_op(&f);
	}
}

static void op_settle(const struct op *o)
{
	(void)o;
	for (int i = 0; i < ndevs; i++)
		if (devs[i].life == D_REMOVING) {
			settle(&devs[i]);
			return;
		}
	skip();
}

static void dev_close(struct mdev *d)
{
	bool was = writers_running;

	if (N.live && N.dev == d->id)
		notifier_join();
	settle(d);
	writers_pause();
	check_dev(d, false);
	dev_snap(d);
	dev_count(d);
	if (dev_nvms(d) && rnd(&grng, 2))
		vm_destroy_dev(d); /* or keep them: their handles outlive the close */
	kern_mark(d, 0, true, false, true);
	tr(" close dev%d", d->id);
	if (dev_nvms(d))
		tr(" (%d VMs kept, %" PRIu64 " kernels not reaped)", dev_nvms(d), dev_unreaped(d));
	ugpu_device_close(d->dev);
	sim_stop(d->sim);
	d->sim = NULL;
	d->life = D_CLOSED;
	for (int i = 0; i < MAXBO; i++) {
		struct mbo *b = &bos[i];
		struct eset nodev = es1(-ENODEV);
		uint8_t x = 0;
		void *p;

		if (!b->used || b->dev != d->id)
			continue;
		b->closed = true;
		b->map = NULL; /* removed by the close */
		b->may_lose = false;
		if (b->orphan)
			continue;
		/* "every other BO call on them returns -ENODEV" */
		check_bo(b, "after close");
		expect(ugpu_bo_read(b->bo, 0, &x, 1), &nodev, d, "ugpu_bo_read after close");
		expect(ugpu_bo_write(b->bo, 0, &x, 1), &nodev, d, "ugpu_bo_write after close");
		expect(ugpu_bo_map(b->bo, &p), &nodev, d, "ugpu_bo_map after close");
		expect(ugpu_bo_pin(b->bo), &nodev, d, "ugpu_bo_pin after close");
	}
	vm_gone_checks(d);
	if (was)
		writers_resume();
}

static void op_close(const struct op *o)
{
	int open[MAXDEV], n = 0;

	for (int i = 0; i < ndevs; i++)
		if (devs[i].life != D_CLOSED)
			open[n++] = i;
	if (!n) {
		skip();
		return;
	}
	/* mostly a removed one; the present one now and then */
	for (int i = 0, k = (int)(o->b % (uint32_t)n); i < n && o->a % 4; i++) {
		struct mdev *d = &devs[open[(k + i) % n]];

		if (d->life != D_PRESENT) {
			dev_close(d);
			return;
		}
	}
	dev_close(&devs[open[o->b % (uint32_t)n]]);
}

static void op_reopen(const struct op *o)
{
	struct mdev *d = curdev();
	int open = 0;

	if (d && d->life == D_PRESENT) {
		skip();
		return;
	}
	if (d && d->life == D_REMOVING)
		settle(d);
	for (int i = 0; i < ndevs; i++)
		open += devs[i].life != D_CLOSED;
	for (int i = 0; i < ndevs && open >= max_open; i++)
		if (devs[i].life != D_CLOSED) {
			dev_close(&devs[i]);
			open--;
		}
	if (!dev_open(o->a % 300, o->b)) {
		tr(" skip (device limit)");
		T.skipped++;
	} else if (o->c % 2) {
		/* half the time a GPU VM with its queue at once */
		struct op f = { .kind = OP_VM_CREATE, .a = 13 + (o->c >> 1) % 7, .b = o->c >> 4,
				.c = o->d };

		tr(", then VM_CREATE:");
		op_vm_create(&f);
	}
}

/* ------------------------------------------------------------------------ */
/* Odd arguments.                                                           */

static void op_strerror(const struct op *o)
{
	const int codes[] = { 0, -1, 1, -ENODEV, -ENODATA, -EBUSY, -ETIMEDOUT, INT_MIN, INT_MAX,
			      -INT_MAX, -4095, -100000, (int)o->b };
	int e = codes[o->a % (sizeof(codes) / sizeof(codes[0]))];
	const char *s = ugpu_strerror(e);

	tr(" %d", e);
	if (!s || !*s || strlen(s) > 200)
		fail("strerror", "ugpu_strerror(%d) gave %s", e, s ? "an empty or huge string" : "NULL");
	if (s != ugpu_strerror(e))
		fail("strerror", "ugpu_strerror(%d) gave two different strings", e);
}

static void op_badargs(const struct op *o)
{
	struct mdev *d = curdev();
	struct mbo *b = pick(o->a, P_OPEN);
	struct eset inv = es1(-EINVAL);
	struct ugpu_bo_opts opts = { .size = sizeof(opts), .bytes = 4096 };
	struct ugpu_bo_info info = { .size = 0 };
	struct ugpu_device *nd = NULL;
	struct ugpu_bo *nb = NULL;
	size_t cnt;
	void *p;
	int r;

	ugpu_bo_put(NULL);
	ugpu_device_close(NULL);
	expect(ugpu_bo_pin(NULL), &inv, NULL, "ugpu_bo_pin(NULL)");
	expect(ugpu_bo_unpin(NULL), &inv, NULL, "ugpu_bo_unpin(NULL)");
	expect(ugpu_bo_migrate(NULL, UGPU_PLACEMENT_SYSTEM), &inv, NULL, "ugpu_bo_migrate(NULL)");
	expect(ugpu_bo_map(NULL, &p), &inv, NULL, "ugpu_bo_map(NULL)");
	expect(ugpu_bo_unmap(NULL), &inv, NULL, "ugpu_bo_unmap(NULL)");
	expect(ugpu_bo_read(NULL, 0, &p, 1), &inv, NULL, "ugpu_bo_read(NULL)");
	expect(ugpu_bo_write(NULL, 0, &p, 1), &inv, NULL, "ugpu_bo_write(NULL)");
	expect(ugpu_bo_query(NULL, &info), &inv, NULL, "ugpu_bo_query(NULL)");
	expect(ugpu_device_query(NULL, NULL), &inv, NULL, "ugpu_device_query(NULL)");
	expect(ugpu_device_rpm_get(NULL), &inv, NULL, "ugpu_device_rpm_get(NULL)");
	expect(ugpu_device_rpm_allow(NULL, true), &inv, NULL, "ugpu_device_rpm_allow(NULL)");
	expect(ugpu_device_rpm_set_autosuspend_delay(NULL, 1), &inv, NULL,
	       "ugpu_device_rpm_set_autosuspend_delay(NULL)");
	expect(ugpu_device_rpm_set_d3cold_threshold(NULL, 1), &inv, NULL,
	       "ugpu_device_rpm_set_d3cold_threshold(NULL)");
	expect(ugpu_device_rpm_stats(NULL, NULL), &inv, NULL, "ugpu_device_rpm_stats(NULL)");
	expect(ugpu_device_pm_stats(NULL, NULL), &inv, NULL, "ugpu_device_pm_stats(NULL)");
	expect(ugpu_device_unplug_info(NULL, NULL), &inv, NULL, "ugpu_device_unplug_info(NULL)");
	expect(ugpu_device_lost_bos(NULL, NULL, 0, &cnt), &inv, NULL, "ugpu_device_lost_bos(NULL)");
	expect(ugpu_device_unplug(NULL), &inv, NULL, "ugpu_device_unplug(NULL)");
	expect(ugpu_device_set_removal_callback(NULL, NULL, NULL), &inv, NULL,
	       "ugpu_device_set_removal_callback(NULL)");
	expect(ugpu_bo_create(NULL, &opts, &nb), &inv, NULL, "ugpu_bo_create(NULL dev)");
	expect(ugpu_device_open(ctx, "nonsense", &nd), &inv, NULL, "ugpu_device_open(\"nonsense\")");
	expect(ugpu_device_open(ctx, "vfio-user:/nonexistent/ugpu-model.sock", &nd), &(struct eset){ 1, { -ENOENT } },
	       NULL, "ugpu_device_open(a socket that does not exist)");
	if (d && d->life != D_CLOSED) {
		expect(ugpu_bo_create(d->dev, NULL, &nb), &inv, d, "ugpu_bo_create(NULL opts)");
		expect(ugpu_bo_create(d->dev, &opts, NULL), &inv, d, "ugpu_bo_create(NULL out)");
		expect(ugpu_device_query(d->dev, &(struct ugpu_device_info){ .size = 0 }), &inv, d,
		       "ugpu_device_query(info.size 0)");
		expect(ugpu_device_rpm_stats(d->dev, NULL), &inv, d, "ugpu_device_rpm_stats(dev, NULL)");
	}
	if (b) {
		r = ugpu_bo_query(b->bo, &info);
		expect(r, &inv, bdev(b), "ugpu_bo_query(%s, info.size 0)", bname(b));
		expect(ugpu_bo_query(b->bo, NULL), &inv, bdev(b), "ugpu_bo_query(%s, NULL)", bname(b));
		expect(ugpu_bo_map(b->bo, NULL), &inv, bdev(b), "ugpu_bo_map(%s, NULL)", bname(b));
		expect(ugpu_bo_write(b->bo, 0, NULL, 1), &inv, bdev(b), "ugpu_bo_write(%s, NULL buf)", bname(b));
		expect(ugpu_bo_read(b->bo, 0, NULL, 1), &inv, bdev(b), "ugpu_bo_read(%s, NULL buf)", bname(b));
		tr(" with %s", bname(b));
	}
	{
		struct ugpu_vm_info vi = { .size = sizeof(vi) };
		struct ugpu_kernel k = { .size = sizeof(k), .op = UGPU_KERNEL_READ_SUM, .va = VA_BASE, .bytes = 8 };
		struct eset zero = es1(0);
		struct ugpu_vm *nv = NULL;
		struct ugpu_queue *nq = NULL;
		struct mvm *v = vm_pick(o->b, false, false);
		uint64_t f;
		int fd;

		expect(ugpu_vm_create(NULL, NULL, &nv), &inv, NULL, "ugpu_vm_create(NULL dev)");
		expect(ugpu_vm_destroy(NULL), &zero, NULL, "ugpu_vm_destroy(NULL)");
		expect(ugpu_vm_bind(NULL, NULL, 0, VA_BASE, PG, 0), &inv, NULL, "ugpu_vm_bind(NULL)");
		expect(ugpu_vm_unbind(NULL, VA_BASE, PG), &inv, NULL, "ugpu_vm_unbind(NULL)");
		expect(ugpu_vm_query(NULL, &vi), &inv, NULL, "ugpu_vm_query(NULL)");
		expect(ugpu_queue_create(NULL, NULL, &nq), &inv, NULL, "ugpu_queue_create(NULL)");
		expect(ugpu_queue_destroy(NULL), &zero, NULL, "ugpu_queue_destroy(NULL)");
		expect(ugpu_queue_submit(NULL, &k, &f), &inv, NULL, "ugpu_queue_submit(NULL)");
		expect(ugpu_fence_eventfd(NULL, 1, &fd), &inv, NULL, "ugpu_fence_eventfd(NULL)");
		if (d && d->life != D_CLOSED)
			expect(ugpu_vm_create(d->dev, NULL, NULL), &inv, d, "ugpu_vm_create(NULL out)");
		if (v) {
			expect(ugpu_vm_query(v->vm, &(struct ugpu_vm_info){ .size = 0 }), &inv, NULL,
			       "ugpu_vm_query(info.size 0)");
			expect(ugpu_vm_query(v->vm, NULL), &inv, NULL, "ugpu_vm_query(VM, NULL)");
			expect(ugpu_queue_create(v->vm, NULL, NULL), &inv, NULL, "ugpu_queue_create(NULL out)");
			if (v->nq) {
				expect(ugpu_queue_submit(v->q[0].q, NULL, &f), &inv, NULL,
				       "ugpu_queue_submit(NULL kernel)");
				expect(ugpu_fence_eventfd(v->q[0].q, 1, NULL), &inv, NULL,
				       "ugpu_fence_eventfd(NULL fd)");
			}
			tr(" VM#%d", v->id);
		}
	}
}

static void op_sleep(const struct op *o)
{
	unsigned ms = o->a % 10 < 7 ? 2 + o->a % 28 : 30 + o->a % 90;

	struct mdev *d = curdev();
	struct ugpu_rpm_stats rs = { .size = sizeof(rs) };

	tr(" %u ms", ms);
	sleep_us(ms * 1000);
	if (d && d->life == D_PRESENT && ugpu_device_rpm_stats(d->dev, &rs) == 0)
		tr(" -> dev%d %s %s", d->id, ugpu_rpm_state_name(rs.state),
		   rs.power_state == UGPU_POWER_D0 ? "D0" : rs.power_state == UGPU_POWER_D3HOT ? "D3hot"
											: "D3cold");
}

static void op_writers(void)
{
	if (writers_running) {
		writers_pause();
		tr(" paused");
	} else {
		writers_resume();
		tr(writers_running ? " running" : " not now");
	}
}

static void run_op(const struct op *o)
{
	switch (o->kind) {
	case OP_CREATE: op_create(o, false); break;
	case OP_CREATE_OLD: op_create(o, true); break;
	case OP_PUT: op_put(o, false); break;
	case OP_GETPUT: op_getput(o); break;
	case OP_WRITE: op_rw(o, true); break;
	case OP_READ: op_rw(o, false); break;
	case OP_MAP: op_map(o); break;
	case OP_STORE: op_store(o); break;
	case OP_UNMAP: op_unmap(o); break;
	case OP_PIN: op_pin(o, true); break;
	case OP_UNPIN: op_pin(o, false); break;
	case OP_MIGRATE: op_migrate(o); break;
	case OP_XMIGRATE: op_xmigrate(o); break;
	case OP_PREPARE: op_host(o, "prepare"); break;
	case OP_SUSPEND: op_host(o, "suspend"); break;
	case OP_RESUME: op_host(o, "resume"); break;
	case OP_CANCEL: op_host(o, "cancel"); break;
	case OP_NOTIFY: op_notify(o); break;
	case OP_NOTIFY_JOIN:
		if (!N.live) {
			skip();
		}
		notifier_join();
		break;
	case OP_RPM_ALLOW:
	case OP_RPM_FORBID:
	case OP_RPM_GET:
	case OP_RPM_GETPUT:
	case OP_RPM_PUT:
	case OP_RPM_PUT_EXTRA:
	case OP_RPM_DELAY:
	case OP_RPM_THRESH:
	case OP_RPM_SUSPEND: op_rpm(o); break;
	case OP_SLEEP: op_sleep(o); break;
	case OP_INJECT:
	case OP_INJECT_WAKE: op_inject(o); break;
	case OP_INJECT_CLEAR: op_inject_clear(); break;
	case OP_REMOVE: op_remove(o); break;
	case OP_SETTLE: op_settle(o); break;
	case OP_CLOSE: op_close(o); break;
	case OP_REOPEN: op_reopen(o); break;
	case OP_QUERY:
		if (curdev())
			check_dev(curdev(), true);
		break;
	case OP_STRERROR: op_strerror(o); break;
	case OP_WRITERS: op_writers(); break;
	case OP_CHECK: check_all("full check"); break;
	case OP_BADARGS: op_badargs(o); break;
	case OP_VM_CREATE: op_vm_create(o); break;
	case OP_VM_DESTROY: op_vm_destroy(o); break;
	case OP_QUEUE_CREATE: op_queue(o, true); break;
	case OP_QUEUE_DESTROY: op_queue(o, false); break;
	case OP_BIND: op_bind(o); break;
	case OP_UNBIND: op_unbind(o); break;
	case OP_KERNEL: op_kernel(o, false); break;
	case OP_KERNEL_FAULT: op_kernel(o, true); break;
	case OP_KWAIT: op_kwait(o); break;
	case OP_FENCE: op_fence(o); break;
	case OP_KFLOOD: op_kflood(o); break;
	default: break;
	}
}

/* ------------------------------------------------------------------------ */
/* One run (in the child).                                                  */

static void log_hook(void *user, enum ugpu_log_level level, const char *msg)
{
	(void)user;
	if (verbose)
		fprintf(stderr, "model: ugpu[%d]: %s\n", level, msg);
}

/* End of the run: everything settles, every BO must still hold its bytes. */
static void finish(void)
{
	int i;

	tr("finish");
	notifier_join();
	for (i = 0; i < ndevs; i++)
		settle(&devs[i]);
	writers_pause();
	for (i = 0; i < ndevs; i++) {
		struct mdev *d = &devs[i];

		if (d->life != D_PRESENT)
			continue;
		if (d->inj) {
			sim_inject_clear(d->sim, 0);
			d->inj = 0;
		}
		if (d->pm == UGPU_PM_SUSPENDED) {
			int r = ugpu_device_resume(d->dev);

			expect(r, &(struct eset){ 1, { 0 } }, d, "ugpu_device_resume at the end");
			d->pm = UGPU_PM_ACTIVE;
			d->main_susp = false;
		} else if (d->pm == UGPU_PM_PREPARED) {
			expect(ugpu_device_suspend_cancel(d->dev), &(struct eset){ 1, { 0 } }, d,
			       "ugpu_device_suspend_cancel at the end");
			d->pm = UGPU_PM_ACTIVE;
		}
		kern_mark(d, 0, false, false, true);
		while (d->gets) {
			ugpu_device_rpm_put(d->dev);
			d->gets--;
		}
	}
	check_all("at the end of the run");
	for (i = 0; i < ndevs; i++)
		check_dev(&devs[i], true);
	/* every bound byte read by a kernel once more, then every VM goes */
	for (i = 0; i < MAXVM; i++) {
		struct mvm *v = &vms[i];

		if (!v->used || !v->nq || devs[v->dev].life != D_PRESENT)
			continue;
		for (int j = 0; j < v->nb; j++) {
			struct ugpu_kernel k = { .size = sizeof(k), .op = UGPU_KERNEL_READ_SUM,
						 .va = v->b[j].va, .bytes = v->b[j].bytes };

			if (v->q[0].npend >= MAXPEND)
				reap_q(v, &v->q[0], true, 0);
			kern_submit(v, &v->q[0], &k, "");
		}
		reap_vm(v, true);
	}
	for (i = 0; i < MAXVM; i++)
		if (vms[i].used)
			vm_destroy(&vms[i], false);
	for (i = 0; i < MAXBO; i++)
		if (bos[i].used) {
			ugpu_bo_put(bos[i].bo);
			mbo_free(&bos[i]);
		}
	for (i = 0; i < ndevs; i++)
		if (devs[i].life != D_CLOSED) {
			dev_snap(&devs[i]);
			dev_count(&devs[i]);
			ugpu_device_close(devs[i].dev);
			sim_stop(devs[i].sim);
			devs[i].life = D_CLOSED;
		}
	tr_end(-1);
}

static void run_child(uint64_t seed, int nops, const unsigned char *keep, double deadline)
{
	struct ugpu_context_opts copts = { .size = sizeof(copts), .log_fn = log_hook,
					   .log_level = UGPU_LOG_WARN };
	struct sigaction sa;
	struct op *ops;
	int i, r;

	signal(SIGALRM, on_alarm);
	install_death_report();
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_touch_signal;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGBUS, &sa, &old_bus);
	sigaction(SIGSEGV, &sa, &old_segv);
	on_main_thread = true;
	run_seed = seed;
	page_size = sysconf(_SC_PAGESIZE);
	grng.s = seed ^ 0x5eed;
	ops = calloc((size_t)nops, sizeof(*ops));
	if (!ops)
		fail("setup", "out of memory");
	gen_ops(seed, nops, ops);
	alarm((unsigned)op_timeout_s);
	r = ugpu_context_create(&copts, &ctx);
	if (r)
		fail("setup", "ugpu_context_create: %s", ugpu_strerror(r));
	for (i = 0; i < NWRITERS; i++) {
		W[i].id = i;
		W[i].r.s = seed * 31 + (uint64_t)i;
		if (pthread_create(&W[i].th, NULL, writer_main, &W[i]))
			fail("setup", "pthread_create");
	}
	tr("open");
	dev_open(0, (uint32_t)mix64(seed));
	tr_end(-1);
	for (i = 0; i < nops; i++) {
		if (keep && !keep[i])
			continue;
		if (deadline > 0 && now_s() > deadline)
			break;
		atomic_store(&shm->cur_op, i);
		alarm((unsigned)op_timeout_s);
		touched = NULL;
		tr("%s", op_names[ops[i].kind]);
		run_op(&ops[i]);
		if (touched)
			check_bo(touched, op_names[ops[i].kind]);
		tr_end(i);
		T.ops++;
		if (++since_check >= CHECK_EVERY)
			check_all("periodic full check");
	}
	atomic_store(&shm->cur_op, nops);
	alarm((unsigned)op_timeout_s * 2);
	finish();
	atomic_store(&w_stop, 1);
	pthread_mutex_lock(&wlock);
	pthread_cond_broadcast(&wcond);
	pthread_mutex_unlock(&wlock);
	for (i = 0; i < NWRITERS; i++)
		pthread_join(W[i].th, NULL);
	for (i = 0; i < NWRITERS; i++)
		T.writer_stores += W[i].stores;
	ugpu_context_destroy(ctx);
	free(ops);
	alarm(0);
	T.seeds = 1;
	shm->t = T;
	shm->finished = 1;
}

/* ------------------------------------------------------------------------ */
/* The parent: seeds, children, shrinking.                                  */

struct result {
	bool failed;
	int fail_op;
	char cls[64];
	char msg[2048];
	struct totals t;
};

/* Run one seed in a child; @keep selects ops (NULL: all). */
static struct result run_one(uint64_t seed, int nops, const unsigned char *keep, double deadline,
			     bool be_quiet, bool be_verbose, int op_timeout)
{
	struct result res;
	pid_t pid;
	int st = 0;
	/* the child's own watchdog fires first; this catches a child that
	 * cannot even run its alarm handler */
	double t0 = now_s(), limit = (deadline > 0 ? deadline - t0 : 0) + 2.0 * op_timeout + 10;

	memset(&res, 0, sizeof(res));
	memset(shm, 0, sizeof(*shm));
	atomic_store(&shm->cur_op, -1);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	if (pid == 0) {
		quiet = be_quiet;
		verbose = be_verbose;
		op_timeout_s = op_timeout;
		if (be_quiet) {
			if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr))
				_exit(1);
		}
		run_child(seed, nops, keep, deadline);
		fflush(stdout);
		exit(0);
	}
	for (;;) {
		pid_t w = waitpid(pid, &st, WNOHANG);

		if (w == pid)
			break;
		if (now_s() - t0 > limit) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			snprintf(shm->cls, sizeof(shm->cls), "hang");
			snprintf(shm->msg, sizeof(shm->msg), "the run did not end within %.0f s", limit);
			shm->fail_op = atomic_load(&shm->cur_op);
			atomic_store(&shm->failed, 1);
			break;
		}
		sleep_us(5000);
	}
	res.t = shm->t;
	if (atomic_load(&shm->failed)) {
		res.failed = true;
		res.fail_op = shm->fail_op;
		snprintf(res.cls, sizeof(res.cls), "%s", shm->cls);
		snprintf(res.msg, sizeof(res.msg), "%s", shm->msg);
	} else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || !shm->finished) {
		res.failed = true;
		res.fail_op = atomic_load(&shm->cur_op);
		if (WIFSIGNALED(st))
			snprintf(res.cls, sizeof(res.cls), "crash:%s", strsignal(WTERMSIG(st)));
		else
			snprintf(res.cls, sizeof(res.cls), "exit:%d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		snprintf(res.msg, sizeof(res.msg), "the run ended with %s during op %d (a sanitizer "
			 "report or a crash: see its output above)", res.cls, res.fail_op);
	}
	return res;
}

static void totals_add(struct totals *a, const struct totals *b)
{
	uint64_t *pa = (uint64_t *)a;
	const uint64_t *pb = (const uint64_t *)b;

	for (size_t i = 0; i < sizeof(*a) / sizeof(uint64_t); i++)
		pa[i] += pb[i];
}

/* "0-3,7,9-12" */
static void keep_format(const unsigned char *keep, int n, char *out, size_t len)
{
	size_t o = 0;
	int i = 0;

	out[0] = 0;
	while (i < n && o + 24 < len) {
		int j;

		if (!keep[i]) {
			i++;
			continue;
		}
		for (j = i; j + 1 < n && keep[j + 1]; j++)
			;
		o += (size_t)snprintf(out + o, len - o, "%s%d", o ? "," : "", i);
		if (j > i)
			o += (size_t)snprintf(out + o, len - o, "-%d", j);
		i = j + 1;
	}
}

static void keep_parse(const char *s, unsigned char *keep, int n)
{
	memset(keep, 0, (size_t)n);
	while (*s) {
		char *e;
		long a = strtol(s, &e, 10), b = a;

		if (e == s)
			break;
		if (*e == '-')
			b = strtol(e + 1, &e, 10);
		for (long i = a; i <= b && i < n; i++)
			if (i >= 0)
				keep[i] = 1;
		s = *e == ',' ? e + 1 : e;
		if (*e != ',')
			break;
	}
}

static int count_kept(const unsigned char *keep, int n)
{
	int k = 0;

	for (int i = 0; i < n; i++)
		k += keep[i] != 0;
	return k;
}

/* What "the same failure" means while shrinking: the class, and for a wrong
 * return code the call that returned it (so that shrinking does not drift
 * from one errno to another). */
static void failure_sig(const struct result *r, char *sig, size_t len)
{
	const char *f = strstr(r->msg, "ugpu_");

	if (!strcmp(r->cls, "errno") && f) {
		size_t n = strspn(f, "abcdefghijklmnopqrstuvwxyz_");

		snprintf(sig, len, "errno:%.*s", (int)n, f);
	} else {
		snprintf(sig, len, "%s", r->cls);
	}
}

/* Does this op selection still fail the same way? Threads make runs inexact:
 * up to @tries attempts. */
static bool still_fails(uint64_t seed, int nops, const unsigned char *keep, const char *sig,
			int tries, int *fail_op, int *runs)
{
	for (int t = 0; t < tries; t++) {
		struct result r = run_one(seed, nops, keep, 0, true, false, SHRINK_OP_TIMEOUT_S);
		char rsig[128];

		(*runs)++;
		failure_sig(&r, rsig, sizeof(rsig));
		if (r.failed && !strcmp(rsig, sig)) {
			*fail_op = r.fail_op;
			return true;
		}
	}
	return false;
}

/* Delta debugging over the kept ops (complements of 2, 4, 8... chunks),
 * within @budget seconds. */
static void shrink(uint64_t seed, int nops, unsigned char *keep, const char *cls, int fail_op,
		   double budget)
{
	double t0 = now_s();
	unsigned char *cand = malloc((size_t)nops);
	int runs = 0, gran = 2;
	int *idx = malloc((size_t)nops * sizeof(int));

	if (!cand || !idx) {
		free(cand);
		free(idx);
		return;
	}
	for (int i = fail_op + 1; i >= 0 && i < nops; i++)
		keep[i] = 0; /* nothing after the failing op matters */
	while (now_s() - t0 < budget) {
		int n = 0, chunk;
		bool reduced = false;

		for (int i = 0; i < nops; i++)
			if (keep[i])
				idx[n++] = i;
		if (n < 2)
			break;
		if (gran > n)
			gran = n;
		chunk = (n + gran - 1) / gran;
		for (int c = 0; c < gran && now_s() - t0 < budget; c++) {
			int f = -1;

			memcpy(cand, keep, (size_t)nops);
			for (int k = c * chunk; k < (c + 1) * chunk && k < n; k++)
				cand[idx[k]] = 0;
			if (!count_kept(cand, nops))
				continue;
			if (still_fails(seed, nops, cand, cls, 3, &f, &runs)) {
				memcpy(keep, cand, (size_t)nops);
				for (int i = f + 1; f >= 0 && i < nops; i++)
					keep[i] = 0;
				gran = gran > 2 ? gran - 1 : 2;
				reduced = true;
				printf("model: shrinking: %d ops still fail (%.0f s, %d runs)\n",
				       count_kept(keep, nops), now_s() - t0, runs);
				fflush(stdout);
				break;
			}
		}
		if (!reduced) {
			if (gran >= n)
				break;
			gran = gran * 2 > n ? n : gran * 2;
		}
	}
	printf("model: shrinking done in %.0f s after %d runs%s\n", now_s() - t0, runs,
	       now_s() - t0 >= budget ? " (time budget reached: the list may shrink further)" : "");
	free(cand);
	free(idx);
}

/* The focusing knobs in effect, as they must be given to a replay. */
static const char *focus_env(void)
{
	static const char *const names[] = { "UGPU_MODEL_WEIGHTS", "UGPU_MODEL_FLAGS",
					     "UGPU_MODEL_MAXOPEN", "UGPU_MODEL_MIRROR" };
	static char buf[512];
	size_t n = 0;

	buf[0] = 0;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (getenv(names[i]) && n < sizeof(buf))
			n += (size_t)snprintf(buf + n, sizeof(buf) - n, " %s=%s", names[i], getenv(names[i]));
	return buf;
}

static long env_long(const char *name, long def)
{
	const char *e = getenv(name);

	return e && *e ? strtol(e, NULL, 0) : def;
}

/* @failed_cls: the class of the failure that ended the run, or NULL. */
static void print_summary(const struct totals *t, double secs, const char *failed_cls)
{
	bool loss = failed_cls && (!strcmp(failed_cls, "bytes") || !strcmp(failed_cls, "lost") ||
				   !strcmp(failed_cls, "unplug") || !strcmp(failed_cls, "sigbus"));

	printf("model: %" PRIu64 " seeds, %" PRIu64 " ops (%" PRIu64 " skipped as meaningless then), "
	       "%" PRIu64 " devices, %" PRIu64 " BOs, %" PRIu64 " writer stores; %" PRIu64
	       " host-suspend cycles (%" PRIu64 " notifier cycles); %" PRIu64 " runtime suspends "
	       "(D3hot %" PRIu64 ", D3cold %" PRIu64 "), %" PRIu64 " wakes, %" PRIu64
	       " mappings released, %" PRIu64 " waking faults; %" PRIu64 " removals (orderly %" PRIu64
	       ", surprise %" PRIu64 "); %" PRIu64 " injected faults; %.1f MiB verified in %.1f s; "
	       "lost: %s (%" PRIu64 " BOs lost where the header allows it, %" PRIu64
	       " SIGBUS on such BOs); GPU: %" PRIu64 " VMs, %" PRIu64 " binds, %" PRIu64 " kernels "
	       "(%" PRIu64 " completed, %" PRIu64 " faulted as the binds say, %" PRIu64 " cancelled or "
	       "failed where allowed; %" PRIu64 " floods to the queue depth), %" PRIu64
	       " read-sums checked, %.1f MiB through kernels; %" PRIu64 " BOs moved to another device"
	       " (%" PRIu64 " tried)\n",
	       t->seeds, t->ops, t->skipped, t->devices, t->bos_created, t->writer_stores, t->host_cycles,
	       t->notifier_cycles, t->rpm_suspends, t->rpm_suspends - t->rpm_d3cold, t->rpm_d3cold,
	       t->rpm_resumes, t->rpm_released, t->rpm_wake_faults, t->removals_orderly + t->removals_surprise,
	       t->removals_orderly, t->removals_surprise, t->injections,
	       (double)t->bytes_verified / (double)MiB, secs,
	       loss ? "DATA LOST OR MISREPORTED (the failure above)" : "0 unexpected", t->lost_allowed,
	       t->sigbus_allowed, t->vms, t->binds, t->kernels, t->kernels_done, t->kernels_faulted,
	       t->kernels_other, t->floods, t->sums_checked, (double)t->kernel_bytes / (double)MiB,
	       t->xmoves, t->xtries);
}

int main(void)
{
	const char *seed_env = getenv("UGPU_MODEL_SEED"), *keep_env = getenv("UGPU_MODEL_KEEP");
	int nops = (int)env_long("UGPU_MODEL_OPS", DEFAULT_OPS);
	double budget = (double)env_long("UGPU_MODEL_SECONDS", DEFAULT_SECONDS);
	double shrink_budget = (double)env_long("UGPU_MODEL_SHRINK_SECONDS", DEFAULT_SHRINK_SECONDS);
	bool verb = env_long("UGPU_MODEL_VERBOSE", 0) != 0;
	uint64_t seed0;
	struct totals all;
	double t0 = now_s();
	unsigned char *keep;
	int i;

	setvbuf(stdout, NULL, _IOLBF, 0);
	weights_parse(getenv("UGPU_MODEL_WEIGHTS"));
	flags_allowed = (uint32_t)env_long("UGPU_MODEL_FLAGS", (long)flags_allowed);
	max_open = (int)env_long("UGPU_MODEL_MAXOPEN", max_open);
	mirror_on = env_long("UGPU_MODEL_MIRROR", 1) != 0;
	if (nops < 1)
		nops = 1;
	shm = mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	keep = malloc((size_t)nops);
	if (shm == MAP_FAILED || !keep)
		return 1;
	memset(&all, 0, sizeof(all));
	if (seed_env)
		seed0 = strtoull(seed_env, NULL, 0);
	else
		seed0 = (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid();
	printf("model: %d ops per seed, %.0f s budget; UGPU_MODEL_SEED=N replays a seed, "
	       "UGPU_MODEL_SECONDS/UGPU_MODEL_OPS size the run (docs/testing.md)\n", nops, budget);
	for (i = 0;; i++) {
		uint64_t seed = seed0 + (uint64_t)i;
		struct result r, first;
		char list[4096];

		if (seed_env && i > 0)
			break;
		if (!seed_env && i > 0 && now_s() - t0 >= budget)
			break;
		memset(keep, 1, (size_t)nops);
		if (keep_env)
			keep_parse(keep_env, keep, nops);
		printf("model: seed=%" PRIu64 "\n", seed);
		r = run_one(seed, nops, keep, seed_env ? 0 : t0 + budget, false, verb, OP_TIMEOUT_S);
		totals_add(&all, &r.t);
		if (!r.failed)
			continue;
		first = r;
		printf("model: FAILED seed=%" PRIu64 " at op %d [%s]: %s\n"
		       "model: replay the whole run: UGPU_MODEL_SEED=%" PRIu64 " UGPU_MODEL_OPS=%d%s "
		       "UGPU_MODEL_VERBOSE=1 build/tests/test_model\n",
		       seed, r.fail_op, r.cls, r.msg, seed, nops, focus_env());
		if (env_long("UGPU_MODEL_SHRINK", 1) && r.fail_op >= 0) {
			char sig[128];

			failure_sig(&r, sig, sizeof(sig));
			printf("model: shrinking while it fails with [%s] (up to %.0f s; "
			       "UGPU_MODEL_SHRINK=0 skips)\n", sig, shrink_budget);
			shrink(seed, nops, keep, sig, r.fail_op, shrink_budget);
			keep_format(keep, nops, list, sizeof(list));
			printf("model: shortest failing sequence: %d ops; replay with\n"
			       "model:   UGPU_MODEL_SEED=%" PRIu64 " UGPU_MODEL_OPS=%d UGPU_MODEL_KEEP=%s%s "
			       "UGPU_MODEL_VERBOSE=1 build/tests/test_model\n",
			       count_kept(keep, nops), seed, nops, list, focus_env());
			printf("model: (threads make a replay inexact: a shrunk sequence fails in most "
			       "runs, not every run)\nmodel: its trace:\n");
			r = run_one(seed, nops, keep, 0, false, true, SHRINK_OP_TIMEOUT_S);
			if (!r.failed)
				printf("model: (this replay passed: the failure is timing-dependent)\n");
		}
		print_summary(&all, now_s() - t0, first.cls);
		free(keep);
		return 1;
	}
	print_summary(&all, now_s() - t0, NULL);
	free(keep);
	return 0;
}
