/* SPDX-License-Identifier: MIT */
/*
 * ugpu-sim: PCI config space, the PM and MSI-X capabilities, the platform
 * power block, and the D0/D3hot/D3cold transitions they drive.
 *
 * Config space is under dev->lock. Transitions run on the server thread (the
 * only writer of config space) and drop the lock while they wait: for the
 * engines to stop on D3 entry, for the wake latency, and while VRAM is
 * poisoned on leaving D3cold.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sim_internal.h"

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

static void wmask32(struct sim_dev *dev, unsigned off, uint32_t m)
{
	put32(&dev->cfg_wmask[off], m);
}

/* Mirror dev->power into PMCSR, PWR_CTL and PWR_STATE. Lock held. */
static void pm_sync_cfg(struct sim_dev *dev)
{
	dev->cfg[CFG_PMCSR] = (uint8_t)((dev->cfg[CFG_PMCSR] & ~3u) |
					(dev->power == SIM_POWER_D0 ? 0u : 3u));
	dev->cfg[CFG_PWR_CTL] = (uint8_t)((dev->cfg[CFG_PWR_CTL] & ~1u) |
					  (dev->power == SIM_POWER_D3COLD ? 1u : 0u));
	put32(&dev->cfg[CFG_PWR_STATE], (uint32_t)dev->power);
}

void pci_init(struct sim_dev *dev)
{
	uint8_t *c = dev->cfg;
	uint64_t sz = dev->vram_size;

	memset(dev->cfg, 0, sizeof(dev->cfg));
	memset(dev->cfg_wmask, 0, sizeof(dev->cfg_wmask));
	put16(c + 0x00, 0x5547); /* vendor */
	put16(c + 0x02, 0x0001); /* device */
	put16(c + 0x06, 0x0010); /* status: capabilities list */
	c[0x08] = 0x01; /* revision */
	c[0x09] = 0x00; /* class 0x030200: 3D controller */
	c[0x0a] = 0x02;
	c[0x0b] = 0x03;
	c[0x0e] = 0x00; /* type 0 header */
	put32(c + 0x10, 0x00000000); /* BAR0: 32-bit memory, 64 KiB */
	wmask32(dev, 0x10, ~(SIM_BAR0_SIZE - 1));
	put32(c + 0x18, 0x0000000c); /* BAR2: 64-bit prefetchable memory */
	if (sz < (1ull << 32)) {
		wmask32(dev, 0x18, (uint32_t)~(sz - 1) & 0xfffffff0u);
		wmask32(dev, 0x1c, 0xffffffffu);
	} else {
		wmask32(dev, 0x18, 0);
		wmask32(dev, 0x1c, (uint32_t)~((sz >> 32) - 1));
	}
	put16(c + 0x2c, 0x5547); /* subsystem vendor */
	put16(c + 0x2e, 0x0001); /* subsystem */
	c[0x34] = CFG_PM_CAP;
	c[0x3d] = 0x01; /* INTA */
	dev->cfg_wmask[0x3c] = 0xff; /* interrupt line */
	dev->cfg_wmask[CFG_COMMAND] = CFG_CMD_MEM | CFG_CMD_MASTER;
	dev->cfg_wmask[CFG_COMMAND + 1] = 0x04; /* INTx disable */

	/* PM capability: version 3, D3hot only, No_Soft_Reset. */
	c[CFG_PM_CAP] = 0x01;
	c[CFG_PM_CAP + 1] = CFG_MSIX_CAP;
	put16(c + CFG_PM_CAP + 2, 0x0003);
	dev->cfg_wmask[CFG_PMCSR] = 0x03;

	/* MSI-X: 5 vectors, table at BAR0 0x8000, PBA at BAR0 0x9000. */
	c[CFG_MSIX_CAP] = 0x11;
	c[CFG_MSIX_CAP + 1] = CFG_VNDR_CAP;
	put16(c + CFG_MSIX_CAP + 2, SIM_MSIX_VECTORS - 1);
	dev->cfg_wmask[CFG_MSIX_CAP + 3] = 0xc0; /* enable, function mask */
	put32(c + CFG_MSIX_CAP + 4, REG_MSIX_TABLE);
	put32(c + CFG_MSIX_CAP + 8, REG_MSIX_PBA);

	/* Vendor-specific: the platform power block. */
	c[CFG_VNDR_CAP] = 0x09;
	c[CFG_VNDR_CAP + 1] = 0x00;
	c[CFG_VNDR_CAP + 2] = 0x10; /* length */
	dev->cfg_wmask[CFG_PWR_CTL] = 0x01;
	put32(c + CFG_WAKE_LAT, dev->sim->opts.wake_latency_us);

	pci_reset(dev);
}

