/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim: touching client memory without dying when the client takes it
 * away.
 *
 * A DMA window with an fd is the server's mmap of the client's file. The
 * size is checked at DMA_MAP (sim_dma.c), but the client still owns the
 * file and may truncate it later; the next engine access past the new end
 * raises SIGBUS. The reference device must survive that, so every access to
 * a window's memory runs under a guard: a process-wide SIGBUS handler that,
 * when the faulting thread is inside a guarded access, jumps back to the
 * guard (sigsetjmp/siglongjmp) and the access fails with -EFAULT, which the
 * engines report as ERR_DMA. Outside a guarded access the handler behaves as
 * if it were not there: it calls the handler it replaced, or restores the
 * default action so the fault kills the process as before.
 *
 * Why not seals: F_SEAL_SHRINK would freeze the size, but only memfds can be
 * sealed (not a tmpfs or hugetlbfs file a client may pass), and sealing the
 * client's file would change it behind its back. The guard covers every case;
 * ugpu-sim seals only its own VRAM memfd, which it hands to clients.
 *
 * The handler is installed at sim_start() and asserted again before every
 * guarded access: a program (a test framework) that installs its own SIGBUS
 * handler in between gets it back as the handler for faults that are not
 * ours. Leaving memmove() by siglongjmp is safe here because the guarded
 * functions take no lock and allocate nothing.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "sim_internal.h"

/* The guard the current thread is inside, or NULL. */
static __thread sigjmp_buf *guard_env;
/* The thread's signal mask outside any handler, restored after a jump out
 * of one: the handler may run with SIGBUS (and more) blocked whatever we ask
 * (ThreadSanitizer's wrapper blocks every signal), and a SIGBUS that hits a
 * thread where it is blocked kills the process. */
static __thread sigset_t guard_mask;
static __thread bool guard_mask_saved;
/* The handler ours replaced (under guard_lock; read racily by the handler,
 * which uses it only for faults outside a guard: crashes anyway). */
static struct sigaction guard_prev;
static pthread_mutex_t guard_lock = PTHREAD_MUTEX_INITIALIZER;

static void guard_handler(int sig, siginfo_t *si, void *uc)
{
	sigjmp_buf *env = guard_env;

	if (env) {
		guard_env = NULL;
		siglongjmp(*env, 1);
	}
	/* Not ours: hand it on, or die of it as without us. */
	if ((guard_prev.sa_flags & SA_SIGINFO) && guard_prev.sa_sigaction) {
		guard_prev.sa_sigaction(sig, si, uc);
		return;
	}
	if (!(guard_prev.sa_flags & SA_SIGINFO) && guard_prev.sa_handler != SIG_DFL &&
	    guard_prev.sa_handler != SIG_IGN) {
		guard_prev.sa_handler(sig);
		return;
	}
	signal(sig, SIG_DFL); /* returning re-runs the faulting access */
}

static bool guard_is_installed(void)
{
	struct sigaction cur;

	return sigaction(SIGBUS, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) &&
	       cur.sa_sigaction == guard_handler;
}

int sim_guard_init(void)
{
	struct sigaction sa, old;
	int ret = 0;

	if (guard_is_installed())
		return 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = guard_handler;
	/* NODEFER: the jump leaves the handler without sigreturn, so SIGBUS
	 * must not stay blocked in that thread (sim_guard_run restores the
	 * mask too, for wrappers that block it anyway). */
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	pthread_mutex_lock(&guard_lock);
	if (sigaction(SIGBUS, &sa, &old) < 0)
		ret = -errno;
	else if (!((old.sa_flags & SA_SIGINFO) && old.sa_sigaction == guard_handler))
		guard_prev = old; /* never ourselves: that would loop */
	pthread_mutex_unlock(&guard_lock);
	return ret;
}

int sim_guard_run(struct sim_dev *dev, void (*fn)(void *arg), void *arg)
{
	sigjmp_buf env;

	/* Someone may have put their own SIGBUS handler in since (a test
	 * framework does, around every test): take the signal back, keeping
	 * theirs for faults that are not ours. One sigaction() per access of
	 * client memory. */
	sim_guard_init();
	if (!guard_mask_saved) {
		pthread_sigmask(SIG_SETMASK, NULL, &guard_mask);
		guard_mask_saved = true;
	}
	if (sigsetjmp(env, 0)) {
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		pthread_sigmask(SIG_SETMASK, &guard_mask, NULL);
		fprintf(stderr,
			"ugpu-sim[%u]: SIGBUS on client memory: a DMA window's file was truncated under "
			"it; the access fails (ERR_DMA)\n",
			dev->id);
		return -EFAULT;
	}
	guard_env = &env;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	fn(arg);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	guard_env = NULL;
	return 0;
}

struct guard_move {
	void *dst;
	const void *src;
	size_t n;
};

static void do_move(void *arg)
{
	struct guard_move *g = arg;

	memmove(g->dst, g->src, g->n);
}

int sim_guarded_memmove(struct sim_dev *dev, void *dst, const void *src, size_t n)
{
	struct guard_move g = { .dst = dst, .src = src, .n = n };

	return sim_guard_run(dev, do_move, &g);
}
