/* SPDX-License-Identifier: MIT */
/*
 * Device lifecycle: open a transport, identify the device, bring it up, and
 * tear it down in the reverse order. Teardown never needs the device to
 * answer.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mm/bo.h"
#include "src/context.h"
#include "src/device.h"
#include "src/log.h"
#include "src/pci_cfg.h"
#include "src/refdev.h"
#include "src/rpm.h"
#include "src/unplug.h"
#include "mm/bo_rpm.h"

int device_reg_read32(struct ugpu_device *dev, uint32_t off, uint32_t *val)
{
	return dev->vdev->ops->region_read(dev->vdev, (uint32_t)dev->profile->reg_region, off, val, 4);
}

int device_reg_write32(struct ugpu_device *dev, uint32_t off, uint32_t val)
{
	return dev->vdev->ops->region_write(dev->vdev, (uint32_t)dev->profile->reg_region, off, &val,
					    4);
}

int device_reg_read64(struct ugpu_device *dev, uint32_t off, uint64_t *val)
{
	return dev->vdev->ops->region_read(dev->vdev, (uint32_t)dev->profile->reg_region, off, val, 8);
}

int device_reg_write64(struct ugpu_device *dev, uint32_t off, uint64_t val)
{
	return dev->vdev->ops->region_write(dev->vdev, (uint32_t)dev->profile->reg_region, off, &val,
					    8);
}

/* The reference device: identify it by its ID register, read its shape. */
static int refdev_probe(struct ugpu_device *dev)
{
	uint32_t id, caps, n, fid;
	uint64_t vram;
	int ret;

	ret = device_reg_read32(dev, REFDEV_REG_ID, &id);
	if (ret)
		return ret;
	if (id != REFDEV_ID_MAGIC) {
		log_err(dev->ctx, "%s: ID register reads 0x%08x, not the reference device's 0x%08x",
			dev->vdev->name, id, REFDEV_ID_MAGIC);
		return -ENODEV;
	}
	if ((ret = device_reg_read32(dev, REFDEV_REG_CAPS, &caps)) ||
	    (ret = device_reg_read32(dev, REFDEV_REG_NUM_ENGINES, &n)) ||
	    (ret = device_reg_read64(dev, REFDEV_REG_VRAM_SIZE, &vram)) ||
	    (ret = device_reg_read32(dev, REFDEV_REG_FABRIC_ID, &fid)))
		return ret;
	dev->vram_size = vram;
	dev->fabric_id = fid;
	if (caps & REFDEV_CAPS_COPY) {
		dev->num_copy_engines = n;
		dev->caps |= UGPU_DEVICE_CAP_COPY_ENGINE;
	}
	if (caps & REFDEV_CAPS_GPUVM)
		dev->caps |= UGPU_DEVICE_CAP_GPUVM;
	if (caps & REFDEV_CAPS_FABRIC)
		dev->caps |= UGPU_DEVICE_CAP_FABRIC;
	return 0;
}

/*
 * Devices ugpu knows how to drive. ivshmem-plain is a "VRAM-only" device: a
 * memory BAR and nothing else, copied to and from by the CPU engine; it is
 * what the QEMU-guest tests use to prove the kernel vfio-pci path.
 */
static const struct device_profile profiles[] = {
	{
		.name = "ugpu-sim",
		.vendor_id = REFDEV_VENDOR_ID,
		.device_id = REFDEV_DEVICE_ID,
		.vram_region = VFIO_REGION_BAR2,
		.reg_region = VFIO_REGION_BAR0,
		.probe = refdev_probe,
	},
	{
		.name = "ivshmem",
		.vendor_id = 0x1af4,
		.device_id = 0x1110,
		.vram_region = VFIO_REGION_BAR2,
		.reg_region = -1,
		.probe = NULL,
	},
};

static const struct device_profile *profile_find(uint16_t vendor, uint16_t device)
{
	size_t i;

	for (i = 0; i < sizeof(profiles) / sizeof(profiles[0]); i++)
		if (profiles[i].vendor_id == vendor && profiles[i].device_id == device)
			return &profiles[i];
	return NULL;
}

