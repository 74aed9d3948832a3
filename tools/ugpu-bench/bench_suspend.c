/* SPDX-License-Identifier: MIT */
/*
 * ugpu-bench suspend: host suspend/resume of N pinned BOs totalling S MiB,
 * in several shapes, against an in-process reference device (which really
 * loses VRAM in D3cold).
 *
 * Per shape, best of --reps runs of each:
 *   prepare_ms          ugpu_device_suspend_prepare (backups allocated + filled)
 *   critical_ms         ugpu_device_suspend after prepare (the critical window),
 *                       every BO written again after prepare so that the
 *                       window copies all of it (as before dirty tracking)
 *   resume_ms           ugpu_device_resume
 *   noprep_critical_ms  ugpu_device_suspend without prepare
 *   memcpy_ms           memcpy of the same bytes, VRAM BAR -> prefaulted
 *                       system memory, BO by BO, in the same run
 * gbps = bytes / critical time (10^9 B/s). Every BO is checked byte-exact
 * after each resume. One JSON line per shape:
 *   {"bench":"suspend","shape":NAME,"bos":N,"bytes":B,"prepare_ms":..,
 *    "critical_ms":..,"resume_ms":..,"gbps":..,"memcpy_ms":..,
 *    "noprep_critical_ms":..,"critical_over_memcpy":..,"noprep_over_critical":..,
 *    "critical_cpu_ms":..,"memcpy_cpu_ms":..}
 * critical_cpu_ms: the CPU time the whole process (driver, and the in-process
 * reference device whose blitters are threads) spent in the best window;
 * memcpy_cpu_ms the same for the memcpy: both hold up on a busy machine,
 * where wall times do not.
 * Targets (issue 4): critical_over_memcpy <= 1.2; noprep_over_critical >= 3.
 *
 * Options: --total-mib S (default 128), --vram-mib V (default 512),
 * --reps R (default 3), --shape NxSIZE (e.g. 16x8M; repeatable, replaces
 * the default shapes 1x128M 16x8M 128x1M 2048x64K scaled to S), --phases
 * (each transition's phase breakdown to stderr).
 *
 * --incremental [--incr-vram-mib V,V..] [--dirty-pct P,P..]: instead of the
 * shapes, the incremental case (issue 20). For each V (default 256,1024,4096;
 * V MiB of pinned 64 MiB BOs on a device of the next power of two above
 * V + 64 MiB) and each P
 * (default 1,10,50): prepare, then dirty P % of the 64 KiB chunks, spread
 * evenly (one word written in each through ugpu_bo_write), and time the
 * window (best of R). full_critical_ms is the window when every chunk was
 * written after prepare (what each suspend cost before dirty tracking).
 * Every written word is read back after resume, and resume checks every
 * backup's checksums (a mismatch fails the run). One JSON line per (V, P):
 *   {"bench":"suspend","case":"incremental","vram_mib":V,"dirty_pct":P,
 *    "critical_ms":A,"full_critical_ms":B,"critical_cpu_ms":..,
 *    "full_critical_cpu_ms":..}
 * Target: A <= (P/100 + 0.05) x B. The CPU times are the least the
 * process spent in one such window (as critical_cpu_ms of the shapes).
 *
 * --spill [--spill-mib N] [--spill-dir D]: the spill case (issue 20): N MiB
 * (default 256) of pinned 64 MiB BOs whose backups all go to a file in D
 * (default /var/tmp; ugpu_pm_opts.backup_mem_limit below any BO): prepare
 * writes them, every chunk is then written again, and the window writes all
 * N MiB to the file (best of R). W = the bytes the window wrote / the time
 * its spill pass took (ugpu_pm_stats.spill_window_*, 10^9 B/s). In the same
 * run: dd writes N MiB sequentially to D (4 MiB blocks, O_DIRECT where D
 * takes it: what the file could do), and the same window with the backups
 * in memory. Every word is read back after each resume. One line:
 *   {"bench":"suspend","case":"spill","mib":N,"critical_ms":A,
 *    "file_write_gbps":W,"dd_gbps":D,"memory_critical_ms":M,"dd_direct":true}
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ugpu/bo.h>
#include <ugpu/pm.h>

#include "mm/bo.h"
#include "mm/vram.h"
#include "src/device.h"
#include "base/sysmem.h"
#include "tools/ugpu-bench/bench.h"
#include "tools/ugpu-sim/sim.h"

static double clock_ms(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static double now_ms(void)
{
	return clock_ms(CLOCK_MONOTONIC);
}

/* CPU time of the whole process: the driver's threads and the in-process
 * reference device's (its blitters are threads too). Unlike wall time it
 * does not grow when other programs take the CPUs. */
