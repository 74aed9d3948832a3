/* SPDX-License-Identifier: MIT */
/*
 * ugpu-bench daemon: the cost of going through ugpud (docs/daemon.md).
 *
 *  bo_cycle  BO create + CPU map + destroy through the daemon, per cycle,
 *            against the raw SOCK_SEQPACKET round trip of a record of the
 *            same size to an echo process, measured in the same run with
 *            the same CPU placement (client on one CPU, daemon and echo
 *            server on another when there are two). Target: p50 <= 3x raw.
 *            local_p50_us: the same cycle on a device this process owns
 *            (in-process reference device), what the driver's own work
 *            costs without the daemon.
 *  svm_gpu_fault, svm_cpu_fault  shared virtual memory of a client
 *            (docs/daemon.md, "SVM for clients"): a kernel reading 4 KiB of
 *            a 64 KiB range of its process's memory the GPU never saw (one
 *            GPU fault: the range moves to VRAM), and then a CPU store to
 *            that range (one CPU fault: it comes back), through the daemon
 *            and (local_*) in this process on a device it owns;
 *            kernel_p50_us: the same kernel once the range is there (no
 *            fault), what the fault's figure includes besides the fault.
 *  scale     N client processes (1, 4, 16, 64) each writing 4 KiB to its
 *            own BO as fast as the daemon answers, for --seconds: the
 *            daemon's requests per second in total.
 *
 * It starts the ugpud binary next to itself on the embedded reference
 * device and a temporary socket (or uses --socket PATH of a running one).
 */

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ugpu/bo.h>
#include <ugpu/device.h>
#include <ugpu/rpm.h>
#include <ugpu/svm.h>
#include <ugpu/vm.h>

#include "base/sock.h"
#include "src/ugpud_proto.h"
#include "tools/ugpu-bench/bench.h"
#include "tools/ugpu-sim/sim.h"

#define RAW_LEN (sizeof(struct ugpud_hdr) + sizeof(struct ugpud_bo_create_req))

static int pin(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return 0;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set) ? -errno : 0;
}

static uint64_t pct(uint64_t *v, size_t n, unsigned p)
{
	qsort(v, n, sizeof(*v), bench_cmp_u64);
	return v[(n - 1) * p / 100];
}

/* Start ugpud on the server CPU; wait (bounded) until it accepts. */
static pid_t daemon_start(const char *sock, int cpu)
{
	char exe[PATH_MAX], bin[PATH_MAX + 8];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	pid_t pid;

	if (n <= 0)
		return -1;
	exe[n] = '\0';
	*strrchr(exe, '/') = '\0';
	snprintf(bin, sizeof(bin), "%s/ugpud", exe);
	pid = fork();
	if (pid < 0)
		return -1;
	if (!pid) {
		pin(cpu);
		execl(bin, bin, "--device", "sim:256M", "--socket", sock, "--max-clients", "128",
		      "--max-bos", "65535", (char *)NULL);
		fprintf(stderr, "ugpu-bench daemon: cannot run %s: %s\n", bin, strerror(errno));
		_exit(127);
	}
	if (sock_wait_accepting(sock, 10000))
		return pid;
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return -1;
}

/* The baseline: one record to an echo process and back, @n times. */
static int raw_round_trip(size_t n, int cpu_server, double *p50_us)
{
	unsigned char buf[RAW_LEN] = { 0 };
	uint64_t *t = calloc(n, sizeof(*t));
	int sv[2], ret = 0;
	pid_t pid;

	if (!t || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv)) {
		free(t);
		return -ENOMEM;
	}
	pid = fork();
	if (!pid) {
		struct sock_wait w = { .deadline_ns = UINT64_MAX, .wake_fd = -1 };

		close(sv[0]);
		pin(cpu_server);
		for (;;) {
			struct sock_fds in = { .max = 0 };
			struct iovec iov = { buf, sizeof(buf) };
			size_t len = 0;

			if (sock_recv_packet(sv[1], buf, sizeof(buf), &len, &in, &w))
				_exit(0);
			iov.iov_len = len;
			if (sock_send(sv[1], &iov, 1, NULL, 0, UINT64_MAX, NULL))
				_exit(0);
		}
	}
	close(sv[1]);
	for (size_t i = 0; i < n && !ret; i++) {
		struct sock_wait w = { .deadline_ns = bench_ns() + 5000000000ull, .wake_fd = -1 };
		struct sock_fds in = { .max = 0 };
		struct iovec iov = { buf, sizeof(buf) };
		uint64_t t0 = bench_ns();
		size_t len = 0;

		ret = sock_send(sv[0], &iov, 1, NULL, 0, w.deadline_ns, NULL);
		if (!ret)
			ret = sock_recv_packet(sv[0], buf, sizeof(buf), &len, &in, &w);
		t[i] = bench_ns() - t0;
	}
	close(sv[0]);
	waitpid(pid, NULL, 0);
	if (!ret)
		*p50_us = (double)pct(t, n, 50) / 1000.0;
	free(t);
	return ret;
}

