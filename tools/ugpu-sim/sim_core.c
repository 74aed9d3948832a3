/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim: device creation and teardown, the in-process control API, and the
 * fabric (several devices in one process that reach each other's VRAM).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sim_internal.h"

uint64_t sim_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void sim_deadline(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

void sim_cond_init(pthread_cond_t *c)
{
	pthread_condattr_t a;

	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
}

int sim_thread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
	sigset_t pipe_set, old;
	int ret;

	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	ret = pthread_create(t, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return -ret;
}

void sim_opts_init(struct sim_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->size = sizeof(*opts);
	opts->vram_size = 256ull << 20;
	opts->devices = 1;
	opts->max_dma_maps = 65535;
	opts->req_interval_ms = 10000;
	opts->client_fd = -1;
	opts->exec_queues = 4;
	opts->version_minor = SIM_VERSION_MINOR;
}

struct sim_dev *fabric_peer(struct sim_dev *dev, uint32_t node)
{
	if (node >= dev->sim->ndev)
		return NULL;
	return dev->sim->devs[node];
}

bool fabric_is_slow(struct sim_dev *dev, uint32_t node)
{
	if (node >= SIM_MAX_DEVICES)
		return false;
	return (dev->sim->slow[dev->id] >> node) & 1u;
}

bool sim_dev_running(struct sim_dev *dev)
{
	return dev->power == SIM_POWER_D0 && !dev->removed && !dev->stop;
}

static void dev_free(struct sim_dev *dev)
{
	if (!dev)
		return;
	for (size_t i = 0; i < dev->nmaps; i++)
		if (dev->maps[i].host)
			munmap(dev->maps[i].host, dev->maps[i].size);
	free(dev->maps);
	for (unsigned i = 0; i < SIM_NUM_IRQS; i++)
		for (unsigned v = 0; v < SIM_MSIX_VECTORS; v++)
			if (dev->irq_fd[i][v] >= 0)
				close(dev->irq_fd[i][v]);
	if (dev->twin_fd >= 0)
		close(dev->twin_fd);
	if (dev->vram && dev->vram != MAP_FAILED)
		munmap(dev->vram, dev->vram_size);
	if (dev->vram_fd >= 0)
		close(dev->vram_fd);
	for (unsigned i = 0; i < SIM_NUM_CE; i++)
		pthread_cond_destroy(&dev->ce[i].cond);
	exec_fini(dev);
	pthread_cond_destroy(&dev->inband_cond);
	pthread_mutex_destroy(&dev->send_lock);
	pthread_mutex_destroy(&dev->twin_lock);
	pthread_mutex_destroy(&dev->lock);
	free(dev);
}

static int dev_create(struct sim *sim, unsigned id, struct sim_dev **out)
{
	struct sim_dev *dev;
	char name[32];
	int ret;

	dev = calloc(1, sizeof(*dev));
	if (!dev)
		return -ENOMEM;
	dev->sim = sim;
	dev->id = id;
	dev->vram_fd = -1;
	dev->listen_fd = -1;
	dev->wake_fd = -1;
	dev->client_fd = -1;
	dev->twin_fd = -1;
	for (unsigned i = 0; i < SIM_MAX_REFUSED; i++)
		dev->refused[i].fd = -1;
	pthread_mutex_init(&dev->lock, NULL);
	pthread_mutex_init(&dev->send_lock, NULL);
	pthread_mutex_init(&dev->twin_lock, NULL);
	sim_cond_init(&dev->inband_cond);
	for (unsigned i = 0; i < SIM_NUM_CE; i++) {
		dev->ce[i].dev = dev;
		dev->ce[i].idx = i;
		sim_cond_init(&dev->ce[i].cond);
	}
	for (unsigned i = 0; i < SIM_NUM_IRQS; i++)
		for (unsigned v = 0; v < SIM_MSIX_VECTORS; v++)
			dev->irq_fd[i][v] = -1;
	dev->max_dma_maps = sim->opts.max_dma_maps;
	dev->vram_size = sim->opts.vram_size;
	dev->next_msg_id = 0x8000; /* distinct from typical client ids, for logs */
	dev->nq = sim->opts.exec_queues;
	ret = exec_init(dev);
	if (ret)
		goto out_free;

	if (sim->ndev > 1 || sim->opts.devices > 1)
		ret = snprintf(dev->path, sizeof(dev->path), "%s.%u", sim->base_path, id);
	else
		ret = snprintf(dev->path, sizeof(dev->path), "%s", sim->base_path);
	if (ret < 0 || (size_t)ret >= sizeof(dev->path)) {
		fprintf(stderr, "ugpu-sim: socket path too long: %s\n", sim->base_path);
		ret = -ENAMETOOLONG;
		goto out_free;
	}

	snprintf(name, sizeof(name), "ugpu-sim-vram%u", id);
	dev->vram_fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (dev->vram_fd < 0) {
		ret = -errno;
		goto out_free;
	}
	/* Clients get this fd (GET_REGION_INFO) with write access: seal its
	 * size so none can truncate VRAM under the device (SIGBUS in every
	 * engine) or under another client's mapping; F_SEAL_SEAL keeps a client
	 * from adding seals that would refuse the next client's mapping. */
	if (ftruncate(dev->vram_fd, (off_t)dev->vram_size) < 0 ||
	    fcntl(dev->vram_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		ret = -errno;
		goto out_free;
	}
	dev->vram = mmap(NULL, dev->vram_size, PROT_READ | PROT_WRITE, MAP_SHARED, dev->vram_fd, 0);
	if (dev->vram == MAP_FAILED) {
		ret = -errno;
		dev->vram = NULL;
		goto out_free;
	}
	pci_init(dev);
	*out = dev;
	return 0;

out_free:
	dev_free(dev);
	return ret;
}

static void dev_stop_threads(struct sim_dev *dev)
{
	pthread_mutex_lock(&dev->lock);
	dev->stop = true;
	for (unsigned i = 0; i < SIM_NUM_CE; i++)
		pthread_cond_broadcast(&dev->ce[i].cond);
	exec_kick(dev);
	pthread_cond_broadcast(&dev->inband_cond);
	pthread_mutex_unlock(&dev->lock);
	srv_wake(dev);
}

void sim_stop(struct sim *sim)
{
	if (!sim)
		return;
	if (sim->control)
		control_stop(sim->control);
	/* Stop everything first: an engine of one device may be copying into the
	 * VRAM of another, so no memory is freed until every thread is joined. */
	for (unsigned i = 0; i < sim->ndev; i++)
		dev_stop_threads(sim->devs[i]);
	for (unsigned i = 0; i < sim->ndev; i++)
		srv_stop(sim->devs[i]);
	for (unsigned i = 0; i < sim->ndev; i++) {
		ce_stop_threads(sim->devs[i]);
		exec_stop_threads(sim->devs[i]);
	}
	for (unsigned i = 0; i < sim->ndev; i++)
		dev_free(sim->devs[i]);
	free(sim);
}

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* sim_start(), or with @serve false the devices alone: no threads, no
 * sockets (sim_create_detached). */
static int sim_create(const struct sim_opts *uopts, bool serve, struct sim **out)
{
	static unsigned auto_seq;
	const char *ctl_path;
	struct sim *sim;
	int ret;

	if (!uopts || !out || uopts->size < offsetof(struct sim_opts, slow_links))
		return -EINVAL;
	ret = sim_guard_init();
	if (ret) {
		fprintf(stderr, "ugpu-sim: cannot install the SIGBUS guard: %s\n", strerror(-ret));
		return ret;
	}
	sim = calloc(1, sizeof(*sim));
	if (!sim)
		return -ENOMEM;
	sim_opts_init(&sim->opts);
	memcpy(&sim->opts, uopts, uopts->size < sizeof(sim->opts) ? uopts->size : sizeof(sim->opts));
	sim->opts.size = sizeof(sim->opts);
	if (!sim->opts.vram_size)
		sim->opts.vram_size = 256ull << 20;
	if (!sim->opts.devices)
		sim->opts.devices = 1;
	if (!sim->opts.max_dma_maps)
		sim->opts.max_dma_maps = 65535;
	if (!sim->opts.req_interval_ms)
		sim->opts.req_interval_ms = 10000;
	if (!sim->opts.exec_queues)
		sim->opts.exec_queues = 4;
	if (!sim->opts.version_minor)
		sim->opts.version_minor = SIM_VERSION_MINOR;
	if (!is_pow2(sim->opts.vram_size) || sim->opts.vram_size < (1ull << 20) ||
	    sim->opts.vram_size > (1ull << 40)) {
		fprintf(stderr, "ugpu-sim: vram size %" PRIu64 " is not a power of two in [1 MiB, 1 TiB]\n",
			sim->opts.vram_size);
		ret = -EINVAL;
		goto out_free;
	}
	if (sim->opts.max_dma_maps > 65535) {
		fprintf(stderr, "ugpu-sim: max_dma_maps %u: at most 65535 (the specification's default, "
			"vfio type1's limit, and what QEMU's vfio-user client takes)\n",
			sim->opts.max_dma_maps);
		ret = -EINVAL;
		goto out_free;
	}
	if (sim->opts.client_fd >= 0 && (sim->opts.devices != 1 || sim->opts.socket_path)) {
		fprintf(stderr, "ugpu-sim: a client fd serves one device and no socket path\n");
		ret = -EINVAL;
		goto out_free;
	}
	if (sim->opts.devices > SIM_MAX_DEVICES) {
		fprintf(stderr, "ugpu-sim: %u devices, at most %d\n", sim->opts.devices,
			SIM_MAX_DEVICES);
		ret = -EINVAL;
		goto out_free;
	}
	if (sim->opts.version_minor < 1 || sim->opts.version_minor > SIM_VERSION_MINOR) {
		fprintf(stderr, "ugpu-sim: version 1.%u: 1.1 to 1.%u\n", sim->opts.version_minor,
			SIM_VERSION_MINOR);
		ret = -EINVAL;
		goto out_free;
	}
	if (sim->opts.exec_queues > SIM_MAX_EXEC_QUEUES) {
		fprintf(stderr, "ugpu-sim: %u exec queues, at most %d\n", sim->opts.exec_queues,
			SIM_MAX_EXEC_QUEUES);
		ret = -EINVAL;
		goto out_free;
	}
	if (sim->opts.socket_path) {
		ret = snprintf(sim->base_path, sizeof(sim->base_path), "%s", sim->opts.socket_path);
	} else {
		const char *tmp = getenv("TMPDIR");

		/* The uid in the name: a stale socket left in the shared /tmp by a
		 * process of another user whose pid this one reuses cannot be
		 * replaced (sticky /tmp), and would refuse this one's bind. */
		ret = snprintf(sim->base_path, sizeof(sim->base_path), "%s/ugpu-sim-%u-%d-%u.sock",
			       tmp && *tmp ? tmp : "/tmp", (unsigned)getuid(), (int)getpid(),
			       __atomic_fetch_add(&auto_seq, 1, __ATOMIC_RELAXED));
	}
	if (ret < 0 || (size_t)ret >= sizeof(sim->base_path) - 4) {
		fprintf(stderr, "ugpu-sim: socket path too long\n");
		ret = -ENAMETOOLONG;
		goto out_free;
	}
	ctl_path = sim->opts.control_path;
	sim->opts.socket_path = NULL; /* the caller's strings are not kept */
	sim->opts.control_path = NULL;
	for (unsigned a = 0; a < SIM_MAX_DEVICES; a++)
		for (unsigned b = 0; b < SIM_MAX_DEVICES; b++)
			if ((sim->opts.slow_links[a] >> b) & 1u) {
				sim->slow[a] |= 1u << b;
				sim->slow[b] |= 1u << a;
			}

	if (sim->opts.devices > 1) {
		/* FABRIC_UID: tells a driver which devices share this fabric
		 * (node ids alone repeat across fabrics). */
		while (!sim->fabric_uid)
			if (getrandom(&sim->fabric_uid, sizeof(sim->fabric_uid), 0) !=
			    (ssize_t)sizeof(sim->fabric_uid))
				sim->fabric_uid = sim_now_ns() ^ ((uint64_t)getpid() << 32);
	}
	for (unsigned i = 0; i < sim->opts.devices; i++) {
		ret = dev_create(sim, i, &sim->devs[i]);
		if (ret)
			goto out_stop;
		sim->ndev = i + 1;
	}
	for (unsigned i = 0; serve && i < sim->ndev; i++) {
		struct sim_dev *dev = sim->devs[i];

		ret = ce_start_threads(dev);
		if (ret)
			goto out_stop;
		ret = exec_start_threads(dev);
		if (ret)
			goto out_stop;
		ret = srv_start(dev);
		if (ret)
			goto out_stop;
	}
	if (serve && ctl_path) {
		ret = control_start(sim, ctl_path, &sim->control);
		if (ret)
			goto out_stop;
	}
	*out = sim;
	return 0;

out_stop:
	sim_stop(sim);
	return ret;
out_free:
	free(sim);
	return ret;
}

int sim_start(const struct sim_opts *opts, struct sim **out)
{
	return sim_create(opts, true, out);
}

int sim_create_detached(const struct sim_opts *opts, struct sim **out)
{
	return sim_create(opts, false, out);
}

unsigned sim_num_devices(const struct sim *sim)
{
	return sim ? sim->ndev : 0;
}

const char *sim_socket_path(const struct sim *sim, unsigned dev)
{
	if (!sim || dev >= sim->ndev)
		return NULL;
	return sim->devs[dev]->path;
}

static struct sim_dev *get_dev(struct sim *sim, unsigned dev)
{
	if (!sim || dev >= sim->ndev)
		return NULL;
	return sim->devs[dev];
}

int sim_unplug_request(struct sim *sim, unsigned idx)
{
	struct sim_dev *dev = get_dev(sim, idx);
	int ret = 0;

	if (!dev)
		return -EINVAL;
	pthread_mutex_lock(&dev->lock);
	if (dev->removed) {
		ret = -ENODEV;
	} else if (!dev->req_active) {
		dev->req_active = true;
		dev->req_next_ns = 0; /* raise at once; the server thread rearms */
	}
	pthread_mutex_unlock(&dev->lock);
	srv_wake(dev);
	return ret;
}

int sim_unplug_surprise(struct sim *sim, unsigned idx)
{
	struct sim_dev *dev = get_dev(sim, idx);

	if (!dev)
		return -EINVAL;
	pthread_mutex_lock(&dev->lock);
	if (dev->removed) {
		pthread_mutex_unlock(&dev->lock);
		return -ENODEV;
	}
	dev->removed = true;
	dev->surprise = true;
	for (unsigned i = 0; i < SIM_NUM_CE; i++)
		pthread_cond_broadcast(&dev->ce[i].cond);
	exec_kick(dev);
	pthread_mutex_unlock(&dev->lock);
	/* Shut the connection down before returning so the caller observes the
	 * removal at once; the server thread closes and cleans up. */
	srv_shutdown_client(dev);
	srv_wake(dev);
	return 0;
}

int sim_inject(struct sim *sim, unsigned idx, enum sim_inject_kind kind, unsigned n, bool always)
{
	struct sim_dev *dev = get_dev(sim, idx);

	if (!dev || (unsigned)kind >= SIM_INJECT_KINDS || n == 0)
		return -EINVAL;
	pthread_mutex_lock(&dev->lock);
	dev->inj[kind].armed = true;
	dev->inj[kind].always = always;
	dev->inj[kind].countdown = n;
	pthread_mutex_unlock(&dev->lock);
	return 0;
}

int sim_inject_clear(struct sim *sim, unsigned idx)
{
	struct sim_dev *dev = get_dev(sim, idx);

	if (!dev)
		return -EINVAL;
	pthread_mutex_lock(&dev->lock);
	memset(dev->inj, 0, sizeof(dev->inj));
	pthread_mutex_unlock(&dev->lock);
	return 0;
}

bool sim_inject_hit(struct sim_dev *dev, enum sim_inject_kind kind)
{
	struct sim_inject *in = &dev->inj[kind];

	if (!in->armed)
		return false;
	if (in->countdown > 1) {
		in->countdown--;
		return false;
	}
	if (!in->always)
		in->armed = false;
	return true;
}

int sim_vram_fd(struct sim *sim, unsigned idx)
{
	struct sim_dev *dev = get_dev(sim, idx);

	return dev ? dev->vram_fd : -1; /* set at creation, fixed for the device's life */
}

int sim_state(struct sim *sim, unsigned idx, struct sim_state *st)
{
	struct sim_dev *dev = get_dev(sim, idx);

	if (!dev || !st)
		return -EINVAL;
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&dev->lock);
	st->power = dev->power;
	for (unsigned i = 0; i < SIM_NUM_CE; i++) {
		st->ce_status[i] = ce_status(&dev->ce[i]);
		st->ce_error[i] = dev->ce[i].error_code;
	}
	st->exec_status = dev->q[0].status;
	st->exec_queues = dev->nq;
	for (unsigned i = 0; i < dev->nq; i++)
		st->queue_status[i] = dev->q[i].status;
	st->fault_ring = dev->fring.enabled;
	st->fault_ring_size = dev->fring.l_size;
	st->fault_put = dev->fring.put;
	st->fault_get = dev->fring.get;
	st->client = dev->connected;
	pthread_mutex_lock(&dev->twin_lock); /* lock order: never two at once */
	st->twin = dev->twin_fd >= 0;
	pthread_mutex_unlock(&dev->twin_lock);
	st->removed = dev->removed;
	st->dma_maps = (uint32_t)dev->nmaps;
	st->descs = dev->cnt_descs;
	st->lists = dev->cnt_lists;
	st->irqs = dev->cnt_irqs;
	st->reqs = dev->cnt_reqs;
	st->faults = dev->cnt_faults;
	st->inband = dev->cnt_inband;
	st->irq_drops = dev->cnt_irq_drops;
	pthread_mutex_unlock(&dev->lock);
	return 0;
}

static const char *ce_word(uint32_t status)
{
	if (status & CE_STATUS_ERROR)
		return "error";
	if (!(status & CE_STATUS_ENABLED))
		return "off";
	return (status & CE_STATUS_IDLE) ? "idle" : "busy";
}

static const char *exec_word(uint32_t status)
{
	static const char *const words[] = { "idle", "running", "stalled", "done", "aborted",
					     "error" };

	return status < sizeof(words) / sizeof(words[0]) ? words[status] : "?";
}

int sim_state_line(struct sim *sim, unsigned idx, char *buf, size_t len)
{
	struct sim_state st;
	size_t at;
	int ret;

	ret = sim_state(sim, idx, &st);
	if (ret)
		return ret;
	ret = snprintf(buf, len,
		       "power=%s ce0=%s ce1=%s exec=%s client=%s removed=%s dma_maps=%u descs=%" PRIu64
		       " irqs=%" PRIu64 " reqs=%" PRIu64 " faults=%" PRIu64 " inband=%" PRIu64 " queues=",
		       st.power == SIM_POWER_D0 ? "D0" : st.power == SIM_POWER_D3HOT ? "D3hot" : "D3cold",
		       ce_word(st.ce_status[0]), ce_word(st.ce_status[1]), exec_word(st.exec_status),
		       st.client ? "yes" : "no", st.removed ? "yes" : "no", st.dma_maps, st.descs,
		       st.irqs, st.reqs, st.faults, st.inband);
	for (unsigned i = 0; i < st.exec_queues && ret >= 0 && (size_t)ret < len; i++) {
		at = (size_t)ret;
		ret = snprintf(buf + at, len - at, "%s%s", i ? "," : "",
			       exec_word(st.queue_status[i]));
		if (ret >= 0)
			ret += (int)at;
	}
	if (ret >= 0 && (size_t)ret < len) {
		at = (size_t)ret;
		if (st.fault_ring)
			ret = snprintf(buf + at, len - at, " faultq=%u/%u", st.fault_put - st.fault_get,
				       st.fault_ring_size);
		else
			ret = snprintf(buf + at, len - at, " faultq=off");
		if (ret >= 0)
			ret += (int)at;
	}
	if (ret >= 0 && (size_t)ret < len) {
		at = (size_t)ret;
		ret = snprintf(buf + at, len - at, " irq_drops=%" PRIu64, st.irq_drops);
		if (ret >= 0)
			ret += (int)at;
	}
	return ret < 0 || (size_t)ret >= len ? -ENOSPC : 0;
}