static double cpu_ms(void)
{
	return clock_ms(CLOCK_PROCESS_CPUTIME_ID);
}

struct shape {
	unsigned int n;
	uint64_t size;
};

/* --perf-ctl: perf's control FIFO and its acknowledgement FIFO, or -1. */
static int perf_ctl_fd = -1, perf_ack_fd = -1;

/* Tell perf "enable" or "disable" and wait for its ack (a no-op without
 * --perf-ctl). A failure stops the profiling, never the benchmark. */
static void perf_ctl(const char *cmd)
{
	char ack[16];

	if (perf_ctl_fd < 0)
		return;
	if (write(perf_ctl_fd, cmd, strlen(cmd)) != (ssize_t)strlen(cmd) ||
	    read(perf_ack_fd, ack, sizeof(ack)) <= 0) {
		fprintf(stderr, "bench suspend: --perf-ctl: perf stopped answering; profiling off\n");
		close(perf_ctl_fd);
		close(perf_ack_fd);
		perf_ctl_fd = perf_ack_fd = -1;
	}
}

/* --perf-ctl CTL:ACK: open perf's FIFOs (CTL for writing, ACK for reading). */
static int perf_open(const char *fifos)
{
	const char *colon = strchr(fifos, ':');
	char ctl[4096];

	if (!colon || colon == fifos || !colon[1] || (size_t)(colon - fifos) >= sizeof(ctl))
		return -EINVAL;
	memcpy(ctl, fifos, (size_t)(colon - fifos));
	ctl[colon - fifos] = '\0';
	/* Non-blocking: a FIFO nobody reads (perf not running) is ENXIO, not
	 * a wait without end; then blocking writes again (perf reads them). */
	perf_ctl_fd = open(ctl, O_WRONLY | O_CLOEXEC | O_NONBLOCK);
	if (perf_ctl_fd < 0 || fcntl(perf_ctl_fd, F_SETFL, 0) < 0) {
		int ret = -errno;

		if (perf_ctl_fd >= 0)
			close(perf_ctl_fd);
		perf_ctl_fd = -1;
		return ret;
	}
	perf_ack_fd = open(colon + 1, O_RDONLY | O_CLOEXEC);
	if (perf_ack_fd < 0) {
		int ret = -errno;

		close(perf_ctl_fd);
		perf_ctl_fd = -1;
		return ret;
	}
	return 0;
}

/* Suspend, timed in wall and CPU milliseconds; profiled with @profile. */
static int timed_suspend(struct ugpu_device *dev, bool profile, double *ms, double *cpu)
{
	double t = now_ms(), c0 = cpu_ms();
	int ret;

	if (profile)
		perf_ctl("enable\n");
	ret = ugpu_device_suspend(dev);
	if (profile)
		perf_ctl("disable\n");
	*ms = now_ms() - t;
	*cpu = cpu_ms() - c0;
	return ret;
}

static void fill(uint8_t *p, uint64_t len, uint32_t seed)
{
	uint64_t i, *q = (uint64_t *)p;

	for (i = 0; i < len / 8; i++)
		q[i] = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
}

static int check(const uint8_t *p, uint64_t len, uint32_t seed)
{
	const uint64_t *q = (const uint64_t *)p;
	uint64_t i;

	for (i = 0; i < len / 8; i++)
		if (q[i] != ((i + 1) * 0x9e3779b97f4a7c15ull ^ seed))
			return -1;
	return 0;
}

static double min_d(double a, double b)
{
	return a < b ? a : b;
}

/* --phases: the phase breakdown of the transition that just ran, to stderr. */
static void print_phases(struct ugpu_device *dev, const char *what, int from, int to)
{
	struct ugpu_pm_stats st = { .size = sizeof(st) };
	int p;

	if (ugpu_device_pm_stats(dev, &st))
		return;
	fprintf(stderr, "  %-8s", what);
	for (p = from; p <= to; p++)
		fprintf(stderr, " %s %.3f", ugpu_pm_phase_name((enum ugpu_pm_phase)p),
			st.phase_ns[p] / 1e6);
	fprintf(stderr, " (ms)\n");
}

