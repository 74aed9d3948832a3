/* SPDX-License-Identifier: MIT */
/*
 * ugpu-bench uffd [N]: userfaultfd costs behind CPU mappings (mm/cpu_map).
 *   raw_missing_copy_4k   a bare missing fault resolved by UFFDIO_COPY of 4 KiB
 *                         (the baseline: the least a userfaultfd fault costs)
 *   cpu_map_fault         first touch of an invalidated cpu_map: message,
 *                         resolve, mmap of the backing, wake, data visible
 *   cpu_map_invalidate    one invalidation (placeholder swap by mremap, REMAP
 *                         round trip through the handler thread)
 *   cpu_map_release       one release in place (register missing + minor,
 *                         MADV_DONTNEED), as runtime PM does it on a memfd
 *   cpu_map_release_fault first touch after it: message, unregister (wakes)
 * One JSON object per line; latencies in microseconds.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "mm/cpu_map.h"
#include "tools/ugpu-bench/bench.h"

#define BENCH_PAGE 4096u

static void print_lat(const char *name, uint64_t *ns, size_t n, const char *extra)
{
	qsort(ns, n, sizeof(*ns), bench_cmp_u64);
	printf("{\"bench\":\"uffd\",\"case\":\"%s\",\"n\":%zu,\"p50_us\":%.2f,\"p99_us\":%.2f%s}\n",
	       name, n, ns[n / 2] / 1000.0, ns[n * 99 / 100] / 1000.0, extra ? extra : "");
}

/* --- raw round trip ------------------------------------------------------ */

/*
 * struct uffd_raw - an anonymous area registered for missing faults and a
 * handler thread that answers each with UFFDIO_COPY of one page: the least a
 * userfaultfd fault costs. Each touch uses a fresh page. Also used by
 * `ugpu-bench rpm` to measure the baseline in its own process, interleaved
 * with what it compares (see bench.h).
 */
struct uffd_raw {
	int uffd;
	atomic_bool stop;
	uint8_t *src;
	uint8_t *area;
	size_t n, next;
	pthread_t th;
	bool started;
};

static void *raw_handler(void *arg)
{
	struct uffd_raw *r = arg;

	while (!atomic_load(&r->stop)) {
		struct pollfd pfd = { .fd = r->uffd, .events = POLLIN };
		struct uffd_msg msg;

		if (poll(&pfd, 1, 50) <= 0)
			continue;
		if (read(r->uffd, &msg, sizeof(msg)) != sizeof(msg) ||
		    msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		struct uffdio_copy c = {
			.dst = msg.arg.pagefault.address & ~(uint64_t)(BENCH_PAGE - 1),
			.src = (uintptr_t)r->src,
			.len = BENCH_PAGE,
		};
		if (ioctl(r->uffd, UFFDIO_COPY, &c) < 0 && errno != EEXIST)
			fprintf(stderr, "bench uffd: UFFDIO_COPY failed: %s\n", strerror(errno));
	}
	return NULL;
}

void uffd_raw_destroy(struct uffd_raw *r)
{
	if (!r)
		return;
	if (r->started) {
		atomic_store(&r->stop, true);
		pthread_join(r->th, NULL);
	}
	if (r->area && r->area != MAP_FAILED)
		munmap(r->area, r->n * BENCH_PAGE);
	free(r->src);
	if (r->uffd >= 0)
		close(r->uffd);
	free(r);
}

int uffd_raw_create(size_t n, struct uffd_raw **out)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffd_raw *r = calloc(1, sizeof(*r));
	int dev, ret;

	if (!r)
		return -ENOMEM;
	r->n = n;
	r->uffd = -1;
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev >= 0) {
		r->uffd = ioctl(dev, _IO(0xAA, 0x00), O_CLOEXEC | O_NONBLOCK);
		close(dev);
	}
	if (r->uffd < 0)
		r->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (r->uffd < 0 || ioctl(r->uffd, UFFDIO_API, &api) < 0) {
		ret = -errno;
		fprintf(stderr, "bench uffd: no userfaultfd: %s\n", strerror(errno));
		goto fail;
	}
	r->src = aligned_alloc(BENCH_PAGE, BENCH_PAGE);
	r->area = mmap(NULL, n * BENCH_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	if (!r->src || r->area == MAP_FAILED) {
		ret = -ENOMEM;
		goto fail;
	}
	memset(r->src, 0x5a, BENCH_PAGE);
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)r->area, .len = n * BENCH_PAGE },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	if (ioctl(r->uffd, UFFDIO_REGISTER, &reg) < 0) {
		ret = -errno;
		goto fail;
	}
	ret = -pthread_create(&r->th, NULL, raw_handler, r);
	if (ret)
		goto fail;
	r->started = true;
	*out = r;
	return 0;
