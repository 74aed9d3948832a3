/* SPDX-License-Identifier: MIT */
/*
 * ugpu-bench p2p: moving BOs between two devices, directly over a fast
 * fabric link vs through system memory, with memcpy of the same bytes in
 * the same run; the same over a slow link; and a kernel reading a peer's BO
 * in place vs its own (docs/multi-device.md).
 *
 * In-process reference devices, public API only. --mib N (default 256) of
 * 2 MiB BOs start in device 0's VRAM and move to device 1 and back with
 * ugpu_bo_migrate_device(), alternately directly (UGPU_MIGRATE_DIRECT) and
 * through system memory (UGPU_MIGRATE_VIA_SYSTEM), best of --rounds N; memcpy
 * copies the same number of bytes between two buffers in between. The BOs are
 * checked byte-exact at the end. Lines (GB/s = 10^9 bytes per second):
 *   {"bench":"p2p","case":"migrate_2m","direct_gbps":A,"via_system_gbps":B,"memcpy_gbps":C}
 *   {"bench":"p2p","case":"migrate_2m_slow_link","direct_gbps":A,"via_system_gbps":B,"memcpy_gbps":C,"default":"via_system"}
 *   {"bench":"p2p","case":"peer_read","peer_gbps":P,"local_gbps":L}
 * The target: A >= 1.5 x B.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ugpu/bo.h>
#include <ugpu/fabric.h>
#include <ugpu/rpm.h>
#include <ugpu/vm.h>

#include "tools/ugpu-bench/bench.h"
#include "tools/ugpu-sim/sim.h"

#define MIB (1ull << 20)
#define BO_BYTES (2 * MIB)

struct pb {
	struct sim *sim;
	struct ugpu_context *ctx;
	struct ugpu_device *dev[2];
	struct ugpu_bo **bos;
	size_t n;
};

static int pb_start(struct pb *p, uint64_t vram, bool slow)
{
	struct ugpu_context_opts co = { .size = sizeof(co), .log_level = UGPU_LOG_ERROR };
	struct sim_opts so;
	char uri[300];
	int ret, i;

	sim_opts_init(&so);
	so.vram_size = vram;
	so.devices = 2;
	so.exec_queues = 1;
	if (slow)
		so.slow_links[0] = 1u << 1;
	ret = sim_start(&so, &p->sim);
	if (!ret)
		ret = ugpu_context_create(&co, &p->ctx);
	for (i = 0; !ret && i < 2; i++) {
		snprintf(uri, sizeof(uri), "vfio-user:%s", sim_socket_path(p->sim, (unsigned)i));
		ret = ugpu_device_open(p->ctx, uri, &p->dev[i]);
		/* awake throughout: this measures moves, not wakes */
		if (!ret)
			ret = ugpu_device_rpm_get(p->dev[i]);
	}
	return ret;
}

static void pb_stop(struct pb *p)
{
	size_t k;

	for (k = 0; k < p->n; k++)
		ugpu_bo_put(p->bos[k]);
	free(p->bos);
	for (int i = 0; i < 2; i++) {
		if (p->dev[i])
			ugpu_device_rpm_put(p->dev[i]);
		ugpu_device_close(p->dev[i]);
	}
	ugpu_context_destroy(p->ctx);
	sim_stop(p->sim);
}

static void word_fill(uint64_t *w, size_t words, uint64_t seed)
{
	for (size_t i = 0; i < words; i++)
		w[i] = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
}

/* @n BOs of 2 MiB on device 0, each with its own pattern. */
static int bos_make(struct pb *p, size_t n)
{
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = BO_BYTES,
				  .placements = { UGPU_PLACEMENT_VRAM, UGPU_PLACEMENT_SYSTEM },
				  .name = "p2p" };
	uint64_t *w = malloc(BO_BYTES);
	int ret = w ? 0 : -ENOMEM;

	p->bos = calloc(n, sizeof(*p->bos));
	if (!p->bos)
		ret = -ENOMEM;
	for (p->n = 0; !ret && p->n < n; p->n++) {
		ret = ugpu_bo_create(p->dev[0], &o, &p->bos[p->n]);
		if (ret)
			break;
		word_fill(w, BO_BYTES / 8, p->n);
		ret = ugpu_bo_write(p->bos[p->n], 0, w, BO_BYTES);
	}
	free(w);
	return ret;
}

