/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim: the two copy engines, DMA windows, and interrupt delivery.
 *
 * Each engine has a worker thread. Under dev->lock it picks the descriptor at
 * HEAD, validates it completely (so a bad one has no effect), pins the IOVA
 * ranges it will touch (inflight slots: DMA_UNMAP of an overlapping window
 * waits for them), marks itself busy and drops the lock to move the bytes:
 * memmove between the VRAM memfd mapping and the mmaps of the client's DMA
 * fds, so large copies run at memcpy speed. Windows without an fd are reached
 * with in-band DMA_READ/DMA_WRITE through the server (srv_dma_inband). It
 * retakes the lock to retire the descriptor (HEAD, SEQNO, interrupts).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "sim_internal.h"

#define CE_MAX_SIZE (1ull << 30)
#define CE_CHUNK (1ull << 20)

/*
 * The backstop for interrupt writes. irq_fd_adopt() makes each fd
 * non-blocking, but the flag lives in the file description the client shares:
 * a client can clear it again on its copy, saturate its eventfd and wait.
 * Nothing per call makes an eventfd write non-blocking (no MSG_DONTWAIT, no
 * RWF_NOWAIT on Linux 6.1's eventfd), so each write runs under a one-shot
 * timer aimed at the writing thread: if the write sleeps, the signal
 * interrupts it (the handler has no SA_RESTART) and it fails with EINTR after
 * at most SIM_IRQ_WRITE_MS. The signal is one real-time signal of the
 * process, taken once (documented in docs/reference-device.md).
 */
#define SIM_IRQ_ALARM_SIG (SIGRTMAX - 3)
#define SIM_IRQ_WRITE_MS 20

static void irq_alarm(int sig)
{
	(void)sig; /* only there to interrupt a write */
}

static void irq_alarm_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = irq_alarm;
	sigemptyset(&sa.sa_mask);
	sigaction(SIM_IRQ_ALARM_SIG, &sa, NULL);
}

/* The writing thread's backstop timer, made on its first interrupt and kept
 * (a destructor deletes it when the thread ends): a write costs two
 * timer_settime() calls, no allocation. */
static pthread_key_t irq_timer_key;
static bool irq_key_ok;
static pthread_once_t irq_once = PTHREAD_ONCE_INIT;

static void irq_timer_free(void *p)
{
	timer_delete(*(timer_t *)p);
	free(p);
}

static void irq_init_once(void)
{
	irq_alarm_install();
	irq_key_ok = pthread_key_create(&irq_timer_key, irq_timer_free) == 0;
}

static timer_t *irq_timer(void)
{
	timer_t *t;
	struct sigevent sev;

	pthread_once(&irq_once, irq_init_once);
	if (!irq_key_ok)
		return NULL; /* no backstop: the fd's O_NONBLOCK alone */
	t = pthread_getspecific(irq_timer_key);
	if (t)
		return t;
	t = malloc(sizeof(*t));
	if (!t)
		return NULL;
	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = SIM_IRQ_ALARM_SIG;
	sev._sigev_un._tid = gettid();
	if (timer_create(CLOCK_MONOTONIC, &sev, t) < 0) {
		free(t);
		return NULL;
	}
	if (pthread_setspecific(irq_timer_key, t)) {
		/* not kept: made again at every write, it would pile up */
		timer_delete(*t);
		free(t);
		return NULL;
	}
	return t;
}

static ssize_t irq_write(int fd)
{
	struct itimerspec arm = { .it_value = { .tv_nsec = SIM_IRQ_WRITE_MS * 1000000L } };
	struct itimerspec disarm = { 0 };
	timer_t *t = irq_timer();
	uint64_t one = 1;
	ssize_t n;

	if (t && timer_settime(*t, 0, &arm, NULL) < 0)
		t = NULL;
	n = write(fd, &one, sizeof(one));
	if (t) {
		int err = errno; /* the caller reports the write's */

		timer_settime(*t, 0, &disarm, NULL); /* a signal already sent finds no write */
		errno = err;
	}
	return n;
}