fail:
	uffd_raw_destroy(r);
	return ret;
}

int uffd_raw_touch(struct uffd_raw *r, uint64_t *ns)
{
	uint64_t t0;
	uint8_t v;

	if (r->next >= r->n)
		return -ENOSPC;
	t0 = bench_ns();
	v = ((volatile uint8_t *)r->area)[r->next++ * BENCH_PAGE];
	*ns = bench_ns() - t0;
	return v == 0x5a ? 0 : -EIO;
}

/* --- CPU placements (bench.h) -------------------------------------------- */

const char *const bench_placement_names[BENCH_NPLACEMENTS] = { "one-cpu", "two-cpu", "free" };

int bench_cpus_init(struct bench_cpus *c)
{
	c->a = c->b = -1;
	if (pthread_getaffinity_np(pthread_self(), sizeof(c->all), &c->all))
		return -EPERM;
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		if (!CPU_ISSET(cpu, &c->all))
			continue;
		if (c->a < 0)
			c->a = cpu;
		else if (c->b < 0)
			c->b = cpu;
	}
	return c->a < 0 ? -ENODEV : 0;
}

int bench_placement_parse(const char *name)
{
	if (!strcmp(name, "all"))
		return -1;
	for (int p = 0; p < BENCH_NPLACEMENTS; p++)
		if (!strcmp(name, bench_placement_names[p]))
			return p;
	return -EINVAL;
}

const char *bench_placement_cpus(const struct bench_cpus *c, enum bench_placement p, char *buf,
				 size_t len)
{
	if (p == BENCH_ONE_CPU)
		snprintf(buf, len, "%d", c->a);
	else if (p == BENCH_TWO_CPU)
		snprintf(buf, len, "%d+%d", c->a, c->b);
	else
		snprintf(buf, len, "any");
	return buf;
}