static int bos_check(struct pb *p)
{
	uint64_t *w = malloc(BO_BYTES), *e = malloc(BO_BYTES);
	int ret = w && e ? 0 : -ENOMEM;

	for (size_t k = 0; !ret && k < p->n; k++) {
		word_fill(e, BO_BYTES / 8, k);
		ret = ugpu_bo_read(p->bos[k], 0, w, BO_BYTES);
		if (!ret && memcmp(w, e, BO_BYTES)) {
			fprintf(stderr, "ugpu-bench p2p: BO %zu differs after the moves\n", k);
			ret = -EIO;
		}
	}
	free(w);
	free(e);
	return ret;
}

/* Every BO to @to by @flags; GB/s, or a negative errno. */
static double move_all(struct pb *p, struct ugpu_device *to, uint32_t flags)
{
	uint64_t t0 = bench_ns();

	for (size_t k = 0; k < p->n; k++) {
		int ret = ugpu_bo_migrate_device(p->bos[k], to, flags);

		if (ret)
			return ret;
	}
	return (double)p->n * BO_BYTES / (double)(bench_ns() - t0);
}

static double memcpy_gbps(uint64_t bytes)
{
	char *a = malloc(bytes), *b = malloc(bytes);
	double best = 0;

	if (!a || !b) {
		free(a);
		free(b);
		return 0;
	}
	memset(a, 1, bytes);
	memset(b, 2, bytes); /* both faulted in before the timing */
	for (int r = 0; r < 3; r++) {
		uint64_t t0 = bench_ns();
		double g;

		memcpy(b, a, bytes);
		__asm__ __volatile__("" : : "r"(b) : "memory");
		g = (double)bytes / (double)(bench_ns() - t0);
		if (g > best)
			best = g;
	}
	free(a);
	free(b);
	return best;
}

/* Best of @rounds of A -> B and back by each path (the via-system runs
 * between the direct ones, so noise hits both). */
static int migrate_case(struct pb *p, unsigned rounds, bool slow, uint64_t bytes)
{
	double direct = 0, via = 0, g, mc = memcpy_gbps(bytes);
	int at = 0; /* where the BOs are */

	for (unsigned r = 0; r < rounds; r++) {
		/* there and back, each path once each way */
		for (int way = 0; way < 2; way++) {
			for (int leg = 0; leg < 2; leg++) {
				bool d = way == leg;

				g = move_all(p, p->dev[1 - at], d ? UGPU_MIGRATE_DIRECT
								  : UGPU_MIGRATE_VIA_SYSTEM);
				if (g < 0)
					return (int)g;
				at = 1 - at;
				if (d)
					direct = g > direct ? g : direct;
				else
					via = g > via ? g : via;
			}
		}
		if (bytes >= 1024 * MIB)
			fprintf(stderr, "ugpu-bench p2p: round %u of %u done\n", r + 1, rounds);
	}
	if (slow) {
		/* the rule this line backs: with no flag, a slow link's move goes
		 * through system memory (docs/multi-device.md) */
		struct ugpu_device_mem m0 = { .size = sizeof(m0) }, m1 = { .size = sizeof(m1) };
		int ret;

		ret = ugpu_device_mem_stats(p->dev[1 - at], &m0);
		if (!ret)
			ret = ugpu_bo_migrate_device(p->bos[0], p->dev[1 - at], 0);
		if (!ret)
			ret = ugpu_device_mem_stats(p->dev[1 - at], &m1);
		if (ret)
			return ret;
		printf("{\"bench\":\"p2p\",\"case\":\"migrate_2m_slow_link\",\"direct_gbps\":%.3f,\"via_system_gbps\":%.3f,\"memcpy_gbps\":%.3f,\"default\":\"%s\"}\n",
		       direct, via, mc,
		       m1.peer_via_system > m0.peer_via_system ? "via_system" : "direct");
	} else {
		printf("{\"bench\":\"p2p\",\"case\":\"migrate_2m\",\"direct_gbps\":%.3f,\"via_system_gbps\":%.3f,\"memcpy_gbps\":%.3f}\n",
		       direct, via, mc);
	}
	fflush(stdout);
	return bos_check(p);
}

/* A kernel on device 0 sums 64 MiB bound from device 1's VRAM (in place)
 * and from its own VRAM. */
