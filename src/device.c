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

#include "engines/exec.h"
#include "base/context.h"
#include "base/log.h"
#include "base/refdev.h"
#include "src/device.h"
#include "src/remote.h"
#include "src/rpm.h"
#include "src/suspend.h"
#include "src/unplug.h"
#include "vfio/pci_cfg.h"
#include "vfio/tombstone.h"

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
			dev->name, id, REFDEV_ID_MAGIC);
		return -ENODEV;
	}
	if ((ret = device_reg_read32(dev, REFDEV_REG_CAPS, &caps)) ||
	    (ret = device_reg_read32(dev, REFDEV_REG_NUM_ENGINES, &n)) ||
	    (ret = device_reg_read64(dev, REFDEV_REG_VRAM_SIZE, &vram)) ||
	    (ret = device_reg_read32(dev, REFDEV_REG_FABRIC_ID, &fid)) ||
	    (ret = device_reg_read32(dev, REFDEV_REG_FABRIC_PEERS, &dev->fabric_peers)) ||
	    (ret = device_reg_read32(dev, REFDEV_REG_FABRIC_FAST, &dev->fabric_fast)) ||
	    (ret = device_reg_read64(dev, REFDEV_REG_FABRIC_UID, &dev->fabric_uid)))
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
			log_err(dev->ctx, "%s: cannot route %u MSI-X vectors: %s", dev->name,
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
		if (dev->ring_obj[i])
			dev->kmem->release(dev, dev->ring_obj[i]);
		dev->ring_obj[i] = NULL;
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
	if (n && !dev->kmem) {
		log_err(dev->ctx, "%s: no memory layer for the engine rings", dev->name);
		return -EINVAL;
	}
	for (i = 0; i < n; i++) {
		/* Kernel memory: restored early by CPU on resume, before the
		 * engine is re-initialised on it. */
		ret = dev->kmem->alloc(dev, engine_sim_vram_bytes(DEVICE_RING_SIZE),
				       i ? "ring1" : "ring0", &dev->ring_obj[i], &dev->ring_offset[i]);
		if (ret) {
			log_err(dev->ctx, "%s: no VRAM for copy engine %u's ring: %s", dev->name, i,
				ugpu_strerror(ret));
			goto out_teardown;
		}
		cfg.index = i;
		cfg.ring_offset = dev->ring_offset[i];
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
	snprintf(dev->name, sizeof(dev->name), "%s", dev->vdev->name);

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
	if (device_power_state(dev) != UGPU_POWER_D0) {
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
 * -ENODEV (vfio/tombstone.h): late calls fail cleanly instead of using
 * a freed transport. The swap is published under the device's publication
 * lock; layers above reach the transport only while they know the device is
 * not removed (they check under their own lock, which the removal holds when
 * it sets dev->removed, before this runs).
 */
static void transport_down(struct ugpu_device *dev)
{
	struct vfio_dev *old = dev->vdev;

	tombstone_init(&dev->gone_vdev, old);
	pthread_mutex_lock(&dev->pub_lock);
	dev->vdev = &dev->gone_vdev;
	pthread_mutex_unlock(&dev->pub_lock);
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
		log_warn(dev->ctx, "%s: %d DMA buffers were still mapped at close", dev->name,
			 leaks);
	dev->dma_ready = false;
}

static int engines_up(struct ugpu_device *dev, const char *uri)
{
	(void)uri;
	return engines_setup(dev);
}

/*
 * The exec queues, when the device has them (a GPU VM, layout 1.1): their
 * fault ring and fences in kernel memory (restored early, by CPU, like the
 * rings), their interrupts on vectors 2-4. Without them VMs answer
 * -EOPNOTSUPP; the device works otherwise.
 */
static int exec_up(struct ugpu_device *dev, const char *uri)
{
	struct exec_cfg cfg = { .dev = dev->vdev, .vram = dev->vram, .name = dev->name };
	int ret;

	(void)uri;
	if (!(dev->caps & UGPU_DEVICE_CAP_GPUVM) || !dev->kmem)
		return 0;
	if (dev->num_msix <= REFDEV_VEC_EXEC) {
		log_warn(dev->ctx, "%s: %u MSI-X vectors: no exec queues without vector %d",
			 dev->name, dev->num_msix, REFDEV_VEC_EXEC);
		return 0;
	}
	ret = dev->kmem->alloc(dev, EXEC_MEM_BYTES, "exec", &dev->exec_obj, &cfg.mem_offset);
	if (ret) {
		log_err(dev->ctx, "%s: no VRAM for the fault ring: %s", dev->name, ugpu_strerror(ret));
		return ret;
	}
	cfg.irq_fd[0] = dev->msix_fds[REFDEV_VEC_ERROR];
	cfg.irq_fd[1] = dev->msix_fds[REFDEV_VEC_FAULT];
	cfg.irq_fd[2] = dev->msix_fds[REFDEV_VEC_EXEC];
	ret = exec_create(dev->ctx, &cfg, &dev->exec);
	if (ret) {
		dev->kmem->release(dev, dev->exec_obj);
		dev->exec_obj = NULL;
		return ret == -EOPNOTSUPP ? 0 : ret;
	}
	return 0;
}

static void exec_down(struct ugpu_device *dev)
{
	exec_destroy(dev->exec);
	dev->exec = NULL;
	if (dev->exec_obj)
		dev->kmem->release(dev, dev->exec_obj);
	dev->exec_obj = NULL;
}

static int rpm_up(struct ugpu_device *dev, const char *uri)
{
	struct rpm *rpm;
	int ret;

	(void)uri;
	ret = rpm_init(dev, &rpm);
	if (ret)
		return ret;
	pthread_mutex_lock(&dev->pub_lock);
	dev->rpm = rpm;
	pthread_mutex_unlock(&dev->pub_lock);
	return 0;
}

static void rpm_down(struct ugpu_device *dev)
{
	struct rpm *rpm = dev->rpm;

	/* Callers find the rpm under the publication lock and pin it
	 * (rpm_user_enter()): unpublish it under that lock, then let rpm_fini()
	 * drain the callers already inside. */
	pthread_mutex_lock(&dev->pub_lock);
	dev->rpm = NULL;
	pthread_mutex_unlock(&dev->pub_lock);
	rpm_fini(rpm);
}

static int unplug_up(struct ugpu_device *dev, const char *uri)
{
	(void)uri;
	return unplug_init(dev);
}

/* ---- the component registry ----------------------------------------------
 *
 * Every layer registers its bring-up steps (DEVICE_COMPONENT()) at load
 * time; the list is sorted by enum device_step_order (src/device.h), the one
 * place the order is written. Registration happens before main(), on one
 * thread; afterwards the list is only read.
 */
static struct list_link components = LIST_HEAD_INIT(components);
static unsigned int n_components;

#define component_of(l) list_entry(l, struct device_component, link)

void device_component_register(struct device_component *c)
{
	struct list_link *pos = &components;

	if (n_components >= DEVICE_MAX_COMPONENTS)
		abort(); /* a build with too many steps: caught by any test */
	list_for_each(l, &components) {
		if (component_of(l)->order > c->order)
			break;
		pos = l;
	}
	list_add(pos, &c->link);
	n_components++;
}

static struct device_component transport_component = {
	.name = "transport", .order = DEVICE_STEP_TRANSPORT, .life = DEVICE_LIFE_DEVICE,
	.up = transport_up, .down = transport_down,
};
static struct device_component vram_map_component = {
	.name = "vram-map", .order = DEVICE_STEP_VRAM_MAP, .life = DEVICE_LIFE_DEVICE,
	.up = vram_map_up, .down = vram_map_down,
};
static struct device_component irqs_component = {
	.name = "irqs", .order = DEVICE_STEP_IRQS, .life = DEVICE_LIFE_DEVICE,
	.up = irqs_up, .down = irqs_teardown,
};
static struct device_component dma_component = {
	.name = "dma", .order = DEVICE_STEP_DMA, .life = DEVICE_LIFE_DEVICE,
	.up = dma_up, .down = dma_down,
};
static struct device_component engines_component = {
	.name = "engines", .order = DEVICE_STEP_ENGINES, .life = DEVICE_LIFE_DEVICE,
	.up = engines_up, .down = engines_teardown,
};
static struct device_component exec_component = {
	.name = "exec", .order = DEVICE_STEP_EXEC, .life = DEVICE_LIFE_DEVICE,
	.up = exec_up, .down = exec_down,
};
static struct device_component rpm_component = {
	.name = "rpm", .order = DEVICE_STEP_RPM, .life = DEVICE_LIFE_DEVICE,
	.up = rpm_up, .down = rpm_down,
};
static struct device_component unplug_component = {
	.name = "unplug", .order = DEVICE_STEP_UNPLUG, .life = DEVICE_LIFE_CONTEXT,
	.up = unplug_up, .down = unplug_fini,
};
DEVICE_COMPONENT(transport_component)
DEVICE_COMPONENT(vram_map_component)
DEVICE_COMPONENT(irqs_component)
DEVICE_COMPONENT(dma_component)
DEVICE_COMPONENT(engines_component)
DEVICE_COMPONENT(exec_component)
DEVICE_COMPONENT(rpm_component)
DEVICE_COMPONENT(unplug_component)

void device_teardown(struct ugpu_device *dev, unsigned int which)
{
	unsigned int i = n_components;

	for (struct list_link *l = components.prev; l != &components; l = l->prev) {
		const struct device_component *c = component_of(l);

		i--;
		/* Atomic: close reads the word while the watcher's removal may
		 * still clear device bits (close stops the watcher first). */
		if (!(__atomic_load_n(&dev->steps_up, __ATOMIC_ACQUIRE) & (1u << i)) ||
		    !(c->life & which))
			continue;
		unplug_step_note(dev, c->name);
		if (c->down)
			c->down(dev);
		__atomic_fetch_and(&dev->steps_up, ~(1u << i), __ATOMIC_RELEASE);
	}
}

void device_get(struct ugpu_device *dev)
{
	__atomic_add_fetch(&dev->refs, 1, __ATOMIC_RELAXED);
}

void device_put(struct ugpu_device *dev)
{
	if (__atomic_sub_fetch(&dev->refs, 1, __ATOMIC_ACQ_REL))
		return;
	for (struct list_link *l = components.prev; l != &components; l = l->prev)
		if (component_of(l)->release)
			component_of(l)->release(dev);
	host_pm_free(dev);
	remote_free(dev);
	pthread_mutex_destroy(&dev->pub_lock);
	pthread_mutex_destroy(&dev->lock);
	free(dev);
}

int device_new(struct ugpu_context *ctx, const char *name, struct ugpu_device **out)
{
	struct ugpu_device *dev;
	unsigned int i;
	int ret;

	dev = calloc(1, sizeof(*dev));
	if (!dev)
		return -ENOMEM;
	dev->ctx = ctx;
	dev->refs = 1;
	dev->req_fd = -1;
	for (i = 0; i < 8; i++)
		dev->msix_fds[i] = -1;
	snprintf(dev->name, sizeof(dev->name), "%s", name);
	pthread_mutex_init(&dev->lock, NULL);
	pthread_mutex_init(&dev->pub_lock, NULL);
	list_init(&dev->ctx_link);
	pthread_mutex_lock(&ctx->dev_lock);
	dev->ctx_index = ++ctx->dev_seq;
	pthread_mutex_unlock(&ctx->dev_lock);
	ret = host_pm_init(dev);
	if (ret) {
		device_put(dev);
		return ret;
	}
	*out = dev;
	return 0;
}

static bool name_listed(const char *name, const char *const *list)
{
	for (; *list; list++)
		if (!strcmp(name, *list))
			return true;
	return false;
}

int device_steps_up(struct ugpu_device *dev, const char *uri, const char *const *only)
{
	unsigned int i = 0, found = 0, want = 0;
	int ret;

	/* Every name must be a step: a typo would leave a test without the
	 * step it thinks it has. Checked before anything comes up. */
	while (only && only[want])
		want++;
	list_for_each(l, &components)
		found += only && name_listed(component_of(l)->name, only);
	if (found != want) {
		log_err(dev->ctx, "%s: %u of the %u steps asked for are not registered", dev->name,
			want - found, want);
		return -ENOENT;
	}
	list_for_each(l, &components) {
		const struct device_component *c = component_of(l);

		if (!only || name_listed(c->name, only)) {
			ret = c->up ? c->up(dev, uri) : 0;
			if (ret) {
				device_teardown(dev, DEVICE_LIFE_ALL);
				return ret;
			}
			__atomic_fetch_or(&dev->steps_up, 1u << i, __ATOMIC_RELEASE);
		}
		i++;
	}
	return 0;
}

UGPU_API int ugpu_device_open(struct ugpu_context *ctx, const char *uri, struct ugpu_device **out)
{
	struct ugpu_device *dev;
	int ret;

	if (!ctx || !uri || !out)
		return -EINVAL;
	ret = device_new(ctx, uri, &dev);
	if (ret)
		return ret;
	if (!strncmp(uri, REMOTE_URI_PREFIX, strlen(REMOTE_URI_PREFIX))) {
		/* Served by the daemon: no step of our own comes up. */
		ret = remote_open(dev, uri);
		if (ret) {
			device_put(dev);
			return ret;
		}
		*out = dev;
		return 0;
	}
	ret = device_steps_up(dev, uri, NULL);
	if (ret) {
		device_put(dev);
		return ret;
	}
	log_info(ctx, "%s: %s %04x:%04x, %llu MiB VRAM, %u copy engines", dev->name,
		 dev->profile->name, dev->vendor_id, dev->device_id,
		 (unsigned long long)(dev->vram_size >> 20), dev->num_copy_engines);
	*out = dev;
	return 0;
}

UGPU_API void ugpu_device_close(struct ugpu_device *dev)
{
	if (!dev)
		return;
	if (device_is_remote(dev)) {
		remote_close(dev); /* the daemon releases what the connection held */
		device_put(dev);
		return;
	}
	/* Reverse of ugpu_device_open()'s bring-up; after a removal only the
	 * context steps are left. BO handles still alive keep the object. */
	device_teardown(dev, DEVICE_LIFE_ALL);
	device_put(dev);
}

UGPU_API int ugpu_device_query(struct ugpu_device *dev, struct ugpu_device_info *info)
{
	struct ugpu_device_info i = { 0 };
	size_t n;

	if (!dev || !info || info->size < sizeof(info->size))
		return -EINVAL;
	if (device_is_remote(dev))
		return remote_query(dev, info);
	i.size = info->size;
	/* A removal swaps dev->vdev for the tombstone under the publication
	 * lock and then frees the transport (transport_down()): under that
	 * lock, dev->vdev is either still the live transport or the tombstone
	 * ("removed"). */
	snprintf(i.name, sizeof(i.name), "%s", dev->name);
	pthread_mutex_lock(&dev->pub_lock);
	snprintf(i.transport, sizeof(i.transport), "%s", dev->vdev->ops->name);
	pthread_mutex_unlock(&dev->pub_lock);
	snprintf(i.profile, sizeof(i.profile), "%s", dev->profile->name);
	i.vendor_id = dev->vendor_id;
	i.device_id = dev->device_id;
	i.class_code = dev->class_code;
	i.vram_size = dev->vram_size;
	i.num_copy_engines = dev->num_copy_engines;
	i.caps = dev->caps;
	i.fabric_id = dev->fabric_id;
	i.power_state = device_power_state(dev);
	n = info->size < sizeof(i) ? info->size : sizeof(i);
	memcpy(info, &i, n);
	return 0;
}