void sim_irq_raise(struct sim_dev *dev, unsigned index, unsigned vec)
{
	int fd;

	if (index >= SIM_NUM_IRQS || vec >= SIM_MSIX_VECTORS)
		return;
	dev->cnt_irqs++;
	if (index == SIM_IRQ_REQ)
		dev->cnt_reqs++;
	if (dev->irq_masked[index][vec]) {
		dev->irq_pending[index][vec] = true;
		return;
	}
	fd = dev->irq_fd[index][vec];
	/* Under dev->lock so the fd cannot be closed (and its number reused)
	 * by SET_IRQS or a disconnect while we write. The fd is non-blocking
	 * (irq_fd_adopt), our threads block SIGPIPE, and irq_write() bounds the
	 * write should the client have made it blocking again: it returns
	 * whatever the client did to its end (a full eventfd counter or pipe:
	 * EAGAIN or, past the backstop, EINTR; a pipe without a reader: EPIPE).
	 * That interrupt is the client's loss; the device goes on. */
	if (fd >= 0 && irq_write(fd) != (ssize_t)sizeof(uint64_t)) {
		int err = errno;

		dev->cnt_irq_drops++;
		if ((dev->cnt_irq_drops & (dev->cnt_irq_drops - 1)) == 0) /* 1, 2, 4, ... */
			fprintf(stderr,
				"ugpu-sim[%u]: interrupt %u/%u dropped: write to the client's fd failed (%s); %" PRIu64
				" dropped so far\n",
				dev->id, index, vec, strerror(err), dev->cnt_irq_drops);
	}
}

int irq_fd_adopt(struct sim_dev *dev, int fd)
{
	struct stat st;
	int fl;

	if (fstat(fd, &st) < 0) {
		fprintf(stderr, "ugpu-sim[%u]: SET_IRQS: cannot fstat the fd: %s\n", dev->id,
			strerror(errno));
		return -EINVAL;
	}
	/* Anonymous inodes (eventfd; the others refuse writes at once), pipes
	 * and sockets honour O_NONBLOCK. A regular file or a device could
	 * sleep in write() whatever its flags (a FUSE file, for one). */
	if ((st.st_mode & S_IFMT) != 0 && !S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode)) {
		fprintf(stderr,
			"ugpu-sim[%u]: SET_IRQS: the fd is not an eventfd, pipe or socket (mode 0%o)\n",
			dev->id, (unsigned)st.st_mode);
		return -EINVAL;
	}
	/* The flag is shared with the client's copy of the fd (one open file
	 * description): harmless for a client that polls its eventfd, as a
	 * client must. */
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		fprintf(stderr, "ugpu-sim[%u]: SET_IRQS: cannot make the fd non-blocking: %s\n",
			dev->id, strerror(errno));
		return -EINVAL;
	}
	return 0;
}

uint32_t ce_status(const struct sim_ce *ce)
{
	uint32_t s = 0;

	if (ce->enabled)
		s |= CE_STATUS_ENABLED;
	if (ce->error)
		s |= CE_STATUS_ERROR;
	if (ce->head == ce->tail && !ce->busy)
		s |= CE_STATUS_IDLE;
	return s;
}

bool ce_any_busy(struct sim_dev *dev)
{
	for (unsigned i = 0; i < SIM_NUM_CE; i++)
		if (dev->ce[i].busy)
			return true;
	return false;
}

void ce_kick(struct sim_dev *dev)
{
	for (unsigned i = 0; i < SIM_NUM_CE; i++)
		pthread_cond_broadcast(&dev->ce[i].cond);
}

void ce_reset_locked(struct sim_ce *ce, bool full)
{
	ce->head = ce->tail = 0;
	ce->enabled = false;
	ce->error = false;
	ce->error_code = 0;
	ce->error_head = 0;
	if (full) {
		ce->ring_base = 0;
		ce->ring_size = 0;
		ce->l_base = 0;
		ce->l_size = 0;
		ce->seqno = 0;
	}
}

/* ---- DMA windows (lock held) -------------------------------------------- */

struct sim_dma_map *dma_find(struct sim_dev *dev, uint64_t iova)
{
	size_t lo = 0, hi = dev->nmaps;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		struct sim_dma_map *m = &dev->maps[mid];