/* The same cycle on @uri: a "ugpud:" URI, or the device itself (the local
 * baseline: what the cycle costs a program that owns the device). */
/* A cycle's p50 and p99, and each step's p50 (create; map and first touch;
 * the put that destroys). */
struct cycle_times {
	double p50, p99, create_p50, map_p50, put_p50;
};

static int bo_cycle(const char *uri, size_t n, struct cycle_times *ct)
{
	struct ugpu_context *ctx;
	struct ugpu_device *dev;
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = 64 << 10,
				  .placements = { UGPU_PLACEMENT_SYSTEM, UGPU_PLACEMENT_VRAM } };
	uint64_t *t = calloc(4 * n, sizeof(*t)), *tc = t + n, *tm = t + 2 * n, *tp = t + 3 * n;
	int ret;

	if (!t)
		return -ENOMEM;
	ret = ugpu_context_create(NULL, &ctx);
	if (ret)
		goto out_free;
	ret = ugpu_device_open(ctx, uri, &dev);
	if (ret)
		goto out_ctx;
	for (size_t i = 0; i < n && !ret; i++) {
		uint64_t t0 = bench_ns(), t1, t2;
		struct ugpu_bo *bo;
		void *p;

		ret = ugpu_bo_create(dev, &o, &bo);
		if (ret)
			break;
		t1 = bench_ns();
		ret = ugpu_bo_map(bo, &p);
		if (!ret)
			((volatile char *)p)[0] = 1; /* the mapping is real */
		t2 = bench_ns();
		ugpu_bo_put(bo);
		t[i] = bench_ns() - t0;
		tc[i] = t1 - t0;
		tm[i] = t2 - t1;
		tp[i] = t0 + t[i] - t2;
	}
	if (!ret) {
		ct->p50 = (double)pct(t, n, 50) / 1000.0;
		ct->p99 = (double)pct(t, n, 99) / 1000.0;
		ct->create_p50 = (double)pct(tc, n, 50) / 1000.0;
		ct->map_p50 = (double)pct(tm, n, 50) / 1000.0;
		ct->put_p50 = (double)pct(tp, n, 50) / 1000.0;
	}
	ugpu_device_close(dev);
out_ctx:
	ugpu_context_destroy(ctx);
out_free:
	free(t);
	return ret;
}

/* The SVM figures of one device (@uri), from @n ranges of 64 KiB. */
struct svm_costs {
	double gpu_p50, gpu_p99, kernel_p50, cpu_p50, cpu_p99;
	long long in_place; /* ranges the policy used in place (no move, no CPU fault); -1: unknown */
};

#define SVM_RANGE (64u << 10)

static int svm_read_4k(struct ugpu_queue *q, uint64_t va, uint64_t *ns)
{
	struct ugpu_kernel k = { .size = sizeof(k), .op = UGPU_KERNEL_READ_SUM, .va = va,
				 .bytes = 4096 };
	struct ugpu_kernel_result r = { .size = sizeof(r) };
	uint64_t fence, t0 = bench_ns();
	int ret = ugpu_queue_submit(q, &k, &fence);

	if (!ret)
		ret = ugpu_fence_wait(q, fence, 10000, &r);
	*ns = bench_ns() - t0;
	return ret ? ret : r.status;
}

/* Each range is a 64 KiB mapping of its own (PROT_NONE gaps between them
 * keep the kernel from merging them: a range never crosses a mapping, so
 * each fault moves 64 KiB). */