static int run_shape(struct ugpu_device *dev, const struct shape *sh, int reps, bool phases)
{
	struct ugpu_bo **bo = calloc(sh->n, sizeof(*bo));
	uint8_t *buf = malloc(sh->size);
	uint64_t bytes = (uint64_t)sh->n * sh->size;
	double prep = 1e30, crit = 1e30, res = 1e30, noprep = 1e30, mc = 1e30, t, c0;
	double crit_cpu = 1e30, mc_cpu = 1e30;
	struct sysmem dst = { .fd = -1 };
	char name[64];
	unsigned int i;
	int r, ret = 0;

	if (!bo || !buf)
		return -ENOMEM;
	for (i = 0; i < sh->n; i++) {
		struct ugpu_bo_opts o = {
			.size = sizeof(o),
			.bytes = sh->size,
			.placements = { UGPU_PLACEMENT_VRAM },
			.flags = UGPU_BO_PINNED,
			.name = "bench",
		};

		ret = ugpu_bo_create(dev, &o, &bo[i]);
		if (ret) {
			fprintf(stderr, "bench suspend: BO %u of %" PRIu64 " bytes: %s\n", i, sh->size,
				ugpu_strerror(ret));
			goto out;
		}
		fill(buf, sh->size, i);
		ugpu_bo_write(bo[i], 0, buf, sh->size);
	}

	/* memcpy baseline: the same bytes from the VRAM BAR into prefaulted
	 * system memory, BO by BO. */
	ret = sysmem_create(NULL, bytes, "bench-memcpy", &dst);
	if (ret)
		goto out;
	memset(dst.vaddr, 1, dst.size);
	for (r = 0; r < reps; r++) {
		t = now_ms();
		c0 = cpu_ms();
		for (i = 0; i < sh->n; i++) {
			struct buddy_block *b;
			uint64_t off = 0;

			buddy_list_for_each(b, bo[i]->vram) {
				uint64_t len = vram_block_size(b);

				memcpy((char *)dst.vaddr + (uint64_t)i * sh->size + off,
				       (char *)dev->vram + buddy_block_offset(b), len);
				off += len;
			}
		}
		mc = min_d(mc, now_ms() - t);
		mc_cpu = min_d(mc_cpu, cpu_ms() - c0);
	}

	for (r = 0; r < reps * 2; r++) {
		bool with_prep = !(r & 1);

		if (with_prep) {
			t = now_ms();
			ret = ugpu_device_suspend_prepare(dev);
			if (ret)
				goto out;
			prep = min_d(prep, now_ms() - t);
			if (phases)
				print_phases(dev, "prepare", UGPU_PM_PHASE_PREPARE_EVICT,
					     UGPU_PM_PHASE_PREPARE_BACKUP);
			/* Every chunk dirty: the window copies every byte (the
			 * incremental case measures less). */
			for (i = 0; i < sh->n; i++) {
				fill(buf, sh->size, i);
				ugpu_bo_write(bo[i], 0, buf, sh->size);
			}
		}
		ret = timed_suspend(dev, with_prep, &t, &c0);
		if (ret)
			goto out;
		if (with_prep)
			crit = min_d(crit, t);
		if (with_prep)
			crit_cpu = min_d(crit_cpu, c0);
		else
			noprep = min_d(noprep, t);
		if (phases)
			print_phases(dev, with_prep ? "suspend" : "noprep", UGPU_PM_PHASE_SUSPEND_ALLOC,
				     UGPU_PM_PHASE_SUSPEND_POWER);
		t = now_ms();
		ret = ugpu_device_resume(dev);
		if (ret)
			goto out;
		res = min_d(res, now_ms() - t);
		if (phases)
			print_phases(dev, "resume", UGPU_PM_PHASE_RESUME_POWER,
				     UGPU_PM_PHASE_RESUME_UNPREPARE);
		for (i = 0; i < sh->n; i++) {
			ugpu_bo_read(bo[i], 0, buf, sh->size);
			if (check(buf, sh->size, i)) {
				fprintf(stderr, "bench suspend: BO %u lost bytes over suspend\n", i);
				ret = -EIO;
				goto out;
			}
		}
	}
	if (sh->size >= (1u << 20))
		snprintf(name, sizeof(name), "%ux%" PRIu64 "MiB", sh->n, sh->size >> 20);
	else
		snprintf(name, sizeof(name), "%ux%" PRIu64 "KiB", sh->n, sh->size >> 10);
	printf("{\"bench\":\"suspend\",\"shape\":\"%s\",\"bos\":%u,\"bytes\":%" PRIu64
	       ",\"prepare_ms\":%.3f,\"critical_ms\":%.3f,\"resume_ms\":%.3f,\"gbps\":%.2f"
	       ",\"memcpy_ms\":%.3f,\"noprep_critical_ms\":%.3f,\"critical_over_memcpy\":%.2f"
	       ",\"noprep_over_critical\":%.2f,\"critical_cpu_ms\":%.3f,\"memcpy_cpu_ms\":%.3f}\n",
	       name, sh->n, bytes, prep, crit, res, (double)bytes / (crit * 1e6), mc, noprep,
	       crit / mc, noprep / crit, crit_cpu, mc_cpu);
	fflush(stdout);
out:
	sysmem_destroy(&dst);
	for (i = 0; i < sh->n; i++)
		ugpu_bo_put(bo[i]);
	free(bo);
	free(buf);
	return ret;
}