static int peer_read_case(struct pb *p)
{
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = 64 * MIB,
				  .placements = { UGPU_PLACEMENT_VRAM }, .name = "p2p-read" };
	struct ugpu_bo *peer = NULL, *local = NULL;
	struct ugpu_vm *vm = NULL;
	struct ugpu_queue *q = NULL;
	double gbps[2] = { 0, 0 };
	int ret;

	ret = ugpu_bo_create(p->dev[1], &o, &peer);
	if (!ret)
		ret = ugpu_bo_create(p->dev[0], &o, &local);
	if (!ret)
		ret = ugpu_vm_create(p->dev[0], NULL, &vm);
	if (!ret)
		ret = ugpu_queue_create(vm, NULL, &q);
	if (!ret)
		ret = ugpu_vm_bind(vm, peer, 0, 1ull << 32, o.bytes, UGPU_BIND_READONLY);
	if (!ret)
		ret = ugpu_vm_bind(vm, local, 0, 2ull << 32, o.bytes, UGPU_BIND_READONLY);
	for (int r = 0; r < 3 && !ret; r++) {
		for (int i = 0; i < 2 && !ret; i++) {
			struct ugpu_kernel k = { .size = sizeof(k), .op = UGPU_KERNEL_READ_SUM,
						 .va = (uint64_t)(i + 1) << 32, .bytes = o.bytes };
			struct ugpu_kernel_result res = { .size = sizeof(res) };
			uint64_t fence, t0 = bench_ns();
			double g;

			ret = ugpu_queue_submit(q, &k, &fence);
			if (!ret)
				ret = ugpu_fence_wait(q, fence, 30000, &res);
			if (!ret)
				ret = res.status;
			g = (double)o.bytes / (double)(bench_ns() - t0);
			gbps[i] = g > gbps[i] ? g : gbps[i];
		}
	}
	if (!ret)
		printf("{\"bench\":\"p2p\",\"case\":\"peer_read\",\"peer_gbps\":%.3f,\"local_gbps\":%.3f}\n",
		       gbps[0], gbps[1]);
	ugpu_queue_destroy(q);
	ugpu_vm_destroy(vm);
	ugpu_bo_put(peer);
	ugpu_bo_put(local);
	return ret;
}

int bench_p2p(int argc, char **argv)
{
	uint64_t mib_opt = 256, rounds_opt = 3;
	const struct cli_opt opts[] = {
		{ .name = "mib", .kind = CLI_UINT, .dst = &mib_opt, .arg = "N",
		  .help = "MiB moved each way, in 2 MiB BOs (even)", .min = 16, .max = 16384 },
		{ .name = "rounds", .kind = CLI_UINT, .dst = &rounds_opt, .arg = "N",
		  .help = "rounds of each path (best taken)", .min = 1, .max = 100 },
		{ 0 },
	};
	const struct cli_cmd cli = {
		.prog = "ugpu-bench p2p", .args = "",
		.summary = "BO moves between two devices: directly over the fabric vs through system memory, a slow link, a peer read in place; vs memcpy",
		.opts = opts };
	int ret = cli_parse(&cli, argc, argv, NULL, NULL);
	uint64_t vram;

	if (ret != CLI_CONTINUE)
		return ret;
	ret = 0;
	if (mib_opt & 1)
		return cli_usage_error(cli.prog, "--mib: %" PRIu64 " is odd; expected an even number",
				       mib_opt);
	/* every BO at once, the peer-read BOs, the driver's own objects */
	for (vram = 64 * MIB; vram < mib_opt * MIB + 192 * MIB; vram *= 2)
		;
	for (int slow = 0; slow < 2 && !ret; slow++) {
		struct pb p = { 0 };

		ret = pb_start(&p, vram, slow);
		if (!ret)
			ret = bos_make(&p, (size_t)(mib_opt * MIB / BO_BYTES));
		if (!ret)
			ret = migrate_case(&p, (unsigned)rounds_opt, slow, mib_opt * MIB);
		if (!ret && !slow) {
			for (size_t k = 0; k < p.n; k++)
				ugpu_bo_put(p.bos[k]);
			p.n = 0; /* room for the peer-read BOs */
			ret = peer_read_case(&p);
		}
		if (ret)
			fprintf(stderr, "ugpu-bench p2p: %s\n", ugpu_strerror(ret));
		pb_stop(&p);
	}
	return ret ? 1 : 0;
}