		if (iova < m->iova)
			hi = mid;
		else if (iova - m->iova >= m->size)
			lo = mid + 1;
		else
			return m;
	}
	return NULL;
}

int dma_check(struct sim_dev *dev, uint64_t iova, uint64_t len, uint32_t prot)
{
	uint64_t cur = iova, end = iova + len;

	if (!pci_master_enabled(dev))
		return -EIO;
	if (end < iova || end > SIM_IOVA_LIMIT)
		return -EFAULT;
	while (cur < end) {
		struct sim_dma_map *m = dma_find(dev, cur);

		if (!m || (m->prot & prot) != prot)
			return -EFAULT;
		cur = m->iova + m->size;
	}
	return 0;
}

int inflight_add(struct sim_dev *dev, uint64_t start, uint64_t len)
{
	for (int i = 0; i < SIM_MAX_INFLIGHT; i++) {
		if (!dev->inflight[i].used) {
			dev->inflight[i].used = true;
			dev->inflight[i].start = start;
			dev->inflight[i].end = start + len;
			return i;
		}
	}
	return -EBUSY; /* cannot happen: 2 per engine + 1 per exec queue */
}

void inflight_del(struct sim_dev *dev, int slot)
{
	if (slot >= 0 && slot < SIM_MAX_INFLIGHT)
		dev->inflight[slot].used = false;
}

bool inflight_overlaps(struct sim_dev *dev, uint64_t start, uint64_t end)
{
	for (int i = 0; i < SIM_MAX_INFLIGHT; i++)
		if (dev->inflight[i].used && dev->inflight[i].start < end &&
		    start < dev->inflight[i].end)
			return true;
	return false;
}

bool inflight_any(struct sim_dev *dev)
{
	for (int i = 0; i < SIM_MAX_INFLIGHT; i++)
		if (dev->inflight[i].used)
			return true;
	return false;
}

/* The contiguous piece of IOVA @iova (pinned by the caller): host pointer, or
 * NULL for an in-band window; *n bounded by @max. */
static int dma_seg(struct sim_dev *dev, uint64_t iova, uint64_t max, uint8_t **p, uint64_t *n)
{
	struct sim_dma_map *m;

	pthread_mutex_lock(&dev->lock);
	m = dma_find(dev, iova);
	if (!m) {
		pthread_mutex_unlock(&dev->lock);
		return -EFAULT;
	}
	*n = m->iova + m->size - iova;
	if (*n > max)
		*n = max;
	*p = m->host ? m->host + (iova - m->iova) : NULL;
	pthread_mutex_unlock(&dev->lock);
	return 0;
}

int dma_rw(struct sim_dev *dev, uint64_t iova, void *buf, uint64_t len, bool write)
{
	uint8_t *b = buf;

	while (len) {
		uint8_t *p;
		uint64_t n;
		int ret = dma_seg(dev, iova, len, &p, &n);

		if (ret)
			return ret;
		if (p) {
			ret = write ? sim_guarded_memmove(dev, p, b, n) : sim_guarded_memmove(dev, b, p, n);
			if (ret)
				return ret;
		} else {
			ret = srv_dma_inband(dev, iova, b, n, write);
			if (ret)
				return ret;
		}
		iova += n;
		b += n;
		len -= n;
	}
	return 0;
}

/* ---- descriptors --------------------------------------------------------- */

/* One side of a COPY/FILL. */
struct ce_ep {
	uint32_t space;
	uint64_t addr;
	uint32_t node;
	uint8_t *base; /* VRAM / peer VRAM mapping; NULL for IOVA */
	int slot; /* inflight slot for IOVA, -1 otherwise */
	bool slow;
};

struct ce_job {
	struct sim_desc d;
	struct ce_ep src, dst;
	bool throttle;
	uint32_t slots; /* ring slots the descriptor takes (a COPY_LIST: with its entries) */
	const struct sim_list_entry *list; /* COPY_LIST: its d.size entries */
};