static int svm_costs(const char *uri, size_t n, struct svm_costs *out)
{
	struct ugpu_vm_opts vo = { .size = sizeof(vo), .flags = UGPU_VM_MIRROR,
				   .mirror_start = 0x10000, .mirror_size = (1ull << 47) - 0x20000 };
	uint64_t *g = calloc(n, sizeof(*g)), *k = calloc(n, sizeof(*k)), *c = calloc(n, sizeof(*c));
	size_t span = (2 * n + 1) * SVM_RANGE;
	struct ugpu_context *ctx = NULL;
	struct ugpu_device *dev = NULL;
	struct ugpu_vm *vm = NULL;
	struct ugpu_queue *q = NULL;
	char *map = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	/* aligned to the range size: a range is aligned to its size, so an
	 * unaligned 64 KiB mapping would be served as 4 KiB ranges */
	char *base = (char *)(((uintptr_t)map + SVM_RANGE - 1) & ~(uintptr_t)(SVM_RANGE - 1));
	int ret = (!g || !k || !c || map == MAP_FAILED) ? -ENOMEM : 0;
	bool held = false;

	for (size_t i = 0; !ret && i < n; i++) {
		char *p = base + 2 * i * SVM_RANGE;

		if (mprotect(p, SVM_RANGE, PROT_READ | PROT_WRITE))
			ret = -errno;
		else
			memset(p, (int)i, SVM_RANGE); /* present pages, as a program's data */
	}
	if (!ret)
		ret = ugpu_context_create(NULL, &ctx);
	if (!ret)
		ret = ugpu_device_open(ctx, uri, &dev);
	if (!ret)
		ret = ugpu_vm_create(dev, &vo, &vm);
	if (!ret)
		ret = ugpu_queue_create(vm, NULL, &q);
	/* held awake: an idle device's ranges would go home by themselves
	 * before the CPU touch (through ugpud: -EOPNOTSUPP, the daemon's
	 * ranges stay where they are anyway) */
	held = !ret && !ugpu_device_rpm_get(dev);
	/* a GPU fault, the same kernel without one, then a CPU fault (a range
	 * stays in VRAM a timeslice, 5 ms, before a CPU touch takes it) */
	for (size_t i = 0; !ret && i < n; i++) {
		char *p = base + 2 * i * SVM_RANGE;
		uint64_t t0;

		ret = svm_read_4k(q, (uintptr_t)p, &g[i]);
		if (!ret)
			ret = svm_read_4k(q, (uintptr_t)p, &k[i]);
		usleep(6000);
		t0 = bench_ns();
		((volatile char *)p)[100] = 1;
		c[i] = bench_ns() - t0;
	}
	if (!ret) {
		out->gpu_p50 = (double)pct(g, n, 50) / 1000.0;
		out->gpu_p99 = (double)pct(g, n, 99) / 1000.0;
		out->kernel_p50 = (double)pct(k, n, 50) / 1000.0;
		out->cpu_p50 = (double)pct(c, n, 50) / 1000.0;
		out->cpu_p99 = (double)pct(c, n, 99) / 1000.0;
	}
	{
		struct ugpu_svm_stats st = { .size = sizeof(st) };

		out->in_place = dev && !ugpu_device_svm_stats(dev, &st)
					? (long long)st.svm_in_place_count : -1;
	}
	if (held)
		ugpu_device_rpm_put(dev);
	if (q)
		ugpu_queue_destroy(q);
	if (vm)
		ugpu_vm_destroy(vm);
	if (dev)
		ugpu_device_close(dev);
	if (ctx)
		ugpu_context_destroy(ctx);
	if (map != MAP_FAILED)
		munmap(map, span);
	free(g);
	free(k);
	free(c);
	return ret;
}

/* One client of the scale case: 4 KiB writes to its own BO until @end_ns;
 * the count goes to @out_fd. */
