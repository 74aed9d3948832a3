/* SPDX-License-Identifier: MIT */
/*
 * The Prometheus text exposition format (version 0.0.4) of a device's
 * counters (include/ugpu/stats.h), for `ugpuctl stats --prometheus` and the
 * daemon's endpoint. Names follow Prometheus practice: the ugpu_ prefix,
 * base units (KiB become bytes, ns/us/ms become seconds, as fractions),
 * counters end in _total (a trailing _count becomes _total), bytes end in
 * _bytes; histograms are NAME_bucket{le="..."} (cumulative, bounds in base
 * units, the last +Inf), NAME_sum and NAME_count; every sample carries the
 * labels given.
 */
#ifndef UGPU_TOOLS_PROM_H
#define UGPU_TOOLS_PROM_H

#include <stddef.h>
#include <stdio.h>

struct ugpu_device;
struct ugpu_stat;

/*
 * prom_name() - the Prometheus name of @st into @buf ("ugpu_..."), and its
 * value in base units into *@value. Returns 0, or -ENAMETOOLONG.
 */
int prom_name(const struct ugpu_stat *st, char *buf, size_t len, double *value);

/*
 * prom_write() - every counter of the @n devices @devs as exposition text to
 * @out: each metric's HELP and TYPE once, then one sample per device with
 * that device's label set @labels[i] (without braces, e.g.
 * `device="vfio-user:/run/gpu.sock"`, made with prom_label(); NULL for
 * none). A counter a device does not report (-EOPNOTSUPP) has no sample for
 * it. Returns 0 or the -errno of the first counter that could not be read
 * (nothing more is written then).
 */
int prom_write(FILE *out, struct ugpu_device *const *devs, const char *const *labels, size_t n);

/* prom_label() - `NAME="VALUE"` with VALUE escaped as the format asks
 * (backslash, double quote, newline) into @buf. Returns 0 or -ENAMETOOLONG. */
int prom_label(char *buf, size_t len, const char *name, const char *value);

#endif