static int pin_self(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return -ENODEV;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return -pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

int bench_place_others(const struct bench_cpus *c, enum bench_placement p)
{
	return p == BENCH_ONE_CPU ? pin_self(c->a) : p == BENCH_TWO_CPU ? pin_self(c->b) : 0;
}

int bench_place_self(const struct bench_cpus *c, enum bench_placement p)
{
	return p == BENCH_TWO_CPU ? pin_self(c->a) : 0;
}

void bench_place_restore(const struct bench_cpus *c)
{
	pthread_setaffinity_np(pthread_self(), sizeof(c->all), &c->all);
}

static int bench_raw(size_t n)
{
	struct uffd_raw *r = NULL;
	uint64_t *lat = calloc(n, sizeof(*lat));
	size_t i;
	int ret = 1;

	if (!lat || uffd_raw_create(n, &r))
		goto out;
	ret = 0;
	for (i = 0; i < n && !ret; i++)
		if (uffd_raw_touch(r, &lat[i]))
			ret = 1;
	if (ret)
		fprintf(stderr, "bench uffd: raw fault returned wrong data\n");
	else
		print_lat("raw_missing_copy_4k", lat, n, NULL);
out:
	uffd_raw_destroy(r);
	free(lat);
	return ret;
}

/* --- cpu_map ------------------------------------------------------------- */

struct bench_owner {
	int fd;
	uint64_t off;
};

static int bench_resolve(void *o, uint64_t offset, struct cpu_map_extent *ext)
{
	struct bench_owner *ow = o;

	ext->fd = ow->fd;
	ext->fd_offset = ow->off + offset;
	ext->len = UINT64_MAX / 2;
	return 0;
}

static const struct cpu_map_owner_ops bench_ops = { .resolve = bench_resolve };

static int bench_cpu_map(size_t nmaps, size_t map_size, unsigned int rounds)
{
	struct cpu_map_mgr *mgr = NULL;
	struct bench_owner *ow = calloc(nmaps, sizeof(*ow));
	struct cpu_map **maps = calloc(nmaps, sizeof(*maps));
	uint8_t **addr = calloc(nmaps, sizeof(*addr));
	uint64_t *flat = calloc(nmaps * rounds, sizeof(uint64_t));
	uint64_t *ilat = calloc(nmaps * rounds, sizeof(uint64_t));
	uint64_t *rlat = calloc(nmaps * rounds, sizeof(uint64_t));
	uint64_t *rflat = calloc(nmaps * rounds, sizeof(uint64_t));
	size_t i, nf = 0, ni = 0, nr = 0, nrf = 0;
	unsigned int k;
	int fd = -1, ret = 1;
	char extra[96];

	if (!ow || !maps || !addr || !flat || !ilat || !rlat || !rflat)
		goto out;
	fd = memfd_create("bench-cpu-map", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)(nmaps * map_size)) < 0)
		goto out;
	for (i = 0; i < nmaps; i++) {
		uint8_t tag = (uint8_t)(i + 1);

		if (pwrite(fd, &tag, 1, (off_t)(i * map_size)) != 1)
			goto out;
	}
	if (cpu_map_mgr_create(NULL, NULL, &mgr)) {
		fprintf(stderr, "bench uffd: cpu_map manager unavailable\n");
		goto out;
	}
	for (i = 0; i < nmaps; i++) {
		ow[i] = (struct bench_owner){ .fd = fd, .off = i * map_size };
		if (cpu_map_create(mgr, &bench_ops, &ow[i], map_size, "bench", &maps[i],
				   (void **)&addr[i]))
			goto out_maps;
	}
	ret = 0;
	for (k = 0; k < rounds; k++) {
		for (i = 0; i < nmaps; i++) {
			uint64_t t0 = bench_ns();

			if (((volatile uint8_t *)addr[i])[0] != (uint8_t)(i + 1))
				ret = 1;
			flat[nf++] = bench_ns() - t0;
		}
		for (i = 0; i < nmaps; i++) {
			uint64_t t0 = bench_ns();

			if (cpu_map_invalidate(maps[i]))
				ret = 1;
			ilat[ni++] = bench_ns() - t0;
		}
	}
	/* Release in place (runtime PM): map, release, touch again. */
	for (k = 0; k < rounds && !ret; k++) {
		for (i = 0; i < nmaps; i++)
			if (((volatile uint8_t *)addr[i])[0] != (uint8_t)(i + 1))
				ret = 1;
		for (i = 0; i < nmaps; i++) {
			uint64_t t0 = bench_ns();

			if (cpu_map_release(maps[i]))
				ret = 1;
			rlat[nr++] = bench_ns() - t0;
		}
		for (i = 0; i < nmaps; i++) {
			uint64_t t0 = bench_ns();

			if (((volatile uint8_t *)addr[i])[0] != (uint8_t)(i + 1))
				ret = 1;
			rflat[nrf++] = bench_ns() - t0;
		}
	}
	if (ret) {
		fprintf(stderr, "bench uffd: cpu_map returned wrong data or failed to invalidate/release\n");
		goto out_maps;
	}
	snprintf(extra, sizeof(extra), ",\"maps\":%zu,\"map_bytes\":%zu", nmaps, map_size);
	print_lat("cpu_map_fault", flat, nf, extra);
	print_lat("cpu_map_invalidate", ilat, ni, extra);
	print_lat("cpu_map_release", rlat, nr, extra);
	print_lat("cpu_map_release_fault", rflat, nrf, extra);
out_maps:
	for (i = 0; i < nmaps; i++)
		if (maps[i])
			cpu_map_destroy(maps[i]);
	cpu_map_mgr_destroy(mgr);
out:
	if (fd >= 0)
		close(fd);
	free(ow);
	free(maps);
	free(addr);
	free(flat);
	free(ilat);
	free(rlat);
	free(rflat);
	return ret;
}

int bench_uffd(int argc, char **argv)
{
	const struct cli_cmd cli = { .prog = "ugpu-bench uffd", .args = "[N]",
				     .summary = "userfaultfd round trip vs cpu_map fault/invalidate/release",
				     .about = "N: mappings of 64 KiB, 2..1048576 (default 256)",
				     .max_pos = 1 };
	uint64_t n = 256;
	char *pos[1];
	unsigned npos;
	int ret = cli_parse(&cli, argc, argv, pos, &npos);

	if (ret != CLI_CONTINUE)
		return ret;
	if (npos && cli_uint(cli.prog, "N (mappings)", pos[0], 2, 1u << 20, &n))
		return CLI_EXIT_USAGE;
	ret = 0;
	ret |= bench_raw(n * 16);
	ret |= bench_cpu_map(n, 64 * 1024, 8);
	return ret;
}
