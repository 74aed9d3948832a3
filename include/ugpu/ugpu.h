/* SPDX-License-Identifier: MIT */
/*
 * ugpu — a userspace GPU driver over VFIO: the public API.
 *
 * Conventions for every function in include/ugpu/:
 *  - Actions return int: 0 on success or a negative errno. errno is never the
 *    way an error is reported. ugpu_strerror() turns the code into text.
 *  - Objects are opaque; options structs that may grow start with
 *    `size_t size`, which the caller sets to sizeof(the struct it compiled
 *    against), so an older caller keeps working against a newer library.
 *  - Each function states its threading contract under "Context:".
 */
#ifndef UGPU_UGPU_H
#define UGPU_UGPU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ugpu/export.h>
#include <ugpu/version.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * ugpu_version() - the version of the library actually loaded.
 *
 * Returns: UGPU_VERSION_NUMBER of the library (which may differ from the
 * headers the caller was compiled with).
 * Context: any thread.
 */
UGPU_API unsigned int ugpu_version(void);

/**
 * ugpu_version_string() - the loaded library's version as "MAJOR.MINOR.PATCH".
 *
 * Returns: a static string.
 * Context: any thread.
 */
UGPU_API const char *ugpu_version_string(void);

/**
 * ugpu_strerror() - describe an error code returned by a ugpu function.
 * @err: a negative errno as returned by ugpu (a positive value is treated the
 *       same as its negation; 0 is "success").
 *
 * Returns: a static string that is never NULL; unknown codes give
 * "unknown error". The text is ugpu's own wording for the codes it uses
 * with a specific meaning (e.g. -ENODEV: "device is gone").
 * Context: any thread; the result is never overwritten.
 */
UGPU_API const char *ugpu_strerror(int err);

/** Severity of a log message, most severe first. */
enum ugpu_log_level {
	UGPU_LOG_DEFAULT = 0, /**< in options: UGPU_LOG from the environment, else WARN */
	UGPU_LOG_ERROR = 1,
	UGPU_LOG_WARN = 2,
	UGPU_LOG_INFO = 3,
	UGPU_LOG_DEBUG = 4,
};

/**
 * typedef ugpu_log_fn - a log hook.
 * @user: the pointer given with the hook.
 * @level: severity.
 * @msg: one line of text without a trailing newline, valid only during the
 *       call.
 *
 * Context: called from any ugpu thread, possibly concurrently; the hook must
 * be thread-safe and must not call back into ugpu.
 */
typedef void (*ugpu_log_fn)(void *user, enum ugpu_log_level level, const char *msg);

struct ugpu_context;

/**
 * struct ugpu_context_opts - options for ugpu_context_create().
 * @size: sizeof(struct ugpu_context_opts) as the caller compiled it. Fields
 *        past @size are taken as zero. Required.
 * @log_fn: log hook; NULL logs to stderr.
 * @log_user: passed to @log_fn.
 * @log_level: messages above this level are dropped. UGPU_LOG_DEFAULT (0)
 *             reads the environment variable UGPU_LOG (error|warn|info|debug)
 *             and falls back to UGPU_LOG_WARN.
 */
struct ugpu_context_opts {
	size_t size;
	ugpu_log_fn log_fn;
	void *log_user;
	enum ugpu_log_level log_level;
};

/**
 * ugpu_context_create() - create a context, the owner of everything else.
 * @opts: options, or NULL for all defaults.
 * @out: the new context on success; untouched on failure.
 *
 * A context outlives the devices it opens: buffer objects belong to the
 * context, device resources to the device (see docs/ARCHITECTURE.md).
 *
 * Returns: 0, -EINVAL if @out is NULL or @opts->size is 0 or smaller than the
 * first field, -ENOMEM.
 * Context: any thread; contexts are independent of each other.
 */
UGPU_API int ugpu_context_create(const struct ugpu_context_opts *opts,
				 struct ugpu_context **out);

/**
 * ugpu_context_destroy() - destroy a context and everything it still owns.
 * @ctx: the context, or NULL (no-op).
 *
 * Context: no other thread may use @ctx or its objects during or after the
 * call.
 */
UGPU_API void ugpu_context_destroy(struct ugpu_context *ctx);