static int open_transport(struct ugpu_context *ctx, const char *uri, struct vfio_dev **out)
{
	if (!strncmp(uri, "vfio-user:", 10)) {
		if (!uri[10])
			goto bad;
		return vfio_user_open(ctx, uri + 10, out);
	}
	if (!strncmp(uri, "pci:", 4))
		uri += 4;
	{
		unsigned int d, b, s, f;
		char tail;

		if (sscanf(uri, "%4x:%2x:%2x.%1x%c", &d, &b, &s, &f, &tail) == 4)
			return vfio_pci_open(ctx, uri, out);
	}
bad:
	log_err(ctx, "device '%s': expected vfio-user:PATH or pci:DDDD:BB:DD.F", uri);
	return -EINVAL;
}

static void irqs_teardown(struct ugpu_device *dev)
{
	uint32_t i;

	if (dev->num_msix)
		dev->vdev->ops->set_irqs(dev->vdev, VFIO_IRQ_MSIX, 0, 0, NULL);
	for (i = 0; i < dev->num_msix; i++)
		if (dev->msix_fds[i] >= 0)
			close(dev->msix_fds[i]);
	dev->num_msix = 0;
	if (dev->req_fd >= 0) {
		dev->vdev->ops->set_irqs(dev->vdev, VFIO_IRQ_REQ, 0, 0, NULL);
		close(dev->req_fd);
		dev->req_fd = -1;
	}
}

/*
 * Route every MSI-X vector and the removal request to eventfds. REQ is set
 * up even before anyone listens: with no eventfd the kernel's unbind of a
 * vfio-pci device blocks until the process lets go.
 */
