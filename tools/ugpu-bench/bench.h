/* SPDX-License-Identifier: MIT */
#ifndef UGPU_BENCH_H
#define UGPU_BENCH_H

/* Each benchmark: argv[0] is its name; returns 0 or non-zero on failure. */
int bench_buddy(int argc, char **argv);
int bench_copy(int argc, char **argv);
int bench_suspend(int argc, char **argv);
int bench_rpm(int argc, char **argv);
int bench_uffd(int argc, char **argv);

#endif