/* ---- --incremental -------------------------------------------------------- */

#define INCR_BO (64ull << 20)
#define INCR_CHUNK (64ull << 10)

/* The word written into chunk @c of BO @i in round @round. */
static uint64_t incr_word(unsigned int i, uint64_t c, unsigned int round)
{
	return ((uint64_t)i << 48 | c << 8 | round) * 0x9e3779b97f4a7c15ull;
}

/* Is chunk @c among the @pct % dirtied (spread evenly)? 100: all. */
static bool incr_dirty(uint64_t c, unsigned int pct)
{
	return (c * pct) % 100 < pct;
}

/* Dirty @pct % of the chunks of every BO (round @round), or check them. */
static int incr_touch(struct ugpu_bo **bo, unsigned int n, unsigned int pct, unsigned int round,
		      bool check)
{
	uint64_t c, w;
	unsigned int i;
	int ret;

	for (i = 0; i < n; i++) {
		for (c = 0; c < INCR_BO / INCR_CHUNK; c++) {
			if (!incr_dirty(c, pct))
				continue;
			if (!check) {
				w = incr_word(i, c, round);
				ret = ugpu_bo_write(bo[i], c * INCR_CHUNK + 8 * (c % 64), &w, 8);
			} else {
				ret = ugpu_bo_read(bo[i], c * INCR_CHUNK + 8 * (c % 64), &w, 8);
				if (!ret && w != incr_word(i, c, round))
					ret = -EIO;
			}
			if (ret)
				return ret;
		}
	}
	return 0;
}

/* One prepare, @pct % dirtied, suspend (the best window so far in *@ms,
 * the least CPU time a window took so far in *@cpu), resume, check. */
static int incr_cycle(struct ugpu_device *dev, struct ugpu_bo **bo, unsigned int n,
		      unsigned int pct, unsigned int round, bool phases, double *ms, double *cpu)
{
	double t, c;
	int ret;

	ret = ugpu_device_suspend_prepare(dev);
	if (ret)
		return ret;
	ret = incr_touch(bo, n, pct, round, false);
	if (ret) {
		ugpu_device_suspend_cancel(dev);
		return ret;
	}
	ret = timed_suspend(dev, true, &t, &c);
	if (ret) {
		ugpu_device_suspend_cancel(dev);
		return ret;
	}
	*ms = min_d(*ms, t);
	*cpu = min_d(*cpu, c);
	if (phases) {
		char what[16];

		snprintf(what, sizeof(what), "%u%%", pct);
		print_phases(dev, what, UGPU_PM_PHASE_SUSPEND_ALLOC, UGPU_PM_PHASE_SUSPEND_POWER);
	}
	ret = ugpu_device_resume(dev); /* -EBADMSG: a backup failed its check */
	if (ret == -EIO || ret == -ETIMEDOUT) {
		/* The device did not wake (on a loaded machine the reference
		 * device's power-up can miss its 5 s): state SUSPENDED, every
		 * backup kept; once more, as the logind notifier does. */
		fprintf(stderr, "bench suspend: resume: %s; once more\n", ugpu_strerror(ret));
		ret = ugpu_device_resume(dev);
	}
	if (!ret)
		ret = incr_touch(bo, n, pct, round, true);
	if (ret == -EIO)
		fprintf(stderr, "bench suspend: a word written before the suspend was lost\n");
	return ret;
}

