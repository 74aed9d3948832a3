/* SPDX-License-Identifier: MIT */
/* The tools' command line: one strict parser and one usage format (cli.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ugpu/version.h>

#include "tools/common/cli.h"

bool cli_is_help(const char *arg)
{
	return !strcmp(arg, "-h") || !strcmp(arg, "--help");
}

bool cli_is_version(const char *arg)
{
	return !strcmp(arg, "--version");
}

void cli_version(const char *prog, FILE *f)
{
	int n = (int)strcspn(prog, " ");

	fprintf(f, "%.*s (ugpu) %s\n", n, prog, UGPU_VERSION_STRING);
}

int cli_usage_error(const char *prog, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help'.\n", prog);
	return CLI_EXIT_USAGE;
}

int cli_strtou64(const char *s, uint64_t *out)
{
	unsigned base = 10;
	uint64_t v = 0;

	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		unsigned d;

		if (*s >= '0' && *s <= '9')
			d = (unsigned)(*s - '0');
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			d = (unsigned)(*s - 'a' + 10);
		else if (base == 16 && *s >= 'A' && *s <= 'F')
			d = (unsigned)(*s - 'A' + 10);
		else
			return -EINVAL;
		if (v > (UINT64_MAX - d) / base)
			return -ERANGE;
		v = v * base + d;
	}
	*out = v;
	return 0;
}

int cli_strtosize(const char *s, uint64_t unit, uint64_t *out)
{
	static const char suffixes[] = "KMGT";
	char num[32];
	const char *suf;
	size_t n = strspn(s, "0123456789abcdefABCDEFxX");
	unsigned shift = 0;
	uint64_t v;
	int ret;

	/* hex digits b..f swallow nothing a suffix needs ("1M", "2G", "1T");
	 * only a trailing "B" of "MB" could be read as a digit: give it back */
	if (n && (s[n - 1] == 'b' || s[n - 1] == 'B') && !(s[0] == '0' && (s[1] == 'x' || s[1] == 'X')))
		n--;
	if (!n || n >= sizeof(num))
		return -EINVAL;
	memcpy(num, s, n);
	num[n] = '\0';
	ret = cli_strtou64(num, &v);
	if (ret)
		return ret;
	suf = s + n;
	if (*suf) {
		const char *p = strchr(suffixes, *suf >= 'a' ? *suf - 'a' + 'A' : *suf);

		if (!p || !*p)
			return -EINVAL;
		shift = 10 * (unsigned)(p - suffixes + 1);
		suf++;
		if (!strcmp(suf, "iB") || !strcmp(suf, "B"))
			suf += strlen(suf);
		if (*suf)
			return -EINVAL;
		if (v > UINT64_MAX >> shift)
			return -ERANGE;
		v <<= shift;
	} else {
		if (unit && v > UINT64_MAX / unit)
			return -ERANGE;
		v *= unit ? unit : 1;
	}
	*out = v;
	return 0;
}

/* A size in the largest unit that divides it: "256M", "1T", "4095". */
static const char *fmt_size(uint64_t v, char *buf, size_t len)
{
	static const char units[] = "TGMK";

	for (int i = 0; i < 4; i++) {
		unsigned shift = 10 * (unsigned)(4 - i);

		if (v && !(v & ((1ull << shift) - 1))) {
			snprintf(buf, len, "%" PRIu64 "%c", v >> shift, units[i]);
			return buf;
		}
	}
	snprintf(buf, len, "%" PRIu64, v);
	return buf;
}

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* Why @v is refused: @ret is what parsing it said (0: it parsed, and is
 * outside [@min, @max] or not a power of two). */
static const char *refusal(int ret, uint64_t v, uint64_t min, uint64_t max, char *buf,
			   size_t len, const char *(*fmt)(uint64_t, char *, size_t))
{
	char b[32];

	if (ret == -EINVAL)
		return "is not a number";
	if (ret == -ERANGE || v > max)
		snprintf(buf, len, "is too large (at most %s)", fmt(max, b, sizeof(b)));
	else if (v < min)
		snprintf(buf, len, "is too small (at least %s)", fmt(min, b, sizeof(b)));
	else
		snprintf(buf, len, "is not a power of two");
	return buf;
}

static const char *fmt_u64(uint64_t v, char *buf, size_t len)
{
	snprintf(buf, len, "%" PRIu64, v);
	return buf;
}

int cli_uint(const char *prog, const char *what, const char *s, uint64_t min, uint64_t max,
	     uint64_t *out)
{
	char why[64];
	uint64_t v = 0;
	int ret = cli_strtou64(s, &v);

	if (ret || v < min || v > max) {
		cli_usage_error(prog, "%s: '%s' %s; expected an integer in %" PRIu64 "..%" PRIu64, what,
				s, refusal(ret, v, min, max, why, sizeof(why), fmt_u64), min, max);
		return ret == -EINVAL ? -EINVAL : -ERANGE;
	}
	*out = v;
	return 0;
}

int cli_size(const char *prog, const char *what, const char *s, uint64_t min, uint64_t max,
	     uint64_t unit, bool pow2, uint64_t *out)
{
	char a[32], b[32], why[64];
	uint64_t v = 0;
	int ret = cli_strtosize(s, unit, &v);

	if (ret || v < min || v > max || (pow2 && !is_pow2(v))) {
		cli_usage_error(prog, "%s: '%s' %s; expected a size in %s..%s%s (K, M, G, T suffixes%s)",
				what, s,
				ret == -EINVAL ? "is not a size" :
						 refusal(ret, v, min, max, why, sizeof(why), fmt_size),
				fmt_size(min, a, sizeof(a)), fmt_size(max, b, sizeof(b)),
				pow2 ? ", a power of two" : "",
				unit == 1 ? "; a bare number is bytes" :
				unit == 1ull << 20 ? "; a bare number is MiB" : "");
		return ret == -EINVAL ? -EINVAL : -ERANGE;
	}
	*out = v;
	return 0;
}