/* Check one side of a transfer (nothing pinned yet). Lock held. */
static uint32_t ep_check(struct sim_dev *dev, struct ce_ep *ep, uint32_t space, uint64_t addr,
			 uint32_t node, uint64_t size, uint32_t prot)
{
	ep->space = space;
	ep->addr = addr;
	ep->node = node;
	ep->slot = -1;
	ep->base = NULL;
	ep->slow = false;
	switch (space) {
	case SIM_SPACE_VRAM:
		if (addr > dev->vram_size || size > dev->vram_size - addr)
			return SIM_ERR_BOUNDS;
		ep->base = dev->vram;
		return 0;
	case SIM_SPACE_IOVA:
		if (sim_inject_hit(dev, SIM_INJECT_DMA))
			return SIM_ERR_DMA;
		if (dma_check(dev, addr, size, prot))
			return SIM_ERR_DMA;
		return 0;
	case SIM_SPACE_PEER: {
		struct sim_dev *peer = fabric_peer(dev, node);

		/* The peer's VRAM size and mapping are immutable: no peer lock
		 * here. Its power state is checked before any effect. */
		if (!peer || peer == dev)
			return SIM_ERR_PEER;
		if (addr > peer->vram_size || size > peer->vram_size - addr)
			return SIM_ERR_PEER;
		ep->base = peer->vram;
		ep->slow = fabric_is_slow(dev, node);
		return 0;
	}
	}
	return SIM_ERR_OPCODE;
}

/* Pin IOVA [@lo, @hi) for @ep (an inflight slot: DMA_UNMAP of an
 * overlapping window waits for the descriptor). Lock held. */
static uint32_t ep_pin(struct sim_dev *dev, struct ce_ep *ep, uint64_t lo, uint64_t hi)
{
	int slot;

	if (ep->space != SIM_SPACE_IOVA)
		return 0;
	slot = inflight_add(dev, lo, hi - lo);
	if (slot < 0)
		return SIM_ERR_DMA;
	ep->slot = slot;
	return 0;
}

/* Check one side of a transfer and pin it. Lock held. */
static uint32_t ep_prepare(struct sim_dev *dev, struct ce_ep *ep, uint32_t space, uint64_t addr,
			   uint32_t node, uint64_t size, uint32_t prot)
{
	uint32_t code = ep_check(dev, ep, space, addr, node, size, prot);

	return code ? code : ep_pin(dev, ep, addr, addr + size);
}

/* Bytes of the checksums COPY_SUM writes for @size bytes. */
static uint64_t sum_bytes(uint64_t size)
{
	return (size + SIM_SUM_PIECE - 1) / SIM_SUM_PIECE * 8;
}

/* Ring slots of a COPY_LIST of @n entries: the descriptor, two entries a
 * slot after it. */
static uint32_t list_slots(uint64_t n)
{
	return 1 + (uint32_t)((n + 1) / 2);
}

/*
 * COPY_LIST at ring offset @head of @ce: copy its entries out of the ring
 * into ce->list, check every one (both sides, the sums) and pin the span of
 * each IOVA side. Nothing moves unless all of it is valid. Lock held.
 */
static uint32_t list_prepare(struct sim_dev *dev, struct sim_ce *ce, uint32_t head,
			     struct ce_job *j)
{
	struct sim_desc *d = &j->d;
	uint64_t n = d->size, i, pieces = 0;
	uint64_t lo[2] = { UINT64_MAX, UINT64_MAX }, hi[2] = { 0, 0 };
	uint32_t avail, code;
	bool sums = d->value != SIM_LIST_NO_SUM;