/* A reference device with @vram_mib MiB of pinned 64 MiB BOs (*@bo, *@n of
 * them) and room for the kernel BOs. Undone by incr_down(), also on error. */
static int incr_up(struct ugpu_context *ctx, uint64_t vram_mib, struct sim **sim,
		   struct ugpu_device **dev, struct ugpu_bo ***bo, unsigned int *n)
{
	struct sim_opts so;
	char uri[256];
	unsigned int i;
	int ret;

	*n = (unsigned int)((vram_mib << 20) / INCR_BO);
	sim_opts_init(&so);
	/* A power of two (the device's rule) with room for the kernel BOs. */
	so.vram_size = 1ull << 20;
	while (so.vram_size < (vram_mib + 64) << 20)
		so.vram_size <<= 1;
	ret = sim_start(&so, sim);
	if (ret)
		return ret;
	snprintf(uri, sizeof(uri), "vfio-user:%s", sim_socket_path(*sim, 0));
	ret = ugpu_device_open(ctx, uri, dev);
	*bo = calloc(*n ? *n : 1, sizeof(**bo));
	if (!ret && !*bo)
		ret = -ENOMEM;
	for (i = 0; i < *n && !ret; i++) {
		struct ugpu_bo_opts o = {
			.size = sizeof(o),
			.bytes = INCR_BO,
			.placements = { UGPU_PLACEMENT_VRAM },
			.flags = UGPU_BO_PINNED,
			.name = "bench-incr",
		};

		ret = ugpu_bo_create(*dev, &o, &(*bo)[i]);
	}
	return ret;
}

static void incr_down(struct sim *sim, struct ugpu_device *dev, struct ugpu_bo **bo, unsigned int n)
{
	unsigned int i;

	for (i = 0; bo && i < n; i++)
		ugpu_bo_put(bo[i]);
	free(bo);
	ugpu_device_close(dev);
	sim_stop(sim);
}

static int run_incremental(struct ugpu_context *ctx, uint64_t vram_mib, const unsigned int *pcts,
			   unsigned int npct, int reps, bool phases)
{
	unsigned int n, k, round = 0;
	struct ugpu_device *dev = NULL;
	struct ugpu_bo **bo = NULL;
	struct sim *sim = NULL;
	double full = 1e30, full_cpu = 1e30, a, a_cpu;
	int r, ret;

	ret = incr_up(ctx, vram_mib, &sim, &dev, &bo, &n);
	for (r = 0; r < reps && !ret; r++)
		ret = incr_cycle(dev, bo, n, 100, ++round, phases, &full, &full_cpu);
	for (k = 0; k < npct && !ret; k++) {
		a = 1e30;
		a_cpu = 1e30;
		for (r = 0; r < reps && !ret; r++)
			ret = incr_cycle(dev, bo, n, pcts[k], ++round, phases, &a, &a_cpu);
		if (ret)
			break;
		printf("{\"bench\":\"suspend\",\"case\":\"incremental\",\"vram_mib\":%" PRIu64
		       ",\"dirty_pct\":%u,\"critical_ms\":%.3f,\"full_critical_ms\":%.3f"
		       ",\"critical_cpu_ms\":%.3f,\"full_critical_cpu_ms\":%.3f}\n",
		       vram_mib, pcts[k], a, full, a_cpu, full_cpu);
		fflush(stdout);
		fprintf(stderr, "  %" PRIu64 " MiB, %u %% dirty: %.3f ms against a target of %.3f ms: %s\n",
			vram_mib, pcts[k], a, (pcts[k] / 100.0 + 0.05) * full,
			a <= (pcts[k] / 100.0 + 0.05) * full ? "met" : "missed");
	}
	if (ret)
		fprintf(stderr, "bench suspend: incremental, %" PRIu64 " MiB: %s\n", vram_mib,
			ugpu_strerror(ret));
	incr_down(sim, dev, bo, n);
	return ret;
}

/* ---- --spill -------------------------------------------------------------- */

/* dd writing @mib MiB of zeros to a file in @dir, 4 MiB blocks, O_DIRECT
 * (*@direct) unless @dir refuses it. Returns 10^9 B/s, or 0 when dd failed. */