void pci_reset(struct sim_dev *dev)
{
	put16(&dev->cfg[CFG_COMMAND], CFG_CMD_RESET_VALUE);
	dev->cfg[CFG_MSIX_CAP + 3] &= (uint8_t)~0xc0u;
	dev->cfg[CFG_PMCSR] = (uint8_t)((dev->cfg[CFG_PMCSR] & ~3u) | 0x08u); /* No_Soft_Reset */
	dev->power = SIM_POWER_D0;
	pm_sync_cfg(dev);
}

bool pci_mem_enabled(struct sim_dev *dev)
{
	return dev->cfg[CFG_COMMAND] & CFG_CMD_MEM;
}

bool pci_master_enabled(struct sim_dev *dev)
{
	return dev->cfg[CFG_COMMAND] & CFG_CMD_MASTER;
}

int pci_cfg_read(struct sim_dev *dev, uint64_t off, void *buf, size_t len)
{
	if (off > SIM_CFG_SIZE || len > SIM_CFG_SIZE - off)
		return -EINVAL;
	if (!len)
		return 0; /* a zero-byte access is a no-op (and buf may be NULL) */
	pthread_mutex_lock(&dev->lock);
	memcpy(buf, &dev->cfg[off], len);
	if (dev->sim->opts.cfg_dead_in_d3cold && dev->power == SIM_POWER_D3COLD && off < 8)
		memset(buf, 0xff, len);
	pthread_mutex_unlock(&dev->lock);
	return 0;
}

static bool engines_quiet(struct sim_dev *dev)
{
	return !ce_any_busy(dev) && !exec_any_busy(dev);
}