	if (dev->sim->opts.version_minor < 4)
		return SIM_ERR_OPCODE; /* a 1.1-1.3 device has no such descriptor */
	if (d->src || d->dst || d->flags || d->src_space > SIM_SPACE_PEER ||
	    d->dst_space > SIM_SPACE_PEER || (sums && d->src_space != SIM_SPACE_VRAM))
		return SIM_ERR_OPCODE;
	/* every entry lies before TAIL: the doorbell covered the whole list */
	avail = ((ce->tail - head) & (ce->l_size - 1)) / (uint32_t)sizeof(struct sim_desc);
	if (!n || n > SIM_LIST_MAX || list_slots(n) > avail)
		return SIM_ERR_BOUNDS;
	for (i = 0; i < n; i++) {
		uint32_t at = (head + (uint32_t)sizeof(struct sim_desc) * (1 + (uint32_t)(i / 2))) &
			      (ce->l_size - 1);
		struct sim_list_entry *e = &ce->list[i];

		memcpy(e, dev->vram + ce->l_base + at + (i % 2) * sizeof(*e), sizeof(*e));
		if (e->reserved)
			return SIM_ERR_OPCODE;
		if (!e->size || e->size > CE_MAX_SIZE)
			return SIM_ERR_BOUNDS;
		code = ep_check(dev, &j->src, d->src_space, e->src, d->src_peer, e->size,
				VFU_DMA_F_READ);
		if (!code)
			code = ep_check(dev, &j->dst, d->dst_space, e->dst, d->dst_peer, e->size,
					VFU_DMA_F_WRITE);
		if (code)
			return code;
		pieces += (e->size + SIM_SUM_PIECE - 1) / SIM_SUM_PIECE;
		lo[0] = e->src < lo[0] ? e->src : lo[0];
		hi[0] = e->src + e->size > hi[0] ? e->src + e->size : hi[0];
		lo[1] = e->dst < lo[1] ? e->dst : lo[1];
		hi[1] = e->dst + e->size > hi[1] ? e->dst + e->size : hi[1];
	}
	if (sums && ((d->value & 7) || d->value > dev->vram_size ||
		     pieces * 8 > dev->vram_size - d->value))
		return SIM_ERR_BOUNDS;
	code = ep_pin(dev, &j->src, lo[0], hi[0]);
	if (!code)
		code = ep_pin(dev, &j->dst, lo[1], hi[1]);
	if (code) {
		inflight_del(dev, j->src.slot);
		j->src.slot = -1;
		return code;
	}
	j->throttle = j->src.slow || j->dst.slow;
	j->slots = list_slots(n);
	j->list = ce->list;
	return 0;
}

/* Validate the descriptor at ring offset @head of @ce and pin what it
 * touches. Lock held. Returns an error code. */
static uint32_t desc_prepare(struct sim_dev *dev, struct sim_ce *ce, uint32_t head,
			     struct ce_job *j)
{
	struct sim_desc *d = &j->d;
	uint32_t code;

	j->src.slot = j->dst.slot = -1;
	j->slots = 1;
	if (d->reserved || d->opcode > SIM_OP_COPY_LIST)
		return SIM_ERR_OPCODE;
	if (sim_inject_hit(dev, SIM_INJECT_CMD))
		return SIM_ERR_INJECTED;
	switch (d->opcode) {
	case SIM_OP_COPY_LIST:
		return list_prepare(dev, ce, head, j);
	case SIM_OP_NOP:
		return 0;
	case SIM_OP_FENCE:
		if (d->dst != ~0ull && ((d->dst & 7) || d->dst > dev->vram_size - 8))
			return SIM_ERR_BOUNDS;
		return 0;
	case SIM_OP_COPY_SUM:
		if (dev->sim->opts.version_minor < 3)
			return SIM_ERR_OPCODE; /* a 1.1/1.2 device has no such descriptor */
		/* the source is VRAM (the sums are of what the engine reads),
		 * the sums go to VRAM at @value: 8 bytes per piece */
		if (d->src_space != SIM_SPACE_VRAM || d->dst_space > SIM_SPACE_PEER)
			return SIM_ERR_OPCODE;
		if (!d->size || d->size > CE_MAX_SIZE || (d->value & 7) ||
		    d->value > dev->vram_size ||
		    sum_bytes(d->size) > dev->vram_size - d->value)
			return SIM_ERR_BOUNDS;
		break;
	case SIM_OP_COPY:
		if (d->src_space > SIM_SPACE_PEER || d->dst_space > SIM_SPACE_PEER)
			return SIM_ERR_OPCODE;
		if (!d->size || d->size > CE_MAX_SIZE)
			return SIM_ERR_BOUNDS;
		break;
	case SIM_OP_FILL:
		if (d->dst_space > SIM_SPACE_PEER)
			return SIM_ERR_OPCODE;
		if (!d->size || d->size > CE_MAX_SIZE || (d->size & 7) || (d->dst & 7))
			return SIM_ERR_BOUNDS;
		break;
	}
	if (d->opcode == SIM_OP_COPY || d->opcode == SIM_OP_COPY_SUM) {
		code = ep_prepare(dev, &j->src, d->src_space, d->src, d->src_peer, d->size,
				  VFU_DMA_F_READ);
		if (code)
			return code;
	}
	code = ep_prepare(dev, &j->dst, d->dst_space, d->dst, d->dst_peer, d->size, VFU_DMA_F_WRITE);
	if (code) {
		inflight_del(dev, j->src.slot);
		j->src.slot = -1;
		return code;
	}
	j->throttle = j->src.slow || j->dst.slow;
	return 0;
}