static double dd_gbps(const char *dir, uint64_t mib, bool *direct)
{
	char of[4200], cnt[32];
	double t = 0;
	int pass, st;

	snprintf(of, sizeof(of), "of=%s/ugpu-bench-dd.%d", dir, (int)getpid());
	snprintf(cnt, sizeof(cnt), "count=%" PRIu64, mib / 4);
	for (pass = 0; pass < 2; pass++) {
		pid_t pid;

		*direct = pass == 0;
		t = now_ms();
		pid = fork();
		if (pid == 0) {
			freopen("/dev/null", "w", stderr);
			execlp("dd", "dd", "if=/dev/zero", of, "bs=4M", cnt,
			       *direct ? "oflag=direct" : "conv=fdatasync", (char *)NULL);
			_exit(127);
		}
		if (pid < 0 || waitpid(pid, &st, 0) < 0)
			return 0;
		t = now_ms() - t;
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
			break;
		t = 0;
	}
	unlink(of + 3);
	return t > 0 ? (double)(mib << 20) / (t * 1e6) : 0;
}

static int run_spill(struct ugpu_context *ctx, uint64_t mib, const char *dir, int reps)
{
	struct ugpu_pm_opts po = { .size = sizeof(po), .backup_mem_limit = 1, .spill_dir = dir };
	struct ugpu_pm_stats st = { .size = sizeof(st) };
	unsigned int n, round = 0;
	struct ugpu_device *dev = NULL;
	struct ugpu_bo **bo = NULL;
	struct sim *sim = NULL;
	double crit = 1e30, mem = 1e30, w = 0, dd = 0, t, cpu = 1e30;
	bool dd_direct = false;
	int r, ret;

	ret = incr_up(ctx, mib, &sim, &dev, &bo, &n);
	for (r = 0; r < reps && !ret; r++) {
		/* the window with the backups in memory: the reference */
		ret = ugpu_device_pm_set_opts(dev, NULL);
		if (!ret)
			ret = incr_cycle(dev, bo, n, 100, ++round, false, &mem, &cpu);
		if (!ret)
			ret = ugpu_device_pm_set_opts(dev, &po);
		t = 1e30;
		if (!ret)
			ret = incr_cycle(dev, bo, n, 100, ++round, false, &t, &cpu);
		if (!ret)
			ret = ugpu_device_pm_stats(dev, &st);
		if (ret)
			break;
		crit = min_d(crit, t);
		if (st.spill_window_bytes != mib << 20 || st.spilled_bos != n) {
			fprintf(stderr, "bench suspend: spill: the window wrote %" PRIu64 " bytes of %u backups, not %" PRIu64 " of %u\n",
				st.spill_window_bytes, (unsigned int)st.spilled_bos, mib << 20, n);
			ret = -EIO;
			break;
		}
		if (st.spill_window_ns && (double)st.spill_window_bytes / st.spill_window_ns > w)
			w = (double)st.spill_window_bytes / st.spill_window_ns;
		/* the file's own speed, between the cycles */
		t = dd_gbps(dir, mib, &dd_direct);
		dd = t > dd ? t : dd;
	}
	if (!ret) {
		printf("{\"bench\":\"suspend\",\"case\":\"spill\",\"mib\":%" PRIu64
		       ",\"critical_ms\":%.3f,\"file_write_gbps\":%.2f,\"dd_gbps\":%.2f"
		       ",\"memory_critical_ms\":%.3f,\"dd_direct\":%s}\n",
		       mib, crit, w, dd, mem, dd_direct ? "true" : "false");
		fflush(stdout);
		fprintf(stderr, "  spill of %" PRIu64 " MiB to %s: the window writes at %.2f GB/s, dd %s at %.2f GB/s (%.0f %%); window %.3f ms, %.3f ms with the backups in memory\n",
			mib, dir, w, dd_direct ? "with O_DIRECT" : "through the page cache", dd,
			dd > 0 ? 100 * w / dd : 0, crit, mem);
	} else {
		fprintf(stderr, "bench suspend: spill, %" PRIu64 " MiB to %s: %s\n", mib, dir,
			ugpu_strerror(ret));
	}
	incr_down(sim, dev, bo, n);
	return ret;
}

/* A comma-separated list of numbers ("1,10,50"), as --incr-vram-mib and
 * --dirty-pct take it; @ok says what each may be. */
struct num_list {
	uint64_t v[8];
	unsigned int n;
	bool (*ok)(uint64_t v);
};

