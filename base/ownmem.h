/* SPDX-License-Identifier: MIT */
/*
 * The driver's own memory outside its heap: what shared virtual memory must
 * never take away from the CPU (docs/svm.md, "Memory kinds").
 *
 * A range moved into VRAM is unmapped from the process until a CPU touch
 * brings it home through the SVM worker. A thread that touches such a page
 * while it holds a driver lock the worker needs waits for the worker, and
 * the worker for it: a hang. The heap is kept apart (base/alloc.h); this
 * module names the rest:
 *  - the writable segments (.data, .bss) of the ELF object that holds the
 *    driver, from dl_iterate_phdr(): libugpu.so's own, or the whole
 *    program's when the library is linked into it statically (the driver's
 *    globals then share the program's .bss and cannot be told apart);
 *  - the stacks of the threads that entered the driver (submitted a kernel,
 *    waited for one, made a queue, prefetched), from their attributes
 *    (pthread_getattr_np(): the stack, with glibc's TLS and thread
 *    descriptor at its top), noted on entry and forgotten when the thread
 *    exits. Their frames below a buffer the GPU uses are live driver frames.
 *
 * Locking: one mutex (g_lock in ownmem.c) over the list of stacks; the
 * segments are found once (pthread_once) and read-only after.
 */
#ifndef UGPU_BASE_OWNMEM_H
#define UGPU_BASE_OWNMEM_H

#include <stdbool.h>
#include <stdint.h>

/* The calling thread runs driver code: note its stack (once per thread;
 * cheap after the first call). */
void ownmem_thread_note(void);

/* Does [start, end) overlap the driver's own data segments (*@what then
 * "the driver's .data/.bss") or a noted thread's stack ("a stack of a thread
 * using the driver")? @what may be NULL. */
bool ownmem_overlaps(uint64_t start, uint64_t end, const char **what);

#endif /* UGPU_BASE_OWNMEM_H */