static void scale_client(const char *uri, int go_fd, int out_fd)
{
	struct ugpu_context *ctx;
	struct ugpu_device *dev;
	struct ugpu_bo_opts o = { .size = sizeof(o), .bytes = 4096 };
	static char data[4096];
	struct ugpu_bo *bo;
	uint64_t ops = 0, secs_ns, end;
	char c;

	if (ugpu_context_create(NULL, &ctx) || ugpu_device_open(ctx, uri, &dev) ||
	    ugpu_bo_create(dev, &o, &bo))
		_exit(1);
	if (read(go_fd, &secs_ns, sizeof(secs_ns)) != sizeof(secs_ns))
		_exit(2);
	for (end = bench_ns() + secs_ns; bench_ns() < end; ops++)
		if (ugpu_bo_write(bo, 0, data, sizeof(data)))
			_exit(3);
	if (write(out_fd, &ops, sizeof(ops)) != sizeof(ops))
		_exit(4);
	(void)c;
	ugpu_bo_put(bo);
	ugpu_device_close(dev);
	ugpu_context_destroy(ctx);
	_exit(0);
}

static int scale(const char *uri, unsigned clients, double seconds, double *ops_per_s)
{
	int go[2], out[2], ret = 0;
	uint64_t secs_ns = (uint64_t)(seconds * 1e9), total = 0;
	pid_t *pids = calloc(clients, sizeof(*pids));

	if (!pids || pipe(go) || pipe(out)) {
		free(pids);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < clients; i++) {
		pids[i] = fork();
		if (!pids[i]) {
			close(go[1]);
			close(out[0]);
			scale_client(uri, go[0], out[1]);
		}
	}
	close(go[0]);
	close(out[1]);
	/* every client holds its BO before the clock starts: a connection
	 * set-up is not an op */
	usleep(200000 + clients * 20000u);
	for (unsigned i = 0; i < clients; i++)
		if (write(go[1], &secs_ns, sizeof(secs_ns)) != sizeof(secs_ns))
			ret = -EIO;
	for (unsigned i = 0; i < clients; i++) {
		uint64_t ops;

		if (read(out[0], &ops, sizeof(ops)) != sizeof(ops))
			ret = -EIO;
		else
			total += ops;
	}
	for (unsigned i = 0; i < clients; i++) {
		int st;

		waitpid(pids[i], &st, 0);
		if (!WIFEXITED(st) || WEXITSTATUS(st))
			ret = -EIO;
	}
	close(go[1]);
	close(out[0]);
	free(pids);
	*ops_per_s = (double)total / seconds;
	return ret;
}