static int parse_list(const char *val, void *dst)
{
	struct num_list *l = dst;
	char item[24];
	unsigned int n = 0;

	while (n < 8) {
		size_t len = strcspn(val, ",");

		if (!len || len >= sizeof(item))
			return -EINVAL;
		memcpy(item, val, len);
		item[len] = '\0';
		if (cli_strtou64(item, &l->v[n]) || !l->ok(l->v[n]))
			return -EINVAL;
		n++;
		val += len;
		if (!*val)
			break;
		val++;
	}
	if (*val)
		return -EINVAL; /* more than 8 */
	l->n = n;
	return 0;
}

/* whole 64 MiB BOs */
static bool vram_mib_ok(uint64_t v)
{
	return v && v <= (1u << 20) && !(v % (INCR_BO >> 20));
}

static bool pct_ok(uint64_t v)
{
	return v >= 1 && v <= 100;
}

struct shapes {
	struct shape v[16];
	unsigned int n;
};

/* --shape NxSIZE: N BOs of SIZE bytes (K, M, G suffixes), repeatable. */
static int parse_shape(const char *val, void *dst)
{
	struct shapes *s = dst;
	char num[24];
	const char *x = strchr(val, 'x');
	uint64_t n, size;

	if (!x || s->n >= 16 || (size_t)(x - val) >= sizeof(num))
		return -EINVAL;
	memcpy(num, val, (size_t)(x - val));
	num[x - val] = '\0';
	if (cli_strtou64(num, &n) || !n || n > UINT32_MAX || cli_strtosize(x + 1, 1, &size) ||
	    size < 4096)
		return -EINVAL;
	s->v[s->n].n = (unsigned int)n;
	s->v[s->n].size = size;
	s->n++;
	return 0;
}

