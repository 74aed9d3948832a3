/* SPDX-License-Identifier: MIT */
/*
 * The command line of every tool (ugpuctl, ugpu-sim, ugpu-demo, ugpu-bench):
 * one option table per command, one strict parser, one usage format.
 *
 * What every command gets from it, so no tool does it its own way:
 *  - -h/--help prints the usage (options with their accepted range and
 *    default) to stdout and exits 0; --version prints "PROG (ugpu) X.Y.Z";
 *  - numbers are parsed strictly: decimal or 0x hex digits only, nothing
 *    after them, no sign; out of range or not a number is refused with the
 *    accepted range in the message ("--hold-ms: '-1' is not a number;
 *    expected 0..3600000");
 *  - sizes take a K/M/G/T suffix (powers of 1024; "M", "MiB" and "MB" all
 *    mean MiB); a bare number counts in the option's unit;
 *  - an error is printed once, on stderr, prefixed with the command's name,
 *    followed by a pointer to --help; the exit code is 2.
 *
 * Tool plumbing, not the driver: it needs only the C library (and
 * ugpu/version.h for --version), so ugpu-demo may use it and still build
 * against the public API alone (cmake/demo_includes.cmake).
 */
#ifndef UGPU_TOOLS_CLI_H
#define UGPU_TOOLS_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* cli_parse() returns this when the command should go on; anything else is
 * the exit code (0 after --help/--version, 2 after a usage error). */
#define CLI_CONTINUE (-1)
#define CLI_EXIT_USAGE 2

enum cli_kind {
	CLI_FLAG, /* bool *: set to true */
	CLI_STR, /* const char **: the argument itself */
	CLI_UINT, /* uint64_t *: an integer in [min, max] */
	CLI_SIZE, /* uint64_t *: bytes, in [min, max]; see @unit, @pow2 */
	CLI_CALL, /* @call parses it (repeatable); @range says what it accepts */
};

/*
 * struct cli_opt - one option. Tables end with an entry whose @name is NULL.
 * @name:  the long name without dashes ("fill-mib"); given as --fill-mib VAL
 *         or --fill-mib=VAL.
 * @kind:  what @dst points to (enum cli_kind).
 * @dst:   where the value goes. Its value before parsing is the default the
 *         usage prints (CLI_UINT: none printed when it is outside
 *         [@min, @max], a marker for "not given").
 * @arg:   the value's name in the usage ("N", "SIZE", "PATH"); NULL for flags.
 * @help:  one line.
 * @min, @max: CLI_UINT, CLI_SIZE: the accepted range, inclusive (bytes for
 *         sizes).
 * @unit:  CLI_SIZE: what a bare number counts (1 = bytes, 1 << 20 = MiB).
 * @pow2:  CLI_SIZE: must be a power of two.
 * @call:  CLI_CALL: returns 0, or -EINVAL when @val is not accepted.
 * @range: CLI_CALL: the accepted form, for the usage and the error ("A-B,
 *         device numbers 0..15, A != B").
 */
struct cli_opt {
	const char *name;
	enum cli_kind kind;
	void *dst;
	const char *arg;
	const char *help;
	uint64_t min, max;
	uint64_t unit;
	bool pow2;
	int (*call)(const char *val, void *dst);
	const char *range;
};

/*
 * struct cli_cmd - a command (or a subcommand).
 * @prog:    the name messages start with ("ugpuctl suspend").
 * @args:    the synopsis of the positional arguments ("URI", "BDF...", "").
 * @summary: one line, for --help and for a parent command's list.
 * @about:   more text for --help, or NULL.
 * @opts:    the options (may be NULL).
 * @min_pos, @max_pos: how many positional arguments it takes.
 */
struct cli_cmd {
	const char *prog;
	const char *args;
	const char *summary;
	const char *about;
	const struct cli_opt *opts;
	unsigned min_pos, max_pos;
};

/*
 * cli_parse() - parse @argv[1..@argc) against @c: options into their @dst,
 * positional arguments into @pos (room for @c->max_pos), their count into
 * *@npos (@pos and @npos may be NULL when @c->max_pos is 0). -h/--help and
 * --version anywhere win over everything else and are handled first, so the
 * defaults printed are the table's. "--" ends the options.
 * Returns: CLI_CONTINUE, or the exit code for main() to return (0 after help
 * or version, CLI_EXIT_USAGE after a message on stderr).
 */
int cli_parse(const struct cli_cmd *c, int argc, char **argv, char **pos, unsigned *npos);

/* The usage of @c: synopsis, summary, about, every option with its range and
 * default, -h/--help and --version. */
void cli_usage(const struct cli_cmd *c, FILE *f);

/* "PROG (ugpu) X.Y.Z" for the first word of @prog. */
void cli_version(const char *prog, FILE *f);

/* @prog: @fmt, then "Try '@prog --help'." on stderr; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *prog, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Is @arg -h or --help? --version? */
bool cli_is_help(const char *arg);
bool cli_is_version(const char *arg);

/*
 * cli_uint() / cli_size() - one number, strictly (for positional numbers
 * and values a CLI_CALL parses in parts). @what names it in the error
 * ("--hold-ms", "N mappings"). On error a message is printed as
 * cli_usage_error() does.
 * Returns: 0, -EINVAL (not a number), -ERANGE (outside [@min, @max], or not
 * a power of two when @pow2).
 */
int cli_uint(const char *prog, const char *what, const char *s, uint64_t min, uint64_t max,
	     uint64_t *out);
int cli_size(const char *prog, const char *what, const char *s, uint64_t min, uint64_t max,
	     uint64_t unit, bool pow2, uint64_t *out);

/* The same without printing: 0, -EINVAL, -ERANGE (overflow). */
int cli_strtou64(const char *s, uint64_t *out);
int cli_strtosize(const char *s, uint64_t unit, uint64_t *out);

#endif