static int irqs_setup(struct ugpu_device *dev)
{
	struct vfio_dev_irq_info info;
	uint32_t i;
	int ret;

	ret = dev->vdev->ops->irq_info(dev->vdev, VFIO_IRQ_MSIX, &info);
	if (ret)
		return ret;
	dev->num_msix = info.count < 8 ? info.count : 8;
	for (i = 0; i < dev->num_msix; i++) {
		dev->msix_fds[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (dev->msix_fds[i] < 0) {
			ret = -errno;
			goto out_teardown;
		}
	}
	if (dev->num_msix) {
		ret = dev->vdev->ops->set_irqs(dev->vdev, VFIO_IRQ_MSIX, 0, dev->num_msix,
					       dev->msix_fds);
		if (ret) {
			log_err(dev->ctx, "%s: cannot route %u MSI-X vectors: %s", dev->vdev->name,
				dev->num_msix, ugpu_strerror(ret));
			goto out_teardown;
		}
	}
	ret = dev->vdev->ops->irq_info(dev->vdev, VFIO_IRQ_REQ, &info);
	if (!ret && info.count) {
		dev->req_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (dev->req_fd < 0) {
			ret = -errno;
			goto out_teardown;
		}
		ret = dev->vdev->ops->set_irqs(dev->vdev, VFIO_IRQ_REQ, 0, 1, &dev->req_fd);
		if (ret)
			goto out_teardown;
	}
	return 0;

out_teardown:
	irqs_teardown(dev);
	return ret;
}

static void buddy_log(void *arg, const char *msg)
{
	struct ugpu_device *dev = arg;

	log_err(dev->ctx, "%s: VRAM: %s", dev->vdev->name, msg);
}

int device_vram_alloc(struct ugpu_device *dev, uint64_t size, uint64_t min_block,
		      unsigned int flags, struct buddy_list *out)
{
	int ret;

	pthread_mutex_lock(&dev->vram_lock);
	ret = buddy_alloc_blocks(&dev->vram_mm, 0, dev->vram_mm.size, size, min_block, out, flags);
	pthread_mutex_unlock(&dev->vram_lock);
	return ret;
}

void device_vram_free(struct ugpu_device *dev, struct buddy_list *blocks, unsigned int flags)
{
	pthread_mutex_lock(&dev->vram_lock);
	buddy_free_list(&dev->vram_mm, blocks, flags);
	pthread_mutex_unlock(&dev->vram_lock);
}

struct engine *device_copy_engine(struct ugpu_device *dev)
{
	return dev->copy[0] ? dev->copy[0] : dev->cpu;
}

static void engines_teardown(struct ugpu_device *dev)
{
	int i;

	engine_destroy(dev->cpu);
	dev->cpu = NULL;
	for (i = DEVICE_MAX_ENGINES - 1; i >= 0; i--) {
		engine_destroy(dev->copy[i]);
		dev->copy[i] = NULL;
		ugpu_bo_put(dev->ring_bo[i]); /* frees ring_blocks[i] */
		dev->ring_bo[i] = NULL;
	}
}

/*
 * One sim engine per copy engine the device has, each with its ring and
 * fence page in VRAM reserved top-down (the end of VRAM holds the driver's
 * own structures, objects grow from the start), plus the CPU engine.
 */
static int engines_setup(struct ugpu_device *dev)
{
	struct engine_cfg cfg = {
		.size = sizeof(cfg),
		.dev = dev->vdev,
		.vram = dev->vram,
		.vram_size = dev->vram_size,
		.dma = &dev->dma,
	};
	uint32_t i, n = dev->num_copy_engines;
	int ret;

	if (n > DEVICE_MAX_ENGINES)
		n = DEVICE_MAX_ENGINES;
	for (i = 0; i < n; i++) {
		struct buddy_list *rb = &dev->ring_blocks[i];
		/* The ring is a pinned kernel BO: restored early by CPU on resume,
		 * before the engine is re-initialised on it. */
		struct ugpu_bo_opts bo_opts = {
			.size = sizeof(bo_opts),
			.bytes = engine_sim_vram_bytes(DEVICE_RING_SIZE),
			.placements = { UGPU_PLACEMENT_VRAM },
			.flags = UGPU_BO_KERNEL | UGPU_BO_PINNED | UGPU_BO_CONTIGUOUS,
			.name = i ? "ring1" : "ring0",
		};

		ret = bo_create_kernel(dev, &bo_opts, BUDDY_TOPDOWN_ALLOCATION, rb, &dev->ring_bo[i]);
		if (ret) {
			log_err(dev->ctx, "%s: no VRAM for copy engine %u's ring: %s",
				dev->vdev->name, i, ugpu_strerror(ret));
			goto out_teardown;
		}
		cfg.index = i;
		cfg.ring_offset = buddy_block_offset(buddy_list_first(rb));
		cfg.ring_size = DEVICE_RING_SIZE;
		ret = engine_create(dev->ctx, &engine_sim_ops, &cfg, &dev->copy[i]);
		if (ret)
			goto out_teardown;
	}
	cfg.index = 0;
	cfg.ring_offset = 0;
	cfg.ring_size = 0;
	ret = engine_create(dev->ctx, &engine_cpu_ops, &cfg, &dev->cpu);
	if (ret)
		goto out_teardown;
	return 0;

out_teardown:
	engines_teardown(dev);
	return ret;
}

/* ---- bring-up steps ----------------------------------------------------------
 *
 * The device is brought up by the steps of device_steps[] in order and torn
 * down in the reverse order by device_teardown(), the one place that order
 * is written down: ugpu_device_close() undoes everything, the removal path
 * (src/unplug.c) only the steps whose resources belong to the device. Each
 * step's up() cleans up after itself when it fails; its down() never needs
 * the device to answer.
 */

/* Open the transport, identify the device, put it in D0, size its VRAM. */
static int transport_up(struct ugpu_device *dev, const char *uri)
{
	struct ugpu_context *ctx = dev->ctx;
	struct vfio_dev_region_info vram_info;
	uint32_t classrev;
	uint16_t cmd;
	int ret;

	ret = open_transport(ctx, uri, &dev->vdev);
	if (ret)
		return ret;

	if ((ret = pci_cfg_read16(dev->vdev, PCI_CFG_VENDOR_ID, &dev->vendor_id)) ||
	    (ret = pci_cfg_read16(dev->vdev, PCI_CFG_DEVICE_ID, &dev->device_id)) ||
	    (ret = pci_cfg_read32(dev->vdev, PCI_CFG_CLASS_REV, &classrev)))
		goto out_close;
	if (dev->vendor_id == 0xffff) {
		log_err(ctx, "%s: config space reads all-ones: the device is not answering", uri);
		ret = -ENODEV;
		goto out_close;
	}
	dev->class_code = classrev >> 8;
	dev->profile = profile_find(dev->vendor_id, dev->device_id);
	if (!dev->profile) {
		/* Its own line: the device answered fine, ugpu just cannot drive
		 * it (not "gone", which -ENODEV alone would suggest). */
		log_err(ctx, "%s: PCI device %04x:%04x (class %06x) has no ugpu profile: ugpu drives the reference device %04x:%04x and ivshmem-plain 1af4:1110",
			uri, dev->vendor_id, dev->device_id, dev->class_code, REFDEV_VENDOR_ID,
			REFDEV_DEVICE_ID);
		ret = -ENODEV;
		goto out_close;
	}

	/* Decode memory and let the device master the bus (vfio-pci leaves bus
	 * mastering off). */
	if ((ret = pci_cfg_read16(dev->vdev, PCI_CFG_COMMAND, &cmd)))
		goto out_close;
	cmd |= PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
	if ((ret = pci_cfg_write16(dev->vdev, PCI_CFG_COMMAND, cmd)))
		goto out_close;

	ret = device_power_probe(dev);
	if (ret)
		goto out_close;
	if (dev->power_state != UGPU_POWER_D0) {
		ret = device_set_power(dev, UGPU_POWER_D0);
		if (ret) {
			log_err(ctx, "%s: cannot wake the device to D0: %s", uri, ugpu_strerror(ret));
			goto out_close;
		}
	}

	ret = dev->vdev->ops->region_info(dev->vdev, dev->profile->vram_region, &vram_info);
	if (ret)
		goto out_close;
	if (!vram_info.size || !(vram_info.flags & VFIO_REGION_F_MMAP)) {
		log_err(ctx, "%s: VRAM region %u is %s", uri, dev->profile->vram_region,
			vram_info.size ? "not mmap-able" : "absent");
		ret = -ENODEV;
		goto out_close;
	}
	dev->vram_size = vram_info.size;
	if (dev->profile->probe) {
		ret = dev->profile->probe(dev);
		if (ret)
			goto out_close;
		if (dev->vram_size > vram_info.size) {
			log_err(ctx, "%s: device reports %llu bytes of VRAM but its BAR has %llu", uri,
				(unsigned long long)dev->vram_size,
				(unsigned long long)vram_info.size);
			ret = -EPROTO;
			goto out_close;
		}
	}
	return 0;

out_close:
	dev->vdev->ops->close(dev->vdev);
	dev->vdev = NULL;
	return ret;
}

/*
 * Close the transport. dev->vdev then points to a tombstone that answers
 * -ENODEV and keeps the name for log lines: BOs outlive the device and
 * still name it. The swap is made under the BO manager lock (when the
 * manager still exists) because BO paths read dev->vdev under it.
 */
static void transport_down(struct ugpu_device *dev)
{
	struct vfio_dev *old = dev->vdev;

	unplug_tombstone_init(&dev->gone_vdev, old);
	if (dev->bo_mgr)
		pthread_mutex_lock(&dev->bo_mgr->lock);
	dev->vdev = &dev->gone_vdev;
	if (dev->bo_mgr)
		pthread_mutex_unlock(&dev->bo_mgr->lock);
	old->ops->close(old);
}

static int vram_map_up(struct ugpu_device *dev, const char *uri)
{
	int ret;

	ret = dev->vdev->ops->region_mmap(dev->vdev, dev->profile->vram_region, 0, dev->vram_size,
					  PROT_READ | PROT_WRITE, &dev->vram);
	if (ret)
		log_err(dev->ctx, "%s: cannot map VRAM: %s", uri, ugpu_strerror(ret));
	return ret;
}

static void vram_map_down(struct ugpu_device *dev)
{
	if (dev->vram)
		dev->vdev->ops->region_munmap(dev->vdev, dev->vram, dev->vram_size);
	dev->vram = NULL;
}

static int irqs_up(struct ugpu_device *dev, const char *uri)
{
	(void)uri;
	return irqs_setup(dev);
}

static int dma_up(struct ugpu_device *dev, const char *uri)
{
	int ret;

	ret = dma_space_init(dev->ctx, dev->vdev, &dev->dma);
	if (ret) {
		log_err(dev->ctx, "%s: cannot set up DMA: %s", uri, ugpu_strerror(ret));
		return ret;
	}
	dev->dma_ready = true;
	return 0;
}

static void dma_down(struct ugpu_device *dev)
{
	int leaks;

	if (!dev->dma_ready)
		return;
	leaks = dma_space_fini(&dev->dma);
	if (leaks > 0)
		log_warn(dev->ctx, "%s: %d DMA buffers were still mapped at close", dev->vdev->name,
			 leaks);
	dev->dma_ready = false;
}

static int vram_mm_up(struct ugpu_device *dev, const char *uri)
{
	int ret;

	ret = buddy_init(&dev->vram_mm, dev->vram_size, 4096);
	if (ret) {
		log_err(dev->ctx, "%s: cannot manage %llu bytes of VRAM: %s", uri,
			(unsigned long long)dev->vram_size, ugpu_strerror(ret));
		return ret;
	}
	buddy_set_log(&dev->vram_mm, buddy_log, dev);
	dev->vram_mm_ready = true;
	return 0;
}

static void vram_mm_down(struct ugpu_device *dev)
{
	int leaks;

	if (!dev->vram_mm_ready)
		return;
	pthread_mutex_lock(&dev->vram_lock);
	leaks = buddy_fini(&dev->vram_mm);
	dev->vram_mm_ready = false;
	pthread_mutex_unlock(&dev->vram_lock);
	if (leaks > 0)
		log_warn(dev->ctx, "%s: %d VRAM blocks were still allocated at close",
			 dev->vdev->name, leaks);
}

static int bo_mgr_up(struct ugpu_device *dev, const char *uri)
{
	(void)uri;
	return bo_mgr_init(dev);
}

static int engines_up(struct ugpu_device *dev, const char *uri)
{
	(void)uri;
	return engines_setup(dev);
}

static int rpm_up(struct ugpu_device *dev, const char *uri)
{
	(void)uri;
	return rpm_init(dev, &dev->rpm);
}

static void rpm_down(struct ugpu_device *dev)
{
	struct rpm *rpm = dev->rpm;

	/* BO paths and host suspend take and drop their runtime-PM references
	 * under the BO manager lock: unpublish the pointer under it, so none of
	 * them is inside rpm_get()/rpm_put() when it is freed. */
	if (dev->bo_mgr)
		pthread_mutex_lock(&dev->bo_mgr->lock);
	dev->rpm = NULL;
	if (dev->bo_mgr)
		pthread_mutex_unlock(&dev->bo_mgr->lock);
	rpm_fini(rpm);
}

static int bo_rpm_up(struct ugpu_device *dev, const char *uri)
{
	(void)uri;
	return bo_rpm_attach(dev);
}

static int unplug_up(struct ugpu_device *dev, const char *uri)
{
	(void)uri;
	return unplug_init(dev);
}

/*
 * struct device_step - one bring-up step.
 * @name: for logs and the teardown observer (unplug_step_note()).
 * @up: bring it up; cleans up after itself on failure.
 * @down: undo it; never needs the device to answer.
 * @life: DEVICE_LIFE_DEVICE when what it holds dies with the device (the
 *        removal path undoes it), DEVICE_LIFE_CONTEXT when it outlives the
 *        device until ugpu_device_close() (the BO manager and the BOs it
 *        owns; the removal watcher, which runs the removal itself).
 */
struct device_step {
	const char *name;
	int (*up)(struct ugpu_device *dev, const char *uri);
	void (*down)(struct ugpu_device *dev);
	enum device_lifetime life;
};

static const struct device_step device_steps[] = {
	{ "transport", transport_up, transport_down, DEVICE_LIFE_DEVICE },
	{ "vram-map", vram_map_up, vram_map_down, DEVICE_LIFE_DEVICE },
	{ "irqs", irqs_up, irqs_teardown, DEVICE_LIFE_DEVICE },
	{ "dma", dma_up, dma_down, DEVICE_LIFE_DEVICE },
	{ "vram-mm", vram_mm_up, vram_mm_down, DEVICE_LIFE_DEVICE },
	{ "bo-mgr", bo_mgr_up, bo_mgr_fini, DEVICE_LIFE_CONTEXT },
	{ "engines", engines_up, engines_teardown, DEVICE_LIFE_DEVICE },
	{ "rpm", rpm_up, rpm_down, DEVICE_LIFE_DEVICE },
	{ "bo-rpm", bo_rpm_up, bo_rpm_detach, DEVICE_LIFE_DEVICE },
	{ "unplug", unplug_up, unplug_fini, DEVICE_LIFE_CONTEXT },
};

#define DEVICE_NR_STEPS (sizeof(device_steps) / sizeof(device_steps[0]))

void device_teardown(struct ugpu_device *dev, unsigned int which)
{
	size_t i;

	for (i = DEVICE_NR_STEPS; i-- > 0;) {
		const struct device_step *st = &device_steps[i];

		/* Atomic: close reads the word while the watcher's removal may
		 * still clear device bits (close stops the watcher first). */
		if (!(__atomic_load_n(&dev->steps_up, __ATOMIC_ACQUIRE) & (1u << i)) ||
		    !(st->life & which))
			continue;
		unplug_step_note(dev, st->name);
		st->down(dev);
		__atomic_fetch_and(&dev->steps_up, ~(1u << i), __ATOMIC_RELEASE);
	}
}

UGPU_API int ugpu_device_open(struct ugpu_context *ctx, const char *uri, struct ugpu_device **out)
{
	struct ugpu_device *dev;
	size_t s;
	int ret, i;

	if (!ctx || !uri || !out)
		return -EINVAL;
	dev = calloc(1, sizeof(*dev));
	if (!dev)
		return -ENOMEM;
	dev->ctx = ctx;
	dev->req_fd = -1;
	for (i = 0; i < 8; i++)
		dev->msix_fds[i] = -1;
	for (i = 0; i < DEVICE_MAX_ENGINES; i++)
		buddy_list_init(&dev->ring_blocks[i]);
	pthread_mutex_init(&dev->lock, NULL);
	pthread_mutex_init(&dev->vram_lock, NULL);

	for (s = 0; s < DEVICE_NR_STEPS; s++) {
		ret = device_steps[s].up(dev, uri);
		if (ret)
			goto out_teardown;
		__atomic_fetch_or(&dev->steps_up, 1u << s, __ATOMIC_RELEASE);
	}

	log_info(ctx, "%s: %s %04x:%04x, %llu MiB VRAM, %u copy engines", dev->vdev->name,
		 dev->profile->name, dev->vendor_id, dev->device_id,
		 (unsigned long long)(dev->vram_size >> 20), dev->num_copy_engines);
	*out = dev;
	return 0;

out_teardown:
	device_teardown(dev, DEVICE_LIFE_ALL);
	pthread_mutex_destroy(&dev->vram_lock);
	pthread_mutex_destroy(&dev->lock);
	free(dev);
	return ret;
}

UGPU_API void ugpu_device_close(struct ugpu_device *dev)
{
	if (!dev)
		return;
	/* Reverse of ugpu_device_open()'s bring-up; after a removal only the
	 * context steps are left. */
	device_teardown(dev, DEVICE_LIFE_ALL);
	pthread_mutex_destroy(&dev->vram_lock);
	pthread_mutex_destroy(&dev->lock);
	free(dev);
}

UGPU_API int ugpu_device_query(struct ugpu_device *dev, struct ugpu_device_info *info)
{
	struct ugpu_device_info i = { 0 };
	size_t n;

	if (!dev || !info || info->size < sizeof(info->size))
		return -EINVAL;
	i.size = info->size;
	/* A removal swaps dev->vdev for the tombstone under the BO manager
	 * lock and then frees the transport (transport_down()): under that
	 * lock, dev->vdev is either still the live transport or the tombstone
	 * ("removed", same name). */
	if (dev->bo_mgr)
		pthread_mutex_lock(&dev->bo_mgr->lock);
	snprintf(i.name, sizeof(i.name), "%s", dev->vdev->name);
	snprintf(i.transport, sizeof(i.transport), "%s", dev->vdev->ops->name);
	if (dev->bo_mgr)
		pthread_mutex_unlock(&dev->bo_mgr->lock);
	snprintf(i.profile, sizeof(i.profile), "%s", dev->profile->name);
	i.vendor_id = dev->vendor_id;
	i.device_id = dev->device_id;
	i.class_code = dev->class_code;
	i.vram_size = dev->vram_size;
	i.num_copy_engines = dev->num_copy_engines;
	i.caps = dev->caps;
	i.fabric_id = dev->fabric_id;
	pthread_mutex_lock(&dev->lock);
	i.power_state = dev->power_state;
	pthread_mutex_unlock(&dev->lock);
	n = info->size < sizeof(i) ? info->size : sizeof(i);
	memcpy(info, &i, n);
	return 0;
}