/**
 * ugpu_context_set_log() - replace the log hook and level of a context.
 * @ctx: the context.
 * @fn: new hook, or NULL for stderr.
 * @user: passed to @fn.
 * @level: messages above it are dropped; UGPU_LOG_DEFAULT as in the options.
 *
 * Returns: 0, or -EINVAL if @ctx is NULL or @level is out of range.
 * Context: any thread; messages being logged concurrently go to either the
 * old or the new hook.
 */
UGPU_API int ugpu_context_set_log(struct ugpu_context *ctx, ugpu_log_fn fn, void *user,
				  enum ugpu_log_level level);

/** What a long operation reporting progress is doing (struct ugpu_progress). */
enum ugpu_progress_op {
	UGPU_PROGRESS_EVICT = 1, /**< BOs leaving VRAM: to make room, or host-suspend prepare */
	UGPU_PROGRESS_BACKUP = 2, /**< host suspend: prepare's backups, the window's copies */
	UGPU_PROGRESS_RESTORE = 3, /**< host resume: the backups copied back into VRAM */
	UGPU_PROGRESS_REMOVAL = 4, /**< a device removal moving BOs out of its VRAM */
	UGPU_PROGRESS_PREFETCH = 5, /**< shared virtual memory: a prefetch of a span */
};

/**
 * struct ugpu_progress - one progress report.
 * @op: what the operation is.
 * @device: the device's name (as in the logs), valid only during the call.
 * @done: bytes done so far; never decreases within one operation.
 * @total: bytes the operation is expected to handle, known at its start
 *         (for a prefetch: the span's), except for an eviction to make room:
 *         it starts as the room needed and grows as victims larger than
 *         that are taken. @done can end below it (BOs destroyed meanwhile,
 *         an error, a span partly in place) but never above it.
 * @elapsed_ns: time since the operation started.
 * @finished: 0 while it runs; 1 on its last report.
 * @err: on the last report, 0 or the -errno the operation ended with.
 */
struct ugpu_progress {
	enum ugpu_progress_op op;
	const char *device;
	uint64_t done;
	uint64_t total;
	uint64_t elapsed_ns;
	int finished;
	int err;
};

/**
 * typedef ugpu_progress_fn - a progress hook (ugpu_context_set_progress()).
 * @user: the pointer given with the hook.
 * @p: the report, valid only during the call.
 *
 * Context: called from the thread doing the work, with the driver's locks
 * held; the calls of one context are serialised (one at a time, whatever the
 * device), so a slow hook slows every device. The hook must be quick, must
 * not call into ugpu, must not take a lock that a thread may hold while it
 * calls ugpu (ugpu_context_set_progress() included), and must not touch
 * memory whose access may need the driver: a BO's CPU mapping, or memory a
 * mirror VM may have moved into VRAM (shared virtual memory). A hook that
 * does deadlocks on the locks it is called under. Writing to a terminal or
 * to the program's own ordinary memory is what it is for.
 */
typedef void (*ugpu_progress_fn)(void *user, const struct ugpu_progress *p);

/**
 * ugpu_context_set_progress() - be told how long operations go.
 * @ctx: the context.
 * @fn: the hook, or NULL for none (the default).
 * @user: passed to @fn.
 * @min_bytes: operations whose total is smaller are not reported (0: all).
 * @interval_ms: reports while an operation runs come at most this often
 *               (0: after every step: each BO, each copy, each range); the
 *               first report (@done 0; for an eviction whose total grew past
 *               @min_bytes only later, what it had moved by then) and the
 *               last (@finished) always come.
 *
 * Reported: host-suspend prepare (eviction, then backups), the suspend
 * window's copies, resume's copies back, evictions to make room, a removal
 * moving BOs out, SVM prefetches (ugpu_vm_prefetch() and the asynchronous
 * form). The tools draw them as a bar on a terminal.
 *
 * Each operation reports to the hook that was set when it began, with that
 * hook's filter and interval: after this call, operations already running
 * report nothing more (the new hook sees only operations begun after it).
 *
 * Returns: 0, or -EINVAL if @ctx is NULL.
 * Context: any thread; waits for a hook call in progress, and the old hook
 * is never called after it returns.
 */
UGPU_API int ugpu_context_set_progress(struct ugpu_context *ctx, ugpu_progress_fn fn, void *user,
				       uint64_t min_bytes, unsigned int interval_ms);

/** "evict", "backup", "restore", "removal", "prefetch"; "?" for others. */
UGPU_API const char *ugpu_progress_op_name(enum ugpu_progress_op op);

#ifdef __cplusplus
}
#endif

#endif /* UGPU_UGPU_H */