static void sleep_us(unsigned us)
{
	struct timespec ts = { .tv_sec = us / 1000000u, .tv_nsec = (long)(us % 1000000u) * 1000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* PMCSR power-state field written with @state. */
static void pm_set(struct sim_dev *dev, unsigned state)
{
	if (state == 1 || state == 2)
		return; /* D1/D2 are not supported: refused, reads back unchanged */
	pthread_mutex_lock(&dev->lock);
	if (dev->power == SIM_POWER_D0 && state == 3) {
		dev->power = SIM_POWER_D3HOT;
		pm_sync_cfg(dev);
		pthread_mutex_unlock(&dev->lock);
		/* Engines finish the descriptor they are on, then halt. */
		srv_wait(dev, engines_quiet, 10000);
		return;
	}
	if (dev->power == SIM_POWER_D3HOT && state == 0) {
		unsigned lat = dev->sim->opts.wake_latency_us;

		if (sim_inject_hit(dev, SIM_INJECT_WAKE)) {
			pthread_mutex_unlock(&dev->lock);
			return;
		}
		pthread_mutex_unlock(&dev->lock);
		if (lat)
			sleep_us(lat);
		pthread_mutex_lock(&dev->lock);
		if (dev->power == SIM_POWER_D3HOT) {
			dev->power = SIM_POWER_D0;
			pm_sync_cfg(dev);
			ce_kick(dev);
			exec_kick(dev);
		}
	}
	/* D3cold: main power is off, the PM state machine does not run. */
	pthread_mutex_unlock(&dev->lock);
}

/*
 * Main power is back: every page of VRAM that held data reads poison. Only
 * the memfd's data extents are written (SEEK_DATA/SEEK_HOLE), through
 * pwrite: a page never written is still a hole and keeps reading zero, so the
 * cost follows the VRAM in use, not its size, and no page is faulted into
 * this process's mapping (a fault costs microseconds per 4 KiB page in these
 * VMs: a 4 GiB device took more than the client's 5 s reply bound to wake
 * when every word was stored through the mapping). If the extents cannot be
 * read, every word is written through the mapping as before.
 */
static void vram_poison(struct sim_dev *dev)
{
	static const size_t chunk = 1u << 20;
	uint64_t *pat = malloc(chunk);
	off_t end = (off_t)dev->vram_size, data = 0, hole;

	if (pat) {
		for (size_t i = 0; i < chunk / 8; i++)
			pat[i] = 0xdeadbeefdeadbeefull;
		while (data < end) {
			data = lseek(dev->vram_fd, data, SEEK_DATA);
			if (data < 0) {
				if (errno == ENXIO) /* no data after this offset */
					break;
				goto words;
			}
			hole = lseek(dev->vram_fd, data, SEEK_HOLE);
			if (hole < 0)
				goto words;
			while (data < hole) {
				size_t n = (size_t)(hole - data) < chunk ? (size_t)(hole - data) : chunk;
				ssize_t w = pwrite(dev->vram_fd, pat, n, data);

				if (w <= 0) {
					if (w < 0 && errno == EINTR)
						continue;
					goto words;
				}
				data += w;
			}
		}
		free(pat);
		return;
	}
words:
	free(pat);
	for (uint64_t i = 0, *p = (uint64_t *)dev->vram; i < dev->vram_size / 8; i++)
		p[i] = 0xdeadbeefdeadbeefull;
}

/* PWR_CTL.MAIN_POWER_OFF written with @off. */
static void pwr_ctl_set(struct sim_dev *dev, bool off)
{
	pthread_mutex_lock(&dev->lock);
	if (off && dev->power == SIM_POWER_D3HOT) {
		dev->power = SIM_POWER_D3COLD;
		pm_sync_cfg(dev);
	} else if (!off && dev->power == SIM_POWER_D3COLD) {
		/* Engines are halted since D3hot entry; nothing else writes VRAM
		 * but a client through its own mapping (its problem). */
		pthread_mutex_unlock(&dev->lock);
		vram_poison(dev);
		pthread_mutex_lock(&dev->lock);
		for (unsigned i = 0; i < SIM_NUM_CE; i++)
			ce_reset_locked(&dev->ce[i], true);
		exec_reset_locked(dev);
		dev->power = SIM_POWER_D3HOT;
		pm_sync_cfg(dev);
	}
	pthread_mutex_unlock(&dev->lock);
}

int pci_cfg_write(struct sim_dev *dev, uint64_t off, const void *buf, size_t len)
{
	const uint8_t *b = buf;
	bool touched_pm, touched_ctl;
	unsigned old_pm, new_pm, old_ctl, new_ctl;

	if (off > SIM_CFG_SIZE || len > SIM_CFG_SIZE - off)
		return -EINVAL;
	pthread_mutex_lock(&dev->lock);
	old_pm = dev->cfg[CFG_PMCSR] & 3u;
	old_ctl = dev->cfg[CFG_PWR_CTL] & 1u;
	for (size_t i = 0; i < len; i++) {
		size_t o = off + i;

		dev->cfg[o] = (uint8_t)((dev->cfg[o] & ~dev->cfg_wmask[o]) | (b[i] & dev->cfg_wmask[o]));
	}
	touched_pm = off <= CFG_PMCSR && off + len > CFG_PMCSR;
	touched_ctl = off <= CFG_PWR_CTL && off + len > CFG_PWR_CTL;
	new_pm = dev->cfg[CFG_PMCSR] & 3u;
	new_ctl = dev->cfg[CFG_PWR_CTL] & 1u;
	/* The state fields change only through the transitions below. */
	pm_sync_cfg(dev);
	pthread_mutex_unlock(&dev->lock);

	if (touched_ctl && new_ctl != old_ctl)
		pwr_ctl_set(dev, new_ctl);
	if (touched_pm && new_pm != old_pm)
		pm_set(dev, new_pm);
	return 0;
}
