/* SPDX-License-Identifier: MIT */
/*
 * PCI power states. D0 <-> D3hot is the PM capability's PMCSR; D3cold needs
 * the platform to cut main power, which the reference device models with a
 * vendor capability (docs/reference-device.md, "Platform power block") and
 * which kernel vfio-pci offers as its low-power feature.
 */
#include <errno.h>
#include <time.h>

#include "base/test_point.h"
#include "src/device.h"
#include "base/log.h"
#include "vfio/pci_cfg.h"
#include "base/refdev.h"

/* Written under dev->lock, read without it (device_power_state()): a
 * query must not wait for a transition that takes a while (D3cold). */
static void power_state_set(struct ugpu_device *dev, enum ugpu_power_state s)
{
	__atomic_store_n(&dev->power_state, s, __ATOMIC_RELEASE);
}

int device_power_probe(struct ugpu_device *dev)
{
	uint16_t pmcsr;
	int ret;

	ret = pci_cfg_find_cap(dev->vdev, PCI_CAP_ID_PM);
	if (ret < 0)
		return ret;
	dev->pm_cap = ret;
	if (dev->vendor_id == REFDEV_VENDOR_ID) {
		uint32_t lat;

		ret = pci_cfg_find_cap(dev->vdev, PCI_CAP_ID_VNDR);
		if (ret < 0)
			return ret;
		dev->pwr_cap = ret;
		if (dev->pwr_cap) {
			ret = pci_cfg_read32(dev->vdev, dev->pwr_cap + REFDEV_PWR_WAKE_LAT_US, &lat);
			if (ret)
				return ret;
			dev->wake_latency_us = lat;
			dev->caps |= UGPU_DEVICE_CAP_D3COLD;
		}
	}
	power_state_set(dev, UGPU_POWER_D0);
	if (dev->pm_cap) {
		ret = pci_cfg_read16(dev->vdev, dev->pm_cap + PCI_PM_CTRL, &pmcsr);
		if (ret)
			return ret;
		dev->pmcsr = pmcsr;
		if ((pmcsr & PCI_PM_CTRL_STATE_MASK) == 3)
			power_state_set(dev, UGPU_POWER_D3HOT);
	}
	if (dev->pwr_cap) {
		uint32_t st;

		ret = pci_cfg_read32(dev->vdev, dev->pwr_cap + REFDEV_PWR_STATE, &st);
		if (ret)
			return ret;
		if (st == 4)
			power_state_set(dev, UGPU_POWER_D3COLD);
	}
	return 0;
}

/*
 * One write and one read-back per transition. The bits around the state
 * field come from the PMCSR value last read (dev->pmcsr) instead of a fresh
 * read: over vfio-user every config access is a socket round trip through
 * two threads, and on a wake that read sat on the CPU-touch path. Only this
 * file writes PMCSR, and the other fields do not change on their own except
 * PME_Status, which is write-1-to-clear and so is written as 0 (left alone),
 * as Linux's pci_power_up() does. The read-back stays: it is what tells a
 * wake the device ignored from a good one. dev->lock held.
 */
static int pmcsr_set(struct ugpu_device *dev, unsigned int dstate)
{
	uint16_t pmcsr;
	int ret;

	pmcsr = (uint16_t)((dev->pmcsr & ~(PCI_PM_CTRL_STATE_MASK | PCI_PM_CTRL_PME_STATUS)) |
			   dstate);
	ret = pci_cfg_write16(dev->vdev, dev->pm_cap + PCI_PM_CTRL, pmcsr);
	if (ret)
		return ret;
	ret = pci_cfg_read16(dev->vdev, dev->pm_cap + PCI_PM_CTRL, &pmcsr);
	if (ret)
		return ret;
	dev->pmcsr = pmcsr;
	if ((pmcsr & PCI_PM_CTRL_STATE_MASK) != dstate) {
		log_err(dev->ctx, "%s: device did not enter D%u (PMCSR reads D%u)", dev->name,
			dstate, pmcsr & PCI_PM_CTRL_STATE_MASK);
		return -EIO;
	}
	return 0;
}

static int main_power_set(struct ugpu_device *dev, bool off)
{
	uint32_t ctl = off ? REFDEV_PWR_MAIN_OFF : 0, st;
	int ret;

	ret = pci_cfg_write32(dev->vdev, dev->pwr_cap + REFDEV_PWR_CTL, ctl);
	if (ret)
		return ret;
	ret = pci_cfg_read32(dev->vdev, dev->pwr_cap + REFDEV_PWR_STATE, &st);
	if (ret)
		return ret;
	if (off != (st == 4)) {
		log_err(dev->ctx, "%s: main power did not turn %s (power state %u)", dev->name,
			off ? "off" : "on", st);
		return -EIO;
	}
	return 0;
}

static int set_power_locked(struct ugpu_device *dev, enum ugpu_power_state to)
{
	enum ugpu_power_state from = dev->power_state;
	int ret;

	if (from == to)
		return 0;
	if (!dev->pm_cap) {
		/* No PCI PM: only the kernel's low-power state, which keeps
		 * memory and behaves like D3hot for the driver. */
		if (to == UGPU_POWER_D3COLD || !dev->vdev->ops->low_power_enter)
			return -EOPNOTSUPP;
		ret = to == UGPU_POWER_D0 ? dev->vdev->ops->low_power_exit(dev->vdev)
					  : dev->vdev->ops->low_power_enter(dev->vdev, -1);
		if (!ret)
			power_state_set(dev, to);
		return ret;
	}
	if (to == UGPU_POWER_D3COLD && !dev->pwr_cap)
		return -EOPNOTSUPP;

	/* Going down: D0 -> D3hot [-> D3cold]. */
	if (to != UGPU_POWER_D0) {
		if (from == UGPU_POWER_D0) {
			ret = pmcsr_set(dev, 3);
			if (ret)
				return ret;
			power_state_set(dev, UGPU_POWER_D3HOT);
		}
		if (to == UGPU_POWER_D3COLD) {
			ret = main_power_set(dev, true);
			if (ret)
				return ret;
			test_point(TEST_POINT_POWER_OFF);
			power_state_set(dev, UGPU_POWER_D3COLD);
		} else if (from == UGPU_POWER_D3COLD) {
			ret = main_power_set(dev, false);
			if (ret)
				return ret;
			power_state_set(dev, UGPU_POWER_D3HOT);
		}
		return 0;
	}

	/* Going up: [D3cold ->] D3hot -> D0. */
	if (from == UGPU_POWER_D3COLD) {
		ret = main_power_set(dev, false);
		if (ret)
			return ret;
		power_state_set(dev, UGPU_POWER_D3HOT);
	}
	ret = pmcsr_set(dev, 0);
	if (ret)
		return ret;
	power_state_set(dev, UGPU_POWER_D0);
	return 0;
}

int device_set_power(struct ugpu_device *dev, enum ugpu_power_state state)
{
	int ret;

	if (state != UGPU_POWER_D0 && state != UGPU_POWER_D3HOT && state != UGPU_POWER_D3COLD)
		return -EINVAL;
	pthread_mutex_lock(&dev->lock);
	ret = set_power_locked(dev, state);
	pthread_mutex_unlock(&dev->lock);
	if (!ret)
		log_info(dev->ctx, "%s: power state D%d%s", dev->name, state == 4 ? 3 : (int)state,
			 state == UGPU_POWER_D3COLD ? "cold" : state == UGPU_POWER_D3HOT ? "hot" : "");
	return ret;
}