static void opt_usage(const struct cli_opt *o, FILE *f)
{
	char syn[48], a[32], b[32], d[32];
	uint64_t v;

	snprintf(syn, sizeof(syn), "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
	fprintf(f, "  %-24s %s", syn, o->help);
	switch (o->kind) {
	case CLI_UINT:
		v = *(const uint64_t *)o->dst;
		/* a default outside the range means "not given": the help
		 * text says what happens then */
		if (v < o->min || v > o->max)
			fprintf(f, " (%" PRIu64 "..%" PRIu64 ")", o->min, o->max);
		else
			fprintf(f, " (%" PRIu64 "..%" PRIu64 ", default %" PRIu64 ")", o->min, o->max, v);
		break;
	case CLI_SIZE:
		v = *(const uint64_t *)o->dst;
		fprintf(f, " (%s..%s%s, default %s)", fmt_size(o->min, a, sizeof(a)),
			fmt_size(o->max, b, sizeof(b)), o->pow2 ? ", power of two" : "",
			fmt_size(v, d, sizeof(d)));
		break;
	case CLI_STR:
		if (*(const char *const *)o->dst)
			fprintf(f, " (default %s)", *(const char *const *)o->dst);
		break;
	case CLI_CALL:
		if (o->range)
			fprintf(f, " (%s)", o->range);
		break;
	case CLI_FLAG:
		break;
	}
	fputc('\n', f);
}

void cli_usage(const struct cli_cmd *c, FILE *f)
{
	bool any = c->opts && c->opts[0].name;

	fprintf(f, "usage: %s%s%s%s\n", c->prog, any ? " [OPTIONS]" : "",
		c->args && c->args[0] ? " " : "", c->args ? c->args : "");
	if (c->summary)
		fprintf(f, "%s\n", c->summary);
	if (c->about)
		fprintf(f, "\n%s\n", c->about);
	fprintf(f, "\noptions:\n");
	for (const struct cli_opt *o = c->opts; o && o->name; o++)
		opt_usage(o, f);
	fprintf(f, "  %-24s %s\n", "-h, --help", "print this help and exit");
	fprintf(f, "  %-24s %s\n", "--version", "print the version and exit");
}

static const struct cli_opt *find_opt(const struct cli_cmd *c, const char *name, size_t len)
{
	for (const struct cli_opt *o = c->opts; o && o->name; o++)
		if (strlen(o->name) == len && !strncmp(o->name, name, len))
			return o;
	return NULL;
}

static int set_opt(const struct cli_cmd *c, const struct cli_opt *o, const char *val)
{
	char what[64];

	snprintf(what, sizeof(what), "--%s", o->name);
	switch (o->kind) {
	case CLI_FLAG:
		*(bool *)o->dst = true;
		return 0;
	case CLI_STR:
		*(const char **)o->dst = val;
		return 0;
	case CLI_UINT:
		return cli_uint(c->prog, what, val, o->min, o->max, o->dst) ? -EINVAL : 0;
	case CLI_SIZE:
		return cli_size(c->prog, what, val, o->min, o->max, o->unit, o->pow2, o->dst) ? -EINVAL :
											       0;
	case CLI_CALL:
		if (o->call(val, o->dst)) {
			cli_usage_error(c->prog, "%s: '%s' is not accepted; expected %s", what, val,
					o->range ? o->range : "another value");
			return -EINVAL;
		}
		return 0;
	}
	return -EINVAL;
}

int cli_parse(const struct cli_cmd *c, int argc, char **argv, char **pos, unsigned *npos)
{
	unsigned n = 0;
	bool opts_done = false;
	int i;

	/* help and version first: nothing is parsed, the defaults are intact */
	for (i = 1; i < argc && strcmp(argv[i], "--"); i++) {
		if (cli_is_help(argv[i])) {
			cli_usage(c, stdout);
			return 0;
		}
		if (cli_is_version(argv[i])) {
			cli_version(c->prog, stdout);
			return 0;
		}
	}
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *eq, *val;
		const struct cli_opt *o;

		if (opts_done || a[0] != '-' || !a[1]) {
			if (n >= c->max_pos)
				return cli_usage_error(c->prog, "unexpected argument '%s'", a);
			if (pos)
				pos[n] = argv[i];
			n++;
			continue;
		}
		if (!strcmp(a, "--")) {
			opts_done = true;
			continue;
		}
		if (a[1] != '-')
			return cli_usage_error(c->prog, "unknown option '%s'", a);
		eq = strchr(a + 2, '=');
		o = find_opt(c, a + 2, eq ? (size_t)(eq - a - 2) : strlen(a + 2));
		if (!o)
			return cli_usage_error(c->prog, "unknown option '%.*s'",
					       eq ? (int)(eq - a) : (int)strlen(a), a);
		if (o->kind == CLI_FLAG) {
			if (eq)
				return cli_usage_error(c->prog, "--%s takes no value", o->name);
			val = NULL;
		} else if (eq) {
			val = eq + 1;
		} else if (i + 1 < argc) {
			val = argv[++i];
		} else {
			return cli_usage_error(c->prog, "--%s needs a value (%s)", o->name,
					       o->arg ? o->arg : "a value");
		}
		if (set_opt(c, o, val))
			return CLI_EXIT_USAGE;
	}
	if (n < c->min_pos)
		return cli_usage_error(c->prog, "missing argument%s%s", c->args && c->args[0] ? ": " : "",
				       c->args ? c->args : "");
	if (npos)
		*npos = n;
	return CLI_CONTINUE;
}