int bench_daemon(int argc, char **argv)
{
	uint64_t n = 2000, seconds_ms = 1000;
	const char *sock = NULL;
	bool same_cpu = false;
	const struct cli_opt opts[] = {
		{ .name = "n", .kind = CLI_UINT, .dst = &n, .arg = "N",
		  .help = "bo_cycle: cycles (and raw round trips)", .min = 100, .max = 1000000 },
		{ .name = "ms", .kind = CLI_UINT, .dst = &seconds_ms, .arg = "MS",
		  .help = "scale: how long each client count runs", .min = 100, .max = 60000 },
		{ .name = "socket", .kind = CLI_STR, .dst = &sock, .arg = "PATH",
		  .help = "use the ugpud serving PATH instead of starting one (the CPU placement "
			  "is then only the client's)" },
		{ .name = "same-cpu", .kind = CLI_FLAG, .dst = &same_cpu,
		  .help = "client, daemon and echo server all on CPU 0 (default: the servers on "
			  "CPU 1 when there is one)" },
		{ 0 },
	};
	const struct cli_cmd cli = { .prog = "ugpu-bench daemon", .args = "",
				     .summary = "through ugpud: BO create+map+destroy vs a raw "
						"SOCK_SEQPACKET round trip; clients scaling",
				     .opts = opts };
	static const unsigned counts[] = { 1, 4, 16, 64 };
	char path[108], uri[128];
	int ret = cli_parse(&cli, argc, argv, NULL, NULL), cpu_server;
	struct cycle_times ct = { 0 }, lt = { 0 };
	double raw = 0;
	pid_t pid = 0;

	if (ret != CLI_CONTINUE)
		return ret;
	cpu_server = (!same_cpu && sysconf(_SC_NPROCESSORS_ONLN) > 1) ? 1 : 0;
	if (!sock) {
		snprintf(path, sizeof(path), "/tmp/ugpu-bench-daemon-%d.sock", (int)getpid());
		pid = daemon_start(path, cpu_server);
		if (pid < 0) {
			fprintf(stderr, "ugpu-bench daemon: ugpud did not start\n");
			return 1;
		}
		sock = path;
	}
	snprintf(uri, sizeof(uri), "ugpud:%s", sock);
	pin(0);
	ret = raw_round_trip(n, pid ? cpu_server : -1, &raw);
	if (!ret)
		ret = bo_cycle(uri, n, &ct);
	if (!ret) { /* the baseline of the driver's own work: a device in this process */
		struct sim_opts so;
		struct sim *sim;
		char luri[160];

		sim_opts_init(&so);
		ret = sim_start(&so, &sim);
		if (!ret) {
			snprintf(luri, sizeof(luri), "vfio-user:%s", sim_socket_path(sim, 0));
			ret = bo_cycle(luri, n, &lt);
			sim_stop(sim);
		}
	}
	if (!ret)
		printf("{\"bench\":\"daemon\",\"case\":\"bo_cycle\",\"n\":%llu,\"bo_bytes\":65536,"
		       "\"p50_us\":%.1f,\"p99_us\":%.1f,\"raw_p50_us\":%.1f,\"ratio\":%.2f,"
		       "\"local_p50_us\":%.1f,\"create_p50_us\":%.1f,\"map_p50_us\":%.1f,"
		       "\"put_p50_us\":%.1f,\"local_create_p50_us\":%.1f,\"local_map_p50_us\":%.1f,"
		       "\"local_put_p50_us\":%.1f,\"server_cpu\":%d}\n",
		       (unsigned long long)n, ct.p50, ct.p99, raw, ct.p50 / raw, lt.p50, ct.create_p50,
		       ct.map_p50, ct.put_p50, lt.create_p50, lt.map_p50, lt.put_p50, cpu_server);
	fflush(stdout);
	if (!ret) { /* shared virtual memory: a fault through the daemon vs in this process */
		struct svm_costs d = { 0 }, l = { 0 };
		size_t ns = n < 200 ? n : 200;
		struct sim_opts so;
		struct sim *sim;
		char luri[160];

		ret = svm_costs(uri, ns, &d);
		sim_opts_init(&so);
		if (!ret)
			ret = sim_start(&so, &sim);
		if (!ret) {
			snprintf(luri, sizeof(luri), "vfio-user:%s", sim_socket_path(sim, 0));
			ret = svm_costs(luri, ns, &l);
			sim_stop(sim);
		}
		if (!ret) {
			printf("{\"bench\":\"daemon\",\"case\":\"svm_gpu_fault\",\"n\":%zu,"
			       "\"range_bytes\":%u,\"p50_us\":%.1f,\"p99_us\":%.1f,"
			       "\"kernel_p50_us\":%.1f,\"local_p50_us\":%.1f,\"local_p99_us\":%.1f,"
			       "\"local_kernel_p50_us\":%.1f}\n",
			       ns, SVM_RANGE, d.gpu_p50, d.gpu_p99, d.kernel_p50, l.gpu_p50, l.gpu_p99,
			       l.kernel_p50);
			printf("{\"bench\":\"daemon\",\"case\":\"svm_cpu_fault\",\"n\":%zu,"
			       "\"range_bytes\":%u,\"p50_us\":%.1f,\"p99_us\":%.1f,"
			       "\"local_p50_us\":%.1f,\"local_p99_us\":%.1f,\"local_in_place\":%lld}\n",
			       ns, SVM_RANGE, d.cpu_p50, d.cpu_p99, l.cpu_p50, l.cpu_p99, l.in_place);
		}
		fflush(stdout);
	}
	/* the clients spread over the CPUs as the scheduler likes */
	{
		cpu_set_t all;

		CPU_ZERO(&all);
		for (long c = 0; c < sysconf(_SC_NPROCESSORS_ONLN) && c < CPU_SETSIZE; c++)
			CPU_SET(c, &all);
		sched_setaffinity(0, sizeof(all), &all);
	}
	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]) && !ret; i++) {
		double ops = 0;

		ret = scale(uri, counts[i], (double)seconds_ms / 1000.0, &ops);
		if (!ret)
			printf("{\"bench\":\"daemon\",\"case\":\"scale\",\"clients\":%u,"
			       "\"ops_per_s\":%.0f,\"op\":\"4 KiB write\"}\n",
			       counts[i], ops);
		fflush(stdout);
	}
	if (ret)
		fprintf(stderr, "ugpu-bench daemon: %s\n", strerror(-ret));
	if (pid > 0) {
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
	}
	return ret ? 1 : 0;
}