static bool peer_ok(struct sim_dev *dev, const struct ce_ep *ep)
{
	struct sim_dev *peer;
	bool ok;

	if (ep->space != SIM_SPACE_PEER)
		return true;
	peer = fabric_peer(dev, ep->node);
	pthread_mutex_lock(&peer->lock);
	ok = sim_dev_running(peer);
	pthread_mutex_unlock(&peer->lock);
	return ok;
}

static void fabric_flush(struct sim_dev *dev, const struct ce_ep *ep)
{
	struct sim_dev *peer;

	if (ep->space != SIM_SPACE_PEER)
		return;
	peer = fabric_peer(dev, ep->node);
	pthread_mutex_lock(&peer->lock);
	pthread_mutex_unlock(&peer->lock);
}

static int ep_seg(struct sim_dev *dev, const struct ce_ep *ep, uint64_t off, uint64_t max,
		  uint8_t **p, uint64_t *n)
{
	if (ep->base) {
		*p = ep->base + ep->addr + off;
		*n = max;
		return 0;
	}
	return dma_seg(dev, ep->addr + off, max, p, n);
}

static void fill64(uint8_t *p, uint64_t n, uint64_t value)
{
	uint64_t *w = (uint64_t *)p;

	for (uint64_t i = 0; i < n / 8; i++)
		w[i] = value;
}

struct fill_args {
	uint8_t *p;
	uint64_t n, value;
};

static void fill_fn(void *arg)
{
	struct fill_args *a = arg;

	fill64(a->p, a->n, a->value);
}

/* FILL into a window's memory, under the guard (a client may have truncated
 * the window's file). */
static int fill_guarded(struct sim_dev *dev, uint8_t *p, uint64_t n, uint64_t value)
{
	struct fill_args a = { .p = p, .n = n, .value = value };

	return sim_guard_run(dev, fill_fn, &a);
}

static void throttle_wait(uint64_t t0, uint64_t bytes)
{
	uint64_t due = t0 + bytes * 1000000000ull / SIM_SLOW_LINK_BPS;
	uint64_t now = sim_now_ns();

	if (due > now) {
		struct timespec ts = { .tv_sec = (time_t)((due - now) / 1000000000ull),
				       .tv_nsec = (long)((due - now) % 1000000000ull) };

		nanosleep(&ts, NULL);
	}
}

/* COPY_SUM copied through @end, the end of a piece (or of the copy): the
 * piece's XXH3-64 from the source (VRAM, where the engine read it) into its
 * slot at d->value, little-endian. */
static void sum_piece(struct sim_dev *dev, const struct sim_desc *d, uint64_t end)
{
	uint64_t start = (end - 1) / SIM_SUM_PIECE * SIM_SUM_PIECE;
	uint64_t sum = XXH3_64bits(dev->vram + d->src + start, end - start);
	uint8_t *slot = dev->vram + d->value + start / SIM_SUM_PIECE * 8;

	for (int i = 0; i < 8; i++)
		slot[i] = (uint8_t)(sum >> (8 * i));
}