int bench_suspend(int argc, char **argv)
{
	struct ugpu_context_opts copts = { .size = sizeof(copts), .log_level = UGPU_LOG_ERROR };
	struct shapes sh = { .n = 0 };
	struct shape *shapes = sh.v;
	unsigned int nshapes, i;
	uint64_t total_mib = 128, vram_mib = 512, reps_opt = 3, total, vram;
	bool phases = false, incremental = false, spill = false;
	uint64_t spill_mib = 256;
	const char *spill_dir = "/var/tmp", *perf_fifos = NULL;
	struct num_list vram_list = { .v = { 256, 1024, 4096 }, .n = 3, .ok = vram_mib_ok };
	struct num_list pcts_list = { .v = { 1, 10, 50 }, .n = 3, .ok = pct_ok };
	const struct cli_opt opts[] = {
		{ .name = "total-mib", .kind = CLI_UINT, .dst = &total_mib, .arg = "S",
		  .help = "MiB of pinned BOs", .min = 1, .max = 65536 },
		{ .name = "vram-mib", .kind = CLI_UINT, .dst = &vram_mib, .arg = "V",
		  .help = "VRAM of the reference device, MiB (at least S + 4)", .min = 16,
		  .max = 1u << 20 },
		{ .name = "reps", .kind = CLI_UINT, .dst = &reps_opt, .arg = "R",
		  .help = "cycles per shape", .min = 1, .max = 1000 },
		{ .name = "shape", .kind = CLI_CALL, .dst = &sh, .arg = "NxSIZE", .call = parse_shape,
		  .help = "N BOs of SIZE each; repeatable, replaces the default shapes",
		  .range = "NxSIZE with N >= 1, SIZE >= 4K (e.g. 16x8M), at most 16 of them" },
		{ .name = "phases", .kind = CLI_FLAG, .dst = &phases,
		  .help = "each transition's phase breakdown to stderr" },
		{ .name = "incremental", .kind = CLI_FLAG, .dst = &incremental,
		  .help = "the incremental case instead of the shapes (issue 20)" },
		{ .name = "incr-vram-mib", .kind = CLI_CALL, .dst = &vram_list, .arg = "V,V..",
		  .call = parse_list,
		  .help = "--incremental: MiB of pinned 64 MiB BOs, per run; default 256,1024,4096",
		  .range = "up to 8 multiples of 64 in 64..1048576" },
		{ .name = "dirty-pct", .kind = CLI_CALL, .dst = &pcts_list, .arg = "P,P..",
		  .call = parse_list,
		  .help = "--incremental: % of the 64 KiB chunks written after prepare; default 1,10,50",
		  .range = "up to 8 numbers in 1..100" },
		{ .name = "spill", .kind = CLI_FLAG, .dst = &spill,
		  .help = "the spill case instead of the shapes (issue 20)" },
		{ .name = "spill-mib", .kind = CLI_UINT, .dst = &spill_mib, .arg = "N",
		  .help = "--spill: MiB of pinned 64 MiB BOs spilled; default 256", .min = 64,
		  .max = 1u << 20 },
		{ .name = "spill-dir", .kind = CLI_STR, .dst = &spill_dir, .arg = "DIR",
		  .help = "--spill: where the spill file goes; default /var/tmp" },
		{ .name = "perf-ctl", .kind = CLI_STR, .dst = &perf_fifos, .arg = "CTL:ACK",
		  .help = "profile only the critical windows: perf record --control=fifo:CTL,ACK --delay=-1" },
		{ 0 },
	};
	const struct cli_cmd cli = {
		.prog = "ugpu-bench suspend", .args = "",
		.summary = "host suspend/resume of pinned BOs: prepare, critical window, resume vs memcpy",
		.about = "Default shapes: 1xS, S/8M x 8M, S/1M x 1M, S/64K x 64K.", .opts = opts };
	struct ugpu_context *ctx = NULL;
	struct ugpu_device *dev = NULL;
	struct sim *sim = NULL;
	struct sim_opts so;
	char uri[256];
	int reps, ret = cli_parse(&cli, argc, argv, NULL, NULL);

	if (ret != CLI_CONTINUE)
		return ret;
	if (perf_fifos) {
		ret = perf_open(perf_fifos);
		if (ret)
			return cli_usage_error(cli.prog, "--perf-ctl %s: expected CTL:ACK, two FIFOs perf opened: %s",
					       perf_fifos, ugpu_strerror(ret));
	}
	total = total_mib << 20;
	vram = vram_mib << 20;
	reps = (int)reps_opt;
	nshapes = sh.n;
	if (spill) {
		if (spill_mib % (INCR_BO >> 20))
			return cli_usage_error(cli.prog, "--spill-mib %" PRIu64 ": expected a multiple of 64",
					       spill_mib);
		ret = ugpu_context_create(&copts, &ctx);
		if (!ret)
			ret = run_spill(ctx, spill_mib, spill_dir, reps);
		ugpu_context_destroy(ctx);
		return ret ? 1 : 0;
	}
	if (incremental) {
		unsigned int pcts[8];

		for (i = 0; i < pcts_list.n; i++)
			pcts[i] = (unsigned int)pcts_list.v[i];
		ret = ugpu_context_create(&copts, &ctx);
		for (i = 0; i < vram_list.n && !ret; i++)
			ret = run_incremental(ctx, vram_list.v[i], pcts, pcts_list.n, reps, phases);
		ugpu_context_destroy(ctx);
		return ret ? 1 : 0;
	}
	if (vram < total + (4u << 20))
		return cli_usage_error(cli.prog, "--vram-mib %" PRIu64 " is too small for --total-mib %" PRIu64
				       ": expected at least %" PRIu64, vram_mib, total_mib, total_mib + 4);
	ret = 0;
	if (!nshapes) {
		static const uint64_t sizes[] = { 0, 8ull << 20, 1ull << 20, 64ull << 10 };

		for (i = 0; i < 4; i++) {
			uint64_t sz = sizes[i] ? sizes[i] : total;

			shapes[nshapes].size = sz;
			shapes[nshapes].n = (unsigned int)(total / sz);
			nshapes++;
		}
	}

	sim_opts_init(&so);
	so.vram_size = vram;
	ret = sim_start(&so, &sim);
	if (ret)
		goto fail;
	ret = ugpu_context_create(&copts, &ctx);
	if (ret)
		goto fail;
	snprintf(uri, sizeof(uri), "vfio-user:%s", sim_socket_path(sim, 0));
	ret = ugpu_device_open(ctx, uri, &dev);
	if (ret)
		goto fail;
	for (i = 0; i < nshapes && !ret; i++)
		ret = run_shape(dev, &shapes[i], reps, phases);
fail:
	if (ret)
		fprintf(stderr, "bench suspend: %s\n", ugpu_strerror(ret));
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	sim_stop(sim);
	return ret ? 1 : 0;
}
