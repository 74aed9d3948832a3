/* SPDX-License-Identifier: MIT */
/*
 * Shared virtual memory, internal side (the public face is the mirror mode
 * of include/ugpu/vm.h and ugpu_device_svm_stats(); design: docs/svm.md).
 *
 * One process-wide state (struct svm, in svm/svm.c) owns a userfaultfd, the
 * ranges of process memory the GPU has touched, and a worker thread; every
 * device with exec queues attaches to it at bring-up (the "svm" step) and
 * hands it the GPU faults of its mirror VMs (mm/vm.h, struct vm_svm_ops).
 *
 * Locks (outer first): the worker's work (no lock) → a range's busy flag
 * (under svm->lock, waited on with svm->cond) → VM and BO manager locks
 * (mm/) → svm->lock (only briefly, never across a copy, an ioctl that
 * waits, or a call into mm/). The userfaultfd handler thread never waits:
 * it answers at once, parks the faulting thread (no wake) or queues work.
 */
#ifndef UGPU_SVM_SVM_H
#define UGPU_SVM_SVM_H

#include <stdint.h>

/* Range sizes, largest first (xe's default: 2 MiB, 64 KiB, 4 KiB). */
#define SVM_2M (2ull << 20)
#define SVM_64K (64ull << 10)
#define SVM_4K 4096ull
/* Ranges of this size or more move to VRAM on their first GPU fault;
 * smaller ones are used where they are (xe's policy). */
#define SVM_MIGRATE_MIN SVM_64K
/* A range that reached VRAM stays there at least this long before a CPU
 * touch takes it back (xe's default timeslice), so the two sides do not
 * ping-pong. */
#define SVM_TIMESLICE_MS 5

/* A GPU atomic needs its range in VRAM: a move that fails is tried again
 * this many times, after 1, 2, 4 timeslices (xe's policy), before the
 * kernel is aborted. */
#define SVM_ATOMIC_RETRIES 3

#endif