/* Move the bytes. Lock not held. Returns an error code (in-band failures). */
static uint32_t desc_execute(struct sim_dev *dev, struct ce_job *j)
{
	struct sim_desc *d = &j->d;
	uint8_t *bounce = NULL;
	uint64_t off = 0, t0 = sim_now_ns();
	uint32_t code = 0;

	if (!peer_ok(dev, &j->src) || !peer_ok(dev, &j->dst))
		return SIM_ERR_PEER;
	while (off < d->size) {
		uint64_t want = d->size - off, sn = 0, dn;
		uint8_t *sp = NULL, *dp;

		if (j->throttle && want > CE_CHUNK)
			want = CE_CHUNK;
		/* COPY_SUM: piece by piece, each summed while it is in cache */
		if (d->opcode == SIM_OP_COPY_SUM && want > SIM_SUM_PIECE - off % SIM_SUM_PIECE)
			want = SIM_SUM_PIECE - off % SIM_SUM_PIECE;
		if (d->opcode != SIM_OP_FILL && ep_seg(dev, &j->src, off, want, &sp, &sn)) {
			code = SIM_ERR_DMA;
			break;
		}
		if (ep_seg(dev, &j->dst, off, want, &dp, &dn)) {
			code = SIM_ERR_DMA;
			break;
		}
		if (d->opcode != SIM_OP_FILL && sn < dn)
			dn = sn;
		if (d->opcode == SIM_OP_FILL) {
			if (dp && j->dst.base) {
				fill64(dp, dn, d->value); /* VRAM: ours, sealed */
			} else if (dp) {
				if (fill_guarded(dev, dp, dn, d->value)) {
					code = SIM_ERR_DMA;
					break;
				}
			} else {
				if (dn > CE_CHUNK)
					dn = CE_CHUNK;
				if (!bounce && !(bounce = malloc(CE_CHUNK))) {
					code = SIM_ERR_DMA;
					break;
				}
				fill64(bounce, dn, d->value);
				if (srv_dma_inband(dev, j->dst.addr + off, bounce, dn, true)) {
					code = SIM_ERR_DMA;
					break;
				}
			}
		} else if (sp && dp && j->src.base && j->dst.base) {
			memmove(dp, sp, dn); /* VRAM and peer VRAM: sealed memfds */
		} else if (sp && dp) {
			if (sim_guarded_memmove(dev, dp, sp, dn)) {
				code = SIM_ERR_DMA;
				break;
			}
		} else if (sp) {
			if (srv_dma_inband(dev, j->dst.addr + off, sp, dn, true)) {
				code = SIM_ERR_DMA;
				break;
			}
		} else if (dp) {
			if (srv_dma_inband(dev, j->src.addr + off, dp, dn, false)) {
				code = SIM_ERR_DMA;
				break;
			}
		} else {
			if (dn > CE_CHUNK)
				dn = CE_CHUNK;
			if (!bounce && !(bounce = malloc(CE_CHUNK))) {
				code = SIM_ERR_DMA;
				break;
			}
			if (srv_dma_inband(dev, j->src.addr + off, bounce, dn, false) ||
			    srv_dma_inband(dev, j->dst.addr + off, bounce, dn, true)) {
				code = SIM_ERR_DMA;
				break;
			}
		}
		off += dn;
		if (d->opcode == SIM_OP_COPY_SUM && (off % SIM_SUM_PIECE == 0 || off == d->size))
			sum_piece(dev, d, off);
		if (j->throttle)
			throttle_wait(t0, off);
	}
	free(bounce);
	/* The fabric orders a peer transfer before whatever the peer does
	 * next: its lock taken once more, so that its own engines, which take
	 * it between descriptors, see these bytes (as a later descriptor of
	 * this engine would). */
	fabric_flush(dev, &j->src);
	fabric_flush(dev, &j->dst);
	return code;
}

/* Move the bytes of a COPY_LIST: each entry as a COPY (a COPY_SUM with
 * sums, its slots after the previous entry's). Lock not held. */
static uint32_t list_execute(struct sim_dev *dev, const struct ce_job *j)
{
	uint64_t slot = j->d.value;
	uint32_t code = 0;

	for (uint64_t i = 0; i < j->d.size && !code; i++) {
		const struct sim_list_entry *e = &j->list[i];
		struct ce_job one = *j;

		one.d.opcode = j->d.value == SIM_LIST_NO_SUM ? SIM_OP_COPY : SIM_OP_COPY_SUM;
		one.d.src = one.src.addr = e->src;
		one.d.dst = one.dst.addr = e->dst;
		one.d.size = e->size;
		one.d.value = slot;
		code = desc_execute(dev, &one);
		slot += (e->size + SIM_SUM_PIECE - 1) / SIM_SUM_PIECE * 8;
	}
	return code;
}

static bool ce_can_run(struct sim_ce *ce)
{
	return ce->enabled && !ce->error && ce->l_size && ce->head != ce->tail &&
	       sim_dev_running(ce->dev);
}

static void ce_error(struct sim_dev *dev, struct sim_ce *ce, uint32_t head, uint32_t code)
{
	ce->error = true;
	ce->error_code = code;
	ce->error_head = head;
	sim_irq_raise(dev, SIM_IRQ_MSIX, SIM_VEC_ERROR);
}

static void *ce_thread(void *arg)
{
	struct sim_ce *ce = arg;
	struct sim_dev *dev = ce->dev;

	pthread_mutex_lock(&dev->lock);
	while (!dev->stop) {
		struct ce_job j;
		uint32_t head, code;

		if (!ce_can_run(ce)) {
			struct timespec ts;

			sim_deadline(&ts, 1000);
			pthread_cond_timedwait(&ce->cond, &dev->lock, &ts);
			continue;
		}
		head = ce->head;
		memset(&j, 0, sizeof(j));
		memcpy(&j.d, dev->vram + ce->l_base + head, sizeof(j.d));
		code = desc_prepare(dev, ce, head, &j);
		if (code) {
			ce_error(dev, ce, head, code);
			continue;
		}
		if (j.d.opcode == SIM_OP_COPY || j.d.opcode == SIM_OP_FILL ||
		    j.d.opcode == SIM_OP_COPY_SUM || j.d.opcode == SIM_OP_COPY_LIST) {
			ce->busy = true;
			pthread_mutex_unlock(&dev->lock);
			code = j.d.opcode == SIM_OP_COPY_LIST ? list_execute(dev, &j)
							      : desc_execute(dev, &j);
			pthread_mutex_lock(&dev->lock);
			inflight_del(dev, j.src.slot);
			inflight_del(dev, j.dst.slot);
			ce->busy = false;
			if (code) {
				ce_error(dev, ce, head, code);
				continue;
			}
		}
		if (j.d.opcode == SIM_OP_FENCE) {
			/* Every earlier descriptor of this ring has retired: the
			 * engine runs them one at a time, in order. */
			if (j.d.dst != ~0ull)
				__atomic_store_n((uint64_t *)(dev->vram + j.d.dst), j.d.value,
						 __ATOMIC_RELEASE);
			ce->seqno = j.d.value;
			if (j.d.flags & 1u)
				sim_irq_raise(dev, SIM_IRQ_MSIX, ce->idx == 0 ? SIM_VEC_CE0 : SIM_VEC_CE1);
		}
		/* A RESET or disable while we ran leaves HEAD where RESET put it. */
		if (ce->enabled && ce->head == head)
			ce->head = (head + j.slots * (uint32_t)sizeof(struct sim_desc)) &
				   (ce->l_size - 1);
		dev->cnt_descs++;
		dev->cnt_lists += j.d.opcode == SIM_OP_COPY_LIST;
	}
	pthread_mutex_unlock(&dev->lock);
	return NULL;
}

int ce_start_threads(struct sim_dev *dev)
{
	for (unsigned i = 0; i < SIM_NUM_CE; i++) {
		int ret = sim_thread_create(&dev->ce[i].thread, ce_thread, &dev->ce[i]);

		if (ret)
			return ret;
		dev->ce[i].thread_started = true;
	}
	return 0;
}

void ce_stop_threads(struct sim_dev *dev)
{
	for (unsigned i = 0; i < SIM_NUM_CE; i++) {
		if (dev->ce[i].thread_started) {
			pthread_join(dev->ce[i].thread, NULL);
			dev->ce[i].thread_started = false;
		}
	}
}
